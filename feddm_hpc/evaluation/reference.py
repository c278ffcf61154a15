"""The real side of an evaluation: a dataset's training images and its LeNet feature space.

One `Reference` per (dataset, files, extractor settings) is kept per process, so evaluating every
few rounds during training loads the data and the extractor once. Only the root rank needs it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from feddm_hpc.errors import DataError
from feddm_hpc.evaluation.features import FeatureExtractor, get_feature_extractor

# The real images are a seeded subset of the training split drawn with this fixed seed, not the
# run's seed: every run on a dataset is scored against the same real images.
REFERENCE_SEED = 0


@dataclass
class Reference:
    dataset: str
    checksum: str                       # of the full training split
    images: np.ndarray                  # uint8 [N, H, W, C], the full training split
    num_classes: Optional[int]
    extractor: Optional[FeatureExtractor]  # None for unlabelled data (Inception only)


_CACHE: dict = {}


def no_labels_message(dataset: str, path) -> str:
    where = f" ({path})" if path else ""
    return (f"data.dataset: {dataset}{where} has no labels, so no classifier feature space can be "
            f"trained for FD/KID/PRDC; pass --inception-weights FILE to score it in Inception-v3 "
            f"features instead")


def load_reference(dataset: str, path=None, *, need_extractor: bool = True, cache_dir=None,
                   epochs: Optional[int] = None, max_train: Optional[int] = None,
                   verbose: bool = False, device: str = "cpu",
                   options: Optional[dict] = None) -> Reference:
    """The training split of `dataset` and, when it is labelled, its cached feature extractor
    (features.py: the LeNet for grey images, trained on first use in ~30-60 s for MNIST-size
    data on one core; the colour network for RGB, longer), running its inference on `device`
    (default cpu: the repository's numbers are CPU numbers). epochs None: the extractor's own.

    Unlabelled data with `need_extractor` is a DataError (exit 2) naming the way out.
    options: the image options of data.image_folder (data.image_options of the run's config).
    """
    from feddm_hpc.data import load_dataset

    options = options or {}
    key = (dataset, str(path), str(cache_dir), epochs, max_train, need_extractor, str(device),
           tuple(sorted(options.items())))
    if key in _CACHE:
        return _CACHE[key]
    train = load_dataset(dataset, path, "train", **options)
    extractor = None
    if train.labels is None:
        if need_extractor:
            raise DataError(no_labels_message(dataset, path))
    else:
        try:
            test = load_dataset(dataset, path, "test", **options)
        except DataError:
            test = None
        if test is None or test.labels is None:
            # No labelled test split (e.g. an npz with train arrays only): hold out the tail of
            # the training split to measure the extractor's accuracy.
            n_hold = max(1, len(train) // 10)
            tr_img, tr_lab = train.images[:-n_hold], train.labels[:-n_hold]
            te_img, te_lab = train.images[-n_hold:], train.labels[-n_hold:]
        else:
            tr_img, tr_lab, te_img, te_lab = train.images, train.labels, test.images, test.labels
        extractor = get_feature_extractor(dataset, tr_img, tr_lab, te_img, te_lab, train.checksum,
                                          cache_dir=cache_dir, epochs=epochs,
                                          num_classes=train.num_classes, max_train=max_train,
                                          verbose=verbose, device=device)
    ref = Reference(dataset, train.checksum, train.images, train.num_classes, extractor)
    _CACHE[key] = ref
    return ref


def clear_cache() -> None:
    _CACHE.clear()
