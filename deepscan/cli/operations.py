"""Operations: `jobs cancel|reconcile`, `schedule …` and `deepscan beat`."""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from sqlalchemy import select
from sqlalchemy.orm import Session

from deepscan.cli.context import EXIT_FAILURE, EXIT_ITEM_ERRORS, AppContext, pass_app
from deepscan.cli.moderation import jobs
from deepscan.cli.options import DURATION, webhook_option
from deepscan.cli.output import LIST_FORMATS, RECORD_FORMATS, counted, emit_list, format_option, render_table
from deepscan.cli.scan import scan_option_decorators, scan_options_from
from scanner.errors import ConfigError, InvalidInputError
from scanner.models import Schedule

DEFAULT_RECONCILE_AGE = "15m"
DEFAULT_BEAT_TICK_S = 30.0
SCHEDULE_TABLE = ("name", "enabled", "when", "next run", "last run", "last job", "retry errors", "sources")


def _sender(app: AppContext) -> Any:
    if app.settings.embedded:
        raise ConfigError("this needs a broker: set DEEPSCAN_BROKER_URL (embedded scans never leave items behind)")
    from workers.tasks import chunk_sender

    return chunk_sender(app.settings)


@jobs.command()
@click.argument("job_id", type=int)
@pass_app
def cancel(app: AppContext, job_id: int) -> None:
    """Stop JOB_ID: its queued items become `cancelled`; items already scanned keep their verdicts."""
    from scanner.jobs import cancel_job

    outcome = cancel_job(app.engine, job_id)
    if outcome.was_finished:
        click.echo(f"job {job_id} is already {outcome.status}: nothing to cancel")
    else:
        click.echo(f"job {job_id} cancelled: {counted(outcome.cancelled, 'queued item')} will not be scanned")


@jobs.command()
@click.option(
    "--older-than",
    type=DURATION,
    default=DEFAULT_RECONCILE_AGE,
    show_default=True,
    help="Also re-send items queued for longer than this (30s, 15m, 1.5h, 7d, 1w): their message was lost.",
)
@format_option(*RECORD_FORMATS)
@pass_app
def reconcile(app: AppContext, older_than: dt.timedelta, output_format: str) -> None:
    """Re-send items no worker holds: leases expired (a killed worker) or messages lost.

    An item still leased to a live worker is never touched, and a second delivery of an item
    writes nothing, so this is safe to run at any time. `deepscan beat` runs the same pass every
    DEEPSCAN_RECONCILE_INTERVAL_S on its own; this command is for right after restoring a broker.
    """
    from scanner.jobs import reconcile as reconcile_items
    from workers.notify import job_finished_notifier
    from workers.tasks import send_webhook_later

    report = reconcile_items(
        app.engine,
        enqueue=_sender(app),
        queued_older_than=older_than,
        on_finished=job_finished_notifier(app.engine, send_webhook_later),
    )
    if output_format == "json":
        click.echo(
            json.dumps({"jobs": report.jobs, "items": report.items, "expired": report.expired, "lost": report.lost})
        )
    else:
        click.echo(
            f"re-enqueued {counted(report.items, 'item')} of {counted(report.jobs, 'job')} "
            f"({report.expired} with expired leases, {report.lost} lost from the queue)"
        )


def _when(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """The core's rule (ScheduleSpec applies it again), checked early to name the option at fault."""
    from scanner.schedules import checked_when

    if value is None:
        return None
    try:
        return checked_when(value)
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from None


@contextmanager
def _as_usage_error() -> Iterator[None]:
    """A schedule the core refuses as given is a usage error (exit 2), in the core's words."""
    try:
        yield
    except (ConfigError, InvalidInputError) as exc:
        raise click.UsageError(str(exc)) from None


WHEN_HELP = (
    "When to run, in UTC: a 5-field cron expression ('0 2 * * *'), @hourly, @daily, @weekly, @monthly, "
    "or '@every 1.5h'."
)
SCHEDULE_CHECKPOINT_HELP = (
    "Checkpoint for runs scanned in-process (run-now without a broker); workers score with their own."
)
RETRY_ERRORS_HELP = "Scan again items that ended `error` in earlier runs (default: only new or changed objects)."


@click.group()
def schedule() -> None:
    """Scheduled, incremental scans launched by `deepscan beat` (or `schedule run-now`)."""


@schedule.command("add")
@click.argument("name")
@click.argument("sources", nargs=-1, required=True)
@click.option("--cron", "when", required=True, callback=_when, help=WHEN_HELP)
@webhook_option
@click.option(
    "--checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path), help=SCHEDULE_CHECKPOINT_HELP
)
@click.option("--retry-errors/--no-retry-errors", default=False, show_default=True, help=RETRY_ERRORS_HELP)
@scan_option_decorators
@pass_app
def schedule_add(
    app: AppContext,
    /,
    name: str,
    sources: tuple[str, ...],
    when: str,
    webhook: str | None,
    checkpoint: Path | None,
    retry_errors: bool,
    **opts: Any,
) -> None:
    """Scan SOURCES on a schedule; each run scans only objects new or changed since the last.

    Relative paths are stored as absolute ones (beat runs from its own directory). Without a broker
    runs are scanned in-process, so a checkpoint is needed now: --checkpoint or DEEPSCAN_CHECKPOINT.
    """
    from deepscan.cli.options import require_checkpoint
    from scanner.schedules import ScheduleSpec, add_schedule

    with _as_usage_error():
        spec = ScheduleSpec(
            name=name,
            sources=sources,
            when=when,
            options=scan_options_from(opts),
            webhook_url=webhook,
            checkpoint=str(checkpoint.resolve()) if checkpoint else None,
            retry_errors=retry_errors,
        )
    if app.settings.embedded:
        require_checkpoint(checkpoint or app.settings.checkpoint)
    with Session(app.engine) as session, session.begin():
        add_schedule(session, spec)
    click.echo(f"schedule {name!r} added ({when}); `deepscan beat` launches it, `deepscan schedule run-now` now")


@schedule.command("edit")
@click.argument("name")
@click.option("--cron", "when", callback=_when, help=WHEN_HELP)
@click.option("--source", "sources", multiple=True, help="Replace the sources (repeat for several).")
@webhook_option
@click.option("--no-webhook", is_flag=True, help="Stop sending webhook events.")
@click.option(
    "--checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path), help=SCHEDULE_CHECKPOINT_HELP
)
@click.option("--no-checkpoint", is_flag=True, help="Forget the schedule's checkpoint (use DEEPSCAN_CHECKPOINT).")
@click.option("--retry-errors/--no-retry-errors", default=None, help=RETRY_ERRORS_HELP)
@pass_app
def schedule_edit(
    app: AppContext,
    name: str,
    when: str | None,
    sources: tuple[str, ...],
    webhook: str | None,
    no_webhook: bool,
    checkpoint: Path | None,
    no_checkpoint: bool,
    retry_errors: bool | None,
) -> None:
    """Change schedule NAME; only the options given change, its history stays."""
    from scanner.schedules import ScheduleChanges, edit_schedule

    with _as_usage_error():
        changes = ScheduleChanges(
            when=when,
            sources=sources or None,
            webhook_url=webhook,
            clear_webhook=no_webhook,
            checkpoint=str(checkpoint.resolve()) if checkpoint else None,
            clear_checkpoint=no_checkpoint,
            retry_errors=retry_errors,
        )
    if changes.empty:
        raise click.UsageError("nothing to change: give --cron, --source, --webhook, --checkpoint or --retry-errors")
    with Session(app.engine) as session, session.begin():
        edit_schedule(session, name, changes)
    click.echo(f"schedule {name!r} changed")


def _set_enabled(app: AppContext, name: str, enabled: bool) -> None:
    from scanner.schedules import ScheduleChanges, edit_schedule, schedule_next_run

    with Session(app.engine) as session, session.begin():
        changed = edit_schedule(session, name, ScheduleChanges(enabled=enabled))
        due = schedule_next_run(changed)
    state = f"enabled: next run {due:%Y-%m-%d %H:%M:%SZ}" if due else "disabled: beat skips it until `schedule enable`"
    click.echo(f"schedule {name!r} {state}")


@schedule.command("enable")
@click.argument("name")
@pass_app
def schedule_enable(app: AppContext, name: str) -> None:
    """Let beat launch schedule NAME again."""
    _set_enabled(app, name, True)


@schedule.command("disable")
@click.argument("name")
@pass_app
def schedule_disable(app: AppContext, name: str) -> None:
    """Stop beat from launching schedule NAME (it stays, with its history; `run-now` still works)."""
    _set_enabled(app, name, False)


def schedule_record(s: Schedule) -> dict[str, Any]:
    """A schedule as `schedule list` prints it (json/jsonl/csv)."""
    from scanner.schedules import schedule_next_run

    due = schedule_next_run(s)
    return {
        "name": s.name,
        "cron": s.cron,
        "sources": s.source_spec,
        "enabled": s.enabled,
        "retry_errors": s.retry_errors,
        "checkpoint": s.checkpoint,
        "webhook": s.webhook_url is not None,  # the URL holds the receiver's token: never printed
        "last_run_at": s.last_run_at,
        "last_job_id": s.last_job_id,
        "next_run_at": due,
    }


@schedule.command("list")
@format_option(*LIST_FORMATS)
@pass_app
def schedule_list(app: AppContext, output_format: str) -> None:
    """List schedules with their last run and next due time (UTC)."""
    with Session(app.engine) as session:
        records = [schedule_record(s) for s in session.scalars(select(Schedule).order_by(Schedule.name))]

    def table() -> str:
        rows = (
            [r["name"], r["enabled"], r["cron"], r["next_run_at"] or "disabled", r["last_run_at"], r["last_job_id"],
             r["retry_errors"], " ".join(r["sources"])]
            for r in records
        )  # fmt: skip
        return render_table(SCHEDULE_TABLE, rows)

    emit_list(
        output_format,
        records,
        fields=tuple(records[0]) if records else ("name",),
        table=table,
        empty="no schedules: add one with `deepscan schedule add NAME SOURCE --cron @daily`",
    )


@schedule.command("remove")
@click.argument("name")
@pass_app
def schedule_remove(app: AppContext, name: str) -> None:
    """Delete schedule NAME (its past jobs and verdicts stay)."""
    from scanner.schedules import get_schedule

    with Session(app.engine) as session, session.begin():
        session.delete(get_schedule(session, name))
    click.echo(f"schedule {name!r} removed")


@schedule.command("run-now")
@click.argument("name")
@click.option(
    "--checkpoint",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Checkpoint for this run without a broker [default: the schedule's, else DEEPSCAN_CHECKPOINT].",
)
@pass_app
def schedule_run_now(app: AppContext, name: str, checkpoint: Path | None) -> None:
    """Launch schedule NAME once now (an ordinary, incremental scan job), enabled or not.

    With a broker the workers scan it; without one it is scanned here, before this returns.
    Exit codes: 0 launched (or done), 1 the run failed, 2 no checkpoint for an in-process run,
    3 an in-process run finished with item errors.
    """
    from deepscan.cli.options import require_checkpoint
    from scanner.launch import launch_schedule
    from scanner.schedules import get_schedule
    from workers.backend import scan_backend

    with Session(app.engine) as session:
        found = get_schedule(session, name)
        schedule_id, stored = found.id, found.checkpoint
    if app.settings.embedded:
        require_checkpoint(checkpoint or (Path(stored) if stored else None) or app.settings.checkpoint)
    result = launch_schedule(
        app.settings,
        app.engine,
        schedule_id,
        backend_for=lambda settings: scan_backend(settings, app.engine),
        force=True,
        checkpoint=checkpoint,
    )
    if result is None:  # forced, so only a schedule removed in the meantime gives none
        raise ConfigError(f"schedule {name!r} was removed before it could run")
    reason = f": {result.error}" if result.error else ""
    errored = f", {counted(result.counts.error, 'error')}" if result.counts.error else ""
    click.echo(
        f"schedule {name!r} launched job {result.job_id} ({result.status}{reason}): "
        f"{counted(result.counts.total, 'new or changed item')}{errored}"
    )
    if result.status == "failed":
        sys.exit(EXIT_FAILURE)
    if result.counts.error:
        sys.exit(EXIT_ITEM_ERRORS)


@click.command()
@click.option(
    "--tick",
    type=click.FloatRange(min=0.1),
    default=DEFAULT_BEAT_TICK_S,
    show_default=True,
    help="Seconds between checks for due schedules.",
)
@click.option("--loglevel", default="INFO", show_default=True)
@pass_app
def beat(app: AppContext, tick: float, loglevel: str) -> None:
    """Run Celery beat: every --tick seconds it launches the schedules that are due.

    Every DEEPSCAN_RECONCILE_INTERVAL_S (default 60) it also has a worker re-send items whose
    lease expired (a killed worker) and, when the queue is empty, items queued for longer than
    DEEPSCAN_REQUEUE_AFTER_S (a broker restarted empty): jobs heal with no operator.
    Run exactly one beat per deployment; any worker executes the launches.
    """
    from workers.app import LAUNCH_DUE, RECONCILE, configure
    from workers.app import app as celery_app

    if app.settings.broker_url is None:
        raise ConfigError("beat needs a broker: set DEEPSCAN_BROKER_URL (e.g. redis://127.0.0.1:6379/0)")
    configure(app.settings)
    celery_app.conf.include = []  # beat sends a task name only: it need not import the pipeline (and torch)
    celery_app.conf.beat_schedule = {
        "launch-due-schedules": {"task": LAUNCH_DUE, "schedule": tick},
        "reconcile": {"task": RECONCILE, "schedule": app.settings.reconcile_interval_s},
    }
    schedule_file = app.settings.home / "celerybeat-schedule"
    schedule_file.parent.mkdir(parents=True, exist_ok=True)
    celery_app.Beat(
        schedule=str(schedule_file), loglevel=loglevel, max_interval=min(tick, app.settings.reconcile_interval_s)
    ).run()


COMMANDS: list[click.Command] = [schedule, beat]
