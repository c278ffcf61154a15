"""`feddm-hpc evaluate` and feddm_hpc.evaluation: seeded, rank-count invariant generation; the JSON
result end to end on a tiny trained run; clean exit 2 on wrong input; per-client histograms; the
Inception-v3 definition used for the standard FID (random weights: none exist offline).

The metric sanity checks (real vs real small, noise large, missing classes) live in
test_features.py. The LeNet here is trained on 2,000 MNIST images for 1 epoch (~3 s) and cached
in a temporary folder (FEDDM_HPC_CACHE), never in the user's cache.
"""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from feddm_hpc.comm import SerialCommunicator
from feddm_hpc.config import load_config
from feddm_hpc.diffusion.schedule import make_schedule
from feddm_hpc.errors import UserError
from feddm_hpc.evaluation import evaluate, generation, per_client, results, scores
from feddm_hpc.federation.setup import build_model
from feddm_hpc.params import flatten

from conftest import DETERMINISTIC, ROOT, TINY, cli_in_process, copy_run, mpiexec_path, run_cli

N = 64
QUICK_EXTRACTOR = ["--extractor-epochs", "1", "--extractor-train-subset", "2000"]
KEYS = {"fd", "kid", "kid_std", "precision", "recall", "density", "coverage", "class_histogram",
        "class_histogram_distance", "num_samples", "feature_extractor", "extractor_test_accuracy",
        "round", "sampler", "steps", "checkpoint", "fid_inception", "note"}


@pytest.fixture(scope="module")
def cache(shared_feature_cache):
    """The session's FEDDM_HPC_CACHE (tests/conftest.py): the LeNet of QUICK_EXTRACTOR is trained
    once for this module, test_memorization and whatever else evaluates with the same settings."""
    return {"FEDDM_HPC_CACHE": str(shared_feature_cache)}


@pytest.fixture(scope="module")
def run_dir(tiny_run_shared, tmp_path_factory):
    """A finished 2-round tiny run of this module's own (evaluations write eval/ into it): a copy
    of the session's train_tiny run."""
    return copy_run(tiny_run_shared, tmp_path_factory.mktemp("eval") / "run")


@pytest.fixture(scope="module")
def serial_eval(run_dir, cache, tmp_path_factory):
    samples = tmp_path_factory.mktemp("samples") / "np1.npz"
    out = cli_in_process(["evaluate", str(run_dir / "checkpoints" / "round-000001.h5"), "--num-samples",
                          str(N), *QUICK_EXTRACTOR, "--save-samples", str(samples),
                          "--set", "system.threads=1"], env_extra=cache)
    assert out.returncode == 0, out.stderr
    return out, samples


# ---------------------------------------------------------------------------- generation

def _tiny_model():
    config = load_config(TINY)
    model = build_model(config, (1, 28, 28), "cpu")
    d = config.diffusion
    return model, make_schedule(d.schedule, d.timesteps, d.beta_start, d.beta_end), flatten(model)


@pytest.mark.slow
def test_generate_samples_is_seeded_per_block():
    model, schedule, params = _tiny_model()

    def gen(num, seed=0, round_index=1):
        return generation.generate_samples(SerialCommunicator(), model, schedule, params,
                                           (1, 28, 28), num, "ddim", 3, 0.0, seed, round_index,
                                           "cpu", block_size=8)
    a = gen(20)
    assert a.shape == (20, 1, 28, 28) and a.dtype == np.float32
    assert np.all(np.abs(a) <= 1.0)
    np.testing.assert_array_equal(gen(20), a)            # reproducible
    np.testing.assert_array_equal(gen(16), a[:16])       # full blocks do not depend on N
    assert not np.array_equal(gen(20, seed=1), a)
    assert not np.array_equal(gen(20, round_index=2), a)
    assert not np.array_equal(a[:8], a[8:16])            # blocks have their own noise


@pytest.mark.mpi
def test_generate_samples_identical_under_mpiexec(tmp_path):
    prog = ROOT / "tests" / "mpi_programs" / "generate_samples.py"
    outs = {}
    for n in (1, 2):
        path = tmp_path / f"np{n}.npy"
        cmd = [sys.executable, str(prog), str(path), str(TINY)]
        if n > 1:
            cmd = [mpiexec_path(), "-n", str(n), *cmd]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert res.returncode == 0, res.stderr
        outs[n] = np.load(path)
    assert outs[1].shape == (40, 1, 28, 28)
    np.testing.assert_array_equal(outs[2], outs[1])


# ---------------------------------------------------------------------------- the command

@pytest.mark.slow  # module fixtures `run_dir`/`serial_eval` train and evaluate a run
def test_evaluate_writes_json_with_all_keys(run_dir, serial_eval):
    out, samples = serial_eval
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1                               # stdout is exactly one JSON object
    result = json.loads(lines[0])
    assert KEYS <= set(result), KEYS - set(result)
    assert result["num_samples"] == N and result["round"] == 1
    assert result["sampler"] == "ddim" and result["steps"] == 10
    assert result["fid_inception"] is None and "Inception" in result["note"]
    assert result["fd"] > 0 and 0 <= result["coverage"] <= 1
    assert len(result["class_histogram"]) == 10
    assert len(result["client_class_histogram_distance"]) == 4   # from partition.json
    assert 0.5 < result["extractor_test_accuracy"] <= 1
    written = json.loads((run_dir / "eval" / "round-000001.json").read_text())
    assert written == result
    assert "note: standard FID" in out.stderr and "Traceback" not in out.stderr
    images = np.load(samples)["images"]
    assert images.shape == (N, 28, 28, 1) and images.dtype == np.uint8


@pytest.mark.mpi
def test_evaluate_under_mpiexec_matches_serial(run_dir, serial_eval, cache, tmp_path):
    serial, samples = serial_eval
    mine = tmp_path / "np2.npz"
    out = run_cli(["evaluate", str(run_dir / "checkpoints" / "round-000001.h5"), "--num-samples",
                   str(N), *QUICK_EXTRACTOR, "--save-samples", str(mine), "--out",
                   str(tmp_path / "np2.json"), "--set", "system.threads=1"],
                  nprocs=2, env_extra=cache)
    assert out.returncode == 0, out.stderr
    np.testing.assert_array_equal(np.load(mine)["images"], np.load(samples)["images"])
    a, b = json.loads(serial.stdout), json.loads(out.stdout)
    assert b["ranks"] == 2
    for key in ("ranks", "sample_s", "score_s"):
        a.pop(key), b.pop(key)
    assert a == b


@pytest.mark.slow  # module fixture `run_dir` trains a run
def test_evaluate_unlabelled_data_is_a_user_error(run_dir, cache, tmp_path):
    npz = tmp_path / "unlabelled.npz"
    np.savez(npz, images=np.zeros((100, 28, 28), dtype=np.uint8))
    out = cli_in_process(["evaluate", str(run_dir / "checkpoints" / "round-000001.h5"), "--num-samples",
                          "8", "--set", "data.dataset=npz", "--set", f"data.path={npz}"], env_extra=cache)
    assert out.returncode == 2
    err = out.stderr.strip().splitlines()
    assert err[-1].startswith("error: data.dataset: npz") and "--inception-weights" in err[-1]
    assert out.stdout == "" and "Traceback" not in out.stderr


@pytest.mark.slow  # module fixture `run_dir` trains a run
@pytest.mark.parametrize("extra, message", [
    (["--num-samples", "3"], "--num-samples"),
    (["--steps", "0"], "--steps"),
    (["--eta", "2"], "--eta"),
    (["--set", "model.base_channels=16"], "model"),
    (["--inception-weights", "/nonexistent/w.pth"], "--inception-weights"),
])
def test_evaluate_bad_flags_exit_2(run_dir, extra, message, capsys):
    from feddm_hpc.cli import main

    code = main(["evaluate", str(run_dir / "checkpoints" / "round-000001.h5"), *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error: ") and message in err[-1]


def test_evaluate_missing_checkpoint_exit_2(tmp_path, capsys):
    from feddm_hpc.cli import main

    assert main(["evaluate", str(tmp_path / "nope.h5")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_eval_json_path(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("seed: 0\n")
    ckpt = run / "checkpoints" / "round-000004.h5"
    assert results.eval_json_path(ckpt) == run / "eval" / "round-000004.json"
    loose = tmp_path / "model.h5"
    assert results.eval_json_path(loose) == tmp_path / "model.eval.json"
    assert results.run_eval_path(run, 7) == run / "eval" / "round-000007.json"


# ---------------------------------------------------------------------------- per client

class _Oracle:
    """Stands in for the LeNet: images carry their class in the first pixel."""

    def predict(self, images):
        return np.asarray(images)[:, 0, 0, 0].astype(np.int64)


def test_evaluate_per_client():
    hist = [[10, 0, 0], [0, 5, 5], [0, 0, 0]]       # client 2 holds nothing
    fake = np.zeros((4, 2, 2, 1), np.uint8)
    fake[2:, 0, 0, 0] = 1                            # half class 0, half class 1
    out = per_client.evaluate_per_client(fake, _Oracle(), hist)
    assert out["class_histogram"] == [0.5, 0.5, 0.0]
    assert out["client_class_histogram_distance"] == [0.5, 0.5, None]
    assert out["mean_client_distance"] == 0.5
    personal = {0: np.zeros((3, 2, 2, 1), np.uint8), 1: fake}
    out = per_client.evaluate_per_client(personal, _Oracle(), hist)
    assert out["clients"] == [0, 1] and out["client_class_histogram_distance"] == [0.0, 0.5]


# ---------------------------------------------------------------------------- Inception

def test_inception_architecture_and_loading(tmp_path):
    from feddm_hpc.evaluation.inception import InceptionV3Features, load_inception

    model = InceptionV3Features()
    # torchvision's inception_v3 has 27,161,264 parameters; without fc (2,049,000) and
    # AuxLogits (3,326,696) that leaves 21,785,568.
    assert sum(p.numel() for p in model.parameters()) == 21_785_568
    state = model.state_dict()
    assert tuple(state["Mixed_7c.branch3x3dbl_3b.conv.weight"].shape) == (384, 384, 3, 1)
    torch.manual_seed(0)
    fid_file, tv_file, bad_file = (tmp_path / n for n in ("fid.pth", "tv.pth", "bad.pth"))
    torch.save({**state, "fc.weight": torch.zeros(1008, 2048), "fc.bias": torch.zeros(1008)},
               fid_file)
    torch.save({**state, "fc.weight": torch.zeros(1000, 2048),
                "AuxLogits.fc.weight": torch.zeros(1000, 768)}, tv_file)
    torch.save({"conv.weight": torch.zeros(3)}, bad_file)
    ext = load_inception(fid_file)
    assert ext.variant == "pytorch-fid" and ext.model.Mixed_7c.use_max
    assert load_inception(tv_file).variant == "torchvision"
    with pytest.raises(UserError, match="not an Inception-v3"):
        load_inception(bad_file)
    imgs = np.random.default_rng(0).integers(0, 256, (2, 28, 28, 1), dtype=np.uint8)
    feats = ext.features(imgs)
    assert feats.shape == (2, 2048) and np.isfinite(feats).all()


class _StubInception:
    """Cheap stand-in for the 2048-d network: 16 pixel features."""
    variant = "pytorch-fid"

    def __init__(self, path):
        self.path, self.calls = path, 0

    def features(self, images):
        self.calls += 1
        return np.asarray(images, dtype=np.float64).reshape(len(images), -1)[:, 300:316]


def test_score_unlabelled_data_with_inception_caches_real_stats(tmp_path):
    from feddm_hpc.evaluation.reference import Reference

    rng = np.random.default_rng(0)
    real = rng.integers(0, 256, (50, 28, 28, 1), dtype=np.uint8)
    ref = Reference("npz", "c" * 64, real, None, extractor=None)
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"weights")
    fake = rng.uniform(-1, 1, (20, 1, 28, 28)).astype(np.float32)
    stub = _StubInception(weights)
    first = scores.score_samples(fake, ref, 20, inception=stub, cache_dir=tmp_path)
    assert first["fd"] is None and first["class_histogram"] is None
    assert first["fid_inception"] > 0 and "note" not in first and stub.calls == 2
    again = scores.score_samples(fake, ref, 20, inception=stub, cache_dir=tmp_path)
    assert again["fid_inception"] == first["fid_inception"] and stub.calls == 3  # real cached


@pytest.mark.slow
def test_evaluate_run_writes_round_json(tmp_path, cache):
    """The in-training hook: one round of a tiny Simulation, then evaluate its EMA."""
    from feddm_hpc.federation.simulation import Simulation
    from feddm_hpc.rundir.runlog import RunLog

    config = load_config(TINY, ["system.threads=1", "system.progress=false",
                                "sampling.num_samples=0", "federation.rounds=1"])
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    sim = Simulation(config, SerialCommunicator(), run_dir, RunLog(0, run_dir, progress=False))
    sim.run()
    result = evaluate.evaluate_run(sim.view(), 0, 16, cache_dir=cache["FEDDM_HPC_CACHE"],
                                     extractor_epochs=1, extractor_max_train=2000)
    written = json.loads((run_dir / "eval" / "round-000000.json").read_text())
    assert written["num_samples"] == 16 and written["round"] == 0
    assert written["fd"] == result["fd"] and "_samples" not in written


@pytest.mark.mpi
def test_evaluation_during_training_leaves_training_untouched(tmp_path, cache, tiny_run):
    """evaluation.every=1 under 2 ranks writes eval/round-*.json and the same parameters as the run
    without evaluation (the session's serial train_tiny run: 2 ranks give its parameters bit for
    bit, tests/test_mpi.py)."""
    from conftest import final_params

    evaluated = tmp_path / "eval"
    sets = ["--set", "evaluation.every=1", "--set", "evaluation.num_samples=16",
            "--set", "evaluation.extractor_epochs=1", "--set", "evaluation.extractor_max_train=2000"]
    out = run_cli(["train", str(TINY), "--run-dir", str(evaluated), *DETERMINISTIC, *sets], nprocs=2,
                  env_extra=cache)
    assert out.returncode == 0, out.stderr
    assert "eval round 1: FD" in out.stderr
    for r in (0, 1):
        result = json.loads((evaluated / "eval" / f"round-{r:06d}.json").read_text())
        assert result["num_samples"] == 16 and result["round"] == r and result["fd"] > 0
    assert np.array_equal(final_params(evaluated), final_params(tiny_run))
