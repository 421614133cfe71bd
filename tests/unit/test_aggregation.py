"""Video strategies: the default flags every flagged segment, and its verdict and the timeline's ranges agree."""

from __future__ import annotations

import math
import random

import pytest

from scanner.aggregation import (
    DEFAULT_VIDEO_STRATEGY,
    aggregate,
    segment_min_samples,
    segment_scores,
    validate_strategy,
    verdict_for,
)
from scanner.timeline import Sample, flagged_ranges, per_timestamp

# The demo's partly manipulated clip sampled at 1 fps (measured with the demo checkpoint): only
# the sample inside the swapped second scores high.
DEMO_CLIP_AT_1_FPS = [(0.5, 0.003), (1.5, 0.992), (2.5, 0.012)]


def test_a_one_sample_segment_is_flagged_where_top3_mean_calls_the_clip_real() -> None:
    scores = [score for _, score in DEMO_CLIP_AT_1_FPS]
    # top3_mean dilutes the one hit with two clean frames (0.336): `real` at any threshold above that.
    assert verdict_for(aggregate(scores, "top3_mean"), 0.5) == "real"
    assert verdict_for(aggregate(scores, DEFAULT_VIDEO_STRATEGY), 0.5) == "fake"
    assert flagged_ranges(DEMO_CLIP_AT_1_FPS, 0.5) == [(1.5, 1.5)]


@pytest.mark.parametrize("duration_s", [3.0, 5.0, 9.0, 10.0, 60.0, 600.0, 3600.0])
def test_the_default_flags_a_segment_of_1_s_or_10_percent_wherever_it_falls(duration_s: float) -> None:
    # Frames planned as workers/frames.py does (middles of n equal slices), dense enough that the
    # shortest segment that must be flagged, min(1 s, 10 %), is at least one sample spacing long.
    segment_s = min(1.0, 0.1 * duration_s)
    count = math.ceil(duration_s / segment_s)
    times = [(i + 0.5) * duration_s / count for i in range(count)]
    rng = random.Random(int(duration_s))
    for _ in range(50):
        start = rng.uniform(0.0, duration_s - segment_s)
        scores = [0.95 if start <= t <= start + segment_s else rng.uniform(0.0, 0.4) for t in times]
        assert verdict_for(aggregate(scores, DEFAULT_VIDEO_STRATEGY), 0.5) == "fake"
        assert flagged_ranges(zip(times, scores, strict=True), 0.5)


def test_verdict_is_fake_exactly_when_the_timeline_has_a_flagged_range() -> None:
    rng = random.Random(8)
    for case in range(3000):
        frames = _random_frames(rng)
        scores = [score for _, score in per_timestamp(frames)]
        threshold = rng.choice(scores) if case % 3 == 0 else rng.random()  # ties with a score included
        for strategy in (DEFAULT_VIDEO_STRATEGY, "segments2", "segments3", "max"):
            verdict = verdict_for(aggregate(scores, strategy), threshold)
            ranges = flagged_ranges(frames, threshold, strategy=strategy)
            assert (verdict == "fake") == bool(ranges), (strategy, threshold, frames)


def test_segments_n_ignores_shorter_runs_and_keeps_longer_ones_whole() -> None:
    scores = [0.1, 0.9, 0.1, 0.8, 0.7, 0.9, 0.1]
    assert segment_scores(scores) == scores
    assert segment_scores(scores, 2) == [0.1, 0.1, 0.1, 0.7, 0.7, 0.7, 0.1]
    assert aggregate(scores, "segments") == 0.9
    assert aggregate(scores, "segments2") == 0.7
    assert aggregate(scores, "segments4") == 0.1


def test_a_clip_with_fewer_samples_than_segments_n_asks_for_is_judged_on_all_of_them() -> None:
    assert aggregate([0.9, 0.8], "segments3") == 0.8
    assert segment_scores([], 2) == []


def test_older_strategies_keep_their_values() -> None:
    scores = [0.2, 0.9, 0.4, 0.1, 0.6]
    assert aggregate(scores, "mean") == pytest.approx(0.44)
    assert aggregate(scores, "max") == 0.9
    assert aggregate(scores, "top3_mean") == pytest.approx((0.9 + 0.6 + 0.4) / 3)
    assert aggregate(scores, "top10_mean") == pytest.approx(0.44)


@pytest.mark.parametrize("name", ["segments", "segments1", "segments2", "mean", "max", "top1_mean", "top3_mean"])
def test_known_strategies_validate(name: str) -> None:
    assert validate_strategy(name) == name


@pytest.mark.parametrize("name", ["segments0", "segment", "top0_mean", "top_mean", "median", "SEGMENTS", ""])
def test_unknown_strategies_are_refused_with_the_choices(name: str) -> None:
    with pytest.raises(ValueError, match="use segments, segmentsN"):
        validate_strategy(name)
    if name:
        with pytest.raises(ValueError, match="unknown aggregation strategy"):
            aggregate([0.5], name)


def test_segment_length_comes_from_the_strategy_name() -> None:
    assert [segment_min_samples(s) for s in ("segments", "segments1", "segments5", "max", "top3_mean")] == [
        1,
        1,
        5,
        1,
        1,
    ]


def test_nothing_to_aggregate_is_an_error() -> None:
    with pytest.raises(ValueError, match="no scores"):
        aggregate([], DEFAULT_VIDEO_STRATEGY)
    with pytest.raises(ValueError, match="min_samples"):
        segment_scores([0.5], 0)


def _random_frames(rng: random.Random) -> list[Sample]:
    """A shuffled timeline of 1-40 samples, some with a second face, scores often repeated or on 0/1."""
    levels = [0.0, 0.25, 0.5, 0.75, 1.0]
    frames: list[Sample] = []
    for i in range(rng.randint(1, 40)):
        frames.append((i * 0.5, rng.choice(levels) if rng.random() < 0.4 else rng.random()))
        if rng.random() < 0.2:
            frames.append((i * 0.5, rng.random()))
    rng.shuffle(frames)
    return frames
