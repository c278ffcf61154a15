"""Feature space for offline sample-quality metrics: a small classifier trained on the dataset.

Inception-v3 weights cannot be downloaded here, so FD/KID/PRDC are computed in the 128-d
penultimate layer of a small classifier trained on the same dataset (as the KID paper's own code
does for MNIST). Numbers are comparable only within one extractor (same `.name`, dataset
checksum and training settings) and at equal sample counts; they are not FID values.

Which classifier follows the images' channels: grey images (MNIST, Fashion-MNIST) get the LeNet-5
(2 epochs of Adam reach 0.89 on Fashion-MNIST's test split); colour images (CIFAR-10, CelebA,
a user's RGB folder) get a six-convolution VGG-style network with batch norm (colour_net.py),
trained longer with SGD and flip/crop augmentation, because the LeNet reached only 66.1% on
CIFAR-10's test split: a feature space that misreads a third of the images scores colour samples
poorly.

Training is deterministic (fixed seed, one thread, deterministic algorithms) and the weights are
cached as a torch state dict loaded with `weights_only=True` (no pickle of arbitrary objects), keyed
by dataset checksum + architecture + training settings, under `cache_dir`,
`$FEDDM_HPC_CACHE`, or `~/.cache/feddm_hpc`.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from feddm_hpc.evaluation import colour_net
from feddm_hpc.evaluation.quality import feature_stats
from feddm_hpc.optimizers import build_optimizer

ARCH = "lenet5"
# Bump when the network or the training loop changes, so old cache files are not reused.
ARCH_VERSION = 1
# Per architecture: training epochs, batch size and learning rate when the caller leaves them unset.
TRAINING_DEFAULTS = {ARCH: dict(epochs=2, batch_size=128, lr=1e-3),
                     colour_net.ARCH: colour_net.TRAINING_DEFAULTS}


def arch_for(in_channels: int) -> str:
    """The extractor's architecture for images with `in_channels` channels."""
    return ARCH if in_channels == 1 else colour_net.ARCH
FEATURE_DIM = 128
# Real images per reference set. FD falls steeply with N (MNIST real-vs-real ~13 at 1,000 vs ~4 at
# 5,000), so every FD must be quoted with its N; 1,000 keeps CPU sampling of fakes affordable.
DEFAULT_REFERENCE_N = 1000
_BATCH_EVAL = 500


class LeNet(nn.Module):
    """conv5x5(pad 2)-relu-pool-conv5x5-relu-pool-fc(128)-relu-fc(classes)."""

    def __init__(self, in_channels: int, image_size: int, num_classes: int):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 5), nn.ReLU(), nn.MaxPool2d(2),
        )
        side = (image_size // 2 - 4) // 2
        self.fc1 = nn.Linear(64 * side * side, FEATURE_DIM)
        self.fc2 = nn.Linear(FEATURE_DIM, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        # Post-ReLU activations: what the last layer sees (the Inception pool3 convention).
        return torch.relu(self.fc1(self.conv(x).flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.features(x))


def _to_nchw_float(images) -> torch.Tensor:
    """uint8 [N,H,W,C] or [N,H,W] in 0..255, or float [N,C,H,W] in [-1,1] -> float32 NCHW [-1,1]."""
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    x = np.asarray(images)
    if x.dtype == np.uint8:
        if x.ndim == 3:
            x = x[..., None]
        if x.ndim != 4:
            raise ValueError(f"uint8 images must be [N,H,W,C], got shape {x.shape}")
        # np.array copies: inputs may be read-only (np.frombuffer), which torch warns about.
        return torch.from_numpy(np.array(x.transpose(0, 3, 1, 2), dtype=np.float32)) / 127.5 - 1.0
    if x.ndim != 4:
        raise ValueError(f"float images must be [N,C,H,W] in [-1,1], got shape {x.shape}")
    return torch.from_numpy(np.array(x, dtype=np.float32))


@contextmanager
def _deterministic_one_thread():
    # Global torch state: set for training only and restore, so a caller's settings (e.g. the
    # threads an MPI rank chose) survive.
    threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(det)
        torch.set_num_threads(threads)


class FeatureExtractor:
    """A trained extractor in eval mode; `.features()` gives [N, 128] float64 numpy arrays.

    `device` is where inference runs (default cpu: every evaluation number in this repository
    is a CPU number, and a GPU's kernels round differently); inputs move there batch by batch
    and the outputs come back to host memory. Training always runs on the CPU.
    """

    def __init__(self, model: nn.Module, name: str, test_accuracy: float, settings: dict,
                 path: Path | None = None, device: str = "cpu"):
        self.device = str(device)
        self.model = model.eval().to(self.device)
        self.name = name
        self.test_accuracy = float(test_accuracy)
        self.settings = settings
        self.path = path
        self.train_seconds = None  # set only when this call trained the model (not a cache hit)
        self._shape = (settings["in_channels"], settings["image_size"], settings["image_size"])

    def _batches(self, images):
        x = _to_nchw_float(images)
        if tuple(x.shape[1:]) != self._shape:
            raise ValueError(f"{self.name} expects images of shape (C,H,W)={self._shape}, "
                             f"got {tuple(x.shape[1:])}")
        for s in range(0, x.shape[0], _BATCH_EVAL):
            yield x[s:s + _BATCH_EVAL].to(self.device)

    def to(self, device: str) -> "FeatureExtractor":
        """Run inference on `device` from now on (the weights move; the cache file does not)."""
        self.device = str(device)
        self.model.to(self.device)
        return self

    @torch.no_grad()
    def features(self, images) -> np.ndarray:
        # float32 -> float64 is exact, so converting after the copy to the host changes nothing.
        out = [self.model.features(b).cpu().double().numpy() for b in self._batches(images)]
        return np.concatenate(out) if out else np.zeros((0, FEATURE_DIM))

    @torch.no_grad()
    def predict(self, images) -> np.ndarray:
        out = [self.model(b).argmax(1).cpu().numpy() for b in self._batches(images)]
        return np.concatenate(out).astype(np.int64) if out else np.zeros(0, np.int64)


def default_cache_dir() -> Path:
    return Path(os.environ.get("FEDDM_HPC_CACHE") or Path.home() / ".cache" / "feddm_hpc")


def _build(settings: dict) -> nn.Module:
    if settings["arch"] == colour_net.ARCH:
        return colour_net.ColourNet(settings["in_channels"], settings["num_classes"])
    return LeNet(settings["in_channels"], settings["image_size"], settings["num_classes"])


def _train(settings: dict, train_images, train_labels) -> nn.Module:
    if settings["arch"] == colour_net.ARCH:
        return colour_net.train(settings, train_images, train_labels, _to_nchw_float)
    torch.manual_seed(settings["seed"])
    gen = torch.Generator().manual_seed(settings["seed"])
    model = LeNet(settings["in_channels"], settings["image_size"], settings["num_classes"])
    opt = build_optimizer("adam", model.parameters(), settings["lr"])
    labels = torch.from_numpy(np.array(train_labels, dtype=np.int64))  # copy: may be read-only
    n, bs = labels.shape[0], settings["batch_size"]
    model.train()
    for _ in range(settings["epochs"]):
        perm = torch.randperm(n, generator=gen)
        for s in range(0, n, bs):
            idx = perm[s:s + bs].numpy()
            # Convert per batch: the whole float training set would be ~190 MB for MNIST.
            logits = model(_to_nchw_float(train_images[idx]))
            loss = nn.functional.cross_entropy(logits, labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()


def get_feature_extractor(dataset_name: str, train_images, train_labels, test_images, test_labels,
                          checksum: str, cache_dir=None, epochs: int | None = None, *,
                          num_classes: int | None = None, max_train: int | None = None,
                          batch_size: int | None = None, lr: float | None = None, seed: int = 0,
                          verbose: bool = False, device: str = "cpu") -> FeatureExtractor:
    """Load the cached extractor for this dataset and settings, or train it once and cache it.

    The architecture follows the channels (arch_for); epochs, batch_size and lr left None take
    the architecture's defaults (TRAINING_DEFAULTS).

    `train_images` / `test_images` are uint8 [N,H,W,C]. `max_train` trains on the first
    `max_train` training images only (for quick tests). `checksum` identifies the dataset files:
    a different checksum (other data) never reuses weights. Training and the cached test
    accuracy are CPU work whatever `device` is; `device` is where the returned extractor runs.
    """
    train_images = np.asarray(train_images)
    if train_images.ndim == 3:
        train_images = train_images[..., None]
    if max_train is not None:
        train_images, train_labels = train_images[:max_train], np.asarray(train_labels)[:max_train]
    if num_classes is None:
        num_classes = int(max(np.max(train_labels), np.max(test_labels))) + 1
    if train_images.shape[1] != train_images.shape[2]:
        raise ValueError(f"square images expected, got {train_images.shape[1:3]}")
    arch = arch_for(int(train_images.shape[3]))
    defaults = TRAINING_DEFAULTS[arch]
    epochs = defaults["epochs"] if epochs is None else epochs
    batch_size = defaults["batch_size"] if batch_size is None else batch_size
    lr = defaults["lr"] if lr is None else lr
    version = ARCH_VERSION if arch == ARCH else colour_net.ARCH_VERSION
    settings = dict(arch=arch, arch_version=version, dataset=dataset_name, checksum=checksum,
                    epochs=int(epochs), batch_size=int(batch_size), lr=float(lr), seed=int(seed),
                    num_train=int(train_images.shape[0]), num_classes=int(num_classes),
                    in_channels=int(train_images.shape[3]), image_size=int(train_images.shape[1]))
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
    # A user's dataset is named by its import path (pkg.mod:Name): keep the file name plain.
    name = f"{arch}-{re.sub(r'[^A-Za-z0-9_.-]', '_', dataset_name)}-{checksum[:8]}"
    path = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = path / f"{name}-{key[:16]}.pt"

    model = _build(settings)
    if path.exists():
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            if blob.get("key") == key:
                model.load_state_dict(blob["state_dict"])
                return FeatureExtractor(model, name, blob["test_accuracy"], settings, path, device)
        except Exception as exc:  # a truncated or foreign file: retrain and overwrite it
            warnings.warn(f"ignoring unreadable feature-extractor cache {path}: {exc}")

    if verbose:
        print(f"training the {arch} feature extractor for {dataset_name} on "
              f"{settings['num_train']} images, {epochs} epoch(s) (first use; cached in {path.parent})",
              file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    with _deterministic_one_thread():
        model = _train(settings, train_images, train_labels)
    train_s = time.perf_counter() - t0
    ext = FeatureExtractor(model, name, 0.0, settings, path)
    ext.test_accuracy = float((ext.predict(test_images) == np.asarray(test_labels)).mean())
    ext.train_seconds = train_s
    if verbose:
        # stderr: callers such as `feddm-hpc evaluate` keep stdout for their JSON result.
        print(f"trained {name}: test accuracy {ext.test_accuracy:.4f} in {train_s:.1f} s -> {path}",
              file=sys.stderr, flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Temporary name then rename: a concurrent reader (another rank) never sees half a file.
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save({"key": key, "settings": json.dumps(settings), "test_accuracy": ext.test_accuracy,
                "state_dict": model.state_dict()}, tmp)
    os.replace(tmp, path)
    return ext.to(device)


def reference_indices(num_images: int, n: int = DEFAULT_REFERENCE_N, seed: int = 0) -> np.ndarray:
    """The fixed, seeded subset of `n` distinct image indices used as the real reference set."""
    if n > num_images:
        raise ValueError(f"reference set of {n} images requested from only {num_images}")
    return np.sort(np.random.default_rng(seed).choice(num_images, n, replace=False))


def reference_stats(extractor: FeatureExtractor, images, n: int = DEFAULT_REFERENCE_N,
                    seed: int = 0) -> dict:
    """Features, mean and covariance of a seeded random subset of `n` real images.

    FD depends on n: compare a model's samples against a reference of the same n only.
    """
    idx = reference_indices(len(images), n, seed)
    feats = extractor.features(np.asarray(images)[idx])
    mu, sigma = feature_stats(feats)
    return {"features": feats, "mu": mu, "sigma": sigma, "indices": idx, "n": n,
            "feature_extractor": extractor.name}


def extractor_for_dataset(name: str, path=None, cache_dir=None, epochs: int | None = None,
                          **kwargs) -> FeatureExtractor:
    """Load both splits of a named dataset (feddm_hpc.data) and return its cached extractor.

    The cache key uses the training split's checksum: that is what the weights depend on.
    """
    from feddm_hpc.data import load_dataset  # lazy: metrics on arrays need no dataset code

    train, test = load_dataset(name, path, "train"), load_dataset(name, path, "test")
    if train.labels is None or test.labels is None:
        raise ValueError(f"dataset {name!r} has no labels: a classifier feature space needs them")
    num_classes = kwargs.pop("num_classes", None) or train.num_classes
    return get_feature_extractor(name, train.images, train.labels, test.images, test.labels,
                                 train.checksum, cache_dir=cache_dir, epochs=epochs,
                                 num_classes=num_classes, **kwargs)
