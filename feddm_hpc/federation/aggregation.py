"""How one round's accepted client updates become its mean update, chosen once per run from
`server.aggregation` and `privacy` (aggregation_rule), a fresh rule object each round:

WeightedMean   FedAvg: sum_i n_i u_i / sum_i n_i (n_i the client's samples); the default.
UniformMean    sum_i u_i / k over the k accepted clients: secure aggregation without DP (the root
               only learns the sum, so per-client weights cannot be applied there).
DPMean         DP-FedAvg: (sum_i u_i + N(0, (z C)^2 I)) / m with the clients' clipped updates and
               the fixed cohort size m (privacy/dp.py); the noise comes from a generator seeded by
               (seed, DP_NOISE, round), drawn on the root only. Carries the round's epsilon.
               Every decoded update is bounded to norm C again (`bound`): the clients clip before
               encoding, and a lossy codec's rounding can take the decoded vector past C (2-bit
               stochastic rounding: 1.41 C), which the sensitivity 2C the accountant assumes does
               not allow. Every round releases noise (`releases_when_empty`), also when no update
               was accepted: whether an update is accepted depends on the client's data.
Robust         median, trimmed_mean, krum, multi_krum (strategies/robust.py): needs every update
               (`keeps_rows`), so only the gather transport uses it.

The transports stream the accepted updates in client-id order into a float64 sum with the rule's
`weight`, then call `finish` once on the root. `record_fields` adds the rule's own metrics to the
round's metrics line.
"""
from __future__ import annotations

import functools
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from feddm_hpc.privacy import dp
from feddm_hpc.strategies import robust


class RoundAggregation:
    keeps_rows = False   # True: the decoded updates are kept and passed to finish as rows
    releases_when_empty = False   # True: finish runs (on a zero sum) even if nothing was accepted

    def __init__(self, round_index: int, cohort: Sequence[int]):
        self.round_index, self.cohort = round_index, tuple(int(c) for c in cohort)
        self.fields: Dict[str, object] = {}

    def weight(self, num_samples: int) -> float:
        return float(num_samples)

    def bound(self, update: np.ndarray) -> np.ndarray:
        """One decoded, finite update as it enters the sum."""
        return update

    def finish(self, total: np.ndarray, weight: float, rows: Optional[np.ndarray] = None,
               row_ids: Sequence[int] = ()) -> np.ndarray:
        """The float32 mean update from the float64 weighted sum (and the rows, if kept):
        divided in float64 and rounded once, as (total / weight).astype(float32), without the
        model-sized float64 temporary."""
        return np.divide(total, weight, out=np.empty(total.shape, dtype=np.float32))

    def record_fields(self) -> Dict[str, object]:
        return dict(self.fields)


class WeightedMean(RoundAggregation):
    pass


class UniformMean(RoundAggregation):
    def weight(self, num_samples: int) -> float:
        return 1.0


class DPMean(RoundAggregation):
    releases_when_empty = True

    def __init__(self, round_index, cohort, seed: int, privacy, num_clients: int):
        super().__init__(round_index, cohort)
        self.seed, self.p, self.num_clients = seed, privacy, num_clients

    def weight(self, num_samples: int) -> float:
        return 1.0   # each client's clipped update counts once: the sensitivity is C

    def bound(self, update):
        """The decoded update clipped to C in float64 (its norm then exceeds C by float64
        rounding at most; float32 could overshoot by ~1e-7 C)."""
        return dp.clip_update(update.astype(np.float64), self.p.clip_norm)[0]

    def finish(self, total, weight, rows=None, row_ids=()):
        p = self.p
        mean = dp.noised_mean(total, len(self.cohort), p.clip_norm, p.noise_multiplier,
                              dp.noise_rng(self.seed, self.round_index))
        return mean.astype(np.float32)

    def record_fields(self):
        from feddm_hpc.privacy import accounting  # late: dp-accounting loads scipy, for DP runs only

        p = self.p
        eps = accounting.epsilon(self.num_clients, len(self.cohort), p.noise_multiplier,
                                 self.round_index + 1, p.delta)
        return {**self.fields, "epsilon": None if not np.isfinite(eps) else round(float(eps), 6),
                "delta": p.delta, "noise_multiplier": p.noise_multiplier, "clip_norm": p.clip_norm}


class Robust(RoundAggregation):
    keeps_rows = True

    def __init__(self, round_index, cohort, server_cfg):
        super().__init__(round_index, cohort)
        self.s = server_cfg

    def finish(self, total, weight, rows=None, row_ids=()):
        s = self.s
        k = rows.shape[0]
        selected = s.num_selected if s.num_selected is not None else max(1, k - s.num_byzantine)
        try:
            result = robust.robust_aggregate(s.aggregation, rows, np.ones(k), trim_fraction=s.trim_fraction,
                                             num_byzantine=s.num_byzantine,
                                             num_selected=min(selected, max(1, k - s.num_byzantine)))
        except ValueError as exc:
            # Too few updates this round for the rule's assumption (e.g. Krum needs k > 2f + 2):
            # fall back to the coordinate median, which is defined for any k, and say so.
            self.fields["aggregation_fallback"] = f"median ({exc})"
            result = robust.coordinate_median(rows)
        if s.aggregation in ("krum", "multi_krum"):
            self.fields["selected_clients"] = [int(row_ids[i]) for i in result.selected_rows]
        return result.vector.astype(np.float32)


def aggregation_rule(cfg) -> Callable[[int, Sequence[int]], RoundAggregation]:
    """The run's rule, chosen once: (round index, cohort) -> that round's RoundAggregation (a
    fresh object each round: DP's noise and the robust selection are per round)."""
    p, rule = cfg.privacy, cfg.server.aggregation
    if p.dp:
        return functools.partial(DPMean, seed=cfg.seed, privacy=p,
                                 num_clients=cfg.federation.num_clients)
    if rule != "mean":
        return functools.partial(Robust, server_cfg=cfg.server)
    if p.secure_aggregation:
        return UniformMean
    return WeightedMean


def round_aggregation(cfg, round_index: int, cohort: Sequence[int]) -> RoundAggregation:
    """The rule of one round (aggregation_rule's, for callers that need a single round)."""
    return aggregation_rule(cfg)(round_index, cohort)


__all__: List[str] = ["DPMean", "Robust", "RoundAggregation", "UniformMean", "WeightedMean",
                      "aggregation_rule", "round_aggregation"]
