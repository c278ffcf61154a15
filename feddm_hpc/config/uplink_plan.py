"""The uplink as data: the stages a client's outgoing vector passes, in order, chosen once from
the config, with what each stage needs of the vector (and of the codec it stands for) and what
it guarantees. Which combinations of attack, clipping, target, error feedback, codec and masking
are valid follows from the plan (`UplinkPlan.check`): a stage whose need neither the start nor
an earlier stage provides refuses the config with exit 2, naming the field.

The federation layer runs the plan (federation/uplink.py builds one stage object per entry);
the config layer only reads it, so `feddm-hpc validate` refuses what a run would refuse without
loading torch or the federation layer (config imports nothing from the package but errors).

The stages, in the order they can appear:

    inject_nonfinite  testing aid: a listed client's weights get one NaN and one Inf, as a
                      diverged client's would (federation.inject_nan_clients)
    delta             the update local - start (for compression.target update, or for the
                      stages below that act on the update)
    attack            an attacked client's update is replaced (attack.kind sign_flip | scaled |
                      gaussian); it comes first, so the attacker still follows the protocol
    clip              DP's clipping to privacy.clip_norm
    add_start         back to weights, start + update (compression.target weights)
    encode            the codec, with error feedback; under DP it clips again after adding the
                      residual (norm_bound), so the bound survives error feedback
    mask              instead of the codec under privacy.secure_aggregation: the public integer
                      grid (kept within C under DP) and the pairwise masks
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import FrozenSet, Tuple

from feddm_hpc.errors import ConfigError

# What can hold of the outgoing vector, and of the codec the last stage applies.
WEIGHTS = "weights"                  # the vector is the client's local weights
UPDATE = "update"                    # the vector is the client's update, local - start
BOUNDED = "norm <= C"                # its L2 norm is at most privacy.clip_norm
INTEGER_CODEC = "integer codec"      # compression.uplink quant: values on an integer grid
STATELESS_CODEC = "stateless codec"  # no error-feedback residual kept between rounds

UPDATE_ATTACKS = ("sign_flip", "scaled", "gaussian")   # the attack kinds that act on the update

_DP_ON_UPDATE = ("privacy.clip_norm: needs compression.target=update (DP clips the client's "
                 "update, not its weights)")
_MASK_INTEGER = ("privacy.secure_aggregation: needs compression.uplink=quant (an integer codec; "
                 "the masks live in its integer ring)")
_MASK_STATELESS = "privacy.secure_aggregation: not with compression.error_feedback"
_MASK_UPDATE = "privacy.secure_aggregation: needs compression.target=update"
# Needs the plan itself meets (delta comes first): stated for the reader, unreachable by a config.
_ON_UPDATE = "{}: this stage acts on the update, which no earlier stage made"


@dataclass(frozen=True)
class StageSpec:
    """One stage of the plan. needs: (fact, the refusal when it does not hold), checked in
    order; gives / ends: the facts that hold / no longer hold after the stage."""
    name: str
    needs: Tuple[Tuple[str, str], ...] = ()
    gives: FrozenSet[str] = frozenset()
    ends: FrozenSet[str] = frozenset()


@dataclass(frozen=True)
class UplinkPlan:
    start: FrozenSet[str]              # what holds before the first stage
    stages: Tuple[StageSpec, ...]

    @property
    def names(self) -> Tuple[str, ...]:
        return tuple(s.name for s in self.stages)

    def facts_after(self) -> FrozenSet[str]:
        """What holds of what the client sends; ConfigError at the first need that does not."""
        facts = set(self.start)
        for stage in self.stages:
            for fact, refusal in stage.needs:
                if fact not in facts:
                    raise ConfigError(refusal)
            facts = (facts - stage.ends) | stage.gives
        return frozenset(facts)

    def check(self) -> None:
        self.facts_after()


def update_attack_active(c) -> bool:
    """An attack on the update that names at least one client (attack.fraction rounds half up,
    as federation/attacks.attack_count does: 0.1 of 4 clients attacks nobody)."""
    a = c.attack
    if a.kind not in UPDATE_ATTACKS:
        return False
    return bool(a.clients) or math.floor(a.fraction * c.federation.num_clients + 0.5) >= 1


def uplink_plan(c) -> UplinkPlan:
    """The stages of this config's uplink, in order."""
    comp, dp = c.compression, c.privacy.clip_norm is not None
    start = {WEIGHTS}
    if comp.uplink == "quant":
        start.add(INTEGER_CODEC)
    if not comp.error_feedback:
        start.add(STATELESS_CODEC)
    # Under DP the encoder keeps the clipped update's bound, which is a bound on an update.
    bound_needs = ((UPDATE, _DP_ON_UPDATE), (BOUNDED, _DP_ON_UPDATE)) if dp else ()
    stages = []
    if c.federation.inject_nan_clients:
        stages.append(StageSpec("inject_nonfinite"))
    on_update = []
    if update_attack_active(c):
        on_update.append(StageSpec("attack", needs=((UPDATE, _ON_UPDATE.format("attack.kind")),),
                                   ends=frozenset({BOUNDED})))
    if dp:
        on_update.append(StageSpec("clip", needs=((UPDATE, _DP_ON_UPDATE),),
                                   gives=frozenset({BOUNDED})))
    if comp.target == "update" or on_update:
        stages.append(StageSpec("delta", gives=frozenset({UPDATE}), ends=frozenset({WEIGHTS})))
    stages += on_update
    if comp.target == "weights" and on_update:
        stages.append(StageSpec("add_start", needs=((UPDATE, _ON_UPDATE.format("compression.target")),),
                                gives=frozenset({WEIGHTS}), ends=frozenset({UPDATE, BOUNDED})))
    if c.privacy.secure_aggregation:
        stages.append(StageSpec("mask", needs=bound_needs + (
            (INTEGER_CODEC, _MASK_INTEGER), (STATELESS_CODEC, _MASK_STATELESS),
            (UPDATE, _MASK_UPDATE))))
    else:
        # Without a norm bound, error feedback adds its residual after any clipping.
        stages.append(StageSpec("encode", needs=bound_needs,
                                ends=frozenset() if dp or not comp.error_feedback
                                else frozenset({BOUNDED})))
    return UplinkPlan(frozenset(start), tuple(stages))
