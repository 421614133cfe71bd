"""Thumbnails chosen at scan time: small JPEGs of the top-scoring unit and of each flagged segment."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from scanner.thumbnails import DEFAULT_THUMBNAIL_MAX_SIDE_PX, encode_thumbnail, pick, rows_for
from tests import media_factory
from tests.conftest import empty_tables


@dataclass
class Shot:
    frame_index: int
    timestamp_s: float
    score: float | None
    thumbnail: bytes | None


def test_a_thumbnail_is_a_small_jpeg_with_its_longest_side_at_most_160px() -> None:
    frame = media_factory.face_rgb((1280, 720), seed=3)
    data = encode_thumbnail(frame)
    image = Image.open(io.BytesIO(data))
    assert image.format == "JPEG"
    assert max(image.size) == DEFAULT_THUMBNAIL_MAX_SIDE_PX
    assert abs(image.size[0] / image.size[1] - 16 / 9) < 0.02  # the aspect ratio is kept
    assert len(data) < 12_000
    small = encode_thumbnail(np.zeros((40, 30, 3), dtype=np.uint8))
    assert Image.open(io.BytesIO(small)).size == (30, 40)  # never enlarged


def test_an_image_keeps_its_top_scoring_face_only() -> None:
    shots = [Shot(0, 0.0, 0.2, b"a"), Shot(0, 0.0, 0.9, b"b"), Shot(0, 0.0, 0.5, b"c")]
    assert [(s.thumbnail, seg) for s, seg in pick("image", shots, threshold=0.1, strategy="segments")] == [(b"b", None)]


def test_a_video_keeps_the_top_frame_and_the_top_frame_of_each_flagged_range() -> None:
    scores = [0.1, 0.7, 0.8, 0.2, 0.1, 0.95, 0.6, 0.3]
    shots = [Shot(i, float(i), s, f"t{i}".encode()) for i, s in enumerate(scores)]
    chosen = pick("video", shots, threshold=0.5, strategy="segments")
    assert [(s.frame_index, seg) for s, seg in chosen] == [(5, None), (2, (1.0, 2.0)), (5, (5.0, 6.0))]
    frame = encode_thumbnail(media_factory.face_rgb((64, 48), seed=1))
    rows = rows_for(
        7, "video", [Shot(i, float(i), s, frame) for i, s in enumerate(scores)], threshold=0.5, strategy="segments"
    )
    assert [(r["position"], r["start_s"], r["end_s"]) for r in rows] == [(0, None, None), (1, 1.0, 2.0), (2, 5.0, 6.0)]
    assert all((r["width"], r["height"]) == (64, 48) for r in rows)


def test_nothing_is_kept_without_thumbnails() -> None:
    assert pick("image", [Shot(0, 0.0, 0.9, None)], threshold=0.5, strategy="segments") == []


def test_a_scan_keeps_thumbnails_unless_told_not_to(sqlite_url: str, tmp_path: Path) -> None:
    from click.testing import CliRunner
    from sqlalchemy import create_engine, func, select

    from deepscan.cli import cli
    from scanner.models import MediaItem, Thumbnail
    from tests.pipeline_helpers import write_tiny_checkpoint

    checkpoint = write_tiny_checkpoint(tmp_path / "tiny.safetensors")
    media_factory.write_mixed_folder(tmp_path / "media", images=2, videos=0)
    counts = []
    try:
        for flag in ("--thumbnails", "--no-thumbnails"):
            args = ["--database-url", sqlite_url, "scan", str(tmp_path / "media"), "--checkpoint", str(checkpoint)]
            result = CliRunner().invoke(cli, [*args, "--device", "cpu", "--rescan", flag])
            assert result.exit_code == 0, result.output
            with create_engine(sqlite_url).connect() as conn:
                job = conn.scalar(select(func.max(MediaItem.job_id)))
                items = select(MediaItem.id).where(MediaItem.job_id == job)
                found = select(func.count()).select_from(Thumbnail).where(Thumbnail.item_id.in_(items))
                counts.append(conn.scalar(found))
    finally:
        empty_tables(sqlite_url)  # the session's shared SQLite: later tests count its rows
    assert counts == [2, 0]
