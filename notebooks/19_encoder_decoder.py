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
# (ch19)=
# # 19. Encoder-decoder models
#
# The Transformer was introduced as an **encoder-decoder** for translation
# {cite}`vaswani2017attention`: an encoder reads the whole source, a decoder writes the target one
# token at a time, and **cross-attention** lets every target position look at the source. BERT
# (chapter 8) kept only the encoder, GPT-style models only the decoder. This chapter builds the
# missing piece, checks it against PyTorch, and trains a small encoder-decoder from scratch on a
# task with an exact answer: rewriting dates written in many ways as ISO 8601.
#
# By the end of this chapter you can
#
# 1. write cross-attention and a decoder layer (masked self-attention, cross-attention,
#    feed-forward) and check them, forward and backward, against `nn.TransformerDecoderLayer`, and
#    a whole encoder-decoder against `nn.Transformer`;
# 2. build a sequence-to-sequence task whose splits share no example, and train on it with
#    teacher forcing;
# 3. decode greedily and with beam search, choose between them on validation and read the test
#    split once;
# 4. read cross-attention maps and measure what they show;
# 5. say where T5 and BART fit.

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
import datetime as dt
import math
import os
from collections import Counter

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import binomtest
from torch import nn
from transformers import AutoModelForSeq2SeqLM, BartConfig, T5Config

import dlbook
import dlbook.exercises
import dlbook.exercises.ch19
from dlbook import seq2seq as s2
from dlbook import stats
from dlbook.nn.transformer import DecoderLayer, EncoderDecoder

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
        n_train=512,
        n_val=128,
        n_test=128,
        epochs=1,
        batch=64,
        d_model=32,
        d_ff=64,
        lr=3e-3,
        beams=[1, 2],
        n_attn=64,
    ),
    full=dict(
        n_train=20_000,  # training examples (a written date and its ISO form)
        n_val=1000,  # validation examples: best epoch, beam size
        n_test=2000,  # test examples, scored once
        epochs=6,  # passes over the training examples; the best on validation is kept
        batch=128,  # examples per training step
        d_model=64,  # width of the model's vectors
        d_ff=256,  # width of the hidden layer of each feed-forward network
        lr=3e-3,  # peak learning rate (warm-up, then cosine decay)
        beams=[1, 2, 4],  # beam sizes compared on validation; 1 is greedy (19.7)
        n_attn=1000,  # validation examples whose cross-attention is measured (19.8)
    ),
)
sizes

# %% [markdown]
# ## 19.1 Cross-attention
#
# An encoder turns the source $x_1,\dots,x_S$ into vectors $M\in\mathbb{R}^{S\times d}$, the
# **memory**. A decoder position $t$ holds a vector $y_t$ built from the target written so far.
# Cross-attention is the attention of chapter 6 with the **queries from the decoder** and the
# **keys and values from the memory**:
#
# $$
# \mathrm{CrossAttn}(Y, M) = \mathrm{softmax}\!\Big(\frac{(Y W_Q)(M W_K)^\top}{\sqrt{d_k}}
# + B\Big)\, M W_V , \qquad Y\in\mathbb{R}^{T\times d},\; M\in\mathbb{R}^{S\times d},
# $$ (eq-ch19-cross)
#
# where $B$ is $-\infty$ at padded source positions and $0$ elsewhere. The weights form a
# $T\times S$ matrix: row $t$ says where in the source target position $t$ looks. Source and
# target lengths differ, and no causal mask is needed here: the whole source is known before
# decoding starts. One head, by hand, checked against PyTorch's fused function, forward and
# backward:

# %%
g = torch.Generator().manual_seed(0)
d, d_k = 16, 8
Y = torch.randn(2, 5, d, generator=g, dtype=torch.float64)  # (B, T, d): decoder side
M = torch.randn(2, 7, d, generator=g, dtype=torch.float64)  # (B, S, d): memory
W_Q, W_K, W_V = (
    torch.randn(d, d_k, generator=g, dtype=torch.float64) for _ in range(3)
)  # (d, d_k) each
src_pad = torch.zeros(2, 7, dtype=torch.bool)  # (B, S), True = padding
src_pad[1, 4:] = True  # the second source has 4 characters
for t in (Y, M, W_Q, W_K, W_V):
    t.requires_grad_(True)


def cross_attention(Y, M, src_pad):
    q, k, v = Y @ W_Q, M @ W_K, M @ W_V  # (B, T, d_k), (B, S, d_k), (B, S, d_k)
    logits = q @ k.transpose(1, 2) / math.sqrt(d_k)  # (B, T, S)
    logits = logits.masked_fill(src_pad[:, None, :], float("-inf"))
    weights = torch.softmax(logits, dim=-1)  # (B, T, S), rows sum to 1
    return weights @ v, weights  # (B, T, d_k), (B, T, S)


ours, w = cross_attention(Y, M, src_pad)
ref = F.scaled_dot_product_attention(
    Y @ W_Q, M @ W_K, M @ W_V, attn_mask=~src_pad[:, None, :]
)  # True = attend
torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
probe = torch.randn_like(ours)
wrt = (Y, M, W_Q, W_K, W_V)
for a, b in zip(
    torch.autograd.grad((ours * probe).sum(), wrt),
    torch.autograd.grad((ref * probe).sum(), wrt),
    strict=True,
):
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
assert float(w.detach()[1, :, 4:].abs().max()) == 0.0  # no weight on padding
print(
    "cross-attention by hand == F.scaled_dot_product_attention, forward and",
    f"backward; weights {tuple(w.shape)} = (B, T, S)",
)

# %% [markdown]
# The weights have shape (batch, target length, source length), and the padded source
# positions get exactly zero weight. Chapter 6's `MultiHeadAttention` already takes a `key` and
# `value` from another sequence, so the decoder below reuses it.
#
# ## 19.2 The decoder layer
#
# A decoder layer has three sub-layers, each with a residual connection and a LayerNorm (the
# post-norm arrangement of the original Transformer {cite}`vaswani2017attention`):
#
# $$
# \begin{aligned}
# H_1 &= \mathrm{LN}_1\big(Y + \mathrm{SelfAttn}_{\text{causal}}(Y)\big), \\
# H_2 &= \mathrm{LN}_2\big(H_1 + \mathrm{CrossAttn}(H_1, M)\big), \\
# \mathrm{out} &= \mathrm{LN}_3\big(H_2 + \mathrm{FFN}(H_2)\big).
# \end{aligned}
# $$ (eq-ch19-decoder)
#
# The self-attention is **masked** (causal): position $t$ sees target positions $\le t$ only, so
# the layer can be trained on whole targets at once and still be used one token at a time. We
# write the three lines as a function of the sub-layers of a `DecoderLayer` (chapter 6's
# attention, chapter 7's feed-forward network and LayerNorm), copy the weights of a
# `nn.TransformerDecoderLayer` into it, and compare in float64, forward and backward:


# %%
def decoder_layer(layer, Y, M, src_pad):
    """Eq. eq-ch19-decoder with the sub-layers of `layer` (post-norm)."""
    a, _ = layer.self_attn(Y, Y, Y, causal=True)  # (B, T, d)
    H1 = layer.norm1(Y + a)
    c, _ = layer.cross_attn(H1, M, M, key_padding_mask=src_pad)  # queries H1, keys M
    H2 = layer.norm2(H1 + c)
    return layer.norm3(H2 + layer.ff(H2))  # (B, T, d)


torch.manual_seed(0)
ref_layer = nn.TransformerDecoderLayer(d, 4, 4 * d, dropout=0.0, batch_first=True)
ref_layer = ref_layer.double()
layer = DecoderLayer(d, 4, 4 * d, dropout=0.0).double().load_from_torch(ref_layer)
Yd, Md = Y.detach().requires_grad_(True), M.detach().requires_grad_(True)
blocked = nn.Transformer.generate_square_subsequent_mask(5, dtype=torch.float64)
want = ref_layer(Yd, Md, tgt_mask=blocked, memory_key_padding_mask=src_pad)
got = decoder_layer(layer, Yd, Md, src_pad)
probe = torch.randn_like(want)
grads_ref = torch.autograd.grad((want * probe).sum(), [Yd, Md])
grads_got = torch.autograd.grad((got * probe).sum(), [Yd, Md])
tol = dict(rtol=1e-10, atol=1e-10)
torch.testing.assert_close(got, want, **tol)
for a, b in zip(grads_got[:2], grads_ref[:2], strict=True):  # input and memory
    torch.testing.assert_close(a, b, **tol)
dec_diff = (got - want).abs().max().item()
dlbook.glue("dec_diff", dec_diff)
print(
    "decoder layer by hand vs nn.TransformerDecoderLayer: max |diff| ="
    f" {dec_diff:.1e} (float64); input and memory gradients equal to 1e-10"
)

# %% [markdown]
# The three lines of {eq}`eq-ch19-decoder` reproduce `nn.TransformerDecoderLayer` to
# {glue:text}`dec_diff:.1e` in float64, with the gradients of the input and of the memory equal
# to a tolerance of $10^{-10}$. The packaged `dlbook.nn.transformer.DecoderLayer` computes the
# same lines, in both the post-norm and the pre-norm arrangement, and returns the attention
# weights on request. Its output and each of its parameter gradients against PyTorch's (torch
# stacks the query, key and value weights into one `in_proj`, split here):


# %%
def torch_grads(ref, Y, M):
    """Gradients of torch's layer, its stacked in_proj split into q, k, v like ours."""
    out = ref(Y, M, tgt_mask=blocked, memory_key_padding_mask=src_pad)
    named = dict(
        zip(
            [n for n, _ in ref.named_parameters()],
            torch.autograd.grad((out * probe).sum(), list(ref.parameters())),
            strict=True,
        )
    )
    grads = {}
    pairs = (("self_attn", "self_attn"), ("cross_attn", "multihead_attn"))
    for ours_name, theirs in pairs:
        for part in ("weight", "bias"):
            q, k, v = named.pop(f"{theirs}.in_proj_{part}").chunk(3)
            for p, gp in zip("qkv", (q, k, v), strict=True):
                grads[f"{ours_name}.{p}_proj.{part}"] = gp
        for part in ("weight", "bias"):
            theirs_out = named.pop(f"{theirs}.out_proj.{part}")
            grads[f"{ours_name}.out_proj.{part}"] = theirs_out
    for name, gp in named.items():  # linear1/2 live in ff. in ours
        grads[name.replace("linear", "ff.linear")] = gp
    return out, grads


for norm_first in (False, True):
    torch.manual_seed(1)
    ref_l = nn.TransformerDecoderLayer(
        d, 4, 4 * d, dropout=0.0, batch_first=True, norm_first=norm_first
    ).double()
    ours_l = DecoderLayer(d, 4, 4 * d, dropout=0.0, norm_first=norm_first).double()
    ours_l.load_from_torch(ref_l)
    out_ref, g_ref = torch_grads(ref_l, Yd, Md)
    out_ours = ours_l(Yd, Md, memory_key_padding_mask=src_pad)
    names = [n for n, _ in ours_l.named_parameters()]
    g_ours = torch.autograd.grad((out_ours * probe).sum(), list(ours_l.parameters()))
    torch.testing.assert_close(out_ours, out_ref, **tol)
    assert sorted(names) == sorted(g_ref)
    for name, gp in zip(names, g_ours, strict=True):
        torch.testing.assert_close(gp, g_ref[name], **tol)
    print(
        f"norm_first={norm_first}: output and all {len(names)} parameter gradients"
        " match"
    )
dlbook.show(DecoderLayer.forward)

# %% [markdown]
# ## 19.3 The whole model
#
# An encoder-decoder stacks encoder layers (chapter 7) over the source and decoder layers over
# the target; every decoder layer cross-attends to the **last** encoder output. PyTorch's
# `nn.Transformer` is exactly these two stacks, without embeddings or an output layer. It ends
# each stack with a LayerNorm whatever the arrangement, which our stacks do only in the pre-norm
# arrangement (the one we train below), so we compare pre-norm bodies:

# %%
final_norms = nn.Transformer(d, 4, 1, 1, 4 * d, batch_first=True)  # post-norm
print(
    "nn.Transformer (post-norm) ends with:",
    type(final_norms.encoder.norm).__name__,
    type(final_norms.decoder.norm).__name__,
)
assert isinstance(final_norms.decoder.norm, nn.LayerNorm)

torch.manual_seed(2)
enc_layer = nn.TransformerEncoderLayer(
    d, 4, 4 * d, dropout=0.0, batch_first=True, norm_first=True
)
# our own encoder stack: nn.Transformer's default one warns about nested tensors
encoder = nn.TransformerEncoder(
    enc_layer, 2, norm=nn.LayerNorm(d), enable_nested_tensor=False
)
ref_tf = nn.Transformer(
    d,
    4,
    2,
    2,
    4 * d,
    dropout=0.0,
    batch_first=True,
    norm_first=True,
    custom_encoder=encoder,
).double()
body = EncoderDecoder(10, 10, d_model=d, n_heads=4, d_ff=4 * d).double()
body.load_body_from_torch(ref_tf)
want = ref_tf(
    Md,
    Yd,
    tgt_mask=blocked,
    src_key_padding_mask=src_pad,
    memory_key_padding_mask=src_pad,
)  # (B, T, d)
memory = body.encoder(Md, key_padding_mask=src_pad)  # (B, S, d)
got = body.decoder(Yd, memory, memory_key_padding_mask=src_pad)  # (B, T, d)
torch.testing.assert_close(got, want, **tol)
for a, b in zip(
    torch.autograd.grad((got * probe).sum(), [Yd, Md]),
    torch.autograd.grad((want * probe).sum(), [Yd, Md]),
    strict=True,
):
    torch.testing.assert_close(a, b, **tol)
tf_diff = (got - want).abs().max().item()
dlbook.glue("tf_diff", tf_diff)
print(
    f"encoder + decoder vs nn.Transformer: max |diff| = {tf_diff:.1e}; gradients match"
)

# %% [markdown]
# The two-layer encoder and decoder match `nn.Transformer` to {glue:text}`tf_diff:.1e`, with
# equal gradients for both inputs. `EncoderDecoder` adds what `nn.Transformer` leaves out:
# character embeddings (scaled by $\sqrt{d}$ and added to the sinusoidal positions of chapter
# 7), the source padding mask, and a linear layer from the decoder output to next-character
# logits. Its `encode` and `decode` split the forward pass for generation:

# %%
dlbook.show(EncoderDecoder.forward)

# %% [markdown]
# ## 19.4 A task with an exact answer: normalising dates
#
# The task: read a date written in any of many formats and write it as ISO 8601, `YYYY-MM-DD`.
# Every input has exactly one right answer, the answer is short, and the mapping needs both
# copying (digits) and lookup (month names), with the fields in different orders. One date in
# every source format of `dlbook.seq2seq`:

# %%
example_date = dt.date(2021, 3, 3)
for fmt in s2.DATE_FORMATS:
    print(f"{fmt:>22}  {s2.format_date(example_date, fmt).text}")
print(f"{'target':>22}  {example_date.isoformat()}")
dlbook.glue("n_formats", len(s2.DATE_FORMATS))

# %% [markdown]
# Two kinds of input would have no single answer, and the generator avoids them:
#
# - **Month-first numbers** (`03/04/21` meaning 4 March, the US habit): they cannot be told
#   apart from day-first numbers, so every numeric format with slashes or dots is day first, or
#   starts with a four-digit year.
# - **Two-digit years**: every date lies between 1950-01-01 and 2049-12-31, so `50` to `99` mean
#   1950 to 1999 and `00` to `49` mean 2000 to 2049.
#
# Weekday names are always the true weekday of the date; the model may ignore them.
#
# ### Splits that share nothing
#
# If the same date appeared in training and test (in another format), the test would partly
# measure memory. `make_date_splits` shuffles the {glue:text}`n_days` calendar dates with a
# seeded generator and cuts them 80/10/10, so no **date** is in two splits; each example then
# draws a date of its split and one of the {glue:text}`n_formats` formats. No input string is
# written for two different dates (the unit tests check all dates in all formats; below, the
# examples drawn).

# %%
splits = s2.make_date_splits(sizes["n_train"], sizes["n_val"], sizes["n_test"], seed=0)
dates = {name: {e.date for e in examples} for name, examples in splits.items()}
texts = {name: {e.text for e in examples} for name, examples in splits.items()}
for a, b in (("train", "validation"), ("train", "test"), ("validation", "test")):
    assert not dates[a] & dates[b] and not texts[a] & texts[b]
answer = {}  # input string -> its ISO date: one answer per input
for e in (e for examples in splits.values() for e in examples):
    assert answer.setdefault(e.text, e.target) == e.target
n_days = (s2.LAST_DATE - s2.FIRST_DATE).days + 1
dlbook.glue("n_days", f"{n_days:,}")
print(
    {name: len(examples) for name, examples in splits.items()},
    f"examples from {n_days:,} dates; no date and no input string in two splits",
)
splits["train"][:3]

# %% [markdown]
# Characters are the tokens: the vocabulary holds `<pad>` (0), `<bos>` (1), `<eos>` (2), digits,
# letters and a few punctuation marks. A target becomes `<bos> 2 0 2 1 - 0 3 - 0 3 <eos>`.

# %%
vocab = s2.CharVocab()
train_src, train_tgt = s2.encode_examples(splits["train"], vocab)  # (N, S), (N, 12)
val_src, val_tgt = s2.encode_examples(splits["validation"], vocab)
test_src, test_tgt = s2.encode_examples(splits["test"], vocab)
max_target = train_tgt.shape[1] - 1  # decoding steps: 10 characters and <eos>
print(
    f"vocabulary {len(vocab)}; source ids {tuple(train_src.shape)}, "
    f"target ids {tuple(train_tgt.shape)}"
)
print(train_tgt[0].tolist(), "->", repr(vocab.decode(train_tgt[0])))

# %% [markdown]
# ## 19.5 Teacher forcing
#
# The model defines $p(y\mid x) = \prod_t p(y_t \mid y_{<t}, x)$. Training minimises the
# cross-entropy of each target character given the source and the **true** previous characters,
# averaged over the real (non-padding) target tokens:
#
# $$
# \mathcal{L} = -\frac{1}{\#\text{tokens}} \sum_{n}\sum_{t} \log p_\theta\big(y^{(n)}_t \,\big|\,
# y^{(n)}_{<t}, x^{(n)}\big).
# $$ (eq-ch19-tf)
#
# Feeding the true prefix, not the model's own guesses, is **teacher forcing**. With the causal
# mask it costs one forward pass per batch: the decoder input is the target shifted right
# (`<bos> y_1 ... y_{T-1}`), and position $t$ is trained to predict $y_t$. The causal mask is what
# makes this legitimate: the logits at position $t$ are exactly those the model computes when it
# has written only $t$ characters. Checked on the untrained model:

# %%
torch.manual_seed(0)
model = EncoderDecoder(
    len(vocab),
    len(vocab),
    d_model=sizes["d_model"],
    n_heads=4,
    d_ff=sizes["d_ff"],
    n_enc=2,
    n_dec=2,
    max_len=32,
).to(device)
model.eval()
src, tgt = val_src[:8].to(device), val_tgt[:8].to(device)
with torch.no_grad():
    parallel = model(src, tgt[:, :-1])  # (8, 11, V): all positions at once
    memory, pad = model.encode(src)
    stepwise = torch.stack(
        [model.decode(tgt[:, :t], memory, pad)[:, -1] for t in range(1, tgt.shape[1])],
        dim=1,
    )  # (8, 11, V)
torch.testing.assert_close(parallel, stepwise)
loss0 = s2.teacher_forcing_loss(model, src, tgt).item()
dlbook.glue("loss0", loss0)
dlbook.glue("log_vocab", math.log(len(vocab)))
print(
    f"teacher-forced logits == one-step-at-a-time logits; initial loss {loss0:.2f} "
    f"(ln V = {math.log(len(vocab)):.2f})"
)

# %% [markdown]
# The untrained model's loss is {glue:text}`loss0:.2f`; a uniform guess over the vocabulary
# would score $\ln V =$ {glue:text}`log_vocab:.2f`. At test time there is no teacher: the model reads
# its own output, so one early mistake can derail the rest. Exact match on whole outputs,
# generated without any help, is therefore the measure here, not the loss.
#
# ## 19.6 Training
#
# `dlbook.seq2seq.train_seq2seq` runs {eq}`eq-ch19-tf` with AdamW and chapter 2's warm-up and
# cosine schedule. After every epoch it decodes the validation inputs greedily and keeps the
# weights of the epoch with the best exact match: the checkpoint is chosen on validation.

# %%
model.train()
n_params = sum(p.numel() for p in model.parameters())
history = s2.train_seq2seq(
    model,
    (train_src, train_tgt),
    (val_src, val_tgt),
    vocab,
    epochs=sizes["epochs"],
    batch_size=sizes["batch"],
    lr=sizes["lr"],
    seed=0,
)
best_epoch = history.best_epoch + 1
dlbook.glue("n_params", f"{n_params:,}")
dlbook.glue("n_train", f"{len(train_src):,}")
dlbook.glue("train_minutes", history.seconds / 60)
dlbook.glue("best_epoch", best_epoch)
dlbook.glue("n_epochs", history.epochs)
print(
    f"{n_params:,} parameters; {history.seconds:.0f} s; chosen epoch {best_epoch} "
    f"of {history.epochs}"
)
history.plot()
plt.show()

# %% [markdown]
# **Figure 19.1.** Training and validation cross-entropy per target character (left axis, log
# scale) and the validation exact match of greedy decoding (right axis) after each epoch; the
# dotted line marks the epoch whose weights are kept.
#
# The model has {glue:text}`n_params` parameters and trained in
# {glue:text}`train_minutes:.1f` minutes on the machine printed at the top, the greedy decoding
# of the validation split after every epoch included; the kept weights are those of epoch
# {glue:text}`best_epoch` of {glue:text}`n_epochs`.
#
# ## 19.7 Decoding: greedy and beam search
#
# **Greedy** decoding writes the most probable next character at every step. **Beam search**
# {cite}`sutskever2014sequence` keeps the $k$ prefixes with the highest total log-probability
# $\sum_t \log p(y_t\mid y_{<t}, x)$, extends each by every character, and keeps the best $k$
# again. Sutskever et al. move a hypothesis that writes `<eos>` out of the beam into a set of
# finished ones; `dlbook.seq2seq.beam_decode` keeps it in the beam instead, with its score
# frozen, so it competes with the running prefixes until the end (simpler to batch, and it
# never holds more than $k$ hypotheses). With $k=1$ beam search is greedy decoding (checked
# below); the unit tests also check that a beam wide enough to hold every candidate returns
# the most probable sequence, found by enumeration, on tiny models for some of which greedy
# decoding misses it.
#
# Which $k$ to use is a setting, so validation decides it. A beam of $k$ costs $k$ times the
# decoder work, so a wider beam is chosen only if it is measurably better than greedy decoding
# (paired bootstrap interval and McNemar's test, `dlbook.stats.compare`):

# %%
val_targets = [e.target for e in splits["validation"]]
val_correct, val_preds = {}, {}
for k in sizes["beams"]:
    method = "greedy" if k == 1 else "beam"
    val_preds[k] = s2.translate(
        model, vocab, val_src.to(device), max_len=max_target, method=method, beam_size=k
    )
    val_correct[k] = s2.exact_match(val_preds[k], val_targets)  # (n_val,) bool
    print(f"beam size {k}: validation exact match {val_correct[k].mean():.4f}")
beam1 = s2.beam_decode(model, val_src[:256].to(device), max_target, beam_size=1)
greedy = s2.greedy_decode(model, val_src[:256].to(device), max_target)
assert torch.equal(beam1, greedy)  # k = 1 is greedy
# the best beam on validation, kept only if measurably better than greedy (k = 1)
top_k = max(sizes["beams"], key=lambda k: (val_correct[k].mean(), -k))
best_k = top_k if stats.compare(val_correct[top_k], val_correct[1]).measurable else 1
widest = max(sizes["beams"])
cmp_beam = stats.compare(val_correct[widest], val_correct[1])  # beam - greedy
n_differ = sum(a != b for a, b in zip(val_preds[widest], val_preds[1], strict=True))
if cmp_beam.only_a + cmp_beam.only_b == 0:  # a zero-width bootstrap interval
    beam_finding = (
        "the two are right on exactly the same inputs, so these"
        f" {len(val_targets)} cannot tell them apart"
    )
else:
    beam_finding = cmp_beam.verdict(f"a beam of {widest}", "greedy decoding")
dlbook.glue("best_k", best_k)
dlbook.glue("widest", widest)
dlbook.glue("val_greedy", val_correct[1].mean())
dlbook.glue("val_widest", val_correct[widest].mean())
dlbook.glue("beam_finding", beam_finding)
dlbook.glue("n_differ", n_differ)
dlbook.glue("n_val", len(val_targets))
print(f"chosen: beam size {best_k}; beam {widest} against greedy: {beam_finding}")

# %% [markdown]
# On validation, greedy decoding gets {glue:text}`val_greedy:.4f` exact and a beam of
# {glue:text}`widest` gets {glue:text}`val_widest:.4f`; the beam writes a different output from
# greedy decoding for {glue:text}`n_differ` of the {glue:text}`n_val` inputs, and
# {glue:text}`beam_finding`. The chosen setting is a beam of {glue:text}`best_k` (1 is greedy
# decoding).
#
# ### The test split, read once

# %%
test_targets = [e.target for e in splits["test"]]
method = "greedy" if best_k == 1 else "beam"
test_preds = s2.translate(
    model,
    vocab,
    test_src.to(device),
    max_len=max_target,
    method=method,
    beam_size=best_k,
)
test_correct = s2.exact_match(test_preds, test_targets)  # (n_test,) bool
n_right = int(test_correct.sum())
dlbook.headline(
    "test_exact", test_correct.mean(), profile=profile, at_least=0.98, fmt="{:.4f}"
)
ci = binomtest(n_right, len(test_correct)).proportion_ci(method="wilson")  # 95 %
dlbook.glue("test_low", ci.low)
dlbook.glue("test_high", ci.high)
dlbook.glue("n_test", len(test_correct))
dlbook.glue("n_test_wrong", len(test_correct) - n_right)
print(
    f"test exact match {test_correct.mean():.4f} ({n_right} of {len(test_correct)});"
    f" 95 % Wilson interval [{ci.low:.4f}, {ci.high:.4f}]"
)

# %% [markdown]
# On {glue:text}`n_test` test inputs, whose dates the model never saw in any format, it writes
# the exact ISO date for a share of {glue:text}`test_exact` ({glue:text}`n_test_wrong` wrong);
# the 95 % Wilson interval {cite}`wilson1927probable` of chapter 11 for that share is
# [{glue:text}`test_low:.4f`, {glue:text}`test_high:.4f`]. Per format, and the mistakes
# themselves:

# %%
per_format = Counter()
wrong_format = Counter()
for ex, ok in zip(splits["test"], test_correct, strict=True):
    per_format[ex.fmt] += 1
    wrong_format[ex.fmt] += int(not ok)
for fmt in s2.DATE_FORMATS:
    n = per_format[fmt]
    print(f"{fmt:>22}: {n - wrong_format[fmt]:4d} of {n:4d} right")
mistakes = [
    (e.text, p, e.target)
    for e, p, ok in zip(splits["test"], test_preds, test_correct, strict=True)
    if not ok
]
for text, pred, target in mistakes[:8]:
    print(f"{text!r:>32} -> {pred!r} (true {target!r})")
if not mistakes:
    print("no mistakes on the test split")

# %% [markdown]
# ## 19.8 What cross-attention looks at
#
# The decoder's cross-attention weights say, for each character it writes, where in the source
# it looks. For the date of the first validation example, written in three formats, the weights
# of each decoder layer (mean over its four heads) for the ten target characters, the decoder
# reading the true prefix as in training:


# %%
def cross_maps(model, examples):
    """Per-layer cross-attention (mean over heads) for teacher-forced targets."""
    src, tgt = s2.encode_examples(examples, vocab)
    src, tgt = src.to(device), tgt.to(device)
    with torch.no_grad():
        memory, pad = model.encode(src)
        _, cross = model.decode(tgt[:, :-1], memory, pad, need_weights=True)
    return [w.mean(dim=1).cpu() for w in cross]  # n_dec x (N, T, S)


shown_date = splits["validation"][0].date
assert shown_date not in dates["train"]  # a date the model never trained on
shown = [
    s2.format_date(shown_date, f)
    for f in ("wday, month dth yyyy", "dd/mm/yy", "yyyy.mm.dd")
]
maps = cross_maps(model, shown)
fig, axes = plt.subplots(len(maps), len(shown), figsize=(13, 5.5), squeeze=False)
for j, ex in enumerate(shown):
    for i, w in enumerate(maps):
        ax = axes[i, j]
        ax.imshow(w[j, :10, : len(ex.text)], cmap="Greys", vmin=0, vmax=1)
        ax.set_xticks(range(len(ex.text)), list(ex.text), fontsize=7)
        ax.set_yticks(range(10), list(ex.target), fontsize=7)
        ax.set_title(f"layer {i + 1}: {ex.text}", fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# **Figure 19.2.** Cross-attention weights of the trained model (rows: the target character
# being predicted from the true prefix; columns: source characters; darker = more weight; mean
# over heads), for one validation date in three formats; one row of panels per decoder layer.
#
# The maps suggest that the model looks up the field it is writing, wherever the format puts
# it. Measured over validation inputs: for each target character of the year (`YYYY`), the month
# (`MM`) and the day (`DD`), the share of the attention that falls on the source characters of
# that field, against the share a uniform spread over the source would give.


# %%
def field_mass(model, examples):
    """Mean attention share on the source span of the field being written, per layer."""
    targets = {"year": range(0, 4), "month": range(5, 7), "day": range(8, 10)}
    maps = cross_maps(model, examples)
    out = {}
    for layer, w in enumerate(maps, start=1):
        for field, rows in targets.items():
            on_span, uniform = [], []
            for n, ex in enumerate(examples):
                a, b = ex.spans[field]
                on_span.append(w[n, list(rows), a:b].sum(-1).mean().item())
                uniform.append((b - a) / len(ex.text))
            out[layer, field] = (np.mean(on_span), np.mean(uniform))
    return out


mass = field_mass(model, splits["validation"][: sizes["n_attn"]])
for (layer, field), (share, uniform) in mass.items():
    print(
        f"layer {layer}, writing the {field:>5}: {share:.2f} of the attention on its "
        f"characters (uniform: {uniform:.2f})"
    )
fields = ("year", "month", "day")
layers = sorted({layer for layer, _ in mass})
best = {f: max(mass[layer, f][0] for layer in layers) for f in fields}  # best layer
uniform_share = {f: mass[layers[0], f][1] for f in fields}  # the same for every layer
lowest_best = min(best.values())
best_ratio = min(best[f] / uniform_share[f] for f in fields)
dlbook.glue("attn_low", min(share for share, _ in mass.values()))  # any layer, field
dlbook.glue("attn_best_low", lowest_best)
dlbook.glue("attn_uniform", max(uniform_share.values()))
dlbook.glue("attn_ratio", best_ratio)
dlbook.glue("n_attn", min(sizes["n_attn"], len(splits["validation"])))
if profile == "full":  # the claim the text makes: for every field, a layer that aligns
    assert lowest_best > 0.5 and best_ratio > 1.5

# %% [markdown]
# Over {glue:text}`n_attn` validation inputs, for each of the year, the month and the day, a
# decoder layer puts at least {glue:text}`attn_best_low:.2f` of its attention on the characters
# of the field it is writing, where a uniform spread would put at most
# {glue:text}`attn_uniform:.2f` there: at least {glue:text}`attn_ratio:.1f` times the uniform
# share, field by field (the lowest share of any layer for any field is
# {glue:text}`attn_low:.2f`). Averaged over formats that write the fields in different orders,
# cross-attention has learned an alignment between each target field and its source
# characters, which is what attention was first introduced to do for
# translation {cite}`bahdanau2015neural`.
#
# ## 19.9 Where T5 and BART fit
#
# The model above learned everything from {glue:text}`n_train` examples of one narrow task.
# Pretrained encoder-decoders start from a large text corpus instead and are then fine-tuned:
#
# - **T5** casts every task (translation, summarisation, classification, question answering)
#   as text in, text out, and pretrains an encoder-decoder Transformer by reconstructing spans
#   of text that were blanked out of the input {cite}`raffel2020exploring`.
# - **BART** pretrains an encoder-decoder as a denoising autoencoder: corrupt a text (for example
#   mask spans or shuffle sentences), encode it with a bidirectional encoder, and regenerate the
#   original with an autoregressive decoder {cite}`lewis2020bart`.
#
# Both have the shape of this chapter's model: an encoder over the whole input, a causal
# decoder, and cross-attention in every decoder layer. Tiny randomly initialised copies, built
# from their `transformers` configurations (no weights are downloaded), show the sub-layers of
# one decoder layer:
#
# %%
torch.manual_seed(0)
t5 = AutoModelForSeq2SeqLM.from_config(
    T5Config(
        d_model=16,
        d_ff=32,
        d_kv=4,
        num_heads=2,
        num_layers=1,
        vocab_size=32,
        decoder_start_token_id=0,
    )
).eval()
bart = AutoModelForSeq2SeqLM.from_config(
    BartConfig(
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        vocab_size=32,
    )
)
t5_parts = [type(part).__name__ for part in t5.decoder.block[0].layer]
bart_parts = [name for name, _ in bart.model.decoder.layers[0].named_children()]
print(type(t5).__name__, t5_parts)
print(type(bart).__name__, bart_parts)
assert t5_parts == ["T5LayerSelfAttention", "T5LayerCrossAttention", "T5LayerFF"]
assert {
    "self_attn",
    "encoder_attn",
    "fc1",
    "fc2",
    "self_attn_layer_norm",
    "encoder_attn_layer_norm",
    "final_layer_norm",
} <= set(bart_parts)

# %% [markdown]
# A T5 decoder layer is self-attention, cross-attention and a feed-forward layer; BART's has
# `self_attn`, `encoder_attn` (its cross-attention) and `fc1`/`fc2`, each sub-layer with its
# LayerNorm. Their `generate` method decodes greedily or with a beam (`num_beams`); greedy
# `generate` on the tiny T5 writes what the argmax loop of this chapter writes:

# %%
src_ids = torch.tensor([[5, 6, 7, 8, 1]])  # (1, S): token ids, 1 is T5's </s>
with torch.no_grad():
    by_generate = t5.generate(src_ids, max_new_tokens=6, do_sample=False, num_beams=1)
    by_beam = t5.generate(src_ids, max_new_tokens=6, do_sample=False, num_beams=3)
    prefix = torch.tensor([[t5.config.decoder_start_token_id]])  # (1, 1)
    for _ in range(6):  # greedy by hand: the most probable next token, appended
        logits = t5(input_ids=src_ids, decoder_input_ids=prefix).logits  # (1, t, V)
        prefix = torch.cat([prefix, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
assert torch.equal(by_generate, prefix[:, : by_generate.shape[1]])
print(
    "generate, greedy:",
    by_generate.tolist(),
    "== by hand;",
    "num_beams=3:",
    by_beam.tolist(),
)

# %% [markdown]
# **No pretrained encoder-decoder is used in this book** because none is among its offline
# assets, which all come from PyPI packages: its pretrained models are a BERT-style encoder
# (chapter 8) and a Llama-style decoder (chapter 17). With network access,
# `AutoModelForSeq2SeqLM.from_pretrained("google-t5/t5-small")` loads a pretrained T5.
#
# ## Summary
#
# - Cross-attention {eq}`eq-ch19-cross` is attention with queries from the decoder and keys and
#   values from the encoder's output; padded source positions get zero weight.
# - A decoder layer is masked self-attention, cross-attention and a feed-forward network, each
#   with a residual and a LayerNorm {eq}`eq-ch19-decoder`; ours matches
#   `nn.TransformerDecoderLayer` to {glue:text}`dec_diff:.1e` (float64), gradients included, and
#   the stacked encoder-decoder matches `nn.Transformer` to {glue:text}`tf_diff:.1e`.
# - Teacher forcing {eq}`eq-ch19-tf` trains every target position in one pass; the causal mask
#   makes its logits equal to those of step-by-step generation (checked).
# - Trained from scratch on dates in {glue:text}`n_formats` formats, with splits that share no
#   date, a {glue:text}`n_params`-parameter model writes the exact ISO date for
#   {glue:text}`test_exact` of the test inputs; on validation, beam search against greedy
#   decoding: {glue:text}`beam_finding`.
# - For each of year, month and day, a decoder layer puts at least
#   {glue:text}`attn_best_low:.2f` of its cross-attention on the source characters of the field
#   it is writing (uniform: at most {glue:text}`attn_uniform:.2f`).
# - T5 and BART are pretrained encoder-decoders of this shape; none ships offline here.
#
# ## Exercises

# %% [markdown]
# :::{exercise}
# :label: ch19-ex-cross
# Write `my_cross_attention(x, memory, Wq, Wk, Wv, memory_pad)`: one head of
# {eq}`eq-ch19-cross` with `x` `(B, T, d)` from the decoder, `memory` `(B, S, d)` from the
# encoder, weights in the `nn.Linear` layout (`Wq` `(d_k, d)`, so $Q = x W_q^\top$) and
# `memory_pad` `(B, S)` bool with `True` at padding. Return `(B, T, d_v)`.
# :::


# %%
def my_cross_attention(x, memory, Wq, Wk, Wv, memory_pad):
    raise NotImplementedError  # your code here


dlbook.exercises.check("ch19.cross_attention", my_cross_attention)

# %% [markdown]
# ```{solution-start} ch19-ex-cross
# :class: dropdown
# ```


# %% tags=["solution"]
def my_cross_attention(x, memory, Wq, Wk, Wv, memory_pad):
    q = x @ Wq.T  # (B, T, d_k): queries from the decoder
    k, v = memory @ Wk.T, memory @ Wv.T  # (B, S, d_k), (B, S, d_v): from the source
    logits = q @ k.transpose(1, 2) / math.sqrt(q.shape[-1])  # (B, T, S)
    logits = logits.masked_fill(memory_pad[:, None, :], float("-inf"))
    return torch.softmax(logits, dim=-1) @ v  # (B, T, d_v)


assert dlbook.exercises.check("ch19.cross_attention", my_cross_attention)

# %% [markdown]
# ```{solution-end}
# ```

# %% [markdown]
# :::{exercise}
# :label: ch19-ex-tf
# Write `my_teacher_forcing_loss(logits, tgt)` for {eq}`eq-ch19-tf`: `tgt` `(B, L)` holds
# `<bos> y ... <eos>` right-padded with 0, and `logits` `(B, L - 1, V)` were computed from the
# decoder input `tgt[:, :-1]`. Return the mean cross-entropy over the real target tokens. Which
# tensor holds the labels, and which tokens must not count?
# :::


# %%
def my_teacher_forcing_loss(logits, tgt):
    raise NotImplementedError  # your code here


dlbook.exercises.check("ch19.teacher_forcing_loss", my_teacher_forcing_loss)

# %% [markdown]
# ```{solution-start} ch19-ex-tf
# :class: dropdown
# ```
# The label of position $t$ is the next character, `tgt[:, t + 1]`; padding must not count, and
# the mean is over tokens (not a mean of per-sequence means):


# %% tags=["solution"]
def my_teacher_forcing_loss(logits, tgt):
    labels = tgt[:, 1:]  # (B, L - 1): shifted left by one
    flat = logits.reshape(-1, logits.shape[-1])  # (B (L - 1), V)
    return F.cross_entropy(flat, labels.reshape(-1), ignore_index=0)


assert dlbook.exercises.check("ch19.teacher_forcing_loss", my_teacher_forcing_loss)

# %% [markdown]
# ```{solution-end}
# ```

# %% [markdown]
# :::{exercise}
# :label: ch19-ex-beam
# Is beam search worth its cost on this task? Decode the **validation** inputs with greedy
# decoding and with a beam of 8 (`s2.translate(..., method="beam", beam_size=8)`), compute the
# exact-match flags of each with `s2.exact_match`, and state a verdict: `"beam"`, `"greedy"` or
# `"no measurable difference"`. Check it with
# `dlbook.exercises.ch19.check_beam_verdict(correct_greedy, correct_beam, verdict)`, which
# compares it with what a paired bootstrap interval and McNemar's test support. Why is the
# test split not used here?
# :::
#
# ```{solution-start} ch19-ex-beam
# :class: dropdown
# ```

# %% tags=["solution"]
val_in = val_src.to(device)
correct_greedy = val_correct[1]  # computed above
beam8 = s2.translate(
    model, vocab, val_in, max_len=max_target, method="beam", beam_size=8
)
correct_beam = s2.exact_match(beam8, val_targets)
verdict = dlbook.exercises.ch19.beam_verdict(correct_greedy, correct_beam)
assert dlbook.exercises.ch19.check_beam_verdict(correct_greedy, correct_beam, verdict)
dlbook.glue("ex_beam_verdict", verdict)

# %% [markdown]
# The verdict here: {glue:text}`ex_beam_verdict`. The test split is not used because choosing a
# decoding setting is a choice, and a choice made on the test split makes its score optimistic.
#
# ```{solution-end}
# ```

# %% [markdown]
# :::{exercise}
# :label: ch19-ex-unseen
# The training formats never include ISO 8601 itself. What does the model write when the input
# is already `YYYY-MM-DD`? Feed it the validation dates in that form and measure the exact
# match, and check your number with
# `dlbook.exercises.ch19.check_exact_match(model, vocab, inputs, targets, your_rate)`; then
# look at a few of its outputs. What does the answer say about what "learning the task" meant
# for this model?
# :::
#
# ```{solution-start} ch19-ex-unseen
# :class: dropdown
# ```


# %% tags=["solution"]
def is_iso_date(text):
    """True for a real calendar date written YYYY-MM-DD."""
    try:
        return dt.date.fromisoformat(text).isoformat() == text
    except ValueError:
        return False


iso_inputs = [e.target for e in splits["validation"]]
iso_src = torch.nn.utils.rnn.pad_sequence(
    [torch.tensor(vocab.encode(t)) for t in iso_inputs], batch_first=True
)  # (N, 10)
iso_preds = s2.translate(model, vocab, iso_src.to(device), max_len=max_target)
iso_exact = s2.exact_match(iso_preds, iso_inputs).mean()
assert dlbook.exercises.ch19.check_exact_match(
    model, vocab, iso_inputs, iso_inputs, iso_exact
)
iso_valid = np.mean([is_iso_date(p) for p in iso_preds])  # any real date, right or not
dlbook.glue("iso_exact", iso_exact)
dlbook.glue("iso_valid", iso_valid)
print(
    f"ISO inputs copied exactly: {iso_exact:.3f};",
    f"outputs that are well-formed ISO dates: {iso_valid:.3f}",
)
print(list(zip(iso_inputs[:4], iso_preds[:4], strict=True)))

# %% [markdown]
# The model copies {glue:text}`iso_exact:.3f` of the ISO inputs exactly, and
# {glue:text}`iso_valid:.3f` of its outputs are well-formed ISO dates. Its test score covers
# held-out dates in the formats it was trained on; a format outside them, even the target
# format itself, is a separate question, answered only by measuring it.
#
# ```{solution-end}
# ```

# %% [markdown]
# ## Further reading
#
# - Vaswani et al. introduced the Transformer as an encoder-decoder for translation
#   {cite}`vaswani2017attention`; Sutskever et al. the neural sequence-to-sequence model with
#   beam search {cite}`sutskever2014sequence`; Bahdanau et al. attention as a learned alignment
#   between target and source {cite}`bahdanau2015neural`.
# - Raffel et al. describe T5 and compare pretraining objectives and architectures at scale
#   {cite}`raffel2020exploring`; Lewis et al. describe BART {cite}`lewis2020bart`.
