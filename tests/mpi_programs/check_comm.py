"""Run under mpiexec at any size: checks the MPI communicator's collectives; exits non-zero on failure."""
import numpy as np

from feddm_hpc.comm import MPICommunicator

comm = MPICommunicator()
rank, size = comm.rank, comm.size

# Bcast of one float32 buffer: every rank ends with the root's values.
params = np.arange(1000, dtype=np.float32) if rank == 0 else np.zeros(1000, dtype=np.float32)
comm.bcast_array(params)
assert np.array_equal(params, np.arange(1000, dtype=np.float32)), f"rank {rank}: bcast mismatch"

# Uneven payloads (rank r sends r*3 bytes, rank 0 sends none): sizes first, then Gatherv.
payload = np.full(rank * 3, rank, dtype=np.uint8)
parts = comm.gather_bytes(payload)
rows = comm.gather_rows(np.full((rank, 4), float(rank)))
if rank == 0:
    assert [p.size for p in parts] == [r * 3 for r in range(size)]
    assert all(np.all(p == r) for r, p in enumerate(parts))
    assert rows.shape == (sum(range(size)), 4)
    assert list(rows[:, 0]) == [float(r) for r in range(size) for _ in range(r)]
else:
    assert parts is None and rows is None

total = np.full(5, rank + 1.0)
comm.allreduce_sum(total)
assert np.all(total == size * (size + 1) / 2)
assert comm.bcast_object({"x": 1} if rank == 0 else None) == {"x": 1}
assert 0 <= comm.local_rank < comm.local_size <= size
comm.barrier()
print(f"rank {rank}/{size} ok")
