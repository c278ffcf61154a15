"""This rank's local training in a round: which of the round's clients it trains, in which
groups, and training one group, chosen once from the config and the set-up.

Which clients: with clients that carry state (or system.placement static) the fixed,
checkpointed placement of set-up; else the round's arrivals dealt afresh by their step counts
(placement.round_placement). Groups: of one client (trained by client.LocalTrainer), or of
system.client_group_size clients formed from the whole round and placed whole
(client_groups.py), so which clients share a group never depends on the rank count.

Pipelined (system.pipeline_clients; on a GPU by default): the next client's first step is
launched before the previous client is finished (its vector waited for and delivered: encoded and
sent), so on a GPU its device->host copy (readback.py) and its encoding overlap the next client's
training. Each client's draws are seeded by its own id, and nothing a delivery does feeds a
later client's training, so the order changes no result (tests/federation/test_pipeline.py).
"""
from __future__ import annotations

import time
from typing import Callable, List, Optional, Sequence

import numpy as np

from feddm_hpc.federation.client import LocalTrainer
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


def pipelines_clients(system_cfg, device) -> bool:
    """system.pipeline_clients resolved: auto pipelines on a GPU only (on a CPU the same cores
    train and encode, so nothing would overlap)."""
    setting = system_cfg.pipeline_clients
    return str(device).startswith("cuda") if setting == "auto" else bool(setting)


class RankTraining:
    """Trains this rank's groups of a round. terms_of / poison_of: a client's gradient terms
    (the strategy's) and its data attack (attacks.DataPoison.of). `private` (PrivateParts)
    gives each client's start as the global shared vector and its own private parts, and
    keeps them after training (under full sharing both are the identity). `pipelined`: see the
    module's docstring (groups of several clients are never pipelined: they train as one)."""

    def __init__(self, trainer: LocalTrainer, setup: RunSetup, grouping: Grouping, private,
                 terms_of: Callable, poison_of: Callable, diffusion_cfg, pipelined: bool = False):
        self.trainer, self.setup, self.grouping, self.private = trainer, setup, grouping, private
        self.terms_of, self.poison_of = terms_of, poison_of
        self.group_trainer = GroupTrainer(trainer, diffusion_cfg) if setup.group_size > 1 else None
        self.pipelined = pipelined and setup.group_size == 1
        if self.pipelined:
            trainer.pipeline()
        self._staged = None   # the round's start on the trainer's device, during run()

    def groups(self, plan) -> List[List[int]]:
        return self.grouping(plan)

    def launch(self, group: Sequence[int], start: np.ndarray, round_index: int,
               after_first_step: Optional[Callable[[], None]] = None) -> Callable[[], list]:
        """Starts training the group; the returned call waits for it and gives
        [(the client's trained shared vector, its LocalResult)] for each member, in order. A group
        of one takes the one-at-a-time path, exactly as without groups."""
        parts = self.setup.parts
        if len(group) == 1:
            cid = group[0]
            begin = self._staged if self._staged is not None else self.private.start(cid, start)
            launched = self.trainer.launch(begin, cid, parts[cid],
                                           round_index, terms=self.terms_of(cid),
                                           poison=self.poison_of(cid),
                                           after_first_step=after_first_step)

            def finish():
                local, result = launched.finish()
                return [(self.private.split(cid, local), result)]
            return finish
        assert self.private.space.identity, "partial sharing trains one client at a time (setup.py)"
        if after_first_step is not None:
            after_first_step()
        members = [Member(c, parts[c], self.terms_of(c), self.poison_of(c)) for c in group]
        trained = self.group_trainer.train_group(start, members, round_index)
        return lambda: trained

    def run(self, plan, start: np.ndarray, round_index: int, deliver: Callable, phases) -> None:
        """Trains this rank's groups of the round and calls deliver(local, result, train_s) for
        each client in id order once its vector is on the host (the vector is valid until the
        call returns). Phases: train (wall s, waits for the device included, deliveries
        excluded) and train_cpu (CPU s of this process in local training).
        Under full sharing every client of the round starts from `start`: on a GPU it crosses to
        the device once for the round (LocalTrainer.stage), not once per client."""
        groups = self.groups(plan)
        if self.private.space.identity and groups:
            self._staged = self.trainer.stage(start)
        try:
            self._run(groups, start, round_index, deliver, phases)
        finally:
            self._staged = None

    def _run(self, groups, start, round_index, deliver, phases) -> None:
        pending = None
        for group in groups:
            previous, spent = pending, [0.0, 0.0]

            def finish_previous(previous=previous, spent=spent):
                t, c = time.perf_counter(), time.process_time()
                self._finish(previous, deliver, phases)
                spent[0] += time.perf_counter() - t
                spent[1] += time.process_time() - c

            t, c = time.perf_counter(), time.process_time()
            finisher = self.launch(group, start, round_index,
                                   finish_previous if previous is not None else None)
            pending = (finisher, time.perf_counter() - t - spent[0],
                       time.process_time() - c - spent[1])
            if not self.pipelined:
                self._finish(pending, deliver, phases)
                pending = None
        if pending is not None:
            self._finish(pending, deliver, phases)

    @staticmethod
    def _finish(pending, deliver: Callable, phases) -> None:
        finisher, launch_s, launch_cpu = pending
        t, c = time.perf_counter(), time.process_time()
        trained = finisher()
        train_s = launch_s + time.perf_counter() - t
        phases.add("train", train_s)
        phases.add("train_cpu", launch_cpu + time.process_time() - c)
        for local, result in trained:   # each member's result was ready when its group was
            deliver(local, result, train_s)
