"""Where the test suite finds PostgreSQL and Redis, and what it does when one is missing.

PostgreSQL: a fresh database per run on the local server (DEEPSCAN_TEST_POSTGRES_URL names another).
Redis: a throwaway `redis-server` on a free loopback port, started from the local binary for the
session (nothing saved to disk) and stopped at its end, so no run flushes a database someone else
uses; DEEPSCAN_TEST_REDIS_URL names a server to use instead (its database is flushed around each test).

With CI=true a missing server fails the run; elsewhere the tests that need it skip with a
message naming the server and how to start it (`make services`).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from sqlalchemy import create_engine, text

DEFAULT_POSTGRES_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_START_S = 30.0  # a hang guard: redis-server answers within milliseconds


def postgres_admin_url() -> str:
    return os.environ.get("DEEPSCAN_TEST_POSTGRES_URL", DEFAULT_POSTGRES_ADMIN_URL)


def configured_redis_url() -> str | None:
    """The Redis the developer asked the tests to use, if any (DEEPSCAN_TEST_REDIS_URL)."""
    return os.environ.get("DEEPSCAN_TEST_REDIS_URL") or None


def reachable(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 0), timeout=2):
            return True
    except OSError:
        return False


def missing(message: str) -> None:
    """Fail (CI) or skip (elsewhere): a service the test needs is not there."""
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def require(url: str, what: str) -> None:
    """Fail (CI) or skip (elsewhere) unless the server behind `url` accepts connections."""
    if not reachable(url):
        missing(f"{what} is not reachable at {urlsplit(url).netloc}; start it with `make services`")


def free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def throwaway_redis(directory: Path) -> Iterator[str]:
    """A `redis-server` of our own on a free loopback port, persisting nothing; killed afterwards."""
    binary = shutil.which("redis-server")
    if binary is None:
        missing("redis-server is not installed (apt-get install redis-server), and DEEPSCAN_TEST_REDIS_URL is unset")
    port = free_loopback_port()
    directory.mkdir(parents=True, exist_ok=True)
    args = ["--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(directory)]
    with (directory / "redis.log").open("wb") as log:
        proc = subprocess.Popen([str(binary), *args], stdout=log, stderr=subprocess.STDOUT)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + DEFAULT_REDIS_START_S
        while not reachable(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                log_text = (directory / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server did not start on port {port}:\n{log_text}")
            time.sleep(0.05)
        yield url
    finally:
        proc.kill()
        proc.wait()


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


@contextmanager
def redis_for_run(directory: Path) -> Iterator[str]:
    """The Redis a test session or benchmark uses: DEEPSCAN_TEST_REDIS_URL when set, else a throwaway one."""
    configured = configured_redis_url()
    if configured is not None:
        require(configured, "Redis")
        yield configured
        return
    with throwaway_redis(directory) as url:
        yield url


class ThrowawayPostgres:
    """A PostgreSQL server of the test's own, from the local binaries, that the test may restart."""

    def __init__(self, data: Path, port: int) -> None:
        self.data, self.port = data, port
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"

    def _run(self, *args: str) -> None:
        # initdb and pg_ctl refuse to run as root: run them as the postgres user then.
        as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*as_user, *args], check=True, capture_output=True, timeout=120)

    def pg_ctl(self, *args: str) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.data / "server.log"), "-w", *args)

    def restart(self) -> None:
        """`pg_ctl restart -m fast`: every connection is cut, the server is back when this returns."""
        self.pg_ctl("restart", "-m", "fast")


@contextmanager
def throwaway_postgres() -> Iterator[ThrowawayPostgres]:
    """Initialise, start and finally stop and delete a PostgreSQL cluster on a free loopback port."""
    if shutil.which("initdb") is None or shutil.which("pg_ctl") is None:
        pytest.skip("the PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    root = Path(tempfile.mkdtemp(prefix="deepscan-pg-"))  # not under pytest's root-only folder
    server = ThrowawayPostgres(root / "data", free_loopback_port())
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    try:
        server._run("initdb", "-D", str(server.data), "-U", "postgres", "-A", "trust", "--no-sync")
        opts = f"-c listen_addresses=127.0.0.1 -p {server.port} -c unix_socket_directories='' -c fsync=off"
        server.pg_ctl("start", "-o", opts)
        yield server
    finally:
        with suppress(subprocess.CalledProcessError):  # never started, or already stopped
            server.pg_ctl("stop", "-m", "immediate")
        shutil.rmtree(root, ignore_errors=True)


class ThrowawayRedis:
    """A redis-server of the test's own, without persistence: killing and starting it again empties it."""

    def __init__(self, folder: Path, port: int) -> None:
        self.folder, self.port = folder, port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen([*args, "--dir", str(self.folder)], stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not reachable(self.url):
            if time.monotonic() > deadline:
                raise AssertionError("the throwaway redis-server did not start")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: every message it held is gone."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


@contextmanager
def restartable_redis(folder: Path) -> Iterator[ThrowawayRedis]:
    """A throwaway redis-server the test may kill and start again (empty) on the same port."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = ThrowawayRedis(folder, free_loopback_port())
    server.start()
    try:
        yield server
    finally:
        server.kill()
