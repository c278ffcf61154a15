"""Server side of a round: decode and check the client reports in client-id order, accumulate,
and describe the round (bytes, who arrived, who was rejected).

Decoding and accumulating in client-id order makes the float result independent of how the
clients were spread over ranks. An update (or an extra upload, e.g. SCAFFOLD's control delta) holding NaN or Inf is
rejected here, after decoding, and never aggregated: the server cannot trust clients to check.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from feddm_hpc.compression import decode_payload
from feddm_hpc.compression.header import CODEC_NONE, HEADER_SIZE, as_payload, parse_header
from feddm_hpc.federation.aggregation import RoundAggregation, WeightedMean
from feddm_hpc.federation.reports import ClientReport
from feddm_hpc.strategies.aggregate import WeightedSum, is_finite  # noqa: F401 (is_finite: re-exported)

PER_CLIENT_LIMIT = 64   # cohorts up to this size get per-client lists in metrics.jsonl


@dataclass
class Aggregate:
    mean_update: Optional[np.ndarray]       # None: nothing to aggregate this round
    extra_sums: List[np.ndarray] = field(default_factory=list)  # unweighted float64 sums of the
    #                                         accepted clients' extra uploads, in upload order
    accepted: List[int] = field(default_factory=list)
    rejected: List[int] = field(default_factory=list)
    decode_s: float = 0.0
    weighted_sum: Optional[WeightedSum] = None   # the raw sum, for the allreduce transport
    fields: Dict[str, object] = field(default_factory=dict)   # the rule's own metrics (epsilon, ...)
    protocol_bytes: Tuple[int, int] = (0, 0)   # (up, down) beyond the payloads: secure aggregation
    # Secure aggregation: the survivors' summed statistics (train_loss, num_samples, clipped),
    # which replace the per-client values the root never sees (privacy/secagg_inputs.py).
    cohort_stats: Optional[Dict[str, object]] = None


def ema_decay_at(server_cfg, round_index: int) -> float:
    """The EMA decay applied after round `round_index` (0-based).

    With `ema_warmup` the decay grows as min(d, (1 + r) / (10 + r)) (the num_updates warm-up of
    TensorFlow's ExponentialMovingAverage): the first rounds replace most of the EMA, so it never
    holds a large share of the random initial weights, whatever the number of rounds.
    """
    d = server_cfg.ema_decay
    if not server_cfg.ema_warmup:
        return d
    return min(d, (1.0 + round_index) / (10.0 + round_index))


class AggregateBuffers:
    """The decode and sum buffers of `aggregate`, kept across rounds by a transport: one flat
    float64 array [update sum | extra sums | weight] (the allreduce transport reduces it in
    place) and float32 decode buffers, allocated on first use. Fresh multi-hundred-MB arrays
    every round cost page faults at a fraction of memory speed; these are written once."""

    BLOCK = 1 << 15   # values per accumulation block: 256 KiB of sum and of products, in cache

    def __init__(self, num_params: int, num_extras: int):
        self.n, self.k = int(num_params), int(num_extras)
        self.flat = np.zeros((1 + self.k) * self.n + 1, dtype=np.float64)
        self.total = self.flat[:self.n]
        self.extra_sums = [self.flat[(1 + j) * self.n:(2 + j) * self.n] for j in range(self.k)]
        self.scratch = np.empty(min(self.BLOCK, max(self.n, 1)), dtype=np.float64)
        self._decoded: Optional[np.ndarray] = None
        self._extras: List[np.ndarray] = []

    def zero(self) -> None:
        self.flat.fill(0.0)

    @property
    def decoded(self) -> np.ndarray:
        if self._decoded is None:
            self._decoded = np.empty(self.n, dtype=np.float32)
        return self._decoded

    def extra(self, j: int) -> np.ndarray:
        while len(self._extras) <= j:
            self._extras.append(np.empty(self.n, dtype=np.float32))
        return self._extras[j]


def _identity_view(payload: np.ndarray, num_params: int) -> Optional[np.ndarray]:
    """The float32 values of an uncompressed identity payload, read in place (no decode copy);
    None for any other payload (decode_payload validates and decodes those)."""
    header = parse_header(as_payload(payload), num_params)
    body = payload[HEADER_SIZE:]
    if header.codec != CODEC_NONE or header.lossless != 0 or body.size != 4 * num_params:
        return None
    return body.view("<f4")


def _decode_update(payload, num_params: int, start: np.ndarray, target: str,
                   buffers: AggregateBuffers) -> Tuple[np.ndarray, bool]:
    """(the client's update as float32, whether it is read in place from the payload: it then
    stays valid while the next clients are decoded; else it is in the decode buffer)."""
    view = _identity_view(payload, num_params)
    if view is not None:
        if target != "weights":
            return view, True
        return np.subtract(view, start, out=buffers.decoded), False
    update = decode_payload(payload, num_params, buffers.decoded)
    if target == "weights":  # the client sent its weights: the update is theirs - start
        np.subtract(update, start, out=update)
    return update, False


def _accumulate(total: np.ndarray, terms: List[Tuple[np.ndarray, float]], scratch: np.ndarray) -> None:
    """total += weight * float64(update) for each (update, weight) of `terms` in order, bit for
    bit as that expression, without allocating: a block of the sum at a time, each term added
    to it in turn (so the float64 sum crosses memory once, not once per term), the products
    through `scratch`."""
    n, b = total.size, scratch.size
    for s in range(0, n, b):
        e = min(n, s + b)
        block, product = total[s:e], scratch[:e - s]
        for update, weight in terms:
            if weight == 1.0:   # 1.0 * x == x exactly: the cast add alone
                np.add(block, update[s:e], out=block)
            else:
                np.multiply(update[s:e], weight, out=product, dtype=np.float64)
                np.add(block, product, out=block)


def aggregate(reports: Dict[int, ClientReport], num_params: int, start: np.ndarray, target: str,
              num_extras: int, rule: Optional[RoundAggregation] = None,
              finish: bool = True, buffers: Optional[AggregateBuffers] = None) -> Aggregate:
    """Decode, check and accumulate in client-id order, one client at a time: at most one
    decoded update is held (in the decode buffer); uncompressed float32 updates are read where
    they arrived and summed block by block, still in id order (_accumulate). A client is
    accepted only if its update and every extra upload decode to finite vectors. `rule`
    (default FedAvg's weighted mean) weights each update and turns the sum into the mean;
    finish=False leaves the mean to the caller (the allreduce transport finishes after summing
    over ranks). `buffers`: a transport's AggregateBuffers, reused across rounds; the sums
    returned (weighted_sum.total, extra_sums) are views of them, valid until the next call."""
    rule = rule if rule is not None else WeightedMean(0, sorted(reports))
    buffers = buffers if buffers is not None else AggregateBuffers(num_params, num_extras)
    buffers.zero()
    acc = WeightedSum(0)
    acc.total = buffers.total
    rows: List[np.ndarray] = []
    sums = buffers.extra_sums
    out = Aggregate(None, weighted_sum=acc)
    # Updates read in place from their payloads (uncompressed float32, which no rule changes)
    # wait in `pending` and are summed together, still in id order, when an update that lives in
    # the decode buffer comes next, or at the end.
    pending: List[Tuple[np.ndarray, float]] = []
    deferrable = type(rule).bound is RoundAggregation.bound and not rule.keeps_rows
    for cid in sorted(reports):
        rep = reports[cid]
        ok = rep.ok
        if ok:
            t = time.perf_counter()
            update, in_place = _decode_update(rep.update, num_params, start, target, buffers)
            ok = is_finite(update)
            for j, payload in enumerate(rep.extras):
                ok = ok and is_finite(decode_payload(payload, num_params, buffers.extra(j)))
            out.decode_s += time.perf_counter() - t
        if not ok:
            out.rejected.append(cid)
            continue
        out.accepted.append(cid)
        update = rule.bound(update)
        weight = rule.weight(rep.num_samples)
        pending.append((update, weight))
        if not (deferrable and in_place):
            _accumulate(acc.total, pending, buffers.scratch)
            pending = []
        acc.weight += weight
        acc.count += 1
        if rule.keeps_rows:
            rows.append(update.copy())
        for j, total in enumerate(sums):
            total += buffers.extra(j)
    _accumulate(acc.total, pending, buffers.scratch)
    if out.accepted:
        out.extra_sums = sums
    if out.accepted or rule.releases_when_empty:
        if finish:
            out.mean_update = rule.finish(acc.total, acc.weight, np.stack(rows) if rows else None,
                                          out.accepted)
    out.fields = rule.record_fields() if finish else {}
    return out


def _finite_or_none(x: float) -> Optional[float]:
    """metrics.jsonl stays strict JSON: a diverged client's NaN loss is written as null."""
    return x if np.isfinite(x) else None


def round_record(r: int, plan, reports: Dict[int, ClientReport], agg: Aggregate, num_params: int,
                 down_bytes_per_client: int, num_extras: int, broadcast_vectors: int,
                 prev_line: Optional[str], client_metrics: bool = True) -> dict:
    """The metrics.jsonl line of one round (phases and wall_s are added by the caller).

    num_extras / broadcast_vectors: the strategy's float vectors per client besides the model
    (SCAFFOLD: one each way, its control delta up and c down).
    client_metrics False (DP without privacy.release_client_metrics): nothing that depends on
    single clients' data or on who took part is written: no per-client losses or bytes, no
    cohort ids (counts instead; amplification by sampling assumes the cohort stays secret), no
    pre-clip norm statistics, and no train_loss (an un-noised mean of the clients' losses)."""
    cohort = plan.cohort
    small = len(cohort) <= PER_CLIENT_LIMIT and client_metrics
    f32 = 4 * num_params
    up_per_client = {c: reports[c].uplink_bytes for c in sorted(reports)}
    proto_up, proto_down = agg.protocol_bytes
    uplink = sum(up_per_client.values()) + proto_up
    # Every cohort client receives the model (and the strategy's vectors) even if it later drops out.
    downlink = len(cohort) * (down_bytes_per_client + f32 * broadcast_vectors) + proto_down
    accepted = [reports[c] for c in agg.accepted]
    stats = agg.cohort_stats   # secure aggregation: sums only, no per-client value reached the root
    if stats is not None:
        train_loss = stats["train_loss"]
    elif accepted:
        weights = np.array([rep.num_samples for rep in accepted], dtype=np.float64)
        losses = np.array([rep.loss for rep in accepted], dtype=np.float64)
        train_loss = _finite_or_none(float(np.dot(losses, weights) / weights.sum()))
    else:
        train_loss = None
    prev = json.loads(prev_line) if prev_line else {}
    base_up = f32 * (1 + num_extras) * len(reports)
    base_down = f32 * (1 + broadcast_vectors) * len(cohort)

    def ids(xs):
        return [int(c) for c in xs] if small else len(xs)
    rec = {
        "round": r,
        "train_loss": train_loss if client_metrics else None,
        "clients": ids(cohort),
        "arrived": ids(plan.arrived),
        "dropped": ids(plan.dropped),
        "stragglers": ids(plan.stragglers),
        "rejected": ids(agg.rejected),
        "rejected_updates": len(agg.rejected),
        "aggregated_clients": len(agg.accepted),
        "client_loss": {str(c): _finite_or_none(round(reports[c].loss, 6))
                        for c in sorted(reports)} if small and stats is None else None,
        "client_uplink_bytes": {str(c): b for c, b in up_per_client.items()} if small else None,
        "uplink_bytes": uplink,
        "downlink_bytes": downlink,
        "uplink_float32_bytes": base_up,
        "downlink_float32_bytes": base_down,
        "cum_uplink_bytes": prev.get("cum_uplink_bytes", 0) + uplink,
        "cum_downlink_bytes": prev.get("cum_downlink_bytes", 0) + downlink,
        "cum_uplink_float32_bytes": prev.get("cum_uplink_float32_bytes", 0) + base_up,
        "cum_downlink_float32_bytes": prev.get("cum_downlink_float32_bytes", 0) + base_down,
        "sim_round_s": round(plan.sim_round_s, 6),
        "client_train_s_max": float(max((rep.train_s for rep in reports.values()), default=0.0)),
    }
    if not client_metrics:
        rec["client_metrics"] = "withheld (privacy.release_client_metrics=false)"
    if agg.protocol_bytes != (0, 0):
        rec.update(protocol_uplink_bytes=proto_up, protocol_downlink_bytes=proto_down)
    rec.update(agg.fields)
    if not client_metrics:
        return rec
    if stats is not None:   # secure aggregation: the count of clipped clients arrived summed
        if "clip_norm" in agg.fields and accepted:
            rec["clipped_fraction"] = round(stats["clipped"] / len(accepted), 6)
        return rec
    norms = np.array([rep.update_norm for rep in accepted], dtype=np.float64)
    if norms.size and np.isfinite(norms).all():   # DP clipping measured them (for choosing C)
        rec["update_norm_median"] = round(float(np.median(norms)), 6)
        if "clip_norm" in agg.fields:
            rec["clipped_fraction"] = round(float(np.mean(norms > agg.fields["clip_norm"])), 6)
    return rec
