"""Peak memory and time of a worker scanning each hostile file alone (issue 8, point 5).

The hostile files are small on disk and huge or slow once decoded, made by tests/media_factory.py at
the sizes of the issue: a 7999x7999 PNG (200 KiB, 192 MB decoded), a 256000x250 PNG (at the
64-megapixel cap), an MJPEG AVI of 9000x9000 frames (over the frame cap), one of 7680x4320 frames
(at the cap, 32 sampled), and an MPEG-4 AVI of 100,000 frames with a single keyframe.

Each file is scanned by a fresh `python -m deepscan scan FILE` child in embedded mode on the CPU, with
the production model shape (resnet50 at 224 px, random weights); the child's own peak RSS comes from
`os.wait4`. A baseline child scanning one small JPEG gives the process's own footprint (Python,
torch, the model), so `added_mib` is what the file itself cost. The "all at once" row scans every
file in one child, in the worker's parallel fetch/decode threads.

Prints one JSON object (CPU model, per-file status, error, peak RSS, scan and wall time) and exits 1
if any single-file child peaks at or over `--limit-mib` (2 GiB). The all-at-once row is reported,
not held to the limit.

The "over_http" row (issue 21) serves `--http-images` (32) flat PNGs of 62 megapixels (about 200 KB
each, 430 MB each while decoding) over loopback HTTP and scans their URLs in one child, its fetch
threads all decoding at once but for the process's decode budget (DEEPSCAN_DECODE_BUDGET_MPIX,
workers/decodebudget.py); the child must peak under `--http-limit-mib` (2.5 GB), the bound that
docs/performance.md derives from the budget. `--only-http` runs that row alone; with `--worker` the
same URLs go through Redis (DEEPSCAN_TEST_REDIS_URL, a queue of its own) to a real `deepscan worker`
process (two chunks of 16 at once, 16 fetch threads) on a SQLite file, and the worker's own peak
RSS is the figure.

    .venv/bin/python bench/memory.py [--limit-mib 2048] [--arch resnet50] [--image-size 224]
    .venv/bin/python bench/memory.py --only-http [--worker] [--http-images 32] [--http-limit-mib 2500]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scanner.checkpoint import CheckpointMeta, save_checkpoint
from scanner.detector import Preprocessing, build_model
from tests import media_factory as mf
from tests import services
from tests.pipeline_helpers import deepscan_env
from tests.servers import http_server

DEFAULT_LIMIT_MIB = 2048  # worker peak RSS allowed while it scans any one hostile file
DEFAULT_HTTP_IMAGES = 32
DEFAULT_HTTP_IMAGE_SIZE_PX = (7874, 7874)  # 62 megapixels
DEFAULT_HTTP_LIMIT_MIB = 2500  # peak RSS allowed while the HTTP images are scanned together
DEFAULT_CHILD_TIMEOUT_S = 600.0

HOSTILE: dict[str, Callable[[Path], Path]] = {
    "baseline_small.jpg": lambda p: mf.write_image(p, size=(640, 480)),
    "bomb_7999x7999.png": lambda p: mf.write_flat_png(p, (7999, 7999)),
    "strip_256000x250.png": lambda p: mf.write_flat_png(p, (256_000, 250)),
    "frames_9000x9000.avi": lambda p: mf.write_mjpeg_avi(p, (9000, 9000), frames=8),
    "frames_7680x4320.avi": lambda p: mf.write_mjpeg_avi(p, (7680, 4320), frames=32, fps=1.0),
    "one_keyframe_100000_frames.avi": lambda p: mf.write_long_gop_video(p, frames=100_000),
}


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (Linux), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_checkpoint(path: Path, arch: str, image_size: int) -> Path:
    torch.manual_seed(0)
    meta = CheckpointMeta(arch=arch, preprocessing=Preprocessing(image_size=image_size), threshold=0.5, target_fpr=0.01)
    save_checkpoint(path, build_model(arch, pretrained="none"), meta)
    return path


def scan_alone(source: Path, work: Path, checkpoint: Path, **extra_env: str) -> dict[str, Any]:
    """Scan `source` (a file, a folder or a URL list) in a fresh child; its items' outcomes, peak RSS and wall time."""
    home = work / f"home-{source.name}"
    home.mkdir()
    env = deepscan_env(DEEPSCAN_HOME=str(home), DEEPSCAN_CHECKPOINT=str(checkpoint), DEEPSCAN_DEVICE="cpu", **extra_env)
    what = ["--from-file", str(source)] if source.suffix == ".txt" else [str(source)]  # a URL list, or files
    command = [sys.executable, "-m", "deepscan", "scan", *what, "--rescan", "--format", "json"]
    started = time.perf_counter()
    with (home / "scan.log").open("wb") as log:
        child = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    exit_code, usage = _wait(child)
    wall_s = time.perf_counter() - started
    lines = (home / "scan.log").read_text(errors="replace").strip().splitlines()
    summary = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}
    return {
        "exit_code": exit_code,
        "items": _outcomes(home / "deepscan.db"),
        "done": summary.get("done"),
        "errors": summary.get("errors"),
        "peak_rss_mib": round(usage.ru_maxrss / 1024),
        "scan_s": summary.get("elapsed_s"),  # the job itself, without the child's start and model load
        "wall_s": round(wall_s, 2),
    }


def _wait(child: subprocess.Popen[bytes]) -> tuple[int, Any]:
    """The child's exit code and its own rusage (os.wait4), killing it past the timeout."""
    deadline = time.monotonic() + DEFAULT_CHILD_TIMEOUT_S
    while True:
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            child.returncode = os.waitstatus_to_exitcode(status)
            return child.returncode, usage
        if time.monotonic() > deadline:
            child.kill()
        time.sleep(0.05)


def _outcomes(database: Path) -> dict[str, str]:
    """Each item's file name and `done` or `error: reason`, read from the child's SQLite database."""
    import sqlite3

    if not database.exists():
        return {}
    with sqlite3.connect(database) as db:
        rows = db.execute("SELECT url, status, error FROM media_items ORDER BY url").fetchall()
    return {Path(url).name: status if not error else f"{status}: {error}" for url, status, error in rows}


def scan_over_http(work: Path, checkpoint: Path, count: int, *, worker: bool = False) -> dict[str, Any]:
    """`count` distinct 62-megapixel PNGs served over loopback HTTP, scanned together in one child."""
    served = work / "served"
    for i in range(count):
        mf.write_flat_png(served / f"big_{i:02d}.png", DEFAULT_HTTP_IMAGE_SIZE_PX, colour=(i * 7 % 256, 120, 150))
    with http_server(served) as base:
        url_list = work / "big_urls.txt"
        url_list.write_text("".join(f"{base}/big_{i:02d}.png\n" for i in range(count)))
        if worker:
            return scan_with_worker(url_list, work, checkpoint)
        result = scan_alone(url_list, work, checkpoint, DEEPSCAN_ALLOW_PRIVATE_URLS="1")
    result["items"] = {
        status: sum(v == status for v in result["items"].values()) for status in {*result["items"].values()}
    }
    return result


def scan_with_worker(url_list: Path, work: Path, checkpoint: Path) -> dict[str, Any]:
    """The URL list through Redis to a `deepscan worker` child; the worker's peak RSS once it has stopped."""
    home = work / "home-worker"
    home.mkdir()
    with services.redis_for_run(work / "redis") as broker_url:
        return _scan_with_worker(url_list, home, checkpoint, broker_url)


def _scan_with_worker(url_list: Path, home: Path, checkpoint: Path, broker_url: str) -> dict[str, Any]:
    env = deepscan_env(
        DEEPSCAN_HOME=str(home),
        DEEPSCAN_CHECKPOINT=str(checkpoint),
        DEEPSCAN_DEVICE="cpu",
        DEEPSCAN_ALLOW_PRIVATE_URLS="1",
        DEEPSCAN_BROKER_URL=broker_url,
        DEEPSCAN_DATABASE_URL=f"sqlite:///{home / 'deepscan.db'}",
        DEEPSCAN_QUEUE=f"bench-memory-{uuid.uuid4().hex[:8]}",
    )
    scanner = [sys.executable, "-m", "deepscan"]
    subprocess.run([*scanner, "db", "upgrade"], env=env, check=True, capture_output=True)
    log = home / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen([*scanner, "worker"], env=env, stdout=out, stderr=subprocess.STDOUT)
    while b"ready." not in log.read_bytes():
        if worker.poll() is not None:
            raise SystemExit(f"worker exited early:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.2)
    started = time.perf_counter()
    scan = [*scanner, "scan", "--from-file", str(url_list), "--rescan", "--wait", "--format", "json"]
    producer = subprocess.run(scan, env=env, capture_output=True, timeout=DEFAULT_CHILD_TIMEOUT_S)
    wall_s = time.perf_counter() - started
    worker.send_signal(signal.SIGTERM)
    exit_code, usage = _wait(worker)
    lines = producer.stdout.decode(errors="replace").strip().splitlines()
    summary = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}
    items = _outcomes(home / "deepscan.db")
    return {
        "mode": "deepscan worker (2 chunks x 8 fetch threads)",
        "exit_code": exit_code,
        "items": {status: sum(v == status for v in items.values()) for status in {*items.values()}},
        "done": summary.get("done"),
        "errors": summary.get("errors"),
        "peak_rss_mib": round(usage.ru_maxrss / 1024),
        "wall_s": round(wall_s, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit-mib", type=int, default=DEFAULT_LIMIT_MIB)
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--http-images", type=int, default=DEFAULT_HTTP_IMAGES)
    parser.add_argument("--http-limit-mib", type=int, default=DEFAULT_HTTP_LIMIT_MIB)
    parser.add_argument("--only-http", action="store_true", help="run the over-HTTP row alone")
    parser.add_argument("--worker", action="store_true", help="over HTTP: through Redis to a `deepscan worker`")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        folder = work / "hostile"
        folder.mkdir()
        checkpoint = write_checkpoint(work / "bench.safetensors", args.arch, args.image_size)
        over_http = scan_over_http(work, checkpoint, args.http_images, worker=args.worker)
        if args.only_http:
            print(json.dumps({"cpu": cpu_model(), "cores": os.cpu_count(), "over_http": over_http}, indent=2))
            if over_http["peak_rss_mib"] >= args.http_limit_mib:
                raise SystemExit(f"over HTTP: peak RSS at or over {args.http_limit_mib} MiB")
            return
        paths = {name: write(folder / name) for name, write in HOSTILE.items()}
        files = {name: scan_alone(path, work, checkpoint) for name, path in paths.items()}
        together = scan_alone(folder, work, checkpoint)
    baseline = files["baseline_small.jpg"]["peak_rss_mib"]
    for result in files.values():
        result["added_mib"] = result["peak_rss_mib"] - baseline
    over = sorted(name for name, result in files.items() if result["peak_rss_mib"] >= args.limit_mib)
    report = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "arch": args.arch,
        "image_size": args.image_size,
        "limit_mib": args.limit_mib,
        "files": files,
        "all_at_once": together,
        "over_http": over_http,
        "over_limit": over,
    }
    print(json.dumps(report, indent=2))
    if over:
        raise SystemExit(f"peak RSS at or over {args.limit_mib} MiB for: {', '.join(over)}")
    if over_http["peak_rss_mib"] >= args.http_limit_mib:
        raise SystemExit(f"over HTTP: peak RSS at or over {args.http_limit_mib} MiB")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
