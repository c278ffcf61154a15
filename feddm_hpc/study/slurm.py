"""`feddm-hpc study SPEC --slurm`: one Slurm job array, one task per run not yet complete (one
array per (ranks, threads) of the cells: an array has one task size).

Task i runs jobs/slurm/study.sbatch, which runs `feddm-hpc study SPEC --out OUT --task i`: the
same train / resume / evaluate decisions as the local pool, its steps under `srun` on the
task's ranks (--ntasks = the spec's ranks, --cpus-per-task = its threads), with the batch
scripts' preemption protocol (USR1 before the time limit -> checkpoint -> requeue -> resume).
The sbatch command is also written to OUT/slurm/submit.sh (with the task -> run map), so it can
be submitted by hand where this machine has no sbatch.
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List

from feddm_hpc.errors import UserError
from feddm_hpc.study.pool import _check_configs
from feddm_hpc.study.runs import plan_runs
from feddm_hpc.study.spec import Spec

ROOT = Path(__file__).resolve().parents[2]
STUDY_SBATCH = ROOT / "jobs" / "slurm" / "study.sbatch"


def array_ranges(indices: List[int]) -> str:
    """[0, 1, 2, 5, 7, 8] -> '0-2,5,7-8'"""
    parts, start = [], None
    for i, x in enumerate(indices):
        if start is None:
            start = x
        if i + 1 == len(indices) or indices[i + 1] != x + 1:
            parts.append(str(start) if start == x else f"{start}-{x}")
            start = None
    return ",".join(parts)


def sbatch_command(spec: Spec, out: Path, indices: List[int], ranks: int, threads) -> tuple:
    folder = out / "slurm"
    limit = f"%{spec.slurm.max_parallel}" if spec.slurm.max_parallel else ""
    cmd = ["sbatch", f"--array={array_ranges(indices)}{limit}", f"--ntasks={ranks}",
           f"--cpus-per-task={threads or 1}", f"--job-name=study-{spec.name}",
           f"--output={folder.resolve() / 'task-%a.out'}", *spec.slurm.sbatch_args, str(STUDY_SBATCH)]
    env = {"SPEC": str(spec.path.resolve()), "OUT": str(out.resolve()),
           "PYTHON": spec.slurm.python or sys.executable}
    return cmd, env


def submit(spec: Spec, out: Path, echo=print) -> int:
    if not STUDY_SBATCH.is_file():
        raise UserError(f"{STUDY_SBATCH}: batch script not found (needed by --slurm)")
    states = _check_configs(spec, plan_runs(spec, out))
    todo = [s.plan.index for s in states if s.state != "done" and s.running is None]
    for s in states:
        if s.state != "done" and s.running is not None:
            echo(f"{s.plan.name}: left out, it may be running (pid {s.running.get('pid')} on "
                 f"{s.running.get('host')} since {s.running.get('since')}); if nothing runs it, "
                 f"delete {s.plan.run_dir / '.running'} and submit again")
    if not todo:
        echo(f"study {spec.name}: nothing to submit ({len(states)} run(s) complete or running)")
        return 0
    shapes: dict = {}
    for s in states:
        if s.plan.index in todo:
            cell = spec.cell(s.plan.cell)
            shapes.setdefault((cell.ranks, cell.threads), []).append(s.plan.index)
    commands = [sbatch_command(spec, out, idx, r, t) for (r, t), idx in shapes.items()]
    folder = out / "slurm"
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "submit.sh"
    lines = ["#!/bin/bash", f"# feddm-hpc study {spec.path} --slurm: array task i = run i:"]
    lines += [f"#   {s.plan.index}: {s.plan.name} ({s.state})" for s in states if s.plan.index in todo]
    lines += ["set -eu"] + [" ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()) + " "
                            + shlex.join(cmd) for cmd, env in commands]
    script.write_text("\n".join(lines) + "\n")
    script.chmod(0o755)
    if shutil.which("sbatch") is None:
        raise UserError(f"sbatch: not found on PATH; submit {script} on a Slurm login node")
    for (ranks, threads), (cmd, env) in zip(shapes, commands):
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env})
        if proc.returncode != 0:
            raise UserError(f"sbatch failed: {(proc.stderr or proc.stdout).strip()}")
        job = proc.stdout.strip().split()[-1] if proc.stdout.strip() else "?"
        echo(f"submitted job array {job}: {len(shapes[(ranks, threads)])} run(s) of study "
             f"{spec.name} at {ranks} rank(s) x {threads or 1} thread(s)")
    echo(f"logs {folder}/task-<i>.out; progress: feddm-hpc study {spec.path} --status --out {out}")
    return 0
