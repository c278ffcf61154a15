"""Where things run: which clients each rank hosts, which device it uses, how many threads.

Placement is static and computed identically on every rank from the client sizes alone, so it
costs no communication and a resumed job with a different rank count simply recomputes it.
"""
from __future__ import annotations

import heapq
import os
from typing import Dict, List, Optional, Sequence

from feddm_hpc.errors import ConfigError


def assign_clients(sample_counts: Sequence[int], num_ranks: int) -> List[List[int]]:
    """Balance clients over ranks by sample count (longest-processing-time greedy).

    Returns, for each rank, its client ids in increasing order. Deterministic: ties go to the
    lowest rank, clients of equal size are taken in id order.
    """
    if num_ranks > len(sample_counts):
        raise ConfigError(
            f"federation.num_clients: {len(sample_counts)} clients cannot occupy {num_ranks} MPI ranks; "
            f"launch at most {len(sample_counts)} ranks or raise federation.num_clients")
    return balance(sample_counts, num_ranks)


def balance(loads: Sequence[int], num_ranks: int) -> List[List[int]]:
    """Items (by index) over ranks, heaviest first onto the least-loaded rank; ranks may stay
    empty when there are fewer items than ranks."""
    # A heap of (load, clients, rank) picks the same rank as a scan would, in O(C log R).
    heap = [(0, 0, r) for r in range(num_ranks)]
    hosted: List[List[int]] = [[] for _ in range(num_ranks)]
    for client in sorted(range(len(loads)), key=lambda c: (-loads[c], c)):
        load, count, rank = heapq.heappop(heap)
        hosted[rank].append(client)
        heapq.heappush(heap, (load + loads[client], count + 1, rank))
    return [sorted(h) for h in hosted]


def round_placement(arrived: Sequence[int], steps: Sequence[int], num_ranks: int) -> List[List[int]]:
    """Who trains where this round: the arriving clients balanced by their local steps.

    A random cohort on a static placement leaves some ranks with more cohort clients than
    others, and every round waits for the busiest (measured: 17% of the quickstart's wall time).
    Any rank can train any client (every rank holds the whole dataset and training is seeded by
    client, not rank), so stateless clients are simply dealt out afresh each round.
    """
    groups = balance(list(steps), num_ranks)
    return [sorted(int(arrived[i]) for i in g) for g in groups]


# `auto` on a GPU. Not yet measured on one (benchmarks/client_groups.py, run by gpu_check.sh, is
# what should set it): small U-Nets are kernel-launch bound there, which vectorizing addresses.
GROUP_SIZE_AUTO_CUDA = 8


def resolve_group_size(setting, device: str, model_dropout: float) -> int:
    """system.client_group_size as a number: auto is 1 on the CPU, where vectorized clients were
    measured slower (benchmarks/client_groups.py), and without dropout-free models."""
    if setting != "auto":
        return int(setting)
    if not device.startswith("cuda") or model_dropout > 0:
        return 1
    return GROUP_SIZE_AUTO_CUDA


def assign_blocks(sample_counts: Sequence[int], num_ranks: int, block: int) -> List[List[int]]:
    """Static hosting for client groups: blocks of `block` consecutive ids [kG, (k+1)G) stay on one
    rank (so a group's per-client state is where the group trains), balanced by samples."""
    n = len(sample_counts)
    starts = list(range(0, n, block))
    if num_ranks > len(starts):
        raise ConfigError(f"system.client_group_size: {n} clients make {len(starts)} fixed groups of "
                          f"{block}, fewer than the {num_ranks} MPI ranks; lower the group size or "
                          f"launch at most {len(starts)} ranks")
    loads = [sum(sample_counts[s:s + block]) for s in starts]
    return [sorted(c for b in blocks for c in range(starts[b], min(starts[b] + block, n)))
            for blocks in balance(loads, num_ranks)]


def client_to_rank(hosted: List[List[int]]) -> Dict[int, int]:
    return {c: r for r, clients in enumerate(hosted) for c in clients}


def select_device(setting: str, local_rank: int, cuda_available: Optional[bool] = None,
                  device_count: Optional[int] = None) -> str:
    """`auto` -> cuda:(local_rank % device_count) when CUDA is present, else cpu."""
    if cuda_available is None or device_count is None:
        import torch
        cuda_available = torch.cuda.is_available()
        device_count = torch.cuda.device_count() if cuda_available else 0
    if setting == "cpu":
        return "cpu"
    if setting in ("auto", "cuda"):
        if cuda_available and device_count > 0:
            return f"cuda:{local_rank % device_count}"
        if setting == "cuda":
            raise ConfigError("system.device: cuda requested but no CUDA device is available")
        return "cpu"
    index = int(setting.split(":", 1)[1])
    if not cuda_available or index >= device_count:
        raise ConfigError(f"system.device: {setting} requested but only {device_count} CUDA device(s) exist")
    return setting


def bind_device(device: str) -> None:
    """Make cuda:N the process's current device, once at start-up, before any CUDA work.

    Tensors placed with an explicit `cuda:N` land there anyway, but whatever uses the current
    device does not: `torch.Generator(device="cuda")`, bare `.cuda()` calls, library
    workspaces, and the CUDA context torch makes first, which would otherwise all be on cuda:0,
    so every rank sharing a node would also hold a context (hundreds of MB) on GPU 0.
    Nothing on a CPU.
    """
    device = str(device)
    if device.startswith("cuda"):
        import torch

        torch.cuda.set_device(int(device.split(":", 1)[1]) if ":" in device else 0)


def threads_per_rank(setting: int, local_size: int, env: Optional[dict] = None,
                     cores: Optional[int] = None) -> int:
    """One compute thread per owned core: oversubscription was measured at 9x slower.

    An explicit config value wins, then OMP_NUM_THREADS, then SLURM_CPUS_PER_TASK, then the
    cores in this process's affinity mask shared among the ranks on this node.
    """
    env = os.environ if env is None else env
    if setting > 0:
        return setting
    for key in ("OMP_NUM_THREADS", "SLURM_CPUS_PER_TASK"):
        value = env.get(key, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    if cores is None:
        total = os.cpu_count() or 1
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            cores = total
        if cores < total:  # the launcher bound this rank to its own cores: they are all ours
            return cores
    return max(1, cores // max(1, local_size))
