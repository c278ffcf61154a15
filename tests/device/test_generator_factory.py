"""Training noise is drawn on the exact device the model runs on, index included (a bare "cuda"
draws every rank's numbers on cuda:0): each caller asks feddm_hpc.generators.make_generator for
its model's device string. The factory is replaced here, so no GPU is needed."""
import numpy as np
import pytest
import torch
from dispatch_probes import one_thread  # noqa: F401 (an autouse fixture: tiny models on one thread)

from feddm_hpc import generators, seeding
from feddm_hpc.config import ClientConfig
from feddm_hpc.diffusion.grids import draw_samples
from feddm_hpc.diffusion.schedule import make_schedule
from feddm_hpc.federation.client import LocalTrainer
from feddm_hpc.federation.personalization import eval_loss
from feddm_hpc.params import flatten

pytestmark = pytest.mark.device


class _Asked(Exception):
    """Stops the caller at its generator: the rest would need the device itself."""


@pytest.fixture
def asked(monkeypatch):
    calls = []

    def factory(device, seed):
        calls.append((device, seed))
        raise _Asked

    monkeypatch.setattr(generators, "make_generator", factory)
    return calls


class _Denoiser(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x, t):
        return self.conv(x)


@pytest.fixture
def parts():
    torch.manual_seed(0)
    model = _Denoiser()
    images = (torch.rand(16, 1, 8, 8) * 255).to(torch.uint8)
    return model, images, make_schedule("linear", 10), flatten(model)


def test_client_training_draws_on_the_model_device(asked, parts):
    model, images, schedule, w0 = parts
    trainer = LocalTrainer(model, schedule, ClientConfig(local_steps=2, batch_size=4), images,
                           "cuda:1", seed=3)
    with pytest.raises(_Asked):
        trainer.train(w0, client_id=5, indices=np.arange(16), round_index=2)
    assert asked == [("cuda:1", seeding.seed_for(3, seeding.TRAIN, 2, 5))]


def test_sample_grids_draw_on_the_cpu_like_evaluation(asked, parts):
    model, _, schedule, w0 = parts
    with pytest.raises(_Asked):
        draw_samples(model, schedule, w0, (1, 8, 8), 4, "ddim", 2, seed=3, round_index=7,
                     device="cuda:1")
    assert asked == [("cpu", seeding.seed_for(3, seeding.SAMPLE, 7))]


def test_personalization_evaluation_draws_on_the_model_device(asked, parts):
    model, images, schedule, w0 = parts
    with pytest.raises(_Asked):
        eval_loss(model, schedule, images, w0, np.arange(4), seed=3, client_id=5, device="cuda:1")
    assert asked == [("cuda:1", seeding.seed_for(3, seeding.PERSONAL_EVAL, 0, 5))]


def test_on_the_cpu_the_factory_gives_the_generator_of_before():
    made = generators.make_generator("cpu", 1234)
    before = torch.Generator(device="cpu")
    before.manual_seed(1234)
    assert made.device == torch.device("cpu")
    assert torch.equal(torch.randn(50, generator=made), torch.randn(50, generator=before))


def test_a_cpu_client_still_trains_with_the_factory_generator(monkeypatch, parts):
    model, images, schedule, w0 = parts
    calls = []
    real = generators.make_generator
    monkeypatch.setattr(generators, "make_generator",
                        lambda device, seed: calls.append(device) or real(device, seed))
    trainer = LocalTrainer(model, schedule, ClientConfig(local_steps=2, batch_size=4), images,
                           "cpu", seed=3)
    _, result = trainer.train(w0, client_id=5, indices=np.arange(16), round_index=2)
    assert calls == ["cpu"] and result.steps == 2 and np.isfinite(result.loss)
