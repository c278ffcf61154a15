"""A denoiser of the user's own: `model.name: package.module:Name` names a torch.nn.Module
subclass with the project U-Net's interface (docs/extending.md, feddm_hpc.extend):

    Name(image_channels=C, image_size=H, **model.options)     built on every rank, under the
                                                              run's initialisation seed
    forward(x [B,C,H,W] float32, t [B] int64) -> [B,C,H,W]    the prediction (model-space eps
                                                              or v, diffusion.prediction)

Federation moves exactly the model's parameters (float32, flattened in named_parameters()
order): state outside them would differ between clients and ranks, so a BatchNorm that tracks
running statistics is refused, and other buffers must stay constant.
"""
from __future__ import annotations

import torch
from torch import nn

from feddm_hpc.errors import ConfigError
from feddm_hpc.plugins import load_class

FIELD = "model.name"


def load_user_model(path: str) -> type:
    return load_class(path, FIELD, nn.Module)


def build_user_model(path: str, options: dict, image_channels: int, image_size: int) -> nn.Module:
    """The user's model, built and checked against the protocol; ConfigError naming the field."""
    cls = load_user_model(path)
    try:
        model = cls(image_channels=image_channels, image_size=image_size, **dict(options or {}))
    except Exception as exc:   # a wrong model.options key or value, a shape it cannot take
        raise ConfigError(f"{FIELD}: building {path!r} with image_channels={image_channels}, "
                          f"image_size={image_size} and model.options {dict(options or {})} "
                          f"failed: {type(exc).__name__}: {exc}") from None
    check_model(model, path, image_channels, image_size)
    return model


def check_model(model: nn.Module, path: str, channels: int, size: int) -> None:
    """Parameters all float32, no running statistics, and one forward pass of the right shape
    (in eval mode, without touching the global RNG the run draws from)."""
    params = list(model.parameters())
    if not params:
        raise ConfigError(f"{FIELD}: {path!r} has no parameters to train and share")
    dtypes = sorted({str(p.dtype) for p in params if p.dtype != torch.float32})
    if dtypes:
        raise ConfigError(f"{FIELD}: {path!r} has parameters of dtype {', '.join(dtypes)}; the "
                          f"shared vector is float32")
    for name, mod in model.named_modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm) and mod.track_running_stats:
            raise ConfigError(f"{FIELD}: {path!r} layer {name} keeps running statistics outside "
                              f"its parameters (use GroupNorm, or track_running_stats=False)")
    want = (2, channels, size, size)
    was_training = model.training
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            model.eval()
            out = model(torch.zeros(want), torch.zeros(2, dtype=torch.long))
    except Exception as exc:
        raise ConfigError(f"{FIELD}: {path!r} failed on a [2, {channels}, {size}, {size}] batch "
                          f"with timesteps [2]: {type(exc).__name__}: {exc}") from None
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != want:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(f"{FIELD}: {path!r} returned {got} for a {list(want)} batch; "
                          f"forward(x, t) must return a tensor of x's shape")
