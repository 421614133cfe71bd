"""Errors as RFC 9457 problem details: one-line messages, never tracebacks.

API clients get `application/problem+json`; console pages get the same facts as a small HTML page.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import DataError, DBAPIError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from deepscan.web.rendering import render_error
from scanner.errors import ConfigError, ConflictError, DatabaseUnavailableError, InvalidInputError, NotFoundError
from scanner.queries import InvalidCursorError
from scanner.redaction import redact_text
from scanner.tokens import TokenNotFoundError

log = logging.getLogger(__name__)

PROBLEM_TYPE = "about:blank"  # RFC 9457: the title is the HTTP status phrase


class ProblemError(Exception):
    """Raised by the app's own code: answered as a problem with this status and one-line detail."""

    def __init__(
        self, status: int, detail: str, *, headers: dict[str, str] | None = None, extra: dict[str, Any] | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra or {}  # RFC 9457 extension members


def one_line(text: str) -> str:
    lines = str(text).strip().splitlines()
    return redact_text(lines[0]) if lines else ""


def problem_body(status: int, detail: str, instance: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": PROBLEM_TYPE,
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": one_line(detail),
        "instance": instance,
        **extra,
    }


def problem_response(
    request: Request, status: int, detail: str, headers: dict[str, str] | None = None, **extra: Any
) -> Response:
    if request.url.path.startswith("/console"):
        return render_error(request, status, one_line(detail), headers=headers)
    body = problem_body(status, detail, request.url.path, **extra)
    return JSONResponse(body, status_code=status, media_type="application/problem+json", headers=headers)


def _validation_detail(exc: RequestValidationError) -> tuple[str, list[dict[str, Any]]]:
    errors = [
        {"location": ".".join(str(p) for p in err.get("loc", ())), "message": str(err.get("msg", ""))}
        for err in exc.errors()
    ]
    first = errors[0] if errors else {"location": "request", "message": "invalid"}
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{first['location']}: {first['message']}{more}", errors


def install(app: FastAPI) -> None:
    """Answer every error the app can meet as a problem."""

    @app.exception_handler(ProblemError)
    async def _problem(request: Request, exc: ProblemError) -> Response:
        return problem_response(request, exc.status, exc.detail, exc.headers, **exc.extra)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        return problem_response(request, exc.status_code, str(exc.detail), dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        detail, errors = _validation_detail(exc)
        return problem_response(request, 422, detail, errors=errors)

    @app.exception_handler(NotFoundError)
    @app.exception_handler(TokenNotFoundError)
    async def _not_found(request: Request, exc: Exception) -> Response:
        return problem_response(request, 404, str(exc))

    @app.exception_handler(InvalidCursorError)
    async def _bad_cursor(request: Request, exc: InvalidCursorError) -> Response:
        return problem_response(request, 400, f"after: {exc}")

    @app.exception_handler(ConflictError)
    async def _conflict(request: Request, exc: ConflictError) -> Response:
        return problem_response(request, 409, str(exc))

    @app.exception_handler(InvalidInputError)
    async def _invalid_input(request: Request, exc: InvalidInputError) -> Response:
        return problem_response(request, 422, str(exc))  # the words the CLI prints for the same mistake

    @app.exception_handler(ConfigError)
    async def _config(request: Request, exc: ConfigError) -> Response:
        return problem_response(request, 400, str(exc))

    @app.exception_handler(DatabaseUnavailableError)
    @app.exception_handler(OperationalError)
    async def _database_down(request: Request, exc: Exception) -> Response:
        log.warning("database unavailable: %s", one_line(str(exc)))
        return problem_response(request, 503, "the database is unavailable; try again shortly")

    @app.exception_handler(DataError)
    @app.exception_handler(OverflowError)
    async def _out_of_range(request: Request, exc: Exception) -> Response:
        # Every value a request reaches the database with came from the client: an id past bigint, a NUL
        # byte PostgreSQL text cannot hold, a date whose UTC instant is past year 9999 (OverflowError,
        # also what SQLite raises for an integer over 64 bits). The client's mistake, so a 4xx.
        reason = one_line(str(exc.orig if isinstance(exc, DataError) else exc)) or type(exc).__name__
        return problem_response(request, 422, f"a value in the request is out of range or not allowed: {reason}")

    @app.exception_handler(DBAPIError)
    async def _database_refused(request: Request, exc: DBAPIError) -> Response:
        log.error("database refused the request: %s", one_line(str(exc.orig)))
        return problem_response(request, 500, "the database refused the request; see the server log")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return problem_response(request, 500, f"internal error ({type(exc).__name__}); see the server log")
