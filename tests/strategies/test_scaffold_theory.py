"""SCAFFOLD where its theory holds, and the config guard that keeps runs there.

Option II's client update c_i+ = c_i - c + (x - y_i)/(K lr) is exact only for plain SGD local
steps. On heterogeneous quadratics f_i(x) = 1/2 ||A_i (x - b_i)||^2 with K local steps, FedAvg
converges to a biased point (client drift) while SCAFFOLD converges to argmin_x mean_i f_i. The
local loop is numpy here (the gradient H_i (y - b_i) is closed form); the strategies, controls and
control_delta are the package's own, called in simulation.py's order.
"""
import numpy as np
import pytest

from feddm_hpc.config import ClientConfig, ServerConfig, config_from_tree
from feddm_hpc.errors import ConfigError
from feddm_hpc.federation.client import round_lr
from feddm_hpc.strategies import make_strategy, weighted_mean
from feddm_hpc.strategies.scaffold import control_delta

from conftest import TINY, cli_in_process

DIM, CLIENTS, LOCAL_STEPS, ROUNDS = 8, 5, 15, 60
PLAIN_SGD = {"optimizer": "sgd", "momentum": 0.0, "grad_clip": None}


def quadratics(seed=0):
    """Per-client Hessians H_i = A_i^T A_i and minima b_i, and the global minimizer."""
    rng = np.random.default_rng(seed)
    a = [rng.standard_normal((DIM, DIM)) / np.sqrt(DIM) + np.diag(rng.uniform(0.3, 1.5, DIM))
         for _ in range(CLIENTS)]
    hessians = [m.T @ m for m in a]
    minima = [rng.normal(0.0, 2.0, DIM) for _ in range(CLIENTS)]
    # argmin of mean_i f_i: sum_i H_i (x - b_i) = 0.
    x_star = np.linalg.solve(sum(hessians), sum(h @ b for h, b in zip(hessians, minima)))
    return hessians, minima, x_star


def federate(algorithm, client_cfg, hessians, minima):
    """Full participation, equal weights, server lr 1; returns the final global model."""
    strategy = make_strategy(algorithm, ServerConfig(lr=1.0), DIM)
    scaffold = bool(strategy.upload_names)
    controls = strategy.controls if scaffold else None
    x = np.zeros(DIM, dtype=np.float32)
    for r in range(ROUNDS):
        lr = round_lr(client_cfg, r, ROUNDS)
        updates, control_sum = [], np.zeros(DIM)
        for cid, (h, b) in enumerate(zip(hessians, minima)):
            corr = controls.correction(strategy.control, cid) if scaffold else None
            y = x.astype(np.float64)
            for _ in range(LOCAL_STEPS):
                grad = h @ (y - b)
                if corr is not None:  # as ConstantCorrection: + (c - c_i) on every step
                    grad = grad + corr
                y = y - lr * grad
            y = y.astype(np.float32)
            updates.append((y - x, 1.0))
            if scaffold:
                delta = control_delta(strategy.control, x, y, LOCAL_STEPS, lr)
                controls.commit(cid, delta)
                control_sum += delta
        x = strategy.apply(x, weighted_mean(updates))
        if scaffold:
            strategy.update_control(control_sum, CLIENTS)
    return x


@pytest.mark.parametrize("schedule", [
    {"lr_schedule": "constant"},
    {"lr_schedule": "cosine", "lr_warmup_rounds": 2, "lr_min_ratio": 0.5},
])
def test_scaffold_removes_client_drift_on_heterogeneous_quadratics(schedule):
    hessians, minima, x_star = quadratics()
    smoothness = max(np.linalg.eigvalsh(h).max() for h in hessians)
    cfg = ClientConfig(local_steps=LOCAL_STEPS, lr=0.5 / smoothness, **PLAIN_SGD, **schedule)
    fedavg = np.linalg.norm(federate("fedavg", cfg, hessians, minima) - x_star)
    scaffold = np.linalg.norm(federate("scaffold", cfg, hessians, minima) - x_star)
    print(f"{schedule['lr_schedule']}: |x - x*| fedavg {fedavg:.3g}, scaffold {scaffold:.3g}, "
          f"|x*| {np.linalg.norm(x_star):.3g}")
    assert fedavg > 0.1 * np.linalg.norm(x_star)  # FedAvg's drift is real, not rounding
    assert scaffold < 0.5 * fedavg
    assert scaffold < 1e-3 * np.linalg.norm(x_star)  # and SCAFFOLD reaches x* (float32)


# -- the guard: scaffold only with plain SGD clients --------------------------------------------

@pytest.mark.parametrize("client, field", [
    ({"optimizer": "adam"}, "client.optimizer"),
    ({"optimizer": "adamw"}, "client.optimizer"),
    ({"optimizer": "sgd", "momentum": 0.9, "grad_clip": None}, "client.momentum"),
    ({"optimizer": "sgd", "momentum": 0.0, "grad_clip": 1.0}, "client.grad_clip"),
])
def test_scaffold_rejects_clients_that_are_not_plain_sgd(client, field):
    with pytest.raises(ConfigError) as exc:
        config_from_tree({"federation": {"algorithm": "scaffold"}, "client": client})
    message = str(exc.value)
    assert message.startswith(f"{field}: "), message
    assert "plain SGD" in message and "client.grad_clip: null" in message


def test_plain_sgd_scaffold_config_loads_and_other_algorithms_are_unaffected():
    c = config_from_tree({"federation": {"algorithm": "scaffold"}, "client": PLAIN_SGD})
    assert (c.federation.algorithm, c.client.optimizer, c.client.momentum, c.client.grad_clip) == \
        ("scaffold", "sgd", 0.0, None)
    assert config_from_tree({"federation": {"algorithm": "fedavg"}}).client.optimizer == "adam"


def test_cli_validate_rejects_scaffold_with_adam_in_one_line():
    out = cli_in_process(["validate", str(TINY), "--set", "federation.algorithm=scaffold"])
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    lines = [l for l in out.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: client.optimizer: "), out.stderr
