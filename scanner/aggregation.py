"""How per-face and per-frame scores become one item score (the strategy is stored with the verdict).

Image: the maximum over detected faces (the whole image when none is found). Video: the frame
scores (each frame already the max over its faces) reduced by a named strategy: `mean`, `max`,
or `topK_mean`, the mean of the K highest frames, which flags a short manipulated segment in a
long clip without being tripped by a single noisy frame.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

DEFAULT_VIDEO_STRATEGY = "top3_mean"
_TOPK = re.compile(r"^top(\d+)_mean$")


def validate_strategy(name: str) -> str:
    """Return `name` if it is a known strategy, else raise ValueError naming the choices."""
    if name in {"mean", "max"}:
        return name
    match = _TOPK.match(name)
    if match and int(match.group(1)) >= 1:
        return name
    raise ValueError(f"unknown aggregation strategy {name!r}: use mean, max or topK_mean (e.g. top3_mean)")


def aggregate(scores: Sequence[float], strategy: str) -> float:
    """Reduce frame scores to one item score with `strategy`."""
    if not scores:
        raise ValueError("no scores to aggregate")
    if strategy == "mean":
        return sum(scores) / len(scores)
    if strategy == "max":
        return max(scores)
    match = _TOPK.match(validate_strategy(strategy))
    assert match is not None
    top = sorted(scores, reverse=True)[: int(match.group(1))]
    return sum(top) / len(top)


def verdict_for(score: float, threshold: float) -> str:
    """`fake` when the score reaches the threshold, else `real` (the contract in DESIGN.md)."""
    return "fake" if score >= threshold else "real"
