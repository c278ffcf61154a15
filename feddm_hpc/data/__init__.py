"""Datasets (MNIST-family IDX, npz, HDF5, image folders, CIFAR-10 binary) and client partitioners
(iid, dirichlet, shards)."""

from feddm_hpc.data.datasets import (
    DATASETS,
    SPLITS,
    Dataset,
    image_options,
    load_configured,
    load_dataset,
    mnist_dir,
    select_batch,
    to_device_uint8,
    to_model_tensor,
    to_uint8_images,
)
from feddm_hpc.data.idx import read_idx, read_idx_images, read_idx_labels, write_idx
from feddm_hpc.data.partition import SCHEMES, label_histograms, partition, summarize_partition

__all__ = [
    "DATASETS", "SPLITS", "SCHEMES", "Dataset", "image_options", "load_configured", "load_dataset", "mnist_dir", "select_batch", "to_device_uint8", "to_model_tensor",
    "to_uint8_images", "read_idx", "read_idx_images", "read_idx_labels", "write_idx",
    "partition", "label_histograms", "summarize_partition",
]
