"""The named parts of the project's U-Net (diffusion/unet.py), for partial sharing.

`federation.shared_parts` lists parts (or presets of parts, config/choices.py) whose parameters
a client shares; the rest stay with each client (federation/shared_space.py). A part is a set of
the U-Net's top-level modules, so the names hold for every parameterization that keeps the module
tree (dense; lowrank, whose factors sit where the factored layer's weight sat). The
hypernetwork's generator serves every part at once and cannot be split (refused in validation).

The presets are modelled on FedDiffuse's variants (de Goede et al. 2024: the decoder, or the
latent and the decoder, federated while the rest stays local); they are this project's
definitions of those names on its U-Net, not a reproduction of that paper's code.
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Sequence, Tuple

from feddm_hpc.config.choices import SHARED_PART_PRESETS, UNET_PARTS, expand_shared_parts

# part -> the U-Net's top-level module names (the first component of a parameter name)
PARTS: Dict[str, Tuple[str, ...]] = {
    "time_embedding": ("temb",),
    "input": ("conv_in",),
    "down": ("down",),
    "middle": ("mid1", "mid_attn", "mid2"),
    "up": ("up",),
    "output": ("norm_out", "conv_out"),
}
assert tuple(PARTS) == UNET_PARTS, "config/choices.py names the same parts, in the same order"
PRESETS = SHARED_PART_PRESETS
NAMES = tuple(PRESETS) + tuple(PARTS)   # config.choices.SharedPart, in its order


def resolve(names: Sequence[str]) -> Tuple[str, ...]:
    """Part and preset names -> the parts they cover, in PARTS order. ValueError on a name that
    is neither (the message lists the valid ones)."""
    unknown = [n for n in names if n not in PARTS and n not in PRESETS]
    if unknown:
        raise ValueError(f"unknown part {unknown[0]!r} (parts: {', '.join(PARTS)}; presets: "
                         f"{', '.join(PRESETS)})")
    return expand_shared_parts(names)


def part_of(parameter_name: str) -> str:
    """The part a parameter belongs to; ValueError for a parameter outside every part (a model
    that is not the project's U-Net)."""
    top = parameter_name.split(".", 1)[0]
    for part, modules in PARTS.items():
        if top in modules:
            return part
    raise ValueError(f"parameter {parameter_name!r} belongs to no U-Net part "
                     f"({', '.join(PARTS)})")


def shared_mask(parameter_names: Iterable[str], parts: Sequence[str]) -> List[bool]:
    """Per parameter (in order): is it in one of `parts`?"""
    wanted = set(parts)
    return [part_of(name) in wanted for name in parameter_names]
