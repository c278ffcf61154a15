"""Aggregation math as pure functions on arrays (tested against hand-computed values)."""
from __future__ import annotations

from typing import Iterable, Tuple

import numpy as np


class WeightedSum:
    """Streaming weighted sum in float64: decode-and-accumulate keeps root memory at one vector.

    Callers add updates in client-id order, so the float result does not depend on how clients
    were spread over ranks.
    """

    def __init__(self, num_params: int):
        self.total = np.zeros(num_params, dtype=np.float64)
        self.weight = 0.0
        self.count = 0

    def add(self, update: np.ndarray, weight: float) -> None:
        self.total += weight * update.astype(np.float64, copy=False)
        self.weight += weight
        self.count += 1

    def mean(self) -> np.ndarray:
        if self.weight <= 0:
            raise ValueError("no client update to aggregate")
        return (self.total / self.weight).astype(np.float32)


def weighted_mean(pairs: Iterable[Tuple[np.ndarray, float]]) -> np.ndarray:
    """FedAvg: sum_i w_i u_i / sum_i w_i, accumulated in float64, returned as float32."""
    acc = None
    for update, weight in pairs:
        if acc is None:
            acc = WeightedSum(update.size)
        acc.add(update, weight)
    if acc is None:
        raise ValueError("no client update to aggregate")
    return acc.mean()


def is_finite(x: np.ndarray) -> bool:
    """One float64 sum: NaN/Inf propagate, and a sum of finite float32 values cannot overflow."""
    return bool(np.isfinite(x.sum(dtype=np.float64)))
