"""Paired batches: fakes matched to the real they were made from, kept side by side in a batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.training_helpers import tiny_rgb, write_jpeg
from training.datasets import FAKE, REAL, Sample, grouped_batches, self_blend_samples
from training.pairs import sample_groups

SCENES = 8


def paired_split(root: Path, *, related: bool = True) -> list[Sample]:
    """Reals of different scenes; each fake the same scene with its centre changed (or, unrelated,
    another scene altogether), listed in an order that does not give the pairs away."""
    samples = []
    for i in range(SCENES):
        real = tiny_rgb(i, size=64)
        fake = real.copy() if related else tiny_rgb(100 + i, size=64)
        if related:
            fake[24:40, 24:40] = 255 - fake[24:40, 24:40]
        samples.append(Sample(write_jpeg(root / "real" / f"r{i}.jpg", real), REAL))
        samples.append(Sample(write_jpeg(root / "fake" / f"f{(i * 3) % SCENES}.jpg", fake), FAKE))
    return sorted(samples, key=lambda s: (s.label, s.path))


def scene(sample: Sample) -> int:
    """The scene a file shows (its fake's name is a permutation of the real's index)."""
    index = int(sample.path.stem[1:])
    return index if sample.label == REAL else next(i for i in range(SCENES) if (i * 3) % SCENES == index)


def test_each_fake_is_grouped_with_the_real_of_its_scene(tmp_path: Path) -> None:
    samples = paired_split(tmp_path)
    groups = sample_groups(samples, "auto")
    assert groups is not None
    assert len(groups) == SCENES
    for group in groups:
        assert sorted(samples[i].label for i in group) == [REAL, FAKE]
        assert len({scene(samples[i]) for i in group}) == 1


def test_unrelated_fakes_are_left_unpaired(tmp_path: Path) -> None:
    assert sample_groups(paired_split(tmp_path, related=False), "auto") is None


def test_off_shuffles_as_before(tmp_path: Path) -> None:
    assert sample_groups(paired_split(tmp_path), "off") is None


def test_self_blended_fakes_join_their_real(tmp_path: Path) -> None:
    samples = self_blend_samples(paired_split(tmp_path), keep_fakes=True)
    groups = sample_groups(samples, "auto")
    assert groups is not None
    assert sorted(i for g in groups for i in g) == list(range(len(samples)))
    for group in groups:
        blended = [samples[i] for i in group if samples[i].blend]
        real = [samples[i] for i in group if samples[i].label == REAL]
        assert [b.path for b in blended] == [r.path for r in real]


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="pairs"):
        sample_groups([], "always")


def test_grouped_batches_keep_groups_together_in_a_seeded_order() -> None:
    groups = [[0, 1], [2, 3], [4, 5], [6, 7], [8]]
    first = grouped_batches(groups, batch_size=4, rng=np.random.default_rng(3))
    assert first == grouped_batches(groups, batch_size=4, rng=np.random.default_rng(3))
    assert [len(b) for b in first] == [4, 4, 1]
    flat = [i for b in first for i in b]
    assert sorted(flat) == list(range(9))
    for group in groups[:4]:
        at = sorted(flat.index(i) for i in group)
        assert at[1] == at[0] + 1
    assert grouped_batches(groups, batch_size=3, rng=None) == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
