"""Deadlines that our own code enforces, whatever pool or thread it runs in.

Celery's solo and threads pools ignore `task_time_limit`, and a per-read socket timeout does not
bound a server that trickles one byte every few seconds. So long-running steps (fetching,
sampling frames, detecting faces) take a `Deadline` and call `check()` between units of work; a
network fetch's connections are shut down when its item's deadline passes (workers/cutoff.py);
the chunk runner also stops waiting for an item whose deadline has passed. All three read the
same `ItemBudget`, so they enforce one deadline and name it the same way.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from scanner.errors import DeadlineExceededError


@dataclass(frozen=True)
class Deadline:
    """A point on the monotonic clock by which one piece of work must be finished."""

    seconds: float
    what: str = "item"
    started: float = field(default_factory=time.monotonic)

    @classmethod
    def never(cls) -> Deadline:
        return cls(float("inf"))

    @property
    def at(self) -> float:
        return self.started + self.seconds

    def remaining(self) -> float:
        """Seconds left (never negative)."""
        return max(0.0, self.at - time.monotonic())

    def expired(self) -> bool:
        return time.monotonic() >= self.at

    def check(self, doing: str | None = None) -> None:
        """Raise DeadlineExceededError (a permanent, one-line item error) once the deadline has passed."""
        if self.expired():
            raise DeadlineExceededError(self.reason(doing))

    def reason(self, doing: str | None = None) -> str:
        step = f" while {doing}" if doing else ""
        return f"{self.what} deadline of {self.seconds:g} s exceeded{step} (DEEPSCAN_ITEM_DEADLINE_S)"


_GIB = float(1 << 30)


@dataclass
class ItemBudget:
    """The time one item may take to fetch and decode, from the moment its work starts.

    An image gets `base_s`; a video earns `video_s_per_gb` more per GiB of its bytes, counted as they
    arrive, so a server trickling a "video" a byte at a time still runs out of time after `base_s`.
    Until its first bytes say otherwise, an item is judged as an image. The fetch records what it
    learns (`learn`), so `current()` is the deadline every watcher of the item (the fetch's
    connection watchdog, the chunk runner) enforces, with its right name.
    """

    base_s: float
    video_s_per_gb: float = 0.0
    started: float = field(default_factory=time.monotonic)
    kind: str = "image"
    received: int = 0  # bytes of the item received so far
    paused_at: float | None = None  # set while the item waits for the process, not for its own work

    def deadline(self, kind: str = "image", size: int = 0) -> Deadline:
        extra = self.video_s_per_gb * size / _GIB if kind == "video" else 0.0
        started = self.started if self.paused_at is None else self.started + time.monotonic() - self.paused_at
        return Deadline(self.base_s + extra, what=kind if kind in ("image", "video") else "item", started=started)

    def learn(self, kind: str, received: int) -> None:
        """What the fetch has found out: the item's kind and how many of its bytes have arrived."""
        self.kind, self.received = kind, received

    def current(self) -> Deadline:
        """The item's deadline as far as it is known now."""
        return self.deadline(self.kind, self.received)

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Leave the body's time out of the item's: it waits for the process's turn, not for its own work."""
        self.paused_at = time.monotonic()
        try:
            yield
        finally:
            self.started += time.monotonic() - self.paused_at
            self.paused_at = None
