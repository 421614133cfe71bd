"""Which frame views an item keeps: the frames of its thumbnails first, then the best, within a byte cap."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scanner import thumbnails


@dataclass
class Shot:
    frame_index: int
    timestamp_s: float
    score: float | None
    thumbnail: bytes | None = b"jpeg"


def noisy_view(seed: int) -> bytes:
    """A 640 px JPEG of noise: large (JPEG cannot squeeze it), like a busy photo."""
    rgb = np.random.default_rng(seed).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    return thumbnails.encode_view(rgb)


def test_a_view_is_at_most_640_px_on_its_longest_side() -> None:
    big = np.zeros((1080, 1920, 3), np.uint8)
    assert thumbnails.jpeg_size(thumbnails.encode_view(big)) == (640, 360)


def test_a_video_keeps_its_top_frames_within_the_count_and_the_byte_cap() -> None:
    shots = [Shot(i, i / 2, score=i / 20) for i in range(20)]
    views = {i: noisy_view(i) for i in range(20)}
    rows = thumbnails.view_rows(7, "video", shots, views, threshold=0.5, strategy="segments")
    assert 1 <= len(rows) < thumbnails.DEFAULT_VIEWS_PER_VIDEO  # the bytes ran out before the count
    assert sum(len(r["jpeg"]) for r in rows) <= thumbnails.DEFAULT_VIEW_MAX_BYTES
    assert rows[0]["frame_index"] == 19  # the top-scoring frame (the thumbnail's) comes first
    assert all(r["item_id"] == 7 and max(r["width"], r["height"]) <= 640 for r in rows)


def test_small_views_stop_at_the_frame_count() -> None:
    shots = [Shot(i, float(i), score=0.9 - i / 100) for i in range(12)]
    views = {i: thumbnails.encode_view(np.zeros((90, 160, 3), np.uint8)) for i in range(12)}
    rows = thumbnails.view_rows(1, "video", shots, views, threshold=0.5, strategy="segments")
    assert [r["frame_index"] for r in rows] == list(range(thumbnails.DEFAULT_VIEWS_PER_VIDEO))


def test_no_views_without_stored_frames() -> None:
    assert thumbnails.view_rows(1, "image", [Shot(0, 0.0, 0.7)], {}, threshold=0.5, strategy="segments") == []
