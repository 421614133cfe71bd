"""Detection metrics and threshold calibration, with label 1 = fake and score = P(fake).

`verdict = fake if score >= threshold`. A threshold calibrated at a target false-positive rate
flags at most that fraction of real images as fake.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from scanner.errors import ConfigError

REPORTED_FPRS = ((0.01, "tpr_at_fpr_1pct"), (0.001, "tpr_at_fpr_0_1pct"))


@dataclass(frozen=True)
class DetectionMetrics:
    """What `deepscan evaluate` reports. Rates are fractions in [0, 1]."""

    roc_auc: float
    average_precision: float
    accuracy: float
    threshold: float
    eer: float
    tpr_at_fpr_1pct: float
    tpr_at_fpr_0_1pct: float
    tn: int
    fp: int
    fn: int
    tp: int
    real: int
    fake: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def check_both_classes(labels: np.ndarray) -> None:
    if labels.size == 0 or labels.min() == labels.max():
        present = "no images" if labels.size == 0 else "only " + ("fake" if labels[0] == 1 else "real") + " images"
        raise ConfigError(f"cannot measure detection with {present}: the split needs both real and fake images")


def threshold_at_fpr(real_scores: np.ndarray, target_fpr: float) -> float:
    """The lowest threshold at which at most `target_fpr` of real scores are >= threshold.

    Returned as the next float32 above the highest real score that must stay below it, so it is
    exact for float32 scores; capped at 1.0, since a threshold above every possible score would
    flag nothing (a validation split whose real images score 1.0 cannot support the target).
    """
    if not 0 < target_fpr < 1:
        raise ConfigError(f"target false-positive rate {target_fpr} must be between 0 and 1")
    if real_scores.size == 0:
        raise ConfigError("cannot calibrate a threshold without real images")
    ordered = np.sort(real_scores.astype(np.float32))[::-1]
    allowed = int(np.floor(target_fpr * ordered.size))
    return min(float(np.nextafter(ordered[allowed], np.float32(np.inf))), 1.0)


def calibration_warning(real_count: int, target_fpr: float) -> str | None:
    """Why a threshold calibrated on `real_count` real images cannot be trusted at `target_fpr`, if it cannot.

    Fewer than 10 / target_fpr real images put fewer than ten of them above the threshold, so the
    measured rate is mostly noise (at 1 %, 120 real images leave one false positive to calibrate on).
    """
    needed = math.ceil(10 / target_fpr)
    if real_count >= needed:
        return None
    return (
        f"the threshold was calibrated on {real_count} real validation images, fewer than the {needed} that a "
        f"{target_fpr:g} false-positive rate needs (10 / rate): expect a different rate on new data; "
        "use a larger validation split or a higher --target-fpr"
    )


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, target: float) -> float:
    """The best true-positive rate reachable without exceeding `target` false positives."""
    return float(tpr[fpr <= target].max(initial=0.0))


def equal_error_rate(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """Where the false-positive and false-negative rates meet (interpolated between ROC points)."""
    fnr = 1 - tpr
    diff = fnr - fpr
    crossing = int(np.argmax(diff <= 0))  # first ROC point where FNR drops to or below FPR
    if crossing == 0:
        return float(fpr[0])
    d0, d1 = diff[crossing - 1], diff[crossing]
    t = d0 / (d0 - d1) if d0 != d1 else 0.0
    return float(fpr[crossing - 1] + t * (fpr[crossing] - fpr[crossing - 1]))


def detection_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float) -> DetectionMetrics:
    """Every reported metric for binary labels (1 = fake) and scores (P(fake))."""
    labels = np.asarray(labels, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    check_both_classes(labels)
    fpr, tpr, _ = roc_curve(labels, scores)
    predicted = scores >= threshold
    fake = labels == 1
    rates = {name: tpr_at_fpr(fpr, tpr, target) for target, name in REPORTED_FPRS}
    return DetectionMetrics(
        roc_auc=float(roc_auc_score(labels, scores)),
        average_precision=float(average_precision_score(labels, scores)),
        accuracy=float(np.mean(predicted == fake)),
        threshold=float(threshold),
        eer=equal_error_rate(fpr, tpr),
        tpr_at_fpr_1pct=rates["tpr_at_fpr_1pct"],
        tpr_at_fpr_0_1pct=rates["tpr_at_fpr_0_1pct"],
        tn=int(np.sum(~predicted & ~fake)),
        fp=int(np.sum(predicted & ~fake)),
        fn=int(np.sum(~predicted & fake)),
        tp=int(np.sum(predicted & fake)),
        real=int(np.sum(~fake)),
        fake=int(np.sum(fake)),
    )
