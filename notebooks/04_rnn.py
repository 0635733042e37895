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
# (ch04)=
# # 4. Recurrent networks
#
# Text, speech, prices and sensor readings arrive as sequences, and their length varies. A
# network with one weight per input position cannot take a name of five letters today and one of
# eleven tomorrow. A **recurrent network** reads a sequence one element at a time and carries a
# summary of what it has seen so far, its hidden state, from each step to the next, with the same
# weights at every step. This chapter builds that network from its equation, checks it against
# PyTorch, looks at what goes wrong when gradients travel back through many steps, and trains a
# character-level model that invents new first names.
#
# By the end of this chapter you can
#
# 1. write the vanilla RNN from its equation, unroll it over time, stack layers, and reproduce
#    `nn.RNN` exactly with the same weights;
# 2. derive the gradient that backpropagation through time computes, and check it against autograd;
# 3. measure vanishing and exploding gradients and explain them from the recurrent weight matrix;
# 4. clip gradients and show on a real training run why it is worth doing;
# 5. train a character-level language model, report its held-out loss per character, and sample
#    from it at several temperatures.

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
from collections import Counter

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn

import dlbook
from dlbook import assets, charlm
from dlbook.nn.recurrent import RNN, RNNCell

# A recurrent network multiplies small matrices one time step after another. On a CPU one
# thread does that faster than several threads that must meet after every tiny product.
torch.set_num_threads(1)
device = dlbook.setup(seed=0)

# %% tags=["parameters"]
profile = os.environ.get("DLBOOK_PROFILE", "full")

# %%
sizes = dlbook.by_profile(
    profile,
    smoke=dict(grad_seq=20, n_grad_seqs=2, n_train=300, lm_epochs=1, clip_train=200, clip_epochs=1, n_samples=5, n_novelty=20),
    full=dict(grad_seq=60, n_grad_seqs=8, n_train=4_130, lm_epochs=15, clip_train=4_130, clip_epochs=5, n_samples=10, n_novelty=200),
)
sizes

# %% [markdown]
# ## A network with a memory
#
# Picture reading a name letter by letter and keeping a few notes on a card: "starts with a
# consonant", "just saw a double n". After each letter you update the card from the old card and
# the new letter, using the same rules every time. That card is the hidden state $h_t$, and the
# rules are the recurrent cell. Elman's simple recurrent network {cite}`elman1990finding` writes
# the update as
#
# $$
# h_t = \tanh\left(W_{xh}\, x_t + b_{xh} + W_{hh}\, h_{t-1} + b_{hh}\right),
# $$ (eq-ch04-rnn)
#
# where $x_t \in \mathbb{R}^{d}$ is the input at step $t$, $h_t \in \mathbb{R}^{H}$ the hidden
# state, $W_{xh}$ is $H \times d$, $W_{hh}$ is $H \times H$, and $h_0$ is usually zero. The
# same five parameters are used at every step, so the network takes sequences of any length. We
# write Eq. {eq}`eq-ch04-rnn` for a whole batch (rows are examples) and then loop it over time.

# %%
def rnn_cell(x_t, h_prev, w_xh, b_xh, w_hh, b_hh):
    """Eq. (eq-ch04-rnn) for a batch: x_t (B, d), h_prev (B, H) -> h_t (B, H)."""
    return torch.tanh(x_t @ w_xh.T + b_xh + h_prev @ w_hh.T + b_hh)


def rnn_unroll(x, h0, w_xh, b_xh, w_hh, b_hh):
    """Run the cell over time: x (B, T, d), h0 (B, H) -> all states (B, T, H) and the last (B, H)."""
    h, states = h0, []
    for t in range(x.shape[1]):  # one step per element of the sequence
        h = rnn_cell(x[:, t], h, w_xh, b_xh, w_hh, b_hh)  # (B, H)
        states.append(h)
    return torch.stack(states, dim=1), h


torch.manual_seed(0)
B, T, d, H = 3, 7, 4, 5
x = torch.randn(B, T, d, dtype=torch.float64)  # (batch, seq, input)
h0 = torch.zeros(B, H, dtype=torch.float64)  # (batch, hidden)
reference = nn.RNN(d, H, batch_first=True).double()  # PyTorch's RNN, random weights
w = dict(
    w_xh=reference.weight_ih_l0, b_xh=reference.bias_ih_l0, w_hh=reference.weight_hh_l0, b_hh=reference.bias_hh_l0
)
with torch.no_grad():
    states, h_last = rnn_unroll(x, h0, **w)  # (3, 7, 5), (3, 5)
    ref_states, ref_h_n = reference(x)  # (3, 7, 5), (1, 3, 5)
torch.testing.assert_close(states, ref_states)
torch.testing.assert_close(h_last, ref_h_n[0])
print("our unrolled RNN == nn.RNN:", tuple(states.shape), "max abs difference", (states - ref_states).abs().max().item())

# %% [markdown]
# PyTorch names the two weight matrices `weight_ih_l0` and `weight_hh_l0` ("input to hidden"
# and "hidden to hidden" of layer 0) and keeps both biases, although only their sum matters.
#
# Because the weights are shared across time, the parameter count does not depend on the
# sequence length: a layer has $H(d + H) + 2H$ parameters.

# %%
for d_in, hidden, layers in [(4, 5, 1), (32, 128, 1), (32, 128, 3)]:
    formula = sum(hidden * ((d_in if k == 0 else hidden) + hidden) + 2 * hidden for k in range(layers))
    counted = sum(p.numel() for p in nn.RNN(d_in, hidden, num_layers=layers).parameters())
    assert formula == counted
    print(f"d={d_in:3d} H={hidden:3d} layers={layers}: {counted:,} parameters, for any sequence length")

# %% [markdown]
# ### Stacking layers
#
# A deeper RNN feeds the sequence of hidden states of one layer as the input sequence of the
# next: with $h^{(0)}_t = x_t$,
#
# $$
# h^{(\ell)}_t = \tanh\left(W^{(\ell)}_{xh}\, h^{(\ell-1)}_t + b^{(\ell)}_{xh} + W^{(\ell)}_{hh}\, h^{(\ell)}_{t-1}
# + b^{(\ell)}_{hh}\right), \qquad \ell = 1, \dots, L.
# $$ (eq-ch04-deep)
#
# `nn.RNN` returns the top layer's states at every step, `output` of shape (B, T, H), and every
# layer's last state, `h_n` of shape (L, B, H). Our version reuses `rnn_unroll` layer by layer.

# %%
def rnn_multilayer(x, layers):
    """Eq. (eq-ch04-deep): x (B, T, d); layers = list of weight dicts -> output (B, T, H), h_n (L, B, H)."""
    finals = []
    for w_layer in layers:
        h0 = x.new_zeros(x.shape[0], w_layer["w_hh"].shape[0])  # (B, H)
        x, h_last = rnn_unroll(x, h0, **w_layer)  # this layer's states are the next layer's inputs
        finals.append(h_last)
    return x, torch.stack(finals)


deep_ref = nn.RNN(d, H, num_layers=3, batch_first=True).double()
layers = [
    dict(w_xh=getattr(deep_ref, f"weight_ih_l{k}"), b_xh=getattr(deep_ref, f"bias_ih_l{k}"),
         w_hh=getattr(deep_ref, f"weight_hh_l{k}"), b_hh=getattr(deep_ref, f"bias_hh_l{k}"))
    for k in range(3)
]
with torch.no_grad():
    out, h_n = rnn_multilayer(x, layers)  # (3, 7, 5), (3, 3, 5)
    ref_out, ref_h_n = deep_ref(x)
torch.testing.assert_close(out, ref_out)
torch.testing.assert_close(h_n, ref_h_n)
print("3-layer RNN == nn.RNN(num_layers=3): output", tuple(out.shape), "h_n", tuple(h_n.shape))

# %% [markdown]
# The book keeps one packaged version of this code, `dlbook.nn.recurrent`, with the same
# parameter names as PyTorch so that `RNN.from_torch` copies the weights of an `nn.RNN`.
# Chapter 5 adds the LSTM and GRU cells to the same module. Here is the cell and the loop over
# layers and time; the check below confirms it agrees with our cells above and with `nn.RNN`.

# %%
dlbook.show(RNNCell)

# %%
dlbook.show(RNN.forward)

# %%
packaged = RNN.from_torch(deep_ref)
with torch.no_grad():
    pk_out, pk_h_n = packaged(x)
torch.testing.assert_close(pk_out, out)
torch.testing.assert_close(pk_h_n, ref_h_n)
print("dlbook.nn.recurrent.RNN == our cells == nn.RNN")

# %% [markdown]
# ## Backpropagation through time
#
# To train the network we need the gradient of a loss with respect to the shared weights.
# Unrolled over $T$ steps, the RNN is just a deep feed-forward network whose $T$ layers share
# their weights, and backpropagation through it is called **backpropagation through time**
# (BPTT). The loss of a sequence is usually a sum over steps, $\mathcal{L} = \sum_t
# \mathcal{L}_t(h_t)$, and a weight's gradient is the sum of its contributions at every step.
#
# The interesting part is how a signal travels back from step $T$ to an earlier step $t$. Write
# $a_t = W_{xh} x_t + b_{xh} + W_{hh} h_{t-1} + b_{hh}$, so $h_t = \tanh(a_t)$ and
# $\tanh'(a_t) = 1 - h_t^2$. One step back, the chain rule gives the Jacobian
#
# $$
# \frac{\partial h_k}{\partial h_{k-1}} = \operatorname{diag}\!\left(1 - h_k^2\right) W_{hh},
# $$ (eq-ch04-step-jac)
#
# and all the way from the input at step $t$ to the last state
#
# $$
# \frac{\partial h_T}{\partial x_t} = \left(\prod_{k=T}^{t+1} \operatorname{diag}\!\left(1 - h_k^2\right) W_{hh}\right)
# \operatorname{diag}\!\left(1 - h_t^2\right) W_{xh},
# $$ (eq-ch04-bptt)
#
# with the product taken from $k=T$ on the left down to $k=t+1$ on the right. We compute both
# from the formulas and compare them with what autograd finds.

# %%
torch.manual_seed(1)
cell = dict(w_xh=torch.randn(H, d, dtype=torch.float64) / d**0.5, b_xh=torch.zeros(H, dtype=torch.float64),
            w_hh=torch.randn(H, H, dtype=torch.float64) / H**0.5, b_hh=0.1 * torch.randn(H, dtype=torch.float64))
xs = torch.randn(1, T, d, dtype=torch.float64)  # one sequence (1, T, d)
hs, _ = rnn_unroll(xs, torch.zeros(1, H, dtype=torch.float64), **cell)  # (1, T, H)
hs = hs[0]  # (T, H); hs[k] is h_{k+1} in the 1-based notation of the equations


def step_jacobian(k):
    """Eq. (eq-ch04-step-jac): d h_k / d h_{k-1}, (H, H), with k a 0-based index into hs."""
    return torch.diag(1 - hs[k] ** 2) @ cell["w_hh"]


# Eq. (eq-ch04-step-jac) against autograd for one step
k = 4
auto_step = torch.autograd.functional.jacobian(
    lambda h_prev: rnn_cell(xs[:, k], h_prev[None], **cell)[0], hs[k - 1]
)  # (H, H)
torch.testing.assert_close(step_jacobian(k), auto_step)

# Eq. (eq-ch04-bptt) against autograd for every t
auto_full = torch.autograd.functional.jacobian(
    lambda inp: rnn_unroll(inp, torch.zeros(1, H, dtype=torch.float64), **cell)[1][0], xs
)[:, 0]  # (H, T, d): d h_T / d x_t for every t
for t in range(T):
    J = torch.diag(1 - hs[t] ** 2) @ cell["w_xh"]  # (H, d)
    for k in range(t + 1, T):
        J = step_jacobian(k) @ J  # later steps multiply on the left
    torch.testing.assert_close(J, auto_full[:, t])
print(f"Eq. (step Jacobian) and Eq. (BPTT) match autograd for all {T} input positions")

# %% [markdown]
# ## Vanishing and exploding gradients
#
# Eq. {eq}`eq-ch04-bptt` multiplies $T - t$ matrices. Since $|\tanh'| \le 1$, the spectral norm
# (largest singular value) of each factor is at most $\|W_{hh}\|_2$, so
#
# $$
# \left\|\frac{\partial h_T}{\partial x_t}\right\|_2 \le \|W_{hh}\|_2^{\,T-t}\, \|W_{xh}\|_2 .
# $$ (eq-ch04-bound)
#
# If $\|W_{hh}\|_2 < 1$ the influence of an input on the last state shrinks **exponentially**
# with the distance $T-t$: the gradient vanishes, and the network cannot learn that something
# 30 steps ago mattered {cite}`bengio1994learning`. If $W_{hh}$ is large the bound allows
# exponential growth, and a random large $W_{hh}$ does produce it: the gradient explodes
# {cite}`pascanu2013difficulty`. We measure $\|\partial h_T / \partial x_t\|_2$ for every
# distance in random tanh RNNs whose $W_{hh}$ has Gaussian entries scaled by $g/\sqrt{H}$ (its
# spectral radius is then close to $g$), and check the bound on every measurement.

# %%
def input_gradient_norms(gain, seq_len, n_seqs, hidden=32, n_in=4, seed=0):
    """||d h_T / d x_t||_2 for t = T..1 (index = distance T - t), geometric mean over n_seqs sequences."""
    g = torch.Generator().manual_seed(seed)
    rnn = RNN(n_in, hidden).double()
    with torch.no_grad():
        c = rnn.cells[0]
        c.weight_hh.copy_(gain * torch.randn(hidden, hidden, generator=g, dtype=torch.float64) / hidden**0.5)
        c.weight_ih.copy_(torch.randn(hidden, n_in, generator=g, dtype=torch.float64) / n_in**0.5)
        c.bias_ih.zero_()
        c.bias_hh.zero_()
    x = torch.randn(n_seqs, seq_len, n_in, generator=g, dtype=torch.float64)  # (N, T, d)

    def last_states(inp):  # (N, T, d) -> (N, H); sequences are independent, so summing over N is safe
        return rnn(inp)[0][:, -1].sum(0)

    jac = torch.autograd.functional.jacobian(last_states, x, vectorize=True)  # (H, N, T, d)
    norms = torch.linalg.matrix_norm(jac.permute(1, 2, 0, 3), ord=2)  # (N, T): spectral norm of each (H, d)
    bound = torch.linalg.matrix_norm(c.weight_hh, ord=2) ** torch.arange(seq_len - 1, -1, -1) * torch.linalg.matrix_norm(
        c.weight_ih, ord=2
    )  # (T,): Eq. (eq-ch04-bound), distance T - t for each t
    assert (norms <= bound * (1 + 1e-9)).all(), "the bound of Eq. (eq-ch04-bound) is violated"
    return norms.clamp_min(1e-300).log().mean(0).exp().flip(0).detach()  # (T,), index = distance


gains = [0.5, 1.0, 2.0, 3.0]
grad_norms = {gain: input_gradient_norms(gain, sizes["grad_seq"], sizes["n_grad_seqs"]) for gain in gains}
fig, ax = plt.subplots(figsize=(6.5, 3.8))
for gain, norms in grad_norms.items():
    ax.semilogy(norms.numpy(), label=f"$g$ = {gain}")
ax.set_xlabel("distance $T - t$ (steps back in time)")
ax.set_ylabel(r"$\|\partial h_T / \partial x_t\|_2$")
ax.set_title("How much an input $t$ steps back can move the last state")
ax.legend()
plt.show()

far = sizes["grad_seq"] - 1
dlbook.glue("grad_far_distance", far)
dlbook.glue("grad_near_small", float(grad_norms[0.5][0]))
dlbook.glue("grad_far_small", float(grad_norms[0.5][far]))
dlbook.glue("grad_far_large", float(grad_norms[3.0][far]))
print({gain: f"{float(n[far]):.2e}" for gain, n in grad_norms.items()}, f"at distance {far}")

# %% [markdown]
# Every measured norm satisfied Eq. {eq}`eq-ch04-bound` (the function asserts it). With $g =
# 0.5$ the gradient from the last step, {glue:text}`grad_near_small:.2f`, has shrunk to
# {glue:text}`grad_far_small:.1e` at distance {glue:text}`grad_far_distance`: a straight line on
# the log scale, exponential decay. With $g = 3$ it grows to {glue:text}`grad_far_large:.1e`.
# The tanh saturates for large states, which caps the states but not the gradients: in this
# chaotic regime a tiny change early on is amplified at every step. Neither extreme is usable for
# long-range learning; $g$ near 1 decays more slowly but still decays. Chapter 5 changes the
# architecture so that a path with a gradient close to one exists by design.
#
# ## Gradient clipping
#
# Exploding gradients have a simple, effective remedy {cite}`pascanu2013difficulty`: before each
# update, if the norm of the whole gradient $g$ (all parameters together) exceeds a threshold
# $c$, scale it down to norm $c$:
#
# $$
# g \leftarrow g \cdot \min\left(1, \frac{c}{\|g\|_2}\right).
# $$ (eq-ch04-clip)
#
# The direction is kept; only the step length is capped. We implement it and compare it with
# `torch.nn.utils.clip_grad_norm_` (which adds $10^{-6}$ to the norm in the denominator).

# %%
def clip_by_global_norm(grads, max_norm):
    """Eq. (eq-ch04-clip) on a list of gradient tensors; returns the clipped list and the norm before clipping."""
    total = torch.sqrt(sum((g**2).sum() for g in grads))  # one norm over all parameters
    scale = min(1.0, max_norm / (total.item() + 1e-6))
    return [g * scale for g in grads], total


torch.manual_seed(0)
params = [nn.Parameter(torch.randn(5, 3)), nn.Parameter(torch.randn(3))]
for size in [10.0, 0.1]:  # a large gradient gets clipped, a small one is left alone
    for p in params:
        p.grad = size * torch.randn_like(p)
    ours, norm_before = clip_by_global_norm([p.grad.clone() for p in params], max_norm=1.0)
    torch_norm = torch.nn.utils.clip_grad_norm_(params, max_norm=1.0)  # clips p.grad in place
    torch.testing.assert_close(norm_before, torch_norm)
    for o, p in zip(ours, params, strict=True):
        torch.testing.assert_close(o, p.grad)
    print(f"norm before {norm_before.item():7.3f} -> after {torch.sqrt(sum((o**2).sum() for o in ours)).item():.3f}")

# %% [markdown]
# We will see clipping at work on a real training run at the end of the chapter, once there is
# something to train.
#
# ## A character-level language model
#
# A **language model** assigns a probability to a sequence by predicting one element at a time:
# $p(c_1 \dots c_n) = \prod_t p(c_t \mid c_{<t})$. For names, the elements are characters. The
# data are the first names of the US census (package `names`), lower-cased and split once, with a
# fixed seed, into training, validation and test names that every chapter of the book shares.

# %%
names = assets.census_names()
train_names = names["train"][: sizes["n_train"]]
val_names, test_names = names["validation"], names["test"]
for split, items in names.items():
    dlbook.glue(f"n_{split}_names", len(items))
print({split: len(items) for split, items in names.items()}, "| training on", len(train_names))
print("examples:", names["train"][:8])
print("longest:", max(len(n) for n in names["train"]), "characters; mean", round(float(np.mean([len(n) for n in names["train"]])), 2))

# %% [markdown]
# Each name becomes a sequence of ids from a 29-symbol vocabulary: the letters `a`-`z` and three
# special tokens. `<bos>` (beginning of sequence) is the first input, so that the model also
# predicts the first letter; `<eos>` (end of sequence) is the last target, so that the model
# learns when a name stops; `<pad>` fills short names up to the length of the longest name in a
# batch. The input is the sequence without its last id, the target the sequence without its
# first id: at every position, the target is the next character.

# %%
vocab = charlm.CharVocab()
print(vocab, "| <pad>, <bos>, <eos> =", vocab.pad_id, vocab.bos_id, vocab.eos_id)
print("encode('anna') =", vocab.encode("anna"), "-> decode:", vocab.decode(vocab.encode("anna")))
inputs, targets, mask = charlm.make_batches(["anna", "bo", "maryellen"], vocab, batch_size=3)[0]
print("inputs  (B, T)\n", inputs)
print("targets (B, T)\n", targets)
print("mask: which targets count\n", mask.int())

# %% [markdown]
# The model is trained by minimising the negative log-likelihood of the next character, and we
# report it on held-out names as the mean over all predicted characters, `<eos>` included,
# padding excluded:
#
# $$
# \mathcal{L} = -\frac{1}{N} \sum_{w} \sum_{t=1}^{|w|+1} \log p_\theta\left(c^{w}_t \mid c^{w}_{<t}\right),
# \qquad N = \sum_w \left(|w| + 1\right),
# $$ (eq-ch04-nll)
#
# in nats per character (natural logarithm). A model that guesses uniformly over the 29 symbols
# scores $\ln 29 \approx 3.37$. `charlm.loss_per_char` computes Eq. {eq}`eq-ch04-nll` in padded
# batches; we check it against a plain loop over names, one at a time, with no padding at all.

# %%
dlbook.show(charlm.loss_per_char)

# %%
class Uniform(nn.Module):
    """Equal logits for every symbol: the loss must be ln(29)."""

    def forward(self, ids):  # (B, T) -> (B, T, 29)
        return torch.zeros(*ids.shape, len(vocab))


torch.manual_seed(0)
untrained = charlm.RecurrentLM(len(vocab), embed_dim=32, hidden_size=128, cell="rnn").to(device)
few = val_names[:40]
total, count = 0.0, 0
with torch.no_grad():
    for name in few:  # Eq. (eq-ch04-nll), literally
        ids = torch.tensor(vocab.encode(name), device=device)  # (|w| + 2,)
        log_p = torch.log_softmax(untrained(ids[None, :-1])[0], dim=-1)  # (|w| + 1, 29)
        total -= log_p[torch.arange(len(ids) - 1), ids[1:]].sum().item()
        count += len(ids) - 1
torch.testing.assert_close(charlm.loss_per_char(untrained, few, vocab, device, batch_size=16), total / count)
torch.testing.assert_close(charlm.loss_per_char(Uniform(), few, vocab, "cpu"), math.log(len(vocab)))
print(f"padded batches == one name at a time: {total / count:.4f} nats/char; uniform = ln 29 = {math.log(29):.4f}")

# %% [markdown]
# ### Baselines without memory
#
# Before training anything, two baselines that a model with memory must beat: the **unigram**
# model predicts every character from its overall frequency, the **bigram** model from the
# previous character only. Both are counts over the training names (with add-one smoothing).

# %%
def ngram_loss(train, test, context):
    """Held-out nats/char of a count model that sees the previous `context` ids (0 = unigram, 1 = bigram)."""
    counts = Counter()
    for name in train:
        ids = vocab.encode(name)
        for t in range(1, len(ids)):
            counts[(tuple(ids[max(0, t - context):t]), ids[t])] += 1
    totals = Counter()
    for (ctx, _), c in counts.items():
        totals[ctx] += c
    n_out = len(vocab) - 2  # a target is a letter or <eos>, never <pad> or <bos>
    nll, n = 0.0, 0
    for name in test:
        ids = vocab.encode(name)
        for t in range(1, len(ids)):
            ctx = tuple(ids[max(0, t - context):t]) if context else ()
            nll -= math.log((counts[(ctx, ids[t])] + 1) / (totals[ctx] + n_out))
            n += 1
    return nll / n


unigram_test = ngram_loss(train_names, test_names, 0)
bigram_test = ngram_loss(train_names, test_names, 1)
dlbook.glue("unigram_test_loss", unigram_test)
dlbook.glue("bigram_test_loss", bigram_test)
print(f"uniform {math.log(29):.3f} | unigram {unigram_test:.3f} | bigram {bigram_test:.3f} nats/char on test names")

# %% [markdown]
# ### The model
#
# The network embeds each id into a 32-dimensional vector, runs a one-layer RNN with 128 hidden
# units over the sequence, and maps every hidden state to 29 logits, one per possible next
# symbol. Because the RNN only looks backwards, the logits at position $t$ depend on $c_{\le t}$
# only, which is exactly what Eq. {eq}`eq-ch04-nll` needs. We use PyTorch's `nn.RNN` inside,
# which is much faster than our Python loop over time; swapping in our own RNN with the same
# weights gives the same logits.

# %%
dlbook.show(charlm.RecurrentLM)

# %%
ids = charlm.make_batches(few[:6], vocab, 6)[0][0].to(device)  # (6, T)
ours_lm = charlm.RecurrentLM(len(vocab), 32, 128, cell="rnn").to(device)
ours_lm.load_state_dict(untrained.state_dict())
ours_lm.rnn = RNN.from_torch(untrained.rnn)  # the same weights in our from-scratch RNN
with torch.no_grad():
    torch.testing.assert_close(ours_lm(ids), untrained(ids), atol=1e-5, rtol=1e-4)
print("logits with our RNN inside == logits with nn.RNN inside:", tuple(untrained(ids).shape))

# %% [markdown]
# ### Training
#
# `charlm.train_char_lm` is an ordinary training loop: shuffle the names each epoch with a
# seeded generator, cut them into padded batches, minimise Eq. {eq}`eq-ch04-nll` on each batch
# with Adam, clip the gradient (Eq. {eq}`eq-ch04-clip`, $c = 1$), and measure the validation
# loss after every epoch. With `restore_best=True` it hands back the weights of the epoch with
# the lowest validation loss (early stopping), so the test names are touched only once, at the end.

# %%
dlbook.show(charlm.train_char_lm)

# %%
torch.manual_seed(0)
rnn_lm = charlm.RecurrentLM(len(vocab), embed_dim=32, hidden_size=128, cell="rnn")
history = charlm.train_char_lm(
    rnn_lm, train_names, val_names, vocab, epochs=sizes["lm_epochs"], batch_size=64, lr=3e-3,
    device=device, seed=0, grad_clip=1.0, restore_best=True,
)
print(f"{history.seconds:.0f} s, best epoch {history.best_epoch}, validation loss {min(history.val_loss):.3f}")
print("validation loss after each epoch (0 = untrained):", [round(v, 3) for v in history.val_loss])
dlbook.glue("rnn_val_epoch1", history.val_loss[1])

# %%
steps = np.arange(1, len(history.train_loss) + 1)
smooth = np.convolve(history.train_loss, np.ones(20) / 20, mode="valid") if len(steps) >= 20 else history.train_loss
fig, ax = plt.subplots(figsize=(6.5, 3.8))
ax.plot(steps, history.train_loss, alpha=0.25, color="C0", label="training batch")
ax.plot(steps[len(steps) - len(smooth):], smooth, color="C0", label="training (mean of 20 batches)")
ax.plot(np.array(history.val_epoch) * history.steps_per_epoch, history.val_loss, "o-", color="C1", label="validation")
ax.axhline(bigram_test, color="grey", ls="--", label="bigram counts (test)")
ax.set_ylim(1.7, 3.5)
ax.set_xlabel("training step")
ax.set_ylabel("nats per character")
ax.legend()
plt.show()

# %% [markdown]
# The loss falls fast from $\ln 29$: after one epoch the validation loss is already
# {glue:text}`rnn_val_epoch1:.3f`, against {glue:text}`bigram_test_loss:.3f` for the bigram counts. Later,
# the training loss keeps falling while the validation loss flattens: the model starts to learn
# the training names by heart, which is why the weights of the best validation epoch are kept.
# Now the held-out number, on test names the model has never seen:

# %%
rnn_test = charlm.loss_per_char(rnn_lm, test_names, vocab, device)
dlbook.headline("rnn_test_loss", rnn_test, profile=profile, at_most=bigram_test)
dlbook.glue("rnn_test_bits", rnn_test / math.log(2))
dlbook.glue("rnn_test_ppl", math.exp(rnn_test))
dlbook.glue("rnn_best_epoch", history.best_epoch)
print(f"RNN: {rnn_test:.3f} nats/char = {rnn_test / math.log(2):.3f} bits/char; perplexity {math.exp(rnn_test):.2f}")

# %% [markdown]
# On the test names the RNN scores {glue:text}`rnn_test_loss` nats per character
# ({glue:text}`rnn_test_bits:.2f` bits), against {glue:text}`bigram_test_loss:.3f` for the bigram
# counts and {glue:text}`unigram_test_loss:.3f` for the unigram counts (the chapter asserts that
# the RNN beats the bigram in the `full` profile). Its perplexity, $e^{\mathcal{L}} =$
# {glue:text}`rnn_test_ppl:.2f`, says that on average the model is as unsure as a uniform choice
# among that many characters, instead of 29. Chapter 5 trains an LSTM on the same split.
#
# ## Sampling names
#
# A language model generates by sampling: start from `<bos>`, draw the next character from
# $p(c_t \mid c_{<t})$, append it, and repeat until `<eos>`. A **temperature** $\tau$ reshapes
# the distribution before each draw, from the logits $z$:
#
# $$
# p_i(\tau) = \frac{\exp(z_i / \tau)}{\sum_j \exp(z_j / \tau)} .
# $$ (eq-ch04-temperature)
#
# $\tau = 1$ is the model's own distribution; $\tau < 1$ sharpens it towards the most likely
# character (as $\tau \to 0$, always the arg-max); $\tau > 1$ flattens it towards uniform. We
# check these three facts on the model's actual first-letter logits, then look at what the
# formula does to the distribution.

# %%
with torch.no_grad():
    z = rnn_lm(torch.tensor([[vocab.bos_id]], device=device))[0, -1].double().cpu()  # (29,) first-letter logits
z[[vocab.pad_id, vocab.bos_id]] = -math.inf  # never sampled


def with_temperature(z, tau):
    """Eq. (eq-ch04-temperature)."""
    e = torch.exp((z - z.max()) / tau)  # subtracting the max changes nothing but avoids overflow
    return e / e.sum()


torch.testing.assert_close(with_temperature(z, 1.0), torch.softmax(z, dim=0))
torch.testing.assert_close(with_temperature(z, 1e-3), nn.functional.one_hot(z.argmax(), len(vocab)).double())
flat = with_temperature(z, 1e4)
torch.testing.assert_close(flat[3:], torch.full((len(vocab) - 3,), 1 / (len(vocab) - 2), dtype=torch.float64),
                           atol=1e-3, rtol=0)


def entropy(p):
    return -(p[p > 0] * p[p > 0].log()).sum().item()


taus = [0.5, 1.0, 1.5]
for tau in taus:
    p = with_temperature(z, tau)
    top = p.topk(3)
    print(f"tau={tau}: entropy {entropy(p):.2f} nats; most likely first letters",
          [(vocab.itos[int(i)], round(float(v), 3)) for v, i in zip(top.values, top.indices, strict=True)])

# %% [markdown]
# `charlm.sample` applies Eq. {eq}`eq-ch04-temperature` at every step. For each temperature we
# draw names with the same seeded generator and count how many are new (not among the training
# names), to see whether the model invents or recites.

# %%
dlbook.show(charlm.sample)

# %%
train_set = set(names["train"])
for tau in taus:
    shown = charlm.sample(rnn_lm, vocab, sizes["n_samples"], tau, torch.Generator().manual_seed(0), max_len=20)
    many = charlm.sample(rnn_lm, vocab, sizes["n_novelty"], tau, torch.Generator().manual_seed(1), max_len=20)
    new = sum(s not in train_set for s in many) / len(many)
    dlbook.glue(f"novel_tau{str(tau).replace('.', '_')}", new)
    print(f"tau={tau}: {new:.0%} of {len(many)} samples are not training names ->", ", ".join(shown))

# %% [markdown]
# At $\tau = 0.5$ the names are common and safe, and many are real names from the training list
# ({glue:text}`novel_tau0_5:.0%` new); at $\tau = 1$ the model mixes real names with plausible
# inventions ({glue:text}`novel_tau1_0:.0%` new); at $\tau = 1.5$ the letters come from a
# flatter distribution and spelling starts to fall apart ({glue:text}`novel_tau1_5:.0%` new).
#
# ## Clipping on a real run
#
# To see what clipping buys, we make training deliberately hard: initialise the recurrent matrix
# in the exploding regime of the measurement above ($g = 3$) and train with plain SGD and a
# large learning rate, once without clipping and once with Eq. {eq}`eq-ch04-clip` at $c = 1$.
# Everything else, including the initial weights and the order of the batches, is identical.

# %%
def exploding_rnn_lm():
    torch.manual_seed(0)
    model = charlm.RecurrentLM(len(vocab), embed_dim=32, hidden_size=128, cell="rnn")
    with torch.no_grad():
        model.rnn.weight_hh_l0.normal_(0.0, 3.0 / 128**0.5)  # gain g = 3: the exploding regime
    return model


clip_runs = {}
for label, clip in [("no clipping", None), ("clipped at 1", 1.0)]:
    clip_runs[label] = charlm.train_char_lm(
        exploding_rnn_lm(), names["train"][: sizes["clip_train"]], val_names, vocab, epochs=sizes["clip_epochs"],
        batch_size=32, lr=2.0, device=device, seed=0, grad_clip=clip, optimizer="sgd", show_progress=False,
    )
    print(f"{label:13s}: validation loss {clip_runs[label].val_loss[-1]:.3f}, "
          f"largest gradient norm {max(clip_runs[label].grad_norm):.1f}")

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), layout="constrained")
for label, run in clip_runs.items():
    axes[0].plot(run.train_loss, label=label, alpha=0.8)
    axes[1].semilogy(run.grad_norm, label=label, alpha=0.8)
axes[0].axhline(math.log(len(vocab)), color="grey", ls="--", label="uniform guess, ln 29")
axes[0].set(xlabel="training step", ylabel="training loss (nats/char)", title="SGD, lr 2, exploding init")
axes[1].axhline(1.0, color="black", lw=0.8, label="clipping threshold $c$")
axes[1].set(xlabel="training step", ylabel="gradient norm before clipping")
axes[0].legend()
axes[1].legend()
plt.show()

clip_none, clip_one = clip_runs["no clipping"].val_loss[-1], clip_runs["clipped at 1"].val_loss[-1]
dlbook.glue("clip_val_none", clip_none)
dlbook.glue("clip_val_clipped", clip_one)
if profile == "full":
    assert clip_none > math.log(len(vocab)) > clip_one, "expected: diverged without clipping, learned with it"

# %% [markdown]
# Without clipping, a few steps with large gradients throw the weights far away, the loss jumps
# above the uniform guess and the run ends at {glue:text}`clip_val_none:.2f` nats per character
# of validation loss, worse than guessing uniformly ($\ln 29 = 3.37$). With clipping the same
# steps are shortened to length 1, and the run reaches {glue:text}`clip_val_clipped:.3f`. Clipping does not remove the cause
# (the Jacobian products of Eq. {eq}`eq-ch04-bptt`) and does nothing for *vanishing* gradients;
# it only stops one bad batch from undoing the training so far. That is why nearly every
# recurrent model is trained with it, including the one above.
#
# This chapter ran on:

# %%
print(dlbook.env.last_provenance().line())

# %% [markdown]
# ## Summary
#
# - The vanilla RNN, Eq. {eq}`eq-ch04-rnn`, applies one cell with shared weights at every
#   step; stacked as in Eq. {eq}`eq-ch04-deep`, our loops reproduce `nn.RNN` exactly, and the
#   parameter count does not depend on the sequence length.
# - Backpropagation through time multiplies one Jacobian per step, Eqs. {eq}`eq-ch04-step-jac`
#   and {eq}`eq-ch04-bptt` (checked against autograd); the bound {eq}`eq-ch04-bound` explains
#   why the gradient from distant inputs vanishes for small recurrent weights, and we measured
#   explosion for large ones.
# - Clipping the global gradient norm, Eq. {eq}`eq-ch04-clip`, caps the step length and rescued
#   a training run that diverged without it ({glue:text}`clip_val_clipped:.3f` against
#   {glue:text}`clip_val_none:.3f` nats per character).
# - A character-level RNN language model on census names reached
#   {glue:text}`rnn_test_loss` nats per character on held-out names, below the bigram baseline,
#   and samples names that range from safe to inventive as the temperature,
#   Eq. {eq}`eq-ch04-temperature`, rises.
#
# ## Exercises
#
# :::{exercise}
# :label: ch04-ex-rnn-forward
# Write `my_rnn_forward(x, h0, w_xh, w_hh, b)` for a one-layer tanh RNN with a single bias `b`
# (the sum of the two biases of Eq. {eq}`eq-ch04-rnn`): `x` has shape (batch, seq, input), `h0`
# (batch, hidden), and the function returns every hidden state, shape (batch, seq, hidden). The
# check runs it on hidden cases (one step, long sequences, a zero initial state, float64).
# :::

# %%
def my_rnn_forward(x, h0, w_xh, w_hh, b):
    raise NotImplementedError  # your code here


dlbook.exercises.check("ch04.rnn_forward", my_rnn_forward)

# %% [markdown]
# ```{solution-start} ch04-ex-rnn-forward
# :class: dropdown
# ```

# %% tags=["solution"]
def rnn_forward_solution(x, h0, w_xh, w_hh, b):
    h, states = h0, []
    for t in range(x.shape[1]):
        h = torch.tanh(x[:, t] @ w_xh.T + h @ w_hh.T + b)  # (batch, hidden), Eq. (eq-ch04-rnn)
        states.append(h)
    return torch.stack(states, dim=1)  # (batch, seq, hidden)


assert dlbook.exercises.check("ch04.rnn_forward", rnn_forward_solution)

# %% [markdown]
# ```{solution-end}
# ```
#
# :::{exercise}
# :label: ch04-ex-clip
# Write `my_clip(grads, max_norm)`: given a list of gradient tensors, return the list rescaled by
# Eq. {eq}`eq-ch04-clip`, with one norm over *all* tensors together (use $c / (\|g\| + 10^{-6})$
# like PyTorch). Two plausible mistakes fail the check: clipping each tensor by its own norm, and
# rescaling gradients that were already small.
# :::

# %%
def my_clip(grads, max_norm):
    raise NotImplementedError  # your code here


dlbook.exercises.check("ch04.clip_global_norm", my_clip)

# %% [markdown]
# ```{solution-start} ch04-ex-clip
# :class: dropdown
# ```

# %% tags=["solution"]
def clip_solution(grads, max_norm):
    total = torch.sqrt(sum((g**2).sum() for g in grads))  # the global norm
    scale = min(1.0, max_norm / (total.item() + 1e-6))  # never scale up
    return [g * scale for g in grads]


assert dlbook.exercises.check("ch04.clip_global_norm", clip_solution)

# %% [markdown]
# ```{solution-end}
# ```
#
# :::{exercise}
# :label: ch04-ex-masked-nll
# Write `my_masked_nll(logits, targets, mask)`: Eq. {eq}`eq-ch04-nll` for one padded batch, with
# `logits` of shape (batch, seq, vocab), `targets` (batch, seq) and a boolean `mask` that is
# True on real targets. Every real character must weigh the same, so a long name counts more
# than a short one. Which two shortcuts would give a different number?
# :::

# %%
def my_masked_nll(logits, targets, mask):
    raise NotImplementedError  # your code here


dlbook.exercises.check("ch04.masked_nll", my_masked_nll)

# %% [markdown]
# ```{solution-start} ch04-ex-masked-nll
# :class: dropdown
# ```

# %% tags=["solution"]
def masked_nll_solution(logits, targets, mask):
    log_p = torch.log_softmax(logits, dim=-1)  # (batch, seq, vocab)
    nll = -log_p.gather(-1, targets[..., None]).squeeze(-1)  # (batch, seq)
    return nll[mask].mean()  # one mean over all real targets


assert dlbook.exercises.check("ch04.masked_nll", masked_nll_solution)
# The two shortcuts: averaging over padded positions too, and averaging each row first and then
# the row means (which weighs a two-letter name like a ten-letter one).

# %% [markdown]
# ```{solution-end}
# ```
#
# :::{exercise}
# :label: ch04-ex-units
# A model scores 2.0 nats per character on held-out names. Convert this to bits per character
# and to perplexity. How does the perplexity compare with a uniform guess over the 27 symbols a
# target can be (26 letters and `<eos>`)? If the names average 6 letters, what probability does
# the model give, on average, to a whole held-out name?
# :::
#
# :::{solution} ch04-ex-units
# :class: dropdown
# Bits: $2.0 / \ln 2 = 2.885$ bits per character. Perplexity: $e^{2.0} = 7.39$, so the model
# is as unsure as a uniform choice among about 7.4 symbols instead of 27 ($\ln 27 = 3.30$ nats).
# A 6-letter name has 7 predicted symbols (with `<eos>`), so its probability is about
# $e^{-7 \cdot 2.0} = e^{-14} \approx 8 \times 10^{-7}$: tiny, but about $27^7 / e^{14} \approx
# 10^{4}$ times more than the uniform model gives it.
# :::
#
# :::{exercise}
# :label: ch04-ex-vanish
# Using Eq. {eq}`eq-ch04-bound`, explain why a tanh RNN with $\|W_{hh}\|_2 < 1$ *must* have
# vanishing gradients, while $\|W_{hh}\|_2 > 1$ does not guarantee exploding ones. Then, with
# $\|W_{hh}\|_2 = 0.9$: by what factor has the bound shrunk for an input 50 steps back, compared
# with the last input?
# :::
#
# :::{solution} ch04-ex-vanish
# :class: dropdown
# Every factor $\operatorname{diag}(1 - h_k^2) W_{hh}$ has spectral norm at most $\|W_{hh}\|_2$
# because $0 < 1 - h_k^2 \le 1$, and norms of products are at most products of norms; so the bound
# $\|W_{hh}\|_2^{T-t}$ decays exponentially whenever $\|W_{hh}\|_2 < 1$, whatever the inputs. The
# converse fails because the bound is only an upper limit: the derivative $1 - h_k^2$ can be
# close to 0 when the units saturate, and the product of matrices can shrink even if each has a
# large norm (their large directions need not line up). Growth is possible, not certain
# {cite}`pascanu2013difficulty`. With $\|W_{hh}\|_2 = 0.9$ the bound at distance 50 is
# $0.9^{50} \approx 0.005$ times the one at distance 0, a factor of about 200 smaller.
# :::
#
# ## Further reading
#
# - The simple recurrent network and what its hidden state learns about structure in time:
#   {cite}`elman1990finding`.
# - Why gradient descent struggles to learn long-term dependencies in recurrent networks:
#   {cite}`bengio1994learning`; the analysis of vanishing and exploding gradients behind
#   Eq. {eq}`eq-ch04-bound` and the proposal of gradient-norm clipping: {cite}`pascanu2013difficulty`.
# - Character-level recurrent language models and what they can generate:
#   {cite}`karpathy2015unreasonable`.
# - The gated cells that fix the vanishing gradient, next chapter: {cite}`hochreiter1997long`.
