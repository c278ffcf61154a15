"""Scoring generated images against real ones: `evaluate_samples` in a FeatureExtractor's space
(FD, KID, PRDC, class histogram) and `score_samples`, which adds the seeded real reference set and
the optional standard (Inception) FID.

FD, KID and precision/recall/density/coverage all depend on the sample count, so real and fake
sets always have the same size N here (reported as `num_samples`): compare runs only at equal N
and with the same `feature_extractor`. Precision and density alone can look good for garbage
(noise images land inside the wide neighbourhoods of a few odd real images); read them beside
FD, KID, recall and coverage.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from feddm_hpc.evaluation.features import FeatureExtractor, default_cache_dir, reference_indices
from feddm_hpc.evaluation.generation import to_uint8_nhwc
from feddm_hpc.evaluation.quality import (
    class_histogram,
    feature_stats,
    frechet_distance,
    histogram_distance,
    kid,
    precision_recall_density_coverage,
)
from feddm_hpc.evaluation.reference import REFERENCE_SEED

KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
PRDC_K = 5


def evaluate_samples(fake_images, real_images, extractor: FeatureExtractor, num_classes: int,
                     seed: int = 0) -> dict:
    """Score `fake_images` (N images) against N real images.

    Images are uint8 [N,H,W,C] or float [N,C,H,W] in [-1,1]. If more real images are given, a
    seeded subset of N (`reference_indices(len(real), N, seed)`) is used, so the same seed gives
    the same reference set. The class histogram is the extractor's predictions on the fakes; its
    distance is total variation to the predicted histogram of the real subset (the same
    classifier's biases on both sides).
    """
    n = len(fake_images)
    if len(real_images) < n:
        raise ValueError(f"need at least as many real images as fake ones "
                         f"({len(real_images)} < {n})")
    if len(real_images) > n:
        real_images = np.asarray(real_images)[reference_indices(len(real_images), n, seed)]
    f_real, f_fake = extractor.features(real_images), extractor.features(fake_images)
    fd = frechet_distance(*feature_stats(f_real), *feature_stats(f_fake))
    # Subsets of half the samples: with subsets of all N every subset would be the same and
    # kid_std would always read 0; the mean stays an unbiased MMD^2 estimate either way.
    kid_mean, kid_std = kid(f_real, f_fake, subsets=KID_SUBSETS,
                            subset_size=min(KID_SUBSET_SIZE, max(n // 2, 2)), seed=seed)
    prdc = precision_recall_density_coverage(f_real, f_fake, k=PRDC_K)
    hist_fake = class_histogram(extractor.predict(fake_images), num_classes)
    hist_real = class_histogram(extractor.predict(real_images), num_classes)
    return {
        "fd": fd,
        "kid": kid_mean,
        "kid_std": kid_std,
        **prdc,
        "class_histogram": hist_fake.tolist(),
        "class_histogram_distance": histogram_distance(hist_fake, hist_real),
        "num_samples": n,
        "feature_extractor": extractor.name,
        "extractor_test_accuracy": extractor.test_accuracy,
    }


FID_UNAVAILABLE = ("standard FID (Inception-v3) not computed: its weights cannot be downloaded "
                   "here; pass --inception-weights FILE (pytorch-fid's pt_inception-2015-12-05 "
                   "or torchvision's inception_v3_google state dict)")


def _inception_fid(inception, real_u8: np.ndarray, fake_u8: np.ndarray, dataset_checksum: str,
                   cache_dir) -> float:
    """Standard FID; the real statistics are cached per (weights file, real image set), and per
    device type off the CPU (a GPU's statistics differ in the last bits and must not replace the
    CPU's)."""
    h = hashlib.sha256(inception.path.read_bytes()).hexdigest()[:16]
    r = hashlib.sha256(np.ascontiguousarray(real_u8).data).hexdigest()[:16]
    kind = str(getattr(inception, "device", "cpu")).split(":")[0]
    tag = "" if kind == "cpu" else f"-{kind}"
    cache = Path(cache_dir or default_cache_dir()) / f"inception-{h}-{dataset_checksum[:8]}-{r}{tag}.npz"
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            mu_r, s_r = z["mu"], z["sigma"]
    else:
        mu_r, s_r = feature_stats(inception.features(real_u8))
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npz")
        np.savez(tmp, mu=mu_r, sigma=s_r)
        tmp.replace(cache)
    return frechet_distance(mu_r, s_r, *feature_stats(inception.features(fake_u8)))


def score_samples(fake: np.ndarray, reference, num_samples: int, inception=None,
                  cache_dir=None) -> dict:
    """Root only: metrics of float [N,C,H,W] samples against N seeded real training images."""
    fake_u8 = to_uint8_nhwc(fake)
    real_u8 = reference.images[reference_indices(len(reference.images), num_samples,
                                                 REFERENCE_SEED)]
    if reference.extractor is not None:
        result = evaluate_samples(fake_u8, real_u8, reference.extractor, reference.num_classes,
                                  seed=REFERENCE_SEED)
        result["feature_extractor_id"] = reference.extractor.path.stem
    else:
        result = {k: None for k in ("fd", "kid", "kid_std", "precision", "recall", "density",
                                    "coverage", "class_histogram", "class_histogram_distance",
                                    "feature_extractor", "feature_extractor_id",
                                    "extractor_test_accuracy")}
        result["num_samples"] = num_samples
    result["reference_seed"] = REFERENCE_SEED
    result["dataset"] = reference.dataset
    if inception is None:
        result.update(fid_inception=None, note=FID_UNAVAILABLE)
    else:
        result["fid_inception"] = _inception_fid(inception, real_u8, fake_u8, reference.checksum,
                                                 cache_dir)
        result["inception_weights"] = f"{inception.path.name} ({inception.variant})"
        if inception.variant != "pytorch-fid":
            result["note"] = ("fid_inception uses torchvision's ImageNet Inception weights: not "
                              "comparable with published FIDs (those use pytorch-fid/TF weights)")
    return result
