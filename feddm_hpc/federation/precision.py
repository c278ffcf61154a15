"""Mixed precision of local training: the U-Net's forward (and so its backward) under bf16
autocast, with float32 parameters, optimizer state, loss and aggregation.

bf16 rather than fp16 because it keeps float32's exponent range, so no loss scaling is needed and
a step is deterministic on a given device. Sampling and evaluation stay float32.
"""
import contextlib
from pathlib import Path

import torch

PRECISIONS = ("fp32", "bf16")

# CPU flags (Linux /proc/cpuinfo) of native bf16 arithmetic; without one of them oneDNN emulates
# bf16 and a step gets slower, not faster (results/recipe/FINDINGS.md: x0.12 on an AVX2-only EPYC).
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set | None:
    """The CPU's feature flags, or None where /proc/cpuinfo is not there to say (not Linux)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return None


def slow_bf16_warning(device: str, precision: str, flags: set | None) -> str | None:
    """A one-line warning when bf16 autocast would run emulated on this CPU, else None."""
    if precision != "bf16" or torch.device(device).type != "cpu" or flags is None:
        return None
    if flags & set(NATIVE_BF16_FLAGS):
        return None
    return ("system.precision: bf16 on a CPU without native bf16 (no " + " or ".join(NATIVE_BF16_FLAGS)
            + " flag): local training runs emulated, several times slower than fp32; "
            "results stay valid, set system.precision: fp32 for speed")


def forward_precision(device: str, precision: str):
    """The context the model's forward runs in for `precision` on `device` (cpu | cuda[:N])."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision != "bf16":
        raise ValueError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
