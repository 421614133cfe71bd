"""Face landmarks beside each per-face score.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27

`frame_results.landmarks`: the five (x, y) landmarks of the face the row scored, in the item's own
pixels, as the face view found them (null for whole-image rows and detectors without landmarks).
With `bbox`, a reviewer can follow the face that was scored through a video.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("frame_results") as batch:
        batch.add_column(sa.Column("landmarks", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("frame_results") as batch:
        batch.drop_column("landmarks")
