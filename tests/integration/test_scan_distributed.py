"""The distributed pipeline with real parts: a `deepscan worker` process, Redis, PostgreSQL, HTTP and S3 servers."""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from click.testing import CliRunner

from deepscan.cli import cli
from scanner.models import MediaItem
from tests import media_factory
from tests.conftest import empty_tables
from tests.pipeline_helpers import (
    deepscan_env,
    deepscan_process,
    frames_of,
    items_of,
    worker_process,
    write_tiny_checkpoint,
)
from tests.servers import TEST_AWS_ENV, http_server, s3_server, upload_folder

pytestmark = pytest.mark.slow


@dataclass
class Stack:
    database_url: str
    broker_url: str
    queue: str
    s3_endpoint: str
    http_base: str
    folder: Path
    bad: list[media_factory.BadInput]
    env: dict[str, str]
    tmp: Path


@pytest.fixture(scope="module")
def stack(postgresql_url: str, redis_server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    broker_url = redis_server_url
    tmp = tmp_path_factory.mktemp("stack")
    folder = tmp / "media"
    folder.mkdir()
    media_factory.write_mixed_folder(folder, images=21, videos=2)
    bad = media_factory.write_bad_inputs(folder)
    checkpoint = write_tiny_checkpoint(tmp / "tiny.safetensors")
    queue = f"deepscan-test-{uuid.uuid4().hex[:8]}"
    with s3_server() as s3_endpoint, http_server(folder) as http_base:
        env = deepscan_env(
            DEEPSCAN_DATABASE_URL=postgresql_url,
            DEEPSCAN_BROKER_URL=broker_url,
            DEEPSCAN_QUEUE=queue,
            DEEPSCAN_CHECKPOINT=str(checkpoint),
            DEEPSCAN_S3_ENDPOINT_URL=s3_endpoint,
            DEEPSCAN_ALLOW_PRIVATE_URLS="1",
            DEEPSCAN_HOME=str(tmp / "home"),
            DEEPSCAN_FETCH_THREADS="4",
            **TEST_AWS_ENV,
        )
        yield Stack(postgresql_url, broker_url, queue, s3_endpoint, http_base, folder, bad, env, tmp)
    redis.Redis.from_url(broker_url).delete(queue)
    empty_tables(postgresql_url)


@pytest.fixture
def producer_env(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """The test process acts as the producer, configured like the worker."""
    for name, value in stack.env.items():
        if name.startswith(("DEEPSCAN_", "AWS_")):
            monkeypatch.setenv(name, value)


def scan(*args: str) -> dict[str, Any]:
    result = CliRunner().invoke(cli, ["scan", *args, "--wait", "--format", "json"], catch_exceptions=False)
    assert result.exit_code in (0, 3), result.output
    return dict(json.loads(result.output.strip().splitlines()[-1]), exit_code=result.exit_code)


def assert_every_item_accounted_for(stack: Stack, job_id: int, *, bad_names: set[str]) -> list[MediaItem]:
    items = items_of(stack.database_url, job_id)
    assert items
    for item in items:
        name = item.url.rstrip("/").rsplit("/", 1)[-1]
        if name in bad_names:
            assert item.status == "error", (item.url, item.status)
            assert item.error
        else:
            assert item.status == "done", (item.url, item.status, item.error)
            assert item.score is not None
            assert item.verdict in {"fake", "real"}
    return items


def test_worker_process_scans_a_mixed_local_folder(stack: Stack, producer_env: None) -> None:
    with worker_process(stack.env, stack.tmp / "worker-local.log"):
        summary = scan(str(stack.folder))
    assert summary["status"] == "done"
    assert summary["exit_code"] == 3
    assert summary["total"] == 23 + len(stack.bad)
    assert summary["errors"] == len(stack.bad)
    items = assert_every_item_accounted_for(stack, int(summary["job_id"]), bad_names={b.path.name for b in stack.bad})
    reasons = {Path(i.url).name: i.error for i in items if i.status == "error"}
    for case in stack.bad:
        assert case.reason in (reasons[case.path.name] or "")
    for video in (i for i in items if i.kind == "video" and i.status == "done"):
        stamps = [f.timestamp_s for f in frames_of(stack.database_url, video.id)]
        assert len(stamps) >= 3
        assert stamps == sorted(stamps)


def test_worker_scans_http_urls_and_an_s3_prefix(stack: Stack, producer_env: None) -> None:
    keys = upload_folder(stack.s3_endpoint, "media", stack.folder, prefix="uploads/")
    assert len(keys) == 23 + len(stack.bad)
    urls = stack.tmp / "urls.txt"
    good = sorted(p.name for p in stack.folder.iterdir() if p.name not in {b.path.name for b in stack.bad})
    urls.write_text(
        "\n".join(
            [f"{stack.http_base}/{name}" for name in good[:8]]
            + [f"{stack.http_base}/_status/404", f"{stack.http_base}/_html-as-jpeg"]
        )
    )
    # The solo pool (one chunk at a time); the other tests run the default threads pool (two).
    with worker_process(stack.env, stack.tmp / "worker-remote.log", extra_args=["--concurrency", "1"]):
        from_http = scan("--from-file", str(urls), "--rescan")
        from_s3 = scan("s3://media/uploads/", "--rescan")

    assert from_http["done"] == 8
    assert from_http["errors"] == 2
    http_errors = {i.url.rsplit("/", 1)[-1]: i.error for i in items_of(stack.database_url, int(from_http["job_id"]))}
    assert http_errors["404"] == "http 404"
    assert http_errors["_html-as-jpeg"] == "not an image or video"

    assert from_s3["total"] == len(keys)
    assert from_s3["errors"] == len(stack.bad)
    s3_items = assert_every_item_accounted_for(
        stack, int(from_s3["job_id"]), bad_names={b.path.name for b in stack.bad}
    )
    assert all(i.url.startswith("s3://media/uploads/") for i in s3_items)
    assert all(i.etag for i in s3_items if i.status == "done")


def test_rescanning_the_same_bucket_runs_no_inference(stack: Stack, producer_env: None) -> None:
    upload_folder(stack.s3_endpoint, "again", stack.folder)
    with worker_process(stack.env, stack.tmp / "worker-again.log"):
        first = scan("s3://again/")
        second = scan("s3://again/")
        forced = scan("s3://again/", "--rescan")
    assert first["done"] == 23
    assert second["reused"] == second["done"] == 23
    assert forced["reused"] == 0
    assert forced["done"] == 23


def _count(stack: Stack, job_id: int, status: str) -> int:
    return sum(1 for item in items_of(stack.database_url, job_id) if item.status == status)


def _wait_for(condition, *, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.2)


def test_two_workers_are_two_nodes_and_serve_metrics_on_loopback(stack: Stack, producer_env: None) -> None:
    """`celery inspect ping` (Flower, operators) must see each worker; a shared name hid all but one."""
    from scanner.settings import Settings
    from workers.app import configure

    app = configure(Settings.from_env())
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    worker = ["worker", "--concurrency", "1"]
    with (  # started together: each loads its model while the other does
        deepscan_process([*worker, "--metrics-port", str(port)], stack.env, stack.tmp / "node-1.log"),
        deepscan_process(worker, stack.env, stack.tmp / "node-2.log"),
    ):
        nodes: set[str] = set()
        deadline = time.monotonic() + 120  # a hang guard only
        while len(nodes) < 2 and time.monotonic() < deadline:
            replies = app.control.ping(timeout=1.0)
            nodes |= {name for reply in replies for name in reply if name.startswith(f"deepscan-{stack.queue}-")}
        assert len(nodes) == 2, nodes
        assert not any("%h" in name for name in nodes), nodes
        scraped = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=30)
        assert "deepscan_worker_items_total" in scraped.text
