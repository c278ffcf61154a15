"""The Linear and Conv2d shells of layers whose weight is computed on every forward from other
parameters (lowrank.py's factors, hyper.py's generated chunks): the source provides `matrix()`,
the [out, in * kh * kw] weight built once per call, and a shell applies it to the whole batch."""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn


class LinearShell:
    """Mixin before an nn.Module weight source: y = x W^T + b with W = matrix()."""

    def _shape_linear(self, in_features: int, out_features: int) -> None:
        self.in_features, self.out_features = in_features, out_features

    def weight(self) -> torch.Tensor:
        return self.matrix()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.matrix(), self.bias)


class ConvShell:
    """Mixin before an nn.Module weight source: a plain 2-D convolution with W = matrix() viewed
    as [out, in, kh, kw]."""

    def _shape_conv(self, in_channels: int, out_channels: int, kernel_size: Tuple[int, int],
                    stride, padding) -> None:
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = tuple(kernel_size), stride, padding

    def weight(self) -> torch.Tensor:
        return self.matrix().view(self.out_channels, self.in_channels, *self.kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight(), self.bias, self.stride, self.padding)

    def conv_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}")


def check_plain_conv(layer: nn.Conv2d, what: str) -> None:
    """Only convolutions a weight matrix fully describes can be replaced."""
    if layer.groups != 1 or layer.dilation != (1, 1) or layer.padding_mode != "zeros":
        raise ValueError(f"only plain convolutions (groups 1, dilation 1, zero padding) {what}")


def dense_numel(m: int, n: int, bias) -> int:
    """Values of the dense layer a computed-weight layer replaces (weight and bias)."""
    return m * n + (m if bias is not None else 0)
