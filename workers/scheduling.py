"""Launching scheduled scans: the task beat sends every tick, and `schedule run-now`."""

from __future__ import annotations

import io
import logging
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from scanner.errors import ConfigError, DeepscanError
from scanner.jobs import JobCounts, ScanOptions, create_job, fail_job
from scanner.models import Schedule, utcnow
from scanner.producer import ScanResult, run_scan
from scanner.schedules import claim_run, due_schedules, is_due, record_job
from scanner.settings import Settings
from workers.backend import scan_backend
from workers.notify import job_finished_notifier

log = logging.getLogger(__name__)


def launch_schedule(
    settings: Settings, engine: Engine, schedule_id: int, *, force: bool = False, checkpoint: Path | None = None
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
    backend = scan_backend(settings, engine)
    options = ScanOptions.from_json(schedule.options)
    try:
        result = run_scan(
            settings,
            engine,
            schedule.source_spec,
            name=f"{schedule.name} (scheduled)",
            options=options,
            enqueue=backend.enqueue,
            model_version=backend.model_version,
            webhook=schedule.webhook_url,
            on_job_finished=job_finished_notifier(engine, backend.deliver),
            schedule_id=schedule.id,
            wait=settings.embedded,
            stdin=io.StringIO(),
            progress=False,
        )
    except ConfigError as exc:  # the source is gone or unreadable: keep the failed run for `jobs list`
        result = _failed_run(engine, schedule, options, str(exc))
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


def launch_due(settings: Settings, engine: Engine) -> list[int]:
    """Launch every schedule that is due now; returns the new job ids. One failing schedule never stops the others."""
    with Session(engine) as session:
        due = [s.id for s in due_schedules(session, utcnow())]
    launched: list[int] = []
    for schedule_id in due:
        try:
            result = launch_schedule(settings, engine, schedule_id)
        except DeepscanError as exc:
            log.error("schedule %s: not launched: %s", schedule_id, exc)
            continue
        if result is not None:
            launched.append(result.job_id)
    return launched
