"""benchmarks/plain_train.py trains where the simulator trains (placement.select_device with
the config's system.device, the rank bound to it) and synchronizes before reading the clock;
benchmarks/overhead.py finds mpiexec where the GPU check installs it."""
import importlib.util
import sys
import types
from pathlib import Path

import pytest
import torch

from conftest import ROOT, TINY


def _load(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class World:
    """mpi4py.MPI.COMM_WORLD of a 1-rank job, without initialising MPI in the test process."""

    rank = 0

    def Split_type(self, kind):
        return self

    def Get_size(self):
        return 1

    def Get_rank(self):
        return 0

    def Barrier(self):
        pass


@pytest.fixture
def fake_mpi(monkeypatch):
    mpi = types.SimpleNamespace(COMM_WORLD=World(), COMM_TYPE_SHARED=1)
    monkeypatch.setitem(sys.modules, "mpi4py", types.SimpleNamespace(MPI=mpi))
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_plain_loop_selects_binds_and_synchronizes_like_the_simulator(fake_mpi, monkeypatch, capsys):
    bench = _load("plain_train")
    calls = []
    real_select = bench.select_device

    def select(setting, local_rank):
        calls.append(("select", setting, local_rank))
        return real_select(setting, local_rank, cuda_available=False, device_count=0)
    monkeypatch.setattr(bench, "select_device", select)
    monkeypatch.setattr(bench, "bind_device", lambda device: calls.append(("bind", device)))
    monkeypatch.setattr(bench, "synchronize", lambda device: calls.append(("sync", device)))
    monkeypatch.setattr(sys, "argv", ["plain_train.py", "--config", str(TINY), "--steps", "2",
                                      "--set", "system.threads=1"])
    bench.main()
    assert calls == [("select", "auto", 0), ("bind", "cpu"), ("sync", "cpu"), ("sync", "cpu")]
    assert "plain loop: 2 steps on rank 0 (cpu)" in capsys.readouterr().out


def test_overhead_finds_mpiexec(monkeypatch, tmp_path):
    overhead = _load("overhead")
    monkeypatch.setenv("MPIEXEC", "/opt/mpi/bin/mpiexec")
    assert overhead.find_mpiexec(sys.executable) == "/opt/mpi/bin/mpiexec"
    monkeypatch.delenv("MPIEXEC")
    (tmp_path / "mpiexec").write_text("")
    assert overhead.find_mpiexec(str(tmp_path / "python")) == str(tmp_path / "mpiexec")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(SystemExit, match="mpiexec not found"):
        overhead.find_mpiexec(str(Path("/nonexistent/python")))
