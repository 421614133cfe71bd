"""Dynamic batching: one inference thread per process owns the model; decode threads submit inputs.

Every chunk a worker process holds (one with the solo pool, several with `--concurrency N`) hands
its prepared model inputs to the same `Batcher`, from its fetch/decode threads, and gets a future
per input. The inference thread takes up to `batch_size` inputs at a time; when fewer are waiting
it runs a partial batch once the oldest has waited `max_wait_s` (as inference servers do). So
batches form across items, frames and chunks, the model runs as soon as inputs are ready, and a
chunk that stores its results (a database transaction) never holds the model up.

The queue is bounded: when the model falls behind, `submit` blocks, and with it the decode
threads, so a worker's memory stays flat whatever the chunk size. A batch the model fails on
fails the futures of that batch only; `run` may also fail single inputs by returning an
exception in that input's place (an image the fallback decoder finds corrupt).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

DEFAULT_QUEUED_BATCHES = 4  # inputs waiting for the model, in batches, before `submit` blocks
DEFAULT_IDLE_EXIT_S = 30.0  # an inference thread idle this long ends; the next submit starts a new one

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
        self._queue: queue.Queue[_Request[In, Out]] = queue.Queue(
            maxsize=max_queued or DEFAULT_QUEUED_BATCHES * batch_size
        )
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

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
        while True:
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
            batch = self._gather(first)
            try:
                self._run_batch(batch)
            except BaseException as exc:  # never leave a future unresolved, nor the queue without a reader
                log.exception("inference thread: a batch of %d inputs could not be completed", len(batch))
                for request in batch:
                    if not request.future.done():
                        request.future.set_exception(exc)

    def _gather(self, first: _Request[In, Out]) -> list[_Request[In, Out]]:
        """`first` and whatever else arrives before the batch is full or `first` has waited `max_wait_s`."""
        batch = [first]
        closes = first.submitted + self.max_wait_s
        while len(batch) < self.batch_size:
            try:
                batch.append(self._queue.get_nowait())
                continue
            except queue.Empty:
                pass
            remaining = closes - time.monotonic()
            if remaining <= 0:
                break
            try:
                batch.append(self._queue.get(timeout=remaining))
            except queue.Empty:
                break
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
        for request, result in zip(live, results, strict=True):
            if isinstance(result, Exception):
                request.future.set_exception(result)
            else:
                request.future.set_result(result)
        if self._record is not None:
            try:
                self._record(len(live), time.perf_counter() - started)
            except Exception:  # metrics are not worth a lost batch
                log.exception("recording a batch's metrics failed")
