"""Recording a job's items in bulk: one transaction and a few statements per batch, whatever the job's size.

Two things made the producer slow down as a job grew, and this module avoids both:

- Asking first which URLs the job already holds (`url IN (...)` per batch): on a table whose
  statistics lag behind a growing job, PostgreSQL answers it by reading every item of the job
  through the (job_id, ...) indexes, so each batch cost more than the last. Here the unique key
  (job_id, url) answers it inside the INSERT (`ON CONFLICT DO NOTHING`), in O(log n) per row.
- A multi-row `VALUES` list with a dozen placeholders per row: psycopg parses such a statement
  anew each time (it is too long for its cache). On PostgreSQL new items go in as one
  `INSERT ... SELECT FROM unnest(arrays)`: four array parameters, whatever the batch size.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, DateTime, String, Text, bindparam, column, func, literal, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from scanner import reuse
from scanner.models import Base, MediaItem, UTCDateTime, utcnow
from scanner.sources import MediaRef

ChunkItems = list[tuple[int, str]]


@dataclass(frozen=True)
class ReuseBasis:
    """What an earlier verdict must match to answer this job's items, and how to re-derive it."""

    model_version: str
    scoring_keys: dict[str, str]
    strategy: str
    threshold: float


def insert_items(
    session: Session, job_id: int, refs: Sequence[MediaRef], basis: ReuseBasis | None
) -> tuple[ChunkItems, int]:
    """Record `refs` (URLs the job holds already are skipped); returns the (id, url) to enqueue and the count reused."""
    fresh = list({ref.url: ref for ref in refs}.values())
    earlier: dict[str, reuse.Earlier] = {}
    if basis is not None:
        versions = {r.url: v for r in fresh if (v := reuse.object_version(r.etag, r.size, r.last_modified))}
        earlier = reuse.by_url(session, versions, basis.model_version, basis.scoring_keys)
    now = utcnow()
    queued = _insert_queued(session, job_id, [r for r in fresh if r.url not in earlier], now)
    reused = 0
    if earlier and basis is not None:
        reused = _insert_reused(session, job_id, [r for r in fresh if r.url in earlier], earlier, basis, now)
    return queued, reused


def _insert_queued(session: Session, job_id: int, refs: Sequence[MediaRef], now: dt.datetime) -> ChunkItems:
    if not refs:
        return []
    if session.get_bind().dialect.name == "postgresql":
        rows = session.connection().execute(_unnest_insert(), _unnest_params(job_id, refs, now)).all()
    else:
        statement = _insert_skipping_known(session).returning(MediaItem.id, MediaItem.url)
        rows = session.execute(statement, [_item_row(job_id, ref, now) for ref in refs]).all()
    return [(item_id, url) for item_id, url in rows]


def _insert_reused(
    session: Session,
    job_id: int,
    refs: Sequence[MediaRef],
    earlier: Mapping[str, reuse.Earlier],
    basis: ReuseBasis,
    now: dt.datetime,
) -> int:
    """Items answered by an earlier verdict: recorded `done`, with a copy of the earlier frame rows."""
    rows = [_item_row(job_id, ref, now) | _reused_values(earlier[ref.url], basis, now) for ref in refs]
    statement = _insert_skipping_known(session).returning(MediaItem.id, MediaItem.url)
    inserted = session.execute(statement, rows).all()
    reuse.copy_frames(session, [(row.id, earlier[row.url]) for row in inserted])
    return len(inserted)


def _insert_skipping_known(session: Session) -> postgresql.Insert | sqlite.Insert:
    """A multi-row INSERT that skips URLs the job already holds and returns only the rows it added."""
    keys = [MediaItem.job_id, MediaItem.url]
    if session.get_bind().dialect.name == "sqlite":
        return sqlite.insert(MediaItem).on_conflict_do_nothing(index_elements=keys)
    return postgresql.insert(MediaItem).on_conflict_do_nothing(index_elements=keys)


def _unnest_insert() -> Any:
    """PostgreSQL: INSERT ... SELECT FROM unnest(url[], size[], etag[], last_modified[]) ON CONFLICT DO NOTHING."""
    given = (
        func.unnest(
            bindparam("urls", type_=postgresql.ARRAY(Text)),
            bindparam("sizes", type_=postgresql.ARRAY(BigInteger)),
            bindparam("etags", type_=postgresql.ARRAY(String)),
            bindparam("modified", type_=postgresql.ARRAY(DateTime(timezone=True))),
        )
        .table_valued(column("url", Text), column("size"), column("etag"), column("last_modified"))
        .render_derived("given")
    )
    rows = select(
        bindparam("job_id", type_=BigInteger),
        given.c.url,
        given.c.size,
        given.c.etag,
        given.c.last_modified,
        literal("queued"),
        literal("unknown"),
        literal(0),
        bindparam("now", type_=UTCDateTime()),
    )
    columns = ["job_id", "url", "size", "etag", "last_modified", "status", "kind", "attempts", "enqueued_at"]
    return (
        postgresql.insert(Base.metadata.tables[MediaItem.__tablename__])
        .from_select(columns, rows)
        .on_conflict_do_nothing(index_elements=[MediaItem.job_id, MediaItem.url])
        .returning(MediaItem.id, MediaItem.url)
    )


def _unnest_params(job_id: int, refs: Sequence[MediaRef], now: dt.datetime) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "now": now,
        "urls": [r.url for r in refs],
        "sizes": [r.size for r in refs],
        "etags": [r.etag for r in refs],
        "modified": [_as_utc(r.last_modified) for r in refs],
    }


def _as_utc(when: dt.datetime | None) -> dt.datetime | None:
    """The column type's rule (UTCDateTime), which array parameters bypass: aware timestamps only, in UTC."""
    if when is not None and when.tzinfo is None:
        raise ValueError("naive datetime given: deepscan stores aware UTC timestamps only")
    return None if when is None else when.astimezone(dt.UTC)


def _item_row(job_id: int, ref: MediaRef, now: dt.datetime) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "url": ref.url,
        "size": ref.size,
        "etag": ref.etag,
        "last_modified": ref.last_modified,
        "status": "queued",
        "kind": "unknown",
        "attempts": 0,
        "enqueued_at": now,
    }


def _reused_values(earlier: reuse.Earlier, basis: ReuseBasis, now: dt.datetime) -> dict[str, Any]:
    return earlier.verdict_values(strategy=basis.strategy, threshold=basis.threshold) | {
        "status": "done",
        "model_version": basis.model_version,
        "scoring_key": basis.scoring_keys[earlier.kind],
        "started_at": now,
        "finished_at": now,
    }
