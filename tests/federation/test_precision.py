"""system.precision: bf16 runs the forward under bfloat16 autocast and changes the update by
rounding only: float32 parameters out, deterministic, close to the float32 update, and the same
for a client trained alone or in a group."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from feddm_hpc.config import ClientConfig, DiffusionConfig, ModelConfig, config_from_tree
from feddm_hpc.diffusion.loss import make_loss
from feddm_hpc.diffusion.schedule import make_schedule
from feddm_hpc.diffusion.unet import build_unet
from feddm_hpc.errors import ConfigError
from feddm_hpc.federation.client import LocalTrainer
from feddm_hpc.federation.client_groups import GroupTrainer, Member
from feddm_hpc.federation.precision import cpu_flags, forward_precision, slow_bf16_warning
from feddm_hpc.params import flatten

CLIENT = ClientConfig(local_steps=6, batch_size=8, optimizer="adam", lr=2e-3, grad_clip=1.0)
DIFFUSION = DiffusionConfig(timesteps=50, loss_weighting="min_snr")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_unet(ModelConfig(base_channels=8, channel_mults=(1, 2), num_res_blocks=1,
                                  attention_resolutions=(4,), dropout=0.0), 1, 8)


@pytest.fixture(scope="module")
def w0(model):
    return flatten(model).copy()   # training leaves its weights in the model: start from a copy


@pytest.fixture(scope="module")
def images():
    return torch.from_numpy(np.random.default_rng(0).integers(0, 256, (64, 1, 8, 8), dtype=np.uint8))


def trainer(model, images, precision):
    return LocalTrainer(model, make_schedule("linear", DIFFUSION.timesteps), CLIENT, images, "cpu",
                        seed=3, loss_fn=make_loss(DIFFUSION), total_rounds=2, precision=precision)


def update(model, images, w0, precision):
    vec, result = trainer(model, images, precision).train(w0, 0, np.arange(32), 0)
    return vec.copy(), result


@pytest.fixture(scope="module")
def bf16_client0(model, images, w0):
    """Client 0's bf16 update of round 0 on samples 0-31 (emulated bf16 is slow on most CPUs:
    computed once, compared by three tests)."""
    return update(model, images, w0, "bf16")


def test_bf16_update_is_close_to_fp32_but_not_equal(model, images, w0, bf16_client0):
    v32, r32 = update(model, images, w0, "fp32")
    v16, r16 = bf16_client0
    assert v16.dtype == np.float32
    d32, d16 = v32 - w0, v16 - w0
    # Autocast really ran: bf16 rounding moves the update ...
    assert np.linalg.norm(d16 - d32) > 1e-4 * np.linalg.norm(d32)
    # ... but it is the same update, as the losses are the same losses.
    assert np.linalg.norm(d16 - d32) < 0.1 * np.linalg.norm(d32)
    assert abs(r16.loss - r32.loss) < 0.05 * r32.loss


def test_bf16_is_deterministic(model, images, w0, bf16_client0):
    a, ra = bf16_client0
    b, rb = update(model, images, w0, "bf16")   # a second, independent computation
    assert np.array_equal(a, b) and ra.loss == rb.loss


def test_bf16_group_member_matches_its_solo_bf16_update(model, images, w0, bf16_client0):
    local = trainer(model, images, "bf16")
    members = [Member(0, np.arange(32)), Member(1, np.arange(32, 64))]
    # Member 0 alone is bf16_client0: update() trains client 0 on samples 0-31 in round 0.
    alone = [bf16_client0[0]] + [local.train(w0, m.client_id, m.indices, 0)[0].copy() for m in members[1:]]
    together = GroupTrainer(local, DIFFUSION).train_group(w0, members, 0)
    # vmap's batched kernels round differently in bf16: within the bf16-vs-fp32 tolerance, and
    # far closer than the two clients' updates are to each other.
    for a, (vec, _) in zip(alone, together):
        assert np.linalg.norm(vec - a) < 0.1 * np.linalg.norm(a - w0)
    assert np.linalg.norm(alone[0] - alone[1]) > 0.3 * np.linalg.norm(alone[0] - w0)


def test_fp32_is_no_autocast_and_bf16_autocasts_on_the_device_type():
    with forward_precision("cpu", "fp32"):
        assert not torch.is_autocast_enabled("cpu")
    with forward_precision("cpu", "bf16"):
        assert torch.is_autocast_enabled("cpu")
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16
    with pytest.raises(ValueError, match="fp16"):
        forward_precision("cpu", "fp16")


def test_config_rejects_an_unknown_precision_naming_the_field():
    with pytest.raises(ConfigError, match=r"^system\.precision: invalid value 'fp16'"):
        config_from_tree({"system": {"precision": "fp16"}})


@pytest.mark.slow  # runs benchmarks/precision.py in a subprocess (~7 s of CPU)
def test_precision_benchmark_reports_both_precisions(tmp_path):
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, str(root / "benchmarks" / "precision.py"), "--configs",
                          "configs/tiny.yaml", "--steps", "2", "--repeats", "1"],
                         capture_output=True, text=True, cwd=root, timeout=300)
    assert out.returncode == 0, out.stderr
    last = out.stdout.strip().splitlines()[-1]
    assert last.startswith("precision=")
    rows = json.loads(last.split("=", 1)[1])["tiny"]["precisions"]
    assert set(rows) == {"fp32", "bf16"} and rows["fp32"]["vs_fp32"] == 1.0
    assert all(r["steps_per_s"] > 0 for r in rows.values())


def test_cpu_flags_reads_the_flags_line(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2 fma avx512_bf16\n")
    assert cpu_flags(info) == {"fpu", "avx2", "fma", "avx512_bf16"}
    assert cpu_flags(tmp_path / "missing") is None
    info.write_text("processor\t: 0\n")
    assert cpu_flags(info) is None


@pytest.mark.parametrize("device, precision, flags, warns", [
    ("cpu", "bf16", {"avx2", "fma"}, True),            # emulated: the x0.12 case
    ("cpu", "bf16", {"avx2", "avx512_bf16"}, False),
    ("cpu", "bf16", {"avx2", "amx_bf16"}, False),
    ("cpu", "bf16", None, False),                      # cannot tell: say nothing
    ("cpu", "fp32", {"avx2"}, False),
    ("cuda:0", "bf16", {"avx2"}, False),               # the GPU does the arithmetic
])
def test_slow_bf16_warning_only_for_emulated_cpu_bf16(device, precision, flags, warns):
    message = slow_bf16_warning(device, precision, flags)
    assert (message is not None) == warns
    if warns:
        assert message.startswith("system.precision: bf16") and "\n" not in message
