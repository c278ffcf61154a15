"""Phase breakdown and client updates per second at 1, 2, ... ranks (a scaling study).

A strong-scaling run of a small config (configs/tiny.yaml with a fixed cohort, one torch thread
per rank so that ranks are the only parallelism) at 1 and 2 ranks, and at 4, 8, ... and
os.cpu_count() ranks where the machine has the cores. Prints, per rank count, the mean seconds
per round of each phase (after a warm-up round), the wall time per round, client updates per
second and the speed-up over one rank; the last line is `speedup_<R>=<t1/tR>` for the largest R.
"""
import argparse
import contextlib
import io
import math
import os
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from feddm_hpc.scaling.collect import PHASES, read_csv  # noqa: E402
from feddm_hpc.study import pool  # noqa: E402
from feddm_hpc.study.collect import collect  # noqa: E402
from feddm_hpc.study.spec import load_spec  # noqa: E402


def rank_counts(cores: int) -> list:
    counts = [1, 2]
    while counts[-1] * 2 <= cores:
        counts.append(counts[-1] * 2)
    if cores > counts[-1]:
        counts.append(cores)
    return counts


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "tiny.yaml"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--clients", type=int, default=None, help="default max(8, 2 x the largest rank count)")
    ap.add_argument("--local-steps", type=int, default=3)
    ap.add_argument("--out", default=None, help="keep the study here (default: a temporary folder)")
    args = ap.parse_args()
    ranks = rank_counts(os.cpu_count() or 1)
    clients = args.clients or max(8, 2 * ranks[-1])
    spec = {"name": "bench-scaling", "base": str(Path(args.config).resolve()), "seeds": [0],
            "threads": 1, "jobs": 1, "measure_rss": True,
            "set": {"federation.rounds": args.rounds, "sampling.num_samples": 0,
                    "client.local_steps": args.local_steps, "checkpoint.every": args.rounds,
                    "federation.num_clients": clients, "federation.clients_per_round": None},
            "grid": {"ranks": ranks}, "evaluate": {"at": "none"},
            "report": {"kind": "scaling", "warmup_rounds": 1 if args.rounds > 1 else 0}}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or Path(tmp) / "study")
        spec_path = Path(tmp) / "bench_scaling.yaml"
        spec_path.write_text(yaml.safe_dump(spec))
        study = load_spec(spec_path)
        with contextlib.redirect_stdout(io.StringIO()):
            code = pool.run_pool(study, out, 1)
            if code == 0:
                collect(study, out)
        rows = read_csv(out / "scaling.csv") if code == 0 else []
    if code != 0:
        sys.exit(f"the scaling study failed (exit {code}); rerun with --out DIR to keep its logs")
    print(f"config {Path(args.config).name}: {clients} clients, all per round, {args.local_steps} local "
          f"steps, {args.rounds} rounds (first excluded), 1 thread per rank, {os.cpu_count()} cores")
    print(f"{'ranks':>5} " + " ".join(f"{p:>10}" for p in PHASES) + f" {'wall':>8} {'upd/s':>7} {'speedup':>7}")
    base = rows[0]["wall_s"]
    for r in rows:
        cells = " ".join(f"{r[f'{p}_s']:10.4f}" for p in PHASES)
        print(f"{int(r['ranks']):5d} {cells} {r['wall_s']:8.3f} {r['client_updates_per_s']:7.2f} "
              f"{base / r['wall_s']:7.2f}")
    last = rows[-1]
    if not math.isnan(last["wall_s"]):
        print(f"speedup_{int(last['ranks'])}={base / last['wall_s']:.3f}")


if __name__ == "__main__":
    main()
