"""Launching a scan: the one function the command line, the API and the scheduler all call.

The caller passes in a `ScanBackend`: where the chunks go, which model will score them, and who is
told when a job ends. The workers build one (`workers.backend.scan_backend`); the core never imports
them, so a scheduled run launches through the same code as a scan typed at a terminal.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from scanner.errors import ConfigError, DeepscanError
from scanner.jobs import EnqueueFn, JobCounts, ScanOptions, create_job, fail_job
from scanner.models import Schedule, utcnow
from scanner.producer import ScanResult, run_scan
from scanner.redaction import job_name
from scanner.schedules import claim_run, due_schedules, is_due, record_job
from scanner.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScanBackend:
    """How to send chunks, which model will score them, and what to call when a job has finished."""

    enqueue: EnqueueFn
    model_version: str | None
    on_job_finished: Callable[[int], None]


BackendFor = Callable[[Settings], ScanBackend]


@dataclass(frozen=True)
class ScanRequest:
    """What a user asks to scan: the sources, how, under which name, and whom to tell at the end."""

    sources: Sequence[str]
    options: ScanOptions = field(default_factory=ScanOptions)
    name: str | None = None
    webhook: str | None = None


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
    """Create the job, record and enqueue its items through `backend`, and (with `wait`) follow it to the end."""
    return run_scan(
        settings,
        engine,
        list(request.sources),
        name=job_name(request.sources, request.name),  # redacted and cut to the column: it is printed and sent
        options=request.options,
        enqueue=backend.enqueue,
        model_version=backend.model_version,
        webhook=request.webhook,
        on_job_finished=backend.on_job_finished,
        schedule_id=schedule_id,
        wait=wait,
        stdin=stdin if stdin is not None else io.StringIO(),
        progress=progress,
    )


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
    request = ScanRequest(
        schedule.source_spec,
        ScanOptions.from_json(schedule.options),
        name=f"{schedule.name} (scheduled)",
        webhook=schedule.webhook_url,
    )
    try:
        result = launch_scan(
            settings, engine, request, backend_for(settings), wait=settings.embedded, schedule_id=schedule.id
        )
    except ConfigError as exc:  # the source is gone or unreadable: keep the failed run for `jobs list`
        result = _failed_run(engine, schedule, request.options, str(exc))
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
