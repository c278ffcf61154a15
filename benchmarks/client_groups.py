"""Client updates per second against system.client_group_size G (federation/client_groups.py).

For each config (default: tiny and quickstart) and each G, trains the same C clients of one
round with their real shards and the config's client recipe: G = 1 one client at a time
(client.LocalTrainer, what the simulator does by default), G > 1 in groups of G as one vectorized
computation. Each G is timed `--repeats` times, alternating, best kept; the clients get the same
`--steps` local steps at every G, so the work is equal. On CUDA the timing ends with
torch.cuda.synchronize(). One line per (config, G) with updates/s and the ratio to G = 1, then
one JSON line `client_groups={...}` for scripts (benchmarks/gpu_check.sh reads it).
    .venv/bin/python benchmarks/client_groups.py                       # CPU: G in 1 2 4 8
    .venv/bin/python benchmarks/client_groups.py --device cuda --groups 1 4 16 64 --clients 64
"""
import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from feddm_hpc.config import load_config
from feddm_hpc.diffusion.loss import make_loss
from feddm_hpc.diffusion.schedule import make_schedule
from feddm_hpc.federation.client import LocalTrainer
from feddm_hpc.federation.client_groups import GroupTrainer, Member
from feddm_hpc.federation.cuda_env import image_store
from feddm_hpc.federation.setup import build_model, load_partitioned
from feddm_hpc.params import flatten


def prepare(config_path, device, clients, steps, overrides=()):
    cfg = load_config(config_path, [*overrides, f"federation.num_clients={clients}",
                                    "federation.clients_per_round=null",
                                    f"client.local_steps={steps}", "client.local_epochs=null"])
    dataset, parts = load_partitioned(cfg)
    h, w, c = dataset.image_shape
    model = build_model(cfg, (c, h, w), device)
    d = cfg.diffusion
    schedule = make_schedule(d.schedule, d.timesteps, d.beta_start, d.beta_end).to(device)
    images = image_store(dataset.images, device, cfg.system.device_data_max_mb)
    trainer = LocalTrainer(model, schedule, cfg.client, images, device, cfg.seed,
                           loss_fn=make_loss(d), total_rounds=cfg.federation.rounds)
    return cfg, trainer, parts, flatten(model).copy()


def add_device_args(p) -> None:
    """--device, --threads and --set, shared with benchmarks/precision.py."""
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for every config, e.g. data.path=DIR (repeatable)")


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_group_size(trainer, group_trainer, parts, w0, g, device) -> float:
    sync(device)
    t = time.perf_counter()
    if g == 1:
        for cid, idx in enumerate(parts):
            trainer.train(w0, cid, idx, 0)
    else:
        for first in range(0, len(parts), g):
            members = [Member(c, parts[c]) for c in range(first, min(first + g, len(parts)))]
            group_trainer.train_group(w0, members, 0)
    sync(device)
    return time.perf_counter() - t


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", nargs="+", default=["configs/tiny.yaml", "configs/quickstart.yaml"])
    p.add_argument("--groups", nargs="+", type=int, default=[1, 2, 4, 8])
    p.add_argument("--clients", type=int, default=8, help="clients trained per measurement")
    p.add_argument("--steps", type=int, default=10, help="local steps of every client")
    p.add_argument("--repeats", type=int, default=2)
    add_device_args(p)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    summary = {}
    for path in args.configs:
        cfg, trainer, parts, w0 = prepare(ROOT / path, args.device, args.clients, args.steps, args.set)
        group_trainer = GroupTrainer(trainer, cfg.diffusion)
        name = Path(path).stem
        for g in args.groups:   # warm-up: first calls allocate and (vmap) trace
            time_group_size(trainer, group_trainer, parts[:max(g, 1)], w0, g, args.device)
        best = {g: float("inf") for g in args.groups}
        for _ in range(args.repeats):
            for g in args.groups:
                best[g] = min(best[g], time_group_size(trainer, group_trainer, parts, w0, g,
                                                       args.device))
        base = args.clients / best[args.groups[0]]
        rows = {}
        for g in args.groups:
            rate = args.clients / best[g]
            rows[g] = {"updates_per_s": round(rate, 3), "seconds": round(best[g], 4),
                       "vs_first": round(rate / base, 3)}
            print(f"{name:12s} G={g:<3d} {rate:8.3f} client updates/s ({args.steps} steps at batch "
                  f"{cfg.client.batch_size}, {args.clients} clients, {best[g]:.3f} s)  "
                  f"x{rate / base:.2f} vs G={args.groups[0]}", flush=True)
        summary[name] = {"device": args.device, "threads": args.threads, "steps": args.steps,
                         "clients": args.clients, "groups": rows}
    print("client_groups=" + json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
