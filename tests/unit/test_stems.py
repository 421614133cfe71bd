"""The SRM input stem: fixed high-pass residuals beside the RGB square, a widened first convolution
that leaves a pretrained backbone as it was, and a head that stays trainable behind it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from scanner.detector import build_model, head_path
from scanner.errors import ConfigError
from scanner.stems import SRM_CLIP, SrmResiduals, SrmStem
from training.train import set_backbone_trainable

KB, KV, HORIZONTAL = range(3)  # the residual channels, in the order scanner/stems.py stacks them
FLAT_ATOL = 1e-5  # the 1/12 of the KV kernel is not exact in binary


def flat(value: float = 0.7, size: int = 16) -> torch.Tensor:
    return torch.full((1, 3, size, size), value)


def test_a_flat_image_has_no_residual_up_to_its_borders() -> None:
    assert SrmResiduals()(flat()).abs().max() <= FLAT_ATOL


def test_a_vertical_edge_shows_in_the_horizontal_residual_at_the_edge_only() -> None:
    edge = flat()
    edge[..., 8:] += 2.0
    horizontal = SrmResiduals()(edge)[0, HORIZONTAL]
    assert torch.allclose(horizontal[:, 7], torch.full((16,), SRM_CLIP))  # 3 channels x 2.0 / 2, clipped
    assert torch.allclose(horizontal[:, 8], torch.full((16,), -SRM_CLIP))
    away = torch.cat([horizontal[:, :7], horizontal[:, 9:]], dim=1)
    assert away.abs().max() <= FLAT_ATOL


def test_the_square_filters_see_corners_and_every_residual_is_clipped() -> None:
    square = flat()
    square[..., 4:12, 4:12] += 5.0
    residuals = SrmResiduals()(square)[0]
    for channel in (KB, KV, HORIZONTAL):
        assert residuals[channel].abs().max() > 0.5
    assert residuals.abs().max() == SRM_CLIP


def test_normalisation_shifts_cancel_so_the_filters_can_read_the_normalised_input() -> None:
    x = torch.randn(2, 3, 24, 24) * 0.1
    shifted = x + torch.tensor([2.1, -2.0, 1.8]).view(1, 3, 1, 1)  # what a different per-channel mean does
    assert torch.allclose(SrmResiduals()(x), SrmResiduals()(shifted), atol=FLAT_ATOL)


def test_residuals_are_taken_in_fp32_under_bf16_autocast() -> None:
    x = torch.randn(1, 3, 24, 24) * 0.05 + 2.0  # small texture on a large normalised value
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = SrmResiduals()(x)
    assert under_autocast.dtype == torch.float32
    assert torch.equal(under_autocast, SrmResiduals()(x))


@pytest.mark.parametrize("arch", ["resnet18", "convnext_tiny"])
def test_a_srm_model_reads_the_normalised_rgb_batch_and_gives_one_logit(arch: str) -> None:
    if arch == "convnext_tiny":
        pytest.importorskip("timm")
    model = build_model(arch, stem="srm").eval()
    assert isinstance(model, SrmStem)
    first = next(m for m in model.backbone.modules() if isinstance(m, nn.Conv2d))
    assert (first.in_channels, first.weight.shape[1]) == (6, 6)
    with torch.inference_mode():
        logits = model(torch.randn(2, 3, 64, 64))
    assert logits.shape == (2, 1)
    assert torch.isfinite(logits).all()
    assert not any("kernels" in key for key in model.state_dict()), "the fixed filters are not weights"


def widened_conv(model: nn.Module) -> nn.Conv2d:
    conv = model.get_submodule("backbone.conv1")
    assert isinstance(conv, nn.Conv2d)
    return conv


def test_a_pretrained_backbone_behind_the_stem_starts_exactly_as_it_was(tmp_path: Path) -> None:
    torch.manual_seed(0)
    path = tmp_path / "resnet18.pth"
    torch.save(build_model("resnet18").state_dict(), path)  # a stand-in for ImageNet weights
    plain = build_model("resnet18", pretrained=str(path)).eval()
    srm = build_model("resnet18", pretrained=str(path), stem="srm").eval()
    srm.get_submodule(head_path("resnet18", "srm")).load_state_dict(plain.get_submodule("fc").state_dict())
    x = torch.randn(4, 3, 64, 64)
    conv = widened_conv(srm)
    assert conv.weight.shape[1] == 6
    assert torch.equal(conv.weight[:, 3:], torch.zeros_like(conv.weight[:, 3:]))
    with torch.inference_mode():
        assert torch.allclose(srm(x), plain(x), atol=1e-5)
        conv.weight[:, 3:].normal_(std=0.1)  # once the residual weights move, the residuals count
        assert not torch.allclose(srm(x), plain(x), atol=1e-3)


@pytest.mark.parametrize(("arch", "stem"), [("resnet18", "srm"), ("efficientnet_b0", "none")])
def test_a_frozen_backbone_leaves_only_the_head_trainable(arch: str, stem: str) -> None:
    model = build_model(arch, stem=stem)
    set_backbone_trainable(model, False, head=head_path(arch, stem))
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"{head_path(arch, stem)}.weight", f"{head_path(arch, stem)}.bias"}
    set_backbone_trainable(model, True, head=head_path(arch, stem))
    assert all(p.requires_grad for p in model.parameters())


def test_an_unknown_stem_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown input stem 'dct': use one of none, srm"):
        build_model("resnet18", stem="dct")
