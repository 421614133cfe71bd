"""A worker whose JPEGs take the device decoder's path stores what the CPU path stores.

On a CUDA worker, JPEGs of jobs without face detection reach the model as compressed bytes and
are decoded in batches by nvJPEG (workers/gpudecode.py). The same path runs on the CPU when a
CPU worker is told to take it, so this test covers everything but nvJPEG itself on any machine:
the chunk's verdicts, sizes (EXIF orientation), thumbnails, and a corrupt JPEG that only the
batched decode finds ending `error` alone.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from scanner.jobs import ScanOptions, add_items, create_job
from scanner.models import MediaItem, Thumbnail
from scanner.settings import Settings
from scanner.sources import MediaRef
from tests import media_factory
from tests.pipeline_helpers import write_tiny_checkpoint
from workers.pipeline import process_chunk
from workers.runtime import WorkerRuntime, load_runtime

SCORE_TOLERANCE = 1e-2


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("device-decode-media")
    paths = [media_factory.write_image(folder / f"img_{i}.jpg", size=(90 + 10 * i, 70), seed=i) for i in range(5)]
    paths.append(media_factory.write_exif_rotated_jpeg(folder / "rotated.jpg", (80, 40), orientation=6))
    paths.append(media_factory.write_image(folder / "img.png", seed=9))  # decodes on the CPU in both runs
    good = paths[0].read_bytes()
    corrupt = folder / "corrupt.jpg"  # a whole header and end marker, zeros between: both decoders refuse it
    corrupt.write_bytes(good[:200] + bytes(len(good) - 400) + good[-200:])
    paths.append(corrupt)
    return paths


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("device-decode-ckpt") / "tiny.safetensors")


def runtime(engine: Engine, db_url: str, checkpoint: Path, home: Path, *, device_path: bool) -> WorkerRuntime:
    settings = Settings.from_env(
        {"DEEPSCAN_DATABASE_URL": db_url, "DEEPSCAN_HOME": str(home), "DEEPSCAN_FETCH_THREADS": "3"}
    ).with_overrides(checkpoint=checkpoint, device="cpu")
    rt = load_runtime(settings, engine)
    rt.scorer.decodes_jpeg_on_device = device_path  # what a CUDA worker decides; the CPU decodes it here
    return rt


def scan(rt: WorkerRuntime, paths: list[Path]) -> dict[str, MediaItem]:
    with Session(rt.engine) as session, session.begin():
        job_id = create_job(session, name="device", sources=["test"], options=ScanOptions(faces=False, rescan=True)).id
    chunks: list[list[tuple[int, str]]] = []
    add_items(rt.engine, job_id, (MediaRef(p.as_uri()) for p in paths), enqueue=lambda _job, c: chunks.append(c))
    for chunk in chunks:
        process_chunk(rt, job_id, chunk)
    with Session(rt.engine) as session:
        items = session.scalars(select(MediaItem).where(MediaItem.job_id == job_id)).all()
        thumbnails = set(session.scalars(select(Thumbnail.item_id).where(Thumbnail.item_id.in_([i.id for i in items]))))
        for item in items:
            session.expunge(item)
    by_name = {Path(item.url).name: item for item in items}
    assert {name for name, item in by_name.items() if item.id in thumbnails} == {
        name for name, item in by_name.items() if item.status == "done"
    }, "every scored item keeps a thumbnail"
    return by_name


def test_the_device_path_stores_the_cpu_paths_verdicts(
    engine: Engine, db_url: str, checkpoint: Path, media: list[Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    on_cpu = scan(runtime(engine, db_url, checkpoint, tmp_path, device_path=False), media)
    with caplog.at_level(logging.INFO, logger="workers.gpudecode"):
        on_device = scan(runtime(engine, db_url, checkpoint, tmp_path, device_path=True), media)

    assert "decoding one by one" in caplog.text, "the corrupt JPEG reached the batched device decode"

    assert on_device["corrupt.jpg"].status == "error"
    assert (on_device["corrupt.jpg"].error or "").startswith("corrupt image")
    assert on_cpu["corrupt.jpg"].status == "error"
    for name, item in on_cpu.items():
        if name == "corrupt.jpg":
            continue
        other = on_device[name]
        assert item.status == other.status == "done", name
        assert (other.width, other.height) == (item.width, item.height), name
        assert other.score == pytest.approx(item.score, abs=SCORE_TOLERANCE), name
        assert other.verdict == item.verdict or abs((item.score or 0) - 0.5) < SCORE_TOLERANCE, name
    assert (on_device["rotated.jpg"].width, on_device["rotated.jpg"].height) == (40, 80)
