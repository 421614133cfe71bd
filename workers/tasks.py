"""Celery tasks: thin wrappers that parse the message and call the plain pipeline functions."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from celery.signals import worker_init, worker_shutting_down
from kombu.exceptions import OperationalError

from scanner.errors import TRANSIENT_DATABASE_ERRORS, PermanentError, TransientError
from scanner.jobs import EnqueueFn
from scanner.redaction import redact_url
from scanner.settings import Settings
from workers import broker, jobends
from workers.app import RECONCILE, SCAN_CHUNK, app, configure, decode_chunk_items, encode_chunk
from workers.notify import job_finished_notifier, post_json

if TYPE_CHECKING:
    from workers.runtime import WorkerRuntime

log = logging.getLogger(__name__)


def get_runtime() -> WorkerRuntime:
    """The process's runtime (model, database, clients), loaded on first use.

    Imported here rather than at the top: a producer imports this module only to send tasks, and
    must not pay for loading torch and torchvision (about 3 s of a `deepscan scan` on a small CPU).
    """
    from workers.runtime import get_runtime as loaded

    return loaded()


@worker_init.connect
def _load_model_at_start(**_: Any) -> None:
    """Load the checkpoint before taking work: a worker without a usable model refuses to start."""
    get_runtime()


@worker_shutting_down.connect
def _stop_chunks(**_: Any) -> None:
    """SIGTERM (or Ctrl-C) on a worker: cut running fetches off and have chunks hand back their unfinished
    items, so the worker exits within seconds instead of waiting for its chunks to finish."""
    from workers.runtime import loaded_runtime

    runtime = loaded_runtime()
    if runtime is not None:
        runtime.stop()


@app.task(
    name=SCAN_CHUNK,
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(TransientError, *TRANSIENT_DATABASE_ERRORS, OperationalError),
    retry_backoff=2,
    retry_backoff_max=120,
    retry_jitter=True,
    max_retries=8,
)
def scan_chunk(self: Any, job_id: int, items: list[list[Any]]) -> dict[str, int]:
    """Scan one chunk of a job's items; `items` is a list of [item_id, url] pairs (JSON)."""
    pairs = decode_chunk_items(items)
    log.info("job %s: chunk of %d items (delivery %d)", job_id, len(pairs), self.request.retries + 1)
    from workers.pipeline import process_chunk

    rt = get_runtime()
    report = process_chunk(rt, int(job_id), pairs, deliver=send_webhook_later)
    if report.job_finished:
        jobends.announce(rt.settings, int(job_id))  # a producer waiting on it need not wait for its next look
    return {"done": report.done, "error": report.error, "reused": report.reused, "skipped": report.skipped}


@app.task(
    name="deepscan.webhook",
    autoretry_for=(TransientError,),
    retry_backoff=2,
    retry_backoff_max=300,
    retry_jitter=True,
    max_retries=8,
    acks_late=True,
)
def send_webhook(url: str, payload: dict[str, Any]) -> None:
    """POST one signed event; transient failures are retried with exponential backoff, refusals are logged.

    The payload carries its event id, so every retry is the same event to the receiver.
    """
    try:
        post_json(url, payload, get_runtime().settings)
    except PermanentError as exc:
        log.warning("job %s: %s event not delivered: %s", payload.get("job_id"), payload.get("event"), exc)


def send_webhook_later(url: str, payload: dict[str, Any]) -> None:
    """Queue a webhook delivery so a slow receiver never holds up scanning."""
    shown = f"[{redact_url(url)!r}, <{payload.get('event')} event of job {payload.get('job_id')}>]"
    send_webhook.apply_async(args=[url, payload], argsrepr=shown, kwargsrepr="{}")  # no token in monitoring


def chunk_argsrepr(job_id: int, items: Sequence[tuple[int, str]]) -> str:
    """What monitoring (Flower, `celery inspect`, task events) shows of a chunk: ids, never URLs.

    The message itself carries the URLs whole (the worker fetches them); its `argsrepr` header is
    what people read, and Celery's default repr would print every URL with its tokens.
    """
    first = f" from id {items[0][0]}" if items else ""
    return f"[{job_id}, <{len(items)} items{first}>]"


def chunk_sender(settings: Settings) -> EnqueueFn:
    """The producer's `enqueue`: sends each chunk to the workers' queue as ids and URLs (JSON).

    Made before the producer records its items: it marks the broker's life first (workers/broker.py).
    """
    configure(settings)
    broker.mark_life(settings)

    def send(job_id: int, items: list[tuple[int, str]]) -> None:
        try:
            scan_chunk.apply_async(
                args=encode_chunk(job_id, items),
                queue=settings.queue,
                retry=True,
                argsrepr=chunk_argsrepr(job_id, items),
                kwargsrepr="{}",
            )
        except OperationalError as exc:  # kombu's: the broker is unreachable
            raise TransientError(
                f"broker unreachable ({exc}); the items are recorded: run `deepscan jobs reconcile` once it is back"
            ) from exc

    return send


@app.task(name=RECONCILE, acks_late=True, ignore_result=True)
def reconcile_items() -> dict[str, int]:
    """Sent by `deepscan beat` every DEEPSCAN_RECONCILE_INTERVAL_S: heal what crashes and lost messages left.

    Items under an expired lease (a killed or stalled worker) are always re-sent. Queued items whose
    message is gone are re-sent too (workers/broker.py): those sent before the broker's current life
    began (it restarted empty), at once; those queued DEEPSCAN_REQUEUE_AFTER_S before the oldest
    chunk still waiting in the queue (a worker died holding their message). Queued items behind the
    oldest chunk waiting are simply waiting their turn, however long the queue.
    """
    from scanner.jobs import reconcile

    rt = get_runtime()
    settings = rt.settings
    view = broker.look(settings)
    report = reconcile(
        rt.engine,
        enqueue=chunk_sender(settings),
        queued_older_than=dt.timedelta(seconds=settings.requeue_after_s) if view.waiting == 0 else None,
        sent_before=broker.lost_before(view, rt.engine, margin=dt.timedelta(seconds=settings.requeue_after_s)),
        on_finished=_announced(settings, job_finished_notifier(rt.engine, send_webhook_later)),
    )
    if report.items or report.finished_jobs:
        log.info(
            "reconcile: re-sent %d items with expired leases and %d lost queued items; closed jobs %s",
            report.expired, report.lost, report.finished_jobs or "none",
        )  # fmt: skip
    return {"expired": report.expired, "lost": report.lost, "finished_jobs": len(report.finished_jobs)}


def _announced(settings: Settings, notify: Callable[[int], None]) -> Callable[[int], None]:
    """`notify`, then word to any producer waiting on the job (workers/jobends.py)."""

    def on_finished(job_id: int) -> None:
        notify(job_id)
        jobends.announce(settings, job_id)

    return on_finished
