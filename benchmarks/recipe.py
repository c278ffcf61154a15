"""Old vs new training recipe, centrally (one client, all of Fashion-MNIST): FD against CPU-seconds.

Each recipe trains the same U-Net (configs/recipe/base.yaml) for the same number of rounds (of
--steps-per-round gradient steps at batch 32, unless the recipe sets its own steps or batch), as a
one-client federation through the simulator itself (so the recipe measured is the one users get),
one process and one torch thread per recipe, the recipes side by side on separate cores. Every
`--eval-every` rounds the EMA model is scored with `feddm-hpc evaluate` at N=1000 (LeNet features,
the same sampler for every recipe). The x axis is the training process's own CPU seconds in local
training (`phases.train_cpu` of metrics.jsonl), which other load on the machine does not inflate
the way wall time is.

The new recipe's cosine learning rate follows the run's length, so only its last checkpoint is
annealed: a user with half the compute sets half the rounds, and that run may end better than the
full run's checkpoint half way (measured once, results/recipe/frontier_fp32_s0: it did not). So
every recipe but the reference is also trained for the shorter `--budgets` (rounds), each under its
own schedule, and their final FDs join the full run's checkpoints as that recipe's frontier (what
each amount of compute buys). The old recipe's constant learning rate and EMA make its checkpoint
after r rounds the same model as an r-round run, so its curve is its frontier already.

The last line is `compute_to_reference_fd=<factor>`: the old recipe's CPU-seconds at the end of
the budget divided by the CPU-seconds at which the new recipe's frontier first reaches the old
recipe's final FD (linear interpolation in log FD between points in CPU order). The line before,
`compute_to_reference_fd_single_run`, uses the full run's checkpoints alone. Above 1 the new recipe
needs less compute; a new recipe that never reaches it prints `<1`.

    .venv/bin/python benchmarks/recipe.py --seed 0 --out results/recipe/s0   # ~28 min on 2 cores (51 on a 2x slower VM; +9 per --eta)
    .venv/bin/python benchmarks/recipe.py --rounds 2 --steps-per-round 20 --num-samples 200 \\
        --out /tmp/recipe-try                                              # a quick dry run
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent

# What each recipe sets on top of the base config. "old" is the recipe the project shipped before
# issue 11 (eps loss, uniform over timesteps, constant lr 1e-3, per-round EMA 0.5 without warm-up);
# "new" is what the measurement chose (results/recipe/FINDINGS.md). The others are ablations.
RECIPES = {
    "old": ["diffusion.prediction=eps", "diffusion.loss_weighting=none", "client.lr=0.001",
            "client.lr_schedule=constant", "client.lr_warmup_rounds=0",
            "server.ema_decay=0.5", "server.ema_warmup=false", "system.precision=fp32"],
    "new": ["diffusion.prediction=eps", "diffusion.loss_weighting=min_snr",
            "diffusion.min_snr_gamma=5.0", "client.lr=0.002", "client.lr_schedule=cosine",
            "client.lr_warmup_rounds=1", "client.lr_min_ratio=0.1",
            "server.ema_decay=0.9", "server.ema_warmup=true", "system.precision=bf16"],
    "v_min_snr": ["diffusion.prediction=v", "diffusion.loss_weighting=min_snr",
                  "diffusion.min_snr_gamma=5.0", "client.lr=0.002", "client.lr_schedule=cosine",
                  "client.lr_warmup_rounds=1", "client.lr_min_ratio=0.1",
                  "server.ema_decay=0.9", "server.ema_warmup=true"],
    "lr_only": ["diffusion.prediction=eps", "diffusion.loss_weighting=none", "client.lr=0.002",
                "client.lr_schedule=cosine", "client.lr_warmup_rounds=1", "client.lr_min_ratio=0.1",
                "server.ema_decay=0.9", "server.ema_warmup=true"],
    "min_snr_only": ["diffusion.prediction=eps", "diffusion.loss_weighting=min_snr",
                     "diffusion.min_snr_gamma=5.0", "client.lr=0.001",
                     "client.lr_schedule=constant", "client.lr_warmup_rounds=0",
                     "server.ema_decay=0.5", "server.ema_warmup=false"],
}

# "new" before bf16 (what results/recipe measured first) and the variants screened on top of it
# (results/recipe/FINDINGS.md): none beat it.
RECIPES["new_fp32"] = [s for s in RECIPES["new"] if s != "system.precision=bf16"]
RECIPES["new_lr5"] = [s for s in RECIPES["new_fp32"] if not s.startswith("client.lr=")] + ["client.lr=0.005"]
RECIPES["new_cosine_noise"] = RECIPES["new_fp32"] + ["diffusion.schedule=cosine"]
RECIPES["new_b16"] = RECIPES["new_fp32"] + ["client.batch_size=16"]
# Candidates on top of "new" (bf16), not measured yet (their screen was stopped: bf16 ran
# emulated on that VM): batch 64 at lr 3e-3 (twice the step cost), and v-prediction (min-SNR
# weights min(SNR, 5) / (SNR + 1)).
RECIPES["new_b64"] = ([s for s in RECIPES["new"] if not s.startswith("client.lr=")]
                      + ["client.lr=0.003", "client.batch_size=64"])
RECIPES["new_v"] = [s for s in RECIPES["new"] if s != "diffusion.prediction=eps"] + ["diffusion.prediction=v"]
# fp32 screen on a CPU without native bf16: batch 64 at half the steps per round (the same images
# per round, so the same eval points and about the same compute), lr 3e-3 (~sqrt(2) x 2e-3).
# Measured with v_min_snr (results/recipe/screening/v_and_b64_fp32-*): it learned far less per
# image; v_min_snr about as much per step as new_fp32.
RECIPES["new_b64_half"] = ([s for s in RECIPES["new_fp32"] if not s.startswith("client.lr=")]
                           + ["client.lr=0.003", "client.batch_size=64", "client.local_steps=100"])


def steps_per_round(name: str, args) -> int:
    """A recipe's own client.local_steps if it sets one, else --steps-per-round."""
    own = [s.split("=", 1)[1] for s in RECIPES[name] if s.startswith("client.local_steps=")]
    return int(own[-1]) if own else args.steps_per_round


def feddm(*args: str) -> list:
    return [sys.executable, "-m", "feddm_hpc", *args]


def train(name: str, args, run_dir: Path, rounds: int | None = None) -> None:
    """Trains recipe `name` for `rounds` (default --rounds) in run_dir, resuming what is there."""
    rounds = rounds or args.rounds
    final = run_dir / "checkpoints" / f"round-{rounds - 1:06d}.h5"
    if final.exists():
        return
    sets = ["federation.num_clients=1", "federation.clients_per_round=null",
            "data.partition=iid", f"federation.rounds={rounds}",
            f"client.local_steps={args.steps_per_round}", "client.local_epochs=null",
            f"checkpoint.every={args.eval_every}", f"checkpoint.keep_last={rounds}",
            "system.threads=1", "system.progress=false", "sampling.num_samples=64",
            f"seed={args.seed}", *RECIPES[name]]   # last, so a recipe may set its own client.local_steps
    cmd = feddm("train", str(args.config), "--run-dir", str(run_dir))
    for s in sets:
        cmd += ["--set", s]
    if (run_dir / "checkpoints").is_dir():
        cmd = feddm("resume", str(run_dir))
    with open(run_dir.parent / f"{run_dir.name}.train.log", "a") as log:
        subprocess.run(cmd, check=True, stdout=log, stderr=log, cwd=HERE)


def sampler_tag(args) -> str:
    return f"{args.sampler}{args.sampling_steps}-eta{args.eta:g}"


def evaluate(args, run_dir: Path, last_only: bool = False) -> None:
    """Scores run_dir's checkpoints (only its last with last_only) with --sampler at N=--num-samples."""
    ckpts = sorted((run_dir / "checkpoints").glob("round-*.h5"))
    for ckpt in ckpts[-1:] if last_only else ckpts:
        out = run_dir / "eval" / f"{ckpt.stem}-{sampler_tag(args)}.json"
        if out.exists() and json.loads(out.read_text()).get("num_samples") == args.num_samples:
            continue
        cmd = feddm("evaluate", str(ckpt), "--num-samples", str(args.num_samples),
                    "--sampler", args.sampler, "--steps", str(args.sampling_steps),
                    "--eta", str(args.eta), "--out", str(out), "--set", "system.threads=1")
        with open(run_dir.parent / f"{run_dir.name}.eval.log", "a") as log:
            subprocess.run(cmd, check=True, stdout=log, stderr=log, cwd=HERE)


def curve(run_dir: Path, tag: str) -> list:
    """[(cpu_s after round r, round r, fd)] for each round evaluated with sampler `tag`."""
    cpu, total = {}, 0.0
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        total += rec["phases"]["train_cpu"]
        cpu[rec["round"]] = total
    points = []
    for path in sorted((run_dir / "eval").glob(f"round-*-{tag}.json")):
        ev = json.loads(path.read_text())
        points.append((cpu[ev["round"]], ev["round"], ev["fd"]))
    return points


def cpu_to_reach(points: list, target: float) -> float | None:
    """CPU-seconds at which the curve first gets to FD <= target (log-linear between points)."""
    prev = None
    for cpu, _, fd in points:
        if fd <= target:
            if prev is None:
                return cpu
            c0, f0 = prev
            frac = (math.log(f0) - math.log(target)) / (math.log(f0) - math.log(fd))
            return c0 + frac * (cpu - c0)
        prev = (cpu, fd)
    return None


def frontier(points: list, budget_points: list) -> list:
    """The points a user with a given compute budget can have: the full run's checkpoints and the
    final checkpoints of the shorter runs (each trained under its own, shorter schedule), by CPU-s.

    A recipe whose learning rate follows the run's length (cosine) is only annealed at the end of
    its run, so its intermediate checkpoints understate what that much compute buys; a run
    scheduled for that budget does not."""
    return sorted(points + budget_points)


def plot(curves: dict, path: Path, reference: float, title: str, budget_points: dict | None = None) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, pts in curves.items():
        line, = ax.plot([p[0] for p in pts], [p[2] for p in pts], marker="o", label=name)
        extra = (budget_points or {}).get(name)
        if extra:
            ax.plot([p[0] for p in extra], [p[2] for p in extra], marker="s", ls="none",
                    color=line.get_color(), mfc="none", ms=8,
                    label=f"{name}, shorter runs ({', '.join(str(p[1] + 1) for p in extra)} rounds)")
    ax.axhline(reference, color="grey", lw=0.8, ls="--", label=f"old final FD {reference:.1f}")
    ax.set_yscale("log")
    ax.set_xlabel("training CPU-seconds (one thread)")
    ax.set_ylabel("FD, LeNet features, N=1000")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=HERE / "configs/recipe/base.yaml", type=Path)
    ap.add_argument("--recipes", default="old,new", help="comma-separated, first is the reference")
    ap.add_argument("--rounds", type=int, default=16)
    ap.add_argument("--steps-per-round", type=int, default=200)
    ap.add_argument("--eval-every", type=int, default=2, help="rounds between evaluated checkpoints")
    ap.add_argument("--num-samples", type=int, default=1000)
    ap.add_argument("--sampler", default="ddim")
    ap.add_argument("--sampling-steps", type=int, default=20)
    ap.add_argument("--eta", type=float, default=1.0)
    ap.add_argument("--budgets", default="4,6,8,10",
                    help="shorter runs (rounds, comma-separated; '' for none) of every recipe but the "
                         "reference, each under its own schedule; their final FDs join the frontier")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=2, help="recipes trained at once (one core each)")
    ap.add_argument("--runs", default=HERE / "runs/recipe", type=Path)
    ap.add_argument("--out", default=HERE / "results/recipe", type=Path)
    args = ap.parse_args()
    names = args.recipes.split(",")
    unknown = [n for n in names if n not in RECIPES]
    if unknown or len(names) < 2:
        print(f"error: --recipes: need two or more of {', '.join(RECIPES)}", file=sys.stderr)
        return 2
    args.runs.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        budgets = sorted({int(b) for b in args.budgets.split(",") if b.strip()})
        ok = all(0 < b < args.rounds for b in budgets)
    except ValueError:
        ok = False
    if not ok:
        print(f"error: --budgets: round counts between 1 and --rounds - 1 ({args.rounds - 1})", file=sys.stderr)
        return 2
    dirs = {n: args.runs / f"{n}-s{args.seed}" for n in names}
    short = [(n, b, args.runs / f"{n}-s{args.seed}-r{b}") for n in names[1:] for b in budgets]
    t0 = time.time()
    with ThreadPoolExecutor(args.jobs) as pool:   # threads only wait on subprocesses
        list(pool.map(lambda n: train(n, args, dirs[n]), names))
        list(pool.map(lambda job: train(job[0], args, job[2], rounds=job[1]), short))
        t_train = time.time() - t0
        list(pool.map(lambda n: evaluate(args, dirs[n]), names))
        list(pool.map(lambda job: evaluate(args, job[2], last_only=True), short))
    curves = {n: curve(dirs[n], sampler_tag(args)) for n in names}
    budget_points = {n: [curve(d, sampler_tag(args))[-1] for m, _, d in short if m == n] for n in names[1:]}
    ref_name = names[0]
    ref_cpu, _, ref_fd = curves[ref_name][-1]
    summary = {"config": str(args.config.relative_to(HERE) if args.config.is_absolute() else args.config),
               "rounds": args.rounds, "steps_per_round": args.steps_per_round, "seed": args.seed,
               "num_samples": args.num_samples, "sampler": args.sampler,
               "sampling_steps": args.sampling_steps, "eta": args.eta,
               "wall_train_s": round(t_train, 1), "wall_total_s": round(time.time() - t0, 1),
               "recipes": {n: RECIPES[n] for n in names},
               "curves": {n: [{"cpu_s": round(c, 1), "round": r, "steps": (r + 1) * steps_per_round(n, args),
                               "fd": round(f, 2)} for c, r, f in pts] for n, pts in curves.items()},
               "budget_runs": {n: [{"rounds": r + 1, "cpu_s": round(c, 1), "fd": round(f, 2)}
                                   for c, r, f in pts] for n, pts in budget_points.items() if pts},
               "reference": {"recipe": ref_name, "final_fd": round(ref_fd, 2), "cpu_s": round(ref_cpu, 1)},
               "factors": {}}
    print(f"{'recipe':<14} " + " ".join(f"{'r' + str(r):>8}" for _, r, _ in curves[ref_name]))
    for n, pts in curves.items():
        print(f"{n:<14} " + " ".join(f"{f:8.1f}" for _, _, f in pts)
              + f"   (cpu {pts[-1][0]:.0f}s)")
    for n, pts in budget_points.items():
        if pts:
            print(f"{n:<14} shorter runs: " + ", ".join(f"{r + 1} rounds {f:.1f} (cpu {c:.0f}s)"
                                                        for c, r, f in pts))
    for n in names[1:]:
        entry = {}
        for key, pts in (("", curves[n]), ("frontier_", frontier(curves[n], budget_points[n]))):
            reach = cpu_to_reach(pts, ref_fd)
            entry[key + "cpu_s_to_reference_fd"] = None if reach is None else round(reach, 1)
            entry[key + "factor"] = None if reach is None else round(ref_cpu / reach, 3)
            print(f"{n}{' (frontier)' if key else ''}: reaches the {ref_name} recipe's final FD "
                  f"{ref_fd:.1f} after " + (f"{reach:.0f} CPU-s of {ref_cpu:.0f}" if reach else "never (within the budget)"))
        summary["factors"][n] = entry
    (args.out / f"recipe-{sampler_tag(args)}.json").write_text(json.dumps(summary, indent=1))
    title = (f"{args.config.name}: 1 client, {args.rounds}x{args.steps_per_round} steps, "
             f"N={args.num_samples}, {args.sampler} {args.sampling_steps} eta {args.eta}")
    plot(curves, args.out / f"fd_vs_cpu-{sampler_tag(args)}.png", ref_fd, title, budget_points)
    headline = summary["factors"].get("new", summary["factors"][names[1]])
    single, best = headline["factor"], headline["frontier_factor"]
    print(f"compute_to_reference_fd_single_run={single if single is not None else '<1'}")
    print(f"compute_to_reference_fd={best if best is not None else '<1'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
