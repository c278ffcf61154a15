"""Seeded generation of evaluation samples, split over MPI ranks and reassembled on the root.

Generation is rank-count invariant: the N samples are cut into fixed blocks of BLOCK indices;
block b is drawn with its own generator seeded from (seed, round, b) (seeding.SAMPLE stream,
slot 1 + b; slot 0 is the training-time sample grid), blocks are dealt round-robin to ranks, and
the root reassembles them in index order. Each block is one forward batch of the same size on
every rank count, so with equal threads per rank the images are bit-identical. Noise is always
drawn on the CPU, so a GPU run starts from the same x_T as a CPU run. Sample i of an N-sample
run equals sample i of any larger run whenever i lies in a full block.

`generate_samples` is collective: every rank must call it.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch

from feddm_hpc import seeding
from feddm_hpc.diffusion.samplers import sample
from feddm_hpc.params import unflatten_into

BLOCK = 64


def block_seed(seed: int, round_index: int, block: int) -> int:
    return seeding.seed_for(seed, seeding.SAMPLE, round_index, 1 + block)


def _blocks(num: int, block_size: int):
    return [(b, b * block_size, min(block_size, num - b * block_size))
            for b in range(math.ceil(num / block_size))]


def generate_samples(comm, model, schedule, params: np.ndarray, image_shape, num: int,
                     sampler: str, steps: int, eta: float, seed: int, round_index: int,
                     device: str, block_size: int = BLOCK,
                     prediction: str = "eps") -> Optional[np.ndarray]:
    """Collective. Draws `num` samples of the model with the root's weights `params` (broadcast
    first: in a running simulation only the root holds the current EMA); they are loaded into
    `model`, so callers that keep their own weights in it reload them afterwards.

    Returns float32 [num, C, H, W] in [-1, 1] on the root, None on the other ranks.
    """
    weights = np.array(params, dtype=np.float32)   # a copy: the caller's array stays as it was
    comm.bcast_array(weights)
    unflatten_into(weights, model)
    blocks = _blocks(num, block_size)
    mine = []
    for b, start, n in blocks[comm.rank::comm.size]:
        gen = torch.Generator(device="cpu").manual_seed(block_seed(seed, round_index, b))
        x = sample(model, schedule, (n, *image_shape), sampler, steps, gen, device, eta,
                   prediction=prediction)
        mine.append(x.detach().to("cpu", torch.float32).numpy().reshape(-1))
    local = np.concatenate(mine) if mine else np.empty(0, dtype=np.float32)
    parts = comm.gather_bytes(local.view(np.uint8))
    if comm.rank != 0:
        return None
    out = np.empty((num, *image_shape), dtype=np.float32)
    per_image = int(np.prod(image_shape))
    for rank, part in enumerate(parts):
        values = np.frombuffer(part.tobytes(), dtype=np.float32)
        offset = 0
        for b, start, n in blocks[rank::comm.size]:
            out[start:start + n] = values[offset:offset + n * per_image].reshape(n, *image_shape)
            offset += n * per_image
    return out


def to_uint8_nhwc(images: np.ndarray) -> np.ndarray:
    """float [N,C,H,W] in [-1,1] -> uint8 [N,H,W,C], as the images would be saved as PNG
    (NaN from a diverged model becomes mid-grey instead of failing the evaluation)."""
    from feddm_hpc.rundir.imaging import to_uint8

    return np.ascontiguousarray(to_uint8(images).transpose(0, 2, 3, 1))
