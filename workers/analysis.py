"""One item from URL to scored units: fetch, sniff, decode or sample frames, crop faces, prepare tensors.

Runs in the fetch/decode threads. Every failure of the item itself becomes an `Outcome` with
status `error` and a one-line reason. A transient failure (the database restarting during the reuse
lookup) is not the item's: it raises TransientError, and the chunk is retried with backoff.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from scanner import reuse
from scanner.deadline import ItemBudget
from scanner.errors import PermanentError, TransientError, is_transient
from scanner.faces import FaceView
from scanner.jobs import ScanOptions
from scanner.media import decode_image, decoded_pixels
from scanner.mediaurl import InvalidMediaUrlError, MediaUrl
from scanner.redaction import redact_url
from scanner.thumbnails import DEFAULT_THUMBNAIL_MAX_SIDE_PX, encode_thumbnail, encode_view
from workers.fetch import Fetched, fetch, item_budget
from workers.frames import sample_frames
from workers.gpudecode import DeviceJpeg, EncodedJpeg, device_jpeg
from workers.inference import ModelInput, Scored
from workers.runtime import WorkerRuntime

log = logging.getLogger(__name__)


@dataclass
class Unit:
    """One input to the model: a face crop, or a whole image/frame when no face was found.

    It holds the prepared tensor, made on the fetch thread: its size is bounded by the model's
    input size, where a decoded 1080p frame would be ten times larger. A JPEG bound for the GPU
    decoder (workers/gpudecode.py) holds its compressed bytes in `encoded` instead, and gets its
    thumbnail from the GPU with its score.
    """

    frame_index: int
    timestamp_s: float
    face_index: int | None
    bbox: list[int] | None
    tensor: torch.Tensor | None
    score: float | None = None
    thumbnail: bytes | None = None  # a small JPEG of what was scored (scanner/thumbnails.py keeps the best)
    landmarks: list[list[float]] | None = None  # the face's five [x, y] landmarks, when the detector gives them
    encoded: EncodedJpeg | None = None
    scoring: Future[Scored] | None = None  # the batcher's promise of the score, until it is kept

    def model_input(self) -> ModelInput:
        """What the batcher hands the model: the prepared tensor, or the JPEG for the device decoder."""
        if self.encoded is not None:
            return self.encoded
        assert self.tensor is not None, "a unit is submitted once, before its tensor is freed"
        return self.tensor


@dataclass
class Outcome:
    """What became of one item; `units` get their scores from the batched model run."""

    item_id: int
    url: str
    status: str = "done"
    error: str | None = None
    kind: str = "unknown"
    size: int | None = None
    sha256: str | None = None
    etag: str | None = None
    width: int | None = None
    height: int | None = None
    duration_s: float | None = None
    units: list[Unit] = field(default_factory=list)
    # frame index -> the whole frame as a 640 px JPEG; the store keeps the top few (scanner/thumbnails.py)
    views: dict[int, bytes] = field(default_factory=dict)
    reused: reuse.Earlier | None = None
    score: float | None = None
    verdict: str | None = None

    @classmethod
    def failed(cls, item_id: int, url: str, reason: str, **known: Any) -> Outcome:
        return cls(item_id=item_id, url=url, status="error", error=reason, **known)


def analyse_item(
    rt: WorkerRuntime,
    item_id: int,
    url: str,
    options: ScanOptions,
    model_version: str,
    *,
    budget: ItemBudget | None = None,
    look_for_earlier: bool | None = None,
) -> Outcome:
    """Fetch and decode one item into model-ready units (or an error, or a reusable earlier verdict).

    The item's deadline starts when a fetch thread takes it up (`budget`, default now) and bounds
    fetch and decode; the caller may watch the same budget. `look_for_earlier` (default: unless the
    job rescans) looks the fetched bytes up for an earlier verdict to reuse.
    """
    budget = budget if budget is not None else item_budget(rt.settings)
    look_for_earlier = not options.rescan if look_for_earlier is None else look_for_earlier
    try:
        ref = MediaUrl.parse(url)
        s3 = rt.s3() if ref.scheme == "s3" else None
        fetched = fetch(ref, rt.settings, s3_client=s3, http=rt.http(), budget=budget)
    except InvalidMediaUrlError as exc:  # a line of a URL list that names nothing fetchable
        return Outcome.failed(item_id, url, str(exc))
    except (PermanentError, TransientError) as exc:  # transient: it outlasted the fetch's own retries
        return Outcome.failed(item_id, url, str(exc))
    except Exception as exc:
        _raise_if_transient(exc, item_id)
        log.exception("item %s: fetch of %s failed unexpectedly", item_id, redact_url(url))
        return Outcome.failed(item_id, url, f"fetch failed: {type(exc).__name__}: {_first_line(exc)}")
    known: dict[str, Any] = {"kind": fetched.kind, "size": fetched.size, "sha256": fetched.sha256, "etag": fetched.etag}
    try:
        if look_for_earlier and (earlier := find_earlier_result(rt, fetched.sha256, model_version, options)):
            return Outcome(item_id=item_id, url=url, reused=earlier, **known)
        return _decode(rt, Outcome(item_id=item_id, url=url, **known), fetched, options, budget)
    except PermanentError as exc:
        return Outcome.failed(item_id, url, str(exc), **known)
    except Exception as exc:
        _raise_if_transient(exc, item_id)
        log.exception("item %s: decoding %s failed unexpectedly", item_id, redact_url(url))
        return Outcome.failed(item_id, url, f"decode failed: {type(exc).__name__}: {_first_line(exc)}", **known)
    finally:
        fetched.close()


def _decode(rt: WorkerRuntime, outcome: Outcome, fetched: Fetched, options: ScanOptions, budget: ItemBudget) -> Outcome:
    if fetched.kind == "image":
        assert fetched.data is not None
        if (jpeg := _for_device_decoder(rt, fetched.data, options)) is not None:
            outcome.width, outcome.height = jpeg.width, jpeg.height
            outcome.units = [Unit(0, 0.0, None, None, None, encoded=jpeg.encoded)]
            return outcome
        outcome.units = _decode_image_units(rt, outcome, fetched.data, options, budget)
    elif fetched.kind == "video":
        assert fetched.path is not None
        deadline = budget.current()
        video = sample_frames(fetched.path, fps=options.fps, max_frames=options.max_frames, deadline=deadline)
        outcome.width, outcome.height, outcome.duration_s = video.width, video.height, video.duration_s
        for frame in video.frames:
            deadline.check("finding faces in video frames")
            units = units_for_frame(
                rt, frame.rgb, frame.index, frame.timestamp_s, faces=options.faces, thumbnails=keeps_thumbnails(options)
            )
            outcome.units.extend(_in_video_pixels(units, video.frame_scale))
            if keeps_thumbnails(options):
                outcome.views[frame.index] = encode_view(frame.rgb)
    else:
        raise PermanentError("not an image or video")
    return outcome


def _decode_image_units(
    rt: WorkerRuntime, outcome: Outcome, data: bytes, options: ScanOptions, budget: ItemBudget
) -> list[Unit]:
    """Decode the image and make its model inputs while holding its pixels in the process's decode
    budget (workers/decodebudget.py); time spent waiting for that budget is not the item's."""
    min_side_px = rt.scorer.decode_min_side_px
    with ExitStack() as held:
        with budget.paused():
            held.enter_context(rt.decode_budget.reserve(decoded_pixels(data, min_side_px=min_side_px)))
        rgb = decode_image(data, min_side_px=min_side_px)
        outcome.height, outcome.width = rgb.shape[:2]
        budget.current().check("decoding the image")
        units = units_for_frame(rt, rgb, 0, 0.0, faces=options.faces, thumbnails=keeps_thumbnails(options))
        if keeps_thumbnails(options):
            outcome.views[0] = encode_view(rgb)
        del rgb  # the decoded pixels go before their reservation does
    return units


def _for_device_decoder(rt: WorkerRuntime, data: bytes, options: ScanOptions) -> DeviceJpeg | None:
    """The image as a JPEG for the GPU decoder, when this worker decodes JPEGs there and the job
    shows the model the whole image (no face view: faces are found on CPU pixels)."""
    if not rt.scorer.decodes_jpeg_on_device or (options.faces and rt.scorer.meta.face_view.finds_faces):
        return None
    return device_jpeg(data, preview_px=DEFAULT_THUMBNAIL_MAX_SIDE_PX if keeps_thumbnails(options) else None)


def units_for_frame(
    rt: WorkerRuntime, rgb: np.ndarray, index: int, timestamp_s: float, *, faces: bool, thumbnails: bool = True
) -> list[Unit]:
    """The frame through the checkpoint's face view (scanner/faces): one unit per face crop, or the
    whole frame when the view finds no face, or when the job turned faces off (`--no-faces`)."""
    view = rt.scorer.meta.face_view if faces else FaceView.whole_image()
    return [
        Unit(
            index,
            timestamp_s,
            None if face.box is None else i,
            None if face.box is None else [face.box.x, face.box.y, face.box.w, face.box.h],
            rt.scorer.prepare(face.rgb),
            thumbnail=encode_thumbnail(face.rgb) if thumbnails else None,
            landmarks=None if face.box is None or face.box.landmarks is None else [list(p) for p in face.box.landmarks],
        )
        for i, face in enumerate(view.faces(rgb))
    ]


def keeps_thumbnails(options: ScanOptions) -> bool:
    """Thumbnails are kept unless the job turned them off (`--no-thumbnails`)."""
    return options.thumbnails


def _in_video_pixels(units: list[Unit], scale: float) -> list[Unit]:
    """Face boxes found on a shrunk frame, stored in the video's own pixels."""
    if scale != 1.0:
        for unit in units:
            if unit.bbox is not None:
                unit.bbox = [round(v * scale) for v in unit.bbox]
            if unit.landmarks is not None:
                unit.landmarks = [[x * scale, y * scale] for x, y in unit.landmarks]
    return units


def find_earlier_result(
    rt: WorkerRuntime, sha256: str, model_version: str, options: ScanOptions
) -> reuse.Earlier | None:
    """A finished item with the same bytes, model and score-changing options, with its frame rows."""
    return rt.earlier.find(sha256, model_version, list(options.scoring_keys().values()))


def _raise_if_transient(exc: Exception, item_id: int) -> None:
    """A failure of the world, not of the item, fails the chunk (retried with backoff) instead of the item."""
    if is_transient(exc):
        log.warning("item %s: transient failure, the chunk will be retried: %s", item_id, _first_line(exc))
        raise TransientError(f"{type(exc).__name__}: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "no details"
