"""Video throughput: seconds of 720p video scanned per second of wall time, by one worker.

The full distributed path (producer -> Redis -> one `deepscan worker` -> PostgreSQL, `--no-faces`)
scans the same clips sampled at 1 fps and at 4 fps, with the near-free model of bench/datapath.py
so that the figure is the data path's (demux, decode, sampling, resize), not the model's. Target:
>= 30 x real time at 1 fps on 2 cores.

Clips: `--clips DIR` scans the videos in DIR (use real H.264 720p files where you have them);
otherwise 720p clips are written here with the best encoder OpenCV offers (H.264 when its build
has one, else MPEG-4 Part 2), and the codec is printed beside the figures.
Needs the local PostgreSQL and Redis (`make services`).

    .venv/bin/python bench/video.py [--clips DIR] [--count 4] [--seconds 30]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.datapath import RssSampler, write_checkpoint
from bench.enqueue import cpu_model
from bench.pipeline import scan_job
from scanner import migrate
from scanner.settings import DEFAULT_FETCH_THREADS
from tests.pipeline_helpers import deepscan_env, worker_process
from tests.services import fresh_postgres_database, redis_for_run

CLIP_SIZE_PX = (1280, 720)
CLIP_FPS = 30.0
TARGET_REALTIME_AT_1FPS = 30.0
_ENCODERS = ("avc1", "mp4v")  # H.264 first; opencv-python's wheels often lack an H.264 encoder


def write_clip(path: Path, seconds: float, seed: int) -> str:
    """A 720p clip with moving shapes and grain (like camera footage, not a still); returns its codec."""
    rng = np.random.default_rng(seed)
    width, height = CLIP_SIZE_PX
    for codec in _ENCODERS:
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*codec), CLIP_FPS, CLIP_SIZE_PX)
        if writer.isOpened():
            break
    else:
        raise SystemExit(f"OpenCV cannot encode video here (tried {', '.join(_ENCODERS)}): pass --clips DIR")
    background = cv2.resize(rng.integers(0, 256, (9, 16, 3), dtype=np.uint8), CLIP_SIZE_PX)
    try:
        for index in range(int(seconds * CLIP_FPS)):
            frame = np.roll(background, index * 4, axis=1)
            x = int((index * 9) % width)
            cv2.circle(frame, (x, height // 2), 80, (255, 255, 255), -1)
            grain = rng.integers(0, 12, (height, width, 1), dtype=np.uint8)
            writer.write(cv2.add(frame, np.repeat(grain, 3, axis=2)))
    finally:
        writer.release()
    return "h264" if codec == "avc1" else "mpeg4"


def clip_seconds(path: Path) -> float:
    cap = cv2.VideoCapture(str(path))
    try:
        return float(cap.get(cv2.CAP_PROP_FRAME_COUNT) / (cap.get(cv2.CAP_PROP_FPS) or CLIP_FPS))
    finally:
        cap.release()


def scan_seconds(env: dict[str, str], folder: Path, log: Path, fps: float) -> tuple[float, float]:
    """Wall seconds from the job's creation to its last verdict, and the worker's peak RSS (MB)."""
    with worker_process(env, log, ready_timeout_s=120) as worker, RssSampler(worker.pid) as rss:
        # scan's default chunk size: the clips are decoded side by side
        _, seconds = scan_job(env, folder, ["--fps", str(fps)], label=f"{fps:g} fps")
    return seconds, max(rss.samples_mb, default=0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=Path, help="a folder of video files to scan instead of generated clips")
    parser.add_argument("--count", type=int, default=4, help="generated clips")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each generated clip")
    parser.add_argument("--fps", type=float, nargs="+", default=[1.0, 4.0], help="sampling rates to measure")
    parser.add_argument("--threads", type=int, default=DEFAULT_FETCH_THREADS, help="the worker's fetch/decode threads")
    args = parser.parse_args()

    with (
        tempfile.TemporaryDirectory(prefix="deepscan-bench-") as tmp,
        fresh_postgres_database() as database_url,
        redis_for_run(Path(tmp)) as broker_url,
    ):
        work = Path(tmp)
        folder = args.clips or work / "clips"
        codec = "as given"
        if args.clips is None:
            folder.mkdir()
            codec = {write_clip(folder / f"clip_{i}.mp4", args.seconds, seed=i) for i in range(args.count)}.pop()
        clips = sorted(p for p in folder.iterdir() if p.is_file())
        video_s = sum(clip_seconds(p) for p in clips)
        migrate.upgrade(database_url)
        env = deepscan_env(
            DEEPSCAN_DATABASE_URL=database_url,
            DEEPSCAN_BROKER_URL=broker_url,
            DEEPSCAN_CHECKPOINT=str(write_checkpoint(work / "near-free.safetensors", "reduced")),
            DEEPSCAN_DEVICE="cpu",
            DEEPSCAN_HOME=str(work / "home"),
            DEEPSCAN_FETCH_THREADS=str(args.threads),
        )
        print(f"{cpu_model()}: {len(clips)} clips, {video_s:.0f} s of video ({codec}), one worker, near-free model")
        results: dict[str, Any] = {}
        for fps in args.fps:
            queue_env = {**env, "DEEPSCAN_QUEUE": f"bench-video-{uuid.uuid4().hex[:6]}"}
            wall_s, peak_mb = scan_seconds(queue_env, folder, work / f"worker-{fps}.log", fps)
            realtime = video_s / wall_s
            results[f"{fps:g}fps"] = {"wall_s": round(wall_s, 2), "x_realtime": round(realtime, 1),
                                      "worker_peak_rss_mb": round(peak_mb, 1)}  # fmt: skip
            print(f"  sampled at {fps:g} fps: {wall_s:6.1f} s wall, {realtime:6.1f} x real time per worker"
                  + (f" (target >= {TARGET_REALTIME_AT_1FPS:g})" if fps == 1.0 else ""))  # fmt: skip
    print(
        json.dumps({"cpu": cpu_model(), "clips": len(clips), "video_s": round(video_s, 1), "codec": codec, **results})
    )


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
