"""The config sections: frozen dataclasses, each with the checks of its own fields.

A choice field is typed by its Literal (choices.py); `validate(self)` checks the Literals again
(for a section built or replaced in code rather than loaded) and then the section's ranges.
Checks that read several sections live in validation.py.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

from feddm_hpc.config.choices import (
    Aggregation,
    Algorithm,
    AttackKind,
    Bits,
    CohortSampling,
    Dataset,
    Downlink,
    Fp16Format,
    Lossless,
    LossWeighting,
    LrSchedule,
    ModelName,
    Optimizer,
    Parameterization,
    Partition,
    Prediction,
    Schedule,
    SharedPart,
    Straggler,
    Target,
    TopkValueBits,
    Uplink,
    check_choice,
    check_choices,
    require,
)
from feddm_hpc.config.output_sections import (
    CheckpointConfig,
    EvaluationConfig,
    LoggingConfig,
    SamplingConfig,
    SystemConfig,
)


@dataclass(frozen=True)
class DataConfig:
    dataset: Dataset = "mnist"      # or a loader function of your own, package.module:Name (docs/extending.md)
    path: Optional[str] = None      # folder (fashion_mnist, image_folder, cifar10) or file (npz, hdf5)
    subset: Optional[int] = None    # seeded random subset of the training split, for quick runs
    image_size: Optional[int] = None  # image_folder: resize to this side; null: the files' one size
    center_crop: bool = False         # image_folder: crop the centred square first (before image_size)
    channels: Optional[int] = None    # image_folder: 1 grey, 3 RGB; null: grey when every file is
    partition: Partition = "iid"    # how the training split is dealt to clients (data/partition.py)
    dirichlet_alpha: float = 0.5
    classes_per_client: int = 2

    def validate(self) -> None:
        check_choices(self, "data")
        require(self.dataset not in ("npz", "hdf5", "image_folder", "cifar10") or self.path is not None,
                f"data.path: required for data.dataset={self.dataset}")
        require(self.dataset == "image_folder" or (self.image_size is None and self.channels is None
                                                   and not self.center_crop),
                "data.image_size/center_crop/channels: only for data.dataset=image_folder")
        require(self.image_size is None or self.image_size >= 4, "data.image_size: must be >= 4")
        require(self.channels in (None, 1, 3), "data.channels: must be 1 (grey), 3 (RGB) or null")
        require(self.subset is None or self.subset > 0, "data.subset: must be positive")
        require(self.dirichlet_alpha > 0, "data.dirichlet_alpha: must be > 0")
        require(self.classes_per_client >= 1, "data.classes_per_client: must be >= 1")


@dataclass(frozen=True)
class ModelConfig:
    name: ModelName = "unet"        # unet (the fields below), diffusers_unet2d (docs/export.md) or a torch Module of your own, package.module:Name (docs/extending.md)
    options: Dict[str, Any] = field(default_factory=dict)  # constructor arguments of a model other than unet (diffusers_unet2d: UNet2DModel's)
    base_channels: int = 32
    channel_mults: Tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    attention_resolutions: Tuple[int, ...] = (7,)
    dropout: float = 0.0
    # What a client trains and shares (diffusion/parameterization.py): dense, lowrank (FedPara
    # factors of every conv and linear but the image-facing two) or hyper (those layers' weights
    # made by one shared generator from chunk embeddings); lowrank takes exactly one of:
    parameterization: Parameterization = "dense"
    lowrank_rank: Optional[int] = None         # the same rank in every factored layer
    lowrank_fraction: Optional[float] = None   # ranks chosen so shared/dense is about this
    hyper_embedding_dim: Optional[int] = None  # hyper only: d of each chunk embedding (null: 16)
    hyper_chunk_size: Optional[int] = None     # hyper only: values per chunk, K (null: 256)

    def validate(self) -> None:
        check_choices(self, "model")
        knobs = (self.lowrank_rank is not None) + (self.lowrank_fraction is not None)
        require(knobs == (self.parameterization == "lowrank"),
                "model.lowrank_rank / model.lowrank_fraction: set exactly one with "
                "model.parameterization=lowrank, neither otherwise")
        require(self.lowrank_rank is None or self.lowrank_rank >= 1, "model.lowrank_rank: must be >= 1")
        require(self.lowrank_fraction is None or 0 < self.lowrank_fraction < 1,
                "model.lowrank_fraction: must be in (0, 1)")
        for knob in ("hyper_embedding_dim", "hyper_chunk_size"):
            v, only = getattr(self, knob), f"model.{knob}: only with model.parameterization=hyper"
            require(v is None or self.parameterization == "hyper", only)
            require(v is None or (type(v) is int and v >= 1), f"model.{knob}: must be >= 1")
        require(self.base_channels >= 4, "model.base_channels: must be >= 4")
        require(len(self.channel_mults) >= 1 and all(m >= 1 for m in self.channel_mults),
                "model.channel_mults: a non-empty list of positive integers")
        require(self.num_res_blocks >= 1, "model.num_res_blocks: must be >= 1")
        require(0.0 <= self.dropout < 1.0, "model.dropout: must be in [0, 1)")


@dataclass(frozen=True)
class DiffusionConfig:
    timesteps: int = 1000
    schedule: Schedule = "linear"
    beta_start: float = 1e-4
    beta_end: float = 0.02
    prediction: Prediction = "eps"  # what the U-Net regresses (samplers convert v to eps)
    loss_weighting: LossWeighting = "min_snr"  # min_snr: per-timestep weight min(SNR, gamma)/SNR (eps)
    min_snr_gamma: float = 5.0      # Hang et al. 2023's gamma

    def validate(self) -> None:
        check_choices(self, "diffusion")
        require(self.timesteps >= 2, "diffusion.timesteps: must be >= 2")
        require(0 < self.beta_start < self.beta_end < 1,
                "diffusion.beta_start/beta_end: need 0 < beta_start < beta_end < 1")
        require(self.min_snr_gamma > 0, "diffusion.min_snr_gamma: must be > 0")


@dataclass(frozen=True)
class FederationConfig:
    num_clients: int = 10
    clients_per_round: Optional[int] = None   # None: every client, every round
    # uniform: a fresh uniform cohort each round; shuffled: every client once per pass of
    # ceil(num_clients / clients_per_round) rounds (seeding.sample_cohort)
    cohort_sampling: CohortSampling = "uniform"
    rounds: int = 10
    algorithm: Algorithm = "fedavg"     # or a user's Strategy: package.module:Name (docs/extending.md)
    # Realism (participation.py). Every draw comes from (seed, round, client_id), never the rank.
    dropout_prob: float = 0.0           # each cohort client independently fails to report
    straggler: Straggler = "none"       # lognormal: a fixed slowness factor per client
    straggler_sigma: float = 0.5        # lognormal sigma of the slowness factor (median 1)
    step_time_s: float = 1.0            # modelled seconds per local step at slowness 1
    round_deadline_s: Optional[float] = None  # simulated seconds; slower clients are dropped
    inject_nan_clients: Tuple[int, ...] = ()  # testing aid: these clients report NaN weights
    # Partial sharing (diffusion/parts.py, federation/shared_space.py): the U-Net parts whose
    # parameters clients share; the others stay with each client. Parts: time_embedding, input,
    # down, middle, up, output; presets: all (the whole model), decoder (up, output),
    # latent_decoder (middle, up, output), encoder (time_embedding, input, down, middle).
    shared_parts: Tuple[SharedPart, ...] = ("all",)

    def validate(self) -> None:
        check_choices(self, "federation")
        require(self.num_clients >= 1, "federation.num_clients: must be >= 1")
        require(self.rounds >= 1, "federation.rounds: must be >= 1")
        require(self.clients_per_round is None or 1 <= self.clients_per_round <= self.num_clients,
                "federation.clients_per_round: must be between 1 and federation.num_clients "
                f"({self.num_clients})")
        require(0.0 <= self.dropout_prob <= 1.0, "federation.dropout_prob: must be in [0, 1]")
        require(self.straggler_sigma > 0, "federation.straggler_sigma: must be > 0")
        require(self.step_time_s > 0, "federation.step_time_s: must be > 0")
        require(self.round_deadline_s is None or self.round_deadline_s > 0,
                "federation.round_deadline_s: must be > 0 or null")
        require(all(0 <= i < self.num_clients for i in self.inject_nan_clients),
                f"federation.inject_nan_clients: client ids must be in [0, {self.num_clients})")
        require(len(self.shared_parts) > 0, "federation.shared_parts: must name at least one part "
                "or preset (all: the whole model)")
        for part in self.shared_parts:   # a section built in code skips _coerce's item check
            check_choice(part, SharedPart, "federation.shared_parts")


@dataclass(frozen=True)
class ClientConfig:
    local_steps: Optional[int] = 50     # exactly one of local_steps / local_epochs is set
    local_epochs: Optional[float] = None
    batch_size: int = 64
    optimizer: Optimizer = "adam"
    lr: float = 2e-4
    lr_schedule: LrSchedule = "cosine"  # the round's lr, the same for every client
    lr_warmup_rounds: int = 0           # linear warm-up over the first rounds (both schedules)
    lr_min_ratio: float = 0.1           # cosine: the last round's lr is lr * lr_min_ratio
    lr_horizon: Optional[int] = None    # cosine: rounds it spans (null: federation.rounds); later
    #                                     rounds keep its final lr (extend a run on purpose)
    weight_decay: float = 0.0
    momentum: float = 0.9               # sgd only
    grad_clip: Optional[float] = 1.0
    prox_mu: float = 0.0                # FedProx proximal term; 0 is FedAvg (FedDM-vanilla)

    def validate(self) -> None:
        check_choices(self, "client")
        require((self.local_steps is None) != (self.local_epochs is None),
                "client.local_steps/local_epochs: set exactly one of them (the other to null)")
        require(self.local_steps is None or self.local_steps >= 1,
                "client.local_steps: must be >= 1")
        require(self.local_epochs is None or self.local_epochs > 0,
                "client.local_epochs: must be > 0")
        require(self.batch_size >= 1, "client.batch_size: must be >= 1")
        require(self.lr > 0, "client.lr: must be > 0")
        require(self.lr_warmup_rounds >= 0, "client.lr_warmup_rounds: must be >= 0")
        require(0.0 <= self.lr_min_ratio <= 1.0, "client.lr_min_ratio: must be in [0, 1]")
        require(self.lr_horizon is None or self.lr_horizon >= 1,
                "client.lr_horizon: must be >= 1 or null (null: federation.rounds)")
        require(self.grad_clip is None or self.grad_clip > 0,
                "client.grad_clip: must be > 0 or null")
        require(self.prox_mu >= 0, "client.prox_mu: must be >= 0")


@dataclass(frozen=True)
class CompressionConfig:
    uplink: Uplink = "none"             # or a user's Compressor: package.module:Name (docs/extending.md)
    bits: Bits = 8                      # 16: float16 (fp16_format); 8 | 4 | 2: chunked integer codes
    chunk_size: int = 4096
    stochastic_rounding: bool = False
    error_feedback: bool = False
    topk_fraction: float = 0.01
    topk_value_bits: TopkValueBits = 32
    lossless: Lossless = "none"         # zstd needs the zstandard package
    fp16_format: Fp16Format = "fp16"
    target: Target = "update"           # update: encode local - global | weights: encode local
    downlink: Downlink = "none"         # none: float32 model | quant: encoded (global - reference)
    downlink_bits: Bits = 8             # the quant codec of `bits`, chunk_size, no feedback

    def validate(self) -> None:
        """Also run by compression.make_compressor on the section it is given."""
        check_choices(self, "compression")
        chunk = self.chunk_size
        require(not isinstance(chunk, bool) and isinstance(chunk, int) and 0 < chunk < 2 ** 31,
                f"compression.chunk_size: must be a positive integer, got {chunk!r}")
        if self.uplink == "topk":
            fraction = self.topk_fraction
            require(not isinstance(fraction, bool) and isinstance(fraction, (int, float))
                    and 0.0 < fraction <= 1.0,
                    f"compression.topk_fraction: must be a number in (0, 1], got {fraction!r}")


@dataclass(frozen=True)
class ServerConfig:
    lr: float = 1.0                     # server learning rate on the aggregated update
    momentum: float = 0.9               # fedavgm
    beta1: float = 0.9                  # fedadam / fedyogi
    beta2: float = 0.99
    tau: float = 1e-3                   # adaptive optimizers' epsilon (Reddi et al.)
    ema_decay: float = 0.9              # EMA of the global model, per round; used for sampling
    ema_warmup: bool = True             # round r decays by min(ema_decay, (1 + r) / (10 + r))
    aggregation: Aggregation = "mean"   # robust rules (strategies/robust.py) need the gather transport
    trim_fraction: float = 0.1          # trimmed_mean: drop this share of the lowest and highest values
    num_byzantine: int = 1              # krum / multi_krum: the assumed number of attackers f
    num_selected: Optional[int] = None  # multi_krum: updates averaged; null: k - f

    def validate(self) -> None:
        check_choices(self, "server")
        require(0.0 <= self.ema_decay < 1.0, "server.ema_decay: must be in [0, 1)")
        require(self.lr > 0, "server.lr: must be > 0")
        require(0.0 <= self.trim_fraction < 0.5, "server.trim_fraction: must be in [0, 0.5)")
        require(self.num_byzantine >= 0, "server.num_byzantine: must be >= 0")
        require(self.num_selected is None or self.num_selected >= 1,
                "server.num_selected: must be >= 1 or null")


@dataclass(frozen=True)
class PrivacyConfig:
    clip_norm: Optional[float] = None   # client-level DP: each update clipped to this L2 norm; null: off
    noise_multiplier: float = 0.0       # z: the server adds N(0, (z * clip_norm)^2) to the sum
    delta: float = 1e-5                 # epsilon is reported at this delta
    secure_aggregation: bool = False    # masked integer updates; the root sees only their sum
    secagg_range: Optional[float] = None  # secure aggregation's public grid: coordinates clipped to [-r, r]
    secagg_min_clients: int = 2         # fewer survivors than this (or than a majority): nothing is aggregated
    release_client_metrics: bool = False  # with DP: also log per-client losses and norms (outside epsilon)

    def validate(self) -> None:
        require(self.clip_norm is None or self.clip_norm > 0, "privacy.clip_norm: must be > 0 or null")
        require(self.noise_multiplier >= 0, "privacy.noise_multiplier: must be >= 0")
        require(self.noise_multiplier == 0 or self.clip_norm is not None,
                "privacy.noise_multiplier: needs privacy.clip_norm (the noise is z * clip_norm)")
        require(0.0 < self.delta < 1.0, "privacy.delta: must be in (0, 1)")
        require(not self.secure_aggregation or self.secagg_range is not None,
                "privacy.secagg_range: required with privacy.secure_aggregation (the public grid)")
        require(self.secagg_range is None or self.secagg_range > 0, "privacy.secagg_range: must be > 0")
        require(not isinstance(self.secagg_min_clients, bool) and self.secagg_min_clients >= 2,
                "privacy.secagg_min_clients: must be an integer >= 2 (the sum of one client is "
                "that client's update in the clear)")

    @property
    def dp(self) -> bool:
        return self.clip_norm is not None


@dataclass(frozen=True)
class AttackConfig:
    kind: AttackKind = "none"           # sign_flip | scaled | gaussian (the update), label_flip (the data)
    clients: Tuple[int, ...] = ()       # attacked client ids, or
    fraction: float = 0.0               # a seeded share of all clients
    scale: float = 1.0                  # scaled: the factor; gaussian: the noise std

    def validate(self) -> None:
        check_choices(self, "attack")
        require(0.0 <= self.fraction <= 1.0, "attack.fraction: must be in [0, 1]")
        require(not (self.clients and self.fraction > 0), "attack.clients: give clients or fraction, not both")
        require(self.kind == "none" or self.clients or self.fraction > 0,
                "attack.clients: name the attacked clients (or set attack.fraction)")
        require(self.scale >= 0, "attack.scale: must be >= 0")


@dataclass(frozen=True)
class PersonalizationConfig:
    steps: int = 0                      # local fine-tuning steps after the last round; 0: off
    eval_size: int = 64                 # held-out examples per client (at most half its shard)

    def validate(self) -> None:
        require(self.steps >= 0, "personalization.steps: must be >= 0 (0: off)")
        require(self.eval_size >= 1, "personalization.eval_size: must be >= 1")


@dataclass(frozen=True)
class Config:
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    federation: FederationConfig = field(default_factory=FederationConfig)
    client: ClientConfig = field(default_factory=ClientConfig)
    compression: CompressionConfig = field(default_factory=CompressionConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    personalization: PersonalizationConfig = field(default_factory=PersonalizationConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    system: SystemConfig = field(default_factory=SystemConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
