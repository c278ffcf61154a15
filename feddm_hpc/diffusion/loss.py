"""The DDPM training loss (eps or v prediction, optional min-SNR weighting) and the eps view of a
v-prediction model. Pure torch, no I/O."""
import torch
import torch.nn.functional as F

from feddm_hpc.diffusion.schedule import NoiseSchedule, gather, randn

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
    x_t, t, target = noised_inputs(x0, schedule, generator, prediction)
    # .float(): under bf16 autocast the loss is still taken in float32 (a no-op otherwise)
    return score_output(model(x_t, t).float(), target, t, schedule, prediction, weighting,
                        min_snr_gamma)


def noised_inputs(x0: torch.Tensor, schedule: NoiseSchedule, generator: torch.Generator,
                  prediction: str = "eps"):
    """training_loss's random half: (x_t, t, target) for a batch, drawing t then the noise."""
    b = x0.shape[0]
    t = torch.randint(0, schedule.timesteps, (b,), generator=generator, device=generator.device)
    noise = randn(x0.shape, generator, x0.device, x0.dtype)
    t = t.to(x0.device)
    sqrt_a = gather(schedule.sqrt_alphas_cumprod, t, x0)
    sqrt_1ma = gather(schedule.sqrt_one_minus_alphas_cumprod, t, x0)
    x_t = sqrt_a * x0 + sqrt_1ma * noise
    if prediction == "eps":
        target = noise
    elif prediction == "v":
        target = sqrt_a * noise - sqrt_1ma * x0
    else:
        raise ValueError(f"unknown prediction {prediction!r}; valid: {', '.join(PREDICTIONS)}")
    return x_t, t, target


def example_weights(t: torch.Tensor, schedule: NoiseSchedule, prediction: str,
                    min_snr_gamma: float, like: torch.Tensor) -> torch.Tensor:
    """The min-SNR weight of each example [B], in `like`'s device and dtype."""
    ac = schedule.alphas_cumprod[t.to(schedule.alphas_cumprod.device)]
    snr = ac / (1.0 - ac)                      # float64 on the schedule's device
    weight = snr.clamp(max=min_snr_gamma) / (snr if prediction == "eps" else snr + 1.0)
    return weight.to(device=like.device, dtype=like.dtype)


def score_output(output: torch.Tensor, target: torch.Tensor, t: torch.Tensor,
                 schedule: NoiseSchedule, prediction: str = "eps", weighting: str = "none",
                 min_snr_gamma: float = 5.0) -> torch.Tensor:
    """training_loss's deterministic half: the (weighted) mean squared error of the model output."""
    if weighting == "none":
        return F.mse_loss(output, target)
    if weighting != "min_snr":
        raise ValueError(f"unknown loss weighting {weighting!r}; valid: {', '.join(LOSS_WEIGHTINGS)}")
    weight = example_weights(t, schedule, prediction, min_snr_gamma, output)
    per_example = (output - target).pow(2).flatten(1).mean(dim=1)
    return (weight * per_example).mean()


def score_outputs(output: torch.Tensor, target: torch.Tensor, t: torch.Tensor,
                  schedule: NoiseSchedule, prediction: str = "eps", weighting: str = "none",
                  min_snr_gamma: float = 5.0) -> torch.Tensor:
    """score_output for clients trained together (federation/client_groups.py): output and
    target [G, B, ...], t [G, B] -> each client's loss [G]. The same value as score_output row by
    row, summed in another order (per-example means first), so equal up to float rounding."""
    per_example = (output - target).pow(2).flatten(2).mean(dim=2)          # [G, B]
    if weighting == "none":
        return per_example.mean(dim=1)
    if weighting != "min_snr":
        raise ValueError(f"unknown loss weighting {weighting!r}; valid: {', '.join(LOSS_WEIGHTINGS)}")
    weight = example_weights(t.reshape(-1), schedule, prediction, min_snr_gamma,
                             output).view_as(per_example)
    return (weight * per_example).mean(dim=1)


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
        return gather(self.sqrt_a, t, x_t) * v + gather(self.sqrt_1ma, t, x_t) * x_t


def eps_model(model, schedule: NoiseSchedule, prediction: str):
    """The model as the samplers expect it (noise prediction), whatever it was trained to predict."""
    if prediction == "eps":
        return model
    if prediction == "v":
        return EpsFromV(model, schedule)
    raise ValueError(f"unknown prediction {prediction!r}; valid: {', '.join(PREDICTIONS)}")
