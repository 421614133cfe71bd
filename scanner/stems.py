"""Input stems: what a backbone sees besides the normalised RGB square.

`srm` adds three fixed high-pass residual maps (the SRM filters of Fridrich & Kodovsky, "Rich Models
for Steganalysis of Digital Images", 2012, as used by Luo et al., "Generalizing Face Forgery
Detection with High-frequency Features", CVPR 2021). Blending boundaries and resampling leave
traces in an image's noise residual that an ImageNet-style RGB stem, tuned to object shape, tends
to wash out; a fixed filter hands them to the first convolution directly.

The model's input stays the normalised 3-channel square, so every caller (training, evaluate, the
workers' Scorer, the GPU decode path) is unchanged: the stem computes the residuals itself and
feeds RGB + residuals (6 channels) to a backbone whose first convolution was widened to take them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from scanner.errors import check_choice

STEMS = ("none", "srm")
DEFAULT_STEM = "none"
SRM_CLIP = 3.0  # residuals are clipped to [-3, 3], about the range of normalised RGB
BACKBONE_PREFIX = "backbone."  # where SrmStem keeps the backbone: its state dict keys start with this
RGB_CHANNELS = 3

# The usual three-filter set of public SRM-stem code, each scaled by its own quantisation step:
# KB (3x3 second order in both directions) / 4, KV (5x5) / 12, and the second-order horizontal
# [1, -2, 1] / 2, the smaller two zero-padded to 5x5. Every kernel sums to zero.
_SRM_KB = [[0, 0, 0, 0, 0], [0, -1, 2, -1, 0], [0, 2, -4, 2, 0], [0, -1, 2, -1, 0], [0, 0, 0, 0, 0]]
_SRM_KV = [[-1, 2, -2, 2, -1], [2, -6, 8, -6, 2], [-2, 8, -12, 8, -2], [2, -6, 8, -6, 2], [-1, 2, -2, 2, -1]]
_SRM_HORIZONTAL = [[0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 1, -2, 1, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]]
_SRM_SCALES = (4.0, 12.0, 2.0)
SRM_KERNEL_PX = 5
SRM_CHANNELS = len(_SRM_SCALES)


def srm_kernels() -> torch.Tensor:
    """The three 5x5 SRM kernels as a 3 x 3 x 5 x 5 conv weight: each output sums its filter over the
    three input channels, as public SRM-stem code does (one residual of R + G + B per filter)."""
    kernels = torch.tensor([_SRM_KB, _SRM_KV, _SRM_HORIZONTAL], dtype=torch.float32)
    kernels /= torch.tensor(_SRM_SCALES).view(3, 1, 1)
    return kernels.unsqueeze(1).repeat(1, RGB_CHANNELS, 1, 1)


class SrmResiduals(nn.Module):
    """N x 3 x S x S normalised RGB to N x 3 x S x S SRM residuals, clipped to +-SRM_CLIP.

    The filters run on the normalised input as it is: they are linear and sum to zero, so the
    per-channel mean subtracted by normalisation cancels, and the per-channel 1/std only weighs the
    channels (a backbone with a larger std, Xception's 0.5, sees residuals about half as large). The
    border is replicated, not zero-padded, so a flat image gives zero residuals up to its edges.
    """

    kernels: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        # Not persistent: fixed constants, not learnt, so checkpoints hold only the backbone's weights.
        self.register_buffer("kernels", srm_kernels(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # In fp32 even under bf16 autocast: a residual is a small difference of large values, which
        # bf16's 8-bit mantissa would round away; the clipped result itself is safe to cast.
        with torch.autocast(device_type=x.device.type, enabled=False):
            half = SRM_KERNEL_PX // 2
            padded = F.pad(x.float(), (half, half, half, half), mode="replicate")
            return F.hardtanh(F.conv2d(padded, self.kernels.float()), -SRM_CLIP, SRM_CLIP)


class SrmStem(nn.Module):
    """A backbone that sees the RGB square and its three SRM residuals (6 input channels).

    Takes the plain backbone and widens its first convolution in place (`widen_first_conv`), so a
    pretrained backbone starts out computing exactly what it did.
    """

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.residuals = SrmResiduals()
        self.backbone = widen_first_conv(backbone, extra_channels=SRM_CHANNELS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.backbone(torch.cat([x, self.residuals(x).to(x.dtype)], dim=1))
        return out


def check_stem(stem: str) -> None:
    """Raise ConfigError for a stem name not in STEMS."""
    check_choice(stem, STEMS, "input stem")


def with_stem(model: nn.Module, stem: str) -> nn.Module:
    """`model` behind the named input stem ("none": the model itself)."""
    check_stem(stem)
    return SrmStem(model) if stem == "srm" else model


def first_rgb_conv(model: nn.Module) -> nn.Conv2d:
    """The convolution that reads the image: the first nn.Conv2d (in registration order, which is
    forward order for every backbone in scanner/backbones.py) taking three ungrouped channels.
    torchvision's ResNets name it `conv1`; EfficientNet `features.0.0`, ConvNeXt `stem.0`."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d) and module.in_channels == RGB_CHANNELS and module.groups == 1:
            return module
    raise TypeError(f"{type(model).__name__} has no convolution over 3 input channels to widen")


def widen_first_conv(model: nn.Module, *, extra_channels: int) -> nn.Module:
    """Give the image-reading convolution `extra_channels` more inputs after the RGB ones, their
    weights zero: the model computes exactly what it did (pretrained weights stay intact) and
    learns from the first step how much to use the new channels (their gradients are not zero).

    The convolution is widened in place, keeping its class (timm's padding variants) and its
    parameter names, so the backbone's state dict keys are the plain model's.
    """
    conv = first_rgb_conv(model)
    weight = conv.weight.detach()
    extra = weight.new_zeros((weight.shape[0], extra_channels, *weight.shape[2:]))
    conv.weight = nn.Parameter(torch.cat([weight, extra], dim=1))
    conv.in_channels += extra_channels
    return model
