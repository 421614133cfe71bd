"""Fine-tune the detector: AdamW with warmup + cosine, early stopping on validation ROC AUC,
the best checkpoint kept (calibrated at the target false-positive rate), resumable, seeded.

Split the way torchvision's reference scripts are: `load_data`, `train_one_epoch`, `validate`
and `train`, which wires them together. Validation scores go through `score_batch`, the
function the workers use, so the calibrated threshold means the same thing in production.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel
from tqdm import tqdm

from scanner.backbones import backbone
from scanner.checkpoint import CheckpointMeta, read_checkpoint_meta, save_checkpoint
from scanner.detector import ARCHS, STEMS, Preprocessing, build_model, head_path, resolve_device
from scanner.errors import ConfigError, check_choice
from scanner.faces import FaceView
from scanner.precision import Precision, autocast, describe, resolve_precision
from training.augment import augment_config
from training.config import CROP_CHOICES, PAIRS_CHOICES, SELF_BLEND_CHOICES, TTA_CHOICES, TrainConfig, demo_config
from training.datasets import (
    FAKE,
    REAL,
    Batch,
    ImageDataset,
    batches,
    class_counts,
    load_split,
    self_blend_samples,
)
from training.evaluate import predict
from training.facecache import FaceCache, default_cache_dir
from training.metrics import DetectionMetrics, calibration_warning, detection_metrics, threshold_at_fpr
from training.pairs import sample_groups
from training.selfblend import MASK_CHOICES
from training.state import TrainProgress, load_state, save_state, state_path

__all__ = ["TrainConfig", "TrainResult", "demo_config", "train"]  # the config lives in the torch-free training.config

log = logging.getLogger(__name__)

DEFAULT_MIN_LR_RATIO = 0.01  # cosine decays to 1% of the peak learning rate
MIN_AUC_GAIN = 1e-6  # a smaller rise in validation ROC AUC is not an improvement


@dataclass
class TrainResult:
    """Where the best checkpoint went and how good it was on the validation split."""

    checkpoint: Path
    model_version: str
    best_epoch: int  # 1-based
    epochs_run: int
    stopped_early: bool
    threshold: float
    metrics: dict[str, Any]
    metrics_log: Path
    state: Path
    seconds: float
    precision: str = "fp32"


@dataclass
class TrainData:
    train: ImageDataset
    valid: ImageDataset
    groups: list[list[int]] | None = None  # training.pairs: training samples batched side by side


@dataclass
class EpochStats:
    loss: float
    images: int
    seconds: float
    skipped: int

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


def metrics_log_path(checkpoint: Path) -> Path:
    """model.safetensors -> model.metrics.jsonl (one JSON object per epoch)."""
    return checkpoint.with_name(f"{checkpoint.stem}.metrics.jsonl")


def check_config(config: TrainConfig) -> None:
    """Raise ConfigError for values no run can use."""
    check_choice(config.arch, ARCHS, "architecture")
    if config.epochs < 1 or config.batch_size < 1 or config.patience < 1:
        raise ConfigError("epochs, batch size and patience must be at least 1")
    if not 0 <= config.freeze_backbone_epochs <= config.epochs:
        raise ConfigError("--freeze-backbone-epochs must be between 0 and --epochs")
    if config.learning_rate <= 0 or config.weight_decay < 0 or not 0 <= config.warmup_fraction < 1:
        raise ConfigError("learning rate must be positive, weight decay >= 0, warmup fraction in [0, 1)")
    if config.out.suffix != ".safetensors":
        raise ConfigError(f"checkpoint path {config.out} must end in .safetensors")
    if config.max_minutes is not None and config.max_minutes <= 0:
        raise ConfigError("--max-minutes must be positive")
    if not 0 <= config.ema < 1:
        raise ConfigError("--ema must be a decay in [0, 1): 0 turns the weight average off, 0.999 is typical")
    check_choice(config.self_blend, SELF_BLEND_CHOICES, "self-blend mode")
    check_choice(config.blend_mask, MASK_CHOICES, "blend mask")
    check_choice(config.crop, CROP_CHOICES, "crop mode")
    check_choice(config.tta, TTA_CHOICES, "test-time augmentation")
    check_choice(config.pairs, PAIRS_CHOICES, "pairs mode")
    check_choice(config.stem, STEMS, "input stem")
    augment_config(config.augment_p)  # raises for unknown names and probabilities outside [0, 1]


def served_crop(crop: str) -> str:
    """The checkpoint's crop mode for a training one: "random" windows train a model scored on the centre one."""
    return "center" if crop == "random" else crop


def load_data(config: TrainConfig, prep: Preprocessing) -> TrainData:
    """Train and validation datasets. `--self-blend only`: fakes are made from the real images alone,
    in validation too; `mix`: self-blended fakes join the training split's own, and validation keeps
    the data's real fakes, so the checkpoint is selected and calibrated on real manipulations."""
    train = load_split(config.data, "train", labels=config.labels, seed=config.seed)
    valid = load_split(config.data, "valid", labels=config.labels, seed=config.seed)
    if config.blend_mode == "only":
        ignored = sum(s.label == FAKE for s in train + valid)
        if ignored:
            log.info("self-blend: ignoring %d fake images; fakes are blended from real ones", ignored)
        train, valid = self_blend_samples(train), self_blend_samples(valid)
    elif config.blend_mode == "mix":
        train = self_blend_samples(train, keep_fakes=True)
    for name, samples in (("train", train), ("valid", valid)):
        counts = class_counts(samples)
        if not counts["real"] or not counts["fake"]:
            raise ConfigError(
                f"the {name} split has {counts['real']} real and {counts['fake']} fake images: "
                "it needs both (or train with --self-blend on real images)"
            )
        log.info("%s split: %d real, %d fake", name, counts["real"], counts["fake"])
    augmentation = augment_config(config.augment_p) if config.augment else None
    view = FaceView.named(config.face_view)
    cache = FaceCache(config.face_cache or default_cache_dir(), view.detector, prep.decode_min_side_px)
    log.info("face view: %s", view.describe())
    return TrainData(
        train=ImageDataset(
            train,
            prep,
            view=view,
            face_cache=cache,
            augmentation=augmentation,
            random_window=config.input_crop == "random",
            blend_mask=config.blend_mask,
            seed=config.seed,
        ),
        valid=ImageDataset(
            valid, prep, view=view, all_faces=True, face_cache=cache, blend_mask=config.blend_mask, seed=config.seed
        ),
        groups=sample_groups(train, config.pairs),
    )


def lr_at(step: int, *, base_lr: float, warmup_steps: int, total_steps: int) -> float:
    """Linear warmup to `base_lr`, then cosine decay to DEFAULT_MIN_LR_RATIO of it."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    floor = base_lr * DEFAULT_MIN_LR_RATIO
    return floor + (base_lr - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def make_optimizer(model: nn.Module, *, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW; biases and normalisation weights get no weight decay."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr)


def weight_average(model: nn.Module, decay: float) -> AveragedModel | None:
    """An exponential moving average of `model`'s weights and BatchNorm statistics (None when decay is 0).

    The decay warms up as (1 + n) / (10 + n) over the first updates (as timm's ModelEmaV3 does), so
    the average of a short run on a small data set is not dominated by its random initial weights.
    """
    if decay <= 0:
        return None

    @torch.no_grad()
    def update(averaged: Sequence[torch.Tensor], current: Sequence[torch.Tensor], updates: torch.Tensor | int) -> None:
        n = int(updates)
        weight = 1.0 - min(decay, (1 + n) / (10 + n))
        floats = [(a, c) for a, c in zip(averaged, current, strict=True) if a.is_floating_point()]
        for a, c in zip(averaged, current, strict=True):
            if not a.is_floating_point():
                a.copy_(c)  # BatchNorm's batch counter
        if floats:
            torch._foreach_lerp_([a for a, _ in floats], [c for _, c in floats], weight)

    return AveragedModel(model, multi_avg_fn=update, use_buffers=True)


def set_backbone_trainable(model: nn.Module, trainable: bool, *, head: str) -> None:
    """Freeze or unfreeze everything but the one-logit head at dotted path `head` (`head_path`), which
    is `fc` only for ResNets and Xception, and sits under `backbone.` behind an input stem."""
    for name, param in model.named_parameters():
        param.requires_grad_(trainable or name.startswith(head + "."))


def seed_everything(seed: int, device: torch.device) -> None:
    """Seed torch; per-sample randomness is seeded separately by (seed, epoch, index)."""
    torch.manual_seed(seed)
    if device.type == "cuda":
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def training_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, batch: Batch, device: torch.device, precision: Precision
) -> float:
    """One optimizer step on one batch; returns the batch's mean loss.

    With bf16 only the forward runs under autocast; the weights, their gradients and AdamW's state
    stay fp32 (the master weights), and the loss is taken in fp32.
    """
    x = batch.images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
    y = batch.labels.to(device, non_blocking=True).float()
    with autocast(device, precision):
        logits = model(x).reshape(-1)
    loss = F.binary_cross_entropy_with_logits(logits.float(), y)
    optimizer.zero_grad(set_to_none=True)
    torch.autograd.backward(loss)
    optimizer.step()
    return float(loss.detach())


def train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: ImageDataset,
    *,
    config: TrainConfig,
    progress: TrainProgress,
    total_steps: int,
    device: torch.device,
    ema: AveragedModel | None = None,
    groups: list[list[int]] | None = None,
) -> EpochStats:
    """One pass over the training data; advances `progress.step` (and the weight average)."""
    model.train()
    warmup = round(config.warmup_fraction * total_steps)
    loader = batches(
        data,
        batch_size=config.batch_size,
        workers=config.loader_workers,
        shuffle=True,
        epoch=progress.next_epoch,
        pin_memory=device.type == "cuda",
        groups=groups,
    )
    bar = tqdm(
        loader,
        total=math.ceil(len(data) / config.batch_size),
        desc=f"epoch {progress.next_epoch + 1}/{config.epochs}",
        unit="batch",
        disable=None if config.progress is None else not config.progress,
        leave=False,
    )
    loss_sum, images, skipped, start = 0.0, 0, 0, time.perf_counter()
    for batch in bar:
        skipped += len(batch.skipped)
        if batch.labels.numel() == 0:
            continue
        lr = lr_at(progress.step, base_lr=config.learning_rate, warmup_steps=warmup, total_steps=total_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss_sum += training_step(model, optimizer, batch, device, _precision(config)) * batch.labels.numel()
        if ema is not None:
            ema.update_parameters(model)
        images += batch.labels.numel()
        progress.step += 1
        rate = images / max(time.perf_counter() - start, 1e-9)
        bar.set_postfix(loss=f"{loss_sum / images:.4f}", img_s=f"{rate:.0f}", lr=f"{lr:.2e}", refresh=False)
    return EpochStats(loss_sum / max(images, 1), images, time.perf_counter() - start, skipped)


def validate(
    model: nn.Module, data: ImageDataset, *, config: TrainConfig, device: torch.device
) -> tuple[DetectionMetrics, int]:
    """Validation metrics at a threshold calibrated on these scores; also the skipped count."""
    found = predict(
        model, data, device=device, batch_size=config.batch_size, workers=config.loader_workers,
        precision=_precision(config),
    )  # fmt: skip
    if not np.all(np.isfinite(found.scores)):
        raise ConfigError("training diverged: validation scores are not finite; lower --lr")
    threshold = threshold_at_fpr(found.scores[found.labels == REAL], config.target_fpr)
    return detection_metrics(found.labels, found.scores, threshold), len(found.skipped)


def _precision(config: TrainConfig) -> Precision:
    """The precision `train` resolved (fp32 where a caller passes an unresolved config)."""
    return "bf16" if config.precision == "bf16" else "fp32"


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, sort_keys=True) + "\n")


def save_best(model: nn.Module, config: TrainConfig, prep: Preprocessing, metrics: DetectionMetrics, epoch: int) -> str:
    """Write the checkpoint with its calibrated threshold and validation metrics."""
    meta = CheckpointMeta(
        arch=config.arch,
        preprocessing=prep,
        face_view=FaceView.named(config.face_view),
        threshold=metrics.threshold,
        target_fpr=config.target_fpr,
        precision=_precision(config),
        stem=config.stem,
        metrics={
            "split": "valid",
            "epoch": epoch + 1,
            **metrics.to_dict(),
            "calibration_warning": calibration_warning(metrics.real, config.target_fpr),
        },
        train_config=config.to_dict(),
    )
    return save_checkpoint(config.out, model, meta)


def start_or_resume(
    model: nn.Module, optimizer: torch.optim.Optimizer, config: TrainConfig, ema: AveragedModel | None
) -> TrainProgress:
    """Progress restored from the training state with --resume, else a fresh start (and metrics log)."""
    if config.resume:
        progress = load_state(
            state_path(config.out), model=model, optimizer=optimizer, fingerprint=config.fingerprint(), ema=ema
        )
        log.info(
            "resuming at epoch %d (best validation ROC AUC so far %.4f)", progress.next_epoch + 1, progress.best_auc
        )
        return progress
    metrics_log_path(config.out).unlink(missing_ok=True)
    return TrainProgress()


def train(config: TrainConfig) -> TrainResult:
    """Train a detector as `config` says and return where the best checkpoint went."""
    check_config(config)
    started = time.perf_counter()
    device = resolve_device(config.device)
    config = replace(config, precision=resolve_precision(config.precision, device), lr=config.learning_rate)
    log.info("precision: %s", describe(_precision(config), device))
    seed_everything(config.seed, device)
    spec = backbone(config.arch)  # its pretrained weights expect its own normalisation
    prep = Preprocessing(
        image_size=config.image_size,
        mean=spec.mean,
        std=spec.std,
        crop=served_crop(config.input_crop),
        decode=config.decode,
        tta=config.tta,
    )
    data = load_data(config, prep)
    model = build_model(config.arch, config.pretrained, config.stem).to(device).to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, lr=config.learning_rate, weight_decay=config.weight_decay)
    config.out.parent.mkdir(parents=True, exist_ok=True)
    ema = weight_average(model, config.ema)
    progress = start_or_resume(model, optimizer, config, ema)
    total_steps = config.epochs * math.ceil(len(data.train) / config.batch_size)
    deadline = None if config.max_minutes is None else time.perf_counter() + 60 * config.max_minutes
    while progress.next_epoch < config.epochs and progress.stale_epochs < config.patience:
        if deadline is not None and time.perf_counter() >= deadline and progress.next_epoch > 0:
            log.info("stopping after %d epochs: --max-minutes %g reached", progress.next_epoch, config.max_minutes)
            break
        run_epoch(model, optimizer, data, config=config, prep=prep, progress=progress, total_steps=total_steps, ema=ema)
    meta, version = read_checkpoint_meta(config.out)
    return TrainResult(
        checkpoint=config.out,
        model_version=version,
        best_epoch=progress.best_epoch + 1,
        epochs_run=progress.next_epoch,
        stopped_early=progress.next_epoch < config.epochs,
        threshold=meta.threshold,
        metrics=meta.metrics,
        metrics_log=metrics_log_path(config.out),
        state=state_path(config.out),
        seconds=time.perf_counter() - started,
        precision=config.precision,
    )


def run_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: TrainData,
    *,
    config: TrainConfig,
    prep: Preprocessing,
    progress: TrainProgress,
    total_steps: int,
    ema: AveragedModel | None = None,
) -> None:
    """Train, validate, keep the checkpoint if it is the best so far, log, save state.

    With a weight average, the average is what is validated and saved."""
    device = next(model.parameters()).device
    epoch = progress.next_epoch
    set_backbone_trainable(model, epoch >= config.freeze_backbone_epochs, head=head_path(config.arch, config.stem))
    stats = train_one_epoch(
        model,
        optimizer,
        data.train,
        config=config,
        progress=progress,
        total_steps=total_steps,
        device=device,
        ema=ema,
        groups=data.groups,
    )
    scored = model if ema is None else ema.module
    metrics, valid_skipped = validate(scored, data.valid, config=config, device=device)
    improved = metrics.roc_auc > progress.best_auc + max(config.min_delta, MIN_AUC_GAIN)
    if improved:
        save_best(scored, config, prep, metrics, epoch)
        progress.best_auc, progress.best_epoch, progress.stale_epochs = metrics.roc_auc, epoch, 0
    else:
        progress.stale_epochs += 1
    progress.next_epoch = epoch + 1
    record = epoch_record(epoch, stats, metrics, best=improved, lr=optimizer.param_groups[0]["lr"])
    append_jsonl(metrics_log_path(config.out), {**record, "valid_skipped": valid_skipped})
    save_state(
        state_path(config.out),
        model=model,
        optimizer=optimizer,
        progress=progress,
        fingerprint=config.fingerprint(),
        ema=ema,
    )
    log.info(
        "epoch %d: loss %.4f, %.0f img/s, valid ROC AUC %.4f%s",
        epoch + 1,
        stats.loss,
        stats.images_per_s,
        metrics.roc_auc,
        " (best, saved)" if improved else "",
    )


def epoch_record(epoch: int, stats: EpochStats, metrics: DetectionMetrics, *, best: bool, lr: float) -> dict[str, Any]:
    """One line of the metrics log."""
    return {
        "epoch": epoch + 1,
        "train_loss": stats.loss,
        "train_images": stats.images,
        "train_images_per_s": stats.images_per_s,
        "train_seconds": stats.seconds,
        "train_skipped": stats.skipped,
        "lr": lr,
        "best": best,
        **{f"valid_{k}": v for k, v in metrics.to_dict().items()},
    }
