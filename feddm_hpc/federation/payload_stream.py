"""The gather transport's payloads on the move while the round still trains (issue 23, item 3).

Without it a rank's payloads wait in its outbox until the round's Gatherv, after the slowest
rank has finished: every byte crosses the wire after all training. With it (system.stream_uplink,
the default) a rank that is not the root posts a non-blocking send of each client's payload
(its region of the outbox: the update and the extra uploads) as soon as that client is encoded,
and goes on to train its next client. The root posts a receive for every payload that has
announced itself whenever it looks (between its own clients, and while it waits for the slowest
rank), each into a per-(rank, position) slot reused across rounds. On a network whose adapter
moves posted transfers by itself, the bytes then travel during training; on one node the copy
runs when the root looks. Only the payloads move early: the scalars (sizes, losses, status)
still come with one gather at the end, which tells the root how many payloads each rank sent.

Results stay bit-identical to the Gatherv path for any rank count: the root decodes and
aggregates in client-id order whatever the arrival order. Messages between two ranks on one
tag arrive in the order they were sent (MPI's non-overtaking rule), so the k-th payload from a
rank is its k-th report's. A rank that dies or hangs is caught as before: the root's wait for
the payloads is bounded by system.collective_timeout_s (exit 4 naming the round and phase), and
a killed process ends the job through the launcher.
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import numpy as np

from feddm_hpc.comm import WireBuffer

TAG = 23_003   # payload messages, on a communicator of their own (comm.MPICommunicator.p2p)


class _Ready:
    """A condition with Test(), for MPICommunicator.wait (which polls it)."""

    def __init__(self, test):
        self.Test = test


class PayloadStream:
    """One rank's side of the streamed payloads, for the whole run (`comm`: an
    MPICommunicator; its `p2p` communicator carries them)."""

    def __init__(self, comm):
        from mpi4py import MPI

        self._MPI = MPI
        self.comm, self.raw = comm, comm.p2p
        self._sends: List[Tuple[object, np.ndarray]] = []          # (request, the bytes it sends)
        self._slots: Dict[Tuple[int, int], WireBuffer] = {}       # (source, position) -> buffer
        self._received: Dict[int, List[Tuple[np.ndarray, object]]] = {}
        self._status = MPI.Status()

    # ------------------------------------------------------------------ a rank that is not the root

    def send(self, payload: np.ndarray) -> None:
        """Start sending one client's payload to the root. `payload` must stay unchanged until
        `finish_sending` returns (the outbox is cleared only after the round's gather)."""
        req = self.raw.Isend([payload, self._MPI.BYTE], dest=0, tag=TAG)
        self._sends.append((req, payload))

    def finish_sending(self) -> None:
        requests = [req for req, _ in self._sends]
        nbytes = sum(int(p.size) for _, p in self._sends)
        self.comm.wait(_Ready(lambda: self._MPI.Request.Testall(requests)),
                       "gather of payloads (streamed)", nbytes)
        self._sends = []

    # ------------------------------------------------------------------ the root

    def poll(self) -> None:
        """Post a receive for every payload that has announced itself (root), or move this
        rank's sends along (others): cheap when nothing is waiting."""
        MPI = self._MPI
        if self.comm.rank != 0:
            if self._sends:
                MPI.Request.Testall([req for req, _ in self._sends])
            return
        while self._receive_one(MPI.ANY_SOURCE):
            pass

    def _receive_one(self, source: int) -> bool:
        """Post the receive of one announced payload from `source` (or any); False if none."""
        MPI = self._MPI
        msg = self.raw.Improbe(source, TAG, self._status)
        if msg is None:
            return False
        source, n = self._status.Get_source(), self._status.Get_count(MPI.BYTE)
        got = self._received.setdefault(source, [])
        slot = self._slots.setdefault((source, len(got)), WireBuffer())
        buf = slot.ensure(n, touch=True)   # ensured before the receive, never while one runs
        got.append((buf, msg.Irecv([buf, MPI.BYTE])))
        return True

    def announced(self, source: int) -> int:
        """Root: payloads of this round from `source` whose receive is posted (or done)."""
        return len(self._received.get(source, ()))

    def barrier(self) -> None:
        """The round's wait for the slowest rank, receiving payloads while it waits."""
        req = self.comm.p2p.Ibarrier()

        def done():
            self.poll()
            return req.Test()
        self.comm.wait(_Ready(done), "barrier")

    def receive(self, counts: Sequence[int]) -> Dict[int, List[np.ndarray]]:
        """Root: every payload of the round, by source rank in the order sent; counts[s] is the
        number rank s sent (its reports; the root's own, counts[0], stay in its outbox)."""
        expected = {s: int(c) for s, c in enumerate(counts) if s != 0}

        def arrived():
            # From each rank exactly its count, asked of that rank alone: a payload it sends
            # later (the next round's, once this one is over for it) is not this round's.
            done = True
            for s, c in expected.items():
                got = len(self._received.get(s, ()))
                if got > c:
                    raise RuntimeError(f"rank {s} sent {got} payloads, its reports say {c}")
                while got < c and self._receive_one(s):
                    got += 1
                done = done and got == c
            return done
        self.comm.wait(_Ready(arrived), "gather of payloads (streamed)")
        requests = [req for got in self._received.values() for _, req in got]
        nbytes = sum(int(buf.size) for got in self._received.values() for buf, _ in got)
        self.comm.wait(_Ready(lambda: self._MPI.Request.Testall(requests)),
                       "gather of payloads (streamed)", nbytes)
        out = {s: [buf for buf, _ in self._received.get(s, [])] for s in expected}
        self._received = {}
        return out


__all__ = ["PayloadStream", "TAG"]
