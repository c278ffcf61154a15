"""`feddm-hpc report RUN_DIR ...` and `feddm-hpc scaling SPEC.yaml`: the commands that compare runs."""
from __future__ import annotations


def register(sub) -> None:
    rp = sub.add_parser("report", help="plots and a Markdown table comparing run directories")
    rp.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    rp.add_argument("--out", default=None, metavar="DIR",
                    help="default ./report, or RUN_DIR/report for a single run")
    rp.set_defaults(run=cmd_report)
    sc = sub.add_parser("scaling", help="run a scaling study: a grid of runs, scaling.csv and plots")
    sc.add_argument("spec", metavar="SPEC.yaml", help="the study (format: feddm_hpc/scaling/spec.py)")
    sc.add_argument("--out", default=None, metavar="DIR", help="default runs/scaling-<spec name>")
    sc.add_argument("--dry-run", action="store_true",
                    help="print the commands (with --slurm: write the sweep files) without running")
    sc.add_argument("--slurm", action="store_true",
                    help="submit one SLURM job array per rank count (jobs/slurm/sweep.sbatch)")
    sc.add_argument("--collect", action="store_true",
                    help="only read finished points: write scaling.csv and the plots")
    sc.set_defaults(run=cmd_scaling)


def cmd_report(args) -> int:
    from feddm_hpc.evaluation.report import write_report

    return write_report(args.run_dirs, args.out)


def cmd_scaling(args) -> int:
    from feddm_hpc.scaling.study import run_study

    return run_study(args.spec, args.out, dry_run=args.dry_run, slurm=args.slurm,
                     collect_only=args.collect)
