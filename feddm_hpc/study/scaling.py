"""`feddm-hpc study SPEC --collect` of a `report: {kind: scaling}` study: the scaling
measurements of every run (feddm_hpc/scaling/collect.py) in OUT/scaling.csv and scaling.json,
a table in OUT/table.md and the plots strong_scaling.png, weak_scaling.png, phases.png and
bytes.png (scaling/plots.py), from the spec and the run directories alone.

One row per run (cell x seed). Its identity: cell, seed, ranks and threads (the cell's),
num_clients and clients_per_round (the cohort) from its config, codec and model: the value name
of a grid axis called `codec` / `model` where the cell has one, else a description of the
config's compression and model. Strong scaling groups runs of equal clients, cohort, codec and
model over their rank counts; weak scaling runs of equal cohort clients per rank.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import List

from feddm_hpc.errors import UserError
from feddm_hpc.scaling import collect as C
from feddm_hpc.study.runs import inspect_run, plan_runs
from feddm_hpc.study.spec import Spec

STATUS = {"done": "ok", "evaluate": "ok", "resume": "incomplete", "train": "missing",
          "differs": "differs"}


def _codec(cfg) -> str:
    c = cfg.compression
    text = {"quant": f"quant{c.bits}", "topk": f"topk{c.topk_fraction:g}"}.get(c.uplink, c.uplink)
    return text + ("+ef" if c.error_feedback else "")


def _model(cfg) -> str:
    m = cfg.model
    return f"{m.parameterization} c{m.base_channels}"


def rows(spec: Spec, out: Path) -> List[dict]:
    rep, out_rows = spec.report, []
    for plan in plan_runs(spec, out):
        cell = spec.cell(plan.cell)
        cfg = spec.config(cell, plan.seed)
        axes = dict(cell.axes)
        fed = cfg.federation
        ident = {"cell": cell.name, "seed": plan.seed, "ranks": cell.ranks,
                 "threads": cfg.system.threads, "num_clients": fed.num_clients,
                 "clients_per_round": fed.clients_per_round or fed.num_clients,
                 "codec": axes.get("codec", _codec(cfg)), "model": axes.get("model", _model(cfg))}
        state = inspect_run(spec, plan).state
        status = STATUS[state]
        row = C.summarize(ident, plan.run_dir, rep.warmup_rounds, rep.network,
                          "ok" if status == "ok" else status)
        if status != "ok" and row["status"] == "ok":
            row["status"] = status
        out_rows.append(row)
    return out_rows


def _num(v, digits: int = 4) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}g}"


def markdown(spec: Spec, table_rows: List[dict], plots: List[Path], note: str = "") -> str:
    rep = spec.report
    head = ["cell", "seed", "ranks", "threads", "clients", "codec", "model", "wall s/round",
            "train s", "wait s", "client updates/s", "uplink B/round", "network model s/round",
            "peak RSS MB", "status"]
    lines = [f"# {rep.title or 'Scaling study ' + spec.name}", ""]
    lines += [rep.text, ""] if rep.text else []
    lines += ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in table_rows:
        vals = [r["cell"], r["seed"], r["ranks"], r["threads"],
                f"{r['num_clients']} ({r['clients_per_round']}/round)", r["codec"], r["model"],
                _num(r.get("wall_s")), _num(r.get("train_s")), _num(r.get("wait_s")),
                _num(r.get("client_updates_per_s")), _num(r.get("uplink_bytes"), 6),
                _num(r.get("net_round_s")), _num(r.get("peak_rss_mb")), r["status"]]
        lines.append("| " + " | ".join(str(v) for v in vals) + " |")
    net = rep.network
    lines += ["", f"- per-round means over the rounds after the first {rep.warmup_rounds} "
                  f"(warm-up); every phase in scaling.csv",
              f"- network model: uplink {net.uplink_mbps.median:g} Mbit/s (sigma "
              f"{net.uplink_mbps.sigma:g}), downlink {net.downlink_mbps.median:g} Mbit/s, latency "
              f"{net.latency_ms.median:g} ms, compute {net.compute}"]
    lines += [f"- grid combination skipped: {s}" for s in spec.skipped]
    if not any(r.get("peak_rss_mb") is not None for r in table_rows):
        lines.append("- peak RSS not measured (measure_rss: true in the spec measures it)")
    if plots:
        lines += ["", "## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots]
    if note:
        lines += ["", note]
    return "\n".join(lines) + "\n"


def collect_scaling(spec: Spec, out: Path) -> int:
    out = Path(out)
    table_rows = rows(spec, out)
    if not any(r["status"] == "ok" for r in table_rows):
        raise UserError(f"{out / 'runs'}: no complete run of the study to report yet "
                        f"(see feddm-hpc study {spec.path} --status --out {out})")
    for r in table_rows:
        if r["status"] != "ok":
            print(f"warning: {r['cell']}/seed{r['seed']}: {r['status']}, left out of the plots",
                  file=sys.stderr)
    C.write_csv(table_rows, out / "scaling.csv")
    C.dump_json(table_rows, out / "scaling.json")
    plots, note = [], ""
    try:
        from feddm_hpc.scaling.plots import write_plots

        plots = write_plots(table_rows, out)
    except ImportError:
        note = "plots skipped: matplotlib is not installed (pip install matplotlib)"
        print(note, file=sys.stderr)
    (out / "table.md").write_text(markdown(spec, table_rows, plots, note))
    print(C.table(table_rows))
    print(f"scaling report: {out / 'table.md'}, {out / 'scaling.csv'} ({len(table_rows)} run(s), "
          f"{len(plots)} plot(s))")
    return 0
