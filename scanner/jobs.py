"""Scan jobs on the producer side: record the items, reuse verdicts already known, enqueue the rest.

The database is the source of truth: every item is inserted (status `queued`) and committed
before its chunk is handed to `enqueue`, so a lost broker message or a dead worker can always be
recovered by `deepscan jobs reconcile`. Messages carry item ids and URLs only.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import Engine, and_, case, exists, func, insert, select, update
from sqlalchemy.orm import Session

from scanner.aggregation import DEFAULT_VIDEO_STRATEGY
from scanner.errors import ConfigError
from scanner.models import FrameResult, MediaItem, ModelRecord, ScanJob, utcnow
from scanner.sources import MediaRef

log = logging.getLogger(__name__)

DEFAULT_CHUNK_SIZE = 16
DEFAULT_FPS = 1.0
DEFAULT_MAX_FRAMES = 32
DEFAULT_INSERT_BATCH = 500
OPEN_STATUSES = ("queued", "processing")

ChunkItems = list[tuple[int, str]]
EnqueueFn = Callable[[int, ChunkItems], None]


@dataclass(frozen=True)
class ScanOptions:
    """What a job asks of the workers; stored as the job's `options` JSON."""

    fps: float = DEFAULT_FPS
    max_frames: int = DEFAULT_MAX_FRAMES
    faces: bool = True
    strategy: str = DEFAULT_VIDEO_STRATEGY
    threshold: float | None = None
    rescan: bool = False
    chunk_size: int = DEFAULT_CHUNK_SIZE
    include: tuple[str, ...] = field(default_factory=tuple)
    exclude: tuple[str, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["include"], data["exclude"] = list(self.include), list(self.exclude)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ScanOptions:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        for key in ("include", "exclude"):
            if key in known:
                known[key] = tuple(known[key])
        return cls(**known)


@dataclass
class EnqueueReport:
    """What `add_items` did: items recorded, sent to workers, and answered from earlier verdicts."""

    total: int = 0
    enqueued: int = 0
    reused: int = 0
    finished_job: bool = False


def create_job(
    session: Session,
    *,
    name: str,
    sources: Sequence[str],
    options: ScanOptions,
    model_version: str | None = None,
    webhook_url: str | None = None,
    schedule_id: int | None = None,
) -> ScanJob:
    """Insert a job in `pending`; `add_items` moves it to `running`."""
    job = ScanJob(
        name=name,
        source_spec=list(sources),
        options=options.to_json(),
        status="pending",
        model_version=model_version,
        threshold=options.threshold,
        webhook_url=webhook_url,
        schedule_id=schedule_id,
    )
    session.add(job)
    session.flush()
    return job


def latest_model_version(session: Session) -> str | None:
    """The checkpoint most recently registered by a worker, used when the producer has none."""
    return session.scalars(select(ModelRecord.model_version).order_by(ModelRecord.created_at.desc()).limit(1)).first()


def batched(iterable: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(iterable)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


def add_items(
    engine: Engine,
    job_id: int,
    refs: Iterable[MediaRef],
    *,
    enqueue: EnqueueFn,
    on_progress: Callable[[EnqueueReport], None] | None = None,
) -> EnqueueReport:
    """Record `refs` as the job's items, reuse known verdicts, enqueue the rest in chunks.

    Streams: at most DEFAULT_INSERT_BATCH references are held at a time. URLs seen twice in one
    job are recorded once. The job stays `pending` while items are being recorded (so workers
    that finish early cannot close it) and is `running` once this returns; `finished_job` says
    whether every item was already answered, which closes the job here.
    """
    with Session(engine) as session, session.begin():
        job = session.get_one(ScanJob, job_id)
        job.started_at = utcnow()
        options = ScanOptions.from_json(job.options)
        model_version = job.model_version
    report = EnqueueReport()
    for batch in batched(refs, DEFAULT_INSERT_BATCH):
        with Session(engine) as session, session.begin():
            queued, reused = _insert_batch(session, job_id, batch, model_version=model_version, rescan=options.rescan)
        for chunk in batched(queued, options.chunk_size):
            enqueue(job_id, chunk)
        report.total += len(queued) + reused
        report.enqueued += len(queued)
        report.reused += reused
        if on_progress is not None:
            on_progress(report)
    with engine.begin() as conn:
        conn.execute(update(ScanJob).where(ScanJob.id == job_id, ScanJob.status == "pending").values(status="running"))
    report.finished_job = finish_job_if_complete(engine, job_id)
    return report


def _insert_batch(
    session: Session, job_id: int, refs: list[MediaRef], *, model_version: str | None, rescan: bool
) -> tuple[ChunkItems, int]:
    unique = {ref.url: ref for ref in refs}
    existing = set(session.scalars(select(MediaItem.url).where(MediaItem.job_id == job_id, MediaItem.url.in_(unique))))
    fresh = [ref for url, ref in unique.items() if url not in existing]
    previous = {} if rescan or model_version is None else _reusable(session, fresh, model_version)
    now = utcnow()
    rows = [_item_row(job_id, ref, previous.get(ref.url), now) for ref in fresh]
    if not rows:
        return [], 0
    inserted = session.execute(insert(MediaItem).returning(MediaItem.id, MediaItem.url, MediaItem.status), rows).all()
    reused_ids = {row.id: previous[row.url].id for row in inserted if row.status == "done"}
    _copy_frames(session, reused_ids)
    return [(row.id, row.url) for row in inserted if row.status == "queued"], len(reused_ids)


def _reusable(session: Session, refs: list[MediaRef], model_version: str) -> dict[str, MediaItem]:
    """Done items of earlier jobs with the same URL, model and version of the object: their verdict holds.

    The object's version is its ETag and size (S3, HTTP), or its size and modification time
    (local files, which have no ETag).
    """
    keyed = {ref.url: ref for ref in refs if object_version(ref.etag, ref.size, ref.last_modified) is not None}
    if not keyed:
        return {}
    rows = session.scalars(
        select(MediaItem)
        .where(MediaItem.url.in_(keyed), MediaItem.status == "done", MediaItem.model_version == model_version)
        .order_by(MediaItem.finished_at.desc())
    ).all()
    found: dict[str, MediaItem] = {}
    for row in rows:
        ref = keyed[row.url]
        wanted = object_version(ref.etag, ref.size, ref.last_modified)
        if row.url not in found and object_version(row.etag, row.size, row.last_modified) == wanted:
            found[row.url] = row
    return found


def object_version(etag: str | None, size: int | None, last_modified: dt.datetime | None) -> tuple[object, ...] | None:
    """What identifies one version of an object without reading it; None when too little is known."""
    if size is None:
        return None
    if etag is not None:
        return ("etag", etag, size)
    if last_modified is not None:
        return ("mtime", last_modified.astimezone(dt.UTC).replace(microsecond=0), size)
    return None


_COPIED_FIELDS = (
    "kind",
    "content_sha256",
    "width",
    "height",
    "duration_s",
    "frames_scanned",
    "score",
    "verdict",
    "strategy",
    "model_version",
)


def _item_row(job_id: int, ref: MediaRef, previous: MediaItem | None, now: dt.datetime) -> dict[str, Any]:
    row: dict[str, Any] = {
        "job_id": job_id,
        "url": ref.url,
        "size": ref.size,
        "etag": ref.etag,
        "last_modified": ref.last_modified,
        "status": "queued",
        "kind": "unknown",
        "attempts": 0,
        "enqueued_at": now,
    }
    if previous is not None:
        row.update({name: getattr(previous, name) for name in _COPIED_FIELDS})
        row.update(status="done", reused_from_id=previous.id, started_at=now, finished_at=now)
    return row


def _copy_frames(session: Session, reused: dict[int, int]) -> None:
    """Give each reused item a copy of its source item's frame rows, so `show` has its timeline."""
    for new_id, old_id in reused.items():
        frames = session.scalars(select(FrameResult).where(FrameResult.item_id == old_id)).all()
        if frames:
            session.execute(insert(FrameResult), [{"item_id": new_id, **f.copy_values()} for f in frames])


def finish_job_if_complete(engine: Engine, job_id: int) -> bool:
    """Mark a running job `done` once no item is queued or processing.

    Safe to call from every worker after each chunk commits: the conditional UPDATE lets exactly
    one caller make the transition, and the caller that returns True sends the notifications.
    """
    open_items = exists().where(MediaItem.job_id == job_id, MediaItem.status.in_(OPEN_STATUSES))
    with engine.begin() as conn:
        result = conn.execute(
            update(ScanJob)
            .where(and_(ScanJob.id == job_id, ScanJob.status == "running", ~open_items))
            .values(status="done", finished_at=utcnow())
        )
    return result.rowcount == 1


def fail_job(engine: Engine, job_id: int, reason: str) -> None:
    """Record that the producer could not finish creating the job (the reason is one line)."""
    with engine.begin() as conn:
        conn.execute(
            update(ScanJob).where(ScanJob.id == job_id).values(status="failed", error=reason, finished_at=utcnow())
        )


@dataclass
class JobCounts:
    """Where a job's items stand; `flagged` counts verdict `fake`, `reused` earlier verdicts."""

    queued: int = 0
    processing: int = 0
    done: int = 0
    error: int = 0
    cancelled: int = 0
    flagged: int = 0
    reused: int = 0
    last_finished_at: dt.datetime | None = None

    @property
    def total(self) -> int:
        return self.queued + self.processing + self.done + self.error + self.cancelled

    @property
    def finished(self) -> int:
        return self.done + self.error + self.cancelled


def jobs_counts(session: Session, job_ids: Sequence[int]) -> dict[int, JobCounts]:
    """Item counts by status for each job, in one grouped query."""
    query = (
        select(
            MediaItem.job_id,
            MediaItem.status,
            func.count(),
            func.sum(case((MediaItem.verdict == "fake", 1), else_=0)),
            func.sum(case((MediaItem.reused_from_id.is_not(None), 1), else_=0)),
            func.max(MediaItem.finished_at),
        )
        .where(MediaItem.job_id.in_(job_ids))
        .group_by(MediaItem.job_id, MediaItem.status)
    )
    counts = {job_id: JobCounts() for job_id in job_ids}
    for job_id, status, count, flagged, reused, last in session.execute(query):
        job = counts[job_id]
        setattr(job, status, int(count))
        job.flagged += int(flagged or 0)
        job.reused += int(reused or 0)
        if last is not None and (job.last_finished_at is None or last > job.last_finished_at):
            job.last_finished_at = last
    return counts


def job_counts(session: Session, job_id: int) -> JobCounts:
    """Item counts by status for one job."""
    return jobs_counts(session, [job_id])[job_id]


@dataclass(frozen=True)
class CancelOutcome:
    """What `cancel_job` did: the job's status now, and how many queued items it stopped."""

    status: str
    cancelled: int
    was_finished: bool


def cancel_job(engine: Engine, job_id: int) -> CancelOutcome:
    """Stop a job: its queued items become `cancelled` (workers skip them)."""
    with Session(engine) as session, session.begin():
        job = session.get(ScanJob, job_id, with_for_update=True)
        if job is None:
            raise ConfigError(f"no job {job_id}: see `deepscan jobs list`")
        if job.status in {"done", "failed", "cancelled"}:
            return CancelOutcome(job.status, 0, was_finished=True)
        result = session.connection().execute(
            update(MediaItem)
            .where(MediaItem.job_id == job_id, MediaItem.status == "queued")
            .values(status="cancelled", finished_at=utcnow())
        )
        job.status, job.finished_at = "cancelled", utcnow()
        return CancelOutcome("cancelled", result.rowcount, was_finished=False)


@dataclass
class ReconcileReport:
    jobs: int = 0
    items: int = 0


def reconcile(
    engine: Engine, *, older_than: dt.timedelta, enqueue: EnqueueFn, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> ReconcileReport:
    """Re-enqueue items of open jobs left `queued` or `processing` for longer than `older_than`.

    A lost broker message leaves an item `queued`; a killed worker leaves it `processing`. Either
    way the item is sent again (tasks are idempotent), so nothing is ever lost.
    """
    cutoff = utcnow() - older_than
    stuck_since = func.coalesce(MediaItem.started_at, MediaItem.enqueued_at)
    report = ReconcileReport()
    with Session(engine) as session:
        running = session.scalars(
            select(ScanJob.id).where(
                (ScanJob.status == "running") | ((ScanJob.status == "pending") & (ScanJob.created_at < cutoff))
            )
        ).all()
    for job_id in running:
        with Session(engine) as session, session.begin():
            stuck = session.execute(
                select(MediaItem.id, MediaItem.url)
                .where(MediaItem.job_id == job_id, MediaItem.status.in_(OPEN_STATUSES), stuck_since < cutoff)
                .order_by(MediaItem.id)
            ).all()
            if stuck:
                session.execute(
                    update(MediaItem)
                    .where(MediaItem.id.in_([row.id for row in stuck]))
                    .values(status="queued", enqueued_at=utcnow(), started_at=None)
                )
        for chunk in batched([(row.id, row.url) for row in stuck], chunk_size):
            enqueue(job_id, chunk)
        report.jobs += bool(stuck)
        report.items += len(stuck)
        with engine.begin() as conn:  # a producer that died while recording leaves its job pending
            conn.execute(
                update(ScanJob).where(ScanJob.id == job_id, ScanJob.status == "pending").values(status="running")
            )
        finish_job_if_complete(engine, job_id)
    return report
