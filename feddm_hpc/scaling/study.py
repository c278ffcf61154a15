"""`feddm-hpc scaling SPEC [--out DIR] [--dry-run] [--slurm] [--collect]`: the whole study.

Local: run every point (runner.run_local), then write OUT/scaling.csv, OUT/scaling.json and the
plots. --slurm: write one sweep file and job array per rank count and submit them (with
--dry-run: only write them and OUT/slurm/submit.sh); once the jobs are done, `--collect`
writes the CSV and plots from the run directories recorded in OUT/points.json.
"""
from __future__ import annotations

import math
import shlex
from pathlib import Path
from typing import List, Optional

from feddm_hpc.errors import UserError
from feddm_hpc.scaling import collect, runner
from feddm_hpc.scaling.spec import Spec, describe, load_spec


def default_out(spec_path: str) -> Path:
    return Path("runs") / f"scaling-{Path(spec_path).stem}"


def _rows(spec: Spec, run_dirs, outcomes=None) -> List[dict]:
    by_name = {o.point.name: o for o in outcomes or []}
    rows = []
    for p in spec.points:
        o = by_name.get(p.name)
        status = "ok" if o is None or o.status in ("ok", "reused") else o.status
        elapsed = o.elapsed_s if o is not None else math.nan
        rows.append(collect.summarize(p, run_dirs[p.name], spec.options["warmup_rounds"],
                                      spec.network, status, elapsed))
    return rows


def write_results(spec: Spec, out: Path, rows: List[dict], echo=print) -> None:
    collect.write_csv(rows, out / "scaling.csv")
    collect.dump_json(rows, out / "scaling.json")
    echo(collect.table(rows))
    echo(f"wrote {out / 'scaling.csv'}")
    try:
        from feddm_hpc.scaling.plots import write_plots
    except ImportError:  # pragma: no cover - matplotlib is an optional extra
        echo("plots skipped: matplotlib is not installed (pip install matplotlib)")
        return
    try:
        paths = write_plots(rows, out)
    except ImportError:
        echo("plots skipped: matplotlib is not installed (pip install matplotlib)")
        return
    echo("wrote " + ", ".join(str(p) for p in paths))


def run_study(spec_path: str, out: Optional[str] = None, dry_run: bool = False, slurm: bool = False,
              collect_only: bool = False, echo=print) -> int:
    spec = load_spec(spec_path)
    out_dir = Path(out) if out else default_out(spec_path)
    echo(f"scaling study {spec_path}: {len(spec.points)} point(s), {spec.rounds} round(s) each, "
         f"base {spec.base}; output {out_dir}")
    echo(describe(spec))
    if collect_only:
        run_dirs = runner.load_run_dirs(out_dir)
        if run_dirs is None or set(run_dirs) != {p.name for p in spec.points}:
            raise UserError(f"{out_dir}: points.json is missing or belongs to another grid; "
                            f"run the study (or --slurm) with this SPEC first")
        write_results(spec, out_dir, _rows(spec, run_dirs), echo)
        return 0
    if slurm:
        return _slurm(spec, out_dir, dry_run, echo)
    if dry_run:
        for p in spec.points:
            echo(shlex.join(runner.local_command(spec, p, out_dir)))
        return 0
    out_dir.mkdir(parents=True, exist_ok=True)
    run_dirs = {p.name: runner.point_dir(out_dir, p) for p in spec.points}
    runner.save_points(out_dir, spec, run_dirs, "local")
    outcomes = runner.run_local(spec, out_dir, echo)
    write_results(spec, out_dir, _rows(spec, run_dirs, outcomes), echo)
    failed = [o for o in outcomes if o.status in ("failed", "timeout")]
    if len(outcomes) < len(spec.points) or failed:
        for o in failed:
            echo(f"error: {o.point.name} ({o.point.label()}) {o.status} (exit {o.exit_code}): "
                 f"{o.message}; log {out_dir / (o.point.name + '.log')}")
        # Exit 2 when every failure was the training run rejecting its input (exit 2 itself).
        return 2 if failed and all(o.exit_code == 2 for o in failed) else 1
    return 0


def _slurm(spec: Spec, out: Path, dry_run: bool, echo) -> int:
    arrays = runner.slurm_arrays(spec, out)
    runner.save_points(out, spec, runner.slurm_run_dirs(arrays), "slurm")
    script = out / "slurm" / "submit.sh"
    runner.write_submit_script(arrays, script)
    for a in arrays:
        echo(f"{a.sweep_file}: {len(a.points)} line(s), {a.ranks} rank(s) per task -> {a.run_root}/task-*")
    if dry_run:
        echo(f"dry run: nothing submitted; submit with: bash {script}")
    else:
        runner.submit(arrays, echo)
    echo(f"when the jobs are done: feddm-hpc scaling {spec.path} --out {out} --collect")
    return 0
