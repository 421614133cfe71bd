"""An honest held-out benchmark of detector recipes, against a plain PyTorch loop, in one run.

The data (bench/heldout.py) are patches of real photographs shipped by installed packages, split
by source photograph, with three manipulation families (generator upsampling, blending,
inpainting), JPEG-compressed throughout. Every recipe trains on the train split, stops and
calibrates on the valid split, and is scored once on the test split, never tuned on it: per
family (all test reals against that family's fakes) and pooled, ROC AUC, average precision and
TPR at 1 % FPR. deepscan recipes are scored by `training.evaluate.evaluate`, the workers' path.

    .venv/bin/python bench/detector.py [--quick] [--recipes plain,default,...] [--json]

All recipes share backbone, input size, epochs, batch size and peak learning rate, from scratch
(no weights can be downloaded here). Prints one table (markdown) and, with --json, a JSON object.
About 12 minutes on 2 CPU cores (724 s on an AMD EPYC); --quick is a smoke run of a minute.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.heldout import FAMILIES, write_heldout
from bench.memory import cpu_model
from bench.plainloop import score_plain, train_plain
from training.config import TrainConfig
from training.datasets import source_of
from training.evaluate import evaluate
from training.train import train

ARCH, IMAGE_SIZE_PX, EPOCHS, BATCH_SIZE, LR = "resnet18", 64, 8, 32, 1e-3
Scored = list[tuple[Path, int, float]]
DEFAULT_RUN = ("plain", "default", "resize", "efficientnet_b0")  # what fits in 15 minutes on 2 cores
OLD_AUGMENT_P = {"flip": 0.5, "crop": 0.5, "jitter": 0.5, "blur": 0.15, "jpeg": 0.4}  # before this benchmark


def tpr_at_fpr(labels: np.ndarray, scores: np.ndarray, fpr_target: float = 0.01) -> float:
    fpr, tpr, _ = roc_curve(labels, scores)
    return float(np.interp(fpr_target, fpr, tpr))


def family_metrics(files: Scored) -> dict[str, dict[str, float]]:
    """Per family (all reals against that family's fakes) and pooled: ROC AUC, AP, TPR at 1 % FPR."""
    out = {}
    reals = [(y, s) for _, y, s in files if y == 0]
    for family in (*FAMILIES, "pooled"):
        fakes = [(y, s) for p, y, s in files if y == 1 and (family == "pooled" or source_of(p) == family)]
        labels = np.array([y for y, _ in reals + fakes])
        scores = np.array([s for _, s in reals + fakes])
        out[family] = {
            "roc_auc": round(float(roc_auc_score(labels, scores)), 4),
            "ap": round(float(average_precision_score(labels, scores)), 4),
            "tpr_at_1pct_fpr": round(tpr_at_fpr(labels, scores), 4),
        }
    return out


@dataclass(frozen=True)
class Recipe:
    name: str
    describe: str
    changes: dict[str, Any]  # TrainConfig fields; empty = deepscan's defaults


RECIPES = (
    Recipe("default", "deepscan train defaults", {}),
    Recipe("random", "defaults, but --crop random (random windows in training)", {"crop": "random"}),
    Recipe("resize", "defaults, but --crop resize (the old input)", {"crop": "resize"}),
    Recipe("no-aug", "defaults, but --no-augment", {"augment": False}),
    Recipe("heavy-aug", "defaults, but the old augmentation", {"augment_p": OLD_AUGMENT_P}),
    Recipe("ema", "defaults plus --ema 0.995", {"ema": 0.995}),
    Recipe("efficientnet_b0", "defaults, EfficientNet-B0 backbone", {"arch": "efficientnet_b0"}),
)


def run_deepscan(data: Path, work: Path, recipe: Recipe, *, epochs: int, workers: int) -> dict[str, Any]:
    config = TrainConfig(
        data=data,
        out=work / f"{recipe.name}.safetensors",
        arch=ARCH,
        pretrained="none",
        image_size=IMAGE_SIZE_PX,
        epochs=epochs,
        batch_size=BATCH_SIZE,
        lr=LR,
        face_view="none",
        device="cpu",
        workers=workers,
        progress=False,
    )
    config = replace(config, **recipe.changes)
    result = train(config)
    report = evaluate(data, result.checkpoint, split="test", device="cpu", workers=workers)
    return {
        "recipe": recipe.name,
        "describe": recipe.describe,
        "arch": config.arch,
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "train_seconds": round(result.seconds, 1),
        "test_fpr_at_valid_threshold": round(report.metrics.fp / max(report.metrics.real, 1), 4),
        **family_metrics(report.files),
    }


def run_plain(data: Path, *, epochs: int, workers: int) -> dict[str, Any]:
    run = train_plain(
        data, arch=ARCH, image_size=IMAGE_SIZE_PX, epochs=epochs, batch_size=BATCH_SIZE, lr=LR, workers=workers
    )
    files = score_plain(run.model, data / "test", IMAGE_SIZE_PX, workers=workers)
    return {
        "recipe": "plain",
        "describe": "plain PyTorch loop: Resize, no augmentation, AdamW one-cycle",
        "arch": ARCH,
        "epochs_run": epochs,
        "best_epoch": epochs,
        "train_seconds": round(run.seconds, 1),
        "test_fpr_at_valid_threshold": None,
        **family_metrics(files),
    }


def table(rows: Sequence[dict[str, Any]]) -> str:
    head = ["recipe", *(f"{f} AUC" for f in (*FAMILIES, "pooled")), "pooled AP", "TPR@1%FPR", "epochs", "train s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["recipe"], *(f"{r[f]['roc_auc']:.3f}" for f in (*FAMILIES, "pooled"))]
        cells += [f"{r['pooled']['ap']:.3f}", f"{r['pooled']['tpr_at_1pct_fpr']:.3f}"]
        cells += [f"{r['best_epoch']}/{r['epochs_run']}", f"{r['train_seconds']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smoke run: a tenth of the data, 2 epochs")
    parser.add_argument(
        "--recipes",
        default=",".join(DEFAULT_RUN),
        help=f"comma-separated, from plain,{','.join(r.name for r in RECIPES)} (default: %(default)s)",
    )
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--workers", type=int, default=1, help="decoding processes per loader")
    parser.add_argument("--json", action="store_true", help="also print the results as one JSON object")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    epochs = 2 if args.quick else args.epochs
    wanted = args.recipes.split(",")
    runners: dict[str, Callable[[Path, Path], dict[str, Any]]] = {
        "plain": lambda data, work: run_plain(data, epochs=epochs, workers=args.workers)
    }
    for recipe in RECIPES:
        runners[recipe.name] = lambda data, work, r=recipe: run_deepscan(  # type: ignore[misc]
            data, work, r, epochs=epochs, workers=args.workers
        )
    unknown = [name for name in wanted if name not in runners]
    if unknown:
        parser.error(f"unknown recipe(s) {', '.join(unknown)}: use {', '.join(runners)}")
    started = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="deepscan-detector-bench-") as tmp:
        held = write_heldout(Path(tmp) / "data", scale=0.1 if args.quick else 1.0)
        for name in wanted:
            rows.append(runners[name](held.root, Path(tmp)))
            print(f"{name}: pooled ROC AUC {rows[-1]['pooled']['roc_auc']:.4f}", file=sys.stderr, flush=True)
    print(f"CPU: {cpu_model()}; {ARCH} from scratch at {IMAGE_SIZE_PX} px, {epochs} epochs, batch {BATCH_SIZE}, "
          f"lr {LR:g}; test: {held.counts['test']}; {time.perf_counter() - started:.0f} s in all")  # fmt: skip
    print(table(rows))
    if args.json:
        print(json.dumps({"cpu": cpu_model(), "counts": held.counts, "results": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
