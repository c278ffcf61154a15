"""`feddm-hpc study SPEC --status`: where every run of the study stands, per cell, read from the
run directories (runs.py): complete, running (a live worker's marker), to evaluate, started (to
resume), missing (to train), config differs; and the rounds trained of all rounds."""
from __future__ import annotations

from pathlib import Path
from typing import List

from feddm_hpc.study.runs import RunState, inspect_run, plan_runs
from feddm_hpc.study.spec import Spec

COLUMNS = (("done", "done"), ("running", "running"), ("evaluate", "to evaluate"),
           ("resume", "started"), ("train", "missing"), ("differs", "differs"))


def _count(states: List[RunState]) -> dict:
    out = {k: 0 for k, _ in COLUMNS}
    for s in states:
        out["running" if s.running is not None and s.state != "done" else s.state] += 1
    out["rounds"] = f"{sum(min(s.rounds_done, s.rounds) for s in states)}/{sum(s.rounds for s in states)}"
    out["runs"] = len(states)
    return out


def status_text(spec: Spec, out: Path) -> str:
    states = [inspect_run(spec, p) for p in plan_runs(spec, out)]
    rows = [(c.name, _count([s for s in states if s.plan.cell == c.name])) for c in spec.cells]
    total = _count(states)
    header = ["cell", "runs", *(h for _, h in COLUMNS), "rounds"]
    table = [[name, str(c["runs"]), *(str(c[k]) for k, _ in COLUMNS), c["rounds"]]
             for name, c in rows + [("all", total)]]
    widths = [max(len(r[i]) for r in [header] + table) for i in range(len(header))]

    def line(r):
        return "  ".join(x.ljust(w) if i == 0 else x.rjust(w) for i, (x, w) in enumerate(zip(r, widths)))
    lines = [f"study {spec.name} ({spec.path}): {total['runs']} run(s) in {Path(out) / 'runs'}; "
             f"{total['done']} complete, {total['running']} running, "
             f"{total['runs'] - total['done'] - total['running']} to do", "",
             line(header), *(line(r) for r in table)]
    lines += [f"grid combination skipped: {why}" for why in spec.skipped]
    for s in states:
        if s.running is not None and s.state != "done":
            lines.append(f"running: {s.plan.name} (round {s.rounds_done} of {s.rounds}; pid "
                         f"{s.running.get('pid')} on {s.running.get('host')} since "
                         f"{s.running.get('since')})")
        elif s.state == "differs":
            lines.append(f"differs: {s.plan.name}: {s.message}")
    return "\n".join(lines)
