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


def test_yogi_second_moment_differs_from_adam_once_v_exceeds_g2():
    """Yogi: v -= (1 - b2) g^2 sign(v - g^2). A first big step makes v > g^2 for a small second
    update: Yogi then lowers v by only (1 - b2) g^2 where Adam decays it by (1 - b2) v, and with
    g = 0 Yogi leaves v alone; where g^2 > v both raise v."""
    cfg = ServerConfig(lr=0.1, beta1=0.9, beta2=0.9, tau=1e-3)
    yogi, adam = make_strategy("fedyogi", cfg, 3), make_strategy("fedadam", cfg, 3)
    d1 = np.array([1.0, 1.0, 0.1], dtype=np.float32)
    d2 = np.array([0.1, 0.0, 1.0], dtype=np.float32)
    w_yogi = yogi.apply(np.zeros(3, dtype=np.float32), d1)
    adam.apply(np.zeros(3, dtype=np.float32), d1)
    v1 = 1e-6 + 0.1 * d1.astype(np.float64) ** 2              # g^2 > v0: v grows, as Adam's
    assert np.all(v1[:2] > d2[:2].astype(np.float64) ** 2)      # v > g^2 on the first two
    w_yogi = yogi.apply(w_yogi, d2)
    adam.apply(np.zeros(3, dtype=np.float32), d2)
    # By hand: 0.100001 - 0.1 * 0.01; 0.100001 (g = 0); 0.001001 + 0.1 * 1.
    v2 = np.array([0.099001, 0.100001, 0.101001])
    np.testing.assert_allclose(yogi.state_dict()["v"], v2, rtol=1e-5)
    np.testing.assert_allclose(yogi.state_dict()["v"], v1 - 0.1 * d2.astype(np.float64) ** 2
                               * np.sign(v1 - d2.astype(np.float64) ** 2), rtol=1e-5)
    v1_adam = 0.9 * 1e-6 + 0.1 * d1.astype(np.float64) ** 2
    v2_adam = 0.9 * v1_adam + 0.1 * d2.astype(np.float64) ** 2  # 0.0910008, 0.0900008, 0.1009
    np.testing.assert_allclose(adam.state_dict()["v"], v2_adam, rtol=1e-5)
    assert np.all(np.abs(v2[:2] - v2_adam[:2]) > 0.05 * v2_adam[:2])  # Yogi != Adam there
    m2 = 0.9 * 0.1 * d1.astype(np.float64) + 0.1 * d2
    w1 = 0.1 * (0.1 * d1) / (np.sqrt(v1) + 1e-3)
    np.testing.assert_allclose(w_yogi, w1 + 0.1 * m2 / (np.sqrt(v2) + 1e-3), rtol=1e-5)


def test_registry_lists_names():
    assert {"fedavg", "fedprox", "fedavgm", "fedadam", "fedyogi", "fedadagrad",
            "scaffold"} <= set(STRATEGIES)
    with pytest.raises(ConfigError, match="federation.algorithm.*fedavg"):
        make_strategy("nope", ServerConfig(), 1)


# -- SCAFFOLD (option II) -----------------------------------------------------------------------

def test_scaffold_client_control_delta_by_hand():
    from feddm_hpc.strategies.scaffold import control_delta
    c = np.array([0.1, -0.2], dtype=np.float32)
    x = np.array([1.0, 2.0], dtype=np.float32)      # the model the client started from
    y = np.array([0.8, 2.3], dtype=np.float32)      # its model after K steps
    # K = 4 steps, eta = 0.05: (x - y) / (K eta) = [0.2, -0.3] / 0.2 = [1.0, -1.5]
    np.testing.assert_allclose(control_delta(c, x, y, 4, 0.05), [1.0 - 0.1, -1.5 + 0.2], rtol=1e-6)


def test_scaffold_server_steps_by_hand():
    """N = 4 clients, 2 report: x += lr * weighted mean(delta y); c += sum(delta c_i) / N."""
    s = make_strategy("scaffold", ServerConfig(lr=0.5), 2)
    assert s.upload_names == ("control_delta",) and s.broadcast_vectors == 1
    fedavg = make_strategy("fedavg", ServerConfig(), 2)
    assert fedavg.upload_names == () and fedavg.broadcast_vectors == 0
    x = np.array([1.0, 1.0], dtype=np.float32)
    d1, d2 = np.array([0.4, 0.0], np.float32), np.array([0.0, 0.8], np.float32)
    mean = weighted_mean([(d1, 1.0), (d2, 3.0)])            # [0.1, 0.6]
    np.testing.assert_allclose(s.apply(x, mean), [1.05, 1.3], rtol=1e-6)
    dc1, dc2 = np.array([1.0, -2.0]), np.array([3.0, 2.0])
    s.update_control(dc1 + dc2, 4)                          # |S|/N * mean = 2/4 * [2, 0]
    np.testing.assert_allclose(s.control, [1.0, 0.0])
    s.update_control(np.array([0.4, 0.4]), 4)
    np.testing.assert_allclose(s.control, [1.1, 0.1], rtol=1e-6)
    restored = make_strategy("scaffold", ServerConfig(), 2)
    restored.load_state_dict(s.state_dict())
    np.testing.assert_array_equal(restored.control, s.control)


def test_scaffold_keeps_c_the_mean_of_client_controls():
    """Clients commit the delta they send, the server adds sum/N: c == mean_i c_i (c_i = 0
    for clients that never reported), whichever clients arrive."""
    from feddm_hpc.strategies import ClientControls
    rng = np.random.default_rng(0)
    n, N = 5, 4
    s, controls = make_strategy("scaffold", ServerConfig(), n), ClientControls(n)
    for arrived in ([0, 2], [1], [0, 1, 3]):
        total = np.zeros(n)
        for cid in arrived:
            delta = rng.standard_normal(n).astype(np.float32)
            controls.commit(cid, delta)
            total += delta
        s.update_control(total, N)
    stack = [controls.get(i) if controls.get(i) is not None else np.zeros(n) for i in range(N)]
    np.testing.assert_allclose(s.control, np.mean(stack, axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(controls.correction(s.control, 2), s.control - controls.get(2))
    np.testing.assert_array_equal(controls.correction(s.control, 9), s.control)  # never reported


def test_client_controls_redistribute_over_ranks():
    from feddm_hpc.strategies import ClientControls
    a = ClientControls(3)
    for cid in (0, 3, 5):
        a.commit(cid, np.full(3, cid, dtype=np.float32))
    state = a.state_dict()
    assert sorted(state) == ["control/0", "control/3", "control/5"]
    ranks = [ClientControls(3), ClientControls(3)]
    ranks[0].load_state_dict(state, client_ids=[0, 1, 5])
    ranks[1].load_state_dict(state, client_ids=[2, 3])
    assert ranks[0].get(3) is None and ranks[1].get(0) is None
    np.testing.assert_array_equal(ranks[0].get(5), [5, 5, 5])
    np.testing.assert_array_equal(ranks[1].get(3), [3, 3, 3])
    with pytest.raises(ValueError, match="control"):
        ranks[0].load_state_dict({"residual/0": np.zeros(3)})
