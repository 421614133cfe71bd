"""A checkpoint's safetensors header, read without torch (scanner/checkpoint.py has the whole format).

`deepscan scan` reads a checkpoint's face view from here to warn about `--no-faces`: only the
header is read, and torch is not loaded. Nothing here verifies the weights; a worker loading the
checkpoint does (`scanner.checkpoint.read_tensor_file`).
"""

from __future__ import annotations

import json
from pathlib import Path

from scanner.errors import CheckpointError

HEADER_LENGTH_BYTES = 8
MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own limit
_PICKLE_MAGIC = (b"PK\x03\x04", b"\x80")  # torch.save's zip archive, a bare pickle


def read_header_metadata(path: Path) -> dict[str, str]:
    """The `__metadata__` of the checkpoint at `path`, reading only its header; CheckpointError if unreadable."""
    try:
        with path.open("rb") as fh:
            length = fh.read(HEADER_LENGTH_BYTES)
            size = int.from_bytes(length, "little") if len(length) == HEADER_LENGTH_BYTES else 0
            prefix = length + fh.read(min(size, MAX_HEADER_BYTES))
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc.strerror or exc}") from None
    return header_metadata(prefix, path)


def header_metadata(data: bytes, path: Path) -> dict[str, str]:
    """The `__metadata__` of a safetensors header, refusing pickles and garbage with one line."""
    # A safetensors file opens with its header's length (8 bytes, little-endian) and then "{"; the
    # length's first byte may be 0x80 like a pickle's, so only a file that is not that is a pickle.
    looks_safetensors = data[HEADER_LENGTH_BYTES : HEADER_LENGTH_BYTES + 1] == b"{"
    if data.startswith(_PICKLE_MAGIC) and not looks_safetensors:
        raise CheckpointError(
            f"{path} is a pickled PyTorch file, not safetensors: deepscan never unpickles checkpoints; "
            "train one with `deepscan train` or convert the weights with a tool you trust"
        )
    size = int.from_bytes(data[:HEADER_LENGTH_BYTES], "little") if len(data) >= HEADER_LENGTH_BYTES else 0
    raw = data[HEADER_LENGTH_BYTES : HEADER_LENGTH_BYTES + size]
    if not 2 <= size <= MAX_HEADER_BYTES or len(raw) < size or not raw.startswith(b"{"):
        raise CheckpointError(f"{path} is not a safetensors file (or it is truncated)")
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(f"{path} has a corrupt safetensors header") from None
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(metadata, dict):
        raise CheckpointError(f"{path} has no deepscan metadata: it is not a deepscan checkpoint")
    return {str(k): str(v) for k, v in metadata.items()}
