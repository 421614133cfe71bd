"""Fixtures shared by the whole suite: migrated databases on SQLite and PostgreSQL, Redis, a CLI runner."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, delete

from scanner import migrate
from scanner.db import make_engine
from scanner.models import Base
from tests import services
from tests.servers import TEST_AWS_ENV


@pytest.fixture(scope="session", autouse=True)
def _loopback_only_aws() -> Iterator[None]:
    """Test credentials and no instance-metadata lookups, for this process and every process it starts.

    Without credentials botocore walks its whole chain, which ends by asking 169.254.169.254; the
    socket guard (pytest-socket, pyproject's addopts) only watches this process, so worker and server
    subprocesses must not need to look. Set before any session fixture starts a subprocess.
    """
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {**TEST_AWS_ENV, "AWS_EC2_METADATA_DISABLED": "true"}.items():
            patch.setenv(name, value)
        patch.delenv("AWS_PROFILE", raising=False)
        yield


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test touches the user's real ~/.local/share/deepscan or ~/.cache/deepscan (face detections),
    or inherits their DEEPSCAN_* settings."""
    import os

    for name in list(os.environ):
        if name.startswith("DEEPSCAN_") and not name.startswith("DEEPSCAN_TEST_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("DEEPSCAN_HOME", str(tmp_path_factory.mktemp("deepscan-home")))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A SQLite file migrated to head, shared by the session (tables are emptied after each test)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'deepscan.db'}"
    migrate.upgrade(url)
    return url


@pytest.fixture(scope="session")
def postgresql_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, built by running the migrations."""
    with services.fresh_postgres_database() as url:
        migrate.upgrade(url)
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """Each test using this runs once on SQLite and once on PostgreSQL, starting from empty tables."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    yield url
    empty_tables(url)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


def empty_tables(url: str) -> None:
    eng = make_engine(url)
    with eng.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(delete(table))
    eng.dispose()


@pytest.fixture(scope="session")
def redis_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The session's Redis: DEEPSCAN_TEST_REDIS_URL if set, else a throwaway redis-server (tests/services.py)."""
    with services.redis_for_run(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture
def redis_url(redis_server_url: str) -> Iterator[str]:
    """The session's Redis database, flushed before and after the test."""
    import redis

    client = redis.Redis.from_url(redis_server_url)
    client.flushdb()
    yield redis_server_url
    client.flushdb()
    client.close()


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()
