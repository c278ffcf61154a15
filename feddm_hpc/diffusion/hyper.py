"""Hypernetwork layers: one small shared generator makes every U-Net kernel from learned chunk
embeddings (in the spirit of HyperFedNet, 2024, and Ha, Dai and Le's HyperNetworks, 2017).

A layer's weight, as an [m, n] matrix flattened row-major to m*n values (a conv kernel
[out, in, kh, kw] is [out, in*kh*kw], as in lowrank.py), is cut into c = ceil(m n / K) chunks of
K values (the last one truncated). Chunk j is G(e_j): the layer holds c embeddings e_j of
dimension d, and G is ONE generator module shared by every hyper layer of the model,

    W = a * s * reshape(G(E))[:m n],   G(E) = E A^T + b,   A: [K, d], b: [K],

a linear map (the measured choice, benchmarks/hyper_vs_lowrank.py and docs/communication.md: an
MLP generator of the same size learned about as well). s = sqrt(1 / (3 fan_in)) is a constant (PyTorch's
default dense-init std), a is a learnable per-layer gain. The model's parameters are the
embeddings, the gains, the dense biases, and the generator's A and b once: the generator is
registered on the U-Net root (`hyper_generator`) and the layers reference it without registering
it, so `named_parameters()` (the shared vector) lists it once and torch.func.functional_call (the
vectorized client groups) swaps its values for every layer at once.

The shared count is K d + K (generator) + sum over layers of (c_l d + 1 + bias): with K near the
square root of the factored count, both terms are small (module doc of parameterization.py).

Initialisation: A ~ N(0, 1/d), E ~ N(0, 1), b = 0, so every generated entry has variance 1 and
a = 1 gives W the dense layer's variance 1 / (3 fan_in). A zero-initialised layer (the last conv
of each residual branch and attention block) starts with a = 0 and bias 0: W = 0, yet a's
gradient <dL/dW, s G(E)> is not zero, so a moves on the first step and the embeddings from the
second on (lowrank.py's zeroed X1 works the same way).

Each layer generates its weight once per forward call (one training or sampling step), then a
plain F.conv2d / F.linear runs on the whole batch.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from feddm_hpc.diffusion.generated import ConvShell, LinearShell, check_plain_conv, dense_numel


def chunk_count(m: int, n: int, chunk: int) -> int:
    return -(-(m * n) // chunk)


class HyperGenerator(nn.Module):
    """Chunk embeddings [c, d] -> chunks [c, K]. hidden=None: linear (the default design);
    hidden=H: d -> H -> K with a SiLU (kept for benchmarks/hyper_vs_lowrank.py's comparison)."""

    def __init__(self, embedding_dim: int, chunk_size: int, hidden: Optional[int] = None):
        super().__init__()
        self.embedding_dim, self.chunk_size, self.hidden = embedding_dim, chunk_size, hidden
        if hidden is None:
            self.weight = nn.Parameter(torch.empty(chunk_size, embedding_dim))
            self.bias = nn.Parameter(torch.empty(chunk_size))
        else:
            self.weight_in = nn.Parameter(torch.empty(hidden, embedding_dim))
            self.bias_in = nn.Parameter(torch.empty(hidden))
            self.weight = nn.Parameter(torch.empty(chunk_size, hidden))
            self.bias = nn.Parameter(torch.empty(chunk_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Unit-variance outputs for unit-variance embeddings.
        if self.hidden is None:
            nn.init.normal_(self.weight, 0.0, 1.0 / math.sqrt(self.embedding_dim))
        else:
            nn.init.normal_(self.weight_in, 0.0, math.sqrt(2.0 / self.embedding_dim))
            nn.init.zeros_(self.bias_in)
            # E[silu(z)^2] for z ~ N(0, 2): about 0.7; scale the output layer to give variance 1.
            nn.init.normal_(self.weight, 0.0, 1.0 / math.sqrt(0.7 * self.hidden))
        nn.init.zeros_(self.bias)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        if self.hidden is None:
            return F.linear(emb, self.weight, self.bias)
        return F.linear(F.silu(F.linear(emb, self.weight_in, self.bias_in)), self.weight, self.bias)


class _Hyper(nn.Module):
    """The chunk embeddings, gain and bias of an [m, n] weight; subclasses apply the weight."""

    def __init__(self, m: int, n: int, generator: HyperGenerator, bias: bool, fan_in: int):
        super().__init__()
        self.m, self.n, self.fan_in = m, n, fan_in
        chunks = chunk_count(m, n, generator.chunk_size)
        self.embeddings = nn.Parameter(torch.empty(chunks, generator.embedding_dim))
        self.gain = nn.Parameter(torch.empty(1))   # [1], not 0-d: client_groups stacks rows
        if bias:
            self.bias = nn.Parameter(torch.empty(m))
        else:
            self.register_parameter("bias", None)
        self.scale = 1.0 / math.sqrt(3.0 * fan_in)   # a constant: the dense init's std
        self.attach(generator)
        self.reset_parameters()

    def attach(self, generator: HyperGenerator) -> None:
        """Reference the shared generator without registering it (the root registers it once)."""
        self.__dict__["_generator"] = (generator,)

    @property
    def generator(self) -> HyperGenerator:
        return self.__dict__["_generator"][0]

    def reset_parameters(self) -> None:
        nn.init.normal_(self.embeddings, 0.0, 1.0)
        nn.init.ones_(self.gain)
        if self.bias is not None:
            bound = 1.0 / math.sqrt(self.fan_in)
            nn.init.uniform_(self.bias, -bound, bound)

    def zero_init_(self) -> None:
        """W = 0 and bias 0, with a non-zero gradient on the gain (module doc)."""
        with torch.no_grad():
            self.gain.zero_()
            if self.bias is not None:
                self.bias.zero_()

    def matrix(self) -> torch.Tensor:
        """The generated [m, n] weight."""
        flat = self.generator(self.embeddings).reshape(-1)[: self.m * self.n]
        return (self.gain * self.scale) * flat.view(self.m, self.n)

    @property
    def dense_numel(self) -> int:
        return dense_numel(self.m, self.n, self.bias)


class HyperLinear(LinearShell, _Hyper):
    def __init__(self, in_features: int, out_features: int, generator: HyperGenerator,
                 bias: bool = True):
        super().__init__(out_features, in_features, generator, bias, fan_in=in_features)
        self._shape_linear(in_features, out_features)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"chunks={self.embeddings.shape[0]}")


class HyperConv2d(ConvShell, _Hyper):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: Tuple[int, int],
                 generator: HyperGenerator, stride=1, padding=0, bias: bool = True):
        kh, kw = kernel_size
        super().__init__(out_channels, in_channels * kh * kw, generator, bias, fan_in=in_channels * kh * kw)
        self._shape_conv(in_channels, out_channels, (kh, kw), stride, padding)

    def extra_repr(self) -> str:
        return f"{self.conv_repr()}, chunks={self.embeddings.shape[0]}"


def from_dense(layer: nn.Module, generator: HyperGenerator) -> _Hyper:
    """The hyper counterpart of an nn.Linear or nn.Conv2d (same shapes, fresh embeddings)."""
    bias = layer.bias is not None
    if isinstance(layer, nn.Linear):
        return HyperLinear(layer.in_features, layer.out_features, generator, bias)
    if isinstance(layer, nn.Conv2d):
        check_plain_conv(layer, "are generated")
        return HyperConv2d(layer.in_channels, layer.out_channels, layer.kernel_size, generator,
                           layer.stride, layer.padding, bias)
    raise TypeError(f"cannot generate {type(layer).__name__}")
