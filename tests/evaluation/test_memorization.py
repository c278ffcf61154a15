"""The memorization audit (feddm_hpc.evaluation.memorization): the blocked nearest-neighbour
search against brute force, the ratio test on real MNIST (training images are near copies of
themselves; test images and noise are not), per-client attribution by hand, the plot, and the
`memorization` key of `feddm-hpc evaluate` end to end on a tiny trained run.
"""
import json

import numpy as np
import pytest

from feddm_hpc.data import load_dataset
from feddm_hpc.evaluation import memorization as mem

from conftest import DETERMINISTIC, cli_in_process, copy_run

TRAIN_N = 3000   # training images searched in the MNIST tests: well under a second
QUERY_N = 300


def _brute_force(q, t, k):
    d = np.sqrt(((np.asarray(q, np.float64)[:, None, :] - np.asarray(t, np.float64)[None]) ** 2)
                .sum(-1))
    idx = np.argsort(d, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, idx, 1), idx


# ---------------------------------------------------------------------------- the search

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k", [1, 4, 60])
def test_blocked_search_equals_brute_force(dtype, k):
    rng = np.random.default_rng(k)
    q, t = rng.normal(size=(23, 9)).astype(dtype), rng.normal(size=(53, 9)).astype(dtype)
    # Blocks smaller than k and than both sets: every merge path of the running top-k runs.
    d, i = mem.nearest_neighbours(q, t, k, train_block=7, query_block=5)
    want_d, want_i = _brute_force(q, t, min(k, len(t)))
    np.testing.assert_array_equal(i, want_i)
    np.testing.assert_allclose(d, want_d, rtol=1e-12, atol=1e-12)
    assert np.all(np.diff(d, axis=1) >= 0)


def test_search_over_uint8_images_prepares_blocks():
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (40, 4, 4, 1), dtype=np.uint8)
    queries = rng.integers(0, 256, (6, 4, 4, 1), dtype=np.uint8)
    d, i = mem.nearest_neighbours(mem.pixel_vectors(queries), train, 5, prepare=mem.pixel_vectors,
                                  train_block=16)
    want_d, want_i = _brute_force(mem.pixel_vectors(queries), mem.pixel_vectors(train), 5)
    np.testing.assert_array_equal(i, want_i)
    np.testing.assert_allclose(d, want_d, rtol=1e-12)


def test_pixel_vectors_normalizes_uint8_and_float_alike():
    rng = np.random.default_rng(1)
    u8 = rng.integers(0, 256, (3, 5, 6, 2), dtype=np.uint8)            # NHWC
    as_float = u8.transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1  # the model's NCHW [-1,1]
    np.testing.assert_allclose(mem.pixel_vectors(u8), as_float.reshape(3, -1), atol=1e-6)
    assert mem.pixel_vectors(u8[..., 0]).shape == (3, 30)
    assert mem.pixel_vectors(np.zeros((2, 1, 28, 28), np.uint8)).min() == -1.0


def test_ratio_is_zero_for_a_copy_and_near_one_when_all_equidistant():
    r = mem.ratios(np.array([[0.0, 2.0, 4.0], [3.0, 3.0, 3.0], [0.0, 0.0, 0.0], [1.0, 2.0, 3.0]]))
    np.testing.assert_allclose(r, [0.0, 1.0, 0.0, 0.5])


# ---------------------------------------------------------------------------- real MNIST

@pytest.fixture(scope="module")
def mnist():
    train, test = load_dataset("mnist", None, "train"), load_dataset("mnist", None, "test")
    return train.images[:TRAIN_N], test.images[:QUERY_N]


class _Projection:
    """A stand-in FeatureExtractor: a fixed random ReLU projection of the pixels."""

    def __init__(self, dim: int = 784, out: int = 32):
        self.w = np.random.default_rng(0).normal(size=(dim, out)) / np.sqrt(dim)

    def features(self, images):
        return np.maximum(mem.pixel_vectors(images).astype(np.float64) @ self.w, 0.0)


def test_training_images_are_near_copies_of_themselves(mnist):
    train, _ = mnist
    idx = np.random.default_rng(0).choice(TRAIN_N, QUERY_N, replace=False)
    audit = mem.audit_memorization(train[idx], train, extractor=_Projection())
    for space in ("pixel", "feature"):
        a = audit.samples[space]
        assert a.near_copy.mean() >= 0.95, space
        np.testing.assert_array_equal(a.nearest_index, idx)
        # Pixels match exactly; features only to rounding (BLAS sums depend on the batch).
        np.testing.assert_allclose(a.nearest_distance, 0.0, atol=1e-9)
    np.testing.assert_array_equal(audit.samples["pixel"].nearest_distance, 0.0)
    # As float [-1, 1] NCHW (the sampler's output) the samples are the same copies.
    as_float = train[idx].transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1
    a = mem.audit_memorization(as_float, train).samples["pixel"]
    np.testing.assert_array_equal(a.nearest_index, idx)
    assert a.nearest_distance.max() < 1e-4


def test_test_images_and_noise_are_not_near_copies(mnist):
    train, test = mnist
    noise = np.random.default_rng(0).integers(0, 256, test.shape, dtype=np.uint8)
    audit = mem.audit_memorization(noise, train, reference_images=test)
    assert audit.samples["pixel"].near_copy.mean() <= 0.05
    assert audit.reference["pixel"].near_copy.mean() <= 0.05
    # Noise is far from everything and no nearer its nearest image than its 50th.
    assert np.median(audit.samples["pixel"].ratio) > 0.9
    assert np.median(audit.samples["pixel"].nearest_distance) > \
        2 * np.median(audit.reference["pixel"].nearest_distance)


# ---------------------------------------------------------------------------- attribution

def _points(xs):
    """Points on a line as float 'images' [N, 1, 1, 2] (pixel_vectors flattens them to 2-D)."""
    return np.array([[[[x, 0.0]]] for x in xs], dtype=np.float64)


def test_per_client_attribution_by_hand():
    train = _points([0.0, 0.1, 0.2, 0.3, 0.4, 0.5])
    parts = [np.array([0, 3]), np.array([1, 2, 5]), np.array([4])]
    # 0.3 and 0.5 are exact copies (r = 0); 0.24 is nearest 0.2 (d 0.04, next 0.06: r = 0.8).
    samples = _points([0.3, 0.5, 0.5, 0.24])
    audit = mem.audit_memorization(samples, train, parts=parts, k=2)
    np.testing.assert_array_equal(audit.samples["pixel"].nearest_index, [3, 5, 5, 2])
    # rtol: pixel_vectors compares in float32, as for real images.
    np.testing.assert_allclose(audit.samples["pixel"].ratio, [0.0, 0.0, 0.0, 0.8], rtol=1e-6)
    s = audit.summary()
    assert s["per_client"] == [
        {"client": 0, "train_images": 2, "samples": 1, "near_copies": 1},
        {"client": 1, "train_images": 3, "samples": 3, "near_copies": 2},
        {"client": 2, "train_images": 1, "samples": 0, "near_copies": 0},
    ]
    assert s["near_copy_fraction"] == {"pixel": 0.75, "feature": None}
    assert s["near_copy_samples"] == [0, 1, 2] and s["nearest_train_index"] == [3, 5, 5, 2]
    assert s["reference"] is None and s["k"] == 2
    json.dumps(s)


def test_client_of_index_rejects_overlapping_parts():
    np.testing.assert_array_equal(mem.client_of_index([np.array([2]), np.array([0])], 3),
                                  [1, -1, 0])
    with pytest.raises(ValueError, match="overlap"):
        mem.client_of_index([np.array([0, 1]), np.array([1])], 2)


def test_summary_and_plot(mnist, tmp_path):
    train, test = mnist
    audit = mem.audit_memorization(train[:50], train, extractor=_Projection(),
                                   reference_images=test[:50], parts=[np.arange(TRAIN_N)])
    s = json.loads(json.dumps(audit.summary()))
    assert s["near_copy_fraction"]["pixel"] == 1.0 and s["reference"]["num_images"] == 50
    assert set(s["median_nearest_distance"]) == {"pixel", "feature"}
    assert s["per_client"][0]["samples"] == 50 and len(s["nearest_train_index_feature"]) == 50
    path = mem.plot_nearest_distances(audit, tmp_path / "m.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    arrays = {"pixel": (np.arange(5.0), None)}
    assert mem.plot_nearest_distances(arrays, tmp_path / "a.png").stat().st_size > 0


def test_train_features_are_cached(mnist, tmp_path):
    class Counting(_Projection):
        path, name, calls = None, "proj", 0

        def features(self, images):
            Counting.calls += 1
            return super().features(images)
    train = mnist[0][:100]
    a = mem.cached_train_features(Counting(), train, "ab" * 32, cache_dir=tmp_path)
    b = mem.cached_train_features(Counting(), train, "ab" * 32, cache_dir=tmp_path)
    np.testing.assert_array_equal(a, b)
    assert Counting.calls == 1 and len(list(tmp_path.glob("*.npy"))) == 1


# ---------------------------------------------------------------------------- end to end

@pytest.mark.slow
def test_evaluate_reports_memorization(tiny_run, tmp_path):
    run_dir = copy_run(tiny_run, tmp_path / "run")   # a finished train_tiny run; evaluate writes there
    ckpt = run_dir / "checkpoints" / "round-000001.h5"
    # The LeNet comes from the session's FEDDM_HPC_CACHE (tests/conftest.py): test_evaluate's.
    quick = ["--num-samples", "64", "--extractor-epochs", "1", "--extractor-train-subset", "2000",
             *DETERMINISTIC]
    out = cli_in_process(["evaluate", str(ckpt), *quick])
    assert out.returncode == 0, out.stderr
    m = json.loads(out.stdout)["memorization"]   # stdout is exactly one JSON object
    assert m["k"] == 50 and m["train_images"] == 2000 and m["num_samples"] == 64
    assert len(m["nearest_train_index"]) == 64 and len(m["per_client"]) == 4
    assert sum(c["samples"] for c in m["per_client"]) == 64
    assert m["reference"]["num_images"] == 64 and m["near_copy_fraction"]["feature"] is not None
    assert (run_dir / "eval" / "round-000001.memorization.png").is_file()
    assert json.loads((run_dir / "eval" / "round-000001.json").read_text())["memorization"] == m
    out = cli_in_process(["evaluate", str(ckpt), *quick, "--no-memorization", "--out",
                          str(tmp_path / "plain.json")])
    assert out.returncode == 0, out.stderr
    assert "memorization" not in json.loads(out.stdout)
