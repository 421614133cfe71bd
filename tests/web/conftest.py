"""A real `deepscan serve` (uvicorn) process on loopback over the machine's PostgreSQL, and its tokens."""

from __future__ import annotations

import datetime as dt
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner
from sqlalchemy.orm import Session

from deepscan.cli import cli
from scanner.db import make_engine
from scanner.models import FrameResult, MediaItem, ScanJob
from tests.conftest import empty_tables
from tests.pipeline_helpers import deepscan_env, deepscan_process

DEFAULT_SERVER_READY_S = 90.0
DEFAULT_REQUEST_TIMEOUT_S = 60.0  # a hang guard, never a speed requirement
ROLES = ("viewer", "reviewer", "admin")
T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def create_token(database_url: str, name: str, role: str) -> str:
    """`deepscan tokens create NAME --role ROLE`, as an operator runs it; returns the printed secret."""
    result = CliRunner().invoke(
        cli, ["--database-url", database_url, "tokens", "create", name, "--role", role], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    return result.stdout.strip().splitlines()[0]


@dataclass
class Server:
    base: str
    database_url: str
    log: Path
    tokens: dict[str, str] = field(default_factory=dict)  # role -> secret of a token named "<role>-token"

    def client(self, role: str | None = None, *, secret: str | None = None) -> requests.Session:
        session = requests.Session()
        token = secret if secret is not None else self.tokens.get(role or "")
        if token:
            session.headers["Authorization"] = f"Bearer {token}"
        return session

    def request(self, method: str, path: str, role: str | None = None, **kwargs: Any) -> requests.Response:
        secret = kwargs.pop("secret", None)
        with self.client(role, secret=secret) as session:
            return session.request(method, self.base + path, timeout=DEFAULT_REQUEST_TIMEOUT_S, **kwargs)

    def get(self, path: str, role: str | None = None, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, role, **kwargs)

    def post(self, path: str, role: str | None = None, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, role, **kwargs)


@contextmanager
def running_server(database_url: str, log: Path, **env: str) -> Iterator[Server]:
    """`deepscan serve` in its own process, answering on a free loopback port."""
    port = free_port()
    environment = deepscan_env(DEEPSCAN_DATABASE_URL=database_url, DEEPSCAN_HOME=str(log.parent), **env)
    args = ["serve", "--host", "127.0.0.1", "--port", str(port)]
    with deepscan_process(
        args, environment, log, ready_marker=b"Uvicorn running", ready_timeout_s=DEFAULT_SERVER_READY_S
    ):
        yield Server(base=f"http://127.0.0.1:{port}", database_url=database_url, log=log)


@pytest.fixture(scope="module")
def server(postgresql_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server without a broker (embedded mode: scans are refused), with one token per role."""
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    empty_tables(postgresql_url)
    with running_server(postgresql_url, log) as srv:
        srv.tokens = {role: create_token(postgresql_url, f"{role}-token", role) for role in ROLES}
        yield srv
    empty_tables(postgresql_url)


def seed_job(database_url: str, *, name: str = "seeded", status: str = "done", **job_fields: Any) -> int:
    engine = make_engine(database_url)
    try:
        with Session(engine) as session, session.begin():
            job = ScanJob(name=name, source_spec=["/media"], status=status, threshold=0.5, **job_fields)
            session.add(job)
            session.flush()
            return job.id
    finally:
        engine.dispose()


def seed_items(database_url: str, job_id: int, rows: list[dict[str, Any]]) -> list[int]:
    """Insert items (finished images unless a row says otherwise); returns their ids in order."""
    engine = make_engine(database_url)
    try:
        with Session(engine) as session, session.begin():
            items = []
            for n, row in enumerate(rows):
                score = row.pop("score", 0.1)
                defaults: dict[str, Any] = {
                    "url": f"file:///media/{job_id}-{n}.jpg",
                    "kind": "image",
                    "status": "done",
                    "score": score,
                    "verdict": None if score is None else "fake" if score >= 0.5 else "real",
                    "model_version": "a" * 64,
                    "strategy": "max_face",
                    "enqueued_at": T0,
                    "finished_at": T0 + dt.timedelta(minutes=n) if score is not None else None,
                }
                frames = row.pop("frames", [])
                item = MediaItem(job_id=job_id, **{**defaults, **row})
                item.frames = [FrameResult(frame_index=i, timestamp_s=t, score=s) for i, (t, s) in enumerate(frames)]
                session.add(item)
                items.append(item)
            session.flush()
            return [i.id for i in items]
    finally:
        engine.dispose()


def assert_problem(response: requests.Response, status: int) -> dict[str, Any]:
    """An RFC 9457 problem with this status and a one-line detail, no traceback."""
    assert response.status_code == status, (response.status_code, response.text[:500])
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["title"]
    assert body["detail"]
    assert "\n" not in body["detail"]
    assert "Traceback" not in response.text
    return body
