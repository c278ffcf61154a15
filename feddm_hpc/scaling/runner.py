"""Running the points of a SPEC: one local `mpiexec` after another, or a SLURM job array.

Locally each point is `mpiexec -n R python -m mpi4py -m feddm_hpc train BASE --run-dir
OUT/point-XXX --set ...` (the MPICH mpiexec next to sys.executable), with its output in
OUT/point-XXX.log. A point whose run directory is already complete with the same resolved config
is reused, so an interrupted study continues where it stopped; an incomplete one is redone.

With --slurm the points go to jobs/slurm/sweep.sbatch, which takes one line of `train`
arguments per array task. A job array has one task size, so there is one array (and one sweep
file, OUT/slurm/sweep-np<R>.txt) per rank count; task i of that array writes
OUT/slurm/np<R>/task-i, and OUT/points.json records which point that is.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

from feddm_hpc.errors import UserError
from feddm_hpc.scaling.spec import Point, Spec

ROOT = Path(__file__).resolve().parents[2]
SWEEP_SBATCH = ROOT / "jobs" / "slurm" / "sweep.sbatch"


@dataclass
class Outcome:
    point: Point
    run_dir: Path
    status: str             # ok | reused | failed | timeout
    exit_code: int = 0
    elapsed_s: float = float("nan")
    message: str = ""


def mpiexec() -> str:
    path = Path(sys.executable).parent / "mpiexec"
    if not path.exists():
        raise UserError(f"{path}: mpiexec not found next to the Python interpreter; install the "
                        f"MPICH wheel (pip install mpich) or run with --slurm")
    return str(path)


def point_dir(out: Path, point: Point) -> Path:
    return out / point.name


def train_args(spec: Spec, point: Point, run_dir: Path) -> List[str]:
    return ["train", str(spec.base), "--run-dir", str(run_dir), *point.set_args()]


def local_command(spec: Spec, point: Point, out: Path) -> List[str]:
    run_dir = point_dir(out, point)
    rank_cmd = [sys.executable, "-m", "mpi4py", "-m", "feddm_hpc", *train_args(spec, point, run_dir)]
    if spec.options["measure_rss"]:
        rank_cmd = [sys.executable, "-m", "feddm_hpc.scaling.rss", str(run_dir / "rss"), "--", *rank_cmd]
    return [mpiexec(), "-n", str(point.ranks), *rank_cmd]


def is_complete(run_dir: Path, rounds: int, resolved_yaml: str) -> bool:
    """Finished with this very config: every round's metrics line and the same config.yaml."""
    try:
        lines = [l for l in (run_dir / "metrics.jsonl").read_text().splitlines() if l.strip()]
        same = (run_dir / "config.yaml").read_text() == resolved_yaml
    except OSError:
        return False
    return same and len(lines) >= rounds


def _last_error(log: Path) -> str:
    try:
        lines = [l for l in log.read_text(errors="replace").splitlines() if l.strip()]
    except OSError:
        return ""
    errors = [l for l in lines if l.startswith("error:")]
    return (errors or lines or [""])[-1][:300]


def _run_group(cmd, log, env, timeout_s: float) -> Optional[int]:
    """Runs the launcher in its own process group, so that a timeout or Ctrl-C ends mpiexec
    and every rank it started (killing mpiexec alone can leave ranks behind). None: timed out."""
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _end_group(proc)
        return None
    except BaseException:  # KeyboardInterrupt: the ranks are not in our terminal's group
        _end_group(proc)
        raise


def _end_group(proc) -> None:
    for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=grace)
            break
        except subprocess.TimeoutExpired:
            continue


def run_point(spec: Spec, point: Point, out: Path, echo=print) -> Outcome:
    run_dir = point_dir(out, point)
    if is_complete(run_dir, spec.rounds, spec.resolved[point.name]):
        echo(f"{point.name}  {point.label()}: reused (complete)")
        return Outcome(point, run_dir, "reused")
    if run_dir.exists():  # ours (OUT/point-XXX) and incomplete or stale: start it afresh
        shutil.rmtree(run_dir)
    cmd = local_command(spec, point, out)
    log = out / f"{point.name}.log"
    env = dict(os.environ)
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        fh.write("$ " + shlex.join(cmd) + "\n")
        fh.flush()
        code = _run_group(cmd, fh, env, spec.options["timeout_s"])
        status = "ok" if code == 0 else ("timeout" if code is None else "failed")
        code = 124 if code is None else code
    elapsed = time.perf_counter() - t0
    outcome = Outcome(point, run_dir, status, code, elapsed)
    if status != "ok":
        outcome.message = _last_error(log)
    echo(f"{point.name}  {point.label()}: {status} in {elapsed:.1f}s"
         + (f" (exit {code}: {outcome.message}; log {log})" if status != "ok" else ""))
    return outcome


def run_local(spec: Spec, out: Path, echo=print) -> List[Outcome]:
    mpiexec()  # fail before the first point if it is missing
    outcomes = []
    for point in spec.points:
        outcome = run_point(spec, point, out, echo)
        outcomes.append(outcome)
        if outcome.status in ("failed", "timeout") and not spec.options["keep_going"]:
            echo("stopping: options.keep_going is false")
            break
    return outcomes


# ---------------------------------------------------------------------------- SLURM

@dataclass
class SlurmArray:
    ranks: int
    sweep_file: Path
    run_root: Path
    points: List[Point]
    command: List[str]      # sbatch command line
    env: Dict[str, str]     # variables sweep.sbatch reads


def slurm_arrays(spec: Spec, out: Path) -> List[SlurmArray]:
    """One job array per rank count; writes the sweep files (one line per point)."""
    if not SWEEP_SBATCH.is_file():
        raise UserError(f"{SWEEP_SBATCH}: batch script not found (needed by --slurm)")
    folder = out / "slurm"
    folder.mkdir(parents=True, exist_ok=True)
    s = spec.slurm
    arrays = []
    for ranks in sorted({p.ranks for p in spec.points}):
        points = [p for p in spec.points if p.ranks == ranks]
        sweep = folder / f"sweep-np{ranks}.txt"
        header = (f"# feddm-hpc scaling {spec.path}: {len(points)} point(s) at {ranks} rank(s);\n"
                  f"# line i (from 0, comments skipped) is array task i: "
                  + ", ".join(f"{i}={p.name}" for i, p in enumerate(points)) + "\n")
        sweep.write_text(header + "".join(" ".join(p.set_args()) + "\n" for p in points))
        run_root = folder / f"np{ranks}"
        limit = f"%{s['max_parallel']}" if s["max_parallel"] else ""
        cmd = ["sbatch", f"--array=0-{len(points) - 1}{limit}", f"--ntasks={ranks}",
               f"--cpus-per-task={s['cpus_per_task']}", f"--job-name=feddm-scaling-np{ranks}",
               f"--output={folder / f'np{ranks}-%a.out'}", *s["sbatch_args"], str(SWEEP_SBATCH)]
        env = {"CONFIG": str(spec.base), "SWEEP_FILE": str(sweep.resolve()),
               "RUN_ROOT": str(run_root.resolve()), "PYTHON": s["python"] or sys.executable}
        arrays.append(SlurmArray(ranks, sweep, run_root, points, cmd, env))
    return arrays


def slurm_run_dirs(arrays: List[SlurmArray]) -> Dict[str, Path]:
    return {p.name: a.run_root / f"task-{i}" for a in arrays for i, p in enumerate(a.points)}


def write_submit_script(arrays: List[SlurmArray], path: Path) -> None:
    lines = ["#!/bin/bash", "# Submits the scaling study's job arrays (written by feddm-hpc scaling --slurm).",
             "set -euo pipefail"]
    for a in arrays:
        assigns = " ".join(f"{k}={shlex.quote(v)}" for k, v in a.env.items())
        lines.append(f"{assigns} {shlex.join(a.command)}")
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o755)


def submit(arrays: List[SlurmArray], echo=print) -> List[str]:
    if shutil.which("sbatch") is None:
        raise UserError("sbatch: not found on PATH; submit the written script on a SLURM login node")
    ids = []
    for a in arrays:
        proc = subprocess.run(a.command, capture_output=True, text=True, env={**os.environ, **a.env})
        if proc.returncode != 0:
            raise UserError(f"sbatch failed for the {a.ranks}-rank array: "
                            f"{(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
        ids.append(proc.stdout.strip().split()[-1])
        echo(f"submitted job array {ids[-1]}: {len(a.points)} point(s) at {a.ranks} rank(s)")
    return ids


def save_points(out: Path, spec: Spec, run_dirs: Dict[str, Path], mode: str) -> None:
    data = {"spec": str(spec.path), "base": str(spec.base), "rounds": spec.rounds, "mode": mode,
            "points": [{"name": p.name, "ranks": p.ranks, "num_clients": p.num_clients,
                        "clients_per_round": p.clients_per_round, "codec": p.codec, "model": p.model,
                        "overrides": list(p.overrides), "run_dir": str(run_dirs[p.name])}
                       for p in spec.points],
            "skipped": spec.skipped}
    (out / "points.json").write_text(json.dumps(data, indent=1))


def load_run_dirs(out: Path) -> Optional[Dict[str, Path]]:
    try:
        data = json.loads((out / "points.json").read_text())
    except (OSError, ValueError):
        return None
    return {p["name"]: Path(p["run_dir"]) for p in data.get("points", [])}
