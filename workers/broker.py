"""What the broker still holds, read cheaply enough for every reconcile: which queued items lost their message.

A queued item's message can vanish two ways, and neither leaves a trace in the database:

- **The broker lost its data:** a Redis restarted without persistence, flushed, or failed over to
  an empty replica. To see that, the first one to talk to the broker in its life (a producer about
  to record items, or the periodic reconcile) stores the time in a key of its own, unless the key
  is there already. The key goes with everything else; the next look stores a new time. Items
  queued before that time were sent to a broker that no longer exists.
- **A worker died holding a message it had not started:** a prefetched message sits in the
  broker's unacknowledged set until the visibility timeout (an hour) brings it back.

Redis delivers a queue in the order it was sent (kombu pushes on the left, pops on the right), so
an item queued before the oldest chunk still waiting cannot be waiting behind it: either a worker
took its message (and claims it within moments, unless that worker died) or the message is gone.
Reconcile re-sends such items once they are DEEPSCAN_REQUEUE_AFTER_S older than the oldest chunk
waiting (now, when none waits); the margin leaves a live worker time to claim what it took. Items
queued after it are waiting their turn, however long the queue, and are left alone.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis
from kombu.exceptions import ChannelError
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from scanner.models import MediaItem, utcnow
from scanner.settings import Settings
from workers.app import SCAN_CHUNK, app, decode_chunk_items

log = logging.getLogger(__name__)

DEFAULT_PEEK_MESSAGES = 32  # messages read at the queue's oldest end to find a chunk (beat's tasks sit among them)


@dataclass(frozen=True)
class BrokerView:
    """What one look at the broker saw."""

    waiting: int  # messages waiting in the queue (reserved and running ones are not counted)
    life_began: dt.datetime | None  # None: not Redis, nothing is marked
    oldest_chunk: list[int] | None  # item ids of the oldest chunk waiting; [] none waits; None unknown


def life_key(queue: str) -> str:
    return f"deepscan:{queue}:broker-life-began"


def look(settings: Settings) -> BrokerView:
    """Count the queue, read (or mark) the broker's life, and peek at the oldest chunk waiting."""
    with app.connection_for_write(settings.broker_url) as conn:
        channel = conn.default_channel
        try:
            waiting = int(channel.queue_declare(queue=settings.queue, passive=True).message_count)
        except ChannelError:  # Redis keeps no key for an empty list: the queue "does not exist"
            waiting = 0
        client = getattr(channel, "client", None)
        if not isinstance(client, redis.Redis):
            return BrokerView(waiting, None, None)
        oldest = client.lrange(settings.queue, -DEFAULT_PEEK_MESSAGES, -1)
        return BrokerView(waiting, _life_began(client, settings.queue), _oldest_chunk(reversed(oldest)))


def mark_life(settings: Settings) -> None:
    """Mark the broker's life before items are recorded and sent (a producer's sender), so that a
    first look by reconcile never takes them for items sent to an earlier life."""
    try:
        with app.connection_for_write(settings.broker_url) as conn:
            client = getattr(conn.default_channel, "client", None)
            if isinstance(client, redis.Redis):
                _life_began(client, settings.queue)
    except Exception as exc:  # the broker is down: sending will say so, with what to do
        log.debug("could not mark the broker's life: %s", exc)


def lost_before(view: BrokerView, engine: Engine, *, margin: dt.timedelta) -> dt.datetime | None:
    """Queued items enqueued before this time lost their message (None: no such time is known).

    Every chunk waiting was sent in the broker's current life, so that life began no later than the
    oldest of them: on a first look (a new deployment, the marker just set) a backlog waiting in
    the queue is therefore never taken for lost.
    """
    oldest = None if view.oldest_chunk is None else _enqueued_at(engine, view.oldest_chunk)
    times = [] if oldest is None else [oldest - margin]
    if view.life_began is not None:
        times.append(view.life_began if oldest is None else min(view.life_began, oldest))
    return max(times, default=None)


def _life_began(client: redis.Redis, queue: str) -> dt.datetime:
    key = life_key(queue)
    with client.pipeline() as pipe:
        pipe.set(key, utcnow().isoformat(), nx=True)
        pipe.get(key)
        marked, value = pipe.execute()
    if marked:
        log.info("broker life marked (first look since the broker started empty or this deployment began)")
    return dt.datetime.fromisoformat(value.decode())


def _oldest_chunk(payloads: Any) -> list[int] | None:
    """Item ids of the first scan_chunk message among `payloads` (oldest first); [] when there are none."""
    seen = False
    for payload in payloads:
        seen = True
        ids = _chunk_item_ids(payload)
        if ids:
            return ids
    return None if seen else []


def _chunk_item_ids(payload: bytes) -> list[int] | None:
    """The item ids a kombu/Celery (protocol 2, JSON) scan_chunk message carries; None for anything else."""
    try:
        message = json.loads(payload)
        if message.get("headers", {}).get("task") != SCAN_CHUNK:
            return None
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
        return [item_id for item_id, _url in decode_chunk_items(args[1])]
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def _enqueued_at(engine: Engine, item_ids: Sequence[int]) -> dt.datetime:
    """When the chunk holding `item_ids` was sent, as the database recorded it (now if unknown)."""
    with Session(engine) as session:
        sent = session.scalar(select(func.min(MediaItem.enqueued_at)).where(MediaItem.id.in_(item_ids)))
    return sent if sent is not None else utcnow()
