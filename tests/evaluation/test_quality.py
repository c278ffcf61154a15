"""Sample-quality metrics against cases small enough to work out by hand."""
import numpy as np
import pytest

from feddm_hpc.evaluation import quality
from feddm_hpc.evaluation.quality import (
    class_histogram,
    feature_stats,
    frechet_distance,
    histogram_distance,
    kid,
    precision_recall_density_coverage,
)


def _random_cov(rng, d):
    a = rng.normal(size=(d, d))
    return a @ a.T + 0.1 * np.eye(d)


def test_fd_identical_gaussians_is_zero():
    rng = np.random.default_rng(0)
    mu, s = rng.normal(size=8), _random_cov(rng, 8)
    assert frechet_distance(mu, s, mu, s) == pytest.approx(0.0, abs=1e-8)


def test_fd_one_dimensional_formula():
    # (mu1-mu2)^2 + s1 + s2 - 2 sqrt(s1 s2) = 4 + 4 + 9 - 12 = 5
    assert frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(5.0)
    assert frechet_distance(1.0, 4.0, 3.0, 9.0) == pytest.approx(5.0)  # scalars work too


def test_fd_diagonal_is_sum_over_dimensions():
    mu1, mu2 = np.array([0.0, 1.0]), np.array([2.0, 1.0])
    v1, v2 = np.array([1.0, 4.0]), np.array([4.0, 1.0])
    want = ((mu1 - mu2) ** 2 + v1 + v2 - 2 * np.sqrt(v1 * v2)).sum()  # 4 + 1 + 1 = 6
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(want)
    assert want == pytest.approx(6.0)


def test_fd_non_commuting_2x2_matches_closed_form():
    # For 2x2 matrices with non-negative eigenvalues, tr sqrt(M) = sqrt(tr M + 2 sqrt(det M)).
    s1 = np.array([[2.0, 1.0], [1.0, 1.0]])
    s2 = np.array([[1.0, -0.5], [-0.5, 3.0]])
    m = s1 @ s2
    tr_sqrt = np.sqrt(np.trace(m) + 2 * np.sqrt(np.linalg.det(m)))
    want = np.trace(s1) + np.trace(s2) - 2 * tr_sqrt
    assert frechet_distance(np.zeros(2), s1, np.zeros(2), s2) == pytest.approx(want, rel=1e-10)


def test_fd_symmetric_and_positive():
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    s1, s2 = _random_cov(rng, 5), _random_cov(rng, 5)
    ab, ba = frechet_distance(mu1, s1, mu2, s2), frechet_distance(mu2, s2, mu1, s1)
    assert ab == pytest.approx(ba, rel=1e-10)
    assert ab > 0


def test_fd_singular_covariances_do_not_break():
    # Few samples in many dimensions (or dead ReLU units) give rank-deficient covariances.
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(5, 20)), rng.normal(size=(5, 20))
    a[:, 0] = b[:, 0] = 0.0
    fd = frechet_distance(*feature_stats(a), *feature_stats(b))
    assert np.isfinite(fd) and fd > 0


def test_fd_shape_mismatch_raises():
    with pytest.raises(ValueError):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))


def test_feature_stats_matches_numpy():
    x = np.array([[1.0, 2.0], [3.0, 0.0], [5.0, 4.0]])
    mu, s = feature_stats(x)
    np.testing.assert_allclose(mu, [3.0, 2.0])
    np.testing.assert_allclose(s, [[4.0, 2.0], [2.0, 4.0]])  # unbiased (N-1)
    assert feature_stats(x[:, :1])[1].shape == (1, 1)


def test_kid_hand_computed_one_dimensional():
    # d=1, k(a,b) = (ab+1)^3. x = y = {0, 1}: within-set off-diagonal mean 1 for each set,
    # cross mean (1+1+1+8)/4 = 2.75, so MMD^2 = 1 + 1 - 5.5 = -3.5 (unbiased: can be < 0).
    x = np.array([[0.0], [1.0]])
    mean, std = kid(x, x, subsets=3, subset_size=2)
    assert mean == pytest.approx(-3.5) and std == pytest.approx(0.0)
    # y = {2, 3}: syy = k(2,3) = 343, cross (1+1+27+64)/4 = 23.25 -> 1 + 343 - 46.5 = 297.5
    mean, _ = kid(x, np.array([[2.0], [3.0]]), subsets=1, subset_size=2)
    assert mean == pytest.approx(297.5)


def test_kid_same_distribution_near_zero_shifted_positive():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(400, 16)), rng.normal(size=(400, 16))
    same, same_std = kid(a, b, subsets=20, subset_size=200)
    shifted, _ = kid(a, b + 1.0, subsets=20, subset_size=200)
    assert abs(same) < 3 * same_std + 1e-3
    assert shifted > 10 * abs(same) and shifted > 0.1


def test_kid_is_seeded():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(100, 4)), rng.normal(size=(100, 4))
    kw = dict(subsets=5, subset_size=50, seed=7)
    assert kid(a, b, **kw) == kid(a, b, **kw)
    assert kid(a, b, **kw) != kid(a, b, **{**kw, "seed": 8})


def test_prdc_hand_case_one():
    # k=1. Real radii (distance to nearest other real): 1, 1, 2.
    # Fakes: (0.5,0) sits in two real balls, (10,0) in none, (3,1.5) in the ball of (3,0).
    real = np.array([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0]])
    fake = np.array([[0.5, 0.0], [10.0, 0.0], [3.0, 1.5]])
    r = precision_recall_density_coverage(real, fake, k=1)
    assert r["precision"] == pytest.approx(2 / 3)
    assert r["density"] == pytest.approx((2 + 0 + 1) / 3)
    # Fake radii 2.92, 7.16, 2.92: (0.5,0)'s ball holds every real point.
    assert r["recall"] == pytest.approx(1.0)
    assert r["coverage"] == pytest.approx(1.0)  # nearest fakes 0.5, 0.5, 1.5 < radii 1, 1, 2


def test_prdc_hand_case_two():
    # k=1. Real radii 1, 1, 9; fakes form a tight cluster with radii 0.707 near (0..1, 0).
    real = np.array([[0.0, 0.0], [1.0, 0.0], [10.0, 0.0]])
    fake = np.array([[0.0, 0.5], [1.0, 0.5], [0.5, 0.0]])
    r = precision_recall_density_coverage(real, fake, k=1)
    assert r["precision"] == pytest.approx(1.0)
    assert r["density"] == pytest.approx((1 + 1 + 2) / 3)
    assert r["recall"] == pytest.approx(2 / 3)  # (10,0) is in no fake ball
    assert r["coverage"] == pytest.approx(2 / 3)  # nearest fake to (10,0) is 9.01 > 9
    # Swapping the roles swaps precision and recall.
    s = precision_recall_density_coverage(fake, real, k=1)
    assert s["precision"] == pytest.approx(r["recall"])
    assert s["recall"] == pytest.approx(r["precision"])


def test_prdc_chunking_does_not_change_results(monkeypatch):
    rng = np.random.default_rng(5)
    real, fake = rng.normal(size=(70, 6)), rng.normal(size=(50, 6)) + 0.3
    whole = precision_recall_density_coverage(real, fake, k=3)
    monkeypatch.setattr(quality, "_CHUNK", 16)
    assert precision_recall_density_coverage(real, fake, k=3) == whole


def test_prdc_needs_more_than_k_samples():
    with pytest.raises(ValueError):
        precision_recall_density_coverage(np.zeros((5, 2)), np.zeros((5, 2)), k=5)


def test_class_histogram_and_total_variation():
    np.testing.assert_allclose(class_histogram([0, 0, 1, 3], 4), [0.5, 0.25, 0.0, 0.25])
    assert histogram_distance([0.5, 0.5, 0.0], [0.0, 0.5, 0.5]) == pytest.approx(0.5)
    assert histogram_distance([2, 2, 0], [0, 1, 1]) == pytest.approx(0.5)  # counts normalise
    assert histogram_distance([1, 0], [0, 1]) == pytest.approx(1.0)
    assert histogram_distance([0.3, 0.7], [0.3, 0.7]) == 0.0
    with pytest.raises(ValueError):
        class_histogram([0, 4], 4)
