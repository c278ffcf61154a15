"""3-channel 32x32 data end to end: configs/cifar10_small.yaml trains 2 rounds under mpiexec on a
small subset of the shared CIFAR-10 JPEGs (linked into a temporary image folder, never copied into
the repository), and `feddm-hpc evaluate` scores the checkpoint; a resized greyscale image folder
is evaluated at the size it trained at. Skipped where the shared folder is absent."""
import json
import os
from pathlib import Path

import pytest

from feddm_hpc.data.cifar10 import CLASSES
from feddm_hpc.rundir.imaging import read_png

from conftest import DETERMINISTIC, ROOT, TINY, cli_in_process, run_cli

pytest.importorskip("PIL")
CIFAR_JPEG = Path(os.environ.get("FEDDM_HPC_CIFAR10_JPEG", ROOT.parent / "shared" / "data" / "cifar10-jpeg"))
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not CIFAR_JPEG.is_dir(), reason=f"{CIFAR_JPEG} not present")]
QUICK_EVAL = ["--num-samples", "8", "--steps", "5", "--extractor-epochs", "1", "--extractor-train-subset", "100"]


@pytest.fixture(scope="module")
def small_cifar(tmp_path_factory):
    """train/<class>/: 40 images a class, test/<class>/: 10, as symbolic links to the shared files."""
    root = tmp_path_factory.mktemp("cifar_small")
    for split, per_class in (("train", 40), ("test", 10)):
        for c in CLASSES:
            (root / split / c).mkdir(parents=True)
            for name in sorted(os.listdir(CIFAR_JPEG / split / c))[:per_class]:
                os.symlink(CIFAR_JPEG / split / c / name, root / split / c / name)
    return root


def sets(*assignments):
    return [a for s in assignments for a in ("--set", s)]


def evaluate(ckpt: Path, env):
    out = cli_in_process(["evaluate", str(ckpt), *QUICK_EVAL, *DETERMINISTIC[2:]], env_extra=env)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.mpi
def test_cifar10_small_trains_two_rounds_on_rgb_and_evaluates(small_cifar, tmp_path):
    env = {"FEDDM_HPC_CACHE": str(tmp_path / "cache")}
    run = tmp_path / "run"
    out = run_cli(["train", str(ROOT / "configs" / "cifar10_small.yaml"), "--run-dir", str(run),
                   *DETERMINISTIC, *sets(f"data.path={small_cifar}", "data.subset=320", "federation.rounds=2",
                                         "federation.num_clients=4", "client.local_steps=2",
                                         "sampling.num_samples=4", "sampling.steps=5")],
                  nprocs=2, env_extra=env)
    assert out.returncode == 0, out.stderr
    assert "image_folder: 320 images 32x32x3" in out.stderr
    # Both ranks loaded the subset; one decoded it, the other read the cache entry it wrote.
    assert len(list((tmp_path / "cache" / "image_folder").glob("*-train-320-*.npz"))) == 1
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 2 and all(m["train_loss"] > 0 for m in metrics)
    assert read_png(run / "samples" / "round-000001.png").shape[2] == 3
    result = evaluate(run / "checkpoints" / "round-000001.h5", env)
    assert result["feature_extractor"].startswith("colournet6-image_folder") and result["fd"] > 0
    assert result["memorization"]["train_images"] == 320


def test_a_resized_greyscale_folder_is_evaluated_at_its_training_size(small_cifar, tmp_path):
    env = {"FEDDM_HPC_CACHE": str(tmp_path / "cache")}
    run = tmp_path / "run"
    out = cli_in_process(["train", str(TINY), "--run-dir", str(run), *DETERMINISTIC,
                          *sets("data.dataset=image_folder", f"data.path={small_cifar}", "data.subset=null",
                                "data.image_size=16", "data.channels=1", "federation.rounds=1",
                                "sampling.num_samples=4")], env_extra=env)
    assert out.returncode == 0, out.stderr
    assert "image_folder: 400 images 16x16x1" in out.stderr
    result = evaluate(run / "checkpoints" / "round-000000.h5", env)
    assert result["fd"] > 0 and result["memorization"]["reference"]["split"] == "test"
