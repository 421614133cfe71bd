"""A worker's Prometheus metrics: items by outcome, errors by reason, batch sizes, inference latency,
and the time from enqueueing an item to storing its verdict.

The pipeline records into the process's default registry; `start_metrics_server(port)` serves it
(`deepscan worker --metrics-port PORT`). Recording costs a few counter increments and one small
query per chunk, whether or not anything scrapes.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection, Iterable
from typing import Protocol

from prometheus_client import Counter, Histogram, start_http_server
from sqlalchemy import Engine, select
from sqlalchemy.exc import SQLAlchemyError

from scanner.models import MediaItem, utcnow

log = logging.getLogger(__name__)

BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
INFERENCE_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
VERDICT_LATENCY_BUCKETS_S = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0)
MAX_REASON_CHARS = 60
DEFAULT_METRICS_HOST = "127.0.0.1"  # a scraper on another host needs --metrics-host (DEEPSCAN_METRICS_HOST)

# The places where the fetcher's reasons name a host or an address (workers/fetch.py, workers/ssrf.py).
_HOST_SLOT = re.compile(r"(?P<slot>connection to|lookup of|error with|unknown host|private address) \S+")
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_SIZE = re.compile(r"\b\d+x\d+\b")  # "1000x2000"
# A measured number; not a digit inside a word ("s3"), nor a size limit ("50 MB": a setting, so bounded).
_NUMBER = re.compile(r"(?<![A-Za-z\d.,])\d+(?:[.,]\d+)*(?![\d.,]| ?[KMGT]i?B\b)")
_STATUS = re.compile(r"(?:http|s3) \d{3}")  # "http 404", "s3 503": a bounded set, and the useful part

ITEMS = Counter("deepscan_worker_items", "Items finished by this worker, by outcome.", ["outcome"])
ERRORS = Counter("deepscan_worker_item_errors", "Items that ended `error`, by reason.", ["reason"])
BATCH_SIZE = Histogram("deepscan_worker_batch_size", "Model inputs per inference batch.", buckets=BATCH_SIZE_BUCKETS)
INFERENCE_SECONDS = Histogram(
    "deepscan_worker_inference_seconds", "Wall time of one batched model call.", buckets=INFERENCE_BUCKETS_S
)
VERDICT_LATENCY_SECONDS = Histogram(
    "deepscan_worker_enqueue_to_verdict_seconds",
    "Time from an item's enqueueing to its stored verdict or error.",
    buckets=VERDICT_LATENCY_BUCKETS_S,
)


def start_metrics_server(port: int, host: str = DEFAULT_METRICS_HOST) -> None:
    """Serve /metrics on `host:port` from a daemon thread (loopback unless told otherwise)."""
    start_http_server(port, addr=host)
    log.info("worker metrics on http://%s:%d/metrics", host, port)


def reason_label(reason: str) -> str:
    """A bounded label for an error reason: the moderator-facing reasons are a short fixed list ("http 404",
    "not an image or video", …); unexpected failures keep only their head, not their varying detail.

    What varies from item to item inside a reason (host names, addresses, quoted names, measured numbers)
    becomes a placeholder: every distinct label is a time series kept forever by Prometheus, and a
    host in a label would also tell anyone who can scrape which sites were scanned.
    """
    head = reason.split(": ", 1)[0] if reason.startswith(("fetch failed", "decode failed")) else reason
    if not _STATUS.fullmatch(head):
        head = _HOST_SLOT.sub(r"\g<slot> HOST", head)
        head = _NUMBER.sub("N", _SIZE.sub("NxN", _QUOTED.sub("'…'", head)))
    return head.strip()[:MAX_REASON_CHARS] or "unknown"


class ChunkCounts(Protocol):
    """What one processed chunk counted (workers.pipeline.ChunkReport)."""

    done: int
    reused: int
    skipped: int
    lost: int
    errors: dict[int, str]


def record_chunk(engine: Engine, report: ChunkCounts, stored: Collection[int]) -> None:
    """Everything a stored chunk tells the metrics."""
    record_items(
        done=report.done, reused=report.reused, skipped=report.skipped, lost=report.lost, errors=report.errors.values()
    )
    record_verdict_latency(engine, stored)


def record_items(*, done: int, reused: int, skipped: int, lost: int, errors: Iterable[str]) -> None:
    ITEMS.labels("done").inc(done - reused)
    ITEMS.labels("reused").inc(reused)
    ITEMS.labels("skipped").inc(skipped)
    ITEMS.labels("lost").inc(lost)
    for reason in errors:
        ITEMS.labels("error").inc()
        ERRORS.labels(reason_label(reason)).inc()


def record_batch(size: int, seconds: float) -> None:
    BATCH_SIZE.observe(size)
    INFERENCE_SECONDS.observe(seconds)


def record_verdict_latency(engine: Engine, item_ids: Collection[int]) -> None:
    """Observe enqueue-to-verdict time of items just stored (one small query; never fails the chunk)."""
    if not item_ids:
        return
    now = utcnow()
    try:
        with engine.connect() as conn:
            enqueued = conn.scalars(
                select(MediaItem.enqueued_at).where(
                    MediaItem.id.in_(list(item_ids)), MediaItem.enqueued_at.is_not(None)
                )
            ).all()
    except SQLAlchemyError as exc:
        log.debug("verdict latency not recorded: %s", exc)
        return
    for when in enqueued:
        if when is not None:
            VERDICT_LATENCY_SECONDS.observe(max((now - when).total_seconds(), 0.0))
