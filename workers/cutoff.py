"""Cut a fetch off at its item's deadline, whatever the server does.

A per-read socket timeout bounds a silent server, not one that sends a byte every few seconds,
and neither requests, http.client nor botocore bounds how long a response's headers may take. So
each fetch runs under a `Cutoff`: every connection it sends a request on (HTTP or S3, see
`WatchedHTTPConnection` and `watch_s3_connections`) is registered with it, and one watchdog thread
per process shuts those connections' sockets down when the deadline passes. A read blocked in the
kernel then returns at once, wherever it is (headers, body, the sniffing of the first bytes), the
fetch fails, and the caller reports the deadline, because `Cutoff.fired` says why it failed.

The deadline is read from the item's budget each time the watchdog looks, so it may move later
while the fetch runs (a video earns time as its bytes arrive). `cut_all()` fires every cutoff at
once, and every later one as it starts, when the worker is told to stop.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import socket
import threading
import time
from collections.abc import Callable
from functools import cache
from typing import Any

import urllib3

log = logging.getLogger(__name__)

_current = threading.local()


class Cutoff:
    """The connections one fetch uses, shut down together once its deadline has passed.

    `deadline` gives that deadline on the monotonic clock; it is asked again whenever the watchdog
    looks, so it may move later while the fetch runs.
    """

    def __init__(self, deadline: Callable[[], float]) -> None:
        self._deadline = deadline
        self._lock = threading.Lock()
        self._connections: list[Any] = []
        self.fired = False
        self.finished = False

    @property
    def at(self) -> float:
        return self._deadline()

    def watch(self, connection: Any) -> None:
        """Register a socket (or an object with a `sock`); cut at once if already fired."""
        with self._lock:
            if not self.finished and all(c is not connection for c in self._connections):
                self._connections.append(connection)
            fired = self.fired
        if fired:
            _shut_down(connection)

    def fire(self) -> None:
        """Shut down every registered connection's socket: blocked reads return, later ones fail."""
        with self._lock:
            if self.finished:
                return
            self.fired = True
            connections = list(self._connections)
        for connection in connections:
            _shut_down(connection)

    def __enter__(self) -> Cutoff:
        _current.cutoff = self
        _watchdog().add(self)
        return self

    def __exit__(self, *_: object) -> None:
        _current.cutoff = None
        with self._lock:
            self.finished = True
            self._connections.clear()  # pooled connections go on to serve other items
        _watchdog().discard(self)


def current() -> Cutoff | None:
    """The cutoff of the fetch this thread is running, if any."""
    cutoff: Cutoff | None = getattr(_current, "cutoff", None)
    return cutoff


def cut_all() -> int:
    """Fire every running cutoff now (the worker is stopping); returns how many there were."""
    return _watchdog().fire_all()


def _shut_down(connection: Any) -> None:
    sock = connection if isinstance(connection, socket.socket) else getattr(connection, "sock", None)
    if sock is None:
        return
    # Already closed (OSError), or not a real socket (TypeError: a TLS-in-TLS proxy transport).
    with contextlib.suppress(OSError, TypeError):
        # The plain socket's shutdown, even for TLS: SSLSocket.shutdown would also drop its TLS state
        # under the feet of the thread reading it; this only makes that thread's read fail.
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _watch_current(connection: Any) -> None:
    cutoff = current()
    if cutoff is not None:
        cutoff.watch(connection)


class _WatchedConnection:
    """Registers the connection's socket with the thread's cutoff as the request goes out (a reused
    one before, a new one once connected), so the response's headers are under the deadline too.

    The socket itself is registered, not the connection: http.client drops the connection's
    reference to it once a response that closes the connection (HTTP/1.0, `Connection: close`) has
    its headers, while the response goes on reading from it.
    """

    sock: Any

    def request(self, *args: Any, **kwargs: Any) -> Any:
        if self.sock is not None:
            _watch_current(self.sock)
        result = super().request(*args, **kwargs)  # type: ignore[misc]
        if self.sock is not None:
            _watch_current(self.sock)
        return result


class WatchedHTTPConnection(_WatchedConnection, urllib3.connection.HTTPConnection):
    pass


class WatchedHTTPSConnection(_WatchedConnection, urllib3.connection.HTTPSConnection):
    pass


def watch_s3_connections(client: Any) -> Any:
    """Make `client` (boto3 S3) register its connections with the running cutoff; returns it.

    botocore has no public hook for its connection classes: its session's pool classes are swapped
    here, in the one dictionary its pool managers share.
    """
    client._endpoint.http_session._pool_classes_by_scheme.update(_watched_s3_pools())
    return client


@cache
def _watched_s3_pools() -> dict[str, type]:
    # botocore is imported here, not at the top: only workers that read S3 pay for importing it.
    from botocore.awsrequest import AWSHTTPConnection, AWSHTTPConnectionPool, AWSHTTPSConnection, AWSHTTPSConnectionPool

    class WatchedAWSHTTPConnection(_WatchedConnection, AWSHTTPConnection):  # type: ignore[misc]
        pass

    class WatchedAWSHTTPSConnection(_WatchedConnection, AWSHTTPSConnection):  # type: ignore[misc]
        pass

    class WatchedAWSHTTPConnectionPool(AWSHTTPConnectionPool):  # type: ignore[misc]
        ConnectionCls = WatchedAWSHTTPConnection

    class WatchedAWSHTTPSConnectionPool(AWSHTTPSConnectionPool):  # type: ignore[misc]
        ConnectionCls = WatchedAWSHTTPSConnection

    return {"http": WatchedAWSHTTPConnectionPool, "https": WatchedAWSHTTPSConnectionPool}


class _Watchdog:
    """One daemon thread that fires each cutoff when its deadline passes (a heap ordered by deadline)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Cutoff]] = []
        self._running: set[Cutoff] = set()
        self._order = itertools.count()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="deadline-watchdog", daemon=True)
        self._thread.start()

    def add(self, cutoff: Cutoff) -> None:
        with self._cond:
            if self._stopping:
                cutoff.fired = True  # nothing is registered yet: its first connection is cut as it is made
                return
            self._running.add(cutoff)
            heapq.heappush(self._heap, (cutoff.at, next(self._order), cutoff))
            self._cond.notify()

    def discard(self, cutoff: Cutoff) -> None:
        with self._cond:
            self._running.discard(cutoff)  # its heap entry is dropped when it comes up

    def fire_all(self) -> int:
        with self._cond:
            self._stopping = True
            running = list(self._running)
        for cutoff in running:
            cutoff.fire()
        return len(running)

    def _loop(self) -> None:
        while True:
            due = self._next_due()
            if due is not None:
                due.fire()

    def _next_due(self) -> Cutoff | None:
        """Wait for the earliest deadline; the cutoff to fire, or None to look again."""
        with self._cond:
            if not self._heap:
                self._cond.wait()
                return None
            at, _, cutoff = self._heap[0]
            if cutoff not in self._running:
                heapq.heappop(self._heap)
                return None
            now = time.monotonic()
            if now < at:
                self._cond.wait(at - now)
                return None
            heapq.heappop(self._heap)
            if cutoff.at > now:  # the deadline moved later: wait for it again
                heapq.heappush(self._heap, (cutoff.at, next(self._order), cutoff))
                return None
            self._running.discard(cutoff)
            return cutoff


_the_watchdog: _Watchdog | None = None
_watchdog_lock = threading.Lock()


def _watchdog() -> _Watchdog:
    """The process's watchdog, started on first use (and again in a forked child, which has no threads)."""
    global _the_watchdog
    with _watchdog_lock:
        if _the_watchdog is None or not _the_watchdog._thread.is_alive():
            _the_watchdog = _Watchdog()
        return _the_watchdog
