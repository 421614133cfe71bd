"""Faces: the face view that turns an image into model inputs, and the detectors behind it."""

from scanner.faces.boxes import BBox
from scanner.faces.view import DEFAULT_FACE_DETECTOR, FACE_DETECTORS, Face, FaceView, detect, detector_for

__all__ = ["DEFAULT_FACE_DETECTOR", "FACE_DETECTORS", "BBox", "Face", "FaceView", "detect", "detector_for"]
