"""Image and label arrays from outside the package (npz and HDF5 files, a user's loader),
checked and converted to the one in-memory form of every dataset: uint8 [N, H, W, C] images and
int64 labels."""
from __future__ import annotations

import numpy as np

from feddm_hpc.errors import DataError


def normalize_arrays(where: str, images, labels, hint: str):
    """(images uint8 [N,H,W,C], labels int64 [N] or None, num_classes or None) from images
    [N,H,W] or [N,H,W,C] (uint8, or float in [0, 1]) and optional non-negative integer labels;
    a DataError "<where>: ...; <hint>" otherwise."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or min(images.shape) == 0:
        raise DataError(f"{where}: `images` must be [N,H,W] or [N,H,W,C] and non-empty, "
                        f"got shape {images.shape}; {hint}")
    if images.dtype.kind == "f":
        if not np.isfinite(images).all() or images.min() < 0 or images.max() > 1:
            raise DataError(f"{where}: float `images` must lie in [0, 1]; {hint}")
        images = np.rint(images.astype(np.float64) * 255.0).astype(np.uint8)
    elif images.dtype != np.uint8:
        raise DataError(f"{where}: `images` must be uint8 or float, got {images.dtype}; {hint}")
    num_classes = None
    if labels is not None:
        labels = np.asarray(labels)
        if labels.dtype.kind not in "iu" or labels.shape != (images.shape[0],):
            raise DataError(f"{where}: `labels` must be integers of shape ({images.shape[0]},),"
                            f" got {labels.dtype} {labels.shape}; {hint}")
        if labels.min() < 0:
            raise DataError(f"{where}: `labels` must be non-negative; {hint}")
        labels = labels.astype(np.int64)
        num_classes = int(labels.max()) + 1
    return images, labels, num_classes
