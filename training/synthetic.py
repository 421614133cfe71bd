"""Synthetic face-like images and videos for demos and tests: no external data, fully seeded.

"Real" images are painted cartoon faces with camera noise. "Fake" ones get a face swap the way a
generator would make it: a different face rendered at a quarter of the resolution, upsampled,
stamped with a fixed periodic upsampling fingerprint (the checkerboard pattern transposed
convolutions leave) and blended into the real image through a soft elliptical mask. The pattern's
period (8 px at 128 px) survives JPEG and MPEG-4 coding and a 2x antialiased downscale.

This is a demo and test aid. It says nothing about how well a model detects real deepfakes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from scanner.errors import ConfigError
from training.config import DEFAULT_DEMO_COUNT, DEFAULT_DEMO_SEED

DEFAULT_DEMO_IMAGE_SIZE_PX = 128
DEFAULT_VIDEO_FPS = 24.0
DEFAULT_VIDEO_FRAMES = 72
DEFAULT_FINGERPRINT_AMPLITUDE = 0.12  # relative modulation of the generated face's intensity
GENERATOR_DOWNSCALE = 4  # the fake face is rendered at 1/4 resolution, then upsampled
SPLIT_FRACTIONS = (("train", 0.7), ("valid", 0.15), ("test", 0.15))
MANIFEST_NAME = "demo-manifest.json"
MIN_DEMO_COUNT = 20
DEMO_NOTE = "Synthetic demo and test data made by deepscan demo-data; not a claim about real deepfakes."

_SKIN = np.array([[234, 192, 160], [214, 165, 125], [176, 125, 90], [125, 84, 58], [245, 210, 185]], np.float32)
_HAIR = np.array([[30, 22, 18], [80, 50, 30], [160, 120, 60], [110, 110, 110], [20, 20, 24]], np.float32)
_IRIS = np.array([[60, 90, 140], [70, 50, 30], [60, 110, 70], [40, 40, 40]], np.float32)


@dataclass(frozen=True)
class Layout:
    """Where the face sits, in pixels."""

    cx: float
    cy: float
    rx: float
    ry: float

    def scaled(self, factor: float) -> Layout:
        return Layout(self.cx * factor, self.cy * factor, self.rx * factor, self.ry * factor)

    def moved(self, dx: float, dy: float) -> Layout:
        return Layout(self.cx + dx, self.cy + dy, self.rx, self.ry)


@dataclass(frozen=True)
class Identity:
    """What the face looks like, independent of where it is."""

    skin: np.ndarray
    hair: np.ndarray
    iris: np.ndarray
    eye_spread: float
    eye_height: float
    mouth_width: float
    light: tuple[float, float]


@dataclass(frozen=True)
class VideoSpec:
    """One demo clip: its file name and the frames [start, end) that carry a swapped face."""

    name: str
    manipulated: tuple[int, int] | None


DEMO_VIDEOS = (
    VideoSpec("real_clip.mp4", None),
    VideoSpec("partly_fake_clip.mp4", (24, 48)),
    VideoSpec("fake_clip.mp4", (0, DEFAULT_VIDEO_FRAMES)),
)


def fingerprint_tile() -> np.ndarray:
    """The generator's fixed 8x8 zero-mean pattern: checkerboards at periods 8, 4 and 2 px."""
    y, x = np.mgrid[0:8, 0:8]
    tile = sum(w * (-1.0) ** ((y // h) + (x // h)) for w, h in ((0.6, 4), (0.3, 2), (0.1, 1)))
    return np.asarray(tile - np.mean(tile), dtype=np.float32)


def random_layout(rng: np.random.Generator, size: int) -> Layout:
    rx = size * rng.uniform(0.20, 0.27)
    return Layout(
        cx=size * rng.uniform(0.42, 0.58), cy=size * rng.uniform(0.45, 0.58), rx=rx, ry=rx * rng.uniform(1.2, 1.4)
    )


def random_identity(rng: np.random.Generator) -> Identity:
    def pick(palette: np.ndarray, jitter: float) -> np.ndarray:
        color = palette[rng.integers(len(palette))] * rng.uniform(1 - jitter, 1 + jitter, 3)
        return np.asarray(np.clip(color, 0, 255), dtype=np.float32)

    angle = rng.uniform(0, 2 * np.pi)
    return Identity(
        skin=pick(_SKIN, 0.08),
        hair=pick(_HAIR, 0.2),
        iris=pick(_IRIS, 0.2),
        eye_spread=rng.uniform(0.32, 0.45),
        eye_height=rng.uniform(0.1, 0.22),
        mouth_width=rng.uniform(0.25, 0.45),
        light=(float(np.cos(angle)), float(np.sin(angle))),
    )


def random_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth two-colour gradient with a few soft blobs, HxWx3 float32 in [0, 255].

    Drawn at 32 px and upscaled: it is smooth, and that keeps a demo image under a few ms."""
    low = 32
    y, x = np.mgrid[0:low, 0:low].astype(np.float32) / low
    angle = rng.uniform(0, 2 * np.pi)
    t = (np.cos(angle) * x + np.sin(angle) * y)[..., None]
    a, b = rng.uniform(30, 230, 3), rng.uniform(30, 230, 3)
    img = a * (1 - t) + b * t
    for _ in range(3):
        cx, cy, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.1, 0.3)
        blob = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r))[..., None]
        img = img + blob * rng.uniform(-40, 40, 3)
    img = np.clip(img, 0, 255).astype(np.float32)
    return np.asarray(cv2.resize(img, (size, size), interpolation=cv2.INTER_CUBIC).clip(0, 255), dtype=np.float32)


def _ellipse(shape: tuple[int, int], cx: float, cy: float, rx: float, ry: float, soft_px: float = 1.0) -> np.ndarray:
    """An antialiased filled ellipse as an HxWx1 alpha in [0, 1]."""
    y, x = np.ogrid[0 : shape[0], 0 : shape[1]]
    return _ellipse_alpha(x, y, cx, cy, rx, ry, soft_px)


def _ellipse_alpha(x: np.ndarray, y: np.ndarray, cx: float, cy: float, rx: float, ry: float, soft: float) -> np.ndarray:
    rx, ry = max(rx, 1e-3), max(ry, 1e-3)
    dist = np.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2)
    edge = soft / min(rx, ry)
    return np.asarray(np.clip((1 - dist) / edge + 0.5, 0, 1)[..., None], dtype=np.float32)


def _paint(img: np.ndarray, ellipse: tuple[float, float, float, float], color: np.ndarray | float, soft: float) -> None:
    """Paint a filled ellipse (cx, cy, rx, ry) onto `img` in place, touching only its bounding box."""
    cx, cy, rx, ry = ellipse
    pad = soft + 1
    y0, y1 = max(int(cy - ry - pad), 0), min(int(cy + ry + pad) + 1, img.shape[0])
    x0, x1 = max(int(cx - rx - pad), 0), min(int(cx + rx + pad) + 1, img.shape[1])
    if y0 >= y1 or x0 >= x1:
        return
    y, x = np.ogrid[y0:y1, x0:x1]
    alpha = _ellipse_alpha(x.astype(np.float32), y.astype(np.float32), cx, cy, rx, ry, soft)
    region = img[y0:y1, x0:x1]
    img[y0:y1, x0:x1] = region + alpha * (color - region)


def draw_face(img: np.ndarray, lay: Layout, who: Identity) -> np.ndarray:
    """A copy of `img` with hair, neck, a shaded face, eyes, brows, nose and mouth painted on."""
    img = img.copy()
    cx, cy, rx, ry = lay.cx, lay.cy, lay.rx, lay.ry
    soft = max(rx / 40, 0.5)
    _paint(img, (cx, cy - 0.25 * ry, 1.15 * rx, ry), who.hair, soft)
    _paint(img, (cx, cy + 1.1 * ry, 0.45 * rx, 0.5 * ry), who.skin * 0.8, soft)
    y, x = np.ogrid[0 : img.shape[0], 0 : img.shape[1]]
    shade = 1 + 0.18 * (who.light[0] * (x - cx) / rx + who.light[1] * (y - cy) / ry)
    face = _ellipse(img.shape[:2], cx, cy, rx, ry, soft)
    img += face * (np.clip(who.skin * shade[..., None], 0, 255) - img)
    for side in (-1, 1):
        ex, ey = cx + side * who.eye_spread * rx, cy - who.eye_height * ry
        _paint(img, (ex, ey - 0.17 * ry, 0.2 * rx, 0.035 * ry), who.hair, soft)
        _paint(img, (ex, ey, 0.17 * rx, 0.07 * ry), 240.0, soft)
        _paint(img, (ex, ey, 0.075 * rx, 0.075 * rx), who.iris, soft)
        _paint(img, (ex, ey, 0.03 * rx, 0.03 * rx), 15.0, soft)
    _paint(img, (cx, cy + 0.15 * ry, 0.07 * rx, 0.14 * ry), who.skin * 0.82, soft)
    _paint(img, (cx, cy + 0.5 * ry, who.mouth_width * rx, 0.06 * ry), np.array([170, 60, 60], np.float32), soft)
    return img


def face_mask(shape: tuple[int, int], lay: Layout, feather_px: float) -> np.ndarray:
    """A soft elliptical mask over the inner face, HxWx1 in [0, 1]."""
    hard = _ellipse(shape, lay.cx, lay.cy + 0.05 * lay.ry, 0.92 * lay.rx, 0.95 * lay.ry)
    return np.asarray(cv2.GaussianBlur(hard, (0, 0), feather_px)[..., None], dtype=np.float32)


def swap_face(img: np.ndarray, lay: Layout, who: Identity, rng: np.random.Generator) -> np.ndarray:
    """Blend a generated face (quarter resolution, upsampled, fingerprinted) into `img`."""
    size = img.shape[0]
    low = cv2.resize(img, (size // GENERATOR_DOWNSCALE, size // GENERATOR_DOWNSCALE), interpolation=cv2.INTER_AREA)
    generated = draw_face(low, lay.scaled(1 / GENERATOR_DOWNSCALE), who)
    up = cv2.resize(generated, (size, size), interpolation=cv2.INTER_LINEAR)
    amplitude = DEFAULT_FINGERPRINT_AMPLITUDE * rng.uniform(0.8, 1.2)
    tile = np.tile(fingerprint_tile(), (size // 8 + 1, size // 8 + 1))[:size, :size, None]
    up = up * (1 + amplitude * tile)
    mask = face_mask(img.shape[:2], lay, feather_px=rng.uniform(1.5, 3.0))
    return np.asarray(img * (1 - mask) + up * mask, dtype=np.float32)


def finish(img: np.ndarray, rng: np.random.Generator, noise: float) -> np.ndarray:
    """Camera noise, then clip to uint8 RGB."""
    noisy = img + noise * rng.standard_normal(img.shape, dtype=np.float32)
    return np.asarray(np.clip(np.rint(noisy), 0, 255), dtype=np.uint8)


def render_image(rng: np.random.Generator, size: int, *, fake: bool) -> np.ndarray:
    """One face-like HxWx3 uint8 RGB image; fakes carry a swapped, fingerprinted face."""
    lay = random_layout(rng, size)
    img = draw_face(random_background(rng, size), lay, random_identity(rng))
    img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.4, 0.8))  # lens softness
    if fake:
        img = swap_face(img, lay, random_identity(rng), rng)
    return finish(img, rng, noise=rng.uniform(2.0, 4.0))


def split_counts(count: int) -> dict[str, int]:
    """Images per class in each split for `count` images per class."""
    train = round(count * SPLIT_FRACTIONS[0][1])
    valid = round(count * SPLIT_FRACTIONS[1][1])
    return {"train": train, "valid": valid, "test": count - train - valid}


def write_demo_images(out: Path, *, count: int, seed: int, size: int = DEFAULT_DEMO_IMAGE_SIZE_PX) -> dict[str, Any]:
    """JPEGs in the 140k layout OUT/{train,valid,test}/{real,fake}/; returns counts per split."""
    counts = split_counts(count)
    for split_index, (split, n) in enumerate(counts.items()):
        for label_index, label in enumerate(("real", "fake")):
            folder = out / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                rng = np.random.default_rng([seed, split_index, label_index, i])
                rgb = render_image(rng, size, fake=label == "fake")
                quality = int(rng.integers(85, 96))
                Image.fromarray(rgb).save(folder / f"{label}_{i:05d}.jpg", quality=quality)
    return {split: {"real": n, "fake": n} for split, n in counts.items()}


def render_video_frames(spec: VideoSpec, *, rng: np.random.Generator, size: int, frames: int) -> list[np.ndarray]:
    """RGB frames of one clip: a slowly drifting face, swapped inside `spec.manipulated`."""
    background, lay = random_background(rng, size), random_layout(rng, size)
    who, other = random_identity(rng), random_identity(rng)
    start, end = spec.manipulated or (frames, frames)
    out = []
    for i in range(frames):
        phase = 2 * np.pi * i / frames
        moved = lay.moved(0.05 * size * np.sin(phase), 0.025 * size * np.sin(2 * phase))
        img = cv2.GaussianBlur(draw_face(background, moved, who), (0, 0), 0.6)
        if start <= i < end:
            img = swap_face(img, moved, other, rng)
        out.append(finish(img, rng, noise=3.0))
    return out


def write_video(path: Path, frames: list[np.ndarray], fps: float) -> None:
    """Encode RGB frames as MPEG-4 Part 2 ('mp4v') and check the file decodes to as many frames."""
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise ConfigError(f"OpenCV cannot write MPEG-4 video to {path}: is opencv-python-headless installed?")
    for rgb in frames:
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    decoded = count_video_frames(path)
    if decoded != len(frames):
        raise ConfigError(f"wrote {len(frames)} frames to {path} but only {decoded} decode back")


def count_video_frames(path: Path) -> int:
    """How many frames OpenCV decodes from `path`."""
    capture = cv2.VideoCapture(str(path))
    n = 0
    try:
        while capture.read()[0]:
            n += 1
    finally:
        capture.release()
    return n


def write_demo_videos(out: Path, *, seed: int, size: int = DEFAULT_DEMO_IMAGE_SIZE_PX) -> list[dict[str, Any]]:
    """The clips of `DEMO_VIDEOS` under OUT/videos/; returns their manifest entries."""
    folder = out / "videos"
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for index, spec in enumerate(DEMO_VIDEOS):
        rng = np.random.default_rng([seed, len(SPLIT_FRACTIONS), index])  # a stream no image uses
        frames = render_video_frames(spec, rng=rng, size=size, frames=DEFAULT_VIDEO_FRAMES)
        write_video(folder / spec.name, frames, DEFAULT_VIDEO_FPS)
        entries.append(video_entry(spec, size))
    return entries


def video_entry(spec: VideoSpec, size: int) -> dict[str, Any]:
    manipulated = None
    if spec.manipulated is not None:
        start, end = spec.manipulated
        manipulated = {
            "start_frame": start,
            "end_frame": end,
            "start_s": start / DEFAULT_VIDEO_FPS,
            "end_s": end / DEFAULT_VIDEO_FPS,
        }
    return {
        "path": f"videos/{spec.name}",
        "fps": DEFAULT_VIDEO_FPS,
        "frames": DEFAULT_VIDEO_FRAMES,
        "width": size,
        "height": size,
        "manipulated": manipulated,
    }


def write_demo_data(out: Path, *, count: int = DEFAULT_DEMO_COUNT, seed: int = DEFAULT_DEMO_SEED) -> Path:
    """Write the demo data set under `out` and return the path of its JSON manifest.

    `count` images per class are split 70/15/15 into train/valid/test; three MP4 clips go to
    OUT/videos/. The manifest lists the clips with their manipulated frame range
    [start_frame, end_frame) and time range [start_s, end_s) (null for an untouched clip).
    """
    if count < MIN_DEMO_COUNT:
        raise ConfigError(f"--count {count} is too small: use at least {MIN_DEMO_COUNT} images per class")
    out.mkdir(parents=True, exist_ok=True)
    manifest = {
        "kind": "deepscan-demo-data",
        "version": 1,
        "note": DEMO_NOTE,
        "seed": seed,
        "count_per_class": count,
        "image_size_px": DEFAULT_DEMO_IMAGE_SIZE_PX,
        "labels": {"real": "authentic face", "fake": "face swapped in by a simulated generator"},
        "splits": write_demo_images(out, count=count, seed=seed),
        "videos": write_demo_videos(out, seed=seed),
    }
    path = out / MANIFEST_NAME
    path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return path
