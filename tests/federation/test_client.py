"""Local training terms: the FedProx gradient mu (w - w_global) and SCAFFOLD's (c - c_i)."""
import numpy as np
import pytest
import torch

from feddm_hpc.config import ClientConfig, ModelConfig
from feddm_hpc.diffusion.schedule import make_schedule
from feddm_hpc.diffusion.unet import build_unet
from feddm_hpc.federation.client import LocalTrainer
from feddm_hpc.federation.local_steps import add_gradient_terms
from feddm_hpc.params import flatten
from feddm_hpc.strategies.terms import ConstantCorrection, ProximalTerm


def test_gradient_terms_add_exactly_mu_times_distance_and_correction():
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(3, 2)), torch.nn.Parameter(torch.randn(5))]
    anchor = [p.detach().clone() for p in params]
    grads = [torch.randn(3, 2), torch.randn(5)]
    corr = np.random.default_rng(1).standard_normal(11).astype(np.float32)
    mu = 0.37
    terms = [ProximalTerm(mu), ConstantCorrection(corr)]
    for term in terms:
        term.begin(params)            # the anchor is the model the client starts from
    with torch.no_grad():             # a local step moved the weights away from it
        for p in params:
            p.add_(torch.randn_like(p))
    for p, g in zip(params, grads):
        p.grad = g.clone()
    add_gradient_terms(params, terms)
    flat_corr = [torch.from_numpy(corr[:6]).view(3, 2), torch.from_numpy(corr[6:])]
    for p, a, g, c in zip(params, anchor, grads, flat_corr):
        expected = g.double() + mu * (p.detach().double() - a.double()) + c.double()
        np.testing.assert_allclose(p.grad.double().numpy(), expected.numpy(), rtol=1e-6, atol=1e-7)
    for p, g in zip(params, grads):  # no terms: the gradient is untouched
        p.grad = g.clone()
    add_gradient_terms(params, [])
    assert all(torch.equal(p.grad, g) for p, g in zip(params, grads))


@pytest.fixture(scope="module")
def tiny_setup():
    torch.manual_seed(0)
    model = build_unet(ModelConfig(base_channels=4, channel_mults=(1,), num_res_blocks=1,
                                   attention_resolutions=(), dropout=0.0), 1, 8)
    images = torch.rand(32, 1, 8, 8) * 2 - 1
    schedule = make_schedule("linear", 10)
    return model, images, schedule, flatten(model)


def _train(setup, steps, mu=0.0, correction=None, lr=0.5):
    model, images, schedule, w0 = setup
    cfg = ClientConfig(local_steps=steps, batch_size=8, optimizer="sgd", lr=lr, momentum=0.0,
                       grad_clip=None, prox_mu=mu)
    trainer = LocalTrainer(model, schedule, cfg, images, "cpu", seed=3)
    terms = ([ProximalTerm(mu)] if mu > 0 else []) + \
        ([ConstantCorrection(correction)] if correction is not None else [])
    local, _ = trainer.train(w0, client_id=1, indices=np.arange(32), round_index=0, terms=terms)
    return local.astype(np.float64)


@pytest.mark.slow
def test_prox_step_differs_from_plain_by_lr_mu_distance(tiny_setup):
    """Plain SGD, no momentum, no clip. Step 1 starts at the anchor, so the prox term is zero
    and both runs reach w1; step 2 sees the same diffusion gradient at w1, so the prox run ends
    exactly -lr * mu * (w1 - w_global) away from the plain run."""
    lr, mu = 0.5, 2.0
    w0 = tiny_setup[3].astype(np.float64)
    w1 = _train(tiny_setup, 1, lr=lr)
    plain = _train(tiny_setup, 2, lr=lr)
    prox = _train(tiny_setup, 2, mu=mu, lr=lr)
    assert np.abs(w1 - w0).max() > 1e-3  # the test is not vacuous
    np.testing.assert_allclose(prox - plain, -lr * mu * (w1 - w0), rtol=0, atol=2e-6)


@pytest.mark.slow
def test_scaffold_correction_shifts_each_step_by_lr_times_correction(tiny_setup):
    lr = 0.5
    w0 = tiny_setup[3]
    corr = np.random.default_rng(0).standard_normal(w0.size).astype(np.float32) * 1e-2
    plain = _train(tiny_setup, 1, lr=lr)
    corrected = _train(tiny_setup, 1, correction=corr, lr=lr)
    np.testing.assert_allclose(corrected - plain, -lr * corr.astype(np.float64), rtol=0, atol=2e-6)
