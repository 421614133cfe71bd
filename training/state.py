"""The resumable training state: last-epoch weights, optimizer moments and loop progress, in one
safetensors file beside the checkpoint (never a pickle, like the checkpoint itself)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from scanner.checkpoint import read_tensor_file, write_tensor_file
from scanner.errors import CheckpointError, ConfigError

STATE_FORMAT = "deepscan-train-state"
_MODEL_PREFIX = "model."
_OPTIM_PREFIX = "optim."
_EMA_PREFIX = "ema."


@dataclass
class TrainProgress:
    """Where the training loop stands; `next_epoch` is 0-based."""

    next_epoch: int = 0
    step: int = 0
    best_auc: float = float("-inf")
    best_epoch: int = -1
    stale_epochs: int = 0


def state_path(checkpoint: Path) -> Path:
    """model.safetensors -> model.train-state.safetensors"""
    return checkpoint.with_name(f"{checkpoint.stem}.train-state.safetensors")


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    """The optimizer's per-parameter tensors (flattened) and its JSON-able parameter groups."""
    state = optimizer.state_dict()
    tensors = {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"optimizer state {key!r} is not a tensor")
            tensors[f"{_OPTIM_PREFIX}{index}.{key}"] = value
    return tensors, state["param_groups"]


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: Mapping[str, torch.Tensor], groups: Any) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, tensor in tensors.items():
        index, key = name[len(_OPTIM_PREFIX) :].split(".", 1)
        state.setdefault(int(index), {})[key] = tensor
    for group in groups:
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def save_state(
    path: Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    progress: TrainProgress,
    fingerprint: Mapping[str, str],
    ema: nn.Module | None = None,
) -> None:
    """Write the state atomically; `fingerprint` names the options a resume must repeat."""
    optim, groups = optimizer_tensors(optimizer)
    tensors = {**{_MODEL_PREFIX + k: v for k, v in model.state_dict().items()}, **optim}
    if ema is not None:
        tensors |= {_EMA_PREFIX + k: v for k, v in ema.state_dict().items()}
    metadata = {
        "format": STATE_FORMAT,
        "progress": json.dumps(asdict(progress)),
        "param_groups": json.dumps(groups),
        "fingerprint": json.dumps(dict(fingerprint), sort_keys=True),
    }
    write_tensor_file(path, tensors, metadata)


def load_state(
    path: Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    fingerprint: Mapping[str, str],
    ema: nn.Module | None = None,
) -> TrainProgress:
    """Restore model and optimizer from `path`; refuse a state written with different options."""
    if not path.is_file():
        raise ConfigError(f"nothing to resume: {path} does not exist (train once without --resume)")
    content = read_tensor_file(path)
    if content.metadata.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{path} is not a deepscan training state")
    saved = json.loads(content.metadata["fingerprint"])
    changed = sorted(k for k in set(saved) | set(fingerprint) if saved.get(k) != fingerprint.get(k))
    if changed:
        detail = ", ".join(f"{k} was {saved.get(k)!r}, now {fingerprint.get(k)!r}" for k in changed)
        raise ConfigError(f"cannot resume with different options: {detail}")
    weights = {k[len(_MODEL_PREFIX) :]: v for k, v in content.tensors.items() if k.startswith(_MODEL_PREFIX)}
    model.load_state_dict(weights, strict=True)
    if ema is not None:
        ema.load_state_dict({k[len(_EMA_PREFIX) :]: v for k, v in content.tensors.items() if k.startswith(_EMA_PREFIX)})
    optim = {k: v for k, v in content.tensors.items() if k.startswith(_OPTIM_PREFIX)}
    restore_optimizer(optimizer, optim, json.loads(content.metadata["param_groups"]))
    return TrainProgress(**json.loads(content.metadata["progress"]))
