"""Local training of one client: (global params, shard, seeds) -> local params. No MPI, no disk.

A rank holds one model instance however many clients it hosts: each client starts by loading the
global vector into it and a fresh optimizer (clients are stateless across rounds, as in FedAvg).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from . import seeding
from .diffusion import training_loss
from .params import flatten_into, unflatten_into


@dataclass(frozen=True)
class LocalResult:
    client_id: int
    num_samples: int
    loss: float          # mean diffusion loss over the local steps (without the proximal term)
    steps: int


def local_steps_for(client_cfg, num_samples: int) -> int:
    if client_cfg.local_steps is not None:
        return client_cfg.local_steps
    return max(1, math.ceil(client_cfg.local_epochs * num_samples / client_cfg.batch_size))


def make_optimizer(client_cfg, params):
    name = client_cfg.optimizer
    if name == "adam":
        return torch.optim.Adam(params, lr=client_cfg.lr, weight_decay=client_cfg.weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=client_cfg.lr, weight_decay=client_cfg.weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=client_cfg.lr, momentum=client_cfg.momentum,
                               weight_decay=client_cfg.weight_decay)
    raise ValueError(f"client.optimizer: unknown {name!r}")


class BatchStream:
    """Batches of one client's shard: successive seeded permutations, always full batches."""

    def __init__(self, indices: np.ndarray, batch_size: int, rng: np.random.Generator):
        self.indices, self.batch_size, self.rng = indices, batch_size, rng
        self.order = rng.permutation(indices)
        self.pos = 0

    def next(self) -> np.ndarray:
        if self.pos + self.batch_size > self.order.size:
            self.order = self.rng.permutation(self.indices)
            self.pos = 0
        batch = self.order[self.pos:self.pos + self.batch_size]
        self.pos += self.batch_size
        return batch


class LocalTrainer:
    """Owns the rank's single model instance and the dataset tensor on the rank's device."""

    def __init__(self, model, schedule, client_cfg, images: torch.Tensor, device: str, seed: int):
        self.model, self.schedule, self.cfg = model, schedule, client_cfg
        self.images = images          # float32 [N,C,H,W] in [-1,1], on `device`
        self.device, self.seed = device, seed
        self.params = [p for p in model.parameters()]
        self.local_vector = np.empty(sum(p.numel() for p in self.params), dtype=np.float32)
        self._anchor = None           # global params on device, for the proximal term

    def train(self, global_vector: np.ndarray, client_id: int, indices: np.ndarray,
              round_index: int) -> tuple[np.ndarray, LocalResult]:
        unflatten_into(global_vector, self.model)
        mu = self.cfg.prox_mu
        if mu > 0:
            self._anchor = [p.detach().clone() for p in self.params]
        optimizer = make_optimizer(self.cfg, self.params)
        batches = BatchStream(indices, self.cfg.batch_size,
                              seeding.numpy_rng(self.seed, seeding.TRAIN, round_index, client_id))
        gen_device = "cuda" if str(self.device).startswith("cuda") else "cpu"
        noise_gen = torch.Generator(device=gen_device)
        noise_gen.manual_seed(seeding.seed_for(self.seed, seeding.TRAIN, round_index, client_id))
        # Dropout draws from torch's global generator: seed it per client as well.
        torch.manual_seed(seeding.seed_for(self.seed, seeding.DROPOUT, round_index, client_id))
        steps = local_steps_for(self.cfg, indices.size)
        self.model.train()
        total = torch.zeros((), device=self.device)
        for _ in range(steps):
            batch = torch.from_numpy(batches.next()).to(self.images.device)
            x0 = self.images.index_select(0, batch)
            loss = training_loss(self.model, x0, self.schedule, noise_gen)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if mu > 0:  # grad of mu/2 ||w - w_global||^2, added directly: cheaper than a loss term
                with torch.no_grad():
                    for p, anchor in zip(self.params, self._anchor):
                        p.grad.add_(p - anchor, alpha=mu)
            if self.cfg.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)
            optimizer.step()
            total += loss.detach()
        flatten_into(self.model, self.local_vector)
        result = LocalResult(client_id, int(indices.size), float(total.item()) / steps, steps)
        return self.local_vector, result
