"""Code exercises of chapter 3 (Convolutional networks).

- ``ch03.conv1d``: the 1-D cross-correlation ``(x, weight, stride, dilation)`` of a (batch, in_channels,
  length) tensor with a (out_channels, in_channels, k) kernel, no padding, no bias. Checked against
  ``F.conv1d``.
- ``ch03.same_padding``: the zero padding that keeps height and width unchanged for a stride-1
  convolution with an odd ``kernel_size`` and a ``dilation``. Checked against the output-size rule.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from . import Case, register


def conv1d_reference(x: torch.Tensor, weight: torch.Tensor, stride: int, dilation: int) -> torch.Tensor:
    """y[b, o, i] = sum_c sum_u weight[o, c, u] * x[b, c, i * stride + u * dilation]."""
    return F.conv1d(x, weight, stride=stride, dilation=dilation)


def _conv1d_cases(rng: np.random.Generator) -> list[Case]:
    def t(*shape: int) -> torch.Tensor:
        return torch.from_numpy(rng.standard_normal(shape).astype(np.float32))

    return [
        Case("one channel in and out, kernel 3", (t(1, 1, 10), t(1, 1, 3), 1, 1)),
        Case("asymmetric kernel (a flipped kernel gives other numbers)", (t(2, 1, 12), t(1, 1, 4), 1, 1)),
        Case("three channels in, four out", (t(2, 3, 15), t(4, 3, 3), 1, 1)),
        Case("stride 2", (t(2, 2, 17), t(3, 2, 3), 2, 1)),
        Case("dilation 2", (t(1, 2, 16), t(2, 2, 3), 1, 2)),
        Case("stride 3 and dilation 3, kernel as long as it can be", (t(3, 2, 13), t(2, 2, 5), 3, 3)),
    ]


def same_padding_reference(kernel_size: int, dilation: int) -> int:
    """p with floor((H + 2p - d(k-1) - 1)/1) + 1 == H, i.e. p = d(k-1)/2 (odd k)."""
    return dilation * (kernel_size - 1) // 2


def _same_cases(rng: np.random.Generator) -> list[Case]:
    del rng  # the cases are fixed
    return [
        Case("3x3 kernel, no dilation", (3, 1)),
        Case("5x5 kernel, no dilation", (5, 1)),
        Case("1x1 kernel", (1, 4)),
        Case("3x3 kernel, dilation 2", (3, 2)),
        Case("5x5 kernel, dilation 3", (5, 3)),
        Case("7x7 kernel, dilation 2", (7, 2)),
    ]


register("ch03.conv1d", conv1d_reference, _conv1d_cases)
register("ch03.same_padding", same_padding_reference, _same_cases)
