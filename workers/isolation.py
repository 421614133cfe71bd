"""The worker process's floor: ordinary chunks share it, an interrupted item has it to itself.

When a worker process dies, every item it had in hand is suspect. To tell which one killed it, an
item whose delivery died is tried again alone (scanner/leases.py): it waits until the chunks this
process is working on are stored, and no other chunk starts until it is stored. A death during its
lone try then has one item to blame. Lone tries are rare (only after a death) and short (one item),
so ordinary chunks lose little; an interrupted item waiting for the floor does not hold up new
chunks behind it for long, since it is served before them (writer preference).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Floor:
    """A readers-writer lock with writer preference: `shared()` for chunks, `alone()` for a lone try."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._sharing = 0
        self._alone = False
        self._waiting_alone = 0

    @contextmanager
    def shared(self) -> Iterator[None]:
        """Hold the floor with other chunks; waits while a lone try runs or waits to run."""
        with self._changed:
            self._changed.wait_for(lambda: not self._alone and self._waiting_alone == 0)
            self._sharing += 1
        try:
            yield
        finally:
            with self._changed:
                self._sharing -= 1
                self._changed.notify_all()

    @contextmanager
    def alone(self) -> Iterator[None]:
        """Hold the floor alone: once no chunk holds it, and until the body ends."""
        with self._changed:
            self._waiting_alone += 1
            try:
                self._changed.wait_for(lambda: not self._alone and self._sharing == 0)
            finally:
                self._waiting_alone -= 1
            self._alone = True
        try:
            yield
        finally:
            with self._changed:
                self._alone = False
                self._changed.notify_all()
