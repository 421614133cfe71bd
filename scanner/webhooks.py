"""What a webhook URL must be, checked in the core so every front end refuses the same URLs in the same words."""

from __future__ import annotations

from urllib.parse import urlsplit

from scanner.errors import InvalidInputError
from scanner.redaction import redact_url


def validate_webhook_url(url: str) -> str:
    """`url`, stripped, if it is an absolute http(s) URL with a host; else InvalidInputError, naming it redacted."""
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 (parsing the port is the check: ValueError for 'host:abc')
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or " " in url.strip():
        raise InvalidInputError(f"{redact_url(url)!r} is not a webhook URL: use http(s)://HOST/PATH")
    return url.strip()
