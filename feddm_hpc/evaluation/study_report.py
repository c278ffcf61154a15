"""`python -m feddm_hpc.evaluation.study_report OUT`: the multi-seed FedDM study's table, plots and summary.

Reads the run copies jobs/feddm_study.sh leaves in OUT/runs/<name>/ (config.yaml, metrics.jsonl,
eval/round-*.json, as `feddm-hpc report` reads them; only copies with their DONE marker, i.e.
complete ones), groups the runs into cells by name without the `-s<seed>` suffix and writes

  OUT/table.md          one row per cell: seeds, mean ± sample std (ddof=1) over seeds of the
                        final-round FD, KID, recall, coverage, uplink bytes relative to float32
                        updates (cum_uplink_bytes / cum_uplink_float32_bytes), total uplink bytes
  OUT/fd_vs_round.png   FD against round, one line per cell (mean over seeds), band min..max over
                        seeds; panels iid and shards, the centralized reference in both
  OUT/fd_vs_uplink.png  FD against cumulative uplink bytes (log x), same style
  OUT/summary.json      every number of the table, per cell and per run, plus the prox choice
                        and the paired differences against fedavg (study_paired.py, also in
                        table.md)

`python -m feddm_hpc.evaluation.study_report OUT --best-prox shards [--seeds 0 1 2] [--mus 0.001 0.01 0.1]`
prints only the FedProx mu whose prox-mu<mu>-shards cell has the lowest mean final FD over seeds
(details on stderr); with --seeds/--mus, exit 2 unless every such run is there. The study script
carries that mu into its prox-iid cell.

Plots need matplotlib (Agg backend); without it the table and summary are still written.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from feddm_hpc.errors import UserError
from feddm_hpc.evaluation.report import (
    Run,
    _bytes,
    comparability_notes,
    describe_algorithm,
    describe_codec,
    describe_partition,
    load_run,
    row,
)
from feddm_hpc.evaluation.study_paired import markdown as paired_markdown
from feddm_hpc.evaluation.study_paired import paired_table

SEED_SUFFIX = re.compile(r"^(?P<cell>.+)-s(?P<seed>\d+)$")
PARTITIONS = ("iid", "shards")
# Table and legend order of the study's methods; cells of other names come after, sorted.
METHOD_ORDER = ("fedavg", "prox", "prox-mu0.001", "prox-mu0.01", "prox-mu0.1", "scaffold", "sgd",
                "q8", "q4", "q4ef", "q2ef", "topk1ef", "post8", "central")
METRICS = ("fd", "kid", "precision", "recall", "coverage", "uplink_ratio", "uplink_bytes")
DONE = "DONE"


def split_name(run_name: str):
    """('fedavg-iid', 0) for 'fedavg-iid-s0'; (name, None) without a seed suffix."""
    m = SEED_SUFFIX.match(run_name)
    return (m["cell"], int(m["seed"])) if m else (run_name, None)


def method_of(cell_name: str) -> str:
    """The cell name without its partition: 'prox-mu0.01' for 'prox-mu0.01-shards'."""
    for p in PARTITIONS:
        if cell_name.endswith("-" + p):
            return cell_name[:-len(p) - 1]
    return cell_name


@dataclass
class Cell:
    name: str
    runs: List[Run] = field(default_factory=list)
    seeds: List[Optional[int]] = field(default_factory=list)

    @property
    def method(self) -> str:
        return method_of(self.name)

    @property
    def panel(self) -> str:
        """iid | shards | central (one client: the reference drawn in every panel)."""
        run = self.runs[0]
        if run.get("federation.num_clients") == 1:
            return "central"
        return run.get("data.partition", "iid")

    def sort_key(self):
        panels = ("iid", "shards", "central")
        p = panels.index(self.panel) if self.panel in panels else len(panels)
        m = METHOD_ORDER.index(self.method) if self.method in METHOD_ORDER else len(METHOD_ORDER)
        return p, m, self.name


# ---------------------------------------------------------------------------- loading

def load_study(out) -> List[Cell]:
    """The cells of OUT/runs/*/ (complete copies only), in table order."""
    runs_dir = Path(out) / "runs"
    if not runs_dir.is_dir():
        raise UserError(f"{runs_dir}: not found (the study copies finished runs there)")
    cells: Dict[str, Cell] = {}
    for path in sorted(p for p in runs_dir.iterdir() if p.is_dir()):
        if not (path / DONE).is_file():
            print(f"warning: {path}: no {DONE} marker (an incomplete copy), left out",
                  file=sys.stderr)
            continue
        run = load_run(path)
        cell_name, seed = split_name(run.name)
        cell = cells.setdefault(cell_name, Cell(cell_name))
        cell.runs.append(run)
        cell.seeds.append(seed if seed is not None else run.get("seed"))
    return sorted(cells.values(), key=Cell.sort_key)


# ---------------------------------------------------------------------------- numbers

def mean_std(values: Sequence[Optional[float]]) -> dict:
    """Mean and sample standard deviation (ddof=1; None for fewer than 2 values)."""
    xs = [float(v) for v in values if v is not None]
    if not xs:
        return {"n": 0, "mean": None, "std": None, "min": None, "max": None}
    mean = sum(xs) / len(xs)
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else None
    return {"n": len(xs), "mean": mean, "std": std, "min": min(xs), "max": max(xs)}


def describe_setting(run: Run) -> str:
    text = describe_algorithm(run)
    codec = describe_codec(run)
    if codec != "none":
        if run.get("compression.stochastic_rounding") and run.get("compression.uplink") == "quant":
            codec += " SR"
        if run.get("compression.target") == "weights":
            codec += ", on weights (post-training)"
        text += ", " + codec
    if run.get("client.optimizer") == "sgd":
        text += f", SGD lr {run.get('client.lr')}"
    return text


def cell_summary(cell: Cell) -> dict:
    rows = [row(r) for r in cell.runs]
    settings = sorted({describe_setting(r) for r in cell.runs})
    mus = sorted({r.get("client.prox_mu") or 0.0 for r in cell.runs})
    final_rounds = sorted({(r.get("federation.rounds") or 0) - 1 for r in cell.runs})
    eval_rounds = sorted({x["eval_round"] for x in rows}, key=str)
    return {
        "cell": cell.name, "method": cell.method, "panel": cell.panel,
        "setting": settings[0] if len(settings) == 1 else " / ".join(settings),
        "partition": describe_partition(cell.runs[0]) if cell.panel != "central" else "iid (1 client)",
        "prox_mu": mus[0] if len(mus) == 1 else mus,
        "seeds": cell.seeds, "n": len(cell.runs),
        "eval_round": eval_rounds[0] if len(eval_rounds) == 1 else eval_rounds,
        "final_eval": eval_rounds == final_rounds,
        "N": sorted({x["N"] for x in rows}, key=str),
        **{k: mean_std([x[k] for x in rows]) for k in METRICS},
        "runs": [{**x, "seed": s, "path": str(r.path)} for x, s, r in zip(rows, cell.seeds, cell.runs)],
    }


def best_prox_mu(cells: List[Cell], partition: str = "shards",
                 seeds: Optional[Sequence[int]] = None,
                 mus: Optional[Sequence[float]] = None):
    """(mu, {mu: mean final FD}) of the prox-mu<mu>-<partition> cells; the lowest mean wins.

    With `seeds` every cell needs all of them, with `mus` every mu needs its cell: otherwise a
    UserError naming what is missing (the choice is made once, on the complete sweep).
    """
    sweep = {}
    for cell in cells:
        m = re.fullmatch(r"prox-mu(?P<mu>[0-9.eE+-]+)-" + re.escape(partition), cell.name)
        if m:
            mu = cell.runs[0].get("client.prox_mu")
            sweep[float(mu) if mu is not None else float(m["mu"])] = cell
    missing = []
    for mu in mus or []:
        if float(mu) not in sweep:
            missing.append(f"prox-mu{mu}-{partition} (all seeds)")
    for mu, cell in sweep.items():
        for s in seeds or []:
            if s not in cell.seeds:
                missing.append(f"{cell.name}-s{s}")
    if missing:
        raise UserError(f"best prox mu on {partition}: the sweep is incomplete, missing "
                        + ", ".join(missing))
    means = {mu: mean_std([row(r)["fd"] for r in cell.runs])["mean"] for mu, cell in sweep.items()}
    means = {mu: fd for mu, fd in means.items() if fd is not None}
    if not means:
        raise UserError(f"best prox mu on {partition}: no evaluated prox-mu<mu>-{partition} runs")
    best = min(sorted(means), key=lambda mu: means[mu])   # ties: the smaller mu
    return best, dict(sorted(means.items()))


# ---------------------------------------------------------------------------- table

def _num(v, digits: int = 4) -> str:
    return "–" if v is None else f"{v:.{digits}g}"


def _pm(stat: dict, digits: int = 4) -> str:
    if stat["mean"] is None:
        return "–"
    if stat["std"] is None:
        return _num(stat["mean"], digits)
    std = stat["std"]
    if std <= 1e-9 * abs(stat["mean"]):   # equal values but for float rounding
        std = 0.0
    return f"{_num(stat['mean'], digits)} ± {_num(std, 2)}"


COLUMNS = ("cell", "setting", "partition", "seeds", "final FD", "KID", "recall", "coverage",
           "uplink / float32", "uplink total", "eval round", "eval N")


def markdown_table(summaries: List[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    for s in summaries:
        r = s["uplink_ratio"]
        ratio = "–" if r["mean"] is None else (
            f"{r['mean']:.3f}" if not r["std"] else f"{r['mean']:.3f} ± {r['std']:.2g}")
        er = s["eval_round"]
        cells = [s["cell"], s["setting"], s["partition"],
                 f"{s['n']} ({', '.join(str(x) for x in s['seeds'])})",
                 _pm(s["fd"]), _pm(s["kid"]), _pm(s["recall"], 3), _pm(s["coverage"], 3), ratio,
                 _bytes(s["uplink_bytes"]["mean"]),
                 str(er + 1) if isinstance(er, int) else str(er),
                 ", ".join(str(n) for n in s["N"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- plots

def curves(cell: Cell) -> List[dict]:
    """Per evaluated round: FD mean/min/max over the seeds evaluated there, mean cum. uplink."""
    by_round: Dict[int, list] = {}
    for run in cell.runs:
        cum = dict(zip((rec.get("round") for rec in run.metrics), run.cum_uplink()))
        for k, e in run.evals.items():
            if e.get("fd") is not None:
                by_round.setdefault(k, []).append((e["fd"], cum.get(k)))
    out = []
    for k in sorted(by_round):
        fds = [fd for fd, _ in by_round[k]]
        ups = [u for _, u in by_round[k] if u is not None]
        out.append({"round": k, "n": len(fds), "fd_mean": sum(fds) / len(fds), "fd_min": min(fds),
                    "fd_max": max(fds), "uplink_bytes": sum(ups) / len(ups) if ups else None})
    return out


def _plots(cells: List[Cell], out: Path) -> List[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    # One style per method in every plot and study: known methods by their place in
    # METHOD_ORDER, others after them; ten colours, then the next ten with another line style.
    others = sorted({c.method for c in cells} - set(METHOD_ORDER))
    colors = plt.get_cmap("tab10").colors
    style = {m: dict(color=colors[i % 10], linestyle=("-", "-.", ":")[i // 10 % 3],
                     marker="os^"[i // 10 % 3])
             for i, m in enumerate(list(METHOD_ORDER) + others)}
    style["central"] = dict(color="black", marker="x", linestyle="--")
    panels = [p for p in PARTITIONS if any(c.panel == p for c in cells)] \
        + sorted({c.panel for c in cells} - set(PARTITIONS) - {"central"})
    if not panels:
        panels = ["central"]
    data = {c.name: curves(c) for c in cells}
    written = []

    for fname, xkey, xlabel, title in (
            ("fd_vs_round.png", "round", "round", "FD per round (mean over seeds, band min..max)"),
            ("fd_vs_uplink.png", "uplink_bytes", "cumulative uplink bytes",
             "FD against uplink traffic (mean over seeds, band min..max)")):
        fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.8), squeeze=False,
                                 sharey=True)
        drew = False
        for ax, panel in zip(axes[0], panels):
            for cell in cells:
                if cell.panel not in (panel, "central"):
                    continue
                pts = [p for p in data[cell.name] if p[xkey] is not None]
                if not pts:
                    continue
                xs = [p[xkey] + 1 if xkey == "round" else p[xkey] for p in pts]
                st = style.get(cell.method, {})
                label = f"{cell.method} (n={len(cell.runs)})"
                ax.plot(xs, [p["fd_mean"] for p in pts], label=label, markersize=4, **st)
                ax.fill_between(xs, [p["fd_min"] for p in pts], [p["fd_max"] for p in pts],
                                color=st.get("color"), alpha=0.15, linewidth=0)
                drew = True
            ax.set(xlabel=xlabel, title=panel)
            if xkey == "round":
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            else:
                ax.set_xscale("log")
            ax.grid(alpha=0.3, which="both")
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
        axes[0][0].set_ylabel("FD (LeNet features)")
        fig.suptitle(title)
        if drew:
            fig.savefig(out / fname, dpi=120, bbox_inches="tight")
            written.append(out / fname)
        plt.close(fig)
    return written


# ---------------------------------------------------------------------------- entry points

def write_study_report(out) -> int:
    out = Path(out)
    cells = load_study(out)
    if not cells:
        raise UserError(f"{out / 'runs'}: no complete run copies to report")
    summaries = [cell_summary(c) for c in cells]
    try:
        plots, plot_note = _plots(cells, out), None
    except ImportError:
        plots, plot_note = [], "plots skipped: matplotlib is not installed (pip install matplotlib)"

    prox = {}
    for p in PARTITIONS:
        try:
            mu, means = best_prox_mu(cells, p)
            prox[p] = {"mu": mu, "mean_final_fd": {str(k): v for k, v in means.items()}}
        except UserError:
            pass
    all_runs = [r for c in cells for r in c.runs]
    notes = comparability_notes(all_runs)
    notes.append("mean ± sample standard deviation (ddof=1) over the seeds of a cell; "
                 "one seed: the value alone. Final FD/KID/recall/coverage: the evaluation of the "
                 "last evaluated round (see eval round)")
    notes.append("uplink / float32: total uplink bytes over what uncompressed float32 updates "
                 "would have sent (cum_uplink_bytes / cum_uplink_float32_bytes); uplink total: "
                 "mean over seeds")
    if not all(s["final_eval"] for s in summaries):
        notes.append("some cells' last evaluation is not their final round: "
                     + ", ".join(s["cell"] for s in summaries if not s["final_eval"]))
    counts = sorted({s["n"] for s in summaries})
    if len(counts) > 1:
        notes.append(f"cells have different numbers of seeds ({counts}): the study is incomplete")
    for p, info in prox.items():
        fds = ", ".join(f"μ={k}: {_num(v)}" for k, v in info["mean_final_fd"].items())
        notes.append(f"FedProx μ sweep on {p}: mean final FD {fds}; best μ={info['mu']}")
    for s in summaries:
        if s["method"] == "prox":
            notes.append(f"{s['cell']} uses μ={s['prox_mu']}")

    paired = paired_table(cells)
    text = ["# FedDM multi-seed study", "", markdown_table(summaries)]
    text += [f"- {n}" for n in notes]
    text += paired_markdown(paired)
    if plots:
        text += ["", "## Plots", "", "Lines: mean over seeds; bands: min..max over seeds; "
                 "the centralized reference (dashed) in every panel.", ""]
        text += [f"![{p.stem}]({p.name})" for p in plots]
    if plot_note:
        text += ["", plot_note]
    (out / "table.md").write_text("\n".join(text) + "\n")
    summary = {"cells": [{**s, "curve": curves(c)} for s, c in zip(summaries, cells)],
               "best_prox": prox, "paired_vs_fedavg": paired, "notes": notes}
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    if plot_note:
        print(plot_note, file=sys.stderr)
    print(f"study report: {out / 'table.md'} ({len(cells)} cell(s), {len(all_runs)} run(s), "
          f"{len(plots)} plot(s))")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m feddm_hpc.evaluation.study_report",
                                description="table, plots and summary of a multi-seed FedDM study")
    p.add_argument("out", metavar="OUT", help="the study's output folder (holds runs/<name>/)")
    p.add_argument("--best-prox", metavar="PARTITION", default=None,
                   help="only print the prox mu with the lowest mean final FD on PARTITION")
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="with --best-prox: every sweep cell must have these seeds")
    p.add_argument("--mus", type=float, nargs="+", default=None,
                   help="with --best-prox: every one of these mu must have a cell")
    args = p.parse_args(argv)
    try:
        if args.best_prox is None:
            return write_study_report(args.out)
        mu, means = best_prox_mu(load_study(args.out), args.best_prox, args.seeds, args.mus)
        print("mean final FD: " + ", ".join(f"mu={k}: {v:.4g}" for k, v in means.items()),
              file=sys.stderr)
        print(mu)
        return 0
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
