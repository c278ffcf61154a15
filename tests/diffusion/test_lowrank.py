"""FedPara low-rank layers and the lowrank U-Net (feddm_hpc/diffusion/lowrank.py, parameterization.py)."""
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from feddm_hpc.cli.main import main
from feddm_hpc.config import ModelConfig, config_from_tree, config_from_yaml_text, dump_yaml
from feddm_hpc.diffusion import parameterization as par
from feddm_hpc.diffusion.loss import training_loss
from feddm_hpc.diffusion.lowrank import LowRankConv2d, LowRankLinear, factor_count, max_rank
from feddm_hpc.diffusion.schedule import make_schedule
from feddm_hpc.diffusion.unet import build_unet, count_parameters
from feddm_hpc.errors import ConfigError
from feddm_hpc.params import ParamSpec, flatten

from conftest import TINY

# configs/tiny.yaml's and configs/quickstart.yaml's model sections (MNIST: 1 channel, 28 x 28).
TINY_MODEL = dict(base_channels=8, channel_mults=(1, 2), num_res_blocks=1, attention_resolutions=(),
                  dropout=0.0)
QUICKSTART_MODEL = dict(base_channels=16, channel_mults=(1, 2, 2), num_res_blocks=1,
                        attention_resolutions=(7,), dropout=0.0)


def model_cfg(base=TINY_MODEL, **kw):
    return ModelConfig(**{**base, **kw})


def lowrank(base=TINY_MODEL, seed=0, size=28, **knob):
    torch.manual_seed(seed)
    return par.build_model(model_cfg(base, parameterization="lowrank", **knob), 1, size)


def against_explicit(layer, apply, x):
    """The layer's forward and backward, and the same on a dense op whose weight is the explicit
    composition of float64 copies of the factors: (outputs, input grads, factor copies, dL/dW)."""
    xs = [x.clone().requires_grad_(True) for _ in range(2)]
    out_lr = layer(xs[0])
    upstream = torch.randn(out_lr.shape, dtype=out_lr.dtype, generator=torch.Generator().manual_seed(1))
    (out_lr * upstream).sum().backward()
    f = {k: getattr(layer, k).detach().clone().requires_grad_(True) for k in ("x1", "y1", "x2", "y2")}
    w = (f["x1"] @ f["y1"].t()) * (f["x2"] @ f["y2"].t())
    w.retain_grad()
    out_dense = apply(w, layer.bias.detach(), xs[1])
    (out_dense * upstream).sum().backward()
    return (out_lr, out_dense), (xs[0].grad, xs[1].grad), f, w.grad


def linear_apply(w, b, x):
    return F.linear(x, w, b)


def conv_apply(w, b, x):
    return F.conv2d(x, w.view(6, 3, 3, 3), b, 1, 1)


@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_lowrank_layer_equals_a_dense_layer_with_the_composed_weight(kind):
    torch.manual_seed(0)
    if kind == "linear":
        layer, apply = LowRankLinear(7, 5, rank=2).double(), linear_apply
        x = torch.randn(4, 7, dtype=torch.float64)
    else:
        layer, apply = LowRankConv2d(3, 6, (3, 3), rank=2, padding=1).double(), conv_apply
        x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    outs, x_grads, f, g_w = against_explicit(layer, apply, x)
    torch.testing.assert_close(*outs)
    torch.testing.assert_close(*x_grads)
    for k in ("x1", "y1", "x2", "y2"):       # autograd on the explicit composition
        torch.testing.assert_close(getattr(layer, k).grad, f[k].grad)
    # and the chain rule written out: W = P1 * P2, P1 = X1 Y1^T, P2 = X2 Y2^T
    p1 = layer.x1.detach() @ layer.y1.detach().t()
    p2 = layer.x2.detach() @ layer.y2.detach().t()
    torch.testing.assert_close(layer.x1.grad, (g_w * p2) @ layer.y1.detach())
    torch.testing.assert_close(layer.y1.grad, (g_w * p2).t() @ layer.x1.detach())
    torch.testing.assert_close(layer.x2.grad, (g_w * p1) @ layer.y2.detach())
    torch.testing.assert_close(layer.y2.grad, (g_w * p1).t() @ layer.x2.detach())


def test_factor_count_matches_the_formula():
    for m, n, r in [(5, 7, 1), (16, 144, 3), (32, 32, 4)]:
        layer = LowRankLinear(n, m, r)
        assert count_parameters(layer) == factor_count(m, n, r) + m == 2 * r * (m + n) + m
        assert layer.dense_numel == m * n + m
    conv = LowRankConv2d(8, 16, (3, 3), rank=2)
    assert count_parameters(conv) == 2 * 2 * (16 + 72) + 16
    assert conv.weight().shape == (16, 8, 3, 3)
    assert max_rank(16, 8) == 2 and factor_count(16, 8, 2) <= 128 < factor_count(16, 8, 3)


def test_composed_weight_matches_the_dense_init_variance():
    torch.manual_seed(0)
    for r in (1, 4):
        w = LowRankLinear(256, 256, r).weight().detach()
        assert w.var().item() == pytest.approx(1 / (3 * 256), rel=0.15)


def expected_lowrank_count(base, rank_of):
    """The lowrank U-Net's size from the dense one's layers and the count formula alone."""
    dense = build_unet(model_cfg(base), 1, 28)
    total = count_parameters(dense)
    for name, mod in dense.named_modules():
        if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear)) and name not in ("conv_in", "conv_out"):
            m, n = mod.weight.shape[0], mod.weight[0].numel()
            total += factor_count(m, n, rank_of(name)) - m * n
    return total, count_parameters(dense)


def test_tiny_unet_lowrank_count_and_ratio():
    model = lowrank(lowrank_rank=1)
    shared, dense = expected_lowrank_count(TINY_MODEL, lambda name: 1)
    size = par.shared_size(model, "lowrank")
    assert (size.shared, size.dense_equivalent) == (shared, dense) == (8041, 41609)
    assert size.ratio == pytest.approx(0.193, abs=5e-4)
    assert ParamSpec.from_model(model).total == shared == flatten(model).size
    # the image-facing convs stay dense, every other conv and linear is factored
    assert isinstance(model.conv_in, torch.nn.Conv2d) and isinstance(model.conv_out, torch.nn.Conv2d)
    assert isinstance(model.temb[0], LowRankLinear) and isinstance(model.down[0][0].conv1, LowRankConv2d)
    assert size.metrics_fields() == {"shared_params": shared, "dense_equivalent_params": dense}


@pytest.mark.parametrize("base,fraction", [(QUICKSTART_MODEL, 0.25), (QUICKSTART_MODEL, 0.1),
                                           (TINY_MODEL, 0.25)])
def test_fraction_picks_ranks_whose_total_is_near_the_target(base, fraction):
    model = lowrank(base, lowrank_fraction=fraction)
    ranks = {name: mod.rank for name, mod in model.named_modules() if hasattr(mod, "rank")}
    shared, dense = expected_lowrank_count(base, ranks.__getitem__)
    size = par.shared_size(model, "lowrank")
    assert (size.shared, size.dense_equivalent) == (shared, dense)
    assert size.ratio == pytest.approx(fraction, abs=0.03)


def test_dense_build_is_todays_unet_bit_for_bit():
    torch.manual_seed(3)
    a = build_unet(model_cfg(), 1, 28)
    torch.manual_seed(3)
    b = par.build_model(model_cfg(), 1, 28)
    assert ParamSpec.from_model(a) == ParamSpec.from_model(b)
    assert (flatten(a) == flatten(b)).all()
    assert par.shared_size(b).metrics_fields() == {}


@pytest.mark.slow
def test_zero_initialised_layers_start_at_zero_and_still_train():
    model, s = lowrank(size=8, lowrank_rank=1), make_schedule("linear", 100)
    conv2 = model.down[0][0].conv2
    assert isinstance(conv2, LowRankConv2d) and not conv2.weight().any() and not conv2.bias.any()
    before_factors = {k: getattr(conv2, k).detach().clone() for k in ("x1", "y1", "x2", "y2")}
    # test_diffusion.py's dense test at lr 2e-3 gets 0.57x in 15 steps; rank 1 at lr 5e-3 0.67x
    # (the factors are ~0.5 in size, so Adam's ~lr steps move W relatively less than dense).
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    x0 = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1

    def loss_at(seed):
        return training_loss(model, x0, s, torch.Generator().manual_seed(seed))

    before = loss_at(5).item()
    for _ in range(15):
        opt.zero_grad()
        loss_at(5).backward()
        opt.step()
    assert loss_at(5).item() < 0.8 * before
    for k, v in before_factors.items():   # every factor of the zero-initialised layer moved
        assert not torch.equal(getattr(conv2, k).detach(), v), k
    assert conv2.weight().abs().sum() > 0


@pytest.mark.parametrize("tree,field", [
    ({"parameterization": "svd"}, "model.parameterization: invalid value 'svd'"),
    ({"parameterization": "lowrank"}, "model.lowrank_rank / model.lowrank_fraction: set exactly one"),
    ({"parameterization": "lowrank", "lowrank_rank": 1, "lowrank_fraction": 0.2},
     "model.lowrank_rank / model.lowrank_fraction: set exactly one"),
    ({"lowrank_rank": 2}, "model.lowrank_rank / model.lowrank_fraction: set exactly one"),
    ({"parameterization": "lowrank", "lowrank_rank": 0}, "model.lowrank_rank: must be >= 1"),
    ({"parameterization": "lowrank", "lowrank_fraction": 1.0}, "model.lowrank_fraction: must be in (0, 1)"),
    ({"parameterization": "lowrank", "lowrank_fraction": 0}, "model.lowrank_fraction: must be in (0, 1)"),
])
def test_config_rejects_bad_knobs_naming_the_field(tree, field):
    with pytest.raises(ConfigError) as exc:
        config_from_tree({"model": tree})
    assert str(exc.value).startswith(field)


def test_rank_or_fraction_out_of_the_model_s_reach_is_a_config_error():
    with pytest.raises(ConfigError, match=r"^model.lowrank_rank: 3 is too large for layer down.2.0.skip"):
        lowrank(lowrank_rank=3)
    with pytest.raises(ConfigError, match=r"^model.lowrank_fraction: 0.1 is below the smallest ratio"):
        lowrank(lowrank_fraction=0.1)


@pytest.mark.slow   # loads the data twice: ~3 s on two shared cores
def test_validate_prints_sizes_and_exits_2_on_a_bad_rank(capsys):
    lr = ["--set", "model.parameterization=lowrank"]
    assert main(["validate", str(TINY), *lr, "--set", "model.lowrank_rank=1"]) == 0
    assert ("model: lowrank, 8,041 shared (trained) parameters of a dense-equivalent 41,609 "
            "(ratio 0.193)") in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        raise SystemExit(main(["validate", str(TINY), *lr, "--set", "model.lowrank_rank=5"]))
    assert exc.value.code == 2
    assert "error: model.lowrank_rank: 5 is too large" in capsys.readouterr().err


def test_old_configs_load_dense_and_new_ones_round_trip():
    old = dump_yaml(config_from_tree({}))
    old = "\n".join(line for line in old.splitlines()
                    if "lowrank" not in line and "parameterization" not in line)
    assert config_from_yaml_text(old).model == ModelConfig()
    new = config_from_tree({"model": {"parameterization": "lowrank", "lowrank_fraction": 0.25}})
    assert config_from_yaml_text(dump_yaml(new)).model == new.model
    assert dataclasses.replace(new.model, lowrank_fraction=None, lowrank_rank=2).lowrank_rank == 2
