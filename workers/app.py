"""The Celery application: JSON-only messages, late acks, prefetch 1, time limits under the visibility timeout.

`celery -A workers.app worker` and `deepscan worker` both use this app. It is configured lazily
from `Settings.from_env()` the first time its configuration is read, so importing it reads no
environment.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from scanner.settings import Settings

DEFAULT_VISIBILITY_TIMEOUT_S = 3600
DEFAULT_TASK_TIME_LIMIT_S = 1800  # below the visibility timeout, or Redis would redeliver running tasks
DEFAULT_TASK_SOFT_TIME_LIMIT_S = 1740
LAUNCH_DUE = "deepscan.launch_due_schedules"  # what `deepscan beat` sends; named here so beat never imports torch


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


class DeepscanCelery(Celery):  # type: ignore[misc]
    def on_configure(self) -> None:
        """Called by Celery the first time the configuration is read."""
        self.conf.update(celery_config(Settings.from_env()))


app = DeepscanCelery("deepscan", include=["workers.tasks"])
