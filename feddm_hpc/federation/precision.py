"""Mixed precision of local training: the U-Net's forward (and so its backward) under bf16
autocast, with float32 parameters, optimizer state, loss and aggregation.

bf16 rather than fp16 because it keeps float32's exponent range, so no loss scaling is needed and
a step is deterministic on a given device. Sampling and evaluation stay float32.
"""
import contextlib

import torch

PRECISIONS = ("fp32", "bf16")


def forward_precision(device: str, precision: str):
    """The context the model's forward runs in for `precision` on `device` (cpu | cuda[:N])."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision != "bf16":
        raise ValueError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
