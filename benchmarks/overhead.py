"""Simulator overhead against a plain torch training loop doing the same local work.

(a) `feddm-hpc train` on N ranks, a checkpoint every round, no sample grids;
(b) benchmarks/plain_train.py on N ranks: the same model, batch size, optimizer and number of
    training steps per rank, with no federation at all.
Both are timed end to end as whole `mpiexec` commands (process start, imports, data loading
included, the same for both), alternating a, b, a, b ... and keeping the best of each.
Both run on the device the config's system.device selects (plain_train.py uses the simulator's
select_device), so with `device: auto` on a GPU machine both train on the GPU; a whole process
is timed, and its exit waits for its GPU work, so no torch.cuda.synchronize is needed here.
mpiexec: $MPIEXEC, else the one beside the interpreter, else the first on PATH.
Besides wall time, each command's CPU time (user + system of every process it started, from
getrusage(RUSAGE_CHILDREN): mpiexec waits for its ranks) is compared, which other load on a
shared machine inflates far less. `--shape many-small` is issue 23's many-small-clients shape:
200 clients x 1 local step of a 24k-parameter U-Net (tiny.yaml at base_channels 6), batch 8,
3 rounds (use --repeats 5: the figures are medians of the paired repeats, with their range).
The last line is `overhead_ratio=<a/b>` (best wall of each).
"""
import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from feddm_hpc.config import clients_have_state, load_config  # noqa: E402
from feddm_hpc.federation.client import local_steps_for  # noqa: E402
from feddm_hpc.federation.participation import plan_round  # noqa: E402
from feddm_hpc.federation.placement import assign_clients, round_placement, select_device  # noqa: E402
from feddm_hpc.federation.setup import load_partitioned  # noqa: E402
from feddm_hpc.seeding import sample_cohort  # noqa: E402


def steps_per_rank(cfg, nprocs):
    """The training steps each rank runs in the simulator: its share of each round's clients,
    placed as the simulator places them (static, or dealt per round when clients are stateless)."""
    _, parts = load_partitioned(cfg)
    hosted = assign_clients([p.size for p in parts], nprocs)
    steps = [0] * nprocs
    f = cfg.federation
    for r in range(f.rounds):
        cohort = sample_cohort(cfg.seed, r, f.num_clients, f.clients_per_round, f.cohort_sampling)
        steps_of = lambda c: local_steps_for(cfg.client, parts[int(c)].size)  # noqa: E731
        arrived = list(plan_round(cfg.seed, r, cohort, f, steps_of).arrived)
        if cfg.system.placement != "static" and not clients_have_state(cfg):
            groups = round_placement(arrived, [steps_of(c) for c in arrived], nprocs)
        else:
            groups = [[c for c in arrived if c in set(h)] for h in hosted]
        for rank, clients in enumerate(groups):
            steps[rank] += sum(steps_of(c) for c in clients)
    return steps


def find_mpiexec(python: str) -> str:
    beside = Path(python).parent / "mpiexec"
    found = os.environ.get("MPIEXEC") or (str(beside) if beside.exists() else shutil.which("mpiexec"))
    if not found:
        sys.exit("mpiexec not found: set MPIEXEC, or install the mpich extra (make setup)")
    return found


SHAPES = {
    "many-small": ["federation.num_clients=200", "client.local_steps=1", "client.batch_size=8",
                   "federation.rounds=3", "model.base_channels=6"],
}


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(cmd, env):
    """(wall seconds, CPU seconds of the command's whole process tree)."""
    t0, c0 = time.perf_counter(), _children_cpu()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    elapsed, cpu = time.perf_counter() - t0, _children_cpu() - c0
    if out.returncode != 0:
        sys.exit(f"command failed ({out.returncode}): {' '.join(cmd)}\n{out.stderr[-2000:]}")
    return elapsed, cpu


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/tiny.yaml")
    ap.add_argument("--np", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--shape", choices=sorted(SHAPES), default=None,
                    help="a named set of overrides on --config (before any --set)")
    args = ap.parse_args()
    shape = SHAPES[args.shape] if args.shape else []
    overrides = ["system.progress=false", "sampling.num_samples=0", "checkpoint.every=1", *shape,
                 *args.overrides]
    cfg = load_config(ROOT / args.config, overrides)
    steps = steps_per_rank(cfg, args.np)
    py = sys.executable
    launch = [find_mpiexec(py), "-n", str(args.np), py, "-m", "mpi4py"]
    sets = [x for o in overrides for x in ("--set", o)]
    path = os.environ.get("PYTHONPATH")
    env = dict(os.environ, PYTHONPATH=str(ROOT) + (os.pathsep + path if path else ""))
    device = select_device(cfg.system.device, 0)
    print(f"config {args.config}, {args.np} ranks, {cfg.federation.rounds} rounds, training steps "
          f"per rank {steps}, device of local rank 0: {device} (both commands)")
    best_a = best_b = float("inf")
    wall_ratios, cpu_ratios = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            run_dir = Path(tmp) / f"run{i}"
            a, a_cpu = timed([*launch, "-m", "feddm_hpc", "train", args.config, "--run-dir", str(run_dir),
                              *sets], env)
            b, b_cpu = timed([*launch, str(ROOT / "benchmarks" / "plain_train.py"), "--config",
                              args.config, "--steps", ",".join(map(str, steps)), *sets], env)
            wall_ratios.append(a / b)
            cpu_ratios.append(a_cpu / b_cpu)
            print(f"repeat {i}: simulator {a:.2f}s ({a_cpu:.2f} CPU-s)  plain loop {b:.2f}s "
                  f"({b_cpu:.2f} CPU-s)  ratio wall {a / b:.3f} CPU {a_cpu / b_cpu:.3f}")
            best_a, best_b = min(best_a, a), min(best_b, b)
    print(f"simulator_wall_s={best_a:.2f}")
    print(f"plain_loop_wall_s={best_b:.2f}")
    print(f"wall_ratio_median={statistics.median(wall_ratios):.3f} "
          f"(range {min(wall_ratios):.3f}-{max(wall_ratios):.3f})")
    print(f"cpu_ratio_median={statistics.median(cpu_ratios):.3f} "
          f"(range {min(cpu_ratios):.3f}-{max(cpu_ratios):.3f})")
    print(f"overhead_ratio={best_a / best_b:.3f}")


if __name__ == "__main__":
    main()
