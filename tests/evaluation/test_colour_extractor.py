"""Colour images get their own feature extractor (evaluation/colour_net.py); grey images keep the
LeNet with the same cache keys (so every committed grey FD stays comparable)."""
import numpy as np
import pytest
import torch

from feddm_hpc.evaluation import colour_net
from feddm_hpc.evaluation.features import arch_for, get_feature_extractor

pytestmark = pytest.mark.slow     # trains two small classifiers (~3-12 s, by the machine's load)


def test_grey_images_keep_the_lenet_and_its_cache_key(tmp_path):
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 255, (200, 12, 12), dtype=np.uint8), rng.integers(0, 10, 200)
    ext = get_feature_extractor("synthetic", images, labels, images[:40], labels[:40],
                                "0123456789abcdef", cache_dir=tmp_path, max_train=200)
    # The key the LeNet had before the colour network existed (epochs 2, batch 128, Adam 1e-3).
    assert ext.path.name == "lenet5-synthetic-01234567-536642d3a76289a6.pt"
    assert arch_for(1) == "lenet5" and arch_for(3) == colour_net.ARCH


def coloured(n, seed):
    """3 classes: the image's red, green or blue channel is the bright one (plus noise)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    images = rng.integers(0, 120, (n, 16, 16, 3))
    images[np.arange(n), :, :, labels] += 120
    return images.astype(np.uint8), labels


def test_the_colour_network_learns_is_deterministic_and_cached(tmp_path):
    train, train_labels = coloured(256, 0)
    test, test_labels = coloured(64, 1)
    args = ("synthetic-rgb", train, train_labels, test, test_labels, "fedcba9876543210")
    first = get_feature_extractor(*args, cache_dir=tmp_path / "a", epochs=2)
    assert first.name.startswith("colournet6-") and first.train_seconds is not None
    assert first.test_accuracy >= 0.9            # chance is 1/3
    again = get_feature_extractor(*args, cache_dir=tmp_path / "b", epochs=2)
    cached = get_feature_extractor(*args, cache_dir=tmp_path / "a", epochs=2)
    assert cached.train_seconds is None          # loaded, not trained
    feats = first.features(test)
    assert feats.shape == (64, colour_net.FEATURE_DIM)
    assert np.array_equal(feats, again.features(test)) and np.array_equal(feats, cached.features(test))


def test_augment_flips_and_shifts_within_the_reflect_padding():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    out = colour_net.augment(x, torch.Generator().manual_seed(0))
    again = colour_net.augment(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and torch.equal(out, again)
    padded = torch.nn.functional.pad(torch.cat([x, x.flip(3)]), (4,) * 4, mode="reflect")
    for i in range(2):   # each output image is an 8x8 window of its padded (maybe flipped) self
        windows = padded[[i, i + 2]].unfold(2, 8, 1).unfold(3, 8, 1)      # [2, C, 9, 9, 8, 8]
        hits = (windows == out[i][None, :, None, None]).flatten(4).all(-1).all(1)
        assert hits.any()


def test_one_cycle_rises_to_the_peak_then_falls_to_zero():
    lrs = [colour_net.lr_at(s, 100, 0.1) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1 / 20) and max(lrs) == pytest.approx(0.1)
    assert np.argmax(lrs) == 19 and lrs[-1] == pytest.approx(0.1 / 80)
    assert all(a >= b for a, b in zip(lrs[19:], lrs[20:]))
