"""Gatherv whose total exceeds 2 GiB (MPI-4 large counts): every byte accounted for."""
import numpy as np

from feddm_hpc.comm import MPICommunicator

comm = MPICommunicator()
n = (1 << 30) + 12345 if comm.rank > 0 else 7   # ranks 1 and 2: just over 1 GiB each
payload = np.full(n, comm.rank + 1, dtype=np.uint8)
payload[-1] = 200 + comm.rank
parts = comm.gather_bytes(payload)
del payload
if comm.rank == 0:
    total = sum(p.size for p in parts)
    assert total > 2 ** 31, total
    for r, p in enumerate(parts):
        assert p.size == ((1 << 30) + 12345 if r > 0 else 7)
        assert p[0] == r + 1 and p[-2] == r + 1 and p[-1] == 200 + r
    print(f"ok {total}")
