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
# (ch13)=
# # 13. Pruning
#
# A fine-tuned network holds many weights it barely uses. Pruning removes them. This chapter
# prunes the sentiment classifier of chapter 9 in several ways and measures what each buys:
# zeroing single weights (unstructured pruning), which leaves the model just as big and just as
# slow; removing whole attention heads and feed-forward neurons (structured pruning) or whole
# layers, which gives a smaller, faster model; and removing the rows of the word-embedding table
# that the task never uses, which shrinks the file without touching the computation.
#
# By the end of this chapter you can
#
# 1. write magnitude pruning (per layer and global) yourself, check it against
#    `torch.nn.utils.prune`, and read a sparsity-accuracy curve with and without a fine-tune after
#    pruning;
# 2. explain, with measurements, why zeros in a dense weight matrix save neither time nor disk,
#    and when a sparse storage format starts to pay;
# 3. score attention heads and feed-forward neurons by their first-order Taylor importance
#    (gradient times activation) on validation data;
# 4. remove heads and neurons by rebuilding smaller `nn.Linear` layers, check that this computes
#    exactly what masking them computes, and measure the size, speed and accuracy of the result;
# 5. drop whole layers and prune the vocabulary, choosing on validation, and say with paired
#    intervals what each costs in accuracy.

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
import os
import tempfile
import warnings

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import display
from torch import nn
from torch.nn.utils import prune as torch_prune
from transformers import BertModel

import dlbook
import dlbook.exercises
from dlbook import assets, distill, finetune, measure, memory, stats
from dlbook import prune as dprune
from dlbook.train import count_parameters
from dlbook.models import MLP

device = dlbook.setup(seed=0)

# %% tags=["parameters", "hide-input"]
profile = os.environ.get("DLBOOK_PROFILE", "full")

# %% tags=["hide-input"]
sizes = dlbook.by_profile(
    profile,
    smoke=dict(
        n_curve=64,
        curve_len=64,
        sparsities=[0.0, 0.5, 0.9],
        ft_sparsities=[0.9],
        n_ft=32,
        ft_lr=5e-5,
        scratch_epochs=2,
        n_probe=16,
        n_pex=32,
        n_random=2,
        n_val=64,
        min_layers=5,
        n_test=64,
        threads=2,
        warmup=1,
        rounds={1: 3, 32: 2},
    ),
    full=dict(
        n_curve=400,  # validation snippets of the sparsity curves and 13.7's halves
        curve_len=64,  # tokens per snippet: curves, their fine-tunes, 13.7's scores
        # sparsity levels of the curves (13.3, 13.4)
        sparsities=[0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9],
        ft_sparsities=[0.5, 0.8, 0.9],  # levels that also get a short fine-tune (13.4)
        n_ft=512,  # training snippets of that fine-tune (one epoch)
        ft_lr=1e-4,  # peak learning rate of that fine-tune (warm-up, linear decay)
        scratch_epochs=10,  # epochs of the digit network trained from scratch (13.4)
        n_probe=32,  # validation snippets for the checks by hand (13.6, 13.7, 13.10)
        n_pex=256,  # validation snippets: per-batch vs per-snippet importance (13.7)
        n_random=5,  # random halves compared with the half chosen by importance (13.7)
        n_val=None,  # validation snippets judging layer and word drops; None: all 1,000
        min_layers=3,  # fewest layers left when dropping whole layers (13.9)
        n_test=None,  # test snippets of 13.10's [UNK] count and 13.11; None: all 1,500
        threads=2,  # CPU threads for the timings, as in chapters 14 and 15
        warmup=2,  # untimed forward passes per model and batch size, before timing
        rounds={1: 20, 32: 10},  # timed forward passes per model, for each batch size
    ),
)
sizes

# %% [markdown]
# ## 13.1 What there is to prune
#
# We start from chapter 9's classifier (loaded from the cache, or trained on first use) and look
# at where its parameters are.

# %%
base, tokenizer, base_info = finetune.sentiment_classifier(profile, device=device)
base.eval()

groups = {
    "embeddings": base.bert.embeddings,
    "encoder": base.bert.encoder,
    "pooler + classifier": nn.ModuleList([base.bert.pooler, base.classifier]),
}
counts = {k: sum(p.numel() for p in m.parameters()) for k, m in groups.items()}
linear_weights = sum(m.weight.numel() for _, m in dprune.encoder_linears(base))
total = sum(counts.values())
for k, v in counts.items():
    print(f"{k:20s} {v:>11,d}  ({v / total:.1%})")
print(
    f"{'encoder linear W':20s} {linear_weights:>11,d}  "
    f"({linear_weights / total:.1%}): what this chapter prunes"
)
dlbook.glue("ch13_linear_share", linear_weights / total)
word_rows = base.bert.embeddings.word_embeddings.weight  # (30522, 384)
dlbook.glue("ch13_embed_share", word_rows.numel() / total)

# %% [markdown]
# The six encoder layers hold 36 linear layers (query, key, value and attention output, then the
# feed-forward `intermediate` and `output` projections of each layer) whose weight matrices are
# {glue:text}`ch13_linear_share:.0%` of the parameters. The word embeddings are
# {glue:text}`ch13_embed_share:.0%`: a lookup table, cheap to compute with, but they dominate the
# file size. We leave embeddings, pooler and classifier alone and prune the encoder's matrices:
# they are where the compute is.
#
# The data: a fixed subset of the validation split for the curves (every variant sees the same
# snippets), a training subset for the short fine-tunes, the validation split for every choice we
# make, and the test split for the final report, read once.

# %%
reviews = assets.rotten_tomatoes()


def take(split, n):
    """The first n rows of a split, or all of it for n=None.

    The splits are already shuffled.
    """
    return split if n is None else split.select(range(n))


curve_val = finetune.tokenize_dataset(
    take(reviews["validation"], sizes["n_curve"]), tokenizer, sizes["curve_len"]
)
ft_train = finetune.tokenize_dataset(
    take(reviews["train"], sizes["n_ft"]), tokenizer, sizes["curve_len"]
)
test_tok = finetune.tokenize_dataset(
    take(reviews["test"], sizes["n_test"]), tokenizer, 128
)


def correct_on(model, data=curve_val):
    """(N,) bool: which snippets of `data` the model classifies correctly."""
    result = finetune.evaluate_classifier(
        model, data, tokenizer, batch_size=64, device=device
    )
    return stats.correct(result.preds, result.labels)


def accuracy(model, data=curve_val):
    return float(correct_on(model, data).mean())


base_curve_correct = correct_on(base)
base_curve_acc = float(base_curve_correct.mean())
print(
    f"curve subset: {len(curve_val)} validation snippets | "
    f"fine-tune subset: {len(ft_train)} | "
    f"baseline accuracy on it {base_curve_acc:.3f}"
)

# %% [markdown]
# ## 13.2 Magnitude pruning
#
# The simplest rule, which Han et al. {cite}`han2015learning` showed to work on modern networks:
# a weight with a small absolute value
# contributes little, so set it to zero. For a weight matrix $W$ with $n$ entries and a target
# **sparsity** $s \in [0, 1)$, remove the $k = \operatorname{round}(s\,n)$ entries of smallest
# magnitude. Let $\tau$ be the $k$-th smallest $|W_{ij}|$; the **mask** and the pruned matrix are
#
# $$
# M_{ij} = \begin{cases} 0 & |W_{ij}| \le \tau \text{ (one of the } k \text{ smallest)} \\ 1 & \text{otherwise} \end{cases},
# \qquad W' = M \odot W .
# $$ (eq-ch13-mask)
#
# **Per layer** ("layer-wise"), each matrix gets its own $\tau$ and loses exactly the share $s$.
# **Globally**, one $\tau$ is computed over all $N$ weights of all 36 matrices together, and a
# layer whose weights are small overall loses more than $s$. Our version of Eq. {eq}`eq-ch13-mask`:


# %%
def my_magnitude_mask(w, sparsity):
    """0/1 mask of w's shape that zeros the round(sparsity * n) smallest |w|."""
    k = round(sparsity * w.numel())
    mask = torch.ones(w.numel(), device=w.device)
    if k > 0:
        smallest = w.detach().abs().flatten().topk(k, largest=False).indices  # (k,)
        mask[smallest] = 0
    return mask.view_as(w)


def my_global_masks(weights, sparsity):
    """One mask per tensor, from one ranking of |w| over all of them."""
    flat = torch.cat([w.detach().flatten() for w in weights])  # (N,)
    mask = my_magnitude_mask(flat, sparsity)
    return [
        m.view_as(w)
        for m, w in zip(mask.split([w.numel() for w in weights]), weights, strict=True)
    ]


w = base.bert.encoder.layer[0].intermediate.dense.weight  # (1536, 384)
m = my_magnitude_mask(w, 0.7)
print(
    f"{w.numel():,} weights, {int((m == 0).sum()):,} pruned "
    f"({(m == 0).float().mean():.1%}); "
    f"largest pruned |w| {w.abs()[m == 0].max():.4f} < "
    f"smallest kept |w| {w.abs()[m == 1].min():.4f}"
)

# %% [markdown]
# PyTorch implements the same rule in `torch.nn.utils.prune`. `l1_unstructured(module, "weight",
# amount=s)` does not change the weights: it renames the parameter to `weight_orig`, stores the
# mask as a buffer `weight_mask`, and installs a forward pre-hook that recomputes
# `weight = weight_orig * weight_mask` before every forward pass. `global_unstructured` does the
# same for many modules with one ranking. A check that our masks are exactly PyTorch's, per layer
# and globally, at several sparsities:

# %%
for s in (0.3, 0.7, 0.9):
    layer = copy.deepcopy(base.bert.encoder.layer[0].intermediate.dense)
    ours = my_magnitude_mask(layer.weight, s)
    torch_prune.l1_unstructured(layer, "weight", amount=s)
    assert torch.equal(ours, layer.weight_mask)
    torch.testing.assert_close(
        layer.weight, layer.weight_orig * layer.weight_mask
    )  # W' = M ⊙ W

    model = copy.deepcopy(base)
    linears = [mod for _, mod in dprune.encoder_linears(model)]  # 36 layers
    ours = my_global_masks([mod.weight for mod in linears], s)
    torch_prune.global_unstructured(
        [(mod, "weight") for mod in linears],
        pruning_method=torch_prune.L1Unstructured,
        amount=s,
    )
    for o, mod in zip(ours, linears, strict=True):
        assert torch.equal(o, mod.weight_mask)
print(
    "our masks == torch.nn.utils.prune's masks (l1_unstructured and "
    "global_unstructured, sparsity 0.3 / 0.7 / 0.9)"
)

# %% [markdown]
# The book's package has the same two functions, plus `prune_magnitude`, which applies
# `torch.nn.utils.prune` to all encoder linears in one call. Its masks agree with ours:

# %%
dlbook.show(dprune.magnitude_mask)

# %%
for s in (0.0, 0.5, 0.9):
    assert torch.equal(dprune.magnitude_mask(w, s), my_magnitude_mask(w, s))
    ws = [mod.weight for _, mod in dprune.encoder_linears(base)]
    for a, b in zip(
        dprune.global_magnitude_masks(ws, s), my_global_masks(ws, s), strict=True
    ):
        assert torch.equal(a, b)
print("dlbook.prune masks == ours")

# %% [markdown]
# Global pruning does not spread the zeros evenly. At 70 % global sparsity, the share each kind
# of matrix loses:

# %%
model = copy.deepcopy(base)
dprune.prune_magnitude(model, 0.7, scope="global")
by_kind = {}
for name, mod in dprune.encoder_linears(model):
    kind = name.split(".", 3)[3].removesuffix(".dense")  # e.g. attention.self.query
    by_kind.setdefault(kind, []).append(float((mod.weight == 0).float().mean()))
share = pd.Series(
    {k: float(np.mean(v)) for k, v in by_kind.items()},
    name="pruned share at 70% global",
)
display(share.to_frame().style.format("{:.1%}"))
dlbook.glue("ch13_global_max_share", share.max())
dlbook.glue("ch13_global_min_share", share.min())

# %% [markdown]
# The shares range from {glue:text}`ch13_global_min_share:.0%` to
# {glue:text}`ch13_global_max_share:.0%`: typical magnitudes differ by kind of matrix, and one
# global threshold follows them, while per-layer pruning forces the same share on all.
#
# ## 13.3 The sparsity-accuracy curve
#
# For each sparsity from 0 to 90 %, per layer and globally, we prune a copy of the classifier and
# measure accuracy on the fixed validation subset. No retraining yet.

# %%
curve = {scope: [] for scope in dprune.SCOPES}
curve_correct = {}  # (scope, sparsity) -> (N,) bool, for paired comparisons
for scope in dprune.SCOPES:
    for s in dlbook.progress(sizes["sparsities"], desc=f"{scope} pruning"):
        model = copy.deepcopy(base)
        if s > 0:
            dprune.prune_magnitude(model, s, scope=scope)
        curve_correct[scope, s] = correct_on(model)
        curve[scope].append(float(curve_correct[scope, s].mean()))
pd.DataFrame(curve, index=pd.Index(sizes["sparsities"], name="sparsity")).T.round(3)

# %% [markdown]
# ## 13.4 Pruning, then a short fine-tune
#
# The weights that remain were trained together with the ones now gone. A short fine-tune lets
# them adapt, with the masks **still attached**: the optimizer updates `weight_orig`, and the
# forward pass keeps using `weight_orig * weight_mask`, so a pruned weight stays zero however the
# gradient pushes it. After the fine-tune, `prune.remove` makes the zeros permanent (the module
# gets back a plain `weight` parameter). Han et al. {cite}`han2015learning` alternate pruning
# and retraining this way; the lottery-ticket experiments {cite}`frankle2019lottery` go further
# and retrain the surviving weights from their *initial* values.


# %%
def prune_and_finetune(sparsity, scope):
    """A copy of the classifier, magnitude-pruned, fine-tuned with the masks on.

    The masks are made permanent at the end.
    """
    model = copy.deepcopy(base)
    dprune.prune_magnitude(model, sparsity, scope=scope)
    finetune.train_classifier(
        model,
        ft_train,
        tokenizer,
        epochs=1,
        batch_size=32,
        lr=sizes["ft_lr"],
        seed=0,
        device=device,
        show_progress=False,
    )
    kept_zero = dprune.weight_sparsity(
        model
    )  # masks applied: exactly the target share is zero
    assert abs(kept_zero - sparsity) < 1e-3, (kept_zero, sparsity)
    dprune.remove_pruning(model)
    assert dprune.weight_sparsity(model) == kept_zero and not list(
        dprune.iter_pruned_modules(model)
    )
    return model


tuned = {scope: [] for scope in dprune.SCOPES}
tuned_models, tuned_correct = {}, {}
for scope in dprune.SCOPES:
    for s in dlbook.progress(sizes["ft_sparsities"], desc=f"{scope} + fine-tune"):
        tuned_models[scope, s] = prune_and_finetune(s, scope)
        tuned_correct[scope, s] = correct_on(tuned_models[scope, s])
        tuned[scope].append(float(tuned_correct[scope, s].mean()))
pd.DataFrame(tuned, index=pd.Index(sizes["ft_sparsities"], name="sparsity")).T.round(3)

# %%
majority = max(np.mean(curve_val["labels"]), 1 - np.mean(curve_val["labels"]))
fig, ax = plt.subplots(figsize=(7, 4))
for scope, color in zip(dprune.SCOPES, ("tab:blue", "tab:orange"), strict=True):
    ax.plot(
        sizes["sparsities"],
        curve[scope],
        "o-",
        color=color,
        label=f"{scope}-wise, no fine-tune",
    )
    ax.plot(
        sizes["ft_sparsities"],
        tuned[scope],
        "s--",
        color=color,
        label=f"{scope}-wise + short fine-tune",
    )
ax.axhline(base_curve_acc, color="gray", lw=0.8, label="unpruned")
ax.axhline(majority, color="gray", lw=0.8, ls=":", label="always the majority class")
ax.set_xlabel("sparsity of the encoder's linear weights")
ax.set_ylabel(f"accuracy on {len(curve_val)} validation snippets")
ax.set_title("magnitude pruning of the sentiment classifier")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# **Figure 13.1.** Validation accuracy against the sparsity of the encoder's linear weights,
# pruned by magnitude over the whole encoder (global) or layer by layer: solid without
# retraining, dashed after a short fine-tune with the masks kept. Grey lines: the unpruned
# model (solid) and always answering the majority class (dotted).

# %%
i90 = sizes["sparsities"].index(0.9)
j90 = sizes["ft_sparsities"].index(0.9)
i50 = sizes["sparsities"].index(0.5)
dlbook.glue("ch13_acc_base_curve", base_curve_acc)
dlbook.glue("ch13_n_ft", len(ft_train))
dlbook.glue("ch13_acc_global50", curve["global"][i50])
dlbook.glue("ch13_acc_layer50", curve["layer"][i50])
dlbook.glue("ch13_acc_global90", curve["global"][i90])
dlbook.glue("ch13_acc_layer90", curve["layer"][i90])
dlbook.glue("ch13_acc_global90_ft", tuned["global"][j90])
dlbook.glue("ch13_acc_layer90_ft", tuned["layer"][j90])
# unpruned - 50 % global, and the fine-tune's gain at 90 % global, paired
cmp50 = stats.compare(base_curve_correct, curve_correct["global", 0.5])
cmp_ft = stats.compare(tuned_correct["global", 0.9], curve_correct["global", 0.9])
print(
    "unpruned vs 50% global:", cmp50.verdict("the unpruned model", "the 50%-sparse one")
)
print("fine-tune at 90% global:", cmp_ft.verdict("fine-tuned", "not fine-tuned"))
dlbook.glue("ch13_drop50_ci", cmp50.interval.points())
dlbook.glue(
    "ch13_drop50_verdict",
    "a measurable drop" if cmp50.measurable else "no measurable difference",
)
dlbook.glue("ch13_ft_gain90_ci", cmp_ft.interval.points())
dlbook.glue("ch13_majority", float(majority))
print(f"always answering the majority class: {majority:.3f}")
# how one-sided the fine-tuned 90 %-sparse global model's answers are
ft90_preds = finetune.evaluate_classifier(
    tuned_models["global", 0.9], curve_val, tokenizer, batch_size=64, device=device
).preds
positive = float(np.asarray(ft90_preds).mean())  # share answered "positive"
one_side = max(positive, 1 - positive)
dlbook.glue("ch13_ft90_one_side", 100 * one_side)
print(f"fine-tuned 90% global model: {one_side:.1%} of its answers are one class")

# %% [markdown]
# Without retraining, at 50 % sparsity the accuracy on the validation subset is
# {glue:text}`ch13_acc_global50:.3f` (global) and {glue:text}`ch13_acc_layer50:.3f` (per layer),
# against {glue:text}`ch13_acc_base_curve:.3f` unpruned (unpruned minus global,
# {glue:text}`ch13_drop50_ci` points with its 95 % paired interval: {glue:text}`ch13_drop50_verdict`);
# at 90 % it is
# {glue:text}`ch13_acc_global90:.3f` and {glue:text}`ch13_acc_layer90:.3f`, where always answering
# the majority class scores {glue:text}`ch13_majority:.3f`. After the fine-tune on
# {glue:text}`ch13_n_ft` snippets (masks kept), the 90 %-sparse models score
# {glue:text}`ch13_acc_global90_ft:.3f` (global) and {glue:text}`ch13_acc_layer90_ft:.3f` (per
# layer), a change of {glue:text}`ch13_ft_gain90_ci` points for the global one (95 % paired
# interval). Read the dashed curves of Figure 13.1 against the majority rate (the dotted
# line): a model that answers one class for everything lands exactly on it, and the
# fine-tuned 90 %-sparse global model gives the same class for
# {glue:text}`ch13_ft90_one_side:.0f` % of the snippets. A fine-tune of a handful of optimizer
# steps does not repair a network this damaged, which is why Han et al.
# {cite}`han2015learning` alternate pruning with retraining, and why the structured model of
# section 13.8 gets a longer fine-tune.
#
# ### Whose magnitudes? Fine-tuned weights against weights trained from scratch
#
# Magnitude pruning was designed for networks trained from scratch {cite}`han2015learning`, where
# a weight is large because training on *this* task made it large. Chapter 9's classifier started
# from MiniLM's pretrained weights and was fine-tuned for one epoch. Sanh, Wolf and Rush
# {cite}`sanh2020movement` argue that fine-tuning moves the weights so little that their
# magnitudes are still mostly the pretrained ones: magnitude pruning of a fine-tuned model then
# decides by what pretraining found important, not by what the task needs. Their **movement
# pruning** keeps instead the weights that fine-tuning pushes away from zero (score
# $-\sum_t W \odot \partial L / \partial W$ accumulated during training, masks learned along
# the way), which needs a long fine-tune with the masks; here we measure the premise.
#
# Two measurements on each kind of network: how far training moved the weights, relative to
# where they started, and which weights a global magnitude mask removes when it ranks the
# *starting* weights instead of the trained ones. For the classifier the start is MiniLM as
# published; for contrast, a small network trained from a random start on MNIST digits (chapter 2's
# MLP, 784-256-10).

# %%
pretrained = BertModel.from_pretrained(assets.minilm_path()).eval()
start_w = [m.weight.detach() for _, m in dprune.encoder_linears(pretrained)]  # 36
tuned_w = [m.weight.detach().cpu() for _, m in dprune.encoder_linears(base)]


def relative_move(before, after):
    """||after - before|| / ||before|| over all the matrices together (Frobenius)."""
    num = sum(float((a - b).pow(2).sum()) for a, b in zip(after, before, strict=True))
    return (num / sum(float(b.pow(2).sum()) for b in before)) ** 0.5


def same_pruned(before, after, sparsity):
    """Share of the weights pruned on `after` that are pruned on `before` too."""

    def flat_mask(ws):
        masks = dprune.global_magnitude_masks(ws, sparsity)
        return torch.cat([m.flatten() for m in masks])

    pruned = flat_mask(after) == 0
    return float((flat_mask(before)[pruned] == 0).float().mean())


bert_move = relative_move(start_w, tuned_w)
bert_same = {s: same_pruned(start_w, tuned_w, s) for s in (0.5, 0.9)}
print(
    f"fine-tuning moved the encoder weights by {bert_move:.2%} of their norm; "
    f"pruned by both masks: {bert_same[0.5]:.1%} at 50 %, "
    f"{bert_same[0.9]:.1%} at 90 %"
)

# %% [markdown]
# The network trained from scratch, a few seconds of Adam on 4,000 digits:

# %%
digits = assets.mnist5k()
torch.manual_seed(0)
mlp = MLP(784, [256], 10)
mlp_linears = [lin for lin in mlp.modules() if isinstance(lin, nn.Linear)]
mlp_start = [lin.weight.detach().clone() for lin in mlp_linears]
opt = torch.optim.Adam(mlp.parameters(), lr=1e-3)
gen = torch.Generator().manual_seed(0)
for _ in dlbook.progress(range(sizes["scratch_epochs"]), desc="MLP from scratch"):
    for idx in torch.randperm(len(digits.x_train), generator=gen).split(128):
        logits = mlp(digits.x_train[idx])  # (128, 10)
        loss = nn.functional.cross_entropy(logits, digits.y_train[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
mlp_trained = [lin.weight.detach() for lin in mlp_linears]
mlp_move = relative_move(mlp_start, mlp_trained)
mlp_same = {s: same_pruned(mlp_start, mlp_trained, s) for s in (0.5, 0.9)}
print(
    f"training moved the MLP's weights by {mlp_move:.0%} of their norm; "
    f"pruned by both masks: {mlp_same[0.5]:.1%} at 50 %, {mlp_same[0.9]:.1%} at 90 %"
)

# %% [markdown]
# A mask drawn at random would share a fraction $s$ of its pruned weights with any other (50 % at
# $s = 0.5$), so that is the level of "no relation". Now the curve: each network pruned globally
# at every sparsity, once by the magnitudes of its trained weights and once by the magnitudes of
# its starting weights (the mask of the start, applied to the trained weights). If the two
# curves coincide, magnitude pruning is choosing by the start.


# %%
def prune_with_masks(linears, masks):
    """Multiply each linear's weight by its mask, in place."""
    with torch.no_grad():
        for lin, m in zip(linears, masks, strict=True):
            lin.weight.mul_(m.to(lin.weight.device))


def mlp_correct(model):
    with torch.no_grad():
        return stats.correct(model(digits.x_test).argmax(-1), digits.y_test)


start_curve = {"classifier": [], "MLP": []}
start_correct, mlp_own_correct = {}, {}
for s in dlbook.progress(sizes["sparsities"], desc="masks from the start"):
    model = copy.deepcopy(base)
    prune_with_masks(
        [m for _, m in dprune.encoder_linears(model)],
        dprune.global_magnitude_masks(start_w, s),
    )
    start_correct[s] = correct_on(model)
    start_curve["classifier"].append(float(start_correct[s].mean()))
    own, from_start = copy.deepcopy(mlp), copy.deepcopy(mlp)
    own_l, start_l = (
        [m for m in net.modules() if isinstance(m, nn.Linear)]
        for net in (own, from_start)
    )
    prune_with_masks(own_l, dprune.global_magnitude_masks(mlp_trained, s))
    prune_with_masks(start_l, dprune.global_magnitude_masks(mlp_start, s))
    mlp_own_correct[s] = mlp_correct(own)
    start_correct["MLP", s] = mlp_correct(from_start)
    start_curve["MLP"].append(float(start_correct["MLP", s].mean()))
mlp_own_curve = [float(mlp_own_correct[s].mean()) for s in sizes["sparsities"]]

# %%
fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
pairs = (
    ("fine-tuned classifier (validation)", curve["global"], start_curve["classifier"]),
    ("MLP trained from scratch (held-out digits)", mlp_own_curve, start_curve["MLP"]),
)
for ax, (title, own, start) in zip(axes, pairs, strict=True):
    ax.plot(sizes["sparsities"], own, "o-", label="mask from the trained weights")
    ax.plot(sizes["sparsities"], start, "s--", label="mask from the starting weights")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("global sparsity")
axes[0].set_ylabel("accuracy")
axes[0].legend(fontsize=8)
fig.suptitle("Magnitude pruning: does ranking the trained weights matter?", fontsize=10)
plt.tight_layout()
plt.show()

# %% [markdown]
# **Figure 13.2.** Accuracy against global sparsity when the mask ranks the trained weights
# (solid) or the weights before training (dashed). Left: the fine-tuned classifier on
# validation snippets; right: an MLP trained from scratch, on held-out digits.

# %%
top = max(sizes["sparsities"])
cmp_bert = stats.compare(curve_correct["global", top], start_correct[top])
cmp_mlp = stats.compare(mlp_own_correct[top], start_correct["MLP", top])
print(f"at {top:.0%}, classifier: {cmp_bert.verdict('trained mask', 'start mask')}")
print(f"at {top:.0%}, MLP: {cmp_mlp.verdict('trained mask', 'start mask')}")
dlbook.glue("ch13_bert_move", 100 * bert_move)
dlbook.glue("ch13_mlp_move", 100 * mlp_move)
dlbook.glue("ch13_bert_same50", 100 * bert_same[0.5])
dlbook.glue("ch13_bert_same90", 100 * bert_same[0.9])
dlbook.glue("ch13_mlp_same50", 100 * mlp_same[0.5])
dlbook.glue("ch13_mlp_same90", 100 * mlp_same[0.9])
dlbook.glue("ch13_top_sparsity", 100 * top)
dlbook.glue("ch13_bert_start_ci", cmp_bert.interval.points())
dlbook.glue("ch13_mlp_start_ci", cmp_mlp.interval.points())
dlbook.glue(
    "ch13_bert_start_verdict",
    cmp_bert.verdict("the trained mask", "the start's mask", numbers=False),
)
# the findings the text states: the fine-tune barely moves the weights, so its
# magnitude mask is nearly the pretrained model's; training from scratch moves them so
# far that the masks are close to unrelated, and the trained mask is then what keeps
# the network working
assert bert_move < 0.2 and bert_same[0.5] > 0.9, (bert_move, bert_same)
assert mlp_move > 0.5 and mlp_same[0.5] < 0.8, (mlp_move, mlp_same)
if profile == "full":
    assert cmp_mlp.measurable and cmp_mlp.interval.low > 0.1, cmp_mlp

# %% [markdown]
# Fine-tuning moved the classifier's encoder weights by {glue:text}`ch13_bert_move:.1f` % of
# their norm; training from scratch moved the MLP's by {glue:text}`ch13_mlp_move:.0f` %. So the
# classifier's magnitude mask is almost the pretrained model's: of the weights it removes at 50 %
# global sparsity, {glue:text}`ch13_bert_same50:.1f` % would have been removed from MiniLM
# before any fine-tune ({glue:text}`ch13_bert_same90:.1f` % at 90 %), against
# {glue:text}`ch13_mlp_same50:.0f` % for the MLP, much nearer the 50 % of unrelated masks
# ({glue:text}`ch13_mlp_same90:.0f` % at 90 %, against 90 %). Figure 13.2 says what that
# means. For the MLP, ranking the trained weights is what keeps it working: at
# {glue:text}`ch13_top_sparsity:.0f` % sparsity the trained mask beats the start's mask by
# {glue:text}`ch13_mlp_start_ci` points (95 % paired interval). For the classifier the two
# masks give nearly the same curve (at {glue:text}`ch13_top_sparsity:.0f` %:
# {glue:text}`ch13_bert_start_ci` points; {glue:text}`ch13_bert_start_verdict`): its magnitudes
# still carry what pretraining found, and pruning them removes what the *pretraining* task could
# spare. That is the premise of movement pruning {cite}`sanh2020movement`, which at high
# sparsity beats magnitude pruning on fine-tuned BERT in their experiments; implementing it means
# learning the scores during a fine-tune several epochs long, beyond this chapter's budget
# (exercise {ref}`ch13-ex-movement`).
#
# ## 13.5 Why zeros in a dense matrix buy nothing
#
# A 90 %-sparse model sounds ten times smaller. It is not: `nn.Linear` stores and multiplies a
# **dense** matrix, zeros included. A dense matrix multiply costs the same whatever the values
# are. We measure it with chapter 12's tools, on the 90 %-sparse global model after its fine-tune
# (masks removed): its saved size, and its latency against the unpruned model. Every timing in
# this chapter follows one protocol (`measure.interleaved_latency`): on the CPU, at
# `sizes["threads"]` threads, each model warmed up, then timed in rounds, one forward pass of each
# model per round, in turns (the order reversed every other round), so that a change in the
# machine's load hits all of them alike; we report medians with the (min, max) over the rounds.

# %%
cpu = torch.device("cpu")
sparse_dense = tuned_models["global", 0.9]


def on_cpu(model):
    """The model itself if it is on the CPU, else a copy there (the original stays)."""
    if measure.model_device(model).type == "cpu":
        return model.eval()
    return copy.deepcopy(model).to(cpu).eval()


cpu_models = {"unpruned": on_cpu(base), "90% zeros (dense)": on_cpu(sparse_dense)}
bench = measure.benchmark_batches(
    tokenizer, list(reviews["test"]["text"][:32]), batch_sizes=(1, 32), max_length=128
)


def timed(models, batches=bench):
    """{name: {batch size: Latency}}: the models timed in turns (chapter 12)."""
    return measure.interleaved_latency(
        models,
        batches,
        threads=sizes["threads"],
        rounds=sizes["rounds"],
        warmup=sizes["warmup"],
    )


def spread_text(lat):
    low, high = lat.spread
    return f"{lat.median:.1f} ms ({low:.1f}-{high:.1f})"


zeros_t = timed(cpu_models)
ratio_zeros = zeros_t["unpruned"][32].median / zeros_t["90% zeros (dense)"][32].median
for b in (1, 32):
    print(
        f"batch {b:2d}: unpruned {spread_text(zeros_t['unpruned'][b])} | "
        f"90% zeros {spread_text(zeros_t['90% zeros (dense)'][b])}"
    )
print(f"speed-up at batch 32: {ratio_zeros:.2f}x")
print(measure.provenance_line(sizes["threads"]))
print(
    f"saved size: unpruned {measure.saved_size_mb(base):.2f} MB | "
    f"90% zeros {measure.saved_size_mb(sparse_dense):.2f} MB"
)
cpu_class = dlbook.env.hardware_class("cpu")  # the timings ran on the CPU
dlbook.hardware_headline(
    "ch13_zeros_speedup", ratio_zeros, profile=profile, hardware=cpu_class
)
dlbook.glue("ch13_zeros_size", measure.saved_size_mb(sparse_dense))
dlbook.glue("ch13_base_size", measure.saved_size_mb(base))

# %% [markdown]
# The 90 %-sparse model ran at {glue:text}`ch13_zeros_speedup`× the unpruned one's speed at
# batch 32. A dense matrix product does the same multiplications whatever the values, zeros
# included, so no gain is to be expected, and a ratio near 1 is what the dense kernels give. Its file is
# {glue:text}`ch13_zeros_size:.1f` MB, the same as the original's {glue:text}`ch13_base_size:.1f` MB.
# Before `prune.remove` it is even larger, because the `state_dict` then holds both `weight_orig`
# and `weight_mask` for every pruned layer:

# %%
masked = copy.deepcopy(base)
dprune.prune_magnitude(masked, 0.9, scope="global")
print(
    f"with masks attached: {measure.saved_size_mb(masked):.1f} MB "
    f"(keys like {[k for k in masked.state_dict() if 'layer.0.intermediate' in k]})"
)


# %% [markdown]
# To store zeros cheaply, a sparse format keeps only the nonzero values and where they are.
# Compressed sparse rows (CSR) store, for an $r \times c$ matrix with $z$ nonzeros, the $z$ values
# (4 bytes each in float32), their $z$ column indices (8 bytes each as int64) and $r + 1$ row
# offsets: about $12z$ bytes against $4rc$ for the dense matrix, so CSR is smaller only when the
# density $z/(rc)$ is below one third. Measured on the encoder's linear weights at 50 % and 90 %,
# next to the formula (each array saved in its own storage: the column indices that
# `to_sparse_csr` returns are a view of a larger index array, which `torch.save` would write
# whole):


# %%
def csr_parts(w):
    """The three arrays of w in CSR, each in its own storage.

    to_sparse_csr's column indices are a view of a (2, nnz) index array, which
    torch.save would write whole.
    """
    with warnings.catch_warnings():  # sparse CSR support is marked beta
        warnings.simplefilter("ignore", UserWarning)
        csr = w.to_sparse_csr()
    return {
        "values": csr.values().clone(),  # (z,) float32
        "col": csr.col_indices().clone(),  # (z,) int64
        "crow": csr.crow_indices().clone(),
    }  # (r + 1,) int64


def encoder_weights_size(model, as_csr):
    """MB of a state_dict holding only the encoder's linear weights, dense or CSR."""
    linears = dprune.encoder_linears(model)
    state = {
        n: (csr_parts(m.weight.detach()) if as_csr else m.weight.detach())
        for n, m in linears
    }
    return measure.saved_size_mb(state)


def csr_formula_mb(model):
    """12 z + 8 (r + 1) bytes per matrix, in MB."""
    return (
        sum(
            12 * int((m.weight != 0).sum()) + 8 * (m.weight.shape[0] + 1)
            for _, m in dprune.encoder_linears(model)
        )
        / 1e6
    )


rows = {}
for s in (0.5, 0.9):
    model = copy.deepcopy(base)
    dprune.prune_magnitude(model, s, scope="global")
    dprune.remove_pruning(model)
    rows[f"{s:.0%} zeros"] = {
        "dense MB": encoder_weights_size(model, False),
        "CSR MB": encoder_weights_size(model, True),
        "12z + 8(r+1) MB": csr_formula_mb(model),
    }
csr = pd.DataFrame(rows).T
display(csr.round(2))
# the saved CSR arrays are what the formula counts, to 1 %
assert np.allclose(csr["CSR MB"], csr["12z + 8(r+1) MB"], rtol=0.01), csr
dlbook.glue(
    "ch13_csr90",
    float(csr.loc["90% zeros", "dense MB"] / csr.loc["90% zeros", "CSR MB"]),
)

# %% [markdown]
# At 50 % zeros CSR is *larger* than dense; at 90 % it is {glue:text}`ch13_csr90:.1f` times
# smaller. Speed is harder still: sparse kernels pay for irregular memory access and beat a dense
# multiply on a CPU only at very high sparsity, and GPUs accelerate only regular patterns such as
# two nonzeros in every four consecutive weights (the 2:4 exercise at the end of this chapter). The reliable way to
# a faster model on ordinary hardware is to remove whole rows and columns: **structured** pruning.
#
# ## 13.6 Heads and neurons: what structured pruning removes
#
# Write the attention output of one layer, for a token with per-head context vectors
# $c_1, \dots, c_H \in \mathbb{R}^{d}$ ($H = 12$ heads of $d = 32$), and its feed-forward block,
# with $W_O = [W_O^{(1)} \cdots W_O^{(H)}]$ split into the column blocks that meet each head, $w_j$
# the $j$-th row of the intermediate weight and $v_j$ the $j$-th column of the output weight:
#
# $$
# \operatorname{attn}(x) = \sum_{h=1}^{H} W_O^{(h)} c_h + b_O, \qquad
# \operatorname{ffn}(u) = \sum_{j=1}^{F} v_j \,\operatorname{gelu}(w_j^\top u + b_j) + b_2 .
# $$ (eq-ch13-sums)
#
# Both are **sums of independent terms**. Head $h$ owns its $d$ rows of the query, key and value
# projections and its $d$ columns of $W_O$; neuron $j$ owns row $j$ of the intermediate layer and
# column $j$ of the output layer. Dropping a term means deleting those rows and columns: the
# matrices shrink and every multiply gets cheaper. First a check of Eq. {eq}`eq-ch13-sums` on
# layer 0, term by term against the module's own output:

# %%
probe_texts = list(take(reviews["validation"], sizes["n_probe"])["text"])
probe = {
    k: v.to(device)
    for k, v in tokenizer(
        probe_texts, padding=True, truncation=True, max_length=64, return_tensors="pt"
    ).items()
}
layer0 = base.bert.encoder.layer[0]
seen = {}
hooks = [
    layer0.attention.output.dense.register_forward_pre_hook(
        lambda mod, a: seen.update(c=a[0])
    ),
    layer0.output.dense.register_forward_pre_hook(lambda mod, a: seen.update(g=a[0])),
]
with torch.no_grad():
    base(**probe)
for h in hooks:
    h.remove()

H, d = 12, dprune.head_size(base)
c = seen["c"]  # (batch, seq, H * d): the heads' context vectors side by side
W_O, b_O = (
    layer0.attention.output.dense.weight,
    layer0.attention.output.dense.bias,
)  # (384, H * d), (384,)
per_head = [
    c[..., h * d : (h + 1) * d] @ W_O[:, h * d : (h + 1) * d].T for h in range(H)
]  # H x (batch, seq, 384)
torch.testing.assert_close(
    sum(per_head) + b_O, layer0.attention.output.dense(c), atol=1e-4, rtol=1e-4
)
g = seen["g"]  # (batch, seq, F): the GELU activations
V, b_2 = layer0.output.dense.weight, layer0.output.dense.bias  # (384, F), (384,)
by_neuron = torch.einsum(
    "bsf,of->bso", g, V
)  # the sum over j of v_j * gelu_j, all at once
torch.testing.assert_close(
    by_neuron + b_2, layer0.output.dense(g), atol=1e-4, rtol=1e-4
)
print(
    f"attention output == sum of {H} per-head terms; "
    f"FFN output == sum over {g.shape[-1]} neurons"
)

# %% [markdown]
# ### Shrinking a layer by hand
#
# Keeping heads $\mathcal{K}$ keeps the columns `h*d ... h*d+d-1` for each $h \in \mathcal{K}$
# (as indices into the $H d$ outputs of query, key and value, and into the $H d$ inputs of the
# attention output); keeping neurons $\mathcal{J}$ keeps those rows of the intermediate layer and
# those columns of the output layer. `nn.Linear` stores its weight as (out, in), so "rows" of the
# math are rows of `weight` for the projections that produce the kept units and columns for the
# ones that consume them. Hugging Face's attention module reshapes its projections to
# `(..., -1, head_size)`, so it computes with however many heads the shapes hold; we only update
# its bookkeeping attributes.


# %%
def sliced_linear(old, index, dim):
    """A new nn.Linear keeping the output rows (dim=0) or input columns (dim=1)
    `index` of `old`."""
    w = old.weight.detach().index_select(dim, index)  # (out', in) or (out, in')
    new = nn.Linear(w.shape[1], w.shape[0]).to(w.device)
    with torch.no_grad():
        new.weight.copy_(w)
        new.bias.copy_(old.bias[index] if dim == 0 else old.bias)
    return new


def my_shrink_layer(layer, keep_heads, keep_neurons, d=32):
    """Remove the heads and FFN neurons not kept from one BertLayer, in place."""
    att = layer.attention.self
    cols = torch.cat([torch.arange(h * d, (h + 1) * d) for h in keep_heads]).to(
        device
    )  # (len(keep_heads) * d,)
    att.query, att.key, att.value = (
        sliced_linear(getattr(att, n), cols, 0) for n in ("query", "key", "value")
    )
    layer.attention.output.dense = sliced_linear(layer.attention.output.dense, cols, 1)
    att.num_attention_heads, att.all_head_size = len(keep_heads), len(cols)
    rows = torch.tensor(keep_neurons, device=device)
    layer.intermediate.dense = sliced_linear(layer.intermediate.dense, rows, 0)
    layer.output.dense = sliced_linear(layer.output.dense, rows, 1)


with torch.no_grad():
    reference_logits = base(**probe).logits  # (batch, 2)
    all_kept = copy.deepcopy(base)
    for layer in all_kept.bert.encoder.layer:
        my_shrink_layer(layer, range(12), list(range(1536)))
    torch.testing.assert_close(all_kept(**probe).logits, reference_logits)
print("keeping every head and neuron: the rebuilt model == the original")

# %% [markdown]
# Removing a unit must give exactly what **masking** it gives: the full model with that head's
# context vector, or that neuron's activation, multiplied by zero before the projection that
# consumes it. (Older versions of `transformers` had a `head_mask` argument for this; version 5
# dropped it, so we write the mask as a forward pre-hook.) We keep a random half of the heads and
# neurons in every layer and compare:

# %%
gen = torch.Generator().manual_seed(0)
keep_h = [sorted(torch.randperm(12, generator=gen)[:6].tolist()) for _ in range(6)]
keep_n = [sorted(torch.randperm(1536, generator=gen)[:768].tolist()) for _ in range(6)]


def mask_hook(keep, width, repeat):
    """A pre-hook that zeros the inputs of the units not in `keep`.

    Each unit spans `repeat` inputs.
    """
    gate = torch.zeros(width, device=device)
    gate[list(keep)] = 1
    gate = gate.repeat_interleave(repeat)  # (width * repeat,)
    return lambda module, args: (args[0] * gate,)


with torch.no_grad():
    handles = []
    for layer, kh, kn in zip(base.bert.encoder.layer, keep_h, keep_n, strict=True):
        handles.append(
            layer.attention.output.dense.register_forward_pre_hook(mask_hook(kh, 12, d))
        )
        handles.append(
            layer.output.dense.register_forward_pre_hook(mask_hook(kn, 1536, 1))
        )
    masked_logits = base(**probe).logits
    for h in handles:
        h.remove()
    ours_small = copy.deepcopy(base)
    for layer, kh, kn in zip(
        ours_small.bert.encoder.layer, keep_h, keep_n, strict=True
    ):
        my_shrink_layer(layer, kh, kn)
    torch.testing.assert_close(ours_small(**probe).logits, masked_logits)
    assert not torch.allclose(
        masked_logits, reference_logits, atol=1e-3
    )  # the mask did change the output
print("removing heads and neurons == masking them (and differs from the full model)")

# %% [markdown]
# The package's `shrink_bert` does the same for a whole model (on a copy, by default) and records
# which indices it kept; `dprune.Gates` is the masking hook as a reusable context manager. Both
# agree with ours:

# %%
dlbook.show(dprune.shrink_bert)

# %%
with torch.no_grad():
    packaged_small = dprune.shrink_bert(base, keep_h, keep_n)
    torch.testing.assert_close(
        packaged_small(**probe).logits, ours_small(**probe).logits
    )
    with dprune.Gates(base) as gates:
        gates.set_from_keep(keep_h, keep_n)
        torch.testing.assert_close(base(**probe).logits, masked_logits)
print(dprune.structure(packaged_small))

# %% [markdown]
# `BertConfig` has one head count and one FFN width for all layers and derives the head size as
# 384 / heads, so it cannot describe "6 heads of 32". `shrink_bert` therefore leaves the config's
# numbers as they are and writes the kept indices into `config.dlbook_pruning`;
# `dprune.load_pruned_bert(folder)` builds the full architecture, shrinks it to the recorded
# shapes and loads the weights strictly. This also allows a different number of heads in every
# layer. A round trip through `save_pretrained`:

# %%
with tempfile.TemporaryDirectory() as folder, torch.no_grad():
    packaged_small.save_pretrained(folder)
    reloaded = dprune.load_pruned_bert(folder).to(device)
    torch.testing.assert_close(reloaded(**probe).logits, packaged_small(**probe).logits)
print("save_pretrained -> load_pruned_bert gives the same logits")

# %% [markdown]
# ## 13.7 Which heads and neurons to remove: Taylor importance
#
# Put a gate $g_u$ on every unit $u$ (a head or a neuron) that multiplies its output $a_u$, as the
# mask above does, with $g_u = 1$ in the trained model. Removing $u$ sets $g_u = 0$. To first
# order in a Taylor expansion around $g = 1$, the loss changes by
#
# $$
# L(g_u = 0) - L(g_u = 1) \approx -\frac{\partial L}{\partial g_u}, \qquad
# \frac{\partial L}{\partial g_u} = \sum_{\text{tokens } t}\; \sum_{i \in u} \frac{\partial L}{\partial a_{t,i}}\, a_{t,i},
# $$ (eq-ch13-taylor)
#
# where the sum over $i$ runs over the unit's $d = 32$ coordinates for a head and the single
# activation for a neuron: **gradient times activation** {cite}`molchanov2019importance`. The
# importance of $u$ used here is
# $I_u = \sum_{\text{batches}} \lvert \partial L_{\text{batch}} / \partial g_u \rvert$, with
# $L_{\text{batch}}$ the summed loss of a batch of 32 snippets (Molchanov et al. square the gate
# gradient instead of taking its absolute value). The absolute value is taken per
# batch, so the signs of different snippets can cancel inside a batch first: the scores depend on
# the batch size, and only batches of one give a per-example score. Michel et al.
# {cite}`michel2019sixteen`, who find that many heads can go, score a head by the per-example
# expectation $\mathbb{E}_x \lvert \partial L(x) / \partial g_h \rvert$ and normalise the scores
# within each layer. That normalisation would not change what this chapter keeps, since it ranks
# units only within each layer (`dprune.top_k_per_layer`); the batch size might, and section 13.7
# measures by how much. The scores must come from
# **validation** data: choosing
# what to keep is fitting, and the test split only reports. One batch, by hand, with the
# activations and their gradients captured by hooks:


# %%
def taylor_by_hand(model, batch, labels):
    """|sum over tokens of grad * activation| per head and neuron, on one batch."""
    acts = []
    hooks = []
    for layer in model.bert.encoder.layer:
        for lin in (layer.attention.output.dense, layer.output.dense):
            hooks.append(
                lin.register_forward_pre_hook(lambda mod, a: acts.append(a[0]))
            )
    logits = model(**batch).logits
    for h in hooks:
        h.remove()
    loss = nn.functional.cross_entropy(logits, labels, reduction="sum")
    grads = torch.autograd.grad(loss, acts)
    heads, neurons = [], []
    for i in range(0, len(acts), 2):
        ga = (grads[i] * acts[i]).sum(
            dim=(0, 1)
        )  # (H * d,): summed over batch and tokens
        heads.append(ga.view(-1, d).sum(-1).abs())  # (H,)
        neurons.append((grads[i + 1] * acts[i + 1]).sum(dim=(0, 1)).abs())  # (F,)
    return torch.stack(heads), torch.stack(neurons)


probe_ds = finetune.tokenize_dataset(
    take(reviews["validation"], sizes["n_probe"]), tokenizer, 64
)
probe_labels = torch.tensor(probe_ds["labels"], device=device)
hand_heads, hand_neurons = taylor_by_hand(base, probe, probe_labels)
packaged = dprune.importance_scores(
    base, probe_ds, tokenizer, batch_size=sizes["n_probe"], device=device
)
torch.testing.assert_close(
    packaged.head_matrix(), hand_heads.detach().cpu(), atol=1e-5, rtol=1e-3
)
torch.testing.assert_close(
    torch.stack(packaged.neurons), hand_neurons.detach().cpu(), atol=1e-5, rtol=1e-3
)
print(
    "d L / d gate (packaged) == sum of gradient x activation (by hand), "
    "for all heads and neurons"
)

# %% [markdown]
# `importance_scores` differentiates with respect to the gates of `dprune.Gates` directly; the
# check above confirms it computes Eq. {eq}`eq-ch13-taylor`. Now the real scores, on the
# validation snippets that the packaged recipe uses, and the half of each layer that the recipe
# keeps (the same six heads and 768 neurons per layer, so every layer does the same work):

# %%
settings = dprune.PRUNE_SETTINGS[profile]
print(settings)
val_tok = finetune.tokenize_dataset(
    take(reviews["validation"], settings.n_importance), tokenizer, settings.max_length
)
scores = dprune.importance_scores(
    base, val_tok, tokenizer, device=device, show_progress=True
)
keep_heads = dprune.top_k_per_layer(scores.heads, settings.keep_heads)
keep_neurons = dprune.top_k_per_layer(scores.neurons, settings.keep_neurons)

fig, ax = plt.subplots(figsize=(7, 3))
hm = scores.head_matrix()
im = ax.imshow(hm / hm.sum(1, keepdim=True), cmap="viridis")
for layer, kept in enumerate(keep_heads):
    ax.scatter(
        kept,
        [layer] * len(kept),
        marker="o",
        facecolors="none",
        edgecolors="white",
        s=60,
    )
ax.set_xlabel("head")
ax.set_ylabel("layer")
ax.set_title(
    "Taylor importance of each head (share of its layer); circles = kept", fontsize=10
)
fig.colorbar(im, ax=ax)
plt.show()

# %% [markdown]
# **Figure 13.3.** The Taylor importance of each attention head as a share of its layer's
# total (each row sums to 1); white circles mark the heads the recipe keeps in each layer.
#
# These are the per-batch scores (batches of 32). Michel et al.'s per-snippet version needs no
# batches of one: `per_example=True` gives every snippet its own gates, a (batch, units) tensor,
# so one backward pass returns each snippet's $\partial L(x)/\partial g_u$. On the same
# validation snippets, how many of the units each version keeps are the same?

# %%
pex_tok = finetune.tokenize_dataset(
    take(reviews["validation"], sizes["n_pex"]), tokenizer, sizes["curve_len"]
)
by_batch = dprune.importance_scores(
    base, pex_tok, tokenizer, batch_size=32, device=device
)
by_snippet = dprune.importance_scores(
    base, pex_tok, tokenizer, batch_size=32, per_example=True, device=device
)


def kept_overlap(a, b, k):
    """Share of the top-k units per layer that two score lists both keep."""
    ka, kb = dprune.top_k_per_layer(a, k), dprune.top_k_per_layer(b, k)
    return np.mean([len(set(x) & set(y)) / k for x, y in zip(ka, kb, strict=True)])


same_heads = kept_overlap(by_batch.heads, by_snippet.heads, settings.keep_heads)
same_neurons = kept_overlap(by_batch.neurons, by_snippet.neurons, settings.keep_neurons)
print(
    f"{len(pex_tok)} snippets: per batch of 32 and per snippet keep the same "
    f"{same_heads:.0%} of heads and {same_neurons:.0%} of neurons "
    "(two random halves: 50 %)"
)
dlbook.glue("ch13_pex_n", len(pex_tok))
dlbook.glue("ch13_pex_heads", 100 * same_heads)
dlbook.glue("ch13_pex_neurons", 100 * same_neurons)

# %% [markdown]
# On {glue:text}`ch13_pex_n` validation snippets the two versions keep
# {glue:text}`ch13_pex_heads:.0f` % of the same heads and {glue:text}`ch13_pex_neurons:.0f` % of
# the same neurons (two unrelated halves would share 50 %). The recipe of this chapter uses the
# per-batch scores.

# %% [markdown]
# Does the score matter? Remove the same amount, half of the heads and neurons of every layer,
# once by importance and once at random, and compare before any fine-tune:


# %%
def random_half(seed):
    """Six of 12 heads and 768 of 1,536 neurons per layer, drawn at random."""
    g = torch.Generator().manual_seed(seed)
    heads = [sorted(torch.randperm(12, generator=g)[:6].tolist()) for _ in range(6)]
    neurons = [
        sorted(torch.randperm(1536, generator=g)[:768].tolist()) for _ in range(6)
    ]
    return heads, neurons


by_taylor = dprune.shrink_bert(base, keep_heads, keep_neurons)
taylor_correct = correct_on(by_taylor)
acc_taylor = float(taylor_correct.mean())
draws = [(keep_h, keep_n)] + [random_half(seed) for seed in range(1, sizes["n_random"])]
random_rows = []
for i, (kh, kn) in enumerate(dlbook.progress(draws, desc="random halves")):
    corr = correct_on(dprune.shrink_bert(base, kh, kn))
    cmp = stats.compare(taylor_correct, corr)  # by importance - this random half
    random_rows.append(
        {
            "random half": i,
            "accuracy": corr.mean(),
            "importance - random (points) [95% CI]": cmp.interval.points(),
            "importance better": cmp.measurable and cmp.interval.diff > 0,
        }
    )
random_table = pd.DataFrame(random_rows).set_index("random half")
display(random_table.style.format({"accuracy": "{:.3f}"}))
acc_random = random_table["accuracy"]
n_beaten = int(random_table["importance better"].sum())
print(
    f"no fine-tune: by importance {acc_taylor:.3f} | {len(draws)} random halves "
    f"{acc_random.min():.3f}-{acc_random.max():.3f} | unpruned {base_curve_acc:.3f}"
)
dlbook.glue("ch13_n_random", len(draws))
dlbook.glue("ch13_n_beaten", n_beaten)
dlbook.glue("ch13_acc_taylor_noft", acc_taylor)
dlbook.glue("ch13_acc_random_min", float(acc_random.min()))
dlbook.glue("ch13_acc_random_max", float(acc_random.max()))

# %% [markdown]
# By importance the halved model keeps {glue:text}`ch13_acc_taylor_noft:.3f` accuracy on the
# validation subset; {glue:text}`ch13_n_random` random halves score from
# {glue:text}`ch13_acc_random_min:.3f` to {glue:text}`ch13_acc_random_max:.3f` (unpruned:
# {glue:text}`ch13_acc_base_curve:.3f`), and the importance-chosen half is measurably better
# than {glue:text}`ch13_n_beaten` of them (paired intervals in the table). One random draw
# would not do as the baseline: the draws differ among themselves. The importance scores came
# from validation snippets that include this subset, which favours the importance-chosen half.
# Halving the encoder's width is a large cut; the short fine-tune of the next section repairs
# what it can.
#
# ## 13.8 The pruned classifier
#
# `dprune.pruned_classifier(profile)` packages the recipe: importance on the validation split,
# half of the heads and neurons of every layer removed, one epoch of fine-tuning on a training
# subset (sizes in the settings printed above). It is trained once and cached, so chapter 15 can
# load it. We check that it has exactly the structure computed here.

# %%
dlbook.show(dprune.pruned_classifier)

# %%
small, small_tok, small_info = dprune.pruned_classifier(profile, device=device)
assert small.config.dlbook_pruning == {"heads": keep_heads, "neurons": keep_neurons}
print(dprune.structure(small))
where = small_info.get("trained_on")
print(
    "validation accuracy right after pruning "
    f"{small_info['val_acc_before_finetune']:.3f} -> "
    f"after the fine-tune {small_info['val_acc_after_finetune']:.3f} "
    f"({small_info['history']['total_steps']} steps, "
    f"{small_info['history']['seconds']:.0f} s"
    + (f" on {where})" if where and where != "not recorded" else ")")
)
dlbook.glue("ch13_small_val_before", small_info["val_acc_before_finetune"])
dlbook.glue("ch13_small_val_after", small_info["val_acc_after_finetune"])

# %% [markdown]
# Its validation accuracy is {glue:text}`ch13_small_val_before:.3f` right after pruning and
# {glue:text}`ch13_small_val_after:.3f` after the fine-tune (the validation split also chose the
# heads and neurons, so both are optimistic); the unbiased number is its test accuracy in
# section 13.11, where it meets the other variants.
#
# ## 13.9 Dropping whole layers
#
# Each BERT layer adds its output to a residual stream: $h_{l+1} = \operatorname{LN}(h_l +
# \operatorname{block}_l(h_l))$, schematically. Removing a layer therefore leaves a network that
# still runs, reading the next layer's input from one layer earlier. Which layers can go? A
# greedy search on validation: remove, one at a time, each remaining layer, keep the removal that
# costs the least validation accuracy, and repeat (no fine-tune after dropping). Chapter 14 builds
# its shallower students the same way, with `distill.student_from_teacher(model, layers)`, which
# copies the kept layers in order.

# %%
val_all = finetune.tokenize_dataset(
    take(reviews["validation"], sizes["n_val"]), tokenizer, 128
)
base_val_correct = correct_on(base, val_all)
kept_layers = list(range(base.config.num_hidden_layers))
path = [(tuple(kept_layers), base_val_correct)]  # (layers kept, (N,) bool correct)
while len(kept_layers) > sizes["min_layers"]:
    trials = {}
    desc = f"{len(kept_layers) - 1} layers"
    for drop in dlbook.progress(kept_layers, desc=desc, leave=False):
        rest = [k for k in kept_layers if k != drop]
        trials[drop] = correct_on(distill.student_from_teacher(base, rest), val_all)
    # the removal that costs least; on a tie, drop the later layer
    drop = max(trials, key=lambda k: (trials[k].mean(), -k))
    kept_layers.remove(drop)
    path.append((tuple(kept_layers), trials[drop]))

rows = []
for layers, corr in path:
    cmp = stats.compare(base_val_correct, corr)  # unpruned - shallower, paired
    first = len(layers) == len(path[0][0])  # the unpruned model itself
    rows.append(
        {
            "layers kept": str(list(layers)),
            "n": len(layers),
            "val accuracy": corr.mean(),
            "drop (points) [95% CI]": "" if first else cmp.interval.points(),
            "measurable": cmp.measurable,
        }
    )
depth = pd.DataFrame(rows).set_index("n")
display(depth.style.format({"val accuracy": "{:.3f}"}))

# %% [markdown]
# The validation snippets chose each step, so the accuracies in this table are optimistic for
# the chosen layers; the test split, which chose nothing, gives the unbiased number below. The
# rule that picks the depth: the fewest layers whose validation drop is not measurable (interval
# and McNemar's test, `dlbook.stats.compare`); if every depth tried loses measurably, one layer
# goes.

# %%
fine = [
    layers
    for layers, corr in path[1:]
    if not stats.compare(base_val_correct, corr).measurable
]
chosen_layers = list(min(fine, key=len) if fine else path[1][0])
shallow = distill.student_from_teacher(base, chosen_layers)
print(f"chosen on validation: keep layers {chosen_layers} of {list(path[0][0])}")

fig, ax = plt.subplots(figsize=(6, 3.4))
lows, highs = [], []
for _, corr in path:
    i = stats.paired_bootstrap(corr, base_val_correct)  # shallower - unpruned
    lows.append(100 * (i.diff - i.low))
    highs.append(100 * (i.high - i.diff))
diffs = [100 * (corr.mean() - base_val_correct.mean()) for _, corr in path]
depths = [len(lay) for lay, _ in path]
ax.errorbar(depths, diffs, yerr=[lows, highs], fmt="o-", capsize=4)
ax.axhline(0, color="gray", lw=0.8)
ax.set_xticks(depths)  # whole layers
ax.set_xlabel("layers kept (greedy order)")
ax.set_ylabel("validation accuracy change (points)")
ax.set_title("Dropping layers without fine-tuning, 95 % paired intervals")
plt.tight_layout()
plt.show()
dlbook.glue("ch13_chosen_layers", str(chosen_layers))
dlbook.glue("ch13_n_chosen_layers", len(chosen_layers))
dlbook.glue("ch13_first_drop", next(k for k in path[0][0] if k not in path[1][0]))

# %% [markdown]
# **Figure 13.4.** Validation accuracy change against the unpruned model (points) as the
# greedy search drops one layer after another without fine-tuning (read from right to
# left), with 95 % paired bootstrap intervals.
#
# The first layer the search removes is layer {glue:text}`ch13_first_drop`; by the rule above
# the classifier keeps layers {glue:text}`ch13_chosen_layers`. Its test accuracy, size and
# speed are in section 13.11.
#
# ## 13.10 Pruning the vocabulary
#
# Section 13.1 found the word-embedding table to be {glue:text}`ch13_embed_share:.0%` of the
# parameters: one row of 384 numbers for each of MiniLM's 30,522 WordPiece tokens, most of them
# never seen in English film reviews (Chinese characters, the `[unused]` rows, rare names). A row
# that no input ever looks up can go without changing any output. We keep the special tokens and
# every token that occurs in the **training** snippets, slice those rows out of the table, and
# map the tokenizer's ids onto the new rows; a token the training snippets never used becomes
# `[UNK]`. Validation and test must not decide what is kept: a token seen only there is exactly
# what a deployed model meets without warning.

# %%
dlbook.show(dprune.prune_vocabulary)

# %%
train_texts = list(reviews["train"]["text"])  # the whole training split
counts = dprune.token_counts(tokenizer, train_texts, max_length=128)  # (30522,)
vocab_model, vmap = dprune.prune_vocabulary(
    base, tokenizer, train_texts, max_length=128
)
print(
    f"rows kept: {vmap.new_size:,} of {vmap.old_size:,} "
    f"({vmap.new_size / vmap.old_size:.1%}); "
    f"tokens seen once in training: {int((counts == 1).sum()):,}"
)
both = {"unpruned": base, "vocabulary pruned": vocab_model}
params = {name: count_parameters(m, trainable_only=False) for name, m in both.items()}
disk = {name: measure.saved_size_mb(m) for name, m in both.items()}
display(
    pd.DataFrame({"parameters": params, "state_dict MB": disk}).style.format(
        {"parameters": "{:,}", "state_dict MB": "{:.1f}"}
    )
)

# %% [markdown]
# The check: on snippets whose tokens were all kept, the pruned model must give exactly the
# original's logits; on the others, exactly what the original gives when the dropped tokens are
# replaced by `[UNK]`.

# %%
val_texts = list(take(reviews["validation"], sizes["n_probe"])["text"])
old = tokenizer(
    val_texts, padding=True, truncation=True, max_length=128, return_tensors="pt"
)
new = vmap.encode(tokenizer, val_texts, padding=True, truncation=True, max_length=128)
lost = vmap.lost(old["input_ids"]) & old["attention_mask"].bool()  # (batch, seq)
as_unk = old["input_ids"].masked_fill(lost, tokenizer.unk_token_id)
with torch.no_grad():
    on = {k: v.to(device) for k, v in old.items()}
    reference = base(**{**on, "input_ids": as_unk.to(device)}).logits  # (batch, 2)
    pruned_logits = vocab_model(**{k: v.to(device) for k, v in new.items()}).logits
    torch.testing.assert_close(pruned_logits, reference)
    clean = ~lost.any(1)  # snippets with no dropped token
    torch.testing.assert_close(reference[clean], base(**on).logits[clean])
print(
    f"pruned model == original with dropped tokens as [UNK] ({int(clean.sum())} of "
    f"{len(val_texts)} snippets had none)"
)

# %% [markdown]
# How often does a validation or test snippet meet a dropped token? And what does that cost in
# validation accuracy (`vmap.wrap` puts the id map in front of the pruned model, so it takes the
# ordinary tokenizer's ids)?


# %%
def lost_share(split):
    """(share of real tokens dropped, share of snippets with one or more)."""
    enc = tokenizer(list(split["text"]), truncation=True, max_length=128)
    ids = [torch.tensor(row) for row in enc["input_ids"]]
    per = [vmap.lost(row) for row in ids]
    return (
        sum(int(p.sum()) for p in per) / sum(len(p) for p in per),
        float(np.mean([bool(p.any()) for p in per])),
    )


unk = {
    name: lost_share(take(reviews[name], n))
    for name, n in (("validation", sizes["n_val"]), ("test", sizes["n_test"]))
}
unk_table = pd.DataFrame(unk, index=["tokens -> [UNK]", "snippets with one or more"])
display(unk_table.style.format("{:.2%}"))
vocab_served = vmap.wrap(vocab_model)
vocab_val_correct = correct_on(vocab_served, val_all)
cmp_vocab = stats.compare(base_val_correct, vocab_val_correct)  # unpruned - pruned
print("validation:", cmp_vocab.verdict("the unpruned model", "the pruned vocabulary"))
dlbook.glue("ch13_vocab_kept", vmap.new_size)
dlbook.glue("ch13_vocab_params_before", params["unpruned"] / 1e6)
dlbook.glue("ch13_vocab_params_after", params["vocabulary pruned"] / 1e6)
dlbook.glue("ch13_vocab_mb_before", disk["unpruned"])
dlbook.glue("ch13_vocab_mb_after", disk["vocabulary pruned"])
dlbook.glue("ch13_unk_val", 100 * unk["validation"][0])
dlbook.glue("ch13_unk_test", 100 * unk["test"][0])
dlbook.glue("ch13_unk_val_snippets", 100 * unk["validation"][1])
dlbook.glue("ch13_vocab_val_ci", cmp_vocab.interval.points())


def in_words(comp):
    """What a paired comparison `unpruned - variant` shows, in three words."""
    if not comp.measurable:
        return "no measurable difference"
    return "a measurable drop" if comp.interval.diff > 0 else "a measurable gain"


dlbook.glue("ch13_vocab_val_verdict", in_words(cmp_vocab))
# the size findings hold for any training split of English reviews: well under half the
# rows
assert vmap.new_size < 0.6 * vmap.old_size
assert disk["vocabulary pruned"] < 0.8 * disk["unpruned"]
assert unk["validation"][0] < 0.05, unk

# %% [markdown]
# The training snippets use {glue:text}`ch13_vocab_kept:,` of the 30,522 tokens. Keeping only
# those takes the classifier from {glue:text}`ch13_vocab_params_before:.1f` to
# {glue:text}`ch13_vocab_params_after:.1f` million parameters and its `state_dict` from
# {glue:text}`ch13_vocab_mb_before:.1f` to {glue:text}`ch13_vocab_mb_after:.1f` MB, with no
# change to the computation. The price: {glue:text}`ch13_unk_val:.2f` % of the validation tokens
# ({glue:text}`ch13_unk_test:.2f` % on test) become `[UNK]`, touching
# {glue:text}`ch13_unk_val_snippets:.1f` % of the validation snippets; the validation accuracy
# changes by {glue:text}`ch13_vocab_val_ci` points against the unpruned model (unpruned minus
# pruned, 95 % paired interval): {glue:text}`ch13_vocab_val_verdict`. Abdaoui et al.
# {cite}`abdaoui2020load` shrink multilingual BERT the same way, keeping the tokens a language
# uses. Chapter 15 combines the pruned vocabulary with quantization.
#
# ## 13.11 Size, speed, memory and test accuracy
#
# Now every variant meets the test split, once: the unpruned classifier, the 90 %-sparse dense
# one, the model without half of its heads and neurons, the one without the layers chosen in
# section 13.9, and the one with the pruned vocabulary (served from the ordinary tokenizer's ids
# through its map). Size is the saved `state_dict`; latency follows the protocol of section 13.5,
# all five models timed in turns; "test points lost, 95 % interval" is the 95 % paired
# interval of the test accuracy drop against the unpruned model.

# %%
names = {
    "heads+neurons": "6/12 heads, 768/1536 FFN",
    "layers": f"layers {chosen_layers}",
    "vocab": f"vocabulary {vmap.new_size:,}",
}
variants = {
    "unpruned": base,
    "90% zeros (dense)": sparse_dense,
    names["heads+neurons"]: small,
    names["layers"]: shallow,
    names["vocab"]: vocab_served,
}
variants = {name: on_cpu(m) for name, m in variants.items()}
timings = timed(variants)
board = measure.Scoreboard(baseline="unpruned")
for name, model in dlbook.progress(
    variants.items(), desc="test accuracy", total=len(variants)
):
    board.add(
        measure.measure_classifier(
            name,
            model,
            tokenizer,
            test_tok,
            bench,
            threads=sizes["threads"],
            timings=timings[name],
        )
    )
print(board.provenance())
display(board.styled())
spread = pd.DataFrame(
    {
        name: {f"batch {b}": spread_text(t[b]) for b in (1, 32)}
        for name, t in timings.items()
    }
).T
display(spread.rename_axis("median (min-max over rounds)"))

# %%
fig, ax = plt.subplots(figsize=(9, 4.2))
board.plot(batch_size=32, ax=ax, legend="right")  # names in a legend
plt.tight_layout()
plt.show()

# %% [markdown]
# **Figure 13.5.** Test accuracy against the median latency at batch 32 on the CPU for the
# five models of the table, marker area proportional to the size on disk (the legend gives
# each model's size).
#
# Peak memory of one forward pass at batch 32, on the CPU: the weights (parameters and buffers)
# plus the peak of the tensors the pass allocates on top of them (`dlbook.memory.peak_memory`,
# which counts live tensor storages and leaves out what was allocated before the call). The
# column `peak incl. weights` is their sum.


# %%
def forward_peak_mb(model, batch):
    """MB allocated above the weights by one forward pass under inference_mode."""
    with torch.inference_mode():
        return memory.peak_memory(lambda: model(**batch), "cpu").peak_bytes / 1e6


def weights_mb(model):
    """MB held by the parameters and buffers."""
    tensors = (*model.parameters(), *model.buffers())
    return sum(t.numel() * t.element_size() for t in tensors) / 1e6


weights = {name: weights_mb(m) for name, m in variants.items()}
act_mb = {name: forward_peak_mb(m, bench[32]) for name, m in variants.items()}
mem = pd.DataFrame({"weights MB": weights, "activations MB": act_mb})
mem["peak incl. weights MB"] = mem.sum(axis=1)
display(mem.round(1))

# %%
lat = {name: {b: t[b].median for b in (1, 32)} for name, t in timings.items()}


def speedup(name, b):
    return lat["unpruned"][b] / lat[name][b]


dlbook.glue("ch13_zeros_speedup_all", speedup("90% zeros (dense)", 32))
speedup32 = speedup(names["heads+neurons"], 32)
r = board.ratios(names["heads+neurons"])
dlbook.hardware_headline(
    "ch13_struct_speedup32", speedup32, profile=profile, hardware=cpu_class
)
dlbook.headline(
    "ch13_struct_acc_drop",
    r["acc_drop_pts"],
    profile=profile,
    at_most=3.0,
    fmt="{:.1f}",
)
dlbook.headline(
    "ch13_struct_smaller", r["smaller"], profile=profile, at_least=1.2, fmt="{:.2f}"
)
dlbook.glue("ch13_struct_speedup1", speedup(names["heads+neurons"], 1))
# throughput: snippets per second at batch 32 (one batch per timed forward pass)
dlbook.glue("ch13_struct_throughput", 32 * 1000 / lat[names["heads+neurons"]][32])
dlbook.glue("ch13_base_throughput", 32 * 1000 / lat["unpruned"][32])
dlbook.glue("ch13_layers_speedup32", speedup(names["layers"], 32))
dlbook.glue("ch13_layers_speedup1", speedup(names["layers"], 1))
dlbook.glue("ch13_vocab_speedup32", speedup(names["vocab"], 32))
for key, name in (
    ("small", names["heads+neurons"]),
    ("zeros", "90% zeros (dense)"),
    ("layers", names["layers"]),
    ("vocab", names["vocab"]),
):
    comp = board.compare(name)  # unpruned - variant on test
    dlbook.glue(f"ch13_test_drop_{key}", comp.interval.points())
    dlbook.glue(f"ch13_test_verdict_{key}", in_words(comp))
    dlbook.glue(f"ch13_acc_{key}_test", board.rows[name].accuracy)
dlbook.glue("ch13_acc_base_test", board.rows["unpruned"].accuracy)
dlbook.glue("ch13_small_size", board.rows[names["heads+neurons"]].size_mb)
dlbook.glue("ch13_vocab_smaller", board.ratios(names["vocab"])["smaller"])
dlbook.glue("ch13_layers_smaller", board.ratios(names["layers"])["smaller"])
dlbook.glue("ch13_act_ratio", act_mb[names["heads+neurons"]] / act_mb["unpruned"])
# zeros and a pruned vocabulary leave the compute as it was; their state_dicts are not
# smaller /
# are smaller, whatever the machine
assert board.ratios("90% zeros (dense)")["smaller"] < 1.01
assert board.ratios(names["vocab"])["smaller"] > 1.25

# %% [markdown]
# Measured on the machine printed above the table, at batch 32 (batch 1 in brackets):
#
# - half of the heads and feed-forward neurons removed: {glue:text}`ch13_struct_speedup32`× as
#   fast ({glue:text}`ch13_struct_speedup1:.2f`×; {glue:text}`ch13_struct_throughput:.0f`
#   snippets per second at batch 32 against {glue:text}`ch13_base_throughput:.0f`),
#   {glue:text}`ch13_struct_smaller`× smaller on
#   disk ({glue:text}`ch13_small_size:.1f` MB); test accuracy {glue:text}`ch13_acc_small_test:.3f`
#   against {glue:text}`ch13_acc_base_test:.3f`, a drop of {glue:text}`ch13_test_drop_small`
#   points: {glue:text}`ch13_test_verdict_small`. The file shrinks less than the compute because
#   the word embeddings, which this pruning does not touch, are a large part of it; the
#   activations' peak is {glue:text}`ch13_act_ratio:.2f` of the unpruned model's.
# - layers {glue:text}`ch13_chosen_layers` kept: {glue:text}`ch13_layers_speedup32:.2f`× as fast
#   ({glue:text}`ch13_layers_speedup1:.2f`×), {glue:text}`ch13_layers_smaller:.2f`× smaller; test
#   drop {glue:text}`ch13_test_drop_layers` points: {glue:text}`ch13_test_verdict_layers`.
# - the pruned vocabulary: {glue:text}`ch13_vocab_smaller:.2f`× smaller on disk with the same
#   computation ({glue:text}`ch13_vocab_speedup32:.2f`× the speed: the table is looked up, never
#   multiplied); test drop
#   {glue:text}`ch13_test_drop_vocab` points: {glue:text}`ch13_test_verdict_vocab`.
# - the 90 %-sparse dense model: as large, {glue:text}`ch13_zeros_speedup_all:.2f`× the speed; test drop
#   {glue:text}`ch13_test_drop_zeros` points: {glue:text}`ch13_test_verdict_zeros`.
#
# ## Summary
#
# - Magnitude pruning zeros the smallest weights, per layer or with one global threshold; our masks
#   equal `torch.nn.utils.prune`'s, which keeps `weight_orig` and `weight_mask` and recomputes the
#   product before each forward pass, so a fine-tune with the masks attached keeps the zeros.
# - Without retraining, accuracy falls slowly at first and fast at high sparsity
#   ({glue:text}`ch13_acc_global90:.3f` at 90 % global, majority rate
#   {glue:text}`ch13_majority:.3f`); a fine-tune of a handful of steps with the masks on is not
#   enough to bring a badly damaged network back: compare its accuracy with the majority rate.
# - Fine-tuning moves the weights little ({glue:text}`ch13_bert_move:.1f` % of their norm), so a
#   fine-tuned model's magnitude mask is nearly the pretrained model's
#   ({glue:text}`ch13_bert_same50:.1f` % of the same weights at 50 %); for a network trained from
#   scratch the two masks share far fewer ({glue:text}`ch13_mlp_same50:.0f` %, against 50 % for
#   unrelated masks), and ranking the trained weights is what keeps it working. Movement
#   pruning ranks by what the fine-tune changes instead.
# - Zeros in a dense matrix save nothing: same file size, the same multiplications
#   ({glue:text}`ch13_zeros_speedup`×). CSR storage pays only below a third of nonzeros.
# - Attention heads and FFN neurons are independent terms of a sum (Eq. {eq}`eq-ch13-sums`):
#   removing one deletes rows and columns, which computes exactly what masking it computes
#   (verified), and makes every multiply smaller.
# - Taylor importance, $|\partial L/\partial g|$ = |gradient × activation| summed over a unit, on
#   validation data, chooses what to remove: halving the model by it kept
#   {glue:text}`ch13_acc_taylor_noft:.3f` accuracy before any fine-tune, against
#   {glue:text}`ch13_acc_random_min:.3f`-{glue:text}`ch13_acc_random_max:.3f` for
#   {glue:text}`ch13_n_random` random halves (measurably better than
#   {glue:text}`ch13_n_beaten` of them).
# - Removing half of the heads and neurons and fine-tuning briefly gave
#   {glue:text}`ch13_struct_speedup32`× speed at batch 32 for {glue:text}`ch13_struct_acc_drop`
#   points of test accuracy ({glue:text}`ch13_test_drop_small`, 95 % paired interval:
#   {glue:text}`ch13_test_verdict_small`). `dlbook.prune.pruned_classifier` is that model;
#   chapter 15 compares it
#   with the quantized and distilled ones.
# - Whole layers can go, chosen greedily on validation: the classifier kept layers
#   {glue:text}`ch13_chosen_layers` and ran {glue:text}`ch13_layers_speedup32:.2f`× as fast
#   (test: {glue:text}`ch13_test_verdict_layers`).
# - The training snippets use {glue:text}`ch13_vocab_kept:,` of the 30,522 tokens; keeping only
#   their embedding rows makes the file {glue:text}`ch13_vocab_smaller:.2f`× smaller with the same
#   computation (`dlbook.prune.prune_vocabulary`; test: {glue:text}`ch13_test_verdict_vocab`).
#
# ## Exercises
#
# :::{exercise}
# :label: ch13-ex-global
# Global magnitude pruning removed a larger share of some kinds of matrices than of others
# (section 13.2). Give two reasons why the weights of different layers of a trained transformer
# can have different typical magnitudes. What could go wrong with one global threshold if one
# layer's weights were all ten times smaller than the others'? How does per-layer pruning avoid it,
# and what does it give up?
# :::
#
# :::{solution} ch13-ex-global
# :class: dropdown
# Layers differ in fan-in: the FFN output layer sums 1,536 activations where a projection sums
# 384 inputs, so for outputs of similar size its weights tend to be smaller (many initialisation
# schemes build this in with a scale of $1/\sqrt{\text{fan-in}}$; BERT's fixed 0.02 does not, but
# training adapts). And LayerNorm makes the network invariant to some rescalings, so training can
# move scale between layers without changing the function. With a layer ten times smaller, a global threshold would
# remove most or all of it, cutting the signal path through that layer, although its weights
# matter as much relative to each other. Per-layer pruning guarantees every layer keeps the same
# share; it gives up the ability to prune redundant layers harder and sensitive ones less.
# :::
#
# :::{exercise}
# :label: ch13-ex-csr
# A float32 matrix of $r \times c$ entries with density $\rho$ (share of nonzeros) is stored in CSR
# with int64 column indices and $r + 1$ int64 row offsets. Write its size in bytes, and find the
# density below which CSR is smaller than dense, for large $r$. What is the break-even density with
# int32 indices? With 2:4 semi-structured sparsity, 2 values of every 4 and a 2-bit index each?
# :::
#
# :::{solution} ch13-ex-csr
# :class: dropdown
# CSR: $4\rho rc + 8\rho rc + 8(r + 1) = 12\rho rc + 8(r+1)$ bytes against $4rc$ dense; ignoring
# the row offsets, CSR is smaller when $\rho < 1/3$, i.e. above 67 % sparsity, which is what the
# table of section 13.5 shows (larger at 50 %, smaller at 90 %). With int32 indices,
# $8\rho rc < 4rc$ gives $\rho < 1/2$. For 2:4, each group of four float32 weights (16 bytes)
# becomes two values (8 bytes) plus two 2-bit indices (half a byte): 8.5/16, about 53 % of dense,
# at exactly 50 % density, and the regular pattern is what sparse tensor cores can use.
# :::
#
# :::{exercise}
# :label: ch13-ex-count
# Count the parameters of one MiniLM layer (hidden 384, 12 heads of 32, FFN 1,536, with biases
# and the two LayerNorms) and of the same layer with 6 heads and 768 neurons. By what factor
# does the encoder shrink? The whole model has about 22.7 million parameters, 11.7 million of them
# in the word embeddings: what size ratio do you predict for the saved model, and how does it compare
# with the scoreboard's "× smaller"?
# :::
#
# :::{solution} ch13-ex-count
# :class: dropdown
# Full layer: Q, K, V and attention output $4(384 \cdot 384 + 384) = 591{,}360$; FFN
# $384 \cdot 1536 + 1536 + 1536 \cdot 384 + 384 = 1{,}181{,}568$; LayerNorms $2 \cdot 768 = 1{,}536$;
# total 1,774,464. Pruned: Q, K, V $3(384 \cdot 192 + 192) = 221{,}760$, output
# $192 \cdot 384 + 384 = 74{,}112$, FFN $384 \cdot 768 + 768 + 768 \cdot 384 + 384 = 590{,}976$,
# LayerNorms 1,536: 888,384, so the encoder (six layers) halves, from 10.65 to 5.33 million. The
# model goes from about 22.7 to about 17.4 million parameters, a ratio of about 1.31; the file
# holds float32 parameters plus a few small buffers, so its size ratio (the scoreboard's
# "× smaller") should be the same to two digits. The encoder's compute halves, which is why latency
# gains more than size.
# :::
#
# :::{exercise}
# :label: ch13-ex-nm
# NVIDIA GPUs since Ampere multiply faster with **2:4 semi-structured sparsity**
# {cite}`mishra2021accelerating`: in every group of 4 consecutive weights along a row (the input
# dimension), at most 2 are nonzero. Write `my_nm_mask(weight, n, m)` that returns a 0/1 mask of
# `weight`'s shape and dtype keeping, in each group of `m` consecutive entries of each row, the
# `n` of largest magnitude (the row length is a multiple of `m`).
# Then prune the classifier's encoder to 2:4 and compare its accuracy on the validation subset of
# section 13.3 with 50 % unstructured global pruning.
# :::


# %%
def my_nm_mask(weight, n, m):
    raise NotImplementedError  # your code here


dlbook.exercises.check("ch13.nm_mask", my_nm_mask)

# %% [markdown]
# ```{solution-start} ch13-ex-nm
# :class: dropdown
# ```


# %% tags=["solution"]
def my_nm_mask(weight, n, m):
    rows, cols = weight.shape
    if cols % m:
        raise ValueError(f"row length {cols} is not a multiple of {m}")
    groups = weight.detach().abs().reshape(rows, cols // m, m)  # (rows, groups, m)
    keep = groups.topk(n, dim=-1).indices  # (rows, groups, n)
    mask = torch.zeros_like(groups).scatter_(-1, keep, 1.0)
    return mask.reshape(rows, cols).to(weight.dtype)


assert dlbook.exercises.check("ch13.nm_mask", my_nm_mask)

model_24 = copy.deepcopy(base)
for _, lin in dprune.encoder_linears(model_24):
    torch_prune.custom_from_mask(lin, "weight", my_nm_mask(lin.weight, 2, 4))
print(
    f"2:4 sparsity {dprune.weight_sparsity(model_24):.1%}: "
    f"accuracy {accuracy(model_24):.3f} | "
    f"50% global unstructured: {curve['global'][i50]:.3f}"
)

# %% [markdown]
# ```{solution-end}
# ```
#
# The 2:4 pattern is 50 % sparse like the unstructured model, but it constrains where the zeros
# go: a group of four important weights must still lose two. In exchange, hardware can use it.
#
# :::{exercise}
# :label: ch13-ex-taylor
# Write `my_head_taylor(act, grad, n_heads)`: given the input of an attention output projection
# `act` (batch, seq, n_heads * d) and the gradient of the loss with respect to it, `grad`, of the
# same shape, return the (n_heads,) Taylor scores of Eq. {eq}`eq-ch13-taylor` for that batch:
# the absolute value of the sum, over batch, tokens and the head's `d` coordinates, of
# `grad * act`. Why is the absolute value taken after the sum and not before?
# :::


# %%
def my_head_taylor(act, grad, n_heads):
    raise NotImplementedError  # your code here


dlbook.exercises.check("ch13.head_taylor", my_head_taylor)

# %% [markdown]
# ```{solution-start} ch13-ex-taylor
# :class: dropdown
# ```


# %% tags=["solution"]
def my_head_taylor(act, grad, n_heads):
    ga = (grad * act).sum(dim=(0, 1))  # (n_heads * d,)
    return ga.reshape(n_heads, -1).sum(-1).abs()  # (n_heads,)


assert dlbook.exercises.check("ch13.head_taylor", my_head_taylor)

# %% [markdown]
# Within one snippet, the sum over its tokens and the head's coordinates is the derivative of
# that snippet's loss with respect to the head's gate, the first-order change of its loss when
# the head goes; contributions that cancel there really do change the loss little. Taking the
# absolute value of every token's and coordinate's term first would add up movement that cancels
# and overrate such heads. Across snippets the question is different: a head that raises one
# snippet's loss and lowers another's still matters to both, which is why Michel et al. take the
# absolute value per snippet (section 13.7 compares it with per batch).

# %% [markdown]
# ```{solution-end}
# ```
#
# :::{exercise}
# :label: ch13-ex-movement
# Movement pruning {cite}`sanh2020movement` scores weight $W_{ij}$ by
# $S_{ij} = -\sum_t W_{ij}^{(t)} \, \partial L^{(t)} / \partial W_{ij}$ summed over the steps $t$ of a
# fine-tune: positive when the gradient pushes the weight away from zero. Fine-tune a copy of the
# classifier for one epoch on 512 training snippets while accumulating $S$ for the encoder's
# linear weights (a hook after `loss.backward()`), then prune globally by $S$ and by $|W|$ at 50 %
# and compare their validation accuracy with `dlbook.stats.compare`. How many of the weights the two
# rules prune are the same?
# :::
#
# :::{solution} ch13-ex-movement
# :class: dropdown
# After `loss.backward()` and before `optimizer.step()`, add `-(lin.weight.grad * lin.weight)` to
# a running sum per linear layer; afterwards `dprune.global_magnitude_masks` on the *scores*
# (shifted to be positive, or with a top-k on the scores themselves) gives the movement masks.
# Compare the overlap with 50 %, the overlap of two unrelated masks at this sparsity: the two
# rules answer different questions, which weights pretraining made large and which weights this
# task is growing. With one short epoch
# the scores are noisy; Sanh et al. learn them over many epochs with the masks in the forward
# pass, and report the gain of movement over magnitude pruning at high sparsity, where the
# pretrained magnitudes matter least for the task.
# :::
#
# ## Further reading
#
# - Magnitude pruning with retraining {cite}`han2015learning`, and its ancestor, pruning by a
#   second-order estimate of the loss change {cite}`lecun1990optimal`.
# - The lottery-ticket hypothesis: sparse subnetworks that train from their initial weights as
#   well as the dense network {cite}`frankle2019lottery`.
# - Removing attention heads {cite}`michel2019sixteen`, and what the surviving heads do
#   {cite}`voita2019analyzing`.
# - First-order Taylor importance of units {cite}`molchanov2019importance`.
# - Movement pruning for fine-tuned models {cite}`sanh2020movement`; dropping layers of pretrained
#   transformers {cite}`sajjad2023effect`; vocabulary pruning for smaller multilingual BERTs
#   {cite}`abdaoui2020load`.
# - Semi-structured 2:4 sparsity on GPUs {cite}`mishra2021accelerating`.
