"""Code exercises of chapter 3 (Convolutional networks).

- ``ch03.conv1d``: the 1-D cross-correlation ``(x, weight, stride, dilation)`` of a (batch, in_channels,
  length) tensor with a (out_channels, in_channels, k) kernel, no padding, no bias. Checked against
  ``F.conv1d``.
- ``ch03.effective_width``: an experiment. The standard deviation, in pixels, of the gradient
  profile of the centre output of ``n_layers`` stacked ``kernel_size`` x ``kernel_size``
  averaging convolutions (the chapter's effective-receptive-field probe, for any kernel size).
  Checked against the exact value ``sqrt(n (k^2 - 1) / 12)``: the profile is the n-fold
  convolution of a box of width k, whose variance is (k^2 - 1) / 12.
- ``ch03.running_stats``: the running mean and variance that ``nn.BatchNorm2d`` holds after
  training-mode forward passes over a list of batches, computed from the update rule. The reference *is* an
  ``nn.BatchNorm2d``, so the reader's from-the-definition update must match PyTorch's.
- ``ch03.fold_batchnorm``: fold an evaluation-mode batch norm into the convolution before it:
  the ``(weight, bias)`` of one convolution that computes ``bn(conv(x))``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

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


def effective_width_reference(n_layers: int, kernel_size: int) -> float:
    """Std (pixels) of the gradient profile of n stacked k x k averaging convolutions: sqrt(n (k^2 - 1) / 12)."""
    return math.sqrt(n_layers * (kernel_size**2 - 1) / 12)


def _width_cases(rng: np.random.Generator) -> list[Case]:
    del rng  # the cases are fixed
    return [
        Case("one 3x3 layer", (1, 3)),
        Case("four 3x3 layers", (4, 3)),
        Case("two 5x5 layers", (2, 5)),
        Case("three 7x7 layers", (3, 7)),
        Case("ten 3x3 layers", (10, 3)),
        Case("one 2x2 layer (even kernel)", (1, 2)),
        Case("six 1x1 layers (they see one pixel)", (6, 1)),
    ]


def running_stats_reference(batches: list[torch.Tensor], momentum: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(running_mean, running_var) of a fresh nn.BatchNorm2d after a training-mode pass over each batch."""
    bn = nn.BatchNorm2d(batches[0].shape[1], momentum=momentum, dtype=batches[0].dtype)
    with torch.no_grad():
        for batch in batches:
            bn(batch)
    return bn.running_mean.clone(), bn.running_var.clone()


def _stats_cases(rng: np.random.Generator) -> list[Case]:
    def batches(n: int, *shape: int, loc: float = 0.0, scale: float = 1.0) -> list[torch.Tensor]:
        return [torch.from_numpy((loc + scale * rng.standard_normal(shape)).astype(np.float32)) for _ in range(n)]

    return [
        Case("one batch of (2, 3, 2, 2), momentum 0.1", (batches(1, 2, 3, 2, 2), 0.1)),
        Case("five batches with mean 5 and std 2", (batches(5, 4, 2, 3, 3, loc=5.0, scale=2.0), 0.1)),
        Case("momentum 0.5", (batches(3, 3, 4, 2, 2, loc=-1.0), 0.5)),
        Case(
            "two values per channel (n / (n - 1) = 2 doubles each batch's variance)", (batches(4, 2, 2, 1, 1, scale=3.0), 0.2)
        ),
        Case("momentum 1: the running statistics are the last batch's", (batches(3, 5, 2, 2, 3, loc=2.0), 1.0)),
        Case("forty batches, momentum 0.05", (batches(40, 4, 3, 2, 2, loc=1.0, scale=0.5), 0.05)),
    ]


def fold_batchnorm_reference(
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    bn_weight: torch.Tensor,
    bn_bias: torch.Tensor,
    running_mean: torch.Tensor,
    running_var: torch.Tensor,
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight', bias') with conv(x, weight', bias') == bn_eval(conv(x, weight, bias))."""
    scale = bn_weight / torch.sqrt(running_var + eps)  # (C_out,)
    bias = torch.zeros_like(running_mean) if bias is None else bias
    return weight * scale.view(-1, 1, 1, 1), (bias - running_mean) * scale + bn_bias


def _fold_cases(rng: np.random.Generator) -> list[Case]:
    def t(*shape: int, low: float | None = None) -> torch.Tensor:
        values = rng.uniform(low, 2.0, shape) if low is not None else rng.standard_normal(shape)
        return torch.from_numpy(values.astype(np.float32))

    def case(name: str, c_out: int, c_in: int, k: int, with_bias: bool, eps: float) -> Case:
        bias = t(c_out) if with_bias else None
        return Case(name, (t(c_out, c_in, k, k), bias, t(c_out), t(c_out), t(c_out), t(c_out, low=0.1), eps))

    return [
        case("3x3 convolution with a bias", 4, 2, 3, True, 1e-5),
        case("no convolution bias (the usual case before batch norm)", 3, 3, 3, False, 1e-5),
        case("1x1 convolution, large eps", 5, 2, 1, True, 0.5),
        case("5x5 convolution, one output channel", 1, 3, 5, False, 1e-3),
    ]


register("ch03.conv1d", conv1d_reference, _conv1d_cases)
register("ch03.effective_width", effective_width_reference, _width_cases)
register("ch03.running_stats", running_stats_reference, _stats_cases)
register("ch03.fold_batchnorm", fold_batchnorm_reference, _fold_cases)
