"""Noise schedules (linear, cosine) and the two helpers every diffusion computation shares.

Every random draw comes from a caller-supplied torch.Generator: a client's local training must be
reproducible from (seed, round, client_id) alone, whatever rank or device it runs on. Draws happen on
the generator's device and are then moved (`randn`), so a CPU generator drives a CUDA model and gives
the same numbers as on a CPU-only run.
"""
import math
from dataclasses import dataclass, fields

import torch

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


def gather(coef: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """coef[t] shaped [B,1,1,...] to broadcast against `like`, on its device and dtype."""
    out = coef[t.to(coef.device)].to(device=like.device, dtype=like.dtype)
    return out.reshape(-1, *([1] * (like.dim() - 1)))


def randn(shape, generator: torch.Generator, device, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(shape, generator=generator, device=generator.device, dtype=dtype).to(device)
