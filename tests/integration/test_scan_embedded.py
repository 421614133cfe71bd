"""`deepscan scan` in embedded mode (no broker): the whole pipeline in-process, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner

from deepscan.cli import cli
from scanner.aggregation import DEFAULT_VIDEO_STRATEGY
from scanner.precision import resolve_precision
from tests import media_factory
from tests.pipeline_helpers import frames_of, items_of, write_tiny_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[media_factory.BadInput]]:
    folder = tmp_path_factory.mktemp("mixed")
    media_factory.write_mixed_folder(folder, images=21, videos=2)
    return folder, media_factory.write_bad_inputs(folder)


def scan(runner: CliRunner, db_url: str, *args: str) -> dict[str, Any]:
    result = runner.invoke(cli, ["--database-url", db_url, "scan", *args, "--format", "json"], catch_exceptions=False)
    assert result.exit_code in (0, 3), result.output
    summary: dict[str, Any] = json.loads(result.output.strip().splitlines()[-1])
    summary["exit_code"] = result.exit_code
    return summary


def test_mixed_folder_every_item_gets_a_verdict_or_a_reason(
    runner: CliRunner, db_url: str, checkpoint: Path, mixed_folder: tuple[Path, list[media_factory.BadInput]]
) -> None:
    folder, bad = mixed_folder
    summary = scan(runner, db_url, str(folder), "--checkpoint", str(checkpoint))
    assert summary["exit_code"] == 3  # done, with item errors
    assert summary["total"] == 21 + 2 + len(bad)
    assert summary["errors"] == len(bad)
    items = {Path(item.url.removeprefix("file://")).name: item for item in items_of(db_url, int(summary["job_id"]))}
    for case in bad:
        item = items[case.path.name]
        assert item.status == "error"
        assert item.error is not None
        assert case.reason in item.error
        assert "\n" not in item.error
    good = [item for name, item in items.items() if name not in {c.path.name for c in bad}]
    assert all(item.status == "done" for item in good)
    for item in good:
        assert item.score is not None
        assert 0.0 <= item.score <= 1.0
        assert item.verdict == ("fake" if item.score >= 0.5 else "real")
        assert item.model_version is not None
        assert len(item.model_version) == 64
    videos = [item for item in good if item.kind == "video"]
    assert len(videos) == 2
    for video in videos:
        frames = frames_of(db_url, video.id)
        stamps = sorted({f.timestamp_s for f in frames})
        assert len(stamps) >= 3
        assert stamps == sorted(stamps)
        assert len(set(stamps)) == len(stamps)
        assert video.strategy == DEFAULT_VIDEO_STRATEGY
        assert video.duration_s == pytest.approx(3.0, abs=0.2)


def test_same_source_again_reuses_verdicts_and_rescan_scores_again(
    runner: CliRunner, db_url: str, checkpoint: Path, tmp_path: Path
) -> None:
    media_factory.write_mixed_folder(tmp_path, images=6, videos=1)
    first = scan(runner, db_url, str(tmp_path), "--checkpoint", str(checkpoint), "--no-faces")
    assert first["reused"] == 0
    assert first["done"] == 7

    second = scan(runner, db_url, str(tmp_path), "--checkpoint", str(checkpoint), "--no-faces")
    assert second["done"] == 7
    assert second["reused"] == 7  # no inference at all
    first_scores = {i.url: i.score for i in items_of(db_url, int(first["job_id"]))}
    second_items = items_of(db_url, int(second["job_id"]))
    assert {i.url: i.score for i in second_items} == first_scores
    video = next(i for i in second_items if i.kind == "video")
    assert frames_of(db_url, video.id), "a reused video keeps its timeline"

    third = scan(runner, db_url, str(tmp_path), "--checkpoint", str(checkpoint), "--no-faces", "--rescan")
    assert third["reused"] == 0
    assert third["done"] == 7


def test_missing_path_is_a_usage_error(runner: CliRunner, sqlite_url: str, checkpoint: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        cli, ["--database-url", sqlite_url, "scan", str(tmp_path / "nope"), "--checkpoint", str(checkpoint)]
    )
    assert result.exit_code == 2
    assert "no such file or directory" in result.output


def test_no_checkpoint_says_how_to_get_one(runner: CliRunner, sqlite_url: str, tmp_path: Path) -> None:
    media_factory.write_mixed_folder(tmp_path, images=1, videos=0)
    result = runner.invoke(cli, ["--database-url", sqlite_url, "scan", str(tmp_path)])
    assert result.exit_code == 2  # a usage error, as in every command that loads a model
    assert "no checkpoint configured" in result.output
    assert "deepscan demo" in result.output


def test_each_verdict_records_the_precision_it_was_scored_at(
    runner: CliRunner, db_url: str, checkpoint: Path, tmp_path: Path
) -> None:
    media_factory.write_mixed_folder(tmp_path, images=2, videos=0)
    auto = scan(runner, db_url, str(tmp_path), "--checkpoint", str(checkpoint), "--no-faces")
    expected = resolve_precision("auto", torch.device("cpu"))  # what this machine's CPU runs natively
    assert {item.precision for item in items_of(db_url, int(auto["job_id"]))} == {expected}
    other = "fp32" if expected == "bf16" else "bf16"
    rescanned = scan(runner, db_url, str(tmp_path), "--checkpoint", str(checkpoint), "--no-faces", "--rescan",
                     "--precision", other)  # fmt: skip
    assert {item.precision for item in items_of(db_url, int(rescanned["job_id"]))} == {other}
    reused = scan(runner, db_url, str(tmp_path), "--checkpoint", str(checkpoint), "--no-faces")
    assert reused["reused"] == 2
    assert {item.precision for item in items_of(db_url, int(reused["job_id"]))} == {other}  # the source's own
