"""This rank's local training in a round: which of the round's clients it trains, in which
groups, and training one group, chosen once from the config and the set-up.

Which clients: with clients that carry state (or system.placement static) the fixed,
checkpointed placement of set-up; else the round's arrivals dealt afresh by their step counts
(placement.round_placement). Groups: of one client (trained by client.LocalTrainer), or of
system.client_group_size clients formed from the whole round and placed whole
(client_groups.py), so which clients share a group never depends on the rank count.
"""
from __future__ import annotations

from typing import Callable, List, Sequence, Tuple

import numpy as np

from feddm_hpc.federation.client import LocalResult, LocalTrainer
from feddm_hpc.federation.client_groups import GroupTrainer, Member, form_groups, place_groups
from feddm_hpc.federation.placement import round_placement
from feddm_hpc.federation.setup import RunSetup, fixed_hosts

Grouping = Callable[[object], List[List[int]]]   # a round's plan -> this rank's groups, in id order


def grouping_of_run(cfg, setup: RunSetup, rank: int, num_ranks: int,
                    steps_of: Callable[[int], int]) -> Grouping:
    """How this rank's clients of a round are found and grouped, for the whole run."""
    g, hosted = setup.group_size, set(setup.hosted[rank])
    if g == 1 and fixed_hosts(cfg):
        return lambda plan: [[c] for c in plan.arrived if c in hosted]
    if g == 1:
        def dealt(plan):
            arrived = list(plan.arrived)
            mine = set(round_placement(arrived, [steps_of(c) for c in arrived], num_ranks)[rank])
            return [[c] for c in arrived if c in mine]
        return dealt
    if fixed_hosts(cfg):   # state lives on the block's rank: groups are blocks
        return lambda plan: [grp for grp in form_groups(plan.arrived, g, blocks=True)
                             if grp[0] in hosted]
    return lambda plan: place_groups(form_groups(plan.arrived, g), steps_of, num_ranks)[rank]


class RankTraining:
    """Trains this rank's groups of a round. terms_of / poison_of: a client's gradient terms
    (the strategy's) and its data attack (attacks.DataPoison.of). `private` (PrivateParts)
    gives each client's start as the global shared vector and its own private parts, and
    keeps them after training (under full sharing both are the identity)."""

    def __init__(self, trainer: LocalTrainer, setup: RunSetup, grouping: Grouping, private,
                 terms_of: Callable, poison_of: Callable, diffusion_cfg):
        self.trainer, self.setup, self.grouping, self.private = trainer, setup, grouping, private
        self.terms_of, self.poison_of = terms_of, poison_of
        self.group_trainer = GroupTrainer(trainer, diffusion_cfg) if setup.group_size > 1 else None

    def groups(self, plan) -> List[List[int]]:
        return self.grouping(plan)

    def train(self, group: Sequence[int], start: np.ndarray,
              round_index: int) -> List[Tuple[np.ndarray, LocalResult]]:
        """[(the client's trained shared vector, its LocalResult)] for each client of the group,
        in order. A group of one takes the one-at-a-time path, exactly as without groups."""
        parts = self.setup.parts
        if len(group) == 1:
            cid = group[0]
            local, result = self.trainer.train(self.private.start(cid, start), cid, parts[cid],
                                               round_index, terms=self.terms_of(cid),
                                               poison=self.poison_of(cid))
            return [(self.private.split(cid, local), result)]
        assert self.private.space.identity, "partial sharing trains one client at a time (setup.py)"
        members = [Member(c, parts[c], self.terms_of(c), self.poison_of(c)) for c in group]
        return self.group_trainer.train_group(start, members, round_index)
