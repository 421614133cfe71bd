"""The precision each verdict was scored at.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05

`media_items.precision`: "fp32" or "bf16", the arithmetic the model ran in when it scored the item
(chosen per worker by `--precision auto`, see scanner/precision.py); a reused verdict keeps the
precision of the item it came from. Null for errors and for verdicts stored before this revision
(those were fp32 on a CPU and bf16 on a GPU).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("media_items") as batch:
        batch.add_column(sa.Column("precision", sa.String(length=8), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("media_items") as batch:
        batch.drop_column("precision")
