"""Embedded mode: the same pipeline run in this process, chunk by chunk, with no broker.

Not Celery's eager mode: the producer hands each recorded chunk straight to `process_chunk`.
"""

from __future__ import annotations

from sqlalchemy import Engine

from scanner.settings import Settings
from workers.notify import deliver_in_background
from workers.pipeline import ChunkReport, process_chunk
from workers.runtime import WorkerRuntime, load_runtime


class EmbeddedRunner:
    """Loads the model once and processes chunks synchronously as the producer records them."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.runtime: WorkerRuntime = load_runtime(settings, engine)
        self.report = ChunkReport()

    @property
    def model_version(self) -> str:
        return self.runtime.scorer.model_version

    def enqueue(self, job_id: int, items: list[tuple[int, str]]) -> None:
        chunk = process_chunk(self.runtime, job_id, items, deliver=deliver_in_background(self.runtime.settings))
        self.report.done += chunk.done
        self.report.error += chunk.error
        self.report.reused += chunk.reused
        self.report.inferred_units += chunk.inferred_units
