"""Self-blended fakes: the change is confined to a soft face region, and is seeded."""

from __future__ import annotations

import numpy as np

from tests.training_helpers import tiny_rgb
from training.selfblend import DEFAULT_FACE_REGION, blend_mask, hull_mask, self_blend


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


# dlib's five points of a face centred in a 128-px crop: outer/inner corner of each eye, nose base
FIVE_POINTS = ((40.0, 52.0), (54.0, 52.0), (88.0, 52.0), (74.0, 52.0), (64.0, 78.0))


def test_hull_mask_covers_the_face_from_brows_to_chin_and_spares_the_background() -> None:
    mask = hull_mask((128, 128), np.random.default_rng(0), FIVE_POINTS)
    assert mask.max() == 1.0
    assert mask[64, 64] > 0.9, "between the eyes and the nose"
    assert mask[95, 64] > 0.5, "the mouth, below the nose, where an ellipse from the eyes alone would stop"
    assert max(mask[5, 5], mask[5, 122], mask[122, 5]) < 0.01
    assert np.mean((mask > 0.05) & (mask < 0.95)) > 0, "a feathered edge, not a hard cut"


def test_hull_follows_the_landmarks_where_the_face_is() -> None:
    shifted = tuple((x - 30, y - 20) for x, y in FIVE_POINTS)
    mask = hull_mask((128, 128), np.random.default_rng(0), shifted)
    assert mask[40, 34] > 0.9
    assert mask[110, 110] < 0.01


def test_blend_with_landmarks_changes_only_the_hull() -> None:
    rgb = tiny_rgb(2, size=128)
    changed = np.abs(self_blend(rgb, np.random.default_rng(3), landmarks=FIVE_POINTS).astype(int) - rgb).sum(axis=2)
    assert changed[60:70, 58:70].mean() > 3
    assert changed[:8, :8].max() == 0
    assert changed[-8:, -8:].max() == 0
