"""Earlier verdicts by content, asked by many fetch threads and answered in shared queries.

A worker looks up every item it fetches by its sha256 before decoding it (scanner/reuse.py), and
almost always finds nothing. Asked one item at a time, those tiny queries cost a 1,000-image job
about 2 s on 2 cores, most of it threads queueing for the connection and the interpreter around
them (docs/performance.md, "A small job"). Here the first thread to ask runs the query; threads
that ask meanwhile wait, and one of them then runs a single query for all of them (the
leader/follower batching of a database log's group commit). Nothing waits for a batch to fill: a
lone ask is answered at once, and no ask waits longer than the query before it plus its own.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import Engine

from scanner import reuse

_Key = tuple[str, tuple[str, ...]]  # model version, scoring keys


@dataclass(eq=False)
class _Ask:
    sha256: str
    key: _Key
    woken: threading.Event = field(default_factory=threading.Event)
    leads: bool = False
    answered: bool = False
    result: reuse.Earlier | None = None
    error: BaseException | None = None


class EarlierLookups:
    """`find` from any thread; the asks that overlap share one query."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._lock = threading.Lock()
        self._waiting: list[_Ask] = []
        self._busy = False  # a thread is serving asks
        self.queries = 0  # for tests and benchmarks: how many queries answered the asks

    def find(self, sha256: str, model_version: str, scoring_keys: Sequence[str]) -> reuse.Earlier | None:
        """The latest finished item with these bytes, model and scoring key (reuse.by_contents), or None."""
        ask = _Ask(sha256, (model_version, tuple(scoring_keys)))
        with self._lock:
            self._waiting.append(ask)
            if not self._busy:
                self._busy = ask.leads = True
        while not ask.answered:
            if ask.leads:
                self._serve()
            else:
                ask.woken.wait()
                ask.woken.clear()
        if ask.error is not None:
            raise ask.error
        return ask.result

    def _serve(self) -> None:
        """Answer every ask waiting now in one query per (model, scoring keys), then hand the lead on."""
        with self._lock:
            batch, self._waiting = self._waiting, []
        try:
            groups: dict[_Key, list[_Ask]] = defaultdict(list)
            for ask in batch:
                groups[ask.key].append(ask)
            for (model_version, keys), asks in groups.items():
                try:
                    found = reuse.by_contents(self._engine, {a.sha256 for a in asks}, model_version, keys)
                    self.queries += 1
                except Exception as exc:  # each asking thread raises it (a database restart: its chunk is retried)
                    for ask in asks:
                        ask.error = exc
                    continue
                for ask in asks:
                    ask.result = found.get(ask.sha256)
        finally:
            with self._lock:
                for ask in batch:
                    ask.answered = True
                    ask.leads = False
                    ask.woken.set()
                if self._waiting:
                    successor = self._waiting[0]
                    successor.leads = True
                    successor.woken.set()
                else:
                    self._busy = False
