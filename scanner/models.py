"""The verdict database: SQLAlchemy 2.0 typed ORM models, portable to SQLite and PostgreSQL.

Schema changes go through Alembic revisions in `migrations/`; tests build the schema by
running them, and `deepscan db check` fails when these models and the revisions drift.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal, get_args

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

ItemStatus = Literal["queued", "processing", "done", "error", "cancelled"]
ITEM_STATUSES: tuple[ItemStatus, ...] = get_args(ItemStatus)
OPEN_ITEM_STATUSES: tuple[ItemStatus, ...] = ("queued", "processing")  # a worker may still write its verdict
FINISHED_ITEM_STATUSES: tuple[ItemStatus, ...] = ("done", "error", "cancelled")

JobStatus = Literal["pending", "running", "done", "failed", "cancelled"]
JOB_STATUSES: tuple[JobStatus, ...] = get_args(JobStatus)
OPEN_JOB_STATUSES: tuple[JobStatus, ...] = ("pending", "running")
FINISHED_JOB_STATUSES: tuple[JobStatus, ...] = ("done", "failed", "cancelled")
STOPPED_JOB_STATUSES: tuple[JobStatus, ...] = ("failed", "cancelled")  # finished before its items: workers skip them
ITEM_KINDS = ("image", "video", "unknown")
VERDICTS = ("fake", "real")
REVIEW_LABELS = ("fake", "real", "unsure")

# Integer ids that are 64-bit on PostgreSQL but stay SQLite's rowid alias (which autoincrements).
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> dt.datetime:
    """The current time as an aware UTC datetime."""
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timestamp stored in UTC and always returned timezone-aware, on SQLite too."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given: deepscan stores aware UTC timestamps only")
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _one_of(column: str, values: tuple[str, ...]) -> str:
    quoted = ", ".join(f"'{v}'" for v in values)
    return f"{column} IN ({quoted})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dt.datetime: UTCDateTime(), dict[str, Any]: JSON(), list[Any]: JSON()}


class ScanJob(Base):
    """One run of `deepscan scan` (or of a schedule) over a set of sources."""

    __tablename__ = "scan_jobs"
    __table_args__ = (CheckConstraint(_one_of("status", JOB_STATUSES), name="status"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    source_spec: Mapped[list[Any]] = mapped_column(JSON)
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    error: Mapped[str | None] = mapped_column(Text)
    model_version: Mapped[str | None] = mapped_column(String(64))
    threshold: Mapped[float | None] = mapped_column(Float)
    webhook_url: Mapped[str | None] = mapped_column(Text)
    schedule_id: Mapped[int | None] = mapped_column(ForeignKey("schedules.id", ondelete="SET NULL"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    started_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]

    items: Mapped[list[MediaItem]] = relationship(back_populates="job", passive_deletes=True)


class MediaItem(Base):
    """One image or video URL within a job, from `queued` to `done` (with a verdict) or `error`."""

    __tablename__ = "media_items"
    __table_args__ = (
        UniqueConstraint("job_id", "url"),
        CheckConstraint(_one_of("status", ITEM_STATUSES), name="status"),
        CheckConstraint(_one_of("kind", ITEM_KINDS), name="kind"),
        CheckConstraint(f"verdict IS NULL OR {_one_of('verdict', VERDICTS)}", name="verdict"),
        Index(None, "job_id", "status"),
        Index(None, "verdict", "score"),
        Index(None, "job_id", "verdict", "score"),
        Index(None, "content_sha256"),
        Index(None, "url"),
        Index(None, "finished_at"),
        Index(None, "status", "lease_expires_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("scan_jobs.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(16), default="unknown")
    status: Mapped[str] = mapped_column(String(16), default="queued")
    error: Mapped[str | None] = mapped_column(Text)
    size: Mapped[int | None] = mapped_column(BigInteger)
    etag: Mapped[str | None] = mapped_column(String(200))
    last_modified: Mapped[dt.datetime | None]
    content_sha256: Mapped[str | None] = mapped_column(String(64))
    width: Mapped[int | None]
    height: Mapped[int | None]
    duration_s: Mapped[float | None] = mapped_column(Float)
    frames_scanned: Mapped[int | None]
    score: Mapped[float | None] = mapped_column(Float)
    verdict: Mapped[str | None] = mapped_column(String(8))
    strategy: Mapped[str | None] = mapped_column(String(32))
    model_version: Mapped[str | None] = mapped_column(String(64))
    precision: Mapped[str | None] = mapped_column(String(8))  # fp32 | bf16: what the model ran in
    reused_from_id: Mapped[int | None] = mapped_column(BigId)
    # Tries of the item alone in its worker after a delivery holding it died; the ones that died too
    # count against it (scanner/leases.py). `interruptions`: deliveries that died holding it (a server
    # default only, so that an insert written for an older revision leaves the column out).
    attempts: Mapped[int] = mapped_column(default=0)
    interruptions: Mapped[int] = mapped_column(server_default=text("0"))
    # The delivery that may write this item's verdict (see scanner/leases.py), and until when.
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[dt.datetime | None]
    # Digest of the job options that change scores (scanner.jobs.ScanOptions.scoring_key): a verdict
    # is reused only for the same content, model and scoring key.
    scoring_key: Mapped[str | None] = mapped_column(String(64))
    enqueued_at: Mapped[dt.datetime | None]
    started_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]

    job: Mapped[ScanJob] = relationship(back_populates="items")
    frames: Mapped[list[FrameResult]] = relationship(back_populates="item", passive_deletes=True)
    reviews: Mapped[list[Review]] = relationship(back_populates="item", passive_deletes=True)


class FrameResult(Base):
    """The score of one sampled video frame (or one face in it); images have one row per face."""

    __tablename__ = "frame_results"
    __table_args__ = (Index(None, "item_id", "frame_index"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("media_items.id", ondelete="CASCADE"))
    frame_index: Mapped[int]
    timestamp_s: Mapped[float] = mapped_column(Float)
    face_index: Mapped[int | None]
    bbox: Mapped[list[Any] | None] = mapped_column(JSON)
    landmarks: Mapped[list[Any] | None] = mapped_column(JSON)  # five [x, y] points of the scored face
    score: Mapped[float] = mapped_column(Float)

    item: Mapped[MediaItem] = relationship(back_populates="frames")

    def copy_values(self) -> dict[str, Any]:
        """The row's values without its ids: what another item reusing this verdict stores."""
        return {
            "frame_index": self.frame_index,
            "timestamp_s": self.timestamp_s,
            "face_index": self.face_index,
            "bbox": self.bbox,
            "landmarks": self.landmarks,
            "score": self.score,
        }


class Review(Base):
    """A human moderator's label, given on one item and applying to its content (see scanner/labels.py).

    An undone review stays in the history (`undone_at`, `undone_by`) but no longer labels anything.
    """

    __tablename__ = "reviews"
    __table_args__ = (
        CheckConstraint(_one_of("label", REVIEW_LABELS), name="label"),
        Index(None, "item_id", "created_at"),
        Index(None, "content_sha256"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("media_items.id", ondelete="CASCADE"))
    label: Mapped[str] = mapped_column(String(8))
    reviewer: Mapped[str] = mapped_column(String(200))
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    # The reviewed item's content when it was labelled: the label follows these bytes to every copy.
    content_sha256: Mapped[str | None] = mapped_column(String(64))
    undone_at: Mapped[dt.datetime | None]
    undone_by: Mapped[str | None] = mapped_column(String(200))

    item: Mapped[MediaItem] = relationship(back_populates="reviews")


class Schedule(Base):
    """A named, recurring, incremental scan of a source (launched by `deepscan beat`)."""

    __tablename__ = "schedules"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    source_spec: Mapped[list[Any]] = mapped_column(JSON)
    cron: Mapped[str] = mapped_column(String(100))
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    webhook_url: Mapped[str | None] = mapped_column(Text)
    # The checkpoint runs scanned in-process use (run-now without a broker); workers use their own.
    checkpoint: Mapped[str | None] = mapped_column(Text)
    # Re-scan items that ended `error` in an earlier run (a transient outage), not only new objects.
    retry_errors: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_run_at: Mapped[dt.datetime | None]
    # Plain id rather than a foreign key: scan_jobs already points here, and a cycle of foreign
    # keys would complicate deleting either side.
    last_job_id: Mapped[int | None] = mapped_column(BigId)


class ModelRecord(Base):
    """A checkpoint that produced verdicts, keyed by the sha256 of its file."""

    __tablename__ = "models"

    model_version: Mapped[str] = mapped_column(String(64), primary_key=True)
    path: Mapped[str] = mapped_column(Text)
    arch: Mapped[str] = mapped_column(String(50))
    threshold: Mapped[float] = mapped_column(Float)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


# --- the web face: API tokens, console sessions, thumbnails (migration 0004) ---------------------

from sqlalchemy import LargeBinary  # noqa: E402 (kept with the tables that use it, appended in one block)

TOKEN_ROLES = ("viewer", "reviewer", "admin")


class ApiToken(Base):
    """A named API token: only the sha256 of the secret is stored; revoked tokens are kept for the record."""

    __tablename__ = "api_tokens"
    __table_args__ = (CheckConstraint(_one_of("role", TOKEN_ROLES), name="role"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[dt.datetime | None]
    revoked_at: Mapped[dt.datetime | None]


class WebSession(Base):
    """A review console sign-in: the cookie holds a random id, the database its sha256 and CSRF secret."""

    __tablename__ = "web_sessions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    token_id: Mapped[int] = mapped_column(ForeignKey("api_tokens.id", ondelete="CASCADE"), index=True)
    session_hash: Mapped[str] = mapped_column(String(64), unique=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(index=True)


class Thumbnail(Base):
    """A small JPEG kept at scan time: position 0 is the item's top-scoring face crop (or whole frame);
    positions 1.. are one per flagged video segment, in time order. The web app never fetches media."""

    __tablename__ = "thumbnails"
    __table_args__ = (UniqueConstraint("item_id", "position"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("media_items.id", ondelete="CASCADE"))
    position: Mapped[int]
    frame_index: Mapped[int]
    timestamp_s: Mapped[float] = mapped_column(Float)
    start_s: Mapped[float | None] = mapped_column(Float)
    end_s: Mapped[float | None] = mapped_column(Float)
    score: Mapped[float] = mapped_column(Float)
    width: Mapped[int]
    height: Mapped[int]
    jpeg: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class FrameView(Base):
    """A downscaled JPEG of a whole image, or of one of a video's top-scoring frames, kept at scan time
    (longest side at most 640 px) so the console can show the evidence with every face's box drawn
    over it (the boxes and scores are the item's `frame_results`). Written with the verdict (migration 0008)."""

    __tablename__ = "frame_views"
    __table_args__ = (UniqueConstraint("item_id", "frame_index"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("media_items.id", ondelete="CASCADE"))
    frame_index: Mapped[int]
    timestamp_s: Mapped[float] = mapped_column(Float)
    score: Mapped[float] = mapped_column(Float)  # the frame's highest face (or whole-frame) score
    width: Mapped[int]
    height: Mapped[int]
    jpeg: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ReviewClaim(Base):
    """A moderator's claim on an item they opened, so teammates' `j` passes it by (migration 0009).

    One row per item; it lapses at `expires_at` and is dropped when the item is labelled."""

    __tablename__ = "review_claims"

    item_id: Mapped[int] = mapped_column(ForeignKey("media_items.id", ondelete="CASCADE"), primary_key=True)
    reviewer: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[dt.datetime] = mapped_column(index=True)
