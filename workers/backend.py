"""Where a producer's chunks go: the workers behind the broker, or this very process without one."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine

from scanner.jobs import EnqueueFn
from scanner.producer import producer_model_version
from scanner.settings import Settings
from workers.notify import Deliver, deliver_inline


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
        return ScanBackend(runner.enqueue, runner.model_version, deliver_inline(settings))
    from workers.tasks import chunk_sender, send_webhook_later

    return ScanBackend(chunk_sender(settings), producer_model_version(settings, engine), send_webhook_later)
