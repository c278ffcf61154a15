"""A study's runs and where each one stands, read from its run directory alone.

Run i of a spec is cell c with seed s, in OUT/runs/<c>/seed<s>; runs are numbered seed by seed
(every cell's first seed before any cell's second), which is also the order they start in and
the Slurm array's task numbers. A run directory is in one of these states:

  differs   its config.yaml differs from the spec's config for it in a key it records (keys it
            lacks are newer fields, skipped; so are system.threads, system.progress and the
            evaluation extractor's settings, EVALUATION_ONLY_KEYS)
  train     no checkpoint yet: `train` (again)
  resume    checkpoints, not the final round: `resume`
  evaluate  the final round is trained (its checkpoint exists, or a copy without checkpoints has
            all rounds in metrics.jsonl); some wanted evaluation JSON is missing or was made
            with other settings: `evaluate` those checkpoints
  done      every wanted evaluation is there: skipped

Wanted evaluations: the final round (evaluate.at: final), none (at: none: a run is done once
trained), or every round the config keeps a checkpoint of (at: all: the rounds r with
(r + 1) % checkpoint.every == 0 and the last one, the last checkpoint.keep_last of them). A run being worked on holds RUN_DIR/.running (host, pid).
"""
from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

import yaml

from feddm_hpc.config import to_tree
from feddm_hpc.errors import ConfigError
from feddm_hpc.study.spec import RUNTIME_KEYS, Spec

MARKER = ".running"


@dataclass(frozen=True)
class RunPlan:
    index: int
    cell: str
    seed: int
    run_dir: Path
    overrides: Tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{self.cell}/seed{self.seed}"


@dataclass(frozen=True)
class RunState:
    plan: RunPlan
    state: str                      # done | evaluate | resume | train | differs
    rounds: int = 0                 # federation.rounds
    rounds_done: int = 0            # rounds in metrics.jsonl
    wanted: Tuple[int, ...] = ()    # rounds to have evaluated
    to_evaluate: Tuple[int, ...] = ()
    message: str = ""
    running: Optional[dict] = None  # the marker of a run being worked on


def plan_runs(spec: Spec, out: Path) -> List[RunPlan]:
    seeds = sorted({s for c in spec.cells for s in c.seeds})
    plans = []
    for seed in seeds:
        for cell in spec.cells:
            if seed in cell.seeds:
                plans.append(RunPlan(len(plans), cell.name, seed,
                                     Path(out) / "runs" / cell.name / f"seed{seed}",
                                     tuple(spec.run_overrides(cell, seed))))
    return plans


def kept_rounds(config) -> List[int]:
    every, n = config.checkpoint.every, config.federation.rounds
    rounds = [r for r in range(n) if (r + 1) % every == 0 or r == n - 1]
    return rounds[-config.checkpoint.keep_last:]


def _flat(tree, prefix="") -> dict:
    out = {}
    for k, v in (tree or {}).items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


# Keys that do not change what a run trains: the feature extractor of evaluations during
# training. The study checks each evaluation JSON's own settings (`evaluated`), so a run trained
# under an older default (extractor_epochs 2 before null meant "the extractor's own") stays done.
EVALUATION_ONLY_KEYS = ("evaluation.extractor_epochs", "evaluation.extractor_max_train")


def config_difference(expected_tree: dict, stored_text: str) -> Optional[str]:
    """The first key the stored config records with another value than the spec's, or None."""
    try:
        stored = _flat(yaml.safe_load(stored_text))
    except (yaml.YAMLError, AttributeError):
        return "config.yaml is not a YAML mapping"
    want = _flat(expected_tree)
    for key, value in stored.items():
        if key in RUNTIME_KEYS or key in EVALUATION_ONLY_KEYS:
            continue
        if key in want and want[key] != value:
            return f"{key} is {value!r} there, {want[key]!r} in the spec"
    return None


def _rounds(path: Path) -> set:
    out = set()
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                out.add(json.loads(line)["round"])
            except (ValueError, KeyError, TypeError):
                pass
    return out


def checkpoint_path(run_dir: Path, r: int) -> Path:
    return run_dir / "checkpoints" / f"round-{r:06d}.h5"


def eval_path(run_dir: Path, r: int) -> Path:
    return run_dir / "eval" / f"round-{r:06d}.json"


def evaluated(spec: Spec, run_dir: Path, r: int) -> bool:
    try:
        return spec.evaluate.matches(json.loads(eval_path(run_dir, r).read_text()))
    except (OSError, ValueError, AttributeError):
        return False


def inspect_run(spec: Spec, plan: RunPlan) -> RunState:
    d = plan.run_dir
    try:
        config = spec.config(spec.cell(plan.cell), plan.seed)
    except ConfigError as exc:   # the spec was valid at load: only a changed base gets here
        return RunState(plan, "differs", message=str(exc))
    rounds, running = config.federation.rounds, read_marker(d)
    if (d / "config.yaml").is_file():
        diff = config_difference(to_tree(config), (d / "config.yaml").read_text())
        if diff:
            return RunState(plan, "differs", rounds, message=diff, running=running)
    done = _rounds(d / "metrics.jsonl")
    ckpts = sorted(int(p.stem.split("-")[1]) for p in (d / "checkpoints").glob("round-*.h5"))
    final = rounds - 1
    trained = final in ckpts or (not ckpts and final in done)
    at = spec.evaluate.at
    wanted = (final,) if at == "final" else () if at == "none" else tuple(kept_rounds(config))
    missing = tuple(r for r in wanted if not evaluated(spec, d, r))
    state = ("evaluate" if missing else "done") if trained else ("resume" if ckpts else "train")
    return RunState(plan, state, rounds, len(done), wanted, missing, running=running)


# ---------------------------------------------------------------------------- the marker

def write_marker(run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / MARKER).write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                              "since": time.strftime("%Y-%m-%d %H:%M:%S")}))


def remove_marker(run_dir: Path) -> None:
    try:
        (run_dir / MARKER).unlink()
    except FileNotFoundError:
        pass


def read_marker(run_dir: Path) -> Optional[dict]:
    """The marker of a live worker: on this host its pid must exist (else it is stale)."""
    try:
        info = json.loads((run_dir / MARKER).read_text())
    except (OSError, ValueError):
        return None
    if info.get("host") == socket.gethostname():
        try:
            os.kill(int(info.get("pid")), 0)
        except (ProcessLookupError, ValueError, TypeError):
            return None
        except PermissionError:
            pass
    return info


# ---------------------------------------------------------------------------- commands

def train_args(spec: Spec, plan: RunPlan) -> List[str]:
    args = ["train", str(spec.base), "--run-dir", str(plan.run_dir)]
    return args + [x for o in plan.overrides for x in ("--set", o)]


def resume_args(plan: RunPlan) -> List[str]:
    return ["resume", str(plan.run_dir)]


def evaluate_args(spec: Spec, plan: RunPlan, r: int) -> List[str]:
    cell = spec.cell(plan.cell)
    threads = ["--set", f"system.threads={cell.threads}"] if cell.threads else []
    return ["evaluate", str(checkpoint_path(plan.run_dir, r)), *spec.evaluate.flags(), *threads]
