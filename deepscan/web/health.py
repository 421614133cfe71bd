"""Liveness, readiness and metrics: what a load balancer, compose and Prometheus ask."""

from __future__ import annotations

from functools import cache
from typing import Any

from alembic.runtime.migration import MigrationContext
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.exc import DBAPIError

from deepscan.web import schemas
from deepscan.web.problems import problem_body
from deepscan.web.state import state_of
from scanner import migrate
from scanner.db import unavailable_message
from scanner.redaction import redact_text

router = APIRouter(tags=["operations"])
DEFAULT_BROKER_TIMEOUT_S = 3.0


@cache
def _head() -> str:
    return migrate.head_revision()


@router.get("/healthz", response_model=schemas.Liveness, summary="Liveness: the process answers (no token)")
def healthz() -> schemas.Liveness:
    """The process is up and answering; it checks nothing else."""
    return schemas.Liveness(status="ok")


def _broker_problem(url: str) -> str | None:
    import kombu.connection

    connection: Any = kombu.connection.Connection  # untyped
    try:
        with connection(url, connect_timeout=DEFAULT_BROKER_TIMEOUT_S) as conn:
            conn.ensure_connection(max_retries=1, timeout=DEFAULT_BROKER_TIMEOUT_S)
    except Exception as exc:  # kombu raises many kinds; any of them means not ready
        return f"cannot reach the broker: {redact_text(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)}"
    return None


@router.get(
    "/readyz",
    response_model=schemas.Readiness,
    responses={503: {"model": schemas.Problem, "description": "Not ready: `detail` says why, `checks` what was found"}},
    summary="Readiness: database, migrations and broker (no token)",
)
def readyz(request: Request) -> Response:
    """Ready: the database answers, its schema is at the newest migration, the broker (if any) answers."""
    state = state_of(request)
    checks: dict[str, str] = {}
    problem = None
    try:
        with state.engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
        checks["database"] = "ok"
        checks["migrations"] = current or "none"
        if current != _head():
            problem = (
                f"the database is at revision {current or 'base (empty)'}, not {_head()}: run `deepscan db upgrade`"
            )
    except DBAPIError as exc:
        problem = unavailable_message(state.engine, exc)
        checks["database"] = "unreachable"
    if state.settings.broker_url is None:
        checks["broker"] = "not configured (embedded mode: scans cannot be submitted)"
    elif problem is None:
        problem = _broker_problem(state.settings.broker_url)
        checks["broker"] = "unreachable" if problem else "ok"
    if problem is not None:
        body = problem_body(503, problem, "/readyz", checks=checks)
        return JSONResponse(body, status_code=503, media_type="application/problem+json")
    return JSONResponse({"status": "ready", **checks})


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}}}},
    summary="Prometheus metrics of this process (no token)",
)
def metrics(request: Request) -> Response:
    """Prometheus text format: requests by route and status, and latency."""
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
