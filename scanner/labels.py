"""Labels follow content: a moderator's review applies to every item with the same bytes.

A review records the sha256 of the item it was given on (`reviews.content_sha256`). The human label
of an item is the newest review, not undone, given on that item or on any item with the same
content, so a rescan or a copy under another name arrives already labelled and nobody reviews the
same content twice. Items scanned without a content hash keep labels of their own.

An undo never deletes: it marks the review undone (who, when), which hands the label back to the
review before it, or to none; both actions stay in the history.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, and_, or_
from sqlalchemy.orm import InstrumentedAttribute, Session

from scanner.errors import DeepscanError
from scanner.models import Review, utcnow


class NoSuchReviewError(DeepscanError):
    """No review has this id."""


def labels_item(item_id: InstrumentedAttribute[int], sha256: InstrumentedAttribute[str | None]) -> ColumnElement[bool]:
    """The condition that a `Review` row is about the item with these columns (its own, or its content's).

    It does not look at `undone_at`: the history shows undone reviews too; see `labelling`.
    """
    return or_(Review.item_id == item_id, and_(sha256.is_not(None), Review.content_sha256 == sha256))


def labelling() -> ColumnElement[bool]:
    """The condition that a `Review` row still labels something (it was not undone)."""
    return Review.undone_at.is_(None)


def undo_review(session: Session, review_id: int, who: str) -> Review:
    """Mark a review undone by `who`; undoing it again changes nothing (a double-click is not an error)."""
    found = session.get(Review, review_id)
    if found is None:
        raise NoSuchReviewError(f"no review {review_id}")
    if found.undone_at is None:
        found.undone_at = utcnow()
        found.undone_by = who
        session.flush()
    return found
