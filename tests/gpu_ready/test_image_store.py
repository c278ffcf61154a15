"""Where the training images live: on the rank's device up to system.device_data_max_mb, above
it in (pinned) host memory with only each batch copied to the GPU."""
import numpy as np
import pytest
import torch

from feddm_hpc.data import select_batch, to_device_uint8
from feddm_hpc.federation.cuda_env import HostStore, data_on_device, image_store

MIB = 2 ** 20


@pytest.mark.parametrize("nbytes, device, max_mb, on_device", [
    (47 * MIB, "cuda:0", 1024, True),        # MNIST: 47 MiB per rank
    (1024 * MIB, "cuda", 1024, True),        # the threshold itself still fits
    (1024 * MIB + 1, "cuda:1", 1024, False),
    (1, "cuda:0", 0, False),                 # 0: never on the GPU
    (10 ** 12, "cpu", 0, True),              # a CPU run keeps its tensor whatever the size
])
def test_threshold(nbytes, device, max_mb, on_device):
    assert data_on_device(nbytes, device, max_mb) is on_device


def _images(n=40, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, 6, 6, 1), dtype=np.uint8)


def test_cpu_store_is_the_tensor_it_always_was():
    images = _images()
    store = image_store(images, "cpu", 0)
    assert isinstance(store, torch.Tensor)
    assert torch.equal(store, to_device_uint8(images, "cpu"))


def test_host_store_selects_the_same_batches():
    """HostStore stands in for the device tensor in select_batch and the client's index move."""
    images = _images()
    tensor = to_device_uint8(images, "cpu")
    store = HostStore(tensor.clone(), "cpu")   # unpinned here: pinning needs CUDA
    assert len(store) == 40 and store.shape == tensor.shape and store.device == tensor.device
    index = torch.from_numpy(np.array([3, 0, 39, 3, 17])).to(store.device)
    expected = select_batch(tensor, index)
    got = select_batch(store, index)
    assert got.dtype == torch.float32 and torch.equal(got, expected)
    with pytest.raises(ValueError):
        store.index_select(1, index)


def test_host_store_copies_the_batch_to_its_target(monkeypatch):
    """The batch (not the store) goes to the target device; `meta` stands in for a GPU."""
    store = HostStore(to_device_uint8(_images(), "cpu"), "meta")
    rows = store.index_select(0, torch.tensor([1, 2, 3]))
    assert rows.device.type == "meta" and tuple(rows.shape) == (3, 1, 6, 6)
    assert store.host.device.type == "cpu"
