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
# (ch05)=
# # 5. LSTM and GRU
#
# Chapter 4 ended with a problem: in a vanilla RNN, the gradient that links the last step to an
# input $k$ steps back is a product of $k$ Jacobians, which can shrink exponentially with $k$
# (when $\|W_{hh}\|_2 < 1$) or grow. The **long short-term memory** (LSTM)
# {cite}`hochreiter1997long` and the **gated recurrent unit** (GRU) {cite}`cho2014learning`
# change the cell so that information, and gradient, can pass through many steps nearly
# untouched, under the control of learned gates. This chapter writes both cells from their
# equations, checks them against PyTorch to $10^{-6}$, forward and backward, measures on a task
# built for it, over several seeds, that the gated cells learn a long-range dependency that the
# vanilla RNN does not, and then uses them on a real time series and on the names of chapter 4.
#
# By the end of this chapter you can
#
# 1. write the LSTM and GRU cells from their equations and load PyTorch's weights into them
#    (gate order i, f, g, o and r, z, n);
# 2. explain why the additive cell-state update keeps gradients alive, and check the key
#    derivative numerically;
# 3. run the adding problem over several seeds and show the LSTM and the GRU learning a
#    dependency up to 50 steps long that a vanilla RNN does not learn;
# 4. forecast a seasonal time series with an LSTM against honest baselines, with windowing and
#    scaling done without peeking at the test data;
# 5. compare the held-out loss of RNN and LSTM language models on the same names.

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

import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn

import dlbook
from dlbook import assets, charlm
from dlbook.nn.recurrent import GRU, LSTM, GRUCell, LSTMCell
from dlbook.stats import seed_interval

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
        add_len=50,
        add_steps=30,
        add_eval_every=10,
        add_test=500,
        seeds=2,
        sweep_seeds=2,
        co2_seeds=2,
        co2_epochs=1,
        n_train=300,
        lm_epochs=1,
    ),
    full=dict(
        add_len=50,  # steps per sequence of the adding problem
        add_steps=2_000,  # training steps per adding-problem run (batches of 64)
        add_eval_every=100,  # steps between two evaluations of the error
        add_test=2_000,  # fixed sequences the error is measured on
        seeds=3,  # training runs per model (5.4 and 5.6), for the spread
        sweep_seeds=5,  # seeds per forget-gate bias in the exercise
        co2_seeds=5,  # training runs of the CO2 forecaster
        co2_epochs=30,  # epochs of each CO2 run
        n_train=4_130,  # training names (4,130: all)
        lm_epochs=15,  # epochs of each names model
    ),
)
sizes

# %% [markdown]
# ## 5.1 The LSTM cell
#
# The LSTM keeps two vectors per step: the hidden state $h_t$, which is the cell's output, and
# a **cell state** $c_t$, its memory. Three gates, each a vector of numbers between 0 and 1
# computed from the current input and the previous output, decide what happens to the memory:
# the **forget gate** $f_t$ how much of each memory unit to keep, the **input gate** $i_t$ how
# much of the new **candidate** $g_t$ to write, and the **output gate** $o_t$ how much of the
# memory to show. The forget gate was not in the first LSTM: Gers, Schmidhuber and Cummins added
# it {cite}`gers2000learning`, and PyTorch's LSTM, which we reproduce below, has it. In the form
# PyTorch implements,
#
# $$
# \begin{aligned}
# i_t &= \sigma\left(W_{ii} x_t + b_{ii} + W_{hi} h_{t-1} + b_{hi}\right) \\
# f_t &= \sigma\left(W_{if} x_t + b_{if} + W_{hf} h_{t-1} + b_{hf}\right) \\
# g_t &= \tanh\left(W_{ig} x_t + b_{ig} + W_{hg} h_{t-1} + b_{hg}\right) \\
# o_t &= \sigma\left(W_{io} x_t + b_{io} + W_{ho} h_{t-1} + b_{ho}\right) \\
# c_t &= f_t \odot c_{t-1} + i_t \odot g_t \\
# h_t &= o_t \odot \tanh(c_t)
# \end{aligned}
# $$ (eq-ch05-lstm)
#
# where $\sigma$ is the logistic sigmoid and $\odot$ the element-wise product. We implement
# Eq. {eq}`eq-ch05-lstm` line by line, with one weight matrix per gate.


# %%
def lstm_cell(x_t, h_prev, c_prev, W):
    """Eq. (eq-ch05-lstm): x_t (B, d), h_prev and c_prev (B, H).

    W maps names like 'ii' to weights.
    """

    def pre(gate):  # W_i<gate> x + b_i<gate> + W_h<gate> h + b_h<gate>, (B, H)
        return (
            x_t @ W[f"W_i{gate}"].T
            + W[f"b_i{gate}"]
            + h_prev @ W[f"W_h{gate}"].T
            + W[f"b_h{gate}"]
        )

    i = torch.sigmoid(pre("i"))  # input gate (B, H)
    f = torch.sigmoid(pre("f"))  # forget gate (B, H)
    g = torch.tanh(pre("g"))  # candidate (B, H)
    o = torch.sigmoid(pre("o"))  # output gate (B, H)
    c = f * c_prev + i * g  # new memory (B, H)
    h = o * torch.tanh(c)  # new output (B, H)
    return h, c


# %% [markdown]
# PyTorch stores the four gates of a layer in one matrix: `weight_ih_l0` is
# $[W_{ii}; W_{if}; W_{ig}; W_{io}]$ stacked row-wise into shape $(4H, d)$, in the order
# **i, f, g, o**, and the same for `weight_hh_l0`, `bias_ih_l0` and `bias_hh_l0`. One matrix
# product then computes all four pre-activations at once. To load PyTorch's weights into our
# per-gate form we cut those matrices into four blocks of $H$ rows.


# %%
def split_gates(module, layer, order):
    """Cut the stacked weights of an nn.LSTM / nn.GRU layer into one block per gate.

    The blocks are named as in our equations.
    """
    W = {}
    for kind, src in [("i", "ih"), ("h", "hh")]:
        weights = getattr(module, f"weight_{src}_l{layer}").chunk(
            len(order), dim=0
        )  # each (H, d) or (H, H)
        biases = getattr(module, f"bias_{src}_l{layer}").chunk(
            len(order), dim=0
        )  # each (H,)
        for gate, w_block, b_block in zip(order, weights, biases, strict=True):
            W[f"W_{kind}{gate}"], W[f"b_{kind}{gate}"] = w_block, b_block
    return W


def run_lstm(x, W):
    """Unroll lstm_cell over time: x (B, T, d) -> outputs (B, T, H), (h_T, c_T)."""
    H = W["W_hi"].shape[0]
    h = c = x.new_zeros(x.shape[0], H)
    outs = []
    for t in range(x.shape[1]):
        h, c = lstm_cell(x[:, t], h, c, W)
        outs.append(h)
    return torch.stack(outs, dim=1), (h, c)


torch.manual_seed(0)
B, T, d, H = 3, 9, 4, 6
x = torch.randn(
    B, T, d, dtype=torch.float64
)  # (batch, seq, input); float64 so that 1e-6 is a strict test
ref_lstm = nn.LSTM(d, H, batch_first=True).double()
with torch.no_grad():
    out, (h_T, c_T) = run_lstm(x, split_gates(ref_lstm, 0, "ifgo"))
    ref_out, (ref_h, ref_c) = ref_lstm(x)
for ours, theirs in [(out, ref_out), (h_T, ref_h[0]), (c_T, ref_c[0])]:
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)
lstm_diff = (out - ref_out).abs().max().item()
dlbook.glue("lstm_max_diff", lstm_diff)
print(
    "LSTM from Eq. (eq-ch05-lstm) == nn.LSTM: "
    f"max abs difference {lstm_diff:.1e}; output {tuple(out.shape)}"
)

# %% [markdown]
# The gate order matters, and nothing in the shapes tells you when you get it wrong. Reading the
# same weights as i, f, **o, g** gives a network that runs without error and computes something
# else:

# %%
with torch.no_grad():
    wrong_out, _ = run_lstm(x, split_gates(ref_lstm, 0, "ifog"))
print(
    "gates read as i, f, o, g: max abs difference "
    f"{(wrong_out - ref_out).abs().max().item():.2f}"
)
assert not torch.allclose(wrong_out, ref_out, atol=1e-3)

# %% [markdown]
# ## 5.2 The GRU cell
#
# The GRU {cite}`cho2014learning` merges the cell state into the hidden state and uses two
# gates: a **reset gate** $r_t$ that decides how much of the previous state enters the
# candidate $n_t$, and an **update gate** $z_t$ that interpolates between the old state and the
# candidate. PyTorch's form, with rows in the order **r, z, n**, is
#
# $$
# \begin{aligned}
# r_t &= \sigma\left(W_{ir} x_t + b_{ir} + W_{hr} h_{t-1} + b_{hr}\right) \\
# z_t &= \sigma\left(W_{iz} x_t + b_{iz} + W_{hz} h_{t-1} + b_{hz}\right) \\
# n_t &= \tanh\left(W_{in} x_t + b_{in} + r_t \odot \left(W_{hn} h_{t-1} + b_{hn}\right)\right) \\
# h_t &= (1 - z_t) \odot n_t + z_t \odot h_{t-1}
# \end{aligned}
# $$ (eq-ch05-gru)
#
# Two details are easy to get wrong. The reset gate multiplies $W_{hn} h_{t-1} + b_{hn}$,
# **bias included**; the published paper {cite}`cho2014learning` applies $r_t$ to $h_{t-1}$
# before the matrix product, $W_{hn}(r_t \odot h_{t-1})$, and PyTorch applies it after, which is
# a different function (checked below). And $z_t$ weighs the *old* state: $z_t = 1$ copies
# $h_{t-1}$ unchanged.


# %%
def gru_cell(x_t, h_prev, W):
    """Eq. (eq-ch05-gru): x_t (B, d), h_prev (B, H) -> h_t (B, H)."""
    r = torch.sigmoid(
        x_t @ W["W_ir"].T + W["b_ir"] + h_prev @ W["W_hr"].T + W["b_hr"]
    )  # reset (B, H)
    z = torch.sigmoid(
        x_t @ W["W_iz"].T + W["b_iz"] + h_prev @ W["W_hz"].T + W["b_hz"]
    )  # update (B, H)
    n = torch.tanh(
        x_t @ W["W_in"].T + W["b_in"] + r * (h_prev @ W["W_hn"].T + W["b_hn"])
    )  # candidate (B, H)
    return (1 - z) * n + z * h_prev


def run_gru(x, W):
    """Unroll gru_cell over time: x (B, T, d) -> outputs (B, T, H), h_T."""
    h = x.new_zeros(x.shape[0], W["W_hr"].shape[0])
    outs = []
    for t in range(x.shape[1]):
        h = gru_cell(x[:, t], h, W)
        outs.append(h)
    return torch.stack(outs, dim=1), h


ref_gru = nn.GRU(d, H, batch_first=True).double()
with torch.no_grad():
    g_out, g_h = run_gru(x, split_gates(ref_gru, 0, "rzn"))
    ref_g_out, ref_g_h = ref_gru(x)
torch.testing.assert_close(g_out, ref_g_out, atol=1e-6, rtol=0)
torch.testing.assert_close(g_h, ref_g_h[0], atol=1e-6, rtol=0)
gru_diff = (g_out - ref_g_out).abs().max().item()
dlbook.glue("gru_max_diff", gru_diff)
print(f"GRU from Eq. (eq-ch05-gru) == nn.GRU: max abs difference {gru_diff:.1e}")

# The paper's variant, reset gate applied to h before W_hn, is a different function:
W = split_gates(ref_gru, 0, "rzn")
h_prev, x0 = torch.randn(B, H, dtype=torch.float64), x[:, 0]
r = torch.sigmoid(x0 @ W["W_ir"].T + W["b_ir"] + h_prev @ W["W_hr"].T + W["b_hr"])
z = torch.sigmoid(x0 @ W["W_iz"].T + W["b_iz"] + h_prev @ W["W_hz"].T + W["b_hz"])
n_paper = torch.tanh(
    x0 @ W["W_in"].T + W["b_in"] + (r * h_prev) @ W["W_hn"].T + W["b_hn"]
)
with torch.no_grad():
    paper_h = (1 - z) * n_paper + z * h_prev
    torch_h = ref_gru.cpu()(x0[:, None], h_prev[None])[1][0]
paper_gap = (paper_h - torch_h).abs().max().item()
assert paper_gap > 1e-2  # a different function, not a rounding difference
print(
    f"reset before the product (paper) vs after (PyTorch): max abs difference "
    f"{paper_gap:.3f}"
)

# %% [markdown]
# Training uses the gradients, so the forward pass is half of the check. Autograd through our
# cells must give the gradients of PyTorch's fused `nn.LSTM` and `nn.GRU`, with respect to the
# input and to every weight and bias. The loss is any scalar function of the outputs; here the
# sum of their squares.

# %%
x_req = x.clone().requires_grad_(True)  # (B, T, d)
grad_diff = {}
for ref, run, order in [(ref_lstm, run_lstm, "ifgo"), (ref_gru, run_gru, "rzn")]:
    wrt = [x_req, *ref.parameters()]  # x, weight_ih, weight_hh, bias_ih, bias_hh
    ours_out, _ = run(x_req, split_gates(ref, 0, order))  # (B, T, H)
    theirs_out, _ = ref(x_req)  # (B, T, H)
    ours = torch.autograd.grad(ours_out.square().sum(), wrt)
    theirs = torch.autograd.grad(theirs_out.square().sum(), wrt)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    name = type(ref).__name__
    pairs = zip(ours, theirs, strict=True)
    grad_diff[name] = max((a - b).abs().max().item() for a, b in pairs)
    print(
        f"{name}: gradients w.r.t. x and its {len(wrt) - 1} parameter tensors agree, "
        f"max abs difference {grad_diff[name]:.1e}"
    )
dlbook.glue("lstm_grad_diff", grad_diff["LSTM"])
dlbook.glue("gru_grad_diff", grad_diff["GRU"])

# %% [markdown]
# ### The packaged cells
#
# `dlbook.nn.recurrent`, which chapter 4 started with the vanilla RNN, holds the same two cells
# with PyTorch's stacked layout, and multi-layer `LSTM` and `GRU` modules whose `from_torch`
# copies the weights of an `nn.LSTM` or `nn.GRU`. Below they are checked against our per-gate
# cells and against PyTorch on a two-layer network.

# %%
dlbook.show(LSTMCell)

# %%
dlbook.show(GRUCell)


# %%
def state_parts(state):
    """An LSTM's final state is the pair (h_n, c_n), a GRU's the tensor h_n alone."""
    return state if isinstance(state, tuple) else (state,)


torch.manual_seed(1)
x2 = torch.randn(4, 12, d, dtype=torch.float64)  # (batch, seq, input)
for ref_cls, ours_cls in [(nn.LSTM, LSTM), (nn.GRU, GRU)]:
    ref = ref_cls(d, H, num_layers=2, batch_first=True).double()
    packaged = ours_cls.from_torch(ref)
    with torch.no_grad():
        ours_out, ours_state = packaged(x2)  # (4, 12, H), each state part (2, 4, H)
        ref_out2, ref_state = ref(x2)
    torch.testing.assert_close(ours_out, ref_out2, atol=1e-6, rtol=0)
    ours_parts, ref_parts = state_parts(ours_state), state_parts(ref_state)
    for a, b in zip(ours_parts, ref_parts, strict=True):  # h_n, and c_n for the LSTM
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    print(f"dlbook {ours_cls.__name__} (2 layers) == nn.{ref_cls.__name__}")

# %%
# the packaged single cells agree with our per-gate cells too, h and c alike
zeros = x.new_zeros(B, H)  # (B, H)


def cell_weights(module):
    """nn.LSTM / nn.GRU layer-0 weights under the names of a single cell."""
    return {k.replace("_l0", ""): v for k, v in module.state_dict().items()}


lstm_1 = LSTMCell(d, H).double()
lstm_1.load_state_dict(cell_weights(ref_lstm))
gru_1 = GRUCell(d, H).double()
gru_1.load_state_dict(cell_weights(ref_gru))
with torch.no_grad():
    packaged_h, packaged_c = lstm_1(x[:, 0])
    cell_h, cell_c = lstm_cell(x[:, 0], zeros, zeros, split_gates(ref_lstm, 0, "ifgo"))
    packaged_gru = gru_1(x[:, 0])
    cell_gru = gru_cell(x[:, 0], zeros, split_gates(ref_gru, 0, "rzn"))
torch.testing.assert_close(packaged_h, cell_h)
torch.testing.assert_close(packaged_c, cell_c)
torch.testing.assert_close(packaged_gru, cell_gru)
print("dlbook LSTMCell == lstm_cell (h and c); dlbook GRUCell == gru_cell")

# %% [markdown]
# The gates cost parameters: an LSTM layer holds four RNN-sized blocks and a GRU three, so a
# layer has $k\,\left(H(d+H) + 2H\right)$ parameters with $k = 1, 3, 4$ for RNN, GRU and LSTM.

# %%
for cls, k in [(nn.RNN, 1), (nn.GRU, 3), (nn.LSTM, 4)]:
    counted = sum(p.numel() for p in cls(2, 32).parameters())
    assert counted == k * (32 * (2 + 32) + 2 * 32)
    print(
        f"{cls.__name__:5s} d=2, H=32: {counted:,} parameters = "
        f"{k} x {32 * (2 + 32) + 2 * 32:,}"
    )

# %% [markdown]
# ## 5.3 Why the gates help
#
# Follow the memory from one step to the next in Eq. {eq}`eq-ch05-lstm`. If we hold the
# previous output $h_{t-1}$ fixed, the only path from $c_{t-1}$ to $c_t$ is the product with the
# forget gate, so
#
# $$
# \left.\frac{\partial c_t}{\partial c_{t-1}}\right|_{h_{t-1}\ \text{fixed}} = \operatorname{diag}(f_t).
# $$ (eq-ch05-carousel)
#
# Compare the step Jacobian of the vanilla RNN in chapter 4, $\operatorname{diag}(1 - h_t^2)\,W_{hh}$. Along the
# memory there is **no weight matrix and no squashing derivative**, just a gate the network
# controls. Where the forget gate stays near 1, the memory (and the gradient flowing back along
# it) passes through many steps almost unchanged. In the original LSTM, which had no forget
# gate, this factor was exactly 1, and Hochreiter and Schmidhuber called the path the constant
# error carousel {cite}`hochreiter1997long`. The full Jacobian also has terms through $h_{t-1}$,
# which can still vanish; the path along the memory does not go through them. We check
# Eq. {eq}`eq-ch05-carousel` with autograd:

# %%
W_lstm = split_gates(ref_lstm, 0, "ifgo")
x_t, h_prev, c_prev = (
    x[:, 3],
    torch.randn(B, H, dtype=torch.float64),
    torch.randn(B, H, dtype=torch.float64),
)
for b in range(B):

    def new_memory(
        c, b=b
    ):  # c_{t-1} of example b (H,) -> c_t (H,), with h_{t-1} held fixed
        return lstm_cell(x_t[b : b + 1], h_prev[b : b + 1], c[None], W_lstm)[1][0]

    jac = torch.autograd.functional.jacobian(new_memory, c_prev[b])  # (H, H)
    f_t = torch.sigmoid(
        x_t[b] @ W_lstm["W_if"].T
        + W_lstm["b_if"]
        + h_prev[b] @ W_lstm["W_hf"].T
        + W_lstm["b_hf"]
    )
    torch.testing.assert_close(jac, torch.diag(f_t))
print("d c_t / d c_{t-1} with h_{t-1} fixed == diag(f_t), Eq. (eq-ch05-carousel)")

# %% [markdown]
# The GRU gets the same effect from its update gate: with $z_t$ near 1, $h_t \approx h_{t-1}$.
# A network *can* learn such gates; whether it does is an empirical question, so let us test it.
#
# ## 5.4 The adding problem
#
# The **adding problem**, here in a variant of the task of {cite}`hochreiter1997long`, is built
# to need a long memory and nothing else. Each input is a sequence of $T = $
# {glue:text}`add_len` steps with two channels: a random number $v_t \in [0, 1)$, and a marker
# $m_t$ that is 1 at exactly two steps (one in each half of the sequence) and 0 elsewhere. The
# target, read after the last step, is the sum of the two marked numbers, $y = \sum_t m_t v_t$.
# The first marker is at least $T/2$ steps before the end. A model that ignores the inputs can
# do no better than predict the mean, $E[y] = 1$; its mean squared error is the variance of a
# sum of two independent $U(0, 1)$ values:
#
# $$
# \mathrm{MSE}_{\text{baseline}} = \operatorname{Var}(v_a + v_b) = 2 \cdot \tfrac{1}{12} = \tfrac{1}{6} \approx 0.167 .
# $$ (eq-ch05-baseline)


# %%
def adding_batch(n, length, generator):
    """n sequences of the adding problem.

    Returns inputs (n, length, 2) = (value, marker) and targets (n,).
    """
    values = torch.rand(n, length, generator=generator)  # (n, T)
    first = torch.randint(
        0, length // 2, (n,), generator=generator
    )  # a marker in the first half
    second = torch.randint(
        length // 2, length, (n,), generator=generator
    )  # and one in the second half
    markers = torch.zeros(n, length)
    markers[torch.arange(n), first] = 1.0
    markers[torch.arange(n), second] = 1.0
    return torch.stack([values, markers], dim=-1), (values * markers).sum(dim=1)


x_test, y_test = adding_batch(
    sizes["add_test"], sizes["add_len"], torch.Generator().manual_seed(1234)
)
baseline_mse = ((y_test - 1.0) ** 2).mean().item()  # always predict E[y] = 1
dlbook.glue("add_len", sizes["add_len"])
dlbook.glue("add_steps", sizes["add_steps"])
dlbook.glue("add_eval_every", sizes["add_eval_every"])
dlbook.glue("baseline_mse", baseline_mse)
print("one sequence (first 8 steps):\n", x_test[0, :8].T)
print(
    f"target {y_test[0]:.3f}; baseline MSE on {len(y_test)} test sequences "
    f"{baseline_mse:.4f} vs 1/6 = {1 / 6:.4f}"
)
torch.testing.assert_close(baseline_mse, 1 / 6, atol=0.03, rtol=0)

# %% [markdown]
# Three kinds of model get the same budget of training: a vanilla RNN, an LSTM and a GRU, each
# with 32 hidden units, reading the sequence and predicting $y$ from the last hidden state with
# a linear layer. Each step draws a fresh batch of 64 sequences and takes an Adam step on the
# mean squared error with the gradient clipped at norm 1; every {glue:text}`add_eval_every`
# steps we measure the MSE on the fixed test set.
#
# The LSTM's forget-gate biases start at 1, so that a unit whose other inputs are near zero
# starts with $f_t = \sigma(1) \approx$ {glue:text}`sigmoid_1:.2f` rather than
# $\sigma(0) = 0.5$: the memory path of Eq. {eq}`eq-ch05-carousel` starts open. Gers et al.
# proposed a positive forget-gate bias when they introduced the gate {cite}`gers2000learning`,
# and Jozefowicz et al. found that a bias of 1 closed the gap they had measured between the LSTM
# and the GRU {cite}`jozefowicz2015empirical`. With PyTorch's default initialisation the two
# forget biases of a unit sum to at most {glue:text}`default_forget_max:.2f` in size here
# (measured below). Exercise {ref}`ch05-ex-forget-bias` measures what the choice changes on this
# task.

# %%
CELLS = {"RNN": nn.RNN, "LSTM": nn.LSTM, "GRU": nn.GRU}


class LastStepRegressor(nn.Module):
    """A recurrent layer over the sequence, then a linear read-out of the last
    hidden state."""

    def __init__(self, kind, n_in=2, hidden=32, forget_bias=1.0):
        super().__init__()
        self.rnn = CELLS[kind](n_in, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 1)
        if kind == "LSTM" and forget_bias is not None:  # None: PyTorch's initialisation
            with torch.no_grad():  # the forget gate: rows H..2H of i, f, g, o
                self.rnn.bias_ih_l0[hidden : 2 * hidden].fill_(forget_bias)
                self.rnn.bias_hh_l0[hidden : 2 * hidden].zero_()

    def forward(self, x):  # (B, T, n_in) -> (B,)
        states, _ = self.rnn(x)  # (B, T, hidden)
        return self.head(states[:, -1]).squeeze(-1)


def train_regressor(
    model,
    next_batch,
    steps,
    eval_every=None,
    x_eval=None,
    y_eval=None,
    lr=3e-3,
    clip=1.0,
    desc="training",
    show_progress=True,
    stop_below=None,
):
    """Adam on the MSE for `steps` steps; next_batch() gives (x, y).

    Returns the curve [(step, MSE on (x_eval, y_eval))], evaluated at step 0,
    every `eval_every` steps and at the end; without x_eval nothing is evaluated
    and the curve is empty. With `stop_below`, training stops at the first
    evaluation whose MSE is below it.
    """
    model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    curve = []
    evaluate = x_eval is not None

    def eval_mse():
        model.eval()
        with torch.no_grad():
            mse = ((model(x_eval.to(device)) - y_eval.to(device)) ** 2).mean().item()
        model.train()
        return mse

    if evaluate:
        curve.append((0, eval_mse()))
    bar = dlbook.progress(range(1, steps + 1), desc=desc, disable=not show_progress)
    for step in bar:
        xb, yb = next_batch()
        loss = ((model(xb.to(device)) - yb.to(device)) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        if evaluate and (step % eval_every == 0 or step == steps):
            curve.append((step, eval_mse()))
            if stop_below is not None and curve[-1][1] < stop_below:
                break
    model.eval()
    return curve


dlbook.glue("sigmoid_1", torch.sigmoid(torch.tensor(1.0)).item())
default = nn.LSTM(2, 32)  # PyTorch's initialisation
H_add = default.hidden_size
forget_rows = slice(H_add, 2 * H_add)  # i, f, g, o: the second block
default_forget = default.bias_ih_l0[forget_rows] + default.bias_hh_l0[forget_rows]
assert default_forget.abs().max() <= 2 / H_add**0.5  # two biases, each within 1/sqrt(H)
dlbook.glue("default_forget_max", default_forget.abs().max().item())

# %% [markdown]
# One run is not enough to call a difference between two models: another seed (other initial
# weights, other training sequences) can change the result. So every model is trained from
# {glue:text}`n_seeds` seeds. Within a seed, the three models see exactly the same training
# sequences, which makes the comparison **paired**: we compare the models seed by seed.

# %%
seeds = list(range(sizes["seeds"]))
T = sizes["add_len"]
dlbook.glue("n_seeds", len(seeds))
dlbook.glue("n_seeds_last", seeds[-1])
dlbook.glue("sweep_seeds", sizes["sweep_seeds"])


def train_adding(kind, seed, forget_bias=1.0, stop_below=None):
    """One model trained on the adding problem from `seed`: returns (model, curve)."""
    torch.manual_seed(seed)  # the initial weights
    model = LastStepRegressor(kind, forget_bias=forget_bias)
    batches = torch.Generator().manual_seed(seed)  # the same sequences for every model
    curve = train_regressor(
        model,
        lambda: adding_batch(64, T, batches),
        sizes["add_steps"],
        sizes["add_eval_every"],
        x_test,
        y_test,
        show_progress=False,
        stop_below=stop_below,
    )
    return model, curve


adding = {}  # (kind, seed) -> (model, [(step, test MSE)])
runs = [(kind, seed) for seed in seeds for kind in CELLS]
for kind, seed in dlbook.progress(runs, desc="adding problem, all runs"):
    adding[kind, seed] = train_adding(kind, seed)

# %%
fig, ax = plt.subplots(figsize=(7.5, 3.8), layout="constrained")
for (kind, seed), (_, curve) in adding.items():
    steps_, mses = zip(*curve, strict=True)
    color = {"RNN": "C0", "LSTM": "C1", "GRU": "C2"}[kind]
    ax.semilogy(steps_, mses, color=color, lw=1, label=kind if seed == 0 else None)
ax.axhline(baseline_mse, color="grey", ls="--", label="predict the mean\n(baseline)")
ax.set_xlabel("training step (batches of 64)")
ax.set_ylabel("test MSE")
ax.set_title(f"Adding problem, T = {T}: one line per seed")
ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the axes, off the curves
plt.show()

# %% [markdown]
# **Figure 5.1.** Test mean squared error (log scale) against the training step on the adding
# problem, one line per seed, for the RNN, the LSTM and the GRU; the dashed line is the baseline
# that always predicts the mean.
#
# From the curves we read two numbers per run: the final test error, and the first evaluated
# step at which the error was 5 times below the baseline ("never" if it did not get there
# within the budget). That threshold is below $1/12$, the variance of one marked value, which
# is the least error a model can reach that uses only one of the two marked values: a run
# below it uses both.


# %%
def steps_to_solve(curve, factor=5):
    """The first evaluated step with a test MSE `factor` times below the baseline."""
    return next((step for step, mse in curve if mse < baseline_mse / factor), None)


final_mse = {run: curve[-1][1] for run, (_, curve) in adding.items()}
solved_at = {run: steps_to_solve(curve) for run, (_, curve) in adding.items()}
print("final test MSE / first step 5x below the baseline, for each seed")
for kind in CELLS:
    when = [solved_at[kind, s] for s in seeds]
    when = ["never" if w is None else w for w in when]
    print(
        f"{kind:4s} "
        + "; ".join(
            f"{final_mse[kind, s]:.4f} / {w}" for s, w in zip(seeds, when, strict=True)
        )
    )

# %% [markdown]
# A difference between two models is interpreted only with an interval around it. For each seed
# we take the difference between the two models, and over the seeds the mean difference and its
# 95 % $t$ interval, $\bar d \pm t_{0.975,\,n-1}\, s_d / \sqrt{n}$
# (`dlbook.stats.seed_interval` computes it). With a few seeds the interval is wide; a
# difference whose interval contains 0 is no measurable difference.


# %%
def by_seed(table, kind, missing=None):
    """One value per seed; `missing` stands in for a None (a run that never solved)."""
    return [missing if table[kind, s] is None else table[kind, s] for s in seeds]


def solved_range(solved):
    """When the runs got 5x below the baseline, in words."""
    if min(solved) == max(solved):
        return f"at step {min(solved)} in every seed"
    return f"between steps {min(solved)} and {max(solved)}, depending on the seed"


ratio = {kind: [baseline_mse / m for m in by_seed(final_mse, kind)] for kind in CELLS}
dlbook.headline(
    "lstm_adding_ratio", min(ratio["LSTM"]), profile=profile, at_least=5.0, fmt="{:.0f}"
)
dlbook.glue("gru_adding_ratio", min(ratio["GRU"]))
# the RNN's best evaluation of any seed, at any evaluated step, not only the last
rnn_best = max(baseline_mse / mse for s in seeds for _, mse in adding["RNN", s][1])
dlbook.glue("rnn_adding_ratio", rnn_best)
# a run that never solved counts as solving at the end of its budget (conservative)
budget = sizes["add_steps"]
lstm_solved = by_seed(solved_at, "LSTM", budget)
gru_solved = by_seed(solved_at, "GRU", budget)
dlbook.glue("lstm_solved_when", solved_range(lstm_solved))
dlbook.glue("gru_solved_when", solved_range(gru_solved))
solve_gap = seed_interval(lstm_solved, gru_solved)  # LSTM minus GRU, steps
for name, value in [
    ("solve_gap", solve_gap.diff),
    ("solve_gap_lo", solve_gap.low),
    ("solve_gap_hi", solve_gap.high),
]:
    dlbook.glue(name, round(value, -1))  # the steps are on a grid of add_eval_every
# final errors: the mean log ratio over seeds is the log of the geometric-mean ratio
log_mse = {kind: np.log10(by_seed(final_mse, kind)) for kind in ("LSTM", "GRU")}
log_ratio = seed_interval(log_mse["LSTM"], log_mse["GRU"])
mse_factor, mse_factor_lo, mse_factor_hi = (
    10**v for v in (log_ratio.diff, log_ratio.low, log_ratio.high)
)
for name, value in [
    ("mse_factor", mse_factor),
    ("mse_factor_lo", mse_factor_lo),
    ("mse_factor_hi", mse_factor_hi),
]:
    dlbook.glue(name, value)
print(
    f"LSTM minus GRU, steps to 5x below the baseline: {solve_gap.diff:.0f} "
    f"(95 % interval {solve_gap.low:.0f} to {solve_gap.high:.0f})"
)
print(
    f"LSTM / GRU final MSE, geometric mean over seeds: {mse_factor:.2f} "
    f"(95 % interval {mse_factor_lo:.2f} to {mse_factor_hi:.2f})"
)
print(f"RNN: best evaluation of any seed {rnn_best:.2f} times below the baseline")


def plateau_before_solving(curve, solved):
    """Did the run sit near the baseline (MSE above 0.8 x baseline) before it solved?"""
    return any(0 < step < solved and mse > 0.8 * baseline_mse for step, mse in curve)


if profile == "full":
    assert min(ratio["GRU"]) >= 5, "the GRU should solve the task in every seed"
    assert rnn_best < 1.5, "the vanilla RNN should stay at the baseline"
    assert None not in [solved_at[k, s] for k in ("LSTM", "GRU") for s in seeds]
    assert all(
        plateau_before_solving(adding[k, s][1], solved_at[k, s])
        for k in ("LSTM", "GRU")
        for s in seeds
    )
    assert solve_gap.low > 0, "the GRU should leave the plateau measurably earlier"
    assert mse_factor_lo < 1 < mse_factor_hi, "seeds cannot tell the final MSEs apart"

# %% [markdown]
# In every seed the gated models solved the task and the vanilla RNN did not. The LSTM's final
# test error was at least {glue:text}`lstm_adding_ratio` times below the baseline of
# {glue:text}`baseline_mse:.3f` in each of the {glue:text}`n_seeds` seeds, the GRU's at least
# {glue:text}`gru_adding_ratio:.0f` times. The vanilla RNN, trained on exactly the same
# batches, stayed at the baseline: at no evaluated step of any seed was its error more than
# {glue:text}`rnn_adding_ratio:.2f` times below it. It has learned to predict about the mean and
# little more, which is what we expect when the signal that would tell it which early input
# mattered vanishes on the way back (chapter 4).
#
# The gated models needed a while too. Both sat on the baseline, like the RNN, before their
# error dropped. Evaluating every {glue:text}`add_eval_every` of {glue:text}`add_steps` steps,
# the LSTM got 5 times below the baseline {glue:text}`lstm_solved_when`, the GRU
# {glue:text}`gru_solved_when`. Paired by seed, the GRU got there {glue:text}`solve_gap:.0f`
# steps earlier on average (95 % interval {glue:text}`solve_gap_lo:.0f` to
# {glue:text}`solve_gap_hi:.0f`, rounded to tens): on this task, with this budget, it left the
# plateau measurably earlier than the LSTM started with forget bias 1. Their final errors are
# another matter. Over the seeds, the geometric mean of the ratio of the LSTM's final error to
# the GRU's is {glue:text}`mse_factor:.2f`, with a 95 % interval from
# {glue:text}`mse_factor_lo:.2f` to {glue:text}`mse_factor_hi:.2f`: the
# {glue:text}`n_seeds` seeds cannot tell the final errors apart, and ratios anywhere in that
# range are compatible with them. One small task settles little about the two cells in general;
# Chung et al. compared them on polyphonic music and speech modelling and found the gated units
# better than tanh units and neither of the two clearly better than the other
# {cite}`chung2014empirical`.
#
# Where do the trained models look? The gradient of the prediction with respect to each input
# value, $\partial \hat{y} / \partial v_t$, should be 1 at the two marked steps and 0 elsewhere
# for a perfect solution. First one test sequence, for the models of seed 0:


# %%
def input_sensitivity(model, x):
    """d y_hat / d v_t for every sequence and step: x (n, T, 2) -> (n, T)."""
    x = x.clone().to(device).requires_grad_(True)
    model.train()  # cuDNN differentiates RNNs only in train mode (no dropout here)
    (grad,) = torch.autograd.grad(model(x).sum(), x)  # y_hat[i] depends on x[i] only
    model.eval()
    return grad[..., 0].cpu()


marked = torch.nonzero(x_test[0, :, 1]).flatten().tolist()
fig, ax = plt.subplots(figsize=(7, 3.4))
for kind, style in [("RNN", "s-"), ("LSTM", "o-"), ("GRU", "^-")]:
    sens = input_sensitivity(adding[kind, 0][0], x_test[:1])[0]  # (T,)
    ax.plot(sens.numpy(), style, ms=3, lw=1, label=kind)
for t in marked:
    ax.axvline(t, color="grey", ls=":")
ax.set_xlabel("time step $t$ (dotted: the marked steps)")
ax.set_ylabel(r"$\partial \hat{y} / \partial v_t$")
ax.set_title("Sensitivity of the prediction to each input value, one test sequence")
ax.legend()
plt.show()

# %% [markdown]
# **Figure 5.2.** The sensitivity $\partial \hat{y} / \partial v_t$ of each model's prediction
# (seed 0) to the value at every step $t$ of one test sequence; dotted lines are at the two
# marked steps.
#
# One sequence illustrates; the claim needs many. Over 200 test sequences and every seed, we
# average the sensitivity at the first (far) and the second marked step, and the largest
# sensitivity, in size, at any unmarked step; and, since positive and negative sensitivities
# could cancel in an average, the mean size $|\partial \hat{y} / \partial v_t|$ at the far mark:

# %%
probe = x_test[:200]  # (200, T, 2)
is_marked = probe[..., 1].bool()  # (200, T), two True per row
sens_stats = {}
for kind in CELLS:
    for seed in seeds:
        sens = input_sensitivity(adding[kind, seed][0], probe)  # (200, T)
        at_marks = sens[is_marked].view(-1, 2)  # (200, 2): first marker, second marker
        elsewhere = sens.abs().masked_fill(is_marked, 0.0).amax(dim=1)  # (200,)
        first, second = at_marks.mean(dim=0).tolist()
        first_size = at_marks[:, 0].abs().mean().item()  # no cancelling of signs
        sens_stats[kind, seed] = (first, second, elsewhere.mean().item(), first_size)
    rows = [", ".join(f"{v:.2g}" for v in sens_stats[kind, s]) for s in seeds]
    print(
        f"{kind:4s} first mark, second mark, largest elsewhere, mean size at first: "
        + " | ".join(rows)
    )

gated = [sens_stats[k, s][:3] for k in ("LSTM", "GRU") for s in seeds]
dlbook.glue("gated_mark_low", min(min(a, b) for a, b, _ in gated))
dlbook.glue("gated_mark_high", max(max(a, b) for a, b, _ in gated))
dlbook.glue("gated_elsewhere", max(c for _, _, c in gated))
rnn_first_size = max(sens_stats["RNN", s][3] for s in seeds)  # the largest over seeds
dlbook.glue("rnn_first_mark", rnn_first_size)
if profile == "full":
    assert all(0.8 < a < 1.2 and 0.8 < b < 1.2 and c < 0.2 for a, b, c in gated)
    assert rnn_first_size < 0.1, "the far marked value should not reach the RNN"

# %% [markdown]
# The gated models have learned the rule. In every seed, the LSTM's and the GRU's average
# sensitivity at the marked steps, the far one included, lies between
# {glue:text}`gated_mark_low:.2f` and {glue:text}`gated_mark_high:.2f`, while the largest
# sensitivity at an unmarked step averages at most {glue:text}`gated_elsewhere:.2f`. The size of
# the RNN's sensitivity to the far marked value averages at most {glue:text}`rnn_first_mark:.0e`
# in any seed, against about 1 for the gated models: that value does not reach its prediction.
#
# ## 5.5 Forecasting CO2
#
# Now a real series: weekly CO2 concentration at Mauna Loa, 1958 to 2001 (from `statsmodels`;
# the {glue:text}`co2_filled` missing weeks are filled by linear interpolation in time). It has
# a trend and a yearly cycle: in the training years the yearly mean rose every year, by
# {glue:text}`co2_rise:.2f` ppm a year on average, and within each year the series swung by
# {glue:text}`co2_swing:.1f` ppm on average from its lowest to its highest week. The task: from
# the last 104 weeks, forecast each of the next 52 weeks. We hold out the final three years as
# the test stretch and forecast from every origin whose 52 target weeks all lie in it: from the
# last training week, whose next year opens the test stretch, to the week one year before the
# end. Every test target lies in the held-out stretch; the inputs of the early origins reach
# back into the training years, as they would for a real forecast.

# %%
co2 = assets.co2()
values = co2.to_numpy()  # (N,) ppm
WINDOW, HORIZON, TEST_WEEKS = 104, 52, 156
test_start = len(values) - TEST_WEEKS
print(
    f"{len(values)} weeks, {co2.index[0].date()} to {co2.index[-1].date()}; "
    f"{co2.attrs['filled']} weeks were filled"
)
print(f"test stretch: {co2.index[test_start].date()} onwards ({TEST_WEEKS} weeks)")

train_years = co2.iloc[:test_start].groupby(co2.index[:test_start].year)
whole = train_years.size() >= 52  # leave out the part-years at either end
yearly_rise = train_years.mean()[whole].diff().dropna()  # ppm per year
yearly_swing = train_years.agg(lambda w: w.max() - w.min())[whole]  # ppm within a year
assert (yearly_rise > 0).all()  # the yearly mean rose every year
dlbook.glue("co2_filled", co2.attrs["filled"])
dlbook.glue("co2_rise", yearly_rise.mean())
dlbook.glue("co2_swing", yearly_swing.mean())
print(
    f"yearly mean: +{yearly_rise.mean():.2f} ppm a year ({yearly_rise.min():.2f} to "
    f"{yearly_rise.max():.2f}); swing within a year {yearly_swing.mean():.1f} ppm"
)

fig, ax = plt.subplots(figsize=(7, 3))
ax.plot(co2.index[:test_start], values[:test_start], lw=0.8, label="training")
ax.plot(
    co2.index[test_start:],
    values[test_start:],
    lw=0.8,
    color="C3",
    label="held out (test)",
)
ax.set(
    xlabel="year (one value per week)",
    ylabel="CO2 (ppm)",
    title="Weekly CO2 at Mauna Loa: training and held-out years",
)
ax.legend()
plt.show()

# %% [markdown]
# **Figure 5.3.** The weekly CO2 series at Mauna Loa: the training years and the held-out test
# years (red).
#
# **Windowing.** A forecasting origin $t$ is a week at which we know $y_{\le t}$. The model reads
# the window $y_{t-103}, \dots, y_t$ and predicts $y_{t+1}, \dots, y_{t+52}$. Training origins
# are those whose whole target year ends before the test stretch; test origins are those whose
# targets lie in it.
#
# **Scaling.** Because of the trend, {glue:text}`co2_test_above:.0f` % of the test weeks lie
# above the highest week of the training years, so scaling raw levels into a fixed range learned
# on the training data would put many test inputs outside it. Instead each window is expressed
# relative to its own last value, $y_{t+h} - y_t$, and divided by one spread $s$ measured **on
# the training windows only**:
#
# $$
# \tilde{y}_{t+k} = \frac{y_{t+k} - y_t}{s}, \qquad k = -103, \dots, 52 .
# $$ (eq-ch05-scale)
#
# A forecast $\hat{\tilde{y}}$ is mapped back with $\hat{y}_{t+h} = y_t + s\,\hat{\tilde{y}}_{t+h}$.


# %%
def windows_at(origins):
    """Inputs (n, WINDOW) ending at each origin, targets (n, HORIZON) after it."""
    X = np.stack([values[t - WINDOW + 1 : t + 1] for t in origins])
    Y = np.stack([values[t + 1 : t + 1 + HORIZON] for t in origins])
    return X, Y


train_origins = np.arange(
    WINDOW - 1, test_start - HORIZON
)  # last target at test_start - 1
test_origins = np.arange(
    test_start - 1, len(values) - HORIZON
)  # first target at test_start
X_train, Y_train = windows_at(train_origins)
X_test, Y_test = windows_at(test_origins)
assert (
    train_origins[-1] + HORIZON < test_start <= test_origins[0] + 1
)  # no training target in the test stretch
above = values[test_start:] > values[:test_start].max()  # (156,) test weeks
dlbook.glue("co2_test_above", 100 * above.mean())

s = float((X_train - X_train[:, -1:]).std())  # the spread, from training windows only


def to_scaled(X, Y=None):
    last = X[:, -1:]
    return (X - last) / s, (None if Y is None else (Y - last) / s)


def from_scaled(Y_scaled, X):
    return X[:, -1:] + s * Y_scaled


xs_train, ys_train = to_scaled(X_train, Y_train)
xs_test, _ = to_scaled(X_test)
np.testing.assert_allclose(
    from_scaled(to_scaled(X_test, Y_test)[1], X_test), Y_test
)  # Eq. (eq-ch05-scale) inverts
print(
    f"{len(train_origins)} training windows, {len(test_origins)} test origins; "
    f"spread s = {s:.3f} ppm"
)

# %% [markdown]
# Two baselines first. The **seasonal-naive** forecast repeats last year: $\hat{y}_{t+h} =
# y_{t+h-52}$, always known at the origin because $h \le 52$. The **linear** model is least
# squares from the 104 scaled inputs (plus a constant) to the 52 scaled outputs, fitted on the
# training windows: a linear autoregression that can learn both the trend and the cycle.


# %%
def rmse(pred):
    return float(np.sqrt(((pred - Y_test) ** 2).mean()))


seasonal_naive = np.stack(
    [values[t + 1 - 52 : t + 1 - 52 + HORIZON] for t in test_origins]
)  # (n, 52)
A_train = np.hstack([xs_train, np.ones((len(xs_train), 1))])  # (n, 105)
coef, *_ = np.linalg.lstsq(A_train, ys_train, rcond=None)  # (105, 52)
linear = from_scaled(np.hstack([xs_test, np.ones((len(xs_test), 1))]) @ coef, X_test)
print(
    f"seasonal naive RMSE {rmse(seasonal_naive):.3f} ppm | "
    f"linear RMSE {rmse(linear):.3f} ppm"
)

# %% [markdown]
# The LSTM reads the 104 scaled values one week at a time (input size 1), and a linear layer maps
# its last hidden state to the 52 scaled forecasts. It trains on minibatches of 64 training
# windows drawn with a seeded generator; for lack of a separate validation stretch, the number of
# epochs is fixed in advance, not tuned on the test years. The two baselines are deterministic;
# the LSTM is trained from each of {glue:text}`co2_seeds` seeds.


# %%
class Forecaster(nn.Module):
    def __init__(self, hidden=32, horizon=HORIZON):
        super().__init__()
        self.lstm = nn.LSTM(1, hidden, batch_first=True)
        self.head = nn.Linear(hidden, horizon)

    def forward(self, x):  # (B, WINDOW) -> (B, HORIZON)
        states, _ = self.lstm(x[..., None])  # (B, WINDOW, hidden)
        return self.head(states[:, -1])


xt_train = torch.tensor(xs_train, dtype=torch.float32)  # (n, 104)
yt_train = torch.tensor(ys_train, dtype=torch.float32)  # (n, 52)
xt_test = torch.tensor(xs_test, dtype=torch.float32, device=device)
steps_per_epoch = math.ceil(len(xt_train) / 64)


def train_forecaster(seed):
    """An LSTM forecaster trained from `seed`: its test forecasts in ppm (n, 52)."""
    torch.manual_seed(seed)  # the initial weights
    draw = torch.Generator().manual_seed(seed)  # the minibatches

    def co2_batch():
        idx = torch.randint(0, len(xt_train), (64,), generator=draw)
        return xt_train[idx], yt_train[idx]

    model = Forecaster()
    train_regressor(
        model, co2_batch, sizes["co2_epochs"] * steps_per_epoch, show_progress=False
    )  # a fixed budget: no evaluation on the way
    with torch.no_grad():
        return from_scaled(model(xt_test).cpu().numpy(), X_test)


co2_seeds = list(range(sizes["co2_seeds"]))
dlbook.glue("co2_seeds", len(co2_seeds))
lstm_fcs = [train_forecaster(s) for s in dlbook.progress(co2_seeds, desc="CO2 LSTM")]
lstm_rmse = [rmse(fc) for fc in lstm_fcs]
lstm_fc = lstm_fcs[0]  # seed 0, for the plots
co2_rmse = {"seasonal naive": rmse(seasonal_naive), "linear": rmse(linear)}
dlbook.glue("co2_naive_bias", float((Y_test - seasonal_naive).mean()))  # ppm
dlbook.glue("co2_rmse_naive", co2_rmse["seasonal naive"])
dlbook.glue("co2_rmse_linear", co2_rmse["linear"])
dlbook.glue("co2_rmse_lstm_low", min(lstm_rmse))
dlbook.glue("co2_rmse_lstm_high", max(lstm_rmse))
for name, value in co2_rmse.items():
    print(
        f"{name:15s} RMSE {value:.3f} ppm "
        f"over {len(test_origins)} origins x {HORIZON} weeks"
    )
print("LSTM            RMSE by seed: " + ", ".join(f"{r:.3f}" for r in lstm_rmse))
vs_linear = seed_interval(lstm_rmse, [co2_rmse["linear"]] * len(co2_seeds))  # ppm
for name, value in [
    ("co2_gap", vs_linear.diff),
    ("co2_gap_lo", vs_linear.low),
    ("co2_gap_hi", vs_linear.high),
]:
    dlbook.glue(name, value)
print(
    f"LSTM minus linear: {vs_linear.diff:+.3f} ppm "
    f"(95 % interval {vs_linear.low:+.3f} to {vs_linear.high:+.3f})"
)
if profile == "full":
    assert max(lstm_rmse) < 0.75 * co2_rmse["seasonal naive"], "the LSTM beats naive"
    assert vs_linear.low > 0, "the linear autoregression is measurably more accurate"

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), layout="constrained")
k = len(test_origins) - 1  # the last origin: forecast the final year
weeks = co2.index[test_origins[k] + 1 : test_origins[k] + 1 + HORIZON]
axes[0].plot(
    co2.index[test_start - 52 :],
    values[test_start - 52 :],
    color="black",
    lw=1,
    label="observed",
)
for name, fc in [
    ("seasonal naive", seasonal_naive),
    ("linear", linear),
    ("LSTM", lstm_fc),
]:
    axes[0].plot(weeks, fc[k], lw=1.5, label=name)
axes[0].axvline(co2.index[test_origins[k]], color="grey", ls=":")
axes[0].set(ylabel="CO2 (ppm)", title="Forecast of the final year from its start")
axes[0].xaxis.set_major_locator(mdates.YearLocator())
axes[0].xaxis.set_major_formatter(mdates.DateFormatter("%Y"))
axes[0].legend(fontsize=8)
for name, fc in [
    ("seasonal naive", seasonal_naive),
    ("linear", linear),
    ("LSTM", lstm_fc),
]:
    axes[1].plot(
        np.arange(1, HORIZON + 1),
        np.sqrt(((fc - Y_test) ** 2).mean(axis=0)),
        label=name,
    )
axes[1].set(
    xlabel="weeks ahead $h$",
    ylabel="RMSE (ppm)",
    title="Error by horizon, all test origins",
)
axes[1].legend(fontsize=8)
plt.show()

# %% [markdown]
# **Figure 5.4.** Left: the observed series (black) and the forecasts of the final year, made at
# its origin (the dotted vertical line), by the seasonal naive rule, the linear autoregression
# and the LSTM (seed 0). Right: the RMSE of each against the number of weeks ahead, over all
# test origins.
#
# Repeating last year (seasonal naive, RMSE {glue:text}`co2_rmse_naive:.2f` ppm) misses a year
# of growth: its forecasts are {glue:text}`co2_naive_bias:.2f` ppm too low on average. The LSTM,
# reading the windows, does much better in every seed (RMSE {glue:text}`co2_rmse_lstm_low:.2f`
# to {glue:text}`co2_rmse_lstm_high:.2f` ppm). Yet the linear autoregression
# ({glue:text}`co2_rmse_linear:.2f` ppm) is more accurate still: over the seeds, the LSTM's
# RMSE is higher by {glue:text}`co2_gap:.2f` ppm on average (95 % interval
# {glue:text}`co2_gap_lo:.2f` to {glue:text}`co2_gap_hi:.2f`). A useful reminder: a recurrent
# network has to earn its place against a linear baseline, and on these three test years it
# does not (the interval covers the training seeds, not the choice of test years).
# Where the gated cells made the difference above was the adding problem, where the useful
# information sits at an unknown place far back and must be kept until needed.
#
# ## 5.6 Names again: RNN against LSTM
#
# Chapter 4 trained a vanilla RNN language model on the census names. We train it again here,
# with the same recipe (hidden size 128, Adam at $3 \times 10^{-3}$, batches of 64, clipping at
# 1, early stopping on the validation names), so that this chapter runs on its own, and an LSTM
# with the same recipe and the same hidden size, each from the {glue:text}`n_seeds` seeds. Both
# are scored by chapter 4's mean negative log-likelihood per character (`<eos>` included) on
# the same held-out test names.

# %%
names = assets.census_names()
vocab = charlm.CharVocab()
train_names = names["train"][: sizes["n_train"]]


def train_names_lm(cell, seed):
    """Chapter 4's recipe, `cell` layer: (model, history, test nats per character)."""
    torch.manual_seed(seed)  # the initial weights
    lm = charlm.RecurrentLM(len(vocab), embed_dim=32, hidden_size=128, cell=cell)
    hist = charlm.train_char_lm(
        lm,
        train_names,
        names["validation"],
        vocab,
        epochs=sizes["lm_epochs"],
        batch_size=64,
        lr=3e-3,
        device=device,
        seed=seed,
        grad_clip=1.0,
        restore_best=True,
        show_progress=False,
    )
    return lm, hist, charlm.loss_per_char(lm, names["test"], vocab, device)


lm_runs = {}  # (cell, seed) -> (model, history, test nats per character)
lm_jobs = [(cell, seed) for seed in seeds for cell in ("rnn", "lstm")]
for cell, seed in dlbook.progress(lm_jobs, desc="names, all runs"):
    lm_runs[cell, seed] = train_names_lm(cell, seed)
for cell in ("rnn", "lstm"):
    lm = lm_runs[cell, 0][0]
    n_all = sum(p.numel() for p in lm.parameters())
    n_rec = sum(p.numel() for p in lm.rnn.parameters())
    dlbook.glue(f"names_{cell}_params", n_all)
    dlbook.glue(f"names_{cell}_recurrent", n_rec)
    losses = ", ".join(f"{lm_runs[cell, s][2]:.3f}" for s in seeds)
    print(
        f"{cell.upper():4s}: {n_all:,} parameters ({n_rec:,} recurrent); "
        f"test nats/char by seed: {losses}"
    )

# %%
fig, ax = plt.subplots(figsize=(6.5, 3.6))
for (cell, seed), (_, hist, _) in lm_runs.items():
    label = cell.upper() if seed == 0 else None
    ax.plot(
        hist.val_epoch[1:],
        hist.val_loss[1:],
        "o-",
        ms=3,
        lw=1,
        color="C0" if cell == "rnn" else "C1",
        label=label,
    )
untrained = lm_runs["rnn", 0][1].val_loss[0]
ax.set_xlabel(f"epoch (the untrained loss, {untrained:.1f}, is left out)")
ax.set_ylabel("validation nats per character")
ax.set_title("Names: validation loss, one line per seed")
ax.legend()
plt.show()

# %% [markdown]
# **Figure 5.5.** Validation loss per character of the RNN and the LSTM language models on the
# names after each epoch, one line per seed (the untrained loss is left out).

# %%
rnn_names = [lm_runs["rnn", s][2] for s in seeds]
lstm_names = [lm_runs["lstm", s][2] for s in seeds]
names_gain = seed_interval(rnn_names, lstm_names)  # RNN minus LSTM, nats/char
mean_len = np.mean([len(n) for n in names["train"]])
dlbook.glue("names_max_len", max(len(n) for n in names["train"]))
for name, value in [
    ("names_rnn_test", np.mean(rnn_names)),
    ("names_lstm_test", np.mean(lstm_names)),
    ("names_gain", names_gain.diff),
    ("names_gain_lo", names_gain.low),
    ("names_gain_hi", names_gain.high),
    ("names_gain_pct", 100 * names_gain.diff / np.mean(rnn_names)),
    ("names_mean_len", mean_len),
]:
    dlbook.glue(name, value)
print(
    f"RNN minus LSTM: {names_gain.diff:.3f} nats/char "
    f"(95 % interval {names_gain.low:.3f} to {names_gain.high:.3f}); names average "
    f"{mean_len:.1f} letters"
)
if profile == "full":
    assert names_gain.low > 0, "the LSTM's gain should be measurable"
    assert names_gain.diff < 0.05 * np.mean(rnn_names), "small: under 5 % of the loss"
draw = torch.Generator().manual_seed(0)
samples = charlm.sample(lm_runs["lstm", 0][0], vocab, 10, 0.8, draw)
print("LSTM samples at temperature 0.8:", ", ".join(samples))

# %% [markdown]
# On the held-out names the LSTM reaches {glue:text}`names_lstm_test:.3f` nats per character
# on average over the seeds, against {glue:text}`names_rnn_test:.3f` for the RNN. Paired by
# seed, the LSTM is better by {glue:text}`names_gain:.3f` nats (95 % interval
# {glue:text}`names_gain_lo:.3f` to {glue:text}`names_gain_hi:.3f`), a measurable gain but a
# small one, {glue:text}`names_gain_pct:.1f` % of the RNN's loss, bought with four times as many
# recurrent parameters ({glue:text}`names_lstm_recurrent` against
# {glue:text}`names_rnn_recurrent`). The training names average {glue:text}`names_mean_len:.1f`
# letters and the longest has {glue:text}`names_max_len`, so every dependency inside a name
# spans far fewer steps than the adding problem's {glue:text}`add_len`, and on these names the
# vanilla RNN is not far behind (how the gap depends on distance is not measured here). The
# same split is used again for a Transformer language model in chapter 7.
#
# ## Summary
#
# - The LSTM, Eq. {eq}`eq-ch05-lstm`, and the GRU, Eq. {eq}`eq-ch05-gru`, written gate by gate,
#   reproduce `nn.LSTM` and `nn.GRU` in float64, forward to within
#   {glue:text}`lstm_max_diff:.0e` and {glue:text}`gru_max_diff:.0e` and backward (the gradients
#   of the input and of every weight) to within {glue:text}`lstm_grad_diff:.0e` and
#   {glue:text}`gru_grad_diff:.0e`, once their stacked weights are cut in the orders i, f, g, o
#   and r, z, n; PyTorch's GRU resets $W_{hn} h + b_{hn}$ *after* the product.
# - Along the LSTM's memory, the step Jacobian is just the forget gate,
#   Eq. {eq}`eq-ch05-carousel`: no weight matrix, no squashing derivative, so gradients can
#   survive many steps.
# - On the adding problem with $T = $ {glue:text}`add_len`, in each of {glue:text}`n_seeds`
#   seeds, the LSTM and the GRU ended at least {glue:text}`lstm_adding_ratio` and
#   {glue:text}`gru_adding_ratio:.0f` times below the error of predicting the mean, sensitive to
#   the two marked values and little else, while the vanilla RNN stayed at that baseline (never
#   more than {glue:text}`rnn_adding_ratio:.2f` times below it). The GRU left the initial
#   plateau measurably earlier than the LSTM started with forget bias 1; the seeds cannot tell
#   their final errors apart.
# - On CO2, with windows expressed relative to their last value and scaled by a spread measured
#   on training data only, the LSTM ({glue:text}`co2_rmse_lstm_low:.2f` to
#   {glue:text}`co2_rmse_lstm_high:.2f` ppm over the seeds) beat the seasonal-naive forecast
#   ({glue:text}`co2_rmse_naive:.2f`), and a linear autoregression
#   ({glue:text}`co2_rmse_linear:.2f`) was better still: ahead of the seasonal-naive forecast,
#   and measurably ahead of the LSTM over the seeds.
# - On names, which average {glue:text}`names_mean_len:.1f` letters, the LSTM's gain over the
#   RNN was measurable but small: {glue:text}`names_gain:.3f` nats per character, or
#   {glue:text}`names_gain_pct:.1f` % of the RNN's loss.
#
# ## Exercises
#
# :::{exercise}
# :label: ch05-ex-lstm-step
# Write `my_lstm_step(x, h, c, w_ih, w_hh, b_ih, b_hh)`: one step of Eq. {eq}`eq-ch05-lstm` with
# the weights stacked as PyTorch stores them (rows i, f, g, o; `w_ih` of shape (4H, d)). Return
# `(h_new, c_new)`. The check compares with the reference on hidden cases, including large
# weights; reading the gates in another order, or forgetting the tanh on the cell, fails.
# :::


# %%
def my_lstm_step(x, h, c, w_ih, w_hh, b_ih, b_hh):
    raise NotImplementedError  # your code here


dlbook.exercises.check("ch05.lstm_step", my_lstm_step)

# %% [markdown]
# ```{solution-start} ch05-ex-lstm-step
# :class: dropdown
# ```


# %% tags=["solution"]
def lstm_step_solution(x, h, c, w_ih, w_hh, b_ih, b_hh):
    i, f, g, o = (x @ w_ih.T + b_ih + h @ w_hh.T + b_hh).chunk(
        4, dim=-1
    )  # each (B, H), order i, f, g, o
    c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h_new = torch.sigmoid(o) * torch.tanh(c_new)
    return h_new, c_new


assert dlbook.exercises.check("ch05.lstm_step", lstm_step_solution)

# %% [markdown]
# ```{solution-end}
# ```
#
# :::{exercise}
# :label: ch05-ex-gru-step
# Write `my_gru_step(x, h, w_ih, w_hh, b_ih, b_hh)`: one step of Eq. {eq}`eq-ch05-gru` with
# PyTorch's stacked layout (rows r, z, n). Then change one line to apply the reset gate the
# paper's way, $W_{hn}(r_t \odot h_{t-1}) + b_{hn}$, and watch the check fail.
# :::


# %%
def my_gru_step(x, h, w_ih, w_hh, b_ih, b_hh):
    raise NotImplementedError  # your code here


dlbook.exercises.check("ch05.gru_step", my_gru_step)

# %% [markdown]
# ```{solution-start} ch05-ex-gru-step
# :class: dropdown
# ```


# %% tags=["solution"]
def gru_step_solution(x, h, w_ih, w_hh, b_ih, b_hh):
    i_r, i_z, i_n = (x @ w_ih.T + b_ih).chunk(3, dim=-1)  # input parts, each (B, H)
    h_r, h_z, h_n = (h @ w_hh.T + b_hh).chunk(
        3, dim=-1
    )  # recurrent parts, biases included
    r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)  # r multiplies W_hn h + b_hn
    return (1 - z) * n + z * h


assert dlbook.exercises.check("ch05.gru_step", gru_step_solution)

# %% [markdown]
# ```{solution-end}
# ```
#
# :::{exercise}
# :label: ch05-ex-windows
# Write `my_windows(series, window, horizon)` for a 1-D tensor: return `X` of shape (n, window)
# and `Y` of shape (n, horizon), where row $k$ holds `series[k : k + window]` and the `horizon`
# values that follow it, for every $k$ at which both fit. How many rows are there? (Off-by-one
# errors here silently drop data or, worse, let a target overlap its input.)
# :::


# %%
def my_windows(series, window, horizon):
    raise NotImplementedError  # your code here


dlbook.exercises.check("ch05.make_windows", my_windows)

# %% [markdown]
# ```{solution-start} ch05-ex-windows
# :class: dropdown
# ```
# A row needs `window + horizon` consecutive values. For a series of length $N$ the first row
# starts at $k = 0$ and the last at $k = N - \text{window} - \text{horizon}$, whose targets end
# on the last value, so there are $n = N - \text{window} - \text{horizon} + 1$ rows.
# `Tensor.unfold` cuts all of them at once:


# %% tags=["solution"]
def windows_solution(series, window, horizon):
    pieces = series.unfold(0, window + horizon, 1)  # (n, window + horizon)
    return pieces[:, :window], pieces[:, window:]


assert dlbook.exercises.check("ch05.make_windows", windows_solution)
X_demo, Y_demo = windows_solution(torch.arange(10.0), window=3, horizon=2)
assert X_demo.shape == (10 - 3 - 2 + 1, 3) and Y_demo.shape == (6, 2)
print(
    f"N = 10, window 3, horizon 2: {len(X_demo)} rows; the last is "
    f"{X_demo[-1].tolist()} -> {Y_demo[-1].tolist()}"
)

# %% [markdown]
# ```{solution-end}
# ```
#
# :::{exercise}
# :label: ch05-ex-params
# How many parameters do `nn.RNN(10, 20)`, `nn.GRU(10, 20)` and `nn.LSTM(10, 20)` have? To
# compare an LSTM and a GRU at equal size, what hidden size gives a GRU about the parameter
# count of an LSTM with $H = 20$ and $d = 10$?
# :::
#
# ```{solution-start} ch05-ex-params
# :class: dropdown
# ```
# One block is $H(d + H) + 2H = 20 \cdot 30 + 40 = 640$, so the RNN has 640, the GRU
# $3 \cdot 640 = 1{,}920$ and the LSTM $4 \cdot 640 = 2{,}560$. For a GRU,
# $3(H^2 + 10H + 2H) = 2{,}560$ gives $H^2 + 12H - 2{,}560/3 = 0$, whose positive root is
# $H = -6 + \sqrt{36 + 2{,}560/3} \approx$ {glue:text}`gru_equal_h:.1f`: a GRU with $H = 24$
# has {glue:text}`gru_24_params` parameters. The cell checks every number against PyTorch:


# %% tags=["solution"]
def n_params(module):
    return sum(p.numel() for p in module.parameters())


block = 20 * (10 + 20) + 2 * 20  # H(d + H) + 2H with d = 10, H = 20
counts = {cls.__name__: n_params(cls(10, 20)) for cls in (nn.RNN, nn.GRU, nn.LSTM)}
assert counts == {"RNN": block, "GRU": 3 * block, "LSTM": 4 * block}
root = -6 + math.sqrt(36 + 4 * block / 3)  # H^2 + 12 H - (4 block) / 3 = 0
assert math.isclose(3 * (root**2 + 12 * root), counts["LSTM"])
dlbook.glue("gru_equal_h", root)
dlbook.glue("gru_24_params", n_params(nn.GRU(10, 24)))
print(counts, f"equal-size GRU: H = {root:.2f}; H = 24: {n_params(nn.GRU(10, 24)):,}")

# %% [markdown]
# ```{solution-end}
# ```
#
#
# :::{exercise}
# :label: ch05-ex-forget-bias
# **The forget-gate bias, measured.** (a) Write `my_forget_bias(bias_ih, bias_hh, value)`:
# given the two bias vectors of an `nn.LSTM` layer (each of shape (4H,), rows i, f, g, o),
# return the two vectors with the forget gate's total bias $b_{if} + b_{hf}$ equal to `value`
# for every unit, all of it in `bias_ih` (the forget rows of `bias_hh` set to 0), every other
# row unchanged. (b) By Eq. {eq}`eq-ch05-carousel`, what fraction of a stored value survives the
# 25 steps from the middle of a sequence to its end if every forget gate stays at its initial
# value $\sigma(b)$, for $b = -2, 0, 1, 3$? (c) Measure what the bias changes on the adding
# problem: train the LSTM with forget biases $-2$, $0$, $1$ and $3$ from
# {glue:text}`sweep_seeds` seeds (`train_adding("LSTM", seed, forget_bias=b,
# stop_below=baseline_mse / 5)` stops a run once it is solved), and compare the steps each run
# needs to get 5 times below the baseline, paired by seed against bias 1. Which differences can
# you measure?
# :::


# %%
def my_forget_bias(bias_ih, bias_hh, value):
    raise NotImplementedError  # your code here


dlbook.exercises.check("ch05.forget_bias", my_forget_bias)

# %% [markdown]
# ```{solution-start} ch05-ex-forget-bias
# :class: dropdown
# ```
# (a) The forget gate is the second of the four blocks of $H$ rows, and the gate sees the sum
# of the two biases:


# %% tags=["solution"]
def forget_bias_solution(bias_ih, bias_hh, value):
    H = bias_ih.shape[0] // 4
    new_ih, new_hh = bias_ih.clone(), bias_hh.clone()
    new_ih[H : 2 * H] = value  # rows H..2H: the forget gate
    new_hh[H : 2 * H] = 0.0
    return new_ih, new_hh


assert dlbook.exercises.check("ch05.forget_bias", forget_bias_solution)
torch.manual_seed(0)
plain = LastStepRegressor("LSTM", forget_bias=None).rnn  # PyTorch's initialisation
torch.manual_seed(0)
ours = LastStepRegressor("LSTM", forget_bias=1.0).rnn  # what the chapter trained
for got, want in zip(
    forget_bias_solution(plain.bias_ih_l0, plain.bias_hh_l0, 1.0),
    (ours.bias_ih_l0, ours.bias_hh_l0),
    strict=True,
):
    torch.testing.assert_close(got, want)  # the same start as the chapter's LSTM

# %% [markdown]
# (b) Along the memory each step multiplies the stored value, and the gradient flowing back
# along it, by $f_t$; held at $\sigma(b)$ for 25 steps, $\sigma(b)^{25}$ survives:

# %% tags=["solution"]
biases = [-2.0, 0.0, 1.0, 3.0]
gate = {b: torch.sigmoid(torch.tensor(b)).item() for b in biases}
survives = {b: gate[b] ** 25 for b in biases}
for b in biases:
    print(f"bias {b:+.0f}: f = {gate[b]:.3f}, after 25 steps {survives[b]:.1e} remains")
for b, name in zip(biases, ["m2", "0", "1", "3"], strict=True):
    dlbook.glue(f"survives_{name}", survives[b])

# %% [markdown]
# (c) The runs with bias 1 from seeds 0 to {glue:text}`n_seeds_last` are the ones trained
# above; the others stop once solved. A run that never gets there counts as solving at the end
# of its budget, which can only shrink a difference. Three biases are compared with bias 1, so
# besides each 95 % interval, which holds for one comparison alone, we also give the interval
# that allows for the three comparisons together (Bonferroni: each at the level
# $1 - 0.05/3$).

# %% tags=["solution"]
sweep_seeds = list(range(sizes["sweep_seeds"]))
solve_steps = {(1.0, s): solved_at["LSTM", s] for s in seeds}  # trained above
jobs = [(b, s) for b in biases for s in sweep_seeds if (b, s) not in solve_steps]
for b, s in dlbook.progress(jobs, desc="forget-bias sweep"):
    _, curve = train_adding("LSTM", s, forget_bias=b, stop_below=baseline_mse / 5)
    solve_steps[b, s] = steps_to_solve(curve)
steps_by_bias = {
    b: [budget if solve_steps[b, s] is None else solve_steps[b, s] for s in sweep_seeds]
    for b in biases
}
others = [b for b in biases if b != 1.0]  # each compared with bias 1
adjusted_level = 1 - 0.05 / len(others)  # Bonferroni
alone, together = {}, {}
for b in biases:
    line = f"bias {b:+.0f}: steps to 5x below the baseline {steps_by_bias[b]}"
    if b != 1.0:
        alone[b] = seed_interval(steps_by_bias[b], steps_by_bias[1.0])
        together[b] = seed_interval(
            steps_by_bias[b], steps_by_bias[1.0], level=adjusted_level
        )
        a, t = alone[b], together[b]
        line += (
            f"; minus bias 1: {a.diff:+.0f} (95 % interval {a.low:+.0f} to "
            f"{a.high:+.0f}; allowing for three: {t.low:+.0f} to {t.high:+.0f})"
        )
    print(line)
n_solved = sum(v is not None for v in solve_steps.values())
print(
    f"{n_solved} of {len(solve_steps)} runs got 5x below the baseline "
    f"within {budget} steps"
)

# %% tags=["solution"]
# the numbers of the answer (c), and a verdict computed from the adjusted intervals
for b in others:
    name = {-2.0: "m2", 0.0: "0", 3.0: "3"}[b]
    a, t = alone[b], together[b]
    for suffix, value in [
        ("gap", a.diff),
        ("lo", a.low),
        ("hi", a.high),
        ("adj_lo", t.low),
        ("adj_hi", t.high),
    ]:
        dlbook.glue(f"sweep_{name}_{suffix}", value)


def effect(b):
    return f"bias {b:g} needing {'more' if alone[b].diff > 0 else 'fewer'} steps"


measured = [effect(b) for b in others if together[b].measurable]
suggested = [
    effect(b) for b in others if alone[b].measurable and not together[b].measurable
]
grid = (
    f"with {len(sweep_seeds)} seeds and steps counted on a grid of "
    f"{sizes['add_eval_every']}"
)
if measured:
    verb = "is" if len(measured) == 1 else "are"
    rest = "" if len(measured) == len(others) else ", the other differences are not"
    verdict = f"{' and '.join(measured)} {verb} measured{rest}"
elif suggested:
    verdict = (
        f"all three contain 0: {grid}, what the separate intervals single out "
        f"({'; '.join(suggested)}) is suggestive, not measured"
    )
else:
    verdict = f"all three contain 0: {grid}, no difference is measured"
dlbook.glue("sweep_verdict", verdict)
dlbook.glue("sweep_adjusted_level", 100 * adjusted_level)
dlbook.glue("sweep_solved", n_solved)
dlbook.glue("sweep_runs", len(solve_steps))
trained = adding["LSTM", 0][0].rnn  # started with every forget bias at 1
H_f = trained.hidden_size
f_bias = (trained.bias_ih_l0 + trained.bias_hh_l0).detach()[H_f : 2 * H_f]  # (H,)
dlbook.glue("trained_f_low", f_bias.min().item())
dlbook.glue("trained_f_high", f_bias.max().item())
print(f"allowing for three comparisons: {verdict}")
print(f"after training, seed 0: forget biases {f_bias.min():.2f} to {f_bias.max():.2f}")

# %% [markdown]
# Part (b) says that at their initial values the gates would keep almost nothing over 25 steps
# unless the bias is large: {glue:text}`survives_m2:.0e` of a stored value at bias $-2$,
# {glue:text}`survives_0:.0e` at 0, {glue:text}`survives_1:.0e` at 1 and
# {glue:text}`survives_3:.2f` at 3. Training says something else: {glue:text}`sweep_solved` of
# the {glue:text}`sweep_runs` runs, over all four biases, got 5 times below the baseline within
# the budget of {glue:text}`add_steps` steps. Paired by seed, the steps a run needed minus those
# of bias 1 were {glue:text}`sweep_m2_gap:+.0f` on average at bias $-2$ (95 % interval
# {glue:text}`sweep_m2_lo:+.0f` to {glue:text}`sweep_m2_hi:+.0f`), {glue:text}`sweep_0_gap:+.0f`
# at bias 0 ({glue:text}`sweep_0_lo:+.0f` to {glue:text}`sweep_0_hi:+.0f`) and
# {glue:text}`sweep_3_gap:+.0f` at bias 3 ({glue:text}`sweep_3_lo:+.0f` to
# {glue:text}`sweep_3_hi:+.0f`), each interval for one comparison alone. Allowing for the three
# comparisons, at the {glue:text}`sweep_adjusted_level:.1f` % level each, the intervals become
# {glue:text}`sweep_m2_adj_lo:+.0f` to {glue:text}`sweep_m2_adj_hi:+.0f`,
# {glue:text}`sweep_0_adj_lo:+.0f` to {glue:text}`sweep_0_adj_hi:+.0f` and
# {glue:text}`sweep_3_adj_lo:+.0f` to {glue:text}`sweep_3_adj_hi:+.0f`:
# {glue:text}`sweep_verdict`. Part (b) assumed gates held at their initial values, and training
# does not hold them there: the forget biases of the seed-0 LSTM of the comparison, all 1 at the
# start, range from {glue:text}`trained_f_low:.2f` to {glue:text}`trained_f_high:.2f` after
# training.
#
# ```{solution-end}
# ```
#
# ## Further reading
#
# - The LSTM and the constant error carousel: {cite}`hochreiter1997long`; why plain recurrent
#   networks struggle with long-term dependencies: {cite}`bengio1994learning`.
# - The forget gate, and a positive initial bias for it: {cite}`gers2000learning`.
# - The GRU, introduced with the RNN encoder-decoder for translation: {cite}`cho2014learning`;
#   an empirical comparison of LSTM, GRU and tanh units on polyphonic music and speech:
#   {cite}`chung2014empirical`; a search over thousands of recurrent architectures, with the
#   forget-bias result: {cite}`jozefowicz2015empirical`.
# - Gradient clipping and the geometry of exploding gradients: {cite}`pascanu2013difficulty`.
# - What character-level LSTMs learn, with visualisations of individual cells:
#   {cite}`karpathy2015unreasonable`.
