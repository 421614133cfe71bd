"""Re-calibrate a checkpoint's threshold on a separate folder of real images.

Training calibrates on its validation split, which is often small (449 reals put four or five
above a 1 % threshold) and was also used to pick the epoch. A moderator's operating point is
better set on real images of the kind the platform sees, kept apart from training: this scores
them through the workers' path (`training.evaluate.predict`, the checkpoint's face view and
preprocessing) and writes the checkpoint again with the threshold at which at most `target_fpr`
of them are flagged. The weights are unchanged; the file, and so the model version, is new.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from scanner.checkpoint import load_checkpoint, save_checkpoint
from scanner.detector import resolve_device
from scanner.errors import ConfigError
from scanner.precision import resolve_precision
from training.config import DEFAULT_EVAL_BATCH_SIZE, default_loader_workers
from training.datasets import REAL, ImageDataset, Sample, folder_samples, load_split
from training.evaluate import predict
from training.facecache import FaceCache, default_cache_dir
from training.metrics import calibration_warning, threshold_at_fpr


@dataclass(frozen=True)
class Calibration:
    """What `calibrate` wrote: the new threshold, how many reals it rests on, and any warning."""

    checkpoint: Path
    model_version: str
    threshold: float
    previous_threshold: float
    target_fpr: float
    real: int
    warning: str | None
    precision: str = "fp32"


def calibration_reals(data: Path, split: str) -> list[Sample]:
    """The real images of DATA/real/ when it exists, else of `split` in any layout `deepscan train` reads."""
    samples = folder_samples(data) if (data / "real").is_dir() else load_split(data, split)
    reals = [s for s in samples if s.label == REAL]
    if not reals:
        raise ConfigError(f"no real images to calibrate on under {data}: expected {data}/real/ or {split}/real/")
    return reals


def calibrate(
    checkpoint: Path,
    data: Path,
    *,
    out: Path,
    target_fpr: float,
    split: str = "valid",
    device: str = "auto",
    precision: str = "auto",
    workers: int | None = None,
    face_cache: Path | None = None,
) -> Calibration:
    """Score the real images under `data` and write `checkpoint` to `out` with a threshold at `target_fpr`,
    calibrated at `precision` (resolved as a worker resolves it) and recorded with it."""
    target = resolve_device(device)
    arithmetic = resolve_precision(precision, target)
    loaded = load_checkpoint(checkpoint, target)
    reals = calibration_reals(data, split)
    view, prep = loaded.meta.face_view, loaded.meta.preprocessing
    cache = FaceCache(face_cache or default_cache_dir(), view.detector, prep.decode_min_side_px)
    dataset = ImageDataset(reals, prep, view=view, all_faces=True, face_cache=cache)
    workers = default_loader_workers() if workers is None else workers
    found = predict(
        loaded.model, dataset, device=target, batch_size=DEFAULT_EVAL_BATCH_SIZE, workers=workers,
        precision=arithmetic,
    )  # fmt: skip
    scores = np.asarray(found.scores)
    threshold = threshold_at_fpr(scores, target_fpr)
    warning = calibration_warning(scores.size, target_fpr)
    record = {"data": str(data), "real": int(scores.size), "target_fpr": target_fpr, "warning": warning}
    meta = replace(
        loaded.meta,
        threshold=threshold,
        target_fpr=target_fpr,
        metrics={**loaded.meta.metrics, "calibration": record},
        precision=arithmetic,
    )
    version = save_checkpoint(out, loaded.model, meta)
    return Calibration(
        out, version, threshold, loaded.meta.threshold, target_fpr, int(scores.size), warning, precision=arithmetic
    )
