"""Claims: a moderator who opens an item holds it for a few minutes, so teammates do not open it too.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05

`review_claims`: one row per claimed item (who, until when); an expired row claims nothing and is
taken over by the next moderator to open the item; labelling the item drops it.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "review_claims",
        sa.Column("item_id", BIG_ID, nullable=False),
        sa.Column("reviewer", sa.String(length=200), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["item_id"], ["media_items.id"], name="fk_review_claims_item_id_media_items", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("item_id", name="pk_review_claims"),
    )
    op.create_index("ix_review_claims_expires_at", "review_claims", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_review_claims_expires_at", table_name="review_claims")
    op.drop_table("review_claims")
