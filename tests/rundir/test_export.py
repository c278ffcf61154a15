"""`feddm-hpc export CHECKPOINT OUT_DIR` (rundir/export.py): the EMA model as safetensors weights
and a JSON config that rebuild the project's U-Net, read by the safetensors library, composed to
dense weights under lowrank/hyper, and sampled by `feddm-hpc sample OUT_DIR` bit-identically to
the checkpoint."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from feddm_hpc import api
from feddm_hpc.cli.sample import draw_checkpoint_samples
from feddm_hpc.config import config_from_tree, dump_yaml
from feddm_hpc.diffusion.parameterization import build_model
from feddm_hpc.diffusion.unet import UNet
from feddm_hpc.errors import CheckpointError, UserError
from feddm_hpc.params import ParamSpec, flatten, unflatten_into
from feddm_hpc.rundir.checkpoint import CheckpointData, load_checkpoint, save_checkpoint
from feddm_hpc.rundir.export import CONFIG, WEIGHTS, dense_state, export_checkpoint
from feddm_hpc.rundir.safetensors_io import read_safetensors, write_safetensors

from conftest import cli_in_process

MODEL = {"base_channels": 8, "channel_mults": [1, 2], "num_res_blocks": 1,
         "attention_resolutions": [4], "dropout": 0.0}
TREE = {"seed": 3, "model": MODEL, "diffusion": {"timesteps": 50},
        "sampling": {"sampler": "ddim", "steps": 5},
        "system": {"threads": 1}}   # sample sets the config's threads: the export's, too


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny convolutions: one thread is several times faster than two on shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_checkpoint(path, tree=TREE, shape=(1, 8, 8)):
    """A round-2 checkpoint of a randomly perturbed model (no training: export reads any)."""
    cfg = config_from_tree(tree)
    torch.manual_seed(0)
    model = build_model(cfg.model, image_channels=shape[0], image_size=shape[1])
    params = flatten(model)
    ema = params + np.random.default_rng(1).standard_normal(params.size).astype(np.float32) * 0.05
    spec = ParamSpec.from_model(model)
    return save_checkpoint(path, CheckpointData(
        round=2, config_yaml=dump_yaml(cfg), params=params, ema=ema.astype(np.float32),
        spec_text=spec.as_text(), param_fingerprint=spec.fingerprint(), image_shape=shape))


def test_safetensors_round_trip_and_the_library_reads_ours(tmp_path):
    tensors = {"b.weight": np.arange(6, dtype=np.float32).reshape(2, 3),
               "a": np.ones(5, np.float32), "empty": np.zeros(0, np.float32)}
    write_safetensors(tmp_path / "x.safetensors", tensors, {"round": "2"})
    back, meta = read_safetensors(tmp_path / "x.safetensors")
    assert meta == {"round": "2"} and set(back) == set(tensors)
    for k in tensors:
        np.testing.assert_array_equal(back[k], tensors[k])
    st = pytest.importorskip("safetensors.numpy")
    theirs = st.load_file(str(tmp_path / "x.safetensors"))
    assert all(np.array_equal(theirs[k], tensors[k]) for k in tensors)
    st.save_file(tensors, str(tmp_path / "y.safetensors"))
    assert all(np.array_equal(read_safetensors(tmp_path / "y.safetensors")[0][k], tensors[k])
               for k in tensors)


def test_a_truncated_safetensors_file_names_itself(tmp_path):
    path = write_safetensors(tmp_path / "x.safetensors", {"a": np.ones(8, np.float32)})
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(CheckpointError, match=r"x.safetensors: not a valid safetensors file"):
        read_safetensors(path)


def test_export_rebuilds_the_unet_and_samples_bit_identically(tmp_path):
    ckpt = make_checkpoint(tmp_path / "round-000002.h5")
    out = tmp_path / "export"
    info = export_checkpoint(ckpt, out)
    assert sorted(p.name for p in out.iterdir()) == [CONFIG, WEIGHTS]
    assert json.loads((out / CONFIG).read_text()) == info
    assert info["round"] == 2 and info["seed"] == 3 and info["image_shape"] == [1, 8, 8]
    # A user's own reload, no feddm_hpc machinery but the UNet class: the JSON's constructor
    # arguments and the weights by name.
    m = info["model"]
    assert m["class"] == "feddm_hpc.diffusion.unet.UNet"
    unet = UNet(m["image_channels"], m["base_channels"], m["channel_mults"], m["num_res_blocks"],
                m["attention_resolutions"], m["dropout"], m["image_size"])
    tensors, _ = read_safetensors(out / WEIGHTS)
    unet.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items()}, strict=True)
    np.testing.assert_array_equal(flatten(unet), load_checkpoint(ckpt).ema)
    # sample: the export folder gives exactly the checkpoint's images
    a = draw_checkpoint_samples(ckpt, 4, device="cpu")[0]
    b = draw_checkpoint_samples(out, 4, device="cpu")[0]
    assert torch.equal(a, b)
    assert np.array_equal(api.sample(out, num=2, seed=9), api.sample(ckpt, num=2, seed=9))
    model = api.load_model(out)
    assert not model.training and np.array_equal(flatten(model), flatten(unet))
    with pytest.raises(UserError, match=r"model.safetensors: already exists"):
        export_checkpoint(ckpt, out)


@pytest.mark.parametrize("kind, knobs", [("lowrank", {"lowrank_rank": 2}), ("hyper", {})])
def test_lowrank_and_hyper_export_their_composed_dense_weights(tmp_path, kind, knobs):
    tree = {**TREE, "model": {**MODEL, "parameterization": kind, **knobs}}
    cfg = config_from_tree(tree)
    torch.manual_seed(0)
    model = build_model(cfg.model, 1, 8)
    with torch.no_grad():
        unflatten_into(np.random.default_rng(2).standard_normal(flatten(model).size)
                       .astype(np.float32) * 0.1, model)
    dense = build_model(config_from_tree(TREE).model, 1, 8)
    dense.load_state_dict(dense_state(model, dense), strict=True)
    x, t = torch.randn(3, 1, 8, 8), torch.tensor([0, 7, 49])
    with torch.no_grad():
        assert torch.equal(model(x, t), dense(x, t))   # the same convolutions, bit for bit
    ckpt = make_checkpoint(tmp_path / "round-000002.h5", tree)
    info = export_checkpoint(ckpt, tmp_path / "export")
    assert info["model"]["composed_from"] == kind
    assert torch.equal(draw_checkpoint_samples(ckpt, 2, device="cpu")[0],
                       draw_checkpoint_samples(tmp_path / "export", 2, device="cpu")[0])


def test_an_export_whose_weights_do_not_match_its_config_is_refused(tmp_path):
    out = tmp_path / "export"
    export_checkpoint(make_checkpoint(tmp_path / "round-000002.h5"), out)
    tensors, _ = read_safetensors(out / WEIGHTS)
    tensors.pop("conv_in.weight")
    write_safetensors(out / WEIGHTS, tensors)
    with pytest.raises(CheckpointError, match=r"model.safetensors: its tensors do not match"):
        draw_checkpoint_samples(out, 1, device="cpu")
    (out / CONFIG).write_text('{"format": "other"}')
    with pytest.raises(CheckpointError, match=r"config.json: not a feddm_hpc export"):
        draw_checkpoint_samples(out, 1, device="cpu")


@pytest.mark.slow
def test_the_commands_export_and_sample_and_exit_2_on_bad_input(tmp_path):
    ckpt = make_checkpoint(tmp_path / "round-000002.h5")
    out = cli_in_process(["export", str(ckpt), str(tmp_path / "exp")])
    assert out.returncode == 0, out.stderr
    assert f"to {tmp_path / 'exp'}: model.safetensors (" in out.stdout
    for source, png in ((ckpt, "a.png"), (tmp_path / "exp", "b.png")):
        out = cli_in_process(["sample", str(source), "--num", "4", "--out", str(tmp_path / png),
                       "--device", "cpu"])
        assert out.returncode == 0, out.stderr
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    for args, message in ((["export", str(ckpt), str(tmp_path / "exp")], "already exists"),
                          (["export", str(tmp_path / "nope.h5"), str(tmp_path / "x")], "nope.h5")):
        out = cli_in_process(args)
        lines = out.stderr.strip().splitlines()
        assert out.returncode == 2 and len(lines) == 1 and message in lines[0], out.stderr
