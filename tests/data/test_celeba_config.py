"""configs/celeba64_paper.yaml: CelebA's aligned 178x218 JPEGs (here six synthetic ones of that
size, in one folder as CelebA ships them) become 64x64 RGB through the centre crop and resize,
and the config's U-Net has the size docs/datasets.md states."""
import numpy as np
import pytest

from feddm_hpc.config import load_config
from feddm_hpc.data.datasets import image_options, load_dataset

from conftest import ROOT, cli_in_process

PIL = pytest.importorskip("PIL.Image")
pytestmark = pytest.mark.slow      # builds the 78.7M-parameter U-Net (~3 CPU-s, ~15 s loaded)
CONFIG = ROOT / "configs" / "celeba64_paper.yaml"


def test_celeba64_config_reads_aligned_celeba_jpegs_at_64x64(tmp_path, monkeypatch):
    folder = tmp_path / "img_align_celeba"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        PIL.fromarray(rng.integers(0, 256, (218, 178, 3), dtype=np.uint8)).save(
            folder / f"{i + 1:06d}.jpg")
    sets = [f"data.path={folder}", "federation.num_clients=2", "client.batch_size=2"]
    monkeypatch.setenv("FEDDM_HPC_CACHE", str(tmp_path / "cache"))
    cfg = load_config(CONFIG, sets)
    ds = load_dataset(cfg.data.dataset, cfg.data.path, "train", **image_options(cfg.data))
    assert ds.image_shape == (64, 64, 3) and len(ds) == 6
    out = cli_in_process(["validate", str(CONFIG), *[a for s in sets for a in ("--set", s)]],
                         env_extra={"FEDDM_HPC_CACHE": str(tmp_path / "cache")})
    assert out.returncode == 0, out.stderr
    assert "6 image_folder images" in out.stdout
    assert "model: dense, 78,700,803 shared parameters" in out.stdout
