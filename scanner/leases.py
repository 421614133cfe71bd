"""Item leases: at most one delivery of a chunk writes an item's verdict, whatever the broker does.

Redis redelivers a message whose worker is slow or dead, `jobs reconcile` re-sends lost ones, and a
producer may send a chunk twice; so several deliveries of one item can run at once. Each delivery
claims its items with a fresh owner token and an expiry (`lease_owner`, `lease_expires_at`), keeps
the lease alive while it works, and writes the verdict and frame rows in one transaction only for
items whose lease it still holds. A delivery that lost its lease writes nothing.

Claimable: `queued`, or `processing` under an expired lease (its worker died or stalled).

Blame. A worker that dies holds a chunk of items, and usually only one of them (if any) killed it:
an OOM, a deploy or a lost node kills a worker whatever it holds. So a death counts against no item
of an ordinary chunk. It only marks the items the delivery held as *interrupted* (`interruptions`,
counted when their expired lease is taken over). An interrupted item is tried again *alone*: sent
in a chunk of its own, and worked on while nothing else is in hand in its worker process
(workers/isolation.py). Each lone try is counted in `attempts` before it starts (written ahead, so
a death cannot skip it) and uncounted if the item is handed back; a lone try that dies therefore
counts against the one item that was in hand. An item with `max_attempts` lone tries behind it
ends `error` when claimed again: it killed its worker every time it ran alone. A healthy item is
blamed only if an unrelated death strikes during its own short lone try, `max_attempts` times.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import threading
import uuid
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, and_, case, or_, update
from sqlalchemy.sql.elements import ColumnElement

from scanner.models import MediaItem, utcnow

DEFAULT_HEARTBEATS_PER_LEASE = 3  # the lease is renewed this many times per lease period


def new_owner() -> str:
    """A token naming one delivery: host, process and a random part (unique per claim)."""
    host = socket.gethostname()[:32]
    return f"{host}:{os.getpid()}:{uuid.uuid4().hex[:16]}"


def gave_up_reason(attempts: int) -> str:
    return (
        f"gave up after {attempts} attempts (the item stopped its worker each time it ran alone; DEEPSCAN_MAX_ATTEMPTS)"
    )


def claimable(now: dt.datetime) -> ColumnElement[bool]:
    """Items no live delivery holds: queued, or processing under an expired (or missing) lease."""
    expired = or_(MediaItem.lease_expires_at.is_(None), MediaItem.lease_expires_at < now)
    return or_(MediaItem.status == "queued", and_(MediaItem.status == "processing", expired))


@dataclass(frozen=True)
class Claimed:
    """What one delivery's claim took: its items, those it gave up on, and the interrupted ones among its items."""

    items: set[int]
    gave_up: set[int]
    interrupted: set[int]


def claim(
    conn: Connection, job_id: int, item_ids: Collection[int], *, owner: str, lease_s: float, max_attempts: int
) -> Claimed:
    """Claim the claimable items among `item_ids` for `owner`.

    Items with `max_attempts` lone tries behind them end `error` here rather than being tried
    again. An item taken over from a delivery that still named itself its owner was interrupted:
    that delivery died or stalled. Conditional UPDATEs make this safe against a concurrent claim of
    the same items: on PostgreSQL the second waits for the first's row locks and then sees them taken.
    """
    if not item_ids:
        return Claimed(set(), set(), set())
    now = utcnow()
    mine = and_(MediaItem.job_id == job_id, MediaItem.id.in_(item_ids), claimable(now))
    gave_up = conn.execute(
        update(MediaItem)
        .where(mine, MediaItem.attempts >= max_attempts)
        .values(
            status="error",
            error=gave_up_reason(max_attempts),
            finished_at=now,
            lease_owner=None,
            lease_expires_at=None,
        )
        .returning(MediaItem.id)
    ).scalars()
    given_up = set(gave_up)
    rows = conn.execute(
        update(MediaItem)
        .where(mine)
        .values(
            status="processing",
            lease_owner=owner,
            lease_expires_at=now + dt.timedelta(seconds=lease_s),
            started_at=now,
            interruptions=MediaItem.interruptions + case((died_holding(), 1), else_=0),
        )
        .returning(MediaItem.id, MediaItem.interruptions)
    ).all()
    return Claimed({row.id for row in rows}, given_up, {row.id for row in rows if row.interruptions > 0})


def died_holding() -> ColumnElement[bool]:
    """The item's lease (expired, when claimable) still names a delivery: it ended without storing
    the item or handing it back, so its worker died or stalled."""
    return and_(MediaItem.status == "processing", MediaItem.lease_owner.is_not(None))


def take_up_alone(engine: Engine, owner: str, item_id: int) -> bool:
    """Count a lone try of an interrupted item before it starts; False when `owner` lost its lease.

    Written ahead of the work: if the worker dies during the try, the count stays, against this item.
    """
    with engine.begin() as conn:
        result = conn.execute(
            update(MediaItem)
            .where(MediaItem.id == item_id, MediaItem.lease_owner == owner, MediaItem.status == "processing")
            .values(attempts=MediaItem.attempts + 1)
        )
    return bool(result.rowcount)


def lock_held(conn: Connection, owner: str, item_ids: Collection[int]) -> set[int]:
    """Lock and return the items of `item_ids` that `owner` still holds, inside the caller's transaction.

    A no-op UPDATE rather than SELECT … FOR UPDATE: it takes the row locks on PostgreSQL and the
    write lock on SQLite before anything is read, so no other delivery can take an item over
    between this check and the writes that follow it.
    """
    if not item_ids:
        return set()
    held = conn.execute(
        update(MediaItem)
        .where(MediaItem.id.in_(item_ids), MediaItem.lease_owner == owner, MediaItem.status == "processing")
        .values(lease_owner=owner)
        .returning(MediaItem.id)
    ).scalars()
    return set(held)


def extend(engine: Engine, owner: str, item_ids: Collection[int], lease_s: float) -> int:
    """Push the expiry of `owner`'s items `lease_s` into the future; returns how many it still holds."""
    with engine.begin() as conn:
        result = conn.execute(
            update(MediaItem)
            .where(MediaItem.id.in_(item_ids), MediaItem.lease_owner == owner, MediaItem.status == "processing")
            .values(lease_expires_at=utcnow() + dt.timedelta(seconds=lease_s))
        )
    return int(result.rowcount)


def hand_back(engine: Engine, owner: str, item_ids: Collection[int], *, alone: bool = False) -> int:
    """Give up items this delivery did not finish (never started, or a transient failure): their lease
    expires now, no interruption is counted, and a lone try (`alone`) is uncounted.

    The periodic reconcile re-enqueues them (an expired lease is what it looks for).
    """
    if not item_ids:
        return 0
    uncounted = {"attempts": MediaItem.attempts - 1} if alone else {}
    with engine.begin() as conn:
        result = conn.execute(
            update(MediaItem)
            .where(MediaItem.id.in_(item_ids), MediaItem.lease_owner == owner, MediaItem.status == "processing")
            .values(lease_owner=None, lease_expires_at=utcnow(), **uncounted)
        )
    return int(result.rowcount)


@contextmanager
def kept_alive(engine: Engine, owner: str, item_ids: Collection[int], lease_s: float) -> Iterator[None]:
    """Renew `owner`'s leases in a background thread while the body runs (long chunks, slow videos)."""
    stop = threading.Event()
    interval_s = lease_s / DEFAULT_HEARTBEATS_PER_LEASE

    def beat() -> None:
        while not stop.wait(interval_s):
            try:
                if extend(engine, owner, item_ids, lease_s) == 0:
                    return
            except Exception:  # a database blip: the next beat tries again, the lease has slack
                continue

    thread = threading.Thread(target=beat, name=f"lease-{owner[-6:]}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def released_values() -> dict[str, Any]:
    """Columns that end a lease, for the statement that writes an item's outcome."""
    return {"lease_owner": None, "lease_expires_at": None}
