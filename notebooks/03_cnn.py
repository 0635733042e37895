# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# (ch03)=
# # 3. Convolutional networks
#
# The multi-layer perceptron of chapter 2 treats an image as a list of 784 numbers with no
# notion of which pixels are neighbours: shuffle the pixels of every image by one fixed
# permutation, and it learns exactly as well (we check this below). A convolutional network
# builds in what we expect of images instead: nearby pixels belong together, and a stroke is
# detected by the same weights wherever it appears. This chapter builds the convolution layer
# from its index formula, makes it fast, checks every step against PyTorch, trains a small
# LeNet-style network on real handwritten digits, and then adds data augmentation, batch
# normalisation and residual connections.
#
# By the end of this chapter you can
#
# 1. compute a convolution layer's output from its index formula and as one matrix product
#    (im2col), and match `F.conv2d` with stride, padding, dilation, several channels and groups;
# 2. predict the output shape and the parameter count of convolution and pooling layers, and
#    how far one output of a stack of layers can see (its receptive field);
# 3. train a LeNet-style CNN on MNIST-5k, compare it with an MLP of the same size, and measure
#    what random shifts and rotations of the training digits change;
# 4. write batch normalisation from its definition, match `nn.BatchNorm2d` forward and
#    backward in training and evaluation mode, and say why the two modes differ;
# 5. build a residual block and measure how its shortcut carries the gradient to the first
#    layers of a deep stack.

# %% tags=["remove-cell"]
# In Colab, install the book's helpers and offline assets first (nothing happens
# elsewhere).
import sys

if "google.colab" in sys.modules:
    import subprocess

    repo = "git+https://github.com/dlbook-verified/deep-learning-verified"
    pip = [sys.executable, "-m", "pip", "install", "-q"]
    subprocess.run([*pip, f"dlbook[assets] @ {repo}"], check=True)
    subprocess.run([sys.executable, "-m", "dlbook.colab"], check=True)

# %%
import copy
import math
import os

import matplotlib.pyplot as plt
import pandas as pd
import scipy.signal
import torch
import torch.nn.functional as F
from torch import nn

import dlbook
import dlbook.stats
from dlbook import assets
from dlbook.measure import fixed_threads, interleaved_calls
from dlbook.models import MLP, ResidualBlock
from dlbook.nn.conv import (
    batch_norm2d,
    conv2d_im2col,
    conv_output_size,
    receptive_field,
)
from dlbook.train import count_parameters, evaluate, fit, predict, tensor_loader

device = dlbook.setup(seed=0)

# %% tags=["parameters", "hide-input"]
profile = os.environ.get("DLBOOK_PROFILE", "full")

# %% tags=["hide-input"]
sizes = dlbook.by_profile(
    profile,
    smoke=dict(
        n_train=600,
        n_val=200,
        epochs=1,
        batch_size=64,
        seeds=2,
        res_depth=16,
        res_seeds=1,
        n_boot=1_000,
    ),
    full=dict(
        n_train=3_600,  # training digits, from the start of the training split
        n_val=400,  # validation digits, from its end
        epochs=15,  # epochs of every CNN and MLP training run
        batch_size=64,  # digits per training batch
        seeds=5,  # training runs per model (3.7, 3.9), for the spread
        res_depth=16,  # residual blocks in the deep stacks of section 3.11
        res_seeds=3,  # random initialisations per deep stack
        n_boot=10_000,  # bootstrap resamples per interval
    ),
)
sizes

# %% [markdown]
# ## 3.1 One small detector, slid everywhere
#
# A fully connected layer gives every hidden unit its own weight for every pixel. A convolution
# layer instead learns a few small **kernels** (say 5 x 5 pixels) and applies each of them at
# every position of the image. At each position it computes one number, a weighted sum of the
# pixels under the kernel: how strongly the kernel's pattern is present there. The grid of those
# numbers is a **feature map**, one per kernel. Two ideas make this work:
#
# - **local connectivity**: an output looks at a small neighbourhood, not the whole image;
# - **weight sharing**: the same kernel is used at every position, so a detector for a
#   diagonal stroke is learned once, not once per place.
#
# Weight sharing has a consequence we can check right away: shifting the input shifts the
# feature map by the same amount (away from the borders). The layer is *equivariant* to
# translation.

# %%
torch.manual_seed(0)
image = torch.randn(1, 1, 20, 20)  # (batch, channels, H, W)
kernel = torch.randn(1, 1, 5, 5)  # (out_channels, in_channels, kH, kW)
shift = 3
moved = torch.roll(
    image, shifts=(shift, shift), dims=(2, 3)
)  # the same image, 3 pixels down and right

out = F.conv2d(image, kernel)  # (1, 1, 16, 16)
out_moved = F.conv2d(moved, kernel)  # (1, 1, 16, 16)
# Away from the wrapped-around border, the feature map moved by exactly the same 3
# pixels.
torch.testing.assert_close(out_moved[..., shift:, shift:], out[..., :-shift, :-shift])
print(
    "shift the input by 3 pixels -> the feature map shifts by 3 pixels:",
    tuple(out.shape),
)

# %% [markdown]
# ## 3.2 Cross-correlation from its index formula
#
# Start with one channel, no padding, stride 1. An input $X$ of size $H \times W$ and a kernel
# $K$ of size $k \times k$ give an output of size $(H-k+1) \times (W-k+1)$ with
#
# $$
# Y_{i,j} = \sum_{u=0}^{k-1} \sum_{v=0}^{k-1} K_{u,v}\, X_{i+u,\, j+v}.
# $$ (eq-ch03-xcorr1)
#
# Mathematicians call this **cross-correlation**. The convolution of signal processing,
# $(X * K)_{i,j} = \sum_{u,v} K_{u,v} X_{i-u,\,j-v}$, runs over the kernel backwards: on the
# positions where the kernel fits, it is Eq. {eq}`eq-ch03-xcorr1` applied with the flipped kernel
# $K_{k-1-u,\,k-1-v}$. Deep-learning libraries compute Eq. {eq}`eq-ch03-xcorr1` and call it
# convolution anyway; since the kernel is learned, a flipped kernel is just another kernel. We
# write the formula as loops and check both claims: the loops equal `F.conv2d`, and the loops with
# a flipped kernel equal SciPy's true convolution.


# %%
def xcorr2d(x, k):
    """Eq. (eq-ch03-xcorr1) as written.

    x (H, W), k (kh, kw) -> (H - kh + 1, W - kw + 1).
    """
    h_out, w_out = x.shape[0] - k.shape[0] + 1, x.shape[1] - k.shape[1] + 1
    y = torch.zeros(h_out, w_out, dtype=x.dtype)
    for i in range(h_out):
        for j in range(w_out):
            for u in range(k.shape[0]):
                for v in range(k.shape[1]):
                    y[i, j] += k[u, v] * x[i + u, j + v]
    return y


x1 = torch.randn(7, 9, dtype=torch.float64)  # (H, W)
k1 = torch.randn(3, 4, dtype=torch.float64)  # a non-square, non-symmetric kernel
ours = xcorr2d(x1, k1)  # (5, 6)
torch.testing.assert_close(ours, F.conv2d(x1[None, None], k1[None, None])[0, 0])
# True convolution = cross-correlation with the kernel flipped in both directions.
true_conv = torch.from_numpy(
    scipy.signal.convolve2d(x1.numpy(), k1.numpy(), mode="valid")
)
torch.testing.assert_close(xcorr2d(x1, k1.flip(0, 1)), true_conv)
print(
    "loops == F.conv2d; convolve2d == loops with a flipped kernel; output",
    tuple(ours.shape),
)

# %% [markdown]
# ### The full layer: batch, channels, stride, padding, dilation, groups
#
# A real layer takes a batch of $B$ images with $C_{\text{in}}$ channels (1 for grey, 3 for
# colour, or the feature maps of the layer below) and produces $C_{\text{out}}$ feature maps.
# Four knobs change where the kernel looks:
#
# - **padding** $p$: surround the input with $p$ rows and columns of zeros ($\tilde X$ below), so
#   the kernel can also be centred on border pixels (and, with the right $p$, the output keeps
#   the input's size);
# - **stride** $s$: move the kernel $s$ pixels at a time, which shrinks the output;
# - **dilation** $d$: spread the kernel taps $d$ pixels apart, to see further with the same
#   number of weights;
# - **groups** $G$: split the input and output channels into $G$ groups; output channels of
#   group $g$ only read input channels of group $g$. $G = C_{\text{in}}$ is a *depthwise*
#   convolution.
#
# With $C_g = C_{\text{in}}/G$ input channels per group and $g(o) = \lfloor o\,G / C_{\text{out}}
# \rfloor$ the group of output channel $o$, the layer computes
#
# $$
# Y_{b,o,i,j} = \beta_o + \sum_{c=0}^{C_g-1} \sum_{u=0}^{k_h-1} \sum_{v=0}^{k_w-1}
#   W_{o,c,u,v}\; \tilde X_{b,\; g(o) C_g + c,\; i s + u d,\; j s + v d}.
# $$ (eq-ch03-conv)
#
# The weight tensor has shape $(C_{\text{out}}, C_g, k_h, k_w)$, the layout of
# `nn.Conv2d.weight` (checked with the parameter counts below). Here is
# Eq. {eq}`eq-ch03-conv` with one loop per index.


# %%
def conv2d_loops(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """Eq. (eq-ch03-conv), one loop per index.

    x (B, C_in, H, W), weight (C_out, C_in/G, kh, kw).
    """
    B, C_in, H, W = x.shape
    C_out, C_g, kh, kw = weight.shape  # C_g = C_in / groups
    H_out = (H + 2 * padding - dilation * (kh - 1) - 1) // stride + 1
    W_out = (W + 2 * padding - dilation * (kw - 1) - 1) // stride + 1
    x_pad = F.pad(
        x, (padding, padding, padding, padding)
    )  # (B, C_in, H + 2p, W + 2p), zeros around
    y = torch.zeros(B, C_out, H_out, W_out, dtype=x.dtype)
    for b in range(B):
        for o in range(C_out):
            g = o * groups // C_out  # the group of output channel o
            for i in range(H_out):
                for j in range(W_out):
                    total = bias[o] if bias is not None else 0.0
                    for c in range(C_g):
                        for u in range(kh):
                            for v in range(kw):
                                total = (
                                    total
                                    + weight[o, c, u, v]
                                    * x_pad[
                                        b,
                                        g * C_g + c,
                                        i * stride + u * dilation,
                                        j * stride + v * dilation,
                                    ]
                                )
                    y[b, o, i, j] = total
    return y


# %% [markdown]
# We check it against `F.conv2d` on a set of layers that switches on each knob, alone and
# together, on a non-square input.

# %%
layer_configs = [
    dict(c_in=1, c_out=1, k=3),  # the plain case
    dict(c_in=3, c_out=4, k=3, stride=2),  # several channels, stride
    dict(c_in=3, c_out=2, k=3, padding=1),  # "same" padding
    dict(c_in=2, c_out=3, k=2, padding=1, dilation=2),  # even kernel, dilation
    dict(c_in=4, c_out=6, k=3, stride=2, padding=1, groups=2),  # two groups
    dict(c_in=4, c_out=4, k=3, padding=2, dilation=2, groups=4),  # depthwise, dilated
]


def make_layer_inputs(
    c_in, c_out, k, stride=1, padding=0, dilation=1, groups=1, seed=0
):
    """Random x (2, c_in, 7, 8), weight, bias, and the keyword arguments of F.conv2d."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, c_in, 7, 8, generator=gen)  # (B, C_in, H, W)
    w = torch.randn(
        c_out, c_in // groups, k, k, generator=gen
    )  # (C_out, C_in / G, k, k)
    b = torch.randn(c_out, generator=gen)  # (C_out,)
    return (
        x,
        w,
        b,
        dict(stride=stride, padding=padding, dilation=dilation, groups=groups),
    )


for cfg in layer_configs:
    x, w, b, kw = make_layer_inputs(**cfg)
    ours, ref = conv2d_loops(x, w, b, **kw), F.conv2d(x, w, b, **kw)
    torch.testing.assert_close(ours, ref)
    print(
        f"{str(cfg):72s} -> {tuple(ref.shape)}  "
        f"max |diff| = {(ours - ref).abs().max():.1e}"
    )

# %% [markdown]
# ## 3.3 How big is the output?
#
# Along one axis the padded input has $H + 2p$ pixels, and a dilated kernel covers
# $d(k-1)+1$ of them. The kernel's first tap can sit at positions $0, s, 2s, \ldots$ as long as
# the whole kernel still fits, which gives
#
# $$
# H_{\text{out}} = \left\lfloor \frac{H + 2p - d(k-1) - 1}{s} \right\rfloor + 1 .
# $$ (eq-ch03-outsize)
#
# The same rule holds for pooling windows (section 3.5). Two consequences worth remembering:
# an odd $k \times k$ kernel with stride 1 keeps the size when $p = d(k-1)/2$, and with that
# padding a stride of 2 gives $\lceil H/2 \rceil$. We check Eq. {eq}`eq-ch03-outsize` against
# the shape `F.conv2d` actually returns, for every combination in a grid of sizes, kernels,
# strides, paddings and dilations, and both consequences along the way.


# %%
def out_size(H, k, s=1, p=0, d=1):
    """Eq. (eq-ch03-outsize)."""
    return (H + 2 * p - d * (k - 1) - 1) // s + 1


n_checked = 0
for H in (5, 8, 13, 28):
    for k in (1, 2, 3, 5):
        for s in (1, 2, 3):
            for p in (0, 1, 2):
                for d in (1, 2, 3):
                    if (
                        d * (k - 1) + 1 > H + 2 * p
                    ):  # the kernel does not fit: PyTorch raises an error
                        continue
                    shape = F.conv2d(
                        torch.zeros(1, 1, H, H + 3),
                        torch.zeros(1, 1, k, k),
                        stride=s,
                        padding=p,
                        dilation=d,
                    ).shape
                    assert shape[-2:] == (
                        out_size(H, k, s, p, d),
                        out_size(H + 3, k, s, p, d),
                    ), (H, k, s, p, d)
                    assert conv_output_size(H, k, s, p, d) == out_size(
                        H, k, s, p, d
                    )  # the packaged version
                    n_checked += 1
        for d in (1, 2, 3):  # "same" padding for odd k, and a stride of 2 with it
            if k % 2 and d * (k - 1) < H:
                assert out_size(H, k, 1, d * (k - 1) // 2, d) == H
                assert out_size(H, k, 2, d * (k - 1) // 2, d) == math.ceil(H / 2)
dlbook.glue("n_shape_checks", n_checked)
print(f"Eq. (eq-ch03-outsize) matches F.conv2d in all {n_checked} configurations")

# %% [markdown]
# The book packages the rule, with clear errors when a kernel does not fit, as
# `dlbook.nn.conv.conv_output_size`; the cell above already checked it against the formula in all
# {glue:text}`n_shape_checks` configurations.

# %%
dlbook.show(conv_output_size)

# %% [markdown]
# **Parameters.** Each output channel has one kernel of $C_g \times k_h \times k_w$ weights and
# one bias, so a layer has
#
# $$
# C_{\text{out}} \cdot \frac{C_{\text{in}}}{G} \cdot k_h k_w + C_{\text{out}}
# $$ (eq-ch03-params)
#
# parameters, independent of the image size. Groups divide the weight count by $G$.

# %%
for c_in, c_out, k, groups in [
    (1, 6, 5, 1),
    (6, 16, 5, 1),
    (64, 128, 3, 1),
    (64, 128, 3, 4),
    (64, 64, 3, 64),
]:
    layer = nn.Conv2d(c_in, c_out, k, groups=groups)
    assert layer.weight.shape == (c_out, c_in // groups, k, k)  # Eq. (eq-ch03-conv)
    formula = c_out * (c_in // groups) * k * k + c_out
    assert count_parameters(layer) == formula
    print(
        f"Conv2d({c_in:2d}, {c_out:3d}, {k}, groups={groups:2d}): "
        f"{formula:7,d} parameters (formula = count)"
    )

# %% [markdown]
# ## 3.4 Fast convolution: im2col
#
# The loops are correct, and slow: each term of the sum is one step of the Python
# interpreter. The standard trick, **im2col** ("image to columns",
# {cite}`chellapilla2006high`), copies every patch the kernel visits into one column of a
# matrix. For $C_{\text{in}}$ channels and a $k_h \times k_w$ kernel a patch has
# $C_{\text{in}} k_h k_w$ numbers, and there are $L = H_{\text{out}} W_{\text{out}}$ patches,
# so the matrix is $(C_{\text{in}} k_h k_w) \times L$. Then Eq. {eq}`eq-ch03-conv` becomes
# one matrix product: the weights reshaped to $C_{\text{out}} \times C_{\text{in}} k_h k_w$,
# times the columns. `F.unfold` does the copying; first we check that its columns really are
# the patches.

# %%
x, w, b, kw = make_layer_inputs(c_in=3, c_out=4, k=3, stride=2, padding=1)
H_out, W_out = conv_output_size(7, 3, 2, 1), conv_output_size(8, 3, 2, 1)
cols = F.unfold(
    x, kernel_size=3, padding=1, stride=2
)  # (B, C_in * k * k, L) = (2, 27, 16)
print("x", tuple(x.shape), "-> columns", tuple(cols.shape), f"(L = {H_out} x {W_out})")

x_pad = F.pad(x, (1, 1, 1, 1))  # (2, 3, 9, 10)
for i, j in [(0, 0), (1, 2), (H_out - 1, W_out - 1)]:
    patch = x_pad[
        :, :, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3
    ]  # (B, C_in, 3, 3): the window of output (i, j)
    torch.testing.assert_close(cols[:, :, i * W_out + j], patch.reshape(2, -1))
print(
    "column i * W_out + j of the unfolded input is the patch under "
    "output position (i, j)"
)

# %%
y = w.reshape(4, -1) @ cols  # (C_out, C_in*k*k) @ (B, C_in*k*k, L) -> (B, C_out, L)
y = y.reshape(2, 4, H_out, W_out) + b.view(1, 4, 1, 1)  # (B, C_out, H_out, W_out)
torch.testing.assert_close(y, F.conv2d(x, w, b, **kw))
print("one matrix product == F.conv2d:", tuple(y.shape))

# %% [markdown]
# With groups, the rows of the column matrix split into $G$ blocks of $C_g k_h k_w$ rows, the
# weights into $G$ blocks of $C_{\text{out}}/G$ rows, and each block of weights multiplies only
# its own block of rows: a batch of $G$ smaller matrix products. The book's packaged version does
# exactly this; we check it against `F.conv2d` and against the loops on every layer above.

# %%
dlbook.show(conv2d_im2col)

# %%
for cfg in layer_configs:
    x, w, b, kw = make_layer_inputs(**cfg, seed=1)
    fast = conv2d_im2col(x, w, b, **kw)
    torch.testing.assert_close(fast, F.conv2d(x, w, b, **kw))
    torch.testing.assert_close(fast, conv2d_loops(x, w, b, **kw))
print(f"conv2d_im2col == F.conv2d == conv2d_loops on all {len(layer_configs)} layers")

# %% [markdown]
# How much faster is one matrix product than the loops? We time the three versions on the
# strided layer above, on one CPU thread, warmed up and in turns (so that any change in the
# machine's load hits all three alike), and report medians.

# %%
x, w, b, kw = make_layer_inputs(c_in=3, c_out=4, k=3, stride=2)
calls = {
    "loops": lambda: conv2d_loops(x, w, b, **kw),
    "im2col": lambda: conv2d_im2col(x, w, b, **kw),
    "F.conv2d": lambda: F.conv2d(x, w, b, **kw),
}
with fixed_threads(1):  # tiny operations: one CPU thread, no threads to wait for
    timed = interleaved_calls(calls, rounds=5, warmup=1)
loop_ratio = timed["loops"].median / timed["im2col"].median
assert loop_ratio > 1, "the loops should be the slow version"
dlbook.glue("loops_ms", timed["loops"].median)
dlbook.glue("im2col_ms", timed["im2col"].median)
dlbook.glue("loop_ratio", loop_ratio)
for name, lat in timed.items():
    print(f"{name:8s} median {lat.median:8.3f} ms over {len(lat.runs_ms)} runs")

# %% [markdown]
# On one thread of the CPU named in the line printed by `dlbook.setup()` at the top, the loops
# took {glue:text}`loops_ms:.1f` ms and im2col {glue:text}`im2col_ms:.3f` ms on this small
# layer: {glue:text}`loop_ratio:,.0f` times as long.
#
# The price of im2col is memory: every input pixel is copied once for each kernel position that
# covers it. For the first layer of the network we train below (5 x 5 kernels, stride 1, padding
# 2 on a 28 x 28 digit) the column matrix is {glue:text}`im2col_blowup:.0f` times larger than
# the image. GPU libraries such as cuDNN therefore avoid building it in full: they form tiles
# of it in fast on-chip memory as the matrix product needs them {cite}`chetlur2014cudnn`.
# Other algorithms compute the *same result with different arithmetic*: a convolution becomes
# an element-wise product after a fast Fourier transform {cite}`mathieu2014fast`, and
# Winograd's minimal filtering algorithms need fewer multiplications for small kernels such as
# 3 x 3 {cite}`lavin2016fast`. In exact arithmetic they all give the same numbers; in floating
# point, any change in the order of the additions changes the rounding. Below, the Fourier
# route matches `F.conv2d` in double precision; in single precision we measure how far each
# route (`F.conv2d`, our loops, the Fourier route) lands from the double-precision result.

# %%
digit_shape = (1, 1, 28, 28)
blowup = (
    F.unfold(torch.zeros(digit_shape), kernel_size=5, padding=2).numel()
    / torch.zeros(digit_shape).numel()
)
dlbook.glue("im2col_blowup", blowup)
print(
    "im2col of a 28 x 28 image with a 5 x 5 kernel: "
    f"{blowup:.0f} times the input's size"
)


# %%
def xcorr2d_fft(x, k):
    """Eq. (eq-ch03-xcorr1) through the Fourier transform: x (H, W), k (kh, kw)."""
    H, W = x.shape
    X = torch.fft.rfft2(x)  # (H, W // 2 + 1), complex
    K = torch.fft.rfft2(k, s=(H, W))  # the kernel, zero-padded to the image's size
    circular = torch.fft.irfft2(X * K.conj(), s=(H, W))  # wraps around the borders
    return circular[: H - k.shape[0] + 1, : W - k.shape[1] + 1]  # where k fits: no wrap


gen = torch.Generator().manual_seed(0)
x28, k5 = torch.randn(28, 28, generator=gen), torch.randn(5, 5, generator=gen)  # fp32
exact = F.conv2d(x28.double()[None, None], k5.double()[None, None])[0, 0]  # (24, 24)
torch.testing.assert_close(xcorr2d_fft(x28.double(), k5.double()), exact)  # in float64
routes = {
    "F.conv2d": F.conv2d(x28[None, None], k5[None, None])[0, 0],  # all float32
    "loops": xcorr2d(x28, k5),
    "FFT": xcorr2d_fft(x28, k5),
}
rounding = {name: (y.double() - exact).abs().max().item() for name, y in routes.items()}
for name, y in routes.items():
    torch.testing.assert_close(y, routes["F.conv2d"])  # equal up to float32 rounding
    assert 0 < rounding[name] < 1e-4, (name, rounding[name])  # each rounds, a little
    dlbook.glue(f"round_{name.split('.')[-1].lower()}", rounding[name])
    print(f"float32 {name:8s}: max |difference from float64| = {rounding[name]:.1e}")

# %% [markdown]
# In single precision, `F.conv2d` lands up to {glue:text}`round_conv2d:.1e` from the
# double-precision result, our loops up to {glue:text}`round_loops:.1e` and the Fourier route
# up to {glue:text}`round_fft:.1e`. None of the three is exact, and each rounds differently:
# the loops and `F.conv2d` add the same products in different orders, and the Fourier route
# computes different products altogether.

# %% [markdown]
# ## 3.5 Pooling shrinks height and width, and keeps the channels
#
# A pooling layer slides a window over each feature map and summarises it: **max pooling** keeps
# the largest value, **average pooling** the mean,
#
# $$
# Y_{b,c,i,j} = \max_{0 \le u,v < k} \tilde X_{b,c,\, is+u,\, js+v}
# \qquad\text{or}\qquad
# Y_{b,c,i,j} = \frac{1}{k^2} \sum_{u,v=0}^{k-1} \tilde X_{b,c,\, is+u,\, js+v},
# $$ (eq-ch03-pool)
#
# with the stride $s$ equal to $k$ by default in PyTorch and the output size given by
# Eq. {eq}`eq-ch03-outsize`. Look at the indices: channel $c$ of the output reads only channel
# $c$ of the input. Pooling works on every channel separately, so **it never changes the number
# of channels**: a (B, 6, 28, 28) tensor becomes (B, 6, 14, 14). Pooling does not merge
# channels; changing the channel count takes a layer that mixes channels, typically a 1 x 1
# convolution. Pooling also has no parameters. Max pooling pads with $-\infty$, so padding
# never wins a maximum; average pooling pads with zeros that count in the mean, PyTorch's
# default.
#
# We implement both with `F.unfold`, treating each channel as its own one-channel image.


# %%
def pool2d(x, k, stride=None, padding=0, mode="max"):
    """Eq. (eq-ch03-pool), each channel on its own.

    x (B, C, H, W) -> (B, C, H_out, W_out).
    """
    stride = k if stride is None else stride
    B, C, H, W = x.shape
    fill = float("-inf") if mode == "max" else 0.0
    x_pad = F.pad(x, (padding,) * 4, value=fill)  # (B, C, H + 2p, W + 2p)
    per_channel = x_pad.reshape(
        B * C, 1, H + 2 * padding, W + 2 * padding
    )  # every channel a separate image
    windows = F.unfold(per_channel, k, stride=stride)  # (B * C, k * k, L)
    pooled = windows.amax(dim=1) if mode == "max" else windows.mean(dim=1)  # (B * C, L)
    H_out, W_out = (
        conv_output_size(H, k, stride, padding),
        conv_output_size(W, k, stride, padding),
    )
    return pooled.reshape(B, C, H_out, W_out)


x = torch.randn(2, 5, 9, 7)  # (B, C, H, W): odd, non-square
for k, s, p in [(2, 2, 0), (3, 2, 1), (3, 1, 1), (2, 1, 0), (3, 3, 0)]:
    torch.testing.assert_close(pool2d(x, k, s, p, "max"), F.max_pool2d(x, k, s, p))
    torch.testing.assert_close(pool2d(x, k, s, p, "avg"), F.avg_pool2d(x, k, s, p))
    print(
        f"k={k} s={s} p={p}: {tuple(x.shape)} -> "
        f"{tuple(F.max_pool2d(x, k, s, p).shape)}  max and avg match PyTorch"
    )
assert nn.MaxPool2d(3).stride == 3 and nn.AvgPool2d(3).stride == 3  # default stride: k

# %% [markdown]
# Now the channel count, on a tensor shaped like the first feature maps of the network below.

# %%
maps = torch.randn(8, 6, 28, 28)  # (B, C=6, H, W)
pooled = nn.MaxPool2d(2)(maps)  # (8, 6, 14, 14)
assert pooled.shape == (8, 6, 14, 14) and count_parameters(nn.MaxPool2d(2)) == 0
# Each output channel depends only on its own input channel: change channel 0, only
# channel 0 moves.
edited = maps.clone()
edited[:, 0] += 1.0
changed = (
    (nn.MaxPool2d(2)(edited) != pooled).flatten(2).any(dim=2).any(dim=0)
)  # (C,) which channels moved
assert changed.tolist() == [True, False, False, False, False, False]
# Changing the number of channels takes a layer that mixes them, typically a 1 x 1
# convolution (here 6 * 3 + 3 parameters).
mixer = nn.Conv2d(6, 3, kernel_size=1)
print(
    "max pool:",
    tuple(maps.shape),
    "->",
    tuple(pooled.shape),
    "(0 parameters);",
    "1x1 conv:",
    tuple(maps.shape),
    "->",
    tuple(mixer(maps).shape),
    f"({count_parameters(mixer)} parameters)",
)

# %% [markdown]
# ## 3.6 The receptive field: how far one output can see
#
# One output of a $k \times k$ convolution sees $k$ pixels along each axis. Stack layers and the
# view widens: the next layer's kernel spans $k$ *outputs* of the layer below, and if the layers
# below had strides, neighbouring outputs there sit $j_{l-1} = \prod_{i<l} s_i$ input pixels
# apart (the "jump"). Each layer adds its dilated span minus one, measured in jumps:
#
# $$
# r_L = 1 + \sum_{l=1}^{L} (k_l - 1)\, d_l \prod_{i=1}^{l-1} s_i .
# $$ (eq-ch03-rf)
#
# Pooling layers count like convolutions (a 2 x 2 max pool has $k = s = 2$). Padding moves the
# field but does not change its size. We check Eq. {eq}`eq-ch03-rf` empirically: build the
# stack with all-positive weights (average pooling in place of max pooling, whose gradient
# reaches only one pixel per window), take the gradient of the centre output with respect to the
# input, and measure how wide the region of non-zero gradient is.


# %%
def probe_receptive_field(layers, size=96, padding=0):
    """Width (pixels) of the input region whose gradient w.r.t. the centre output
    is non-zero."""
    modules = []
    for kind, k, s, d in layers:
        if kind == "conv":
            conv = nn.Conv2d(1, 1, k, stride=s, dilation=d, padding=padding, bias=False)
            nn.init.constant_(
                conv.weight, 1.0 / k**2
            )  # positive weights: no cancellation
            modules.append(conv)
        else:  # "pool": an average window, so every pixel of it gets gradient
            modules.append(nn.AvgPool2d(k, s))
    x = torch.ones(1, 1, size, size, requires_grad=True)
    y = nn.Sequential(*modules)(x)  # (1, 1, h, w)
    y[0, 0, y.shape[2] // 2, y.shape[3] // 2].backward()
    rows = torch.nonzero(
        x.grad[0, 0].abs().sum(dim=1)
    )  # rows that influence the output
    return int(rows.max() - rows.min() + 1)


stacks = {
    "one 3x3 conv": [("conv", 3, 1, 1)],
    "three 3x3 convs": [("conv", 3, 1, 1)] * 3,
    "one 7x7 conv": [("conv", 7, 1, 1)],
    "LeNet: conv5, pool2, conv5, pool2": [
        ("conv", 5, 1, 1),
        ("pool", 2, 2, 1),
        ("conv", 5, 1, 1),
        ("pool", 2, 2, 1),
    ],
    "3x3 convs with dilation 1, 2, 4": [
        ("conv", 3, 1, 1),
        ("conv", 3, 1, 2),
        ("conv", 3, 1, 4),
    ],
    "three 3x3 convs with stride 2": [("conv", 3, 2, 1)] * 3,
    "stem: conv7/2, pool3/2, two conv3": [
        ("conv", 7, 2, 1),
        ("pool", 3, 2, 1),
        ("conv", 3, 1, 1),
        ("conv", 3, 1, 1),
    ],
}
for name, layers in stacks.items():
    formula = receptive_field([(k, s, d) for _, k, s, d in layers])
    measured = probe_receptive_field(layers)
    assert formula == measured, (name, formula, measured)
    print(
        f"{name:36s} Eq. (eq-ch03-rf): {formula:2d} pixels   "
        f"gradient probe: {measured:2d}"
    )
# Padding moves the field, it does not change its width.
padded = probe_receptive_field(stacks["three 3x3 convs"], padding=1)
assert padded == receptive_field([(3, 1)] * 3)
lenet_rf = receptive_field([(5, 1), (2, 2), (5, 1), (2, 2)])
dlbook.glue("lenet_rf", lenet_rf)

# %% [markdown]
# Three 3 x 3 layers see as far as one 7 x 7 layer, with fewer weights and a non-linearity
# after each layer, the argument Simonyan and Zisserman made for stacks of 3 x 3 layers
# {cite}`simonyan2015very`: with $C$ channels in and out, $3 \cdot 9 C^2 = 27 C^2$ weights
# against $49 C^2$ (counted below). Plain stacks grow the field linearly with depth, $2L + 1$
# for $L$ layers of 3 x 3; strides of 2, or dilations that double from layer to layer, make it
# grow exponentially, $2^{L+1} - 1$ (checked below for up to eight layers). The book's
# `receptive_field` implements Eq. {eq}`eq-ch03-rf` (the cell above already compared it with
# the probe):

# %%
for C in (1, 16, 64):  # weights without biases: three 3x3 layers against one 7x7 layer
    three_3x3 = nn.Sequential(*[nn.Conv2d(C, C, 3, bias=False) for _ in range(3)])
    assert count_parameters(three_3x3) == 27 * C**2
    assert count_parameters(nn.Conv2d(C, C, 7, bias=False)) == 49 * C**2
for L in range(1, 9):
    assert receptive_field([(3, 1)] * L) == 2 * L + 1
    assert receptive_field([(3, 2)] * L) == 2 ** (L + 1) - 1
    assert receptive_field([(3, 1, 2**i) for i in range(L)]) == 2 ** (L + 1) - 1
dlbook.show(receptive_field)

# %% [markdown]
# **The effective receptive field is much smaller.** Every pixel inside the field *can* affect
# the output, but not equally: a centre pixel reaches the output through many more paths than a
# corner pixel. For $n$ stacked 3 x 3 averaging layers the gradient profile along one axis is the
# $n$-fold convolution of the box $(\tfrac13, \tfrac13, \tfrac13)$, a distribution whose variance
# adds up to $n \cdot \tfrac23$. So the field grows like $2n + 1$ but its effectively used width
# like $\sqrt{n}$ {cite}`luo2016effective`. We measure the standard deviation $\sigma$ of the
# gradient profile and compare it with $\sqrt{2n/3}$. As the **effective width** we take
# $2\sigma$, twice that standard deviation: a simple measure of our own (Luo et al. define
# the effective receptive field differently, but find the same square-root growth).


# %%
def gradient_map(n_layers, size=80):
    """|d centre output / d input| for n stacked 3x3 averaging convolutions.

    Returns a (size, size) map.
    """
    net = nn.Sequential(
        *[nn.Conv2d(1, 1, 3, bias=False, dtype=torch.float64) for _ in range(n_layers)]
    )
    for conv in net:
        nn.init.constant_(conv.weight, 1.0 / 9)
    x = torch.zeros(1, 1, size, size, dtype=torch.float64, requires_grad=True)
    y = net(x)
    y[0, 0, y.shape[2] // 2, y.shape[3] // 2].backward()
    return x.grad[0, 0].abs()


depths = list(range(1, 17))
rf_sizes, erf_widths = [], []
for n in depths:
    profile_1d = gradient_map(n).sum(dim=1)  # (size,) gradient mass per row
    profile_1d = profile_1d / profile_1d.sum()
    pos = torch.arange(len(profile_1d), dtype=torch.float64)
    mean = (pos * profile_1d).sum()
    std = ((pos - mean) ** 2 * profile_1d).sum().sqrt()
    torch.testing.assert_close(
        std, torch.tensor((2 * n / 3) ** 0.5, dtype=torch.float64)
    )
    rf_sizes.append(receptive_field([(3, 1)] * n))
    erf_widths.append(2 * std.item())
erf_ratio = erf_widths[-1] / rf_sizes[-1]
assert erf_ratio < 0.25  # 2 sqrt(32 / 3) / 33
dlbook.glue("erf_ratio_16", erf_ratio)
print(
    f"16 layers: receptive field {rf_sizes[-1]} pixels, "
    f"effective width (2 std) {erf_widths[-1]:.1f} pixels"
)

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
im = axes[0].imshow(gradient_map(8)[28:53, 28:53], cmap="magma")
rf8 = receptive_field([(3, 1)] * 8)
axes[0].set_title(
    "|gradient| of the centre output, 8 layers of 3x3\n"
    f"(the receptive field is {rf8} x {rf8})"
)
fig.colorbar(im, ax=axes[0])
axes[1].plot(depths, rf_sizes, marker="o", label="receptive field $2n+1$")
axes[1].plot(
    depths, erf_widths, marker="s", label="effective width $2\\sigma = 2\\sqrt{2n/3}$"
)
axes[1].set_xlabel("number of stacked 3x3 layers $n$")
axes[1].set_ylabel("pixels")
axes[1].legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# **Figure 3.1.** Left: the absolute gradient of the centre output with respect to the input for
# 8 stacked 3 x 3 averaging layers, cropped around the centre. Right: the receptive field $2n+1$
# and the effective width $2\sigma$ against the number of layers $n$; the first grows linearly,
# the second like $\sqrt{n}$.
#
# At 16 layers the effective width is only {glue:text}`erf_ratio_16:.2f` of the receptive field.
# Strides, pooling and dilation multiply the jumps in Eq. {eq}`eq-ch03-rf`; they grow the
# effective field faster than adding layers does {cite}`luo2016effective`.

# %% [markdown]
# ## 3.7 A LeNet-style CNN on MNIST-5k
#
# Time for real digits. MNIST-5k holds {glue:text}`n_digits` handwritten digits,
# {glue:text}`per_class` per class: {glue:text}`n_train_all` for training and
# {glue:text}`n_test` held out for the final test. We keep the last part of the training
# digits aside as a validation set, which watches the training curves and makes every choice
# below, and standardise the pixels with the training set's mean and standard deviation.

# %%
data = assets.mnist5k()
counts = torch.bincount(torch.cat([data.y_train, data.y_test]))  # (10,) per class
assert counts.min() == counts.max()  # balanced
dlbook.glue("n_digits", len(data.y_train) + len(data.y_test))
dlbook.glue("per_class", int(counts[0]))
dlbook.glue("n_train_all", len(data.y_train))
dlbook.glue("n_test", len(data.y_test))
n_train, n_val = sizes["n_train"], sizes["n_val"]
assert n_train + n_val <= len(data.y_train)
x_fit, y_fit = data.x_train[:n_train], data.y_train[:n_train]  # (n_train, 1, 28, 28)
x_val, y_val = data.x_train[-n_val:], data.y_train[-n_val:]  # never in x_fit
mean, std = x_fit.mean(), x_fit.std()


def standardise(images):
    return (images - mean) / std  # (N, 1, 28, 28), roughly zero mean and unit variance


val_loader = tensor_loader(standardise(x_val), y_val, 500, shuffle=False)
test_loader = tensor_loader(standardise(data.x_test), data.y_test, 500, shuffle=False)
print(
    f"train {tuple(x_fit.shape)}, validation {tuple(x_val.shape)}, "
    f"test {tuple(data.x_test.shape)} ({data.source})"
)

# %% [markdown]
# The network follows the layout of LeNet-5 {cite}`lecun1998gradient`: two convolution +
# pooling stages extract features, three fully connected layers classify them. It differs from
# LeNet-5 in four ways: ReLU instead of a scaled tanh; max pooling instead of subsampling
# (an average of each window with a trainable scale and bias); the second convolution reads
# all six maps of the first, where LeNet-5's C3 layer connects each of its maps to a chosen
# subset of them (its connection table); and the last layer outputs plain logits instead of
# LeNet-5's Euclidean RBF units. LeNet-5 takes 32 x 32 inputs; padding the 28 x 28 digits by 2
# pixels in the first convolution gives the same 28 x 28 feature maps.


# %%
class LeNet(nn.Module):
    """conv(5x5, 6) -> pool -> conv(5x5, 16) -> pool -> 120 -> 84 -> n_classes."""

    def __init__(self, n_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, kernel_size=5, padding=2)  # 28 -> 28
        self.conv2 = nn.Conv2d(6, 16, kernel_size=5)  # 14 -> 10
        self.pool = nn.MaxPool2d(2)  # halves H and W, keeps the channels
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, n_classes)

    def features(self, x):  # (B, 1, 28, 28)
        x = self.pool(F.relu(self.conv1(x)))  # (B, 6, 14, 14)
        return self.pool(F.relu(self.conv2(x)))  # (B, 16, 5, 5)

    def forward(self, x):
        x = self.features(x).flatten(1)  # (B, 400)
        x = F.relu(self.fc1(x))  # (B, 120)
        x = F.relu(self.fc2(x))  # (B, 84)
        return self.fc3(x)  # (B, n_classes) logits


torch.manual_seed(0)
cnn = LeNet().to(device)
side = 28
for stage, (k, s, p) in [
    ("conv1", (5, 1, 2)),
    ("pool", (2, 2, 0)),
    ("conv2", (5, 1, 0)),
    ("pool", (2, 2, 0)),
]:
    side = conv_output_size(side, k, s, p)
    print(f"after {stage:5s}: {side} x {side}")
assert cnn.features(torch.zeros(1, 1, 28, 28, device=device)).shape == (
    1,
    16,
    side,
    side,
)

# %% [markdown]
# Where do the parameters sit? Eq. {eq}`eq-ch03-params` gives the two convolutions, and
# $n_{\text{in}} n_{\text{out}} + n_{\text{out}}$ each linear layer. For the comparison we give
# the MLP of chapter 2 (`dlbook.models.MLP`) one hidden layer sized so that its parameter count
# is as close as possible to the CNN's.

# %%
for name, p in cnn.named_parameters():
    print(f"{name:12s} {str(tuple(p.shape)):16s} {p.numel():6,d}")
cnn_params = count_parameters(cnn)
conv_params = sum(
    p.numel() for name, p in cnn.named_parameters() if name.startswith("conv")
)
assert conv_params == (6 * 1 * 25 + 6) + (
    16 * 6 * 25 + 16
)  # Eq. (eq-ch03-params) for both layers

mlp_hidden = round(
    (cnn_params - 10) / (784 + 1 + 10)
)  # 784*h + h + 10*h + 10 parameters
torch.manual_seed(0)
mlp = MLP(784, [mlp_hidden], 10).to(device)
mlp_params = count_parameters(mlp)
assert mlp_params == 784 * mlp_hidden + mlp_hidden + 10 * mlp_hidden + 10
dlbook.glue("cnn_params", cnn_params)
dlbook.glue("conv_share", 100 * conv_params / cnn_params)
dlbook.glue("mlp_hidden", mlp_hidden)
dlbook.glue("mlp_params", mlp_params)
print(
    f"CNN {cnn_params:,d} parameters ({conv_params:,d} in the convolutions); "
    f"MLP 784-{mlp_hidden}-10: {mlp_params:,d} parameters"
)

# %% [markdown]
# The CNN has {glue:text}`cnn_params` parameters, and only {glue:text}`conv_share:.1f` % of them
# are in the convolutions; the rest are in the three fully connected layers. The MLP with one
# hidden layer of {glue:text}`mlp_hidden` units has {glue:text}`mlp_params`.
#
# The introduction said that the MLP does not care in which order the pixels come. Here is the
# check. Shuffle the 784 pixels of every image by one fixed permutation and shuffle the columns
# of the MLP's first weight matrix the same way: the outputs are identical, and after a
# training step on the same batch the two networks are still each other's shuffle. By
# induction over the steps, training on shuffled pixels follows the shuffled trajectory, and
# since PyTorch draws the initial weights independently of each other, a shuffled start is as
# likely as the original one.

# %%
perm = torch.randperm(784, generator=torch.Generator().manual_seed(1))  # one shuffle
twins = {"ordered": copy.deepcopy(mlp), "shuffled": copy.deepcopy(mlp)}
with torch.no_grad():
    first = twins["shuffled"].net[1].weight  # (hidden, 784)
    first.copy_(first[:, perm])
xb = standardise(x_fit[:64]).flatten(1).to(device)  # (64, 784)
inputs = {"ordered": xb, "shuffled": xb[:, perm]}
logits = {name: net(inputs[name]) for name, net in twins.items()}  # (64, 10) each
torch.testing.assert_close(logits["shuffled"], logits["ordered"])
for name, net in twins.items():  # one AdamW step each, on the same batch
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-2)
    F.cross_entropy(net(inputs[name]), y_fit[:64].to(device)).backward()
    opt.step()
after = {name: net.net[1].weight for name, net in twins.items()}  # (hidden, 784)
torch.testing.assert_close(after["shuffled"], after["ordered"][:, perm])
print("shuffled pixels + shuffled first layer: same outputs, and the same step")

# %% [markdown]
# Equal parameters do not mean equal work. A convolution weight is used at every output
# position, so a layer costs $C_{\text{out}} C_g k_h k_w H_{\text{out}} W_{\text{out}}$
# multiply-adds per image, a linear layer $n_{\text{in}} n_{\text{out}}$. We count both networks
# by hand and check the count with PyTorch's FLOP counter (which counts a multiply-add as two
# FLOPs).

# %%
from torch.utils.flop_counter import FlopCounterMode

cnn_macs = (
    (6 * 1 * 5 * 5 * 28 * 28)
    + (16 * 6 * 5 * 5 * 10 * 10)
    + 400 * 120
    + 120 * 84
    + 84 * 10
)
mlp_macs = 784 * mlp_hidden + mlp_hidden * 10
for model, macs in [(cnn, cnn_macs), (mlp, mlp_macs)]:
    with FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 1, 28, 28, device=device))
    assert counter.get_total_flops() == 2 * macs
dlbook.glue("mac_ratio", cnn_macs / mlp_macs)
print(
    f"multiply-adds per digit: CNN {cnn_macs:,d}, MLP {mlp_macs:,d} "
    f"(ratio {cnn_macs / mlp_macs:.1f})"
)

# %% [markdown]
# The CNN does {glue:text}`mac_ratio:.1f` times more arithmetic per digit for the same number of
# parameters. Both are trained the same way with the book's `fit` loop from chapter 2: AdamW, a
# learning rate that warms up and then anneals (PyTorch's `OneCycleLR`), the same epochs and
# the same batches.


# %%
def train(model, seed=0, show_progress=True):
    """One recipe for every model; a seed gives the same batches in the same order."""
    train_loader = tensor_loader(
        standardise(x_fit), y_fit, sizes["batch_size"], shuffle=True, seed=seed
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-2)
    total_steps = sizes["epochs"] * len(train_loader)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=3e-3, total_steps=total_steps
    )
    return fit(
        model,
        train_loader,
        val_loader,
        optimizer=optimizer,
        epochs=sizes["epochs"],
        device=device,
        scheduler=scheduler,
        show_progress=show_progress,
    )


history_cnn = train(cnn)
history_mlp = train(mlp)

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.4), sharey=True)
history_cnn.plot(ax=axes[0], title=f"LeNet-style CNN ({cnn_params:,d} parameters)")
history_mlp.plot(
    ax=axes[1], title=f"MLP 784-{mlp_hidden}-10 ({mlp_params:,d} parameters)"
)
fig.suptitle("Training and validation loss per epoch")
plt.tight_layout()
plt.show()

# %% [markdown]
# **Figure 3.2.** Training and validation loss per epoch of the LeNet-style CNN (left) and the
# MLP (right), on a shared loss axis; the dotted line marks each model's best validation epoch.
#
# The real test: the {glue:text}`n_test` held-out digits. Training never saw them; the curves
# above were watched on the separate validation digits. Both models are scored on the same
# digits, so we compare them *paired*: a bootstrap over the test digits gives a 95 % interval
# for the accuracy difference, and McNemar's test looks only at the digits on which the two
# models disagree (both in `dlbook.stats`). We call a difference measurable when the interval
# excludes 0 and McNemar's test rejects equal accuracy at the 5 % level.

# %%
_, cnn_acc = evaluate(cnn, test_loader, F.cross_entropy, device)
_, mlp_acc = evaluate(mlp, test_loader, F.cross_entropy, device)


def correct_on(model, loader):
    """(N,) bool: which examples of `loader` the model classifies correctly."""
    logits, targets = predict(model, loader, device)  # (N, 10), (N,)
    return logits.argmax(dim=1) == targets


cnn_vs_mlp = dlbook.stats.compare(
    correct_on(cnn, test_loader), correct_on(mlp, test_loader), n_boot=sizes["n_boot"]
)
dlbook.headline("cnn_test_acc", cnn_acc, profile=profile, at_least=0.96)
dlbook.glue("mlp_test_acc", mlp_acc)
dlbook.glue("cnn_vs_mlp", cnn_vs_mlp.verdict("the CNN", "the MLP"))
if profile == "full":  # the prose below relies on it
    assert cnn_vs_mlp.measurable and cnn_vs_mlp.interval.diff > 0
print(f"held-out accuracy: CNN {cnn_acc:.3f}, MLP {mlp_acc:.3f}")
print(cnn_vs_mlp.verdict("the CNN", "the MLP"))

# %% [markdown]
# With about the same number of parameters, the CNN reaches {glue:text}`cnn_test_acc`
# held-out accuracy and the MLP {glue:text}`mlp_test_acc:.3f`. Paired over the same digits,
# {glue:text}`cnn_vs_mlp`.
#
# That interval covers the choice of test digits, for these two trained networks. Training
# has its own randomness: the seed draws the initial weights and the order of the batches. So
# we train both models again on seeds 1 to {glue:text}`last_seed` and score every run on the
# same test digits.

# %%
seeds = list(range(sizes["seeds"]))
trained = {("CNN", 0): cnn, ("MLP", 0): mlp}  # seed 0: the two models above
more_runs = [(kind, seed) for seed in seeds[1:] for kind in ("CNN", "MLP")]
for kind, seed in dlbook.progress(more_runs, desc="more seeds"):
    torch.manual_seed(seed)  # the initial weights ...
    model = (LeNet() if kind == "CNN" else MLP(784, [mlp_hidden], 10)).to(device)
    train(model, seed=seed, show_progress=False)  # ... and the batch order
    trained[kind, seed] = model


# %%
def held_out_accuracy(model):
    return evaluate(model, test_loader, F.cross_entropy, device)[1]


def per_seed_words(diffs, name_a, name_b):
    """'a won on all 5 seeds, by 0.3 to 1.0 points'; diffs (seeds,): a - b."""
    n, wins, losses = len(diffs), int((diffs > 0).sum()), int((diffs < 0).sum())
    low, high = 100 * diffs.min().item(), 100 * diffs.max().item()
    if wins == n:
        return f"{name_a} won on all {n} seeds, by {low:.1f} to {high:.1f} points"
    if losses == n:
        return f"{name_b} won on all {n} seeds, by {-high:.1f} to {-low:.1f} points"
    return (
        f"{name_a} won on {wins} of {n} seeds, {name_b} on {losses} "
        f"(differences {low:+.1f} to {high:+.1f} points)"
    )


seed_acc = {
    kind: torch.tensor([held_out_accuracy(trained[kind, s]) for s in seeds])
    for kind in ("CNN", "MLP")
}  # (seeds,) each
seed_gap = seed_acc["CNN"] - seed_acc["MLP"]  # (seeds,)
over_seeds = dlbook.stats.seed_interval(seed_acc["CNN"], seed_acc["MLP"])
dlbook.glue("last_seed", seeds[-1])
dlbook.glue("n_seeds", len(seeds))
for kind in ("CNN", "MLP"):
    dlbook.glue(
        f"{kind.lower()}_seed_range",
        f"{seed_acc[kind].min():.3f} to {seed_acc[kind].max():.3f}",
    )
dlbook.glue("cnn_mlp_seeds", per_seed_words(seed_gap, "the CNN", "the MLP"))
dlbook.glue("cnn_mlp_seed_interval", over_seeds.points())
if profile == "full":  # the prose below relies on it
    assert (seed_acc["CNN"] >= 0.96).all() and (seed_gap > 0).all()
    assert over_seeds.low > 0
table = {"CNN": seed_acc["CNN"], "MLP": seed_acc["MLP"], "CNN - MLP": seed_gap}
print(pd.DataFrame(table, index=pd.Index(seeds, name="seed")).round(3).to_string())
print(per_seed_words(seed_gap, "the CNN", "the MLP"))

# %% [markdown]
# Over {glue:text}`n_seeds` seeds the CNN's held-out accuracy ranged from
# {glue:text}`cnn_seed_range` and the MLP's from {glue:text}`mlp_seed_range`:
# {glue:text}`cnn_mlp_seeds`. The mean difference and its 95 % Student-t interval over the
# seeds (`dlbook.stats.seed_interval`) are {glue:text}`cnn_mlp_seed_interval` points.
#
# What does the convolutional architecture (local kernels, shared across positions, and
# pooling) buy? Move the test digits a few pixels to the side (filling with background) and
# measure both models again.


# %%
def shift_right(images, pixels):
    """Move (N, 1, 28, 28) images `pixels` to the right, filling the left edge
    with background (0)."""
    if pixels == 0:
        return images
    return F.pad(images, (pixels, 0))[..., :-pixels]


shifts = [0, 1, 2, 3, 4]
shift_correct = {"CNN": [], "MLP": []}
for pixels in shifts:
    loader = tensor_loader(
        standardise(shift_right(data.x_test, pixels)), data.y_test, 500, shuffle=False
    )
    for name, model in [("CNN", cnn), ("MLP", mlp)]:
        shift_correct[name].append(correct_on(model, loader))  # (N,) per shift
shift_acc = {
    name: [c.float().mean().item() for c in per_shift]
    for name, per_shift in shift_correct.items()
}
shift3 = dlbook.stats.compare(
    shift_correct["CNN"][3], shift_correct["MLP"][3], n_boot=sizes["n_boot"]
)
dlbook.glue("cnn_shift3_acc", shift_acc["CNN"][3])
dlbook.glue("mlp_shift3_acc", shift_acc["MLP"][3])
dlbook.glue("shift3_verdict", shift3.verdict("the CNN", "the MLP"))
if profile == "full":  # the prose below relies on it
    assert shift3.measurable and shift3.interval.diff > 0  # the CNN holds up better
    assert shift_acc["CNN"][3] < shift_acc["CNN"][0]  # but it does lose accuracy
print(shift3.verdict("the CNN", "the MLP"))

fig, ax = plt.subplots(figsize=(5, 3.2))
for name, accs in shift_acc.items():
    ax.plot(shifts, accs, marker="o", label=name)
ax.set_xlabel("test digits shifted right by (pixels)")
ax.set_ylabel("held-out accuracy")
ax.set_title("Accuracy on shifted test digits")
ax.legend()
plt.show()

# %% [markdown]
# **Figure 3.3.** Held-out accuracy of the CNN and the MLP on the test digits shifted right by 0
# to 4 pixels; neither model saw shifted digits in training.
#
# Shifted by 3 pixels, the CNN still gets {glue:text}`cnn_shift3_acc:.3f` right and the MLP
# {glue:text}`mlp_shift3_acc:.3f`; paired, {glue:text}`shift3_verdict`. Neither was trained
# on shifted digits. The CNN loses accuracy too. A plausible reason: convolution is
# *equivariant*, not invariant, so the feature maps move with the digit, and the fully
# connected layers on top see the moved maps as a different input.
#
# ## 3.8 Look inside
#
# **First-layer filters.** The six 5 x 5 kernels of `conv1` are small enough to look at. Each
# is the pattern its feature map correlates with: the map is high where the pixel values are
# high (ink) under the red weights and low (background) under the blue ones.

# %%
filters = cnn.conv1.weight.detach().cpu()[:, 0]  # (6, 5, 5)
fig, axes = plt.subplots(1, 6, figsize=(10, 2))
for i, ax in enumerate(axes):
    limit = filters[i].abs().max()
    ax.imshow(filters[i], cmap="RdBu_r", vmin=-limit, vmax=limit)
    ax.set_title(f"filter {i}")
    ax.axis("off")
fig.suptitle("The six first-layer kernels (red positive, blue negative)")
plt.show()

# %% [markdown]
# **Figure 3.4.** The six 5 x 5 kernels of the trained CNN's first layer, each on its own colour
# scale symmetric about zero (red positive, blue negative).
#
# **Feature maps of one digit.** Passing one test digit through `conv1` (then ReLU) gives six
# 28 x 28 maps, one per filter; after pooling and `conv2` there are sixteen 10 x 10 maps. As a
# last check, the first maps are exactly our im2col convolution followed by ReLU.

# %%
digit = standardise(data.x_test[:1]).to(device)  # (1, 1, 28, 28)
with torch.no_grad():
    maps1 = F.relu(cnn.conv1(digit))  # (1, 6, 28, 28)
    maps2 = F.relu(cnn.conv2(cnn.pool(maps1)))  # (1, 16, 10, 10)
    ours = F.relu(conv2d_im2col(digit, cnn.conv1.weight, cnn.conv1.bias, padding=2))
torch.testing.assert_close(ours, maps1)

fig, axes = plt.subplots(3, 8, figsize=(12, 4.8))
axes[0, 0].imshow(data.x_test[0, 0], cmap="gray_r")
axes[0, 0].set_title(f"digit ({int(data.y_test[0])})")
for i in range(6):
    axes[0, i + 1].imshow(maps1[0, i].cpu(), cmap="viridis")
    axes[0, i + 1].set_title(f"conv1 map {i}")
for i in range(16):
    ax = axes[1 + i // 8, i % 8]
    ax.imshow(maps2[0, i].cpu(), cmap="viridis")
    ax.set_title(f"conv2 map {i}", fontsize=8)
for ax in axes.flat:
    ax.axis("off")
fig.suptitle("One test digit and its feature maps after conv1 and conv2 (ReLU)")
plt.tight_layout()
plt.show()

# %% [markdown]
# **Figure 3.5.** The first held-out digit (top left), its six feature maps after `conv1` and
# ReLU (rest of the top row) and its sixteen maps after pooling, `conv2` and ReLU (bottom two
# rows).
#
# **The digits it gets wrong.** Finally, the held-out digits the CNN misclassifies, with the
# true label, the prediction and the probability the network gave its prediction.

# %%
with torch.no_grad():
    probs = torch.cat(
        [F.softmax(cnn(xb.to(device)), dim=1).cpu() for xb, _ in test_loader]
    )  # (1000, 10)
confidence, predicted = probs.max(dim=1)
is_wrong = predicted != data.y_test  # (1000,)
wrong = torch.nonzero(is_wrong).flatten()
unsure = confidence < 0.9  # (1000,) the network gave its answer less than 90 %
err_unsure = is_wrong[unsure].float().mean().item() if unsure.any() else float("nan")
err_sure = is_wrong[~unsure].float().mean().item() if (~unsure).any() else float("nan")
dlbook.glue("n_wrong", len(wrong))
dlbook.glue("conf_wrong", confidence[wrong].mean().item())
dlbook.glue("conf_right", confidence[~is_wrong].mean().item())
dlbook.glue("n_unsure", int(unsure.sum()))
dlbook.glue("err_unsure", 100 * err_unsure)
dlbook.glue("err_sure", 100 * err_sure)
if profile == "full":  # the prose below relies on it
    assert confidence[wrong].mean() < confidence[~is_wrong].mean()
    assert err_unsure > 5 * err_sure
assert len(wrong) == round((1 - cnn_acc) * len(data.y_test))
print(
    f"{len(wrong)} of {len(data.y_test)} held-out digits misclassified; error rate "
    f"{100 * err_unsure:.1f} % below 0.9 probability ({int(unsure.sum())} digits), "
    f"{100 * err_sure:.1f} % above"
)

show_n = min(len(wrong), 24)
fig, axes = plt.subplots(3, 8, figsize=(12, 5.2))
for i, ax in enumerate(axes.flat):
    ax.axis("off")
    if i >= show_n:
        continue
    idx = int(wrong[i])
    ax.imshow(data.x_test[idx, 0], cmap="gray_r")
    ax.set_title(
        f"{int(data.y_test[idx])} -> {int(predicted[idx])} ({confidence[idx]:.2f})",
        fontsize=9,
    )
plt.suptitle("held-out digits the CNN gets wrong: true -> predicted (probability)")
plt.tight_layout()
plt.show()

# %% [markdown]
# **Figure 3.6.** Held-out digits the CNN misclassifies (at most 24), each titled with the true
# label, the predicted label and the probability the network gave its prediction.
#
# The CNN misclassifies {glue:text}`n_wrong` of the {glue:text}`n_test` held-out digits. The
# probabilities tell us how sure the network was: on average {glue:text}`conf_wrong:.2f` for
# its wrong answers against {glue:text}`conf_right:.2f` for its right ones. Among the
# {glue:text}`n_unsure` digits it gave less than 0.9, {glue:text}`err_unsure:.1f` % are
# wrong, against {glue:text}`err_sure:.1f` % of the rest: a low probability flags a digit
# worth a second look. (Chapter 9 measures how far such probabilities can be trusted.)

# %% [markdown]
# ## 3.9 Data augmentation: train on moved digits
#
# If moved digits are the problem, show the network moved digits. **Data augmentation**
# trains on randomly transformed copies of the training images: each time a batch is drawn,
# every digit is rotated by up to 15 degrees either way and moved by up to 3 pixels along
# each axis (fractions of a pixel included, by bilinear interpolation), so the network sees a
# different version of each digit in every epoch. Shifts, rotations and elastic distortions
# of the training digits are an old remedy for handwriting recognition
# {cite}`simard2003best`.
#
# One function does the geometry: `F.affine_grid` turns a 2 x 3 matrix per image (a rotation
# and a translation, in coordinates that run from -1 to 1 across the image) into a sampling
# grid, and `F.grid_sample` reads the image at those positions with bilinear interpolation.
# Pixels that come from outside the image get the background value.


# %%
def affine_warp(images, degrees, shifts, fill=0.0):
    """Rotate each image by `degrees` and move it by `shifts` = (right, down) pixels.

    images (N, C, H, W), degrees (N,), shifts (N, 2) -> (N, C, H, W). The rotation is
    about the centre; pixels from outside the image get the value `fill`.
    """
    N, _, H, W = images.shape
    angle = torch.deg2rad(degrees)  # (N,)
    cos, sin = angle.cos(), angle.sin()
    tx, ty = -2 * shifts[:, 0] / W, -2 * shifts[:, 1] / H  # one pixel = 2 / W there
    theta = torch.stack(
        [torch.stack([cos, -sin, tx], dim=1), torch.stack([sin, cos, ty], dim=1)], dim=1
    )  # (N, 2, 3)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)  # (N, H, W, 2)
    warped = F.grid_sample(images - fill, grid, align_corners=False)  # zeros outside
    return warped + fill


# %% [markdown]
# Before trusting it, two exact checks: a move of 2 pixels to the right must equal
# `shift_right` from above, and a rotation by 90 degrees must equal `torch.rot90`, which only
# permutes pixels.

# %%
some = data.x_test[:8]  # (8, 1, 28, 28), background 0
zeros, ones = torch.zeros(8), torch.ones(8)
moved = affine_warp(some, zeros, torch.stack([2 * ones, zeros], dim=1))
torch.testing.assert_close(moved, shift_right(some, 2))
turned = affine_warp(some, 90 * ones, torch.zeros(8, 2))
torch.testing.assert_close(turned, torch.rot90(some, k=1, dims=(2, 3)))
print("2-pixel move == shift_right; 90-degree turn == torch.rot90")

# %% [markdown]
# The augmentation is a layer placed in front of the network. Like dropout (chapter 2) it acts
# only in training mode; in evaluation mode it passes the images through unchanged, so
# validation and test digits are never altered. It draws its random numbers from its own
# seeded generator, which leaves the network's initial weights and the batch order untouched:
# with and without augmentation, a seed gives the same start and the same batches (checked
# below).


# %%
class RandomAffine(nn.Module):
    """Training-time augmentation, per image: a random rotation in
    [-max_degrees, max_degrees] and a random move in [-max_shift, max_shift] pixels
    along each axis. The identity in evaluation mode."""

    def __init__(self, max_degrees, max_shift, fill, seed=0):
        super().__init__()
        self.max_degrees, self.max_shift, self.fill = max_degrees, max_shift, fill
        self.generator = torch.Generator().manual_seed(seed)

    def forward(self, x):  # (B, C, H, W)
        if not self.training:
            return x
        n = x.shape[0]
        degrees = (2 * torch.rand(n, generator=self.generator) - 1) * self.max_degrees
        shifts = (2 * torch.rand(n, 2, generator=self.generator) - 1) * self.max_shift
        return affine_warp(x, degrees.to(x.device), shifts.to(x.device), self.fill)


background = standardise(torch.tensor(0.0)).item()  # the value of an empty pixel
augment = RandomAffine(max_degrees=15, max_shift=3, fill=background, seed=0)
batch = standardise(data.x_train[:6])  # (6, 1, 28, 28)
views = [augment(batch) for _ in range(3)]  # three random versions of each digit
assert torch.equal(augment.eval()(batch), batch)  # evaluation mode: untouched

fig, axes = plt.subplots(4, 6, figsize=(9, 6))
for row, images in enumerate([batch, *views]):
    for col in range(6):
        axes[row, col].imshow(images[col, 0], cmap="gray_r")
        axes[row, col].axis("off")
fig.suptitle("Six training digits (top) and three random augmentations of each")
plt.tight_layout()
plt.show()

# %% [markdown]
# **Figure 3.7.** Six training digits (top row) and three random augmentations of each (rows 2
# to 4): a rotation of up to 15 degrees and a move of up to 3 pixels along each axis.
#
# The experiment: the same LeNet, the same recipe and the same batches, with and without the
# augmentation layer, for each of the {glue:text}`n_seeds` seeds. The plain arm is the CNN
# trained above on that seed; the augmented arm puts the layer in front of a fresh LeNet.
# First the check that a seed gives both arms the same initial weights and the same batches,
# so that the two arms form pairs.


# %%
def new_lenet(seed, augmented):
    """A fresh LeNet (initial weights from `seed`), optionally behind RandomAffine."""
    torch.manual_seed(seed)
    model = LeNet()
    if augmented:
        model = nn.Sequential(RandomAffine(15, 3, background, seed=seed), model)
    return model.to(device)


def batch_order(seed):
    """The order in which `train` visits the training digits: (n_train,)."""
    positions = torch.arange(n_train, dtype=torch.float32)  # stands in for the images
    loader = tensor_loader(
        positions, y_fit, sizes["batch_size"], shuffle=True, seed=seed
    )
    return torch.cat([xb for xb, _ in loader]).long()


for seed in seeds:
    plain_start, aug_start = new_lenet(seed, False), new_lenet(seed, True)
    plain_state, aug_state = plain_start.state_dict(), aug_start[1].state_dict()
    assert all(torch.equal(plain_state[k], aug_state[k]) for k in plain_state)
    before = torch.random.get_rng_state()
    aug_start.train()(standardise(x_fit[:8]).to(device))  # draws augmentations ...
    assert torch.equal(torch.random.get_rng_state(), before)  # ... not global numbers
    order = batch_order(seed)
    torch.rand(1_000)  # other random numbers drawn in between ...
    assert torch.equal(batch_order(seed), order)  # ... do not change the batch order
print(f"seeds {seeds}: the same initial weights and the same batch order in both arms")

# %% [markdown]
# We score every run on the validation digits as they are, and on the validation digits
# moved 3 pixels to the right. The test digits play no part: a reader deciding whether to use
# augmentation decides on validation.

# %%
val_shifted = tensor_loader(
    standardise(shift_right(x_val, 3)), y_val, 500, shuffle=False
)
arms, splits = ("plain", "augmented"), ("clean", "shifted")
aug_correct = {(arm, split): [] for arm in arms for split in splits}
for seed in dlbook.progress(seeds, desc="augmented runs"):
    augmented = new_lenet(seed, augmented=True)
    train(augmented, seed=seed, show_progress=False)
    for arm, model in [("plain", trained["CNN", seed]), ("augmented", augmented)]:
        aug_correct[arm, "clean"].append(correct_on(model, val_loader))  # (n_val,)
        aug_correct[arm, "shifted"].append(correct_on(model, val_shifted))  # (n_val,)
aug_correct = {key: torch.stack(c) for key, c in aug_correct.items()}  # (seeds, n_val)

# %%
per_seed = pd.DataFrame(
    {
        f"{arm}, {split}": aug_correct[arm, split].float().mean(dim=1)
        for arm in arms
        for split in splits
    },
    index=pd.Index(seeds, name="seed"),
)
summary = pd.concat([per_seed, per_seed.agg(["mean", "std"])])
summary.style.format("{:.3f}").set_caption(
    "Validation accuracy per seed: digits as they are (clean), moved 3 pixels (shifted)"
)

# %% [markdown]
# Is the difference real, or noise? The noise has two sources, and we give an interval for
# each.
#
# - **The digits.** Other validation digits would give other numbers. We average each
#   digit's difference between the arms over the seeds and bootstrap over the digits
#   (`dlbook.stats.bootstrap_ratio`); this interval holds the trained networks fixed.
# - **The seeds.** Another seed draws other initial weights, batches and augmentations. We
#   take each seed's difference in validation accuracy and form a Student-t interval over the
#   seeds (`dlbook.stats.seed_interval`); this interval holds the digits fixed, and with few
#   seeds it is wide.
#
# We call augmentation better (or worse) only when both 95 % intervals exclude 0.


# %%
def augmentation_effect(split):
    """Augmented minus plain: (interval over digits, over seeds, per-seed values)."""
    diff = (
        aug_correct["augmented", split].float() - aug_correct["plain", split].float()
    )  # (seeds, n_val), each -1, 0 or 1
    over_digits = dlbook.stats.bootstrap_ratio(diff.mean(dim=0), n_boot=sizes["n_boot"])
    per_seed_diff = diff.mean(dim=1)  # (seeds,) difference in accuracy, seed by seed
    return over_digits, dlbook.stats.seed_interval(per_seed_diff), per_seed_diff


def verdict(over_digits, over_seeds):
    """Better or worse only when both intervals exclude 0 on the same side."""
    if over_digits.low > 0 and over_seeds.low > 0:
        return "augmentation scored higher"
    if over_digits.high < 0 and over_seeds.high < 0:
        return "augmentation scored lower"
    if over_digits.measurable:
        return "these digits tell the arms apart, but these seeds do not"
    if over_seeds.measurable:
        return "these seeds tell the arms apart, but these digits do not"
    return "neither these digits nor these seeds tell the arms apart"


def describe(over_digits, over_seeds, per_seed_diff):
    """One sentence: verdict, mean difference, both intervals, per-seed range."""

    def bounds(i):
        return f"[{100 * i.low:+.1f}, {100 * i.high:+.1f}]"

    mean = f"{100 * over_digits.diff:+.1f} points on average"
    intervals = (
        f"95 % interval {bounds(over_digits)} over the digits, "
        f"{bounds(over_seeds)} over the seeds"
    )
    seeds_text = per_seed_words(per_seed_diff, "augmentation", "the plain network")
    return f"{verdict(over_digits, over_seeds)}: {mean} ({intervals}); {seeds_text}"


aug_result = {split: augmentation_effect(split) for split in splits}
for split in splits:
    over_digits, over_seeds, _ = aug_result[split]
    dlbook.glue(f"aug_{split}", describe(*aug_result[split]))
    dlbook.glue(
        f"aug_{split}_short",
        f"{verdict(over_digits, over_seeds)} "
        f"({100 * over_digits.diff:+.1f} points on average)",
    )
    print(f"{split:8s}: {describe(*aug_result[split])}")
if profile == "full":  # the prose relies on it: a gain on moved digits, on every seed
    over_digits, over_seeds, per_seed_diff = aug_result["shifted"]
    assert over_digits.low > 0 and over_seeds.low > 0 and (per_seed_diff > 0).all()

# %% [markdown]
# On the validation digits as they are, {glue:text}`aug_clean`. On the validation digits
# moved 3 pixels, {glue:text}`aug_shifted`. The two arms differ only in the augmentation
# layer, so the second difference is its doing: the network recognises moved digits because
# it was trained on moved digits.

# %% [markdown]
# ## 3.10 Batch normalisation
#
# Ioffe and Szegedy introduced **batch normalisation** to let deep networks train faster and
# with higher learning rates {cite}`ioffe2015batch`. They place it between a convolution and
# its ReLU, as do residual networks (section 3.11). In training mode it standardises
# each channel with the statistics of the current batch, then lets the network rescale and
# shift the result. For a batch $X$ of shape $(B, C, H, W)$, channel $c$ pools all
# $n = BHW$ of its values, over the batch *and* over space:
#
# $$
# \mu_c = \frac1n \sum_{b,i,j} X_{b,c,i,j}, \qquad
# \sigma_c^2 = \frac1n \sum_{b,i,j} \left(X_{b,c,i,j} - \mu_c\right)^2, \qquad
# Y_{b,c,i,j} = \gamma_c\, \frac{X_{b,c,i,j} - \mu_c}{\sqrt{\sigma_c^2 + \epsilon}} + \beta_c ,
# $$ (eq-ch03-bn)
#
# with a learned scale $\gamma_c$ and shift $\beta_c$ per channel and a small $\epsilon$
# ($10^{-5}$ in PyTorch). A trained network must also classify a single image, and its answer
# should not depend on which other images happen to share its batch. So during training the
# layer keeps **running statistics**,
# exponential moving averages with momentum $m$ (0.1 in PyTorch, where $m$ is the weight of the
# *new* value):
#
# $$
# \hat\mu_c \leftarrow (1-m)\,\hat\mu_c + m\,\mu_c, \qquad
# \hat\sigma_c^2 \leftarrow (1-m)\,\hat\sigma_c^2 + m\,\frac{n}{n-1}\,\sigma_c^2 ,
# $$ (eq-ch03-bn-running)
#
# starting from $\hat\mu_c = 0$ and $\hat\sigma_c^2 = 1$. The running variance uses the
# unbiased estimate (divided by $n - 1$), the normalisation itself the biased one. In
# evaluation mode, $\hat\mu_c$ and $\hat\sigma_c^2$ replace $\mu_c$ and $\sigma_c^2$ in
# Eq. {eq}`eq-ch03-bn`, and each image is normalised independently of the rest of its batch.
# Here are both modes as one function, with its arguments in the order of `F.batch_norm`.


# %%
def batch_norm(x, run_mean, run_var, gamma, beta, training, momentum=0.1, eps=1e-5):
    """Eqs. (eq-ch03-bn) and (eq-ch03-bn-running): x (B, C, H, W) -> y and new stats."""
    C = x.shape[1]
    if training:
        n = x.numel() // C  # values per channel: B * H * W
        mu = x.mean(dim=(0, 2, 3))  # (C,)
        var = ((x - mu.view(1, C, 1, 1)) ** 2).mean(dim=(0, 2, 3))  # (C,) divides by n
        run_mean = (1 - momentum) * run_mean + momentum * mu.detach()
        run_var = (1 - momentum) * run_var + momentum * var.detach() * n / (n - 1)
    else:
        mu, var = run_mean, run_var
    x_hat = (x - mu.view(1, C, 1, 1)) / torch.sqrt(var.view(1, C, 1, 1) + eps)
    return gamma.view(1, C, 1, 1) * x_hat + beta.view(1, C, 1, 1), run_mean, run_var


# %% [markdown]
# We check it against `nn.BatchNorm2d` step by step: five training steps on batches with a
# different mean and spread in each channel, comparing the outputs, the gradients with respect
# to the input, $\gamma$ and $\beta$, and the running statistics after every step; then the
# same in evaluation mode. The batches are small ($n = 2 \cdot 3 \cdot 3 = 18$), so a slip
# between $n$ and $n - 1$ would show.

# %%
torch.manual_seed(0)
ref_bn = nn.BatchNorm2d(3).double()
with torch.no_grad():  # non-trivial scale and shift
    ref_bn.weight.copy_(torch.tensor([0.5, 1.0, 2.0]))
    ref_bn.bias.copy_(torch.tensor([-1.0, 0.0, 1.0]))
gamma = ref_bn.weight.detach().clone().requires_grad_()
beta = ref_bn.bias.detach().clone().requires_grad_()
run_mean = torch.zeros(3, dtype=torch.float64)  # PyTorch's start: mean 0, variance 1
run_var = torch.ones(3, dtype=torch.float64)
loc = torch.tensor([3.0, -2.0, 0.0]).view(1, 3, 1, 1)  # each channel its own mean
scale = torch.tensor([2.0, 0.5, 1.0]).view(1, 3, 1, 1)  # and its own spread


def bn_batch():
    """A (2, 3, 3, 3) float64 batch whose channels have different means and spreads."""
    return (loc + scale * torch.randn(2, 3, 3, 3)).double().requires_grad_()


for mode in ("train", "eval"):
    ref_bn.train(mode == "train")
    for _ in range(5):
        x_bn = bn_batch()
        ours, run_mean, run_var = batch_norm(
            x_bn, run_mean, run_var, gamma, beta, training=mode == "train"
        )
        ref = ref_bn(x_bn)
        torch.testing.assert_close(ours, ref)
        torch.testing.assert_close(run_mean, ref_bn.running_mean)
        torch.testing.assert_close(run_var, ref_bn.running_var)
        g_out = torch.randn_like(ref)  # an arbitrary upstream gradient dL/dY
        ours_grads = torch.autograd.grad(ours, (x_bn, gamma, beta), g_out)
        ref_grads = torch.autograd.grad(ref, (x_bn, ref_bn.weight, ref_bn.bias), g_out)
        torch.testing.assert_close(ours_grads, ref_grads)
print(
    "forward, backward (x, gamma, beta) and running statistics == nn.BatchNorm2d, "
    "5 steps in training mode and 5 in evaluation mode"
)

# %% [markdown]
# **The backward pass, by hand.** Autograd differentiated our function; the gradient can also be
# written down. In evaluation mode the layer is a fixed affine map per channel, so
# $\partial L/\partial X = \gamma_c\, G / \sqrt{\hat\sigma_c^2 + \epsilon}$ with
# $G = \partial L / \partial Y$. In training mode $\mu_c$ and $\sigma_c$ depend on every value of
# the channel, which adds two correction terms. With $\hat X$ the normalised input and sums over
# the $n$ positions $(b, i, j)$ of channel $c$,
#
# $$
# \frac{\partial L}{\partial \beta_c} = \sum G, \qquad
# \frac{\partial L}{\partial \gamma_c} = \sum G\,\hat X, \qquad
# \frac{\partial L}{\partial X} = \frac{\gamma_c}{\sqrt{\sigma_c^2 + \epsilon}}
#   \Big(G - \frac1n \sum G - \frac{\hat X}{n} \sum G\,\hat X\Big).
# $$ (eq-ch03-bn-grad)
#
# The two sums remove from the gradient its mean and (up to $\epsilon$) its component along
# $\hat X$: a change of the input that only shifts or rescales a channel is undone by the
# normalisation. We check
# Eq. {eq}`eq-ch03-bn-grad` against `nn.BatchNorm2d`'s backward in training mode.


# %%
def batch_norm_backward(g_out, x, gamma, eps=1e-5):
    """Eq. (eq-ch03-bn-grad), training mode: (dL/dx, dL/dgamma, dL/dbeta)."""
    C = x.shape[1]
    mu = x.mean(dim=(0, 2, 3), keepdim=True)  # (1, C, 1, 1)
    sigma = torch.sqrt(x.var(dim=(0, 2, 3), correction=0, keepdim=True) + eps)
    x_hat = (x - mu) / sigma  # (B, C, H, W)
    g_mean = g_out.mean(dim=(0, 2, 3), keepdim=True)  # (1/n) sum G
    gx_mean = (g_out * x_hat).mean(dim=(0, 2, 3), keepdim=True)  # (1/n) sum G x_hat
    dx = gamma.view(1, C, 1, 1) / sigma * (g_out - g_mean - x_hat * gx_mean)
    return dx, (g_out * x_hat).sum(dim=(0, 2, 3)), g_out.sum(dim=(0, 2, 3))


ref_bn.train()
x_bn = bn_batch()
g_out = torch.randn(2, 3, 3, 3, dtype=torch.float64)
ref_grads = torch.autograd.grad(ref_bn(x_bn), (x_bn, ref_bn.weight, ref_bn.bias), g_out)
by_hand = batch_norm_backward(g_out, x_bn.detach(), ref_bn.weight.detach())
torch.testing.assert_close(by_hand, ref_grads)
print("Eq. (eq-ch03-bn-grad) == nn.BatchNorm2d's backward")

# %% [markdown]
# ### Training mode and evaluation mode are different functions
#
# **In training mode an image's output depends on the rest of its batch.** Keep one image
# fixed, replace the other images of its batch, and its normalised output changes; in
# evaluation mode it does not. This is why a model with batch norm must be switched with
# `model.eval()` before it is evaluated (the book's `evaluate` does it).

# %%
bn = nn.BatchNorm2d(3)
one_image = torch.randn(1, 3, 8, 8)  # (1, C, H, W)
batch_a = torch.cat([one_image, torch.randn(7, 3, 8, 8)])  # (8, 3, 8, 8)
batch_b = torch.cat([one_image, 5 + torch.randn(7, 3, 8, 8)])  # other companions
with torch.no_grad():
    train_a, train_b = bn.train()(batch_a)[0], bn(batch_b)[0]
    eval_a, eval_b = bn.eval()(batch_a)[0], bn(batch_b)[0]
assert not torch.allclose(train_a, train_b)  # training mode: the companions matter
torch.testing.assert_close(eval_a, eval_b)  # evaluation mode: they do not
print(
    "training mode: output of image 0 changes with its companions, by up to",
    f"{(train_a - train_b).abs().max():.2f}; evaluation mode: unchanged",
)

# %% [markdown]
# **A batch of one.** One image still has $H W$ values per channel, enough for training-mode
# statistics (they are then the image's own, which removes each channel's mean brightness
# from every image). With one value per channel there is no variance to compute, and
# PyTorch refuses; evaluation mode has no such limit. The book's packaged version behaves the
# same.

# %%
single = torch.randn(1, 3, 1, 1)  # (1, C, 1, 1): one value per channel


def packaged_train_mode(x):
    return batch_norm2d(x, None, None, training=True)  # no running statistics


for name, fn in [
    ("nn.BatchNorm2d", nn.BatchNorm2d(3).train()),
    ("dlbook batch_norm2d", packaged_train_mode),
]:
    try:
        fn(single)
        raise AssertionError(f"{name} accepted one value per channel in training mode")
    except ValueError as err:
        print(f"{name}, training mode: ValueError: {err}")
print("evaluation mode:", tuple(nn.BatchNorm2d(3).eval()(single).shape))

# %% [markdown]
# **The running statistics lag behind.** Eq. {eq}`eq-ch03-bn-running` starts from mean 0 and
# variance 1 and moves a fraction $m$ of the way towards each batch's statistics. If the
# batches all have mean $\mu$, after $N$ steps the running mean is $(1 - (1-m)^N)\,\mu$ plus
# noise: with $m = 0.1$, {glue:text}`bn_cover_10:.0f` % of the way after 10 steps and
# {glue:text}`bn_cover_50:.1f` % after 50. Until it has caught up, evaluation mode normalises
# with the wrong statistics. We feed batches with channel means 3, -2 and 0 to a fresh layer
# and compare the running mean with that curve, and the evaluation-mode outputs with the
# training-mode ones.

# %%
torch.manual_seed(1)
bn = nn.BatchNorm2d(3)  # momentum 0.1
steps, track, eval_gap = 60, [], []
target = loc.flatten()  # the channels' true means: (3,)
with torch.no_grad():
    for _ in range(steps):
        x_bn = loc + scale * torch.randn(16, 3, 8, 8)  # (16, 3, 8, 8)
        y_train = bn.train()(x_bn)
        track.append(bn.running_mean.clone())
        eval_gap.append((bn.eval()(x_bn) - y_train).abs().mean().item())
track = torch.stack(track)  # (steps, 3)
covered = torch.tensor([1 - 0.9**n for n in range(1, steps + 1)])  # (steps,)
curve = covered.unsqueeze(1) * target  # (steps, 3): (1 - (1 - m)^N) mu
assert (track - curve).abs().max() < 0.1  # the noise of a batch mean
assert eval_gap[4] > 10 * eval_gap[-1]  # after 5 steps, evaluation mode is far off
dlbook.glue("bn_cover_10", 100 * (1 - 0.9**10))
dlbook.glue("bn_cover_50", 100 * (1 - 0.9**50))
dlbook.glue("bn_gap_5", eval_gap[4])
dlbook.glue("bn_gap_end", eval_gap[-1])

fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
for c in range(3):
    axes[0].plot(range(1, steps + 1), track[:, c], label=f"channel {c}: running mean")
    axes[0].plot(range(1, steps + 1), curve[:, c], "k:", lw=1)
axes[0].set_xlabel("training steps")
axes[0].set_title("Running mean (dotted: $(1 - 0.9^N)\\,\\mu$)")
axes[0].legend(fontsize=8)
axes[1].semilogy(range(1, steps + 1), eval_gap)
axes[1].set_xlabel("training steps")
axes[1].set_title("mean |eval-mode output - train-mode output|")
plt.tight_layout()
plt.show()

# %% [markdown]
# **Figure 3.8.** A `BatchNorm2d` layer in training mode on batches of three channels with known
# means. Left: each channel's running mean per step, with $(1 - 0.9^N)\,\mu$ dotted. Right: the
# mean absolute difference between the evaluation-mode and training-mode outputs (log scale).
#
# After 5 steps the evaluation-mode outputs differ from the training-mode ones by
# {glue:text}`bn_gap_5:.2f` on average; after 60 steps by {glue:text}`bn_gap_end:.3f`. Until
# the running statistics have caught up, the network that is evaluated computes a different
# function from the one that was trained.
#
# The book packages the layer as `dlbook.nn.conv.batch_norm2d`. It computes what
# `F.batch_norm` computes and takes its arguments in the same order, `(x, running_mean,
# running_var, weight, bias)`, and it updates the running statistics in place, as PyTorch
# does. It is stricter in three ways, each with a clear error: the mode must be named
# (`training=True` or `training=False`, where `F.batch_norm` quietly defaults to evaluation
# mode), the parameters and statistics must have the input's dtype, and the momentum must be a
# number. We check it against `nn.BatchNorm2d` in both modes, on float32 batches.

# %%
dlbook.show(batch_norm2d)

# %%
ref_bn = nn.BatchNorm2d(3)
run_mean, run_var = torch.zeros(3), torch.ones(3)
for mode in ("train", "eval"):
    ref_bn.train(mode == "train")
    for _ in range(3):
        x_bn = (loc + scale * torch.randn(4, 3, 5, 5)).requires_grad_()
        ours = batch_norm2d(
            x_bn,
            run_mean,
            run_var,
            ref_bn.weight,
            ref_bn.bias,
            training=mode == "train",
        )
        ref = ref_bn(x_bn)
        torch.testing.assert_close(ours, ref)
        torch.testing.assert_close(run_mean, ref_bn.running_mean)
        torch.testing.assert_close(run_var, ref_bn.running_var)
        g_out = torch.randn_like(ref)
        g_ours = torch.autograd.grad(ours, x_bn, g_out, retain_graph=True)
        torch.testing.assert_close(g_ours, torch.autograd.grad(ref, x_bn, g_out))
print(
    "batch_norm2d == nn.BatchNorm2d: outputs, input gradients, running statistics, "
    "both modes"
)

# %% [markdown]
# ## 3.11 Residual blocks
#
# Stacking more convolution layers should never hurt in principle: the extra layers could
# learn to pass their input through unchanged. He et al. found that in practice deeper plain
# networks trained *worse*, even on their training data, and proposed letting each block learn
# only a correction to its input {cite}`he2016deep`. A **residual block** adds its input back
# to its output through a **shortcut**:
#
# $$
# \mathbf{y} = \operatorname{ReLU}\big(\mathcal F(\mathbf x) + S(\mathbf x)\big), \qquad
# \mathcal F(\mathbf x) = \operatorname{BN}\big(W_2 * \operatorname{ReLU}(\operatorname{BN}(W_1 * \mathbf x))\big),
# $$ (eq-ch03-residual)
#
# with two 3 x 3 convolutions $W_1, W_2$ (padding 1, so the size is kept) and batch norms.
# The shortcut $S$ is the identity when input and output have the same shape. When the block
# changes the shape, its first convolution has stride 2 or more output channels, and $S$
# becomes a *projection*: a 1 x 1 convolution with the same stride, followed by batch norm.
# Convolutions followed by batch norm carry no bias: the norm subtracts the channel's mean,
# which would remove it.
# Here is Eq. {eq}`eq-ch03-residual` as a module.


# %%
class Residual(nn.Module):
    """Eq. (eq-ch03-residual): (B, c_in, H, W) -> (B, c_out, ceil(H/s), ceil(W/s))."""

    def __init__(self, c_in, c_out, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:  # shapes differ: project
            project = nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)
            self.shortcut = nn.Sequential(project, nn.BatchNorm2d(c_out))

    def forward(self, x):
        f = F.relu(self.bn1(self.conv1(x)))  # (B, c_out, H', W')
        f = self.bn2(self.conv2(f))  # F(x): (B, c_out, H', W')
        return F.relu(f + self.shortcut(x))


x_res = torch.randn(4, 16, 14, 14)  # (B, C, H, W)
for c_in, c_out, stride in [(16, 16, 1), (16, 32, 2)]:
    ours_block = Residual(c_in, c_out, stride)
    packaged = ResidualBlock(c_in, c_out, stride)  # dlbook.models, the same layout
    packaged.load_state_dict(ours_block.state_dict())
    for mode in (True, False):  # training mode (batch statistics) and evaluation mode
        ours_block.train(mode)
        packaged.train(mode)
        torch.testing.assert_close(ours_block(x_res), packaged(x_res))
    out_shape = tuple(ours_block(x_res).shape)
    kind = type(ours_block.shortcut).__name__
    print(
        f"Residual({c_in}, {c_out}, stride={stride}): {tuple(x_res.shape)} -> "
        f"{out_shape}, shortcut {kind}; == dlbook.models.ResidualBlock"
    )

# %% [markdown]
# The packaged `dlbook.models.ResidualBlock` has the same parameters (the cell above loaded
# one's weights into the other and compared outputs in both modes), plus two switches for the
# experiment below: `shortcut=False` removes $S$, leaving a plain block, and
# `batch_norm=False` replaces the batch norms by identities.

# %%
dlbook.show(ResidualBlock)

# %% [markdown]
# ### How much gradient reaches the first layers?
#
# Why does the shortcut help? Back-propagation multiplies the gradient by each block's
# Jacobian on the way down. For a plain block that Jacobian is
# $\partial \mathcal F / \partial \mathbf x$ (times the ReLU's 0/1 mask), and a product of
# {glue:text}`res_depth` such factors can shrink or grow exponentially with depth. With the
# shortcut it is the mask times $I + \partial \mathcal F / \partial \mathbf x$: the identity
# term gives the gradient a path down that no weight multiplies.
#
# How large those factors are depends on the initial weights. PyTorch's default for
# `nn.Conv2d` draws every weight and bias uniformly from
# $\pm 1/\sqrt{n_{\text{in}}}$, where the fan-in $n_{\text{in}} = C_{\text{in}} k_h k_w$ is the
# number of inputs of one output: a weight variance of $1/(3 n_{\text{in}})$. He et al.
# derived the variance $2/n_{\text{in}}$ (with zero biases) as the one that keeps the size of
# the signal from layer to layer in a deep ReLU network {cite}`he2015delving`. We check both
# variances on a layer with 64 input channels.

# %%
fan_in = 64 * 3 * 3  # C_in * kh * kw
default_conv = nn.Conv2d(64, 64, 3)  # PyTorch's default initialisation
bound = fan_in**-0.5
assert default_conv.weight.abs().max() <= bound
assert default_conv.bias.abs().max() <= bound
default_var = default_conv.weight.var().item() * fan_in  # variance x fan-in: about 1/3
he_weight = nn.init.kaiming_normal_(torch.empty(64, 64, 3, 3), nonlinearity="relu")
he_var = he_weight.var().item() * fan_in  # about 2
assert abs(default_var - 1 / 3) < 0.01 and abs(he_var - 2) < 0.06
dlbook.glue("default_var", default_var)
dlbook.glue("he_var_ratio", he_var / default_var)
print(
    f"weight variance x fan-in: default {default_var:.3f}, He {he_var:.3f} "
    f"({he_var / default_var:.1f} times larger)"
)

# %% [markdown]
# The default's weight variance is {glue:text}`default_var:.3f` / $n_{\text{in}}$, about
# {glue:text}`he_var_ratio:.1f` times smaller than He's. We measure what reaches the first
# blocks. A stem convolution (stride 2, 16 channels) and {glue:text}`res_depth` blocks of 16
# channels on 14 x 14 maps, then global average pooling and a linear classifier; one batch of
# 64 training digits, the cross-entropy loss, one backward pass at initialisation. For each
# block we record the norm of the gradient on its first convolution's weights. Four variants,
# with and without the shortcut, with and without batch norm; each from PyTorch's default
# initialisation and from He's (every convolution, biases 0), for
# {glue:text}`res_n_seeds` seeds.


# %%
def deep_stack(depth, shortcut, batch_norm, seed, init="default"):
    """Stem, `depth` ResidualBlocks(16, 16), pool, linear: (B, 1, 28, 28) -> (B, 10)."""
    torch.manual_seed(seed)
    blocks = [
        ResidualBlock(16, 16, shortcut=shortcut, batch_norm=batch_norm)
        for _ in range(depth)
    ]
    model = nn.Sequential(
        nn.Conv2d(1, 16, 3, stride=2, padding=1),
        nn.ReLU(),  # (B, 16, 14, 14)
        *blocks,  # (B, 16, 14, 14)
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),  # (B, 10)
    )
    if init == "he":  # weight variance 2 / fan-in, biases 0
        for conv in (m for m in model.modules() if isinstance(m, nn.Conv2d)):
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)
    return model.to(device)


def block_gradients(model, images, labels):
    """Gradient norm of each block's first convolution after one backward pass."""
    F.cross_entropy(model(images), labels).backward()
    blocks = [m for m in model if isinstance(m, ResidualBlock)]
    return torch.stack([blk.conv1.weight.grad.norm() for blk in blocks]).cpu()


images = standardise(x_fit[:64]).to(device)  # (64, 1, 28, 28)
labels = y_fit[:64].to(device)  # (64,)
inits = ("default", "he")
for bn_on, init in [(bn_on, init) for bn_on in (True, False) for init in inits]:
    # one seed and initialisation: the same weights with and without the shortcut
    with_s, without_s = (
        deep_stack(2, s, bn_on, seed=0, init=init).state_dict() for s in (True, False)
    )
    assert with_s.keys() == without_s.keys()
    assert all(torch.equal(with_s[k], without_s[k]) for k in with_s)
variants = {
    (s, bn): f"{'shortcut' if s else 'plain'}, {'with' if bn else 'no'} BN"
    for s in (True, False)
    for bn in (True, False)
}
grads = {}  # (seeds, depth) per (shortcut, batch norm, init)
for (s, bn), init in [(key, init) for key in variants for init in inits]:
    stacks_ = [
        deep_stack(sizes["res_depth"], s, bn, seed, init)
        for seed in range(sizes["res_seeds"])
    ]
    grads[s, bn, init] = torch.stack(
        [block_gradients(m, images, labels) for m in stacks_]
    )
ratio = {key: g[:, 0] / g[:, -1] for key, g in grads.items()}  # first / last, per seed
for (s, bn, init), r in ratio.items():
    print(
        f"{variants[s, bn]:18s} {init:8s} init, first / last block gradient: "
        + ", ".join(f"{v:.2g}" for v in r.tolist())
    )
dlbook.glue("res_depth", sizes["res_depth"])
dlbook.glue("res_n_seeds", sizes["res_seeds"])

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
depth = sizes["res_depth"]
for ax, init in zip(axes, inits, strict=True):
    for key, name in variants.items():
        ax.semilogy(
            range(1, depth + 1), grads[(*key, init)][0], marker="o", ms=3, label=name
        )
    ax.set_xlabel("block (1 = nearest the input)")
    ax.set_title(f"{'PyTorch default' if init == 'default' else 'He'} initialisation")
axes[0].set_ylabel("gradient norm of the block's conv1")
axes[1].legend(fontsize=8)
fig.suptitle(f"Gradient per block at initialisation ({depth} blocks, seed 0)")
plt.tight_layout()
plt.show()

# %% [markdown]
# **Figure 3.9.** Gradient norm of each residual block's first convolution at initialisation
# (log scale, seed 0), with and without the shortcut and batch normalisation, under PyTorch's
# default initialisation (left) and He's (right).
#
# The numbers, over all seeds (first block's gradient norm divided by the last block's):

# %%
spread = {key: (r.min().item(), r.max().item()) for key, r in ratio.items()}
for (with_shortcut, with_bn, init), (low, high) in spread.items():
    tag = f"{int(with_shortcut)}{int(with_bn)}"  # e.g. "10": shortcut, no batch norm
    text = f"{low:.3g}" if low == high else f"{low:.3g} to {high:.3g}"
    prefix = "res_range" if init == "default" else "res_he_range"
    dlbook.glue(f"{prefix}_{tag}", text)
# With the shortcut the first block's gradient is within a factor 15 of the last one's.
for bn_on, init in [(bn_on, init) for bn_on in (True, False) for init in inits]:
    assert all(1 / 15 < r < 15 for r in spread[True, bn_on, init])
assert spread[False, False, "default"][1] < 1e-6  # plain, no BN, default init: vanishes
assert all(1 / 15 < r < 15 for r in spread[False, False, "he"])  # He init: it does not
assert spread[False, True, "default"][0] > 30  # plain, BN: explodes ...
assert spread[False, True, "he"][0] > 30  # ... from either initialisation
pd.DataFrame(
    {
        name: {
            f"{init} init, {end}": spread[(*key, init)][i]
            for init in inits
            for i, end in enumerate(("smallest", "largest"))
        }
        for key, name in variants.items()
    }
).T.style.format("{:.3g}").set_caption(
    "First block / last block gradient norm at initialisation"
)

# %% [markdown]
# From PyTorch's default initialisation, with the shortcut, the first of
# {glue:text}`res_depth` blocks receives a gradient within a factor of 15 of the last block's,
# with batch norm (ratio {glue:text}`res_range_11`) and without it
# ({glue:text}`res_range_10`). Without the shortcut the gradient at the first block is off by
# orders of magnitude, in opposite directions: with no normalisation it all but vanishes
# (ratio {glue:text}`res_range_00`), and with batch norm it *explodes* (ratio
# {glue:text}`res_range_01`). For a given seed and initialisation the plain and the residual
# stack start from the same weights, so the shortcut alone makes this difference.
#
# The vanishing is the default initialisation's doing, not depth's alone. From He's
# initialisation the plain stack without normalisation keeps its gradient (ratio
# {glue:text}`res_he_range_00`), like the residual stack without normalisation (ratio
# {glue:text}`res_he_range_10`). The
# explosion with batch norm stays (ratio {glue:text}`res_he_range_01`, against
# {glue:text}`res_he_range_11` with the shortcut). It is not a quirk of this network:
# mean-field theory predicts that batch norm by itself makes the gradient of a deep fully
# connected network grow exponentially with depth at initialisation {cite}`yang2019mean`.
#
# All of this is measured at initialisation. He et al. trained their plain networks with batch
# norm and report that the gradients kept healthy norms; they argue that the degradation of
# deep plain networks is an optimisation difficulty that is unlikely to be caused by
# vanishing gradients {cite}`he2016deep`.
#
# ## Summary
#
# - What deep-learning libraries call convolution is cross-correlation,
#   Eq. {eq}`eq-ch03-conv`; we computed it with loops and with im2col and matched `F.conv2d`
#   with stride, padding, dilation, several channels and groups. In float32 each route, the
#   Fourier one included, rounds differently: any change in the order of the arithmetic
#   changes the last digits.
# - Output sizes follow Eq. {eq}`eq-ch03-outsize` (checked in {glue:text}`n_shape_checks`
#   configurations), parameter counts Eq. {eq}`eq-ch03-params`: independent of the image size.
# - Pooling, Eq. {eq}`eq-ch03-pool`, shrinks height and width, keeps the channel count, and has
#   no parameters.
# - The receptive field grows by $(k-1)\,d$ jumps per layer, Eq. {eq}`eq-ch03-rf`; the LeNet
#   stack sees {glue:text}`lenet_rf` x {glue:text}`lenet_rf` pixels, and after 16 layers of
#   3 x 3 the effective width (twice the standard deviation of the gradient profile) is
#   {glue:text}`erf_ratio_16:.2f` of the field.
# - On MNIST-5k a LeNet-style CNN reached {glue:text}`cnn_test_acc` held-out accuracy against
#   {glue:text}`mlp_test_acc:.3f` for an MLP with the same parameter budget
#   (trained again from other seeds, {glue:text}`cnn_mlp_seeds`), and was more accurate on
#   digits moved by 3 pixels, although neither was trained on moved digits.
# - Training on randomly rotated and moved digits, judged on validation over
#   {glue:text}`n_seeds` seeds: on digits moved 3 pixels, {glue:text}`aug_shifted_short`;
#   on digits as they are, {glue:text}`aug_clean_short`.
# - Batch normalisation, Eqs. {eq}`eq-ch03-bn` to {eq}`eq-ch03-bn-grad`, normalises with the
#   batch's statistics in training mode and with running averages in evaluation mode; the two
#   modes are different functions, and the running averages lag behind.
# - At initialisation, a residual block's shortcut, Eq. {eq}`eq-ch03-residual`, kept the
#   gradient of the first of {glue:text}`res_depth` blocks within a factor of 15 of the last
#   one's. A plain stack let it explode with batch norm, from both initialisations;
#   without normalisation it let it vanish from PyTorch's default initialisation, but not from
#   He's.
#
# ## Exercises
#
# :::{exercise}
# :label: ch03-ex-shapes
# A 64 x 64 colour image goes through `Conv2d(3, 32, 5, stride=2, padding=2)`, then
# `MaxPool2d(3, stride=2)`, then `Conv2d(32, 64, 3, padding=2, dilation=2, groups=4)`. Give the
# shape after each layer and the parameter count of each layer, by hand, then check with PyTorch.
# :::
#
# :::{solution} ch03-ex-shapes
# :class: dropdown
# Eq. {eq}`eq-ch03-outsize`: $\lfloor (64 + 4 - 4 - 1)/2 \rfloor + 1 = 32$, so (32, 32, 32); the
# pool gives $\lfloor (32 - 2 - 1)/2 \rfloor + 1 = 15$, so (32, 15, 15) with the channels kept;
# the dilated convolution gives $\lfloor (15 + 4 - 4 - 1)/1 \rfloor + 1 = 15$, so (64, 15, 15)
# (padding $d(k-1)/2 = 2$ keeps the size). Eq. {eq}`eq-ch03-params`: $32 \cdot 3 \cdot 25 + 32 =
# 2{,}432$; the pool has none; $64 \cdot (32/4) \cdot 9 + 64 = 4{,}672$. Check with
# `nn.Sequential(...)(torch.zeros(1, 3, 64, 64)).shape` and `count_parameters` on each layer.
# :::
#
# :::{exercise}
# :label: ch03-ex-pool-channels
# A colleague writes "the max-pooling layer reduces our 64 channels to 32". What is wrong with the
# sentence, what does the pooling layer actually do to a (B, 64, 32, 32) tensor, and which layer
# would reduce 64 channels to 32? How many parameters would it have?
# :::
#
# :::{solution} ch03-ex-pool-channels
# :class: dropdown
# Pooling works on each channel separately (Eq. {eq}`eq-ch03-pool`: output channel $c$ reads
# only input channel $c$), so `MaxPool2d(2)` turns (B, 64, 32, 32) into (B, 64, 16, 16); it has
# no parameters. Reducing channels takes a layer that mixes them; the usual choice is a 1 x 1
# convolution, `Conv2d(64, 32, 1)`, with $32 \cdot 64 + 32 = 2{,}080$ parameters.
# :::
#
# :::{exercise}
# :label: ch03-ex-conv1d
# Audio and text use one-dimensional convolutions. Write `my_conv1d(x, weight, stride, dilation)`
# for `x` of shape (batch, in_channels, length) and `weight` of shape (out_channels, in_channels,
# k), no padding and no bias, following Eq. {eq}`eq-ch03-conv` with one spatial index. The check
# compares it with `F.conv1d` on hidden cases with several channels, strides, dilations and a
# non-symmetric kernel.
# :::


# %%
def my_conv1d(x, weight, stride, dilation):
    raise NotImplementedError  # your code here


dlbook.exercises.check("ch03.conv1d", my_conv1d)

# %% [markdown]
# ```{solution-start} ch03-ex-conv1d
# :class: dropdown
# ```


# %% tags=["solution"]
def conv1d_solution(x, weight, stride, dilation):
    length, k = x.shape[-1], weight.shape[-1]
    n_out = (
        length - dilation * (k - 1) - 1
    ) // stride + 1  # Eq. (eq-ch03-outsize) with p = 0
    span = dilation * (k - 1) + 1
    # windows[b, c, i, u] = x[b, c, i * stride + u * dilation]
    windows = x.unfold(dimension=2, size=span, step=stride)[
        ..., ::dilation
    ]  # (B, C_in, n_out, k)
    assert windows.shape[2] == n_out
    return torch.einsum("bciu,ocu->boi", windows, weight)  # (B, C_out, n_out)


assert dlbook.exercises.check("ch03.conv1d", conv1d_solution)

# %% [markdown]
# ```{solution-end}
# ```
#
# :::{exercise}
# :label: ch03-ex-erf
# An experiment. Generalise the effective-receptive-field probe of this chapter to any kernel
# size: write `effective_width(n_layers, kernel_size)` that stacks `n_layers` averaging
# convolutions of size `kernel_size` x `kernel_size`, back-propagates from the centre output,
# and returns the standard deviation (in pixels) of the gradient profile along one axis. The
# check compares your measurement with the exact answer on hidden depths and kernel sizes,
# even ones. Then explain the number you get: what is the variance of one layer's profile?
# :::


# %%
def effective_width(n_layers, kernel_size):
    raise NotImplementedError  # your code here


dlbook.exercises.check("ch03.effective_width", effective_width)

# %% [markdown]
# ```{solution-start} ch03-ex-erf
# :class: dropdown
# ```
#
# One layer's profile is the box $(\tfrac1k, \ldots, \tfrac1k)$, a uniform distribution on $k$
# consecutive pixels with variance $(k^2 - 1)/12$; stacking layers convolves the profiles, and
# variances of convolved distributions add, so the standard deviation is
# $\sqrt{n (k^2 - 1)/12}$ ($\sqrt{2n/3}$ for $k = 3$). The measurement:


# %% tags=["solution"]
def effective_width_solution(n_layers, kernel_size):
    size = n_layers * (kernel_size - 1) + 5  # room for the whole receptive field
    k = kernel_size
    box = torch.full((1, 1, k, k), 1.0 / k**2, dtype=torch.float64)  # averages k x k
    x = torch.zeros(1, 1, size, size, dtype=torch.float64, requires_grad=True)
    y = x
    for _ in range(n_layers):
        y = F.conv2d(y, box)  # (1, 1, shrinking, shrinking)
    y[0, 0, y.shape[2] // 2, y.shape[3] // 2].backward()
    profile_rows = x.grad[0, 0].sum(dim=1)  # (size,)
    profile_rows = profile_rows / profile_rows.sum()
    pos = torch.arange(size, dtype=torch.float64)
    centre = (pos * profile_rows).sum()
    return ((pos - centre) ** 2 * profile_rows).sum().sqrt().item()


assert dlbook.exercises.check("ch03.effective_width", effective_width_solution)

# %% [markdown]
# ```{solution-end}
# ```
#
# :::{exercise}
# :label: ch03-ex-running
# Batch norm's memory. Write `running_stats(batches, momentum)`: given a list of
# (B, C, H, W) batches, return the `(running_mean, running_var)` that a fresh
# `nn.BatchNorm2d(C, momentum=momentum)` holds after a training-mode forward pass over each
# batch in turn, computed from Eq. {eq}`eq-ch03-bn-running`, without `nn.BatchNorm2d`. The
# hidden cases include batches with two values per channel, where dividing by $n$ instead of
# $n - 1$ halves each batch's contribution to the running variance, and momentum 1.
# :::


# %%
def running_stats(batches, momentum):
    raise NotImplementedError  # your code here


dlbook.exercises.check("ch03.running_stats", running_stats)

# %% [markdown]
# ```{solution-start} ch03-ex-running
# :class: dropdown
# ```


# %% tags=["solution"]
def running_stats_solution(batches, momentum):
    channels = batches[0].shape[1]
    run_mean, run_var = torch.zeros(channels), torch.ones(channels)  # PyTorch's start
    for xb in batches:
        mu = xb.mean(dim=(0, 2, 3))  # (C,)
        var = xb.var(dim=(0, 2, 3), correction=1)  # (C,) unbiased, divides by n - 1
        run_mean = (1 - momentum) * run_mean + momentum * mu
        run_var = (1 - momentum) * run_var + momentum * var
    return run_mean, run_var


assert dlbook.exercises.check("ch03.running_stats", running_stats_solution)

# %% [markdown]
# ```{solution-end}
# ```
#
# :::{exercise}
# :label: ch03-ex-fold
# In evaluation mode a batch norm is a fixed affine map per channel, so it can be folded into
# the convolution before it: one convolution with new weights and bias computes
# `bn(conv(x))`, and inference skips a layer. Write
# `fold_batchnorm(weight, bias, bn_weight, bn_bias, running_mean, running_var, eps)` returning
# the new `(weight, bias)`; `bias` may be `None` (as before a batch norm). Then fold both batch
# norms of an evaluation-mode `ResidualBlock` into its convolutions and check that its output
# does not change.
# :::


# %%
def fold_batchnorm(weight, bias, bn_weight, bn_bias, running_mean, running_var, eps):
    raise NotImplementedError  # your code here


dlbook.exercises.check("ch03.fold_batchnorm", fold_batchnorm)

# %% [markdown]
# ```{solution-start} ch03-ex-fold
# :class: dropdown
# ```
#
# With $s_c = \gamma_c / \sqrt{\hat\sigma^2_c + \epsilon}$, the batch norm computes
# $s_c (z - \hat\mu_c) + \beta_c$ on the convolution's output $z = W * x + b$. So the new
# weights are $s_c W_{c,\cdot}$ (each output channel's kernel scaled) and the new bias is
# $s_c (b_c - \hat\mu_c) + \beta_c$.


# %% tags=["solution"]
def fold_batchnorm_solution(
    weight, bias, bn_weight, bn_bias, running_mean, running_var, eps
):
    scale = bn_weight / torch.sqrt(running_var + eps)  # (C_out,)
    bias = torch.zeros_like(running_mean) if bias is None else bias
    return weight * scale.view(-1, 1, 1, 1), (bias - running_mean) * scale + bn_bias


assert dlbook.exercises.check("ch03.fold_batchnorm", fold_batchnorm_solution)

torch.manual_seed(0)
block = ResidualBlock(8, 8).eval()
for bn_layer in (block.bn1, block.bn2):  # as if trained: non-trivial statistics
    bn_layer.running_mean.uniform_(-1, 1)
    bn_layer.running_var.uniform_(0.5, 2.0)


def fold_layer(conv, bn):
    return fold_batchnorm_solution(
        conv.weight,
        conv.bias,
        bn.weight,
        bn.bias,
        bn.running_mean,
        bn.running_var,
        bn.eps,
    )


x_fold = torch.randn(2, 8, 6, 6)  # (B, C, H, W)
with torch.no_grad():
    w1, b1 = fold_layer(block.conv1, block.bn1)
    w2, b2 = fold_layer(block.conv2, block.bn2)
    hidden = F.relu(F.conv2d(x_fold, w1, b1, padding=1))  # (2, 8, 6, 6)
    folded = F.relu(F.conv2d(hidden, w2, b2, padding=1) + x_fold)  # identity shortcut
    torch.testing.assert_close(folded, block(x_fold))
print("the folded block (two convolutions, no batch norm) == the evaluation-mode block")

# %% [markdown]
# ```{solution-end}
# ```
#
# ## Further reading
#
# - LeNet-5 and the case for convolutional networks on handwriting, with weight sharing and
#   subsampling motivated from first principles: {cite}`lecun1998gradient`.
# - Every output-size and padding rule of convolutions, pooling and transposed convolutions, with
#   pictures: {cite}`dumoulin2016guide`.
# - Why the effective receptive field is much smaller than the theoretical one and grows like
#   the square root of depth: {cite}`luo2016effective`.
# - How convolution libraries organise the computation (im2col tiled on chip), and the fast
#   algorithms with different arithmetic: {cite}`chetlur2014cudnn`, {cite}`mathieu2014fast`,
#   {cite}`lavin2016fast`.
# - Batch normalisation as proposed, with its motivation: {cite}`ioffe2015batch`; why, at
#   initialisation, it alone makes the gradients of deep fully connected networks explode:
#   {cite}`yang2019mean`.
# - Initialisation that keeps the signal's size through deep ReLU networks:
#   {cite}`he2015delving`.
# - Residual learning and the degradation of deep plain networks: {cite}`he2016deep`.
# - Augmenting handwritten digits with affine and elastic distortions: {cite}`simard2003best`.
