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
# (ch16)=
# # 16. Scaling out with data parallelism
#
# Every model in this book so far trained in one process. This chapter runs the same fine-tuning
# in two processes that share the work, the way a model is trained on many GPUs. We first count
# why one device runs out, in memory and in time; then we prove, numerically, that splitting a
# batch between processes and averaging their gradients changes nothing in the mathematics; then
# we launch real multi-process fine-tuning of the chapter 9 sentiment classifier three ways
# (`torchrun` with `DistributedDataParallel`, `accelerate launch`, and `Trainer`) and measure what
# it buys on this machine, honestly.
#
# By the end of this chapter you can
#
# 1. compute the memory that weights, gradients and Adam's states take per parameter, and the
#    compute of a training step, for a model of a given size;
# 2. explain data parallelism (every process holds the whole model; gradients are averaged with an
#    all-reduce) and show that it gives the same gradient and the same update as one process on
#    the whole batch;
# 3. turn a single-process training loop into a `DistributedDataParallel` one with
#    `DistributedSampler`, and into an `Accelerate` one, and launch them with `torchrun` and
#    `accelerate launch`;
# 4. read a throughput measurement of data parallelism correctly (threads, communication, what
#    changes on GPUs);
# 5. say what changes for many machines (`torchrun --nnodes`, rendezvous) and for models too big
#    for one device (ZeRO, FSDP);
# 6. accumulate gradients under DDP without wasted all-reduces (`no_sync`,
#    `accelerator.accumulate`), say where mixed precision reduces what, and explain tensor and
#    pipeline parallelism.

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
import difflib
import json
import os
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import Code, display
from torch.utils.data import DistributedSampler
from torch.utils.flop_counter import FlopCounterMode
from transformers import AutoTokenizer

import dlbook
import dlbook.exercises
from dlbook import assets, finetune
from dlbook import distributed as dp

device = dlbook.setup(seed=0)

# %% tags=["parameters", "hide-input"]
profile = os.environ.get("DLBOOK_PROFILE", "full")

# %% tags=["hide-input"]
sizes = dlbook.by_profile(
    profile,
    smoke=dict(
        n_train=64,
        batch_size=16,
        max_length=32,
        epochs=1,
        lr=1e-4,
        n_test=64,
        n_grad=8,
        bench_steps=2,
        bench_rounds=2,
    ),
    full=dict(
        # n_train to lr: the fine-tuning recipe every run shares
        n_train=1_024,  # training snippets, a multiple of batch_size
        batch_size=16,  # global batch: snippets per optimizer step, over all processes
        max_length=64,  # tokens kept per snippet
        epochs=1,  # passes over the training snippets
        lr=1e-4,  # peak learning rate (10 % warm-up, then linear decay)
        n_test=500,  # test snippets every run is evaluated on (16.6)
        n_grad=8,  # test snippets, split in two halves, checking the gradients (16.2)
        bench_steps=4,  # global batches per setting and round of the benchmark (16.6)
        bench_rounds=5,  # timed rounds of the throughput benchmark (16.6)
    ),
)
sizes

# %% [markdown]
# ## 16.1 Why one device is not enough
#
# ### Memory
#
# Training keeps more than the weights in memory. For every parameter there is its gradient, and
# Adam(W) keeps two running averages, of the gradient and of its square. In 32-bit floats that is
#
# $$
# \underbrace{4}_{\text{weight}} + \underbrace{4}_{\text{gradient}} + \underbrace{4 + 4}_{\text{Adam } m,\ v}
# = 16 \text{ bytes per parameter},
# $$ (eq-ch16-bytes)
#
# before a single activation is stored. Mixed-precision training, as counted by Rajbhandari et al.
# {cite}`rajbhandari2020zero`, keeps 16-bit weights and gradients (2 + 2 bytes) but adds a 32-bit
# master copy of the weights to Adam's two 32-bit moments (12 bytes): 16 bytes again. We check
# Eq. {eq}`eq-ch16-bytes` on the real thing: the MiniLM classifier of chapter 9 after one AdamW
# step, counting every tensor the model and the optimizer hold.

# %%
torch.manual_seed(0)
model_path = assets.minilm_path()
tokenizer = AutoTokenizer.from_pretrained(model_path)
probe = finetune.new_classifier(model_path)  # MiniLM + a fresh 2-label head
optimizer = torch.optim.AdamW(probe.parameters(), lr=1e-4)
batch = tokenizer(
    ["a quiet, moving film", "two hours I want back"], padding=True, return_tensors="pt"
)
probe(**batch, labels=torch.tensor([1, 0])).loss.backward()
optimizer.step()


def nbytes(tensors):
    return sum(t.numel() * t.element_size() for t in tensors)


n_minilm = sum(p.numel() for p in probe.parameters())
measured = {
    "weights": nbytes(probe.parameters()),
    "gradients": nbytes(p.grad for p in probe.parameters()),
    "optimizer": nbytes(
        v for s in optimizer.state.values() for k, v in s.items() if k != "step"
    ),  # m and v
}
predicted = dp.training_memory(n_minilm, "adamw", "fp32")
for part, value in measured.items():
    assert value == predicted[part], (part, value, predicted[part])
dlbook.glue("ch16_minilm_params", n_minilm)
dlbook.glue("ch16_minilm_train_mb", predicted["total"] / 1e6)
print(
    {k: f"{v / 1e6:.1f} MB" for k, v in measured.items()},
    f"| {n_minilm:,} parameters x 16 B = {predicted['total'] / 1e6:.1f} MB",
)
del probe, optimizer

# %% [markdown]
# The packaged `dlbook.distributed.training_memory` predicts each part exactly (asserted above):
# {glue:text}`ch16_minilm_params:,` parameters need {glue:text}`ch16_minilm_train_mb:.0f` MB, which
# any laptop holds. The same count for bigger models, next to the memory of one large data-centre
# accelerator (80 GB, a hardware figure, not a measurement; the BERT sizes are those of Devlin et al.
# {cite}`devlin2019bert`, the others round numbers):

# %%
accelerator_gb = 80
model_sizes = {
    "MiniLM-L6 (this book)": n_minilm,
    "BERT-base": 110_000_000,
    "BERT-large": 340_000_000,
    "1.5 B": 1_500_000_000,
    "7 B": 7_000_000_000,
    "70 B": 70_000_000_000,
}
rows = []
for name, n in model_sizes.items():
    mem = dp.training_memory(n, "adamw", "mixed")
    rows.append(
        {
            "model": name,
            "parameters": n,
            "weights GB": mem["weights"] / 1e9,
            "training state GB": mem["total"] / 1e9,
            f"{accelerator_gb} GB devices needed": mem["total"] / 1e9 / accelerator_gb,
        }
    )
memory_table = pd.DataFrame(rows).set_index("model")
largest = (
    accelerator_gb
    * 1e9
    / sum(dp.training_bytes_per_parameter("adamw", "mixed").values())
)
dlbook.glue("ch16_largest_b", largest / 1e9)
dlbook.glue("ch16_7b_gb", memory_table.loc["7 B", "training state GB"])
memory_table.round(2)

# %%
fig, ax = plt.subplots(figsize=(7, 3.2))
ax.barh(
    memory_table.index,
    memory_table["training state GB"],
    color="C0",
    label="weights + gradients + Adam states",
)
ax.barh(
    memory_table.index,
    memory_table["weights GB"],
    color="C1",
    label="weights alone (16-bit)",
)
ax.axvline(
    accelerator_gb,
    color="k",
    linestyle="--",
    label=f"one {accelerator_gb} GB accelerator",
)
ax.set_xscale("log")
ax.set_xlabel("GB (log scale), without activations")
ax.set_title("Training memory, mixed precision with Adam (16 bytes per parameter)")
ax.legend(fontsize=8, loc="lower right")
plt.tight_layout()
plt.show()

# %% [markdown]
# **Figure 16.1.** Training memory of each model with Adam in mixed precision, without
# activations, on a log scale: weights, gradients and Adam's states together (the longer
# rectangle of each row) and the 16-bit weights alone (the shorter one, drawn over it), against
# the memory of one accelerator (dashed line).
#
# At 16 bytes per parameter an 80 GB device holds the training state of at most
# {glue:text}`ch16_largest_b:.1f` billion parameters, and that is before the activations, which
# grow with the batch and the sequence length. A 7-billion-parameter model needs
# {glue:text}`ch16_7b_gb:.0f` GB for its training state alone. So beyond a few billion parameters
# the state itself must be split among devices (section 16.7). Below that, the model fits, and
# the reason to use more devices is time.
#
# ### Compute
#
# Each weight of a linear layer takes part in one multiply and one add per token in the forward
# pass (2 floating-point operations), and in two such products in the backward pass (the gradient
# with respect to the input and with respect to the weight): about
#
# $$
# C_{\text{step}} \approx 6\, N\, T
# $$ (eq-ch16-flops)
#
# operations per training step, for $N$ weights in matrix products and $T$ tokens in the batch
# {cite}`kaplan2020scaling`. The embeddings are table look-ups (no products). Attention adds
# products that do not involve weights, $QK^\top$ and $AV$, each $2 L^2 d$ operations per sequence
# of length $L$ and layer of width $d$ in the forward pass and twice that in the backward pass, so
# $12\, B L^2 d$ per layer for $B$ sequences. We check both terms against PyTorch's own operation
# counter on one training step of the MiniLM classifier, with attention computed by plain matrix
# products (`attn_implementation="eager"`, so that the counter sees them). Pooler and classifier
# only see the `[CLS]` token, so they count with $B$, not with $T = BL$.

# %%
torch.manual_seed(0)
probe = finetune.new_classifier(model_path)
probe.set_attn_implementation("eager")
texts = list(assets.rotten_tomatoes()["train"].select(range(8))["text"])
batch = tokenizer(
    texts, padding="max_length", truncation=True, max_length=64, return_tensors="pt"
)  # (8, 64)
B, L = batch["input_ids"].shape
cfg = probe.config
encoder_n = sum(
    m.weight.numel()
    for m in probe.bert.encoder.modules()
    if isinstance(m, torch.nn.Linear)
)  # N
head_n = probe.bert.pooler.dense.weight.numel() + probe.classifier.weight.numel()
with FlopCounterMode(display=False) as counter:
    probe(**batch, labels=torch.zeros(B, dtype=torch.long)).loss.backward()
counted = counter.get_total_flops()
linear_part = 6 * encoder_n * B * L + 6 * head_n * B  # 6NT, and the heads on [CLS]
attention_part = 12 * B * L * L * cfg.hidden_size * cfg.num_hidden_layers
assert counted == linear_part + attention_part, (counted, linear_part, attention_part)
dlbook.glue("ch16_attention_share", attention_part / counted)
print(
    f"counted {counted / 1e9:.3f} GFLOP = 6NT {6 * encoder_n * B * L / 1e9:.3f} "
    f"+ heads {6 * head_n * B / 1e9:.3f} "
    f"+ attention {attention_part / 1e9:.3f}"
)
del probe

# %% [markdown]
# The count is exact. The matrix products with the weights, $6NT$, are nearly all the work; attention's
# own products are a share of {glue:text}`ch16_attention_share:.3f` at this length. Training time
# therefore grows like parameters times tokens: a model 300 times bigger than MiniLM, trained on the
# same tokens, needs about 300 times the operations, and one device would need 300 times as long.
# Spreading each batch over $K$ devices divides the time per step by up to $K$, and that is what
# data parallelism does.
#
# ## 16.2 Data parallelism: the same gradient from split batches
#
# Every process (a **rank**, numbered $0 \dots K-1$) holds a full copy of the model and the
# optimizer. At each step, each rank takes its own slice of the batch, computes its loss and its
# gradient, and the ranks then **all-reduce** their gradients: afterwards every rank holds the
# average. Each rank applies the same update to the same weights, so the copies stay identical
# without ever sending weights around.
#
# Why the average is the right thing: the loss of a batch of $B = K b$ examples is the mean of the
# per-example losses $\ell_i(\theta)$, and splitting the sum in $K$ equal slices $S_k$ of $b$
# examples gives
#
# $$
# \nabla_\theta \frac{1}{B} \sum_{i=1}^{B} \ell_i(\theta)
# = \frac{1}{K} \sum_{k=1}^{K} \underbrace{\nabla_\theta \frac{1}{b} \sum_{i \in S_k} \ell_i(\theta)}_{g_k \text{, computed by rank } k} .
# $$ (eq-ch16-average)
#
# The slices must be equal in size: with unequal slices the plain average of the $g_k$ weighs the
# examples of the smaller slice more (see {ref}`ch16-ex-unequal`). First a simulation in this one
# process: the MiniLM classifier, `n_grad` test snippets, the whole batch against two halves. The
# two "ranks" are two copies of the model. Dropout is switched off in this check, since two
# processes would draw different dropout masks than one; section 16.4 comes back to this.

# %%
grad_raw = assets.rotten_tomatoes()["test"].select(range(sizes["n_grad"]))
grad_batch = dict(
    tokenizer(list(grad_raw["text"]), padding=True, return_tensors="pt")
)  # (n_grad, longest)
grad_batch["labels"] = torch.tensor(list(grad_raw["label"]))  # (n_grad,)
torch.manual_seed(0)  # the fresh classifier head
base = finetune.new_classifier(
    model_path, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
)
base.train()


def loss_of(model, batch):
    return model(**batch).loss  # mean cross-entropy over the batch


one = copy.deepcopy(base)
loss_of(one, grad_batch).backward()
g_whole = [p.grad.clone() for p in one.parameters()]  # one process, the whole batch

halves = [
    {
        k: v[i * sizes["n_grad"] // 2 : (i + 1) * sizes["n_grad"] // 2]
        for k, v in grad_batch.items()
    }
    for i in range(2)
]
g_ranks = []
for half in halves:  # rank 0 and rank 1, each on its half
    replica = copy.deepcopy(base)
    loss_of(replica, half).backward()
    g_ranks.append([p.grad.clone() for p in replica.parameters()])
g_avg = [(a + b) / 2 for a, b in zip(*g_ranks, strict=True)]  # the all-reduce (mean)

sim_diff = max((a - b).abs().max().item() for a, b in zip(g_avg, g_whole, strict=True))
for a, b in zip(g_avg, g_whole, strict=True):
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
print(
    f"{len(g_whole)} gradient tensors, {sum(g.numel() for g in g_whole):,} numbers "
    f"| largest difference {sim_diff:.2e}"
)

# %% [markdown]
# Equal up to float rounding. One more step: the same **update**. Both sides apply one step of
# AdamW (lr $10^{-4}$) to their gradients, and the new weights must agree too:


# %%
def adamw_step(model, grads, lr=1e-4):
    model = copy.deepcopy(model)
    for p, g in zip(model.parameters(), grads, strict=True):
        p.grad = g.clone()
    opt = finetune.make_optimizer(
        model, lr, 0.01
    )  # the chapter 9 optimizer: AdamW, no decay on biases/LayerNorm
    opt.step()
    return model


after_whole, after_dp = adamw_step(base, g_whole), adamw_step(base, g_avg)
moved = max(
    (a - b).abs().max().item()
    for a, b in zip(after_whole.parameters(), base.parameters(), strict=True)
)
step_diff = max(
    (a - b).abs().max().item()
    for a, b in zip(after_dp.parameters(), after_whole.parameters(), strict=True)
)
for a, b in zip(after_dp.parameters(), after_whole.parameters(), strict=True):
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
print(
    f"weights moved by up to {moved:.1e}; "
    f"the two updates differ by at most {step_diff:.1e}"
)

# %% [markdown]
# The packaged versions: `split_batch` cuts a batch into equal pieces, `average_gradients` is the
# simulated all-reduce, and `simulate_data_parallel` puts them together; they must give the
# gradients we just computed by hand.

# %%
dlbook.show(dp.simulate_data_parallel)

# %%
packaged = dp.simulate_data_parallel(base, loss_of, grad_batch, world_size=2)
for a, b in zip(packaged, g_avg, strict=True):
    torch.testing.assert_close(a, b, rtol=0, atol=0)
for a, b in zip(
    dp.simulate_data_parallel(base, loss_of, grad_batch, world_size=4),
    g_whole,
    strict=True,
):
    torch.testing.assert_close(
        a, b, rtol=1e-4, atol=1e-6
    )  # four ranks of two snippets: the same again
print(
    "simulate_data_parallel == the hand-made average (2 ranks) "
    "and == the whole batch (4 ranks)"
)

# %% [markdown]
# ## 16.3 For real: two processes and an all-reduce
#
# Now two operating-system processes. `torch.distributed` connects them in a **process group**;
# the **backend** does the communication: NCCL between NVIDIA GPUs, gloo on CPUs (also what we
# use here). The processes find each other at a **rendezvous**: rank 0 opens a small key-value
# store at `MASTER_ADDR:MASTER_PORT`, the others connect to it, and they exchange their addresses.
# Everything in this chapter meets on 127.0.0.1 (loopback), at a port the operating system
# reports free, so no network is involved.
#
# The launcher `torchrun` (the module `torch.distributed.run`) starts `--nproc-per-node` copies of a
# script and gives each its `RANK`, `LOCAL_RANK`, `WORLD_SIZE`, `MASTER_ADDR` and `MASTER_PORT` in
# the environment; `dist.init_process_group(backend)` reads them. Our script loads the same
# classifier in each rank, takes its half of the same `n_grad` snippets, back-propagates, averages
# the gradients with `dist.all_reduce`, and takes the AdamW step; it also computes the gradient
# a second way, through `DistributedDataParallel` (below). Rank 0 saves what it got for us to
# compare with the single-process result above. Like every script of this chapter, it is a file
# of the `dlbook` package (`dlbook/scripts/ch16/grad_step.py`), so it runs from wherever the
# notebook runs; the notebook shows it and launches it from there:

# %%
workdir = tempfile.TemporaryDirectory(prefix="dlbook-ch16-")
work = Path(workdir.name)
backend, device_type = dp.pick_backend(2)
print(
    f"backend for 2 processes on this machine: {backend} on {device_type}"
    + (
        ""
        if device_type != "cpu" or device.type == "cpu"
        else f" (this machine has one {device.type} device: "
        "the 2-process runs use gloo on the CPU)"
    )
)

scripts = Path(dlbook.__file__).parent / "scripts" / "ch16"  # installed with dlbook


def show_script(path):
    display(Code(path.read_text(), language="python"))


grad_script = scripts / "grad_step.py"
show_script(grad_script)

# %% [markdown]
# `dlbook.distributed.launch` runs a script under `torchrun` (or `accelerate launch`) with the
# rendezvous on loopback, passes this notebook's environment on to the children (the offline
# settings and the profile), captures their output, and raises an error that includes the
# children's output if one of them fails:

# %%
dlbook.show(dp.launch)

# %%
grad_cfg = work / "grad_step.json"
grad_cfg.write_text(
    json.dumps(
        {
            "texts": list(grad_raw["text"]),
            "labels": list(grad_raw["label"]),
            "out": str(work / "grad_step.pt"),
        }
    )
)
start = time.perf_counter()
done = dp.launch(grad_script, nproc=2, args=[grad_cfg])
print(
    done.stdout.strip(),
    f"\n(2 processes, {time.perf_counter() - start:.1f} s including start-up)",
)
real = torch.load(work / "grad_step.pt")
real_grad_diff = max(
    (a - b).abs().max().item() for a, b in zip(real["grads"], g_whole, strict=True)
)
real_step_diff = max(
    (a - b).abs().max().item()
    for a, b in zip(real["weights"], after_whole.parameters(), strict=True)
)
for a, b in zip(real["grads"], g_whole, strict=True):
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
dlbook.headline(
    "ch16_grad_max_diff", real_grad_diff, profile=profile, at_most=1e-6, fmt="{:.1e}"
)
dlbook.headline(
    "ch16_step_max_diff", real_step_diff, profile=profile, at_most=1e-6, fmt="{:.1e}"
)
print(
    f"2 processes vs 1: largest gradient difference {real_grad_diff:.1e}, "
    f"largest weight difference after AdamW {real_step_diff:.1e}"
)

# %% [markdown]
# Across two real processes, the averaged gradient differs from the single-process gradient by at
# most {glue:text}`ch16_grad_max_diff`, and the weights after the AdamW step by at most
# {glue:text}`ch16_step_max_diff`: float rounding (the halves sum their numbers in a different
# order), nothing more. Data parallelism is not an approximation of training on the whole batch;
# it **is** training on the whole batch, computed in pieces.
#
# `DistributedDataParallel` (DDP) {cite}`li2020pytorch` does what `all_reduce_gradients` did, with
# two refinements: it groups the gradients into buckets of about 25 MB and starts each bucket's
# all-reduce as soon as backward has produced it, so communication overlaps with the rest of the
# backward pass; and at construction it broadcasts rank 0's weights so that every copy starts equal.
#
# ## 16.4 Fine-tuning with `torchrun` and `DistributedDataParallel`
#
# The chapter 9 loop needs four changes to run data-parallel:
#
# 1. `dist.init_process_group(...)` at the start; pick the device of this rank;
# 2. wrap the model: `DDP(model)`;
# 3. give the `DataLoader` a `DistributedSampler`, so that each rank reads a different shard of the
#    data, and call `sampler.set_epoch(epoch)` so that the shuffle changes between epochs;
# 4. the per-rank batch is the global batch divided by the number of ranks; anything printed or
#    saved is done by rank 0.
#
# `DistributedSampler` shuffles all indices with the same seed in every rank, then rank $r$ of $K$
# takes every $K$-th index starting at $r$. With a global batch of $B$ and per-rank batches of
# $B/K$, the $K$ per-rank batches of step $t$ together hold exactly the $B$ snippets that a single
# process with the same sampler would put in its batch $t$:

# %%
n, K, b = sizes["n_train"], 2, sizes["batch_size"] // 2
one_proc = list(
    DistributedSampler(range(n), num_replicas=1, rank=0, shuffle=True, seed=0)
)
per_rank = [
    list(DistributedSampler(range(n), num_replicas=K, rank=r, shuffle=True, seed=0))
    for r in range(K)
]
for t in range(n // sizes["batch_size"]):
    together = sorted(i for r in range(K) for i in per_rank[r][t * b : (t + 1) * b])
    assert together == sorted(one_proc[t * K * b : (t + 1) * K * b]), t
assert [dp.shard_indices(10, r, 4) for r in range(4)] == [
    list(DistributedSampler(range(10), num_replicas=4, rank=r, shuffle=False))
    for r in range(4)
]
print(
    f"step 0: rank 0 reads {per_rank[0][:b][:6]}..., "
    f"rank 1 reads {per_rank[1][:b][:6]}...; together = the 1-process batch"
)

# %% [markdown]
# So, with the same seed, a 2-process run sees the same batches, step by step, as a 1-process
# run. Only dropout differs: each rank draws its own masks for its own half, so the runs cannot be
# compared step by step. To compare them sharply we switch dropout off for every run of this
# chapter (a recipe choice, not a requirement of DDP; with dropout, two runs differ like two
# seeds). The shuffle above also shows why `shard_indices` (which `DistributedSampler` uses when it
# does not shuffle) pads the index list: every rank must run the same number of steps, or the
# others would wait forever in an all-reduce.
#
# The script. It reads the recipe from a JSON file, records the loss of every step (averaged over
# the ranks, so it is the loss of the global batch), times the training loop between two barriers,
# and rank 0 saves the weights for us to evaluate:

# %%
ddp_script = scripts / "train_ddp.py"
recipe = {
    k: sizes[k] for k in ("n_train", "batch_size", "max_length", "epochs", "lr")
} | {"seed": 0, "dropout": 0.0}
recipe["cuda"] = (
    device_type == "cuda"
)  # the same kind of device for the 1-process and the 2-process runs
recipe_file = work / "recipe.json"
recipe_file.write_text(json.dumps(recipe))
show_script(ddp_script)

# %% [markdown]
# We run it twice on this machine's CPU cores: once as **one process with two threads** (PyTorch
# splits each matrix product over both cores), once as **two processes with one thread each**
# (each process does half the batch, then they exchange gradients). Same script, same launcher,
# same recipe. `run` launches a script, reports how long the whole thing took including start-up,
# and returns the result file of rank 0:

# %%
n_cores = os.cpu_count() or 1


def run(name, script, nproc, threads, launcher="torchrun"):
    out = work / name
    out.mkdir(exist_ok=True)
    start = time.perf_counter()
    done = dp.launch(
        script,
        nproc=nproc,
        args=[recipe_file, out],
        launcher=launcher,
        threads_per_process=threads,
    )
    wall = time.perf_counter() - start
    print(
        f"--- {name}: {nproc} process(es) x {threads} thread(s), "
        f"{wall:.0f} s including start-up ---"
    )
    print(done.stdout.strip())
    result = json.loads((out / "result.json").read_text())
    return result | {"name": name, "nproc": nproc, "wall": wall, "dir": out}


runs = {}
runs["DDP, 1 process"] = run("ddp1", ddp_script, nproc=1, threads=min(2, n_cores))
runs["DDP, 2 processes"] = run("ddp2", ddp_script, nproc=2, threads=1)

# %% [markdown]
# Did the two runs train the same model? Same batches, no dropout: the loss of every step and
# the final weights should agree up to float rounding, which Adam can amplify a little over the
# steps.

# %%
loss1, loss2 = (
    np.array(runs["DDP, 1 process"]["losses"]),
    np.array(runs["DDP, 2 processes"]["losses"]),
)
w1 = torch.load(runs["DDP, 1 process"]["dir"] / "weights.pt")
w2 = torch.load(runs["DDP, 2 processes"]["dir"] / "weights.pt")
loss_gap = float(np.abs(loss1 - loss2).max())
weight_gap = max((w1[k] - w2[k]).abs().max().item() for k in w1)
dlbook.glue("ch16_loss_gap", loss_gap)
dlbook.glue("ch16_weight_gap", weight_gap)
np.testing.assert_allclose(loss2, loss1, atol=0.02)
print(
    f"{len(loss1)} steps | largest loss difference {loss_gap:.1e} "
    f"| largest weight difference {weight_gap:.1e}"
)

# %% [markdown]
# ## 16.5 The same with Accelerate, and with `Trainer`
#
# Hugging Face Accelerate hides the four changes behind one object. `Accelerator()` reads the
# launcher's environment and sets up the process group; `accelerator.prepare(...)` wraps the model
# in DDP (or whatever the launch asked for) and re-shards the `DataLoader`;
# `accelerator.backward(loss)` replaces `loss.backward()`. The same script then runs on one CPU,
# one GPU, eight GPUs or several machines, decided by the launch command. Two details of this
# version: `prepare` gives each of the $K$ processes every $K$-th batch of the loader, so the
# loader's batch size is the per-process one; and we build the learning-rate schedule on the
# number of batches a process actually sees, and step it ourselves.

# %%
accelerate_script = scripts / "train_accelerate.py"
print(
    "".join(
        difflib.unified_diff(
            ddp_script.read_text().splitlines(keepends=True),
            accelerate_script.read_text().splitlines(keepends=True),
            "train_ddp.py",
            "train_accelerate.py",
            n=0,
        )
    )
)

# %% [markdown]
# The launch command is `accelerate launch` (here as `python -m accelerate.commands.launch`), with
# every setting on the command line instead of in a config file (`accelerate config` would write
# one to your home folder): `--num_processes 2 --num_machines 1`, the rendezvous address and
# port, `--mixed_precision no`. `--multi_gpu` selects Accelerate's multi-process launcher, which is
# `torchrun` underneath; with no GPU present, `Accelerator(cpu=True)` in the script turns it into
# gloo processes on the CPU. (`--cpu` alone would start a single process here: Accelerate's
# other multi-CPU route goes through MPI.)

# %%
print(
    " ".join(
        dp.launch_command(
            "train_accelerate.py",
            2,
            ["recipe.json", "out/"],
            launcher="accelerate",
            port=29500,
        )
    )
)
runs["Accelerate, 2 processes"] = run(
    "accelerate2", accelerate_script, nproc=2, threads=1, launcher="accelerate"
)

# %% [markdown]
# `Trainer` (chapter 9) builds on Accelerate: started by `torchrun` it sees the process group,
# wraps the model in DDP and shards the data itself. `per_device_train_batch_size` is the
# per-process batch; the recipe is otherwise the one of chapter 9 (AdamW, 10 % warm-up, linear
# decay, clipping at 1). Its logged loss is already averaged over the processes, and it reports
# its own throughput (`train_samples_per_second`).
#
# One setting needs care. By default (`average_tokens_across_devices=True`) a multi-process
# `Trainer` multiplies the loss by the number of processes whenever the model's `forward` accepts
# extra keyword arguments, on the assumption that the model divides its loss by the token count
# of the **global** batch (as the causal language models do, which then get the right gradient
# after DDP's averaging). `BertForSequenceClassification` accepts such arguments but computes a
# plain mean over its own examples, so with two processes and the default both the gradient and
# the logged loss come out twice too large (the doubled loss gives it away; Adam hides most of a
# constant gradient scale, the gradient clipping does not). Setting it to `False` makes
# `Trainer` compute Eq. {eq}`eq-ch16-average` like the other two scripts.

# %%
trainer_script = scripts / "train_trainer.py"
show_script(trainer_script)
runs["Trainer, 2 processes"] = run("trainer2", trainer_script, nproc=2, threads=1)

# %% [markdown]
# ## 16.6 Results: the same model, and the speed
#
# Every run is evaluated here, in this notebook, on the same `n_test` test snippets with chapter 9's
# `evaluate_classifier`. The loss curves first:

# %%
test_tok = finetune.tokenize_dataset(
    assets.rotten_tomatoes()["test"].select(range(sizes["n_test"])),
    tokenizer,
    sizes["max_length"],
)
evaluator = finetune.new_classifier(model_path)  # weights loaded below
rows = []
for name, r in runs.items():
    evaluator.load_state_dict(torch.load(r["dir"] / "weights.pt"))
    res = finetune.evaluate_classifier(evaluator, test_tok, tokenizer, device=device)
    r["accuracy"] = res.accuracy
    rows.append(
        {
            "run": name,
            "processes": r["nproc"],
            "threads each": r["threads"],
            "steps": len(r["losses"]),
            "final loss (mean of last 5)": float(np.mean(r["losses"][-5:])),
            "test accuracy": res.accuracy,
            "training s": r["seconds"],
            "examples/s": r["examples"] / r["seconds"],
            "wall s (with start-up)": r["wall"],
        }
    )
results = pd.DataFrame(rows).set_index("run")

fig, ax = plt.subplots(figsize=(7, 3.2))
for (name, r), style in zip(runs.items(), ["-", "--", ":", "-."], strict=True):
    ax.plot(r["losses"], style, label=name)
ax.axhline(np.log(2), color="grey", linestyle=":", linewidth=0.8)
ax.set_xlabel("optimizer step")
ax.set_ylabel("training loss (global batch)")
ax.set_title(
    f"{sizes['n_train']:,} snippets, global batch {sizes['batch_size']}, no dropout"
)
ax.legend(fontsize=8)
plt.tight_layout()
plt.show()
results.round(3)

# %% [markdown]
# **Figure 16.2.** The training loss of the global batch at every optimizer step, for the four
# runs of the same recipe; the grey dotted line is $\ln 2$, the loss of a 50/50 guess. Compare
# the DDP runs with one process (solid) and two (dashed).
#
# The two DDP curves lie on top of each other: the largest loss difference over all steps is
# {glue:text}`ch16_loss_gap:.1e` and the largest weight difference at the end
# {glue:text}`ch16_weight_gap:.1e`. Our Accelerate script shuffles with its own generator: it also
# sees every snippet once, but in other batches, so its curve wanders around the DDP ones like a
# different seed would. `Trainer` turns out to form the same global batches as the DDP runs here
# (its largest loss difference to the one-process run is {glue:text}`ch16_trainer_gap:.1e`), so
# its curve lies on theirs. The accuracies:

# %%
acc1 = runs["DDP, 1 process"]["accuracy"]
dlbook.glue(
    "ch16_trainer_gap",
    float(np.abs(np.array(runs["Trainer, 2 processes"]["losses"]) - loss1).max()),
)
dlbook.glue("ch16_acc_1proc", acc1)
dlbook.glue("ch16_acc_2proc", runs["DDP, 2 processes"]["accuracy"])
dlbook.glue("ch16_acc_accelerate", runs["Accelerate, 2 processes"]["accuracy"])
dlbook.glue("ch16_acc_trainer", runs["Trainer, 2 processes"]["accuracy"])
ddp_gap = abs(runs["DDP, 2 processes"]["accuracy"] - acc1)
other_gap = max(
    abs(runs[k]["accuracy"] - acc1)
    for k in ("Accelerate, 2 processes", "Trainer, 2 processes")
)
dlbook.headline("ch16_acc_gap_ddp", ddp_gap, profile=profile, at_most=0.01)
dlbook.headline("ch16_acc_gap_other", other_gap, profile=profile, at_most=0.05)
majority = max(np.mean(list(test_tok["labels"])), 1 - np.mean(list(test_tok["labels"])))
dlbook.glue("ch16_majority", float(majority))
dlbook.headline("ch16_acc_1proc_bar", acc1, profile=profile, at_least=majority + 0.1)
print(
    f"test accuracy on {sizes['n_test']} snippets: 1 process {acc1:.3f} "
    "| 2 processes (DDP) "
    f"{runs['DDP, 2 processes']['accuracy']:.3f} | majority {majority:.3f}"
)

# %% [markdown]
# On {glue:text}`ch16_acc_1proc_bar` test accuracy for one process (the `full` run must beat the
# majority rate, {glue:text}`ch16_majority:.3f`, by 0.1), the 2-process DDP run reaches
# {glue:text}`ch16_acc_2proc:.3f`, a difference of {glue:text}`ch16_acc_gap_ddp` (the `full` run
# asserts at most 0.01: same batches, same arithmetic up to rounding). Accelerate reaches
# {glue:text}`ch16_acc_accelerate:.3f` and `Trainer` {glue:text}`ch16_acc_trainer:.3f`; the larger of
# their differences to the single process is {glue:text}`ch16_acc_gap_other`, and the `full` run
# asserts at most 0.05 for it. Accelerate's difference is that of a different data order;
# `Trainer`, with the same batches as DDP, differs by rounding only.
#
# Now the speed. The training runs above ran one after the other, each once, so their times
# mix the settings with whatever else the machine did meanwhile. The throughput comes from a
# benchmark of its own instead: one launch of two processes that alternates the two settings in
# rounds. In the "1 process x 2 threads" phase rank 0 trains alone on the whole global batch with
# two threads while rank 1 waits at a barrier (it records its CPU time, to show that waiting
# costs no core); in the "2 processes x 1 thread" phase both ranks train a DDP model on their
# halves with one thread each. Same batches, same start-up, the order flipped every round, a
# warm-up round not kept.

# %%
bench_script = scripts / "bench_ddp.py"
show_script(bench_script)
bench_recipe = work / "bench.json"
bench_recipe.write_text(
    json.dumps(recipe | {k: sizes[k] for k in ("bench_steps", "bench_rounds")})
)
(work / "bench").mkdir(exist_ok=True)
dp.launch(
    bench_script,
    nproc=2,
    args=[bench_recipe, work / "bench"],
    threads_per_process=min(2, n_cores),
)
bench = json.loads((work / "bench" / "bench.json").read_text())
tput = {
    k: np.array(v) for k, v in bench["examples_per_s"].items()
}  # setting -> (bench_rounds,)
ratios = (
    tput["2 processes x 1 thread"] / tput["1 process x 2 threads"]
)  # round by round
speedup = float(np.median(ratios))
dlbook.glue("ch16_tput_1", float(np.median(tput["1 process x 2 threads"])))
dlbook.glue("ch16_tput_2", float(np.median(tput["2 processes x 1 thread"])))
dlbook.glue("ch16_speedup", speedup)
dlbook.glue("ch16_speedup_range", f"{ratios.min():.2f} to {ratios.max():.2f}")
dlbook.glue("ch16_idle_cpu", bench["rank1_cpu_share_while_waiting"])
dlbook.glue("ch16_cores", n_cores)
dlbook.glue(
    "ch16_minilm_grad_mb", n_minilm * 4 / 1e6
)  # the gradients exchanged per step, float32
assert bench["rank1_cpu_share_while_waiting"] < 0.5, "the waiting rank used a core"
fig, ax = plt.subplots(figsize=(6.5, 2.8))
names = list(tput)
ax.boxplot([tput[n] for n in names], orientation="horizontal", tick_labels=names)
ax.set_xlabel("training examples per second (spread over the rounds)")
ax.set_title(f"Throughput, interleaved rounds ({n_cores} CPU cores)")
plt.tight_layout()
plt.show()
print(dlbook.env.last_provenance().line())
print(
    "2 processes x 1 thread vs 1 process x 2 threads: "
    f"{speedup:.2f}x the examples per second "
    f"(rounds: {', '.join(f'{r:.2f}' for r in ratios)})"
)
# a copy of the table for whoever runs the chapter headless (tests, make full): the
# system's temp folder
results.to_csv(Path(tempfile.gettempdir()) / f"dlbook-ch16-{profile}-results.csv")

# %% [markdown]
# **Figure 16.3.** Training examples per second of the two ways to use the same CPU cores over
# the interleaved rounds, one value per setting and round: the box spans the quartiles, the line
# in it is the median, the whiskers reach the most extreme rounds within 1.5 box widths of the
# box, and a round farther out is drawn as a circle. Compare the medians; the spread is how much
# the throughput varied from round to round.
#
# Measured on the machine in the provenance line above ({glue:text}`ch16_cores` CPU cores): one
# process with two threads trains {glue:text}`ch16_tput_1:.1f` examples per second (median over the
# rounds), two processes with one thread each {glue:text}`ch16_tput_2:.1f`, a ratio of
# {glue:text}`ch16_speedup:.2f` (from {glue:text}`ch16_speedup_range` over the rounds). While it
# waited, rank 1 used {glue:text}`ch16_idle_cpu:.1%` of a core. How to read this:
#
# - **The hardware is the same.** Both settings use the same two cores. One process already spreads
#   each matrix product over both of them with two threads, so data parallelism cannot add compute
#   here; it only changes how the work is divided. Whatever it gains comes from the fact that two
#   single-threaded processes never wait for each other inside an operation (small operations and
#   the Python between them do not split well over threads, and two threads suffer most when
#   other programs also want the cores); whatever it loses is communication.
# - **Communication.** Every step, the two processes exchange all
#   {glue:text}`ch16_minilm_params:,` gradients, {glue:text}`ch16_minilm_grad_mb:.0f` MB in 32-bit
#   floats, through gloo over loopback, and wait for each other at the all-reduce (the slower one
#   sets the pace).
# - **Start-up.** Each process imports PyTorch and Transformers and loads the model; the "wall s"
#   column of the training table includes that, the benchmark does not. For a run of seconds it
#   dominates; for a run of hours it vanishes.
# - **Spread.** The rounds alternate the settings, so a change of load hits both alike; a wide
#   range of per-round ratios still says the machine was busy, and the median is the number to
#   quote.
#
# On **two GPUs** the picture is different in kind: each process brings its own device, the compute
# doubles, and NCCL moves the gradients over NVLink or PCIe while DDP overlaps it with the backward
# pass. Goyal et al. trained ResNet-50 on 256 GPUs with about 90 %
# scaling efficiency {cite}`goyal2017accurate`, and Li et al. report near-linear scaling of DDP for
# BERT and ResNet on up to 256 GPUs {cite}`li2020pytorch`. Data parallelism is a way to **add
# devices**, not to use one device better.

# %% [markdown]
# ## 16.7 Where this goes on a cluster
#
# **Many machines.** `torchrun` is the same on every machine; it only needs to know how many
# machines take part and where to meet. On each of, say, four machines with eight GPUs:
#
# ```bash
# torchrun --nnodes 4 --nproc-per-node 8 \
#     --rdzv-backend c10d --rdzv-endpoint node0.cluster:29400 --rdzv-id finetune-42 \
#     train_ddp.py recipe.json out/
# ```
#
# The launchers agree at the **rendezvous** (a key-value store on `node0`) on a rank for every
# process, 0 to 31; `LOCAL_RANK` is the GPU on its machine. The script does not change at all:
# `init_process_group("nccl")` reads the environment. With a global batch 32 times larger
# than on one GPU, the learning rate must usually grow too: Goyal et al.'s **linear scaling rule**
# multiplies it by the number of workers, with a warm-up at the start {cite}`goyal2017accurate`
# (see {ref}`ch16-ex-linear-scaling`). Schedulers such as Slurm start the same command on every
# node and provide the endpoint.
#
# **Models that do not fit.** Data parallelism keeps a full copy of the 16 bytes per parameter on
# every device, which section 16.1 showed to be the limit. **ZeRO** {cite}`rajbhandari2020zero`
# (in DeepSpeed) removes the copies step by step: stage 1 shards Adam's states among the $N_d$
# devices, stage 2 also the gradients (each rank keeps only the averaged gradient of its shard: a
# reduce-scatter instead of an all-reduce), stage 3 also the weights themselves, gathered layer by
# layer just before they are needed and freed afterwards. Per device, with $\Psi$ parameters and
# mixed precision, that is $16\Psi$ for plain data parallelism, then $4\Psi + 12\Psi/N_d$,
# $2\Psi + 14\Psi/N_d$ and $16\Psi/N_d$ (see {ref}`ch16-ex-zero`). PyTorch's **Fully Sharded Data
# Parallel** (FSDP) {cite}`zhao2023fsdp` is the same idea as stage 3, built into PyTorch: each
# wrapped unit (a Transformer layer, say) holds a shard of its parameters, all-gathers them for
# its forward and backward, and reduce-scatters its gradients. The training loop is still data
# parallel: each rank reads its own shard of the data; what is split in addition is the model's
# state.
#
# What changes in the script is small. The diff from our DDP script to an FSDP one,
# `train_fsdp.py` in the same folder (the FSDP2 API, `fully_shard`, applied to every encoder
# layer and then to the whole model):

# %%
fsdp_script = scripts / "train_fsdp.py"
fsdp_text = fsdp_script.read_text()
fsdp_diff = "".join(
    difflib.unified_diff(
        ddp_script.read_text().splitlines(keepends=True),
        fsdp_text.splitlines(keepends=True),
        "train_ddp.py",
        "train_fsdp.py",
        n=0,
    )
)
assert "DDP" not in fsdp_text and "model.module" not in fsdp_text  # no DDP left
print(fsdp_diff)

# %% [markdown]
# Apart from the docstring and the comments, three kinds of lines change: the import, the
# wrapping, and the places that reached into `model.module` (the wrapped model is now the model
# itself, and a full copy of the weights must be gathered from the shards before saving, by every
# rank together, since gathering is a collective operation). The data loading, the loop, the
# optimizer and the launch command stay as they are. With Accelerate or `Trainer` it is a
# launch option (`accelerate launch --use_fsdp ...`, or `fsdp=...` in `TrainingArguments`, or a
# DeepSpeed config), not a code change. We do not run it here: on two CPU processes, sharding a model whose
# whole training state takes {glue:text}`ch16_minilm_train_mb:.0f` MB would only add communication.

# %% [markdown]
# ## 16.8 Accumulation, mixed precision, and splitting the model itself
#
# **Gradient accumulation under DDP.** Chapter 10 accumulated the gradients of $k$ micro-batches
# before one optimizer step. Under DDP every `backward()` starts an all-reduce, so a plain
# accumulation loop communicates $k$ times per step where once would do: the average of sums is
# the sum of averages, so only the last all-reduce is needed. `model.no_sync()` switches the
# all-reduce off; the gradients then add up locally in `.grad`, and the first backward outside the
# context reduces the sum. The forward pass must run inside the context too, since DDP decides in
# `forward()` whether the coming backward will reduce. Accelerate wraps the same logic in
# `with accelerator.accumulate(model):`, and its `backward` divides the loss by $k$.
#
# The script below counts the all-reduces with a DDP **communication hook**, a function DDP calls
# for each bucket of gradients instead of its own all-reduce: ours logs the bucket and then runs
# the default all-reduce (`dlbook.distributed.counting_allreduce_hook`). Two gloo processes,
# $k$ micro-batches each; the reference is the gradient of the mean loss over all
# $2k$ micro-batches in one process. The same script looks at mixed precision: a forward pass
# under bf16 `torch.autocast`, the dtype of the gradients DDP receives, and the bytes it sends,
# with the default all-reduce and with PyTorch's `bf16_compress_hook`, which sends bf16.

# %%
accum_script = scripts / "accumulate_ddp.py"
show_script(accum_script)
accum_cfg = work / "accumulate.json"
accum_cfg.write_text(
    json.dumps(
        {
            "accumulation_steps": 4,
            "micro_batch": 8,
            "out": str(work / "accumulate.json.out"),
        }
    )
)
dp.launch(accum_script, nproc=2, args=[accum_cfg])
acc = json.loads((work / "accumulate.json.out").read_text())
display(pd.DataFrame({k: acc[k] for k in ("every step", "no_sync", "accelerate")}).T)
k_acc = acc["k"]
assert acc["every step"]["all_reduces"] == k_acc and acc["no_sync"]["all_reduces"] == 1
assert acc["accelerate"]["all_reduces"] == 1 and acc["accelerate"]["synced_last"]
for key in ("every step", "no_sync", "accelerate"):
    assert acc[key]["max_diff"] < 1e-6, (key, acc[key])  # == the big-batch gradient
dlbook.glue("ch16_accum_k", k_acc)
dlbook.glue(
    "ch16_accum_diff",
    max(acc[k]["max_diff"] for k in ("every step", "no_sync", "accelerate")),
)

# %% [markdown]
# Without `no_sync` the {glue:text}`ch16_accum_k` micro-batches cost
# {glue:text}`ch16_accum_k` all-reduces; with it, and with `accelerator.accumulate`, one. All three
# give the gradient of the big batch, to within {glue:text}`ch16_accum_diff:.1e` (float rounding).
# On GPUs linked by a slow network, that is a factor $k$ less communication for the same step.
#
# **Mixed precision with DDP.**

# %%
mixed = pd.DataFrame(
    {k: acc[k] for k in ("bf16 autocast", "bf16 autocast, bf16 all-reduce")}
).T
display(mixed)
assert (mixed["logits_dtype"] == "torch.bfloat16").all() and (
    mixed["grad_dtype"] == "torch.float32"
).all()
assert (
    acc["bf16 autocast, bf16 all-reduce"]["bytes"] * 2 == acc["bf16 autocast"]["bytes"]
)
assert mixed["max_rel_diff"].max() < 0.05  # bf16 products: about 3 significant digits
dlbook.glue("ch16_mixed_rel", float(mixed["max_rel_diff"].max()))

# %% [markdown]
# Autocast changes the arithmetic of the forward pass (the logits come out in bf16), not the
# parameters: they stay fp32, so their gradients are fp32 and DDP's default hook all-reduces fp32
# buckets. The bf16 compression hook halves the bytes on the wire and casts the averaged
# gradient back to fp32; both runs differ from the fp32 reference by at most
# {glue:text}`ch16_mixed_rel:.1%` (relative, per tensor), the price of bf16 products. With
# Accelerate, `Accelerator(mixed_precision="bf16")` does the autocast part; ZeRO and FSDP can also
# keep 16-bit copies of the weights and reduce in 16 bits (FSDP's `MixedPrecisionPolicy`).
#
# **Tensor parallelism** splits each weight matrix among devices, so that every device holds and
# multiplies a slice {cite}`shoeybi2019megatron`. Megatron-LM pairs the two linear layers of a
# Transformer's feed-forward block: the first is split by its output columns
# (**column-parallel**: each device computes its own slice of the hidden units, and the
# element-wise GELU needs nothing from the other slice), the second by its input rows
# (**row-parallel**: each device multiplies its slice of hidden units by its rows, and an
# all-reduce sums the partial outputs). One all-reduce in the forward pass, one in the
# backward pass. Checked here on two simulated devices, forward and backward:

# %%
torch.manual_seed(0)
d, h = 8, 32
full_mlp = torch.nn.Sequential(
    torch.nn.Linear(d, h), torch.nn.GELU(), torch.nn.Linear(h, d)
)
x = torch.randn(5, d, requires_grad=True)  # (tokens, d)
y_full = full_mlp(x)  # (tokens, d)
y_full.square().sum().backward()
W1, b1, W2, b2 = (p.detach() for p in full_mlp.parameters())  # W1 (h, d), W2 (d, h)
x_tp = x.detach().clone().requires_grad_(True)
shards = []
for rows in (slice(0, h // 2), slice(h // 2, h)):  # device 0 and device 1
    A = (
        W1[rows].clone().requires_grad_(True)
    )  # column-parallel: (h/2, d), its hidden units
    a = b1[rows].clone().requires_grad_(True)
    B = (
        W2[:, rows].clone().requires_grad_(True)
    )  # row-parallel: (d, h/2), the matching inputs
    shards.append((A, a, B, rows))
partial = [
    torch.nn.functional.gelu(x_tp @ A.T + a) @ B.T for A, a, B, _ in shards
]  # (tokens, d) each
bias2 = b2.clone().requires_grad_(True)
y_tp = partial[0] + partial[1] + bias2  # the all-reduce (sum), then the bias once
y_tp.square().sum().backward()
torch.testing.assert_close(y_tp, y_full)
torch.testing.assert_close(x_tp.grad, x.grad)
for A, a, B, rows in shards:
    torch.testing.assert_close(A.grad, full_mlp[0].weight.grad[rows])
    torch.testing.assert_close(a.grad, full_mlp[0].bias.grad[rows])
    torch.testing.assert_close(B.grad, full_mlp[2].weight.grad[:, rows])
torch.testing.assert_close(bias2.grad, full_mlp[2].bias.grad)
print(
    "column-parallel + row-parallel on 2 shards == the full layers: "
    "outputs, input gradient, weight gradients"
)

# %% [markdown]
# **Pipeline parallelism** puts consecutive layers on consecutive devices (stages) and passes
# activations along. One batch would keep only one stage busy at a time, so GPipe
# {cite}`huang2019gpipe` cuts the mini-batch into $m$ micro-batches that flow through the $p$
# stages one behind the other; the gradients of the micro-batches add up, as in accumulation,
# and the update waits until all are through. At the start and at the end of the forward and the
# backward sweep some stages have nothing to do: the **bubble**. With every stage taking one time
# unit per micro-batch in each direction, a step lasts $2(m + p - 1)$ units, of which each stage
# works $2m$, so the idle share is
#
# $$
# \frac{p - 1}{m + p - 1} .
# $$ (eq-ch16-bubble)
#
# Two checks: splitting a model into two stages and feeding it micro-batches gives the
# full-batch gradient, and a schedule built only from GPipe's dependencies
# (`dlbook.distributed.gpipe_schedule`) has exactly the idle share of Eq. {eq}`eq-ch16-bubble`.

# %%
torch.manual_seed(0)
net = torch.nn.Sequential(
    torch.nn.Linear(8, 16),
    torch.nn.Tanh(),
    torch.nn.Linear(16, 16),
    torch.nn.Tanh(),
    torch.nn.Linear(16, 2),
)
stages = [net[:2], net[2:]]  # stage 0 on device 0, stage 1 on device 1
xb, yb = torch.randn(12, 8), torch.randint(0, 2, (12,))  # (batch, 8), (batch,)
torch.nn.functional.cross_entropy(net(xb), yb).backward()
g_full = [p.grad.clone() for p in net.parameters()]
net.zero_grad()
for mb in torch.arange(12).chunk(4):  # m = 4 micro-batches
    activation = stages[0](xb[mb])  # sent from device 0 to device 1
    loss = (
        torch.nn.functional.cross_entropy(
            stages[1](activation), yb[mb], reduction="sum"
        )
        / 12
    )
    loss.backward()  # the gradient of the activation travels back to device 0
for a, b in zip((p.grad for p in net.parameters()), g_full, strict=True):
    torch.testing.assert_close(a, b)
grid = dp.gpipe_schedule(4, 8)
for r in grid:
    print(" ".join(f"{c:>3}" for c in r))
for p_, m_ in [(2, 1), (2, 8), (4, 4), (4, 8), (8, 32)]:
    g = dp.gpipe_schedule(p_, m_)
    idle = sum(c == "" for row in g for c in row) / (p_ * len(g[0]))
    assert abs(idle - dp.gpipe_bubble_fraction(p_, m_)) < 1e-12, (p_, m_)
dlbook.glue("ch16_bubble_4_8", dp.gpipe_bubble_fraction(4, 8))
dlbook.glue("ch16_bubble_4_32", dp.gpipe_bubble_fraction(4, 32))
print(
    "2 stages x 4 micro-batches == the full-batch gradient; "
    "simulated idle share == (p-1)/(m+p-1)"
)

# %% [markdown]
# With 4 stages and 8 micro-batches (printed above: F for forward, B for backward, one column per
# time unit) the stages idle {glue:text}`ch16_bubble_4_8:.0%` of the time; with 32 micro-batches
# {glue:text}`ch16_bubble_4_32:.0%`. Hence many small micro-batches per step, and later schedules
# (one forward, one backward, interleaved) that shrink the bubble further. Large models combine
# all three: tensor parallelism inside a machine with fast links, pipeline stages across machines,
# and data parallelism over copies of the whole pipeline.

# %%
workdir.cleanup()

# %% [markdown]
# ## Summary
#
# - Training keeps about 16 bytes per parameter besides the activations (Eq.
#   {eq}`eq-ch16-bytes`, checked on the MiniLM classifier): {glue:text}`ch16_minilm_train_mb:.0f` MB
#   for MiniLM, {glue:text}`ch16_7b_gb:.0f` GB for a 7-billion-parameter model. A training step
#   costs about $6NT$ operations (Eq. {eq}`eq-ch16-flops`, checked against PyTorch's counter).
# - Data parallelism: every rank holds the model, takes an equal slice of the batch, and the
#   gradients are averaged with an all-reduce. The average of the slices' gradients is the
#   gradient of the whole batch (Eq. {eq}`eq-ch16-average`): in-process and across two real gloo
#   processes the difference was {glue:text}`ch16_grad_max_diff`, and the weights after an AdamW
#   step differed by {glue:text}`ch16_step_max_diff`.
# - `DistributedDataParallel` + `DistributedSampler` under `torchrun` reproduces the 1-process run
#   (accuracy {glue:text}`ch16_acc_2proc:.3f` against {glue:text}`ch16_acc_1proc:.3f`); Accelerate and
#   `Trainer` do the same with fewer changes to the code and land within
#   {glue:text}`ch16_acc_gap_other` accuracy.
# - On the {glue:text}`ch16_cores` CPU cores of this machine, two processes gave
#   {glue:text}`ch16_speedup:.2f` times the throughput of one process with two threads: the same
#   cores divided differently, with communication on top. Data parallelism pays when each process
#   brings its own device.
# - Many machines: the same script, `torchrun --nnodes ... --rdzv-endpoint ...`. Too big for one
#   device: ZeRO and FSDP shard optimizer states, gradients and weights, with a few lines changed.
# - Accumulating under DDP, `no_sync` (or `accelerator.accumulate`) cut {glue:text}`ch16_accum_k`
#   all-reduces to one with the same gradient; bf16 autocast leaves fp32 gradients, which DDP
#   reduces in fp32 unless a compression hook sends bf16. Tensor parallelism splits the matrices
#   (checked forward and backward), pipeline parallelism the layers, at the cost of a bubble of
#   $(p-1)/(m+p-1)$.
#
# ## Exercises
#
# :::{exercise}
# :label: ch16-ex-unequal
# A data set of 10 snippets, batch size 10, two ranks; suppose rank 0 got 6 snippets and rank 1
# got 4, each computed the mean loss of its snippets, and the gradients were averaged with equal
# weights. Write the resulting gradient in terms of the per-snippet gradients and say how it
# differs from Eq. {eq}`eq-ch16-average`. How does `DistributedSampler` avoid the problem, and
# what does it cost?
# :::
#
# :::{solution} ch16-ex-unequal
# :class: dropdown
# $\frac12\bigl(\frac16 \sum_{i \in S_0} \nabla \ell_i + \frac14 \sum_{i \in S_1} \nabla \ell_i\bigr)
# = \frac1{12} \sum_{S_0} \nabla \ell_i + \frac18 \sum_{S_1} \nabla \ell_i$: the snippets of the smaller
# slice weigh $1/8$ instead of $1/10$, the others $1/12$. It is the gradient of a weighted loss, not
# of the batch mean. (The correct weights would be $6/10$ and $4/10$ for the two slice means.)
# `DistributedSampler` gives every rank the same number of examples by repeating the first few
# indices when the data set does not divide evenly (`shard_indices(10, r, 4)` gives ranks of 3
# indices, two of them repeated); the cost is that a few examples are seen twice per epoch
# (`drop_last=True` drops the tail instead). Equal counts also keep the ranks in step: a rank with
# one batch more would wait forever for partners in the all-reduce.
# :::
#
# :::{exercise}
# :label: ch16-ex-linear-scaling
# A recipe trains well on one GPU with batch 32 and learning rate $10^{-4}$ for 10,000 steps. You
# move it to 8 GPUs with DDP and per-GPU batch 32. What is the global batch, how many steps make the
# same number of epochs, and which learning rate does the linear scaling rule of Goyal et al.
# suggest? Why do they add a warm-up, and why does the rule stop working for very large batches?
# :::
#
# :::{solution} ch16-ex-linear-scaling
# :class: dropdown
# Global batch $8 \cdot 32 = 256$; the same epochs take $10{,}000 / 8 = 1{,}250$ steps. The linear
# scaling rule multiplies the learning rate by the batch growth: $8 \cdot 10^{-4}$. Its argument: $k$
# small steps of rate $\eta$ on $k$ batches move the weights about as far as one step of rate
# $k\eta$ on the union of the batches, if the gradient changes little over those $k$ steps. Early in
# training the gradient changes fast, so that assumption fails and a large rate diverges; a
# warm-up that ramps the rate up over the first epochs avoids it {cite}`goyal2017accurate`. For very
# large batches (they report the limit near 8k images for ResNet-50 on ImageNet) the assumption
# fails for the whole run and accuracy drops. For fine-tuning BERT-like models, where the usual
# rates are already small and the step count is low, one usually re-tunes the rate rather than
# scaling it by 8.
# :::
#
# :::{exercise}
# :label: ch16-ex-shard
# Write `my_shard_indices(n, rank, world_size)`, the indices rank `rank` reads from a data set of
# `n` examples under `DistributedSampler(shuffle=False, drop_last=False)`: pad the list
# $0, \dots, n-1$ with its own first indices until its length is a multiple of `world_size`, then
# take every `world_size`-th index starting at `rank`. Return a list of Python ints.
# :::


# %%
def my_shard_indices(n, rank, world_size):
    raise NotImplementedError  # your code here


dlbook.exercises.check("ch16.shard_indices", my_shard_indices)

# %% [markdown]
# ```{solution-start} ch16-ex-shard
# :class: dropdown
# ```


# %% tags=["solution"]
def my_shard_indices(n, rank, world_size):
    total = -(-n // world_size) * world_size  # n rounded up to a multiple of world_size
    padded = list(range(n)) * (
        total // n + 1
    )  # enough copies to pad even when world_size > n
    return padded[:total][rank::world_size]


assert dlbook.exercises.check("ch16.shard_indices", my_shard_indices)
assert my_shard_indices(10, 3, 4) == list(
    DistributedSampler(range(10), num_replicas=4, rank=3, shuffle=False)
)

# %% [markdown]
# ```{solution-end}
# ```
#
# :::{exercise}
# :label: ch16-ex-zero
# Write `my_zero_bytes_per_device(n_params, n_devices, stage)`: the bytes of model state per device
# for mixed-precision Adam training under ZeRO stage 0 (plain data parallelism), 1, 2 or 3, counting
# as Rajbhandari et al. do: 2 bytes of 16-bit weights, 2 of 16-bit gradients and $K = 12$ of optimizer
# state per parameter; stage 1 divides the optimizer state by the number of devices, stage 2 also
# the gradients, stage 3 also the weights. Return a float. Then: how many bytes per device for
# 7.5 billion parameters on 64 devices at each stage?
# :::


# %%
def my_zero_bytes_per_device(n_params, n_devices, stage):
    raise NotImplementedError  # your code here


dlbook.exercises.check("ch16.zero_bytes_per_device", my_zero_bytes_per_device)

# %% [markdown]
# ```{solution-start} ch16-ex-zero
# :class: dropdown
# ```


# %% tags=["solution"]
def my_zero_bytes_per_device(n_params, n_devices, stage):
    weights, grads, optim = 2.0 * n_params, 2.0 * n_params, 12.0 * n_params
    if stage >= 1:
        optim /= n_devices
    if stage >= 2:
        grads /= n_devices
    if stage >= 3:
        weights /= n_devices
    return weights + grads + optim


assert dlbook.exercises.check("ch16.zero_bytes_per_device", my_zero_bytes_per_device)
per_stage_gb = [my_zero_bytes_per_device(7.5e9, 64, stage) / 1e9 for stage in range(4)]
assert [round(gb, 1) for gb in per_stage_gb] == [
    120.0,
    31.4,
    16.6,
    1.9,
]  # Figure 1 of the ZeRO paper
assert (
    my_zero_bytes_per_device(7.5e9, 64, 0)
    == dp.training_memory(7_500_000_000, "adam", "mixed")["total"]
)
print({stage: f"{gb:.1f} GB" for stage, gb in enumerate(per_stage_gb)})

# %% [markdown]
# ```{solution-end}
# ```
#
# The four numbers are the ones in the first figure of the ZeRO paper (asserted above): 120 GB per
# device without sharding, then 31.4, 16.6 and 1.9 GB. Stage 3 makes the memory per device shrink with the number
# of devices, at the cost of gathering every layer's weights in every step.
#
# :::{exercise}
# :label: ch16-ex-dropout
# This chapter switched dropout off so that the 1-process and 2-process runs could be compared
# step by step. Run `train_ddp.py` with `"dropout": 0.1` in the recipe, once with 1 process and
# once with 2. Are the loss curves still identical? Is the 2-process run still "the same training"
# in distribution? Which line of the script decides the dropout masks, and what would go wrong if
# it used the same seed in every rank?
# :::
#
# :::{solution} ch16-ex-dropout
# :class: dropdown
# The curves now differ from the first step on: each rank draws masks for its own half of the
# batch, with its own generator, and these are not the masks one process draws for the whole
# batch. In distribution nothing changes (each snippet still gets independent masks with rate
# 0.1), so the runs differ like two seeds and end at similar accuracy. The line
# `torch.manual_seed(cfg["seed"] + rank)` decides it. With the same seed in every rank, and the
# same shapes, rank 0 and rank 1 would draw identical masks for different snippets: still a valid
# training run, but the masks would be correlated across the halves of each batch, which is not
# what dropout assumes; with different seeds per rank, nothing is shared.
# :::
#
# ## Further reading
#
# - `DistributedDataParallel`'s design (gradient buckets, overlap of communication and backward,
#   measurements up to 256 GPUs) {cite}`li2020pytorch`.
# - Large-batch data-parallel training, the linear scaling rule and warm-up {cite}`goyal2017accurate`.
# - Sharding the training state: ZeRO (DeepSpeed) {cite}`rajbhandari2020zero` and PyTorch FSDP
#   {cite}`zhao2023fsdp`.
# - Tensor parallelism in Megatron-LM {cite}`shoeybi2019megatron`; pipeline parallelism with
#   micro-batches in GPipe {cite}`huang2019gpipe`.
# - Why training compute grows like parameters times tokens, $6NT$ {cite}`kaplan2020scaling`.
