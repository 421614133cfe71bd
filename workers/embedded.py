"""Embedded mode: the same pipeline run in this process, with no broker.

Not Celery's eager mode: the producer hands each recorded chunk straight to `process_chunk`. Inside
a batch of chunks (`batch()`, which the producer opens around every recorded batch: the
`BatchingEnqueue` protocol of scanner/jobs.py) up to DEEPSCAN_WORKER_CONCURRENCY chunks run at once,
as they do in a worker: one chunk decodes while the one before it waits for its last scores and
stores, instead of the cores idling at every chunk's end. The batch ends when all its chunks have,
and a chunk's failure reaches the producer there, as it did when chunks ran one by one.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager

from sqlalchemy import Engine

from scanner.errors import TransientError
from scanner.recording import ChunkItems
from scanner.settings import Settings
from workers.notify import deliver_in_background
from workers.pipeline import ChunkReport, process_chunk
from workers.runtime import WorkerRuntime, load_runtime

log = logging.getLogger(__name__)

# Pauses between tries of a chunk that failed transiently (the database restarting): a worker's
# chunk is retried by Celery with backoff; here the producer itself waits and tries again.
DEFAULT_RETRY_PAUSES_S = (2.0, 5.0, 15.0)


class EmbeddedRunner:
    """Loads the model once and scans the chunks the producer records, in this process."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.runtime: WorkerRuntime = load_runtime(settings, engine)
        self._concurrency = max(1, settings.worker_concurrency)
        self._pool: ThreadPoolExecutor | None = None  # while a batch is open
        self._in_flight: deque[Future[ChunkReport]] = deque()

    @property
    def model_version(self) -> str:
        return self.runtime.scorer.model_version

    def __call__(self, job_id: int, items: ChunkItems, /) -> None:
        """Scan one chunk: at once outside a batch; inside one, beside the chunks still running."""
        if self._pool is None:
            self._process(job_id, items)
            return
        while len(self._in_flight) >= self._concurrency:
            self._in_flight.popleft().result()  # a chunk's failure is raised here
        self._in_flight.append(self._pool.submit(self._process, job_id, items))

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Chunks sent inside overlap; the block ends when every one of them has (the first failure raised)."""
        pool = self._pool = ThreadPoolExecutor(self._concurrency, thread_name_prefix="chunk")
        try:
            yield
        except BaseException:
            self._end_batch(pool, raise_failure=False)  # the block's own error is the one to raise
            raise
        self._end_batch(pool, raise_failure=True)

    def _end_batch(self, pool: ThreadPoolExecutor, *, raise_failure: bool) -> None:
        """Wait for every chunk of the batch; then raise the first chunk's failure, if asked."""
        self._pool = None
        failure: BaseException | None = None
        while self._in_flight:
            try:
                self._in_flight.popleft().result()
            except BaseException as exc:  # the others still end, and are stored, before it is raised
                failure = failure or exc
        pool.shutdown()
        if failure is not None and raise_failure:
            raise failure

    def _process(self, job_id: int, items: ChunkItems) -> ChunkReport:
        deliver = deliver_in_background(self.runtime.settings)
        for pause_s in DEFAULT_RETRY_PAUSES_S:
            try:
                return process_chunk(self.runtime, job_id, items, deliver=deliver)
            except TransientError as exc:
                log.warning("job %s: chunk failed transiently (%s); trying again in %g s", job_id, exc, pause_s)
                time.sleep(pause_s)
        return process_chunk(self.runtime, job_id, items, deliver=deliver)  # a failure now reaches the producer
