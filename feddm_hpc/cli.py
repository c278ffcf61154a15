"""Command line: argument parsing and exit codes. The only module that touches MPI.COMM_WORLD.

Exit codes: 0 success; 2 wrong user input (one line `error: ...` on stderr, no traceback);
1 internal error; 3 stopped early on request (SIGUSR1/SIGTERM) after writing a checkpoint;
4 a collective exceeded system.collective_timeout_s (a rank hung or died): the job is aborted.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path
from typing import List, Optional

from feddm_hpc.comm import root_decides
from feddm_hpc.errors import UserError

EXIT_OK, EXIT_INTERNAL, EXIT_USER, EXIT_STOPPED, EXIT_COLLECTIVE_TIMEOUT = 0, 1, 2, 3, 4


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse would print the usage block first)
        print(f"error: {message} (see feddm-hpc {self.prog.split()[-1]} --help)", file=sys.stderr)
        sys.exit(EXIT_USER)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="feddm-hpc", description="MPI simulator for federated training of diffusion models")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def add_set(sp):
        sp.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set federation.rounds=5 (repeatable)")

    t = sub.add_parser("train", help="run a federated training job")
    t.add_argument("config")
    t.add_argument("--run-dir", default=None, help="output folder (default runs/<config name>)")
    add_set(t)
    r = sub.add_parser("resume", help="continue a run from its latest complete checkpoint")
    r.add_argument("run_dir")
    add_set(r)
    s = sub.add_parser("sample", help="draw samples from a checkpoint's EMA model")
    s.add_argument("checkpoint")
    s.add_argument("--num", type=int, default=64)
    s.add_argument("--out", required=True)
    s.add_argument("--sampler", choices=("ddim", "ddpm"), default=None)
    s.add_argument("--steps", type=int, default=None)
    s.add_argument("--seed", type=int, default=None)
    s.add_argument("--eta", type=float, default=None, help="ddim noise in [0, 1] (default: the config's)")
    s.add_argument("--device", default="auto")
    i = sub.add_parser("inspect", help="print what a checkpoint holds and verify its checksum")
    i.add_argument("checkpoint")
    v = sub.add_parser("validate", help="check a config (and its data) without training")
    v.add_argument("config")
    add_set(v)
    e = sub.add_parser("evaluate", help="score a checkpoint's EMA samples (FD/KID/PRDC) as JSON")
    e.add_argument("checkpoint")
    e.add_argument("--num-samples", type=int, default=1000, metavar="N",
                   help="generated images, scored against a fixed seeded subset of N images of "
                        "the full training split (default 1000); compare runs at equal N only")
    e.add_argument("--sampler", choices=("ddim", "ddpm"), default=None)
    e.add_argument("--steps", type=int, default=None)
    e.add_argument("--eta", type=float, default=None, help="ddim noise in [0, 1] (default: the config's)")
    e.add_argument("--seed", type=int, default=None, help="sampling seed (default: the config's)")
    e.add_argument("--inception-weights", default=None, metavar="FILE",
                   help="Inception-v3 state dict (pytorch-fid or torchvision) for the standard "
                        "FID as well (slow on CPU: ~0.3 s per image and thread)")
    e.add_argument("--out", default=None, metavar="FILE.json",
                   help="default RUN_DIR/eval/round-NNNNNN.json")
    e.add_argument("--save-samples", default=None, metavar="FILE.npz",
                   help="also write the generated images (uint8, key `images`)")
    e.add_argument("--device", default=None, help="default: the config's system.device")
    e.add_argument("--extractor-epochs", type=int, default=2, metavar="E",
                   help="LeNet feature-extractor training epochs (default 2)")
    e.add_argument("--extractor-train-subset", type=int, default=None, metavar="M",
                   help="train the extractor on the first M training images only (quick checks)")
    add_set(e)
    rp = sub.add_parser("report", help="plots and a Markdown table comparing run directories")
    rp.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    rp.add_argument("--out", default=None, metavar="DIR",
                    help="default ./report, or RUN_DIR/report for a single run")
    sc = sub.add_parser("scaling", help="run a scaling study: a grid of runs, scaling.csv and plots")
    sc.add_argument("spec", metavar="SPEC.yaml", help="the study (format: feddm_hpc/scaling/spec.py)")
    sc.add_argument("--out", default=None, metavar="DIR", help="default runs/scaling-<spec name>")
    sc.add_argument("--dry-run", action="store_true",
                    help="print the commands (with --slurm: write the sweep files) without running")
    sc.add_argument("--slurm", action="store_true",
                    help="submit one SLURM job array per rank count (jobs/slurm/sweep.sbatch)")
    sc.add_argument("--collect", action="store_true",
                    help="only read finished points: write scaling.csv and the plots")
    return p


# ---------------------------------------------------------------------------- helpers

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


STOP = StopFlag()


def _make_comm():
    from feddm_hpc.comm import make_communicator
    return make_communicator()


# ---------------------------------------------------------------------------- commands

def _run_training(comm, config, run_dir: Path, checkpoint_path: Optional[str]) -> int:
    from feddm_hpc.federation.callbacks import standard_callbacks
    from feddm_hpc.rundir.checkpoint import load_checkpoint
    from feddm_hpc.config import dump_yaml
    from feddm_hpc.rundir.run_outputs import write_run_files
    from feddm_hpc.rundir.runlog import RunLog
    from feddm_hpc.federation.simulation import Simulation

    comm.timeout_s = config.system.collective_timeout_s
    log = RunLog(comm.rank, run_dir, progress=config.system.progress)
    stop = STOP
    sim = Simulation(config, comm, run_dir, log, stop_requested=stop)
    if comm.rank == 0:
        write_run_files(run_dir, dump_yaml(config), sim.setup)
    if checkpoint_path is not None:
        sim.restore(load_checkpoint(checkpoint_path))
        log.info(f"resumed from {checkpoint_path} (round {sim.start_round - 1} complete)")
    if sim.start_round >= config.federation.rounds:
        log.info(f"nothing to do: all {config.federation.rounds} rounds are complete")
        return EXIT_OK
    t0 = time.perf_counter()
    outcome = sim.run(standard_callbacks(stop, sample_grids=True))
    log.close()
    if outcome == "stopped":
        log.info(f"stopped on {stop.signal_name or 'request'} after a checkpoint; "
                 f"continue with: feddm-hpc resume {run_dir}")
        return EXIT_STOPPED
    log.info(f"done: {config.federation.rounds - sim.start_round} round(s) in {time.perf_counter() - t0:.1f}s; "
             f"outputs in {run_dir}")
    return EXIT_OK


def _requeued() -> bool:
    """SLURM sets SLURM_RESTART_COUNT > 0 when a requeued job starts again."""
    value = os.environ.get("SLURM_RESTART_COUNT", "0")
    return value.isdigit() and int(value) > 0


def cmd_train(args) -> int:
    from feddm_hpc.rundir.checkpoint import list_checkpoints
    from feddm_hpc.config import load_config

    comm = _make_comm()
    run_dir = Path(args.run_dir or Path("runs") / Path(args.config).stem)

    def check_run_dir():
        if list_checkpoints(run_dir / "checkpoints"):
            if _requeued():
                return "resume"
            raise UserError(f"{run_dir}: already holds checkpoints; continue it with "
                            f"`feddm-hpc resume {run_dir}` or choose another --run-dir")
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        (run_dir / "metrics.jsonl").write_text("")
        return "fresh"
    config = load_config(args.config, args.overrides)
    if root_decides(comm, check_run_dir) == "resume":  # a requeued SLURM job picks up its run
        args.run_dir = str(run_dir)
        return _resume(comm, args)
    return _run_training(comm, config, run_dir, None)


def cmd_resume(args) -> int:
    return _resume(_make_comm(), args)


def _resume(comm, args) -> int:
    from feddm_hpc.rundir.checkpoint import latest_valid, load_checkpoint
    from feddm_hpc.config import config_from_yaml_text

    run_dir = Path(args.run_dir)

    def find():
        if not run_dir.is_dir():
            raise UserError(f"{run_dir}: run directory not found")
        path = latest_valid(run_dir / "checkpoints", warn=lambda m: print(f"warning: {m}", file=sys.stderr))
        if path is None:
            raise UserError(f"{run_dir}: no valid checkpoint to resume from")
        return str(path)
    path = root_decides(comm, find)
    config = config_from_yaml_text(load_checkpoint(path, verify=False).config_yaml, args.overrides)
    return _run_training(comm, config, run_dir, path)


def cmd_sample(args) -> int:
    from feddm_hpc.rundir.checkpoint import load_checkpoint
    from feddm_hpc.config import config_from_yaml_text
    from feddm_hpc.diffusion import make_schedule
    from feddm_hpc.federation.setup import build_model
    from feddm_hpc.rundir.imaging import save_image_grid
    from feddm_hpc.federation.placement import select_device
    from feddm_hpc.sampling import draw_samples

    if args.num < 1:
        raise UserError("--num: must be >= 1")
    data = load_checkpoint(args.checkpoint)
    config = config_from_yaml_text(data.config_yaml)
    device = select_device(args.device, 0)
    model = build_model(config, data.image_shape, device)
    d = config.diffusion
    schedule = make_schedule(d.schedule, d.timesteps, d.beta_start, d.beta_end).to(device)
    sampler = args.sampler or config.sampling.sampler
    steps = args.steps or config.sampling.steps
    if not 1 <= steps <= d.timesteps:
        raise UserError(f"--steps: must be between 1 and {d.timesteps}")
    seed = config.seed if args.seed is None else args.seed
    eta = config.sampling.eta if args.eta is None else args.eta
    if not 0.0 <= eta <= 1.0:
        raise UserError("--eta: must be in [0, 1]")
    images = draw_samples(model, schedule, data.ema, data.image_shape, args.num, sampler, steps,
                          seed, data.round, device, eta=eta, prediction=d.prediction)
    save_image_grid(images, args.out)
    print(f"wrote {args.num} samples ({sampler}, {steps if sampler == 'ddim' else d.timesteps} steps) "
          f"from round {data.round} to {args.out}")
    return EXIT_OK


def cmd_inspect(args) -> int:
    from feddm_hpc.rundir.checkpoint import describe, load_checkpoint

    load_checkpoint(args.checkpoint, verify=False)  # unreadable -> exit 2 before printing
    print(describe(args.checkpoint))
    return EXIT_OK


def cmd_validate(args) -> int:
    from feddm_hpc.config import load_config
    from feddm_hpc.federation.setup import load_partitioned

    config = load_config(args.config, args.overrides)
    d = config.data
    ds, parts = load_partitioned(config)
    sizes = [p.size for p in parts]
    print(f"ok: {args.config}: {len(ds)} {d.dataset} images, {config.federation.num_clients} clients "
          f"({min(sizes)}-{max(sizes)} samples each), {config.federation.rounds} rounds, "
          f"algorithm {config.federation.algorithm}, uplink {config.compression.uplink}")
    return EXIT_OK


def cmd_evaluate(args) -> int:
    from feddm_hpc.eval_checkpoint import run

    return run(_make_comm(), args)


def cmd_report(args) -> int:
    from feddm_hpc.report import write_report

    return write_report(args.run_dirs, args.out)


def cmd_scaling(args) -> int:
    from feddm_hpc.scaling.study import run_study

    return run_study(args.spec, args.out, dry_run=args.dry_run, slurm=args.slurm,
                     collect_only=args.collect)


COMMANDS = {"train": cmd_train, "resume": cmd_resume, "sample": cmd_sample,
            "inspect": cmd_inspect, "validate": cmd_validate, "evaluate": cmd_evaluate,
            "report": cmd_report, "scaling": cmd_scaling}


def _mpi_world():
    """(rank, size) when MPI is initialised in this process, else None."""
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is None or not mpi.Is_initialized() or mpi.Is_finalized():
        return None
    return mpi.COMM_WORLD.Get_rank(), mpi.COMM_WORLD.Get_size()


def _report_user_error(message: str) -> None:
    """One line on stderr, once per job, then exit 2 without MPI_Abort's noise.

    Under MPI a user error is seen by every rank alike (same config, same files; root-only
    checks are broadcast by comm.root_decides), so only the root prints it.
    """
    world = _mpi_world()
    if world is None or world[1] == 1 or world[0] == 0:
        print(f"error: {message}", file=sys.stderr, flush=True)
    if world is None or world[1] == 1:
        return
    _leave_mpi(EXIT_USER, wait_s=10.0)


def _leave_mpi(code: int, wait_s: float) -> None:
    """Exit every rank with `code`, without MPI_Abort's banner per rank.

    `python -m mpi4py` turns a non-zero exit into MPI_Abort while MPI is still initialised; so
    the ranks meet in a non-blocking barrier (bounded wait: a rank that never arrives cannot hang
    us), finalize, and then exit normally with the code (measured: mpiexec returns it cleanly).
    If the barrier does not complete, this rank leaves at once and the launcher ends the job.
    """
    MPI = sys.modules["mpi4py.MPI"]
    sys.stdout.flush()
    sys.stderr.flush()
    request = MPI.COMM_WORLD.Ibarrier()
    deadline = time.monotonic() + wait_s
    while not request.Test():
        if time.monotonic() > deadline:
            os._exit(code)
        time.sleep(0.01)
    MPI.Finalize()
    sys.exit(code)


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("train", "resume"):
        # First thing: a preemption signal during start-up (imports, data loading) must not kill
        # the run; it is honoured at the end of the first round instead.
        STOP.install()
    try:
        code = COMMANDS[args.command](args)
    except UserError as exc:
        _report_user_error(str(exc))
        code = EXIT_USER
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        code = 130
    except RuntimeError as exc:
        from feddm_hpc.comm import CollectiveTimeout

        if not isinstance(exc, CollectiveTimeout):
            raise
        # Other ranks may be stuck inside the collective: only an abort can end them.
        mpi = sys.modules.get("mpi4py.MPI")
        if mpi is not None and mpi.Is_initialized() and not mpi.Is_finalized():
            from feddm_hpc.comm import abort_with_message

            abort_with_message(f"{exc}; aborting the job", EXIT_COLLECTIVE_TIMEOUT)
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return EXIT_COLLECTIVE_TIMEOUT
    sys.stdout.flush()
    sys.stderr.flush()
    world = _mpi_world()
    if code != EXIT_OK and world is not None and world[1] > 1:
        _leave_mpi(code, wait_s=60.0)  # every rank reached this outcome (e.g. stopped on a signal)
    return code


if __name__ == "__main__":
    sys.exit(main())
