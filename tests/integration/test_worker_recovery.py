"""Trustworthy verdicts through real `deepscan worker` and `deepscan beat` processes on Redis and PostgreSQL.

Duplicate and late deliveries write each item once; a server that trickles bytes costs its item a
deadline error, not the chunk; a SIGKILLed worker's items and a job whose messages were lost
complete with no operator command.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from scanner.db import make_engine
from scanner.jobs import ScanOptions, add_items, create_job
from scanner.models import MediaItem, ScanJob
from scanner.settings import Settings
from scanner.sources import MediaRef
from tests import media_factory
from tests.conftest import empty_tables
from tests.pipeline_helpers import deepscan_env, deepscan_process, frame_keys, worker_process, write_tiny_checkpoint
from tests.servers import http_server

pytestmark = pytest.mark.slow

DEFAULT_WAIT_S = 120.0  # a hang guard only: every wait below ends as soon as its condition holds


@dataclass
class Stack:
    engine: Engine
    env: dict[str, str]
    folder: Path
    http_base: str
    tmp: Path


@pytest.fixture(scope="module")
def stack(postgresql_url: str, redis_server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    broker_url = redis_server_url
    tmp = tmp_path_factory.mktemp("recovery")
    folder = tmp / "media"
    for i in range(6):
        media_factory.write_image(folder / f"img_{i}.png", seed=i)
    media_factory.write_video(folder / "clip.mp4", seconds=3.0, fps=5.0)
    queue = f"deepscan-test-{uuid.uuid4().hex[:8]}"
    env = deepscan_env(
        DEEPSCAN_DATABASE_URL=postgresql_url,
        DEEPSCAN_BROKER_URL=broker_url,
        DEEPSCAN_QUEUE=queue,
        DEEPSCAN_CHECKPOINT=str(write_tiny_checkpoint(tmp / "tiny.safetensors")),
        DEEPSCAN_ALLOW_PRIVATE_URLS="1",
        DEEPSCAN_HOME=str(tmp / "home"),
        DEEPSCAN_FETCH_THREADS="2",
        DEEPSCAN_ITEM_DEADLINE_S="3",
        DEEPSCAN_LEASE_S="3",
        DEEPSCAN_RECONCILE_INTERVAL_S="1",
        DEEPSCAN_REQUEUE_AFTER_S="1",
    )
    engine = make_engine(postgresql_url)
    with http_server(folder) as http_base:
        yield Stack(engine, env, folder, http_base, tmp)
    engine.dispose()
    redis.Redis.from_url(broker_url).delete(queue)
    empty_tables(postgresql_url)


def record_job(stack: Stack, urls: list[str], **options: object) -> tuple[int, list[tuple[int, str]]]:
    """A running job with its items recorded but no message sent: as if the broker lost them all."""
    with Session(stack.engine) as session, session.begin():
        job_id = create_job(session, name="recovery", sources=["test"], options=ScanOptions(**options)).id  # type: ignore[arg-type]
    chunks: list[list[tuple[int, str]]] = []
    add_items(stack.engine, job_id, (MediaRef(u) for u in urls), enqueue=lambda _job, chunk: chunks.append(chunk))
    return job_id, [pair for chunk in chunks for pair in chunk]


def sender(stack: Stack) -> Callable[[int, list[tuple[int, str]]], None]:
    from workers.tasks import chunk_sender

    return chunk_sender(Settings.from_env(stack.env))


def items(stack: Stack, job_id: int) -> list[MediaItem]:
    with Session(stack.engine) as session:
        return list(session.scalars(select(MediaItem).where(MediaItem.job_id == job_id).order_by(MediaItem.id)))


def job_status(stack: Stack, job_id: int) -> str:
    with Session(stack.engine) as session:
        return session.get_one(ScanJob, job_id).status


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = DEFAULT_WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def file_urls(stack: Stack) -> list[str]:
    return sorted(p.as_uri() for p in stack.folder.iterdir())


def test_duplicate_and_late_deliveries_write_each_item_once_and_a_trickle_costs_one_item(stack: Stack) -> None:
    send = sender(stack)
    with worker_process({**stack.env}, stack.tmp / "worker.log", extra_args=["--concurrency", "2"]):
        job_id, chunk = record_job(stack, file_urls(stack), faces=False)
        send(job_id, chunk)
        send(job_id, chunk)  # the same chunk twice at once: two threads of the worker take it
        wait_for(lambda: job_status(stack, job_id) == "done", "the job to finish")
        first = {(i.id, i.score, i.verdict, i.finished_at) for i in items(stack, job_id)}
        frames = frame_keys(stack.engine, job_id)

        send(job_id, chunk)  # a late redelivery after completion
        trickled = record_job(stack, [f"{stack.http_base}/_trickle/0.5/img_0.png", *file_urls(stack)[:3]])
        send(*trickled)
        wait_for(lambda: job_status(stack, trickled[0]) == "done", "the trickle job to finish")

    assert all(i.status == "done" for i in items(stack, job_id))
    assert all(i.attempts == 0 and i.interruptions == 0 for i in items(stack, job_id)), "no death, no lone try"
    assert {(i.id, i.score, i.verdict, i.finished_at) for i in items(stack, job_id)} == first
    assert frame_keys(stack.engine, job_id) == frames
    assert set(frames.values()) == {1}, "exactly one frame row per (item, frame, face)"
    video = next(i for i in items(stack, job_id) if i.kind == "video")
    assert sum(1 for item_id, _, _ in frames if item_id == video.id) == video.frames_scanned

    outcome = {i.url: i for i in items(stack, trickled[0])}
    slow = next(i for url, i in outcome.items() if url.startswith("http"))
    assert slow.status == "error"
    assert slow.error is not None
    assert "deadline of 3 s exceeded" in slow.error
    assert sum(1 for i in outcome.values() if i.status == "done") == 3


def test_killed_workers_and_lost_messages_heal_without_an_operator(stack: Stack) -> None:
    import os
    import signal

    slow_urls = [f"{stack.http_base}/_slow/0.5/img_{i}.png" for i in range(4)]
    env = {**stack.env, "DEEPSCAN_FETCH_THREADS": "1", "DEEPSCAN_ITEM_DEADLINE_S": "30"}
    killed_job, chunk = record_job(stack, slow_urls, faces=False, rescan=True)
    with worker_process(env, stack.tmp / "doomed.log") as doomed:
        sender(stack)(killed_job, chunk)
        wait_for(lambda: any(i.status == "processing" for i in items(stack, killed_job)), "the worker to start")
        os.killpg(doomed.pid, signal.SIGKILL)
        doomed.wait()
    assert any(i.status == "processing" for i in items(stack, killed_job)), "the kill left items mid-flight"

    images = [url for url in file_urls(stack) if url.endswith(".png")]
    lost_job, _ = record_job(stack, images[:3], faces=False, rescan=True)  # messages never sent
    with (
        worker_process(env, stack.tmp / "rescue.log"),
        deepscan_process(["beat", "--tick", "1"], env, stack.tmp / "beat.log"),
    ):
        wait_for(lambda: job_status(stack, killed_job) == "done", "the killed worker's job to heal")
        wait_for(lambda: job_status(stack, lost_job) == "done", "the lost messages' job to heal")

    for job_id in (killed_job, lost_job):
        assert all(i.status == "done" and i.verdict in {"fake", "real"} for i in items(stack, job_id))
        assert set(frame_keys(stack.engine, job_id).values()) == {1}
    killed = items(stack, killed_job)
    assert all(i.interruptions == 1 for i in killed), "the killed delivery held them all"
    assert all(i.attempts == 1 for i in killed), "the kill counted against none: each was then tried alone, once"
