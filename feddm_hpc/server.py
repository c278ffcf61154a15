"""Root side of a round: split the gathered payloads per client, decode and check them in
client-id order, accumulate, and describe the round (bytes, who arrived, who was rejected).

Decoding and accumulating in client-id order makes the float result independent of how the
clients were spread over ranks. An update (or SCAFFOLD control delta) holding NaN or Inf is
rejected here, after decoding, and never aggregated: the server cannot trust clients to check.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

from .compression import decode_payload
from .strategies import WeightedSum

# Metadata row per arrived client: id, samples, loss, update bytes, control bytes, train seconds,
# encode seconds, status. Status 1: the client could not encode a non-finite vector and sent
# no payload (lossy codecs refuse NaN/Inf); the root counts it as a rejected update.
META_WIDTH = 8
STATUS_OK, STATUS_NONFINITE = 0, 1
PER_CLIENT_LIMIT = 64   # cohorts up to this size get per-client lists in metrics.jsonl


@dataclass
class Report:
    update: np.ndarray      # uint8 payload (empty if the client could not encode)
    control: np.ndarray     # uint8 payload of delta c_i (SCAFFOLD), else empty
    row: np.ndarray         # the metadata row


@dataclass
class Aggregate:
    mean_update: Optional[np.ndarray]       # None: nothing to aggregate this round
    control_sum: Optional[np.ndarray]       # SCAFFOLD: sum of accepted delta c_i (float64)
    accepted: List[int] = field(default_factory=list)
    rejected: List[int] = field(default_factory=list)
    decode_s: float = 0.0
    weighted_sum: Optional[WeightedSum] = None   # the raw sum, for the hierarchical transport


def split_reports(parts: List[np.ndarray], meta: np.ndarray) -> Dict[int, Report]:
    """Rows come in rank order and each rank's blob holds its clients' payloads in row order
    (update, then control), so walking rows and blobs together splits them. A row with no bytes
    (a client that could not encode) takes empty slices wherever it falls."""
    reports: Dict[int, Report] = {}
    k, offset = 0, 0
    for m in meta:
        nu, nc = int(m[3]), int(m[4])
        while nu + nc > 0 and k < len(parts) and offset == parts[k].size:
            k, offset = k + 1, 0
        blob = parts[k] if k < len(parts) else np.empty(0, dtype=np.uint8)
        if offset + nu + nc > blob.size:
            raise RuntimeError(f"client {int(m[0])}: its metadata claims more bytes than arrived")
        reports[int(m[0])] = Report(blob[offset:offset + nu], blob[offset + nu:offset + nu + nc], m)
        offset += nu + nc
    if sum(p.size for p in parts) != sum(int(m[3] + m[4]) for m in meta):
        raise RuntimeError("payload split: bytes arrived that no metadata row accounts for")
    return reports


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


def is_finite(x: np.ndarray) -> bool:
    """One float64 sum: NaN/Inf propagate, and a sum of finite float32 values cannot overflow."""
    return bool(np.isfinite(x.sum(dtype=np.float64)))


def aggregate(reports: Dict[int, Report], num_params: int, start: np.ndarray, target: str,
              uses_controls: bool) -> Aggregate:
    acc = WeightedSum(num_params)
    ctrl_sum = np.zeros(num_params, dtype=np.float64) if uses_controls else None
    buf = np.empty(num_params, dtype=np.float32)
    cbuf = np.empty(num_params, dtype=np.float32) if uses_controls else None
    out = Aggregate(None, None, weighted_sum=acc)
    for cid in sorted(reports):
        rep = reports[cid]
        ok = int(rep.row[7]) == STATUS_OK
        if ok:
            t = time.perf_counter()
            update = decode_payload(rep.update, num_params, buf)
            if target == "weights":  # the client sent its weights: the update is theirs - start
                np.subtract(update, start, out=update)
            ok = is_finite(update)
            if ok and uses_controls:
                ok = is_finite(decode_payload(rep.control, num_params, cbuf))
            out.decode_s += time.perf_counter() - t
        if not ok:
            out.rejected.append(cid)
            continue
        out.accepted.append(cid)
        acc.add(update, float(rep.row[1]))
        if uses_controls:
            ctrl_sum += cbuf
    if out.accepted:
        out.mean_update = acc.mean()
        out.control_sum = ctrl_sum
    return out


def _finite_or_none(x: float) -> Optional[float]:
    """metrics.jsonl stays strict JSON: a diverged client's NaN loss is written as null."""
    return x if np.isfinite(x) else None


def round_record(r: int, plan, reports: Dict[int, Report], agg: Aggregate, num_params: int,
                 down_bytes_per_client: int, uses_controls: bool, prev_line: Optional[str]) -> dict:
    """The metrics.jsonl line of one round (phases and wall_s are added by the caller)."""
    cohort, small = plan.cohort, len(plan.cohort) <= PER_CLIENT_LIMIT
    vectors = 2 if uses_controls else 1     # SCAFFOLD sends model and control both ways
    f32 = 4 * num_params
    up_per_client = {c: int(reports[c].row[3] + reports[c].row[4]) for c in sorted(reports)}
    uplink = sum(up_per_client.values())
    # Every cohort client receives the model (and c) even if it later drops out.
    downlink = len(cohort) * (down_bytes_per_client + (f32 if uses_controls else 0))
    rows = [reports[c].row for c in agg.accepted]
    weights = np.array([row[1] for row in rows])
    losses = np.array([row[2] for row in rows])
    prev = json.loads(prev_line) if prev_line else {}
    base_up, base_down = f32 * vectors * len(reports), f32 * vectors * len(cohort)

    def ids(xs):
        return [int(c) for c in xs] if small else len(xs)
    rec = {
        "round": r,
        "train_loss": _finite_or_none(float(np.dot(losses, weights) / weights.sum())) if rows else None,
        "clients": ids(cohort),
        "arrived": ids(plan.arrived),
        "dropped": ids(plan.dropped),
        "stragglers": ids(plan.stragglers),
        "rejected": ids(agg.rejected),
        "rejected_updates": len(agg.rejected),
        "aggregated_clients": len(agg.accepted),
        "client_loss": {str(c): _finite_or_none(round(float(reports[c].row[2]), 6))
                        for c in sorted(reports)} if small else None,
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
        "client_train_s_max": float(max((rep.row[5] for rep in reports.values()), default=0.0)),
    }
    return rec
