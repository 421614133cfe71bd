"""A found face (box and optional landmarks) and the two ways a face view cuts it out of an image."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

Point = tuple[float, float]


@dataclass(frozen=True)
class BBox:
    """A face box in pixel coordinates of the image it was found in: top-left corner, width, height.

    `landmarks`, when the detector gives them, are five (x, y) points in the same coordinates:
    dlib's order, the outer and inner corner of one eye, then of the other, then the base of the nose.
    """

    x: int
    y: int
    w: int
    h: int
    landmarks: tuple[Point, ...] | None = None

    @property
    def area(self) -> int:
        return self.w * self.h

    def eye_angle_deg(self) -> float:
        """The angle of the line between the eye centres (0 = level), or 0 without landmarks."""
        if not self.landmarks or len(self.landmarks) < 4:
            return 0.0
        (ax, ay), (bx, by) = _mean(self.landmarks[0:2]), _mean(self.landmarks[2:4])
        if ax > bx:  # measure from the eye on the image's left, whichever the detector listed first
            ax, ay, bx, by = bx, by, ax, ay
        return math.degrees(math.atan2(by - ay, bx - ax))


def _mean(points: tuple[Point, ...]) -> Point:
    return (sum(p[0] for p in points) / len(points), sum(p[1] for p in points) / len(points))


def crop_side(rgb: np.ndarray, box: BBox, margin: float) -> int:
    """The side of the square cut around `box`: its longer side plus `margin` of it on each side,
    never more than the image's shorter side."""
    height, width = rgb.shape[:2]
    return max(1, min(round(max(box.w, box.h) * (1 + 2 * margin)), int(width), int(height)))


def crop_face(rgb: np.ndarray, box: BBox, *, margin: float) -> np.ndarray:
    """A square crop around `box`, `margin` x its side added on every side, kept inside the image.

    The square is shifted (not shrunk) to stay inside the image where it fits, so it stays square;
    only when it is larger than the image is it clipped to the image's shorter side. No resampling.
    """
    height, width = rgb.shape[:2]
    side = crop_side(rgb, box, margin)
    cx, cy = box.x + box.w / 2, box.y + box.h / 2
    left = min(max(0, round(cx - side / 2)), width - side)
    top = min(max(0, round(cy - side / 2)), height - side)
    return np.ascontiguousarray(rgb[top : top + side, left : left + side])


def aligned_crop(rgb: np.ndarray, box: BBox, *, margin: float) -> np.ndarray:
    """The same square as `crop_face`, centred on the box and rotated so the eyes are level.

    It keeps the source's resolution (one bilinear resampling for the rotation, none when the eyes
    are already level): the model's own resize then sees the same pixels as for an unrotated face.
    Pixels past the image's edge repeat the edge.
    """
    import cv2  # here, not at the top: the CLI imports the face view and starts faster without OpenCV

    angle = box.eye_angle_deg()
    if abs(angle) < 0.5:
        return crop_face(rgb, box, margin=margin)
    side = crop_side(rgb, box, margin)
    centre = (box.x + box.w / 2, box.y + box.h / 2)
    matrix = cv2.getRotationMatrix2D(centre, angle, 1.0)
    matrix[:, 2] += np.array([side / 2 - centre[0], side / 2 - centre[1]])
    return cv2.warpAffine(rgb, matrix, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
