"""`feddm-hpc study SPEC --collect`: OUT/table.md, OUT/summary.json and the plots, from the spec
and the run directories alone (config.yaml, metrics.jsonl, eval/round-*.json; no checkpoint).

A run counts once it is done (runs.py): its wanted evaluations exist with the spec's settings.
The others are left out and named in a note. Per cell: mean ± sample std (ddof=1) over its
runs' final values; table.md is laid out as the spec's `report:` says (report_spec.py).
"""
from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path
from typing import Dict, List

from feddm_hpc.errors import UserError
from feddm_hpc.evaluation.report import comparability_notes, load_run
from feddm_hpc.study import paired as P
from feddm_hpc.study.pareto import front_text, panel_fronts
from feddm_hpc.study.runs import inspect_run, plan_runs
from feddm_hpc.study.spec import Spec
from feddm_hpc.study.tables import markdown_table, num
from feddm_hpc.study.values import cell_summary


def load_cells(spec: Spec, out: Path):
    """({cell: [Run]}, {cell: [seed]}, [names of runs not done, with why])."""
    runs: Dict[str, list] = {c.name: [] for c in spec.cells}
    seeds: Dict[str, list] = {c.name: [] for c in spec.cells}
    left_out = []
    for plan in plan_runs(spec, out):
        st = inspect_run(spec, plan)
        if st.state != "done":
            why = st.message if st.state == "differs" else f"{st.state}"
            left_out.append(f"{plan.name} ({why})")
            continue
        run = load_run(plan.run_dir, name=f"{plan.cell}-s{plan.seed}")
        run.evals = {r: e for r, e in run.evals.items()
                     if r in st.wanted and spec.evaluate.matches(e)}
        runs[plan.cell].append(run)
        seeds[plan.cell].append(plan.seed)
    return runs, seeds, left_out


def sweep_note(note, summaries: Dict[str, dict], runs: Dict[str, list]) -> tuple:
    """(the note's text, its numbers): mean final FD per value of the swept key; lowest wins.
    Where the cells have different seeds, a mean over more seeds is not comparable with one over
    fewer (one seed's spread can exceed the sweep's effect): the means are taken over the seeds
    every value has, and the note names them."""
    title, cells, key, label = note.sweep
    fds = {cell: P.by_seed(summaries[cell], "fd") for cell in cells if runs[cell]}
    fds = {cell: v for cell, v in fds.items() if v}
    if not fds:
        return None, None
    seed_sets = [set(v) for v in fds.values()]
    common = sorted(set.intersection(*seed_sets))
    uneven = any(s != seed_sets[0] for s in seed_sets)
    if uneven and not common:
        return (f"{title}: no seed common to every {label} value: no best value named", None)
    means = {}
    for cell, by in fds.items():
        use = common if uneven else sorted(by)
        means[runs[cell][0].get(key)] = sum(by[s] for s in use) / len(use)
    best = min(sorted(means), key=lambda v: means[v])   # ties: the smaller value
    text = ", ".join(f"{label}={k}: {num(v)}" for k, v in sorted(means.items()))
    over = f" (seeds every value has: {', '.join(map(str, common))})" if uneven else ""
    return (f"{title}: mean final FD{over} {text}; best {label}={best}",
            {"title": title, "key": key, "seeds": common if uneven else None,
             "mean_final_fd": {str(k): v for k, v in sorted(means.items())}, "best": best})


def notes(spec: Spec, summaries: Dict[str, dict], runs: Dict[str, list], left_out: List[str]):
    texts, sweeps = [], []
    present = [s for s in summaries.values() if s["n"]]
    for note in spec.report.notes:
        if note.text is not None:
            texts.append(note.text)
        elif note.auto == "comparability":
            texts += comparability_notes([r for rs in runs.values() for r in rs])
        elif note.auto == "final_eval" and not all(s["final_eval"] for s in present):
            texts.append("some cells' last evaluation is not their final round: "
                         + ", ".join(s["cell"] for s in present if not s["final_eval"]))
        elif note.auto == "seed_counts" and len({s["n"] for s in present}) > 1:
            texts.append(f"cells have different numbers of seeds ({sorted({s['n'] for s in present})}):"
                         f" the study is incomplete")
        elif note.sweep is not None:
            text, info = sweep_note(note, summaries, runs)
            texts += [text] if text else []
            sweeps += [info] if info else []
    if left_out:
        texts.append(f"{len(left_out)} run(s) not complete, left out: " + ", ".join(left_out))
    return texts, sweeps


def _strict(x):
    """JSON without Infinity: an infinite value (epsilon without noise) is the string "inf"."""
    if isinstance(x, float) and math.isinf(x):
        return "inf"
    if isinstance(x, dict):
        return {k: _strict(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_strict(v) for v in x]
    return x


def collect(spec: Spec, out: Path) -> int:
    out = Path(out)
    if spec.report.kind == "scaling":
        from feddm_hpc.study.scaling import collect_scaling

        return collect_scaling(spec, out)
    runs, seeds, left_out = load_cells(spec, out)
    if not any(runs.values()):
        raise UserError(f"{out / 'runs'}: no complete run of the study to report yet "
                        f"(see feddm-hpc study {spec.path} --status --out {out})")
    for name in left_out:
        print(f"warning: {name}: left out of the report", file=sys.stderr)
    summaries = {c.name: cell_summary(c.name, runs[c.name], seeds[c.name]) for c in spec.cells}
    rep = spec.report
    plots, plot_note = [], None
    try:
        if rep.plots:
            from feddm_hpc.study.plots import write_plots

            plots = write_plots(rep, [c.name for c in spec.cells], runs, summaries, out)
    except ImportError:
        plot_note = "plots skipped: matplotlib is not installed (pip install matplotlib)"
    note_texts, sweeps = notes(spec, summaries, runs, left_out)
    fronts = [info for plot in rep.plots if plot.kind == "pareto"
              for info in panel_fronts(plot, summaries)]
    note_texts += [front_text(info) for info in fronts]
    paired = P.paired_table(rep.paired, summaries) if rep.paired else []

    parts = [f"# {rep.title or 'Study ' + spec.name}", ""]
    if rep.text:
        parts += [rep.text, ""]
    for table in rep.tables:
        if table.title:
            parts += [f"## {table.title}", ""]
        parts.append(markdown_table(table, summaries))
    parts += [f"- {n}" for n in note_texts]
    parts += P.markdown(rep.paired, paired) if rep.paired else []
    if plots and rep.link_plots:
        parts += ["", "## Plots", ""] + ([rep.plots_text, ""] if rep.plots_text else [])
        parts += [f"![{p.stem}]({p.name})" for p in plots]
    if plot_note:
        parts += ["", plot_note]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(parts))   # no double blank line
    (out / "table.md").write_text(text if text.endswith("\n") else text + "\n")
    summary = {"spec": str(spec.path), "name": spec.name,
               "cells": [summaries[c.name] for c in spec.cells], "paired": paired,
               "sweeps": sweeps, "notes": note_texts, "left_out": left_out}
    if fronts:   # only then: the committed summaries of studies without one stay as they are
        summary["pareto"] = fronts
    (out / "summary.json").write_text(json.dumps(_strict(summary), indent=1) + "\n")
    if plot_note:
        print(plot_note, file=sys.stderr)
    n_runs = sum(len(r) for r in runs.values())
    print(f"study report: {out / 'table.md'} ({len(spec.cells)} cell(s), {n_runs} run(s)"
          f"{f', {len(left_out)} left out' if left_out else ''}, {len(plots)} plot(s))")
    return 0

