"""A producer waiting on its job hears of the job's end from the broker, not on its next look (workers/jobends.py)."""

from __future__ import annotations

import threading
import time

from scanner.settings import Settings
from workers import jobends


def test_a_listener_wakes_when_its_job_is_announced_and_not_for_another(redis_url: str) -> None:
    settings = Settings.from_env({"DEEPSCAN_BROKER_URL": redis_url, "DEEPSCAN_QUEUE": "jobends-test"})
    listener = jobends.JobEndListener.open(settings)
    assert listener is not None
    try:
        threading.Timer(0.05, jobends.announce, (settings, 41)).start()  # another job's end
        threading.Timer(0.3, jobends.announce, (settings, 42)).start()
        started = time.monotonic()
        listener.wait(42, timeout_s=30.0)
        assert 0.25 < time.monotonic() - started < 20.0  # woken by job 42's word, not by 41's, not by the timer
        started = time.monotonic()
        listener.wait(42, timeout_s=0.2)  # no word: the timer still bounds the wait
        assert time.monotonic() - started >= 0.2
    finally:
        listener.close()


def test_without_a_redis_broker_there_is_no_listener_and_announcing_is_harmless() -> None:
    embedded = Settings.from_env({})
    assert jobends.JobEndListener.open(embedded) is None
    jobends.announce(embedded, 1)
    unreachable = Settings.from_env({"DEEPSCAN_BROKER_URL": "redis://127.0.0.1:1/0"})
    jobends.announce(unreachable, 1)  # best effort: logged, never raised
