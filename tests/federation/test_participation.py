"""Dropout and stragglers: deterministic per (seed, round, client), rank-free, hand-checked."""
from dataclasses import replace

import pytest

from feddm_hpc import seeding
from feddm_hpc.config import FederationConfig, config_from_tree
from feddm_hpc.errors import ConfigError
from feddm_hpc.federation.participation import fails_to_report, plan_round, slowness


def test_no_realism_everyone_arrives():
    fed = FederationConfig(num_clients=5)
    plan = plan_round(0, 3, range(5), fed, lambda c: 10)
    assert plan.arrived == (0, 1, 2, 3, 4) and not plan.dropped and not plan.stragglers
    assert plan.sim_round_s == 10.0  # 10 steps x 1 s x slowness 1


def test_dropout_draws_match_hand_computed_stream_and_rate():
    fed = FederationConfig(num_clients=200, dropout_prob=0.3)
    plan = plan_round(7, 2, range(200), fed, lambda c: 1)
    expected = [c for c in range(200)
                if seeding.numpy_rng(7, seeding.PARTICIPATION, 2, c).random() < 0.3]
    assert list(plan.dropped) == expected
    assert sorted(plan.arrived + plan.dropped) == list(range(200))
    assert 30 <= len(plan.dropped) <= 90
    # Same inputs, same plan (every rank computes it alone); another round, another draw.
    assert plan_round(7, 2, range(200), fed, lambda c: 1) == plan
    assert plan_round(7, 3, range(200), fed, lambda c: 1).dropped != plan.dropped
    assert not fails_to_report(7, 2, 0, 0.0) and fails_to_report(7, 2, 0, 1.0)


def test_stragglers_miss_the_deadline_by_modelled_time():
    fed = FederationConfig(num_clients=8, straggler="lognormal", straggler_sigma=0.8,
                           step_time_s=0.5, round_deadline_s=6.0)
    steps = {c: 10 + c for c in range(8)}
    plan = plan_round(1, 0, range(8), fed, steps.__getitem__)
    slow = {c: seeding.numpy_rng(1, seeding.SPEED, 0, c).lognormal(0.0, 0.8) for c in range(8)}
    times = {c: steps[c] * 0.5 * slow[c] for c in range(8)}
    assert list(plan.stragglers) == [c for c in range(8) if times[c] > 6.0]
    assert list(plan.arrived) == [c for c in range(8) if times[c] <= 6.0]
    assert plan.stragglers and plan.arrived  # this seed has both kinds
    assert plan.sim_round_s == 6.0           # someone was late: the server waited the deadline
    for c in range(8):
        assert plan.sim_time_s[c] == pytest.approx(times[c])
        # The speed factor is a property of the client: the same in every round.
        assert slowness(1, c, fed) == slowness(1, c, replace(fed, dropout_prob=0.5))
    no_deadline = plan_round(1, 0, range(8), replace(fed, round_deadline_s=None), steps.__getitem__)
    assert no_deadline.arrived == tuple(range(8))
    assert no_deadline.sim_round_s == pytest.approx(max(times.values()))


@pytest.mark.parametrize("tree, field", [
    ({"federation": {"dropout_prob": 1.5}}, "federation.dropout_prob"),
    ({"federation": {"straggler": "pareto"}}, "federation.straggler"),
    ({"federation": {"round_deadline_s": 0}}, "federation.round_deadline_s"),
    ({"federation": {"inject_nan_clients": [99]}}, "federation.inject_nan_clients"),
    ({"compression": {"target": "gradients"}}, "compression.target"),
    ({"compression": {"downlink": "topk"}}, "compression.downlink"),
    ({"compression": {"downlink_bits": 3}}, "compression.downlink_bits"),
    ({"personalization": {"steps": -1}}, "personalization.steps"),
    ({"federation": {"algorithm": "scaffold2"}}, "federation.algorithm"),
])
def test_new_config_fields_are_validated(tree, field):
    with pytest.raises(ConfigError) as exc:
        config_from_tree(tree)
    assert str(exc.value).startswith(field), str(exc.value)


def test_new_config_fields_load():
    c = config_from_tree({"federation": {"algorithm": "scaffold", "dropout_prob": 0.2,
                                         "inject_nan_clients": [1, 2]},
                          "client": {"optimizer": "sgd", "momentum": 0.0, "grad_clip": None},
                          "compression": {"target": "weights", "downlink": "quant"},
                          "personalization": {"steps": 5}})
    assert c.federation.inject_nan_clients == (1, 2) and c.personalization.steps == 5
    assert "scaffold" in str(pytest.raises(ConfigError, config_from_tree,
                                           {"federation": {"algorithm": "nope"}}).value)
