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
# (ch14)=
# # 14. Knowledge distillation
#
# Quantization (chapter 12) stores the same network in fewer bits; pruning (chapter 13) removes
# parts of it. Distillation trains a **different, smaller network** to imitate the big one. The
# big model, the *teacher*, is the sentiment classifier of chapter 9; the *students* have half its
# layers, or two thirds of its width in a third of its depth. The student learns from the labels
# and from the teacher's full output distribution: how sure the teacher is, and which wrong answer
# it finds least wrong, information that Hinton et al. argue a bare label does not carry
# {cite}`hinton2015distilling`.
#
# By the end of this chapter you can
#
# 1. explain soft targets and the temperature $T$, and compute them from a real teacher's logits;
# 2. write the distillation loss, check it against PyTorch's `kl_div` and soft-target
#    `cross_entropy`, derive its gradient and show by measurement why it carries a factor $T^2$;
# 3. build two kinds of student: a shallower copy of the teacher, and a narrower BERT trained
#    from scratch;
# 4. choose $T$ and $\alpha$ on validation, and measure what a transfer set of snippets only the
#    teacher labels adds;
# 5. run the ablation (each student with and without the teacher, the shallow one over several
#    seeds) and read it on a scoreboard of size, latency and accuracy measured in the same run.

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
import dataclasses
import itertools
import os

import matplotlib.pyplot as plt
import numpy as np
import scipy.stats
import torch
import torch.nn.functional as F
import pandas as pd
from IPython.display import display

import dlbook
import dlbook.exercises
from dlbook import assets, distill, finetune, measure, stats
from dlbook.train import count_parameters

device = dlbook.setup(seed=0)

# %% tags=["parameters", "hide-input"]
profile = os.environ.get("DLBOOK_PROFILE", "full")

# %% tags=["hide-input"]
sizes = dlbook.by_profile(
    profile,
    # The students' recipes are in distill.STUDENT_SETTINGS (printed in 14.4), not here,
    # so that chapter 15 gets the very same cached students.
    smoke=dict(
        n_test=128,
        n_val=128,
        test_max_length=128,
        n_grad=16,
        n_step_timing=64,
        step_rounds=2,
        n_update_timing=9,
        threads=2,
        rounds={1: 3, 32: 2},
        sweep=((2.0, 0.5), (4.0, 0.5)),
        seeds=(0, 1),
    ),
    full=dict(
        n_test=None,  # test snippets every model is scored on; None: all 1,500
        n_val=None,  # validation snippets choosing settings, students; None: all 1,000
        test_max_length=128,  # tokens kept per validation and test snippet
        n_grad=256,  # training snippets whose gradients are measured (14.2)
        n_step_timing=384,  # training snippets whose batches time training steps (14.4)
        step_rounds=10,  # timed training steps per embedding mode (14.4)
        n_update_timing=30,  # timed AdamW updates per kind, default and fused (14.4)
        threads=2,  # CPU threads every latency is measured with (14.5)
        rounds={1: 20, 32: 10},  # timed forward passes per model, at batch 1 and 32
        # (temperature T, weight alpha) settings tried on the shallow student (14.4)
        sweep=((1.0, 0.5), (2.0, 0.5), (4.0, 0.5), (2.0, 0.0)),
        seeds=(0, 1, 2),  # training seeds: seed study (14.5), transfer set (14.4)
    ),
)
sizes

# %% [markdown]
# ## 14.1 Soft targets and the temperature
#
# The teacher is chapter 9's fine-tuned MiniLM classifier (six layers, hidden size 384), loaded
# from the cache (or trained, the first time).

# %%
teacher, tokenizer, teacher_info = finetune.sentiment_classifier(profile, device=device)
reviews = assets.rotten_tomatoes()
test_raw = (
    reviews["test"]
    if sizes["n_test"] is None
    else reviews["test"].select(range(sizes["n_test"]))
)
test_tok = finetune.tokenize_dataset(test_raw, tokenizer, sizes["test_max_length"])
val_raw = (
    reviews["validation"]
    if sizes["n_val"] is None
    else reviews["validation"].select(range(sizes["n_val"]))
)
val_tok = finetune.tokenize_dataset(
    val_raw, tokenizer, sizes["test_max_length"]
)  # chooses the best student
print(
    f"teacher: {teacher.config.num_hidden_layers} layers, "
    f"hidden {teacher.config.hidden_size}, "
    f"{count_parameters(teacher, trainable_only=False):,} parameters | "
    f"test snippets: {len(test_tok):,}"
)

# %% [markdown]
# A classifier's last layer gives logits $z \in \mathbb{R}^C$; softmax turns them into
# probabilities. Dividing the logits by a **temperature** $T > 0$ first,
#
# $$
# p^{(T)}_c = \frac{\exp(z_c / T)}{\sum_{k} \exp(z_k / T)},
# $$ (eq-ch14-soft)
#
# leaves the ranking of the classes as it is but flattens the distribution for $T > 1$ ($T \to
# \infty$ gives the uniform distribution) and sharpens it for $T < 1$. Here are the teacher's
# softened outputs on three test snippets, one it is sure of, one it hesitates on, and one it
# gets wrong, checked against `torch.softmax`:

# %%
with torch.no_grad():
    test_logits = distill.teacher_logits(
        teacher, test_tok, tokenizer, device=device
    )  # (N, 2)
conf = test_logits.softmax(-1).max(-1).values
wrong = test_logits.argmax(-1) != torch.tensor(test_tok["labels"])
picks = [
    int(conf.argmax()),
    int((conf - 0.7).abs().argmin()),
    int(torch.where(wrong, conf, torch.zeros_like(conf)).argmax()),
]
temperatures = [0.5, 1.0, 2.0, 4.0, 8.0]


def soft(z, t):
    e = torch.exp(
        z / t - (z / t).max(-1, keepdim=True).values
    )  # subtract the max: no overflow
    return e / e.sum(-1, keepdim=True)


for t in temperatures:
    torch.testing.assert_close(soft(test_logits, t), torch.softmax(test_logits / t, -1))
    torch.testing.assert_close(
        distill.soft_targets(test_logits, t), soft(test_logits, t)
    )

fig, axes = plt.subplots(1, 3, figsize=(11, 3), sharey=True)
for ax, i in zip(axes, picks, strict=True):
    probs = np.array(
        [soft(test_logits[i], t)[1].item() for t in temperatures]
    )  # p(pos) at each T
    ax.bar([str(t) for t in temperatures], probs, color="tab:green", label="p(pos)")
    ax.bar(
        [str(t) for t in temperatures],
        1 - probs,
        bottom=probs,
        color="tab:red",
        label="p(neg)",
    )
    text = test_raw[i]["text"]
    ax.set_title(
        f"label {finetune.LABELS[test_raw[i]['label']]}: {text[:38]}...", fontsize=8
    )
    ax.set_xlabel("temperature T")
axes[0].set_ylabel("softmax(z / T)")
axes[0].legend(fontsize=8)
plt.tight_layout()
plt.show()
print(
    "logits of the three snippets:",
    [[round(v, 2) for v in test_logits[i].tolist()] for i in picks],
)
p_sure = {
    t: soft(test_logits[picks[0]], t).max().item() for t in (1.0, 8.0)
}  # confident one
dlbook.glue("ch14_sure_p1", p_sure[1.0])
dlbook.glue("ch14_sure_p8", p_sure[8.0])
assert p_sure[8.0] < p_sure[1.0]  # a higher T flattens

# %% [markdown]
# **Figure 14.1.** The teacher's softened probabilities $p^{(T)}$ of `pos` (green) and `neg`
# (red, stacked) at five temperatures, for the three test snippets (one it is sure of, one it
# hesitates on, one it gets wrong); each panel's title gives the true label and the snippet's
# start.
#
# At $T = 1$ the confident snippet is mostly one colour (the teacher's probability of its
# answer is {glue:text}`ch14_sure_p1:.3f`, falling to {glue:text}`ch14_sure_p8:.3f` at
# $T = 8$); raising $T$ brings out how much more the teacher believes one class than the other,
# the information a hard label throws away. With
# two classes that is all there is (one logit difference per snippet); with many classes, soft
# targets also say which wrong classes look alike, the information Hinton et al. argue soft
# targets carry {cite}`hinton2015distilling`.
#
# ## 14.2 The distillation loss
#
# Let $z^s$ and $z^t$ be the student's and the teacher's logits, $p_s^{(T)}$ and $p_t^{(T)}$ their
# softened distributions (Eq. {eq}`eq-ch14-soft`) and $y$ the label. The student minimises
#
# $$
# \mathcal{L} = \alpha\, \mathrm{CE}\big(y, p_s^{(1)}\big) + (1 - \alpha)\, T^2\,
# \mathrm{KL}\big(p_t^{(T)} \,\big\|\, p_s^{(T)}\big), \qquad
# \mathrm{KL}(p \,\|\, q) = \sum_c p_c \log \frac{p_c}{q_c},
# $$ (eq-ch14-loss)
#
# averaged over the batch, with $\alpha \in [0, 1]$ weighing the labels against the teacher.
# The teacher is frozen: its logits are constants. Step by step, then checked two ways: against
# `F.kl_div` (which takes the student's **log**-probabilities and, with `log_target=True`, the
# teacher's log-probabilities too) and against `F.cross_entropy` with probabilities as targets,
# since $\mathrm{KL}(p\,\|\,q) = \mathrm{CE}(p, q) - H(p)$ and the teacher's entropy $H(p_t)$ does
# not depend on the student.


# %%
def kd_loss(z_s, z_t, y, T, alpha):
    log_p_s = torch.log_softmax(z_s / T, dim=-1)  # (N, C)
    log_p_t = torch.log_softmax(z_t / T, dim=-1)  # (N, C)
    kl = (
        (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1).mean()
    )  # KL per example, averaged
    ce = -torch.log_softmax(z_s, dim=-1)[torch.arange(len(y)), y].mean()
    return alpha * ce + (1 - alpha) * T**2 * kl


train_raw = reviews["train"].select(range(sizes["n_grad"]))
train_small = finetune.tokenize_dataset(train_raw, tokenizer, 64)
student0 = distill.student_from_teacher(
    teacher, [0, 2, 4]
)  # an untrained student (section 14.3)
z_t = distill.teacher_logits(
    teacher, train_small, tokenizer, device=device
)  # (n_grad, 2)
z_s = distill.teacher_logits(
    student0, train_small, tokenizer, device=device
)  # (n_grad, 2): same function, any model
y = torch.tensor(train_small["labels"])
for T, alpha in [(1.0, 0.5), (2.0, 0.5), (4.0, 0.0), (4.0, 0.9)]:
    ours = kd_loss(z_s, z_t, y, T, alpha)
    kl_ref = F.kl_div(
        F.log_softmax(z_s / T, -1),
        F.log_softmax(z_t / T, -1),
        reduction="batchmean",
        log_target=True,
    )
    p_t = F.softmax(z_t / T, -1)
    ce_ref = (
        F.cross_entropy(z_s / T, p_t) + (p_t * p_t.log()).sum(-1).mean()
    )  # CE(p_t, p_s) - H(p_t)
    for kl in (kl_ref, ce_ref):
        torch.testing.assert_close(
            ours, alpha * F.cross_entropy(z_s, y) + (1 - alpha) * T**2 * kl
        )
    torch.testing.assert_close(
        ours, distill.distillation_loss(z_s, z_t, y, temperature=T, alpha=alpha)
    )
print(
    "Eq. (eq-ch14-loss) == F.kl_div(log_target=True) == "
    f"soft-target F.cross_entropy - H(p_t) on {len(y)} snippets"
)

# %% [markdown]
# The packaged version adds the checks a library needs ($T > 0$, $\alpha \in [0, 1]$, matching
# shapes) and detaches the teacher's logits:

# %%
dlbook.show(distill.distillation_loss)

# %%
for bad in (dict(temperature=0.0, alpha=0.5), dict(temperature=2.0, alpha=1.5)):
    try:
        distill.distillation_loss(z_s, z_t, y, **bad)
    except ValueError as err:
        print("ValueError:", err)

# %% [markdown]
# ### The gradient, and why $T^2$
#
# With $q = p_s^{(T)}$ and $p = p_t^{(T)}$, $\mathrm{KL}(p\,\|\,q) = \sum_c p_c \log p_c - \sum_c p_c
# \log q_c$ and $\partial \log q_c / \partial z^s_j = (\delta_{cj} - q_j)/T$, so for one example
#
# $$
# \frac{\partial\, \mathrm{KL}\big(p_t^{(T)} \,\|\, p_s^{(T)}\big)}{\partial z^s_j}
# = \frac{1}{T}\big(p^{(T)}_{s,j} - p^{(T)}_{t,j}\big).
# $$ (eq-ch14-grad)
#
# Autograd agrees, on real logits (the mean over the batch divides by $N$):

# %%
for T in (1.0, 2.0, 5.0):
    z = z_s.clone().requires_grad_(True)
    kl = F.kl_div(
        F.log_softmax(z / T, -1),
        F.log_softmax(z_t / T, -1),
        reduction="batchmean",
        log_target=True,
    )
    (grad,) = torch.autograd.grad(kl, z)  # (n_grad, 2)
    analytic = (F.softmax(z_s / T, -1) - F.softmax(z_t / T, -1)) / T / len(z_s)
    torch.testing.assert_close(grad, analytic)
print("autograd == (p_s - p_t) / T  (Eq. eq-ch14-grad) at T = 1, 2, 5")

# %% [markdown]
# For large $T$ both distributions approach uniform: $p^{(T)}_c \approx \frac{1}{C}\big(1 + (z_c -
# \bar z)/T\big)$, so $p_s - p_t \approx \frac{1}{C T}\big((z^s - \bar z^s) - (z^t - \bar
# z^t)\big)$ and the gradient of Eq. {eq}`eq-ch14-grad` shrinks like $1/T^2$. Multiplying the term
# by $T^2$ undoes that, so changing $T$ does not silently change how much the teacher term
# weighs against the label term {cite}`hinton2015distilling`. Measured on the untrained student's
# real logits:

# %%
t_grid = np.geomspace(0.5, 32, 16)
norms = {"KL term alone": [], "T^2 * KL term": []}
for T in t_grid:
    z = z_s.clone().requires_grad_(True)
    loss = distill.distillation_loss(
        z, z_t, None, temperature=float(T), alpha=0.0
    )  # includes T^2
    (g,) = torch.autograd.grad(loss, z)
    norms["T^2 * KL term"].append(g.norm().item())
    norms["KL term alone"].append(g.norm().item() / T**2)
fig, ax = plt.subplots(figsize=(6, 3.4))
for name, v in norms.items():
    ax.loglog(t_grid, v, marker="o", label=name)
ax.loglog(
    t_grid,
    norms["KL term alone"][-1] * (t_grid[-1] / t_grid) ** 2,
    ":",
    color="grey",
    label="slope -2",
)
ax.set_xlabel("temperature T")
ax.set_ylabel("gradient norm w.r.t. student logits")
ax.legend()
plt.tight_layout()
plt.show()
ratio_no, ratio_yes = (
    norms["KL term alone"][-1] / norms["KL term alone"][-4],
    norms["T^2 * KL term"][-1] / norms["T^2 * KL term"][-4],
)
dlbook.glue("ch14_tgrid_step", float(t_grid[-1] / t_grid[-4]))
dlbook.glue("ch14_ratio_no", float(ratio_no))
dlbook.glue("ch14_ratio_yes", float(ratio_yes))
assert ratio_no < 0.5 and 0.8 < ratio_yes < 1.25, (ratio_no, ratio_yes)
print(
    f"from T = {t_grid[-4]:.1f} to T = {t_grid[-1]:.0f}: "
    f"without T^2 the gradient shrinks x{ratio_no:.3f}, with T^2 x{ratio_yes:.3f}"
)

# %% [markdown]
# **Figure 14.2.** Norm of the gradient of the distillation term with respect to the
# untrained student's logits against the temperature (log-log), with and without the factor
# $T^2$; the dotted line has slope $-2$.
#
# Over the last stretch of the grid, where $T$ grows {glue:text}`ch14_tgrid_step:.1f`-fold, the
# gradient of the bare KL term falls to {glue:text}`ch14_ratio_no:.3f` of its value (the $1/T^2$
# line), while with the factor $T^2$ it stays at {glue:text}`ch14_ratio_yes:.3f` of it (the cell
# asserts between 0.8 and 1.25). At small $T$ the approximation does not hold and both curves bend.
#
# ## 14.3 Two students
#
# **A shallower copy.** DistilBERT halved BERT's depth and initialised the student with every
# other layer of the teacher {cite}`sanh2019distilbert`. Our teacher has six layers; we keep
# layers 0, 2 and 4, plus the embeddings, the pooler and the classifier head, all copied. Built by
# hand:

# %%
config = copy.deepcopy(teacher.config)
config.num_hidden_layers = 3
by_hand = type(teacher)(config).to(
    device
)  # BertForSequenceClassification with 3 random layers
by_hand.bert.embeddings.load_state_dict(teacher.bert.embeddings.state_dict())
for new, old in enumerate([0, 2, 4]):
    by_hand.bert.encoder.layer[new].load_state_dict(
        teacher.bert.encoder.layer[old].state_dict()
    )
by_hand.bert.pooler.load_state_dict(teacher.bert.pooler.state_dict())
by_hand.classifier.load_state_dict(teacher.classifier.state_dict())
for (name, a), b in zip(
    by_hand.state_dict().items(), student0.state_dict().values(), strict=True
):
    torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
print(
    "by hand == distill.student_from_teacher(teacher, [0, 2, 4]) | "
    f"{count_parameters(student0, trainable_only=False):,} parameters"
)

# %%
dlbook.show(distill.student_from_teacher)

# %% [markdown]
# Before any training, the shallow copy already computes something. Counting from 0, it keeps
# the teacher's layers 0, 2 and 4 and drops 1, 3 and 5: its second and third layers expect the
# outputs of the teacher's layers 1 and 3, and its pooler and classifier expect the output of
# layer 5, none of which it computes. But each layer adds its output to its input (the residual
# connection), so one may hope that neighbouring layers compute similar enough
# representations for the copy to do better than a constant answer. Its untrained accuracy on
# the test split, against
# the simplest baseline, always answering the class that is most frequent among the training
# labels, compared paired over the same snippets (`dlbook.stats`, section 14.5):

# %%
start = finetune.evaluate_classifier(student0, test_tok, tokenizer, device=device)
majority = int(np.bincount(reviews["train"]["label"]).argmax())  # from training labels
majority_correct = start.labels.numpy() == majority  # (N,) bool
start_correct = (start.preds == start.labels).numpy()  # (N,) bool
start_vs_majority = stats.compare(start_correct, majority_correct)
dlbook.glue("ch14_start_acc", start.accuracy)
dlbook.glue("ch14_majority", finetune.LABELS[majority])
dlbook.glue("ch14_majority_acc", float(majority_correct.mean()))
dlbook.glue(
    "ch14_start_verdict",
    start_vs_majority.verdict("the untrained copy", "the majority answer"),
)
start_says_majority = float(
    (start.preds.numpy() == majority).mean()
)  # share of snippets
dlbook.glue("ch14_start_majority_share", start_says_majority)
if start_vs_majority.measurable and start_vs_majority.interval.diff > 0:
    start_finding = "before training it already does better than a constant answer"
else:
    start_finding = (
        "before training it does no measurably better than a constant "
        "answer, so what the students know comes from training"
    )
dlbook.glue("ch14_start_finding", start_finding)
print(
    f"untrained 3-layer copy: test accuracy {start.accuracy:.3f} | always "
    f"'{finetune.LABELS[majority]}': {majority_correct.mean():.3f} | the copy answers "
    f"'{finetune.LABELS[majority]}' on {start_says_majority:.1%} of the snippets"
)
print(start_vs_majority.verdict("the untrained copy", "the majority answer"))

# %% [markdown]
# The untrained copy scores {glue:text}`ch14_start_acc:.3f`; always answering
# "{glue:text}`ch14_majority`" scores {glue:text}`ch14_majority_acc:.3f`. Over the same
# snippets, {glue:text}`ch14_start_verdict`. The copy answers "{glue:text}`ch14_majority`" on
# {glue:text}`ch14_start_majority_share:.1%` of the test snippets: {glue:text}`ch14_start_finding`.
#
# **A narrower model from scratch.** The second student keeps the teacher's tokenizer but is a
# different shape: hidden size 256, two layers of four heads, feed-forward size $4 \times 256$.
# None of the teacher's weights fit it. Only the word-embedding table gets a head start: it is
# initialised as the teacher's table $E \in \mathbb{R}^{V \times 384}$ times a **fixed random
# projection** $R \in \mathbb{R}^{384 \times 256}$ with $N(0, 1/256)$ entries, rescaled to the
# teacher's mean row norm. A random projection roughly keeps distances
# {cite}`johnson1984extensions`, so words the teacher puts close together start close together;
# everything else (positions, layers, head) is random.

# %%
narrow0 = distill.build_student(
    "narrow", teacher, distill.STUDENT_SETTINGS[profile]["narrow"]
)
e = teacher.bert.embeddings.word_embeddings.weight.detach().cpu()  # (V, 384)
r = (
    torch.randn(384, 256, generator=torch.Generator().manual_seed(0)) / 256**0.5
)  # (384, 256), the same seed
w = e @ r
w = w * (e.norm(dim=1).mean() / w.norm(dim=1).mean())  # (V, 256)
torch.testing.assert_close(
    narrow0.bert.embeddings.word_embeddings.weight.detach().cpu(), w
)
words = tokenizer.convert_tokens_to_ids(["good", "great", "terrible"])
cos = F.cosine_similarity
print(
    "cosine(good, great) vs cosine(good, terrible): teacher "
    f"{cos(e[words[0]], e[words[1]], dim=0):.2f} vs "
    f"{cos(e[words[0]], e[words[2]], dim=0):.2f} | "
    f"projected {cos(w[words[0]], w[words[1]], dim=0):.2f} vs "
    f"{cos(w[words[0]], w[words[2]], dim=0):.2f}"
)
print(
    f"narrow student: {count_parameters(narrow0, trainable_only=False):,} parameters, "
    f"{narrow0.bert.embeddings.word_embeddings.weight.numel():,} "
    "of them in the word embeddings"
)

# %%
dlbook.show(distill.narrow_student)

# %% [markdown]
# ## 14.4 Training the students
#
# The teacher is frozen, so its logits on a training snippet never change: computing them once,
# before training, costs one forward pass of the teacher per snippet instead of one per snippet
# **per epoch**, and training then runs the student alone. `teacher_logits` is a plain evaluation
# pass that returns the logits in dataset order; the training loop looks up the rows of each
# shuffled batch by an index column. Otherwise the loop is chapter 9's (seeded shuffle, AdamW with
# warm-up and linear decay, clipping), with the loss of Eq. {eq}`eq-ch14-loss`, or plain
# cross-entropy when no teacher logits are given:

# %%
dlbook.show(distill.train_student)

# %% [markdown]
# One economy makes the four runs cheaper on a CPU, from chapter 10 (section 10.3): **batches of
# similar length** (`group_by_length`). A random batch of snippets is padded to its longest member,
# and the model computes on the padding as on real tokens; grouping removes most of it. Measured
# on the training split, in tokens computed per real token at the recipes' batch size:

# %%
train_tok = finetune.tokenize_dataset(
    reviews["train"], tokenizer, distill.STUDENT_SETTINGS[profile]["layers"].max_length
)
pad = {}
for grouped in (False, True):
    loader = finetune.make_loader(
        train_tok, tokenizer, 32, shuffle=True, group_by_length=grouped
    )
    counts = finetune.batch_token_counts(loader)
    pad[grouped] = (
        counts[:, 1].sum() / counts[:, 0].sum()
    )  # tokens computed per real token
print(
    f"random batches: {pad[False]:.2f} tokens per real token | "
    f"grouped by length: {pad[True]:.2f}"
)
rows_used = [b["input_ids"].unique().numel() for b in loader]  # distinct ids per batch
print(
    f"distinct word-table rows a batch of 32 uses: median "
    f"{np.median(rows_used):.0f}, at most {max(rows_used)}"
)
dlbook.glue("ch14_pad_random", pad[False])
dlbook.glue("ch14_pad_grouped", pad[True])
dlbook.glue("ch14_rows_used", float(np.median(rows_used)))
dlbook.glue("ch14_rows_used_max", max(rows_used))
table = student0.bert.embeddings.word_embeddings.weight  # (V, 384)
n_student0 = count_parameters(student0, trainable_only=False)
table_share = table.numel() / n_student0  # "two thirds" below
assert 100 <= np.median(rows_used) < 1000, rows_used  # "a few hundred" below
assert 0.6 < table_share < 0.75, table_share

# %% [markdown]
# Grouping takes the work per real token from {glue:text}`ch14_pad_random:.2f` to
# {glue:text}`ch14_pad_grouped:.2f` tokens.
#
# The optimizer's update is the second economy. The biggest matrix of both students is the
# word-embedding table: $30{,}522 \times 384$ in the shallow copy (two thirds of its parameters),
# $30{,}522 \times 256$ in the narrow one. A batch of 32 snippets uses a few hundred of its rows
# (median {glue:text}`ch14_rows_used:.0f`, at most {glue:text}`ch14_rows_used_max`, in the cell
# above), yet AdamW moves every row at every step (its running averages and the weight decay do
# not care whether a row had a gradient), and the gradient clipping reads every entry. `StudentSettings.embeddings` says
# how a student treats the table:
#
# - `"train"`: every entry trains, as in chapter 9;
# - `"freeze"`: nothing trains; the table stays what it was (for the shallow copy, the teacher's,
#   which chapter 9 fine-tuned for this very task);
# - `"project"`: the table is the product $E P$ of the teacher's table $E \in \mathbb{R}^{30{,}522
#   \times 384}$, frozen, and a small matrix $P \in \mathbb{R}^{384 \times h}$ that trains. This is
#   ALBERT's factorised embedding {cite}`lan2020albert` with the big factor borrowed from the
#   teacher. Every word's vector moves when $P$ does, also the vectors of words that no training
#   snippet contains. $P$ starts as the least-squares solution of $E P = W$ for the student's
#   starting table $W$: the identity for the shallow copy, the random projection of section 14.3
#   for the narrow student. So switching does not change what the student computes, and after
#   training the two factors are multiplied out into one table (`fold`): the saved student is a
#   plain `BertForSequenceClassification`, as fast as before.

# %%
dlbook.show(distill.ProjectedEmbedding)

# %% [markdown]
# Switched on the untrained shallow copy: $P$ comes out as the identity, the logits do not move,
# and folding gives back an ordinary table:

# %%
projected_copy = distill.set_embedding_mode(
    distill.student_from_teacher(teacher, [0, 2, 4]).eval(), "project", teacher
)
factored = (
    projected_copy.bert.embeddings.word_embeddings
)  # ProjectedEmbedding: table (V, 384) frozen, projection (384, 384)
probe = finetune.make_loader(train_small.select(range(8)), tokenizer, 8)
batch = {
    k: v.to(device) for k, v in next(iter(probe)).items() if k != "labels"
}  # (8, T) each
torch.testing.assert_close(
    factored.projection,
    torch.eye(384, device=factored.projection.device),
    atol=1e-5,
    rtol=0,
)
with torch.no_grad():
    torch.testing.assert_close(
        projected_copy(**batch).logits,
        student0.eval()(**batch).logits,
        atol=1e-5,
        rtol=1e-4,
    )
    ids = batch["input_ids"]
    torch.testing.assert_close(
        factored(ids), (factored.table @ factored.projection)[ids]
    )  # (8, T, 384)
    torch.testing.assert_close(factored.fold()(ids), factored(ids))
print(
    f"{type(factored).__name__}: trains {factored.projection.numel():,} numbers "
    f"instead of {factored.table.numel():,}; same logits before training; "
    "fold() == table @ projection"
)
dlbook.glue("ch14_proj_share", factored.projection.numel() / factored.table.numel())

# %% [markdown]
# What each mode saves, measured: warm training steps of the shallow copy in each mode (forward,
# backward, clipping, the fused AdamW update; dropout as in its recipe), timed in turns, one step
# of each mode per round, every mode on the same batch in a round (`measure.interleaved_calls`,
# the timing protocol of section 14.5):

# %%
s_layers = distill.STUDENT_SETTINGS[profile]["layers"]
step_data = train_tok.select(range(sizes["n_step_timing"]))
step_loader = finetune.make_loader(
    step_data, tokenizer, s_layers.batch_size, shuffle=True, group_by_length=True
)
step_batches = list(step_loader)  # each input (32, T)


def training_step(model, batches):
    """A call that runs one training step of `model` on the next batch (cycling)."""
    optimizer = finetune.make_optimizer(model, s_layers.lr, 0.01, fused=True)
    cycle = itertools.cycle(batches)

    def step():
        batch = {k: v.to(device) for k, v in next(cycle).items()}
        labels = batch.pop("labels")
        loss = F.cross_entropy(model(**batch).logits, labels)  # logits (32, 2)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


steps, trainable = {}, {}
for mode in distill.EMBEDDING_MODES:
    model = distill.student_from_teacher(teacher, s_layers.layers)
    model = distill.set_embedding_mode(model, mode, teacher).train()
    if s_layers.dropout is not None:
        distill.set_dropout(model, s_layers.dropout)
    trainable[mode] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    steps[mode] = training_step(model, step_batches)
step_runs = measure.interleaved_calls(
    steps, rounds=sizes["step_rounds"], warmup=1, device=device
)
for mode, t in step_runs.items():
    print(
        f"{mode:>8}: {trainable[mode] / 1e6:5.2f} M trainable parameters, "
        f"median {t.median / 1e3:.3f} s per step"
    )
assert trainable["project"] < 0.4 * trainable["train"]
assert trainable["freeze"] < trainable["project"]

# %%
# per round, the saving of each mode against "train" on the same batch, in percent
for mode in ("freeze", "project"):
    saving = [
        100 * (1 - a / b)
        for a, b in zip(
            step_runs[mode].runs_ms, step_runs["train"].runs_ms, strict=True
        )
    ]
    dlbook.glue(f"ch14_step_saving_{mode}", float(np.median(saving)))
    dlbook.glue(f"ch14_step_saving_{mode}_lo", min(saving))
    dlbook.glue(f"ch14_step_saving_{mode}_hi", max(saving))
    n_faster = int(sum(v > 0 for v in saving))  # rounds in which the mode was faster
    dlbook.glue(f"ch14_step_faster_{mode}", n_faster)
    print(
        f"{mode:>8}: saves {np.median(saving):.0f} % of a step (median over "
        f"{len(saving)} rounds; from {min(saving):.0f} to {max(saving):.0f} %); "
        f"faster than 'train' in {n_faster} of {len(saving)} rounds"
    )
dlbook.glue("ch14_step_rounds", sizes["step_rounds"])

# %% [markdown]
# Freezing the table saves {glue:text}`ch14_step_saving_freeze:.0f` % of a step and projecting
# it {glue:text}`ch14_step_saving_project:.0f` %: medians over {glue:text}`ch14_step_rounds`
# rounds, each round comparing the modes on the same batch (per round, from
# {glue:text}`ch14_step_saving_freeze_lo:.0f` to {glue:text}`ch14_step_saving_freeze_hi:.0f` %
# and from {glue:text}`ch14_step_saving_project_lo:.0f` to
# {glue:text}`ch14_step_saving_project_hi:.0f` %), on the machine in the provenance line.
# Freezing was faster than training the table in {glue:text}`ch14_step_faster_freeze` of the
# {glue:text}`ch14_step_rounds` rounds and projecting in
# {glue:text}`ch14_step_faster_project`; a median over so few rounds is a rough figure. What
# the modes cost in accuracy is not measured here, and the chapter claims nothing about it. The
# shallow copy projects its table because it then trains
# {glue:text}`ch14_proj_share:.1%` of the table's numbers and starts from the same function; the
# narrow student trains its whole table.
#
# The third economy is in how AdamW runs. Its update is a handful of element-wise operations per
# weight (two running averages, a square root, a division, the decay). PyTorch's default on a
# CPU updates one tensor at a time, the operations one after another, so each tensor is read and
# written once per operation; the `foreach` implementation, which runs each operation across all
# tensors at once, is the default only on GPUs {cite}`pytorch2025optim`. `fused=True` does the
# whole update of a tensor in one pass. The arithmetic is the same; what changes is how often
# each tensor is read and written. `train_student` uses the fused kernel. One AdamW update of the
# narrow student, timed both ways in turns:

# %%
narrow_update = distill.build_student(
    "narrow", teacher, distill.STUDENT_SETTINGS[profile]["narrow"]
)
for p in narrow_update.parameters():
    p.grad = torch.randn_like(p) * 1e-3  # stand-ins: the cost does not depend on them
steps = {
    kind: finetune.make_optimizer(narrow_update, 1e-4, 0.01, fused=kind == "fused").step
    for kind in ("default", "fused")
}  # default: fused=None, PyTorch picks
timed = measure.interleaved_calls(steps, rounds=sizes["n_update_timing"], device=device)
update_ms = {kind: t.median for kind, t in timed.items()}
print(
    "AdamW update of "
    f"{count_parameters(narrow_update, trainable_only=False) / 1e6:.1f} M parameters: "
    f"default {update_ms['default']:.1f} ms | fused {update_ms['fused']:.1f} ms"
)
dlbook.glue("ch14_adamw_default_ms", update_ms["default"])
dlbook.glue("ch14_adamw_fused_ms", update_ms["fused"])
fused_gain = dlbook.hardware_headline(
    "ch14_fused_adamw_speedup",
    update_ms["default"] / update_ms["fused"],
    profile=profile,
)

# %% [markdown]
# The fused update takes {glue:text}`ch14_adamw_fused_ms:.0f` ms against
# {glue:text}`ch14_adamw_default_ms:.0f` ms for the default. Last, the shallow copy trains with
# **dropout off** (`dropout=0.0`, for training only; the saved model keeps BERT's 0.1); the
# narrow student, trained from scratch, keeps its dropout. Dropout off, one epoch for the shallow
# copy and two layers for the narrow student are choices for training time; the chapter makes no
# claim about their effect on accuracy.
#
# The recipes (`n_train=None`: the whole training split; snippets are cut to `max_length` tokens
# for training, the test split is read at 128). Each student is trained twice, with the teacher
# and with the labels alone, four runs in all, one cell each; `distilled_student` trains each once
# and caches it like the teacher, so chapter 15 can load it:

# %%
for kind, s in distill.STUDENT_SETTINGS[profile].items():
    print(f"{kind:>7}: {s}")

students, histories = {}, {}


def train(kind, use_teacher):
    name = f"{kind}, {'distilled' if use_teacher else 'labels only'}"
    students[name], _, info = distill.distilled_student(
        profile, kind, use_teacher, device=device
    )
    histories[name] = info["history"]
    print(
        f"{name}: {info['history']['total_steps']} steps, "
        f"trained in {info['history']['seconds']:.0f} s"
    )


# %%
train("layers", use_teacher=True)

# %%
train("layers", use_teacher=False)

# %%
train("narrow", use_teacher=True)

# %%
train("narrow", use_teacher=False)

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.2))
for ax, kind in zip(axes, distill.KINDS, strict=True):
    for name, h in histories.items():
        if name.startswith(kind):
            loss = np.array(h["step_loss"])
            k = max(1, len(loss) // 25)
            ax.plot(np.convolve(loss, np.ones(k) / k, mode="valid"), label=name)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(f"training loss (mean of {k} steps)")
    ax.set_title(f"{kind} student")
    ax.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# **Figure 14.3.** Training loss against optimizer step (a running mean), for the shallow
# copy (left) and the narrow student (right), each trained with the teacher (distilled)
# and with the labels only.
#
# The two curves of a student are not comparable in height: the distilled run's loss is Eq.
# {eq}`eq-ch14-loss`, half cross-entropy and half $T^2$ times a KL that is zero when the student
# matches the teacher; the other is cross-entropy alone. Accuracy on held-out data is the common
# yardstick.
#
# ### Choosing $T$ and $\alpha$ on validation
#
# The recipes fix a temperature and a weight $\alpha$. Both are hyper-parameters, so the
# validation split chooses them, never the test split. A small grid for the shallow student,
# everything else as in its recipe; `distill.student_run` trains one student and keeps only which
# validation and test snippets it gets right (cached, like the students), and for the recipe's
# own setting it evaluates the cached student instead of training it again:

# %%
recipe = distill.STUDENT_SETTINGS[profile]["layers"]
evals = dict(
    n_val=sizes["n_val"],
    n_test=sizes["n_test"],
    max_length=sizes["test_max_length"],
    device=device,
)


def layers_run(distilled=True, labelled=None, **change):
    """One training run of the shallow student: its recipe with `change`d fields."""
    s = dataclasses.replace(recipe, **change)
    return distill.student_run(
        profile, "layers", distilled, s, labelled=labelled, **evals
    )


grid = list(sizes["sweep"])  # (T, alpha) pairs
sweep = {
    c: layers_run(temperature=c[0], alpha=c[1])
    for c in dlbook.progress(grid, desc="T, alpha")
}
val_grid = pd.DataFrame(
    [(t, a, r.val_accuracy) for (t, a), r in sweep.items()],
    columns=["T", "alpha", "val_accuracy"],
)
display(val_grid.round(4).style.hide(axis="index"))

# %%
chosen = max(grid, key=lambda c: sweep[c].val_accuracy)  # validation chooses
apart = [
    c
    for c in grid
    if c != chosen
    and stats.compare(sweep[chosen].val_correct, sweep[c].val_correct).measurable
]
recipe_cell = (recipe.temperature, recipe.alpha)
print(
    f"chosen on validation: T = {chosen[0]:g}, alpha = {chosen[1]:g} "
    f"({sweep[chosen].val_accuracy:.4f}); measurably lower there: {apart or 'none'}"
)
dlbook.glue("ch14_sweep_n", len(grid))
dlbook.glue("ch14_sweep_t", f"{chosen[0]:g}")
dlbook.glue("ch14_sweep_alpha", f"{chosen[1]:g}")
dlbook.glue("ch14_sweep_val", sweep[chosen].val_accuracy)
dlbook.glue("ch14_sweep_test", sweep[chosen].test_accuracy)  # read once: the choice
dlbook.glue("ch14_sweep_apart", len(apart))
dlbook.glue("ch14_sweep_others", len(grid) - 1)
val_range = 100 * (val_grid.val_accuracy.max() - val_grid.val_accuracy.min())
dlbook.glue("ch14_sweep_range", val_range)
if chosen == recipe_cell:
    recipe_note = (
        "the setting the recipe already uses, so the students below are "
        "trained with the chosen setting"
    )
else:
    gap = stats.compare(sweep[chosen].val_correct, sweep[recipe_cell].val_correct)
    recipe_note = (
        f"not the recipe's T = {recipe_cell[0]:g}, "
        f"alpha = {recipe_cell[1]:g}; "
        f"against it, {gap.verdict('the choice', 'the recipe')}. The "
        "students of the scoreboard, the seed study and the transfer set "
        "below keep the recipe's setting (chapter 15 loads the same "
        "students), so they do not use this choice"
    )
dlbook.glue("ch14_sweep_recipe", recipe_note)
assert recipe_cell in grid  # the recipe's own setting competes

# %% [markdown]
# Validation chooses $T$ = {glue:text}`ch14_sweep_t` and $\alpha$ =
# {glue:text}`ch14_sweep_alpha` out of {glue:text}`ch14_sweep_n` settings
# (validation accuracy {glue:text}`ch14_sweep_val:.4f`): {glue:text}`ch14_sweep_recipe`. The
# grid's validation accuracies span {glue:text}`ch14_sweep_range:.1f` points, and
# {glue:text}`ch14_sweep_apart` of the other {glue:text}`ch14_sweep_others` settings score
# measurably lower than the choice on the same validation snippets (paired interval and
# McNemar's test). Read once, the chosen setting's test accuracy is
# {glue:text}`ch14_sweep_test:.4f`. Each setting was trained once, with one seed; the seed
# study below measures how far the seed alone moves a run, which is the scale to read these
# differences on.
#
# ### A transfer set
#
# Hinton et al. train the student on a **transfer set**: inputs the teacher labels with its
# soft targets, which need no human labels {cite}`hinton2015distilling`. That matters when
# labels are scarce and text is not. To measure it, the shallow student sees the labels of
# only a quarter of its training snippets; the other three quarters are the transfer set, where
# the loss is the teacher term alone (Eq. {eq}`eq-ch14-loss` with the label term dropped for
# those snippets: `distill.IGNORE_LABEL`). Its twin trains on the labelled quarter alone, with
# the teacher too, for four epochs, so that both make the same number of optimizer steps. Both
# arms, at each of the seeds of the seed study (section 14.5), compared on validation:

# %%
n_pool = recipe.n_train or len(reviews["train"])  # the recipe's training snippets
quarter = n_pool // 4
transfer = {}
for seed in dlbook.progress(sizes["seeds"], desc="seeds"):
    transfer[seed] = (
        layers_run(n_train=quarter, epochs=4 * recipe.epochs, seed=seed),  # a quarter
        layers_run(labelled=quarter, seed=seed),  # + three quarters the teacher labels
    )
for seed, (alone, plus) in transfer.items():
    gain = stats.compare(plus.val_correct, alone.val_correct)  # paired, same snippets
    print(
        f"seed {seed}: labelled quarter {alone.val_accuracy:.4f} | with the transfer "
        f"set {plus.val_accuracy:.4f} | {gain.interval.points()} points"
    )
transfer_gain = stats.seed_interval(
    [p.val_accuracy for _, p in transfer.values()],
    [a.val_accuracy for a, _ in transfer.values()],
)
print(
    f"mean over {len(transfer)} seeds: {transfer_gain.points()} points "
    "(95 % t interval)"
)
dlbook.glue("ch14_quarter", quarter)
dlbook.glue("ch14_transfer_n", n_pool - quarter)
dlbook.glue("ch14_transfer_gain", transfer_gain.points())
dlbook.glue("ch14_transfer_seeds", len(transfer))
if transfer_gain.measurable:
    word = "helps" if transfer_gain.diff > 0 else "hurts"
    transfer_verdict = f"the interval excludes 0: the transfer set {word}"
else:
    transfer_verdict = (
        "the interval includes 0: over these seeds, no measurable difference"
    )
dlbook.glue("ch14_transfer_verdict", transfer_verdict)

# %% [markdown]
# With {glue:text}`ch14_quarter` labelled snippets, adding {glue:text}`ch14_transfer_n`
# snippets that only the teacher labels changes the validation accuracy by
# {glue:text}`ch14_transfer_gain` points (the mean over {glue:text}`ch14_transfer_seeds`
# seeds, then the 95 % Student t interval over the seeds, each seed one pair):
# {glue:text}`ch14_transfer_verdict`. The transfer set here comes from the same distribution as
# the labelled snippets; unlabelled text of another kind (plot summaries, say) would be a
# different question.
#
# ## 14.5 The scoreboard
#
# Size on disk, latency at batch 1 and batch 32, validation accuracy and test accuracy, for the
# teacher and the four students, with the measurement code of chapter 12 (`dlbook.measure`).
# Every model is timed on the CPU, whatever accelerator the notebook runs on: the scoreboard
# measures what a CPU server or laptop gains, and its provenance line names that CPU. A
# machine's speed drifts while it runs (other processes, clock and cache effects); the models
# are timed **in turns** within each round (`interleaved_latency`), so that all of them see the
# same drift and their ratios stay fair. The column "test points lost, 95 % interval" is the
# 95 % paired interval of each student's accuracy drop against the teacher, over the same test
# snippets (explained below the table).

# %%
cpu = torch.device("cpu")


def on_cpu(model):
    """The model itself if it is on the CPU, else a copy there (the original stays)."""
    if measure.model_device(model).type == "cpu":
        return model.eval()
    return copy.deepcopy(model).to(cpu).eval()


models = {"teacher (6 layers)": teacher, **students}
cpu_models = {name: on_cpu(m) for name, m in models.items()}
batches = measure.benchmark_batches(
    tokenizer, test_raw["text"][:32], batch_sizes=(1, 32)
)
timings = measure.interleaved_latency(
    cpu_models, batches, threads=sizes["threads"], rounds=sizes["rounds"]
)
board = measure.Scoreboard(baseline="teacher (6 layers)")
for name, model in dlbook.progress(
    cpu_models.items(), desc="accuracy", total=len(models)
):
    board.add(
        measure.measure_classifier(
            name,
            model,
            tokenizer,
            test_tok,
            batches,
            threads=sizes["threads"],
            timings=timings[name],
            val_dataset=val_tok,
        )
    )
print(board.provenance())
table = board.frame()
display(board.styled(table))

# %%
fig, ax = plt.subplots(figsize=(9, 4.2))
board.plot(batch_size=32, ax=ax, legend="right")  # names in a legend
plt.tight_layout()
plt.show()

# %% [markdown]
# **Figure 14.4.** Test accuracy against the median latency at batch 32 on the CPU for the
# teacher and the students of the table, marker area proportional to the size on disk (the
# legend gives each model's size).
#
# **Paired comparisons.** The teacher and a student answer the same test snippets, so their
# errors are correlated, and the difference of their accuracies is known more precisely than
# either accuracy alone. `dlbook.stats` (introduced in chapter 3) measures it in two ways. Write
# $d_i = [\text{a is right on snippet } i] - [\text{b is right on snippet } i] \in \{-1, 0, 1\}$;
# the difference of the two accuracies is the mean $\bar d$ over the $n$ snippets.
#
# - The **paired bootstrap** {cite}`efron1993introduction` draws $n$ snippets with replacement,
#   the same ones for both models, recomputes $\bar d$ on them, repeats this 10,000 times and
#   reads the 2.5th and 97.5th percentiles of the results: a 95 % interval. For large $n$ its
#   width is close to that of the normal approximation, $2 \times 1.96\, s_d / \sqrt{n}$, with
#   $s_d$ the standard deviation of the $d_i$.
# - **McNemar's test** {cite}`mcnemar1947note` looks only at the snippets on which exactly one
#   model is right: $b$ of them favour a, $c$ favour b. If the two models were equally accurate,
#   each of these $b + c$ snippets would favour either one with probability 1/2, so $b$ would
#   follow a binomial distribution with $b + c$ trials and probability 1/2; the exact test's
#   p-value is that binomial test's.
#
# A difference is called measurable only when the interval excludes 0 and McNemar's test rejects
# equal accuracy at the 5 % level. The packaged bootstrap, then both tools checked for every
# student against the teacher:

# %%
dlbook.show(stats.paired_bootstrap)

# %%
for name in students:
    a, b = board.base().correct, board.rows[name].correct  # (N,) bool: teacher, student
    d = a.astype(float) - b.astype(float)  # (N,) in {-1, 0, 1}
    comp = board.compare(name)  # teacher - student, paired
    width = comp.interval.high - comp.interval.low
    normal = 2 * 1.96 * d.std() / np.sqrt(len(d))  # the normal approximation's width
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    n_disagree = only_a + only_b
    p_ref = scipy.stats.binomtest(only_a, n_disagree, 0.5).pvalue if n_disagree else 1.0
    assert (comp.only_a, comp.only_b) == (only_a, only_b)
    assert np.isclose(comp.p_value, p_ref)
    assert abs(width - normal) <= 0.1 * normal + 2 / len(d), (name, width, normal)
    print(
        f"{name:>20}: width {100 * width:.2f} points (normal {100 * normal:.2f}) | "
        f"only the teacher right {only_a}, only the student {only_b}: "
        f"McNemar p = {comp.p_value:.3g}, scipy binomtest {p_ref:.3g}"
    )

# %% [markdown]
# The bootstrap's width agrees with the normal approximation to within a tenth (plus two
# snippets' worth, $2/n$, for the granularity of a small split), and McNemar's p-value is
# scipy's binomial test on the disagreements, for all four students (asserted).
#
# **The target.** DistilBERT kept 97 % of BERT's score on the GLUE benchmark while running 60 %
# faster, 1.6 times BERT's speed {cite}`sanh2019distilbert`. The chapter asks the accuracy half
# of that of its best student. The best student is chosen on the **validation** split among the
# two distilled students: the fastest at batch 32 that keeps 97 % of the teacher's validation
# accuracy or, if neither does, the one that keeps most. Its test accuracy is then reported once
# and checked: it must keep 97 % of the teacher's. Its speed-up is reported; whether it is
# checked too depends on the hardware class (`dlbook.expected`), as the text below says.
#
# Two remarks on speed. The labels-only students are not candidates: each has the architecture
# of a distilled one, and between identical networks the faster would be decided by timing
# noise. And the shallow copy cannot be much more than twice as fast as the teacher: its three
# layers are three of the teacher's six, each doing the same arithmetic, while the embedding
# lookup, the pooler and the two-unit head act once per token or once per snippet, so keeping
# three of six layers at best about halves the time.

# %%
base = board.base()
ratios = {n: board.ratios(n) for n in students}
distilled = [n for n in students if n.endswith(", distilled")]  # the candidates
val_ratio = {
    n: board.rows[n].val_accuracy / base.val_accuracy for n in distilled
}  # validation chooses
keeping = [n for n in distilled if val_ratio[n] >= 0.97]
best = (
    max(keeping, key=lambda n: ratios[n]["faster@32"])
    if keeping
    else max(distilled, key=val_ratio.get)
)
print(f"best student, chosen on validation: {best} (keeps {val_ratio[best]:.1%} there)")
dlbook.glue("ch14_best_name", best)
dlbook.glue("ch14_teacher_acc", base.accuracy)
dlbook.glue("ch14_best_acc", board.rows[best].accuracy)
dlbook.glue("ch14_best_smaller", ratios[best]["smaller"])
dlbook.glue("ch14_best_faster1", ratios[best]["faster@1"])
cpu_class = dlbook.env.hardware_class("cpu")  # the scoreboard times on the CPU
speedup = dlbook.hardware_headline(
    "ch14_best_speedup", ratios[best]["faster@32"], profile=profile, hardware=cpu_class
)
dlbook.glue("ch14_class", cpu_class)
dlbook.glue(
    "ch14_speed_expected",
    dlbook.expected.EXPECTED["ch14_best_speedup"].describe(cpu_class),
)
kept = dlbook.headline(
    "ch14_best_acc_ratio",
    board.rows[best].accuracy / base.accuracy,
    profile=profile,
    at_least=0.97,
    fmt="{:.1%}",
)
print(
    f"{best}: {speedup:.2f}x faster at batch 32, "
    f"keeps {kept:.1%} of the teacher's accuracy"
)

# %%
# per round, teacher time / best student time: the rounds pair up (timed in turns)
for b in (1, 32):
    per_round = np.array(timings["teacher (6 layers)"][b].runs_ms) / np.array(
        timings[best][b].runs_ms
    )  # (rounds,)
    q1, q3 = np.percentile(per_round, [25, 75])
    dlbook.glue(f"ch14_best_ratio{b}_q1", float(q1))
    dlbook.glue(f"ch14_best_ratio{b}_q3", float(q3))
    dlbook.glue(f"ch14_best_ratio{b}_rounds", len(per_round))
    print(
        f"batch {b:>2}: speed-up per round median {np.median(per_round):.2f}x, "
        f"quartiles {q1:.2f}-{q3:.2f}x, "
        f"range {per_round.min():.2f}-{per_round.max():.2f}x "
        f"over {len(per_round)} rounds"
    )
throughput = {
    n: 32 / (timings[n][32].median / 1e3)  # snippets per second
    for n in ("teacher (6 layers)", best)
}
dlbook.glue("ch14_best_throughput", throughput[best])
dlbook.glue("ch14_teacher_throughput", throughput["teacher (6 layers)"])
print(
    f"throughput at batch 32: {best} {throughput[best]:.0f} snippets/s, "
    f"teacher {throughput['teacher (6 layers)']:.0f} snippets/s"
)

# %%
best_vs_teacher = board.compare(best)  # teacher - student, on the same test snippets
allowed = 100 * 0.03 * base.accuracy  # points the student may lose and still keep 97 %
reach = 100 * best_vs_teacher.interval.high  # the largest drop the 95 % interval allows
dlbook.glue("ch14_best_drop_ci", best_vs_teacher.interval.points())
dlbook.glue("ch14_best_verdict", best_vs_teacher.verdict("the teacher", "the student"))
if reach > allowed:
    tail = (
        f"past the {allowed:.1f} points that keeping 97 % allows: passing means "
        "that this test split did not show a larger loss, not that the student "
        "keeps 97 %."
    )
else:
    tail = (
        f"short of the {allowed:.1f} points that keeping 97 % allows: on this test "
        "split even the interval's upper end stays within 97 %."
    )
dlbook.glue(
    "ch14_reach_sentence",
    f"The 95 % interval of the drop reaches {reach:.1f} points, {tail}",
)
print(f"drop {best_vs_teacher.interval.points()} points; 97 % allows {allowed:.1f}")

# %% [markdown]
# The best student, chosen on validation, is "{glue:text}`ch14_best_name`". At batch 32 it is
# **{glue:text}`ch14_best_speedup`x faster** than the teacher
# ({glue:text}`ch14_best_faster1:.2f`x at batch 1), and it is
# {glue:text}`ch14_best_smaller:.2f` times smaller on disk. Its test accuracy is
# {glue:text}`ch14_best_acc:.3f` against the teacher's {glue:text}`ch14_teacher_acc:.3f`: it
# keeps **{glue:text}`ch14_best_acc_ratio`** of it (asserted: at least 97 %). The drop, then its
# 95 % paired interval, in points: {glue:text}`ch14_best_drop_ci`. Compared over the same
# snippets, {glue:text}`ch14_best_verdict`.
#
# The check is on the point estimate. {glue:text}`ch14_reach_sentence`
#
# The speed-ups are medians over rounds in which both models ran in turns, at the same thread
# count. Per round, the ratio's middle half (quartiles) ran from
# {glue:text}`ch14_best_ratio32_q1:.2f`x to {glue:text}`ch14_best_ratio32_q3:.2f`x at batch 32
# ({glue:text}`ch14_best_ratio32_rounds` rounds) and from {glue:text}`ch14_best_ratio1_q1:.2f`x
# to {glue:text}`ch14_best_ratio1_q3:.2f`x at batch 1 ({glue:text}`ch14_best_ratio1_rounds`
# rounds). As throughput at batch 32, the student classifies
# {glue:text}`ch14_best_throughput:.0f` snippets per second, the teacher
# {glue:text}`ch14_teacher_throughput:.0f`. The speed-up expected on this hardware class
# ({glue:text}`ch14_class`): {glue:text}`ch14_speed_expected`. Every measurement is in the
# table, taken on the CPU named in the provenance line above it.
#
# **What the teacher adds.** The ablation, student by student:

# %%
for kind in distill.KINDS:
    kd, ce = board.rows[f"{kind}, distilled"], board.rows[f"{kind}, labels only"]
    gain = stats.compare(kd.correct, ce.correct)  # paired, on the same test snippets
    dlbook.glue(f"ch14_gain_ci_{kind}", gain.interval.points())
    dlbook.glue(
        f"ch14_gain_verdict_{kind}",
        gain.verdict("the distilled student", "the labels-only one"),
    )
    print(
        f"{kind:>7}: distilled {kd.accuracy:.3f} | labels only {ce.accuracy:.3f} | "
        f"{gain.verdict('distilled', 'labels only')}"
    )
layers_kd = ratios["layers, distilled"]
dlbook.glue("ch14_layers_faster32", layers_kd["faster@32"])
dlbook.glue("ch14_layers_smaller", layers_kd["smaller"])
dlbook.glue("ch14_size_layers", board.rows["layers, distilled"].size_mb)
dlbook.glue("ch14_size_narrow", board.rows["narrow, distilled"].size_mb)
emb_params = teacher.bert.embeddings.word_embeddings.weight.numel()
dlbook.glue("ch14_emb_mb", emb_params * 4 / 1e6)  # float32: 4 bytes each

# %% [markdown]
# Against its labels-only twin, distillation changes the shallow student's test accuracy by
# {glue:text}`ch14_gain_ci_layers` points and the narrow student's by
# {glue:text}`ch14_gain_ci_narrow` points (each: the difference, then its 95 % paired interval).
# For the shallow pair, {glue:text}`ch14_gain_verdict_layers`. For the narrow pair,
# {glue:text}`ch14_gain_verdict_narrow`.
#
# These intervals cover the choice of test snippets, not the training seed: each arm was
# trained once, and another seed moves each accuracy too. So the shallow student is trained
# with and without the teacher at several seeds (the seed sets the order of the batches; the
# starting weights are the teacher's either way), each seed one pair:

# %%
seed_runs = {
    seed: (layers_run(seed=seed), layers_run(distilled=False, seed=seed))
    for seed in dlbook.progress(sizes["seeds"], desc="seeds")
}
acc_kd = np.array([kd.test_accuracy for kd, _ in seed_runs.values()])  # (k,)
acc_ce = np.array([ce.test_accuracy for _, ce in seed_runs.values()])  # (k,)
for seed, a, b in zip(seed_runs, acc_kd, acc_ce, strict=True):
    print(
        f"seed {seed}: distilled {a:.4f} | labels only {b:.4f} | "
        f"{100 * (a - b):+.2f} points"
    )
seed_gain = stats.seed_interval(acc_kd, acc_ce)  # mean difference, Student t over seeds
print(f"distilled - labels only over {len(acc_kd)} seeds: {seed_gain.points()} points")
dlbook.glue("ch14_seed_k", len(acc_kd))
dlbook.glue("ch14_seed_gain", seed_gain.points())
for arm, acc in (("kd", acc_kd), ("ce", acc_ce)):
    dlbook.glue(f"ch14_seed_{arm}_mean", float(acc.mean()))
    dlbook.glue(f"ch14_seed_{arm}_sd", 100 * float(acc.std(ddof=1)))
    dlbook.glue(f"ch14_seed_{arm}_range", 100 * float(acc.max() - acc.min()))
seed_verdict = (
    "the interval excludes 0: distillation "
    + ("helps" if seed_gain.diff > 0 else "hurts")
    + " the shallow student"
    if seed_gain.measurable
    else "the interval includes 0: no measurable gain from the teacher over these seeds"
)
dlbook.glue("ch14_seed_verdict", seed_verdict)
mean_keep = float(acc_kd.mean()) / base.accuracy  # the 97 % check, over the seeds
worst_margin = 100 * (float(acc_kd.min()) - 0.97 * base.accuracy)  # points above 97 %
dlbook.glue("ch14_seed_worst_margin", worst_margin)
if best == "layers, distilled":  # the best student's 97 %: checked over the seeds
    dlbook.headline(
        "ch14_seed_mean_keep", mean_keep, profile=profile, at_least=0.97, fmt="{:.1%}"
    )
else:
    dlbook.glue("ch14_seed_mean_keep", f"{mean_keep:.1%}")

# %% [markdown]
# Over {glue:text}`ch14_seed_k` seeds the distilled shallow student scores
# {glue:text}`ch14_seed_kd_mean:.4f` on test on average (standard deviation
# {glue:text}`ch14_seed_kd_sd:.2f` points, range {glue:text}`ch14_seed_kd_range:.2f`) and its
# labels-only twin {glue:text}`ch14_seed_ce_mean:.4f` (standard deviation
# {glue:text}`ch14_seed_ce_sd:.2f`, range {glue:text}`ch14_seed_ce_range:.2f`). The mean
# difference and its 95 % Student t interval over the seeds: {glue:text}`ch14_seed_gain`
# points; {glue:text}`ch14_seed_verdict`. On average over the seeds the distilled shallow
# student keeps {glue:text}`ch14_seed_mean_keep` of the teacher's test accuracy (asserted at
# least 97 % where it is the chosen student); its worst seed sits
# {glue:text}`ch14_seed_worst_margin:+.2f` points from 97 % of the teacher's accuracy, which
# is how much room the 97 % check leaves for the seed. The narrow student is not studied over
# seeds here, so the chapter claims nothing about its gain (exercise {ref}`ch14-ex-seeds`).
# Two things are known about the setting. With two classes, the soft target carries one number
# per snippet (how sure the teacher is), not the similarity structure among many classes that
# Hinton et al. exploit on
# MNIST, speech recognition and a large image set {cite}`hinton2015distilling`. And DistilBERT
# and TinyBERT distil more than the outputs: on large unlabeled corpora, and, for TinyBERT,
# hidden states and attention maps layer by layer {cite}`sanh2019distilbert,jiao2020tinybert`.
#
# **Where the size goes.** The shallow student is {glue:text}`ch14_size_layers:.0f` MB on disk
# and the narrow one {glue:text}`ch14_size_narrow:.0f` MB: the teacher's word-embedding table
# alone is {glue:text}`ch14_emb_mb:.0f` MB in float32, and the shallow student keeps all of it.
# So removing half the layers made the shallow student {glue:text}`ch14_layers_faster32:.2f`x
# faster at batch 32 but only {glue:text}`ch14_layers_smaller:.2f`x smaller; chapter 15
# combines distillation with int8 quantization to get both.
#
# ## Summary
#
# - Soft targets $\mathrm{softmax}(z/T)$ expose how sure the teacher is; the temperature flattens
#   them without changing the ranking.
# - The distillation loss, Eq. {eq}`eq-ch14-loss`, mixes the label cross-entropy with $T^2$ times
#   the KL divergence from the teacher's softened distribution to the student's; its gradient is
#   $(p_s - p_t)/T$ per logit, which shrinks like $1/T^2$, hence the factor $T^2$ (measured above).
# - The frozen teacher's logits are computed once and looked up during training. Batches grouped
#   by length, an embedding table trained as the teacher's frozen table times a small projection
#   (ALBERT's factorisation) and the fused AdamW kernel make each step cheaper; section 14.4
#   measures each, timed in turns.
# - A shallow copy built from every other teacher layer starts from the teacher's weights; a
#   narrower student starts from random weights and a random projection of the teacher's
#   embeddings.
# - The best student is chosen on validation and its test accuracy checked once; paired
#   intervals (bootstrap) and McNemar's test say what the test snippets show about a difference.
# - The temperature and $\alpha$ are chosen on validation from a small grid; the chosen
#   setting's test accuracy is read once.
# - On this two-class task, distillation's gain over labels alone for the shallow student,
#   over {glue:text}`ch14_seed_k` seeds, is {glue:text}`ch14_seed_gain` points (mean, then 95 %
#   interval over the seeds); the speed-up comes from the smaller architecture.
# - A transfer set of snippets only the teacher labels, added to a quarter of the labels,
#   changes validation accuracy by {glue:text}`ch14_transfer_gain` points over
#   {glue:text}`ch14_transfer_seeds` seeds.
#
# ## Exercises
#
# :::{exercise}
# :label: ch14-ex-two-classes
# With two classes, show that $p^{(T)}$ depends on the logits only through $d = z_1 - z_0$, and
# that the soft target is $\sigma(d/T)$ (the logistic function). What does a teacher with
# $d = 4$ give at $T = 1$ and at $T = 4$?
# :::
#
# :::{solution} ch14-ex-two-classes
# :class: dropdown
# $p_1 = e^{z_1/T} / (e^{z_0/T} + e^{z_1/T}) = 1 / (1 + e^{-(z_1 - z_0)/T}) = \sigma(d/T)$.
# For $d = 4$: $\sigma(4) \approx 0.982$ at $T = 1$ and $\sigma(1) \approx 0.731$ at $T = 4$. The
# teacher is equally "sure" in both cases; the temperature only changes how much of that
# sureness the loss can see.
# :::
#
# :::{exercise}
# :label: ch14-ex-alpha
# Suppose you drop the factor $T^2$ and train at $T = 8$ with $\alpha = 0.5$. Using the
# measurement of section 14.2, roughly what share of the gradient at the student's logits comes
# from the teacher term, compared to training with the factor? What $\alpha$ would you have to
# use, with the factor, to get the same balance?
# :::
#
# :::{solution} ch14-ex-alpha
# :class: dropdown
# Without $T^2$ the teacher term's gradient is $1/T^2 = 1/64$ of what it is with the factor
# (section 14.2 measured the $1/T^2$ fall), while the label term's gradient does not depend on
# $T$. So without $T^2$ the teacher term's weight relative to the label term falls 64-fold;
# which term then dominates depends on the sizes of their gradients. With the factor, the same
# relative weight needs $(1-\alpha)/\alpha = 1/64$, i.e. $\alpha = 64/65 \approx 0.985$. The
# factor $T^2$ lets you choose $\alpha$ and $T$ independently.
# :::
#
# :::{exercise}
# :label: ch14-ex-soft-ce
# Write `soft_cross_entropy(student_logits, teacher_logits, temperature)`: $T^2$ times the
# cross-entropy $-\frac{1}{N}\sum_n \sum_c p^{(T)}_{t,nc} \log p^{(T)}_{s,nc}$ (many
# implementations use this instead of the KL divergence). By how much does it differ from the KL
# form, and does that change any gradient?
# :::


# %%
def soft_cross_entropy(student_logits, teacher_logits, temperature):
    raise NotImplementedError("your code here")


dlbook.exercises.check("ch14.soft_cross_entropy", soft_cross_entropy)

# %% [markdown]
# ```{solution-start} ch14-ex-soft-ce
# :class: dropdown
# ```
# The two differ by $T^2 H(p_t^{(T)})$, the teacher's entropy, a constant for the student: same
# gradients, different loss values (the soft cross-entropy never reaches zero).


# %% tags=["solution"]
def soft_cross_entropy_solution(student_logits, teacher_logits, temperature):
    p_t = torch.softmax(teacher_logits / temperature, dim=-1)  # (N, C)
    log_p_s = torch.log_softmax(student_logits / temperature, dim=-1)  # (N, C)
    return -(temperature**2) * (p_t * log_p_s).sum(-1).mean()


assert dlbook.exercises.check("ch14.soft_cross_entropy", soft_cross_entropy_solution)

# %% [markdown]
# ```{solution-end}
# ```
#
# :::{exercise}
# :label: ch14-ex-spread
# Write `spread_layers(n_teacher, n_student)`: the teacher layers a student of `n_student` layers
# keeps, spread evenly and starting at layer 0, as `[(i * n_teacher) // n_student for i ...]`
# would give (6 to 3: `[0, 2, 4]`). Then build `distill.student_from_teacher(teacher,
# spread_layers(6, 2))` and measure its accuracy before training.
# :::


# %%
def spread_layers(n_teacher, n_student):
    raise NotImplementedError("your code here")


dlbook.exercises.check("ch14.spread_layers", spread_layers)

# %% [markdown]
# ```{solution-start} ch14-ex-spread
# :class: dropdown
# ```


# %% tags=["solution"]
def spread_layers_solution(n_teacher, n_student):
    return [(i * n_teacher) // n_student for i in range(n_student)]


assert dlbook.exercises.check("ch14.spread_layers", spread_layers_solution)
two = distill.student_from_teacher(teacher, spread_layers_solution(6, 2))
print(
    "layers",
    spread_layers_solution(6, 2),
    "| untrained test accuracy",
    round(
        finetune.evaluate_classifier(two, test_tok, tokenizer, device=device).accuracy,
        3,
    ),
)

# %% [markdown]
# ```{solution-end}
# ```
#
# :::{exercise}
# :label: ch14-ex-seeds
# Section 14.5 measured the shallow student's gain over seeds; do it for the narrow student.
# Train it at seeds 1 and 2 with and without the teacher, changing only the seed:
# `distill.student_run("full", "narrow", d, dataclasses.replace(
# distill.STUDENT_SETTINGS["full"]["narrow"], seed=s))` trains one (a few minutes) and caches
# which snippets it gets right. With the chapter's run (seed 0) you have three test accuracies
# per arm, paired by seed (one seed gives both arms the same batch order and starting weights).
# Write `seed_gain_interval(acc_distilled, acc_labels,
# level=0.95)`: the per-seed differences $d_s$, their mean $\bar d$ and Student's t interval
# $\bar d \pm t_{k-1}\, s_d / \sqrt{k}$ for $k$ seeds ($s_d$ the sample standard deviation),
# returned as `(mean, low, high)`. Is distillation's gain supported, that is, does the interval
# exclude 0?
# :::


# %%
def seed_gain_interval(acc_distilled, acc_labels, level=0.95):
    raise NotImplementedError("your code here")


dlbook.exercises.check("ch14.seed_gain_interval", seed_gain_interval)

# %% [markdown]
# ```{solution-start} ch14-ex-seeds
# :class: dropdown
# ```
# The differences are paired by seed, so the interval is that of their mean, with the t quantile
# for $k - 1$ degrees of freedom (4.30 for three seeds at 95 %, where the normal quantile is
# 1.96): with so few seeds, the sample standard deviation is itself uncertain. Distillation's
# gain is supported only if the interval excludes 0.


# %% tags=["solution"]
def seed_gain_interval_solution(acc_distilled, acc_labels, level=0.95):
    d = np.asarray(acc_distilled, float) - np.asarray(acc_labels, float)  # (k,)
    t = scipy.stats.t.ppf((1 + level) / 2, d.size - 1)  # k - 1 degrees of freedom
    half = t * d.std(ddof=1) / np.sqrt(d.size)
    return float(d.mean()), float(d.mean() - half), float(d.mean() + half)


assert dlbook.exercises.check("ch14.seed_gain_interval", seed_gain_interval_solution)
assert round(float(scipy.stats.t.ppf(0.975, 2)), 2) == 4.30  # three seeds, 95 %
assert np.allclose(
    seed_gain_interval_solution(acc_kd, acc_ce)[1:], (seed_gain.low, seed_gain.high)
)  # == dlbook.stats.seed_interval

# %% [markdown]
# ```{solution-end}
# ```
#
# ## Further reading
#
# Hinton, Vinyals and Dean introduced the temperature-softened targets and the $T^2$ factor
# {cite}`hinton2015distilling`. DistilBERT distilled BERT into six layers during pre-training,
# keeping 97 % of its GLUE score at 60 % more speed {cite}`sanh2019distilbert`; TinyBERT adds losses
# on hidden states and attention maps {cite}`jiao2020tinybert`; MiniLM, the teacher's own
# ancestor, distils the self-attention relations of the last layer {cite}`wang2020minilm`. Gou et
# al. survey the field {cite}`gou2021knowledge`.
