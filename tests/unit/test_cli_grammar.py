"""One CLI grammar: global options anywhere, one duration syntax, one list shape, exit codes a script can rely on."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy.orm import Session

from deepscan.cli import cli
from deepscan.cli.context import AppContext
from deepscan.cli.options import WHEN
from scanner.db import make_engine
from scanner.durations import parse_duration
from scanner.errors import ConfigError
from scanner.models import MediaItem, ScanJob
from scanner.settings import Settings
from tests import media_factory
from tests.conftest import empty_tables
from tests.pipeline_helpers import job_count, write_tiny_checkpoint


@pytest.fixture
def db(sqlite_url: str) -> Iterator[str]:
    yield sqlite_url
    empty_tables(sqlite_url)


# --- durations ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("15m", 900), ("1.5h", 5400), ("7d", 604800), ("1w", 604800), (" 2 h ", 7200), ("0.5s", 0.5)],
)
def test_one_duration_grammar(text: str, seconds: float) -> None:
    assert parse_duration(text) == dt.timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "15", "m", "1y", "1.5.2h", "-1h", "1h30m", "soon"])
def test_not_a_duration(text: str) -> None:
    with pytest.raises(ConfigError, match=re.escape("is not a duration like 30s, 15m, 1.5h, 7d or 1w")):
        parse_duration(text)


def test_since_takes_the_same_durations_as_older_than() -> None:
    for text in ("1.5h", "1w", "30s"):
        age = dt.datetime.now(dt.UTC) - WHEN.convert(text, None, None)
        assert abs(age - parse_duration(text)) < dt.timedelta(minutes=1)  # hang-proof: only the parse is checked
    assert WHEN.convert("2026-01-31", None, None) == dt.datetime(2026, 1, 31, tzinfo=dt.UTC)


def test_bad_durations_are_usage_errors(runner: CliRunner, db: str) -> None:
    result = runner.invoke(cli, ["--database-url", db, "jobs", "reconcile", "--older-than", "soon"])
    assert result.exit_code == 2
    assert "30s, 15m, 1.5h, 7d or 1w" in result.stderr
    assert runner.invoke(cli, ["--database-url", db, "results", "--since", "1.5h"]).exit_code == 0


# --- global options before or after the subcommand ---------------------------------------------


def test_global_options_work_before_and_after_the_subcommand(runner: CliRunner, db: str) -> None:
    before = runner.invoke(cli, ["--database-url", db, "--debug", "jobs", "list", "--format", "json"])
    after = runner.invoke(cli, ["jobs", "list", "--format", "json", "--database-url", db, "--debug"])
    nested = runner.invoke(cli, ["schedule", "list", "--no-progress", "--database-url", db, "-v"])
    assert before.exit_code == 0, before.output
    assert after.exit_code == 0, after.output
    assert nested.exit_code == 0, nested.output
    assert json.loads(before.stdout) == json.loads(after.stdout) == {"items": [], "next": None}


def test_a_global_option_after_the_subcommand_wins_over_the_environment(
    runner: CliRunner, db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEEPSCAN_DATABASE_URL", f"sqlite:///{tmp_path / 'typo.db'}")
    result = runner.invoke(cli, ["results", "--database-url", db])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "typo.db").exists()


def test_help_names_the_exit_codes_and_the_global_options(runner: CliRunner) -> None:
    for args in ([], ["results"], ["scan"], ["schedule", "add"], ["db", "current"]):
        text = runner.invoke(cli, [*args, "--help"]).output
        assert "Exit codes: 0 success, 1 failure, 2 usage error, 3 finished with item errors" in text, args
        assert "--database-url" in text, args
        assert "--no-progress" in text, args


# --- a database that does not exist is never created by reading it -----------------------------


@pytest.mark.parametrize(
    "command", [["results"], ["jobs", "list"], ["stats"], ["schedule", "list"], ["show", "1"], ["db", "current"]]
)
def test_read_commands_on_a_missing_sqlite_file_say_so_and_create_nothing(
    runner: CliRunner, tmp_path: Path, command: list[str]
) -> None:
    missing = tmp_path / "typo" / "deepscan.db"
    result = runner.invoke(cli, [*command, "--database-url", f"sqlite:///{missing}"])
    assert result.exit_code == 1
    assert f"no database at {missing}" in result.stderr
    assert not missing.exists()
    assert not missing.parent.exists()


def test_a_mistyped_deepscan_home_is_not_filled_with_an_empty_database(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEEPSCAN_HOME", str(tmp_path / "deepscna"))
    result = runner.invoke(cli, ["jobs", "list"])
    assert result.exit_code == 1
    assert "no database at" in result.stderr
    assert not (tmp_path / "deepscna").exists()


def test_db_upgrade_creates_the_database(runner: CliRunner, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new' / 'deepscan.db'}"
    assert runner.invoke(cli, ["db", "upgrade", "--database-url", url]).exit_code == 0
    assert runner.invoke(cli, ["results", "--database-url", url]).exit_code == 0


# --- every list has the same JSON shape --------------------------------------------------------


def _add_items(url: str) -> tuple[int, int]:
    engine = make_engine(url)
    now = dt.datetime.now(dt.UTC)
    with Session(engine) as session, session.begin():
        job = ScanJob(name="j", source_spec=["/m"], status="done", threshold=0.5)
        session.add(job)
        session.add(MediaItem(job=job, url="file:///m/ok.jpg", kind="image", status="done", score=0.9, finished_at=now))
        bad = MediaItem(job=job, url="file:///m/bad.jpg", kind="unknown", status="error", finished_at=now)
        bad.error = "not an image or video"
        session.add(bad)
        session.flush()
        ids = job.id, bad.id
    engine.dispose()
    return ids


@pytest.mark.parametrize(
    "command", [["results"], ["stats"], ["stats", "--by", "job"], ["jobs", "list"], ["schedule", "list"]]
)
def test_every_list_command_prints_items_and_next_in_json_and_parses_in_jsonl_and_csv(
    runner: CliRunner, db: str, command: list[str]
) -> None:
    _add_items(db)
    payload = json.loads(runner.invoke(cli, ["--database-url", db, *command, "--format", "json"]).stdout)
    assert set(payload) == {"items", "next"}
    jsonl = runner.invoke(cli, ["--database-url", db, *command, "--format", "jsonl"])
    assert [json.loads(line) for line in jsonl.stdout.splitlines()] == payload["items"]
    csv_text = runner.invoke(cli, ["--database-url", db, *command, "--format", "csv"]).stdout
    assert len(csv_text.splitlines()) == 1 + len(payload["items"])


def test_results_of_errored_items_show_the_error_column(runner: CliRunner, db: str) -> None:
    _add_items(db)
    errors = runner.invoke(cli, ["--database-url", db, "results", "--status", "error"])
    assert errors.exit_code == 0
    header, row = errors.stdout.splitlines()
    assert header.split()[-1] == "error"
    assert row.endswith("not an image or video")
    done = runner.invoke(cli, ["--database-url", db, "results", "--status", "done"])
    assert "error" not in done.stdout.splitlines()[0].split()


def test_show_takes_a_local_path_as_scan_does(
    runner: CliRunner, db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = tmp_path / "photos" / "a.png"
    media_factory.write_image(image)
    engine = make_engine(db)
    with Session(engine) as session, session.begin():
        job = ScanJob(name="j", source_spec=[str(image)], status="done")
        session.add(MediaItem(job=job, url=image.resolve().as_uri(), kind="image", status="done", score=0.2))
    engine.dispose()
    monkeypatch.chdir(tmp_path)
    for given in (str(image), "photos/a.png", image.resolve().as_uri()):
        shown = runner.invoke(cli, ["--database-url", db, "show", given, "--format", "json"])
        assert shown.exit_code == 0, (given, shown.output)
        assert json.loads(shown.stdout)["item"]["url"] == image.resolve().as_uri()


def test_export_of_an_unknown_job_fails_clearly(runner: CliRunner, db: str, tmp_path: Path) -> None:
    result = runner.invoke(cli, ["--database-url", db, "export-training-set", str(tmp_path / "out"), "--job", "99"])
    assert result.exit_code == 1
    assert "no job 99" in result.stderr
    assert not (tmp_path / "out").exists()


# --- scan: problems found before any model loads -----------------------------------------------


def test_an_empty_folder_is_nothing_to_scan(runner: CliRunner, db: str, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not media")
    result = runner.invoke(cli, ["--database-url", db, "scan", str(tmp_path / "empty")])  # no checkpoint either
    assert result.exit_code == 1
    assert "nothing to scan" in result.stderr
    assert job_count(db) == 0


def test_a_bad_url_scheme_is_refused_before_the_model_loads(runner: CliRunner, db: str) -> None:
    result = runner.invoke(cli, ["--database-url", db, "scan", "ftp://example.com/a.jpg"])  # no checkpoint either
    assert result.exit_code == 2
    assert "unsupported URL scheme 'ftp'" in result.stderr
    assert job_count(db) == 0


def test_a_missing_checkpoint_is_a_usage_error_everywhere(runner: CliRunner, db: str, tmp_path: Path) -> None:
    media_factory.write_image(tmp_path / "a.png")
    none = runner.invoke(cli, ["--database-url", db, "scan", str(tmp_path / "a.png")])
    gone = runner.invoke(cli, ["--database-url", db, "scan", str(tmp_path / "a.png"), "--checkpoint", "nope.st"])
    worker = runner.invoke(cli, ["--broker-url", "redis://127.0.0.1:1/0", "worker"])
    for result in (none, gone, worker):
        assert result.exit_code == 2, result.output
    assert "no checkpoint configured" in none.stderr
    assert "deepscan demo" in none.stderr
    assert "nope.st does not exist" in gone.stderr
    assert job_count(db) == 0


def test_scan_progress_stays_out_of_logs(runner: CliRunner, db: str, tmp_path: Path) -> None:
    media_factory.write_image(tmp_path / "media" / "a.png")
    checkpoint = write_tiny_checkpoint(tmp_path / "tiny.safetensors")
    result = runner.invoke(
        cli, ["--database-url", db, "scan", str(tmp_path / "media"), "--checkpoint", str(checkpoint)]
    )
    assert result.exit_code == 0, result.output
    assert "\r" not in result.stderr  # CliRunner's stderr is no terminal: no bar redrawn in the log
    assert "item/s" not in result.stderr
    assert "job " in result.stdout


def test_progress_bars_only_on_a_terminal_and_never_with_no_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    app = AppContext.lazy(lambda: Settings.from_env({}), debug=False)
    monkeypatch.setattr("sys.stderr.isatty", lambda: True, raising=False)
    assert app.show_progress("table")
    assert not app.show_progress("json")
    app.progress = False
    assert not app.show_progress("table")
    monkeypatch.setattr("sys.stderr.isatty", lambda: False, raising=False)
    assert not AppContext.lazy(lambda: Settings.from_env({}), debug=False).show_progress("table")
