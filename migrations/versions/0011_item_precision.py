"""The precision each verdict was scored at.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05

`media_items.precision`: "fp32" or "bf16", the arithmetic the model ran in when it scored the item
(chosen per worker by `--precision auto`, see scanner/precision.py); a reused verdict keeps the
precision of the item it came from. Null for errors and for verdicts stored before this revision
(those were fp32 on a CPU and bf16 on a GPU).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# In place, not a batch: on SQLite a batch re-creates media_items, and dropping the old table would
# cascade to the rows that reference it (see 0010).
def upgrade() -> None:
    op.add_column("media_items", sa.Column("precision", sa.String(length=8), nullable=True))


def downgrade() -> None:
    op.drop_column("media_items", "precision")
