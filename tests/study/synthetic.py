"""Synthetic studies for the study tests: spec files on configs/tiny.yaml and run directories
(config.yaml, metrics.jsonl, checkpoints, eval JSON) written with known numbers; no training."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from feddm_hpc.config import dump_yaml
from feddm_hpc.study.runs import plan_runs
from feddm_hpc.study.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "tiny.yaml"
F32 = 1000   # float32 uplink bytes per round


def write_spec(folder: Path, body: str, name: str = "spec.yaml") -> Path:
    """A spec on configs/tiny.yaml: `body` holds everything but base."""
    path = Path(folder) / name
    path.write_text(f"base: {TINY}\n{body}")
    return path


TWO_CELLS = """\
name: two
seeds: [0, 1, 2]
set: {federation.rounds: 2}
cells:
  base: {}
  q8: {compression.uplink: quant, compression.bits: 8}
evaluate: {at: final, num_samples: 64}
"""


def eval_record(r: int, fd: float, n: int = 64, kid: float = 1.0) -> dict:
    return {"fd": fd, "kid": kid, "kid_std": 0.0, "precision": 0.5, "recall": 0.2,
            "density": 0.4, "coverage": 0.1, "num_samples": n, "round": r,
            "feature_extractor": "lenet5-mnist-x", "feature_extractor_id": "key",
            "extractor_test_accuracy": 0.9, "fid_inception": None, "sampler": "ddim",
            "steps": 10, "eta": 0.0, "seed": 0}


def make_run(spec, out: Path, cell: str, seed: int, rounds_done=None, ckpts=None, evals=None,
             n: int = 64, ratio: float = 1.0, config_text=None) -> Path:
    """The run directory of (cell, seed): metrics for `rounds_done` rounds (default all),
    empty checkpoint files for `ckpts` (default none), eval JSON {round: fd} at `n` samples."""
    plan = next(p for p in plan_runs(spec, out) if p.cell == cell and p.seed == seed)
    d = plan.run_dir
    config = spec.config(spec.cell(cell), seed)
    rounds = config.federation.rounds
    done = rounds if rounds_done is None else rounds_done
    for sub in ("eval", "checkpoints"):   # what was there before goes
        shutil.rmtree(d / sub, ignore_errors=True)
    (d / "eval").mkdir(parents=True)
    (d / "config.yaml").write_text(config_text or dump_yaml(config))
    lines = [{"round": r, "train_loss": 0.1 / (r + 1), "uplink_bytes": F32 * ratio,
              "cum_uplink_bytes": F32 * ratio * (r + 1), "cum_uplink_float32_bytes": F32 * (r + 1),
              "wall_s": 1.0} for r in range(done)]
    (d / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    for r in ckpts or ():
        (d / "checkpoints").mkdir(exist_ok=True)
        (d / "checkpoints" / f"round-{r:06d}.h5").write_bytes(b"")
    for r, fd in (evals or {}).items():
        (d / "eval" / f"round-{r:06d}.json").write_text(json.dumps(eval_record(r, fd, n)))
    return d


def load(path):
    return load_spec(path)


# A stand-in for `python -m feddm_hpc`: records its arguments in $FAKE_LOG and writes what the
# real command would leave behind. train/resume: config.yaml (from $FAKE_CONFIGS, a JSON of run
# dir -> text), one metrics line and one checkpoint per round up to $FAKE_ROUNDS; with
# FAKE_STOP=1 only the next round, then exit 3. evaluate: eval/round-NNNNNN.json.
FAKE = r'''
import json, os, sys
from pathlib import Path
args = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as f:
    f.write(json.dumps(args) + "\n")
cmd = args[0]
if cmd in ("train", "resume"):
    d = Path(args[args.index("--run-dir") + 1] if cmd == "train" else args[1])
    (d / "checkpoints").mkdir(parents=True, exist_ok=True)
    (d / "config.yaml").write_text(json.loads(Path(os.environ["FAKE_CONFIGS"]).read_text())[str(d)])
    m = d / "metrics.jsonl"
    lines = [x for x in (m.read_text().splitlines() if m.exists() else []) if x.strip()]
    if cmd == "train":
        lines = []
    last = int(os.environ["FAKE_ROUNDS"]) - 1
    for r in range(len(lines), last + 1):
        lines.append(json.dumps({"round": r, "train_loss": 0.1, "uplink_bytes": 10.0}))
        (d / "checkpoints" / f"round-{r:06d}.h5").write_bytes(b"")
        if os.environ.get("FAKE_STOP") == "1":
            m.write_text("\n".join(lines) + "\n")
            sys.exit(3)
    m.write_text("\n".join(lines) + "\n")
elif cmd == "evaluate":
    ckpt = Path(args[1])
    r = int(ckpt.stem.split("-")[1])
    n = int(args[args.index("--num-samples") + 1])
    (ckpt.parent.parent / "eval").mkdir(exist_ok=True)
    rec = {"round": r, "num_samples": n, "fd": 1.0 + r}
    (ckpt.parent.parent / "eval" / f"round-{r:06d}.json").write_text(json.dumps(rec))
'''
