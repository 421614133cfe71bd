"""Initial schema: scan jobs, media items, frame results, reviews, schedules, models.

Revision ID: 0001
Revises:
Create Date: 2026-11-26

Indexes serve the moderation queries: a job's items by status (progress, reconcile), flagged
items by score (`results --verdict fake --order score`), verdict reuse by content hash, lookup
by URL (`show URL`, incremental rescans), items finished since a date, and a video's frames.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# 64-bit ids on PostgreSQL; SQLite needs INTEGER PRIMARY KEY for its autoincrementing rowid.
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UTC_TIMESTAMP = sa.DateTime(timezone=True)


def _id() -> sa.Column[int]:
    return sa.Column("id", BIG_ID, nullable=False)


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("model_version", sa.String(length=64), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("arch", sa.String(length=50), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("created_at", UTC_TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("model_version", name=op.f("pk_models")),
    )
    op.create_table(
        "schedules",
        _id(),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("source_spec", sa.JSON(), nullable=False),
        sa.Column("cron", sa.String(length=100), nullable=False),
        sa.Column("options", sa.JSON(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("webhook_url", sa.Text(), nullable=True),
        sa.Column("created_at", UTC_TIMESTAMP, nullable=False),
        sa.Column("last_run_at", UTC_TIMESTAMP, nullable=True),
        sa.Column("last_job_id", BIG_ID, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schedules")),
        sa.UniqueConstraint("name", name=op.f("uq_schedules_name")),
    )
    op.create_table(
        "scan_jobs",
        _id(),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("source_spec", sa.JSON(), nullable=False),
        sa.Column("options", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("model_version", sa.String(length=64), nullable=True),
        sa.Column("threshold", sa.Float(), nullable=True),
        sa.Column("webhook_url", sa.Text(), nullable=True),
        sa.Column("schedule_id", BIG_ID, nullable=True),
        sa.Column("created_at", UTC_TIMESTAMP, nullable=False),
        sa.Column("started_at", UTC_TIMESTAMP, nullable=True),
        sa.Column("finished_at", UTC_TIMESTAMP, nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'running', 'done', 'failed', 'cancelled')", name=op.f("ck_scan_jobs_status")
        ),
        sa.ForeignKeyConstraint(
            ["schedule_id"], ["schedules.id"], name=op.f("fk_scan_jobs_schedule_id_schedules"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scan_jobs")),
    )
    op.create_index(op.f("ix_scan_jobs_schedule_id"), "scan_jobs", ["schedule_id"])
    op.create_table(
        "media_items",
        _id(),
        sa.Column("job_id", BIG_ID, nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.Column("etag", sa.String(length=200), nullable=True),
        sa.Column("last_modified", UTC_TIMESTAMP, nullable=True),
        sa.Column("content_sha256", sa.String(length=64), nullable=True),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        sa.Column("duration_s", sa.Float(), nullable=True),
        sa.Column("frames_scanned", sa.Integer(), nullable=True),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("verdict", sa.String(length=8), nullable=True),
        sa.Column("strategy", sa.String(length=32), nullable=True),
        sa.Column("model_version", sa.String(length=64), nullable=True),
        sa.Column("reused_from_id", BIG_ID, nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("enqueued_at", UTC_TIMESTAMP, nullable=True),
        sa.Column("started_at", UTC_TIMESTAMP, nullable=True),
        sa.Column("finished_at", UTC_TIMESTAMP, nullable=True),
        sa.CheckConstraint("kind IN ('image', 'video', 'unknown')", name=op.f("ck_media_items_kind")),
        sa.CheckConstraint(
            "status IN ('queued', 'processing', 'done', 'error', 'cancelled')", name=op.f("ck_media_items_status")
        ),
        sa.CheckConstraint("verdict IS NULL OR verdict IN ('fake', 'real')", name=op.f("ck_media_items_verdict")),
        sa.ForeignKeyConstraint(
            ["job_id"], ["scan_jobs.id"], name=op.f("fk_media_items_job_id_scan_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_media_items")),
        sa.UniqueConstraint("job_id", "url", name=op.f("uq_media_items_job_id_url")),
    )
    op.create_index(op.f("ix_media_items_content_sha256"), "media_items", ["content_sha256"])
    op.create_index(op.f("ix_media_items_finished_at"), "media_items", ["finished_at"])
    op.create_index(op.f("ix_media_items_job_id_status"), "media_items", ["job_id", "status"])
    op.create_index(op.f("ix_media_items_url"), "media_items", ["url"])
    op.create_index(op.f("ix_media_items_verdict_score"), "media_items", ["verdict", "score"])
    op.create_table(
        "frame_results",
        _id(),
        sa.Column("item_id", BIG_ID, nullable=False),
        sa.Column("frame_index", sa.Integer(), nullable=False),
        sa.Column("timestamp_s", sa.Float(), nullable=False),
        sa.Column("face_index", sa.Integer(), nullable=True),
        sa.Column("bbox", sa.JSON(), nullable=True),
        sa.Column("score", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["item_id"], ["media_items.id"], name=op.f("fk_frame_results_item_id_media_items"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_frame_results")),
    )
    op.create_index(op.f("ix_frame_results_item_id_frame_index"), "frame_results", ["item_id", "frame_index"])
    op.create_table(
        "reviews",
        _id(),
        sa.Column("item_id", BIG_ID, nullable=False),
        sa.Column("label", sa.String(length=8), nullable=False),
        sa.Column("reviewer", sa.String(length=200), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("created_at", UTC_TIMESTAMP, nullable=False),
        sa.CheckConstraint("label IN ('fake', 'real', 'unsure')", name=op.f("ck_reviews_label")),
        sa.ForeignKeyConstraint(
            ["item_id"], ["media_items.id"], name=op.f("fk_reviews_item_id_media_items"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reviews")),
    )
    op.create_index(op.f("ix_reviews_item_id_created_at"), "reviews", ["item_id", "created_at"])


def downgrade() -> None:
    op.drop_table("reviews")
    op.drop_table("frame_results")
    op.drop_table("media_items")
    op.drop_table("scan_jobs")
    op.drop_table("schedules")
    op.drop_table("models")
