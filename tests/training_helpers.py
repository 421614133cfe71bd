"""Shared pieces of the detector and training tests: tiny images, data set layouts, checkpoints."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from scanner.checkpoint import CheckpointMeta, save_checkpoint
from scanner.detector import Preprocessing, build_model
from training.datasets import KAGGLE_IMAGE_ROOT
from training.synthetic import render_image

TINY_SIZE_PX = 32


def tiny_rgb(seed: int, *, fake: bool = False, size: int = TINY_SIZE_PX) -> np.ndarray:
    return render_image(np.random.default_rng(seed), size, fake=fake)


def write_jpeg(path: Path, rgb: np.ndarray, quality: int = 90) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path, quality=quality)
    return path


def write_140k_layout(root: Path, *, per_class: int = 3) -> Path:
    """The Kaggle download's shape: ROOT/{split}.csv plus ROOT/real_vs_fake/real-vs-fake/{split}/{real,fake}/.

    The CSVs use the data set's own convention (label 1 = real, 0 = fake) and its unnamed index
    column. Returns the folder holding the split folders.
    """
    images = root / KAGGLE_IMAGE_ROOT
    for s, split in enumerate(("train", "valid", "test")):
        rows: list[list[object]] = []
        for label_str, label in (("real", 1), ("fake", 0)):
            for i in range(per_class):
                name = f"{split}/{label_str}/{label_str[0]}{i:03d}.jpg"
                write_jpeg(images / name, tiny_rgb(s * 1000 + label * 100 + i, fake=label == 0))
                rows.append([str(len(rows)), f"/kaggle/input/x/{i}.jpg", f"{label_str}{i}", label, label_str, name])
        with (root / f"{split}.csv").open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["", "original_path", "id", "label", "label_str", "path"])
            writer.writerows(rows)
    return images


def randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give BatchNorm layers non-trivial running statistics, so a lost buffer changes scores."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            assert module.running_mean is not None
            assert module.running_var is not None
            module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)
    return model


def tiny_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return randomize_batchnorm(build_model("resnet18", pretrained="none"), seed)


def tiny_meta(size: int = TINY_SIZE_PX, threshold: float = 0.5) -> CheckpointMeta:
    return CheckpointMeta(
        arch="resnet18",
        preprocessing=Preprocessing(image_size=size),
        threshold=threshold,
        target_fpr=0.01,
        metrics={"roc_auc": 0.5},
        train_config={"seed": 0},
    )


def write_tiny_checkpoint(path: Path, *, seed: int = 0, size: int = TINY_SIZE_PX) -> tuple[nn.Module, str]:
    model = tiny_model(seed)
    return model, save_checkpoint(path, model, tiny_meta(size))
