"""Labels follow content, and a label can be undone without leaving the history.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05

`reviews.content_sha256`: the sha256 of the reviewed item's bytes, copied from the item when the
label is given, so the label applies to every item with the same content (rescans and copies).
Existing reviews take their item's hash. `reviews.undone_at`/`undone_by`: an undo keeps the review
in the history but stops it labelling anything.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("reviews") as batch:
        batch.add_column(sa.Column("content_sha256", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("undone_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("undone_by", sa.String(length=200), nullable=True))
        batch.create_index("ix_reviews_content_sha256", ["content_sha256"])
    op.execute(
        "UPDATE reviews SET content_sha256 = "
        "(SELECT media_items.content_sha256 FROM media_items WHERE media_items.id = reviews.item_id)"
    )


def downgrade() -> None:
    with op.batch_alter_table("reviews") as batch:
        batch.drop_index("ix_reviews_content_sha256")
        batch.drop_column("undone_by")
        batch.drop_column("undone_at")
        batch.drop_column("content_sha256")
