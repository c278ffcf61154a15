"""A user's server strategy: FedAvg with Nesterov momentum on the server.

With delta the round's weighted mean client update (sum_i p_i (w_i - w), p_i by samples),
beta = server.momentum and lr = server.lr:

    v     <- beta * v + delta
    w     <- w + lr * (beta * v + delta)        (Nesterov's look-ahead; fedavgm uses lr * v)

v starts at zero and is the strategy's server state: `state_dict()` puts it in every checkpoint
and `load_state_dict()` restores it on resume, so a resumed run continues bit-identically, and
the root alone steps it, so the result does not depend on the number of ranks.

Use it without editing feddm_hpc: put the folder holding `examples/` (here the repository root)
on PYTHONPATH on every rank, and name the class by import path:

    PYTHONPATH=$PWD mpiexec -n 2 python -m mpi4py -m feddm_hpc train configs/tiny.yaml \\
        --set federation.algorithm=examples.nesterov_strategy:NesterovServerMomentum \\
        --set server.momentum=0.9

The protocol (feddm_hpc.extend): a Strategy subclass with its own `name`, built as
Cls(server_cfg, num_params, run_config) on every rank, implementing `apply(global, mean_update)`
(or `server_step(global, aggregate)`); the client half (broadcast, gradient_terms, uploads,
client_state) is optional and client.prox_mu keeps working through the base class.

Why not FedNova here: FedNova normalises each client's update by its own number of local steps
tau_i before weighting, which needs the per-client tau_i at the server; the strategy interface
hands the server the weighted mean update and unweighted sums of model-sized extra uploads only,
so FedNova would cost a second model-sized upload per client. With client.local_steps fixed,
every tau_i is equal and FedNova is FedAvg.
"""
import numpy as np

from feddm_hpc.extend import Strategy


class NesterovServerMomentum(Strategy):
    name = "nesterov_momentum"

    def __init__(self, server_cfg, num_params, run_config=None):
        super().__init__(server_cfg, num_params, run_config)
        self.velocity = np.zeros(num_params, dtype=np.float32)

    def apply(self, global_params, mean_update):
        beta = np.float32(self.cfg.momentum)
        self.velocity *= beta
        self.velocity += mean_update
        step = beta * self.velocity + mean_update
        return (global_params + np.float32(self.cfg.lr) * step).astype(np.float32)

    def state_dict(self):
        return {"velocity": self.velocity}

    def load_state_dict(self, state):
        self.velocity = np.array(state["velocity"], dtype=np.float32)
