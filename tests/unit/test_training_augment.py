"""Training augmentation: deterministic per generator, shape-safe, JPEG through the workers' decoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from scanner.errors import ConfigError
from tests.training_helpers import tiny_rgb
from training.augment import (
    DEFAULT_AUGMENT,
    AugmentConfig,
    augment,
    augment_config,
    color_jitter,
    downscale_upscale,
    jpeg_roundtrip,
    random_resized_crop,
)

NONE = AugmentConfig(flip_p=0, crop_p=0, jitter_p=0, blur_p=0, jpeg_p=0)


def test_same_generator_state_same_result() -> None:
    rgb = tiny_rgb(0, size=64)
    first = augment(rgb, np.random.default_rng(5))
    assert np.array_equal(first, augment(rgb, np.random.default_rng(5)))
    assert first.dtype == np.uint8
    assert first.ndim == 3
    assert first.shape[2] == 3
    assert first.flags.c_contiguous


def test_all_probabilities_zero_is_the_identity() -> None:
    rgb = tiny_rgb(1, size=64)
    assert np.array_equal(augment(rgb, np.random.default_rng(0), NONE), rgb)


def test_flip_only_mirrors() -> None:
    rgb = tiny_rgb(2, size=64)
    flipped = augment(rgb, np.random.default_rng(0), AugmentConfig(flip_p=1, crop_p=0, jitter_p=0, blur_p=0, jpeg_p=0))
    assert np.array_equal(flipped, rgb[:, ::-1])


@pytest.mark.parametrize("seed", range(5))
def test_random_resized_crop_stays_inside_the_image(seed: int) -> None:
    rgb = tiny_rgb(3, size=64)
    crop = random_resized_crop(rgb, np.random.default_rng(seed), scale=(0.5, 1.0), ratio=(0.5, 2.0))
    assert 1 <= crop.shape[0] <= 64
    assert 1 <= crop.shape[1] <= 64
    assert crop.shape[0] * crop.shape[1] >= 0.3 * 64 * 64


def test_jpeg_roundtrip_loses_a_little_and_keeps_the_size() -> None:
    rgb = tiny_rgb(4, size=64)
    out = jpeg_roundtrip(rgb, quality=60)
    assert out.shape == rgb.shape
    assert 0 < np.abs(out.astype(int) - rgb).mean() < 10


def test_downscale_upscale_softens_and_keeps_the_size() -> None:
    rgb = tiny_rgb(6, size=64)
    out = downscale_upscale(rgb, 0.5)
    assert out.shape == rgb.shape
    assert out.dtype == np.uint8
    assert np.abs(np.diff(out.astype(int), axis=1)).mean() < np.abs(np.diff(rgb.astype(int), axis=1)).mean()
    softened = augment(rgb, np.random.default_rng(0), AugmentConfig(flip_p=0, crop_p=0, jitter_p=0, blur_p=0,
                                                                    downscale_p=1, jpeg_p=0))  # fmt: skip
    assert not np.array_equal(softened, rgb)
    assert augment_config({"downscale": 0.3}).downscale_p == 0.3
    assert DEFAULT_AUGMENT.downscale_p == 0  # off by default: states saved before it existed still resume


def test_color_jitter_is_mild() -> None:
    rgb = tiny_rgb(5, size=64)
    out = color_jitter(rgb, np.random.default_rng(0), 0.1)
    assert np.abs(out.astype(int) - rgb).mean() < 0.2 * rgb.mean()


def test_probabilities_are_options_of_their_own() -> None:
    config = augment_config({"jpeg": 0, "blur": 1.0})
    assert config.jpeg_p == 0
    assert config.blur_p == 1.0
    assert config.flip_p == DEFAULT_AUGMENT.flip_p
    assert augment_config() == DEFAULT_AUGMENT


@pytest.mark.parametrize(
    ("probabilities", "message"),
    [({"sharpen": 0.5}, "unknown augmentation sharpen: use flip, crop"), ({"jpeg": 1.5}, "between 0 and 1")],
)
def test_bad_probabilities_are_refused_naming_the_choices(probabilities: dict[str, float], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        augment_config(probabilities)


def test_a_resume_must_repeat_changed_augmentation_probabilities(tmp_path: Path) -> None:
    from training.config import TrainConfig

    base = TrainConfig(data=tmp_path, out=tmp_path / "m.safetensors")
    same = TrainConfig(data=tmp_path, out=base.out, augment_p={"jitter": DEFAULT_AUGMENT.jitter_p})
    heavier = TrainConfig(data=tmp_path, out=base.out, augment_p={"blur": 0.5})
    assert same.fingerprint() == base.fingerprint()  # naming a default changes nothing
    assert "augment_p" not in base.fingerprint()  # states saved before the key existed still resume
    assert heavier.fingerprint()["augment_p"] == "blur=0.5"
    assert heavier.fingerprint() != base.fingerprint()
