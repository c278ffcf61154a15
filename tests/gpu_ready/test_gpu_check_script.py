"""benchmarks/gpu_check.sh fits its device loan and stops at once, with one clear line and exit 3,
where it cannot do its work: with no driver at all, with a driver tool but a torch that sees no
CUDA device, and with a carried .gpu/ folder that lacks what the steps need (checked before any
python starts). `--plan` (pure bash) lists the steps in order with budgets that add up to at most
480 s, the determinism and rank-invariance checks first and the throughput benchmarks last."""
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import ROOT

SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
HAS_GPU = shutil.which("nvidia-smi") is not None or Path("/dev/nvidiactl").exists()
BASH = shutil.which("bash")
MNIST = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
         "t10k-labels-idx1-ubyte")
INVARIANCE = {"det-a", "det-b", "det-host-store", "det-2ranks"}
MAX_TOTAL_S = 480


def _run(tmp_path, env_extra, drop=("OUT",)):
    env = dict(os.environ, GPU_CHECK_WORK=str(tmp_path / "work"), **env_extra)
    for key in (*drop, "GPU_CHECK_SKIP", "GPU_CHECK_SCALE", "GPU_CHECK_BUDGET_S", "GPU_CHECK_DEVICE"):
        if key not in env_extra:
            env.pop(key, None)
    summary = tmp_path / "gpu_check.txt"
    t0 = time.monotonic()
    out = subprocess.run([BASH, str(SCRIPT), str(summary)], capture_output=True, text=True, check=False,
                         env=env, cwd=ROOT, timeout=120)
    return out, summary, time.monotonic() - t0


def _executable(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


def _fake_gpu(tmp_path) -> Path:
    """A bin folder with an nvidia-smi (which fails, as on a broken driver): a GPU 'is present'."""
    return _executable(tmp_path / "bin" / "nvidia-smi",
                       "#!/bin/sh\necho 'NVIDIA-SMI has failed'\nexit 9\n").parent


def _carry(tmp_path, mnist=True) -> Path:
    carry = tmp_path / "carry"
    (carry / "mnist").mkdir(parents=True)
    if mnist:
        for base in MNIST:
            (carry / "mnist" / f"{base}.gz").write_bytes(b"not really MNIST")
    return carry


def _plan(env=None):
    empty = Path(env["PATH"]) if env else None
    out = subprocess.run([BASH, str(SCRIPT), "--plan"], capture_output=True, text=True, timeout=30,
                         check=False, env=env, cwd=empty or ROOT)
    assert out.returncode == 0, out.stderr
    steps = [(int(m[1]), m[2], int(m[3]), m[4]) for m in
             re.finditer(r"^\s*(\d+)\.\s+(\S+)\s+(\d+) s\s+(\w+)\s*$", out.stdout, re.MULTILINE)]
    startup = int(re.search(r"^\s+start-up\s+(\d+) s", out.stdout, re.MULTILINE)[1])
    total = int(re.search(r"^total\s+(\d+) s", out.stdout, re.MULTILINE)[1])
    return out.stdout, steps, startup, total


@pytest.mark.skipif(HAS_GPU, reason="this machine has an NVIDIA driver: the script would run")
def test_no_driver_fails_fast_with_one_clear_line(tmp_path):
    out, summary, elapsed = _run(tmp_path, {})
    assert out.returncode == 3 and elapsed < 3
    assert "gpu_check: FAILED: no NVIDIA GPU on this machine" in out.stdout
    assert summary.read_text().splitlines()[-1].startswith("gpu_check: FAILED: no NVIDIA GPU")


@pytest.mark.slow  # imports torch in the script (~3-10 s)
@pytest.mark.skipif(torch.cuda.is_available(), reason="torch sees a GPU here")
def test_a_torch_without_cuda_fails_with_one_clear_line(tmp_path):
    fake = _fake_gpu(tmp_path)
    out, summary, _ = _run(tmp_path, {"PATH": f"{fake}:{os.environ['PATH']}",
                                      "PYTHON": sys.executable,
                                      "GPU_CHECK_CARRY_DIR": str(_carry(tmp_path))})
    assert out.returncode == 3
    last = summary.read_text().splitlines()[-1]
    assert last.startswith("gpu_check: FAILED: no CUDA GPU visible to ") and "is False" in last


def test_the_script_is_valid_bash():
    assert subprocess.run([BASH, "-n", str(SCRIPT)], check=False).returncode == 0


def test_plan_needs_no_python_gpu_or_carried_files_and_fits_480_s(tmp_path):
    empty = tmp_path / "empty"        # PATH with nothing on it: no python, no nvidia-smi, no .gpu
    empty.mkdir()
    text, steps, startup, total = _plan({"PATH": str(empty)})
    assert [n for n, *_ in steps] == list(range(1, len(steps) + 1)), text
    names = [name for _, name, _, _ in steps]
    assert len(set(names)) == len(names) and INVARIANCE <= set(names)
    assert {"sync-debug", "evaluate-cuda", "evaluate-cpu", "precision", "client-groups"} <= set(names)
    assert all(budget > 4 for *_, budget, _ in steps) and startup > 0
    assert startup + sum(budget for *_, budget, _ in steps) == total <= MAX_TOTAL_S, text
    assert f"GPU_CHECK_BUDGET_S default {MAX_TOTAL_S}" in text


def test_plan_runs_determinism_and_invariance_first_and_throughput_last():
    text, steps, _, _ = _plan()
    order = {"invariance": 0, "correctness": 1, "throughput": 2}
    kinds = [kind for *_, kind in steps]
    assert set(kinds) == set(order), text
    assert kinds == sorted(kinds, key=order.get), text        # grouped, in this order
    assert steps[0][1] == "det-a"                             # the first run proves the device is used
    first_throughput = kinds.index("throughput")
    assert all(i < first_throughput for i, (_, name, _, kind) in enumerate(steps) if name in INVARIANCE)
    assert {name for _, name, _, kind in steps if kind == "invariance"} == INVARIANCE
    # The throughput steps are the benchmarks and the default-kernel quickstart runs.
    assert {name for _, name, _, kind in steps if kind == "throughput"} >= {
        "quickstart-1rank", "quickstart-2ranks", "precision", "client-groups", "overhead"}


def test_every_planned_step_has_its_function():
    text = SCRIPT.read_text()
    table = re.search(r"^STEPS=\((.*?)^\)", text, re.DOTALL | re.MULTILINE)[1]
    entries = re.findall(r'^\s*"(\S+) (\d+) (\w+) (\w+)"', table, re.MULTILINE)
    _, steps, _, _ = _plan()
    assert [(name, int(b), kind) for name, b, kind, _ in entries] == [s[1:] for s in steps]
    for *_, fn in entries:
        assert re.search(rf"^{fn}\(\) \{{", text, re.MULTILINE), f"no function {fn} for the STEPS table"


@pytest.mark.parametrize("carry", ["missing", "empty"])
def test_missing_carried_files_stop_before_python_naming_them(tmp_path, carry):
    marker = tmp_path / "python-started"
    python = _executable(tmp_path / "py" / "python", f"#!/bin/sh\ntouch {marker}\nexit 1\n")
    folder = tmp_path / "carry"
    if carry == "empty":
        folder.mkdir()
    # Only the fake GPU and the system's tools on PATH; the fake python has no mpiexec beside it.
    path = f"{_fake_gpu(tmp_path)}:/usr/bin:/bin"
    no_mpiexec = shutil.which("mpiexec", path=path) is None
    out, summary, elapsed = _run(tmp_path, {"PATH": path, "PYTHON": str(python),
                                            "GPU_CHECK_CARRY_DIR": str(folder)}, drop=("OUT", "MPIEXEC"))
    assert out.returncode == 3 and elapsed < 3, out.stdout + out.stderr
    assert not marker.exists(), "python started before the carried files were checked"
    failed = [line for line in out.stdout.splitlines() if line.startswith("gpu_check: FAILED")]
    assert len(failed) == 1 and summary.read_text().splitlines()[-1] == failed[0]
    assert "--prepare" in failed[0] and f"GPU_CHECK_CARRY_DIR={folder}" in failed[0]
    if carry == "missing":
        assert f"no carried folder {folder}" in failed[0]
    else:
        assert all(f"mnist/{base}.gz" in failed[0] for base in MNIST), failed[0]
        if no_mpiexec:
            assert "wheels/mpich-*.whl" in failed[0] and "wheels/mpi4py-*.whl" in failed[0]


def test_a_missing_lenet_cache_only_warns(tmp_path):
    # MNIST carried, an mpiexec at hand (so no wheels needed), no LeNet: the script goes on to its
    # torch probe, here a fake python that reports no CUDA.
    python = _executable(tmp_path / "py" / "python", "#!/bin/sh\ncat >/dev/null\n"
                         "echo 'AssertionError: torch.cuda.is_available() is False'\nexit 1\n")
    out, summary, elapsed = _run(tmp_path, {
        "PATH": f"{_fake_gpu(tmp_path)}:/usr/bin:/bin", "PYTHON": str(python), "MPIEXEC": "/bin/true",
        "GPU_CHECK_CARRY_DIR": str(_carry(tmp_path))})
    assert out.returncode == 3 and elapsed < 3, out.stdout + out.stderr
    assert "warning: no cached LeNet" in out.stdout
    assert "carried files missing" not in out.stdout
    assert summary.read_text().splitlines()[-1].startswith("gpu_check: FAILED: no CUDA GPU visible to ")


def test_steps_over_the_time_left_are_skipped_and_reported(tmp_path):
    # A fake python passes the probe (a dry run on the CPU) and fails the MPI probe; with a total
    # budget below every step's, each step is skipped for time and the summary says so.
    python = _executable(tmp_path / "py" / "python",
                         "#!/bin/sh\ncat >/dev/null\necho 'torch 0.0, dry run on cpu'\n")
    out, summary, elapsed = _run(tmp_path, {
        "PATH": "/usr/bin:/bin", "PYTHON": str(python), "MPIEXEC": "/bin/false", "GPU_CHECK_DEVICE": "cpu",
        "GPU_CHECK_BUDGET_S": "15", "GPU_CHECK_CARRY_DIR": str(_carry(tmp_path))})
    assert out.returncode == 0 and elapsed < 5, out.stdout + out.stderr
    text = summary.read_text()
    _, steps, _, _ = _plan()
    for _, name, budget, _ in steps:
        assert f"SKIP {name}: out of time (" in text and f"its budget is {budget}s)" in text
    assert "PASS" not in text and "FAIL " not in text
    skipped = re.search(r"^skipped for lack of time \(budget 15s\): (.*)$", text, re.MULTILINE)
    assert skipped and skipped[1].split() == [name for _, name, _, _ in steps]
