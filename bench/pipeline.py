"""Pipeline throughput as ratios measured in one run, on one device, batch size and precision.

Three numbers, all in images per second over the same JPEG files and the same checkpoint:

- raw: the model's forward pass alone on tensors already in memory (the ceiling);
- pipeline: the full distributed path, producer -> Redis -> one `deepscan worker` process ->
  PostgreSQL, timed from the job's creation to its end as the database records them;
- naive: the same path done the obvious way: one task per image, batch 1, fp32, one commit
  per image (chunk size 1, batch size 1).

A shared machine's speed drifts by 10-20 % over minutes, more than the gap being measured. So
raw and pipeline runs alternate (raw, pipeline, raw, ... raw, `--rounds` pipeline runs), one
worker serving every round as it would in production, and each pipeline run is compared with
the mean of the raw runs just before and after it; the figure is the median of those ratios.

It prints pipeline/raw (target >= 0.95 on a CPU, 0.9 on a GPU) and pipeline/naive (target >= 3).
Needs the local PostgreSQL and Redis (`make services`). Runs unchanged on a CUDA device
(`--device cuda`).

    .venv/bin/python bench/pipeline.py [--arch resnet50] [--image-size 224] [--images 384] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sqlalchemy.orm import Session

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.memory import cpu_model
from scanner import migrate
from scanner.checkpoint import CheckpointMeta, load_checkpoint, save_checkpoint
from scanner.db import make_engine
from scanner.detector import Preprocessing, build_model, preprocess, resolve_device, score_batch
from scanner.media import read_image_file
from scanner.models import ScanJob
from tests.pipeline_helpers import deepscan_env, worker_process
from tests.services import fresh_postgres_database, redis_for_run


def write_images(folder: Path, count: int, size: int, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    paths = []
    for index in range(count):
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        path = folder / f"img_{index:05d}.jpg"
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(path)
    return paths


def write_checkpoint(path: Path, arch: str, image_size: int) -> Path:
    torch.manual_seed(0)
    meta = CheckpointMeta(arch=arch, preprocessing=Preprocessing(image_size=image_size), threshold=0.5, target_fpr=0.01)
    save_checkpoint(path, build_model(arch, pretrained="none"), meta)
    return path


def raw_images_per_s(checkpoint: Path, images: list[Path], *, device: str, batch_size: int) -> float:
    """The forward pass alone, on tensors prepared beforehand (what the pipeline cannot beat)."""
    dev = resolve_device(device)
    loaded = load_checkpoint(checkpoint, device=dev)
    tensors = torch.stack([preprocess(read_image_file(str(p)), loaded.meta.preprocessing) for p in images])
    score_batch(loaded.model, tensors[:batch_size], dev)  # warm-up
    started = time.perf_counter()
    for start in range(0, len(tensors), batch_size):
        score_batch(loaded.model, tensors[start : start + batch_size], dev)
    return len(images) / (time.perf_counter() - started)


def scan_images_per_s(
    env: dict[str, str], folder: Path, *, chunk_size: int, label: str, cwd: Path | None = None
) -> float:
    """Scan `folder` through Redis with the running worker; images/s from the job's creation to its end."""
    done, seconds = scan_job(env, folder, ["--chunk-size", str(chunk_size)], label=label, cwd=cwd)
    return done / seconds


def scan_job(
    env: dict[str, str], folder: Path, options: Sequence[str], *, label: str, cwd: Path | None = None
) -> tuple[int, float]:
    """`deepscan scan folder --no-faces --rescan --wait *options` with the running worker: items
    done, and seconds from the job's creation to its end as the database records them (neither
    the producer's start-up nor its poll for the end is in it). `cwd`: another checkout's producer."""
    command = [sys.executable, "-m", "scanner", "scan", str(folder), "--no-faces", "--rescan", "--wait",
               *options, "--format", "json"]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False, cwd=cwd)
    lines = done.stdout.strip().splitlines()
    summary = json.loads(lines[-1]) if lines else {"status": "no summary"}
    if summary["status"] != "done" or summary["errors"]:
        raise SystemExit(f"{label} scan did not finish cleanly: {summary}\n{done.stderr[-2000:]}")
    engine = make_engine(env["DEEPSCAN_DATABASE_URL"])
    try:
        with Session(engine) as session:
            job = session.get_one(ScanJob, summary["job_id"])
            assert job.finished_at is not None
            seconds = (job.finished_at - job.created_at).total_seconds()
    finally:
        engine.dispose()
    return int(summary["done"]), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--images", type=int, default=384)
    parser.add_argument("--rounds", type=int, default=3, help="pipeline runs, each between two raw runs")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--naive-images", type=int, default=64, help="images for the naive run")
    args = parser.parse_args()

    with (
        tempfile.TemporaryDirectory() as tmp,
        fresh_postgres_database() as database_url,
        redis_for_run(Path(tmp)) as broker_url,
    ):
        work = Path(tmp)
        migrate.upgrade(database_url)
        folder, naive_folder = work / "media", work / "naive"
        folder.mkdir()
        naive_folder.mkdir()
        images = write_images(folder, args.images, 256)
        write_images(naive_folder, args.naive_images, 256)
        checkpoint = write_checkpoint(work / "bench.safetensors", args.arch, args.image_size)
        base = deepscan_env(
            DEEPSCAN_DATABASE_URL=database_url,
            DEEPSCAN_BROKER_URL=broker_url,
            DEEPSCAN_CHECKPOINT=str(checkpoint),
            DEEPSCAN_DEVICE=args.device,
            DEEPSCAN_HOME=str(work / "home"),
        )
        batched_env = {
            **base,
            "DEEPSCAN_QUEUE": f"bench-{uuid.uuid4().hex[:6]}",
            "DEEPSCAN_BATCH_SIZE": str(args.batch_size),
        }
        raws = [raw_images_per_s(checkpoint, images, device=args.device, batch_size=args.batch_size)]
        pipelines = []
        with worker_process(batched_env, work / "worker-pipeline.log", ready_timeout_s=120):
            for round_ in range(args.rounds):
                pipelines.append(
                    scan_images_per_s(batched_env, folder, chunk_size=args.batch_size * 2, label="pipeline")
                )
                raws.append(raw_images_per_s(checkpoint, images, device=args.device, batch_size=args.batch_size))
                print(f"round {round_ + 1}: raw {raws[-2]:.1f} -> pipeline {pipelines[-1]:.1f} -> raw {raws[-1]:.1f} "
                      "images/s", file=sys.stderr)  # fmt: skip
        naive_env = {**base, "DEEPSCAN_QUEUE": f"bench-{uuid.uuid4().hex[:6]}", "DEEPSCAN_BATCH_SIZE": "1"}
        with worker_process(naive_env, work / "worker-naive.log", ready_timeout_s=120):
            naive = scan_images_per_s(naive_env, naive_folder, chunk_size=1, label="naive")
    ratios = [p / ((before + after) / 2) for p, before, after in zip(pipelines, raws, raws[1:], strict=False)]
    ratio = statistics.median(ratios)
    raw, pipeline = statistics.median(raws), statistics.median(pipelines)

    device = str(resolve_device(args.device))
    target = 0.95 if device == "cpu" else 0.9
    print(f"{cpu_model()} ({os.cpu_count()} cores), device {device}, {args.arch} at {args.image_size} px, "
          f"batch {args.batch_size}, fp32 on CPU / bf16 on CUDA, {args.images} images")  # fmt: skip
    print(
        f"raw model forward      {raw:8.1f} images/s   (median of {len(raws)}: {', '.join(f'{r:.1f}' for r in raws)})"
    )
    print(f"distributed pipeline   {pipeline:8.1f} images/s   (median of {len(pipelines)}: "
          f"{', '.join(f'{p:.1f}' for p in pipelines)})")  # fmt: skip
    print(f"pipeline/raw = {ratio:.2f}  (target >= {target}; median of the rounds' "
          f"{', '.join(f'{r:.2f}' for r in ratios)}, each against the raw runs beside it)")  # fmt: skip
    print(f"naive baseline         {naive:8.1f} images/s   pipeline/naive = {pipeline / naive:.2f}  (target >= 3)")
    figures = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "device": device,
        "arch": args.arch,
        "images": args.images,
        "raw": raw,
        "pipeline": pipeline,
        "naive": naive,
        "raw_runs": raws,
        "pipeline_runs": pipelines,
        "round_ratios": ratios,
        "pipeline_over_raw": ratio,
        "pipeline_over_naive": pipeline / naive,
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
