"""Flatten a model's parameters to one contiguous float32 vector and back.

The wire format, the aggregation and the checkpoint all work on this one vector: a single `Bcast`
buffer, a single HDF5 dataset. The ParamSpec records names, shapes and offsets so the vector is
self-describing and a checkpoint can be checked against the model it is loaded into.

Each direction is one copy call for the whole model, on any one device: flatten concatenates the
parameters (`torch.cat(out=)` on the CPU; on a CUDA device on the device, then one copy into a
cached page-locked buffer), unflatten splits the vector into views and copies them into the
parameters with one `torch._foreach_copy_` (to a CUDA device: one host->device copy first).
Tensor-by-tensor copies in Python cost a 1-step client of a 24k U-Net ~2 ms (110 tensors).
Parameters on several devices or of several dtypes take the tensor-by-tensor path.
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


def _single_device(params):
    """The one device all of `params` live on in float32, or None (empty, mixed, another dtype)."""
    kinds = {(p.device, p.dtype) for p in params}
    if len(kinds) != 1:
        return None
    ((device, dtype),) = kinds
    return device if dtype == torch.float32 else None


_HOST_BUFFER: dict = {}     # size -> page-locked float32 tensor; one entry, the model's size


def _host_buffer(n: int) -> torch.Tensor:
    buf = _HOST_BUFFER.get(n)
    if buf is None:
        _HOST_BUFFER.clear()
        buf = _HOST_BUFFER[n] = torch.empty(n, dtype=torch.float32, pin_memory=True)
    return buf


def _read_flat(flats, view: torch.Tensor, device: torch.device) -> None:
    """The 1-d tensors `flats` (one device), concatenated into the host tensor `view`."""
    if device.type == "cuda":
        flat = torch.cat(flats)               # on the device
        host = _host_buffer(flat.numel())
        host.copy_(flat)                      # the one device->host copy (it waits: the caller reads it)
        view.copy_(host)
    else:
        torch.cat(flats, out=view)


def _write_split(targets, source: torch.Tensor, device: torch.device) -> None:
    """`source` (a host tensor, the targets' concatenation) into the tensors `targets`."""
    chunks = source.to(device).split([t.numel() for t in targets])   # to a GPU: one copy
    torch._foreach_copy_(list(targets), [c.view(t.shape) for c, t in zip(chunks, targets)])


def _host_source(vector: np.ndarray) -> torch.Tensor:
    array = np.ascontiguousarray(vector, dtype=np.float32)
    if not array.flags.writeable:   # e.g. a RunView's read-only EMA: torch.from_numpy warns on it
        array = array.copy()
    return torch.from_numpy(array)


def flatten_into(model: torch.nn.Module, out: np.ndarray) -> np.ndarray:
    """Copy the model's parameters into the float32 vector `out` (no allocation on the CPU)."""
    view = torch.from_numpy(out)
    params = list(model.parameters())
    total = sum(p.numel() for p in params)
    if total != out.size:
        raise ValueError(f"model has {total} parameters, vector has {out.size}")
    device = _single_device(params)
    with torch.no_grad():
        if device is not None:
            _read_flat([p.detach().reshape(-1) for p in params], view, device)
            return out
        offset = 0
        for p in params:
            n = p.numel()
            view[offset:offset + n].copy_(p.detach().reshape(-1))
            offset += n
    return out


def flatten(model: torch.nn.Module) -> np.ndarray:
    total = sum(p.numel() for p in model.parameters())
    return flatten_into(model, np.empty(total, dtype=np.float32))


def unflatten_into(vector: np.ndarray, model: torch.nn.Module) -> None:
    """Load the float32 vector into the model's parameters in place (any device)."""
    source = _host_source(vector)
    params = list(model.parameters())
    total = sum(p.numel() for p in params)
    if total != source.numel():
        raise ValueError(f"vector has {source.numel()} values, model has {total} parameters")
    device = _single_device(params)
    with torch.no_grad():
        if device is not None:
            _write_split(params, source, device)
            return
        offset = 0
        for p in params:
            n = p.numel()
            p.copy_(source[offset:offset + n].view_as(p))
            offset += n


class ParamViews:
    """flatten_into / unflatten_into for one model, with its flat views made once.

    Why: a client loads the global vector and reads its local vector back every round; here the
    parameter list and the 1-d views are built once, and `load_subset` writes some parameters
    from their concatenation (partial sharing's shared or private pieces). The parameters keep
    their own storage (an earlier version made them views of one shared buffer: some kernels,
    e.g. the hypernetwork's matrix products, then rounded differently on the unaligned slices,
    and runs were no longer bit-identical).

    `bind(model)` returns None for a model it cannot serve (several devices or dtypes, or a
    parameter that is not contiguous, e.g. channels_last). If something later replaces a
    parameter's data (a `.to()` onto another device), `load` and `read_into` notice and fall back
    to flatten_into / unflatten_into.
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
        with torch.no_grad():
            _write_split([self.views[i] for i in indices], _host_source(values), self.device)

    def load_tensor(self, tensor: torch.Tensor) -> None:
        """The parameters from their concatenation held in one tensor on the model's device (a
        round's start staged there once: client.StagedStart): copies on the device only."""
        if not self.intact():
            unflatten_into(tensor.cpu().numpy(), self.model)
            return
        if tensor.numel() != self.total:
            raise ValueError(f"tensor has {tensor.numel()} values, model has {self.total} parameters")
        with torch.no_grad():
            _write_split(self.views, tensor, self.device)

    def read_into(self, out: np.ndarray) -> np.ndarray:
        """flatten_into(model, out), in one concatenation into `out`."""
        if not self.intact():
            return flatten_into(self.model, out)
        if out.size != self.total:
            raise ValueError(f"model has {self.total} parameters, vector has {out.size}")
        with torch.no_grad():
            _read_flat(self.views, torch.from_numpy(out), self.device)
        return out
