"""Operations: `jobs cancel|reconcile`, `schedule …` and `deepscan beat`."""

from __future__ import annotations

import datetime as dt
import json
import re
import sys
from typing import Any

import click
from sqlalchemy import select
from sqlalchemy.orm import Session

from scanner.cli.context import AppContext, pass_app
from scanner.cli.moderation import jobs
from scanner.cli.scan import scan_option_decorators, scan_options_from
from scanner.errors import ConfigError
from scanner.models import Schedule

DEFAULT_RECONCILE_AGE = "15m"
DEFAULT_BEAT_TICK_S = 30.0
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d)$")


def parse_duration(text: str) -> dt.timedelta:
    """`90s`, `15m`, `2h` or `1d` as a timedelta."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise click.BadParameter(f"{text!r} is not a duration like 90s, 15m, 2h or 1d")
    seconds = float(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    return dt.timedelta(seconds=seconds)


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
        click.echo(f"job {job_id} cancelled: {outcome.cancelled} queued items will not be scanned")


@jobs.command()
@click.option(
    "--older-than",
    default=DEFAULT_RECONCILE_AGE,
    show_default=True,
    help="Also re-send items queued for longer than this (90s, 15m, 2h…): their message was lost.",
)
@click.option("--format", "output_format", type=click.Choice(["table", "json"]), default="table", show_default=True)
@pass_app
def reconcile(app: AppContext, older_than: str, output_format: str) -> None:
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
        queued_older_than=parse_duration(older_than),
        on_finished=job_finished_notifier(app.engine, send_webhook_later),
    )
    if output_format == "json":
        click.echo(
            json.dumps({"jobs": report.jobs, "items": report.items, "expired": report.expired, "lost": report.lost})
        )
    else:
        click.echo(
            f"re-enqueued {report.items} items of {report.jobs} jobs "
            f"({report.expired} with expired leases, {report.lost} lost from the queue)"
        )


def _when(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    from scanner.schedules import next_run

    try:
        next_run(value, dt.datetime.now(dt.UTC))
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


@click.group()
def schedule() -> None:
    """Scheduled, incremental scans launched by `deepscan beat`."""


@schedule.command("add")
@click.argument("name")
@click.argument("sources", nargs=-1, required=True)
@click.option(
    "--cron",
    "when",
    required=True,
    callback=_when,
    help="5-field cron expression in UTC ('0 2 * * *'), or '@every 10m'.",
)
@click.option("--webhook", metavar="URL", help="POST a JSON notification here when each run finishes.")
@scan_option_decorators
@pass_app
def schedule_add(
    app: AppContext, /, name: str, sources: tuple[str, ...], when: str, webhook: str | None, **opts: Any
) -> None:
    """Scan SOURCES on a schedule; each run scans only objects new or changed since the last."""
    from scanner.schedules import add_schedule

    with Session(app.engine) as session, session.begin():
        add_schedule(
            session, name=name, sources=list(sources), when=when, options=scan_options_from(opts), webhook_url=webhook
        )
    click.echo(f"schedule {name!r} added ({when}); `deepscan beat` launches it")


@schedule.command("list")
@click.option("--format", "output_format", type=click.Choice(["table", "json"]), default="table", show_default=True)
@pass_app
def schedule_list(app: AppContext, output_format: str) -> None:
    """List schedules with their last run and next due time."""
    from scanner.schedules import next_run

    with Session(app.engine) as session:
        rows = session.scalars(select(Schedule).order_by(Schedule.name)).all()
    records: list[dict[str, Any]] = [
        {
            "name": s.name,
            "cron": s.cron,
            "sources": s.source_spec,
            "enabled": s.enabled,
            "last_run_at": s.last_run_at.isoformat() if s.last_run_at else None,
            "last_job_id": s.last_job_id,
            "next_run_at": next_run(s.cron, s.last_run_at or s.created_at).isoformat(),
        }
        for s in rows
    ]
    if output_format == "json":
        click.echo(json.dumps(records))
        return
    if not records:
        click.echo("no schedules: add one with `deepscan schedule add NAME SOURCE --cron '0 2 * * *'`")
    for r in records:
        click.echo(
            f"{r['name']:<20} {r['cron']:<16} next {r['next_run_at']}  last job {r['last_job_id'] or '-'}  "
            f"{' '.join(r['sources'])}"
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
@pass_app
def schedule_run_now(app: AppContext, name: str) -> None:
    """Launch schedule NAME once now (an ordinary, incremental scan job).

    With a broker the workers scan it; without one it is scanned here, before this returns.
    """
    from scanner.schedules import get_schedule
    from workers.scheduling import launch_schedule

    with Session(app.engine) as session:
        schedule_id = get_schedule(session, name).id
    result = launch_schedule(app.settings, app.engine, schedule_id, force=True)
    if result is None:  # forced, so only a schedule removed in the meantime gives none
        raise ConfigError(f"schedule {name!r} was removed before it could run")
    reason = f": {result.error}" if result.error else ""
    click.echo(
        f"schedule {name!r} launched job {result.job_id} ({result.status}{reason}): "
        f"{result.counts.total} new or changed items"
    )
    if result.status == "failed":
        sys.exit(1)


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
