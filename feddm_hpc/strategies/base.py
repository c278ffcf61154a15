"""The Strategy interface: both halves of a federated algorithm.

Server half: `server_step` moves the global model with the round's aggregate (by default
`apply` on the weighted mean update); `state_dict` is the strategy's checkpointed server state.
Client half: what the clients receive besides the model (`broadcast`, `broadcast_vectors`),
the gradient terms a client adds to its local objective (`gradient_terms`), the extra vectors a
client uploads besides its update (`upload_names`, `client_uploads`, encoded by the strategy
with the codec it chooses) and the per-client state it keeps (`client_state`). The simulation,
the server module and the transports call these and never name a strategy.

Every strategy honours client.prox_mu (FedProx's proximal term, terms.ProximalTerm); `fedprox`
is FedAvg on the server with that term documented as its defining part.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from feddm_hpc.strategies.terms import GradientTerm, proximal_terms


class Strategy:
    name = "base"
    broadcast_vectors = 0              # float32 vectors of the model's size sent with the model
    upload_names: Tuple[str, ...] = ()  # vectors a client uploads besides its update

    def __init__(self, server_cfg, num_params: int, run_config=None):
        self.cfg = server_cfg
        self.num_params = num_params
        self.run = run_config          # the whole Config; needed by the client half only

    # ---------------------------------------------------------------- server half

    def apply(self, global_params: np.ndarray, mean_update: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def server_step(self, global_params: np.ndarray, aggregate) -> np.ndarray:
        """The new global vector from the round's Aggregate (server.Aggregate)."""
        return self.apply(global_params, aggregate.mean_update)

    def state_dict(self) -> Dict[str, np.ndarray]:
        return {}

    def load_state_dict(self, state: Dict[str, np.ndarray]) -> None:
        if state:
            raise ValueError(f"strategy {self.name} has no state, got {sorted(state)}")

    # ---------------------------------------------------------------- client half

    def broadcast(self, comm) -> None:
        """Collective, after the model's broadcast: what every rank's clients need besides it."""

    def gradient_terms(self, client_id: int) -> List[GradientTerm]:
        """Terms added to client `client_id`'s gradients this round."""
        return proximal_terms(self.run.client) if self.run is not None else []

    def client_uploads(self, client_id: int, round_index: int, start: np.ndarray,
                       local: np.ndarray, steps: int) -> Tuple[np.ndarray, ...]:
        """The encoded extra uploads (uint8 payloads, in upload_names order) of a client whose
        update encoded; the strategy may update the client's own state here."""
        return ()

    @property
    def client_state(self) -> Optional["ClientState"]:
        """Per-client state kept on the rank hosting the client (checkpointed), or None."""
        return None


class ClientState:
    """Per-client arrays kept by the rank that hosts each client, checkpointed as '<prefix>/<id>'."""

    prefix = ""

    def state_dict(self) -> Dict[str, np.ndarray]:
        raise NotImplementedError

    def load_state_dict(self, state: Dict[str, np.ndarray], client_ids: Optional[Sequence[int]] = None) -> None:
        raise NotImplementedError
