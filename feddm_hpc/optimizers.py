"""The optimizers of local training (and of the evaluation's feature extractor): torch's own
Adam, AdamW and SGD arithmetic, over state kept here.

torch.optim's classes call functional forms (torch.optim.adam.adam, torch.optim.sgd.sgd) with
their parameters' gradients and state. This module calls the same functions with the same
arguments and state, so a client's steps are bit-identical to torch.optim.Adam / AdamW / SGD
(tests/test_optimizers.py steps both side by side), without the classes' wrappers:
building a torch.optim.Optimizer (add_param_group) and every step() go through wrappers for
the compiler that import torch._dynamo, 1.3-2.7 CPU-s in every process that trains (every
rank of every run; about a quarter of a tiny run's CPU time, and of the test suite's).

Where the installed torch's functional forms do not take the arguments used here (torch before
the AdamW-as-Adam refactoring), make_optimizer falls back to the classes themselves (the same
results; only the import cost stays)."""
from __future__ import annotations

import importlib
import inspect
from typing import List, Optional, Sequence

import torch

# torch.optim.Adam's and SGD's defaults, which the clients never change.
BETAS = (0.9, 0.999)
EPS = 1e-8


def _scalar_dtype() -> torch.dtype:
    """The dtype torch.optim gives Adam's step counter (not fused, not capturable)."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


class FunctionalOptimizer:
    """Adam, AdamW (Adam with decoupled weight decay) or SGD with momentum over a fixed list of
    parameters: zero_grad(set_to_none=True), step(), reset(lr) to the state a new one has."""

    def __init__(self, kind: str, params: Sequence[torch.Tensor], lr: float,
                 weight_decay: float = 0.0, momentum: float = 0.0):
        if kind not in ("adam", "adamw", "sgd"):
            raise ValueError(f"client.optimizer: unknown {kind!r}")
        self.kind, self.params = kind, list(params)
        self.lr, self.weight_decay, self.momentum = float(lr), float(weight_decay), float(momentum)
        # Per parameter (by position): Adam's (step, exp_avg, exp_avg_sq), created at its first
        # step as torch.optim creates them; SGD's momentum buffer (its first step makes it).
        self._adam: List[Optional[tuple]] = [None] * len(self.params)
        self._momentum: List[Optional[torch.Tensor]] = [None] * len(self.params)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Gradients dropped (set to None; the clients never keep zeroed ones)."""
        for p in self.params:
            p.grad = None

    def reset(self, lr: float) -> None:
        """As a new optimizer over the same parameters: Adam's state zeroed in place (a new
        one's first step creates it as zeros), SGD's momentum dropped (its first step starts it
        as a copy of the gradient)."""
        self.lr = float(lr)
        for state in self._adam:
            if state is not None:
                for tensor in state:
                    tensor.zero_()
        self._momentum = [None] * len(self.params)

    def step_counters(self) -> List[torch.Tensor]:
        """Adam's step counters (kept on the CPU, as torch.optim keeps them: reading one is
        no device wait)."""
        return [state[0] for state in self._adam if state is not None]

    @torch.no_grad()
    def step(self) -> None:
        live = [i for i, p in enumerate(self.params) if p.grad is not None]
        if not live:
            return
        params = [self.params[i] for i in live]
        grads = [p.grad for p in params]
        if self.kind == "sgd":
            self._sgd(live, params, grads)
        else:
            self._adam_step(live, params, grads)

    def _adam_step(self, live, params, grads) -> None:
        for i in live:
            if self._adam[i] is None:
                p = self.params[i]
                self._adam[i] = (torch.tensor(0.0, dtype=_scalar_dtype(), device="cpu"),
                                 torch.zeros_like(p, memory_format=torch.preserve_format),
                                 torch.zeros_like(p, memory_format=torch.preserve_format))
        states = [self._adam[i] for i in live]
        _ADAM(
            params, grads, [s[1] for s in states], [s[2] for s in states], [],
            [s[0] for s in states], foreach=None, capturable=False, differentiable=False,
            fused=None, grad_scale=None, found_inf=None,
            has_complex=any(torch.is_complex(p) for p in params),
            decoupled_weight_decay=self.kind == "adamw", amsgrad=False, beta1=BETAS[0],
            beta2=BETAS[1], lr=self.lr, weight_decay=self.weight_decay, eps=EPS, maximize=False)

    def _sgd(self, live, params, grads) -> None:
        buffers = [self._momentum[i] for i in live] if self.momentum != 0 else []
        _SGD(
            params, grads, buffers, has_sparse_grad=False, foreach=None, fused=None,
            grad_scale=None, found_inf=None, weight_decay=self.weight_decay,
            momentum=self.momentum, lr=self.lr, dampening=0.0, nesterov=False, maximize=False)
        for i, buffer in zip(live, buffers):   # sgd() created the first step's buffers
            self._momentum[i] = buffer


class TorchOptimizer:
    """torch.optim's class itself, behind the same interface (the fallback)."""

    # Adam's and AdamW's per-parameter state: a new optimizer's first step creates each of
    # these as zeros (`step` a zero scalar), so zeroing them in place restarts exactly there.
    _ZERO_STARTED = frozenset({"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"})

    def __init__(self, kind: str, params: Sequence[torch.Tensor], lr: float,
                 weight_decay: float = 0.0, momentum: float = 0.0):
        if kind == "adam":
            self.optimizer = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
        elif kind == "adamw":
            self.optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
        elif kind == "sgd":
            self.optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum,
                                             weight_decay=weight_decay)
        else:
            raise ValueError(f"client.optimizer: unknown {kind!r}")

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        self.optimizer.step()

    def step_counters(self) -> List[torch.Tensor]:
        return [state["step"] for state in self.optimizer.state.values() if "step" in state]

    def reset(self, lr: float) -> None:
        """As a new optimizer over the same parameters, keeping the state's memory where a new
        one's state starts from zeros (SGD's momentum starts as the first gradient: dropped)."""
        opt = self.optimizer
        for group in opt.param_groups:
            group["lr"] = lr
        for param in list(opt.state):
            state = opt.state[param]
            if state and state.keys() <= self._ZERO_STARTED:
                for value in state.values():
                    value.zero_()
            else:
                del opt.state[param]


def _functional(module: str, name: str):
    """torch.optim.<module>.<name>, or None."""
    try:
        return getattr(importlib.import_module(f"torch.optim.{module}"), name, None)
    except ImportError:   # pragma: no cover - a torch without that module
        return None


def _takes(fn, names) -> bool:
    try:
        return set(names) <= set(inspect.signature(fn).parameters)
    except (TypeError, ValueError):   # pragma: no cover - a builtin without a signature
        return False


def functional_forms_usable() -> bool:
    """Whether this torch's functional Adam and SGD take every argument FunctionalOptimizer
    passes (torch 2.x from the AdamW-as-Adam refactoring on)."""
    adam, sgd = _functional("adam", "adam"), _functional("sgd", "sgd")
    return (adam is not None and sgd is not None
            and _takes(adam, ("has_complex", "decoupled_weight_decay", "fused", "beta1", "eps"))
            and _takes(sgd, ("has_sparse_grad", "fused", "dampening", "nesterov")))


_FUNCTIONAL = functional_forms_usable()
_ADAM, _SGD = _functional("adam", "adam"), _functional("sgd", "sgd")


def build_optimizer(kind: str, params, lr: float, weight_decay: float = 0.0,
                    momentum: float = 0.0):
    """`kind` ("adam", "adamw", "sgd") over `params`: the functional one where torch allows."""
    cls = FunctionalOptimizer if _FUNCTIONAL else TorchOptimizer
    return cls(kind, list(params), lr, weight_decay=weight_decay, momentum=momentum)


def make_optimizer(client_cfg, params, lr: float | None = None):
    """The client's optimizer (client.optimizer, client.lr unless `lr`, client.weight_decay,
    client.momentum for SGD) over `params`."""
    lr = client_cfg.lr if lr is None else lr
    return build_optimizer(client_cfg.optimizer, params, lr, client_cfg.weight_decay,
                           client_cfg.momentum if client_cfg.optimizer == "sgd" else 0.0)
