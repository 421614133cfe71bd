"""The face view: faces found with landmarks, eyes levelled, the whole image when none is found,
recorded in the checkpoint, and the same crops from a detection cache as from a fresh detection."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from scanner.checkpoint import load_checkpoint, read_checkpoint_meta, save_checkpoint
from scanner.errors import ConfigError
from scanner.faces import FaceView, detect
from scanner.faces.hog import HogDetector
from scanner.media import decode_image
from tests import media_factory as mf
from tests.training_helpers import tiny_meta, tiny_model
from training.datasets import crop_landmarks
from training.facecache import FaceCache

HOG = FaceView(detector="hog")


def rotated(rgb: np.ndarray, degrees: float) -> np.ndarray:
    height, width = rgb.shape[:2]
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), degrees, 1.0)
    return cv2.warpAffine(rgb, matrix, (width, height), borderMode=cv2.BORDER_REPLICATE)


def test_hog_finds_the_face_with_five_landmarks_inside_it() -> None:
    rgb = mf.face_rgb((400, 400), seed=1)
    [box] = HogDetector().detect(rgb)
    assert box.landmarks is not None
    assert len(box.landmarks) == 5
    assert all(box.x <= x <= box.x + box.w and box.y <= y <= box.y + box.h for x, y in box.landmarks)
    assert 0.3 * 400 < box.w < 400


@pytest.mark.parametrize("degrees", [-20, 20])
def test_a_tilted_face_comes_out_with_level_eyes(degrees: float) -> None:
    tilted = rotated(mf.face_rgb((400, 400), seed=1), degrees)
    [box] = detect(HOG, tilted)
    assert abs(box.eye_angle_deg()) > 10, "the detector sees the tilt"

    [face] = HOG.faces(tilted)

    [again] = detect(HOG, face.rgb)
    assert abs(again.eye_angle_deg()) < 4, "the crop the model sees has level eyes"
    unaligned = FaceView(detector="hog", align=False).faces(tilted)[0]
    assert face.rgb.shape == unaligned.rgb.shape, "alignment rotates; it does not change the crop's size"


def test_no_face_gives_the_whole_image() -> None:
    pattern = mf.pattern_rgb((320, 240), seed=0)
    [face] = HOG.faces(pattern)
    assert face.box is None
    assert face.rgb is pattern
    [whole] = FaceView.whole_image().faces(mf.face_rgb((200, 200), seed=1))
    assert whole.box is None


def test_several_faces_come_largest_first_up_to_the_limit() -> None:
    scene = np.full((400, 700, 3), 120, np.uint8)
    scene[20:340, 10:330] = mf.face_rgb((320, 320), seed=1)
    scene[150:350, 420:620] = mf.face_rgb((200, 200), seed=2)
    faces = HOG.faces(scene)
    assert len(faces) == 2
    assert faces[0].box is not None
    assert faces[1].box is not None
    assert faces[0].box.area > faces[1].box.area
    assert len(FaceView(detector="hog", max_faces=1).faces(scene)) == 1


def test_the_face_view_survives_a_checkpoint_round_trip(tmp_path: Path) -> None:
    view = FaceView(detector="haar", align=False, margin=0.25, max_faces=3)
    meta = tiny_meta()
    meta.face_view = view
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, tiny_model(), meta)
    assert load_checkpoint(path).meta.face_view == view
    assert read_checkpoint_meta(path)[0].face_view.describe().startswith("faces found by haar")


def test_checkpoints_from_before_face_views_get_the_whole_image(tmp_path: Path) -> None:
    meta = tiny_meta().to_metadata()
    del meta["face_view"]
    assert FaceView.from_metadata(meta) == FaceView.whole_image()


def test_unknown_or_malformed_views_are_one_line_errors() -> None:
    with pytest.raises(ConfigError, match="unknown face detector 'mtcnn'"):
        FaceView(detector="mtcnn")
    with pytest.raises(ConfigError, match="malformed"):
        FaceView.from_metadata({"face_view": "{not json"})


def test_cached_detections_give_the_same_crops(tmp_path: Path) -> None:
    data = mf.face_photo(tmp_path / "face.jpg", size=(300, 300), seed=2).read_bytes()
    rgb = decode_image(data)
    cache = FaceCache(tmp_path / "cache", "hog")
    assert cache.get(data) is None
    cache.put(data, detect(HOG, rgb))
    cached = cache.get(data)
    assert cached is not None
    fresh, again = HOG.faces(rgb), HOG.faces(rgb, cached)
    assert len(fresh) == len(again) == 1
    assert np.array_equal(fresh[0].rgb, again[0].rgb)


def test_a_missing_dlib_is_a_one_line_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "dlib", None)  # `import dlib` now raises ImportError
    with pytest.raises(ConfigError, match="pip install dlib-bin face-recognition-models"):
        HogDetector()


def test_self_blending_places_its_mask_on_the_landmarks_of_the_view_crop() -> None:
    [face] = HOG.faces(mf.face_rgb((400, 400), seed=1))
    points = np.array(crop_landmarks(face.rgb, HOG))
    [again] = detect(HOG, face.rgb)
    assert again.landmarks is not None
    assert np.abs(points - np.array(again.landmarks)).max() < 0.05 * face.rgb.shape[0]
