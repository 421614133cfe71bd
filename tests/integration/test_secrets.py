"""Credentials in a scanned URL or a webhook URL never reach logs, CLI output, job names or webhook events.

One real embedded scan (SQLite and PostgreSQL) of a media URL with `user:password@` and a
`?token=` from a local HTTP server, with a webhook whose URL carries its own token.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from deepscan.cli import cli
from scanner.db import database_error_message, make_engine
from scanner.models import ScanJob
from scanner.redaction import MAX_JOB_NAME_CHARS
from tests import media_factory
from tests.pipeline_helpers import latest_job, write_tiny_checkpoint
from tests.servers import http_server

SECRETS = ("s3cr3t", "t0ken", "h00ksecret", "X-Amz-Signature", "sig123")


class _Receiver(ThreadingHTTPServer):
    events: list[dict[str, Any]]


class _RefusingHandler(BaseHTTPRequestHandler):
    """Records each event, then refuses it: the refusal is logged, naming the webhook."""

    server: _Receiver

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def do_POST(self) -> None:
        self.server.events.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(403)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    server = _Receiver(("127.0.0.1", 0), _RefusingHandler)
    server.events = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook?token=h00ksecret", server.events
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


@pytest.fixture(scope="module")
def media_base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("media")
    media_factory.write_image(root / "photo.jpg", size=(64, 64), seed=1)
    with http_server(root) as base:
        yield base


def _assert_no_secret(text: str) -> None:
    leaked = [secret for secret in SECRETS if secret in text]
    assert not leaked, f"{leaked} in:\n{text}"


def test_credentials_never_reach_logs_output_job_names_or_webhooks(
    runner: CliRunner,
    db_url: str,
    checkpoint: Path,
    media_base: str,
    receiver: tuple[str, list[dict[str, Any]]],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DEEPSCAN_ALLOW_PRIVATE_URLS", "1")  # the servers listen on loopback
    monkeypatch.setenv("DEEPSCAN_WEBHOOK_SECRET", "signing-key")  # webhooks are never sent unsigned
    caplog.set_level(logging.DEBUG)  # urllib3 logs each request line, query string included
    hook, events = receiver
    host = media_base.removeprefix("http://")
    secret_url = f"http://scanner:s3cr3t@{host}/photo.jpg?token=t0ken"
    args = ["--database-url", db_url, "scan", secret_url, "--checkpoint", str(checkpoint), "--threshold", "0"]

    scanned = runner.invoke(cli, [*args, "--webhook", hook, "--format", "json"], catch_exceptions=False)

    assert scanned.exit_code == 0, scanned.output
    summary = json.loads(scanned.output.strip().splitlines()[-1])
    assert (summary["done"], summary["flagged"]) == (1, 1)  # the URL was fetched with its credentials
    job = latest_job(db_url)
    assert job.name == f"{media_base}/photo.jpg"
    outputs = [scanned.output]
    for command in (["jobs", "list"], ["jobs", "show", str(job.id)]):
        for output_format in ("table", "json"):
            shown = runner.invoke(cli, ["--database-url", db_url, *command, "--format", output_format])
            assert shown.exit_code == 0, shown.output
            assert f"{media_base}/photo.jpg" in shown.output
            outputs.append(shown.output)
    finished = [e for e in events if e["event"] == "job.finished"]
    flagged = [e for e in events if e["event"] == "item.flagged"]
    assert [e["name"] for e in finished] == [f"{media_base}/photo.jpg"]
    assert [e["url"] for e in flagged] == [f"{media_base}/photo.jpg"]
    assert "refused the event: http 403" in caplog.text  # the webhook is named in the log, without its token
    assert "GET /photo.jpg" in caplog.text  # urllib3's request line was logged, without its query
    for text in (*outputs, json.dumps(events), caplog.text, *(r.getMessage() for r in caplog.records)):
        _assert_no_secret(text)


def test_a_long_presigned_name_is_redacted_and_cut_instead_of_failing(
    runner: CliRunner, db_url: str, checkpoint: Path, tmp_path: Path
) -> None:
    media_factory.write_image(tmp_path / "a.jpg", size=(64, 64))
    presigned = "https://bucket.s3.amazonaws.com/" + "k" * 300 + ".jpg?X-Amz-Signature=sig123"
    args = ["--database-url", db_url, "scan", str(tmp_path / "a.jpg"), "--checkpoint", str(checkpoint)]

    result = runner.invoke(cli, [*args, "--name", presigned, "--format", "json"])

    assert result.exit_code == 0, result.output
    name = latest_job(db_url).name
    assert len(name) == MAX_JOB_NAME_CHARS
    assert name.startswith("https://bucket.s3.amazonaws.com/kkk")
    assert name.endswith("…")
    _assert_no_secret(name)


def test_a_value_the_database_refuses_is_not_reported_as_unreachable(postgresql_url: str) -> None:
    engine = make_engine(postgresql_url)
    try:
        with pytest.raises(DBAPIError) as caught, Session(engine) as session, session.begin():
            session.add(ScanJob(name="x" * (MAX_JOB_NAME_CHARS + 1), source_spec=[], options={}, status="pending"))
        message = database_error_message(engine, caught.value)
    finally:
        engine.dispose()

    assert "cannot reach" not in message
    assert "refused the request: value too long" in message
    assert "\n" not in message
