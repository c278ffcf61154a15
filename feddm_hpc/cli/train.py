"""`feddm-hpc train CONFIG` and `feddm-hpc resume RUN_DIR`: run (or continue) a federated training
job, stopping cleanly at a round end on SIGUSR1/SIGTERM (SLURM's preemption warning)."""
from __future__ import annotations

import os
import signal
from pathlib import Path

from feddm_hpc.cli.args import add_set
from feddm_hpc.cli.exits import EXIT_OK, EXIT_STOPPED
from feddm_hpc.cli.world import make_comm


class StopFlag:
    """Set by SIGUSR1/SIGTERM (SLURM's preemption warning); the run stops at the next round end."""

    def __init__(self):
        self.requested = False
        self.signal_name = None

    def install(self):
        for sig in (signal.SIGUSR1, signal.SIGTERM):
            signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.requested = True
        self.signal_name = signal.Signals(signum).name

    def __call__(self) -> bool:
        return self.requested

    def name(self):
        return self.signal_name


STOP = StopFlag()


def register(sub) -> None:
    t = sub.add_parser("train", help="run a federated training job")
    t.add_argument("config")
    t.add_argument("--run-dir", default=None, help="output folder (default runs/<config name>)")
    add_set(t)
    t.set_defaults(run=cmd_train)
    r = sub.add_parser("resume", help="continue a run from its latest complete checkpoint")
    r.add_argument("run_dir")
    add_set(r)
    r.set_defaults(run=cmd_resume)


def _requeued() -> bool:
    """SLURM sets SLURM_RESTART_COUNT > 0 when a requeued job starts again."""
    value = os.environ.get("SLURM_RESTART_COUNT", "0")
    return value.isdigit() and int(value) > 0


def cmd_train(args) -> int:
    from feddm_hpc.config import load_config
    from feddm_hpc.federation.job import prepare_run_dir, run_training

    comm = make_comm()
    run_dir = Path(args.run_dir or Path("runs") / Path(args.config).stem)
    config = load_config(args.config, args.overrides)
    # A requeued SLURM job picks up its own run.
    if prepare_run_dir(comm, run_dir, allow_resume=_requeued()) == "resume":
        args.run_dir = str(run_dir)
        return _resume(comm, args)
    return _exit_code(run_training(comm, config, run_dir, stop=STOP, stop_name=STOP.name))


def cmd_resume(args) -> int:
    return _resume(make_comm(), args)


def _resume(comm, args) -> int:
    from feddm_hpc.federation.job import resume_point, run_training

    run_dir = Path(args.run_dir)
    path, config, stored = resume_point(comm, run_dir, args.overrides)
    return _exit_code(run_training(comm, config, run_dir, path, stored, stop=STOP, stop_name=STOP.name))


def _exit_code(outcome: str) -> int:
    return EXIT_STOPPED if outcome == "stopped" else EXIT_OK
