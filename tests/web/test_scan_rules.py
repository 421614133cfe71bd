"""The core's rules for a scan, asked of both front ends: the same outcome and the same words.

`deepscan scan` and `POST /api/v1/scans` (and the schedule and job commands beside them) hand the same
values to the core, which refuses a malformed webhook URL, sources with nothing to scan, options out of
range, a schedule name in use and a job that does not exist; each front end only maps the core's error
to its own exit code or HTTP status.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy.orm import Session

from deepscan.cli import cli
from scanner.db import make_engine
from scanner.errors import ConflictError, InvalidInputError, NotFoundError
from scanner.jobs import ScanOptions, cancel_job
from scanner.launch import NOTHING_TO_SCAN
from scanner.producer import ScanRequest
from scanner.review import MAX_NOTE_CHARS, ReviewInput
from scanner.schedules import ScheduleChanges, ScheduleSpec, add_schedule
from tests.conftest import empty_tables
from tests.pipeline_helpers import job_count
from tests.web.conftest import Server, assert_problem, create_token, free_port, running_server

BAD_WEBHOOK = "hooks.example/no-scheme"
BAD_WEBHOOK_WORDS = f"{BAD_WEBHOOK!r} is not a webhook URL: use http(s)://HOST/PATH"


@pytest.fixture(scope="module")
def taking_scans(postgresql_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    """A server that takes scans over local roots; its broker never answers, since every rule here is
    decided before anything is sent (a scan that passed them would fail with 503)."""
    root = tmp_path_factory.mktemp("roots")
    log = tmp_path_factory.mktemp("serve-rules") / "serve.log"
    closed = f"redis://127.0.0.1:{free_port()}/0"
    empty_tables(postgresql_url)
    with running_server(postgresql_url, log, DEEPSCAN_BROKER_URL=closed, DEEPSCAN_LOCAL_ROOTS=str(root)) as srv:
        srv.tokens = {"admin": create_token(postgresql_url, "rules-admin", "admin")}
        yield srv, root
    empty_tables(postgresql_url)


@pytest.fixture
def folder_with_no_media(taking_scans: tuple[Server, Path]) -> Path:
    _, root = taking_scans
    folder = root / "empty"
    folder.mkdir(exist_ok=True)
    (folder / "notes.txt").write_text("not media")
    return folder


def _cli(database_url: str, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--database-url", database_url, *args])
    return result.exit_code, result.stderr


def test_a_malformed_webhook_url_is_refused_in_the_same_words(
    taking_scans: tuple[Server, Path], folder_with_no_media: Path
) -> None:
    server, _ = taking_scans
    with pytest.raises(InvalidInputError, match="is not a webhook URL"):
        ScanRequest(["s3://bucket/"], webhook=BAD_WEBHOOK)
    code, stderr = _cli(server.database_url, "scan", str(folder_with_no_media), "--webhook", BAD_WEBHOOK)
    assert (code, BAD_WEBHOOK_WORDS in stderr) == (2, True), stderr
    body = {"sources": [str(folder_with_no_media)], "webhook": BAD_WEBHOOK}
    answered = server.post("/api/v1/scans", "admin", json=body)
    assert assert_problem(answered, 422)["detail"] == BAD_WEBHOOK_WORDS
    schedule = {"name": "hooked", "sources": ["s3://uploads/"], "cron": "@daily", "webhook": BAD_WEBHOOK}
    assert assert_problem(server.post("/api/v1/schedules", "admin", json=schedule), 422)["detail"] == BAD_WEBHOOK_WORDS
    assert job_count(server.database_url) == 0


def test_sources_with_no_media_are_nothing_to_scan_and_create_no_job(
    taking_scans: tuple[Server, Path], folder_with_no_media: Path
) -> None:
    server, _ = taking_scans
    code, stderr = _cli(server.database_url, "scan", str(folder_with_no_media))
    assert (code, NOTHING_TO_SCAN in stderr) == (1, True), stderr
    answered = server.post("/api/v1/scans", "admin", json={"sources": [str(folder_with_no_media)]})
    assert assert_problem(answered, 422)["detail"] == NOTHING_TO_SCAN
    assert job_count(server.database_url) == 0


def test_options_out_of_range_are_refused_by_the_core_and_by_both_front_ends(
    taking_scans: tuple[Server, Path], folder_with_no_media: Path
) -> None:
    server, _ = taking_scans
    for wrong in ({"fps": 0.0}, {"max_frames": 0}, {"chunk_size": 0}, {"threshold": 1.5}, {"strategy": "median"}):
        with pytest.raises(InvalidInputError):
            ScanOptions(**wrong)
    code, stderr = _cli(server.database_url, "scan", str(folder_with_no_media), "--fps", "0")
    assert (code, "--fps" in stderr) == (2, True), stderr
    answered = server.post("/api/v1/scans", "admin", json={"sources": [str(folder_with_no_media)], "fps": 0})
    assert "fps" in assert_problem(answered, 422)["detail"]
    assert job_count(server.database_url) == 0


def test_a_schedule_name_in_use_is_a_conflict_from_both_front_ends(taking_scans: tuple[Server, Path]) -> None:
    server, _ = taking_scans
    body = {"name": "nightly-rules", "sources": ["s3://uploads/"], "cron": "@daily"}
    assert server.post("/api/v1/schedules", "admin", json=body).status_code == 201
    words = "a schedule named 'nightly-rules' exists: remove it first or choose another name"
    assert assert_problem(server.post("/api/v1/schedules", "admin", json=body), 409)["detail"] == words
    with_broker = ["--broker-url", f"redis://127.0.0.1:{free_port()}/0"]  # else `schedule add` asks for a checkpoint
    code, stderr = _cli(
        server.database_url, *with_broker, "schedule", "add", "nightly-rules", "s3://uploads/", "--cron", "@daily"
    )
    assert (code, words in stderr) == (1, True), stderr
    engine = make_engine(server.database_url)
    try:
        with Session(engine) as session, pytest.raises(ConflictError, match="exists"):
            add_schedule(session, ScheduleSpec(name="nightly-rules", sources=("s3://x/",), when="@daily"))
    finally:
        engine.dispose()
    assert server.request("DELETE", "/api/v1/schedules/nightly-rules", "admin").status_code == 204


def test_a_job_that_does_not_exist_is_not_found_from_both_front_ends(taking_scans: tuple[Server, Path]) -> None:
    server, _ = taking_scans
    engine = make_engine(server.database_url)
    try:
        with pytest.raises(NotFoundError):
            cancel_job(engine, 987654)
    finally:
        engine.dispose()
    words = "no job 987654: see `deepscan jobs list`"
    assert assert_problem(server.post("/api/v1/jobs/987654/cancel", "admin"), 404)["detail"] == words
    code, stderr = _cli(server.database_url, "jobs", "cancel", "987654")
    assert (code, words in stderr) == (1, True), stderr


def test_schedule_and_review_inputs_check_themselves_whichever_front_end_builds_them(
    taking_scans: tuple[Server, Path],
) -> None:
    server, _ = taking_scans
    with pytest.raises(InvalidInputError, match="is not a webhook URL"):
        ScheduleChanges(webhook_url=BAD_WEBHOOK)  # an edit is held to the rule an added schedule is
    with pytest.raises(InvalidInputError, match="not both"):
        ScheduleChanges(webhook_url="https://hooks.example/in", clear_webhook=True)
    with pytest.raises(InvalidInputError, match="at least one source"):
        ScheduleSpec(name="nothing", sources=(), when="@daily")
    assert ScheduleSpec(name="spaced", sources=("s3://x/",), when=" 0  2 * * * ").when == "0 2 * * *"
    both = ["schedule", "edit", "any", "--webhook", "https://h/in", "--no-webhook"]
    result = CliRunner().invoke(
        cli, ["--database-url", server.database_url, *both], env={"DEEPSCAN_WEBHOOK_SECRET": "s" * 32}
    )
    assert (result.exit_code, "not both" in result.stderr) == (2, True), result.stderr

    long_note = "x" * (MAX_NOTE_CHARS + 1)
    words = f"a review note holds at most {MAX_NOTE_CHARS} characters (this one {MAX_NOTE_CHARS + 1})"
    with pytest.raises(InvalidInputError, match=re.escape(words)):
        ReviewInput("fake", "ana", long_note)
    assert ReviewInput("fake", " ana ", "  ").reviewer == "ana"
    assert ReviewInput("fake", "ana", "  ").note is None
    code, stderr = _cli(server.database_url, "review", "1", "--label", "fake", "--note", long_note, "--reviewer", "ana")
    assert (code, words in stderr) == (2, True), stderr
    code, stderr = _cli(server.database_url, "review", "1", "--label", "fake", "--reviewer", " ")
    assert (code, "reviewer name" in stderr) == (2, True), stderr
    answered = server.post("/api/v1/items/1/review", "admin", json={"label": "fake", "note": long_note})
    assert_problem(answered, 422)
