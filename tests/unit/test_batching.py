"""The workers' dynamic batcher: batches across submitting threads, partial batches, backpressure,
failures kept to their own batch or input, cancellation and the idle inference thread.

Outcomes only: what ran in which batch, which futures got which result. Waits are bounded by
generous timeouts that guard against hangs, never by how fast this machine is.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from contextlib import contextmanager

import pytest

from workers.batching import Batcher

HANG_GUARD_S = 30.0


class Model:
    """A stand-in for the model: records every batch it is given; `gate` holds a batch until set."""

    def __init__(self, *, gated: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.gate = threading.Event()
        self.started = threading.Event()
        if not gated:
            self.gate.set()

    def __call__(self, inputs: list[int]) -> Sequence[int | Exception]:
        self.batches.append(list(inputs))
        self.started.set()
        assert self.gate.wait(HANG_GUARD_S), "test gate never opened"
        return [x * 10 for x in inputs]


@contextmanager
def gated_model() -> Iterator[Model]:
    model = Model(gated=True)
    try:
        yield model
    finally:
        model.gate.set()  # never leave the inference thread waiting after a failed assertion


def results(futures: Sequence[Future[int]]) -> list[int]:
    return [f.result(timeout=HANG_GUARD_S) for f in futures]


def test_batches_form_across_submitting_threads_up_to_the_batch_size() -> None:
    with gated_model() as model:
        # A max wait far beyond the test's length: only full batches can run.
        batcher: Batcher[int, int] = Batcher(model, batch_size=4, max_wait_s=10 * HANG_GUARD_S)
        first = [batcher.submit(x) for x in range(4)]
        assert model.started.wait(HANG_GUARD_S)  # the model is busy on [0, 1, 2, 3]
        with ThreadPoolExecutor(4) as pool:  # four threads queue eight inputs meanwhile
            futures = list(pool.map(batcher.submit, range(4, 12)))
        model.gate.set()
        assert results([*first, *futures]) == [x * 10 for x in range(12)]
    assert model.batches[0] == [0, 1, 2, 3]
    assert [len(b) for b in model.batches[1:]] == [4, 4]
    assert sorted(x for b in model.batches[1:] for x in b) == list(range(4, 12))


def test_a_lone_input_runs_as_a_partial_batch_after_the_max_wait() -> None:
    model = Model()
    batcher: Batcher[int, int] = Batcher(model, batch_size=8, max_wait_s=0.05)
    assert batcher.submit(7).result(timeout=HANG_GUARD_S) == 70
    assert model.batches == [[7]]


def test_a_full_queue_blocks_submit_until_the_model_catches_up() -> None:
    with gated_model() as model:
        batcher: Batcher[int, int] = Batcher(model, batch_size=2, max_wait_s=0.0, max_queued=2)
        first = batcher.submit(0)
        assert model.started.wait(HANG_GUARD_S)  # the model holds [0]; the queue is empty
        queued = [batcher.submit(1), batcher.submit(2)]  # fills the queue
        submitted = threading.Event()
        late: list[Future[int]] = []

        def submit_one_more() -> None:
            late.append(batcher.submit(3))
            submitted.set()

        threading.Thread(target=submit_one_more, daemon=True).start()
        assert not submitted.wait(0.3), "submit returned while the queue was full"
        model.gate.set()
        assert submitted.wait(HANG_GUARD_S)
        assert results([first, *queued, *late]) == [0, 10, 20, 30]


def test_a_batch_the_model_fails_on_fails_only_its_own_futures() -> None:
    calls: list[list[int]] = []

    def run(inputs: list[int]) -> list[int]:
        calls.append(inputs)
        if len(calls) == 1:
            raise RuntimeError("out of memory")
        return [x + 1 for x in inputs]

    batcher: Batcher[int, int] = Batcher(run, batch_size=4, max_wait_s=0.0)
    failed = batcher.submit(1)
    with pytest.raises(RuntimeError, match="out of memory"):
        failed.result(timeout=HANG_GUARD_S)
    assert batcher.submit(2).result(timeout=HANG_GUARD_S) == 3


def test_an_exception_in_one_slot_fails_that_input_alone() -> None:
    def run(inputs: list[int]) -> list[int | Exception]:
        return [ValueError(f"corrupt {x}") if x < 0 else x for x in inputs]

    batcher: Batcher[int, int] = Batcher(run, batch_size=3, max_wait_s=10 * HANG_GUARD_S)
    good, bad, other = batcher.submit(1), batcher.submit(-1), batcher.submit(2)  # only a full batch can run
    assert results([good, other]) == [1, 2]
    with pytest.raises(ValueError, match="corrupt -1"):
        bad.result(timeout=HANG_GUARD_S)


def test_a_cancelled_input_is_never_run() -> None:
    with gated_model() as model:
        batcher: Batcher[int, int] = Batcher(model, batch_size=4, max_wait_s=0.0)
        first = batcher.submit(0)
        assert model.started.wait(HANG_GUARD_S)
        withdrawn, kept = batcher.submit(1), batcher.submit(2)
        assert withdrawn.cancel()
        model.gate.set()
        assert results([first, kept]) == [0, 20]
    with pytest.raises(CancelledError):
        withdrawn.result(timeout=0)
    assert 1 not in [x for batch in model.batches for x in batch]


def test_an_idle_inference_thread_ends_and_a_later_submit_starts_another() -> None:
    model = Model()
    batcher: Batcher[int, int] = Batcher(model, batch_size=2, max_wait_s=0.0, idle_exit_s=0.05, name="idle-test")
    assert batcher.submit(1).result(timeout=HANG_GUARD_S) == 10
    ends = time.monotonic() + HANG_GUARD_S
    while any(t.name == "idle-test" for t in threading.enumerate()) and time.monotonic() < ends:
        time.sleep(0.02)
    assert not any(t.name == "idle-test" for t in threading.enumerate())
    assert batcher.submit(2).result(timeout=HANG_GUARD_S) == 20
    assert model.batches == [[1], [2]]


def test_a_failing_metrics_hook_loses_no_batch() -> None:
    def record(size: int, seconds: float) -> None:
        raise RuntimeError("metrics registry is gone")

    batcher: Batcher[int, int] = Batcher(Model(), batch_size=2, max_wait_s=0.0, record=record)
    assert results([batcher.submit(1)]) == [10]
    assert results([batcher.submit(2)]) == [20]


def test_a_partial_batch_waits_for_inputs_a_chunk_still_expects() -> None:
    model = Model()
    # Without the expectation, 0 would run alone: its max wait is over before 1, 2, 3 arrive.
    batcher: Batcher[int, int] = Batcher(model, batch_size=4, max_wait_s=0.0, max_fill_wait_s=10 * HANG_GUARD_S)
    with batcher.expecting(4) as expected:
        futures = []
        for x in range(4):
            futures.append(batcher.submit(x))
            expected.arrived()
            time.sleep(0.05)
        assert results(futures) == [0, 10, 20, 30]
    assert model.batches == [[0, 1, 2, 3]]


def test_once_nothing_more_is_expected_a_partial_batch_runs() -> None:
    model = Model()
    batcher: Batcher[int, int] = Batcher(model, batch_size=4, max_wait_s=0.0, max_fill_wait_s=10 * HANG_GUARD_S)
    with batcher.expecting(3) as expected:
        first = batcher.submit(1)
        expected.arrived()
        time.sleep(0.05)
        assert not first.done()  # two more items are on their way
        expected.close()  # ...until the chunk says they are not (handed back, failed)
        assert first.result(timeout=HANG_GUARD_S) == 10  # well before the fill wait
    assert model.batches == [[1]]


def test_inputs_that_never_come_hold_a_batch_no_longer_than_the_fill_wait() -> None:
    model = Model()
    batcher: Batcher[int, int] = Batcher(model, batch_size=4, max_wait_s=0.0, max_fill_wait_s=0.05)
    expected = batcher.expecting(10)
    assert batcher.submit(5).result(timeout=HANG_GUARD_S) == 50
    expected.close()
    assert model.batches == [[5]]


def test_a_full_batch_sets_the_fill_wait_to_its_model_time() -> None:
    model = Model()
    batcher: Batcher[int, int] = Batcher(model, batch_size=2, max_wait_s=0.0, max_fill_wait_s=10 * HANG_GUARD_S)
    assert batcher.fill_wait_s == 10 * HANG_GUARD_S  # nothing timed yet: the cap
    with batcher.expecting(2) as expected:
        futures = [batcher.submit(x) for x in (1, 2)]
        expected.arrived()
        expected.arrived()
        results(futures)
    assert batcher.fill_wait_s < HANG_GUARD_S  # the stand-in model answers at once


def test_stop_lets_the_running_batch_finish_fails_the_queued_inputs_and_ends_the_thread() -> None:
    with gated_model() as model:
        batcher: Batcher[int, int] = Batcher(model, batch_size=2, max_wait_s=0.0, name="stop-test")
        running = [batcher.submit(x) for x in range(2)]
        assert model.started.wait(HANG_GUARD_S)  # the model is busy on [0, 1]
        queued = batcher.submit(2)
        stopper = threading.Thread(target=batcher.stop, kwargs={"timeout_s": HANG_GUARD_S})
        stopper.start()
        ends = time.monotonic() + HANG_GUARD_S
        while not batcher._stopping and time.monotonic() < ends:  # stop() has begun: release the model
            time.sleep(0.01)
        model.gate.set()
        stopper.join(HANG_GUARD_S)
    assert results(running) == [0, 10]
    with pytest.raises(RuntimeError, match="exiting"):
        queued.result(timeout=HANG_GUARD_S)
    assert not any(t.name == "stop-test" for t in threading.enumerate())
    assert batcher.submit(3).result(timeout=HANG_GUARD_S) == 30  # a later submit starts a new thread


def test_a_process_exits_cleanly_while_its_inference_thread_holds_tensors() -> None:
    # A daemon inference thread freeing a tensor while Python finalizes used to abort the process
    # (exit status 134); at exit every batcher is now stopped and joined first.
    import subprocess
    import sys

    script = (
        "import torch\n"
        "from workers.batching import Batcher\n"
        "batcher = Batcher(lambda xs: [x.sum() for x in xs], batch_size=4, max_wait_s=0.0, idle_exit_s=60)\n"
        "futures = [batcher.submit(torch.ones(3, 64, 64)) for _ in range(64)]\n"
        "print(float(futures[0].result(timeout=60)))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == str(3 * 64 * 64.0)
