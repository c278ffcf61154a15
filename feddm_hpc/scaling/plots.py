"""A scaling study's PNG plots, from the rows of scaling.csv (matplotlib, Agg backend); complete
runs only.

strong_scaling.png  wall per round vs ranks at a fixed workload (clients, cohort, codec, model),
                    with the ideal t(r0) * r0 / r line
weak_scaling.png    wall per round vs ranks at a fixed cohort per rank, ideal: flat
phases.png          stacked per-phase seconds per round, one bar per run
bytes.png           uplink and downlink bytes per round per codec
Every file is always written; a plot with nothing to show says so.
"""
from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Tuple

from feddm_hpc.scaling.collect import PHASES

FILES = ("strong_scaling.png", "weak_scaling.png", "phases.png", "bytes.png")


def _ok(rows: List[dict]) -> List[dict]:
    return [r for r in rows if r.get("status") == "ok" and isinstance(r.get("wall_s"), float)
            and not math.isnan(r["wall_s"])]


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


def _series(rows, key) -> Dict[Tuple, List[dict]]:
    groups: Dict[Tuple, List[dict]] = defaultdict(list)
    for r in rows:
        groups[key(r)].append(r)
    return {k: sorted(v, key=lambda r: r["ranks"]) for k, v in groups.items()}


def _scaling_plot(plt, groups, path: Path, title: str, ideal, empty_text: str) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    drawn = 0
    for key, rs in groups.items():
        if len({r["ranks"] for r in rs}) < 2:
            continue
        x = [r["ranks"] for r in rs]
        y = [r["wall_s"] for r in rs]
        line, = ax.plot(x, y, "o-", label=key[-1])
        ax.plot(x, [ideal(rs[0], r) for r in rs], "--", color=line.get_color(), alpha=0.6)
        drawn += 1
    if drawn:
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ticks = sorted({r["ranks"] for rs in groups.values() for r in rs})
        ax.set_xticks(ticks)
        ax.set_xticklabels([str(int(t)) for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("MPI ranks")
        ax.set_ylabel("wall seconds per round")
        ax.set_title(title + " (dashed: ideal)")
        ax.legend(fontsize=7)
        ax.grid(True, which="both", alpha=0.3)
    else:
        _empty(ax, empty_text)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _name(r) -> str:
    return f"{int(r['num_clients'])} clients, {int(r['clients_per_round'])}/round, {r['codec']}, {r['model']}"


def strong_scaling(plt, rows, path: Path) -> None:
    groups = _series(rows, lambda r: (r["num_clients"], r["clients_per_round"], r["codec"], r["model"],
                                      _name(r)))
    _scaling_plot(plt, groups, path, "Strong scaling: fixed workload",
                  lambda first, r: first["wall_s"] * first["ranks"] / r["ranks"],
                  "strong scaling: no workload was run at two or more rank counts")


def weak_scaling(plt, rows, path: Path) -> None:
    def key(r):
        per_rank = r["clients_per_round"] / r["ranks"]
        return (per_rank, r["codec"], r["model"], f"{per_rank:g} cohort clients/rank, {r['codec']}, {r['model']}")
    _scaling_plot(plt, _series(rows, key), path, "Weak scaling: fixed cohort per rank",
                  lambda first, r: first["wall_s"],
                  "weak scaling: no cohort-per-rank ratio was run at two or more rank counts")


def phases(plt, rows, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(rows) + 2), 4.5))
    if rows:
        labels = [f"{r['cell']} s{int(r['seed'])}\nr{int(r['ranks'])} c{int(r['num_clients'])}/"
                  f"{int(r['clients_per_round'])}\n{r['codec']}\n{r['model']}" for r in rows]
        bottom = [0.0] * len(rows)
        for p in (*PHASES, "other"):
            vals = [max(0.0, r.get(f"{p}_s", 0.0) or 0.0) for r in rows]
            vals = [0.0 if math.isnan(v) else v for v in vals]
            ax.bar(range(len(rows)), vals, bottom=bottom, label=p)
            bottom = [b + v for b, v in zip(bottom, vals)]
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels(labels, fontsize=6)
        ax.set_ylabel("seconds per round")
        ax.set_title("Phase breakdown per configuration")
        ax.legend(fontsize=7, ncol=4)
    else:
        _empty(ax, "no complete run")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def bytes_per_codec(plt, rows, path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    codecs = list(dict.fromkeys(r["codec"] for r in rows))
    series = list(dict.fromkeys((r["model"], int(r["clients_per_round"])) for r in rows))
    if rows:
        width = 0.8 / max(1, len(series))
        for ax, col, title in ((axes[0], "uplink_bytes", "uplink"), (axes[1], "downlink_bytes", "downlink")):
            for j, (model, cohort) in enumerate(series):
                vals = []
                for c in codecs:
                    xs = [r[col] for r in rows if r["codec"] == c and r["model"] == model
                          and int(r["clients_per_round"]) == cohort]
                    vals.append(sum(xs) / len(xs) if xs else 0.0)
                ax.bar([i + j * width for i in range(len(codecs))], vals, width,
                       label=f"{model}, {cohort}/round")
            ax.set_xticks([i + width * (len(series) - 1) / 2 for i in range(len(codecs))])
            ax.set_xticklabels(codecs)
            ax.set_yscale("log")
            ax.set_ylabel("bytes per round")
            ax.set_title(f"{title} bytes per round by codec")
            ax.legend(fontsize=7)
    else:
        for ax in axes:
            _empty(ax, "no complete run")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_plots(rows: List[dict], out: Path) -> List[Path]:
    """Writes the four PNGs into `out`; returns their paths. Needs matplotlib."""
    plt = _pyplot()
    rows = _ok(rows)
    paths = [out / name for name in FILES]
    strong_scaling(plt, rows, paths[0])
    weak_scaling(plt, rows, paths[1])
    phases(plt, rows, paths[2])
    bytes_per_codec(plt, rows, paths[3])
    return paths
