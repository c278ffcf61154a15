"""A training job around one Simulation: the run directory, resuming from its latest valid
checkpoint, the run files, the rounds, and what a resume with a new round count changes.
Collective: every rank calls these functions. The command line (cli/train.py) and the Python
API (feddm_hpc/api.py) both run training through here, so they behave alike.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable, Optional, Tuple

from feddm_hpc.comm import root_decides
from feddm_hpc.errors import UserError


def prepare_run_dir(comm, run_dir: Path, allow_resume: bool = False) -> str:
    """"fresh" after creating an empty run directory (checkpoints/, metrics.jsonl), or "resume"
    when it already holds checkpoints and `allow_resume` (a requeued Slurm job); otherwise a
    UserError: nothing a user trained is overwritten."""
    from feddm_hpc.rundir.checkpoint import list_checkpoints

    def check():
        if list_checkpoints(run_dir / "checkpoints"):
            if allow_resume:
                return "resume"
            raise UserError(f"{run_dir}: already holds checkpoints; continue it with "
                            f"`feddm-hpc resume {run_dir}` or choose another --run-dir")
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        (run_dir / "metrics.jsonl").write_text("")
        return "fresh"
    return root_decides(comm, check)


def resume_point(comm, run_dir: Path, overrides=()) -> Tuple[str, object, object]:
    """(the latest valid checkpoint, the config to resume with (its own plus `overrides`), its
    own config): UserError when the run directory or a valid checkpoint is missing."""
    from feddm_hpc.config import config_from_yaml_text
    from feddm_hpc.rundir.checkpoint import latest_valid, load_checkpoint

    def find():
        if not run_dir.is_dir():
            raise UserError(f"{run_dir}: run directory not found")
        path = latest_valid(run_dir / "checkpoints", warn=lambda m: print(f"warning: {m}", file=sys.stderr))
        if path is None:
            raise UserError(f"{run_dir}: no valid checkpoint to resume from")
        return str(path)
    path = root_decides(comm, find)
    text = load_checkpoint(path, verify=False).config_yaml
    return path, config_from_yaml_text(text, list(overrides)), config_from_yaml_text(text)


def run_training(comm, config, run_dir: Path, checkpoint_path: Optional[str] = None,
                 checkpoint_config=None, stop: Callable[[], bool] = lambda: False,
                 stop_name: Callable[[], Optional[str]] = lambda: None) -> str:
    """Trains `config` into `run_dir` (from `checkpoint_path` when resuming; checkpoint_config is
    the config stored in it, before overrides). Returns "done", "stopped" (`stop()` became true:
    a checkpoint was written) or "complete" (no round was left)."""
    from feddm_hpc.config import dump_yaml
    from feddm_hpc.federation.callbacks import standard_callbacks, user_callbacks
    from feddm_hpc.federation.simulation import Simulation
    from feddm_hpc.rundir.checkpoint import load_checkpoint
    from feddm_hpc.rundir.run_outputs import write_run_files
    from feddm_hpc.rundir.runlog import RunLog

    comm.timeout_s = config.system.collective_timeout_s
    extra = user_callbacks(config.logging.callbacks)   # imported and checked before any data
    log = RunLog(comm.rank, run_dir, progress=config.system.progress)
    sim = Simulation(config, comm, run_dir, log, stop_requested=stop)
    if comm.rank == 0:
        write_run_files(run_dir, dump_yaml(config), sim.setup)
    if checkpoint_path is not None:
        sim.restore(load_checkpoint(checkpoint_path))
        log.info(f"resumed from {checkpoint_path} (round {sim.start_round - 1} complete)")
        note = rounds_change_note(checkpoint_config, config, sim.start_round)
        if note is not None:
            log.info(note)
    if sim.start_round >= config.federation.rounds:
        log.info(f"nothing to do: all {config.federation.rounds} rounds are complete")
        return "complete"
    t0 = time.perf_counter()
    outcome = sim.run(standard_callbacks(stop, sample_grids=True, extra=extra))
    # The other ranks wait here, polled (comm.py), while the root finishes the run's last
    # outputs, rather than inside MPI_Finalize, which spins.
    comm.context = "end of the run"
    comm.barrier()
    log.close()
    if outcome == "stopped":
        log.info(f"stopped on {stop_name() or 'request'} after a checkpoint; "
                 f"continue with: feddm-hpc resume {run_dir}")
        return "stopped"
    log.info(f"done: {config.federation.rounds - sim.start_round} round(s) in {time.perf_counter() - t0:.1f}s; "
             f"outputs in {run_dir}")
    return "done"


def rounds_change_note(before, after, next_round: int) -> Optional[str]:
    """One line naming what a resume's new federation.rounds changes, with the value before and
    after (both from the resumed config, the rounds count aside, so only its effect shows); None
    when the count is the same, no round is left, or nothing depends on it. Dependent: the lr of
    client.lr_schedule=cosine without client.lr_horizon (its horizon is the rounds count; the
    first remaining round whose lr differs, past the warm-up) and, under DP, the epsilon after
    the last round. Not dependent: the constant schedule, a set lr_horizon, the EMA's warm-up
    and each round's own epsilon (functions of the round index alone)."""
    from feddm_hpc.federation.client import round_lr

    if before is None:
        return None
    old, new = before.federation.rounds, after.federation.rounds
    if old == new or next_round >= new:
        return None
    changes = []
    c = after.client
    if c.lr_schedule == "cosine" and c.lr_horizon is None:
        differ = [(r, round_lr(c, r, old), round_lr(c, r, new)) for r in range(next_round, new)]
        differ = [d for d in differ if d[1] != d[2]]
        if differ:
            r, lr_old, lr_new = differ[0]
            changes.append(f"client.lr_schedule=cosine's horizon: round {r}'s lr {lr_old:.3e} under "
                           f"{old} rounds -> {lr_new:.3e} under {new} "
                           f"(to keep the {old}-round schedule, whose later rounds stay at its final lr, "
                           f"resume with --set client.lr_horizon={old})")
    p, f = after.privacy, after.federation
    if p.dp:
        from feddm_hpc.privacy import accounting

        m = f.clients_per_round if f.clients_per_round is not None else f.num_clients
        eps = [accounting.epsilon(f.num_clients, m, p.noise_multiplier, n, p.delta) for n in (old, new)]
        changes.append(f"the privacy budget: epsilon after the last round {eps[0]:.4g} -> {eps[1]:.4g} "
                       f"(delta {p.delta:g})")
    if not changes:
        return None
    return f"resume: federation.rounds {old} -> {new} changes " + "; ".join(changes)
