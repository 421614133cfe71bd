"""Find faces with OpenCV's bundled Haar cascade: the `haar` face detector of a face view.

Why Haar: the cascade ships inside the opencv-python(-headless) 4.x wheel (`cv2.data`), so it loads
offline with no extra dependency; the classifier is trained on face crops and must see them.

Limits a reviewer should know:
- Frontal, roughly upright faces only: profiles, faces turned more than ~30 degrees, tilted
  heads, heavy occlusion (masks, hands) and very dark or blurred faces are often missed. The
  pipeline then scores the whole image, so a missed face lowers sensitivity, it never drops an item.
- Faces smaller than `DEFAULT_MIN_FACE_FRACTION` of the shorter image side are ignored (tiny
  background faces carry too few pixels for the classifier anyway).
- Detection runs on a copy at most `DEFAULT_DETECT_MAX_SIDE_PX` on its longer side, whatever the
  image's shape, so its cost is bounded. Up to an aspect ratio of about 8:1 this changes nothing
  (the copy is already small, see `detect`); on longer strips the smallest face found grows with
  the ratio, and a strip so thin that no 24-pixel window fits in the copy (a 256000x250 "image")
  is not searched at all: its whole image is scored.
- Occasional false detections on face-like textures; they only add crops to score.
- Opencv 5.x wheels no longer bundle the cascades: `HaarDetector()` then raises ConfigError.

Thread use: one `HaarDetector` may be shared by any number of threads. OpenCV does not promise
that a CascadeClassifier is thread-safe, so each thread lazily loads its own copy (a few
milliseconds, once per thread) instead of serialising detection behind a lock.
"""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np

from scanner.errors import ConfigError
from scanner.faces.boxes import BBox

DEFAULT_CASCADE_NAME = "haarcascade_frontalface_default.xml"
DEFAULT_MIN_FACE_FRACTION = 0.1  # smallest face side, as a fraction of the image's shorter side
DEFAULT_MIN_FACE_PX = 24  # the cascade's own window size; nothing smaller can be found
DEFAULT_DETECT_MAX_SIDE_PX = 2048  # longest side of the copy searched for faces (bounds the cost per image)
DEFAULT_SCALE_FACTOR = 1.1  # pyramid step between detection scales
DEFAULT_MIN_NEIGHBORS = 5  # overlapping hits needed to accept a face (higher: fewer false positives)


def default_cascade_path() -> Path:
    """Where the opencv wheel keeps the frontal-face Haar cascade; ConfigError when it does not."""
    data = getattr(cv2, "data", None)
    directory = getattr(data, "haarcascades", None)
    path = Path(directory or "") / DEFAULT_CASCADE_NAME
    if not directory or not path.is_file():
        raise ConfigError(
            f"OpenCV's Haar cascade {DEFAULT_CASCADE_NAME} is missing: install opencv-python-headless 4.x "
            "(5.x wheels no longer bundle it)"
        )
    return path


class HaarDetector:
    """Frontal-face detection with OpenCV's Haar cascade; safe to share between threads. No landmarks."""

    name = "haar"

    def __init__(
        self,
        *,
        cascade_path: Path | None = None,
        min_face_fraction: float = DEFAULT_MIN_FACE_FRACTION,
    ) -> None:
        self._path = cascade_path or default_cascade_path()
        self._min_face_fraction = min_face_fraction
        self._local = threading.local()
        self._cascade()  # load now so a broken install fails at worker start, not on the first image

    def _cascade(self) -> cv2.CascadeClassifier:
        cascade: cv2.CascadeClassifier | None = getattr(self._local, "cascade", None)
        if cascade is None:
            cascade = cv2.CascadeClassifier(str(self._path))
            if cascade.empty():
                raise ConfigError(f"cannot load the Haar cascade at {self._path}: reinstall opencv-python-headless")
            self._local.cascade = cascade
        return cascade

    def detect(self, rgb: np.ndarray) -> list[BBox]:
        """Faces in an HxWx3 uint8 RGB image, largest first (an empty list when none is found).

        The search runs on a shrunk grey copy (see `detection_scale`); boxes come back in the
        original image's pixel coordinates, so the face view cuts them from the full-resolution image.
        """
        height, width = rgb.shape[:2]
        scale = detection_scale(width, height, min_face_fraction=self._min_face_fraction)
        if min(height, width) * scale < DEFAULT_MIN_FACE_PX:
            return []  # not even one detection window fits: nothing to search
        small = rgb
        if scale < 1.0:  # shrink first: the grey conversion then touches only the small copy
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        # No equalizeHist: the cascade already normalises every window by its own contrast, and
        # equalising amplifies noise in flat areas, which tripled detection time in our measurements.
        gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
        min_side = max(DEFAULT_MIN_FACE_PX, round(min(gray.shape[:2]) * self._min_face_fraction))
        found = self._cascade().detectMultiScale(
            gray, scaleFactor=DEFAULT_SCALE_FACTOR, minNeighbors=DEFAULT_MIN_NEIGHBORS, minSize=(min_side, min_side)
        )
        boxes = [_scaled_box(tuple(int(v) for v in box), scale, width, height) for box in found]
        return sorted(boxes, key=lambda box: box.area, reverse=True)


def detection_scale(width: int, height: int, *, min_face_fraction: float = DEFAULT_MIN_FACE_FRACTION) -> float:
    """The factor (at most 1) by which an image is shrunk before the cascade searches it.

    Two bounds. First, the smallest face looked for (`min_face_fraction` of the shorter side) becomes
    the cascade's own 24-pixel window: more resolution would only multiply the windows to test
    (detection time grows with the square of image size over smallest face), not find more faces;
    this leaves the shorter side at about 240 pixels. Second, the longer side is at most
    `DEFAULT_DETECT_MAX_SIDE_PX`, so a very long strip cannot make the search arbitrarily slow.
    """
    by_face = DEFAULT_MIN_FACE_PX / (min_face_fraction * min(height, width))
    by_side = DEFAULT_DETECT_MAX_SIDE_PX / max(height, width)
    return min(1.0, by_face, by_side)


def _scaled_box(box: tuple[int, ...], scale: float, width: int, height: int) -> BBox:
    x, y, w, h = (round(v / scale) for v in box)
    x, y = max(0, x), max(0, y)
    return BBox(x, y, min(w, width - x), min(h, height - y))
