"""Local-training speed of model.parameterization=lowrank (and hyper) against dense, one CPU thread.

For the model sections of configs/tiny.yaml, configs/quickstart.yaml and the frontier study's
configs/frontier/base.yaml (1 x 28 x 28):
Adam steps of the training loss on random batches of client.batch_size, for the dense U-Net and
its lowrank forms, timed in interleaved repeats (best of --repeats, as the machine may be shared).
Prints the parameter counts and the steps/s of each, and the ratio lowrank / dense.

    .venv/bin/python benchmarks/lowrank_speed.py [--steps 20] [--repeats 3] [--cases frontier]
"""
from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import torch

from feddm_hpc.config import load_config
from feddm_hpc.diffusion import parameterization as par
from feddm_hpc.diffusion.loss import make_loss
from feddm_hpc.diffusion.schedule import make_schedule

ROOT = Path(__file__).resolve().parents[1]
CASES = {
    "tiny": (ROOT / "configs" / "tiny.yaml", [("lowrank_rank", 1), ("lowrank_fraction", 0.25)]),
    "quickstart": (ROOT / "configs" / "quickstart.yaml",
                   [("lowrank_fraction", 0.25), ("lowrank_fraction", 0.1)]),
    # the frontier study's model (results/frontier): its two ranks and its hypernetwork
    "frontier": (ROOT / "configs" / "frontier" / "base.yaml",
                 [("lowrank_fraction", 0.25), ("lowrank_fraction", 0.1), ("hyper", None)]),
}


def trainer(config, model_cfg, seed=0):
    torch.manual_seed(seed)
    model = par.build_model(model_cfg, 1, 28)
    schedule = make_schedule(config.diffusion.schedule, config.diffusion.timesteps)
    loss_fn = make_loss(config.diffusion)
    opt = torch.optim.Adam(model.parameters(), lr=config.client.lr)
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.rand(config.client.batch_size, 1, 28, 28, generator=gen) * 2 - 1

    def steps(n: int) -> float:
        t = time.perf_counter()
        for _ in range(n):
            opt.zero_grad(set_to_none=True)
            loss_fn(model, x0, schedule, gen).backward()
            opt.step()
        return time.perf_counter() - t
    return model, steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cases", nargs="+", choices=sorted(CASES), default=list(CASES))
    args = ap.parse_args()
    torch.set_num_threads(1)
    for name in args.cases:
        path, knobs = CASES[name]
        config = load_config(str(path), [])
        variants = {"dense": config.model}
        for knob, value in knobs:
            if knob == "hyper":   # the hypernetwork at its configured (default) size
                variants["hyper"] = dataclasses.replace(config.model, parameterization="hyper")
                continue
            variants[f"lowrank {knob}={value}"] = dataclasses.replace(
                config.model, parameterization="lowrank", **{knob: value})
        runs = {}
        for label, model_cfg in variants.items():
            model, steps = trainer(config, model_cfg)
            steps(2)   # warm-up
            runs[label] = (par.shared_size(model, model_cfg.parameterization), steps)
        best = {label: float("inf") for label in runs}
        for _ in range(args.repeats):   # interleaved: a busy spell hits every variant alike
            for label, (_, steps) in runs.items():
                best[label] = min(best[label], steps(args.steps))
        dense_rate = args.steps / best["dense"]
        print(f"{name} ({path.name}: base_channels {config.model.base_channels}, channel_mults "
              f"{list(config.model.channel_mults)}, batch {config.client.batch_size}, 1 thread)")
        for label, (size, _) in runs.items():
            rate = args.steps / best[label]
            print(f"  {label:30s} {size.shared:>8,} shared of {size.dense_equivalent:,} "
                  f"(ratio {size.ratio:.3f})  {rate:6.2f} steps/s  x{rate / dense_rate:.2f} of dense")


if __name__ == "__main__":
    main()
