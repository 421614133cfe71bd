"""How per-face and per-frame scores become one item score (the strategy is stored with the verdict).

Image: the maximum over detected faces (the whole image when none is found). Video: the frame
scores (each frame already the max over its faces, in time order) reduced by a named strategy.

The default, `segments`, makes the verdict and the flagged time ranges one rule: a video is `fake`
exactly when its timeline has a flagged segment, a run of consecutive samples at or above the
threshold. `segmentsN` asks for runs of at least N samples, so that N-1 noisy frames in a row flag
nothing; `segments` is `segments1`. Both go through `segment_scores`, which `scanner.timeline`
uses for the ranges: given the item's strategy, `deepscan show` never prints a flagged range
under a `real` verdict, nor a `fake` verdict without one.

What that guarantees in time depends on the sampling (workers/frames.py): n = ceil(duration x fps)
samples, at most max_frames, at the middles of n equal slices, so they are duration / n apart
(give or take one video frame). A manipulated segment at least N spacings long holds at least N
samples and is flagged when the model scores them at or above the threshold. A shorter segment
can fall between samples: no strategy flags what was not sampled. At 1 fps `segments` therefore
catches a 1 s segment in any video of up to max_frames seconds, and 10 % of a clip only once the
clip has at least 10 samples.

`mean`, `max` and `topK_mean` (the mean of the K highest frames) stay for the jobs that recorded
them. `max` agrees with the ranges (it is `segments`); `mean` and `topK_mean` can call a video with
a flagged range `real`, which is why they are no longer the default.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

DEFAULT_VIDEO_STRATEGY = "segments"
_TOPK = re.compile(r"^top(\d+)_mean$")
_SEGMENTS_N = re.compile(r"^segments(\d+)$")


def validate_strategy(name: str) -> str:
    """Return `name` if it is a known strategy, else raise ValueError naming the choices."""
    if name in {"segments", "mean", "max"}:
        return name
    match = _TOPK.match(name) or _SEGMENTS_N.match(name)
    if match and int(match.group(1)) >= 1:
        return name
    raise ValueError(
        f"unknown aggregation strategy {name!r}: use segments, segmentsN (e.g. segments2), mean, max "
        "or topK_mean (e.g. top3_mean)"
    )


def segment_min_samples(strategy: str) -> int:
    """How many consecutive samples at or above the threshold make a flagged segment under `strategy`.

    N for `segmentsN`, 1 for `segments` and for any other name (older strategies, the image
    strategy): for those the timeline's ranges mark every sample at or above the threshold.
    """
    match = _SEGMENTS_N.match(strategy)
    return int(match.group(1)) if match else 1


def segment_scores(scores: Sequence[float], min_samples: int = 1) -> list[float]:
    """Per sample (time order), the highest threshold at which it still lies in a flagged segment.

    That is the best, over the windows of `min_samples` consecutive samples that contain it, of
    the window's lowest score. So at threshold t the samples scoring >= t here are exactly the
    runs of at least `min_samples` samples all scoring >= t, and the maximum of these scores
    reaches t exactly when such a run exists: one rule for the verdict and for the ranges. A
    video with fewer samples than `min_samples` is judged on all of them as one window, so a very
    short clip can still be flagged.
    """
    if min_samples < 1:
        raise ValueError(f"min_samples must be >= 1, got {min_samples}")
    if not scores:
        return []
    width = min(min_samples, len(scores))
    window_lows = [min(scores[start : start + width]) for start in range(len(scores) - width + 1)]
    return [max(window_lows[max(0, i - width + 1) : min(i, len(window_lows) - 1) + 1]) for i in range(len(scores))]


def aggregate(scores: Sequence[float], strategy: str) -> float:
    """Reduce frame scores (time order, each the max over its faces) to one item score with `strategy`."""
    if not scores:
        raise ValueError("no scores to aggregate")
    validate_strategy(strategy)
    if strategy == "mean":
        return sum(scores) / len(scores)
    if strategy == "max":
        return max(scores)
    if match := _TOPK.match(strategy):
        top = sorted(scores, reverse=True)[: int(match.group(1))]
        return sum(top) / len(top)
    return max(segment_scores(scores, segment_min_samples(strategy)))


def verdict_for(score: float, threshold: float) -> str:
    """`fake` when the score reaches the threshold, else `real` (the contract in DESIGN.md)."""
    return "fake" if score >= threshold else "real"
