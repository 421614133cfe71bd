"""Training end to end on demo data, on the CPU: it learns, it is calibrated, evaluate agrees with
the workers' scoring path, self-blending learns from real images alone, and resuming is exact."""

from __future__ import annotations

import csv
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from scanner.checkpoint import load_checkpoint, read_tensor_file, save_checkpoint
from scanner.cli import cli
from scanner.detector import build_model, preprocess, score_batch
from scanner.errors import ConfigError
from scanner.media import read_image_file
from tests.training_helpers import tiny_meta
from training import train as training
from training.config import TrainConfig, demo_config
from training.evaluate import evaluate
from training.state import state_path
from training.synthetic import write_demo_data
from training.train import TrainResult, metrics_log_path, train

pytestmark = pytest.mark.slow

# A few dozen tiny images trained for a few seconds: the tests assert that the loop learns (its
# loss falls, it separates the images it saw), that it calibrates and resumes, and that evaluate
# scores like the workers. How well the demo recipe generalises is a figure: bench/training.py.
DEMO_COUNT = 20  # images per class: 14 train, 3 valid, 3 test
TINY_SIZE = 32
PARITY_ATOL = 1e-5
UNTRAINED_SEEDS = (0, 1, 2)
CPU = torch.device("cpu")


def tiny_demo_config(data: Path, out: Path, *, self_blend: bool = False) -> TrainConfig:
    """The demo recipe shrunk to seconds: 32 px, small batches, every epoch kept (no early stop)."""
    config = demo_config(data, out, self_blend=self_blend)
    return dataclasses.replace(
        config, image_size=TINY_SIZE, epochs=10, batch_size=8, patience=10, workers=0, progress=False
    )


def train_losses(result: TrainResult) -> list[float]:
    return [json.loads(line)["train_loss"] for line in result.metrics_log.read_text().splitlines()]


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo-data")
    write_demo_data(out, count=DEMO_COUNT, seed=0)
    return out


@pytest.fixture(scope="module")
def trained(demo_data: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    return train(tiny_demo_config(demo_data, tmp_path_factory.mktemp("demo-model") / "demo.safetensors"))


def test_training_learns_what_an_untrained_model_cannot(
    demo_data: Path, trained: TrainResult, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    losses = train_losses(trained)
    untrained = []
    for seed in UNTRAINED_SEEDS:  # one random network can lean either way; several average to chance
        torch.manual_seed(seed)
        path = tmp_path / f"untrained-{seed}.safetensors"
        save_checkpoint(path, build_model("resnet18"), tiny_meta(size=TINY_SIZE))
        untrained.append(evaluate(demo_data, path, split="train", device="cpu", workers=0).metrics.roc_auc)
    after = evaluate(demo_data, trained.checkpoint, split="train", device="cpu", workers=0).metrics.roc_auc
    record_property("train_losses", [round(loss, 3) for loss in losses])
    record_property("train_split_roc_auc", {"trained": round(after, 4), "untrained": [round(a, 4) for a in untrained]})
    assert max(losses[-3:]) < losses[0] / 2, f"the training loss should fall: {losses}"
    assert after >= 0.9, "the trained model separates the images it learned from"
    assert float(np.mean(untrained)) <= 0.75, "an untrained model does not"


def test_checkpoint_is_calibrated_and_logged(demo_data: Path, trained: TrainResult) -> None:
    loaded = load_checkpoint(trained.checkpoint)
    assert loaded.meta.arch == "resnet18"
    assert loaded.meta.preprocessing.image_size == TINY_SIZE
    assert loaded.meta.target_fpr == 0.01
    assert 0 < loaded.meta.threshold <= 1
    assert loaded.meta.metrics["split"] == "valid"
    assert loaded.meta.metrics["epoch"] == trained.best_epoch
    assert loaded.meta.train_config["seed"] == 0
    valid = evaluate(demo_data, trained.checkpoint, split="valid", device="cpu", workers=0).metrics
    assert valid.fp / valid.real <= 0.01, "the threshold keeps validation false positives at the target"
    lines = [json.loads(line) for line in metrics_log_path(trained.checkpoint).read_text().splitlines()]
    assert [line["epoch"] for line in lines] == list(range(1, trained.epochs_run + 1))
    assert {"train_loss", "train_images_per_s", "valid_roc_auc", "lr", "best"} <= lines[0].keys()
    assert state_path(trained.checkpoint).is_file()


def test_evaluate_cli_scores_exactly_like_the_workers(demo_data: Path, trained: TrainResult, tmp_path: Path) -> None:
    scores_csv, plots = tmp_path / "scores.csv", tmp_path / "plots"
    args = ["evaluate", "--data", str(demo_data), "--checkpoint", str(trained.checkpoint), "--device", "cpu"]
    result = CliRunner().invoke(
        cli, [*args, "--format", "json", "--scores-out", str(scores_csv), "--plots", str(plots), "--workers", "0"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["real"] == report["fake"] == 3
    assert report["skipped"] == 0
    loaded = load_checkpoint(trained.checkpoint, CPU)
    for entry in report["files"]:  # one image at a time, as a worker might
        tensor = preprocess(read_image_file(entry["path"]), loaded.meta.preprocessing)
        worker_score = float(score_batch(loaded.model, tensor[None], CPU)[0])
        assert abs(worker_score - entry["score"]) <= PARITY_ATOL
    with scores_csv.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [float(r["score"]) for r in rows] == [f["score"] for f in report["files"]]
    for name in ("roc.png", "score_histogram.png"):
        assert (plots / name).read_bytes().startswith(b"\x89PNG")
    table = CliRunner().invoke(cli, args)
    assert table.exit_code == 0
    assert "ROC AUC" in table.output
    assert "TPR @ 0.1% FPR" in table.output


def test_self_blend_learns_from_real_images_alone(demo_data: Path, tmp_path: Path) -> None:
    real_only = tmp_path / "real-only"
    for split in ("train", "valid", "test"):
        (real_only / split).mkdir(parents=True)
        (real_only / split / "real").symlink_to(demo_data / split / "real", target_is_directory=True)
    result = train(tiny_demo_config(real_only, tmp_path / "sbi.safetensors", self_blend=True))
    losses = train_losses(result)
    assert max(losses[-3:]) < losses[0], f"the loss on self-blended fakes should fall: {losses}"
    assert load_checkpoint(result.checkpoint).meta.train_config["self_blend"] is True


def test_training_without_fakes_points_to_self_blend(demo_data: Path, tmp_path: Path) -> None:
    real_only = tmp_path / "real-only"
    for split in ("train", "valid"):
        (real_only / split).mkdir(parents=True)
        (real_only / split / "real").symlink_to(demo_data / split / "real", target_is_directory=True)
    with pytest.raises(ConfigError, match="--self-blend"):
        train(dataclasses.replace(demo_config(real_only, tmp_path / "m.safetensors"), progress=False))


def _tiny_config(data: Path, out: Path) -> TrainConfig:
    return TrainConfig(
        data=data,
        out=out,
        arch="resnet18",
        pretrained="none",
        image_size=32,
        epochs=2,
        batch_size=8,
        lr=1e-3,
        augment=True,
        device="cpu",
        patience=5,
        workers=0,
        progress=False,
    )


def test_resumed_training_ends_exactly_where_an_uninterrupted_run_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    write_demo_data(data, count=20, seed=5)
    straight = _tiny_config(data, tmp_path / "a" / "m.safetensors")
    train(straight)

    resumed = _tiny_config(data, tmp_path / "b" / "m.safetensors")
    real_validate, calls = training.validate, []

    def interrupt_second_epoch(*args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_validate(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(training, "validate", interrupt_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(resumed)
    monkeypatch.setattr(training, "validate", real_validate)
    result = train(dataclasses.replace(resumed, resume=True))

    assert result.epochs_run == 2
    a, b = read_tensor_file(state_path(straight.out)).tensors, read_tensor_file(state_path(resumed.out)).tensors
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert len(metrics_log_path(resumed.out).read_text().splitlines()) == 2
    with pytest.raises(ConfigError, match="seed was '0', now '1'"):
        train(dataclasses.replace(resumed, resume=True, seed=1))


def test_worker_pipeline_stores_the_scores_evaluate_reports(
    demo_data: Path, trained: TrainResult, sqlite_url: str
) -> None:
    """Train/serve parity through the real scanning pipeline (the code a worker runs), and every
    sampled frame of the demo video stored with its timestamp."""
    from tests.pipeline_helpers import frames_of, items_of

    report = evaluate(demo_data, trained.checkpoint, device="cpu", workers=0)
    expected = {Path(path).resolve().as_uri(): score for path, _label, score in report.files}
    listing = demo_data / "parity.txt"
    listing.write_text("\n".join(expected) + "\n" + str(demo_data / "videos" / "partly_fake_clip.mp4") + "\n")
    result = CliRunner().invoke(
        cli,
        ["--database-url", sqlite_url, "scan", "--from-file", str(listing), "--checkpoint", str(trained.checkpoint),
         "--device", "cpu", "--no-faces", "--fps", "12", "--max-frames", "100", "--format", "json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    items = {item.url: item for item in items_of(sqlite_url, json.loads(result.output.splitlines()[-1])["job_id"])}
    for url, score in expected.items():
        assert items[url].score == pytest.approx(score, abs=PARITY_ATOL)
    video = next(item for url, item in items.items() if url.endswith("partly_fake_clip.mp4"))
    frames = frames_of(sqlite_url, video.id)
    assert len(frames) == 36  # 3 s at 12 frames per second
    assert [round(f.timestamp_s * 12) for f in frames] == list(range(36))
