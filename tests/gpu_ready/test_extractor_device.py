"""The evaluation feature extractors take a device (default cpu): inputs move there batch by
batch and the outputs come back through `.cpu()` before `.numpy()`. `meta` stands in for a GPU:
its tensors, like CUDA's, cannot be read by `.numpy()` without `.cpu()`."""
import numpy as np
import torch
from torch import nn

from feddm_hpc.evaluation import features as features_mod
from feddm_hpc.evaluation.features import FeatureExtractor, LeNet, _to_nchw_float
from feddm_hpc.evaluation.inception import InceptionExtractor

SETTINGS = {"in_channels": 1, "image_size": 28}


def _images(n):
    return np.random.default_rng(0).integers(0, 256, size=(n, 28, 28, 1), dtype=np.uint8)


def _lenet():
    torch.manual_seed(0)
    return LeNet(1, 28, 10)


def test_cpu_output_equals_the_previous_code(monkeypatch):
    monkeypatch.setattr(features_mod, "_BATCH_EVAL", 7)     # several batches
    images = _images(20)
    model = _lenet().eval()
    with torch.no_grad():
        x = _to_nchw_float(images)
        old_f = np.concatenate([model.features(x[s:s + 7]).double().numpy() for s in range(0, 20, 7)])
        old_p = np.concatenate([model(x[s:s + 7]).argmax(1).numpy() for s in range(0, 20, 7)])
    for ext in (FeatureExtractor(model, "t", 0.0, SETTINGS),
                FeatureExtractor(model, "t", 0.0, SETTINGS, device="cpu")):
        assert ext.device == "cpu"
        f = ext.features(images)
        assert f.dtype == np.float64 and np.array_equal(f, old_f)
        assert np.array_equal(ext.predict(images), old_p.astype(np.int64))


class DeviceTensor:
    """What a model on a GPU returns: `.numpy()` fails until `.cpu()` brought it home."""

    def __init__(self, value):
        self.value = value

    def double(self):
        return DeviceTensor(self.value.double())

    def argmax(self, dim):
        return DeviceTensor(self.value.argmax(dim))

    def cpu(self):
        return self.value

    def numpy(self):
        raise TypeError("can't convert cuda:0 device type tensor to numpy; use Tensor.cpu()")


class OnDevice(nn.Module):
    """Checks that every batch arrives on the extractor's device; answers with DeviceTensors."""

    def __init__(self, dim, device):
        super().__init__()
        self.dim, self.device, self.batches = dim, device, []

    def _out(self, x):
        assert x.device.type == self.device
        self.batches.append(int(x.shape[0]))
        return DeviceTensor(torch.ones(x.shape[0], self.dim))

    def features(self, x):
        return self._out(x)

    def forward(self, x):
        return self._out(x)


def test_lenet_extractor_moves_batches_and_reads_back_through_cpu(monkeypatch):
    monkeypatch.setattr(features_mod, "_BATCH_EVAL", 4)
    ext = FeatureExtractor(_lenet(), "t", 0.0, SETTINGS, device="meta")
    assert next(ext.model.parameters()).device.type == "meta"
    ext.model = OnDevice(128, "meta")
    f = ext.features(_images(10))
    assert f.shape == (10, 128) and f.dtype == np.float64 and ext.model.batches == [4, 4, 2]
    assert ext.predict(_images(3)).shape == (3,)


def test_to_moves_an_extractor():
    ext = FeatureExtractor(_lenet(), "t", 0.0, SETTINGS).to("meta")
    assert ext.device == "meta" and next(ext.model.parameters()).device.type == "meta"


def _tiny_inception():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, stride=8), nn.AdaptiveAvgPool2d(1), nn.Flatten())


def test_inception_cpu_output_equals_the_previous_code():
    import torch.nn.functional as F

    images = _images(3)
    model = _tiny_inception().eval()
    with torch.no_grad():
        b = (_to_nchw_float(images) + 1.0) / 2.0
        b = F.interpolate(b.repeat(1, 3, 1, 1), size=(299, 299), mode="bilinear", align_corners=False)
        old = model(2.0 * b - 1.0).double().numpy()
    ext = InceptionExtractor(model, "pytorch-fid", None)
    assert ext.device == "cpu" and np.array_equal(ext.features(images), old)


def test_inception_moves_batches_and_reads_back_through_cpu():
    ext = InceptionExtractor(_tiny_inception(), "pytorch-fid", None, device="meta")
    ext.model = OnDevice(2048, "meta")
    f = ext.features(_images(3))
    assert f.shape == (3, 2048) and f.dtype == np.float64
