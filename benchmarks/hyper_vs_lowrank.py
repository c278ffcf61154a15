"""How well model.parameterization=hyper learns against lowrank and dense at about equal bytes.

configs/quickstart.yaml's model (MNIST, 1 x 28 x 28), one fixed batch of --batch real MNIST
training images: --steps Adam steps of the training loss (fresh noise and timesteps each step, the
configured loss weighting) from the same seed, then the loss on that batch averaged over 16 fixed
noise draws. Variants: dense; lowrank_fraction 0.1; hyper at its defaults (linear generator,
chunk 256, embedding dim 16); hyper with chunk 512 / dim 20; hyper with an MLP generator (chunk
512, dim 20, a hidden layer of 20, SiLU; not a config option, built here only). Each at every --lr. Prints
the shared counts, the final losses and the seconds per step (one CPU thread).

--stream N instead trains on random batches of the first N training images and reports the loss
on 128 held-out test images (4 fixed noise draws each): learning, not memorising one batch.

    .venv/bin/python benchmarks/hyper_vs_lowrank.py [--steps 150] [--lr 2e-3 5e-3]
    .venv/bin/python benchmarks/hyper_vs_lowrank.py --stream 2000 --steps 300 --lr 2e-3 \
        --variants dense "lowrank 0.1" "hyper K256 d16"
"""
from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

from feddm_hpc.config import load_config
from feddm_hpc.data.datasets import load_dataset
from feddm_hpc.diffusion import parameterization as par
from feddm_hpc.diffusion.loss import make_loss
from feddm_hpc.diffusion.schedule import make_schedule
from feddm_hpc.diffusion.unet import build_unet, count_parameters

ROOT = Path(__file__).resolve().parents[1]


def build(config, variant: str, seed: int = 0):
    m = config.model
    torch.manual_seed(seed)
    if variant == "dense":
        return par.build_model(m, 1, 28)
    if variant == "lowrank 0.1":
        return par.build_model(dataclasses.replace(m, parameterization="lowrank",
                                                   lowrank_fraction=0.1), 1, 28)
    if variant == "hyper K256 d16":
        return par.build_model(dataclasses.replace(m, parameterization="hyper"), 1, 28)
    if variant == "hyper K512 d20":
        return par.build_model(dataclasses.replace(m, parameterization="hyper", hyper_chunk_size=512,
                                                   hyper_embedding_dim=20), 1, 28)
    if variant == "hyper-mlp K512 d20 h20":
        return par.generate(build_unet(m, 1, 28), 20, 512, hidden=20)
    raise ValueError(variant)


VARIANTS = ("dense", "lowrank 0.1", "hyper K256 d16", "hyper K512 d20", "hyper-mlp K512 d20 h20")


def to_tensor(images):
    return torch.from_numpy(images.astype(np.float32)).permute(0, 3, 1, 2) / 127.5 - 1.0


def run(config, variant, train, steps, lr, batch, evaluate, draws, seed=0):
    """train: the fixed batch, or a pool to draw batches of `batch` from (when evaluate is not)."""
    model = build(config, variant, seed)
    schedule = make_schedule(config.diffusion.schedule, config.diffusion.timesteps)
    loss_fn = make_loss(config.diffusion)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(1 + seed)
    t = time.perf_counter()
    for _ in range(steps):
        x0 = train if evaluate is None else train[torch.randint(len(train), (batch,), generator=gen)]
        opt.zero_grad(set_to_none=True)
        loss_fn(model, x0, schedule, gen).backward()
        opt.step()
    per_step = (time.perf_counter() - t) / steps
    target = train if evaluate is None else evaluate
    with torch.no_grad():
        final = np.mean([loss_fn(model, target, schedule, torch.Generator().manual_seed(1000 + k)).item()
                         for k in range(draws)])
    return count_parameters(model), final, per_step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, nargs="+", default=[2e-3, 5e-3])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS))
    ap.add_argument("--stream", type=int, default=None, metavar="N")
    ap.add_argument("--seed", type=int, default=0, help="model init and training draws")
    args = ap.parse_args()
    torch.set_num_threads(1)
    config = load_config(str(ROOT / "configs" / "quickstart.yaml"), [])
    if args.stream is None:
        train = to_tensor(load_dataset("mnist", split="train").images[: args.batch])
        evaluate, draws = None, 16
        what = f"one fixed batch of {args.batch}, loss on that batch"
    else:
        train = to_tensor(load_dataset("mnist", split="train").images[: args.stream])
        evaluate, draws = to_tensor(load_dataset("mnist", split="test").images[:128]), 4
        what = f"batches of {args.batch} from {args.stream} images, loss on 128 test images"
    print(f"quickstart model, MNIST, {args.steps} Adam steps, {what}, seed {args.seed}")
    print(f"{'variant':24s} {'shared':>8s} {'lr':>7s} {'loss':>8s} {'s/step':>7s}")
    for lr in args.lr:
        for variant in args.variants:
            count, final, per_step = run(config, variant, train, args.steps, lr, args.batch,
                                         evaluate, draws, args.seed)
            print(f"{variant:24s} {count:8,d} {lr:7.0e} {final:8.4f} {per_step:7.3f}", flush=True)


if __name__ == "__main__":
    main()
