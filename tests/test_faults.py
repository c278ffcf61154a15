"""Faults around checkpoints: a writer killed mid-write never corrupts what a resume will use."""
import json
import signal
import subprocess
import sys
import time

import pytest

from feddm_hpc.rundir.checkpoint import latest_valid, list_checkpoints, load_checkpoint

from conftest import DETERMINISTIC, ROOT, TINY, copy_run, run_cli

WRITER = """
import sys, numpy as np
from feddm_hpc.rundir import checkpoint as ckpt
data = ckpt.load_checkpoint(sys.argv[1])
big = np.random.default_rng(0).random(150_000_000, dtype=np.float32)  # 600 MB of noise: a slow write
data.params, data.ema, data.round = big, big, 2
ckpt.save_checkpoint(sys.argv[2], data)
"""


@pytest.mark.slow
def test_writer_killed_mid_write_keeps_previous_checkpoint_and_resume_uses_it(tiny_run, tmp_path):
    run_dir = copy_run(tiny_run, tmp_path / "run")   # a finished train_tiny run (2 rounds)
    ckpt_dir = run_dir / "checkpoints"
    previous = latest_valid(ckpt_dir)
    target = ckpt_dir / "round-000002.h5"
    tmp = ckpt_dir / "round-000002.h5.tmp"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(previous), str(target)], cwd=ROOT)
    deadline = time.time() + 60
    while time.time() < deadline and not (tmp.exists() and tmp.stat().st_size > 1_000_000):
        time.sleep(0.01)
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=30)
    assert tmp.exists() and not target.exists(), "the kill should land mid-write"
    assert [p.name for p in list_checkpoints(ckpt_dir)][0] == "round-000001.h5"
    assert latest_valid(ckpt_dir) == previous

    resumed = run_cli(["resume", str(run_dir), "--set", "federation.rounds=3"])
    assert resumed.returncode == 0, resumed.stderr
    assert "round-000001.h5 (round 1 complete)" in resumed.stderr
    assert load_checkpoint(latest_valid(ckpt_dir)).round == 2
    assert not tmp.exists()  # the leftover is cleaned up by the next checkpoint's pruning
    rounds = [json.loads(l)["round"] for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert rounds == [0, 1, 2]


@pytest.mark.mpi
def test_full_disk_during_a_run_ends_all_ranks_with_one_clear_error(tmp_path):
    """Run directory on a real 900 kB tmpfs: a tiny checkpoint is ~350 kB, so the third write fails."""
    import pytest

    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=900k", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        run_dir = mnt / "run"
        out = run_cli(["train", str(TINY), "--run-dir", str(run_dir), *DETERMINISTIC,
                       "--set", "federation.rounds=8", "--set", "checkpoint.keep_last=3",
                       "--set", "sampling.num_samples=0"], nprocs=2, timeout=120)
        assert out.returncode == 2, out.stderr
        errors = [l for l in out.stderr.splitlines() if l.startswith("error")]
        assert len(errors) == 1 and "cannot write checkpoint (No space left on device)" in errors[0]
        latest = latest_valid(run_dir / "checkpoints")
        assert latest is not None and load_checkpoint(latest).round >= 1
        assert not list((run_dir / "checkpoints").glob("*.tmp"))
    finally:
        subprocess.run(["umount", str(mnt)])
