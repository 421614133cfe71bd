"""Deadlines our own code enforces: trickling servers (headers, HTTP/1.0 and 1.1 bodies, S3), retries that
cannot fit, videos earning time by size, time spent waiting for the process left out."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from scanner.deadline import Deadline, ItemBudget
from scanner.errors import DeadlineExceededError, PermanentError, TransientError
from scanner.settings import Settings
from tests import media_factory
from tests.servers import http_server, trickling_s3_server
from workers import cutoff
from workers.fetch import fetch


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("served")
    media_factory.write_image(root / "img.png", size=(64, 64))
    with http_server(root) as base:
        yield base


def settings(tmp_path: Path, **env: str) -> Settings:
    return Settings.from_env({"DEEPSCAN_HOME": str(tmp_path), "DEEPSCAN_ALLOW_PRIVATE_URLS": "1", **env})


def test_a_server_trickling_bytes_ends_the_fetch_at_its_deadline(served: str, tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(DeadlineExceededError, match=r"image deadline of 1 s exceeded while fetching"):
        fetch(f"{served}/_trickle/0.2/img.png", settings(tmp_path, DEEPSCAN_ITEM_DEADLINE_S="1"))
    # A hang guard, not a speed check: without the deadline this fetch would take minutes.
    assert time.monotonic() - started < 60


@pytest.mark.parametrize("route", ["_trickle-headers", "_trickle10", "_trickle"])
def test_no_trickle_outlasts_the_image_deadline(served: str, tmp_path: Path, route: str) -> None:
    """Headers a byte a second, or an HTTP/1.0 or 1.1 body: the connection is cut at the deadline."""
    started = time.monotonic()
    with pytest.raises(DeadlineExceededError, match=r"^image deadline of 2 s exceeded while fetching"):
        fetch(f"{served}/{route}/1/img.png", settings(tmp_path, DEEPSCAN_ITEM_DEADLINE_S="2"))
    assert time.monotonic() - started < 2 + 2  # the bound: the deadline + 2 s


def test_an_s3_endpoint_trickling_its_object_is_cut_at_the_deadline(tmp_path: Path) -> None:
    image = media_factory.write_image(tmp_path / "img.png", size=(64, 64)).read_bytes()
    with trickling_s3_server({"img.png": image}, 1.0) as endpoint:
        config = settings(tmp_path, DEEPSCAN_ITEM_DEADLINE_S="2", DEEPSCAN_S3_ENDPOINT_URL=endpoint)
        started = time.monotonic()
        with pytest.raises(DeadlineExceededError, match=r"^image deadline of 2 s exceeded while fetching"):
            fetch("s3://bucket/img.png", config)
    assert time.monotonic() - started < 2 + 2


def test_a_stopping_worker_cuts_a_fetch_without_blaming_the_item(
    served: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cutoff, "_the_watchdog", None)  # a watchdog of this test's own: a stop is for good
    stop = threading.Timer(0.5, cutoff.cut_all)
    stop.start()
    try:
        with pytest.raises(TransientError, match="the worker is stopping"):
            fetch(f"{served}/_trickle/1/img.png", settings(tmp_path, DEEPSCAN_ITEM_DEADLINE_S="600"))
    finally:
        stop.join()


def test_a_silent_server_cannot_outlast_the_deadline_with_a_long_read_timeout(served: str, tmp_path: Path) -> None:
    config = settings(tmp_path, DEEPSCAN_ITEM_DEADLINE_S="1", DEEPSCAN_HTTP_READ_TIMEOUT_S="300")
    with pytest.raises(DeadlineExceededError):
        fetch(f"{served}/_stall/120/img.png", config)


def test_a_fetch_within_its_deadline_is_unaffected(served: str, tmp_path: Path) -> None:
    fetched = fetch(f"{served}/img.png", settings(tmp_path, DEEPSCAN_ITEM_DEADLINE_S="30"))
    assert fetched.kind == "image"
    assert fetched.data is not None


def test_deadline_errors_are_permanent_one_line_reasons() -> None:
    expired = Deadline(0.0, what="video", started=time.monotonic() - 1)
    with pytest.raises(PermanentError) as info:
        expired.check("sampling video frames")
    assert str(info.value) == "video deadline of 0 s exceeded while sampling video frames (DEEPSCAN_ITEM_DEADLINE_S)"
    Deadline.never().check()


def test_videos_earn_time_by_size_images_do_not() -> None:
    budget = ItemBudget(30.0, video_s_per_gb=300.0)
    assert budget.deadline("image", 1 << 30).seconds == 30.0
    assert budget.deadline("video", 1 << 30).seconds == pytest.approx(330.0)
    assert budget.deadline("video", 0).seconds == 30.0


def test_time_spent_waiting_for_the_process_is_not_the_items() -> None:
    budget = ItemBudget(1.0, started=time.monotonic() - 0.9)
    with budget.paused():
        time.sleep(0.3)  # past the deadline, were the wait counted
        assert not budget.current().expired()
    assert not budget.current().expired()
    assert budget.current().remaining() == pytest.approx(0.1, abs=0.09)


def test_an_item_is_an_image_until_its_bytes_say_it_is_a_video() -> None:
    budget = ItemBudget(30.0, video_s_per_gb=300.0)
    assert budget.current().reason().startswith("image deadline of 30 s")
    budget.learn("video", 1 << 30)
    assert budget.current().reason().startswith("video deadline of 330 s")
