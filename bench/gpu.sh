#!/usr/bin/env bash
# One prepared benchmark for a fresh GPU machine with this repository checked out; prints ONE JSON line:
# the GPU's name, raw ResNet50 bf16 forward images/s at batch 64 and 256, the full distributed
# pipeline's images/s (producer -> Redis -> one `deepscan worker` -> PostgreSQL, --no-faces) over
# synthetic 256-px JPEGs, pipeline/raw (target >= 0.9) and the worker's peak RSS. Targets on one
# H100-class GPU: pipeline >= 0.9 x raw and >= 5,000 images/s. Runs on CPU-only machines too.
#
#   bench/gpu.sh                                   # 20,000 images, resnet50 at 224 px
#   BENCH_IMAGES=96 BENCH_ARCH=resnet18 BENCH_IMAGE_SIZE=64 bench/gpu.sh    # a quick CPU check
#
# The worker runs as deployed: `--concurrency 2` (BENCH_CONCURRENCY), JPEGs decoded by nvJPEG on a
# CUDA device (BENCH_GPU_DECODE=0: on the CPU), no torch.compile (BENCH_COMPILE=1: compiled; its
# start-up is logged by the worker and is not in the timed job).
#
# Python environment: $BENCH_VENV if set, else ./.venv when it already has deepscan's dependencies,
# else a new ./.bench-venv (`pip install -e .`, which needs the package index). PostgreSQL and
# Redis: scripts/ensure-services.sh. Progress goes to stderr; stdout is the JSON line alone.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${BENCH_VENV:-}
if [ -z "$venv" ]; then
  if [ -x .venv/bin/python ] && .venv/bin/python -c 'import torch, celery, scanner' 2>/dev/null; then
    venv=.venv
  else
    venv=.bench-venv
  fi
fi
if ! "$venv/bin/python" -c 'import torch, celery, scanner' 2>/dev/null; then
  echo "gpu.sh: building $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --upgrade pip >&2
  "$venv/bin/pip" install --quiet -e . >&2
fi
scripts/ensure-services.sh >&2

exec "$venv/bin/python" - <<'PYTHON'
import json
import os
import sys
import tempfile
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

sys.path.insert(0, os.getcwd())
from bench.datapath import pipeline_images_per_s, write_photos
from bench.enqueue import cpu_model
from scanner import migrate
from scanner.checkpoint import CheckpointMeta, save_checkpoint
from scanner.detector import Preprocessing, build_model, prepare_for_inference, resolve_device, score_batch
from tests.pipeline_helpers import deepscan_env
from tests.services import fresh_postgres_database, redis_url

IMAGES = int(os.environ.get("BENCH_IMAGES", "20000"))
ARCH = os.environ.get("BENCH_ARCH", "resnet50")
SIZE = int(os.environ.get("BENCH_IMAGE_SIZE", "224"))
BATCH = int(os.environ.get("BENCH_BATCH_SIZE", "256"))
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "2"))
GPU_DECODE = os.environ.get("BENCH_GPU_DECODE", "1") != "0"
COMPILE = os.environ.get("BENCH_COMPILE", "0") == "1"
PER_PROCESS = 500  # images written by one process


def log(message: str) -> None:
    print(f"gpu.sh: {message}", file=sys.stderr, flush=True)


def write_part(args: tuple[Path, int, int]) -> None:
    folder, start, count = args
    for path in write_photos(folder / f"part{start}", count, 256, 256, seed=start):
        path.rename(folder / f"{start}_{path.name}")
    (folder / f"part{start}").rmdir()


def raw_images_per_s(model: torch.nn.Module, device: torch.device, batch: int) -> float:
    x = torch.randn(batch, 3, SIZE, SIZE, device=device)
    for _ in range(3):
        score_batch(model, x, device)  # warm-up: kernel selection, autocast caches
    runs = max(3, min(50, 2000 // batch)) if device.type == "cuda" else 2
    started = time.perf_counter()
    for _ in range(runs):
        score_batch(model, x, device)  # returns scores on the host: each run is synchronised
    return runs * batch / (time.perf_counter() - started)


def main() -> None:
    device = resolve_device("auto")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"no GPU ({cpu_model()})"
    with tempfile.TemporaryDirectory(prefix="deepscan-gpu-") as tmp, fresh_postgres_database() as database_url:
        work = Path(tmp)
        folder = work / "jpeg256"
        folder.mkdir()
        started = time.perf_counter()
        parts = [(folder, start, min(PER_PROCESS, IMAGES - start)) for start in range(0, IMAGES, PER_PROCESS)]
        with ProcessPoolExecutor(os.cpu_count()) as pool:
            list(pool.map(write_part, parts))
        log(f"{IMAGES} JPEGs written in {time.perf_counter() - started:.0f} s")

        torch.manual_seed(0)
        checkpoint = work / "bench.safetensors"
        meta = CheckpointMeta(arch=ARCH, preprocessing=Preprocessing(image_size=SIZE), threshold=0.5, target_fpr=0.01)
        save_checkpoint(checkpoint, build_model(ARCH, pretrained="none"), meta)
        model = prepare_for_inference(build_model(ARCH, pretrained="none"), device)
        raw = {b: raw_images_per_s(model, device, b) for b in (64, 256)}
        log(f"raw {ARCH} forward: " + ", ".join(f"batch {b}: {v:.0f} images/s" for b, v in raw.items()))
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()

        migrate.upgrade(database_url)
        env = deepscan_env(
            DEEPSCAN_DATABASE_URL=database_url,
            DEEPSCAN_BROKER_URL=redis_url(),
            DEEPSCAN_CHECKPOINT=str(checkpoint),
            DEEPSCAN_DEVICE="auto",
            DEEPSCAN_HOME=str(work / "home"),
            DEEPSCAN_BATCH_SIZE=str(BATCH),
            DEEPSCAN_FETCH_THREADS=str(max(8, os.cpu_count() or 8)),
            DEEPSCAN_QUEUE=f"bench-gpu-{uuid.uuid4().hex[:6]}",
        )
        worker_args = ["--gpu-decode" if GPU_DECODE else "--no-gpu-decode", *(["--compile"] if COMPILE else [])]
        pipeline, rss = pipeline_images_per_s(
            env, folder, work / "worker.log", chunk_size=2 * BATCH, concurrency=CONCURRENCY,
            worker_args=worker_args, ready_timeout_s=900 if COMPILE else 120,
        )
        log(f"pipeline: {pipeline:.0f} images/s")
    best_raw = max(raw.values())
    print(json.dumps({
        "gpu": name, "cpu": cpu_model(), "arch": ARCH, "image_size": SIZE, "images": IMAGES,
        "raw_bf16_images_per_s_batch64": round(raw[64], 1), "raw_bf16_images_per_s_batch256": round(raw[256], 1),
        "pipeline_images_per_s": round(pipeline, 1), "pipeline_over_raw": round(pipeline / best_raw, 3),
        "worker_peak_rss_mb": round(max(rss, default=0.0), 1), "bf16": device.type == "cuda",
        "worker_concurrency": CONCURRENCY, "gpu_decode": GPU_DECODE and device.type == "cuda", "compile": COMPILE,
    }))


if __name__ == "__main__":
    main()
PYTHON
