"""The producer at bucket scale: batches recorded once each, every item sent once, through a Redis pipeline.

Speed itself lives in bench/enqueue.py; these tests hold the behaviour the fast path must keep.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from scanner import jobs
from scanner.jobs import ScanOptions, add_items, create_job
from scanner.models import MediaItem
from scanner.settings import Settings
from scanner.sources import MediaRef
from workers.backend import PipelinedChunkSender


def _new_job(engine: Engine, chunk_size: int = 2) -> int:
    with Session(engine) as session, session.begin():
        return create_job(session, name="enqueue", sources=["test"], options=ScanOptions(chunk_size=chunk_size)).id


def _items(engine: Engine, job_id: int) -> list[MediaItem]:
    with Session(engine) as session:
        return list(session.scalars(select(MediaItem).where(MediaItem.job_id == job_id).order_by(MediaItem.id)))


def test_urls_repeated_across_batches_are_recorded_and_sent_once(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jobs, "DEFAULT_INSERT_BATCH", 3)  # repeats land in later batches than their first copy
    urls = [f"https://media.example/{name}.jpg" for name in "abcadbeefa"]
    job_id = _new_job(engine)
    sent: list[list[tuple[int, str]]] = []

    report = add_items(engine, job_id, (MediaRef(u) for u in urls), enqueue=lambda _job, chunk: sent.append(chunk))

    items = _items(engine, job_id)
    assert sorted(i.url for i in items) == sorted(set(urls))
    assert {i.status for i in items} == {"queued"}
    assert sorted(pair for chunk in sent for pair in chunk) == sorted((i.id, i.url) for i in items)
    assert all(len(chunk) <= 2 for chunk in sent)
    assert (report.total, report.enqueued, report.reused) == (6, 6, 0)


def test_a_job_that_sets_no_chunk_size_gets_larger_chunks_of_local_files(engine: Engine) -> None:
    local = [MediaRef(f"file:///media/{n}.jpg") for n in range(150)]
    remote = [MediaRef(f"https://media.example/{n}.jpg") for n in range(40)]
    for refs, sizes in ((local, [64, 64, 22]), ([*local[:10], *remote], [16, 16, 16, 2])):
        with Session(engine) as session, session.begin():
            job_id = create_job(session, name="auto", sources=["test"], options=ScanOptions()).id
        sizes_sent: list[int] = []
        add_items(engine, job_id, iter(refs), enqueue=lambda _job, chunk: sizes_sent.append(len(chunk)))  # noqa: B023
        assert sizes_sent == sizes


def test_listing_metadata_is_recorded_as_given(engine: Engine) -> None:
    modified = dt.datetime(2026, 3, 1, 12, 30, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    refs = [
        MediaRef("s3://bucket/a.jpg", size=1234, etag="abc123", last_modified=modified),
        MediaRef("s3://bucket/b.jpg"),
    ]
    job_id = _new_job(engine)

    add_items(engine, job_id, refs, enqueue=lambda _job, _chunk: None)

    first, second = _items(engine, job_id)
    assert (first.url, first.size, first.etag, first.last_modified) == ("s3://bucket/a.jpg", 1234, "abc123", modified)
    assert first.last_modified is not None
    assert first.last_modified.tzinfo == dt.UTC
    assert (second.size, second.etag, second.last_modified) == (None, None, None)
    assert first.enqueued_at is not None
    assert first.kind == "unknown"
    assert first.attempts == 0


def _queued_tasks(client: redis.Redis, queue: str) -> list[tuple[str, list[Any]]]:
    """(task name, args) of every message in `queue`, oldest first (kombu's Redis transport LPUSHes)."""
    tasks = []
    for raw in reversed(client.lrange(queue, 0, -1)):
        message = json.loads(raw)
        body = json.loads(base64.b64decode(message["body"]))
        tasks.append((message["headers"]["task"], body[0]))
    return tasks


def test_batched_sends_are_the_messages_the_workers_consume(
    postgresql_url: str, redis_url: str, tmp_path: Path
) -> None:
    settings = Settings(home=tmp_path, database_url=postgresql_url, broker_url=redis_url, queue="enqueue-test")
    sender = PipelinedChunkSender(settings)
    client = redis.Redis.from_url(redis_url)
    chunks = [[(i, f"https://media.example/{i}.jpg"), (i + 1, f"https://media.example/{i + 1}.jpg")] for i in (1, 3)]

    with sender.batch():
        for chunk in chunks:
            sender(7, chunk)
        assert client.llen("enqueue-test") == 0, "held until the batch ends"
    sender(8, [(5, "https://media.example/5.jpg")])  # outside a batch: sent at once

    assert _queued_tasks(client, "enqueue-test") == [
        ("deepscan.scan_chunk", [7, [[1, "https://media.example/1.jpg"], [2, "https://media.example/2.jpg"]]]),
        ("deepscan.scan_chunk", [7, [[3, "https://media.example/3.jpg"], [4, "https://media.example/4.jpg"]]]),
        ("deepscan.scan_chunk", [8, [[5, "https://media.example/5.jpg"]]]),
    ]


def test_a_batch_that_fails_sends_nothing(postgresql_url: str, redis_url: str, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, database_url=postgresql_url, broker_url=redis_url, queue="enqueue-abort")
    sender = PipelinedChunkSender(settings)

    def send_then_fail() -> None:
        with sender.batch():
            sender(1, [(1, "https://media.example/1.jpg")])
            raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        send_then_fail()

    assert redis.Redis.from_url(redis_url).llen("enqueue-abort") == 0


def test_a_pipeline_that_fails_is_sent_again_chunk_by_chunk(
    postgresql_url: str, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kombu.exceptions import BatchPublishError
    from kombu.transport.redis import PublishBatch

    def broken_flush(self: PublishBatch) -> None:  # the buffered commands never reach Redis
        raise BatchPublishError("Redis publish batch failed; delivery is uncertain")

    monkeypatch.setattr(PublishBatch, "flush", broken_flush)
    settings = Settings(home=tmp_path, database_url=postgresql_url, broker_url=redis_url, queue="enqueue-retry")
    sender = PipelinedChunkSender(settings)

    with sender.batch():
        sender(3, [(1, "https://media.example/1.jpg")])
        sender(3, [(2, "https://media.example/2.jpg")])

    assert _queued_tasks(redis.Redis.from_url(redis_url), "enqueue-retry") == [
        ("deepscan.scan_chunk", [3, [[1, "https://media.example/1.jpg"]]]),
        ("deepscan.scan_chunk", [3, [[2, "https://media.example/2.jpg"]]]),
    ]


def test_add_items_through_the_broker_sends_each_recorded_item_once(
    postgresql_url: str, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from scanner.db import make_engine

    monkeypatch.setattr(jobs, "DEFAULT_INSERT_BATCH", 7)  # several batches, overlapped with their sends
    settings = Settings(home=tmp_path, database_url=postgresql_url, broker_url=redis_url, queue="enqueue-all")
    engine = make_engine(postgresql_url)
    try:
        job_id = _new_job(engine, chunk_size=3)
        refs = (MediaRef(f"https://media.example/{i}.jpg") for i in range(40))
        report = add_items(engine, job_id, refs, enqueue=PipelinedChunkSender(settings))
        items = _items(engine, job_id)
    finally:
        engine.dispose()

    tasks = _queued_tasks(redis.Redis.from_url(redis_url), "enqueue-all")
    sent = [(item_id, url) for _, (job, chunk) in tasks if job == job_id for item_id, url in chunk]
    assert report.enqueued == len(items) == 40
    assert sorted(sent) == sorted((i.id, i.url) for i in items)


def test_task_headers_show_ids_never_urls(postgresql_url: str, redis_url: str, tmp_path: Path) -> None:
    """Monitoring (Flower, `celery inspect`, `jobs reconcile`'s re-sends) reads `argsrepr`: no secret there."""
    from workers.tasks import chunk_sender, send_webhook_later

    secret = "https://user:S3cretPass@media.example/a.jpg?X-Amz-Signature=abc&token=xyz"
    settings = Settings(home=tmp_path, database_url=postgresql_url, broker_url=redis_url, queue="enqueue-headers")
    chunk_sender(settings)(4, [(11, secret)])  # the path `jobs reconcile` and single sends take
    pipelined = PipelinedChunkSender(settings)
    with pipelined.batch():
        pipelined(4, [(12, secret)])
    send_webhook_later("https://hooks.example/in?token=xyz", {"event": "job.finished", "job_id": 4})

    client = redis.Redis.from_url(redis_url)
    messages = [json.loads(raw) for queue in ("enqueue-headers", "celery") for raw in client.lrange(queue, 0, -1)]
    headers = [m["headers"] for m in messages]
    assert len(headers) == 3
    assert sorted(h["argsrepr"] for h in headers if h["task"] == "deepscan.scan_chunk") == [
        "[4, <1 items from id 11>]",
        "[4, <1 items from id 12>]",
    ]
    for h in headers:
        assert all(s not in json.dumps(h) for s in ("S3cretPass", "X-Amz-Signature", "xyz")), h
    assert _queued_tasks(client, "enqueue-headers")[0][1] == [4, [[11, secret]]]  # the worker still gets the URL
