"""What the broker still holds: its queue's length, and when its current life began.

A Redis restarted without persistence (or flushed, or failed over to an empty replica) loses every
message it held, silently: the items stay `queued` in the database with nothing left to deliver
them. To see that happen, the first one to talk to the broker in its life (a producer about to
record items, or the periodic reconcile) stores the time in a key of its own, unless the key is
already there. The key goes with everything else when the broker loses its data; the next look
stores a new time. Items queued before that time were sent to a broker that no longer exists, and
`reconcile` re-sends them at once (scanner/jobs.py); items queued after it are waiting their turn
and are left alone, however long the queue.
"""

from __future__ import annotations

import datetime as dt
import logging

import redis
from kombu.exceptions import ChannelError

from scanner.models import utcnow
from scanner.settings import Settings
from workers.app import app

log = logging.getLogger(__name__)


def life_key(queue: str) -> str:
    return f"deepscan:{queue}:broker-life-began"


def queue_length(settings: Settings) -> int:
    """Messages waiting in the workers' queue (reserved and running ones are not counted)."""
    with app.connection_for_write() as conn:
        try:
            return int(conn.default_channel.queue_declare(queue=settings.queue, passive=True).message_count)
        except ChannelError:  # Redis keeps no key for an empty list: the queue "does not exist"
            return 0


def life_began(settings: Settings) -> dt.datetime | None:
    """When the broker's current life began (marked now if this is the first look); None for a
    broker that is not Redis, where nothing is marked and only the slower rule applies."""
    with app.connection_for_write() as conn:
        client = getattr(conn.default_channel, "client", None)
        if not isinstance(client, redis.Redis):
            return None
        key = life_key(settings.queue)
        with client.pipeline() as pipe:
            pipe.set(key, utcnow().isoformat(), nx=True)
            pipe.get(key)
            marked, value = pipe.execute()
    if marked:
        log.info("broker life marked (first look since the broker started empty or this deployment began)")
    began = dt.datetime.fromisoformat(value.decode())
    return began if began.tzinfo is not None else began.replace(tzinfo=dt.UTC)


def mark_life(settings: Settings) -> None:
    """Mark the broker's life before recording items (a producer), so they never look lost later."""
    try:
        life_began(settings)
    except Exception as exc:  # the broker is down: sending will say so, with what to do
        log.debug("could not mark the broker's life: %s", exc)
