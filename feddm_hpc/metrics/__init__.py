"""Sample-quality evaluation: FD/KID/PRDC in the features of a classifier trained on the dataset.

quality.py holds the pure numpy metrics, features.py the cached LeNet feature extractor and
evaluate.py the one call that scores generated images against real ones.
"""

from feddm_hpc.metrics.evaluate import evaluate_samples
from feddm_hpc.metrics.features import (DEFAULT_REFERENCE_N, FeatureExtractor,
                                        extractor_for_dataset, get_feature_extractor,
                                        reference_indices, reference_stats)
from feddm_hpc.metrics.quality import (class_histogram, feature_stats, frechet_distance,
                                       histogram_distance, kid, precision_recall_density_coverage)

__all__ = [
    "evaluate_samples", "DEFAULT_REFERENCE_N", "FeatureExtractor", "extractor_for_dataset",
    "get_feature_extractor", "reference_indices", "reference_stats", "class_histogram",
    "feature_stats", "frechet_distance", "histogram_distance", "kid",
    "precision_recall_density_coverage",
]
