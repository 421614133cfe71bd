"""Webhooks reach a real local HTTP server with the job's counts, and obey the SSRF rules."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from scanner.cli import cli
from tests import media_factory
from tests.pipeline_helpers import write_tiny_checkpoint


class _Recorder(ThreadingHTTPServer):
    events: list[dict[str, Any]]


class _Handler(BaseHTTPRequestHandler):
    server: _Recorder

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.events.append(json.loads(body))
        self.send_response(204)
        self.end_headers()


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    server = _Recorder(("127.0.0.1", 0), _Handler)
    server.events = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", server.events
    server.shutdown()
    server.server_close()
    thread.join()


def _scan(runner: CliRunner, sqlite_url: str, folder: Path, hook: str, threshold: str) -> int:
    checkpoint = write_tiny_checkpoint(folder.parent / "tiny.safetensors")
    args = ["--database-url", sqlite_url, "scan", str(folder), "--checkpoint", str(checkpoint)]
    result = runner.invoke(cli, [*args, "--webhook", hook, "--threshold", threshold, "--format", "json"])
    assert result.exit_code == 0, result.output
    return int(json.loads(result.output.strip().splitlines()[-1])["job_id"])


def test_job_finished_and_flagged_items_reach_the_webhook(
    runner: CliRunner,
    sqlite_url: str,
    tmp_path: Path,
    receiver: tuple[str, list[dict[str, Any]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DEEPSCAN_ALLOW_PRIVATE_URLS", "1")  # the receiver listens on loopback
    hook, events = receiver
    folder = tmp_path / "media"
    folder.mkdir()
    media_factory.write_mixed_folder(folder, images=4, videos=1)
    job_id = _scan(runner, sqlite_url, folder, hook, threshold="0")  # threshold 0: everything is flagged

    finished = [e for e in events if e["event"] == "job.finished"]
    assert len(finished) == 1
    assert finished[0]["job_id"] == job_id
    assert finished[0]["status"] == "done"
    assert finished[0]["counts"]["total"] == 5
    assert finished[0]["counts"]["done"] == 5
    assert finished[0]["counts"]["flagged"] == 5
    flagged = [e for e in events if e["event"] == "item.flagged"]
    assert len(flagged) == 5
    assert all(e["score"] >= e["threshold"] for e in flagged)


def test_webhook_to_a_private_address_is_refused_by_default(
    runner: CliRunner, sqlite_url: str, tmp_path: Path, receiver: tuple[str, list[dict[str, Any]]]
) -> None:
    hook, events = receiver
    folder = tmp_path / "media"
    folder.mkdir()
    media_factory.write_mixed_folder(folder, images=1, videos=0)
    _scan(runner, sqlite_url, folder, hook, threshold="1")
    assert events == []
