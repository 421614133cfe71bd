"""The baseline the detector benchmarks compare against: a plain PyTorch training loop.

What a practitioner writes first: torchvision's ImageFolder over the split's real/ and fake/
folders, PIL decoding, `Resize((S, S))` of the whole image, ImageNet normalisation, no
augmentation (horizontal flips with `flip`), AdamW with a one-cycle schedule for a fixed number
of epochs, no early stopping, no calibration. Same backbone and one-logit head as deepscan
(scanner.detector.build_model).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets
from torchvision import transforms as T

from scanner.backbones import IMAGENET_MEAN, IMAGENET_STD
from scanner.detector import build_model


def fake_is_one(target: int) -> int:
    """ImageFolder numbers classes alphabetically (fake = 0, real = 1); deepscan's label is 1 = fake."""
    return 1 - target


def image_folder(split_dir: Path, image_size: int, *, flip: bool = False) -> datasets.ImageFolder:
    """`flip`: random horizontal flips, the one augmentation a practitioner adds first (training only)."""
    steps: list[object] = [T.Resize((image_size, image_size))]
    if flip:
        steps.append(T.RandomHorizontalFlip())
    transform = T.Compose([*steps, T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    return datasets.ImageFolder(str(split_dir), transform=transform, target_transform=fake_is_one)


@dataclass
class PlainRun:
    model: nn.Module
    seconds: float
    images: int
    epochs: int

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds


def train_plain(
    data: Path,
    *,
    arch: str,
    image_size: int,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float = 0.05,
    workers: int = 1,
    seed: int = 0,
    flip: bool = False,
    max_minutes: float | None = None,
) -> PlainRun:
    """Train on `data/train` and return the last epoch's model with its images/s; with `max_minutes`,
    no epoch starts after that much time (as `deepscan train --max-minutes`)."""
    torch.manual_seed(seed)
    train_set = image_folder(data / "train", image_size, flip=flip)
    loader = DataLoader(train_set, batch_size=batch_size, shuffle=True, num_workers=workers)
    model = build_model(arch, "none").to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * len(loader))
    model.train()
    images, done, started = 0, 0, time.perf_counter()
    for _ in range(epochs):
        if max_minutes is not None and images and time.perf_counter() - started >= 60 * max_minutes:
            break
        for x, y in loader:
            loss = F.binary_cross_entropy_with_logits(
                model(x.contiguous(memory_format=torch.channels_last)).reshape(-1), y.float()
            )
            optimizer.zero_grad(set_to_none=True)
            torch.autograd.backward(loss)
            optimizer.step()
            schedule.step()
            images += len(y)
        done += 1
    return PlainRun(model, time.perf_counter() - started, images, done)


@torch.inference_mode()
def score_plain(model: nn.Module, split_dir: Path, image_size: int, workers: int = 1) -> list[tuple[Path, int, float]]:
    """(path, label, P(fake)) for every image of `split_dir`."""
    folder = image_folder(split_dir, image_size)
    model.eval()
    scores: list[np.ndarray] = []
    for x, _ in DataLoader(folder, batch_size=64, num_workers=workers):
        scores.append(torch.sigmoid(model(x.contiguous(memory_format=torch.channels_last)).reshape(-1)).numpy())
    flat = np.concatenate(scores)
    return [(Path(path), fake_is_one(target), float(s)) for (path, target), s in zip(folder.samples, flat, strict=True)]
