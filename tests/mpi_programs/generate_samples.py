"""Run at any size (plain python = 1 rank): evaluation.generate_samples with a fixed tiny model;
the root writes the float32 images to argv[1] (.npy). Tests compare the files bit for bit."""
import sys

import numpy as np
import torch

from feddm_hpc.comm import make_communicator
from feddm_hpc.config import load_config
from feddm_hpc.diffusion.schedule import make_schedule
from feddm_hpc.evaluation.generation import generate_samples
from feddm_hpc.federation.setup import build_model
from feddm_hpc.params import flatten

torch.set_num_threads(1)  # bit-identical float sums need equal threads per rank
comm = make_communicator()
config = load_config(sys.argv[2])
model = build_model(config, (1, 28, 28), "cpu")
# Any fixed weights will do; only the root's count (a running simulation updates its EMA on the
# root only), so the other ranks pass zeros here.
params = flatten(model) * np.float32(1.5 if comm.rank == 0 else 0.0)
d = config.diffusion
schedule = make_schedule(d.schedule, d.timesteps, d.beta_start, d.beta_end)
# 3 blocks of 16 (the last one partial) over the ranks; eta > 0 draws noise at every step too.
images = generate_samples(comm, model, schedule, params, (1, 28, 28), 40, "ddim", 4, 0.5,
                          seed=7, round_index=3, device="cpu", block_size=16)
if comm.rank == 0:
    np.save(sys.argv[1], images)
print(f"rank {comm.rank}/{comm.size} ok")
