"""Everything a run needs before round 0, built identically on every rank with no communication:
threads and device, the dataset and its partition, client placement, the model and its schedule.
All consistency checks happen here, before any training, so bad settings fail fast with exit 2.

`prepare_device` is also the device set-up of every other command (evaluate, sample).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np
import torch

from feddm_hpc import seeding
from feddm_hpc.comm import SerialCommunicator
from feddm_hpc.config import clients_have_state, shares_partly
from feddm_hpc.data import label_histograms, load_configured, partition, summarize_partition
from feddm_hpc.diffusion import parameterization
from feddm_hpc.diffusion.schedule import NoiseSchedule, make_schedule
from feddm_hpc.errors import ConfigError
from feddm_hpc.federation.cuda_env import apply_determinism, check_gpu_sharing, image_store
from feddm_hpc.federation.placement import (
    assign_blocks,
    assign_clients,
    bind_device,
    resolve_group_size,
    select_device,
    threads_per_rank,
)
from feddm_hpc.federation.precision import cpu_flags, slow_bf16_warning
from feddm_hpc.params import ParamSpec, flatten
from feddm_hpc.rundir.runlog import RunLog


@dataclass
class RunSetup:
    device: str
    threads: int
    dataset_name: str
    dataset_checksum: str
    image_shape: tuple              # (C, H, W)
    images: torch.Tensor            # uint8 [N, C, H, W] on `device` (data.select_batch -> [-1, 1]),
                                    # or a cuda_env.HostStore above system.device_data_max_mb
    parts: List[np.ndarray]         # client id -> indices into images
    hosted: List[List[int]]         # rank -> client ids
    histogram: Optional[np.ndarray]  # [clients, classes] or None (unlabelled data)
    model: torch.nn.Module
    schedule: NoiseSchedule
    spec: ParamSpec
    initial_params: np.ndarray
    group_size: int = 1             # system.client_group_size resolved for this device


def build_model(config, image_shape, device: str):
    """The initial model, identical on every rank: built under a seed derived from config.seed."""
    channels, size = image_shape[0], image_shape[1]
    torch.manual_seed(seeding.seed_for(config.seed, seeding.INIT))
    try:
        model = parameterization.build_model(config.model, image_channels=channels, image_size=size)
    except ValueError as exc:
        raise ConfigError(f"model.channel_mults: {exc}") from None
    return model.to(device)


def sharing_of(config, model) -> parameterization.SharedSize:
    """What a client of this config shares of `model` (shared, trained and dense-equivalent
    counts); a model whose parameters fall outside the U-Net's parts is a ConfigError."""
    try:
        return parameterization.shared_size(model, config.model.parameterization,
                                            config.federation.shared_parts)
    except ValueError as exc:
        raise ConfigError(f"federation.shared_parts: {exc}") from None


def load_partitioned(config):
    """The training split and each client's indices; every client holds at least one batch."""
    d = config.data
    dataset = load_configured(d, "train", subset=d.subset, seed=config.seed)
    parts = partition(dataset.labels, config.federation.num_clients, d.partition,
                      seed=seeding.seed_for(config.seed, seeding.PARTITION),
                      alpha=d.dirichlet_alpha, classes_per_client=d.classes_per_client,
                      min_samples=config.client.batch_size, num_examples=len(dataset))
    return dataset, parts


def prepare_device(config, comm=None, log=None, device: Optional[str] = None) -> Tuple[str, int]:
    """(device, threads) of this process, set up the one way every command does it (train,
    resume, evaluate, sample, and the Python API through them), in the order CUDA needs: the
    deterministic switch before any CUDA work, torch's threads (placement.threads_per_rank), the
    GPU-sharing check (collective over `comm`) before the first CUDA context, then the rank's
    GPU made current (placement.bind_device).
    comm: default one process; log: default messages on stderr; device: a command's --device,
    else system.device."""
    comm = comm if comm is not None else SerialCommunicator()
    log = log if log is not None else RunLog(comm.rank, None, progress=False)
    system = config.system
    setting = device or system.device
    apply_determinism(system.deterministic)
    threads = threads_per_rank(system.threads, comm.local_size)
    torch.set_num_threads(threads)
    device = select_device(setting, comm.local_rank)
    if setting != "cpu":  # the same on every rank, so all or none join the collective
        check_gpu_sharing(comm, device, log)
    bind_device(device)
    if comm.size > 1 and device.startswith("cuda"):
        log.rank_warn(f"device {device}, {threads} thread(s)")
    return device, threads


def fixed_hosts(config) -> bool:
    """Clients stay on the rank that hosts them (their state lives there, or placement says so)."""
    return config.system.placement == "static" or clients_have_state(config)


def build_setup(config, comm, log) -> RunSetup:
    device, threads = prepare_device(config, comm, log)
    slow = slow_bf16_warning(device, config.system.precision, cpu_flags())
    if slow:   # training's autocast (sampling and evaluation run in float32)
        log.info(f"warning: {slow}")

    fed, data_cfg = config.federation, config.data
    if comm.size > fed.num_clients:
        raise ConfigError(f"federation.num_clients: {fed.num_clients} clients cannot occupy {comm.size} "
                          f"MPI ranks; launch at most {fed.num_clients} ranks")
    dataset, parts = load_partitioned(config)
    group_size = resolve_group_size(config.system.client_group_size, device, config.model.dropout)
    if shares_partly(config):   # each client starts from its own private parts: one at a time
        group_size = 1
    if group_size > 1 and fixed_hosts(config):
        hosted = assign_blocks([p.size for p in parts], comm.size, group_size)
    else:
        hosted = assign_clients([p.size for p in parts], comm.size)
    histogram = None
    if dataset.labels is not None:
        histogram = label_histograms(dataset.labels, parts, dataset.num_classes)
    h, w, c = dataset.image_shape
    image_shape = (c, h, w)
    model = build_model(config, image_shape, device)
    spec = ParamSpec.from_model(model)
    log.info(f"{dataset.name}: {len(dataset)} images {h}x{w}x{c}; {fed.num_clients} clients "
             f"({data_cfg.partition}) on {comm.size} rank(s); model {spec.total:,} parameters; "
             f"device {device}, {threads} thread(s) per rank")
    sharing = sharing_of(config, model)
    if sharing.parameterization != "dense" or sharing.parts:
        log.info("model: " + sharing.describe())
    if histogram is not None:
        log.info(summarize_partition(histogram))
    images = image_store(dataset.images, device, config.system.device_data_max_mb)
    if not isinstance(images, torch.Tensor):
        log.info(f"training images ({dataset.images.nbytes / 2 ** 20:.0f} MiB) kept in pinned host "
                 f"memory, batches copied to {device} (system.device_data_max_mb="
                 f"{config.system.device_data_max_mb})")
    schedule = make_schedule(config.diffusion.schedule, config.diffusion.timesteps,
                             config.diffusion.beta_start, config.diffusion.beta_end).to(device)
    return RunSetup(device=device, threads=threads, dataset_name=dataset.name,
                    dataset_checksum=dataset.checksum, image_shape=image_shape, images=images,
                    parts=parts, hosted=hosted, histogram=histogram, model=model, schedule=schedule,
                    spec=spec, initial_params=flatten(model),
                    group_size=group_size)
