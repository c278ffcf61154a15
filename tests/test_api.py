"""feddm_hpc.api runs the command line's code: the same parameters as `feddm-hpc train`, serial
and under mpiexec, resume and sampling as the commands do them, errors as exceptions."""
import os
import subprocess
import sys

import numpy as np
import pytest

from feddm_hpc import api
from feddm_hpc.errors import ConfigError, UserError

from conftest import ROOT, TINY, copy_run, final_params, mpiexec_path

SETS = {"system.threads": 1, "system.progress": False}


def test_overrides_as_a_dict_or_as_set_strings_give_the_same_config():
    a = api.load_config(TINY, {"federation.rounds": 3, "compression.uplink": "quant", "client.lr": 0.01})
    b = api.load_config(TINY, ["federation.rounds=3", "compression.uplink=quant", "client.lr=0.01"])
    assert a == b and a.federation.rounds == 3
    assert api.load_config().federation.rounds == api.Config().federation.rounds


def test_wrong_input_raises_the_command_lines_error():
    with pytest.raises(ConfigError, match=r"^federation\.roundz"):
        api.load_config(TINY, {"federation.roundz": 3})
    with pytest.raises(UserError, match="run directory not found"):
        api.resume("/nonexistent/run")


@pytest.fixture(scope="module")
def api_run(tmp_path_factory):
    """configs/tiny.yaml trained through api.train in this process (serial): what the command line
    and mpiexec runs are compared with. Never written into: tests resume a copy."""
    return api.train(api.load_config(TINY, SETS), tmp_path_factory.mktemp("api") / "run")


@pytest.mark.slow  # the module fixture `api_run` trains
def test_train_resume_and_sample_equal_the_command_line(api_run, tiny_run, tmp_path):
    run = api_run
    np.testing.assert_array_equal(run.params(), final_params(tiny_run))  # tiny_run: train_tiny's CLI run
    assert [m["round"] for m in run.metrics] == [0, 1] and run.latest_checkpoint.name == "round-000001.h5"
    with pytest.raises(UserError, match="already holds checkpoints"):   # nothing is overwritten
        api.train(api.load_config(TINY, SETS), run.run_dir)
    run = api.resume(copy_run(run.run_dir, tmp_path / "api"), {"federation.rounds": 3})
    assert [m["round"] for m in run.metrics] == [0, 1, 2]
    a = api.sample(run.latest_checkpoint, num=4, steps=5, seed=7)
    b = api.sample(run.latest_checkpoint, num=4, steps=5, seed=7)
    assert a.shape == (4, 1, 28, 28) and a.dtype == np.float32 and np.array_equal(a, b)
    assert -1.0 <= a.min() and a.max() <= 1.0


@pytest.mark.slow  # the session's tiny run, evaluated
def test_evaluate_returns_and_writes_the_commands_result(tiny_run, tmp_path):
    run = copy_run(tiny_run, tmp_path / "run")    # evaluate writes into the run directory
    ckpt = sorted((run / "checkpoints").glob("*.h5"))[-1]
    out = tmp_path / "eval.json"
    result = api.evaluate(ckpt, num_samples=16, steps=5, extractor_epochs=1, extractor_train_subset=500,
                          no_memorization=True, out=str(out))
    assert result["num_samples"] == 16 and result["fd"] > 0 and out.is_file()
    with pytest.raises(TypeError, match="unknown option"):
        api.evaluate(ckpt, num_samples=16, stepz=5)


@pytest.mark.slow
@pytest.mark.mpi
def test_api_under_mpiexec_equals_serial(api_run, tmp_path):
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)
    out = subprocess.run([mpiexec_path(), "-n", "2", sys.executable, "-m", "mpi4py",
                          str(ROOT / "tests" / "mpi_programs" / "api_train.py"), str(tmp_path / "mpi")],
                         capture_output=True, text=True, timeout=180, cwd=ROOT, env=env)
    assert out.returncode == 0, out.stderr
    np.testing.assert_array_equal(final_params(tmp_path / "mpi"), api_run.params())


@pytest.mark.slow
def test_the_example_script_runs(tmp_path):
    # The session's FEDDM_HPC_CACHE (tests/conftest.py): its LeNet (1 epoch, 500 images) is the
    # one test_evaluate_returns_and_writes_the_commands_result uses, trained once.
    # One torch thread, as the script's docstring times it ("about a minute on one CPU core"): its
    # config leaves system.threads at 0 (all cores), and two threads on two shared cores ran its
    # training 8x slower than one on a loaded machine (423 s against 52 s), the same numbers.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "python_api.py"), str(tmp_path / "ex")],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    assert "rounds now: [0, 1, 2, 3]" in out.stdout and (tmp_path / "ex" / "api_samples.png").is_file()
