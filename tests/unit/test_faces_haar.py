"""Faces are found in pictures that have them, not in ones that do not, and cropped as the classifier expects."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from scanner.errors import ConfigError
from scanner.faces.boxes import BBox, crop_face
from scanner.faces.haar import HaarDetector, detection_scale
from scanner.media import decode_image
from tests import media_factory as mf
from workers.frames import sample_frames


@pytest.fixture(scope="module")
def detector() -> HaarDetector:
    return HaarDetector()


def covers_centre(box: BBox, width: int, height: int) -> bool:
    return box.x < width / 2 < box.x + box.w and box.y < height / 2 < box.y + box.h


@pytest.mark.parametrize("size", [(128, 128), (256, 256), (640, 360), (300, 500)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_drawn_face_photo_is_found(
    tmp_path: Path, detector: HaarDetector, size: tuple[int, int], seed: int
) -> None:
    rgb = decode_image(mf.face_photo(tmp_path / "face.jpg", size=size, seed=seed).read_bytes())

    [box] = detector.detect(rgb)

    assert covers_centre(box, *size)
    assert 0.4 * min(size) < box.w < min(size)  # the face, not an eye or the whole frame


@pytest.mark.parametrize("seed", range(12))
def test_pictures_without_faces_give_none(detector: HaarDetector, seed: int) -> None:
    assert detector.detect(mf.pattern_rgb((320, 240), seed=seed)) == []


def test_several_faces_come_largest_first(detector: HaarDetector) -> None:
    scene = np.full((300, 500, 3), 120, np.uint8)
    scene[20:276, 10:266] = mf.face_rgb((256, 256), seed=1)
    scene[100:228, 330:458] = mf.face_rgb((128, 128), seed=2)

    boxes = detector.detect(scene)

    assert len(boxes) == 2
    assert boxes[0].area > boxes[1].area
    assert boxes[0].x < 266
    assert boxes[1].x > 300


def test_big_images_are_searched_shrunk_but_boxes_fit_the_original(detector: HaarDetector) -> None:
    big = mf.face_rgb((1600, 1200), seed=3)

    [box] = detector.detect(big)

    assert covers_centre(box, 1600, 1200)
    assert box.w > 500
    assert box.x + box.w <= 1600
    assert box.y + box.h <= 1200


def test_faces_are_found_in_sampled_video_frames(tmp_path: Path, detector: HaarDetector) -> None:
    path = mf.write_video(tmp_path / "talking.mp4", seconds=1.0, fps=10.0, size=(256, 256), face=True)

    frame = sample_frames(path).frames[0].rgb

    assert len(detector.detect(frame)) == 1


def test_one_detector_serves_many_threads(detector: HaarDetector) -> None:
    images = [mf.face_rgb((200, 200), seed=s) for s in range(4)] + [
        mf.pattern_rgb((200, 200), seed=s) for s in range(4)
    ]
    expected = [detector.detect(img) for img in images]

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(detector.detect, images * 2))

    assert results == expected * 2


def test_a_missing_cascade_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot load the Haar cascade"):
        HaarDetector(cascade_path=tmp_path / "nope.xml")


# --- cropping -----------------------------------------------------------------------------------


def test_a_crop_is_square_with_the_margin_around_the_face() -> None:
    image = np.zeros((400, 600, 3), np.uint8)
    box = BBox(250, 150, 100, 100)

    crop = crop_face(image, box, margin=0.3)

    assert crop.shape == (160, 160, 3)  # 100 + 2 x 30


def test_the_crop_holds_the_face_centred() -> None:
    image = np.zeros((400, 600, 3), np.uint8)
    image[150:250, 250:350] = 255  # the "face"

    crop = crop_face(image, BBox(250, 150, 100, 100), margin=0.3)

    assert crop[30:130, 30:130].min() == 255
    assert crop[:30].max() == 0
    assert crop[130:].max() == 0


def test_a_face_at_the_edge_gives_a_square_crop_inside_the_image() -> None:
    image = np.zeros((400, 600, 3), np.uint8)
    image[330:400, 0:60] = 255  # a face cut by the bottom-left corner

    crop = crop_face(image, BBox(0, 330, 60, 70), margin=0.3)

    assert crop.shape == (112, 112, 3)  # 70 x 1.6: shifted inside the image instead of cut off
    assert (crop == 255).all(axis=2).sum() == 60 * 70  # the whole face is in it


def test_a_face_filling_the_image_is_clipped_to_the_image() -> None:
    image = np.zeros((100, 300, 3), np.uint8)

    crop = crop_face(image, BBox(100, 0, 100, 100), margin=0.3)

    assert crop.shape == (100, 100, 3)


def test_crop_and_detect_work_together(detector: HaarDetector) -> None:
    rgb = mf.face_rgb((640, 360), seed=4)

    crops = [crop_face(rgb, box, margin=0.3) for box in detector.detect(rgb)]

    assert len(crops) == 1
    assert crops[0].shape[0] == crops[0].shape[1] == 360  # face side ~230 x 1.6 > 360: clipped to the height
    assert crops[0].flags["C_CONTIGUOUS"]


# --- bounded cost whatever the image's shape ----------------------------------------------------


def test_ordinary_photos_are_searched_at_about_240_pixels_on_their_shorter_side() -> None:
    assert detection_scale(4000, 3000) == pytest.approx(0.08)  # 320 x 240
    assert detection_scale(200, 150) == 1.0  # never enlarged


def test_long_strips_are_searched_at_most_2048_pixels_long() -> None:
    scale = detection_scale(20_000, 2_000)

    assert 20_000 * scale == pytest.approx(2048)


def test_a_strip_too_thin_for_a_detection_window_is_not_searched(detector: HaarDetector) -> None:
    strip = np.zeros((250, 256_000, 3), np.uint8)  # at the 64-megapixel image cap

    assert detector.detect(strip) == []  # 250 x 2048/256000 = 2 pixels high: no 24-pixel window fits


def test_a_face_in_a_wide_panorama_is_found_in_original_coordinates(detector: HaarDetector) -> None:
    panorama = np.full((400, 6000, 3), 120, np.uint8)  # 15:1, searched as a 2048 x 137 copy
    panorama[:, 3000:3400] = mf.face_rgb((400, 400), seed=1)

    [box] = detector.detect(panorama)

    assert box.x < 3200 < box.x + box.w
    assert box.y < 200 < box.y + box.h
    assert 150 < box.w < 400
    assert crop_face(panorama, box, margin=0.3).shape[0] > 150  # cropped from the full-resolution image
