"""The one local training loop: G clients' rows stepped together (G = 1: one client's model).

Both a single client (client.LocalTrainer) and a group of clients trained as one vectorized
computation (client_groups.GroupTrainer) run `run_local_steps`; what differs is how a step's
losses are computed and how gradients are clipped, which the rows object supplies:

    rows.params        the tensors the optimizer steps (the model's parameters, or the group's
                       stacked [G, ...] tensors)
    rows.losses(step)  this step's loss per row, [G], with the autograd graph; a row whose
                       client has finished is fed its last inputs again
    rows.clip_(norm)   gradient clipping, each client by its own norm
    rows.stepped(step) after the optimizer step (a group takes a finished client's vector here)

Why two kinds of rows rather than one (a single client as a vmap group of one): the vectorized
kernels sum in another order, so a group of one would not reproduce a one-at-a-time client's
floats, and runs must stay bit-identical to what they were.
"""
from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np
import torch


class Rows(Protocol):
    params: Sequence[torch.Tensor]

    def losses(self, step: int) -> torch.Tensor: ...

    def clip_(self, max_norm: float) -> None: ...

    def stepped(self, step: int) -> None: ...


def add_gradient_terms(params, terms) -> None:
    """Add the strategy's gradient terms (strategies/terms.py: FedProx's proximal term,
    SCAFFOLD's correction) to the gradients, in place and in order, before gradient clipping, as
    if they were part of the objective. A group's terms act on its stacked rows
    (GradientTerm.stacked)."""
    if not terms:
        return
    with torch.no_grad():
        for term in terms:
            term.add_to(params)


def run_local_steps(rows: Rows, optimizer, terms, grad_clip: float | None,
                    steps: Sequence[int], device, after_first_step=None) -> torch.Tensor:
    """max(steps) optimizer steps of every row; returns each row's summed loss over its own
    steps, [G], on the device (read once by the caller: no step waits for the host).
    after_first_step: called once after the first step is launched (a pipelined round's
    previous client is finished there: client.LocalTrainer.launch)."""
    g = len(steps)
    # Rows with fewer steps stop counting their loss after their last step; with equal steps
    # every row counts every step (no mask: where(True, x, 0) is x, so skipping it changes nothing).
    active_at = None
    if len(set(steps)) > 1:
        active_at = torch.from_numpy(np.arange(max(steps))[:, None] < np.array(steps)[None, :])
        active_at = active_at.to(device)
    totals = torch.zeros(g, device=device)
    for step in range(max(steps)):
        losses = rows.losses(step)
        optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()
        add_gradient_terms(rows.params, terms)
        if grad_clip is not None:
            rows.clip_(grad_clip)
        optimizer.step()
        done = losses.detach()
        totals += done if active_at is None else torch.where(active_at[step], done,
                                                             torch.zeros_like(totals))
        rows.stepped(step)
        if step == 0 and after_first_step is not None:
            after_first_step()
    if max(steps, default=0) == 0 and after_first_step is not None:
        after_first_step()
    return totals
