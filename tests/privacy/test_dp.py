"""Client-level DP mechanism: clipping worked by hand (bit-identical below the bound, float64
norms, non-finite updates let through), the noise's std against z*C on a large draw and its
seeded stream, and the noised mean's fixed denominator."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from feddm_hpc import seeding
from feddm_hpc.privacy import dp

SEED, ROUND = 1234, 7


# -- clip_update ----------------------------------------------------------------------------------

def test_clip_scales_3_4_to_unit_norm():
    out, norm = dp.clip_update(np.array([3.0, 4.0], dtype=np.float32), 1.0)
    assert norm == 5.0
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, np.array([0.6, 0.8], dtype=np.float32))


@pytest.mark.parametrize("clip_norm", [10.0, 5.0])  # 5.0: exactly on the bound is not clipped
def test_update_within_the_bound_comes_back_bit_for_bit(clip_norm):
    update = np.array([3.0, 4.0], dtype=np.float32)
    out, norm = dp.clip_update(update, clip_norm)
    assert norm == 5.0
    assert out.dtype == np.float32 and out.tobytes() == update.tobytes()
    assert not np.shares_memory(out, update)  # a copy: the caller may own the input


def test_zero_update_is_fine():
    out, norm = dp.clip_update(np.zeros(5, dtype=np.float32), 0.5)
    assert norm == 0.0
    np.testing.assert_array_equal(out, np.zeros(5, dtype=np.float32))


def test_clipped_update_keeps_shape_direction_and_norm_c():
    rng = np.random.default_rng(0)
    update = rng.standard_normal((3, 1000)).astype(np.float32)
    before = update.copy()
    out, norm = dp.clip_update(update, 2.0)
    np.testing.assert_array_equal(update, before)  # the input is left alone
    assert out.shape == update.shape and out.dtype == np.float32
    assert norm == pytest.approx(np.linalg.norm(update.astype(np.float64)), rel=1e-12)
    assert dp.update_norm(out) == pytest.approx(2.0, rel=1e-6)  # float32 rounding only
    np.testing.assert_allclose(out, update * (2.0 / norm), rtol=1e-6)


def test_float64_stays_float64_and_integers_become_float64():
    out64, _ = dp.clip_update(np.array([3.0, 4.0]), 1.0)
    assert out64.dtype == np.float64
    np.testing.assert_allclose(out64, [0.6, 0.8], rtol=1e-15)
    out_int, norm = dp.clip_update(np.array([3, 4]), 10.0)
    assert out_int.dtype == np.float64 and norm == 5.0
    np.testing.assert_array_equal(out_int, [3.0, 4.0])


def test_norm_is_accumulated_in_float64():
    x = np.random.default_rng(1).standard_normal(100_000).astype(np.float32)
    exact = math.sqrt(math.fsum(v * v for v in x.astype(np.float64).tolist()))
    assert dp.update_norm(x) == pytest.approx(exact, rel=1e-13)
    # ... where float32 squares and sums would be off by far more, so the check has teeth.
    assert abs(float(np.sqrt(np.dot(x, x))) / exact - 1) > 1e-10


def test_huge_finite_update_is_still_clipped():
    # Squares above float64's range: the norm must not overflow to inf (taken as non-finite).
    out, norm = dp.clip_update(np.array([1e200, 1e200]), 1.0)
    assert norm == pytest.approx(math.sqrt(2) * 1e200, rel=1e-15)
    np.testing.assert_allclose(out, [math.sqrt(0.5)] * 2, rtol=1e-15)


@pytest.mark.parametrize("bad, norm_is", [(np.inf, math.isinf), (np.nan, math.isnan)])
def test_non_finite_update_is_returned_unchanged_without_warnings(bad, norm_is):
    update = np.array([bad, 1.0, -2.0], dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out, norm = dp.clip_update(update, 1.0)
    assert norm_is(norm)
    assert out.tobytes() == update.tobytes()


@pytest.mark.parametrize("clip_norm", [0.0, -1.0, math.nan, math.inf])
def test_clip_norm_must_be_positive_and_finite(clip_norm):
    with pytest.raises(ValueError, match="clip_norm"):
        dp.clip_update(np.ones(2), clip_norm)


# -- gaussian_noise and its seeded stream --------------------------------------------------------------

def test_noise_std_is_z_times_c():
    z, c, n = 1.3, 0.7, 400_000
    noise = dp.gaussian_noise(n, c, z, dp.noise_rng(SEED, ROUND))
    assert noise.dtype == np.float64 and noise.shape == (n,)
    sigma = z * c
    # Standard errors: sigma / sqrt(n) for the mean, sigma / sqrt(2n) for the std; 5 of each.
    assert abs(noise.mean()) < 5 * sigma / math.sqrt(n)
    assert abs(noise.std() / sigma - 1) < 5 / math.sqrt(2 * n)


def test_noise_is_reproducible_from_seed_and_round():
    def draw(seed, rnd):
        return dp.gaussian_noise(1000, 1.0, 1.0, dp.noise_rng(seed, rnd))

    np.testing.assert_array_equal(draw(SEED, ROUND), draw(SEED, ROUND))
    assert not np.array_equal(draw(SEED, ROUND), draw(SEED, ROUND + 1))
    assert not np.array_equal(draw(SEED, ROUND), draw(SEED + 1, ROUND))
    # The stream is seeding's (seed, DP_NOISE, round), scaled by z*C: pinned, so runs stay comparable.
    expected = seeding.numpy_rng(SEED, seeding.DP_NOISE, ROUND).standard_normal(1000) * (1.5 * 0.2)
    np.testing.assert_array_equal(dp.gaussian_noise(1000, 0.2, 1.5, dp.noise_rng(SEED, ROUND)), expected)


def test_dp_noise_is_a_new_purpose():
    purposes = [v for k, v in vars(seeding).items() if k.isupper() and isinstance(v, int)]
    assert seeding.DP_NOISE == 14 and purposes.count(14) == 1


def test_zero_noise_multiplier_gives_zeros():
    np.testing.assert_array_equal(dp.gaussian_noise(4, 1.0, 0.0, dp.noise_rng(SEED, 0)), np.zeros(4))


@pytest.mark.parametrize("args", [(-1, 1.0, 1.0), (3, 0.0, 1.0), (3, 1.0, -0.5), (3, 1.0, math.nan)])
def test_noise_arguments_are_checked(args):
    with pytest.raises(ValueError):
        dp.gaussian_noise(*args, np.random.default_rng(0))


# -- noised_mean ------------------------------------------------------------------------------------

def test_noised_mean_without_noise_divides_by_the_cohort_size():
    # Three clients reported out of a cohort of four: the denominator stays four.
    total = np.array([2.0, 4.0, -6.0], dtype=np.float32)
    mean = dp.noised_mean(total, 4, 1.0, 0.0, np.random.default_rng(0))
    assert mean.dtype == np.float64
    np.testing.assert_array_equal(mean, [0.5, 1.0, -1.5])


def test_noised_mean_with_a_known_generator():
    total = np.array([[1.0, -2.0], [0.5, 3.0]])
    z, c, m = 0.8, 2.5, 5
    draws = np.random.default_rng(42).standard_normal(4)
    expected = (total + (draws * (z * c)).reshape(2, 2)) / m
    got = dp.noised_mean(total, m, c, z, np.random.default_rng(42))
    np.testing.assert_allclose(got, expected, rtol=1e-15, atol=0)
    assert got.shape == (2, 2)


def test_noised_mean_needs_a_cohort():
    with pytest.raises(ValueError, match="cohort_size"):
        dp.noised_mean(np.zeros(2), 0, 1.0, 1.0, np.random.default_rng(0))
