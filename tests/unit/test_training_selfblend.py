"""Self-blended fakes: the change is confined to a soft face region, and is seeded."""

from __future__ import annotations

import numpy as np

from tests.training_helpers import tiny_rgb
from training.selfblend import DEFAULT_FACE_REGION, blend_mask, self_blend


def test_blend_changes_the_face_and_leaves_the_corners() -> None:
    rgb = tiny_rgb(0, size=128)
    changed = np.abs(self_blend(rgb, np.random.default_rng(1)).astype(int) - rgb).sum(axis=2)
    assert changed[48:80, 48:80].mean() > 3
    assert changed[:10, :10].max() == 0
    assert changed[-10:, -10:].max() == 0


def test_same_seed_same_fake_and_different_seeds_differ() -> None:
    rgb = tiny_rgb(1, size=96)
    a, b = self_blend(rgb, np.random.default_rng(7)), self_blend(rgb, np.random.default_rng(7))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, self_blend(rgb, np.random.default_rng(8)))


def test_mask_is_soft_and_peaks_at_one() -> None:
    mask = blend_mask((128, 128), np.random.default_rng(0), DEFAULT_FACE_REGION)
    assert mask.max() == 1.0
    assert mask.min() >= 0.0
    assert np.mean((mask > 0.05) & (mask < 0.95)) > 0, "a feathered edge, not a hard cut"
    assert mask[64, 64] > 0.9
    assert mask[2, 2] < 0.01
