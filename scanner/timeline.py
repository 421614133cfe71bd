"""A video's per-frame scores over time: the flagged time ranges, and a PNG plot of the timeline.

The ranges follow the same rule as the video's verdict (`scanner.aggregation.segment_scores`): under
the default strategy a video has a flagged range exactly when its verdict is `fake`.

The plot draws on a private matplotlib Figure with the Agg canvas, so it needs no display and
never touches pyplot's global state (safe in threads and in tests).
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from scanner.aggregation import DEFAULT_VIDEO_STRATEGY, segment_min_samples, segment_scores

DEFAULT_PLOT_WIDTH_PX = 1200
DEFAULT_PLOT_HEIGHT_PX = 400
DEFAULT_PLOT_DPI = 100

Sample = tuple[float, float]
"""(timestamp in seconds, score in [0, 1]) of one sampled frame."""


def per_timestamp(frames: Iterable[Sample]) -> list[Sample]:
    """Samples sorted by time, one per timestamp (the highest score when several faces share it)."""
    best: dict[float, float] = {}
    for ts, score in frames:
        best[ts] = max(score, best.get(ts, score))
    return sorted(best.items())


def flagged_ranges(
    frames: Iterable[Sample], threshold: float, *, strategy: str = DEFAULT_VIDEO_STRATEGY
) -> list[tuple[float, float]]:
    """(start_s, end_s) of each flagged segment: a run of consecutive samples scoring >= threshold,
    at least as many as `strategy` asks for (`segmentsN`: N; any other strategy: one).

    A range spans its first to its last flagged sample; a lone flagged frame gives start == end.
    Pass the strategy the item was judged with: under `segments`, `segmentsN` and `max` the item's
    verdict is `fake` exactly when this returns a range.
    """
    samples = per_timestamp(frames)
    evidence = segment_scores([score for _, score in samples], segment_min_samples(strategy))
    ranges: list[tuple[float, float]] = []
    start: float | None = None
    last = 0.0
    for (ts, _), score in zip(samples, evidence, strict=True):
        if score >= threshold:
            start = ts if start is None else start
            last = ts
        elif start is not None:
            ranges.append((start, last))
            start = None
    if start is not None:
        ranges.append((start, last))
    return ranges


def _half_step(samples: list[Sample]) -> float:
    """Half the typical sampling interval: how far a flagged sample's shading reaches either side."""
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(samples) if b[0] > a[0]]
    return statistics.median(gaps) / 2 if gaps else 0.5


def plot_timeline(
    frames: Iterable[Sample],
    threshold: float,
    out_png: Path,
    *,
    title: str,
    strategy: str = DEFAULT_VIDEO_STRATEGY,
    width_px: int = DEFAULT_PLOT_WIDTH_PX,
    height_px: int = DEFAULT_PLOT_HEIGHT_PX,
    faces: Sequence[tuple[float, Sequence[int]]] = (),
) -> Path:
    """Draw score over time, the threshold line and the flagged ranges (under `strategy`) shaded; write a
    PNG of exactly width_px x height_px pixels to `out_png` and return it.

    With `faces` ((timestamp, [x, y, w, h]) of the scored face per frame), a panel below follows
    that face: its centre and size in pixels, a gap where no face was found."""
    # matplotlib takes 0.3-0.5 s to import; only a plot needs it, and the CLI and the API load this module
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    samples = per_timestamp(frames)
    if not samples:
        raise ValueError("no frames to plot")
    fig = Figure(figsize=(width_px / DEFAULT_PLOT_DPI, height_px / DEFAULT_PLOT_DPI), dpi=DEFAULT_PLOT_DPI)
    FigureCanvasAgg(fig)
    if faces:
        ax, track = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
        _plot_face_track(track, faces, samples)
    else:
        ax = fig.add_subplot()
    times, scores = zip(*samples, strict=True)
    half = _half_step(samples)
    for start, end in flagged_ranges(samples, threshold, strategy=strategy):
        # Exactly the range `show` prints beside the plot (first to last flagged sample), so the two agree;
        # a single flagged sample is a line.
        if end > start:
            ax.axvspan(start, end, color="tab:red", alpha=0.18, linewidth=0)
        else:
            ax.axvline(start, color="tab:red", alpha=0.35, linewidth=2)
    ax.plot(times, scores, color="tab:blue", marker="o", markersize=3, linewidth=1.5, label="score (max over faces)")
    ax.axhline(threshold, color="tab:red", linestyle="--", linewidth=1.2, label=f"threshold {threshold:.3f}")
    handles, _ = ax.get_legend_handles_labels()
    handles.append(Patch(color="tab:red", alpha=0.18, label="flagged"))
    ax.legend(handles=handles, loc="upper right", fontsize="small")
    ax.set(xlabel="" if faces else "time (s)", ylabel="P(fake)", title=title, ylim=(0.0, 1.02))
    ax.set_xlim(left=0.0, right=max(times[-1] + half, 1.0))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, format="png", dpi=DEFAULT_PLOT_DPI)
    return out_png


def _plot_face_track(ax: Any, faces: Sequence[tuple[float, Sequence[int]]], samples: list[Sample]) -> None:
    """The scored face's centre (x, y) and size over time; frames sampled without a face break the lines."""
    with_face = {round(ts, 6): box for ts, box in faces}
    times = [ts for ts, _ in samples]
    boxes = [with_face.get(round(ts, 6)) for ts in times]
    series = {
        "face centre x": [b[0] + b[2] / 2 if b else float("nan") for b in boxes],
        "face centre y": [b[1] + b[3] / 2 if b else float("nan") for b in boxes],
        "face size": [max(b[2], b[3]) if b else float("nan") for b in boxes],
    }
    for (label, values), colour in zip(series.items(), ("tab:green", "tab:purple", "tab:gray"), strict=True):
        ax.plot(times, values, color=colour, marker=".", markersize=3, linewidth=1.2, label=label)
    ax.set(xlabel="time (s)", ylabel="px")
    ax.legend(loc="upper right", fontsize="x-small", ncol=3)
    ax.grid(alpha=0.3)
