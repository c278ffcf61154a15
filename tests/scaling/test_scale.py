"""configs/scale_10k.yaml: 10,000 clients on full MNIST validate, and one round runs at 2 ranks.

One round takes ~10 s under `mpiexec -n 2` on two shared cores (start-up and the 60,000-image
load included); the full 3-round run and its memory are measured by benchmarks/memory.py and
the scaling report, not here.
"""
import json

import pytest

from conftest import ROOT, cli_in_process, run_cli

SCALE = ROOT / "configs" / "scale_10k.yaml"


def test_scale_config_validates():
    out = cli_in_process(["validate", str(SCALE)])
    assert out.returncode == 0, out.stderr
    assert "10000 clients (6-6 samples each)" in out.stdout
    assert "60000 mnist images" in out.stdout


@pytest.mark.mpi
def test_scale_config_runs_one_round_on_two_ranks(tmp_path):
    run_dir = tmp_path / "scale"
    out = run_cli(["train", str(SCALE), "--run-dir", str(run_dir), "--set", "federation.rounds=1",
                   "--set", "sampling.num_samples=0", "--set", "system.progress=false"],
                  nprocs=2, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    (line,) = (run_dir / "metrics.jsonl").read_text().splitlines()
    rec = json.loads(line)
    assert rec["round"] == 0 and len(rec["arrived"]) == 50 and rec["train_loss"] is not None
    ranks = json.loads((run_dir / "partition.json").read_text())["ranks"]
    assert sorted(len(c) for c in ranks.values()) == [5000, 5000]
    assert (run_dir / "checkpoints" / "round-000000.h5").is_file()
