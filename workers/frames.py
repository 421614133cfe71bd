"""Sample frames from a video file with OpenCV, spread over its whole duration, each with its timestamp.

Plan: `n = ceil(duration_s * fps)` frames (at least one), capped at `max_frames`; frame i is the one
shown at the middle of the i-th of n equal slices of the video, so the samples cover the whole
duration, the first and last seconds included, and never bunch up at the start.

How frames are reached: sequential `grab()` decodes every frame up to the last one wanted;
seeking (`CAP_PROP_POS_FRAMES`) jumps back to a keyframe before each wanted frame and decodes
forward from it. Measured with OpenCV's FFmpeg backend, one seek costs about as much as grabbing
30 frames plus half the keyframe interval (the frames decoded after landing on the keyframe).
The interval is not visible through OpenCV and is 1 to 8 s in common encodes (up to 250 frames
at 30 fps), so the rule is: seek when the average gap between wanted frames is at least
`DEFAULT_SEEK_MIN_GAP_FRAMES` (150: break-even even for 250-frame intervals), otherwise
grab. At the default 1 frame per second a 30 fps video is read sequentially; 16 frames from a
ten-minute video are reached by seeking (about 10x faster on a 60 s test clip with 6 frames).

Broken headers: when the frame count or frame rate is missing or absurd, or the header proves
wrong (the stream ends before a wanted frame, a seek fails), the sampler counts the frames by
grabbing them all (the rate then comes from the stream's timestamps) and reads sequentially.

Frames come out as HxWx3 uint8 RGB. Holding them all costs width x height x 3 bytes each, which
is why callers should cap `max_frames` for long, large videos.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from scanner.errors import PermanentError

logger = logging.getLogger(__name__)

DEFAULT_FPS = 1.0  # sampled frames per second of video
DEFAULT_SEEK_MIN_GAP_FRAMES = 150  # seek instead of grabbing when wanted frames are this far apart
DEFAULT_ASSUMED_FPS = 25.0  # frame rate assumed when neither the header nor the timestamps give one
_MAX_PLAUSIBLE_FPS = 1000.0  # header frame rates above this are treated as broken
_MAX_PLAUSIBLE_DURATION_S = 48 * 3600.0  # header lengths above this are treated as broken


@dataclass(frozen=True)
class VideoFrame:
    """One sampled frame: its index in the video, when it is shown, and its pixels (HxWx3 uint8 RGB)."""

    index: int
    timestamp_s: float
    rgb: np.ndarray


@dataclass(frozen=True)
class SampledVideo:
    """The frames sampled from a video, in order, and what the video turned out to be."""

    frames: list[VideoFrame]
    duration_s: float
    width: int
    height: int
    native_fps: float


@dataclass(frozen=True)
class _Layout:
    frame_count: int
    fps: float

    @property
    def duration_s(self) -> float:
        return self.frame_count / self.fps


def sample_frames(path: Path, *, fps: float = DEFAULT_FPS, max_frames: int | None = None) -> SampledVideo:
    """Sample about `fps` frames per second over the whole video, at most `max_frames`, spread evenly.

    Raises PermanentError("video has no decodable frames") when OpenCV cannot open the file or
    decode a single frame from it, and ValueError for a non-positive `fps` or `max_frames`.
    """
    if fps <= 0 or (max_frames is not None and max_frames < 1):
        raise ValueError(f"fps must be > 0 and max_frames >= 1 (got fps={fps}, max_frames={max_frames})")
    with _open(path) as cap:
        layout = _header_layout(cap)
        frames = _sample(cap, layout, fps=fps, max_frames=max_frames) if layout else None
    if frames is None or layout is None:  # no usable header, or the header proved wrong: count the frames
        with _open(path) as cap:
            layout = _counted_layout(cap)
        if layout is None:
            raise PermanentError("video has no decodable frames")
        with _open(path) as cap:
            frames = _read_sequentially(cap, _plan_indices(layout, fps=fps, max_frames=max_frames), layout.fps)
    if not frames:
        raise PermanentError("video has no decodable frames")
    height, width = frames[0].rgb.shape[:2]
    return SampledVideo(frames, layout.duration_s, width, height, layout.fps)


def _plan_indices(layout: _Layout, *, fps: float, max_frames: int | None) -> list[int]:
    """The frame indices to sample: the middles of n equal slices, n = ceil(duration * fps) capped."""
    frame_count = layout.frame_count
    count = max(1, math.ceil(layout.duration_s * fps - 1e-9))
    if max_frames is not None:
        count = min(count, max_frames)
    count = min(count, frame_count)
    indices = (min(frame_count - 1, int((i + 0.5) * frame_count / count)) for i in range(count))
    return sorted(set(indices))


@contextmanager
def _open(path: Path) -> Iterator[cv2.VideoCapture]:
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    try:
        if not cap.isOpened():
            raise PermanentError("video has no decodable frames")
        yield cap
    finally:
        cap.release()


def _header_layout(cap: cv2.VideoCapture) -> _Layout | None:
    """Frame count and rate from the container header, or None when either is missing or absurd."""
    count = cap.get(cv2.CAP_PROP_FRAME_COUNT)
    fps = cap.get(cv2.CAP_PROP_FPS)
    if not (math.isfinite(count) and math.isfinite(fps)) or count < 1 or not 0 < fps <= _MAX_PLAUSIBLE_FPS:
        return None
    layout = _Layout(int(count), fps)
    return layout if layout.duration_s <= _MAX_PLAUSIBLE_DURATION_S else None


def _counted_layout(cap: cv2.VideoCapture) -> _Layout | None:
    """Count the frames by grabbing them all; the rate comes from the stream's timestamps."""
    logger.info("video header lacks a frame count or rate; counting frames")
    count, last_ms = 0, 0.0
    while cap.grab():
        count += 1
        last_ms = max(last_ms, cap.get(cv2.CAP_PROP_POS_MSEC))
    if count == 0:
        return None
    fps = (count - 1) / (last_ms / 1000) if count > 1 and last_ms > 0 else DEFAULT_ASSUMED_FPS
    return _Layout(count, fps if 0 < fps <= _MAX_PLAUSIBLE_FPS else DEFAULT_ASSUMED_FPS)


def _sample(cap: cv2.VideoCapture, layout: _Layout, *, fps: float, max_frames: int | None) -> list[VideoFrame] | None:
    """Decode the planned frames, seeking when they are sparse and grabbing when they are dense.

    None means the header was wrong (the stream ended early or a seek failed).
    """
    wanted = _plan_indices(layout, fps=fps, max_frames=max_frames)
    gap = layout.frame_count / len(wanted)
    if gap >= DEFAULT_SEEK_MIN_GAP_FRAMES:
        return _read_by_seeking(cap, wanted, layout.fps)
    return _read_sequentially(cap, wanted, layout.fps)


def _read_sequentially(cap: cv2.VideoCapture, wanted: list[int], native_fps: float) -> list[VideoFrame] | None:
    """Grab frame after frame, keeping the wanted ones; None if the stream ends before the last one."""
    frames: list[VideoFrame] = []
    targets = iter(wanted)
    target = next(targets)
    index = 0
    while cap.grab():
        if index == target:
            frame = _retrieve(cap, index, native_fps)
            if frame is not None:
                frames.append(frame)
            target = next(targets, -1)
            if target < 0:
                return frames
        index += 1
    return None


def _read_by_seeking(cap: cv2.VideoCapture, wanted: list[int], native_fps: float) -> list[VideoFrame] | None:
    """Seek to each wanted frame; None if a seek fails (a broken index or an overstated frame count)."""
    frames: list[VideoFrame] = []
    for index in wanted:
        if not (cap.set(cv2.CAP_PROP_POS_FRAMES, index) and cap.grab()):
            return None
        frame = _retrieve(cap, index, native_fps)
        if frame is not None:
            frames.append(frame)
    return frames


def _retrieve(cap: cv2.VideoCapture, index: int, native_fps: float) -> VideoFrame | None:
    ok, bgr = cap.retrieve()
    if not ok or bgr is None or bgr.ndim != 3:
        return None
    return VideoFrame(index, index / native_fps, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
