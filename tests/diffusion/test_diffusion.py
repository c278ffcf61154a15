from types import SimpleNamespace

import pytest
import torch

from feddm_hpc.diffusion.loss import training_loss
from feddm_hpc.diffusion.samplers import ddim_sample, ddim_timesteps, ddpm_sample, sample
from feddm_hpc.diffusion.schedule import make_schedule
from feddm_hpc.diffusion.unet import build_unet

TINY = SimpleNamespace(base_channels=8, channel_mults=(1, 2), num_res_blocks=1,
                       attention_resolutions=(), dropout=0.1)


def tiny_model(seed=0, size=8):
    torch.manual_seed(seed)
    return build_unet(TINY, 1, size)


def gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_schedule_is_well_formed(kind):
    s = make_schedule(kind, 1000)
    assert s.timesteps == 1000
    assert ((s.betas > 0) & (s.betas < 1)).all()
    assert (s.alphas_cumprod[1:] < s.alphas_cumprod[:-1]).all()
    assert torch.allclose(s.sqrt_alphas_cumprod ** 2 + s.sqrt_one_minus_alphas_cumprod ** 2,
                          torch.ones(1000, dtype=torch.float64))
    assert (s.posterior_variance[1:] > 0).all() and (s.posterior_variance <= s.betas).all()
    assert torch.isfinite(s.posterior_log_variance_clipped).all()


def test_linear_endpoints():
    s = make_schedule("linear", 50, beta_start=1e-3, beta_end=0.05)
    assert s.betas[0].item() == pytest.approx(1e-3)
    assert s.betas[-1].item() == pytest.approx(0.05)


def test_cosine_alpha_bar_goes_from_one_to_zero():
    s = make_schedule("cosine", 1000)
    assert s.alphas_cumprod[0].item() > 0.999
    assert s.alphas_cumprod[-1].item() < 1e-4
    assert s.betas.max().item() <= 0.999


def test_unknown_schedule_lists_valid_kinds():
    with pytest.raises(ValueError, match="linear, cosine"):
        make_schedule("quadratic", 10)


def test_schedule_to_device_keeps_values():
    s = make_schedule("linear", 10).to("cpu")
    assert s.betas.device.type == "cpu" and s.timesteps == 10


def test_training_loss_is_deterministic_per_generator_seed():
    model, s = tiny_model(), make_schedule("linear", 100)
    # Perturb the zero-initialised output layer so the prediction depends on the input.
    with torch.no_grad():
        model.conv_out.weight.normal_(0, 0.1)
    model.eval()  # dropout off: only the generator should drive the randomness
    x0 = torch.rand(4, 1, 8, 8, generator=gen(9)) * 2 - 1
    a, b = training_loss(model, x0, s, gen(1)), training_loss(model, x0, s, gen(1))
    c = training_loss(model, x0, s, gen(2))
    assert a.dim() == 0 and torch.isfinite(a) and a.item() > 0
    assert torch.equal(a, b)
    assert a.item() != c.item()


@pytest.mark.slow
def test_a_few_adam_steps_on_one_batch_reduce_the_loss():
    model, s = tiny_model(), make_schedule("linear", 100)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    x0 = torch.rand(8, 1, 8, 8, generator=gen(0)) * 2 - 1

    def loss_at(seed):
        # Fixed generator seed: the same t and noise every time, so losses are comparable.
        return training_loss(model, x0, s, gen(seed))

    before = loss_at(5).item()
    for _ in range(15):
        opt.zero_grad()
        loss_at(5).backward()
        opt.step()
    assert loss_at(5).item() < 0.8 * before


@pytest.mark.parametrize("sampler,steps", [pytest.param("ddpm", 0, marks=pytest.mark.slow),
                                           ("ddim", 5), ("ddim", 1)])
def test_samplers_shape_range_determinism_and_mode(sampler, steps):
    model, s = tiny_model(), make_schedule("cosine", 20)
    with torch.no_grad():
        model.conv_out.weight.normal_(0, 0.5)
    model.train()
    a = sample(model, s, (3, 1, 8, 8), sampler, steps, gen(7), "cpu")
    b = sample(model, s, (3, 1, 8, 8), sampler, steps, gen(7), "cpu")
    c = sample(model, s, (3, 1, 8, 8), sampler, steps, gen(8), "cpu")
    assert a.shape == (3, 1, 8, 8)
    assert a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert model.training  # mode restored
    assert not a.requires_grad


def test_eval_mode_is_restored_too():
    model, s = tiny_model().eval(), make_schedule("linear", 5)
    ddpm_sample(model, s, (1, 1, 8, 8), gen(0), "cpu")
    assert not model.training


class _ZeroEps(torch.nn.Module):
    """Predicts zero noise: from x_T = 0 every DDIM step keeps x0 = 0, so x moves only by the
    fresh noise sigma * z the step adds."""

    def forward(self, x, t):
        return torch.zeros_like(x)


def _scripted_noise(monkeypatch, *draws):
    """Make the sampler's normal draws return `draws` in turn (x_T first); count the calls."""
    from feddm_hpc.diffusion import samplers

    calls = []

    def fake(shape, generator, device, dtype=torch.float32):
        calls.append(shape)
        return draws[len(calls) - 1].clone()
    monkeypatch.setattr(samplers, "randn", fake)
    return calls


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_ddim_eta_scales_the_ddpm_posterior_noise(monkeypatch, eta):
    """Two timesteps, two DDIM steps (t=1 -> 0 -> x0): the one noisy step adds sigma * z with
    sigma = eta * sqrt(posterior variance at t=1) = eta * sqrt(beta_1 (1 - abar_0) / (1 - abar_1)).
    By hand: betas 0.1, 0.2; abar 0.9, 0.72; sigma = eta * sqrt(0.02 / 0.28); the last step
    returns x / sqrt(abar_0)."""
    s = make_schedule("linear", 2, beta_start=0.1, beta_end=0.2)
    shape = (1, 1, 2, 2)
    calls = _scripted_noise(monkeypatch, torch.zeros(shape), torch.ones(shape))
    out = ddim_sample(_ZeroEps(), s, shape, 2, gen(0), "cpu", eta=eta)
    sigma = eta * (0.02 / 0.28) ** 0.5
    torch.testing.assert_close(out, torch.full(shape, sigma / 0.9 ** 0.5), rtol=1e-6, atol=1e-7)
    assert sigma == pytest.approx(eta * s.posterior_variance[1].item() ** 0.5)
    assert len(calls) == (1 if eta == 0 else 2)  # eta = 0 draws x_T only


def test_ddim_eta_zero_is_deterministic_given_x_t_and_eta_one_is_not(monkeypatch):
    """eta = 0: the sample is a function of x_T alone; eta = 1: other step noise, other sample."""
    model, s = tiny_model(), make_schedule("linear", 30)
    with torch.no_grad():
        model.conv_out.weight.normal_(0, 0.5)
    shape = (2, 1, 8, 8)
    x_t = torch.randn(shape, generator=gen(1))
    streams = [[x_t] + [torch.randn(shape, generator=gen(seed)) for _ in range(4)]
               for seed in (2, 3)]
    results = {}
    for eta in (0.0, 1.0):
        for k, stream in enumerate(streams):
            _scripted_noise(monkeypatch, *stream)
            results[eta, k] = ddim_sample(model, s, shape, 4, gen(0), "cpu", eta=eta)
    assert torch.equal(results[0.0, 0], results[0.0, 1])
    assert not torch.equal(results[1.0, 0], results[1.0, 1])
    assert not torch.equal(results[0.0, 0], results[1.0, 0])


def test_ddim_timesteps():
    assert ddim_timesteps(1000, 1) == [999]
    seq = ddim_timesteps(1000, 50)
    assert seq[0] == 999 and seq[-1] == 0 and len(set(seq)) == 50
    assert ddim_timesteps(10, 10) == list(range(9, -1, -1))
    with pytest.raises(ValueError):
        ddim_timesteps(10, 11)


def test_unknown_sampler_lists_valid_ones():
    with pytest.raises(ValueError, match="ddpm, ddim"):
        sample(tiny_model(), make_schedule("linear", 5), (1, 1, 8, 8), "euler", 5, gen(0), "cpu")
