"""Item leases (owner + expiry) and the scoring key that verdict reuse matches on.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27

`lease_owner`/`lease_expires_at`: at most one delivery of a chunk may write an item's verdict and
frame rows; the index on (status, lease_expires_at) lets the periodic reconcile find expired
leases without scanning the table. `scoring_key`: a digest of the scan options that change scores
(faces, fps, max frames), so an earlier verdict is reused only when it was scored the same way.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("media_items") as batch:
        batch.add_column(sa.Column("lease_owner", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("scoring_key", sa.String(length=64), nullable=True))
    op.create_index(op.f("ix_media_items_status_lease_expires_at"), "media_items", ["status", "lease_expires_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_media_items_status_lease_expires_at"), table_name="media_items")
    with op.batch_alter_table("media_items") as batch:
        batch.drop_column("scoring_key")
        batch.drop_column("lease_expires_at")
        batch.drop_column("lease_owner")
