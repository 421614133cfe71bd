"""Count the deliveries that died holding an item, apart from the attempts counted against it.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05

`media_items.interruptions`: how many deliveries holding the item died or stalled before storing
it (their lease expired). An item with interruptions is tried again alone in its worker
(scanner/leases.py); only those lone tries count in `attempts`, so a worker killed by something
else no longer counts against the healthy items of its chunk.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("media_items") as batch:
        batch.add_column(sa.Column("interruptions", sa.Integer(), server_default=sa.text("0"), nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("media_items") as batch:
        batch.drop_column("interruptions")
