"""Reused verdicts follow the new scan's options: re-derived for threshold and strategy, re-scored for fps.

Runs `deepscan scan` in embedded mode on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from deepscan.cli import cli
from scanner.aggregation import aggregate
from scanner.models import MediaItem
from tests import media_factory
from tests.pipeline_helpers import frames_of, items_of, write_tiny_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("reuse-ckpt") / "tiny.safetensors")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    media = tmp_path / "media"
    for i in range(3):
        media_factory.write_image(media / f"img_{i}.png", seed=i, face=i == 0)
    media_factory.write_video(media / "clip.mp4", seconds=12.0, fps=5.0, size=(96, 72))
    return media


def scan(runner: CliRunner, db_url: str, checkpoint: Path, *args: str) -> dict[str, Any]:
    result = runner.invoke(
        cli,
        ["--database-url", db_url, "scan", *args, "--checkpoint", str(checkpoint), "--format", "json"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.output.strip().splitlines()[-1]))


def by_name(db_url: str, job_id: int) -> dict[str, MediaItem]:
    return {Path(i.url).name: i for i in items_of(db_url, job_id)}


def frame_scores(db_url: str, item: MediaItem) -> list[float]:
    """Each sampled frame's score (the max over its faces), in time order."""
    best: dict[int, float] = {}
    for frame in frames_of(db_url, item.id):
        best[frame.frame_index] = max(frame.score, best.get(frame.frame_index, 0.0))
    return [best[i] for i in sorted(best)]


def test_threshold_and_strategy_changes_re_derive_the_verdict_without_inference(
    runner: CliRunner, db_url: str, checkpoint: Path, folder: Path, tmp_path: Path
) -> None:
    first = scan(runner, db_url, checkpoint, str(folder))
    assert first["reused"] == 0
    original = by_name(db_url, first["job_id"])

    second = scan(runner, db_url, checkpoint, str(folder), "--threshold", "0.001", "--strategy", "max")
    assert second["reused"] == second["total"] == 4
    for name, item in by_name(db_url, second["job_id"]).items():
        scores = frame_scores(db_url, item)
        assert scores == frame_scores(db_url, original[name]), "frame rows copied, not recomputed"
        assert item.reused_from_id == original[name].id
        assert item.score == pytest.approx(max(scores))
        assert item.verdict == "fake", "every score is above a 0.001 threshold"
        assert item.strategy == ("max" if item.kind == "video" else "max_face")
        assert item.frames_scanned == original[name].frames_scanned

    copy = shutil.copytree(folder, tmp_path / "same-bytes-elsewhere")  # new URLs: reused by content hash
    third = scan(runner, db_url, checkpoint, str(copy), "--strategy", "mean", "--threshold", "0.99")
    assert third["reused"] == third["total"] == 4
    video = by_name(db_url, third["job_id"])["clip.mp4"]
    scores = frame_scores(db_url, video)
    assert video.strategy == "mean"
    assert video.score == pytest.approx(aggregate(scores, "mean"))
    assert video.verdict == ("fake" if (video.score or 0.0) >= 0.99 else "real")


def test_a_change_of_fps_or_faces_scores_again(runner: CliRunner, db_url: str, checkpoint: Path, folder: Path) -> None:
    first = scan(runner, db_url, checkpoint, str(folder))
    faster = scan(runner, db_url, checkpoint, str(folder), "--fps", "2")
    items = by_name(db_url, faster["job_id"])
    assert items["clip.mp4"].reused_from_id is None, "fps changes which frames are scored"
    assert items["clip.mp4"].frames_scanned == 24
    assert by_name(db_url, first["job_id"])["clip.mp4"].frames_scanned == 12
    assert all(items[f"img_{i}.png"].reused_from_id is not None for i in range(3)), "fps does not change images"

    whole = scan(runner, db_url, checkpoint, str(folder), "--no-faces")
    assert whole["reused"] == 0, "cropping faces or not changes every score"
