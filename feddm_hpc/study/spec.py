"""The study SPEC (YAML): a base config, named cells of overrides, seeds, what to evaluate and when,
and what to report. Relative paths are relative to the spec's folder (else the working directory).

    name: privacy                  # default: the file's stem
    base: base.yaml                # the config every run starts from
    ranks: 1                       # MPI ranks per run (1: plain python, no mpiexec)
    threads: 1                     # torch threads per rank (system.threads); default: the config's
    seeds: [0, 1, 2]               # every cell's seeds, unless the cell names its own
    set: {federation.rounds: 10}   # overrides of every run (dotted keys, as with --set)
    cells:                         # name -> overrides (in table and run order); `seeds` is the
      nodp: {}                     #   only key that is not a config key
      dp-z1: {privacy.clip_norm: 1.0, privacy.noise_multiplier: 1.0}
      krum-clean: {server.aggregation: krum, seeds: [0, 1]}
    evaluate:                      # `feddm-hpc evaluate` of each run's checkpoints
      at: final                    # final | all (every checkpoint the run keeps)
      num_samples: 1000            # --num-samples; the other keys map onto evaluate's flags:
      sampler: ddim                # --sampler, steps: --steps, eta: --eta, seed: --seed,
      extractor_epochs: 2          # --extractor-epochs, extractor_train_subset:
      memorization: true           # --extractor-train-subset, memorization: false -> --no-memorization
    report: {...}                  # tables, notes, paired differences, plots (report_spec.py)
    slurm:                         # only for --slurm (one array task per run)
      sbatch_args: ["--time=02:00:00"]
      max_parallel: 4              # array tasks at once (0: no limit)
      python: null                 # interpreter on the nodes (default: this one)

Every cell's config is built (base + set + cell + seed) and validated when the spec loads: an
unknown key or a bad value anywhere is a ConfigError naming the field (exit 2).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple

from feddm_hpc.config import Config, load_config, read_yaml
from feddm_hpc.config.choices import require
from feddm_hpc.errors import ConfigError
from feddm_hpc.study import fields as f
from feddm_hpc.study.report_spec import Report, parse_report

TOP_KEYS = ("name", "base", "ranks", "threads", "seeds", "set", "cells", "evaluate", "report",
            "slurm")
EVAL_KEYS = ("at", "num_samples", "sampler", "steps", "eta", "seed", "extractor_epochs",
             "extractor_train_subset", "memorization", "set")
SLURM_KEYS = ("sbatch_args", "max_parallel", "python")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
# What the study sets on every run besides the spec's own overrides; config comparisons skip them.
RUNTIME_KEYS = ("system.threads", "system.progress")


@dataclass(frozen=True)
class Cell:
    name: str
    overrides: Tuple[str, ...]      # `--set` texts of this cell, after the spec's `set`
    seeds: Tuple[int, ...]


@dataclass(frozen=True)
class Evaluate:
    at: str = "final"
    num_samples: int = 1000
    sampler: Optional[str] = None
    steps: Optional[int] = None
    eta: Optional[float] = None
    seed: Optional[int] = None
    extractor_epochs: Optional[int] = None
    extractor_train_subset: Optional[int] = None
    memorization: bool = True
    overrides: Tuple[str, ...] = ()

    def flags(self) -> List[str]:
        """The `feddm-hpc evaluate` flags (after the checkpoint)."""
        out = ["--num-samples", str(self.num_samples)]
        for flag, value in (("--sampler", self.sampler), ("--steps", self.steps),
                            ("--eta", self.eta), ("--seed", self.seed),
                            ("--extractor-epochs", self.extractor_epochs),
                            ("--extractor-train-subset", self.extractor_train_subset)):
            if value is not None:
                out += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
        if not self.memorization:
            out.append("--no-memorization")
        return out + [x for o in self.overrides for x in ("--set", o)]

    def matches(self, record: dict) -> bool:
        """Whether an evaluation JSON was made with these settings (those it records)."""
        want = {"num_samples": self.num_samples, "sampler": self.sampler, "steps": self.steps,
                "eta": self.eta, "seed": self.seed}
        return all(record.get(k) == v for k, v in want.items() if v is not None)


@dataclass(frozen=True)
class SlurmOptions:
    sbatch_args: Tuple[str, ...] = ()
    max_parallel: int = 0
    python: Optional[str] = None


@dataclass(frozen=True)
class Spec:
    path: Path
    name: str
    base: Path
    ranks: int
    threads: Optional[int]
    sets: Tuple[str, ...]           # the spec's `set`, then the runtime settings
    cells: Tuple[Cell, ...]
    evaluate: Evaluate
    report: Report
    slurm: SlurmOptions = field(default_factory=SlurmOptions)

    def cell(self, name: str) -> Cell:
        return next(c for c in self.cells if c.name == name)

    def run_overrides(self, cell: Cell, seed: int) -> List[str]:
        """Every `--set` of one run, in order: the spec's, the cell's, the seed."""
        return [*self.sets, *cell.overrides, f"seed={seed}"]

    def config(self, cell: Cell, seed: int) -> Config:
        return load_config(self.base, self.run_overrides(cell, seed))


def _find(spec_path: Path, value, where: str) -> Path:
    value = f.string(value, where)
    for candidate in (spec_path.parent / value, Path(value)):
        if candidate.is_file():
            return candidate.resolve()
    raise ConfigError(f"{where}: {value}: file not found (relative to the spec's folder or the "
                      f"working directory)")


def _evaluate(data) -> Evaluate:
    data = f.mapping(data, "evaluate")
    f.check_keys(data, EVAL_KEYS, "evaluate")
    kw = {}
    if "at" in data:
        kw["at"] = f.string(data["at"], "evaluate.at", ("final", "all"))
    for key, minimum in (("num_samples", 6), ("steps", 1), ("seed", 0), ("extractor_epochs", 1),
                         ("extractor_train_subset", 100)):
        if data.get(key) is not None:
            kw[key] = f.integer(data[key], f"evaluate.{key}", minimum)
    if data.get("sampler") is not None:
        kw["sampler"] = f.string(data["sampler"], "evaluate.sampler", ("ddim", "ddpm"))
    if data.get("eta") is not None:
        kw["eta"] = f.number(data["eta"], "evaluate.eta")
        require(0.0 <= kw["eta"] <= 1.0, "evaluate.eta: must be in [0, 1]")
    if "memorization" in data:
        kw["memorization"] = f.boolean(data["memorization"], "evaluate.memorization")
    kw["overrides"] = tuple(f.overrides(data.get("set"), "evaluate.set"))
    return Evaluate(**kw)


def _slurm(data) -> SlurmOptions:
    data = f.mapping(data, "slurm")
    f.check_keys(data, SLURM_KEYS, "slurm")
    args = data.get("sbatch_args") or []
    require(isinstance(args, list) and all(isinstance(a, str) for a in args),
            f"slurm.sbatch_args: expected a list of strings, got {args!r}")
    python = data.get("python")
    return SlurmOptions(tuple(args), f.integer(data.get("max_parallel", 0), "slurm.max_parallel", 0),
                        None if python is None else f.string(python, "slurm.python"))


def _cells(data, seeds: Optional[List[int]]) -> Tuple[Cell, ...]:
    data = f.mapping(data, "cells", allow_none=False)
    require(bool(data), "cells: expected at least one cell")
    out = []
    for name, body in data.items():
        where = f"cells.{name}"
        require(bool(NAME.match(name)), f"{where}: a cell name is a folder name: letters, digits "
                                        f"and . _ + - (not starting with one of these)")
        body = dict(f.mapping(body, where))
        own = body.pop("seeds", None)
        cell_seeds = f.int_list(own, f"{where}.seeds", 0) if own is not None else seeds
        require(cell_seeds is not None, f"{where}.seeds: required (or give the spec's seeds)")
        out.append(Cell(name, tuple(f.overrides(body, where)), tuple(cell_seeds)))
    return tuple(out)


def _check_configs(spec: Spec) -> None:
    """Builds each cell's config (first seed): a bad override is an error naming the cell."""
    for cell in spec.cells:
        try:
            cfg = spec.config(cell, cell.seeds[0])
        except ConfigError as exc:
            raise ConfigError(f"cells.{cell.name}: {exc}") from None
        n = cfg.federation.num_clients
        require(spec.ranks <= n, f"cells.{cell.name}: ranks {spec.ranks} exceed its "
                                 f"federation.num_clients {n} (every rank hosts a client)")


def load_spec(path, check_configs: bool = True) -> Spec:
    """The spec at `path`, validated; ConfigError (exit 2) naming the field otherwise."""
    path = Path(path)
    try:
        return _load(path, check_configs)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _load(path: Path, check_configs: bool) -> Spec:
    tree = read_yaml(path)
    f.check_keys(tree, TOP_KEYS, "")
    for key in ("base", "cells"):
        require(key in tree, f"{key}: required")
    name = f.string(tree.get("name", path.stem), "name")
    require(bool(NAME.match(name)), f"name: {name!r}: letters, digits and . _ + - only")
    seeds = f.int_list(tree["seeds"], "seeds", 0) if tree.get("seeds") is not None else None
    ranks = f.integer(tree.get("ranks", 1), "ranks", 1)
    threads = f.integer(tree["threads"], "threads", 1) if tree.get("threads") is not None else None
    sets = f.overrides(tree.get("set"), "set")
    sets += [f"system.threads={threads}"] if threads else []
    sets.append("system.progress=false")
    cells = _cells(tree["cells"], seeds)
    report = parse_report(tree.get("report"), [c.name for c in cells])
    spec = Spec(path=path, name=name, base=_find(path, tree["base"], "base"), ranks=ranks,
                threads=threads, sets=tuple(sets), cells=cells, evaluate=_evaluate(tree.get("evaluate")),
                report=report, slurm=_slurm(tree.get("slurm")))
    if check_configs:
        _check_configs(spec)
    return spec
