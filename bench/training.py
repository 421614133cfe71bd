"""How well the demo recipe generalises, and what it costs: the figures the tests do not assert.

The test suite trains on a few dozen tiny images and asserts that training learns at all. This
script runs the real demo recipe (`deepscan demo`'s data and training settings) on the CPU and
prints one JSON object: held-out ROC AUC of the trained model and of untrained ones, the demo
videos' per-frame separation, the self-blended recipe trained on real images alone, seconds and
images/s, beside the CPU model; and `throughput`: training images/s of deepscan's whole epoch
pipeline with its default augmentation against a plain PyTorch loop over the same files (target
>= 0.8 x). Run it with `python bench/training.py` (about 7 minutes on 2 idle cores); `--count`
changes the demo images per class, `--throughput-only` runs the comparison alone.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.heldout import write_heldout
from bench.memory import cpu_model
from bench.plainloop import train_plain
from scanner.checkpoint import load_checkpoint, save_checkpoint
from scanner.detector import build_model, preprocess_batch, score_batch
from tests.training_helpers import tiny_meta
from training.config import DEFAULT_DEMO_COUNT, TrainConfig, default_loader_workers, demo_config
from training.evaluate import evaluate
from training.synthetic import write_demo_data
from training.train import TrainResult, train

CPU = torch.device("cpu")


def frame_scores(video: Path, result: TrainResult) -> np.ndarray:
    """Every frame of `video` scored by the trained model as the workers score it: through the
    checkpoint's face view, a frame scoring as its highest-scoring face."""
    loaded = load_checkpoint(result.checkpoint, CPU)
    capture = cv2.VideoCapture(str(video))
    scores = []
    while (frame := capture.read())[0]:
        faces = loaded.meta.face_view.faces(cv2.cvtColor(frame[1], cv2.COLOR_BGR2RGB))
        batch = preprocess_batch([face.rgb for face in faces], loaded.meta.preprocessing)
        scores.append(float(score_batch(loaded.model, batch, CPU).max()))
    capture.release()
    return np.array(scores, dtype=np.float32)


def untrained_aucs(data: Path, work: Path, image_size: int) -> list[float]:
    aucs = []
    for seed in (0, 1, 2):
        torch.manual_seed(seed)
        path = work / f"untrained-{seed}.safetensors"
        save_checkpoint(path, build_model("resnet18"), tiny_meta(size=image_size))
        aucs.append(round(evaluate(data, path, device="cpu", workers=0).metrics.roc_auc, 4))
    return aucs


def video_separation(data: Path, result: TrainResult) -> dict[str, float]:
    """Median frame score inside vs outside the partly fake clip's swapped second, and fake vs real clips."""
    partly = frame_scores(data / "videos" / "partly_fake_clip.mp4", result)
    real = frame_scores(data / "videos" / "real_clip.mp4", result)
    fake = frame_scores(data / "videos" / "fake_clip.mp4", result)
    return {
        "partly_fake_swapped_median": round(float(np.median(partly[24:48])), 4),
        "partly_fake_clean_median": round(float(np.median(np.concatenate([partly[:24], partly[48:]]))), 4),
        "fake_clip_median": round(float(np.median(fake)), 4),
        "real_clip_median": round(float(np.median(real)), 4),
    }


def self_blend_auc(data: Path, work: Path) -> dict[str, float]:
    real_only = work / "real-only"
    for split in ("train", "valid", "test"):
        (real_only / split).mkdir(parents=True)
        (real_only / split / "real").symlink_to(data / split / "real", target_is_directory=True)
    config = demo_config(real_only, work / "sbi.safetensors", self_blend="only")
    result = train(dataclasses.replace(config, progress=False))
    auc = evaluate(data, result.checkpoint, device="cpu", workers=0).metrics.roc_auc
    return {"test_roc_auc_vs_demo_fakes": round(auc, 4), "seconds": round(result.seconds, 1)}


def epoch_throughput(work: Path, *, image_size: int = 128, epochs: int = 2) -> dict[str, Any]:
    """Training images/s of deepscan's whole epoch pipeline (decode, augmentation with the default
    probabilities, native-resolution windows, in loader processes with prefetching, the step) against a
    plain loop (ImageFolder, PIL, Resize, no augmentation) over the same files, same model and batch,
    the same number of loader processes. Target: deepscan >= 0.8 x the plain loop."""
    held = write_heldout(work / "heldout", scale=0.5)
    workers = default_loader_workers()
    config = TrainConfig(
        data=held.root,
        out=work / "throughput.safetensors",
        arch="resnet18",
        pretrained="none",
        image_size=image_size,
        epochs=epochs,
        batch_size=32,
        face_view="none",
        device="cpu",
        workers=workers,
        patience=epochs,
        progress=False,
    )
    result = train(config)
    logged = [json.loads(line) for line in result.metrics_log.read_text().splitlines()]
    ours = sum(r["train_images"] for r in logged) / sum(r["train_seconds"] for r in logged)
    plain = train_plain(
        held.root, arch="resnet18", image_size=image_size, epochs=epochs, batch_size=32, lr=3e-4, workers=workers
    )
    return {
        "images": len(list((held.root / "train").rglob("*.jpg"))),
        "image_size": image_size,
        "loader_workers": workers,
        "deepscan_images_per_s": round(ours, 1),
        "plain_loop_images_per_s": round(plain.images_per_s, 1),
        "ratio": round(ours / plain.images_per_s, 3),
        "target_ratio": 0.8,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=DEFAULT_DEMO_COUNT, help="demo images per class")
    parser.add_argument("--no-self-blend", action="store_true", help="skip the self-blended run")
    parser.add_argument("--throughput-only", action="store_true", help="only deepscan's epoch vs a plain loop")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        throughput = epoch_throughput(work)
        if args.throughput_only:
            print(json.dumps({"cpu": cpu_model(), "cores": os.cpu_count(), "throughput": throughput}))
            return
        data = work / "demo-data"
        write_demo_data(data, count=args.count, seed=0)
        config = dataclasses.replace(demo_config(data, work / "demo.safetensors"), progress=False)
        result = train(config)
        report = evaluate(data, result.checkpoint, device="cpu", workers=0).metrics
        figures = {
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "images_per_class": args.count,
            "train_seconds": round(result.seconds, 1),
            "epochs_run": result.epochs_run,
            "test_roc_auc": round(report.roc_auc, 4),
            "test_tpr_at_1pct_fpr": round(report.tpr_at_fpr_1pct, 4),
            "untrained_test_roc_auc": untrained_aucs(data, work, config.image_size),
            "video": video_separation(data, result),
            "throughput": throughput,
        }
        if not args.no_self_blend:
            figures["self_blend"] = self_blend_auc(data, work)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
