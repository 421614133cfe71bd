"""Per-schedule checkpoint and error-retry policy.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27

`schedules.checkpoint`: the checkpoint a run scanned in-process uses (`schedule run-now` without a
broker), so `run-now` needs no `--checkpoint` of its own. `schedules.retry_errors`: later runs scan
again the items that ended `error` (a receiver or bucket that was down), not only new objects.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("schedules") as batch:
        batch.add_column(sa.Column("checkpoint", sa.Text(), nullable=True))
        batch.add_column(sa.Column("retry_errors", sa.Boolean(), server_default=sa.false(), nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("schedules") as batch:
        batch.drop_column("retry_errors")
        batch.drop_column("checkpoint")
