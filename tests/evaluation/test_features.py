"""The LeNet feature space on real MNIST: accuracy, metric sanity, cache reuse, determinism.

The extractor is trained once per session on 10k training images for 1 epoch (~5-10 s on one
thread; ~95% test accuracy) and cached in a temporary folder, never in the user's cache.
"""
import os
import time

import numpy as np
import pytest
import torch

from feddm_hpc.data import load_dataset
from feddm_hpc.evaluation.features import get_feature_extractor, reference_stats
from feddm_hpc.evaluation.quality import feature_stats, frechet_distance, precision_recall_density_coverage
from feddm_hpc.evaluation.scores import evaluate_samples

N = 500  # samples per set in the sanity checks; FD numbers below hold for this N only
TRAIN_KW = dict(epochs=1, max_train=10000)


@pytest.fixture(scope="module")
def mnist():
    return load_dataset("mnist", None, "train"), load_dataset("mnist", None, "test")


def _extract(mnist, cache_dir, n_test=None, **kw):
    train, test = mnist
    args = {**TRAIN_KW, **kw}
    return get_feature_extractor("mnist", train.images, train.labels, test.images[:n_test],
                                 test.labels[:n_test], train.checksum, cache_dir=cache_dir, **args)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("feature_cache")


@pytest.fixture(scope="module")
def extractor(mnist, cache_dir):
    return _extract(mnist, cache_dir)


@pytest.fixture(scope="module")
def splits(mnist):
    """Two disjoint real sets of N test images, and N test images of classes 0-4 only."""
    test = mnist[1]
    perm = np.random.default_rng(0).permutation(len(test))
    a, b = perm[:N], perm[N:2 * N]
    rest = perm[N:]
    half = rest[test.labels[rest] < 5][:N]
    return test.images[a], test.images[b], test.images[half]


@pytest.mark.slow  # module fixture `extractor` fits the feature extractor
def test_extractor_accuracy_and_name(extractor, mnist):
    assert extractor.test_accuracy > 0.9
    assert extractor.name == f"lenet5-mnist-{mnist[0].checksum[:8]}"
    assert extractor.train_seconds is not None  # this call trained it


@pytest.mark.slow  # module fixture `extractor` fits the feature extractor
def test_features_shape_and_input_layouts(extractor, mnist):
    imgs = mnist[1].images[:7]
    f = extractor.features(imgs)
    assert f.shape == (7, 128) and f.dtype == np.float64
    as_float = imgs.transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1.0
    np.testing.assert_allclose(extractor.features(as_float), f, rtol=1e-6, atol=1e-6)
    from_torch = extractor.features(torch.from_numpy(as_float))
    np.testing.assert_allclose(from_torch, f, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(extractor.predict(imgs), extractor.predict(as_float))
    with pytest.raises(ValueError):
        extractor.features(np.zeros((2, 3, 28, 28), np.float32))  # wrong channel count


@pytest.mark.slow  # module fixture `extractor` fits the feature extractor
def test_fd_separates_real_noise_and_missing_classes(extractor, splits):
    a, b, half = splits
    noise = np.random.default_rng(1).integers(0, 256, size=a.shape, dtype=np.uint8)
    fa = extractor.features(a)
    stats_a = feature_stats(fa)

    def fd(x):
        return frechet_distance(*stats_a, *feature_stats(extractor.features(x)))

    fd_real, fd_noise, fd_half = fd(b), fd(noise), fd(half)
    # Measured at N=500: real-vs-real ~16-30, noise ~1000-1900, half the classes ~180-260.
    assert fd_noise > 20 * fd_real
    assert fd_half > 3 * fd_real
    cov_real = precision_recall_density_coverage(fa, extractor.features(b))["coverage"]
    cov_half = precision_recall_density_coverage(fa, extractor.features(half))["coverage"]
    assert cov_half < cov_real - 0.2


@pytest.mark.slow  # module fixture `extractor` fits the feature extractor
def test_evaluate_samples_report(extractor, mnist, splits):
    _, _, half = splits
    real = mnist[1].images  # more real images than fakes: a seeded subset of N is drawn
    r = evaluate_samples(half, real, extractor, num_classes=10, seed=0)
    assert set(r) == {"fd", "kid", "kid_std", "precision", "recall", "density", "coverage",
                      "class_histogram", "class_histogram_distance", "num_samples",
                      "feature_extractor", "extractor_test_accuracy"}
    assert r["num_samples"] == N and r["feature_extractor"] == extractor.name
    assert len(r["class_histogram"]) == 10 and sum(r["class_histogram"][5:]) < 0.1
    assert 0.4 < r["class_histogram_distance"] < 0.6  # half the mass sits on missing classes
    assert r["kid"] > 0 and r["kid_std"] > 0 and r["fd"] > 0
    assert evaluate_samples(half, real, extractor, 10, seed=0)["fd"] == r["fd"]  # seeded
    with pytest.raises(ValueError):
        evaluate_samples(real[:10], real[:5], extractor, 10)


@pytest.mark.slow  # module fixture `extractor` fits the feature extractor
def test_reference_stats_is_seeded(extractor, mnist):
    test = mnist[1]
    r1 = reference_stats(extractor, test.images, n=200, seed=3)
    r2 = reference_stats(extractor, test.images, n=200, seed=3)
    assert r1["n"] == 200 and r1["features"].shape == (200, 128)
    np.testing.assert_array_equal(r1["indices"], r2["indices"])
    np.testing.assert_array_equal(r1["mu"], r2["mu"])
    other = reference_stats(extractor, test.images, 200, seed=4)
    assert not np.array_equal(r1["indices"], other["indices"])


@pytest.mark.slow  # module fixture `extractor` fits the feature extractor
def test_cache_is_reused(extractor, mnist, cache_dir):
    mtime = os.stat(extractor.path).st_mtime_ns
    t0 = time.perf_counter()
    again = _extract(mnist, cache_dir)
    assert time.perf_counter() - t0 < extractor.train_seconds / 2  # loading, not training
    assert again.train_seconds is None and again.path == extractor.path
    assert os.stat(extractor.path).st_mtime_ns == mtime
    assert again.test_accuracy == extractor.test_accuracy
    x = mnist[1].images[:20]
    np.testing.assert_array_equal(again.features(x), extractor.features(x))


@pytest.mark.slow
def test_training_is_deterministic_and_keyed(mnist, tmp_path):
    tiny = dict(max_train=1000, n_test=500)  # test accuracy is not checked here
    e1 = _extract(mnist, tmp_path / "a", **tiny)
    e2 = _extract(mnist, tmp_path / "b", **tiny)
    for (k, v1), v2 in zip(e1.model.state_dict().items(), e2.model.state_dict().values()):
        assert torch.equal(v1, v2), k
    # Other settings or other data never reuse the cached file.
    e3 = _extract(mnist, tmp_path / "a", **tiny, lr=2e-3)
    assert e3.path != e1.path and e3.train_seconds is not None
    train, test = mnist
    e4 = get_feature_extractor("mnist", train.images, train.labels, test.images[:500],
                               test.labels[:500], "0" * 64, cache_dir=tmp_path / "a", epochs=1,
                               max_train=1000)
    assert e4.path != e1.path and e4.name == "lenet5-mnist-00000000"


def test_corrupt_cache_file_is_retrained(mnist, tmp_path):
    e1 = _extract(mnist, tmp_path, max_train=500, n_test=500)
    e1.path.write_bytes(b"not a torch file")
    with pytest.warns(UserWarning, match="unreadable"):
        e2 = _extract(mnist, tmp_path, max_train=500, n_test=500)
    assert e2.train_seconds is not None and e2.path.stat().st_size > 1000
