"""What a client's trained vector goes through before it leaves the client: an ordered pipeline
of stages built once from the config (config/uplink_plan.py says which, in which order, and
what each needs and guarantees; federation/uplink_stages.py holds the stages).

For example DP with 8-bit updates and error feedback runs delta -> clip -> encode: the update,
clipped to C (the clip stage guarantees norm <= C), encoded with the residual added and clipped
again (the encode stage needs norm <= C of an update and keeps it). Secure aggregation puts
`mask` where `encode` would be; it needs an integer codec without error feedback and an update,
so secure aggregation with top-k, with error feedback or with compression.target weights is
refused by the plan before any stage is built. With no mechanism on, the pipeline is the
update (`delta`) and the codec (`encode`): such runs are bit-identical to runs before the
pipeline existed.

`Uplink.send` returns the client's `Outgoing`: the payload and the scalars its report states in
the clear (under secure aggregation none: they travel masked in the payload).
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence

import numpy as np

from feddm_hpc.config.uplink_plan import UplinkPlan, uplink_plan
from feddm_hpc.federation.uplink_stages import STAGES, Outgoing, Stage

__all__ = ["Outgoing", "Uplink", "build_uplink"]


class Uplink:
    def __init__(self, plan: UplinkPlan, stages: List[Stage]):
        self.plan, self.stages = plan, stages
        for stage, following in zip(stages, stages[1:]):
            stage.output_slot = following.input_slot
        self.guarantees = plan.facts_after()   # what holds of every payload's vector

    @property
    def names(self) -> tuple:
        return self.plan.names

    def send(self, client_id: int, round_index: int, cohort: Sequence[int], start: np.ndarray,
             local: np.ndarray, loss: float = math.nan, num_samples: int = 0) -> Outgoing:
        """One client's upload: `local` (its trained shared vector) through every stage."""
        out = Outgoing(int(client_id), round_index, cohort, start, local, loss, num_samples)
        for stage in self.stages:
            stage.apply(out)
        return out

    def __repr__(self) -> str:
        return f"Uplink({' -> '.join(self.names)})"


def build_uplink(cfg, compressor, num_params: Optional[int] = None) -> Uplink:
    """The config's uplink. num_params: the shared vector's length, for the start-up check that
    secure aggregation's grid can keep a DP contribution within C (exit 2 if it cannot)."""
    plan = uplink_plan(cfg)   # Uplink checks it (a config from load_config passed already)
    return Uplink(plan, [STAGES[spec.name](spec, cfg, compressor=compressor, num_params=num_params)
                         for spec in plan.stages])
