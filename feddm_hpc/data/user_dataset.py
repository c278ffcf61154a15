"""A dataset of the user's own: `data.dataset: package.module:Name` names a loader function with
the built-in loaders' interface (docs/extending.md, feddm_hpc.extend.DatasetLoader):

    Name(path, split) -> (images, labels, num_classes)

path: data.path as configured (None when unset); split: "train" or "test". images: [N,H,W] or
[N,H,W,C], uint8 or float in [0, 1]; labels: non-negative integers [N], or None (then only
data.partition: iid works); num_classes: an int above every label, or None (max label + 1).

The loader is imported (importlib, never eval) and called on every rank, so it must return the
same arrays on every rank and in every process: that, not the loader, is what makes a run rank
invariant and its resume exact. Everything after it (data.subset, the partition, the per-client
batches, the checksum in run files) is the built-in datasets' code.
"""
from __future__ import annotations

from feddm_hpc.data.arrays import normalize_arrays
from feddm_hpc.errors import ConfigError, DataError, UserError
from feddm_hpc.plugins import load_function

FIELD = "data.dataset"
HINT = ("a loader returns (images uint8 [N,H,W,C] or float in [0,1], labels int [N] or None, "
        "num_classes or None); docs/extending.md")


def load_user_loader(name: str):
    """The loader function `name` names, checked to take (path, split); ConfigError otherwise."""
    return load_function(name, FIELD, ("path", "split"))


def load_user_split(name: str, path, split: str):
    """(images uint8 [N,H,W,C], labels int64 [N] or None, num_classes) of the user's loader for
    `split`. Its own UserErrors pass through; any other exception it raises is a DataError
    naming the field and the split (a loader without a test split: evaluation then holds out
    part of the training split, as for an npz file without test arrays)."""
    loader = load_user_loader(name)
    try:
        result = loader(path, split)
    except UserError:
        raise
    except Exception as exc:
        raise DataError(f"{FIELD}: {name!r} failed loading split {split!r} (data.path {path!r}): "
                        f"{type(exc).__name__}: {exc}") from None
    if not (isinstance(result, tuple) and len(result) == 3):
        raise ConfigError(f"{FIELD}: {name!r} returned {type(result).__name__}, not a tuple "
                          f"(images, labels, num_classes); {HINT}")
    images, labels, declared = result
    images, labels, num_classes = normalize_arrays(f"{FIELD}: {name!r} split {split!r}", images,
                                                   labels, HINT)
    if declared is not None and labels is not None:
        if isinstance(declared, bool) or not isinstance(declared, int) or declared < num_classes:
            raise ConfigError(f"{FIELD}: {name!r} returned num_classes {declared!r} for labels up "
                              f"to {num_classes - 1}; {HINT}")
        num_classes = declared
    return images, labels, num_classes
