"""How fast `deepscan serve` answers the console's queue, the items list and item detail, with 20
concurrent clients, over a PostgreSQL database of 1,000,000 scanned items.

Seeds a fresh database exactly as bench/queries.py does (same shape: jobs of 10,000 items, videos with
frame rows, errors, reviews, score ties), adds thumbnails for one item in 100, starts a real
`deepscan serve` (uvicorn) process on loopback, signs a console session in, and then sends each
scenario's requests from `--clients` threads at once, as fast as answers come. Latency is measured by
the client, per request, end to end (HTTP, auth, query, rendering). p50/p95 against the target.

    .venv/bin/python bench/api.py [--items 1000000] [--requests 2000] [--clients 20] [--workers 1]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import requests
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.queries import seed
from scanner import migrate, tokens
from scanner.db import make_engine
from scanner.thumbnails import encode_thumbnail
from tests.services import fresh_postgres_database

TARGET_P95_MS = 50.0
DEFAULT_WARMUP_REQUESTS = 100
DEFAULT_READY_TIMEOUT_S = 120.0
DEFAULT_REQUEST_TIMEOUT_S = 60.0
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')

SEED_THUMBNAILS = """
INSERT INTO thumbnails (item_id, position, frame_index, timestamp_s, score, width, height, jpeg, created_at)
SELECT id, 0, 0, 0.0, coalesce(score, 0), 160, 120, :jpeg, now()
FROM media_items WHERE status = 'done' AND id % 100 = 0
"""


def seed_thumbnails(engine: Engine) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    jpeg = encode_thumbnail(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8))
    with engine.begin() as conn:
        count = conn.execute(text(SEED_THUMBNAILS), {"jpeg": jpeg}).rowcount
    print(f"  seeded {count:>9,} thumbnails of {len(jpeg):,} bytes", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def server(database_url: str, workers: int, log: Path) -> Iterator[str]:
    """`deepscan serve` in its own process group; yields its base URL once /healthz answers."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEEPSCAN_")}
    env |= {"DEEPSCAN_DATABASE_URL": database_url, "PYTHONUNBUFFERED": "1"}
    args = ["serve", "--port", str(port), "--workers", str(workers), "--log-level", "warning"]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "deepscan", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + DEFAULT_READY_TIMEOUT_S
        while True:
            try:
                if requests.get(f"{base}/healthz", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"deepscan serve did not start:\n{log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.2)
        yield base
    finally:
        with contextlib.suppress(ProcessLookupError):  # it may have exited on its own (a failed start)
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def console_cookie(base: str, secret: str) -> dict[str, str]:
    """Sign in to the console as a browser does; the session cookie to send with queue requests."""
    browser = requests.Session()
    page = browser.get(f"{base}/console/login", timeout=DEFAULT_REQUEST_TIMEOUT_S)
    csrf = _CSRF.search(page.text)
    assert csrf is not None
    browser.post(
        f"{base}/console/login", data={"token": secret, "csrf": csrf.group(1)}, timeout=DEFAULT_REQUEST_TIMEOUT_S
    )
    return {"deepscan_session": browser.cookies["deepscan_session"]}


Scenario = Callable[[random.Random], tuple[str, dict[str, str], dict[str, str]]]  # url, headers, cookies


def scenarios(base: str, engine: Engine, secret: str, cookie: dict[str, str]) -> dict[str, Scenario]:
    bearer = {"Authorization": f"Bearer {secret}"}
    with engine.connect() as conn:
        ids = conn.execute(text("SELECT id FROM media_items WHERE id % 97 = 0 LIMIT 5000")).scalars().all()
        jobs = conn.execute(text("SELECT max(id) FROM scan_jobs")).scalar_one()
    return {
        "console queue (flagged, unreviewed; HTML page)": lambda r: (f"{base}/console/queue", {}, cookie),
        "console queue of one job": lambda r: (f"{base}/console/queue?job={r.randint(1, jobs)}", {}, cookie),
        "GET /api/v1/items?verdict=fake (50 rows)": lambda r: (f"{base}/api/v1/items?verdict=fake", bearer, {}),
        "GET /api/v1/items?job=J&verdict=fake": lambda r: (
            f"{base}/api/v1/items?job={r.randint(1, jobs)}&verdict=fake",
            bearer,
            {},
        ),
        "GET /api/v1/items/{id} (detail, frames, ranges)": lambda r: (
            f"{base}/api/v1/items/{r.choice(ids)}",
            bearer,
            {},
        ),
        "console item page": lambda r: (f"{base}/console/items/{r.choice(ids)}", {}, cookie),
    }


def run(scenario: Scenario, *, requests_total: int, clients: int) -> tuple[list[float], float]:
    """Latencies (ms) of `requests_total` requests sent by `clients` threads, and the wall time."""
    local = threading.local()
    seeds = iter(range(10**9))
    lock = threading.Lock()

    def one(_: int) -> float:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
            with lock:
                local.rng = random.Random(next(seeds))
        url, headers, cookies = scenario(local.rng)
        started = time.perf_counter()
        response = session.get(url, headers=headers, cookies=cookies, timeout=DEFAULT_REQUEST_TIMEOUT_S)
        elapsed = (time.perf_counter() - started) * 1000
        if response.status_code != 200:
            raise SystemExit(f"{url}: {response.status_code} {response.text[:300]}")
        return elapsed

    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(one, range(min(DEFAULT_WARMUP_REQUESTS, requests_total))))
        started = time.perf_counter()
        timings = list(pool.map(one, range(requests_total)))
    return timings, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=1_000_000, help="media items to seed")
    parser.add_argument("--requests", type=int, default=2000, help="timed requests per scenario")
    parser.add_argument("--clients", type=int, default=20, help="concurrent clients")
    parser.add_argument("--workers", type=int, default=1, help="`deepscan serve --workers`")
    args = parser.parse_args()

    with fresh_postgres_database() as url:
        migrate.upgrade(url)
        engine = make_engine(url)
        print(f"seeding {args.items:,} items into a fresh PostgreSQL database", flush=True)
        seed(engine, args.items)
        seed_thumbnails(engine)
        with Session(engine) as session, session.begin():
            _, secret = tokens.create_token(session, "bench", "reviewer")
        log = Path(os.environ.get("TMPDIR", "/tmp")) / "deepscan-bench-api-serve.log"
        with server(url, args.workers, log) as base:
            cookie = console_cookie(base, secret)
            print(
                f"\n  {args.clients} clients, {args.requests} requests each, serve --workers {args.workers}"
                f"\n  {'scenario':<50} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'req/s':>8}"
            )
            slow = []
            for name, scenario in scenarios(base, engine, secret, cookie).items():
                timings, wall = run(scenario, requests_total=args.requests, clients=args.clients)
                p50, p95 = statistics.median(timings), statistics.quantiles(timings, n=20)[18]
                print(f"  {name:<50} {p50:8.1f} {p95:8.1f} {max(timings):8.1f} {len(timings) / wall:8.0f}", flush=True)
                if p95 > TARGET_P95_MS:
                    slow.append(name)
            print(f"  target p95 <= {TARGET_P95_MS:.0f} ms: " + ("met" if not slow else "MISSED by " + "; ".join(slow)))
        engine.dispose()
    return 1 if slow else 0


if __name__ == "__main__":
    sys.exit(main())
