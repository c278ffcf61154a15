"""The optimizers (feddm_hpc/optimizers.py) step bit for bit as torch.optim's Adam,
AdamW and SGD do, through resets, parameters without gradients and stacked (grouped) parameters,
and a process that trains with them never imports torch._dynamo (what they exist to avoid)."""
import subprocess
import sys

import pytest
import torch

from feddm_hpc import optimizers
from feddm_hpc.config import ClientConfig
from feddm_hpc.optimizers import FunctionalOptimizer, TorchOptimizer, make_optimizer

from conftest import ROOT

CASES = [("adam", {}), ("adam", {"weight_decay": 0.05}), ("adamw", {"weight_decay": 0.01}),
         ("sgd", {"momentum": 0.0}), ("sgd", {"momentum": 0.9, "weight_decay": 0.02})]


def parameters(seed, shapes=((4, 3), (5,), (2, 3, 3, 3))):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(*s, generator=g)) for s in shapes]


def run(optimizer, params, schedule, seed=1):
    """Steps with seeded gradients; `schedule`: per step, "step", "skip0" (parameter 0 has no
    gradient this step) or a float (reset to that learning rate first)."""
    g = torch.Generator().manual_seed(seed)
    for item in schedule:
        if isinstance(item, float):
            optimizer.reset(item)
            continue
        optimizer.zero_grad(set_to_none=True)
        for i, p in enumerate(params):
            grad = torch.randn(p.shape, generator=g)
            if not (item == "skip0" and i == 0):
                p.grad = grad
        optimizer.step()
    return [p.detach().clone() for p in params]


@pytest.mark.parametrize("kind, extra", CASES)
def test_steps_equal_torch_optim_bit_for_bit(kind, extra):
    schedule = ["step", "step", "skip0", "step", 0.03, "step", "skip0", "step"]
    mine, theirs = parameters(0), parameters(0)
    got = run(FunctionalOptimizer(kind, mine, 0.1, **extra), mine, schedule)
    want = run(TorchOptimizer(kind, theirs, 0.1, **extra), theirs, schedule)
    for a, b in zip(got, want):
        assert torch.equal(a, b)
    assert not torch.equal(got[1], parameters(0)[1])   # it did step


def test_stacked_parameters_of_a_client_group_step_as_torch_optim():
    stacked = [torch.nn.Parameter(torch.randn(3, 4, 2)), torch.nn.Parameter(torch.randn(3, 7))]
    copy = [torch.nn.Parameter(p.detach().clone()) for p in stacked]
    got = run(FunctionalOptimizer("adam", stacked, 1e-2), stacked, ["step"] * 4)
    want = run(TorchOptimizer("adam", copy, 1e-2), copy, ["step"] * 4)
    assert all(torch.equal(a, b) for a, b in zip(got, want))


def test_make_optimizer_reads_the_client_config():
    params = parameters(2)
    opt = make_optimizer(ClientConfig(optimizer="sgd", lr=0.2, momentum=0.5, weight_decay=0.1),
                         params, lr=0.07)
    assert isinstance(opt, FunctionalOptimizer) == optimizers.functional_forms_usable()
    if isinstance(opt, FunctionalOptimizer):
        assert (opt.kind, opt.lr, opt.momentum, opt.weight_decay) == ("sgd", 0.07, 0.5, 0.1)
    adam = make_optimizer(ClientConfig(optimizer="adam", momentum=0.5), params)
    if isinstance(adam, FunctionalOptimizer):
        assert adam.momentum == 0.0 and adam.lr == ClientConfig().lr   # momentum is SGD's only
    with pytest.raises(ValueError, match="client.optimizer"):
        FunctionalOptimizer("lion", params, 0.1)


def test_a_torch_without_the_functional_arguments_gets_torch_optim(monkeypatch):
    def old_adam(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, *,
                 amsgrad, beta1, beta2, lr, weight_decay, eps, maximize):   # torch 2.0's form
        raise AssertionError("not called")

    import torch.optim.adam as adam_module

    monkeypatch.setattr(adam_module, "adam", old_adam)
    assert not optimizers.functional_forms_usable()


@pytest.mark.slow   # a fresh interpreter importing torch
def test_training_with_them_never_imports_torch_dynamo():
    """torch.optim's classes import torch._dynamo when built and when they step (1.3-2.7 CPU-s
    a process); a client built and stepped through make_optimizer must not."""
    code = (
        "import sys, torch\n"
        "from feddm_hpc.config import ClientConfig\n"
        "from feddm_hpc.optimizers import make_optimizer, FunctionalOptimizer\n"
        "m = torch.nn.Linear(3, 2)\n"
        "for kind in ('adam', 'adamw', 'sgd'):\n"
        "    opt = make_optimizer(ClientConfig(optimizer=kind), m.parameters())\n"
        "    assert isinstance(opt, FunctionalOptimizer)\n"
        "    for _ in range(2):\n"
        "        opt.zero_grad(set_to_none=True)\n"
        "        m(torch.ones(4, 3)).square().sum().backward()\n"
        "        opt.step()\n"
        "    opt.reset(0.01)\n"
        "print('torch._dynamo' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
