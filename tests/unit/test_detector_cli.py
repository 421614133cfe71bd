"""`deepscan train / evaluate / calibrate / demo-data`: documented options, fast help, one-line mistakes;
and calibration's threshold on a folder of real images."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import training.train
from deepscan.cli import cli
from deepscan.cli import detector as commands
from scanner import detector, stems
from scanner.checkpoint import read_checkpoint_meta
from scanner.errors import ConfigError
from tests.training_helpers import tiny_rgb, write_jpeg, write_tiny_checkpoint
from training import config
from training.augment import AugmentConfig
from training.evaluate import evaluate
from training.selfblend import MASK_CHOICES


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CliRunner:
    monkeypatch.delenv("DEEPSCAN_CHECKPOINT", raising=False)
    monkeypatch.delenv("DEEPSCAN_DEVICE", raising=False)
    monkeypatch.setenv("DEEPSCAN_HOME", str(tmp_path / "home"))
    return CliRunner()


@pytest.mark.parametrize("command", commands.COMMANDS, ids=lambda c: c.name)
def test_every_option_is_documented(runner: CliRunner, command: click.Command) -> None:
    for param in command.params:
        if isinstance(param, click.Option):
            assert param.help, f"{command.name} {param.opts} has no help"
    result = runner.invoke(cli, [command.name or "", "--help"])
    assert result.exit_code == 0
    for param in command.params:
        if isinstance(param, click.Option):
            assert param.opts[0] in result.output


def test_registered_commands() -> None:
    assert {c.name for c in commands.COMMANDS} == {"train", "evaluate", "calibrate", "demo-data"}


def test_torch_free_names_match_the_model_module() -> None:
    assert config.ARCH_CHOICES == detector.ARCHS
    assert config.DEFAULT_ARCH == detector.DEFAULT_ARCH
    assert config.DEFAULT_IMAGE_SIZE_PX == detector.DEFAULT_IMAGE_SIZE_PX
    assert ("auto", *detector.CROP_MODES, "random") == config.CROP_CHOICES
    assert config.BLEND_MASK_CHOICES == MASK_CHOICES
    assert config.TTA_CHOICES == detector.TTA_MODES
    assert detector.Preprocessing().tta == config.DEFAULT_TTA
    assert config.STEM_CHOICES == detector.STEMS
    assert config.DEFAULT_STEM == stems.DEFAULT_STEM
    assert {f"{name}_p" for name in config.AUGMENT_NAMES} <= {f.name for f in fields(AugmentConfig)}


def test_the_commands_module_does_not_import_torch() -> None:
    code = "import sys, deepscan.cli.detector; assert 'torch' not in sys.modules and 'cv2' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_pretrained_value_is_a_usage_error(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(
        cli, ["train", "--data", str(tmp_path), "--out", str(tmp_path / "m.safetensors"), "--pretrained", "imagenet21k"]
    )
    assert result.exit_code == 2
    assert "neither 'imagenet', 'none' nor an existing weights file" in result.output


@pytest.mark.parametrize("value", ["jpeg", "sharpen=0.5", "jpeg=2", "jpeg=often"])
def test_a_bad_augmentation_probability_is_a_usage_error(runner: CliRunner, tmp_path: Path, value: str) -> None:
    result = runner.invoke(
        cli, ["train", "--data", str(tmp_path), "--out", str(tmp_path / "m.safetensors"), "--aug", value]
    )
    assert result.exit_code == 2
    assert f"{value!r} is not NAME=P with NAME one of flip, crop, jitter, blur, downscale, jpeg" in result.output


def test_checkpoint_must_be_safetensors(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(cli, ["train", "--data", str(tmp_path), "--out", str(tmp_path / "m.pt")])
    assert result.exit_code == 2
    assert ".safetensors" in result.output


def test_empty_data_folder_fails_with_one_line(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "m.safetensors"
    result = runner.invoke(cli, ["train", "--data", str(tmp_path), "--out", str(out), "--pretrained", "none"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: no train images under")
    assert result.output.count("\n") == 1


def test_evaluate_needs_a_checkpoint(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(cli, ["evaluate", "--data", str(tmp_path)])
    assert result.exit_code == 2
    assert "DEEPSCAN_CHECKPOINT" in result.output


def test_demo_data_writes_the_manifest(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(cli, ["demo-data", str(tmp_path / "demo"), "--count", "20", "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "demo" / "demo-manifest.json").is_file()
    assert "not a claim about real deepfakes" in result.output


def test_calibrate_sets_the_threshold_at_the_target_rate_of_a_real_folder(runner: CliRunner, tmp_path: Path) -> None:
    checkpoint, out = tmp_path / "m.safetensors", tmp_path / "calibrated.safetensors"
    write_tiny_checkpoint(checkpoint)
    for i in range(40):
        write_jpeg(tmp_path / "cal" / "valid" / "real" / f"{i}.jpg", tiny_rgb(i))
    args = ["--data", str(tmp_path / "cal"), "--checkpoint", str(checkpoint), "--out", str(out), "--target-fpr", "0.1"]
    result = runner.invoke(cli, ["calibrate", *args, "--device", "cpu", "--workers", "0"])
    assert result.exit_code == 0, result.output
    assert "40 real images at 0.1" in result.output
    assert "fewer than the 100" in result.output, "40 reals cannot support a 10 % rate: warned"
    meta, _ = read_checkpoint_meta(out)
    assert meta.target_fpr == 0.1
    assert meta.metrics["calibration"]["real"] == 40
    write_jpeg(tmp_path / "cal" / "valid" / "fake" / "0.jpg", tiny_rgb(0, fake=True))  # evaluate needs both classes
    scored = evaluate(tmp_path / "cal", out, split="valid", device="cpu", workers=0)
    assert scored.metrics.fp == 4, "exactly 10 % of the 40 reals are flagged at the new threshold"


def test_the_default_learning_rate_depends_on_how_the_backbone_starts(tmp_path: Path) -> None:
    def rate(**changes: object) -> float:
        return config.TrainConfig(data=tmp_path, out=tmp_path / "m.safetensors", **changes).learning_rate  # type: ignore[arg-type]

    assert rate(pretrained="none") == config.DEFAULT_LR_SCRATCH
    assert rate(pretrained="imagenet") == config.DEFAULT_LR_PRETRAINED
    assert rate(pretrained=str(tmp_path / "weights.pth")) == config.DEFAULT_LR_PRETRAINED
    assert rate(pretrained="none", lr=5e-5) == 5e-5  # a given rate always wins
    assert config.DEFAULT_LR_SCRATCH > config.DEFAULT_LR_PRETRAINED  # from scratch learns faster at a higher rate


def test_train_help_names_both_default_learning_rates(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["train", "--help"], terminal_width=200)
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert f"{config.DEFAULT_LR_SCRATCH:g} from scratch" in text
    assert f"{config.DEFAULT_LR_PRETRAINED:g} from pretrained weights" in text


def test_by_default_face_crops_are_resized_and_whole_images_keep_the_centre_window(tmp_path: Path) -> None:
    faces = config.TrainConfig(data=tmp_path, out=tmp_path / "m.safetensors")
    whole = config.TrainConfig(data=tmp_path, out=tmp_path / "m.safetensors", face_view="none")
    assert (faces.crop, faces.input_crop) == ("auto", "resize")  # a swap's blending border stays in view
    assert whole.input_crop == "center"  # generator traces everywhere: native resolution
    assert config.demo_config(tmp_path, tmp_path / "m.safetensors").input_crop == "resize"


def test_train_builds_its_config_with_the_stem(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[config.TrainConfig] = []

    def stop(run: config.TrainConfig) -> None:
        seen.append(run)
        raise ConfigError("stopped before training")

    monkeypatch.setattr(training.train, "train", stop)
    args = ["train", "--data", str(tmp_path), "--out", str(tmp_path / "m.safetensors"), "--pretrained", "none"]
    assert runner.invoke(cli, [*args, "--stem", "srm"]).exit_code == 1
    assert runner.invoke(cli, args).exit_code == 1
    assert [run.stem for run in seen] == ["srm", "none"]
    refused = runner.invoke(cli, [*args, "--stem", "dct"])
    assert refused.exit_code == 2
    assert "'dct' is not one of 'none', 'srm'" in refused.output


def test_the_resume_fingerprint_names_the_stem_only_when_there_is_one(tmp_path: Path) -> None:
    plain = config.TrainConfig(data=tmp_path, out=tmp_path / "m.safetensors")
    srm = config.TrainConfig(data=tmp_path, out=tmp_path / "m.safetensors", stem="srm")
    assert "stem" not in plain.fingerprint()  # states saved before the option existed still resume
    assert srm.fingerprint() == {**plain.fingerprint(), "stem": "srm"}
