"""benchmarks/gpu_check.sh stops at once, with one clear line and a non-zero exit, where there is
no GPU: with no driver at all, and with a driver tool but a torch that sees no CUDA device."""
import os
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


def _run(tmp_path, env_extra):
    env = dict(os.environ, GPU_CHECK_WORK=str(tmp_path / "work"), **env_extra)
    env.pop("OUT", None)
    summary = tmp_path / "gpu_check.txt"
    t0 = time.monotonic()
    out = subprocess.run(["bash", str(SCRIPT), str(summary)], capture_output=True, text=True,
                         env=env, cwd=ROOT, timeout=120)
    return out, summary, time.monotonic() - t0


@pytest.mark.skipif(HAS_GPU, reason="this machine has an NVIDIA driver: the script would run")
def test_no_driver_fails_fast_with_one_clear_line(tmp_path):
    out, summary, elapsed = _run(tmp_path, {})
    assert out.returncode == 3 and elapsed < 3
    assert "gpu_check: FAILED: no NVIDIA GPU on this machine" in out.stdout
    assert summary.read_text().splitlines()[-1].startswith("gpu_check: FAILED: no NVIDIA GPU")


@pytest.mark.slow  # imports torch in the script (~3-10 s)
@pytest.mark.skipif(torch.cuda.is_available(), reason="torch sees a GPU here")
def test_a_torch_without_cuda_fails_with_one_clear_line(tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "nvidia-smi").write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed'\nexit 9\n")
    (fake / "nvidia-smi").chmod(0o755)
    out, summary, _ = _run(tmp_path, {"PATH": f"{fake}:{os.environ['PATH']}",
                                      "PYTHON": sys.executable})
    assert out.returncode == 3
    last = summary.read_text().splitlines()[-1]
    assert last.startswith("gpu_check: FAILED: no CUDA GPU visible to ") and "is False" in last


def test_the_script_is_valid_bash():
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0
