"""`feddm-hpc COMMAND ...`: the parser built from the command modules, and one exit code per job."""
from __future__ import annotations

import sys
from typing import List, Optional

from feddm_hpc.cli import evaluate, export, inspect, privacy, report, sample, study, train, validate
from feddm_hpc.cli.args import UserParser
from feddm_hpc.cli.exits import EXIT_COLLECTIVE_TIMEOUT, EXIT_OK, EXIT_USER
from feddm_hpc.cli.world import leave_mpi, mpi_world, report_user_error
from feddm_hpc.errors import UserError

COMMAND_MODULES = (train, sample, export, inspect, validate, evaluate, report, study, privacy)   # help lists them in this order


def build_parser() -> UserParser:
    p = UserParser(prog="feddm-hpc", description="MPI simulator for federated training of diffusion models")
    sub = p.add_subparsers(dest="command", required=True, parser_class=UserParser)
    for module in COMMAND_MODULES:
        module.register(sub)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("train", "resume"):
        # First thing: a preemption signal during start-up (imports, data loading) must not kill
        # the run; it is honoured at the end of the first round instead.
        train.STOP.install()
    try:
        code = args.run(args)
    except UserError as exc:
        report_user_error(str(exc))
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
    world = mpi_world()
    if code != EXIT_OK and world is not None and world[1] > 1:
        leave_mpi(code, wait_s=60.0)  # every rank reached this outcome (e.g. stopped on a signal)
    return code


if __name__ == "__main__":
    sys.exit(main())
