"""`feddm-hpc report RUN_DIR ...` and `feddm-hpc scaling SPEC.yaml`: the commands that compare runs.

`scaling` is `feddm-hpc study` of a scaling study spec (report: {kind: scaling}; docs/scaling.md)
that also collects once every run is complete; a spec in the old scaling format (no cells, no
report) is translated into one first (feddm_hpc/scaling/legacy.py)."""
from __future__ import annotations


def register(sub) -> None:
    rp = sub.add_parser("report", help="plots and a Markdown table comparing run directories")
    rp.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    rp.add_argument("--out", default=None, metavar="DIR",
                    help="default ./report, or RUN_DIR/report for a single run")
    rp.set_defaults(run=cmd_report)
    sc = sub.add_parser("scaling", help="run a scaling study (feddm-hpc study of a scaling spec), "
                                        "then scaling.csv and plots")
    sc.add_argument("spec", metavar="SPEC.yaml",
                    help="a study spec with report: {kind: scaling}, or the old scaling format")
    sc.add_argument("--out", default=None, metavar="DIR", help="default runs/scaling-<spec name>")
    sc.add_argument("--jobs", type=int, default=None, metavar="N",
                    help="runs at once (default: the spec's jobs, else as the cores allow)")
    mode = sc.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true",
                      help="print each run's command without running anything")
    mode.add_argument("--slurm", action="store_true",
                      help="submit the runs not yet complete as Slurm job arrays "
                           "(jobs/slurm/study.sbatch)")
    mode.add_argument("--collect", action="store_true",
                      help="only read the runs: write scaling.csv, table.md and the plots")
    mode.add_argument("--status", action="store_true", help="where every run stands")
    sc.set_defaults(run=cmd_scaling)


def cmd_report(args) -> int:
    from feddm_hpc.evaluation.report import write_report

    return write_report(args.run_dirs, args.out)


def load_scaling_spec(path: str, echo=print):
    """The study Spec of a scaling spec file, old format or new."""
    from pathlib import Path

    from feddm_hpc.config import read_yaml
    from feddm_hpc.errors import ConfigError
    from feddm_hpc.scaling.legacy import is_legacy, translate
    from feddm_hpc.study.spec import load_spec

    tree = read_yaml(Path(path))
    if not is_legacy(tree):
        return load_spec(path, tree)
    try:
        study, notes = translate(tree, Path(path))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    for note in notes:
        echo(f"note: {path}: {note}")
    return load_spec(path, study)


def cmd_scaling(args) -> int:
    import shlex
    from pathlib import Path

    from feddm_hpc.errors import UserError
    from feddm_hpc.study import pool
    from feddm_hpc.study.runs import plan_runs, train_args

    spec = load_scaling_spec(args.spec)
    out = Path(args.out) if args.out else Path("runs") / f"scaling-{Path(args.spec).stem}"
    print(f"feddm-hpc scaling runs the study: feddm-hpc study {args.spec} --out {out} "
          f"[--status | --slurm | --collect] (docs/scaling.md)")
    if args.status:
        from feddm_hpc.study.status import status_text

        print(status_text(spec, out))
        return 0
    if args.collect:
        from feddm_hpc.study.collect import collect

        return collect(spec, out)
    if args.slurm:
        from feddm_hpc.study.slurm import submit

        return submit(spec, out)
    if args.dry_run:
        runner = pool.Runner(spec, out)
        for plan in plan_runs(spec, out):
            print(f"{plan.name}: {shlex.join(runner.launcher(plan, True) + train_args(spec, plan))}")
        return 0
    if args.jobs is not None and args.jobs < 1:
        raise UserError("--jobs: must be >= 1")
    code = pool.run_pool(spec, out, args.jobs or pool.default_jobs(spec))
    from feddm_hpc.study.collect import collect

    try:
        collect(spec, out)
    except UserError as exc:   # no run complete yet: the pool's exit code tells why
        print(f"no report yet: {exc}")
    return code
