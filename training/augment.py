"""Training-time augmentation for robustness to what platforms do to uploads.

Flips, a random resized crop, mild colour jitter, blur, a downscale and upscale back (an upload
resized by a platform, a low-resolution source) and JPEG re-compression at a random quality,
applied to the decoded uint8 RGB image before preprocessing. Evaluation and the workers never
augment. Every random choice comes from the generator passed in, so a seed
reproduces an epoch exactly.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass, replace

import cv2
import numpy as np
from PIL import Image

from scanner.errors import ConfigError
from scanner.media import decode_image
from training.config import AUGMENT_NAMES, DEFAULT_AUGMENT_P


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of each augmentation (p = 0 turns one off)."""

    flip_p: float = 0.5
    crop_p: float = 0.5
    crop_scale: tuple[float, float] = (0.75, 1.0)  # fraction of the image area kept
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # width / height of the crop
    jitter_p: float = 0.5
    jitter_strength: float = 0.1  # brightness, contrast and saturation vary by up to +-10%
    blur_p: float = 0.15
    blur_sigma_px: tuple[float, float] = (0.3, 1.0)
    downscale_p: float = 0.0
    downscale_factor: tuple[float, float] = (0.5, 0.9)  # side scale before resizing back
    jpeg_p: float = 0.4
    jpeg_quality: tuple[int, int] = (60, 95)


DEFAULT_AUGMENT = replace(AugmentConfig(), **{f"{name}_p": p for name, p in DEFAULT_AUGMENT_P.items()})  # type: ignore[arg-type]


def augment_config(probabilities: Mapping[str, float] | None = None) -> AugmentConfig:
    """DEFAULT_AUGMENT with some probabilities changed, e.g. {"jpeg": 0.1, "blur": 0}."""
    changes = dict(probabilities or {})
    unknown = sorted(set(changes) - set(AUGMENT_NAMES))
    if unknown:
        raise ConfigError(f"unknown augmentation {', '.join(unknown)}: use {', '.join(AUGMENT_NAMES)}")
    if any(not 0 <= p <= 1 for p in changes.values()):
        raise ConfigError("augmentation probabilities must be between 0 and 1")
    return replace(DEFAULT_AUGMENT, **{f"{name}_p": float(p) for name, p in changes.items()})  # type: ignore[arg-type]


def augment(rgb: np.ndarray, rng: np.random.Generator, config: AugmentConfig = DEFAULT_AUGMENT) -> np.ndarray:
    """One random augmentation of an HxWx3 uint8 RGB image; JPEG last, as a platform re-encodes last."""
    if rng.random() < config.flip_p:
        rgb = rgb[:, ::-1]
    if rng.random() < config.crop_p:
        rgb = random_resized_crop(rgb, rng, scale=config.crop_scale, ratio=config.crop_ratio)
    if rng.random() < config.jitter_p:
        rgb = color_jitter(rgb, rng, config.jitter_strength)
    if rng.random() < config.blur_p:
        rgb = gaussian_blur(rgb, float(rng.uniform(*config.blur_sigma_px)))
    if rng.random() < config.downscale_p:
        rgb = downscale_upscale(rgb, float(rng.uniform(*config.downscale_factor)))
    if rng.random() < config.jpeg_p:
        rgb = jpeg_roundtrip(rgb, int(rng.integers(config.jpeg_quality[0], config.jpeg_quality[1] + 1)))
    return np.ascontiguousarray(rgb)


def random_resized_crop(
    rgb: np.ndarray, rng: np.random.Generator, *, scale: tuple[float, float], ratio: tuple[float, float]
) -> np.ndarray:
    """A crop covering a random fraction of the area at a random aspect ratio, at its own resolution.

    Preprocessing resizes it to the model's input later, exactly as it does for served images.
    """
    height, width = rgb.shape[:2]
    area = height * width * rng.uniform(*scale)
    aspect = float(np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1]))))
    crop_w = int(min(width, max(1, round(np.sqrt(area * aspect)))))
    crop_h = int(min(height, max(1, round(np.sqrt(area / aspect)))))
    top = int(rng.integers(0, height - crop_h + 1))
    left = int(rng.integers(0, width - crop_w + 1))
    return rgb[top : top + crop_h, left : left + crop_w]


def color_jitter(rgb: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Scale brightness, contrast and saturation each by a factor in [1 - strength, 1 + strength]."""
    brightness, contrast, saturation = rng.uniform(1 - strength, 1 + strength, 3)
    x = rgb.astype(np.float32) * brightness
    x = (x - x.mean()) * contrast + x.mean()
    gray = x @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    x = (x - gray[..., None]) * saturation + gray[..., None]
    return np.asarray(np.clip(np.rint(x), 0, 255), dtype=np.uint8)


def gaussian_blur(rgb: np.ndarray, sigma_px: float) -> np.ndarray:
    return np.asarray(cv2.GaussianBlur(np.ascontiguousarray(rgb), (0, 0), sigma_px), dtype=np.uint8)


def downscale_upscale(rgb: np.ndarray, factor: float) -> np.ndarray:
    """Shrink by `factor` (area interpolation) and resize back to the original size (bilinear)."""
    height, width = rgb.shape[:2]
    small = cv2.resize(
        np.ascontiguousarray(rgb), (max(1, round(width * factor)), max(1, round(height * factor))),
        interpolation=cv2.INTER_AREA,
    )  # fmt: skip
    return np.asarray(cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR), dtype=np.uint8)


def jpeg_roundtrip(rgb: np.ndarray, quality: int) -> np.ndarray:
    """Re-encode as JPEG and decode with the workers' decoder."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buffer, format="JPEG", quality=quality)
    return decode_image(buffer.getvalue())
