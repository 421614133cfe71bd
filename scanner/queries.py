"""The moderation queries: results with keyset pagination, job summaries, items, timelines, stats.

Plain functions over a Session, returning frozen dataclasses (never ORM objects) so callers can
use the answers after the session closes. Every query runs on SQLite and PostgreSQL. The
statistics live in `scanner.stats` and are re-exported here, so every query is found in one place.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from sqlalchemy import ColumnElement, Select, exists, func, or_, select
from sqlalchemy.orm import InstrumentedAttribute, Session, aliased

from scanner.content import content_of
from scanner.errors import NotFoundError
from scanner.jobs import JobCounts, jobs_counts
from scanner.labels import labelling, labels_item
from scanner.models import (
    OPEN_JOB_STATUSES,
    FrameResult,
    MediaItem,
    ModelRecord,
    Review,
    ScanJob,
    utcnow,
)
from scanner.redaction import redact_text, redact_url
from scanner.stats import STATS_BY as STATS_BY
from scanner.stats import StatsBy as StatsBy
from scanner.stats import StatsRow as StatsRow
from scanner.stats import stats as stats

Order = Literal["score", "time"]
ORDERS: tuple[Order, ...] = ("score", "time")
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 10_000


class InvalidCursorError(ValueError):
    """A pagination cursor that is malformed or belongs to a different query."""


# --- results -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResultFilter:
    """What `deepscan results` selects; every field left None filters nothing.

    `since`/`until` bound `finished_at` (half-open: since <= t < until). `reviewed` True keeps
    items with a human label (any label, given on the item or on the same content), False those
    with none. `one_per_content` keeps one item per content (sha256): the newest finished scan of it
    (within the job, when `job_id` is given); `search` keeps items whose URL contains the text.
    """

    job_id: int | None = None
    verdict: str | None = None
    min_score: float | None = None
    max_score: float | None = None
    kind: str | None = None
    status: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    reviewed: bool | None = None
    model_version: str | None = None  # a model version or a prefix of one (the 12 characters `results` prints)
    order: Order = "score"
    limit: int = DEFAULT_PAGE_SIZE
    after: str | None = None
    one_per_content: bool = False
    search: str | None = None

    def fingerprint(self) -> str:
        """A short hash of the filters, so a cursor cannot silently continue another query.

        Leaves out the page position and size, and the time bounds: `--since 24h` moves between
        two calls, and a moved bound only changes which items qualify, never the order.
        """
        fields = {k: v for k, v in asdict(self).items() if k not in ("limit", "after", "since", "until")}
        raw = json.dumps(fields, sort_keys=True, default=str).encode()
        return hashlib.sha256(raw).hexdigest()[:12]


@dataclass(frozen=True)
class ResultRow:
    """One item as a moderator sees it: the model's verdict and the latest human label beside it.

    `url` is redacted (no user info, query string or fragment): rows go to people, never to a fetcher.
    """

    id: int
    job_id: int
    url: str
    kind: str
    status: str
    score: float | None
    verdict: str | None
    review_label: str | None
    reviewed_by: str | None
    reviewed_at: dt.datetime | None
    model_version: str | None
    strategy: str | None
    error: str | None
    finished_at: dt.datetime | None


RESULT_FIELDS: tuple[str, ...] = tuple(ResultRow.__dataclass_fields__)


@dataclass(frozen=True)
class Page:
    rows: list[ResultRow]
    next_cursor: str | None


@dataclass(frozen=True)
class _Cursor:
    order: Order
    key: float | dt.datetime | None
    id: int


def encode_cursor(flt: ResultFilter, key: float | dt.datetime | None, item_id: int) -> str:
    """An opaque, URL-safe token for the position just after (key, item_id) in `flt`'s order."""
    raw_key = key.isoformat() if isinstance(key, dt.datetime) else key
    payload = {"o": flt.order, "k": raw_key, "i": item_id, "f": flt.fingerprint()}
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(flt: ResultFilter, token: str) -> _Cursor:
    """The position a cursor names; InvalidCursorError when it is garbage or from another query."""
    try:
        payload = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        order, key, item_id, fingerprint = payload["o"], payload["k"], payload["i"], payload["f"]
    except (binascii.Error, ValueError, TypeError, KeyError):
        raise InvalidCursorError("not a cursor printed by `deepscan results`") from None
    if order != flt.order or fingerprint != flt.fingerprint() or not isinstance(item_id, int):
        raise InvalidCursorError("the cursor belongs to a different query: keep the same filters and --order")
    try:
        parsed = _parse_key(order, key)
    except (TypeError, ValueError):
        raise InvalidCursorError("the cursor is damaged") from None
    return _Cursor(order=order, key=parsed, id=item_id)


def _parse_key(order: Order, key: Any) -> float | dt.datetime | None:
    if key is None:
        return None
    if order == "time":
        return dt.datetime.fromisoformat(key)
    if isinstance(key, bool) or not isinstance(key, int | float):
        raise TypeError(key)
    return float(key)


def _sort_column(order: Order) -> InstrumentedAttribute[Any]:
    return MediaItem.score if order == "score" else MediaItem.finished_at


def _filtered(flt: ResultFilter) -> Select[MediaItem]:
    conditions: list[ColumnElement[bool]] = []
    equal = {"job_id": flt.job_id, "verdict": flt.verdict, "kind": flt.kind, "status": flt.status}
    conditions += [getattr(MediaItem, name) == value for name, value in equal.items() if value is not None]
    if flt.min_score is not None:
        conditions.append(MediaItem.score >= flt.min_score)
    if flt.max_score is not None:
        conditions.append(MediaItem.score <= flt.max_score)
    if flt.since is not None:
        conditions.append(MediaItem.finished_at >= flt.since)
    if flt.until is not None:
        conditions.append(MediaItem.finished_at < flt.until)
    if flt.model_version is not None:
        conditions.append(MediaItem.model_version.startswith(flt.model_version, autoescape=True))
    if flt.reviewed is not None:
        has_review = exists().where(labels_item(MediaItem.id, MediaItem.content_sha256), labelling())
        conditions.append(has_review if flt.reviewed else ~has_review)
    if flt.search:
        conditions.append(MediaItem.url.contains(flt.search, autoescape=True))
    if flt.one_per_content:
        conditions.append(~_newer_copy(flt.job_id))
    return select(MediaItem).where(*conditions)


def _newer_copy(job_id: int | None) -> ColumnElement[bool]:
    """A later finished scan of the same content exists (in the same job, when filtering one)."""
    newer = aliased(MediaItem)
    same_job = [newer.job_id == job_id] if job_id is not None else []
    return exists().where(
        newer.content_sha256 == MediaItem.content_sha256, newer.status == "done", newer.id > MediaItem.id, *same_job
    )


def _may_have_null_keys(flt: ResultFilter) -> bool:
    """Whether items without a sort key (no score yet, not finished) can match at all."""
    if flt.order == "score":
        return flt.verdict is None and flt.min_score is None and flt.max_score is None
    return flt.since is None and flt.until is None


def _keyed_segment(base: Select[MediaItem], order: Order, cursor: _Cursor | None) -> Select[MediaItem]:
    """Items that have a sort key, key desc then id desc, strictly after the cursor.

    `key <= k AND (key < k OR id < i)` rather than a row comparison: the first half is an index
    range condition on both planners, the second breaks ties by id.
    """
    column = _sort_column(order)
    query = base.where(column.is_not(None))
    if cursor is not None and cursor.key is not None:
        query = query.where(column <= cursor.key, or_(column < cursor.key, MediaItem.id < cursor.id))
    return query.order_by(column.desc(), MediaItem.id.desc())


def _null_segment(base: Select[MediaItem], order: Order, after_id: int | None) -> Select[MediaItem]:
    """Items with no sort key yet, which come after every keyed item, newest id first."""
    query = base.where(_sort_column(order).is_(None))
    if after_id is not None:
        query = query.where(MediaItem.id < after_id)
    return query.order_by(MediaItem.id.desc())


def list_results(session: Session, flt: ResultFilter) -> Page:
    """One page of items in a stable total order, and the cursor of the next page (None at the end).

    The order is (has a key) first, key descending, id descending, where the key is the score or
    `finished_at`. Keyset pagination: each page costs the same however deep it is, and every row
    appears exactly once across pages, ties included.
    """
    if not 1 <= flt.limit <= MAX_PAGE_SIZE:
        raise ValueError(f"limit must be between 1 and {MAX_PAGE_SIZE}")
    cursor = decode_cursor(flt, flt.after) if flt.after else None
    base = _filtered(flt)
    items: list[MediaItem] = []
    if cursor is None or cursor.key is not None:
        items += session.scalars(_keyed_segment(base, flt.order, cursor).limit(flt.limit + 1)).all()
    if len(items) <= flt.limit and _may_have_null_keys(flt):
        after_id = cursor.id if cursor is not None and cursor.key is None else None
        items += session.scalars(_null_segment(base, flt.order, after_id).limit(flt.limit + 1 - len(items))).all()
    next_cursor = None
    if len(items) > flt.limit:
        last = items[flt.limit - 1]
        next_cursor = encode_cursor(flt, getattr(last, _sort_column(flt.order).key), last.id)
    page = items[: flt.limit]
    reviews = latest_reviews(session, [item.id for item in page])
    return Page(rows=[_result_row(item, reviews.get(item.id)) for item in page], next_cursor=next_cursor)


def count_results(session: Session, flt: ResultFilter) -> int:
    """How many items `flt` selects in all (its page position and size aside)."""
    return int(session.scalar(select(func.count()).select_from(_filtered(flt).subquery())) or 0)


def _result_row(item: MediaItem, review: ReviewView | None) -> ResultRow:
    return ResultRow(
        id=item.id,
        job_id=item.job_id,
        url=redact_url(item.url),  # shown to every role and every format: the stored URL stays for the workers
        kind=item.kind,
        status=item.status,
        score=item.score,
        verdict=item.verdict,
        review_label=review.label if review else None,
        reviewed_by=review.reviewer if review else None,
        reviewed_at=review.created_at if review else None,
        model_version=item.model_version,
        strategy=item.strategy,
        error=item.error,
        finished_at=item.finished_at,
    )


# --- reviews -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReviewView:
    id: int
    item_id: int
    label: str
    reviewer: str
    note: str | None
    created_at: dt.datetime
    undone_at: dt.datetime | None = None
    undone_by: str | None = None

    @classmethod
    def of(cls, review: Review) -> ReviewView:
        return cls(
            review.id, review.item_id, review.label, review.reviewer, review.note, review.created_at,
            review.undone_at, review.undone_by,
        )  # fmt: skip


def latest_review_ids() -> Select[int, int]:
    """(item_id, review id) of each item's human label: the newest review, not undone, of the item
    or of its content (scanner/labels.py); later reviews override earlier ones."""
    rank = (
        func.row_number()
        .over(partition_by=MediaItem.id, order_by=(Review.created_at.desc(), Review.id.desc()))
        .label("rank")
    )
    ranked = (
        select(MediaItem.id.label("item_id"), Review.id, rank)
        .join(Review, labels_item(MediaItem.id, MediaItem.content_sha256))
        .where(labelling())
        .subquery()
    )
    return select(ranked.c.item_id, ranked.c.id).where(ranked.c.rank == 1)


def latest_reviews(session: Session, item_ids: Sequence[int]) -> dict[int, ReviewView]:
    """The human label of each of `item_ids` that has one: the newest review, not undone, given on
    the item itself or on any item with the same content."""
    if not item_ids:
        return {}
    content = content_of(session, item_ids)
    hashes = set(content.values())
    query = (
        select(Review)
        .where(labelling(), or_(Review.item_id.in_(item_ids), Review.content_sha256.in_(hashes)))
        .order_by(Review.created_at.desc(), Review.id.desc())
    )
    by_item: dict[int, ReviewView] = {}
    by_content: dict[str, ReviewView] = {}
    for review in session.scalars(query):  # newest first: the first seen of each key wins
        view = ReviewView.of(review)
        by_item.setdefault(review.item_id, view)
        if review.content_sha256 is not None:
            by_content.setdefault(review.content_sha256, view)
    latest: dict[int, ReviewView] = {}
    for item_id in item_ids:
        found = [v for v in (by_item.get(item_id), by_content.get(content.get(item_id, ""))) if v is not None]
        if found:
            latest[item_id] = max(found, key=lambda v: (v.created_at, v.id))
    return latest


# --- items ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ItemDetail:
    """Everything `deepscan show` prints about one item except its frames; `url` redacted as in ResultRow."""

    id: int
    job_id: int
    url: str
    kind: str
    status: str
    error: str | None
    score: float | None
    verdict: str | None
    threshold: float | None
    model_version: str | None
    strategy: str | None
    width: int | None
    height: int | None
    duration_s: float | None
    frames_scanned: int | None
    content_sha256: str | None
    attempts: int
    enqueued_at: dt.datetime | None
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    reviews: list[ReviewView] = field(default_factory=list)  # of the item's content, oldest first

    @property
    def human_label(self) -> ReviewView | None:
        """The review that labels the item now: the newest one not undone."""
        return next((r for r in reversed(self.reviews) if r.undone_at is None), None)


@dataclass(frozen=True)
class FramePoint:
    """One sampled video frame: the highest score over its faces (or the whole frame)."""

    frame_index: int
    timestamp_s: float
    score: float
    faces: int


def find_item(session: Session, id_or_url: str) -> ItemDetail:
    """The item with this id, or the newest item scanned from this URL (a URL may be in many jobs)."""
    query = select(MediaItem, ScanJob.threshold, ModelRecord.threshold).join(ScanJob)
    query = query.outerjoin(ModelRecord, ModelRecord.model_version == MediaItem.model_version)
    key = id_or_url.strip()
    if key.isdigit():
        query = query.where(MediaItem.id == int(key))
    else:
        query = query.where(MediaItem.url == key).order_by(MediaItem.id.desc()).limit(1)
    found = session.execute(query).first()
    if found is None:
        raise NotFoundError(f"no item {key}: give an item id or a URL exactly as it was scanned")
    item, job_threshold, model_threshold = found
    return _item_detail(session, item, job_threshold if job_threshold is not None else model_threshold)


def _item_detail(session: Session, item: MediaItem, threshold: float | None) -> ItemDetail:
    about_it = labels_item(MediaItem.id, MediaItem.content_sha256)
    reviews = session.scalars(
        select(Review).join(MediaItem, about_it).where(MediaItem.id == item.id).order_by(Review.created_at, Review.id)
    )
    return ItemDetail(
        id=item.id,
        job_id=item.job_id,
        url=redact_url(item.url),  # `show`, the API and the console: never the credentials it was fetched with
        kind=item.kind,
        status=item.status,
        error=item.error,
        score=item.score,
        verdict=item.verdict,
        threshold=threshold,
        model_version=item.model_version,
        strategy=item.strategy,
        width=item.width,
        height=item.height,
        duration_s=item.duration_s,
        frames_scanned=item.frames_scanned,
        content_sha256=item.content_sha256,
        attempts=item.attempts,
        enqueued_at=item.enqueued_at,
        started_at=item.started_at,
        finished_at=item.finished_at,
        reviews=[ReviewView.of(r) for r in reviews],
    )


def item_timeline(session: Session, item_id: int) -> list[FramePoint]:
    """The item's per-frame scores in frame order (max over faces); empty for items without frames."""
    query = (
        select(
            FrameResult.frame_index,
            func.min(FrameResult.timestamp_s),
            func.max(FrameResult.score),
            func.count(),
        )
        .where(FrameResult.item_id == item_id)
        .group_by(FrameResult.frame_index)
        .order_by(FrameResult.frame_index)
    )
    return [FramePoint(index, ts, score, faces) for index, ts, score, faces in session.execute(query)]


def face_track(session: Session, item_id: int) -> list[tuple[float, list[int]]]:
    """(timestamp, [x, y, w, h]) of the largest face in each frame that had one, in frame order:
    the face the scores came from, followed through a video."""
    query = (
        select(FrameResult.timestamp_s, FrameResult.bbox)
        .where(FrameResult.item_id == item_id, FrameResult.face_index == 0, FrameResult.bbox.is_not(None))
        .order_by(FrameResult.frame_index)
    )
    return [(float(ts), [int(v) for v in box]) for ts, box in session.execute(query)]


# --- jobs ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobSummary:
    """A job's progress: item counts by status, flagged (verdict fake) items, and its speed."""

    id: int
    name: str
    status: str
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    threshold: float | None  # the one applied: the job's own, else its checkpoint's calibrated one
    model_version: str | None
    threshold_source: str | None = None  # "job", "checkpoint", or None while neither is known
    queued: int = 0
    processing: int = 0
    done: int = 0
    error: int = 0
    cancelled: int = 0
    flagged: int = 0
    total: int = 0
    duration_s: float | None = None
    items_per_s: float | None = None


def _job_end(job: ScanJob, counts: JobCounts, now: dt.datetime) -> dt.datetime | None:
    """When the job ended, `now` while it runs, else its last item's finish."""
    if job.finished_at is not None:
        return job.finished_at
    return now if job.status in OPEN_JOB_STATUSES else counts.last_finished_at


def _summarize(job: ScanJob, counts: JobCounts, now: dt.datetime, model_threshold: float | None) -> JobSummary:
    end = _job_end(job, counts, now)
    threshold, source = (job.threshold, "job") if job.threshold is not None else (model_threshold, "checkpoint")
    duration = max((end - (job.started_at or job.created_at)).total_seconds(), 0.0) if end is not None else None
    statuses = counts.by_status()
    return JobSummary(
        id=job.id,
        name=redact_text(job.name),  # jobs named before names were redacted at creation
        status=job.status,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        threshold=threshold,
        model_version=job.model_version,
        threshold_source=source if threshold is not None else None,
        flagged=counts.flagged,
        total=counts.total,
        duration_s=duration,
        items_per_s=counts.scanned / duration if duration else None,
        **statuses,
    )


def job_summary(session: Session, job_id: int, *, now: dt.datetime | None = None) -> JobSummary:
    """Counts, duration and items/s of one job; a running job's duration runs up to `now`."""
    job = session.get(ScanJob, job_id)
    if job is None:
        raise NotFoundError(f"no job {job_id}: `deepscan jobs list` shows the recent ones")
    thresholds = model_thresholds(session, [job.model_version])
    return _summarize(job, jobs_counts(session, [job_id])[job_id], now or utcnow(), thresholds.get(job.model_version))


def list_jobs(session: Session, limit: int = 20, *, now: dt.datetime | None = None) -> list[JobSummary]:
    """The `limit` newest jobs, newest first, with their counts."""
    jobs = session.scalars(select(ScanJob).order_by(ScanJob.id.desc()).limit(limit)).all()
    counts = jobs_counts(session, [job.id for job in jobs]) if jobs else {}
    when = now or utcnow()
    thresholds = model_thresholds(session, [job.model_version for job in jobs])
    return [_summarize(job, counts[job.id], when, thresholds.get(job.model_version)) for job in jobs]


def model_thresholds(session: Session, versions: list[str | None]) -> dict[str | None, float]:
    """The calibrated threshold of each known checkpoint among `versions`."""
    wanted = {v for v in versions if v is not None}
    if not wanted:
        return {}
    rows = session.execute(
        select(ModelRecord.model_version, ModelRecord.threshold).where(ModelRecord.model_version.in_(wanted))
    )
    return {version: threshold for version, threshold in rows.all()}  # noqa: C416 (rows are Row objects)
