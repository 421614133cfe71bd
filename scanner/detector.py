"""The detector: one definition of the model, its preprocessing and its inference, shared by
training and the workers so that train and serve can never disagree.

The model is a backbone from scanner/backbones.py whose classifier is replaced by a single logit;
`score = sigmoid(logit)` is the probability that an image is manipulated (fake).
Preprocessing is a small frozen value that travels inside every checkpoint.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from scanner import backbones, stems
from scanner.errors import CheckpointError, ConfigError, check_choice
from scanner.precision import Precision, autocast

ARCHS = backbones.ARCHS
DEFAULT_ARCH = "resnet50"
DEFAULT_IMAGE_SIZE_PX = 224
IMAGENET_MEAN = backbones.IMAGENET_MEAN
IMAGENET_STD = backbones.IMAGENET_STD
PRETRAINED_CHOICES = ("none", "imagenet")
STEMS = stems.STEMS
DEFAULT_DOWNLOAD_TIMEOUT_S = 20.0
DEFAULT_DOWNLOAD_CHUNK_BYTES = 1 << 20

_HASH_PREFIX = re.compile(r"-([a-f0-9]{8,})\.")  # torchvision names files <arch>-<sha256 prefix>.pth
_RESIZE_MODES = ("bilinear",)
_DECODE_MODES = ("full", "reduced")
CROP_MODES = ("resize", "center")
TTA_MODES = ("none", "flip")
CENTER = (0.5, 0.5)
REDUCED_DECODE_MARGIN = 2  # reduced decoding keeps both sides >= this many times the model's input size


@dataclass(frozen=True)
class Preprocessing:
    """How an RGB image becomes the model's input, an `image_size` x `image_size` square scaled to
    [0, 1] and normalised with `mean` and `std` per channel. The square is, by `crop`:

    - "resize": the whole image resized to the square (bilinear, antialiased). Nothing at the
      borders is lost, but a large image is shrunk and with it the high-frequency traces that
      generator upsampling and blending leave.
    - "center": a square window at the image's native resolution, the centre one when scoring and
      a random one when training (Wang et al., "CNN-generated images are surprisingly easy to
      spot... for now", 2020). An image smaller than the square is first enlarged to fit it.
    """

    image_size: int = DEFAULT_IMAGE_SIZE_PX
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    resize: str = "bilinear"
    # "reduced": a JPEG much larger than the model's input is decoded at 1/2, 1/4 or 1/8 scale (the
    # decoder's own IDCT scaling, several times faster) while both sides stay >= 2 x image_size;
    # the resize above then does the rest. It changes pixels slightly, so it is the checkpoint's
    # choice, made at training time and applied by training, evaluation and the workers alike.
    # Checkpoints written before this field decode in full.
    decode: str = "full"
    crop: str = "resize"  # checkpoints written before this field resize
    # Test-time augmentation, applied by `score_batch` wherever the checkpoint scores (validation in
    # training, evaluate, calibrate, the workers): "flip" scores the mean logit of the square and its
    # mirror image; "none" the square alone (as checkpoints written before this field do).
    tta: str = "none"

    def __post_init__(self) -> None:
        if self.image_size < 16:
            raise ConfigError(f"image size {self.image_size} px is too small: use 16 px or more")
        check_choice(self.resize, _RESIZE_MODES, "resize mode")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ConfigError("preprocessing needs three means and three positive standard deviations")
        check_choice(self.decode, _DECODE_MODES, "decode mode")
        check_choice(self.crop, CROP_MODES, "crop mode")
        check_choice(self.tta, TTA_MODES, "test-time augmentation")

    @property
    def decode_min_side_px(self) -> int | None:
        """The smallest side an image may be decoded at for this preprocessing (None: decode in full)."""
        return REDUCED_DECODE_MARGIN * self.image_size if self.decode == "reduced" else None

    def to_metadata(self) -> dict[str, str]:
        """String fields for a safetensors header."""
        return {
            "image_size": str(self.image_size),
            "mean": ",".join(repr(v) for v in self.mean),
            "std": ",".join(repr(v) for v in self.std),
            "resize": self.resize,
            "decode": self.decode,
            "crop": self.crop,
            "tta": self.tta,
        }

    @classmethod
    def from_metadata(cls, meta: Mapping[str, str]) -> Preprocessing:
        """Read back what `to_metadata` wrote; a missing or malformed field raises CheckpointError."""
        try:
            return cls(
                image_size=int(meta["image_size"]),
                mean=_three_floats(meta["mean"]),
                std=_three_floats(meta["std"]),
                resize=meta.get("resize", "bilinear"),
                decode=meta.get("decode", "full"),
                crop=meta.get("crop", "resize"),
                tta=meta.get("tta", "none"),
            )
        except (KeyError, ValueError, ConfigError) as exc:
            raise CheckpointError(f"checkpoint preprocessing metadata is invalid ({exc})") from None


def _three_floats(text: str) -> tuple[float, float, float]:
    a, b, c = (float(part) for part in text.split(","))
    return (a, b, c)


def build_model(arch: str = DEFAULT_ARCH, pretrained: str = "none", stem: str = stems.DEFAULT_STEM) -> nn.Module:
    """A backbone from scanner/backbones.py with a one-logit head, behind an input stem.

    `pretrained` is "none" (random weights), "imagenet" (the library's ImageNet weights: torchvision's
    from the torch cache, downloaded once when online; timm's through its own loader) or the path of
    a local weights file from the same library's model (.pth/.pt state dict, read with
    `weights_only=True`, or .safetensors). Only the backbone is taken from pretrained weights; the
    head always starts fresh.

    `stem` is "none" (the backbone reads the normalised RGB square) or "srm" (scanner/stems.py: it
    also reads three fixed high-pass residuals of the square, through a first convolution widened
    after the pretrained weights are loaded, its new input channels zero). Either way the model
    takes the same normalised 3-channel batch.
    """
    spec = backbones.backbone(arch)
    stems.check_stem(stem)  # before any weights are downloaded
    model = spec.create()
    if pretrained == "imagenet":
        state = imagenet_state_dict(arch) if spec.library == "torchvision" else backbones.timm_imagenet_state_dict(spec)
        backbones.load_backbone(model, spec, state, source=f"ImageNet weights for {arch}")
    elif pretrained != "none":
        backbones.load_backbone(model, spec, read_weights_file(Path(pretrained)), source=str(pretrained))
    return stems.with_stem(backbones.with_one_logit(model, spec), stem)


def head_path(arch: str, stem: str = stems.DEFAULT_STEM) -> str:
    """The dotted path of the one-logit head in `build_model(arch, stem=stem)`: what stays trainable
    while the backbone is frozen."""
    head = backbones.backbone(arch).head
    return stems.BACKBONE_PREFIX + head if stem == "srm" else head


def read_weights_file(path: Path) -> dict[str, torch.Tensor]:
    """A torchvision state dict from `path` without unpickling arbitrary objects."""
    if not path.is_file():
        raise CheckpointError(f"pretrained weights file {path} does not exist: pass a path, 'imagenet' or 'none'")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch and safetensors raise many types for a bad file; all mean the same here
        raise CheckpointError(f"cannot read weights file {path}: {str(exc).splitlines()[0][:200]}") from None
    if isinstance(state, dict) and isinstance(state.get("model", state.get("state_dict")), dict):
        state = state.get("model", state.get("state_dict"))  # torchvision reference-script checkpoints
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"weights file {path} is not a state dict of tensors")
    return state


def imagenet_weights_path(arch: str) -> Path:
    """Where torchvision's ImageNet weights for `arch` live in the torch cache ($TORCH_HOME)."""
    url = backbones.backbone(arch).imagenet_url()
    return Path(str(torch.hub.get_dir())) / "checkpoints" / url.rsplit("/", 1)[-1]


def imagenet_state_dict(arch: str) -> dict[str, torch.Tensor]:
    """torchvision's ImageNet weights for `arch`, from the torch cache or downloaded into it.

    Offline, this fails within `DEFAULT_DOWNLOAD_TIMEOUT_S` with one line naming the file to
    place in the cache.
    """
    path = imagenet_weights_path(arch)
    if not path.is_file():
        url = backbones.backbone(arch).imagenet_url()
        try:
            _download(url, path)
        except (OSError, urllib.error.URLError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise CheckpointError(
                f"cannot download ImageNet weights for {arch} ({reason}): put {url} at {path}, "
                "or pass --pretrained PATH or --pretrained none"
            ) from None
    return read_weights_file(path)


def _download(url: str, dest: Path) -> None:
    """Download to a temp file beside `dest`, check torchvision's hash prefix, then rename."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=DEFAULT_DOWNLOAD_TIMEOUT_S) as resp:
            while chunk := resp.read(DEFAULT_DOWNLOAD_CHUNK_BYTES):
                digest.update(chunk)
                out.write(chunk)
        match = _HASH_PREFIX.search(dest.name)
        if match and not digest.hexdigest().startswith(match.group(1)):
            raise OSError(f"downloaded file does not match hash prefix {match.group(1)}")
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def preprocess(rgb: np.ndarray, prep: Preprocessing, *, window: tuple[float, float] = CENTER) -> torch.Tensor:
    """One HxWx3 uint8 RGB image to a normalised 3xSxS float32 tensor (deterministic).

    Exactly `normalize(resize_uint8(rgb, prep)[None], prep)[0]`: training and evaluation call this,
    the workers call the two halves (resize on the decode threads, normalise once per batch), and
    the result is the same to the bit. Training passes a random `window` for a "center" crop.
    """
    return normalize(resize_uint8(rgb, prep, window=window)[None], prep)[0]


def resize_uint8(rgb: np.ndarray, prep: Preprocessing, *, window: tuple[float, float] = CENTER) -> torch.Tensor:
    """One HxWx3 uint8 RGB image to the model's 3xSxS uint8 square, before any float conversion.

    A 64-megapixel image would otherwise become a 768 MB float32 copy only to be shrunk to S x S,
    and a batch waiting for the model holds a quarter of the bytes. Torch's uint8 antialiased
    bilinear resize is the float one rounded to whole pixel levels (within 1/255). `window` places
    the "center" crop (see `square`).
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got {rgb.dtype} array of shape {rgb.shape}")
    pixels = np.require(rgb, requirements=["C_CONTIGUOUS", "WRITEABLE"])  # torch refuses read-only arrays
    return square(torch.from_numpy(pixels).permute(2, 0, 1), prep, window=window)  # a channels-last view: no copy


def square(image: torch.Tensor, prep: Preprocessing, *, window: tuple[float, float] = CENTER) -> torch.Tensor:
    """A 3xHxW uint8 image tensor, on any device, to the model's contiguous 3xSxS uint8 square.

    The one place `Preprocessing.crop` is applied: the CPU path (`resize_uint8`) and a GPU decode
    path call it alike. `window` = (y, x) in [0, 1] places a "center" crop: (0.5, 0.5) is the
    centre (scoring); training draws it at random. "resize" ignores it.
    """
    size = prep.image_size
    x = image.unsqueeze(0)
    height, width = x.shape[-2:]
    if prep.crop == "center":
        if min(height, width) < size:  # enlarge to fit the square, keeping the aspect ratio
            scale = size / min(height, width)
            height, width = max(size, round(height * scale)), max(size, round(width * scale))
            x = F.interpolate(x, size=(height, width), mode=prep.resize, antialias=True, align_corners=False)
        top = min(height - size, max(0, round(window[0] * (height - size))))
        left = min(width - size, max(0, round(window[1] * (width - size))))
        x = x[..., top : top + size, left : left + size]
    elif (height, width) != (size, size):
        x = F.interpolate(x, size=(size, size), mode=prep.resize, antialias=True, align_corners=False)
    return x[0].contiguous()


def normalize(batch: torch.Tensor, prep: Preprocessing) -> torch.Tensor:
    """An Nx3xSxS uint8 batch to normalised float32, on the batch's own device (the GPU, for the workers)."""
    x = batch.float().div_(255.0)
    mean = torch.tensor(prep.mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(prep.std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def preprocess_batch(images: Sequence[np.ndarray], prep: Preprocessing) -> torch.Tensor:
    """Several images (any sizes) to one NxCxSxS batch, normalised once for the whole batch."""
    if not images:
        return torch.empty((0, 3, prep.image_size, prep.image_size), dtype=torch.float32)
    return normalize(torch.stack([resize_uint8(rgb, prep) for rgb in images]), prep)


def resolve_device(device: str) -> torch.device:
    """auto | cpu | cuda | cuda:N to a torch device; auto picks CUDA when one is available."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    base, _, index = device.partition(":")
    if base not in ("cpu", "cuda") or (index and (base != "cuda" or not index.isdigit())):
        raise ConfigError(f"invalid device {device!r}: use auto, cpu, cuda or cuda:N")
    if base == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available: use --device cpu")
    return torch.device(device)


def prepare_for_inference(model: nn.Module, device: torch.device) -> nn.Module:
    """Eval mode, on `device`, channels_last; call once per process after building or loading."""
    return model.eval().to(device).to(memory_format=torch.channels_last)


def score_batch(
    model: nn.Module, batch: torch.Tensor, device: torch.device, precision: Precision = "fp32", tta: str = "none"
) -> np.ndarray:
    """P(manipulated) for each image of an NxCxSxS batch, as float32 numpy in [0, 1], at `precision`
    (resolved by `scanner.precision.resolve_precision`; the caller records it with the scores).
    `tta` is the checkpoint's `Preprocessing.tta`: "flip" averages the logits of each square and its
    mirror image (one forward pass over both)."""
    if batch.shape[0] == 0:
        return np.empty((0,), dtype=np.float32)
    check_choice(tta, TTA_MODES, "test-time augmentation")
    with torch.inference_mode(), autocast(device, precision):
        x = batch.to(device=device, non_blocking=True)
        if tta == "flip":
            x = torch.cat([x, x.flip(3)])
        logits = model(x.contiguous(memory_format=torch.channels_last)).reshape(-1).float()
        if tta == "flip":
            logits = logits.reshape(2, -1).mean(0)
    return torch.sigmoid(logits).cpu().numpy().astype(np.float32, copy=False)
