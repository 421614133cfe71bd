"""Detection metrics and threshold calibration (label 1 = fake, score = P(fake))."""

from __future__ import annotations

import numpy as np
import pytest

from scanner.errors import ConfigError
from training.metrics import calibration_warning, detection_metrics, equal_error_rate, threshold_at_fpr


@pytest.mark.parametrize("target", [0.01, 0.05, 0.1, 0.5])
def test_threshold_flags_at_most_the_target_share_of_real_images(target: float) -> None:
    real = np.random.default_rng(0).random(1000).astype(np.float32)
    threshold = threshold_at_fpr(real, target)
    assert np.mean(real >= threshold) <= target
    assert np.mean(real >= threshold) == pytest.approx(target, abs=1 / 1000)


def test_threshold_is_exact_for_float32_scores() -> None:
    real = np.array([0.1, 0.2, 0.3, 0.7], dtype=np.float32)
    threshold = threshold_at_fpr(real, 0.25)  # one of four may be flagged: 0.7
    assert np.float32(0.3) < threshold <= np.float32(0.7)
    assert threshold == float(np.nextafter(np.float32(0.3), np.float32(1)))


def test_threshold_stays_a_probability_when_real_images_saturate() -> None:
    real = np.array([0.2, 1.0], dtype=np.float32)  # a real image scored 1.0: nothing above it exists
    threshold = threshold_at_fpr(real, 0.01)
    assert threshold == 1.0
    assert np.mean(real >= threshold) == 0.5  # the best a threshold can do; the checkpoint still loads


def test_calibration_on_too_few_real_images_is_flagged() -> None:
    assert calibration_warning(1000, 0.01) is None
    warning = calibration_warning(120, 0.01)
    assert warning is not None
    assert "120 real validation images" in warning
    assert "1000" in warning
    assert calibration_warning(120, 0.1) is None


def test_threshold_needs_a_sane_target_and_real_scores() -> None:
    with pytest.raises(ConfigError):
        threshold_at_fpr(np.array([0.5], np.float32), 0.0)
    with pytest.raises(ConfigError):
        threshold_at_fpr(np.array([], np.float32), 0.01)


def test_perfect_separation() -> None:
    labels = np.array([0, 0, 0, 1, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    m = detection_metrics(labels, scores, threshold=0.5)
    assert (m.roc_auc, m.average_precision, m.accuracy, m.eer) == (1.0, 1.0, 1.0, 0.0)
    assert (m.tpr_at_fpr_1pct, m.tpr_at_fpr_0_1pct) == (1.0, 1.0)
    assert (m.tn, m.fp, m.fn, m.tp, m.real, m.fake) == (3, 0, 0, 3, 3, 3)


def test_inverted_polarity_is_plain_to_see() -> None:
    labels = np.array([0, 0, 1, 1])
    m = detection_metrics(labels, np.array([0.9, 0.8, 0.2, 0.1]), threshold=0.5)
    assert m.roc_auc == 0.0
    assert m.accuracy == 0.0
    assert (m.fp, m.fn) == (2, 2)


def test_confusion_matrix_uses_score_at_or_above_threshold_as_fake() -> None:
    m = detection_metrics(np.array([0, 0, 1, 1]), np.array([0.5, 0.2, 0.5, 0.4]), threshold=0.5)
    assert (m.tn, m.fp, m.fn, m.tp) == (1, 1, 1, 1)
    assert m.accuracy == 0.5


def test_equal_error_rate_interpolates_where_the_rates_cross() -> None:
    fpr = np.array([0.0, 0.2, 0.6, 1.0])
    tpr = np.array([0.0, 0.6, 0.8, 1.0])  # FNR 1, 0.4, 0.2, 0: crosses FPR between 0.2 and 0.6
    assert equal_error_rate(fpr, tpr) == pytest.approx(1 / 3)


def test_chance_scores_give_auc_near_half() -> None:
    rng = np.random.default_rng(1)
    m = detection_metrics(rng.integers(0, 2, 4000), rng.random(4000), threshold=0.5)
    assert abs(m.roc_auc - 0.5) < 0.03
    assert abs(m.eer - 0.5) < 0.03


def test_one_class_cannot_be_measured() -> None:
    with pytest.raises(ConfigError, match="only real images"):
        detection_metrics(np.array([0, 0]), np.array([0.1, 0.2]), threshold=0.5)
