"""What a rank's wait in a collective costs: latency of small collectives and CPU of a long wait,
polled (feddm_hpc.comm.MPICommunicator, every wait) against blocking MPI calls.

Why: a blocking call of the pip MPICH spins while it waits, so a rank waiting for a busy root
(its aggregation, its checkpoint) burns a core; polling instead must not make a collective whose
ranks are all there slower (comm.SPIN_MIN_S). Run under mpiexec with 2 ranks:

    .venv/bin/mpiexec -n 2 .venv/bin/python benchmarks/wait_cost.py [--iters 200] [--wait 2]

Prints per rank: ms per iteration of a Bcast of a 24k-parameter float32 vector, a gather of
sizes, a Gatherv of 100 bytes and a barrier (polled, then blocking), and the CPU seconds of a
wait of --wait seconds for a root that sleeps before its Bcast (polled, then blocking).
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from feddm_hpc.comm import MPICommunicator


def small_collectives(comm: MPICommunicator, polled: bool, vector: np.ndarray) -> None:
    mpi, raw = comm._MPI, comm.comm
    if polled:
        comm.bcast_array(vector)
        comm.gather_bytes(np.zeros(100, dtype=np.uint8))
        comm.barrier()
        return
    raw.Bcast(vector, root=0)
    sizes = np.zeros(comm.size, dtype=np.int64) if comm.rank == 0 else None
    raw.Gather(np.array([100], dtype=np.int64), sizes, root=0)
    recv = [np.empty(100 * comm.size, dtype=np.uint8), mpi.BYTE] if comm.rank == 0 else None
    raw.Gatherv([np.zeros(100, dtype=np.uint8), mpi.BYTE], recv, root=0)
    raw.Barrier()


def long_wait(comm: MPICommunicator, polled: bool, seconds: float) -> float:
    """CPU seconds this rank spends in a Bcast that the root starts `seconds` late."""
    vector = np.zeros(1000, dtype=np.float32)
    comm.comm.Barrier()
    cpu = time.process_time()
    if comm.rank == 0:
        time.sleep(seconds)
    if polled:
        comm.bcast_array(vector)
    else:
        comm.comm.Bcast(vector, root=0)
    return time.process_time() - cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--wait", type=float, default=2.0)
    args = ap.parse_args()
    comm = MPICommunicator()
    vector = np.zeros(24000, dtype=np.float32)
    for polled in (True, False):
        name = "polled" if polled else "blocking"
        comm.comm.Barrier()
        t = time.perf_counter()
        for _ in range(args.iters):
            small_collectives(comm, polled, vector)
        ms = (time.perf_counter() - t) / args.iters * 1e3
        cpu = long_wait(comm, polled, args.wait)
        print(f"rank {comm.rank} {name}: {ms:.3f} ms per Bcast+gathers+barrier; "
              f"{cpu:.3f} CPU-s in a {args.wait:g} s wait", flush=True)


if __name__ == "__main__":
    main()
