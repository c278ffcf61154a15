"""Denoising networks. `build_unet` is the one entry point the rest of the package uses."""
from feddm_hpc.models.unet import build_unet, count_parameters

__all__ = ["build_unet", "count_parameters"]
