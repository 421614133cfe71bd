"""Pipeline throughput as ratios measured in one run, on one device, batch size and precision.

Four numbers, all in images per second over the same JPEG files and the same checkpoint:

- raw fp32 and raw bf16: the model's forward pass alone on tensors already in memory, in fp32 and
  under bf16 autocast (the ceilings);
- pipeline: the full distributed path at the worker's default `--precision auto` (bf16 where the
  device runs it natively, fp32 elsewhere; printed), producer -> Redis -> one `deepscan worker`
  process -> PostgreSQL, timed from the job's creation to its end as the database records them;
- naive: the same path done the obvious way: one task per image, batch 1, fp32, one commit
  per image (chunk size 1, batch size 1).

A shared machine's speed drifts by 10-20 % over minutes, more than the gap being measured. So
raw and pipeline runs alternate (raw, pipeline, raw, ... raw, `--rounds` pipeline runs), one
worker serving every round as it would in production, and each pipeline run is compared with
the mean of the raw runs just before and after it; the figure is the median of those ratios.

It prints pipeline/raw at the same precision (target >= 0.95 on a CPU, 0.9 on a GPU),
pipeline(auto)/raw(fp32) (target >= 2.0 on a CPU with native bf16, where auto is bf16) and
pipeline/naive (target >= 3).
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
from scanner.precision import Precision, describe, resolve_precision
from tests.pipeline_helpers import cli_module, deepscan_env, worker_process
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


def raw_images_per_s(
    checkpoint: Path, images: list[Path], *, device: str, batch_size: int, precision: Precision
) -> float:
    """The forward pass alone, on tensors prepared beforehand (what the pipeline cannot beat)."""
    dev = resolve_device(device)
    loaded = load_checkpoint(checkpoint, device=dev)
    tensors = torch.stack([preprocess(read_image_file(str(p)), loaded.meta.preprocessing) for p in images])
    score_batch(loaded.model, tensors[:batch_size], dev, precision)  # warm-up
    started = time.perf_counter()
    for start in range(0, len(tensors), batch_size):
        score_batch(loaded.model, tensors[start : start + batch_size], dev, precision)
    return len(images) / (time.perf_counter() - started)


def round_ratios(pipelines: list[float], raws: list[float]) -> list[float]:
    """Each pipeline run over the mean of the raw runs just before and after it."""
    return [p / ((before + after) / 2) for p, before, after in zip(pipelines, raws, raws[1:], strict=False)]


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
    command = [sys.executable, "-m", cli_module(cwd), "scan", str(folder), "--no-faces", "--rescan", "--wait",
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
        raws: dict[Precision, list[float]] = {"fp32": [], "bf16": []}

        def measure_raw() -> None:
            for precision, runs in raws.items():
                runs.append(raw_images_per_s(checkpoint, images, device=args.device, batch_size=args.batch_size,
                                             precision=precision))  # fmt: skip

        measure_raw()
        pipelines = []
        with worker_process(batched_env, work / "worker-pipeline.log", ready_timeout_s=120):
            for round_ in range(args.rounds):
                pipelines.append(
                    scan_images_per_s(batched_env, folder, chunk_size=args.batch_size * 2, label="pipeline")
                )
                measure_raw()
                print(f"round {round_ + 1}: pipeline {pipelines[-1]:.1f}, then raw fp32 {raws['fp32'][-1]:.1f}, "
                      f"raw bf16 {raws['bf16'][-1]:.1f} images/s", file=sys.stderr)  # fmt: skip
        naive_env = {**base, "DEEPSCAN_QUEUE": f"bench-{uuid.uuid4().hex[:6]}", "DEEPSCAN_BATCH_SIZE": "1",
                     "DEEPSCAN_PRECISION": "fp32"}  # fmt: skip
        with worker_process(naive_env, work / "worker-naive.log", ready_timeout_s=120):
            naive = scan_images_per_s(naive_env, naive_folder, chunk_size=1, label="naive")
    device = resolve_device(args.device)
    auto = resolve_precision("auto", device)
    same = round_ratios(pipelines, raws[auto])
    over_fp32 = round_ratios(pipelines, raws["fp32"])
    raw32, raw16, pipeline = (statistics.median(r) for r in (raws["fp32"], raws["bf16"], pipelines))
    target = 0.95 if device.type == "cpu" else 0.9

    def runs(values: list[float]) -> str:
        return f"median of {len(values)}: {', '.join(f'{v:.1f}' for v in values)}"

    print(f"{cpu_model()} ({os.cpu_count()} cores), device {device}, {args.arch} at {args.image_size} px, "
          f"batch {args.batch_size}, {args.images} images; auto = {describe(auto, device)}")  # fmt: skip
    print(f"raw model forward, fp32  {raw32:8.1f} images/s   ({runs(raws['fp32'])})")
    print(f"raw model forward, bf16  {raw16:8.1f} images/s   ({runs(raws['bf16'])})   bf16/fp32 = {raw16 / raw32:.2f}")
    print(f"pipeline at auto ({auto})  {pipeline:8.1f} images/s   ({runs(pipelines)})")
    print(f"pipeline/raw({auto}) = {statistics.median(same):.2f}  (target >= {target}; rounds "
          f"{', '.join(f'{r:.2f}' for r in same)}, each against the raw runs beside it)")  # fmt: skip
    print(f"pipeline(auto)/raw(fp32) = {statistics.median(over_fp32):.2f}  (target >= 2.0 where auto is bf16 on a CPU)")
    print(f"naive baseline (fp32)   {naive:8.1f} images/s   pipeline/naive = {pipeline / naive:.2f}  (target >= 3)")
    figures = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "device": str(device),
        "auto_precision": auto,
        "arch": args.arch,
        "images": args.images,
        "raw_fp32": raw32,
        "raw_bf16": raw16,
        "pipeline": pipeline,
        "naive": naive,
        "raw_fp32_runs": raws["fp32"],
        "raw_bf16_runs": raws["bf16"],
        "pipeline_runs": pipelines,
        "pipeline_over_raw_same_precision": statistics.median(same),
        "pipeline_over_raw_fp32": statistics.median(over_fp32),
        "pipeline_over_naive": pipeline / naive,
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
