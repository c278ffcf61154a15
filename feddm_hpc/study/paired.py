"""Paired differences of a multi-seed study: a cell against a baseline cell, seed by seed.

Cells of one seed share the initial model, the partition and every random draw that does not
depend on the cell's settings, so most of the seed-to-seed spread is common to both cells. The
difference value(cell, seed) - value(baseline, seed) over the seeds both have removes it; its mean
with a two-sided 95% Student-t interval (n - 1 degrees of freedom) says whether the cell changed
the value beyond that spread. With 3 seeds the interval is wide (t = 4.30): only large, consistent
effects are resolved, and "not resolved" means not resolved, not "equal". Pairs with fewer than 2
common seeds are left out. The ratio column is the geometric mean of the per-seed ratios
value / baseline with the same kind of interval on their logarithms (a claim such as "at most
1.75x worse FID" is a ratio).
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional

# Two-sided 95% quantiles t_{0.975, df} of Student's t distribution, df = 1..10.
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
        9: 2.262, 10: 2.228}


def _mean_std_ci95(xs: List[float]):
    n = len(xs)
    mean = sum(xs) / n
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    half = T975.get(n - 1, 1.96) * std / math.sqrt(n)
    return mean, std, [mean - half, mean + half]


def paired_delta(values: Dict[int, float], baseline: Dict[int, float]) -> Optional[dict]:
    """The per-seed differences with their mean and 95% interval, and where both values are
    positive on every seed the per-seed ratios value / baseline ("1.75x worse FID" is a ratio)
    with their geometric mean and 95% interval."""
    seeds = sorted(set(values) & set(baseline))
    if len(seeds) < 2:
        return None
    d = [values[s] - baseline[s] for s in seeds]
    mean, std, ci95 = _mean_std_ci95(d)
    verdict = "worse" if ci95[0] > 0 else "better" if ci95[1] < 0 else "not resolved"
    out = {"seeds": seeds, "deltas": d, "mean": mean, "std": std, "ci95": ci95, "verdict": verdict}
    if all(baseline[s] > 0 and values[s] > 0 for s in seeds):
        # On the logarithms: a ratio's interval stays positive and 2x and 0.5x are equally far from 1.
        ratios = [values[s] / baseline[s] for s in seeds]
        log_mean, _, log_ci95 = _mean_std_ci95([math.log(r) for r in ratios])
        out.update(ratios=ratios, ratio_mean=math.exp(log_mean),
                   ratio_ci95=[math.exp(log_ci95[0]), math.exp(log_ci95[1])])
    return out


def by_seed(summary: dict, metric: str) -> Dict[int, float]:
    """{seed: the run's final value} of a cell summary (values.cell_summary)."""
    return {int(r["seed"]): float(r[metric]) for r in summary["runs"]
            if r.get("seed") is not None and r.get(metric) is not None}


def paired_table(paired, summaries: Dict[str, dict]) -> List[dict]:
    """One entry per pair of `paired` (report_spec.Paired) with at least 2 common seeds."""
    rows = []
    for cell, baseline in paired.pairs:
        stats = paired_delta(by_seed(summaries[cell], paired.metric),
                             by_seed(summaries[baseline], paired.metric))
        if stats is not None:
            rows.append({"cell": cell, "baseline": baseline, "metric": paired.metric, **stats})
    return rows


def markdown(paired, rows: List[dict]) -> List[str]:
    if not rows:
        return []
    label = paired.metric.upper() if paired.metric in ("fd", "kid") else paired.metric
    lines = ["", f"## {paired.title}", "", paired.text, "",
             f"| cell | vs | seeds | Δ{label} mean ± std | 95% interval | per seed | verdict "
             f"| ratio (95% interval) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        per_seed = ", ".join(f"{x:+.1f}" for x in r["deltas"])
        lo, hi = r["ci95"]
        ratio = "-"
        if "ratio_mean" in r:
            ratio = f"{r['ratio_mean']:.2f}x [{r['ratio_ci95'][0]:.2f}, {r['ratio_ci95'][1]:.2f}]"
        lines.append(f"| {r['cell']} | {r['baseline']} | {len(r['seeds'])} | {r['mean']:+.1f} ± "
                     f"{r['std']:.1f} | [{lo:+.1f}, {hi:+.1f}] | {per_seed} | {r['verdict']} "
                     f"| {ratio} |")
    return lines
