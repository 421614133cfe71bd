"""Where a producer's chunks go: the workers behind the broker, or this very process without one."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine

from scanner.jobs import EnqueueFn
from scanner.producer import producer_model_version
from scanner.recording import ChunkItems
from scanner.settings import Settings
from workers.notify import Deliver, deliver_in_background

log = logging.getLogger(__name__)

# Broker commands (a message and its `task-sent` event count one each) held before one pipeline flush.
DEFAULT_PUBLISH_BATCH_COMMANDS = 2000


@dataclass(frozen=True)
class ScanBackend:
    """How to send chunks, which model will score them, and how webhooks are delivered."""

    enqueue: EnqueueFn
    model_version: str | None
    deliver: Deliver


def scan_backend(settings: Settings, engine: Engine) -> ScanBackend:
    """Celery with a broker; otherwise the embedded runner (the model is loaded here, once)."""
    if settings.embedded:
        from workers.embedded import EmbeddedRunner

        runner = EmbeddedRunner(settings, engine)
        return ScanBackend(runner.enqueue, runner.model_version, deliver_in_background(settings))
    from workers.tasks import send_webhook_later

    return ScanBackend(PipelinedChunkSender(settings), producer_model_version(settings, engine), send_webhook_later)


class PipelinedChunkSender:
    """The producer's sender: each chunk becomes one `scan_chunk` task, as `chunk_sender` sends it.

    Inside `batch()` the messages are published through one producer into a Redis pipeline
    (kombu's `Producer.batch`), so a batch of thousands of chunks costs one round trip instead of
    one each; the producer's rate then no longer waits on the broker. Outside a batch each chunk
    is sent at once. The messages are the very ones `chunk_sender` would send.
    """

    def __init__(self, settings: Settings) -> None:
        from workers.app import configure
        from workers.tasks import chunk_sender

        self._app = configure(settings)
        self._queue = settings.queue
        self._send_now = chunk_sender(settings)
        self._producer: Any = None
        self._held: list[tuple[int, ChunkItems]] = []

    def __call__(self, job_id: int, items: ChunkItems, /) -> None:
        if self._producer is None:
            self._send_now(job_id, items)
            return
        from workers.tasks import chunk_argsrepr, scan_chunk

        self._held.append((job_id, items))

        # A short argsrepr: Celery's own repr of a chunk costs more than the rest of the send, and a
        # summary keeps URLs (which may carry tokens) out of monitoring.
        scan_chunk.apply_async(
            args=[job_id, [[i, u] for i, u in items]],
            queue=self._queue,
            producer=self._producer,
            argsrepr=chunk_argsrepr(job_id, items),
            kwargsrepr="{}",
        )

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Hold the chunks sent inside and deliver them together when the block ends without error.

        When the pipeline fails (the broker went away mid-batch) every held chunk is sent again,
        one by one with `chunk_sender`'s retries: a chunk delivered twice is harmless, since the
        second delivery finds its items claimed and writes nothing. Only if that fails too does
        this raise TransientError (the items are recorded; `deepscan jobs reconcile` re-sends them).
        """
        from kombu.exceptions import BatchPublishError, OperationalError
        from redis.exceptions import ConnectionError as RedisConnectionError

        self._held = []
        try:
            with self._app.producer_or_acquire() as producer, producer.batch(max_size=DEFAULT_PUBLISH_BATCH_COMMANDS):
                self._producer = producer
                try:
                    yield
                finally:
                    self._producer = None
        except (OperationalError, BatchPublishError, RedisConnectionError) as exc:
            log.warning(
                "publishing %d chunks in one pipeline failed (%s); sending them one by one", len(self._held), exc
            )
            for job_id, items in self._held:
                self._send_now(job_id, items)
        finally:
            self._held = []
