"""Transport: a narrow Communicator protocol, an mpi4py implementation, a size-1 serial one.

Only buffer (uppercase) MPI methods carry arrays: they are 10-40x faster than the pickle-based
ones here. Pickle-based calls are used for small metadata only and never for tensors.
"""
from __future__ import annotations

import mmap
import os
import sys
from typing import Any, Callable, List, Optional, Protocol

import numpy as np

_LARGE = 8 << 20    # below this, plain numpy memory: a mapping of its own is not worth it
_MADV_POPULATE_WRITE = getattr(mmap, "MADV_POPULATE_WRITE", 23)   # Linux >= 5.14
_MAP_NORESERVE = getattr(mmap, "MAP_NORESERVE", 0x4000) if sys.platform.startswith("linux") else 0


def _reservation() -> int:
    """Address space a large buffer reserves up front: the machine's memory (no buffer can
    usefully outgrow it). Reserved, not allocated: a page is backed once written."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") if _MAP_NORESERVE else 0
    except (OSError, ValueError):   # pragma: no cover
        return 0


def _allocate(nbytes: int):
    """(uint8 array of at least nbytes, its mapping or None). A large buffer is an anonymous
    private mapping of the machine's memory size with MAP_NORESERVE, so it never has to move as
    rounds grow (moving meant copying, and backing twice the bytes, in the first rounds), and
    advised to use transparent huge pages (a 2 MiB page is one fault instead of 512, and fewer
    TLB misses in every later copy). Where the address space is limited (ulimit -v, strict
    overcommit) it is exactly nbytes. Unmapped once the last view of it goes."""
    if nbytes < _LARGE:
        return np.empty(nbytes, dtype=np.uint8), None
    for size, flags in ((max(nbytes, _reservation()), mmap.MAP_PRIVATE | _MAP_NORESERVE),
                        (nbytes, mmap.MAP_PRIVATE)):
        try:
            region = mmap.mmap(-1, size, flags=flags)
        except (OSError, ValueError, OverflowError):
            continue
        try:
            region.madvise(mmap.MADV_HUGEPAGE)
        except (AttributeError, OSError):   # pragma: no cover - kernel without THP
            pass
        return np.frombuffer(region, dtype=np.uint8), region
    return np.empty(nbytes, dtype=np.uint8), None   # pragma: no cover


class WireBuffer:
    """One uint8 buffer that lives across rounds: the payloads a rank sends, and on the root the
    round's received payloads (the root's own first, in place).

    Small buffers grow to at least twice their capacity when a round needs more; a large one
    reserves the machine's memory size of address space at once (_allocate) and then never
    moves. Growing keeps the first `keep` bytes and calls the `on_move` listeners, which rebind
    the views they handed out, so the old memory is released at once. Bytes never written
    before are pre-touched in bulk where a copy into them follows (`ensure(touch=True)`:
    MADV_POPULATE_WRITE), so the first round's copy runs at memory speed instead of faulting
    page by page.
    """

    def __init__(self):
        self.array = np.empty(0, dtype=np.uint8)
        self._region = None
        self._touched = 0
        self.on_move: List[Callable[[np.ndarray], None]] = []

    @property
    def capacity(self) -> int:
        return int(self.array.size)

    def ensure(self, nbytes: int, keep: int = 0, touch: bool = False) -> np.ndarray:
        """buffer[:nbytes], growing if needed and keeping the first `keep` bytes. touch: fault
        in the pages of [keep, nbytes) never written before (MPI is about to write there)."""
        nbytes, keep = int(nbytes), int(keep)
        if nbytes > self.capacity:
            keep = min(keep, self.capacity)
            new, region = _allocate(max(nbytes, 2 * self.capacity))
            self._pretouch(new, region, 0, keep)
            new[:keep] = self.array[:keep]
            self.array, self._region, self._touched = new, region, keep
            for listener in self.on_move:
                listener(new)
        if touch and nbytes > self._touched:
            self._pretouch(self.array, self._region, max(keep, self._touched), nbytes)
        self._touched = max(self._touched, nbytes)
        return self.array[:nbytes]

    @staticmethod
    def _pretouch(array: np.ndarray, region, start: int, end: int) -> None:
        if end <= start:
            return
        if region is not None:
            page = mmap.PAGESIZE
            lo = start // page * page
            try:
                region.madvise(_MADV_POPULATE_WRITE, lo, end - lo)
                return
            except (OSError, ValueError):   # pragma: no cover - kernel before 5.14
                pass
        array[start:end:mmap.PAGESIZE] = 0   # a write per page (not yet holding data)

    def holds(self, view: np.ndarray, offset: int = 0) -> bool:
        """Whether `view` is this buffer's memory from `offset` on."""
        if view.size == 0:
            return True
        return (offset + view.size <= self.capacity
                and int(view.ctypes.data) == int(self.array.ctypes.data) + offset)


class Communicator(Protocol):
    rank: int
    size: int
    local_rank: int
    local_size: int

    def bcast_array(self, array: np.ndarray, root: int = 0) -> None: ...
    def gather_bytes(self, payload: np.ndarray, root: int = 0) -> Optional[List[np.ndarray]]: ...
    def gather_bytes_into(self, buffer: WireBuffer, nbytes: int,
                          root: int = 0) -> Optional[List[np.ndarray]]: ...
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
    timeout_s = 0.0
    context = "start-up"

    def bcast_array(self, array, root=0):
        pass

    def gather_bytes(self, payload, root=0):
        return [np.ascontiguousarray(payload, dtype=np.uint8)]

    def gather_bytes_into(self, buffer, nbytes, root=0):
        return self.gather_bytes(buffer.array[:nbytes], root)

    def gather_rows(self, rows, root=0):
        return np.ascontiguousarray(rows)

    def allreduce_sum(self, array):
        pass

    def bcast_object(self, obj, root=0):
        import json

        return json.loads(json.dumps(obj))  # same semantics as MPI: JSON only, tuples -> lists

    def barrier(self):
        pass

    def abort(self, code):
        raise SystemExit(code)


# A polled wait spins (tests without sleeping) for SPIN_MIN_S plus as long as its bytes take at
# SPIN_BYTES_PER_S, then sleeps between tests. Why the minimum: a collective whose ranks are all
# there completes within microseconds of testing, and a sleep (at least ~60 us on Linux) in its
# way made each small collective cost ~1 ms (measured, 2 ranks: Bcast + two gathers + a barrier
# of a 24k-parameter model, 4.0 ms polled from the first test, 0.37 ms with this minimum, 0.21 ms
# blocking; a minimum of 0.1 ms: 0.9 ms, 2 ms: 0.47 ms).
SPIN_MIN_S = 5e-4
SPIN_BYTES_PER_S = 2e8


class CollectiveTimeout(RuntimeError):
    """A collective did not complete within system.collective_timeout_s."""


class MPICommunicator:
    """mpi4py transport. Counts above 2**31 use MPI-4 large-count calls (mpi4py >= 4 does
    this by itself; measured: a 2.2 GiB Gatherv over 3 ranks of the pip MPICH).

    Every collective is issued non-blocking and polled (`_wait`): a blocking MPI call spins
    while it waits (the pip MPICH: a rank waiting 2 s in Bcast for a busy root burned 0.47-2 CPU-s),
    and a rank waits at every round for the root's aggregation and checkpoint. With `timeout_s`
    > 0 the polling has a deadline: a rank that died silently or hangs turns into a clean abort
    that names the round and the phase (set `context` before the collective), instead of an
    endless wait.
    """

    def __init__(self, comm=None, timeout_s: float = 0.0):
        from mpi4py import MPI

        self._MPI = MPI
        self.comm = comm if comm is not None else MPI.COMM_WORLD
        self.timeout_s = timeout_s
        self.context = "start-up"
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        # Ranks sharing a node (and its GPUs) form the shared-memory split: its rank is the local rank.
        node = self.comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
        self.local_rank = node.Get_rank()
        self.local_size = node.Get_size()
        node.Free()
        self._p2p = None

    @property
    def p2p(self):
        """A duplicate of the communicator for point-to-point payloads (federation/
        payload_stream.py): its messages can never match another layer's. Made on first use, by
        every rank (MPI_Comm_dup is collective: the transport asks for it in the same round on
        every rank)."""
        if self._p2p is None:
            self._p2p = self.comm.Dup()
        return self._p2p

    def wait(self, request, what: str, nbytes: int = 0):
        """_wait for callers outside this class (anything with Test())."""
        self._wait(request, what, nbytes)

    def _wait(self, request, what: str, nbytes: int = 0):
        """A polled wait, bounded by timeout_s when that is > 0.

        A large transfer only moves while its ranks are inside MPI (no progress thread): the
        polled wait keeps testing without sleeping for as long as `nbytes` take at
        SPIN_BYTES_PER_S (and at least SPIN_MIN_S), and backs off only after that (a rank waiting
        for a late one), to sleeps of at most 1 ms: what a waiting rank costs is its tests, not
        a spinning core."""
        import time

        now = time.monotonic()
        deadline = now + self.timeout_s if self.timeout_s > 0 else float("inf")
        spin_until = now + SPIN_MIN_S + nbytes / SPIN_BYTES_PER_S
        pause = 1e-5
        while not request.Test():
            now = time.monotonic()
            if now > deadline:
                raise CollectiveTimeout(
                    f"{self.context}: {what} did not complete within {self.timeout_s:g} s "
                    f"(system.collective_timeout_s) on rank {self.rank}; a rank is hung or dead")
            if now < spin_until:
                continue
            time.sleep(pause)
            pause = min(pause * 2, 1e-3)  # poll fast at first: most collectives are short

    def bcast_array(self, array, root=0):
        self._wait(self.comm.Ibcast(array, root=root), "broadcast", array.nbytes)

    def gather_bytes(self, payload, root=0):
        """Sizes first, then one Gatherv of the uint8 payloads; the root gets one array per rank.

        Both sides name MPI.BYTE: a bare uint8 array would be sent as MPI_UNSIGNED_CHAR, whose
        type signature does not match a MPI_BYTE receive."""
        MPI = self._MPI
        payload = np.ascontiguousarray(payload, dtype=np.uint8)
        sizes = np.zeros(self.size, dtype=np.int64) if self.rank == root else None
        self._wait(self.comm.Igather(np.array([payload.size], dtype=np.int64), sizes, root=root),
                   "gather of payload sizes")
        send = [payload, MPI.BYTE]
        if self.rank != root:
            self._wait(self.comm.Igatherv(send, None, root=root), "gather of payloads", payload.size)
            return None
        displs = np.zeros(self.size, dtype=np.int64)
        np.cumsum(sizes[:-1], out=displs[1:])
        recv = np.empty(int(sizes.sum()), dtype=np.uint8)
        self._wait(self.comm.Igatherv(send, [recv, sizes, displs, MPI.BYTE], root=root),
                   "gather of payloads", recv.size)
        return [recv[d:d + s] for d, s in zip(displs, sizes)]

    def gather_bytes_into(self, buffer: WireBuffer, nbytes: int, root: int = 0):
        """gather_bytes of `buffer[:nbytes]`, received on the root into `buffer` itself (the
        same wire format: sizes, then one Gatherv of the bytes): the root's own bytes stay where
        they are (MPI_IN_PLACE), the other ranks' land after them in rank order, and the root
        gets views of `buffer`, one per rank, valid until the buffer's next use. The buffer
        grows only when the round brings more bytes than it holds (keeping the root's part)."""
        MPI = self._MPI
        nbytes = int(nbytes)
        sizes = np.zeros(self.size, dtype=np.int64) if self.rank == root else None
        self._wait(self.comm.Igather(np.array([nbytes], dtype=np.int64), sizes, root=root),
                   "gather of payload sizes")
        if self.rank != root:
            self._wait(self.comm.Igatherv([buffer.array[:nbytes], MPI.BYTE], None, root=root),
                       "gather of payloads", nbytes)
            return None
        displs = np.zeros(self.size, dtype=np.int64)
        np.cumsum(sizes[:-1], out=displs[1:])
        total = int(sizes.sum())
        mine = int(displs[root])
        if mine:   # the root's bytes must sit at its displacement: move them there
            buffer.ensure(mine + nbytes, keep=nbytes)
            buffer.array[mine:mine + nbytes] = buffer.array[:nbytes].copy()
        recv = buffer.ensure(total, keep=mine + nbytes, touch=True)
        self._wait(self.comm.Igatherv(MPI.IN_PLACE, [recv, sizes, displs, MPI.BYTE], root=root),
                   "gather of payloads", total)
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
        self._wait(self.comm.Iallreduce(self._MPI.IN_PLACE, array, op=self._MPI.SUM), "allreduce",
                   array.nbytes)

    def bcast_object(self, obj, root=0):
        """Small JSON-serialisable metadata (flags, paths, error messages): length, then bytes.

        JSON rather than pickle: nothing received from another process is ever unpickled.
        Tuples arrive as lists.
        """
        import json

        blob = np.frombuffer(json.dumps(obj).encode(), dtype=np.uint8) if self.rank == root else None
        size = np.array([blob.size if blob is not None else 0], dtype=np.int64)
        self.bcast_array(size, root)
        buf = blob.copy() if blob is not None else np.empty(int(size[0]), dtype=np.uint8)
        self.bcast_array(buf, root)
        return json.loads(buf.tobytes().decode())

    def barrier(self):
        self._wait(self.comm.Ibarrier(), "barrier")

    def abort(self, code):
        self.comm.Abort(code)


# Time for mpiexec's output forwarding to pass on a line already written to stderr: MPI_Abort
# tears the job down at once, and without this pause the line was lost in 2 of 12 measured runs
# (MPICH 5.0 Hydra, 2 ranks, idle machine).
ABORT_GRACE_S = 1.0


def abort_with_message(message: str, code: int, comm=None) -> None:
    """Print `error: message` on stderr, give the launcher time to forward it, then MPI_Abort."""
    import sys
    import time

    print(f"error: {message}", file=sys.stderr, flush=True)
    time.sleep(ABORT_GRACE_S)
    if comm is None:
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
    comm.Abort(code)


def root_decides(comm, fn):
    """Run `fn` on the root only; its result or its UserError reaches every rank, so a mistake
    only the root sees (a missing checkpoint) ends all ranks cleanly instead of a hang.
    The result must be JSON-serialisable (bcast_object)."""
    from feddm_hpc.errors import UserError

    result, error = None, None
    if comm.rank == 0:
        try:
            result = fn()
        except UserError as exc:
            error = str(exc)
    result, error = comm.bcast_object((result, error))
    if error is not None:
        raise UserError(error)
    return result


def make_communicator(timeout_s: float = 0.0) -> "Communicator":
    """MPI when launched with more than one rank, else the serial communicator (no MPI init cost)."""
    import os

    launched = any(k in os.environ for k in ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE",
                                               "PMIX_RANK", "SLURM_STEP_NUM_TASKS", "MPI_LOCALNRANKS"))
    if not launched:
        return SerialCommunicator()
    comm = MPICommunicator(timeout_s=timeout_s)
    if comm.size == 1:
        return SerialCommunicator()
    return comm
