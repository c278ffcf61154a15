"""The hierarchical transport for linear aggregation (`system.transport: hierarchical`).

Each rank decodes and checks its own clients' payloads and pre-sums them (weighted, float64),
then one `Allreduce(IN_PLACE)` of [sum | control sum | total weight] replaces the Gatherv of
every payload: the root never holds the cohort's payloads, and the wire carries one float64
vector per rank instead of one payload per client. Every strategy here consumes only the
weighted mean (and SCAFFOLD a plain sum), so it applies to all of them.

Not bitwise rank-invariant: the float64 partial sums are grouped by rank, so a different rank
count adds the same numbers in a different order. Byte accounting still counts each client's own
payload, as it would cross a real network. Only the small metadata rows are gathered.
"""
from __future__ import annotations

from typing import List, Tuple

import numpy as np

from . import server


def reduce_clients(comm, payloads: List[np.ndarray], rows: List[list], num_params: int,
                   start: np.ndarray, target: str, uses_controls: bool) -> Tuple[server.Aggregate, np.ndarray]:
    """Collective. Returns (the global aggregate on every rank, this rank's rows with the
    status of locally rejected clients set). `payloads` alternate update, control per row."""
    reports = {int(row[0]): server.Report(payloads[2 * i], payloads[2 * i + 1], np.asarray(row, dtype=np.float64))
               for i, row in enumerate(rows)}
    local = server.aggregate(reports, num_params, start, target, uses_controls)
    for cid in local.rejected:   # tell the root, through the metadata rows, who was rejected
        reports[cid].row[7] = server.STATUS_NONFINITE
    n = num_params
    width = 2 * n + 1 if uses_controls else n + 1
    buf = np.zeros(width, dtype=np.float64)
    buf[:n] = local.weighted_sum.total
    if uses_controls and local.control_sum is not None:   # None: no client of ours accepted
        buf[n:2 * n] = local.control_sum
    buf[-1] = local.weighted_sum.weight
    comm.allreduce_sum(buf)
    total = server.Aggregate(None, None, decode_s=local.decode_s)
    if buf[-1] > 0:
        total.mean_update = (buf[:n] / buf[-1]).astype(np.float32)
        total.control_sum = buf[n:2 * n] if uses_controls else None
    new_rows = [reports[int(row[0])].row for row in rows]
    return total, new_rows
