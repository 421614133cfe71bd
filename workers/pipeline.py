"""Process one chunk of items: claim, analyse in threads, score in cross-item batches, store in one transaction.

This plain function is what the Celery task and the embedded (in-process) mode both call.
Redelivering a chunk re-scores its items and overwrites their rows: never a duplicate.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, func, insert, select, update
from sqlalchemy.orm import Session

from scanner.aggregation import aggregate, verdict_for
from scanner.jobs import ScanOptions, finish_job_if_complete
from scanner.models import FrameResult, MediaItem, ScanJob, utcnow
from workers.analysis import Outcome, Unit, analyse_item
from workers.notify import Deliver, item_flagged_payload, job_finished_notifier
from workers.runtime import WorkerRuntime

log = logging.getLogger(__name__)


@dataclass
class ChunkReport:
    """Counts for one processed chunk (logged by workers, summed by the embedded runner)."""

    done: int = 0
    error: int = 0
    reused: int = 0
    skipped: int = 0
    inferred_units: int = 0
    job_finished: bool = False
    errors: dict[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class JobContext:
    options: ScanOptions
    threshold: float
    model_version: str
    webhook_url: str | None


def process_chunk(
    rt: WorkerRuntime,
    job_id: int,
    items: Sequence[tuple[int, str]],
    *,
    deliver: Deliver | None = None,
) -> ChunkReport:
    """Scan `items` of `job_id` and store their verdicts, frame scores and errors."""
    report = ChunkReport()
    context = claim(rt, job_id, [item_id for item_id, _ in items])
    if context is None:
        report.skipped = len(items)
        return report
    ctx, claimed = context
    report.skipped = len(items) - len(claimed)
    outcomes = analyse_and_score(rt, [(i, u) for i, u in items if i in claimed], ctx, report)
    store(rt, job_id, outcomes, ctx)
    for outcome in outcomes:
        if outcome.status == "error":
            report.error += 1
            report.errors[outcome.item_id] = outcome.error or ""
            log.info("job %s item %s: error: %s", job_id, outcome.item_id, outcome.error)
        else:
            report.done += 1
            report.reused += outcome.reused is not None
    if deliver is not None and ctx.webhook_url:
        for outcome in outcomes:
            if outcome.verdict == "fake" and outcome.score is not None:
                deliver(
                    ctx.webhook_url,
                    item_flagged_payload(job_id, outcome.item_id, outcome.url, outcome.score, ctx.threshold),
                )
    if finish_job_if_complete(rt.engine, job_id):
        report.job_finished = True
        if deliver is not None:
            job_finished_notifier(rt.engine, deliver)(job_id)
    log.info("job %s: chunk of %d stored (%d done, %d error)", job_id, len(items), report.done, report.error)
    return report


def claim(rt: WorkerRuntime, job_id: int, item_ids: list[int]) -> tuple[JobContext, set[int]] | None:
    """Mark the chunk's open items `processing`; returns None when the job is gone or cancelled."""
    with Session(rt.engine) as session, session.begin():
        job = session.get(ScanJob, job_id)
        if job is None or job.status in {"cancelled", "failed"}:
            return None
        if job.model_version is None:
            job.model_version = rt.scorer.model_version
        threshold = job.threshold if job.threshold is not None else rt.scorer.threshold
        ctx = JobContext(ScanOptions.from_json(job.options), threshold, rt.scorer.model_version, job.webhook_url)
        open_ids = set(
            session.scalars(
                select(MediaItem.id).where(
                    MediaItem.job_id == job_id,
                    MediaItem.id.in_(item_ids),
                    MediaItem.status.in_(("queued", "processing")),
                )
            )
        )
        if open_ids:
            session.execute(
                update(MediaItem)
                .where(MediaItem.id.in_(open_ids))
                .values(status="processing", started_at=utcnow(), attempts=MediaItem.attempts + 1)
            )
    return ctx, open_ids


def analyse_and_score(
    rt: WorkerRuntime, items: Iterable[tuple[int, str]], ctx: JobContext, report: ChunkReport
) -> list[Outcome]:
    """Fetch/decode in threads ahead of the model; score units in batches formed across items."""
    outcomes: list[Outcome] = []
    pending: list[Unit] = []
    batch_size = rt.scorer.batch_size
    with ThreadPoolExecutor(max_workers=rt.settings.fetch_threads, thread_name_prefix="fetch") as pool:
        futures = [pool.submit(analyse_item, rt, i, u, ctx.options, ctx.model_version) for i, u in items]
        for future in as_completed(futures):
            outcome = future.result()
            outcomes.append(outcome)
            pending.extend(outcome.units)
            while len(pending) >= batch_size:
                _score(rt, pending[:batch_size], report)
                pending = pending[batch_size:]
    _score(rt, pending, report)
    return outcomes


def _score(rt: WorkerRuntime, units: list[Unit], report: ChunkReport) -> None:
    if not units:
        return
    scores = rt.scorer.score([u.tensor for u in units if u.tensor is not None])
    for unit, score in zip(units, scores, strict=True):
        unit.score = float(score)
        unit.tensor = None  # free the memory as soon as it is scored
    report.inferred_units += len(units)


_RESULT_COLUMNS = (
    "status", "error", "kind", "content_sha256", "finished_at", "model_version", "score", "verdict", "strategy",
    "width", "height", "duration_s", "frames_scanned", "reused_from_id",
)  # fmt: skip
_ITEMS = cast(Table, MediaItem.__table__)
_STORE_RESULT = (
    update(_ITEMS)
    .where(_ITEMS.c.id == bindparam("item_id"), _ITEMS.c.status == "processing")
    .values(
        {name: bindparam(name) for name in _RESULT_COLUMNS}
        # What the fetch learnt about the object fills in, never erases, what the listing said.
        | {name: func.coalesce(bindparam(name), _ITEMS.c[name]) for name in ("size", "etag")}
    )
)


def store(rt: WorkerRuntime, job_id: int, outcomes: list[Outcome], ctx: JobContext) -> None:
    """One transaction, one bulk statement per table: verdicts or errors, frame rows replaced (idempotent).

    Only items still `processing` are written: a chunk redelivered after its items were finished
    (or cancelled) changes nothing.
    """
    if not outcomes:
        return
    now = utcnow()
    rows = [_item_values(o, ctx, now) for o in outcomes]
    frames = [frame for o in outcomes for frame in _frame_rows(o)]
    with rt.engine.begin() as conn:
        conn.execute(delete(FrameResult).where(FrameResult.item_id.in_([o.item_id for o in outcomes])))
        conn.execute(_STORE_RESULT, rows)
        if frames:
            conn.execute(insert(FrameResult), frames)


def _item_values(outcome: Outcome, ctx: JobContext, now: Any) -> dict[str, Any]:
    """Every column of the bulk UPDATE for one item (the same keys for every item)."""
    values: dict[str, Any] = dict.fromkeys(_RESULT_COLUMNS) | {
        "item_id": outcome.item_id,
        "status": outcome.status,
        "error": outcome.error,
        "kind": outcome.kind,
        "content_sha256": outcome.sha256,
        "finished_at": now,
        "model_version": ctx.model_version,
        "size": outcome.size,
        "etag": outcome.etag,
    }
    if outcome.status == "error":
        return values
    if outcome.reused is not None:
        earlier = outcome.reused
        values.update({name: earlier[name] for name in ("score", "strategy", "width", "height", "duration_s")})
        values.update(frames_scanned=earlier["frames_scanned"], reused_from_id=earlier["id"])
    else:
        score, strategy, frame_count = item_score(outcome, ctx.options.strategy)
        values.update(score=score, strategy=strategy, frames_scanned=frame_count)
        values.update(width=outcome.width, height=outcome.height, duration_s=outcome.duration_s)
    values["verdict"] = verdict_for(values["score"], ctx.threshold)
    outcome.score, outcome.verdict = values["score"], values["verdict"]
    return values


def item_score(outcome: Outcome, video_strategy: str) -> tuple[float, str, int]:
    """Image: max over faces. Video: each frame's max over faces, reduced by the job's strategy."""
    per_frame: dict[int, float] = defaultdict(float)
    for unit in outcome.units:
        assert unit.score is not None
        per_frame[unit.frame_index] = max(per_frame[unit.frame_index], unit.score)
    if outcome.kind == "image":
        return max(per_frame.values()), "max_face", len(per_frame)
    return aggregate([per_frame[i] for i in sorted(per_frame)], video_strategy), video_strategy, len(per_frame)


def _frame_rows(outcome: Outcome) -> list[dict[str, Any]]:
    if outcome.status == "error":
        return []
    if outcome.reused is not None:
        return [{"item_id": outcome.item_id, **frame} for frame in outcome.reused["frames"]]
    return [
        {
            "item_id": outcome.item_id,
            "frame_index": u.frame_index,
            "timestamp_s": u.timestamp_s,
            "face_index": u.face_index,
            "bbox": u.bbox,
            "score": u.score,
        }
        for u in outcome.units
    ]
