"""DP accounting: the per-round event, epsilon equal to dp-accounting's own composition, its
monotonicity, full participation against the exact Gaussian mechanism, the library convention the
factor 2 of replace-one relies on, and the calibration round trip."""

from __future__ import annotations

import math

import dp_accounting as dpa
import numpy as np
import pytest

from feddm_hpc.privacy import accounting as acc

DELTA = 1e-5
N, M, Z = 100, 10, 1.0  # the sampled case most tests share, so its RDP is computed once


def library_epsilon(events, delta=DELTA):
    """Epsilon of the events composed one after the other on a fresh replace-one accountant."""
    accountant = dpa.rdp.RdpAccountant(neighboring_relation=dpa.NeighboringRelation.REPLACE_ONE)
    for event in events:
        accountant.compose(event)
    return accountant.get_epsilon(delta)


# -- the event and the library's conventions --------------------------------------------------------

def test_round_event_is_sampled_without_replacement_with_half_the_multiplier():
    assert acc.round_event(N, M, Z) == dpa.SampledWithoutReplacementDpEvent(
        source_dataset_size=N, sample_size=M, event=dpa.GaussianDpEvent(Z / 2))


@pytest.mark.parametrize("cohort_size", [None, 20, 35])
def test_full_participation_is_a_plain_gaussian(cohort_size):
    assert acc.round_event(20, cohort_size, 1.6) == dpa.GaussianDpEvent(0.8)


def test_no_noise_is_a_non_private_event():
    assert acc.round_event(N, M, 0.0) == dpa.NonPrivateDpEvent()


def test_only_the_replace_one_rdp_accountant_takes_sampling_without_replacement():
    event = acc.round_event(N, M, Z)
    assert acc.make_accountant().supports(event)
    assert not dpa.rdp.RdpAccountant(neighboring_relation=dpa.NeighboringRelation.ADD_OR_REMOVE_ONE
                                     ).supports(event)
    assert not dpa.pld.PLDAccountant(neighboring_relation=acc.NEIGHBORING_RELATION).supports(event)
    assert acc.NEIGHBORING_RELATION is dpa.NeighboringRelation.REPLACE_ONE
    assert "replace-one" in acc.NEIGHBOURING and "client-level" in acc.NEIGHBOURING


def test_library_does_not_double_the_gaussian_sensitivity_under_replace_one():
    # round_event halves z because dp-accounting (0.6) takes GaussianDpEvent's multiplier relative
    # to the query's sensitivity under either relation (google/differential-privacy#378). If a
    # release starts doubling it under REPLACE_ONE itself, this fails: drop the halving then
    # (REPLACE_ONE_SENSITIVITY = 1), or the noise is counted as a quarter of its strength in RDP.
    event = dpa.GaussianDpEvent(1.0)
    add_remove = dpa.rdp.RdpAccountant(neighboring_relation=dpa.NeighboringRelation.ADD_OR_REMOVE_ONE)
    assert library_epsilon([event]) == add_remove.compose(event).get_epsilon(DELTA)


# -- epsilon ------------------------------------------------------------------------------------------

def test_epsilon_equals_the_library_composition():
    # 10 of 100: the sampled bound is the smaller one, so epsilon is the library's for this event.
    event = acc.round_event(N, M, Z)
    one_shot = acc.make_accountant().compose(event, 40).get_epsilon(DELTA)
    assert acc.epsilon(N, M, Z, 40, DELTA) == one_shot  # the same float operations
    # Round by round (what a loop composing every round would do): equal up to summation order.
    assert acc.epsilon(N, M, Z, 3, DELTA) == pytest.approx(library_epsilon([event] * 3), rel=1e-12)


def test_epsilon_grows_with_rounds():
    eps = [acc.epsilon(N, M, Z, r, DELTA) for r in range(200)]
    assert eps[0] == 0.0
    assert (np.diff(eps) > 0).all()


def test_epsilon_falls_with_the_noise_multiplier():
    eps = [acc.epsilon(N, M, z, 50, DELTA) for z in (0.0, 0.7, Z, 1.5)]
    assert eps[0] == math.inf
    assert (np.diff(eps) < 0).all()


def test_sampling_amplifies():
    assert acc.epsilon(N, M, Z, 50, DELTA) < acc.epsilon(N, None, Z, 50, DELTA)


def test_large_cohort_takes_the_full_participation_bound():
    # 15 of 20: the sampled (WBK19) bound is looser than no sampling at all, which also holds.
    z, rounds = 2.0, 100
    sampled = acc.make_accountant().compose(acc.round_event(20, 15, z), rounds).get_epsilon(DELTA)
    full = acc.epsilon(20, None, z, rounds, DELTA)
    assert full < sampled
    assert acc.epsilon(20, 15, z, rounds, DELTA) == full


def test_full_participation_equals_plain_gaussian_composition():
    z, rounds = 2.0, 30
    expected = library_epsilon([dpa.GaussianDpEvent(z / 2)] * rounds)
    for cohort_size in (None, 20, 50):
        assert acc.epsilon(20, cohort_size, z, rounds, DELTA) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("z, rounds", [(1.0, 1), (2.0, 100), (5.0, 1000)])
def test_full_participation_bounds_the_exact_gaussian_mechanism(z, rounds):
    # r rounds of noise z*C on a sum of replace-one sensitivity 2C compose to one Gaussian of
    # std z / (2 sqrt(r)) per unit sensitivity, whose exact epsilon (Balle & Wang 2018) RDP may
    # only overstate, and here by under 10%. Counting sensitivity C instead would land far below.
    exact = dpa.get_epsilon_gaussian(z / (2 * math.sqrt(rounds)), DELTA)
    assert exact <= acc.epsilon(20, None, z, rounds, DELTA) <= 1.1 * exact


@pytest.mark.parametrize("name, value", [("delta", 0.0), ("delta", 1.0), ("rounds", -1),
                                         ("rounds", 2.5), ("cohort_size", 0), ("num_clients", 0),
                                         ("noise_multiplier", -1.0), ("noise_multiplier", math.inf)])
def test_epsilon_arguments_are_checked(name, value):
    args = {"num_clients": N, "cohort_size": M, "noise_multiplier": Z, "rounds": 5, "delta": DELTA}
    with pytest.raises(ValueError, match=name):
        acc.epsilon(**{**args, name: value})


# -- calibration ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("target", [0.5, 4.0, 30.0])
def test_calibration_round_trip_full_participation(target):
    z = acc.noise_multiplier_for(target, DELTA, 20, None, 100)
    eps = acc.epsilon(20, None, z, 100, DELTA)
    assert 0.99 * target <= eps <= target


@pytest.mark.slow  # ~6 s of CPU: each trial z costs one uncached RDP evaluation
def test_calibration_round_trip_sampled():
    z = acc.noise_multiplier_for(8.0, DELTA, N, M, 100)
    eps = acc.epsilon(N, M, z, 100, DELTA)
    assert 0.99 * 8.0 <= eps <= 8.0
    assert z < acc.noise_multiplier_for(8.0, DELTA, N, None, 100)  # sampling saved noise


def test_calibration_of_a_large_cohort_is_full_participations():
    z = acc.noise_multiplier_for(8.0, DELTA, 20, 15, 100)
    assert z == acc.noise_multiplier_for(8.0, DELTA, 20, None, 100)
    assert 0.99 * 8.0 <= acc.epsilon(20, 15, z, 100, DELTA) <= 8.0


def test_calibration_edge_cases():
    assert acc.noise_multiplier_for(1.0, DELTA, N, M, 0) == 0.0
    assert acc.noise_multiplier_for(math.inf, DELTA, N, M, 10) == 0.0
    with pytest.raises(ValueError, match="target_epsilon"):
        acc.noise_multiplier_for(0.0, DELTA, N, M, 10)
