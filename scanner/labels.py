"""Labels follow content: a moderator's review applies to every item with the same bytes.

A review records the sha256 of the item it was given on (`reviews.content_sha256`). The human label
of an item is the newest review, not undone, given on that item or on any item with the same
content, so a rescan or a copy under another name arrives already labelled and nobody reviews the
same content twice. Items scanned without a content hash keep labels of their own.

An undo never deletes: it marks the review undone (who, when), which hands the label back to the
review before it, or to none; both actions stay in the history.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_, case, func, or_, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from scanner.errors import DeepscanError
from scanner.models import REVIEW_LABELS, Review, utcnow


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


def start_of_day(now: dt.datetime | None = None) -> dt.datetime:
    """Midnight UTC of the day of `now`: where "today" starts for review counts."""
    return (now or utcnow()).astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def labels_given(session: Session, reviewer: str, *, since: dt.datetime) -> int:
    """How many labels `reviewer` has given since `since` and not undone."""
    query = select(func.count()).where(Review.reviewer == reviewer, Review.created_at >= since, labelling())
    return int(session.scalar(query) or 0)


@dataclass(frozen=True)
class ReviewerStats:
    """One moderator's work: labels still standing by label, labels undone, and the latest one."""

    reviewer: str
    by_label: dict[str, int]
    undone: int
    last_at: dt.datetime

    @property
    def standing(self) -> int:
        return sum(self.by_label.values())


def reviewer_stats(session: Session, *, since: dt.datetime | None = None) -> list[ReviewerStats]:
    """Per moderator, most labels first: what they labelled (since `since`, when given)."""
    counts = [func.sum(case((and_(Review.label == label, labelling()), 1), else_=0)) for label in REVIEW_LABELS]
    undone = func.sum(case((Review.undone_at.is_not(None), 1), else_=0))
    query = select(Review.reviewer, *counts, undone, func.max(Review.created_at)).group_by(Review.reviewer)
    if since is not None:
        query = query.where(Review.created_at >= since)
    rows = [
        ReviewerStats(
            name, dict(zip(REVIEW_LABELS, (int(n) for n in values[:-2]), strict=True)), int(values[-2]), values[-1]
        )
        for name, *values in session.execute(query)
    ]
    return sorted(rows, key=lambda r: (-r.standing, r.reviewer))
