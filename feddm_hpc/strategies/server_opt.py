"""Server-side strategies: how the aggregated client update moves the global model.

Each strategy sees the global vector and the weighted mean of the client updates (the negative
pseudo-gradient, Reddi et al. 2021 "Adaptive Federated Optimization") and returns the new global
vector. State (momentum, second moments) is a dict of arrays so it goes straight into HDF5.
"""
from __future__ import annotations

import numpy as np

from feddm_hpc.strategies.base import Strategy


class FedAvg(Strategy):
    """FedDM-vanilla: global += server_lr * mean update (server_lr 1 is plain FedAvg)."""
    name = "fedavg"

    def apply(self, global_params, mean_update):
        return (global_params + np.float32(self.cfg.lr) * mean_update).astype(np.float32)


class FedProx(FedAvg):
    """FedDM-prox: FedAvg on the server, the proximal term mu/2 ||w - w_global||^2 (client.prox_mu,
    terms.ProximalTerm) in the clients' objective. Every strategy honours client.prox_mu (the base
    class's gradient_terms), so the term also combines with server optimizers and SCAFFOLD."""
    name = "fedprox"


class FedAvgM(Strategy):
    """Server momentum (Hsu et al. 2019): v = beta v + delta; w += lr v."""
    name = "fedavgm"

    def __init__(self, server_cfg, num_params, run_config=None):
        super().__init__(server_cfg, num_params, run_config)
        self.velocity = np.zeros(num_params, dtype=np.float32)

    def apply(self, global_params, mean_update):
        self.velocity *= np.float32(self.cfg.momentum)
        self.velocity += mean_update
        return (global_params + np.float32(self.cfg.lr) * self.velocity).astype(np.float32)

    def state_dict(self):
        return {"velocity": self.velocity}

    def load_state_dict(self, state):
        self.velocity = np.array(state["velocity"], dtype=np.float32)


class _Adaptive(Strategy):
    """FedAdagrad / FedAdam / FedYogi share m (first moment) and differ in the v update."""

    def __init__(self, server_cfg, num_params, run_config=None):
        super().__init__(server_cfg, num_params, run_config)
        self.m = np.zeros(num_params, dtype=np.float32)
        # Reddi et al. initialise v to tau^2 so the first steps are bounded.
        self.v = np.full(num_params, server_cfg.tau ** 2, dtype=np.float32)

    def _second_moment(self, delta: np.ndarray) -> None:
        raise NotImplementedError

    def apply(self, global_params, mean_update):
        b1 = np.float32(self.cfg.beta1)
        self.m *= b1
        self.m += (1 - b1) * mean_update
        self._second_moment(mean_update)
        step = np.float32(self.cfg.lr) * self.m / (np.sqrt(self.v) + np.float32(self.cfg.tau))
        return (global_params + step).astype(np.float32)

    def state_dict(self):
        return {"m": self.m, "v": self.v}

    def load_state_dict(self, state):
        self.m = np.array(state["m"], dtype=np.float32)
        self.v = np.array(state["v"], dtype=np.float32)


class FedAdagrad(_Adaptive):
    name = "fedadagrad"

    def _second_moment(self, delta):
        self.v += delta * delta


class FedAdam(_Adaptive):
    name = "fedadam"

    def _second_moment(self, delta):
        b2 = np.float32(self.cfg.beta2)
        self.v *= b2
        self.v += (1 - b2) * delta * delta


class FedYogi(_Adaptive):
    name = "fedyogi"

    def _second_moment(self, delta):
        b2 = np.float32(self.cfg.beta2)
        d2 = delta * delta
        self.v -= (1 - b2) * d2 * np.sign(self.v - d2)
