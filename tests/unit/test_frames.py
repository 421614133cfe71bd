"""Video frames are sampled over the whole duration, with true timestamps, in RGB, even from damaged files."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import workers.frames
from scanner.errors import PermanentError
from tests import media_factory as mf
from workers.frames import SampledVideo, sample_frames


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("videos")
    return {
        "3s": mf.write_video(folder / "3s.mp4", seconds=3.0, fps=10.0, size=(192, 144)),
        "10s": mf.write_video(folder / "10s.mp4", seconds=10.0, fps=10.0, size=(96, 72)),
        "30s": mf.write_video(folder / "30s.mp4", seconds=30.0, fps=10.0, size=(96, 72)),
        "short": mf.write_video(folder / "short.mp4", seconds=0.4, fps=10.0, size=(96, 72)),
    }


def stamped(video: SampledVideo) -> list[int]:
    """The frame numbers written into the pixels of the frames that came back."""
    return [mf.read_frame_number(frame.rgb) for frame in video.frames]


def test_one_frame_per_second_from_the_middle_of_each_second(videos: dict[str, Path]) -> None:
    video = sample_frames(videos["3s"])

    assert [f.index for f in video.frames] == [5, 15, 25]
    assert [f.timestamp_s for f in video.frames] == pytest.approx([0.5, 1.5, 2.5])
    assert stamped(video) == [5, 15, 25]  # the pixels really are those frames
    assert (video.duration_s, video.width, video.height, video.native_fps) == pytest.approx((3.0, 192, 144, 10.0))


def test_frames_come_out_as_rgb(videos: dict[str, Path]) -> None:
    frame = sample_frames(videos["3s"]).frames[0].rgb

    red, green, blue = mf.red_corner(frame)
    assert frame.shape == (144, 192, 3)
    assert frame.dtype.name == "uint8"
    assert red > 200
    assert green < 60
    assert blue < 60


def test_max_frames_spreads_over_the_whole_duration_not_the_start(videos: dict[str, Path]) -> None:
    video = sample_frames(videos["10s"], max_frames=4)

    assert [f.index for f in video.frames] == [12, 37, 62, 87]
    assert stamped(video) == [12, 37, 62, 87]
    assert video.frames[-1].timestamp_s > 7.5  # the last quarter of the video is covered


def test_a_higher_rate_than_the_video_has_gives_every_frame_once(videos: dict[str, Path]) -> None:
    video = sample_frames(videos["short"], fps=50.0)

    timestamps = [f.timestamp_s for f in video.frames]
    assert stamped(video) == [0, 1, 2, 3]
    assert all(a < b for a, b in itertools.pairwise(timestamps))


def test_a_video_shorter_than_a_second_still_gives_a_frame(videos: dict[str, Path]) -> None:
    video = sample_frames(videos["short"])

    assert stamped(video) == [2]
    assert video.duration_s == pytest.approx(0.4)


def test_a_custom_rate(videos: dict[str, Path]) -> None:
    assert stamped(sample_frames(videos["10s"], fps=0.5)) == [10, 30, 50, 70, 90]


def spy(monkeypatch: pytest.MonkeyPatch, name: str) -> list[int]:
    calls: list[int] = []
    original: Callable[..., Any] = getattr(workers.frames, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(workers.frames, name, wrapper)
    return calls


def test_sparse_samples_are_reached_by_seeking_dense_ones_by_grabbing(
    videos: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    seeks = spy(monkeypatch, "_read_by_seeking")

    dense = sample_frames(videos["30s"])  # 1 frame per second of a 10 fps video: gap 10 frames
    assert (len(dense.frames), len(seeks)) == (30, 0)

    sparse = sample_frames(videos["30s"], max_frames=2)  # gap 150 frames
    assert (stamped(sparse), len(seeks)) == ([75, 225], 1)


def test_seeking_and_grabbing_return_the_same_frames(videos: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    grabbed = sample_frames(videos["10s"], max_frames=7)
    monkeypatch.setattr(workers.frames, "DEFAULT_SEEK_MIN_GAP_FRAMES", 1)
    sought = sample_frames(videos["10s"], max_frames=7)

    assert stamped(sought) == stamped(grabbed) == [f.index for f in grabbed.frames]
    assert [f.timestamp_s for f in sought.frames] == [f.timestamp_s for f in grabbed.frames]


def test_a_header_without_frame_count_or_rate_is_recovered_by_counting(
    videos: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(workers.frames, "_header_layout", lambda cap: None)

    video = sample_frames(videos["3s"])

    assert stamped(video) == [5, 15, 25]
    assert video.native_fps == pytest.approx(10.0)
    assert video.duration_s == pytest.approx(3.0)


@pytest.mark.parametrize("seek_gap", [1, 10**9])
def test_a_header_that_overstates_the_length_is_corrected(
    videos: dict[str, Path], monkeypatch: pytest.MonkeyPatch, seek_gap: int
) -> None:
    lying = workers.frames._Layout(frame_count=1000, fps=10.0)  # claims 100 s; the file holds 3 s
    monkeypatch.setattr(workers.frames, "_header_layout", lambda cap: lying)
    monkeypatch.setattr(workers.frames, "DEFAULT_SEEK_MIN_GAP_FRAMES", seek_gap)

    video = sample_frames(videos["3s"])

    assert stamped(video) == [5, 15, 25]
    assert video.duration_s == pytest.approx(3.0)


@pytest.mark.parametrize(
    "write", [mf.write_garbage_mp4, mf.write_corrupt_frames_mp4, mf.write_text_as_jpeg, mf.write_zero_byte]
)
def test_videos_without_a_decodable_frame_are_reported(tmp_path: Path, write: Callable[[Path], Path]) -> None:
    path = write(tmp_path / "bad.mp4")

    with pytest.raises(PermanentError, match=r"^video has no decodable frames$"):
        sample_frames(path)


@pytest.mark.parametrize(("fps", "max_frames"), [(0.0, None), (-1.0, None), (1.0, 0)])
def test_nonsense_sampling_parameters_are_rejected(videos: dict[str, Path], fps: float, max_frames: int | None) -> None:
    with pytest.raises(ValueError, match="fps must be > 0"):
        sample_frames(videos["3s"], fps=fps, max_frames=max_frames)
