"""The suite's own Redis: a throwaway server, so `make test` never flushes a database someone else uses."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import redis

from tests import services


def test_a_throwaway_redis_persists_nothing_and_is_gone_afterwards(tmp_path: Path) -> None:
    with services.throwaway_redis(tmp_path) as url:
        assert urlsplit(url).hostname == "127.0.0.1"
        client = redis.Redis.from_url(url)
        client.set("k", "v")
        assert client.get("k") == b"v"
        assert client.config_get("save") == {"save": ""}
        assert client.config_get("appendonly") == {"appendonly": "no"}
        client.close()
    assert not services.reachable(url)
    assert not list(tmp_path.glob("*.rdb"))
