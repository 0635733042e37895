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
# (ch15)=
# # 15. The compression scoreboard
#
# Chapters 12 to 14 each made the sentiment classifier of chapter 9 cheaper in one way:
# quantization stores its weights in 8 bits, pruning removes attention heads, feed-forward
# neurons and unused rows of the word table, distillation trains a student with half its layers.
# Each chapter measured its own technique. This chapter puts them, and their combinations (all of
# them stacked on one model included), on **one scoreboard**, measured in one run on one machine
# with one method, chooses the best combination on the validation split, reports it once on the
# test split, and ends with a guide for choosing.
#
# By the end of this chapter you can
#
# 1. measure size, latency at batch 1 and 32, and accuracy of many variants so that their ratios
#    are comparable, and say what the numbers depend on;
# 2. account for where the bytes of a BERT classifier go (embeddings vs. encoder layers) and
#    predict the size of a compressed variant before measuring it;
# 3. stack distillation, structured pruning, vocabulary pruning and int8 quantization on one
#    model, and read the trade-off plot and its Pareto front;
# 4. run the same weights through a lean runtime (less of the library's generality) and
#    measure what it changes at batch 1 and 32;
# 5. pick a technique from a latency, memory or accuracy budget, choosing on validation and
#    reporting on test.

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
import atexit
import os
import shutil
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import display

import dlbook
import dlbook.exercises
from dlbook import assets, combined, distill, finetune, lean, measure, prune, quantize
from dlbook import ort as dlort
from dlbook.train import count_parameters

device = dlbook.setup(seed=0)

# %% tags=["parameters", "hide-input"]
profile = os.environ.get("DLBOOK_PROFILE", "full")

# %% tags=["hide-input"]
sizes = dlbook.by_profile(
    profile,
    smoke=dict(
        n_test=128,
        n_val=128,
        test_max_length=128,
        threads=2,
        rounds={1: 3, 32: 2},
    ),
    full=dict(
        n_test=None,  # test snippets every variant is reported on; None: all 1,500
        n_val=None,  # validation snippets that choose; None: all 1,000
        test_max_length=128,  # tokens kept per validation and test snippet
        threads=2,  # CPU threads every variant is timed with (as in chapters 13-14)
        rounds={1: 40, 32: 15},  # timed forward passes per variant, at batch 1 and 32
    ),
)
sizes

# %% [markdown]
# ## 15.1 The contenders
#
# Every model comes from the package, trained (the first time) or loaded from the cache exactly
# as the chapter that teaches it left it: the fine-tuned classifier of chapter 9
# (`finetune.sentiment_classifier`), the structurally pruned one of chapter 13
# (`prune.pruned_classifier`), and the distilled students of chapter 14
# (`distill.distilled_student`: the 3-layer copy of the teacher and the narrow 2-layer model,
# both trained with the teacher), with one exception: chapter 14 trains the 3-layer student for
# {glue:text}`ch15_short_epochs` epoch(s), and `combined.long_student` trains it with the same
# recipe for {glue:text}`ch15_long_epochs` epochs, which scored higher on the validation split
# (printed below; one training seed each, and the same split made the choice, so the gap may be
# optimistic). The first run trains it; the time is printed. `quantize.int8_dynamic` of chapter
# 12 turns any of them into an int8 copy (int8 linear layers with dynamic activation
# quantization, int8 embedding rows). Its default is used for every PyTorch variant: one weight
# scale per linear layer's matrix, not the per-row scales that chapter 12 also offers
# (`per_channel=True`), and one scale per embedding row.
#
# Dynamic int8 kernels run on the CPU, and the question this chapter answers is what a CPU server
# or laptop gains, so **every variant is measured on the CPU**, whatever accelerator the notebook
# runs on.

# %%
cpu = torch.device("cpu")
baseline, tokenizer, _ = finetune.sentiment_classifier(profile, device=device)
pruned, pruned_tokenizer, _ = prune.pruned_classifier(profile, device=device)
student, student_tokenizer, student_info = combined.long_student(profile, device=device)
narrow, _, _ = distill.distilled_student(profile, "narrow", True, device=device)
baseline, pruned, student, narrow = (
    m.to(cpu).eval() for m in (baseline, pruned, student, narrow)
)
# Every variant reads the same token ids: all keep the teacher's tokenizer.
probe = "an unexpectedly moving film"
ids = tokenizer(probe)["input_ids"]
assert pruned_tokenizer(probe)["input_ids"] == ids
assert student_tokenizer(probe)["input_ids"] == ids
print("pruned structure (heads, neurons per layer):", prune.structure(pruned))

# %% [markdown]
# The 3-layer student of chapter 14 and the same recipe trained longer, on the validation split,
# which chose {glue:text}`ch15_long_epochs` over {glue:text}`ch15_short_epochs` epoch(s):

# %%
val_raw = assets.rotten_tomatoes()["validation"]
val_raw = val_raw if sizes["n_val"] is None else val_raw.select(range(sizes["n_val"]))
val_tok = finetune.tokenize_dataset(val_raw, tokenizer, sizes["test_max_length"])
short_student, _, _ = distill.distilled_student(profile, "layers", True, device=device)
n_short = distill.STUDENT_SETTINGS[profile]["layers"].epochs
n_long = combined.LONG_STUDENT_EPOCHS[profile]
dlbook.glue("ch15_short_epochs", n_short)
dlbook.glue("ch15_long_epochs", n_long)
for n, m in [(n_short, short_student), (n_long, student)]:
    acc = finetune.evaluate_classifier(m, val_tok, tokenizer).accuracy
    print(f"{n} epoch(s): validation accuracy {acc:.3f}")
print(f"(the longer one trained in {student_info['history']['seconds']:.0f} s)")
del short_student

# %% [markdown]
# One model is new: `combined.pruned_student` stacks two techniques before int8. It takes the
# 3-layer distilled student above, scores its heads and feed-forward neurons with chapter 13's
# Taylor importance on **training** snippets (so that the validation split, which chooses below,
# had no say in which heads and neurons were kept), removes the least important ones with
# `prune.shrink_bert`, and distils it from the teacher once more, so that the student learns to
# do without what was cut. The cut keeps half of the feed-forward neurons, as chapter 13 did,
# but two thirds of the heads rather than half: per token, a layer's four attention projections
# cost $4d^2$ multiply-adds and its feed-forward block $2 \cdot d \cdot 4d = 8d^2$: the neurons
# hold two thirds of the weight-matrix work, the heads one third (the attention products
# $QK^\top$ and $AV$, which grow with the snippet's length, come on top), so the heads are cut
# less. This distillation learns from the teacher's soft targets alone (`alpha=0`): the aim is a
# copy of the teacher, whose accuracy is the reference, not a second opinion. Its recipe, what
# it keeps, and its validation accuracy right after the cut and after the distillation (the
# first run trains it; the time is printed):

# %%
recipe = combined.PRUNED_STUDENT_SETTINGS[profile]
print(recipe)
dlbook.glue("ch15_prune_epochs", recipe.epochs)
kd_pruned, _, kd_pruned_info = combined.pruned_student(profile, device=device)
kd_pruned = kd_pruned.to(cpu).eval()
print("distilled + pruned structure:", prune.structure(kd_pruned))
print(
    f"validation accuracy right after the cut "
    f"{kd_pruned_info['val_acc_before_distill']:.3f}, after distilling again "
    f"{kd_pruned_info['val_acc_after_distill']:.3f} "
    f"(trained in {kd_pruned_info['history']['seconds']:.0f} s)"
)

# %% [markdown]
# The last technique is chapter 13's vocabulary pruning. A sentiment classifier for film reviews
# never sees most of the 30,522 WordPiece tokens; `combined.compact` keeps the rows of the word
# table that the **training** snippets use (plus the special tokens), puts a lookup in front that
# maps the tokenizer's ids to the kept rows (a token outside them becomes `[UNK]`), and then
# applies `int8_dynamic`. On a snippet whose tokens were all kept, the pruned table changes
# nothing; checked on the 3-layer student in float32, on the test snippets the timing uses:

# %%
train_texts = list(assets.rotten_tomatoes()["train"]["text"])  # the training split only
small, vmap = prune.prune_vocabulary(student, tokenizer, train_texts)
wrapped = vmap.wrap(small.eval())
test_raw = assets.rotten_tomatoes()["test"]
probe_batch = tokenizer(test_raw["text"][:32], padding=True, return_tensors="pt")
real = probe_batch["attention_mask"].bool()  # (32, T) real tokens, not padding
lost = vmap.lost(probe_batch["input_ids"]) & real  # (32, T)
intact = ~lost.any(dim=1)  # (32,) snippets with every token kept
with torch.inference_mode():
    ours = wrapped(**probe_batch).logits  # (32, 2)
    reference = student(**probe_batch).logits  # (32, 2)
torch.testing.assert_close(ours[intact], reference[intact], rtol=1e-5, atol=1e-5)
n_rows = vmap.new_size
dlbook.glue("ch15_vocab_rows", f"{n_rows:,}")
dlbook.glue("ch15_vocab_share", n_rows / vmap.old_size)
print(
    f"kept {n_rows:,} of {vmap.old_size:,} rows; {int(intact.sum())} of 32 snippets "
    "have every token kept and give the same logits"
)

# %% [markdown]
# The variants: each technique alone, and each model shape with int8 on top, with and without
# the shorter word table. Chapter 12 also ran the classifier in ONNX Runtime, a different
# engine with its own int8 kernels; `combined.compact_onnx` exports the same
# vocabulary-pruned model (id lookup included) and quantizes it there (int8 matrix products
# with one scale per output channel, int8 embedding rows). Every variant, PyTorch or ONNX
# Runtime, is timed by the same loop at the same thread count. An ONNX Runtime row differs from
# its PyTorch twin in two ways at once, the engine and the per-channel scales, so the table does
# not say which of the two moves its numbers. Its weights live in the ONNX file, not in PyTorch
# parameters: its parameter count below is 0 and its size is the file's.
#
# A third way to run the same weights stays in PyTorch. Hugging Face's BERT classes serve every
# use of BERT (caches, cross-attention, several attention back-ends, optional outputs), and each
# of their layers is many module calls (counted below). For one short snippet, whose matrix
# products are small, such bookkeeping (the **framework overhead**) can be a visible share of
# the time. `lean.lean_classifier` runs the same weights through only what a sentence
# classifier needs: the embeddings; per layer one projection for Q, K and V stacked into one
# matrix (a **fused projection**), attention written out as in chapter 6 (the Hugging Face model
# calls PyTorch's fused `scaled_dot_product_attention` instead), the output projection and the
# feed-forward block, each with its LayerNorm; then the pooler and the classifier.
# `combined.compact(..., lean=True)` puts it under int8 and the short word table. In float32 it
# gives the Hugging Face model's logits to rounding, checked here on one snippet and on a padded
# batch of 32, and its layers make fewer module calls (counted with forward hooks on one
# snippet):

# %%
baseline_lean = lean.lean_classifier(baseline)  # a copy: the baseline is not changed
one = tokenizer(test_raw["text"][:1], return_tensors="pt")  # (1, T): no padding
with torch.inference_mode():
    for b in (one, probe_batch):
        torch.testing.assert_close(
            baseline_lean(**b).logits, baseline(**b).logits, rtol=1e-5, atol=1e-5
        )
qkv_shape = tuple(baseline_lean.layers[0].qkv.weight.shape)  # (3 d, d)
print(f"{len(baseline_lean.layers)} layers; stacked Q/K/V weight {qkv_shape}")


def module_calls(layer, model):
    """Forward calls of `layer` and its submodules while `model` reads one snippet."""
    calls = []
    hooks = [
        m.register_forward_hook(lambda *args: calls.append(1)) for m in layer.modules()
    ]
    with torch.inference_mode():
        model(**one)
    for h in hooks:
        h.remove()
    return len(calls)


hf_calls = module_calls(baseline.bert.encoder.layer[0], baseline)
lean_calls = module_calls(baseline_lean.layers[0], baseline_lean)
assert lean_calls < hf_calls
dlbook.glue("ch15_hf_calls", hf_calls)
dlbook.glue("ch15_lean_calls", lean_calls)
print(f"module calls per layer: Hugging Face {hf_calls}, lean {lean_calls}")

# %% [markdown]
# A Hugging Face layer makes {glue:text}`ch15_hf_calls` module calls, a lean one
# {glue:text}`ch15_lean_calls`. In int8 the stacked matrix gets one weight scale where Q, K and V
# had one each, so the int8 logits change, and the table measures the accuracy of the lean
# variants again rather than copying it. A lean row differs from its Hugging Face twin in three
# ways at once: less Python, one stacked Q/K/V product, and attention written out instead of
# PyTorch's fused kernel. "fp32 baseline, lean runtime" shows what the runtime gives the
# unchanged weights.


# %%
def with_vocabulary(model):
    """int8 + the rows of the training vocabulary (`combined.compact`)."""
    return combined.compact(model, tokenizer, train_texts)[0]


def lean_runtime(model):
    """`with_vocabulary` in the lean runtime (`combined.compact(..., lean=True)`)."""
    return combined.compact(model, tokenizer, train_texts, lean=True)[0]


onnx_dir = Path(tempfile.mkdtemp(prefix="ch15-onnx-"))  # scratch files, removed at exit
atexit.register(shutil.rmtree, onnx_dir, ignore_errors=True)


def in_onnx_runtime(model, name):
    """`with_vocabulary` in ONNX Runtime (`combined.compact_onnx`)."""
    folder = onnx_dir / name
    return combined.compact_onnx(
        model, tokenizer, train_texts, folder, threads=sizes["threads"]
    )[0]


start = time.perf_counter()
baseline_int8 = quantize.int8_dynamic(baseline)  # no data, no training: a conversion
dlbook.glue("ch15_int8_seconds", time.perf_counter() - start)
variants = {
    "fp32 baseline": baseline,
    "int8": baseline_int8,
    "int8 + vocabulary": with_vocabulary(baseline),
    "pruned": pruned,
    "pruned + int8": quantize.int8_dynamic(pruned),
    "distilled (3 layers)": student,
    "distilled + int8": quantize.int8_dynamic(student),
    "distilled + int8 + vocabulary": with_vocabulary(student),
    "distilled + pruned": kd_pruned,
    "distilled + pruned + int8": quantize.int8_dynamic(kd_pruned),
    "distilled + pruned + int8 + vocabulary": with_vocabulary(kd_pruned),
    "distilled + int8 + vocabulary, ONNX Runtime": in_onnx_runtime(student, "kd"),
    "distilled + pruned + int8 + vocabulary, ONNX Runtime": in_onnx_runtime(
        kd_pruned, "kd-pruned"
    ),
    "narrow distilled + int8": quantize.int8_dynamic(narrow),
    "narrow distilled + int8 + vocabulary": with_vocabulary(narrow),
    "fp32 baseline, lean runtime": baseline_lean,
    "distilled + int8 + vocabulary, lean runtime": lean_runtime(student),
    "distilled + pruned + int8 + vocabulary, lean runtime": lean_runtime(kd_pruned),
    "narrow distilled + int8 + vocabulary, lean runtime": lean_runtime(narrow),
}


def size_mb(model):
    """Size on disk: the saved `state_dict`, or the ONNX file ONNX Runtime runs."""
    if isinstance(model, dlort.OrtClassifier):
        return model.size_mb()
    return measure.saved_size_mb(model)


for name, m in variants.items():
    n_float = count_parameters(m, trainable_only=False)  # 0 for ONNX Runtime
    print(f"{name:>52}: {n_float:>11,} float parameters | {size_mb(m):6.1f} MB on disk")

# %% [markdown]
# ## 15.2 Where the bytes go
#
# A float32 model stores 4 bytes per parameter; `torch.save` adds little around them. So the size
# on disk should be $4 \times (\text{number of parameters})$ plus a small overhead, and how those
# parameters split between the embedding tables and the encoder layers decides what each
# technique can save. Checked on the fp32 models:


# %%
def anatomy(model):
    """Float parameters in the embeddings, the encoder layers, and the rest."""
    parts = {"embeddings": 0, "encoder layers": 0, "pooler + classifier": 0}
    for name, p in model.named_parameters():
        if ".embeddings." in name:
            parts["embeddings"] += p.numel()
        elif ".encoder." in name:
            parts["encoder layers"] += p.numel()
        else:
            parts["pooler + classifier"] += p.numel()
    return parts


fp32_models = {
    "fp32 baseline": baseline,
    "pruned": pruned,
    "distilled (3 layers)": student,
    "distilled + pruned": kd_pruned,
    "narrow distilled": narrow,
}
parts = {name: anatomy(m) for name, m in fp32_models.items()}
for name, m in fp32_models.items():
    predicted = 4 * sum(parts[name].values()) / 1e6  # MB
    torch.testing.assert_close(measure.saved_size_mb(m), predicted, rtol=0.01, atol=0.0)
fig, ax = plt.subplots(figsize=(7, 2.8))
left = np.zeros(len(parts))
for part in ("embeddings", "encoder layers", "pooler + classifier"):
    mb = np.array([4 * parts[n][part] / 1e6 for n in parts])
    ax.barh(list(parts), mb, left=left, label=part)
    left += mb
ax.set_xlabel("float32 megabytes")
ax.legend(fontsize=8)
plt.tight_layout()
plt.show()
emb_share = parts["fp32 baseline"]["embeddings"] / sum(parts["fp32 baseline"].values())
assert emb_share > 0.5  # so cutting only the encoder cannot even halve the size
dlbook.glue("ch15_emb_share", float(emb_share))
dlbook.glue("ch15_emb_mb", 4 * parts["fp32 baseline"]["embeddings"] / 1e6)

# %% [markdown]
# **Figure 15.1.** Float32 megabytes of each model, split into embedding tables, encoder
# layers, and pooler plus classifier.
#
# Size on disk equals four bytes per parameter to within one percent for all five (asserted).
# The embeddings, mostly the $30{,}522 \times 384$ word table, are {glue:text}`ch15_emb_mb:.0f` MB,
# {glue:text}`ch15_emb_share:.0%` of the baseline (asserted: more than half). Pruning heads and
# neurons, and dropping layers, only touch the encoder part: while the table stays in float32,
# neither can make the model even twice smaller. Two levers act on the table: int8 (one byte per
# entry plus one float scale per row, about a quarter of the bytes) and fewer rows (the training
# snippets use {glue:text}`ch15_vocab_rows` of them, {glue:text}`ch15_vocab_share:.0%`). The
# narrow student has a thinner table ($30{,}522 \times 256$).
#
# ## 15.3 The scoreboard
#
# The measurement protocol of chapter 12, unchanged: size is the saved `state_dict` (for an
# ONNX Runtime variant, the ONNX file); latency is the median wall time of a forward pass on the
# first test snippet (batch 1) and on the first 32 test snippets padded to the longest (batch
# 32), with the thread count fixed, every variant warmed up and then timed in turns, round after
# round, so that they share the machine's drift.
# Accuracy is measured on the validation split, which chooses the best combination below, and on
# the test split, which reports it; "test points lost, 95 % interval" is the 95 % paired
# bootstrap interval of the test accuracy lost against the baseline, in points (`dlbook.stats`,
# introduced in chapter 3; section 14.5 explains the paired bootstrap and McNemar's test and
# checks both).

# %%
if sizes["n_test"] is not None:
    test_raw = test_raw.select(range(sizes["n_test"]))
test_tok = finetune.tokenize_dataset(test_raw, tokenizer, sizes["test_max_length"])
batches = measure.benchmark_batches(
    tokenizer, test_raw["text"][:32], batch_sizes=(1, 32)
)
timings = measure.interleaved_latency(
    variants, batches, threads=sizes["threads"], rounds=sizes["rounds"]
)
board = measure.Scoreboard(baseline="fp32 baseline")
for name, m in dlbook.progress(variants.items(), desc="accuracy", total=len(variants)):
    row = measure.measure_classifier(
        name,
        m,
        tokenizer,
        test_tok,
        batches,
        threads=sizes["threads"],
        timings=timings[name],
        val_dataset=val_tok,
    )
    if isinstance(m, dlort.OrtClassifier):
        row = dlort.classifier_measurement(row, m)  # size of the ONNX file
    board.add(row)
features = dlbook.env.cpu_features()
dlbook.glue("ch15_isa", ", ".join(features) or "none detected")
print(board.provenance())
print("instruction sets for matrix products:", ", ".join(features) or "none detected")
table = board.frame()
display(board.styled(table))

# %% [markdown]
# A variant is worth keeping only if no other is at least as small (or as fast) and at least as
# accurate, and better in one of the two. Those variants form the **Pareto front**. The choice
# is made on the validation split, so the front is drawn with validation accuracy:


# %%
def front(cost, accuracy):
    """Pareto front: cheapest first, each more accurate than all cheaper ones."""
    order = np.lexsort((-accuracy, cost))  # by cost, then by accuracy (best first)
    kept, best_acc = [], -np.inf
    for i in order:
        if accuracy[i] > best_acc:
            kept.append(i)
            best_acc = accuracy[i]
    return kept


names = list(board.rows)
val_acc = np.array([board.rows[n].val_accuracy for n in names])  # (variants,)
fig, axes = plt.subplots(1, 2, figsize=(12, 4.4), sharey=True)
for ax, column, label in [
    (axes[0], "size_MB", "size on disk (MB)"),
    (axes[1], "ms@32", "median latency at batch 32 (ms)"),
]:
    cost = table.loc[names, column].to_numpy()  # (variants,)
    on_front = front(cost, val_acc)
    ax.scatter(cost, val_acc, color="0.6")
    ax.plot(cost[on_front], val_acc[on_front], "o-", color="C3", label="Pareto front")
    for i in on_front:
        ax.annotate(
            names[i],
            (cost[i], val_acc[i]),
            fontsize=7,
            xytext=(4, 4),
            textcoords="offset points",
        )
    ax.set_xscale("log")
    ax.set_xlabel(label)
    ax.legend(fontsize=8)
axes[0].set_ylabel("validation accuracy")
plt.tight_layout()
plt.show()

# %% [markdown]
# **Figure 15.2.** Validation accuracy against size on disk (left) and against latency at
# batch 32 (right), both axes of cost on a log scale. Grey: every variant; red: the Pareto
# front, the variants that no other beats on both axes.
#
# ## 15.4 The headline
#
# The targets for the best combination, against the fp32 classifier of chapter 9: at least
# **8 times smaller**; at least **6 times faster** at batch 32 and at batch 1 on a CPU with int8
# dot-product instructions (VNNI), and at least **4 times** on a CPU with AVX2 only; and at most
# **1.0 point** of test accuracy lost, with the upper end of its 95 % paired interval at most
# **2.0 points**. Size and accuracy are checked on every machine. A speed-up depends on the
# hardware, so it is checked only on hardware classes that have an expected value
# (`dlbook.expected`) and reported elsewhere.
#
# Among the variants at least 8 times smaller and, on this machine, at least as fast as the
# speed target of its instruction sets (6x with VNNI, 4x with AVX2 only, no target elsewhere) at
# both batch sizes, the best is the one that loses least **validation** accuracy, the smaller
# one on a tie. If none is fast enough, the speed condition is dropped; if none is 8 times
# smaller, the smallest is reported and the size check fails. Its test accuracy is then
# reported once, and checked.
#
# Validation is nearly neutral ground. The pruned student chose its heads and neurons on
# training snippets, but it starts from the 3-layer student, whose validation accuracy chapter
# 14's sweep of the temperature and $\alpha$ read and whose number of epochs
# ({glue:text}`ch15_long_epochs`) the validation split chose; how many heads and neurons to keep
# was also compared on validation. Chapter 13's pruned classifier chose its heads and neurons on
# validation snippets. So the validation drops of the pruned classifier and of every variant
# built on the 3-layer student (its int8, short-table, ONNX Runtime and lean rows included) may
# be optimistic. The test split chose nothing; it is where the chosen variant is judged.

# %%
ratios = {n: board.ratios(n) for n in board.rows if n != "fp32 baseline"}
cpu_class = dlbook.env.hardware_class("cpu")  # the scoreboard times on the CPU
vnni = any(f in features for f in ("avx512_vnni", "avx_vnni", "amx_int8"))
speed_target = 6.0 if vnni else 4.0 if "avx2" in features else None
small_enough = [n for n, r in ratios.items() if r["smaller"] >= 8]
fast_enough = [
    n
    for n in small_enough
    if speed_target is None
    or min(ratios[n]["faster@1"], ratios[n]["faster@32"]) >= speed_target
]
fit = fast_enough or small_enough
target_text = "none" if speed_target is None else f"{speed_target:g}x"
dlbook.glue("ch15_speed_target", target_text)
print(
    f"speed target here: {target_text}; at least 8x smaller: {small_enough}; "
    f"of those, fast enough: {fast_enough}"
)
if fit:  # least validation drop; on a tie, the smaller
    best = min(fit, key=lambda n: (ratios[n]["val_drop_pts"], -ratios[n]["smaller"]))
else:
    best = max(ratios, key=lambda n: ratios[n]["smaller"])
r = ratios[best]
print(f"best combination, chosen on validation: {best}")
if speed_target is None:
    target_note = "no speed target is set for these instruction sets"
else:
    met = [
        f"{r[f'faster@{bs}']:.1f}x at batch {bs} ("
        + ("met" if r[f"faster@{bs}"] >= speed_target else "missed")
        + ")"
        for bs in (32, 1)
    ]
    target_note = (
        f"against the target of {speed_target:g}x for these instruction "
        "sets: "
        + " and ".join(met)
        + (
            ""
            if fast_enough
            else "; no variant at least 8x smaller met it "
            "at both batch sizes, so the choice ignored speed"
        )
    )
dlbook.glue("ch15_target_note", target_note)
print(target_note)
base_row, best_row = board.base(), board.rows[best]
dlbook.glue("ch15_best_name", best)
dlbook.glue("ch15_base_mb", base_row.size_mb)
dlbook.glue("ch15_base_ms32", base_row.latency_ms[32])
dlbook.glue("ch15_base_ms1", base_row.latency_ms[1])
dlbook.glue("ch15_best_mb", best_row.size_mb)
dlbook.glue("ch15_best_ms32", best_row.latency_ms[32])
dlbook.glue("ch15_best_ms1", best_row.latency_ms[1])
dlbook.glue("ch15_base_acc", base_row.accuracy)
dlbook.glue("ch15_best_acc", best_row.accuracy)
dlbook.glue("ch15_class", cpu_class)
for key in ("ch15_best_faster", "ch15_best_faster1"):
    dlbook.glue(f"{key}_expected", dlbook.expected.expected(key).describe(cpu_class))
smaller = dlbook.headline(
    "ch15_best_smaller", r["smaller"], profile=profile, at_least=8.0, fmt="{:.1f}"
)
faster = dlbook.hardware_headline(
    "ch15_best_faster",
    r["faster@32"],
    profile=profile,
    hardware=cpu_class,
    fmt="{:.1f}",
)
faster1 = dlbook.hardware_headline(
    "ch15_best_faster1",
    r["faster@1"],
    profile=profile,
    hardware=cpu_class,
    fmt="{:.1f}",
)
drop = dlbook.headline(
    "ch15_best_drop", r["acc_drop_pts"], profile=profile, at_most=1.0, fmt="{:.1f}"
)
print(
    f"{smaller:.1f}x smaller, {faster:.1f}x faster at batch 32, {faster1:.1f}x at "
    f"batch 1, {drop:.1f} points lost"
)

# %%
best_vs_base = board.compare(best)  # baseline - best, paired, on the same test snippets
reach = dlbook.headline(
    "ch15_best_reach",
    100 * best_vs_base.interval.high,
    profile=profile,
    at_most=2.0,
    fmt="{:.1f}",
)
dlbook.glue("ch15_best_drop_ci", best_vs_base.interval.points())
dlbook.glue(
    "ch15_best_verdict", best_vs_base.verdict("the baseline", "the best combination")
)
print(f"drop {best_vs_base.interval.points()} points")

# %% [markdown]
# The best combination, chosen on validation, is "{glue:text}`ch15_best_name`". It goes from
# {glue:text}`ch15_base_mb:.0f` MB to {glue:text}`ch15_best_mb:.1f` MB
# (**{glue:text}`ch15_best_smaller`x smaller**, asserted: at least 8), from
# {glue:text}`ch15_base_ms32:.0f` ms to {glue:text}`ch15_best_ms32:.0f` ms for a batch of 32
# (**{glue:text}`ch15_best_faster`x faster**) and from {glue:text}`ch15_base_ms1:.1f` ms to
# {glue:text}`ch15_best_ms1:.1f` ms for one snippet (**{glue:text}`ch15_best_faster1`x**), at
# {glue:text}`ch15_best_acc:.3f` test accuracy against {glue:text}`ch15_base_acc:.3f`:
# **{glue:text}`ch15_best_drop` points** lost (asserted: at most 1.0). The drop, then its 95 %
# paired interval, in points: {glue:text}`ch15_best_drop_ci`; its upper end,
# {glue:text}`ch15_best_reach` points, is the largest loss this test split leaves plausible
# (asserted: at most 2.0). Compared over the same snippets, {glue:text}`ch15_best_verdict`.
#
# The machine's instruction sets for matrix products: {glue:text}`ch15_isa`, hardware class
# {glue:text}`ch15_class`. The speed-up expected on this class: at batch 32
# {glue:text}`ch15_best_faster_expected`; at batch 1 {glue:text}`ch15_best_faster1_expected`.
# Measured in this run, {glue:text}`ch15_target_note`.
#
# For comparison, Tunstall, von Werra and Wolf took a BERT-base intent classifier from 418 MB to
# 64 MB and from 54 ms to 9 ms per query by combining distillation, ONNX Runtime and quantization
# {cite}`tunstall2022natural`: different model, task, hardware and runtime, the same recipe.
#
# A server that batches requests cares about throughput, snippets classified per second:

# %%
throughput = {
    n: 32 / (board.rows[n].latency_ms[32] / 1e3)  # snippets per second
    for n in ("fp32 baseline", best)
}
dlbook.glue("ch15_base_tput", throughput["fp32 baseline"])
dlbook.glue("ch15_best_tput", throughput[best])
for n, t in throughput.items():
    print(f"{n}: {t:,.0f} snippets per second at batch 32")

# %% [markdown]
# The best combination classifies {glue:text}`ch15_best_tput:,.0f` snippets per second in
# batches of 32, the baseline {glue:text}`ch15_base_tput:,.0f`.
#
# Latencies are medians on the machine in the provenance line; absolute milliseconds vary with
# whatever else the machine is doing. Timing in turns protects the ratios from drift within a
# run. How much they still move within this run shows in the per-round ratios: in each round
# every variant is timed once, so the baseline's time over a variant's time in the same round is
# one estimate of the speed-up. Their median, and the smallest and largest round:

# %%
per_round = {}
spread = {}
for name in ratios:
    row = {}
    for bs in (1, 32):
        base_ms = np.array(timings["fp32 baseline"][bs].runs_ms)  # (rounds,)
        rr = base_ms / np.array(timings[name][bs].runs_ms)  # (rounds,) speed-ups
        median = f"{np.median(rr):.2f} [{rr.min():.2f}, {rr.max():.2f}]"
        row[f"× faster, batch {bs}: median [lowest, highest round]"] = median
        if name == best:
            spread[bs] = (float(rr.min()), float(rr.max()))
    per_round[name] = row
display(pd.DataFrame.from_dict(per_round, orient="index"))
for bs in (1, 32):
    dlbook.glue(f"ch15_best_round_lo{bs}", spread[bs][0])
    dlbook.glue(f"ch15_best_round_hi{bs}", spread[bs][1])

# %% [markdown]
# For the best combination, the per-round speed-ups run from
# {glue:text}`ch15_best_round_lo32:.1f` to {glue:text}`ch15_best_round_hi32:.1f` at batch 32 and
# from {glue:text}`ch15_best_round_lo1:.1f` to {glue:text}`ch15_best_round_hi1:.1f` at batch 1.
# Timing in turns does not protect the ratios from differences between runs (another day,
# another load on the machine), which is why a speed-up is checked only where repeated runs on
# the same hardware class are behind the expected value, with a margin of at least 15 % below
# the slowest of them.
#
# ## 15.5 Which technique, for which budget
#
# Every statement below refers to the table of section 15.3 (the glued numbers come from it).

# %%
for key, name in [
    ("int8", "int8"),
    ("int8vocab", "int8 + vocabulary"),
    ("pruned", "pruned"),
    ("distilled", "distilled (3 layers)"),
    ("kdint8", "distilled + int8"),
    ("kdvocab", "distilled + int8 + vocabulary"),
    ("kdprune", "distilled + pruned + int8"),
    ("kdprunevocab", "distilled + pruned + int8 + vocabulary"),
    ("narrow", "narrow distilled + int8"),
]:
    dlbook.glue(f"ch15_{key}_smaller", ratios[name]["smaller"])
    dlbook.glue(f"ch15_{key}_faster32", ratios[name]["faster@32"])
    dlbook.glue(f"ch15_{key}_faster1", ratios[name]["faster@1"])
    dlbook.glue(f"ch15_{key}_drop_ci", board.compare(name).interval.points())
product = ratios["int8"]["faster@32"] * ratios["distilled (3 layers)"]["faster@32"]
dlbook.glue("ch15_product32", product)
base_correct = board.base().correct  # (test snippets,) the baseline right or wrong
differ = [n for n in ratios if not np.array_equal(board.rows[n].correct, base_correct)]
dlbook.glue(
    "ch15_n_intervals", len(differ)
)  # intervals of models that answer differently
kd_int8 = ratios["distilled + int8"]["faster@32"]
mb = {name: row.size_mb for name, row in board.rows.items()}
assert mb["distilled + int8"] < min(
    mb["int8"], mb["distilled (3 layers)"]
)  # the Summary
assert mb["distilled + pruned + int8"] < mb["distilled + int8"]
for name in (
    "int8",
    "distilled + int8",
    "distilled + pruned + int8",
    "narrow distilled + int8",
):  # every int8 model with a short-table twin
    assert mb[f"{name} + vocabulary"] < 0.75 * mb[name]  # a quarter less, at least
dlbook.glue("ch15_vs_product", "less than" if kd_int8 < product else "at least")

# %% [markdown]
# The lean runtime against the Hugging Face classes, model for model. Both were timed in the
# same rounds, so the difference is taken round by round: Hugging Face's time minus the lean
# runtime's (median, and the smallest and largest round):

# %%
saved, share = {}, {}
for key, name in [
    ("base", "fp32 baseline"),
    ("kd", "distilled + int8 + vocabulary"),
    ("kdprune", "distilled + pruned + int8 + vocabulary"),
    ("narrow", "narrow distilled + int8 + vocabulary"),
]:
    row = {}
    for bs in (1, 32):
        hf = np.array(timings[name][bs].runs_ms)  # (rounds,)
        ours = np.array(timings[f"{name}, lean runtime"][bs].runs_ms)  # (rounds,)
        d = hf - ours  # (rounds,) milliseconds less in the lean runtime
        row[f"ms, batch {bs}"] = f"{np.median(hf):.2f} -> {np.median(ours):.2f}"
        diff = f"{np.median(d):+.2f} [{d.min():+.2f}, {d.max():+.2f}]"
        row[f"difference, batch {bs}: median [range]"] = diff
        dlbook.glue(f"ch15_lean_{key}_ms{bs}", row[f"ms, batch {bs}"])
        dlbook.glue(f"ch15_lean_{key}_diff{bs}", diff)
        share[key, bs] = d / hf  # (rounds,) share of the Hugging Face time
        dlbook.glue(f"ch15_lean_{key}_share{bs}", float(np.median(share[key, bs])))
    saved[name] = row
display(pd.DataFrame.from_dict(saved, orient="index"))
gap = share["kdprune", 1] - share["base", 1]  # (rounds,) the same rounds for both
if gap.min() > 0:
    reading = "a larger share than the baseline's, in every round"
elif gap.max() < 0:
    reading = "a smaller share than the baseline's, in every round"
else:
    reading = "larger than the baseline's in some rounds and smaller in others"
dlbook.glue("ch15_lean_reading", reading)

# %% [markdown]
# - **Memory or download size is the budget.** Quantize the embeddings and the linear layers:
#   int8 alone makes the model {glue:text}`ch15_int8_smaller:.1f`x smaller with no training and
#   no data (the conversion took {glue:text}`ch15_int8_seconds:.1f` s here), for an accuracy
#   drop of {glue:text}`ch15_int8_drop_ci` points (the drop, then its 95 % paired interval).
#   Then shorten the word table: keeping the training vocabulary makes it
#   {glue:text}`ch15_int8vocab_smaller:.1f`x ({glue:text}`ch15_int8vocab_drop_ci` points), with
#   no training either. Removing layers or heads helps less (pruned:
#   {glue:text}`ch15_pruned_smaller:.1f`x; 3-layer student:
#   {glue:text}`ch15_distilled_smaller:.1f`x) because the word-embedding table dominates; on top
#   of int8 and the short table they take it to {glue:text}`ch15_kdvocab_smaller:.1f`x (3-layer
#   student) and {glue:text}`ch15_kdprunevocab_smaller:.1f`x (its pruned version).
# - **Latency at batch 32 (throughput) is the budget.** Less arithmetic per token is what helps:
#   fewer layers (3-layer student: {glue:text}`ch15_distilled_faster32:.1f`x), fewer heads and
#   neurons (pruned: {glue:text}`ch15_pruned_faster32:.1f`x), or int8 matrix products (int8
#   alone: {glue:text}`ch15_int8_faster32:.1f`x). They compound: distilled + int8 is
#   {glue:text}`ch15_kdint8_faster32:.1f`x, {glue:text}`ch15_vs_product` the product of the two
#   alone ({glue:text}`ch15_product32:.1f`x), and cutting the student's heads and neurons before
#   int8 makes it {glue:text}`ch15_kdprune_faster32:.1f`x. The shorter word table saves bytes,
#   not arithmetic: a lookup reads the same number of rows from a shorter table.
# - **Latency at batch 1 is the budget.** A single short snippet makes every matrix product
#   small, so fixed costs per layer and per call weigh more, and int8's dynamic quantization of
#   the activations is paid on every call. Compare int8 alone at batch 1
#   ({glue:text}`ch15_int8_faster1:.1f`x) with batch 32 above, the 3-layer student
#   ({glue:text}`ch15_distilled_faster1:.1f`x) and the pruned student with int8
#   ({glue:text}`ch15_kdprune_faster1:.1f`x): removing whole layers removes their fixed costs
#   too. The lean runtime shows what running the same weights differently changes (Hugging Face
#   classes, then lean runtime, in ms; then the difference per round, median [range]). At batch
#   1: the fp32 baseline {glue:text}`ch15_lean_base_ms1` ({glue:text}`ch15_lean_base_diff1`),
#   the pruned student with int8 and the short table {glue:text}`ch15_lean_kdprune_ms1`
#   ({glue:text}`ch15_lean_kdprune_diff1`), that is {glue:text}`ch15_lean_kdprune_share1:.0%` of
#   its time against {glue:text}`ch15_lean_base_share1:.0%` of the baseline's
#   ({glue:text}`ch15_lean_reading`). At batch 32, where each product holds 32 snippets padded
#   to the longest: {glue:text}`ch15_lean_base_ms32` ({glue:text}`ch15_lean_base_diff32`) and
#   {glue:text}`ch15_lean_kdprune_ms32` ({glue:text}`ch15_lean_kdprune_diff32`). The difference
#   mixes less Python, one stacked Q/K/V product and a different attention kernel. A cost paid
#   once per call, as Python's is, would take about the same milliseconds at both batch sizes,
#   so what separates the batch-32 difference from the batch-1 difference is arithmetic done
#   differently, or timing noise where the per-round ranges overlap. The other explanations are not measured separately; the per-round ranges of
#   section 15.4 show how much a ratio moves within one run.
# - **Accuracy is the budget.** Compare the accuracy drops with their 95 % paired intervals, in
#   points: int8 {glue:text}`ch15_int8_drop_ci`, pruned {glue:text}`ch15_pruned_drop_ci`,
#   distilled + int8 {glue:text}`ch15_kdint8_drop_ci`, distilled + pruned + int8
#   {glue:text}`ch15_kdprune_drop_ci`, with the short table
#   {glue:text}`ch15_kdprunevocab_drop_ci`, narrow + int8 {glue:text}`ch15_narrow_drop_ci`. A
#   drop whose interval contains 0 is not distinguishable from no loss on this test split; the
#   loss may still be as large as the interval's upper end. With {glue:text}`ch15_n_intervals`
#   intervals in the table for models that answer differently from the baseline (several of them
#   near-copies of each other, such as a lean row and its twin), one may exclude 0 by chance;
#   read an isolated one with care. The interval covers the choice of test snippets only; a
#   variant that was trained also moves with its training seed.
# - **Training budget.** int8 and the short word table need no training (the table needs the
#   training snippets' tokens); pruning needs importance scores and a short fine-tune;
#   distillation needs a full training run of the student (chapter 14), paid once however many
#   requests the model then serves. Stacking them costs the sum: the distilled + pruned student
#   costs the 3-layer student's training plus another distillation run of
#   {glue:text}`ch15_prune_epochs` epoch(s).
#
# ## Summary
#
# - One protocol, one run, one machine: sizes from the saved `state_dict` (or the ONNX file),
#   latencies timed in turns at fixed threads, accuracy on the same validation (choosing) and
#   test (reporting) splits, provenance and instruction sets printed.
# - In a small BERT the word-embedding table holds most of the bytes; quantizing it and keeping
#   only the rows the training data uses is what makes a model many times smaller. int8 matrix
#   products and fewer layers, heads and neurons make it faster.
# - Techniques compound: a distilled student with int8 weights is smaller than either technique
#   alone makes the model (asserted), pruning the student's heads and neurons before quantizing
#   makes it smaller still (asserted), and the short word table takes at least a quarter off
#   every int8 model it is applied to (asserted). The best combination is named in section
#   15.4, where its size, speed and accuracy are checked against the chapter's targets.
# - How a model is run matters too: the same weights without the library's generality
#   (`lean.lean_classifier`, float32 logits equal to rounding) can take a different time;
#   section 15.5 measures the difference at batch 1 and 32 for the baseline and the pruned
#   student, with its per-round range.
#
# ## Exercises
#
# :::{exercise}
# :label: ch15-ex-predict
# Before measuring, predict the size of "distilled + int8" from the parameter counts printed in
# section 15.1: one byte per int8 weight, plus one float32 scale per embedding row and a single
# float scale per quantized linear layer (`int8_dynamic`'s default: one scale per weight
# matrix), and four bytes for every bias and LayerNorm parameter.
# Compare with the table. Then predict how much the short word table saves.
# :::
#
# :::{solution} ch15-ex-predict
# :class: dropdown
# The student has the teacher's embeddings ($30{,}522 + 512 + 2$ rows of 384, about 11.9 M
# entries, so about 11.9 MB in int8 plus 0.12 MB of row scales) and three layers of about 1.77 M
# linear weights each (5.3 MB in int8), plus small float parts (biases, LayerNorms, scales): about
# 17.5 MB. The table's number is the same to within the serialisation overhead. The embeddings
# are still two thirds of it. The short table keeps the rows printed in section 15.1 at 384
# bytes plus a 4-byte scale each; the id map in front of it adds 8 bytes per original id
# (30,522 int64 entries, about 0.24 MB).
# :::
#
# :::{exercise}
# :label: ch15-ex-pareto
# A variant is worth keeping only if no other variant is at least as good in every respect and
# better in one. Write `pareto_front(costs)` that takes an (N, K) tensor of costs (smaller is
# better, e.g. size, latency, error) and returns the indices of the non-dominated rows, in
# ascending order. Apply it to the scoreboard with columns `size_MB`, `ms@32`, `ms@1` and
# `1 - val_accuracy`: deciding which variants are worth keeping is a choice, so it is made on the
# validation split, not the test split.
# :::


# %%
def pareto_front(costs):
    raise NotImplementedError("your code here")


dlbook.exercises.check("ch15.pareto_front", pareto_front)

# %% [markdown]
# ```{solution-start} ch15-ex-pareto
# :class: dropdown
# ```


# %% tags=["solution"]
def pareto_front_solution(costs):
    n = costs.shape[0]
    keep = []
    for i in range(n):
        no_worse = (costs <= costs[i]).all(
            dim=1
        )  # (N,): rows at least as good everywhere
        better = (costs < costs[i]).any(dim=1)  # (N,): rows strictly better somewhere
        if not (no_worse & better).any():
            keep.append(i)
    return keep


assert dlbook.exercises.check("ch15.pareto_front", pareto_front_solution)
columns = [table["size_MB"], table["ms@32"], table["ms@1"], 1 - table["val_accuracy"]]
costs = torch.tensor(np.stack(columns, axis=1), dtype=torch.float64)  # (N, 4)
print(
    "on the Pareto front (validation error):",
    [table.index[i] for i in pareto_front_solution(costs)],
)

# %% [markdown]
# ```{solution-end}
# ```
#
# :::{exercise}
# :label: ch15-ex-vocab
# Vocabulary trimming by hand: write `kept_vocabulary(token_ids, special_ids)` returning the
# sorted distinct ids that occur in the tokenised training snippets or are special tokens (what
# `prune.prune_vocabulary` keeps with `min_count=1`). How many rows would a table that keeps only
# tokens seen at least twice have, and how many validation tokens would it turn into `[UNK]`?
# :::


# %%
def kept_vocabulary(token_ids, special_ids):
    raise NotImplementedError("your code here")


dlbook.exercises.check("ch15.kept_vocabulary", kept_vocabulary)

# %% [markdown]
# ```{solution-start} ch15-ex-vocab
# :class: dropdown
# ```
# Counting once more gives the rows seen at least twice; any validation token outside them maps
# to `[UNK]`, so a snippet with a rare word loses that word. That is the price: measure the
# accuracy (on validation) before claiming the saving.


# %% tags=["solution"]
def kept_vocabulary_solution(token_ids, special_ids):
    kept = set(special_ids)
    for ids in token_ids:
        kept.update(ids)
    return sorted(kept)


assert dlbook.exercises.check("ch15.kept_vocabulary", kept_vocabulary_solution)
train_ids = tokenizer(train_texts)["input_ids"]  # whole snippets, as compact() counts
kept = kept_vocabulary_solution(train_ids, tokenizer.all_special_ids)
assert len(kept) == vmap.new_size  # the same rows as prune.prune_vocabulary
flat = [i for ids in train_ids for i in ids]  # every training token
counts = np.bincount(flat, minlength=tokenizer.vocab_size)  # (V,)
twice = set(np.flatnonzero(counts >= 2).tolist()) | set(tokenizer.all_special_ids)
val_ids = np.array([i for ids in val_tok["input_ids"] for i in ids])  # (tokens,)
unk_twice = 1 - np.isin(val_ids, list(twice)).mean()
unk_once = 1 - np.isin(val_ids, kept).mean()
print(
    f"seen at least once: {len(kept):,} rows, {unk_once:.2%} of validation tokens "
    f"become [UNK]; at least twice: {len(twice):,} rows, {unk_twice:.2%}"
)

# %% [markdown]
# ```{solution-end}
# ```
#
# :::{exercise}
# :label: ch15-ex-threads
# Re-run the scoreboard's timing with `threads=1` and with as many threads as your machine has.
# Which ratios change, and why does a ranking measured with one thread count not carry over to
# another?
# :::
#
# :::{solution} ch15-ex-threads
# :class: dropdown
# Larger matrix products (batch 32, the fp32 baseline) parallelise better than small ones (batch 1,
# the 3-layer or int8 variants), so adding threads usually helps the big model more and the
# speed-up ratios shrink; with one thread they are closest to the ratio of arithmetic work. This
# is why every table in the book prints its thread count.
# :::
#
# ## Further reading
#
# Chapter 8 of *Natural Language Processing with Transformers* walks through the same
# combination (distillation, quantization, ONNX Runtime) for an intent classifier
# {cite}`tunstall2022natural`. DistilBERT {cite}`sanh2019distilbert` and the integer-arithmetic
# quantization of Jacob et al. {cite}`jacob2018quantization` are the two building blocks used here;
# Abdaoui et al. {cite}`abdaoui2020load` cut the vocabulary of multilingual BERT to the languages
# a task needs, the same lever as this chapter's short word table.
