"""One call that scores generated images against real ones in a FeatureExtractor's space.

FD, KID and precision/recall/density/coverage all depend on the sample count, so real and fake
sets always have the same size N here (reported as `num_samples`): compare runs only at equal N
and with the same `feature_extractor`. Precision and density alone can look good for garbage
(noise images land inside the wide neighbourhoods of a few odd real images); read them beside
FD, KID, recall and coverage.
"""
from __future__ import annotations

import numpy as np

from feddm_hpc.metrics.features import FeatureExtractor, reference_indices
from feddm_hpc.metrics.quality import (class_histogram, feature_stats, frechet_distance, histogram_distance, kid,
                      precision_recall_density_coverage)

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
