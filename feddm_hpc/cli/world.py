"""The MPI world as the command line sees it: making the communicator, and leaving a job with one
error line and one exit code instead of MPI_Abort's noise from every rank."""
from __future__ import annotations

import os
import sys
import time

from feddm_hpc.cli.exits import EXIT_USER


def make_comm():
    from feddm_hpc.comm import make_communicator
    return make_communicator()


def mpi_world():
    """(rank, size) when MPI is initialised in this process, else None."""
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is None or not mpi.Is_initialized() or mpi.Is_finalized():
        return None
    return mpi.COMM_WORLD.Get_rank(), mpi.COMM_WORLD.Get_size()


def report_user_error(message: str) -> None:
    """One line on stderr, once per job, then exit 2 without MPI_Abort's noise.

    Under MPI a user error is seen by every rank alike (same config, same files; root-only
    checks are broadcast by comm.root_decides), so only the root prints it.
    """
    world = mpi_world()
    if world is None or world[1] == 1 or world[0] == 0:
        print(f"error: {message}", file=sys.stderr, flush=True)
    if world is None or world[1] == 1:
        return
    leave_mpi(EXIT_USER, wait_s=10.0)


def leave_mpi(code: int, wait_s: float) -> None:
    """Exit every rank with `code`, without MPI_Abort's banner per rank.

    `python -m mpi4py` turns a non-zero exit into MPI_Abort while MPI is still initialised; so
    the ranks meet in a non-blocking barrier (bounded wait: a rank that never arrives cannot hang
    us), finalize, and then exit normally with the code (measured: mpiexec returns it cleanly).
    If the barrier does not complete, this rank leaves at once and the launcher ends the job.
    """
    MPI = sys.modules["mpi4py.MPI"]
    sys.stdout.flush()
    sys.stderr.flush()
    request = MPI.COMM_WORLD.Ibarrier()
    deadline = time.monotonic() + wait_s
    while not request.Test():
        if time.monotonic() > deadline:
            os._exit(code)
        time.sleep(0.01)
    MPI.Finalize()
    sys.exit(code)
