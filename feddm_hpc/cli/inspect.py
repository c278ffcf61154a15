"""`feddm-hpc inspect CHECKPOINT`: what a checkpoint holds, with its checksum verified."""
from __future__ import annotations

from feddm_hpc.cli.exits import EXIT_OK


def register(sub) -> None:
    i = sub.add_parser("inspect", help="print what a checkpoint holds and verify its checksum")
    i.add_argument("checkpoint")
    i.set_defaults(run=cmd_inspect)


def cmd_inspect(args) -> int:
    from feddm_hpc.rundir.checkpoint import describe, load_checkpoint

    load_checkpoint(args.checkpoint, verify=False)  # unreadable -> exit 2 before printing
    print(describe(args.checkpoint))
    return EXIT_OK
