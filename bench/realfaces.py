"""Detector recipes on real face swaps (DFDC), against a plain PyTorch loop, in one run.

Reads the DFDC face crops from `../shared/data/dfdc-faces` beside the repository (or --data, or
$DEEPSCAN_DFDC_FACES) and skips with one line when they are absent: their licence is research only,
so nothing of them, nor any weights trained on them, is ever copied into the repository. An internal
test split by actor is carved out of train/ (bench/actorsplit.py); every recipe trains on the rest
of train/, stops early and calibrates its threshold on valid/, and is scored once on the test split
through `training.evaluate.evaluate` (the workers' path). Nothing is selected on the test split.

Per recipe: ROC AUC, average precision and TPR at 1 % FPR on the test split, and what the
calibrated threshold (1 % FPR on valid) gives there: its TPR and the FPR it really has.

    .venv/bin/python bench/realfaces.py [--recipes plain,default,...] [--epochs N] [--plain-epochs 10]
        [--jobs J] [--keep DIR] [--quick] [--json]

The plain loop keeps the 10 epochs issue 22 measured it at (`--plain-epochs`) whatever `--epochs`
the recipes get, so a longer schedule is compared with the same baseline.

resnet18 from scratch at 128 px on the CPU, as `deepscan train --arch resnet18 --pretrained none
--image-size 128 --device cpu` runs it, every other option at its default unless the recipe
changes it. Embeddings and the split are cached under --cache (~/.cache/deepscan/bench), face
detections in deepscan's own face cache; the first run embeds 4,200 faces and detects 5,000 (minutes).
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.actorsplit import actor_split
from bench.memory import cpu_model
from bench.plainloop import score_plain, train_plain
from training.config import TrainConfig
from training.evaluate import evaluate
from training.train import train

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "data" / "dfdc-faces"
DATA_ENV = "DEEPSCAN_DFDC_FACES"
DEFAULT_CACHE = Path.home() / ".cache" / "deepscan" / "bench"
ARCH, IMAGE_SIZE_PX, EPOCHS, BATCH_SIZE = "resnet18", 128, 6, 32
PLAIN_LR, PLAIN_EPOCHS = 1e-3, 10  # the plain loop as issue 22 measured it: 10 epochs, no validation
Scored = list[tuple[Path, int, float]]


@dataclass(frozen=True)
class Recipe:
    name: str
    describe: str
    changes: dict[str, Any]  # TrainConfig fields; empty = deepscan's defaults


STRONG_AUG = {"crop": 0.5, "blur": 0.2, "downscale": 0.2, "jpeg": 0.3}
STRONG_AUG_ARGS = " ".join(f"--aug {k}={v:g}" for k, v in STRONG_AUG.items())
FACE_AUTO = {"crop": "auto", "self_blend": "auto"}  # resized face crops, self-blended fakes beside the real ones
RECIPES: tuple[Recipe, ...] = (
    Recipe(
        "default", "deepscan train defaults (--crop auto: resized faces, lr 1e-3 from scratch, no self-blending)", {}
    ),
    Recipe("center", "the previous defaults: --crop center --lr 3e-4", {"crop": "center", "lr": 3e-4}),
    Recipe("auto", "--crop auto --self-blend auto: resized face crops, self-blended fakes mixed in", FACE_AUTO),
    Recipe("resize", "--crop resize --lr 3e-4", {"crop": "resize", "lr": 3e-4}),
    Recipe("mix", "defaults, but --self-blend mix", {"self_blend": "mix"}),
    Recipe("ellipse", "--self-blend mix with --blend-mask ellipse", {"self_blend": "mix", "blend_mask": "ellipse"}),
    Recipe("only", "--self-blend only: real images alone, fakes self-blended", {"self_blend": "only"}),
    Recipe("ema", "defaults plus --ema 0.999", {"ema": 0.999}),
    Recipe("face-view-none", "defaults, but --face-view none (the crops as they are)", {"face_view": "none"}),
    Recipe("lr1e-3", "--crop center --lr 1e-3 (the plain loop's peak rate)", {"crop": "center", "lr": 1e-3}),
    Recipe("lr2e-3", "defaults, but --lr 2e-3", {"lr": 2e-3}),
    Recipe("resize-lr1e-3", "--crop resize --lr 1e-3", {"crop": "resize", "lr": 1e-3}),
    Recipe("random-lr1e-3", "--crop random --lr 1e-3", {"crop": "random", "lr": 1e-3}),
    Recipe("pairs", "--crop resize --lr 1e-3 --pairs auto", {"crop": "resize", "lr": 1e-3, "pairs": "auto"}),
    Recipe(
        "strong-aug",
        "--crop resize --lr 1e-3, stronger augmentation " + STRONG_AUG_ARGS,
        {"crop": "resize", "lr": 1e-3, "augment_p": STRONG_AUG},
    ),
    Recipe(
        "pairs-aug",
        "--crop resize --lr 1e-3 --pairs auto, stronger augmentation",
        {"crop": "resize", "lr": 1e-3, "pairs": "auto", "augment_p": STRONG_AUG},
    ),
)
RESIZE_FAST = {"crop": "resize", "lr": 1e-3}
RECIPES += (
    Recipe("center-pairs", "--crop center --lr 1e-3 --pairs auto", {"crop": "center", "lr": 1e-3, "pairs": "auto"}),
    Recipe("resize-tta", "--crop resize --lr 1e-3 --tta flip", {**RESIZE_FAST, "tta": "flip"}),
    Recipe(
        "pairs-tta", "--crop resize --lr 1e-3 --pairs auto --tta flip", {**RESIZE_FAST, "pairs": "auto", "tta": "flip"}
    ),
    Recipe(
        "pairs-aug-tta",
        "--crop resize --lr 1e-3 --pairs auto --tta flip, stronger augmentation " + STRONG_AUG_ARGS,
        {**RESIZE_FAST, "pairs": "auto", "tta": "flip", "augment_p": STRONG_AUG},
    ),
    Recipe(
        "only-tuned",
        "--self-blend only --crop resize --lr 1e-3 --pairs auto --tta flip",
        {**RESIZE_FAST, "self_blend": "only", "pairs": "auto", "tta": "flip"},
    ),
    Recipe(
        "mix-tuned",
        "--self-blend mix --crop resize --lr 1e-3 --pairs auto --tta flip",
        {**RESIZE_FAST, "self_blend": "mix", "pairs": "auto", "tta": "flip"},
    ),
)
GEO_EMA = {"augment_p": {"crop": 0.5}, "ema": 0.998}
RECIPES += (
    Recipe("geo-ema", "defaults plus --aug crop=0.5 --ema 0.998 (random resized crops, a weight average)", GEO_EMA),
    Recipe("srm", "defaults plus --stem srm (three fixed high-pass residual maps beside RGB)", {"stem": "srm"}),
    Recipe("geo-ema-srm", "geo-ema plus --stem srm", {**GEO_EMA, "stem": "srm"}),
    Recipe("geo-ema-mix", "geo-ema plus --self-blend mix", {**GEO_EMA, "self_blend": "mix"}),
    Recipe("geo-ema-only", "geo-ema plus --self-blend only: real faces alone", {**GEO_EMA, "self_blend": "only"}),
    Recipe("geo-ema-20", "geo-ema with --epochs 20 whatever --epochs the run gives", {**GEO_EMA, "epochs": 20}),
)
DEFAULT_RUN = ("plain", "default", "auto", "only")


def data_dir(given: Path | None) -> Path:
    """--data, else $DEEPSCAN_DFDC_FACES, else ../shared/data/dfdc-faces beside the repository."""
    return given or Path(os.environ.get(DATA_ENV) or DEFAULT_DATA)


def test_metrics(files: Scored, threshold: float | None) -> dict[str, Any]:
    """ROC AUC, AP, TPR at 1 % FPR; and, with a threshold, the TPR and FPR it gives here."""
    labels = np.array([y for _, y, _ in files])
    scores = np.array([s for _, _, s in files])
    fpr, tpr, _ = roc_curve(labels, scores)
    out: dict[str, Any] = {
        "roc_auc": round(float(roc_auc_score(labels, scores)), 4),
        "ap": round(float(average_precision_score(labels, scores)), 4),
        "tpr_at_1pct_fpr": round(float(np.interp(0.01, fpr, tpr)), 4),
        "tpr_at_threshold": None,
        "fpr_at_threshold": None,
    }
    if threshold is not None:
        flagged = scores >= threshold
        out["tpr_at_threshold"] = round(float(flagged[labels == 1].mean()), 4)
        out["fpr_at_threshold"] = round(float(flagged[labels == 0].mean()), 4)
    return out


@dataclass(frozen=True)
class Task:
    """One row of the table, run in its own process when --jobs > 1."""

    name: str
    split: Path
    work: Path
    epochs: int
    max_minutes: float | None
    threads: int
    plain_epochs: int = PLAIN_EPOCHS


def run_task(task: Task) -> dict[str, Any]:
    torch.set_num_threads(task.threads)
    if task.name == "plain":
        return run_plain(task.split, epochs=task.plain_epochs, max_minutes=task.max_minutes)
    recipe = {r.name: r for r in RECIPES}[task.name]
    return run_recipe(task.split, task.work, recipe, epochs=task.epochs, max_minutes=task.max_minutes)


def run_recipe(split: Path, work: Path, recipe: Recipe, *, epochs: int, max_minutes: float | None) -> dict[str, Any]:
    config = TrainConfig(
        data=split,
        out=work / f"{recipe.name}.safetensors",
        arch=ARCH,
        pretrained="none",
        image_size=IMAGE_SIZE_PX,
        epochs=epochs,
        device="cpu",
        workers=1,
        progress=False,
        max_minutes=max_minutes,
    )
    config = replace(config, **recipe.changes)
    result = train(config)
    report = evaluate(split, result.checkpoint, split="test", device="cpu", workers=1)
    return {
        "recipe": recipe.name,
        "describe": recipe.describe,
        "valid_roc_auc": round(float(result.metrics["roc_auc"]), 4),
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "train_seconds": round(result.seconds, 1),
        **test_metrics(report.files, result.threshold),
    }


def run_plain(split: Path, *, epochs: int, max_minutes: float | None = None) -> dict[str, Any]:
    run = train_plain(
        split,
        arch=ARCH,
        image_size=IMAGE_SIZE_PX,
        epochs=epochs,
        batch_size=BATCH_SIZE,
        lr=PLAIN_LR,
        flip=True,
        max_minutes=max_minutes,
    )
    return {
        "recipe": "plain",
        "describe": "plain PyTorch loop: Resize, flips, AdamW one-cycle, no validation",
        "valid_roc_auc": None,
        "epochs_run": run.epochs,
        "best_epoch": run.epochs,
        "train_seconds": round(run.seconds, 1),
        **test_metrics(score_plain(run.model, split / "test", IMAGE_SIZE_PX), None),
    }


def run_all(tasks: Sequence[Task], *, jobs: int) -> list[dict[str, Any]]:
    """Every task, `jobs` at a time (each in a fresh process when jobs > 1), in the order given."""
    if jobs <= 1:
        return [report(run_task(task)) for task in tasks]
    # not multiprocessing.Pool: its daemonic processes may not start the training's loader processes
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), max_tasks_per_child=1) as pool:
        return [report(row) for row in pool.map(run_task, tasks)]


def report(row: dict[str, Any]) -> dict[str, Any]:
    print(f"{row['recipe']}: test ROC AUC {row['roc_auc']:.4f}", file=sys.stderr, flush=True)
    return row


def table(rows: Sequence[dict[str, Any]]) -> str:
    head = [
        "recipe",
        "valid AUC",
        "test ROC AUC",
        "test AP",
        "TPR@1%FPR",
        "TPR / FPR at threshold",
        "epochs",
        "train s",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        at = "-" if r["tpr_at_threshold"] is None else f"{r['tpr_at_threshold']:.3f} / {r['fpr_at_threshold']:.3f}"
        valid = "-" if r["valid_roc_auc"] is None else f"{r['valid_roc_auc']:.3f}"
        cells = [r["recipe"], valid, f"{r['roc_auc']:.3f}", f"{r['ap']:.3f}", f"{r['tpr_at_1pct_fpr']:.3f}", at]
        cells += [f"{r['best_epoch']}/{r['epochs_run']}", f"{r['train_seconds']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help=f"the dfdc-faces folder (default: ${DATA_ENV} or {DEFAULT_DATA})")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="face embeddings and the split")
    parser.add_argument("--recipes", default=",".join(DEFAULT_RUN), help="comma-separated (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=EPOCHS, help="most epochs per recipe")
    parser.add_argument(
        "--plain-epochs", type=int, default=PLAIN_EPOCHS, help="the plain loop's epochs (default: %(default)s)"
    )
    parser.add_argument("--max-minutes", type=float, help="training time limit per recipe (deepscan train's)")
    parser.add_argument("--jobs", type=int, default=1, help="recipes trained at once, each in its own process")
    parser.add_argument("--quick", action="store_true", help="a smoke run: one epoch")
    parser.add_argument("--json", action="store_true", help="also print the results as one JSON object")
    parser.add_argument(
        "--keep", type=Path, help="keep the checkpoints and metrics logs in this folder (outside the repository)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    data = data_dir(args.data)
    if not (data / "train").is_dir():
        print(f"skipped: no DFDC faces at {data} (set --data or ${DATA_ENV})")
        return 0
    recipes = {r.name: r for r in RECIPES}
    wanted = args.recipes.split(",")
    unknown = [name for name in wanted if name != "plain" and name not in recipes]
    if unknown:
        parser.error(f"unknown recipe(s) {', '.join(unknown)}: use plain,{','.join(recipes)}")
    epochs = 1 if args.quick else args.epochs
    started = time.perf_counter()
    split, counts = actor_split(data, args.cache, processes=max(1, args.jobs))
    threads = max(1, torch.get_num_threads() // max(1, args.jobs))
    with tempfile.TemporaryDirectory(prefix="deepscan-realfaces-") as tmp:
        work = Path(tmp) if args.keep is None else args.keep
        work.mkdir(parents=True, exist_ok=True)
        plain_epochs = 1 if args.quick else args.plain_epochs
        tasks = [Task(name, split, work, epochs, args.max_minutes, threads, plain_epochs) for name in wanted]
        rows = run_all(tasks, jobs=args.jobs)
    print(
        f"CPU: {cpu_model()} ({torch.get_num_threads()} threads); {ARCH} from scratch at {IMAGE_SIZE_PX} px, "
        f"at most {epochs} epochs (the plain loop {plain_epochs}), {args.jobs} at a time; "
        f"split by actor: {json.dumps(counts, sort_keys=True)}; "
        f"{time.perf_counter() - started:.0f} s in all"
    )
    print(table(rows))
    if args.json:
        print(json.dumps({"cpu": cpu_model(), "counts": counts, "results": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
