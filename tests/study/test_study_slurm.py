"""`feddm-hpc study SPEC --slurm` on the one-node Slurm of tests/slurm_cluster.py: one array task
per run (jobs/slurm/study.sbatch), each trained and evaluated in OUT/runs/<cell>/seed<k>; a second
--slurm has nothing left to submit."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from synthetic import write_spec

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SPEC = """\
name: slurm-e2e
seeds: [0, 1]
threads: 1
set: {federation.rounds: 1, sampling.num_samples: 0}
cells:
  fedavg: {}
evaluate: {at: final, num_samples: 16, extractor_epochs: 1, extractor_train_subset: 500,
           memorization: false}
slurm: {sbatch_args: ["--time=00:20:00"]}
"""


def _study(cluster, *args):
    env = dict(cluster.env, PATH=f"{BIN}{os.pathsep}{cluster.env.get('PATH', '')}")
    return subprocess.run([sys.executable, "-m", "feddm_hpc", "study", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slurm
def test_study_slurm_array_runs_every_run(slurm, tmp_path):   # the session's cluster (conftest)
    cluster = slurm
    spec = write_spec(tmp_path, SPEC)
    out = tmp_path / "out"
    sub = _study(cluster, str(spec), "--out", str(out), "--slurm")
    assert sub.returncode == 0, sub.stdout + sub.stderr
    job = re.search(r"submitted job array (\d+): 2 run\(s\)", sub.stdout)
    assert job, sub.stdout
    for task in (0, 1):
        info = cluster.wait_done(f"{job[1]}_{task}", timeout=300)
        log = (out / "slurm" / f"task-{task}.out").read_text(errors="replace")
        assert info.get("JobState") == "COMPLETED" and info.get("ExitCode") == "0:0", f"{info}\n{log}"
        assert "complete in" in log, log
    status = _study(cluster, str(spec), "--out", str(out), "--status")
    assert "2 complete, 0 running, 0 to do" in status.stdout, status.stdout
    again = _study(cluster, str(spec), "--out", str(out), "--slurm")
    assert again.returncode == 0 and "nothing to submit" in again.stdout, again.stdout
