"""The ASGI application: `create_app(settings)`, and the factory uvicorn's workers call."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy import Engine

from deepscan.web import api, docs, health, openapi, pages, problems, rendering
from deepscan.web.auth import SignInRequiredError
from deepscan.web.middleware import HttpMetrics, WebMiddleware
from deepscan.web.state import WebState
from scanner import __version__
from scanner.db import make_engine
from scanner.redaction import install_log_redaction
from scanner.settings import Settings

STATIC_DIR = Path(__file__).parent / "static"
# Connections per process: uvicorn runs sync handlers in a pool of 40 threads.
DEFAULT_DB_POOL_SIZE = 20
DEFAULT_DB_MAX_OVERFLOW = 20

DESCRIPTION = """Submit scans and read verdicts. Authenticate with `Authorization: Bearer TOKEN`
(`deepscan tokens create NAME --role viewer|reviewer|admin`). Errors are RFC 9457 problem details
(`application/problem+json`). Every list is `{"items": [...], "next": CURSOR_OR_NULL}`; every time is
RFC 3339 in UTC (`2026-03-01T12:00:00Z`)."""


def web_engine(settings: Settings) -> Engine:
    if settings.database_url.startswith("sqlite"):
        return make_engine(settings.database_url)
    return make_engine(settings.database_url, pool_size=DEFAULT_DB_POOL_SIZE, max_overflow=DEFAULT_DB_MAX_OVERFLOW)


def create_app(settings: Settings, engine: Engine | None = None) -> FastAPI:
    """The API, the console, health and metrics over `settings`' database."""
    engine = engine if engine is not None else web_engine(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        engine.dispose()

    app = FastAPI(
        title="deepscan",
        version=__version__,
        description=DESCRIPTION,
        openapi_url="/api/v1/openapi.json",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    metrics = HttpMetrics()
    app.state.metrics = metrics
    app.state.web = WebState(settings=settings, engine=engine, templates=rendering.make_templates())
    app.add_middleware(WebMiddleware, metrics=metrics)
    problems.install(app)

    @app.exception_handler(SignInRequiredError)
    async def _sign_in(_request: Request, _exc: SignInRequiredError) -> Response:
        return RedirectResponse("/console/login", status_code=303)

    @app.get("/", include_in_schema=False)
    def home() -> Response:
        return RedirectResponse("/console/queue", status_code=303)

    for router in (health.router, api.router, pages.router, docs.router):
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    openapi.install(app)
    return app


def create_app_from_env() -> FastAPI:
    """The factory `deepscan serve` hands uvicorn (`--factory`): each worker process builds its own app."""
    install_log_redaction()
    logging.getLogger("uvicorn.error").info("deepscan web: starting")
    return create_app(Settings.from_env())
