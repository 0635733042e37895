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
# (ch06)=
# # 6. Attention from first principles
#
# A recurrent network reads a sequence one step at a time and must squeeze everything it has seen
# into one state vector. **Attention** lets every position look directly at every other position
# and decide, from the data, how much of each to take. It let a translation model look back at
# the words of the source sentence {cite}`bahdanau2015neural`, and it is the only operation that
# mixes positions in the Transformer {cite}`vaswani2017attention`. This
# chapter builds it from nothing, one tensor operation at a time, checks every step against
# PyTorch, forward and backward, and then trains it.
#
# By the end of this chapter you can
#
# 1. explain attention as a soft dictionary look-up and compute it by hand: similarities,
#    softmax, weighted sum;
# 2. write scaled dot-product attention with padding and causal masks, match
#    `F.scaled_dot_product_attention` in value and gradient, and handle a query that may attend
#    to nothing;
# 3. show by measurement why the logits are divided by $\sqrt{d_k}$, and what leaving it out does
#    to training;
# 4. write additive attention and multi-head attention (self- and cross-attention), load the
#    weights of `nn.MultiheadAttention` into it, and train it to look things up;
# 5. measure the quadratic memory of attention and say what a fused kernel such as
#    FlashAttention changes.

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
import contextlib
import math
import os

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import nn

import dlbook
import dlbook.exercises
from dlbook.measure import fixed_threads, interleaved_calls
from dlbook.memory import TensorMemoryTracker, peak_memory
from dlbook.nn.attention import (
    MultiHeadAttention,
    causal_mask,
    scaled_dot_product_attention,
)

device = dlbook.setup(seed=0)

# %% tags=["parameters", "hide-input"]
profile = os.environ.get("DLBOOK_PROFILE", "full")

# %% tags=["hide-input"]
sizes = dlbook.by_profile(
    profile,
    smoke=dict(
        d_ks=[4, 64, 1024],
        n_pairs=2_000,
        n_kurtosis=50_000,
        n_keys=64,
        n_queries=256,
        recall_steps=40,
        recall_seeds=[0],
        scale_steps=10,
        scale_seeds=[0, 1],
        lengths=[64, 128, 256],
        width_L=128,
        n_heads_cost=2,
        rounds=1,
    ),
    full=dict(
        d_ks=[2, 4, 8, 16, 32, 64, 128, 256, 512, 1024],  # key widths d_k, 64 included
        n_pairs=20_000,  # random query-key pairs per width, for the variance
        n_kurtosis=200_000,  # dot products per width for the kurtosis check
        n_keys=64,  # keys per query in the entropy and gradient test
        n_queries=1024,  # queries per set of keys in that test
        recall_steps=150,  # training steps of each look-up model (section 6.8)
        recall_seeds=[0, 1, 2],  # its seeds, each with a scale-0 control
        scale_steps=40,  # training steps per run in the scaling exercise
        scale_seeds=[0, 1, 2, 3, 4],  # seeds of the scaling exercise
        lengths=[128, 256, 512, 1024, 2048, 4096],  # lengths timed and measured, 6.9
        width_L=1024,  # sequence length of the head-width memory check
        n_heads_cost=4,  # heads in those cost measurements
        rounds=5,  # timing rounds per measurement
    ),
)
sizes

# %% [markdown]
# ## 6.1 A soft dictionary look-up
#
# A Python `dict` answers a query by finding the one key that equals it and returning that key's
# value. Attention does the same with vectors, softly: it scores the query against **every** key,
# turns the scores into weights that sum to one, and returns the weighted average of the values.
# For one query $q$, keys $k_1,\dots,k_n$ and values $v_1,\dots,v_n$:
#
# $$
# s_j = q\cdot k_j, \qquad a_j = \frac{e^{s_j}}{\sum_{l} e^{s_l}}, \qquad o = \sum_j a_j\, v_j .
# $$ (eq-soft-lookup)
#
# Four keys in three dimensions, each with a two-dimensional value, and a query that points
# roughly in the direction of the third key:

# %%
keys = torch.tensor(
    [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.7, 0.7, 0.0]]
)  # (n_keys=4, d_k=3)
values = torch.tensor(
    [[10.0, 0.0], [0.0, 10.0], [-10.0, 0.0], [5.0, 5.0]]
)  # (n_keys=4, d_v=2)
query = torch.tensor([0.1, 0.2, 3.0])  # (d_k=3,)

# %% [markdown]
# Step 1, similarity: one dot product per key.

# %%
scores = keys @ query  # (4,) = s_j = q . k_j
scores

# %% [markdown]
# Step 2, softmax: positive weights that sum to one. The biggest score takes most of the weight,
# but every key keeps a little: nothing is a hard choice, so gradients reach every key.

# %%
weights = torch.exp(scores) / torch.exp(scores).sum()  # (4,) = a_j
print(weights, "sum =", weights.sum().item())
assert weights.argmax() == scores.argmax() and weights.min() > 0

# %% [markdown]
# Step 3, the weighted sum of the values: closest to the third value, $(-10, 0)$, pulled towards
# the others by the weight they kept.

# %%
out = weights @ values  # (2,) = sum_j a_j v_j
print(out, "| nearest value:", torch.cdist(out[None], values).argmin().item())
assert torch.cdist(out[None], values).argmin() == 2

# %% [markdown]
# **Check.** PyTorch's fused function computes {eq}`eq-soft-lookup` when told not to scale
# (`scale=1.0`; the scaling comes in the next section). It wants a sequence axis for queries, so
# the single query becomes a sequence of length one.

# %%
# (1, 2): one query of length one
reference = F.scaled_dot_product_attention(query[None, :], keys, values, scale=1.0)
torch.testing.assert_close(out, reference[0])
print("soft look-up matches F.scaled_dot_product_attention(scale=1):", reference[0])

# %% [markdown]
# ## 6.2 Scaled dot-product attention
#
# With many queries at once, stack them as the rows of $Q$ ($L_q\times d_k$), the keys as the rows
# of $K$ ($L_k\times d_k$) and the values as the rows of $V$ ($L_k\times d_v$). All the dot
# products are one matrix product, the softmax runs along each row, and the weighted sums are a
# second matrix product:
#
# $$
# \mathrm{Attention}(Q,K,V) = \mathrm{softmax}\!\left(\frac{QK^\top}{\sqrt{d_k}} + M\right)V .
# $$ (eq-sdpa)
#
# The division by $\sqrt{d_k}$ is explained in the next section. $M$ is a **mask** added to the
# logits: $0$ where a query may look, $-\infty$ where it may not (a weight of $e^{-\infty}=0$).
# This book follows the convention of `F.scaled_dot_product_attention` for boolean masks:
# **`True` means "may attend"**. (`nn.MultiheadAttention` reads its boolean `attn_mask` the other
# way round, `True` = blocked; the checks below pass it `~mask`.) Leading dimensions (batch,
# heads) ride along untouched.


# %%
def attention(q, k, v, mask=None):
    """softmax(q k^T / sqrt(d_k) + mask) v, with a boolean mask (True = may attend)."""
    d_k = q.shape[-1]
    logits = q @ k.transpose(-2, -1) / math.sqrt(d_k)  # (..., L_q, L_k)
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf"))  # blocked pairs get weight 0
    weights = torch.softmax(logits, dim=-1)  # (..., L_q, L_k), each row sums to 1
    return weights @ v, weights  # (..., L_q, d_v), (..., L_q, L_k)


# %% [markdown]
# A batch of two sequences of length 6, self-attention (queries, keys and values from the same
# sequence, here random vectors to keep the check honest):

# %%
B, L, d_k, d_v = 2, 6, 8, 4
q = torch.randn(B, L, d_k, device=device)  # (B, L_q, d_k)
k = torch.randn(B, L, d_k, device=device)  # (B, L_k, d_k)
v = torch.randn(B, L, d_v, device=device)  # (B, L_k, d_v)
out, w = attention(q, k, v)
print("out", tuple(out.shape), "| weights", tuple(w.shape))
print("row sums", w.sum(-1)[0].tolist())

# %% [markdown]
# Every check compares the output **and** the gradients, since training uses both. The helper
# below runs a function, back-propagates a fixed random linear loss through it and returns the
# output with the gradients for $Q$, $K$ and $V$.


# %%
def forward_backward(fn, q, k, v):
    """fn(q, k, v) and the gradients of a fixed random loss with respect to q, k, v."""
    q, k, v = (t.detach().clone().requires_grad_() for t in (q, k, v))
    out = fn(q, k, v)
    g = torch.Generator().manual_seed(1)
    probe = torch.randn(out.shape, generator=g).to(out.device)  # loss = sum(out*probe)
    (out * probe).sum().backward()
    return out.detach(), q.grad, k.grad, v.grad


def max_diff(ours, theirs):
    """Assert that all pairs of tensors agree; return the largest difference."""
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b)
    return max((a - b).abs().max().item() for a, b in zip(ours, theirs, strict=True))


# %% [markdown]
# **Check 1, no mask.**

# %%
ours = forward_backward(lambda q, k, v: attention(q, k, v)[0], q, k, v)
theirs = forward_backward(F.scaled_dot_product_attention, q, k, v)
diff_nomask = max_diff(ours, theirs)
print(f"no mask: max |ours - torch| over output and gradients = {diff_nomask:.1e}")

# %% [markdown]
# **Check 2, a padding mask.** Sequences in a batch have different lengths; the shorter ones are
# padded, and no query should take anything from a padding position. The second sequence here has
# only 4 real tokens. The mask has shape $(B, 1, L_k)$ and broadcasts over the queries.

# %%
lengths = torch.tensor([6, 4], device=device)
# (B, L_k), True = a real token
pad_mask = torch.arange(L, device=device)[None, :] < lengths[:, None]
pad_mask = pad_mask[:, None, :]  # (B, 1, L_k): the same for every query
out_pad, w_pad = attention(q, k, v, mask=pad_mask)
ours = forward_backward(lambda q, k, v: attention(q, k, v, pad_mask)[0], q, k, v)
theirs = forward_backward(
    lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=pad_mask), q, k, v
)
diff_pad = max_diff(ours, theirs)
assert w_pad[1, :, 4:].sum() == 0 and ours[3][1, 4:].abs().sum() == 0
print(
    f"padding mask: max |ours - torch| = {diff_pad:.1e}; weight on padding = "
    f"{w_pad[1, :, 4:].sum().item()}, gradient reaching padded values = 0"
)

# %% [markdown]
# **Check 3, a causal mask.** A language model that predicts the next token must not peek at it:
# position $t$ may attend to positions $\le t$ only, a lower-triangular mask.

# %%
tri = causal_mask(L, device)  # (L, L) lower triangle of True
print(tri.int())
out_causal, w_causal = attention(q, k, v, mask=tri)
ours = forward_backward(lambda q, k, v: attention(q, k, v, tri)[0], q, k, v)
theirs = forward_backward(
    lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True), q, k, v
)
diff_causal = max_diff(ours, theirs)
assert (w_causal[:, ~tri] == 0).all()  # every key after its query: weight exactly 0
print(f"causal mask: max |ours - torch| = {diff_causal:.1e}")

# %%
fig, axes = plt.subplots(1, 3, figsize=(10, 3.2))
panels = [w[1], w_pad[1], w_causal[1]]
titles = ["no mask", "padding (4 real tokens)", "causal"]
for ax, mat, title in zip(axes, panels, titles, strict=True):
    ax.imshow(mat.cpu(), cmap="Blues", vmin=0, vmax=1)
    ax.set(title=title, xlabel="key position", ylabel="query position")
plt.tight_layout()
plt.show()

# %% [markdown]
# **Figure 6.1.** Attention weights of the second sequence under the three masks (darker =
# larger weight, each row sums to 1). Blocked pairs get a weight of exactly zero.
#
# The book's packaged version, `dlbook.nn.attention.scaled_dot_product_attention`, is the same
# computation with argument checks (each bad input gets an error that names it), additive float
# masks, a `causal` flag, an optional `scale`, dropout on the weights, and a safe treatment of a
# query that may attend to nothing (next paragraph). It returns the weights too. Later chapters
# import it.

# %%
dlbook.show(scaled_dot_product_attention)

# %%
for mask in (None, pad_mask, tri):
    packaged = forward_backward(
        lambda q, k, v, m=mask: scaled_dot_product_attention(q, k, v, mask=m)[0],
        q,
        k,
        v,
    )
    cells = forward_backward(lambda q, k, v, m=mask: attention(q, k, v, m)[0], q, k, v)
    max_diff(packaged, cells)
flag, _ = scaled_dot_product_attention(q, k, v, causal=True)  # the causal=True flag
torch.testing.assert_close(flag, out_causal)
worst = max(diff_nomask, diff_pad, diff_causal)
dlbook.headline("sdpa_max_diff", worst, profile=profile, at_most=1e-5, fmt="{:.1e}")
print("the packaged function agrees with the cells above, for all three masks")

# %% [markdown]
# **A query with nothing to attend to.** Masks can combine so that some query may attend to no
# key at all: a causal mask on a sequence padded on the left (its first queries may see only
# padding), or a sequence that is all padding. Its
# logits are all $-\infty$, and $e^{-\infty}/\sum e^{-\infty} = 0/0$: the plain softmax returns
# `NaN`. Worse, the backward pass then sends `NaN` into the gradients, and one `NaN` gradient
# spoils every weight it updates. Here query 2 is blocked from every key, with the mask in its
# additive (float) form:

# %%
blocked = torch.zeros(L, L, device=device)  # additive mask: 0 = attend
blocked[2] = float("-inf")  # query 2 may attend to nothing


def naive_float_mask(q, k, v):
    logits = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]) + blocked  # (B, L, L)
    return torch.softmax(logits, dim=-1) @ v


naive = forward_backward(naive_float_mask, q, k, v)
packaged = forward_backward(
    lambda q, k, v: scaled_dot_product_attention(q, k, v, mask=blocked)[0], q, k, v
)
theirs = forward_backward(
    lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=blocked), q, k, v
)
for name, res in (("plain softmax", naive), ("packaged", packaged), ("torch", theirs)):
    nan_grads = [bool(g.isnan().any()) for g in res[1:]]
    print(
        f"{name:13s} output of query 2: {res[0][0, 2].tolist()} | "
        f"NaN in the gradients of q, k, v: {nan_grads}"
    )
assert all(g.isnan().any() for g in naive[1:])
max_diff(packaged, theirs)
assert torch.all(packaged[0][:, 2] == 0) and torch.all(packaged[1][:, 2] == 0)

# %% [markdown]
# `F.scaled_dot_product_attention` returns zeros for such a row, and the packaged function makes
# the same choice: it detects rows whose logits are all $-\infty$, gives them finite logits before
# the softmax (so neither pass sees $0/0$) and sets their weights to zero afterwards. The output
# there is $0$ and no gradient flows through it; the check above matches PyTorch's output and
# gradients. (What `nn.MultiheadAttention` returns for a sequence that is all padding depends on
# how it is called; section 6.5 shows the cases. The book's `MultiHeadAttention`
# returns zero heads there, whatever the call.)
#
# ## 6.3 Why divide by $\sqrt{d_k}$?
#
# Take $q$ and $k$ with independent entries of mean 0 and variance 1. Their dot product is a sum
# of $d_k$ independent products, each of mean 0 and variance 1, so
#
# $$
# \mathbb{E}[q\cdot k] = 0, \qquad \mathrm{Var}(q\cdot k) = d_k .
# $$ (eq-dot-variance)
#
# The logits grow with the width of the vectors: for $d_k=512$ their standard deviation is
# $\sqrt{512}\approx 22.6$. Dividing by $\sqrt{d_k}$ brings the variance back to exactly 1 whatever
# $d_k$ is; dividing by $d_k$ (a tempting wrong form) overshoots to $1/d_k$. We measure all three.

# %%
scalings = {
    "none": lambda d: 1.0,
    "1/sqrt(d_k)": lambda d: 1 / math.sqrt(d),
    "1/d_k": lambda d: 1 / d,
}
variance = {name: [] for name in scalings}
for d in sizes["d_ks"]:
    qs = torch.randn(sizes["n_pairs"], d, device=device)  # (n_pairs, d_k), variance 1
    ks = torch.randn(sizes["n_pairs"], d, device=device)
    dots = (qs * ks).sum(-1)  # (n_pairs,) one dot product per pair
    for name, s in scalings.items():
        variance[name].append((s(d) * dots).var().item())
for i, d in enumerate(sizes["d_ks"]):
    print(
        f"d_k={d:5d}  var(q.k)={variance['none'][i]:8.2f}  "
        f"var(q.k/sqrt(d_k))={variance['1/sqrt(d_k)'][i]:.3f}  "
        f"var(q.k/d_k)={variance['1/d_k'][i]:.5f}"
    )

# %% [markdown]
# **Check** of {eq}`eq-dot-variance` against the measurement: how far from 1 may the ratio of
# measured variance to $d_k$ be? A variance estimated from $n$ samples has, for large $n$, a
# relative standard error of $\sqrt{(\kappa-1)/n}$, where
# $\kappa = \mathbb{E}[(x-\mu)^4]/\mathrm{Var}(x)^2$ is the kurtosis of what is sampled. The
# familiar $\sqrt{2/n}$ is the Gaussian case, $\kappa = 3$; but a dot product is not Gaussian.
# With Gaussian entries, one product $q_ik_i$ has
# $\mathbb{E}[(q_ik_i)^4] = \mathbb{E}[q_i^4]\,\mathbb{E}[k_i^4] = 3\cdot 3 = 9$, so kurtosis 9;
# fourth cumulants add over independent terms while variances add too, so the excess kurtosis
# $\kappa-3$ of a sum of $d_k$ such products is $6/d_k$:
#
# $$
# \kappa(q\cdot k) = 3 + \frac{6}{d_k}, \qquad
# \text{relative standard error of the variance} = \sqrt{\frac{2 + 6/d_k}{n}} .
# $$ (eq-kurtosis)
#
# First the kurtosis itself, measured on many fresh pairs and compared with {eq}`eq-kurtosis`
# within 5 of its own standard errors:

# %%
for d in (1, 2, 8, 64):
    n = sizes["n_kurtosis"]
    z = (torch.randn(n, d) * torch.randn(n, d)).sum(-1)  # (n,) dot products
    z = (z - z.mean()) / z.std()  # standardised
    kurt, kurt_se = (z**4).mean().item(), ((z**4).std() / math.sqrt(n)).item()
    print(
        f"d_k={d:3d}: measured kurtosis {kurt:.2f} +- {kurt_se:.2f}, "
        f"3 + 6/d_k = {3 + 6 / d:.2f}, Gaussian = 3"
    )
    assert abs(kurt - (3 + 6 / d)) < 5 * kurt_se

# %% [markdown]
# Then the error statement: repeat the whole variance measurement 400 times with $n = 1000$
# pairs each and look at the spread of the 400 estimates of $\mathrm{Var}(q\cdot k)/d_k$.

# %%
n_rep, n_each = 400, 1000
rel_sd = {}
for d in (1, 2, 16):
    q_rep, k_rep = torch.randn(n_rep, n_each, d), torch.randn(n_rep, n_each, d)
    dots = (q_rep * k_rep).sum(-1)  # (400, 1000): 400 samples of 1000 dot products
    rel_sd[d] = (dots.var(dim=-1) / d).std().item()  # spread of the 400 estimates
    print(
        f"d_k={d:2d}: relative sd measured {rel_sd[d]:.4f} | sqrt((2 + 6/d_k)/n) = "
        f"{math.sqrt((2 + 6 / d) / n_each):.4f} | Gaussian sqrt(2/n) = "
        f"{math.sqrt(2 / n_each):.4f}"
    )
    assert abs(rel_sd[d] / math.sqrt((2 + 6 / d) / n_each) - 1) < 0.15
# the Gaussian formula is off by a factor of about 2 at d_k = 1
assert rel_sd[1] > 1.5 * math.sqrt(2 / n_each)
dlbook.glue("rel_sd_gauss_factor", rel_sd[1] / math.sqrt(2 / n_each))

# %% [markdown]
# The spread follows {eq}`eq-kurtosis`; at $d_k = 1$ the Gaussian formula understates it by a
# factor of {glue:text}`rel_sd_gauss_factor:.1f`. With the right standard error, every measured
# ratio $\mathrm{Var}(q\cdot k)/d_k$ above lies within 5 standard errors of 1:

# %%
n = sizes["n_pairs"]
d_ks = torch.tensor(sizes["d_ks"], dtype=torch.float32)
ratio = torch.tensor(variance["none"]) / d_ks  # Var(q.k) / d_k
se = torch.tensor([math.sqrt((2 + 6 / d) / n) for d in sizes["d_ks"]])
print("var(q.k) / d_k =", [round(r, 3) for r in ratio.tolist()])
print("in standard errors from 1:", [round(z, 1) for z in ((ratio - 1) / se).tolist()])
assert ((ratio - 1).abs() < 5 * se).all()
dlbook.glue("var_ratio_worst", (ratio - 1).abs().max().item())

# %% [markdown]
# What the logit variance does to attention: for each $d_k$, 8 independent sets of 64 random keys,
# many random queries for each set, the three scalings, and two measurements:
#
# - the **entropy** of each row of weights, $H = -\sum_j a_j\ln a_j$, between 0 (all weight on
#   one key) and $\ln 64 \approx 4.16$ (uniform: attention that cannot choose);
# - the **gradient size**: the norm of $\partial \ell/\partial q$ for a random linear loss $\ell$
#   on the output (median over queries), the signal that trains the query projection.


# %%
def entropy_and_grad(d, s, n_queries, n_keys, n_sets=8):
    # S independent sets of keys, each with its own queries
    q = torch.randn(n_sets, n_queries, d, device=device)  # (S, n_q, d_k)
    q.requires_grad_()
    k = torch.randn(n_sets, n_keys, d, device=device)  # (S, n_k, d_k)
    v = torch.randn(n_sets, n_keys, d, device=device) / math.sqrt(d)  # (S, n_k, d)
    weights = torch.softmax(s * q @ k.mT, dim=-1)  # (S, n_q, n_k)
    entropy = -torch.special.xlogy(weights, weights).sum(-1)  # (S, n_q), 0 log 0 = 0
    probe = torch.randn(n_sets, n_queries, d, device=device)  # a random linear loss
    ((weights @ v) * probe).sum().backward()
    return entropy.mean().item(), q.grad.norm(dim=-1).median().item()


entropy = {name: [] for name in scalings}
grad = {name: [] for name in scalings}
for d in sizes["d_ks"]:
    for name, s in scalings.items():
        e, g = entropy_and_grad(d, s(d), sizes["n_queries"], sizes["n_keys"])
        entropy[name].append(e)
        grad[name].append(g)
for i, d in enumerate(sizes["d_ks"]):
    ents = " ".join(f"{n}: {entropy[n][i]:.2f}" for n in scalings)
    grads = " ".join(f"{n}: {grad[n][i]:.2g}" for n in scalings)
    print(f"d_k={d:5d}  entropy {ents} | gradient {grads}")

# %%
fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
for name in scalings:
    axes[0].loglog(sizes["d_ks"], variance[name], "o-", label=name)
    axes[1].semilogx(sizes["d_ks"], entropy[name], "o-", label=name)
    axes[2].loglog(sizes["d_ks"], grad[name], "o-", label=name)
axes[1].axhline(
    math.log(sizes["n_keys"]), color="gray", ls=":", label="ln(n_keys): uniform"
)
axes[0].set(title="variance of the logits", xlabel="$d_k$", ylabel="Var")
axes[1].set(title="entropy of the attention weights", xlabel="$d_k$", ylabel="nats")
axes[2].set(
    title=r"median $\|\partial \ell / \partial q\|$",
    xlabel="$d_k$",
    ylabel="gradient norm",
)
for ax in axes:
    ax.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# **Figure 6.2.** The three scalings of the logits against the width $d_k$ of the vectors: the
# variance of the logits (left), the mean entropy of a row of weights over 64 keys (middle) and
# the median gradient reaching the queries (right).

# %%
big = -1  # the widest d_k measured
dlbook.glue("dk_big", sizes["d_ks"][big])
dlbook.glue("ent_none_big", entropy["none"][big])
dlbook.glue("ent_sqrt_big", entropy["1/sqrt(d_k)"][big])
dlbook.glue("ent_dk_big", entropy["1/d_k"][big])
dlbook.glue("ent_uniform", math.log(sizes["n_keys"]))
dlbook.glue("grad_none_big", grad["none"][big])
dlbook.glue("grad_sqrt_big", grad["1/sqrt(d_k)"][big])
dlbook.glue("grad_dk_big", grad["1/d_k"][big])
wide = [i for i, d in enumerate(sizes["d_ks"]) if d >= 16]  # the widths from 16 up
ent_wide = [entropy["1/sqrt(d_k)"][i] for i in wide]
grad_wide = [grad["1/sqrt(d_k)"][i] for i in wide]
ent_sqrt_range = max(ent_wide) - min(ent_wide)
grad_sqrt_ratio = max(grad_wide) / min(grad_wide)
dlbook.glue("ent_sqrt_range", ent_sqrt_range)
dlbook.glue("grad_sqrt_ratio", grad_sqrt_ratio)
assert entropy["none"][big] < 0.5 < entropy["1/sqrt(d_k)"][big]  # none: near one-hot
assert entropy["1/d_k"][big] > 0.99 * math.log(sizes["n_keys"])  # 1/d_k: nearly uniform
assert grad["none"][big] < grad["1/sqrt(d_k)"][big] > grad["1/d_k"][big]
# the widths at which the unscaled gradient is the smaller one: all of them from one on
below = [
    g_none < g_sqrt
    for g_none, g_sqrt in zip(grad["none"], grad["1/sqrt(d_k)"], strict=True)
]
cross = below.index(True)  # the first such width
assert below == [False] * cross + [True] * (len(below) - cross)  # a single crossing
assert sizes["d_ks"][cross] > 64  # beyond the head width of the Transformer base model
i64 = sizes["d_ks"].index(64)
dlbook.glue("dk_grad_cross", sizes["d_ks"][cross])
dlbook.glue("grad_ratio_64", grad["none"][i64] / grad["1/sqrt(d_k)"][i64])
assert ent_sqrt_range < 0.2 and grad_sqrt_ratio < 1.5  # 1/sqrt(d_k): steady in d_k
assert all(max(grad[n]) / min(grad[n]) > 5 for n in ("none", "1/d_k"))  # others vary

# %% [markdown]
# At $d_k=$ {glue:text}`dk_big` the three scalings behave very differently:
#
# | scaling | entropy (nats; uniform = {glue:text}`ent_uniform:.2f`) | median gradient norm |
# |---|---|---|
# | none | {glue:text}`ent_none_big:.2f` | {glue:text}`grad_none_big:.2g` |
# | $1/\sqrt{d_k}$ | {glue:text}`ent_sqrt_big:.2f` | {glue:text}`grad_sqrt_big:.2g` |
# | $1/d_k$ | {glue:text}`ent_dk_big:.2f` | {glue:text}`grad_dk_big:.2g` |
#
# - **No scaling**: the logits spread with $\sqrt{d_k}$ and the softmax saturates to a near one-hot
#   choice (entropy towards 0). Its Jacobian, $\mathrm{diag}(a)-aa^\top$, shrinks with it, but
#   the gradient reaching a query also carries the scale $s$ itself: with logits
#   $z_j = s\,q\cdot k_j$, $\partial\ell/\partial q = s\sum_j (\partial\ell/\partial z_j)\,k_j$,
#   and $s=1$ is $\sqrt{d_k}$ times $1/\sqrt{d_k}$. So at every width below
#   {glue:text}`dk_grad_cross` the unscaled gradient is the **larger** one (at $d_k=64$,
#   {glue:text}`grad_ratio_64:.1f` times the scaled one); from $d_k=$
#   {glue:text}`dk_grad_cross` on, saturation wins and it collapses, to the value in the table at
#   $d_k=$ {glue:text}`dk_big`. The trouble at moderate widths is not a small gradient but a
#   choice made before training: the exercise on the scale below measures it.
# - **Divide by $d_k$**: the logits shrink like $1/\sqrt{d_k}$, every row drifts towards the
#   uniform average (entropy towards $\ln n$), attention can no longer pick anything out, and the
#   gradient shrinks too.
# - **Divide by $\sqrt{d_k}$**: unit-variance logits at every width; from $d_k=16$ up, the
#   entropy moved by {glue:text}`ent_sqrt_range:.2f` nats and the gradient by a factor of
#   {glue:text}`grad_sqrt_ratio:.2f`, where the other two scalings changed the gradient by more
#   than a factor of 5. Of the three, only this scaling keeps a freshly initialised layer's
#   behaviour steady as $d_k$ grows. An exercise below trains with and without it.
#
# ## 6.4 Additive attention
#
# The dot product is not the only way to score a query against a key. The attention of
# Bahdanau, Cho and Bengio's translation model {cite}`bahdanau2015neural` scores the decoder's
# state $s_{i-1}$ against each encoder state $h_j$ with a small network of one hidden layer, and
# its values are the encoder states themselves:
#
# $$
# e_{ij} = v_a^\top \tanh\!\big(W_a s_{i-1} + U_a h_j\big), \qquad
# \alpha_{ij} = \frac{e^{e_{ij}}}{\sum_l e^{e_{il}}}, \qquad c_i = \sum_j \alpha_{ij}\, h_j .
# $$ (eq-additive)
#
# Written for a whole batch, the hidden layer is computed for every (query, key) pair at once by
# broadcasting: a tensor of shape $(B, L_q, L_k, d_a)$.


# %%
class AdditiveAttention(nn.Module):
    """Bahdanau attention: scores from a one-hidden-layer network; values = h."""

    def __init__(self, d_query, d_key, d_hidden):
        super().__init__()
        self.W = nn.Linear(d_query, d_hidden, bias=False)  # W_a
        self.U = nn.Linear(d_key, d_hidden, bias=False)  # U_a
        self.v = nn.Linear(d_hidden, 1, bias=False)  # v_a

    def forward(self, s, h, mask=None):
        # s: (B, L_q, d_query) decoder states; h: (B, L_k, d_key) encoder states
        Ws = self.W(s)[:, :, None, :]  # (B, L_q, 1, d_hidden)
        Uh = self.U(h)[:, None, :, :]  # (B, 1, L_k, d_hidden)
        scores = self.v(torch.tanh(Ws + Uh)).squeeze(-1)  # (B, L_q, L_k) = e_ij
        if mask is not None:  # bool (B, 1, L_k) or (B, L_q, L_k), True = may attend
            scores = scores.masked_fill(~mask, float("-inf"))
        alpha = torch.softmax(scores, dim=-1)  # (B, L_q, L_k)
        return alpha @ h, alpha  # (B, L_q, d_key) = c_i, and the weights


# %% [markdown]
# **Check 1, the definition.** PyTorch has no additive attention to compare with, so the reference
# is {eq}`eq-additive` itself, computed one $(i, j)$ pair at a time with Python loops on a batch
# with padding:

# %%
torch.manual_seed(0)
additive = AdditiveAttention(d_query=5, d_key=7, d_hidden=6).to(device)
s_dec = torch.randn(2, 3, 5, device=device)  # (B, L_q=3, d_query=5) decoder states
h_enc = torch.randn(2, 4, 7, device=device)  # (B, L_k=4, d_key=7) encoder states
enc_real = torch.tensor([[True] * 4, [True] * 3 + [False]], device=device)  # (B, L_k)
c, alpha = additive(s_dec, h_enc, mask=enc_real[:, None, :])

W_a, U_a, v_a = additive.W.weight, additive.U.weight, additive.v.weight[0]
for b in range(2):
    for i in range(3):
        e_i = torch.stack(
            [
                v_a @ torch.tanh(W_a @ s_dec[b, i] + U_a @ h_enc[b, j])
                for j in range(4)
                if enc_real[b, j]
            ]
        )  # scores of real keys
        alpha_i = torch.exp(e_i) / torch.exp(e_i).sum()
        c_i = sum(a * h_enc[b, j] for j, a in enumerate(alpha_i))  # the weighted sum
        torch.testing.assert_close(c[b, i], c_i)
        torch.testing.assert_close(alpha[b, i, : len(alpha_i)], alpha_i)
assert torch.all(alpha[1, :, 3] == 0)
print("vectorised additive attention == the definition, pair by pair")

# %% [markdown]
# **Check 2, the gradients.** `torch.autograd.gradcheck` compares autograd's gradients with
# finite differences; in float64 the two agree closely enough to catch a wrong formula. The
# parameters join the inputs through `torch.func.functional_call`.

# %%
additive64 = AdditiveAttention(5, 7, 6).to(device, torch.float64)
params = {
    name: p.detach().clone().requires_grad_()
    for name, p in additive64.named_parameters()
}


def additive_output(s, h, W, U, v):
    weights = {"W.weight": W, "U.weight": U, "v.weight": v}
    args = (s, h, enc_real[:, None, :])
    return torch.func.functional_call(additive64, weights, args)[0]


inputs = (
    s_dec.double().requires_grad_(),
    h_enc.double().requires_grad_(),
    params["W.weight"],
    params["U.weight"],
    params["v.weight"],
)
assert torch.autograd.gradcheck(additive_output, inputs)
print("gradcheck passed for s, h, W_a, U_a and v_a")

# %% [markdown]
# The additive score costs a hidden layer for every (query, key) pair, and the code stores it: a
# tensor $d_a$ times larger than the score matrix. Vaswani et al. chose dot products because they
# run as fast matrix multiplications, and note that additive attention does better than
# *unscaled* dot products at large $d_k$ {cite}`vaswani2017attention`, where the previous section
# measured the saturation. The memory of the two, at 256 queries and keys of width 64, as the
# **peak memory** of one call (the most bytes of tensors alive at once; section 6.9 shows how
# `dlbook.memory.peak_memory` counts them):

# %%
with torch.no_grad():
    s_big = torch.randn(1, 256, 64, device=device)  # (B, L_q, d)
    h_big = torch.randn(1, 256, 64, device=device)  # (B, L_k, d)
    add_big = AdditiveAttention(64, 64, 64).to(device)
    mem_additive = peak_memory(lambda: add_big(s_big, h_big), device).peak_bytes
    mem_dot = peak_memory(lambda: attention(s_big, h_big, h_big), device).peak_bytes
dlbook.glue("mem_additive_ratio", mem_additive / mem_dot)
print(
    f"peak memory: additive {mem_additive / 2**20:.1f} MiB, "
    f"dot product {mem_dot / 2**20:.2f} MiB (ratio {mem_additive / mem_dot:.0f})"
)
assert mem_additive > 10 * mem_dot

# %% [markdown]
# ## 6.5 Multi-head attention
#
# One attention computes one weighted average per query, which blends whatever the query
# looked at into one vector. **Multi-head attention** runs $h$ attentions in parallel, each on its
# own learned projection of the input into a smaller space of $d_\text{head} = d_\text{model}/h$
# dimensions, and mixes their results with an output projection, so that different heads can
# attend to different things at once {cite}`vaswani2017attention`:
#
# $$
# \mathrm{head}_i = \mathrm{Attention}(X_q W_i^Q,\; X_k W_i^K,\; X_v W_i^V), \qquad
# \mathrm{MultiHead} = [\mathrm{head}_1;\dots;\mathrm{head}_h]\, W^O .
# $$ (eq-mha)
#
# In practice the $h$ projections $W_i^Q$ are the column blocks of one $d_\text{model}\times
# d_\text{model}$ matrix: project once, then **split** the last axis into $h$ heads. (PyTorch's
# `nn.Linear` stores $W^\top$ and adds a bias; the code follows it.) We take the weights from a
# PyTorch `nn.MultiheadAttention`, which keeps the three input projections stacked in one
# `in_proj_weight` of shape $(3d_\text{model}, d_\text{model})$.

# %%
d_model, n_heads = 16, 4
torch_mha = nn.MultiheadAttention(d_model, n_heads, batch_first=True).to(device).eval()
# PyTorch starts the biases at zero; make them non-zero so that the check sees them
assert torch_mha.in_proj_bias.abs().sum() == 0 == torch_mha.out_proj.bias.abs().sum()
with torch.no_grad():
    torch_mha.in_proj_bias.normal_()
    torch_mha.out_proj.bias.normal_()
W_q, W_k, W_v = torch_mha.in_proj_weight.detach().chunk(3)  # each (d_model, d_model)
b_q, b_k, b_v = torch_mha.in_proj_bias.detach().chunk(3)  # each (d_model,)
W_o, b_o = torch_mha.out_proj.weight.detach(), torch_mha.out_proj.bias.detach()
x = torch.randn(2, 5, d_model, device=device)  # (B, L, d_model)

# %% [markdown]
# Project, then split the last axis into heads and move the head axis forward, so that every head
# is an independent batch entry for `attention`:


# %%
def split_heads(t, n_heads):
    B, L, D = t.shape
    # (B, L, D) -> (B, L, H, D/H) -> (B, H, L, D/H)
    return t.view(B, L, n_heads, D // n_heads).transpose(1, 2)


Q = split_heads(x @ W_q.T + b_q, n_heads)  # (B, H, L, d_head)
K = split_heads(x @ W_k.T + b_k, n_heads)  # (B, H, L, d_head)
V = split_heads(x @ W_v.T + b_v, n_heads)  # (B, H, L, d_head)
print("Q per head:", tuple(Q.shape))

# %% [markdown]
# Attend in every head at once, concatenate the heads back along the feature axis (the inverse of
# the split) and apply the output projection:

# %%
heads, head_weights = attention(Q, K, V)  # (B, H, L, d_head), (B, H, L, L)
concat = heads.transpose(1, 2).reshape(2, 5, d_model)  # (B, L, H * d_head = d_model)
mha_out = concat @ W_o.T + b_o  # (B, L, d_model)
mha_out.shape

# %% [markdown]
# **Check** against `nn.MultiheadAttention` with the same weights, outputs and per-head weights
# (`average_attn_weights=False`; by default PyTorch returns the *average* over heads, checked
# too):

# %%
ref_out, ref_w = torch_mha(x, x, x, need_weights=True, average_attn_weights=False)
torch.testing.assert_close(mha_out, ref_out)
torch.testing.assert_close(head_weights, ref_w)
averaged = torch_mha(x, x, x)[1]  # the default: weights averaged over the heads
torch.testing.assert_close(averaged, head_weights.mean(dim=1))
diff_mha = (mha_out - ref_out).abs().max().item()
print(f"multi-head attention from scratch: max |ours - torch| = {diff_mha:.1e}")

# %% [markdown]
# The packaged `MultiHeadAttention` keeps four separate `nn.Linear` layers (`q_proj`, `k_proj`,
# `v_proj`, `out_proj`; Hugging Face's BERT also keeps separate query, key and value layers, and
# chapter 8 loads its weights into this module), takes the same masks as the function above plus
# PyTorch's `key_padding_mask`, and can copy the weights of an `nn.MultiheadAttention`. Its
# docstring lists where it differs from PyTorch's module on purpose (batch-first always, the mask
# convention, per-head weights, all-padding sequences).

# %%
dlbook.show(MultiHeadAttention.forward)

# %% [markdown]
# **Check**, forward and backward: the packaged module against the cells above, and against
# `nn.MultiheadAttention` with a causal mask and key padding, comparing the gradients of the
# input and of every projection (PyTorch's stacked `in_proj_weight` gradient splits into the
# three). Gradients summed over a batch and its positions can be much larger than 1, so each
# difference is reported relative to the largest entry of the tensor compared.


# %%
def max_rel_diff(ours, theirs):
    """Assert that all pairs agree; return max |a - b| / max(1, max |b|) over them."""
    max_diff(ours, theirs)  # asserts every pair
    # relative to the largest entry; absolute for tensors whose entries are all below 1
    return max(
        ((a - b).abs().max() / b.abs().max().clamp(min=1)).item()
        for a, b in zip(ours, theirs, strict=True)
    )


ours_mha = MultiHeadAttention(d_model, n_heads).to(device)
ours_mha = ours_mha.load_from_torch(torch_mha).eval()
pkg_out, pkg_w = ours_mha(x, x, x, need_weights=True)
torch.testing.assert_close(pkg_out, mha_out)
torch.testing.assert_close(pkg_w, head_weights)

# (B, L), True = padding, the convention of nn.MultiheadAttention
pad = torch.tensor([[False] * 5, [False] * 3 + [True] * 2], device=device)
x_ours, x_torch = x.clone().requires_grad_(), x.clone().requires_grad_()
out_ours, _ = ours_mha(x_ours, x_ours, x_ours, causal=True, key_padding_mask=pad)
out_torch, _ = torch_mha(
    x_torch,
    x_torch,
    x_torch,
    attn_mask=~causal_mask(5, device),
    key_padding_mask=pad,
    need_weights=False,
)
(out_ours**2).sum().backward()
(out_torch**2).sum().backward()
projections = (ours_mha.q_proj, ours_mha.k_proj, ours_mha.v_proj, ours_mha.out_proj)
# torch's stacked in_proj gradients split into q, k, v; then the output projection
torch_w = (*torch_mha.in_proj_weight.grad.chunk(3), torch_mha.out_proj.weight.grad)
torch_b = (*torch_mha.in_proj_bias.grad.chunk(3), torch_mha.out_proj.bias.grad)
diff_self = max_rel_diff(
    (
        out_ours,
        x_ours.grad,
        *(p.weight.grad for p in projections),
        *(p.bias.grad for p in projections),
    ),
    (out_torch, x_torch.grad, *torch_w, *torch_b),
)
print(
    f"self-attention: largest relative difference over output and gradients = "
    f"{diff_self:.1e}"
)
print(
    "packaged MultiHeadAttention == cells above == nn.MultiheadAttention, "
    "forward and backward, with causal mask and key padding"
)

# %% [markdown]
# **A sequence that is all padding.** Every query of such a sequence may attend to nothing. The
# packaged module returns zero heads there, so its output is the output projection's bias,
# whatever the call. What `nn.MultiheadAttention` returns depends on how it is called: here with
# the weights it returns by default, without them while autograd records, and without them under
# `torch.no_grad()` in eval mode, where PyTorch takes a separate fast path for inference.

# %%
# (B, L), True = padding: the second sequence is all padding
all_pad = torch.tensor([[False] * 5, [True] * 5], device=device)
x_in = x.clone().requires_grad_()  # autograd records
calls = {
    "need_weights=True (default)": lambda: torch_mha(
        x_in, x_in, x_in, key_padding_mask=all_pad
    )[0],
    "need_weights=False": lambda: torch_mha(
        x_in, x_in, x_in, key_padding_mask=all_pad, need_weights=False
    )[0],
}
padded_out = {name: fn()[1] for name, fn in calls.items()}  # (L, d_model) of sequence 2
with torch.no_grad():  # eval mode + no autograd: the inference fast path
    padded_out["need_weights=False, no_grad"] = calls["need_weights=False"]()[1]
    ours_out, _ = ours_mha(x, x, x, key_padding_mask=all_pad)
    padded_out["packaged module, no_grad"] = ours_out[1]
ours_out, _ = ours_mha(x_in, x_in, x_in, key_padding_mask=all_pad)
padded_out["packaged module"] = ours_out[1]
out_bias = torch_mha.out_proj.bias.detach()  # (d_model,), the same in both modules
bias_rows = out_bias.expand(5, d_model)  # (L, d_model): zero heads -> the bias
for name, o in padded_out.items():
    print(
        f"{name:30s} NaN: {bool(o.isnan().any())!s:5}  output = bias: "
        f"{torch.allclose(o, bias_rows)}"
    )
assert padded_out["need_weights=True (default)"].isnan().all()
torch.testing.assert_close(padded_out["need_weights=False"], bias_rows)
if device.type == "cpu":  # the fast path is a separate kernel on each device
    assert padded_out["need_weights=False, no_grad"].isnan().all()
for name in ("packaged module", "packaged module, no_grad"):
    torch.testing.assert_close(padded_out[name], bias_rows)

# %% [markdown]
# ## 6.6 Cross-attention
#
# So far queries, keys and values came from one sequence: **self-attention**. In
# **cross-attention** the queries come from one sequence and the keys and values from another,
# of another length and possibly another width: a translation decoder's positions (queries)
# reading the encoder's output (keys and values), as in Bahdanau's model and the Transformer's
# decoder {cite}`vaswani2017attention`. Nothing in {eq}`eq-sdpa` requires $L_q = L_k$: the
# weights become an $L_q\times L_k$ rectangle. `kdim` and `vdim` set the input width of the key
# and value projections, as in PyTorch.
#
# Here 5 decoder positions of width 16 read a memory of 9 positions of width 24; the second
# memory has only 6 real positions, so a `key_padding_mask` hides its last 3.

# %%
torch.manual_seed(1)
torch_cross = nn.MultiheadAttention(16, 4, kdim=24, vdim=24, batch_first=True)
torch_cross = torch_cross.to(device)
with torch.no_grad():
    torch_cross.in_proj_bias.normal_()
cross = MultiHeadAttention(16, 4, kdim=24, vdim=24).to(device)
cross = cross.load_from_torch(torch_cross)
target = torch.randn(2, 5, 16, device=device)  # (B, L_q=5, d_model): asks
memory = torch.randn(2, 9, 24, device=device)  # (B, L_k=9, kdim): answers
memory_pad = torch.zeros(2, 9, dtype=torch.bool, device=device)  # (B, L_k), True = pad
memory_pad[1, 6:] = True

runs = {}
for name, module in (("ours", cross), ("torch", torch_cross)):
    t_in, m_in = target.clone().requires_grad_(), memory.clone().requires_grad_()
    if name == "ours":
        out, w = module(
            t_in, m_in, m_in, key_padding_mask=memory_pad, need_weights=True
        )
    else:
        out, w = module(
            t_in, m_in, m_in, key_padding_mask=memory_pad, average_attn_weights=False
        )
    (out**2).sum().backward()
    runs[name] = (out.detach(), w.detach(), t_in.grad, m_in.grad)
cross_w, memory_grad = runs["ours"][1], runs["ours"][3]
print("weights", tuple(cross_w.shape), "(B, heads, L_q, L_k)")
assert torch.all(cross_w[1, ..., 6:] == 0) and torch.all(memory_grad[1, 6:] == 0)
# with kdim and vdim, torch keeps three separate projection weights
ours_params = (
    cross.q_proj.weight,
    cross.k_proj.weight,
    cross.v_proj.weight,
    cross.out_proj.weight,
    cross.out_proj.bias,
)
torch_params = (
    torch_cross.q_proj_weight,
    torch_cross.k_proj_weight,
    torch_cross.v_proj_weight,
    torch_cross.out_proj.weight,
    torch_cross.out_proj.bias,
)
ours_in_bias = torch.cat(
    [cross.q_proj.bias.grad, cross.k_proj.bias.grad, cross.v_proj.bias.grad]
)  # torch stacks the three biases
diff_cross = max_rel_diff(
    (*runs["ours"], *(p.grad for p in ours_params), ours_in_bias),
    (*runs["torch"], *(p.grad for p in torch_params), torch_cross.in_proj_bias.grad),
)
print(
    "cross-attention == nn.MultiheadAttention: output, weights, and gradients of the "
    "target, the memory and the projections"
)
print("padded memory positions get no weight and no gradient")

# %%
# outputs, weights and gradients of both checks
from_scratch = max_rel_diff(
    (mha_out, head_weights), (ref_out, ref_w)
)  # the cells above
worst = max(from_scratch, diff_self, diff_cross)
dlbook.headline("mha_max_diff", worst, profile=profile, at_most=1e-5, fmt="{:.1e}")

# %% [markdown]
# ## 6.7 What each head sees
#
# Different heads can follow different relationships because each has its own projections. To
# see this without training, we **set** the weights of a two-head layer by hand on a toy input.
# Each token is a vector of 16 numbers: a one-hot of its letter (4 letters), a one-hot of its
# position (8 positions) and 4 unused zeros.
#
# - Head 1 is a **previous-token head**: its query at position $p$ is the one-hot of position
#   $p-1$, its keys are the position one-hots, its values are the letters. It copies the letter
#   just before each token.
# - Head 2 is a **same-letter head**: queries and keys are the letter one-hots, values are the
#   positions. Each token looks at every occurrence of its own letter.

# %%
text = "abcabdac"
letters = sorted(set(text))  # ['a', 'b', 'c', 'd']
tok = torch.tensor([letters.index(c) for c in text])  # (8,)
# (L=8, d_model=16): letter one-hot | position one-hot | 4 zeros
X = torch.cat([F.one_hot(tok, 4), torch.eye(8), torch.zeros(8, 4)], dim=1)
X = X.float().to(device)
sharp = 4 * math.sqrt(8)  # a matching pair gets logit 4 after the 1/sqrt(d_head) scale
# rows 0-7 of each projection feed head 1, rows 8-15 head 2
W_q, W_k, W_v = torch.zeros(16, 16), torch.zeros(16, 16), torch.zeros(16, 16)
W_q[0:8, 4:12] = sharp * torch.eye(8, 8).roll(1, dims=1)  # head 1 query: one-hot(p - 1)
W_k[0:8, 4:12] = torch.eye(8)  # head 1 key = position
W_v[0:4, 0:4] = torch.eye(4)  # head 1 value = letter
W_q[8:12, 0:4] = sharp * torch.eye(4)  # head 2 (rows 8-15) query = letter
W_k[8:12, 0:4] = torch.eye(4)  # head 2 key = letter
W_v[8:16, 4:12] = torch.eye(8)  # head 2 value = position
# no wrap-around: position 0 has no previous token, its query is zero (uniform weights)
W_q[7, 4] = 0.0

# %% [markdown]
# The weights go into a PyTorch `nn.MultiheadAttention` and, from there, into the packaged module;
# both must produce the same per-head attention.

# %%
toy_torch = nn.MultiheadAttention(16, 2, bias=False, batch_first=True).to(device).eval()
with torch.no_grad():
    toy_torch.in_proj_weight.copy_(torch.cat([W_q, W_k, W_v]))
    toy_torch.out_proj.weight.copy_(torch.eye(16))
toy = MultiHeadAttention(16, 2, bias=False).to(device).load_from_torch(toy_torch).eval()
# (1, 8, 16), (1, 2, 8, 8)
toy_out, toy_w = toy(X[None], X[None], X[None], need_weights=True)
toy_ref = toy_torch(X[None], X[None], X[None], average_attn_weights=False)[1]
torch.testing.assert_close(toy_w, toy_ref)

fig, axes = plt.subplots(1, 2, figsize=(8.5, 4))
for h, title in enumerate(["head 1: previous token", "head 2: same letter"]):
    axes[h].imshow(toy_w[0, h].detach().cpu(), cmap="Blues", vmin=0, vmax=1)
    axes[h].set(
        title=title,
        xticks=range(8),
        yticks=range(8),
        xticklabels=list(text),
        yticklabels=list(text),
        xlabel="key",
        ylabel="query",
    )
plt.tight_layout()
plt.show()

# %% [markdown]
# **Figure 6.3.** The per-head weights of the hand-set layer on the input `abcabdac`. Head 1
# puts its weight on the token before each query (the first token has none and spreads its
# weight evenly); head 2 spreads each query's weight over the occurrences of its own letter.
#
# Reading the output: the first 4 features of each token are head 1's output, the letter it
# copied from the previous position (position 0 has none and gets an average).

# %%
copied = toy_out[0, :, 0:4].argmax(-1)  # (8,) which letter head 1 returned
print("token          :", " ".join(text))
print("head 1 returned:", " ".join(letters[i] for i in copied.tolist()))
assert [letters[i] for i in copied[1:].tolist()] == list(text[:-1])
w1, w2 = toy_w[0, 0].detach(), toy_w[0, 1].detach()  # (8, 8) each: query x key
assert (w1.diagonal(-1) > 0.85).all()  # head 1: weight on the previous token
assert torch.allclose(w1[0], torch.full_like(w1[0], 1 / 8))  # first token: uniform
same_letter = (tok[:, None] == tok[None, :]).to(device)  # (8, 8) True: the same letter
assert ((w2 * same_letter).sum(-1) > 0.85).all()  # head 2: weight on the same letter

# %% [markdown]
# `nn.MultiheadAttention` returns the average over heads unless told otherwise (checked in
# section 6.5); here that average would blend two different patterns into one map, so ask
# for per-head weights when you inspect. Chapter 7 trains a Transformer and reads the maps its
# heads learned. Next, a single attention layer learns where to look from data.
#
# ## 6.8 Training attention to look things up
#
# The weights so far were random or set by hand. Can gradient descent find a useful pattern? A
# task that needs one: each example stores 8 (key, value) pairs, then asks for the value of one of
# the stored keys, a small version of the associative retrieval task of Ba et al.
# {cite}`ba2016fast`. Keys are 8 distinct symbols out of 16, values any of 16 symbols. The model
# can only answer by finding the slot whose key equals the query, so its attention must learn to
# put its weight there.

# %%
N_SLOTS, N_KEYS, N_VALUES = 8, 16, 16


def recall_batch(n, generator):
    """n examples: 8 distinct keys, their values, a queried key, the value to return."""
    keys = torch.rand(n, N_KEYS, generator=generator).argsort(-1)[:, :N_SLOTS]  # (n, 8)
    values = torch.randint(N_VALUES, (n, N_SLOTS), generator=generator)  # (n, 8)
    slot = torch.randint(N_SLOTS, (n,), generator=generator)  # (n,) the pair asked for
    query = keys.gather(1, slot[:, None])  # (n, 1)
    target = values.gather(1, slot[:, None])[:, 0]  # (n,)
    return keys, values, query, target, slot


example = recall_batch(1, torch.Generator().manual_seed(0))
print("pairs :", list(zip(example[0][0].tolist(), example[1][0].tolist(), strict=True)))
print("query :", example[2].item(), "-> answer", example[3].item())
# ordered distinct keys x values x which slot is asked for
n_possible = math.perm(N_KEYS, N_SLOTS) * N_VALUES**N_SLOTS * N_SLOTS
dlbook.glue("recall_possible", float(n_possible))
print(f"possible examples: {n_possible:.2e}")

# %% [markdown]
# The model embeds each pair as the sum of a key embedding and a value embedding (one vector per
# slot), embeds the query with the same key embedding, lets the query attend over the 8 slots with
# one head of the packaged `MultiHeadAttention` (cross-attention: one query, 8 keys) and reads the
# answer out of the attention output with a linear layer.


# %%
class RecallModel(nn.Module):
    def __init__(self, d_model=64, scale=None):
        super().__init__()
        self.key_emb = nn.Embedding(N_KEYS, d_model)
        self.value_emb = nn.Embedding(N_VALUES, d_model)
        self.attn = MultiHeadAttention(d_model, n_heads=1, scale=scale)
        self.readout = nn.Linear(d_model, N_VALUES)

    def forward(self, keys, values, query):
        memory = self.key_emb(keys) + self.value_emb(values)  # (B, 8, d): one per pair
        asked = self.key_emb(query)  # (B, 1, d)
        # out (B, 1, d), w (B, heads=1, 1, 8)
        out, w = self.attn(asked, memory, memory, need_weights=True)
        return self.readout(out[:, 0]), w[:, 0, 0]  # (B, N_VALUES) logits, (B, 8)


# %% [markdown]
# Every training step draws a fresh batch out of {glue:text}`recall_possible:.1e` possible examples,
# so the model practically never sees an example twice. A fixed validation set follows the
# learning curve; a separate test set, drawn from another generator, is scored once at the end.


# %%
def to_device(batch):
    return [t.to(device) for t in batch]


val_set = to_device(recall_batch(1000, torch.Generator().manual_seed(1)))
test_set = to_device(recall_batch(2000, torch.Generator().manual_seed(2)))


@torch.no_grad()
def recall_accuracy(model, data):
    keys, values, query, target, slot = data
    logits, w = model(keys, values, query)
    return (logits.argmax(-1) == target).float().mean().item()


def train_recall(seed, steps, d_model=64, scale=None, eval_every=10):
    """Adam on fresh batches of 128; returns the model and [(step, val. accuracy)]."""
    torch.manual_seed(seed)
    model = RecallModel(d_model, scale).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    batches = torch.Generator().manual_seed(1000 + seed)  # this seed's training stream
    curve = [(0, recall_accuracy(model, val_set))]
    with fixed_threads(1):  # on a CPU, one thread: the model is tiny
        for step in range(1, steps + 1):
            keys, values, query, target, _ = to_device(recall_batch(128, batches))
            loss = F.cross_entropy(model(keys, values, query)[0], target)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step % eval_every == 0 or step == steps:
                curve.append((step, recall_accuracy(model, val_set)))
    return model, curve


# %% [markdown]
# We train with several seeds (each seed fixes the initial weights and the training stream) and,
# as a control, the same model with `scale=0`: every logit is then 0, so the attention is the
# uniform average of the 8 slots and cannot choose.

# %%
recall = {}
for seed in dlbook.progress(sizes["recall_seeds"], desc="seeds"):
    model, curve = train_recall(seed, sizes["recall_steps"])
    control, control_curve = train_recall(seed, sizes["recall_steps"], scale=0.0)
    recall[seed] = dict(
        model=model,
        curve=curve,
        control_curve=control_curve,
        test=recall_accuracy(model, test_set),
        control_test=recall_accuracy(control, test_set),
    )
    print(
        f"seed {seed}: test accuracy {recall[seed]['test']:.3f} | "
        f"uniform attention {recall[seed]['control_test']:.3f}"
    )

# %% [markdown]
# What can a model that cannot choose a slot do at best? Guess the value that occurs most often
# among the 8 stored ones. That strategy's expected accuracy, on the validation set (for the
# learning curves) and on the test set (for the test accuracies):


# %%
def blind_accuracy(data):
    """Expected accuracy of guessing a most common stored value (ties: at random)."""
    _, values, _, target, _ = data
    counts = F.one_hot(values, N_VALUES).sum(1)  # (n, N_VALUES): copies of each value
    top = counts.max(1, keepdim=True).values  # (n, 1) the largest count
    hit = counts.gather(1, target[:, None]) == top  # (n, 1) the answer is a mode
    n_modes = (counts == top).sum(1, keepdim=True)  # ties: guess among the modes
    return (hit.float() / n_modes).mean().item()


blind_val, best_blind = blind_accuracy(val_set), blind_accuracy(test_set)
print(
    f"best guess without looking at the query: validation {blind_val:.3f}, "
    f"test {best_blind:.3f}"
)

# %%
seed0 = sizes["recall_seeds"][0]
model0 = recall[seed0]["model"]
test_slot = test_set[4]  # (n_test,) the slot each test question asks for
with torch.no_grad():
    _, w_test = model0(*test_set[:3])  # (n_test, 8) attention over the slots
# mean weight on the matching slot, and how often it gets the largest weight
on_target = w_test.gather(1, test_slot[:, None]).mean().item()
argmax_right = (w_test.argmax(-1) == test_slot).float().mean().item()

fig, axes = plt.subplots(
    1, 2, figsize=(11, 3.8), gridspec_kw=dict(width_ratios=[1.2, 1])
)
for seed, r in recall.items():
    steps_, acc = zip(*r["curve"], strict=True)
    axes[0].plot(steps_, acc, label=f"seed {seed}")
for seed, r in recall.items():
    steps_, acc = zip(*r["control_curve"], strict=True)
    axes[0].plot(
        steps_,
        acc,
        ls="--",
        color="gray",
        label="uniform attention" if seed == seed0 else None,
    )
axes[0].axhline(blind_val, color="black", ls=":", label="best blind guess")
axes[0].set(xlabel="training step", ylabel="validation accuracy", ylim=(0, 1.02))
axes[0].legend(fontsize=8)
show = 8  # test examples in the map
axes[1].imshow(w_test[:show].cpu(), cmap="Blues", vmin=0, vmax=1)
stored_keys = test_set[0][:show].cpu()
for i in range(show):
    for j in range(N_SLOTS):
        color = "white" if w_test[i, j] > 0.5 else "black"
        axes[1].text(
            j,
            i,
            str(stored_keys[i, j].item()),
            ha="center",
            va="center",
            fontsize=8,
            color=color,
        )
    corner = (test_slot[i].item() - 0.5, i - 0.5)  # box around the matching slot
    axes[1].add_patch(plt.Rectangle(corner, 1, 1, fill=False, edgecolor="red", lw=1.5))
axes[1].set(
    xlabel="stored slot (number = its key)",
    ylabel="test example (queried key)",
    yticks=range(show),
    yticklabels=test_set[2][:show, 0].tolist(),
)
plt.tight_layout()
plt.show()

# %% [markdown]
# **Figure 6.4.** Left: validation accuracy while training, for each seed (solid), for the
# same model with uniform attention (dashed) and for the best guess that ignores the query
# (dotted), all on the validation set. Right: the trained model's attention weights (seed 0) on
# eight test examples; each row is one example, labelled with the key it asks for, each cell one
# stored pair, labelled with its key; the red box marks the pair whose key equals the query.

# %%
tests = [r["test"] for r in recall.values()]
controls = [r["control_test"] for r in recall.values()]
dlbook.glue("recall_steps", sizes["recall_steps"])
dlbook.glue("recall_n_seeds", len(tests))
dlbook.glue("recall_control_min", min(controls))
dlbook.glue("recall_control_max", max(controls))
dlbook.glue("recall_blind", best_blind)
dlbook.glue("recall_on_target", on_target)
dlbook.glue("recall_argmax", argmax_right)
dlbook.headline(
    "recall_test_min", min(tests), profile=profile, at_least=0.98, fmt="{:.3f}"
)
if profile == "full":
    # uniform attention: within 0.05 of the blind guess, on either side
    assert best_blind - 0.05 < min(controls) <= max(controls) < best_blind + 0.05
    assert on_target > 0.9 and argmax_right > 0.99  # weight on the matching key

# %% [markdown]
# After {glue:text}`recall_steps` steps the lowest test accuracy over
# {glue:text}`recall_n_seeds` seeds is {glue:text}`recall_test_min`. With uniform attention the
# same model reaches between {glue:text}`recall_control_min:.3f` and
# {glue:text}`recall_control_max:.3f`, within 0.05 of the {glue:text}`recall_blind:.3f` of the
# blind strategy of guessing the most common stored value (test set): the answer is in the choice
# of slot. The trained attention (seed 0) puts on average
# {glue:text}`recall_on_target:.3f` of its weight on the slot whose key matches the query, and
# that slot has the largest weight in a fraction {glue:text}`recall_argmax:.3f` of the test
# examples.
#
# ## 6.9 The cost of attention
#
# For a sequence of length $L$, the logits $QK^\top$ are an $L\times L$ matrix per head. Computing
# them and the weighted sum takes time proportional to $L^2 d$ per head (two matrix products of
# $L\times L\times d$ multiply-adds). Storing them takes memory proportional to $L^2$ per head,
# **whatever $d$ is**: each entry is one number. The naive code above stores such matrices (the
# logits and the weights). PyTorch's `F.scaled_dot_product_attention` dispatches to a **fused
# kernel** that walks over blocks of keys, keeps a running maximum and running sum of the softmax,
# and never materialises the whole matrix.
#
# To see that, we measure peak memory, the most bytes alive at once during a call. On a GPU
# the allocator keeps the count (`torch.cuda.max_memory_allocated`). The CPU allocator does
# not, so `dlbook.memory` brings a small tracker: a `TorchDispatchMode` (PyTorch's hook for
# code that intercepts every operator call) that sees every tensor operation run inside a `with`
# block, adds the bytes of each new output storage, and subtracts them when Python frees that
# storage. `dlbook.memory.peak_memory(fn, device)` uses the allocator's count on a GPU and this
# tracker elsewhere; chapter 10 measures whole training steps with the same two tools.

# %%
dlbook.show(TensorMemoryTracker)

# %% [markdown]
# A first check: the logits of one head at length $L$ are an $L\times L$ float32 matrix, so
# computing them must create exactly $4L^2$ bytes, and nothing else.

# %%
L_check = 96
q_check, k_check = torch.randn(2, L_check, 16).unbind(0)  # (L, d) each
with TensorMemoryTracker("cpu") as tracker:
    logits_check = q_check @ k_check.T  # (L, L)
assert tracker.peak_bytes == tracker.total_bytes == 4 * L_check**2
print(f"L={L_check}: the logits take {tracker.peak_bytes:,} bytes = 4 L^2")
del q_check, k_check, logits_check

# %% [markdown]
# The tracker misses scratch buffers that a kernel allocates and frees inside one call (it sees
# the operations and their outputs, not what a kernel does in C++); PyTorch's profiler records
# every allocation, so the helper below counts that scratch as the profiler's total minus the
# tracker's. Times are taken in rounds, one call of each variant per round, the order reversed
# every other round (`dlbook.measure.interleaved_calls`), so both variants see the same load; on
# the CPU everything runs on one thread, so that the times measure the arithmetic and the memory
# traffic, not how threads are scheduled.


# %% tags=["hide-input"]
@contextlib.contextmanager
def native_stderr_silenced():
    """Discard what C++ code writes to stderr (the profiler notes start and stop)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def kernel_scratch(fn):
    """Bytes fn() allocates on the CPU beyond the tensors the tracker sees."""
    with TensorMemoryTracker("cpu") as seen:
        fn()
    cpu = [torch.profiler.ProfilerActivity.CPU]
    with (
        native_stderr_silenced(),
        torch.profiler.profile(activities=cpu, profile_memory=True) as prof,
    ):
        fn()
    allocated = sum(
        e.self_cpu_memory_usage for e in prof.events() if e.self_cpu_memory_usage > 0
    )  # every allocation, freed or not
    return allocated - seen.total_bytes


# %%
def cost(L, d_head, n_heads):
    """Peak memory (bytes) and times (ms) of naive and fused attention, one batch."""
    shape = (1, n_heads, L, d_head)  # (B, H, L, d)
    q, k, v = (torch.randn(shape, device=device) for _ in range(3))
    naive = lambda: attention(q, k, v)[0]  # noqa: E731
    fused = lambda: F.scaled_dot_product_attention(q, k, v)  # noqa: E731
    with torch.no_grad(), fixed_threads(1):  # one thread on the CPU
        torch.testing.assert_close(naive(), fused(), atol=1e-4, rtol=1e-4)  # equal
        mem = {
            name: peak_memory(fn, device).peak_bytes
            for name, fn in (("naive", naive), ("fused", fused))
        }
        # on a GPU the allocator's peak already includes any scratch
        scratch = (
            {
                name: kernel_scratch(fn)
                for name, fn in (("naive", naive), ("fused", fused))
            }
            if device.type == "cpu"
            else dict(naive=0, fused=0)
        )
        times = interleaved_calls(
            dict(naive=naive, fused=fused),
            rounds=sizes["rounds"],
            warmup=1,
            device=device,
        )
    return dict(
        L=L,
        d=d_head,
        mem_naive=mem["naive"],
        mem_fused=mem["fused"],
        scratch_naive=scratch["naive"],
        scratch_fused=scratch["fused"],
        # Latency objects: runs_ms (one per round) and median
        t_naive=times["naive"],
        t_fused=times["fused"],
        matrix=n_heads * L * L * 4,
        output=n_heads * L * d_head * 4,
    )


H = sizes["n_heads_cost"]
results = [cost(L, 64, H) for L in dlbook.progress(sizes["lengths"], desc="lengths")]
for r in results:
    n_mat = (r["mem_naive"] - r["output"]) / r["matrix"]  # L x L matrices per head
    print(
        f"L={r['L']:5d}  naive {r['t_naive'].median:8.2f} ms "
        f"{r['mem_naive'] / 2**20:8.1f} MiB | "
        f"fused {r['t_fused'].median:8.2f} ms {r['mem_fused'] / 2**20:6.2f} MiB "
        f"+ {r['scratch_fused'] / 2**10:4.0f} KiB scratch | "
        f"naive holds {n_mat:.2f} L x L matrices per head"
    )

# %% [markdown]
# The memory does not depend on the head width: at one length, widths from 16 to 256.

# %%
widths = [cost(sizes["width_L"], d, H) for d in (16, 64, 256)]
for r in widths:
    print(
        f"L={r['L']}, d={r['d']:3d}: naive peak {r['mem_naive'] / 2**20:7.2f} MiB = "
        f"{(r['mem_naive'] - r['output']) / r['matrix']:.3f} L x L matrices "
        f"+ the output"
    )
per_matrix = [(r["mem_naive"] - r["output"]) / r["matrix"] for r in widths]
assert max(per_matrix) - min(per_matrix) < 0.05  # the L x L part: the same for every d

# %%
Ls = [r["L"] for r in results]
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
axes[0].loglog(
    Ls, [r["t_naive"].median for r in results], "o-", label="naive (matrix stored)"
)
axes[0].loglog(
    Ls,
    [r["t_fused"].median for r in results],
    "s-",
    label="F.scaled_dot_product_attention",
)
axes[0].set(title="time per call (median)", xlabel="sequence length L", ylabel="ms")
axes[1].loglog(
    Ls,
    [(r["mem_naive"] + r["scratch_naive"]) / 2**20 for r in results],
    "o-",
    label="naive (matrix stored)",
)
axes[1].loglog(
    Ls,
    [(r["mem_fused"] + r["scratch_fused"]) / 2**20 for r in results],
    "s-",
    label="F.scaled_dot_product_attention",
)
axes[1].loglog(
    Ls, [r["matrix"] / 2**20 for r in results], "k:", label="L x L logits, all heads"
)
axes[1].set(
    title="peak extra memory per call", xlabel="sequence length L", ylabel="MiB"
)
for ax in axes:
    ax.set_xscale("log", base=2)
    ax.set_xticks(Ls, [str(n) for n in Ls], minor=False)
    ax.minorticks_off()
    ax.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# **Figure 6.5.** Time (left) and peak memory (right) of one attention call with
# {glue:text}`cost_heads` heads of width 64, naive code against the fused kernel, on the device
# named in the provenance line at the top of the chapter (one thread on a CPU). Memory counts
# the tensors and the kernels' scratch buffers. The dotted line is the size of the $L\times L$
# float32 logits of all the heads together (one matrix per head).

# %%
last, prev = results[-1], results[-2]
n_matrices = (last["mem_naive"] - last["output"]) / last["matrix"]
# doubling L multiplies the memory by 2 ** mem_slope
mem_slope = math.log2(last["mem_naive"] / prev["mem_naive"])
dlbook.glue("cost_L", last["L"])
dlbook.glue("cost_heads", H)
dlbook.glue("cost_width_L", sizes["width_L"])
# one ratio naive / fused per round: both calls timed in that round
ratios = [
    a / b for a, b in zip(last["t_naive"].runs_ms, last["t_fused"].runs_ms, strict=True)
]
dlbook.glue("speedup_fused", last["t_naive"].median / last["t_fused"].median)
dlbook.glue("speedup_lo", min(ratios))
dlbook.glue("speedup_hi", max(ratios))
dlbook.glue("mem_naive_mib", last["mem_naive"] / 2**20)
dlbook.glue("mem_fused_mib", last["mem_fused"] / 2**20)
dlbook.glue("scratch_kib", last["scratch_fused"] / 2**10)
fused_total = last["mem_fused"] + last["scratch_fused"]  # tensors + kernel scratch
dlbook.glue("mem_ratio", (last["mem_naive"] + last["scratch_naive"]) / fused_total)
dlbook.glue("n_matrices", n_matrices)
dlbook.glue("mem_slope", mem_slope)
dlbook.glue("time_growth", last["t_naive"].median / prev["t_naive"].median)
dlbook.glue("rounds", sizes["rounds"])
assert n_matrices >= 1, "the naive version must hold at least one L x L matrix per head"
assert 1.7 < mem_slope < 2.2, "the naive memory must grow like L^2"
lse_bytes = H * last["L"] * 4  # one float32 per query and head
dlbook.glue("lse_kib", lse_bytes / 2**10)
assert last["mem_fused"] < 2 * last["output"], "fused tensors: little beyond the output"
assert all(r["scratch_naive"] < 2**10 for r in results + widths)  # naive: all seen
if device.type == "cpu":  # the tensors the CPU kernel returns: output and log-sum-exp
    assert last["mem_fused"] == last["output"] + lse_bytes
if profile == "full":
    assert min(ratios) > 1, "the fused call must be the faster one in every round"
    assert last["scratch_fused"] <= prev["scratch_fused"], "fused scratch: not growing"

# %% [markdown]
# At $L=$ {glue:text}`cost_L` the naive code held {glue:text}`n_matrices:.2f` $L\times L$
# matrices per head at its peak (the logits and the weights) besides its output, and doubling $L$
# from the previous length multiplied its memory by $2^{x}$ with $x=$
# {glue:text}`mem_slope:.2f`: quadratic. At $L=$ {glue:text}`cost_width_L` the $L\times L$ part
# was the same for head widths 16, 64 and 256; only the output grows with $d$. So attention's
# memory is $O(L^2)$ per head, and its time $O(L^2 d)$. The fused call's tensors peaked at
# {glue:text}`mem_fused_mib:.2f` MiB: the output and one number per query and head
# ({glue:text}`lse_kib:.0f` KiB here), the log of the softmax denominator, kept for the backward
# pass. Inside the call the kernel also allocated and freed {glue:text}`scratch_kib:.0f` KiB of
# scratch buffers, no more than at the previous length. Counting them, the naive code needed
# {glue:text}`mem_naive_mib:.0f` MiB, {glue:text}`mem_ratio:.0f` times as much, and the fused
# kernel's memory grows only linearly in $L$. In time, the fused call was
# {glue:text}`speedup_fused:.1f` times faster (ratio of the medians; per-round ratios
# {glue:text}`speedup_lo:.1f` to {glue:text}`speedup_hi:.1f`, {glue:text}`rounds` rounds, one
# thread), and doubling the length multiplied the naive time by {glue:text}`time_growth:.1f` in the
# last step, where a pure $L^2$ law predicts 4. Timings depend on the machine and its load; the
# memory counts do not.
#
# The fused kernel does **the same arithmetic** in a different order, so it is exact up to
# rounding, not an approximation: the check inside `cost` compares it with the naive result. On
# a GPU, what it saves is memory traffic: the naive version writes the $L\times L$ logits to the
# GPU's main memory (HBM), reads them back for the softmax, writes the weights and reads them
# again for the product with $V$. **FlashAttention** {cite}`dao2022flashattention` tiles $Q$, $K$
# and $V$ into blocks that fit in the on-chip SRAM, computes the softmax block by block with the
# running-maximum trick, and writes only the output and one softmax statistic per row (the
# log-sum-exp above); the backward pass recomputes the blocks
# instead of storing them. The paper reports attention several times faster than the standard
# implementation and extra memory linear in $L$. It removes none of the $L^2 d$ multiply-adds
# (the recomputation in the backward pass even adds some): it makes them cheaper to feed, and
# the time stays quadratic in $L$.

# %% [markdown]
# ## Summary
#
# - Attention is a differentiable dictionary: score the query against every key, softmax the
#   scores, average the values with those weights, {eq}`eq-soft-lookup`. In matrix form,
#   {eq}`eq-sdpa` matched `F.scaled_dot_product_attention` to {glue:text}`sdpa_max_diff`
#   in output and gradients, without a mask, with a padding mask and with a causal mask.
# - Masks set logits to $-\infty$ before the softmax; in this book a boolean mask is `True` where a
#   query **may** attend. A query that may attend to nothing needs care: the plain softmax gives
#   `NaN` and `NaN` gradients; the packaged function returns zeros and zero gradients, as PyTorch
#   does.
# - The dot product of two random unit-variance vectors has variance $d_k$
#   {eq}`eq-dot-variance` (measured within {glue:text}`var_ratio_worst:.1%`, inside the sampling
#   error of a quantity with kurtosis $3 + 6/d_k$). Dividing by $\sqrt{d_k}$ keeps the logits at
#   unit variance; without it the softmax saturates as $d_k$ grows, and the gradient reaching the
#   queries, larger than with the scale at first, collapses from $d_k=$
#   {glue:text}`dk_grad_cross` on; dividing by $d_k$ flattens attention towards the uniform
#   average.
# - Additive attention {eq}`eq-additive` scores with a small network instead of a dot product;
#   it matched its definition and passed `gradcheck`, and stored
#   {glue:text}`mem_additive_ratio:.0f` times more than dot-product attention at the size tried.
# - Multi-head attention is projection, a reshape into heads, attention, the inverse reshape and an
#   output projection; ours matches `nn.MultiheadAttention` to {glue:text}`mha_max_diff`
#   (largest difference relative to the largest entry of each tensor compared), in the output,
#   the weights and the gradients of the inputs and of every projection, for self-attention and
#   for cross-attention between sequences of different lengths and widths.
# - Trained on a retrieval task, one attention head learned to put
#   {glue:text}`recall_on_target:.3f` of its weight on the matching key (seed 0) and answered at
#   least {glue:text}`recall_test_min` of the test questions over {glue:text}`recall_n_seeds` seeds;
#   with uniform attention it scored within 0.05 of a blind guess.
# - The naive computation stores $L\times L$ matrices per head (memory $O(L^2)$, independent of
#   $d$); the fused kernel does not: it keeps the output, one number per query and head and a
#   little scratch, so its memory grows linearly in $L$.
#
# ## Exercises

# %% [markdown]
# :::{exercise}
# :label: ch06-ex-memory
# A model has 12 heads and processes one sequence of 8,192 tokens in float32. How many bytes does
# one layer's attention-weight tensor take if it is stored? How does that compare with the
# activations $X$ themselves at $d_\text{model}=768$? Does the answer change with the head width?
# :::

# %% [markdown]
# ```{solution-start} ch06-ex-memory
# :class: dropdown
# ```

# %% [markdown]
# One float32 weight per (head, query, key) triple, whatever the head width: the head width
# changes the time, not the size of the weight tensor. The activations are one vector of 768
# numbers per token.

# %% tags=["solution"]
weights_bytes = 12 * 8192 * 8192 * 4  # heads x L x L x 4 bytes
activation_bytes = 8192 * 768 * 4  # L x d_model x 4 bytes
print(
    f"weights: {weights_bytes / 2**30:.1f} GiB | activations: "
    f"{activation_bytes / 2**20:.0f} MiB | "
    f"ratio {weights_bytes / activation_bytes:.0f}"
)
assert weights_bytes == torch.empty(0).element_size() * 12 * 8192**2
assert weights_bytes / activation_bytes == 128  # = 12 * 8192 / 768
# the ratio is n_heads * L / d_model = L / 64: equal sizes at 64 tokens
assert 12 * 64 / 768 == 1

# %% [markdown]
# About 3 GiB for **one** layer and one sequence (and the logits before the softmax are another
# tensor of the same size), against 24 MiB of activations, 128 times less. The ratio is
# $h\,L/d_\text{model} = 12L/768 = L/64$: the weights are as large as the activations at 64
# tokens already, and the ratio grows linearly in $L$ from there, so at any realistic length the
# attention matrices, not the activations, decide the memory; hence fused kernels that never
# store them.

# %% [markdown]
# ```{solution-end}
# ```

# %% [markdown]
# :::{exercise}
# :label: ch06-ex-permutation
# Self-attention without masks and without positional information: what happens to the output if
# you shuffle the input tokens? Check your answer numerically with `attention(x, x, x)`.
# :::

# %% [markdown]
# ```{solution-start} ch06-ex-permutation
# :class: dropdown
# ```

# %% [markdown]
# Shuffling the rows of $X$ by a permutation $P$ shuffles the rows of the output the same way:
# $\mathrm{softmax}(PQK^\top P^\top)PV = P\,\mathrm{softmax}(QK^\top)V$, because the softmax acts
# row by row and permuting the keys and values together leaves each weighted sum unchanged.
# Attention alone treats its input as a **set**; word order must be added to the tokens, which
# is what positional encodings (chapter 7) do.

# %% tags=["solution"]
tokens = torch.randn(1, 7, 16, device=device)  # (B, L, d)
perm = torch.randperm(7)
shuffled_out = attention(tokens[:, perm], tokens[:, perm], tokens[:, perm])[0]
torch.testing.assert_close(shuffled_out, attention(tokens, tokens, tokens)[0][:, perm])
print("attention(shuffled x) == shuffled attention(x)")

# %% [markdown]
# ```{solution-end}
# ```

# %% [markdown]
# :::{exercise}
# :label: ch06-ex-attention
# Write `my_attention(q, k, v, mask=None)`, returning only the output of {eq}`eq-sdpa` for inputs
# of shape `(..., L, d)` and an optional boolean mask (`True` = may attend), without calling
# `F.scaled_dot_product_attention`. The check runs hidden cases with batch and head dimensions,
# causal and padding masks.
# :::


# %%
def my_attention(q, k, v, mask=None):
    raise NotImplementedError  # your code here


dlbook.exercises.check("ch06.scaled_attention", my_attention)

# %% [markdown]
# ```{solution-start} ch06-ex-attention
# :class: dropdown
# ```


# %% tags=["solution"]
def my_attention(q, k, v, mask=None):
    logits = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (..., L_q, L_k)
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf"))
    return torch.softmax(logits, dim=-1) @ v  # (..., L_q, d_v)


assert dlbook.exercises.check("ch06.scaled_attention", my_attention)

# %% [markdown]
# ```{solution-end}
# ```

# %% [markdown]
# :::{exercise}
# :label: ch06-ex-split
# Write `my_split_heads(x, n_heads)` that turns `(B, L, d_model)` into `(B, n_heads, L, d_model //
# n_heads)` with head $h$ holding features $h\,d_\text{head}$ to $(h+1)\,d_\text{head}-1$. Why is
# `x.reshape(B, n_heads, L, d_model // n_heads)` wrong even though the shape is right?
# :::


# %%
def my_split_heads(x, n_heads):
    raise NotImplementedError  # your code here


dlbook.exercises.check("ch06.split_heads", my_split_heads)

# %% [markdown]
# ```{solution-start} ch06-ex-split
# :class: dropdown
# ```

# %% [markdown]
# A reshape keeps the memory order, in which the features of one position are contiguous; a plain
# reshape to `(B, H, L, d_head)` therefore packs the features of *several positions* into one head
# row. The feature axis must be split first (a `view` to `(B, L, H, d_head)`) and the head axis
# then moved in front of the positions.


# %% tags=["solution"]
def my_split_heads(x, n_heads):
    B, L, D = x.shape
    return x.view(B, L, n_heads, D // n_heads).transpose(1, 2)  # (B, H, L, d_head)


assert dlbook.exercises.check("ch06.split_heads", my_split_heads)

# %% [markdown]
# ```{solution-end}
# ```

# %% [markdown]
# :::{exercise}
# :label: ch06-ex-cache
# A language model that generates text computes, at each step, attention for the newest queries
# only, against the keys and values of all positions so far (kept in a *cache*). With $L_q$ new
# queries and $L_k$ keys, the new queries are the **last** $L_q$ positions. Write
# `my_causal_lower_right(L_q, L_k)`, the boolean mask (`True` = may attend) for that case. Then
# run the experiment: compute causal self-attention over 7 positions, then attention for the last
# 3 queries only, against all 7 keys, with your mask and with `causal=True`. Which one reproduces
# the last 3 rows of the full computation, and why does the other not?
# :::


# %%
def my_causal_lower_right(L_q, L_k):
    raise NotImplementedError  # your code here


dlbook.exercises.check("ch06.causal_lower_right", my_causal_lower_right)

# %% [markdown]
# ```{solution-start} ch06-ex-cache
# :class: dropdown
# ```

# %% [markdown]
# New query $i$ sits at position $i + L_k - L_q$, so it may see keys up to that position: the
# lower triangle shifted right by $L_k - L_q$, anchored at the bottom-right corner. `causal=True`,
# like `is_causal=True` in PyTorch, anchors the triangle at the **top-left** corner: there query
# $i$ sees keys $0..i$ only, as if the new queries were the first positions. The packaged
# `causal_mask(L_q, n_keys=L_k, align="bottom-right")` builds the right one.


# %% tags=["solution"]
def my_causal_lower_right(L_q, L_k):
    return torch.ones(L_q, L_k, dtype=torch.bool).tril(diagonal=L_k - L_q)


assert dlbook.exercises.check("ch06.causal_lower_right", my_causal_lower_right)
seq = torch.randn(1, 7, 8, device=device)  # (B, L=7, d): one sequence
full_out, _ = scaled_dot_product_attention(seq, seq, seq, causal=True)  # (1, 7, 8)
new_q = seq[:, -3:]  # (1, 3, 8): the last 3 positions as queries
cached_out, _ = scaled_dot_product_attention(
    new_q, seq, seq, mask=my_causal_lower_right(3, 7).to(device)
)
top_left_out, _ = scaled_dot_product_attention(new_q, seq, seq, causal=True)
torch.testing.assert_close(cached_out, full_out[:, -3:])  # bottom-right: identical
assert not torch.allclose(top_left_out, full_out[:, -3:], atol=1e-3)  # top-left: wrong
print(
    "the bottom-right mask reproduces the full computation; "
    "causal=True (top-left) does not"
)

# %% [markdown]
# ```{solution-end}
# ```

# %% [markdown]
# :::{exercise}
# :label: ch06-ex-scale
# Does the $1/\sqrt{d_k}$ scale matter once the projections are learned? Train the retrieval
# model of this chapter with `d_model=256` (one head, so $d_k = 256$), with the default scale and
# with `scale=1.0` (none), for several seeds, and compare the validation accuracy after a few
# dozen steps. Two runs with the same seed share their initial weights and training batches, so
# compare them in pairs: write `my_paired_interval(a, b, confidence=0.95)` returning the mean of
# the differences `a - b` and the ends of its Student-$t$ confidence interval, `(mean, low, high)`.
# Is the difference larger than the seed-to-seed noise? Measure the spread of the initial logits
# to explain it.
# :::


# %%
def my_paired_interval(a, b, confidence=0.95):
    raise NotImplementedError  # your code here


dlbook.exercises.check("ch06.paired_interval", my_paired_interval)

# %% [markdown]
# ```{solution-start} ch06-ex-scale
# :class: dropdown
# ```

# %% [markdown]
# The differences $\delta_s = a_s - b_s$ of the paired runs remove what the two arms share (the
# seed's initialisation and batches). With $n$ seeds, their mean $\bar\delta$ and sample standard
# deviation $s_\delta$, the interval is $\bar\delta \pm t_{n-1}\, s_\delta/\sqrt{n}$, with
# $t_{n-1}$ the two-sided quantile of Student's $t$ at $n-1$ degrees of freedom (wider than the
# normal 1.96 when $n$ is small). The check compares yours with `dlbook.stats.seed_interval`, the
# book's one implementation, which other chapters use to compare recipes over seeds.


# %% tags=["solution"]
def my_paired_interval(a, b, confidence=0.95):
    from scipy.stats import t

    a, b = (torch.as_tensor(x, dtype=torch.float64) for x in (a, b))
    diffs = a - b  # one difference per seed
    n = len(diffs)
    half = t.ppf(0.5 + confidence / 2, df=n - 1) * diffs.std().item() / math.sqrt(n)
    mean = diffs.mean().item()
    return mean, mean - half, mean + half


assert dlbook.exercises.check("ch06.paired_interval", my_paired_interval)
acc = {"1/sqrt(d_k)": [], "none": []}
for seed in dlbook.progress(sizes["scale_seeds"], desc="seeds"):
    for name, scale in (("1/sqrt(d_k)", None), ("none", 1.0)):
        _, curve = train_recall(seed, sizes["scale_steps"], d_model=256, scale=scale)
        acc[name].append(curve[-1][1])
mean, low, high = my_paired_interval(acc["1/sqrt(d_k)"], acc["none"])
print("accuracy with 1/sqrt(d_k):", [round(a, 3) for a in acc["1/sqrt(d_k)"]])
print("accuracy without scaling :", [round(a, 3) for a in acc["none"]])
print(
    f"difference {mean:.3f}, 95 % interval [{low:.3f}, {high:.3f}] over "
    f"{len(sizes['scale_seeds'])} seeds, after {sizes['scale_steps']} steps"
)
if profile == "full":
    assert low > 0  # the scaled model is ahead by more than the seed noise

# %% [markdown]
# The interval lies above zero: after the same number of steps, the model with the scale is
# ahead. The reason is the one measured in section 6.3, at initialisation. PyTorch
# initialises a linear layer's weights uniformly with variance $1/(3 d)$; the embeddings have
# variance 1, and a stored slot is the sum of two of them. So a projected query coordinate has
# variance about $1/3$, a key coordinate about $2/3$, and an unscaled logit, a sum of $d_k$
# products, a standard deviation of about $\sqrt{d_k \cdot 2/9} \approx 7.5$ at $d_k=256$. The
# softmax starts saturated: each query puts most of its weight on one slot, the one its random
# projections happen to favour, and little on the matching one; training must first undo that
# choice. Its gradient is not small: measured on the untrained models, with the loss of the
# validation set, the gradient of the query projection is several times *larger* without the
# scale (and Adam {cite}`kingma2015adam` divides every step by a running size of the gradient
# anyway). What slows the unscaled model is where its attention starts, not how strongly it is
# pushed:

# %% tags=["solution"]
keys, values, query, target, slot = val_set
start = {}
for name, scale in (("1/sqrt(d_k)", None), ("none", 1.0)):
    torch.manual_seed(0)
    fresh = RecallModel(256, scale).to(device)
    with torch.no_grad():
        memory_ = fresh.key_emb(keys) + fresh.value_emb(values)
        q_ = fresh.attn.q_proj(fresh.key_emb(query))  # (n, 1, 256)
        k_ = fresh.attn.k_proj(memory_)  # (n, 8, 256)
        s = 1 / math.sqrt(256) if scale is None else scale
        logits = s * (q_ @ k_.transpose(-2, -1))  # (n, 1, 8)
    predicted = s * math.sqrt(256 * 2 / 9)
    assert abs(logits.std().item() / predicted - 1) < 0.15
    out, w = fresh(keys, values, query)  # w: (n, 8) attention over the slots
    F.cross_entropy(out, target).backward()
    w = w.detach()
    start[name] = dict(
        std=logits.std().item(),
        predicted=predicted,
        entropy=-torch.special.xlogy(w, w).sum(-1).mean().item(),  # nats, ln 8 = 2.08
        largest=w.max(-1).values.mean().item(),  # mean of each row's largest weight
        on_match=w.gather(1, slot[:, None]).mean().item(),  # weight on the right slot
        grad=fresh.attn.q_proj.weight.grad.norm().item(),
    )  # ||dL/dW_q||
for name, r in start.items():
    print(
        f"{name:12s}: logit std {r['std']:.2f} (predicted {r['predicted']:.2f}) | "
        f"entropy {r['entropy']:.2f} | largest weight {r['largest']:.2f} | "
        f"on the matching slot {r['on_match']:.2f} | ||dL/dW_q|| {r['grad']:.3f}"
    )
assert start["none"]["entropy"] < 0.5 * start["1/sqrt(d_k)"]["entropy"]  # saturated
assert start["none"]["on_match"] < 0.5 * start["none"]["largest"]  # on the wrong slot
assert start["none"]["grad"] > 3 * start["1/sqrt(d_k)"]["grad"]  # larger, not smaller

# %% [markdown]
# ```{solution-end}
# ```

# %% [markdown]
# ## Further reading
#
# - Bahdanau, Cho and Bengio introduced attention over the encoder states of a translation model,
#   with the additive score {cite}`bahdanau2015neural`.
# - Vaswani et al. built a model of attention alone, with scaled dot products and multiple heads,
#   and gave the $\sqrt{d_k}$ argument used here {cite}`vaswani2017attention`.
# - Ba et al. used associative retrieval, the task trained here in a small form, to test models
#   that must recall what they stored a few steps earlier {cite}`ba2016fast`.
# - Dao et al. describe FlashAttention's tiling and recomputation and measure its speed and memory
#   {cite}`dao2022flashattention`.
