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


class ParamViews:
    """Flat views of a model's parameters, to copy a whole vector in or out in one call each.

    Why: a client starts by loading the global vector into the model and ends by reading its
    local vector back. Parameter by parameter in Python that cost a 1-step client of the 24k
    U-Net ~2 ms (110 tensors, each a slice, a view and a copy); here the vector is split into
    views in one call and copied with one torch._foreach_copy_, and read back with one
    torch.cat(out=...). The parameters keep their own storage (an earlier version made them
    views of one shared buffer: some kernels, e.g. the hypernetwork's matrix products, then
    rounded differently on the unaligned slices, and runs were no longer bit-identical).

    `bind(model)` returns None for a model it cannot serve (several devices or dtypes, or a
    parameter that is not contiguous, e.g. channels_last). If something later replaces a
    parameter's data (a `.to()` onto another device), `load` and `read_into` notice and fall back
    to the tensor-by-tensor copies.
    """

    def __init__(self, model: torch.nn.Module, params):
        self.model, self.params = model, params
        self.views = [p.detach().view(-1) for p in params]
        self.sizes = [v.numel() for v in self.views]
        self.total = sum(self.sizes)
        self.device = params[0].device
        self._pointers = self._current_pointers()

    @classmethod
    def bind(cls, model: torch.nn.Module) -> "ParamViews | None":
        params = list(model.parameters())
        if not params or len({(p.device, p.dtype) for p in params}) != 1:
            return None
        if params[0].dtype != torch.float32 or not all(p.is_contiguous() for p in params):
            return None
        return cls(model, params)

    def _current_pointers(self):
        return tuple(p.data_ptr() for p in self.params)

    def intact(self) -> bool:
        """Whether the views still alias the model's parameters."""
        return self._current_pointers() == self._pointers

    def _source(self, array: np.ndarray) -> torch.Tensor:
        array = np.ascontiguousarray(array, dtype=np.float32)
        if not array.flags.writeable:
            array = array.copy()
        # To a GPU: one host->device copy of the whole vector, then split on the device.
        return torch.from_numpy(array).to(self.device)

    def load(self, vector: np.ndarray) -> None:
        """unflatten_into(vector, model), in one copy call."""
        if not self.intact():
            unflatten_into(vector, self.model)
            return
        if vector.size != self.total:
            raise ValueError(f"vector has {vector.size} values, model has {self.total} parameters")
        self.load_subset(range(len(self.views)), vector)

    def load_subset(self, indices, values: np.ndarray) -> None:
        """The parameters `indices` (in order) from `values`, their concatenation."""
        views = [self.views[i] for i in indices]
        with torch.no_grad():
            torch._foreach_copy_(views, list(self._source(values).split([v.numel() for v in views])))

    def read_into(self, out: np.ndarray) -> np.ndarray:
        """flatten_into(model, out), in one concatenation into `out`."""
        if not self.intact():
            return flatten_into(self.model, out)
        if out.size != self.total:
            raise ValueError(f"model has {self.total} parameters, vector has {out.size}")
        with torch.no_grad():
            if self.device.type == "cuda":
                _flatten_cuda(self.views, torch.from_numpy(out))
            else:
                torch.cat(self.views, out=torch.from_numpy(out))
        return out
