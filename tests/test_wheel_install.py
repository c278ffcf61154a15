"""A non-editable install ships the whole package: the wheel built from this tree, installed
into a fresh virtual environment that cannot see the source tree, validates, trains (2 ranks,
with in-training evaluation) and evaluates.

Isolation: the wheel is built from a temporary copy of setup.py, pyproject.toml and feddm_hpc/
(the build's build/ and *.egg-info stay out of the repository). The fresh venv gets the test
venv's dependencies (torch, mpi4py, h5py, ...) through a .pth file holding one path line: Python
appends that directory to sys.path but runs none of the .pth files inside it, so the editable
install's finder (which maps feddm_hpc to this tree) never loads; the isolation test checks exactly
that. Every command runs from tmp_path with PYTHONPATH unset. No network: --no-build-isolation, --no-index.
"""
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from conftest import DETERMINISTIC, ROOT, TINY, mpiexec_path

QUICK_EXTRACTOR = ["--extractor-epochs", "1", "--extractor-train-subset", "500"]   # as in training


def _run(cmd, cwd, env, timeout=240):
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=timeout)


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    """(fresh venv's python, its bin folder, a work folder holding tiny.yaml, the env to run in)."""
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"
    shutil.copytree(ROOT / "feddm_hpc", src / "feddm_hpc",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("setup.py", "pyproject.toml"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, src / name)
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "OMP_NUM_THREADS", "VIRTUAL_ENV", "PYTHONHOME")}
    # FEDDM_HPC_CACHE stays the session's (tests/conftest.py): the LeNet of QUICK_EXTRACTOR (and of
    # the in-training evaluation, the same settings) is trained once per session, not per venv.
    env["MPLCONFIGDIR"] = str(base / "mpl")
    # mpi4py looks for the MPICH wheel's libmpi under sys.prefix/lib: point it at the test venv's.
    if any(Path(sys.prefix, "lib").glob("libmpi.so*")) and "MPI4PY_LIBMPI" not in env:
        env["MPI4PY_LIBMPI"] = str(Path(sys.prefix, "lib"))   # a folder: tries libmpi.so, .so.12, ...
    out = _run([sys.executable, "-m", "pip", "wheel", src, "--no-deps", "--no-build-isolation",
                "--no-index", "-w", base / "dist"], base, env)
    assert out.returncode == 0, out.stdout + out.stderr
    (wheel,) = (base / "dist").glob("feddm_hpc-*.whl")

    out = _run([sys.executable, "-m", "venv", "--without-pip", base / "fresh"], base, env)
    assert out.returncode == 0, out.stderr
    py = base / "fresh" / "bin" / "python"
    # Install before the dependencies become visible, so pip sees an empty environment.
    out = _run([sys.executable, "-m", "pip", "--python", py, "install", "--no-deps", "--no-index",
                wheel], base, env)
    assert out.returncode == 0, out.stdout + out.stderr
    site = _run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], base, env)
    (Path(site.stdout.strip()) / "_test_venv_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    work = base / "work"
    work.mkdir()
    shutil.copy(TINY, work / "tiny.yaml")
    return py, py.parent, work, env


def test_every_folder_of_modules_is_a_regular_package():
    """find_packages skips a folder without __init__.py: its modules would be missing from a wheel."""
    missing = [str(d.relative_to(ROOT)) for d in (ROOT / "feddm_hpc").rglob("*")
               if d.is_dir() and any(d.glob("*.py")) and not (d / "__init__.py").exists()]
    assert not missing, f"no __init__.py (left out of a wheel): {missing}"


@pytest.mark.slow
def test_installed_package_is_complete_and_isolated(fresh):
    py, _, work, env = fresh
    check = f"""
import importlib.util, sys, sysconfig
from pathlib import Path
root, venv = Path({str(ROOT)!r}).resolve(), Path(sys.prefix).resolve()
site = sysconfig.get_paths()['purelib']
assert not any('feddm_hpc' in m or 'editable' in m for m in sys.modules), sorted(sys.modules)
# without the wheel's copy nothing provides feddm_hpc: the test venv's finder did not load
sys.path.remove(site)
assert importlib.util.find_spec('feddm_hpc') is None, importlib.util.find_spec('feddm_hpc')
assert importlib.util.find_spec('torch') is not None and importlib.util.find_spec('mpi4py') is not None
sys.path.append(site)
import feddm_hpc, feddm_hpc.evaluation
for mod in (feddm_hpc, feddm_hpc.evaluation):
    path = Path(mod.__file__).resolve()
    assert path.is_relative_to(venv) and not path.is_relative_to(root), (mod.__name__, path)
"""
    out = _run([py, "-c", check], work, env)
    assert out.returncode == 0, out.stderr


@pytest.mark.slow
@pytest.mark.mpi
def test_installed_console_script_validates_trains_and_evaluates(fresh):
    py, bin_dir, work, env = fresh
    out = _run([bin_dir / "feddm-hpc", "validate", "tiny.yaml"], work, env)
    assert out.returncode == 0, out.stdout + out.stderr

    sets = ["--set", "federation.rounds=2", "--set", "evaluation.every=2",
            "--set", "evaluation.num_samples=16", "--set", "evaluation.extractor_epochs=1",
            "--set", "evaluation.extractor_max_train=500"]
    out = _run([mpiexec_path(), "-n", "2", py, "-m", "mpi4py", "-m", "feddm_hpc", "train", "tiny.yaml",
                "--run-dir", "run", *DETERMINISTIC, *sets], work, env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert (work / "run" / "eval" / "round-000001.json").is_file(), out.stderr   # in-training evaluation
    ckpt = max((work / "run" / "checkpoints").glob("round-*.h5"))

    out = _run([bin_dir / "feddm-hpc", "evaluate", ckpt, "--num-samples", "16", *QUICK_EXTRACTOR,
                "--no-memorization", "--set", "system.threads=1"], work, env)
    assert out.returncode == 0, out.stdout + out.stderr
    result = json.loads(out.stdout)
    assert result["num_samples"] == 16 and result["fd"] > 0 and "kid" in result
