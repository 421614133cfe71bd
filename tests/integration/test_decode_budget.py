"""A worker's decoded pixels in flight stay within DEEPSCAN_DECODE_BUDGET_MPIX, across fetch threads (issue 21).

Eight 0.3-megapixel PNGs served over loopback HTTP (so the chunk runs 8 fetch threads), scanned in
embedded mode with a budget of 0.7 megapixels: every decode is counted while it runs, and at no
moment may the pixels being decoded exceed the budget; every item still ends `done`.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from deepscan.cli import cli
from scanner.media import decode_image
from tests import media_factory
from tests.pipeline_helpers import items_of, latest_job, write_tiny_checkpoint
from tests.servers import http_server

IMAGE_SIZE_PX = (600, 500)  # 0.3 megapixels
BUDGET_MPIX = 0.7  # two such images fit at once, three do not


class DecodeCounter:
    """Wraps the workers' image decoder: the pixels being decoded right now, and the most at once."""

    def __init__(self, decode: Any) -> None:
        self._decode = decode
        self._lock = threading.Lock()
        self.now = 0
        self.most = 0
        self.calls = 0

    def __call__(self, data: bytes, **kwargs: Any) -> np.ndarray:
        pixels = IMAGE_SIZE_PX[0] * IMAGE_SIZE_PX[1]
        with self._lock:
            self.now += pixels
            self.most = max(self.most, self.now)
            self.calls += 1
        try:
            threading.Event().wait(0.05)  # hold the pixels a moment, as a large image would
            return np.asarray(self._decode(data, **kwargs))
        finally:
            with self._lock:
                self.now -= pixels


def test_decoded_pixels_in_flight_never_exceed_the_budget(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = tmp_path / "served"
    for i in range(8):
        media_factory.write_flat_png(served / f"img_{i}.png", IMAGE_SIZE_PX, colour=(30 * i, 100, 200))
    counter = DecodeCounter(decode_image)
    monkeypatch.setattr("workers.analysis.decode_image", counter)
    monkeypatch.setenv("DEEPSCAN_DECODE_BUDGET_MPIX", str(BUDGET_MPIX))
    monkeypatch.setenv("DEEPSCAN_ALLOW_PRIVATE_URLS", "1")
    monkeypatch.setenv("DEEPSCAN_FETCH_THREADS", "8")
    checkpoint = write_tiny_checkpoint(tmp_path / "tiny.safetensors")
    db_url = f"sqlite:///{tmp_path / 'scan.db'}"
    with http_server(served) as base:
        url_list = tmp_path / "urls.txt"
        url_list.write_text("".join(f"{base}/img_{i}.png\n" for i in range(8)))
        result = runner.invoke(
            cli,
            [
                "--database-url",
                db_url,
                "scan",
                "--from-file",
                str(url_list),
                "--checkpoint",
                str(checkpoint),
                "--no-faces",
            ],
            catch_exceptions=False,
        )
    assert result.exit_code == 0, result.output
    job_id = latest_job(db_url).id
    assert [item.status for item in items_of(db_url, job_id)] == ["done"] * 8
    assert counter.calls == 8
    assert counter.most <= BUDGET_MPIX * 1_000_000  # without the budget, 8 threads decode at once
