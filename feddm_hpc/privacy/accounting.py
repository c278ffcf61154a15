"""Privacy accounting of client-level DP-FedAvg with Google's dp-accounting library (RDP).

The guarantee is client-level under the replace-one relation (`NEIGHBOURING`): two federations
are neighbours when one client's whole local data set is replaced by arbitrary other data, the
number of clients N staying the same and public. Each round samples a cohort of m clients out of
N uniformly without replacement (seeding.sample_cohort) and releases the sum of their clipped
updates plus N(0, (z*C)^2 I) noise (feddm_hpc.privacy.dp); with m = None or m >= N every client
takes part in every round.

Why replace-one and the RDP accountant: amplification by sampling a fixed-size subset without
replacement holds under replace-one (a fixed m out of a public N; adding or removing a client
would change N), and of dp-accounting's accountants only RdpAccountant accepts a
SampledWithoutReplacementDpEvent, and only with NeighboringRelation.REPLACE_ONE (Wang, Balle and
Kasiviswanathan 2019, "WBK19", Theorem 27); PLDAccountant rejects the event. Full participation
uses the same relation, so its bound also applies to a sampled cohort (below).

The factor 2: replacing one client moves the clipped sum by up to ||u - u'|| <= 2C, not C. The
installed library (0.6) normalises GaussianDpEvent's noise multiplier by the L2 sensitivity of
the query whatever the relation, and does not double it under REPLACE_ONE (reported as
google/differential-privacy issue #378). So a round's event carries z / 2, the noise std over the
replace-one sensitivity 2C; tests/privacy/test_accounting.py checks that convention, so a library
that starts doubling internally fails a test instead of silently halving the noise twice.

Loose for large cohorts: the sampled bound exceeds full participation's once m / N passes about
a quarter to a half (the smaller z, the sooner), although sampling can only help: each fixed
cohort is a Gaussian mechanism with the same noise and sensitivity, and Renyi divergence is
jointly quasi-convex, so the mixture over cohorts is no worse than the worst of them. Both bounds hold, so `epsilon` takes
the smaller of the two library results and `noise_multiplier_for` calibrates against it; for small
m / N that is the sampled bound, equal to the library's composition of `round_event`.

Cost: the RDP of one round is the expensive part (~0.3 s for the sampled event), and it is cached
per (N, m, z); composing r rounds is then r times that vector, exactly what the accountant's own
composition computes, and converting it to epsilon takes well under a millisecond, so `epsilon`
can go into every round's metrics line.
"""

from __future__ import annotations

import functools
import math

import dp_accounting
import numpy as np
from dp_accounting import rdp

NEIGHBORING_RELATION = dp_accounting.NeighboringRelation.REPLACE_ONE
NEIGHBOURING = ("client-level, replace-one: neighbouring federations differ in one client's entire "
                "local data set, replaced by arbitrary other data; the number of clients is public")
# The L2 sensitivity of a round's clipped sum under replace-one, in units of the clip norm C.
REPLACE_ONE_SENSITIVITY = 2.0
# Calibration stops within this fraction of the calibrated noise multiplier.
_CALIBRATION_RTOL = 1e-5


def make_accountant() -> rdp.RdpAccountant:
    """A fresh accountant of the kind every function here uses (default RDP orders)."""
    return rdp.RdpAccountant(neighboring_relation=NEIGHBORING_RELATION)


def full_participation(num_clients: int, cohort_size: int | None) -> bool:
    """True when every client takes part in every round (as in seeding.sample_cohort)."""
    return cohort_size is None or cohort_size >= num_clients


def round_event(num_clients: int, cohort_size: int | None,
                noise_multiplier: float) -> dp_accounting.DpEvent:
    """The DpEvent of one round: SampledWithoutReplacementDpEvent(N, m, GaussianDpEvent(z / 2)),
    or the bare GaussianDpEvent(z / 2) under full participation.

    z / 2 is the noise std z*C over the replace-one sensitivity 2C (module docstring). z = 0
    gives NonPrivateDpEvent: no noise is no privacy, and the accountant divides by z. This event
    alone, composed in a library accountant, gives a valid epsilon but for large m / N a larger
    one than `epsilon`, which also weighs full participation's bound.
    """
    num_clients, cohort_size = _cohort(num_clients, cohort_size)
    noise_multiplier = _noise_multiplier(noise_multiplier)
    if noise_multiplier == 0.0:
        return dp_accounting.NonPrivateDpEvent()
    gaussian = dp_accounting.GaussianDpEvent(noise_multiplier / REPLACE_ONE_SENSITIVITY)
    if cohort_size == num_clients:
        return gaussian
    return dp_accounting.SampledWithoutReplacementDpEvent(
        source_dataset_size=num_clients, sample_size=cohort_size, event=gaussian)


def epsilon(num_clients: int, cohort_size: int | None, noise_multiplier: float, rounds: int,
            delta: float) -> float:
    """Epsilon of `rounds` rounds at `delta`: inf when z = 0 (and rounds > 0), 0.0 for 0 rounds.

    The library's epsilon of round_event(N, m, z) composed `rounds` times, or, for a sampled
    cohort, that of full participation's event if smaller (module docstring: both bounds hold,
    and the sampled one is loose for large m / N). Cheap after the first call for given (N, m, z).
    """
    num_clients, cohort_size = _cohort(num_clients, cohort_size)
    noise_multiplier = _noise_multiplier(noise_multiplier)
    rounds = _rounds(rounds)
    delta = _delta(delta)
    if rounds == 0:
        return 0.0
    if noise_multiplier == 0.0:
        return math.inf
    return min(_composed_epsilon(num_clients, size, noise_multiplier, rounds, delta)
               for size in {cohort_size, num_clients})


def noise_multiplier_for(target_epsilon: float, delta: float, num_clients: int,
                         cohort_size: int | None, rounds: int) -> float:
    """The smallest noise multiplier z (to a relative 1e-5) whose `rounds` rounds cost at most
    `target_epsilon` at `delta` by `epsilon`, found by dp_accounting.calibrate_dp_mechanism.

    Invariant: epsilon(N, m, result, rounds, delta) <= target_epsilon. Returns 0.0 when nothing
    is released (rounds = 0) or the target is inf. Takes a few seconds for a sampled cohort: each
    trial z costs one uncached RDP evaluation.
    """
    target_epsilon = float(target_epsilon)
    if not target_epsilon > 0.0:
        raise ValueError(f"target_epsilon must be > 0, got {target_epsilon}")
    delta = _delta(delta)
    num_clients, cohort_size = _cohort(num_clients, cohort_size)
    rounds = _rounds(rounds)
    if rounds == 0 or target_epsilon == math.inf:
        return 0.0
    # Full participation's bound first: it is cheap, and it bounds the sampled z from above.
    z_full = _calibrate(target_epsilon, delta, num_clients, num_clients, rounds, upper=None)
    if (cohort_size == num_clients
            or _composed_epsilon(num_clients, cohort_size, z_full, rounds, delta) >= target_epsilon):
        return z_full  # the sampled bound would need at least as much noise
    return _calibrate(target_epsilon, delta, num_clients, cohort_size, rounds, upper=z_full)


def _composed_epsilon(num_clients: int, cohort_size: int, noise_multiplier: float, rounds: int,
                      delta: float) -> float:
    """The library's epsilon of round_event(N, m, z) composed `rounds` times (z > 0)."""
    orders, per_round = _round_rdp(num_clients, cohort_size, noise_multiplier)
    return float(rdp.compute_epsilon(orders, rounds * per_round, delta)[0])


def _calibrate(target_epsilon: float, delta: float, num_clients: int, cohort_size: int,
               rounds: int, upper: float | None) -> float:
    """calibrate_dp_mechanism on round_event(N, m, z)'s bound alone; `upper`, if given, is a z
    known to meet the target, which spares the library's upward bracket search."""
    lower = _lower_bracket(target_epsilon, delta, num_clients, cohort_size, rounds,
                           1.0 if upper is None else upper / 2.0)
    if upper is None:
        bracket = dp_accounting.LowerEndpointAndGuess(lower, 2.0 * lower)
    else:
        bracket = dp_accounting.ExplicitBracketInterval(lower, upper)

    def make_event(z: float) -> dp_accounting.DpEvent:
        return dp_accounting.SelfComposedDpEvent(round_event(num_clients, cohort_size, z), rounds)

    return float(dp_accounting.calibrate_dp_mechanism(
        make_accountant, make_event, target_epsilon, delta, bracket_interval=bracket,
        tol=_CALIBRATION_RTOL * lower))


def _lower_bracket(target_epsilon: float, delta: float, num_clients: int, cohort_size: int,
                   rounds: int, start: float) -> float:
    """A z > 0, halved down from `start`, whose epsilon exceeds the target, so the calibrated z
    lies above it: the library's bracket search only moves upwards, and cannot start at 0, where
    the accountant divides by 0."""
    lower = start
    for _ in range(64):
        if _composed_epsilon(num_clients, cohort_size, lower, rounds, delta) > target_epsilon:
            return lower
        lower /= 2.0
    raise ValueError(f"target_epsilon {target_epsilon} is met by any noise multiplier down to "
                     f"{lower:g}; calibration needs a smaller target")


@functools.lru_cache(maxsize=64)
def _round_rdp(num_clients: int, cohort_size: int,
               noise_multiplier: float) -> tuple[np.ndarray, np.ndarray]:
    """(RDP orders, RDP of one round at those orders), from the library's own accountant. Cached:
    the arrays are shared by every caller, hence read-only."""
    accountant = make_accountant().compose(round_event(num_clients, cohort_size, noise_multiplier))
    orders, per_round = np.array(accountant.orders), np.array(accountant.rdp)
    orders.setflags(write=False)
    per_round.setflags(write=False)
    return orders, per_round


def _cohort(num_clients: int, cohort_size: int | None) -> tuple[int, int]:
    """(N, m) as ints with m in [1, N]; full participation (m None or >= N) becomes m = N, so
    equal settings share one cache entry."""
    num_clients = int(num_clients)
    if num_clients < 1:
        raise ValueError(f"num_clients must be >= 1, got {num_clients}")
    if full_participation(num_clients, cohort_size):
        return num_clients, num_clients
    cohort_size = int(cohort_size)
    if cohort_size < 1:
        raise ValueError(f"cohort_size must be >= 1 or None, got {cohort_size}")
    return num_clients, cohort_size


def _noise_multiplier(value: float) -> float:
    value = float(value)
    if not (math.isfinite(value) and value >= 0.0):
        raise ValueError(f"noise_multiplier must be finite and >= 0, got {value}")
    return value


def _rounds(value: int) -> int:
    if int(value) != value or value < 0:
        raise ValueError(f"rounds must be an integer >= 0, got {value}")
    return int(value)


def _delta(value: float) -> float:
    value = float(value)
    if not 0.0 < value < 1.0:
        raise ValueError(f"delta must lie in (0, 1), got {value}")
    return value
