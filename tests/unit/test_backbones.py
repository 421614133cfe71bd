"""Every backbone the field uses trains one step behind the same one-logit head and round-trips
through a checkpoint; offline, ImageNet weights fail at once with one line."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from scanner import backbones
from scanner.checkpoint import CheckpointMeta, load_checkpoint, save_checkpoint
from scanner.detector import Preprocessing, build_model, score_batch
from scanner.errors import CheckpointError

NEW_BACKBONES = ("efficientnet_b0", "efficientnet_b4", "xception", "convnext_tiny")
SIZE = 64  # xception's stem needs a little more than 32 px


@pytest.mark.parametrize("arch", NEW_BACKBONES)
def test_a_backbone_trains_a_step_and_round_trips(arch: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model(arch)
    x, y = torch.randn(2, 3, SIZE, SIZE), torch.tensor([0.0, 1.0])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x).reshape(-1), y)
    torch.autograd.backward(loss)
    optimizer.step()
    assert torch.isfinite(loss)

    spec = backbones.backbone(arch)
    meta = CheckpointMeta(
        arch=arch, preprocessing=Preprocessing(SIZE, spec.mean, spec.std), threshold=0.5, target_fpr=0.01
    )
    path = tmp_path / f"{arch}.safetensors"
    save_checkpoint(path, model, meta)
    loaded = load_checkpoint(path)
    model.eval()
    with torch.inference_mode():
        expected = torch.sigmoid(model(x).float().reshape(-1)).numpy()
    scores = score_batch(loaded.model, x, torch.device("cpu"))
    assert scores.shape == (2,)
    assert scores == pytest.approx(expected, abs=1e-5)
    assert loaded.meta.preprocessing.mean == spec.mean


@pytest.mark.parametrize("arch", ["xception", "convnext_tiny"])
def test_offline_imagenet_weights_fail_fast_with_one_line(arch: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backbones, "_reachable", lambda host: False)  # this machine may or may not be online
    monkeypatch.setattr(backbones, "_cached", lambda cfg: False)
    start = time.monotonic()
    with pytest.raises(CheckpointError, match="cannot download ImageNet weights") as failure:
        build_model(arch, pretrained="imagenet")
    assert time.monotonic() - start < 5  # a hang guard: the real failure takes milliseconds
    assert "\n" not in str(failure.value)
    assert "--pretrained PATH" in str(failure.value)


def test_weights_saved_from_the_library_model_load_as_a_local_file(tmp_path: Path) -> None:
    timm = pytest.importorskip("timm")
    source = timm.create_model("convnext_tiny", pretrained=False)
    path = tmp_path / "convnext.pth"
    torch.save(source.state_dict(), path)
    model = build_model("convnext_tiny", pretrained=str(path))
    assert torch.equal(model.state_dict()["stem.0.weight"], source.state_dict()["stem.0.weight"])
    with pytest.raises(CheckpointError, match="does not fit xception"):
        build_model("xception", pretrained=str(path))
