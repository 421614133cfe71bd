"""The geometry of a video's score timeline as inline SVG: drawn by the template, no script, no image fetch."""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from scanner.queries import FramePoint

DEFAULT_CHART_WIDTH_PX = 760
DEFAULT_CHART_HEIGHT_PX = 200
MIN_BAND_WIDTH_PX = 3.0
_PAD_LEFT_PX, _PAD_RIGHT_PX, _PAD_TOP_PX, _PAD_BOTTOM_PX = 40, 12, 10, 28


@dataclass(frozen=True)
class Band:
    x: float
    width: float
    label: str


@dataclass(frozen=True)
class Dot:
    """One sampled frame on the chart: where it is drawn, whether it lies in a flagged range, and what it says."""

    x: float
    y: float
    flagged: bool
    frame_index: int
    timestamp_s: float
    score: float


@dataclass(frozen=True)
class Tick:
    at: float
    label: str


@dataclass(frozen=True)
class TimelineChart:
    width: int
    height: int
    left: float
    right: float
    top: float
    bottom: float
    points: str  # the polyline's "x,y x,y …"
    dots: list[Dot]
    threshold_y: float | None
    bands: list[Band]
    x_ticks: list[Tick]
    y_ticks: list[Tick]


def _half_step(times: Sequence[float]) -> float:
    gaps = [b - a for a, b in itertools.pairwise(times) if b > a]
    return statistics.median(gaps) / 2 if gaps else 0.5


def timeline_chart(
    frames: Sequence[FramePoint],
    threshold: float | None,
    ranges: Sequence[tuple[float, float]],
    *,
    width: int = DEFAULT_CHART_WIDTH_PX,
    height: int = DEFAULT_CHART_HEIGHT_PX,
) -> TimelineChart | None:
    """Score over time, the threshold, and each flagged range shaded from its first to its last flagged
    sample (as its caption and `deepscan show --plot` give it); None when there are no frames."""
    if not frames:
        return None
    times = [f.timestamp_s for f in frames]
    half = _half_step(times)
    span = max(times[-1] + half, 1.0)
    left, right, top, bottom = _PAD_LEFT_PX, width - _PAD_RIGHT_PX, _PAD_TOP_PX, height - _PAD_BOTTOM_PX

    def x(t: float) -> float:
        return round(left + (right - left) * min(max(t, 0.0), span) / span, 1)

    def y(score: float) -> float:
        return round(bottom - (bottom - top) * min(max(score, 0.0), 1.0), 1)

    bands = [_band(x(a), x(b), f"{a:.2f}s-{b:.2f}s") for a, b in ranges]
    flagged = [any(a <= f.timestamp_s <= b for a, b in ranges) for f in frames]
    step = _tick_step(span)
    return TimelineChart(
        width=width,
        height=height,
        left=left,
        right=right,
        top=top,
        bottom=bottom,
        points=" ".join(f"{x(f.timestamp_s)},{y(f.score)}" for f in frames),
        dots=[
            Dot(x(f.timestamp_s), y(f.score), hit, f.frame_index, f.timestamp_s, f.score)
            for f, hit in zip(frames, flagged, strict=True)
        ],
        threshold_y=y(threshold) if threshold is not None else None,
        bands=bands,
        x_ticks=[Tick(x(i * step), f"{i * step:g}s") for i in range(int(span / step) + 1)],
        y_ticks=[Tick(y(v), f"{v:.1f}") for v in (0.0, 0.5, 1.0)],
    )


def _band(start_x: float, end_x: float, label: str) -> Band:
    """Shading from the first to the last flagged sample, exactly the range the caption prints (a single
    sample gets a thin band centred on it, so it stays visible)."""
    if end_x - start_x >= MIN_BAND_WIDTH_PX:
        return Band(start_x, round(end_x - start_x, 1), label)
    middle = (start_x + end_x) / 2
    return Band(round(middle - MIN_BAND_WIDTH_PX / 2, 1), MIN_BAND_WIDTH_PX, label)


def _tick_step(span: float) -> float:
    for step in (0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600):
        if span / step <= 10:
            return float(step)
    return 1200.0
