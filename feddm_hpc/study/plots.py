"""The report's plots (matplotlib, Agg backend): curves of a value over the evaluated rounds or
the cumulative uplink bytes, panels side by side; scatters of one point per run; Pareto plots of
one point per cell (seed means, min..max bars) with the cells' front (pareto.py)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, List, Optional

from feddm_hpc.study.pareto import panel_fronts
from feddm_hpc.study.values import curve


def styles(report, cells: List[str]) -> Dict[str, tuple]:
    """cell -> (legend label, matplotlib style): series in order take tab10 colours, then the next
    ten with another line style and marker; a series' own style wins; cells of no series last."""
    import matplotlib.pyplot as plt

    colors = plt.get_cmap("tab10").colors

    def default(i):
        return dict(color=colors[i % 10], linestyle=("-", "-.", ":")[i // 10 % 3],
                    marker="os^"[i // 10 % 3])
    out = {}
    for i, s in enumerate(report.series):
        st = {**default(i), **dict(s.style)}
        for cell in s.cells:
            out[cell] = (s.label, st)
    for j, cell in enumerate(c for c in cells if c not in out):
        out[cell] = (cell, default(len(report.series) + j))
    return out


def curve_plot(plot, runs: Dict[str, list], style: Dict[str, tuple], path: Path) -> Optional[Path]:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    y = plot.y[0]
    fig, axes = plt.subplots(1, len(plot.panels), figsize=(6.5 * len(plot.panels), 4.8),
                             squeeze=False, sharey=True)
    drew = False
    for ax, (title, cells) in zip(axes[0], plot.panels):
        for cell in cells:
            pts = [p for p in curve(runs.get(cell) or [], y, cpu_s=plot.x == "train_cpu_s")
                   if p[plot.x] is not None]
            if not pts:
                continue
            xs = [p["round"] + 1 if plot.x == "round" else p[plot.x] for p in pts]
            label, st = style[cell]
            ax.plot(xs, [p[f"{y}_mean"] for p in pts], label=f"{label} (n={len(runs[cell])})",
                    markersize=4, **st)
            ax.fill_between(xs, [p[f"{y}_min"] for p in pts], [p[f"{y}_max"] for p in pts],
                            color=st.get("color"), alpha=0.15, linewidth=0)
            drew = True
        ax.set(xlabel=plot.xlabel, title=title)
        if plot.x == "round":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        elif plot.x == "uplink_bytes":
            ax.set_xscale("log")
        else:   # training CPU seconds: linear, FD on a log scale (benchmarks/recipe.py's plot)
            ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    axes[0][0].set_ylabel(plot.ylabels[0])
    fig.suptitle(plot.title)
    if drew:
        fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path if drew else None


def scatter_plot(plot, summaries: Dict[str, dict], path: Path) -> Optional[Path]:
    """One point per run of plot.cells: x missing (e.g. no DP: epsilon None) is a red square,
    x infinite a diamond, both at the right edge (10 x the largest finite x)."""
    import matplotlib.pyplot as plt

    x = plot.x
    points = [r for c in plot.cells for r in summaries[c]["runs"] if r[plot.y[0]] is not None]
    if not points:
        return None
    finite = [r[x] for r in points if r[x] not in (None, math.inf)]
    right = (max(finite) * 10) if finite else 1.0
    fig, axes = plt.subplots(1, len(plot.y), figsize=(5.5 * len(plot.y), 4.2), squeeze=False)
    for ax, key, label in zip(axes[0], plot.y, plot.ylabels):
        for r in points:
            if r[key] is None:
                continue
            xv = right if r[x] in (None, math.inf) else r[x]
            marker = "s" if r[x] is None else ("D" if r[x] == math.inf else "o")
            ax.scatter([xv], [r[key]], marker=marker, color="C3" if r[x] is None else "C0")
        ax.set(xscale="log", xlabel=plot.xlabel, ylabel=label)
        ax.grid(alpha=0.3)
    fig.suptitle(plot.title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def pareto_plot(plot, summaries: Dict[str, dict], style: Dict[str, tuple],
                path: Path) -> Optional[Path]:
    """Per panel: each cell at its mean (x, y), bars from the seeds' min to max in both, its
    name beside it; the front as a dashed step line (log x)."""
    import matplotlib.pyplot as plt

    fronts = panel_fronts(plot, summaries)
    if not any(info["points"] for info in fronts):
        return None
    fig, axes = plt.subplots(1, len(fronts), figsize=(6.5 * len(fronts), 5), squeeze=False)
    for ax, info in zip(axes[0], fronts):
        for cell, (mx, my) in info["points"].items():
            sx, sy = summaries[cell][plot.x], summaries[cell][plot.y[0]]
            st = style[cell][1]
            ax.errorbar([mx], [my], xerr=[[mx - sx["min"]], [sx["max"] - mx]],
                        yerr=[[my - sy["min"]], [sy["max"] - my]], color=st["color"],
                        marker=st["marker"], capsize=3, linestyle="none")
            ax.annotate(cell, (mx, my), textcoords="offset points", xytext=(5, 4), fontsize=8)
        front = [info["points"][c] for c in info["front"]]
        if len(front) > 1:
            ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="black",
                    linestyle="--", alpha=0.6, label="Pareto front")
            ax.legend(fontsize=8)
        ax.set(xscale="log", title=info["panel"], xlabel=plot.xlabel)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(plot.ylabels[0])
    fig.suptitle(plot.title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_plots(report, cells: List[str], runs: Dict[str, list], summaries: Dict[str, dict],
                out: Path) -> List[Path]:
    """Every plot of the report that has data; ImportError without matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    style = styles(report, cells)
    written = []
    for plot in report.plots:
        if plot.kind == "curve":
            p = curve_plot(plot, runs, style, out / plot.file)
        elif plot.kind == "pareto":
            p = pareto_plot(plot, summaries, style, out / plot.file)
        else:
            p = scatter_plot(plot, summaries, out / plot.file)
        if p is not None:
            written.append(p)
    return written
