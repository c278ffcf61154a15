"""The denoiser a config builds, by `model.name`: the project's U-Net (unet.py, from the model.*
fields), diffusers' UNet2DModel (diffusers_unet.py, model.options its constructor arguments) or a
torch Module of the user's own by import path (user_model.py). Every model is
wrapped by parameterization.build_model, which factors the U-Net's layers under lowrank/hyper."""
from __future__ import annotations

from torch import nn

from feddm_hpc.diffusion.unet import build_unet
from feddm_hpc.diffusion.user_model import build_user_model, check_model
from feddm_hpc.errors import ConfigError
from feddm_hpc.plugins import is_import_path

MODELS = ("unet", "diffusers_unet2d")   # config.choices.ModelName


def build_network(model_cfg, image_channels: int, image_size: int) -> nn.Module:
    """The model of `model_cfg.name` (default unet). Raises ValueError (a shape the U-Net cannot
    take) or ConfigError (a user's model that fails its protocol)."""
    name = getattr(model_cfg, "name", "unet")
    if name == "unet":
        return build_unet(model_cfg, image_channels, image_size)
    if name == "diffusers_unet2d":   # the optional diffusers extra, imported only here
        from feddm_hpc.diffusion.diffusers_unet import DiffusersUNet2D
        model = DiffusersUNet2D(image_channels, image_size, **getattr(model_cfg, "options", {}))
        check_model(model, name, image_channels, image_size)
        return model
    if is_import_path(name):
        return build_user_model(name, getattr(model_cfg, "options", {}), image_channels, image_size)
    raise ConfigError(f"model.name: invalid value {name!r}; valid values: {', '.join(MODELS)} or "
                      f"an import path package.module:Name")
