"""The valid values of every choice field, as typing.Literal types, and their one generic check.

Each Literal below is the one source of truth for its field's values. Where code elsewhere keys a
registry by the same names (the comment beside each type names it), tests/config/test_config_choices.py
asserts that the registry's names equal the Literal's values, so neither can drift alone. The
order of a Literal's values is the order error messages list them in.
"""
from __future__ import annotations

import dataclasses
import functools
import re
import typing
from typing import Any, Literal, Optional, Tuple

from feddm_hpc.errors import ConfigError

Dataset = Literal["mnist", "fashion_mnist", "npz", "hdf5", "image_folder",
                  "cifar10"]                                           # data.datasets.DATASETS
Partition = Literal["iid", "dirichlet", "dirichlet_balanced", "shards"]  # data.partition.SCHEMES
Schedule = Literal["linear", "cosine"]                                 # diffusion.SCHEDULES
Prediction = Literal["eps", "v"]                                       # diffusion.PREDICTIONS
LossWeighting = Literal["none", "min_snr"]                             # diffusion.LOSS_WEIGHTINGS
Algorithm = Literal["fedadagrad", "fedadam", "fedavg", "fedavgm", "fedprox", "fedyogi",
                    "scaffold"]                                        # strategies.STRATEGIES
Straggler = Literal["none", "lognormal"]                               # participation.py
CohortSampling = Literal["uniform", "shuffled"]                        # seeding.sample_cohort
Optimizer = Literal["adam", "adamw", "sgd"]                            # client.make_optimizer
LrSchedule = Literal["constant", "cosine"]                             # client.round_lr
Uplink = Literal["none", "quant", "topk"]                              # compression.COMPRESSORS
# 16: the float16 codec (fp16_format); 8, 4, 2: the integer quant codec (quantize.VALID_BITS).
Bits = Literal[16, 8, 4, 2]
TopkValueBits = Literal[32, 16, 8]                                     # compression.topk.VALUE_BITS
Lossless = Literal["none", "zlib", "zstd"]                             # compression.header.LOSSLESS_IDS
Fp16Format = Literal["fp16", "bf16"]
Target = Literal["update", "weights"]
Downlink = Literal["none", "quant"]
Parameterization = Literal["dense", "lowrank", "hyper"]  # diffusion.parameterization.PARAMETERIZATIONS
# federation.shared_parts: presets, then the U-Net's parts              # diffusion.parts.NAMES
SharedPart = Literal["all", "decoder", "latent_decoder", "encoder",
                     "time_embedding", "input", "down", "middle", "up", "output"]
UNET_PARTS = ("time_embedding", "input", "down", "middle", "up", "output")
SHARED_PART_PRESETS = {"all": UNET_PARTS, "decoder": ("up", "output"),
                       "latent_decoder": ("middle", "up", "output"),
                       "encoder": ("time_embedding", "input", "down", "middle")}


def expand_shared_parts(names) -> Tuple[str, ...]:
    """federation.shared_parts (parts and presets) -> the parts covered, in UNET_PARTS order."""
    covered = set()
    for n in names:
        covered.update(SHARED_PART_PRESETS.get(n, (n,)))
    return tuple(p for p in UNET_PARTS if p in covered)
ModelName = Literal["unet", "diffusers_unet2d"]                        # diffusion.models.MODELS
Sampler = Literal["ddim", "ddpm"]                                      # diffusion.SAMPLERS
Transport = Literal["gather", "hierarchical"]                          # transports.TRANSPORTS
Placement = Literal["auto", "static", "per_round"]
Precision = Literal["fp32", "bf16"]                                    # federation.precision.PRECISIONS
Aggregation = Literal["mean", "median", "trimmed_mean", "krum", "multi_krum"]  # strategies.robust.AGGREGATION_RULES
AttackKind = Literal["none", "sign_flip", "scaled", "gaussian", "label_flip"]  # federation.attacks.ATTACK_KINDS + none


def literal_values(hint: Any) -> Optional[Tuple[Any, ...]]:
    """The values of a Literal type (also inside Optional[...]); None for any other type."""
    if typing.get_origin(hint) is typing.Union:
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        return literal_values(inner[0]) if len(inner) == 1 else None
    if typing.get_origin(hint) is Literal:
        return typing.get_args(hint)
    return None


def literal_base(hint: Any) -> type:
    """The one Python type of a Literal's values (str or int here)."""
    kinds = {type(v) for v in typing.get_args(hint)}
    assert len(kinds) == 1, f"a Literal mixes value types: {hint}"
    return kinds.pop()


# Fields that also take a user's class by import path, `package.module:Name` (docs/extending.md).
# Only the syntax is checked here (the config layer imports nothing); the import and the protocol
# check happen where the object is built: compression.make_compressor, strategies.make_strategy,
# data.load_dataset, diffusion.models.build_network (logging.callbacks, a list of import paths
# only, is checked in sections.py and built by federation.callbacks.user_callbacks).
EXTENSIBLE_FIELDS = frozenset({"federation.algorithm", "compression.uplink", "data.dataset",
                               "model.name"})
IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def is_import_path(value: Any) -> bool:
    return isinstance(value, str) and IMPORT_PATH.match(value) is not None


def check_choice(value: Any, hint: Any, name: str) -> Any:
    """`value` if it is one of the Literal `hint`'s values (bool is no int here), else ConfigError
    "name: invalid value 'x'; valid values: a, b, c". Fields of EXTENSIBLE_FIELDS also take an
    import path `package.module:Name`."""
    values = typing.get_args(hint)
    if not any(type(value) is type(v) and value == v for v in values):
        if name in EXTENSIBLE_FIELDS and is_import_path(value):
            return value
        extra = " or an import path package.module:Name" if name in EXTENSIBLE_FIELDS else ""
        raise ConfigError(f"{name}: invalid value {value!r}; valid values: "
                          + ", ".join(str(v) for v in values) + extra)
    return value


@functools.lru_cache(maxsize=None)
def choice_fields(cls: type) -> Tuple[Tuple[str, Any], ...]:
    """(name, Literal type) of every choice field of a section dataclass, in field order."""
    hints = typing.get_type_hints(cls)
    return tuple((f.name, hints[f.name]) for f in dataclasses.fields(cls)
                 if typing.get_origin(hints[f.name]) is Literal)


def check_choices(section: Any, prefix: str) -> None:
    """check_choice on every Literal field of a section instance (a built or replaced one)."""
    for name, hint in choice_fields(type(section)):
        check_choice(getattr(section, name), hint, f"{prefix}.{name}")


def require(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)
