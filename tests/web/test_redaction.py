"""A URL's credentials never leave the process: a viewer token, the console, `results` and `show` in every
format, the export manifest and `serve`'s access log all show the URL without its password, signature or
token, while the stored URL stays intact for the workers."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select
from sqlalchemy.orm import Session

from deepscan.cli import cli
from scanner import review
from scanner.db import make_engine
from scanner.models import MediaItem
from tests import media_factory
from tests.web.conftest import DEFAULT_REQUEST_TIMEOUT_S, Server, seed_items, seed_job
from tests.web.test_console import sign_in

pytestmark = pytest.mark.postgres

SECRET_URL = "https://user:S3cretPass@media.example/a.jpg?X-Amz-Signature=abc&token=xyz"
SHOWN_URL = "https://media.example/a.jpg"
SECRETS = ("S3cretPass", "X-Amz-Signature", "abc", "token=", "xyz")


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, (secret, text[:2000])


@pytest.fixture
def secret_item(server: Server) -> int:
    """One scored item whose URL carries a password, a signature and a token (the only item stored)."""
    engine = make_engine(server.database_url)
    with engine.begin() as conn:
        for table in ("reviews", "thumbnails", "frame_results", "media_items", "scan_jobs"):
            conn.exec_driver_sql(f"DELETE FROM {table}")
    engine.dispose()
    job = seed_job(server.database_url, name="redaction")
    (item,) = seed_items(server.database_url, job, [{"url": SECRET_URL, "score": 0.9}])
    return item


def test_a_viewer_token_never_sees_the_credentials(server: Server, secret_item: int) -> None:
    listing = server.get("/api/v1/items", "viewer")
    detail = server.get(f"/api/v1/items/{secret_item}", "viewer")
    assert listing.status_code == detail.status_code == 200
    assert [r["url"] for r in listing.json()["items"] if r["id"] == secret_item] == [SHOWN_URL]
    assert detail.json()["item"]["url"] == SHOWN_URL
    for body in (listing.text, detail.text):
        assert_no_secret(body)


def test_the_console_pages_never_show_the_credentials(server: Server, secret_item: int) -> None:
    browser = sign_in(server, "viewer")
    for path in ("/console/queue?verdict=any", f"/console/items/{secret_item}"):
        page = browser.get(server.base + path, timeout=DEFAULT_REQUEST_TIMEOUT_S)
        assert page.status_code == 200
        assert SHOWN_URL in page.text
        assert_no_secret(page.text)


@pytest.mark.parametrize("output_format", ["table", "json", "jsonl", "csv"])
def test_results_never_print_the_credentials(server: Server, secret_item: int, output_format: str) -> None:
    printed = CliRunner().invoke(cli, ["--database-url", server.database_url, "results", "--format", output_format])
    assert printed.exit_code == 0, printed.output
    assert "media.example/a.jpg" in printed.output
    assert_no_secret(printed.output)


@pytest.mark.parametrize("output_format", ["table", "json"])
def test_show_never_prints_the_credentials(server: Server, secret_item: int, output_format: str) -> None:
    for key in (str(secret_item), SECRET_URL):  # found by the URL as scanned, shown without its secrets
        shown = CliRunner().invoke(cli, ["--database-url", server.database_url, "show", key, "--format", output_format])
        assert shown.exit_code == 0, shown.output
        assert SHOWN_URL in shown.output
        assert_no_secret(shown.output)


def test_the_export_manifest_never_holds_the_credentials(server: Server, secret_item: int, tmp_path: Path) -> None:
    data = media_factory.encode_image(media_factory.pattern_rgb(seed=3), "JPEG")
    engine = make_engine(server.database_url)
    try:
        with Session(engine) as session, session.begin():
            item = session.get_one(MediaItem, secret_item)
            item.content_sha256 = hashlib.sha256(data).hexdigest()
        with Session(engine) as session:
            fetched: list[str] = []

            def fetch_bytes(url: str) -> bytes:
                fetched.append(url)
                return data

            report = review.export_training_set(session, tmp_path, reviewed_only=False, fetch_bytes=fetch_bytes)
            stored = session.scalars(select(MediaItem.url).where(MediaItem.id == secret_item)).one()
    finally:
        engine.dispose()
    assert report.written["fake"] == 1
    assert fetched == [SECRET_URL] == [stored]  # the fetch and the database keep the URL whole
    manifest = report.manifest.read_text()
    assert SHOWN_URL in manifest
    assert_no_secret(manifest)


def test_the_access_log_never_holds_query_secrets(server: Server) -> None:
    query = "?access_token=tok123&token=xyz&X-Amz-Signature=abc"
    assert server.get("/api/v1/items" + query, "viewer").status_code == 200
    assert server.get("/console/login" + query).status_code == 200
    log = server.log.read_text(errors="replace")
    assert '"GET /api/v1/items HTTP/1.1" 200' in log  # the request is logged, without its query string
    assert '"GET /console/login HTTP/1.1" 200' in log
    for secret in ("tok123", "xyz", "X-Amz-Signature"):
        assert secret not in log


def test_a_job_named_before_names_were_redacted_shows_no_secret(server: Server, secret_item: int) -> None:
    job = seed_job(server.database_url, name=SECRET_URL)  # as databases from older versions hold them
    listing = server.get("/api/v1/jobs", "viewer")
    detail = server.get(f"/api/v1/jobs/{job}", "viewer")
    page = sign_in(server, "viewer").get(f"{server.base}/console/jobs", timeout=DEFAULT_REQUEST_TIMEOUT_S)
    assert detail.json()["name"] == SHOWN_URL
    for text in (listing.text, detail.text, page.text):
        assert_no_secret(text)
