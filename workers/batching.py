"""Dynamic batching: one inference thread per process owns the model; decode threads submit inputs.

Every chunk a worker process holds (one with the solo pool, several with `--concurrency N`) hands
its prepared model inputs to the same `Batcher`, from its fetch/decode threads, and gets a future
per input. The inference thread takes up to `batch_size` inputs at a time; when fewer are waiting
it runs a partial batch once the oldest has waited `max_wait_s` (as inference servers do). So
batches form across items, frames and chunks, the model runs as soon as inputs are ready, and a
chunk that stores its results (a database transaction) never holds the model up.

A batch that is not full waits for more inputs only while more can come. Each chunk says how
many items it will hand over (`expecting`) and marks each one handed over: while some are still
on their way, a partial batch waits for them up to `fill_wait_s`, the model time of the last
full batch (no more than `max_fill_wait_s`; waiting longer than a batch takes would cost more than
it saves); once nothing more is expected it waits only `max_wait_s`. On a CPU a small batch is
dear (ResNet50: 0.47 s for 2 images, 2.7 s for 32), and without this the first images of every
chunk went to the model as a batch of two or three.

The queue is bounded: when the model falls behind, `submit` blocks, and with it the decode
threads, so a worker's memory stays flat whatever the chunk size. A batch the model fails on
fails the futures of that batch only; `run` may also fail single inputs by returning an
exception in that input's place (an image the fallback decoder finds corrupt).

The inference thread is a daemon (an idle worker must not be kept alive by it), so at interpreter
exit every batcher is stopped and its thread joined (`stop`, registered with `atexit`): a daemon
thread that frees a tensor while Python finalizes makes torch release the GIL it can no longer
take back, and the whole process aborts ("terminate called without an active exception", exit
status 134), seen at the end of a test run.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import queue
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

DEFAULT_QUEUED_BATCHES = 4  # inputs waiting for the model, in batches, before `submit` blocks
DEFAULT_IDLE_EXIT_S = 30.0  # an inference thread idle this long ends; the next submit starts a new one
DEFAULT_MAX_FILL_WAIT_S = 2.0  # the longest a partial batch waits for inputs that are on their way
DEFAULT_STOP_WAIT_S = 30.0  # at exit, how long to wait for a batch that is running to end

In = TypeVar("In")
Out = TypeVar("Out")

RunBatch = Callable[[list[In]], Sequence[Out | Exception]]
RecordBatch = Callable[[int, float], None]


@dataclass
class _Request(Generic[In, Out]):
    value: In
    future: Future[Out] = field(default_factory=Future)
    submitted: float = field(default_factory=time.monotonic)


class Batcher(Generic[In, Out]):
    """Runs `run` on batches of submitted inputs, on one thread of its own.

    `run(inputs)` returns one result per input, in order (an `Exception` in an input's place fails
    that input's future alone); `record(size, seconds)` is told about every batch.
    """

    def __init__(
        self,
        run: RunBatch[In, Out],
        *,
        batch_size: int,
        max_wait_s: float,
        max_queued: int | None = None,
        record: RecordBatch | None = None,
        idle_exit_s: float = DEFAULT_IDLE_EXIT_S,
        max_fill_wait_s: float = DEFAULT_MAX_FILL_WAIT_S,
        name: str = "inference",
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.batch_size = batch_size
        self.max_wait_s = max_wait_s
        self._run = run
        self._record = record
        self._idle_exit_s = idle_exit_s
        self._name = name
        self._queue: queue.Queue[_Request[In, Out] | None] = queue.Queue(  # None: stop (see `stop`)
            maxsize=max_queued or DEFAULT_QUEUED_BATCHES * batch_size
        )
        self._stopping = False
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.max_fill_wait_s = max_fill_wait_s
        self._full_batch_s = max_fill_wait_s  # until a full batch has been timed
        self._expected = 0  # items announced by `expecting` and not yet handed over
        self._expected_lock = threading.Lock()  # never `_lock`: that one is held while `submit` blocks
        _LIVE.add(self)

    def expecting(self, items: int) -> Expectation:
        """Announce `items` items whose inputs will be submitted; mark each with `arrived()` once
        all its inputs are submitted (or it failed), and `close()` when no more will come."""
        self._expect(items)
        return Expectation(self, items)

    def _expect(self, delta: int) -> None:
        with self._expected_lock:
            self._expected += delta

    @property
    def fill_wait_s(self) -> float:
        """How long a partial batch waits while inputs are expected: a full batch's model time."""
        return max(self.max_wait_s, min(self._full_batch_s, self.max_fill_wait_s))

    def submit(self, value: In) -> Future[Out]:
        """Queue one input for the model; blocks while the queue is full (backpressure)."""
        request: _Request[In, Out] = _Request(value)
        # Under the lock, so the inference thread cannot decide to end between the check and the put;
        # it never waits for this lock (see `_loop`), so a put blocked on a full queue cannot deadlock.
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()
            self._queue.put(request)
        return request.future

    def _loop(self) -> None:
        while not self._stopping:
            try:
                first = self._queue.get(timeout=self._idle_exit_s)
            except queue.Empty:
                if self._lock.acquire(blocking=False):
                    try:
                        if self._queue.empty():
                            self._thread = None
                            return
                    finally:
                        self._lock.release()
                continue
            if first is None:
                return
            batch = self._gather(first)
            del first
            try:
                self._run_batch(batch)
            except BaseException as exc:  # never leave a future unresolved, nor the queue without a reader
                log.exception("inference thread: a batch of %d inputs could not be completed", len(batch))
                for request in batch:
                    if not request.future.done():
                        request.future.set_exception(exc)
            del batch  # inputs are not held while the thread waits for the next ones

    def stop(self, timeout_s: float = DEFAULT_STOP_WAIT_S) -> None:
        """End the inference thread after the batch it is running, and wait for it (at interpreter
        exit; inputs still queued then fail). A later `submit` starts a new thread."""
        with self._lock:  # `submit` holds it only while it starts a thread or puts an input
            thread = self._thread
            if thread is None:
                return
            self._stopping = True
        with contextlib.suppress(queue.Full):  # full: the thread is busy and sees `_stopping` after its batch
            self._queue.put_nowait(None)  # wakes a thread waiting for inputs
        thread.join(timeout_s)
        with self._lock:
            self._thread, self._stopping = None, False
        while True:  # what is left: the wake-up above, and inputs no thread will score now
            try:
                request = self._queue.get_nowait()
            except queue.Empty:
                break
            if request is not None and request.future.set_running_or_notify_cancel():
                request.future.set_exception(RuntimeError("the process is exiting: input not scored"))

    def _gather(self, first: _Request[In, Out]) -> list[_Request[In, Out]]:
        """`first` and whatever else arrives before the batch is full or `first` has waited
        `max_wait_s` (`fill_wait_s` while more inputs are expected)."""
        batch = [first]
        step = max(self.max_wait_s, 0.005)  # how soon a wait notices that nothing more is expected
        while len(batch) < self.batch_size and not self._stopping:
            try:
                request = self._queue.get_nowait()
            except queue.Empty:
                pass
            else:
                if request is not None:
                    batch.append(request)
                continue
            expected = self._expected > 0
            limit = self.fill_wait_s if expected else self.max_wait_s
            remaining = first.submitted + limit - time.monotonic()
            if remaining <= 0:
                break
            try:
                request = self._queue.get(timeout=min(remaining, step) if expected else remaining)
            except queue.Empty:
                continue
            if request is not None:
                batch.append(request)
        return batch

    def _run_batch(self, batch: list[_Request[In, Out]]) -> None:
        live = [r for r in batch if r.future.set_running_or_notify_cancel()]  # a failed chunk cancels its inputs
        if not live:
            return
        started = time.perf_counter()
        try:
            results = self._run([r.value for r in live])
            if len(results) != len(live):
                raise RuntimeError(f"the model gave {len(results)} results for a batch of {len(live)}")
        except Exception as exc:
            log.exception("inference failed on a batch of %d inputs", len(live))
            for request in live:
                request.future.set_exception(exc)
            return
        took = time.perf_counter() - started
        log.debug("a batch of %d inputs ran in %.3f s", len(live), took)
        if len(live) == self.batch_size:  # a full batch ran (none of it cancelled): time it
            self._full_batch_s = took
        for request, result in zip(live, results, strict=True):
            if isinstance(result, Exception):
                request.future.set_exception(result)
            else:
                request.future.set_result(result)
        if self._record is not None:
            try:
                self._record(len(live), took)
            except Exception:  # metrics are not worth a lost batch
                log.exception("recording a batch's metrics failed")


class Expectation:
    """Items a chunk will hand to a `Batcher`, counted down as they arrive (see `Batcher.expecting`)."""

    def __init__(self, batcher: Batcher[Any, Any], items: int) -> None:
        self._batcher = batcher
        self._left = items
        self._lock = threading.Lock()

    def arrived(self) -> None:
        """One item's inputs are all submitted (or it has none: failed, reused)."""
        with self._lock:
            if self._left == 0:
                return
            self._left -= 1
        self._batcher._expect(-1)

    def close(self) -> None:
        """No more items will come (idempotent): partial batches stop waiting for them."""
        with self._lock:
            left, self._left = self._left, 0
        if left:
            self._batcher._expect(-left)

    def __enter__(self) -> Expectation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_LIVE: weakref.WeakSet[Batcher[Any, Any]] = weakref.WeakSet()


@atexit.register
def _stop_at_exit() -> None:
    for batcher in list(_LIVE):
        batcher.stop()
