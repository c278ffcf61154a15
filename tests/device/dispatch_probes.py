"""Probes that catch device bugs without a GPU, at torch's dispatch level (imported by the tests
of tests/device/).

DeviceRecorder sees every aten op and records
- reads: each value read into Python (`.item()`, `float(t)`, `.tolist()` of a fake tensor: aten's
  _local_scalar_dense), with the tensor's device. On CUDA a read of a device tensor waits for the
  GPU; a read of a CPU tensor does not.
- transfers: each copy between two devices (src, dst, non_blocking, whether the host side is
  page-locked).
- mixed: each other op that combines tensors of two devices (0-dim CPU tensors excepted: CUDA
  takes those as scalars).
Reads of tensors that hold no data (fake or meta tensors) are answered with a dummy value, so code
runs on past them.

fake_cuda() runs a block under torch's FakeTensorMode with the recorder: tensors made with
device="cuda:N" are fake CUDA tensors (metadata only), which a CPU-only torch build can emulate for
most ops; FakeTensorMode itself raises on ops mixing CPU and CUDA tensors. What this torch build
(2.13, CPU) cannot emulate: any Python binding that takes a CUDA device guard (Tensor.copy_ into a
CUDA tensor, indexing a CUDA tensor with [], `.to("cuda")` without an index, Module.to("cuda"),
autograd's backward through CUDA tensors, which aborts the process), CUDA generators, and
`pin_memory()` (not implemented for fakes; `torch.empty(..., pin_memory=True)` works).
"""
from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes
from torch.utils._pytree import tree_leaves

_READS = {torch.ops.aten._local_scalar_dense, torch.ops.aten.item}
_COPIES = {torch.ops.aten._to_copy, torch.ops.aten.copy_, torch.ops.aten._copy_from,
           torch.ops.aten._copy_from_and_resize}


def _holds_no_data(tensor: torch.Tensor) -> bool:
    return isinstance(tensor, FakeTensor) or tensor.device.type == "meta"


def _dummy(dtype: torch.dtype):
    if dtype == torch.bool:
        return True
    if dtype.is_floating_point or dtype.is_complex:
        return 0.5
    return 1


class DeviceRecorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.reads: list = []         # [(device string, tensor)]
        self.transfers: list = []     # [(src device, dst device, non_blocking, host side pinned)]
        self.mixed: list = []         # [(op name, device strings)]
        self._pinned: dict = {}       # storage -> a tensor allocated page-locked (kept alive)

    def read_devices(self) -> list:
        return [device for device, _ in self.reads]

    def clear(self) -> None:
        """Forget what was recorded so far (setting up under fake_cuda() before the call tested)."""
        self.reads, self.transfers, self.mixed = [], [], []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        packet = func.overloadpacket
        if packet in _READS:
            tensor = args[0]
            self.reads.append((str(tensor.device), tensor))
            if _holds_no_data(tensor):
                return _dummy(tensor.dtype)
            with _disable_current_modes():
                return func(*args, **kwargs)
        if packet not in _COPIES:
            devices = {str(t.device) for t in tree_leaves((args, kwargs))
                       if isinstance(t, torch.Tensor) and not (t.dim() == 0 and t.device.type == "cpu")}
            if len(devices) > 1:
                self.mixed.append((str(func), sorted(devices)))
        out = func(*args, **kwargs)
        if kwargs.get("pin_memory"):
            self._pinned[out.untyped_storage()._cdata] = out
        if packet in _COPIES:
            self._record_copy(packet, args, kwargs, out)
        return out

    def _pinned_host(self, tensor) -> bool:
        return (tensor.untyped_storage()._cdata in self._pinned
                or (not _holds_no_data(tensor) and tensor.is_pinned()))

    def _record_copy(self, packet, args, kwargs, out) -> None:
        if packet is torch.ops.aten._to_copy:
            src, dst = args[0], out
        elif packet is torch.ops.aten.copy_:
            dst, src = args[0], args[1]
        else:                         # _copy_from(self, dst), _copy_from_and_resize(self, dst)
            src, dst = args[0], args[1]
        if src.device == dst.device:
            return
        non_blocking = bool(kwargs.get("non_blocking", args[2] if len(args) > 2 else False))
        host = src if src.device.type == "cpu" else dst
        self.transfers.append((str(src.device), str(dst.device), non_blocking,
                               host.device.type == "cpu" and self._pinned_host(host)))


@contextmanager
def fake_cuda():
    """A block under FakeTensorMode (CPU tensors allowed in) with a DeviceRecorder on top."""
    with FakeTensorMode(allow_non_fake_inputs=True), DeviceRecorder() as recorder:
        yield recorder


def move_to_fake(module: torch.nn.Module, device: str) -> torch.nn.Module:
    """Replaces the module's parameters and buffers by uninitialised ones on `device`, inside
    fake_cuda() (Module.to cannot reach a fake CUDA device)."""
    for sub in module.modules():
        for name, p in list(sub.named_parameters(recurse=False)):
            setattr(sub, name, torch.nn.Parameter(torch.empty_like(p, device=device),
                                                  requires_grad=p.requires_grad))
        for name, b in list(sub.named_buffers(recurse=False)):
            setattr(sub, name, torch.empty_like(b, device=device))
    return module


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models train faster on one thread; two contend with whatever else the cores run."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
