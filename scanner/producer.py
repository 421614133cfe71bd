"""The producer: expand sources, create the job, record and enqueue its items, optionally wait.

`enqueue` is given by the caller: Celery's sender in distributed mode, the in-process runner in
embedded mode. This module never imports the workers.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session
from tqdm import tqdm

from scanner.errors import DeepscanError
from scanner.jobs import (
    EnqueueFn,
    EnqueueReport,
    JobCounts,
    ScanOptions,
    add_items,
    create_job,
    fail_job,
    job_counts,
    latest_model_version,
)
from scanner.models import ScanJob
from scanner.schedules import only_new_or_changed
from scanner.settings import Settings
from scanner.sources import MediaRef, expand_sources
from scanner.webhooks import validate_webhook_url

DEFAULT_POLL_INTERVAL_S = 0.5
DEFAULT_HASH_BLOCK_BYTES = 1 << 20


class JobEndWait(Protocol):
    """Word that a job may have ended, sooner than the next look at the database would tell."""

    def wait(self, job_id: int, timeout_s: float) -> None:
        """Return when `job_id` may have ended, or after `timeout_s`."""

    def close(self) -> None: ...


@dataclass(frozen=True)
class ScanBackend:
    """How to send chunks, which model will score them, and what to call when a job has finished.

    `listen_for_job_ends`, when given, opens a JobEndWait before the first chunk is sent (None when it
    cannot): a producer that waits for its job then learns of the end as it happens.
    """

    enqueue: EnqueueFn
    model_version: str | None
    on_job_finished: Callable[[int], None] | None = None
    listen_for_job_ends: Callable[[], JobEndWait | None] | None = None


@dataclass(frozen=True)
class ScanRequest:
    """What a user asks to scan: the sources, how, under which name, and whom to tell at the end.

    A malformed webhook URL is refused here (InvalidInputError), whichever front end asks. `require_media`:
    sources with no media at all are a mistake (`scanner.launch` refuses them); a scheduled run's are not,
    since an incremental run over a folder with nothing in it yet is an ordinary, empty run.
    """

    sources: Sequence[str]
    options: ScanOptions = field(default_factory=ScanOptions)
    name: str | None = None
    webhook: str | None = None
    require_media: bool = True

    def __post_init__(self) -> None:
        if self.webhook is not None:
            object.__setattr__(self, "webhook", validate_webhook_url(self.webhook))


@dataclass(frozen=True)
class ScanResult:
    job_id: int
    status: str
    counts: JobCounts
    elapsed_s: float
    error: str | None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(DEFAULT_HASH_BLOCK_BYTES):
            digest.update(block)
    return digest.hexdigest()


def producer_model_version(settings: Settings, engine: Engine) -> str | None:
    """The model the workers will use: the configured checkpoint's hash, else the last one registered."""
    if settings.checkpoint is not None and settings.checkpoint.is_file():
        return file_sha256(settings.checkpoint)
    with Session(engine) as session:
        return latest_model_version(session)


def iter_refs(sources: Sequence[str], settings: Settings, options: ScanOptions, stdin: TextIO) -> Iterator[MediaRef]:
    """Every media reference of `sources`; `@FILE` stands for the URLs listed in FILE (`@-`: stdin).

    The sources are checked before this returns: a missing path or unknown bucket raises
    ConfigError here, before any job exists.
    """
    names = [s for s in sources if not s.startswith("@")]
    lists = [s[1:] for s in sources if s.startswith("@")]
    refs = expand_sources(
        names, settings, include=options.include, exclude=options.exclude, from_files=lists, stdin=stdin
    )
    first = next(refs, None)
    return refs if first is None else itertools.chain([first], refs)


def run_scan(
    settings: Settings,
    engine: Engine,
    request: ScanRequest,
    backend: ScanBackend,
    *,
    wait: bool = False,
    stdin: TextIO,
    progress: bool = True,
    schedule_id: int | None = None,
) -> ScanResult:
    """Create a job for the request, record and enqueue its items through `backend`, and (with `wait`)
    follow it to the end. The rules a request must keep first are `scanner.launch.launch_scan`'s."""
    started = time.monotonic()
    sources, options = list(request.sources), request.options
    refs = iter_refs(sources, settings, options, stdin)
    with Session(engine) as session, session.begin():
        job_id = create_job(
            session,
            name=request.name,
            sources=sources,
            options=options,
            model_version=backend.model_version,
            webhook_url=request.webhook,
            schedule_id=schedule_id,
        ).id
    bar: tqdm[Any] = tqdm(desc=f"job {job_id}", unit="item", disable=not progress, dynamic_ncols=True, leave=False)
    listener = backend.listen_for_job_ends() if wait and backend.listen_for_job_ends is not None else None
    try:
        if schedule_id is not None:
            refs = only_new_or_changed(engine, schedule_id, refs)
        report = _enqueue_all(engine, job_id, refs, backend.enqueue, bar)
        if report.finished_job and backend.on_job_finished is not None:
            backend.on_job_finished(job_id)  # every item was answered from earlier verdicts
        if wait:
            _follow(engine, job_id, bar, listener)
    except DeepscanError as exc:
        fail_job(engine, job_id, str(exc))
    finally:
        bar.close()
        if listener is not None:
            listener.close()
    with Session(engine) as session:
        job = session.get_one(ScanJob, job_id)
        return ScanResult(job_id, job.status, job_counts(session, job_id), time.monotonic() - started, job.error)


def _enqueue_all(
    engine: Engine, job_id: int, refs: Iterator[MediaRef], enqueue: EnqueueFn, bar: tqdm[Any]
) -> EnqueueReport:
    # `enqueue` goes to add_items as it is (not wrapped): a batching sender must stay recognisable.
    def show(report: EnqueueReport) -> None:
        bar.update(report.enqueued - bar.n)
        bar.set_postfix(recorded=report.total, reused=report.reused)

    return add_items(engine, job_id, refs, enqueue=enqueue, on_progress=show)


def _follow(engine: Engine, job_id: int, bar: tqdm[Any], listener: JobEndWait | None) -> None:
    """Read the job's state from the database (the source of truth) until it is no longer running:
    every DEFAULT_POLL_INTERVAL_S for the progress bar, and at once when `listener` says it ended."""
    while True:
        with Session(engine) as session:
            status = session.scalars(select(ScanJob.status).where(ScanJob.id == job_id)).one()
            counts = job_counts(session, job_id)
        bar.total = counts.total
        bar.n = counts.ended
        bar.set_postfix(errors=counts.error, flagged=counts.flagged, refresh=False)
        bar.refresh()
        if status != "running":
            return
        if listener is None:
            time.sleep(DEFAULT_POLL_INTERVAL_S)
        else:
            listener.wait(job_id, DEFAULT_POLL_INTERVAL_S)
