"""Launching a scan: the one function the command line, the API and the scheduler all call.

The caller passes in a `ScanBackend`: where the chunks go, which model will score them, and who is
told when a job ends. The workers build one (`workers.backend.scan_backend`); the core never imports
them, so a scheduled run launches through the same code as a scan typed at a terminal.
"""

from __future__ import annotations

import dataclasses
import io
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from scanner.errors import ConfigError, DeepscanError, InvalidInputError
from scanner.jobs import JobCounts, ScanOptions, create_job, fail_job
from scanner.models import Schedule, utcnow
from scanner.producer import ScanBackend, ScanRequest, ScanResult, run_scan
from scanner.schedules import claim_run, due_schedules, is_due, record_job
from scanner.settings import Settings
from scanner.sources import expand_sources

log = logging.getLogger(__name__)

NOTHING_TO_SCAN = (
    "nothing to scan: no images or videos in the sources (listings keep media extensions such as jpg, png, "
    "mp4; --include widens them)"
)


class NothingToScanError(InvalidInputError):
    """The sources hold no images or videos at all: a scan of them would be an empty job."""


BackendFor = Callable[[Settings], ScanBackend]


def check_sources(settings: Settings, request: ScanRequest) -> None:
    """Check the named sources before any model loads or job exists.

    ConfigError for a wrong path, bucket or URL scheme; NothingToScanError when they hold no media and
    no URL list (`@FILE`) or stdin (`-`) is among them: those are read by the scan itself.
    """
    named = [s for s in request.sources if s != "-" and not s.startswith("@")]
    refs = expand_sources(named, settings, include=request.options.include, exclude=request.options.exclude)
    if next(refs, None) is None and len(named) == len(request.sources):
        raise NothingToScanError(NOTHING_TO_SCAN)


def launch_scan(
    settings: Settings,
    engine: Engine,
    request: ScanRequest,
    backend: ScanBackend,
    *,
    wait: bool,
    stdin: TextIO | None = None,
    progress: bool = False,
    schedule_id: int | None = None,
) -> ScanResult:
    """Create the job, record and enqueue its items through `backend`, and (with `wait`) follow it to the end.

    With `request.require_media`, sources with no media refuse to start (NothingToScanError, no job), and a
    URL list or stdin that had no entries ends its job `failed` with the same words.
    """
    if request.require_media:
        check_sources(settings, request)
    stdin = stdin if stdin is not None else io.StringIO()
    result = run_scan(
        settings, engine, request, backend, wait=wait, stdin=stdin, progress=progress, schedule_id=schedule_id
    )
    if request.require_media and result.counts.total == 0 and result.status != "failed":
        fail_job(engine, result.job_id, NOTHING_TO_SCAN)
        return dataclasses.replace(result, status="failed", error=NOTHING_TO_SCAN)
    return result


def launch_schedule(
    settings: Settings,
    engine: Engine,
    schedule_id: int,
    *,
    backend_for: BackendFor,
    force: bool = False,
    checkpoint: Path | None = None,
) -> ScanResult | None:
    """Start one incremental run of a schedule as an ordinary scan job.

    Returns None when the schedule is gone, not due, or another launcher claimed this run first;
    `force` (run-now) launches it regardless. Without a broker the run is scanned in this process
    and has finished when this returns, with `checkpoint`, else the schedule's own, else the
    configured one; with a broker the workers score it with the checkpoint they loaded.
    """
    now = utcnow()
    with Session(engine) as session:
        schedule = session.get(Schedule, schedule_id)
        if schedule is None or not (force or is_due(session, schedule, now)):
            return None
        session.expunge(schedule)  # the state judged due: claim_run applies only if it has not moved since
    if not claim_run(engine, schedule, now) and not force:
        return None
    if settings.embedded:
        settings = settings.with_overrides(checkpoint=checkpoint or _path(schedule.checkpoint))
    options = ScanOptions.from_json(schedule.options)
    try:
        request = ScanRequest(
            schedule.source_spec,
            options,
            name=f"{schedule.name} (scheduled)",
            webhook=schedule.webhook_url,
            require_media=False,
        )
        result = launch_scan(
            settings, engine, request, backend_for(settings), wait=settings.embedded, schedule_id=schedule.id
        )
    except (ConfigError, InvalidInputError) as exc:  # the source is gone, a stored webhook URL malformed: keep
        result = _failed_run(engine, schedule, options, str(exc))  # the failed run for `jobs list`
    record_job(engine, schedule.id, result.job_id)
    log.info(
        "schedule %s: job %s %s (%d new or changed items)",
        schedule.name,
        result.job_id,
        result.status,
        result.counts.total,
    )
    return result


def _path(text: str | None) -> Path | None:
    return Path(text) if text else None


def _failed_run(engine: Engine, schedule: Schedule, options: ScanOptions, reason: str) -> ScanResult:
    with Session(engine) as session, session.begin():
        job_id = create_job(
            session,
            name=f"{schedule.name} (scheduled)",
            sources=schedule.source_spec,
            options=options,
            webhook_url=schedule.webhook_url,
            schedule_id=schedule.id,
        ).id
    fail_job(engine, job_id, reason)
    log.warning("schedule %s: job %s failed: %s", schedule.name, job_id, reason)
    return ScanResult(job_id, "failed", JobCounts(), 0.0, reason)


def launch_due(settings: Settings, engine: Engine, *, backend_for: BackendFor) -> list[int]:
    """Launch every schedule that is due now; returns the new job ids. One failing schedule never stops the others."""
    with Session(engine) as session:
        due = [s.id for s in due_schedules(session, utcnow())]
    launched: list[int] = []
    for schedule_id in due:
        try:
            result = launch_schedule(settings, engine, schedule_id, backend_for=backend_for)
        except DeepscanError as exc:
            log.error("schedule %s: not launched: %s", schedule_id, exc)
            continue
        if result is not None:
            launched.append(result.job_id)
    return launched
