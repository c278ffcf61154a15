"""Transport: a narrow Communicator protocol, an mpi4py implementation, a size-1 serial one.

Only buffer (uppercase) MPI methods carry arrays: they are 10-40x faster than the pickle-based
ones here. Pickle-based calls are used for small metadata only and never for tensors.
"""
from __future__ import annotations

from typing import Any, List, Optional, Protocol

import numpy as np


class Communicator(Protocol):
    rank: int
    size: int
    local_rank: int
    local_size: int

    def bcast_array(self, array: np.ndarray, root: int = 0) -> None: ...
    def gather_bytes(self, payload: np.ndarray, root: int = 0) -> Optional[List[np.ndarray]]: ...
    def gather_rows(self, rows: np.ndarray, root: int = 0) -> Optional[np.ndarray]: ...
    def allreduce_sum(self, array: np.ndarray) -> None: ...
    def bcast_object(self, obj: Any, root: int = 0) -> Any: ...
    def barrier(self) -> None: ...
    def abort(self, code: int) -> None: ...


class SerialCommunicator:
    """The whole pipeline in one process: every collective is the identity."""

    rank = 0
    size = 1
    local_rank = 0
    local_size = 1

    def bcast_array(self, array, root=0):
        pass

    def gather_bytes(self, payload, root=0):
        return [np.ascontiguousarray(payload, dtype=np.uint8)]

    def gather_rows(self, rows, root=0):
        return np.ascontiguousarray(rows)

    def allreduce_sum(self, array):
        pass

    def bcast_object(self, obj, root=0):
        return obj

    def barrier(self):
        pass

    def abort(self, code):
        raise SystemExit(code)


class MPICommunicator:
    def __init__(self, comm=None):
        from mpi4py import MPI

        self._MPI = MPI
        self.comm = comm if comm is not None else MPI.COMM_WORLD
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        # Ranks sharing a node (and its GPUs) form the shared-memory split: its rank is the local rank.
        node = self.comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
        self.local_rank = node.Get_rank()
        self.local_size = node.Get_size()
        node.Free()

    def bcast_array(self, array, root=0):
        self.comm.Bcast(array, root=root)

    def gather_bytes(self, payload, root=0):
        """Sizes first, then one Gatherv of the uint8 payloads; the root gets one array per rank."""
        MPI = self._MPI
        payload = np.ascontiguousarray(payload, dtype=np.uint8)
        sizes = np.zeros(self.size, dtype=np.int64) if self.rank == root else None
        self.comm.Gather(np.array([payload.size], dtype=np.int64), sizes, root=root)
        if self.rank != root:
            self.comm.Gatherv(payload, None, root=root)
            return None
        displs = np.zeros(self.size, dtype=np.int64)
        np.cumsum(sizes[:-1], out=displs[1:])
        recv = np.empty(int(sizes.sum()), dtype=np.uint8)
        self.comm.Gatherv(payload, [recv, sizes, displs, MPI.BYTE], root=root)
        return [recv[d:d + s] for d, s in zip(displs, sizes)]

    def gather_rows(self, rows, root=0):
        """Gather float64 metadata rows [k, m] of varying k; the root gets them concatenated."""
        rows = np.ascontiguousarray(rows, dtype=np.float64)
        width = rows.shape[1]
        parts = self.gather_bytes(rows.view(np.uint8).reshape(-1), root)
        if parts is None:
            return None
        return np.concatenate(parts).view(np.float64).reshape(-1, width)

    def allreduce_sum(self, array):
        self.comm.Allreduce(self._MPI.IN_PLACE, array, op=self._MPI.SUM)

    def bcast_object(self, obj, root=0):
        return self.comm.bcast(obj, root=root)

    def barrier(self):
        self.comm.Barrier()

    def abort(self, code):
        self.comm.Abort(code)


def make_communicator() -> "Communicator":
    """MPI when launched with more than one rank, else the serial communicator (no MPI init cost)."""
    import os

    launched = any(k in os.environ for k in ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE",
                                               "PMIX_RANK", "SLURM_STEP_NUM_TASKS", "MPI_LOCALNRANKS"))
    if not launched:
        return SerialCommunicator()
    comm = MPICommunicator()
    if comm.size == 1:
        return SerialCommunicator()
    return comm
