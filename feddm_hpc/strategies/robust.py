"""Byzantine-robust aggregation rules as pure functions on the accepted clients' updates.

Every rule takes `updates`, a 2-D float array of shape (k, n) whose rows are the decoded updates
in ascending client-id order, and returns a RobustResult holding a float64 vector of length n.
Only `mean` uses the client weights (sample counts): the robust rules are unweighted on purpose,
since a Byzantine client could otherwise claim a huge sample count and buy back its influence.

Invariants:
- the result is a function of the array contents and row order only (no RNG, no rank layout,
  no thread count: reductions are numpy loops in a fixed order, never a threaded BLAS call);
- row order matters only where scores tie exactly: krum/multi_krum then prefer the lowest row;
- float64 temporaries are bounded to about k x _CHUNK values, so n ~ 1e6 with k ~ 64 never
  materializes a float64 copy of all updates, let alone a (k, k, n) array of differences.

Inputs are assumed finite: the server rejects non-finite updates before aggregation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Tuple

import numpy as np

AGGREGATION_RULES = ("mean", "median", "trimmed_mean", "krum", "multi_krum")

# Columns per float64 block: k=64 rows x 2^15 columns x 8 bytes = 16 MiB of temporaries.
_CHUNK = 1 << 15


@dataclass(frozen=True)
class RobustResult:
    """The aggregate and the rows (indices into `updates`, ascending) that entered it.

    selected_rows is every row for mean/median/trimmed_mean (each row can move each
    coordinate) and the chosen rows for krum/multi_krum, so the metrics can log who was picked.
    """
    vector: np.ndarray              # float64, shape (n,)
    selected_rows: Tuple[int, ...]


def _check_updates(updates: np.ndarray) -> int:
    """k, the number of rows; a rule needs at least one update."""
    if updates.ndim != 2:
        raise ValueError(f"updates must be a 2-D (clients, params) array, got shape {updates.shape}")
    if updates.shape[0] == 0:
        raise ValueError("no client update to aggregate")
    return int(updates.shape[0])


def _all_rows(k: int) -> Tuple[int, ...]:
    return tuple(range(k))


def _blocks(updates: np.ndarray) -> Iterator[Tuple[slice, np.ndarray]]:
    """(column slice, float64 copy of those columns): per-coordinate rules work block by block."""
    n = updates.shape[1]
    for start in range(0, n, _CHUNK):
        cols = slice(start, min(start + _CHUNK, n))
        # C order whatever the input's layout: numpy sums a contiguous axis pairwise but a
        # strided one row by row, and the bits must depend on the contents only.
        yield cols, np.ascontiguousarray(updates[:, cols], dtype=np.float64)


def _columnwise(updates: np.ndarray, rule: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Applies a per-coordinate rule (k, c) -> (c,) to every column block; blocks are independent,
    so the result does not depend on _CHUNK."""
    out = np.empty(updates.shape[1], dtype=np.float64)
    for cols, block in _blocks(updates):
        out[cols] = rule(block)
    return out


def mean(updates: np.ndarray, weights: np.ndarray) -> RobustResult:
    """sum_i w_i u_i / sum_i w_i, accumulated in float64 in row order (as WeightedSum does)."""
    k = _check_updates(updates)
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != (k,):
        raise ValueError(f"weights must have shape ({k},) to match the updates, got {weights.shape}")
    if not np.all(np.isfinite(weights)) or np.any(weights < 0):
        raise ValueError("weights must be finite and non-negative")
    total_weight = float(weights.sum())
    if total_weight <= 0:
        raise ValueError("the client weights sum to zero")
    total = np.zeros(updates.shape[1], dtype=np.float64)
    for row, weight in zip(updates, weights):   # one row at a time: the order is fixed
        total += weight * row.astype(np.float64)
    return RobustResult(total / total_weight, _all_rows(k))


def coordinate_median(updates: np.ndarray) -> RobustResult:
    """Per-coordinate median with np.median semantics (even k: mean of the two middle values).

    Computed in float64, so the mean of the two middle float32 values is not rounded to float32.
    """
    k = _check_updates(updates)
    return RobustResult(_columnwise(updates, lambda block: np.median(block, axis=0)), _all_rows(k))


def trim_count(trim_fraction: float, k: int) -> int:
    """floor(trim_fraction * k): how many values each side of each coordinate are dropped."""
    if not 0.0 <= trim_fraction < 0.5:
        raise ValueError(f"trim_fraction must be in [0, 0.5), got {trim_fraction}")
    trimmed = math.floor(trim_fraction * k)
    if k - 2 * trimmed < 1:
        # Unreachable for exact arithmetic (t < k/2), kept against rounding of trim_fraction * k.
        raise ValueError(f"trim_fraction {trim_fraction} drops all {k} updates; nothing would remain")
    return trimmed


def trimmed_mean(updates: np.ndarray, trim_fraction: float) -> RobustResult:
    """Coordinate-wise trimmed mean (Yin et al. 2018): per coordinate, drop the
    floor(trim_fraction * k) smallest and largest values and average the k - 2t that remain.

    trim_fraction = 0 is the unweighted mean.
    """
    k = _check_updates(updates)
    t = trim_count(trim_fraction, k)

    def rule(block: np.ndarray) -> np.ndarray:
        kept = np.sort(block, axis=0)[t:k - t]
        return kept.sum(axis=0) / (k - 2 * t)

    return RobustResult(_columnwise(updates, rule), _all_rows(k))


def _check_byzantine(num_byzantine: int, k: int) -> int:
    """Krum's guarantee needs k > 2f + 2, i.e. at least one neighbour in every score."""
    if num_byzantine < 0:
        raise ValueError(f"num_byzantine must be >= 0, got {num_byzantine}")
    if k <= 2 * num_byzantine + 2:
        raise ValueError(f"krum needs k > 2 * num_byzantine + 2 updates: num_byzantine = "
                         f"{num_byzantine} needs at least {2 * num_byzantine + 3}, got k = {k}")
    return int(num_byzantine)


def squared_distances(updates: np.ndarray) -> np.ndarray:
    """The (k, k) float64 matrix of squared L2 distances between rows.

    Differences are formed directly (not via the Gram form |a|^2 + |b|^2 - 2ab, which cancels
    catastrophically for close updates of large norm), one row against the later rows per
    column block: O(k * _CHUNK) memory. Each pair is computed once and mirrored, so the matrix
    is exactly symmetric and identical rows are at distance exactly 0.
    """
    k = updates.shape[0]
    dist = np.zeros((k, k), dtype=np.float64)
    for _, block in _blocks(updates):
        for i in range(k - 1):
            diff = block[i + 1:] - block[i]
            dist[i, i + 1:] += np.einsum("ij,ij->i", diff, diff)
    return dist + dist.T


def krum_scores(updates: np.ndarray, num_byzantine: int) -> np.ndarray:
    """score_i = sum of the squared distances from row i to its k - f - 2 nearest other rows."""
    k = _check_updates(updates)
    f = _check_byzantine(num_byzantine, k)
    dist = squared_distances(updates)
    neighbours = k - f - 2
    scores = np.empty(k, dtype=np.float64)
    for i in range(k):
        others = np.delete(dist[i], i)
        scores[i] = np.sort(others)[:neighbours].sum()
    return scores


def _lowest_scores(scores: np.ndarray, count: int) -> Tuple[int, ...]:
    """The `count` rows with the lowest scores, ascending; a stable sort breaks exact ties by
    the lower row, i.e. the lower client id."""
    order = np.argsort(scores, kind="stable")[:count]
    return tuple(sorted(int(r) for r in order))


def krum(updates: np.ndarray, num_byzantine: int) -> RobustResult:
    """Krum (Blanchard et al. 2017): the single update with the lowest score (ties: lowest row),
    returned unchanged (as float64). Requires k > 2 * num_byzantine + 2."""
    scores = krum_scores(updates, num_byzantine)
    rows = _lowest_scores(scores, 1)
    return RobustResult(updates[rows[0]].astype(np.float64), rows)


def multi_krum(updates: np.ndarray, num_byzantine: int, num_selected: int) -> RobustResult:
    """Multi-Krum: the unweighted mean of the num_selected lowest-score updates, summed in
    ascending row order. num_selected = 1 is krum.

    num_selected is limited to k - num_byzantine: any more would have to include a Byzantine
    update whenever num_byzantine of them are present.
    """
    scores = krum_scores(updates, num_byzantine)
    k = len(scores)
    if not 1 <= num_selected <= k - num_byzantine:
        raise ValueError(f"num_selected must be in [1, k - num_byzantine] = [1, {k - num_byzantine}]"
                         f" (k = {k}, num_byzantine = {num_byzantine}), got {num_selected}")
    rows = _lowest_scores(scores, num_selected)
    total = np.zeros(updates.shape[1], dtype=np.float64)
    for r in rows:
        total += updates[r].astype(np.float64)
    return RobustResult(total / len(rows), rows)


def robust_aggregate(rule: str, updates: np.ndarray, weights: Optional[np.ndarray], *,
                     trim_fraction: float, num_byzantine: int, num_selected: int) -> RobustResult:
    """Dispatches on `rule` (one of AGGREGATION_RULES); each rule reads only its own options."""
    if rule == "mean":
        return mean(updates, weights)
    if rule == "median":
        return coordinate_median(updates)
    if rule == "trimmed_mean":
        return trimmed_mean(updates, trim_fraction)
    if rule == "krum":
        return krum(updates, num_byzantine)
    if rule == "multi_krum":
        return multi_krum(updates, num_byzantine, num_selected)
    raise ValueError(f"aggregation rule {rule!r} is not one of {', '.join(AGGREGATION_RULES)}")
