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
# (ch08)=
# # 8. BERT inside out
#
# BERT {cite}`devlin2019bert` is the Transformer encoder of chapter 7 with two additions: an input
# layer that turns WordPiece ids, positions and segment ids into vectors, and a pretraining task,
# masked language modelling, that lets it learn from raw text. This chapter opens a real checkpoint,
# the six-layer MiniLM encoder that ships with the book, rebuilds it from the book's own attention
# and encoder-layer modules, and checks that the rebuilt model computes the same numbers as
# Hugging Face's `BertModel`. Then it pretrains a tiny BERT from scratch on movie reviews, and is
# honest about how far a few minutes of CPU time get.
#
# By the end of this chapter you can
#
# 1. follow a review from text to WordPiece pieces, ids, segment ids and attention mask, and write
#    WordPiece's greedy longest-match rule yourself;
# 2. assemble BERT's embedding layer and encoder stack from the components of chapters 6 and 7,
#    load pretrained weights into them and reproduce `BertModel` to within $10^{-5}$;
# 3. read attention maps of a real sentence and measure what individual heads attend to;
# 4. implement the masked-language-model corruption (the 80/10/10 recipe) and loss, pretrain a small
#    BERT, and judge the result against baselines that ignore context;
# 5. explain what next-sentence prediction was and why later models dropped or replaced it.

# %%
# In Colab, install the book's helpers and offline assets first (nothing happens elsewhere).
import sys

if "google.colab" in sys.modules:
    import subprocess

    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "dlbook[assets] @ git+https://github.com/dlbook-verified/deep-learning-verified"], check=True)
    subprocess.run([sys.executable, "-m", "dlbook.colab"], check=True)

# %%
import math
import os
import time
from collections import Counter

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForMaskedLM,
    BertForPreTraining,
    BertModel,
    DataCollatorForLanguageModeling,
    get_linear_schedule_with_warmup,
    pipeline,
)
from transformers.activations import ACT2FN
from transformers.masking_utils import create_bidirectional_mask

import dlbook
import dlbook.exercises
from dlbook import assets
from dlbook.nn.bert import BertEmbeddings, BertEncoderFromScratch, extended_attention_mask, mask_tokens, padding_mask
from dlbook.nn.transformer import EncoderLayer, LayerNorm

device = dlbook.setup(seed=0)

# %% tags=["parameters"]
profile = os.environ.get("DLBOOK_PROFILE", "full")

# %%
sizes = dlbook.by_profile(
    profile,
    smoke=dict(n_wordpiece=300, n_compare=6, n_heads_batch=8, n_mask_stats=256, n_train=512, n_val=32,
               max_len=32, d_model=32, n_layers=1, n_heads=2, d_ff=64,
               steps=6, batch_size=16, lr=1e-3, warmup=2, eval_every=3),
    full=dict(n_wordpiece=10_252, n_compare=64, n_heads_batch=256, n_mask_stats=4_096, n_train=10_252, n_val=1_000,
              max_len=64, d_model=128, n_layers=2, n_heads=2, d_ff=512,
              steps=1_200, batch_size=32, lr=1e-3, warmup=100, eval_every=150),
)
sizes

# %% [markdown]
# The pretrained encoder and its tokenizer come from the offline MiniLM folder
# {cite}`wang2020minilm,reimers2019sentencebert`; the text is the Rotten Tomatoes critic snippets
# {cite}`pang2005seeing` (research use only, like the original data).

# %%
model_path = assets.minilm_path()
reviews = assets.rotten_tomatoes()
tokenizer = AutoTokenizer.from_pretrained(model_path)
train_texts = list(reviews["train"]["text"])
val_texts = list(reviews["validation"]["text"])
print(type(tokenizer).__name__, "| vocabulary:", len(tokenizer), "| reviews:", len(train_texts), "train,", len(val_texts), "validation")

# %% [markdown]
# ## 8.1 From review text to ids
#
# Chapter 1 used the tokenizer as a black box. Here we open it. A BERT tokenizer works in three
# stages: it **normalises** the text (this checkpoint is uncased: lowercase, strip accents, clean
# control characters), **pre-tokenises** it into words and punctuation marks, and then cuts each word
# into **WordPiece** units {cite}`wu2016google`. We take the first validation review that contains a
# word the vocabulary does not hold whole.

# %%
backend = tokenizer.backend_tokenizer  # the Rust tokenizer behind the Python object
vocab = tokenizer.get_vocab()  # piece -> id, 30,522 entries


def words_of(text):
    """Normalise and pre-tokenise: the words WordPiece will cut."""
    return [w for w, _ in backend.pre_tokenizer.pre_tokenize_str(backend.normalizer.normalize_str(text))]


review = next(t for t in val_texts if len(t.split()) <= 25 and any(len(tokenizer.tokenize(w)) >= 3 for w in words_of(t)))
print(review)
print(words_of(review))
print(tokenizer.tokenize(review))

# %% [markdown]
# A word that is in the vocabulary stays whole; a rarer one is cut into a first piece and
# continuation pieces marked `##`. The rule is greedy: take the **longest prefix** of the
# remaining characters that is in the vocabulary, emit it (with `##` if it is not at the start of
# the word), and repeat on the rest. If some remainder has no piece at all, the whole word becomes
# `[UNK]`. Here it is, in a dozen lines:

# %%
def wordpiece(word, vocab, unk="[UNK]", max_chars=100):
    """Greedy longest-match-first WordPiece for one pre-tokenised word."""
    if len(word) > max_chars:
        return [unk]
    pieces, start = [], 0
    while start < len(word):
        end = len(word)
        while end > start:  # shrink the candidate from the right until it is a known piece
            piece = word[start:end] if start == 0 else "##" + word[start:end]
            if piece in vocab:
                break
            end -= 1
        if end == start:  # not even one character matched
            return [unk]
        pieces.append(piece)
        start = end
    return pieces


[wordpiece(w, vocab) for w in words_of(review)]

# %% [markdown]
# Verification: on every review in the sample, our pieces must be exactly the tokenizer's.

# %%
n_words = n_split = n_pieces = 0
for text in train_texts[: sizes["n_wordpiece"]]:
    ours = [wordpiece(w, vocab) for w in words_of(text)]
    assert [p for ps in ours for p in ps] == tokenizer.tokenize(text), text
    n_words += len(ours)
    n_split += sum(len(ps) > 1 for ps in ours)
    n_pieces += sum(len(ps) for ps in ours)
print(f"{sizes['n_wordpiece']} reviews, {n_words} words: identical pieces; "
      f"{n_split / n_words:.1%} of words split, {n_pieces / n_words:.3f} pieces per word")
dlbook.glue("wp_reviews", sizes["n_wordpiece"])
dlbook.glue("wp_words", n_words)
dlbook.glue("wp_split_pct", 100 * n_split / n_words)
dlbook.glue("wp_pieces_per_word", n_pieces / n_words)

# %% [markdown]
# Our dozen lines reproduce the tokenizer on all {glue:text}`wp_words` words of
# {glue:text}`wp_reviews` reviews. Only {glue:text}`wp_split_pct:.1f`% of the words are split, so a
# review costs {glue:text}`wp_pieces_per_word:.2f` pieces per word on average: the vocabulary was
# built so that frequent words stay whole.
#
# ### Special tokens, segments and the attention mask
#
# BERT reads one or two **segments**. The tokenizer wraps them as `[CLS] A [SEP]` or
# `[CLS] A [SEP] B [SEP]` and returns, beside the ids, `token_type_ids` (the segment of each token:
# 0 for A, 1 for B) and `attention_mask` (1 for a real token, 0 for padding). We use a review
# with two sentences as the pair.

# %%
print({t: tokenizer.convert_tokens_to_ids(t) for t in tokenizer.all_special_tokens})
pair_text = next(t for t in val_texts if t.count(". ") == 1 and len(t.split()) <= 40)
sent_a, sent_b = (s.strip() for s in pair_text.split(". ", 1))
sent_a += "."
pair = tokenizer(sent_a, sent_b)
for name in ("input_ids", "token_type_ids", "attention_mask"):
    print(f"{name:>15}:", pair[name])
print(" " * 15, tokenizer.convert_ids_to_tokens(pair["input_ids"]))

# %% [markdown]
# A batch of sentences of different lengths is padded to the longest with `[PAD]` (id 0), and the
# attention mask marks which positions are real:

# %%
batch = tokenizer(["A real snooze.", sent_a, "Director Nolan shows here he can handle clever material."],
                  padding=True, return_tensors="pt")
for ids, mask in zip(batch["input_ids"], batch["attention_mask"], strict=True):
    print(" ".join(f"{t}{'' if m else '*'}" for t, m in zip(tokenizer.convert_ids_to_tokens(ids), mask, strict=True)))
print("(* = padding, attention_mask 0)")

# %% [markdown]
# ## 8.2 The input layer: three embeddings, summed
#
# The model turns token $t$ of the input, with id $x_t$ and segment $s_t$, into a vector by adding
# three learned rows and normalising the sum:
#
# $$
# h^{(0)}_t = \mathrm{LayerNorm}\big(E_{\mathrm{tok}}[x_t] + E_{\mathrm{pos}}[t] + E_{\mathrm{seg}}[s_t]\big)
# $$ (eq-bert-embeddings)
#
# followed by dropout in training. Positions are *learned* vectors, one per position up to 512, not
# the sinusoids of chapter 7. LayerNorm is the one of chapter 7 with BERT's $\epsilon = 10^{-12}$.
# We load the pretrained MiniLM encoder and compute Eq. {eq}`eq-bert-embeddings` by hand from its
# weight tables.

# %%
hf = BertModel.from_pretrained(model_path).to(device).eval()
cfg = hf.config
print(f"layers={cfg.num_hidden_layers} hidden={cfg.hidden_size} heads={cfg.num_attention_heads} "
      f"ffn={cfg.intermediate_size} act={cfg.hidden_act} eps={cfg.layer_norm_eps} positions={cfg.max_position_embeddings}")

# %%
emb = hf.embeddings
pair_pt = tokenizer(sent_a, sent_b, return_tensors="pt").to(device)
ids, seg = pair_pt["input_ids"], pair_pt["token_type_ids"]  # (1, T) each
T = ids.shape[1]
with torch.no_grad():
    summed = (emb.word_embeddings.weight[ids]  # (1, T, 384): one row per token id
              + emb.position_embeddings.weight[:T]  # (T, 384): one row per position, broadcast over the batch
              + emb.token_type_embeddings.weight[seg])  # (1, T, 384): segment A or B
    norm = LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps).to(device)  # chapter 7's LayerNorm
    norm.load_state_dict(emb.LayerNorm.state_dict())
    h0 = norm(summed)  # (1, T, 384)
    h0_hf = emb(input_ids=ids, token_type_ids=seg)
torch.testing.assert_close(h0, h0_hf)
print("embedding output", tuple(h0.shape), "max |ours - HF| =", f"{(h0 - h0_hf).abs().max().item():.1e}")

# %% [markdown]
# The segment embedding matters only where segment B starts: set every segment id to 0 and the
# vectors of the B tokens change, the A tokens do not. The packaged version of the input layer is
# the same sum:

# %%
dlbook.show(BertEmbeddings)

# %%
packaged_emb = BertEmbeddings(cfg.vocab_size, cfg.hidden_size, cfg.max_position_embeddings, cfg.type_vocab_size,
                              eps=cfg.layer_norm_eps).to(device).eval()
with torch.no_grad():
    for ours, theirs in ((packaged_emb.token, emb.word_embeddings), (packaged_emb.position, emb.position_embeddings),
                         (packaged_emb.segment, emb.token_type_embeddings), (packaged_emb.norm, emb.LayerNorm)):
        ours.load_state_dict(theirs.state_dict())
    torch.testing.assert_close(packaged_emb(ids, seg), h0)
    changed = (packaged_emb(ids, seg) - packaged_emb(ids)).abs().amax(-1)[0]  # (T,): effect of the segment ids
print("tokens whose vector depends on the segment id:", int((changed > 0).sum()), "of", T,
      "| segment B tokens:", int(seg.sum()))
assert torch.equal(changed > 0, seg[0].bool())

# %% [markdown]
# ## 8.3 The encoder stack, from the book's parts
#
# Each of BERT's layers is the **post-norm** encoder layer of chapter 7 with a GELU feed-forward
# network: with $h$ the layer's input,
#
# $$
# a = \mathrm{LayerNorm}_1\big(h + \mathrm{MultiHead}(h, h, h;\ \text{mask})\big), \qquad
# h' = \mathrm{LayerNorm}_2\big(a + W_2\,\mathrm{GELU}(W_1 a + b_1) + b_2\big),
# $$ (eq-bert-layer)
#
# with $\mathrm{GELU}(x) = x\,\Phi(x) = \tfrac{x}{2}\big(1 + \mathrm{erf}(x/\sqrt{2})\big)$
# {cite}`hendrycks2016gelu`, the exact form, not the tanh approximation. First the GELU, checked
# against PyTorch and against the function the checkpoint's config names:

# %%
x = torch.linspace(-6, 6, 1001)
gelu_ours = x / 2 * (1 + torch.erf(x / math.sqrt(2)))
torch.testing.assert_close(gelu_ours, F.gelu(x))
torch.testing.assert_close(gelu_ours, ACT2FN[cfg.hidden_act](x))
print("GELU = x Phi(x): matches F.gelu and transformers' ACT2FN['gelu'];",
      f"the tanh approximation differs by up to {(F.gelu(x, approximate='tanh') - gelu_ours).abs().max():.1e}")

# %% [markdown]
# ### The attention mask
#
# Padding must be invisible. Every query attends only to the real tokens of its own sequence: the
# logits of padded keys get a large negative number added before the softmax, so their weights are
# exactly zero,
#
# $$
# \alpha_{ij} = \mathrm{softmax}_j\Big(\frac{q_i \cdot k_j}{\sqrt{d_k}} + m_j\Big), \qquad
# m_j = \begin{cases} 0 & \text{token } j \text{ is real} \\ \text{most negative float} & \text{token } j \text{ is padding.} \end{cases}
# $$ (eq-bert-mask)
#
# The `(batch, seq)` attention mask becomes a `(batch, 1, 1, seq)` tensor that broadcasts over heads
# and queries. The book's attention modules take it either as a boolean "may attend" mask or as the
# additive $m$ (the "extended attention mask"). Both forms must equal what `transformers` builds
# internally for its SDPA and eager attention code:

# %%
real = tokenizer(val_texts[: sizes["n_compare"]], padding=True, return_tensors="pt").to(device)
am = real["attention_mask"]  # (B, T), 1 = real token
hf_eager = BertModel.from_pretrained(model_path, attn_implementation="eager").to(device).eval()  # the same weights
print("attention code:", hf.config._attn_implementation, "and", hf_eager.config._attn_implementation)
x_dummy = torch.zeros(*am.shape, cfg.hidden_size, device=device)
hf_bool = create_bidirectional_mask(config=hf.config, inputs_embeds=x_dummy, attention_mask=am)  # (B, 1, T, T)
hf_additive = create_bidirectional_mask(config=hf_eager.config, inputs_embeds=x_dummy, attention_mask=am)
assert torch.equal(padding_mask(am).expand_as(hf_bool), hf_bool)
assert torch.equal(extended_attention_mask(am).expand_as(hf_additive), hf_additive)
print("boolean mask", tuple(padding_mask(am).shape), "and additive mask", tuple(extended_attention_mask(am).shape),
      "match transformers'; padded positions:", int((am == 0).sum()), "of", am.numel())

# %% [markdown]
# ### One layer, by hand
#
# Chapter 7's `EncoderLayer` with `norm_first=False`, `activation="gelu"` and `eps=1e-12` *is* a BERT
# layer; only the parameter names differ. We copy the weights of MiniLM's first layer into one and
# compare its output with the hidden state `transformers` reports after layer 1, on a batch of real
# reviews **with padding**.

# %%
def load_bert_layer(ours: EncoderLayer, theirs) -> EncoderLayer:
    """Copy one transformers BertLayer into the book's EncoderLayer (names differ, maths do not)."""
    pairs = [
        (ours.self_attn.q_proj, theirs.attention.self.query),
        (ours.self_attn.k_proj, theirs.attention.self.key),
        (ours.self_attn.v_proj, theirs.attention.self.value),
        (ours.self_attn.out_proj, theirs.attention.output.dense),
        (ours.norm1, theirs.attention.output.LayerNorm),  # after attention + residual
        (ours.ff.linear1, theirs.intermediate.dense),  # 384 -> 1536, then GELU
        (ours.ff.linear2, theirs.output.dense),  # 1536 -> 384
        (ours.norm2, theirs.output.LayerNorm),  # after feed-forward + residual
    ]
    for mine, hf_module in pairs:
        mine.load_state_dict(hf_module.state_dict())
    return ours


layer0 = EncoderLayer(cfg.hidden_size, cfg.num_attention_heads, cfg.intermediate_size, dropout=0.0,
                      activation="gelu", norm_first=False, eps=cfg.layer_norm_eps).to(device).eval()
load_bert_layer(layer0, hf.encoder.layer[0])
with torch.no_grad():
    states = hf(**real, output_hidden_states=True).hidden_states  # embeddings, then after each layer
    out0 = layer0(states[0], mask=padding_mask(am))  # (B, T, 384)
keep = am.bool()  # compare real tokens only
torch.testing.assert_close(out0[keep], states[1][keep], atol=1e-5, rtol=1e-5)
print(f"layer 1: max |ours - HF| over real tokens = {(out0 - states[1])[keep].abs().max().item():.1e}")

# %% [markdown]
# ### The whole encoder, and the headline check
#
# The packaged `BertEncoderFromScratch` is the input layer of Eq. {eq}`eq-bert-embeddings` under
# chapter 7's `Encoder` (a stack of those layers) and nothing else; `from_hf` builds one shaped
# like a `transformers` model and copies every weight through a name map.

# %%
dlbook.show(BertEncoderFromScratch.forward)

# %%
ours_bert = BertEncoderFromScratch.from_hf(hf).to(device)
n_ours = sum(p.numel() for p in ours_bert.parameters())
n_hf = sum(p.numel() for n, p in hf.named_parameters() if not n.startswith("pooler"))
assert n_ours == n_hf
with torch.no_grad():
    want = hf(**real).last_hidden_state  # (B, T, 384)
    got = ours_bert(real["input_ids"], real["attention_mask"], real["token_type_ids"]).last_hidden_state
bert_max_abs_diff = (got - want)[keep].abs().max().item()
torch.testing.assert_close(got[keep], want[keep], atol=1e-5, rtol=1e-5)
print(f"{am.shape[0]} reviews padded to {am.shape[1]} tokens ({int((~keep).sum())} padded positions); "
      f"{n_ours:,} parameters; max |ours - HF| over the {int(keep.sum())} real tokens = {bert_max_abs_diff:.2e}")
dlbook.glue("cmp_reviews", am.shape[0])
dlbook.glue("cmp_real_tokens", int(keep.sum()))
dlbook.glue("cmp_pad_tokens", int((~keep).sum()))
_ = dlbook.headline("bert_max_abs_diff", bert_max_abs_diff, profile=profile, at_most=1e-5, fmt="{:.2e}")

# %% [markdown]
# On {glue:text}`cmp_reviews` real reviews, padded into one batch, the encoder assembled from the
# book's parts reproduces `BertModel`'s `last_hidden_state` to a largest absolute difference of
# {glue:text}`bert_max_abs_diff` over all {glue:text}`cmp_real_tokens` real tokens: float32
# round-off, summed over six layers. We compare **only the real tokens**, not the
# {glue:text}`cmp_pad_tokens` padded positions. The model still computes vectors there (a padded
# query attends to the real keys like any other), but nothing downstream reads them, and an
# implementation is free to put anything there.
#
# What happens if the mask is forgotten? The real tokens then attend to the padding too, and their
# vectors move:

# %%
with torch.no_grad():
    no_mask = ours_bert(real["input_ids"], token_type_ids=real["token_type_ids"]).last_hidden_state
shift = (no_mask - want)[keep].abs().max().item()
print(f"without the attention mask: max change of a real token's vector = {shift:.2f}")
dlbook.glue("no_mask_shift", shift)

# %% [markdown]
# A change of {glue:text}`no_mask_shift:.2f` on vectors whose entries are of order one: a padded
# batch would give each review a different representation depending on its neighbours in the
# batch. That is the bug the mask prevents.
#
# ## 8.4 What the heads look at
#
# Each of the {glue:text}`n_heads_total` heads (6 layers of 12) computes its own attention
# distribution. The book's encoder returns them; first we check them against `transformers`'s
# attention weights (from the eager implementation loaded above, the one that can return them).

# %%
with torch.no_grad():
    att_hf = hf_eager(**real, output_attentions=True).attentions  # 6 x (B, 12, T, T)
    att_ours = ours_bert(real["input_ids"], real["attention_mask"], real["token_type_ids"], output_attentions=True).attentions
# (B, H, T, T) -> (B, T, H, T), so that keep (B, T) selects the rows of real queries
att_diff = max((a - b).transpose(1, 2)[keep].abs().max().item() for a, b in zip(att_ours, att_hf, strict=True))
assert att_diff < 1e-5
print(f"attention weights of all {len(att_ours)} layers: max |ours - HF| over real queries = {att_diff:.1e}")
dlbook.glue("n_heads_total", cfg.num_hidden_layers * cfg.num_attention_heads)

# %% [markdown]
# To say what a head does, we measure it over many reviews: for every head, the average weight that
# a real token puts on the **previous** token, the **next** token, **itself**, on **[CLS]** and on
# **[SEP]**. Clark et al. {cite}`clark2019does` found such positional heads and heavy attention to
# [SEP] in BERT-base; do they exist in this small distilled model?

# %%
def head_profile(model, texts, batch_size=64):
    """Average attention of real query tokens to 5 targets, per layer and head: (L, H, 5)."""
    totals, n_queries = 0.0, 0
    for i in range(0, len(texts), batch_size):
        enc = tokenizer(texts[i : i + batch_size], padding=True, return_tensors="pt").to(device)
        am_b = enc["attention_mask"].bool()  # (B, T)
        with torch.no_grad():
            att = torch.stack(model(enc["input_ids"], enc["attention_mask"], output_attentions=True).attentions, 1)
        att = att * am_b[:, None, None, :, None]  # (B, L, H, T, T): zero the rows of padded queries
        sep_at = am_b.sum(1) - 1  # (B,) position of [SEP]
        prev = att.diagonal(offset=-1, dim1=-2, dim2=-1).sum(-1)  # (B, L, H): weight on token t-1, summed over t
        nxt = att.diagonal(offset=1, dim1=-2, dim2=-1).sum(-1)
        self_ = att.diagonal(dim1=-2, dim2=-1).sum(-1)
        cls = att[..., 0].sum(-1)
        sep = att.gather(-1, sep_at.view(-1, 1, 1, 1, 1).expand(*att.shape[:-1], 1)).squeeze(-1).sum(-1)
        totals = totals + torch.stack([prev, nxt, self_, cls, sep], -1).sum(0)  # (L, H, 5)
        n_queries += int(am_b.sum())
    return (totals / n_queries).cpu()


targets = ["previous token", "next token", "itself", "[CLS]", "[SEP]"]
profile_lh = head_profile(ours_bert, val_texts[: sizes["n_heads_batch"]])  # (6, 12, 5)
fig, axes = plt.subplots(1, 5, figsize=(15, 2.8), sharey=True)
for k, ax in enumerate(axes):
    im = ax.imshow(profile_lh[..., k], vmin=0, vmax=1, cmap="viridis")
    ax.set_title(f"to {targets[k]}")
    ax.set_xticks(range(cfg.num_attention_heads), [str(h + 1) for h in range(cfg.num_attention_heads)], fontsize=7)
    ax.set_xlabel("head")
axes[0].set_ylabel("layer")
axes[0].set_yticks(range(cfg.num_hidden_layers), [str(i + 1) for i in range(cfg.num_hidden_layers)])
fig.colorbar(im, ax=axes, shrink=0.8, label="mean attention weight")
plt.show()

# %%
best = {}
for k, name in enumerate(targets):
    flat = int(profile_lh[..., k].argmax())
    layer, head = divmod(flat, cfg.num_attention_heads)
    best[name] = (layer, head, profile_lh[layer, head, k].item())
    print(f"strongest '{name}' head: layer {layer + 1}, head {head + 1}, mean weight {best[name][2]:.2f}")
per_layer_special = (profile_lh[..., 3] + profile_lh[..., 4]).mean(1)  # (L,)
print("mean attention on [CLS] + [SEP] by layer:", [round(v, 2) for v in per_layer_special.tolist()])
dlbook.glue("best_prev", best["previous token"][2])
dlbook.glue("best_next", best["next token"][2])
dlbook.glue("best_sep", best["[SEP]"][2])
dlbook.glue("best_cls", best["[CLS]"][2])
dlbook.glue("best_cls_layer", best["[CLS]"][0] + 1)
if profile == "full":  # what the prose below says
    assert best["previous token"][2] > 0.5 and best["next token"][2] > 0.5 and best["[CLS]"][2] > 2 * best["[SEP]"][2]
dlbook.glue("special_max_layer", int(per_layer_special.argmax()) + 1)
dlbook.glue("special_max", per_layer_special.max().item())

# %% [markdown]
# The measurement finds sharply positional heads: the strongest "previous token" head puts on
# average {glue:text}`best_prev:.2f` of its weight on the token just before, the strongest "next
# token" head {glue:text}`best_next:.2f` on the token just after. Clark et al. also saw many heads of
# BERT-base put most of their weight on [SEP] and read it as a "no-op": a head with nothing to
# contribute at a position parks its weight on a token that is always there. This distilled model
# parks on **[CLS]** instead: a head in layer {glue:text}`best_cls_layer` puts
# {glue:text}`best_cls:.2f` of its weight there, while no head gives [SEP] more than
# {glue:text}`best_sep:.2f`. Attention to the two special tokens together peaks in layer
# {glue:text}`special_max_layer`, at {glue:text}`special_max:.2f` on average over its heads. Here
# are the strongest heads on one review:

# %%
example = tokenizer(review, return_tensors="pt").to(device)
tokens = tokenizer.convert_ids_to_tokens(example["input_ids"][0])
with torch.no_grad():
    ex_att = ours_bert(example["input_ids"], example["attention_mask"], output_attentions=True).attentions
show = ["previous token", "next token", "[CLS]"]
fig, axes = plt.subplots(1, 3, figsize=(16, 5.6))
for ax, name in zip(axes, show, strict=True):
    layer, head, score = best[name]
    ax.imshow(ex_att[layer][0, head].cpu(), vmin=0, vmax=1, cmap="Blues")
    ax.set_title(f"layer {layer + 1}, head {head + 1}: '{name}'")
    ax.set_xticks(range(len(tokens)), tokens, rotation=90, fontsize=7)
    ax.set_yticks(range(len(tokens)), tokens, fontsize=7)
    ax.set_xlabel("key (attended to)")
axes[0].set_ylabel("query")
plt.tight_layout()
plt.show()

# %% [markdown]
# Rows are queries, columns are the keys they attend to. The first two maps are a band just below
# and just above the diagonal: these heads copy information from a neighbour, the way a
# convolution would; the third is a column on [CLS]. Such patterns are easy to find; heads that track syntax or coreference are
# rarer and need probing to find {cite}`clark2019does,rogers2020primer`. An attention map shows
# where information *can* flow, not what the model uses it for.
#
# ## 8.5 The masked-language-model objective
#
# BERT learns from unlabelled text by filling in blanks. For each sequence it picks a random 15% of
# the non-special positions, $M$, corrupts the input at those positions, and asks the model to
# recover the original tokens there {cite}`devlin2019bert`:
#
# $$
# \mathcal{L}_{\mathrm{MLM}} = -\frac{1}{|M|} \sum_{i \in M} \log p_\theta\big(x_i \mid \tilde{x}\big),
# $$ (eq-mlm-loss)
#
# where $\tilde{x}$ is the corrupted sequence and $p_\theta(\cdot \mid \tilde{x})$ the softmax over the
# whole vocabulary at position $i$. The corruption of a chosen position is the **80/10/10 recipe**:
# with probability 0.8 the token becomes `[MASK]`, with 0.1 a random token, and with 0.1 it stays as
# it is. Why not always `[MASK]`? Because `[MASK]` never occurs when the model is later fine-tuned;
# the random and unchanged tokens mean that the model can never be sure a visible token is the
# real one, so it has to build a good representation of *every* position. Step by step, on a batch
# of real reviews:

# %%
enc = tokenizer(val_texts[:4], padding=True, truncation=True, max_length=sizes["max_len"], return_tensors="pt")
input_ids = enc["input_ids"]  # (B, T), on the CPU: masking is data preparation
gen = torch.Generator().manual_seed(0)
special = torch.isin(input_ids, torch.tensor(tokenizer.all_special_ids))  # (B, T): [CLS], [SEP], [PAD] never chosen
u_select = torch.rand(input_ids.shape, generator=gen)  # (B, T) one uniform per position
u_action = torch.rand(input_ids.shape, generator=gen)  # (B, T) decides what happens to a chosen token
random_ids = torch.randint(len(tokenizer), input_ids.shape, generator=gen)  # (B, T) candidates for the 10%
chosen = (u_select < 0.15) & ~special  # the set M
to_mask = chosen & (u_action < 0.8)  # 80%: [MASK]
to_random = chosen & (u_action >= 0.8) & (u_action < 0.9)  # 10%: a random token; the last 10% stay
corrupted = input_ids.clone()
corrupted[to_mask] = tokenizer.mask_token_id
corrupted[to_random] = random_ids[to_random]
labels = torch.where(chosen, input_ids, -100)  # -100: no loss at this position
print(tokenizer.decode(input_ids[0], skip_special_tokens=True))
print(tokenizer.decode(corrupted[0][enc["attention_mask"][0].bool()]))
print("labels:", tokenizer.convert_ids_to_tokens(labels[0][chosen[0]]))

# %% [markdown]
# The packaged `mask_tokens` is the same procedure (same order of random draws, so the same
# generator state gives the same corruption):

# %%
dlbook.show(mask_tokens)

# %%
packaged_inputs, packaged_labels = mask_tokens(input_ids, tokenizer.all_special_ids, tokenizer.mask_token_id,
                                               len(tokenizer), generator=torch.Generator().manual_seed(0))
assert torch.equal(packaged_inputs, corrupted) and torch.equal(packaged_labels, labels)

# %% [markdown]
# `transformers` ships the same recipe as `DataCollatorForLanguageModeling` (defaults
# `mlm_probability=0.15`, `mask_replace_prob=0.8`, `random_replace_prob=0.1`). It draws its random
# numbers differently, so the two agree in distribution, not position by position. We corrupt the
# same real reviews with both and compare the rates:

# %%
stat_ids = tokenizer(train_texts[: sizes["n_mask_stats"]], padding=True, truncation=True, max_length=64,
                     return_tensors="pt")["input_ids"]
ours_in, ours_lab = mask_tokens(stat_ids, tokenizer.all_special_ids, tokenizer.mask_token_id, len(tokenizer),
                                generator=torch.Generator().manual_seed(1))
collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15, seed=1)
hf_in, hf_lab = collator.torch_mask_tokens(stat_ids.clone())
eligible = ~torch.isin(stat_ids, torch.tensor(tokenizer.all_special_ids))


def rates(inputs, labels):
    ch = labels != -100
    n = int(ch.sum())
    return dict(chosen=n / int(eligible.sum()), mask=int((ch & (inputs == tokenizer.mask_token_id)).sum()) / n,
                random=int((ch & (inputs != tokenizer.mask_token_id) & (inputs != stat_ids)).sum()) / n,
                unchanged=int((ch & (inputs == stat_ids)).sum()) / n, special_chosen=int((ch & ~eligible).sum()))


r_ours, r_hf = rates(ours_in, ours_lab), rates(hf_in, hf_lab)
n_el = int(eligible.sum())
print(f"{n_el:,} eligible tokens in {sizes['n_mask_stats']} reviews")
print(f"{'':>15} {'ours':>8} {'HF':>8} {'target':>8}")
for key, target in (("chosen", 0.15), ("mask", 0.8), ("random", 0.1), ("unchanged", 0.1), ("special_chosen", 0)):
    print(f"{key:>15} {r_ours[key]:8.3f} {r_hf[key]:8.3f} {target:8.3f}")
for r in (r_ours, r_hf):
    n_ch = r["chosen"] * n_el
    assert abs(r["chosen"] - 0.15) < 5 * math.sqrt(0.15 * 0.85 / n_el) and r["special_chosen"] == 0
    for key, p in (("mask", 0.8), ("random", 0.1), ("unchanged", 0.1)):
        assert abs(r[key] - p) < 5 * math.sqrt(p * (1 - p) / n_ch), (key, r[key])

# %% [markdown]
# Both hit the recipe within sampling noise (the assertions allow five standard errors), and neither
# ever chooses a special token.
#
# ### The loss, checked
#
# `BertForMaskedLM` adds an **MLM head** on top of the encoder: a dense layer with GELU and
# LayerNorm, then a projection to the vocabulary whose weight matrix is *tied* to the token
# embedding table $E_{\mathrm{tok}}$, plus a bias. Its `loss` is Eq. {eq}`eq-mlm-loss`. Since only
# the chosen 15% of positions carry a loss, we can run the head on those positions only, which saves
# most of the head's cost (a {glue:text}`vocab_size`-way projection per position). Both ways must
# give `transformers`' number. We check it on a small untrained model, the one we are about to
# pretrain:

# %%
tiny_config = BertConfig(
    vocab_size=len(tokenizer),  # the full MiniLM WordPiece vocabulary: we keep the tokenizer as it is
    hidden_size=sizes["d_model"], num_hidden_layers=sizes["n_layers"], num_attention_heads=sizes["n_heads"],
    intermediate_size=sizes["d_ff"], max_position_embeddings=sizes["max_len"],
    hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,  # a few minutes of training: no regularisation needed
)
torch.manual_seed(0)
tiny = BertForMaskedLM(tiny_config).to(device)
n_tiny = sum(p.numel() for p in tiny.parameters())
n_tiny_emb = sum(p.numel() for p in tiny.bert.embeddings.parameters())
assert tiny.cls.predictions.decoder.weight is tiny.bert.embeddings.word_embeddings.weight  # tied
print(f"tiny BERT: {n_tiny:,} parameters, {n_tiny_emb / n_tiny:.0%} of them in the embeddings")
dlbook.glue("tiny_params_m", n_tiny / 1e6)
dlbook.glue("tiny_emb_pct", 100 * n_tiny_emb / n_tiny)
dlbook.glue("vocab_size", len(tokenizer))


def mlm_loss(model, inputs, attention_mask, labels):
    """Eq. (eq-mlm-loss), running the vocabulary head only at the chosen positions."""
    hidden = model.bert(input_ids=inputs, attention_mask=attention_mask).last_hidden_state  # (B, T, d)
    chosen = labels != -100  # (B, T)
    logits = model.cls(hidden[chosen])  # (|M|, V)
    return F.cross_entropy(logits, labels[chosen]), logits


with torch.no_grad():
    am_dev = enc["attention_mask"].to(device)
    ref = tiny(input_ids=corrupted.to(device), attention_mask=am_dev, labels=labels.to(device))
    full_logits = ref.logits  # (B, T, V): the head at every position
    by_hand = -full_logits.log_softmax(-1)[chosen.to(device)].gather(1, labels[chosen].to(device)[:, None]).mean()
    fast, _ = mlm_loss(tiny, corrupted.to(device), am_dev, labels.to(device))
torch.testing.assert_close(by_hand, ref.loss)
torch.testing.assert_close(fast, ref.loss)
ln_v = math.log(len(tokenizer))
print(f"loss at initialisation: {ref.loss.item():.3f}  (ln V = {ln_v:.3f})")
dlbook.glue("ln_vocab", ln_v)
dlbook.glue("init_loss", ref.loss.item())
assert abs(ref.loss.item() - ln_v) < 0.1

# %% [markdown]
# At initialisation the logits are nearly equal, so the model assigns about $1/V$ to every token and
# the loss starts at $\ln V =$ {glue:text}`ln_vocab:.2f` (measured: {glue:text}`init_loss:.2f`).
#
# ## 8.6 Pretraining a tiny BERT on reviews
#
# The tiny model has {glue:text}`tiny_params_m:.1f` M parameters, {glue:text}`tiny_emb_pct:.0f`% of
# them in the embedding table: the full vocabulary of {glue:text}`vocab_size` pieces is expensive
# for a small hidden size, but it keeps the real tokenizer. The training data are the training-split
# reviews, corrupted afresh in every batch; a fixed corruption of the validation reviews measures
# progress on text the model never saw.

# %%
def to_ids(texts):
    return [torch.tensor(x) for x in tokenizer(texts, truncation=True, max_length=sizes["max_len"])["input_ids"]]


def make_batch(seqs, generator):
    """Pad a list of id tensors, then corrupt it: (inputs, attention_mask, labels), each (B, T)."""
    ids_b = pad_sequence(seqs, batch_first=True, padding_value=tokenizer.pad_token_id)
    att = (torch.arange(ids_b.shape[1])[None, :] < torch.tensor([len(s) for s in seqs])[:, None]).long()
    inputs, labels_b = mask_tokens(ids_b, tokenizer.all_special_ids, tokenizer.mask_token_id, len(tokenizer),
                                   generator=generator)
    return inputs, att, labels_b


train_ids = to_ids(train_texts[: sizes["n_train"]])
val_ids = to_ids(val_texts[: sizes["n_val"]])
val_gen = torch.Generator().manual_seed(1)
val_batches = [make_batch(val_ids[i : i + 100], val_gen) for i in range(0, len(val_ids), 100)]  # fixed corruption
mask_gen = torch.Generator().manual_seed(2)
loader = torch.utils.data.DataLoader(train_ids, batch_size=sizes["batch_size"], shuffle=True, drop_last=True,
                                     generator=torch.Generator().manual_seed(0),
                                     collate_fn=lambda seqs: make_batch(seqs, mask_gen))
n_train_tokens = sum(len(s) for s in train_ids)
print(f"{len(train_ids):,} training reviews, {n_train_tokens:,} tokens; "
      f"{sum(int((b[2] != -100).sum()) for b in val_batches):,} masked validation positions")
dlbook.glue("train_tokens_k", n_train_tokens / 1000)


@torch.no_grad()
def evaluate(model):
    """Validation MLM loss (Eq. eq-mlm-loss over all masked positions) and top-1 accuracy."""
    model.eval()
    total, correct, n = 0.0, 0, 0
    for inputs, att, lab in val_batches:
        loss, logits = mlm_loss(model, inputs.to(device), att.to(device), lab.to(device))
        k = int((lab != -100).sum())
        total += loss.item() * k
        correct += int((logits.argmax(-1).cpu() == lab[lab != -100]).sum())
        n += k
    model.train()
    return total / n, correct / n

# %% [markdown]
# Two baselines tell us what the numbers mean. A model that ignores the context and always predicts
# the training-set frequency of each piece (a unigram model, add-one smoothed) reaches a loss equal
# to the cross-entropy of that distribution; and its best guess is always the most frequent piece.
# The tiny BERT has learned something from context only if it beats these.

# %%
counts = Counter(t for s in train_ids for t in s.tolist() if t not in tokenizer.all_special_ids)
n_tok = sum(counts.values())
log_unigram = torch.full((len(tokenizer),), -math.log(n_tok + len(tokenizer)))
for t, c in counts.items():
    log_unigram[t] = math.log(c + 1) - math.log(n_tok + len(tokenizer))
val_labels = torch.cat([lab[lab != -100] for _, _, lab in val_batches])
unigram_loss = -log_unigram[val_labels].mean().item()
top_piece, _ = counts.most_common(1)[0]
unigram_acc = (val_labels == top_piece).float().mean().item()
print(f"unigram baseline: loss {unigram_loss:.3f}, accuracy of always guessing {tokenizer.convert_ids_to_tokens(top_piece)!r}: "
      f"{unigram_acc:.3f}")
dlbook.glue("unigram_loss", unigram_loss)
dlbook.glue("unigram_acc_pct", 100 * unigram_acc)

# %% [markdown]
# The training loop is the plain one of Part I: AdamW {cite}`loshchilov2019decoupled`, a linear
# warm-up then linear decay of the learning rate, and the loss of Eq. {eq}`eq-mlm-loss` at the chosen
# positions.

# %%
torch.manual_seed(0)
tiny = BertForMaskedLM(tiny_config).to(device)  # a fresh copy, seeded
optimizer = torch.optim.AdamW(tiny.parameters(), lr=sizes["lr"], weight_decay=0.01)
schedule = get_linear_schedule_with_warmup(optimizer, sizes["warmup"], sizes["steps"])
history = dict(step=[], train=[], val_step=[0], val=[evaluate(tiny)[0]])
n_predicted = 0


def endless(loader):
    while True:
        yield from loader


batches = endless(loader)
start = time.perf_counter()
tiny.train()
for step in dlbook.progress(range(1, sizes["steps"] + 1), desc="MLM pretraining"):
    inputs, att, lab = (t.to(device) for t in next(batches))
    loss, _ = mlm_loss(tiny, inputs, att, lab)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    schedule.step()
    n_predicted += int((lab != -100).sum())
    history["step"].append(step)
    history["train"].append(loss.item())
    if step % sizes["eval_every"] == 0 or step == sizes["steps"]:
        history["val_step"].append(step)
        history["val"].append(evaluate(tiny)[0])
train_seconds = time.perf_counter() - start
val_loss, val_acc = evaluate(tiny)
print(f"{sizes['steps']} steps in {train_seconds:.0f} s; validation MLM loss {val_loss:.3f}, top-1 accuracy {val_acc:.3f}")

# %%
smooth = torch.tensor(history["train"]).unfold(0, min(50, len(history["train"])), 1).mean(1)
fig, ax = plt.subplots(figsize=(8, 4))
ax.plot(history["step"], history["train"], color="0.8", lw=0.8, label="training batch")
ax.plot(history["step"][len(history["step"]) - len(smooth):], smooth, color="C0", label="training, moving average")
ax.plot(history["val_step"], history["val"], "o-", color="C1", label="validation")
ax.axhline(ln_v, ls="--", color="k", lw=1, label=f"ln V = {ln_v:.2f} (uniform guess)")
ax.axhline(unigram_loss, ls=":", color="C3", lw=1.5, label=f"unigram baseline = {unigram_loss:.2f}")
ax.set_xlabel("step")
ax.set_ylabel("MLM loss (nats per masked token)")
ax.set_title("Tiny BERT pretraining on Rotten Tomatoes reviews")
ax.legend()
plt.show()

# %%
prov = dlbook.env.last_provenance()
print(f"measured on {prov.device} ({prov.device_name}), {prov.threads} CPU threads, torch {prov.torch}")
dlbook.glue("train_steps", sizes["steps"])
dlbook.glue("train_minutes", train_seconds / 60)
dlbook.glue("mlm_val_acc_pct", 100 * val_acc)
dlbook.glue("n_predicted", n_predicted)
dlbook.glue("mlm_gain_over_unigram", unigram_loss - val_loss)
_ = dlbook.headline("mlm_val_loss", val_loss, profile=profile, at_most=6.8, fmt="{:.2f}")
if profile == "full":  # it must have learned something from the context
    assert val_loss < unigram_loss and val_acc > unigram_acc

# %% [markdown]
# In {glue:text}`train_steps` steps ({glue:text}`train_minutes:.1f` minutes on the machine printed
# above) the validation MLM loss falls from $\ln V$ to {glue:text}`mlm_val_loss` nats. The curve has
# two phases. First the model learns *which pieces are frequent* and drops quickly towards the
# unigram line at {glue:text}`unigram_loss:.2f`; a model gets there without reading the context at
# all. Only below that line is it using the context, and there progress is slow: it ends
# {glue:text}`mlm_gain_over_unigram:.2f` nats below the unigram baseline, and guesses the masked
# piece right {glue:text}`mlm_val_acc_pct:.1f`% of the time, against
# {glue:text}`unigram_acc_pct:.1f`% for always guessing the most frequent piece (printed above). The
# model has learned something from context, but not much.
#
# ### Fill in the blank
#
# The `fill-mask` pipeline wraps tokenisation, the model and the top-$k$ decoding. Its suggestions
# show what such a loss means in practice:

# %%
tiny.eval()
fill = pipeline("fill-mask", model=tiny, tokenizer=tokenizer, device=device)
prompts = ["this is the best [MASK] of the year.", "the acting is [MASK] and the story is boring.",
           "a [MASK] and moving film.", "the film is too [MASK] to be funny."]
for prompt in prompts:
    guesses = fill(prompt, top_k=5)
    print(f"{prompt:<48}", " | ".join(f"{g['token_str']} {g['score']:.2f}" for g in guesses))

# %% [markdown]
# Be honest about these: they are bad. With a few minutes of CPU time on
# {glue:text}`train_tokens_k:.0f` thousand tokens, the model's favourite answers are the most
# frequent pieces (punctuation, "the", "a", "of", "and"), each with a few percent of probability,
# almost whatever the slot. Its {glue:text}`mlm_val_acc_pct:.1f`% accuracy comes from the many
# masked positions whose answer really is such a frequent piece and whose neighbours narrow down
# which one. It has not yet learned content words: nothing here knows that "the best ___ of the
# year" wants a noun like "film". BERT-base learned from 3.3 billion words for about 40 epochs
# {cite}`devlin2019bert`; the exercise below puts a number on the gap.
#
# ### The pretrained checkpoint has no MLM head
#
# Why not fill in blanks with the pretrained MiniLM instead? Because the checkpoint we ship is a
# *sentence-embedding* fine-tune {cite}`reimers2019sentencebert`: it keeps the encoder and drops the
# MLM head. `from_pretrained` says so when asked for a masked-LM model, in its load report (printed
# below as the library logs it); the `MISSING` weights are freshly initialised.

# %%
minilm_mlm, loading_info = BertForMaskedLM.from_pretrained(model_path, output_loading_info=True)
minilm_mlm = minilm_mlm.to(device).eval()
print("missing (newly initialised):", sorted(loading_info["missing_keys"]))
print("unexpected (in the file, unused):", sorted(loading_info["unexpected_keys"]))

# %%
minilm_val_loss, minilm_val_acc = evaluate(minilm_mlm)
print(f"MiniLM encoder + random MLM head: validation MLM loss {minilm_val_loss:.2f} (ln V = {ln_v:.2f}), "
      f"top-1 accuracy {minilm_val_acc:.3f}")
minilm_fill = pipeline("fill-mask", model=minilm_mlm, tokenizer=tokenizer, device=device)
print(prompts[2], "->", " | ".join(g["token_str"] for g in minilm_fill(prompts[2], top_k=5)))
dlbook.glue("minilm_mlm_loss", minilm_val_loss)
assert minilm_val_loss > unigram_loss  # worse than ignoring the context

# %% [markdown]
# The missing pieces are the head's dense layer, its LayerNorm and the output bias; the output
# projection itself is tied to the (pretrained) token embeddings, so it loads. With a random dense
# layer in between, the head scores the vocabulary almost arbitrarily: the validation loss is
# {glue:text}`minilm_mlm_loss:.2f` nats, around the uniform guess ($\ln V =$ {glue:text}`ln_vocab:.2f`)
# and far worse than the unigram baseline. (The first line of the log, about a tied bias that "seems
# corrupted", says the same: the head's bias is not in the file.) The encoder's
# knowledge is there, but nothing maps it back to words. To use this checkpoint for masked-word
# prediction, the head would have to be trained first (and the encoder, fine-tuned for sentence
# similarity, may have drifted from that task).
#
# ## 8.7 What pretraining teaches, and next-sentence prediction
#
# BERT was pretrained on two tasks at once {cite}`devlin2019bert`. Besides MLM, **next-sentence
# prediction** (NSP) gave the model a pair `[CLS] A [SEP] B [SEP]` (segment ids 0 and 1, as in
# section 8.1) where half of the time B really followed A in the corpus and half of the time it was
# a random sentence from another document; a two-way classifier on the pooled `[CLS]` vector had to
# tell which. The idea was to teach sentence-pair relations for tasks such as question answering
# and entailment. `BertForPreTraining` still has both heads:

# %%
pretraining = BertForPreTraining(tiny_config)
print(pretraining.cls)
print("NSP head:", pretraining.cls.seq_relationship, "on the pooled [CLS] vector")

# %% [markdown]
# Later work took NSP apart:
#
# - **RoBERTa** {cite}`liu2019roberta` trained without NSP, on contiguous full-length text, and
#   matched or beat BERT on downstream tasks; it attributed the gains to more data, larger batches,
#   longer training and dynamic masking (a fresh corruption each time a sequence is seen, as our loop
#   does), not to the second objective.
# - **ALBERT** {cite}`lan2020albert` argued that NSP is too easy: a random B usually comes from a
#   different document, so *topic* alone gives the answer and little about coherence is learned. It
#   replaced NSP by **sentence-order prediction**: B is always the true neighbour of A, and the
#   negative example swaps their order, so topic no longer helps.
#
# What MLM itself teaches is studied at length in the survey of Rogers et al.
# {cite}`rogers2020primer`: BERT's representations encode a good deal of syntax (parts of speech,
# much of the parse tree) and some world knowledge, but its predictions are brittle under negation
# and it has no notion of a whole sentence's meaning until it is fine-tuned. The MiniLM encoder of
# this book is an example: it became a good *sentence* encoder only after a further contrastive
# fine-tuning step {cite}`reimers2019sentencebert`.
#
# ## Summary
#
# - WordPiece cuts each normalised, pre-tokenised word greedily into the longest known pieces; our
#   dozen lines reproduce the tokenizer on {glue:text}`wp_words` words. BERT's input adds `[CLS]`,
#   `[SEP]`, segment ids and an attention mask.
# - The input layer sums token, position and segment embeddings and normalises them,
#   Eq. {eq}`eq-bert-embeddings`; each layer is chapter 7's post-norm encoder layer with an exact GELU,
#   Eq. {eq}`eq-bert-layer`; padding is hidden by an additive or boolean mask, Eq. {eq}`eq-bert-mask`.
# - Assembled from the book's components and loaded with MiniLM's weights, the encoder matches
#   `transformers` to {glue:text}`bert_max_abs_diff` on the real tokens of padded reviews.
# - Individual heads are measurably positional (previous or next token) or park on `[SEP]`.
# - MLM with the 80/10/10 recipe, Eq. {eq}`eq-mlm-loss`, takes a tiny BERT from $\ln V$ to
#   {glue:text}`mlm_val_loss` nats on held-out reviews in minutes: below a unigram baseline, far from
#   a useful language model. A checkpoint without an MLM head cannot fill in blanks.
# - NSP was dropped (RoBERTa) or replaced by sentence-order prediction (ALBERT).
#
# ## Exercises
#
# :::{exercise}
# :label: ch08-ex-recipe
# Suppose the corruption always used `[MASK]` (100/0/0). What could the model learn to do with
# the visible, unmasked tokens, and why would that hurt after fine-tuning? Conversely, why do the
# 10% of chosen tokens that stay unchanged still carry a loss?
# :::
#
# :::{solution} ch08-ex-recipe
# :class: dropdown
# With 100/0/0, every position that carries a loss shows `[MASK]`, and every visible token is
# guaranteed to be correct. The model then only needs good output representations at `[MASK]`
# positions and can treat visible tokens as given facts, copying them through. At fine-tuning time
# there is no `[MASK]` at all, so the representations it must use are exactly the ones pretraining
# neglected. Random replacements make visible tokens unreliable (the model must check each one
# against its context), and unchanged-but-scored tokens reward keeping a faithful representation of
# the observed word; without their loss, the model would learn that a chosen position never holds
# the original token.
# :::
#
# :::{exercise}
# :label: ch08-ex-extended-mask
# Write `my_extended_mask(attention_mask, dtype)` that turns a `(batch, seq)` mask of 1 (token) and
# 0 (padding) into the additive mask of Eq. {eq}`eq-bert-mask`: shape `(batch, 1, 1, seq)`, dtype
# `dtype`, 0 where a key may be attended to and `torch.finfo(dtype).min` where it is padding. The
# check runs float32, float16 and bfloat16 cases.
# :::

# %%
def my_extended_mask(attention_mask, dtype):
    raise NotImplementedError  # your code here


dlbook.exercises.check("ch08.extended_attention_mask", my_extended_mask)

# %% [markdown]
# ```{solution-start} ch08-ex-extended-mask
# :class: dropdown
# ```

# %% tags=["solution"]
def my_extended_mask(attention_mask, dtype):
    keep = attention_mask[:, None, None, :].to(dtype)  # (B, 1, 1, T): broadcasts over heads and queries
    return (1.0 - keep) * torch.finfo(dtype).min  # 0 for tokens, the most negative number for padding


assert dlbook.exercises.check("ch08.extended_attention_mask", my_extended_mask)

# %% [markdown]
# ```{solution-end}
# ```
#
# Why the dtype's own minimum and not a fixed $-10^4$ or $-\infty$: $-10^4$ is not small enough for
# every logit scale, float32's minimum overflows to $-\infty$ in float16, and a row that is all
# $-\infty$ becomes NaN after the softmax.
#
# :::{exercise}
# :label: ch08-ex-budget
# Our tiny BERT computed a loss on {glue:text}`n_predicted` masked tokens during its whole training.
# BERT-base trained for 1,000,000 steps on batches of 256 sequences of 512 tokens
# {cite}`devlin2019bert`. How many masked-token predictions is that, and how many times ours?
# What does the comparison say about the fill-mask demo?
# :::
#
# :::{solution} ch08-ex-budget
# :class: dropdown
# $10^6 \cdot 256 \cdot 512 \cdot 0.15 =$ {glue:text}`bert_predictions:.3g` predictions, about
# {glue:text}`budget_ratio:,.0f` times the {glue:text}`n_predicted` of our run (computed in the cell
# below). The tiny model also has far fewer parameters and saw a single small corpus many times
# over. Its fill-mask quality is what one should expect from that budget: the most frequent
# pieces, not meaning.
# :::

# %%
bert_predictions = 1_000_000 * 256 * 512 * 0.15  # Devlin et al. (2019): steps x batch x length x masking rate
dlbook.glue("bert_predictions", bert_predictions)
dlbook.glue("budget_ratio", bert_predictions / n_predicted)
print(f"BERT-base: {bert_predictions:.3g} predictions, {bert_predictions / n_predicted:.3g} x ours")

# %% [markdown]
# :::{exercise}
# :label: ch08-ex-whole-word
# **Whole-word masking** chooses *words*, then masks every WordPiece of a chosen word, so the model
# cannot recover `##ing` from `danc` next to it. Write `my_whole_words(word_ids, u_word,
# mlm_probability)`: `word_ids` `(batch, seq)` holds the word index of each token and -1 for
# `[CLS]`, `[SEP]` and `[PAD]` (a fast tokenizer's `encoding.word_ids()` with `None` replaced by -1);
# `u_word` `(batch, n_words)` holds one uniform draw per word; word $w$ of row $b$ is chosen when
# `u_word[b, w] < mlm_probability`. Return a boolean `(batch, seq)` tensor, True at every token of
# a chosen word and never at a special token.
# :::

# %%
def my_whole_words(word_ids, u_word, mlm_probability=0.15):
    raise NotImplementedError  # your code here


dlbook.exercises.check("ch08.whole_word_selection", my_whole_words)

# %% [markdown]
# ```{solution-start} ch08-ex-whole-word
# :class: dropdown
# ```

# %% tags=["solution"]
def my_whole_words(word_ids, u_word, mlm_probability=0.15):
    chosen_word = u_word < mlm_probability  # (B, n_words)
    per_token = torch.gather(chosen_word, 1, word_ids.clamp(min=0))  # (B, T): look up each token's word
    return per_token & (word_ids >= 0)  # special tokens are never chosen


assert dlbook.exercises.check("ch08.whole_word_selection", my_whole_words)

# %% [markdown]
# ```{solution-end}
# ```
#
# :::{exercise}
# :label: ch08-ex-sop
# Take a two-sentence review such as the pair of section 8.1. Build one positive and one negative
# example for NSP and for sentence-order prediction. Which negative could a model reject by topic
# alone, and which forces it to look at how the sentences connect?
# :::
#
# :::{solution} ch08-ex-sop
# :class: dropdown
# NSP: positive `[CLS] A [SEP] B [SEP]`; negative `[CLS] A [SEP] C [SEP]` with C a sentence from
# another review, usually about another film, so different names and topic words give it away.
# SOP: positive `[CLS] A [SEP] B [SEP]`; negative `[CLS] B [SEP] A [SEP]`: the same words, the same
# topic, so only discourse cues ("but", "it", "that score") decide. This is ALBERT's argument
# {cite}`lan2020albert`: NSP's negatives are separable by topic, which MLM already learns, while
# SOP's are not.
# :::
#
# ## Further reading
#
# - BERT and its pretraining recipe {cite}`devlin2019bert`; WordPiece {cite}`wu2016google`.
# - What was kept and what was dropped afterwards: RoBERTa {cite}`liu2019roberta`, ALBERT
#   {cite}`lan2020albert`.
# - What the heads and layers encode {cite}`clark2019does` and the survey "A Primer in BERTology"
#   {cite}`rogers2020primer`.
# - The model used here: MiniLM distillation {cite}`wang2020minilm` and the sentence-embedding
#   fine-tune {cite}`reimers2019sentencebert`.
