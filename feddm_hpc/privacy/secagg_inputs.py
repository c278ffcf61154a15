"""What a client puts into its masked vector under secure aggregation, beyond secagg.py's grid:

1. Under DP, codes whose decoded vector provably has L2 norm <= C. Stochastic rounding on the
   public grid moves each coordinate by less than one grid step s = 2r / L, so rounding alone can
   add up to s * sqrt(n) to the norm of n coordinates (an 8-bit grid on [-0.5, 0.5] over 10^6
   coordinates: 3.9, and even the zero vector decodes to norm s/2 * sqrt(n) = 2.0, because 0 lies
   between two grid points). The root cannot clip one client's contribution (it only ever sees
   the sum), so the bound must hold on the client: conditional randomized rounding (Kairouz,
   Liu and Steinke 2021, "The Distributed Discrete Gaussian Mechanism"): shrink the vector so that
   the expected decoded norm fits, redraw the rounding while the decoded norm exceeds C, and after
   a few draws fall back to a shrink that is proven to fit: ||decoded|| < ||x'|| + s * sqrt(n) <= C.
   That needs s * sqrt(n) < C, which `check_grid_fits_clip` demands at start-up. The conditioning
   biases the rounding slightly towards zero; the client's retries never leave the client.

2. The round's statistics as three more ring words, masked with the codes, so the root learns
   the cohort's sums and never one client's value: the loss in fixed point, the sample count and
   whether DP clipped the update. Fixed point: loss * scale with scale = floor((2**32 - 1) /
   (m * LOSS_CAP)) for a cohort of m, so m clients' words cannot wrap the ring; losses are
   clamped to [0, LOSS_CAP) (diffusion MSE losses lie far below it) and a non-finite loss counts
   as LOSS_CAP.
"""
from __future__ import annotations

import math
from typing import Dict

import numpy as np

from feddm_hpc.errors import ConfigError
from feddm_hpc.privacy import secagg

STATS_WORDS = 3           # loss (fixed point), sample count, clipped (0 or 1)
LOSS_CAP = 64.0
RETRIES = 8               # conditional draws before the proven fallback
_SHRINK = 0.9             # each failed draw shrinks the target norm by this factor
_MARGIN = 1.0 - 1e-9      # float64 slack in the fallback's proof


def rounding_bound(n: int, bits: int, clip_range: float) -> float:
    """The largest L2 distance stochastic grid rounding can put between n coordinates and their
    decoded values (each moves by less than one step s): s * sqrt(n)."""
    return secagg.grid_scale(bits, clip_range) * math.sqrt(int(n))


def check_grid_fits_clip(n: int, bits: int, clip_range: float, clip_norm: float) -> None:
    """ConfigError unless the grid's rounding bound is below C, so that every client's decoded
    contribution can be kept within C (the DP sensitivity)."""
    b = rounding_bound(n, bits, clip_range)
    if b >= clip_norm:
        raise ConfigError(
            f"privacy.clip_norm: secure aggregation's {bits}-bit grid on [-{clip_range}, "
            f"{clip_range}] rounds {n:,} coordinates by up to {b:.4g} in L2 norm, not below "
            f"clip_norm={clip_norm}, so a client's contribution could exceed the DP bound; raise "
            f"compression.bits, lower privacy.secagg_range or raise privacy.clip_norm")


def decoded_norm(codes: np.ndarray, bits: int, clip_range: float) -> float:
    """L2 norm of one client's codes as the root's decoding maps them (float64)."""
    return float(np.linalg.norm(secagg.decode_grid_sum(codes, bits, clip_range, 1)))


def encode_grid_bounded(x: np.ndarray, bits: int, clip_range: float, rng: np.random.Generator,
                        norm_bound: float) -> np.ndarray:
    """Codes of x on the public grid whose decoded vector has L2 norm <= norm_bound (see the
    module docstring). Deterministic given rng's state. ValueError for a non-finite x, or where
    the grid cannot fit the bound."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    if not np.isfinite(x).all():
        raise ValueError("update contains NaN or Inf values; it cannot be put on the grid")
    n, s = x.size, secagg.grid_scale(bits, clip_range)
    worst = rounding_bound(n, bits, clip_range)
    if worst >= norm_bound:
        raise ValueError(f"secure aggregation: the grid's rounding bound {worst:.4g} is not "
                         f"below the norm bound {norm_bound}")
    norm = float(np.linalg.norm(np.clip(x, -clip_range, clip_range)))
    # E||decoded||^2 <= ||x||^2 + n s^2 / 4 (the rounding is unbiased, each coordinate's
    # variance at most s^2 / 4): aim the first draw where the expected norm fits.
    target = math.sqrt(max(norm_bound ** 2 - n * s * s / 4.0, 0.0))
    for _ in range(RETRIES):
        factor = 1.0 if norm <= target else target / norm
        codes = secagg.encode_grid(x * factor, bits, clip_range, rng)
        if decoded_norm(codes, bits, clip_range) <= norm_bound:
            return codes
        target *= _SHRINK
    factor = min(1.0, (norm_bound - worst) * _MARGIN / norm) if norm > 0 else 1.0
    codes = secagg.encode_grid(x * factor, bits, clip_range, rng)
    assert decoded_norm(codes, bits, clip_range) <= norm_bound, "grid rounding bound violated"
    return codes


def loss_scale(cohort_size: int) -> int:
    """Fixed-point scale of the loss word for a cohort of m: m words of LOSS_CAP * scale fit
    in the ring."""
    return max(1, int((2 ** secagg.RING_BITS - 1) // (max(1, int(cohort_size)) * LOSS_CAP)))


def stats_words(loss: float, num_samples: int, clipped: bool, cohort_size: int) -> np.ndarray:
    """The three statistics words one client appends to its codes before masking."""
    loss = float(loss)
    loss = LOSS_CAP if not math.isfinite(loss) else min(max(loss, 0.0), LOSS_CAP)
    fixed = min(int(round(loss * loss_scale(cohort_size))), int(LOSS_CAP * loss_scale(cohort_size)))
    return np.array([fixed, int(num_samples), int(bool(clipped))], dtype=secagg.RING_DTYPE)


def read_stats(words: np.ndarray, survivors: int, cohort_size: int) -> Dict[str, object]:
    """The cohort statistics the root reads from the unmasked sum's last STATS_WORDS words."""
    loss_sum, samples, clipped = (int(w) for w in np.asarray(words)[-STATS_WORDS:])
    return {"train_loss": loss_sum / loss_scale(cohort_size) / survivors if survivors else None,
            "num_samples": samples, "clipped": clipped}
