"""Shared test helpers: run the CLI in-process or under a real `mpiexec`; the mpi, slurm and slow markers."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"
BIN = Path(sys.executable).parent
# Bit-identical comparisons need equal threads per rank (intra-op threading reorders float sums).
DETERMINISTIC = ["--set", "system.threads=1", "--set", "system.progress=false"]


def mpiexec_path() -> str:
    _check_marked_mpi()
    candidate = BIN / "mpiexec"
    if candidate.exists():
        return str(candidate)
    pytest.fail("mpiexec not found next to the test interpreter; run `make setup` (installs the MPICH wheel)")


def run_cli(args, nprocs: int = 1, timeout: float = 180, env_extra=None, cwd=ROOT):
    """Runs `feddm-hpc ARGS` in a subprocess (under mpiexec when nprocs > 1)."""
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)
    env.update(env_extra or {})
    if nprocs > 1:
        cmd = [mpiexec_path(), "-n", str(nprocs), sys.executable, "-m", "mpi4py", "-m", "feddm_hpc", *args]
    else:
        cmd = [sys.executable, "-m", "feddm_hpc", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env)


def final_params(run_dir: Path) -> np.ndarray:
    ckpts = sorted((Path(run_dir) / "checkpoints").glob("round-*.h5"))
    assert ckpts, f"no checkpoint in {run_dir}"
    with h5py.File(ckpts[-1], "r") as f:
        return f["global/params"][()]


def train_tiny(run_dir: Path, *extra, nprocs: int = 1) -> Path:
    """Trains configs/tiny.yaml deterministically into run_dir; fails the test if it fails."""
    out = run_cli(["train", str(TINY), "--run-dir", str(run_dir), *DETERMINISTIC, *extra], nprocs=nprocs)
    assert out.returncode == 0, out.stderr
    return run_dir


def start_long_run(run_dir: Path, rounds: int, *extra, wait_rounds: int = 2) -> subprocess.Popen:
    """Starts a long 2-rank tiny run in the background and returns once `wait_rounds` rounds
    are logged (so a signal or fault lands mid-run, after checkpoints exist)."""
    args = ["train", str(TINY), "--run-dir", str(run_dir), *DETERMINISTIC,
            "--set", f"federation.rounds={rounds}", *extra]
    cmd = [mpiexec_path(), "-n", "2", sys.executable, "-m", "mpi4py", "-m", "feddm_hpc", *args]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = Path(run_dir) / "metrics.jsonl"
    deadline = time.time() + 90
    while time.time() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < wait_rounds):
        time.sleep(0.1)
    return proc


@pytest.fixture
def tiny_config():
    return TINY


# -- markers (registered in pytest.ini) --------------------------------------------------------
# The fast loop is `pytest -m "not slow"`. `mpi`: launches mpiexec (directly, through run_cli's
# nprocs > 1, start_long_run, or a command that does); `slurm`: needs the one-node Slurm cluster
# of tests/slurm_cluster.py (found through its `slurm` fixture). Both are always also `slow`, as is
# every test that took more than ~3 s on two shared cores (--durations=0, one file at a time) and
# every test using a module fixture that trains or evaluates a run. Tables: file -> test names
# (the function's name for all its parameter cases, or one case's full id), ALL for every test.
ALL = "*"
MPI_TESTS = {
    "test_mpi.py": ALL,
    "test_mpi_features.py": ALL,
    "test_mpi_client_groups.py": ALL,
    "test_hierarchical.py": ALL,
    "test_cli.py": {"test_more_ranks_than_clients_fails_fast_under_mpi"},
    "test_evaluate.py": {"test_generate_samples_identical_under_mpiexec",
                         "test_evaluate_under_mpiexec_matches_serial",
                         "test_evaluation_during_training_leaves_training_untouched"},
    "test_faults.py": {"test_full_disk_during_a_run_ends_all_ranks_with_one_clear_error"},
    "test_scale.py": {"test_scale_config_runs_one_round_on_two_ranks"},
    "test_scaling.py": {"test_grid_writes_the_csv_and_the_plots",  # its tiny_study runs mpiexec
                        "test_rerun_reuses_finished_points_and_collect_rebuilds_the_csv"},
    "test_slurm.py": {"test_slurm_preemption_requeue_resumes_bit_identical"},
    "test_privacy_runs.py": {"test_dp_with_secure_aggregation_and_an_attacker_is_rank_count_invariant"},
}
SLOW_TESTS = {
    "test_privacy_runs.py": ALL,   # each test trains tiny runs
    "test_callbacks.py": ALL,   # each test trains a tiny run
    "test_cli.py": {"test_sample_writes_a_png"},
    "test_client_groups.py": {"test_each_member_equals_its_one_at_a_time_update",
                              "test_unequal_steps_padding_never_reaches_the_shorter_client"},
    "test_client.py": {"test_prox_step_differs_from_plain_by_lr_mu_distance",
                       "test_scaffold_correction_shifts_each_step_by_lr_times_correction"},
    "test_diffusion.py": {"test_a_few_adam_steps_on_one_batch_reduce_the_loss",
                          "test_samplers_shape_range_determinism_and_mode[ddpm-0]"},
    "test_evaluate.py": {"test_generate_samples_is_seeded_per_block",
                         "test_evaluate_run_writes_round_json"},
    "test_faults.py": {"test_writer_killed_mid_write_keeps_previous_checkpoint_and_resume_uses_it"},
    "test_features.py": {"test_training_is_deterministic_and_keyed"},
    "test_memorization.py": {"test_evaluate_reports_memorization"},
    "test_simulation_features.py": {"test_resume_is_exact",
                                    "test_byte_accounting_equals_the_bytes_that_crossed"},
}
SLOW_FIXTURES = {  # module fixtures that train, evaluate or fit a feature extractor
    "test_cli.py": {"trained"},
    "test_evaluate.py": {"run_dir", "serial_eval"},
    "test_features.py": {"extractor"},
    "test_report.py": {"runs"},
}


def _listed(table, item) -> bool:
    names = table.get(item.path.name, ())
    return names == ALL or item.originalname in names or item.name in names


def pytest_collection_modifyitems(config, items):
    for item in items:
        mpi = _listed(MPI_TESTS, item)
        slurm = "slurm" in item.fixturenames
        slow_fixture = bool(SLOW_FIXTURES.get(item.path.name, set()) & set(item.fixturenames))
        if mpi:
            item.add_marker(pytest.mark.mpi)
        if slurm:
            item.add_marker(pytest.mark.slurm)
        if mpi or slurm or slow_fixture or _listed(SLOW_TESTS, item):
            item.add_marker(pytest.mark.slow)


_current = {}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    _current["item"] = item
    yield
    _current.pop("item", None)


def _check_marked_mpi() -> None:
    """A test (or its fixture) about to launch mpiexec should carry the mpi marker; warn if not,
    so that the fast loop does not silently grow an mpiexec run."""
    item = _current.get("item")
    if item is not None and item.get_closest_marker("mpi") is None:
        import warnings
        warnings.warn(f"{item.nodeid} launches mpiexec but is not marked mpi: add it to "
                      f"MPI_TESTS in tests/conftest.py", pytest.PytestWarning, stacklevel=3)
