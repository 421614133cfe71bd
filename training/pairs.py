"""Paired batches: each fake trained beside the real image it was made from.

In face-swap data sets every fake comes from an original video: same scene, lighting, compression,
only the face changed. When a fake and its original land in the same batch, the one thing that
separates the two labels there is the manipulation, not the scene or the camera. The data sets'
manifests rarely say which original a fake came from, so pairs are recovered from the pictures:
a tiny contrast-normalised thumbnail of the whole image (a swap keeps the target's scene and light),
and a one-to-one matching of fakes to reals, closest couples first.

`--pairs auto` pairs only when the data look paired: the assigned pairs must be much closer than
random real-fake couples (PAIRED_DISTANCE_RATIO); otherwise (unrelated fakes, as generated faces
are) batches are shuffled as usual. Self-blended fakes (`--self-blend mix|only`) join the real image
they are blended from. Only the order of the training samples changes; validation and scoring do not.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from training.config import PAIRS_CHOICES
from training.datasets import FAKE, REAL, Sample

log = logging.getLogger(__name__)

THUMB_PX = 16
PAIRED_DISTANCE_RATIO = 0.5  # median assigned distance / median random distance below this: the data are paired
_RANDOM_COUPLES = 2000
CANDIDATES = 8  # nearest reals considered for each fake
CHUNK = 1024  # fakes whose distances to every real are held at once (CHUNK x reals floats)


def pairwise_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances between the rows of `a` and of `b` (len(a) x len(b))."""
    squared = (a**2).sum(1)[:, None] + (b**2).sum(1)[None, :] - 2 * a @ b.T
    return np.asarray(np.sqrt(np.maximum(squared, 0)), dtype=np.float32)


def scene_thumbnail(pixels: np.ndarray) -> np.ndarray:
    """A THUMB_PX square, zero-mean unit-norm thumbnail of a whole decoded image (any channel order,
    the same for every image compared): a swap keeps its original's scene and light."""
    small = np.asarray(cv2.resize(pixels, (THUMB_PX, THUMB_PX), interpolation=cv2.INTER_AREA), np.float32).ravel()
    return np.asarray((small - small.mean()) / (small.std() + 1e-6) / np.sqrt(small.size), np.float32)


def thumbnail(path: Path) -> np.ndarray | None:
    """`scene_thumbnail` of the image file at `path` (None when unreadable).

    Decoded at reduced scale (libjpeg's 1/8), so a pass over thousands of files takes seconds."""
    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_REDUCED_COLOR_8) if data.size else None
    return None if image is None else scene_thumbnail(image)


def match_fakes(reals: np.ndarray, fakes: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """A one-to-one matching of fake rows to real rows by thumbnail distance, closest couples first
    (greedy over each fake's CANDIDATES nearest reals; a fake left without a free real stays
    unmatched): (real indices, fake indices, median matched distance / median distance of random
    real-fake couples)."""
    k = min(CANDIDATES, len(reals))
    nearest, near = [], []  # per fake: its k nearest reals and their distances, CHUNK fakes at a time
    for start in range(0, len(fakes), CHUNK):
        distances = pairwise_distances(reals, fakes[start : start + CHUNK])
        index = np.argpartition(distances, k - 1, axis=0)[:k]
        nearest.append(index)
        near.append(np.take_along_axis(distances, index, axis=0))
    real_of, distance = np.concatenate(nearest, axis=1).ravel(), np.concatenate(near, axis=1).ravel()
    fake_of = np.broadcast_to(np.arange(len(fakes)), (k, len(fakes))).ravel()
    used_real, used_fake, rows, cols, matched = set(), set(), [], [], []
    for i in np.argsort(distance, kind="stable").tolist():
        r, f = int(real_of[i]), int(fake_of[i])
        if r not in used_real and f not in used_fake:
            used_real.add(r)
            used_fake.add(f)
            rows.append(r)
            cols.append(f)
            matched.append(float(distance[i]))
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, len(reals), _RANDOM_COUPLES), rng.integers(0, len(fakes), _RANDOM_COUPLES)
    random = np.linalg.norm(reals[a] - fakes[b], axis=1)
    ratio = float(np.median(matched) / max(float(np.median(random)), 1e-12))
    return np.array(rows, dtype=np.int64), np.array(cols, dtype=np.int64), ratio


def sample_groups(samples: Sequence[Sample], mode: str) -> list[list[int]] | None:
    """Groups of sample indices to keep together in a batch (a real, its matched fake, its
    self-blended copy; everything unmatched alone), or None for ordinary shuffling."""
    if mode not in PAIRS_CHOICES:
        raise ValueError(f"unknown pairs mode {mode!r}")
    if mode == "off":
        return None
    real_ids = [i for i, s in enumerate(samples) if s.label == REAL and not s.blend]
    fake_ids = [i for i, s in enumerate(samples) if s.label == FAKE and not s.blend]
    groups: dict[int, list[int]] = {i: [i] for i in real_ids}
    paired = 0
    if real_ids and fake_ids:
        thumbs = {i: t for i in (*real_ids, *fake_ids) if (t := thumbnail(samples[i].path)) is not None}
        reals = [i for i in real_ids if i in thumbs]
        fakes = [i for i in fake_ids if i in thumbs]
        if reals and fakes:
            rows, cols, ratio = match_fakes(np.stack([thumbs[i] for i in reals]), np.stack([thumbs[i] for i in fakes]))
            if ratio < PAIRED_DISTANCE_RATIO:
                for r, f in zip(rows, cols, strict=True):
                    groups[reals[r]].append(fakes[f])
                paired = len(rows)
                log.info("pairs: %d fakes batched with their nearest-scene real (distance ratio %.2f)", paired, ratio)
            else:
                log.info("pairs: the fakes do not look made from the reals (distance ratio %.2f): unpaired", ratio)
    taken = {i for group in groups.values() for i in group}
    by_path = {samples[i].path: i for i in real_ids}
    singles: list[list[int]] = []
    for i, s in enumerate(samples):
        if s.blend and s.path in by_path:
            groups[by_path[s.path]].append(i)
            taken.add(i)
        elif i not in taken:
            singles.append([i])
    if not paired and not any(s.blend for s in samples):
        return None
    return [*groups.values(), *singles]
