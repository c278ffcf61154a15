"""`feddm-hpc export CHECKPOINT OUT_DIR`: a checkpoint's global EMA model in files other tools
read (docs/export.md), and reading them back (`feddm-hpc sample OUT_DIR` draws exactly the
checkpoint's samples).

OUT_DIR/model.safetensors   the model's weights by parameter name, float32 (a state_dict: for
                            model.name unet, the dense U-Net of feddm_hpc.diffusion.unet.UNet;
                            lowrank and hyper layers are composed to their dense weights, which
                            is what their forward pass uses)
OUT_DIR/config.json         format, the model's constructor arguments, the diffusion schedule,
                            the sampling defaults, the round, seed and image shape, and the run's
                            resolved config (config_yaml)
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import torch
from torch import nn

from feddm_hpc import __version__
from feddm_hpc.errors import CheckpointError, UserError
from feddm_hpc.rundir.safetensors_io import read_safetensors, write_safetensors

FORMAT = "feddm_hpc.export/1"
WEIGHTS, CONFIG = "model.safetensors", "config.json"
DIFFUSERS_META = "feddm_hpc.json"   # config.json's content in a diffusers pipeline folder
_U_NET_ARGS = ("base_channels", "channel_mults", "num_res_blocks", "attention_resolutions", "dropout")


def dense_model_config(model_cfg):
    """The model section of the exported model: lowrank/hyper composed to the dense U-Net."""
    return dataclasses.replace(model_cfg, parameterization="dense", lowrank_rank=None,
                               lowrank_fraction=None, hyper_embedding_dim=None,
                               hyper_chunk_size=None)


def dense_state(model: nn.Module, dense: nn.Module) -> Dict[str, torch.Tensor]:
    """name -> tensor for every parameter of `dense` (the dense form of `model`'s architecture),
    read from `model`: a parameter of the same name, or the weight a lowrank/hyper layer
    computes (its `weight()`)."""
    own = dict(model.named_parameters())
    state = {}
    for name, p in dense.named_parameters():
        value = own.get(name)
        if value is None:
            module_name, _, attr = name.rpartition(".")
            value = getattr(model.get_submodule(module_name), attr)
            value = value() if callable(value) else value
        if tuple(value.shape) != tuple(p.shape):
            raise AssertionError(f"{name}: {tuple(value.shape)} for a dense {tuple(p.shape)}")
        state[name] = value.detach().to("cpu", torch.float32).contiguous()
    return state


def export_checkpoint(checkpoint, out_dir) -> dict:
    """Writes the export of `checkpoint` into `out_dir` (created; it must hold no earlier
    export). Returns config.json's content."""
    from feddm_hpc.config import config_from_yaml_text, shares_partly
    from feddm_hpc.diffusion.parameterization import build_model
    from feddm_hpc.params import unflatten_into
    from feddm_hpc.rundir.checkpoint import load_checkpoint

    data = load_checkpoint(checkpoint)
    config = config_from_yaml_text(data.config_yaml)
    if shares_partly(config):   # its global vector holds the initial model's private parts
        raise UserError(f"{checkpoint}: a partially shared run (federation.shared_parts) has one "
                        f"model per client, not one to export; sample a client's model with "
                        f"feddm-hpc sample --client K")
    c, h, w = data.image_shape
    with torch.no_grad():
        model = build_model(config.model, image_channels=c, image_size=h)
        unflatten_into(data.ema, model)
        dense_cfg = dense_model_config(config.model)
        dense = model if dense_cfg == config.model else build_model(dense_cfg, c, h)
        state = dense_state(model, dense)
    out = Path(out_dir)
    for name in (WEIGHTS, CONFIG, DIFFUSERS_META, "model_index.json"):
        if (out / name).exists():
            raise UserError(f"{out / name}: already exists; export into a new folder")
    out.mkdir(parents=True, exist_ok=True)
    info = export_info(config, dense_cfg, data, str(checkpoint))
    if config.model.name == "diffusers_unet2d":
        from feddm_hpc.rundir import diffusers_export

        diffusers_export.save_pipeline(model, config, out)
        info.update(weights=diffusers_export.WEIGHTS, weights_prefix=diffusers_export.PREFIX,
                    pipeline="DDPMPipeline")
        (out / DIFFUSERS_META).write_text(json.dumps(info, indent=2) + "\n")
        return info
    write_safetensors(out / WEIGHTS, {k: v.numpy() for k, v in state.items()},
                      {"format": FORMAT, "round": str(data.round)})
    (out / CONFIG).write_text(json.dumps(info, indent=2) + "\n")
    return info


def export_info(config, dense_cfg, data, source: str) -> dict:
    c, h, _ = data.image_shape
    model = {"name": dense_cfg.name, "image_channels": c, "image_size": h}
    if dense_cfg.name == "unet":
        model["class"] = "feddm_hpc.diffusion.unet.UNet"
        model.update({k: (list(v) if isinstance(v, tuple) else v)
                      for k, v in ((k, getattr(dense_cfg, k)) for k in _U_NET_ARGS)})
    else:
        model["options"] = dict(dense_cfg.options)
    if config.model.parameterization != "dense":
        model["composed_from"] = config.model.parameterization
    d, s = config.diffusion, config.sampling
    return {
        "format": FORMAT, "feddm_hpc_version": __version__, "round": int(data.round),
        "seed": int(config.seed), "image_shape": [int(v) for v in data.image_shape],
        "weights": WEIGHTS, "weights_of": "global EMA", "model": model,
        "diffusion": {"timesteps": d.timesteps, "schedule": d.schedule, "beta_start": d.beta_start,
                      "beta_end": d.beta_end, "prediction": d.prediction},
        "sampling": {"sampler": s.sampler, "steps": s.steps, "eta": s.eta},
        "source_checkpoint": source, "param_fingerprint": data.param_fingerprint,
        "config_yaml": data.config_yaml,
    }


def _meta(folder: Path) -> Path:
    """The export's JSON: feddm_hpc.json in a diffusers pipeline folder, else config.json."""
    return folder / DIFFUSERS_META if (folder / DIFFUSERS_META).is_file() else folder / CONFIG


def is_export(path) -> bool:
    return Path(path).is_dir() and _meta(Path(path)).is_file()


def load_export(folder) -> Tuple[object, np.ndarray, dict]:
    """(the run's config with the exported model section, the weights as the flat float32
    vector of that model, config.json's content) of an export folder; CheckpointError naming
    the file when it is not one or does not match its model."""
    from feddm_hpc.config import config_from_yaml_text
    from feddm_hpc.diffusion.parameterization import build_model
    from feddm_hpc.params import flatten

    folder = Path(folder)
    meta = _meta(folder)
    try:
        info = json.loads(meta.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{meta}: not a readable export config ({exc})") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise CheckpointError(f"{meta}: not a feddm_hpc export (format "
                              f"{info.get('format') if isinstance(info, dict) else None!r}, "
                              f"expected {FORMAT!r})")
    config = config_from_yaml_text(info["config_yaml"])
    config = dataclasses.replace(config, model=dense_model_config(config.model))
    weights = folder / info.get("weights", WEIGHTS)
    prefix = info.get("weights_prefix", "")
    tensors = {prefix + k: v for k, v in read_safetensors(weights)[0].items()}
    c, h, _ = info["image_shape"]
    model = build_model(config.model, image_channels=c, image_size=h)
    names = [n for n, _ in model.named_parameters()]
    if sorted(names) != sorted(tensors):
        raise CheckpointError(f"{weights}: its tensors do not match the model of {meta.name} "
                              f"({len(tensors)} tensors for {len(names)} parameters)")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if tuple(tensors[name].shape) != tuple(p.shape):
                raise CheckpointError(f"{weights}: {name} has shape "
                                      f"{tuple(tensors[name].shape)}, the model {tuple(p.shape)}")
            p.copy_(torch.from_numpy(tensors[name]))
    return config, flatten(model), info


def read_ema_model(path) -> Tuple[object, np.ndarray, tuple, int]:
    """(config, EMA weights as a flat vector, image shape (C, H, W), round) of a checkpoint file
    or of an export folder, whose weights give exactly the checkpoint's samples."""
    from feddm_hpc.config import config_from_yaml_text
    from feddm_hpc.rundir.checkpoint import load_checkpoint

    if is_export(path):
        config, weights, info = load_export(path)
        return config, weights, tuple(int(v) for v in info["image_shape"]), int(info["round"])
    data = load_checkpoint(path)
    return config_from_yaml_text(data.config_yaml), data.ema, tuple(data.image_shape), data.round
