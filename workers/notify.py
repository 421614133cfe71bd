"""Webhooks: a signed JSON POST when a job finishes and when an item is flagged (its score reaches the threshold).

A webhook URL carries its receiver's token, so it never appears in an error message or a log
line; the events carry no credentials either (item URLs and job names are redacted).

Every delivery is signed the way Stripe and GitHub sign theirs (docs/webhooks.md has a receiver):
`Deepscan-Timestamp` (Unix seconds), `Deepscan-Event-Id` (the same on every retry of one event,
so a receiver can drop duplicates) and `Deepscan-Signature: v1=HEX`, HEX being the HMAC-SHA256,
keyed with DEEPSCAN_WEBHOOK_SECRET, of `TIMESTAMP.BODY` (the exact bytes sent). Nothing is sent
unsigned.

Deliveries follow the fetching SSRF rules (private addresses refused unless allowed, checked on
the connected socket) and never follow redirects. They never hold up a scan: a Celery task
retries them with exponential backoff in distributed mode; in embedded mode one background
thread does, and the command waits for it (up to DEFAULT_WEBHOOK_DRAIN_S) only once it is done.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from scanner.errors import PermanentError, TransientError
from scanner.jobs import job_counts
from scanner.models import ScanJob, utcnow
from scanner.redaction import redact_text, redact_url
from scanner.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_WEBHOOK_TIMEOUT_S = 10.0
DEFAULT_BACKGROUND_TRIES = 4
DEFAULT_BACKGROUND_BACKOFF_S = 1.0  # doubled after each failed try: 1, 2, 4 s
DEFAULT_WEBHOOK_DRAIN_S = 30.0  # how long a finishing command waits for deliveries still in flight
EVENT_ID_HEADER = "Deepscan-Event-Id"
TIMESTAMP_HEADER = "Deepscan-Timestamp"
SIGNATURE_HEADER = "Deepscan-Signature"
SIGNATURE_VERSION = "v1"
NO_SECRET_HINT = (
    "webhook deliveries are signed: set DEEPSCAN_WEBHOOK_SECRET (e.g. `openssl rand -hex 32`) here and in "
    "every worker, and give the receiver the same secret (docs/webhooks.md)"
)

Deliver = Callable[[str, dict[str, Any]], None]


def new_event(event: str, **fields: Any) -> dict[str, Any]:
    """An event body: its type, a unique id (kept across retries) and when it happened."""
    return {"event": event, "id": f"evt_{uuid.uuid4().hex}", "created_at": utcnow().isoformat(), **fields}


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The hex HMAC-SHA256 of `TIMESTAMP.BODY` keyed with `secret`."""
    return hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def signed_request(secret: str, payload: dict[str, Any], *, now: float | None = None) -> tuple[bytes, dict[str, str]]:
    """The exact body bytes to POST and the headers that sign them."""
    body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    timestamp = str(int(time.time() if now is None else now))
    headers = {
        "Content-Type": "application/json",
        EVENT_ID_HEADER: str(payload.get("id", "")),
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: f"{SIGNATURE_VERSION}={signature(secret, timestamp, body)}",
    }
    return body, headers


def job_finished_payload(engine: Engine, job_id: int) -> tuple[str | None, dict[str, Any]]:
    """The job's webhook URL (None when it has none) and the `job.finished` event with its counts."""
    with Session(engine) as session:
        job = session.get_one(ScanJob, job_id)
        counts = job_counts(session, job_id)
        elapsed = (job.finished_at - job.started_at).total_seconds() if job.finished_at and job.started_at else None
        return job.webhook_url, new_event(
            "job.finished",
            job_id=job.id,
            name=redact_text(job.name),  # jobs named before names were redacted at creation
            status=job.status,
            model_version=job.model_version,
            counts={
                "total": counts.total,
                "done": counts.done,
                "error": counts.error,
                "cancelled": counts.cancelled,
                "flagged": counts.flagged,
                "reused": counts.reused,
            },
            started_at=job.started_at.isoformat() if job.started_at else None,
            finished_at=job.finished_at.isoformat() if job.finished_at else None,
            elapsed_s=elapsed,
        )


def item_flagged_payload(job_id: int, item_id: int, url: str, score: float, threshold: float) -> dict[str, Any]:
    """The `item.flagged` event; the item's URL without its user info or query (a receiver gets no credentials)."""
    return new_event(
        "item.flagged",
        job_id=job_id,
        item_id=item_id,
        url=redact_url(url),
        score=score,
        threshold=threshold,
        verdict="fake",
    )


def post_json(url: str, payload: dict[str, Any], settings: Settings) -> None:
    """POST one signed event; TransientError for network failures, 429 and 5xx; PermanentError otherwise.

    The errors name the receiver by its redacted URL: the token in the real one must not reach logs.
    """
    import requests  # here: producers import this module, and only a delivery needs an HTTP client

    from workers.ssrf import make_http_session

    shown = redact_url(url)
    if not settings.webhook_secret:
        raise PermanentError(f"webhook {shown} not sent: {NO_SECRET_HINT}")
    body, headers = signed_request(settings.webhook_secret, payload)
    with make_http_session(settings) as session:
        try:
            response = session.post(
                url, data=body, headers=headers, timeout=DEFAULT_WEBHOOK_TIMEOUT_S, allow_redirects=False
            )
        except requests.RequestException as exc:
            raise TransientError(f"webhook {shown} unreachable: {type(exc).__name__}") from None
    if response.status_code == 429 or response.status_code >= 500:
        raise TransientError(f"webhook {shown} answered http {response.status_code}")
    if response.status_code >= 300:
        raise PermanentError(f"webhook {shown} refused the event: http {response.status_code}")


class BackgroundDelivery:
    """Embedded mode: one daemon thread posts events in order, retrying transient failures with backoff.

    The scan only appends to a queue, so a slow or dead receiver never slows it down.
    """

    def __init__(self) -> None:
        self._queue: deque[tuple[str, dict[str, Any], Settings]] = deque()
        self._changed = threading.Condition()
        self._busy = False
        self._thread: threading.Thread | None = None

    def submit(self, url: str, payload: dict[str, Any], settings: Settings) -> None:
        with self._changed:
            self._queue.append((url, payload, settings))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="deepscan-webhooks", daemon=True)
                self._thread.start()
            self._changed.notify_all()

    def pending(self) -> int:
        with self._changed:
            return len(self._queue) + self._busy

    def drain(self, timeout_s: float) -> int:
        """Wait until every submitted event was delivered or given up on; returns how many are left."""
        with self._changed:
            self._changed.wait_for(lambda: not self._queue and not self._busy, timeout=timeout_s)
            return len(self._queue) + self._busy

    def _run(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: bool(self._queue))
                url, payload, settings = self._queue.popleft()
                self._busy = True
            try:
                deliver_with_retries(url, payload, settings)
            finally:
                with self._changed:
                    self._busy = False
                    self._changed.notify_all()


def deliver_with_retries(url: str, payload: dict[str, Any], settings: Settings) -> None:
    """Post `payload`, retrying transient failures DEFAULT_BACKGROUND_TRIES times with backoff; logs what fails."""
    for attempt in range(DEFAULT_BACKGROUND_TRIES):
        try:
            post_json(url, payload, settings)
            return
        except TransientError as exc:
            if attempt == DEFAULT_BACKGROUND_TRIES - 1:
                log.warning("job %s: giving up on %s event: %s", payload.get("job_id"), payload["event"], exc)
                return
            time.sleep(DEFAULT_BACKGROUND_BACKOFF_S * 2**attempt)
        except PermanentError as exc:
            log.warning("job %s: %s event not delivered: %s", payload.get("job_id"), payload["event"], exc)
            return


_BACKGROUND = BackgroundDelivery()


def deliver_in_background(settings: Settings) -> Deliver:
    """Embedded mode's `deliver`: hands the event to this process's delivery thread and returns at once."""

    def deliver(url: str, payload: dict[str, Any]) -> None:
        _BACKGROUND.submit(url, payload, settings)

    return deliver


def drain_background_deliveries(timeout_s: float = DEFAULT_WEBHOOK_DRAIN_S) -> int:
    """Wait (at most `timeout_s`) for this process's embedded deliveries; returns how many never finished."""
    if _BACKGROUND.pending():
        log.info("waiting up to %.0f s for %d webhook deliveries", timeout_s, _BACKGROUND.pending())
    return _BACKGROUND.drain(timeout_s)


def job_finished_notifier(engine: Engine, deliver: Deliver) -> Callable[[int], None]:
    """A callback that sends `job.finished` for a job that has a webhook URL."""

    def notify(job_id: int) -> None:
        url, payload = job_finished_payload(engine, job_id)
        if url:
            deliver(url, payload)

    return notify
