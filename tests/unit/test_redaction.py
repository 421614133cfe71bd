"""No credential survives redaction: URLs, free text, log records and job names."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from scanner.db import describe_url, make_engine
from scanner.errors import ConfigError
from scanner.redaction import (
    MAX_JOB_NAME_CHARS,
    RedactingFilter,
    install_log_redaction,
    job_name,
    redact_text,
    redact_url,
)
from workers.notify import item_flagged_payload

SECRETS = ("s3cr3t", "t0ken", "sig123", "hunter2")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://user:s3cr3t@example.com:8443/a/b.jpg?token=t0ken#frag", "https://example.com:8443/a/b.jpg"),
        ("http://t0ken@example.com/x.png", "http://example.com/x.png"),
        ("https://bucket.s3.amazonaws.com/k.jpg?X-Amz-Signature=sig123", "https://bucket.s3.amazonaws.com/k.jpg"),
        ("https://medium.com/@someone/post", "https://medium.com/@someone/post"),  # an @ in the path is no userinfo
        ("HTTPS://[::1]:80/p?token=t0ken", "HTTPS://[::1]:80/p"),
        ("postgresql+psycopg://scanner:s3cr3t@db:5432/verdicts", "postgresql+psycopg://scanner:***@db:5432/verdicts"),
        ("postgresql://scanner:hun/ter2@db/v?sslmode=require", "postgresql://scanner:***@db/v"),  # SQLAlchemy reads /
        ("redis://:s3cr3t@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("s3://bucket/a#1.jpg?X-Amz-Signature=sig123", "s3://bucket/a#1.jpg"),
        ("s3://bucket/dir/photo.jpg", "s3://bucket/dir/photo.jpg"),
        ("file:///data/a%20b.jpg?x=t0ken", "file:///data/a%20b.jpg"),
        ("sqlite:///home/me/deepscan.db", "sqlite:///home/me/deepscan.db"),
        ("/data/photo.jpg", "/data/photo.jpg"),
    ],
)
def test_redact_url_hides_credentials_and_keeps_what_a_moderator_needs(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert redact_url(shown) == shown  # redacting twice changes nothing (log handlers may each redact)


@pytest.mark.parametrize("url", ["http://[::1/x?token=t0ken", "https://u:s3cr3t@host:notaport/x", "http://", "s3://"])
def test_redact_url_never_raises_on_malformed_urls(url: str) -> None:
    assert not any(secret in redact_url(url) for secret in SECRETS)


def test_redact_text_redacts_every_url_and_secret_pair_in_a_message() -> None:
    text = (
        "webhook https://hooks.example/x?token=t0ken unreachable; fetch of 'http://u:s3cr3t@h/a.jpg' failed; "
        'http://h:80 "GET /a.jpg?X-Amz-Signature=sig123 HTTP/1.1" 403; DB_PASSWORD=hunter2'
    )
    redacted = redact_text(text)
    assert not any(secret in redacted for secret in SECRETS)
    assert "webhook https://hooks.example/x unreachable" in redacted
    assert "'http://h/a.jpg'" in redacted
    assert '"GET /a.jpg HTTP/1.1"' in redacted
    assert redact_text("no URL here: 3 items, 1 error") == "no URL here: 3 items, 1 error"


def test_job_name_is_redacted_then_cut_to_the_column_with_an_ellipsis() -> None:
    presigned = "https://bucket.s3.amazonaws.com/" + "k" * 300 + ".jpg?X-Amz-Signature=sig123"
    assert job_name(["https://user:s3cr3t@h/a.jpg?token=t0ken", "/more"]) == "https://h/a.jpg"
    assert job_name(["/data"], "nightly") == "nightly"
    named = job_name(["/data"], presigned)
    assert len(named) == MAX_JOB_NAME_CHARS
    assert named.endswith("…")
    assert named.startswith("https://bucket.s3.amazonaws.com/kkk")
    assert "sig123" not in named
    assert len(job_name(["x" * 200])) == 200  # exactly the column: kept whole
    assert job_name(["x" * 200]) == "x" * 200


@pytest.fixture
def logger() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger writing to a string through a handler with the RedactingFilter installed."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    log = logging.getLogger("tests.redaction")
    log.addHandler(handler)
    log.propagate = False
    install_log_redaction(log)
    install_log_redaction(log)  # idempotent: one filter per handler
    yield log, stream
    log.removeHandler(handler)
    log.propagate = True


def test_log_records_are_redacted_in_message_args_and_traceback(logger: tuple[logging.Logger, io.StringIO]) -> None:
    log, stream = logger
    assert sum(isinstance(f, RedactingFilter) for f in log.handlers[0].filters) == 1
    log.warning("fetch of %s failed (%s)", "https://u:s3cr3t@h/a.jpg?token=t0ken", "retry 1")
    try:
        raise ConnectionError("cannot reach redis://:hunter2@broker:6379/0")
    except ConnectionError:
        log.exception("broker down")
    log.warning("%d items, %s", 3, "done")
    written = stream.getvalue()
    assert not any(secret in written for secret in SECRETS)
    assert "fetch of https://h/a.jpg failed (retry 1)" in written
    assert "redis://:***@broker:6379/0" in written
    assert "3 items, done" in written


def test_a_bad_format_string_still_reaches_the_handler() -> None:
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "%d", ("not a number",), None)
    assert RedactingFilter().filter(record)  # the handler reports the format error itself


def test_the_database_url_is_never_echoed_with_its_password() -> None:
    with pytest.raises(ConfigError) as caught:
        make_engine("postgresql+psycopg://scanner:s3cr3t@db:notaport/verdicts")
    assert "s3cr3t" not in str(caught.value)
    assert "scanner:***@db" in str(caught.value)
    assert describe_url("postgresql+psycopg://scanner:s3cr3t@db/v?password=hunter2") == (
        "postgresql+psycopg://scanner:***@db/v"
    )


def test_item_flagged_events_carry_no_credentials() -> None:
    payload = item_flagged_payload(1, 2, "https://u:s3cr3t@h/a.jpg?X-Amz-Signature=sig123", 0.9, 0.5)
    assert payload["url"] == "https://h/a.jpg"


def test_access_log_arguments_keep_their_shape_and_lose_their_query() -> None:
    """uvicorn's access formatter unpacks (client, method, path, version, status) from the record's args."""
    args = ("127.0.0.1:5000", "GET", "/api/v1/items?access_token=tok&X-Amz-Signature=abc", "1.1", 200)
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d', args, None)

    RedactingFilter().filter(record)

    assert record.args == ("127.0.0.1:5000", "GET", "/api/v1/items", "1.1", 200)
    assert record.getMessage() == '127.0.0.1:5000 - "GET /api/v1/items HTTP/1.1" 200'
