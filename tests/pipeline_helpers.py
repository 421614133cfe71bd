"""Shared pieces of the end-to-end scan tests: a tiny checkpoint, item lookups, a worker process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from scanner.checkpoint import CheckpointMeta, save_checkpoint
from scanner.db import make_engine
from scanner.detector import Preprocessing, build_model
from scanner.faces import FaceView
from scanner.models import FrameResult, MediaItem, ScanJob

TINY_IMAGE_SIZE_PX = 64


def write_tiny_checkpoint(
    path: Path, *, seed: int = 0, threshold: float = 0.5, face_view: FaceView | None = None
) -> Path:
    """A resnet18 checkpoint with seeded random weights at 64 px: fast on a CPU, deterministic
    (whole images unless given a face view)."""
    torch.manual_seed(seed)
    model = build_model("resnet18", pretrained="none")
    meta = CheckpointMeta(
        arch="resnet18",
        preprocessing=Preprocessing(image_size=TINY_IMAGE_SIZE_PX),
        threshold=threshold,
        target_fpr=0.01,
        metrics={"note": "random weights for tests"},
    )
    if face_view is not None:
        meta.face_view = face_view
    save_checkpoint(path, model, meta)
    return path


def items_of(url: str, job_id: int) -> list[MediaItem]:
    engine = make_engine(url)
    try:
        with Session(engine) as session:
            return list(session.scalars(select(MediaItem).where(MediaItem.job_id == job_id).order_by(MediaItem.url)))
    finally:
        engine.dispose()


def frames_of(url: str, item_id: int) -> list[FrameResult]:
    engine = make_engine(url)
    try:
        with Session(engine) as session:
            return list(
                session.scalars(
                    select(FrameResult).where(FrameResult.item_id == item_id).order_by(FrameResult.frame_index)
                )
            )
    finally:
        engine.dispose()


def latest_job(url: str) -> ScanJob:
    engine = make_engine(url)
    try:
        with Session(engine) as session:
            return session.scalars(select(ScanJob).order_by(ScanJob.id.desc()).limit(1)).one()
    finally:
        engine.dispose()


def deepscan_env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEEPSCAN_") or k.startswith("DEEPSCAN_TEST_")}
    env.update(values)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def cli_module(tree: Path | None = None) -> str:
    """The module `python -m` runs as the CLI of `tree` (this checkout by default): `deepscan`, or `scanner` in a
    benchmark's baseline checkout from before the command line left the core's package."""
    if tree is None or (tree / "deepscan" / "__main__.py").is_file():
        return "deepscan"
    return "scanner"


@contextmanager
def deepscan_process(
    args: list[str],
    env: dict[str, str],
    log_path: Path,
    *,
    ready_marker: bytes | None = None,
    ready_timeout_s: float = 60.0,
    cwd: Path | None = None,
    module: str | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """A real `python -m deepscan ARGS…` subprocess, logged to `log_path`; its process group is stopped afterwards.

    With `ready_marker`, yields only once the log shows it (failing with the log's tail otherwise).
    `cwd` runs the code of another checkout (a benchmark's baseline) instead of this one; `module`
    runs another entry point (tests/poisoned_worker.py) instead of the checkout's CLI.
    """
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", module or cli_module(cwd), *args],
            env=env,
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + ready_timeout_s
        while ready_marker is not None and ready_marker not in log_path.read_bytes():
            if proc.poll() is not None:
                raise AssertionError(f"{args[0]} exited early:\n{log_path.read_text(errors='replace')[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{args[0]} not ready:\n{log_path.read_text(errors='replace')[-3000:]}")
            time.sleep(0.2)
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@contextmanager
def worker_process(
    env: dict[str, str],
    log_path: Path,
    *,
    ready_timeout_s: float = 60.0,
    extra_args: Sequence[str] = (),
    cwd: Path | None = None,
    module: str | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """A real `deepscan worker` subprocess; yields once it is consuming."""
    args = ["worker", "--loglevel", "INFO", *extra_args]
    with deepscan_process(
        args, env, log_path, ready_marker=b"ready.", ready_timeout_s=ready_timeout_s, cwd=cwd, module=module
    ) as proc:
        yield proc


def frame_keys(engine: Engine, job_id: int) -> Counter[tuple[int, int, int | None]]:
    """How many frame rows each (item, frame, face) of a job has: exactly one each after any deliveries."""
    with Session(engine) as session:
        rows = session.execute(
            select(FrameResult.item_id, FrameResult.frame_index, FrameResult.face_index)
            .join(MediaItem, MediaItem.id == FrameResult.item_id)
            .where(MediaItem.job_id == job_id)
        ).all()
    return Counter((r.item_id, r.frame_index, r.face_index) for r in rows)


def job_count(url: str) -> int:
    """How many scan jobs the database at `url` holds (a refused command must create none)."""
    engine = make_engine(url)
    try:
        with Session(engine) as session:
            return int(session.scalar(select(func.count()).select_from(ScanJob)) or 0)
    finally:
        engine.dispose()
