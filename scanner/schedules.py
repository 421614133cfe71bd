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
from dataclasses import dataclass, field

from croniter import croniter
from croniter.croniter import CroniterBadDateError, CroniterError
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from scanner.durations import parse_duration
from scanner.errors import ConfigError, ConflictError, InvalidInputError, NotFoundError
from scanner.jobs import ScanOptions, batched
from scanner.models import OPEN_ITEM_STATUSES, OPEN_JOB_STATUSES, MediaItem, ScanJob, Schedule
from scanner.sources import MediaRef, absolute_source
from scanner.webhooks import validate_webhook_url

log = logging.getLogger(__name__)

_EVERY = re.compile(r"^@every\s+(.+)$")
CRON_ALIASES = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
WHEN_HELP = "a 5-field cron expression in UTC ('0 2 * * *'), @hourly, @daily, @weekly, @monthly or '@every 10m'"
DEFAULT_LOOKUP_BATCH = 500


def parse_when(expr: str) -> dt.timedelta | str:
    """An `@every DURATION` interval as a timedelta, or a cron expression (aliases expanded) as 5 fields.

    ConfigError, in one line naming the expression, for anything else.
    """
    expr = " ".join(expr.split())
    if match := _EVERY.match(expr):
        try:
            interval = parse_duration(match.group(1))
        except ConfigError as exc:
            raise ConfigError(f"invalid schedule {expr!r}: {exc}") from None
        if interval < dt.timedelta(seconds=1):
            raise ConfigError(f"invalid schedule {expr!r}: the interval must be at least 1s")
        return interval
    cron = CRON_ALIASES.get(expr.lower(), expr)
    if len(cron.split(" ")) != 5 or cron.startswith("@"):
        raise ConfigError(f"invalid schedule {expr!r}: use {WHEN_HELP}")
    try:
        croniter(cron, _EPOCH)
    except CroniterError:
        raise ConfigError(f"invalid cron expression {expr!r}: {_bad_field(cron.split(' '))}") from None
    return cron


# The five cron fields and the values each takes, as a moderator reads them in an error.
CRON_FIELDS = (
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day of month", "1-31"),
    ("month", "1-12 or jan-dec"),
    ("day of week", "0-7 or sun-sat"),
)


def _bad_field(fields: list[str]) -> str:
    """Which field croniter refused, in our words: its own messages quote its internals
    ("[61 * * * *] is not acceptable")."""
    for position, (name, allowed) in enumerate(CRON_FIELDS):
        alone = ["*"] * 5
        alone[position] = fields[position]
        try:
            croniter(" ".join(alone), _EPOCH)
        except CroniterError:
            return (
                f"the {name} field {fields[position]!r} is not valid (use {allowed}, lists a,b, ranges a-b, steps */n)"
            )
    return f"use {WHEN_HELP}"


def next_run(expr: str, last: dt.datetime) -> dt.datetime:
    """When a schedule last run (or created) at `last` is next due, in UTC (strictly after `last`).

    Cron expressions follow cron's own rule (croniter's): when both day of month and day of week
    are restricted, either may match.
    """
    when = parse_when(expr)
    last = last.astimezone(dt.UTC)
    if isinstance(when, dt.timedelta):
        return last + when
    try:
        due: dt.datetime = croniter(when, last).get_next(dt.datetime)
    except CroniterBadDateError:
        shown = " ".join(expr.split())
        raise ConfigError(f"invalid cron expression {shown!r}: it never fires (no such date)") from None
    return due.astimezone(dt.UTC)


_EPOCH = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


MAX_SCHEDULE_NAME_CHARS = 200  # schedules.name is VARCHAR(200)


def checked_when(expr: str) -> str:
    """`expr` with its whitespace normalised, once it is known to fire (ConfigError otherwise)."""
    next_run(expr, dt.datetime.now(dt.UTC))  # refuses malformed expressions and ones that never fire
    return " ".join(expr.split())


@dataclass(frozen=True)
class ScheduleSpec:
    """A schedule as asked for, checked on construction whichever front end builds it.

    The expression must fire (ConfigError); relative paths are stored absolute, since beat runs
    elsewhere (ConfigError for one that does not exist); the webhook URL must be one a delivery can
    use and the name must be given (InvalidInputError).
    """

    name: str
    sources: tuple[str, ...]
    when: str
    options: ScanOptions = field(default_factory=ScanOptions)
    webhook_url: str | None = None
    checkpoint: str | None = None
    retry_errors: bool = False

    def __post_init__(self) -> None:
        if not self.name.strip() or len(self.name) > MAX_SCHEDULE_NAME_CHARS:
            raise InvalidInputError(f"a schedule needs a name of 1 to {MAX_SCHEDULE_NAME_CHARS} characters")
        if not self.sources:
            raise InvalidInputError("a schedule needs at least one source")
        object.__setattr__(self, "when", checked_when(self.when))
        object.__setattr__(self, "sources", tuple(absolute_source(s) for s in self.sources))
        if self.webhook_url is not None:
            object.__setattr__(self, "webhook_url", validate_webhook_url(self.webhook_url))


def add_schedule(session: Session, spec: ScheduleSpec) -> Schedule:
    """A new, enabled schedule; ConflictError for a name in use."""
    if session.scalars(select(Schedule).where(Schedule.name == spec.name)).first() is not None:
        raise ConflictError(f"a schedule named {spec.name!r} exists: remove it first or choose another name")
    schedule = Schedule(
        name=spec.name,
        source_spec=list(spec.sources),
        cron=spec.when,
        options=spec.options.to_json(),
        webhook_url=spec.webhook_url,
        checkpoint=spec.checkpoint,
        retry_errors=spec.retry_errors,
    )
    session.add(schedule)
    session.flush()
    return schedule


@dataclass(frozen=True)
class ScheduleChanges:
    """What `schedule edit` changes; None leaves a field as it is (`clear_*` removes an optional one).

    Checked on construction by the rules of ScheduleSpec, plus: a field is set or cleared, not both.
    """

    when: str | None = None
    sources: tuple[str, ...] | None = None
    webhook_url: str | None = None
    clear_webhook: bool = False
    checkpoint: str | None = None
    clear_checkpoint: bool = False
    retry_errors: bool | None = None
    enabled: bool | None = None

    def __post_init__(self) -> None:
        if self.webhook_url is not None and self.clear_webhook:
            raise InvalidInputError("give a new webhook URL or remove the webhook, not both")
        if self.checkpoint is not None and self.clear_checkpoint:
            raise InvalidInputError("give a new checkpoint or remove the checkpoint, not both")
        if self.when is not None:
            object.__setattr__(self, "when", checked_when(self.when))
        if self.sources is not None:
            if not self.sources:
                raise InvalidInputError("a schedule needs at least one source")
            object.__setattr__(self, "sources", tuple(absolute_source(s) for s in self.sources))
        if self.webhook_url is not None:
            object.__setattr__(self, "webhook_url", validate_webhook_url(self.webhook_url))

    @property
    def empty(self) -> bool:
        return self == ScheduleChanges()


def edit_schedule(session: Session, name: str, changes: ScheduleChanges) -> Schedule:
    """Apply `changes` to schedule NAME; its history (last run, jobs) stays."""
    schedule = get_schedule(session, name)
    if changes.when is not None:
        schedule.cron = changes.when
    if changes.sources is not None:
        schedule.source_spec = list(changes.sources)
    if changes.clear_webhook or changes.webhook_url is not None:
        schedule.webhook_url = None if changes.clear_webhook else changes.webhook_url
    if changes.clear_checkpoint or changes.checkpoint is not None:
        schedule.checkpoint = None if changes.clear_checkpoint else changes.checkpoint
    if changes.retry_errors is not None:
        schedule.retry_errors = changes.retry_errors
    if changes.enabled is not None:
        schedule.enabled = changes.enabled
    session.flush()
    return schedule


def get_schedule(session: Session, name: str) -> Schedule:
    schedule = session.scalars(select(Schedule).where(Schedule.name == name)).first()
    if schedule is None:
        raise NotFoundError(f"no schedule named {name!r}: see `deepscan schedule list`")
    return schedule


def schedule_next_run(schedule: Schedule) -> dt.datetime | None:
    """When beat next launches `schedule`; None while it is disabled."""
    if not schedule.enabled:
        return None
    return next_run(schedule.cron, schedule.last_run_at or schedule.created_at)


def due_schedules(session: Session, now: dt.datetime) -> list[Schedule]:
    """Enabled schedules whose next run time has come."""
    schedules = session.scalars(select(Schedule).where(Schedule.enabled.is_(True)).order_by(Schedule.id)).all()
    return [s for s in schedules if is_due(session, s, now)]


def is_due(session: Session, schedule: Schedule, now: dt.datetime) -> bool:
    """Its time has come and its previous run has finished recording its items.

    A run still recording (job `pending`) would hide nothing from the next one yet, which would
    then scan the same objects again; a producer that died leaves its job to `jobs reconcile`.
    """
    due_at = schedule_next_run(schedule)
    if due_at is None or due_at > now:
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

    An item counts once it was answered (`done`, or `error` unless the schedule retries errors),
    or while it is still open in a live job; an item cancelled, or left behind by a failed job,
    was never scanned and is scanned again.
    """
    with Session(engine) as session:
        retry_errors = bool(session.scalars(select(Schedule.retry_errors).where(Schedule.id == schedule_id)).first())
    answered = MediaItem.status.in_(("done",) if retry_errors else ("done", "error"))
    in_flight = MediaItem.status.in_(OPEN_ITEM_STATUSES) & ScanJob.status.in_(OPEN_JOB_STATUSES)
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
