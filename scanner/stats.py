"""Moderation statistics: items, fake rate, error rate by reason and latency, per day, job or model.

SQLite and PostgreSQL disagree on date and interval arithmetic, so the two expressions that need
it (`utc_day`, `seconds_between`) are SQL constructs compiled per dialect.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import ColumnElement, Float, SQLColumnExpression, String, case, func, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from scanner.models import MediaItem

StatsBy = Literal["day", "job", "model"]
STATS_BY: tuple[StatsBy, ...] = ("day", "job", "model")


class utc_day(FunctionElement[str]):  # noqa: N801 (SQL function constructs are lower case by convention)
    """The UTC calendar day of a timestamp as 'YYYY-MM-DD'."""

    type = String()
    inherit_cache = True


@compiles(utc_day, "postgresql")
def _utc_day_postgresql(element: utc_day, compiler: SQLCompiler, **kw: Any) -> str:
    return f"to_char(timezone('UTC', {compiler.process(element.clauses, **kw)}), 'YYYY-MM-DD')"


@compiles(utc_day, "sqlite")
def _utc_day_sqlite(element: utc_day, compiler: SQLCompiler, **kw: Any) -> str:
    # SQLite keeps UTC timestamps as 'YYYY-MM-DD HH:MM:SS.ffffff' text (see models.UTCDateTime).
    return f"substr({compiler.process(element.clauses, **kw)}, 1, 10)"


class seconds_between(FunctionElement[float]):  # noqa: N801 (SQL function constructs are lower case by convention)
    """seconds_between(start, end): end minus start in seconds, as a float."""

    type = Float()
    inherit_cache = True


@compiles(seconds_between, "postgresql")
def _seconds_between_postgresql(element: seconds_between, compiler: SQLCompiler, **kw: Any) -> str:
    start, end = (compiler.process(c, **kw) for c in element.clauses)
    return f"extract(epoch from ({end} - {start}))"


@compiles(seconds_between, "sqlite")
def _seconds_between_sqlite(element: seconds_between, compiler: SQLCompiler, **kw: Any) -> str:
    start, end = (compiler.process(c, **kw) for c in element.clauses)
    return f"((julianday({end}) - julianday({start})) * 86400.0)"


@dataclass(frozen=True)
class StatsRow:
    """Totals for one group: a UTC day (of finishing, else of enqueueing), a job, or a model version."""

    key: str
    items: int
    done: int
    errors: int
    fakes: int
    fake_rate: float | None
    error_rate: float | None
    mean_latency_s: float | None
    errors_by_reason: dict[str, int] = field(default_factory=dict)


def _stats_key(by: StatsBy) -> SQLColumnExpression[Any]:
    if by == "job":
        return MediaItem.job_id
    if by == "model":
        return MediaItem.model_version
    return utc_day(func.coalesce(MediaItem.finished_at, MediaItem.enqueued_at))


def stats(session: Session, job_id: int | None = None, by: StatsBy = "day") -> list[StatsRow]:
    """Items, fake rate (of verdicts), error rate (of finished items) by reason, and mean latency.

    Latency is `finished_at - enqueued_at` of finished items: what a user waits for a verdict.
    """
    if by not in STATS_BY:
        raise ValueError(f"by must be one of {', '.join(STATS_BY)}")
    key: ColumnElement[Any] = _stats_key(by).label("key")
    scope = [MediaItem.job_id == job_id] if job_id is not None else []

    def count_if(condition: ColumnElement[bool]) -> ColumnElement[int]:
        return func.sum(case((condition, 1), else_=0))

    latency = seconds_between(MediaItem.enqueued_at, MediaItem.finished_at)
    totals = (
        select(
            key,
            func.count(),
            count_if(MediaItem.status == "done"),
            count_if(MediaItem.status == "error"),
            count_if(MediaItem.verdict == "fake"),
            count_if(MediaItem.verdict.is_not(None)),
            func.avg(latency),
        )
        .where(*scope)
        .group_by(key)
        .order_by(key)
    )
    reasons = _errors_by_reason(session, key, scope)
    return [
        StatsRow(
            key=_key_text(k),
            items=n,
            done=done or 0,
            errors=errors or 0,
            fakes=fakes or 0,
            fake_rate=(fakes or 0) / verdicts if verdicts else None,
            error_rate=(errors or 0) / ((done or 0) + (errors or 0)) if (done or errors) else None,
            mean_latency_s=float(mean) if mean is not None else None,
            errors_by_reason=reasons.get(_key_text(k), {}),
        )
        for k, n, done, errors, fakes, verdicts, mean in session.execute(totals)
    ]


def _errors_by_reason(
    session: Session, key: ColumnElement[Any], scope: list[ColumnElement[bool]]
) -> dict[str, dict[str, int]]:
    reason = func.coalesce(MediaItem.error, "unknown")
    query = (
        select(key, reason, func.count())
        .where(MediaItem.status == "error", *scope)
        .group_by(key, reason)
        .order_by(key, func.count().desc(), reason)
    )
    grouped: dict[str, dict[str, int]] = {}
    for k, why, n in session.execute(query):
        grouped.setdefault(_key_text(k), {})[why] = n
    return grouped


def _key_text(key: object) -> str:
    return "-" if key is None else str(key)
