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

    @classmethod
    def stacked(cls, column: Sequence["GradientTerm"], stacked: Sequence[torch.Tensor]):
        """This kind of term of every client of a group (`column`, one per client, in row order)
        as one term acting on the group's stacked parameters [G, ...] (federation/client_groups.py),
        so the group trainer needs no term by name; a kind without one cannot train in groups."""
        raise ValueError(f"no vectorized form of gradient term {cls.__name__}")


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

    @classmethod
    def stacked(cls, column, stacked):
        mus = {t.mu for t in column}
        if len(mus) != 1:
            raise ValueError("clients of one group must share the proximal mu")
        return StackedProximal(mus.pop(), stacked)


class StackedProximal:
    """FedProx's mu (w - w_global) on stacked rows: every client's anchor is the same global model."""

    def __init__(self, mu: float, stacked: Sequence[torch.Tensor]):
        self.mu = mu
        self.anchor = [p.detach().clone() for p in stacked]

    def add_to(self, stacked):
        for p, a in zip(stacked, self.anchor):
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

    @classmethod
    def stacked(cls, column, stacked):
        return StackedCorrection([t.vector for t in column], stacked)


class StackedCorrection:
    """SCAFFOLD's fixed c - c_i, one row per client."""

    def __init__(self, vectors: Sequence[np.ndarray], stacked: Sequence[torch.Tensor]):
        matrix = torch.from_numpy(np.ascontiguousarray(np.stack(vectors), dtype=np.float32))
        matrix = matrix.to(stacked[0].device)
        self.parts, offset = [], 0
        for p in stacked:
            n = p[0].numel()
            self.parts.append(matrix[:, offset:offset + n].reshape(p.shape))
            offset += n

    def add_to(self, stacked):
        for p, c in zip(stacked, self.parts):
            p.grad.add_(c)


def proximal_terms(client_cfg) -> List[GradientTerm]:
    """The proximal term of client.prox_mu (none at mu 0)."""
    return [ProximalTerm(client_cfg.prox_mu)] if client_cfg.prox_mu > 0 else []

