"""How the global model reaches the clients each round (compression.downlink).

none:  Bcast of the float32 global vector; clients start from the global model itself.
quant: the server keeps the reference model the clients hold. Each round it encodes
       (global - reference), broadcasts the payload (its size, then the uint8 bytes), and every
       rank, the root included, runs the same decode and the same float32 add:
       reference += decode(payload). So server and clients stay bit-for-bit in sync, clients
       train from the reference, and the quantization error of one round is part of the next
       round's difference (it never accumulates). The reference is checkpointed for exact resume.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, Tuple

import numpy as np

from feddm_hpc.compression import make_compressor


class Downlink:
    def __init__(self, comp_cfg, global_params: np.ndarray):
        """`global_params`: the server's global vector, updated in place by the caller; a
        restored run without a reference starts from it (load_state_dict)."""
        self.n = global_params.size
        self._global = global_params
        self.codec = None
        self.reference = None
        if comp_cfg.downlink != "none":
            # Round-to-nearest, no error feedback: the reference already carries the error over.
            self.codec = make_compressor(dataclasses.replace(
                comp_cfg, uplink="quant", bits=comp_cfg.downlink_bits, stochastic_rounding=False,
                error_feedback=False))
            self.reference = global_params.astype(np.float32, copy=True)

    def send(self, comm, global_params: np.ndarray) -> Tuple[np.ndarray, int]:
        """Collective. Returns (the vector clients train from, bytes each client received)."""
        if self.codec is None:
            comm.bcast_array(global_params)
            return global_params, 4 * self.n
        if comm.rank == 0:
            payload = self.codec.encode(global_params - self.reference, 0, None)
            size = np.array([payload.size], dtype=np.int64)
        else:
            size = np.zeros(1, dtype=np.int64)
        comm.bcast_array(size)
        if comm.rank != 0:
            payload = np.empty(int(size[0]), dtype=np.uint8)
        comm.bcast_array(payload)
        self.reference += self.codec.decode(payload, self.n)
        return self.reference, int(payload.size)

    def state_dict(self) -> Dict[str, np.ndarray]:
        return {} if self.reference is None else {"reference": self.reference}

    def load_state_dict(self, state: Dict[str, np.ndarray]) -> None:
        """A checkpoint without a reference (downlink switched on at resume) starts from the
        global model (restore it first): the clients then hold exactly what the server has."""
        if self.reference is not None:
            self.reference[:] = state.get("reference", self._global)
