"""Batched inference with a checkpoint loaded once per worker process."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from scanner.checkpoint import load_checkpoint
from scanner.detector import normalize, resize_uint8, resolve_device, score_batch
from scanner.precision import describe, resolve_precision
from workers import gpudecode
from workers.gpudecode import EncodedJpeg

log = logging.getLogger(__name__)

ModelInput = torch.Tensor | EncodedJpeg  # a prepared 3xSxS uint8 tensor, or a JPEG for the device decoder


@dataclass(frozen=True)
class Scored:
    """One input's score, and for a device-decoded JPEG the pixels of its thumbnail (HxWx3 uint8)."""

    score: float
    preview: np.ndarray | None = None


class Scorer:
    """A loaded checkpoint plus the preprocessing it was trained with.

    `prepare` turns decoded pixels into the model's input (on the fetch/decode threads); `score`
    and `score_inputs` run the model on a batch formed across items and frames. Calls are
    serialised so several threads may share one model (the workers' `Batcher` is the one caller).
    """

    def __init__(
        self,
        checkpoint: Path,
        *,
        device: str = "auto",
        batch_size: int = 32,
        gpu_decode: bool = True,
        compile_model: bool = False,
        precision: str = "auto",
    ) -> None:
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        loaded = load_checkpoint(checkpoint, device=self.device)
        self.model = loaded.model
        self.meta = loaded.meta
        self.model_version = loaded.model_version
        self.path = Path(checkpoint)
        self.batch_size = batch_size
        self.decodes_jpeg_on_device = gpudecode.decodes_on_device(
            self.device, self.meta.preprocessing, enabled=gpu_decode
        )
        self.compiled = compile_model
        self._lock = threading.Lock()
        self._host_batch: torch.Tensor | None = None  # pinned staging buffer for CPU-prepared inputs (CUDA)
        if compile_model:
            self.model = torch.compile(self.model)  # type: ignore[assignment]
        started = time.perf_counter()
        self.warm_up()
        if compile_model:
            log.info("torch.compile: model compiled and warmed up in %.1f s", time.perf_counter() - started)
        log.info(
            "loaded checkpoint %s (%s, %s), %s; JPEG decode on the %s",
            self.path, self.meta.arch, self.model_version[:12], describe(self.precision, self.device),
            "GPU (nvJPEG)" if self.decodes_jpeg_on_device else "CPU",
        )  # fmt: skip
        calibrated = self.meta.precision
        if calibrated is not None and calibrated != self.precision:
            log.info(
                "this worker scores in %s, the checkpoint's threshold was calibrated in %s: scores differ by "
                "about 0.005 at most (docs/performance.md); --precision %s scores exactly as calibrated",
                self.precision, calibrated, calibrated,
            )  # fmt: skip

    def warm_up(self) -> None:
        """Run one full batch of blank images, so the first real batch does not pay for kernel
        selection (oneDNN on the CPU, cuDNN autotuning on CUDA; the whole compilation with
        `compile_model`) and a model that cannot run on this device fails at start, not on the
        first chunk."""
        size = self.meta.preprocessing.image_size
        with self._lock:
            self._forward(torch.zeros((self.batch_size, 3, size, size), dtype=torch.uint8, device=self.device))

    @property
    def threshold(self) -> float:
        return float(self.meta.threshold)

    @property
    def decode_min_side_px(self) -> int | None:
        """How small an image may be decoded for this checkpoint (None: in full); see `Preprocessing.decode`."""
        return self.meta.preprocessing.decode_min_side_px

    def prepare(self, rgb: np.ndarray) -> torch.Tensor:
        """One decoded RGB image (or face crop) resized to the model's input, still uint8 (3xSxS).

        Normalisation waits for the batch, once per batch on the model's device: the same numbers
        as `preprocess` (training's path), a quarter of the bytes while the unit waits for a batch.
        """
        return resize_uint8(rgb, self.meta.preprocessing)

    def score(self, tensors: Sequence[torch.Tensor]) -> np.ndarray:
        """Probabilities of manipulation for prepared tensors, in batches of `batch_size`."""
        if not tensors:
            return np.zeros(0, dtype=np.float32)
        out = []
        with self._lock:
            for start in range(0, len(tensors), self.batch_size):
                out.append(self._forward(self._to_device(tensors[start : start + self.batch_size])))
        return np.concatenate(out).astype(np.float32)

    def score_inputs(self, inputs: Sequence[ModelInput]) -> list[Scored | Exception]:
        """Scores for one batch mixing prepared tensors and JPEGs for the device decoder, in order.

        A JPEG that neither decoder can read gets its PermanentError in its place.
        """
        if not inputs:
            return []
        if len(inputs) > self.batch_size:
            raise ValueError(f"a batch of {len(inputs)} inputs is over the batch size {self.batch_size}")
        hosted = [(i, x) for i, x in enumerate(inputs) if isinstance(x, torch.Tensor)]
        encoded = [(i, x) for i, x in enumerate(inputs) if isinstance(x, EncodedJpeg)]
        previews: dict[int, np.ndarray | None] = {}
        failed: dict[int, Exception] = {}
        with self._lock:
            if not encoded:  # the CPU's only case: no scatter into a batch of blanks
                scores = self._forward(self._to_device([x for _, x in hosted]))
                return [Scored(float(score)) for score in scores]
            size = self.meta.preprocessing.image_size
            batch = torch.zeros((len(inputs), 3, size, size), dtype=torch.uint8, device=self.device)
            if hosted:
                batch[[i for i, _ in hosted]] = self._to_device([x for _, x in hosted])
            decoded = gpudecode.decode_batch([x for _, x in encoded], self.meta.preprocessing, self.device)
            for (i, _), result in zip(encoded, decoded, strict=True):
                if isinstance(result, Exception):
                    failed[i] = result  # its slot stays blank; its score is not used
                else:
                    batch[i], previews[i] = result.square, result.preview
            scores = self._forward(batch)
        return [failed[i] if i in failed else Scored(float(s), previews.get(i)) for i, s in enumerate(scores)]

    def _to_device(self, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
        """Prepared uint8 tensors stacked as one batch on the model's device.

        On CUDA they are stacked into a pinned buffer kept for the process and copied without
        blocking; the buffer is reused only after the batch's scores came back to the host, so
        a copy in flight is never overwritten.
        """
        if self.device.type != "cuda":
            return torch.stack(list(tensors))
        shape = (self.batch_size, *tensors[0].shape)
        if self._host_batch is None or self._host_batch.shape != shape:
            self._host_batch = torch.empty(shape, dtype=torch.uint8).pin_memory()
        staged = torch.stack(list(tensors), out=self._host_batch[: len(tensors)])
        return staged.to(self.device, non_blocking=True)

    def _forward(self, batch: torch.Tensor) -> np.ndarray:
        """Scores of an Nx3xSxS uint8 batch: normalised on its device, channels_last, at this scorer's precision.

        A compiled model sees one batch shape only (partial batches are padded), so it is compiled once.
        """
        count = batch.shape[0]
        if self.compiled and 0 < count < self.batch_size:
            batch = torch.cat([batch, batch.new_zeros((self.batch_size - count, *batch.shape[1:]))])
        prep = self.meta.preprocessing
        return score_batch(self.model, normalize(batch, prep), self.device, self.precision, prep.tta)[:count]
