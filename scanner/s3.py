"""The S3 client every part of deepscan uses: listing (scanner.sources) and fetching (workers.fetch)."""

from __future__ import annotations

from typing import Any

from scanner.settings import Settings

DEFAULT_S3_CLIENT_ATTEMPTS = 3  # botocore's own tries per request, "standard" retry mode


def make_s3_client(settings: Settings, *, attempts: int = DEFAULT_S3_CLIENT_ATTEMPTS) -> Any:
    """A boto3 S3 client on `settings.s3_endpoint_url` with the configured timeouts.

    Credentials come from the standard AWS chain. Each call builds its own boto3 session, so
    clients can be made from any thread; a client itself may be shared between threads.
    """
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=settings.http_connect_timeout_s,
        read_timeout=settings.http_read_timeout_s,
        retries={"mode": "standard", "max_attempts": attempts},
        max_pool_connections=max(10, settings.fetch_threads),
    )
    return boto3.session.Session().client("s3", endpoint_url=settings.s3_endpoint_url, config=config)
