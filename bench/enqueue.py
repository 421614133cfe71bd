"""Producer throughput at bucket scale: record and enqueue N URLs, reporting URLs/s per step.

It runs what `deepscan scan --from-file URLS` runs in distributed mode (the URL list expanded by
the producer, items recorded in PostgreSQL, chunks published to Redis through the scan backend's
sender), without the progress bar and without workers: the queue is deleted afterwards. A
producer whose cost per batch grows with the job shows it here as falling rates; the target is
>= 20,000 URLs/s, flat from the first step to the last (last/first close to 1).

Needs the local PostgreSQL and Redis (`make services`); uses a fresh database.

    .venv/bin/python bench/enqueue.py [--urls 1000000] [--step 100000] [--chunk-size 16]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy.orm import Session

from scanner import migrate
from scanner.db import make_engine
from scanner.jobs import EnqueueReport, ScanOptions, add_items, create_job
from scanner.producer import iter_refs
from scanner.settings import Settings
from tests.services import fresh_postgres_database, redis_for_run


def cpu_model() -> str:
    """The CPU's model name and the cores this process may use (benchmarks print it beside their figures)."""
    try:
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]  # fmt: skip
    except OSError:
        names = []
    return f"{names[0] if names else platform.processor() or 'unknown CPU'} x {len(os.sched_getaffinity(0))} cores"


def write_url_list(path: Path, count: int) -> Path:
    with path.open("w") as fh:
        for index in range(count):
            fh.write(f"https://media.example.com/bucket/{index // 1000:06d}/{index:09d}.jpg\n")
    return path


class StepTimer:
    """URLs/s over each `step` items recorded, from the progress reports of `add_items`."""

    def __init__(self, step: int) -> None:
        self.step = step
        self.rates: list[float] = []
        self._mark = (time.perf_counter(), 0)

    def __call__(self, report: EnqueueReport) -> None:
        started, done = self._mark
        if report.total - done >= self.step:
            now = time.perf_counter()
            self.rates.append((report.total - done) / (now - started))
            self._mark = (now, report.total)
            print(f"  {report.total:>10,} URLs   {self.rates[-1]:>9,.0f} URLs/s over the last {report.total - done:,}")


def run(database_url: str, broker_url: str, urls: Path, *, step: int, chunk_size: int) -> dict[str, Any]:
    from workers.backend import scan_backend

    migrate.upgrade(database_url)
    queue = f"bench-enqueue-{uuid.uuid4().hex[:8]}"
    settings = Settings(home=urls.parent / "home", database_url=database_url, broker_url=broker_url, queue=queue)
    engine = make_engine(database_url)
    options = ScanOptions(chunk_size=chunk_size, faces=False)
    backend = scan_backend(settings, engine)
    try:
        started = time.perf_counter()
        with Session(engine) as session, session.begin():
            job_id = create_job(session, name="bench enqueue", sources=[f"@{urls}"], options=options).id
        timer = StepTimer(step)
        refs = iter_refs([f"@{urls}"], settings, options, io.StringIO())
        report = add_items(engine, job_id, refs, enqueue=backend.enqueue, on_progress=timer)
        elapsed = time.perf_counter() - started
        messages = _queue_length(broker_url, queue)
    finally:
        _delete_queue(broker_url, queue)
        engine.dispose()
    rates = [round(r) for r in timer.rates]
    return {"urls": report.total, "enqueued": report.enqueued, "messages": messages, "elapsed_s": round(elapsed, 2),
            "urls_per_s": round(report.total / elapsed), "step": step, "per_step_urls_per_s": rates,
            "last_over_first": round(rates[-1] / rates[0], 2) if rates else None}  # fmt: skip


def _queue_length(broker_url: str, queue: str) -> int:
    import redis

    client = redis.Redis.from_url(broker_url)
    return int(client.llen(queue))


def _delete_queue(broker_url: str, queue: str) -> None:
    import redis

    redis.Redis.from_url(broker_url).delete(queue)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--urls", type=int, default=1_000_000)
    parser.add_argument("--step", type=int, default=100_000, help="report URLs/s over every STEP URLs")
    parser.add_argument("--chunk-size", type=int, default=16, help="items per broker message (scan's default)")
    args = parser.parse_args()

    with (
        tempfile.TemporaryDirectory(prefix="deepscan-bench-") as tmp,
        fresh_postgres_database() as database_url,
        redis_for_run(Path(tmp)) as broker_url,
    ):
        urls = write_url_list(Path(tmp) / "urls.txt", args.urls)
        print(f"{cpu_model()}: recording and enqueueing {args.urls:,} URLs (PostgreSQL + Redis)")
        result = run(database_url, broker_url, urls, step=args.step, chunk_size=args.chunk_size)
    print(f"total {result['urls']:,} URLs in {result['elapsed_s']} s: {result['urls_per_s']:,} URLs/s "
          f"(target >= 20,000), last step / first step = {result['last_over_first']}")  # fmt: skip
    print(json.dumps({"cpu": cpu_model(), **result}))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
