"""Sample frames from a video file with OpenCV, spread over its whole duration, each with its timestamp.

Plan: `n = ceil(duration_s * fps)` frames (at least one), capped at `max_frames`; frame i is the one
shown at the middle of the i-th of n equal slices of the video, so the samples cover the whole
duration, the first and last seconds included, and never bunch up at the start.

Packet scan: before decoding anything, the file is read once in OpenCV's raw mode, packet by packet
without decoding (about 3 microseconds a packet): it gives the true frame count, the frame rate from
the timestamps, and where the keyframes are. The header's frame count is used unless it is missing,
absurd or larger than the packets found (a truncated file); its frame size is checked first.

How frames are reached: sequential `grab()` decodes every frame up to the one wanted; seeking
(`CAP_PROP_POS_FRAMES`) lands on the last keyframe at least 16 frames before the target (OpenCV backs
off that much) and decodes forward from it. Measured with OpenCV's FFmpeg backend, a seek costs about
as much as grabbing `DEFAULT_SEEK_COST_FRAMES` (30) frames on top of the frames it decodes. Knowing the
keyframes, each wanted frame is reached the cheaper way: at the default 1 frame per second a 30 fps
video is read sequentially, 16 frames from a ten-minute video are reached by seeking, and a video
whose only keyframe is its first frame is read straight through once, instead of being decoded from
its start again for every sample.

Bounded cost per video, whatever the file claims:
- Frame size: frames over `DEFAULT_MAX_FRAME_PIXELS` (8K UHD) end the item with a PermanentError,
  judged from the header before any decoding and again on every decoded frame (headers can lie).
- Memory: each sampled frame is shrunk right after decoding so that its longer side is at most
  `DEFAULT_MAX_FRAME_SIDE_PX`; only the frame being decoded is ever held at full resolution.
- Decoding work: at most `DEFAULT_DECODE_BUDGET_FRAMES_PER_SAMPLE` decoded frames per sampled frame.
  The plan's cost is known before decoding starts, so a video over budget fails at once with a reason.
- Wall clock: an optional `Deadline` is checked between packets and between grabs.

If OpenCV cannot read the file in raw mode (or flags no keyframe), the header's count is trusted
and keyframes are assumed every `DEFAULT_ASSUMED_KEYFRAME_INTERVAL_FRAMES` (common encoders place
them 1 to 8 s apart). A seek that fails (a broken index) makes the sampler start again and grab
sequentially; a stream that ends before a wanted frame (undecodable packets) gives the frames so far.

Frames come out as HxWx3 uint8 RGB, at most `DEFAULT_MAX_FRAME_SIDE_PX` on their longer side;
`SampledVideo.width`/`height` are the video's own size and `frame_scale` maps the two.
"""

from __future__ import annotations

import bisect
import functools
import logging
import math
import os
from array import array
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from scanner.deadline import Deadline
from scanner.errors import PermanentError
from scanner.media import audio_only

logger = logging.getLogger(__name__)

FFMPEG_LOG_QUIET = -8  # FFmpeg's AV_LOG_QUIET
NO_DECODABLE_FRAMES = "video has no decodable frames"
AUDIO_ONLY = "audio only: no video stream"
DEFAULT_TRACK_LIST_BYTES = 1 << 20  # read at each end of a file that gave no frame, to tell sound-only files apart
DEFAULT_FPS = 1.0  # sampled frames per second of video
DEFAULT_MAX_FRAME_SIDE_PX = 1920  # sampled frames are shrunk to at most this on their longer side
DEFAULT_MAX_FRAME_PIXELS = 7680 * 4320  # 8K UHD; videos with larger frames are refused
DEFAULT_MAX_HELD_PIXELS = 64_000_000  # all sampled frames of one video together (192 MB of RGB)
DEFAULT_MIN_SIDE_PX = 320  # never shrink sampled frames below this for the held-pixel budget
DEFAULT_MIN_FRAMES = 1  # samples per clip at least (raising it to 10 would catch a 10 % swap in clips under 10 s)
DEFAULT_DECODE_BUDGET_FRAMES_PER_SAMPLE = 600  # frames one item may decode, per frame it samples
DEFAULT_SEEK_COST_FRAMES = 30  # a seek costs about as much as grabbing this many frames, on top of its decoding
DEFAULT_ASSUMED_KEYFRAME_INTERVAL_FRAMES = 250  # keyframe spacing assumed when the packets cannot be scanned
DEFAULT_ASSUMED_FPS = 25.0  # frame rate assumed when neither the header nor the timestamps give one
_SEEK_BACKOFF_FRAMES = 16  # OpenCV seeks to the keyframe before (target - 16), then decodes forward
_MAX_PLAUSIBLE_FPS = 1000.0  # header frame rates above this are treated as broken
_MAX_PLAUSIBLE_DURATION_S = 48 * 3600.0  # header lengths above this are treated as broken
_SAMPLING = "sampling video frames"  # what a deadline reason says the item was doing


@dataclass(frozen=True)
class VideoFrame:
    """One sampled frame: its index in the video, when it is shown, and its pixels (HxWx3 uint8 RGB)."""

    index: int
    timestamp_s: float
    rgb: np.ndarray


@dataclass(frozen=True)
class SampledVideo:
    """The frames sampled from a video, in order, and what the video turned out to be.

    `width` and `height` are the video's own frame size; the frames' pixels may be smaller.
    """

    frames: list[VideoFrame]
    duration_s: float
    width: int
    height: int
    native_fps: float

    @property
    def frame_scale(self) -> float:
        """Video pixels per sampled-frame pixel (1.0 unless frames were shrunk): multiply a box found
        in a sampled frame by it to get the box in the video's own coordinates."""
        return self.width / self.frames[0].rgb.shape[1] if self.frames else 1.0


@dataclass(frozen=True)
class _Layout:
    frame_count: int
    fps: float

    @property
    def duration_s(self) -> float:
        return self.frame_count / self.fps


@dataclass(frozen=True)
class _Packets:
    """What the packet scan found: how many packets, the last timestamp, and which were keyframes."""

    count: int
    last_ms: float
    keyframes: Sequence[int]

    @property
    def fps(self) -> float:
        fps = (self.count - 1) / (self.last_ms / 1000) if self.count > 1 and self.last_ms > 0 else 0.0
        return fps if 0 < fps <= _MAX_PLAUSIBLE_FPS else DEFAULT_ASSUMED_FPS


@dataclass(frozen=True)
class _Step:
    """How to reach one wanted frame: seek to it, or grab forward from the previous one; and what a seek costs."""

    index: int
    seek: bool
    seek_cost: int


def sample_frames(
    path: Path,
    *,
    fps: float = DEFAULT_FPS,
    max_frames: int | None = None,
    deadline: Deadline | None = None,
    max_side_px: int = DEFAULT_MAX_FRAME_SIDE_PX,
    max_frame_pixels: int = DEFAULT_MAX_FRAME_PIXELS,
) -> SampledVideo:
    """Sample about `fps` frames per second over the whole video, at most `max_frames`, spread evenly.

    Frames are shrunk to at most `max_side_px` on their longer side. Raises PermanentError with a
    one-line reason when OpenCV cannot decode a single frame ("video has no decodable frames", or "audio
    only: no video stream" when the container holds only sound), when
    frames are over `max_frame_pixels`, when sampling would decode more than the budget allows, and
    DeadlineExceededError (a PermanentError) once `deadline` passes; ValueError for a non-positive
    `fps`, `max_frames` or `max_side_px`.
    """
    if fps <= 0 or (max_frames is not None and max_frames < 1) or max_side_px < 1:
        raise ValueError(
            f"fps must be > 0 and max_frames, max_side_px >= 1 (got fps={fps}, max_frames={max_frames}, "
            f"max_side_px={max_side_px})"
        )
    deadline = deadline or Deadline.never()
    quiet_codec_logs()
    packets = _scan_packets(path, deadline, max_frame_pixels)
    with _open(path) as cap:
        _check_frame_size(*_header_size(cap), max_frame_pixels)
        layout = _choose_layout(_header_layout(cap), packets)
        if layout is None:
            raise no_frames_error(path)
        wanted = _plan_indices(layout, fps=fps, max_frames=max_frames)
        max_side_px = min(max_side_px, _side_within(DEFAULT_MAX_HELD_PIXELS // len(wanted), _header_size(cap)))
        budget = DEFAULT_DECODE_BUDGET_FRAMES_PER_SAMPLE * len(wanted)
        reader = _Reader(cap, layout.fps, deadline, budget, max_side_px=max_side_px, max_frame_pixels=max_frame_pixels)
        frames = reader.read(wanted, _keyframes(packets, layout))
    if frames is None:  # a seek failed: the index is broken, so start again and only grab
        logger.info("seeking in %s failed; reading it sequentially", path.name)
        with _open(path) as cap:
            frames = reader.restart(cap).read(wanted, None)
    if not frames or reader.source_size is None:
        raise no_frames_error(path)
    return SampledVideo(frames, layout.duration_s, *reader.source_size, layout.fps)


def no_frames_error(path: Path) -> PermanentError:
    """Why no frame came out of `path`: a file whose tracks are all sound says so; otherwise the decoding failed."""
    return PermanentError(AUDIO_ONLY if _declares_audio_only(path) else NO_DECODABLE_FRAMES)


def _declares_audio_only(path: Path) -> bool:
    """Read the container's track list (from the first and last DEFAULT_TRACK_LIST_BYTES) for `audio_only`."""
    try:
        with path.open("rb") as fh:
            head = fh.read(DEFAULT_TRACK_LIST_BYTES)
            end = fh.seek(0, os.SEEK_END)
            fh.seek(max(len(head), end - DEFAULT_TRACK_LIST_BYTES))
            return audio_only(head, fh.read())
    except OSError:
        return False


@functools.cache
def quiet_codec_logs() -> None:
    """Keep OpenCV's and FFmpeg's own messages off the user's terminal, before the first capture opens.

    Both write straight to stderr ("[mpeg4 @ 0x…] header damaged", "[ WARN:0] … can't be used to
    capture by name") around a `deepscan scan` progress bar; a broken video already ends its item
    with a one-line reason. OPENCV_FFMPEG_LOGLEVEL is read when the FFmpeg backend first loads; an
    operator who sets it, or OPENCV_LOG_LEVEL, to debug a codec keeps their value.
    """
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", str(FFMPEG_LOG_QUIET))
    if "OPENCV_LOG_LEVEL" not in os.environ:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)


def _keyframes(packets: _Packets | None, layout: _Layout) -> Sequence[int]:
    """Where the keyframes are: from the packet scan, or assumed evenly spaced when it flagged none."""
    if packets is not None and packets.keyframes:
        return packets.keyframes
    return range(0, layout.frame_count, DEFAULT_ASSUMED_KEYFRAME_INTERVAL_FRAMES)


def _side_within(pixels: int, size: tuple[int, int]) -> int:
    """The longest side a frame of `size` (width, height) may keep to hold at most `pixels` pixels.

    Many samples of one video share `DEFAULT_MAX_HELD_PIXELS`: 32 frames of 1080p keep every pixel,
    120 keep about 1000 x 560, so more samples never cost more memory.
    """
    width, height = size
    if width <= 0 or height <= 0:
        return DEFAULT_MAX_FRAME_SIDE_PX
    scale = math.sqrt(pixels / (width * height))
    return max(DEFAULT_MIN_SIDE_PX, int(max(width, height) * min(scale, 1.0)))


def _plan_indices(layout: _Layout, *, fps: float, max_frames: int | None) -> list[int]:
    """The frame indices to sample: the middles of n equal slices, n = ceil(duration * fps) capped.

    At least DEFAULT_MIN_FRAMES (within `max_frames` and the frame count), so a short clip's
    manipulated tenth cannot fall between two samples.
    """
    frame_count = layout.frame_count
    count = max(1, math.ceil(layout.duration_s * fps - 1e-9), DEFAULT_MIN_FRAMES)
    if max_frames is not None:
        count = min(count, max_frames)
    count = min(count, frame_count)
    indices = (min(frame_count - 1, int((i + 0.5) * frame_count / count)) for i in range(count))
    return sorted(set(indices))


def _plan_reads(wanted: Sequence[int], keyframes: Sequence[int] | None) -> tuple[list[_Step], int]:
    """How to reach each wanted frame (seek, or grab forward), choosing the cheaper each time, and the
    number of frames the whole plan decodes. `keyframes` None means never seek."""
    steps: list[_Step] = []
    cost = position = 0  # position: the index of the frame the next grab() decodes
    for index in wanted:
        walk = index - position + 1
        seek = _seek_cost(index, keyframes) if keyframes else walk
        steps.append(_Step(index, seek=seek < walk, seek_cost=seek))
        cost += min(seek, walk)
        position = index + 1
    return steps, cost


def _seek_cost(index: int, keyframes: Sequence[int]) -> int:
    """Frames a seek to `index` decodes (from the keyframe OpenCV lands on), plus the seek's own cost."""
    after = bisect.bisect_right(keyframes, max(0, index - _SEEK_BACKOFF_FRAMES))
    landing = keyframes[after - 1] if after else 0
    return DEFAULT_SEEK_COST_FRAMES + index - landing + 1


class _Reader:
    """Decodes the planned frames from an open capture within a decode budget and a deadline."""

    def __init__(
        self,
        cap: cv2.VideoCapture,
        native_fps: float,
        deadline: Deadline,
        budget: int,
        *,
        max_side_px: int,
        max_frame_pixels: int,
    ) -> None:
        self.cap = cap
        self.native_fps = native_fps
        self.deadline = deadline
        self.budget = budget  # frames this item may decode in all
        self.max_side_px = max_side_px
        self.max_frame_pixels = max_frame_pixels
        self.spent = 0  # frames decoded so far (a seek counts what it is estimated to decode)
        self.position = 0  # index of the frame the next grab() decodes
        self.source_size: tuple[int, int] | None = None  # (width, height) of the first decoded frame

    def restart(self, cap: cv2.VideoCapture) -> _Reader:
        """Read again from the start of a freshly opened capture; what was decoded stays spent."""
        self.cap, self.position = cap, 0
        return self

    def read(self, wanted: Sequence[int], keyframes: Sequence[int] | None) -> list[VideoFrame] | None:
        """The wanted frames, in order; None if a seek failed. Stops early if the stream ends early."""
        steps, cost = _plan_reads(wanted, keyframes)
        self._check_budget(cost, len(wanted))
        frames: list[VideoFrame] = []
        for step in steps:
            if step.seek and not self._seek(step.index, step.seek_cost):
                return None
            if not step.seek and not self._grab_through(step.index):
                logger.warning("video stream ended at frame %d, before frame %d", self.position, step.index)
                return frames
            frame = self._retrieve(step.index)
            if frame is not None:
                frames.append(frame)
        return frames

    def _check_budget(self, cost: int, samples: int) -> None:
        """Refuse, before decoding, a plan that would take the item over its decode budget."""
        if self.spent + cost > self.budget:
            raise PermanentError(
                f"video keyframes are too far apart: sampling {samples} frames would decode {self.spent + cost:,}, "
                f"over the {self.budget:,}-frame limit"
            )

    def _seek(self, index: int, cost: int) -> bool:
        self.deadline.check(_SAMPLING)
        self.spent += cost
        if not (self.cap.set(cv2.CAP_PROP_POS_FRAMES, index) and self.cap.grab()):
            return False
        self.position = index + 1
        return True

    def _grab_through(self, index: int) -> bool:
        """Grab frame after frame up to and including `index`; False if the stream ends first."""
        while self.position <= index:
            self.deadline.check(_SAMPLING)
            self.spent += 1
            if not self.cap.grab():
                return False
            self.position += 1
        return True

    def _retrieve(self, index: int) -> VideoFrame | None:
        """The frame just grabbed, size-checked, shrunk and in RGB; None if it does not decode."""
        ok, bgr = self.cap.retrieve()
        if not ok or bgr is None or bgr.ndim != 3:
            return None
        height, width = bgr.shape[:2]
        _check_frame_size(width, height, self.max_frame_pixels)
        if self.source_size is None:
            self.source_size = (width, height)
        return VideoFrame(index, index / self.native_fps, _shrunk_rgb(bgr, self.max_side_px))


def _shrunk_rgb(bgr: np.ndarray, max_side_px: int) -> np.ndarray:
    """A BGR frame as RGB, shrunk (area-averaged) so its longer side is at most `max_side_px`."""
    height, width = bgr.shape[:2]
    scale = max_side_px / max(height, width)
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        bgr = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _check_frame_size(width: int, height: int, max_frame_pixels: int) -> None:
    if width * height > max_frame_pixels:
        raise PermanentError(f"video frames are {width}x{height}, over the {max_frame_pixels:,}-pixel limit")


def _header_size(cap: cv2.VideoCapture) -> tuple[int, int]:
    """The frame size the header declares, (0, 0) when it gives none."""
    width, height = cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)
    if not (math.isfinite(width) and math.isfinite(height)):
        return 0, 0
    return max(0, int(width)), max(0, int(height))


@contextmanager
def _open(path: Path) -> Iterator[cv2.VideoCapture]:
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    try:
        if not cap.isOpened():
            raise no_frames_error(path)
        yield cap
    finally:
        cap.release()


def _scan_packets(path: Path, deadline: Deadline, max_frame_pixels: int) -> _Packets | None:
    """Read every packet without decoding it; None if OpenCV cannot read this file in raw mode.

    The header's frame size is checked first, so an oversized video is refused before any work.
    """
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, [cv2.CAP_PROP_FORMAT, -1])
    try:
        if not cap.isOpened():
            return None
        _check_frame_size(*_header_size(cap), max_frame_pixels)
        count, last_ms, keyframes = 0, 0.0, array("q")
        while cap.grab():
            deadline.check(_SAMPLING)
            if cap.get(cv2.CAP_PROP_LRF_HAS_KEY_FRAME):
                keyframes.append(count)
            last_ms = max(last_ms, cap.get(cv2.CAP_PROP_POS_MSEC))
            count += 1
    finally:
        cap.release()
    return _Packets(count, last_ms, keyframes) if count else None


def _header_layout(cap: cv2.VideoCapture) -> _Layout | None:
    """Frame count and rate from the container header, or None when either is missing or absurd."""
    count = cap.get(cv2.CAP_PROP_FRAME_COUNT)
    fps = cap.get(cv2.CAP_PROP_FPS)
    if not (math.isfinite(count) and math.isfinite(fps)) or count < 1 or not 0 < fps <= _MAX_PLAUSIBLE_FPS:
        return None
    layout = _Layout(int(count), fps)
    return layout if layout.duration_s <= _MAX_PLAUSIBLE_DURATION_S else None


def _choose_layout(header: _Layout | None, packets: _Packets | None) -> _Layout | None:
    """The header's layout, unless it is missing or claims more frames than there are packets."""
    if packets is None or (header is not None and header.frame_count <= packets.count):
        return header
    logger.info("video header lacks or overstates the frame count; using the %d packets found", packets.count)
    return _Layout(packets.count, header.fps if header is not None else packets.fps)
