"""Host syncs and host->device copies must not grow with the number of steps (issue 8).

On CUDA every read of a device tensor into Python (`.item()`, `float(t)`) waits for the GPU, and
every pageable host->device copy waits for the stream: once per step, the GPU idles between steps.
These tests count both on the CPU (reads) and with the model on the meta device (copies between
the host and a second device), so they run without a GPU.
"""
import numpy as np
import pytest
import torch
from dispatch_probes import DeviceRecorder, one_thread  # noqa: F401 (one_thread: autouse fixture)

from feddm_hpc import generators
from feddm_hpc.config import ClientConfig, ModelConfig
from feddm_hpc.diffusion import samplers
from feddm_hpc.diffusion.schedule import make_schedule, randn
from feddm_hpc.diffusion.unet import build_unet
from feddm_hpc.federation import client
from feddm_hpc.federation.client import LocalTrainer
from feddm_hpc.params import ParamViews, flatten

pytestmark = pytest.mark.device


def _tiny_unet():
    torch.manual_seed(0)
    return build_unet(ModelConfig(base_channels=4, channel_mults=(1,), num_res_blocks=1,
                                  attention_resolutions=(), dropout=0.0), 1, 8)


@pytest.fixture(scope="module")
def tiny():
    model = _tiny_unet()
    images = (torch.rand(32, 1, 8, 8) * 255).to(torch.uint8)
    return model, images, make_schedule("linear", 10), flatten(model)


def _cpu_reads(tiny, monkeypatch, optimizer: str, steps: int) -> int:
    """Values read into Python during one client's training, less the optimizer's step counters
    (torch.optim keeps those on the CPU whatever the parameters' device: no GPU wait)."""
    model, images, schedule, w0 = tiny
    made = []
    real_make = client.make_optimizer
    monkeypatch.setattr(client, "make_optimizer", lambda *a, **k: made.append(real_make(*a, **k))
                        or made[-1])
    cfg = ClientConfig(local_steps=steps, batch_size=8, optimizer=optimizer, lr=1e-3, grad_clip=1.0)
    trainer = LocalTrainer(model, schedule, cfg, images, "cpu", seed=3)
    with DeviceRecorder() as rec:
        trainer.train(w0, client_id=1, indices=np.arange(32), round_index=0)
    counters = {id(step) for step in made[0].step_counters()}
    return sum(1 for _, tensor in rec.reads if id(tensor) not in counters)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_local_training_reads_the_loss_once_whatever_the_steps(tiny, monkeypatch, optimizer):
    assert _cpu_reads(tiny, monkeypatch, optimizer, 2) == _cpu_reads(tiny, monkeypatch, optimizer, 6) == 1


def _sample_reads(sampler: str, timesteps: int, steps: int, eta: float = 0.0,
                  prediction: str = "eps") -> int:
    model, schedule = _tiny_unet(), make_schedule("linear", timesteps)
    gen = torch.Generator().manual_seed(0)
    with DeviceRecorder() as rec:
        samplers.sample(model, schedule, (2, 1, 8, 8), sampler, steps, gen, "cpu", eta=eta,
                        prediction=prediction)
    return len(rec.reads)


@pytest.mark.parametrize("eta,prediction", [(0.0, "eps"), (0.5, "v")])
def test_ddim_reads_do_not_grow_with_steps(eta, prediction):
    """The old samplers read each coefficient with float(tensor[i]): 2 + 2 per step."""
    assert _sample_reads("ddim", 12, 2, eta, prediction) == _sample_reads("ddim", 12, 10, eta, prediction)


def test_ddpm_reads_do_not_grow_with_timesteps():
    """The old DDPM sampler read five coefficients per step (T = 4: 19 reads, T = 12: 59)."""
    assert _sample_reads("ddpm", 4, 0) == _sample_reads("ddpm", 12, 0)


def test_noise_drawn_into_a_buffer_equals_schedule_randn():
    """samplers._noise draws a CPU generator's noise for a CUDA model into page-locked memory with
    randn(out=...): the same numbers as schedule.randn's, for the small and the vectorised path."""
    for shape in [(2, 1, 3, 3), (4, 3, 16, 16)]:
        buf = torch.empty(shape)
        torch.randn(shape, generator=torch.Generator().manual_seed(7), out=buf)
        assert torch.equal(buf, randn(shape, torch.Generator().manual_seed(7), "cpu"))


def _meta_copies(monkeypatch, optimizer: str, steps: int):
    """One client's training with the model and the images on the meta device (a second device
    that holds no data): the copies between the host and it, and the reads of its tensors."""
    model = _tiny_unet()
    w0 = flatten(model)
    images = (torch.rand(32, 1, 8, 8) * 255).to(torch.uint8).to("meta")

    def loss_fn(model, x0, schedule, generator):   # no draws: a generator cannot live on meta
        return model(x0, torch.zeros(x0.shape[0], dtype=torch.int64, device=x0.device)).pow(2).mean()

    # meta has no values to read back (the trained vector leaves the parameters in one cat)
    monkeypatch.setattr(ParamViews, "read_into", lambda self, out: out)
    monkeypatch.setattr(generators, "make_generator", lambda device, seed: torch.Generator())
    cfg = ClientConfig(local_steps=steps, batch_size=8, optimizer=optimizer, lr=1e-3, grad_clip=1.0)
    trainer = LocalTrainer(model.to("meta"), make_schedule("linear", 10), cfg, images, "meta",
                           seed=3, loss_fn=loss_fn)
    with DeviceRecorder() as rec:
        trainer.train(w0, client_id=1, indices=np.arange(32), round_index=0)
    return rec.transfers, [d for d in rec.read_devices() if d == "meta"], rec.mixed


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_local_training_copies_to_the_device_once_per_client(monkeypatch, optimizer):
    """The old loop copied each step's batch index to the device: one blocking copy per step."""
    short, long_ = _meta_copies(monkeypatch, optimizer, 2), _meta_copies(monkeypatch, optimizer, 6)
    assert short == long_
    transfers, device_reads, mixed = long_
    # the global vector (one copy to the device, then split into the parameters there:
    # params.ParamViews) and the batch plan, nothing per step
    assert len(transfers) == 2
    assert device_reads == ["meta"] and mixed == []     # the loss, once


def _group_reads(tiny, monkeypatch, steps: int, unequal: bool) -> int:
    """Values read into Python while a group of 3 clients trains (client_groups.py), less the
    optimizer's step counters, which torch keeps on the CPU."""
    from feddm_hpc.config import DiffusionConfig
    from feddm_hpc.federation import client_groups
    from feddm_hpc.federation.client_groups import GroupTrainer, Member

    model, images, schedule, w0 = tiny
    made = []
    real_make = client_groups.make_optimizer
    monkeypatch.setattr(client_groups, "make_optimizer",
                        lambda *a, **k: made.append(real_make(*a, **k)) or made[-1])
    cfg = ClientConfig(local_steps=None if unequal else steps, local_epochs=steps / 2 if unequal
                       else None, batch_size=8, optimizer="adam", lr=1e-3, grad_clip=1.0)
    trainer = LocalTrainer(model, schedule, cfg, images, "cpu", seed=3)
    group = GroupTrainer(trainer, DiffusionConfig(timesteps=10, loss_weighting="min_snr"))
    sizes = (16, 8, 16) if unequal else (8, 8, 8)   # local_epochs: steps = epochs x size / 8
    members, start = [], 0
    for cid, size in enumerate(sizes):
        members.append(Member(cid, np.arange(start, start + size)))
        start = (start + size) % 16
    with DeviceRecorder() as rec:
        group.train_group(w0, members, 0)
    counters = {id(step) for step in made[0].step_counters()}
    return sum(1 for _, tensor in rec.reads if id(tensor) not in counters)


@pytest.mark.parametrize("unequal", [False, True])
def test_group_training_reads_do_not_grow_with_steps(tiny, monkeypatch, unequal):
    # The losses are read once, at the end; the rows still training are known without a read.
    assert _group_reads(tiny, monkeypatch, 2, unequal) == _group_reads(tiny, monkeypatch, 6, unequal)
