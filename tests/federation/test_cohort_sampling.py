"""Cohort sampling: uniform draws each round, shuffled passes cover every client once per pass."""
import numpy as np
import pytest

from feddm_hpc import seeding
from feddm_hpc.config import config_from_tree
from feddm_hpc.errors import ConfigError


def cohorts(scheme, n, m, rounds, seed=0):
    return [seeding.sample_cohort(seed, r, n, m, scheme) for r in range(rounds)]


def test_uniform_is_the_default_and_unchanged():
    # The default stream must stay the one every existing run used.
    for r in range(5):
        rng = seeding.numpy_rng(3, seeding.COHORT, r)
        expected = np.sort(rng.choice(10, size=2, replace=False))
        assert list(seeding.sample_cohort(3, r, 10, 2)) == list(expected)
        assert list(seeding.sample_cohort(3, r, 10, 2, "uniform")) == list(expected)


def test_shuffled_pass_covers_every_client_exactly_once():
    got = cohorts("shuffled", 10, 2, 20)
    for p in range(4):  # 5 rounds a pass
        members = np.concatenate(got[5 * p:5 * p + 5])
        assert sorted(members.tolist()) == list(range(10))
    assert all(len(c) == 2 and list(c) == sorted(c) for c in got)
    # Another pass is another permutation, and another seed another sequence.
    assert [c.tolist() for c in got[:5]] != [c.tolist() for c in got[5:10]]
    assert [c.tolist() for c in got] != [c.tolist() for c in cohorts("shuffled", 10, 2, 20, seed=1)]


def test_shuffled_with_a_remainder_tops_up_the_last_cohort():
    got = cohorts("shuffled", 7, 3, 6)   # 3 rounds a pass: 3 + 3 + (1 + 2 topped up)
    for p in range(2):
        part = got[3 * p:3 * p + 3]
        assert all(len(c) == 3 and len(set(c.tolist())) == 3 for c in part)
        assert set(np.concatenate(part).tolist()) == set(range(7))


def test_uniform_leaves_clients_out_where_shuffled_does_not():
    # The quickstart before shuffled cohorts: 10 clients, 2 a round, 10 rounds.
    seen_uniform = set(np.concatenate(cohorts("uniform", 10, 2, 10)).tolist())
    seen_shuffled = set(np.concatenate(cohorts("shuffled", 10, 2, 10)).tolist())
    assert seen_shuffled == set(range(10))
    assert len(seen_uniform) < 10   # seed 0 leaves clients 0 and 3 out


def test_shuffled_full_participation_is_everyone():
    assert list(seeding.sample_cohort(0, 4, 5, None, "shuffled")) == [0, 1, 2, 3, 4]


def test_cohort_sampling_is_validated():
    with pytest.raises(ConfigError, match="federation.cohort_sampling"):
        config_from_tree({"federation": {"cohort_sampling": "roundrobin"}})
    with pytest.raises(ConfigError, match="federation.cohort_sampling"):
        config_from_tree({"federation": {"num_clients": 10, "clients_per_round": 2,
                                         "cohort_sampling": "shuffled"},
                          "privacy": {"clip_norm": 1.0, "noise_multiplier": 1.0}})
    cfg = config_from_tree({"federation": {"num_clients": 10, "clients_per_round": 2,
                                           "cohort_sampling": "shuffled"}})
    assert cfg.federation.cohort_sampling == "shuffled"
