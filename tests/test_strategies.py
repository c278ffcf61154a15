"""Aggregation and server steps against hand-computed arrays."""
import numpy as np
import pytest

from feddm_hpc.config import ServerConfig
from feddm_hpc.errors import ConfigError
from feddm_hpc.strategies import STRATEGIES, WeightedSum, make_strategy, weighted_mean


def test_weighted_mean_by_sample_counts():
    u1 = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    u2 = np.array([3.0, 0.0, -3.0], dtype=np.float32)
    # weights 1 and 3: (1*u1 + 3*u2) / 4
    np.testing.assert_allclose(weighted_mean([(u1, 1), (u2, 3)]), [2.5, 0.5, -1.5])


def test_weighted_sum_streams_and_rejects_empty():
    acc = WeightedSum(2)
    with pytest.raises(ValueError):
        acc.mean()
    acc.add(np.array([2.0, 4.0], dtype=np.float32), 2.0)
    acc.add(np.array([0.0, 1.0], dtype=np.float32), 2.0)
    np.testing.assert_allclose(acc.mean(), [1.0, 2.5])
    assert acc.count == 2 and acc.mean().dtype == np.float32


def test_fedavg_and_server_lr():
    w = np.array([1.0, 1.0], dtype=np.float32)
    d = np.array([0.5, -1.0], dtype=np.float32)
    np.testing.assert_allclose(make_strategy("fedavg", ServerConfig(), 2).apply(w, d), [1.5, 0.0])
    np.testing.assert_allclose(make_strategy("fedavg", ServerConfig(lr=0.5), 2).apply(w, d), [1.25, 0.5])
    np.testing.assert_allclose(make_strategy("fedprox", ServerConfig(), 2).apply(w, d), [1.5, 0.0])


def test_fedavgm_two_steps():
    s = make_strategy("fedavgm", ServerConfig(lr=1.0, momentum=0.5), 1)
    w = np.zeros(1, dtype=np.float32)
    w = s.apply(w, np.array([1.0], dtype=np.float32))   # v=1, w=1
    w = s.apply(w, np.array([1.0], dtype=np.float32))   # v=1.5, w=2.5
    np.testing.assert_allclose(w, [2.5])
    restored = make_strategy("fedavgm", ServerConfig(lr=1.0, momentum=0.5), 1)
    restored.load_state_dict(s.state_dict())
    np.testing.assert_allclose(restored.velocity, [1.5])


@pytest.mark.parametrize("name", ["fedadam", "fedyogi", "fedadagrad"])
def test_adaptive_first_step_by_hand(name):
    cfg = ServerConfig(lr=0.1, beta1=0.9, beta2=0.99, tau=1e-3)
    s = make_strategy(name, cfg, 2)
    delta = np.array([0.2, -0.4], dtype=np.float32)
    w = s.apply(np.zeros(2, dtype=np.float32), delta)
    m = 0.1 * delta
    v0 = 1e-6
    if name == "fedadam":
        v = 0.99 * v0 + 0.01 * delta ** 2
    elif name == "fedyogi":
        v = v0 - 0.01 * delta ** 2 * np.sign(v0 - delta ** 2)
    else:
        v = v0 + delta ** 2
    np.testing.assert_allclose(w, 0.1 * m / (np.sqrt(v) + 1e-3), rtol=1e-5)
    np.testing.assert_allclose(s.state_dict()["v"], v, rtol=1e-5)


def test_registry_lists_names():
    assert {"fedavg", "fedprox", "fedavgm", "fedadam", "fedyogi", "fedadagrad"} <= set(STRATEGIES)
    with pytest.raises(ConfigError, match="federation.algorithm.*fedavg"):
        make_strategy("nope", ServerConfig(), 1)
