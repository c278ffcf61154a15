"""`data.dataset: cifar10`: the official binary version of CIFAR-10 (cifar-10-batches-bin), read with
numpy only (the Python version's pickles are never loaded).

Each file is a sequence of 3073-byte records: one label byte (0..9), then the 32x32 image as 1024
red, 1024 green and 1024 blue bytes, rows top to bottom. The training split is data_batch_1.bin ..
data_batch_5.bin in that order (50,000 images), the test split test_batch.bin (10,000).
data.path is the cifar-10-batches-bin folder, or the folder the archive was extracted into.
"""
from __future__ import annotations

import os
from typing import Optional

import numpy as np

from feddm_hpc.errors import ConfigError, DataError

SIDE = 32
RECORD = 1 + 3 * SIDE * SIDE
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
FILES = {"train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)), "test": ("test_batch.bin",)}
HINT = ("download cifar-10-binary.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html, extract "
        "it and set data.path to its cifar-10-batches-bin folder")


def batches_folder(path: Optional[str]) -> str:
    if not path:
        raise ConfigError("data.path: dataset 'cifar10' needs data.path set to the "
                          "cifar-10-batches-bin folder")
    if not os.path.isdir(path):
        raise DataError(f"{path}: folder not found; {HINT}")
    inner = os.path.join(path, "cifar-10-batches-bin")
    return inner if os.path.isdir(inner) else path


def read_batch(file: str):
    """(images uint8 [n,32,32,3], labels int64 [n]) of one binary batch file."""
    raw = np.fromfile(file, dtype=np.uint8)
    if raw.size == 0 or raw.size % RECORD:
        raise DataError(f"{file}: {raw.size} bytes is not a whole number of {RECORD}-byte CIFAR-10 "
                        f"records (truncated or not a CIFAR-10 binary batch); {HINT}")
    records = raw.reshape(-1, RECORD)
    labels = records[:, 0].astype(np.int64)
    if labels.max() >= len(CLASSES):
        raise DataError(f"{file}: label byte {int(labels.max())} outside 0..9 (not a CIFAR-10 "
                        f"binary batch; CIFAR-100's has two label bytes); {HINT}")
    images = records[:, 1:].reshape(-1, 3, SIDE, SIDE).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def load_cifar10(path: Optional[str], split: str):
    folder = batches_folder(path)
    files = [os.path.join(folder, f) for f in FILES[split]]
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise DataError(f"{missing[0]}: file not found"
                        + (f" (nor {len(missing) - 1} other batch file(s))" if len(missing) > 1 else "")
                        + f"; {HINT}")
    parts = [read_batch(f) for f in files]
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
            len(CLASSES))


def write_batch(file: str, images: np.ndarray, labels) -> None:
    """The inverse of read_batch (tests, and converting other arrays to the binary format)."""
    images = np.asarray(images, dtype=np.uint8)
    assert images.shape[1:] == (SIDE, SIDE, 3), images.shape
    records = np.empty((len(images), RECORD), np.uint8)
    records[:, 0] = np.asarray(labels, dtype=np.uint8)
    records[:, 1:] = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    records.tofile(file)
