"""Client-level differential privacy, the mechanism of DP-FedAvg (McMahan et al. 2018, "Learning
Differentially Private Recurrent Language Models"): every client's update is clipped to L2 norm
at most C before it leaves the client, the root adds Gaussian noise of std z*C to the sum of the
clipped updates, and divides by the fixed cohort size m.

Why this is private: replacing one client's data changes at most one clipped update, u -> u', so
the sum moves by ||u - u'||_2 <= 2C (the replace-one sensitivity, see
feddm_hpc.privacy.accounting) and the mean by 2C / m. The noise is calibrated to C, so z is the
noise multiplier in DP-FedAvg's sense; the accountant translates it into the guarantee.

Every function here is pure apart from the generator it is handed; the noise of round r comes
from `noise_rng(seed, r)`, a stream of its own (seeding.DP_NOISE), so adding noise never shifts
any other random draw and a resumed run draws the same noise.
"""

from __future__ import annotations

import numpy as np

from feddm_hpc import seeding


def noise_rng(seed: int, round_index: int) -> np.random.Generator:
    """The generator of round `round_index`'s server noise; drawn on the root only."""
    return seeding.numpy_rng(seed, seeding.DP_NOISE, round_index)


def update_norm(update: np.ndarray) -> float:
    """L2 norm of an update of any shape, accumulated in float64 (a float32 sum of squares of
    millions of values loses digits, and the norm decides whether a client is clipped).

    Invariant: the norm is NaN or Inf only for an update holding NaN or Inf, or one whose norm
    lies beyond float64's range (~1.8e308); the squares of large values cannot overflow it."""
    flat = np.asarray(update).reshape(-1).astype(np.float64, copy=False)
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is handled just below
        norm = float(np.sqrt(np.dot(flat, flat)))
    if norm == np.inf and np.isfinite(flat).all():
        # The squares overflowed (values above ~1e154): a finite update must still get a finite
        # norm, or clip_update would take it for a non-finite one and let it through unclipped.
        peak = float(np.max(np.abs(flat)))
        norm = peak * float(np.linalg.norm(flat / peak))
    return norm


def clip_update(update: np.ndarray, clip_norm: float) -> tuple[np.ndarray, float]:
    """(the update scaled by min(1, C / ||update||_2), its L2 norm before clipping).

    Invariants: the result is a new array of the input's shape and floating dtype (float32 in,
    float32 out; a non-float input comes back float64); its norm is at most C up to the rounding
    of that dtype; an update with norm <= C, the zero vector included, comes back bit for bit.
    An update holding NaN or Inf also comes back unchanged, with its non-finite norm: scaling it
    would only spread the NaN, and the server rejects non-finite updates itself.
    """
    clip_norm = _positive(clip_norm, "clip_norm")
    update = np.asarray(update)
    dtype = update.dtype if np.issubdtype(update.dtype, np.floating) else np.dtype(np.float64)
    norm = update_norm(update)
    if not np.isfinite(norm) or norm <= clip_norm:
        return update.astype(dtype, copy=True), norm
    # Scale in float64 and round once to the output dtype, rather than rounding the factor first.
    scaled = update.astype(np.float64, copy=False) * (clip_norm / norm)
    return scaled.astype(dtype, copy=False), norm


def gaussian_noise(num_params: int, clip_norm: float, noise_multiplier: float,
                   rng: np.random.Generator) -> np.ndarray:
    """num_params independent N(0, (z*C)^2) values in float64 (the noise of one round's sum).

    z = 0 gives zeros without drawing (no privacy: the accountant reports epsilon = inf).
    """
    num_params = int(num_params)
    if num_params < 0:
        raise ValueError(f"num_params must be >= 0, got {num_params}")
    clip_norm = _positive(clip_norm, "clip_norm")
    noise_multiplier = _non_negative(noise_multiplier, "noise_multiplier")
    if noise_multiplier == 0.0:
        return np.zeros(num_params, dtype=np.float64)
    return rng.standard_normal(num_params, dtype=np.float64) * (noise_multiplier * clip_norm)


def noised_mean(update_sum: np.ndarray, cohort_size: int, clip_norm: float,
                noise_multiplier: float, rng: np.random.Generator) -> np.ndarray:
    """(sum of the clipped updates + N(0, (z*C)^2 I)) / cohort_size, in float64.

    The denominator is the fixed cohort size m (the clients sampled this round), not the number
    that reported: a count of reporters would itself depend on the clients' data and behaviour,
    whereas with m fixed and public the mean is the noised sum times a constant, so its
    sensitivity is that of the sum divided by m (C / m per clipped update, 2C / m under the
    replace-one relation the accountant uses). Missing clients thus pull the mean towards zero,
    as in DP-FedAvg's fixed-denominator estimator.
    """
    cohort_size = int(cohort_size)
    if cohort_size < 1:
        raise ValueError(f"cohort_size must be >= 1, got {cohort_size}")
    total = np.asarray(update_sum, dtype=np.float64)
    noise = gaussian_noise(total.size, clip_norm, noise_multiplier, rng).reshape(total.shape)
    return (total + noise) / cohort_size


def _positive(value: float, name: str) -> float:
    value = float(value)
    if not (np.isfinite(value) and value > 0.0):
        raise ValueError(f"{name} must be finite and > 0, got {value}")
    return value


def _non_negative(value: float, name: str) -> float:
    value = float(value)
    if not (np.isfinite(value) and value >= 0.0):
        raise ValueError(f"{name} must be finite and >= 0, got {value}")
    return value
