"""Scheduled, incremental scans: named sources rescanned on a cron expression (or a fixed interval).

Each run is an ordinary scan job linked to its schedule. A run scans only objects that are new or
changed since the schedule's earlier runs, judged by ETag, size and last-modified time, so a daily
rescan of a bucket costs only its new uploads.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Iterable, Iterator
from typing import Any

from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from scanner.errors import ConfigError
from scanner.jobs import OPEN_STATUSES, ScanOptions, batched
from scanner.models import MediaItem, ScanJob, Schedule
from scanner.sources import MediaRef

log = logging.getLogger(__name__)

_EVERY = re.compile(r"^@every\s+(\d+)\s*(s|m|h|d)$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_CRON_FIELDS = ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")  # the order cron writes them
DEFAULT_LOOKUP_BATCH = 500
DEFAULT_CRON_HORIZON_DAYS = 5 * 366  # far enough to reach the next 29 February


def parse_when(expr: str) -> dt.timedelta | Any:
    """A `@every N{s,m,h,d}` interval as a timedelta, or a 5-field cron expression as a celery crontab."""
    expr = " ".join(expr.split())
    if match := _EVERY.match(expr):
        interval = dt.timedelta(seconds=int(match.group(1)) * _UNIT_S[match.group(2)])
        if not interval:
            raise ConfigError(f"invalid schedule {expr!r}: the interval must be at least 1s")
        return interval
    fields = expr.split(" ")
    if len(fields) != 5 or expr.startswith("@"):
        raise ConfigError(f"invalid schedule {expr!r}: use a 5-field cron expression like '0 2 * * *' or '@every 10m'")
    from celery.schedules import ParseException, crontab

    # crontab's positional order is not cron's (day_of_week comes third), so pass each field by name.
    for name, field in zip(_CRON_FIELDS, fields, strict=True):
        try:
            crontab(**{name: field})
        except (ValueError, TypeError, ParseException) as exc:
            raise ConfigError(f"invalid cron expression {expr!r}: {name.replace('_', ' ')} {field!r}: {exc}") from None
    try:
        return crontab(**dict(zip(_CRON_FIELDS, fields, strict=True)))
    except ValueError as exc:  # each field is valid, but not together ('0 0 31 2 *')
        raise ConfigError(f"invalid cron expression {expr!r}: {exc}") from None


def next_run(expr: str, last: dt.datetime) -> dt.datetime:
    """When a schedule last run (or created) at `last` is next due, in UTC."""
    when = parse_when(expr)
    last = last.astimezone(dt.UTC)
    if isinstance(when, dt.timedelta):
        return last + when
    return _cron_next(when, last, expr)


def _cron_next(cron: Any, last: dt.datetime, expr: str) -> dt.datetime:
    """The first minute after `last` that matches the crontab; skips whole days and hours that cannot."""
    minute = dt.timedelta(minutes=1)
    candidate = last.replace(second=0, microsecond=0) + minute
    horizon = candidate + dt.timedelta(days=DEFAULT_CRON_HORIZON_DAYS)
    while candidate < horizon:
        if not _day_matches(cron, candidate):
            candidate = candidate.replace(hour=0, minute=0) + dt.timedelta(days=1)
        elif candidate.hour not in cron.hour:
            candidate = candidate.replace(minute=0) + dt.timedelta(hours=1)
        elif candidate.minute not in cron.minute:
            candidate += minute
        else:
            return candidate
    raise ConfigError(f"invalid cron expression {expr!r}: it never fires (no such date)")


def _day_matches(cron: Any, day: dt.datetime) -> bool:
    """Cron's rule: when both day of month and day of week are restricted, either one may match."""
    if day.month not in cron.month_of_year:
        return False
    in_month = day.day in cron.day_of_month
    in_week = day.isoweekday() % 7 in cron.day_of_week
    if len(cron.day_of_month) < 31 and len(cron.day_of_week) < 7:
        return in_month or in_week
    return in_month and in_week


def add_schedule(
    session: Session, *, name: str, sources: list[str], when: str, options: ScanOptions, webhook_url: str | None
) -> Schedule:
    next_run(when, dt.datetime.now(dt.UTC))  # refuses expressions that never fire, too
    if session.scalars(select(Schedule).where(Schedule.name == name)).first() is not None:
        raise ConfigError(f"a schedule named {name!r} exists: remove it first or choose another name")
    schedule = Schedule(name=name, source_spec=sources, cron=when, options=options.to_json(), webhook_url=webhook_url)
    session.add(schedule)
    session.flush()
    return schedule


def get_schedule(session: Session, name: str) -> Schedule:
    schedule = session.scalars(select(Schedule).where(Schedule.name == name)).first()
    if schedule is None:
        raise ConfigError(f"no schedule named {name!r}: see `deepscan schedule list`")
    return schedule


def due_schedules(session: Session, now: dt.datetime) -> list[Schedule]:
    """Enabled schedules whose next run time has come."""
    schedules = session.scalars(select(Schedule).where(Schedule.enabled.is_(True)).order_by(Schedule.id)).all()
    return [s for s in schedules if is_due(session, s, now)]


def is_due(session: Session, schedule: Schedule, now: dt.datetime) -> bool:
    """Its time has come and its previous run has finished recording its items.

    A run still recording (job `pending`) would hide nothing from the next one yet, which would
    then scan the same objects again; a producer that died leaves its job to `jobs reconcile`.
    """
    if next_run(schedule.cron, schedule.last_run_at or schedule.created_at) > now:
        return False
    recording = session.scalars(
        select(ScanJob.id).where(ScanJob.schedule_id == schedule.id, ScanJob.status == "pending").limit(1)
    ).first()
    if recording is not None:
        log.info("schedule %s: job %s is still recording its items; the next run waits", schedule.name, recording)
    return recording is None


def claim_run(engine: Engine, schedule: Schedule, now: dt.datetime) -> bool:
    """Record that this run starts; False when another beat tick or `run-now` claimed it first.

    `schedule` must be the state its due-ness was judged on: the update only applies if
    `last_run_at` has not moved since.
    """
    with engine.begin() as conn:
        column = Schedule.__table__.c.last_run_at
        condition = column.is_(None) if schedule.last_run_at is None else column == schedule.last_run_at
        result = conn.execute(update(Schedule).where(Schedule.id == schedule.id, condition).values(last_run_at=now))
    return result.rowcount == 1


def record_job(engine: Engine, schedule_id: int, job_id: int) -> None:
    with engine.begin() as conn:
        conn.execute(update(Schedule).where(Schedule.id == schedule_id).values(last_job_id=job_id))


def only_new_or_changed(engine: Engine, schedule_id: int, refs: Iterable[MediaRef]) -> Iterator[MediaRef]:
    """Drop references whose URL, ETag, size and last-modified match an item of an earlier run.

    An item counts once it was answered (`done` or `error`), or while it is still open in a live
    job; an item cancelled, or left behind by a failed job, was never scanned and is scanned again.
    """
    answered = MediaItem.status.in_(("done", "error"))
    in_flight = MediaItem.status.in_(OPEN_STATUSES) & ScanJob.status.in_(("pending", "running"))
    for batch in batched(refs, DEFAULT_LOOKUP_BATCH):
        with Session(engine) as session:
            rows = session.execute(
                select(MediaItem.url, MediaItem.etag, MediaItem.size, MediaItem.last_modified)
                .join(ScanJob, ScanJob.id == MediaItem.job_id)
                .where(
                    ScanJob.schedule_id == schedule_id,
                    MediaItem.url.in_([r.url for r in batch]),
                    answered | in_flight,
                )
            ).all()
        seen = {(row.url, row.etag, row.size, _second(row.last_modified)) for row in rows}
        for ref in batch:
            if (ref.url, ref.etag, ref.size, _second(ref.last_modified)) not in seen:
                yield ref


def _second(when: dt.datetime | None) -> dt.datetime | None:
    return when.astimezone(dt.UTC).replace(microsecond=0) if when is not None else None
