"""Flagged time ranges of a video and the PNG of its score timeline."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from deepscan.web.charts import timeline_chart
from scanner.queries import FramePoint
from scanner.timeline import flagged_ranges, per_timestamp, plot_timeline


def test_runs_at_or_above_the_threshold_become_ranges() -> None:
    frames = [(i * 0.5, 0.9 if 4 <= i <= 8 or i == 15 else 0.1) for i in range(20)]
    assert flagged_ranges(frames, 0.5) == [(2.0, 4.0), (7.5, 7.5)]


def test_a_range_open_at_the_end_and_a_score_equal_to_the_threshold_are_flagged() -> None:
    assert flagged_ranges([(0.0, 0.5), (1.0, 0.2), (2.0, 0.7), (3.0, 0.8)], 0.5) == [(0.0, 0.0), (2.0, 3.0)]


def test_nothing_flagged_or_no_frames_gives_no_ranges() -> None:
    assert flagged_ranges([(0.0, 0.1), (1.0, 0.2)], 0.5) == []
    assert flagged_ranges([], 0.5) == []


def test_unsorted_frames_and_several_faces_per_frame_use_the_highest_score() -> None:
    frames = [(2.0, 0.1), (0.0, 0.1), (1.0, 0.9), (1.0, 0.2), (2.0, 0.95)]
    assert per_timestamp(frames) == [(0.0, 0.1), (1.0, 0.9), (2.0, 0.95)]
    assert flagged_ranges(frames, 0.5) == [(1.0, 2.0)]


def test_ranges_follow_the_strategy_the_item_was_judged_with() -> None:
    frames = [(float(i), s) for i, s in enumerate([0.1, 0.9, 0.1, 0.8, 0.7, 0.9, 0.1])]
    assert flagged_ranges(frames, 0.5) == [(1.0, 1.0), (3.0, 5.0)]
    assert flagged_ranges(frames, 0.5, strategy="segments2") == [(3.0, 5.0)]
    assert flagged_ranges(frames, 0.5, strategy="segments4") == []
    assert flagged_ranges(frames, 0.5, strategy="top3_mean") == [(1.0, 1.0), (3.0, 5.0)]


def test_a_clip_shorter_than_the_segment_length_is_one_segment() -> None:
    assert flagged_ranges([(0.0, 0.9), (1.0, 0.8)], 0.5, strategy="segments3") == [(0.0, 1.0)]
    assert flagged_ranges([(0.0, 0.9), (1.0, 0.3)], 0.5, strategy="segments3") == []


def test_plot_is_a_png_of_the_fixed_size_with_the_flagged_range_shaded(tmp_path: Path) -> None:
    frames = [(float(i), 0.9 if 10 <= i <= 14 else 0.1) for i in range(30)]
    out = plot_timeline(frames, 0.5, tmp_path / "nested" / "t.png", title="item 7")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(out) as png:
        assert png.size == (1200, 400)
        rgb = png.convert("RGB")
    # Down a pixel column inside the flagged range most of the plot is red shading; outside it
    # only the dashed threshold line is red.
    assert _reddish_pixels(rgb, x=_x_pixel(12.3, rgb)) > 150
    assert _reddish_pixels(rgb, x=_x_pixel(23.3, rgb)) < 10


def test_plot_shades_only_the_segments_of_its_strategy(tmp_path: Path) -> None:
    frames = [(float(i), 0.9 if 10 <= i <= 14 or i == 23 else 0.1) for i in range(30)]
    with Image.open(plot_timeline(frames, 0.5, tmp_path / "t.png", title="item 8", strategy="segments2")) as png:
        rgb = png.convert("RGB")
    assert _reddish_pixels(rgb, x=_x_pixel(12.3, rgb)) > 150
    assert _reddish_pixels(rgb, x=_x_pixel(23.3, rgb)) < 10  # a lone frame is no segment under segments2


def test_plot_without_frames_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no frames"):
        plot_timeline([], 0.5, tmp_path / "t.png", title="empty")


def _x_pixel(seconds: float, rgb: Image.Image) -> int:
    """Where `seconds` lies horizontally: the axes span about 6 % to 98 % of the width, 0 s to ~30 s."""
    left, right = 0.06 * rgb.width, 0.98 * rgb.width
    return int(left + (right - left) * seconds / 30.5)


def _reddish_pixels(rgb: Image.Image, *, x: int) -> int:
    column = [rgb.getpixel((x, y)) for y in range(rgb.height)]
    return sum(1 for r, g, b in column if r > g + 20 and r > b + 20)  # type: ignore[misc]


def test_plot_shading_is_the_range_show_prints(tmp_path: Path) -> None:
    # A sample every 4 s, flagged at 12 s and 16 s: shading from 12 s to 16 s, not half a step (2 s) beyond.
    frames = [(float(t), 0.9 if t in (12, 16) else 0.1) for t in range(0, 29, 4)]
    assert flagged_ranges(frames, 0.5) == [(12.0, 16.0)]
    with Image.open(plot_timeline(frames, 0.5, tmp_path / "t.png", title="item 9")) as png:
        rgb = png.convert("RGB")
    assert _reddish_pixels(rgb, x=_x_pixel(14.0, rgb)) > 150
    assert _reddish_pixels(rgb, x=_x_pixel(17.2, rgb)) < 10
    assert _reddish_pixels(rgb, x=_x_pixel(10.8, rgb)) < 10


def test_console_chart_shades_exactly_its_caption() -> None:
    frames = [FramePoint(i, 0.25 * i, 0.9 if 2 <= i <= 5 else 0.1, 1) for i in range(12)]
    ranges = flagged_ranges([(f.timestamp_s, f.score) for f in frames], 0.5)
    assert ranges == [(0.5, 1.25)]
    chart = timeline_chart(frames, 0.5, ranges)
    assert chart is not None
    (band,) = chart.bands
    starts = {dot.x for dot in chart.dots if dot.flagged}
    assert band.x == min(starts)  # from the first flagged point...
    assert band.x + band.width == pytest.approx(max(starts), abs=0.11)  # ...to the last, not beyond
    assert band.label == "0.50s-1.25s"
