"""API tokens with roles, and the review console's sign-in sessions.

A token is a random secret printed once by `deepscan tokens create`; the database keeps only its
sha256 (a 256-bit random secret needs no slow hash: there is nothing to guess). Roles are ordered:
a viewer reads, a reviewer also labels items, an admin also submits and cancels scans and manages
schedules. A console session is a second random secret in an HttpOnly cookie, stored hashed beside
its CSRF secret; revoking the token ends its sessions.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from scanner.errors import ConfigError, DeepscanError
from scanner.models import TOKEN_ROLES, ApiToken, WebSession, utcnow

TOKEN_PREFIX = "dsk_"
DEFAULT_SESSION_LIFETIME_S = 12 * 3600
DEFAULT_LAST_USED_RESOLUTION_S = 60.0  # `last_used_at` is written at most this often per token
_ROLE_RANK = {role: rank for rank, role in enumerate(TOKEN_ROLES)}


class TokenNotFoundError(DeepscanError):
    """No token has this name."""


@dataclass(frozen=True)
class Identity:
    """Who is calling: the token's name (recorded as the reviewer) and its role."""

    token_id: int
    name: str
    role: str

    def may(self, role: str) -> bool:
        """Whether this identity holds `role` or a stronger one."""
        return _ROLE_RANK[self.role] >= _ROLE_RANK[role]


@dataclass(frozen=True)
class TokenInfo:
    """A token as `deepscan tokens list` shows it (never its secret, nor its hash)."""

    id: int
    name: str
    role: str
    created_at: dt.datetime
    last_used_at: dt.datetime | None
    revoked_at: dt.datetime | None

    @classmethod
    def of(cls, token: ApiToken) -> TokenInfo:
        return cls(token.id, token.name, token.role, token.created_at, token.last_used_at, token.revoked_at)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_token(session: Session, name: str, role: str) -> tuple[TokenInfo, str]:
    """Store a new token under `name`; returns it and its secret, which is shown this once only."""
    name = name.strip()
    if role not in TOKEN_ROLES:
        raise ConfigError(f"role must be one of {', '.join(TOKEN_ROLES)}")
    if not name or len(name) > 200:
        raise ConfigError("a token needs a name of 1 to 200 characters (it is recorded as the reviewer)")
    if session.scalars(select(ApiToken.id).where(ApiToken.name == name)).first() is not None:
        raise ConfigError(f"a token named {name!r} exists (revoked tokens keep their name): choose another name")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(name=name, role=role, token_hash=hash_secret(secret))
    session.add(token)
    session.flush()
    return TokenInfo.of(token), secret


def list_tokens(session: Session) -> list[TokenInfo]:
    return [TokenInfo.of(t) for t in session.scalars(select(ApiToken).order_by(ApiToken.name))]


def revoke_token(session: Session, name: str) -> TokenInfo:
    """Revoke the token called `name` and end its console sessions; revoking twice is harmless."""
    token = session.scalars(select(ApiToken).where(ApiToken.name == name)).first()
    if token is None:
        raise TokenNotFoundError(f"no token named {name!r}: `deepscan tokens list` shows them")
    if token.revoked_at is None:
        token.revoked_at = utcnow()
    session.execute(delete(WebSession).where(WebSession.token_id == token.id))
    session.flush()
    return TokenInfo.of(token)


def authenticate(session: Session, secret: str, *, now: dt.datetime | None = None) -> Identity | None:
    """The identity of a live token with this secret, or None (unknown, malformed or revoked)."""
    if not secret.startswith(TOKEN_PREFIX) or len(secret) > 200:
        return None
    row = session.execute(
        select(ApiToken.id, ApiToken.name, ApiToken.role, ApiToken.last_used_at).where(
            ApiToken.token_hash == hash_secret(secret), ApiToken.revoked_at.is_(None)
        )
    ).first()
    if row is None:
        return None
    _touch(session, row.id, row.last_used_at, now or utcnow())
    return Identity(row.id, row.name, row.role)


def _touch(session: Session, token_id: int, last_used: dt.datetime | None, now: dt.datetime) -> None:
    """Record use, at most once a minute: a write on every request would cost more than the request."""
    if last_used is None or (now - last_used).total_seconds() >= DEFAULT_LAST_USED_RESOLUTION_S:
        session.execute(update(ApiToken).where(ApiToken.id == token_id).values(last_used_at=now))


# --- console sessions ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ConsoleSession:
    """A signed-in console user and the CSRF secret every form of theirs must carry."""

    identity: Identity
    csrf_token: str


def start_session(
    session: Session, identity: Identity, *, lifetime_s: float = DEFAULT_SESSION_LIFETIME_S
) -> tuple[str, ConsoleSession]:
    """Open a console session for `identity`: returns the cookie value and the session."""
    cookie = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    now = utcnow()
    session.execute(delete(WebSession).where(WebSession.expires_at < now))  # sweep old ones as we go
    session.add(
        WebSession(
            token_id=identity.token_id,
            session_hash=hash_secret(cookie),
            csrf_token=csrf,
            expires_at=now + dt.timedelta(seconds=lifetime_s),
        )
    )
    session.flush()
    return cookie, ConsoleSession(identity, csrf)


def resume_session(session: Session, cookie: str) -> ConsoleSession | None:
    """The live session behind a cookie value (its token not revoked, not expired), or None."""
    if not cookie or len(cookie) > 200:
        return None
    row = session.execute(
        select(ApiToken.id, ApiToken.name, ApiToken.role, WebSession.csrf_token)
        .join(ApiToken, ApiToken.id == WebSession.token_id)
        .where(
            WebSession.session_hash == hash_secret(cookie),
            WebSession.expires_at > utcnow(),
            ApiToken.revoked_at.is_(None),
        )
    ).first()
    if row is None:
        return None
    return ConsoleSession(Identity(row.id, row.name, row.role), row.csrf_token)


def end_session(session: Session, cookie: str) -> None:
    session.execute(delete(WebSession).where(WebSession.session_hash == hash_secret(cookie)))


def csrf_matches(expected: str, given: str | None) -> bool:
    """Constant-time comparison of a form's CSRF field with the session's secret."""
    return given is not None and hmac.compare_digest(expected.encode(), given.encode())
