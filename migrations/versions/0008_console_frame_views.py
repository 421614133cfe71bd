"""Evidence at scan time: a downscaled view of the whole image or of each top video frame.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05

`frame_views`: one JPEG (longest side at most 640 px) per kept frame, written in the transaction
that writes the item's verdict; the console draws each face's box (`frame_results.bbox`) over it.
Items scanned before this revision have none and show their thumbnail as before.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "frame_views",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("item_id", BIG_ID, nullable=False),
        sa.Column("frame_index", sa.Integer(), nullable=False),
        sa.Column("timestamp_s", sa.Float(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("jpeg", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["item_id"], ["media_items.id"], name="fk_frame_views_item_id_media_items", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_frame_views"),
        sa.UniqueConstraint("item_id", "frame_index", name="uq_frame_views_item_id_frame_index"),
    )


def downgrade() -> None:
    op.drop_table("frame_views")
