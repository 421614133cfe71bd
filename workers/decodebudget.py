"""The decoded pixels a worker process holds at once, bounded whatever arrives.

A 62-megapixel PNG is 200 KB on the wire and about 430 MB while it decodes (Pillow's 4 bytes a
pixel plus the 3-byte RGB array), so nothing that counts bytes fetched bounds a worker's memory: 2
chunks x 8 fetch threads of such images took one worker to 7.8 GB. Each image therefore reserves
its decoded pixels from the process's one `DecodeBudget` (on the worker runtime, shared by every
fetch thread of every chunk) before it decodes, and gives them back once its model inputs are
made and its pixels freed. A thread whose image does not fit waits, in arrival order, instead
of allocating. An image larger than the whole budget still runs, alone.

Worst-case resident memory of a worker: see docs/performance.md ("Memory").
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager


class DecodeBudget:
    """A process-wide count of decoded pixels in flight, at most `total_pixels` (one oversized item aside)."""

    def __init__(self, total_pixels: int) -> None:
        if total_pixels < 1:
            raise ValueError("a decode budget needs at least one pixel")
        self.total_pixels = total_pixels
        self.held_pixels = 0
        self.peak_pixels = 0  # the most ever held at once (what tests and benchmarks check)
        self._cond = threading.Condition()
        self._queue: deque[int] = deque()  # tickets of the threads waiting, first come first served
        self._tickets = itertools.count()

    @contextmanager
    def reserve(self, pixels: int) -> Iterator[None]:
        """Hold `pixels` (capped at the whole budget) for the body, waiting for them first if need be."""
        wanted = max(0, min(pixels, self.total_pixels))
        self._acquire(wanted)
        try:
            yield
        finally:
            with self._cond:
                self.held_pixels -= wanted
                self._cond.notify_all()

    def _acquire(self, wanted: int) -> None:
        with self._cond:
            ticket = next(self._tickets)
            self._queue.append(ticket)
            try:
                # Only the first in line may take pixels: a large image is not starved by small ones.
                while self._queue[0] != ticket or self.held_pixels + wanted > self.total_pixels:
                    self._cond.wait()
            except BaseException:
                self._queue.remove(ticket)
                self._cond.notify_all()
                raise
            self._queue.popleft()
            self.held_pixels += wanted
            self.peak_pixels = max(self.peak_pixels, self.held_pixels)
            self._cond.notify_all()  # the next in line may fit too
