"""Scan jobs on the producer side: record the items, reuse verdicts already known, enqueue the rest.

The database is the source of truth: every item is inserted (status `queued`) and committed
before its chunk is handed to `enqueue`, so a lost broker message or a dead worker can always be
recovered by `deepscan jobs reconcile`. Messages carry item ids and URLs only.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import logging
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

from sqlalchemy import Connection, Engine, and_, case, exists, func, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from scanner import leases
from scanner.aggregation import DEFAULT_VIDEO_STRATEGY, validate_strategy
from scanner.errors import InvalidInputError, NotFoundError
from scanner.mediaurl import scheme_of
from scanner.models import (
    FINISHED_JOB_STATUSES,
    ITEM_STATUSES,
    OPEN_ITEM_STATUSES,
    MediaItem,
    ModelRecord,
    ScanJob,
    utcnow,
)
from scanner.recording import ChunkItems, ReuseBasis, insert_items
from scanner.redaction import job_name, redact_text
from scanner.sources import MediaRef

log = logging.getLogger(__name__)

# Items per task message, unless the job says (`--chunk-size`). Remote items wait on the network: a
# chunk of 16 is fetched at once by a worker's DEEPSCAN_FETCH_THREADS. Local files wait on nothing but
# the CPU, and every chunk costs the same few transactions, a batcher fill and a lease thread whatever
# its size: in chunks of 64 a 1,000-file job spends half the time on them it does in chunks of 16
# (docs/performance.md, "A small job").
DEFAULT_CHUNK_SIZE = 16
DEFAULT_LOCAL_CHUNK_SIZE = 64
DEFAULT_FPS = 1.0
DEFAULT_MAX_FRAMES = 120  # 1 s segments are sampled in videos up to 2 minutes at 1 fps
# References recorded per transaction (one commit) and sent per broker round trip. Large enough that
# the per-commit and per-round-trip costs vanish, small enough that a crash loses little work.
DEFAULT_INSERT_BATCH = 5000

EnqueueFn = Callable[[int, ChunkItems], None]


@runtime_checkable
class BatchingEnqueue(Protocol):
    """An `EnqueueFn` that can hold the chunks sent inside `batch()` and deliver them together.

    The Celery sender does: one Redis pipeline per batch instead of one round trip per chunk. A
    batch it cannot deliver raises TransientError; its items stay recorded and `reconcile` re-sends them.
    """

    def __call__(self, job_id: int, items: ChunkItems, /) -> None: ...

    def batch(self) -> AbstractContextManager[None]: ...


def auto_chunk_size(items: Sequence[tuple[int, str]]) -> int:
    """The chunk size a job that sets none gets for `items`: larger when every one is a local file."""
    return DEFAULT_LOCAL_CHUNK_SIZE if all(scheme_of(url) == "file" for _, url in items) else DEFAULT_CHUNK_SIZE


def send_chunks(enqueue: EnqueueFn, job_id: int, items: Sequence[tuple[int, str]], chunk_size: int | None) -> None:
    """Send `items` in chunks of `chunk_size` (None: `auto_chunk_size`), together when `enqueue` can batch."""
    together = enqueue.batch() if isinstance(enqueue, BatchingEnqueue) else nullcontext()
    with together:
        for chunk in batched(items, chunk_size or auto_chunk_size(items)):
            enqueue(job_id, chunk)


class OverlappedSender:
    """Sends each recorded batch while the next one is being recorded, one batch in flight at most.

    Recording waits on the database and sending on the broker (or on the scanning, for the
    embedded runner); overlapping them nearly halves a large job's time. Only a batching sender is
    moved to a thread: any other `enqueue` is called in line. A failed send surfaces
    at the next `send` or on exit; its items are recorded, so `reconcile` re-sends them.
    """

    def __init__(self, enqueue: EnqueueFn, job_id: int, chunk_size: int | None) -> None:
        self._enqueue, self._job_id, self._chunk_size = enqueue, job_id, chunk_size
        self._pool = ThreadPoolExecutor(1, "enqueue") if isinstance(enqueue, BatchingEnqueue) else None
        self._in_flight: Future[None] | None = None

    def send(self, items: ChunkItems) -> None:
        if self._pool is None:
            send_chunks(self._enqueue, self._job_id, items, self._chunk_size)
            return
        self._wait()
        self._in_flight = self._pool.submit(send_chunks, self._enqueue, self._job_id, items, self._chunk_size)

    def _wait(self) -> None:
        in_flight, self._in_flight = self._in_flight, None
        if in_flight is not None:
            in_flight.result()

    def __enter__(self) -> OverlappedSender:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        try:
            if exc_type is None:
                self._wait()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)


@dataclass(frozen=True)
class ScanOptions:
    """What a job asks of the workers; stored as the job's `options` JSON."""

    fps: float = DEFAULT_FPS
    max_frames: int = DEFAULT_MAX_FRAMES
    faces: bool = True
    strategy: str = DEFAULT_VIDEO_STRATEGY
    threshold: float | None = None
    rescan: bool = False
    chunk_size: int | None = None  # None: auto_chunk_size
    include: tuple[str, ...] = field(default_factory=tuple)
    exclude: tuple[str, ...] = field(default_factory=tuple)
    thumbnails: bool = True  # keep a small JPEG of the top-scoring face for the review console

    def __post_init__(self) -> None:
        """Refuse options no scan can run with, in the same words whichever front end passed them."""
        if self.threshold is not None and not 0 <= self.threshold <= 1:  # also refuses nan
            raise InvalidInputError(f"threshold {self.threshold} is not a number between 0 and 1")
        if not 0 < self.fps < math.inf:
            raise InvalidInputError(f"fps {self.fps} is not a number above 0")
        if self.max_frames < 1:
            raise InvalidInputError(f"max_frames {self.max_frames} is not at least 1")
        if self.chunk_size is not None and self.chunk_size < 1:
            raise InvalidInputError(f"chunk_size {self.chunk_size} is not at least 1")
        try:
            validate_strategy(self.strategy)
        except ValueError as exc:
            raise InvalidInputError(str(exc)) from None

    def scoring_key(self, kind: str) -> str:
        """Digest of the options that change an item's scores (not its verdict) for media of `kind`.

        Faces change every score; fps and max frames change which frames a video is scored on.
        Threshold and strategy only turn scores into a verdict, so they are not part of it.
        """
        fields: dict[str, Any] = {"faces": self.faces}
        if kind == "video":
            fields |= {"fps": float(self.fps), "max_frames": self.max_frames}
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()

    def scoring_keys(self) -> dict[str, str]:
        """This job's scoring key for each kind of media."""
        return {kind: self.scoring_key(kind) for kind in ("image", "video")}

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
    name: str | None,
    sources: Sequence[str],
    options: ScanOptions,
    model_version: str | None = None,
    webhook_url: str | None = None,
    schedule_id: int | None = None,
) -> ScanJob:
    """Insert a job in `pending`; `add_items` moves it to `running`. Without `name`, it is named after its sources."""
    job = ScanJob(
        name=job_name(sources, name),  # the one place every job name is decided: redacted, cut to the column
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

    Streams: at most DEFAULT_INSERT_BATCH references are held at a time, recorded in one
    transaction and then sent in one batch. URLs seen twice in one job are recorded once (the
    database's unique key decides, so the cost per batch does not grow with the job). The job
    stays `pending` while items are being recorded (so workers that finish early cannot close it)
    and is `running` once this returns; `finished_job` says whether every item was already
    answered, which closes the job here.
    """
    with Session(engine) as session, session.begin():
        job = session.get_one(ScanJob, job_id)
        job.started_at = utcnow()
        options = ScanOptions.from_json(job.options)
        reuse_with = None if options.rescan else _reuse_basis(session, job, options)
    report = EnqueueReport()
    with OverlappedSender(enqueue, job_id, options.chunk_size) as sender:
        for batch in batched(refs, DEFAULT_INSERT_BATCH):
            with Session(engine) as session, session.begin():
                queued, reused = insert_items(session, job_id, batch, reuse_with)
            sender.send(queued)
            report.total += len(queued) + reused
            report.enqueued += len(queued)
            report.reused += reused
            if on_progress is not None:
                on_progress(report)
    with engine.begin() as conn:
        conn.execute(update(ScanJob).where(ScanJob.id == job_id, ScanJob.status == "pending").values(status="running"))
    report.finished_job = finish_job_if_complete(engine, job_id)
    return report


def _reuse_basis(session: Session, job: ScanJob, options: ScanOptions) -> ReuseBasis | None:
    """None when the producer cannot know the model or its threshold: then the workers decide."""
    if job.model_version is None:
        return None
    threshold = job.threshold
    if threshold is None:
        threshold = session.scalar(select(ModelRecord.threshold).where(ModelRecord.model_version == job.model_version))
    if threshold is None:
        return None
    return ReuseBasis(job.model_version, options.scoring_keys(), options.strategy, threshold)


def finish_job_if_complete(engine: Engine, job_id: int) -> bool:
    """Mark a running job `done` once no item is queued or processing.

    Safe to call from every worker after each chunk commits: the conditional UPDATE lets exactly
    one caller make the transition, and the caller that returns True sends the notifications.
    """
    open_items = exists().where(MediaItem.job_id == job_id, MediaItem.status.in_(OPEN_ITEM_STATUSES))
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
            update(ScanJob)
            .where(ScanJob.id == job_id)
            .values(status="failed", error=redact_text(reason), finished_at=utcnow())
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
    def ended(self) -> int:
        """Items no longer open: scanned, or cancelled before a worker took them (a progress bar's position)."""
        return self.done + self.error + self.cancelled

    @property
    def scanned(self) -> int:
        """Items the pipeline processed to an outcome (verdict or error): what a rate of items/s counts."""
        return self.done + self.error

    def by_status(self) -> dict[str, int]:
        """The count of each item status, keyed as `scanner.models.ITEM_STATUSES` names them."""
        return {status: getattr(self, status) for status in ITEM_STATUSES}


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
            raise NotFoundError(f"no job {job_id}: see `deepscan jobs list`")
        if job.status in FINISHED_JOB_STATUSES:
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
    """What one reconcile pass re-sent: items whose lease expired, and queued items whose message was lost."""

    jobs: int = 0
    expired: int = 0
    lost: int = 0
    finished_jobs: list[int] = field(default_factory=list)

    @property
    def items(self) -> int:
        return self.expired + self.lost


def reconcile(
    engine: Engine,
    *,
    enqueue: EnqueueFn,
    queued_older_than: dt.timedelta | None = None,
    sent_before: dt.datetime | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    on_finished: Callable[[int], None] | None = None,
) -> ReconcileReport:
    """Re-enqueue what no live worker holds, in every open job, and close jobs with nothing left open.

    Always: items `processing` under an expired lease (their worker was killed or stalled); an item
    that was live-leased is never touched. With `queued_older_than`: items `queued` for longer than
    that (their message was lost, e.g. with a broker restarted empty); a producer that died while
    recording leaves its job `pending`, and such jobs that old are opened too. With `sent_before`
    (when the broker's current life began, workers/broker.py): items queued before it, whose messages
    went with the broker's previous life. Re-sending is safe: a second delivery of an item finds it
    claimed and writes nothing. Items whose delivery died are sent one per chunk, to be tried alone
    (scanner/leases.py). `on_finished` is called for each job this pass closed (it sends `job.finished`).
    """
    now = utcnow()
    aged = now - queued_older_than if queued_older_than is not None else None
    cutoff = max((c for c in (aged, sent_before) if c is not None), default=None)
    is_open = ScanJob.status == "running"
    if aged is not None:
        is_open = is_open | ((ScanJob.status == "pending") & (ScanJob.created_at < aged))
    with Session(engine) as session:
        open_jobs = session.scalars(select(ScanJob.id).where(is_open).order_by(ScanJob.id)).all()
    report = ReconcileReport()
    for job_id in open_jobs:
        with engine.begin() as conn:
            expired = _requeue(conn, job_id, leases.claimable(now) & (MediaItem.status == "processing"), now)
            lost = (
                _requeue(conn, job_id, (MediaItem.status == "queued") & (MediaItem.enqueued_at < cutoff), now)
                if (cutoff is not None)
                else []
            )
            conn.execute(
                update(ScanJob).where(ScanJob.id == job_id, ScanJob.status == "pending").values(status="running")
            )
        _resend(enqueue, job_id, sorted(expired + lost), chunk_size)
        report.jobs += bool(expired or lost)
        report.expired += len(expired)
        report.lost += len(lost)
        if finish_job_if_complete(engine, job_id):
            report.finished_jobs.append(job_id)
            if on_finished is not None:
                on_finished(job_id)
    return report


def _resend(enqueue: EnqueueFn, job_id: int, items: list[tuple[int, str, bool]], chunk_size: int) -> None:
    """Send the items in chunks, but each interrupted one in a chunk of its own (it is tried alone)."""
    ordinary = [(i, u) for i, u, interrupted in items if not interrupted]
    alone = [(i, u) for i, u, interrupted in items if interrupted]
    for group, size in ((ordinary, chunk_size), (alone, 1)):
        if group:
            send_chunks(enqueue, job_id, group, size)


def _requeue(
    conn: Connection, job_id: int, condition: ColumnElement[bool], now: dt.datetime
) -> list[tuple[int, str, bool]]:
    """Put the job's items matching `condition` back to `queued` (no lease); returns them to be sent,
    each with whether a delivery died holding it (counted here when its lease still names one)."""
    rows = conn.execute(
        update(MediaItem)
        .where(MediaItem.job_id == job_id, condition)
        .values(
            status="queued",
            enqueued_at=now,
            interruptions=MediaItem.interruptions + case((leases.died_holding(), 1), else_=0),
            **leases.released_values(),
        )
        .returning(MediaItem.id, MediaItem.url, MediaItem.interruptions)
    ).all()
    return [(row.id, row.url, row.interruptions > 0) for row in rows]
