"""Shared test helpers: run the CLI in-process or under a real `mpiexec`."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"
BIN = Path(sys.executable).parent
# Bit-identical comparisons need equal threads per rank (intra-op threading reorders float sums).
DETERMINISTIC = ["--set", "system.threads=1", "--set", "system.progress=false"]


def mpiexec_path() -> str:
    candidate = BIN / "mpiexec"
    if candidate.exists():
        return str(candidate)
    pytest.fail("mpiexec not found next to the test interpreter; run `make setup` (installs the MPICH wheel)")


def run_cli(args, nprocs: int = 1, timeout: float = 180, env_extra=None, cwd=ROOT):
    """Runs `feddm-hpc ARGS` in a subprocess (under mpiexec when nprocs > 1)."""
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)
    env.update(env_extra or {})
    if nprocs > 1:
        cmd = [mpiexec_path(), "-n", str(nprocs), sys.executable, "-m", "mpi4py", "-m", "feddm_hpc", *args]
    else:
        cmd = [sys.executable, "-m", "feddm_hpc", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env)


def final_params(run_dir: Path) -> np.ndarray:
    ckpts = sorted((Path(run_dir) / "checkpoints").glob("round-*.h5"))
    assert ckpts, f"no checkpoint in {run_dir}"
    with h5py.File(ckpts[-1], "r") as f:
        return f["global/params"][()]


def train_tiny(run_dir: Path, *extra, nprocs: int = 1) -> Path:
    """Trains configs/tiny.yaml deterministically into run_dir; fails the test if it fails."""
    out = run_cli(["train", str(TINY), "--run-dir", str(run_dir), *DETERMINISTIC, *extra], nprocs=nprocs)
    assert out.returncode == 0, out.stderr
    return run_dir


def start_long_run(run_dir: Path, rounds: int, *extra, wait_rounds: int = 2) -> subprocess.Popen:
    """Starts a long 2-rank tiny run in the background and returns once `wait_rounds` rounds
    are logged (so a signal or fault lands mid-run, after checkpoints exist)."""
    args = ["train", str(TINY), "--run-dir", str(run_dir), *DETERMINISTIC,
            "--set", f"federation.rounds={rounds}", *extra]
    cmd = [mpiexec_path(), "-n", "2", sys.executable, "-m", "mpi4py", "-m", "feddm_hpc", *args]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = Path(run_dir) / "metrics.jsonl"
    deadline = time.time() + 90
    while time.time() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < wait_rounds):
        time.sleep(0.1)
    return proc


@pytest.fixture
def tiny_config():
    return TINY
