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
# PyTorch, looks at what goes wrong when gradients travel back through many steps, trains a
# character-level model that invents new first names, trains it again on one long stream in
# chunks, and classifies sequences of different lengths in one batch.
#
# By the end of this chapter you can
#
# 1. write the vanilla RNN from its equation, unroll it over time, stack layers, and reproduce
#    `nn.RNN` with the same weights to float64 rounding;
# 2. derive the gradient that backpropagation through time computes, check it against autograd,
#    and explain vanishing and exploding gradients from the spectral norm of the recurrent
#    weights;
# 3. clip gradients, train a character-level language model, report its held-out loss per
#    character against baselines, and sample from it at several temperatures;
# 4. train on a long stream with truncated backpropagation through time, and say what detaching
#    the hidden state does and what goes wrong without it;
# 5. classify a padded batch of sequences of different lengths with packed sequences, or by
#    reading each sequence's state at its own last step.

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
from collections import Counter

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_sequence

import dlbook
import dlbook.exercises
from dlbook import assets, charlm, stats
from dlbook.nn.recurrent import GRU, RNN, RNNCell

# One CPU thread, set before setup() prints it: the same work on every machine, whatever
# its number of cores.
torch.set_num_threads(1)
device = dlbook.setup(seed=0)

# %% tags=["parameters", "hide-input"]
profile = os.environ.get("DLBOOK_PROFILE", "full")

# %% tags=["hide-input"]
sizes = dlbook.by_profile(
    profile,
    smoke=dict(
        grad_seq=20,
        n_grad_seqs=2,
        n_train=300,
        lm_epochs=1,
        clip_train=200,
        clip_epochs=1,
        n_samples=5,
        n_novelty=20,
        tbptt_epochs=1,
        n_clf_train=256,
        n_clf_test=256,
        clf_epochs=1,
    ),
    full=dict(
        grad_seq=60,  # sequence length of the gradient measurement (4.3)
        n_grad_seqs=8,  # random sequences that measurement averages over
        n_train=4_130,  # training names of the language model (4,130: all)
        lm_epochs=15,  # epochs of the language model
        clip_train=4_130,  # training names of the clipping runs (section 4.7)
        clip_epochs=5,  # epochs of each clipping run
        n_samples=10,  # sampled names shown per temperature
        n_novelty=1_000,  # names sampled per temperature to score novelty
        tbptt_epochs=10,  # epochs of the truncated-BPTT model (section 4.8)
        n_clf_train=4_000,  # training sequences of the classifier (section 4.9)
        n_clf_test=2_000,  # its test sequences
        clf_epochs=10,  # its epochs
    ),
)
sizes

# %% [markdown]
# ## 4.1 A network with a memory
#
# Picture reading a name letter by letter and keeping a few notes on a card: "starts with a
# consonant", "just saw a double n". After each letter you update the card from the old card and
# the new letter, using the same rules every time. That card is the hidden state $h_t$, and the
# rules are the recurrent cell. Elman's simple recurrent network {cite}`elman1990finding`
# computes the new state from the input and the previous state with one affine map followed by
# a squashing nonlinearity. In the form PyTorch's `nn.RNN` uses, with tanh and two bias vectors,
#
# $$
# h_t = \tanh\left(W_{xh}\, x_t + b_{xh} + W_{hh}\, h_{t-1} + b_{hh}\right),
# $$ (eq-ch04-rnn)
#
# where $x_t \in \mathbb{R}^{d}$ is the input at step $t$, $h_t \in \mathbb{R}^{H}$ the hidden
# state, $W_{xh}$ is $H \times d$, $W_{hh}$ is $H \times H$, and $h_0$ is zero unless we pass
# one. The same four parameter tensors, $W_{xh}$, $W_{hh}$, $b_{xh}$ and $b_{hh}$, are used at
# every step, so the network takes sequences of any length. We write Eq. {eq}`eq-ch04-rnn` for
# a whole batch (rows are examples) and then loop it over time.


# %%
def rnn_cell(x_t, h_prev, w_xh, b_xh, w_hh, b_hh):
    """Eq. (eq-ch04-rnn) for a batch: x_t (B, d), h_prev (B, H) -> h_t (B, H)."""
    return torch.tanh(x_t @ w_xh.T + b_xh + h_prev @ w_hh.T + b_hh)


def rnn_unroll(x, h0, w_xh, b_xh, w_hh, b_hh):
    """Run the cell over time.

    x (B, T, d), h0 (B, H) -> all states (B, T, H) and the last (B, H).
    """
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
    w_xh=reference.weight_ih_l0,
    b_xh=reference.bias_ih_l0,
    w_hh=reference.weight_hh_l0,
    b_hh=reference.bias_hh_l0,
)
with torch.no_grad():
    states, h_last = rnn_unroll(x, h0, **w)  # (3, 7, 5), (3, 5)
    ref_states, ref_h_n = reference(x)  # (3, 7, 5), (1, 3, 5)
torch.testing.assert_close(states, ref_states)
torch.testing.assert_close(h_last, ref_h_n[0])
max_diff = (states - ref_states).abs().max().item()
assert max_diff < 1e-14  # float64 rounding, nothing more
dlbook.glue("rnn_max_diff", max_diff)
print(
    "our unrolled RNN == nn.RNN:", tuple(states.shape), "max abs difference", max_diff
)

# %% [markdown]
# PyTorch names the two weight matrices `weight_ih_l0` and `weight_hh_l0` ("input to hidden"
# and "hidden to hidden" of layer 0) and keeps both biases, although only their sum enters
# Eq. {eq}`eq-ch04-rnn`: moving all of it into one of them changes no state.

# %%
merged = nn.RNN(d, H, batch_first=True).double()
merged.load_state_dict(reference.state_dict())
with torch.no_grad():
    merged.bias_hh_l0 += merged.bias_ih_l0  # (H,): b_hh + b_xh in one vector
    merged.bias_ih_l0.zero_()
    torch.testing.assert_close(merged(x)[0], ref_states)
print("one bias b_xh + b_hh gives the same states as two")

# %% [markdown]
# Because the weights are shared across time, the parameter count does not depend on the
# sequence length: a layer has $H(d + H) + 2H$ parameters.

# %%
for d_in, hidden, layers in [(4, 5, 1), (32, 128, 1), (32, 128, 3)]:
    formula = sum(
        hidden * ((d_in if k == 0 else hidden) + hidden) + 2 * hidden
        for k in range(layers)
    )
    counted = sum(
        p.numel() for p in nn.RNN(d_in, hidden, num_layers=layers).parameters()
    )
    assert formula == counted
    print(
        f"d={d_in:3d} H={hidden:3d} layers={layers}: {counted:,} parameters, "
        "for any sequence length"
    )

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
    """Eq. (eq-ch04-deep): x (B, T, d); layers = list of weight dicts.

    Returns the output (B, T, H) and h_n (L, B, H).
    """
    finals = []
    for w_layer in layers:
        h0 = x.new_zeros(x.shape[0], w_layer["w_hh"].shape[0])  # (B, H)
        x, h_last = rnn_unroll(
            x, h0, **w_layer
        )  # this layer's states are the next layer's inputs
        finals.append(h_last)
    return x, torch.stack(finals)


deep_ref = nn.RNN(d, H, num_layers=3, batch_first=True).double()
layers = [
    dict(
        w_xh=getattr(deep_ref, f"weight_ih_l{k}"),
        b_xh=getattr(deep_ref, f"bias_ih_l{k}"),
        w_hh=getattr(deep_ref, f"weight_hh_l{k}"),
        b_hh=getattr(deep_ref, f"bias_hh_l{k}"),
    )
    for k in range(3)
]
with torch.no_grad():
    out, h_n = rnn_multilayer(x, layers)  # (3, 7, 5), (3, 3, 5)
    ref_out, ref_h_n = deep_ref(x)
torch.testing.assert_close(out, ref_out)
torch.testing.assert_close(h_n, ref_h_n)
print(
    "3-layer RNN == nn.RNN(num_layers=3): output",
    tuple(out.shape),
    "h_n",
    tuple(h_n.shape),
)

# %% [markdown]
# The book keeps one packaged version of this code, `dlbook.nn.recurrent`. Its cell uses the
# parameter names of PyTorch's `nn.RNNCell` (`weight_ih`, `weight_hh`, `bias_ih`, `bias_hh`),
# and its `RNN` keeps one such cell per layer in `cells`, so its parameters are called
# `cells.0.weight_ih` where `nn.RNN` says `weight_ih_l0`: `RNN.from_torch` maps each
# `weight_ih_l{k}` of an `nn.RNN` onto `cells[k]`. Chapter 5 adds the LSTM and GRU cells to the
# same module. Here is the cell and the loop over layers and time; the check below confirms it
# agrees with our cells above and with `nn.RNN`.

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
# ## 4.2 Backpropagation through time
#
# To train the network we need the gradient of a loss with respect to the shared weights.
# Unrolled over $T$ steps, the RNN is just a deep feed-forward network whose $T$ layers share
# their weights, and backpropagation through it is called **backpropagation through time**
# (BPTT) {cite}`werbos1990backpropagation`. The loss of a sequence is usually a sum over
# steps, $\mathcal{L} = \sum_t \mathcal{L}_t(h_t)$, and a weight's gradient is the sum of its
# contributions at every step (Eq. {eq}`eq-ch04-weight-grad` below, checked against autograd).
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
cell = dict(
    w_xh=torch.randn(H, d, dtype=torch.float64) / d**0.5,
    b_xh=torch.zeros(H, dtype=torch.float64),
    w_hh=torch.randn(H, H, dtype=torch.float64) / H**0.5,
    b_hh=0.1 * torch.randn(H, dtype=torch.float64),
)
xs = torch.randn(1, T, d, dtype=torch.float64)  # one sequence (1, T, d)
hs, _ = rnn_unroll(xs, torch.zeros(1, H, dtype=torch.float64), **cell)  # (1, T, H)
hs = hs[0]  # (T, H); hs[k] is h_{k+1} in the 1-based notation of the equations


def step_jacobian(k):
    """Eq. (eq-ch04-step-jac): d h_k / d h_{k-1}, (H, H).

    k is a 0-based index into hs.
    """
    return torch.diag(1 - hs[k] ** 2) @ cell["w_hh"]


# Eq. (eq-ch04-step-jac) against autograd for one step
k = 4
auto_step = torch.autograd.functional.jacobian(
    lambda h_prev: rnn_cell(xs[:, k], h_prev[None], **cell)[0], hs[k - 1]
)  # (H, H)
torch.testing.assert_close(step_jacobian(k), auto_step)

# Eq. (eq-ch04-bptt) against autograd for every t
auto_full = torch.autograd.functional.jacobian(
    lambda inp: rnn_unroll(inp, torch.zeros(1, H, dtype=torch.float64), **cell)[1][0],
    xs,
)[:, 0]  # (H, T, d): d h_T / d x_t for every t
for t in range(T):
    J = torch.diag(1 - hs[t] ** 2) @ cell["w_xh"]  # (H, d)
    for k in range(t + 1, T):
        J = step_jacobian(k) @ J  # later steps multiply on the left
    torch.testing.assert_close(J, auto_full[:, t])
print(f"Eq. (step Jacobian) and Eq. (BPTT) match autograd for all {T} input positions")

# %% [markdown]
# Training needs the gradient with respect to the shared weights. Write
# $\delta_k = \partial \mathcal{L} / \partial h_k$ for the gradient of the whole loss with
# respect to the state at step $k$: it collects the loss of step $k$ and everything that flows
# back from later steps through Eq. {eq}`eq-ch04-step-jac`. Because $W_{hh}$ is used at every
# step, its gradient is a sum with one term per step:
#
# $$
# \delta_k = \frac{\partial \mathcal{L}_k}{\partial h_k}
# + \left(\frac{\partial h_{k+1}}{\partial h_k}\right)^{\!\top} \delta_{k+1},
# \quad \delta_{T+1} = 0, \qquad
# \frac{\partial \mathcal{L}}{\partial W_{hh}}
# = \sum_{k=1}^{T} \operatorname{diag}\!\left(1 - h_k^2\right) \delta_k\, h_{k-1}^{\top} .
# $$ (eq-ch04-weight-grad)
#
# With $x_k^\top$ in place of $h_{k-1}^\top$ the same sum gives $\partial \mathcal{L} /
# \partial W_{xh}$, and without the last factor the gradient of either bias. We run this
# recursion backwards by hand on the batch of the first check, with $\mathcal{L}_t = v_t^\top
# h_t$ for random vectors $v_t$, and compare all four gradients with the ones autograd leaves in
# the `.grad` of `nn.RNN`'s parameters.

# %%
torch.manual_seed(2)
v = torch.randn(B, T, H, dtype=torch.float64)  # (B, T, H): the loss is sum_t <v_t, h_t>
reference.zero_grad()
(reference(x)[0] * v).sum().backward()  # autograd fills reference.*.grad
with torch.no_grad():
    hs_b, _ = rnn_unroll(x, h0, **w)  # (B, T, H)
    prev = torch.cat([h0[:, None], hs_b[:, :-1]], dim=1)  # (B, T, H): h_{k-1}
    grads = {name: torch.zeros_like(p) for name, p in w.items()}
    da_next = torch.zeros(B, H, dtype=torch.float64)  # (B, H): dL/da_{k+1}, 0 after T
    for k in reversed(range(T)):
        delta = v[:, k] + da_next @ w["w_hh"]  # (B, H): delta_k, Eq. (weight gradient)
        da = delta * (1 - hs_b[:, k] ** 2)  # (B, H): diag(1 - h_k^2) delta_k
        grads["w_hh"] += da.T @ prev[:, k]  # (H, H): this step's contribution
        grads["w_xh"] += da.T @ x[:, k]  # (H, d)
        grads["b_xh"] += da.sum(0)  # (H,)
        grads["b_hh"] += da.sum(0)
        da_next = da
for name, param in w.items():
    torch.testing.assert_close(grads[name], param.grad)
print("Eq. (weight gradient) == autograd for W_hh, W_xh and both biases of nn.RNN")

# %% [markdown]
# ## 4.3 Vanishing and exploding gradients
#
# Eq. {eq}`eq-ch04-bptt` multiplies $T - t$ factors $\operatorname{diag}(1 - h_k^2)\, W_{hh}$.
# How large can such a product get? The right tool is the **spectral norm** $\|A\|_2$, the
# largest singular value of $A$: the most $A$ can stretch any vector. It is submultiplicative,
# $\|AB\|_2 \le \|A\|_2 \|B\|_2$, and since $0 < 1 - h_k^2 \le 1$ the diagonal factor can only
# shrink, so $\|\operatorname{diag}(1 - h_k^2) W_{hh}\|_2 \le \|W_{hh}\|_2$. Together,
#
# $$
# \left\|\frac{\partial h_T}{\partial h_t}\right\|_2 \le \prod_{k=t+1}^{T}
# \left\|\operatorname{diag}\!\left(1 - h_k^2\right) W_{hh}\right\|_2 \le \|W_{hh}\|_2^{\,T-t},
# \qquad
# \left\|\frac{\partial h_T}{\partial x_t}\right\|_2 \le \|W_{hh}\|_2^{\,T-t}\, \|W_{xh}\|_2 .
# $$ (eq-ch04-bound)
#
# If $\|W_{hh}\|_2 < 1$ the influence of an input on the last state shrinks **exponentially**
# with the distance $T-t$: the gradient vanishes, gradient descent receives almost no signal
# that something 30 steps ago mattered, and learning such long dependencies becomes hard
# {cite}`bengio1994learning`. If $W_{hh}$ is large the bound allows
# exponential growth: the gradient can explode {cite}`pascanu2013difficulty`.
#
# The bound needs the spectral norm, not the **spectral radius** $\rho(W)$, the largest
# $|\lambda|$ over the eigenvalues of $W$. The radius describes the powers of *one* matrix:
# $\|W^k\|_2^{1/k} \to \rho(W)$ as $k$ grows (Gelfand's formula {cite}`horn2012matrix`). It is
# not submultiplicative, so it says nothing certain about a product of *different* matrices,
# and the Jacobian factors change from step to step with $h_k$. Two $2 \times 2$ matrices show
# the gap, and a random $W$ shows Gelfand's formula at work:


# %%
def spectral_norm(w):
    """||W||_2: the largest singular value, the most W can stretch a vector."""
    return torch.linalg.matrix_norm(w.detach(), ord=2).item()


def spectral_radius(w):
    """rho(W): the largest absolute value of an eigenvalue of W."""
    return torch.linalg.eigvals(w.detach()).abs().max().item()


a_mat = torch.tensor([[0.0, 1.0], [0.0, 0.0]])  # rho = 0, ||.||_2 = 1
b_mat = a_mat.T  # rho = 0, ||.||_2 = 1
ab = a_mat @ b_mat  # [[1, 0], [0, 0]]: rho = 1
rho_a, rho_b, rho_ab = (spectral_radius(m) for m in (a_mat, b_mat, ab))
norm_a, norm_b, norm_ab = (spectral_norm(m) for m in (a_mat, b_mat, ab))
print(
    f"rho(A) = {rho_a}, rho(B) = {rho_b}, rho(AB) = {rho_ab};",
    f"||A|| ||B|| = {norm_a * norm_b} >= ||AB|| = {norm_ab}",
)
assert rho_ab > rho_a * rho_b  # 1 > 0 * 0: the radius is not submultiplicative
assert norm_ab <= norm_a * norm_b  # the norm is

g_demo = torch.Generator().manual_seed(0)
w_demo = torch.randn(32, 32, generator=g_demo, dtype=torch.float64)  # (32, 32)
rho_demo = spectral_radius(w_demo)
for k in [1, 10, 100]:
    gelfand = spectral_norm(torch.linalg.matrix_power(w_demo, k)) ** (1 / k)
    print(f"k={k:3d}: ||W^k||_2^(1/k) = {gelfand:.3f}   (rho(W) = {rho_demo:.3f})")
assert abs(gelfand / rho_demo - 1) < 0.05

# %% [markdown]
# We measure $\|\partial h_T / \partial x_t\|_2$ for every distance in a tanh RNN with
# $H = 32$. Its $W_{hh}$ is one random matrix, drawn once with Gaussian entries of standard
# deviation $1/\sqrt{H}$, multiplied by a gain $g$; only $g$ changes from one run to the next.
# We check the bound of Eq. {eq}`eq-ch04-bound` on every measurement, and compute both the
# spectral radius and the spectral norm of each $g\,W_{hh}$.


# %%
def random_rnn(gain, hidden=32, n_in=4, seed=0):
    """A float64 tanh RNN: W_hh = gain * N(0, 1 / H) entries, W_xh N(0, 1 / d), no bias.

    The same seed gives the same random matrices for every gain: only the scale changes.
    """
    g = torch.Generator().manual_seed(seed)
    rnn = RNN(n_in, hidden).double()
    cell = rnn.cells[0]
    with torch.no_grad():
        w_hh = torch.randn(hidden, hidden, generator=g, dtype=torch.float64)  # (H, H)
        cell.weight_hh.copy_(gain * w_hh / hidden**0.5)
        w_ih = torch.randn(hidden, n_in, generator=g, dtype=torch.float64)  # (H, d)
        cell.weight_ih.copy_(w_ih / n_in**0.5)
        cell.bias_ih.zero_()
        cell.bias_hh.zero_()
    return rnn


def input_gradient_norms(rnn, seq_len, n_seqs, seed=1):
    """||d h_T / d x_t||_2 by distance T - t (index 0 = last input), geometric mean.

    The mean runs over n_seqs random input sequences; every measurement is checked
    against Eq. (eq-ch04-bound).
    """
    g = torch.Generator().manual_seed(seed)
    shape = (n_seqs, seq_len, rnn.input_size)
    x = torch.randn(*shape, generator=g, dtype=torch.float64)  # (N, T, d)

    def last_states(inp):  # (N, T, d) -> (H,); sequences are independent: sum them
        return rnn(inp)[0][:, -1].sum(0)

    jac = torch.autograd.functional.jacobian(
        last_states, x, vectorize=True
    )  # (H, N, T, d)
    blocks = jac.permute(1, 2, 0, 3)  # (N, T, H, d)
    norms = torch.linalg.matrix_norm(blocks, ord=2)  # (N, T)
    cell = rnn.cells[0]
    distance = torch.arange(seq_len - 1, -1, -1)  # (T,): T - t for t = 1 .. T
    bound = spectral_norm(cell.weight_hh) ** distance * spectral_norm(cell.weight_ih)
    assert (norms <= bound * (1 + 1e-9)).all(), (
        "the bound of Eq. (eq-ch04-bound) is violated"
    )
    return (
        norms.clamp_min(1e-300).log().mean(0).exp().flip(0).detach()
    )  # (T,), index = distance


gains = [0.5, 1.0, 2.0, 3.0]
rnns = {gain: random_rnn(gain) for gain in gains}
grad_norms = {
    gain: input_gradient_norms(rnns[gain], sizes["grad_seq"], sizes["n_grad_seqs"])
    for gain in gains
}  # (T,) each

# %%
fig, ax = plt.subplots(figsize=(6.5, 3.8))
for k, (gain, norms) in enumerate(grad_norms.items()):
    ax.semilogy(norms.numpy(), color=f"C{k}", label=f"$g$ = {gain}")
lows = min(float(n.min()) for n in grad_norms.values())
highs = max(float(n.max()) for n in grad_norms.values())
leaves_at = {}  # distance at which a bound leaves the top of the plot
for k, gain in enumerate(gains):  # Eq. (eq-ch04-bound), dashed
    cell = rnns[gain].cells[0]
    dist = np.arange(sizes["grad_seq"])
    bound = spectral_norm(cell.weight_hh) ** dist * spectral_norm(cell.weight_ih)
    ax.semilogy(dist, bound, color=f"C{k}", ls="--", lw=0.8)
    above = bound > highs * 10
    leaves_at[gain] = int(np.argmax(above)) if above.any() else len(bound)
ax.set_ylim(lows / 10, highs * 10)
dlbook.glue("bound_leaves_by", max(leaves_at[g] for g in gains if g >= 1))
assert all(leaves_at[g] < sizes["grad_seq"] for g in gains if g >= 1)  # the caption
ax.set_xlabel("distance $T - t$ (steps back in time)")
ax.set_ylabel(r"$\|\partial h_T / \partial x_t\|_2$")
ax.set_title("How much an input $t$ steps back can move the last state")
ax.legend()
plt.show()

# %% [markdown]
# **Figure 4.1.** The norm of $\partial h_T / \partial x_t$ against the distance $T - t$ (log
# scale): measured (solid; geometric mean over random input sequences) and the bound of
# Eq. {eq}`eq-ch04-bound` (dashed, same colour) for four gains $g$ of the recurrent weights.
# The bounds for $g \ge 1$ grow so fast that they leave the top of the plot within
# {glue:text}`bound_leaves_by` steps.
#
# A straight line on this log scale is exponential change, and its slope gives the factor by
# which the gradient changes per step back. We read that factor off the first and the last
# distance and set it beside $\rho(W_{hh})$ and $\|W_{hh}\|_2$:

# %%
far = sizes["grad_seq"] - 1
print(f"{'g':>4s} {'rho(W_hh)':>10s} {'||W_hh||_2':>11s} {'measured per step':>18s}")
rate_over_rho = {}
for gain in gains:
    w_hh = rnns[gain].cells[0].weight_hh
    rho, sigma = spectral_radius(w_hh), spectral_norm(w_hh)
    rate = float(grad_norms[gain][far] / grad_norms[gain][0]) ** (1 / far)
    print(f"{gain:4.1f} {rho:10.3f} {sigma:11.3f} {rate:18.3f}")
    assert rate < rho < sigma, "expected: measured rate < radius < norm"
    rate_over_rho[gain] = rate / rho
    key = str(gain).replace(".", "_")
    dlbook.glue(f"vg_sigma_{key}", sigma)
    dlbook.glue(f"vg_rate_{key}", rate)
w_one = rnns[1.0].cells[0].weight_hh  # g = 1: the matrix every gain scales
dlbook.glue("vg_rho_per_g", spectral_radius(w_one))
dlbook.glue("vg_sigma_per_g", spectral_norm(w_one))
dlbook.glue("vg_norm_over_rho", spectral_norm(w_one) / spectral_radius(w_one))
dlbook.glue("vg_rate_over_rho_min", min(rate_over_rho.values()))
dlbook.glue("vg_rate_over_rho_max", max(rate_over_rho.values()))
dlbook.glue("grad_far_distance", far)
dlbook.glue("grad_near_small", float(grad_norms[0.5][0]))
dlbook.glue("grad_far_small", float(grad_norms[0.5][far]))
dlbook.glue("grad_near_large", float(grad_norms[3.0][0]))
dlbook.glue("grad_far_large", float(grad_norms[3.0][far]))
# g = 0.5: the bound guarantees decay; g = 1: it allows growth, yet the gradient shrinks
sigma_half, sigma_one = (spectral_norm(rnns[g].cells[0].weight_hh) for g in (0.5, 1.0))
assert sigma_half < 1 < sigma_one
assert float(grad_norms[1.0][far]) < float(grad_norms[1.0][0])
# g = 3: the gradient explodes, larger from far back than from the last step
assert float(grad_norms[3.0][far]) > float(grad_norms[3.0][0])

# %% [markdown]
# Every measured norm satisfied Eq. {eq}`eq-ch04-bound` (the function asserts it). The four
# recurrent matrices are one $32 \times 32$ matrix times $g$, so the spectral radius is
# {glue:text}`vg_rho_per_g:.2f`$\,g$ and the spectral norm {glue:text}`vg_sigma_per_g:.2f`$\,g$:
# the radius in place of the norm would understate the bound by a factor of
# {glue:text}`vg_norm_over_rho:.2f` at every step.
#
# - With $g = 0.5$, $\|W_{hh}\|_2 =$ {glue:text}`vg_sigma_0_5:.2f` $< 1$, so the bound
#   guarantees decay. The gradient from the last step, {glue:text}`grad_near_small:.2f`, has
#   shrunk to {glue:text}`grad_far_small:.1e` at distance {glue:text}`grad_far_distance`, by a
#   factor of {glue:text}`vg_rate_0_5:.2f` per step: much faster than the guarantee.
# - With $g = 1$, $\|W_{hh}\|_2 =$ {glue:text}`vg_sigma_1_0:.2f` $> 1$ and the bound allows
#   growth, yet the gradient still vanishes, by {glue:text}`vg_rate_1_0:.2f` per step: the
#   bound is a guarantee, not a prediction.
# - With $g = 3$ the gradient explodes: it grows by {glue:text}`vg_rate_3_0:.2f` per step,
#   from {glue:text}`grad_near_large:.1e` for the last input to
#   {glue:text}`grad_far_large:.1e` at the largest distance (asserted: larger far back than at
#   the last step). The tanh keeps every state inside $(-1, 1)$, but a bounded state can still
#   be extremely sensitive to an early input.
#
# In all four cases the measured factor lies below the spectral radius (asserted), at
# {glue:text}`vg_rate_over_rho_min:.2f` to {glue:text}`vg_rate_over_rho_max:.2f` times it. When
# the diagonal factors are close to the identity, the product is close to the power
# $W_{hh}^{T-t}$, whose size per step tends to $\rho(W_{hh})$, and here the factors
# $1 - h_k^2 < 1$ pull the product below that power. That is a measurement, not a rule: a
# diagonal factor below one can even *raise* the spectral radius, as the small example below
# shows. Neither number predicts the rate; only the norm gives a guarantee. Chapter 5 changes
# the architecture so that a path whose gradient stays close to one exists by design.

# %%
w_2 = torch.tensor([[1.0, 1.0], [-1.0, -1.0]])  # W @ W = 0: both eigenvalues are 0
d_2 = torch.diag(torch.tensor([1.0, 0.5]))  # a diagonal factor with entries <= 1
rho_w, rho_dw = spectral_radius(w_2), spectral_radius(d_2 @ w_2)
print(f"rho(W) = {rho_w:.2f}, rho(diag(1, 0.5) W) = {rho_dw:.2f}")
assert rho_dw > rho_w  # shrinking one coordinate raised the radius
assert spectral_norm(d_2 @ w_2) <= spectral_norm(w_2)  # the norm cannot grow

# %% [markdown]
# ## 4.4 Gradient clipping
#
# Exploding gradients have a simple, effective remedy {cite}`pascanu2013difficulty`: before each
# update, if the norm of the whole gradient $g$ (all parameters together) exceeds a threshold
# $c$, scale it down to norm $c$:
#
# $$
# g \leftarrow g \cdot \min\left(1, \frac{c}{\|g\|_2}\right).
# $$ (eq-ch04-clip)
#
# The direction is kept and the norm is capped at $c$. With plain SGD the step is then at most
# $\text{lr} \cdot c$ long; with Adam, which divides by running averages of the gradient and
# of its square, clipping instead limits how far one large gradient moves those averages. We
# implement Eq. {eq}`eq-ch04-clip` and compare it with `torch.nn.utils.clip_grad_norm_` (which
# adds $10^{-6}$ to the norm in the denominator).


# %%
def clip_by_global_norm(grads, max_norm):
    """Eq. (eq-ch04-clip) on a list of gradient tensors.

    Returns the clipped list and the norm before clipping.
    """
    total = torch.sqrt(sum((g**2).sum() for g in grads))  # one norm over all parameters
    scale = min(1.0, max_norm / (total.item() + 1e-6))
    return [g * scale for g in grads], total


torch.manual_seed(0)
params = [nn.Parameter(torch.randn(5, 3)), nn.Parameter(torch.randn(3))]
for size in [10.0, 0.1]:  # a large gradient gets clipped, a small one is left alone
    for p in params:
        p.grad = size * torch.randn_like(p)
    ours, norm_before = clip_by_global_norm(
        [p.grad.clone() for p in params], max_norm=1.0
    )
    torch_norm = torch.nn.utils.clip_grad_norm_(
        params, max_norm=1.0
    )  # clips p.grad in place
    torch.testing.assert_close(norm_before, torch_norm)
    for o, p in zip(ours, params, strict=True):
        torch.testing.assert_close(o, p.grad)
    print(
        f"norm before {norm_before.item():7.3f} -> "
        f"after {torch.sqrt(sum((o**2).sum() for o in ours)).item():.3f}"
    )

# %% [markdown]
# We will see clipping at work on a real training run later in this chapter, once there is
# something to train.
#
# ## 4.5 A character-level language model
#
# A **language model** assigns a probability to a sequence by predicting one element at a time:
# $p(c_1 \dots c_n) = \prod_t p(c_t \mid c_{<t})$. For names, the elements are characters. The
# data are the first names of the US census (package `names`), lower-cased and split once, with a
# fixed seed, into training, validation and test names; chapters 5 and 7 use the same split.

# %%
names = assets.census_names()
train_names = names["train"][: sizes["n_train"]]
val_names, test_names = names["validation"], names["test"]
for split, items in names.items():
    dlbook.glue(f"n_{split}_names", len(items))
print(
    {split: len(items) for split, items in names.items()},
    "| training on",
    len(train_names),
)
print("examples:", names["train"][:8])
print(
    "longest:",
    max(len(n) for n in names["train"]),
    "characters; mean",
    round(float(np.mean([len(n) for n in names["train"]])), 2),
)

# %% [markdown]
# Each name becomes a sequence of ids from a vocabulary of {glue:text}`vocab_size` symbols: the
# letters `a`-`z` and three special tokens. `<bos>` (beginning of sequence) is the first input,
# so that the model also predicts the first letter; `<eos>` (end of sequence) is the last
# target, so that the model learns when a name stops; `<pad>` fills short names up to the
# length of the longest name in a batch. The input is the sequence without its last id, the
# target the sequence without its first id: at every position, the target is the next
# character. A target is therefore a letter or `<eos>`, never `<pad>` or `<bos>`: there are
# {glue:text}`n_targets` possible targets.

# %%
vocab = charlm.CharVocab()
print(vocab, "| <pad>, <bos>, <eos> =", vocab.pad_id, vocab.bos_id, vocab.eos_id)
print(
    "encode('anna') =",
    vocab.encode("anna"),
    "-> decode:",
    vocab.decode(vocab.encode("anna")),
)
inputs, targets, mask = charlm.make_batches(
    ["anna", "bo", "maryellen"], vocab, batch_size=3
)[0]
print("inputs  (B, T)\n", inputs)
print("targets (B, T)\n", targets)
print("mask: which targets count\n", mask.int())

# %%
n_targets = len(vocab) - 2  # every id but <pad> and <bos>
seen = {i for name in names["train"] for i in vocab.encode(name)[1:]}  # all targets
assert vocab.pad_id not in seen and vocab.bos_id not in seen and len(seen) == n_targets
dlbook.glue("vocab_size", len(vocab))
dlbook.glue("n_targets", n_targets)
dlbook.glue("ln_targets", math.log(n_targets))
print(f"{len(vocab)} symbols, {n_targets} possible targets, all seen in training")

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
# in nats per character (natural logarithm). The baseline that knows nothing is a uniform guess
# over the {glue:text}`n_targets` possible targets, which scores $\ln$ {glue:text}`n_targets` $=$
# {glue:text}`ln_targets:.3f` nats per character. `charlm.loss_per_char` computes
# Eq. {eq}`eq-ch04-nll` in padded batches; we check it against a plain loop over names, one at a
# time, with no padding at all, and on the uniform guess.

# %%
dlbook.show(charlm.loss_per_char)


# %%
class Uniform(nn.Module):
    """Equal logits for the possible targets, -inf for <pad> and <bos>: loss ln 27."""

    def forward(self, ids):  # (B, T) -> (B, T, V)
        logits = torch.zeros(*ids.shape, len(vocab))
        logits[..., [vocab.pad_id, vocab.bos_id]] = -math.inf  # never a target
        return logits


torch.manual_seed(0)
untrained = charlm.RecurrentLM(
    len(vocab), embed_dim=32, hidden_size=128, cell="rnn"
).to(device)
few = val_names[:40]
total, count = 0.0, 0
with torch.no_grad():
    for name in few:  # Eq. (eq-ch04-nll), literally
        ids = torch.tensor(vocab.encode(name), device=device)  # (|w| + 2,)
        log_p = torch.log_softmax(untrained(ids[None, :-1])[0], dim=-1)  # (|w| + 1, V)
        total -= log_p[torch.arange(len(ids) - 1), ids[1:]].sum().item()
        count += len(ids) - 1
batched = charlm.loss_per_char(untrained, few, vocab, device, batch_size=16)
assert math.isclose(batched, total / count, rel_tol=1e-5)  # float32 sums, either order
uniform_loss = charlm.loss_per_char(Uniform(), few, vocab, "cpu")
assert math.isclose(uniform_loss, math.log(n_targets), rel_tol=1e-5)
print(
    f"padded batches == one name at a time: {total / count:.4f} nats/char; "
    f"uniform guess = ln {n_targets} = {uniform_loss:.4f}"
)

# %% [markdown]
# ### Baselines without memory
#
# Before training anything, two baselines that a model with memory must beat: the **unigram**
# model predicts every character from its overall frequency, the **bigram** model from the
# previous character only. Both are counts over the training names, with add-one smoothing over
# the possible targets. We keep the loss of every name separately, so that models can later be
# compared name by name.


# %%
def ngram_model(train, context):
    """Counts of (previous `context` ids, next id) in the names, and context totals."""
    counts, totals = Counter(), Counter()
    for name in train:
        ids = vocab.encode(name)
        for t in range(1, len(ids)):
            ctx = tuple(ids[max(0, t - context) : t]) if context else ()
            counts[(ctx, ids[t])] += 1
            totals[ctx] += 1
    return counts, totals, context


def ngram_nll(model, names_):
    """Summed nats of each name and its number of targets, add-one smoothing: (N,)."""
    counts, totals, context = model
    sums, lengths = [], []
    for name in names_:
        ids = vocab.encode(name)
        nll = 0.0
        for t in range(1, len(ids)):
            ctx = tuple(ids[max(0, t - context) : t]) if context else ()
            nll -= math.log((counts[(ctx, ids[t])] + 1) / (totals[ctx] + n_targets))
        sums.append(nll)
        lengths.append(len(ids) - 1)
    return np.array(sums), np.array(lengths)


def per_char(sums_and_lengths):
    sums, lengths = sums_and_lengths
    return float(sums.sum() / lengths.sum())


unigram, bigram = ngram_model(train_names, 0), ngram_model(train_names, 1)
unigram_test = per_char(ngram_nll(unigram, test_names))
bigram_test = per_char(ngram_nll(bigram, test_names))
bigram_val = per_char(ngram_nll(bigram, val_names))
dlbook.glue("unigram_test_loss", unigram_test)
dlbook.glue("bigram_test_loss", bigram_test)
print(
    f"uniform {math.log(n_targets):.3f} | unigram {unigram_test:.3f} | "
    f"bigram {bigram_test:.3f} nats/char on test names"
)

# %% [markdown]
# ### The model
#
# The network embeds each id into a 32-dimensional vector, runs a one-layer RNN with 128 hidden
# units over the sequence, and maps every hidden state to {glue:text}`vocab_size` logits, one
# per symbol. Because the RNN only looks backwards, the logits at position $t$ depend on
# $c_{\le t}$ only, which is exactly what Eq. {eq}`eq-ch04-nll` needs. We use PyTorch's
# `nn.RNN` inside, which runs the loop over time in compiled code instead of Python; swapping in
# our own RNN with the same weights gives the same logits.

# %%
dlbook.show(charlm.RecurrentLM)

# %%
ids = charlm.make_batches(few[:6], vocab, 6)[0][0].to(device)  # (6, T)
ours_lm = charlm.RecurrentLM(len(vocab), 32, 128, cell="rnn").to(device)
ours_lm.load_state_dict(untrained.state_dict())
ours_lm.rnn = RNN.from_torch(untrained.rnn)  # the same weights in our from-scratch RNN
with torch.no_grad():
    torch.testing.assert_close(ours_lm(ids), untrained(ids), atol=1e-5, rtol=1e-4)
print(
    "logits with our RNN inside == logits with nn.RNN inside:",
    tuple(untrained(ids).shape),
)

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
    rnn_lm,
    train_names,
    val_names,
    vocab,
    epochs=sizes["lm_epochs"],
    batch_size=64,
    lr=3e-3,
    device=device,
    seed=0,
    grad_clip=1.0,
    restore_best=True,
)
print(
    f"{history.seconds:.0f} s, best epoch {history.best_epoch}, "
    f"validation loss {min(history.val_loss):.3f}"
)
print(
    "validation loss after each epoch (0 = untrained):",
    [round(v, 3) for v in history.val_loss],
)
dlbook.glue("rnn_val_epoch0", history.val_loss[0])
dlbook.glue("rnn_val_epoch1", history.val_loss[1])
dlbook.glue("rnn_val_best", min(history.val_loss))
dlbook.glue("rnn_best_epoch", history.best_epoch)
dlbook.glue("rnn_epochs", sizes["lm_epochs"])

# %%
steps = np.arange(1, len(history.step_loss) + 1)
smooth = (
    np.convolve(history.step_loss, np.ones(20) / 20, mode="valid")
    if len(steps) >= 20
    else history.step_loss
)
fig, ax = plt.subplots(figsize=(6.5, 3.8))
ax.plot(steps, history.step_loss, alpha=0.25, color="C0", label="training batch")
ax.plot(
    steps[len(steps) - len(smooth) :],
    smooth,
    color="C0",
    label="training (mean of 20 batches)",
)
ax.plot(
    np.array(history.val_epoch) * history.steps_per_epoch,
    history.val_loss,
    "o-",
    color="C1",
    label="validation",
)
ax.axhline(bigram_val, color="grey", ls="--", label="bigram counts (validation)")
ax.set_ylim(1.7, 3.5)
ax.set_xlabel("training step")
ax.set_ylabel("nats per character")
ax.legend()
plt.show()

# %% [markdown]
# **Figure 4.2.** Training loss per batch (faint; solid: mean of 20 batches) and validation loss
# per epoch (dots) of the character RNN, with the bigram counts' validation loss (dashed) for
# reference.
#
# The validation loss falls from {glue:text}`rnn_val_epoch0:.3f` before training (the uniform
# guess scores {glue:text}`ln_targets:.3f`) to {glue:text}`rnn_val_epoch1:.3f` after one epoch;
# the remaining epochs bring it to {glue:text}`rnn_val_best:.3f`, its lowest, after epoch
# {glue:text}`rnn_best_epoch` of {glue:text}`rnn_epochs`, and those are the weights we keep.
# Now the held-out number, on test names the model has never seen, name by name beside the
# bigram counts:

# %%
dlbook.show(charlm.name_nll)  # the summed nats of each name, and its number of targets


# %%
def model_nll(model, names_):
    """Summed nats of each name and its number of targets under a model: (N,), (N,)."""
    sums, counts = charlm.name_nll(model, names_, vocab, device)
    return sums.numpy(), counts.numpy()


# %%
rnn_sums, n_chars = model_nll(rnn_lm, test_names)  # (N,), (N,)
bigram_sums, bigram_lengths = ngram_nll(bigram, test_names)
assert (n_chars == bigram_lengths).all()
rnn_test = float(rnn_sums.sum() / n_chars.sum())
same = charlm.loss_per_char(rnn_lm, test_names, vocab, device)  # the padded-batch path
assert math.isclose(rnn_test, same, rel_tol=1e-5)
# per name: RNN's nats - bigram's nats; summed, over the characters summed; 95 %
vs_bigram = stats.bootstrap_ratio(rnn_sums - bigram_sums, n_chars)
assert math.isclose(vs_bigram.diff, rnn_test - bigram_test, abs_tol=1e-5)  # float32
dlbook.headline("rnn_test_loss", rnn_test, profile=profile, at_most=bigram_test)
dlbook.glue("rnn_test_bits", rnn_test / math.log(2))
dlbook.glue("rnn_test_ppl", math.exp(rnn_test))
dlbook.glue("rnn_minus_bigram", vs_bigram.diff)
dlbook.glue("rnn_minus_bigram_lo", vs_bigram.low)
dlbook.glue("rnn_minus_bigram_hi", vs_bigram.high)
if profile == "full":
    assert vs_bigram.high < 0, "the RNN should beat the bigram counts beyond the noise"
print(
    f"RNN: {rnn_test:.3f} nats/char = {rnn_test / math.log(2):.3f} bits/char; "
    f"perplexity {math.exp(rnn_test):.2f}"
)
print(
    f"RNN - bigram: {vs_bigram.diff:+.3f} nats/char, "
    f"95 % paired interval [{vs_bigram.low:+.3f}, {vs_bigram.high:+.3f}]"
)

# %% [markdown]
# On the test names the RNN scores {glue:text}`rnn_test_loss` nats per character
# ({glue:text}`rnn_test_bits:.2f` bits), against {glue:text}`bigram_test_loss:.3f` for the bigram
# counts and {glue:text}`unigram_test_loss:.3f` for the unigram counts. Name by name, the RNN's
# loss minus the bigram counts' loss is {glue:text}`rnn_minus_bigram:.3f` nats per character,
# with a 95 % paired bootstrap interval over the test names from
# {glue:text}`rnn_minus_bigram_lo:.3f` to {glue:text}`rnn_minus_bigram_hi:.3f`: the RNN, which
# can use every earlier character, beats counts that see only the last one, by far more than
# the noise of the test names. Its
# perplexity, $e^{\mathcal{L}} =$ {glue:text}`rnn_test_ppl:.2f`, says that on average the model
# is as unsure as a uniform choice among that many characters, instead of the
# {glue:text}`n_targets` possible targets. Chapter 5 trains an LSTM on the same split.
#
# ## 4.6 Sampling names
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
# formula does to the distribution: its entropy rises with $\tau$ (asserted).

# %%
with torch.no_grad():
    bos = torch.tensor([[vocab.bos_id]], device=device)  # (1, 1)
    z = rnn_lm(bos)[0, -1].double().cpu()  # (V,) first-letter logits
z[[vocab.pad_id, vocab.bos_id]] = -math.inf  # never sampled


def with_temperature(z, tau):
    """Eq. (eq-ch04-temperature)."""
    e = torch.exp(
        (z - z.max()) / tau
    )  # subtracting the max changes nothing but avoids overflow
    return e / e.sum()


torch.testing.assert_close(with_temperature(z, 1.0), torch.softmax(z, dim=0))
torch.testing.assert_close(
    with_temperature(z, 1e-3), nn.functional.one_hot(z.argmax(), len(vocab)).double()
)
flat = with_temperature(z, 1e4)  # uniform over the possible targets
uniform = torch.full((n_targets,), 1 / n_targets, dtype=torch.float64)
torch.testing.assert_close(flat[2:], uniform, atol=1e-3, rtol=0)  # <eos> and letters


def entropy(p):
    return -(p[p > 0] * p[p > 0].log()).sum().item()


taus = [0.5, 1.0, 1.5]
entropies = []
for tau in taus:
    p = with_temperature(z, tau)
    entropies.append(entropy(p))
    top = p.topk(3)
    print(
        f"tau={tau}: entropy {entropies[-1]:.2f} nats; most likely first letters",
        [
            (vocab.itos[int(i)], round(float(v), 3))
            for v, i in zip(top.values, top.indices, strict=True)
        ],
    )
# flatter as tau rises, always below the uniform guess's ln 27
assert entropies[0] < entropies[1] < entropies[2] < math.log(n_targets)

# %% [markdown]
# `charlm.sample` applies Eq. {eq}`eq-ch04-temperature` at every step. For each temperature we
# draw {glue:text}`n_novelty` names with a generator seeded differently at each temperature,
# so the three sets of samples are independent, and measure two things: how many are new (not
# among the training names), and how ordinary their spelling is, as the bigram counts of the
# training names score it in nats per character (lower means more common letter pairs; the
# test names score {glue:text}`bigram_test_loss:.3f`). Each number comes with a 95 % bootstrap
# interval over the samples.

# %%
dlbook.show(charlm.sample)

# %%
train_set = set(names["train"])
is_new, spelling = {}, {}  # per temperature: 1.0 per new sample; bigram score
for k, tau in enumerate(taus):
    shown = charlm.sample(
        rnn_lm,
        vocab,
        sizes["n_samples"],
        tau,
        torch.Generator().manual_seed(0),
        max_len=20,
    )
    many = charlm.sample(
        rnn_lm,
        vocab,
        sizes["n_novelty"],
        tau,  # independent draws:
        torch.Generator().manual_seed(1 + k),
        max_len=20,
    )  # own seed
    is_new[tau] = np.array([s not in train_set for s in many], dtype=float)  # (n,)
    share = stats.bootstrap_ratio(is_new[tau])  # share of new names, 95 % interval
    spelling[tau] = stats.bootstrap_ratio(*ngram_nll(bigram, many))  # nats/char
    key = str(tau).replace(".", "_")
    for name, iv in [("novel", share), ("spelling", spelling[tau])]:
        dlbook.glue(f"{name}_tau{key}", iv.diff)
        dlbook.glue(f"{name}_tau{key}_lo", iv.low)
        dlbook.glue(f"{name}_tau{key}_hi", iv.high)
    sp = spelling[tau]
    print(
        f"tau={tau}: {share.diff:.0%} [{share.low:.0%}, {share.high:.0%}] of "
        f"{len(many)} samples are new, bigram score {sp.diff:.2f} "
        f"[{sp.low:.2f}, {sp.high:.2f}] nats/char ->",
        ", ".join(shown),
    )
dlbook.glue("n_novelty", sizes["n_novelty"])

# %%
# independent samples of one size: bootstrap the per-sample difference
newer_low = stats.bootstrap_ratio(is_new[1.0] - is_new[0.5])  # tau 0.5 -> 1
newer_high = stats.bootstrap_ratio(is_new[1.5] - is_new[1.0])  # tau 1 -> 1.5
test_spelling = stats.bootstrap_ratio(bigram_sums, bigram_lengths)  # real test names
for name, iv in [("newer_low", newer_low), ("newer_high", newer_high)]:
    dlbook.glue(name, 100 * iv.diff)  # in percentage points
    dlbook.glue(f"{name}_lo", 100 * iv.low)
    dlbook.glue(f"{name}_hi", 100 * iv.high)
dlbook.glue("test_spelling_lo", test_spelling.low)
dlbook.glue("test_spelling_hi", test_spelling.high)
print(
    "new names, tau 0.5 -> 1:",
    newer_low.points(),
    "points; tau 1 -> 1.5:",
    newer_high.points(),
    "points",
)
if profile == "full":
    assert newer_low.low > 0 and newer_high.low > 0, "expected: newer as tau rises"
    sp = [spelling[tau] for tau in taus]  # intervals that do not overlap:
    assert sp[0].high < sp[1].low and sp[1].high < sp[2].low, "expected: rarer with tau"
    assert sp[0].high < test_spelling.low, "expected: tau 0.5 commoner than real names"

# %% [markdown]
# At $\tau = 0.5$ many samples are names from the training list: only
# {glue:text}`novel_tau0_5:.0%` are new ({glue:text}`novel_tau0_5_lo:.0%` to
# {glue:text}`novel_tau0_5_hi:.0%`), and their letter pairs are more common than those of real
# test names (bigram score {glue:text}`spelling_tau0_5:.2f`, interval
# {glue:text}`spelling_tau0_5_lo:.2f` to {glue:text}`spelling_tau0_5_hi:.2f`, against
# {glue:text}`test_spelling_lo:.2f` to {glue:text}`test_spelling_hi:.2f` for the test names).
# At $\tau = 1$, {glue:text}`novel_tau1_0:.0%` are new ({glue:text}`novel_tau1_0_lo:.0%` to
# {glue:text}`novel_tau1_0_hi:.0%`), with a bigram score of {glue:text}`spelling_tau1_0:.2f`
# ({glue:text}`spelling_tau1_0_lo:.2f` to {glue:text}`spelling_tau1_0_hi:.2f`). At
# $\tau = 1.5$ the letters come from a flatter distribution,
# {glue:text}`novel_tau1_5:.0%` of the samples are new ({glue:text}`novel_tau1_5_lo:.0%` to
# {glue:text}`novel_tau1_5_hi:.0%`), and their letter pairs are the least usual of the three
# ({glue:text}`spelling_tau1_5:.2f`, {glue:text}`spelling_tau1_5_lo:.2f` to
# {glue:text}`spelling_tau1_5_hi:.2f`).
#
# Both orderings hold beyond the noise of sampling. The share of new names rises by
# {glue:text}`newer_low:.1f` points from $\tau = 0.5$ to $1$ (95 % interval
# {glue:text}`newer_low_lo:.1f` to {glue:text}`newer_low_hi:.1f`) and by
# {glue:text}`newer_high:.1f` points from $\tau = 1$ to $1.5$
# ({glue:text}`newer_high_lo:.1f` to {glue:text}`newer_high_hi:.1f`); the intervals of the
# three bigram scores do not overlap (both asserted). These intervals cover the randomness of
# the samples drawn from one trained model, not that of training it.
#
# ## 4.7 Clipping on a real run
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
        model.rnn.weight_hh_l0.normal_(
            0.0, 3.0 / 128**0.5
        )  # gain g = 3: the exploding regime
    return model


clip_runs = {}
for label, clip in [("no clipping", None), ("clipped at 1", 1.0)]:
    clip_runs[label] = charlm.train_char_lm(
        exploding_rnn_lm(),
        names["train"][: sizes["clip_train"]],
        val_names,
        vocab,
        epochs=sizes["clip_epochs"],
        batch_size=32,
        lr=2.0,
        device=device,
        seed=0,
        grad_clip=clip,
        optimizer="sgd",
        show_progress=False,
    )
    print(
        f"{label:13s}: validation loss {clip_runs[label].val_loss[-1]:.3f}, "
        f"largest gradient norm {max(clip_runs[label].grad_norm):.1f}"
    )

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), layout="constrained")
for label, run in clip_runs.items():
    axes[0].plot(run.step_loss, label=label, alpha=0.8)
    axes[1].semilogy(run.grad_norm, label=label, alpha=0.8)
uniform_label = f"uniform guess, ln {n_targets}"
axes[0].axhline(math.log(n_targets), color="grey", ls="--", label=uniform_label)
axes[0].set(
    xlabel="training step",
    ylabel="training loss (nats/char)",
    title="SGD, lr 2, exploding init",
)
axes[1].axhline(1.0, color="black", lw=0.8, label="clipping threshold $c$")
axes[1].set(xlabel="training step", ylabel="gradient norm before clipping")
axes[0].legend()
axes[1].legend()
plt.show()

clip_none, clip_one = (
    clip_runs["no clipping"].val_loss[-1],
    clip_runs["clipped at 1"].val_loss[-1],
)
early = clip_runs["no clipping"].step_loss[:10]  # the unclipped run's first steps
best_val_none = min(clip_runs["no clipping"].val_loss[1:])  # after each epoch
dlbook.glue("clip_val_none", clip_none)
dlbook.glue("clip_val_clipped", clip_one)
dlbook.glue("clip_max_norm_none", max(clip_runs["no clipping"].grad_norm))
dlbook.glue("clip_first_loss", early[0])
dlbook.glue("clip_early_peak", max(early))
dlbook.glue("clip_early_peak_step", 1 + int(np.argmax(early)))
dlbook.glue("clip_best_val_none", best_val_none)
if profile == "full":
    assert clip_none > math.log(n_targets) > clip_one, "expected: only unclipped fails"
    assert best_val_none > math.log(n_targets), "expected: unclipped never recovers"

# %% [markdown]
# **Figure 4.3.** The same exploding start trained with plain SGD without clipping and with the
# global norm clipped at 1: training loss per step (left, the uniform guess dashed) and gradient
# norm before clipping (right, log scale, the threshold as a line).
#
# Without clipping, gradient norms up to {glue:text}`clip_max_norm_none:.1f` move the weights
# in full, and the run blows up in its first steps: its training loss goes from
# {glue:text}`clip_first_loss:.2f` at the first step to {glue:text}`clip_early_peak:.1f` at
# step {glue:text}`clip_early_peak_step`. It never recovers: after every epoch its validation
# loss is above the uniform guess ($\ln$ {glue:text}`n_targets` $=$
# {glue:text}`ln_targets:.2f`; the lowest is {glue:text}`clip_best_val_none:.2f`), and it ends
# at {glue:text}`clip_val_none:.2f` nats per character. With clipping, every gradient of norm
# above 1 is scaled down to norm 1, and the run reaches {glue:text}`clip_val_clipped:.3f`.
# Clipping does not remove the cause (the Jacobian products of Eq. {eq}`eq-ch04-bptt`) and
# does nothing for *vanishing* gradients; here it is the difference between a run that
# diverges within its first steps and one that trains. The language model above was trained
# with it too.
#
# ## 4.8 Truncated backpropagation through time
#
# Every name above starts from a zero state, and its gradient flows back through a dozen steps
# at most. Many sequences are one long stream instead: a novel, a year of sensor readings.
# Backpropagating through all of it at once would keep the activations of every step in memory
# and update the weights once per pass over the data. **Truncated BPTT**
# {cite}`williams1990efficient` cuts the stream into chunks of $k$ steps and processes them in
# order. The hidden state is carried from one chunk to the next, so the forward pass still
# sees everything before it, but the gradient is cut at each boundary: before a chunk starts,
# the state is **detached** from the graph that produced it, `h = h.detach()`, which keeps its
# numbers and drops its history. Each update then costs memory and time for $k$ steps, and the
# weights change after every chunk.
#
# We turn the training names into one stream, each name followed by `<eos>`, and cut the stream
# into lanes that are read side by side, like the rows of a batch.


# %%
def make_stream(names_):
    """All names as one stream of ids, each followed by <eos>: (N,)."""
    ids = [vocab.eos_id]  # the stream starts as if a name had just ended
    for name in names_:
        ids += vocab.encode(name, add_bos=False)  # letters, then <eos>
    return torch.tensor(ids)


def lanes(stream, batch):
    """Cut a stream into `batch` contiguous lanes: inputs, next ids, each (batch, n)."""
    n = (len(stream) - 1) // batch
    return stream[: n * batch].view(batch, n), stream[1 : n * batch + 1].view(batch, n)


def show_ids(ids):
    return "".join("." if i == vocab.eos_id else vocab.itos[i] for i in ids.tolist())


train_stream, val_stream = make_stream(train_names), make_stream(val_names)
x_lanes, y_lanes = lanes(train_stream, batch=32)  # (32, n), (32, n)
torch.testing.assert_close(x_lanes[:, 1:], y_lanes[:, :-1])  # targets: inputs shifted
print(
    f"{len(train_stream):,} ids in 32 lanes of {x_lanes.shape[1]:,};",
    "the start of lane 0:",
    show_ids(x_lanes[0, :48]),
)

# %% [markdown]
# To run the chapter's language model on one chunk from a given state, we call its three parts
# ourselves. Carrying the state is exact: two chunks in a row give the same logits as one run
# over both.


# %%
def lm_chunk(lm, ids, h=None):
    """The model on a chunk from state h: ids (B, k) -> logits (B, k, V), h (1,B,H)."""
    out, h = lm.rnn(lm.embed(ids), h)  # (B, k, H), (1, B, H)
    return lm.head(out), h


with torch.no_grad():
    both = x_lanes[:4, :16].to(device)  # (4, 16)
    logits_a, h_a = lm_chunk(rnn_lm, both[:, :8])  # first chunk, from a zero state
    logits_b, _ = lm_chunk(rnn_lm, both[:, 8:], h_a)  # second chunk, from the state
    one_run = rnn_lm(both)  # (4, 16, V)
    in_chunks = torch.cat([logits_a, logits_b], dim=1)  # (4, 16, V)
    torch.testing.assert_close(in_chunks, one_run, atol=1e-5, rtol=1e-4)
print("two chunks with the state carried == one run over both")

# %% [markdown]
# ### What the detach prevents
#
# Without the detach, the state that enters the second chunk still points back into the graph
# of the first. The first `backward()` has already freed that graph's saved activations, so the
# second one fails:

# %%
torch.manual_seed(0)
lm = charlm.RecurrentLM(len(vocab), embed_dim=32, hidden_size=128).to(device)
k = 8  # five short chunks are enough to see the problem
chunks = [
    (x_lanes[:, s : s + k].to(device), y_lanes[:, s : s + k].to(device))
    for s in range(0, 5 * k, k)
]  # (32, 8) each: 32 lanes, 8 steps


def chunk_loss(lm, xb, yb, h):
    logits, h = lm_chunk(lm, xb, h)  # (B, k, V), (1, B, H)
    return F.cross_entropy(logits.flatten(0, 1), yb.flatten()), h


h, error = None, ""
try:
    for xb, yb in chunks[:2]:
        loss, h = chunk_loss(lm, xb, yb, h)  # no detach
        loss.backward()
except RuntimeError as err:
    error = str(err)
assert "backward through the graph a second time" in error
print("second chunk without detach:", error[:95], "...")

# %% [markdown]
# Keeping the graph alive with `backward(retain_graph=True)` does not help. In a training loop
# the optimizer changes the weights in place after the first chunk, and the second backward,
# which has to pass through the first chunk's graph again, needs the weights that graph saved:
# it fails with an in-place-modification error.

# %%
trained = copy.deepcopy(lm)  # a copy, so that `lm` keeps its weights for what follows
opt = torch.optim.Adam(trained.parameters(), lr=1e-3)
h, error = None, ""
try:
    for xb, yb in chunks[:2]:
        loss, h = chunk_loss(trained, xb, yb, h)  # no detach
        opt.zero_grad(set_to_none=True)
        loss.backward(retain_graph=True)  # the graph survives...
        opt.step()  # ...but the weights it saved change in place
except RuntimeError as err:
    error = str(err)
assert "modified by an inplace operation" in error
print("second chunk with retain_graph=True and an update:", error[:83], "...")

# %% [markdown]
# Without updates in between, as when we only measure, it runs, and shows two more problems:
# every backward pass runs through *all* earlier chunks again, so a backward costs more the
# further into the stream it is, and the graph, with every activation it saved, grows by the
# same amount at each chunk. We count the nodes of the graph behind each chunk's loss and the
# bytes of the tensors those nodes saved for backward, with and without the detach (no weight
# updates in either case).


# %%
def graph_size(loss):
    """Nodes of the autograd graph behind `loss`, and bytes of the tensors it saved."""
    seen, stack, saved = set(), [loss.grad_fn], {}
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        for attr in dir(node):
            if attr.startswith("_saved_"):
                value = getattr(node, attr)
                for t in value if isinstance(value, (tuple, list)) else [value]:
                    if isinstance(t, torch.Tensor):  # count every storage once
                        storage = t.untyped_storage()
                        saved[storage.data_ptr()] = storage.nbytes()
        stack.extend(next_node for next_node, _ in node.next_functions)
    return len(seen), sum(saved.values())


growth = {}
for detach in [True, False]:
    h, growth[detach] = None, []
    for xb, yb in chunks:
        if h is not None and detach:
            h = h.detach()  # same numbers, no history
        loss, h = chunk_loss(lm, xb, yb, h)
        growth[detach].append(graph_size(loss))
        loss.backward(retain_graph=not detach)
    lm.zero_grad()
print("chunk   with detach: nodes, saved MB   without: nodes, saved MB")
for c, (a, b) in enumerate(zip(growth[True], growth[False], strict=True)):
    print(f"{c:5d}   {a[0]:18d} {a[1] / 1e6:9.2f}   {b[0]:14d} {b[1] / 1e6:9.2f}")

# %%
nodes_with = [n for n, _ in growth[True]]
nodes_without, bytes_without = zip(*growth[False], strict=True)
step_nodes, step_bytes = np.diff(nodes_without), np.diff(bytes_without)
assert len(set(nodes_with)) == 1  # with the detach: the same graph at every chunk
assert len(set(step_nodes)) == 1 and step_nodes[0] > 0  # without: a fixed growth
assert len(set(step_bytes)) == 1 and step_bytes[0] > 0
dlbook.glue("tbptt_nodes", nodes_with[0])
dlbook.glue("tbptt_nodes_per_chunk", int(step_nodes[0]))
dlbook.glue("tbptt_mb_per_chunk", step_bytes[0] / 1e6)
dlbook.glue("tbptt_mb_first", bytes_without[0] / 1e6)

# %% [markdown]
# With the detach every chunk's graph has the same {glue:text}`tbptt_nodes` nodes. Without it,
# each chunk adds {glue:text}`tbptt_nodes_per_chunk` nodes and
# {glue:text}`tbptt_mb_per_chunk:.2f` MB of saved tensors (the first chunk's graph holds
# {glue:text}`tbptt_mb_first:.2f` MB, weights included): the memory held grows in proportion to
# the length of the stream read so far. With the detach, the gradient stops exactly at the
# boundary: the loss of the second chunk has no gradient at all with respect to the inputs of
# the first, although the first chunk's *values* reach the second through the state.


# %%
def cross_boundary_grad(detach):
    """d loss(chunk 2) / d embedded inputs of chunk 1; None when no path exists."""
    (x1, _), (x2, y2) = chunks[:2]
    e1 = lm.embed(x1)  # (B, k, E), an intermediate we ask about
    _, h1 = lm.rnn(e1)  # (1, B, H)
    loss2, _ = chunk_loss(lm, x2, y2, h1.detach() if detach else h1)
    return torch.autograd.grad(loss2, e1, allow_unused=True)[0]


assert cross_boundary_grad(detach=True) is None
reach = cross_boundary_grad(detach=False).norm(dim=-1).mean(0)  # (k,): step of chunk 1
assert (reach > 0).all()
print(
    "with detach: no gradient crosses the boundary; without: gradient norm at the",
    f"last and first step of chunk 1 = {reach[-1].item():.1e}, {reach[0].item():.1e}",
)

# %% [markdown]
# ### Training with truncated BPTT
#
# The training loop walks along the lanes chunk by chunk, carrying the detached state, and
# updates the weights after every chunk, with the same clipping as before. After each pass over
# the stream it measures the loss per character on the validation stream, with the state
# carried through it.


# %%
def train_tbptt(lm, stream, chunk_len, epochs, batch=32, lr=3e-3, seed=0):
    """Truncated BPTT on one stream; returns the validation loss after each epoch."""
    torch.manual_seed(seed)
    x, y = lanes(stream, batch)  # (batch, n)
    opt = torch.optim.Adam(lm.parameters(), lr=lr)
    val = [stream_nll(lm, val_stream, chunk_len).mean().item()]
    for _ in dlbook.progress(range(epochs), desc=f"TBPTT, chunks of {chunk_len}"):
        h = None  # a zero state at the start of each pass
        for start in range(0, x.shape[1], chunk_len):
            xb = x[:, start : start + chunk_len].to(device)  # (batch, k)
            yb = y[:, start : start + chunk_len].to(device)
            h = None if h is None else h.detach()  # carry the values, cut the history
            loss, h = chunk_loss(lm, xb, yb, h)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(lm.parameters(), 1.0)
            opt.step()
        val.append(stream_nll(lm, val_stream, chunk_len).mean().item())
    return val


@torch.no_grad()
def stream_nll(lm, stream, chunk_len, carry=True, batch=16):
    """Nats of every next-id prediction on a stream read in chunks: (batch, n).

    carry=False starts every chunk from zeros instead of the state the last one left.
    """
    x, y = lanes(stream, batch)
    h, out = None, []
    for start in range(0, x.shape[1], chunk_len):
        xb = x[:, start : start + chunk_len].to(device)  # (batch, k)
        logits, h = lm_chunk(lm, xb, h if carry else None)  # (batch, k, V)
        yb = y[:, start : start + chunk_len].to(device)
        out.append(F.cross_entropy(logits.transpose(1, 2), yb, reduction="none").cpu())
    return torch.cat(out, dim=1)


# %%
chunk_len = 32
torch.manual_seed(0)
stream_lm = charlm.RecurrentLM(len(vocab), embed_dim=32, hidden_size=128).to(device)
stream_val = train_tbptt(stream_lm, train_stream, chunk_len, sizes["tbptt_epochs"])
updates = math.ceil(x_lanes.shape[1] / chunk_len) * sizes["tbptt_epochs"]
dlbook.glue("tbptt_chunk", chunk_len)
dlbook.glue("tbptt_updates", updates)
dlbook.glue("tbptt_val", stream_val[-1])
print(
    "validation loss per character after each epoch (0 = untrained):",
    [round(v, 3) for v in stream_val],
)

# %%
fig, ax = plt.subplots(figsize=(6.5, 3.5))
ax.plot(stream_val, "o-", label=f"truncated BPTT, chunks of {chunk_len}")
ax.axhline(math.log(n_targets), color="grey", ls="--", label=uniform_label)
ax.set(xlabel="epoch (passes over the training stream)", ylabel="validation nats/char")
ax.legend()
plt.show()

# %% [markdown]
# **Figure 4.4.** Validation loss per character before training (epoch 0) and after each epoch
# of the language model trained on the name stream with truncated BPTT; the uniform guess is
# dashed.
#
# After {glue:text}`tbptt_updates` updates on chunks of {glue:text}`tbptt_chunk` characters the
# validation stream costs {glue:text}`tbptt_val:.3f` nats per character. The detach cut the
# gradient, not the information: the model reads each chunk from the state the previous chunk
# left. To see that this matters, we score the same validation stream in the same chunks twice,
# once carrying the state and once restarting every chunk from zeros, and compare the two
# position by position, with a paired bootstrap over the chunks.

# %%
carried = stream_nll(stream_lm, val_stream, chunk_len, carry=True)  # (16, n)
restarted = stream_nll(stream_lm, val_stream, chunk_len, carry=False)
diff = (restarted - carried).split(chunk_len, dim=1)  # one block per chunk and lane
block_diff = torch.stack([d.sum(1) for d in diff], 1).flatten().numpy()  # per block
block_len = torch.tensor([d.shape[1] for d in diff]).repeat(16).numpy()
restart = stats.bootstrap_ratio(block_diff, block_len)  # paired: same positions
n_full = carried.shape[1] // chunk_len  # whole chunks per lane
cost = (restarted - carried)[:, : n_full * chunk_len].reshape(16, n_full, chunk_len)
by_position = cost.mean((0, 1))  # (k,): cost of restarting, by position in a chunk
first8, rest = (  # the first 8 positions of every whole chunk, and the others
    stats.bootstrap_ratio(
        part.sum(-1).flatten().numpy(),  # (16 * n_full,) per block
        np.full(16 * n_full, part.shape[-1]),
    )
    for part in (cost[..., :8], cost[..., 8:])  # (16, n_full, 8), (16, n_full, k - 8)
)
dlbook.glue("restart_cost_first8", first8.diff)
dlbook.glue("restart_cost_first8_lo", first8.low)
dlbook.glue("restart_cost_first8_hi", first8.high)
dlbook.glue("restart_cost_rest", rest.diff)
dlbook.glue("restart_cost_rest_lo", rest.low)
dlbook.glue("restart_cost_rest_hi", rest.high)
dlbook.glue("restart_rest_n", chunk_len - 8)
dlbook.glue("carry_nll", carried.mean().item())
dlbook.glue("restart_cost", restart.diff)
dlbook.glue("restart_cost_lo", restart.low)
dlbook.glue("restart_cost_hi", restart.high)
if profile == "full":
    assert restart.low > 0, "carrying the state should help beyond the noise"
    assert first8.low > 0, "expected: restarting costs at the start of a chunk"
    assert rest.low < 0 < rest.high, "expected: no measurable cost later in a chunk"
print(
    f"carried {carried.mean():.3f}, restarted {restarted.mean():.3f} nats/char; "
    f"cost of restarting {restart.diff:.3f} [{restart.low:.3f}, {restart.high:.3f}]"
)
print("cost by position in a chunk:", [round(v, 3) for v in by_position[:12].tolist()])
print(
    f"positions 0-7: {first8.diff:+.4f} [{first8.low:+.4f}, {first8.high:+.4f}]; "
    f"8-{chunk_len - 1}: {rest.diff:+.4f} [{rest.low:+.4f}, {rest.high:+.4f}]"
)

# %% [markdown]
# Restarting every chunk from zeros costs {glue:text}`restart_cost:.3f` nats per character
# (95 % paired interval {glue:text}`restart_cost_lo:.3f` to {glue:text}`restart_cost_hi:.3f`).
# The cost sits at the start of each chunk, where a restarted model has lost the beginning of
# the name it is in the middle of: {glue:text}`restart_cost_first8:.3f` nats per character over
# the first 8 positions of a chunk ({glue:text}`restart_cost_first8_lo:.3f` to
# {glue:text}`restart_cost_first8_hi:.3f`), and over the other {glue:text}`restart_rest_n`
# {glue:text}`restart_cost_rest:+.4f`, with an interval from
# {glue:text}`restart_cost_rest_lo:+.4f` to {glue:text}`restart_cost_rest_hi:+.4f` that
# contains zero: no measurable cost (asserted). The price of truncation is elsewhere: no
# gradient tells the model how to *write* information into the state for use more than $k$
# steps later; how much of the full gradient survives the cut is the subject of an exercise
# (see {ref}`ch04-ex-tbptt`).
#
# ## 4.9 Sequences of different lengths
#
# The language model produced an output at every step (many-to-many). A classifier reads a
# whole sequence and gives one answer (many-to-one), here read from the final hidden state. In a
# padded batch, which state is final? `nn.RNN` returns as `h_n` the state after the last
# *column* of the batch, and for every sequence shorter than the longest one, that is the state
# after its padding. Padding is not neutral: on a zero input the state still moves,
# $h_t = \tanh(W_{hh} h_{t-1} + b_{xh} + b_{hh})$. There are two correct ways out:
#
# - **pack** the batch with `nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True,
#   enforce_sorted=False)`: PyTorch's recurrent modules then run each sequence for exactly its
#   own number of steps, and `h_n` holds each sequence's state at its true last step;
# - run the padded batch and **pick** each sequence's state at its last real step,
#   `output[b, length_b - 1]`, which is what the book's own modules expect.
#
# A task with an exact answer to try both on: a sequence of 1 to 20 numbers drawn uniformly from
# $[0, 1]$; is its mean above $1/2$?


# %%
def mean_task(n, max_len=20, seed=0):
    """n sequences of 1..max_len numbers in [0, 1], zero-padded.

    Returns x (n, max_len, 1), lengths (n,) and labels (n,): 1 if the mean is above 1/2.
    """
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, max_len + 1, (n,), generator=g)  # (n,), stays on the CPU
    seqs = [torch.rand(int(length), 1, generator=g) for length in lengths]
    labels = torch.tensor([int(s.mean() > 0.5) for s in seqs])  # (n,), the exact answer
    x = pad_sequence(seqs, batch_first=True)  # (n, longest, 1), zeros after the end
    if x.shape[1] < max_len:
        x = F.pad(x, (0, 0, 0, max_len - x.shape[1]))
    return x, lengths, labels


x_demo, len_demo, _ = mean_task(6, seed=10)
print("lengths:", len_demo.tolist(), "| batch", tuple(x_demo.shape))

# %% [markdown]
# First the mechanics, with random weights, for `nn.RNN` and for `nn.GRU` (the GRU, a gated
# cell of chapter 5, behaves the same way): the packed `h_n` equals the final state of each
# sequence run alone, without any padding; the padded `h_n` differs for
# every sequence shorter than the batch; and the book's modules, with the same weights, give the
# packed answer when we pick the state at each true last step.

# %%
torch.manual_seed(0)
for torch_cls, ours_cls in [(nn.RNN, RNN), (nn.GRU, GRU)]:
    ref = torch_cls(1, 8, batch_first=True).double()
    x64 = x_demo.double()  # (6, 20, 1)
    with torch.no_grad():
        packed = pack_padded_sequence(
            x64, len_demo, batch_first=True, enforce_sorted=False
        )
        h_packed = ref(packed)[1][0]  # (6, 8): state at each sequence's last step
        alone = torch.cat(  # (6, 8): each sequence on its own, no padding at all
            [ref(x64[b : b + 1, : len_demo[b]])[1][0] for b in range(6)]
        )
        h_padded = ref(x64)[1][0]  # (6, 8): state after the padding
        out = ours_cls.from_torch(ref)(x64)[0]  # (6, 20, 8): our module, every step
    torch.testing.assert_close(h_packed, alone)
    shorter = len_demo < x64.shape[1]
    assert ((h_padded - h_packed).abs().amax(1) > 1e-6).eq(shorter).all()
    picked = out[torch.arange(6), len_demo - 1]  # (6, 8): pick the true last step
    torch.testing.assert_close(picked, h_packed)
    print(
        f"nn.{torch_cls.__name__}: packed h_n == each sequence alone == ours picked "
        f"at length - 1; padded h_n differs for {int(shorter.sum())} of 6 sequences"
    )

# %% [markdown]
# Now a many-to-one classifier: a one-layer RNN with 32 hidden units reads the packed batch, and
# a linear layer maps its final state to two logits. It trains with Adam on
# {glue:text}`clf_n_train` sequences and is tested once on {glue:text}`clf_n_test` others.


# %%
class MeanClassifier(nn.Module):
    """Packed RNN -> final state -> two logits: is the sequence's mean above 1/2?"""

    def __init__(self, hidden=32):
        super().__init__()
        self.rnn = nn.RNN(1, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 2)

    def forward(self, x, lengths):  # x (B, T, 1), lengths (B,) on the CPU -> (B, 2)
        packed = pack_padded_sequence(
            x, lengths, batch_first=True, enforce_sorted=False
        )
        _, h_n = self.rnn(packed)  # (1, B, hidden): each sequence's last real step
        return self.head(h_n[0])


def train_classifier(x, lengths, labels, epochs, seed=0):
    """Adam on the packed classifier; x (n, T, 1), lengths (n,), labels (n,)."""
    n_train = len(labels)
    torch.manual_seed(seed)
    model = MeanClassifier().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    order = torch.Generator().manual_seed(seed)
    for _ in dlbook.progress(range(epochs), desc="classifier"):
        for rows in torch.randperm(n_train, generator=order).split(64):
            logits = model(x[rows].to(device), lengths[rows])  # (64, 2)
            loss = F.cross_entropy(logits, labels[rows].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
    return model.eval()


x_train, len_train, y_train = mean_task(sizes["n_clf_train"], seed=1)
clf = train_classifier(x_train, len_train, y_train, sizes["clf_epochs"])
x_test, len_test, y_test = mean_task(sizes["n_clf_test"], seed=1_000)
with torch.no_grad():
    pred_packed = clf(x_test.to(device), len_test).argmax(1).cpu()  # (n_test,)
clf_acc = (pred_packed == y_test).float().mean().item()
majority_class = int(y_train.float().mean() > 0.5)  # chosen on the training labels
majority = (y_test == majority_class).float().mean().item()  # scored once on test
dlbook.glue("clf_n_train", sizes["n_clf_train"])
dlbook.glue("clf_n_test", sizes["n_clf_test"])
dlbook.glue("clf_acc", clf_acc)
dlbook.glue("clf_majority", majority)
if profile == "full":
    assert clf_acc >= 0.85, f"the packed classifier should learn the task: {clf_acc}"
print(
    f"test accuracy {clf_acc:.3f}; always the answer most frequent in training "
    f"({'above' if majority_class else 'not above'} 1/2): {majority:.3f}"
)

# %% [markdown]
# The packed classifier answers {glue:text}`clf_acc:.1%` of the test sequences correctly, where
# always giving the answer most frequent in the training sequences scores
# {glue:text}`clf_majority:.1%`. What happens to
# its answers when the packing is left out is the subject of an exercise (see
# {ref}`ch04-ex-packing`).
#
# ## Summary
#
# - The vanilla RNN, Eq. {eq}`eq-ch04-rnn`, applies one cell with four shared parameter tensors
#   at every step; stacked as in Eq. {eq}`eq-ch04-deep`, our loops reproduce `nn.RNN` to
#   float64 rounding (largest difference {glue:text}`rnn_max_diff:.1e`), and the parameter
#   count does not depend on the sequence length.
# - Backpropagation through time multiplies one Jacobian per step, Eqs. {eq}`eq-ch04-step-jac`
#   and {eq}`eq-ch04-bptt`, and sums one contribution per step into each weight's gradient,
#   Eq. {eq}`eq-ch04-weight-grad` (all checked against autograd). The bound
#   {eq}`eq-ch04-bound` uses the
#   spectral norm of $W_{hh}$, not its spectral radius: below 1 it guarantees vanishing
#   gradients; above 1 it guarantees nothing, and we measured both vanishing and exploding
#   gradients there.
# - Clipping the global gradient norm, Eq. {eq}`eq-ch04-clip`, caps the gradient's norm and
#   rescued a training run that diverged without it ({glue:text}`clip_val_clipped:.3f` against
#   {glue:text}`clip_val_none:.3f` nats per character).
# - A character-level RNN language model on census names reached
#   {glue:text}`rnn_test_loss` nats per character on held-out names, below the bigram counts by
#   a margin well outside the noise of the test names (paired bootstrap interval
#   {glue:text}`rnn_minus_bigram_lo:.3f` to {glue:text}`rnn_minus_bigram_hi:.3f`), and samples
#   names that become newer and less ordinary as the temperature,
#   Eq. {eq}`eq-ch04-temperature`, rises.
# - Truncated BPTT trains on a long stream in chunks: the state is carried forward and detached
#   at each boundary. Without the detach the second backward fails; retaining the graph does
#   not help, since after a weight update the second backward fails with an in-place
#   modification error, and without updates every backward runs through all earlier chunks
#   while the graph grows at every chunk. With the detach, no gradient crosses the boundary,
#   yet the carried state still helps the next chunk.
# - For many-to-one tasks on padded batches, the final state must be each sequence's state at
#   its own last step: packing gives it to `nn.RNN` and `nn.GRU`, picking `output[b, len_b - 1]`
#   gives it to any unidirectional recurrent module (for a bidirectional one, only its forward
#   half); the padded `h_n` is a different vector.
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
        h = torch.tanh(
            x[:, t] @ w_xh.T + h @ w_hh.T + b
        )  # (batch, hidden), Eq. (eq-ch04-rnn)
        states.append(h)
    return torch.stack(states, dim=1)  # (batch, seq, hidden)


assert dlbook.exercises.check("ch04.rnn_forward", rnn_forward_solution)

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
# The two shortcuts: averaging over padded positions too, and averaging each row first
# and then
# the row means (which weighs a two-letter name like a ten-letter one).

# %% [markdown]
# ```{solution-end}
# ```
#
# :::{exercise}
# :label: ch04-ex-tbptt
# Write `my_tbptt_grad(x, h0, w_xh, w_hh, b, chunk_len)`: run the RNN of
# {ref}`ch04-ex-rnn-forward` over `x` (batch, seq, input) in chunks of `chunk_len` steps (the
# last chunk may be shorter), carrying the state from chunk to chunk but detaching it at every
# boundary, and return the gradient with respect to `w_hh` of the loss "sum of every entry of
# every hidden state", summed over the chunks. The check includes a single chunk (full BPTT)
# and fails the two usual mistakes: no detach, and restarting each chunk from `h0`.
#
# Then experiment: for the random RNN of section 4.3, scaled to $g = 0.5$,
# $1$ and $1.5$, compute the cosine similarity between the truncated and the full gradient
# for chunk lengths 1, 2, 4, 8, 16 and the whole sequence. For which gain does truncation
# lose least, and why? (On the language model, `train_tbptt` with other chunk lengths is the
# same question asked of a trained model.)
# :::


# %%
def my_tbptt_grad(x, h0, w_xh, w_hh, b, chunk_len):
    raise NotImplementedError  # your code here


dlbook.exercises.check("ch04.tbptt_grad", my_tbptt_grad)

# %% [markdown]
# ```{solution-start} ch04-ex-tbptt
# :class: dropdown
# ```


# %% tags=["solution"]
def tbptt_grad_solution(x, h0, w_xh, w_hh, b, chunk_len):
    w_hh = w_hh.clone().requires_grad_(True)
    h, loss = h0, 0.0
    for chunk in x.split(chunk_len, dim=1):  # (batch, <= chunk_len, input) each
        h = h.detach()  # carry the values, cut the history
        for t in range(chunk.shape[1]):
            h = torch.tanh(chunk[:, t] @ w_xh.T + h @ w_hh.T + b)  # (batch, hidden)
            loss = loss + h.sum()
    loss.backward()  # the chunks' graphs are disjoint: this sums their gradients
    return w_hh.grad


assert dlbook.exercises.check("ch04.tbptt_grad", tbptt_grad_solution)

# %% tags=["solution"]
seq = sizes["grad_seq"]
chunk_lens = [1, 2, 4, 8, 16, seq]
g_ex = torch.Generator().manual_seed(2)
x_ex = torch.randn(4, seq, 4, generator=g_ex, dtype=torch.float64)  # (4, T, 4)
cosines = {}
for gain in [0.5, 1.0, 1.5]:
    c = random_rnn(gain).cells[0]
    weights_ex = [p.detach() for p in (c.weight_ih, c.weight_hh, c.bias_ih)]
    args = (x_ex, x_ex.new_zeros(4, 32), *weights_ex)  # h0 = 0; the bias is zero
    full = tbptt_grad_solution(*args, seq).flatten()  # one chunk: full BPTT
    cosines[gain] = [
        F.cosine_similarity(tbptt_grad_solution(*args, k).flatten(), full, dim=0).item()
        for k in chunk_lens
    ]
    print(
        f"g={gain}: cosine(truncated, full) for chunks {chunk_lens}:",
        [round(v, 3) for v in cosines[gain]],
    )
assert all(abs(cos[-1] - 1) < 1e-12 for cos in cosines.values())  # one chunk: full BPTT
assert all(a > b for a, b in zip(cosines[0.5][:-1], cosines[1.5][:-1], strict=True))
dlbook.glue("tbptt_cos_small_k1", cosines[0.5][0])
dlbook.glue("tbptt_cos_large_k1", cosines[1.5][0])
dlbook.glue("tbptt_cos_large_k16", cosines[1.5][4])

# %% [markdown]
# With $g = 0.5$ even chunks of a single step keep a cosine of
# {glue:text}`tbptt_cos_small_k1:.2f` with the full gradient: the contributions from far back
# have vanished anyway (Eq. {eq}`eq-ch04-bound`), so cutting them changes little. With
# $g = 1.5$ the far contributions are large, and the cosine is
# {glue:text}`tbptt_cos_large_k1:.2f` for chunks of one step and
# {glue:text}`tbptt_cos_large_k16:.2f` for chunks of 16. At every chunk length below the whole
# sequence, the smaller gain keeps more of the gradient (asserted). Truncation is cheapest
# exactly where the gradient from far back had almost vanished anyway.
#
# ```{solution-end}
# ```
#
# :::{exercise}
# :label: ch04-ex-packing
# Write `my_final_states(x, h0, w_xh, w_hh, b, lengths)` for the RNN of
# {ref}`ch04-ex-rnn-forward`: `x` (batch, seq, input) is a right-padded batch whose row `b`
# holds a sequence of `lengths[b]` steps, and the function returns each sequence's state after
# its own last step, (batch, hidden), without packing: a padded step must leave the state
# alone. Then take the packing out of the chapter's classifier: give your function the
# classifier's weights, once with the true lengths (you must get the packed answers back) and
# once with every length set to the padded length, which is what `h_n` of the padded batch
# holds. How many test answers change, and what happens to the accuracy?
# :::


# %%
def my_final_states(x, h0, w_xh, w_hh, b, lengths):
    raise NotImplementedError  # your code here


dlbook.exercises.check("ch04.final_states", my_final_states)

# %% [markdown]
# ```{solution-start} ch04-ex-packing
# :class: dropdown
# ```


# %% tags=["solution"]
def final_states_solution(x, h0, w_xh, w_hh, b, lengths):
    h = h0
    for t in range(x.shape[1]):
        new = torch.tanh(x[:, t] @ w_xh.T + h @ w_hh.T + b)  # (batch, hidden)
        real = (t < lengths)[:, None]  # (batch, 1): is step t part of the sequence?
        h = torch.where(real, new, h)  # a padded step leaves the state alone
    return h


assert dlbook.exercises.check("ch04.final_states", final_states_solution)

# %% tags=["solution"]
rnn_w = {k: v.detach().cpu() for k, v in clf.rnn.named_parameters()}
bias = rnn_w["bias_ih_l0"] + rnn_w["bias_hh_l0"]  # only the sum matters
weights = (rnn_w["weight_ih_l0"], rnn_w["weight_hh_l0"], bias)
h0_test = torch.zeros(len(y_test), 32)
clf.cpu()  # the whole experiment on the CPU
head = clf.head
with torch.no_grad():
    h_true = final_states_solution(x_test, h0_test, *weights, len_test)  # (n, 32)
    logits_true = head(h_true)  # (n, 2)
    torch.testing.assert_close(logits_true, clf(x_test, len_test))  # the packed answers
    padded_len = torch.full_like(len_test, x_test.shape[1])  # "ends" at the last column
    logits_pad = head(final_states_solution(x_test, h0_test, *weights, padded_len))
clf.to(device)
pred_pad = logits_pad.argmax(1)
changed = int((pred_pad != pred_packed).sum())
acc_pad = (pred_pad == y_test).float().mean().item()
right_pad, right_packed = pred_pad == y_test, pred_packed == y_test  # (n,) each
pad_vs_packed = stats.compare(right_pad, right_packed)  # paired bootstrap and McNemar
lo, hi = pad_vs_packed.interval.low, pad_vs_packed.interval.high
above_packed = pred_packed.float().mean().item()  # share answered "above 1/2"
above_pad = pred_pad.float().mean().item()
dlbook.glue("above_packed", above_packed)
dlbook.glue("above_pad", above_pad)
dlbook.glue("pad_changed", changed)
dlbook.glue("pad_changed_frac", changed / len(y_test))
dlbook.glue("pad_acc", acc_pad)
dlbook.glue("pad_acc_lo", lo)
dlbook.glue("pad_acc_hi", hi)
assert changed > 0
if profile == "full":
    assert hi < 0, "reading the padded end should cost accuracy beyond the noise"
    assert above_pad < above_packed / 2, "expected: padded zeros pull answers below 1/2"
print(
    f"{changed} of {len(y_test)} answers change; accuracy {clf_acc:.3f} packed -> "
    f"{acc_pad:.3f} padded"
)
print(pad_vs_packed.verdict("padded h_n", "packed"))

# %% [markdown]
# Reading the state after the padding changes {glue:text}`pad_changed` answers
# ({glue:text}`pad_changed_frac:.0%` of the test sequences) and the accuracy falls from
# {glue:text}`clf_acc:.3f` to {glue:text}`pad_acc:.3f` (paired 95 % interval of the
# difference: {glue:text}`pad_acc_lo:.3f` to {glue:text}`pad_acc_hi:.3f`). The zeros look
# harmless, but to the RNN every padded zero is one more small number: the share of sequences
# it calls "above 1/2" drops from {glue:text}`above_packed:.1%` with packing to
# {glue:text}`above_pad:.1%` without.
#
# ```{solution-end}
# ```
#
# :::{exercise}
# :label: ch04-ex-units
# A model scores 2.0 nats per character on held-out names. Convert this to bits per character
# and to perplexity. How does the perplexity compare with a uniform guess over the 27 symbols a
# target can be (26 letters and `<eos>`)? What probability does the model give to a held-out
# name of 6 letters each of whose predicted symbols costs exactly the average 2.0 nats, and why
# is that not the average probability the model gives to held-out names?
# :::
#
# ```{solution-start} ch04-ex-units
# :class: dropdown
# ```

# %% tags=["solution"]
nats = 2.0
bits, ppl = nats / math.log(2), math.exp(nats)  # 1 nat = 1 / ln 2 bits
n_symbols = 6 + 1  # six letters and <eos>
p_name = math.exp(-n_symbols * nats)
vs_uniform = p_name / n_targets**-n_symbols
print(
    f"{bits:.3f} bits/char, perplexity {ppl:.2f} (uniform: {n_targets}, "
    f"ln {n_targets} = {math.log(n_targets):.2f} nats)"
)
print(f"p(name) = {p_name:.1e}, {vs_uniform:.1e} times the uniform guess's")
dlbook.glue("units_bits", bits)
dlbook.glue("units_ppl", ppl)
dlbook.glue("units_p_name", p_name)
dlbook.glue("units_vs_uniform", vs_uniform)

# %% [markdown]
# Bits: $2.0 / \ln 2 =$ {glue:text}`units_bits:.3f` bits per character. Perplexity:
# $e^{2.0} =$ {glue:text}`units_ppl:.2f`, so the model is as unsure as a uniform choice among
# that many symbols instead of {glue:text}`n_targets` ($\ln$ {glue:text}`n_targets` $=$
# {glue:text}`ln_targets:.2f` nats). A 6-letter name has 7 predicted symbols (with `<eos>`); if
# each costs 2.0 nats, its probability is $e^{-7 \cdot 2.0} =$ {glue:text}`units_p_name:.1e`:
# tiny, but {glue:text}`units_vs_uniform:.1e` times more than the uniform guess gives it. It
# is not the average probability of a held-out name: names differ in length and cost, and the
# exponential is convex, so by Jensen's inequality the mean of $e^{-\text{nats of a name}}$ is
# at least $e^{-\text{mean nats}}$, and a few easy names can pull it far above.
#
# ```{solution-end}
# ```
#
# :::{exercise}
# :label: ch04-ex-vanish
# Using Eq. {eq}`eq-ch04-bound`, explain why a tanh RNN with $\|W_{hh}\|_2 < 1$ *must* have
# vanishing gradients, while $\|W_{hh}\|_2 > 1$ does not guarantee exploding ones. Why would the
# same argument fail with the spectral radius $\rho(W_{hh}) < 1$ in place of the norm? Then,
# with $\|W_{hh}\|_2 = 0.9$: by what factor has the bound shrunk for an input 50 steps back,
# compared with the last input?
# :::
#
# ```{solution-start} ch04-ex-vanish
# :class: dropdown
# ```

# %% tags=["solution"]
shrink = 0.9**50  # the bound at distance 50 relative to distance 0
dlbook.glue("vanish_shrink", shrink)
dlbook.glue("vanish_factor", 1 / shrink)
print(f"0.9^50 = {shrink:.4f}, a factor of {1 / shrink:.0f}")

# %% [markdown]
# Every factor $\operatorname{diag}(1 - h_k^2) W_{hh}$ has spectral norm at most $\|W_{hh}\|_2$
# because $0 < 1 - h_k^2 \le 1$, and the norm of a product is at most the product of the norms;
# so the bound $\|W_{hh}\|_2^{T-t}$ decays exponentially whenever $\|W_{hh}\|_2 < 1$, whatever
# the inputs. The converse fails because the bound is only an upper limit: the derivative
# $1 - h_k^2$ can be close to 0 when the units saturate, and the product of matrices can shrink
# even if each has a large norm (their large directions need not line up); the measurement with
# $g = 1$ showed exactly that. The spectral radius cannot replace the norm because it is not
# submultiplicative: the two matrices $A$ and $B$ of section 4.3 have
# $\rho(A) = \rho(B) = 0$ and $\rho(AB) = 1$, so factors with small radii can still multiply
# to something large. With $\|W_{hh}\|_2 = 0.9$ the bound at distance 50 is
# $0.9^{50} =$ {glue:text}`vanish_shrink:.4f` times the one at distance 0, a factor of about
# {glue:text}`vanish_factor:.0f` smaller.
#
# ```{solution-end}
# ```
#
# ## Further reading
#
# - The simple recurrent network and what its hidden state learns about structure in time:
#   {cite}`elman1990finding`.
# - Backpropagation through time, derived and explained: {cite}`werbos1990backpropagation`;
#   truncated BPTT for training on long or endless streams: {cite}`williams1990efficient`.
# - Why gradient descent struggles to learn long-term dependencies in recurrent networks:
#   {cite}`bengio1994learning`; the analysis of vanishing and exploding gradients behind
#   Eq. {eq}`eq-ch04-bound` and the proposal of gradient-norm clipping: {cite}`pascanu2013difficulty`.
# - Character-level recurrent language models and what they can generate:
#   {cite}`karpathy2015unreasonable`.
# - The gated cells that ease the vanishing gradient, next chapter: {cite}`hochreiter1997long`.
