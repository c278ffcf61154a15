"""The study SPEC (YAML): a base config, named cells of overrides, seeds, what to evaluate and when,
and what to report. Relative paths are relative to the spec's folder (else the working directory).

    name: privacy                  # default: the file's stem
    base: base.yaml                # the config every run starts from
    ranks: 1                       # MPI ranks per run (1: plain python, no mpiexec); a cell's
    threads: 1                     #   own `ranks:` / `threads:` win; threads: torch threads per
                                   #   rank (system.threads), default: the config's
    jobs: 1                        # runs at once (default: as many as the cores hold; --jobs wins)
    measure_rss: false             # true: each rank's peak RSS in RUN_DIR/rss (scaling/rss.py)
    seeds: [0, 1, 2]               # every cell's seeds, unless the cell names its own
    set: {federation.rounds: 10}   # overrides of every run (dotted keys, as with --set)
    cells:                         # name -> overrides (in table and run order); `seeds`,
      nodp: {}                     #   `ranks` and `threads` are the keys that are not config keys
      dp-z1: {privacy.clip_norm: 1.0, privacy.noise_multiplier: 1.0}
      krum-clean: {server.aggregation: krum, seeds: [0, 1]}
    grid: {...}                    # more cells: the product of axes (grid.py), after `cells`
    evaluate:                      # `feddm-hpc evaluate` of each run's checkpoints
      at: final                    # final | all (every checkpoint the run keeps) | none
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
unknown key or a bad value anywhere is a ConfigError naming the field (exit 2). A grid
combination that cannot run (more ranks than clients, ...) is skipped and listed in `skipped`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import List, Optional, Tuple

from feddm_hpc.config import Config, load_config, read_yaml
from feddm_hpc.config.choices import require
from feddm_hpc.errors import ConfigError
from feddm_hpc.study import fields as f
from feddm_hpc.study import grid as G
from feddm_hpc.study.report_spec import Report, parse_report

TOP_KEYS = ("name", "base", "ranks", "threads", "jobs", "measure_rss", "seeds", "set", "cells",
            "grid", "evaluate", "report", "slurm")
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
    ranks: int = 1                  # MPI ranks of each of its runs
    threads: Optional[int] = None   # torch threads per rank (None: the config's)
    axes: Tuple[Tuple[str, str], ...] = ()   # a grid cell's (axis, value name)
    grid: bool = False

    @property
    def cores(self) -> int:
        return self.ranks * (self.threads or 1)


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
    ranks: int                      # the default of a cell's ranks and threads
    threads: Optional[int]
    sets: Tuple[str, ...]           # the spec's `set`, then the runtime settings
    cells: Tuple[Cell, ...]
    evaluate: Evaluate
    report: Report
    slurm: SlurmOptions = field(default_factory=SlurmOptions)
    jobs: Optional[int] = None
    measure_rss: bool = False
    skipped: Tuple[str, ...] = ()   # grid combinations that cannot run, with why

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
        kw["at"] = f.string(data["at"], "evaluate.at", ("final", "all", "none"))
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


def _cell(name: str, body, where: str, seeds, ranks: int, threads: Optional[int],
          axes=(), grid: bool = False) -> Cell:
    body = dict(f.mapping(body, where))
    own = body.pop("seeds", None)
    cell_seeds = f.int_list(own, f"{where}.seeds", 0) if own is not None else seeds
    require(cell_seeds is not None, f"{where}.seeds: required (or give the spec's seeds)")
    if "ranks" in body:
        ranks = f.integer(body.pop("ranks"), f"{where}.ranks", 1)
    own_threads = body.pop("threads", None)
    overrides = f.overrides(body, where)
    if own_threads is not None:
        threads = f.integer(own_threads, f"{where}.threads", 1)
        overrides.append(f"system.threads={threads}")   # after the spec's: the cell's wins
    return Cell(name, tuple(overrides), tuple(cell_seeds), ranks, threads, tuple(axes), grid)


def _cells(tree: dict, seeds: Optional[List[int]], ranks: int, threads) -> Tuple[Cell, ...]:
    require("cells" in tree or "grid" in tree, "cells: required (or a grid)")
    data = f.mapping(tree.get("cells"), "cells")
    require(bool(data) or "grid" in tree, "cells: expected at least one cell")
    out = []
    for name, body in data.items():
        where = f"cells.{name}"
        require(bool(NAME.match(name)), f"{where}: a cell name is a folder name: letters, digits "
                                        f"and . _ + - (not starting with one of these)")
        out.append(_cell(name, body, where, seeds, ranks, threads))
    if "grid" in tree:
        for g in G.expand(tree["grid"]):
            require(g.name not in data, f"grid: its cell {g.name} is also in cells")
            out.append(_cell(g.name, g.body, f"grid ({g.name})", seeds, ranks, threads, g.axes,
                             grid=True))
    return tuple(out)


def _check_configs(spec: Spec) -> Tuple[Tuple[Cell, ...], Tuple[str, ...]]:
    """Builds each cell's config (first seed): a bad override is an error naming the cell; a
    grid combination that cannot run is left out (the cells kept, why the others went)."""
    kept, skipped = [], []
    for cell in spec.cells:
        where = f"grid ({cell.name})" if cell.grid else f"cells.{cell.name}"
        try:
            cfg = spec.config(cell, cell.seeds[0])
        except ConfigError as exc:
            why = G.unrunnable(str(exc)) if cell.grid else None
            if why is None:
                raise ConfigError(f"{where}: {exc}") from None
            skipped.append(f"{cell.name}: {why}")
            continue
        n = cfg.federation.num_clients
        if cell.ranks > n and cell.grid:
            skipped.append(f"{cell.name}: more ranks ({cell.ranks}) than clients ({n})")
            continue
        require(cell.ranks <= n, f"{where}: ranks {cell.ranks} exceed its "
                                 f"federation.num_clients {n} (every rank hosts a client)")
        warmup = getattr(spec.report, "warmup_rounds", 0)
        require(warmup < cfg.federation.rounds, f"report.warmup_rounds: must be below the rounds "
                                                f"of every cell ({cell.name}: {cfg.federation.rounds})")
        kept.append(cell)
    require(bool(kept), "grid: no cell can run (" + "; ".join(skipped[:3]) + ")")
    return tuple(kept), tuple(skipped)


def load_spec(path, tree: Optional[dict] = None) -> Spec:
    """The spec at `path` (or `tree`, read from there), validated; ConfigError (exit 2) naming
    the field otherwise."""
    path = Path(path)
    try:
        return _load(path, read_yaml(path) if tree is None else tree)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _load(path: Path, tree: dict) -> Spec:
    f.check_keys(tree, TOP_KEYS, "")
    require("base" in tree, "base: required")
    name = f.string(tree.get("name", path.stem), "name")
    require(bool(NAME.match(name)), f"name: {name!r}: letters, digits and . _ + - only")
    seeds = f.int_list(tree["seeds"], "seeds", 0) if tree.get("seeds") is not None else None
    ranks = f.integer(tree.get("ranks", 1), "ranks", 1)
    threads = f.integer(tree["threads"], "threads", 1) if tree.get("threads") is not None else None
    jobs = f.integer(tree["jobs"], "jobs", 1) if tree.get("jobs") is not None else None
    sets = f.overrides(tree.get("set"), "set")
    sets += [f"system.threads={threads}"] if threads else []
    sets.append("system.progress=false")
    cells = _cells(tree, seeds, ranks, threads)
    report = parse_report(tree.get("report"), [c.name for c in cells])
    spec = Spec(path=path, name=name, base=_find(path, tree["base"], "base"), ranks=ranks,
                threads=threads, sets=tuple(sets), cells=cells, evaluate=_evaluate(tree.get("evaluate")),
                report=report, slurm=_slurm(tree.get("slurm")), jobs=jobs,
                measure_rss=f.boolean(tree.get("measure_rss", False), "measure_rss"))
    kept, skipped = _check_configs(spec)
    if skipped:   # the report may only name cells that run
        report = parse_report(tree.get("report"), [c.name for c in kept])
    return replace(spec, cells=kept, skipped=skipped, report=report)
