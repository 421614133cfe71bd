"""Embedded mode: the same pipeline run in this process, chunk by chunk, with no broker.

Not Celery's eager mode: the producer hands each recorded chunk straight to `process_chunk`.
"""

from __future__ import annotations

import logging
import time

from sqlalchemy import Engine

from scanner.errors import TransientError
from scanner.settings import Settings
from workers.notify import deliver_in_background
from workers.pipeline import ChunkReport, process_chunk
from workers.runtime import WorkerRuntime, load_runtime

log = logging.getLogger(__name__)

# Pauses between tries of a chunk that failed transiently (the database restarting): a worker's
# chunk is retried by Celery with backoff; here the producer itself waits and tries again.
DEFAULT_RETRY_PAUSES_S = (2.0, 5.0, 15.0)


class EmbeddedRunner:
    """Loads the model once and processes chunks synchronously as the producer records them."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.runtime: WorkerRuntime = load_runtime(settings, engine)
        self.report = ChunkReport()

    @property
    def model_version(self) -> str:
        return self.runtime.scorer.model_version

    def enqueue(self, job_id: int, items: list[tuple[int, str]]) -> None:
        chunk = self._process(job_id, items)
        self.report.done += chunk.done
        self.report.error += chunk.error
        self.report.reused += chunk.reused
        self.report.inferred_units += chunk.inferred_units

    def _process(self, job_id: int, items: list[tuple[int, str]]) -> ChunkReport:
        deliver = deliver_in_background(self.runtime.settings)
        for pause_s in DEFAULT_RETRY_PAUSES_S:
            try:
                return process_chunk(self.runtime, job_id, items, deliver=deliver)
            except TransientError as exc:
                log.warning("job %s: chunk failed transiently (%s); trying again in %g s", job_id, exc, pause_s)
                time.sleep(pause_s)
        return process_chunk(self.runtime, job_id, items, deliver=deliver)  # a failure now reaches the producer
