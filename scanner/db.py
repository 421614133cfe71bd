"""Engines and sessions for the verdict database (SQLite embedded, PostgreSQL in production)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, InterfaceError, NoSuchModuleError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from scanner.errors import ConfigError, DatabaseUnavailableError
from scanner.redaction import redact_text, redact_url

DEFAULT_SQLITE_BUSY_TIMEOUT_MS = 30_000


def describe_url(url: str) -> str:
    """The URL with any password (and query string, which may hold one) hidden, safe to print and log."""
    try:
        return redact_url(make_url(url).render_as_string(hide_password=True))
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        return redact_url(url)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={DEFAULT_SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for `url`; SQLite files get their folder created, WAL and foreign keys on.

    Raises ConfigError when the URL cannot be parsed or names a driver that is not installed.
    """
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise ConfigError(
            f"invalid database URL {redact_url(url)!r}: expected e.g. sqlite:///path.db or postgresql+psycopg://host/db"
        ) from None
    try:
        if parsed.get_backend_name() == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                _make_parent(Path(parsed.database).expanduser())
            engine = create_engine(parsed, **kwargs)
            event.listen(engine, "connect", _sqlite_pragmas)
            return engine
        return create_engine(parsed, pool_pre_ping=True, **kwargs)
    except (NoSuchModuleError, ModuleNotFoundError) as exc:
        raise ConfigError(f"database URL {describe_url(url)} needs a driver that is not installed ({exc})") from None


def _make_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatabaseUnavailableError(f"cannot create the folder for SQLite database {path}: {exc.strerror}") from None


def check_connection(engine: Engine) -> None:
    """Open one connection, raising DatabaseUnavailableError with a one-line reason if that fails."""
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except DBAPIError as exc:
        raise DatabaseUnavailableError(unavailable_message(engine, exc)) from exc


def unavailable_message(engine: Engine, exc: BaseException) -> str:
    """One line that names the database and the first line of the driver's complaint."""
    return f"cannot reach database {_shown(engine)}: {_first_line(exc)}"


def database_error_message(engine: Engine | None, exc: DBAPIError) -> str:
    """One line for a failed database call: "cannot reach" only when the connection is the problem.

    A value the database refuses (too long for its column, a broken constraint) is a different
    failure with a different fix, and saying "cannot reach database" would send the operator
    chasing the network.
    """
    if isinstance(exc, (OperationalError, InterfaceError)) or exc.connection_invalidated:
        return unavailable_message(engine, exc) if engine is not None else _first_line(exc)
    where = f"database {_shown(engine)}" if engine is not None else "the database"
    return f"{where} refused the request: {_first_line(exc)}"


def _shown(engine: Engine) -> str:
    return redact_url(engine.url.render_as_string(hide_password=True))


def _first_line(exc: BaseException) -> str:
    """The first line of the driver's complaint (later lines may quote the values), redacted."""
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return redact_text(reason[0]) if reason else type(exc).__name__


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded objects usable after commit (the CLI prints them afterwards)."""
    return sessionmaker(engine, expire_on_commit=False)
