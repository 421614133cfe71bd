"""The safetensors checkpoint: round trip, train/serve parity, atomic writes, refusals."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from scanner import checkpoint as ckpt
from scanner.checkpoint import load_checkpoint, read_checkpoint_meta, save_checkpoint
from scanner.detector import build_model, prepare_for_inference, preprocess_batch, score_batch
from scanner.errors import CheckpointError
from scanner.stems import SrmStem
from tests.training_helpers import randomize_batchnorm, tiny_meta, tiny_model, tiny_rgb, write_tiny_checkpoint

PARITY_ATOL = 1e-5


def test_round_trip_keeps_metadata_and_versions_by_file_hash(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    meta = tiny_meta(threshold=0.8125)
    version = save_checkpoint(path, tiny_model(), meta)
    loaded = load_checkpoint(path)
    assert version == loaded.model_version == hashlib.sha256(path.read_bytes()).hexdigest()
    assert loaded.meta == meta
    assert loaded.path == path
    assert not loaded.model.training
    assert read_checkpoint_meta(path) == (meta, version)


def test_loaded_checkpoint_scores_like_the_model_in_memory(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    model, _ = write_tiny_checkpoint(path, seed=3)
    cpu = torch.device("cpu")
    loaded = load_checkpoint(path, cpu)
    batch = preprocess_batch([tiny_rgb(i, fake=i % 2 == 1, size=80) for i in range(8)], loaded.meta.preprocessing)
    before = score_batch(prepare_for_inference(model, cpu), batch, cpu)
    after = score_batch(loaded.model, batch, cpu)
    assert np.abs(before - after).max() <= PARITY_ATOL
    assert before.std() > 0, "scores must vary for the comparison to mean anything"


def test_write_is_atomic_and_leaves_no_temp_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "model.safetensors"
    _, first = write_tiny_checkpoint(path, seed=0)

    def crash(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        write_tiny_checkpoint(path, seed=1)
    assert load_checkpoint(path).model_version == first, "the old checkpoint is intact"
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]


def _refusal(path: Path) -> str:
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_pickle_is_refused_without_unpickling(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    torch.save(tiny_model().state_dict(), path)
    assert "pickled PyTorch file" in _refusal(path)


def test_a_checkpoint_whose_header_length_starts_like_a_pickle_loads(tmp_path: Path) -> None:
    """A safetensors header of 0x..80 bytes opens with 0x80, a pickle's first byte: not a pickle."""
    path = tmp_path / "model.safetensors"
    write_tiny_checkpoint(path)
    data = path.read_bytes()
    size = int.from_bytes(data[:8], "little")
    padded = data[8 : 8 + size] + b" " * ((0x80 - size) % 256)  # JSON allows trailing spaces
    path.write_bytes(len(padded).to_bytes(8, "little") + padded + data[8 + size :])
    assert path.read_bytes()[0] == 0x80
    assert load_checkpoint(path).meta.arch == "resnet18"


def test_missing_file_is_refused(tmp_path: Path) -> None:
    assert "does not exist" in _refusal(tmp_path / "nope.safetensors")


def test_truncated_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    write_tiny_checkpoint(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert "corrupt or truncated" in _refusal(path)
    path.write_bytes(data[:50])
    assert "not a safetensors file" in _refusal(path)


def test_flipped_weight_bytes_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    write_tiny_checkpoint(path)
    data = bytearray(path.read_bytes())
    data[-1000] ^= 0x40
    path.write_bytes(bytes(data))
    assert "modified after it was written" in _refusal(path)


def test_edited_threshold_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    write_tiny_checkpoint(path)
    data = path.read_bytes()
    assert data.count(b'"threshold":"0.5"') == 1
    path.write_bytes(data.replace(b'"threshold":"0.5"', b'"threshold":"0.1"'))  # same length: still parses
    assert "modified after it was written" in _refusal(path)


@pytest.mark.parametrize("threshold", [float("nan"), float("inf"), -0.1, 1.5])
def test_a_threshold_that_is_not_a_probability_is_refused(tmp_path: Path, threshold: float) -> None:
    # Written with a valid digest, so only the threshold check stands between it and all-`real` verdicts.
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, tiny_model(), tiny_meta(threshold=threshold))

    assert f"checkpoint threshold {threshold!r} is not a probability in [0, 1]" in _refusal(path)
    with pytest.raises(CheckpointError, match="not a probability"):
        read_checkpoint_meta(path)


@pytest.mark.parametrize("threshold", [0.0, 1.0])
def test_thresholds_at_the_ends_of_the_range_load(tmp_path: Path, threshold: float) -> None:
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, tiny_model(), tiny_meta(threshold=threshold))
    assert read_checkpoint_meta(path)[0].threshold == threshold


def test_safetensors_without_deepscan_metadata_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "plain.safetensors"
    save_file(tiny_model().state_dict(), str(path))
    assert "not a deepscan checkpoint" in _refusal(path)
    save_file({"x": torch.zeros(1)}, str(path), metadata={"format": "something-else"})
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_weights_of_another_arch_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    meta = tiny_meta()
    meta.arch = "resnet34"
    save_checkpoint(path, tiny_model(), meta)
    assert "do not fit resnet34" in _refusal(path)


def test_metadata_is_plain_strings_with_every_documented_field(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    write_tiny_checkpoint(path)
    data = path.read_bytes()
    header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])["__metadata__"]
    for key in ("arch", "image_size", "mean", "std", "threshold", "target_fpr", "metrics", "label_meaning"):
        assert key in header
    for key in ("train_config", "created_at", ckpt.DIGEST_KEY, "format", "format_version"):
        assert key in header
    assert "1 = fake" in header["label_meaning"]


def _header(path: Path) -> dict[str, str]:
    data = path.read_bytes()
    metadata: dict[str, str] = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])["__metadata__"]
    return metadata


def residual_weights(model: nn.Module) -> torch.Tensor:
    """The first convolution's weights over the SRM residual channels (after the three RGB ones)."""
    conv = model.get_submodule("backbone.conv1")
    assert isinstance(conv, nn.Conv2d)
    return conv.weight[:, 3:]


def test_a_srm_stem_checkpoint_loads_with_its_stem_and_scores_alike(tmp_path: Path) -> None:
    path = tmp_path / "srm.safetensors"
    torch.manual_seed(0)
    model = randomize_batchnorm(build_model("resnet18", stem="srm"))
    with torch.no_grad():
        residual_weights(model).normal_(std=0.1)  # as if trained: the residuals count
    meta = replace(tiny_meta(), stem="srm")
    save_checkpoint(path, model, meta)
    assert _header(path)["stem"] == "srm"

    loaded = load_checkpoint(path)
    assert loaded.meta == meta
    assert isinstance(loaded.model, SrmStem)
    cpu = torch.device("cpu")
    batch = preprocess_batch([tiny_rgb(i, fake=i % 2 == 1, size=80) for i in range(8)], meta.preprocessing)
    expected = score_batch(prepare_for_inference(model, cpu), batch, cpu)
    assert np.abs(score_batch(loaded.model, batch, cpu) - expected).max() <= PARITY_ATOL
    with torch.no_grad():
        residual_weights(loaded.model).zero_()
    rgb_only = score_batch(loaded.model, batch, cpu)
    assert np.abs(rgb_only - expected).max() > PARITY_ATOL, "the loaded residual weights are really used"


def test_a_checkpoint_from_before_stems_loads_as_the_plain_model(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    write_tiny_checkpoint(path)
    assert "stem" not in _header(path), "a plain model's header is the one older versions wrote"
    loaded = load_checkpoint(path)
    assert loaded.meta.stem == "none"
    assert not isinstance(loaded.model, SrmStem)


def test_an_unknown_stem_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    ckpt.write_tensor_file(path, tiny_model().state_dict(), {**tiny_meta().to_metadata(), "stem": "dct"})
    assert "checkpoint input stem 'dct' is not one of none, srm" in _refusal(path)


def test_a_stem_checkpoint_relabelled_as_plain_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, build_model("resnet18", stem="srm"), tiny_meta())
    assert "do not fit resnet18" in _refusal(path)
