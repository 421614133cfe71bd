"""Self-blended fakes (after Shiohara & Yamasaki, "Detecting Deepfakes with Self-Blended Images",
CVPR 2022): a real image becomes a training fake by blending a slightly altered copy of its own
face region back into it through a soft mask. The result carries the traces every face swap
leaves (a blending boundary, colour and sharpness mismatch, slight misalignment) without any
generator, so a team with only real photos can train a detector.

The blend mask is either the face's own region (`mask="hull"`, SBI's choice): a convex hull of a
face outline (jaw, cheeks, brows) placed by the five dlib landmarks the face view gives, deformed
and feathered at random; or, where no landmarks are found (`mask="ellipse"`, or a face the landmark
model misses), a jittered ellipse around where a face sits in a centred face crop. The five points
are the eye corners and the nose base, so the outline is extended from them by average face
proportions, in units of the distance between the eye centres.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

BLEND_RATIOS = (0.25, 0.5, 0.75, 1.0, 1.0, 1.0)  # SBI's choice: a full blend half of the time
MASK_CHOICES = ("hull", "ellipse")
DEFAULT_MASK = "hull"
Point = tuple[float, float]
# A face outline (jaw from ear to ear, then the brows) in units of the eye-centre distance: x along the
# eye line from its midpoint, y towards the nose. Average proportions; the hull is jittered per fake.
FACE_OUTLINE = (
    (-1.0, 0.05), (-0.97, 0.45), (-0.85, 0.85), (-0.6, 1.2), (-0.3, 1.45), (0.0, 1.55),
    (0.3, 1.45), (0.6, 1.2), (0.85, 0.85), (0.97, 0.45), (1.0, 0.05),
    (0.95, -0.35), (0.5, -0.55), (0.0, -0.5), (-0.5, -0.55), (-0.95, -0.35),
)  # fmt: skip


@dataclass(frozen=True)
class FaceRegion:
    """The expected face ellipse as fractions of the image: centre and radii."""

    cx: float = 0.5
    cy: float = 0.52
    rx: float = 0.22
    ry: float = 0.29


DEFAULT_FACE_REGION = FaceRegion()


def self_blend(
    rgb: np.ndarray,
    rng: np.random.Generator,
    *,
    model_size: int | None = None,
    region: FaceRegion = DEFAULT_FACE_REGION,
    landmarks: Sequence[Point] | None = None,
) -> np.ndarray:
    """A self-blended fake of an HxWx3 uint8 RGB image.

    `model_size` (the model's input side in pixels) scales the resolution change so the model can
    still see it after the image is resized to its input: a 256 px image blurred at 0.6x is sharp
    again at 64 px. `landmarks` (dlib's five points in this image) give a face-hull mask; without
    them the mask is the jittered ellipse of `region`.
    """
    target = rgb.astype(np.float32)
    source = shift_colors(target, rng)
    seen = min(1.0, model_size / max(rgb.shape[:2])) if model_size else 1.0
    source = change_frequency(source, rng, seen)
    source = misalign(source, rng)
    shape = (rgb.shape[0], rgb.shape[1])
    mask = hull_mask(shape, rng, landmarks) if landmarks else blend_mask(shape, rng, region)
    mask = mask * float(rng.choice(BLEND_RATIOS))
    blended = source * mask[..., None] + target * (1 - mask[..., None])
    return np.asarray(np.clip(np.rint(blended), 0, 255), dtype=np.uint8)


def shift_colors(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per-channel shift plus brightness/contrast change, as a different source frame would have."""
    shifted = img + rng.uniform(-20, 20, 3).astype(np.float32)
    contrast, brightness = rng.uniform(0.85, 1.15), rng.uniform(-15, 15)
    mean = shifted.mean()
    return np.asarray(np.clip((shifted - mean) * contrast + mean + brightness, 0, 255), dtype=np.float32)


def change_frequency(img: np.ndarray, rng: np.random.Generator, seen: float = 1.0) -> np.ndarray:
    """Either downscale-then-upscale (a generator's lower resolution) or sharpen.

    `seen` is the share of the resolution the model sees; the downscale is relative to it.
    """
    height, width = img.shape[:2]
    if rng.random() < 0.7:
        factor = rng.uniform(0.25, 0.6) * seen
        small = cv2.resize(
            img, (max(1, round(width * factor)), max(1, round(height * factor))), interpolation=cv2.INTER_AREA
        )
        return np.asarray(cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR), dtype=np.float32)
    blurred = cv2.GaussianBlur(img, (0, 0), 1.0)
    amount = rng.uniform(0.3, 1.0)
    return np.asarray(np.clip(img + amount * (img - blurred), 0, 255), dtype=np.float32)


def misalign(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Scale by up to +-5% and shift by up to 3% of the size: the source face never sits exactly."""
    height, width = img.shape[:2]
    scale = rng.uniform(0.95, 1.05)
    dx, dy = rng.uniform(-0.03, 0.03, 2) * (width, height)
    matrix = np.array([[scale, 0, (1 - scale) * width / 2 + dx], [0, scale, (1 - scale) * height / 2 + dy]])
    warped = cv2.warpAffine(img, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return np.asarray(warped, dtype=np.float32)


def blend_mask(shape: tuple[int, int], rng: np.random.Generator, region: FaceRegion) -> np.ndarray:
    """A jittered, slightly deformed, feathered face ellipse, HxW float32 in [0, 1]."""
    height, width = shape
    cx = (region.cx + rng.uniform(-0.04, 0.04)) * width
    cy = (region.cy + rng.uniform(-0.04, 0.04)) * height
    rx = region.rx * rng.uniform(0.8, 1.2) * width
    ry = region.ry * rng.uniform(0.8, 1.2) * height
    y, x = np.ogrid[0:height, 0:width]
    angle = np.arctan2((y - cy) / ry, (x - cx) / rx)
    wobble = 1 + 0.06 * np.sin(3 * angle + rng.uniform(0, 2 * np.pi))  # break the perfect ellipse
    inside = (((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2) <= wobble**2
    feather = rng.uniform(0.02, 0.06) * min(height, width)
    mask = cv2.GaussianBlur(inside.astype(np.float32), (0, 0), feather)
    return np.asarray(mask / max(float(mask.max()), 1e-6), dtype=np.float32)


def face_outline(landmarks: Sequence[Point], rng: np.random.Generator) -> np.ndarray:
    """FACE_OUTLINE placed on a face by its five landmarks, each point jittered by up to 8 %."""
    points = np.asarray(landmarks, dtype=np.float32)
    left, right, nose = points[0:2].mean(axis=0), points[2:4].mean(axis=0), points[4]
    mid = (left + right) / 2
    across = right - left
    distance = max(float(np.linalg.norm(across)), 1.0)
    across = across / distance
    down = np.array([-across[1], across[0]], dtype=np.float32)
    if float(np.dot(nose - mid, down)) < 0:  # the perpendicular that points to the nose
        down = -down
    outline = np.asarray(FACE_OUTLINE, dtype=np.float32) * rng.uniform(0.92, 1.08, (len(FACE_OUTLINE), 2))
    return np.asarray(mid + distance * (outline[:, :1] * across + outline[:, 1:] * down), dtype=np.float32)


def hull_mask(shape: tuple[int, int], rng: np.random.Generator, landmarks: Sequence[Point]) -> np.ndarray:
    """The convex hull of the face outline, eroded or dilated at random and feathered (SBI's mask)."""
    height, width = shape
    hull = cv2.convexHull(np.rint(face_outline(landmarks, rng)).astype(np.int32))
    inside = np.zeros((height, width), dtype=np.uint8)
    cv2.fillConvexPoly(inside, hull, 1)
    side = max(1, round(rng.uniform(0.0, 0.06) * min(height, width)))
    kernel = np.ones((side, side), dtype=np.uint8)
    inside = np.asarray(cv2.erode(inside, kernel) if rng.random() < 0.5 else cv2.dilate(inside, kernel), np.uint8)
    feather = rng.uniform(0.02, 0.06) * min(height, width)
    mask = cv2.GaussianBlur(inside.astype(np.float32), (0, 0), feather)
    return np.asarray(mask / max(float(mask.max()), 1e-6), dtype=np.float32)
