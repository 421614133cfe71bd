"""Numeric precision of the model's arithmetic: chosen by the hardware, recorded with the result.

`auto` runs bf16 autocast where the device does bf16 natively — a CUDA GPU with bf16, or a CPU with
AVX-512 BF16 or AMX (most current cloud instances), where a ResNet runs about 2x faster than in
fp32 — and fp32 everywhere else: on a CPU without those instructions bf16 is emulated and slower
than fp32, so the choice must be the processor's, not a constant. Weights stay fp32 (autocast
casts per operation), so one checkpoint serves both precisions. Scores at bf16 differ from fp32 by
a few thousandths (docs/performance.md gives the measured tolerance), which is why every verdict
records the precision it was scored at.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Literal

import torch

from scanner.settings import validate_precision

Precision = Literal["fp32", "bf16"]
NATIVE_BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})  # /proc/cpuinfo names
_CPUINFO = Path("/proc/cpuinfo")


def cpu_flags(cpuinfo: Path = _CPUINFO) -> frozenset[str] | None:
    """The CPU's feature flags as Linux reports them, or None where there is no /proc/cpuinfo."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def cpu_has_native_bf16(flags: frozenset[str] | None = None) -> bool:
    """True when this CPU computes bf16 in hardware (AVX-512 BF16 or AMX)."""
    flags = cpu_flags() if flags is None else flags
    if flags is not None:
        return bool(flags & NATIVE_BF16_CPU_FLAGS)
    # No /proc/cpuinfo (macOS, Windows): ask the CPU capability checks PyTorch itself uses.
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def native_bf16(device: torch.device) -> bool:
    """Whether `device` runs bf16 natively, so that `auto` should choose it."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    return device.type == "cpu" and cpu_has_native_bf16()


def resolve_precision(requested: str, device: torch.device) -> Precision:
    """The precision a process will run at: `auto` asks the hardware; fp32 and bf16 are taken as asked."""
    choice = validate_precision(requested)
    if choice == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return "bf16" if choice == "bf16" else "fp32"


def describe(precision: Precision, device: torch.device) -> str:
    """One line for start-up logs and benchmarks: what runs, and why `auto` chose it."""
    if device.type == "cuda":
        return f"{precision} on {device}"
    native = "native bf16 (AVX-512 BF16/AMX)" if cpu_has_native_bf16() else "no native bf16"
    return f"{precision} on the CPU ({native})"


def autocast(device: torch.device, precision: Precision) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast for `precision` bf16, a no-op for fp32."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
