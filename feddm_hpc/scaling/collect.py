"""The scaling measurements of one run directory, and OUT/scaling.csv: one row per run.

Per-round figures are means over the measured rounds (all rounds after the report's
warmup_rounds): the simulator's phase timers, its wall time, client updates per second (clients
that reported / wall seconds), bytes per round, the network model's round time (network.py) and,
when the study measured it (measure_rss), each rank's peak RSS (rss.py). The study's scaling
report (feddm_hpc/study/scaling.py) gives each row its identity (cell, seed, ranks, ...).
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Dict, List, Optional

from feddm_hpc.errors import UserError
from feddm_hpc.scaling.network import NetworkConfig, RunModel, simulate_record
from feddm_hpc.scaling.rss import read_ranks

PHASES = ("broadcast", "train", "encode", "wait", "gather", "decode", "aggregate", "checkpoint")
COLUMNS = ["cell", "seed", "status", "ranks", "threads", "num_clients", "clients_per_round", "codec",
           "model",
           "model_params", "rounds_measured", *[f"{p}_s" for p in PHASES], "other_s", "wall_s",
           "client_updates_per_s", "uplink_bytes", "downlink_bytes", "net_round_s",
           "net_bytes_estimated", "peak_rss_mb", "rank0_rss_mb", "elapsed_s", "run_dir"]


def _count(value) -> int:
    return len(value) if isinstance(value, list) else int(value or 0)


def _mean(xs: List[float]) -> float:
    return sum(xs) / len(xs) if xs else math.nan


def model_params(run_dir: Path, records: List[dict]) -> Optional[int]:
    """The flattened model's size: from the latest checkpoint, else from the float32 byte
    baseline of the metrics (downlink_float32_bytes = 4 x params x vectors x cohort)."""
    ckpts = sorted((run_dir / "checkpoints").glob("round-*.h5"))
    if ckpts:
        try:
            import h5py
            with h5py.File(ckpts[-1], "r") as f:
                return int(f["global/params"].shape[0])
        except (OSError, KeyError):
            pass
    for rec in records:
        cohort = _count(rec.get("clients"))
        if cohort and rec.get("downlink_float32_bytes"):
            return int(rec["downlink_float32_bytes"] // (4 * cohort))
    return None


def summarize(ident: Dict[str, object], run_dir: Path, warmup: int, net: NetworkConfig,
              status: str = "ok") -> Dict[str, object]:
    """`ident` (cell, seed, ranks, ...) with the run's measurements; status ok (complete),
    incomplete (not every round yet: the means are of the rounds there) or missing."""
    row: Dict[str, object] = {**ident, "status": status, "run_dir": str(run_dir),
                              "elapsed_s": math.nan}
    ranks = read_ranks(run_dir / "rss")
    if ranks:
        row["peak_rss_mb"] = round(max(r["max_rss_kb"] for r in ranks) / 1024, 1)
        row["rank0_rss_mb"] = round(ranks[0]["max_rss_kb"] / 1024, 1)
        row["elapsed_s"] = max(r["wall_s"] for r in ranks)
    try:
        run = RunModel(run_dir)
        records = run.records()
    except (OSError, ValueError, KeyError, UserError):  # no config.yaml or metrics: never started
        return row if status != "ok" else {**row, "status": "missing"}
    if not records:
        return row if status != "ok" else {**row, "status": "missing"}
    measured = records[warmup:] if len(records) > warmup else records
    if math.isnan(row["elapsed_s"]):   # no RSS records: the rounds' own wall time
        row["elapsed_s"] = sum(float(r["wall_s"]) for r in records)
    row["model_params"] = model_params(run_dir, records)
    row["rounds_measured"] = len(measured)
    for p in PHASES:
        row[f"{p}_s"] = _mean([float((r.get("phases") or {}).get(p, 0.0)) for r in measured])
    wall = [float(r["wall_s"]) for r in measured]
    row["wall_s"] = _mean(wall)
    row["other_s"] = row["wall_s"] - sum(row[f"{p}_s"] for p in PHASES)
    reported = sum(_count(r.get("arrived")) for r in measured)
    row["client_updates_per_s"] = reported / sum(wall) if sum(wall) > 0 else math.nan
    row["uplink_bytes"] = _mean([float(r["uplink_bytes"]) for r in measured])
    row["downlink_bytes"] = _mean([float(r["downlink_bytes"]) for r in measured])
    timings = [simulate_record(run, r, net) for r in measured]
    row["net_round_s"] = _mean([t.round_s for t in timings])
    row["net_bytes_estimated"] = any(t.per_client_bytes_estimated for t in timings)
    if status == "ok" and len(records) < run.config.federation.rounds:
        row["status"] = "incomplete"
    return row


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return str(int(round(value))) if abs(value) >= 1e5 else f"{value:.6g}"  # bytes: exact
    return str(value)


def write_csv(rows: List[dict], path: Path) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        for row in rows:
            w.writerow({k: _fmt(row.get(k)) for k in COLUMNS})


def read_csv(path: Path) -> List[dict]:
    """Rows with numbers as floats (empty cells as NaN), for plots and benchmarks."""
    text_cols = {"cell", "status", "codec", "model", "run_dir", "net_bytes_estimated"}
    rows = []
    with open(path, newline="") as fh:
        for raw in csv.DictReader(fh):
            row = {}
            for k, v in raw.items():
                row[k] = v if k in text_cols else (float(v) if v != "" else math.nan)
            rows.append(row)
    return rows


def table(rows: List[dict]) -> str:
    """A compact text table of the phase breakdown, for terminals and benchmarks."""
    head = ["cell", "seed", "ranks", "clients", "codec", "model", *PHASES, "wall", "upd/s", "net"]
    lines = [" ".join(f"{h:>10}" for h in head)]
    for r in rows:
        vals = [r["cell"], r["seed"], r["ranks"], f"{r['num_clients']}/{r['clients_per_round']}", r["codec"],
                r["model"], *[r.get(f"{p}_s") for p in PHASES], r.get("wall_s"),
                r.get("client_updates_per_s"), r.get("net_round_s")]
        lines.append(" ".join(f"{_cell(v):>10}" for v in vals))
    return "\n".join(lines)


def _cell(v) -> str:
    if isinstance(v, float):
        return "-" if math.isnan(v) else f"{v:.4g}"
    return "-" if v is None else str(v)


def dump_json(rows: List[dict], path: Path) -> None:
    clean = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
             for r in rows]
    path.write_text(json.dumps(clean, indent=1))
