"""`feddm-hpc report RUN_DIR ...`: PNG plots and a Markdown table comparing run directories.

Reads only files (config.yaml, metrics.jsonl, eval/round-*.json, samples/*.png), so it runs on a
laptop after copying results back. Plots need matplotlib (Agg backend, no display); without it
the table is still written.
"""
from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import yaml

from feddm_hpc.errors import UserError


@dataclass
class Run:
    path: Path
    name: str
    config: dict
    metrics: List[dict]
    evals: Dict[int, dict] = field(default_factory=dict)   # round -> evaluate's JSON
    sample_grid: Optional[Path] = None

    def get(self, dotted: str, default=None):
        node = self.config
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node

    def cum_uplink(self) -> List[float]:
        """Cumulative uplink bytes after each metrics line (running sum where the field is absent)."""
        out, total = [], 0.0
        for rec in self.metrics:
            total = rec["cum_uplink_bytes"] if "cum_uplink_bytes" in rec \
                else total + (rec.get("uplink_bytes") or 0)
            out.append(float(total))
        return out


def _read_jsonl(path: Path) -> List[dict]:
    out = []
    for i, line in enumerate(path.read_text().splitlines()):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                raise UserError(f"{path}: line {i + 1} is not JSON") from None
    return out


def load_run(path, name: Optional[str] = None) -> Run:
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path}: run directory not found")
    if not (path / "metrics.jsonl").is_file() or not (path / "config.yaml").is_file():
        raise UserError(f"{path}: not a run directory (needs config.yaml and metrics.jsonl)")
    try:
        config = yaml.safe_load((path / "config.yaml").read_text()) or {}
    except yaml.YAMLError:
        raise UserError(f"{path / 'config.yaml'}: not valid YAML") from None
    run = Run(path, name or path.name, config, _read_jsonl(path / "metrics.jsonl"))
    for f in sorted((path / "eval").glob("round-*.json")):
        try:
            rec = json.loads(f.read_text())
        except json.JSONDecodeError:
            print(f"warning: skipping unreadable {f}", file=sys.stderr)
            continue
        run.evals[int(rec.get("round", int(f.stem.split("-")[1])))] = rec
    grids = sorted((path / "samples").glob("round-*.png"))
    run.sample_grid = grids[-1] if grids else None
    return run


def _names(paths: List[Path]) -> List[str]:
    """Directory names, prefixed by the parent's where two runs share a name."""
    names = [p.name for p in paths]
    return [f"{p.parent.name}/{p.name}" if names.count(p.name) > 1 else p.name for p in paths]


# ---------------------------------------------------------------------------- table

def _fmt(v, digits: int = 4) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def _bytes(n) -> str:
    if n is None:
        return "–"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.3g} {unit}"
        n /= 1000.0
    return str(n)


def describe_partition(run: Run) -> str:
    scheme = run.get("data.partition", "iid")
    if scheme.startswith("dirichlet"):
        return f"{scheme} α={run.get('data.dirichlet_alpha')}"
    if scheme == "shards":
        return f"shards {run.get('data.classes_per_client')}/client"
    return scheme


def describe_codec(run: Run) -> str:
    kind = run.get("compression.uplink", "none")
    if kind == "quant":
        text = f"quant {run.get('compression.bits')}-bit"
    elif kind == "topk":
        text = f"top-k {run.get('compression.topk_fraction')}"
    else:
        text = kind
    if run.get("compression.error_feedback"):
        text += " +EF"
    return text


def describe_algorithm(run: Run) -> str:
    algo = run.get("federation.algorithm", "?")
    if run.get("federation.num_clients") == 1:
        return f"centralized ({algo})"
    mu = run.get("client.prox_mu") or 0
    return f"{algo} μ={mu}" if algo == "fedprox" or mu else algo


def row(run: Run) -> dict:
    last = run.metrics[-1] if run.metrics else {}
    up_total = run.cum_uplink()[-1] if run.metrics else None
    f32 = last.get("cum_uplink_float32_bytes")
    if f32 is None and run.metrics and all("uplink_float32_bytes" in r for r in run.metrics):
        f32 = sum(r["uplink_float32_bytes"] for r in run.metrics)
    final_eval = run.evals[max(run.evals)] if run.evals else {}
    losses = [r.get("train_loss") for r in run.metrics if r.get("train_loss") is not None]
    return {
        "run": run.name, "algorithm": describe_algorithm(run),
        "clients": run.get("federation.num_clients"), "partition": describe_partition(run),
        "codec": describe_codec(run),
        "rounds": f"{len(run.metrics)}/{run.get('federation.rounds', '?')}",
        "final_train_loss": losses[-1] if losses else None,
        "eval_round": final_eval.get("round"), "N": final_eval.get("num_samples"),
        **{k: final_eval.get(k) for k in ("fd", "kid", "precision", "recall", "coverage")},
        "uplink_bytes": up_total,
        "uplink_ratio": (up_total / f32) if (up_total is not None and f32) else None,
        "wall_s": sum(r.get("wall_s") or 0.0 for r in run.metrics),
    }


COLUMNS = [("run", "run"), ("algorithm", "algorithm"), ("clients", "clients"),
           ("partition", "partition"), ("codec", "uplink codec"), ("rounds", "rounds"),
           ("final_train_loss", "final train loss"), ("fd", "FD"), ("kid", "KID"),
           ("precision", "precision"), ("recall", "recall"), ("coverage", "coverage"),
           ("N", "eval N"), ("eval_round", "eval round"), ("uplink_bytes", "uplink total"),
           ("uplink_ratio", "uplink / float32"), ("wall_s", "wall time")]


def _cell(key: str, value) -> str:
    if key == "uplink_bytes":
        return _bytes(value)
    if key == "uplink_ratio":
        return "–" if value is None else f"{value:.3f}"
    if key == "wall_s":
        return f"{value / 60:.1f} min" if value >= 120 else f"{value:.1f} s"
    if key == "eval_round" and value is not None:
        return str(value + 1)   # rounds are 0-based in files, counted from 1 in the table
    return _fmt(value)


def markdown_table(runs: List[Run]) -> str:
    rows = [row(r) for r in runs]
    lines = ["| " + " | ".join(h for _, h in COLUMNS) + " |",
             "|" + "|".join("---" for _ in COLUMNS) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(_cell(k, r[k]) for k, _ in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def comparability_notes(runs: List[Run]) -> List[str]:
    """Sample-quality numbers compare only at equal N and in the same feature space."""
    finals = [r.evals[max(r.evals)] for r in runs if r.evals]
    notes = []
    ns = sorted({e.get("num_samples") for e in finals}, key=str)
    if len(ns) > 1:
        notes.append(f"evaluations use different sample counts {ns}: FD/KID/PRDC are comparable "
                     f"only at equal N")
    ids = sorted({e.get("feature_extractor_id") or e.get("feature_extractor") for e in finals},
                 key=str)
    if len(ids) > 1:
        notes.append(f"evaluations use different feature extractors {ids}: not comparable")
    if finals:
        e = finals[0]
        notes.append(f"FD/KID/PRDC in the features of {e.get('feature_extractor')} (test accuracy "
                     f"{_fmt(e.get('extractor_test_accuracy'))}), not Inception FID; lower FD/KID "
                     f"and higher precision/recall/coverage are better")
    return notes


# ---------------------------------------------------------------------------- plots

def _plots(runs: List[Run], out: Path) -> List[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    written = []
    colors = plt.get_cmap("tab10").colors
    # Ten colours, then the next ten runs with another line style and marker: a 16-run study
    # stays readable. The legend sits outside the axes so it never hides points.
    style = {run.name: dict(color=colors[i % 10], linestyle=("-", "--", ":")[i // 10 % 3],
                            marker=("o", "s", "^")[i // 10 % 3]) for i, run in enumerate(runs)}

    def save(fig, ax, name):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        fig.savefig(out / name, dpi=120, bbox_inches="tight")
        plt.close(fig)
        written.append(out / name)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for run in runs:
        pts = [(r["round"] + 1, r["train_loss"]) for r in run.metrics
               if r.get("train_loss") is not None]
        if pts:
            ax.plot(*zip(*pts), label=run.name, **{**style[run.name], "marker": None})
    ax.set(xlabel="round", ylabel="train loss (diffusion MSE)", title="Training loss")
    ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3, which="both")
    save(fig, ax, "loss.png")

    # Unlabelled data scored with Inception only has fd None: nothing to draw for it here.
    evaluated = [r for r in runs if any(e.get("fd") is not None for e in r.evals.values())]
    if evaluated:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for run in evaluated:
            rounds = [k for k in sorted(run.evals) if run.evals[k].get("fd") is not None]
            ax.plot([k + 1 for k in rounds], [run.evals[k]["fd"] for k in rounds],
                    label=run.name, **style[run.name])
        ax.set(xlabel="round", ylabel="FD (LeNet features)", title="Sample quality per round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        save(fig, ax, "fd.png")

        fig, ax = plt.subplots(figsize=(7, 4.5))
        for run in evaluated:
            cum = dict(zip((rec.get("round") for rec in run.metrics), run.cum_uplink()))
            pts = [(cum[k], run.evals[k]["fd"]) for k in sorted(run.evals)
                   if k in cum and run.evals[k].get("fd") is not None]
            if pts:
                ax.plot(*zip(*pts), label=run.name, **style[run.name])
        ax.set_xscale("log")
        ax.set(xlabel="cumulative uplink bytes", ylabel="FD (LeNet features)",
               title="Communication efficiency: FD against uplink traffic")
        ax.grid(alpha=0.3, which="both")
        save(fig, ax, "fd_vs_uplink.png")
    return written


# ---------------------------------------------------------------------------- entry point

def write_report(run_dirs: List[str], out_dir: Optional[str] = None) -> int:
    paths = [Path(p) for p in run_dirs]
    runs = [load_run(p, n) for p, n in zip(paths, _names(paths))]
    out = Path(out_dir) if out_dir else (paths[0] / "report" if len(paths) == 1 else Path("report"))
    out.mkdir(parents=True, exist_ok=True)

    grids = []
    for run in runs:
        if run.sample_grid is not None:
            dest = out / "samples" / f"{run.name.replace('/', '_')}.png"
            dest.parent.mkdir(exist_ok=True)
            shutil.copyfile(run.sample_grid, dest)
            grids.append((run, dest))
    try:
        plots = _plots(runs, out)
        plot_note = None
    except ImportError:
        plots, plot_note = [], "plots skipped: matplotlib is not installed (pip install matplotlib)"

    text = ["# feddm_hpc report", "", markdown_table(runs)]
    text += [f"- {n}" for n in comparability_notes(runs)]
    text.append("- uplink / float32: total uplink bytes over what uncompressed float32 updates "
                "would have sent; wall time: sum of the rounds' wall_s")
    if plots:
        text += ["", "## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots]
    if grids:
        text += ["", "## Latest samples", ""]
        text += [f"**{run.name}** (`{run.sample_grid.name}`)\n\n![{run.name}]"
                 f"({dest.relative_to(out).as_posix()})\n" for run, dest in grids]
    (out / "table.md").write_text("\n".join(text) + "\n")
    summary = [{**row(r), "path": str(r.path)} for r in runs]
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    if plot_note:
        print(plot_note, file=sys.stderr)
    print(f"report: {out / 'table.md'} ({len(runs)} run(s), {len(plots)} plot(s))")
    return 0
