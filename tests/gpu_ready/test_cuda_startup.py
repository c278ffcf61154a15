"""Start-up on CUDA without a GPU: torch.cuda is mocked, so these run on any machine.

Each rank must make its own GPU current (torch.cuda.set_device) before any CUDA work, and
system.deterministic must set torch's flags before it."""
import os

import pytest
import torch

from feddm_hpc.comm import SerialCommunicator
from feddm_hpc.config import Config, load_config
from feddm_hpc.config.sections import SystemConfig
from feddm_hpc.errors import ConfigError
from feddm_hpc.federation import cuda_env
from feddm_hpc.federation.placement import bind_device
from feddm_hpc.federation.setup import prepare_device

from conftest import TINY


class Log:
    def __init__(self):
        self.lines = []

    def info(self, message):
        self.lines.append(message)

    rank_warn = info


class LocalComm(SerialCommunicator):
    """One rank of a node: the local rank decides the GPU."""

    def __init__(self, local_rank, local_size):
        self.local_rank, self.local_size = local_rank, local_size


@pytest.fixture
def fake_cuda(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: calls.append(index))
    return calls


@pytest.fixture
def torch_flags():
    """Global torch state these tests change, restored afterwards."""
    b = torch.backends
    saved = (torch.are_deterministic_algorithms_enabled(), b.cudnn.benchmark, b.cudnn.deterministic,
             b.cuda.matmul.allow_tf32, b.cudnn.allow_tf32, torch.get_num_threads(),
             os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
    yield
    det, bench, cudnn_det, mm, conv, threads, cublas = saved
    torch.use_deterministic_algorithms(det)
    b.cudnn.benchmark, b.cudnn.deterministic = bench, cudnn_det
    b.cuda.matmul.allow_tf32, b.cudnn.allow_tf32 = mm, conv
    torch.set_num_threads(threads)
    if cublas is None:
        os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
    else:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = cublas


def test_bind_device_makes_the_ranks_gpu_current(fake_cuda):
    bind_device("cuda:1")
    bind_device("cuda")
    bind_device("cpu")
    assert fake_cuda == [1, 0]


@pytest.mark.parametrize("local_rank, expected", [(0, 0), (1, 1), (3, 1)])
def test_start_up_binds_the_local_ranks_gpu(fake_cuda, torch_flags, local_rank, expected):
    config = load_config(TINY, ["system.threads=1"])
    device, threads = prepare_device(config, LocalComm(local_rank, 4), Log())
    assert device == f"cuda:{expected}" and threads == 1
    assert fake_cuda == [expected]


def test_start_up_on_cpu_binds_nothing(fake_cuda, torch_flags):
    config = load_config(TINY, ["system.device=cpu", "system.threads=1"])
    assert prepare_device(config, LocalComm(1, 2), Log())[0] == "cpu"
    assert fake_cuda == []


def test_deterministic_flag_sets_torch_and_cublas(torch_flags, monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    config = load_config(TINY, ["system.device=cpu", "system.threads=1", "system.deterministic=true"])
    prepare_device(config, SerialCommunicator(), Log())
    b = torch.backends
    assert torch.are_deterministic_algorithms_enabled()
    assert b.cudnn.deterministic and not b.cudnn.benchmark
    assert not b.cuda.matmul.allow_tf32 and not b.cudnn.allow_tf32
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"


def test_deterministic_keeps_a_cublas_setting_of_the_user(torch_flags):
    env = {"CUBLAS_WORKSPACE_CONFIG": ":16:8"}
    cuda_env.apply_determinism(True, env)
    assert env["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"


def test_deterministic_off_touches_nothing(torch_flags):
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.allow_tf32)
    env = {}
    cuda_env.apply_determinism(False, env)
    assert env == {} and (torch.are_deterministic_algorithms_enabled(),
                          torch.backends.cudnn.allow_tf32) == before


def test_new_system_fields_default_and_validate():
    s = Config().system
    assert s.deterministic is False and s.device_data_max_mb == 1024
    with pytest.raises(ConfigError, match="system.device_data_max_mb"):
        SystemConfig(device_data_max_mb=-1).validate()
    with pytest.raises(ConfigError, match="system.deterministic"):
        load_config(TINY, ["system.deterministic=3"])
