"""What a client shares: the trainable parameters of the model as the config builds it.

Every round moves one flat float32 vector (params.py): the global model down, `local - global`
up, and everything that acts on updates (codecs, error feedback, DP, secure aggregation, robust
rules, server optimizers, SCAFFOLD, byte accounting, checkpoints) works on it. That vector is
`flatten(model)` of the model `build_model` returns, so the choice of what is shared is the
choice of how the model is parameterized (model.parameterization):

  dense    the U-Net of unet.py as it is: the shared vector is its weights and biases.
  lowrank  the same U-Net with every Conv2d and Linear but the two image-facing convs replaced by
           FedPara's low-rank Hadamard layers (lowrank.py): the model's parameters ARE the
           factors, so the factors are trained, shared and aggregated, and the pipeline above
           runs on them unchanged. Each round the server averages factors, not composed weights
           (FedPara's protocol: the mean of Hadamard products is not a Hadamard product).

Layers kept dense under lowrank: conv_in (image channels -> base channels) and conv_out (the
reverse). They are the model's interface with pixel space, hold under 1% of its values at any
size here (1-3 image channels), and conv_out's [C, 9 ch] matrix with C <= 3 would need factors
larger than itself at any rank. Biases and GroupNorm affine parameters stay dense (vectors).

The rank, one knob of two (exactly one is set under lowrank):
  model.lowrank_rank      the same r in every factored layer; each layer's factors must hold
                          no more values than its weight (2 r (m+n) <= m n), which also keeps r
                          below the layer's dense rank min(m, n).
  model.lowrank_fraction  a target for the whole model's shared count as a fraction of the dense
                          count: each layer gets r_l = round(g m n / (2 (m+n))) (its factors
                          about a fraction g of its weight), clamped to [1, the layer's largest
                          rank], with the one g (found exactly, over the finitely many values where
                          some r_l changes) whose total is closest to the target.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Tuple

from torch import nn

from feddm_hpc.diffusion.lowrank import _Hadamard, factor_count, from_dense, max_rank
from feddm_hpc.diffusion.unet import build_unet, count_parameters
from feddm_hpc.errors import ConfigError

PARAMETERIZATIONS = ("dense", "lowrank")   # config.choices.Parameterization
KEEP_DENSE = ("conv_in", "conv_out")        # the image-facing convs (module doc)


@dataclass(frozen=True)
class SharedSize:
    parameterization: str
    shared: int             # values of the shared (= trained) vector
    dense_equivalent: int   # values of the dense model of the same architecture

    @property
    def ratio(self) -> float:
        return self.shared / self.dense_equivalent

    def describe(self) -> str:
        if self.parameterization == "dense":
            return f"dense, {self.shared:,} shared parameters"
        return (f"{self.parameterization}, {self.shared:,} shared (trained) parameters of a "
                f"dense-equivalent {self.dense_equivalent:,} (ratio {self.ratio:.3f})")

    def metrics_fields(self) -> dict:
        """The metrics.jsonl fields (none under dense: its lines stay as they were)."""
        if self.parameterization == "dense":
            return {}
        return {"shared_params": self.shared, "dense_equivalent_params": self.dense_equivalent}


def _matrix_shape(layer: nn.Module) -> Tuple[int, int]:
    if isinstance(layer, nn.Linear):
        return layer.out_features, layer.in_features
    kh, kw = layer.kernel_size
    return layer.out_channels, layer.in_channels * kh * kw


def factorable(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    """(name, layer) of every dense Conv2d / Linear that lowrank replaces, in module order."""
    return [(name, mod) for name, mod in model.named_modules()
            if isinstance(mod, (nn.Conv2d, nn.Linear)) and name not in KEEP_DENSE]


def plan_ranks(model: nn.Module, model_cfg) -> Dict[str, int]:
    """name -> rank of each layer to factor, from the config's one rank knob."""
    layers = [(name, *_matrix_shape(mod)) for name, mod in factorable(model)]
    if not layers:
        return {}
    if model_cfg.lowrank_rank is not None:
        r = int(model_cfg.lowrank_rank)
        for name, m, n in layers:
            if factor_count(m, n, r) > m * n:
                smallest = min(max_rank(m_, n_) for _, m_, n_ in layers)
                raise ConfigError(
                    f"model.lowrank_rank: {r} is too large for layer {name} ([{m}, {n}] weight, "
                    f"{m * n} values): its factors would hold {factor_count(m, n, r)}; the largest "
                    f"rank every factored layer takes is {smallest} (or set model.lowrank_fraction)")
        return {name: r for name, _, _ in layers}
    return _ranks_for_fraction(model, layers, float(model_cfg.lowrank_fraction))


def _ranks_for_fraction(model, layers, fraction: float) -> Dict[str, int]:
    dense_total = count_parameters(model)
    fixed = dense_total - sum(m * n for _, m, n in layers)   # what stays dense
    scale = {name: m * n / (2 * (m + n)) for name, m, n in layers}   # the rank of equal size

    def ranks(g: float) -> Dict[str, int]:
        return {name: min(max(1, math.floor(g * scale[name] + 0.5)), max_rank(m, n))
                for name, m, n in layers}

    def total(rs: Dict[str, int]) -> int:
        return fixed + sum(factor_count(m, n, rs[name]) for name, m, n in layers)

    smallest = total(ranks(0.0)) / dense_total
    if fraction < smallest:
        raise ConfigError(f"model.lowrank_fraction: {fraction} is below the smallest ratio this "
                          f"model reaches, {smallest:.4f} (rank 1 in every factored layer)")
    # Every g at which some layer's rank steps up, just past the step: the exact set of totals.
    steps = {0.0} | {(k - 0.5) / scale[name] * (1 + 1e-9)
                     for name, m, n in layers for k in range(2, max_rank(m, n) + 1)}
    target = fraction * dense_total
    best = min(sorted(steps), key=lambda g: abs(total(ranks(g)) - target))
    return ranks(best)


def factorize(model: nn.Module, ranks: Dict[str, int]) -> nn.Module:
    """Replace each named layer by its low-rank form, in place (module order is kept)."""
    for name, rank in ranks.items():
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        dense = getattr(parent, child)
        layer = from_dense(dense, rank)
        if getattr(dense, "zero_init", False):
            layer.zero_init_()
        setattr(parent, child, layer)
    return model


def build_model(model_cfg, image_channels: int, image_size: int) -> nn.Module:
    """The model whose flattened parameters are the shared vector. Under lowrank the dense U-Net
    is built first (same draws as dense), then its layers are replaced by fresh factors drawn
    from the same global generator, so the model is a function of the seed alone.
    Raises ValueError (a shape the U-Net cannot take) or ConfigError (a rank knob)."""
    model = build_unet(model_cfg, image_channels, image_size)
    kind = getattr(model_cfg, "parameterization", "dense")
    if kind == "dense":
        return model
    if kind == "lowrank":
        return factorize(model, plan_ranks(model, model_cfg))
    raise ConfigError(f"model.parameterization: invalid value {kind!r}; valid values: "
                      + ", ".join(PARAMETERIZATIONS))


def shared_size(model: nn.Module, parameterization: str = "dense") -> SharedSize:
    shared = count_parameters(model)
    dense = shared
    for mod in model.modules():
        if isinstance(mod, _Hadamard):
            dense += mod.dense_numel - sum(p.numel() for p in mod.parameters())
    return SharedSize(parameterization, shared, dense)
