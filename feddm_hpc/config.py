"""Typed, frozen run configuration: YAML load, `--set` overrides, validation and dump.

Every section is a frozen dataclass; a config is built only through `load_config`, which rejects
unknown keys and wrongly typed values with a ConfigError naming the dotted field. The resolved
config is dumped beside the results and inside every checkpoint, so a run is self-describing.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Optional, Tuple

import yaml

from .errors import ConfigError


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "mnist"          # mnist | fashion_mnist | npz | hdf5
    path: Optional[str] = None      # folder (fashion_mnist) or file (npz, hdf5)
    subset: Optional[int] = None    # seeded random subset of the training split, for quick runs
    partition: str = "iid"          # iid | dirichlet | shards
    dirichlet_alpha: float = 0.5
    classes_per_client: int = 2


@dataclass(frozen=True)
class ModelConfig:
    base_channels: int = 32
    channel_mults: Tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    attention_resolutions: Tuple[int, ...] = (7,)
    dropout: float = 0.0


@dataclass(frozen=True)
class DiffusionConfig:
    timesteps: int = 1000
    schedule: str = "linear"        # linear | cosine
    beta_start: float = 1e-4
    beta_end: float = 0.02
    prediction: str = "eps"         # eps | v: what the U-Net regresses (samplers convert v to eps)
    loss_weighting: str = "min_snr"  # min_snr | none: per-timestep weight min(SNR, gamma)/SNR (eps)
    min_snr_gamma: float = 5.0      # Hang et al. 2023's gamma


@dataclass(frozen=True)
class FederationConfig:
    num_clients: int = 10
    clients_per_round: Optional[int] = None   # None: every client, every round
    rounds: int = 10
    algorithm: str = "fedavg"
    # Realism (participation.py). Every draw comes from (seed, round, client_id), never the rank.
    dropout_prob: float = 0.0           # each cohort client independently fails to report
    straggler: str = "none"             # none | lognormal: a fixed slowness factor per client
    straggler_sigma: float = 0.5        # lognormal sigma of the slowness factor (median 1)
    step_time_s: float = 1.0            # modelled seconds per local step at slowness 1
    round_deadline_s: Optional[float] = None  # simulated seconds; slower clients are dropped
    inject_nan_clients: Tuple[int, ...] = ()  # testing aid: these clients report NaN weights


@dataclass(frozen=True)
class ClientConfig:
    local_steps: Optional[int] = 50     # exactly one of local_steps / local_epochs is set
    local_epochs: Optional[float] = None
    batch_size: int = 64
    optimizer: str = "adam"             # adam | adamw | sgd
    lr: float = 2e-4
    lr_schedule: str = "cosine"         # cosine | constant: the round's lr, the same for every client
    lr_warmup_rounds: int = 0           # linear warm-up over the first rounds (both schedules)
    lr_min_ratio: float = 0.1           # cosine: the last round's lr is lr * lr_min_ratio
    weight_decay: float = 0.0
    momentum: float = 0.9               # sgd only
    grad_clip: Optional[float] = 1.0
    prox_mu: float = 0.0                # FedProx proximal term; 0 is FedAvg (FedDM-vanilla)


@dataclass(frozen=True)
class CompressionConfig:
    uplink: str = "none"                # none | quant | topk
    bits: int = 8
    chunk_size: int = 4096
    stochastic_rounding: bool = False
    error_feedback: bool = False
    topk_fraction: float = 0.01
    topk_value_bits: int = 32
    lossless: str = "none"
    fp16_format: str = "fp16"
    target: str = "update"              # update: encode local - global | weights: encode local
    downlink: str = "none"              # none: float32 model | quant: encoded (global - reference)
    downlink_bits: int = 8              # 16 | 8 | 4 | 2 (quant codec, chunk_size, no feedback)


@dataclass(frozen=True)
class ServerConfig:
    lr: float = 1.0                     # server learning rate on the aggregated update
    momentum: float = 0.9               # fedavgm
    beta1: float = 0.9                  # fedadam / fedyogi
    beta2: float = 0.99
    tau: float = 1e-3                   # adaptive optimizers' epsilon (Reddi et al.)
    ema_decay: float = 0.9              # EMA of the global model, per round; used for sampling
    ema_warmup: bool = True             # round r decays by min(ema_decay, (1 + r) / (10 + r))


@dataclass(frozen=True)
class PersonalizationConfig:
    steps: int = 0                      # local fine-tuning steps after the last round; 0: off
    eval_size: int = 64                 # held-out examples per client (at most half its shard)


@dataclass(frozen=True)
class SamplingConfig:
    sampler: str = "ddim"               # ddim | ddpm
    steps: int = 50                     # ddim steps (ddpm always uses all timesteps)
    eta: float = 0.0                    # ddim noise: 0 deterministic, 1 ancestral-like (cleaner when undertrained)
    num_samples: int = 64
    every: int = 0                      # rounds between sample grids; 0: only at the end


@dataclass(frozen=True)
class EvaluationConfig:
    every: int = 0                      # rounds between evaluations during training; 0: off
    num_samples: int = 1000             # generated and real images each (FD depends on N)
    extractor_epochs: int = 2           # LeNet feature extractor, trained once and cached
    extractor_max_train: Optional[int] = None  # train it on the first M images only (quick runs)


@dataclass(frozen=True)
class CheckpointConfig:
    every: int = 1                      # rounds between checkpoints (the last round always)
    keep_last: int = 3


@dataclass(frozen=True)
class SystemConfig:
    device: str = "auto"                # auto | cpu | cuda | cuda:N
    threads: int = 0                    # torch threads per rank; 0: from the cores this rank owns
    progress: bool = True
    collective_timeout_s: float = 0.0   # > 0: a collective that waits longer aborts the job (exit 4)
    placement: str = "auto"             # auto | static | per_round: who trains a cohort client (README)
    transport: str = "gather"           # gather: root decodes every payload in client-id order (rank-invariant)
                                        # hierarchical: ranks pre-sum their clients, then Allreduce


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
    personalization: PersonalizationConfig = field(default_factory=PersonalizationConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    system: SystemConfig = field(default_factory=SystemConfig)


# ---------------------------------------------------------------- building from plain data

def _coerce(value: Any, annotation: Any, name: str) -> Any:
    """Check `value` against a field's type; the only conversions are int->float and list->tuple."""
    origin = typing.get_origin(annotation)
    if origin is typing.Union:  # Optional[X]
        inner = [a for a in typing.get_args(annotation) if a is not type(None)][0]
        return None if value is None else _coerce(value, inner, name)
    if origin in (tuple, Tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name}: expected a list of integers, got {value!r}")
        return tuple(_coerce(v, int, name) for v in value)
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name}: expected true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name}: expected an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name}: expected a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name}: expected a string, got {value!r}")
        return value
    raise AssertionError(f"unsupported annotation {annotation}")


def _build(cls, data: Any, prefix: str):
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    for key in data:
        if key not in known:
            where = f"{prefix}.{key}" if prefix else str(key)
            raise ConfigError(f"{where}: unknown key (valid: {', '.join(sorted(known))})")
    kwargs = {}
    for f in fields(cls):
        if f.name not in data:
            continue
        name = f"{prefix}.{f.name}" if prefix else f.name
        hint = hints[f.name]
        if is_dataclass(hint):
            kwargs[f.name] = _build(hint, data[f.name], name)
        else:
            kwargs[f.name] = _coerce(data[f.name], hint, name)
    return cls(**kwargs)


def _apply_override(tree: dict, assignment: str) -> None:
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment}: expected KEY=VALUE")
    key, raw = assignment.split("=", 1)
    parts = key.strip().split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: {part} is not a section")
        node = child
    try:
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {key}: value is not valid YAML ({exc.problem})") from None


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror})") from None
    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if tree is None:
        tree = {}
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: a config must be a mapping of sections")
    return tree


def config_from_tree(tree: dict, overrides: list[str] = ()) -> Config:
    tree = _deep_copy(tree)
    for assignment in overrides:
        _apply_override(tree, assignment)
    config = _build(Config, tree, "")
    validate(config)
    return config


def _deep_copy(tree):
    if isinstance(tree, dict):
        return {k: _deep_copy(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_deep_copy(v) for v in tree]
    return tree


def load_config(path: str | Path, overrides: list[str] = ()) -> Config:
    return config_from_tree(read_yaml(path), overrides)


# Fields whose default changed after checkpoints already existed, with the value every older
# checkpoint was trained with. A checkpoint's resolved config lists every field of its version,
# so a field it lacks predates it: resume and evaluate then keep the recipe the run was trained
# with instead of switching to the new default halfway.
LEGACY_VALUES = {
    ("diffusion", "prediction"): "eps",
    ("diffusion", "loss_weighting"): "none",
    ("client", "lr_schedule"): "constant",
    ("server", "ema_warmup"): False,
}


def config_from_yaml_text(text: str, overrides: list[str] = ()) -> Config:
    """The config stored in a checkpoint (its resolved YAML), with `overrides` on top."""
    tree = yaml.safe_load(text) or {}
    for (section, key), value in LEGACY_VALUES.items():
        node = tree.get(section)
        if isinstance(node, dict) and key not in node:
            node[key] = value
    return config_from_tree(tree, overrides)


def to_tree(config: Config) -> dict:
    def plain(v):
        if isinstance(v, tuple):
            return list(v)
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v
    return plain(dataclasses.asdict(config))


def dump_yaml(config: Config) -> str:
    return yaml.safe_dump(to_tree(config), sort_keys=False)


# ---------------------------------------------------------------- validation

def _require(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


def _one_of(value: str, valid: tuple, name: str) -> None:
    _require(value in valid, f"{name}: {value!r} is not one of {', '.join(valid)}")


def clients_have_state(c: Config) -> bool:
    """Per-client state that lives on a hosting rank between rounds (so clients cannot move)."""
    return (c.compression.error_feedback and c.compression.uplink != "none") \
        or c.federation.algorithm == "scaffold"


def validate(c: Config) -> None:
    """Checks that need no data and no MPI; data- and rank-dependent checks happen at start-up."""
    _one_of(c.data.dataset, ("mnist", "fashion_mnist", "npz", "hdf5"), "data.dataset")
    _require(c.data.dataset not in ("npz", "hdf5") or c.data.path is not None,
             f"data.path: required for data.dataset={c.data.dataset}")
    _require(c.data.subset is None or c.data.subset > 0, "data.subset: must be positive")
    _one_of(c.data.partition, ("iid", "dirichlet", "dirichlet_balanced", "shards"), "data.partition")
    _require(c.data.dirichlet_alpha > 0, "data.dirichlet_alpha: must be > 0")
    _require(c.data.classes_per_client >= 1, "data.classes_per_client: must be >= 1")

    _require(c.model.base_channels >= 4, "model.base_channels: must be >= 4")
    _require(len(c.model.channel_mults) >= 1 and all(m >= 1 for m in c.model.channel_mults),
             "model.channel_mults: a non-empty list of positive integers")
    _require(c.model.num_res_blocks >= 1, "model.num_res_blocks: must be >= 1")
    _require(0.0 <= c.model.dropout < 1.0, "model.dropout: must be in [0, 1)")

    _require(c.diffusion.timesteps >= 2, "diffusion.timesteps: must be >= 2")
    _one_of(c.diffusion.schedule, ("linear", "cosine"), "diffusion.schedule")
    _require(0 < c.diffusion.beta_start < c.diffusion.beta_end < 1,
             "diffusion.beta_start/beta_end: need 0 < beta_start < beta_end < 1")
    from .diffusion import LOSS_WEIGHTINGS, PREDICTIONS
    _one_of(c.diffusion.prediction, PREDICTIONS, "diffusion.prediction")
    _one_of(c.diffusion.loss_weighting, LOSS_WEIGHTINGS, "diffusion.loss_weighting")
    _require(c.diffusion.min_snr_gamma > 0, "diffusion.min_snr_gamma: must be > 0")

    f = c.federation
    _require(f.num_clients >= 1, "federation.num_clients: must be >= 1")
    _require(f.rounds >= 1, "federation.rounds: must be >= 1")
    _require(f.clients_per_round is None or 1 <= f.clients_per_round <= f.num_clients,
             f"federation.clients_per_round: must be between 1 and federation.num_clients ({f.num_clients})")
    from .strategies import STRATEGIES  # late import: strategies import config types
    _one_of(f.algorithm, tuple(sorted(STRATEGIES)), "federation.algorithm")
    if f.algorithm == "scaffold":  # option II's control update needs plain SGD clients
        from .strategies.scaffold import check_client_config
        check_client_config(c.client)
    _require(0.0 <= f.dropout_prob <= 1.0, "federation.dropout_prob: must be in [0, 1]")
    _one_of(f.straggler, ("none", "lognormal"), "federation.straggler")
    _require(f.straggler_sigma > 0, "federation.straggler_sigma: must be > 0")
    _require(f.step_time_s > 0, "federation.step_time_s: must be > 0")
    _require(f.round_deadline_s is None or f.round_deadline_s > 0,
             "federation.round_deadline_s: must be > 0 or null")
    _require(all(0 <= i < f.num_clients for i in f.inject_nan_clients),
             f"federation.inject_nan_clients: client ids must be in [0, {f.num_clients})")

    cl = c.client
    _require((cl.local_steps is None) != (cl.local_epochs is None),
             "client.local_steps/local_epochs: set exactly one of them (the other to null)")
    _require(cl.local_steps is None or cl.local_steps >= 1, "client.local_steps: must be >= 1")
    _require(cl.local_epochs is None or cl.local_epochs > 0, "client.local_epochs: must be > 0")
    _require(cl.batch_size >= 1, "client.batch_size: must be >= 1")
    _one_of(cl.optimizer, ("adam", "adamw", "sgd"), "client.optimizer")
    _require(cl.lr > 0, "client.lr: must be > 0")
    _one_of(cl.lr_schedule, ("constant", "cosine"), "client.lr_schedule")
    _require(cl.lr_warmup_rounds >= 0, "client.lr_warmup_rounds: must be >= 0")
    _require(0.0 <= cl.lr_min_ratio <= 1.0, "client.lr_min_ratio: must be in [0, 1]")
    _require(cl.grad_clip is None or cl.grad_clip > 0, "client.grad_clip: must be > 0 or null")
    _require(cl.prox_mu >= 0, "client.prox_mu: must be >= 0")

    cp = c.compression
    _one_of(cp.target, ("update", "weights"), "compression.target")
    _one_of(cp.downlink, ("none", "quant"), "compression.downlink")
    _require(cp.downlink_bits in (16, 8, 4, 2), "compression.downlink_bits: must be one of 16, 8, 4, 2")

    _require(c.personalization.steps >= 0, "personalization.steps: must be >= 0 (0: off)")
    _require(c.personalization.eval_size >= 1, "personalization.eval_size: must be >= 1")

    _require(0.0 <= c.server.ema_decay < 1.0, "server.ema_decay: must be in [0, 1)")
    _require(c.server.lr > 0, "server.lr: must be > 0")

    _one_of(c.sampling.sampler, ("ddim", "ddpm"), "sampling.sampler")
    _require(1 <= c.sampling.steps <= c.diffusion.timesteps,
             "sampling.steps: must be between 1 and diffusion.timesteps")
    _require(c.sampling.num_samples >= 0, "sampling.num_samples: must be >= 0 (0: no sample grids)")
    _require(c.sampling.every >= 0, "sampling.every: must be >= 0")
    _require(0.0 <= c.sampling.eta <= 1.0, "sampling.eta: must be in [0, 1]")

    _require(c.evaluation.every >= 0, "evaluation.every: must be >= 0 (0: off)")
    _require(c.evaluation.num_samples >= 2, "evaluation.num_samples: must be >= 2")
    _require(c.evaluation.extractor_epochs >= 1, "evaluation.extractor_epochs: must be >= 1")
    _require(c.evaluation.extractor_max_train is None or c.evaluation.extractor_max_train >= 100,
             "evaluation.extractor_max_train: must be >= 100 or null")
    _require(c.checkpoint.every >= 1, "checkpoint.every: must be >= 1")
    _require(c.checkpoint.keep_last >= 1, "checkpoint.keep_last: must be >= 1")

    dev = c.system.device
    _require(dev in ("auto", "cpu", "cuda") or (dev.startswith("cuda:") and dev[5:].isdigit()),
             f"system.device: {dev!r} is not one of auto, cpu, cuda, cuda:N")
    _require(c.system.threads >= 0, "system.threads: must be >= 0")
    _one_of(c.system.transport, ("gather", "hierarchical"), "system.transport")
    _one_of(c.system.placement, ("auto", "static", "per_round"), "system.placement")
    _require(not (c.system.placement == "per_round" and clients_have_state(c)),
             "system.placement: per_round needs stateless clients (no compression.error_feedback "
             "with a lossy uplink, no scaffold); use auto or static")
    _require(c.system.collective_timeout_s >= 0, "system.collective_timeout_s: must be >= 0 (0: no timeout)")
    from .compression import make_compressor  # late import; raises ConfigError naming the field
    make_compressor(c.compression)
