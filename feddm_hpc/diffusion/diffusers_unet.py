"""`model.name: diffusers_unet2d`: diffusers' UNet2DModel as the denoiser, its constructor
arguments passed through from `model.options` (sample_size, in_channels and out_channels come
from the data). The optional `diffusers` extra: `pip install 'feddm_hpc[diffusers]'`.

Federation moves the adapter's parameters, named `unet.<diffusers name>`; `feddm-hpc export`
writes the wrapped UNet2DModel as a diffusers DDPMPipeline folder (rundir/diffusers_export.py).
"""
from __future__ import annotations

from torch import nn

from feddm_hpc.errors import ConfigError

NAME = "diffusers_unet2d"
INSTALL = "pip install 'feddm_hpc[diffusers]' (or pip install diffusers)"
SET_BY_DATA = ("sample_size", "in_channels", "out_channels")


def import_unet2d():
    try:
        from diffusers import UNet2DModel
    except ImportError as exc:
        raise ConfigError(f"model.name: {NAME} needs the diffusers package ({exc}); install it "
                          f"with: {INSTALL}") from None
    return UNet2DModel


class DiffusersUNet2D(nn.Module):
    """forward(x [B,C,H,W], t [B] int64) -> the UNet2DModel's output tensor (eps or v)."""

    def __init__(self, image_channels: int, image_size: int, **options):
        super().__init__()
        taken = sorted(set(options) & set(SET_BY_DATA))
        if taken:
            raise ConfigError(f"model.options: {', '.join(taken)} come(s) from the data for "
                              f"{NAME}; leave them out")
        unet2d = import_unet2d()
        try:
            self.unet = unet2d(sample_size=image_size, in_channels=image_channels,
                               out_channels=image_channels, **options)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"model.options: diffusers UNet2DModel({options}) failed: "
                              f"{type(exc).__name__}: {exc}") from None

    def forward(self, x, t):
        return self.unet(x, t, return_dict=False)[0]
