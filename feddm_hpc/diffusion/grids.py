"""Sample grids from a model's EMA parameters (root only; no MPI)."""
from __future__ import annotations

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

