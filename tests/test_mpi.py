"""Real mpiexec runs at 2 and 3 ranks: collectives, training, rank-count invariance, resume, faults."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from feddm_hpc.rundir.checkpoint import latest_valid, load_checkpoint

from conftest import (
    DETERMINISTIC,
    ROOT,
    TINY,
    cli_in_process,
    final_params,
    mpiexec_path,
    run_cli,
    start_long_run,
)

pytestmark = pytest.mark.mpi  # every test here runs mpiexec or is the serial reference of one


def _rank_pids(run_dir, expected=2):
    """The rank processes of a running job (python children, not the launcher), oldest first."""
    pids = subprocess.run(["pgrep", "-f", f"feddm_hpc train .*{run_dir}"], capture_output=True, text=True).stdout.split()
    ranks = sorted(int(p) for p in pids
                   if "mpiexec" not in Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="ignore"))
    assert len(ranks) == expected, pids
    return ranks


@pytest.mark.parametrize("nprocs", [2, 3])
def test_mpi_collectives(nprocs):
    script = ROOT / "tests" / "mpi_programs" / "check_comm.py"
    out = subprocess.run([mpiexec_path(), "-n", str(nprocs), sys.executable, "-m", "mpi4py", str(script)],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("ok") == nprocs


@pytest.fixture
def serial_reference(tiny_run):
    """The serial run, train_tiny(run_dir): the session's shared one (tests/conftest.py)."""
    return tiny_run


def test_serial_run_writes_the_run_directory(serial_reference):
    run_dir = serial_reference
    assert (run_dir / "config.yaml").is_file()
    lines = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [l["round"] for l in lines] == [0, 1]
    for key in ("train_loss", "uplink_bytes", "downlink_bytes", "wall_s"):
        assert all(key in l for l in lines)
    assert np.isfinite(lines[-1]["train_loss"])
    ckpts = sorted((run_dir / "checkpoints").glob("round-*.h5"))
    assert [c.name for c in ckpts] == ["round-000000.h5", "round-000001.h5"]
    assert list((run_dir / "samples").glob("*.png"))
    part = json.loads((run_dir / "partition.json").read_text())
    assert len(part["label_histogram"]) == 4 and sum(part["client_sizes"]) == 2000


@pytest.mark.parametrize("nprocs", [2, 3])
def test_rank_count_invariance(serial_reference, tmp_path, nprocs):
    """1, 2 and 3 ranks (3 ranks: uneven, 2+1+1 clients) give bit-identical global parameters."""
    run_dir = tmp_path / f"np{nprocs}"
    out = run_cli(["train", str(TINY), "--run-dir", str(run_dir), *DETERMINISTIC], nprocs=nprocs)
    assert out.returncode == 0, out.stderr
    assert np.array_equal(final_params(run_dir), final_params(serial_reference))
    ranks = json.loads((run_dir / "partition.json").read_text())["ranks"]
    assert len(ranks) == nprocs and sorted(c for cs in ranks.values() for c in cs) == [0, 1, 2, 3]
    m_serial = (serial_reference / "metrics.jsonl").read_text().splitlines()
    m_mpi = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(l)["train_loss"] for l in m_mpi] == [json.loads(l)["train_loss"] for l in m_serial]


def test_resume_is_exact_even_with_another_rank_count(serial_reference, tmp_path):
    run_dir = tmp_path / "resumed"
    first = run_cli(["train", str(TINY), "--run-dir", str(run_dir), *DETERMINISTIC,
                     "--set", "federation.rounds=1"], nprocs=2)
    assert first.returncode == 0, first.stderr
    second = run_cli(["resume", str(run_dir), "--set", "federation.rounds=2"], nprocs=3)
    assert second.returncode == 0, second.stderr
    assert "resumed from" in second.stderr
    assert np.array_equal(final_params(run_dir), final_params(serial_reference))
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 2


def test_signal_stops_at_round_end_with_exit_3_and_resumes(tmp_path):
    run_dir = tmp_path / "stopped"
    metrics = run_dir / "metrics.jsonl"
    proc = start_long_run(run_dir, 200)
    proc.send_signal(signal.SIGUSR1)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, err
    assert "feddm-hpc resume" in err
    done = len(metrics.read_text().splitlines())
    assert done < 200
    latest = latest_valid(run_dir / "checkpoints")
    assert load_checkpoint(latest).round == done - 1


def test_killed_rank_ends_the_job_and_checkpoint_stays_valid(tmp_path):
    run_dir = tmp_path / "killed"
    ckpt_dir = run_dir / "checkpoints"
    proc = start_long_run(run_dir, 500)   # two rounds logged: two checkpoints exist (every=1)
    # Find a rank process: a python child running feddm_hpc with our run dir, not the launcher.
    victim = _rank_pids(run_dir)[-1]  # the later-started rank, usually rank 1
    t0 = time.time()
    os.kill(victim, signal.SIGKILL)
    try:
        proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("the job did not end within 30 s after a rank was killed")
    assert time.time() - t0 < 30
    assert proc.returncode != 0
    latest = latest_valid(ckpt_dir)
    assert latest is not None
    assert load_checkpoint(latest).round >= 0


def test_hung_collective_aborts_with_a_message_naming_round_and_phase():
    script = ROOT / "tests" / "mpi_programs" / "check_timeout.py"
    t0 = time.time()
    out = subprocess.run([mpiexec_path(), "-n", "2", sys.executable, "-m", "mpi4py", str(script), "2"],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert time.time() - t0 < 30
    assert out.returncode == 4, out.stderr
    assert "round 3, gather" in out.stderr and "collective_timeout_s" in out.stderr


def test_gather_of_more_than_2_gib():
    script = ROOT / "tests" / "mpi_programs" / "check_large.py"
    out = subprocess.run([mpiexec_path(), "-n", "3", sys.executable, "-m", "mpi4py", str(script)],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok ")


COHORT = ["--set", "federation.num_clients=6", "--set", "federation.clients_per_round=3",
          "--set", "federation.rounds=3"]


@pytest.fixture(scope="module")
def cohort_reference(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("cohort") / "run"
    out = cli_in_process(["train", str(TINY), "--run-dir", str(run_dir), *DETERMINISTIC, *COHORT])  # serial
    assert out.returncode == 0, out.stderr
    return run_dir


@pytest.mark.parametrize("nprocs, placement", [(2, "auto"), (3, "per_round"), (2, "static")])
def test_sampled_cohorts_are_rank_invariant_with_either_placement(cohort_reference, tmp_path, nprocs, placement):
    run_dir = tmp_path / "p"
    out = run_cli(["train", str(TINY), "--run-dir", str(run_dir), *DETERMINISTIC, *COHORT,
                   "--set", f"system.placement={placement}"], nprocs=nprocs)
    assert out.returncode == 0, out.stderr
    assert np.array_equal(final_params(run_dir), final_params(cohort_reference))


def test_bf16_training_is_rank_invariant_and_not_the_fp32_run(cohort_reference, tmp_path):
    runs = {}
    for nprocs in (1, 3):
        runs[nprocs] = tmp_path / f"bf16-{nprocs}"
        args = ["train", str(TINY), "--run-dir", str(runs[nprocs]), *DETERMINISTIC, *COHORT,
                "--set", "system.precision=bf16"]
        out = cli_in_process(args) if nprocs == 1 else run_cli(args, nprocs=nprocs)
        assert out.returncode == 0, out.stderr
    assert np.array_equal(final_params(runs[1]), final_params(runs[3]))
    assert not np.array_equal(final_params(runs[1]), final_params(cohort_reference))


def test_a_hung_rank_aborts_the_run_with_exit_4_naming_round_and_phase(tmp_path):
    """A real hang: rank processes frozen with SIGSTOP mid-run; the root's collective times out."""
    run_dir = tmp_path / "hung"
    proc = start_long_run(run_dir, 500, "--set", "system.collective_timeout_s=3")
    frozen = _rank_pids(run_dir)[-1]  # the later-started process: rank 1 (the root is the one that must notice)
    os.kill(frozen, signal.SIGSTOP)
    try:
        _, err = proc.communicate(timeout=45)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("the job did not abort after a rank hung")
    finally:
        try:
            os.kill(frozen, signal.SIGCONT)
            os.kill(frozen, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert proc.returncode == 4, err
    assert "collective_timeout_s" in err and "round " in err
    assert latest_valid(run_dir / "checkpoints") is not None
