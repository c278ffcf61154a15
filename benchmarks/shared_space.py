"""What partial sharing (federation.shared_parts) adds per client and round, against full sharing.

A client's start under partial sharing is given as pieces (shared_space.StartPieces: the global
shared values and the client's private ones), copied straight into the model's parameters
(params.ParamViews.load_subset): one full-model copy, the load every client pays under full
sharing too. After training the trainer reads the model into its local vector (as under full
sharing), and the client then keeps its private slices and reports its shared ones: one
full-model copy that full sharing does not make. The issue's bar: at most one full-model copy a
client and round beyond what full sharing costs.

    .venv/bin/python benchmarks/shared_space.py [--repeats 20]

Prints per model and preset: the shared fraction, microseconds of the load (pieces into the
parameters) against a full vector's load, and of keep+take, a plain full-vector copy for scale,
the copies partial sharing adds over full sharing, and for the frontier model one training step
at batch 32 (one thread), so the mapping's cost is a ratio of the local training it rides on.
Last line: `extra_full_copies=<max over models and presets>`.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from feddm_hpc.config import load_config
from feddm_hpc.federation.setup import build_model
from feddm_hpc.federation.shared_space import PrivateParts, SharedSpace
from feddm_hpc.params import ParamSpec, ParamViews, flatten

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MODELS = {
    "frontier 267k": (ROOT / "configs" / "frontier" / "base.yaml", [], (1, 28, 28)),
    "paper 40M": (ROOT / "configs" / "cifar10_paper.yaml", [], (3, 32, 32)),
}


def best_us(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(1)
    worst = 0.0
    for label, (path, sets, shape) in MODELS.items():
        config = load_config(str(path), sets)
        model = build_model(config, shape, "cpu")
        spec = ParamSpec.from_model(model)
        full = flatten(model)
        views = ParamViews.bind(model)
        scratch = np.empty_like(full)
        copy_us = best_us(lambda: np.copyto(scratch, full), args.repeats)
        dense_load_us = best_us(lambda: views.load(full), args.repeats)
        print(f"{label}: {spec.total:,} parameters; a full-vector copy {copy_us:,.0f} us, "
              f"a full vector's load into the model {dense_load_us:,.0f} us")
        for preset in ("encoder", "decoder"):
            space = SharedSpace(spec, (preset,))
            store = PrivateParts(space, full)
            shared_start = space.take(full)
            local = full + np.float32(1e-3)      # the trainer's local vector after training
            out = np.empty(space.size, dtype=np.float32)
            load_us = best_us(lambda: store.start(0, shared_start).write_into(views), args.repeats)

            def keep_and_take():
                store.keep(0, local)
                space.take(local, out=out)
            keep_us = best_us(keep_and_take, args.repeats)
            extra = (load_us - dense_load_us + keep_us) / copy_us
            worst = max(worst, extra)
            print(f"  {preset:8s} shared {space.size / spec.total:.3f}: load {load_us:,.0f} us, "
                  f"keep+take {keep_us:,.0f} us: {extra:.2f} full copies over full sharing")
    config = load_config(str(MODELS["frontier 267k"][0]), [])
    from benchmarks.lowrank_speed import trainer  # noqa: E402  (the same step as the speed benchmark)
    _, steps = trainer(config, config.model)
    steps(2)
    step_s = min(steps(5) for _ in range(2)) / 5
    print(f"frontier 267k: one training step at batch {config.client.batch_size} {step_s * 1e6:,.0f} us "
          f"(a client's round: {config.client.local_steps} steps)")
    print(f"extra_full_copies={worst:.2f}")


if __name__ == "__main__":
    main()
