"""How the client reports reach the server: chosen once by `system.transport`.

Both transports take every rank's reports of the round (`reports.ClientReport`, with payloads)
and leave on the root the round's reports by client id and the server.Aggregate; the other
ranks get None. Either way the root sees each client's byte counts, so byte accounting is the
same.

gather        sizes + one Gatherv of the payloads and one of the report scalars; the root decodes,
              checks and accumulates in client-id order, so the result is bitwise independent
              of the rank count.
hierarchical  every rank decodes, checks and pre-sums its own clients (weighted, float64), then
              one Allreduce(IN_PLACE) of [update sum | extra sums | total weight] replaces the
              Gatherv of every payload: the root never holds the cohort's payloads, and the wire
              carries one float64 vector per rank. Only the scalars (with the status of the
              clients a rank rejected) are gathered. Linear aggregation only, which every
              strategy here uses. Not bitwise rank-invariant: the partial sums are grouped by
              rank, so another rank count adds the same numbers in a different order.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Dict, Optional, Sequence

import numpy as np

from feddm_hpc.errors import ConfigError
from feddm_hpc.federation import reports as wire
from feddm_hpc.federation import server
from feddm_hpc.federation.reports import ClientReport


@dataclass
class Reduced:
    reports: Dict[int, ClientReport]      # by client id; payloads only where the root holds them
    aggregate: server.Aggregate


class Transport:
    name = "base"

    def __init__(self, num_params: int, num_extras: int, target: str):
        self.num_params, self.num_extras, self.target = num_params, num_extras, target

    def reduce(self, comm, reports: Sequence[ClientReport], start: np.ndarray,
               phases: Dict[str, float]) -> Optional[Reduced]:
        """Collective. Writes its phases (gather, decode, aggregate) into `phases`."""
        raise NotImplementedError


class GatherTransport(Transport):
    name = "gather"

    def reduce(self, comm, reports, start, phases):
        t = time.perf_counter()
        scalars, blob = wire.pack(reports, self.num_extras)
        blobs = comm.gather_bytes(blob)
        scalar_parts = comm.gather_bytes(scalars)
        phases["gather"] = time.perf_counter() - t
        if comm.rank != 0:
            return None
        by_id = wire.unpack(scalar_parts, blobs, self.num_extras)
        t = time.perf_counter()
        agg = server.aggregate(by_id, self.num_params, start, self.target, self.num_extras)
        phases["decode"] = agg.decode_s
        phases["aggregate"] = time.perf_counter() - t - agg.decode_s
        return Reduced(by_id, agg)


class AllreduceTransport(Transport):
    name = "hierarchical"

    def reduce(self, comm, reports, start, phases):
        t = time.perf_counter()
        local = server.aggregate(wire.by_client(reports), self.num_params, start, self.target,
                                 self.num_extras)
        rejected = set(local.rejected)
        # The root learns who this rank rejected through the status of their reports.
        sent = [replace(rep, status=wire.STATUS_REJECTED) if rep.client_id in rejected and rep.ok
                else rep for rep in reports]
        n, k = self.num_params, self.num_extras
        buf = np.zeros((1 + k) * n + 1, dtype=np.float64)
        buf[:n] = local.weighted_sum.total
        for j, total in enumerate(local.extra_sums):   # empty: no client of this rank accepted
            buf[(1 + j) * n:(2 + j) * n] = total
        buf[-1] = local.weighted_sum.weight
        comm.allreduce_sum(buf)
        scalars, _ = wire.pack([replace(rep, update=None, extras=None) for rep in sent], k)
        scalar_parts = comm.gather_bytes(scalars)
        phases["gather"] = time.perf_counter() - t - local.decode_s
        phases["decode"] = local.decode_s   # this rank's own clients; the others decode in parallel
        if comm.rank != 0:
            return None
        by_id = wire.unpack_scalars(scalar_parts, k)
        agg = server.Aggregate(None, decode_s=local.decode_s)
        agg.accepted = sorted(c for c, rep in by_id.items() if rep.ok)
        agg.rejected = sorted(c for c, rep in by_id.items() if not rep.ok)
        if buf[-1] > 0:
            agg.mean_update = (buf[:n] / buf[-1]).astype(np.float32)
            agg.extra_sums = [buf[(1 + j) * n:(2 + j) * n] for j in range(k)]
        return Reduced(by_id, agg)


TRANSPORTS = {cls.name: cls for cls in (GatherTransport, AllreduceTransport)}


def make_transport(name: str, num_params: int, num_extras: int, target: str) -> Transport:
    try:
        cls = TRANSPORTS[name]
    except KeyError:
        raise ConfigError(f"system.transport: {name!r} is not one of {', '.join(sorted(TRANSPORTS))}") from None
    return cls(num_params, num_extras, target)


__all__ = ["AllreduceTransport", "GatherTransport", "Reduced", "TRANSPORTS", "Transport", "make_transport"]
