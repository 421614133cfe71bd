"""PNG plots of an evaluation: the ROC curve and a score histogram per class.

Figures are drawn on matplotlib's Agg canvas directly (no pyplot), so nothing depends on a
display or on global backend state.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve

DEFAULT_PLOT_DPI = 120
DEFAULT_HISTOGRAM_BINS = 50
ROC_FILE = "roc.png"
HISTOGRAM_FILE = "score_histogram.png"


def _figure() -> Figure:
    figure = Figure(figsize=(5, 4), dpi=DEFAULT_PLOT_DPI)
    FigureCanvasAgg(figure)
    return figure


def plot_roc(labels: np.ndarray, scores: np.ndarray, roc_auc: float, path: Path) -> Path:
    """The ROC curve against the chance diagonal."""
    fpr, tpr, _ = roc_curve(labels, scores)
    figure = _figure()
    axes = figure.add_subplot()
    axes.plot(fpr, tpr, label=f"ROC AUC = {roc_auc:.4f}")
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    axes.set(xlabel="false-positive rate (real flagged fake)", ylabel="true-positive rate", title="ROC curve")
    axes.legend(loc="lower right")
    figure.savefig(path)
    return path


def plot_histogram(labels: np.ndarray, scores: np.ndarray, threshold: float, path: Path) -> Path:
    """Score distributions of real and fake images, with the decision threshold."""
    figure = _figure()
    axes = figure.add_subplot()
    bins = np.linspace(0, 1, DEFAULT_HISTOGRAM_BINS + 1).tolist()
    for value, name, color in ((0, "real", "tab:blue"), (1, "fake", "tab:red")):
        axes.hist(scores[labels == value], bins=bins, alpha=0.6, label=name, color=color)
    axes.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.3f}")
    axes.set(xlabel="score = P(fake)", ylabel="images", title="scores per class")
    axes.legend(loc="upper center")
    figure.savefig(path)
    return path


def write_plots(labels: np.ndarray, scores: np.ndarray, *, roc_auc: float, threshold: float, out: Path) -> list[Path]:
    """Both plots into folder `out`; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    return [
        plot_roc(labels, scores, roc_auc, out / ROC_FILE),
        plot_histogram(labels, scores, threshold, out / HISTOGRAM_FILE),
    ]
