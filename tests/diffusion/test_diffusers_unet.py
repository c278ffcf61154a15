"""`model.name: diffusers_unet2d` (diffusion/diffusers_unet.py): diffusers' UNet2DModel trained by
the simulator under mpiexec (resuming exactly on another rank count), exported as a DDPMPipeline
folder (rundir/diffusers_export.py) that `DDPMPipeline.from_pretrained` loads and samples from, with exactly the checkpoint's EMA weights;
`feddm-hpc sample` on the folder draws the checkpoint's samples bit for bit. The optional
diffusers extra: without it the option exits 2 with the install command."""
from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch

from feddm_hpc.config import config_from_tree
from feddm_hpc.diffusion.diffusers_unet import DiffusersUNet2D
from feddm_hpc.errors import ConfigError

from conftest import cli_in_process, straight_and_resumed

OPTIONS = ("{block_out_channels: [16, 32], down_block_types: [DownBlock2D, AttnDownBlock2D], "
           "up_block_types: [AttnUpBlock2D, UpBlock2D], layers_per_block: 1, norm_num_groups: 8}")


def test_without_diffusers_the_model_fails_at_config_load_with_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "diffusers" else real(name, *a))
    with pytest.raises(ConfigError, match=r"^model.name: diffusers_unet2d needs the diffusers "
                                          r"package.*pip install 'feddm_hpc\[diffusers\]'"):
        config_from_tree({"model": {"name": "diffusers_unet2d"}})


def test_the_data_sets_the_image_arguments():
    with pytest.raises(ConfigError, match=r"^model.options: in_channels, sample_size come\(s\) "
                                          r"from the data"):
        DiffusersUNet2D(1, 28, sample_size=32, in_channels=3)


@pytest.mark.mpi
def test_trained_under_mpi_exported_and_sampled_by_diffusers(tmp_path, monkeypatch):
    pytest.importorskip("diffusers")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "pipeline"
    # Two rounds straight on one rank (in this process: diffusers is imported here anyway), and
    # one round at 2 ranks resumed to two at 3 ranks: the same parameters bit for bit (diffusers'
    # model trains rank-count invariant and resumes exactly, on another rank count).
    run = straight_and_resumed(tmp_path, "model.name=diffusers_unet2d", f"model.options={OPTIONS}",
                               "sampling.num_samples=2", in_process=True)
    ckpt = run / "checkpoints" / "round-000001.h5"
    res = cli_in_process(["export", str(ckpt), str(out)], env_extra={"HF_HUB_OFFLINE": "1"})
    assert res.returncode == 0, res.stderr
    assert "a diffusers DDPMPipeline folder" in res.stdout
    assert json.loads((out / "model_index.json").read_text())["_class_name"] == "DDPMPipeline"

    from diffusers import DDPMPipeline

    from feddm_hpc.cli.sample import draw_checkpoint_samples
    from feddm_hpc.rundir.checkpoint import load_checkpoint

    threads = torch.get_num_threads()
    torch.set_num_threads(1)     # a tiny model on shared cores
    try:
        pipe = DDPMPipeline.from_pretrained(str(out))
        weights = np.concatenate([p.detach().numpy().ravel() for p in pipe.unet.parameters()])
        np.testing.assert_array_equal(weights, load_checkpoint(ckpt).ema)   # the EMA, exactly
        assert pipe.scheduler.config.num_train_timesteps == 100
        images = pipe(batch_size=2, num_inference_steps=5, output_type="np",
                      generator=torch.Generator().manual_seed(0)).images
        assert images.shape == (2, 28, 28, 1) and np.isfinite(images).all()
        assert images.min() >= 0 and images.max() <= 1
        assert torch.equal(draw_checkpoint_samples(ckpt, 2, device="cpu")[0],
                           draw_checkpoint_samples(out, 2, device="cpu")[0])
    finally:
        torch.set_num_threads(threads)
