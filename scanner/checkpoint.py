"""The checkpoint format: one `.safetensors` file holding the weights and, in its header, everything
needed to use them (arch, preprocessing, face view, calibrated threshold, metrics, label meaning, training
config, creation time, input stem).

The file's sha256 is the `model_version` recorded on every verdict. The header also carries a
`content_sha256` over the tensors and the other metadata, so a file edited after it was written
(a changed threshold, flipped weight bits) is refused rather than silently trusted. Nothing is
ever unpickled: safetensors is a flat header plus raw tensor bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save as dump_tensors
from torch import nn

from scanner.checkpoint_header import header_metadata
from scanner.detector import STEMS, Preprocessing, build_model, prepare_for_inference, resolve_device
from scanner.errors import CheckpointError, ConfigError
from scanner.faces import FaceView

FORMAT_NAME = "deepscan-detector"
FORMAT_VERSION = "1"
LABEL_MEANING = "score = sigmoid(logit) = P(manipulated); training label 1 = fake (manipulated), 0 = real"
DIGEST_KEY = "content_sha256"


@dataclass
class CheckpointMeta:
    """What a checkpoint says about its weights."""

    arch: str
    preprocessing: Preprocessing
    threshold: float
    target_fpr: float
    metrics: dict[str, Any] = field(default_factory=dict)
    label_meaning: str = LABEL_MEANING
    train_config: dict[str, Any] = field(default_factory=dict)
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    face_view: FaceView = field(default_factory=FaceView.whole_image)
    # The arithmetic the threshold was calibrated in (fp32 | bf16); None for checkpoints from before
    # precision was recorded, which were calibrated in fp32 on a CPU.
    precision: str | None = None
    # The input stem the model was built with (scanner/stems.py); checkpoints from before stems
    # were recorded read the RGB square alone ("none").
    stem: str = "none"

    def to_metadata(self) -> dict[str, str]:
        """The header fields, all strings as safetensors requires."""
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "arch": self.arch,
            **self.preprocessing.to_metadata(),
            **self.face_view.to_metadata(),
            "threshold": repr(float(self.threshold)),
            "target_fpr": repr(float(self.target_fpr)),
            "metrics": json.dumps(self.metrics, sort_keys=True),
            "label_meaning": self.label_meaning,
            "train_config": json.dumps(self.train_config, sort_keys=True, default=str),
            "created_at": self.created_at,
            **({"precision": self.precision} if self.precision is not None else {}),
            **({"stem": self.stem} if self.stem != "none" else {}),  # a plain model's header is as it was
        }

    @classmethod
    def from_metadata(cls, meta: Mapping[str, str]) -> CheckpointMeta:
        """Read back `to_metadata`; raise CheckpointError for a file that is not a deepscan checkpoint."""
        if meta.get("format") != FORMAT_NAME:
            raise CheckpointError(
                "safetensors file is not a deepscan detector checkpoint (no format=deepscan-detector)"
            )
        if meta.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(f"checkpoint format version {meta.get('format_version')!r} is not supported")
        try:
            checkpoint = cls(
                arch=meta["arch"],
                preprocessing=Preprocessing.from_metadata(meta),
                threshold=float(meta["threshold"]),
                target_fpr=float(meta["target_fpr"]),
                metrics=json.loads(meta["metrics"]),
                label_meaning=meta["label_meaning"],
                train_config=json.loads(meta["train_config"]),
                created_at=meta["created_at"],
                face_view=FaceView.from_metadata(meta),
                precision=meta.get("precision"),
                stem=meta.get("stem", "none"),
            )
        except (KeyError, ValueError) as exc:
            raise CheckpointError(f"checkpoint metadata is incomplete or malformed ({exc})") from None
        _check_threshold(checkpoint.threshold)
        if checkpoint.precision not in (None, "fp32", "bf16"):
            raise CheckpointError(f"checkpoint precision {checkpoint.precision!r} is not fp32 or bf16")
        if checkpoint.stem not in STEMS:
            raise CheckpointError(f"checkpoint input stem {checkpoint.stem!r} is not one of {', '.join(STEMS)}")
        return checkpoint


def _check_threshold(threshold: float) -> None:
    """Refuse a threshold that is not a probability: NaN makes every `score >= threshold` false (all
    verdicts `real`), and one outside [0, 1] flags everything or nothing. The content digest cannot
    catch it: such a file may have been written that way."""
    if not (math.isfinite(threshold) and 0.0 <= threshold <= 1.0):
        raise CheckpointError(
            f"checkpoint threshold {threshold!r} is not a probability in [0, 1]: "
            "recalibrate the model (`deepscan train`) or use a sound checkpoint"
        )


@dataclass
class LoadedCheckpoint:
    """A model ready for inference with its metadata and version."""

    model: nn.Module
    meta: CheckpointMeta
    model_version: str
    path: Path


@dataclass
class TensorFile:
    """The raw contents of a verified safetensors file."""

    tensors: dict[str, torch.Tensor]
    metadata: dict[str, str]
    sha256: str


def content_digest(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> str:
    """sha256 over every tensor (name, dtype, shape, bytes) and every metadata field but the digest."""
    digest = hashlib.sha256()
    fields = {k: v for k, v in metadata.items() if k != DIGEST_KEY}
    digest.update(json.dumps(fields, sort_keys=True).encode())
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"\n{name}:{tensor.dtype}:{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def write_tensor_file(path: Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> str:
    """Write tensors and metadata atomically (temp file in the same folder, then os.replace).

    Returns the sha256 of the written file.
    """
    plain = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
    header = {**metadata, DIGEST_KEY: content_digest(plain, metadata)}
    data = dump_tensors(plain, metadata=header)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return hashlib.sha256(data).hexdigest()


def read_tensor_file(path: Path) -> TensorFile:
    """Read and verify a file written by `write_tensor_file`; anything else raises CheckpointError."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist") from None
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc.strerror or exc}") from None
    metadata = header_metadata(data, path)
    try:
        tensors = load_tensors(data)
    except SafetensorError as exc:
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({exc})") from None
    if metadata.get(DIGEST_KEY) != content_digest(tensors, metadata):
        raise CheckpointError(f"checkpoint {path} was modified after it was written (content digest mismatch)")
    return TensorFile(tensors=tensors, metadata=metadata, sha256=hashlib.sha256(data).hexdigest())


def save_checkpoint(path: str | Path, model: nn.Module, meta: CheckpointMeta) -> str:
    """Write `model` and `meta` to one .safetensors file atomically; return its model_version (sha256)."""
    return write_tensor_file(Path(path), model.state_dict(), meta.to_metadata())


def read_checkpoint_meta(path: str | Path) -> tuple[CheckpointMeta, str]:
    """The metadata and model_version of a checkpoint, verified, without building the model."""
    content = read_tensor_file(Path(path))
    return CheckpointMeta.from_metadata(content.metadata), content.sha256


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> LoadedCheckpoint:
    """Load a verified checkpoint into a model in eval mode, channels_last, on `device`."""
    path = Path(path)
    content = read_tensor_file(path)
    meta = CheckpointMeta.from_metadata(content.metadata)
    try:
        model = build_model(meta.arch, pretrained="none", stem=meta.stem)
    except ConfigError as exc:
        raise CheckpointError(f"checkpoint {path}: {exc}") from None
    try:
        model.load_state_dict(content.tensors, strict=True)
    except RuntimeError as exc:
        described = meta.arch if meta.stem == "none" else f"{meta.arch} with the {meta.stem} stem"
        raise CheckpointError(f"checkpoint {path} weights do not fit {described}: {_first_detail(exc)}") from None
    target = device if isinstance(device, torch.device) else resolve_device(device)
    return LoadedCheckpoint(
        model=prepare_for_inference(model, target), meta=meta, model_version=content.sha256, path=path
    )


def _first_detail(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[1] if len(lines) > 1 else lines[0] if lines else type(exc).__name__
