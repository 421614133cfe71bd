"""The backbones a detector can be built on, each behind the same one-logit head.

torchvision: ResNet-18/34/50 and EfficientNet-B0/B4 (B4 is the backbone of the Self-Blended Images
paper and of the DFDC winners). timm: Xception (`xception`, timm's `legacy_xception`, the network
of the FaceForensics++ baselines) and ConvNeXt-Tiny (`convnext_tiny`).

ImageNet weights come through each library's own weights: torchvision's files into the torch cache
(scanner/detector.py downloads them), timm's through its own loader (the Hugging Face hub or a
release URL). Offline, both fail at once with one line naming what to do; a local weights file
(`--pretrained PATH`, a state dict saved from the same library's model) always works. Only the
backbone is taken from pretrained weights: the head always starts fresh.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import torch
import torchvision
from torch import nn

from scanner.errors import CheckpointError, ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)
DEFAULT_PROBE_TIMEOUT_S = 1.0  # how long to wait for the weights' host before calling it offline
HF_HUB_HOST = "huggingface.co"


@dataclass(frozen=True)
class Backbone:
    name: str
    library: str  # "torchvision" or "timm"
    library_name: str  # the model's name in its library
    head: str  # dotted path of the final nn.Linear, replaced by a one-logit head
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def create(self) -> nn.Module:
        """The network with random weights and the library's own head."""
        if self.library == "torchvision":
            factory: Callable[..., nn.Module] = getattr(torchvision.models, self.library_name)
            return factory(weights=None)
        model: nn.Module = _timm().create_model(self.library_name, pretrained=False)
        return model

    def imagenet_url(self) -> str:
        """Where torchvision's ImageNet weights for this backbone come from: the library's default
        weights for the model (IMAGENET1K_V2 for resnet50, IMAGENET1K_V1 for the others)."""
        if self.library != "torchvision":
            raise ConfigError(f"{self.name} takes its ImageNet weights through {self.library}, not torchvision")
        url: str = torchvision.models.get_model_weights(self.library_name).DEFAULT.url
        return url


BACKBONES: dict[str, Backbone] = {
    b.name: b
    for b in (
        Backbone("resnet50", "torchvision", "resnet50", "fc"),
        Backbone("resnet34", "torchvision", "resnet34", "fc"),
        Backbone("resnet18", "torchvision", "resnet18", "fc"),
        Backbone("efficientnet_b0", "torchvision", "efficientnet_b0", "classifier.1"),
        Backbone("efficientnet_b4", "torchvision", "efficientnet_b4", "classifier.1"),
        Backbone("xception", "timm", "legacy_xception", "fc", INCEPTION_MEAN, INCEPTION_STD),
        Backbone("convnext_tiny", "timm", "convnext_tiny", "head.fc"),
    )
}
ARCHS = tuple(BACKBONES)


def backbone(arch: str) -> Backbone:
    if arch not in BACKBONES:
        raise ConfigError(f"unknown architecture {arch!r}: use one of {', '.join(ARCHS)}")
    return BACKBONES[arch]


def with_one_logit(model: nn.Module, spec: Backbone) -> nn.Module:
    """Replace the library's classifier with a fresh single-logit Linear layer."""
    head = model.get_submodule(spec.head)
    if not isinstance(head, nn.Linear):
        raise TypeError(f"{spec.library} {spec.library_name} has no linear head at {spec.head}")
    model.set_submodule(spec.head, nn.Linear(head.in_features, 1))
    return model


def load_backbone(model: nn.Module, spec: Backbone, state: Mapping[str, torch.Tensor], *, source: str) -> None:
    """Load `state` into everything but the head; a mismatch is a one-line CheckpointError."""
    prefix = spec.head + "."
    backbone_state = {k: v for k, v in state.items() if not k.startswith(prefix)}
    expected = {k for k in model.state_dict() if not k.startswith(prefix)}
    missing, unexpected = sorted(expected - backbone_state.keys()), sorted(backbone_state.keys() - expected)
    if missing or unexpected:
        example = (missing or unexpected)[0]
        raise CheckpointError(
            f"{source} does not fit {spec.name}: {len(missing)} missing and {len(unexpected)} unexpected keys "
            f"(e.g. {example!r}); pass weights saved from {spec.library}'s {spec.library_name}"
        )
    try:
        model.load_state_dict(backbone_state, strict=False)
    except RuntimeError as exc:
        raise CheckpointError(f"{source} does not fit {spec.name}: {str(exc).splitlines()[1].strip()}") from None


def timm_imagenet_state_dict(spec: Backbone) -> dict[str, torch.Tensor]:
    """timm's ImageNet weights for `spec`, through timm's own loader (its cache, else a download).

    timm's hub client retries for most of a minute when offline; a one-second probe of the weights'
    host answers first, with one line saying what to do.
    """
    timm = _timm()
    cfg = timm.models.get_pretrained_cfg(spec.library_name)
    url = getattr(cfg, "url", "") or ""
    host = urlsplit(url).hostname if url else HF_HUB_HOST
    if host and not _cached(cfg) and not _reachable(host):
        raise CheckpointError(
            f"cannot download ImageNet weights for {spec.name} ({host} is unreachable): save "
            f"timm.create_model({spec.library_name!r}, pretrained=True).state_dict() to a file where you are "
            "online and pass --pretrained PATH, or pass --pretrained none"
        )
    try:
        model = timm.create_model(spec.library_name, pretrained=True)
    except Exception as exc:  # timm and its hub client raise many types; all mean "could not get the weights"
        raise CheckpointError(
            f"cannot load ImageNet weights for {spec.name}: {str(exc).splitlines()[0][:200]}; "
            "pass --pretrained PATH or --pretrained none"
        ) from None
    return dict(model.state_dict())


def _cached(cfg: Any) -> bool:
    """Whether timm will find the weights without the network (hub cache or torch hub cache)."""
    hub_id = getattr(cfg, "hf_hub_id", None)
    if hub_id:
        from huggingface_hub import try_to_load_from_cache

        return any(
            isinstance(try_to_load_from_cache(hub_id, name), str) for name in ("model.safetensors", "pytorch_model.bin")
        )
    url = getattr(cfg, "url", "") or ""
    return bool(url) and (Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]).is_file()


def _reachable(host: str) -> bool:
    try:
        with socket.create_connection((host, 443), timeout=DEFAULT_PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


def _timm() -> Any:
    try:
        import timm
    except ImportError:
        raise ConfigError("the xception and convnext_tiny backbones need timm: pip install timm") from None
    return timm
