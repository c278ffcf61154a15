"""Trains configs/tiny.yaml through feddm_hpc.api under mpiexec (argv: run dir)."""
import sys
from pathlib import Path

from feddm_hpc import api

ROOT = Path(__file__).resolve().parents[2]
cfg = api.load_config(ROOT / "configs" / "tiny.yaml", ["system.threads=1", "system.progress=false"])
run = api.train(cfg, sys.argv[1])
assert len(run.metrics) == 2   # every rank reads the finished run
