"""Webhooks reach a real local HTTP server signed, with the job's counts, and obey the SSRF rules.

The receiver verifies every delivery with the Python snippet of docs/webhooks.md, run as written.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from deepscan.cli import cli
from scanner.settings import Settings
from tests import media_factory
from tests.conftest import empty_tables
from tests.pipeline_helpers import job_count, write_tiny_checkpoint
from workers import notify

ROOT = Path(__file__).resolve().parents[2]
SECRET = "test-webhook-secret"
DEFAULT_HANG_GUARD_S = 60.0  # only guards against a hang; nothing here is timed


def docs_verify() -> Callable[..., bool]:
    """The `verify` function exactly as docs/webhooks.md shows it to receivers."""
    text = (ROOT / "docs" / "webhooks.md").read_text()
    (snippet,) = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    namespace: dict[str, Any] = {}
    exec(compile(snippet, "docs/webhooks.md", "exec"), namespace)
    verify: Callable[..., bool] = namespace["verify"]
    return verify


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes
    verified: bool

    @property
    def event(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


@dataclass
class Receiver:
    url: str
    deliveries: list[Delivery]
    answers: list[int] = field(default_factory=list)  # status codes to answer first, then 204
    release: threading.Event = field(default_factory=threading.Event)

    def events(self) -> list[dict[str, Any]]:
        return [d.event for d in self.deliveries]


class _Server(ThreadingHTTPServer):
    receiver: Receiver
    verify: Callable[..., bool]


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        headers = dict(self.headers.items())
        receiver = self.server.receiver
        receiver.release.wait(DEFAULT_HANG_GUARD_S)
        receiver.deliveries.append(Delivery(headers, body, self.server.verify(SECRET, headers, body)))
        self.send_response(receiver.answers.pop(0) if receiver.answers else 204)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = _Server(("127.0.0.1", 0), _Handler)
    server.verify = docs_verify()
    server.receiver = Receiver(f"http://127.0.0.1:{server.server_address[1]}/hook", [])
    server.receiver.release.set()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.receiver
    server.receiver.release.set()
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def signing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPSCAN_WEBHOOK_SECRET", SECRET)


@pytest.fixture
def sqlite_url(sqlite_url: str) -> Iterator[str]:
    """The session's SQLite database, emptied after each test (later modules count its rows)."""
    yield sqlite_url
    empty_tables(sqlite_url)


def _scan(runner: CliRunner, sqlite_url: str, folder: Path, hook: str, threshold: str) -> int:
    checkpoint = write_tiny_checkpoint(folder.parent / "tiny.safetensors")
    args = ["--database-url", sqlite_url, "scan", str(folder), "--checkpoint", str(checkpoint)]
    result = runner.invoke(cli, [*args, "--webhook", hook, "--threshold", threshold, "--format", "json"])
    assert result.exit_code == 0, result.output
    return int(json.loads(result.output.strip().splitlines()[-1])["job_id"])


@pytest.mark.usefixtures("signing")
def test_job_finished_and_flagged_items_reach_the_webhook_signed(
    runner: CliRunner, sqlite_url: str, tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEEPSCAN_ALLOW_PRIVATE_URLS", "1")  # the receiver listens on loopback
    folder = tmp_path / "media"
    folder.mkdir()
    media_factory.write_mixed_folder(folder, images=4, videos=1)
    job_id = _scan(runner, sqlite_url, folder, receiver.url, threshold="0")  # threshold 0: everything is flagged

    assert receiver.deliveries
    assert all(d.verified for d in receiver.deliveries), "the docs' receiver accepts every delivery"
    events = receiver.events()
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
    ids = [d.headers["Deepscan-Event-Id"] for d in receiver.deliveries]
    assert ids == [e["id"] for e in events]
    assert len(set(ids)) == len(ids), "each event has its own id"


def test_the_docs_receiver_refuses_a_wrong_secret_a_changed_body_and_an_old_timestamp() -> None:
    verify = docs_verify()
    payload = notify.new_event("job.finished", job_id=1)
    body, headers = notify.signed_request(SECRET, payload, now=1_700_000_000)
    assert verify(SECRET, headers, body, now=1_700_000_000 + 10)
    assert not verify("another-secret", headers, body, now=1_700_000_000)
    assert not verify(SECRET, headers, body.replace(b'"job_id":1', b'"job_id":2'), now=1_700_000_000)
    assert not verify(SECRET, headers, body, now=1_700_000_000 + 3600)
    assert not verify(SECRET, {**headers, "Deepscan-Timestamp": "1700000001"}, body, now=1_700_000_000)
    assert not verify(SECRET, {k: v for k, v in headers.items() if k != "Deepscan-Signature"}, body)


@pytest.mark.usefixtures("signing")
def test_a_retried_event_keeps_its_id_and_is_signed_again(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(notify, "DEFAULT_BACKGROUND_BACKOFF_S", 0.0)
    receiver.answers = [503, 429]  # two transient refusals, then accepted
    settings = Settings.from_env({"DEEPSCAN_HOME": str(tmp_path), "DEEPSCAN_WEBHOOK_SECRET": SECRET}).with_overrides(
        allow_private_urls=True
    )
    notify.deliver_in_background(settings)(receiver.url, notify.item_flagged_payload(1, 2, "file:///a.jpg", 0.9, 0.5))
    assert notify.drain_background_deliveries(DEFAULT_HANG_GUARD_S) == 0
    assert len(receiver.deliveries) == 3
    assert all(d.verified for d in receiver.deliveries)
    assert len({d.headers["Deepscan-Event-Id"] for d in receiver.deliveries}) == 1


def test_embedded_delivery_never_waits_for_the_receiver(receiver: Receiver, tmp_path: Path) -> None:
    receiver.release.clear()  # the receiver holds every request until released
    settings = Settings.from_env({"DEEPSCAN_HOME": str(tmp_path), "DEEPSCAN_WEBHOOK_SECRET": SECRET}).with_overrides(
        allow_private_urls=True
    )
    deliver = notify.deliver_in_background(settings)
    for item_id in range(3):
        deliver(receiver.url, notify.item_flagged_payload(1, item_id, "file:///a.jpg", 0.9, 0.5))
    assert receiver.deliveries == [], "deliver returned while the receiver still held the first request"
    receiver.release.set()
    assert notify.drain_background_deliveries(DEFAULT_HANG_GUARD_S) == 0
    assert [e["item_id"] for e in receiver.events()] == [0, 1, 2]


@pytest.mark.usefixtures("signing")
@pytest.mark.parametrize("hook", ["notaurl", "ftp://example.com/hook", "http://", "https://host:port/x"])
def test_a_bad_webhook_url_is_a_usage_error_before_any_job(
    runner: CliRunner, sqlite_url: str, tmp_path: Path, hook: str
) -> None:
    media_factory.write_mixed_folder(tmp_path, images=1, videos=0)
    before = job_count(sqlite_url)
    result = runner.invoke(cli, ["--database-url", sqlite_url, "scan", str(tmp_path), "--webhook", hook])
    assert result.exit_code == 2
    assert "--webhook" in result.stderr
    assert job_count(sqlite_url) == before


def test_a_webhook_without_a_signing_secret_is_refused(runner: CliRunner, sqlite_url: str, tmp_path: Path) -> None:
    media_factory.write_mixed_folder(tmp_path, images=1, videos=0)
    result = runner.invoke(
        cli, ["--database-url", sqlite_url, "scan", str(tmp_path), "--webhook", "https://hooks.example/x"]
    )
    assert result.exit_code == 2
    assert "DEEPSCAN_WEBHOOK_SECRET" in result.stderr


@pytest.mark.usefixtures("signing")
def test_webhook_to_a_private_address_is_refused_by_default(
    runner: CliRunner, sqlite_url: str, tmp_path: Path, receiver: Receiver
) -> None:
    folder = tmp_path / "media"
    folder.mkdir()
    media_factory.write_mixed_folder(folder, images=1, videos=0)
    _scan(runner, sqlite_url, folder, receiver.url, threshold="1")
    assert receiver.deliveries == []
