"""What a client's fixed cost was cut to (issue 23 item 5) changes no float: the parameter views
that copy whole vectors, the reset optimizer, partial sharing's start written in pieces."""
import numpy as np
import pytest
import torch

from feddm_hpc.config import ClientConfig, ModelConfig
from feddm_hpc.diffusion.schedule import make_schedule
from feddm_hpc.diffusion.unet import build_unet
from feddm_hpc.federation.client import LocalTrainer
from feddm_hpc.federation.shared_space import PrivateParts, SharedSpace
from feddm_hpc.optimizers import FunctionalOptimizer, TorchOptimizer
from feddm_hpc.params import ParamSpec, ParamViews, flatten, unflatten_into


def small_unet(seed=0, dropout=0.0):
    torch.manual_seed(seed)
    return build_unet(ModelConfig(base_channels=4, channel_mults=(1, 2), num_res_blocks=1,
                                  attention_resolutions=(4,), dropout=dropout), 1, 8)


def test_param_views_copy_whole_vectors_in_and_out():
    model = small_unet()
    before = flatten(model)
    views = ParamViews.bind(model)
    assert views is not None and views.total == before.size
    assert np.array_equal(views.read_into(np.empty_like(before)), before)
    vector = np.random.default_rng(0).standard_normal(before.size).astype(np.float32)
    storage = [p.data_ptr() for p in model.parameters()]
    views.load(vector)
    assert np.array_equal(flatten(model), vector)
    assert [p.data_ptr() for p in model.parameters()] == storage   # in place, own storage kept
    with torch.no_grad():                       # the views follow the parameters' updates
        next(model.parameters()).add_(1.0)
    assert views.read_into(np.empty_like(vector))[0] == pytest.approx(vector[0] + 1.0)
    views.load_subset([0, 2], np.arange(views.sizes[0] + views.sizes[2], dtype=np.float32))
    params = list(model.parameters())
    assert np.array_equal(params[2].detach().numpy().ravel(),
                          np.arange(views.sizes[0], views.sizes[0] + views.sizes[2]))
    with pytest.raises(ValueError, match="vector has 3 values"):
        views.load(np.zeros(3, dtype=np.float32))
    with pytest.raises(ValueError, match="vector has 3"):
        views.read_into(np.zeros(3, dtype=np.float32))


def test_param_views_fall_back_when_a_parameter_is_replaced():
    model = small_unet()
    views = ParamViews.bind(model)
    first = next(model.parameters())
    first.data = first.data.clone()             # e.g. a .to() onto another device
    assert not views.intact()
    vector = np.arange(views.total, dtype=np.float32)
    views.load(vector)                          # tensor by tensor: the replaced one too
    assert np.array_equal(flatten(model), vector)
    assert np.array_equal(views.read_into(np.empty_like(vector)), vector)


def test_param_views_refuse_models_they_cannot_serve():
    mixed = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2).double())
    assert ParamViews.bind(mixed) is None
    conv = torch.nn.Conv2d(3, 4, 3).to(memory_format=torch.channels_last)
    assert not conv.weight.is_contiguous()
    assert ParamViews.bind(conv) is None
    assert ParamViews.bind(torch.nn.ReLU()) is None          # no parameters


@pytest.mark.parametrize("cls", [FunctionalOptimizer, TorchOptimizer])
@pytest.mark.parametrize("name, extra", [("adam", {}), ("adamw", {"weight_decay": 0.01}),
                                         ("sgd", {"momentum": 0.9})])
def test_a_reset_optimizer_steps_exactly_like_a_new_one(name, extra, cls):
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(4, 3)), torch.nn.Parameter(torch.randn(5))]
    start = [p.detach().clone() for p in params]
    grads = [[torch.randn_like(p) for p in params] for _ in range(3)]

    def make(lr):
        return cls(name, params, lr, **extra)

    def steps(optimizer):
        with torch.no_grad():
            for p, s in zip(params, start):
                p.copy_(s)
        for g in grads:
            for p, gi in zip(params, g):
                p.grad = gi.clone()
            optimizer.step()
        return [p.detach().clone() for p in params]

    reused = make(0.3)
    steps(reused)                               # leaves state behind (Adam's moments, momentum)
    reused.reset(0.05)
    again = steps(reused)
    fresh = steps(make(0.05))
    assert all(torch.equal(a, b) for a, b in zip(again, fresh))
    assert not all(torch.equal(a, s) for a, s in zip(again, start))   # it did step


def test_consecutive_clients_of_one_trainer_match_fresh_trainers():
    """Client 1 after client 0 on the rank's one trainer (reused optimizer and buffer, dropout
    reseeded) equals client 1 on a trainer of its own, bit for bit."""
    images = torch.rand(64, 1, 8, 8) * 2 - 1
    schedule = make_schedule("linear", 10)
    cfg = ClientConfig(local_steps=3, batch_size=8, optimizer="adam", lr=1e-2, grad_clip=1.0)
    start = flatten(small_unet(dropout=0.1))

    def trainer():
        return LocalTrainer(small_unet(dropout=0.1), schedule, cfg, images, "cpu", seed=5)

    shared = trainer()
    assert shared.views is not None
    first = shared.train(start, 0, np.arange(32), 2)[0].copy()
    second = shared.train(start, 1, np.arange(32, 64), 2)[0].copy()
    assert np.array_equal(trainer().train(start, 1, np.arange(32, 64), 2)[0], second)
    assert np.array_equal(trainer().train(start, 0, np.arange(32), 2)[0], first)
    assert not np.array_equal(first, second)


@pytest.mark.parametrize("bound", [True, False])
def test_a_partial_start_in_pieces_trains_like_the_composed_vector(bound):
    images = torch.rand(32, 1, 8, 8) * 2 - 1
    schedule = make_schedule("linear", 10)
    cfg = ClientConfig(local_steps=2, batch_size=8, optimizer="adam", lr=1e-2)
    model = small_unet()
    init = flatten(model)
    space = SharedSpace(ParamSpec.from_model(model), ("decoder",))
    store = PrivateParts(space, init)
    store.keep(4, init + np.float32(0.5))      # client 4's own parts moved away from the start
    shared = space.take(init) - np.float32(0.25)
    composed = store.start(4, shared).compose()
    trainer = LocalTrainer(model, schedule, cfg, images, "cpu", seed=1)
    if not bound:
        trainer.views = None                    # a model ParamViews cannot serve
    via_pieces = trainer.train(store.start(4, shared), 4, np.arange(32), 0)[0].copy()
    unflatten_into(np.zeros_like(init), model)
    via_vector = trainer.train(composed, 4, np.arange(32), 0)[0].copy()
    assert np.array_equal(via_pieces, via_vector)
    assert np.array_equal(space.take_private(composed), space.take_private(init + np.float32(0.5)))
