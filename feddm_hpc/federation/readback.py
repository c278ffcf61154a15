"""A client's trained parameters back to the host: once per client, into host vectors kept for
the whole run, and on a GPU without making the host wait for the copy.

Why: the uplink (encoding, the streamed send) works on a host vector. On a GPU, reading the
model the plain way (params.ParamViews.read_into) makes the host wait for the client's last step
and then for a device->host copy of the whole model before it can encode, while the GPU idles.
StreamReadback instead takes a snapshot of the parameters on the device (one concatenation on
the training stream, so the next client may overwrite them at once), copies it into one of two
page-locked host vectors on a side stream, and returns at once; the round (rank_training.py)
launches the next client's first step before it waits for this copy and encodes, so the copy and
the encoding overlap the next client's training. On a CPU, or for a model ParamViews cannot
serve, HostReadback reads synchronously into the same kind of reused vectors.

A vector handed out stays valid until `count` more have been handed out: one is enough when each
client is encoded before the next one's parameters are read; pipelining keeps two.
"""
from __future__ import annotations

from typing import List, Tuple

import numpy as np
import torch


class HostVectors:
    """`count` float32 host vectors of one size, handed out in turn, reused for the whole run;
    page-locked when the model lives on a GPU (a device->host copy into pageable memory cannot
    be asynchronous)."""

    def __init__(self, size: int, count: int = 1, pinned: bool = False):
        self.tensors = [torch.empty(size, dtype=torch.float32, pin_memory=pinned)
                        for _ in range(count)]
        self._next = 0

    def take(self) -> torch.Tensor:
        i = self._next
        self._next = (i + 1) % len(self.tensors)
        return self.tensors[i]


class Pending:
    """One client's vector and summed loss on their way to the host; `wait()` returns them as
    a numpy view of the host vector and a float."""

    def __init__(self, vector: torch.Tensor, loss: torch.Tensor, done=None, keep=()):
        self._vector, self._loss, self._done, self._keep = vector, loss, done, keep

    def wait(self) -> Tuple[np.ndarray, float]:
        if self._done is not None:
            self._done.synchronize()   # the side stream's copy; nothing else on the device
            self._done = None
        self._keep = ()   # the device snapshot may be reused once its copy has completed
        return self._vector.numpy(), float(self._loss.item())


class HostReadback:
    """Synchronous: the parameters are read (trainer.read_into) when the client is done."""

    def __init__(self, size: int, count: int = 1):
        self.host = HostVectors(size, count)

    def start(self, trainer, loss_total: torch.Tensor) -> Pending:
        tensor = self.host.take()
        trainer.read_into(tensor.numpy())
        return Pending(tensor, loss_total)


class StreamReadback:
    """On a CUDA device: snapshot on the training stream, copy on a side stream (see above).
    `cuda` is the torch.cuda module; tests pass a recorder with the same few calls."""

    def __init__(self, params: List[torch.Tensor], count: int = 2, cuda=torch.cuda):
        self.params, self.cuda = params, cuda
        self.side = cuda.Stream(device=params[0].device)
        self.host = HostVectors(sum(p.numel() for p in params), count, pinned=True)
        self.losses = [torch.empty((), dtype=torch.float32, pin_memory=True) for _ in range(count)]
        self._loss_next = 0

    def start(self, trainer, loss_total: torch.Tensor) -> Pending:
        tensor = self.host.take()
        if not trainer.views.intact():   # parameters replaced since: the plain (waiting) read
            trainer.read_into(tensor.numpy())
            return Pending(tensor, loss_total)
        with torch.no_grad():
            snapshot = torch.cat([p.detach().reshape(-1) for p in self.params])
        trained = self.cuda.Event()
        trained.record()                      # on the training stream: after the snapshot
        loss_host = self.losses[self._loss_next]
        self._loss_next = (self._loss_next + 1) % len(self.losses)
        with self.cuda.stream(self.side):
            self.side.wait_event(trained)
            tensor.copy_(snapshot, non_blocking=True)
            loss_host.copy_(loss_total.reshape(()), non_blocking=True)
            done = self.cuda.Event()
            done.record()                     # on the side stream
        # The snapshot and the loss were made on the training stream and are read on the side
        # stream: keep them referenced until the copy is done, so the caching allocator cannot
        # hand their memory to the next client's first step meanwhile.
        return Pending(tensor, loss_host, done, keep=(snapshot, loss_total))


def make_readback(trainer, pipelined: bool, cuda=torch.cuda):
    """The trainer's readback: on a stream for a CUDA model that ParamViews serves (one device,
    float32, contiguous), else synchronous; two host vectors when the round is pipelined."""
    views = trainer.views
    count = 2 if pipelined else 1
    if views is not None and views.device.type == "cuda":
        return StreamReadback(views.params, count, cuda)
    return HostReadback(sum(p.numel() for p in trainer.params), count)


__all__ = ["HostReadback", "HostVectors", "Pending", "StreamReadback", "make_readback"]
