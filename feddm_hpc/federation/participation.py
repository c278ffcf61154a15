"""Who of a round's cohort reports back: client dropout and stragglers past a deadline.

Every decision is a pure function of (seed, round, client_id) and the config, computed alike on
every rank with no communication, so it never depends on the number of ranks or on timing.
Compute time is modelled, not measured: local_steps x federation.step_time_s x the client's
slowness factor (a fixed draw per client: device heterogeneity), in simulated seconds.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Sequence, Tuple

from feddm_hpc import seeding


@dataclass(frozen=True)
class RoundPlan:
    cohort: Tuple[int, ...]
    arrived: Tuple[int, ...]        # report an update (it may still be rejected as non-finite)
    dropped: Tuple[int, ...]        # failed to report (federation.dropout_prob)
    stragglers: Tuple[int, ...]     # missed federation.round_deadline_s
    sim_time_s: Dict[int, float]    # modelled compute time of each client that did not drop
    sim_round_s: float              # the server waits for the slowest arrival, or the deadline


def slowness(seed: int, client_id: int, fed) -> float:
    """The client's speed factor (time multiplier): 1 without stragglers, else lognormal with
    median 1. Drawn once per client, so a slow device stays slow across rounds."""
    if fed.straggler == "none":
        return 1.0
    rng = seeding.numpy_rng(seed, seeding.SPEED, 0, client_id)
    return float(rng.lognormal(0.0, fed.straggler_sigma))


def fails_to_report(seed: int, round_index: int, client_id: int, p: float) -> bool:
    if p <= 0.0:
        return False
    return bool(seeding.numpy_rng(seed, seeding.PARTICIPATION, round_index, client_id).random() < p)


def plan_round(seed: int, round_index: int, cohort: Sequence[int], fed,
               steps_of: Callable[[int], int]) -> RoundPlan:
    """steps_of(client_id) -> local steps; the plan is identical on every rank."""
    arrived, dropped, late, times = [], [], [], {}
    for cid in (int(c) for c in cohort):
        if fails_to_report(seed, round_index, cid, fed.dropout_prob):
            dropped.append(cid)
            continue
        times[cid] = steps_of(cid) * fed.step_time_s * slowness(seed, cid, fed)
        if fed.round_deadline_s is not None and times[cid] > fed.round_deadline_s:
            late.append(cid)
        else:
            arrived.append(cid)
    wait = fed.round_deadline_s if late else max((times[c] for c in arrived), default=0.0)
    return RoundPlan(tuple(int(c) for c in cohort), tuple(arrived), tuple(dropped), tuple(late),
                     times, float(wait))
