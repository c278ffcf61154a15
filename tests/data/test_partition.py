"""Partitioners: coverage, determinism, skew and the min-samples guarantee, on synthetic labels."""

import numpy as np
import pytest

from feddm_hpc.data import SCHEMES, label_histograms, partition, summarize_partition
from feddm_hpc.errors import ConfigError


def _labels(n=6000, k=10, seed=0):
    # Unequal class sizes, like real data: partitioners must not assume balance.
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.5, 1.5, k)
    return rng.choice(k, size=n, p=p / p.sum()).astype(np.int64)


LABELS = _labels()


def _check_exact_cover(parts, n):
    for p in parts:
        assert p.dtype == np.int64 and np.all(np.diff(p) > 0)  # sorted, no repeats
    allidx = np.concatenate(parts)
    assert allidx.size == n and np.array_equal(np.sort(allidx), np.arange(n))


@pytest.mark.parametrize("scheme", SCHEMES)
def test_disjoint_covering_sorted_and_seeded(scheme):
    a = partition(LABELS, 20, scheme, seed=3, alpha=0.5, classes_per_client=2)
    assert len(a) == 20
    _check_exact_cover(a, LABELS.size)
    b = partition(LABELS, 20, scheme, seed=3, alpha=0.5, classes_per_client=2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    c = partition(LABELS, 20, scheme, seed=4, alpha=0.5, classes_per_client=2)
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_iid_sizes_balanced_within_one():
    parts = partition(LABELS, 7, "iid", seed=0)
    sizes = [p.size for p in parts]
    assert max(sizes) - min(sizes) <= 1
    # Every client sees every class in an iid split of this size.
    assert (label_histograms(LABELS, parts, 10) > 0).all()


def test_iid_without_labels_and_other_schemes_refuse():
    parts = partition(None, 3, "iid", seed=0, num_examples=10)
    _check_exact_cover(parts, 10)
    for scheme in ("dirichlet", "dirichlet_balanced", "shards"):
        with pytest.raises(ConfigError, match="data.partition.*labels"):
            partition(None, 3, scheme, seed=0, num_examples=10)


def _mean_classes_present(parts, labels=LABELS):
    return (label_histograms(labels, parts, 10) > 0).sum(axis=1).mean()


def _mean_kl_to_global(parts, labels=LABELS):
    hist = label_histograms(labels, parts, 10).astype(float) + 1e-9
    q = np.bincount(labels, minlength=10) / labels.size
    p = hist / hist.sum(axis=1, keepdims=True)
    return float((p * np.log(p / q)).sum(axis=1).mean())


def test_dirichlet_small_alpha_is_much_more_skewed():
    skewed = partition(LABELS, 20, "dirichlet", seed=0, alpha=0.1)
    mild = partition(LABELS, 20, "dirichlet", seed=0, alpha=100.0)
    assert _mean_classes_present(skewed) < 6 and _mean_classes_present(mild) == 10
    assert _mean_kl_to_global(skewed) > 20 * _mean_kl_to_global(mild)


def test_dirichlet_min_samples_enforced_or_config_error():
    parts = partition(LABELS, 20, "dirichlet", seed=0, alpha=0.1, min_samples=32)
    assert min(p.size for p in parts) >= 32
    _check_exact_cover(parts, LABELS.size)
    # 100 clients x 59 = 5900 <= 6000 passes the count check, but no skewed draw fits it.
    with pytest.raises(ConfigError) as e:
        partition(LABELS, 100, "dirichlet", seed=0, alpha=0.05, min_samples=59)
    msg = str(e.value)
    for field in ("data.dirichlet_alpha=0.05", "federation.num_clients=100",
                  "client.batch_size=59"):
        assert field in msg
    assert "dirichlet_balanced" in msg  # the error points to the scheme that can do it


@pytest.mark.parametrize("alpha", [0.05, 1.0])
def test_dirichlet_balanced_equal_sizes_where_dirichlet_starves(alpha):
    parts = partition(LABELS, 100, "dirichlet_balanced", seed=0, alpha=alpha, min_samples=59)
    _check_exact_cover(parts, LABELS.size)
    assert {p.size for p in parts} == {60}


def test_dirichlet_balanced_small_alpha_is_much_more_skewed():
    skewed = partition(LABELS, 20, "dirichlet_balanced", seed=0, alpha=0.1)
    mild = partition(LABELS, 20, "dirichlet_balanced", seed=0, alpha=100.0)
    assert _mean_classes_present(skewed) < 8 and _mean_classes_present(mild) == 10
    assert _mean_kl_to_global(skewed) > 20 * _mean_kl_to_global(mild)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_too_many_clients_for_batch_size(scheme):
    with pytest.raises(ConfigError, match="federation.num_clients=100.*client.batch_size=64"):
        partition(LABELS, 100, scheme, seed=0, min_samples=64)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_shards_at_most_k_classes_per_client(k):
    parts = partition(LABELS, 30, "shards", seed=1, classes_per_client=k)
    present = (label_histograms(LABELS, parts, 10) > 0).sum(axis=1)
    assert present.max() <= k and present.min() >= 1
    _check_exact_cover(parts, LABELS.size)
    sizes = [p.size for p in parts]
    assert max(sizes) <= 2 * min(sizes)  # shards are near-equal in size


def test_shards_impossible_settings():
    with pytest.raises(ConfigError, match="data.classes_per_client"):
        partition(LABELS, 4, "shards", seed=0, classes_per_client=0)
    with pytest.raises(ConfigError, match="cannot hold all 10 classes"):
        partition(LABELS, 2, "shards", seed=0, classes_per_client=2)
    # 95 zeros and 5 ones: the lone class-1 shard holds 5 examples, fewer than a batch of 8.
    skewed = np.array([0] * 95 + [1] * 5)
    with pytest.raises(ConfigError, match="client.batch_size=8"):
        partition(skewed, 10, "shards", seed=0, classes_per_client=1, min_samples=8)


def test_bad_names_and_values():
    with pytest.raises(ConfigError, match="data.partition.*iid, dirichlet, dirichlet_balanced, shards"):
        partition(LABELS, 4, "label_skew", seed=0)
    with pytest.raises(ConfigError, match="federation.num_clients"):
        partition(LABELS, 0, "iid", seed=0)
    for alpha in (0, -1.0, float("nan"), "x"):
        for scheme in ("dirichlet", "dirichlet_balanced"):
            with pytest.raises(ConfigError, match="data.dirichlet_alpha"):
                partition(LABELS, 4, scheme, seed=0, alpha=alpha)


def test_histograms_and_summary():
    labels = np.array([0, 0, 1, 2, 2, 2])
    parts = [np.array([0, 1]), np.array([2, 3, 4, 5])]
    hist = label_histograms(labels, parts, 4)
    assert hist.dtype == np.int64 and hist.tolist() == [[2, 0, 0, 0], [0, 1, 3, 0]]
    line = summarize_partition(hist)
    assert "2 clients" in line and "2/3/4" in line and "1.50" in line
