"""Gradient terms a strategy adds to its clients' local objective (torch side, per local step).

A term is told the model's parameters once per client, right after the global vector is loaded
(`begin`), and adds its gradient to every step's `p.grad` before clipping (`add_to`), as if it
were part of the loss. The local trainer applies a strategy's terms in list order and knows no
strategy by name.
"""
from __future__ import annotations

from typing import List, Sequence

import numpy as np
import torch


def per_param(vector: np.ndarray, params: Sequence[torch.Tensor]) -> List[torch.Tensor]:
    """A flat float32 vector as tensors shaped like `params`, on their device (views of one copy)."""
    flat = torch.from_numpy(np.ascontiguousarray(vector, dtype=np.float32)).to(params[0].device)
    out, offset = [], 0
    for p in params:
        out.append(flat[offset:offset + p.numel()].view_as(p))
        offset += p.numel()
    return out


class GradientTerm:
    def begin(self, params: Sequence[torch.Tensor]) -> None:
        pass

    def add_to(self, params: Sequence[torch.Tensor]) -> None:
        raise NotImplementedError


class ProximalTerm(GradientTerm):
    """FedProx: the gradient of mu/2 ||w - w_global||^2 is mu (w - w_global), added directly
    (cheaper than a loss term and exact); w_global is the model the client started from."""

    def __init__(self, mu: float):
        self.mu = mu
        self._anchor: List[torch.Tensor] = []

    def begin(self, params):
        self._anchor = [p.detach().clone() for p in params]

    def add_to(self, params):
        for p, a in zip(params, self._anchor):
            p.grad.add_(p - a, alpha=self.mu)


class ConstantCorrection(GradientTerm):
    """A fixed vector added to every step's gradient (SCAFFOLD's c - c_i)."""

    def __init__(self, vector: np.ndarray):
        self.vector = vector
        self._parts: List[torch.Tensor] = []

    def begin(self, params):
        self._parts = per_param(self.vector, params)

    def add_to(self, params):
        for p, c in zip(params, self._parts):
            p.grad.add_(c)


def proximal_terms(client_cfg) -> List[GradientTerm]:
    """The proximal term of client.prox_mu (none at mu 0)."""
    return [ProximalTerm(client_cfg.prox_mu)] if client_cfg.prox_mu > 0 else []

