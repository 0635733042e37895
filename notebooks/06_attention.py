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
# and decide, from the data, how much of each to take. It started as a way to help translation
# models look back at the source sentence {cite}`bahdanau2015neural` and became the only mixing
# operation of the Transformer {cite}`vaswani2017attention`. This chapter builds it from nothing,
# one tensor operation at a time, and checks every step against PyTorch.
#
# By the end of this chapter you can
#
# 1. explain attention as a soft dictionary look-up and compute it by hand: similarities,
#    softmax, weighted sum;
# 2. write scaled dot-product attention with padding and causal masks and match
#    `F.scaled_dot_product_attention` to float precision;
# 3. show by measurement why the logits are divided by $\sqrt{d_k}$ and not by $d_k$ or nothing;
# 4. assemble multi-head attention from projections, reshapes and one matrix product, and load the
#    weights of `nn.MultiheadAttention` into it;
# 5. measure the quadratic cost of attention and say what a fused kernel such as FlashAttention
#    changes.

# %%
# In Colab, install the book's helpers and offline assets first (nothing happens elsewhere).
import sys

if "google.colab" in sys.modules:
    import subprocess

    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "dlbook[assets] @ git+https://github.com/dlbook-verified/deep-learning-verified"], check=True)
    subprocess.run([sys.executable, "-m", "dlbook.colab"], check=True)

# %%
import functools
import math
import os
import statistics
import time
import weakref

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

import dlbook
import dlbook.exercises
from dlbook.nn.attention import MultiHeadAttention, causal_mask, scaled_dot_product_attention

device = dlbook.setup(seed=0)

# %% tags=["parameters"]
profile = os.environ.get("DLBOOK_PROFILE", "full")

# %%
sizes = dlbook.by_profile(
    profile,
    smoke=dict(d_ks=[4, 64, 1024], n_pairs=2_000, n_keys=64, n_queries=256, lengths=[64, 128, 256], n_heads_cost=2, repeats=1),
    full=dict(d_ks=[2, 4, 8, 16, 32, 64, 128, 256, 512, 1024], n_pairs=20_000, n_keys=64, n_queries=1024,
              lengths=[128, 256, 512, 1024, 2048, 4096], n_heads_cost=4, repeats=9),
)
sizes

# %% [markdown]
# ## A soft dictionary look-up
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
keys = torch.tensor([[1.0, 0.0, 0.0],
                     [0.0, 1.0, 0.0],
                     [0.0, 0.0, 1.0],
                     [0.7, 0.7, 0.0]])  # (n_keys=4, d_k=3)
values = torch.tensor([[10.0, 0.0],
                       [0.0, 10.0],
                       [-10.0, 0.0],
                       [5.0, 5.0]])  # (n_keys=4, d_v=2)
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

# %% [markdown]
# Step 3, the weighted sum of the values: close to the third value, $(-10, 0)$, pulled a little
# towards the others.

# %%
out = weights @ values  # (2,) = sum_j a_j v_j
out

# %% [markdown]
# **Check.** PyTorch's fused function computes {eq}`eq-soft-lookup` when told not to scale
# (`scale=1.0`; the scaling comes in the next section). It wants a sequence axis for queries, so
# the single query becomes a sequence of length one.

# %%
reference = F.scaled_dot_product_attention(query[None, :], keys, values, scale=1.0)  # (1, 2)
torch.testing.assert_close(out, reference[0])
print("soft look-up matches F.scaled_dot_product_attention(scale=1):", reference[0])

# %% [markdown]
# ## Scaled dot-product attention
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
# This book follows PyTorch's convention for boolean masks: **`True` means "may attend"**. Leading
# dimensions (batch, heads) ride along untouched.

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
print("out", tuple(out.shape), "| weights", tuple(w.shape), "| row sums", w.sum(-1)[0].tolist())

# %% [markdown]
# **Check 1, no mask.**

# %%
torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v))
diff_nomask = (out - F.scaled_dot_product_attention(q, k, v)).abs().max().item()
print(f"no mask: max |ours - torch| = {diff_nomask:.1e}")

# %% [markdown]
# **Check 2, a padding mask.** Sequences in a batch have different lengths; the shorter ones are
# padded, and no query should take anything from a padding position. The second sequence here has
# only 4 real tokens. The mask has shape $(B, 1, L_k)$ and broadcasts over the queries.

# %%
lengths = torch.tensor([6, 4], device=device)
pad_mask = torch.arange(L, device=device)[None, :] < lengths[:, None]  # (B, L_k), True = real token
pad_mask = pad_mask[:, None, :]  # (B, 1, L_k): the same for every query
out_pad, w_pad = attention(q, k, v, mask=pad_mask)
torch.testing.assert_close(out_pad, F.scaled_dot_product_attention(q, k, v, attn_mask=pad_mask))
diff_pad = (out_pad - F.scaled_dot_product_attention(q, k, v, attn_mask=pad_mask)).abs().max().item()
print(f"padding mask: max |ours - torch| = {diff_pad:.1e}; weight on padding = {w_pad[1, :, 4:].sum().item()}")

# %% [markdown]
# **Check 3, a causal mask.** A language model that predicts the next token must not peek at it:
# position $t$ may attend to positions $\le t$ only, a lower-triangular mask.

# %%
tri = causal_mask(L, device)  # (L, L) lower triangle of True
print(tri.int())
out_causal, w_causal = attention(q, k, v, mask=tri)
torch.testing.assert_close(out_causal, F.scaled_dot_product_attention(q, k, v, is_causal=True))
diff_causal = (out_causal - F.scaled_dot_product_attention(q, k, v, is_causal=True)).abs().max().item()
print(f"causal mask: max |ours - torch| = {diff_causal:.1e}")

# %%
fig, axes = plt.subplots(1, 3, figsize=(10, 3.2))
for ax, mat, title in zip(axes, [w[1], w_pad[1], w_causal[1]], ["no mask", "padding (4 real tokens)", "causal"],
                          strict=True):
    ax.imshow(mat.cpu(), cmap="Blues", vmin=0, vmax=1)
    ax.set(title=title, xlabel="key position", ylabel="query position")
fig.suptitle("Attention weights of the second sequence: blocked pairs get exactly zero")
plt.tight_layout()
plt.show()

# %% [markdown]
# The book's packaged version, `dlbook.nn.attention.scaled_dot_product_attention`, is the same
# computation with shape checks, additive float masks, a `causal` flag, dropout on the weights and
# PyTorch's treatment of a query that may attend to nothing (zero weights, zero output). Later
# chapters import it.

# %%
dlbook.show(scaled_dot_product_attention)

# %%
for mask in (None, pad_mask, tri):
    packaged = scaled_dot_product_attention(q, k, v, mask=mask)
    ours = attention(q, k, v, mask=mask)
    torch.testing.assert_close(packaged, ours)
torch.testing.assert_close(scaled_dot_product_attention(q, k, v, causal=True)[0], out_causal)
dlbook.headline("sdpa_max_diff", max(diff_nomask, diff_pad, diff_causal), profile=profile, at_most=1e-5, fmt="{:.1e}")
print("the packaged function agrees with the cells above, for all three masks")

# %% [markdown]
# ## Why divide by $\sqrt{d_k}$?
#
# Take $q$ and $k$ with independent entries of mean 0 and variance 1. Their dot product is a sum
# of $d_k$ independent products, each of mean 0 and variance 1, so
#
# $$
# \mathbb{E}[q\cdot k] = 0, \qquad \mathrm{Var}(q\cdot k) = d_k .
# $$ (eq-dot-variance)
#
# The logits grow with the width of the vectors: for $d_k=512$ their standard deviation is
# $\sqrt{512}$, and a softmax over numbers that far apart is almost one-hot. Dividing by $\sqrt{d_k}$ brings
# the variance back to exactly 1 whatever $d_k$ is; dividing by $d_k$ (a tempting wrong form)
# overshoots to $1/d_k$. We measure all three.

# %%
scalings = {"none": lambda d: 1.0, "1/sqrt(d_k)": lambda d: 1 / math.sqrt(d), "1/d_k": lambda d: 1 / d}
variance = {name: [] for name in scalings}
for d in sizes["d_ks"]:
    qs = torch.randn(sizes["n_pairs"], d, device=device)  # (n_pairs, d_k), unit variance
    ks = torch.randn(sizes["n_pairs"], d, device=device)
    dots = (qs * ks).sum(-1)  # (n_pairs,) one dot product per pair
    for name, s in scalings.items():
        variance[name].append((s(d) * dots).var().item())
for i, d in enumerate(sizes["d_ks"]):
    print(f"d_k={d:5d}  var(q.k)={variance['none'][i]:8.2f}  "
          f"var(q.k/sqrt(d_k))={variance['1/sqrt(d_k)'][i]:.3f}  var(q.k/d_k)={variance['1/d_k'][i]:.5f}")

# %% [markdown]
# **Check** of {eq}`eq-dot-variance` against the measurement: the ratio of measured variance to
# $d_k$ stays within sampling error of 1 (with $n$ pairs the relative error of a variance estimate
# is of order $\sqrt{2/n}$; we allow a wide 15 %).

# %%
ratio = torch.tensor(variance["none"]) / torch.tensor(sizes["d_ks"], dtype=torch.float32)
print("var(q.k) / d_k =", [round(r, 3) for r in ratio.tolist()])
torch.testing.assert_close(ratio, torch.ones_like(ratio), atol=0.15, rtol=0)
dlbook.glue("var_ratio_worst", (ratio - 1).abs().max().item())

# %% [markdown]
# What the logit variance does to attention: for each $d_k$, 64 random keys and many random
# queries, the three scalings, and two measurements:
#
# - the **entropy** of each row of weights, $H = -\sum_j a_j\ln a_j$, between 0 (all weight on
#   one key) and $\ln 64 \approx 4.16$ (uniform: attention that cannot choose);
# - the **gradient size**: the norm of $\partial \ell/\partial q$ for a random linear loss $\ell$
#   on the output (median over queries), the signal that trains the query projection.

# %%
def entropy_and_grad(d, s, n_queries, n_keys):
    q = torch.randn(n_queries, d, device=device, requires_grad=True)  # (n_q, d_k)
    k = torch.randn(n_keys, d, device=device)  # (n_k, d_k)
    v = torch.randn(n_keys, d, device=device) / math.sqrt(d)  # (n_k, d), rows of norm about 1
    weights = torch.softmax(s * q @ k.T, dim=-1)  # (n_q, n_k)
    entropy = -torch.special.xlogy(weights, weights).sum(-1)  # (n_q,), 0 log 0 = 0
    probe = torch.randn(n_queries, d, device=device)  # a random linear loss on the output
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
    print(f"d_k={d:5d}  entropy " + " ".join(f"{n}: {entropy[n][i]:.2f}" for n in scalings)
          + " | gradient " + " ".join(f"{n}: {grad[n][i]:.2g}" for n in scalings))

# %%
fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
for name in scalings:
    axes[0].loglog(sizes["d_ks"], variance[name], "o-", label=name)
    axes[1].semilogx(sizes["d_ks"], entropy[name], "o-", label=name)
    axes[2].loglog(sizes["d_ks"], grad[name], "o-", label=name)
axes[1].axhline(math.log(sizes["n_keys"]), color="gray", ls=":", label="ln(n_keys): uniform")
axes[0].set(title="variance of the logits", xlabel="$d_k$", ylabel="Var")
axes[1].set(title="entropy of the attention weights", xlabel="$d_k$", ylabel="nats")
axes[2].set(title=r"median $\|\partial \ell / \partial q\|$", xlabel="$d_k$", ylabel="gradient norm")
for ax in axes:
    ax.legend(fontsize=8)
plt.tight_layout()
plt.show()

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
assert entropy["none"][big] < entropy["1/sqrt(d_k)"][big] < entropy["1/d_k"][big]
assert grad["none"][big] < grad["1/sqrt(d_k)"][big] and grad["1/d_k"][big] < grad["1/sqrt(d_k)"][big]

# %% [markdown]
# At $d_k=$ {glue:text}`dk_big` the three scalings behave very differently:
#
# | scaling | entropy (nats; uniform = {glue:text}`ent_uniform:.2f`) | median gradient norm |
# |---|---|---|
# | none | {glue:text}`ent_none_big:.2f` | {glue:text}`grad_none_big:.2g` |
# | $1/\sqrt{d_k}$ | {glue:text}`ent_sqrt_big:.2f` | {glue:text}`grad_sqrt_big:.2g` |
# | $1/d_k$ | {glue:text}`ent_dk_big:.2f` | {glue:text}`grad_dk_big:.2g` |
#
# - **No scaling**: the logits spread with $\sqrt{d_k}$, the softmax saturates to a near one-hot
#   choice (entropy towards 0) and its Jacobian, $\mathrm{diag}(a)-aa^\top$, goes to zero with
#   it: the gradient vanishes and the query projection stops learning. (At small $d_k$ the
#   unscaled gradient is even larger than the scaled one, because its logits are simply bigger;
#   as $d_k$ grows, saturation wins.)
# - **Divide by $d_k$**: the logits shrink like $1/\sqrt{d_k}$, every row drifts towards the
#   uniform average (entropy towards $\ln n$), attention can no longer pick anything out, and the
#   gradient shrinks too.
# - **Divide by $\sqrt{d_k}$**: unit-variance logits at every width; entropy and gradient stay put.
#   Only this choice makes the behaviour of a freshly initialised layer independent of $d_k$.

# %% [markdown]
# ## Multi-head attention
#
# One attention computes one weighted average per query, so it can follow one kind of
# relationship at a time. **Multi-head attention** runs $h$ attentions in parallel, each on its own
# learned projection of the input into a smaller space of $d_\text{head} = d_\text{model}/h$
# dimensions, and mixes their results with an output projection:
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
with torch.no_grad():  # PyTorch starts the biases at zero; make them non-zero so the check sees them
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
    return t.view(B, L, n_heads, D // n_heads).transpose(1, 2)  # (B, L, D) -> (B, H, L, D/H)


Q = split_heads(x @ W_q.T + b_q, n_heads)  # (B, H, L, d_head)
K = split_heads(x @ W_k.T + b_k, n_heads)  # (B, H, L, d_head)
V = split_heads(x @ W_v.T + b_v, n_heads)  # (B, H, L, d_head)
print("Q per head:", tuple(Q.shape))

# %% [markdown]
# Attend in every head at once, concatenate the heads back along the feature axis (the inverse of
# the split) and apply the output projection:

# %%
heads, head_weights = attention(Q, K, V)  # (B, H, L, d_head), (B, H, L, L)
concat = heads.transpose(1, 2).reshape(2, 5, d_model)  # (B, L, H * d_head) = (B, L, d_model)
mha_out = concat @ W_o.T + b_o  # (B, L, d_model)
mha_out.shape

# %% [markdown]
# **Check** against `nn.MultiheadAttention` with the same weights, outputs and per-head weights
# (`average_attn_weights=False`; by default PyTorch returns the *average* over heads):

# %%
ref_out, ref_w = torch_mha(x, x, x, need_weights=True, average_attn_weights=False)
torch.testing.assert_close(mha_out, ref_out)
torch.testing.assert_close(head_weights, ref_w)
diff_mha = (mha_out - ref_out).abs().max().item()
dlbook.headline("mha_max_diff", diff_mha, profile=profile, at_most=1e-5, fmt="{:.1e}")
print(f"multi-head attention from scratch: max |ours - torch| = {diff_mha:.1e}")

# %% [markdown]
# The packaged `MultiHeadAttention` keeps four separate `nn.Linear` layers (`q_proj`, `k_proj`,
# `v_proj`, `out_proj`, the layout of Hugging Face's BERT), takes the same masks as the function
# above plus PyTorch's `key_padding_mask`, and can copy the weights of an `nn.MultiheadAttention`:

# %%
dlbook.show(MultiHeadAttention.forward)

# %%
ours_mha = MultiHeadAttention(d_model, n_heads).to(device).load_from_torch(torch_mha).eval()
pkg_out, pkg_w = ours_mha(x, x, x, need_weights=True)
torch.testing.assert_close(pkg_out, mha_out)
torch.testing.assert_close(pkg_w, head_weights)
pad = torch.tensor([[False] * 5, [False] * 3 + [True] * 2], device=device)  # True = padding, as in torch
torch.testing.assert_close(ours_mha(x, x, x, key_padding_mask=pad)[0], torch_mha(x, x, x, key_padding_mask=pad)[0])
print("packaged MultiHeadAttention == cells above == nn.MultiheadAttention (also with key padding)")

# %% [markdown]
# ## What each head sees
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
X = torch.cat([F.one_hot(tok, 4), torch.eye(8), torch.zeros(8, 4)], dim=1).float().to(device)  # (L=8, d_model=16)
sharp = 4 * math.sqrt(8)  # a matching pair gets logit 4 after the 1/sqrt(d_head) scaling
W_q, W_k, W_v = torch.zeros(16, 16), torch.zeros(16, 16), torch.zeros(16, 16)  # rows 0-7: head 1, 8-15: head 2
W_q[0:8, 4:12] = sharp * torch.eye(8, 8).roll(1, dims=1)  # head 1 query at p = one-hot(p - 1)
W_k[0:8, 4:12] = torch.eye(8)  # head 1 key = position
W_v[0:4, 0:4] = torch.eye(4)  # head 1 value = letter
W_q[8:12, 0:4] = sharp * torch.eye(4)  # head 2 query = letter
W_k[8:12, 0:4] = torch.eye(4)  # head 2 key = letter
W_v[8:16, 4:12] = torch.eye(8)  # head 2 value = position
W_q[7, 4] = 0.0  # no wrap-around: position 0 has no previous token, its query is zero (uniform weights)

# %% [markdown]
# The weights go into a PyTorch `nn.MultiheadAttention` and, from there, into the packaged module;
# both must produce the same per-head attention.

# %%
toy_torch = nn.MultiheadAttention(16, 2, bias=False, batch_first=True).to(device).eval()
with torch.no_grad():
    toy_torch.in_proj_weight.copy_(torch.cat([W_q, W_k, W_v]))
    toy_torch.out_proj.weight.copy_(torch.eye(16))
toy = MultiHeadAttention(16, 2, bias=False).to(device).load_from_torch(toy_torch).eval()
toy_out, toy_w = toy(X[None], X[None], X[None], need_weights=True)  # (1, 8, 16), (1, 2, 8, 8)
torch.testing.assert_close(toy_w, toy_torch(X[None], X[None], X[None], average_attn_weights=False)[1])

fig, axes = plt.subplots(1, 2, figsize=(8.5, 4))
for h, title in enumerate(["head 1: previous token", "head 2: same letter"]):
    axes[h].imshow(toy_w[0, h].detach().cpu(), cmap="Blues", vmin=0, vmax=1)
    axes[h].set(title=title, xticks=range(8), yticks=range(8), xticklabels=list(text), yticklabels=list(text),
                xlabel="key", ylabel="query")
plt.tight_layout()
plt.show()

# %% [markdown]
# Reading the output: the first 4 features of each token are head 1's output, the letter it
# copied from the previous position (position 0 has none and gets an average).

# %%
copied = toy_out[0, :, 0:4].argmax(-1)  # (8,) which letter head 1 returned
print("token          :", " ".join(text))
print("head 1 returned:", " ".join(letters[i] for i in copied.tolist()))
assert [letters[i] for i in copied[1:].tolist()] == list(text[:-1])

# %% [markdown]
# A trained Transformer learns such heads by itself (chapter 7 trains one and looks at its
# maps). `nn.MultiheadAttention` returns the average over heads unless told otherwise, which would
# blend these two clean patterns into one blurred map: ask for per-head weights when you inspect.
#
# ## The cost of attention
#
# For a sequence of length $L$, the logits $QK^\top$ are an $L\times L$ matrix per head. The time
# grows as $L^2 d$ and, if the matrix is stored, so does the memory: the "naive" code above
# stores it twice (logits and weights). PyTorch's `F.scaled_dot_product_attention` dispatches to a
# **fused kernel** that walks over blocks of keys, keeps a running maximum and running sum of the
# softmax, and never materialises the whole matrix.
#
# To measure memory we count, at the level of PyTorch operators, the bytes of every tensor an
# operator creates while it is alive, and report the peak. (This sees every tensor PyTorch hands
# back; it does not see scratch buffers *inside* one fused kernel, which are a few tiles per
# thread. On a CUDA device we use the allocator's own peak instead, which sees everything.)

# %%
class PeakTensorBytes(TorchDispatchMode):
    """Peak bytes held by tensors that operators create inside the `with` block."""

    def __enter__(self):
        self.refs, self.size, self.live, self.peak, self.ops = {}, {}, 0, 0, set()
        return super().__enter__()

    def _release(self, ptr):
        self.refs[ptr] -= 1
        if self.refs[ptr] == 0:  # the last tensor using this memory is gone
            self.live -= self.size.pop(ptr)
            del self.refs[ptr]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.ops.add(str(func.overloadpacket.__name__))
        inputs = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for t in tree_leaves(out):
            if not isinstance(t, torch.Tensor):
                continue
            ptr = t.untyped_storage().data_ptr()
            if ptr in inputs and ptr not in self.refs:  # a view of a tensor made outside: no new memory
                continue
            if ptr not in self.refs:  # new memory
                self.refs[ptr], self.size[ptr] = 0, t.untyped_storage().nbytes()
                self.live += self.size[ptr]
                self.peak = max(self.peak, self.live)
            self.refs[ptr] += 1
            weakref.finalize(t, self._release, ptr)
        return out


def synchronize():
    if device.type == "cuda":
        torch.cuda.synchronize()
    elif device.type == "mps":
        torch.mps.synchronize()


def peak_bytes(fn):
    """Peak extra memory while fn() runs: allocator peak on CUDA, operator-level tensor peak elsewhere."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        return torch.cuda.max_memory_allocated() - base, set()
    with PeakTensorBytes() as tracker:
        fn()
    return tracker.peak, tracker.ops


def median_seconds(fn, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        synchronize()
        start = time.perf_counter()
        fn()
        synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# %% [markdown]
# One batch, several heads of width 64 (a common head size), float32, lengths doubling:

# %%
results = []
with torch.no_grad():
    for L in dlbook.progress(sizes["lengths"], desc="lengths"):
        q, k, v = (torch.randn(1, sizes["n_heads_cost"], L, 64, device=device) for _ in range(3))  # (B, H, L, 64)
        naive = functools.partial(attention, q, k, v)
        fused = functools.partial(F.scaled_dot_product_attention, q, k, v)
        mem_naive, ops_naive = peak_bytes(naive)
        mem_fused, ops_fused = peak_bytes(fused)
        results.append(dict(L=L, t_naive=median_seconds(naive, sizes["repeats"]),
                            t_fused=median_seconds(fused, sizes["repeats"]), mem_naive=mem_naive, mem_fused=mem_fused,
                            matrix=sizes["n_heads_cost"] * L * L * 4))
        torch.testing.assert_close(naive()[0], fused(), atol=1e-4, rtol=1e-4)
print("operators the naive version ran:", sorted(ops_naive))
print("operators the fused version ran:", sorted(ops_fused))
for r in results:
    print(f"L={r['L']:5d}  naive {1e3 * r['t_naive']:8.2f} ms {r['mem_naive'] / 2**20:8.1f} MiB | "
          f"fused {1e3 * r['t_fused']:8.2f} ms {r['mem_fused'] / 2**20:8.2f} MiB | one L x L matrix per head: "
          f"{r['matrix'] / 2**20:7.1f} MiB")

# %%
Ls = [r["L"] for r in results]
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
axes[0].loglog(Ls, [r["t_naive"] * 1e3 for r in results], "o-", label="naive (matrix stored)")
axes[0].loglog(Ls, [r["t_fused"] * 1e3 for r in results], "s-", label="F.scaled_dot_product_attention")
axes[0].set(title="time per call (median)", xlabel="sequence length L", ylabel="ms")
axes[1].loglog(Ls, [r["mem_naive"] / 2**20 for r in results], "o-", label="naive (matrix stored)")
axes[1].loglog(Ls, [r["mem_fused"] / 2**20 for r in results], "s-", label="F.scaled_dot_product_attention")
axes[1].loglog(Ls, [r["matrix"] / 2**20 for r in results], "k:", label="size of the L x L logits (all heads)")
axes[1].set(title="peak extra memory per call", xlabel="sequence length L", ylabel="MiB")
for ax in axes:
    ax.set_xscale("log", base=2)
    ax.set_xticks(Ls, [str(n) for n in Ls], minor=False)
    ax.minorticks_off()
    ax.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %%
last = results[-1]
prov = dlbook.env.last_provenance()
print(f"measured on {prov.device} ({prov.device_name}), {prov.threads} threads, torch {prov.torch}")
dlbook.glue("cost_L", last["L"])
dlbook.glue("cost_heads", sizes["n_heads_cost"])
dlbook.glue("speedup_fused", last["t_naive"] / last["t_fused"])
dlbook.glue("mem_naive_mib", last["mem_naive"] / 2**20)
dlbook.glue("mem_fused_mib", last["mem_fused"] / 2**20)
dlbook.glue("mem_ratio", last["mem_naive"] / last["mem_fused"])
dlbook.glue("time_growth", results[-1]["t_naive"] / results[-2]["t_naive"])
assert last["mem_naive"] >= last["matrix"], "the naive version must hold at least one L x L matrix"
output_bytes = sizes["n_heads_cost"] * last["L"] * 64 * 4
assert last["mem_fused"] < 2 * output_bytes, "the fused kernel should hold little beyond its output"

# %% [markdown]
# At $L=$ {glue:text}`cost_L` with {glue:text}`cost_heads` heads, on the machine named above, the
# fused call was {glue:text}`speedup_fused:.1f` times faster than the naive code and its peak
# memory was {glue:text}`mem_fused_mib:.1f` MiB against {glue:text}`mem_naive_mib:.0f` MiB
# (a factor of {glue:text}`mem_ratio:.0f`). Doubling the length multiplied the naive time by
# {glue:text}`time_growth:.1f` in the last step, against 4 for pure quadratic growth: fixed
# overheads (at short lengths) and memory traffic (at long ones) move the measured ratio away from
# the ideal. Timings are noisy; the memory counts are exact. The memory curves are the clearest: the naive peak runs parallel
# to the $L^2$ line, the fused one grows linearly (it holds the output and one number per query,
# the log of the softmax denominator, kept for the backward pass).
#
# The fused kernel does **the same arithmetic** in a different order, so it is exact up to rounding,
# not an approximation: the check
# in the loop compares it with the naive result. What it saves is memory traffic. On a GPU that is
# where the time goes: the naive version writes the $L\times L$ logits to the GPU's main memory
# (HBM), reads them back for the softmax, writes the weights, reads them again for the product
# with $V$. **FlashAttention** {cite}`dao2022flashattention` tiles $Q$, $K$ and $V$ into blocks
# that fit in the on-chip SRAM, computes the softmax block by block with the running-maximum
# trick, and writes only the output; the backward pass recomputes the blocks instead of storing
# them. The paper reports several-fold speed-ups for the attention computation and memory linear
# in $L$, which is what made long contexts practical. Time is still quadratic in $L$: FlashAttention
# makes each of the $L^2 d$ operations cheaper to feed, it does not remove any of them.

# %% [markdown]
# ## Summary
#
# - Attention is a differentiable dictionary: score the query against every key, softmax the
#   scores, average the values with those weights, {eq}`eq-soft-lookup`. In matrix form,
#   {eq}`eq-sdpa` matched `F.scaled_dot_product_attention` to {glue:text}`sdpa_max_diff`
#   without a mask, with a padding mask and with a causal mask.
# - Masks set logits to $-\infty$ before the softmax; in this book a boolean mask is `True` where a
#   query **may** attend, PyTorch's convention for `attn_mask`.
# - The dot product of two random unit-variance vectors has variance $d_k$
#   {eq}`eq-dot-variance` (measured within {glue:text}`var_ratio_worst:.1%`). Dividing by
#   $\sqrt{d_k}$ keeps the logits at unit variance; without it the softmax saturates and the
#   gradient vanishes, and dividing by $d_k$ flattens attention towards the uniform average.
# - Multi-head attention is projection, a reshape into heads, attention, the inverse reshape and an
#   output projection; ours matches `nn.MultiheadAttention` to {glue:text}`mha_max_diff`.
#   Hand-set heads showed two heads following two different relations on the same input.
# - The naive computation stores an $L\times L$ matrix per head; the fused kernel does not, and on
#   this machine was {glue:text}`speedup_fused:.1f` times faster at $L=$ {glue:text}`cost_L`.
#
# ## Exercises

# %% [markdown]
# :::{exercise}
# :label: ch06-ex-memory
# A model has 12 heads and processes one sequence of 8,192 tokens in float32. How many bytes does
# one layer's attention-weight tensor take if it is stored? How does that compare with the
# activations $X$ themselves at $d_\text{model}=768$?
# :::
#
# :::{solution} ch06-ex-memory
# :class: dropdown
# The weights are $12 \times 8192^2$ numbers of 4 bytes: $12 \times 67{,}108{,}864 \times 4
# \approx 3.2\times10^9$ bytes, about 3 GiB, for **one** layer and one sequence (and the logits
# before the softmax are another matrix of the same size). The activations are
# $8192\times768\times4 \approx 25$ MB, some 128 times smaller. Past a few thousand tokens the
# attention matrix, not the model, decides the memory; hence fused kernels that never store it.
# :::

# %% [markdown]
# :::{exercise}
# :label: ch06-ex-permutation
# Self-attention without masks and without positional information: what happens to the output if
# you shuffle the input tokens? Check your answer numerically with `attention(x, x, x)`.
# :::
#
# :::{solution} ch06-ex-permutation
# :class: dropdown
# Shuffling the rows of $X$ by a permutation $P$ shuffles the rows of the output the same way:
# $\mathrm{softmax}(PQK^\top P^\top)PV = P\,\mathrm{softmax}(QK^\top)V$, because the softmax acts
# row by row and permuting the keys and values together leaves each weighted sum unchanged. Check:
# `perm = torch.randperm(L); torch.testing.assert_close(attention(x[perm], x[perm], x[perm])[0],
# attention(x, x, x)[0][perm])`. Attention alone treats its input as a **set**; word order must be
# added to the tokens, which is what positional encodings (chapter 7) do.
# :::

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
# :label: ch06-ex-entropy
# Write `my_entropy(weights)` returning the entropy in nats of every row of an attention tensor
# `(..., L_q, L_k)`, as a tensor `(..., L_q)`. Rows may contain exact zeros (masked keys), where
# $0\ln 0$ counts as 0. What are the smallest and largest possible values for a row of length $n$?
# :::

# %%
def my_entropy(weights):
    raise NotImplementedError  # your code here


dlbook.exercises.check("ch06.attention_entropy", my_entropy)

# %% [markdown]
# ```{solution-start} ch06-ex-entropy
# :class: dropdown
# ```

# %% [markdown]
# `weights * weights.log()` gives `0 * -inf = nan` on masked keys; `torch.special.xlogy(w, w)`
# defines it as 0. The entropy is 0 for a one-hot row and $\ln n$ for the uniform row.

# %% tags=["solution"]
def my_entropy(weights):
    return -torch.special.xlogy(weights, weights).sum(dim=-1)  # (..., L_q)


assert dlbook.exercises.check("ch06.attention_entropy", my_entropy)

# %% [markdown]
# ```{solution-end}
# ```

# %% [markdown]
# ## Further reading
#
# - Bahdanau, Cho and Bengio introduced attention over the encoder states of a translation model
#   {cite}`bahdanau2015neural`.
# - Vaswani et al. built a model of attention alone, with scaled dot products and multiple heads,
#   and gave the $\sqrt{d_k}$ argument used here {cite}`vaswani2017attention`.
# - Dao et al. describe FlashAttention's tiling and recomputation and measure its speed and memory
#   {cite}`dao2022flashattention`.
