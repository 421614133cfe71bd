"""Where a producer's chunks go: the workers behind the broker, or this very process without one."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine

from scanner.producer import ScanBackend, producer_model_version
from scanner.recording import ChunkItems
from scanner.settings import Settings
from workers.jobends import JobEndListener
from workers.notify import deliver_in_background, job_finished_notifier

log = logging.getLogger(__name__)

# Broker commands (a message and its `task-sent` event count one each) held before one pipeline flush.
DEFAULT_PUBLISH_BATCH_COMMANDS = 2000


def scan_backend(settings: Settings, engine: Engine) -> ScanBackend:
    """Celery with a broker; otherwise the embedded runner (the model is loaded here, once).

    A job that finishes is announced to its webhook, in the background or through a task."""
    if settings.embedded:
        from workers.embedded import EmbeddedRunner  # torch and the model: only where chunks are scanned here

        runner = EmbeddedRunner(settings, engine)
        deliver = deliver_in_background(settings)
        return ScanBackend(runner, runner.model_version, job_finished_notifier(engine, deliver))
    from workers.tasks import send_webhook_later  # Celery: loaded only when there is a broker to send to

    model_version = producer_model_version(settings, engine)
    notify = job_finished_notifier(engine, send_webhook_later)
    return ScanBackend(
        PipelinedChunkSender(settings), model_version, notify, listen_for_job_ends=lambda: JobEndListener.open(settings)
    )


class PipelinedChunkSender:
    """The producer's sender: each chunk becomes one `scan_chunk` task, as `chunk_sender` sends it.

    Inside `batch()` the messages are published through one producer into a Redis pipeline
    (kombu's `Producer.batch`), so a batch of thousands of chunks costs one round trip instead of
    one each; the producer's rate then no longer waits on the broker. Outside a batch each chunk
    is sent at once. The messages are the very ones `chunk_sender` would send.
    """

    def __init__(self, settings: Settings) -> None:
        # Celery and the tasks load only when there is a broker: an embedded scan never needs them.
        from workers.app import configure, encode_chunk
        from workers.tasks import chunk_argsrepr, chunk_sender, scan_chunk

        self._app = configure(settings)
        self._queue = settings.queue
        self._send_now = chunk_sender(settings)
        self._scan_chunk, self._argsrepr, self._encode = scan_chunk, chunk_argsrepr, encode_chunk
        self._producer: Any = None
        self._held: list[tuple[int, ChunkItems]] = []

    def __call__(self, job_id: int, items: ChunkItems, /) -> None:
        if self._producer is None:
            self._send_now(job_id, items)
            return
        self._held.append((job_id, items))

        # A short argsrepr: Celery's own repr of a chunk costs more than the rest of the send, and a
        # summary keeps URLs (which may carry tokens) out of monitoring.
        self._scan_chunk.apply_async(
            args=self._encode(job_id, items),
            queue=self._queue,
            producer=self._producer,
            argsrepr=self._argsrepr(job_id, items),
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
        # The broker's clients: loaded only in distributed mode.
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
