"""Webhooks: a JSON POST when a job finishes and when an item is flagged (its score reaches the threshold).

A webhook URL carries its receiver's token, so it never appears in an error message or a log
line; the events carry no credentials either (item URLs and job names are redacted).

Deliveries follow the fetching SSRF rules (private addresses refused unless allowed, checked on
the connected socket) and never follow redirects. Failures are retried with exponential
backoff: by a Celery task in distributed mode, inline in embedded mode.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import requests
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from scanner.errors import PermanentError, TransientError
from scanner.jobs import job_counts
from scanner.models import ScanJob
from scanner.redaction import redact_text, redact_url
from scanner.settings import Settings
from workers.ssrf import make_http_session

log = logging.getLogger(__name__)

DEFAULT_WEBHOOK_TIMEOUT_S = 10.0
DEFAULT_INLINE_TRIES = 4
DEFAULT_INLINE_BACKOFF_S = 1.0

Deliver = Callable[[str, dict[str, Any]], None]


def job_finished_payload(engine: Engine, job_id: int) -> tuple[str | None, dict[str, Any]]:
    """The job's webhook URL (None when it has none) and the `job.finished` event with its counts."""
    with Session(engine) as session:
        job = session.get_one(ScanJob, job_id)
        counts = job_counts(session, job_id)
        elapsed = (job.finished_at - job.started_at).total_seconds() if job.finished_at and job.started_at else None
        return job.webhook_url, {
            "event": "job.finished",
            "job_id": job.id,
            "name": redact_text(job.name),  # jobs named before names were redacted at creation
            "status": job.status,
            "model_version": job.model_version,
            "counts": {
                "total": counts.total,
                "done": counts.done,
                "error": counts.error,
                "cancelled": counts.cancelled,
                "flagged": counts.flagged,
                "reused": counts.reused,
            },
            "started_at": job.started_at.isoformat() if job.started_at else None,
            "finished_at": job.finished_at.isoformat() if job.finished_at else None,
            "elapsed_s": elapsed,
        }


def item_flagged_payload(job_id: int, item_id: int, url: str, score: float, threshold: float) -> dict[str, Any]:
    """The `item.flagged` event; the item's URL without its user info or query (a receiver gets no credentials)."""
    return {
        "event": "item.flagged",
        "job_id": job_id,
        "item_id": item_id,
        "url": redact_url(url),
        "score": score,
        "threshold": threshold,
        "verdict": "fake",
    }


def post_json(url: str, payload: dict[str, Any], settings: Settings) -> None:
    """POST once; TransientError for network failures, 429 and 5xx; PermanentError for other refusals.

    The errors name the receiver by its redacted URL: the token in the real one must not reach logs.
    """
    shown = redact_url(url)
    with make_http_session(settings) as session:
        try:
            response = session.post(url, json=payload, timeout=DEFAULT_WEBHOOK_TIMEOUT_S, allow_redirects=False)
        except requests.RequestException as exc:
            raise TransientError(f"webhook {shown} unreachable: {type(exc).__name__}") from None
    if response.status_code == 429 or response.status_code >= 500:
        raise TransientError(f"webhook {shown} answered http {response.status_code}")
    if response.status_code >= 300:
        raise PermanentError(f"webhook {shown} refused the event: http {response.status_code}")


def deliver_inline(settings: Settings) -> Deliver:
    """Embedded mode: deliver now, retrying transient failures with exponential backoff."""

    def deliver(url: str, payload: dict[str, Any]) -> None:
        for attempt in range(DEFAULT_INLINE_TRIES):
            try:
                post_json(url, payload, settings)
                return
            except TransientError as exc:
                if attempt == DEFAULT_INLINE_TRIES - 1:
                    log.warning("giving up on %s event: %s", payload["event"], exc)
                    return
                time.sleep(DEFAULT_INLINE_BACKOFF_S * 2**attempt)
            except PermanentError as exc:
                log.warning("%s event not delivered: %s", payload["event"], exc)
                return

    return deliver


def job_finished_notifier(engine: Engine, deliver: Deliver) -> Callable[[int], None]:
    """A callback that sends `job.finished` for a job that has a webhook URL."""

    def notify(job_id: int) -> None:
        url, payload = job_finished_payload(engine, job_id)
        if url:
            deliver(url, payload)

    return notify
