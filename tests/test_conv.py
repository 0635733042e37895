"""Tests of dlbook.nn.conv against PyTorch's convolution and pooling layers."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dlbook.nn.conv import conv2d_im2col, conv_output_size, receptive_field


def test_conv_output_size_matches_conv2d_and_pools():
    checked = 0
    for size, k, s, p, d in itertools.product([5, 8, 13], [1, 2, 3, 5], [1, 2, 3], [0, 1, 2], [1, 2, 3]):
        if d * (k - 1) + 1 > size + 2 * p:
            continue
        x = torch.zeros(1, 1, size, size + 1)
        y = F.conv2d(x, torch.zeros(1, 1, k, k), stride=s, padding=p, dilation=d)
        assert y.shape[-2:] == (conv_output_size(size, k, s, p, d), conv_output_size(size + 1, k, s, p, d))
        if 2 * p <= k:  # pooling padding must be at most half the kernel
            assert F.max_pool2d(x, k, s, p, d).shape[-2] == conv_output_size(size, k, s, p, d)
            if d == 1:
                assert F.avg_pool2d(x, k, s, p).shape[-2] == conv_output_size(size, k, s, p)
        checked += 1
    assert checked > 250


def test_conv_output_size_errors():
    assert conv_output_size(28, 5) == 24
    with pytest.raises(ValueError, match="does not fit"):
        conv_output_size(4, 3, dilation=2)
    for bad in [dict(size=0, kernel_size=1), dict(size=3, kernel_size=1, stride=0),
                dict(size=3, kernel_size=1, padding=-1), dict(size=3, kernel_size=2.0)]:
        with pytest.raises(ValueError):
            conv_output_size(**bad)


def _empirical_field(layers, size=64):
    """Width of the input region that influences the centre output, from the gradient."""
    mods = [nn.Conv2d(1, 1, k, stride=s, dilation=d, bias=False) for k, s, d in layers]
    for m in mods:
        nn.init.constant_(m.weight, 1.0)
    x = torch.ones(1, 1, size, size, requires_grad=True)
    y = nn.Sequential(*mods)(x)
    y[0, 0, y.shape[-2] // 2, y.shape[-1] // 2].backward()
    rows = torch.nonzero(x.grad[0, 0].abs().sum(dim=1))
    return int(rows.max() - rows.min() + 1)


@pytest.mark.parametrize(
    "layers",
    [[(3, 1, 1)], [(3, 1, 1)] * 3, [(5, 1, 1), (2, 2, 1), (5, 1, 1), (2, 2, 1)], [(3, 2, 1), (3, 1, 2), (3, 2, 3)],
     [(7, 2, 1), (3, 2, 1), (3, 1, 1), (3, 1, 1)]],
)
def test_receptive_field_matches_gradient(layers):
    assert receptive_field(layers) == _empirical_field(layers)


def test_receptive_field_formula_and_errors():
    assert receptive_field([]) == 1
    assert receptive_field([(3, 1)] * 3) == 7  # three 3x3 convolutions see as far as one 7x7
    assert receptive_field([(3, 1, 2), (3, 1, 4)]) == 1 + 4 + 8
    with pytest.raises(ValueError):
        receptive_field([(3,)])
    with pytest.raises(ValueError):
        receptive_field([(3, 0)])


@pytest.mark.parametrize(
    "c_in,c_out,k,s,p,d,g,bias",
    [(1, 1, 3, 1, 0, 1, 1, False), (3, 4, 3, 2, 1, 1, 1, True), (4, 6, 2, 1, 2, 2, 2, True),
     (6, 6, 3, 1, 1, 1, 6, True), (4, 8, 5, 3, 2, 1, 4, False), (2, 3, 1, 1, 0, 1, 1, True)],
)
def test_conv2d_im2col_matches_f_conv2d(c_in, c_out, k, s, p, d, g, bias):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, c_in, 9, 11, generator=gen)
    w = torch.randn(c_out, c_in // g, k, k, generator=gen)
    b = torch.randn(c_out, generator=gen) if bias else None
    torch.testing.assert_close(conv2d_im2col(x, w, b, s, p, d, g), F.conv2d(x, w, b, s, p, d, g))


def test_conv2d_im2col_rectangular_kernel_and_float64_and_grad():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 2, 7, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 2, 2, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    ours = conv2d_im2col(x, w, padding=1)
    ref = F.conv2d(x, w, padding=1)
    torch.testing.assert_close(ours, ref)
    g_ours = torch.autograd.grad(ours.sum(), (x, w))
    g_ref = torch.autograd.grad(ref.sum(), (x, w))
    torch.testing.assert_close(g_ours, g_ref)


def test_conv2d_im2col_errors():
    x = torch.randn(1, 4, 6, 6)
    with pytest.raises(ValueError, match="shape"):
        conv2d_im2col(x[0], torch.randn(2, 4, 3, 3))
    with pytest.raises(ValueError, match="per group"):
        conv2d_im2col(x, torch.randn(2, 4, 3, 3), groups=2)
    with pytest.raises(ValueError, match="divisible"):
        conv2d_im2col(x, torch.randn(3, 2, 3, 3), groups=2)
    with pytest.raises(ValueError, match="bias"):
        conv2d_im2col(x, torch.randn(2, 4, 3, 3), torch.randn(3))
    with pytest.raises(ValueError, match="does not fit"):
        conv2d_im2col(x, torch.randn(2, 4, 7, 7))
    with pytest.raises(TypeError):
        conv2d_im2col(x.numpy(), torch.randn(2, 4, 3, 3))
