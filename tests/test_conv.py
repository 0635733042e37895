"""Tests of dlbook.nn.conv against PyTorch's convolution, pooling and batch-norm layers, and of the
convolutional building blocks of dlbook.models (ResidualBlock; MLP's input checks), all taught in chapter 3."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dlbook.models import MLP, ResidualBlock
from dlbook.nn.conv import batch_norm2d, conv2d_im2col, conv_output_size, receptive_field


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
    for bad in [
        dict(size=0, kernel_size=1),
        dict(size=3, kernel_size=1, stride=0),
        dict(size=3, kernel_size=1, padding=-1),
        dict(size=3, kernel_size=2.0),
    ]:
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
    [
        [(3, 1, 1)],
        [(3, 1, 1)] * 3,
        [(5, 1, 1), (2, 2, 1), (5, 1, 1), (2, 2, 1)],
        [(3, 2, 1), (3, 1, 2), (3, 2, 3)],
        [(7, 2, 1), (3, 2, 1), (3, 1, 1), (3, 1, 1)],
    ],
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
    [
        (1, 1, 3, 1, 0, 1, 1, False),
        (3, 4, 3, 2, 1, 1, 1, True),
        (4, 6, 2, 1, 2, 2, 2, True),
        (6, 6, 3, 1, 1, 1, 6, True),
        (4, 8, 5, 3, 2, 1, 4, False),
        (2, 3, 1, 1, 0, 1, 1, True),
    ],
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


def test_conv2d_im2col_dtype_device_and_size_errors():
    x = torch.randn(1, 4, 6, 6)
    with pytest.raises(TypeError, match="weight has dtype torch.float64 but x has dtype torch.float32"):
        conv2d_im2col(x, torch.randn(2, 4, 3, 3, dtype=torch.float64))
    with pytest.raises(TypeError, match="bias has dtype"):
        conv2d_im2col(x, torch.randn(2, 4, 3, 3), torch.zeros(2, dtype=torch.float64))
    with pytest.raises(TypeError, match="floating-point"):
        conv2d_im2col(x.long(), torch.randn(2, 4, 3, 3).long())
    with pytest.raises(TypeError, match="bias must be a torch.Tensor"):
        conv2d_im2col(x, torch.randn(2, 4, 3, 3), [0.0, 0.0])
    with pytest.raises(ValueError, match="out_channels"):
        conv2d_im2col(x, torch.randn(0, 4, 3, 3))
    with pytest.raises(ValueError, match="kH"):
        conv2d_im2col(x, torch.randn(2, 4, 0, 3))
    with pytest.raises(ValueError, match="at least one channel"):
        conv2d_im2col(torch.randn(1, 4, 0, 6), torch.randn(2, 4, 3, 3))
    for bad in [dict(stride=0), dict(padding=-1), dict(dilation=0), dict(groups=0), dict(stride=1.5)]:
        with pytest.raises(ValueError, match=next(iter(bad))):
            conv2d_im2col(x, torch.randn(2, 4, 3, 3), **bad)
    # An empty batch is fine, as in F.conv2d.
    assert conv2d_im2col(x[:0], torch.randn(2, 4, 3, 3)).shape == (0, 2, 4, 4)


def test_receptive_field_type_errors():
    with pytest.raises(TypeError, match="layers"):
        receptive_field(3)
    with pytest.raises(TypeError, match="layer 1"):
        receptive_field([(3, 1), 5])
    with pytest.raises(ValueError, match="stride of layer 0"):
        receptive_field([(3, -1)])


# ---------------------------------------------------------------------------------------------
# batch normalisation from its definition


def _bn_inputs(seed=0, shape=(4, 3, 5, 6), dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    x = (2 * torch.randn(shape, generator=gen, dtype=dtype) + 1).requires_grad_()
    weight = torch.randn(shape[1], generator=gen, dtype=dtype).requires_grad_()
    bias = torch.randn(shape[1], generator=gen, dtype=dtype).requires_grad_()
    return x, weight, bias


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm2d_matches_f_batch_norm_forward_backward_and_running_stats(training):
    x, weight, bias = _bn_inputs()
    stats_ours = [torch.randn(3, dtype=torch.float64), torch.rand(3, dtype=torch.float64) + 0.5]
    stats_ref = [t.clone() for t in stats_ours]
    for step in range(3):  # several steps: the running statistics accumulate
        xs = x * (step + 1)
        ours = batch_norm2d(xs, *stats_ours, weight, bias, training=training, momentum=0.2, eps=1e-3)
        ref = F.batch_norm(xs, *stats_ref, weight, bias, training=training, momentum=0.2, eps=1e-3)
        torch.testing.assert_close(ours, ref)
        torch.testing.assert_close(stats_ours, stats_ref)
        dy = torch.randn_like(ours)
        torch.testing.assert_close(
            torch.autograd.grad(ours, (x, weight, bias), dy, retain_graph=True), torch.autograd.grad(ref, (x, weight, bias), dy)
        )


def test_batch_norm2d_matches_nn_batchnorm2d_module_and_unbiased_running_var():
    bn = nn.BatchNorm2d(3, momentum=0.1)
    mean, var = torch.zeros(3), torch.ones(3)
    gen = torch.Generator().manual_seed(3)
    for _ in range(5):
        x = torch.randn(2, 3, 2, 2, generator=gen) * 3
        torch.testing.assert_close(batch_norm2d(x, mean, var, bn.weight, bn.bias, training=True), bn(x))
        n = x.numel() // 3
        assert n == 8  # small n: the unbiased factor n / (n - 1) is visible
    torch.testing.assert_close((mean, var), (bn.running_mean, bn.running_var))
    bn.eval()
    x = torch.randn(1, 3, 1, 1, generator=gen)  # one value per channel: fine in evaluation mode
    torch.testing.assert_close(batch_norm2d(x, mean, var, bn.weight, bn.bias, training=False), bn(x))


def test_batch_norm2d_without_affine_or_running_stats():
    x, _, _ = _bn_inputs(seed=1, dtype=torch.float32)
    y = batch_norm2d(x, None, None, training=True)
    torch.testing.assert_close(y, F.batch_norm(x, None, None, training=True))
    torch.testing.assert_close(y.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(dim=(0, 2, 3), correction=0), torch.ones(3), atol=1e-3, rtol=0)


def test_batch_norm2d_takes_f_batch_norm_argument_order():
    """A positional call means the same as in F.batch_norm; the mode must be named."""
    x, weight, bias = _bn_inputs(seed=2)
    stats = [torch.randn(3, dtype=torch.float64), torch.rand(3, dtype=torch.float64) + 0.5]
    for training in (True, False):
        stats_ours, stats_ref = [t.clone() for t in stats], [t.clone() for t in stats]
        torch.testing.assert_close(
            batch_norm2d(x, *stats_ours, weight, bias, training=training),
            F.batch_norm(x, *stats_ref, weight, bias, training=training),
        )
        torch.testing.assert_close(stats_ours, stats_ref)  # the same running statistics
    args_ours = (x, *stats, weight, bias)
    with pytest.raises(TypeError):  # F.batch_norm's silent default (evaluation mode) is not offered
        batch_norm2d(*args_ours)
    with pytest.raises(TypeError):  # nor a positional mode
        batch_norm2d(*args_ours, True)


def test_batch_norm2d_documented_differences_from_f_batch_norm_are_loud():
    x = torch.randn(4, 3, 5, 5)
    mean, var = torch.zeros(3), torch.ones(3)
    F.batch_norm(x.half(), mean.clone(), var.clone(), training=True)  # PyTorch mixes the dtypes
    with pytest.raises(TypeError, match="running_mean has dtype torch.float32 but x has dtype torch.float16"):
        batch_norm2d(x.half(), mean, var, training=True)
    with pytest.raises(ValueError, match="momentum"):  # nn.BatchNorm2d's cumulative average
        batch_norm2d(x, mean, var, training=True, momentum=None)
    with pytest.raises(TypeError):  # F.batch_norm rejects it as well
        F.batch_norm(x, mean, var, training=True, momentum=None)


def test_batch_norm2d_errors():
    x, weight, bias = _bn_inputs(dtype=torch.float32)
    mean, var = torch.zeros(3), torch.ones(3)
    with pytest.raises(ValueError, match=r"x must have shape \(batch, channels, H, W\)"):
        batch_norm2d(x[0], None, None, training=True)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        batch_norm2d(x.detach().numpy(), None, None, training=True)
    with pytest.raises(TypeError, match="floating-point"):
        batch_norm2d(x.long(), None, None, training=True)
    with pytest.raises(TypeError, match="weight has dtype torch.float64"):
        batch_norm2d(x, None, None, weight.double(), training=True)
    with pytest.raises(TypeError, match="running_var has dtype"):
        batch_norm2d(x, mean, var.half(), training=True)
    with pytest.raises(ValueError, match=r"bias must have shape \(3,\)"):
        batch_norm2d(x, None, None, weight, torch.zeros(4), training=True)
    with pytest.raises(ValueError, match="both"):
        batch_norm2d(x, mean, None, training=True)
    with pytest.raises(ValueError, match="evaluation-mode"):
        batch_norm2d(x, None, None, training=False)
    with pytest.raises(ValueError, match="more than one value per channel"):
        batch_norm2d(torch.randn(1, 3, 1, 1), None, None, training=True)
    with pytest.raises(TypeError, match="training"):
        batch_norm2d(x, None, None, training=1)
    with pytest.raises(ValueError, match="momentum"):
        batch_norm2d(x, None, None, training=True, momentum=1.5)
    with pytest.raises(ValueError, match="eps"):
        batch_norm2d(x, None, None, training=True, eps=0.0)
    with pytest.raises(ValueError, match="channels"):
        batch_norm2d(torch.randn(2, 0, 3, 3), None, None, training=True)


# ---------------------------------------------------------------------------------------------
# the residual block of dlbook.models (taught in chapter 3 with the layers above)


def test_residual_block_shapes_and_shortcuts():
    x = torch.randn(2, 8, 9, 9)
    same = ResidualBlock(8, 8)
    assert isinstance(same.shortcut, nn.Identity) and same(x).shape == (2, 8, 9, 9)
    down = ResidualBlock(8, 16, stride=2)
    assert isinstance(down.shortcut, nn.Sequential) and down.shortcut[0].kernel_size == (1, 1)
    assert down(x).shape == (2, 16, 5, 5)  # ceil(9 / 2)
    assert ResidualBlock(8, 16, shortcut=False).shortcut is None
    assert ResidualBlock(8, 8, batch_norm=False).conv1.bias is not None
    assert ResidualBlock(8, 8).conv1.bias is None  # batch norm's shift makes a bias redundant
    assert not any(isinstance(m, nn.BatchNorm2d) for m in ResidualBlock(8, 16, 2, batch_norm=False).modules())


@pytest.mark.parametrize("stride,c_out", [(1, 4), (2, 6)])
def test_residual_block_computes_its_formula(stride, c_out):
    torch.manual_seed(0)
    block = ResidualBlock(4, c_out, stride).eval()
    for bn in (block.bn1, block.bn2):  # non-trivial statistics and affine parameters
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        nn.init.uniform_(bn.weight, 0.5, 1.5)
        nn.init.uniform_(bn.bias, -0.5, 0.5)
    x = torch.randn(3, 4, 7, 7)
    y = F.relu(block.bn1(F.conv2d(x, block.conv1.weight, stride=stride, padding=1)))
    y = block.bn2(F.conv2d(y, block.conv2.weight, padding=1))
    skip = x if stride == 1 and c_out == 4 else block.shortcut[1](F.conv2d(x, block.shortcut[0].weight, stride=stride))
    torch.testing.assert_close(block(x), F.relu(y + skip))
    plain = ResidualBlock(4, c_out, stride, shortcut=False).eval()
    plain.load_state_dict({k: v for k, v in block.state_dict().items() if not k.startswith("shortcut")})
    torch.testing.assert_close(plain(x), F.relu(y))


def test_residual_stack_passes_gradient_to_first_block():
    """At initialisation, without batch norm, over 12 blocks: with PyTorch's default initialisation
    (weight variance 1 / (3 fan_in), a sixth of He's 2 / fan_in, plus biases) the gradient at the
    first block of a plain stack all but vanishes and the shortcut keeps it; with He
    initialisation and zero biases the plain stack keeps it too, so the vanishing is the default
    initialisation's doing, not depth's alone."""
    x = torch.randn(8, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    ratios = {}
    for init, shortcut in itertools.product(("default", "he"), (False, True)):
        torch.manual_seed(0)
        stack = nn.Sequential(*[ResidualBlock(4, 4, shortcut=shortcut, batch_norm=False) for _ in range(12)])
        if init == "he":
            for conv in (m for m in stack.modules() if isinstance(m, nn.Conv2d)):
                nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
                nn.init.zeros_(conv.bias)
        stack(x).square().mean().backward()
        ratios[init, shortcut] = (stack[0].conv1.weight.grad.norm() / stack[-1].conv1.weight.grad.norm()).item()
    assert ratios["default", False] < 1e-4 < 1e-2 < ratios["default", True]
    assert 1e-2 < ratios["he", False] < 1e2 and 1e-2 < ratios["he", True] < 1e2


def test_default_conv_init_has_a_sixth_of_he_variance():
    """The premise of chapter 3's initialisation arm: kaiming_uniform_(a=sqrt(5)) draws from
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)), variance 1 / (3 fan_in)."""
    torch.manual_seed(0)
    conv = nn.Conv2d(64, 64, 3)
    fan_in = 64 * 9
    assert conv.weight.abs().max() <= fan_in**-0.5
    assert abs(conv.weight.var().item() * fan_in - 1 / 3) < 0.01


def test_residual_block_errors():
    block = ResidualBlock(4, 4)
    with pytest.raises(ValueError, match=r"\(batch, 4, H, W\)"):
        block(torch.randn(2, 3, 5, 5))
    with pytest.raises(ValueError, match=r"\(batch, 4, H, W\)"):
        block(torch.randn(4, 5, 5))
    with pytest.raises(TypeError, match="dtype torch.float64"):
        block(torch.randn(2, 4, 5, 5, dtype=torch.float64))
    with pytest.raises(TypeError, match="tensor"):
        block([[1.0]])
    for bad in [
        dict(in_channels=0, out_channels=4),
        dict(in_channels=4, out_channels=-1),
        dict(in_channels=4, out_channels=4, stride=0),
        dict(in_channels=4.0, out_channels=4),
    ]:
        with pytest.raises(ValueError, match=next(k for k, v in bad.items() if not (isinstance(v, int) and v > 0))):
            ResidualBlock(**bad)
    with pytest.raises(TypeError, match="shortcut"):
        ResidualBlock(4, 4, shortcut="yes")
    with pytest.raises(TypeError, match="batch_norm"):
        ResidualBlock(4, 4, batch_norm=None)


def test_mlp_input_errors_and_unchanged_behaviour():
    torch.manual_seed(0)
    mlp = MLP(6, (h for h in [5]), 3)  # any iterable of widths, as before
    assert mlp(torch.ones(2, 6)).shape == (2, 3)
    with pytest.raises(TypeError, match=r"dtype torch.float64 but its weights are torch.float32"):
        mlp(torch.ones(2, 6, dtype=torch.float64))
    with pytest.raises(TypeError, match="tensor"):
        mlp([[1.0] * 6])
    with pytest.raises(ValueError, match="6 values per example"):
        mlp(torch.ones(2, 5))
    assert mlp(torch.ones(0, 6)).shape == (0, 3)  # an empty batch is a batch, as for nn.Linear
    assert mlp(torch.ones(0, 2, 3)).shape == (0, 3)  # (batch, ...) with 6 values per example
    with pytest.raises(ValueError, match="6 values per example"):
        mlp(torch.ones(0, 5))
    with pytest.raises(ValueError, match="6 values per example"):
        mlp(torch.ones(6))  # one example without its batch dimension
    with pytest.raises(ValueError, match="in_features"):
        MLP(True, [4], 2)
    with pytest.raises(ValueError, match="n_classes"):
        MLP(4, [4], 0)
    with pytest.raises(TypeError, match="hidden"):
        MLP(4, 8, 2)
