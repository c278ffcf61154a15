"""Paired differences of a multi-seed study: each cell against fedavg on the same partition.

Cells of one seed share the initial model, the partition and every random draw that does not
depend on the method, so most of the seed-to-seed spread of FD is common to all cells. The
difference FD(cell, seed) - FD(fedavg, seed) over the seeds both have removes it; its mean with
a two-sided 95% Student-t interval (n - 1 degrees of freedom) says whether the method changed
FD beyond that spread. With 3 seeds the interval is wide (t = 4.30): only large, consistent
effects are resolved, and a "no effect" row means "not resolved", not "equal".
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional

# Two-sided 95% quantiles t_{0.975, df} of Student's t distribution, df = 1..10.
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
        9: 2.262, 10: 2.228}


def final_fd_by_seed(cell) -> Dict[int, float]:
    from feddm_hpc.evaluation.report import row

    out = {}
    for run, seed in zip(cell.runs, cell.seeds):
        fd = row(run).get("fd")
        if seed is not None and fd is not None:
            out[int(seed)] = float(fd)
    return out


def paired_delta(values: Dict[int, float], baseline: Dict[int, float]) -> Optional[dict]:
    seeds = sorted(set(values) & set(baseline))
    if len(seeds) < 2:
        return None
    d = [values[s] - baseline[s] for s in seeds]
    n = len(d)
    mean = sum(d) / n
    std = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    half = T975.get(n - 1, 1.96) * std / math.sqrt(n)
    verdict = "worse" if mean - half > 0 else "better" if mean + half < 0 else "not resolved"
    return {"seeds": seeds, "deltas": d, "mean": mean, "std": std, "ci95": [mean - half, mean + half],
            "verdict": verdict}


def paired_table(cells) -> List[dict]:
    """One entry per cell with a fedavg cell on its partition (the fedavg cells excluded), and
    first the partition's own effect: fedavg on shards against fedavg on iid."""
    base = {c.panel: final_fd_by_seed(c) for c in cells if c.method == "fedavg"}
    rows = []
    if "iid" in base and "shards" in base:
        stats = paired_delta(base["shards"], base["iid"])
        if stats is not None:
            rows.append({"cell": "fedavg-shards", "baseline": "fedavg-iid", **stats})
    for c in cells:
        if c.method == "fedavg" or c.panel not in base:
            continue
        stats = paired_delta(final_fd_by_seed(c), base[c.panel])
        if stats is not None:
            rows.append({"cell": c.name, "baseline": f"fedavg-{c.panel}", **stats})
    return rows + like_for_like(cells)


def like_for_like(cells) -> List[dict]:
    """SCAFFOLD against FedAvg with the same plain SGD clients (cells sgd / sgd-lr<LR> beside
    scaffold / scaffold-lr<LR> on one partition): what its correction itself changes."""
    by_key = {(c.method, c.panel): c for c in cells}
    rows = []
    for c in cells:
        if not c.method.startswith("scaffold"):
            continue
        twin = by_key.get(("sgd" + c.method[len("scaffold"):], c.panel))
        if twin is None:
            continue
        stats = paired_delta(final_fd_by_seed(c), final_fd_by_seed(twin))
        if stats is not None:
            rows.append({"cell": c.name, "baseline": twin.name, **stats})
    return rows


def markdown(rows: List[dict]) -> List[str]:
    if not rows:
        return []
    lines = ["", "## Paired differences against fedavg (final FD, same seeds)", "",
             "ΔFD = FD(cell) - FD(baseline) per seed; positive is worse. The baseline is fedavg on "
             "the same partition, and for SCAFFOLD also FedAvg with the same SGD clients (sgd). "
             "95% interval: Student t over the seeds' differences.", "",
             "| cell | vs | seeds | ΔFD mean ± std | 95% interval | per seed | verdict |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        per_seed = ", ".join(f"{x:+.1f}" for x in r["deltas"])
        lo, hi = r["ci95"]
        lines.append(f"| {r['cell']} | {r['baseline']} | {len(r['seeds'])} | {r['mean']:+.1f} ± "
                     f"{r['std']:.1f} | [{lo:+.1f}, {hi:+.1f}] | {per_seed} | {r['verdict']} |")
    return lines
