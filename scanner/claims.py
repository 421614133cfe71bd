"""Review claims: two moderators never open the same unclaimed item at once.

Opening an item (from the queue, or with `j`) claims it for `DEFAULT_CLAIM_S` seconds. The claim is
taken atomically: a conditional UPDATE takes over an expired claim (or renews one's own), and an
INSERT guarded by the primary key takes a fresh one, so of two moderators racing for one item
exactly one gets it and the other moves on to the next. Others see who holds it; their `j` passes it
by. Labelling the item drops its claim; otherwise it simply lapses.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from scanner.models import ReviewClaim, utcnow

DEFAULT_CLAIM_S = 300  # long enough to look at an item, short enough that a closed tab frees it soon


@dataclass(frozen=True)
class Claim:
    item_id: int
    reviewer: str
    expires_at: dt.datetime

    def held_by_other(self, reviewer: str, now: dt.datetime) -> bool:
        """Whether this claim keeps `reviewer` off the item at `now`."""
        return self.reviewer != reviewer and self.expires_at > now


def claim(session: Session, item_id: int, reviewer: str, *, now: dt.datetime | None = None) -> Claim:
    """Take or renew the claim on an item for `reviewer`; returns whoever holds it afterwards
    (someone else, when their claim has not expired)."""
    when = now or utcnow()
    until = when + dt.timedelta(seconds=DEFAULT_CLAIM_S)
    mine_or_lapsed = (ReviewClaim.reviewer == reviewer) | (ReviewClaim.expires_at <= when)
    taken = session.execute(
        update(ReviewClaim)
        .where(ReviewClaim.item_id == item_id, mine_or_lapsed)
        .values(reviewer=reviewer, expires_at=until)
        .execution_options(synchronize_session=False)
    )
    if taken.rowcount == 0:  # type: ignore[attr-defined]
        try:
            with session.begin_nested():
                session.add(ReviewClaim(item_id=item_id, reviewer=reviewer, expires_at=until))
        except IntegrityError:
            pass  # someone else's live claim: theirs stands
    holder = session.execute(select(ReviewClaim.reviewer, ReviewClaim.expires_at).where(ReviewClaim.item_id == item_id))
    name, expires = holder.one()
    return Claim(item_id, name, expires)


def release(session: Session, item_ids: Sequence[int]) -> None:
    """Drop the claims on items (they were labelled)."""
    if item_ids:
        session.execute(delete(ReviewClaim).where(ReviewClaim.item_id.in_(list(item_ids))))


def live_claims(session: Session, item_ids: Sequence[int], *, now: dt.datetime | None = None) -> dict[int, Claim]:
    """The unexpired claims on any of `item_ids`."""
    if not item_ids:
        return {}
    query = select(ReviewClaim).where(
        ReviewClaim.item_id.in_(list(item_ids)), ReviewClaim.expires_at > (now or utcnow())
    )
    return {c.item_id: Claim(c.item_id, c.reviewer, c.expires_at) for c in session.scalars(query)}
