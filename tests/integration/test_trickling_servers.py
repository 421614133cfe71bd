"""Servers that trickle bytes cannot hold an item past its deadline (issue 21), end to end.

Four hostile sources, each sending one byte a second, with `DEEPSCAN_ITEM_DEADLINE_S=2`: headers
trickled, an HTTP/1.0 body, an HTTP/1.1 body, and an S3-compatible endpoint trickling its object.
Each item must end `error` naming the image deadline within the deadline + 2 s of its claim, in an
embedded `deepscan scan` (which must then exit) and through a real `deepscan worker`. A worker
told to stop (SIGTERM) while its fetches hang must exit within 10 s, handing its items back.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner

from deepscan.cli import cli
from scanner.models import MediaItem
from tests import media_factory
from tests.pipeline_helpers import deepscan_env, items_of, latest_job, worker_process, write_tiny_checkpoint
from tests.servers import TEST_AWS_ENV, http_server, trickling_s3_server

pytestmark = pytest.mark.slow

DEADLINE_S = 2
SLACK_S = 2  # the bound: each item ends within DEEPSCAN_ITEM_DEADLINE_S + 2 s
HANG_GUARD_S = 120.0  # far above what this takes; it only stops a hung child
STOP_GRACE_S = 10.0  # a worker told to stop exits within this (docs/operations.md)
TRICKLE = "1"  # seconds between bytes


@dataclass
class Hostile:
    url_list: Path
    s3_source: str
    env: dict[str, str]
    tmp: Path


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hostile]:
    tmp = tmp_path_factory.mktemp("trickle")
    root = tmp / "served"
    image = media_factory.write_image(root / "img.png", size=(64, 64))
    with http_server(root) as base, trickling_s3_server({"img.png": image.read_bytes()}, float(TRICKLE)) as s3:
        url_list = tmp / "urls.txt"
        routes = ("_trickle-headers", "_trickle10", "_trickle")
        url_list.write_text("".join(f"{base}/{route}/{TRICKLE}/img.png\n" for route in routes))
        env = deepscan_env(
            DEEPSCAN_CHECKPOINT=str(write_tiny_checkpoint(tmp / "tiny.safetensors")),
            DEEPSCAN_DEVICE="cpu",
            DEEPSCAN_S3_ENDPOINT_URL=s3,
            DEEPSCAN_ALLOW_PRIVATE_URLS="1",
            DEEPSCAN_ITEM_DEADLINE_S=str(DEADLINE_S),
            **TEST_AWS_ENV,
        )
        yield Hostile(url_list, "s3://bucket/", env, tmp)


def assert_each_ended_at_its_image_deadline(items: list[MediaItem]) -> None:
    assert len(items) == 4
    for item in items:
        assert item.status == "error", (item.url, item.status)
        reason = item.error or ""
        assert reason.startswith(f"image deadline of {DEADLINE_S} s exceeded"), reason
        assert item.started_at is not None
        assert item.finished_at is not None
        took_s = (item.finished_at - item.started_at).total_seconds()
        print(f"\n{item.url}: ended after {took_s:.1f} s")
        assert took_s < DEADLINE_S + SLACK_S, (item.url, took_s)


def test_an_embedded_scan_ends_each_trickled_item_at_its_deadline_and_exits(hostile: Hostile) -> None:
    home = hostile.tmp / "embedded"
    env = dict(hostile.env, DEEPSCAN_HOME=str(home))
    command = [sys.executable, "-m", "deepscan", "scan", hostile.s3_source, "--from-file", str(hostile.url_list)]
    child = subprocess.run([*command, "--format", "json"], env=env, capture_output=True, timeout=HANG_GUARD_S)

    assert child.returncode == 3, child.stdout.decode() + child.stderr.decode()[-3000:]  # done, with item errors
    summary = json.loads(child.stdout.decode().strip().splitlines()[-1])
    assert_each_ended_at_its_image_deadline(items_of(f"sqlite:///{home / 'deepscan.db'}", int(summary["job_id"])))


@pytest.fixture
def distributed(
    hostile: Hostile, postgresql_url: str, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, str]]:
    """Worker settings on the test PostgreSQL and Redis (own queue); the test process is the producer."""
    broker_url = redis_url
    queue = f"deepscan-test-{uuid.uuid4().hex[:8]}"
    env = dict(
        hostile.env,
        DEEPSCAN_DATABASE_URL=postgresql_url,
        DEEPSCAN_BROKER_URL=broker_url,
        DEEPSCAN_QUEUE=queue,
        DEEPSCAN_HOME=str(hostile.tmp / f"home-{queue}"),
    )
    for name, value in env.items():
        if name.startswith(("DEEPSCAN_", "AWS_")):
            monkeypatch.setenv(name, value)
    yield env
    redis.Redis.from_url(broker_url).delete(queue)


def test_a_worker_ends_each_trickled_item_at_its_deadline(
    hostile: Hostile, distributed: dict[str, str], tmp_path: Path
) -> None:
    with worker_process(distributed, tmp_path / "worker.log"):
        result = CliRunner().invoke(
            cli,
            ["scan", hostile.s3_source, "--from-file", str(hostile.url_list), "--wait", "--format", "json"],
            catch_exceptions=False,
        )
    assert result.exit_code == 3, result.output
    job_id = int(json.loads(result.output.strip().splitlines()[-1])["job_id"])
    assert_each_ended_at_its_image_deadline(items_of(distributed["DEEPSCAN_DATABASE_URL"], job_id))


def test_a_worker_told_to_stop_mid_fetch_exits_soon_and_hands_its_items_back(
    hostile: Hostile, distributed: dict[str, str], tmp_path: Path
) -> None:
    env = dict(distributed, DEEPSCAN_ITEM_DEADLINE_S="600")  # the trickles would hold the chunk for minutes
    url = distributed["DEEPSCAN_DATABASE_URL"]
    with worker_process(env, tmp_path / "worker.log") as worker:
        result = CliRunner().invoke(cli, ["scan", "--from-file", str(hostile.url_list), "--format", "json"])
        assert result.exit_code == 0, result.output
        job_id = latest_job(url).id
        _wait_until(lambda: all(item.status == "processing" for item in items_of(url, job_id)))
        time.sleep(1.0)  # the fetches are under way, trickling
        worker.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        worker.wait(timeout=HANG_GUARD_S)
        took_s = time.monotonic() - stopped

    print(f"\nworker exited {took_s:.1f} s after SIGTERM")
    assert took_s < STOP_GRACE_S, (tmp_path / "worker.log").read_text()[-3000:]
    for item in items_of(url, job_id):
        assert item.status == "processing"
        assert item.error is None
        assert item.attempts == 0, item.attempts
        assert item.lease_owner is None


def _wait_until(condition: object, timeout_s: float = 60.0) -> None:
    assert callable(condition)
    ends = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < ends, "condition not met"
        time.sleep(0.2)
