"""`python -m feddm_hpc.evaluation.privacy_report OUT`: the privacy and robustness study's tables,
plot and summary (jobs/privacy_study.sh leaves complete run copies in OUT/runs/<cell>-s<seed>/).

  OUT/table.md          two tables, mean ± sample std (ddof=1) over seeds:
                        privacy: per DP cell its noise multiplier z, clip norm, final epsilon at
                        delta, final FD, KID, the memorization audit's near-copy fraction (pixel
                        and LeNet feature space), the samples' median nearest-training distance
                        over the test split's (1: as far from the training set as new images);
                        robustness: per aggregation rule, clean and attacked final train loss
                        and FD.
  OUT/fd_vs_epsilon.png FD and near-copy fraction against final epsilon (log x; the runs without
                        noise, epsilon = inf, drawn at the right edge), one point per run.
  OUT/summary.json      the same numbers per cell, with every run's values.

Cells are grouped by run name without the -s<seed> suffix (study_report.load_study).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Dict, List, Optional

from feddm_hpc.evaluation.report import Run, row
from feddm_hpc.evaluation.study_report import Cell, load_study, mean_std
from feddm_hpc.evaluation.study_report import _pm as pm

ROBUST_RULES = ("mean", "median", "trimmed_mean", "krum", "multi_krum")


def _final_eval(run: Run) -> dict:
    return run.evals[max(run.evals)] if run.evals else {}


def run_numbers(run: Run) -> dict:
    """The study's numbers of one run (None where the run lacks them)."""
    base = row(run)
    last = run.metrics[-1] if run.metrics else {}
    mem = _final_eval(run).get("memorization") or {}
    near = mem.get("near_copy_fraction") or {}
    dist = mem.get("median_nearest_distance") or {}
    ref_dist = (mem.get("reference") or {}).get("median_nearest_distance") or {}
    rel = (dist["pixel"] / ref_dist["pixel"]) if dist.get("pixel") is not None and ref_dist.get("pixel") else None
    eps = last.get("epsilon")
    return {
        "fd": base["fd"], "kid": base["kid"], "final_train_loss": base["final_train_loss"],
        "epsilon": (math.inf if (run.get("privacy.clip_norm") is not None and eps is None) else eps),
        "noise_multiplier": run.get("privacy.noise_multiplier"),
        "clip_norm": run.get("privacy.clip_norm"), "delta": run.get("privacy.delta"),
        "near_copy_pixel": near.get("pixel"), "near_copy_feature": near.get("feature"),
        "nearest_over_test_pixel": rel,
        "clipped_fraction_mean": _mean([r.get("clipped_fraction") for r in run.metrics]),
        "aggregation": run.get("server.aggregation", "mean"),
        "attacked": run.get("attack.kind", "none") != "none",
    }


def _mean(xs) -> Optional[float]:
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def is_robust_cell(cell: Cell) -> bool:
    return cell.name.endswith(("-clean", "-attacked"))


def cell_summary(cell: Cell) -> dict:
    per_run = [run_numbers(r) for r in cell.runs]
    keys = ("fd", "kid", "final_train_loss", "near_copy_pixel", "near_copy_feature",
            "nearest_over_test_pixel", "clipped_fraction_mean")
    eps = [x["epsilon"] for x in per_run]
    return {
        "cell": cell.name, "seeds": cell.seeds, "n": len(cell.runs),
        "noise_multiplier": per_run[0]["noise_multiplier"], "clip_norm": per_run[0]["clip_norm"],
        "delta": per_run[0]["delta"], "aggregation": per_run[0]["aggregation"],
        "attacked": per_run[0]["attacked"],
        # epsilon depends only on (N, m, z, rounds, delta): equal for every seed of a cell
        "epsilon": eps[0] if len(set(map(str, eps))) == 1 else eps,
        **{k: mean_std([x[k] for x in per_run]) for k in keys},
        "runs": [{**x, "seed": s} for x, s in zip(per_run, cell.seeds)],
    }


def _eps_text(eps) -> str:
    if eps is None:
        return "no DP"
    if isinstance(eps, list):
        return ", ".join(_eps_text(e) for e in eps)
    return "∞ (no noise)" if eps == math.inf else f"{eps:.4g}"


def privacy_table(summaries: List[dict]) -> str:
    cols = ("cell", "z", "clip norm", "epsilon (delta)", "seeds", "final FD", "KID",
            "near copies, pixel", "near copies, feature", "nearest dist. / test's", "clipped share")
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for s in summaries:
        eps = _eps_text(s["epsilon"]) + (f" ({s['delta']:g})" if s["clip_norm"] is not None else "")
        lines.append("| " + " | ".join([
            s["cell"], "–" if s["clip_norm"] is None else f"{s['noise_multiplier']:g}",
            "–" if s["clip_norm"] is None else f"{s['clip_norm']:g}", eps,
            f"{s['n']} ({', '.join(str(x) for x in s['seeds'])})", pm(s["fd"]), pm(s["kid"], 3),
            pm(s["near_copy_pixel"], 3), pm(s["near_copy_feature"], 3),
            pm(s["nearest_over_test_pixel"], 3), pm(s["clipped_fraction_mean"], 3)]) + " |")
    return "\n".join(lines) + "\n"


def robust_table(summaries: List[dict]) -> str:
    by_rule: Dict[str, Dict[bool, dict]] = {}
    for s in summaries:
        by_rule.setdefault(s["aggregation"], {})[s["attacked"]] = s
    cols = ("aggregation", "seeds", "clean: final loss", "clean: FD", "attacked: final loss",
            "attacked: FD")
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    order = [r for r in ROBUST_RULES if r in by_rule] + sorted(set(by_rule) - set(ROBUST_RULES))
    for rule in order:
        clean, bad = by_rule[rule].get(False), by_rule[rule].get(True)
        seeds = sorted({x for s in (clean, bad) if s for x in s["seeds"]})

        def two(s):
            return ["–", "–"] if s is None else [pm(s["final_train_loss"], 4), pm(s["fd"])]
        lines.append("| " + " | ".join([rule, ", ".join(map(str, seeds)), *two(clean), *two(bad)]) + " |")
    return "\n".join(lines) + "\n"


def _plot(privacy: List[dict], path: Path) -> Optional[Path]:
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [(r, s["cell"]) for s in privacy for r in s["runs"] if r["fd"] is not None]
    finite = [r["epsilon"] for r, _ in points if r["epsilon"] not in (None, math.inf)]
    if not points:
        return None
    right = (max(finite) * 10) if finite else 1.0   # where epsilon = inf and "no DP" are drawn
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, label in ((axes[0], "fd", "final FD (LeNet features, N per run)"),
                           (axes[1], "near_copy_pixel", "near-copy fraction (pixel space)")):
        for r, cell in points:
            x = right if r["epsilon"] in (None, math.inf) else r["epsilon"]
            if r[key] is None:
                continue
            marker = "s" if r["clip_norm"] is None else ("D" if r["epsilon"] == math.inf else "o")
            ax.scatter([x], [r[key]], marker=marker, color="C0" if r["clip_norm"] else "C3")
        ax.set(xscale="log", xlabel="final epsilon (right edge: no noise; square: no DP)",
               ylabel=label)
        ax.grid(alpha=0.3)
    fig.suptitle("Client-level DP on MNIST: quality and memorization against the privacy budget")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _strict(x):
    """JSON without Infinity: an infinite epsilon is written as the string "inf"."""
    if isinstance(x, float) and math.isinf(x):
        return "inf"
    if isinstance(x, dict):
        return {k: _strict(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_strict(v) for v in x]
    return x


def write_privacy_report(out) -> int:
    out = Path(out)
    cells = load_study(out)
    summaries = [cell_summary(c) for c in cells]
    robust = [s for s, c in zip(summaries, cells) if is_robust_cell(c)]
    privacy = sorted((s for s, c in zip(summaries, cells) if not is_robust_cell(c)),
                     key=lambda s: (s["clip_norm"] is not None, s["noise_multiplier"] or 0.0))
    text = ["# Privacy and robustness study (jobs/privacy_study.sh)", "",
            "Final round, mean ± sample std over seeds.", "", "## Client-level DP", "",
            privacy_table(privacy)]
    if robust:
        text += ["## Robust aggregation: one attacked client of ten", "", robust_table(robust)]
    (out / "table.md").write_text("\n".join(text))
    plot = _plot(privacy, out / "fd_vs_epsilon.png")
    summary = {"privacy": privacy, "robust": robust}
    (out / "summary.json").write_text(json.dumps(_strict(summary), indent=1) + "\n")
    print(f"privacy report: {out / 'table.md'} ({len(privacy)} DP cell(s), {len(robust)} robust "
          f"cell(s){', ' + plot.name if plot else ''})")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m feddm_hpc.evaluation.privacy_report",
                                description=__doc__.splitlines()[0])
    p.add_argument("out", help="the study folder holding runs/<cell>-s<seed>/")
    args = p.parse_args(argv)
    from feddm_hpc.errors import UserError
    try:
        return write_privacy_report(args.out)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
