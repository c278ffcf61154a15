"""The scaling spec format before scaling became a kind of study (issue 20), translated into a
study spec tree, so `feddm-hpc scaling OLD.yaml` still runs (through `feddm-hpc study`).

    base: ../tiny.yaml                 ->  base: ../tiny.yaml
    rounds: 3                          ->  set: {federation.rounds: 3, ...}
    set: {system.threads: 1, ...}      ->  threads: 1; set: {...}
    grid:                              ->  grid (first axis slowest, ranks fastest, as before):
      model: {tiny: {base_channels: 8}}      model: {tiny: {model.base_channels: 8}}
      codec: {q8: {uplink: quant, bits: 8}}  codec: {q8: {compression.uplink: quant, ...}}
      num_clients: [4, 8]                    federation.num_clients: [4, 8]
      clients_per_round: [null]              federation.clients_per_round: [null]
      ranks: [1, 2]                          ranks: [1, 2]
    network: {...}                     ->  report: {kind: scaling, network: {...},
    options: {warmup_rounds: 1,                     warmup_rounds: 1}
              measure_rss: true}       ->  measure_rss: true (the default here, as before)
    slurm: {sbatch_args, max_parallel, python}  ->  slurm: the same
                                       +   seeds: [the base config's seed]; evaluate: {at: none};
                                           jobs: 1 (one run at a time, as before)

Dropped, with a note: options.timeout_s (the study has no per-run limit: stop it with Ctrl-C or
SIGTERM, rerun to go on), options.keep_going (a study always goes on past a failed run) and
slurm.cpus_per_task (the spec's threads give --cpus-per-task). Errors name the old fields where
the translation reads them; the rest are the study's (ConfigError, exit 2).
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Mapping, Tuple

from feddm_hpc.config import load_config
from feddm_hpc.errors import ConfigError

TOP_KEYS = ("base", "rounds", "set", "grid", "network", "options", "slurm")
GRID_KEYS = ("ranks", "num_clients", "clients_per_round", "codec", "model")
OPTION_KEYS = ("warmup_rounds", "timeout_s", "keep_going", "measure_rss")
SLURM_KEYS = ("sbatch_args", "cpus_per_task", "max_parallel", "python")


def is_legacy(tree: Mapping) -> bool:
    """A scaling spec of the old format: no cells and no report (a study spec has one)."""
    return isinstance(tree, Mapping) and "cells" not in tree and "report" not in tree


def _mapping(value, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {value!r}")
    return dict(value)


def _check(data: Mapping, valid, where: str) -> None:
    for key in data:
        if key not in valid:
            name = f"{where}.{key}" if where else str(key)
            raise ConfigError(f"{name}: unknown key (valid: {', '.join(valid)})")


def _named(value, where: str, prefix: str) -> dict:
    if isinstance(value, list):
        value = {str(v): {} for v in value}
    data = _mapping(value, where)
    return {str(name): {f"{prefix}.{k}": v for k, v in _mapping(body, f"{where}.{name}").items()}
            for name, body in data.items()}


def _seed(spec_path: Path, base) -> int:
    for candidate in (spec_path.parent / str(base), Path(str(base))):
        if candidate.is_file():
            return load_config(candidate).seed
    raise ConfigError(f"base: {base}: file not found (relative to the spec's folder or the "
                      f"working directory)")


def translate(tree: Mapping, spec_path: Path) -> Tuple[dict, List[str]]:
    """(the study spec tree, notes on what was dropped)."""
    _check(tree, TOP_KEYS, "")
    if "base" not in tree:
        raise ConfigError("base: required (the config every point starts from)")
    grid = _mapping(tree.get("grid"), "grid")
    _check(grid, GRID_KEYS, "grid")
    if "ranks" not in grid:
        raise ConfigError("grid.ranks: required (a list of MPI rank counts)")
    sets = _mapping(tree.get("set"), "set")
    seed = sets.pop("seed", None)
    study: dict = {"base": tree["base"],
                   "seeds": [seed if seed is not None else _seed(spec_path, tree["base"])],
                   "jobs": 1, "evaluate": {"at": "none"}}
    if "system.threads" in sets:
        study["threads"] = sets.pop("system.threads")
    if tree.get("rounds") is not None:
        sets["federation.rounds"] = tree["rounds"]
    study["set"] = sets
    axes: dict = {}
    if "model" in grid:
        axes["model"] = _named(grid["model"], "grid.model", "model")
    if "codec" in grid:
        axes["codec"] = _named(grid["codec"], "grid.codec", "compression")
    for key in ("num_clients", "clients_per_round"):
        if key in grid:
            axes[f"federation.{key}"] = grid[key]
    axes["ranks"] = grid["ranks"]
    study["grid"] = axes
    options = _mapping(tree.get("options"), "options")
    _check(options, OPTION_KEYS, "options")
    notes = [f"options.{k}: dropped (see feddm_hpc/scaling/legacy.py)"
             for k in ("timeout_s", "keep_going") if k in options]
    study["measure_rss"] = options.get("measure_rss", True)
    study["report"] = {"kind": "scaling", "warmup_rounds": options.get("warmup_rounds", 0),
                       "network": tree.get("network")}
    slurm = _mapping(tree.get("slurm"), "slurm")
    _check(slurm, SLURM_KEYS, "slurm")
    if "cpus_per_task" in slurm:
        notes.append("slurm.cpus_per_task: dropped (set system.threads: the spec's threads)")
        slurm.pop("cpus_per_task")
    study["slurm"] = slurm
    return study, notes
