"""`feddm-hpc study SPEC --out OUT --copy-done DIR`: the complete runs of a study, without their
checkpoints, copied into DIR/runs/<cell>/seed<k>/ (config.yaml, metrics.jsonl, partition.json,
eval/ without the memorization plots, samples/): what a results folder commits. A copy is itself
a study folder: `--collect` reports from it, and a study run with `--out DIR` skips its runs (a
run copy without checkpoints is complete when its metrics reach the final round and its
evaluations are there), so a long study continues on a fresh machine from what was committed."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import List

from feddm_hpc.errors import UserError
from feddm_hpc.study.runs import inspect_run, plan_runs
from feddm_hpc.study.spec import Spec

KEPT = ("config.yaml", "metrics.jsonl", "partition.json", "eval", "samples")
# eval/ keeps its JSON results; the memorization audit's plots (~50 kB each) stay behind
SKIPPED = ("*.memorization.png",)


def copy_done(spec: Spec, out: Path, dest: Path) -> List[str]:
    """Copies the done runs of `out` missing from (or older in) `dest`; returns their names."""
    out, dest = Path(out), Path(dest)
    if out.resolve() == dest.resolve():
        raise UserError("--copy-done: DIR must differ from --out")
    copied = []
    for plan in plan_runs(spec, out):
        if inspect_run(spec, plan).state != "done":
            continue
        target = dest / plan.run_dir.relative_to(out)
        if (target / "metrics.jsonl").is_file() and \
                (target / "metrics.jsonl").read_bytes() == (plan.run_dir / "metrics.jsonl").read_bytes() \
                and _same_evals(plan.run_dir, target):
            continue
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        for name in KEPT:
            src = plan.run_dir / name
            if src.is_dir():
                shutil.copytree(src, target / name, ignore=shutil.ignore_patterns(*SKIPPED))
            elif src.is_file():
                shutil.copy2(src, target / name)
        copied.append(f"{plan.cell}/seed{plan.seed}")
    return copied


def _same_evals(a: Path, b: Path) -> bool:
    names = sorted(p.name for p in (a / "eval").glob("*.json"))
    return names == sorted(p.name for p in (b / "eval").glob("*.json")) and all(
        (a / "eval" / n).read_bytes() == (b / "eval" / n).read_bytes() for n in names)
