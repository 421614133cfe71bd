"""Who is calling: bearer tokens for the API, the session cookie (with CSRF) for the console.

No token: 401 with `WWW-Authenticate: Bearer`; a token whose role is too weak: 403. A token never
appears in a URL, a log line or a response.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from deepscan.web.problems import ProblemError
from deepscan.web.state import engine_of
from scanner import tokens
from scanner.tokens import ConsoleSession, Identity

SESSION_COOKIE = "deepscan_session"
LOGIN_CSRF_COOKIE = "deepscan_login_csrf"
CSRF_FIELD = "csrf"

_bearer = HTTPBearer(auto_error=False, description="An API token from `deepscan tokens create NAME --role ROLE`.")


def _unauthorized(detail: str) -> ProblemError:
    return ProblemError(401, detail, headers={"WWW-Authenticate": 'Bearer realm="deepscan"'})


def _forbidden(identity: Identity, role: str) -> ProblemError:
    return ProblemError(403, f"token {identity.name!r} has role {identity.role}; this needs {role} or above")


def bearer_identity(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Identity:
    """The identity behind `Authorization: Bearer …`, or 401."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise _unauthorized("send an API token as `Authorization: Bearer TOKEN` (`deepscan tokens create`)")
    with Session(engine_of(request)) as session, session.begin():
        identity = tokens.authenticate(session, credentials.credentials)
    if identity is None:
        raise _unauthorized("the API token is unknown or revoked")
    request.state.identity = identity
    return identity


def api_role(role: str) -> Callable[..., Awaitable[Identity]]:
    """A dependency that admits bearer tokens of `role` or above."""

    async def check(identity: Annotated[Identity, Depends(bearer_identity)]) -> Identity:  # no I/O: no thread hop
        if not identity.may(role):
            raise _forbidden(identity, role)
        return identity

    return check


Viewer = Annotated[Identity, Depends(api_role("viewer"))]
Reviewer = Annotated[Identity, Depends(api_role("reviewer"))]
Admin = Annotated[Identity, Depends(api_role("admin"))]


# --- console -------------------------------------------------------------------------------------


class SignInRequiredError(Exception):
    """The console page needs a signed-in session: answered with a redirect to the sign-in page."""


def console_session(request: Request) -> ConsoleSession:
    cookie = request.cookies.get(SESSION_COOKIE, "")
    if not cookie:
        raise SignInRequiredError()
    with Session(engine_of(request)) as session:
        found = tokens.resume_session(session, cookie)
    if found is None:
        raise SignInRequiredError()
    request.state.identity = found.identity
    return found


def console_role(role: str) -> Callable[..., Awaitable[ConsoleSession]]:
    async def check(found: Annotated[ConsoleSession, Depends(console_session)]) -> ConsoleSession:
        if not found.identity.may(role):
            raise _forbidden(found.identity, role)
        return found

    return check


ConsoleViewer = Annotated[ConsoleSession, Depends(console_role("viewer"))]
ConsoleReviewer = Annotated[ConsoleSession, Depends(console_role("reviewer"))]
ConsoleAdmin = Annotated[ConsoleSession, Depends(console_role("admin"))]


def same_origin(request: Request) -> bool:
    """False when the browser says the request comes from another origin (a cross-site form post)."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    parts = urlsplit(origin)
    return parts.netloc == request.headers.get("host", "") and parts.scheme == request.url.scheme


def check_csrf(request: Request, expected: str, given: str | None) -> None:
    """403 unless the form carries the session's CSRF secret and comes from this origin."""
    if not same_origin(request) or not tokens.csrf_matches(expected, given):
        raise ProblemError(403, "the form's CSRF check failed: reload the page and submit it again")
