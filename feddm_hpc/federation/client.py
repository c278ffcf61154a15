"""Local training of one client: (global params, shard, seeds) -> local params. No MPI, no disk.

A rank holds one model instance however many clients it hosts: each client starts by loading the
global vector into it and an optimizer in a new one's state (feddm_hpc/optimizers.py; clients
are stateless across rounds, as in FedAvg). What a client costs besides its steps is kept to
copies: the vector goes in and out of the parameters in one call each (params.ParamViews), the
optimizer is reset rather than rebuilt, and only the generator that dropout draws from is
reseeded. The steps themselves are the one local loop (local_steps.py), which a group of
clients (client_groups.py) runs too.

On a GPU no step waits for the host: all of a client's batch indices are drawn before its first
step and cross to the device in one copy, the noise is drawn on the model's device
(feddm_hpc.generators), and the loss is read once, after the last step.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from feddm_hpc import generators, seeding
from feddm_hpc.data import select_batch
from feddm_hpc.diffusion.loss import training_loss  # the default loss_fn (L_simple)
from feddm_hpc.federation.local_steps import run_local_steps
from feddm_hpc.federation.precision import forward_precision
from feddm_hpc.federation.readback import make_readback
from feddm_hpc.lr_schedule import round_lr
from feddm_hpc.optimizers import make_optimizer
from feddm_hpc.params import ParamViews, flatten_into, unflatten_into


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


def batch_plan(batches: BatchStream, steps: int) -> np.ndarray:
    """The stream's next `steps` batches, drawn in order: [steps, batch_size]."""
    return np.stack([batches.next() for _ in range(steps)])


def to_device(array: np.ndarray, device) -> torch.Tensor:
    """`array` on `device` in one copy; to CUDA from page-locked memory, without blocking."""
    tensor = torch.from_numpy(array)
    device = torch.device(device)
    if device.type != "cuda":
        return tensor.to(device)
    pinned = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
    pinned.copy_(tensor)
    return pinned.to(device, non_blocking=True)


def training_batch(images: torch.Tensor, batch: torch.Tensor, poison=None) -> torch.Tensor:
    """One step's batch in [-1, 1], through a data attack's transform for an attacked client."""
    x0 = select_batch(images, batch)
    return x0 if poison is None else poison(x0)


class StagedStart:
    """A round's start vector already on the model's device (LocalTrainer.stage), loaded the
    way shared_space.StartPieces are (`write_into` a ParamViews, `compose` for a fallback)."""

    def __init__(self, host: np.ndarray, tensor: torch.Tensor):
        self.host, self.tensor = host, tensor

    def write_into(self, views) -> None:
        views.load_tensor(self.tensor)

    def compose(self) -> np.ndarray:
        return self.host


class ModelRow:
    """One client's row of the local loop (local_steps.py): the rank's model itself, its loss
    from the trainer's loss function (which draws the step's timesteps and noise)."""

    def __init__(self, trainer, plan: torch.Tensor, noise_gen, poison):
        self.t, self.batches, self.noise_gen, self.poison = trainer, plan.unbind(0), noise_gen, poison
        self.params = trainer.params

    def losses(self, step: int) -> torch.Tensor:
        t = self.t
        x0 = training_batch(t.images, self.batches[step], self.poison)
        with forward_precision(t.device, t.precision):
            loss = t.loss_fn(t.model, x0, t.schedule, self.noise_gen)
        return loss.reshape(1)

    def clip_(self, max_norm: float) -> None:
        torch.nn.utils.clip_grad_norm_(self.params, max_norm)

    def stepped(self, step: int) -> None:
        pass


class LocalTrainer:
    """Owns the rank's single model instance and the dataset tensor on the rank's device."""

    def __init__(self, model, schedule, client_cfg, images: torch.Tensor, device: str, seed: int,
                 loss_fn=training_loss, total_rounds: int = 1, precision: str = "fp32"):
        self.model, self.schedule, self.cfg = model, schedule, client_cfg
        self.loss_fn = loss_fn        # (model, x0, schedule, generator) -> loss: the diffusion recipe
        self.total_rounds = total_rounds
        self.precision = precision    # the forward's autocast (federation/precision.py)
        self.images = images          # uint8 [N,C,H,W] on `device`; batches converted by select_batch
        self.device, self.seed = device, seed
        # One copy call each way between the vectors and the model (params.ParamViews); None for
        # a model it cannot serve, which then copies tensor by tensor.
        self.views = ParamViews.bind(model)
        self.params = [p for p in model.parameters()]
        # The trained vectors' way back to the host (readback.py): reused host vectors, on a
        # GPU copied on a side stream; `pipeline()` keeps two for a pipelined round.
        self.readback = make_readback(self, pipelined=False)
        self._optimizer = None    # one per rank, reset per client (its reset)

    def pipeline(self) -> None:
        """Prepare for rounds whose next client starts training before this one is encoded
        (rank_training.py): two host vectors instead of one."""
        self.readback = make_readback(self, pipelined=True)

    def stage(self, vector: np.ndarray):
        """The round's start as every client of this rank loads it: on a GPU copied to the device
        once (page-locked, asynchronous), each client's load then a copy on the device
        (StagedStart); elsewhere the vector itself."""
        if self.views is None or self.views.device.type != "cuda":
            return vector
        return StagedStart(vector, to_device(np.ascontiguousarray(vector, dtype=np.float32),
                                             self.views.device))

    def load(self, vector) -> None:
        """The vector into the model's parameters: a float32 numpy vector, pieces of one
        (shared_space.StartPieces: each piece copied into its parameters, so partial sharing's
        start costs one full-model copy, as a full vector's does) or a StagedStart."""
        if isinstance(vector, np.ndarray):
            if self.views is None:
                unflatten_into(vector, self.model)
            else:
                self.views.load(vector)
        elif self.views is not None and self.views.intact():
            vector.write_into(self.views)
        else:
            unflatten_into(vector.compose(), self.model)

    def read_into(self, out: np.ndarray) -> np.ndarray:
        """The model's parameters into the vector `out`."""
        return flatten_into(self.model, out) if self.views is None else self.views.read_into(out)

    def fresh_optimizer(self, lr: float):
        """The rank's optimizer over the model's parameters, in the state a new one has."""
        if self._optimizer is None:
            self._optimizer = make_optimizer(self.cfg, self.params, lr)
        else:
            self._optimizer.reset(lr)
        return self._optimizer

    def client_inputs(self, client_id: int, indices: np.ndarray, round_index: int, steps: int,
                      purpose: int = seeding.TRAIN) -> tuple:
        """(a client's `steps` batches [steps, batch_size] on the images' device, the generator
        of its noise), both seeded by (seed, purpose, round, client id): what one client and a
        group of clients (client_groups.py) draw alike."""
        batches = BatchStream(indices, self.cfg.batch_size,
                              seeding.numpy_rng(self.seed, purpose, round_index, client_id))
        plan = to_device(batch_plan(batches, steps), self.images.device)
        noise_gen = generators.make_generator(
            self.device, seeding.seed_for(self.seed, purpose, round_index, client_id))
        return plan, noise_gen

    def train(self, global_vector: np.ndarray, client_id: int, indices: np.ndarray,
              round_index: int, terms: Sequence = (), steps: int | None = None,
              streams: tuple = (seeding.TRAIN, seeding.DROPOUT),
              lr: float | None = None, poison=None) -> tuple[np.ndarray, LocalResult]:
        """launch(...).finish(): (the trained vector, its LocalResult). The vector is one of the
        trainer's reused host vectors: read it before the next client is trained."""
        return self.launch(global_vector, client_id, indices, round_index, terms, steps,
                           streams, lr, poison).finish()

    def launch(self, global_vector: np.ndarray, client_id: int, indices: np.ndarray,
               round_index: int, terms: Sequence = (), steps: int | None = None,
               streams: tuple = (seeding.TRAIN, seeding.DROPOUT),
               lr: float | None = None, poison=None, after_first_step=None) -> "Launched":
        """Local steps from `global_vector` on the client's `indices`; returns once they are
        launched (on a CPU: done) and the vector's way to the host has started.

        terms: the strategy's gradient terms (strategies/terms.py), added to every step's gradient.
        steps: overrides the configured local steps (personalization fine-tuning).
        streams: seeding purposes of (batches and noise, model dropout), so personalization
            never replays a training round's draws.
        lr: overrides the round's scheduled learning rate (`round_lr`).
        poison: a data attack's transform of each batch (attacks.label_flip_images), or None.
        after_first_step: called once, right after the first step is launched: a pipelined
            round finishes the previous client there, while the device trains this one.
        """
        self.load(global_vector)
        for term in terms:
            term.begin(self.params)
        if lr is None:
            lr = round_lr(self.cfg, round_index, self.total_rounds)
        optimizer = self.fresh_optimizer(lr)
        purpose, drop_purpose = streams
        if steps is None:
            steps = local_steps_for(self.cfg, indices.size)
        plan, noise_gen = self.client_inputs(client_id, indices, round_index, steps, purpose)
        # Dropout draws from torch's global generator: seed it per client as well.
        generators.seed_default_generator(
            self.device, seeding.seed_for(self.seed, drop_purpose, round_index, client_id))
        if not self.model.training:   # samplers and evaluations restore the mode they found;
            self.model.train()        # setting it costs a walk over every module (~0.25 ms)
        rows = ModelRow(self, plan, noise_gen, poison)
        totals = run_local_steps(rows, optimizer, terms, self.cfg.grad_clip, [steps], self.device,
                                 after_first_step)
        return Launched(self.readback.start(self, totals[0]), client_id, int(indices.size), steps)


class Launched:
    """A client whose steps are launched; finish() waits for its vector and loss on the host."""

    def __init__(self, pending, client_id: int, num_samples: int, steps: int):
        self.pending, self.client_id, self.num_samples, self.steps = pending, client_id, num_samples, steps

    def finish(self) -> tuple[np.ndarray, LocalResult]:
        vector, loss_total = self.pending.wait()
        return vector, LocalResult(self.client_id, self.num_samples, loss_total / self.steps,
                                   self.steps)
