"""The Celery application: JSON-only messages, late acks, prefetch 1, time limits under the visibility timeout.

`celery -A workers.app worker` and `deepscan worker` both use this app. It is configured lazily
from `Settings.from_env()` the first time its configuration is read, so importing it reads no
environment.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from celery import Celery
from celery.signals import after_setup_logger

from scanner.redaction import install_log_redaction
from scanner.settings import Settings

DEFAULT_VISIBILITY_TIMEOUT_S = 3600
# Honoured by the prefork pool only (`celery -A workers.app worker`); `deepscan worker` runs the solo or
# threads pool, which ignore them: there the chunk's own budget and each item's deadline hold
# (workers/pipeline.py, scanner/deadline.py), both well below the visibility timeout.
DEFAULT_TASK_TIME_LIMIT_S = 1800
DEFAULT_TASK_SOFT_TIME_LIMIT_S = 1740
# What `deepscan beat` sends; named here so beat never imports torch.
LAUNCH_DUE = "deepscan.launch_due_schedules"
RECONCILE = "deepscan.reconcile"
SCAN_CHUNK = "deepscan.scan_chunk"


def encode_chunk(job_id: int, items: Sequence[tuple[int, str]]) -> list[Any]:
    """A SCAN_CHUNK message's args (JSON): the job id and [item_id, url] pairs, URLs whole (the worker fetches them)."""
    return [job_id, [[item_id, url] for item_id, url in items]]


def decode_chunk_items(items: Sequence[Sequence[Any]]) -> list[tuple[int, str]]:
    """The (item_id, url) pairs of a SCAN_CHUNK message's second arg; ValueError/TypeError when malformed."""
    return [(int(item_id), str(url)) for item_id, url in items]


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings derived from deepscan's own; the contracts of DESIGN.md live here."""
    return {
        "broker_url": settings.broker_url,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {"visibility_timeout": DEFAULT_VISIBILITY_TIMEOUT_S},
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_time_limit": DEFAULT_TASK_TIME_LIMIT_S,
        "task_soft_time_limit": DEFAULT_TASK_SOFT_TIME_LIMIT_S,
        "task_default_queue": settings.queue,
        "task_create_missing_queues": True,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "worker_hijack_root_logger": False,
        "timezone": "UTC",
        "enable_utc": True,
    }


@after_setup_logger.connect  # type: ignore[untyped-decorator]
def _redact_worker_logs(logger: logging.Logger, **_: Any) -> None:
    """`celery -A workers.app worker` configures its own handlers: they redact URLs too."""
    install_log_redaction(logger)


class DeepscanCelery(Celery):  # type: ignore[misc]
    def on_configure(self) -> None:
        """Called by Celery the first time the configuration is read."""
        self.conf.update(celery_config(Settings.from_env()))


app = DeepscanCelery("deepscan", include=["workers.tasks", "workers.scheduling"])


def configure(settings: Settings) -> DeepscanCelery:
    """Configure `app` from `settings` (which may differ from the environment: CLI options, tests).

    The lazy configuration is loaded first: an update made before that would be overwritten by
    `on_configure` when the configuration is first read.
    """
    moved = app.conf.broker_url != settings.broker_url
    app.conf.update(celery_config(settings))
    if moved:
        _forget_connections(app)
    return app


def _forget_connections(celery: Celery) -> None:
    """Forget the app's connection and producer pools (as Celery does after a fork): they lead to the
    broker configured before, and a process configured anew (tests, one CLI run after another) must
    send to the new one. The pools stay open in kombu's registry, keyed by broker, for a later return."""
    celery._pool = None
    amqp = celery.__dict__.get("amqp")
    if amqp is not None:
        amqp._producer_pool = None
