"""Where the test suite finds PostgreSQL and Redis, and what it does when one is missing.

With CI=true a missing server fails the run; elsewhere the tests that need it skip with a
message naming the server and how to start it (`make services`).
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import pytest
from sqlalchemy import create_engine, text

DEFAULT_POSTGRES_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"


def postgres_admin_url() -> str:
    return os.environ.get("DEEPSCAN_TEST_POSTGRES_URL", DEFAULT_POSTGRES_ADMIN_URL)


def redis_url() -> str:
    return os.environ.get("DEEPSCAN_TEST_REDIS_URL", DEFAULT_REDIS_URL)


def reachable(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 0), timeout=2):
            return True
    except OSError:
        return False


def require(url: str, what: str) -> None:
    """Fail (CI) or skip (elsewhere) unless the server behind `url` accepts connections."""
    if reachable(url):
        return
    message = f"{what} is not reachable at {urlsplit(url).netloc}; start it with `make services`"
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """Create a uniquely named database on the local server, yield its URL, drop it afterwards."""
    admin_url = postgres_admin_url()
    require(admin_url, "PostgreSQL")
    name = f"deepscan_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
