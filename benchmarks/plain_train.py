"""The baseline of benchmarks/overhead.py: the same local training work with no federation.

Each MPI rank runs `--steps` Adam steps of the config's U-Net on the config's data at the
config's batch size: the work its clients do inside the simulator, minus everything the
simulator adds (broadcast, gather, codecs, aggregation, checkpoints, logging). It runs where
the simulator's ranks run: the device comes from the config's system.device through the
simulator's own selection (cuda:(local rank % GPUs) for auto when CUDA is present), the rank is
bound to it, system.deterministic applies, and the training images are stored as the simulator
stores them. On a GPU the clock is read after torch.cuda.synchronize.
"""
import argparse
import time

import numpy as np
import torch

from feddm_hpc import generators
from feddm_hpc.config import load_config
from feddm_hpc.data import load_dataset, select_batch
from feddm_hpc.diffusion.loss import make_loss
from feddm_hpc.diffusion.schedule import make_schedule
from feddm_hpc.diffusion.unet import build_unet
from feddm_hpc.federation.cuda_env import apply_determinism, image_store, synchronize
from feddm_hpc.federation.placement import bind_device, select_device, threads_per_rank
from feddm_hpc.optimizers import make_optimizer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--steps", required=True, help="comma-separated steps per rank")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    local = comm.Split_type(MPI.COMM_TYPE_SHARED)
    cfg = load_config(args.config, args.overrides)
    apply_determinism(cfg.system.deterministic)
    torch.set_num_threads(threads_per_rank(cfg.system.threads, local.Get_size()))
    device = select_device(cfg.system.device, local.Get_rank())
    bind_device(device)
    steps = int(args.steps.split(",")[comm.rank])
    d = cfg.data
    ds = load_dataset(d.dataset, d.path, "train", subset=d.subset, seed=cfg.seed)
    images = image_store(ds.images, device, cfg.system.device_data_max_mb)
    h, w, c = ds.image_shape
    torch.manual_seed(cfg.seed)
    model = build_unet(cfg.model, image_channels=c, image_size=h).to(device)
    schedule = make_schedule(cfg.diffusion.schedule, cfg.diffusion.timesteps,
                             cfg.diffusion.beta_start, cfg.diffusion.beta_end).to(device)
    opt = make_optimizer(cfg.client, list(model.parameters()))
    loss_fn = make_loss(cfg.diffusion)   # the same loss as the simulator's clients
    rng = np.random.default_rng(comm.rank)
    gen = generators.make_generator(device, comm.rank)  # noise drawn where the model is (generators.py)
    synchronize(device)
    comm.Barrier()
    t0 = time.perf_counter()
    for _ in range(steps):
        batch = torch.from_numpy(rng.integers(0, len(ds), cfg.client.batch_size))
        x0 = select_batch(images, batch.to(images.device))
        loss = loss_fn(model, x0, schedule, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.client.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.client.grad_clip)
        opt.step()
    synchronize(device)   # CUDA kernels run asynchronously: the clock waits for them
    comm.Barrier()
    if comm.rank == 0:
        print(f"plain loop: {steps} steps on rank 0 ({device}) in {time.perf_counter() - t0:.2f}s")


if __name__ == "__main__":
    main()
