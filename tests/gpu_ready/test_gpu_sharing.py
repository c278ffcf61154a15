"""Ranks sharing a GPU: refused with one clear error (exit 2) in an exclusive compute mode,
a warning otherwise. The compute-mode query (nvidia-smi) and torch.cuda are mocked."""
import json
import subprocess

import numpy as np
import pytest
import torch

from feddm_hpc.comm import SerialCommunicator
from feddm_hpc.errors import UserError
from feddm_hpc.federation import cuda_env
from feddm_hpc.federation.cuda_env import check_gpu_sharing, rank_report, sharing_verdict

UUID_A = "2c6b1e7a-0000-4000-8000-00000000000a"
UUID_B = "9f4d3c2b-0000-4000-8000-00000000000b"
KEY_A, KEY_B = cuda_env._uuid_key(UUID_A), cuda_env._uuid_key(UUID_B)


def report(rank, gpu=UUID_A, mode="Default", mps=False, device="cuda:0", host="node1"):
    return {"rank": rank, "host": host, "device": device, "gpu": gpu, "mode": mode, "mps": mps}


def test_two_ranks_on_one_exclusive_gpu_are_refused():
    error, _ = sharing_verdict([report(0, mode="Exclusive_Process"), report(1, mode="Exclusive_Process")])
    assert error.startswith("system.device: ranks 0,1 share GPU 2c6b1e7a on node1")
    assert "Exclusive_Process" in error and "\n" not in error
    for fix in ("one rank per GPU", "CUDA MPS", "DEFAULT compute mode"):
        assert fix in error


def test_one_rank_per_gpu_is_fine_in_exclusive_mode():
    # --gpus-per-task=1: every rank sees "cuda:0", but they are different GPUs (UUIDs).
    error, notes = sharing_verdict([report(0, UUID_A, "Exclusive_Process"),
                                    report(1, UUID_B, "Exclusive_Process")])
    assert error is None and notes == []


def test_mps_lets_ranks_share_an_exclusive_gpu():
    error, notes = sharing_verdict([report(0, mode="Exclusive_Process", mps=True),
                                    report(1, mode="Exclusive_Process", mps=True)])
    assert error is None and notes == []


def test_default_mode_sharing_warns_about_time_slicing():
    error, notes = sharing_verdict([report(0), report(1), report(2, UUID_B)])
    assert error is None
    assert len(notes) == 1 and "ranks 0,1 share GPU" in notes[0] and "time-slice" in notes[0]


def test_unknown_mode_or_gpu_only_warns():
    error, notes = sharing_verdict([report(0, mode=None), report(1, mode=None)])
    assert error is None and "could not be read" in notes[0]
    error, notes = sharing_verdict([report(0, gpu=None), report(1, gpu=None)])
    assert error is None and "could not identify" in notes[0]
    assert sharing_verdict([report(0, device="cpu", gpu=None), report(1, device="cpu", gpu=None)]) \
        == (None, [])


def test_compute_modes_from_nvidia_smi(monkeypatch):
    out = f"GPU-{UUID_A.upper()}, Exclusive_Process\nGPU-{UUID_B}, Default\n"
    seen = {}

    def fake_run(cmd, **kw):
        seen.update(cmd=cmd, timeout=kw.get("timeout"))
        return subprocess.CompletedProcess(cmd, 0, out, "")
    monkeypatch.setattr(subprocess, "run", fake_run)
    assert cuda_env.query_compute_modes() == {KEY_A: "Exclusive_Process", KEY_B: "Default"}
    assert KEY_A == "2c6b1e7a00004000800000000000000a"
    assert seen["cmd"][0] == "nvidia-smi" and 0 < seen["timeout"] <= 10


@pytest.mark.parametrize("outcome", [FileNotFoundError("nvidia-smi"),
                                     subprocess.TimeoutExpired("nvidia-smi", 5), 9])
def test_a_failed_query_is_unknown(monkeypatch, outcome):
    def fake_run(cmd, **kw):
        if isinstance(outcome, Exception):
            raise outcome
        return subprocess.CompletedProcess(cmd, outcome, "", "NVML error")
    monkeypatch.setattr(subprocess, "run", fake_run)
    assert cuda_env.query_compute_modes() is None


class Props:
    uuid = UUID_A


def test_rank_report_matches_its_gpu_by_uuid(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: Props())
    r = rank_report(1, "cuda:0", lambda: {KEY_A: "Exclusive_Process"},
                    env={"CUDA_MPS_PIPE_DIRECTORY": str(tmp_path)})
    assert (r["gpu"], r["mode"], r["mps"]) == (KEY_A, "Exclusive_Process", False)
    (tmp_path / "control").write_text("")
    assert rank_report(1, "cuda:0", lambda: None, env={"CUDA_MPS_PIPE_DIRECTORY": str(tmp_path)})["mps"]
    assert rank_report(0, "cpu", lambda: 1 / 0)["gpu"] is None  # a CPU rank queries nothing


class TwoRankRoot(SerialCommunicator):
    """Rank 0 of 2 ranks: the other rank's report arrives with the gather."""
    size = 2

    def __init__(self, other):
        self.other = np.frombuffer(json.dumps(other).encode(), dtype=np.uint8)

    def gather_bytes(self, payload, root=0):
        return [np.asarray(payload, dtype=np.uint8), self.other]


class Log:
    def __init__(self):
        self.lines = []

    def info(self, message):
        self.lines.append(message)


def test_start_up_check_ends_every_rank_with_one_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: Props())
    comm = TwoRankRoot(report(1, KEY_A, mode="Exclusive_Process"))
    with pytest.raises(UserError, match=r"^system.device: ranks 0,1 share GPU .*Exclusive_Process"):
        check_gpu_sharing(comm, "cuda:0", Log(), query=lambda: {KEY_A: "Exclusive_Process"})


def test_start_up_check_logs_time_slicing_once(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: Props())
    log = Log()
    check_gpu_sharing(TwoRankRoot(report(1, KEY_A)), "cuda:0", log, query=lambda: {KEY_A: "Default"})
    assert len(log.lines) == 1 and log.lines[0].startswith("warning: ranks 0,1 share GPU")


def test_train_refuses_a_shared_exclusive_gpu_with_exit_2_before_any_cuda_context(
        monkeypatch, tmp_path, capsys):
    from feddm_hpc.cli import train
    from feddm_hpc.cli.main import main

    from conftest import TINY

    bound = []
    comm = TwoRankRoot(report(1, KEY_A, mode="Exclusive_Process", host="gpu7"))
    comm.local_size = 2
    monkeypatch.setattr(train, "make_comm", lambda: comm)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: Props())
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: bound.append(index))
    monkeypatch.setattr(cuda_env, "query_compute_modes", lambda: {KEY_A: "Exclusive_Process"})
    code = main(["train", str(TINY), "--run-dir", str(tmp_path / "run"), "--set", "system.progress=false"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("error: system.device: ranks 0,1 share GPU 2c6b1e7a on ")
    assert bound == []  # refused before torch.cuda.set_device (which makes a context)
