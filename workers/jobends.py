"""Telling a waiting producer that its job ended, through the broker's Redis (publish/subscribe).

`deepscan scan --wait` used to learn of its job's end by reading the database every half second,
so a job of a few seconds was often half a second longer for the user than for the workers. Now the
worker that stores a job's last item, and the reconcile that closes one, publish the job id on a
channel of the queue; a producer subscribes before it sends its first chunk, so no end can slip by
between sending and waiting. It is a hint, never the truth: the producer reads the job's status in
the database when woken, and still every half second when no word comes (a broker that is not
Redis, a message lost while it reconnected, a job cancelled by hand).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis

from scanner.settings import Settings

log = logging.getLogger(__name__)

_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def channel(queue: str) -> str:
    return f"deepscan:{queue}:job-ended"


def _client(settings: Settings) -> redis.Redis | None:
    """A Redis client on the broker, or None when the broker is not a Redis that redis-py can reach by URL."""
    url = settings.broker_url
    if not url or not url.startswith(_REDIS_SCHEMES):
        return None
    return redis.Redis.from_url(url, socket_connect_timeout=2.0, socket_timeout=2.0)


def announce(settings: Settings, job_id: int) -> None:
    """Publish that `job_id` ended; best effort (a producer that misses it reads the database soon after)."""
    try:
        client = _client(settings)
        if client is not None:
            with client:
                client.publish(channel(settings.queue), str(job_id))
    except (redis.RedisError, OSError) as exc:
        log.debug("could not announce the end of job %s: %s", job_id, exc)


class JobEndListener:
    """A subscription to the queue's job ends, opened before the producer sends its items."""

    def __init__(self, client: redis.Redis, name: str) -> None:
        self._client = client
        self._pubsub: Any = client.pubsub(ignore_subscribe_messages=True)
        self._pubsub.subscribe(name)

    @classmethod
    def open(cls, settings: Settings) -> JobEndListener | None:
        """None when the broker cannot carry the word: the producer then reads the database on a timer."""
        try:
            client = _client(settings)
            return None if client is None else cls(client, channel(settings.queue))
        except (redis.RedisError, OSError) as exc:
            log.debug("not listening for job ends: %s", exc)
            return None

    def wait(self, job_id: int, timeout_s: float) -> None:
        """Return when `job_id` is announced ended, or after `timeout_s`, whichever comes first."""
        wanted = str(job_id).encode()
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                message = self._pubsub.get_message(timeout=left)
            except (redis.RedisError, OSError):  # the broker went away: the timer alone remains
                time.sleep(max(0.0, deadline - time.monotonic()))
                return
            if message is not None and message.get("data") == wanted:
                return

    def close(self) -> None:
        try:
            self._pubsub.close()
            self._client.close()
        except (redis.RedisError, OSError):
            pass
