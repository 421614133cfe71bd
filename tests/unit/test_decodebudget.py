"""The process's decode budget: pixels in flight never exceed it, work waits for it, a giant still runs alone."""

from __future__ import annotations

import random
import threading

import pytest

from workers.decodebudget import DecodeBudget

JOIN_GUARD_S = 60.0  # a hang guard only


def test_pixels_held_at_once_never_exceed_the_budget() -> None:
    budget = DecodeBudget(1_000)
    lock = threading.Lock()
    held = [0]
    most = [0]

    def work(pixels: int) -> None:
        with budget.reserve(pixels):
            with lock:
                held[0] += pixels
                most[0] = max(most[0], held[0])
            threading.Event().wait(0.001)  # let the others run while these pixels are held
            with lock:
                held[0] -= pixels

    rng = random.Random(0)
    threads = [threading.Thread(target=work, args=(rng.randint(50, 600),)) for _ in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_GUARD_S)
    assert most[0] <= 1_000
    assert budget.peak_pixels <= 1_000
    assert most[0] > 600  # several images did decode at once when they fitted
    assert budget.held_pixels == 0


def test_work_that_does_not_fit_waits_until_pixels_are_given_back() -> None:
    budget = DecodeBudget(100)
    entered = threading.Event()
    first = budget.reserve(80)
    first.__enter__()
    waiter = threading.Thread(target=lambda: _enter_and_signal(budget, 30, entered))
    waiter.start()
    assert not entered.wait(0.2)  # 80 + 30 > 100: it waits rather than allocating
    first.__exit__(None, None, None)
    waiter.join(JOIN_GUARD_S)
    assert entered.is_set()


def test_an_item_larger_than_the_whole_budget_runs_alone() -> None:
    budget = DecodeBudget(100)
    with budget.reserve(10_000):
        assert budget.held_pixels == 100  # counted as the whole budget: nothing else decodes beside it
    entered = threading.Event()
    small = budget.reserve(10)
    small.__enter__()
    giant = threading.Thread(target=lambda: _enter_and_signal(budget, 10_000, entered))
    giant.start()
    assert not entered.wait(0.2)  # waits for the small one to finish
    small.__exit__(None, None, None)
    giant.join(JOIN_GUARD_S)
    assert entered.is_set()
    assert budget.peak_pixels == 100


def test_a_budget_needs_pixels() -> None:
    with pytest.raises(ValueError, match="at least one pixel"):
        DecodeBudget(0)


def _enter_and_signal(budget: DecodeBudget, pixels: int, entered: threading.Event) -> None:
    with budget.reserve(pixels):
        entered.set()
