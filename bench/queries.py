"""How fast the moderation queries answer on a PostgreSQL database of 1,000,000 scanned items.

Seeds a fresh database (built by the migrations) with INSERT ... SELECT generate_series: jobs of
10,000 items, 10 % videos (half of the finished ones with 30 frame rows each), 2 % errors, 1 %
still queued, scores rounded to 4 decimals (so ties are common), a few % of fakes reviewed. Then
VACUUM ANALYZE, and p50/p95 over repeated runs of the common queries, each through the same
`scanner.queries` function the CLI calls, in its own session as the CLI does. Finally the
EXPLAIN (ANALYZE, BUFFERS) of every statement those queries ran, so an index change can be
judged by its plan.

    .venv/bin/python bench/queries.py [--items 1000000] [--repeat 100] [--plans] [--try-index DDL ...]
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event, text
from sqlalchemy.orm import Session

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scanner import migrate, queries
from scanner.db import make_engine
from tests.services import fresh_postgres_database

TARGET_P95_MS = 50.0
ITEMS_PER_JOB = 10_000
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
SPAN = dt.timedelta(days=30)

SEED_JOBS = """
INSERT INTO scan_jobs (id, name, source_spec, options, status, threshold, model_version, created_at, started_at,
                       finished_at)
SELECT j, 'bench-' || j, '["s3://bench"]'::json, '{}'::json, 'done', 0.5,
       CASE WHEN j <= :jobs / 2 THEN repeat('a', 64) ELSE repeat('b', 64) END,
       :t0 + (j - 1) * :job_span, :t0 + (j - 1) * :job_span, :t0 + j * :job_span
FROM generate_series(1, :jobs) AS j
"""

SEED_ITEMS = """
INSERT INTO media_items (id, job_id, url, kind, status, error, size, score, verdict, strategy, model_version,
                         attempts, enqueued_at, started_at, finished_at, frames_scanned, duration_s)
SELECT g, (g - 1) / :per_job + 1,
       's3://bench/job' || ((g - 1) / :per_job + 1) || '/' || g || CASE WHEN g % 10 = 0 THEN '.mp4' ELSE '.jpg' END,
       CASE WHEN g % 10 = 0 THEN 'video' ELSE 'image' END,
       s.status,
       CASE WHEN s.status = 'error'
            THEN (ARRAY['http 404', 'not an image or video', 'video has no decodable frames',
                        'exceeds 50 MB limit'])[1 + g % 4] END,
       100000 + g % 5000000,
       CASE WHEN s.status = 'done' THEN s.score END,
       CASE WHEN s.status = 'done' THEN CASE WHEN s.score >= 0.5 THEN 'fake' ELSE 'real' END END,
       CASE WHEN g % 10 = 0 THEN 'topk_mean' ELSE 'max' END,
       CASE WHEN (g - 1) / :per_job + 1 <= :jobs / 2 THEN repeat('a', 64) ELSE repeat('b', 64) END,
       1,
       :t0 + g * :item_step - s.latency,
       CASE WHEN s.status <> 'queued' THEN :t0 + g * :item_step - s.latency / 2 END,
       CASE WHEN s.status <> 'queued' THEN :t0 + g * :item_step END,
       CASE WHEN g % 10 = 0 AND s.status = 'done' THEN 30 END,
       CASE WHEN g % 10 = 0 THEN 15.0 END
FROM generate_series(1, :items) AS g,
     LATERAL (SELECT CASE WHEN g % 100 < 97 THEN 'done' WHEN g % 100 < 99 THEN 'error' ELSE 'queued' END AS status,
                     round(power(random(), 3)::numeric, 4)::float8 AS score,
                     (1 + random() * 30) * interval '1 second' AS latency) AS s
"""

SEED_FRAMES = """
INSERT INTO frame_results (item_id, frame_index, timestamp_s, face_index, score)
SELECT m.id, f, f * 0.5, 0, least(1.0, greatest(0.0, m.score + (random() - 0.5) * 0.4))
FROM media_items AS m, generate_series(0, 29) AS f
WHERE m.kind = 'video' AND m.status = 'done' AND m.id % 20 = 0
"""

SEED_REVIEWS = """
INSERT INTO reviews (item_id, label, reviewer, note, created_at)
SELECT id, (ARRAY['fake', 'real', 'unsure'])[1 + id % 3], 'bench', NULL, finished_at + interval '1 hour'
FROM media_items
WHERE (verdict = 'fake' AND id % 7 = 0) OR (verdict = 'real' AND id % 101 = 0)
"""

# Jobs unlike the average: a small recent one (a scheduled incremental rescan: 20 items, 5 fakes)
# and a clean bucket (10,000 items, 3 fakes), where the planner's average-job estimates mislead.
SEED_SMALL_JOB = """
INSERT INTO scan_jobs (id, name, source_spec, options, status, threshold, created_at)
VALUES (:job, 'bench-small', '["s3://bench/new"]'::json, '{}'::json, 'done', 0.5, :t1);
INSERT INTO media_items (id, job_id, url, kind, status, score, verdict, attempts, enqueued_at, finished_at)
SELECT :items + i, :job, 's3://bench/new/' || i || '.jpg', 'image', 'done',
       CASE WHEN i <= 5 THEN 0.9 ELSE 0.1 END, CASE WHEN i <= 5 THEN 'fake' ELSE 'real' END, 1, :t1, :t1
FROM generate_series(1, 20) AS i;
INSERT INTO scan_jobs (id, name, source_spec, options, status, threshold, created_at)
VALUES (:job + 1, 'bench-clean', '["s3://bench/clean"]'::json, '{}'::json, 'done', 0.5, :t1);
INSERT INTO media_items (id, job_id, url, kind, status, score, verdict, attempts, enqueued_at, finished_at)
SELECT :items + 100 + i, :job + 1, 's3://bench/clean/' || i || '.jpg', 'image', 'done',
       CASE WHEN i <= 3 THEN 0.9 ELSE 0.01 END, CASE WHEN i <= 3 THEN 'fake' ELSE 'real' END, 1, :t1, :t1
FROM generate_series(1, :per_job) AS i
"""

RESET_SEQUENCES = [
    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))"
    for table in ("scan_jobs", "media_items", "frame_results", "reviews")
]


def seed(engine: Engine, items: int) -> None:
    jobs = max(items // ITEMS_PER_JOB, 1)
    params = {
        "jobs": jobs,
        "per_job": ITEMS_PER_JOB,
        "items": items,
        "t0": T0,
        "job_span": SPAN / jobs,
        "item_step": SPAN / items,
    }
    with engine.begin() as conn:
        conn.execute(text("SET LOCAL synchronous_commit = off"))
        for name, sql in (("jobs", SEED_JOBS), ("items", SEED_ITEMS), ("frames", SEED_FRAMES)):
            started = time.perf_counter()
            count = conn.execute(text(sql), params).rowcount
            print(f"  seeded {count:>9,} {name:<7} in {time.perf_counter() - started:5.1f} s", flush=True)
        count = conn.execute(text(SEED_REVIEWS)).rowcount
        print(f"  seeded {count:>9,} reviews", flush=True)
        for sql in SEED_SMALL_JOB.split(";"):
            conn.execute(text(sql), {"job": jobs + 1, "items": items, "t1": T0 + SPAN, "per_job": ITEMS_PER_JOB})
        for sql in RESET_SEQUENCES:
            conn.execute(text(sql))
    started = time.perf_counter()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
    print(f"  VACUUM ANALYZE in {time.perf_counter() - started:.1f} s", flush=True)


def deep_cursor(engine: Engine, flt: queries.ResultFilter, position: int) -> str:
    """The cursor a user holds after paging `position` rows into `flt` (found once, with OFFSET)."""
    column = "score" if flt.order == "score" else "finished_at"
    where = "verdict = :verdict" if flt.verdict else "TRUE"
    sql = f"""SELECT {column}, id FROM media_items WHERE {where} AND {column} IS NOT NULL
              ORDER BY {column} DESC, id DESC OFFSET :position LIMIT 1"""
    with engine.connect() as conn:
        key, item_id = conn.execute(text(sql), {"verdict": flt.verdict, "position": position - 1}).one()
    if isinstance(key, dt.datetime):
        key = key.astimezone(dt.UTC)
    return queries.encode_cursor(flt, key, item_id)


def scenarios(engine: Engine, items: int) -> dict[str, Callable[[Session, random.Random], object]]:
    jobs = max(items // ITEMS_PER_JOB, 1)
    last_week = T0 + SPAN - dt.timedelta(days=7)
    with engine.connect() as conn:
        videos = conn.execute(text("SELECT DISTINCT item_id FROM frame_results LIMIT 2000")).scalars().all()
        urls = conn.execute(text("SELECT url FROM media_items WHERE id % 997 = 0 LIMIT 2000")).scalars().all()
    deep_fakes = queries.ResultFilter(verdict="fake", order="score")
    deep_fakes = queries.ResultFilter(verdict="fake", order="score", after=deep_cursor(engine, deep_fakes, items // 10))
    deep_time = queries.ResultFilter(order="time")
    deep_time = queries.ResultFilter(order="time", after=deep_cursor(engine, deep_time, items // 2))
    return {
        "top flagged in a job (results --job J --verdict fake)": lambda s, r: queries.list_results(
            s, queries.ResultFilter(job_id=r.randint(1, jobs), verdict="fake")
        ),
        "top flagged in a small job of 20 items": lambda s, r: queries.list_results(
            s, queries.ResultFilter(job_id=jobs + 1, verdict="fake")
        ),
        "top flagged in a clean job (10,000 items, 3 fakes)": lambda s, r: queries.list_results(
            s, queries.ResultFilter(job_id=jobs + 2, verdict="fake")
        ),
        "unreviewed fakes since 7 days, by score": lambda s, r: queries.list_results(
            s, queries.ResultFilter(verdict="fake", reviewed=False, since=last_week)
        ),
        "unreviewed fakes since 1 hour, by score": lambda s, r: queries.list_results(
            s, queries.ResultFilter(verdict="fake", reviewed=False, since=T0 + SPAN - dt.timedelta(hours=1))
        ),
        "unreviewed fakes since 7 days, by time": lambda s, r: queries.list_results(
            s, queries.ResultFilter(verdict="fake", reviewed=False, since=last_week, order="time")
        ),
        f"page after {items // 10:,} fakes (results --verdict fake --after)": lambda s, r: queries.list_results(
            s, deep_fakes
        ),
        f"page after {items // 2:,} items (results --order time --after)": lambda s, r: queries.list_results(
            s, deep_time
        ),
        "one video's timeline (show ID)": lambda s, r: queries.item_timeline(s, r.choice(videos)),
        "find an item by URL (show URL)": lambda s, r: queries.find_item(s, r.choice(urls)),
        "job summary (jobs show ID)": lambda s, r: queries.job_summary(s, r.randint(1, jobs)),
    }


@contextmanager
def captured_statements(engine: Engine) -> Iterator[list[tuple[str, Any]]]:
    statements: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        statements.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", capture)


def measure(engine: Engine, run: Callable[[Session, random.Random], object], repeat: int) -> list[float]:
    rng = random.Random(7)
    timings_ms = []
    for i in range(repeat + 5):
        started = time.perf_counter()
        with Session(engine) as session, session.begin():
            run(session, rng)
        if i >= 5:  # the first runs warm the caches and the prepared statements
            timings_ms.append((time.perf_counter() - started) * 1000)
    return timings_ms


def explain(engine: Engine, run: Callable[[Session, random.Random], object]) -> list[str]:
    with captured_statements(engine) as statements, Session(engine) as session, session.begin():
        run(session, random.Random(7))
    plans = []
    with engine.connect() as conn:
        for statement, parameters in statements:
            raw = conn.connection.cursor()
            raw.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters)
            plans.append("\n".join(row[0] for row in raw.fetchall()))
            raw.close()
    return plans


def run_all(engine: Engine, items: int, repeat: int) -> dict[str, tuple[float, float]]:
    """p50 and p95 in ms of every scenario, printed as they come."""
    results = {}
    for name, run in scenarios(engine, items).items():
        timings = measure(engine, run, repeat)
        results[name] = (statistics.median(timings), statistics.quantiles(timings, n=20)[18])
        print(f"  {name:<62} {results[name][0]:8.2f} {results[name][1]:8.2f}", flush=True)
    return results


def report_target(results: dict[str, tuple[float, float]]) -> list[str]:
    """Print whether every p95 met the target; return the queries that missed it."""
    slow = [name for name, (_, p95) in results.items() if p95 > TARGET_P95_MS]
    print(f"  target p95 <= {TARGET_P95_MS:.0f} ms: " + ("met" if not slow else "MISSED by " + "; ".join(slow)))
    return slow


def print_plans(engine: Engine, items: int, *, full: bool) -> None:
    for name, run in scenarios(engine, items).items():
        print(f"\n## {name}")
        for plan in explain(engine, run):
            lines = plan.splitlines()
            if not full:
                keep = ("Index", "Seq Scan", "Rows Removed", "Execution Time")
                lines = [lines[0].strip(), *(ln.strip() for ln in lines[1:] if any(k in ln for k in keep))]
            print("\n".join("  " + ln for ln in lines))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=1_000_000, help="media items to seed")
    parser.add_argument("--repeat", type=int, default=100, help="timed runs per query")
    parser.add_argument("--plans", action="store_true", help="print every EXPLAIN (ANALYZE) plan in full")
    parser.add_argument(
        "--try-index",
        action="append",
        default=[],
        metavar="DDL",
        help="after the baseline, run this CREATE INDEX and measure again (repeatable): evidence for a migration",
    )
    args = parser.parse_args()

    with fresh_postgres_database() as url:
        migrate.upgrade(url)
        engine = make_engine(url)
        print(f"seeding {args.items:,} items into a fresh PostgreSQL database", flush=True)
        seed(engine, args.items)
        print(f"\n  {'query (schema as migrated)':<62} {'p50 ms':>8} {'p95 ms':>8}")
        slow = report_target(run_all(engine, args.items, args.repeat))
        print("\nplans (EXPLAIN (ANALYZE, BUFFERS) of each statement run):")
        print_plans(engine, args.items, full=args.plans)
        if args.try_index:
            with engine.begin() as conn:
                for ddl in args.try_index:
                    conn.execute(text(ddl))
                conn.execute(text("ANALYZE media_items"))
            print(f"\n  {'query (with ' + '; '.join(args.try_index) + ')':<62} {'p50 ms':>8} {'p95 ms':>8}")
            slow = report_target(run_all(engine, args.items, args.repeat))
            print_plans(engine, args.items, full=args.plans)
        engine.dispose()
    return 1 if slow else 0


if __name__ == "__main__":
    sys.exit(main())
