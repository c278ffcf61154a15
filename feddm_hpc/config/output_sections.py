"""The config sections of a run's outputs and machinery: sampling, evaluation, checkpoints,
system and logging (split from sections.py, which imports them back; the reference generator
reads the field comments of both modules).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional, Tuple, Union

from feddm_hpc.config.choices import Placement, Precision, Sampler, Transport, check_choices, require


@dataclass(frozen=True)
class SamplingConfig:
    sampler: Sampler = "ddim"
    steps: int = 50                     # ddim steps (ddpm always uses all timesteps)
    eta: float = 0.0                    # ddim noise: 0 deterministic, 1 ancestral-like (cleaner when undertrained)
    num_samples: int = 64
    every: int = 0                      # rounds between sample grids; 0: only at the end

    def validate(self) -> None:
        """steps <= diffusion.timesteps is checked in validation.py."""
        check_choices(self, "sampling")
        require(self.num_samples >= 0, "sampling.num_samples: must be >= 0 (0: no sample grids)")
        require(self.every >= 0, "sampling.every: must be >= 0")
        require(0.0 <= self.eta <= 1.0, "sampling.eta: must be in [0, 1]")


@dataclass(frozen=True)
class EvaluationConfig:
    every: int = 0                      # rounds between evaluations during training; 0: off
    num_samples: int = 1000             # generated and real images each (FD depends on N)
    # Training epochs of the feature extractor (trained once, cached); null: its own default
    # (2 for the LeNet of grey images, 8 for the colour network: evaluation/colour_net.py).
    extractor_epochs: Optional[int] = None
    extractor_max_train: Optional[int] = None  # train it on the first M images only (quick runs)

    def validate(self) -> None:
        require(self.every >= 0, "evaluation.every: must be >= 0 (0: off)")
        require(self.num_samples >= 2, "evaluation.num_samples: must be >= 2")
        require(self.extractor_epochs is None or self.extractor_epochs >= 1,
                "evaluation.extractor_epochs: must be >= 1 (or null: the extractor's default)")
        require(self.extractor_max_train is None or self.extractor_max_train >= 100,
                "evaluation.extractor_max_train: must be >= 100 or null")


@dataclass(frozen=True)
class CheckpointConfig:
    every: int = 1                      # rounds between checkpoints (the last round always)
    keep_last: int = 3

    def validate(self) -> None:
        require(self.every >= 1, "checkpoint.every: must be >= 1")
        require(self.keep_last >= 1, "checkpoint.keep_last: must be >= 1")


@dataclass(frozen=True)
class SystemConfig:
    device: str = "auto"                # auto | cpu | cuda | cuda:N
    threads: int = 0                    # torch threads per rank; 0: from the cores this rank owns
    progress: bool = True
    collective_timeout_s: float = 0.0   # > 0: a collective that waits longer aborts the job (exit 4)
    placement: Placement = "auto"       # who trains a cohort client (docs/scaling.md)
    transport: Transport = "gather"     # gather: root decodes every payload in client-id order (rank-invariant)
                                        # hierarchical: ranks pre-sum their clients, then Allreduce
    # gather: each client's payload leaves its rank as soon as it is encoded, while the rank
    # trains its next client (federation/payload_stream.py); false: one Gatherv after training.
    stream_uplink: bool = True
    # A rank's next client starts training before this one is encoded: on a GPU its vector is
    # copied to the host on a side stream meanwhile (federation/readback.py); auto: on a GPU only
    # (a CPU does the steps and the encoding itself: nothing to overlap); results are the same.
    pipeline_clients: Union[bool, Literal["auto"]] = "auto"
    deterministic: bool = False         # GPU: deterministic kernels, no TF32 (docs/gpus.md)
    device_data_max_mb: int = 1024      # training images on the GPU up to this size (MiB per
                                        # rank), above it in pinned host memory
    # Clients a rank trains at once as one vectorized computation (federation/client_groups.py);
    # auto: 1 on the CPU (measured no faster there), placement.GROUP_SIZE_AUTO_CUDA on a GPU.
    client_group_size: Union[int, Literal["auto"]] = 1
    # bf16: local training's forward under bfloat16 autocast (federation/precision.py); float32
    # parameters, optimizer and updates. Measured ~1.4x fewer CPU-seconds a step (docs/gpus.md).
    precision: Precision = "fp32"

    def validate(self) -> None:
        """placement per_round against stateful clients is checked in validation.py."""
        check_choices(self, "system")
        dev = self.device
        require(dev in ("auto", "cpu", "cuda") or (dev.startswith("cuda:") and dev[5:].isdigit()),
                f"system.device: {dev!r} is not one of auto, cpu, cuda, cuda:N")
        require(self.threads >= 0, "system.threads: must be >= 0")
        require(self.collective_timeout_s >= 0,
                "system.collective_timeout_s: must be >= 0 (0: no timeout)")
        require(self.device_data_max_mb >= 0,
                "system.device_data_max_mb: must be >= 0 (0: never on the GPU)")
        require(self.client_group_size == "auto" or self.client_group_size >= 1,
                "system.client_group_size: must be >= 1 or auto")


@dataclass(frozen=True)
class LoggingConfig:
    tensorboard: bool = False           # event files in RUN_DIR/tensorboard (root; federation/tensorboard_log.py)
    callbacks: Tuple[str, ...] = ()     # round callbacks of your own, package.module:Name each, run after the built-in ones (docs/extending.md)
    # (the tensorboard package and the callbacks' syntax are checked in validation.py)
