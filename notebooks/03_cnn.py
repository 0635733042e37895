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
# The multi-layer perceptron of chapter 2 treats an image as a list of 784 unrelated numbers: it
# would learn just as well if every image had its pixels shuffled by one fixed permutation. A
# convolutional network builds in what we know about images instead: nearby pixels belong
# together, and a stroke means the same thing wherever it appears. This chapter builds the
# convolution layer from its index formula, makes it fast, checks every step against PyTorch, and
# then trains a small LeNet-style network on real handwritten digits.
#
# By the end of this chapter you can
#
# 1. compute a convolution layer's output from its index formula and as one matrix product
#    (im2col), and match `F.conv2d` with stride, padding, dilation, several channels and groups;
# 2. predict the output shape and the parameter count of convolution and pooling layers;
# 3. say what pooling does to a tensor (height and width shrink, the channel count stays) and how
#    far one output of a stack of layers can see (its receptive field);
# 4. train a LeNet-style CNN on MNIST-5k and compare it with an MLP of the same size;
# 5. look inside the trained network: its filters, its feature maps and its mistakes.

# %%
# In Colab, install the book's helpers and offline assets first (nothing happens elsewhere).
import sys

if "google.colab" in sys.modules:
    import subprocess

    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "dlbook[assets] @ git+https://github.com/dlbook-verified/deep-learning-verified"], check=True)
    subprocess.run([sys.executable, "-m", "dlbook.colab"], check=True)

# %%
import os

import matplotlib.pyplot as plt
import scipy.signal
import torch
import torch.nn.functional as F
from torch import nn

import dlbook
from dlbook import assets
from dlbook.models import MLP
from dlbook.nn.conv import conv2d_im2col, conv_output_size, receptive_field
from dlbook.train import count_parameters, evaluate, fit, make_loader

device = dlbook.setup(seed=0)

# %% tags=["parameters"]
profile = os.environ.get("DLBOOK_PROFILE", "full")

# %%
sizes = dlbook.by_profile(
    profile,
    smoke=dict(n_train=600, n_val=200, epochs=1, batch_size=64),
    full=dict(n_train=3_600, n_val=400, epochs=15, batch_size=64),
)
sizes

# %% [markdown]
# ## One small detector, slid everywhere
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
moved = torch.roll(image, shifts=(shift, shift), dims=(2, 3))  # the same image, 3 pixels down and right

out = F.conv2d(image, kernel)  # (1, 1, 16, 16)
out_moved = F.conv2d(moved, kernel)  # (1, 1, 16, 16)
# Away from the wrapped-around border, the feature map moved by exactly the same 3 pixels.
torch.testing.assert_close(out_moved[..., shift:, shift:], out[..., :-shift, :-shift])
print("shift the input by 3 pixels -> the feature map shifts by 3 pixels:", tuple(out.shape))

# %% [markdown]
# ## Cross-correlation from its index formula
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
    """Eq. (eq-ch03-xcorr1) as written: x (H, W), k (kh, kw) -> (H - kh + 1, W - kw + 1)."""
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
true_conv = torch.from_numpy(scipy.signal.convolve2d(x1.numpy(), k1.numpy(), mode="valid"))
torch.testing.assert_close(xcorr2d(x1, k1.flip(0, 1)), true_conv)
print("loops == F.conv2d; convolve2d == loops with a flipped kernel; output", tuple(ours.shape))

# %% [markdown]
# ### The full layer: batch, channels, stride, padding, dilation, groups
#
# A real layer takes a batch of $B$ images with $C_{\text{in}}$ channels (1 for grey, 3 for
# colour, or the feature maps of the layer below) and produces $C_{\text{out}}$ feature maps.
# Four knobs change where the kernel looks:
#
# - **padding** $p$: surround the input with $p$ rows and columns of zeros ($\tilde X$ below), so
#   the border pixels get visited as often as the centre ones;
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
# The weight tensor has shape $(C_{\text{out}}, C_g, k_h, k_w)$, which is exactly the layout of
# `nn.Conv2d.weight`. Here is Eq. {eq}`eq-ch03-conv` with one loop per index.

# %%
def conv2d_loops(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """Eq. (eq-ch03-conv), one loop per index: x (B, C_in, H, W), weight (C_out, C_in/G, kh, kw)."""
    B, C_in, H, W = x.shape
    C_out, C_g, kh, kw = weight.shape  # C_g = C_in / groups
    H_out = (H + 2 * padding - dilation * (kh - 1) - 1) // stride + 1
    W_out = (W + 2 * padding - dilation * (kw - 1) - 1) // stride + 1
    x_pad = F.pad(x, (padding, padding, padding, padding))  # (B, C_in, H + 2p, W + 2p), zeros around
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
                                total = total + weight[o, c, u, v] * x_pad[b, g * C_g + c, i * stride + u * dilation,
                                                                           j * stride + v * dilation]
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


def make_layer_inputs(c_in, c_out, k, stride=1, padding=0, dilation=1, groups=1, seed=0):
    """Random x (2, c_in, 7, 8), weight, bias, and the keyword arguments of F.conv2d."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, c_in, 7, 8, generator=gen)  # (B, C_in, H, W)
    w = torch.randn(c_out, c_in // groups, k, k, generator=gen)  # (C_out, C_in / G, k, k)
    b = torch.randn(c_out, generator=gen)  # (C_out,)
    return x, w, b, dict(stride=stride, padding=padding, dilation=dilation, groups=groups)


for cfg in layer_configs:
    x, w, b, kw = make_layer_inputs(**cfg)
    ours, ref = conv2d_loops(x, w, b, **kw), F.conv2d(x, w, b, **kw)
    torch.testing.assert_close(ours, ref)
    print(f"{str(cfg):72s} -> {tuple(ref.shape)}  max |diff| = {(ours - ref).abs().max():.1e}")

# %% [markdown]
# ## How big is the output?
#
# Along one axis the padded input has $H + 2p$ pixels, and a dilated kernel covers
# $d(k-1)+1$ of them. The kernel's first tap can sit at positions $0, s, 2s, \ldots$ as long as
# the whole kernel still fits, which gives
#
# $$
# H_{\text{out}} = \left\lfloor \frac{H + 2p - d(k-1) - 1}{s} \right\rfloor + 1 .
# $$ (eq-ch03-outsize)
#
# The same rule holds for pooling windows (next section). Two consequences worth remembering:
# a $k \times k$ kernel with stride 1 keeps the size when $p = d(k-1)/2$, and a stride of 2
# roughly halves it. We check Eq. {eq}`eq-ch03-outsize` against the shape `F.conv2d` actually
# returns, for every combination in a grid of sizes, kernels, strides, paddings and dilations.

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
                    if d * (k - 1) + 1 > H + 2 * p:  # the kernel does not fit: PyTorch raises an error
                        continue
                    shape = F.conv2d(torch.zeros(1, 1, H, H + 3), torch.zeros(1, 1, k, k), stride=s, padding=p, dilation=d).shape
                    assert shape[-2:] == (out_size(H, k, s, p, d), out_size(H + 3, k, s, p, d)), (H, k, s, p, d)
                    assert conv_output_size(H, k, s, p, d) == out_size(H, k, s, p, d)  # the packaged version
                    n_checked += 1
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
for c_in, c_out, k, groups in [(1, 6, 5, 1), (6, 16, 5, 1), (64, 128, 3, 1), (64, 128, 3, 4), (64, 64, 3, 64)]:
    layer = nn.Conv2d(c_in, c_out, k, groups=groups)
    formula = c_out * (c_in // groups) * k * k + c_out
    assert count_parameters(layer) == formula
    print(f"Conv2d({c_in:2d}, {c_out:3d}, {k}, groups={groups:2d}): {formula:7,d} parameters (formula = count)")

# %% [markdown]
# ## Fast convolution: im2col
#
# The loops are correct and hopelessly slow. The standard trick, **im2col** ("image to
# columns"), copies every patch the kernel visits into one column of a matrix. For $C_{\text{in}}$
# channels and a $k_h \times k_w$ kernel a patch has $C_{\text{in}} k_h k_w$ numbers, and there
# are $L = H_{\text{out}} W_{\text{out}}$ patches, so the matrix is $(C_{\text{in}} k_h k_w)
# \times L$. Then Eq. {eq}`eq-ch03-conv` becomes one matrix product: the weights reshaped to
# $C_{\text{out}} \times C_{\text{in}} k_h k_w$, times the columns. `F.unfold` does the copying;
# first we check that its columns really are the patches.

# %%
x, w, b, kw = make_layer_inputs(c_in=3, c_out=4, k=3, stride=2, padding=1)
H_out, W_out = conv_output_size(7, 3, 2, 1), conv_output_size(8, 3, 2, 1)
cols = F.unfold(x, kernel_size=3, padding=1, stride=2)  # (B, C_in * k * k, L) = (2, 27, 16)
print("x", tuple(x.shape), "-> columns", tuple(cols.shape), f"(L = {H_out} x {W_out})")

x_pad = F.pad(x, (1, 1, 1, 1))  # (2, 3, 9, 10)
for i, j in [(0, 0), (1, 2), (H_out - 1, W_out - 1)]:
    patch = x_pad[:, :, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3]  # (B, C_in, 3, 3): the window of output (i, j)
    torch.testing.assert_close(cols[:, :, i * W_out + j], patch.reshape(2, -1))
print("column i * W_out + j of the unfolded input is the patch under output position (i, j)")

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
# The price of im2col is memory: every input pixel is copied once for each kernel position that
# covers it. For the first layer of the network we train below (5 x 5 kernels, stride 1, padding
# 2 on a 28 x 28 digit) the column matrix is {glue:text}`im2col_blowup:.0f` times larger than
# the image. Libraries therefore avoid building it in full: cuDNN and oneDNN tile it, or use
# other algorithms (FFT, Winograd) for some kernel sizes, but the arithmetic is the one above.

# %%
digit_shape = (1, 1, 28, 28)
blowup = F.unfold(torch.zeros(digit_shape), kernel_size=5, padding=2).numel() / torch.zeros(digit_shape).numel()
dlbook.glue("im2col_blowup", blowup)
print(f"im2col of a 28 x 28 image with a 5 x 5 kernel: {blowup:.0f} times the input's size")

# %% [markdown]
# ## Pooling shrinks height and width, and keeps the channels
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
# with the stride $s$ equal to $k$ by default and the output size given by
# Eq. {eq}`eq-ch03-outsize`. Look at the indices: channel $c$ of the output reads only channel
# $c$ of the input. Pooling works on every channel separately, so **it never changes the number
# of channels**: a (B, 6, 28, 28) tensor becomes (B, 6, 14, 14). (A common mistake is to think
# pooling merges channels; only a convolution, e.g. a 1 x 1 one, changes the channel count.)
# Pooling also has no parameters. Max pooling pads with $-\infty$, so padding never wins a
# maximum; average pooling pads with zeros that count in the mean, PyTorch's default.
#
# We implement both with `F.unfold`, treating each channel as its own one-channel image.

# %%
def pool2d(x, k, stride=None, padding=0, mode="max"):
    """Eq. (eq-ch03-pool): x (B, C, H, W) -> (B, C, H_out, W_out), each channel on its own."""
    stride = k if stride is None else stride
    B, C, H, W = x.shape
    fill = float("-inf") if mode == "max" else 0.0
    x_pad = F.pad(x, (padding,) * 4, value=fill)  # (B, C, H + 2p, W + 2p)
    per_channel = x_pad.reshape(B * C, 1, H + 2 * padding, W + 2 * padding)  # every channel a separate image
    windows = F.unfold(per_channel, k, stride=stride)  # (B * C, k * k, L)
    pooled = windows.amax(dim=1) if mode == "max" else windows.mean(dim=1)  # (B * C, L)
    H_out, W_out = conv_output_size(H, k, stride, padding), conv_output_size(W, k, stride, padding)
    return pooled.reshape(B, C, H_out, W_out)


x = torch.randn(2, 5, 9, 7)  # (B, C, H, W): odd, non-square
for k, s, p in [(2, 2, 0), (3, 2, 1), (3, 1, 1), (2, 1, 0), (3, 3, 0)]:
    torch.testing.assert_close(pool2d(x, k, s, p, "max"), F.max_pool2d(x, k, s, p))
    torch.testing.assert_close(pool2d(x, k, s, p, "avg"), F.avg_pool2d(x, k, s, p))
    print(f"k={k} s={s} p={p}: {tuple(x.shape)} -> {tuple(F.max_pool2d(x, k, s, p).shape)}  max and avg match PyTorch")

# %% [markdown]
# Now the channel count, on a tensor shaped like the first feature maps of the network below.

# %%
maps = torch.randn(8, 6, 28, 28)  # (B, C=6, H, W)
pooled = nn.MaxPool2d(2)(maps)  # (8, 6, 14, 14)
assert pooled.shape == (8, 6, 14, 14) and count_parameters(nn.MaxPool2d(2)) == 0
# Each output channel depends only on its own input channel: change channel 0, only channel 0 moves.
edited = maps.clone()
edited[:, 0] += 1.0
changed = (nn.MaxPool2d(2)(edited) != pooled).flatten(2).any(dim=2).any(dim=0)  # (C,) which channels moved
assert changed.tolist() == [True, False, False, False, False, False]
# The misconception "pooling merges channels" would compute something like this; PyTorch does not.
merged = F.max_pool2d(maps.amax(dim=1, keepdim=True), 2)  # (8, 1, 14, 14): channels lost
assert merged.shape != pooled.shape
# Changing the number of channels takes a convolution, e.g. a 1 x 1 one with 6 * 3 + 3 parameters.
mixer = nn.Conv2d(6, 3, kernel_size=1)
print("max pool:", tuple(maps.shape), "->", tuple(pooled.shape), "(0 parameters);",
      "1x1 conv:", tuple(maps.shape), "->", tuple(mixer(maps).shape), f"({count_parameters(mixer)} parameters)")

# %% [markdown]
# ## The receptive field: how far one output can see
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
def probe_receptive_field(layers, size=96):
    """Width (pixels) of the input region whose gradient w.r.t. the centre output is non-zero."""
    modules = []
    for kind, k, s, d in layers:
        if kind == "conv":
            conv = nn.Conv2d(1, 1, k, stride=s, dilation=d, bias=False)
            nn.init.constant_(conv.weight, 1.0 / k**2)  # positive weights: no cancellation
            modules.append(conv)
        else:  # "pool": an average window, so every pixel of it gets gradient
            modules.append(nn.AvgPool2d(k, s))
    x = torch.ones(1, 1, size, size, requires_grad=True)
    y = nn.Sequential(*modules)(x)  # (1, 1, h, w)
    y[0, 0, y.shape[2] // 2, y.shape[3] // 2].backward()
    rows = torch.nonzero(x.grad[0, 0].abs().sum(dim=1))  # rows that influence the output
    return int(rows.max() - rows.min() + 1)


stacks = {
    "one 3x3 conv": [("conv", 3, 1, 1)],
    "three 3x3 convs": [("conv", 3, 1, 1)] * 3,
    "one 7x7 conv": [("conv", 7, 1, 1)],
    "LeNet: conv5, pool2, conv5, pool2": [("conv", 5, 1, 1), ("pool", 2, 2, 1), ("conv", 5, 1, 1), ("pool", 2, 2, 1)],
    "3x3 convs with dilation 1, 2, 4": [("conv", 3, 1, 1), ("conv", 3, 1, 2), ("conv", 3, 1, 4)],
    "three 3x3 convs with stride 2": [("conv", 3, 2, 1)] * 3,
    "stem: conv7/2, pool3/2, two conv3": [("conv", 7, 2, 1), ("pool", 3, 2, 1), ("conv", 3, 1, 1), ("conv", 3, 1, 1)],
}
for name, layers in stacks.items():
    formula = receptive_field([(k, s, d) for _, k, s, d in layers])
    measured = probe_receptive_field(layers)
    assert formula == measured, (name, formula, measured)
    print(f"{name:36s} Eq. (eq-ch03-rf): {formula:2d} pixels   gradient probe: {measured:2d}")
lenet_rf = receptive_field([(5, 1), (2, 2), (5, 1), (2, 2)])
dlbook.glue("lenet_rf", lenet_rf)

# %% [markdown]
# Three 3 x 3 layers see as far as one 7 x 7 layer, with fewer weights and more
# non-linearities; dilation and stride make the field grow exponentially with depth instead of
# linearly. The book's `receptive_field` implements Eq. {eq}`eq-ch03-rf` (the cell above already
# compared it with the probe):

# %%
dlbook.show(receptive_field)

# %% [markdown]
# **The effective receptive field is much smaller.** Every pixel inside the field *can* affect
# the output, but not equally: a centre pixel reaches the output through many more paths than a
# corner pixel. For $n$ stacked 3 x 3 averaging layers the gradient profile along one axis is the
# $n$-fold convolution of the box $(\tfrac13, \tfrac13, \tfrac13)$, a distribution whose variance
# adds up to $n \cdot \tfrac23$. So the field grows like $2n + 1$ but its effectively used width
# like $\sqrt{n}$ {cite}`luo2016effective`. We measure the standard deviation of the gradient
# profile and compare it with $\sqrt{2n/3}$.

# %%
def gradient_map(n_layers, size=80):
    """|d centre output / d input| for n stacked 3x3 averaging convolutions: (size, size)."""
    net = nn.Sequential(*[nn.Conv2d(1, 1, 3, bias=False, dtype=torch.float64) for _ in range(n_layers)])
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
    torch.testing.assert_close(std, torch.tensor((2 * n / 3) ** 0.5, dtype=torch.float64))
    rf_sizes.append(receptive_field([(3, 1)] * n))
    erf_widths.append(2 * std.item())
dlbook.glue("erf_ratio_16", erf_widths[-1] / rf_sizes[-1])
print(f"16 layers: receptive field {rf_sizes[-1]} pixels, effective width (2 std) {erf_widths[-1]:.1f} pixels")

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
im = axes[0].imshow(gradient_map(8)[28:53, 28:53], cmap="magma")
rf8 = receptive_field([(3, 1)] * 8)
axes[0].set_title(f"|gradient| of the centre output, 8 layers of 3x3\n(the receptive field is {rf8} x {rf8})")
fig.colorbar(im, ax=axes[0])
axes[1].plot(depths, rf_sizes, marker="o", label="receptive field $2n+1$")
axes[1].plot(depths, erf_widths, marker="s", label="effective width $2\\sigma = 2\\sqrt{2n/3}$")
axes[1].set_xlabel("number of stacked 3x3 layers $n$")
axes[1].set_ylabel("pixels")
axes[1].legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# At 16 layers the effective width is only {glue:text}`erf_ratio_16:.2f` of the receptive field.
# Deep networks compensate with strides and pooling, which multiply the jumps.
#
# ## A LeNet-style CNN on MNIST-5k
#
# Time for real digits. MNIST-5k holds 5,000 handwritten digits (500 per class): 4,000 for
# training and 1,000 held out for the final test. We keep the last part of the 4,000 aside as a
# validation set to watch the training curves, and standardise the pixels with the training
# set's mean and standard deviation.

# %%
data = assets.mnist5k()
n_train, n_val = sizes["n_train"], sizes["n_val"]
x_fit, y_fit = data.x_train[:n_train], data.y_train[:n_train]  # (n_train, 1, 28, 28)
x_val, y_val = data.x_train[-n_val:], data.y_train[-n_val:]  # the last n_val of the 4,000: never in x_fit
mean, std = x_fit.mean(), x_fit.std()


def standardise(images):
    return (images - mean) / std  # (N, 1, 28, 28), roughly zero mean and unit variance


val_loader = make_loader(standardise(x_val), y_val, 500, shuffle=False)
test_loader = make_loader(standardise(data.x_test), data.y_test, 500, shuffle=False)
print(f"train {tuple(x_fit.shape)}, validation {tuple(x_val.shape)}, test {tuple(data.x_test.shape)} ({data.source})")

# %% [markdown]
# The network follows LeNet-5 {cite}`lecun1998gradient` with today's defaults (ReLU and max
# pooling instead of tanh and trainable subsampling): two convolution + pooling stages extract
# features, three fully connected layers classify them.

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
for stage, (k, s, p) in [("conv1", (5, 1, 2)), ("pool", (2, 2, 0)), ("conv2", (5, 1, 0)), ("pool", (2, 2, 0))]:
    side = conv_output_size(side, k, s, p)
    print(f"after {stage:5s}: {side} x {side}")
assert cnn.features(torch.zeros(1, 1, 28, 28, device=device)).shape == (1, 16, side, side)

# %% [markdown]
# Where do the parameters sit? Eq. {eq}`eq-ch03-params` gives the two convolutions, and
# $n_{\text{in}} n_{\text{out}} + n_{\text{out}}$ each linear layer. For the comparison we give
# the MLP of chapter 2 (`dlbook.models.MLP`) one hidden layer sized so that its parameter count
# is as close as possible to the CNN's.

# %%
for name, p in cnn.named_parameters():
    print(f"{name:12s} {str(tuple(p.shape)):16s} {p.numel():6,d}")
cnn_params = count_parameters(cnn)
conv_params = sum(p.numel() for name, p in cnn.named_parameters() if name.startswith("conv"))
assert conv_params == (6 * 1 * 25 + 6) + (16 * 6 * 25 + 16)  # Eq. (eq-ch03-params) for both layers

mlp_hidden = round((cnn_params - 10) / (784 + 1 + 10))  # 784*h + h + 10*h + 10 parameters
torch.manual_seed(0)
mlp = MLP(784, [mlp_hidden], 10).to(device)
mlp_params = count_parameters(mlp)
assert mlp_params == 784 * mlp_hidden + mlp_hidden + 10 * mlp_hidden + 10
dlbook.glue("cnn_params", cnn_params)
dlbook.glue("conv_share", 100 * conv_params / cnn_params)
dlbook.glue("mlp_hidden", mlp_hidden)
dlbook.glue("mlp_params", mlp_params)
print(f"CNN {cnn_params:,d} parameters ({conv_params:,d} in the convolutions); "
      f"MLP 784-{mlp_hidden}-10: {mlp_params:,d} parameters")

# %% [markdown]
# The CNN has {glue:text}`cnn_params` parameters, and only {glue:text}`conv_share:.1f` % of them
# are in the convolutions that do the looking; the rest classify. The MLP with one hidden layer
# of {glue:text}`mlp_hidden` units has {glue:text}`mlp_params`.
#
# Equal parameters do not mean equal work. A convolution weight is used at every output
# position, so a layer costs $C_{\text{out}} C_g k_h k_w H_{\text{out}} W_{\text{out}}$
# multiply-adds per image, a linear layer $n_{\text{in}} n_{\text{out}}$. We count both networks
# by hand and check the count with PyTorch's FLOP counter (which counts a multiply-add as two
# FLOPs).

# %%
from torch.utils.flop_counter import FlopCounterMode

cnn_macs = (6 * 1 * 5 * 5 * 28 * 28) + (16 * 6 * 5 * 5 * 10 * 10) + 400 * 120 + 120 * 84 + 84 * 10
mlp_macs = 784 * mlp_hidden + mlp_hidden * 10
for model, macs in [(cnn, cnn_macs), (mlp, mlp_macs)]:
    with FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 1, 28, 28, device=device))
    assert counter.get_total_flops() == 2 * macs
dlbook.glue("mac_ratio", cnn_macs / mlp_macs)
print(f"multiply-adds per digit: CNN {cnn_macs:,d}, MLP {mlp_macs:,d} (ratio {cnn_macs / mlp_macs:.1f})")

# %% [markdown]
# The CNN does {glue:text}`mac_ratio:.1f` times more arithmetic per digit for the same number of
# parameters. Both are trained the same way with the book's `fit` loop from chapter 2: AdamW, a
# learning rate that warms up and then anneals (a one-cycle schedule), the same epochs and the
# same batches.

# %%
def train(model):
    """The same recipe for both models, and the same batches in the same order (seeded loader)."""
    train_loader = make_loader(standardise(x_fit), y_fit, sizes["batch_size"], shuffle=True, seed=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-2)
    total_steps = sizes["epochs"] * len(train_loader)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=total_steps)
    return fit(model, train_loader, val_loader, optimizer=optimizer, epochs=sizes["epochs"], device=device,
               scheduler=scheduler)


history_cnn = train(cnn)
history_mlp = train(mlp)

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.4), sharey=True)
history_cnn.plot(ax=axes[0], title=f"LeNet-style CNN ({cnn_params:,d} parameters)")
history_mlp.plot(ax=axes[1], title=f"MLP 784-{mlp_hidden}-10 ({mlp_params:,d} parameters)")
plt.tight_layout()
plt.show()

# %% [markdown]
# The real test: the 1,000 held-out digits. Training never saw them; the curves above were
# watched on the separate validation digits.

# %%
_, cnn_acc = evaluate(cnn, test_loader, F.cross_entropy, device)
_, mlp_acc = evaluate(mlp, test_loader, F.cross_entropy, device)
dlbook.headline("cnn_test_acc", cnn_acc, profile=profile, at_least=0.97)
dlbook.glue("mlp_test_acc", mlp_acc)
dlbook.glue("cnn_train_seconds", history_cnn.seconds)
dlbook.glue("mlp_train_seconds", history_mlp.seconds)
print(dlbook.env.last_provenance().line())
print(f"held-out accuracy: CNN {cnn_acc:.3f} ({history_cnn.seconds:.0f} s to train), "
      f"MLP {mlp_acc:.3f} ({history_mlp.seconds:.0f} s)")

# %% [markdown]
# With about the same number of parameters, the CNN reaches {glue:text}`cnn_test_acc` held-out
# accuracy and the MLP {glue:text}`mlp_test_acc:.3f`. Training took
# {glue:text}`cnn_train_seconds:.0f` s for the CNN and {glue:text}`mlp_train_seconds:.0f` s for
# the MLP on the machine named in the line printed above; the difference follows the
# multiply-adds counted before, not the parameters.
#
# What does weight sharing buy? Move the test digits a few pixels to the side (filling with
# background) and measure both models again.

# %%
def shift_right(images, pixels):
    """Move (N, 1, 28, 28) images `pixels` to the right, filling the left edge with background (0)."""
    if pixels == 0:
        return images
    return F.pad(images, (pixels, 0))[..., :-pixels]


shifts = [0, 1, 2, 3, 4]
shift_acc = {"CNN": [], "MLP": []}
for pixels in shifts:
    loader = make_loader(standardise(shift_right(data.x_test, pixels)), data.y_test, 500, shuffle=False)
    for name, model in [("CNN", cnn), ("MLP", mlp)]:
        shift_acc[name].append(evaluate(model, loader, F.cross_entropy, device)[1])
dlbook.glue("cnn_shift3_acc", shift_acc["CNN"][3])
dlbook.glue("mlp_shift3_acc", shift_acc["MLP"][3])
if profile == "full":  # the prose below relies on it
    assert shift_acc["CNN"][3] > shift_acc["MLP"][3]

fig, ax = plt.subplots(figsize=(5, 3.2))
for name, accs in shift_acc.items():
    ax.plot(shifts, accs, marker="o", label=name)
ax.set_xlabel("test digits shifted right by (pixels)")
ax.set_ylabel("held-out accuracy")
ax.legend()
plt.show()

# %% [markdown]
# Shifted by 3 pixels, the CNN still gets {glue:text}`cnn_shift3_acc:.3f` right and the MLP
# {glue:text}`mlp_shift3_acc:.3f`. Neither was trained on shifted digits; the CNN's convolutions
# respond to a moved stroke with a moved feature map, and pooling absorbs part of the move. The
# fully connected layers on top are not shift-invariant, which is why the CNN degrades too.
#
# ## Look inside
#
# **First-layer filters.** The six 5 x 5 kernels of `conv1` are small enough to look at. They
# are the patterns the first layer correlates with the digit: bright weights where the layer
# wants ink, dark where it wants background, often arranged as stroke or edge detectors.

# %%
filters = cnn.conv1.weight.detach().cpu()[:, 0]  # (6, 5, 5)
fig, axes = plt.subplots(1, 6, figsize=(10, 2))
for i, ax in enumerate(axes):
    limit = filters[i].abs().max()
    ax.imshow(filters[i], cmap="RdBu_r", vmin=-limit, vmax=limit)
    ax.set_title(f"filter {i}")
    ax.axis("off")
plt.show()

# %% [markdown]
# **Feature maps of one digit.** Passing one test digit through `conv1` (then ReLU) gives six
# 28 x 28 maps, one per filter; after pooling and `conv2` there are sixteen 10 x 10 maps. Each
# map lights up where its filter's pattern occurs. As a last check, the first maps are exactly
# our im2col convolution followed by ReLU.

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
plt.tight_layout()
plt.show()

# %% [markdown]
# **The digits it gets wrong.** Finally, the held-out digits the CNN misclassifies, with the
# true label, the prediction and the probability the network gave its prediction.

# %%
with torch.no_grad():
    probs = torch.cat([F.softmax(cnn(xb.to(device)), dim=1).cpu() for xb, _ in test_loader])  # (1000, 10)
confidence, predicted = probs.max(dim=1)
wrong = torch.nonzero(predicted != data.y_test).flatten()
dlbook.glue("n_wrong", len(wrong))
dlbook.glue("conf_wrong", confidence[wrong].mean().item())
dlbook.glue("conf_right", confidence[predicted == data.y_test].mean().item())
dlbook.glue("n_fit", n_train)
if profile == "full":  # the prose below relies on it
    assert confidence[wrong].mean() < confidence[predicted == data.y_test].mean()
assert len(wrong) == round((1 - cnn_acc) * len(data.y_test))
print(f"{len(wrong)} of {len(data.y_test)} held-out digits misclassified")

show_n = min(len(wrong), 24)
fig, axes = plt.subplots(3, 8, figsize=(12, 5.2))
for i, ax in enumerate(axes.flat):
    ax.axis("off")
    if i >= show_n:
        continue
    idx = int(wrong[i])
    ax.imshow(data.x_test[idx, 0], cmap="gray_r")
    ax.set_title(f"{int(data.y_test[idx])} -> {int(predicted[idx])} ({confidence[idx]:.2f})", fontsize=9)
plt.suptitle("held-out digits the CNN gets wrong: true -> predicted (probability)")
plt.tight_layout()
plt.show()

# %% [markdown]
# The CNN misclassifies {glue:text}`n_wrong` of the 1,000 held-out digits. Look at them: some
# are hard even for a person, others are clear digits written in a style that the
# {glue:text}`n_fit` training digits did not cover. The probabilities tell us how sure the network was: on
# average {glue:text}`conf_wrong:.2f` for its wrong answers against {glue:text}`conf_right:.2f`
# for its right ones, so a low probability is a useful warning sign.
#
# ## Summary
#
# - What deep-learning libraries call convolution is cross-correlation,
#   Eq. {eq}`eq-ch03-conv`; we computed it with loops and with im2col and matched `F.conv2d`
#   with stride, padding, dilation, several channels and groups.
# - Output sizes follow Eq. {eq}`eq-ch03-outsize` (checked in {glue:text}`n_shape_checks`
#   configurations), parameter counts Eq. {eq}`eq-ch03-params`: independent of the image size.
# - Pooling, Eq. {eq}`eq-ch03-pool`, shrinks height and width, keeps the channel count, and has
#   no parameters.
# - The receptive field grows by $(k-1)\,d$ jumps per layer, Eq. {eq}`eq-ch03-rf`; the LeNet
#   stack sees {glue:text}`lenet_rf` x {glue:text}`lenet_rf` pixels, and the effectively used
#   part of a field is much smaller than the field.
# - On MNIST-5k a LeNet-style CNN reached {glue:text}`cnn_test_acc` held-out accuracy against
#   {glue:text}`mlp_test_acc:.3f` for an MLP with the same parameter budget, and it was more
#   robust to shifted digits.
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
# :label: ch03-ex-stack
# Compare three stacked 3 x 3 convolutions (C channels in and out, stride 1) with one 7 x 7
# convolution: receptive field, number of weights, number of non-linearities. Why did VGG-style
# and later networks prefer stacks of small kernels?
# :::
#
# :::{solution} ch03-ex-stack
# :class: dropdown
# Both see 7 x 7 pixels (Eq. {eq}`eq-ch03-rf`: $1 + 2 + 2 + 2 = 7$). The stack has
# $3 \cdot 9 C^2 = 27 C^2$ weights against $49 C^2$, 45 % fewer, and three ReLUs instead of one,
# so it can represent more complicated functions of the same pixels. The price is more
# sequential layers (latency) and more activations to store for backpropagation.
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
# no parameters. Reducing channels mixes them, which takes a convolution; the cheapest is a
# 1 x 1 convolution, `Conv2d(64, 32, 1)`, with $32 \cdot 64 + 32 = 2{,}080$ parameters.
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
    n_out = (length - dilation * (k - 1) - 1) // stride + 1  # Eq. (eq-ch03-outsize) with p = 0
    span = dilation * (k - 1) + 1
    # windows[b, c, i, u] = x[b, c, i * stride + u * dilation]
    windows = x.unfold(dimension=2, size=span, step=stride)[..., ::dilation]  # (B, C_in, n_out, k)
    assert windows.shape[2] == n_out
    return torch.einsum("bciu,ocu->boi", windows, weight)  # (B, C_out, n_out)


assert dlbook.exercises.check("ch03.conv1d", conv1d_solution)

# %% [markdown]
# ```{solution-end}
# ```
#
# :::{exercise}
# :label: ch03-ex-same
# Write `same_padding(kernel_size, dilation)`: the padding $p$ that keeps height and width
# unchanged for a stride-1 convolution with an odd kernel size and the given dilation. Derive it
# from Eq. {eq}`eq-ch03-outsize`. (A frequent bug forgets the dilation.)
# :::

# %%
def same_padding(kernel_size, dilation):
    raise NotImplementedError  # your code here


dlbook.exercises.check("ch03.same_padding", same_padding)

# %% [markdown]
# ```{solution-start} ch03-ex-same
# :class: dropdown
# ```

# %% tags=["solution"]
def same_padding_solution(kernel_size, dilation):
    # H_out = H + 2p - d(k - 1) must equal H, so p = d(k - 1) / 2 (an integer for odd k).
    return dilation * (kernel_size - 1) // 2


assert dlbook.exercises.check("ch03.same_padding", same_padding_solution)
for k, d in [(3, 1), (3, 2), (5, 3)]:
    assert conv_output_size(28, k, 1, same_padding_solution(k, d), d) == 28

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
# - Batch normalisation, the layer that made deeper CNNs train reliably: {cite}`ioffe2015batch`;
#   and residual connections, which made them *very* deep: {cite}`he2016deep`.
