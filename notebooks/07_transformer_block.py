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
# (ch07)=
# # 7. The Transformer block
#
# Chapter 6 built attention, the operation that lets positions exchange information. A
# Transformer layer wraps it with four more parts: a **positional encoding** (attention alone
# ignores order), **layer normalisation**, a position-wise **feed-forward network**, and
# **residual connections** around both sub-layers {cite}`vaswani2017attention`. This chapter
# builds each part, checks it against PyTorch, assembles a full encoder layer that reproduces
# `nn.TransformerEncoderLayer`, and trains two small Transformers: an encoder that sorts digits
# and a causal one that writes names.
#
# By the end of this chapter you can
#
# 1. compute sinusoidal positional encodings and prove, numerically, that a shift in position is
#    a fixed rotation of the encoding;
# 2. write layer normalisation and the feed-forward network (ReLU and GELU) and say why
#    Transformers normalise per token rather than per batch;
# 3. assemble post-norm and pre-norm encoder layers that match `nn.TransformerEncoderLayer`;
# 4. train a Transformer encoder on a toy task and read the attention maps it learned;
# 5. turn the encoder into a causal language model and compare it with recurrent networks on the
#    same data.

# %%
# In Colab, install the book's helpers and offline assets first (nothing happens elsewhere).
import sys

if "google.colab" in sys.modules:
    import subprocess

    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "dlbook[assets] @ git+https://github.com/dlbook-verified/deep-learning-verified"], check=True)
    subprocess.run([sys.executable, "-m", "dlbook.colab"], check=True)

# %%
import math
import os

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import nn

import dlbook
import dlbook.exercises
from dlbook import assets, charlm
from dlbook.nn.attention import MultiHeadAttention
from dlbook.nn.transformer import (
    Encoder,
    EncoderLayer,
    FeedForward,
    LayerNorm,
    TransformerLM,
    sinusoidal_positional_encoding,
)

device = dlbook.setup(seed=0)

# %% tags=["parameters"]
profile = os.environ.get("DLBOOK_PROFILE", "full")

# %%
sizes = dlbook.by_profile(
    profile,
    smoke=dict(depths=[1, 4], sort_len=10, sort_steps=20, sort_batch=32, sort_test=128,
               lm_epochs=1, lm_names=96, lm_batch=32),
    full=dict(depths=[1, 4, 16, 32], sort_len=10, sort_steps=1500, sort_batch=128, sort_test=2000,
              lm_epochs=15, lm_names=None, lm_batch=64),
)
sizes

# %% [markdown]
# ## The block at a glance
#
# An encoder layer maps a sequence of vectors $X\in\mathbb{R}^{L\times d}$ to another of the same
# shape. Before the first layer, each token's embedding gets its position added. Inside a layer
# (the original "post-norm" arrangement):
#
# $$
# H = \mathrm{LN}\big(X + \mathrm{MultiHead}(X, X, X)\big), \qquad
# Y = \mathrm{LN}\big(H + \mathrm{FFN}(H)\big).
# $$ (eq-post-norm)
#
# Attention mixes information **across positions**; the feed-forward network transforms each
# position **on its own**; the residual additions and LayerNorms keep a deep stack trainable. We
# take the parts in order.
#
# ## Positional encoding
#
# Attention is blind to order: shuffling the tokens shuffles the outputs the same way and changes
# nothing else (an exercise of chapter 6). The original Transformer adds to each embedding a
# fixed vector that depends on the position $pos$, made of sines and cosines of geometrically
# spaced frequencies. For the pair of dimensions $(2i, 2i+1)$, $i = 0,\dots,d/2-1$:
#
# $$
# PE_{pos,\,2i} = \sin\!\big(pos\,\omega_i\big), \qquad PE_{pos,\,2i+1} = \cos\!\big(pos\,\omega_i\big),
# \qquad \omega_i = \frac{1}{10000^{2i/d}} .
# $$ (eq-pe)
#
# Sine on the even dimensions, cosine on the odd ones; the first pair turns once every $2\pi$
# positions, the last one about once every $2\pi\cdot 10000$.

# %%
n_pos, d_pe = 64, 32
pos = torch.arange(n_pos, dtype=torch.float64)[:, None]  # (P, 1)
two_i = torch.arange(0, d_pe, 2, dtype=torch.float64)  # (d/2,) = 0, 2, 4, ...
omega = 1.0 / 10000 ** (two_i / d_pe)  # (d/2,) one frequency per pair
pe = torch.zeros(n_pos, d_pe, dtype=torch.float64)  # (P, d)
pe[:, 0::2] = torch.sin(pos * omega)  # even dimensions
pe[:, 1::2] = torch.cos(pos * omega)  # odd dimensions
pe.shape

# %% [markdown]
# **Check** against a plain element-by-element evaluation of {eq}`eq-pe` with Python's `math`,
# and against the packaged `dlbook.nn.transformer.sinusoidal_positional_encoding` (which later
# chapters import):

# %%
by_hand = torch.tensor([[math.sin(p / 10000 ** (j / d_pe)) if j % 2 == 0 else math.cos(p / 10000 ** ((j - 1) / d_pe))
                         for j in range(d_pe)] for p in range(n_pos)], dtype=torch.float64)
torch.testing.assert_close(pe, by_hand)
torch.testing.assert_close(sinusoidal_positional_encoding(n_pos, d_pe), pe.float())
dlbook.show(sinusoidal_positional_encoding)

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 3.6))
im = axes[0].imshow(pe.T, aspect="auto", cmap="RdBu", vmin=-1, vmax=1)
axes[0].set(title="PE: rows are dimensions, columns positions", xlabel="position", ylabel="dimension")
plt.colorbar(im, ax=axes[0])
for j in (0, 2, 8, 16):
    axes[1].plot(pe[:, j], label=f"dim {j} (pair {j // 2})")
axes[1].set(title="a few even (sine) dimensions", xlabel="position")
axes[1].legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# ### A shift in position is a fixed rotation
#
# Why sines and cosines? Because the encoding of position $pos+k$ is a **linear function of the
# encoding of $pos$ that depends only on $k$**. By the angle-addition formulas, each (sine,
# cosine) pair rotates by the angle $k\,\omega_i$:
#
# $$
# \begin{pmatrix} PE_{pos+k,\,2i} \\ PE_{pos+k,\,2i+1} \end{pmatrix}
# = \begin{pmatrix} \cos k\omega_i & \sin k\omega_i \\ -\sin k\omega_i & \cos k\omega_i \end{pmatrix}
# \begin{pmatrix} PE_{pos,\,2i} \\ PE_{pos,\,2i+1} \end{pmatrix},
# \qquad PE_{pos+k} = M_k\, PE_{pos},
# $$ (eq-pe-shift)
#
# with $M_k$ block-diagonal, one $2\times 2$ rotation per pair, the same for every $pos$. A layer
# that learns a linear map can therefore learn "look $k$ positions back" once, for all positions.

# %%
def shift_matrix(k, d):
    """M_k of eq-pe-shift: block-diagonal rotations by k * omega_i, (d, d)."""
    M = torch.zeros(d, d, dtype=torch.float64)
    for i in range(d // 2):
        a = k / 10000 ** (2 * i / d)
        M[2 * i:2 * i + 2, 2 * i:2 * i + 2] = torch.tensor([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])
    return M


for k in (1, 5, 20):
    M = shift_matrix(k, d_pe)
    torch.testing.assert_close(pe[k:], pe[:-k] @ M.T)  # every position at once: PE_{pos+k} = M_k PE_pos
print("PE[pos + k] == M_k PE[pos] for k = 1, 5, 20 and every pos")

# %% [markdown]
# The map is not just *some* linear map we guessed: fitting an unconstrained matrix by least squares
# from the pairs $(PE_{pos}, PE_{pos+k})$ recovers the rotation blocks. We fit the first 8
# dimensions (four pairs): the slower pairs barely move over 64 positions, so their columns are
# nearly constant and a fit on them is ill-conditioned.

# %%
k, d_fit = 5, 8
fitted = torch.linalg.lstsq(pe[:-k, :d_fit], pe[k:, :d_fit]).solution.T  # (8, 8): PE[pos+k] ~ fitted @ PE[pos]
shift_fit_err = (fitted - shift_matrix(k, d_pe)[:d_fit, :d_fit]).abs().max().item()
dlbook.glue("shift_fit_err", shift_fit_err)
torch.testing.assert_close(fitted, shift_matrix(k, d_pe)[:d_fit, :d_fit], atol=1e-6, rtol=0)
print(f"max |least-squares map - M_5| = {shift_fit_err:.1e}")

# %% [markdown]
# A consequence: the dot product $PE_{pos}\cdot PE_{pos+k} = \sum_i \cos(k\omega_i)$ depends only
# on the offset $k$, and it falls as $|k|$ grows. Nearby positions look alike, far ones do not;
# the bands of the similarity matrix are parallel to the diagonal.

# %%
sim = pe @ pe.T  # (P, P)
torch.testing.assert_close(sim[10, 17], torch.cos(7 * omega).sum())
plt.figure(figsize=(4.2, 3.6))
plt.imshow(sim, cmap="viridis")
plt.colorbar()
plt.title(r"$PE_{pos} \cdot PE_{pos'}$")
plt.xlabel("pos'")
plt.ylabel("pos")
plt.show()

# %% [markdown]
# **Learned position embeddings** are the alternative that BERT and GPT use: a trainable table
# `nn.Embedding(max_len, d)` with one vector per position, learned like word embeddings. They fit
# whatever the task needs but exist only up to `max_len`, while {eq}`eq-pe` is defined for any
# position. The causal model at the end of this chapter uses a learned table, and we compare what
# it learned with the sinusoids.
#
# ## Layer normalisation
#
# Layer normalisation {cite}`ba2016layer` standardises **each token's vector on its own**, over
# its $d$ features, then rescales with learned $\gamma$ and $\beta$:
#
# $$
# \mu = \frac1d\sum_{j=1}^d x_j, \qquad \sigma^2 = \frac1d\sum_{j=1}^d (x_j-\mu)^2, \qquad
# \mathrm{LN}(x) = \gamma \odot \frac{x-\mu}{\sqrt{\sigma^2+\epsilon}} + \beta .
# $$ (eq-layernorm)
#
# Note the biased variance (divide by $d$, not $d-1$) and the $\epsilon$ inside the root.

# %%
def layer_norm(x, gamma, beta, eps=1e-5):
    mu = x.mean(dim=-1, keepdim=True)  # (..., 1)
    var = ((x - mu) ** 2).mean(dim=-1, keepdim=True)  # (..., 1), biased
    return gamma * (x - mu) / torch.sqrt(var + eps) + beta  # (..., d)


ref_ln = nn.LayerNorm(16).to(device)
with torch.no_grad():  # non-trivial gamma and beta
    ref_ln.weight.normal_()
    ref_ln.bias.normal_()
x = 3 + 2 * torch.randn(4, 7, 16, device=device)  # (B, L, d), mean 3, std 2
ours_ln = layer_norm(x, ref_ln.weight, ref_ln.bias)
torch.testing.assert_close(ours_ln, ref_ln(x))
diff_ln = (ours_ln - ref_ln(x)).abs().max().item()
dlbook.glue("ln_max_diff", diff_ln)
print(f"LayerNorm from scratch: max |ours - nn.LayerNorm| = {diff_ln:.1e}")

# %% [markdown]
# The packaged module keeps PyTorch's parameter names (`weight` = $\gamma$, `bias` = $\beta$), so a
# state dict loads either way; BERT uses $\epsilon=10^{-12}$, which is why `eps` is an argument.

# %%
pkg_ln = LayerNorm(16).to(device)
pkg_ln.load_state_dict(ref_ln.state_dict())
torch.testing.assert_close(pkg_ln(x), ref_ln(x))
dlbook.show(LayerNorm.forward)

# %% [markdown]
# ### Why not batch normalisation?
#
# Batch normalisation (used in convolutional networks) standardises each **feature** with
# statistics taken across the batch (and, for sequences, across positions). For sequence models
# that is awkward in three ways: a token's output depends on the *other* sequences in the batch
# and on how much padding they carry; sequence lengths and batch statistics differ between
# training and generation (one token at a time, batch of one), so the model relies on running
# averages that may not match; and small batches give noisy statistics. LayerNorm uses only the
# token itself, so it behaves identically in training and inference, at any batch size. A direct
# test: append one more sequence to the batch and see if the first sequence's output moves.

# %%
bn = nn.BatchNorm1d(16).to(device).train()  # normalises features: expects (B, d, L)
seq = torch.randn(1, 7, 16, device=device)  # the sequence we care about, (1, L, d)
other = 5 + 3 * torch.randn(1, 7, 16, device=device)  # a batch-mate with different statistics
bn_alone = bn(seq.transpose(1, 2)).transpose(1, 2)  # (1, L, d)
bn_batched = bn(torch.cat([seq, other]).transpose(1, 2)).transpose(1, 2)[:1]
ln_alone, ln_batched = pkg_ln(seq), pkg_ln(torch.cat([seq, other]))[:1]
bn_shift = (bn_alone - bn_batched).abs().max().item()
ln_shift = (ln_alone - ln_batched).abs().max().item()
print(f"change in sequence 1's output when a batch-mate is added: BatchNorm {bn_shift:.3f}, LayerNorm {ln_shift:.1e}")
assert ln_shift < 1e-6 and bn_shift > 0.1
dlbook.glue("bn_shift", bn_shift)

# %% [markdown]
# ## The position-wise feed-forward network
#
# After attention has mixed the positions, each position goes through the same small two-layer
# network, independently:
#
# $$
# \mathrm{FFN}(x) = W_2\,\max(0,\, W_1 x + b_1) + b_2 ,
# $$ (eq-ffn)
#
# with $W_1\in\mathbb{R}^{d_\text{ff}\times d}$, usually $d_\text{ff}=4d$: the layer widens each
# token, applies the non-linearity, and projects back. Note where the ReLU sits: between the two
# linear maps, never after the second.

# %%
d, d_ff = 16, 64
lin1, lin2 = nn.Linear(d, d_ff).to(device), nn.Linear(d_ff, d).to(device)
def ffn(x):
    return lin2(torch.clamp(lin1(x), min=0))  # (..., d) -> (..., d_ff) -> (..., d)


y = ffn(x)  # (B, L, d)
per_position = torch.stack([ffn(x[:, t]) for t in range(x.shape[1])], dim=1)  # one position at a time
torch.testing.assert_close(y, per_position)
torch.testing.assert_close(y, F.linear(F.relu(F.linear(x, lin1.weight, lin1.bias)), lin2.weight, lin2.bias))
print("FFN on the whole sequence == FFN on each position separately == F.linear/F.relu reference")

# %% [markdown]
# BERT and GPT replace the ReLU by the **GELU** {cite}`hendrycks2016gelu`, $\mathrm{GELU}(z) =
# z\,\Phi(z)$ with $\Phi$ the standard normal CDF, a smooth ReLU that lets small negative values
# through. BERT uses the exact form with the error function,
# $\Phi(z)=\tfrac12\big(1+\mathrm{erf}(z/\sqrt2)\big)$; a tanh approximation also circulates, and
# it is not the same function (to reproduce BERT exactly, use `F.gelu` with its default
# `approximate="none"`).

# %%
z = torch.linspace(-4, 4, 801, device=device)
gelu_exact = z * 0.5 * (1 + torch.erf(z / math.sqrt(2)))
torch.testing.assert_close(gelu_exact, F.gelu(z))
tanh_gap = (F.gelu(z, approximate="tanh") - F.gelu(z)).abs().max().item()
dlbook.glue("gelu_tanh_gap", tanh_gap)
print(f"exact GELU == F.gelu; the tanh approximation differs by up to {tanh_gap:.1e}")
plt.figure(figsize=(5, 3.2))
plt.plot(z.cpu(), F.relu(z).cpu(), label="ReLU")
plt.plot(z.cpu(), gelu_exact.cpu(), label=r"GELU $z\,\Phi(z)$")
plt.legend()
plt.title("ReLU and GELU")
plt.show()

# %% [markdown]
# The packaged `FeedForward` takes `activation="relu"` or `"gelu"` (exact) and names its layers
# `linear1`, `linear2` like `nn.TransformerEncoderLayer`:

# %%
pkg_ffn = FeedForward(d, d_ff, activation="relu").to(device)
pkg_ffn.linear1.load_state_dict(lin1.state_dict())
pkg_ffn.linear2.load_state_dict(lin2.state_dict())
torch.testing.assert_close(pkg_ffn(x), ffn(x))
dlbook.show(FeedForward.forward)

# %% [markdown]
# ## Residual connections: post-norm and pre-norm
#
# Each sub-layer is wrapped in a **residual connection** {cite}`he2016deep`: the layer computes a
# *correction* that is added to its input, $x + f(x)$. The Jacobian is $I + \partial f/\partial x$,
# so a gradient always has a path through the identity, however deep the stack. Where the
# LayerNorm goes is a design choice:
#
# - **post-norm** (original Transformer, BERT): normalise *after* the addition, {eq}`eq-post-norm`;
# - **pre-norm** (GPT-2 and most recent models): normalise the *input of the sub-layer* and leave
#   the sum alone, with one final LayerNorm after the last layer:
#
# $$
# H = X + \mathrm{MultiHead}(\mathrm{LN}(X)), \qquad Y = H + \mathrm{FFN}(\mathrm{LN}(H)).
# $$ (eq-pre-norm)
#
# In pre-norm the residual stream is a clean sum from the input to the output; in post-norm each
# LayerNorm rescales it, and the gradient that reaches the early layers passes through every one
# of them. Xiong et al. {cite}`xiong2020layer` show that this is why post-norm models need a
# learning-rate warm-up while pre-norm ones often do not. A quick measurement at initialisation:
# the size of the gradient that reaches the **input** of stacks of growing depth.

# %%
input_grad = {"post-norm": [], "pre-norm": []}
for depth in sizes["depths"]:
    for name, norm_first in (("post-norm", False), ("pre-norm", True)):
        torch.manual_seed(0)
        stack = Encoder(depth, 64, 4, 256, dropout=0.0, norm_first=norm_first).to(device)
        x_in = torch.randn(16, 16, 64, device=device, requires_grad=True)  # (B, L, d)
        out = stack(x_in)
        probe = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(device)
        (out * probe).mean().backward()
        input_grad[name].append(x_in.grad.norm().item())
for name, values in input_grad.items():
    print(f"{name:9s}", " ".join(f"depth {n}: {g:.2e}" for n, g in zip(sizes["depths"], values, strict=True)))

# %%
plt.figure(figsize=(5, 3.2))
for name, values in input_grad.items():
    plt.plot(sizes["depths"], values, "o-", label=name)
plt.xscale("log")
plt.xlabel("number of layers")
plt.ylabel(r"$\|\partial \ell / \partial x_{input}\|$")
plt.title("gradient reaching the input, at initialisation")
plt.legend()
plt.show()
dlbook.glue("grad_ratio_deep", input_grad["pre-norm"][-1] / input_grad["post-norm"][-1])
dlbook.glue("deepest", sizes["depths"][-1])

# %% [markdown]
# At {glue:text}`deepest` layers, the gradient reaching the input of the pre-norm stack is
# {glue:text}`grad_ratio_deep:.1f` times that of the post-norm stack. The effect grows with depth;
# for the two- to six-layer models of this book both arrangements train well.
#
# ## A full encoder layer, from scratch
#
# We now have every part. A post-norm layer ({eq}`eq-post-norm`) and a pre-norm layer
# ({eq}`eq-pre-norm`), written with the multi-head attention of chapter 6 and the `layer_norm`
# and FFN of this chapter, with dropout left out (it is the identity at evaluation time):

# %%
def encoder_layer(x, attn, ln1, ln2, lin1, lin2, norm_first, key_padding_mask=None):
    def sa(h):
        return attn(h, h, h, key_padding_mask=key_padding_mask)[0]  # (B, L, d)

    def ff(h):
        return lin2(torch.relu(lin1(h)))  # (B, L, d)

    def norm(h, ln):
        return layer_norm(h, ln.weight, ln.bias, ln.eps)

    if norm_first:  # pre-norm, eq-pre-norm
        x = x + sa(norm(x, ln1))
        return x + ff(norm(x, ln2))
    x = norm(x + sa(x), ln1)  # post-norm, eq-post-norm
    return norm(x + ff(x), ln2)


# %% [markdown]
# **Check** against `nn.TransformerEncoderLayer` (batch-first, dropout 0, evaluation mode) for both
# settings of `norm_first`, with its weights copied in, with and without a padding mask. The
# PyTorch layer's biases and norms start at trivial values (zeros and ones), so we perturb every
# parameter first to make the comparison meaningful.

# %%
d_model, n_heads, d_ff = 32, 4, 128
x = torch.randn(3, 9, d_model, device=device)  # (B, L, d_model)
pad = torch.zeros(3, 9, dtype=torch.bool, device=device)
pad[1, 6:] = True  # the second sequence has 6 real tokens; True = padding, PyTorch's convention
layer_diffs = {}
for norm_first in (False, True):
    torch.manual_seed(0)
    ref = nn.TransformerEncoderLayer(d_model, n_heads, d_ff, dropout=0.0, batch_first=True,
                                     norm_first=norm_first).to(device).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.1 * torch.randn_like(p))
    attn = MultiHeadAttention(d_model, n_heads).to(device).load_from_torch(ref.self_attn).eval()
    for mask in (None, pad):
        ours = encoder_layer(x, attn, ref.norm1, ref.norm2, ref.linear1, ref.linear2, norm_first, key_padding_mask=mask)
        theirs = ref(x, src_key_padding_mask=mask)
        torch.testing.assert_close(ours, theirs)
        layer_diffs[(norm_first, mask is not None)] = (ours - theirs).abs().max().item()
    packaged = EncoderLayer(d_model, n_heads, d_ff, dropout=0.0, norm_first=norm_first).to(device)
    packaged.load_from_torch(ref).eval()
    torch.testing.assert_close(packaged(x, key_padding_mask=pad), ref(x, src_key_padding_mask=pad))
for (nf, masked), diff in layer_diffs.items():
    print(f"norm_first={nf!s:5}  padding mask={masked!s:5}  max |ours - torch| = {diff:.1e}")
dlbook.glue("layer_max_diff", max(layer_diffs.values()))

# %% [markdown]
# The packaged `EncoderLayer` (checked in the same loop) is what the BERT chapter stacks:

# %%
dlbook.show(EncoderLayer.forward)

# %% [markdown]
# ## Training an encoder: sorting digits
#
# A task small enough to train in a couple of minutes and hard enough to need attention: the
# input is a sequence of 10 random digits, and at every position the model must output the digit
# that belongs there in **sorted** order. Output position $i$ must find the $i$-th smallest input
# digit, which depends on all the other digits: no position can be answered alone.
#
# The model is an embedding, the sinusoidal positions, two pre-norm encoder layers and a linear
# classifier per position (10 classes). Training data is generated on the fly from a seeded
# generator; the test set is a separate fixed sample.

# %%
def digit_batch(n, length, generator):
    x = torch.randint(0, 10, (n, length), generator=generator)  # (n, L) random digits
    return x, x.sort(dim=-1).values  # inputs, targets (the sorted sequence)


class DigitSorter(nn.Module):
    def __init__(self, length, d_model=64, n_heads=4, d_ff=128, n_layers=2):
        super().__init__()
        self.embed = nn.Embedding(10, d_model)
        self.register_buffer("pe", sinusoidal_positional_encoding(length, d_model))  # (L, d), fixed
        self.encoder = Encoder(n_layers, d_model, n_heads, d_ff, dropout=0.0, norm_first=True)
        self.head = nn.Linear(d_model, 10)
        self.scale = math.sqrt(d_model)

    def forward(self, x, need_weights=False):
        h = self.embed(x) * self.scale + self.pe  # (B, L, d): embeddings scaled to the size of PE
        h, weights = self.encoder(h, need_weights=True)  # (B, L, d), list of (B, H, L, L)
        logits = self.head(h)  # (B, L, 10)
        return (logits, weights) if need_weights else logits


sort_len = sizes["sort_len"]
torch.manual_seed(0)
sorter = DigitSorter(sort_len).to(device)
x_test, y_test = digit_batch(sizes["sort_test"], sort_len, torch.Generator().manual_seed(1))
x_test, y_test = x_test.to(device), y_test.to(device)
print(f"{sum(p.numel() for p in sorter.parameters()):,} parameters; example:", x_test[0].tolist(), "->",
      y_test[0].tolist())

# %%
def sort_accuracy(model):
    model.eval()
    with torch.no_grad():
        pred = model(x_test).argmax(-1)  # (n_test, L)
    model.train()
    return (pred == y_test).float().mean().item(), (pred == y_test).all(-1).float().mean().item()


data_gen = torch.Generator().manual_seed(0)
opt = torch.optim.AdamW(sorter.parameters(), lr=3e-3)
warmup = max(0.1, 2 / sizes["sort_steps"])  # 10 % warm-up (at least two steps)
sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=sizes["sort_steps"], pct_start=warmup)
sort_log = []
bar = dlbook.progress(range(sizes["sort_steps"]), desc="sorting")
for step in bar:
    xb, yb = digit_batch(sizes["sort_batch"], sort_len, data_gen)
    xb, yb = xb.to(device), yb.to(device)
    loss = F.cross_entropy(sorter(xb).flatten(0, 1), yb.flatten())  # mean over all positions
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sched.step()
    if step % 50 == 0 or step == sizes["sort_steps"] - 1:
        sort_log.append((step, loss.item(), *sort_accuracy(sorter)))
        bar.set_postfix(loss=f"{loss.item():.3f}", seq_acc=f"{sort_log[-1][3]:.3f}")

# %%
steps_, losses_, tok_acc_, seq_acc_ = zip(*sort_log, strict=True)
fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
axes[0].semilogy(steps_, losses_)
axes[0].set(title="training loss (cross-entropy per position)", xlabel="step")
axes[1].plot(steps_, tok_acc_, label="positions right")
axes[1].plot(steps_, seq_acc_, label="whole sequences right")
axes[1].set(title="held-out accuracy", xlabel="step", ylim=(0, 1.02))
axes[1].legend()
plt.tight_layout()
plt.show()

# %%
token_acc, seq_acc = sort_accuracy(sorter)
dlbook.glue("sort_token_acc", token_acc)
dlbook.glue("n_sort_test", sizes["sort_test"])
dlbook.headline("toy_task_acc", seq_acc, profile=profile, at_least=0.98)

# %% [markdown]
# On {glue:text}`n_sort_test` held-out sequences the model sorts {glue:text}`toy_task_acc` of the
# sequences **entirely** correctly (sequence-level accuracy: all 10 outputs right), and
# {glue:text}`sort_token_acc:.4f` of the individual positions.
#
# ### What the attention learned
#
# The attention weights of both layers for one test sequence, one map per head. Columns are the
# keys, labelled with the input digits; rows are the query positions, labelled with the digit each
# position must output (the sorted sequence).

# %%
example = x_test[:1]  # (1, L)
with torch.no_grad():
    sorter.eval()
    logits, maps = sorter(example, need_weights=True)
digits = [str(v) for v in example[0].tolist()]  # key labels: the input
targets = [str(v) for v in y_test[0].tolist()]  # query labels: what each position must output
n_layers, n_heads_s = len(maps), maps[0].shape[1]
fig, axes = plt.subplots(n_layers, n_heads_s, figsize=(3 * n_heads_s, 3 * n_layers))
for layer in range(n_layers):
    for h in range(n_heads_s):
        ax = axes[layer, h]
        ax.imshow(maps[layer][0, h].cpu(), cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(sort_len), digits, fontsize=7)
        ax.set_yticks(range(sort_len), targets, fontsize=7)
        ax.set_title(f"layer {layer + 1}, head {h + 1}", fontsize=9)
plt.tight_layout()
plt.show()
print("input :", example[0].tolist())
print("output:", logits.argmax(-1)[0].tolist())

# %% [markdown]
# Output position $i$ must end up holding the $i$-th smallest digit. One way to get there is for
# position $i$ to **attend to a key that holds that digit** and copy it. We can measure whether
# the heads do this, over the whole test set: for each head, the share of attention that position
# $i$ puts on keys whose digit equals the correct output $y_i$, compared with the share a uniform
# head would put there (the fraction of the sequence that holds the digit $y_i$).

# %%
with torch.no_grad():
    _, all_maps = sorter(x_test, need_weights=True)  # list over layers of (n_test, H, L, L)
holds_answer = (x_test[:, None, :] == y_test[:, :, None]).float()  # (n_test, L_q, L_k): key j holds y_i
chance = holds_answer.mean().item()  # a uniform head's share
answer_mass = torch.stack([(w * holds_answer[:, None]).sum(-1).mean(dim=(0, 2)) for w in all_maps])  # (layers, H)
for layer, row in enumerate(answer_mass.tolist()):
    print(f"layer {layer + 1}: share of attention on keys holding the answer, per head:", [f"{v:.2f}" for v in row])
print(f"a uniform head: {chance:.2f}")
best = answer_mass[-1].argmax().item()
dlbook.glue("answer_mass_best", answer_mass[-1, best].item())
dlbook.glue("answer_head", best + 1)
dlbook.glue("answer_chance", chance)
dlbook.glue("answer_mass_first", answer_mass[0].max().item())

# %% [markdown]
# In the last layer, head {glue:text}`answer_head` puts {glue:text}`answer_mass_best:.2f` of its
# attention on keys that hold the digit the position must output, against
# {glue:text}`answer_chance:.2f` for a uniform head; in the first layer no head gets beyond
# {glue:text}`answer_mass_first:.2f`. The maps above show the same division of labour. The first
# layer is diffuse: every position takes a broad average over the sequence, a summary of which
# digits are present. The second layer is sharp and keyed on **content**: whole columns light up
# for the keys holding one digit value, whatever their position, and rows that must output small
# digits attend to the small digits. No positional rule (like "look $k$ to the left") could sort,
# and none of the maps is one. The answer is not read off a single head, though: the heads share
# the work and the feed-forward layers and the residual stream combine what they fetch.
#
# ## The causal variant: a character-level language model
#
# The same block becomes a **decoder-only** (GPT-style) model with one change: a causal mask, so
# that position $t$ sees only positions $\le t$. Trained to predict the next character of each
# prefix, it is a language model of names. As in the recurrent chapters, a name such as
# `anna` is framed as `<bos> a n n a` (input) and `a n n a <eos>` (target), and the loss is the
# negative log-likelihood of each name,
#
# $$
# \ell(x) = -\sum_{t=1}^{T} \log p_\theta\big(x_t \mid x_{<t}\big),
# $$ (eq-lm-loss)
#
# reported per character (divided by the number of predicted characters, `<eos>` included). The
# data are the US census first names, split by `dlbook.assets.census_names()` into the same
# train, validation and test lists that the recurrent models of Part I use.

# %%
names = assets.census_names()
if sizes["lm_names"] is not None:  # smoke: a small subset
    names = {split: lst[: sizes["lm_names"]] for split, lst in names.items()}
vocab = charlm.CharVocab()
max_len = max(len(n) for lst in names.values() for n in lst) + 1  # + <bos>
print({split: len(lst) for split, lst in names.items()}, "| vocabulary", len(vocab), "| max_len", max_len)

# %%
torch.manual_seed(0)
gpt = TransformerLM(len(vocab), d_model=64, n_heads=4, d_ff=256, n_layers=2, max_len=max_len, dropout=0.1).to(device)
dlbook.show(TransformerLM.forward)

# %% [markdown]
# **Check 1, causality.** If the mask works, the logits at position $t$ computed on the whole name
# equal the logits computed on the prefix up to $t$ alone; nothing later can leak in.

# %%
gpt.eval()
ids = torch.tensor([vocab.encode("margaret")[:-1]], device=device)  # (1, T): <bos> m a r g a r e t
with torch.no_grad():
    full = gpt(ids)  # (1, T, V)
    prefixes = torch.cat([gpt(ids[:, : t + 1])[:, -1:] for t in range(ids.shape[1])], dim=1)  # one prefix at a time
torch.testing.assert_close(full, prefixes)
print("logits on the full sequence == logits on each prefix alone, at every position")

# %% [markdown]
# **Check 2, the loss.** `charlm.loss_per_char` is {eq}`eq-lm-loss` summed over names and divided by
# the number of predicted characters; here it is computed by hand with `log_softmax` for a few
# names and compared with it and with `F.cross_entropy`. An untrained model is close to the
# uniform guess, $\ln |V|$.

# %%
few = names["validation"][:8]
total, count = 0.0, 0
with torch.no_grad():
    for name in few:
        enc = torch.tensor(vocab.encode(name), device=device)  # <bos> x_1 ... x_T <eos>
        log_p = torch.log_softmax(gpt(enc[None, :-1])[0], dim=-1)  # (T+1, V): log p(. | x_<t)
        total += -log_p[torch.arange(len(enc) - 1), enc[1:]].sum().item()  # -sum_t log p(x_t | x_<t)
        count += len(enc) - 1
inputs, targets, mask = charlm.collate([charlm.NamesDataset(few, vocab)[i] for i in range(len(few))])
with torch.no_grad():
    ce = F.cross_entropy(gpt(inputs.to(device)).flatten(0, 1), targets.to(device).flatten(), ignore_index=vocab.pad_id)
torch.testing.assert_close(torch.tensor(total / count), ce.cpu())
torch.testing.assert_close(total / count, charlm.loss_per_char(gpt, few, vocab, device), rtol=1e-5, atol=1e-6)
print(f"untrained loss per char {total / count:.3f} nats; uniform guess ln|V| = {math.log(len(vocab)):.3f}")

# %% [markdown]
# Now train the Transformer and, on the same split with the same loop (`charlm.train_char_lm`),
# a vanilla RNN and an LSTM of Part I, all small enough to train in a minute or two on a CPU.

# %%
lm_train = dict(epochs=sizes["lm_epochs"], batch_size=sizes["lm_batch"], device=device, seed=0)
gpt_hist = charlm.train_char_lm(gpt, names["train"], names["validation"], vocab, lr=3e-3, grad_clip=1.0, **lm_train)

# %%
torch.manual_seed(0)
rnn = charlm.RecurrentLM(len(vocab), embed_dim=32, hidden_size=128, cell="rnn").to(device)
rnn_hist = charlm.train_char_lm(rnn, names["train"], names["validation"], vocab, lr=3e-3, grad_clip=1.0, **lm_train)
torch.manual_seed(0)
lstm = charlm.RecurrentLM(len(vocab), embed_dim=32, hidden_size=128, cell="lstm").to(device)
lstm_hist = charlm.train_char_lm(lstm, names["train"], names["validation"], vocab, lr=3e-3, grad_clip=1.0, **lm_train)

# %%
models = {"Transformer": (gpt, gpt_hist), "RNN": (rnn, rnn_hist), "LSTM": (lstm, lstm_hist)}
test_loss = {}
print(f"{'model':12s} {'parameters':>10s} {'test loss/char':>15s} {'train time':>11s}")
for label, (model, hist) in models.items():
    test_loss[label] = charlm.loss_per_char(model, names["test"], vocab, device)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{label:12s} {n_params:10,d} {test_loss[label]:15.3f} {hist.seconds:10.1f}s")
plt.figure(figsize=(5.5, 3.4))
for label, (_, hist) in models.items():
    plt.plot(hist.val_epoch, hist.val_loss, "o-", label=label)
plt.axhline(math.log(len(vocab)), color="gray", ls=":", label="uniform guess")
plt.xlabel("epoch")
plt.ylabel("validation loss (nats / char)")
plt.legend()
plt.show()

# %%
dlbook.glue("lm_uniform", math.log(len(vocab)))
dlbook.glue("lm_epochs", sizes["lm_epochs"])
dlbook.glue("n_train_names", len(names["train"]))
dlbook.glue("test_loss_rnn", test_loss["RNN"])
dlbook.glue("test_loss_lstm", test_loss["LSTM"])
dlbook.headline("test_loss_transformer", test_loss["Transformer"], profile=profile, at_most=2.1)
for label, value in test_loss.items():
    assert value < math.log(len(vocab)), f"{label} did not beat the uniform guess"

# %% [markdown]
# After {glue:text}`lm_epochs` epochs, the held-out (test split) loss per character is
# {glue:text}`test_loss_transformer` nats for the Transformer, {glue:text}`test_loss_rnn:.3f` for
# the RNN and {glue:text}`test_loss_lstm:.3f` for the LSTM, against {glue:text}`lm_uniform:.3f` for
# a uniform guess (the Transformer's bar in this chapter is 2.1). The three land close together,
# and the Transformer does not win: names are at most a dozen characters long, so the recurrent
# models' weakness, carrying information over long distances, hardly matters, while the
# Transformer, with the most parameters, is the one most at risk of overfitting the
# {glue:text}`n_train_names` training names (it gets dropout 0.1 for that reason; without it, its
# validation loss turned upwards after about ten epochs in our trials). The LSTM's gates are a strong inductive bias for such short, regular
# strings. What the Transformer brings shows at scale: every position of a sequence trains in
# parallel, and any position can reach any other in one step.
#
# Samples at temperature 0.8 from each model:

# %%
for label, (model, _) in models.items():
    print(f"{label:12s}", ", ".join(charlm.sample(model, vocab, 10, temperature=0.8,
                                                  generator=torch.Generator().manual_seed(0), max_len=max_len)))

# %% [markdown]
# Finally the comparison promised in the positional-encoding section: the cosine similarity
# between the Transformer's **learned** position vectors, next to that of the sinusoidal table of
# the same size. Nothing pushed training towards sinusoids; whatever structure the learned table
# has, the data put there.

# %%
learned = gpt.pos.weight.detach().cpu()  # (max_len, d_model)
fixed = sinusoidal_positional_encoding(max_len, gpt.d_model)
fig, axes = plt.subplots(1, 2, figsize=(8.5, 3.6))
for ax, table, title in ((axes[0], learned, "learned (trained LM)"), (axes[1], fixed, "sinusoidal")):
    unit = F.normalize(table, dim=-1)
    ax.imshow(unit @ unit.T, cmap="RdBu", vmin=-1, vmax=1)
    ax.set(title=f"cosine similarity of positions: {title}", xlabel="position", ylabel="position")
    ax.title.set_fontsize(9)
plt.tight_layout()
plt.show()


def neighbour_similarity(table):
    unit = F.normalize(table, dim=-1)
    cos = unit @ unit.T  # (P, P)
    gap = (torch.arange(len(table))[:, None] - torch.arange(len(table))[None, :]).abs()
    return cos[gap == 1].mean().item(), cos[gap >= 4].mean().item()


(learned_near, learned_far), (fixed_near, fixed_far) = neighbour_similarity(learned), neighbour_similarity(fixed)
print(f"mean cosine similarity, adjacent positions / positions >= 4 apart: learned {learned_near:.2f} / "
      f"{learned_far:.2f}, sinusoidal {fixed_near:.2f} / {fixed_far:.2f}")
dlbook.glue("learned_near", learned_near)
dlbook.glue("learned_far", learned_far)
dlbook.glue("fixed_near", fixed_near)
dlbook.glue("fixed_far", fixed_far)

# %% [markdown]
# Adjacent learned positions have a mean cosine similarity of {glue:text}`learned_near:.2f`,
# positions at least four apart {glue:text}`learned_far:.2f`; for the sinusoids the same numbers
# are {glue:text}`fixed_near:.2f` and {glue:text}`fixed_far:.2f`. The learned table is small (one
# vector per position up to the longest name), and its last rows are trained only by the few
# longest names, so they see little data.
#
# ## Summary
#
# - Sinusoidal positional encodings {eq}`eq-pe` make a shift by $k$ positions a fixed rotation
#   $M_k$ {eq}`eq-pe-shift`, verified for every position and recovered by least squares to
#   {glue:text}`shift_fit_err:.1e`; learned tables are the alternative BERT and GPT use.
# - LayerNorm {eq}`eq-layernorm` standardises each token over its features (matched
#   `nn.LayerNorm` to {glue:text}`ln_max_diff:.1e`). Unlike batch normalisation it ignores the
#   rest of the batch: adding a batch-mate moved a BatchNorm output by {glue:text}`bn_shift:.2f`
#   and the LayerNorm output by nothing.
# - The feed-forward network {eq}`eq-ffn` acts on each position separately; BERT's GELU is the
#   exact erf form, which differs from the tanh approximation by up to {glue:text}`gelu_tanh_gap:.0e`.
# - Residual connections give gradients an identity path; pre-norm keeps that path clean, and the
#   gradient reaching the input of a {glue:text}`deepest`-layer stack was
#   {glue:text}`grad_ratio_deep:.1f` times larger than with post-norm.
# - Our encoder layer matches `nn.TransformerEncoderLayer` in both arrangements, with and without
#   padding, to {glue:text}`layer_max_diff:.1e`. A two-layer encoder learned to sort digits
#   ({glue:text}`toy_task_acc` of test sequences entirely right) and the causal version reached
#   {glue:text}`test_loss_transformer` nats per character on held-out names.
#
# ## Exercises

# %% [markdown]
# :::{exercise}
# :label: ch07-ex-params
# Count the parameters of one `nn.TransformerEncoderLayer(d_model=d, nhead=h, dim_feedforward=4d)`
# as a function of $d$. How many is that for BERT-base ($d=768$)? Does $h$ matter? Check with
# `sum(p.numel() for p in layer.parameters())`.
# :::
#
# :::{solution} ch07-ex-params
# :class: dropdown
# Attention: four $d\times d$ matrices and four biases, $4d^2+4d$. Feed-forward: $d\times 4d$ and
# $4d\times d$ matrices with biases $4d$ and $d$, $8d^2+5d$. Two LayerNorms: $4d$. In all
# $12d^2+13d$, which is $7{,}087{,}872$ for $d=768$. The number of heads does not appear: the heads
# split the same $d\times d$ projections into blocks.
# :::

# %% [markdown]
# :::{exercise}
# :label: ch07-ex-length
# The sorting model uses a sinusoidal table of length 10. What goes wrong if you feed it sequences
# of 12 digits, and would a learned position table be better or worse here?
# :::
#
# :::{solution} ch07-ex-length
# :class: dropdown
# As written, the addition of a $(10, d)$ table to a $(B, 12, d)$ tensor fails; computing the
# sinusoids for 12 positions works (they are defined for every position), but positions 10 and 11
# were never seen in training and the output positions must now index ranks 0 to 11, so expect
# accuracy to collapse. A learned table could not even produce vectors for the new positions.
# Neither kind of encoding by itself gives length generalisation; it has to be trained for.
# :::

# %% [markdown]
# :::{exercise}
# :label: ch07-ex-layernorm
# Write `my_layer_norm(x, gamma, beta, eps=1e-5)` implementing {eq}`eq-layernorm` over the last
# dimension, without `F.layer_norm` or `nn.LayerNorm`. The hidden cases include inputs whose mean is
# far from zero, a feature dimension of 3 (where the biased and unbiased variances differ) and
# BERT's $\epsilon = 10^{-12}$.
# :::

# %%
def my_layer_norm(x, gamma, beta, eps=1e-5):
    raise NotImplementedError  # your code here


dlbook.exercises.check("ch07.layer_norm", my_layer_norm)

# %% [markdown]
# ```{solution-start} ch07-ex-layernorm
# :class: dropdown
# ```

# %% tags=["solution"]
def my_layer_norm(x, gamma, beta, eps=1e-5):
    mu = x.mean(dim=-1, keepdim=True)
    var = x.var(dim=-1, keepdim=True, unbiased=False)  # divide by d, not d - 1
    return gamma * (x - mu) / torch.sqrt(var + eps) + beta


assert dlbook.exercises.check("ch07.layer_norm", my_layer_norm)

# %% [markdown]
# ```{solution-end}
# ```

# %% [markdown]
# :::{exercise}
# :label: ch07-ex-ffn
# Write `my_feed_forward(x, W1, b1, W2, b2)` implementing {eq}`eq-ffn` for `x` of shape
# `(..., d_model)`, with `W1` of shape `(d_ff, d_model)` and `W2` of shape `(d_model, d_ff)` (the
# `nn.Linear` layout).
# :::

# %%
def my_feed_forward(x, W1, b1, W2, b2):
    raise NotImplementedError  # your code here


dlbook.exercises.check("ch07.feed_forward", my_feed_forward)

# %% [markdown]
# ```{solution-start} ch07-ex-ffn
# :class: dropdown
# ```

# %% tags=["solution"]
def my_feed_forward(x, W1, b1, W2, b2):
    return torch.relu(x @ W1.T + b1) @ W2.T + b2  # ReLU between the two maps, not after the second


assert dlbook.exercises.check("ch07.feed_forward", my_feed_forward)

# %% [markdown]
# ```{solution-end}
# ```

# %% [markdown]
# :::{exercise}
# :label: ch07-ex-pe
# Write `my_positional_encoding(n_positions, d_model)` returning the float32 table {eq}`eq-pe` of
# shape `(n_positions, d_model)` for even `d_model`, using only tensor operations (no Python loop
# over positions).
# :::

# %%
def my_positional_encoding(n_positions, d_model):
    raise NotImplementedError  # your code here


dlbook.exercises.check("ch07.positional_encoding", my_positional_encoding)

# %% [markdown]
# ```{solution-start} ch07-ex-pe
# :class: dropdown
# ```

# %% tags=["solution"]
def my_positional_encoding(n_positions, d_model):
    pos = torch.arange(n_positions, dtype=torch.float64)[:, None]  # (P, 1); float64 keeps large angles exact
    angle = pos / 10000 ** (torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)  # (P, d/2)
    return torch.stack([torch.sin(angle), torch.cos(angle)], dim=-1).reshape(n_positions, d_model).float()


assert dlbook.exercises.check("ch07.positional_encoding", my_positional_encoding)

# %% [markdown]
# ```{solution-end}
# ```

# %% [markdown]
# ## Further reading
#
# - Vaswani et al. introduced the block, the sinusoidal encoding and the post-norm arrangement
#   {cite}`vaswani2017attention`.
# - Ba, Kiros and Hinton proposed layer normalisation {cite}`ba2016layer`; He et al. the residual
#   connections it is paired with {cite}`he2016deep`.
# - Xiong et al. analyse post-norm and pre-norm and the warm-up that post-norm needs
#   {cite}`xiong2020layer`.
# - Hendrycks and Gimpel define the GELU {cite}`hendrycks2016gelu`.
