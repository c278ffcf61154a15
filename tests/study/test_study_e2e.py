"""A real study end to end: 2 cells x 2 seeds of configs/tiny.yaml on 2 MPI ranks each, stopped
during its first run (SIGTERM to the study), run again (the stopped run resumes, the others
train, every run is evaluated), a third time (everything skipped), then --collect."""
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from synthetic import write_spec

from conftest import cli_in_process, mpiexec_path, run_cli

ROOT = Path(__file__).resolve().parents[2]
SPEC = """\
name: e2e
ranks: 2
threads: 1
seeds: [0, 1]
set: {federation.rounds: 3, checkpoint.every: 1, checkpoint.keep_last: 3, sampling.num_samples: 0}
cells:
  fedavg: {}
  q8: {compression.uplink: quant, compression.bits: 8}
evaluate: {at: final, num_samples: 16, extractor_epochs: 1, extractor_train_subset: 500,
           memorization: false}
report:
  paired: {pairs: [[q8, fedavg]]}
"""


@pytest.mark.slow
@pytest.mark.mpi
def test_study_stops_resumes_skips_and_collects(tmp_path):
    mpiexec_path()
    spec = write_spec(tmp_path, SPEC)
    out = tmp_path / "out"
    study = ["study", str(spec), "--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-m", "feddm_hpc", *study, "--jobs", "1"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    first = out / "runs" / "fedavg" / "seed0" / "checkpoints"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and not any(first.glob("round-*.h5")):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)          # as `kill PID` of a study under nohup
    log = proc.communicate(timeout=240)[0]
    assert proc.returncode == 3, log
    assert "fedavg/seed0: stopped (rerun the study to go on)" in log
    status = cli_in_process([*study, "--status"])   # reads files: no process of its own needed
    assert status.returncode == 0 and "0 complete, 0 running, 4 to do" in status.stdout, status.stdout

    again = run_cli([*study, "--jobs", "1"], timeout=900)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "fedavg/seed0: resuming after round" in again.stdout, again.stdout
    assert again.stdout.count("training (3 rounds)") == 3, again.stdout
    for train_log in (out / "logs").glob("*.train.log"):  # no run trained twice from scratch
        assert train_log.read_text().count("feddm-hpc train ") == 1, train_log
    third = cli_in_process(study)   # everything skipped: nothing launched
    assert third.returncode == 0 and third.stdout.count("complete, skipped") == 4, third.stdout
    assert "training" not in third.stdout and "resuming" not in third.stdout

    collect = cli_in_process([*study, "--collect"])
    assert collect.returncode == 0, collect.stderr
    table = (out / "table.md").read_text()
    for cell in ("fedavg", "q8"):
        assert f"| {cell} | " in table and "| 2 (0, 1) |" in table, table
    assert "| q8 | fedavg | 2 |" in table, table
    assert "| 16 |" in table                             # eval N
