"""The scaling SPEC: a base config, a grid of settings, rounds and options (YAML).

    base: ../tiny.yaml          # relative to this file (else to the working directory)
    rounds: 3                   # federation.rounds of every point (default: the base's)
    set:                        # overrides of every point, dotted keys as with --set
      system.threads: 1
      sampling.num_samples: 0
    grid:                       # the points are the product of these lists
      ranks: [1, 2]             # MPI ranks (required)
      num_clients: [8]          # default: the base's
      clients_per_round: [null] # null: every client; default: the base's
      codec:                    # name -> compression.* overrides
        float32: {}
        q8: {uplink: quant, bits: 8}
      model:                    # name -> model.* overrides
        tiny: {}
    network: {...}              # the network model (network.py); default: its defaults
    options:
      warmup_rounds: 1          # first rounds left out of the per-round means
      timeout_s: 1800           # per point
      keep_going: true          # a failed point is recorded and the next one runs
      measure_rss: true         # peak RSS per rank (a small wrapper process per rank)
    slurm:                      # only for --slurm
      sbatch_args: ["--time=00:30:00"]
      cpus_per_task: 1
      max_parallel: 4           # array tasks running at once

A point whose ranks exceed its clients, or whose clients_per_round exceeds its clients, cannot
run and is skipped (reported); every other point must give a valid config. Unknown keys and bad
values are ConfigErrors naming the field (`grid.ranks[1]: ...`), which the CLI turns into exit 2.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from feddm_hpc.config import Config, dump_yaml, load_config, read_yaml
from feddm_hpc.config.loading import render_set_value
from feddm_hpc.errors import ConfigError
from feddm_hpc.scaling.network import NetworkConfig, parse_network

TOP_KEYS = ("base", "rounds", "set", "grid", "network", "options", "slurm")
GRID_KEYS = ("ranks", "num_clients", "clients_per_round", "codec", "model")
OPTION_DEFAULTS = {"warmup_rounds": 0, "timeout_s": 1800.0, "keep_going": True, "measure_rss": True}
SLURM_DEFAULTS = {"sbatch_args": [], "cpus_per_task": 1, "max_parallel": 0, "python": None}


@dataclass(frozen=True)
class Point:
    index: int
    ranks: int
    num_clients: int
    clients_per_round: int          # the effective cohort size
    codec: str
    model: str
    overrides: Tuple[str, ...]      # `--set` values, in order

    @property
    def name(self) -> str:
        return f"point-{self.index:03d}"

    def label(self) -> str:
        return (f"ranks={self.ranks} clients={self.num_clients} per_round={self.clients_per_round} "
                f"codec={self.codec} model={self.model}")

    def set_args(self) -> List[str]:
        return [x for o in self.overrides for x in ("--set", o)]


@dataclass
class Spec:
    path: Path
    base: Path
    rounds: int
    network: NetworkConfig
    options: Dict[str, Any]
    slurm: Dict[str, Any]
    points: List[Point] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)     # why grid combinations cannot run
    resolved: Dict[str, str] = field(default_factory=dict)   # point name -> resolved config YAML


# ---------------------------------------------------------------------------- values

def render_value(value: Any, name: str) -> str:
    """A value as `--set` text that YAML reads back as the same value, without whitespace
    (the SLURM sweep file splits its lines on whitespace)."""
    return render_set_value(value, name, no_whitespace=True)


def _mapping(value, name: str, allow_none: bool = True) -> dict:
    if value is None and allow_none:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{name}: expected a mapping, got {value!r}")
    return dict(value)


def _check_keys(data: Mapping, valid, name: str) -> None:
    for key in data:
        if key not in valid:
            where = f"{name}.{key}" if name else str(key)
            raise ConfigError(f"{where}: unknown key (valid: {', '.join(valid)})")


def _int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name}: expected an integer, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{name}: must be >= {minimum}, got {value}")
    return value


def _int_list(value, name: str, minimum: int, allow_null: bool = False) -> List[Optional[int]]:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise ConfigError(f"{name}: expected a non-empty list")
    out = []
    for i, v in enumerate(items):
        where = f"{name}[{i}]" if isinstance(value, list) else name
        out.append(None if (v is None and allow_null) else _int(v, where, minimum))
    return out


def _named_overrides(value, name: str) -> Dict[str, Dict[str, Any]]:
    """{name: {key: value}}; a list of names is taken as names with no overrides."""
    if isinstance(value, list):
        value = {str(v): {} for v in value}
    data = _mapping(value, name, allow_none=False)
    if not data:
        raise ConfigError(f"{name}: expected at least one entry")
    return {str(k): _mapping(v, f"{name}.{k}") for k, v in data.items()}


# ---------------------------------------------------------------------------- loading

def _find_base(spec_path: Path, base) -> Path:
    if not isinstance(base, str) or not base:
        raise ConfigError(f"{spec_path}: base: expected the path of a config file, got {base!r}")
    for candidate in (spec_path.parent / base, Path(base)):
        if candidate.is_file():
            return candidate.resolve()
    raise ConfigError(f"{spec_path}: base: {base}: file not found (relative to the spec's "
                      f"folder or the working directory)")


def _options(data, name: str, defaults: dict) -> dict:
    data = _mapping(data, name)
    _check_keys(data, tuple(defaults), name)
    out = dict(defaults, **data)
    return out


def _check_options(opts: dict, rounds: int) -> None:
    opts["warmup_rounds"] = _int(opts["warmup_rounds"], "options.warmup_rounds", 0)
    if opts["warmup_rounds"] >= rounds:
        raise ConfigError(f"options.warmup_rounds: must be below rounds ({rounds})")
    t = opts["timeout_s"]
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not t > 0:
        raise ConfigError(f"options.timeout_s: expected a positive number, got {t!r}")
    for key in ("keep_going", "measure_rss"):
        if not isinstance(opts[key], bool):
            raise ConfigError(f"options.{key}: expected true or false, got {opts[key]!r}")


def _check_slurm(s: dict) -> None:
    args = s["sbatch_args"]
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise ConfigError(f"slurm.sbatch_args: expected a list of strings, got {args!r}")
    _int(s["cpus_per_task"], "slurm.cpus_per_task", 1)
    _int(s["max_parallel"], "slurm.max_parallel", 0)
    if s["python"] is not None and not isinstance(s["python"], str):
        raise ConfigError(f"slurm.python: expected a path, got {s['python']!r}")


def _config(base: Path, overrides: List[str], where: str) -> Config:
    try:
        return load_config(base, overrides)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def load_spec(path) -> Spec:
    path = Path(path)
    try:
        tree = read_yaml(path)
    except ConfigError as exc:
        raise ConfigError(f"{exc}") from None
    _check_keys(tree, TOP_KEYS, "")
    if "base" not in tree:
        raise ConfigError(f"{path}: base: required (the config every point starts from)")
    if "grid" not in tree:
        raise ConfigError(f"{path}: grid: required (at least grid.ranks)")
    base = _find_base(path, tree["base"])
    common = [f"{k}={render_value(v, f'set.{k}')}" for k, v in _mapping(tree.get("set"), "set").items()]
    base_cfg = _config(base, common, "set")
    rounds = base_cfg.federation.rounds if tree.get("rounds") is None else _int(tree["rounds"], "rounds", 1)
    common += [f"federation.rounds={rounds}", "system.progress=false"]
    options = _options(tree.get("options"), "options", OPTION_DEFAULTS)
    _check_options(options, rounds)
    slurm = _options(tree.get("slurm"), "slurm", SLURM_DEFAULTS)
    _check_slurm(slurm)
    spec = Spec(path=path, base=base, rounds=rounds, network=parse_network(tree.get("network")),
                options=options, slurm=slurm)
    _expand(spec, base_cfg, common, _mapping(tree["grid"], "grid", allow_none=False))
    return spec


def _expand(spec: Spec, base_cfg: Config, common: List[str], grid: dict) -> None:
    _check_keys(grid, GRID_KEYS, "grid")
    if "ranks" not in grid:
        raise ConfigError("grid.ranks: required (a list of MPI rank counts)")
    fed = base_cfg.federation
    ranks = _int_list(grid["ranks"], "grid.ranks", 1)
    clients = _int_list(grid.get("num_clients", fed.num_clients), "grid.num_clients", 1)
    per_round = _int_list(grid.get("clients_per_round", fed.clients_per_round),
                          "grid.clients_per_round", 1, allow_null=True)
    codecs = _named_overrides(grid.get("codec", {"base": {}}), "grid.codec")
    models = _named_overrides(grid.get("model", {"base": {}}), "grid.model")
    codec_sets = {n: [f"compression.{k}={render_value(v, f'grid.codec.{n}.{k}')}" for k, v in o.items()]
                  for n, o in codecs.items()}
    model_sets = {n: [f"model.{k}={render_value(v, f'grid.model.{n}.{k}')}" for k, v in o.items()]
                  for n, o in models.items()}
    for n, sets in codec_sets.items():   # each entry on its own, so an error names it
        _config(spec.base, common + sets, f"grid.codec.{n}")
    for n, sets in model_sets.items():
        _config(spec.base, common + sets, f"grid.model.{n}")
    in_grid = {k: k in grid for k in ("num_clients", "clients_per_round")}
    for model, codec, n, p, r in itertools.product(models, codecs, clients, per_round, ranks):
        cohort = n if p is None else p
        what = f"ranks={r} clients={n} per_round={p}"
        if p is not None and p > n:
            spec.skipped.append(f"{what}: clients_per_round exceeds num_clients")
            continue
        if r > n:
            spec.skipped.append(f"{what}: more ranks than clients")
            continue
        sets = list(common)
        if in_grid["num_clients"]:
            sets.append(f"federation.num_clients={n}")
        if in_grid["clients_per_round"]:
            sets.append(f"federation.clients_per_round={render_value(p, 'grid.clients_per_round')}")
        sets += codec_sets[codec] + model_sets[model]
        point = Point(len(spec.points), r, n, cohort, codec, model, tuple(sets))
        cfg = _config(spec.base, sets, f"grid point {point.name} ({point.label()})")
        spec.resolved[point.name] = dump_yaml(cfg)
        spec.points.append(point)
    if not spec.points:
        raise ConfigError("grid: no point can run (" + "; ".join(spec.skipped[:3]) + ")")


def describe(spec: Spec) -> str:
    lines = [f"{p.name}  {p.label()}" for p in spec.points]
    lines += [f"skipped: {s}" for s in spec.skipped]
    return "\n".join(lines)
