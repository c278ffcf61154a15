"""SCAFFOLD (Karimireddy et al. 2020), option II control variates.

Server: control c (strategy state, checkpointed with the strategy) and the model step of FedAvg,
    x += server_lr * weighted mean(delta y_i)
    c += (1/N) * sum_{i in S} delta c_i        (= |S|/N * unweighted mean over arrived clients)
The c step is unweighted so that c stays the plain mean of the N client controls.
Client i: every local step's gradient gets + (c - c_i); after K steps with learning rate eta,
    c_i+ = c_i - c + (x - y_i) / (K * eta),   delta c_i = c_i+ - c_i.
delta c_i travels with the uplink codec but without error feedback; the client adds the *decoded*
delta to its own c_i, so c_i is exactly what the server has accounted for and c = mean_i c_i
holds up to float rounding whatever the codec (clients that never reported have c_i = 0).

(x - y_i) / (K * eta) is the mean corrected gradient of the K local steps only when every step is
y -= eta * g: plain SGD, no momentum, no clipping (weight decay and the prox term are fine, they
are part of the gradient). Adam, momentum or a clipped step break that identity and c_i is then
no estimate of the client's gradient, so config validation rejects such configs (SCAFFOLD_CLIENT
and check_scaffold_client in config/validation.py; tests/strategies/test_scaffold_theory.py checks
the corrected fixed point on heterogeneous quadratics).
"""
from __future__ import annotations

import dataclasses
import re
from typing import Dict, Iterable, Optional

import numpy as np

from feddm_hpc import seeding
from feddm_hpc.compression import make_compressor
from feddm_hpc.lr_schedule import round_lr
from feddm_hpc.strategies.aggregate import is_finite
from feddm_hpc.strategies.base import ClientState
from feddm_hpc.strategies.server_opt import FedAvg
from feddm_hpc.strategies.terms import ConstantCorrection

_KEY = re.compile(r"^control/(\d+)$")


def control_delta(c: np.ndarray, start: np.ndarray, local: np.ndarray, steps: int,
                  lr: float) -> np.ndarray:
    """delta c_i = -c + (x - y_i) / (K * eta), in float32 (option II)."""
    scale = np.float32(1.0 / (steps * lr))
    return ((start - local) * scale - c).astype(np.float32)


def control_step(c: np.ndarray, delta_sum: np.ndarray, num_clients: int) -> np.ndarray:
    """c + sum_{i in S} delta c_i / N (delta_sum accumulated in float64, in client-id order)."""
    return (c + (delta_sum / num_clients).astype(np.float32)).astype(np.float32)


class Scaffold(FedAvg):
    name = "scaffold"
    broadcast_vectors = 1          # c, with the model
    upload_names = ("control_delta",)

    def __init__(self, server_cfg, num_params, run_config=None):
        super().__init__(server_cfg, num_params, run_config)
        # Every rank holds c: the root updates it, the others receive it by Bcast each round.
        self.control = np.zeros(num_params, dtype=np.float32)
        self.controls = ClientControls(num_params)
        self.codec = None
        if run_config is not None:
            # delta c_i uses the uplink codec without error feedback: the client commits exactly
            # the decoded delta instead (see the module docstring).
            self.codec = make_compressor(dataclasses.replace(run_config.compression,
                                                             error_feedback=False))

    # ---------------------------------------------------------------- server half

    def server_step(self, global_params, aggregate):
        new = self.apply(global_params, aggregate.mean_update)
        self.update_control(aggregate.extra_sums[0], self.run.federation.num_clients)
        return new

    def update_control(self, delta_sum: np.ndarray, num_clients: int) -> None:
        self.control[:] = control_step(self.control, delta_sum, num_clients)

    def state_dict(self):
        return {"control": self.control}

    def load_state_dict(self, state):
        self.control[:] = np.asarray(state["control"], dtype=np.float32)

    # ---------------------------------------------------------------- client half

    def broadcast(self, comm) -> None:
        comm.bcast_array(self.control)

    def gradient_terms(self, client_id):
        return super().gradient_terms(client_id) + [
            ConstantCorrection(self.controls.correction(self.control, client_id))]

    def client_uploads(self, client_id, round_index, start, local, steps):
        """delta c_i, encoded; the client keeps exactly what the server decodes. A diverged
        client keeps its old c_i, as the root rejects its report."""
        run = self.run
        lr = round_lr(run.client, round_index, run.federation.rounds)
        delta = control_delta(self.control, start, local, steps, lr)
        try:
            payload = self.codec.encode(
                delta, client_id, seeding.numpy_rng(run.seed, seeding.CONTROL_ENCODE, round_index, client_id))
        except ValueError:  # a lossy codec refused it; the update itself was finite (it encoded)
            if is_finite(delta):
                raise
            # Send a zero delta and keep c_i: server and client agree that nothing changed.
            return (self.codec.encode(np.zeros_like(delta), client_id, None),)
        decoded = self.codec.decode(payload, self.num_params)
        if is_finite(decoded) and is_finite(local):
            self.controls.commit(client_id, decoded)
        return (payload,)

    @property
    def client_state(self):
        return self.controls


class ClientControls(ClientState):
    """The c_i of the clients a rank hosts, keyed by client id; zero until a client reports.

    state_dict() names them "control/<client_id>" so the root can merge all ranks' dicts into
    the checkpoint; load_state_dict keeps the clients a rank hosts, whatever rank count wrote it.
    """

    prefix = "control"

    def __init__(self, num_params: int):
        self.num_params = num_params
        self._c: Dict[int, np.ndarray] = {}

    def get(self, client_id: int) -> Optional[np.ndarray]:
        return self._c.get(int(client_id))

    def correction(self, c: np.ndarray, client_id: int) -> np.ndarray:
        ci = self.get(client_id)
        return c.copy() if ci is None else (c - ci).astype(np.float32)

    def commit(self, client_id: int, decoded_delta: np.ndarray) -> None:
        ci = self._c.setdefault(int(client_id), np.zeros(self.num_params, dtype=np.float32))
        ci += decoded_delta

    def state_dict(self) -> Dict[str, np.ndarray]:
        return {f"control/{cid}": v.copy() for cid, v in sorted(self._c.items())}

    def load_state_dict(self, state: Dict[str, np.ndarray],
                        client_ids: Iterable[int] | None = None) -> None:
        wanted = None if client_ids is None else {int(c) for c in client_ids}
        self._c = {}
        for key, value in state.items():
            m = _KEY.match(key)
            if m is None:
                raise ValueError(f"unknown client control key {key!r} (expected 'control/<id>')")
            cid = int(m.group(1))
            if wanted is None or cid in wanted:
                self._c[cid] = np.array(value, dtype=np.float32)
