"""`feddm-hpc study SPEC.yaml [--jobs N] [--slurm] [--collect] [--status] [--copy-done DIR] [--out DIR]`: run a study
(its cells x seeds, each trained and evaluated in OUT/runs/<cell>/seed<k>), show its progress,
or build its table, paired differences and plots. The spec format: feddm_hpc/study/spec.py."""
from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser("study", help="run a study spec (cells x seeds) locally or as a Slurm "
                                     "array; its progress; its table and plots (--collect)")
    p.add_argument("spec", metavar="SPEC.yaml", help="the study (format: feddm_hpc/study/spec.py)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="the study's folder: runs/<cell>/seed<k>, logs/, table.md, summary.json, "
                        "plots (default runs/<spec name>)")
    p.add_argument("--jobs", type=int, default=None, metavar="N",
                   help="runs at once (default: cores // (ranks x threads))")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--slurm", action="store_true",
                      help="submit the runs not yet complete as a Slurm job array "
                           "(jobs/slurm/study.sbatch)")
    mode.add_argument("--collect", action="store_true",
                      help="only read the complete runs: write table.md, summary.json, plots")
    mode.add_argument("--status", action="store_true",
                      help="print per cell the runs complete, running, to do, and rounds trained")
    mode.add_argument("--copy-done", default=None, metavar="DIR",
                      help="copy the complete runs, without checkpoints, into DIR/runs (what a "
                           "results folder commits; a study run with --out DIR skips them)")
    mode.add_argument("--task", type=int, default=None, help=argparse.SUPPRESS)  # one Slurm task
    p.set_defaults(run=cmd_study)


def cmd_study(args) -> int:
    from pathlib import Path

    from feddm_hpc.errors import UserError
    from feddm_hpc.study.spec import load_spec

    spec = load_spec(args.spec)
    out = Path(args.out) if args.out else Path("runs") / spec.name
    if args.status:
        from feddm_hpc.study.status import status_text

        print(status_text(spec, out))
        return 0
    if args.copy_done:
        from feddm_hpc.study.copy_done import copy_done

        copied = copy_done(spec, out, Path(args.copy_done))
        print(f"copied {len(copied)} complete run(s) to {args.copy_done}/runs"
              + (": " + ", ".join(copied) if copied else ""))
        return 0
    if args.collect:
        from feddm_hpc.study.collect import collect

        return collect(spec, out)
    if args.slurm:
        from feddm_hpc.study.slurm import submit

        return submit(spec, out)
    from feddm_hpc.study import pool

    if args.task is not None:
        return pool.run_task(spec, out, args.task)
    if args.jobs is not None and args.jobs < 1:
        raise UserError("--jobs: must be >= 1")
    return pool.run_pool(spec, out, args.jobs or pool.default_jobs(spec))
