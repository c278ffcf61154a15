"""Sample grids from a model's EMA parameters (root only; no MPI)."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from feddm_hpc import generators, seeding
from feddm_hpc.diffusion.samplers import sample
from feddm_hpc.params import unflatten_into


def draw_samples(model, schedule, params: np.ndarray, image_shape, num: int, sampler: str,
                 steps: int, seed: int, round_index: int, device: str, batch: int = 256,
                 eta: float = 0.0, prediction: str = "eps") -> torch.Tensor:
    """Loads `params` into `model` (the caller reloads its own weights afterwards) and samples.
    The noise is drawn on the CPU, as evaluation's is (generators.py): a GPU run's grid starts
    from the same x_T as a CPU run's, and the samplers copy each draw without blocking."""
    unflatten_into(params, model)
    generator = generators.make_generator("cpu", seeding.seed_for(seed, seeding.SAMPLE, round_index))
    out = []
    for start in range(0, num, batch):
        n = min(batch, num - start)
        out.append(sample(model, schedule, (n, *image_shape), sampler, steps, generator, device, eta,
                          prediction=prediction).cpu())
    return torch.cat(out)



def draw_client_samples(model, schedule, client_params: Sequence[np.ndarray], image_shape, num: int,
                        sampler: str, steps: int, seed: int, round_index: int, device: str,
                        eta: float = 0.0, prediction: str = "eps",
                        clients: Optional[Sequence[int]] = None) -> torch.Tensor:
    """A partially shared run's samples: `num` split equally over `clients` (default: all; the
    first num % K one more), client c's from its own model `client_params[c]` and its own seed
    (seeding.client_sample_seed), concatenated in client order."""
    clients = list(range(len(client_params))) if clients is None else list(clients)
    base, extra = divmod(num, len(clients))
    out = []
    for i, cid in enumerate(clients):
        n = base + (1 if i < extra else 0)
        if n:
            out.append(draw_samples(model, schedule, client_params[cid], image_shape, n, sampler,
                                    steps, seeding.client_sample_seed(seed, cid), round_index,
                                    device, eta=eta, prediction=prediction))
    return torch.cat(out)
