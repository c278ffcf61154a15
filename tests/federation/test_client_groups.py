"""Clients trained together (system.client_group_size): each member's update equals its
one-at-a-time update within float tolerance, padding never reaches a shorter client, and groups
depend on G and the round, never on the rank count."""
import dataclasses

import numpy as np
import pytest
import torch

from feddm_hpc.config import ClientConfig, DiffusionConfig, ModelConfig, config_from_tree
from feddm_hpc.diffusion.loss import make_loss
from feddm_hpc.diffusion.schedule import make_schedule
from feddm_hpc.diffusion.unet import build_unet
from feddm_hpc.errors import ConfigError
from feddm_hpc.federation.client import LocalTrainer
from feddm_hpc.federation.client_groups import (
    GroupTrainer,
    Member,
    clip_rows_,
    form_groups,
    place_groups,
    stack_terms,
)
from feddm_hpc.federation.placement import assign_blocks, resolve_group_size
from feddm_hpc.params import flatten
from feddm_hpc.strategies.terms import ConstantCorrection, ProximalTerm

ADAM = ClientConfig(local_steps=4, batch_size=8, optimizer="adam", lr=2e-3, grad_clip=0.5)
SGD = ClientConfig(local_steps=4, batch_size=8, optimizer="sgd", lr=0.05, momentum=0.0,
                   grad_clip=None)
MIN_SNR = DiffusionConfig(timesteps=50, loss_weighting="min_snr")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_unet(ModelConfig(base_channels=4, channel_mults=(1, 2), num_res_blocks=1,
                                  attention_resolutions=(4,), dropout=0.0), 1, 8)


@pytest.fixture(scope="module")
def images():
    return torch.from_numpy(np.random.default_rng(0).integers(0, 256, (96, 1, 8, 8), dtype=np.uint8))


def trainers(model, images, client_cfg, diffusion_cfg=MIN_SNR):
    schedule = make_schedule("linear", diffusion_cfg.timesteps)
    local = LocalTrainer(model, schedule, client_cfg, images, "cpu", seed=5,
                         loss_fn=make_loss(diffusion_cfg), total_rounds=3)
    return local, GroupTrainer(local, diffusion_cfg)


def shards(n=3, size=32):
    return [np.arange(i * size, (i + 1) * size) for i in range(n)]


def rel(a, b, w0):
    return np.linalg.norm((a - w0) - (b - w0)) / np.linalg.norm(b - w0)


def solo(local, w0, members, r=1):
    return [local.train(w0, m.client_id, m.indices, r, terms=m.terms)[0].copy() for m in members]


@pytest.mark.slow
def test_each_member_equals_its_one_at_a_time_update(model, images):
    local, group = trainers(model, images, ADAM)
    w0 = flatten(model).copy()
    members = [Member(c, idx) for c, idx in enumerate(shards())]
    alone = solo(local, w0, members)
    together = group.train_group(w0, members, 1)
    for a, (vec, result), m in zip(alone, together, members):
        assert result.client_id == m.client_id and result.steps == 4
        assert rel(vec, a, w0) < 1e-3
    # The rows are different clients: their updates differ far more than the tolerance.
    assert rel(together[0][0], together[1][0], w0) > 0.05


def test_losses_match_one_at_a_time(model, images):
    local, group = trainers(model, images, ADAM, DiffusionConfig(timesteps=50))
    w0 = flatten(model).copy()
    members = [Member(c, idx) for c, idx in enumerate(shards(2))]
    alone = [local.train(w0, m.client_id, m.indices, 0)[1].loss for m in members]
    together = [res.loss for _, res in group.train_group(w0, members, 0)]
    np.testing.assert_allclose(together, alone, rtol=1e-4)


def test_fedprox_and_scaffold_terms_act_per_row(model, images):
    local, group = trainers(model, images, dataclasses.replace(SGD, prox_mu=0.1))
    w0 = flatten(model).copy()
    rng = np.random.default_rng(3)
    corrections = [rng.standard_normal(w0.size).astype(np.float32) * 0.01 for _ in range(3)]
    # Fresh term objects for each path: a term holds the anchor of the client it began with.
    make = lambda: [Member(c, idx, [ProximalTerm(0.1), ConstantCorrection(corrections[c])])
                    for c, idx in enumerate(shards())]
    alone = solo(local, w0, make())
    together = group.train_group(w0, make(), 1)
    plain = group.train_group(w0, [Member(c, idx) for c, idx in enumerate(shards())], 1)
    for c, a in enumerate(alone):
        assert rel(together[c][0], a, w0) < 1e-4
        assert rel(plain[c][0], a, w0) > 1e-2   # the terms did change the update


@pytest.mark.slow
def test_unequal_steps_padding_never_reaches_the_shorter_client(model, images):
    cfg = dataclasses.replace(ADAM, local_steps=None, local_epochs=1.0)   # steps = size / 8
    local, group = trainers(model, images, cfg)
    w0 = flatten(model).copy()
    short, long_ = Member(0, np.arange(0, 24)), Member(1, np.arange(24, 88))   # 3 and 8 steps
    (v_short, r_short), (v_long, r_long) = group.train_group(w0, [short, long_], 2)
    assert (r_short.steps, r_long.steps) == (3, 8)
    a_short, a_long = solo(local, w0, [short, long_], r=2)
    assert rel(v_short, a_short, w0) < 1e-3 and rel(v_long, a_long, w0) < 1e-3
    # Had the padded steps reached the short client, it would sit near its 8-step solo result.
    eight = dataclasses.replace(ADAM, local_steps=8)
    local8, _ = trainers(model, images, eight)
    a_short8 = local8.train(w0, 0, short.indices, 2)[0].copy()
    assert rel(v_short, a_short8, w0) > 0.1


def test_row_clipping_equals_torch_per_client():
    torch.manual_seed(1)
    stacked = [torch.zeros(3, 4, 2, requires_grad=True), torch.zeros(3, 5, requires_grad=True)]
    grads = [torch.randn(3, 4, 2), torch.randn(3, 5) * 3.0]
    grads[0][2] *= 1e-3
    grads[1][2] *= 1e-3        # row 2 is under the limit and must stay unchanged
    for p, g in zip(stacked, grads):
        p.grad = g.clone()
    clip_rows_(stacked, 1.0)
    for row in range(3):
        single = [torch.zeros(4, 2, requires_grad=True), torch.zeros(5, requires_grad=True)]
        for p, g in zip(single, grads):
            p.grad = g[row].clone()
        torch.nn.utils.clip_grad_norm_(single, 1.0)
        for p, s in zip(stacked, single):
            torch.testing.assert_close(p.grad[row], s.grad)
    torch.testing.assert_close(stacked[0].grad[2], grads[0][2])


def test_terms_must_agree_across_a_group():
    stacked = [torch.zeros(2, 3)]
    with pytest.raises(ValueError, match="same kinds"):
        stack_terms([[ProximalTerm(0.1)], []], stacked)
    with pytest.raises(ValueError, match="mu"):
        stack_terms([[ProximalTerm(0.1)], [ProximalTerm(0.2)]], stacked)


def test_groups_come_from_the_round_in_id_order():
    assert form_groups([7, 2, 5, 3, 9], 2) == [[2, 3], [5, 7], [9]]
    assert form_groups([7, 2, 5, 3, 9], 2, blocks=True) == [[2, 3], [5], [7], [9]]
    assert form_groups(range(6), 3) == form_groups(range(6), 3, blocks=True)   # everyone: the same
    steps = {c: 10 for c in range(10)}
    placed = place_groups(form_groups(range(10), 3), steps.__getitem__, 2)
    assert sorted(sum(placed, []), key=lambda g: g[0]) == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    assert all(len(p) == 2 for p in placed)   # 30 + 10 against 30 + 30 is the best split here


def test_static_blocks_keep_a_block_on_one_rank():
    hosted = assign_blocks([100] * 10, 3, 4)   # blocks {0..3}, {4..7}, {8, 9}
    assert sorted(sum(hosted, [])) == list(range(10))
    for block in ([0, 1, 2, 3], [4, 5, 6, 7], [8, 9]):
        assert any(set(block) <= set(h) for h in hosted)
    with pytest.raises(ConfigError, match="system.client_group_size"):
        assign_blocks([100] * 10, 4, 4)


def test_auto_is_one_on_cpu_and_a_group_on_cuda():
    assert resolve_group_size("auto", "cpu", 0.0) == 1
    assert resolve_group_size("auto", "cuda:1", 0.0) > 1
    assert resolve_group_size("auto", "cuda:0", 0.1) == 1   # dropout: one at a time
    assert resolve_group_size(4, "cpu", 0.0) == 4


@pytest.mark.parametrize("value, message", [
    (0, "must be >= 1 or auto"), ("eight", "an integer or 'auto'"), (2.0, "an integer or 'auto'")])
def test_group_size_is_validated(value, message):
    with pytest.raises(ConfigError, match=f"system.client_group_size: .*{message}"):
        config_from_tree({"system": {"client_group_size": value}})


def test_groups_need_a_dropout_free_model():
    with pytest.raises(ConfigError, match="system.client_group_size.*dropout"):
        config_from_tree({"system": {"client_group_size": 4}, "model": {"dropout": 0.1}})
    assert config_from_tree({"system": {"client_group_size": "auto"},
                             "model": {"dropout": 0.1}}).system.client_group_size == "auto"
