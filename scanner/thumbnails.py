"""Thumbnails kept at scan time: a small JPEG of each item's top-scoring face, and one per flagged video segment.

The workers encode a thumbnail for every scored unit (face crop, or the whole frame when no face
was found) while they decode, and keep only the ones that matter when they store the item, in the
same transaction as its verdict: position 0 is the top-scoring unit of the item, positions 1.. the
top-scoring unit of each flagged time range (the ranges `deepscan show` prints). The web app only
ever reads these rows: it never fetches a source URL, which would reopen SSRF and privacy holes.

Beside them, the evidence a moderator judges by (`frame_views`): a downscaled JPEG of the whole
image, or of each of a video's top-scoring frames (the frames of the thumbnails first), longest side
at most 640 px and at most `DEFAULT_VIEW_MAX_BYTES` per item; the console draws every face's box
and score (`frame_results`) over it. `--no-thumbnails` turns both off.

An item that reused an earlier verdict shares that item's thumbnails and views (through
`reused_from_id`) rather than copying them.
"""

from __future__ import annotations

import io
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from PIL import Image
from sqlalchemy import Connection, delete, insert, select
from sqlalchemy.orm import Session

from scanner.models import FrameResult, FrameView, MediaItem, Thumbnail

DEFAULT_THUMBNAIL_MAX_SIDE_PX = 160
DEFAULT_VIEW_MAX_SIDE_PX = 640
DEFAULT_VIEW_MAX_BYTES = 600_000  # per item: a few views of a video, never its whole length
DEFAULT_VIEWS_PER_VIDEO = 6
DEFAULT_JPEG_QUALITY = 80
MAX_REUSE_HOPS = 8  # a reused verdict may itself be reused; follow the chain this far


def encode_thumbnail(rgb: np.ndarray, *, max_side_px: int = DEFAULT_THUMBNAIL_MAX_SIDE_PX) -> bytes:
    """A JPEG of `rgb` (H x W x 3, uint8) whose longest side is at most `max_side_px`; a few KB."""
    image = Image.fromarray(np.ascontiguousarray(rgb[..., :3]))
    image.thumbnail((max_side_px, max_side_px), Image.Resampling.BILINEAR, reducing_gap=2.0)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=DEFAULT_JPEG_QUALITY, optimize=True)
    return buffer.getvalue()


def encode_view(rgb: np.ndarray) -> bytes:
    """The whole image or frame as evidence: a JPEG whose longest side is at most 640 px.

    Every decoded image and sampled frame gets one (the best are kept when the scores are known), so it
    uses OpenCV's area resize and JPEG encoder: about four times faster than PIL's on a 1080p frame.
    """
    import cv2  # here, not at the top: the CLI and the web app import this module and start faster without it

    height, width = rgb.shape[:2]
    scale = min(1.0, DEFAULT_VIEW_MAX_SIDE_PX / max(height, width))
    small = np.ascontiguousarray(rgb[..., :3])
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        small = cv2.resize(small, size, interpolation=cv2.INTER_AREA)
    ok, encoded = cv2.imencode(
        ".jpg", cv2.cvtColor(small, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, DEFAULT_JPEG_QUALITY]
    )
    if not ok:
        raise ValueError("OpenCV could not encode the view as JPEG")
    return bytes(encoded.tobytes())


def jpeg_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        return image.size


class ScoredShot(Protocol):
    """What the workers know of one scored unit (workers.analysis.Unit satisfies it)."""

    frame_index: int
    timestamp_s: float
    score: float | None
    thumbnail: bytes | None


def pick(
    kind: str, shots: Sequence[ScoredShot], *, threshold: float, strategy: str
) -> list[tuple[ScoredShot, tuple[float, float] | None]]:
    """The shots worth keeping, in position order: the top one, then the top one of each flagged range."""
    scored = [s for s in shots if s.score is not None and s.thumbnail is not None]
    if not scored:
        return []
    chosen: list[tuple[ScoredShot, tuple[float, float] | None]] = [(max(scored, key=_score), None)]
    if kind == "video":
        from scanner.timeline import flagged_ranges  # here: timeline loads matplotlib, which images never need

        samples = [(s.timestamp_s, _score(s)) for s in scored]
        for start, end in flagged_ranges(samples, threshold, strategy=strategy):
            inside = [s for s in scored if start <= s.timestamp_s <= end]
            if inside:
                chosen.append((max(inside, key=_score), (start, end)))
    return chosen


def _score(shot: ScoredShot) -> float:
    return shot.score if shot.score is not None else 0.0


def rows_for(
    item_id: int, kind: str, shots: Sequence[ScoredShot], *, threshold: float, strategy: str
) -> list[dict[str, Any]]:
    """The thumbnail rows of one item (empty when nothing was kept)."""
    rows = []
    for position, (shot, segment) in enumerate(pick(kind, shots, threshold=threshold, strategy=strategy)):
        assert shot.thumbnail is not None
        width, height = jpeg_size(shot.thumbnail)
        rows.append(
            {
                "item_id": item_id,
                "position": position,
                "frame_index": shot.frame_index,
                "timestamp_s": shot.timestamp_s,
                "start_s": segment[0] if segment else None,
                "end_s": segment[1] if segment else None,
                "score": _score(shot),
                "width": width,
                "height": height,
                "jpeg": shot.thumbnail,
            }
        )
    return rows


def view_rows(
    item_id: int, kind: str, shots: Sequence[ScoredShot], views: Mapping[int, bytes], *, threshold: float, strategy: str
) -> list[dict[str, Any]]:
    """The frame views of one item worth keeping: the frames of its thumbnails, then its other top-scoring
    frames, up to `DEFAULT_VIEWS_PER_VIDEO` frames and `DEFAULT_VIEW_MAX_BYTES` in all."""
    best: dict[int, ScoredShot] = {}
    for shot in shots:
        if (
            shot.score is not None
            and shot.frame_index in views
            and _score(shot) >= _score(best.get(shot.frame_index, shot))
        ):
            best[shot.frame_index] = shot
    picked = [shot.frame_index for shot, _ in pick(kind, shots, threshold=threshold, strategy=strategy)]
    by_score = sorted(best, key=lambda index: _score(best[index]), reverse=True)
    rows: list[dict[str, Any]] = []
    spent = 0
    for index in dict.fromkeys([i for i in picked if i in best] + by_score):
        if len(rows) >= DEFAULT_VIEWS_PER_VIDEO or spent + len(views[index]) > DEFAULT_VIEW_MAX_BYTES:
            break
        width, height = jpeg_size(views[index])
        spent += len(views[index])
        shot = best[index]
        rows.append({"item_id": item_id, "frame_index": index, "timestamp_s": shot.timestamp_s,
                     "score": _score(shot), "width": width, "height": height, "jpeg": views[index]})  # fmt: skip
    return rows


def replace_thumbnails(
    conn: Connection, held: Collection[int], outcomes: Sequence[Any], *, threshold: float, strategy: str
) -> None:
    """In the caller's transaction: drop the thumbnails and views of `held` items and store those of fresh outcomes.

    `outcomes` are the freshly scored (not reused) items being stored; each has `item_id`, `status`,
    `kind`, `units` (each with frame_index, timestamp_s, score, thumbnail) and `views` (frame index to
    the JPEG of the whole frame, empty when thumbnails are off).
    """
    if not held:
        return
    conn.execute(delete(Thumbnail).where(Thumbnail.item_id.in_(list(held))))
    conn.execute(delete(FrameView).where(FrameView.item_id.in_(list(held))))
    done = [o for o in outcomes if o.status == "done" and o.item_id in held]
    rows = [row for o in done for row in rows_for(o.item_id, o.kind, o.units, threshold=threshold, strategy=strategy)]
    if rows:
        conn.execute(insert(Thumbnail), rows)
    views = [
        row
        for o in done
        for row in view_rows(o.item_id, o.kind, o.units, o.views, threshold=threshold, strategy=strategy)
    ]
    if views:
        conn.execute(insert(FrameView), views)


# --- reading -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ThumbnailInfo:
    """A stored thumbnail without its bytes; `item_id` is the item that holds it (the source of a reuse)."""

    item_id: int
    position: int
    frame_index: int
    timestamp_s: float
    start_s: float | None
    end_s: float | None
    score: float
    width: int
    height: int


def holder(session: Session, item_id: int) -> int | None:
    """The item whose thumbnails `item_id` shows: itself, or the item its verdict was reused from."""
    current: int | None = item_id
    for _ in range(MAX_REUSE_HOPS):
        if current is None:
            return None
        if session.scalars(select(Thumbnail.id).where(Thumbnail.item_id == current).limit(1)).first() is not None:
            return current
        current = session.scalar(select(MediaItem.reused_from_id).where(MediaItem.id == current))
    return None


def list_thumbnails(session: Session, item_id: int) -> list[ThumbnailInfo]:
    """The thumbnails to show for an item, by position (empty for errors, or scans with thumbnails off)."""
    source = holder(session, item_id)
    if source is None:
        return []
    columns = [c for c in Thumbnail.__table__.c if c.name not in ("id", "jpeg", "created_at")]
    rows = session.execute(select(*columns).where(Thumbnail.item_id == source).order_by(Thumbnail.position))
    return [ThumbnailInfo(**row._asdict()) for row in rows]


def thumbnail_jpeg(session: Session, item_id: int, position: int) -> bytes | None:
    """The JPEG bytes of one thumbnail of an item (following a reuse), or None."""
    source = holder(session, item_id)
    if source is None:
        return None
    return session.scalar(select(Thumbnail.jpeg).where(Thumbnail.item_id == source, Thumbnail.position == position))


def first_thumbnails(session: Session, item_ids: Sequence[int]) -> set[int]:
    """Which of `item_ids` have a position-0 thumbnail, of their own or through their reuse chain (for a
    queue page: the newest scan of a content is often a reuse of a reuse). One query per hop, not per item."""
    pending = {i: i for i in item_ids}  # item -> the item whose thumbnails it would show
    found: set[int] = set()
    for _ in range(MAX_REUSE_HOPS):
        if not pending:
            break
        candidates = set(pending.values())
        having = set(
            session.scalars(select(Thumbnail.item_id).where(Thumbnail.item_id.in_(candidates), Thumbnail.position == 0))
        )
        found |= {i for i, c in pending.items() if c in having}
        rows = session.execute(
            select(MediaItem.id, MediaItem.reused_from_id).where(MediaItem.id.in_(candidates - having))
        )
        earlier = {item_id: source for item_id, source in rows if source is not None}
        pending = {i: earlier[c] for i, c in pending.items() if c not in having and c in earlier}
    return found


@dataclass(frozen=True)
class FaceBox:
    """One scored face on a frame, in the item's own pixels (x, y: top left)."""

    x: int
    y: int
    w: int
    h: int
    score: float


@dataclass(frozen=True)
class ViewInfo:
    """A stored frame view without its bytes, and every face scored on that frame, highest score first."""

    frame_index: int
    timestamp_s: float
    score: float
    width: int
    height: int
    faces: list[FaceBox]


def list_views(session: Session, item_id: int) -> list[ViewInfo]:
    """The frame views to show for an item, highest score first (empty for errors, older scans, or
    scans with thumbnails off)."""
    source = holder(session, item_id)
    if source is None:
        return []
    columns = (FrameView.frame_index, FrameView.timestamp_s, FrameView.score, FrameView.width, FrameView.height)
    views = session.execute(select(*columns).where(FrameView.item_id == source).order_by(FrameView.score.desc()))
    found = [ViewInfo(*row, faces=[]) for row in views]
    faces = session.execute(
        select(FrameResult.frame_index, FrameResult.bbox, FrameResult.score)
        .where(FrameResult.item_id == source)
        .where(FrameResult.frame_index.in_([v.frame_index for v in found]))
        .order_by(FrameResult.score.desc())
    )
    by_frame = {v.frame_index: v for v in found}
    for index, box, score in faces:
        if box is None:  # the whole frame was scored: no face on it (JSON null, which SQL cannot filter on)
            continue
        x, y, w, h = (int(v) for v in box)
        by_frame[index].faces.append(FaceBox(x, y, w, h, float(score)))
    return found


def view_jpeg(session: Session, item_id: int, frame_index: int) -> bytes | None:
    """The JPEG bytes of one frame view of an item (following a reuse), or None."""
    source = holder(session, item_id)
    if source is None:
        return None
    query = select(FrameView.jpeg).where(FrameView.item_id == source, FrameView.frame_index == frame_index)
    return session.scalar(query)
