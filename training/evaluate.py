"""Honest evaluation: score a labelled split with exactly the workers' decode, face view,
preprocessing and inference path (an image scores as its highest-scoring face, as in a scan), then
report ROC AUC and friends at the checkpoint's own threshold."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn
from tqdm import tqdm

from scanner.checkpoint import load_checkpoint
from scanner.detector import resolve_device, score_batch
from scanner.precision import Precision, resolve_precision
from training.config import DEFAULT_EVAL_BATCH_SIZE, LabelSource, default_loader_workers
from training.datasets import ImageDataset, Sample, batches, load_split, source_of
from training.facecache import FaceCache, default_cache_dir
from training.metrics import DetectionMetrics, detection_metrics


@dataclass
class Predictions:
    """Scores of the decodable samples (aligned with `labels` and `indices` into the dataset)."""

    scores: np.ndarray
    labels: np.ndarray
    indices: np.ndarray
    skipped: list[int] = field(default_factory=list)


def predict(
    model: nn.Module,
    dataset: ImageDataset,
    *,
    device: torch.device,
    batch_size: int,
    workers: int,
    precision: Precision = "fp32",
    progress: bool = False,
) -> Predictions:
    """Score every sample of `dataset` with `score_batch` at `precision` (and the test-time augmentation
    of the dataset's preprocessing), counting undecodable files."""
    was_training = model.training
    model.eval()
    scores, labels, indices, skipped = [], [], [], []
    try:
        bar = tqdm(total=len(dataset), desc="evaluate", unit="img", disable=not progress, leave=False)
        for batch in batches(dataset, batch_size=batch_size, workers=workers):
            bar.update(len(batch.labels) + len(batch.skipped))
            skipped.extend(batch.skipped)
            scores.append(
                image_scores(score_batch(model, batch.images, device, precision, dataset.prep.tta), batch.faces)
            )
            labels.append(batch.labels.numpy())
            indices.append(batch.indices.numpy())
        bar.close()
    finally:
        model.train(was_training)
    return Predictions(
        scores=np.concatenate(scores) if scores else np.empty(0, np.float32),
        labels=np.concatenate(labels) if labels else np.empty(0, np.int64),
        indices=np.concatenate(indices) if indices else np.empty(0, np.int64),
        skipped=skipped,
    )


def image_scores(face_scores: np.ndarray, faces: torch.Tensor) -> np.ndarray:
    """One score per image: the maximum over its faces, as a scan aggregates an image."""
    if face_scores.size == 0:
        return face_scores
    starts = np.concatenate([[0], np.cumsum(faces.numpy())[:-1]])
    return np.maximum.reduceat(face_scores, starts)


@dataclass
class EvaluationReport:
    """The outcome of `evaluate`: metrics, where they came from, and every file's score."""

    checkpoint: Path
    model_version: str
    split: str
    metrics: DetectionMetrics
    files: list[tuple[Path, int, float]]
    skipped: list[Path]
    face_view: str = ""
    precision: str = "fp32"

    @property
    def labels(self) -> np.ndarray:
        return np.array([label for _, label, _ in self.files], dtype=np.int64)

    @property
    def scores(self) -> np.ndarray:
        return np.array([score for _, _, score in self.files], dtype=np.float32)

    def by_source(self) -> list[dict[str, Any]]:
        """ROC AUC of each source (sub-folder of real/ or fake/) against all images of the other class:
        train on one manipulation family, see how each of the others is caught."""
        rows = []
        sources = sorted({(label, source_of(path)) for path, label, _ in self.files})
        for label, source in sources:
            mine = [(y, s) for p, y, s in self.files if y == label and source_of(p) == source]
            others = [(y, s) for _, y, s in self.files if y != label]
            labels = np.array([y for y, _ in mine + others])
            scores = np.array([s for _, s in mine + others])
            auc = float(roc_auc_score(labels, scores)) if len(set(labels.tolist())) == 2 else float("nan")
            rows.append({"label": "fake" if label == 1 else "real", "source": source or "(top)", "images": len(mine),
                         "roc_auc": auc})  # fmt: skip
        return rows

    def to_dict(self, *, per_file: bool = True) -> dict[str, Any]:
        """JSON-ready: metrics at top level (roc_auc, ...), then `files` with per-file scores."""
        out: dict[str, Any] = {
            "checkpoint": str(self.checkpoint),
            "model_version": self.model_version,
            "split": self.split,
            "face_view": self.face_view,
            "precision": self.precision,
            **self.metrics.to_dict(),
            "skipped": len(self.skipped),
            "skipped_files": [str(p) for p in self.skipped],
        }
        if per_file:
            out["files"] = [
                {"path": str(p), "label": "fake" if y == 1 else "real", "score": s} for p, y, s in self.files
            ]
        return out


def evaluate(
    data: Path,
    checkpoint: Path,
    *,
    split: str = "test",
    device: str = "auto",
    precision: str = "auto",
    batch_size: int = DEFAULT_EVAL_BATCH_SIZE,
    workers: int | None = None,
    labels: LabelSource = "auto",
    threshold: float | None = None,
    face_cache: Path | None = None,
    progress: bool = False,
) -> EvaluationReport:
    """Score `split` of the data set under `data` with `checkpoint` and measure detection.

    The threshold is the checkpoint's calibrated one unless `threshold` overrides it; `workers`
    decoding processes default to one per spare core. `precision` resolves as a worker's does, so
    by default a file scores here exactly as a default scan on this machine scores it.
    """
    target = resolve_device(device)
    arithmetic = resolve_precision(precision, target)
    loaded = load_checkpoint(checkpoint, target)
    samples = load_split(data, split, labels=labels)
    view = loaded.meta.face_view
    cache = FaceCache(face_cache or default_cache_dir(), view.detector, loaded.meta.preprocessing.decode_min_side_px)
    dataset = ImageDataset(samples, loaded.meta.preprocessing, view=view, all_faces=True, face_cache=cache)
    workers = default_loader_workers() if workers is None else workers
    found = predict(
        loaded.model, dataset, device=target, batch_size=batch_size, workers=workers, precision=arithmetic,
        progress=progress,
    )  # fmt: skip
    cut = loaded.meta.threshold if threshold is None else threshold
    return EvaluationReport(
        checkpoint=checkpoint,
        model_version=loaded.model_version,
        split=split,
        metrics=detection_metrics(found.labels, found.scores, cut),
        files=per_file_scores(samples, found),
        skipped=[samples[i].path for i in found.skipped],
        face_view=view.describe(),
        precision=arithmetic,
    )


def per_file_scores(samples: list[Sample], found: Predictions) -> list[tuple[Path, int, float]]:
    return [
        (samples[int(i)].path, int(y), float(s))
        for i, y, s in zip(found.indices, found.labels, found.scores, strict=True)
    ]


def write_scores_csv(report: EvaluationReport, path: Path) -> None:
    """One row per scored file: path,label,score (score = P(fake), float32 printed exactly)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label", "score"])
        for file, label, score in report.files:
            writer.writerow([str(file), "fake" if label == 1 else "real", repr(score)])
