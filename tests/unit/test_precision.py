"""Precision chosen by the hardware: bf16 where the device runs it natively, fp32 elsewhere."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from scanner import precision
from scanner.checkpoint import CheckpointMeta, load_checkpoint, save_checkpoint
from scanner.detector import Preprocessing, build_model, prepare_for_inference, score_batch
from scanner.errors import CheckpointError, ConfigError
from scanner.settings import Settings

CPU = torch.device("cpu")
ZEN4 = frozenset({"avx2", "avx512f", "avx512_bf16", "avx512_vnni"})
SAPPHIRE_RAPIDS = frozenset({"avx2", "avx512f", "amx_tile", "amx_bf16"})
ZEN3 = frozenset({"avx2", "fma", "sse4_2"})
SKYLAKE_X = frozenset({"avx2", "avx512f", "avx512bw", "avx512_vnni"})


@pytest.mark.parametrize(
    ("flags", "native"), [(ZEN4, True), (SAPPHIRE_RAPIDS, True), (ZEN3, False), (SKYLAKE_X, False)]
)
def test_auto_is_bf16_only_on_cpus_that_do_bf16_in_hardware(
    monkeypatch: pytest.MonkeyPatch, flags: frozenset[str], native: bool
) -> None:
    monkeypatch.setattr(precision, "cpu_flags", lambda *_: flags)
    assert precision.cpu_has_native_bf16() is native
    assert precision.resolve_precision("auto", CPU) == ("bf16" if native else "fp32")
    # Asked for by name, either precision runs whatever the processor.
    assert precision.resolve_precision("fp32", CPU) == "fp32"
    assert precision.resolve_precision("bf16", CPU) == "bf16"
    assert ("(no native bf16)" in precision.describe("fp32", CPU)) is not native


def test_cpu_flags_are_read_from_cpuinfo(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512_bf16\n\nprocessor\t: 1\n")
    assert precision.cpu_flags(cpuinfo) == frozenset({"fpu", "avx2", "avx512_bf16"})
    assert precision.cpu_flags(tmp_path / "missing") is None


def test_unknown_precision_is_refused_by_settings_and_resolution() -> None:
    with pytest.raises(ConfigError, match="invalid precision 'fp16': use auto, fp32, bf16"):
        Settings.from_env({"DEEPSCAN_PRECISION": "fp16"})
    with pytest.raises(ConfigError, match="invalid precision"):
        precision.resolve_precision("half", CPU)
    assert Settings.from_env({}).precision == "auto"
    assert Settings.from_env({"DEEPSCAN_PRECISION": "fp32"}).precision == "fp32"


def test_bf16_scores_stay_close_to_fp32_and_fp32_is_the_default() -> None:
    torch.manual_seed(0)
    model = prepare_for_inference(build_model("resnet18", pretrained="none"), CPU)
    batch = torch.randn(6, 3, 64, 64)
    fp32 = score_batch(model, batch, CPU)
    assert np.array_equal(fp32, score_batch(model, batch, CPU, "fp32"))
    bf16 = score_batch(model, batch, CPU, "bf16")
    assert bf16.dtype == np.float32
    assert np.all(np.isfinite(bf16))
    assert np.max(np.abs(bf16 - fp32)) < 0.05


def test_checkpoint_records_the_precision_its_threshold_was_calibrated_in(tmp_path: Path) -> None:
    meta = CheckpointMeta(
        arch="resnet18", preprocessing=Preprocessing(image_size=32), threshold=0.5, target_fpr=0.01, precision="bf16"
    )
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, build_model("resnet18", pretrained="none"), meta)
    assert load_checkpoint(path, CPU).meta.precision == "bf16"
    old = CheckpointMeta.from_metadata({k: v for k, v in meta.to_metadata().items() if k != "precision"})
    assert old.precision is None  # written before precision was recorded
    with pytest.raises(CheckpointError, match="precision 'int8'"):
        CheckpointMeta.from_metadata({**meta.to_metadata(), "precision": "int8"})
