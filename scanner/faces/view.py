"""The face view: how one image becomes the model's inputs, defined once for training, evaluation
and scanning, and stored in the checkpoint so the workers show the model what it was trained on.

A view names a face detector (`hog`: dlib with 5-point landmarks, `haar`: OpenCV's cascade, or
`none` for data that is already face crops), whether to level the eyes using the landmarks, the
crop margin, and how many faces one image may give. The rules:
- every face found (largest first, at most `max_faces`) becomes one square crop: the box's longer
  side plus `margin` of it on each side, rotated so the eyes are level when `align` is on and the
  detector gives landmarks; the model's preprocessing then resizes it;
- no face found, or detector `none`: the whole image is the one input;
- an image's score is the maximum over its inputs (scanner/aggregation.py); training learns from
  the largest face only, with the image's label.
Pixel bounds: detection runs on a bounded copy (each detector's `DEFAULT_DETECT_MAX_SIDE_PX`) and a
crop is never larger than the image's shorter side.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Protocol

import numpy as np

from scanner.errors import ConfigError
from scanner.faces.boxes import BBox, aligned_crop, crop_face

FACE_DETECTORS = ("hog", "haar", "none")
DEFAULT_FACE_DETECTOR = "hog"
DEFAULT_FACE_MARGIN = 0.3  # crop margin on each side, as a fraction of the face box side
DEFAULT_MAX_FACES = 8  # faces scored per image or frame, largest first
METADATA_KEY = "face_view"


class Detector(Protocol):
    name: str

    def detect(self, rgb: np.ndarray) -> list[BBox]: ...


@dataclass(frozen=True)
class Face:
    """One model input: the crop (or whole image) and where it came from (None for a whole image)."""

    rgb: np.ndarray
    box: BBox | None


@dataclass(frozen=True)
class FaceView:
    detector: str = DEFAULT_FACE_DETECTOR
    align: bool = True
    margin: float = DEFAULT_FACE_MARGIN
    max_faces: int = DEFAULT_MAX_FACES

    def __post_init__(self) -> None:
        if self.detector not in FACE_DETECTORS:
            raise ConfigError(f"unknown face detector {self.detector!r}: choose one of {', '.join(FACE_DETECTORS)}")
        if not 0 <= self.margin <= 2:
            raise ConfigError(f"face margin {self.margin} must be between 0 and 2 (a fraction of the face box)")
        if self.max_faces < 1:
            raise ConfigError(f"max faces {self.max_faces} must be at least 1")

    @classmethod
    def whole_image(cls) -> FaceView:
        """No face detection: the view of data sets that are already aligned face crops."""
        return cls(detector="none", align=False)

    @classmethod
    def named(cls, detector: str) -> FaceView:
        """The default view for a detector name (`none`: the whole image)."""
        return cls.whole_image() if detector == "none" else cls(detector=detector)

    @property
    def finds_faces(self) -> bool:
        return self.detector != "none"

    def describe(self) -> str:
        """One line for people: what the model is shown."""
        if not self.finds_faces:
            return "whole image (no face detection)"
        aligned = "eyes levelled, " if self.align and self.detector == "hog" else ""
        return f"faces found by {self.detector} ({aligned}margin {self.margin:g}, up to {self.max_faces} a frame)"

    def key(self) -> str:
        """A stable string naming this view (for caches and comparisons)."""
        return json.dumps(asdict(self), sort_keys=True)

    def to_metadata(self) -> dict[str, str]:
        return {METADATA_KEY: self.key()}

    @classmethod
    def from_metadata(cls, meta: Mapping[str, str]) -> FaceView:
        """The view a checkpoint was trained with. Checkpoints written before face views existed were
        trained and evaluated on whole images, so that is what they get."""
        text = meta.get(METADATA_KEY)
        if text is None:
            return cls.whole_image()
        try:
            fields = json.loads(text)
            return cls(
                detector=str(fields["detector"]),
                align=bool(fields["align"]),
                margin=float(fields["margin"]),
                max_faces=int(fields["max_faces"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"checkpoint face view {text!r} is malformed ({exc})") from None

    def faces(self, rgb: np.ndarray, boxes: list[BBox] | None = None) -> list[Face]:
        """The model inputs of one HxWx3 uint8 RGB image, largest face first.

        `boxes` are this view's detections when already known (a cache); otherwise the view's
        detector runs here.
        """
        if not self.finds_faces:
            return [Face(rgb, None)]
        found = (detect(self, rgb) if boxes is None else boxes)[: self.max_faces]
        if not found:
            return [Face(rgb, None)]
        return [Face(self.crop(rgb, box), box) for box in found]

    def crop(self, rgb: np.ndarray, box: BBox) -> np.ndarray:
        if self.align:
            return aligned_crop(rgb, box, margin=self.margin)
        return crop_face(rgb, box, margin=self.margin)


_detectors: dict[str, Detector] = {}
_detectors_lock = threading.Lock()


def detector_for(name: str) -> Detector:
    """The process's one detector of that name (each is safe to share between threads)."""
    with _detectors_lock:
        if name not in _detectors:
            _detectors[name] = _load(name)
        return _detectors[name]


def _load(name: str) -> Detector:
    if name == "hog":
        from scanner.faces.hog import HogDetector

        return HogDetector()
    if name == "haar":
        from scanner.faces.haar import HaarDetector

        return HaarDetector()
    raise ConfigError(f"face detector {name!r} finds no faces")


def detect(view: FaceView, rgb: np.ndarray) -> list[BBox]:
    """Faces in `rgb` by the view's detector, largest first; none for the whole-image view."""
    if not view.finds_faces:
        return []
    return detector_for(view.detector).detect(rgb)
