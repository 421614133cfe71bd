"""Content lookups asked by many threads share queries, and each thread gets its own answer (workers/lookups.py)."""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

import scanner.reuse
from workers.lookups import EarlierLookups


def test_asks_that_overlap_a_running_query_are_answered_by_one_more(monkeypatch: pytest.MonkeyPatch) -> None:
    first_running, others_waiting = threading.Event(), threading.Event()
    asked: list[set[str]] = []

    def by_contents(_engine: Any, sha256s: Collection[str], model: str, keys: Iterable[str]) -> dict[str, Any]:
        asked.append(set(sha256s))
        if len(asked) == 1:
            first_running.set()
            assert others_waiting.wait(30)
        return {sha: f"earlier {sha} of {model}/{','.join(keys)}" for sha in sha256s if sha != "new"}

    monkeypatch.setattr(scanner.reuse, "by_contents", by_contents)
    lookups = EarlierLookups(engine=None)  # type: ignore[arg-type]
    with ThreadPoolExecutor(6) as pool:
        first = pool.submit(lookups.find, "a", "m", ["k"])
        assert first_running.wait(30)
        rest = [pool.submit(lookups.find, sha, "m", ["k"]) for sha in ("b", "c", "new", "d", "e")]
        while len(lookups._waiting) < 5:
            threading.Event().wait(0.01)
        others_waiting.set()
        answers: list[Any] = [first.result(30), *(f.result(30) for f in rest)]
    assert answers == ["earlier a of m/k", "earlier b of m/k", "earlier c of m/k", None, "earlier d of m/k",
                       "earlier e of m/k"]  # fmt: skip
    assert asked == [{"a"}, {"b", "c", "new", "d", "e"}]
    assert lookups.queries == 2


def test_a_failed_query_fails_every_ask_it_answered_and_the_next_ask_queries_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = []

    def by_contents(_engine: Any, sha256s: Collection[str], *_: Any) -> dict[str, Any]:
        calls.append(sha256s)
        if len(calls) == 1:
            raise ConnectionError("database restarting")
        return {}

    monkeypatch.setattr(scanner.reuse, "by_contents", by_contents)
    lookups = EarlierLookups(engine=None)  # type: ignore[arg-type]
    with pytest.raises(ConnectionError, match="restarting"):
        lookups.find("a", "m", ["k"])
    assert lookups.find("a", "m", ["k"]) is None
    assert len(calls) == 2
