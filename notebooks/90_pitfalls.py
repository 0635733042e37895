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
# (ch90)=
# # 90. Pitfalls: wrong forms that look right
#
# Some wrong forms of standard formulas, and some slogans about training cost, look right at a
# glance. Each one below is put next to the right form, and a cell measures the difference against
# PyTorch's own implementation, so that you can see how large the error is and why a quick test
# might not catch it.
#
# | wrong form | what is wrong | checked against |
# |---|---|---|
# | attention logits divided by $d_k$ | the scale is $\sqrt{d_k}$ | `F.scaled_dot_product_attention` |
# | LayerNorm as $x/\mathrm{rms}(x)$ | the mean is not subtracted | `nn.LayerNorm`, `nn.RMSNorm` |
# | FFN as $\max(0, W_2(W_1x+b_1)+b_2)$ | the ReLU belongs between the two layers | `nn.TransformerEncoderLayer` |
# | "pooling reduces the channels" | pooling shrinks height and width, per channel | `F.max_pool2d`, `F.conv2d` |
# | positional encodings with the exponent on the wrong thing | $10000^{2i/d}$ divides the position, one frequency per pair | the shift identity |
# | "a larger batch makes each step cheaper" | a step costs more; an *example* may cost less | `FlopCounterMode`, timing |
# | "gradient accumulation saves backward compute" | same arithmetic, less memory | `FlopCounterMode`, autograd |
#
# By the end of this chapter you can
#
# 1. spot each of these seven wrong forms and write the right one;
# 2. show the difference numerically, and explain why a test on convenient inputs can miss it;
# 3. say what a larger batch and gradient accumulation change (time per example, memory) and what
#    they do not (the arithmetic per example);
# 4. count the matrix-multiply FLOPs of a training step with PyTorch's FLOP counter (which
#    counts matrix multiplications only).

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
import math
import os

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import dlbook
import dlbook.exercises
from dlbook.measure import interleaved_calls
from dlbook.nn.attention import scaled_dot_product_attention
from dlbook.nn.transformer import FeedForward, LayerNorm, sinusoidal_positional_encoding

device = dlbook.setup(seed=0)

# %% tags=["parameters", "hide-input"]
profile = os.environ.get("DLBOOK_PROFILE", "full")

# %% tags=["hide-input"]
sizes = dlbook.by_profile(
    profile,
    smoke=dict(
        d_ks=[4, 16, 64],
        n_samples=500,
        n_keys=16,
        batch_sizes=[1, 16, 128],
        hidden=128,
        n_repeat=3,
        n_positions=64,
        d_pe=32,
        accum_batch=32,
        accum_k=4,
    ),
    full=dict(
        d_ks=[1, 4, 16, 64, 256, 1024],  # key widths d_k compared (pitfall 1)
        n_samples=1_000,  # random queries per d_k
        n_keys=32,  # random keys each query attends over
        batch_sizes=[1, 4, 16, 64, 256, 1024],  # FLOPs and time per step (pitfall 6)
        hidden=256,  # width of the hidden layers of the network of pitfalls 6 and 7
        n_repeat=15,  # timed training steps per batch size (pitfall 6)
        n_positions=128,  # positions of the positional-encoding checks (pitfall 5)
        d_pe=64,  # width of the positional encoding
        accum_batch=256,  # examples in the large batch of pitfall 7
        accum_k=8,  # micro-batches it is split into for accumulation
    ),
)
sizes

# %% [markdown]
# ## 1. Attention divided by $d_k$ instead of $\sqrt{d_k}$
#
# **Wrong:** $\mathrm{softmax}\!\left(QK^\top / d_k\right)V$. **Right** {cite}`vaswani2017attention`:
#
# $$
# \mathrm{Attention}(Q, K, V) = \mathrm{softmax}\!\left(\frac{QK^\top}{\sqrt{d_k}}\right)V .
# $$ (eq-ch90-attention)
#
# The packaged attention of chapter 6 implements Eq. {eq}`eq-ch90-attention`; it must agree with
# PyTorch's fused kernel, and the wrong form must not.


# %%
def attention_over_dk(q, k, v):
    """The wrong form: logits divided by d_k."""
    return (
        torch.softmax(q @ k.transpose(-2, -1) / q.shape[-1], dim=-1) @ v
    )  # (..., L_q, d_v)


q, k, v = (
    torch.randn(2, 4, 10, 64, device=device) for _ in range(3)
)  # (batch, heads, seq, d_k)
reference = F.scaled_dot_product_attention(q, k, v)  # (2, 4, 10, 64)
right, _ = scaled_dot_product_attention(q, k, v)
torch.testing.assert_close(right, reference, atol=1e-5, rtol=1e-4)
attn_diff = (attention_over_dk(q, k, v) - reference).abs().max().item()
assert attn_diff > 1e-2, "the d_k form should differ visibly at d_k = 64"
dlbook.glue("attn_diff", attn_diff)
print(
    "sqrt(d_k) form vs PyTorch: equal; "
    f"d_k form vs PyTorch: largest difference {attn_diff:.3f}"
)

# %%
# Backward too: gradients of out.sum() w.r.t. q, k, v, at the same tolerances.
qkv = [t.clone().requires_grad_() for t in (q, k, v)]
grads_ours = torch.autograd.grad(scaled_dot_product_attention(*qkv)[0].sum(), qkv)
grads_torch = torch.autograd.grad(F.scaled_dot_product_attention(*qkv).sum(), qkv)
for g_ours, g_torch in zip(grads_ours, grads_torch, strict=True):
    torch.testing.assert_close(g_ours, g_torch, atol=1e-5, rtol=1e-4)

# %% [markdown]
# Why the square root: if the entries of $q$ and $k$ are independent with mean 0 and variance 1,
# the dot product $q\cdot k=\sum_{j=1}^{d_k} q_j k_j$ is a sum of $d_k$ terms of variance 1, so
#
# $$
# \operatorname{Var}(q\cdot k) = d_k, \qquad
# \operatorname{Var}\!\left(\frac{q\cdot k}{\sqrt{d_k}}\right) = 1, \qquad
# \operatorname{Var}\!\left(\frac{q\cdot k}{d_k}\right) = \frac{1}{d_k}.
# $$ (eq-ch90-variance)
#
# Dividing by $d_k$ overshoots: the logits shrink towards 0 as $d_k$ grows and the softmax turns
# into a plain average (entropy $\ln n$ over $n$ keys), whatever the query asks for. We measure
# the three variances and the entropy of the attention weights over a range of $d_k$:


# %%
def logit_stats(d_k, scale, n_samples, n_keys):
    q = torch.randn(n_samples, 1, d_k, device=device)  # (samples, 1 query, d_k)
    k = torch.randn(n_samples, n_keys, d_k, device=device)  # (samples, keys, d_k)
    logits = (q @ k.transpose(-2, -1)).squeeze(1) * scale  # (samples, keys)
    weights = torch.softmax(logits, dim=-1)
    entropy = -torch.special.xlogy(weights, weights).sum(-1).mean()
    return logits.var().item(), entropy.item()


scalings = {
    "none": lambda d: 1.0,
    "1/sqrt(d_k)": lambda d: 1 / math.sqrt(d),
    "1/d_k (wrong)": lambda d: 1 / d,
}
stats = {
    name: [
        logit_stats(d, f(d), sizes["n_samples"], sizes["n_keys"]) for d in sizes["d_ks"]
    ]
    for name, f in scalings.items()
}
for d, (var_none, _), (var_sqrt, _), (var_dk, _) in zip(
    sizes["d_ks"], *stats.values(), strict=True
):
    # Eq. (eq-ch90-variance), up to sampling error
    assert (
        0.8 < var_none / d < 1.2 and 0.8 < var_sqrt < 1.2 and 0.8 < var_dk * d < 1.2
    ), (d, var_none, var_sqrt, var_dk)
    print(
        f"d_k = {d:5d}: Var = {var_none:8.2f} (none)  "
        f"{var_sqrt:.3f} (sqrt)  {var_dk:.5f} (d_k)"
    )

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
for name, rows in stats.items():
    axes[0].loglog(sizes["d_ks"], [r[0] for r in rows], "o-", label=name)
    axes[1].semilogx(sizes["d_ks"], [r[1] for r in rows], "o-", label=name)
axes[1].axhline(
    math.log(sizes["n_keys"]), color="gray", ls=":", label=r"$\ln n$ (uniform weights)"
)
axes[0].set(title="variance of the logits", xlabel="$d_k$")
axes[1].set(title="entropy of the attention weights (nats)", xlabel="$d_k$")
axes[0].legend()
axes[1].legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# **Figure 90.1.** Left: the variance of the attention logits against $d_k$ (log-log axes) with
# no scaling, with $1/\sqrt{d_k}$ and with the wrong $1/d_k$. Right: the entropy of the attention
# weights for the same three scalings ($d_k$ on a log axis); the dotted line is $\ln n$, the
# entropy of uniform weights over the $n$ keys.

# %%
entropy_dk = stats["1/d_k (wrong)"][-1][1]
entropy_sqrt = stats["1/sqrt(d_k)"][-1][1]
dlbook.glue("entropy_dk", entropy_dk)
dlbook.glue("entropy_sqrt", entropy_sqrt)
dlbook.glue("entropy_uniform", math.log(sizes["n_keys"]))
dlbook.glue("d_k_max", sizes["d_ks"][-1])
assert entropy_dk > entropy_sqrt
assert math.log(sizes["n_keys"]) - entropy_dk < 0.01  # all but uniform
sqrt_entropies = [row[1] for row in stats["1/sqrt(d_k)"]]  # one per d_k
assert max(sqrt_entropies) - min(sqrt_entropies) < 0.1  # flat in d_k
dlbook.glue("entropy_sqrt_spread", max(sqrt_entropies) - min(sqrt_entropies))

# %% [markdown]
# At $d_k=$ {glue:text}`d_k_max` the wrong scaling leaves an entropy of
# {glue:text}`entropy_dk:.3f` nats, next to {glue:text}`entropy_uniform:.3f` for perfectly
# uniform weights: the attention no longer selects anything. With $\sqrt{d_k}$ it is
# {glue:text}`entropy_sqrt:.2f` nats at the same $d_k$, the level it keeps for every $d_k$ (the
# flat curve of Figure 90.1: it moves by {glue:text}`entropy_sqrt_spread:.3f` nats over the whole
# range). Without any scaling the opposite happens (the softmax saturates and its gradient
# vanishes); chapter 6 measures that side.
#
# ## 2. LayerNorm without the mean
#
# **Wrong:** $y = \gamma \odot x / \sqrt{\tfrac1d\sum_j x_j^2 + \epsilon} + \beta$.
# **Right** {cite}`ba2016layer`: with the mean and the (biased) variance over the $d$ features,
#
# $$
# \mu = \frac1d\sum_{j=1}^d x_j, \qquad \sigma^2 = \frac1d\sum_{j=1}^d (x_j-\mu)^2, \qquad
# y = \gamma \odot \frac{x-\mu}{\sqrt{\sigma^2+\epsilon}} + \beta .
# $$ (eq-ch90-layernorm)
#
# The wrong form is not nonsense: without $\beta$ it is **RMSNorm** {cite}`zhang2019root`, a
# different layer, proposed as a cheaper alternative to LayerNorm. It is wrong as a description of
# LayerNorm, and wrong as code that loads LayerNorm weights.


# %%
def norm_without_mean(x, gamma, beta, eps=1e-5):
    """The wrong form: divide by the root mean square, never subtract the mean."""
    return gamma * x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps) + beta


d = 16
ln = nn.LayerNorm(d).to(device)
with torch.no_grad():
    ln.weight.normal_(1.0, 0.3)
    ln.bias.normal_(0.0, 0.3)
x = 3.0 + 2.0 * torch.randn(
    4, 10, d, device=device
)  # (batch, seq, d): features with mean about 3
mu = x.mean(-1, keepdim=True)  # (4, 10, 1)
var = ((x - mu) ** 2).mean(-1, keepdim=True)  # biased variance, (4, 10, 1)
ours = ln.weight * (x - mu) / torch.sqrt(var + ln.eps) + ln.bias
torch.testing.assert_close(ours, ln(x))

# The packaged LayerNorm of chapter 7 loads the same weights and agrees too.
packaged = LayerNorm(d).to(device)
packaged.load_state_dict(ln.state_dict())
torch.testing.assert_close(packaged(x), ln(x))

# Backward too: gradients of out.sum() w.r.t. x, gamma and beta.
x_ = x.clone().requires_grad_()
wrt = [x_, ln.weight, ln.bias]
mu_ = x_.mean(-1, keepdim=True)
var_ = ((x_ - mu_) ** 2).mean(-1, keepdim=True)
ours_ = ln.weight * (x_ - mu_) / torch.sqrt(var_ + ln.eps) + ln.bias
for g_ours, g_torch in zip(
    torch.autograd.grad(ours_.sum(), wrt),
    torch.autograd.grad(ln(x_).sum(), wrt),
    strict=True,
):
    torch.testing.assert_close(g_ours, g_torch)

wrong = norm_without_mean(x, ln.weight, ln.bias, ln.eps)
ln_diff = (wrong - ln(x)).abs().max().item()
dlbook.glue("ln_diff", ln_diff)
print(f"no-mean form vs nn.LayerNorm: largest difference {ln_diff:.3f}")

# %%
# Without beta, the wrong form is exactly PyTorch's RMSNorm: a different layer.
rms = nn.RMSNorm(d, eps=ln.eps).to(device)
with torch.no_grad():
    rms.weight.copy_(ln.weight)
torch.testing.assert_close(norm_without_mean(x, ln.weight, 0.0, ln.eps), rms(x))

# %% [markdown]
# Why the bug survives: on inputs whose features already have mean zero, $x-\mu=x$ and
# $\sigma^2=\tfrac1d\sum_j x_j^2$, so the two forms agree exactly. A test on inputs that were
# centred for convenience, or that come out of another normalisation, cannot see it; `torch.randn`
# rows show it only partly, because their means are merely close to zero. Activations after a ReLU
# are never negative, so the mean of such a row is above zero unless the whole row is zero.

# %%
centred = torch.randn(4, 10, d, device=device)
centred = centred - centred.mean(-1, keepdim=True)  # exactly zero mean per row
ln_diff_centred = (
    (norm_without_mean(centred, ln.weight, ln.bias, ln.eps) - ln(centred))
    .abs()
    .max()
    .item()
)
randn_rows = torch.randn(4, 10, d, device=device)  # mean only approximately zero
ln_diff_randn = (
    (norm_without_mean(randn_rows, ln.weight, ln.bias, ln.eps) - ln(randn_rows))
    .abs()
    .max()
    .item()
)
assert ln_diff_centred < 1e-4 < ln_diff_randn < ln_diff
dlbook.glue("ln_diff_centred", ln_diff_centred)
dlbook.glue("ln_diff_randn", ln_diff_randn)
print(
    f"centred rows: {ln_diff_centred:.1e}   "
    f"randn rows: {ln_diff_randn:.3f}   "
    f"rows with mean 3: {ln_diff:.3f}"
)

# %% [markdown]
# On rows with mean 3 the wrong form is off by up to {glue:text}`ln_diff:.2f`, on `randn` rows by
# {glue:text}`ln_diff_randn:.2f`, and on centred rows by {glue:text}`ln_diff_centred:.0e`, which is
# rounding: a test on centred inputs passes.
#
# ## 3. The feed-forward network with the ReLU outside
#
# **Wrong:** $\mathrm{FFN}(x) = \max(0,\ W_2(W_1x+b_1)+b_2)$. **Right** {cite}`vaswani2017attention`:
#
# $$
# \mathrm{FFN}(x) = W_2\,\max(0,\ W_1x+b_1) + b_2 .
# $$ (eq-ch90-ffn)
#
# The wrong form is two linear maps in a row, and a composition of linear maps is one linear map:
# $W_2(W_1x+b_1)+b_2 = (W_2W_1)x + (W_2b_1+b_2)$. Its $d_\text{ff}$ hidden units add nothing a
# single $d\times d$ layer could not do, and its output is never negative, so the sublayer can
# only push the residual stream upwards.
#
# Our reference is PyTorch's own encoder layer. In a pre-norm `nn.TransformerEncoderLayer` the
# output is $x + \mathrm{SA}(\mathrm{LN}_1 x) + \mathrm{FFN}(\mathrm{LN}_2(x + \dots))$; with the
# attention's output projection set to zero, the attention term vanishes and
# `layer(x) - x` is exactly PyTorch's feed-forward applied to $\mathrm{LN}_2(x)$.

# %%
d_model, d_ff = 16, 64
layer = (
    nn.TransformerEncoderLayer(
        d_model,
        nhead=2,
        dim_feedforward=d_ff,
        dropout=0.0,
        batch_first=True,
        norm_first=True,
    )
    .to(device)
    .eval()
)
with torch.no_grad():
    layer.self_attn.out_proj.weight.zero_()
    layer.self_attn.out_proj.bias.zero_()
    x = torch.randn(3, 7, d_model, device=device)  # (batch, seq, d_model)
    torch_ffn = layer(x) - x  # PyTorch's FFN(LN2(x)), (3, 7, d_model)
    h = layer.norm2(x)
    W1, b1, W2, b2 = (
        layer.linear1.weight,
        layer.linear1.bias,
        layer.linear2.weight,
        layer.linear2.bias,
    )
    ffn_right = (
        torch.clamp(h @ W1.T + b1, min=0) @ W2.T + b2
    )  # Eq. (eq-ch90-ffn); (3, 7, d_model)
    ffn_wrong = torch.clamp((h @ W1.T + b1) @ W2.T + b2, min=0)
torch.testing.assert_close(ffn_right, torch_ffn, atol=1e-5, rtol=1e-4)

# The packaged feed-forward of chapter 7 (same layer names) agrees as well.
ff = FeedForward(d_model, d_ff).to(device).eval()
ff.load_state_dict(
    {"linear1.weight": W1, "linear1.bias": b1, "linear2.weight": W2, "linear2.bias": b2}
)
with torch.no_grad():
    torch.testing.assert_close(ff(h), torch_ffn, atol=1e-5, rtol=1e-4)

# Backward too: gradients of out.sum() w.r.t. x and the four FFN parameters.
x_ = x.clone().requires_grad_()
wrt = [x_, W1, b1, W2, b2]
h_ = layer.norm2(x_)
right_ = torch.clamp(h_ @ W1.T + b1, min=0) @ W2.T + b2  # Eq. (eq-ch90-ffn)
for g_ours, g_torch in zip(
    torch.autograd.grad(right_.sum(), wrt),
    torch.autograd.grad((layer(x_) - x_).sum(), wrt),
    strict=True,
):
    torch.testing.assert_close(g_ours, g_torch, atol=1e-5, rtol=1e-4)
ffn_diff = (ffn_wrong - torch_ffn).abs().max().item()
dlbook.glue("ffn_diff", ffn_diff)
print(f"ReLU-outside form vs PyTorch: largest difference {ffn_diff:.3f}")

# %%
# The wrong form collapses to ONE linear layer followed by a ReLU ...
with torch.no_grad():
    collapsed = torch.clamp(h @ (W2 @ W1).T + (W2 @ b1 + b2), min=0)
torch.testing.assert_close(ffn_wrong, collapsed, atol=1e-5, rtol=1e-4)
# ... and can never output a negative number; the right form outputs both signs.
negative_share = (torch_ffn < 0).float().mean().item()
assert (ffn_wrong >= 0).all() and negative_share > 0.2
dlbook.glue("ffn_negative_share", 100 * negative_share)

# %% [markdown]
# {glue:text}`ffn_negative_share:.0f` % of the outputs of PyTorch's feed-forward are negative here;
# the wrong form can produce none of them.
#
# ## 4. "Pooling reduces the number of channels"
#
# **Wrong:** a pooling layer merges feature maps, so the channel count goes down. **Right:**
# pooling works on each channel separately and shrinks only height and width. Max pooling with a
# $k\times k$ window and stride $s$ (no padding) is
#
# $$
# y_{n,c,i,j} = \max_{0\le a,b<k}\ x_{n,c,\,si+a,\,sj+b}, \qquad
# H_\text{out} = \left\lfloor \frac{H-k}{s} \right\rfloor + 1 ,
# $$ (eq-ch90-pool)
#
# so a tensor `(N, C, H, W)` becomes `(N, C, H_out, W_out)`: the same $C$. Pooling has no
# weights. We build it from `unfold` (every $k\times k$ window as a column) and compare:


# %%
def max_pool_unfold(x, k, s):
    N, C, H, W = x.shape
    cols = F.unfold(x, kernel_size=k, stride=s)  # (N, C*k*k, L): one column per window
    cols = cols.view(
        N, C, k * k, -1
    )  # (N, C, k*k, L): each channel's windows kept apart
    H_out, W_out = (H - k) // s + 1, (W - k) // s + 1
    return cols.amax(dim=2).view(
        N, C, H_out, W_out
    )  # max inside each window, per channel


x = torch.randn(2, 6, 9, 9, device=device)  # (N, C, H, W)
for k_, s_ in [(2, 2), (3, 1), (3, 2)]:
    ours = max_pool_unfold(x, k_, s_)
    torch.testing.assert_close(ours, F.max_pool2d(x, k_, s_))
    assert ours.shape[:2] == x.shape[:2]  # channels untouched
    print(f"k={k_}, s={s_}: {tuple(x.shape)} -> {tuple(ours.shape)}")

# %%
# The output-size formula of Eq. (eq-ch90-pool), checked against PyTorch over many
# shapes.
for H in (5, 8, 28, 31):
    for k_ in (2, 3, 5):
        for s_ in (1, 2, 3):
            out = F.max_pool2d(torch.zeros(1, 3, H, H), k_, s_)
            assert out.shape == (1, 3, (H - k_) // s_ + 1, (H - k_) // s_ + 1), (
                H,
                k_,
                s_,
            )

# %% [markdown]
# What *does* reduce channels is a layer that mixes them: a $1\times1$ convolution
# {cite}`lin2014network`, $y_{n,o,i,j} = b_o + \sum_c w_{o,c}\, x_{n,c,i,j}$, with $C_\text{out}C_\text{in}+C_\text{out}$
# weights and the spatial size unchanged. Taking a maximum *across* channels, `x.amax(dim=1)`, is
# another operation again, and not what `max_pool2d` computes.

# %%
conv1x1 = nn.Conv2d(6, 2, kernel_size=1).to(device)
with torch.no_grad():
    mixed = (
        torch.einsum("oc,nchw->nohw", conv1x1.weight[:, :, 0, 0], x)
        + conv1x1.bias[None, :, None, None]
    )
    torch.testing.assert_close(mixed, conv1x1(x), atol=1e-5, rtol=1e-4)
shapes = {
    "input": tuple(x.shape),
    "F.max_pool2d(x, 2)": tuple(F.max_pool2d(x, 2).shape),
    "1x1 conv, 6 -> 2 channels": tuple(conv1x1(x).shape),
    "x.amax(dim=1, keepdim=True)": tuple(x.amax(dim=1, keepdim=True).shape),
}
assert (
    shapes["F.max_pool2d(x, 2)"][1] == 6 and shapes["1x1 conv, 6 -> 2 channels"][1] == 2
)
shapes

# %% [markdown]
# ## 5. Positional encodings with the exponent in the wrong place
#
# **Right** {cite}`vaswani2017attention`: for position $p$ and pair index $i = 0, 1, \dots, d/2-1$,
#
# $$
# PE_{p,\,2i} = \sin\!\left(\frac{p}{10000^{2i/d}}\right), \qquad
# PE_{p,\,2i+1} = \cos\!\left(\frac{p}{10000^{2i/d}}\right).
# $$ (eq-ch90-pe)
#
# Dimensions $2i$ and $2i+1$ share **one** frequency $\omega_i = 10000^{-2i/d}$, and the
# wavelengths grow geometrically from $2\pi$ to almost $10000\cdot2\pi$ positions
# {cite}`vaswani2017attention`. Three misreadings are easy to make:
#
# - **(a) one exponent per dimension:** $10000^{2j/d}$ with $j$ the dimension index
#   ($j=0,\dots,d-1$) instead of the pair index, so sine and cosine no longer share a frequency and
#   the upper half of the dimensions is nearly constant;
# - **(b) the sign of the exponent flipped:** $\sin(p\cdot10000^{2i/d})$, frequencies from 1 up
#   to thousands of radians per position;
# - **(c) the power applied to the sine:** $\sin(p/10000)^{2i/d}$.
#
# Chapter 7 packaged Eq. {eq}`eq-ch90-pe`; we check our cell against it, then check the property
# the formula was chosen for: for every shift
# $k$ there is one fixed matrix $M_k$, block-diagonal with a $2\times2$ rotation by $\omega_i k$
# per pair, such that $PE_{p+k} = M_k\,PE_p$ for all $p$ (sine and cosine addition theorems).

# %%
P, d_pe = sizes["n_positions"], sizes["d_pe"]
pos = torch.arange(P, dtype=torch.float64)[:, None]  # (P, 1)
two_i = torch.arange(0, d_pe, 2, dtype=torch.float64)  # (d/2,): 0, 2, 4, ...
j = torch.arange(d_pe, dtype=torch.float64)  # (d,): every dimension index


def interleave(sines, cosines):
    pe = torch.zeros(P, d_pe, dtype=torch.float64)
    pe[:, 0::2], pe[:, 1::2] = sines, cosines
    return pe  # (P, d)


angle = pos / 10000 ** (two_i / d_pe)  # (P, d/2)
encodings = {
    "right": interleave(torch.sin(angle), torch.cos(angle)),
    "(a) exponent per dimension": torch.where(
        j % 2 == 0,
        torch.sin(pos / 10000 ** (2 * j / d_pe)),
        torch.cos(pos / 10000 ** (2 * j / d_pe)),
    ),
    "(b) exponent sign flipped": interleave(
        torch.sin(pos * 10000 ** (two_i / d_pe)),
        torch.cos(pos * 10000 ** (two_i / d_pe)),
    ),
    "(c) power of the sine": interleave(
        torch.sin(pos / 10000) ** (two_i / d_pe),
        torch.cos(pos / 10000) ** (two_i / d_pe),
    ),
}
torch.testing.assert_close(
    encodings["right"].float(), sinusoidal_positional_encoding(P, d_pe)
)

# %%
# The shift identity of the right form, with M_k built from the formula.
shift = 5
omega = 10000 ** (-two_i / d_pe)  # (d/2,)
M = torch.zeros(d_pe, d_pe, dtype=torch.float64)
c, s = torch.cos(omega * shift), torch.sin(omega * shift)
M[0::2, 0::2] = torch.diag(c)  # sin(a + b) = sin a cos b + cos a sin b
M[0::2, 1::2] = torch.diag(s)
M[1::2, 0::2] = torch.diag(-s)  # cos(a + b) = cos a cos b - sin a sin b
M[1::2, 1::2] = torch.diag(c)
right_pe = encodings["right"]
torch.testing.assert_close(right_pe[:-shift] @ M.T, right_pe[shift:])

# %% [markdown]
# For the wrong forms we do not know $M_k$, so we let least squares find the best matrix and
# report how much of $PE_{p+k}$ it leaves unexplained (0 means an exact linear shift exists, up to
# the rounding of the fit). Two
# more numbers describe what a model would see: the cosine similarity of neighbouring positions
# (close to 1 means nearby positions look alike) and of positions far apart.


# %%
def describe(pe, k=shift, far=P // 2):
    # the best M_k^T; an SVD-based solver, since the slow dimensions make pe[:-k] nearly
    # rank-deficient
    fit = torch.linalg.lstsq(pe[:-k], pe[k:], rcond=1e-10, driver="gelsd").solution
    residual = ((pe[:-k] @ fit - pe[k:]).norm() / pe[k:].norm()).item()
    near_sim = F.cosine_similarity(pe[1:], pe[:-1], dim=-1).mean().item()
    far_sim = F.cosine_similarity(pe[far:], pe[:-far], dim=-1).mean().item()
    return dict(
        shift_residual=residual, neighbour_similarity=near_sim, far_similarity=far_sim
    )


pe_table = {name: describe(pe) for name, pe in encodings.items()}
for name, row in pe_table.items():
    print(
        f"{name:28s}  " + "  ".join(f"{key} {value:9.2e}" for key, value in row.items())
    )

# %%
right_row, a_row, b_row, c_row = pe_table.values()
assert (
    right_row["shift_residual"] < 1e-6 and b_row["shift_residual"] < 1e-6
)  # exact, up to rounding
assert a_row["shift_residual"] > 1e-2
assert b_row["neighbour_similarity"] < 0.5 < right_row["neighbour_similarity"]
assert (
    c_row["far_similarity"] > right_row["far_similarity"]
    and a_row["far_similarity"] > right_row["far_similarity"]
)
upper = encodings["(a) exponent per dimension"][:, d_pe // 2 :]  # (P, d/2): upper half
upper_range = (upper.amax(0) - upper.amin(0)).max().item()  # largest change anywhere
assert upper_range < 0.05  # nearly constant
omega_b = 10000 ** (two_i / d_pe)  # (d/2,): frequencies of (b), radians per position
n_fast = int((omega_b > math.pi).sum())  # over half a turn from a position to the next
assert n_fast > len(omega_b) // 2
dlbook.glue("pe_a_upper_range", upper_range)
dlbook.glue("pe_b_fast", n_fast)
dlbook.glue("pe_pairs", len(omega_b))
for key, row in zip(["right", "a", "b", "c"], pe_table.values(), strict=True):
    dlbook.glue(f"pe_{key}_residual", row["shift_residual"])
    dlbook.glue(f"pe_{key}_near", row["neighbour_similarity"])
    dlbook.glue(f"pe_{key}_far", row["far_similarity"])
dlbook.glue("pe_far", P // 2)

# %%
fig, axes = plt.subplots(1, 4, figsize=(13, 3.4), sharey=True)
for ax, (name, pe) in zip(axes, encodings.items(), strict=True):
    ax.imshow(
        pe.numpy(), aspect="auto", cmap="RdBu", vmin=-1, vmax=1, interpolation="nearest"
    )
    ax.set(title=name, xlabel="dimension")
axes[0].set_ylabel("position")
plt.tight_layout()
plt.show()

# %% [markdown]
# **Figure 90.2.** The right sinusoidal encoding and the three misreadings (a)-(c), one panel
# each (rows: positions, columns: dimensions; colour from -1, red, to +1, blue).
#
# What each misreading breaks:
#
# - **(a)** no fixed linear shift exists any more (residual {glue:text}`pe_a_residual:.2f`, against
#   {glue:text}`pe_right_residual:.0e` for the right form), and positions {glue:text}`pe_far`
#   apart still look alike (similarity {glue:text}`pe_a_far:.2f` against
#   {glue:text}`pe_right_far:.2f`): no entry of the upper half of the dimensions changes by more
#   than {glue:text}`pe_a_upper_range:.3f` over all the positions, so those dimensions carry almost
#   no information about position.
# - **(b)** the shift is still a rotation (residual {glue:text}`pe_b_residual:.0e`), but
#   {glue:text}`pe_b_fast` of the {glue:text}`pe_pairs` frequencies turn by more than half a cycle
#   from one position to the next, so neighbouring positions are unrelated (similarity
#   {glue:text}`pe_b_near:.2f` against {glue:text}`pe_right_near:.2f`): the encoding looks like
#   noise.
# - **(c)** every dimension is a function of the one number $p/10000$, which hardly changes over
#   a few hundred positions, so all positions look nearly the same (similarity
#   {glue:text}`pe_c_far:.2f` between positions {glue:text}`pe_far` apart). That a linear map
#   fits its shift well (residual {glue:text}`pe_c_residual:.0e`) is no comfort: it maps
#   nearly identical vectors to nearly identical vectors.
#
# ## 6. "A larger batch makes each step cheaper"
#
# **Wrong:** a bigger batch makes an optimisation step cheaper. **Right:** a step costs more
# arithmetic (and, where the hardware is busy, more time); what can go down is the time per
# *example*. For a multilayer perceptron with layers of sizes $n_0 \to n_1 \to \dots \to n_L$
# the matrix multiplications of one step on a batch of $B$ examples cost
#
# $$
# \text{FLOPs}(B) = \underbrace{2B\sum_{l=1}^{L} n_{l-1}n_l}_{\text{forward}}
# + \underbrace{2B\sum_{l=1}^{L} n_{l-1}n_l}_{\text{weight gradients}}
# + \underbrace{2B\sum_{l=2}^{L} n_{l-1}n_l}_{\text{input gradients}} ,
# $$ (eq-ch90-flops)
#
# exactly proportional to $B$ (the first layer needs no gradient for its input, the data). The
# *time* per example can still fall with $B$: each step also pays a cost that does not grow with
# $B$ (Python, launching each operation, the optimizer's update of every weight), which a larger
# batch shares among more examples, and a small matrix product may leave arithmetic units idle.
# We count with PyTorch's FLOP counter and check Eq. {eq}`eq-ch90-flops`:


# %%
def make_mlp(hidden):
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(784, hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, 10),
    ).to(device)


def step_flops(model, batch):
    x = torch.randn(batch, 784, device=device)  # (B, 784), like a flattened MNIST digit
    y = torch.randint(0, 10, (batch,), device=device)
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), y).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


mlp = make_mlp(sizes["hidden"])
widths = [(m.in_features, m.out_features) for m in mlp if isinstance(m, nn.Linear)]
for B in sizes["batch_sizes"]:
    formula = 2 * B * sum(a * b for a, b in widths) * 2 + 2 * B * sum(
        a * b for a, b in widths[1:]
    )
    assert step_flops(mlp, B) == formula, B
print(
    "Eq. (eq-ch90-flops) matches FlopCounterMode for batch sizes", sizes["batch_sizes"]
)

# %% [markdown]
# Now the clock. Each step is forward, backward and an SGD update. After two warm-up calls of
# each, `dlbook.measure.interleaved_calls` times the batch sizes in turns, one step of each per
# round, so that a busy moment of the machine hits every batch size alike; we report the median
# over the rounds.


# %%
def make_step(batch, hidden):
    """One training step (forward, backward, SGD update) at a fixed batch size.

    Returns the step as a function of no arguments, ready to be timed.
    """
    model = make_mlp(hidden)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(batch, 784, device=device)  # (B, 784)
    y = torch.randint(0, 10, (batch,), device=device)

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    return step


calls = {B: make_step(B, sizes["hidden"]) for B in sizes["batch_sizes"]}
latencies = interleaved_calls(calls, rounds=sizes["n_repeat"], warmup=2, device=device)
step_time = {B: latencies[B].median / 1e3 for B in calls}  # seconds per step
for B, t in step_time.items():
    print(f"B = {B:5d}: {1e3 * t:8.3f} ms per step, {1e6 * t / B:9.2f} µs per example")

# %%
Bs = sizes["batch_sizes"]
fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
axes[0].loglog(Bs, [1e3 * step_time[B] for B in Bs], "o-")
axes[0].set(title="time per step", xlabel="batch size B", ylabel="ms")
axes[1].loglog(Bs, [1e6 * step_time[B] / B for B in Bs], "o-", color="C1")
axes[1].set(title="time per example", xlabel="batch size B", ylabel="µs")
plt.tight_layout()
plt.show()

# %% [markdown]
# **Figure 90.3.** Median time of one training step of the MLP (left) and that time divided by
# the batch size (right), against the batch size $B$, on log-log axes; the machine is named in
# the output below.

# %%
B_small, B_large = Bs[0], Bs[-1]
step_ratio = step_time[B_large] / step_time[B_small]
per_example_speedup = (step_time[B_small] / B_small) / (step_time[B_large] / B_large)
dlbook.glue("B_small", B_small)
dlbook.glue("B_large", B_large)
dlbook.glue("flops_ratio", step_flops(mlp, B_large) / step_flops(mlp, B_small))
dlbook.headline("step_ratio", step_ratio, profile=profile, fmt="{:.1f}")
dlbook.hardware_headline(
    "per_example_speedup", per_example_speedup, profile=profile, fmt="{:.1f}"
)
# the same ratio round by round (rounds pair the two batch sizes in time): median, IQR
round_ratios = (
    np.array(latencies[B_small].runs_ms)
    * B_large
    / (np.array(latencies[B_large].runs_ms) * B_small)
)
q25, q50, q75 = np.percentile(round_ratios, [25, 50, 75])
best_B = min(Bs, key=lambda B: step_time[B] / B)  # lowest time per example
print(
    f"per-round speedup: median {q50:.1f}, IQR {q25:.1f} to {q75:.1f}; "
    f"lowest time per example at B = {best_B}"
)
dlbook.glue("speedup_round_median", q50)
dlbook.glue("speedup_round_q25", q25)
dlbook.glue("speedup_round_q75", q75)
dlbook.glue("best_B", best_B)
if profile == "full":  # what the prose says: the large batch is cheaper per example
    assert per_example_speedup > 1
prov = dlbook.env.last_provenance()
print(
    f"measured on {prov.device} ({prov.device_name}), {prov.threads} CPU threads, "
    f"torch {prov.torch}"
)

# %% [markdown]
# A step at batch {glue:text}`B_large` costs {glue:text}`flops_ratio:.0f` times the matrix-multiply
# FLOPs of a step at batch {glue:text}`B_small` and took {glue:text}`step_ratio` times as long on the
# machine named in the line above. Per example, the large batch was
# {glue:text}`per_example_speedup` times faster (round by round: median
# {glue:text}`speedup_round_median:.1f`, interquartile range {glue:text}`speedup_round_q25:.1f` to
# {glue:text}`speedup_round_q75:.1f`): that is the true part of the slogan. Of the batch sizes
# timed, the time per example was lowest at $B =$ {glue:text}`best_B`; it need not fall all the
# way to the largest batch. Whether
# the fewer, larger steps reach a given validation loss sooner is a separate question with its
# own limits, the *critical batch size* beyond which doubling the batch no longer halves the
# number of steps {cite}`mccandlish2018empirical,shallue2019measuring`; large batches usually
# also need a retuned learning rate {cite}`goyal2017accurate`.
#
# ## 7. "Gradient accumulation saves backward compute"
#
# **Wrong:** accumulating gradients over $k$ micro-batches makes the backward pass cheaper.
# **Right:** it does exactly the arithmetic of the large batch, split in $k$ pieces. For a batch
# of $B$ examples cut into micro-batches $\mathcal B_1,\dots,\mathcal B_k$ of sizes $b_j$ and the
# mean loss $L = \frac1B\sum_{n} \ell_n$,
#
# $$
# \nabla L = \sum_{j=1}^{k} \frac{b_j}{B}\,\nabla L_j, \qquad L_j = \frac{1}{b_j}\sum_{n\in\mathcal B_j}\ell_n ,
# $$ (eq-ch90-accumulation)
#
# which for equal micro-batches is the familiar "divide each micro-batch loss by $k$". What
# accumulation changes is memory: autograd keeps the activations of only $b_j$ examples at a time.
# We measure all three: the gradient, the matrix-multiply FLOPs, and the bytes of activations that
# autograd saves for the backward pass (counted with `torch.autograd.graph.saved_tensors_hooks`).


# %%
def run_and_measure(model, xs, ys, weights):
    """Forward + backward over the micro-batches.

    Returns (gradient, FLOPs, backward calls, peak saved bytes).
    """
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    peak, n_backward = 0, 0
    model.zero_grad(set_to_none=True)
    with FlopCounterMode(display=False) as counter:
        for xb, yb, wt in zip(xs, ys, weights, strict=True):
            saved = {}

            def pack(t, saved=saved):
                if (
                    t.untyped_storage().data_ptr() not in params
                ):  # activations only, not the weights
                    saved[(t.data_ptr(), t.numel())] = (
                        t.numel() * t.element_size()
                    )  # each tensor once
                return t

            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                loss = F.cross_entropy(model(xb), yb) * wt
            peak = max(peak, sum(saved.values()))
            loss.backward()
            n_backward += 1
    grad = torch.cat([p.grad.flatten() for p in model.parameters()])
    return grad, counter.get_total_flops(), n_backward, peak


B_acc, k_acc = sizes["accum_batch"], sizes["accum_k"]
xa = torch.randn(B_acc, 784, device=device)  # (B, 784)
ya = torch.randint(0, 10, (B_acc,), device=device)
model = make_mlp(sizes["hidden"])
big = run_and_measure(model, [xa], [ya], [1.0])
xs, ys = xa.tensor_split(k_acc), ya.tensor_split(k_acc)
acc = run_and_measure(
    model, xs, ys, [len(xb) / B_acc for xb in xs]
)  # Eq. (eq-ch90-accumulation)
unscaled = run_and_measure(model, xs, ys, [1.0] * k_acc)  # forgot the b_j / B
torch.testing.assert_close(acc[0], big[0], atol=1e-6, rtol=1e-4)
torch.testing.assert_close(unscaled[0], k_acc * big[0], atol=1e-5, rtol=1e-4)
assert acc[1] == big[1]  # the same matrix-multiply FLOPs

# %%
# Unequal micro-batches need the b_j / B weights: 1/k is only right when all sizes are
# equal.
cuts = [B_acc // 2, B_acc // 2 + B_acc // 4]  # sizes B/2, B/4, B/4
xs_u, ys_u = xa.tensor_split(cuts), ya.tensor_split(cuts)
weighted = run_and_measure(model, xs_u, ys_u, [len(xb) / B_acc for xb in xs_u])[0]
one_over_k = run_and_measure(model, xs_u, ys_u, [1 / len(xs_u)] * len(xs_u))[0]
torch.testing.assert_close(weighted, big[0], atol=1e-6, rtol=1e-4)
unequal_error = ((one_over_k - big[0]).norm() / big[0].norm()).item()
assert unequal_error > 1e-3
dlbook.glue("unequal_error", 100 * unequal_error)

# %%
accumulation_table = {
    "": [
        "backward calls",
        "matmul FLOPs",
        "peak saved activations (kB)",
        "gradient vs one batch",
    ],
    f"one batch of {B_acc}": [big[2], big[1], big[3] / 1e3, "reference"],
    f"{k_acc} micro-batches of {B_acc // k_acc}": [
        acc[2],
        acc[1],
        acc[3] / 1e3,
        "equal",
    ],
}
for key, column in accumulation_table.items():
    print(
        f"{key:22s}"
        + "".join(
            f"{v!s:>30s}" if isinstance(v, str) else f"{v:>30,.0f}" for v in column
        )
    )
flops_acc_ratio = acc[1] / big[1]
memory_ratio = acc[3] / big[3]
dlbook.headline(
    "flops_acc_ratio",
    flops_acc_ratio,
    profile=profile,
    at_least=1.0,
    at_most=1.0,
    fmt="{:.2f}",
)
dlbook.headline(
    "memory_ratio", memory_ratio, profile=profile, at_most=2.0 / k_acc, fmt="{:.3f}"
)
dlbook.glue("accum_k", k_acc)
dlbook.glue("accum_batch", B_acc)

# %% [markdown]
# With {glue:text}`accum_k` micro-batches the model makes {glue:text}`accum_k` backward calls
# instead of one, and the counted matrix-multiply FLOPs are exactly the same (ratio
# {glue:text}`flops_acc_ratio`): no backward compute is saved. The gradient is the one-batch
# gradient, as Eq. {eq}`eq-ch90-accumulation` says. What went down is the memory autograd holds:
# the peak of saved activations is {glue:text}`memory_ratio` of the one-batch peak. Two more ways
# to get it wrong, both checked above: summing unscaled micro-batch losses gives a gradient
# {glue:text}`accum_k` times too large, and dividing by $k$ when the micro-batches are unequal
# was off by {glue:text}`unequal_error:.1f` % here.
#
# ## Summary
#
# - Attention divides the logits by $\sqrt{d_k}$, which keeps their variance at 1; dividing by
#   $d_k$ makes the attention nearly uniform as $d_k$ grows.
# - LayerNorm subtracts the mean; without it the layer is RMSNorm, and the error hides on inputs
#   that happen to be centred.
# - The ReLU sits between the two linear layers of the feed-forward network; outside, the network
#   collapses to one linear layer with a non-negative output.
# - Pooling shrinks height and width channel by channel; a $1\times1$ convolution changes channels.
# - Sinusoidal encodings divide the position by $10000^{2i/d}$, with one frequency per sine/cosine
#   pair; that is what makes a shift a fixed rotation.
# - A larger batch makes each step more expensive, in exact proportion to $B$ in matrix-multiply
#   FLOPs; it can make each example cheaper. Gradient accumulation does the same arithmetic as the
#   large batch and
#   saves memory, not compute; its gradient equals the large batch's only when every example is
#   computed on its own (not with BatchNorm in training mode).
#
# ## Exercises
#
# :::{exercise}
# :label: ch90-ex-variance
# The entries of $q$ are independent with mean 0 and standard deviation $\sigma_q$, those of $k$
# with $\sigma_k$ (not 1). What is $\operatorname{Var}(q\cdot k)$, and by what must the logits be
# divided to have variance 1? Write `my_divisor(sigma_q, sigma_k, d_k)`; then measure it: draw
# `q = 3 * torch.randn(n, d_k)` and `k = 0.5 * torch.randn(n, d_k)` for several $d_k$, and compare
# the variance of `(q * k).sum(-1)` divided by your divisor with the one divided by $\sqrt{d_k}$.
# :::


# %%
def my_divisor(sigma_q, sigma_k, d_k):
    raise NotImplementedError  # your code here


dlbook.exercises.check("ch90.attention_divisor", my_divisor)

# %% [markdown]
# ```{solution-start} ch90-ex-variance
# :class: dropdown
# ```
#
# Each term $q_jk_j$ has mean 0 and variance
# $\mathbb E[q_j^2]\,\mathbb E[k_j^2] = \sigma_q^2\sigma_k^2$, so
# $\operatorname{Var}(q\cdot k) = d_k\sigma_q^2\sigma_k^2$ and the logits need a division by
# $\sigma_q\sigma_k\sqrt{d_k}$.


# %% tags=["solution"]
def my_divisor(sigma_q, sigma_k, d_k):
    return sigma_q * sigma_k * math.sqrt(d_k)  # the standard deviation of q . k


assert dlbook.exercises.check("ch90.attention_divisor", my_divisor)

# %% tags=["solution"]
g = torch.Generator().manual_seed(0)
var_ours, var_sqrt = {}, {}
for d_k in sizes["d_ks"]:
    q = 3.0 * torch.randn(20_000, d_k, generator=g)  # (n, d_k), sigma_q = 3
    k = 0.5 * torch.randn(20_000, d_k, generator=g)  # sigma_k = 0.5
    dots = (q * k).sum(-1)  # (n,)
    var_ours[d_k] = (dots / my_divisor(3.0, 0.5, d_k)).var().item()
    var_sqrt[d_k] = (dots / math.sqrt(d_k)).var().item()
    print(
        f"d_k = {d_k:5d}: variance {var_ours[d_k]:.3f} (your divisor), "
        f"{var_sqrt[d_k]:.3f} (sqrt(d_k))"
    )
assert all(0.9 < v < 1.1 for v in var_ours.values())
assert all(1.8 < v < 2.7 for v in var_sqrt.values())  # (3 * 0.5)^2 = 2.25

# %% [markdown]
# With $\sigma_q\sigma_k = 1.5$, dividing by $\sqrt{d_k}$ alone leaves a variance near
# $1.5^2 = 2.25$ at every $d_k$. In a trained model the projections are free to choose the scale of
# $q$ and $k$; the $\sqrt{d_k}$ of Eq. {eq}`eq-ch90-attention` is the right divisor for the
# unit-variance case that Eq. {eq}`eq-ch90-variance` assumes.
#
# ```{solution-end}
# ```
#
# :::{exercise}
# :label: ch90-ex-rmsnorm
# A model was trained with `nn.LayerNorm`. Someone re-implements it for deployment with the
# no-mean form and tests it against `nn.LayerNorm` on `torch.randn` inputs of width 768 with a
# loose tolerance, `atol=0.3`. Measure how far apart the two forms are on such inputs and on
# inputs after a ReLU, and design a test that would have caught the bug. Check that your test fails
# the no-mean form and passes a correct LayerNorm.
# :::
#
# ```{solution-start} ch90-ex-rmsnorm
# :class: dropdown
# ```

# %% tags=["solution"]
d_wide = 768
g = torch.Generator().manual_seed(0)
randn_wide = torch.randn(64, d_wide, generator=g).to(device)  # (64, 768)
relu_wide = torch.relu(torch.randn(64, d_wide, generator=g)).to(device)  # after a ReLU
ln_wide = nn.LayerNorm(d_wide).to(device)  # gamma = 1, beta = 0
gaps = {}
for name, x_ in (("randn", randn_wide), ("relu", relu_wide)):
    with torch.no_grad():
        wrong_ = norm_without_mean(x_, ln_wide.weight, ln_wide.bias)
        gaps[name] = (wrong_ - ln_wide(x_)).abs().max().item()
row_mean_sd = randn_wide.mean(-1).std().item()  # spread of the row means around 0
print(
    f"width {d_wide}: row means of randn rows spread by {row_mean_sd:.3f}; largest "
    f"difference {gaps['randn']:.3f} on randn rows, {gaps['relu']:.2f} after a ReLU"
)
assert gaps["randn"] < 0.3 < gaps["relu"]  # the loose test passes; after a ReLU, fails
dlbook.glue("rms_randn_gap", gaps["randn"])
dlbook.glue("rms_relu_gap", gaps["relu"])
dlbook.glue("rms_row_mean_sd", row_mean_sd)


def passes_layer_norm_test(norm_fn):
    """Rows with a mean of 3 and unit spread vs nn.LayerNorm, float32 tolerances."""
    g1 = torch.Generator().manual_seed(1)
    x = (3 + torch.randn(32, d_wide, generator=g1)).to(device)  # (32, 768)
    with torch.no_grad():
        got, want = norm_fn(x, ln_wide.weight, ln_wide.bias), ln_wide(x)
    return torch.allclose(got, want, atol=1e-5, rtol=1.3e-6)


def right_norm(x, gamma, beta, eps=1e-5):  # Eq. (eq-ch90-layernorm)
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return gamma * (x - mu) / torch.sqrt(var + eps) + beta


assert passes_layer_norm_test(right_norm)
assert not passes_layer_norm_test(norm_without_mean)

# %% [markdown]
# On `randn` rows of width 768 the two forms differ by at most {glue:text}`rms_randn_gap:.3f`, so
# the loose test passes: the row means spread only {glue:text}`rms_row_mean_sd:.3f` around 0
# (about $1/\sqrt{768}$), which is nearly the one case in which the forms agree. After a ReLU the
# difference is {glue:text}`rms_relu_gap:.2f`. The tolerance, too, is far looser than float32
# rounding. Rows with a clearly non-zero mean (`3 + torch.randn(...)`), compared with
# `nn.LayerNorm` at float32's default tolerances, reject the no-mean form and accept the right one,
# as the cell checks. A larger mean with a smaller spread would be a worse test: float32
# cancellation in $x - \mu$ then eats most of the tolerance even for a correct LayerNorm.
#
# ```{solution-end}
# ```
#
# :::{exercise}
# :label: ch90-ex-pool
# A convolution produces a tensor of shape `(32, 64, 28, 28)`. What is the shape after
# `F.max_pool2d(x, kernel_size=2, stride=2)`, and how many parameters does that pooling layer
# have? Which layer would take the 64 channels down to 16 at the same height and width, and how
# many parameters would it have (with bias)? Check all three numbers in code.
# :::
#
# ```{solution-start} ch90-ex-pool
# :class: dropdown
# ```
#
# `(32, 64, 14, 14)` by Eq. {eq}`eq-ch90-pool`: $\lfloor(28-2)/2\rfloor+1 = 14$, channels
# unchanged, and no parameters at all. A $1\times1$ convolution `nn.Conv2d(64, 16, 1)` maps 64
# channels to 16 with $16\cdot64 + 16 = 1040$ parameters:

# %% tags=["solution"]
x_pool = torch.zeros(32, 64, 28, 28)
assert F.max_pool2d(x_pool, kernel_size=2, stride=2).shape == (32, 64, 14, 14)
assert sum(p.numel() for p in nn.MaxPool2d(2, 2).parameters()) == 0
reduce = nn.Conv2d(64, 16, kernel_size=1)
assert reduce(x_pool).shape == (32, 16, 28, 28)
assert sum(p.numel() for p in reduce.parameters()) == 16 * 64 + 16 == 1040

# %% [markdown]
# ```{solution-end}
# ```
#
# :::{exercise}
# :label: ch90-ex-accumulate
# Section 7 showed that accumulation reproduces the large batch's gradient for an MLP. Does it
# always? Write `my_accumulated_gradient(model, x, y, n_micro)`: cut the batch into `n_micro`
# micro-batches with `tensor_split`, call `backward` once per micro-batch on its mean
# cross-entropy weighted by its share $b_j/B$ of the batch, and return every parameter's
# gradient, flattened and concatenated in the order of `model.parameters()`. The hidden cases
# include micro-batches of unequal size and a model with BatchNorm. Then compare, for an MLP
# without normalisation, with LayerNorm and with BatchNorm (in training and in eval mode), the
# gradient accumulated over {glue:text}`accum_k` micro-batches with the one of the whole batch.
# :::


# %%
def my_accumulated_gradient(model, x, y, n_micro):
    raise NotImplementedError  # your code here


dlbook.exercises.check("ch90.accumulated_gradient", my_accumulated_gradient)

# %% [markdown]
# ```{solution-start} ch90-ex-accumulate
# :class: dropdown
# ```


# %% tags=["solution"]
def my_accumulated_gradient(model, x, y, n_micro):
    model.zero_grad(set_to_none=True)
    for xb, yb in zip(x.tensor_split(n_micro), y.tensor_split(n_micro), strict=True):
        loss = F.cross_entropy(model(xb), yb)  # mean over the micro-batch
        (loss * len(xb) / len(x)).backward()  # weight b_j / B; .grad adds up
    return torch.cat([p.grad.flatten() for p in model.parameters()])


assert dlbook.exercises.check("ch90.accumulated_gradient", my_accumulated_gradient)


# %% tags=["solution"]
def classifier(norm_layer, train=True):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 64), norm_layer, nn.ReLU(), nn.Linear(64, 10))
    return model.to(device).train(train)


variants = {
    "no normalisation": classifier(nn.Identity()),
    "LayerNorm": classifier(nn.LayerNorm(64)),
    "BatchNorm, training mode": classifier(nn.BatchNorm1d(64)),
    "BatchNorm, eval mode": classifier(nn.BatchNorm1d(64), train=False),
}
gap = {}
for name, net in variants.items():
    whole = my_accumulated_gradient(net, xa, ya, 1)  # one batch of B_acc
    pieces = my_accumulated_gradient(net, xa, ya, k_acc)
    gap[name] = ((pieces - whole).norm() / whole.norm()).item()
    print(f"{name:>25}: relative difference {gap[name]:.1e}")
assert max(gap[n] for n in variants if n != "BatchNorm, training mode") < 1e-5
assert gap["BatchNorm, training mode"] > 1e-2
dlbook.glue("bn_gap", 100 * gap["BatchNorm, training mode"])

# %% [markdown]
# With BatchNorm in training mode the accumulated gradient is off by
# {glue:text}`bn_gap:.0f` % of its norm: each micro-batch is normalised with its own mean and
# variance, so $k$ micro-batches compute a different function from the one batch, and no choice of
# weights $b_j/B$ repairs that. The identity of Eq. {eq}`eq-ch90-accumulation` needs a loss that
# is a sum over examples computed independently; LayerNorm (per example) and BatchNorm in eval
# mode (fixed statistics) keep that, and there the two gradients agree to rounding.
#
# ```{solution-end}
# ```
#
# :::{exercise}
# :label: ch90-ex-batch
# Doubling the batch from 32 to 64 made your epochs faster. Does that contradict "a larger batch
# makes each step more expensive"? What should you measure to decide whether the larger batch is
# actually better for your training run?
# :::
#
# :::{solution} ch90-ex-batch
# :class: dropdown
# No. An epoch at batch 64 has half as many steps; each step costs about twice the FLOPs, but
# while the hardware is under-used it takes less than twice the time, so the time per example and
# per epoch go down. The number that matters is the wall-clock time (or the compute) to reach a
# target validation loss. Beyond the critical batch size, doubling the batch no longer halves the
# number of steps needed, so the larger batch processes more examples for the same progress
# {cite}`mccandlish2018empirical`. Measure validation loss against wall-clock time for both batch
# sizes, each with its own tuned learning rate.
# :::
#
# ## Further reading
#
# - The Transformer paper, with the $\sqrt{d_k}$ scale, the feed-forward network and the
#   sinusoidal encodings {cite}`vaswani2017attention`; layer normalisation {cite}`ba2016layer` and
#   RMSNorm {cite}`zhang2019root`.
# - $1\times1$ convolutions {cite}`lin2014network`; the arithmetic of convolution and pooling
#   {cite}`dumoulin2016guide`.
# - Batch size and training time: large-batch SGD with learning-rate scaling
#   {cite}`goyal2017accurate`, the critical batch size {cite}`mccandlish2018empirical`, and a large
#   measurement study {cite}`shallue2019measuring`.
