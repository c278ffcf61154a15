"""How the client reports reach the server: chosen once by `system.transport`.

Both transports take every rank's reports of the round (`reports.ClientReport`, with payloads)
and leave on the root the round's reports by client id and the server.Aggregate; the other
ranks get None. Either way the root sees each client's byte counts, so byte accounting is the
same.

gather        the payloads, then one gather of the report scalars; the root decodes, checks and
              accumulates in client-id order, so the result is bitwise independent of the rank
              count. The payloads leave each rank as its clients finish (system.stream_uplink,
              federation/payload_stream.py), or with sizes + one Gatherv after training.
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
from typing import Dict, List, Optional, Sequence

import numpy as np

from feddm_hpc.errors import ConfigError
from feddm_hpc.federation import reports as wire
from feddm_hpc.federation import server
from feddm_hpc.federation.aggregation import RoundAggregation, WeightedMean
from feddm_hpc.federation.payload_stream import PayloadStream
from feddm_hpc.federation.reports import ClientReport
from feddm_hpc.privacy import secagg, secagg_inputs


@dataclass
class Reduced:
    reports: Dict[int, ClientReport]      # by client id; payloads only where the root holds them
    aggregate: server.Aggregate


class Transport:
    """`outbox`: this rank's send buffer (reports.Outbox), where make_report puts the payloads
    and an attached codec encodes them; `buffers`: the decode and sum buffers of
    server.aggregate. Both live as long as the transport, sized by the first rounds and grown
    only when a round needs more, so no round after the first allocates (or page-faults)
    model-sized memory."""
    name = "base"

    def __init__(self, num_params: int, num_extras: int, target: str):
        self.num_params, self.num_extras, self.target = num_params, num_extras, target
        self.outbox = wire.Outbox()
        self._buffers: Optional[server.AggregateBuffers] = None

    def connect(self, comm) -> None:
        """Collective, once at set-up: what the transport needs of the communicator."""

    def client_done(self, comm, report: ClientReport) -> None:
        """One of this rank's reports of the round is ready (its payloads in the outbox)."""

    def wait_for_ranks(self, comm) -> None:
        """Collective: the round's wait for the slowest rank (load imbalance, timed apart)."""
        comm.barrier()

    @property
    def buffers(self) -> server.AggregateBuffers:
        if self._buffers is None:
            self._buffers = server.AggregateBuffers(self.num_params, self.num_extras)
        return self._buffers

    def reduce(self, comm, reports: Sequence[ClientReport], start: np.ndarray,
               phases: Dict[str, float], rule: Optional[RoundAggregation] = None) -> Optional[Reduced]:
        """Collective. `rule`: the round's aggregation (default FedAvg's weighted mean). Writes
        its phases (gather, decode, aggregate) into `phases`."""
        raise NotImplementedError


class GatherTransport(Transport):
    name = "gather"

    def __init__(self, num_params: int, num_extras: int, target: str, stream: bool = False):
        super().__init__(num_params, num_extras, target)
        self.stream_wanted = stream
        self.stream: Optional[PayloadStream] = None
        self._streamed: List[ClientReport] = []

    def connect(self, comm) -> None:
        if self.stream_wanted and comm.size > 1 and hasattr(comm, "p2p"):
            self.stream = PayloadStream(comm)   # duplicates the communicator: every rank, here

    def client_done(self, comm, report):
        if self.stream is None:
            return
        if comm.rank != 0:
            self.stream.send(self.outbox.region(report))
            self._streamed.append(report)
        else:
            self.stream.poll()

    def wait_for_ranks(self, comm):
        if self.stream is None:
            comm.barrier()
        else:
            self.stream.barrier()

    def _gather(self, comm, reports, phases) -> Optional[Dict[int, ClientReport]]:
        """Every report with its payloads on the root, by client id; None on the other ranks.
        The payloads travel from the outbox (staged there by make_report) into the root's
        outbox buffer, the root's own in place, so the root's reports are views of one buffer
        (per-client slots in rank, then report order); streamed, the other ranks' arrive in
        per-client slots instead. Call `outbox.clear()` once done."""
        if self.stream is not None:
            return self._gather_streamed(comm, reports, phases)
        t = time.perf_counter()
        scalars = wire.pack_scalars(reports, self.num_extras)
        nbytes = self.outbox.stage(reports)
        into = getattr(comm, "gather_bytes_into", None)
        if into is not None:
            blobs = into(self.outbox.buffer, nbytes)
        else:   # a communicator without it (test doubles): the plain gather of the same bytes
            blobs = comm.gather_bytes(self.outbox.contents())
        scalar_parts = comm.gather_bytes(scalars)
        phases["gather"] = time.perf_counter() - t
        return wire.unpack(scalar_parts, blobs, self.num_extras) if comm.rank == 0 else None

    def _gather_streamed(self, comm, reports, phases):
        t = time.perf_counter()
        if comm.rank != 0:
            # Sent already: the reports handed to client_done, in this order. Whatever was not
            # (a caller that reduces without client_done) leaves now; sent payloads must not
            # move, so the reports must be the outbox's, in the order they were put there.
            sent = self._streamed
            if (len(reports) < len(sent) or any(a is not b for a, b in zip(reports, sent))
                    or not self.outbox.placed(reports)):
                raise RuntimeError("streamed uplink: the reports to gather are not the ones "
                                   "sent, in the order sent")
            for rep in reports[len(self._streamed):]:
                self.stream.send(self.outbox.region(rep))
            self._streamed = []
        scalar_parts = comm.gather_bytes(wire.pack_scalars(reports, self.num_extras))
        if comm.rank != 0:
            self.stream.finish_sending()
            phases["gather"] = time.perf_counter() - t
            return None
        nbytes = self.outbox.stage(reports)
        counts = [wire.report_count(raw, self.num_extras) for raw in scalar_parts]
        arrived = self.stream.receive(counts)
        messages = [self.outbox.contents()[:nbytes]] + [arrived[s] for s in range(1, comm.size)]
        phases["gather"] = time.perf_counter() - t
        return wire.unpack(scalar_parts, messages, self.num_extras)

    def reduce(self, comm, reports, start, phases, rule=None):
        try:
            by_id = self._gather(comm, reports, phases)
            if by_id is None:
                return None
            t = time.perf_counter()
            agg = server.aggregate(by_id, self.num_params, start, self.target, self.num_extras,
                                   rule, buffers=self.buffers)
            phases["decode"] = agg.decode_s
            phases["aggregate"] = time.perf_counter() - t - agg.decode_s
            return Reduced(by_id, agg)
        finally:
            self.outbox.clear()


class AllreduceTransport(Transport):
    name = "hierarchical"

    def reduce(self, comm, reports, start, phases, rule=None):
        t = time.perf_counter()
        rule = rule if rule is not None else WeightedMean(0, ())
        # The local sums land in the buffers' flat [update sum | extra sums | weight] array,
        # which the allreduce then sums in place: no copy, no fresh vector per round.
        local = server.aggregate(wire.by_client(reports), self.num_params, start, self.target,
                                 self.num_extras, rule, finish=False, buffers=self.buffers)
        self.outbox.clear()
        rejected = set(local.rejected)
        # The root learns who this rank rejected through the status of their reports.
        sent = [replace(rep, status=wire.STATUS_REJECTED) if rep.client_id in rejected and rep.ok
                else rep for rep in reports]
        n, k = self.num_params, self.num_extras
        buf = self.buffers.flat
        buf[-1] = local.weighted_sum.weight
        comm.allreduce_sum(buf)
        scalars = wire.pack_scalars(sent, k)
        scalar_parts = comm.gather_bytes(scalars)
        phases["gather"] = time.perf_counter() - t - local.decode_s
        phases["decode"] = local.decode_s   # this rank's own clients; the others decode in parallel
        if comm.rank != 0:
            return None
        by_id = wire.unpack_scalars(scalar_parts, k)
        agg = server.Aggregate(None, decode_s=local.decode_s)
        agg.accepted = sorted(c for c, rep in by_id.items() if rep.ok)
        agg.rejected = sorted(c for c, rep in by_id.items() if not rep.ok)
        if buf[-1] > 0 or rule.releases_when_empty:
            agg.mean_update = rule.finish(buf[:n], buf[-1])
            agg.extra_sums = [buf[(1 + j) * n:(2 + j) * n] for j in range(k)]
        agg.fields = rule.record_fields()
        return Reduced(by_id, agg)


class SecureGatherTransport(GatherTransport):
    """The gather transport under privacy.secure_aggregation: the payloads are masked integer
    codes followed by the masked statistics words (the uplink's mask stage, federation/uplink_stages.py;
    privacy/secagg_inputs.py); the root adds them in the ring, removes what is left of the masks
    of the cohort clients whose input never arrived (dropped, late, or unencodable) and decodes
    only the sum. It never decodes, and cannot decode, one client's update; so it cannot reject
    a non-finite one either: a client whose update is not finite cannot put it on the grid and
    counts as dropped. Fewer survivors than the round's threshold (a majority of the cohort, and
    at least privacy.secagg_min_clients) unmask nothing: the round aggregates nothing and says
    why, and under DP the root still releases the noise."""
    name = "secure_gather"   # chosen by privacy.secure_aggregation, not a system.transport value

    def __init__(self, num_params, num_extras, target, seed: int, bits: int, clip_range: float,
                 min_clients: int = 2, stream: bool = False):
        super().__init__(num_params, num_extras, target, stream)
        self.seed, self.bits, self.clip_range = seed, bits, clip_range
        self.min_clients = min_clients

    def reduce(self, comm, reports, start, phases, rule=None):
        try:
            return self._reduce(comm, reports, phases, rule)
        finally:
            self.outbox.clear()

    def _reduce(self, comm, reports, phases, rule):
        by_id = self._gather(comm, reports, phases)
        if by_id is None:
            return None
        t = time.perf_counter()
        survivors = sorted(c for c, rep in by_id.items() if rep.ok)
        cohort = sorted(rule.cohort)
        dropped = sorted(set(cohort) - set(survivors))
        threshold = secagg.round_threshold(len(cohort), self.min_clients)
        agg = server.Aggregate(None, accepted=survivors,
                               rejected=sorted(c for c, rep in by_id.items() if not rep.ok))
        agg.protocol_bytes = _protocol_bytes(len(cohort), len(dropped), threshold)
        fields = rule.record_fields()
        total = None
        if len(survivors) >= threshold:
            ring = secagg.ring_sum([by_id[c].update.view(np.uint32) for c in survivors])
            words = secagg.unmask_sum(ring, survivors, dropped, cohort, self.seed, rule.round_index,
                                      threshold)
            n = self.num_params
            total = secagg.decode_grid_sum(words[:n], self.bits, self.clip_range, len(survivors))
            agg.cohort_stats = secagg_inputs.read_stats(words[n:], len(survivors), len(cohort))
        else:
            fields["secure_aggregation_failed"] = (
                f"{len(survivors)} of {len(cohort)} clients survived, fewer than the threshold "
                f"{threshold}: nothing was unmasked")
            agg.accepted, agg.rejected = [], sorted(by_id)
        if total is not None or rule.releases_when_empty:
            if total is None:
                total = np.zeros(self.num_params, dtype=np.float64)
            # Every rule allowed here weighs clients equally: the root never sees a sample count.
            agg.mean_update = rule.finish(total, float(len(agg.accepted)))
            fields.update(rule.record_fields())
        agg.fields = fields
        phases["decode"] = 0.0
        phases["aggregate"] = time.perf_counter() - t
        return Reduced(by_id, agg)


def _protocol_bytes(cohort_size: int, num_dropped: int, threshold: int):
    """(up, down) bytes of secure aggregation's key exchange and unmasking this round. Below the
    threshold the protocol ends after the key exchange: no unmasking round takes place."""
    t = min(threshold, cohort_size)
    if cohort_size - num_dropped >= threshold:
        b = secagg.protocol_bytes(cohort_size, num_dropped, t)
        return int(b["total"]["up"]), int(b["total"]["down"])
    b = secagg.protocol_bytes(cohort_size, 0, t)
    phases = [b[k] for k in b if k not in ("total", "unmasking")]
    return sum(int(p["up"]) for p in phases), sum(int(p["down"]) for p in phases)


TRANSPORTS = {cls.name: cls for cls in (GatherTransport, AllreduceTransport)}


def make_transport(name: str, num_params: int, num_extras: int, target: str,
                   secure: Optional[dict] = None, stream: bool = False) -> Transport:
    """`secure`: seed, bits and clip_range of secure aggregation, which replaces the gather
    transport (config validation allows it with gather only). `stream`: the gather transports
    send each payload as its client finishes (payload_stream.py)."""
    try:
        cls = TRANSPORTS[name]
    except KeyError:
        raise ConfigError(f"system.transport: {name!r} is not one of {', '.join(sorted(TRANSPORTS))}") from None
    if secure is not None:
        return SecureGatherTransport(num_params, num_extras, target, **secure, stream=stream)
    if cls is GatherTransport:
        return cls(num_params, num_extras, target, stream=stream)
    return cls(num_params, num_extras, target)


def transport_for(cfg, num_params: int, num_extras: int) -> Transport:
    """The run's transport, chosen once: system.transport, or under privacy.secure_aggregation
    the secure gather (the only one that can unmask a sum)."""
    p = cfg.privacy
    secure = dict(seed=cfg.seed, bits=cfg.compression.bits, clip_range=p.secagg_range,
                  min_clients=p.secagg_min_clients) if p.secure_aggregation else None
    return make_transport(cfg.system.transport, num_params, num_extras, cfg.compression.target,
                          secure, stream=cfg.system.stream_uplink)


__all__ = ["AllreduceTransport", "GatherTransport", "Reduced", "SecureGatherTransport", "TRANSPORTS",
           "Transport", "make_transport", "transport_for"]
