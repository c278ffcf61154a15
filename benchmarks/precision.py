"""Local training steps per second at system.precision fp32 against bf16 (federation/precision.py).

For each config (default: the recipe benchmark's U-Net and the quickstart's) trains one client
of its real shard for `--steps` local steps with the config's client recipe, at fp32 and at bf16
autocast, alternating `--repeats` times, best kept (the work is identical: the same batches and
noise). On the CPU the time is the process's CPU time (other load does not inflate it), on CUDA
wall time ending with torch.cuda.synchronize(). One line per (config, precision) with steps/s and
the ratio to fp32, then one JSON line `precision={...}` for scripts (benchmarks/gpu_check.sh).
    .venv/bin/python benchmarks/precision.py                       # CPU, one thread
    .venv/bin/python benchmarks/precision.py --device cuda --steps 200
"""
import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.client_groups import add_device_args, prepare, sync  # noqa: E402  (same setup, same shards)

PRECISIONS = ("fp32", "bf16")


def time_steps(trainer, part, w0, precision, device) -> float:
    trainer.precision = precision
    clock = time.process_time if device == "cpu" else time.perf_counter
    sync(device)
    t = clock()
    trainer.train(w0, 0, part, 0)
    sync(device)
    return clock() - t


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", nargs="+", default=["configs/recipe/base.yaml", "configs/quickstart.yaml"])
    p.add_argument("--steps", type=int, default=30, help="local steps per measurement")
    p.add_argument("--repeats", type=int, default=3)
    add_device_args(p)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    summary = {}
    for path in args.configs:
        cfg, trainer, parts, w0 = prepare(ROOT / path, args.device, 1, args.steps, args.set)
        name = Path(path).stem
        for precision in PRECISIONS:    # warm-up: first calls allocate and pick kernels
            time_steps(trainer, parts[0], w0, precision, args.device)
        best = {q: float("inf") for q in PRECISIONS}
        for _ in range(args.repeats):
            for q in PRECISIONS:
                best[q] = min(best[q], time_steps(trainer, parts[0], w0, q, args.device))
        rows = {}
        for q in PRECISIONS:
            rate = args.steps / best[q]
            rows[q] = {"steps_per_s": round(rate, 3), "ms_per_step": round(1000 / rate, 2),
                       "vs_fp32": round(best["fp32"] / best[q], 3)}
            print(f"{name:12s} {q:5s} {rate:8.2f} steps/s ({1000 / rate:7.1f} ms at batch "
                  f"{cfg.client.batch_size}, {args.steps} steps)  x{best['fp32'] / best[q]:.2f} vs fp32",
                  flush=True)
        summary[name] = {"device": args.device, "threads": args.threads, "steps": args.steps,
                         "batch_size": cfg.client.batch_size, "precisions": rows}
    print("precision=" + json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
