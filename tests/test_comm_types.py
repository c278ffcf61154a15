"""MPI datatype signatures of the communicator's collectives, read through a recording fake
communicator (no mpiexec): by the MPI standard the send and receive sides of a message must name
matching type signatures; MPI_UNSIGNED_CHAR and MPI_BYTE do not match."""
import numpy as np
import pytest

MPI = pytest.importorskip("mpi4py.MPI")

from feddm_hpc.comm import MPICommunicator  # noqa: E402


class _Done:
    def Wait(self):
        pass

    def Test(self):
        return True


class _Node:
    def Get_rank(self):
        return 0

    def Get_size(self):
        return 1

    def Free(self):
        pass


class FakeComm:
    """Records Igatherv's arguments; Igather hands the root every rank's size as `sizes`."""

    def __init__(self, rank, sizes):
        self.rank, self.sizes, self.gatherv = rank, sizes, []

    def Get_rank(self):
        return self.rank

    def Get_size(self):
        return len(self.sizes)

    def Split_type(self, split_type, key=0):
        return _Node()

    def Igather(self, sendbuf, recvbuf, root=0):
        if recvbuf is not None:
            recvbuf[:] = self.sizes
        return _Done()

    def Igatherv(self, sendbuf, recvbuf, root=0):
        self.gatherv.append((sendbuf, recvbuf))
        return _Done()


def _datatype(spec):
    """The MPI datatype a buffer argument names: explicit in [buf, ..., type], else the one
    mpi4py derives from the buffer's typecode."""
    if isinstance(spec, (list, tuple)):
        return spec[-1]
    return MPI.Datatype.fromcode(np.asarray(spec).dtype.char)


@pytest.mark.parametrize("timeout_s", [0.0, 5.0])
def test_gather_bytes_send_and_receive_name_the_same_datatype(timeout_s):
    sizes = [3, 5, 0]
    root = FakeComm(0, sizes)
    MPICommunicator(comm=root, timeout_s=timeout_s).gather_bytes(np.zeros(3, np.uint8))
    (root_send, root_recv), = root.gatherv
    recv_type = _datatype(root_recv)
    assert recv_type in (MPI.BYTE, MPI.UINT8_T, MPI.UNSIGNED_CHAR)
    assert _datatype(root_send) == recv_type, \
        f"root sends {_datatype(root_send).Get_name()}, receives {recv_type.Get_name()}"
    for rank in (1, 2):
        other = FakeComm(rank, sizes)
        assert MPICommunicator(comm=other, timeout_s=timeout_s).gather_bytes(
            np.ones(sizes[rank], np.uint8)) is None
        (send, recv), = other.gatherv
        assert recv is None
        assert _datatype(send) == recv_type, \
            f"rank {rank} sends {_datatype(send).Get_name()}, root receives {recv_type.Get_name()}"
