"""Hypernetwork layers and the hyper U-Net (feddm_hpc/diffusion/hyper.py, parameterization.py)."""
import copy
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from feddm_hpc.config import ModelConfig, config_from_tree
from feddm_hpc.diffusion import parameterization as par
from feddm_hpc.diffusion.hyper import HyperConv2d, HyperGenerator, HyperLinear, chunk_count
from feddm_hpc.diffusion.loss import training_loss
from feddm_hpc.diffusion.schedule import make_schedule
from feddm_hpc.diffusion.unet import build_unet, count_parameters
from feddm_hpc.errors import ConfigError
from feddm_hpc.params import ParamSpec, flatten, unflatten_into

from conftest import final_params, train_tiny

TINY_MODEL = dict(base_channels=8, channel_mults=(1, 2), num_res_blocks=1, attention_resolutions=(),
                  dropout=0.0)
QUICKSTART_MODEL = dict(base_channels=16, channel_mults=(1, 2, 2), num_res_blocks=1,
                        attention_resolutions=(7,), dropout=0.0)


def hyper_model(base=TINY_MODEL, seed=0, size=28, **knobs):
    torch.manual_seed(seed)
    return par.build_model(ModelConfig(**base, parameterization="hyper", **knobs), 1, size)


@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_hyper_layer_equals_a_dense_layer_with_the_generated_weight(kind):
    torch.manual_seed(0)
    gen = HyperGenerator(embedding_dim=3, chunk_size=10).double()
    if kind == "linear":
        layer, m, n = HyperLinear(7, 5, gen).double(), 5, 7
        x = torch.randn(4, 7, dtype=torch.float64)

        def apply(w, b, x):
            return F.linear(x, w, b)
    else:
        layer, m, n = HyperConv2d(3, 6, (3, 3), gen, padding=1).double(), 6, 27
        x = torch.randn(2, 3, 5, 5, dtype=torch.float64)

        def apply(w, b, x):
            return F.conv2d(x, w.view(6, 3, 3, 3), b, 1, 1)
    assert layer.embeddings.shape == (chunk_count(m, n, 10), 3)
    with torch.no_grad():
        layer.gain.fill_(1.3)
    xs = [x.clone().requires_grad_(True) for _ in range(2)]
    out = layer(xs[0])
    upstream = torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(1))
    (out * upstream).sum().backward()
    # The explicit composition on float64 copies: chunks = E A^T + b, cut to m n, scaled.
    e, a, b, g = (t.detach().clone().requires_grad_(True)
                  for t in (layer.embeddings, gen.weight, gen.bias, layer.gain))
    w = g * layer.scale * (e @ a.t() + b).reshape(-1)[: m * n].view(m, n)
    ref = apply(w, layer.bias.detach(), xs[1])
    (ref * upstream).sum().backward()
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(xs[0].grad, xs[1].grad)
    torch.testing.assert_close(layer.embeddings.grad, e.grad)
    torch.testing.assert_close(layer.gain.grad, g.grad)
    torch.testing.assert_close(gen.weight.grad, a.grad)     # gradients reach the generator
    torch.testing.assert_close(gen.bias.grad, b.grad)
    assert gen.weight.grad.abs().sum() > 0


def test_the_generator_is_shared_and_listed_once():
    model = hyper_model()
    layers = [mod for mod in model.modules() if isinstance(mod, (HyperLinear, HyperConv2d))]
    assert len(layers) == 35 and all(layer.generator is model.hyper_generator for layer in layers)
    names = [name for name, _ in model.named_parameters()]
    assert [n for n in names if n.startswith("hyper_generator")] == ["hyper_generator.weight",
                                                                      "hyper_generator.bias"]
    assert not any("generator" in n for n in names if not n.startswith("hyper_generator"))
    # image-facing convs dense, every other conv and linear generated
    assert type(model.conv_in) is torch.nn.Conv2d and type(model.conv_out) is torch.nn.Conv2d
    assert isinstance(model.temb[0], HyperLinear) and isinstance(model.down[0][0].conv1, HyperConv2d)
    # a deep copy shares one (copied) generator too; setting the flat vector reaches every layer
    clone = copy.deepcopy(model)
    assert all(mod.generator is clone.hyper_generator for mod in clone.modules()
               if isinstance(mod, (HyperLinear, HyperConv2d)))
    vec = flatten(model) * 0.5
    unflatten_into(vec, clone)
    w_clone = clone.down[0][0].conv1.weight().detach()
    gen = clone.hyper_generator
    conv = clone.down[0][0].conv1
    expect = (conv.gain * conv.scale * gen(conv.embeddings)).reshape(-1)[: conv.m * conv.n]
    torch.testing.assert_close(w_clone, expect.detach().view_as(w_clone))
    assert torch.equal(gen.weight.detach(), model.hyper_generator.weight.detach() * 0.5)


def expected_hyper_count(base, d, k):
    """The hyper U-Net's size from the dense one's layers and the count formula alone."""
    dense = build_unet(ModelConfig(**base), 1, 28)
    total = count_parameters(dense) + k * d + k            # + the generator, once
    for name, mod in dense.named_modules():
        if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear)) and name not in ("conv_in", "conv_out"):
            m, n = mod.weight.shape[0], mod.weight[0].numel()
            total += -(-(m * n) // k) * d + 1 - m * n       # embeddings and the gain, not W
    return total, count_parameters(dense)


@pytest.mark.parametrize("base,knobs,numbers", [
    (QUICKSTART_MODEL, {}, (25623, 280177)),
    (QUICKSTART_MODEL, {"hyper_embedding_dim": 20, "hyper_chunk_size": 512}, (25619, 280177)),
    (TINY_MODEL, {}, (8252, 41609)),
    (TINY_MODEL, {"hyper_embedding_dim": 4, "hyper_chunk_size": 128}, (3176, 41609)),
])
def test_count_matches_the_formula(base, knobs, numbers):
    model = hyper_model(base, **knobs)
    d, k = knobs.get("hyper_embedding_dim", 16), knobs.get("hyper_chunk_size", 256)
    size = par.shared_size(model, "hyper")
    assert (size.shared, size.dense_equivalent) == expected_hyper_count(base, d, k) == numbers
    assert ParamSpec.from_model(model).total == size.shared == flatten(model).size
    assert size.metrics_fields() == {"shared_params": size.shared,
                                     "dense_equivalent_params": size.dense_equivalent}


def test_generated_weights_have_the_dense_init_variance_and_zero_layers_start_at_zero():
    model = hyper_model(QUICKSTART_MODEL)
    conv = model.up[0][0].conv1          # [32, 64*9]: 18,432 values
    assert conv.weight().detach().var().item() == pytest.approx(1 / (3 * 64 * 9), rel=0.15)
    zeroed = model.down[0][0].conv2
    assert not zeroed.weight().any() and not zeroed.bias.any() and zeroed.gain.item() == 0


@pytest.mark.slow   # ~3-5 s on two shared cores
def test_adam_steps_reduce_the_loss_and_move_zero_initialised_layers():
    model, s = hyper_model(size=8), make_schedule("linear", 100)
    conv2 = model.down[0][0].conv2
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    x0 = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    gen_before = model.hyper_generator.weight.detach().clone()
    emb_before = conv2.embeddings.detach().clone()

    def loss_at(seed):
        return training_loss(model, x0, s, torch.Generator().manual_seed(seed))

    before = loss_at(5).item()
    for _ in range(15):
        opt.zero_grad()
        loss_at(5).backward()
        opt.step()
    assert loss_at(5).item() < 0.8 * before
    assert conv2.gain.item() != 0 and not torch.equal(conv2.embeddings.detach(), emb_before)
    assert conv2.weight().abs().sum() > 0
    assert not torch.equal(model.hyper_generator.weight.detach(), gen_before)


def test_dense_build_is_unchanged_bit_for_bit():
    torch.manual_seed(3)
    a = build_unet(ModelConfig(**TINY_MODEL), 1, 28)
    torch.manual_seed(3)
    b = par.build_model(ModelConfig(**TINY_MODEL), 1, 28)
    assert (flatten(a) == flatten(b)).all() and par.shared_size(b).metrics_fields() == {}


@pytest.mark.parametrize("tree,field", [
    ({"hyper_embedding_dim": 8}, "model.hyper_embedding_dim: only with model.parameterization=hyper"),
    ({"parameterization": "lowrank", "lowrank_rank": 1, "hyper_chunk_size": 64},
     "model.hyper_chunk_size: only with model.parameterization=hyper"),
    ({"parameterization": "hyper", "hyper_embedding_dim": 0}, "model.hyper_embedding_dim: must be"),
    ({"parameterization": "hyper", "hyper_chunk_size": -4}, "model.hyper_chunk_size: must be"),
    ({"parameterization": "hyper", "lowrank_rank": 1}, "model.lowrank_rank / model.lowrank_fraction"),
])
def test_config_rejects_bad_knobs_naming_the_field(tree, field):
    with pytest.raises(ConfigError) as exc:
        config_from_tree({"model": tree})
    assert str(exc.value).startswith(field)


def test_config_accepts_hyper_with_and_without_knobs():
    assert config_from_tree({"model": {"parameterization": "hyper"}}).model.hyper_chunk_size is None
    m = config_from_tree({"model": {"parameterization": "hyper", "hyper_embedding_dim": 8,
                                    "hyper_chunk_size": 64}}).model
    assert par.hyper_size(m) == (8, 64)


@pytest.fixture(scope="module")
def hyper_run(tmp_path_factory):
    """A 2-round serial tiny.yaml run with model.parameterization=hyper (read only)."""
    return train_tiny(tmp_path_factory.mktemp("hyper") / "one", "--set", "model.parameterization=hyper")


@pytest.mark.slow   # the module fixture `hyper_run`: a 2-round tiny.yaml run, ~10 s
def test_tiny_run_with_hyper_trains(hyper_run):
    run = hyper_run
    params = final_params(run)
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    rounds = [r for r in lines if "shared_params" in r]
    assert rounds and rounds[-1]["shared_params"] == 8252 == params.size
    assert rounds[-1]["dense_equivalent_params"] == 41609
    assert np.isfinite(params).all()
    torch.manual_seed(0)
    start = flatten(par.build_model(config_from_tree(
        {"model": {**{k: list(v) if isinstance(v, tuple) else v for k, v in TINY_MODEL.items()},
                   "parameterization": "hyper"}}).model, 1, 28))
    assert not np.array_equal(params, start)   # it trained


@pytest.mark.slow
@pytest.mark.mpi
def test_hyper_is_rank_invariant(hyper_run, tmp_path):
    one = final_params(hyper_run)
    two = final_params(train_tiny(tmp_path / "two", "--set", "model.parameterization=hyper", nprocs=2))
    assert np.array_equal(one, two)
