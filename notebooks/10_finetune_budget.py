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
# (ch10)=
# # 10. Fine-tuning on a budget
#
# Chapter 9 fine-tuned every weight of a small encoder in fp32, and a laptop coped. Bigger
# models, longer inputs or a smaller GPU change that: memory runs out first, then time. This
# chapter takes the same task (Rotten Tomatoes sentiment with the offline MiniLM
# `BertForSequenceClassification`) and measures, one at a time, the standard ways to make
# fine-tuning cheaper: what each saves in time and peak memory, and what it costs in accuracy.
#
# By the end of this chapter you can
#
# 1. count where the memory of a training step goes (weights, gradients, optimizer state,
#    activations) and measure its peak, on a GPU and on a CPU;
# 2. train under mixed precision with `torch.autocast` (and a `GradScaler` for fp16), and say
#    what stays in fp32 and why;
# 3. trade memory for compute with gradient accumulation (with the loss scaled so the gradient
#    is exactly the big batch's) and gradient checkpointing;
# 4. cut the trainable parameters by freezing layers or with LoRA, written from its equation and
#    checked against the `peft` library, and merge an adapter back into the weights;
# 5. use early stopping, weight decay and a class-weighted loss where the data call for them.

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
import itertools
import math
import os

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import peft
import torch
import torch.nn.functional as F
from IPython.display import display
from sklearn.utils.class_weight import compute_class_weight
from torch import nn
from transformers import AutoTokenizer, BertForSequenceClassification

import dlbook
import dlbook.budget
import dlbook.exercises
import dlbook.lora
import dlbook.measure
import dlbook.memory
import dlbook.stats
from dlbook import assets, finetune
from dlbook.train import count_parameters

device = dlbook.setup(seed=0)

# %% tags=["parameters", "hide-input"]
profile = os.environ.get("DLBOOK_PROFILE", "full")

# %% tags=["hide-input"]
sizes = dlbook.by_profile(
    profile,
    # Every training run is one epoch over the first n_train training snippets (the
    # class-imbalance runs: a subset of them), so that the chapter's eight to ten runs
    # fit in a few minutes; only the early-stopping run (section 10.9) differs:
    # es_epochs epochs over its n_es_train snippets.
    smoke=dict(
        n_train=64,
        n_validation=32,
        n_test=64,
        max_length=32,
        batch_size=16,
        lr=1e-4,
        lora_lr=1e-3,
        lora_r=8,
        lora_alpha=16,
        freeze_k=4,
        bench_batch=8,
        bench_length=32,
        bench_rounds=2,
        group_time_steps=2,
        n_lowp_eval=32,
        peft_steps=2,
        n_es_train=32,
        es_batch=16,
        es_epochs=2,
        es_eval_every=1,
        patience=2,
        imbalance=9,
    ),
    full=dict(
        n_train=2_000,  # training snippets, one epoch per run
        n_validation=200,  # validation snippets: early stopping, LoRA merge check
        n_test=600,  # test snippets behind every test accuracy
        max_length=64,  # tokens kept per snippet
        batch_size=32,  # snippets per training batch
        lr=1e-4,  # peak learning rate of every run but LoRA
        lora_lr=3e-3,  # peak learning rate of the LoRA runs
        lora_r=8,  # LoRA rank r
        lora_alpha=16,  # LoRA scale: the update is multiplied by alpha / r
        freeze_k=4,  # lower encoder layers frozen (section 10.7)
        bench_batch=16,  # snippets in the batch timed and measured
        bench_length=64,  # tokens that batch is padded to
        bench_rounds=5,  # timed rounds, each variant once per round
        group_time_steps=16,  # batches timed per loader (10.3), one per round
        n_lowp_eval=64,  # test snippets evaluated in low precision, on a CPU
        peft_steps=3,  # steps on which our LoRA and peft's are compared
        n_es_train=256,  # training snippets of the early-stopping run (10.9)
        es_batch=16,  # its batch size
        es_epochs=8,  # its epochs
        es_eval_every=8,  # its steps between validation evaluations
        patience=4,  # its evaluations without improvement before stopping
        imbalance=9,  # positives kept per negative (section 10.9)
    ),
)
sizes

# %% [markdown]
# ## 10.1 Where the memory of a training step goes
#
# A training step with AdamW keeps four kinds of tensors alive:
#
# - the **weights**, $4P$ bytes in fp32 for $P$ parameters;
# - a **gradient** per trainable weight, $4P_t$ bytes for $P_t$ trainable parameters;
# - AdamW's two running moments per trainable weight, $8P_t$ bytes;
# - the **activations** saved in the forward pass for the backward pass, which grow with batch
#   size times sequence length, and are freed as backward consumes them.
#
# The first three give the rule of thumb
#
# $$
# M_{\text{state}} = 4P + (4 + 8)\,P_t \ \text{bytes}
# $$ (eq-ch10-state)
#
# plus activations and temporaries. Every technique of this chapter attacks one term: mixed
# precision and checkpointing the activations, accumulation the batch size behind them, freezing
# and LoRA the $P_t$. To see it we need to **measure** peak memory, with the tools chapter 6
# built for attention: on a CUDA GPU the allocator's count (`torch.cuda.max_memory_allocated`),
# on the CPU `dlbook.memory.TensorMemoryTracker`, a `TorchDispatchMode` that sees every tensor
# operation, adds the bytes of each new output storage, and subtracts them when Python frees that
# storage; `dlbook.memory.peak_memory` picks the right one for the device.
#
# What it sees and what it misses is in the module's docstring: it counts the tensors created
# **inside** the `with` block (activations, gradients, optimizer state, temporaries), not the
# weights that existed before, nor a kernel's private scratch memory or the allocator's cache.
# A first check of the tracker and of the $12P_t$ part of Eq. {eq}`eq-ch10-state`: after one AdamW
# step, the gradients and both moments of the trainable parameters must still be alive.

# %%
model_path = assets.minilm_path()
tokenizer = AutoTokenizer.from_pretrained(model_path)


def fresh_model():
    """The chapter 9 starting point: pretrained MiniLM plus a fresh head (seeded)."""
    torch.manual_seed(0)
    model = finetune.new_classifier(model_path).to(device)
    # An encoder never caches keys and values; with the config's default (True),
    # transformers
    # would warn that caching and gradient checkpointing (section 10.6) do not mix.
    model.config.use_cache = False
    return model


model = fresh_model()
n_params = count_parameters(model, trainable_only=False)
batch = tokenizer(
    ["A small test.", "Another, slightly longer test sentence."],
    padding=True,
    return_tensors="pt",
).to(device)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
with dlbook.memory.TensorMemoryTracker(device) as tracker:
    model(**batch, labels=torch.tensor([0, 1], device=device)).loss.backward()
    optimizer.step()  # creates exp_avg and exp_avg_sq, keeps the .grad tensors
state_bytes = 12 * n_params  # gradients 4 P_t + moments 8 P_t, all trainable here
print(
    f"P = {n_params:,} | still alive after the step: {tracker.current_bytes:,} bytes | "
    f"12 P = {state_bytes:,} | "
    f"peak inside the step {tracker.peak_bytes / 2**20:.1f} MiB"
)
if device.type == "cpu":
    assert tracker.current_bytes == state_bytes
dlbook.glue("ch10_n_params", n_params)
dlbook.glue("ch10_weights_mib", 4 * n_params / 2**20)
dlbook.glue("ch10_state_mib", state_bytes / 2**20)
del optimizer, tracker, batch

# %% [markdown]
# The count is exact (AdamW's scalar step counters, a few hundred bytes, are made without an
# operation the tracker sees): {glue:text}`ch10_n_params:,` parameters, so {glue:text}`ch10_weights_mib:.0f` MiB
# of weights and {glue:text}`ch10_state_mib:.0f` MiB of gradients and moments, against which the
# activations of a batch of short snippets are small. Hold that thought: for a model this size,
# the optimizer state is the bigger target.
#
# ## 10.2 The data and the fp32 baseline
#
# The recipe is chapter 9's, on a subset: the first `n_train` training snippets for one epoch,
# `n_validation` validation snippets for early stopping, and a fixed subset of `n_test` test
# snippets for every accuracy in this chapter.

# %%
reviews = assets.rotten_tomatoes()
train_tok = finetune.tokenize_dataset(
    reviews["train"].select(range(sizes["n_train"])), tokenizer, sizes["max_length"]
)
val_tok = finetune.tokenize_dataset(
    reviews["validation"].select(range(sizes["n_validation"])),
    tokenizer,
    sizes["max_length"],
)
test_tok = finetune.tokenize_dataset(
    reviews["test"].select(range(sizes["n_test"])), tokenizer, sizes["max_length"]
)
y_test = np.array(test_tok["labels"])
majority = float(max(y_test.mean(), 1 - y_test.mean()))
dlbook.glue("ch10_majority", majority)
print(
    f"train {len(train_tok):,} | validation {len(val_tok):,} | "
    f"test {len(test_tok):,} | majority rate {majority:.3f}"
)

# %% [markdown]
# All training goes through one loop, `dlbook.budget.train_budget`: chapter 9's
# `train_classifier` (AdamW, warm-up and linear decay, clipping, seeded order and dropout) with a
# switch for each technique below. We build each switch by hand in its section; here is the whole
# function, to come back to:

# %%
dlbook.show(dlbook.budget.train_budget)

# %% [markdown]
# Two kinds of measurement per technique. **Accuracy** comes from a real fine-tuning run, evaluated
# on the test subset. **Time per step and peak memory** come from a benchmark on one fixed batch
# of `bench_batch` snippets padded to `bench_length` tokens, so that every variant does exactly
# the same work. `dlbook.budget.make_train_step` turns a variant into one optimizer step on that
# batch. Its first call, which also creates AdamW's state, is the one whose peak memory we
# measure; the table adds the weights the model already holds, so "peak MiB" is everything alive
# at the worst moment of a step. The times come later, in section 10.10: every variant's step
# timed warm, without the memory tracker, in turns within the same rounds
# (`dlbook.measure.interleaved_calls`), at the same thread count.

# %%
bench_rows = reviews["train"].select(range(sizes["bench_batch"]))
bench_batch = dict(
    tokenizer(
        list(bench_rows["text"]),
        truncation=True,
        max_length=sizes["bench_length"],
        padding="max_length",
        return_tensors="pt",
    )
)  # (bench_batch, bench_length)
bench_batch["labels"] = torch.tensor(list(bench_rows["label"]))  # (bench_batch,)
bench_steps = {}  # variant -> its step function, timed together in section 10.10


def bench(model, name, **flags):
    """Peak MiB of the first step, weights included; keeps the step for the timing."""
    step = dlbook.budget.make_train_step(
        model, bench_batch, lr=1e-5, device=device, **flags
    )
    peak = dlbook.memory.peak_memory(step, device).peak_bytes  # allocated by the step
    weights = dlbook.budget.model_bytes(model)
    bench_steps[name] = step
    return {"weights MiB": weights / 2**20, "peak MiB": (weights + peak) / 2**20}


def accuracy(model, dataset=test_tok):
    return finetune.evaluate_classifier(
        model, dataset, tokenizer, device=device
    ).accuracy


results = {}  # technique -> its row in the final table

# %%
base = fresh_model()
base_hist = dlbook.budget.train_budget(
    base,
    train_tok,
    tokenizer,
    epochs=1,
    batch_size=sizes["batch_size"],
    lr=sizes["lr"],
    device=device,
)
base_acc = accuracy(base)
results["fp32, full fine-tune"] = dict(
    trainable=count_parameters(base),
    accuracy=base_acc,
    train_s=base_hist.seconds,
    **bench(fresh_model(), "fp32, full fine-tune"),
)
dlbook.headline("ch10_base_acc", base_acc, profile=profile, at_least=0.75)
dlbook.glue("ch10_n_train", len(train_tok))
dlbook.glue("ch10_lora_r", sizes["lora_r"])
print(results["fp32, full fine-tune"])

# %% [markdown]
# One epoch over {glue:text}`ch10_n_train:,` snippets reaches {glue:text}`ch10_base_acc` on the test
# subset (always answering the majority class would score {glue:text}`ch10_majority:.3f`). This is
# the row every technique is compared with.
#
# ## 10.3 Less padding: batches of similar length
#
# **Idea.** The collator pads every snippet of a batch to the longest one in it, and the model
# computes on the padding as on real tokens (the attention mask only keeps padding from being
# *attended to*). Review snippets range from a few tokens to `max_length`, so a random batch of 32
# is mostly as long as its longest member. Sorting by length would remove the padding but also
# the randomness of the batches; the compromise, which `Trainer` applies with
# `TrainingArguments(group_by_length=True)`, is to shuffle, cut the shuffled order into
# **mega-batches** of 50 batches, and sort only inside each mega-batch. Our loop takes the same
# sampler (`transformers`' `LengthGroupedSampler`) through `make_loader(..., group_by_length=True)`.
# It costs nothing in memory or accuracy terms and saves compute in proportion to the padding
# removed. How much padding is there? Count the tokens the model sees per real token, over one
# epoch of each kind of loader:

# %%
loaders = {
    name: finetune.make_loader(
        train_tok, tokenizer, sizes["batch_size"], shuffle=True, group_by_length=g
    )
    for name, g in [("random batches", False), ("grouped by length", True)]
}
counts = {
    name: finetune.batch_token_counts(loader) for name, loader in loaders.items()
}  # name -> (n_batches, 2)
pad_ratio = {name: c[:, 1].sum() / c[:, 0].sum() for name, c in counts.items()}
assert (
    counts["random batches"][:, 0].sum() == counts["grouped by length"][:, 0].sum()
)  # same snippets, same tokens
print(
    {name: f"{r:.2f} tokens computed per real token" for name, r in pad_ratio.items()}
)
dlbook.glue("ch10_pad_random", pad_ratio["random batches"])
dlbook.glue("ch10_pad_grouped", pad_ratio["grouped by length"])

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.2), sharey=True)
for ax, (name, c) in zip(axes, counts.items(), strict=True):
    shown = c[:40]
    ax.bar(range(len(shown)), shown[:, 0], color="C0", label="real tokens")
    ax.bar(
        range(len(shown)),
        shown[:, 1] - shown[:, 0],
        bottom=shown[:, 0],
        color="C3",
        alpha=0.5,
        label="padding",
    )
    ax.set_title(f"{name}: {pad_ratio[name]:.2f} tokens per real token", fontsize=10)
    ax.set_xlabel("batch")
axes[0].set_ylabel("tokens in the batch")
axes[0].legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# **Figure 10.1.** Real tokens (blue) and padding (red) in the first batches of one epoch of
# the training split, batches drawn at random (left) and grouped by length (right). Grouping
# cuts the tokens computed per real token from {glue:text}`ch10_pad_random:.2f` to
# {glue:text}`ch10_pad_grouped:.2f`.
#
# The same fine-tuning run as the baseline, with grouped batches: same snippets, same model, same
# number of steps, only the order (and so the padding) changes.

# %%
grouped = fresh_model()
grouped_hist = dlbook.budget.train_budget(
    grouped,
    train_tok,
    tokenizer,
    epochs=1,
    batch_size=sizes["batch_size"],
    lr=sizes["lr"],
    group_by_length=True,
    device=device,
)
grouped_acc = accuracy(grouped)
results["group by length"] = dict(
    trainable=count_parameters(grouped),
    accuracy=grouped_acc,
    train_s=grouped_hist.seconds,
    **dict.fromkeys(["s/step", "weights MiB", "peak MiB"], math.nan),
)


def correct(model):  # (n_test,) True where the model is right
    preds = finetune.evaluate_classifier(
        model, test_tok, tokenizer, device=device
    ).preds
    return preds.numpy() == y_test


base_correct = correct(base)  # (n_test,) reused by each paired comparison with it
acc_diff = dlbook.stats.compare(correct(grouped), base_correct)  # grouped - baseline
print(f"test accuracy {base_acc:.3f} -> {grouped_acc:.3f} | difference {acc_diff}")
dlbook.headline("ch10_group_acc", grouped_acc, profile=profile, at_least=0.75)
ci = acc_diff.interval
dlbook.glue("ch10_group_acc_ci", f"[{ci.low:+.3f}, {ci.high:+.3f}]")
dlbook.glue(
    "ch10_group_acc_verdict", "a measurable" if acc_diff.measurable else "no measurable"
)
del grouped

# %% [markdown]
# Two training runs one after the other are a poor clock: whatever else the machine does changes
# between them. The time comparison therefore uses its own measurement: `group_time_steps`
# batches spread evenly over one epoch of each loader, one training step each, the two loaders
# taking turns within every round (and swapping who goes first from round to round). The ratio of
# the summed step times estimates the ratio of the epochs; a bootstrap over the rounds gives its
# spread.


# %%
def cycling_step(loader, n):
    """A training step on the next of `n` batches spread evenly over `loader`."""
    batches = list(loader)
    picked = [
        batches[i] for i in np.linspace(0, len(batches) - 1, n).round().astype(int)
    ]
    model = fresh_model().train()
    opt = finetune.make_optimizer(model, 1e-5, 0.01)
    order = itertools.cycle(picked)

    def step():
        batch = {k: v.to(device) for k, v in next(order).items()}
        model(**batch).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


n_timed = sizes["group_time_steps"]
with dlbook.measure.fixed_threads(torch.get_num_threads()):
    group_times = dlbook.measure.interleaved_calls(
        {name: cycling_step(loader, n_timed) for name, loader in loaders.items()},
        rounds=n_timed,
        warmup=1,
        device=device,
    )
t_rand = np.array(
    group_times["random batches"].runs_ms
)  # (n_timed,) one step per round
t_grp = np.array(group_times["grouped by length"].runs_ms)
ratio_ci = dlbook.stats.bootstrap_ratio(
    t_grp, t_rand
)  # sum / sum, rounds resampled in pairs
time_ratio, ratio_lo, ratio_hi = ratio_ci.diff, ratio_ci.low, ratio_ci.high
print(
    f"{n_timed} steps each, interleaved: grouped / random = {time_ratio:.2f} "
    f"(95 % bootstrap interval {ratio_lo:.2f} to {ratio_hi:.2f})"
)
dlbook.hardware_headline(
    "ch10_group_time_ratio", time_ratio, profile=profile
)  # levels: dlbook.expected
dlbook.glue("ch10_group_time_ci", f"{ratio_lo:.2f} to {ratio_hi:.2f}")

# %% [markdown]
# Grouping cut the padded tokens from {glue:text}`ch10_pad_random:.2f` to
# {glue:text}`ch10_pad_grouped:.2f` per real token, and a training step took
# {glue:text}`ch10_group_time_ratio:.2f` of the baseline's time (95 % interval
# {glue:text}`ch10_group_time_ci`), at {glue:text}`ch10_group_acc:.3f` test accuracy against
# {glue:text}`ch10_base_acc:.3f`: a paired difference of {glue:text}`ch10_group_acc_ci` (95 %
# bootstrap interval over the test snippets, with McNemar's test): {glue:text}`ch10_group_acc_verdict`
# difference in accuracy. The time falls less than the tokens
# because part of each step does not depend on the length at all: the optimizer updates all
# {glue:text}`ch10_n_params:,` weights whatever the batch holds. The one thing to watch is that
# batches of short snippets and batches of long ones now alternate, so the loss curve gets
# bumpier; the gradient is still unbiased over an epoch, because every snippet is seen once.
# The columns "s/step" and "peak MiB" stay empty for this technique: the benchmark batches below are
# padded to a fixed length on purpose, so grouping cannot change them.
#
# From here on, **every fine-tuning run in this chapter groups by length**: compare their training
# times with this row, not with the baseline's.
#
# ## 10.4 Mixed precision
#
# **Idea.** Most of the arithmetic of a transformer is matrix products, and on hardware built for
# it a product of 16-bit numbers is several times faster than one of 32-bit numbers and needs half
# the memory traffic. Mixed-precision training {cite}`micikevicius2018mixed` runs those products
# in 16 bits and keeps in fp32 what needs the precision:
#
# - the **master weights** and the **optimizer state**: an update $\eta\,\Delta w$ is often
#   smaller than the spacing of 16-bit numbers near $w$ and would round away to nothing;
# - **reductions** over many terms (sums in softmax, the mean and variance of LayerNorm, the loss):
#   errors of 16-bit partial sums pile up.
#
# Two 16-bit formats exist. **fp16** has 10 mantissa bits but a small range (its smallest
# normal number is about $6 \times 10^{-5}$): small gradients underflow to zero, so the loss is
# multiplied by a factor $S$ before backward and the gradients divided by $S$ before the update
# (**loss scaling**, `torch.amp.GradScaler`, which also picks $S$ and skips steps that overflow).
# **bf16** keeps fp32's 8-bit exponent (same range) with only 7 mantissa bits, so it needs no
# scaling. `torch.autocast` applies the policy per operation: products in the 16-bit type,
# range-sensitive operations in fp32. Our loop picks the path by device type:

# %%
dlbook.show(dlbook.budget.resolve_precision)

# %% [markdown]
# The dtypes autocast actually produced, caught with forward hooks on a few modules of the model,
# plus the loss the loop computes from the logits:

# %%
precision = dlbook.budget.resolve_precision("auto", device)
seen = {}
watch = {
    "embeddings (LayerNorm)": base.bert.embeddings,
    "query projection": base.bert.encoder.layer[0].attention.self.query,
    "attention block out (LayerNorm)": base.bert.encoder.layer[0].attention.output,
    "classifier": base.classifier,
}
hooks = [
    m.register_forward_hook(
        lambda mod, inp, out, name=name: seen.__setitem__(name, out.dtype)
    )
    for name, m in watch.items()
]
batch = tokenizer(["A tense, well acted thriller."], return_tensors="pt").to(device)
with torch.no_grad(), dlbook.budget.autocast_context(precision, device):
    logits = base(**batch).logits  # (1, 2)
    seen["cross-entropy loss"] = F.cross_entropy(
        logits, torch.tensor([1], device=device)
    ).dtype
for h in hooks:
    h.remove()
seen["weights (master copy)"] = base.bert.encoder.layer[
    0
].attention.self.query.weight.dtype
print(f"autocast to {precision} on {device.type}:")
display(
    pd.Series(
        {k: str(v).removeprefix("torch.") for k, v in seen.items()}, name="dtype"
    ).to_frame()
)
low = dlbook.budget.DTYPES[precision]
assert seen["query projection"] == low and seen["classifier"] == low
assert (
    seen["cross-entropy loss"] == torch.float32
    and seen["weights (master copy)"] == torch.float32
)

# %% [markdown]
# The linear layers return 16-bit activations, the weights stay fp32 (autocast casts a
# 16-bit copy for each product and caches it during the forward pass), and the cross-entropy runs
# in fp32. Where the LayerNorm outputs land depends on the backend: CUDA's autocast lists
# `layer_norm` and `softmax` among the operations it runs in fp32, while on the CPU they return
# the 16-bit type but accumulate their sums in fp32 inside the kernel. Our loop also calls
# `.float()` on the logits before the loss, and gives the optimizer the fp32 weights, so its
# moments are fp32.
#
# **Loss scaling, verified.** Multiplying the loss by $S$ multiplies every gradient by $S$;
# `GradScaler.unscale_` divides it back. So the update sees exactly the fp32 gradient,
# $\nabla(S\,L)/S = \nabla L$, while the backward pass in between works with numbers $S$ times
# larger, above fp16's underflow threshold:

# %%
print(
    "1e-8 in fp16:",
    torch.tensor(1e-8).half().item(),
    "| scaled by 2**16 first:",
    (torch.tensor(1e-8) * 2**16).half().float().item() / 2**16,
)
head = copy.deepcopy(base.classifier).float()  # a small linear layer, fp32
x, y = torch.randn(8, 384, device=device), torch.randint(0, 2, (8,), device=device)
F.cross_entropy(head(x), y).backward()
reference_grad = head.weight.grad.clone()
head.zero_grad()
scaler = torch.amp.GradScaler(device.type, init_scale=2.0**16)
scaler.scale(F.cross_entropy(head(x), y)).backward()
print(
    f"gradient while scaled: {head.weight.grad.abs().max().item():.3g}, "
    f"reference {reference_grad.abs().max().item():.3g}"
)
scaler.unscale_(torch.optim.SGD(head.parameters(), lr=0.1))
torch.testing.assert_close(head.weight.grad, reference_grad)
print("unscaled gradient == fp32 gradient")

# %% [markdown]
# **Measured.** The benchmark in fp32 and under autocast. On a CUDA GPU the chapter runs both
# 16-bit formats the GPU supports; on a CPU, bf16.

# %%
if device.type == "cuda":
    low_variants = (["bf16"] if torch.cuda.is_bf16_supported() else []) + ["fp16"]
else:
    low_variants = [precision]
for p in low_variants:
    row = bench(fresh_model(), f"{p} autocast", precision=p)
    # a bf16 training run is far too slow here: evaluate the fp32 model in bf16 instead
    if device.type == "cpu":
        subset = test_tok.select(range(sizes["n_lowp_eval"]))
        with dlbook.budget.autocast_context(p, device):
            low_acc = accuracy(base, subset)
        fp32_acc = accuracy(base, subset)
        row.update(
            trainable=count_parameters(base), accuracy=math.nan, train_s=math.nan
        )
        print(
            f"fp32-trained model on {len(subset)} test snippets: "
            f"fp32 {fp32_acc:.3f}, {p} autocast {low_acc:.3f}"
        )
    else:
        m = fresh_model()
        h = dlbook.budget.train_budget(
            m,
            train_tok,
            tokenizer,
            epochs=1,
            batch_size=sizes["batch_size"],
            lr=sizes["lr"],
            precision=p,
            group_by_length=True,
            device=device,
        )
        row.update(
            trainable=count_parameters(m), accuracy=accuracy(m), train_s=h.seconds
        )
    results[f"{p} autocast"] = row
    print(p, row)
fp32_row, low_row = (
    results["fp32, full fine-tune"],
    results[f"{low_variants[0]} autocast"],
)
dlbook.glue("ch10_lowp_mem", low_row["peak MiB"] / fp32_row["peak MiB"])

# %% [markdown]
# How fast bf16 runs on a CPU depends on its instruction sets, printed in every provenance line
# and here:

# %%
features = dlbook.env.cpu_features()
bf16_native = any(f in features for f in ("avx512_bf16", "amx_bf16"))
print(
    f"{dlbook.env.cpu_name()}: {', '.join(features) or 'no flags readable'} | "
    f"bf16 products in hardware: {bf16_native}"
)
dlbook.glue("ch10_cpu_features", ", ".join(features) or "none readable")
dlbook.glue("ch10_bf16_native", "has" if bf16_native else "does not have")

# %% [markdown]
# A bf16 step needs {glue:text}`ch10_lowp_mem:.2f` times the fp32 peak memory (weights
# included). Its speed is timed with every other variant in section 10.10, warm and in turns:
# there it ran at {glue:text}`ch10_lowp_speed:.2f` times the fp32 speed (a number below 1
# means **slower**; {glue:text}`ch10_lowp_speed_range` over the rounds). Read the speed together with
# the instruction sets above ({glue:text}`ch10_cpu_features`; this CPU
# {glue:text}`ch10_bf16_native` bf16 products in hardware). A CPU with AVX-512 BF16 (recent AMD
# EPYC and Intel Xeon) or AMX (Intel Xeon since Sapphire Rapids) multiplies bf16 pairs and adds
# into fp32 in hardware, so a bf16 step can be faster than fp32. A CPU with only AVX2 has no such
# instruction: it converts bf16 to fp32 and back around every product, so bf16 costs time
# instead of saving it. Where the hardware class (printed in the
# provenance line) has repeated measurements behind an expected level (`dlbook.expected`), the
# chapter checks the ratio against it; elsewhere it reports the ratio. On such a CPU a bf16 fine-tuning run would take many times
# longer, which is why on a CPU the chapter times steps and checks that bf16 inference of the
# fp32-trained model keeps its accuracy. The memory
# saving is real but modest here, because activations are a small part of the peak for short
# snippets (section 10.1), and autocast adds its 16-bit weight copies. On a GPU with 16-bit matrix
# units the products, which are most of the work, run several times faster than in fp32 once the
# batches are large enough to keep the GPU busy {cite}`micikevicius2018mixed`; run the chapter there
# and the same code picks bf16, or fp16 with a `GradScaler`, and measures it.
#
# ## 10.5 Gradient accumulation
#
# A batch of $B$ examples needs activations for $B$ examples at once. To train with an effective
# batch of $B$ while holding only $B/k$ in memory, run $k$ **micro-batches** forward and backward,
# let the gradients add up in `.grad`, and step the optimizer once. The loss must be scaled so
# that the sum is the big batch's gradient. For a (class-weighted) mean cross-entropy over a group
# $G = G_1 \cup \dots \cup G_k$ with per-example losses $\ell_j$ and weights $w_j$ (all 1
# without class weights),
#
# $$
# \nabla \frac{\sum_{j \in G} w_j \ell_j}{\sum_{j \in G} w_j}
# = \sum_{i=1}^{k} \nabla \frac{\sum_{j \in G_i} w_j \ell_j}{\sum_{j \in G} w_j} ,
# $$ (eq-ch10-accumulate)
#
# so each micro-batch contributes its **sum** divided by the **whole group's** denominator. Dividing
# each micro-batch mean by $k$ is the same only when all micro-batches have equal size (the last
# one of an epoch often does not). Checked on the real model with dropout off (eval mode): one
# batch of 12 against micro-batches of 5, 5 and 2.


# %%
def grads_of(model, loss_fn):
    model.zero_grad(set_to_none=True)
    loss_fn()
    return {
        n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None
    }


check_model = (
    fresh_model().eval()
)  # eval(): no dropout, so the k forward passes are the same function
collate = finetune.make_loader(train_tok, tokenizer, 12).collate_fn
group = collate([train_tok[i] for i in range(12)])
group = {k: v.to(device) for k, v in group.items()}


def big_batch():
    F.cross_entropy(
        check_model(**{k: v for k, v in group.items() if k != "labels"}).logits,
        group["labels"],
    ).backward()


def micro(denominator_fn):
    def run():
        for part in (slice(0, 5), slice(5, 10), slice(10, 12)):
            inputs = {k: v[part] for k, v in group.items() if k != "labels"}
            logits, labels = (
                check_model(**inputs).logits,
                group["labels"][part],
            )  # (b, 2), (b,)
            (
                F.cross_entropy(logits, labels, reduction="sum")
                / denominator_fn(labels)
            ).backward()

    return run


g_big = grads_of(check_model, big_batch)
g_right = grads_of(
    check_model, micro(lambda labels: 12)
)  # sum / size of the whole group
g_naive = grads_of(
    check_model, micro(lambda labels: 3 * len(labels))
)  # mean per micro-batch / k
g_packaged = grads_of(
    check_model,
    lambda: [
        dlbook.budget.weighted_group_loss(
            check_model(**{k: v[p] for k, v in group.items() if k != "labels"}).logits,
            group["labels"][p],
            None,
            12.0,
        ).backward()
        for p in (slice(0, 5), slice(5, 10), slice(10, 12))
    ],
)
for name in g_big:
    torch.testing.assert_close(
        g_right[name], g_big[name], rtol=1e-4, atol=1e-6, msg=name
    )
    torch.testing.assert_close(
        g_packaged[name], g_right[name], rtol=1e-5, atol=1e-7, msg=name
    )
naive_err = max(float((g_naive[n] - g_big[n]).norm() / g_big[n].norm()) for n in g_big)
dlbook.glue("ch10_naive_err", naive_err)
print(
    "sum / group size: equal to the big batch | "
    f"mean / k: relative error up to {naive_err:.1%} (worst weight)"
)
del g_big, g_right, g_naive, g_packaged

# %% [markdown]
# Scaled right, accumulation gives the big batch's gradient up to rounding (the float sums run in
# a different order); the naive scaling is off, for one of the weight matrices, by
# {glue:text}`ch10_naive_err:.1%` of its gradient's norm. With dropout on, each micro-batch
# draws its own masks, so the runs differ like two seeds do, not systematically. Memory (and, in
# section 10.10, time), with micro-batches of a quarter of the benchmark batch:

# %%
results["accumulate 4 micro-batches"] = dict(
    trainable=count_parameters(base),
    accuracy=math.nan,
    train_s=math.nan,
    **bench(fresh_model(), "accumulate 4 micro-batches", accumulation_steps=4),
)
print(results["accumulate 4 micro-batches"])

# %% [markdown]
# The accuracy column stays empty for accumulation on purpose: Eq. {eq}`eq-ch10-accumulate` says
# its updates are those of the baseline, and the cell above checked it; a separate run would only
# measure a different set of dropout masks.
#
# ## 10.6 Gradient checkpointing
#
# Backward needs each layer's saved activations. **Gradient checkpointing** {cite}`chen2016training`
# keeps only the inputs of some segments (here: each of the six transformer layers) and recomputes
# the rest of the forward pass of a segment just before its backward runs. For a chain of $n$
# layers with checkpoints every $\sqrt n$ layers, activation memory falls from $O(n)$ to
# $O(\sqrt n)$ for the price of about one extra forward pass. `transformers` models switch it on
# with `activation_checkpointing_enable()` (the name in transformers 5; the older
# `gradient_checkpointing_enable()` still works but is deprecated). The recomputation replays the random state, so the
# dropout masks and therefore the gradients are the same:

# %%
ckpt_model = fresh_model().train()
g_plain = grads_of(
    ckpt_model, lambda: (torch.manual_seed(1), ckpt_model(**group).loss.backward())
)
ckpt_model.activation_checkpointing_enable(
    activation_checkpointing_kwargs={"use_reentrant": False}
)
g_ckpt = grads_of(
    ckpt_model, lambda: (torch.manual_seed(1), ckpt_model(**group).loss.backward())
)
for name in g_plain:
    torch.testing.assert_close(g_ckpt[name], g_plain[name], msg=name)
print("same gradients with and without checkpointing (dropout on, same seed)")
del g_plain, g_ckpt

# %%
results["gradient checkpointing"] = dict(
    trainable=count_parameters(base),
    accuracy=math.nan,
    train_s=math.nan,
    **bench(fresh_model(), "gradient checkpointing", checkpointing=True),
)
ck, fp = results["gradient checkpointing"], results["fp32, full fine-tune"]
dlbook.glue("ch10_ckpt_mem", ck["peak MiB"] / fp["peak MiB"])
# the activations checkpointing saves weigh less than the gradients and moments (10.1)
assert (fp["peak MiB"] - ck["peak MiB"]) * 2**20 < state_bytes
print(ck)

# %% [markdown]
# Checkpointing took {glue:text}`ch10_ckpt_time:.2f` times the time per step (timed in section
# 10.10) and {glue:text}`ch10_ckpt_mem:.2f` times the peak memory of the fp32 baseline. The saving is bounded
# by what activations are worth in the peak; with this small model and short inputs the gradients
# and AdamW's moments (section 10.1) dominate, so the two switches that cut activations help little
# here. They matter for long sequences and large batches, where the activation term grows and the
# state term does not. The next two techniques go after the state.
#
# ## 10.7 Freezing layers
#
# A frozen parameter needs no gradient and no optimizer state, and backward can stop below the
# lowest trainable layer. Two classic choices: freeze the **embeddings** only (about half of
# MiniLM's parameters sit in the 30,522-word embedding table, and a small data set cannot train
# them well anyway), and freeze the embeddings plus the **lower $k$ layers**, which hold the most
# general features.


# %%
def frozen_below(k):
    """Trainable-parameter filter: all but the embeddings and encoder layers 0..k-1."""
    lower = tuple(f"bert.encoder.layer.{i}." for i in range(k))
    return lambda name: (
        not name.startswith("bert.embeddings") and not name.startswith(lower)
    )


for label, k in [
    ("freeze embeddings", 0),
    (f"freeze embeddings + {sizes['freeze_k']} layers", sizes["freeze_k"]),
]:
    m = fresh_model()
    h = dlbook.budget.train_budget(
        m,
        train_tok,
        tokenizer,
        epochs=1,
        batch_size=sizes["batch_size"],
        lr=sizes["lr"],
        trainable=frozen_below(k),
        group_by_length=True,
        device=device,
    )
    results[label] = dict(
        trainable=count_parameters(m),
        accuracy=accuracy(m),
        train_s=h.seconds,
        **bench(fresh_model(), label, trainable=frozen_below(k)),
    )
    print(label, results[label])
emb = results["freeze embeddings"]
dlbook.glue("ch10_freeze_emb_share", emb["trainable"] / n_params)
dlbook.glue("ch10_freeze_emb_acc", emb["accuracy"])
dlbook.glue("ch10_freeze_emb_mem", emb["peak MiB"] / fp["peak MiB"])

# %% [markdown]
# Freezing the embeddings leaves {glue:text}`ch10_freeze_emb_share:.0%` of the parameters
# trainable, cuts the peak memory to {glue:text}`ch10_freeze_emb_mem:.2f` of the baseline, and
# reaches {glue:text}`ch10_freeze_emb_acc:.3f` accuracy. The table at the end has the deeper cut.
#
# ## 10.8 LoRA: low-rank adapters
#
# **Idea.** Fine-tuning changes a weight matrix $W \in \mathbb{R}^{d_\text{out} \times d_\text{in}}$
# by some $\Delta W$. Hu et al. {cite}`hu2022lora` observed that this change can be restricted to
# low rank with little loss: freeze $W$ and learn $\Delta W = \frac{\alpha}{r} B A$ with
# $A \in \mathbb{R}^{r \times d_\text{in}}$, $B \in \mathbb{R}^{d_\text{out} \times r}$ and
# $r \ll d$:
#
# $$
# h = W x + b + \frac{\alpha}{r} B A x .
# $$ (eq-ch10-lora)
#
# $A$ starts random and $B$ at **zero**, so at step 0 the model is exactly the pretrained one
# (the fresh head aside), and training moves away from it smoothly. The factor $\alpha / r$ is
# meant to keep the size of the update roughly independent of $r$: Hu et al. fix $\alpha$ at the
# first rank they try and introduce the factor so that the hyper-parameters need less retuning
# when $r$ changes {cite}`hu2022lora`. Kalajdzievski
# {cite}`kalajdzievski2023rank` argues that $\alpha / r$ scales the update down too much, so
# that larger ranks learn more slowly and gain little, and proposes $\alpha / \sqrt{r}$
# (rsLoRA). Whether one learning rate serves every rank is therefore contested; this chapter
# trains one rank and does not settle it. A
# $384 \times 384$ projection has 147,456 weights; its rank-8 adapter
# $8 \cdot (384 + 384) = 6{,}144$. After training, $W + \frac{\alpha}{r} B A$ is one matrix again:
# **merging** makes inference cost exactly what it did before.
#
# **Step by step.** A module that wraps one `nn.Linear`, following Eq. {eq}`eq-ch10-lora`
# (the initialisation of $A$ is `nn.Linear`'s default, as in `peft`):


# %%
class MyLoRA(nn.Module):
    def __init__(self, base_linear, r, alpha):
        super().__init__()
        self.base_linear = base_linear.requires_grad_(False)  # W, b: frozen
        d_out, d_in = base_linear.weight.shape
        self.A = nn.Parameter(
            torch.empty(r, d_in, device=base_linear.weight.device)
        )  # (r, d_in)
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
        self.B = nn.Parameter(
            torch.zeros(d_out, r, device=base_linear.weight.device)
        )  # (d_out, r): zero
        self.scale = alpha / r

    def forward(self, x):  # (batch, seq, d_in)
        return (
            self.base_linear(x) + self.scale * (x @ self.A.T) @ self.B.T
        )  # (batch, seq, d_out)


def wrap_query_value(model, r, alpha):
    for p in model.parameters():
        p.requires_grad_(False)
    for layer in model.bert.encoder.layer:
        attn = layer.attention.self
        attn.query, attn.value = (
            MyLoRA(attn.query, r, alpha),
            MyLoRA(attn.value, r, alpha),
        )
    model.classifier.requires_grad_(True)  # the fresh head must train too
    return model


plain = fresh_model().eval()
mine = wrap_query_value(fresh_model(), sizes["lora_r"], sizes["lora_alpha"]).eval()
batch = {k: v for k, v in group.items() if k != "labels"}
with torch.no_grad():
    torch.testing.assert_close(
        mine(**batch).logits, plain(**batch).logits, rtol=0, atol=0
    )
n_mine = count_parameters(mine)
n_all = count_parameters(mine, trainable_only=False)
print(f"step 0: identical logits to the base model | trainable {n_mine:,} of {n_all:,}")

# %% [markdown]
# At step 0 the adapted model **is** the base model, bit for bit. The packaged version,
# `dlbook.lora`, adds input checks, adapter dropout, the choice of target layers by name and
# merging:

# %%
dlbook.show(dlbook.lora.LoRALinear)

# %%
dlbook.show(dlbook.lora.add_lora)

# %% [markdown]
# Same weights in, same outputs out: we copy our $A$ and a random $B$ into the packaged adapters
# and compare the whole model's logits. Then merging, by hand and with `merge_lora`.

# %%
packaged = dlbook.lora.add_lora(
    fresh_model(), ("query", "value"), r=sizes["lora_r"], alpha=sizes["lora_alpha"]
).eval()
with torch.no_grad():
    for ours_layer, pk_layer in zip(
        mine.bert.encoder.layer, packaged.bert.encoder.layer, strict=True
    ):
        for name in ("query", "value"):
            a, b = (
                getattr(ours_layer.attention.self, name),
                getattr(pk_layer.attention.self, name),
            )
            a.B.normal_(0, 0.02)  # pretend training moved B
            b.lora_A.copy_(a.A)
            b.lora_B.copy_(a.B)
    mine_logits = mine(**batch).logits  # (12, 2)
    torch.testing.assert_close(packaged(**batch).logits, mine_logits)
    assert count_parameters(packaged) == n_mine
    for layer in mine.bert.encoder.layer:  # merge by hand: W <- W + alpha/r * B A
        for name in ("query", "value"):
            lo = getattr(layer.attention.self, name)
            lo.base_linear.weight += lo.scale * lo.B @ lo.A
            setattr(layer.attention.self, name, lo.base_linear)
    torch.testing.assert_close(mine(**batch).logits, mine_logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(
        dlbook.lora.merge_lora(packaged)(**batch).logits,
        mine_logits,
        rtol=1e-4,
        atol=1e-5,
    )
print(
    "ours == packaged; merged (by hand and with merge_lora) == unmerged; "
    "plain nn.Linear again:",
    type(packaged.bert.encoder.layer[0].attention.self.query).__name__,
)
del mine, packaged, plain

# %% [markdown]
# **With `peft`.** The `peft` library does the same from a `LoraConfig`
# (`dlbook.lora.add_peft_lora` calls `peft.get_peft_model` and silences one deprecation warning
# addressed to `peft`'s authors; chapter 20 uses it again). `task_type="SEQ_CLS"` makes it keep
# a trainable copy of the classification head (`modules_to_save`). To compare the two
# implementations exactly, we build both from the same fresh model and copy our adapters' and
# head's starting values into `peft`'s (`dlbook.lora.copy_lora_to_peft`): with the same starting
# point they must compute the same function, and then train the same way: `peft_steps` AdamW
# steps on the same batches, dropout off, must give the same loss at every step and the same
# logits after.

# %%
ours_lora = dlbook.lora.add_lora(
    fresh_model(), ("query", "value"), r=sizes["lora_r"], alpha=sizes["lora_alpha"]
)
config = peft.LoraConfig(
    task_type="SEQ_CLS",
    r=sizes["lora_r"],
    lora_alpha=sizes["lora_alpha"],
    lora_dropout=0.0,
    target_modules=["query", "value"],
)
peft_lora = dlbook.lora.add_peft_lora(fresh_model(), config)  # peft.get_peft_model
copied = dlbook.lora.copy_lora_to_peft(ours_lora, peft_lora)
with torch.no_grad():
    torch.testing.assert_close(
        peft_lora.eval()(**batch).logits, ours_lora.eval()(**batch).logits
    )
assert count_parameters(peft_lora) == count_parameters(ours_lora)
peft_lora.print_trainable_parameters()
print(f"copied {copied} tensors; same logits at step 0")

# %%
loader = finetune.make_loader(train_tok, tokenizer, sizes["batch_size"])
steps = list(itertools.islice(loader, sizes["peft_steps"]))
pair = {"ours": ours_lora.eval(), "peft": peft_lora.eval()}  # eval(): no dropout
opts = {
    k: torch.optim.AdamW(
        [p for p in m.parameters() if p.requires_grad], lr=sizes["lora_lr"]
    )
    for k, m in pair.items()
}
step_losses = {k: [] for k in pair}  # implementation -> loss at each step
for b in steps:
    b = {k: v.to(device) for k, v in b.items()}  # (batch_size, seq) each
    for k, m in pair.items():
        loss = m(**b).loss
        loss.backward()
        opts[k].step()
        opts[k].zero_grad(set_to_none=True)
        step_losses[k].append(loss.item())
with torch.no_grad():
    peft_logits = peft_lora(**batch).logits  # (12, 2)
    ours_logits = ours_lora(**batch).logits
loss_diff = float(np.abs(np.subtract(step_losses["ours"], step_losses["peft"])).max())
logit_diff = (peft_logits - ours_logits).abs().max().item()
print("loss per step:", {k: [round(x, 5) for x in v] for k, v in step_losses.items()})
torch.testing.assert_close(peft_logits, ours_logits, rtol=1e-4, atol=1e-5)
assert loss_diff < 1e-5, loss_diff
dlbook.glue("ch10_peft_steps", sizes["peft_steps"])
dlbook.glue("ch10_peft_diff", max(loss_diff, logit_diff))

# %% [markdown]
# After {glue:text}`ch10_peft_steps` AdamW steps from the same start, our adapters and `peft`'s
# differ by at most {glue:text}`ch10_peft_diff:.1e` in any loss or logit: the same method, up to
# the order of float operations. So one fine-tuning run is enough, with our version; its merge is
# checked next to `peft`'s `merge_and_unload()`.


# %%
def lora_model_fresh():
    return dlbook.lora.add_lora(
        fresh_model(), ("query", "value"), r=sizes["lora_r"], alpha=sizes["lora_alpha"]
    )


lora_model = lora_model_fresh()
h = dlbook.budget.train_budget(
    lora_model,
    train_tok,
    tokenizer,
    epochs=1,
    batch_size=sizes["batch_size"],
    lr=sizes["lora_lr"],
    group_by_length=True,
    device=device,
)
lora_correct = correct(lora_model)  # (n_test,)
lora_acc = float(lora_correct.mean())
results["LoRA"] = dict(
    trainable=count_parameters(lora_model),
    accuracy=lora_acc,
    train_s=h.seconds,
    **bench(lora_model_fresh(), "LoRA"),
)
print(results["LoRA"])
lora_diff = dlbook.stats.compare(lora_correct, base_correct)  # LoRA - full fine-tuning
print(f"LoRA - full fine-tuning: {lora_diff}")
dlbook.glue("ch10_lora_share", results["LoRA"]["trainable"] / n_params)
dlbook.glue("ch10_lora_mem", results["LoRA"]["peak MiB"] / fp["peak MiB"])
dlbook.headline("ch10_lora_acc", lora_acc, profile=profile, at_least=base_acc - 0.05)
ci = lora_diff.interval
dlbook.glue("ch10_lora_ci", f"[{ci.low:+.3f}, {ci.high:+.3f}]")
dlbook.glue("ch10_lora_verdict", ("no", "a")[lora_diff.measurable] + " measurable")

# %% [markdown]
# With {glue:text}`ch10_lora_share:.2%` of the parameters trainable, LoRA reaches
# {glue:text}`ch10_lora_acc` against {glue:text}`ch10_base_acc` for full fine-tuning (it uses a much
# larger learning rate, `lora_lr`): a paired difference of {glue:text}`ch10_lora_ci` (95 %
# bootstrap interval over the test snippets), {glue:text}`ch10_lora_verdict` difference, from one
# seed each. The peak memory falls to
# {glue:text}`ch10_lora_mem:.2f` of the baseline, because the gradients and moments of the frozen
# weights are gone; activations still flow through every layer, since the adapters sit in all of
# them.
#
# Merging the adapters: ours with `merge_lora`, `peft`'s (after its few steps) with
# `merge_and_unload()`. The predictions on the validation snippets must not change.


# %%
def val_logits(model):  # (n_validation, 2)
    return finetune.evaluate_classifier(model, val_tok, tokenizer, device=device).logits


merges = {
    "ours": (lora_model, dlbook.lora.merge_lora),
    "peft": (peft_lora, lambda m: m.merge_and_unload()),
}
for key, (m, merge) in merges.items():
    before = val_logits(m)
    merged = merge(m)
    assert type(merged) is BertForSequenceClassification, key
    after = val_logits(merged)
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4, msg=key)
print(
    "merged == unmerged for both; "
    "merged models are plain BertForSequenceClassification with",
    f"{count_parameters(merged, trainable_only=False):,} parameters",
)
del ours_lora, peft_lora, lora_model, merged

# %% [markdown]
# ## 10.9 Overfitting controls in practice
#
# With few examples and a 22-million-parameter model, overfitting is the normal case, not the
# exception. Chapter 2 introduced the controls on small models; here they are in a fine-tuning
# run.
#
# **Early stopping** {cite}`prechelt1998early`: evaluate the validation loss every few steps,
# remember the best weights, stop after `patience` evaluations without improvement, and return
# the best weights. **Weight decay** (decoupled, AdamW {cite}`loshchilov2019decoupled`) pulls every
# weight toward zero by $\eta \lambda w$ per step. To make overfitting happen on purpose we train
# `es_epochs` epochs on only `n_es_train` snippets (batches of `es_batch`), evaluating the
# validation loss every `es_eval_every` steps, with $\lambda = 0.1$ and early stopping. The
# patience is not a detail: the first evaluations
# come while the fresh head is still sorting itself out, and the validation loss wobbles up
# before it falls. Too small a patience stops the run there, with a model that has learned
# nothing yet.

# %%
es_tok = train_tok.select(range(sizes["n_es_train"]))
es = {}
for wd in (0.1,):  # how much this decay can do at all is computed below
    m = fresh_model()
    h = dlbook.budget.train_budget(
        m,
        es_tok,
        tokenizer,
        epochs=sizes["es_epochs"],
        batch_size=sizes["es_batch"],
        lr=sizes["lr"],
        weight_decay=wd,
        eval_dataset=val_tok,
        eval_every=sizes["es_eval_every"],
        patience=sizes["patience"],
        group_by_length=True,
        device=device,
    )
    es[wd] = dict(history=h, accuracy=accuracy(m))
    best = min(e["loss"] for e in h.evals)
    assert math.isclose(
        finetune.evaluate_classifier(m, val_tok, tokenizer, device=device).loss,
        best,
        rel_tol=1e-5,
    )
    print(
        f"weight decay {wd}: best step {h.best_step} of {h.total_steps} | "
        f"stopped early: {h.stopped_early} | "
        f"test accuracy {es[wd]['accuracy']:.3f}"
    )
h = es[0.1]["history"]
stopped_at = h.evals[-1]["step"]
best_eval = min(h.evals, key=lambda e: e["loss"])
if (
    profile == "full"
):  # the demonstration must show learning, then overfitting, then a stop
    assert h.stopped_early and stopped_at < h.total_steps, (
        "early stopping did not stop the run"
    )
    assert es[0.1]["accuracy"] >= majority + 0.1, (
        "the restored model is no better than the majority class"
    )
    assert max(e["loss"] for e in h.evals) > best_eval["loss"] * 1.2, (
        "the validation loss never rose"
    )
dlbook.glue("ch10_es_stopped_at", stopped_at)
dlbook.glue("ch10_es_n", len(es_tok))
dlbook.glue("ch10_es_best_loss", best_eval["loss"])
dlbook.glue("ch10_es_last_loss", h.evals[-1]["loss"])
dlbook.glue("ch10_es_best_val_acc", best_eval["accuracy"])
dlbook.glue("ch10_es_last_val_acc", h.evals[-1]["accuracy"])
dlbook.glue("ch10_es_best_step", h.best_step)
dlbook.glue("ch10_es_total", h.total_steps)
dlbook.glue("ch10_es_acc", es[0.1]["accuracy"])
dlbook.glue(
    "ch10_wd_shrink", sizes["lr"] * 0.1
)  # eta * lambda at the peak learning rate
# the most decay can shrink a weight over the steps run: every step at the peak rate
dlbook.glue("ch10_wd_total", 100 * (1 - (1 - sizes["lr"] * 0.1) ** stopped_at))

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.4))
h = es[0.1]["history"]
eval_steps = [e["step"] for e in h.evals]
ax1.plot(eval_steps, [e["loss"] for e in h.evals], "o-")
ax2.plot(eval_steps, [e["accuracy"] for e in h.evals], "o-")
ax1.axvline(h.best_step, color="grey", linestyle=":")
ax1.set_xlabel("optimizer step")
ax1.set_ylabel("validation loss")
ax1.set_title("Early stopping: best step dotted")
ax2.set_xlabel("optimizer step")
ax2.set_ylabel("validation accuracy")
fig.suptitle(
    f"Weight decay 0.1, {len(es_tok)} training snippets, validation every "
    f"{sizes['es_eval_every']} steps",
    fontsize=10,
)
plt.tight_layout()
plt.show()

# %% [markdown]
# **Figure 10.2.** The validation loss (left; the dotted line marks the best step) and accuracy
# (right) at each evaluation of the run with weight decay 0.1 and early stopping.
#
# With weight decay 0.1 the best validation loss, {glue:text}`ch10_es_best_loss:.3f`, came at step
# {glue:text}`ch10_es_best_step` of {glue:text}`ch10_es_total` planned; the last evaluation, at step
# {glue:text}`ch10_es_stopped_at`, found the validation loss at {glue:text}`ch10_es_last_loss:.3f`,
# and the best weights were put back. The restored model
# scores {glue:text}`ch10_es_acc:.3f` on the test subset. On a run this short, weight decay can
# change little: it shrinks each weight by a
# factor $1 - \eta\lambda$ per step, with $\eta\lambda$ at most {glue:text}`ch10_wd_shrink:.0e`
# here, so over the {glue:text}`ch10_es_stopped_at` steps of the run decay alone shrinks a weight by
# at most {glue:text}`ch10_wd_total:.2f` % (less in fact: the rate warms up and decays). Early
# stopping does the real work.
#
# It watches the loss, not the accuracy, on purpose. Look at the two panels: after the best step
# the validation loss climbs while the validation accuracy does not follow it down
# ({glue:text}`ch10_es_best_val_acc:.3f` at the best step, {glue:text}`ch10_es_last_val_acc:.3f` at
# the stop). A model that memorises its {glue:text}`ch10_es_n` training snippets grows over-confident, and on the
# validation snippets it gets wrong it pays for that confidence in loss long before it makes more
# mistakes. Rising validation loss is the early warning; falling accuracy comes later.
#
# **Class imbalance.** The training subset is fairly balanced. To see what imbalance does, keep
# all positive snippets but only one negative per `imbalance` positives, and train once plain
# and once with a **class-weighted** cross-entropy, $\ell = -w_y \log p_y$, with the "balanced"
# weights $w_c = N / (C\, n_c)$ ($N$ examples, $C$ classes, $n_c$ of class $c$): the rare class
# weighs as much in total as the common one. These inverse-frequency weights are scikit-learn's
# `class_weight="balanced"`; Cui et al. {cite}`cui2019class` argue that they over-correct and
# weight each class by the inverse of its *effective number* of examples,
# $w_c \propto (1 - \beta) / (1 - \beta^{n_c})$, which runs from no weighting ($\beta = 0$) to
# inverse frequency ($\beta \to 1$). The number to watch is the F1 of the minority class,
# negative reviews.

# %%
labels = np.array(train_tok["labels"])
pos_idx, neg_idx = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
keep = np.sort(
    np.concatenate([pos_idx, neg_idx[: max(2, len(pos_idx) // sizes["imbalance"])]])
)
imb_tok = train_tok.select(keep)
imb_labels = torch.tensor(imb_tok["labels"])
n_c = torch.bincount(imb_labels, minlength=2)
class_weights = (len(imb_labels) / (2 * n_c)).float()  # w_c = N / (C n_c)
torch.testing.assert_close(
    class_weights,
    torch.tensor(
        compute_class_weight("balanced", classes=np.arange(2), y=imb_labels.numpy()),
        dtype=torch.float32,
    ),
)
print(
    f"imbalanced subset: {int(n_c[0])} negative, {int(n_c[1])} positive | "
    f"weights {class_weights.tolist()}"
)

imb, imb_preds = {}, {}
for label, w in [("plain", None), ("class-weighted", class_weights)]:
    m = fresh_model()
    dlbook.budget.train_budget(
        m,
        imb_tok,
        tokenizer,
        epochs=1,
        batch_size=sizes["batch_size"],
        lr=sizes["lr"],
        class_weights=w,
        group_by_length=True,
        device=device,
    )
    res = finetune.evaluate_classifier(m, test_tok, tokenizer, device=device)
    imb[label] = dict(
        accuracy=res.accuracy,
        f1_neg=finetune.binary_f1(res.preds, res.labels, positive=0),
        predicted_neg=float((res.preds == 0).float().mean()),
    )
    imb_preds[label] = res.preds.numpy()  # (n_test,)
display(pd.DataFrame(imb).T.round(3))


def f1_negative(preds, labels):  # (n_boot, n) each -> (n_boot,) F1 of class 0
    tp = ((preds == 0) & (labels == 0)).sum(1)
    return 2 * tp / np.maximum((preds == 0).sum(1) + (labels == 0).sum(1), 1)


n_snip = len(y_test)
idx = np.random.default_rng(0).integers(0, n_snip, (2_000, n_snip))  # paired resamples
f1_gain = f1_negative(imb_preds["class-weighted"][idx], y_test[idx]) - f1_negative(
    imb_preds["plain"][idx], y_test[idx]
)  # (2000,)
f1_lo, f1_hi = np.percentile(f1_gain, [2.5, 97.5])
print(f"F1 (negative), weighted - plain: 95 % interval [{f1_lo:+.3f}, {f1_hi:+.3f}]")
dlbook.glue("ch10_imb_f1_plain", imb["plain"]["f1_neg"])
dlbook.glue("ch10_imb_f1_weighted", imb["class-weighted"]["f1_neg"])
dlbook.glue("ch10_imb_f1_ci", f"[{f1_lo:+.3f}, {f1_hi:+.3f}]")
measurable = not f1_lo <= 0 <= f1_hi
dlbook.glue("ch10_imb_f1_verdict", "a measurable" if measurable else "no measurable")
dlbook.glue("ch10_imb_neg_share", float(n_c[0] / n_c.sum()))
dlbook.glue("ch10_test_neg_share", float((y_test == 0).mean()))

# %% [markdown]
# Only {glue:text}`ch10_imb_neg_share:.0%` of the imbalanced training snippets are negative, while
# {glue:text}`ch10_test_neg_share:.0%` of the test snippets are. Trained plainly, the model learns
# that "positive" is nearly always right and the F1 of the negative class is
# {glue:text}`ch10_imb_f1_plain:.3f`; with the class-weighted loss it is
# {glue:text}`ch10_imb_f1_weighted:.3f`, a paired difference of {glue:text}`ch10_imb_f1_ci` (95 %
# bootstrap interval over the test snippets): {glue:text}`ch10_imb_f1_verdict` difference.
# Weighting changes which mistakes the loss cares about, not
# how much the data says about negative reviews: it cannot replace the missing examples, and when
# the test distribution really is imbalanced, a reweighted model over-predicts the rare class. Which
# one is right depends on the costs of the two kinds of errors.
#
# ## 10.10 The scoreboard
#
# First the times. Every benchmarked variant's step (section 10.2) runs once per round, in
# turns, `bench_rounds` rounds after a warm-up step, at the same thread count, without the
# memory tracker; the order flips every round. Each round gives a ratio of the fp32 step's time
# to the variant's, and the table shows the median ratio with its range over the rounds.

# %%
with dlbook.measure.fixed_threads(torch.get_num_threads()):
    step_times = dlbook.measure.interleaved_calls(
        bench_steps, rounds=sizes["bench_rounds"], warmup=1, device=device
    )
fp32_ms = np.array(step_times["fp32, full fine-tune"].runs_ms)  # (bench_rounds,)
speed = {}  # variant -> fp32 time / its time, round by round
for name, lat in step_times.items():
    speed[name] = fp32_ms / np.array(lat.runs_ms)
    results[name]["s/step"] = lat.median / 1e3
    results[name]["speed vs fp32"] = (
        f"{np.median(speed[name]):.2f} "
        f"({speed[name].min():.2f}-{speed[name].max():.2f})"
    )
low_name = f"{low_variants[0]} autocast"
dlbook.hardware_headline(
    "ch10_lowp_speed", float(np.median(speed[low_name])), profile=profile
)
dlbook.glue(
    "ch10_lowp_speed_range",
    f"{speed[low_name].min():.2f} to {speed[low_name].max():.2f}",
)
dlbook.glue("ch10_ckpt_time", float(np.median(1 / speed["gradient checkpointing"])))
print({name: results[name]["speed vs fp32"] for name in step_times})

# %% [markdown]
# The table: trainable parameters, time per step (median) and speed relative to fp32 (median and
# range over the rounds), the weights a variant holds and the peak memory of a training step on
# the fixed benchmark batch **with the weights included**, seconds of the fine-tuning run, and
# test accuracy. An empty accuracy means no separate run was made: accumulation and
# checkpointing were shown above to give the baseline's updates, and a bf16 run on this CPU is
# too slow (its inference check is in section 10.4). Empty time and memory for "group by
# length": the benchmark batches have a fixed length, so grouping cannot change them (its time
# is in section 10.3).

# %%
table = pd.DataFrame(results).T[
    [
        "trainable",
        "accuracy",
        "s/step",
        "speed vs fp32",
        "weights MiB",
        "peak MiB",
        "train_s",
    ]
]
table["trainable %"] = 100 * table["trainable"].astype(float) / n_params
numeric = ["accuracy", "s/step", "weights MiB", "peak MiB", "train_s", "trainable %"]
table[numeric] = (
    table[numeric]
    .astype(float)
    .round(
        {
            "accuracy": 3,
            "s/step": 3,
            "weights MiB": 1,
            "peak MiB": 1,
            "train_s": 1,
            "trainable %": 2,
        }
    )
)
table["trainable"] = table["trainable"].astype(int)
prov = dlbook.env.last_provenance()
print("measured on:", prov.line())
display(table)
param_cut = max(results[k]["peak MiB"] for k in ("LoRA", "freeze embeddings"))
activation_cut = min(
    results[k]["peak MiB"]
    for k in ("gradient checkpointing", "accumulate 4 micro-batches", low_name)
)
assert param_cut < activation_cut, (param_cut, activation_cut)  # fewer trainables win

# %%
fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), sharey=True)
names = list(table.index)
for ax, column, title in zip(
    axes,
    ["peak MiB", "s/step", "accuracy"],
    [
        "peak memory of a step, weights included (MiB)",
        "seconds per step (median)",
        "test accuracy",
    ],
    strict=True,
):
    ax.barh(
        names,
        table[column].fillna(0.0),
        color=["C0" if "fp32" in n else "C1" for n in names],
    )
    ax.set_title(title)
    for i, v in enumerate(table[column]):
        ax.text(
            0 if np.isnan(v) else v,
            i,
            " n/a" if np.isnan(v) else f" {v:g}",
            va="center",
            fontsize=8,
        )
axes[2].axvline(majority, color="grey", linestyle=":", label="majority class")
axes[2].set_xlim(0.4, 1.0)
axes[2].legend(loc="lower right", fontsize=8)
axes[0].invert_yaxis()
fig.suptitle(f"Fine-tuning on a budget, measured on {prov.device_name}", fontsize=10)
plt.tight_layout()
plt.show()

# %% [markdown]
# **Figure 10.3.** The scoreboard of the chapter's variants: peak memory of a training step
# (left), seconds per step (middle) and test accuracy (right, with the majority-class rate
# dotted). The fp32 baseline is blue; "n/a" marks a value the variant does not measure.
#
# On this CPU the biggest memory savings came from cutting trainable parameters, not from the
# activation techniques: LoRA needs {glue:text}`ch10_lora_mem:.2f` of the baseline's peak, and
# freezing the embeddings {glue:text}`ch10_freeze_emb_mem:.2f`. The ranking shifts with the shape of
# the problem: for long inputs and large batches activations dominate, and checkpointing and mixed
# precision climb the table.
#
# ## Summary
#
# - A training step holds weights, gradients, optimizer state and activations, Eq.
#   {eq}`eq-ch10-state`; for MiniLM the {glue:text}`ch10_state_mib:.0f` MiB of gradients and AdamW
#   moments outweigh the activations of short snippets. `dlbook.memory` measures the peak on the
#   CPU from the tensors themselves, and with `torch.cuda.max_memory_allocated` on a GPU.
# - Batches of similar length (`group_by_length`) are the cheapest saving of all: the padding went
#   from {glue:text}`ch10_pad_random:.2f` to {glue:text}`ch10_pad_grouped:.2f` tokens per real token
#   and an epoch took {glue:text}`ch10_group_time_ratio:.2f` of the time, with no change to the
#   model, the memory or the number of steps.
# - Mixed precision runs the products in 16 bits under `torch.autocast` and keeps weights,
#   optimizer state and loss in fp32; fp16 adds loss scaling, whose unscaled gradients equal the
#   fp32 ones. On this CPU bf16 ran at {glue:text}`ch10_lowp_speed:.2f` times the fp32 speed;
#   on a CPU that depends on its bf16 instructions, on a GPU it is the usual way to train.
# - Gradient accumulation reproduces the big batch's gradient when each micro-batch's loss is its
#   sum over the group's size, Eq. {eq}`eq-ch10-accumulate`; checkpointing recomputes activations
#   and gives identical gradients for {glue:text}`ch10_ckpt_time:.2f` times the step time.
# - Freezing and LoRA cut the trainable parameters; LoRA on query and value with rank
#   {glue:text}`ch10_lora_r` trains {glue:text}`ch10_lora_share:.2%` of them, starts exactly at the
#   base model, matches `peft` step by step, merges back without changing a prediction, and
#   reached {glue:text}`ch10_lora_acc` against {glue:text}`ch10_base_acc` for full fine-tuning
#   ({glue:text}`ch10_lora_verdict` difference, paired interval {glue:text}`ch10_lora_ci`).
# - Early stopping on validation loss keeps the best weights of an over-long run; on an
#   imbalanced training set the minority-class F1 was {glue:text}`ch10_imb_f1_plain:.3f` plainly
#   and {glue:text}`ch10_imb_f1_weighted:.3f` with a class-weighted loss (paired interval of the
#   difference {glue:text}`ch10_imb_f1_ci`).
#
# ## Exercises
#
# :::{exercise}
# :label: ch10-ex-memory
# A model has 350 million parameters, all trainable, trained with AdamW. How much memory do the
# weights, gradients and AdamW moments take in plain fp32 training? In mixed precision as in
# Micikevicius et al., the fp32 master weights are kept and the gradients are stored in fp16 next
# to an fp16 copy of the weights; how much then? And with LoRA training 0.5 % of the parameters in
# fp32 on top of frozen fp16 weights?
# :::
#
# :::{solution} ch10-ex-memory
# :class: dropdown
# fp32: $16$ bytes per parameter (4 weight, 4 gradient, 8 moments), $16 \times 350 \times 10^6 =
# 5.6$ GB. Mixed precision: fp32 master weights 4, fp16 weights 2, fp16 gradients 2, fp32 moments
# 8, so 16 bytes again, 5.6 GB: mixed precision saves activation memory and time, not state memory
# (the saving of the fp16 gradient is eaten by the extra weight copy). LoRA: frozen fp16 weights
# $2 \times 350 \times 10^6 = 0.7$ GB, plus $16$ bytes for each of the $1.75 \times 10^6$ adapter
# parameters, 28 MB: about 0.73 GB in all. That difference is why adapters made fine-tuning of
# large models possible on single GPUs.
# :::
#
# :::{exercise}
# :label: ch10-ex-accumulate
# An epoch of 1,500 snippets is trained with micro-batches of 8 and 5 accumulation steps. How many
# optimizer steps is that, and how many examples does the last one see? If each micro-batch's mean
# loss were divided by 5, by what factor would the last step's gradient be off? Why would gradient
# accumulation **not** reproduce the big batch for a network with BatchNorm?
# :::
#
# :::{solution} ch10-ex-accumulate
# :class: dropdown
# $\lceil 1500 / 8 \rceil = 188$ micro-batches (the last holds 4 snippets), grouped by 5: $37$ full
# groups and a last one of 3 micro-batches, so $38$ optimizer steps, the last one seeing
# $8 + 8 + 4 = 20$ snippets. With "mean / 5" its gradient is
# $\frac{1}{5}(\bar g_1 + \bar g_2 + \bar g_3)$; the right one is
# $\frac{8 \bar g_1 + 8 \bar g_2 + 4 \bar g_3}{20}$. Even if all $\bar g_i$ were equal, the first is
# $\frac{3}{5} \bar g$ against $\bar g$: the last step is 40 % too small, and the short micro-batch
# gets as much weight as a full one besides. BatchNorm normalises with the statistics of the batch it sees,
# here a micro-batch of 8 instead of 32: the forward pass itself is a different function, so no
# scaling of the loss recovers the big batch. Transformers use LayerNorm, which works per example
# and has no such problem.
# :::
#
# :::{exercise}
# :label: ch10-ex-merge
# Write `my_merge(weight, lora_A, lora_B, alpha)` that returns the merged weight of a LoRA adapter,
# Eq. {eq}`eq-ch10-lora`: `weight` is $W$ (out, in), `lora_A` is $A$ (r, in), `lora_B` is $B$
# (out, r), and the rank $r$ is read from $A$'s shape.
# :::


# %%
def my_merge(weight, lora_A, lora_B, alpha):
    raise NotImplementedError  # your code here


dlbook.exercises.check("ch10.merge_lora_weight", my_merge)

# %% [markdown]
# ```{solution-start} ch10-ex-merge
# :class: dropdown
# ```


# %% tags=["solution"]
def my_merge(weight, lora_A, lora_B, alpha):
    r = lora_A.shape[0]
    return weight + (alpha / r) * lora_B @ lora_A  # (out, r) @ (r, in) -> (out, in)


assert dlbook.exercises.check("ch10.merge_lora_weight", my_merge)

# %% [markdown]
# ```{solution-end}
# ```
#
# :::{exercise}
# :label: ch10-ex-weights
# Write `my_class_weights(labels, n_classes)` that returns the "balanced" class weights
# $w_c = N / (C\, n_c)$ of section 10.9 as a float32 tensor of shape (C,), for a 1-D int64 tensor of
# labels in which every class occurs. Then compute the weights of a data set with 10 negatives
# and 90 positives by hand, and check that negatives and positives carry the same total weight.
# :::


# %%
def my_class_weights(labels, n_classes):
    raise NotImplementedError  # your code here


dlbook.exercises.check("ch10.balanced_class_weights", my_class_weights)

# %% [markdown]
# ```{solution-start} ch10-ex-weights
# :class: dropdown
# ```


# %% tags=["solution"]
def my_class_weights(labels, n_classes):
    counts = torch.bincount(
        labels, minlength=n_classes
    ).float()  # (C,) examples per class
    return labels.numel() / (n_classes * counts)


assert dlbook.exercises.check("ch10.balanced_class_weights", my_class_weights)
w = my_class_weights(torch.tensor([0] * 10 + [1] * 90), 2)
print(
    w.tolist(), "| total weight per class:", (w * torch.tensor([10.0, 90.0])).tolist()
)

# %% [markdown]
# ```{solution-end}
# ```
#
# With 10 negatives and 90 positives, $w_0 = 100 / 20 = 5$ and $w_1 = 100/180 \approx 0.556$:
# both classes carry a total weight of 50, half of the $N = 100$.
#
# :::{exercise}
# :label: ch10-ex-padding
# Write `my_padding_ratio(lengths, batch_size)`: the snippets, with token counts `lengths` in the
# order a loader visits them, are cut into consecutive batches of `batch_size` (the last batch may
# be shorter), and each batch is padded to its longest snippet. Return the tokens computed per real
# token. Apply it to the lengths of `train_tok` in a random order and sorted, and compare with the
# two loaders of section 10.3. Why does the grouped loader not reach the sorted order's ratio?
# :::


# %%
def my_padding_ratio(lengths, batch_size):
    raise NotImplementedError  # your code here


dlbook.exercises.check("ch10.padding_ratio", my_padding_ratio)

# %% [markdown]
# ```{solution-start} ch10-ex-padding
# :class: dropdown
# ```


# %% tags=["solution"]
def my_padding_ratio(lengths, batch_size):
    batches = [lengths[i : i + batch_size] for i in range(0, len(lengths), batch_size)]
    return sum(max(b) * len(b) for b in batches) / sum(lengths)


assert dlbook.exercises.check("ch10.padding_ratio", my_padding_ratio)
lengths = [len(ids) for ids in train_tok["input_ids"]]
shuffled = np.random.default_rng(0).permutation(lengths).tolist()
print(
    f"random order {my_padding_ratio(shuffled, sizes['batch_size']):.3f} | "
    f"sorted {my_padding_ratio(sorted(lengths), sizes['batch_size']):.3f} | "
    f"loaders of section 10.3: {pad_ratio['random batches']:.3f} "
    f"and {pad_ratio['grouped by length']:.3f}"
)

# %% [markdown]
# ```{solution-end}
# ```
#
# The random order lands close to the random loader (another permutation, the same
# distribution). Sorting the whole split gives the least padding there is, but every epoch would
# then see the same batches in the same order, from the shortest snippets to the longest. The
# grouped loader sorts only inside mega-batches of 50 batches, so a little padding is left where
# a mega-batch's lengths jump, in exchange for batches that are random again at every epoch.
#
# :::{exercise}
# :label: ch10-ex-rank
# Change `lora_r` to 1, 2, 4, 16 and 32, keeping `lora_alpha` fixed as Hu et al. do (so the
# factor $\alpha / r$ shrinks as the rank grows; scaling $\alpha$ with $r$ would cancel it), and
# re-run section 10.8. Optionally repeat with $\alpha / \sqrt{r}$ (rsLoRA). How do the trainable
# parameters grow with $r$? Plot accuracy against trainable parameters together with the
# freezing rows of the scoreboard. What does the result suggest about
# the rank of the update fine-tuning needs on this task?
# :::
#
# :::{solution} ch10-ex-rank
# :class: dropdown
# Each adapted $384 \times 384$ projection adds $r(384 + 384) = 768r$ parameters; with query and
# value in six layers that is $12 \cdot 768 r = 9{,}216\,r$, plus the 770 of the head: linear in
# $r$. Hu et al. found that very small ranks already reach nearly full fine-tuning accuracy
# {cite}`hu2022lora`; on a task like ours expect accuracy to rise from $r = 1$ to a few and then
# flatten, with differences between larger ranks within the noise of one seed. A low intrinsic
# rank of the update is exactly LoRA's hypothesis; a curve that is flat already at small $r$
# supports it for this task.
# :::
#
# ## Further reading
#
# - Mixed-precision training with fp32 master weights and loss scaling {cite}`micikevicius2018mixed`;
#   PyTorch's automatic mixed precision documentation lists which operations autocast runs in
#   which precision, per device.
# - Gradient checkpointing and its $O(\sqrt n)$ memory schedule {cite}`chen2016training`.
# - LoRA {cite}`hu2022lora`; the `peft` library implements it and many other adapter methods.
# - Early stopping criteria {cite}`prechelt1998early`; decoupled weight decay
#   {cite}`loshchilov2019decoupled`; class-balanced losses {cite}`cui2019class`.
