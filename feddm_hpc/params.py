"""Flatten a model's parameters to one contiguous float32 vector and back.

The wire format, the aggregation and the checkpoint all work on this one vector: a single `Bcast`
buffer, a single HDF5 dataset. The ParamSpec records names, shapes and offsets so the vector is
self-describing and a checkpoint can be checked against the model it is loaded into.

A model on one CUDA device crosses to the host in one copy each way: flatten concatenates on the
device and copies once into a cached page-locked buffer, unflatten copies the vector to the device
once and splits it into the parameters there. On the CPU both copy tensor by tensor, as before.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Tuple

import numpy as np
import torch


@dataclass(frozen=True)
class ParamEntry:
    name: str
    shape: Tuple[int, ...]
    offset: int
    numel: int


@dataclass(frozen=True)
class ParamSpec:
    entries: Tuple[ParamEntry, ...]
    total: int

    @classmethod
    def from_model(cls, model: torch.nn.Module) -> "ParamSpec":
        entries, offset = [], 0
        for name, p in model.named_parameters():
            n = p.numel()
            entries.append(ParamEntry(name, tuple(p.shape), offset, n))
            offset += n
        return cls(tuple(entries), offset)

    def fingerprint(self) -> str:
        """A short digest of names and shapes: equal specs, equal fingerprints."""
        text = ";".join(f"{e.name}:{'x'.join(map(str, e.shape))}" for e in self.entries)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def as_text(self) -> str:
        return "\n".join(f"{e.name} {' '.join(map(str, e.shape))}" for e in self.entries)


def _cuda_device(params):
    """The one CUDA device holding all of `params`, or None (CPU, or several devices)."""
    devices = {p.device for p in params}
    if len(devices) == 1:
        (device,) = devices
        if device.type == "cuda":
            return device
    return None


_HOST_BUFFER: dict = {}     # size -> page-locked float32 tensor; one entry, the model's size


def _host_buffer(n: int) -> torch.Tensor:
    buf = _HOST_BUFFER.get(n)
    if buf is None:
        _HOST_BUFFER.clear()
        buf = _HOST_BUFFER[n] = torch.empty(n, dtype=torch.float32, pin_memory=True)
    return buf


def _flatten_cuda(params, view: torch.Tensor) -> None:
    flat = torch.cat([p.detach().reshape(-1) for p in params])   # on the device
    host = _host_buffer(flat.numel())
    host.copy_(flat)                  # the one device->host copy (it waits: the caller reads it)
    view.copy_(host)


def flatten_into(model: torch.nn.Module, out: np.ndarray) -> np.ndarray:
    """Copy the model's parameters into the float32 vector `out` (no allocation on the CPU)."""
    view = torch.from_numpy(out)
    params = list(model.parameters())
    if _cuda_device(params) is not None:
        total = sum(p.numel() for p in params)
        if total != out.size:
            raise ValueError(f"model has {total} parameters, vector has {out.size}")
        with torch.no_grad():
            _flatten_cuda(params, view)
        return out
    offset = 0
    with torch.no_grad():
        for p in params:
            n = p.numel()
            view[offset:offset + n].copy_(p.detach().reshape(-1))
            offset += n
    if offset != out.size:
        raise ValueError(f"model has {offset} parameters, vector has {out.size}")
    return out


def flatten(model: torch.nn.Module) -> np.ndarray:
    total = sum(p.numel() for p in model.parameters())
    return flatten_into(model, np.empty(total, dtype=np.float32))


def unflatten_into(vector: np.ndarray, model: torch.nn.Module) -> None:
    """Load the float32 vector into the model's parameters in place (any device)."""
    array = np.ascontiguousarray(vector, dtype=np.float32)
    if not array.flags.writeable:   # e.g. a RunView's read-only EMA: torch.from_numpy warns on it
        array = array.copy()
    source = torch.from_numpy(array)
    params = list(model.parameters())
    device = _cuda_device(params)
    if device is not None:
        total = sum(p.numel() for p in params)
        if total != source.numel():
            raise ValueError(f"vector has {source.numel()} values, model has {total} parameters")
        with torch.no_grad():
            chunks = source.to(device).split([p.numel() for p in params])  # one host->device copy
            torch._foreach_copy_(params, [c.view_as(p) for c, p in zip(chunks, params)])
        return
    offset = 0
    with torch.no_grad():
        for p in params:
            n = p.numel()
            p.copy_(source[offset:offset + n].view_as(p))
            offset += n
    if offset != source.numel():
        raise ValueError(f"vector has {source.numel()} values, model has {offset} parameters")
