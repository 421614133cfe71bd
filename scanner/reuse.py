"""Reusing earlier verdicts: only for the same content, model and scoring options, re-derived for this job.

An earlier item's per-frame scores hold for a new item when the bytes are the same (same object
version, or same sha256), the model is the same, and so are the options that change scores (the
scoring key: faces, and for videos fps and max frames). Options that only turn scores into a
verdict (threshold, video strategy) are this job's own: the verdict is re-derived from the
stored frame rows, never copied. Both the producer (by URL and object version, before fetching)
and the workers (by sha256, after fetching) reuse through this module.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, insert, select
from sqlalchemy.orm import Session

from scanner.aggregation import aggregate, verdict_for
from scanner.models import FrameResult, MediaItem

IMAGE_STRATEGY = "max_face"  # an image's score is its highest-scoring face (the whole image when none)
_FRAME_COLUMNS = ("frame_index", "timestamp_s", "face_index", "bbox", "landmarks", "score")


def item_score(kind: str, frames: Iterable[tuple[int, float]], video_strategy: str) -> tuple[float, str, int]:
    """(score, strategy, frames scanned) from (frame index, score) pairs, one pair per face or frame.

    Image: the max over faces. Video: each frame's max over its faces, in frame order, reduced by
    the job's strategy.
    """
    per_frame: dict[int, float] = defaultdict(float)
    for index, score in frames:
        per_frame[index] = max(per_frame[index], score)
    if not per_frame:
        raise ValueError("no frame scores")
    if kind == "image":
        return max(per_frame.values()), IMAGE_STRATEGY, len(per_frame)
    return aggregate([per_frame[i] for i in sorted(per_frame)], video_strategy), video_strategy, len(per_frame)


@dataclass(frozen=True)
class Earlier:
    """A finished item whose frame scores may answer another item."""

    id: int
    kind: str
    content_sha256: str | None
    width: int | None
    height: int | None
    duration_s: float | None
    precision: str | None
    frames: tuple[dict[str, Any], ...]

    def verdict_values(self, *, strategy: str, threshold: float) -> dict[str, Any]:
        """The item columns a reusing item stores: its own score and verdict, from these frames."""
        score, used, count = item_score(self.kind, ((f["frame_index"], f["score"]) for f in self.frames), strategy)
        return {
            "kind": self.kind,
            "content_sha256": self.content_sha256,
            "width": self.width,
            "height": self.height,
            "duration_s": self.duration_s,
            "frames_scanned": count,
            "score": score,
            "strategy": used,
            "verdict": verdict_for(score, threshold),
            "reused_from_id": self.id,
            "precision": self.precision,
        }

    def frame_rows(self, item_id: int) -> list[dict[str, Any]]:
        return [{"item_id": item_id, **frame} for frame in self.frames]


def load(session: Session, items: Sequence[MediaItem]) -> dict[int, Earlier]:
    """`items` with their frame rows: one query for all the frames, however many items."""
    frames: dict[int, list[dict[str, Any]]] = defaultdict(list)
    if items:
        rows = session.execute(
            select(FrameResult.item_id, *(getattr(FrameResult, c) for c in _FRAME_COLUMNS))
            .where(FrameResult.item_id.in_([i.id for i in items]))
            .order_by(FrameResult.item_id, FrameResult.frame_index, FrameResult.face_index)
        ).all()
        for row in rows:
            frames[row.item_id].append({c: getattr(row, c) for c in _FRAME_COLUMNS})
    return {
        i.id: Earlier(i.id, i.kind, i.content_sha256, i.width, i.height, i.duration_s, i.precision, tuple(frames[i.id]))
        for i in items
        if frames[i.id]
    }


def by_contents(
    engine: Engine, sha256s: Collection[str], model_version: str, scoring_keys: Iterable[str]
) -> dict[str, Earlier]:
    """For each of `sha256s`, the latest finished item with those bytes, model and scoring key, with its frames.

    Asked for every item a worker fetches (workers/lookups.py gathers the asks of a process's threads
    into one call), and most often the answer is none (new bytes): that costs one small query on a
    pooled connection; a session and the items' rows load only for matches.
    """
    if not sha256s:
        return {}
    with engine.connect() as conn:
        rows = conn.execute(
            select(MediaItem.id, MediaItem.content_sha256)
            .where(
                MediaItem.content_sha256.in_(list(sha256s)),
                MediaItem.model_version == model_version,
                MediaItem.scoring_key.in_(list(scoring_keys)),
                MediaItem.status == "done",
            )
            .order_by(MediaItem.finished_at.desc(), MediaItem.id.desc())
        ).all()
    latest: dict[str, int] = {}
    for item_id, sha256 in rows:
        if sha256 is not None:  # the query asks for given hashes: always true, but the column may be null
            latest.setdefault(sha256, item_id)
    if not latest:
        return {}
    with Session(engine) as session:
        items = session.scalars(select(MediaItem).where(MediaItem.id.in_(latest.values()))).all()
        loaded = load(session, items)
    return {sha256: loaded[item_id] for sha256, item_id in latest.items() if item_id in loaded}


def any_done_before(session: Session, model_version: str, scoring_keys: Iterable[str], before: dt.datetime) -> bool:
    """Whether any item finished `done` before `before` with this model and one of these scoring keys:
    when none did, no lookup by content for a job created at `before` can find an earlier verdict
    outside the job itself (within it, a second copy of the same bytes is simply scored again)."""
    found = session.execute(
        select(MediaItem.id)
        .where(
            MediaItem.model_version == model_version,
            MediaItem.scoring_key.in_(list(scoring_keys)),
            MediaItem.status == "done",
            MediaItem.finished_at < before,
        )
        .limit(1)
    ).first()
    return found is not None


def object_version(etag: str | None, size: int | None, last_modified: dt.datetime | None) -> tuple[object, ...] | None:
    """What identifies one version of an object without reading it; None when too little is known."""
    if size is None:
        return None
    if etag is not None:
        return ("etag", etag, size)
    if last_modified is not None:
        return ("mtime", last_modified.astimezone(dt.UTC).replace(microsecond=0), size)
    return None


def by_url(
    session: Session,
    versions: Mapping[str, tuple[object, ...]],
    model_version: str,
    scoring_key_for: Mapping[str, str],
) -> dict[str, Earlier]:
    """For each URL, the latest finished item of the same object version, model and scoring key.

    `versions` maps URL to `object_version(...)`; `scoring_key_for` maps item kind to this job's key.
    """
    if not versions:
        return {}
    rows = session.scalars(
        select(MediaItem)
        .where(
            MediaItem.url.in_(list(versions)),
            MediaItem.status == "done",
            MediaItem.model_version == model_version,
            MediaItem.scoring_key.in_(list(scoring_key_for.values())),
        )
        .order_by(MediaItem.finished_at.desc())
    ).all()
    chosen: dict[str, MediaItem] = {}
    for row in rows:
        same_object = object_version(row.etag, row.size, row.last_modified) == versions[row.url]
        if row.url not in chosen and same_object and row.scoring_key == scoring_key_for.get(row.kind):
            chosen[row.url] = row
    earlier = load(session, list(chosen.values()))
    return {url: earlier[row.id] for url, row in chosen.items() if row.id in earlier}


def copy_frames(conn: Connection | Session, reused: Iterable[tuple[int, Earlier]]) -> None:
    """Give each reusing item a copy of its source's frame rows, in one bulk INSERT."""
    rows = [row for item_id, earlier in reused for row in earlier.frame_rows(item_id)]
    if rows:
        conn.execute(insert(FrameResult), rows)
