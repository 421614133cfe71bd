"""The schema is built by the migrations, round-trips, has no drift, and enforces its constraints."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, insert, inspect, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from deepscan.cli import cli
from scanner import migrate
from scanner.db import make_engine
from scanner.models import Base, MediaItem, Review, ScanJob
from tests import services

TABLES = {"scan_jobs", "media_items", "frame_results", "reviews", "schedules", "models"}


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'roundtrip.db'}"
        return
    with services.fresh_postgres_database() as url:
        yield url


def run(runner: CliRunner, url: str, *args: str):
    return runner.invoke(cli, ["--database-url", url, "db", *args], catch_exceptions=False)


def test_upgrade_downgrade_upgrade_round_trip(runner: CliRunner, empty_url: str) -> None:
    assert run(runner, empty_url, "upgrade").exit_code == 0
    assert set(_tables(empty_url)) >= TABLES
    assert run(runner, empty_url, "check").exit_code == 0

    result = run(runner, empty_url, "downgrade", "base")
    assert result.exit_code == 0, result.output
    assert not TABLES & set(_tables(empty_url))

    assert run(runner, empty_url, "upgrade").exit_code == 0
    result = run(runner, empty_url, "current")
    assert result.output.startswith(migrate.head_revision())
    assert "up to date" in result.output
    assert run(runner, empty_url, "check").exit_code == 0


def test_check_reports_drift_when_a_model_changes_without_a_revision(runner: CliRunner, empty_url: str) -> None:
    from sqlalchemy import Column, Integer

    run(runner, empty_url, "upgrade")
    column = Column("extra_drift_column", Integer)
    Base.metadata.tables["reviews"].append_column(column)
    try:
        result = run(runner, empty_url, "check")
    finally:
        Base.metadata.tables["reviews"]._columns.remove(column)
    assert result.exit_code == 1
    assert "models and migrations differ" in result.output


def test_job_and_url_are_unique_together(engine: Engine) -> None:
    with Session(engine) as session, session.begin():
        job = ScanJob(name="j", source_spec=["/data"])
        session.add(job)
        session.flush()
        session.add(MediaItem(job_id=job.id, url="file:///a.jpg"))
        job_id = job.id
    with pytest.raises(IntegrityError), Session(engine) as session, session.begin():
        session.add(MediaItem(job_id=job_id, url="file:///a.jpg"))


def test_timestamps_come_back_as_aware_utc(engine: Engine) -> None:
    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    with Session(engine) as session, session.begin():
        session.add(ScanJob(name="tz", source_spec=[], started_at=when))
    with Session(engine) as session:
        started = session.scalars(select(ScanJob.started_at)).one()
    assert started == when
    assert started is not None
    assert started.utcoffset() == dt.timedelta(0)


def test_unreachable_database_is_one_line_and_non_zero(runner: CliRunner) -> None:
    result = runner.invoke(
        cli, ["--database-url", "postgresql+psycopg://postgres@127.0.0.1:1/nowhere", "db", "upgrade"]
    )
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("Error: cannot reach database postgresql+psycopg://postgres@127.0.0.1:1/nowhere")
    assert "Traceback" not in result.output


def test_bad_url_is_one_line_and_debug_shows_the_traceback(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["--database-url", "not a url", "db", "upgrade"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: invalid database URL 'not a url'")
    debug = runner.invoke(cli, ["--debug", "--database-url", "not a url", "db", "upgrade"])
    assert debug.exit_code == 1
    assert debug.exception is not None
    assert "invalid database URL" in str(debug.exception)


def test_default_database_is_created_under_deepscan_home(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEEPSCAN_HOME", str(tmp_path / "home"))
    result = runner.invoke(cli, ["db", "upgrade"], catch_exceptions=False)
    assert result.exit_code == 0
    assert (tmp_path / "home" / "deepscan.db").is_file()


def _tables(url: str) -> list[str]:
    from scanner.db import make_engine

    engine = make_engine(url)
    try:
        return inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_reviews_given_before_0007_follow_their_items_content(empty_url: str) -> None:
    migrate.upgrade(empty_url, "0006")
    tables = Base.metadata.tables
    now = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    engine = make_engine(empty_url)
    with engine.begin() as conn:  # only the columns revision 0006 has
        conn.execute(
            insert(tables["scan_jobs"]).values(
                id=1, name="old", source_spec=["/m"], options={}, status="done", created_at=now
            )
        )
        items = [
            {"id": 1, "url": "file:///m/a.jpg", "content_sha256": "ab" * 32},
            {"id": 2, "url": "file:///m/b.jpg", "content_sha256": None},
        ]
        conn.execute(
            insert(tables["media_items"]),
            [{**i, "job_id": 1, "kind": "image", "status": "done", "attempts": 0} for i in items],
        )
        rows = [{"id": 1, "item_id": 1}, {"id": 2, "item_id": 2}]
        conn.execute(
            insert(tables["reviews"]), [{**r, "label": "real", "reviewer": "ann", "created_at": now} for r in rows]
        )
    migrate.upgrade(empty_url)
    with Session(engine) as session:
        backfilled = dict(session.execute(select(Review.id, Review.content_sha256)).all())
        assert backfilled == {1: "ab" * 32, 2: None}
        assert all(r.undone_at is None for r in session.scalars(select(Review)))
    engine.dispose()
