"""Peak RSS of one rank hosting 1 client versus 1,000 clients: per-client memory of the simulator.

Both runs train the same model on the same data (a --subset of MNIST) for a couple of rounds
with the same cohort size (1 client per round), without per-client codec state (uplink none, no
error feedback): only the number of clients the rank hosts differs. Each run is its own process
(`python -m feddm_hpc train ...`, one rank); its peak RSS is the child's own ru_maxrss, read
with os.wait4 so the two runs never mix. The last line is `rss_ratio=<1,000 clients / 1 client>`;
the target is <= 1.1 (the rank holds one model and one dataset however many clients it hosts).
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def peak_rss_mb(cmd, env) -> tuple:
    """(peak RSS in MiB, wall seconds) of one child process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{stderr.decode()[-2000:]}")
    return usage.ru_maxrss / 1024, time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/tiny.yaml")
    ap.add_argument("--clients", type=int, default=1000, help="the many-clients run (default 1000)")
    ap.add_argument("--subset", type=int, default=6000, help="MNIST images in both runs")
    ap.add_argument("--batch", type=int, default=4, help="batch size (each of --clients needs one)")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()
    common = [f"data.subset={args.subset}", "data.partition=iid", f"client.batch_size={args.batch}",
              "client.local_steps=2", "federation.rounds=2", "federation.clients_per_round=1",
              "compression.uplink=none", "compression.error_feedback=false",
              "sampling.num_samples=0", "system.threads=1", "system.progress=false", *args.overrides]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in (1, args.clients):
            sets = [x for o in [*common, f"federation.num_clients={n}"] for x in ("--set", o)]
            cmd = [sys.executable, "-m", "feddm_hpc", "train", args.config,
                   "--run-dir", str(Path(tmp) / f"clients-{n}"), *sets]
            results[n], wall = peak_rss_mb(cmd, env)
            print(f"{n:>6} client(s) on one rank: peak RSS {results[n]:8.1f} MiB  ({wall:.1f}s)")
    print(f"config {args.config}, MNIST subset {args.subset}, batch {args.batch}, cohort 1, 2 rounds")
    print(f"rss_ratio={results[args.clients] / results[1]:.3f}")


if __name__ == "__main__":
    main()
