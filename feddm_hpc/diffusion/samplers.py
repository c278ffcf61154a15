"""The DDPM (ancestral) and DDIM samplers, chosen by name. Pure torch, no I/O.

No step waits for the device: the per-timestep coefficients are read to the host once per call
(`_host_floats`), before the loop, and noise drawn by a CPU generator for a CUDA model travels from
page-locked memory without blocking (`_noise`). The arithmetic is the same as reading one float64
coefficient per step, so results do not change.
"""
import math

import torch

from feddm_hpc.diffusion.loss import eps_model
from feddm_hpc.diffusion.schedule import NoiseSchedule, randn


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


def _host_floats(*vectors: torch.Tensor) -> list:
    """The float64 schedule vectors as lists of Python floats, in one device->host copy.

    All images share one timestep per sampling step, so scalar coefficients suffice; reading them
    one by one (float(tensor[i])) would wait for the device several times per step.
    """
    if all(v.device.type == "cpu" for v in vectors):
        return [v.tolist() for v in vectors]          # no copy at all
    return torch.stack(vectors).cpu().tolist()


def _noise(shape, generator: torch.Generator, device) -> torch.Tensor:
    """schedule.randn's draw. A CPU generator driving a CUDA model draws into page-locked memory
    that is copied without blocking: a pageable copy would wait for the device every step."""
    if generator.device.type == "cpu" and torch.device(device).type == "cuda":
        host = torch.empty(shape, dtype=torch.float32, pin_memory=True)
        torch.randn(shape, generator=generator, out=host)
        return host.to(device, non_blocking=True)
    return randn(shape, generator, device)


@torch.no_grad()
def ddpm_sample(model, schedule: NoiseSchedule, shape, generator: torch.Generator,
                device) -> torch.Tensor:
    """Ancestral sampling over all T steps with clipped x0 prediction; returns values in [-1, 1]."""
    s = schedule
    recip, recipm1, coef1, coef2, log_var = _host_floats(
        s.sqrt_recip_alphas_cumprod, s.sqrt_recipm1_alphas_cumprod, s.posterior_mean_coef1,
        s.posterior_mean_coef2, s.posterior_log_variance_clipped)
    with _EvalMode(model):
        x = _noise(shape, generator, device)
        for i in reversed(range(s.timesteps)):
            t = torch.full((shape[0],), i, dtype=torch.int64, device=device)
            eps = model(x, t)
            x0 = (recip[i] * x - recipm1[i] * eps).clamp(-1.0, 1.0)
            mean = coef1[i] * x0 + coef2[i] * x
            if i > 0:
                std = math.exp(0.5 * log_var[i])
                x = mean + std * _noise(shape, generator, device)
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
    (ac,) = _host_floats(schedule.alphas_cumprod)
    seq = ddim_timesteps(schedule.timesteps, steps)
    with _EvalMode(model):
        x = _noise(shape, generator, device)
        for k, i in enumerate(seq):
            prev = seq[k + 1] if k + 1 < len(seq) else -1
            a, a_prev = ac[i], (ac[prev] if prev >= 0 else 1.0)
            t = torch.full((shape[0],), i, dtype=torch.int64, device=device)
            eps = model(x, t)
            x0 = ((x - math.sqrt(1.0 - a) * eps) / math.sqrt(a)).clamp(-1.0, 1.0)
            # Re-derive eps from the clipped x0 so that the two stay consistent (improved-diffusion).
            eps = (x - math.sqrt(a) * x0) / math.sqrt(1.0 - a)
            sigma = eta * math.sqrt((1.0 - a_prev) / (1.0 - a) * (1.0 - a / a_prev))
            x = math.sqrt(a_prev) * x0 + math.sqrt(max(1.0 - a_prev - sigma ** 2, 0.0)) * eps
            if sigma > 0.0:
                x = x + sigma * _noise(shape, generator, device)
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
