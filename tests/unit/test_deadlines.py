"""Deadlines our own code enforces: a trickling server, retries that cannot fit, videos earning time by size."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from scanner.deadline import Deadline, ItemBudget
from scanner.errors import DeadlineExceededError, PermanentError
from scanner.settings import Settings
from tests import media_factory
from tests.servers import http_server
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
