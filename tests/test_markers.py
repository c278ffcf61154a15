"""The marker checks of tests/conftest.py fail what they should: a test slower than the limit
without the slow marker (its call or its module fixture's setup), mpiexec without the mpi marker,
the slurm fixture without the slurm marker; mpi and slurm imply slow. Run on a throwaway test
file under a copy of conftest.py and pytest.ini, in a subprocess."""
import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT

SAMPLE = '''
import time

import pytest

from conftest import mpiexec_path


def test_fast_but_sleeps():
    time.sleep(0.4)


@pytest.mark.slow
def test_slow_sleeps():
    time.sleep(0.4)


@pytest.mark.mpi
def test_mpi_marked():
    assert mpiexec_path()


def test_unmarked_mpiexec():
    mpiexec_path()


@pytest.fixture
def slurm():
    return 1


def test_unmarked_slurm(slurm):
    pass


@pytest.mark.slurm
def test_marked_slurm(slurm):
    pass


@pytest.fixture(scope="module")
def trains():
    time.sleep(0.4)


def test_uses_a_slow_fixture(trains):
    pass
'''


def _pytest(tmp_path, *args):
    env = dict(os.environ, FEDDM_TEST_SLOW_LIMIT_S="0.2")
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:randomly", *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.slow  # two pytest subprocesses (~2 s of CPU, far more wall time on a loaded machine)
def test_the_marker_checks_fail_what_they_should(tmp_path):
    (tmp_path / "tests").mkdir()
    shutil.copy(ROOT / "pytest.ini", tmp_path / "pytest.ini")
    shutil.copy(ROOT / "tests" / "conftest.py", tmp_path / "tests" / "conftest.py")
    (tmp_path / "tests" / "test_sample.py").write_text(SAMPLE)
    out = _pytest(tmp_path)
    lines = out.stdout.splitlines()

    def outcome(name):
        return [line.split()[0] for line in lines if line.startswith(("PASSED", "FAILED", "ERROR"))
                and f"::{name}" in line]

    assert outcome("test_slow_sleeps") == ["PASSED"], out.stdout
    assert outcome("test_mpi_marked") == ["PASSED"], out.stdout
    assert outcome("test_marked_slurm") == ["PASSED"], out.stdout
    assert outcome("test_fast_but_sleeps") == ["FAILED"], out.stdout
    assert outcome("test_unmarked_mpiexec") == ["FAILED"], out.stdout
    assert outcome("test_unmarked_slurm") == ["ERROR"], out.stdout
    assert outcome("test_uses_a_slow_fixture") == ["ERROR"], out.stdout
    assert "test_fast_but_sleeps: it took" in out.stdout and "not marked slow" in out.stdout
    assert "test_uses_a_slow_fixture: its setup (fixtures) took" in out.stdout
    assert "test_unmarked_mpiexec launches mpiexec but is not marked mpi" in out.stdout
    assert "test_unmarked_slurm uses the slurm fixture but is not marked slurm" in out.stdout

    fast = _pytest(tmp_path, "--collect-only", "-m", "not slow")
    assert "test_mpi_marked" not in fast.stdout and "test_marked_slurm" not in fast.stdout
    assert "test_fast_but_sleeps" in fast.stdout
