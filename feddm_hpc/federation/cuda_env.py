"""The CUDA side of a rank's start-up: the deterministic switch, ranks sharing a GPU, and where
the training images live. Nothing here launches a CUDA kernel; on a machine without CUDA the
sharing check is skipped, the deterministic switch only sets torch flags, and the image store
stays what it always was (a CPU tensor).

None of this has run on a GPU yet (docs/gpus.md).
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from feddm_hpc.errors import ConfigError

# cuBLAS splits some reductions over a workspace whose buffers it hands to streams as they come,
# so the same GEMM can sum in a different order from run to run; a fixed workspace of 8 buffers
# of 4 MiB makes it repeatable, and torch.use_deterministic_algorithms raises on cuBLAS calls
# without it (CUDA >= 10.2). cuBLAS reads the variable when torch creates its handle, at the
# first matrix product: it must be in the environment before any CUDA work.
CUBLAS_WORKSPACE_CONFIG = ":4096:8"
EXCLUSIVE_MODES = ("Exclusive_Process", "Exclusive_Thread")
QUERY_TIMEOUT_S = 5.0


def apply_determinism(enabled: bool, env=None) -> None:
    """system.deterministic: repeatable kernels on a GPU (same GPU model, driver and torch).

    Off (the default) changes nothing. On: deterministic algorithms (ops without one raise),
    cuDNN without autotuning and with deterministic kernels, no TF32 in matrix products or
    convolutions, and cuBLAS's fixed workspace. On a CPU the CPU kernels are already repeatable
    at a fixed thread count, so results stay the same; torch then also fills memory from
    torch.empty with NaN (torch.utils.deterministic.fill_uninitialized_memory), a small cost.
    """
    if not enabled:
        return
    env = os.environ if env is None else env
    env.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE_CONFIG)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    # The legacy TF32 switches: torch refuses a mix of these and the newer fp32_precision API,
    # and nothing else in the package sets either.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


# -- the training images --------------------------------------------------------------------

def data_on_device(nbytes: int, device: str, max_mb: int) -> bool:
    """Whether the uint8 training store goes onto `device` (system.device_data_max_mb, MiB per
    rank): always on a CPU; on a GPU up to the threshold, above it in pinned host memory."""
    if not str(device).startswith("cuda"):
        return True
    return nbytes <= max_mb * 2 ** 20


class HostStore:
    """The training images in (pinned) host memory, for a split too large to copy to the GPU of
    every rank. It stands in for the device tensor: `device` is where the batch indices must be
    (the client moves them to `store.device`), and `index_select` gathers the rows on the host
    and copies only the batch to the target device, so `data.select_batch` works unchanged and
    converts it there with the same float32 operations (bit-identical to a device store)."""

    def __init__(self, host: torch.Tensor, target: str):
        self.host, self.target = host, torch.device(target)
        self.shape, self.dtype = host.shape, host.dtype

    @property
    def device(self) -> torch.device:
        return self.host.device

    def __len__(self) -> int:
        return int(self.host.shape[0])

    def index_select(self, dim: int, index: torch.Tensor) -> torch.Tensor:
        if dim != 0:
            raise ValueError("HostStore selects rows (dim 0) only")
        index = index.to(self.host.device)
        # Into a fresh pinned buffer, so the copy can be asynchronous: torch's caching host
        # allocator does not hand the buffer out again before the copy has finished.
        rows = torch.empty((index.numel(), *self.host.shape[1:]), dtype=self.host.dtype,
                           pin_memory=self.host.is_pinned())
        torch.index_select(self.host, 0, index, out=rows)
        return rows.to(self.target, non_blocking=rows.is_pinned())


def image_store(images: np.ndarray, device: str, max_mb: int):
    """The rank's training store: uint8 [N,C,H,W] on `device`, or a HostStore above the
    threshold (data_on_device)."""
    from feddm_hpc.data import to_device_uint8

    if data_on_device(np.asarray(images).nbytes, device, max_mb):
        return to_device_uint8(images, device)
    return HostStore(to_device_uint8(images, "cpu").pin_memory(), device)


# -- ranks sharing a GPU --------------------------------------------------------------------

def device_index(device: str) -> Optional[int]:
    """N of cuda:N (0 for a bare cuda), None for any other device."""
    device = str(device)
    if not device.startswith("cuda"):
        return None
    return int(device.split(":", 1)[1]) if ":" in device else 0


def _uuid_key(text: str) -> str:
    """A GPU UUID as hex digits only: nvidia-smi prints `GPU-8c1f...-...`, torch may not."""
    text = text.strip().lower()
    text = text[4:] if text.startswith("gpu-") else text
    return "".join(c for c in text if c in "0123456789abcdef")


def gpu_uuid(device: str) -> Optional[str]:
    """The GPU's UUID (_uuid_key), or None. Reading the properties creates no CUDA context
    (unlike torch.cuda.set_device)."""
    try:
        uuid = torch.cuda.get_device_properties(device_index(device)).uuid
    except Exception:  # no uuid in this torch, or no such device
        return None
    return _uuid_key(str(uuid)) or None


def query_compute_modes(timeout_s: float = QUERY_TIMEOUT_S) -> Optional[Dict[str, str]]:
    """GPU UUID -> compute mode (Default, Exclusive_Process, Prohibited) of every GPU of this
    node, from nvidia-smi (torch.cuda does not expose it); None when it cannot be read."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=uuid,compute_mode", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    modes = {}
    for line in out.stdout.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and parts[0]:
            modes[_uuid_key(parts[0])] = parts[1]
    return modes or None


def mps_running(env=None) -> bool:
    """A CUDA MPS control daemon's pipe exists (its directory: CUDA_MPS_PIPE_DIRECTORY)."""
    env = os.environ if env is None else env
    pipe_dir = env.get("CUDA_MPS_PIPE_DIRECTORY") or "/tmp/nvidia-mps"
    return os.path.exists(os.path.join(pipe_dir, "control"))


def rank_report(rank: int, device: str, query: Optional[Callable[[], Optional[Dict[str, str]]]] = None,
                env=None) -> dict:
    """What one rank knows about its GPU: the input of sharing_verdict. `query`: the compute
    modes of this node's GPUs (default query_compute_modes)."""
    report = {"rank": rank, "host": socket.gethostname(), "device": str(device), "gpu": None,
              "mode": None, "mps": False}
    if device_index(device) is None:
        return report
    report["gpu"] = gpu_uuid(device)
    modes = (query or query_compute_modes)()
    if modes is not None and report["gpu"] is not None:
        report["mode"] = modes.get(report["gpu"])
    report["mps"] = mps_running(env)
    return report


def _ranks(group) -> str:
    return ",".join(str(r["rank"]) for r in group)


def sharing_verdict(reports: List[dict]) -> Tuple[Optional[str], List[str]]:
    """(error, notes) from every rank's report: an error when ranks share a GPU whose compute
    mode lets only one process hold a context and no MPS daemon multiplexes them."""
    groups: Dict[str, List[dict]] = {}
    notes, unknown = [], []
    for r in reports:
        if device_index(r["device"]) is None:
            continue
        if r["gpu"] is None:
            unknown.append(r)
        else:
            groups.setdefault(r["gpu"], []).append(r)
    for gpu, group in groups.items():
        if len(group) < 2:
            continue
        where = f"ranks {_ranks(group)} share GPU {gpu[:8]} on {group[0]['host']}"
        mode, mps = group[0]["mode"], any(r["mps"] for r in group)
        if mode in EXCLUSIVE_MODES and not mps:
            return (f"system.device: {where}, whose compute mode {mode} admits one process only "
                    f"(the second rank's first CUDA call would fail); launch at most one rank per "
                    f"GPU on each node, start CUDA MPS, or set the GPUs to DEFAULT compute mode "
                    f"(nvidia-smi -c DEFAULT)"), notes
        if mode is None:
            notes.append(f"{where}; their compute mode could not be read (nvidia-smi): in "
                         f"EXCLUSIVE_PROCESS mode the second rank's first CUDA call fails")
        elif not mps:
            notes.append(f"{where} (compute mode {mode}, no CUDA MPS): their kernels time-slice")
    if unknown:
        notes.append(f"ranks {_ranks(unknown)}: could not identify their GPU (no UUID from torch), "
                     f"so sharing and compute modes were not checked")
    return None, notes


def check_gpu_sharing(comm, device: str, log, query=None) -> None:
    """Collective: every rank reports its GPU, the root decides, and a refusal ends every rank
    with the same one-line error (exit 2). Call it before the first CUDA context is made
    (torch.cuda.set_device makes one since CUDA 12): in exclusive mode that call would fail."""
    from feddm_hpc.comm import root_decides

    if comm.size == 1:
        return
    mine = json.dumps(rank_report(comm.rank, device, query)).encode()
    parts = comm.gather_bytes(np.frombuffer(mine, dtype=np.uint8))

    def decide():
        error, notes = sharing_verdict([json.loads(p.tobytes().decode()) for p in parts])
        if error is not None:
            raise ConfigError(error)
        return notes

    for note in root_decides(comm, decide):
        log.info(f"warning: {note}")


def synchronize(device) -> None:
    """Wait for the device's queued work (before reading a clock); nothing on a CPU."""
    if str(device).startswith("cuda"):
        torch.cuda.synchronize(device)
