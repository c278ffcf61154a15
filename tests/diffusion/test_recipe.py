"""The training-recipe options: v-prediction, min-SNR weighting, the lr schedule by round, the
server EMA warm-up. Each is checked against values computed by hand from its definition."""
import math

import pytest
import torch

from feddm_hpc.config import ClientConfig, ServerConfig, load_config
from feddm_hpc.diffusion.loss import EpsFromV, eps_model, training_loss
from feddm_hpc.diffusion.samplers import sample
from feddm_hpc.diffusion.schedule import make_schedule
from feddm_hpc.errors import ConfigError
from feddm_hpc.federation.client import round_lr
from feddm_hpc.federation.server import ema_decay_at


class Recorder(torch.nn.Module):
    """Returns a fixed prediction and remembers the (x_t, t) it was asked about."""

    def __init__(self, out):
        super().__init__()
        self.out = out
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x_t, t):
        self.x_t, self.t = x_t, t
        return self.out + 0 * self.w


def _draws(schedule, x0, seed):
    """The (t, noise) that training_loss draws from a generator seeded with `seed`."""
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(0, schedule.timesteps, (x0.shape[0],), generator=g)
    return t, torch.randn(x0.shape, generator=g)


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_min_snr_loss_matches_the_definition(prediction):
    s = make_schedule("linear", 50)
    x0 = torch.rand(6, 1, 4, 4) * 2 - 1
    out = torch.randn(6, 1, 4, 4)
    gamma = 2.0
    loss = training_loss(Recorder(out), x0, s, torch.Generator().manual_seed(7),
                         prediction=prediction, weighting="min_snr", min_snr_gamma=gamma)
    t, noise = _draws(s, x0, 7)
    a = s.alphas_cumprod[t].float().view(-1, 1, 1, 1)
    target = noise if prediction == "eps" else a.sqrt() * noise - (1 - a).sqrt() * x0
    snr = (a / (1 - a)).flatten()
    weight = torch.clamp(snr, max=gamma) / (snr if prediction == "eps" else snr + 1)
    expected = (weight * ((out - target) ** 2).mean(dim=(1, 2, 3))).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    # Both weightings are min(SNR, gamma) times the x0 error, so they agree on x0 mistakes.
    assert weight.max() <= max(gamma, 1.0)


def test_default_loss_is_plain_mse_on_the_noise():
    s = make_schedule("linear", 50)
    x0 = torch.rand(4, 1, 4, 4) * 2 - 1
    out = torch.randn(4, 1, 4, 4)
    t, noise = _draws(s, x0, 3)
    loss = training_loss(Recorder(out), x0, s, torch.Generator().manual_seed(3))
    assert loss.item() == pytest.approx(((out - noise) ** 2).mean().item(), rel=1e-6)


def test_v_target_and_eps_from_v_invert_each_other():
    """A model that predicts v exactly, wrapped by EpsFromV, returns the true noise."""
    s = make_schedule("cosine", 100)
    x0 = torch.rand(5, 1, 4, 4) * 2 - 1
    noise = torch.randn(5, 1, 4, 4)
    t = torch.tensor([0, 10, 50, 90, 99])
    a = s.alphas_cumprod[t].float().view(-1, 1, 1, 1)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
    v = a.sqrt() * noise - (1 - a).sqrt() * x0
    eps = EpsFromV(Recorder(v), s)(x_t, t)
    torch.testing.assert_close(eps, noise, rtol=1e-4, atol=1e-4)
    assert eps_model(Recorder(v), s, "eps").__class__ is Recorder
    with pytest.raises(ValueError, match="prediction"):
        eps_model(Recorder(v), s, "x0")


def test_v_sampler_shares_parameters_and_runs():
    s = make_schedule("linear", 10)
    model = Recorder(torch.zeros(2, 1, 4, 4))
    wrapped = EpsFromV(model, s)
    assert list(wrapped.parameters()) == list(model.parameters())
    x = sample(model, s, (2, 1, 4, 4), "ddim", 5, torch.Generator().manual_seed(0), "cpu",
               prediction="v")
    assert x.shape == (2, 1, 4, 4) and torch.isfinite(x).all()


def test_round_lr_warmup_then_cosine_to_the_floor():
    cfg = ClientConfig(lr=0.01, lr_schedule="cosine", lr_warmup_rounds=2, lr_min_ratio=0.1)
    rounds = 12
    lrs = [round_lr(cfg, r, rounds) for r in range(rounds)]
    assert lrs[0] == pytest.approx(0.005) and lrs[1] == pytest.approx(0.01)
    assert lrs[2] == pytest.approx(0.01)                # the cosine starts at the peak
    assert lrs[-1] == pytest.approx(0.001)              # and ends at lr * lr_min_ratio
    progress = (5 - 2) / (rounds - 1 - 2)              # round 5: a third of the way down
    assert lrs[5] == pytest.approx(0.001 + 0.009 * 0.5 * (1 + math.cos(math.pi * progress)))
    assert all(a >= b - 1e-15 for a, b in zip(lrs[1:], lrs[2:]))
    const = ClientConfig(lr=0.01, lr_schedule="constant")
    assert {round_lr(const, r, rounds) for r in range(rounds)} == {0.01}


def test_ema_warmup_decay():
    assert ema_decay_at(ServerConfig(ema_decay=0.9, ema_warmup=False), 0) == 0.9
    warm = ServerConfig(ema_decay=0.9, ema_warmup=True)
    assert ema_decay_at(warm, 0) == pytest.approx(0.1)
    assert ema_decay_at(warm, 10) == pytest.approx(11 / 20)
    assert ema_decay_at(warm, 1000) == 0.9
    # After 10 rounds the warmed-up EMA holds (prod of decays) of the initial weights: tiny.
    share = math.prod(ema_decay_at(warm, r) for r in range(10))
    assert share < 1e-4 < 0.9 ** 10


@pytest.mark.parametrize("key,value,field", [
    ("diffusion.prediction", "x0", "diffusion.prediction"),
    ("diffusion.loss_weighting", "p2", "diffusion.loss_weighting"),
    ("diffusion.min_snr_gamma", "0", "diffusion.min_snr_gamma"),
    ("client.lr_schedule", "step", "client.lr_schedule"),
    ("client.lr_warmup_rounds", "-1", "client.lr_warmup_rounds"),
    ("client.lr_min_ratio", "2", "client.lr_min_ratio"),
])
def test_recipe_fields_are_validated(key, value, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_config("configs/tiny.yaml", [f"{key}={value}"])


def test_a_checkpoint_config_from_before_the_recipe_keeps_its_recipe():
    """A resolved config without the recipe fields (written before they existed) resumes with
    the values it was trained with, not the new defaults; a current one keeps its own."""
    from feddm_hpc.config import config_from_yaml_text, dump_yaml
    old_text = "diffusion: {timesteps: 100}\nclient: {lr: 0.001}\nserver: {ema_decay: 0.5}\n"
    old = config_from_yaml_text(old_text)
    assert (old.diffusion.loss_weighting, old.client.lr_schedule, old.server.ema_warmup) == \
        ("none", "constant", False)
    current = load_config("configs/tiny.yaml")
    again = config_from_yaml_text(dump_yaml(current))
    assert again == current and again.diffusion.loss_weighting == "min_snr"
