"""Scheduled, incremental scans: cron parsing, `schedule add|list|remove|run-now`, `jobs cancel`,
and a schedule fired by a real `deepscan beat` process against Redis, PostgreSQL, a worker and moto's S3.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner, Result
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from deepscan.cli import cli
from scanner.db import make_engine
from scanner.errors import ConfigError
from scanner.jobs import ScanOptions
from scanner.launch import launch_due, launch_schedule
from scanner.models import MediaItem, ScanJob, Schedule
from scanner.producer import ScanBackend
from scanner.schedules import (
    ScheduleSpec,
    add_schedule,
    claim_run,
    due_schedules,
    next_run,
    only_new_or_changed,
    parse_when,
)
from scanner.settings import Settings
from scanner.sources import MediaRef
from tests import media_factory
from tests.conftest import empty_tables
from tests.pipeline_helpers import deepscan_env, deepscan_process, items_of, worker_process, write_tiny_checkpoint
from tests.servers import TEST_AWS_ENV, s3_server, upload_folder

JAN_1 = dt.datetime(2026, 1, 1, 3, 0, tzinfo=dt.UTC)  # a Thursday
DEFAULT_WAIT_S = 60.0


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


@pytest.fixture(autouse=True)
def _checkpoint_configured(checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a broker `schedule add` needs a checkpoint (runs are scanned in-process): one is configured."""
    monkeypatch.setenv("DEEPSCAN_CHECKPOINT", str(checkpoint))


def invoke(runner: CliRunner, url: str, *args: str) -> Result:
    return runner.invoke(cli, ["--database-url", url, *args])


def utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


# --- when a schedule is due ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "last", "expected"),
    [
        ("0 2 * * *", "2026-01-01T03:00", "2026-01-02T02:00"),
        ("0 2 * * *", "2026-01-01T01:59:59", "2026-01-01T02:00"),
        ("*/15 * * * *", "2026-01-01T10:07:30", "2026-01-01T10:15"),
        ("*/15 * * * *", "2026-01-01T10:15:00", "2026-01-01T10:30"),  # strictly after the last run
        ("30 9 * * 1", "2026-01-01T03:00", "2026-01-05T09:30"),  # the next Monday, in January or not
        ("0 0 * * sun", "2026-01-01T03:00", "2026-01-04T00:00"),
        ("0 0 * * 0", "2026-01-01T03:00", "2026-01-04T00:00"),
        ("0 12 1 * *", "2026-01-01T13:00", "2026-02-01T12:00"),
        ("0 6 * 3 *", "2026-01-01T03:00", "2026-03-01T06:00"),
        ("0 0 13 * 5", "2026-01-01T03:00", "2026-01-02T00:00"),  # cron: the 13th OR a Friday
        ("0 0 29 2 *", "2026-01-01T03:00", "2028-02-29T00:00"),  # the next leap day, two years on
        ("  0   2 * *  * ", "2026-01-01T03:00", "2026-01-02T02:00"),
        ("@every 10s", "2026-01-01T03:00", "2026-01-01T03:00:10"),
        ("@every 5m", "2026-01-01T03:00", "2026-01-01T03:05"),
        ("@every 2h", "2026-01-01T03:00", "2026-01-01T05:00"),
        ("@every 1d", "2026-01-01T03:00", "2026-01-02T03:00"),
        ("@every 1.5h", "2026-01-01T03:00", "2026-01-01T04:30"),
        ("@every 1w", "2026-01-01T03:00", "2026-01-08T03:00"),
        ("@hourly", "2026-01-01T03:00", "2026-01-01T04:00"),
        ("@daily", "2026-01-01T03:00", "2026-01-02T00:00"),
        ("@weekly", "2026-01-01T03:00", "2026-01-04T00:00"),  # Sunday midnight, as cron
        ("@monthly", "2026-01-01T03:00", "2026-02-01T00:00"),
        ("@DAILY", "2026-01-01T03:00", "2026-01-02T00:00"),
    ],
)
def test_next_run(expr: str, last: str, expected: str) -> None:
    assert next_run(expr, utc(last)) == utc(expected)


def test_next_run_of_an_aware_non_utc_time_is_in_utc() -> None:
    paris = dt.timezone(dt.timedelta(hours=1))
    assert next_run("0 2 * * *", dt.datetime(2026, 1, 1, 3, 30, tzinfo=paris)) == utc("2026-01-02T02:00")


def test_parse_when_gives_intervals() -> None:
    assert parse_when("@every 90s") == dt.timedelta(seconds=90)


@pytest.mark.parametrize(
    "expr",
    ["", "* * * *", "* * * * * *", "61 * * * *", "* 24 * * *", "* * 0 * *", "5,,6 * * * *", "*/0 * * * *",
     "x * * * *", "@every 10x", "@every 0s", "@every", "0 0 31 2 *", "@fortnightly", "@daily 2"],
)  # fmt: skip
def test_invalid_schedules_are_refused_with_one_line(expr: str) -> None:
    with pytest.raises(ConfigError) as raised:
        next_run(expr, JAN_1)
    assert "\n" not in str(raised.value)
    assert repr(" ".join(expr.split())) in str(raised.value)
    assert "acceptable" not in str(raised.value)  # croniter's own words, which quote its internals


@pytest.mark.parametrize(
    ("expr", "says"),
    [
        ("61 * * * *", "the minute field '61' is not valid (use 0-59"),
        ("* 24 * * *", "the hour field '24' is not valid (use 0-23"),
        ("* * 0 * *", "the day of month field '0' is not valid (use 1-31"),
        ("* * * 13 *", "the month field '13' is not valid (use 1-12 or jan-dec"),
        ("* * * * fri-xyz", "the day of week field 'fri-xyz' is not valid"),
    ],
)
def test_a_bad_cron_field_is_named_in_our_words(expr: str, says: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"invalid cron expression {expr!r}: {says}")):
        parse_when(expr)


# --- which objects a run scans -----------------------------------------------------------------


def _ref(url: str, *, etag: str = "e1", size: int = 100, when: dt.datetime = JAN_1) -> MediaRef:
    return MediaRef(url=url, size=size, etag=etag, last_modified=when)


_HISTORY = {  # job of schedule "ours" (or "theirs") and its status: {object letter: item status}
    ("ours", "done"): {"a": "done", "b": "done", "c": "done", "d": "done", "e": "cancelled", "f": "error"},
    ("ours", "running"): {"i": "queued", "j": "processing"},
    ("ours", "failed"): {"k": "queued"},
    ("theirs", "done"): {"g": "done"},
}


def _schedule_with_history(engine: Engine) -> int:
    """Schedule "ours" with three earlier runs, and another schedule's run (see _HISTORY)."""
    with Session(engine) as session, session.begin():
        schedules = {
            name: add_schedule(session, ScheduleSpec(name=name, sources=("s3://b/",), when="@every 1h"))
            for name in ("ours", "theirs")
        }
        for (name, job_status), items in _HISTORY.items():
            job = ScanJob(name=name, source_spec=["s3://b/"], status=job_status, schedule_id=schedules[name].id)
            session.add(job)
            for letter, status in items.items():
                url = f"s3://b/{letter}.jpg"
                session.add(MediaItem(job=job, url=url, etag="e1", size=100, last_modified=JAN_1, status=status))
        return schedules["ours"].id


def test_only_new_or_changed_objects_are_scanned_again(engine: Engine) -> None:
    schedule_id = _schedule_with_history(engine)
    refs = [
        _ref("s3://b/a.jpg"),  # unchanged
        _ref("s3://b/b.jpg", etag="e2"),  # overwritten: new ETag
        _ref("s3://b/c.jpg", size=101),  # new size
        _ref("s3://b/d.jpg", when=JAN_1 + dt.timedelta(minutes=1)),  # touched
        _ref("s3://b/e.jpg"),  # its earlier scan was cancelled: never answered
        _ref("s3://b/f.jpg"),  # answered with an error: the same bytes fail the same way
        _ref("s3://b/g.jpg"),  # seen only by another schedule
        _ref("s3://b/h.jpg"),  # new
        _ref("s3://b/i.jpg"),  # still queued in a running job: it will be answered there
        _ref("s3://b/j.jpg"),  # being scanned now
        _ref("s3://b/k.jpg"),  # left queued by a run that failed: never scanned
        _ref("s3://b/a.jpg", when=JAN_1 + dt.timedelta(microseconds=400)),  # listings round to seconds
    ]
    kept = [r.url.rsplit("/", 1)[1] for r in only_new_or_changed(engine, schedule_id, refs)]
    assert kept == ["b.jpg", "c.jpg", "d.jpg", "e.jpg", "g.jpg", "h.jpg", "k.jpg"]


# --- launching ---------------------------------------------------------------------------------


def _overdue_schedule(engine: Engine, name: str, source: str, *, when: str = "@every 1h") -> int:
    with Session(engine) as session, session.begin():
        schedule = add_schedule(
            session, ScheduleSpec(name=name, sources=(source,), when=when, options=ScanOptions(faces=False))
        )
        schedule.created_at = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
        session.flush()
        return schedule.id


def test_of_two_launchers_that_saw_the_same_due_schedule_one_wins(engine: Engine) -> None:
    schedule_id = _overdue_schedule(engine, "nightly", "/srv/media")
    now = dt.datetime.now(dt.UTC)
    with Session(engine) as session:
        (seen_by_a,) = due_schedules(session, now)
        session.expunge(seen_by_a)
    with Session(engine) as session:
        (seen_by_b,) = due_schedules(session, now)
        session.expunge(seen_by_b)
    assert claim_run(engine, seen_by_a, now)
    assert not claim_run(engine, seen_by_b, now + dt.timedelta(seconds=1))
    with Session(engine) as session:
        assert session.get_one(Schedule, schedule_id).last_run_at == now
        assert due_schedules(session, now + dt.timedelta(minutes=59)) == []
        assert [s.id for s in due_schedules(session, now + dt.timedelta(hours=1))] == [schedule_id]


def test_a_run_still_recording_its_items_holds_back_the_next(engine: Engine) -> None:
    schedule_id = _overdue_schedule(engine, "nightly", "/srv/media")
    with Session(engine) as session, session.begin():
        job = ScanJob(name="nightly (scheduled)", source_spec=["/srv/media"], status="pending", schedule_id=schedule_id)
        session.add(job)
        session.flush()
        job_id = job.id
    now = dt.datetime.now(dt.UTC)
    with Session(engine) as session:
        assert due_schedules(session, now) == []
    with Session(engine) as session, session.begin():
        session.get_one(ScanJob, job_id).status = "running"
    with Session(engine) as session:
        assert [s.id for s in due_schedules(session, now)] == [schedule_id]


def test_launch_due_runs_each_due_schedule_once_and_records_a_broken_one(
    engine: Engine, db_url: str, tmp_path: Path, checkpoint: Path
) -> None:
    from workers.backend import scan_backend

    folder = tmp_path / "media"
    media_factory.write_image(folder / "one.png")
    broken = _overdue_schedule(engine, "gone", str(tmp_path / "no-such-folder"))
    working = _overdue_schedule(engine, "local", str(folder), when="0 2 * * *")
    settings = Settings.from_env({"DEEPSCAN_DATABASE_URL": db_url, "DEEPSCAN_CHECKPOINT": str(checkpoint)})

    def backend_for(settings: Settings) -> ScanBackend:
        return scan_backend(settings, engine)

    launched = launch_due(settings, engine, backend_for=backend_for)
    assert launch_due(settings, engine, backend_for=backend_for) == []
    assert launch_schedule(settings, engine, working, backend_for=backend_for) is None, (
        "a launcher that judged it due before the first claim"
    )

    with Session(engine) as session:
        jobs = {int(j.schedule_id or 0): j for j in session.scalars(select(ScanJob).where(ScanJob.id.in_(launched)))}
        schedules = {s.id: s for s in session.scalars(select(Schedule))}
    assert sorted(jobs) == sorted([broken, working])
    assert jobs[broken].status == "failed"
    assert "no-such-folder" in (jobs[broken].error or "")
    assert jobs[working].status == "done"
    assert [Path(i.url).name for i in items_of(db_url, jobs[working].id)] == ["one.png"]
    for schedule_id, job in jobs.items():
        assert schedules[schedule_id].last_job_id == job.id
        assert schedules[schedule_id].last_run_at is not None


# --- the commands ------------------------------------------------------------------------------


def _schedules(runner: CliRunner, url: str) -> list[dict[str, object]]:
    result = invoke(runner, url, "schedule", "list", "--format", "json")
    assert result.exit_code == 0, result.output
    parsed = json.loads(result.stdout)
    assert parsed["next"] is None
    assert isinstance(parsed["items"], list)
    return parsed["items"]


def test_schedule_add_list_remove(runner: CliRunner, db_url: str, engine: Engine) -> None:
    added = invoke(
        runner, db_url, "schedule", "add", "nightly", "s3://uploads/new/", "--cron", "0 2 * * *", "--no-faces"
    )
    assert added.exit_code == 0, added.output
    added = invoke(runner, db_url, "schedule", "add", "often", "/srv/media", "--cron", "@every 10m")
    assert added.exit_code == 0, added.output

    records = {r["name"]: r for r in _schedules(runner, db_url)}
    with Session(engine) as session:
        created = {s.name: s.created_at for s in session.scalars(select(Schedule))}
        options = session.scalars(select(Schedule.options).where(Schedule.name == "nightly")).one()
    assert options["faces"] is False
    nightly, often = records["nightly"], records["often"]
    assert nightly["sources"] == ["s3://uploads/new/"]
    assert nightly["last_run_at"] is None
    assert nightly["last_job_id"] is None
    next_nightly = dt.datetime.fromisoformat(str(nightly["next_run_at"]))
    day = created["nightly"].date() + dt.timedelta(days=created["nightly"].hour >= 2)
    assert next_nightly == dt.datetime.combine(day, dt.time(2, 0), dt.UTC)
    assert dt.datetime.fromisoformat(str(often["next_run_at"])) == created["often"] + dt.timedelta(minutes=10)

    table = invoke(runner, db_url, "schedule", "list")
    assert table.exit_code == 0
    header, *rows = table.stdout.splitlines()
    assert header.split()[:3] == ["name", "enabled", "when"]
    assert "next run" in header
    assert "last run" in header
    assert len(rows) == 2
    assert "0 2 * * *" in table.output
    assert "s3://uploads/new/" in table.output
    assert re.search(r"\d{2}:\d{2}:\d{2}Z", table.output)
    assert not re.search(r"\d{2}:\d{2}:\d{2}\.\d", table.output), "no microseconds"

    removed = invoke(runner, db_url, "schedule", "remove", "nightly")
    assert removed.exit_code == 0, removed.output
    assert [r["name"] for r in _schedules(runner, db_url)] == ["often"]
    missing = invoke(runner, db_url, "schedule", "remove", "nightly")
    assert missing.exit_code == 1
    assert missing.stderr.strip().count("\n") == 0
    assert "no schedule named 'nightly'" in missing.stderr


@pytest.mark.parametrize("cron", ["0 2 * *", "61 * * * *", "@every 10x", "0 0 31 2 *"])
def test_schedule_add_refuses_a_bad_cron_in_one_line(runner: CliRunner, db_url: str, cron: str) -> None:
    result = invoke(runner, db_url, "schedule", "add", "bad", "/srv/media", "--cron", cron)
    assert result.exit_code == 2
    assert "--cron" in result.stderr
    assert "Traceback" not in result.output
    assert "acceptable" not in result.stderr  # croniter's own words
    assert _schedules(runner, db_url) == []


def test_schedule_add_refuses_a_duplicate_name(runner: CliRunner, db_url: str) -> None:
    assert invoke(runner, db_url, "schedule", "add", "nightly", "/a", "--cron", "0 2 * * *").exit_code == 0
    again = invoke(runner, db_url, "schedule", "add", "nightly", "/b", "--cron", "0 3 * * *")
    assert again.exit_code == 1
    assert again.stderr.strip().count("\n") == 0
    assert "exists" in again.stderr
    assert [r["sources"] for r in _schedules(runner, db_url)] == [["/a"]]


def test_removing_a_schedule_keeps_its_jobs(runner: CliRunner, db_url: str, engine: Engine) -> None:
    assert invoke(runner, db_url, "schedule", "add", "nightly", "/a", "--cron", "0 2 * * *").exit_code == 0
    with Session(engine) as session, session.begin():
        schedule_id = session.scalars(select(Schedule.id)).one()
        session.add(ScanJob(name="nightly (scheduled)", source_spec=["/a"], status="done", schedule_id=schedule_id))
    assert invoke(runner, db_url, "schedule", "remove", "nightly").exit_code == 0
    with Session(engine) as session:
        assert session.scalars(select(ScanJob.schedule_id)).all() == [None]


def _job_with_items(engine: Engine, statuses: list[str], *, job_status: str = "running") -> int:
    with Session(engine) as session, session.begin():
        job = ScanJob(name="big", source_spec=["/media"], status=job_status)
        session.add(job)
        for n, status in enumerate(statuses):
            session.add(MediaItem(job=job, url=f"file:///media/{n}.jpg", status=status))
        session.flush()
        return job.id


def test_jobs_cancel_stops_the_queued_items(runner: CliRunner, db_url: str, engine: Engine) -> None:
    job_id = _job_with_items(engine, ["done", "done", "processing", "queued", "queued", "queued"])
    result = invoke(runner, db_url, "jobs", "cancel", str(job_id))
    assert result.exit_code == 0, result.output
    assert "3 queued items" in result.output
    with Session(engine) as session:
        job = session.get_one(ScanJob, job_id)
        assert job.status == "cancelled"
        assert job.finished_at is not None
        statuses = sorted(session.scalars(select(MediaItem.status).where(MediaItem.job_id == job_id)))
    assert statuses == ["cancelled", "cancelled", "cancelled", "done", "done", "processing"]

    again = invoke(runner, db_url, "jobs", "cancel", str(job_id))
    assert again.exit_code == 0
    assert "already cancelled" in again.output


def test_jobs_cancel_of_a_finished_or_unknown_job(runner: CliRunner, db_url: str, engine: Engine) -> None:
    done = _job_with_items(engine, ["done"], job_status="done")
    result = invoke(runner, db_url, "jobs", "cancel", str(done))
    assert result.exit_code == 0
    assert "already done" in result.output
    with Session(engine) as session:
        assert session.get_one(ScanJob, done).status == "done"
    unknown = invoke(runner, db_url, "jobs", "cancel", "999999")
    assert unknown.exit_code == 1
    assert unknown.stderr.strip().count("\n") == 0
    assert "no job 999999" in unknown.stderr


def test_run_now_without_a_broker_scans_only_new_files(
    runner: CliRunner, db_url: str, tmp_path: Path, checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEEPSCAN_CHECKPOINT", str(checkpoint))
    folder = tmp_path / "media"
    for n in range(2):
        media_factory.write_image(folder / f"img_{n}.png", seed=n)
    assert (
        invoke(runner, db_url, "schedule", "add", "local", str(folder), "--cron", "0 2 * * *", "--no-faces").exit_code
        == 0
    )

    def run_now() -> list[str]:
        result = invoke(runner, db_url, "schedule", "run-now", "local")
        assert result.exit_code == 0, result.output
        (record,) = _schedules(runner, db_url)
        job_id = int(str(record["last_job_id"]))
        assert f"job {job_id}" in result.output
        engine = make_engine(db_url)
        with Session(engine) as session:
            assert session.get_one(ScanJob, job_id).status == "done"
        engine.dispose()
        items = items_of(db_url, job_id)
        assert all(i.status == "done" and i.verdict in {"fake", "real"} for i in items)
        return [Path(i.url).name for i in items]

    assert run_now() == ["img_0.png", "img_1.png"]
    media_factory.write_image(folder / "img_2.png", seed=2)
    media_factory.write_image(folder / "img_0.png", size=(64, 48), seed=7)  # replaced by other bytes
    assert run_now() == ["img_0.png", "img_2.png"]
    assert run_now() == []


def test_run_now_of_an_unknown_schedule_or_a_missing_source(
    runner: CliRunner, db_url: str, tmp_path: Path, checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = invoke(runner, db_url, "schedule", "run-now", "nope")
    assert result.exit_code == 1
    assert "no schedule named 'nope'" in result.stderr

    monkeypatch.setenv("DEEPSCAN_CHECKPOINT", str(checkpoint))
    gone = str(tmp_path / "gone")
    assert invoke(runner, db_url, "schedule", "add", "gone", gone, "--cron", "0 2 * * *").exit_code == 0
    result = invoke(runner, db_url, "schedule", "run-now", "gone")
    assert result.exit_code == 1
    assert "failed" in result.output
    assert gone in result.output
    (record,) = _schedules(runner, db_url)
    assert record["last_job_id"] is not None


def test_a_schedule_that_retries_errors_scans_errored_objects_again(engine: Engine) -> None:
    schedule_id = _schedule_with_history(engine)
    refs = [_ref("s3://b/a.jpg"), _ref("s3://b/f.jpg")]  # a: done earlier; f: ended error earlier
    assert [r.url for r in only_new_or_changed(engine, schedule_id, refs)] == []
    with Session(engine) as session, session.begin():
        session.get_one(Schedule, schedule_id).retry_errors = True
    assert [r.url for r in only_new_or_changed(engine, schedule_id, refs)] == ["s3://b/f.jpg"]


def test_schedule_disable_enable_and_edit(runner: CliRunner, db_url: str, engine: Engine, tmp_path: Path) -> None:
    assert invoke(runner, db_url, "schedule", "add", "nightly", "/a", "--cron", "@daily").exit_code == 0
    (record,) = _schedules(runner, db_url)
    assert (record["cron"], record["enabled"], record["retry_errors"]) == ("@daily", True, False)

    disabled = invoke(runner, db_url, "schedule", "disable", "nightly")
    assert disabled.exit_code == 0, disabled.output
    (record,) = _schedules(runner, db_url)
    assert (record["enabled"], record["next_run_at"]) == (False, None)
    with Session(engine) as session:
        assert due_schedules(session, dt.datetime.now(dt.UTC) + dt.timedelta(days=30)) == []
    assert "disabled" in invoke(runner, db_url, "schedule", "list").output

    assert invoke(runner, db_url, "schedule", "enable", "nightly").exit_code == 0
    with Session(engine) as session:
        assert len(due_schedules(session, dt.datetime.now(dt.UTC) + dt.timedelta(days=2))) == 1

    checkpoint = write_tiny_checkpoint(tmp_path / "tiny.safetensors")
    args = ["--cron", "@hourly", "--source", "/b", "--source", "/c", "--retry-errors", "--checkpoint", str(checkpoint)]
    edited = invoke(runner, db_url, "schedule", "edit", "nightly", *args)
    assert edited.exit_code == 0, edited.output
    (record,) = _schedules(runner, db_url)
    assert (record["cron"], record["sources"], record["retry_errors"]) == ("@hourly", ["/b", "/c"], True)
    assert record["checkpoint"] == str(checkpoint.resolve())
    assert invoke(runner, db_url, "schedule", "edit", "nightly", "--no-checkpoint").exit_code == 0
    assert _schedules(runner, db_url)[0]["checkpoint"] is None

    assert invoke(runner, db_url, "schedule", "edit", "nightly").exit_code == 2  # nothing to change
    assert invoke(runner, db_url, "schedule", "edit", "nightly", "--cron", "@never").exit_code == 2
    unknown = invoke(runner, db_url, "schedule", "disable", "nope")
    assert unknown.exit_code == 1
    assert "no schedule named 'nope'" in unknown.stderr


def test_run_now_uses_the_schedules_own_checkpoint_and_says_when_there_is_none(
    runner: CliRunner, db_url: str, tmp_path: Path, checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "media"
    media_factory.write_image(folder / "one.png")
    bare = invoke(runner, db_url, "schedule", "add", "bare", str(folder), "--cron", "@daily", "--no-faces")
    assert bare.exit_code == 0, bare.output  # DEEPSCAN_CHECKPOINT is set: runs will use it
    monkeypatch.delenv("DEEPSCAN_CHECKPOINT")
    refused = invoke(runner, db_url, "schedule", "run-now", "bare")
    assert refused.exit_code == 2
    assert "no checkpoint configured" in refused.stderr

    own = ["schedule", "add", "own", str(folder), "--cron", "@daily", "--no-faces", "--checkpoint", str(checkpoint)]
    assert invoke(runner, db_url, *own).exit_code == 0
    ran = invoke(runner, db_url, "schedule", "run-now", "own")
    assert ran.exit_code == 0, ran.output
    assert "(done): 1 new or changed item\n" in ran.output  # one item, not "1 items"
    given = invoke(runner, db_url, "schedule", "run-now", "bare", "--checkpoint", str(checkpoint))
    assert given.exit_code == 0, given.output


def test_schedule_add_without_a_broker_needs_a_checkpoint_now(
    runner: CliRunner, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DEEPSCAN_CHECKPOINT")
    refused = invoke(runner, db_url, "schedule", "add", "bare", str(tmp_path), "--cron", "@daily")
    assert refused.exit_code == 2
    assert "no checkpoint configured" in refused.stderr
    assert _schedules(runner, db_url) == []
    # With a broker the workers score with their own checkpoint: nothing to ask for here.
    distributed = [
        "--broker-url",
        "redis://127.0.0.1:1/0",
        "schedule",
        "add",
        "bare",
        str(tmp_path),
        "--cron",
        "@daily",
    ]
    assert invoke(runner, db_url, *distributed).exit_code == 0


def test_schedule_sources_are_stored_absolute_and_a_missing_relative_one_is_refused(
    runner: CliRunner, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "media").mkdir()
    (tmp_path / "urls.txt").write_text("https://example.org/a.jpg\n")
    monkeypatch.chdir(tmp_path)
    added = invoke(
        runner, db_url, "schedule", "add", "nightly", "./media", "@urls.txt", "s3://b/new/", "--cron", "@daily"
    )
    assert added.exit_code == 0, added.output
    (record,) = _schedules(runner, db_url)
    assert record["sources"] == [str(tmp_path / "media"), f"@{tmp_path / 'urls.txt'}", "s3://b/new/"]

    missing = invoke(runner, db_url, "schedule", "add", "typo", "./meda", "--cron", "@daily")
    assert missing.exit_code == 2
    assert "no such file or directory: ./meda" in missing.stderr
    edited = invoke(runner, db_url, "schedule", "edit", "nightly", "--source", "./meda")
    assert edited.exit_code == 2
    assert [r["name"] for r in _schedules(runner, db_url)] == ["nightly"]


def test_run_now_exits_3_when_items_errored(runner: CliRunner, db_url: str, tmp_path: Path) -> None:
    folder = tmp_path / "media"
    media_factory.write_image(folder / "good.png")
    (folder / "broken.jpg").write_bytes(b"not an image at all")
    assert (
        invoke(runner, db_url, "schedule", "add", "mixed", str(folder), "--cron", "@daily", "--no-faces").exit_code == 0
    )
    ran = invoke(runner, db_url, "schedule", "run-now", "mixed")
    assert ran.exit_code == 3, ran.output
    assert "2 new or changed items, 1 error" in ran.output


# --- a schedule under a real beat process ------------------------------------------------------


def beat_process(env: dict[str, str], log_path: Path) -> AbstractContextManager[subprocess.Popen[bytes]]:
    """A real `deepscan beat --tick 1` process; stopped (its whole process group) afterwards."""
    return deepscan_process(["beat", "--tick", "1"], env, log_path)


def _wait_for(condition: Callable[[], bool], what: str, *logs: Path) -> None:
    deadline = time.monotonic() + DEFAULT_WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}" for log in logs)
            raise AssertionError(f"timed out waiting for {what}\n{tails}")
        time.sleep(0.2)


def _scheduled_jobs(url: str, schedule_id: int) -> list[ScanJob]:
    engine = make_engine(url)
    try:
        with Session(engine) as session:
            return list(session.scalars(select(ScanJob).where(ScanJob.schedule_id == schedule_id).order_by(ScanJob.id)))
    finally:
        engine.dispose()


def _schedule(url: str, name: str) -> Schedule:
    engine = make_engine(url)
    try:
        with Session(engine) as session:
            return session.scalars(select(Schedule).where(Schedule.name == name)).one()
    finally:
        engine.dispose()


@pytest.mark.slow
def test_beat_fires_a_schedule_whose_second_run_scans_only_new_objects(
    postgresql_url: str, redis_server_url: str, tmp_path: Path, checkpoint: Path
) -> None:
    broker_url = redis_server_url
    queue = f"deepscan-test-{uuid.uuid4().hex[:8]}"
    first_batch, second_batch = tmp_path / "first", tmp_path / "second"
    for n in range(3):
        media_factory.write_image(first_batch / f"img_{n}.jpg", seed=n)
    for n in range(3, 5):
        media_factory.write_image(second_batch / f"img_{n}.png", seed=n)
    logs = (tmp_path / "worker.log", tmp_path / "beat.log")
    try:
        with s3_server() as endpoint:
            env = deepscan_env(
                DEEPSCAN_DATABASE_URL=postgresql_url,
                DEEPSCAN_BROKER_URL=broker_url,
                DEEPSCAN_QUEUE=queue,
                DEEPSCAN_CHECKPOINT=str(checkpoint),
                DEEPSCAN_S3_ENDPOINT_URL=endpoint,
                DEEPSCAN_HOME=str(tmp_path / "home"),
                **TEST_AWS_ENV,
            )
            upload_folder(endpoint, "uploads", first_batch)
            added = CliRunner().invoke(
                cli, ["schedule", "add", "nightly", "s3://uploads/", "--cron", "@every 2s", "--no-faces"], env=env
            )
            assert added.exit_code == 0, added.output
            schedule_id = _schedule(postgresql_url, "nightly").id

            def runs() -> list[ScanJob]:
                return _scheduled_jobs(postgresql_url, schedule_id)

            with worker_process(env, logs[0]), beat_process(env, logs[1]):
                _wait_for(lambda: any(j.status == "done" for j in runs()), "the first run", *logs)
                _wait_for(lambda: len(runs()) >= 2 and runs()[-1].status == "done", "a run with nothing new", *logs)
                upload_folder(endpoint, "uploads", second_batch)
                _wait_for(
                    lambda: any(j.status == "done" and items_of(postgresql_url, j.id) for j in runs()[1:]),
                    "a run with the new objects",
                    *logs,
                )

        first, *later = runs()
        urls = {job.id: [i.url for i in items_of(postgresql_url, job.id)] for job in later}
        assert [i.url for i in items_of(postgresql_url, first.id)] == [f"s3://uploads/img_{n}.jpg" for n in range(3)]
        assert all(i.status == "done" and i.verdict in {"fake", "real"} for i in items_of(postgresql_url, first.id))
        assert [u for u in urls.values() if u] == [["s3://uploads/img_3.png", "s3://uploads/img_4.png"]], urls
        assert sum(not u for u in urls.values()) >= 1, "a run that found nothing new still leaves a job"
        assert [job.status for job in [first, *later]] == ["done"] * (1 + len(later)), "empty runs end done"

        schedule = _schedule(postgresql_url, "nightly")
        assert schedule.last_job_id == later[-1].id
        assert schedule.last_run_at is not None
        assert schedule.last_run_at <= later[-1].created_at, "the run was claimed before its job was created"
    finally:
        redis.Redis.from_url(broker_url).delete(queue)
        empty_tables(postgresql_url)
