"""The numpy <-> device helpers and the samplers on fake CUDA tensors (FakeTensorMode, no GPU):
no op mixes CPU and CUDA tensors, nothing reads a CUDA tensor's value, and each crossing between
the host and the device is the one copy intended (dispatch_probes.py says what this torch build's
fake CUDA can and cannot run)."""
import numpy as np
import pytest
import torch
from dispatch_probes import fake_cuda, move_to_fake

from feddm_hpc import params
from feddm_hpc.data import select_batch
from feddm_hpc.diffusion import samplers
from feddm_hpc.diffusion.schedule import make_schedule
from feddm_hpc.federation.client import BatchStream, batch_plan, to_device
from feddm_hpc.params import flatten, flatten_into, unflatten_into

pytestmark = pytest.mark.device

DEVICE = "cuda:1"   # an index other than 0: a bare "cuda" somewhere would show as cuda:0


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.GroupNorm(2, 4),
                               torch.nn.Linear(5, 3))


@pytest.fixture
def fresh_host_buffer(monkeypatch):
    # flatten caches its page-locked buffer: a fake one must not outlive the test
    monkeypatch.setattr(params, "_HOST_BUFFER", {}, raising=False)


def test_flatten_copies_to_the_host_once_into_page_locked_memory(fresh_host_buffer):
    model = _model()
    out = np.empty(params.ParamSpec.from_model(model).total, dtype=np.float32)
    with fake_cuda() as rec:
        flatten_into(move_to_fake(model, DEVICE), out)
    assert rec.transfers == [(DEVICE, "cpu", False, True)]
    assert rec.mixed == [] and rec.reads == []


def test_unflatten_copies_to_the_device_once(fresh_host_buffer):
    model = _model()
    vector = flatten(model)
    with fake_cuda() as rec:
        unflatten_into(vector, move_to_fake(model, DEVICE))
    assert rec.transfers == [("cpu", DEVICE, False, False)]
    assert rec.mixed == [] and rec.reads == []


def test_flatten_checks_the_size_on_cuda_too(fresh_host_buffer):
    model = _model()
    with fake_cuda():
        move_to_fake(model, DEVICE)
        with pytest.raises(ValueError):
            flatten_into(model, np.empty(3, dtype=np.float32))
        with pytest.raises(ValueError):
            unflatten_into(np.zeros(3, dtype=np.float32), model)


def test_batch_plan_is_the_stream_step_by_step():
    stream, again = (BatchStream(np.arange(40), 8, np.random.default_rng(5)) for _ in range(2))
    plan = batch_plan(stream, 12)                 # crosses a re-permutation after 5 batches
    assert plan.shape == (12, 8)
    for row in plan:
        np.testing.assert_array_equal(row, again.next())


def test_batch_plan_crosses_once_and_the_steps_index_on_the_device():
    plan = batch_plan(BatchStream(np.arange(40), 8, np.random.default_rng(0)), 6)
    with fake_cuda() as rec:
        images = torch.empty(40, 1, 8, 8, dtype=torch.uint8, device=DEVICE)
        batches = [select_batch(images, b) for b in to_device(plan, images.device).unbind(0)]
    assert rec.transfers == [("cpu", DEVICE, True, True)]     # pinned, without blocking
    assert {str(x.device) for x in batches} == {DEVICE}
    assert rec.mixed == [] and rec.reads == []


class _Denoiser(torch.nn.Module):
    """A stand-in for the UNet, whose timestep embedding indexes tensors with [] (which this
    build's fake CUDA cannot run)."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))

    def forward(self, x, t):
        return self.w * x + 1e-3 * t.to(x.dtype).reshape(-1, 1, 1, 1)


@pytest.mark.parametrize("sampler,timesteps,steps,eta", [
    ("ddim", 12, 2, 0.0), ("ddim", 12, 10, 0.0), ("ddim", 12, 5, 0.5), ("ddpm", 4, 0, 0.0),
    ("ddpm", 12, 0, 0.0)])
def test_samplers_on_cuda_never_wait_for_the_device(sampler, timesteps, steps, eta):
    """The schedule lives on the model's device; its coefficients cross to the host once per call.
    Noise comes from a CPU generator (sampling noise is drawn on the CPU: feddm_hpc/generators.py)
    and crosses from page-locked memory without blocking. (v-prediction's EpsFromV indexes the
    schedule with []: counted on the CPU in test_host_syncs.py.)"""
    generator = torch.Generator().manual_seed(0)
    with fake_cuda() as rec:
        model = move_to_fake(_Denoiser(), DEVICE)
        schedule = make_schedule("linear", timesteps).to(torch.device(DEVICE))
        rec.clear()
        x = samplers.sample(model, schedule, (2, 1, 4, 4), sampler, steps, generator, DEVICE,
                            eta=eta)
    assert str(x.device) == DEVICE
    assert rec.mixed == []
    assert [d for d in rec.read_devices() if d != "cpu"] == []
    to_host = [t for t in rec.transfers if t[1] == "cpu"]
    to_device_ = [t for t in rec.transfers if t[0] == "cpu"]
    assert to_host == [(DEVICE, "cpu", False, False)]
    assert to_device_ and set(to_device_) == {("cpu", DEVICE, True, True)}
    if sampler == "ddpm":
        assert len(to_device_) == timesteps          # x_T and one draw per step but the last
    elif eta == 0.0:
        assert len(to_device_) == 1                  # x_T only
