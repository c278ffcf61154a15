"""FedPara's low-rank Hadamard layers (Hyeon-Woo, Ye-Bin and Oh, ICLR 2022).

A layer's weight, as an [m, n] matrix, is W = (X1 Y1^T) * (X2 Y2^T) (elementwise): X1, X2 are
[m, r], Y1, Y2 are [n, r], so the layer holds 2 r (m + n) values instead of m n, and W can reach
rank r^2 (a plain product X Y^T of the same size reaches rank 2r). The factors are the module's
parameters: what an optimizer trains, what `params.flatten` sees, what a client sends.

A conv kernel [out, in, kh, kw] is the matrix [out, in*kh*kw] reshaped (FedPara's Proposition 1
form, not its Tucker-style conv form with two kh x kw cores): one code path for Linear and Conv2d
(a 1x1 conv is a Linear), a count formula that is the Linear one, and no core tensor whose r^2 k^2
values would dominate at the small channel counts of this U-Net. The cost is that Y holds kh*kw
times more rows than the conv form's; the rank needed for a given count is lower for it.

The composed weight is built once per forward call (one training step or sampling step), then a
plain F.linear / F.conv2d runs on the whole batch, so autograd, vmap (client_groups.py) and
bf16 autocast see ordinary ops.

Initialisation matches the dense layer's weight variance: PyTorch's default uniform init of a
dense layer has Var(W) = 1 / (3 fan_in); with factor entries iid N(0, s^2), each product's entry
has variance r s^4 and the Hadamard product (of two independent zero-mean terms) r^2 s^8, so
s = (1 / (3 fan_in r^2))^(1/8). The bias is the dense layer's (uniform, +-1/sqrt(fan_in)).
A zero-initialised layer (the U-Net's last conv of each residual branch) zeroes X1 and the bias:
W = 0 at the start, yet X1's gradient, (dL/dW * X2 Y2^T) Y1, is not zero, so training moves it
on the first step and the other factors from the second on (zeroing every factor would leave all
gradients zero forever).
"""
from __future__ import annotations

import math
from typing import Tuple

import torch
from torch import nn

from feddm_hpc.diffusion.generated import ConvShell, LinearShell, check_plain_conv, dense_numel


def factor_count(m: int, n: int, rank: int) -> int:
    """Values in the four factors of an [m, n] weight at `rank` (bias not included)."""
    return 2 * rank * (m + n)


def max_rank(m: int, n: int) -> int:
    """The largest rank whose factors hold no more values than the [m, n] weight (at least 1)."""
    return max(1, (m * n) // (2 * (m + n)))


class _Hadamard(nn.Module):
    """The four factors of an [m, n] weight, and the bias; subclasses apply the weight."""

    def __init__(self, m: int, n: int, rank: int, bias: bool, fan_in: int):
        super().__init__()
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        self.m, self.n, self.rank = m, n, rank
        self.x1 = nn.Parameter(torch.empty(m, rank))
        self.y1 = nn.Parameter(torch.empty(n, rank))
        self.x2 = nn.Parameter(torch.empty(m, rank))
        self.y2 = nn.Parameter(torch.empty(n, rank))
        if bias:
            self.bias = nn.Parameter(torch.empty(m))
        else:
            self.register_parameter("bias", None)
        self.fan_in = fan_in
        self.reset_parameters()

    def reset_parameters(self) -> None:
        s = (1.0 / (3.0 * self.fan_in * self.rank ** 2)) ** 0.125
        for p in (self.x1, self.y1, self.x2, self.y2):
            nn.init.normal_(p, 0.0, s)
        if self.bias is not None:
            bound = 1.0 / math.sqrt(self.fan_in)
            nn.init.uniform_(self.bias, -bound, bound)

    def zero_init_(self) -> None:
        """W = 0 and bias 0, with every factor's gradient able to become non-zero (module doc)."""
        with torch.no_grad():
            self.x1.zero_()
            if self.bias is not None:
                self.bias.zero_()

    def matrix(self) -> torch.Tensor:
        """The composed [m, n] weight."""
        return (self.x1 @ self.y1.t()) * (self.x2 @ self.y2.t())

    @property
    def dense_numel(self) -> int:
        """Values of the dense layer this one replaces (weight and bias)."""
        return dense_numel(self.m, self.n, self.bias)


class LowRankLinear(LinearShell, _Hadamard):
    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True):
        super().__init__(out_features, in_features, rank, bias, fan_in=in_features)
        self._shape_linear(in_features, out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}"


class LowRankConv2d(ConvShell, _Hadamard):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: Tuple[int, int], rank: int,
                 stride=1, padding=0, bias: bool = True):
        kh, kw = kernel_size
        super().__init__(out_channels, in_channels * kh * kw, rank, bias, fan_in=in_channels * kh * kw)
        self._shape_conv(in_channels, out_channels, (kh, kw), stride, padding)

    def extra_repr(self) -> str:
        return f"{self.conv_repr()}, rank={self.rank}"


def from_dense(layer: nn.Module, rank: int) -> _Hadamard:
    """The low-rank counterpart of an nn.Linear or nn.Conv2d (same shapes, fresh factors)."""
    bias = layer.bias is not None
    if isinstance(layer, nn.Linear):
        return LowRankLinear(layer.in_features, layer.out_features, rank, bias)
    if isinstance(layer, nn.Conv2d):
        check_plain_conv(layer, "factor")
        return LowRankConv2d(layer.in_channels, layer.out_channels, layer.kernel_size, rank,
                             layer.stride, layer.padding, bias)
    raise TypeError(f"cannot factor {type(layer).__name__}")
