"""Video frames are sampled over the whole duration, with true timestamps, in RGB, even from damaged files,
with bounded memory and decoding work whatever the file claims."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import workers.frames
from scanner.deadline import Deadline
from scanner.errors import DeadlineExceededError, PermanentError
from tests import media_factory as mf
from workers.frames import SampledVideo, _plan_reads, sample_frames


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


def count_seeks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The frame indices the sampler seeks to, recorded as it runs."""
    seeks: list[int] = []
    original: Callable[..., bool] = workers.frames._Reader._seek

    def recording(reader: Any, index: int, cost: int) -> bool:
        seeks.append(index)
        return original(reader, index, cost)

    monkeypatch.setattr(workers.frames._Reader, "_seek", recording)
    return seeks


def test_the_plan_seeks_to_sparse_frames_and_grabs_dense_ones() -> None:
    every_12 = list(range(0, 300, 12))

    dense, dense_cost = _plan_reads([5, 15, 25], every_12)
    sparse, sparse_cost = _plan_reads([75, 225], every_12)

    assert [step.seek for step in dense] == [False, False, False]
    assert dense_cost == 26  # frames 0 to 25, grabbed once each
    assert [step.seek for step in sparse] == [True, True]
    assert sparse_cost == (30 + 75 - 48 + 1) + (30 + 225 - 204 + 1)  # each seek decodes from its keyframe


def test_the_plan_never_seeks_when_the_only_keyframe_is_the_first_frame() -> None:
    steps, cost = _plan_reads([1000, 5000, 9000], [0])

    assert not any(step.seek for step in steps)
    assert cost == 9001  # one pass, not 1001 + 5001 + 9001 frames decoded from the start


def test_sparse_samples_are_reached_by_seeking_dense_ones_by_grabbing(
    videos: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    seeks = count_seeks(monkeypatch)

    dense = sample_frames(videos["30s"])  # 1 frame per second of a 10 fps video: gap 10 frames
    assert (len(dense.frames), seeks) == (30, [])

    sparse = sample_frames(videos["30s"], max_frames=2)  # gap 150 frames, a keyframe every 12
    assert (stamped(sparse), seeks) == ([75, 225], [75, 225])


def test_seeking_and_grabbing_return_the_same_frames(videos: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    grabbed = sample_frames(videos["10s"], max_frames=7)
    seeks = count_seeks(monkeypatch)
    monkeypatch.setattr(workers.frames, "DEFAULT_SEEK_COST_FRAMES", -(10**6))  # seeking always looks cheaper
    sought = sample_frames(videos["10s"], max_frames=7)

    assert len(seeks) == 7
    assert stamped(sought) == stamped(grabbed) == [f.index for f in grabbed.frames]
    assert [f.timestamp_s for f in sought.frames] == [f.timestamp_s for f in grabbed.frames]


def test_a_plan_mixing_seeks_and_grabs_returns_the_planned_frames(
    videos: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    seeks = count_seeks(monkeypatch)

    video = sample_frames(videos["30s"], max_frames=6)  # 50 frames apart, a keyframe every 12

    assert stamped(video) == [25, 75, 125, 175, 225, 275]
    assert seeks == [125]  # grabbing on from frame 126 to 175 is cheaper than seeking again


def test_a_failed_seek_starts_again_grabbing(videos: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workers.frames, "DEFAULT_SEEK_COST_FRAMES", -(10**6))
    monkeypatch.setattr(workers.frames._Reader, "_seek", lambda reader, index, cost: False)  # a broken index

    assert stamped(sample_frames(videos["10s"], max_frames=4)) == [12, 37, 62, 87]


def test_a_header_without_frame_count_or_rate_is_recovered_from_the_packets(
    videos: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(workers.frames, "_header_layout", lambda cap: None)

    video = sample_frames(videos["3s"])

    assert stamped(video) == [5, 15, 25]
    assert video.native_fps == pytest.approx(10.0)
    assert video.duration_s == pytest.approx(3.0)


@pytest.mark.parametrize("seek_cost", [-(10**6), 10**6])
def test_a_header_that_overstates_the_length_is_corrected(
    videos: dict[str, Path], monkeypatch: pytest.MonkeyPatch, seek_cost: int
) -> None:
    lying = workers.frames._Layout(frame_count=1000, fps=10.0)  # claims 100 s; the file holds 3 s
    monkeypatch.setattr(workers.frames, "_header_layout", lambda cap: lying)
    monkeypatch.setattr(workers.frames, "DEFAULT_SEEK_COST_FRAMES", seek_cost)

    video = sample_frames(videos["3s"])

    assert stamped(video) == [5, 15, 25]
    assert video.duration_s == pytest.approx(3.0)


def test_without_a_packet_scan_the_header_and_assumed_keyframes_serve(
    videos: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(workers.frames, "_scan_packets", lambda path, deadline, max_frame_pixels: None)

    assert stamped(sample_frames(videos["10s"], max_frames=4)) == [12, 37, 62, 87]


# --- bounded memory and work per video ----------------------------------------------------------


def test_frames_are_shrunk_on_decode_and_the_video_keeps_its_own_size(tmp_path: Path) -> None:
    path = mf.write_video(tmp_path / "vga.mp4", seconds=2.0, fps=5.0, size=(640, 480))

    video = sample_frames(path, max_side_px=320)

    assert [frame.rgb.shape for frame in video.frames] == [(240, 320, 3)] * 2
    assert (video.width, video.height, video.frame_scale) == (640, 480, 2.0)
    assert stamped(video) == [2, 7]  # still the right frames, in RGB
    assert mf.red_corner(video.frames[0].rgb)[0] > 200


def test_frames_larger_than_1080p_are_shrunk_to_1920_by_default(tmp_path: Path) -> None:
    path = mf.write_mjpeg_avi(tmp_path / "uhd.avi", (3840, 2160), frames=3)

    video = sample_frames(path, fps=25.0)

    assert [frame.rgb.shape for frame in video.frames] == [(1080, 1920, 3)] * 3
    assert (video.width, video.height) == (3840, 2160)


def test_frames_over_the_pixel_cap_are_refused_from_the_header(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = mf.write_video(tmp_path / "vga.mp4", seconds=1.0, fps=5.0, size=(640, 480))
    retrieved = count_retrieves(monkeypatch)

    with pytest.raises(PermanentError, match=r"^video frames are 640x480, over the 300,000-pixel limit$"):
        sample_frames(path, max_frame_pixels=300_000)
    assert retrieved == []  # refused before a single frame was decoded


def test_frames_over_the_pixel_cap_are_refused_when_the_header_hides_their_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = mf.write_video(tmp_path / "vga.mp4", seconds=1.0, fps=5.0, size=(640, 480))
    monkeypatch.setattr(workers.frames, "_header_size", lambda cap: (0, 0))

    with pytest.raises(PermanentError, match=r"^video frames are 640x480, over the 300,000-pixel limit$"):
        sample_frames(path, max_frame_pixels=300_000)


def count_retrieves(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    original: Callable[..., Any] = workers.frames._Reader._retrieve

    def recording(reader: Any, index: int) -> Any:
        calls.append(index)
        return original(reader, index)

    monkeypatch.setattr(workers.frames._Reader, "_retrieve", recording)
    return calls


@pytest.fixture(scope="module")
def one_keyframe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """100 s at 30 fps whose only keyframe is the first frame."""
    return mf.write_long_gop_video(tmp_path_factory.mktemp("gop") / "one_keyframe.avi", frames=3000, fps=30.0)


def test_a_video_with_one_keyframe_is_read_straight_through(
    one_keyframe: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seeks = count_seeks(monkeypatch)

    video = sample_frames(one_keyframe, max_frames=8)

    assert [f.index for f in video.frames] == [187, 562, 937, 1312, 1687, 2062, 2437, 2812]
    assert seeks == []  # one pass over 2,813 frames, not eight passes from the start (about 12,000)


def test_sampling_that_would_decode_too_much_is_refused_before_decoding(
    one_keyframe: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    retrieved = count_retrieves(monkeypatch)

    with pytest.raises(PermanentError) as caught:
        sample_frames(one_keyframe, max_frames=2)  # 2,251 frames to decode for 2: over 2 x 600

    assert str(caught.value) == (
        "video keyframes are too far apart: sampling 2 frames would decode 2,251, over the 1,200-frame limit"
    )
    assert retrieved == []


def test_a_passed_deadline_stops_sampling_with_a_reason(videos: dict[str, Path]) -> None:
    with pytest.raises(DeadlineExceededError, match=r"video deadline of 0 s exceeded while sampling video frames"):
        sample_frames(videos["3s"], deadline=Deadline(0.0, what="video"))


@pytest.mark.parametrize(
    "write", [mf.write_garbage_mp4, mf.write_corrupt_frames_mp4, mf.write_text_as_jpeg, mf.write_zero_byte]
)
def test_videos_without_a_decodable_frame_are_reported(tmp_path: Path, write: Callable[[Path], Path]) -> None:
    path = write(tmp_path / "bad.mp4")

    with pytest.raises(PermanentError, match=r"^video has no decodable frames$"):
        sample_frames(path)


@pytest.mark.parametrize(
    ("fps", "max_frames", "max_side_px"), [(0.0, None, 9), (-1.0, None, 9), (1.0, 0, 9), (1.0, 1, 0)]
)
def test_nonsense_sampling_parameters_are_rejected(
    videos: dict[str, Path], fps: float, max_frames: int | None, max_side_px: int
) -> None:
    with pytest.raises(ValueError, match="fps must be > 0"):
        sample_frames(videos["3s"], fps=fps, max_frames=max_frames, max_side_px=max_side_px)


def test_codec_warnings_stay_off_the_users_terminal(tmp_path: Path) -> None:
    """FFmpeg and OpenCV write to the process's stderr themselves; only our one-line reasons may appear."""
    import os
    import subprocess
    import sys

    broken = [mf.write_garbage_mp4(tmp_path / "garbage.mp4"), mf.write_corrupt_frames_mp4(tmp_path / "corrupt.mp4")]
    script = (
        "import sys; from pathlib import Path; from workers.frames import sample_frames\n"
        "for name in sys.argv[1:]:\n"
        "    try: sample_frames(Path(name))\n"
        "    except Exception as exc: print(exc)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCV_")}
    done = subprocess.run(
        [sys.executable, "-c", script, *map(str, broken)], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["video has no decodable frames"] * 2
    for noise in ("@ 0x", "WARN", "moov atom", "header damaged"):
        assert noise not in done.stderr, done.stderr


@pytest.mark.parametrize("write", [mf.write_audio_only_mp4, mf.write_audio_only_mkv])
def test_a_sound_only_file_says_it_has_no_video_stream(tmp_path: Path, write: Callable[[Path], Path]) -> None:
    path = write(tmp_path / "podcast.mp4")

    with pytest.raises(PermanentError, match=r"^audio only: no video stream$"):
        sample_frames(path)


def test_a_broken_video_still_blames_its_frames(tmp_path: Path) -> None:
    with pytest.raises(PermanentError, match=r"^video has no decodable frames$"):
        sample_frames(mf.write_garbage_mp4(tmp_path / "garbage.mp4"))
