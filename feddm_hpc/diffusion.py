"""Noise schedules, the DDPM training loss, and the DDPM and DDIM samplers. Pure torch, no I/O.

Every random draw comes from a caller-supplied torch.Generator: a client's local training must be
reproducible from (seed, round, client_id) alone, whatever rank or device it runs on. Draws happen on
the generator's device and are then moved, so a CPU generator drives a CUDA model and gives the same
numbers as on a CPU-only run.
"""
import math
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

SCHEDULES = ("linear", "cosine")


@dataclass(frozen=True)
class NoiseSchedule:
    """Per-timestep coefficients, all float64 [T] (float32 cumprods drift visibly at T=1000)."""

    betas: torch.Tensor
    alphas: torch.Tensor
    alphas_cumprod: torch.Tensor
    alphas_cumprod_prev: torch.Tensor
    sqrt_alphas_cumprod: torch.Tensor
    sqrt_one_minus_alphas_cumprod: torch.Tensor
    sqrt_recip_alphas_cumprod: torch.Tensor
    sqrt_recipm1_alphas_cumprod: torch.Tensor
    posterior_variance: torch.Tensor
    posterior_log_variance_clipped: torch.Tensor
    posterior_mean_coef1: torch.Tensor
    posterior_mean_coef2: torch.Tensor

    @property
    def timesteps(self) -> int:
        return int(self.betas.shape[0])

    def to(self, device) -> "NoiseSchedule":
        return NoiseSchedule(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})


def _cosine_betas(timesteps: int, s: float = 0.008) -> torch.Tensor:
    # Nichol & Dhariwal 2021, eq. 17; betas clipped at 0.999 to avoid the singularity at t = T.
    steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    alpha_bar = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    return torch.clamp(1 - alpha_bar[1:] / alpha_bar[:-1], max=0.999)


def make_schedule(kind: str, timesteps: int, beta_start: float = 1e-4,
                  beta_end: float = 0.02) -> NoiseSchedule:
    """Build a schedule by name: "linear" (Ho et al.; uses beta_start/beta_end) or "cosine"."""
    if timesteps < 1:
        raise ValueError(f"timesteps must be >= 1, got {timesteps}")
    if kind == "linear":
        if not 0.0 < beta_start <= beta_end < 1.0:
            raise ValueError(f"linear schedule needs 0 < beta_start <= beta_end < 1, "
                             f"got {beta_start} and {beta_end}")
        betas = torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)
    elif kind == "cosine":
        betas = _cosine_betas(timesteps)
    else:
        raise ValueError(f"unknown noise schedule {kind!r}; valid: {', '.join(SCHEDULES)}")
    alphas = 1.0 - betas
    ac = torch.cumprod(alphas, dim=0)
    ac_prev = torch.cat([torch.ones(1, dtype=torch.float64), ac[:-1]])
    post_var = betas * (1.0 - ac_prev) / (1.0 - ac)
    # posterior_variance[0] is 0; log-clip it to the next value as Ho et al. do.
    post_log_var = torch.log(torch.cat([post_var[1:2], post_var[1:]])) if timesteps > 1 \
        else torch.log(betas)
    return NoiseSchedule(
        betas=betas, alphas=alphas, alphas_cumprod=ac, alphas_cumprod_prev=ac_prev,
        sqrt_alphas_cumprod=ac.sqrt(), sqrt_one_minus_alphas_cumprod=(1.0 - ac).sqrt(),
        sqrt_recip_alphas_cumprod=(1.0 / ac).sqrt(), sqrt_recipm1_alphas_cumprod=(1.0 / ac - 1).sqrt(),
        posterior_variance=post_var, posterior_log_variance_clipped=post_log_var,
        posterior_mean_coef1=betas * ac_prev.sqrt() / (1.0 - ac),
        posterior_mean_coef2=(1.0 - ac_prev) * alphas.sqrt() / (1.0 - ac),
    )


def _gather(coef: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """coef[t] shaped [B,1,1,...] to broadcast against `like`, on its device and dtype."""
    out = coef[t.to(coef.device)].to(device=like.device, dtype=like.dtype)
    return out.reshape(-1, *([1] * (like.dim() - 1)))


def _randn(shape, generator: torch.Generator, device, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(shape, generator=generator, device=generator.device, dtype=dtype).to(device)


PREDICTIONS = ("eps", "v")
LOSS_WEIGHTINGS = ("none", "min_snr")


def training_loss(model, x0: torch.Tensor, schedule: NoiseSchedule, generator: torch.Generator,
                  prediction: str = "eps", weighting: str = "none",
                  min_snr_gamma: float = 5.0) -> torch.Tensor:
    """The denoising loss on a batch x0 in [-1, 1]; the defaults are Ho et al.'s L_simple.

    Draws t ~ U{0..T-1} [B] first, then the noise like x0, both from `generator` (the same draws
    for every prediction and weighting, so recipes differ only in what the model is asked for).
    prediction: "eps" regresses the noise, "v" regresses v = sqrt(a) eps - sqrt(1 - a) x0
        (Salimans & Ho 2022), with a = alpha_bar_t.
    weighting: "min_snr" weights each example by min(SNR_t, gamma) / SNR_t for eps and
        min(SNR_t, gamma) / (SNR_t + 1) for v (Hang et al. 2023): both equal min(SNR, gamma)
        times the x0 error, so the many nearly noise-free timesteps stop dominating the gradient.
    """
    b = x0.shape[0]
    t = torch.randint(0, schedule.timesteps, (b,), generator=generator, device=generator.device)
    noise = _randn(x0.shape, generator, x0.device, x0.dtype)
    t = t.to(x0.device)
    sqrt_a = _gather(schedule.sqrt_alphas_cumprod, t, x0)
    sqrt_1ma = _gather(schedule.sqrt_one_minus_alphas_cumprod, t, x0)
    x_t = sqrt_a * x0 + sqrt_1ma * noise
    if prediction == "eps":
        target = noise
    elif prediction == "v":
        target = sqrt_a * noise - sqrt_1ma * x0
    else:
        raise ValueError(f"unknown prediction {prediction!r}; valid: {', '.join(PREDICTIONS)}")
    if weighting == "none":
        return F.mse_loss(model(x_t, t), target)
    if weighting != "min_snr":
        raise ValueError(f"unknown loss weighting {weighting!r}; valid: {', '.join(LOSS_WEIGHTINGS)}")
    ac = schedule.alphas_cumprod[t.to(schedule.alphas_cumprod.device)]
    snr = ac / (1.0 - ac)                      # float64 on the schedule's device
    weight = snr.clamp(max=min_snr_gamma) / (snr if prediction == "eps" else snr + 1.0)
    per_example = (model(x_t, t) - target).pow(2).flatten(1).mean(dim=1)
    return (weight.to(device=x0.device, dtype=x0.dtype) * per_example).mean()


def make_loss(diffusion_cfg):
    """training_loss with the config's prediction and weighting bound: (model, x0, schedule, gen)."""
    d = diffusion_cfg

    def loss(model, x0, schedule, generator):
        return training_loss(model, x0, schedule, generator, prediction=d.prediction,
                             weighting=d.loss_weighting, min_snr_gamma=d.min_snr_gamma)
    return loss


class EpsFromV(torch.nn.Module):
    """Wraps a v-prediction model so that the samplers, written for eps, can drive it unchanged:
    eps = sqrt(a) v + sqrt(1 - a) x_t (Salimans & Ho 2022, from x_t = sqrt(a) x0 + sqrt(1-a) eps)."""

    def __init__(self, model, schedule: NoiseSchedule):
        super().__init__()
        self.model = model
        self.sqrt_a = schedule.sqrt_alphas_cumprod
        self.sqrt_1ma = schedule.sqrt_one_minus_alphas_cumprod

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        v = self.model(x_t, t)
        return _gather(self.sqrt_a, t, x_t) * v + _gather(self.sqrt_1ma, t, x_t) * x_t


def eps_model(model, schedule: NoiseSchedule, prediction: str):
    """The model as the samplers expect it (noise prediction), whatever it was trained to predict."""
    if prediction == "eps":
        return model
    if prediction == "v":
        return EpsFromV(model, schedule)
    raise ValueError(f"unknown prediction {prediction!r}; valid: {', '.join(PREDICTIONS)}")


class _EvalMode:
    """Sample in eval mode (dropout off) and restore whatever mode the caller had."""

    def __init__(self, model):
        self.model = model

    def __enter__(self):
        self.was_training = self.model.training
        self.model.eval()

    def __exit__(self, *exc):
        self.model.train(self.was_training)
        return False


def _coef(tensor: torch.Tensor, i: int) -> float:
    # All images share one timestep per sampling step, so scalar coefficients suffice.
    return float(tensor[i])


@torch.no_grad()
def ddpm_sample(model, schedule: NoiseSchedule, shape, generator: torch.Generator,
                device) -> torch.Tensor:
    """Ancestral sampling over all T steps with clipped x0 prediction; returns values in [-1, 1]."""
    s = schedule
    with _EvalMode(model):
        x = _randn(shape, generator, device)
        for i in reversed(range(s.timesteps)):
            t = torch.full((shape[0],), i, dtype=torch.int64, device=device)
            eps = model(x, t)
            x0 = (_coef(s.sqrt_recip_alphas_cumprod, i) * x
                  - _coef(s.sqrt_recipm1_alphas_cumprod, i) * eps).clamp(-1.0, 1.0)
            mean = _coef(s.posterior_mean_coef1, i) * x0 + _coef(s.posterior_mean_coef2, i) * x
            if i > 0:
                std = math.exp(0.5 * _coef(s.posterior_log_variance_clipped, i))
                x = mean + std * _randn(shape, generator, device)
            else:
                x = mean
    return x.clamp(-1.0, 1.0)


def ddim_timesteps(timesteps: int, steps: int) -> list:
    """`steps` distinct timesteps from T-1 down to 0, evenly spaced (always starts at T-1)."""
    if not 1 <= steps <= timesteps:
        raise ValueError(f"ddim steps must be between 1 and {timesteps}, got {steps}")
    return torch.linspace(timesteps - 1, 0, steps, dtype=torch.float64).round().long().tolist()


@torch.no_grad()
def ddim_sample(model, schedule: NoiseSchedule, shape, steps: int, generator: torch.Generator,
                device, eta: float = 0.0) -> torch.Tensor:
    """DDIM (Song et al. 2021) over `steps` timesteps; eta=0 is deterministic given x_T."""
    ac = schedule.alphas_cumprod
    seq = ddim_timesteps(schedule.timesteps, steps)
    with _EvalMode(model):
        x = _randn(shape, generator, device)
        for k, i in enumerate(seq):
            prev = seq[k + 1] if k + 1 < len(seq) else -1
            a, a_prev = _coef(ac, i), (_coef(ac, prev) if prev >= 0 else 1.0)
            t = torch.full((shape[0],), i, dtype=torch.int64, device=device)
            eps = model(x, t)
            x0 = ((x - math.sqrt(1.0 - a) * eps) / math.sqrt(a)).clamp(-1.0, 1.0)
            # Re-derive eps from the clipped x0 so that the two stay consistent (improved-diffusion).
            eps = (x - math.sqrt(a) * x0) / math.sqrt(1.0 - a)
            sigma = eta * math.sqrt((1.0 - a_prev) / (1.0 - a) * (1.0 - a / a_prev))
            x = math.sqrt(a_prev) * x0 + math.sqrt(max(1.0 - a_prev - sigma ** 2, 0.0)) * eps
            if sigma > 0.0:
                x = x + sigma * _randn(shape, generator, device)
    return x.clamp(-1.0, 1.0)


def _ddpm(model, schedule, shape, steps, generator, device, eta):
    return ddpm_sample(model, schedule, shape, generator, device)  # always all T steps


def _ddim(model, schedule, shape, steps, generator, device, eta):
    return ddim_sample(model, schedule, shape, steps, generator, device, eta=eta)


SAMPLERS = {"ddpm": _ddpm, "ddim": _ddim}


def sample(model, schedule: NoiseSchedule, shape, sampler: str, steps: int,
           generator: torch.Generator, device, eta: float = 0.0,
           prediction: str = "eps") -> torch.Tensor:
    """Draw samples by sampler name. `steps` and `eta` are used by "ddim"; "ddpm" always runs
    all T steps. `prediction` is what the model was trained to predict (eps or v)."""
    try:
        fn = SAMPLERS[sampler]
    except KeyError:
        raise ValueError(f"unknown sampler {sampler!r}; valid: {', '.join(SAMPLERS)}") from None
    return fn(eps_model(model, schedule, prediction), schedule, shape, steps, generator, device, eta)
