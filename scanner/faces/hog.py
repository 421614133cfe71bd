"""dlib's HOG face detector with its 5-point landmark model: the `hog` face detector of a face view.

Why this one (measured against the Haar cascade in the README's face-detector table): it finds
tilted and darker faces the cascade misses, gives the eye landmarks that alignment needs, and both
models install from the package registry (`dlib-bin`, and `face-recognition-models`, which ships
`shape_predictor_5_face_landmarks.dat`, trained on dlib's CC0-licensed 5-point data set; the
68-point model beside it is trained on data licensed for research only and is not used).

Cost is bounded like the cascade's: the search runs on a copy whose longer side is at most
`DEFAULT_DETECT_MAX_SIDE_PX`; small images are searched at twice their size, since the detector's
80-pixel window would otherwise miss faces under 80 pixels.

Thread use: dlib's detector and predictor are not documented as thread-safe, so each thread loads
its own pair (about 50 ms, once per thread).
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from scanner.errors import ConfigError
from scanner.faces.boxes import BBox

DEFAULT_DETECT_MAX_SIDE_PX = 1024  # longest side of the copy searched (bounds the cost per image)
DEFAULT_UPSAMPLE_BELOW_PX = 400  # search a copy at twice the size when its shorter side is below this
DEFAULT_MIN_FACE_FRACTION = 0.1  # smallest face side kept, as a fraction of the image's shorter side
LANDMARK_MODEL = "shape_predictor_5_face_landmarks.dat"
INSTALL_HINT = "pip install dlib-bin face-recognition-models"


def landmark_model_path() -> Path:
    """Where the face-recognition-models package keeps the 5-point model (found without importing
    the package, whose __init__ needs setuptools' pkg_resources)."""
    spec = importlib.util.find_spec("face_recognition_models")
    locations = list(spec.submodule_search_locations or []) if spec else []
    path = Path(locations[0]) / "models" / LANDMARK_MODEL if locations else Path(LANDMARK_MODEL)
    if not path.is_file():
        raise ConfigError(f"the hog face detector needs dlib's 5-point landmark model: {INSTALL_HINT}")
    return path


def _dlib() -> Any:
    try:
        import dlib
    except ImportError:
        raise ConfigError(f"the hog face detector needs dlib: {INSTALL_HINT}") from None
    return dlib


class HogDetector:
    """Faces with five landmarks each; safe to share between threads."""

    name = "hog"

    def __init__(self, *, min_face_fraction: float = DEFAULT_MIN_FACE_FRACTION) -> None:
        self._min_face_fraction = min_face_fraction
        self._model = landmark_model_path()
        self._local = threading.local()
        self._models()  # load now so a broken install fails at start, not on the first image

    def _models(self) -> tuple[Any, Any]:
        models: tuple[Any, Any] | None = getattr(self._local, "models", None)
        if models is None:
            dlib = _dlib()
            models = self._local.models = (dlib.get_frontal_face_detector(), dlib.shape_predictor(str(self._model)))
        return models

    def detect(self, rgb: np.ndarray) -> list[BBox]:
        """Faces in an HxWx3 uint8 RGB image with their landmarks, largest first."""
        height, width = rgb.shape[:2]
        scale = min(1.0, DEFAULT_DETECT_MAX_SIDE_PX / max(height, width))
        small = rgb if scale == 1.0 else _resized(rgb, scale)
        upsample = 1 if min(small.shape[:2]) < DEFAULT_UPSAMPLE_BELOW_PX else 0
        detector, predictor = self._models()
        small = np.ascontiguousarray(small)
        min_side = self._min_face_fraction * min(height, width)
        boxes = []
        for rect in detector(small, upsample):
            shape = predictor(small, rect)
            points = tuple((shape.part(i).x / scale, shape.part(i).y / scale) for i in range(shape.num_parts))
            box = _box(rect, scale, width, height, points)
            if box.w > 0 and box.h > 0 and max(box.w, box.h) >= min_side:
                boxes.append(box)
        return sorted(boxes, key=lambda box: box.area, reverse=True)

    def landmarks(self, rgb: np.ndarray, box: BBox) -> tuple[tuple[float, float], ...]:
        """The five landmarks of the face in `box`, with no search: for a crop whose face is known to
        be there (self-blending places its mask with them)."""
        _, predictor = self._models()
        rect = _dlib().rectangle(box.x, box.y, box.x + box.w - 1, box.y + box.h - 1)
        shape = predictor(np.ascontiguousarray(rgb), rect)
        return tuple((float(shape.part(i).x), float(shape.part(i).y)) for i in range(shape.num_parts))


def _resized(rgb: np.ndarray, scale: float) -> np.ndarray:
    height, width = rgb.shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def _box(rect: Any, scale: float, width: int, height: int, points: tuple[tuple[float, float], ...]) -> BBox:
    left, top = max(0, round(rect.left() / scale)), max(0, round(rect.top() / scale))
    right, bottom = min(width, round((rect.right() + 1) / scale)), min(height, round((rect.bottom() + 1) / scale))
    return BBox(left, top, right - left, bottom - top, landmarks=points)
