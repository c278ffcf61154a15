"""Sample-quality metrics on feature vectors: pure numpy, no torch, no I/O.

All functions take features as float arrays [N, D] (any feature space; see features.py for the
LeNet one used offline). Everything is computed in float64: FD subtracts large, nearly equal
traces, and float32 there gives visible noise at FD values below ~1.

Every metric here depends on the sample count N, so compare numbers only at equal N.
"""
from __future__ import annotations

import numpy as np

# Rows of the real set per block in the pairwise distance loops: a block of 1024 rows against
# 10k columns is 80 MB in float64, which keeps memory bounded for any N.
_CHUNK = 1024


def feature_stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and unbiased covariance [D, D] of features [N, D] (N >= 2), in float64."""
    x = np.asarray(feats, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"feature_stats needs features [N>=2, D], got shape {x.shape}")
    return x.mean(axis=0), np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1])


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    # Covariances are symmetric PSD, so eigh is exact enough and, unlike a general sqrtm, never
    # returns complex parts. Tiny negative eigenvalues are rounding error: clip them to zero.
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1, s1, mu2, s2) -> float:
    """Fréchet distance between N(mu1, s1) and N(mu2, s2):
    ||mu1 - mu2||^2 + tr(s1) + tr(s2) - 2 tr((s1 s2)^(1/2)).

    tr((s1 s2)^(1/2)) equals the sum of square roots of the eigenvalues of the symmetric PSD matrix
    sqrt(s1) s2 sqrt(s1) (it is similar to s1 s2), so no scipy and no complex sqrtm is needed.
    """
    mu1 = np.atleast_1d(np.asarray(mu1, np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(s1, np.float64)), np.atleast_2d(np.asarray(s2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(f"shape mismatch: mu {mu1.shape} {mu2.shape}, sigma {s1.shape} {s2.shape}")
    r1 = _psd_sqrt(s1)
    m = r1 @ s2 @ r1
    w = np.linalg.eigvalsh((m + m.T) / 2)
    tr_covmean = np.sqrt(np.clip(w, 0.0, None)).sum()
    diff = mu1 - mu2
    fd = diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean
    # Rounding can leave a tiny negative value for identical inputs; FD is a distance.
    return float(max(fd, 0.0))


def _poly_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    # The KID paper's kernel: k(x, y) = (x.y / d + 1)^3.
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    m = x.shape[0]
    kxx, kyy, kxy = _poly_kernel(x, x), _poly_kernel(y, y), _poly_kernel(x, y)
    # Unbiased estimator: drop the diagonals (k(x_i, x_i)) of the within-set sums.
    sxx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    syy = (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(sxx + syy - 2.0 * kxy.sum() / (m * m))


def kid(feats_a, feats_b, subsets: int = 100, subset_size: int = 1000, seed: int = 0
        ) -> tuple[float, float]:
    """Kernel Inception Distance (Binkowski et al. 2018) in any feature space.

    Unbiased MMD^2 with the cubic polynomial kernel, averaged over `subsets` random subsets of
    `subset_size` rows drawn without replacement from each set (clipped to the smaller set).
    Returns (mean, std) over subsets. Can be slightly negative for identical distributions.
    """
    a, b = np.asarray(feats_a, np.float64), np.asarray(feats_b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"kid needs two [N, D] arrays with equal D, got {a.shape} and {b.shape}")
    m = min(subset_size, a.shape[0], b.shape[0])
    if m < 2:
        raise ValueError("kid needs at least 2 samples per set")
    if m == a.shape[0] == b.shape[0]:
        # Every subset is then the whole of both sets: one evaluation gives all of them.
        return _mmd2_unbiased(a, b), 0.0
    rng = np.random.default_rng(seed)
    vals = np.empty(subsets)
    for i in range(subsets):
        ia = rng.choice(a.shape[0], m, replace=False)
        ib = rng.choice(b.shape[0], m, replace=False)
        vals[i] = _mmd2_unbiased(a[ia], b[ib])
    return float(vals.mean()), float(vals.std())


def _pairwise_dist(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    # |x-y|^2 = |x|^2 + |y|^2 - 2 x.y: one matmul instead of an [n, m, d] broadcast.
    d2 = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * (x @ y.T)
    return np.sqrt(np.clip(d2, 0.0, None))


def _knn_radii(x: np.ndarray, k: int) -> np.ndarray:
    """Distance from each row of x to its k-th nearest other row (the row itself is at index 0)."""
    radii = np.empty(x.shape[0])
    for s in range(0, x.shape[0], _CHUNK):
        d = _pairwise_dist(x[s:s + _CHUNK], x)
        radii[s:s + _CHUNK] = np.partition(d, k, axis=1)[:, k]
    return radii


def precision_recall_density_coverage(real_feats, fake_feats, k: int = 5) -> dict:
    """Precision, recall, density and coverage of Naeem et al. 2020 ("Reliable fidelity and
    diversity metrics for generative models"), with the reference implementation's strict `<`.

    B(x, r) is the ball around x whose radius r is the distance to x's k-th nearest neighbour in
    its own set. With real X (N rows) and fake Y (M rows):
      precision = share of fakes inside some real ball
      recall    = share of reals inside some fake ball
      density   = (1 / kM) * sum over fakes of the number of real balls containing it
      coverage  = share of reals whose ball contains at least one fake
    """
    x, y = np.asarray(real_feats, np.float64), np.asarray(fake_feats, np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"prdc needs two [N, D] arrays with equal D, got {x.shape} and {y.shape}")
    if min(x.shape[0], y.shape[0]) <= k:
        raise ValueError(f"prdc needs more than k={k} samples per set")
    r_real, r_fake = _knn_radii(x, k), _knn_radii(y, k)
    fake_in_any = np.zeros(y.shape[0], dtype=bool)
    fake_ball_count = np.zeros(y.shape[0], dtype=np.int64)
    real_in_fake = np.empty(x.shape[0], dtype=bool)
    real_covered = np.empty(x.shape[0], dtype=bool)
    # One pass over blocks of real rows; per-fake results accumulate across blocks.
    for s in range(0, x.shape[0], _CHUNK):
        d = _pairwise_dist(x[s:s + _CHUNK], y)
        inside_real = d < r_real[s:s + _CHUNK, None]
        fake_in_any |= inside_real.any(axis=0)
        fake_ball_count += inside_real.sum(axis=0)
        real_in_fake[s:s + _CHUNK] = (d < r_fake[None, :]).any(axis=1)
        real_covered[s:s + _CHUNK] = d.min(axis=1) < r_real[s:s + _CHUNK]
    return {
        "precision": float(fake_in_any.mean()),
        "recall": float(real_in_fake.mean()),
        "density": float(fake_ball_count.sum() / (k * y.shape[0])),
        "coverage": float(real_covered.mean()),
    }


def class_histogram(labels, num_classes: int) -> np.ndarray:
    """Share of each class 0..num_classes-1 among integer labels (sums to 1; zeros if empty)."""
    lab = np.asarray(labels, dtype=np.int64).ravel()
    if lab.size and (lab.min() < 0 or lab.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got [{lab.min()}, {lab.max()}]")
    counts = np.bincount(lab, minlength=num_classes).astype(np.float64)
    return counts / max(lab.size, 1)


def histogram_distance(p, q) -> float:
    """Total variation distance 0.5 * sum |p - q| between two histograms, in [0, 1].

    Inputs are normalised first, so raw counts and shares both work.
    """
    p, q = np.asarray(p, np.float64), np.asarray(q, np.float64)
    if p.shape != q.shape:
        raise ValueError(f"histograms differ in shape: {p.shape} vs {q.shape}")
    p, q = p / p.sum(), q / q.sum()
    return float(0.5 * np.abs(p - q).sum())
