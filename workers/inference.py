"""Batched inference with a checkpoint loaded once per worker process."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from scanner.checkpoint import load_checkpoint
from scanner.detector import normalize, resize_uint8, resolve_device, score_batch

log = logging.getLogger(__name__)


class Scorer:
    """A loaded checkpoint plus the preprocessing it was trained with.

    `prepare` turns decoded pixels into the model's input (on the fetch/decode threads); `score`
    runs the model on a batch formed across items and frames. Calls to `score` are serialised so
    several pipeline threads may share one model.
    """

    def __init__(self, checkpoint: Path, *, device: str = "auto", batch_size: int = 32) -> None:
        self.device = resolve_device(device)
        loaded = load_checkpoint(checkpoint, device=self.device)
        self.model = loaded.model
        self.meta = loaded.meta
        self.model_version = loaded.model_version
        self.path = Path(checkpoint)
        self.batch_size = batch_size
        self._lock = threading.Lock()
        self.warm_up()
        log.info("loaded checkpoint %s (%s, %s) on %s", self.path, self.meta.arch, self.model_version[:12], self.device)

    def warm_up(self) -> None:
        """Run one full batch of blank images, so the first real batch does not pay for kernel
        selection (oneDNN on the CPU, cuDNN autotuning on CUDA) and a model that cannot run on
        this device fails at start, not on the first chunk."""
        size = self.meta.preprocessing.image_size
        score_batch(self.model, torch.zeros((self.batch_size, 3, size, size)), self.device)

    @property
    def threshold(self) -> float:
        return float(self.meta.threshold)

    @property
    def decode_min_side_px(self) -> int | None:
        """How small an image may be decoded for this checkpoint (None: in full); see `Preprocessing.decode`."""
        return self.meta.preprocessing.decode_min_side_px

    def prepare(self, rgb: np.ndarray) -> torch.Tensor:
        """One decoded RGB image (or face crop) resized to the model's input, still uint8 (3xSxS).

        Normalisation waits for `score`, once per batch on the model's device: the same numbers as
        `preprocess` (training's path), a quarter of the bytes while the unit waits for a batch.
        """
        return resize_uint8(rgb, self.meta.preprocessing)

    def score(self, tensors: Sequence[torch.Tensor]) -> np.ndarray:
        """Probabilities of manipulation for prepared tensors, in batches of `batch_size`."""
        if not tensors:
            return np.zeros(0, dtype=np.float32)
        out = []
        with self._lock:
            for start in range(0, len(tensors), self.batch_size):
                out.append(score_batch(self.model, self._batch(tensors[start : start + self.batch_size]), self.device))
        return np.concatenate(out).astype(np.float32)

    def _batch(self, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
        """Prepared uint8 tensors as one normalised float batch on the model's device."""
        batch = torch.stack(list(tensors))
        if self.device.type == "cuda":
            batch = batch.pin_memory().to(self.device, non_blocking=True)
        return normalize(batch, self.meta.preprocessing)
