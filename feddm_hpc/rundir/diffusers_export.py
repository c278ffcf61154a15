"""The export of a `model.name: diffusers_unet2d` model: a diffusers DDPMPipeline folder that
`DDPMPipeline.from_pretrained(OUT_DIR)` loads and samples from (docs/export.md):

    model_index.json                              the pipeline: UNet2DModel + DDPMScheduler
    unet/config.json, unet/diffusion_pytorch_model.safetensors   the EMA UNet2DModel
    scheduler/scheduler_config.json               the run's noise schedule, its betas exactly
                                                  (trained_betas), prediction type
    feddm_hpc.json                                what config.json holds for the U-Net export

The scheduler gets the betas the run trained with (as trained_betas, whatever
diffusion.schedule), `prediction_type` epsilon or v_prediction from diffusion.prediction, and
diffusers' defaults otherwise (clip_sample true, fixed_small variance, leading timestep spacing).
"""
from __future__ import annotations

from pathlib import Path

WEIGHTS = "unet/diffusion_pytorch_model.safetensors"
PREFIX = "unet."              # the adapter's parameter names (diffusion/diffusers_unet.py)
PREDICTION_TYPES = {"eps": "epsilon", "v": "v_prediction"}


def save_pipeline(model, config, out_dir: Path) -> None:
    """Writes `model` (a DiffusersUNet2D holding the EMA weights) as a DDPMPipeline folder."""
    from diffusers import DDPMPipeline, DDPMScheduler

    from feddm_hpc.diffusion.schedule import make_schedule

    d = config.diffusion
    betas = make_schedule(d.schedule, d.timesteps, d.beta_start, d.beta_end).betas
    scheduler = DDPMScheduler(num_train_timesteps=d.timesteps, beta_start=d.beta_start,
                              beta_end=d.beta_end, trained_betas=betas.tolist(),
                              prediction_type=PREDICTION_TYPES[d.prediction])
    DDPMPipeline(unet=model.unet, scheduler=scheduler).save_pretrained(
        str(out_dir), safe_serialization=True)
