"""At most one writer per item: concurrent and late deliveries, lost leases, reconcile, poison items.

The worker's own chunk function runs in this process against SQLite and PostgreSQL; the same
guarantees through a real worker process and Redis are in test_worker_recovery.py.
"""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from scanner import leases
from scanner.jobs import ScanOptions, add_items, create_job, reconcile
from scanner.models import MediaItem, ScanJob, utcnow
from scanner.settings import Settings
from scanner.sources import MediaRef
from tests import media_factory
from tests.pipeline_helpers import frame_keys, write_tiny_checkpoint
from workers.pipeline import process_chunk, store
from workers.runtime import WorkerRuntime, load_runtime


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("lease-media")
    paths = [media_factory.write_image(folder / f"img_{i}.png", seed=i) for i in range(4)]
    paths.append(media_factory.write_video(folder / "clip.mp4", seconds=4.0, fps=5.0))
    return paths


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("lease-ckpt") / "tiny.safetensors")


@pytest.fixture
def runtime(engine: Engine, db_url: str, checkpoint: Path, tmp_path: Path) -> WorkerRuntime:
    settings = Settings.from_env(
        {"DEEPSCAN_DATABASE_URL": db_url, "DEEPSCAN_HOME": str(tmp_path), "DEEPSCAN_FETCH_THREADS": "2"}
    ).with_overrides(checkpoint=checkpoint, device="cpu")
    return load_runtime(settings, engine)


def new_job(engine: Engine, paths: list[Path], **options: object) -> tuple[int, list[tuple[int, str]]]:
    """A running job whose items are recorded (not sent anywhere): returns the job id and its chunk."""
    with Session(engine) as session, session.begin():
        job_id = create_job(session, name="leases", sources=["test"], options=ScanOptions(**options)).id  # type: ignore[arg-type]
    chunks: list[list[tuple[int, str]]] = []
    add_items(engine, job_id, (MediaRef(p.as_uri()) for p in paths), enqueue=lambda _job, chunk: chunks.append(chunk))
    return job_id, [pair for chunk in chunks for pair in chunk]


def item_rows(engine: Engine, job_id: int) -> list[MediaItem]:
    with Session(engine) as session:
        return list(session.scalars(select(MediaItem).where(MediaItem.job_id == job_id).order_by(MediaItem.id)))


def test_the_same_chunk_delivered_twice_at_once_is_written_once(runtime: WorkerRuntime, media: list[Path]) -> None:
    job_id, chunk = new_job(runtime.engine, media, faces=False)
    reports = []
    barrier = threading.Barrier(2)

    def deliver() -> None:
        barrier.wait()
        reports.append(process_chunk(runtime, job_id, chunk))

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sum(r.done for r in reports) == len(chunk), "every item written by exactly one delivery"
    assert sum(r.skipped for r in reports) == len(chunk), "the other delivery skipped every item"
    items = item_rows(runtime.engine, job_id)
    assert all(i.status == "done" and i.attempts == 0 and i.lease_owner is None for i in items)
    keys = frame_keys(runtime.engine, job_id)
    assert set(keys.values()) == {1}
    video = next(i for i in items if i.kind == "video")
    assert sum(1 for item_id, _, _ in keys if item_id == video.id) == video.frames_scanned
    with Session(runtime.engine) as session:
        assert session.get_one(ScanJob, job_id).status == "done"


def test_a_late_redelivery_after_completion_changes_nothing(runtime: WorkerRuntime, media: list[Path]) -> None:
    job_id, chunk = new_job(runtime.engine, media, faces=False)
    first = process_chunk(runtime, job_id, chunk)
    assert first.done == len(chunk)
    before = {(i.id, i.score, i.verdict, i.finished_at) for i in item_rows(runtime.engine, job_id)}
    frames_before = frame_keys(runtime.engine, job_id)

    late = process_chunk(runtime, job_id, chunk)
    assert late.skipped == len(chunk)
    assert late.inferred_units == 0
    assert {(i.id, i.score, i.verdict, i.finished_at) for i in item_rows(runtime.engine, job_id)} == before
    assert frame_keys(runtime.engine, job_id) == frames_before


def test_a_delivery_that_lost_its_lease_writes_nothing(runtime: WorkerRuntime, media: list[Path]) -> None:
    """A stalls past its lease, B takes the items over and stores; A's store then writes nothing."""
    job_id, chunk = new_job(runtime.engine, media[:2], faces=False)
    ids = [i for i, _ in chunk]
    with runtime.engine.begin() as conn:
        claimed_by_a = leases.claim(conn, job_id, ids, owner="stalled-a", lease_s=60, max_attempts=3).items
        conn.execute(update(MediaItem).where(MediaItem.id.in_(ids)).values(lease_expires_at=utcnow()))
    assert claimed_by_a == set(ids)

    b = process_chunk(runtime, job_id, chunk)
    assert b.done == 2
    stored = {(i.id, i.score, i.finished_at) for i in item_rows(runtime.engine, job_id)}
    frames = frame_keys(runtime.engine, job_id)

    from workers.analysis import Outcome
    from workers.pipeline import JobContext

    ctx = JobContext(ScanOptions(faces=False), 0.5, runtime.scorer.model_version, None)
    wrong = [Outcome.failed(i, u, "should never be stored") for i, u in chunk]
    assert store(runtime, wrong, ctx, "stalled-a") == set()
    assert {(i.id, i.score, i.finished_at) for i in item_rows(runtime.engine, job_id)} == stored
    assert frame_keys(runtime.engine, job_id) == frames
    items = item_rows(runtime.engine, job_id)
    assert all(i.interruptions == 1 for i in items), "B took the items over from a delivery that stalled"
    assert all(i.attempts == 1 for i in items), "B tried each alone, and each lone try succeeded"


def test_reconcile_never_takes_an_item_whose_lease_is_live(runtime: WorkerRuntime, media: list[Path]) -> None:
    job_id, chunk = new_job(runtime.engine, media[:3], faces=False)
    ids = [i for i, _ in chunk]
    with runtime.engine.begin() as conn:
        leases.claim(conn, job_id, ids[:2], owner="live", lease_s=600, max_attempts=3)
        leases.claim(conn, job_id, ids[2:], owner="dead", lease_s=600, max_attempts=3)
        conn.execute(update(MediaItem).where(MediaItem.id == ids[2]).values(lease_expires_at=utcnow()))
    sent: list[tuple[int, list[tuple[int, str]]]] = []
    report = reconcile(runtime.engine, enqueue=lambda j, c: sent.append((j, c)), queued_older_than=dt.timedelta(0))
    assert report.expired == 1
    assert [i for _, c in sent for i, _ in c] == [ids[2]]
    items = {i.id: i for i in item_rows(runtime.engine, job_id)}
    assert all(items[i].status == "processing" and items[i].lease_owner == "live" for i in ids[:2])
    assert items[ids[2]].status == "queued"
    assert items[ids[2]].lease_owner is None
    assert not frame_keys(runtime.engine, job_id)


def test_an_item_that_keeps_killing_workers_ends_error_and_its_chunk_completes(
    runtime: WorkerRuntime, media: list[Path]
) -> None:
    job_id, chunk = new_job(runtime.engine, media[:3], faces=False)
    poison = chunk[0][0]
    with runtime.engine.begin() as conn:  # three deliveries died holding it
        conn.execute(
            update(MediaItem)
            .where(MediaItem.id == poison)
            .values(status="processing", attempts=3, lease_owner="dead", lease_expires_at=utcnow())
        )
    report = process_chunk(runtime, job_id, chunk)
    assert report.error == 1
    assert report.done == 2
    items = {i.id: i for i in item_rows(runtime.engine, job_id)}
    assert items[poison].status == "error"
    assert items[poison].error is not None
    assert (items[poison].error or "").startswith("gave up after 3 attempts")
    with Session(runtime.engine) as session:
        assert session.get_one(ScanJob, job_id).status == "done"


def test_reconcile_closes_a_job_and_announces_it(runtime: WorkerRuntime, media: list[Path]) -> None:
    job_id, _chunk = new_job(runtime.engine, media[:1], faces=False)
    with runtime.engine.begin() as conn:  # a worker stored the item but died before closing the job
        conn.execute(update(MediaItem).where(MediaItem.job_id == job_id).values(status="done", verdict="real"))
    finished: list[int] = []
    report = reconcile(runtime.engine, enqueue=lambda j, c: None, on_finished=finished.append)
    assert report.finished_jobs == [job_id]
    assert finished == [job_id]


def test_a_chunk_that_fails_to_store_is_resent_by_the_next_reconcile(
    runtime: WorkerRuntime, media: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database outage longer than the task's retries must not strand items in `processing`."""
    from sqlalchemy.exc import OperationalError

    import workers.pipeline

    job_id, chunk = new_job(runtime.engine, media[:2], faces=False)

    def outage(*_args: object) -> set[int]:
        raise OperationalError("UPDATE media_items", {}, Exception("server closed the connection"))

    monkeypatch.setattr(workers.pipeline, "store", outage)
    with pytest.raises(OperationalError):
        process_chunk(runtime, job_id, chunk)
    monkeypatch.undo()

    sent: list[tuple[int, str]] = []
    report = reconcile(runtime.engine, enqueue=lambda _job, c: sent.extend(c))
    assert sorted(sent) == sorted(chunk), "every item of the failed chunk is sent again"
    assert report.expired == 2
    assert process_chunk(runtime, job_id, chunk).done == 2


def expire_as_dead(engine: Engine, job_id: int, ids: list[int], owner: str = "dead") -> None:
    """A delivery claimed `ids` and died holding them: its leases name it and have expired."""
    with engine.begin() as conn:
        assert leases.claim(conn, job_id, ids, owner=owner, lease_s=600, max_attempts=3).items == set(ids)
        conn.execute(update(MediaItem).where(MediaItem.id.in_(ids)).values(lease_expires_at=utcnow()))


def test_a_death_counts_against_no_item_of_its_chunk_and_each_is_then_tried_alone(
    runtime: WorkerRuntime, media: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id, chunk = new_job(runtime.engine, media[:3], faces=False)
    ids = [i for i, _ in chunk]
    expire_as_dead(runtime.engine, job_id, ids)
    assert all(i.attempts == 0 for i in item_rows(runtime.engine, job_id)), "an ordinary claim counts no attempt"

    import workers.pipeline

    alone_calls: list[int] = []
    real = workers.pipeline.analyse_and_score

    def spy(rt: WorkerRuntime, items: list[tuple[int, str]], *args: object, **kwargs: object) -> object:
        alone_calls.append(len(items))
        assert rt.floor._alone, "a lone try holds the worker's floor alone"
        return real(rt, items, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(workers.pipeline, "analyse_and_score", spy)
    report = process_chunk(runtime, job_id, chunk)
    assert report.done == 3
    assert alone_calls == [1, 1, 1], "each interrupted item was scored on its own"
    items = item_rows(runtime.engine, job_id)
    assert all(i.status == "done" and i.interruptions == 1 and i.attempts == 1 for i in items)


class WorkerDied(BaseException):
    """Stands for the process being killed: nothing the pipeline catches, nothing handed back."""


def test_an_item_that_kills_every_lone_try_ends_error_after_max_attempts(
    runtime: WorkerRuntime, media: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import workers.pipeline

    job_id, chunk = new_job(runtime.engine, media[:2], faces=False)
    poison, healthy = chunk
    expire_as_dead(runtime.engine, job_id, [poison[0], healthy[0]])

    def die(rt: WorkerRuntime, items: list[tuple[int, str]], *_: object, **__: object) -> object:
        raise WorkerDied

    monkeypatch.setattr(workers.pipeline, "analyse_and_score", die)
    for _ in range(runtime.settings.max_attempts):
        with pytest.raises(WorkerDied):
            process_chunk(runtime, job_id, [poison])
        with runtime.engine.begin() as conn:  # its lease runs out
            conn.execute(update(MediaItem).where(MediaItem.id == poison[0]).values(lease_expires_at=utcnow()))
    monkeypatch.undo()

    report = process_chunk(runtime, job_id, chunk)
    assert (report.error, report.done) == (1, 1)
    items = {i.id: i for i in item_rows(runtime.engine, job_id)}
    assert items[poison[0]].status == "error"
    assert (items[poison[0]].error or "").startswith(f"gave up after {runtime.settings.max_attempts} attempts")
    assert items[healthy[0]].status == "done", "the item that died beside it once was not blamed"
    assert items[healthy[0]].attempts == 1


def test_reconcile_sends_each_interrupted_item_in_a_chunk_of_its_own(runtime: WorkerRuntime, media: list[Path]) -> None:
    job_id, chunk = new_job(runtime.engine, media, faces=False)
    ids = [i for i, _ in chunk]
    expire_as_dead(runtime.engine, job_id, ids[:2])
    leases.hand_back(runtime.engine, "dead", ids[1:2])  # this one was handed back: not interrupted
    with runtime.engine.begin() as conn:
        conn.execute(update(MediaItem).where(MediaItem.id.in_(ids[2:])).values(enqueued_at=utcnow() - dt.timedelta(1)))
    sent: list[list[int]] = []
    reconcile(runtime.engine, enqueue=lambda _j, c: sent.append([i for i, _ in c]), queued_older_than=dt.timedelta(0))
    assert sorted(sent, key=len) == [[ids[0]], ids[1:]], "the interrupted item alone, the others together"
    interruptions = {i.id: i.interruptions for i in item_rows(runtime.engine, job_id)}
    assert interruptions == {i: int(i == ids[0]) for i in ids}


def test_reconcile_resends_items_sent_before_the_broker_lost_its_messages(
    runtime: WorkerRuntime, media: list[Path]
) -> None:
    _job_id, chunk = new_job(runtime.engine, media[:3], faces=False)
    ids = [i for i, _ in chunk]
    now = utcnow()
    with runtime.engine.begin() as conn:
        conn.execute(update(MediaItem).where(MediaItem.id == ids[0]).values(enqueued_at=now - dt.timedelta(seconds=5)))
        conn.execute(update(MediaItem).where(MediaItem.id.in_(ids[1:])).values(enqueued_at=now))
    sent: list[int] = []
    sent_before = now - dt.timedelta(seconds=1)
    report = reconcile(runtime.engine, enqueue=lambda _j, c: sent.extend(i for i, _ in c), sent_before=sent_before)
    assert (report.lost, sent) == (1, [ids[0]]), "only the item sent to the broker's previous life"


def test_a_database_error_during_an_item_is_retried_never_stored(
    runtime: WorkerRuntime, media: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.exc import OperationalError

    import workers.analysis
    from scanner.errors import TransientError

    job_id, chunk = new_job(runtime.engine, media[:3], faces=False)

    def restarting(*_: object) -> None:
        raise OperationalError("SELECT", {}, Exception("terminating connection due to administrator command"))

    monkeypatch.setattr(runtime, "earlier_possible", lambda *_: True)  # each item's bytes are looked up
    monkeypatch.setattr(workers.analysis, "find_earlier_result", restarting)
    with pytest.raises(TransientError):
        process_chunk(runtime, job_id, chunk)
    items = item_rows(runtime.engine, job_id)
    assert all(i.status == "processing" and i.error is None and i.lease_owner is None for i in items), "handed back"
    monkeypatch.undo()

    assert process_chunk(runtime, job_id, chunk).done == 3, "the retry claims them at once"
    assert all(i.status == "done" and i.interruptions == 0 for i in item_rows(runtime.engine, job_id))
