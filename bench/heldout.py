"""A held-out detector benchmark built from real photographs that installed packages ship.

Never the demo's synthetic faces: the real images are patches of the sample photographs of
scikit-image, scikit-learn and Matplotlib (portraits, animals, street scenes, landscapes,
microscopy), split by source photograph so that no photograph contributes to two splits. Each
fake is a real patch carrying one of three manipulation families that real deepfakes leave:

- upsample: a face-sized region replaced by a low-resolution version of itself brought back up
  by nearest-neighbour, bilinear or zero-insertion ("transposed convolution") upsampling, the
  trace of a generator's decoder;
- blend: a region of another patch of the same photograph, colour-matched and blended in through
  a feathered elliptical mask, as face swaps paste a synthesised face;
- inpaint: strokes through the region re-synthesised by OpenCV's inpainting (Telea or
  Navier-Stokes), as object removal and re-synthesis do.

Every image, real or fake, is then JPEG-compressed at a random quality in 75..95, as platforms
do. The layout is deepscan's: `ROOT/{train,valid,test}/real/*.jpg` and
`ROOT/{train,valid,test}/fake/<family>/*.jpg`, so `deepscan evaluate --by-source` reports each
family. Everything is drawn from one seeded generator.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

FAMILIES = ("upsample", "blend", "inpaint")
JPEG_QUALITY = (75, 95)
PATCH_SIDE_PX = (160, 256)

# Source photographs per split (by file name). Portraits are kept for the test split; validation
# photographs are colour ones like the test's (a greyscale-heavy validation split picked epoch 1
# of 6 as the best), and the stereo pair motorcycle_left/right stays within one split.
SPLIT_PHOTOS = {
    "train": (
        "motorcycle_left.png", "motorcycle_right.png", "china.jpg", "hubble_deep_field.jpg", "ihc.png",
        "camera.png", "brick.png", "grass.png", "gravel.png", "coins.png", "moon.png",
    ),
    "valid": ("rocket.jpg", "coffee.png", "chelsea.png"),
    "test": ("astronaut.png", "grace_hopper.jpg", "flower.jpg", "retina.jpg"),
}  # fmt: skip
COUNTS = {"train": 1000, "valid": 240, "test": 480}  # real patches per split (as many fakes)


def photo_paths() -> dict[str, Path]:
    """Where each sample photograph lives in the installed packages."""
    import matplotlib
    import skimage
    import sklearn

    folders = [
        Path(skimage.__file__).parent / "data",
        Path(sklearn.__file__).parent / "datasets" / "images",
        Path(matplotlib.get_data_path()) / "sample_data",
    ]
    found = {p.name: p for folder in folders if folder.is_dir() for p in folder.iterdir()}
    wanted = [name for names in SPLIT_PHOTOS.values() for name in names]
    missing = [name for name in wanted if name not in found]
    if missing:
        raise SystemExit(f"sample photographs not found: {', '.join(missing)} (pip install scikit-image)")
    return {name: found[name] for name in wanted}


def read_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def random_patch(photo: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A square patch of 160..256 px at a random place, sometimes from a downscaled copy."""
    height, width = photo.shape[:2]
    scale = float(rng.uniform(0.6, 1.0)) if min(height, width) * 0.6 >= PATCH_SIDE_PX[1] else 1.0
    if scale < 1.0:
        photo = cv2.resize(photo, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
        height, width = photo.shape[:2]
    side = int(rng.integers(PATCH_SIDE_PX[0], min(PATCH_SIDE_PX[1], height, width) + 1))
    top, left = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
    return np.ascontiguousarray(photo[top : top + side, left : left + side])


def region_mask(side: int, rng: np.random.Generator, *, feather: bool = True) -> np.ndarray:
    """A face-sized ellipse near the centre as a float mask in [0, 1] (feathered edges)."""
    mask: np.ndarray = np.zeros((side, side), np.float32)
    centre = (int(side / 2 + rng.uniform(-0.1, 0.1) * side), int(side / 2 + rng.uniform(-0.1, 0.1) * side))
    axes = (int(side * rng.uniform(0.22, 0.36)), int(side * rng.uniform(0.25, 0.4)))
    cv2.ellipse(mask, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1.0, -1)
    if feather:
        mask = cv2.GaussianBlur(mask, (0, 0), float(rng.uniform(2, 6)))
    return mask


def composite(base: np.ndarray, inner: np.ndarray, mask: np.ndarray) -> np.ndarray:
    out = base.astype(np.float32) * (1 - mask[..., None]) + inner.astype(np.float32) * mask[..., None]
    return np.asarray(np.clip(np.rint(out), 0, 255), dtype=np.uint8)


def upsample(patch: np.ndarray, rng: np.random.Generator, _donor: np.ndarray) -> np.ndarray:
    side = patch.shape[0]
    factor = int(rng.choice([2, 3, 4]))
    small = cv2.resize(patch, (side // factor, side // factor), interpolation=cv2.INTER_AREA)
    kind = rng.choice(["nearest", "bilinear", "zero_insert"])
    if kind == "zero_insert":  # a transposed convolution: zeros between samples, then a smoothing kernel
        up = np.zeros((small.shape[0] * factor, small.shape[1] * factor, 3), np.float32)
        up[::factor, ::factor] = small
        kernel = np.outer(np.bartlett(2 * factor + 1)[1:-1], np.bartlett(2 * factor + 1)[1:-1]).astype(np.float32)
        up = cv2.filter2D(up, -1, kernel / kernel.sum() * factor * factor)
        up = cv2.resize(np.clip(up, 0, 255).astype(np.uint8), (side, side), interpolation=cv2.INTER_NEAREST)
    else:
        interpolation = cv2.INTER_NEAREST if kind == "nearest" else cv2.INTER_LINEAR
        up = cv2.resize(small, (side, side), interpolation=interpolation)
    return composite(patch, up, region_mask(side, rng))


def blend(patch: np.ndarray, rng: np.random.Generator, donor: np.ndarray) -> np.ndarray:
    side = patch.shape[0]
    source = cv2.resize(donor, (side, side), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    target = patch.astype(np.float32)
    mask = region_mask(side, rng)
    inside = mask > 0.5
    if inside.any():  # match the pasted region's colour statistics to the region it replaces
        mean_s, std_s = source[inside].mean(0), source[inside].std(0) + 1e-3
        mean_t, std_t = target[inside].mean(0), target[inside].std(0) + 1e-3
        source = (source - mean_s) / std_s * std_t + mean_t
    return composite(patch, np.clip(source, 0, 255), mask)


def inpaint(patch: np.ndarray, rng: np.random.Generator, _donor: np.ndarray) -> np.ndarray:
    side = patch.shape[0]
    region = region_mask(side, rng, feather=False) > 0.5
    strokes = np.zeros((side, side), np.uint8)
    ys, xs = np.nonzero(region)
    for _ in range(int(rng.integers(3, 7))):
        a, b = rng.integers(0, len(ys), 2)
        cv2.line(strokes, (int(xs[a]), int(ys[a])), (int(xs[b]), int(ys[b])), 255, int(rng.integers(4, 12)))
    strokes &= region.astype(np.uint8) * 255
    method = cv2.INPAINT_TELEA if rng.random() < 0.5 else cv2.INPAINT_NS
    return np.asarray(cv2.inpaint(patch, strokes, 5, method), dtype=np.uint8)


MANIPULATIONS: dict[str, Callable[[np.ndarray, np.random.Generator, np.ndarray], np.ndarray]] = {
    "upsample": upsample,
    "blend": blend,
    "inpaint": inpaint,
}


def jpeg(rgb: np.ndarray, rng: np.random.Generator) -> bytes:
    buffer = io.BytesIO()
    quality = int(rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1))
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


@dataclass(frozen=True)
class HeldOut:
    root: Path
    counts: dict[str, dict[str, int]]  # split -> real / each family -> images


Patches = Iterator[tuple[int, str, np.ndarray, np.ndarray]]  # index, photo name, patch, donor patch


def _patches(split: str, count: int, photos: dict[str, np.ndarray], rng: np.random.Generator) -> Patches:
    names = SPLIT_PHOTOS[split]
    for index in range(count):
        name = names[index % len(names)]
        yield index, name, random_patch(photos[name], rng), random_patch(photos[name], rng)


def write_heldout(root: Path, *, seed: int = 0, scale: float = 1.0) -> HeldOut:
    """Write the benchmark's images under `root`; `scale` multiplies every split's count."""
    rng = np.random.default_rng(seed)
    photos = {name: read_rgb(path) for name, path in photo_paths().items()}
    counts: dict[str, dict[str, int]] = {}
    for split, base in COUNTS.items():
        count = max(len(FAMILIES) * 2, round(base * scale))
        tally = {"real": 0, **dict.fromkeys(FAMILIES, 0)}
        for folder in ("real", *(f"fake/{f}" for f in FAMILIES)):
            (root / split / folder).mkdir(parents=True, exist_ok=True)
        for index, name, patch, donor in _patches(split, count, photos, rng):
            stem = f"{Path(name).stem}-{index:05d}"
            (root / split / "real" / f"{stem}.jpg").write_bytes(jpeg(patch, rng))
            family = FAMILIES[index % len(FAMILIES)]
            fake = MANIPULATIONS[family](patch, rng, donor)
            (root / split / "fake" / family / f"{stem}.jpg").write_bytes(jpeg(fake, rng))
            tally["real"] += 1
            tally[family] += 1
        counts[split] = tally
    return HeldOut(root, counts)


if __name__ == "__main__":  # write the set somewhere to look at it: python bench/heldout.py OUT
    import sys

    out = Path(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("TMPDIR", "/tmp")) / "heldout"
    print(write_heldout(out).counts)
