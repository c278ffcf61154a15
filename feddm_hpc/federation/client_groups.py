"""Several clients of a round trained at once, as one vectorized computation (system.client_group_size).

Each client of a group starts from the same global vector; its parameters become one row of
stacked tensors [G, ...] (torch.func.stack_module_state's layout), the model runs once per step
under torch.func.vmap over (parameters, batch), and one optimizer steps the stacked tensors.
Nothing couples the rows: Adam, AdamW and SGD are elementwise, the loss is the sum of the
clients' own mean losses (so each row's gradient is its client's gradient), gradient clipping
uses each client's own norm, and the strategy's terms act row by row. Each client draws its
batches and noise from its own generators in the same order as the one-at-a-time trainer
(client.LocalTrainer), so a client's update equals its one-at-a-time update up to float
rounding (the vectorized kernels sum in another order).

Unequal step counts: the group steps until its longest client is done; a client's vector is
taken right after its own last step, and later steps of its row (fed its last inputs again)
never reach its result.

Groups are formed from the round's clients in id order (form_groups) and placed on ranks whole,
so which clients share a group, and with it every float, depends on G and never on the rank count.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.func import functional_call, stack_module_state, vmap

from feddm_hpc.diffusion.loss import noised_inputs, score_outputs
from feddm_hpc.federation.client import (
    LocalResult,
    local_steps_for,
    round_lr,
    training_batch,
)
from feddm_hpc.federation.local_steps import run_local_steps
from feddm_hpc.federation.placement import balance
from feddm_hpc.federation.precision import forward_precision
from feddm_hpc.optimizers import make_optimizer
from feddm_hpc.params import unflatten_into


@dataclass(frozen=True)
class Member:
    """One client of a group: what LocalTrainer.train takes for it."""
    client_id: int
    indices: np.ndarray
    terms: Sequence = ()
    poison: Callable | None = None


def form_groups(clients: Sequence[int], group_size: int,
                blocks: bool = False) -> list[list[int]]:
    """The round's clients as groups of at most `group_size`, in id order.

    blocks=False: consecutive chunks of the sorted clients (stateless clients: any rank can train
    any group). blocks=True: the clients of each fixed id block [kG, (k+1)G), for clients whose
    state lives on the rank of their block (placement.assign_blocks); with every client in the
    round both rules give the same groups.
    """
    ids = sorted(int(c) for c in clients)
    if blocks:
        out: dict = {}
        for c in ids:
            out.setdefault(c // group_size, []).append(c)
        return [out[k] for k in sorted(out)]
    return [ids[i:i + group_size] for i in range(0, len(ids), group_size)]


def place_groups(groups: list[list[int]], steps_of: Callable[[int], int],
                 num_ranks: int) -> list[list[list[int]]]:
    """Groups dealt to ranks whole, balanced by each group's cost (its longest client's steps
    times its size: the padded work it does)."""
    loads = [max(steps_of(c) for c in g) * len(g) for g in groups]
    return [[groups[i] for i in sorted(idx)] for idx in balance(loads, num_ranks)]


def stack_terms(per_client: Sequence[Sequence], stacked: Sequence[torch.Tensor]) -> list:
    """The group's terms: the k-th term of every client, merged by its kind into one acting on
    the rows (GradientTerm.stacked: this module names no term)."""
    counts = {len(t) for t in per_client}
    if len(counts) != 1:
        raise ValueError("clients of one group must carry the same kinds of gradient terms")
    merged = []
    for k in range(counts.pop()):
        column = [terms[k] for terms in per_client]
        kind = type(column[0])
        if any(not isinstance(t, kind) for t in column):
            raise ValueError("clients of one group must carry the same kinds of gradient terms")
        merged.append(kind.stacked(column, stacked))
    return merged


def clip_rows_(stacked: Sequence[torch.Tensor], max_norm: float) -> None:
    """torch.nn.utils.clip_grad_norm_ applied to each row (client) on its own."""
    norms = torch.stack([p.grad.flatten(1).norm(dim=1) for p in stacked])   # [P, G]
    total = norms.norm(dim=0)                                                # [G]
    coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for p in stacked:
        p.grad.mul_(coef.view(-1, *([1] * (p.dim() - 1))))


class GroupTrainer:
    """Trains groups of clients with the rank's model (LocalTrainer's) as a functional template."""

    def __init__(self, trainer, diffusion_cfg):
        self.t = trainer
        self.diffusion = diffusion_cfg
        self.names = [n for n, _ in trainer.model.named_parameters()]

        def forward(params, x, t):
            return functional_call(trainer.model, params, (x, t))
        self.batched = vmap(forward, in_dims=(0, 0, 0))

    def _stacked_start(self, global_vector: np.ndarray, g: int):
        unflatten_into(global_vector, self.t.model)
        params, _ = stack_module_state([self.t.model] * g)
        return {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}

    @staticmethod
    def _row_vector(stacked: Sequence[torch.Tensor], row: int) -> torch.Tensor:
        """A copy of one client's parameters as one flat tensor, on the device (no host wait)."""
        return torch.cat([p[row].detach().reshape(-1) for p in stacked])

    def train_group(self, global_vector: np.ndarray, members: Sequence[Member],
                    round_index: int) -> list[tuple]:
        """[(local vector, LocalResult)] of each member, in the members' order."""
        tr, cfg = self.t, self.t.cfg
        g = len(members)
        params = self._stacked_start(global_vector, g)
        stacked = [params[n] for n in self.names]
        terms = stack_terms([m.terms for m in members], stacked)
        optimizer = make_optimizer(cfg, stacked, round_lr(cfg, round_index, tr.total_rounds))
        steps = [local_steps_for(cfg, m.indices.size) for m in members]
        inputs = [tr.client_inputs(m.client_id, m.indices, round_index, s)
                  for m, s in zip(members, steps)]
        tr.model.train()
        rows = StackedRows(self, params, stacked, members, inputs, steps)
        totals = run_local_steps(rows, optimizer, terms, cfg.grad_clip, steps, tr.device)
        mean = (totals.cpu() / torch.tensor(steps, dtype=totals.dtype)).tolist()
        vectors = torch.stack(rows.results).cpu().numpy()   # one copy to the host for the group
        return [(vectors[i], LocalResult(m.client_id, int(m.indices.size), float(mean[i]), steps[i]))
                for i, m in enumerate(members)]


class StackedRows:
    """A group's rows of the local loop (local_steps.py): the stacked parameters [G, ...], the
    model run once per step under vmap, each row's loss scored from its own client's inputs."""

    def __init__(self, group: GroupTrainer, params: dict, stacked: list, members, inputs, steps):
        self.group, self.p, self.params = group, params, stacked
        self.members, self.steps = members, steps
        self.plans, self.gens = zip(*inputs)
        self.last: list[tuple | None] = [None] * len(members)
        self.results: list[torch.Tensor | None] = [None] * len(members)

    def losses(self, step: int) -> torch.Tensor:
        tr, d = self.group.t, self.group.diffusion
        for i, m in enumerate(self.members):
            if step < self.steps[i]:      # a finished client's row is fed its last inputs again
                x0 = training_batch(tr.images, self.plans[i][step], m.poison)
                self.last[i] = noised_inputs(x0, tr.schedule, self.gens[i], d.prediction)
        x_t, t, target = (torch.stack(parts) for parts in zip(*self.last))
        with forward_precision(tr.device, tr.precision):
            output = self.group.batched(self.p, x_t, t)
        return score_outputs(output.float(), target, t, tr.schedule, d.prediction,
                             d.loss_weighting, d.min_snr_gamma)                # [G]

    def clip_(self, max_norm: float) -> None:
        clip_rows_(self.params, max_norm)

    def stepped(self, step: int) -> None:
        for i, s in enumerate(self.steps):
            if s == step + 1:
                self.results[i] = GroupTrainer._row_vector(self.params, i)
