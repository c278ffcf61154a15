"""Shared test helpers: run the CLI in-process or under a real `mpiexec`; what the mpi, slurm and slow
markers imply and the checks that keep them honest (each test file marks its own tests)."""
from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"
BIN = Path(sys.executable).parent
# Bit-identical comparisons need equal threads per rank (intra-op threading reorders float sums).
DETERMINISTIC = ["--set", "system.threads=1", "--set", "system.progress=false"]
# One compute thread everywhere the suite trains: its models are tiny and the cores are shared, and
# two torch threads on two busy cores ran 8x slower than one (examples' run: 423 s against 52 s).
# OMP_NUM_THREADS=1 is what system.threads=0 (auto) resolves to first (federation/placement.py),
# in this process (api.train, in-process commands) and in every subprocess that inherits it; a
# test of the thread setting itself passes its own env or config value.
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)


def mpiexec_path() -> str:
    _check_marked_mpi()
    candidate = BIN / "mpiexec"
    if candidate.exists():
        return str(candidate)
    pytest.fail("mpiexec not found next to the test interpreter; run `make setup` (installs the MPICH wheel)")


def run_cli(args, nprocs: int = 1, timeout: float = 180, env_extra=None, cwd=ROOT):
    """Runs `feddm-hpc ARGS` in a subprocess (under mpiexec when nprocs > 1), one thread per rank
    where the config leaves system.threads at 0 (OMP_NUM_THREADS=1, as above)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.update(env_extra or {})
    if nprocs > 1:
        cmd = [mpiexec_path(), "-n", str(nprocs), sys.executable, "-m", "mpi4py", "-m", "feddm_hpc", *args]
    else:
        cmd = [sys.executable, "-m", "feddm_hpc", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env)


@contextlib.contextmanager
def _captured_fds():
    """What this process writes to file descriptors 1 and 2 meanwhile (C libraries: HDF5's error
    stack, a library's warnings), as a subprocess's pipes would receive it: yields a dict filled
    with "stdout" and "stderr" on exit."""
    saved, files, got = {}, {}, {}
    try:
        for fd in (1, 2):
            files[fd] = tempfile.TemporaryFile()
            saved[fd] = os.dup(fd)
            os.dup2(files[fd].fileno(), fd)
        yield got
    finally:
        for fd, name in ((1, "stdout"), (2, "stderr")):
            if fd in saved:
                os.dup2(saved[fd], fd)
                os.close(saved[fd])
                files[fd].seek(0)
                got[name] = files[fd].read().decode(errors="replace")
                files[fd].close()


def cli_in_process(args, env_extra=None) -> subprocess.CompletedProcess:
    """`feddm-hpc ARGS` on one rank as run_cli runs it (cwd ROOT, one thread, env_extra set),
    but called through feddm_hpc.cli.main in this process: the same code without a new
    interpreter's ~2 s of CPU for importing torch, h5py and the package, most of what a tiny run
    or a validation costs. stdout and stderr hold what Python and C code print meanwhile. Only for
    serial commands whose test checks what the command does, not the process itself (start-up,
    PYTHONPATH extensions, signals). The global state a command changes (environment, train's
    signal handlers, torch's threads and determinism) is put back."""
    from feddm_hpc.cli import main
    from feddm_hpc.cli.train import STOP

    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGUSR1, signal.SIGTERM)}
    threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    env = {key: os.environ.get(key) for key in (env_extra or {})}
    cwd, out, err = os.getcwd(), io.StringIO(), io.StringIO()
    try:
        os.chdir(ROOT)
        os.environ.update(env_extra or {})
        with _captured_fds() as fds, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main([str(a) for a in args])
            except SystemExit as exc:   # argparse's usage errors, as the process would exit
                code = exc.code if isinstance(exc.code, int) else 1
    finally:
        os.chdir(cwd)
        for key, value in env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        STOP.requested, STOP.signal_name = False, None
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(det)
    return subprocess.CompletedProcess(["feddm-hpc", *map(str, args)], code,
                                       out.getvalue() + fds["stdout"], err.getvalue() + fds["stderr"])


def final_params(run_dir: Path) -> np.ndarray:
    ckpts = sorted((Path(run_dir) / "checkpoints").glob("round-*.h5"))
    assert ckpts, f"no checkpoint in {run_dir}"
    with h5py.File(ckpts[-1], "r") as f:
        return f["global/params"][()]


def train_tiny(run_dir: Path, *extra, nprocs: int = 1) -> Path:
    """Trains configs/tiny.yaml deterministically into run_dir; fails the test if it fails. One
    rank runs in this process (cli_in_process), more under a real mpiexec (run_cli)."""
    args = ["train", str(TINY), "--run-dir", str(run_dir), *DETERMINISTIC, *extra]
    out = cli_in_process(args) if nprocs == 1 else run_cli(args, nprocs=nprocs)
    assert out.returncode == 0, out.stderr
    return run_dir


def pythonpath_env(*extra_paths) -> dict:
    """env_extra for run_cli with these folders in front of PYTHONPATH (a user's extensions)."""
    paths = [str(p) for p in extra_paths] + [os.environ.get("PYTHONPATH", "")]
    return {"PYTHONPATH": os.pathsep.join(p for p in paths if p)}


def straight_and_resumed(tmp_path, *sets, extra_paths=(ROOT,), in_process=False) -> Path:
    """Two rounds of configs/tiny.yaml (with --set `sets`) straight on one rank; one round at 2
    ranks, then resumed to two at 3 ranks: asserts bit-identical final parameters and returns the
    straight run (the resumed one is tmp_path / "split"). extra_paths go on PYTHONPATH.

    The straight run is serial because rank-count invariance makes it the 2-rank run's twin
    (tests/test_mpi.py) and the MPI ranks that matter, 2 and 3, are the split run's: one serial
    process instead of two ranks each paying ~3 CPU-s of start-up (torch, torch._dynamo; ~4 s more
    for diffusers). in_process=True runs it through cli_in_process (no process at all): only for
    sets that need nothing from extra_paths, which reach subprocesses alone."""
    extra = [a for s in sets for a in ("--set", s)]
    env = pythonpath_env(*extra_paths)
    straight, split = tmp_path / "straight", tmp_path / "split"
    args = ["train", str(TINY), "--run-dir", str(straight), *DETERMINISTIC, *extra]
    out = cli_in_process(args) if in_process else run_cli(args, env_extra=env)
    assert out.returncode == 0, out.stderr
    out = run_cli(["train", str(TINY), "--run-dir", str(split), *DETERMINISTIC, *extra,
                   "--set", "federation.rounds=1"], nprocs=2, env_extra=env)
    assert out.returncode == 0, out.stderr
    out = run_cli(["resume", str(split), "--set", "federation.rounds=2"], nprocs=3, env_extra=env)
    assert out.returncode == 0, out.stderr
    assert "resumed from" in out.stderr
    assert np.array_equal(final_params(split), final_params(straight))
    return straight


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


# -- what the session shares ---------------------------------------------------------------------
@pytest.fixture(scope="session", autouse=True)
def shared_feature_cache(tmp_path_factory, request):
    """One FEDDM_HPC_CACHE for the whole session (never the user's ~/.cache): a LeNet feature
    extractor is trained once per settings key and every later evaluation of the session, in this
    process or in a subprocess (the variable is inherited), loads it. Tests of the cache itself
    pass their own cache_dir or FEDDM_HPC_CACHE."""
    if hasattr(request.config, "workerinput"):   # xdist workers share one (files land by rename)
        path = tmp_path_factory.getbasetemp().parent / "feddm_cache"
        path.mkdir(exist_ok=True)
    else:
        path = tmp_path_factory.mktemp("feddm_cache")
    before = os.environ.get("FEDDM_HPC_CACHE")
    os.environ["FEDDM_HPC_CACHE"] = str(path)
    yield path
    if before is None:
        os.environ.pop("FEDDM_HPC_CACHE", None)
    else:
        os.environ["FEDDM_HPC_CACHE"] = before


@pytest.fixture(scope="session")
def tiny_run_shared(tmp_path_factory):
    """configs/tiny.yaml trained once per session exactly as `train_tiny(run_dir)` trains it (serial,
    2 rounds, one thread): the reference that many tests read. Never write into it (no resume,
    evaluate or new checkpoint there): take copy_run(...) first. Module fixtures use this one;
    tests use `tiny_run`, which checks that the test left it as it was."""
    # A real `feddm-hpc train` process, not cli_in_process: tests/test_api.py compares the API's
    # in-process run with this one as the command line's.
    run_dir = tmp_path_factory.mktemp("tiny_run") / "run"
    out = run_cli(["train", str(TINY), "--run-dir", str(run_dir), *DETERMINISTIC])
    assert out.returncode == 0, out.stderr
    return run_dir


def _snapshot(run_dir: Path):
    return sorted((str(p.relative_to(run_dir)), p.stat().st_size, p.stat().st_mtime_ns)
                  for p in run_dir.rglob("*"))


@pytest.fixture
def tiny_run(tiny_run_shared):
    """The session's tiny run (tiny_run_shared), read-only: the test errors if it changed it."""
    before = _snapshot(tiny_run_shared)
    yield tiny_run_shared
    assert _snapshot(tiny_run_shared) == before, (
        "the test wrote into the shared tiny run: work on copy_run(tiny_run, tmp_path / ...) instead")


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    """The one-node Slurm cluster of tests/slurm_cluster.py, started once for the session's slurm
    tests (tests/test_slurm.py, tests/study/test_study_slurm.py) and stopped at its end. Skips only
    where Slurm cannot be installed; a failed install or start where it should work is a failure."""
    from slurm_cluster import SlurmCluster, SlurmUnavailable, ensure_installed  # tests/ is on sys.path

    try:
        ensure_installed()
    except SlurmUnavailable as exc:
        pytest.skip(str(exc))
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"), cpus=4)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def copy_run(run_dir: Path, dest: Path) -> Path:
    """A copy of a finished run directory that a test may resume, evaluate or damage."""
    return Path(shutil.copytree(run_dir, dest))


# -- markers (registered in pytest.ini) --------------------------------------------------------
# Every test file marks its own tests (decorators or a module-level `pytestmark`); nothing here
# picks tests by name. The fast loop is `pytest -m "not slow"`.
#   mpi    launches mpiexec (directly, through run_cli's nprocs > 1, start_long_run, or a command
#          that does); a test reaching mpiexec_path() without it fails.
#   slurm  needs the one-node Slurm cluster of tests/slurm_cluster.py (its `slurm` fixture); a test
#          using that fixture without the marker fails.
#   slow   took more than ~3 s on two shared cores, or uses a module fixture that trains,
#          evaluates or fits a feature extractor (mark every test using such a fixture).
# mpi and slurm imply slow (added below). A test not marked slow whose call or setup runs longer
# than 5 s (FEDDM_TEST_SLOW_LIMIT_S=SECONDS overrides it on a loaded machine, `inf` turns the
# guard off) fails, naming itself, so that the fast loop cannot silently grow.
SLOW_LIMIT_ENV = "FEDDM_TEST_SLOW_LIMIT_S"


def _slow_limit_s() -> float:
    raw = os.environ.get(SLOW_LIMIT_ENV, "").strip()
    if not raw:
        return 5.0
    try:
        return float(raw)
    except ValueError:
        raise pytest.UsageError(f"{SLOW_LIMIT_ENV}={raw!r}: expected seconds (a number, or inf)") from None


def pytest_configure(config):
    _slow_limit_s()  # a malformed FEDDM_TEST_SLOW_LIMIT_S is a usage error before any test runs


@pytest.hookimpl(tryfirst=True)  # before -m deselects, so `-m "not slow"` sees the implied marker
def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("slow") is None and (
                item.get_closest_marker("mpi") is not None or item.get_closest_marker("slurm") is not None):
            item.add_marker(pytest.mark.slow)
        item.add_marker(pytest.mark.xdist_group(_worker_group(item)))
    if hasattr(config, "workerinput"):   # an xdist worker: the controller deals groups in this order
        items.sort(key=_group_cost_order(items))


# Under `pytest -n N --dist loadgroup` (make test) a group runs on one worker: a file's tests share
# its module fixtures (trained runs), so a file is a group, and every test of the one-node Slurm
# cluster is one group, so that one worker starts one cluster.
def _worker_group(item) -> str:
    return "slurm" if item.get_closest_marker("slurm") is not None else item.nodeid.split("::")[0]


def _group_cost_order(items):
    """Sort key that deals the costliest groups first (longest-first keeps one worker from
    finishing a big group alone at the end): a rough cost from the markers, in seconds on the
    2-core VM (a slurm test waits on the cluster, an mpi one starts 2-3 ranks)."""
    def cost(item):
        for marker, seconds in (("slurm", 20.0), ("mpi", 10.0), ("slow", 5.0)):
            if item.get_closest_marker(marker) is not None:
                return seconds
        return 0.1
    totals = {}
    for item in items:
        totals[_worker_group(item)] = totals.get(_worker_group(item), 0.0) + cost(item)
    first = {}
    for index, item in enumerate(items):
        first.setdefault(_worker_group(item), index)
    return lambda item: (-totals[_worker_group(item)], first[_worker_group(item)])


_current = {}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    _current["item"] = item
    yield
    _current.pop("item", None)


UNGROUPED = pytest.StashKey[str]()


def pytest_collection_finish(session):
    """An xdist worker under --dist loadgroup: xdist has appended "@group" to every node id by
    now. Where it has not (pytest >= 9.2 with pytest-xdist 3.8, pytest-dev/pytest-xdist#1386),
    the groups are ignored: files' fixtures run twice and Slurm's tests start two clusters at
    once. Every test then fails with the reason rather than the suite passing on luck."""
    config = session.config
    if hasattr(config, "workerinput") and getattr(config.option, "loadgroup", False):
        lost = [item.nodeid for item in session.items if "@" not in item.nodeid]
        if lost:
            config.stash[UNGROUPED] = (
                f"--dist loadgroup left {len(lost)} test(s) ungrouped (e.g. {lost[0]}): pytest "
                f"{pytest.__version__} is too new for this pytest-xdist (pytest-dev/pytest-xdist#1386); "
                f"`pip install 'pytest<9.2'` (setup.py's test extra pins it)")


def pytest_runtest_setup(item):
    if reason := item.config.stash.get(UNGROUPED, None):
        pytest.fail(reason, pytrace=False)
    if "slurm" in item.fixturenames and item.get_closest_marker("slurm") is None:
        pytest.fail(f"{item.nodeid} uses the slurm fixture but is not marked slurm: "
                    f"add @pytest.mark.slurm to it", pytrace=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """The slow guard: a passing test not marked slow fails when its call (or its setup: a module
    fixture that trains) ran longer than the limit."""
    report = yield
    if (call.when in ("setup", "call") and report.passed and item.get_closest_marker("slow") is None
            and report.duration > (limit := _slow_limit_s())):
        what = "its setup (fixtures)" if call.when == "setup" else "it"
        report.outcome = "failed"
        report.longrepr = (
            f"{item.nodeid}: {what} took {report.duration:.1f} s but the test is not marked slow "
            f"(limit {limit:g} s): mark it @pytest.mark.slow (or mpi/slurm) in its file, or make it "
            f"faster; on a loaded machine raise the limit with {SLOW_LIMIT_ENV}=SECONDS")
    return report


def _check_marked_mpi() -> None:
    """A test (or its fixture) about to launch mpiexec must carry the mpi marker, so that the fast
    loop never silently grows an mpiexec run: fail it otherwise."""
    item = _current.get("item")
    if item is not None and item.get_closest_marker("mpi") is None:
        pytest.fail(f"{item.nodeid} launches mpiexec but is not marked mpi: add @pytest.mark.mpi "
                    f"to it (or `pytestmark = pytest.mark.mpi` to its file)", pytrace=False)
