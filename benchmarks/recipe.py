"""Old vs new training recipe: the compute factor to the old recipe's final FD, read from a run of
the recipe study (configs/recipe/study.yaml; `feddm-hpc study` trains and evaluates it).

The study's report draws FD against training CPU seconds (phases.train_cpu) per recipe and the
budget runs new-r4 ... new-r10 (`new` scheduled for fewer rounds). What a spec cannot say is this
number: the old recipe's CPU seconds at the end of its run divided by the CPU seconds at which
the new recipe first reaches the old recipe's final FD (linear interpolation in log FD between
points in CPU order), along the new recipe's own checkpoints (`..._single_run`) and along its
frontier, those checkpoints joined by the budget runs' final FDs (what each amount of compute
buys when the cosine lr is planned for it). Above 1 the new recipe needs less compute; a new
recipe that never gets there prints `<1`. Also written to OUT/recipe_factor.json.

    feddm-hpc study configs/recipe/study.yaml --out runs/recipe        # train and evaluate
    .venv/bin/python benchmarks/recipe.py --from runs/recipe           # the factor
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from feddm_hpc.errors import UserError  # noqa: E402
from feddm_hpc.study.collect import load_cells  # noqa: E402
from feddm_hpc.study.spec import load_spec  # noqa: E402
from feddm_hpc.study.values import curve  # noqa: E402


def points(runs: list) -> list:
    """[(cpu_s, round, fd)] at the evaluated rounds of a cell (mean over its runs)."""
    return [(p["train_cpu_s"], p["round"], p["fd_mean"]) for p in curve(runs, "fd", cpu_s=True)
            if p["train_cpu_s"] is not None]


def cpu_to_reach(pts: list, target: float):
    """CPU seconds at which the curve first gets to FD <= target (log-linear between points)."""
    prev = None
    for cpu, _, fd in pts:
        if fd <= target:
            if prev is None:
                return cpu
            c0, f0 = prev
            frac = (math.log(f0) - math.log(target)) / (math.log(f0) - math.log(fd))
            return c0 + frac * (cpu - c0)
        prev = (cpu, fd)
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--from", dest="out", required=True, type=Path,
                    help="the recipe study's folder (feddm-hpc study ... --out)")
    ap.add_argument("--spec", default=ROOT / "configs" / "recipe" / "study.yaml", type=Path)
    ap.add_argument("--reference", default="old")
    ap.add_argument("--recipe", default="new", help="budget runs: cells named <recipe>-r<rounds>")
    args = ap.parse_args()
    try:
        spec = load_spec(args.spec)
        runs, _, left_out = load_cells(spec, args.out)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for name in (args.reference, args.recipe):
        if not runs.get(name):
            print(f"error: --from {args.out}: cell {name}: no complete run", file=sys.stderr)
            return 2
    ref_cpu, _, ref_fd = points(runs[args.reference])[-1]
    single = points(runs[args.recipe])
    budget = [points(rs)[-1] for cell, rs in runs.items()
              if cell.startswith(f"{args.recipe}-r") and rs and points(rs)]
    result = {"reference": {"cell": args.reference, "final_fd": ref_fd, "cpu_s": ref_cpu},
              "left_out": left_out}
    for key, pts in (("single_run", single), ("frontier", sorted(single + budget))):
        reach = cpu_to_reach(pts, ref_fd)
        result[key] = {"cpu_s_to_reference_fd": reach,
                       "factor": None if reach is None else round(ref_cpu / reach, 3)}
    (args.out / "recipe_factor.json").write_text(json.dumps(result, indent=1) + "\n")
    for key in ("single_run", "frontier"):
        factor = result[key]["factor"]
        name = "compute_to_reference_fd" + ("_single_run" if key == "single_run" else "")
        print(f"{name}={factor if factor is not None else '<1'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
