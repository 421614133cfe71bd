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


# Not a batch operation: on SQLite a batch re-creates media_items, and dropping the old table would
# cascade to the reviews, frame rows and thumbnails that reference it. Both databases add (and drop)
# a column in place.


def upgrade() -> None:
    op.add_column("media_items", sa.Column("interruptions", sa.Integer(), server_default=sa.text("0"), nullable=False))


def downgrade() -> None:
    op.drop_column("media_items", "interruptions")
