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
# (ch12)=
# # 12. Quantization
#
# Part IV asks how small and how fast the classifier of chapter 9 can become before it gets
# worse. The first answer changes no weight's meaning, only how each one is written down: with 8
# bits instead of 32. This chapter starts from the number formats themselves, derives the affine
# map from real numbers to 8-bit integers, checks every formula against PyTorch's own quantized
# tensors, and then quantizes the whole fine-tuned MiniLM classifier and measures what it gains
# in size and speed and what it loses in accuracy.
#
# By the end of this chapter you can
#
# 1. read the range and precision of fp32, bf16, fp16 and int8 from `torch.finfo` / `torch.iinfo`
#    and predict the rounding error a weight suffers in each;
# 2. compute the scale and zero point of symmetric and asymmetric, per-tensor and per-channel
#    quantization, quantize and dequantize a weight matrix, and bound the error;
# 3. explain how a dynamically quantized linear layer multiplies in integers, and reproduce its
#    output to float rounding;
# 4. quantize a BERT classifier (int8 linear layers, weight-only int8 embeddings) and measure size,
#    latency and accuracy with the book's measurement helpers, `dlbook.measure`, which chapters 13
#    to 15 use unchanged;
# 5. calibrate static quantization with observers, train with quantization in the loop, and run
#    the classifier in int8 under ONNX Runtime, each measured under the same protocol.

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
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import display
from torch import nn

import dlbook
import dlbook.exercises
from dlbook import assets, finetune, measure, quantize, stats
from dlbook import ort as dlort
from dlbook.train import count_parameters

device = dlbook.setup(seed=0)

# %% tags=["parameters", "hide-input"]
profile = os.environ.get("DLBOOK_PROFILE", "full")

# %% tags=["hide-input"]
sizes = dlbook.by_profile(
    profile,
    smoke=dict(
        n_test=32,
        max_length=128,
        batch_sizes=(1, 4),
        rounds={1: 2, 4: 2},
        warmup=0,
        eval_batch=32,
        n_scatter=2_000,
        n_emb_rows=2_000,
        n_val=32,
        calib_bs=8,
        calib_counts=(1, 2),
        n_probe=2,
        qat_steps=2,
        qat_bs=8,
        qat_lr=1e-5,
    ),
    full=dict(
        n_test=None,  # test snippets scored (12.9); None: all 1,500
        max_length=128,  # tokens kept per snippet
        batch_sizes=(1, 32),  # batch sizes whose latency is timed (12.9)
        rounds={1: 40, 32: 15},  # timed forward passes per model, for each batch size
        warmup=2,  # untimed forward passes per model and batch size, before timing
        eval_batch=64,  # snippets per batch when scoring accuracy
        n_scatter=5_000,  # query weights drawn in the rounding-error scatter (12.1)
        n_emb_rows=None,  # word-embedding rows rounded (12.1, 12.2); None: all 30,522
        n_val=None,  # validation snippets that score each choice; None: all 1,000
        calib_bs=32,  # training snippets per calibration batch (12.6)
        calib_counts=(1, 4, 16),  # numbers of calibration batches compared (12.6)
        n_probe=8,  # batches of 32 training snippets probing the activations (12.2)
        qat_steps=60,  # optimizer steps of quantization-aware training (12.7)
        qat_bs=32,  # training snippets per step of quantization-aware training
        qat_lr=1e-5,  # learning rate of quantization-aware training
    ),
)
sizes

# %% [markdown]
# The starting point is the classifier chapter 9 fine-tuned, loaded from the book's cache
# (trained there on the first call). Integer kernels for dynamic quantization exist for the CPU,
# so everything in this chapter that is timed runs on the CPU, whatever `device` is.

# %%
model, tokenizer, info = finetune.sentiment_classifier(profile)
fp32 = model.cpu().eval()
n_params = count_parameters(fp32, trainable_only=False)
n_embed = sum(p.numel() for p in fp32.bert.embeddings.parameters())
n_word = fp32.bert.embeddings.word_embeddings.weight.numel()
n_linear = sum(
    m.weight.numel() + m.bias.numel()
    for m in fp32.modules()
    if isinstance(m, nn.Linear)
)
dlbook.glue("ch12_n_params", n_params)
dlbook.glue("ch12_word_share", n_word / n_params)
dlbook.glue("ch12_linear_share", n_linear / n_params)
print(
    f"{n_params:,} parameters: word embeddings {n_word:,} "
    f"({n_word / n_params:.1%}), all embeddings {n_embed:,}, "
    f"linear layers {n_linear:,} ({n_linear / n_params:.1%}), "
    f"the rest (LayerNorms) {n_params - n_embed - n_linear:,}"
)

# %% [markdown]
# Of the {glue:text}`ch12_n_params:,` parameters, {glue:text}`ch12_word_share:.1%` sit in one
# table, the word embeddings (30,522 rows of 384 numbers), and {glue:text}`ch12_linear_share:.1%`
# in the linear layers. The table is looked up, never multiplied: it costs memory and disk, not
# time. The linear layers cost the time. That split will decide which technique goes where.
#
# ## 12.1 Number formats: range and precision
#
# A floating-point number with $m$ mantissa bits and exponent $e$ stands for
# $(1 + f)\, 2^{e}$ with $f$ one of $2^m$ equally spaced fractions in $[0, 1)$. Between two
# powers of two the numbers are equally spaced, $2^{e-m}$ apart, so rounding to the nearest one
# makes a **relative** error of at most half the machine epsilon $\varepsilon = 2^{-m}$, whatever
# the size of the number, as long as it lies between the smallest normal number $2^{e_{\min}}$ and
# the largest, $(2 - 2^{-m})\, 2^{e_{\max}}$:
#
# $$
# \varepsilon = 2^{-m}, \qquad x_{\max} = (2 - 2^{-m})\, 2^{e_{\max}}, \qquad
# \frac{|\operatorname{fl}(x) - x|}{|x|} \le \frac{\varepsilon}{2} .
# $$ (eq-ch12-float)
#
# The three float formats of deep learning split their bits differently: fp32 has $m = 23$ and
# $e_{\max} = 127$, fp16 ("half") has $m = 10$ and $e_{\max} = 15$, bf16 ("brain float") keeps
# fp32's 8 exponent bits ($e_{\max} = 127$) and has only $m = 7$ {cite}`kalamkar2019bfloat16`.
# int8 has no exponent at all: 256 integers, equally spaced, from $-128$ to $127$. The check of the
# two left-hand formulas against `torch.finfo`:

# %%
layout = {
    torch.float32: (23, 127, -126),
    torch.bfloat16: (7, 127, -126),
    torch.float16: (10, 15, -14),
}  # m, e_max, e_min
rows = []
for dtype, (m, e_max, e_min) in layout.items():
    fi = torch.finfo(dtype)
    assert (
        fi.eps == 2.0**-m
        and fi.max == (2 - 2.0**-m) * 2.0**e_max
        and fi.tiny == 2.0**e_min
    )
    rows.append(
        (
            str(dtype).removeprefix("torch."),
            fi.bits,
            f"{fi.max:.3g}",
            f"{fi.tiny:.3g}",
            f"{fi.eps:.3g}",
            fi.resolution,
        )
    )
ii = torch.iinfo(torch.int8)
rows.append(("int8", ii.bits, str(ii.max), str(ii.min), "1 (absolute)", 0))
print(
    f"{'format':9s} {'bits':>4s} {'max':>9s} {'tiny/min':>9s} {'eps':>13s} "
    f"{'decimal digits':>15s}"
)
for r in rows:
    print(f"{r[0]:9s} {r[1]:4d} {r[2]:>9s} {r[3]:>9s} {r[4]:>13s} {r[5]:>15}")

# %% [markdown]
# bf16 covers the same range as fp32 (up to about $3.4 \times 10^{38}$) with about two decimal
# digits; fp16 has about three but overflows at 65,504. For inference on weights of a
# trained model, whose magnitudes are far below both maxima, the digit count is what matters. Let us
# round the real weights of the classifier (the query projection of the first layer and the word
# embeddings) to each format and measure. For int8 we use the simplest scheme of the next section:
# one scale $s = \max|w| / 127$ for the whole matrix and $w \approx s \cdot \operatorname{round}(w / s)$.

# %%
W_q = fp32.bert.encoder.layer[0].attention.self.query.weight.detach()  # (384, 384)
W_emb = fp32.bert.embeddings.word_embeddings.weight.detach()[
    : sizes["n_emb_rows"]
]  # (30522, 384) in full


def round_trip(w, dtype):
    """w written in dtype and read back as float32.

    int8: one symmetric scale for the whole tensor.
    """
    if dtype is torch.int8:
        s = w.abs().max() / 127
        return torch.clamp(torch.round(w / s), -128, 127) * s
    return w.to(dtype).float()


errors = {}
for name, w in {"query (layer 0)": W_q, "word embeddings": W_emb}.items():
    for dtype in (torch.bfloat16, torch.float16, torch.int8):
        rel = ((round_trip(w, dtype) - w).abs() / w.abs())[
            w.abs() > torch.finfo(torch.float16).tiny
        ]  # normal numbers
        errors[name, str(dtype).removeprefix("torch.")] = rel
        if (
            dtype is not torch.int8
        ):  # Eq. (eq-ch12-float): the bound holds for every normal weight
            assert rel.max() <= torch.finfo(dtype).eps / 2
        print(
            f"{name:16s} {str(dtype):15s} median relative error {rel.median():.2e}, "
            f"max {rel.max():.2e}"
        )
tiny16 = torch.finfo(torch.float16).tiny  # fp16's smallest normal number, 6.1e-05
n_sub = int((W_q.abs() < tiny16).sum())  # fp16 subnormals: fewer significant bits
print(f"query weights below fp16's smallest normal number: {n_sub} of {W_q.numel():,}")
dlbook.glue("ch12_n_sub", n_sub)
dlbook.glue("ch12_bf16_med", float(errors["query (layer 0)", "bfloat16"].median()))
dlbook.glue("ch12_int8_med", float(errors["query (layer 0)", "int8"].median()))

# %% [markdown]
# Figure 12.1 shows, for a random sample of the query weights, the relative error against the
# weight's magnitude. The two float formats keep their relative error below $\varepsilon/2$ (the
# dashed lines) at every magnitude down to fp16's smallest normal number, $6.1 \times 10^{-5}$;
# below it ({glue:text}`ch12_n_sub` of the query's weights) fp16 stores subnormal numbers with
# fewer significant bits, and their relative error exceeds the bound. int8 makes an
# **absolute** error of at most $s/2$ whatever the weight's size, which is a large relative
# error for the many small weights and a tiny one for the few large weights.

# %%
g = torch.Generator().manual_seed(0)
pick = torch.randperm(W_q.numel(), generator=g)[: sizes["n_scatter"]]
w_s = W_q.flatten()[pick]
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
for dtype, color in [(torch.bfloat16, "C0"), (torch.float16, "C1"), (torch.int8, "C3")]:
    rel = ((round_trip(W_q, dtype).flatten()[pick] - w_s).abs() / w_s.abs()).clamp_min(
        1e-9
    )
    ax1.scatter(
        w_s.abs(),
        rel,
        s=3,
        alpha=0.4,
        color=color,
        label=str(dtype).removeprefix("torch."),
    )
    if dtype is not torch.int8:
        ax1.axhline(torch.finfo(dtype).eps / 2, color=color, ls="--", lw=1)
ax1.set_xscale("log")
ax1.set_yscale("log")
ax1.set_ylim(1e-6, 10)
ax1.set_xlabel("|weight|")
ax1.set_ylabel("relative rounding error")
ax1.set_title("Query weights of layer 0 in three formats")
ax1.legend(markerscale=4, fontsize=8)
ax2.hist(W_q.flatten().numpy(), bins=200, color="C2")
ax2.set_yscale("log")
ax2.set_xlabel("weight value")
ax2.set_title(
    f"Their distribution: max |w| = {W_q.abs().max():.3f}, std {W_q.std():.3f}"
)
plt.tight_layout()
plt.show()

# %% [markdown]
# **Figure 12.1.** Left: the relative rounding error of a random sample of layer 0's query
# weights against their magnitude, in bfloat16, float16 and int8 (one scale for the tensor);
# the dashed lines mark $\varepsilon/2$ of the two float formats. Right: the histogram of all
# the query weights, with a logarithmic count axis.
#
# The median relative error of the query weights is {glue:text}`ch12_bf16_med:.1e` in bf16 and
# {glue:text}`ch12_int8_med:.1e` in int8: int8 with one scale is much coarser than any float
# format, because a few large weights (the histogram's long tails) set the step for all of them.
# The next section is about choosing that step well.
#
# ## 12.2 Affine quantization
#
# Quantization maps a real interval $[\alpha, \beta]$ onto the integers $q_{\min}, \dots,
# q_{\max}$ ($-128 \dots 127$ for int8, $0 \dots 255$ for uint8) with a **scale** $s$ (the real
# step between two neighbouring integers) and a **zero point** $z$ (the integer that stands for
# the real 0) {cite}`jacob2018quantization`:
#
# $$
# q = \operatorname{clamp}\!\left(\operatorname{round}\!\left(\frac{x}{s}\right) + z,\ q_{\min},\ q_{\max}\right),
# \qquad \hat x = s\,(q - z) .
# $$ (eq-ch12-affine)
#
# `round` rounds half to even, like `torch.round`. Inside the interval the error is at most half
# a step, $|\hat x - x| \le s/2$; outside it, clamping cuts the value off. There are two usual
# choices of $s$ and $z$. **Asymmetric** (min/max) quantization takes the data's range widened to
# contain 0, $\alpha = \min(x_{\min}, 0)$ and $\beta = \max(x_{\max}, 0)$, and sets
#
# $$
# s = \frac{\beta - \alpha}{q_{\max} - q_{\min}}, \qquad
# z = \operatorname{clamp}\!\left(q_{\min} - \operatorname{round}\!\left(\frac{\alpha}{s}\right),\ q_{\min},\ q_{\max}\right).
# $$ (eq-ch12-asym)
#
# **Symmetric** (abs-max) quantization to int8 fixes the zero point at 0:
#
# $$
# s = \frac{\max_i |x_i|}{127}, \qquad z = 0 .
# $$ (eq-ch12-sym)
#
# Containing 0 matters: a zero (a padding position, a ReLU output, a pruned weight) must come
# back as exactly 0, and with $z$ an integer it does, $\hat 0 = s (z - z) = 0$. Symmetric
# quantization wastes the code $-128$ and half the codes when the data are one-sided, but with
# $z = 0$ the integer products need no correction terms, which makes it the usual choice for
# weights. Either choice can be made **per tensor** (one $s, z$ for the matrix) or **per channel**
# (one pair per output row, so a large weight in one row no longer coarsens the others).
#
# Step by step, on the query weights of layer 0, per tensor first:


# %%
def my_qparams(x, symmetric, q_min, q_max):
    """Per-tensor scale (float32, 0-d) and zero point (int).

    Eq. (eq-ch12-asym) or (eq-ch12-sym).
    """
    lo, hi = x.min().clamp(max=0.0), x.max().clamp(min=0.0)
    if symmetric:
        return torch.maximum(-lo, hi) / q_max, 0
    s = (hi - lo) / (q_max - q_min)
    return s, int(torch.clamp(q_min - torch.round(lo / s), q_min, q_max))


def my_quantize(x, s, z, q_min, q_max, dtype):
    """Eq. (eq-ch12-affine), left.

    x / s is computed as x * (1 / s) in float32, like PyTorch's kernels.
    """
    return torch.clamp(torch.round(x * (1 / s)) + z, q_min, q_max).to(dtype)


def my_dequantize(q, s, z):
    return s * (q.float() - z)  # Eq. (eq-ch12-affine), right


s_sym, z_sym = my_qparams(W_q, True, -128, 127)
s_asym, z_asym = my_qparams(W_q, False, 0, 255)
q_sym = my_quantize(W_q, s_sym, z_sym, -128, 127, torch.int8)  # (384, 384) int8
q_asym = my_quantize(W_q, s_asym, z_asym, 0, 255, torch.uint8)  # (384, 384) uint8
print(
    f"symmetric int8:   s = {s_sym:.3e}, z = {z_sym}, "
    f"codes used {q_sym.min().item()}..{q_sym.max().item()}"
)
print(
    f"asymmetric uint8: s = {s_asym:.3e}, z = {z_asym}, "
    f"codes used {q_asym.min().item()}..{q_asym.max().item()}"
)

# %% [markdown]
# The **verification**: PyTorch's quantized tensors implement Eq. {eq}`eq-ch12-affine` given $s$
# and $z$. Their integer codes (`int_repr()`) and their dequantized values must equal ours, and so
# must `torch.fake_quantize_per_tensor_affine`, the function quantization-aware training uses,
# which returns $\hat x$ directly. Two details decide whether "equal" means bit for bit. First,
# PyTorch never divides by $s$: it multiplies by the float32 reciprocal $1/s$, and on a value close
# to a tie between two codes $x/s$ and $x \cdot (1/s)$ can round differently, so `my_quantize` does
# the same. Second, `torch.quantize_per_tensor`'s vectorised kernel adds $z$ *inside* one fused
# multiply-add, $\operatorname{round}(x \cdot (1/s) + z)$, with a single float32 rounding; when
# $z \ne 0$ that can move a near-tie by one code, where `fake_quantize` (and we) round first and
# add $z$ after. So for the asymmetric case we allow one code of difference and count how rare it
# is.
#
# On torch 2.13 the first quantized tensor a program creates also raises a `UserWarning`: the
# quantized dtypes `torch.qint8` / `torch.quint8` are deprecated in favour of plain `int8` tensors
# with separate scales (the way the `torchao` library stores them, and the way `dlbook.quantize`
# does). They remain the reference implementation, so we catch that one warning around the call
# and print it rather than let it pass unexplained.

# %%
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    ref_sym = torch.quantize_per_tensor(W_q, float(s_sym), z_sym, torch.qint8)
for w in caught:
    print(f"{w.category.__name__}: {str(w.message)[:160]}...")
ref_asym = torch.quantize_per_tensor(W_q, float(s_asym), z_asym, torch.quint8)
torch.testing.assert_close(
    q_sym, ref_sym.int_repr(), rtol=0, atol=0
)  # symmetric: bit for bit
torch.testing.assert_close(
    q_asym.int(), ref_asym.int_repr().int(), rtol=0, atol=1
)  # asymmetric: fma near-ties
n_off = int((q_asym != ref_asym.int_repr()).sum())
assert n_off <= 1e-3 * W_q.numel()
torch.testing.assert_close(my_dequantize(q_sym, s_sym, z_sym), ref_sym.dequantize())
torch.testing.assert_close(
    my_dequantize(q_asym, s_asym, z_asym),
    ref_asym.dequantize(),
    rtol=0,
    atol=float(s_asym) * 1.001,
)
for q, s, z, q_min, q_max in [
    (q_sym, s_sym, z_sym, -128, 127),
    (q_asym, s_asym, z_asym, 0, 255),
]:
    torch.testing.assert_close(
        my_dequantize(q, s, z),
        torch.fake_quantize_per_tensor_affine(W_q, float(s), z, q_min, q_max),
    )
err = (my_dequantize(q_sym, s_sym, z_sym) - W_q).abs().max().item()
assert err <= s_sym / 2 + 1e-7  # half a step
print(
    "symmetric codes == torch's; asymmetric codes == torch's but "
    f"{n_off} of {W_q.numel():,} (one code apart); "
    "dequantized == fake_quantize exactly; "
    f"max error {err:.2e} <= s/2 = {s_sym / 2:.2e}"
)

# %% [markdown]
# Per channel: one $s$ and $z$ per output row (dimension 0 of a linear layer's `weight`), the same
# formulas applied row by row. Checked against `torch.quantize_per_channel` and
# `torch.fake_quantize_per_channel_affine`:

# %%
absmax = W_q.abs().amax(dim=1)  # (384,): one range per output row
s_rows = absmax / 127  # (384,) Eq. (eq-ch12-sym) per row
q_rows = torch.clamp(torch.round(W_q * (1 / s_rows[:, None])), -128, 127).to(
    torch.int8
)  # (384, 384)
z_rows = torch.zeros(384, dtype=torch.int64)
ref_rows = torch.quantize_per_channel(W_q, s_rows.double(), z_rows, 0, torch.qint8)
torch.testing.assert_close(q_rows, ref_rows.int_repr(), rtol=0, atol=0)
torch.testing.assert_close(q_rows.float() * s_rows[:, None], ref_rows.dequantize())
torch.testing.assert_close(
    q_rows.float() * s_rows[:, None],
    torch.fake_quantize_per_channel_affine(W_q, s_rows, z_rows.int(), 0, -128, 127),
)
print(
    f"per-row scales from {s_rows.min():.2e} to {s_rows.max():.2e}; "
    "codes and values == torch's"
)

# %% [markdown]
# The same functions, packaged for the rest of Part IV in `dlbook.quantize`: `qparams` (every
# choice: symmetric or not, per tensor or along any `axis`, int8 or uint8), `quantize`,
# `dequantize` and `fake_quantize`. They return tensors, validate their inputs, and must agree
# with the step-by-step versions above:

# %%
dlbook.show(quantize.qparams)

# %%
for symmetric, dtype, (q_ours, s_ours, z_ours) in [
    (True, torch.int8, (q_sym, s_sym, z_sym)),
    (False, torch.uint8, (q_asym, s_asym, z_asym)),
]:
    s, z = quantize.qparams(W_q, symmetric=symmetric, dtype=dtype)
    torch.testing.assert_close(s, s_ours)
    assert z.item() == z_ours
    torch.testing.assert_close(
        quantize.quantize(W_q, s, z, dtype=dtype), q_ours, rtol=0, atol=0
    )
s, z = quantize.qparams(W_q, symmetric=True, axis=0)
torch.testing.assert_close(s, s_rows)
torch.testing.assert_close(
    quantize.dequantize(quantize.quantize(W_q, s, z, axis=0), s, z, axis=0),
    ref_rows.dequantize(),
)
print("dlbook.quantize == the step-by-step functions")

# %% [markdown]
# Which choice loses least? We fake-quantize three real matrices of the classifier in all four
# ways and report the **signal-to-quantization-noise ratio**,
# $\mathrm{SQNR} = 10 \log_{10} \bigl(\sum x^2 / \sum (\hat x - x)^2\bigr)$ in decibels (higher is
# better; every extra bit of precision adds about 6 dB).

# %%
matrices = {
    "query, layer 0": W_q,
    "FFN in, layer 3": fp32.bert.encoder.layer[
        3
    ].intermediate.dense.weight.detach(),  # (1536, 384)
    "word embeddings": W_emb,  # (30522, 384) in full
}
choices = {
    "sym / tensor": (True, None),
    "asym / tensor": (False, None),
    "sym / row": (True, 0),
    "asym / row": (False, 0),
}
sqnr = {}
for mname, w in matrices.items():
    for cname, (sym, axis) in choices.items():
        w_hat = quantize.fake_quantize(w, symmetric=sym, axis=axis, dtype=torch.int8)
        sqnr[mname, cname] = (
            10 * torch.log10(w.pow(2).sum() / (w_hat - w).pow(2).sum()).item()
        )
    print(
        f"{mname:16s} " + "  ".join(f"{c}: {sqnr[mname, c]:5.1f} dB" for c in choices)
    )
gain_row = {m: sqnr[m, "sym / row"] - sqnr[m, "sym / tensor"] for m in matrices}  # dB
gain_asym = [
    sqnr[m, f"asym / {g}"] - sqnr[m, f"sym / {g}"]
    for m in matrices
    for g in ("tensor", "row")
]
assert min(gain_row.values()) > 0  # per row wins on every matrix ...
assert max(gain_row, key=gain_row.get) == "word embeddings"  # ... most on the table
assert max(gain_asym) <= 20 * np.log10(2) + 0.01  # asymmetric: at most one bit, 6.02 dB
dlbook.glue("ch12_sqnr_emb_tensor", sqnr["word embeddings", "sym / tensor"])
dlbook.glue("ch12_sqnr_emb_row", sqnr["word embeddings", "sym / row"])
dlbook.glue("ch12_asym_gain", max(gain_asym))

# %%
fig, ax = plt.subplots(figsize=(8, 3.4))
width = 0.2
for i, cname in enumerate(choices):
    ax.bar(
        np.arange(len(matrices)) + (i - 1.5) * width,
        [sqnr[m, cname] for m in matrices],
        width,
        label=cname,
    )
ax.set_xticks(np.arange(len(matrices)), list(matrices))
ax.set_ylabel("SQNR (dB), higher is better")
ax.set_title("int8 quantization error of real weight matrices")
ax.legend(fontsize=8, ncol=4, loc="lower center")
plt.tight_layout()
plt.show()

# %% [markdown]
# **Figure 12.2.** Signal-to-quantization-noise ratio (dB, higher is better) of int8 weights
# for each matrix, with symmetric or asymmetric ranges and one scale per tensor or per row.
#
# Per-row scales win everywhere, most on the word embeddings: {glue:text}`ch12_sqnr_emb_tensor:.1f`
# dB with one scale for the table against {glue:text}`ch12_sqnr_emb_row:.1f` dB with one per row,
# because a handful of rows with large entries no longer set the step for thirty thousand others.
# Asymmetric helps little on weights, whose distributions are nearly centred on 0: it can gain at
# most one bit (6 dB, when the data are one-sided and it halves the step), and here it gained
# {glue:text}`ch12_asym_gain:.1f` dB at most (both checked above).
#
# Activations are a different story. After a GELU they are mostly positive, and in BERT a few
# dimensions of the hidden state carry values far larger than the rest, which makes per-tensor
# int8 activations lose accuracy {cite}`bondarenko2021understanding`; in much larger
# transformers LLM.int8() keeps such dimensions in 16 bits {cite}`dettmers2022llmint8`. Does
# MiniLM have them? `quantize.activation_outliers` hooks every linear layer and records, for
# each input feature, its largest |value| over real tokens of training snippets:

# %%
dlbook.show(quantize.activation_outliers)

# %%
train_raw = assets.rotten_tomatoes()["train"]


def snippet_batches(texts, n_batches, batch_size):
    """n_batches tokenised batches of consecutive texts, each padded to its longest."""
    return [
        dict(
            tokenizer(
                texts[i * batch_size : (i + 1) * batch_size],
                padding=True,
                truncation=True,
                max_length=sizes["max_length"],
                return_tensors="pt",
            )
        )
        for i in range(n_batches)
    ]


probe = snippet_batches(train_raw["text"], sizes["n_probe"], 32)
peaks = quantize.activation_outliers(fp32, probe)  # {layer: (in_features,)}
ratio = {n: (p.max() / p.median()).item() for n, p in peaks.items()}


def layer_kind(name):
    """Which input a linear layer reads, from its name in the classifier."""
    if name.endswith(("self.query", "self.key", "self.value")):
        return "Q/K/V input"
    if name.endswith("attention.output.dense"):
        return "attention-output input"
    if name.endswith("intermediate.dense"):
        return "FFN input"
    if name.endswith("output.dense"):
        return "FFN-output input"
    return "pooler / classifier"


for kind in dict.fromkeys(map(layer_kind, peaks)):
    worst = max((n for n in peaks if layer_kind(n) == kind), key=ratio.get)
    print(
        f"{kind:24s} largest feature range / median one: up to {ratio[worst]:5.1f} "
        f"({worst}, feature {int(peaks[worst].argmax())})"
    )

# %% [markdown]
# The inputs of the query, key and value projections and of the first FFN layer are the
# LayerNorm outputs of the residual stream. In each of them one feature is the largest:

# %%
resid = [n for n in peaks if n.endswith(("self.query", "intermediate.dense"))]
top = {int(peaks[n].argmax()) for n in resid}
ffn_in = [n for n in peaks if n.endswith("intermediate.dense")]
out_ratio = max(ratio[n] for n in ffn_in)
print(
    f"largest input feature of {len(resid)} residual-stream layers: {sorted(top)}; "
    f"its range / the median feature's at the FFN inputs: up to {out_ratio:.1f}"
)
dlbook.glue("ch12_outlier_dims", ", ".join(str(d) for d in sorted(top)))
dlbook.glue("ch12_outlier_ratio", out_ratio)
if profile == "full":  # the finding, checked on the fine-tuned classifier
    assert len(top) == 1 and out_ratio >= 5, (top, out_ratio)

# %% [markdown]
# One dimension, feature {glue:text}`ch12_outlier_dims`, is the widest input feature of every
# layer that reads the residual stream, up to {glue:text}`ch12_outlier_ratio:.1f` times the
# range of the median feature at the FFN inputs: MiniLM has the outlier dimension Bondarenko et
# al. found in BERT. The integer product of the next section, Eq. {eq}`eq-ch12-intmm`, allows one
# activation scale per tensor or per token, never per feature (the sum runs over the features, so
# a per-feature scale cannot be pulled out of it): that dimension sets the step for all 384, and
# every other feature is quantized several times more coarsely than its own range would need.
#
# ## 12.3 Integer matrix products: dynamic quantization
#
# Quantized weights save memory; to save **time** the product itself must run on integers. For a
# linear layer $y = x W^\top + b$ with the weight quantized symmetrically, $W \approx s_w Q_w$, and
# the input quantized asymmetrically, $x \approx s_x (Q_x - z_x)$:
#
# $$
# y \approx s_x\, s_w\, (Q_x - z_x)\, Q_w^\top + b ,
# $$ (eq-ch12-intmm)
#
# one integer matrix product accumulated in int32, then one multiplication by the float $s_x s_w$
# {cite}`jacob2018quantization`. **Dynamic** quantization computes $s_x, z_x$ from each incoming
# batch at run time (weights are quantized once, ahead of time), so it needs no calibration data.
# PyTorch's implementation is `torch.ao.quantization.quantize_dynamic`. On torch 2.13 it warns
# that `torch.ao.quantization` is deprecated and points to `torchao`, its successor. Here is the
# warning, caught around that one call:

# %%
layer = copy.deepcopy(
    fp32.bert.encoder.layer[0].intermediate.dense
)  # Linear(384 -> 1536)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    qlayer = torch.ao.quantization.quantize_dynamic(
        nn.Sequential(layer), {nn.Linear}, dtype=torch.qint8
    )[0]
for msg in sorted(
    {f"{w.category.__name__}: {str(w.message).splitlines()[0]}" for w in caught}
):
    print(msg)
print(qlayer)

# %% [markdown]
# This chapter uses `quantize_dynamic` all the same: its int8 kernels (FBGEMM on x86 CPUs) run
# in eager mode on the CPU, and section 12.9 measures what they gain there. It is wrapped in one
# place, `dlbook.quantize.int8_dynamic` (which catches exactly these warnings, with a comment), so
# that a move to torchao changes one function and the chapter's numbers then say whether the move
# pays. `tools/torchao_check.py` in the book's repository times torchao's int8 configurations
# against `quantize_dynamic` and float32 on your own CPU.
#
# Now the check of Eq. {eq}`eq-ch12-intmm` against the quantized layer. Two details of PyTorch's
# x86 kernels must be matched: the weight scale is $\max|W| / 127.5$ (the observer spreads the
# range over all 255 steps of $[-128, 127]$), and the input uses only 7 bits, $q \in [0, 127]$
# (`reduce_range`, which keeps the AVX2 instruction that multiplies uint8 by int8 pairs from
# overflowing its 16-bit sums). With those, the integer computation reproduces the layer's output
# to float rounding:

# %%
x = fp32.bert.embeddings(
    tokenizer(["A quiet, moving film."], return_tensors="pt")["input_ids"]
)  # (1, T, 384)
x = x.detach()
Wq = qlayer.weight()  # the layer's quantized weight
Q_w, s_w = Wq.int_repr().to(torch.int32), Wq.q_scale()  # (1536, 384) int, scalar
assert (
    Wq.q_zero_point() == 0 and abs(s_w - layer.weight.abs().max().item() / 127.5) < 1e-9
)
s_x, z_x = quantize.qparams(x, symmetric=False, dtype=torch.uint8)
s_x = s_x * 255 / 127  # 7-bit input range [0, 127]
z_x = torch.clamp(torch.round(-torch.clamp(x.min(), max=0) / s_x), 0, 127).long()
Q_x = torch.clamp(torch.round(x / s_x) + z_x, 0, 127).to(torch.int32)  # (1, T, 384)
acc = (Q_x - z_x.int()) @ Q_w.T  # (1, T, 1536) integer accumulators
y_int = acc.float() * (s_x * s_w) + layer.bias  # Eq. (eq-ch12-intmm)
with torch.inference_mode():
    y_torch, y_float = qlayer(x), layer(x)
torch.testing.assert_close(y_int, y_torch, atol=1e-5, rtol=1e-5)
print(
    "integer product == quantized layer "
    f"(max diff {(y_int - y_torch).abs().max():.1e}); "
    f"vs float32 layer: max diff {(y_torch - y_float).abs().max():.3f}, "
    f"output std {y_float.std():.3f}"
)

# %% [markdown]
# ## 12.4 Weight-only int8 embeddings
#
# `quantize_dynamic` leaves the word embeddings in float32, and they are the majority of the
# parameters. A lookup multiplies nothing, so there is no integer product to speed up, but the
# table can be **stored** in int8 with one symmetric scale per row (per row: section 12.2 showed
# why) and each looked-up row dequantized on the fly: only the rows of the tokens in the batch ever
# become float. PyTorch has a quantized `Embedding` in the same deprecated `torch.ao` namespace;
# ours is a dozen lines, `dlbook.quantize.Int8Embedding`:

# %%
dlbook.show(quantize.Int8Embedding)

# %% [markdown]
# Its lookup must equal the per-row fake-quantized table, indexed:

# %%
qemb = quantize.Int8Embedding.from_float(fp32.bert.embeddings.word_embeddings)
ids = tokenizer(["An absolute joy.", "Dull."], padding=True, return_tensors="pt")[
    "input_ids"
]  # (2, T)
rows = fp32.bert.embeddings.word_embeddings.weight.detach()[
    ids.flatten()
]  # (2 T, 384); per-row scales: rows are independent
torch.testing.assert_close(
    qemb(ids),
    quantize.fake_quantize(rows, symmetric=True, axis=0).reshape(*ids.shape, -1),
)
gap = (qemb(ids) - fp32.bert.embeddings.word_embeddings(ids)).abs().max().item()
assert gap <= qemb.scale.max().item() / 2 + 1e-7
print(
    f"int8 table {measure.saved_size_mb(qemb):.1f} MB vs float32 "
    f"{measure.saved_size_mb(fp32.bert.embeddings.word_embeddings):.1f} MB;"
    f" max lookup error {gap:.1e}"
)

# %% [markdown]
# ## 12.5 The whole classifier: `int8_dynamic`
#
# `dlbook.quantize.int8_dynamic(model, embeddings=True)` puts the two pieces together on a CPU
# copy of any BERT-style classifier: every `nn.Linear` becomes a dynamically quantized int8 layer
# and every `nn.Embedding` an `Int8Embedding`. LayerNorm, softmax, GELU and the two attention
# products stay in float32. Chapters 13 to 15 call it on pruned and distilled students, which is
# why it assumes nothing about depth or width:

# %%
dlbook.show(quantize.int8_dynamic)

# %%
int8_linear = quantize.int8_dynamic(fp32, embeddings=False)  # section 12.3 only
int8_all = quantize.int8_dynamic(fp32)  # + section 12.4
print(
    int8_all.bert.embeddings.word_embeddings,
    "|",
    int8_all.bert.encoder.layer[0].attention.self.query,
)
val_16 = list(assets.rotten_tomatoes()["validation"]["text"][:16])
check = tokenizer(val_16, padding=True, return_tensors="pt")
with torch.inference_mode():
    logits = {
        name: m(**check).logits for name, m in [("fp32", fp32), ("int8", int8_all)]
    }
agree = (logits["fp32"].argmax(-1) == logits["int8"].argmax(-1)).float().mean().item()
change = (logits["fp32"] - logits["int8"]).abs().max()
print(
    f"16 validation snippets: max logit change {change:.3f}, "
    f"same prediction on {agree:.0%}"
)

# %% [markdown]
# Section 12.2 found per-row weight scales more accurate than one scale per matrix, and
# `int8_dynamic(..., per_channel=True)` gives the linear layers one weight scale per output row.
# Whether that wins on the whole classifier is decided on the validation split in section 12.9,
# with the speed of both measured in the same run:

# %%
int8_rows = quantize.int8_dynamic(fp32, per_channel=True)  # + one weight scale per row
print(int8_rows.bert.encoder.layer[0].attention.self.query.weight().qscheme())

# %% [markdown]
# ## 12.6 Static quantization: observers and calibration
#
# Dynamic quantization measures the range of every batch of activations at run time, which
# costs a pass over the data per layer per batch and gives each batch a different scale.
# **Static** quantization fixes the activation scales ahead of time, from **calibration**
# batches: an **observer** sits at the input of each linear layer and records what it sees,
# then Eq. {eq}`eq-ch12-asym` turns the recorded range into a scale and a zero point. Two
# observers, both in `dlbook.quantize` (written by hand: PyTorch's own live in the deprecated
# `torch.ao.quantization`):
#
# - `MinMaxObserver` keeps the widest range seen. One extreme value anywhere sets the step
#   for all values;
# - `PercentileObserver(p)` keeps the $p$-th and $(100 - p)$-th percentiles of the values seen
#   and clips the rest: the rare extreme values suffer a larger error, every other value a
#   finer step.
#
# To measure what a static int8 model would compute, without int8 kernels, each linear layer is
# replaced by a `FakeQuantLinear`: the weight fake-quantized per output row, the input
# fake-quantized with the frozen static scale. Section 12.8 runs the same idea on real int8
# kernels.

# %%
dlbook.show(quantize.PercentileObserver)

# %%
dlbook.show(quantize.FakeQuantLinear)

# %% [markdown]
# The check: a calibrated `FakeQuantLinear` computes Eq. {eq}`eq-ch12-affine` on its input with
# the observer's scale, and the per-row weight of section 12.2; against
# `torch.fake_quantize_per_tensor_affine` and `torch.fake_quantize_per_channel_affine`:

# %%
fq = quantize.FakeQuantLinear(copy.deepcopy(layer), quantize.MinMaxObserver())
fq.set_mode("observe")
fq(x)  # calibrate on the embeddings of one sentence, (1, T, 384)
fq.freeze()
fq.set_mode("quant")
s_in, z_in = float(fq.in_scale), int(fq.in_zero_point)
x_ref = torch.fake_quantize_per_tensor_affine(x, s_in, z_in, 0, 255)
w = layer.weight.detach()
s_w = w.abs().amax(dim=1) / 127  # (1536,)
z_w = torch.zeros(1536, dtype=torch.int32)
w_ref = torch.fake_quantize_per_channel_affine(w, s_w, z_w, 0, -128, 127)
with torch.inference_mode():
    torch.testing.assert_close(fq(x), nn.functional.linear(x_ref, w_ref, layer.bias))
print(f"FakeQuantLinear == torch's fake quantization (input s {s_in:.4f}, z {z_in})")

# %% [markdown]
# The straight-through estimator is what makes the same layer trainable (section 12.7): rounding
# has gradient 0 almost everywhere, so the backward pass treats it as the identity inside the
# clamping range and as 0 outside it. Checked against the gradient of
# `torch.fake_quantize_per_tensor_affine`, which implements the same rule:

# %%
xg = (torch.randn(64) * 2).requires_grad_()
xr = xg.detach().clone().requires_grad_()
y_ste = quantize.fake_quantize_ste(xg, torch.tensor(0.02), torch.tensor(128.0), 0, 255)
y_ste.sum().backward()
torch.fake_quantize_per_tensor_affine(xr, 0.02, 128, 0, 255).sum().backward()
torch.testing.assert_close(xg.grad, xr.grad)
print(
    f"STE gradient == torch's: 1 on {int(xg.grad.sum())} values inside the range, "
    f"0 on {int((xg.grad == 0).sum())} clipped"
)

# %% [markdown]
# Now the whole classifier. The validation split scores each choice (the test split is read
# in section 12.9, for the variants measured there); calibration uses batches of training
# snippets. For each observer and
# each number of calibration batches:

# %%
val_raw = assets.rotten_tomatoes()["validation"]
val_raw = val_raw if sizes["n_val"] is None else val_raw.select(range(sizes["n_val"]))
val_tok = finetune.tokenize_dataset(val_raw, tokenizer, sizes["max_length"])


def val_correct(model):
    """Per-snippet correctness on the validation split, (n_val,) bool."""
    r = finetune.evaluate_classifier(
        model, val_tok, tokenizer, batch_size=sizes["eval_batch"]
    )
    return (r.preds == r.labels).numpy()


calib = snippet_batches(
    train_raw["text"][sizes["n_probe"] * 32 :],
    max(sizes["calib_counts"]),
    sizes["calib_bs"],
)
observers = {
    "min/max": quantize.MinMaxObserver,
    "percentile 99.99": lambda: quantize.PercentileObserver(99.99),
}
ptq, ptq_correct = {}, {}
runs = [(o, n) for o in observers for n in sizes["calib_counts"]]
for obs, n in dlbook.progress(runs, desc="calibrate + validate"):
    model_fq = copy.deepcopy(fp32)
    fq_layers = quantize.prepare_fake_quant(model_fq, observers[obs])
    quantize.calibrate(model_fq, calib[:n], fq_layers)
    ptq[obs, n], ptq_correct[obs, n] = model_fq, val_correct(model_fq)
fp32_val = val_correct(fp32)
for (obs, n), c in ptq_correct.items():
    print(
        f"{obs:17s} {n:3d} batches: validation accuracy {c.mean():.4f} "
        f"(fp32 {fp32_val.mean():.4f})"
    )

# %% [markdown]
# The difference between the two observers, at the most calibration batches, with its paired
# 95 % interval over the same validation snippets:

# %%
n_most = max(sizes["calib_counts"])
obs_cmp = stats.compare(
    ptq_correct["percentile 99.99", n_most], ptq_correct["min/max", n_most]
)
lo_o, hi_o = 100 * obs_cmp.interval.low, 100 * obs_cmp.interval.high
print(
    f"percentile - min/max: {100 * obs_cmp.interval.diff:+.2f} points, "
    f"95 % interval [{lo_o:+.2f}, {hi_o:+.2f}]"
)
best_obs = max(observers, key=lambda o: (ptq_correct[o, n_most].mean(), o != "min/max"))
dlbook.glue("ch12_obs_diff", 100 * obs_cmp.interval.diff)
dlbook.glue("ch12_obs_ci", f"[{lo_o:+.2f}, {hi_o:+.2f}]")
dlbook.glue(
    "ch12_obs_verdict",
    "a measurable difference" if obs_cmp.measurable else "no measurable difference",
)
dlbook.glue("ch12_best_obs", best_obs)
dlbook.glue("ch12_n_most", n_most)
dlbook.glue("ch12_calib_bs", sizes["calib_bs"])
counts_text = {
    o: ", ".join(f"{ptq_correct[o, n].mean():.4f}" for n in sizes["calib_counts"])
    for o in observers
}
dlbook.glue("ch12_calib_counts", ", ".join(map(str, sizes["calib_counts"])))
dlbook.glue("ch12_calib_minmax", counts_text["min/max"])
dlbook.glue("ch12_calib_pct", counts_text["percentile 99.99"])
accs = [c.mean() for c in ptq_correct.values()]
dlbook.glue("ch12_calib_range", 100 * (max(accs) - min(accs)))
dlbook.glue("ch12_snippet_pts", 100 / len(val_tok))  # one validation snippet, in points
n_few = min(sizes["calib_counts"])
few_vs_most = {
    o: stats.compare(ptq_correct[o, n_most], ptq_correct[o, n_few]) for o in observers
}
for o, c in few_vs_most.items():
    print(f"{o}: {n_most} vs {n_few} batches: {c.verdict(str(n_most), str(n_few))}")
if any(c.measurable for c in few_vs_most.values()):
    calib_text = (
        f"more calibration batches made a measurable difference "
        f"({n_most} against {n_few}, paired intervals printed above)"
    )
else:
    calib_text = (
        f"for neither observer did {n_most} batches score measurably "
        f"differently from {n_few} (paired intervals printed above), so "
        f"{n_few} batch{'es' if n_few > 1 else ''} of snippets calibrated "
        "as well here"
    )
dlbook.glue("ch12_calib_text", calib_text)

# %% [markdown]
# With {glue:text}`ch12_calib_counts` calibration batches of {glue:text}`ch12_calib_bs`
# snippets, validation accuracy was {glue:text}`ch12_calib_minmax` with the min/max observer
# and {glue:text}`ch12_calib_pct` with the percentile observer. At
# {glue:text}`ch12_n_most` batches the percentile observer differs from min/max by
# {glue:text}`ch12_obs_diff:+.2f` points, 95 % interval {glue:text}`ch12_obs_ci`:
# {glue:text}`ch12_obs_verdict`. The observer with the higher validation accuracy,
# {glue:text}`ch12_best_obs`, is the one sections 12.7 and 12.8 use. More calibration batches
# can only widen a min/max range (the maximum of more values cannot shrink); across all these
# settings validation accuracy varied by {glue:text}`ch12_calib_range:.1f` points, on a split
# where one snippet is {glue:text}`ch12_snippet_pts:.2f` points, and
# {glue:text}`ch12_calib_text`.
#
# ## 12.7 Quantization-aware training
#
# Post-training quantization leaves the weights where float training put them. **Quantization-
# aware training** (QAT) goes on training with the fake-quantized forward pass, so that the
# weights move to where their int8 versions classify well {cite}`jacob2018quantization`. The
# loss sees the rounded values; the gradient passes the rounding straight through (the STE
# checked above) {cite}`bengio2013estimating`. A short run, starting from the calibrated model
# of the chosen observer, on training snippets, with the activation scales kept frozen:

# %%
qat = copy.deepcopy(ptq[best_obs, n_most])  # FakeQuantLinear layers in mode "quant"
train_tok = finetune.tokenize_dataset(train_raw, tokenizer, sizes["max_length"])
steps = sizes["qat_steps"]
qat_data = train_tok.shuffle(seed=0).select(range(steps * sizes["qat_bs"]))
loader = finetune.make_loader(qat_data, tokenizer, sizes["qat_bs"], shuffle=True)
trainable = [p for p in qat.parameters() if p.requires_grad]
opt = torch.optim.AdamW(trainable, lr=sizes["qat_lr"])
qat.train()
losses = []
for batch in dlbook.progress(loader, desc="QAT", total=steps):
    loss = qat(**batch).loss  # the forward pass rounds weights and inputs
    opt.zero_grad()
    loss.backward()  # straight through the rounding
    opt.step()
    losses.append(loss.item())
qat.eval()
qat_correct = val_correct(qat)
qat_cmp = stats.compare(qat_correct, ptq_correct[best_obs, n_most])
lo_q, hi_q = 100 * qat_cmp.interval.low, 100 * qat_cmp.interval.high
print(
    f"{steps} QAT steps, loss {np.mean(losses[:5]):.3f} (first 5) -> "
    f"{np.mean(losses[-5:]):.3f} (last 5); validation "
    f"{ptq_correct[best_obs, n_most].mean():.4f} (PTQ) -> "
    f"{qat_correct.mean():.4f} (QAT), "
    f"difference 95 % interval [{lo_q:+.2f}, {hi_q:+.2f}]"
)
dlbook.glue("ch12_qat_steps", steps)
dlbook.glue("ch12_qat_acc", float(qat_correct.mean()))
dlbook.glue("ch12_ptq_acc", float(ptq_correct[best_obs, n_most].mean()))
dlbook.glue("ch12_qat_ci", f"[{lo_q:+.2f}, {hi_q:+.2f}]")
dlbook.glue(
    "ch12_qat_verdict",
    "a measurable difference" if qat_cmp.measurable else "no measurable difference",
)
dlbook.glue("ch12_fp32_val", float(fp32_val.mean()))

# %% [markdown]
# After {glue:text}`ch12_qat_steps` steps of QAT, validation accuracy went from
# {glue:text}`ch12_ptq_acc:.4f` (post-training, static) to {glue:text}`ch12_qat_acc:.4f`
# (float32: {glue:text}`ch12_fp32_val:.4f`); the paired 95 % interval of the difference,
# {glue:text}`ch12_qat_ci` points, says {glue:text}`ch12_qat_verdict`. A run this short is a
# demonstration of the mechanism, not a tuned recipe. The run also trains the float weights for
# more steps; a float run of the same length separates the two effects, and is exercise
# {ref}`ch12-ex-qat`.
#
# ## 12.8 ONNX Runtime, and bf16
#
# The fake-quantized models above compute what int8 would, in float time. To run integer
# kernels, the classifier goes to **ONNX Runtime**: `torch.onnx.export` writes the graph to an
# ONNX file, and `onnxruntime.quantization` rewrites it into int8, dynamically (activation
# scales per batch, as in section 12.3) or statically (scales from calibration batches, as in
# section 12.6, in the QDQ format: quantize/dequantize pairs that ONNX Runtime fuses into integer
# kernels). `dlbook.ort` wraps the three steps, and its `OrtClassifier` runs the ONNX file
# behind the same call as the PyTorch model, so `dlbook.measure` times and scores it the
# same way:

# %%
dlbook.show(dlort.export_classifier)

# %%
onnx_dir = Path(tempfile.mkdtemp(prefix="ch12-onnx-"))  # written afresh from this model
threads = torch.get_num_threads()
f32_path = dlort.export_classifier(fp32, onnx_dir / "fp32.onnx", calib[0])
dyn_path = dlort.quantize_dynamic_int8(f32_path, onnx_dir / "int8-dynamic.onnx")
ort_method = "percentile" if best_obs.startswith("percentile") else "minmax"
sta_path = dlort.quantize_static_int8(
    f32_path,
    onnx_dir / "int8-static.onnx",
    calib[:n_most],
    method=ort_method,
    percentile=99.99,  # the observer's
    pad_id=tokenizer.pad_token_id,
)
ort_models = {
    name: dlort.OrtClassifier(p, threads=threads)
    for name, p in [
        ("ORT fp32", f32_path),
        ("ORT int8 dynamic", dyn_path),
        ("ORT int8 static", sta_path),
    ]
}
check = dict(tokenizer(list(val_raw["text"][:8]), padding=True, return_tensors="pt"))
with torch.inference_mode():
    ref = fp32(**check).logits  # (8, 2)
    torch.testing.assert_close(
        ort_models["ORT fp32"](**check).logits, ref, atol=1e-4, rtol=1e-4
    )
for name, m in ort_models.items():
    print(f"{name:17s} {m.size_mb():6.1f} MB")

# %% [markdown]
# The exported float graph computes the PyTorch model's logits to float rounding (the check
# above). **bf16** is the other cheap format: the whole model cast to bfloat16, half the bytes
# of float32. CPUs with bf16 instructions (AVX-512 BF16 or AMX) multiply bf16 pairs in
# hardware; other CPUs convert bf16 to float32 around every product ({ref}`ch10`
# measures what that costs), so this chapter times a bf16 row only where the instructions
# exist. fp16 is left to GPUs: this chapter times nothing in fp16.

# %%
has_bf16 = bool({"avx512_bf16", "amx_bf16"} & set(dlbook.env.cpu_features()))
bf16 = copy.deepcopy(fp32).to(torch.bfloat16) if has_bf16 else None
print("bf16 row:", "timed" if has_bf16 else "skipped (no bf16 instructions)")

# %% [markdown]
# ## 12.9 Measuring: size, latency, accuracy
#
# Compression claims are easy to get wrong: a size that counts parameters but not the scales, a
# latency taken once on a cold model, a speed-up of two models timed an hour apart on a busy
# machine, an accuracy on a different split. Part IV therefore measures every variant the same
# way, with `dlbook.measure`, which this chapter introduces:
#
# - **size** is what `torch.save(model.state_dict())` writes, in MB ($10^6$ bytes): int8 weights,
#   scales and zero points count as stored (`saved_size_mb`); for ONNX Runtime, the size of the
#   ONNX file with its weights;
# - **latency** is the median wall time of one forward pass on a fixed batch of test snippets
#   (`benchmark_batches`: the first $b$ snippets, padded to their longest), at batch 1 (one user
#   waiting) and batch 32 (a server's throughput), with the number of threads fixed
#   (`fixed_threads`). `interleaved_latency` times the variants **in turns**, one pass of each per
#   round, so that a change of load on the machine hits all of them alike and their ratio
#   stays fair; ONNX Runtime runs with the same number of threads as PyTorch;
# - **accuracy** is on the validation split, which chooses between variants, and on the test
#   split, which reports them, through chapter 9's `evaluate_classifier` (`measure_classifier`
#   returns all three as one `Measurement`);
# - a `Scoreboard` collects the measurements, computes the ratios against the baseline
#   (`smaller`, `faster@b`, `acc_drop_pts` in `frame()`; `styled()` shows them in words) and
#   prints the provenance: CPU, threads, torch version.

# %%
dlbook.show(measure.saved_size_mb)

# %%
dlbook.show(measure.interleaved_latency)

# %%
dlbook.show(measure.measure_classifier)

# %% [markdown]
# The test snippets, the benchmark batches and the thread count:

# %%
test_raw = assets.rotten_tomatoes()["test"]
test_raw = (
    test_raw if sizes["n_test"] is None else test_raw.select(range(sizes["n_test"]))
)
test_tok = finetune.tokenize_dataset(test_raw, tokenizer, sizes["max_length"])
batches = measure.benchmark_batches(
    tokenizer,
    test_raw["text"],
    batch_sizes=sizes["batch_sizes"],
    max_length=sizes["max_length"],
)
threads = torch.get_num_threads()
big = max(sizes["batch_sizes"])
print(
    f"{len(test_tok):,} test snippets | benchmark batches "
    f"{ ({b: tuple(v['input_ids'].shape) for b, v in batches.items()}) } | "
    f"{measure.provenance_line(threads)}"
)

# %%
variants = {
    "fp32": fp32,
    **({"bf16": bf16} if has_bf16 else {}),
    "int8 linear": int8_linear,
    "int8 + emb, per tensor": int8_all,
    "int8 + emb, per row": int8_rows,
    **ort_models,
}
timings = measure.interleaved_latency(
    variants, batches, threads=threads, rounds=sizes["rounds"], warmup=sizes["warmup"]
)
board = measure.Scoreboard(baseline="fp32")
pair = ("int8 + emb, per tensor", "int8 + emb, per row")
pair_val = {name: val_correct(variants[name]) for name in pair}  # for a paired test
for name, m in dlbook.progress(variants.items(), desc="accuracy", total=len(variants)):
    row = measure.measure_classifier(
        name,
        m,
        tokenizer,
        test_tok,
        batches,
        threads=threads,
        eval_batch_size=sizes["eval_batch"],
        timings=timings[name],
        val_dataset=None if name in pair else val_tok,
    )
    if name in pair:
        row.val_accuracy = float(pair_val[name].mean())
    if isinstance(m, dlort.OrtClassifier):
        row = dlort.classifier_measurement(row, m)  # size of the ONNX file
    board.add(row)
print(board.provenance())
display(board.styled())

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.6))
board.plot(batch_size=big, ax=ax1, legend="below")  # names in a legend
gap = len(timings) + 1
for i, (name, per) in enumerate(timings.items()):
    ax2.boxplot(
        [per[b].runs_ms for b in sizes["batch_sizes"]],
        positions=np.arange(len(per)) * gap + i,
        widths=0.8,
        patch_artist=True,
        boxprops=dict(facecolor=f"C{i}"),
        medianprops=dict(color="k"),
    )
    ax2.plot([], [], color=f"C{i}", lw=6, label=name)
ax2.set_xticks(
    np.arange(len(sizes["batch_sizes"])) * gap + (gap - 2) / 2,
    [f"batch {b}" for b in sizes["batch_sizes"]],
)
ax2.set_yscale("log")
ax2.set_ylabel("forward pass (ms)")
ax2.set_title("Every timed run, in turns")
ax2.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# **Figure 12.3.** Left: test accuracy against the median latency at the largest batch
# size, marker area proportional to the size on disk (the legend gives each model's size).
# Right: box plots of all the timed forward passes of each model at each batch size (log
# scale), the models timed in turns; the table above reports the medians.
#
# Per-row or per-tensor weight scales? The validation split decides, between the two int8
# models with int8 embeddings (a tie goes to per row, the smaller error of section 12.2):

# %%
chosen = max(pair, key=lambda n: (board.rows[n].val_accuracy, n.endswith("row")))
rows_vs = stats.compare(pair_val[pair[1]], pair_val[pair[0]])
lo_r, hi_r = 100 * rows_vs.interval.low, 100 * rows_vs.interval.high
print(
    f"validation: per tensor {board.rows[pair[0]].val_accuracy:.4f}, per row "
    f"{board.rows[pair[1]].val_accuracy:.4f} (difference 95 % interval "
    f"[{lo_r:+.2f}, {hi_r:+.2f}] points); chosen: {chosen}"
)
dlbook.glue("ch12_chosen", chosen)
dlbook.glue("ch12_rows_ci", f"[{lo_r:+.2f}, {hi_r:+.2f}]")
dlbook.glue("ch12_val_tensor", board.rows[pair[0]].val_accuracy)
dlbook.glue("ch12_val_rows", board.rows[pair[1]].val_accuracy)
dlbook.glue(
    "ch12_rows_verdict",
    "a measurable difference" if rows_vs.measurable else "no measurable difference",
)
if not rows_vs.measurable:
    rows_text = (
        "The smaller weight error of per-row scales (section 12.2) did not "
        "show up as measurably better classification"
    )
elif rows_vs.interval.diff > 0:
    rows_text = (
        "The smaller weight error of per-row scales (section 12.2) showed "
        "up as measurably better classification"
    )
else:
    rows_text = (
        "Per-row scales, for all their smaller weight error (section 12.2), "
        "classified measurably worse"
    )
dlbook.glue("ch12_rows_text", rows_text)
r_rows = board.ratios(pair[1])
dlbook.glue("ch12_rows_big", r_rows[f"faster@{big}"])
dlbook.glue("ch12_rows_1", r_rows["faster@1"])

# %% [markdown]
# The headline numbers are those of the chosen model,
# {glue:text}`ch12_chosen`. On every machine it must lose at most one point of test
# accuracy. How much faster it runs depends on the CPU's
# instruction sets (the end of this section explains why), so what is expected of the speed-up at
# batch 32 is set per hardware class of the CPU (`dlbook.env.hardware_class("cpu")`, printed in
# brackets in the table's provenance line), from repeated runs on that class, with a margin below
# the slowest of them and below what their spread predicts for one more run (`dlbook.expected`
# holds the runs):
#
# | CPU class | instruction sets | measured speed-ups (2-core AMD EPYC, 2 threads) | expected |
# |---|---|---|---|
# | `cpu-avx2` | AVX2, no AVX-512 | {glue:text}`ch12_runs_avx2` | at least {glue:text}`ch12_bar_avx2` |
# | `cpu-avx512-bf16` | AVX-512 with VNNI and BF16 | {glue:text}`ch12_runs_avx512` | at least {glue:text}`ch12_bar_avx512` |
#
# On any other class the chapter prints the speed-up and says that it does not check it; in the
# quick test sizes nothing about speed is checked.

# %%
r = board.ratios(chosen)
r_lin = board.ratios("int8 linear")
base, q8 = board.rows["fp32"], board.rows[chosen]
# paired: run i of both models came from round i
per_round = {
    b: np.array(timings["fp32"][b].runs_ms) / np.array(timings[chosen][b].runs_ms)
    for b in sizes["batch_sizes"]
}
spread = {b: np.quantile(v, [0.1, 0.9]) for b, v in per_round.items()}
for b, (lo, hi) in spread.items():
    print(
        f"batch {b}: per-round speed-up median {np.median(per_round[b]):.2f}, "
        f"10-90 % of rounds {lo:.2f}-{hi:.2f}"
    )
dlbook.glue("ch12_spread_big", f"{spread[big][0]:.2f} to {spread[big][1]:.2f}")
dlbook.glue("ch12_spread_1", f"{spread[1][0]:.2f} to {spread[1][1]:.2f}")
cpu_class = dlbook.env.hardware_class("cpu")  # the timings ran on the CPU
dlbook.hardware_headline(
    "ch12_speedup", r[f"faster@{big}"], profile=profile, hardware=cpu_class
)
dlbook.headline(
    "ch12_acc_drop", r["acc_drop_pts"], profile=profile, at_most=1.0, fmt="{:.2f}"
)
speed_expected = dlbook.expected.EXPECTED["ch12_speedup"]
for hw, tag in (("cpu-avx2", "avx2"), ("cpu-avx512-bf16", "avx512")):
    dlbook.glue(f"ch12_runs_{tag}", speed_expected.runs_text(hw))
    dlbook.glue(f"ch12_bar_{tag}", f"{speed_expected.at_least[hw]:g}")
dlbook.glue("ch12_class", cpu_class)
dlbook.glue("ch12_expected", speed_expected.describe(cpu_class))
dlbook.glue("ch12_speedup_b1", r["faster@1"])
dlbook.glue("ch12_speedup_lin", r_lin[f"faster@{big}"])
dlbook.glue("ch12_big", big)
dlbook.glue("ch12_smaller", r["smaller"])
dlbook.glue("ch12_smaller_lin", r_lin["smaller"])
dlbook.glue("ch12_mb_fp32", base.size_mb)
dlbook.glue("ch12_mb_int8", q8.size_mb)
dlbook.glue("ch12_acc_fp32", base.accuracy)
dlbook.glue("ch12_acc_int8", q8.accuracy)
dlbook.glue("ch12_threads", threads)
r_ort, r_ortf = board.ratios("ORT int8 dynamic"), board.ratios("ORT fp32")
r_sta = board.ratios("ORT int8 static")
dlbook.glue("ch12_ort_big", r_ort[f"faster@{big}"])
dlbook.glue("ch12_ort_1", r_ort["faster@1"])
dlbook.glue("ch12_ortf_big", r_ortf[f"faster@{big}"])
dlbook.glue("ch12_ortf_1", r_ortf["faster@1"])
dlbook.glue("ch12_ort_sta_big", r_sta[f"faster@{big}"])
dlbook.glue("ch12_ort_smaller", r_ort["smaller"])
dlbook.glue("ch12_ort_drop", r_ort["acc_drop_pts"])
dlbook.glue("ch12_ort_sta_drop", r_sta["acc_drop_pts"])
if has_bf16:
    r_bf = board.ratios("bf16")
    bf16_text = (
        f"In bf16 the model was {r_bf[f'faster@{big}']:.2f}x as fast as "
        f"float32 at batch {big} ({r_bf['faster@1']:.2f}x at batch 1), "
        f"{r_bf['smaller']:.2f}x smaller, and lost "
        f"{r_bf['acc_drop_pts']:.2f} points of test accuracy."
    )
else:
    bf16_text = "This CPU has no bf16 instructions, so the table has no bf16 row."
dlbook.glue("ch12_bf16_text", bf16_text)
dlbook.headline(
    "ch12_ort_acc_drop",
    r_ort["acc_drop_pts"],
    profile=profile,
    at_most=1.0,
    fmt="{:.2f}",
)
print(
    f"int8 vs fp32: {r['smaller']:.2f}x smaller, "
    f"{r[f'faster@{big}']:.2f}x faster at batch {big}, "
    f"{r['faster@1']:.2f}x at batch 1, "
    f"accuracy {base.accuracy:.4f} -> {q8.accuracy:.4f}"
)

# %% [markdown]
# On this machine (the provenance line printed with the table above: CPU, threads, torch; hardware
# class {glue:text}`ch12_class`, for which the expected speed-up is
# {glue:text}`ch12_expected`), quantizing the linear layers alone made the model
# {glue:text}`ch12_speedup_lin:.2f`x faster at batch {glue:text}`ch12_big` and
# {glue:text}`ch12_smaller_lin:.2f`x smaller; adding the int8 embeddings brought it from
# {glue:text}`ch12_mb_fp32:.1f` MB to {glue:text}`ch12_mb_int8:.1f` MB
# ({glue:text}`ch12_smaller:.2f`x smaller) at a speed-up of {glue:text}`ch12_speedup`x
# ({glue:text}`ch12_speedup_b1:.2f`x at batch 1). Test accuracy went from
# {glue:text}`ch12_acc_fp32:.4f` to {glue:text}`ch12_acc_int8:.4f`, a drop of
# {glue:text}`ch12_acc_drop` points. For comparison, PyTorch's tutorial on the same technique
# took BERT-base fine-tuned on MRPC from 438 MB to 181 MB with F1 going from 0.902 to 0.895
# {cite}`pytorch2020bertdynamicquant`; it left the embeddings in float32, which is why its model
# shrank by less than a factor of three.
#
# Why not four times faster, when int8 moves a quarter of the bytes? Only the linear layers run
# in integers. The attention products, softmax, GELU and LayerNorm, and the quantization of every
# input batch, still run in float32 and take the same time as before, so they weigh more in the
# int8 model's time (Amdahl's law; exercise {ref}`ch12-ex-amdahl`). And the gain depends on
# the CPU: with AVX-512
# VNNI (`avx512_vnni` among the instruction sets in the provenance line) one instruction
# multiplies int8 pairs and adds them into int32, where AVX2 needs three, so the same model gains
# more from int8 on a CPU that has it. (FBGEMM, the library behind `quantize_dynamic` on x86,
# has AVX2, AVX-512 and AVX-512 VNNI code paths; the 256-bit `avx_vnni` of recent laptop CPUs
# gets its AVX2 path, which is why `dlbook.env.hardware_class` puts such CPUs in `cpu-avx2`.)
#
# A speed-up is a ratio of two medians, and it has a spread. Each round timed both models back
# to back, so the ratio of their times in one round is a paired measurement: over the rounds,
# the middle 80 % of these ratios lay between {glue:text}`ch12_spread_big` at batch
# {glue:text}`ch12_big` and between {glue:text}`ch12_spread_1` at batch 1. That spread, and the
# spread between whole runs, is why the expected values in the table above sit well below every
# run measured on their class, and why no speed-up is expected on a class without such runs.
#
# Validation chose {glue:text}`ch12_chosen` (validation accuracy {glue:text}`ch12_val_tensor:.4f`
# per tensor, {glue:text}`ch12_val_rows:.4f` per row; the paired 95 % interval of per row minus
# per tensor is {glue:text}`ch12_rows_ci` points: {glue:text}`ch12_rows_verdict`).
# {glue:text}`ch12_rows_text`, and the per-row model ran {glue:text}`ch12_rows_big:.2f`x as
# fast as float32
# at batch {glue:text}`ch12_big` ({glue:text}`ch12_rows_1:.2f`x at batch 1).
#
# **ONNX Runtime.** The exported float32 graph, run by ONNX Runtime at the same thread count, was
# {glue:text}`ch12_ortf_big:.2f`x as fast as PyTorch's float32 model at batch
# {glue:text}`ch12_big` and {glue:text}`ch12_ortf_1:.2f`x at batch 1 (ONNX Runtime runs its own
# kernels on a graph it optimizes first, fusing chains of operators {cite}`onnxruntime2021`). Its dynamic int8 graph was {glue:text}`ch12_ort_big:.2f`x as fast as
# PyTorch's float32 ({glue:text}`ch12_ort_1:.2f`x at batch 1),
# {glue:text}`ch12_ort_smaller:.2f`x smaller (it quantizes the embedding lookups too), and lost
# {glue:text}`ch12_ort_drop:.2f` points of test accuracy; the static graph was
# {glue:text}`ch12_ort_sta_big:.2f`x as fast and lost {glue:text}`ch12_ort_sta_drop:.2f` points.
# That static graph is not the model of section 12.6: ONNX Runtime's static quantization puts
# fixed int8 scales on the inputs of every matrix product it quantizes, the two attention
# products among them, where section 12.6 quantized only the inputs of the linear layers; the
# fake-quantized model's validation accuracy is not a forecast for it. Each graph has to be
# measured, as here. {glue:text}`ch12_bf16_text`
#
# ## 12.10 Below eight bits: int4 and weight-only quantization
#
# Eight bits is where a BERT classifier loses almost nothing with the simple rules of this
# chapter. Large language models are stored in four bits or fewer, and at batch 1 their speed is
# set by how many bytes of weights stream from memory per token, not by arithmetic. Hence
# **weight-only** schemes: the weights in int4 (or fewer bits), dequantized to 16-bit floats
# inside the matrix product, the activations left in floating point. With 16 levels instead of
# 256, rounding each weight to its nearest level (as this chapter does) loses much more (on large
# language models, at 3 bits it breaks them {cite}`frantar2023gptq`), and the methods differ in
# how they choose the levels:
#
# - **GPTQ** quantizes the columns of a weight matrix one at a time and updates the columns not
#   yet quantized to compensate for the error, using second-order information from a small
#   calibration set; it took 175-billion-parameter models to 3 or 4 bits in a few GPU hours
#   {cite}`frantar2023gptq`;
# - **AWQ** observes that a small fraction of weight channels, those that meet large activations
#   (the outlier features of section 12.2), matter most, and scales them up before rounding so
#   that they lose less, with no retraining {cite}`lin2024awq`;
# - **llama.cpp's k-quants** store weights in blocks of 256 made of sub-blocks of 16 or 32, each
#   sub-block with its own small scale (and minimum) quantized in turn against one float scale
#   per block, which puts the cost of per-group scales well under a bit per weight
#   {cite}`kawrakow2023kquants`. Part VI reads such a 4-bit GGUF file and dequantizes it by hand.
#
# The grouping is section 12.2's lesson taken further. Measured on the same three matrices, in
# symmetric int4 ($q \in [-8, 7]$, $s = \max|w| / 7$ per row, or per group of 32 consecutive
# weights of a row):


# %%
def fake_int4(w, group=None):
    """Symmetric int4 round trip: one scale per row, or per `group` weights of a row."""
    rows = w if group is None else w.reshape(-1, group)  # (out, in) or (out*in/32, 32)
    s = rows.abs().amax(dim=1, keepdim=True) / 7
    return (torch.clamp(torch.round(rows / s), -8, 7) * s).reshape(w.shape)


sqnr4 = {}
for mname, w in matrices.items():
    for g in (None, 32):
        noise = (fake_int4(w, g) - w).pow(2).sum()
        sqnr4[mname, g] = 10 * torch.log10(w.pow(2).sum() / noise).item()
    print(
        f"{mname:16s} int4 per row: {sqnr4[mname, None]:5.1f} dB, per group of 32: "
        f"{sqnr4[mname, 32]:5.1f} dB (int8 per row: "
        f"{sqnr[mname, 'sym / row']:5.1f} dB)"
    )
gain4 = [sqnr4[m, 32] - sqnr4[m, None] for m in matrices]
assert min(gain4) > 0  # groups of 32 beat one scale per row on every matrix
loss4 = [sqnr[m, "sym / row"] - sqnr4[m, None] for m in matrices]  # int8 -> int4
step_db = 20 * np.log10(127 / 7)  # the step grows 127 / 7 times: 25.2 dB of noise
assert all(abs(d - step_db) < 1 for d in loss4), loss4
dlbook.glue("ch12_int4_gain", min(gain4))
dlbook.glue("ch12_int4_loss", f"{min(loss4):.0f} to {max(loss4):.0f}")

# %% [markdown]
# One scale per row beat one per matrix, and one per group of 32 weights beats one per row, by
# at least {glue:text}`ch12_int4_gain:.1f` dB on every matrix. Four bits fewer cost
# {glue:text}`ch12_int4_loss` dB per row, within a decibel of the 25.2 dB that the ratio of
# the two steps, $20 \log_{10}(127/7)$, predicts.
#
# ## Summary
#
# - Float formats have a bounded **relative** rounding error, Eq. {eq}`eq-ch12-float` (bf16:
#   fp32's range with 7 mantissa bits; fp16: 10 bits, max 65,504); int8 with a scale has an
#   **absolute** error of at most half a step.
# - Affine quantization, Eq. {eq}`eq-ch12-affine`, with asymmetric {eq}`eq-ch12-asym` or symmetric
#   {eq}`eq-ch12-sym` parameters, per tensor or per channel, matches `torch.quantize_per_tensor`,
#   `torch.quantize_per_channel` and `torch.fake_quantize_*` (asymmetric codes up to rare one-code
#   near-ties); per-row scales cut the error
#   of real weight matrices most.
# - A dynamically quantized linear layer is one int32-accumulated integer product and one rescale,
#   Eq. {eq}`eq-ch12-intmm`; we reproduced PyTorch's layer to float rounding, including its
#   7-bit inputs on x86.
# - `dlbook.quantize.int8_dynamic` (int8 linear layers, weight-only int8 embeddings) made the
#   classifier {glue:text}`ch12_smaller:.2f`x smaller and {glue:text}`ch12_speedup`x faster at
#   batch {glue:text}`ch12_big` for {glue:text}`ch12_acc_drop` points of accuracy. It wraps the
#   deprecated `torch.ao.quantization` in one function, so that a later API changes one place.
# - MiniLM has an outlier feature: one dimension of the residual stream is the widest input of
#   every layer that reads it, up to {glue:text}`ch12_outlier_ratio:.1f` times the median
#   feature's range, as Bondarenko et al. found in BERT.
# - Static quantization fixes activation scales from calibration batches with an observer
#   (min/max or a percentile); quantization-aware training trains through fake quantization
#   with a straight-through gradient. On validation, static fake quantization scored
#   {glue:text}`ch12_ptq_acc:.4f` and a short QAT run {glue:text}`ch12_qat_acc:.4f`, against
#   {glue:text}`ch12_fp32_val:.4f` in float32.
# - ONNX Runtime ran the exported classifier in int8 {glue:text}`ch12_ort_big:.2f`x as fast as
#   PyTorch's float32 at batch {glue:text}`ch12_big`, timed under the same protocol.
# - `dlbook.measure` is how Part IV measures: size on disk, interleaved median latencies with fixed
#   threads, test accuracy, ratios against a baseline, provenance.
#
# ## Exercises
#
# :::{exercise}
# :label: ch12-ex-params
# Activations after a layer range over $[-0.5, 1.5]$. Compute the asymmetric uint8 scale and zero
# point, the code of $x = 0.3$ and the value it comes back as. What is the largest error any
# $x \in [-0.5, 1.5]$ can suffer? What happens to $x = 2.0$?
# :::
#
# :::{solution} ch12-ex-params
# :class: dropdown
# $s = 2.0 / 255 \approx 0.007843$, $z = 0 - \operatorname{round}(-0.5 / s) = \operatorname{round}(63.75) = 64$.
# $q = \operatorname{round}(0.3 / s) + 64 = \operatorname{round}(38.25) + 64 = 102$, and
# $\hat x = s (102 - 64) = 38 s \approx 0.2980$. Inside the range the error is at most
# $s / 2 \approx 0.0039$ (here 0.0020). The code of $2.0$ would be $255 + 64$, clamped to 255, so
# it comes back as $s (255 - 64) \approx 1.498$: values outside the calibrated range are clipped,
# an error that is not bounded by $s/2$. Check with `quantize.qparams(torch.tensor([-0.5, 1.5]), symmetric=False, dtype=torch.uint8)`.
# :::
#
# :::{exercise}
# :label: ch12-ex-outlier
# A row of a weight matrix holds 383 values in $[-0.05, 0.05]$ and one outlier $8.0$. With
# symmetric int8 per-row quantization, how many distinct codes can the 383 ordinary values use?
# How does per-channel quantization of the *weights* help here, and why does it not help when the
# outlier sits in one **feature dimension of the activations**, as LLM.int8() observed in large
# transformers {cite}`dettmers2022llmint8`?
# :::
#
# :::{solution} ch12-ex-outlier
# :class: dropdown
# $s = 8 / 127 \approx 0.063$, larger than the ordinary values themselves: they all round to
# $-1$, $0$ or $1$ (three codes), and most to 0. Per-row scales confine the damage to this one row:
# the other rows keep their own, small steps. For activations, Eq. {eq}`eq-ch12-intmm` needs one
# scale per *row of $x$* (per token) or per tensor, because the sum in the product runs over the
# feature dimension and a per-feature scale cannot be pulled out of it. An outlier feature
# therefore coarsens every token's quantization. LLM.int8() splits the product: the few outlier
# feature columns are multiplied in 16-bit floats, the rest in int8.
# :::
#
# :::{exercise}
# :label: ch12-ex-amdahl
# Suppose the linear layers take a share $p$ of the float32 model's time at batch 32 and int8 makes
# them $k$ times faster while the rest is unchanged. Write the overall speed-up. With $k = 2$,
# which $p$ is needed for a 1.5x speed-up? What does this say about where to look for more speed?
# :::
#
# :::{solution} ch12-ex-amdahl
# :class: dropdown
# Amdahl's law: speed-up $= 1 / \bigl((1 - p) + p / k\bigr)$. With $k = 2$, $1 / (1 - p/2) \ge 1.5$
# needs $p \ge 2/3$: the linear layers must take at least two thirds of the time. Whatever stays in
# float32 caps the gain at $1 / (1 - p)$. For more speed, shrink the rest too: fewer layers
# (distillation, chapter 14), shorter inputs, fused attention kernels; or make the int8 kernels
# faster (a CPU with VNNI).
# :::
#
# :::{exercise}
# :label: ch12-ex-linear
# Write `my_int8_linear(x, weight, bias)` that computes a linear layer the way Eq.
# {eq}`eq-ch12-intmm` does: the weight `(out, in)` quantized **symmetrically per output row** to
# int8, the input `(N, in)` quantized **asymmetrically per tensor** to uint8 with the full range
# $[0, 255]$, the product of the integer codes (minus the zero point) accumulated in int32 (or
# int64), then rescaled, and `bias` added. Return float32 `(N, out)`. `dlbook.quantize.qparams` and
# `quantize` may help.
# :::


# %%
def my_int8_linear(x, weight, bias):
    raise NotImplementedError  # your code here


dlbook.exercises.check("ch12.int8_linear", my_int8_linear)

# %% [markdown]
# ```{solution-start} ch12-ex-linear
# :class: dropdown
# ```


# %% tags=["solution"]
def my_int8_linear(x, weight, bias):
    s_w, z_w = quantize.qparams(weight, symmetric=True, axis=0)  # (out,), zeros
    q_w = quantize.quantize(weight, s_w, z_w, axis=0).to(torch.int64)  # (out, in)
    s_x, z_x = quantize.qparams(x, symmetric=False, dtype=torch.uint8)  # scalars
    q_x = quantize.quantize(x, s_x, z_x, dtype=torch.uint8).to(torch.int64)  # (N, in)
    acc = (q_x - z_x) @ q_w.T  # (N, out) exact integer sums
    return acc.float() * (s_x * s_w) + bias  # s_w broadcasts over the output columns


assert dlbook.exercises.check("ch12.int8_linear", my_int8_linear)
xx, lin = (
    torch.randn(4, 1536),
    fp32.bert.encoder.layer[5].output.dense,
)  # Linear(1536 -> 384)
mine = my_int8_linear(xx, lin.weight.detach(), lin.bias.detach())  # (4, 384)
print(f"vs float32 on a real layer: max diff {(mine - lin(xx)).abs().max():.3f}")

# %% [markdown]
# ```{solution-end}
# ```
#
# :::{exercise}
# :label: ch12-ex-size
# Without running anything: MiniLM's classifier has {glue:text}`ch12_n_params:,` parameters. What
# size on disk do you expect in float32, in bf16, and with every weight in int8? The measured
# int8 model is larger than your last estimate; where do the extra bytes come from?
# :::
#
# :::{solution} ch12-ex-size
# :class: dropdown
# 4, 2 and 1 bytes per parameter: about 91, 45 and 23 MB. The measured int8 model
# ({glue:text}`ch12_mb_int8:.1f` MB) also stores the LayerNorm weights and all biases in float32, a
# float32 scale per embedding row (30,522 of them), the packed weights' scales and zero points, and
# the pickle framing of a few hundred tensors; the position embeddings are small and quantized too.
# `measure.saved_size_mb` counts exactly what is written, which is why Part IV uses it.
# :::
#
# :::{exercise}
# :label: ch12-ex-qat
# The QAT run of section 12.7 trains the weights for more steps *and* puts the rounding in the
# loop. Design the control that separates the two effects, and say which paired comparison on
# the validation split would show that the rounding in the loop, not the extra training, made a
# difference. Run it with `qat_steps` steps of plain float training followed by the same static
# calibration.
# :::
#
# :::{solution} ch12-ex-qat
# :class: dropdown
# Train a copy of the float32 model for the same steps, on the same batches, with the same
# optimizer and learning rate but without fake quantization; then calibrate it with the same
# observer and batches (post-training quantization of the further-trained model). Compare that
# model with the QAT model on the same validation snippets with `stats.compare`: a paired
# interval that excludes 0 in favour of QAT credits the rounding in the loop; an interval around
# 0 says the extra training, if anything, made the difference. A single seed can mislead when
# the difference is a few snippets: repeat with three seeds of the loader's order.
# :::
#
# ## Further reading
#
# - Integer-only inference, the affine scheme and its derivation {cite}`jacob2018quantization`.
# - Outlier features in large transformers and mixed int8/fp16 products {cite}`dettmers2022llmint8`;
#   outlier dimensions in BERT and per-embedding-group quantization
#   {cite}`bondarenko2021understanding`.
# - Four-bit weights: GPTQ {cite}`frantar2023gptq`, AWQ {cite}`lin2024awq`, llama.cpp's
#   k-quants {cite}`kawrakow2023kquants`.
# - bfloat16 for training {cite}`kalamkar2019bfloat16`; mixed precision with fp16 {cite}`micikevicius2018mixed`.
# - PyTorch's tutorial on dynamic quantization of BERT {cite}`pytorch2020bertdynamicquant`, the
#   anchor for this chapter's numbers.
