"""The SLURM batch scripts (jobs/slurm/*.sbatch) on a real one-node Slurm 22.05.

The session fixture `slurm` (tests/conftest.py, shared with tests/study/test_study_slurm.py)
installs Debian's slurmctld/slurmd/slurm-client where they are missing and that is possible
(root + apt-get), runs both daemons on a scratch slurm.conf and stops them at the end of the
session (tests/slurm_cluster.py). Tests skip only where Slurm cannot be installed; a failed
install or start where it should work is a failure.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from slurm_cluster import SlurmCluster

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"
SLURM_JOBS = ROOT / "jobs" / "slurm"
BIN = Path(sys.executable).parent
QUIET = "--set system.progress=false"
# Bit-identical comparisons need one thread per rank (intra-op threading reorders float sums).
LONG = f"{QUIET} --set system.threads=1 --set federation.rounds=10"


def job_env(**values) -> dict:
    """What the batch scripts read: the venv's python, the pip MPICH on PATH, our variables."""
    env = {"PYTHON": sys.executable, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "CONFIG": str(TINY)}
    env.update({k: str(v) for k, v in values.items()})
    return env


def submit(slurm: SlurmCluster, script: str, out: Path, args=(), **values) -> str:
    return slurm.sbatch([*args, "--export=ALL", f"--output={out}", str(SLURM_JOBS / script)],
                        env_extra=job_env(**values), cwd=ROOT)


def read_text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else f"({path} missing)"


def metrics(run_dir: Path) -> list:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def assert_complete_run(run_dir: Path, rounds: int, log: str) -> None:
    assert (run_dir / "config.yaml").is_file(), log
    assert [m["round"] for m in metrics(run_dir)] == list(range(rounds)), log
    assert sorted((run_dir / "checkpoints").glob("round-*.h5")), log
    assert sorted((run_dir / "samples").glob("*.png")), log


def assert_completed(info: dict, log: str) -> None:
    assert info.get("JobState") == "COMPLETED" and info.get("ExitCode") == "0:0", f"{info}\n{log}"


def final_params(run_dir: Path) -> np.ndarray:
    last = sorted((run_dir / "checkpoints").glob("round-*.h5"))[-1]
    with h5py.File(last, "r") as f:
        return f["global/params"][()]


def test_slurm_scripts_parse_and_carry_the_protocol():
    """No cluster needed: every launcher parses (and passes shellcheck where it is installed)."""
    scripts = sorted(SLURM_JOBS.glob("*.sbatch"))
    assert {p.name for p in scripts} >= {"train.sbatch", "multinode.sbatch", "sweep.sbatch"}
    for path in [*scripts, ROOT / "jobs" / "mpiexec" / "train.sh"]:
        proc = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
        assert proc.returncode == 0, f"{path}: {proc.stderr}"
    for path in scripts:
        text = path.read_text()
        # study.sbatch runs `feddm-hpc study --task`, which starts the srun steps itself
        launch = (("-m feddm_hpc study",) if path.name == "study.sbatch" else
                  ('srun --mpi="$SRUN_MPI"', "-m mpi4py -m feddm_hpc train"))
        for needle in ("#SBATCH --requeue", "#SBATCH --signal=B:USR1@", "trap 'forward USR1' USR1",
                       *launch, "scontrol requeue"):
            assert needle in text, f"{path.name} lacks {needle!r}"
    if shutil.which("shellcheck"):
        proc = subprocess.run(["shellcheck", *map(str, scripts), str(ROOT / "jobs/mpiexec/train.sh")],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout


@pytest.mark.slurm
def test_slurm_train_and_multinode_scripts(slurm, tmp_path):
    """train.sbatch with 2 tasks; multinode.sbatch squeezed onto our one node (same body)."""
    jobs = {}
    for script, args in (("train.sbatch", ["--ntasks=2"]),
                         ("multinode.sbatch", ["--nodes=1", "--ntasks-per-node=2"])):
        run_dir, out = tmp_path / script, tmp_path / f"{script}.out"
        jobs[script] = (submit(slurm, script, out, args, RUN_DIR=run_dir, EXTRA=QUIET), run_dir, out)
    for script, (job_id, run_dir, out) in jobs.items():
        info = slurm.wait_done(job_id, timeout=120)
        log = read_text(out)
        assert_completed(info, log)
        assert info["NumTasks"] == "2", info
        assert_complete_run(run_dir, 2, log)
        assert "step exit 0" in log


@pytest.mark.slurm
def test_slurm_sweep_array(slurm, tmp_path):
    root = tmp_path / "sweep"
    job_id = submit(slurm, "sweep.sbatch", tmp_path / "sweep-%a.out", ["--array=0-1"],
                    RUN_ROOT=root, EXTRA=QUIET)
    uplinks = {0: ("none", None), 1: ("quant", 8)}  # the first two lines of the script's GRID
    for task, (uplink, bits) in uplinks.items():
        info = slurm.wait_done(f"{job_id}_{task}", timeout=120)
        log = read_text(tmp_path / f"sweep-{task}.out")
        assert_completed(info, log)
        run_dir = root / f"task-{task}"
        assert_complete_run(run_dir, 2, log)
        compression = yaml.safe_load((run_dir / "config.yaml").read_text())["compression"]
        assert compression["uplink"] == uplink, compression
        if bits is not None:
            assert compression["bits"] == bits, compression


@pytest.mark.slurm
def test_slurm_sweep_rejects_task_without_grid_line(slurm, tmp_path):
    grid = tmp_path / "grid.txt"
    grid.write_text("# one point only\n--set seed=1\n\n")
    job_id = submit(slurm, "sweep.sbatch", tmp_path / "bad.out", ["--array=1"],
                    RUN_ROOT=tmp_path / "bad", SWEEP_FILE=grid)
    info = slurm.wait_done(f"{job_id}_1", timeout=60)
    assert info.get("ExitCode") == "2:0", info
    assert "no grid line" in read_text(tmp_path / "bad.out")


@pytest.mark.slurm
@pytest.mark.mpi
def test_slurm_preemption_requeue_resumes_bit_identical(slurm, tmp_path):
    """USR1 to the batch shell -> checkpoint, exit 3, requeue; the rerun resumes and ends with
    the same parameters as an uninterrupted run."""
    run_dir, out = tmp_path / "run", tmp_path / "job.out"
    job_id = submit(slurm, "train.sbatch", out, ["--ntasks=2"], RUN_DIR=run_dir, EXTRA=LONG)
    deadline = time.monotonic() + 90
    while len(metrics(run_dir)) < 2:
        assert time.monotonic() < deadline, f"no progress in 90 s\n{read_text(out)}"
        assert slurm.job(job_id).get("JobState") in ("PENDING", "RUNNING"), read_text(out)
        time.sleep(0.2)
    slurm.run(["scancel", "--signal=USR1", "--batch", job_id])
    # The script requeues itself; Slurm then holds the job back (BeginTime) for ~2 minutes.
    info = slurm.wait_state(job_id, {"PENDING"}, timeout=60)
    assert info["Restarts"] == "1", info
    stopped_at = len(metrics(run_dir))
    assert 2 <= stopped_at < 10, read_text(out)
    # Slurm revokes the job's credential when the first run ends, with one-second resolution: a
    # rerun started in that same second is killed ("Job credential revoked"). Real requeues wait
    # ~2 minutes; we wait 2 s before lifting the hold.
    time.sleep(2)
    slurm.run(["scontrol", "update", f"jobid={job_id}", "StartTime=now"])

    # The uninterrupted reference, on the same 2 ranks and settings, while the job reruns.
    ref_dir = tmp_path / "reference"
    ref = subprocess.run([str(BIN / "mpiexec"), "-n", "2", sys.executable, "-m", "mpi4py", "-m",
                          "feddm_hpc", "train", str(TINY), "--run-dir", str(ref_dir), *LONG.split()],
                         capture_output=True, text=True, timeout=180, cwd=ROOT,
                         env={k: v for k, v in os.environ.items()
                              if not k.startswith("SLURM_") and k != "OMP_NUM_THREADS"})
    assert ref.returncode == 0, ref.stderr

    info = slurm.wait_done(job_id, timeout=150)
    log = read_text(out)
    assert_completed(info, log)
    assert "got SIGUSR1" in log and "step exit 3" in log and "requeueing job" in log, log
    assert "restart 1 " in log and "resumed from" in log, log
    assert_complete_run(run_dir, 10, log)
    np.testing.assert_array_equal(final_params(run_dir), final_params(ref_dir))
