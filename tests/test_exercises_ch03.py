"""The chapter-3 exercise checks pass on the reference and fail on plausible wrong answers."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from dlbook import exercises


def _conv1d_loops(x, weight, stride, dilation):
    """A correct solution written from the index formula, independently of the reference."""
    b, c_in, length = x.shape
    c_out, _, k = weight.shape
    n_out = (length - dilation * (k - 1) - 1) // stride + 1
    y = torch.zeros(b, c_out, n_out, dtype=x.dtype)
    for i in range(n_out):
        window = x[:, :, i * stride : i * stride + dilation * (k - 1) + 1 : dilation]  # (B, C_in, k)
        y[:, :, i] = torch.einsum("bcu,ocu->bo", window, weight)
    return y


def _check(fn):
    """Run fn through the hidden cases of ch03.conv1d, quietly."""
    return exercises.check("ch03.conv1d", fn, verbose=False)


def test_conv1d_reference_and_loops_pass():
    assert _check(exercises.reference("ch03.conv1d"))
    assert _check(_conv1d_loops)


def test_conv1d_wrong_solutions_fail():
    def flipped_kernel(x, weight, stride, dilation):  # textbook convolution, not what F.conv1d does
        return _conv1d_loops(x, weight.flip(-1), stride, dilation)

    def forgets_dilation(x, weight, stride, dilation):
        return _conv1d_loops(x, weight, stride, 1)

    def forgets_stride(x, weight, stride, dilation):
        return _conv1d_loops(x, weight, 1, dilation)

    def averages_channels(x, weight, stride, dilation):  # mean over input channels instead of the sum
        return F.conv1d(x, weight, stride=stride, dilation=dilation) / x.shape[1]

    for wrong in (flipped_kernel, forgets_dilation, forgets_stride, averages_channels):
        result = _check(wrong)
        assert not result, wrong.__name__
        assert result.failure


def test_stub_reports_not_yet():
    def stub(*args):
        raise NotImplementedError

    for key in exercises.known("ch03"):
        result = exercises.check(key, stub, verbose=False)
        assert not result and "NotImplementedError" in result.failure


def test_registered_keys():
    assert exercises.known("ch03") == [
        "ch03.conv1d",
        "ch03.effective_width",
        "ch03.fold_batchnorm",
        "ch03.running_stats",
    ]


# ---------------------------------------------------------------------------------------------
# ch03.effective_width: the gradient-probe experiment, for any kernel size


def _probe_width(n_layers, kernel_size):
    """The experiment a reader runs: gradient of the centre output of n stacked k x k box filters."""
    size = n_layers * (kernel_size - 1) + 9
    x = torch.zeros(1, 1, size, size, dtype=torch.float64, requires_grad=True)
    y = x
    box = torch.full((1, 1, kernel_size, kernel_size), 1 / kernel_size**2, dtype=torch.float64)
    for _ in range(n_layers):
        y = F.conv2d(y, box)
    y[0, 0, y.shape[2] // 2, y.shape[3] // 2].backward()
    profile = x.grad[0, 0].sum(dim=1)
    profile = profile / profile.sum()
    pos = torch.arange(size, dtype=torch.float64)
    mean = (pos * profile).sum()
    return ((pos - mean) ** 2 * profile).sum().sqrt().item()


def test_effective_width_experiment_passes_and_wrong_formulas_fail():
    assert exercises.check("ch03.effective_width", exercises.reference("ch03.effective_width"), verbose=False)
    assert exercises.check("ch03.effective_width", _probe_width, verbose=False)
    wrong = [
        lambda n, k: math.sqrt(2 * n / 3),  # the 3x3 answer for every kernel
        lambda n, k: n * (k - 1) + 1,  # the receptive field, not its effective width
        lambda n, k: math.sqrt(n) * (k - 1) / 2,  # half the box's width, not its std
        lambda n, k: math.sqrt(n * (k**2 - 1) / 12) * 2,  # two standard deviations
    ]
    for fn in wrong:
        assert not exercises.check("ch03.effective_width", fn, verbose=False)


# ---------------------------------------------------------------------------------------------
# ch03.running_stats: what nn.BatchNorm2d remembers


def _running_stats_formula(batches, momentum):
    """A correct solution from the definition (not from nn.BatchNorm2d)."""
    c = batches[0].shape[1]
    mean, var = torch.zeros(c), torch.ones(c)
    for b in batches:
        n = b.numel() // c
        m = b.mean(dim=(0, 2, 3))
        v = b.var(dim=(0, 2, 3), correction=1)  # unbiased: divides by n - 1
        mean = (1 - momentum) * mean + momentum * m
        var = (1 - momentum) * var + momentum * v
        assert n >= 2
    return mean, var


def test_running_stats_formula_passes_and_common_slips_fail():
    assert exercises.check("ch03.running_stats", exercises.reference("ch03.running_stats"), verbose=False)
    assert exercises.check("ch03.running_stats", _running_stats_formula, verbose=False)

    def biased_variance(batches, momentum):
        c = batches[0].shape[1]
        mean, var = torch.zeros(c), torch.ones(c)
        for b in batches:
            mean = (1 - momentum) * mean + momentum * b.mean(dim=(0, 2, 3))
            var = (1 - momentum) * var + momentum * b.var(dim=(0, 2, 3), correction=0)
        return mean, var

    def momentum_backwards(batches, momentum):  # the Keras/TensorFlow convention: momentum on the old value
        return _running_stats_formula(batches, 1 - momentum)

    def starts_from_zero_variance(batches, momentum):
        mean, var = _running_stats_formula(batches, momentum)
        return mean, var - (1 - momentum) ** len(batches)

    def per_example_stats(batches, momentum):  # statistics over space only, then averaged over the batch
        mean, _ = _running_stats_formula(batches, momentum)
        c = batches[0].shape[1]
        var = torch.ones(c)
        for b in batches:
            var = (1 - momentum) * var + momentum * b.var(dim=(2, 3), correction=0).mean(dim=0)
        return mean, var

    for wrong in (biased_variance, momentum_backwards, starts_from_zero_variance, per_example_stats):
        assert not exercises.check("ch03.running_stats", wrong, verbose=False), wrong.__name__


# ---------------------------------------------------------------------------------------------
# ch03.fold_batchnorm: one convolution instead of convolution + batch norm


def test_fold_batchnorm_reference_really_folds():
    fold = exercises.reference("ch03.fold_batchnorm")
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(3, 5, 3, padding=1), nn.BatchNorm2d(5, eps=1e-3)
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.2, 3)
    nn.init.uniform_(bn.weight, -2, 2)
    nn.init.uniform_(bn.bias, -1, 1)
    bn.eval()
    x = torch.randn(2, 3, 8, 8)
    for bias in (conv.bias, None):
        w, b = fold(conv.weight, bias, bn.weight, bn.bias, bn.running_mean, bn.running_var, bn.eps)
        torch.testing.assert_close(F.conv2d(x, w, b, padding=1), bn(F.conv2d(x, conv.weight, bias, padding=1)))


def test_fold_batchnorm_wrong_solutions_fail():
    fold = exercises.reference("ch03.fold_batchnorm")

    def forgets_eps(w, b, g, beta, mean, var, eps):
        return fold(w, b, g, beta, mean, var, 0.0)

    def forgets_the_mean(w, b, g, beta, mean, var, eps):
        return fold(w, b, g, beta, torch.zeros_like(mean), var, eps)

    def divides_by_variance(w, b, g, beta, mean, var, eps):  # var + eps instead of its square root
        return fold(w, b, g, beta, mean, (var + eps) ** 2 - eps, eps)

    def drops_the_conv_bias(w, b, g, beta, mean, var, eps):
        return fold(w, None, g, beta, mean, var, eps)

    for wrong in (forgets_eps, forgets_the_mean, divides_by_variance, drops_the_conv_bias):
        assert not exercises.check("ch03.fold_batchnorm", wrong, verbose=False), wrong.__name__
