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
# Hugging Face's `BertModel`. Then it pretrains a tiny BERT from scratch on movie reviews and
# measures how far such a short run gets.
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
import inspect
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
from dlbook import assets, stats
from dlbook.nn.bert import (
    BertEmbeddings,
    BertEncoderFromScratch,
    extended_attention_mask,
    hf_key_map,
    mask_tokens,
    padding_mask,
)
from dlbook.nn.transformer import EncoderLayer, LayerNorm

device = dlbook.setup(seed=0)

# %% tags=["parameters", "hide-input"]
profile = os.environ.get("DLBOOK_PROFILE", "full")

# %% tags=["hide-input"]
sizes = dlbook.by_profile(
    profile,
    smoke=dict(
        n_wordpiece=300,
        n_compare=6,
        n_heads_batch=8,
        n_pairs=8,
        n_mask_stats=256,
        n_train=512,
        n_val=32,
        max_len=32,
        d_model=32,
        n_layers=1,
        n_heads=2,
        d_ff=64,
        steps=6,
        batch_size=16,
        lr=1e-3,
        warmup=2,
        eval_every=3,
    ),
    full=dict(
        n_wordpiece=10_252,  # reviews our WordPiece must split as the tokenizer (8.1)
        n_compare=64,  # reviews of the attention-mask check (8.3)
        n_heads_batch=256,  # reviews the head profile averages over (8.4)
        n_pairs=128,  # two-sentence reviews of the segment exercise
        n_mask_stats=4_096,  # reviews whose masking rates are compared (8.5)
        n_train=10_252,  # training reviews for pretraining (10,252: all)
        n_val=1_000,  # validation reviews for the MLM loss
        max_len=64,  # tokens kept per review, also the tiny BERT's positions
        d_model=128,  # hidden width of the tiny BERT
        n_layers=2,  # its encoder layers
        n_heads=2,  # its attention heads
        d_ff=512,  # its feed-forward width
        steps=1_200,  # pretraining steps
        batch_size=32,  # reviews per pretraining batch
        lr=1e-3,  # peak learning rate
        warmup=100,  # warm-up steps of the learning rate
        eval_every=150,  # steps between validation evaluations
    ),
)
sizes

# %% [markdown]
# The pretrained encoder and its tokenizer come from the offline copy of `all-MiniLM-L6-v2`, a
# MiniLM encoder {cite}`wang2020minilm` fine-tuned for sentence embeddings
# {cite}`sentencetransformers2021allminilm`; the text is the Rotten Tomatoes critic snippets
# {cite}`pang2005seeing` (research use only, like the original data).

# %%
model_path = assets.minilm_path()
reviews = assets.rotten_tomatoes()
tokenizer = AutoTokenizer.from_pretrained(model_path)
train_texts = list(reviews["train"]["text"])
val_texts = list(reviews["validation"]["text"])
print(
    type(tokenizer).__name__,
    "| vocabulary:",
    len(tokenizer),
    "| reviews:",
    len(train_texts),
    "train,",
    len(val_texts),
    "validation",
)

# %% [markdown]
# ## 8.1 From review text to ids
#
# Chapter 1 wrote WordPiece's greedy rule and checked it on a few hundred snippets. Here we check
# the same rule on {glue:text}`wp_reviews` training reviews and follow a review on to segment ids
# and the attention mask. A BERT tokenizer works in three
# stages: it **normalises** the text (this checkpoint is uncased: it lowercases and strips accents,
# as the first line below shows), **pre-tokenises** it into words and punctuation marks, and then
# cuts each word into **WordPiece** units {cite}`schuster2012japanese,wu2016google`. We take the first validation review
# that contains a word the vocabulary does not hold whole.

# %%
backend = tokenizer.backend_tokenizer  # the Rust tokenizer behind the Python object
vocab = tokenizer.get_vocab()  # piece -> id, 30,522 entries


def words_of(text):
    """Normalise and pre-tokenise: the words WordPiece will cut."""
    return [
        w
        for w, _ in backend.pre_tokenizer.pre_tokenize_str(
            backend.normalizer.normalize_str(text)
        )
    ]


normalised = backend.normalizer.normalize_str("Amélie, ÉTÉ 2001")
assert normalised == "amelie, ete 2001"  # lowercased, accents stripped
print(normalised)
review = next(
    t
    for t in val_texts
    if len(t.split()) <= 25
    and any(len(tokenizer.tokenize(w)) >= 3 for w in words_of(t))
)
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
        while (
            end > start
        ):  # shrink the candidate from the right until it is a known piece
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
# Verification: on every review in the sample, and on three edge cases (a character the
# vocabulary lacks, and words of 100 and 101 characters, the tokenizer's limit), our pieces must be
# exactly the tokenizer's.

# %%
n_words = n_split = n_pieces = 0
for text in train_texts[: sizes["n_wordpiece"]]:
    ours = [wordpiece(w, vocab) for w in words_of(text)]
    assert [p for ps in ours for p in ps] == tokenizer.tokenize(text), text
    n_words += len(ours)
    n_split += sum(len(ps) > 1 for ps in ours)
    n_pieces += sum(len(ps) for ps in ours)
for word in ("☃", "a" * 100, "a" * 101):  # [UNK]; 50 pieces; [UNK] (too long)
    assert wordpiece(word, vocab) == tokenizer.tokenize(word), word
print(
    f"{sizes['n_wordpiece']} reviews, {n_words} words: identical pieces; "
    f"{n_split / n_words:.1%} of words split, {n_pieces / n_words:.3f} pieces per word"
)
dlbook.glue("wp_reviews", sizes["n_wordpiece"])
dlbook.glue("wp_words", n_words)
dlbook.glue("wp_split_pct", 100 * n_split / n_words)
dlbook.glue("wp_pieces_per_word", n_pieces / n_words)

# %% [markdown]
# Our dozen lines reproduce the tokenizer on all {glue:text}`wp_words` words of
# {glue:text}`wp_reviews` reviews. Only {glue:text}`wp_split_pct:.1f`% of the words are split, so a
# review costs {glue:text}`wp_pieces_per_word:.2f` pieces per word on average. That is by design:
# a WordPiece vocabulary is chosen to make the training text as few pieces as possible, so
# frequent words get a piece of their own {cite}`wu2016google`.
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
batch = tokenizer(
    [
        "A real snooze.",
        sent_a,
        "Director Nolan shows here he can handle clever material.",
    ],
    padding=True,
    return_tensors="pt",
)
for ids, mask in zip(batch["input_ids"], batch["attention_mask"], strict=True):
    print(
        " ".join(
            f"{t}{'' if m else '*'}"
            for t, m in zip(tokenizer.convert_ids_to_tokens(ids), mask, strict=True)
        )
    )
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
print(
    f"layers={cfg.num_hidden_layers} hidden={cfg.hidden_size} "
    f"heads={cfg.num_attention_heads} ffn={cfg.intermediate_size} "
    f"act={cfg.hidden_act} eps={cfg.layer_norm_eps} "
    f"positions={cfg.max_position_embeddings}"
)

# %%
emb = hf.embeddings
pair_pt = tokenizer(sent_a, sent_b, return_tensors="pt").to(device)
ids, seg = pair_pt["input_ids"], pair_pt["token_type_ids"]  # (1, T) each
T = ids.shape[1]
with torch.no_grad():
    summed = (
        emb.word_embeddings.weight[ids]  # (1, T, 384): one row per token id
        + emb.position_embeddings.weight[
            :T
        ]  # (T, 384): one row per position, broadcast over the batch
        + emb.token_type_embeddings.weight[seg]
    )  # (1, T, 384): segment A or B
    norm = LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps).to(
        device
    )  # chapter 7's LayerNorm
    norm.load_state_dict(emb.LayerNorm.state_dict())
    h0 = norm(summed)  # (1, T, 384)
    h0_hf = emb(input_ids=ids, token_type_ids=seg)
torch.testing.assert_close(h0, h0_hf)
print(
    "embedding output",
    tuple(h0.shape),
    "max |ours - HF| =",
    f"{(h0 - h0_hf).abs().max().item():.1e}",
)

# %% [markdown]
# Every token gets a segment embedding: $E_\text{seg}[0]$ is added to every A token and
# $E_\text{seg}[1]$ to every B token. Set every segment id to 0 and only the B tokens change row,
# so only their vectors change; the A tokens keep theirs. The packaged version of the input layer is
# the same sum:

# %%
dlbook.show(BertEmbeddings)

# %%
packaged_emb = (
    BertEmbeddings(
        cfg.vocab_size,
        cfg.hidden_size,
        cfg.max_position_embeddings,
        cfg.type_vocab_size,
        eps=cfg.layer_norm_eps,
    )
    .to(device)
    .eval()
)
with torch.no_grad():
    for ours, theirs in (
        (packaged_emb.token, emb.word_embeddings),
        (packaged_emb.position, emb.position_embeddings),
        (packaged_emb.segment, emb.token_type_embeddings),
        (packaged_emb.norm, emb.LayerNorm),
    ):
        ours.load_state_dict(theirs.state_dict())
    torch.testing.assert_close(packaged_emb(ids, seg), h0)
    changed = (
        (packaged_emb(ids, seg) - packaged_emb(ids)).abs().amax(-1)[0]
    )  # (T,): effect of the segment ids
print(
    "tokens whose vector depends on the segment id:",
    int((changed > 0).sum()),
    "of",
    T,
    "| segment B tokens:",
    int(seg.sum()),
)
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
# {cite}`hendrycks2016gelu` in its exact form: the checkpoint's config names `gelu`, which
# `transformers` computes with `erf`, not with the tanh approximation of the same paper. First the
# GELU, checked against PyTorch and against the function the config names:

# %%
x = torch.linspace(-6, 6, 1001)
gelu_ours = x / 2 * (1 + torch.erf(x / math.sqrt(2)))
torch.testing.assert_close(gelu_ours, F.gelu(x))
torch.testing.assert_close(gelu_ours, ACT2FN[cfg.hidden_act](x))
tanh_gap = (F.gelu(x, approximate="tanh") - gelu_ours).abs().max()
print(
    "GELU = x Phi(x): matches F.gelu and transformers' ACT2FN['gelu'];",
    f"the tanh approximation differs by up to {tanh_gap:.1e}",
)

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
real = tokenizer(val_texts[: sizes["n_compare"]], padding=True, return_tensors="pt").to(
    device
)
am = real["attention_mask"]  # (B, T), 1 = real token
hf_eager = (
    BertModel.from_pretrained(model_path, attn_implementation="eager").to(device).eval()
)  # the same weights
print(
    "attention code:",
    hf.config._attn_implementation,
    "and",
    hf_eager.config._attn_implementation,
)
x_dummy = torch.zeros(*am.shape, cfg.hidden_size, device=device)
hf_bool = create_bidirectional_mask(
    config=hf.config, inputs_embeds=x_dummy, attention_mask=am
)  # (B, 1, T, T)
hf_additive = create_bidirectional_mask(
    config=hf_eager.config, inputs_embeds=x_dummy, attention_mask=am
)
assert torch.equal(padding_mask(am).expand_as(hf_bool), hf_bool)
assert torch.equal(extended_attention_mask(am).expand_as(hf_additive), hf_additive)
print(
    "boolean mask",
    tuple(padding_mask(am).shape),
    "and additive mask",
    tuple(extended_attention_mask(am).shape),
    "match transformers'; padded positions:",
    int((am == 0).sum()),
    "of",
    am.numel(),
)

# %% [markdown]
# ### One layer, by hand
#
# Chapter 7's `EncoderLayer` with `norm_first=False`, `activation="gelu"` and `eps=1e-12` computes
# what a BERT layer computes in eval mode; only the parameter names differ (in training the book's
# feed-forward block has one more dropout, after the GELU). We copy the weights of MiniLM's first layer into one and
# compare its output with the hidden state `transformers` reports after layer 1, on a batch of real
# reviews **with padding**.


# %%
def load_bert_layer(ours: EncoderLayer, theirs) -> EncoderLayer:
    """Copy one transformers BertLayer into the book's EncoderLayer.

    The parameter names differ, the maths do not.
    """
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


layer0 = (
    EncoderLayer(
        cfg.hidden_size,
        cfg.num_attention_heads,
        cfg.intermediate_size,
        dropout=0.0,
        activation="gelu",
        norm_first=False,
        eps=cfg.layer_norm_eps,
    )
    .to(device)
    .eval()
)
load_bert_layer(layer0, hf.encoder.layer[0])
with torch.no_grad():
    states = hf(
        **real, output_hidden_states=True
    ).hidden_states  # embeddings, then after each layer
    out0 = layer0(states[0], mask=padding_mask(am))  # (B, T, 384)
keep = am.bool()  # compare real tokens only
torch.testing.assert_close(out0[keep], states[1][keep], atol=1e-5, rtol=1e-5)
layer1_diff = (out0 - states[1])[keep].abs().max().item()
print(f"layer 1: max |ours - HF| over real tokens = {layer1_diff:.1e}")

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
    got = ours_bert(
        real["input_ids"], real["attention_mask"], real["token_type_ids"]
    ).last_hidden_state
bert_max_abs_diff = (got - want)[keep].abs().max().item()
torch.testing.assert_close(got[keep], want[keep], atol=1e-5, rtol=1e-5)
print(
    f"{am.shape[0]} reviews padded to {am.shape[1]} tokens "
    f"({int((~keep).sum())} padded positions); {n_ours:,} parameters; "
    f"max |ours - HF| over the {int(keep.sum())} real tokens = {bert_max_abs_diff:.2e}"
)
dlbook.glue("cmp_reviews", am.shape[0])
dlbook.glue("cmp_real_tokens", int(keep.sum()))
dlbook.glue("cmp_pad_tokens", int((~keep).sum()))
_ = dlbook.headline(
    "bert_max_abs_diff", bert_max_abs_diff, profile=profile, at_most=1e-5, fmt="{:.2e}"
)

# %%
# Backward too, in float64 so that round-off cannot hide a wrong term: the gradient of a
# fixed random projection of the outputs at the real tokens, for every mapped parameter.
hf64 = copy.deepcopy(hf).double()
ours64 = BertEncoderFromScratch.from_hf(hf64)
few = {k: v[:4] for k, v in real.items()}  # 4 reviews keep it cheap
keep4 = few["attention_mask"].bool()  # (4, T)
proj = torch.randn(
    hf64.config.hidden_size,
    dtype=torch.float64,
    generator=torch.Generator().manual_seed(0),
).to(device)  # (384,)
(hf64(**few).last_hidden_state[keep4] @ proj).sum().backward()
out64 = ours64(few["input_ids"], few["attention_mask"], few["token_type_ids"])
(out64.last_hidden_state[keep4] @ proj).sum().backward()
theirs, mine = dict(hf64.named_parameters()), dict(ours64.named_parameters())
largest = max(p.grad.abs().max().item() for p in theirs.values() if p.grad is not None)
grad_rel = max(
    (mine[m].grad - theirs[t].grad).abs().max().item() / largest
    for t, m in hf_key_map(hf64.config.num_hidden_layers).items()
)
assert grad_rel < 1e-10
print(
    f"float64 gradients of all {len(mine)} parameter tensors: largest difference "
    f"{grad_rel:.1e} of the largest gradient"
)
dlbook.glue("bert_grad_rel", grad_rel)

# %% [markdown]
# On {glue:text}`cmp_reviews` real reviews, padded into one batch, the encoder assembled from the
# book's parts reproduces `BertModel`'s `last_hidden_state` to a largest absolute difference of
# {glue:text}`bert_max_abs_diff` over all {glue:text}`cmp_real_tokens` real tokens: float32
# round-off, summed over six layers. We compare **only the real tokens**, not the
# {glue:text}`cmp_pad_tokens` padded positions. The model still computes vectors there (a padded
# query attends to the real keys like any other), but nothing downstream reads them, and an
# implementation is free to put anything there. The gradients agree as well: in float64, every
# parameter's gradient matches `BertModel`'s to {glue:text}`bert_grad_rel:.0e` of the largest
# gradient.
#
# What happens if the mask is forgotten? The real tokens then attend to the padding too, and their
# vectors move:

# %%
with torch.no_grad():
    no_mask = ours_bert(
        real["input_ids"], token_type_ids=real["token_type_ids"]
    ).last_hidden_state
shift = (no_mask - want)[keep].abs().max().item()
rms = want[keep].pow(2).mean().sqrt().item()  # typical size of an entry of the outputs
print(
    f"without the attention mask: max change of a real token's vector = {shift:.2f} "
    f"(root mean square of the entries: {rms:.2f})"
)
dlbook.glue("no_mask_shift", shift)
dlbook.glue("hidden_rms", rms)
assert shift > rms / 10  # not round-off: of the order of the entries themselves

# %% [markdown]
# A change of {glue:text}`no_mask_shift:.2f` on vectors whose entries have a root mean square of
# {glue:text}`hidden_rms:.2f`: a padded batch would give each review a different representation
# depending on its neighbours in the batch. That is the bug the mask prevents.
#
# ## 8.4 What the heads look at
#
# Each of the {glue:text}`n_heads_total` heads (6 layers of 12) computes its own attention
# distribution. The book's encoder returns them; first we check them against `transformers`'s
# attention weights (from the eager implementation loaded above, the one that can return them).

# %%
with torch.no_grad():
    att_hf = hf_eager(**real, output_attentions=True).attentions  # 6 x (B, 12, T, T)
    att_ours = ours_bert(
        real["input_ids"],
        real["attention_mask"],
        real["token_type_ids"],
        output_attentions=True,
    ).attentions
# (B, H, T, T) -> (B, T, H, T), so that keep (B, T) selects the rows of real queries
att_diff = max(
    (a - b).transpose(1, 2)[keep].abs().max().item()
    for a, b in zip(att_ours, att_hf, strict=True)
)
assert att_diff < 1e-5
print(
    f"attention weights of all {len(att_ours)} layers: "
    f"max |ours - HF| over real queries = {att_diff:.1e}"
)
dlbook.glue("n_heads_total", cfg.num_hidden_layers * cfg.num_attention_heads)

# %% [markdown]
# To say what a head does, we measure it over many reviews: for every head, the average weight that
# a real token puts on the **previous** token, the **next** token, **itself**, on **[CLS]** and on
# **[SEP]**. In BERT-base, Clark et al. {cite}`clark2019does` found heads that attend to fixed
# positional offsets and heads that attend to the delimiter tokens; does this 6-layer MiniLM
# model {cite}`sentencetransformers2021allminilm` have them?


# %%
def head_profile(model, texts, batch_size=64):
    """Average attention of real query tokens to 5 targets, per layer and head.

    Returns a (L, H, 5) tensor.
    """
    totals, n_queries = 0.0, 0
    for i in range(0, len(texts), batch_size):
        enc = tokenizer(
            texts[i : i + batch_size], padding=True, return_tensors="pt"
        ).to(device)
        am_b = enc["attention_mask"].bool()  # (B, T)
        with torch.no_grad():
            att = torch.stack(
                model(
                    enc["input_ids"], enc["attention_mask"], output_attentions=True
                ).attentions,
                1,
            )
        att = (
            att * am_b[:, None, None, :, None]
        )  # (B, L, H, T, T): zero the rows of padded queries
        sep_at = am_b.sum(1) - 1  # (B,) position of [SEP]
        prev = att.diagonal(offset=-1, dim1=-2, dim2=-1).sum(
            -1
        )  # (B, L, H): weight on token t-1, summed over t
        nxt = att.diagonal(offset=1, dim1=-2, dim2=-1).sum(-1)
        self_ = att.diagonal(dim1=-2, dim2=-1).sum(-1)
        cls = att[..., 0].sum(-1)
        sep = (
            att.gather(-1, sep_at.view(-1, 1, 1, 1, 1).expand(*att.shape[:-1], 1))
            .squeeze(-1)
            .sum(-1)
        )
        totals = totals + torch.stack([prev, nxt, self_, cls, sep], -1).sum(
            0
        )  # (L, H, 5)
        n_queries += int(am_b.sum())
    return (totals / n_queries).cpu()


targets = ["previous token", "next token", "itself", "[CLS]", "[SEP]"]
profile_lh = head_profile(ours_bert, val_texts[: sizes["n_heads_batch"]])  # (6, 12, 5)
heads = range(cfg.num_attention_heads)
fig, axes = plt.subplots(1, 5, figsize=(10, 2.1), sharey=True, layout="constrained")
for k, ax in enumerate(axes):
    im = ax.imshow(profile_lh[..., k], vmin=0, vmax=1, cmap="viridis")
    ax.set_title(f"to {targets[k]}", fontsize=10)
    ax.set_xticks(heads[::2], [str(h + 1) for h in heads[::2]], fontsize=8)  # odd heads
    ax.set_xlabel("head")
axes[0].set_ylabel("layer")
axes[0].set_yticks(
    range(cfg.num_hidden_layers),
    [str(i + 1) for i in range(cfg.num_hidden_layers)],
    fontsize=8,
)
fig.colorbar(im, ax=axes, shrink=0.8, label="mean weight")
plt.show()

# %% [markdown]
# **Figure 8.1.** The mean attention weight that a real token gives to each of five targets, for
# every layer (rows) and head (columns) of the encoder, averaged over validation reviews. A
# bright cell is a head that puts much of its weight on that target.

# %%
best = {}
for k, name in enumerate(targets):
    flat = int(profile_lh[..., k].argmax())
    layer, head = divmod(flat, cfg.num_attention_heads)
    best[name] = (layer, head, profile_lh[layer, head, k].item())
    print(
        f"strongest '{name}' head: layer {layer + 1}, head {head + 1}, "
        f"mean weight {best[name][2]:.2f}"
    )
per_layer_special = (profile_lh[..., 3] + profile_lh[..., 4]).mean(1)  # (L,)
print(
    "mean attention on [CLS] + [SEP] by layer:",
    [round(v, 2) for v in per_layer_special.tolist()],
)
dlbook.glue("best_prev", best["previous token"][2])
dlbook.glue("best_next", best["next token"][2])
dlbook.glue("best_sep", best["[SEP]"][2])
dlbook.glue("best_cls", best["[CLS]"][2])
dlbook.glue("best_cls_layer", best["[CLS]"][0] + 1)
if profile == "full":  # what the prose below says
    assert best["previous token"][2] > 0.5 and best["next token"][2] > 0.5
    # parks on [CLS], not on [SEP]
    assert best["[CLS]"][2] > 0.5 and best["[CLS]"][2] > 2 * best["[SEP]"][2]
cls_by_layer = profile_lh[1:5, :, 3].mean(1)  # (4,) layers 2 to 5, mean over heads
n_heads_cls = int((profile_lh[..., 3] > 0.5).sum())
n_heads_sep = int((profile_lh[..., 4] > 0.5).sum())
print(
    "mean attention on [CLS], layers 2-5:",
    [round(v, 2) for v in cls_by_layer.tolist()],
    f"; heads with > 0.5 on [CLS]: {n_heads_cls}, on [SEP]: {n_heads_sep}",
)
dlbook.glue("cls_l25_min", cls_by_layer.min().item())
dlbook.glue("cls_l25_max", cls_by_layer.max().item())
dlbook.glue("n_heads_cls", n_heads_cls)
dlbook.glue("n_heads_sep", n_heads_sep)
dlbook.glue("n_heads_all", profile_lh.shape[0] * profile_lh.shape[1])
if (
    profile == "full"
):  # about half of the layer-2-to-5 attention on [CLS]; none parks on [SEP]
    assert 0.3 < cls_by_layer.min() and cls_by_layer.max() < 0.7
    assert n_heads_cls >= 5 and n_heads_sep == 0

# %% [markdown]
# The measurement finds sharply positional heads: the strongest "previous token" head puts on
# average {glue:text}`best_prev:.2f` of its weight on the token just before, the strongest "next
# token" head {glue:text}`best_next:.2f` on the token just after. In BERT-base, Clark et al. found
# that over half of the attention in layers 6 to 10 goes to [SEP], and suggested that a head whose
# function does not apply at a position parks its weight there, as a kind of "no-op"
# {cite}`clark2019does`. This model, on these one-segment reviews, puts its weight on **[CLS]**
# instead: in layers 2 to 5 the heads put on average between {glue:text}`cls_l25_min:.2f` and
# {glue:text}`cls_l25_max:.2f` of their weight on [CLS], and {glue:text}`n_heads_cls` of the
# {glue:text}`n_heads_all` heads put more than half on it; the strongest, in layer
# {glue:text}`best_cls_layer`, puts {glue:text}`best_cls:.2f`. No head gives [SEP] more than
# {glue:text}`best_sep:.2f` ({glue:text}`n_heads_sep` heads above half). Whether these heads are
# "no-ops" we do not measure.
# (Clark et al. fed pairs of segments, with two [SEP] tokens; an exercise below
# measures pairs.) Here are the strongest heads on one review:

# %%
example = tokenizer(review, return_tensors="pt").to(device)
tokens = tokenizer.convert_ids_to_tokens(example["input_ids"][0])
with torch.no_grad():
    ex_att = ours_bert(
        example["input_ids"], example["attention_mask"], output_attentions=True
    ).attentions
show = ["previous token", "next token", "[CLS]"]
fig, axes = plt.subplots(1, 3, figsize=(10, 4.3), sharey=True, layout="constrained")
ticks = range(len(tokens))
for ax, name in zip(axes, show, strict=True):
    layer, head, score = best[name]
    ax.imshow(ex_att[layer][0, head].cpu(), vmin=0, vmax=1, cmap="Blues")
    ax.set_title(f"layer {layer + 1}, head {head + 1}: '{name}'", fontsize=10)
    ax.set_xticks(ticks, tokens, rotation=90, fontsize=9)
    ax.set_xlabel("key (attended to)")
axes[0].set_yticks(ticks, tokens, fontsize=9)  # shared by the three maps
axes[0].set_ylabel("query")
plt.show()

# %% [markdown]
# **Figure 8.2.** The attention weights of the strongest "previous token", "next token" and
# [CLS] heads of Figure 8.1 on one review (darker = larger weight).
#
# Rows are queries, columns are the keys they attend to. The first two maps are a band just below
# and just above the diagonal: each query takes most of its value vector from a neighbour; the
# third is a column on [CLS]. Clark et al. also found heads of BERT-base whose attention picks out
# particular syntactic relations (the direct object of a verb, the determiner of a noun, the object
# of a preposition) and coreferent mentions with high accuracy {cite}`clark2019does`; looking for
# those needs text annotated with such relations, which our reviews are not. A large weight says
# where a query takes its values from, not whether later layers make use of them.
#
# ## 8.5 The masked-language-model objective
#
# BERT learns from unlabelled text by filling in blanks. Each non-special position is chosen
# independently with probability 0.15 (so the number chosen varies from sequence to sequence); the
# input is corrupted at the chosen set $M$, and the model must recover the original tokens there {cite}`devlin2019bert`:
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
# real one, so it has to keep a contextual representation of *every* position
# {cite}`devlin2019bert`. Step by step, on a batch of real reviews:

# %%
enc = tokenizer(
    val_texts[:4],
    padding=True,
    truncation=True,
    max_length=sizes["max_len"],
    return_tensors="pt",
)
input_ids = enc["input_ids"]  # (B, T), on the CPU: masking is data preparation
gen = torch.Generator().manual_seed(0)
special = torch.isin(
    input_ids, torch.tensor(tokenizer.all_special_ids)
)  # (B, T): [CLS], [SEP], [PAD] never chosen
u_select = torch.rand(input_ids.shape, generator=gen)  # (B, T) one uniform per position
u_action = torch.rand(
    input_ids.shape, generator=gen
)  # (B, T) decides what happens to a chosen token
random_ids = torch.randint(
    len(tokenizer), input_ids.shape, generator=gen
)  # (B, T) candidates for the 10%
chosen = (u_select < 0.15) & ~special  # the set M
to_mask = chosen & (u_action < 0.8)  # 80%: [MASK]
to_random = (
    chosen & (u_action >= 0.8) & (u_action < 0.9)
)  # 10%: a random token; the last 10% stay
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
packaged_inputs, packaged_labels = mask_tokens(
    input_ids,
    tokenizer.all_special_ids,
    tokenizer.mask_token_id,
    len(tokenizer),
    generator=torch.Generator().manual_seed(0),
)
assert torch.equal(packaged_inputs, corrupted) and torch.equal(packaged_labels, labels)

# %% [markdown]
# `transformers` ships the same recipe as `DataCollatorForLanguageModeling` (defaults
# `mlm_probability=0.15`, `mask_replace_prob=0.8`, `random_replace_prob=0.1`). It draws its random
# numbers differently, so the two agree in distribution, not position by position. We corrupt the
# same real reviews with both and compare the rates:

# %%
stat_ids = tokenizer(
    train_texts[: sizes["n_mask_stats"]],
    padding=True,
    truncation=True,
    max_length=64,
    return_tensors="pt",
)["input_ids"]
ours_in, ours_lab = mask_tokens(
    stat_ids,
    tokenizer.all_special_ids,
    tokenizer.mask_token_id,
    len(tokenizer),
    generator=torch.Generator().manual_seed(1),
)
defaults = inspect.signature(DataCollatorForLanguageModeling).parameters
recipe = ("mlm_probability", "mask_replace_prob", "random_replace_prob")
assert [defaults[k].default for k in recipe] == [0.15, 0.8, 0.1]
collator = DataCollatorForLanguageModeling(tokenizer, seed=1)  # the defaults: 80/10/10
hf_in, hf_lab = collator.torch_mask_tokens(stat_ids.clone())
eligible = ~torch.isin(stat_ids, torch.tensor(tokenizer.all_special_ids))


def rates(inputs, labels):
    ch = labels != -100
    n = int(ch.sum())
    return dict(
        chosen=n / int(eligible.sum()),
        mask=int((ch & (inputs == tokenizer.mask_token_id)).sum()) / n,
        random=int(
            (ch & (inputs != tokenizer.mask_token_id) & (inputs != stat_ids)).sum()
        )
        / n,
        unchanged=int((ch & (inputs == stat_ids)).sum()) / n,
        special_chosen=int((ch & ~eligible).sum()),
    )


r_ours, r_hf = rates(ours_in, ours_lab), rates(hf_in, hf_lab)
n_el = int(eligible.sum())
print(f"{n_el:,} eligible tokens in {sizes['n_mask_stats']} reviews")
print(f"{'':>15} {'ours':>8} {'HF':>8} {'target':>8}")
for key, target in (
    ("chosen", 0.15),
    ("mask", 0.8),
    ("random", 0.1),
    ("unchanged", 0.1),
    ("special_chosen", 0),
):
    print(f"{key:>15} {r_ours[key]:8.3f} {r_hf[key]:8.3f} {target:8.3f}")
for r in (r_ours, r_hf):
    n_ch = r["chosen"] * n_el
    assert (
        abs(r["chosen"] - 0.15) < 5 * math.sqrt(0.15 * 0.85 / n_el)
        and r["special_chosen"] == 0
    )
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
    vocab_size=len(
        tokenizer
    ),  # the full MiniLM WordPiece vocabulary: we keep the tokenizer as it is
    hidden_size=sizes["d_model"],
    num_hidden_layers=sizes["n_layers"],
    num_attention_heads=sizes["n_heads"],
    intermediate_size=sizes["d_ff"],
    max_position_embeddings=sizes["max_len"],
    hidden_dropout_prob=0.0,
    # a few minutes of training: no regularisation needed
    attention_probs_dropout_prob=0.0,
)
torch.manual_seed(0)
tiny = BertForMaskedLM(tiny_config).to(device)
n_tiny = sum(p.numel() for p in tiny.parameters())
n_tiny_emb = sum(p.numel() for p in tiny.bert.embeddings.parameters())
assert (
    tiny.cls.predictions.decoder.weight is tiny.bert.embeddings.word_embeddings.weight
)  # tied
emb_share = n_tiny_emb / n_tiny
print(f"tiny BERT: {n_tiny:,} parameters, {emb_share:.0%} of them in the embeddings")
dlbook.glue("tiny_params_m", n_tiny / 1e6)
dlbook.glue("tiny_emb_pct", 100 * n_tiny_emb / n_tiny)
dlbook.glue("vocab_size", len(tokenizer))


def mlm_loss(model, inputs, attention_mask, labels):
    """Eq. (eq-mlm-loss), running the vocabulary head only at the chosen positions."""
    hidden = model.bert(
        input_ids=inputs, attention_mask=attention_mask
    ).last_hidden_state  # (B, T, d)
    chosen = labels != -100  # (B, T)
    logits = model.cls(hidden[chosen])  # (|M|, V)
    return F.cross_entropy(logits, labels[chosen]), logits


with torch.no_grad():
    am_dev = enc["attention_mask"].to(device)
    ref = tiny(
        input_ids=corrupted.to(device), attention_mask=am_dev, labels=labels.to(device)
    )
    full_logits = ref.logits  # (B, T, V): the head at every position
    by_hand = (
        -full_logits.log_softmax(-1)[chosen.to(device)]
        .gather(1, labels[chosen].to(device)[:, None])
        .mean()
    )
    fast, _ = mlm_loss(tiny, corrupted.to(device), am_dev, labels.to(device))
torch.testing.assert_close(by_hand, ref.loss)
torch.testing.assert_close(fast, ref.loss)
ln_v = math.log(len(tokenizer))
print(f"loss at initialisation: {ref.loss.item():.3f}  (ln V = {ln_v:.3f})")
dlbook.glue("ln_vocab", ln_v)

# %% [markdown]
# At initialisation the logits are nearly equal, so the model assigns about $1/V$ to every token and
# the loss starts near $\ln V =$ {glue:text}`ln_vocab:.2f` (measured on all validation positions
# below: {glue:text}`init_loss:.2f`).
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
    return [
        torch.tensor(x)
        for x in tokenizer(texts, truncation=True, max_length=sizes["max_len"])[
            "input_ids"
        ]
    ]


def make_batch(seqs, generator):
    """Pad a list of id tensors, then corrupt it.

    Returns (inputs, attention_mask, labels), each (B, T).
    """
    ids_b = pad_sequence(seqs, batch_first=True, padding_value=tokenizer.pad_token_id)
    att = (
        torch.arange(ids_b.shape[1])[None, :]
        < torch.tensor([len(s) for s in seqs])[:, None]
    ).long()
    inputs, labels_b = mask_tokens(
        ids_b,
        tokenizer.all_special_ids,
        tokenizer.mask_token_id,
        len(tokenizer),
        generator=generator,
    )
    return inputs, att, labels_b


train_ids = to_ids(train_texts[: sizes["n_train"]])
val_ids = to_ids(val_texts[: sizes["n_val"]])
val_gen = torch.Generator().manual_seed(1)
val_batches = [
    make_batch(val_ids[i : i + 100], val_gen) for i in range(0, len(val_ids), 100)
]  # fixed corruption
mask_gen = torch.Generator().manual_seed(2)
loader = torch.utils.data.DataLoader(
    train_ids,
    batch_size=sizes["batch_size"],
    shuffle=True,
    drop_last=True,
    generator=torch.Generator().manual_seed(0),
    collate_fn=lambda seqs: make_batch(seqs, mask_gen),
)
n_train_tokens = sum(len(s) for s in train_ids)
print(
    f"{len(train_ids):,} training reviews, {n_train_tokens:,} tokens; "
    f"{sum(int((b[2] != -100).sum()) for b in val_batches):,} "
    "masked validation positions"
)
dlbook.glue("train_tokens_k", n_train_tokens / 1000)


@torch.no_grad()
def evaluate(model):
    """Validation MLM loss (Eq. eq-mlm-loss, all masked positions), top-1 accuracy."""
    model.eval()
    total, correct, n = 0.0, 0, 0
    for inputs, att, lab in val_batches:
        loss, logits = mlm_loss(
            model, inputs.to(device), att.to(device), lab.to(device)
        )
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
counts = Counter(
    t for s in train_ids for t in s.tolist() if t not in tokenizer.all_special_ids
)
n_tok = sum(counts.values())
log_unigram = torch.full((len(tokenizer),), -math.log(n_tok + len(tokenizer)))
for t, c in counts.items():
    log_unigram[t] = math.log(c + 1) - math.log(n_tok + len(tokenizer))
val_labels = torch.cat([lab[lab != -100] for _, _, lab in val_batches])
unigram_loss = -log_unigram[val_labels].mean().item()
top_piece, _ = counts.most_common(1)[0]
unigram_acc = (val_labels == top_piece).float().mean().item()
print(
    f"unigram baseline: loss {unigram_loss:.3f}, accuracy of always guessing "
    f"{tokenizer.convert_ids_to_tokens(top_piece)!r}: {unigram_acc:.3f}"
)
dlbook.glue("unigram_loss", unigram_loss)
dlbook.glue("unigram_acc_pct", 100 * unigram_acc)

# %% [markdown]
# The training loop is a plain one: AdamW {cite}`loshchilov2019decoupled`, the linear warm-up and
# linear decay of the learning rate of {ref}`sec-lr-warmup`, and the loss of Eq. {eq}`eq-mlm-loss`
# at the chosen positions.

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
print(
    f"{sizes['steps']} steps in {train_seconds:.0f} s; "
    f"validation MLM loss {val_loss:.3f}, top-1 accuracy {val_acc:.3f}"
)

# %%
smooth = (
    torch.tensor(history["train"]).unfold(0, min(50, len(history["train"])), 1).mean(1)
)
fig, ax = plt.subplots(figsize=(8, 4))
ax.plot(history["step"], history["train"], color="0.8", lw=0.8, label="training batch")
ax.plot(
    history["step"][len(history["step"]) - len(smooth) :],
    smooth,
    color="C0",
    label="training, moving average",
)
ax.plot(history["val_step"], history["val"], "o-", color="C1", label="validation")
ax.axhline(ln_v, ls="--", color="k", lw=1, label=f"ln V = {ln_v:.2f} (uniform guess)")
ax.axhline(
    unigram_loss,
    ls=":",
    color="C3",
    lw=1.5,
    label=f"unigram baseline = {unigram_loss:.2f}",
)
ax.set_xlabel("step")
ax.set_ylabel("MLM loss (nats per masked token)")
ax.set_title("Tiny BERT pretraining on Rotten Tomatoes reviews")
ax.legend()
plt.show()

# %% [markdown]
# **Figure 8.3.** The MLM loss of the tiny BERT while it pretrains: each training batch (grey),
# their moving average, and the validation loss, against the loss of a uniform guess ($\ln V$,
# dashed) and of the unigram baseline (dotted). Compare how soon the validation loss nears the
# unigram line with how slowly it falls after that.

# %%
prov = dlbook.env.last_provenance()
print(
    f"measured on {prov.device} ({prov.device_name}), {prov.threads} CPU threads, "
    f"torch {prov.torch}"
)
dlbook.glue("train_steps", sizes["steps"])
dlbook.glue("train_minutes", train_seconds / 60)
dlbook.glue("mlm_val_acc_pct", 100 * val_acc)
dlbook.glue("n_predicted", n_predicted)
dlbook.glue("mlm_gain_over_unigram", unigram_loss - val_loss)
dlbook.glue("train_epochs", sizes["steps"] * sizes["batch_size"] / len(train_ids))
dlbook.glue("first_eval_step", history["val_step"][1])
dlbook.glue("val_first", history["val"][1])
_ = dlbook.headline(
    "mlm_val_loss", val_loss, profile=profile, at_most=6.8, fmt="{:.2f}"
)
if profile == "full":  # it must have learned something from the context
    assert val_loss < unigram_loss and val_acc > unigram_acc
    # most of the fall comes first, to near the unigram line; then it is slow
    assert abs(history["val"][1] - unigram_loss) < 0.5
    assert ln_v - history["val"][1] > 3 * (history["val"][1] - val_loss)
dlbook.glue(
    "init_loss", history["val"][0]
)  # the seeded fresh model, all validation positions
assert abs(history["val"][0] - ln_v) < 0.1

# %% [markdown]
# One masked position in ten keeps its original token (the 80/10/10 recipe), so there the answer
# is in the input. We split the validation positions by what the input shows: `[MASK]`, the
# original token, or a random one. A *copy* baseline predicts the visible token, and the most
# frequent piece where it sees `[MASK]`.


# %%
@torch.no_grad()
def per_position(model):
    """Per masked position: the loss, whether the top guess is right, the input id."""
    model.eval()
    losses, right, shown, labels_ = [], [], [], []
    for inputs, att, lab in val_batches:
        _, logits = mlm_loss(model, inputs.to(device), att.to(device), lab.to(device))
        y = lab[lab != -100]  # (|M|,)
        losses.append(F.cross_entropy(logits.cpu(), y, reduction="none"))
        right.append(logits.argmax(-1).cpu() == y)
        shown.append(inputs[lab != -100])
        labels_.append(y)
    model.train()
    return torch.cat(losses), torch.cat(right), torch.cat(shown), torch.cat(labels_)


pos_loss, pos_right, shown, y_val = per_position(tiny)
kinds = {"[MASK]": shown == tokenizer.mask_token_id, "unchanged": shown == y_val}
kinds["random"] = ~(kinds["[MASK]"] | kinds["unchanged"])
uni_pos = -log_unigram[y_val]  # (|M|,) the unigram baseline's loss at each position
copy_guess = torch.where(kinds["[MASK]"], torch.full_like(shown, top_piece), shown)
copy_acc = (copy_guess == y_val).float().mean().item()
for name, m in kinds.items():
    print(
        f"{name:9s} n = {int(m.sum()):5d}: loss {pos_loss[m].mean():.3f} "
        f"(unigram {uni_pos[m].mean():.3f}), "
        f"accuracy {pos_right[m].float().mean():.3f} "
        f"(always {tokenizer.convert_ids_to_tokens(top_piece)!r}: "
        f"{(y_val[m] == top_piece).float().mean():.3f})"
    )
print(f"copy baseline accuracy {copy_acc:.3f}; model {pos_right.float().mean():.3f}")

# %%
at_mask = kinds["[MASK]"]
gain_all = stats.bootstrap_ratio((uni_pos - pos_loss).numpy())
gain_mask = stats.bootstrap_ratio((uni_pos - pos_loss)[at_mask].numpy())
mask_acc = pos_right[at_mask].float().mean().item()
mask_top_acc = (y_val[at_mask] == top_piece).float().mean().item()
for name, value in (
    ("mask_share_pct", 100 * at_mask.float().mean().item()),
    ("mask_loss", pos_loss[at_mask].mean().item()),
    ("mask_unigram_loss", uni_pos[at_mask].mean().item()),
    ("mask_acc_pct", 100 * mask_acc),
    ("mask_top_acc_pct", 100 * mask_top_acc),
    ("unchanged_loss", pos_loss[kinds["unchanged"]].mean().item()),
    ("unchanged_acc_pct", 100 * pos_right[kinds["unchanged"]].float().mean().item()),
    ("copy_acc_pct", 100 * copy_acc),
    ("gain_all", gain_all.diff),
    ("gain_all_low", gain_all.low),
    ("gain_all_high", gain_all.high),
    ("gain_mask", gain_mask.diff),
    ("gain_mask_low", gain_mask.low),
    ("gain_mask_high", gain_mask.high),
):
    dlbook.glue(name, value)
print(
    f"gain over unigram: all {gain_all.diff:.3f} "
    f"[{gain_all.low:.3f}, {gain_all.high:.3f}], "
    f"at [MASK] {gain_mask.diff:.3f} [{gain_mask.low:.3f}, {gain_mask.high:.3f}]"
)
if (
    profile == "full"
):  # at [MASK] the model reads the context: beats unigram and "always top"
    assert gain_mask.low > 0 and mask_acc > mask_top_acc
    # the visible token at unchanged positions is far easier than a [MASK]
    assert pos_loss[kinds["unchanged"]].mean() < pos_loss[at_mask].mean() - 1

# %% [markdown]
# In {glue:text}`train_steps` steps ({glue:text}`train_minutes:.1f` minutes on the machine named
# above) the validation MLM loss falls from $\ln V$ to {glue:text}`mlm_val_loss` nats. Most of the
# fall comes first: after {glue:text}`first_eval_step` steps the loss is already
# {glue:text}`val_first:.2f`, close to the unigram line at {glue:text}`unigram_loss:.2f`, which a
# model reaches by learning *which pieces are frequent*, without reading the context at all. Over
# all masked positions the model ends {glue:text}`gain_all:.2f` nats below the unigram baseline
# (95 % bootstrap interval {glue:text}`gain_all_low:.2f` to {glue:text}`gain_all_high:.2f`), but a
# model can gain in two ways: by copying the visible token at unchanged positions (loss
# {glue:text}`unchanged_loss:.2f`, accuracy {glue:text}`unchanged_acc_pct:.0f`% there) and by
# reading the context. At the {glue:text}`mask_share_pct:.0f`% of positions that show `[MASK]`,
# only the context helps: there the loss is {glue:text}`mask_loss:.2f` against
# {glue:text}`mask_unigram_loss:.2f` for the unigram model, a gain of {glue:text}`gain_mask:.3f`
# nats (interval {glue:text}`gain_mask_low:.3f` to {glue:text}`gain_mask_high:.3f`), and the top
# guess is right {glue:text}`mask_acc_pct:.1f`% of the time against
# {glue:text}`mask_top_acc_pct:.1f`% for always guessing the most frequent piece. Over all
# positions the model is right {glue:text}`mlm_val_acc_pct:.1f`% of the time; the copy baseline,
# which reads no context at all, reaches {glue:text}`copy_acc_pct:.1f`%.
#
# ### Fill in the blank
#
# The `fill-mask` pipeline wraps tokenisation, the model and the top-$k$ decoding. Its suggestions
# show what such a loss means in practice:

# %%
tiny.eval()
fill = pipeline("fill-mask", model=tiny, tokenizer=tokenizer, device=device)
prompts = [
    "this is the best [MASK] of the year.",
    "the acting is [MASK] and the story is boring.",
    "a [MASK] and moving film.",
    "the film is too [MASK] to be funny.",
]
for prompt in prompts:
    guesses = fill(prompt, top_k=5)
    print(
        f"{prompt:<48}",
        " | ".join(f"{g['token_str']} {g['score']:.2f}" for g in guesses),
    )

# %% [markdown]
# To see where its accuracy comes from, we compare its top-1 guesses at all masked validation
# positions with the 20 most frequent pieces of the training reviews, and look at the probability
# it gives "film" in the first prompt.


# %%
@torch.no_grad()
def top1_guesses(model):
    """The model's most likely piece at every masked validation position, in order."""
    model.eval()
    out = []
    for batch_v in val_batches:
        _, logits_v = mlm_loss(model, *(t.to(device) for t in batch_v))  # (n, V)
        out.append(logits_v.argmax(-1).cpu())  # (masked positions of this batch,)
    return torch.cat(out)  # (n_masked,), aligned with val_labels


frequent = torch.tensor([t for t, _ in counts.most_common(20)])  # (20,) piece ids
guessed = top1_guesses(tiny)
right = guessed == val_labels
share = {
    "top-1 guesses": torch.isin(guessed, frequent).float().mean().item(),
    "answers": torch.isin(val_labels, frequent).float().mean().item(),
    "right guesses": torch.isin(val_labels[right], frequent).float().mean().item()
    if right.any()
    else float("nan"),
}
for what, value in share.items():
    print(f"{what:>14} that are one of the 20 most frequent pieces: {value:.3f}")
film = tokenizer.convert_tokens_to_ids("film")
slot = tokenizer(prompts[0], return_tensors="pt").to(device)
with torch.no_grad():
    at_mask = slot["input_ids"][0] == tokenizer.mask_token_id  # (T,)
    probs = tiny(**slot).logits[0, at_mask].softmax(-1)[0].cpu()  # (V,) at the blank
p_film, p_top = probs[film].item(), probs.max().item()
film_ratio = p_film / log_unigram[film].exp().item()  # against its training frequency
top_piece = tokenizer.convert_ids_to_tokens(int(probs.argmax()))
print(
    f"p('film' | {prompts[0]!r}) = {p_film:.4f}, {film_ratio:.2f} x its frequency; "
    f"top piece {top_piece!r}: {p_top:.3f}"
)
dlbook.glue("guess_frequent_pct", 100 * share["top-1 guesses"])
dlbook.glue("answer_frequent_pct", 100 * share["answers"])
dlbook.glue("right_frequent_pct", 100 * share["right guesses"])
dlbook.glue("p_film", p_film)
dlbook.glue("film_ratio", film_ratio)
dlbook.glue("p_top", p_top)
if profile == "full":
    assert share["top-1 guesses"] > 0.8 and share["right guesses"] > 0.5
    assert int(probs.argmax()) in frequent.tolist() and p_top > p_film

# %% [markdown]
# The suggestions are poor, and the counts say why. Of the model's top-1 guesses,
# {glue:text}`guess_frequent_pct:.0f`% are one of the 20 most frequent pieces (punctuation, "the",
# "a", "of", "and", ...), although those pieces are the answer at only
# {glue:text}`answer_frequent_pct:.0f`% of the masked positions; and
# {glue:text}`right_frequent_pct:.0f`% of its right guesses are such pieces. In the first prompt
# its favourite piece for the blank is again one of the 20 most frequent, with probability
# {glue:text}`p_top:.2f`, while "film" gets {glue:text}`p_film:.3f` ({glue:text}`film_ratio:.1f`
# times its frequency in the training reviews): nothing here has learned that "the best ___ of
# the year" wants a noun like "film". BERT-base read far more text for far longer
# {cite}`devlin2019bert`; the exercise on the pretraining budget below puts a number on the
# gap.
#
# ### The pretrained checkpoint has no MLM head
#
# Why not fill in blanks with the pretrained MiniLM instead? Because the checkpoint we ship is a
# *sentence-embedding* fine-tune {cite}`sentencetransformers2021allminilm`: it keeps the encoder and
# has no MLM head. `from_pretrained` says so when asked for a masked-LM model, in its load report
# (printed below as the library logs it); the `MISSING` weights are freshly initialised.

# %% tags=["shows-warning"]
minilm_mlm, loading_info = BertForMaskedLM.from_pretrained(
    model_path, output_loading_info=True
)
minilm_mlm = minilm_mlm.to(device).eval()
print("missing (newly initialised):", sorted(loading_info["missing_keys"]))
print("unexpected (in the file, unused):", sorted(loading_info["unexpected_keys"]))
head = minilm_mlm.cls.predictions
assert head.decoder.weight is minilm_mlm.bert.embeddings.word_embeddings.weight  # tied
missing_parts = {k.split(".")[2] for k in loading_info["missing_keys"]}
assert missing_parts == {"bias", "decoder", "transform"}  # decoder: only its bias

# %%
minilm_val_loss, minilm_val_acc = evaluate(minilm_mlm)
print(
    f"MiniLM encoder + random MLM head: validation MLM loss {minilm_val_loss:.2f} "
    f"(ln V = {ln_v:.2f}), "
    f"top-1 accuracy {minilm_val_acc:.3f}"
)
minilm_fill = pipeline(
    "fill-mask", model=minilm_mlm, tokenizer=tokenizer, device=device
)
print(
    prompts[2],
    "->",
    " | ".join(g["token_str"] for g in minilm_fill(prompts[2], top_k=5)),
)
dlbook.glue("minilm_mlm_loss", minilm_val_loss)
assert minilm_val_loss > unigram_loss  # worse than ignoring the context
if profile == "full":
    assert minilm_val_loss > ln_v  # worse than a uniform guess

# %% [markdown]
# The missing pieces are the head's dense layer, its LayerNorm and the output bias; the output
# projection itself is tied to the (pretrained) token embeddings, so it loads. With a random dense
# layer in between, the head scores the vocabulary almost arbitrarily: the validation loss is
# {glue:text}`minilm_mlm_loss:.2f` nats, worse than a uniform guess
# ($\ln V =$ {glue:text}`ln_vocab:.2f`) and far worse than the unigram baseline. (The first line of
# the log, which calls the checkpoint corrupted, says the same: the head's bias is not in the
# file.) Whatever the encoder knows, nothing maps it back to words; to use this checkpoint for
# masked-word prediction, the head would have to be trained first.
#
# ## 8.7 What pretraining teaches, and next-sentence prediction
#
# BERT was pretrained on two tasks at once {cite}`devlin2019bert`. Besides MLM, **next-sentence
# prediction** (NSP) gave the model a pair `[CLS] A [SEP] B [SEP]` (segment ids 0 and 1, as in
# section 8.1) where half of the time B really followed A in the corpus and half of the time it was
# a random sentence from the corpus; a two-way classifier on the final `[CLS]` vector had to tell
# which. The aim was a model that understands the relation between two sentences, which tasks such
# as question answering and natural language inference rely on. `BertForPreTraining` still has
# both heads (in `transformers` the classifier reads the `[CLS]` vector through the pooler, a dense
# layer with tanh):

# %%
pretraining = BertForPreTraining(tiny_config)
print(pretraining.cls)
print("NSP head:", pretraining.cls.seq_relationship, "on the pooled [CLS] vector")

# %% [markdown]
# Later work took NSP apart:
#
# - **RoBERTa** {cite}`liu2019roberta` found that removing NSP, with inputs of contiguous
#   full-length text, matched or slightly improved downstream results. Its other changes were longer
#   training with bigger batches over more data, longer sequences, and dynamic masking (a fresh
#   corruption each time a sequence is seen, as our loop does).
# - **ALBERT** {cite}`lan2020albert` argued that NSP is too easy: its negative B comes from a
#   different document, so *topic* alone often gives the answer, and topic is something MLM learns
#   anyway. It replaced NSP by **sentence-order prediction**: B is always the true neighbour of A,
#   and the negative example swaps their order, so topic no longer helps.
#
# What pretraining leaves in BERT is surveyed by Rogers et al. {cite}`rogers2020primer`. Probing
# classifiers recover parts of speech, syntactic chunks and roles from its token representations,
# and syntactic trees can be recovered from those representations, though not directly from its
# attention weights; queried with cloze sentences, it rivals knowledge bases on some relation
# types; and it is insensitive to negation. Sentences are another matter: Reimers and Gurevych found
# that BERT's output vectors, averaged or taken at `[CLS]`, made worse sentence embeddings for
# semantic similarity than averaged GloVe word vectors {cite}`reimers2019sentencebert`. The MiniLM
# encoder of this book became a sentence encoder through a further fine-tuning step, with a
# contrastive objective on over a billion sentence pairs {cite}`sentencetransformers2021allminilm`.
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
# - Individual heads are measurably positional (previous or next token); where BERT-base puts
#   much of its attention on `[SEP]`, this MiniLM model puts about half of its layer-2-to-5
#   attention on `[CLS]`, in one-segment reviews.
# - MLM with the 80/10/10 recipe, Eq. {eq}`eq-mlm-loss`, takes a tiny BERT from $\ln V$ to
#   {glue:text}`mlm_val_loss` nats on held-out reviews in {glue:text}`train_minutes:.1f` minutes.
#   A model can gain by copying the visible token at unchanged positions and by reading the
#   context; at `[MASK]` positions, where only the context helps, it is
#   {glue:text}`gain_mask:.3f` nats below a unigram baseline. A checkpoint without an MLM head
#   cannot fill in blanks.
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
# the observed word {cite}`devlin2019bert`; without their loss, the model would learn that a chosen
# position never holds the original token.
# :::
#
# :::{exercise}
# :label: ch08-ex-mask-constant
# Section 8.3 gives padded keys the most negative number of the dtype, Eq. {eq}`eq-bert-mask`. Why
# not a fixed $-10^4$, or $-\infty$? Measure it. Write `my_padded_weight(logits, attention_mask,
# fill, dtype)`: `logits` is `(batch, T_q, T_k)`, `attention_mask` `(batch, T_k)` (1 = token,
# 0 = padding); convert the logits and `fill` to `dtype`, add `fill` at the padded keys only, take
# the softmax over the keys in `dtype`, and return, as float32 of shape `(batch, T_q)`, the weight
# each query puts on the padded keys in total (NaN where the softmax gives NaN). Then try the
# candidates in float32, float16 and bfloat16 on ordinary logits, on logits spread over $\pm 10^4$,
# and on a sequence with no real token at all. Which candidate never leaks weight to padding and
# never gives NaN?
# :::


# %%
def my_padded_weight(logits, attention_mask, fill, dtype):
    raise NotImplementedError  # your code here


dlbook.exercises.check("ch08.padded_weight", my_padded_weight)

# %% [markdown]
# ```{solution-start} ch08-ex-mask-constant
# :class: dropdown
# ```


# %% tags=["solution"]
def my_padded_weight(logits, attention_mask, fill, dtype):
    pad = (attention_mask == 0)[:, None, :]  # (B, 1, T_k): the padded keys
    scores = logits.to(dtype)  # (B, T_q, T_k), in the dtype the model computes in
    scores = torch.where(pad, scores + torch.tensor(fill, dtype=dtype), scores)
    weights = torch.softmax(scores, dim=-1)  # (B, T_q, T_k)
    return (weights * pad).sum(-1).float()  # (B, T_q): weight on padding, per query


assert dlbook.exercises.check("ch08.padded_weight", my_padded_weight)

# %% tags=["solution"]
g = torch.Generator().manual_seed(0)
lengths = torch.tensor([8, 5, 3, 6])
situations = {  # name: (logits (4, 8, 8), attention_mask (4, 8))
    "ordinary": (3 * torch.randn(4, 8, 8, generator=g), lengths),
    "spread 1e4": (1e4 * torch.randn(4, 8, 8, generator=g), lengths),
    "no token": (3 * torch.randn(4, 8, 8, generator=g), torch.tensor([8, 5, 3, 0])),
}
fills = {  # name: the fill for a computation in dtype dt
    "-1e4": lambda dt: -1e4,
    "-inf": lambda dt: -math.inf,
    "float32 min": lambda dt: torch.finfo(torch.float32).min,
    "dtype's min": lambda dt: torch.finfo(dt).min,
}
leak = {}
for dtype in (torch.float32, torch.float16, torch.bfloat16):
    for sit, (logits, lens) in situations.items():
        am_s = (torch.arange(8)[None, :] < lens[:, None]).long()  # (4, 8)
        for name, fill in fills.items():
            w = my_padded_weight(logits, am_s, fill(dtype), dtype)  # (4, 8)
            # "no token": the empty sequence's queries; else the worst leak of any query
            leak[name, sit, dtype] = w[3].max() if sit == "no token" else w.max()
print(f"{'':>20}" + "".join(f"{name:>13}" for name in fills))
for dtype in (torch.float32, torch.float16, torch.bfloat16):
    for sit in situations:
        row = "".join(f"{leak[name, sit, dtype].item():>13.3g}" for name in fills)
        print(f"{str(dtype)[6:]:>9} {sit:>10}" + row)

# %% tags=["solution"]
dtypes = (torch.float32, torch.float16, torch.bfloat16)
assert all(
    leak["dtype's min", sit, dt] == 0
    for dt in dtypes
    for sit in situations
    if sit != "no token"
)
assert not any(leak["dtype's min", "no token", dt].isnan() for dt in dtypes)  # uniform
assert all(leak["-1e4", "ordinary", dt] == 0 for dt in dtypes)
assert leak["-1e4", "spread 1e4", torch.float32] > 0.1  # the fixed constant leaks
assert all(leak["-inf", "no token", dt].isnan() for dt in dtypes)
assert all(leak["float32 min", "no token", dt].isnan() for dt in dtypes[1:])  # now -inf
dlbook.glue("leak_1e4", leak["-1e4", "spread 1e4", torch.float32].item())

# %% [markdown]
# Only the dtype's own minimum passes everywhere. A fixed $-10^4$ is harmless on ordinary logits,
# but once the logits themselves spread over $\pm 10^4$ a padded key can outscore the real ones and
# take up to {glue:text}`leak_1e4:.2f` of a query's weight. $-\infty$ turns a sequence with no real
# token into NaN (all its logits are $-\infty$, and the softmax's $-\infty - (-\infty)$ is NaN), and
# float32's minimum becomes $-\infty$ when it is cast to float16 or bfloat16, with the same NaN. With the dtype's minimum the empty sequence gets uniform
# weights: meaningless, but finite, so it cannot poison a batch.
#
# ```{solution-end}
# ```
#
# :::{exercise}
# :label: ch08-ex-budget
# Our tiny BERT computed a loss on {glue:text}`n_predicted` masked tokens during its whole training.
# BERT-base trained for 1,000,000 steps on batches of 256 sequences; 90% of the steps used
# sequences of 128 tokens and the last 10% sequences of 512 {cite}`devlin2019bert`. How many token
# positions did it read, how many masked-token predictions is that at a masking rate of 15%, and
# how many times our count? What does the comparison say about the fill-mask demo?
# :::
#
# :::{solution} ch08-ex-budget
# :class: dropdown
# Positions: $256 \cdot (0.9 \cdot 10^6 \cdot 128 + 0.1 \cdot 10^6 \cdot 512)
# = 256 \cdot (1.152 \cdot 10^8 + 0.512 \cdot 10^8) =$ {glue:text}`bert_positions:.3g`; 15% of
# them are {glue:text}`bert_predictions:.3g` predictions, about {glue:text}`budget_ratio:,.0f` times
# the {glue:text}`n_predicted` of our run (computed in the cell below). Devlin et al. describe the
# million steps as about 40 epochs over their 3.3-billion-word corpus; that figure counts every
# step at 512 tokens, {glue:text}`bert_positions_512:.3g` positions, {glue:text}`schedule_ratio:.1f`
# times the schedule they describe. Our model also has {glue:text}`tiny_params_m:.1f` M
# parameters against BERT-base's 110 M {cite}`devlin2019bert`, and read its
# {glue:text}`train_tokens_k:.0f` thousand training tokens {glue:text}`train_epochs:.1f` times.
# Fill-in-the-blank answers made of frequent pieces are what such a budget buys.
# :::

# %%
steps, batch = 1_000_000, 256  # Devlin et al. (2019), BERT-base
# 90% of the steps at 128 tokens, the last 10% at 512
bert_positions = batch * (0.9 * steps * 128 + 0.1 * steps * 512)
bert_positions_512 = batch * steps * 512  # every step at 512 tokens
bert_predictions = 0.15 * bert_positions
dlbook.glue("bert_positions", bert_positions)
dlbook.glue("bert_positions_512", bert_positions_512)
dlbook.glue("schedule_ratio", bert_positions_512 / bert_positions)
dlbook.glue("bert_predictions", bert_predictions)
dlbook.glue("budget_ratio", bert_predictions / n_predicted)
print(
    f"BERT-base: {bert_positions:.3g} positions, {bert_predictions:.3g} predictions, "
    f"{bert_predictions / n_predicted:.3g} x ours"
)

# %% [markdown]
# :::{exercise}
# :label: ch08-ex-whole-word
# **Whole-word masking** {cite}`devlin2019bertwwm` chooses *words*, then masks every WordPiece of a
# chosen word, so the model
# cannot recover `##ing` from `danc` next to it. Write `my_whole_words(word_ids, u_word,
# mlm_probability)`: `word_ids` `(batch, seq)` holds the word index of each token and -1 for
# `[CLS]`, `[SEP]` and `[PAD]` (a fast tokenizer's `encoding.word_ids()` with `None` replaced by -1);
# `u_word` `(batch, n_words)` holds one uniform draw per word; word $w$ of row $b$ is chosen when
# `u_word[b, w] < mlm_probability`. Return a boolean `(batch, seq)` tensor, True at every token of
# a chosen word and never at a special token. Then measure on real reviews: of the chosen pieces
# that belong to words of two or more pieces, how many leave another piece of their word visible,
# with token-level choice and with yours? Do both choose about 15% of the pieces?
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
    per_token = torch.gather(
        chosen_word, 1, word_ids.clamp(min=0)
    )  # (B, T): look up each token's word
    return per_token & (word_ids >= 0)  # special tokens are never chosen


assert dlbook.exercises.check("ch08.whole_word_selection", my_whole_words)

# %% tags=["solution"]
ww = tokenizer(
    val_texts[: sizes["n_heads_batch"]], padding=True, truncation=True, max_length=64
)
word_ids = torch.tensor(
    [
        [-1 if w is None else w for w in ww.word_ids(i)]
        for i in range(len(ww["input_ids"]))
    ]
)  # (B, T)
g = torch.Generator().manual_seed(0)
by_token = (torch.rand(word_ids.shape, generator=g) < 0.15) & (word_ids >= 0)  # (B, T)
n_words = int(word_ids.max()) + 1
u_word = torch.rand(word_ids.shape[0], n_words, generator=g)  # (B, n_words)
by_word = my_whole_words(word_ids, u_word)


def visible_sibling_share(chosen, word_ids):
    """Share of chosen pieces of multi-piece words whose word keeps a piece unchosen."""
    n_chosen = n_leaky = 0
    for b in range(word_ids.shape[0]):
        for w in word_ids[b][word_ids[b] >= 0].unique():
            in_word = word_ids[b] == w  # (T,)
            if in_word.sum() >= 2:
                picked = int(chosen[b][in_word].sum())
                n_chosen += picked
                n_leaky += picked if picked < int(in_word.sum()) else 0
    return n_leaky / max(n_chosen, 1), n_chosen


eligible_ww = int((word_ids >= 0).sum())
rate = {}
for name, chosen_ww in (("token-level", by_token), ("whole-word", by_word)):
    share, n = visible_sibling_share(chosen_ww, word_ids)
    rate[name] = int(chosen_ww.sum()) / eligible_ww
    print(
        f"{name:>11}: {rate[name]:.3f} of the pieces chosen; {share:.2f} of the {n} "
        f"chosen pieces of multi-piece words keep a visible sibling"
    )
share_token, _ = visible_sibling_share(by_token, word_ids)
assert visible_sibling_share(by_word, word_ids)[0] == 0  # whole words: nothing to copy
dlbook.glue("sibling_share_token", share_token)
if profile == "full":
    assert share_token > 0.5 and all(abs(r - 0.15) < 0.03 for r in rate.values())

# %% [markdown]
# With token-level choice, {glue:text}`sibling_share_token:.2f` of the chosen pieces of split words
# keep a neighbour from their own word in view; whole-word
# choice leaves none, at about the same overall rate of chosen pieces.
#
# ```{solution-end}
# ```
#
# :::{exercise}
# :label: ch08-ex-pairs
# Clark et al. measured BERT-base on *pairs* of segments, `[CLS] A [SEP] B [SEP]`, which have two
# [SEP] tokens {cite}`clark2019does`. Does MiniLM park its attention on [SEP] when it reads pairs?
# Write `my_special_attention(attentions, input_ids, attention_mask, cls_id, sep_id)`:
# `attentions` is the model's list of `(batch, heads, T, T)` tensors, one per layer; return a
# float32 `(layers, heads, 2)` tensor with, for each head, the mean over the real query tokens of
# the batch of the weight on `[CLS]` (`[..., 0]`) and on all `[SEP]` tokens together (`[..., 1]`).
# Then run `ours_bert` on two-sentence reviews, once as one segment and once as a pair, and compare
# the strongest `[CLS]` and `[SEP]` heads.
# :::


# %%
def my_special_attention(attentions, input_ids, attention_mask, cls_id, sep_id):
    raise NotImplementedError  # your code here


dlbook.exercises.check("ch08.special_attention", my_special_attention)

# %% [markdown]
# ```{solution-start} ch08-ex-pairs
# :class: dropdown
# ```


# %% tags=["solution"]
def my_special_attention(attentions, input_ids, attention_mask, cls_id, sep_id):
    att = torch.stack(list(attentions), dim=1).float()  # (B, L, H, T, T)
    is_cls = (input_ids == cls_id)[:, None, None, None, :]  # (B, 1, 1, 1, T): [CLS]
    is_sep = (input_ids == sep_id)[:, None, None, None, :]
    on_cls, on_sep = (att * is_cls).sum(-1), (att * is_sep).sum(-1)  # (B, L, H, T) each
    per_query = torch.stack([on_cls, on_sep], -1)  # (B, L, H, T, 2)
    real = attention_mask.bool()  # (B, T)
    per_query = per_query * real[:, None, None, :, None]  # padded queries do not count
    return per_query.sum(dim=(0, 3)) / real.sum()  # (L, H, 2)


assert dlbook.exercises.check("ch08.special_attention", my_special_attention)

# %% tags=["solution"]
two = [t.split(". ", 1) for t in val_texts if t.count(". ") == 1][: sizes["n_pairs"]]
firsts, seconds = [a + "." for a, _ in two], [b for _, b in two]
joined = [f"{a} {b}" for a, b in zip(firsts, seconds, strict=True)]
inputs_by_form = {
    "one segment": tokenizer(joined, padding=True, return_tensors="pt"),
    # [CLS] A [SEP] B [SEP], segment ids 0 then 1
    "pair": tokenizer(firsts, seconds, padding=True, return_tensors="pt"),
}
strongest = {}
for form, enc_f in inputs_by_form.items():
    enc_f = enc_f.to(device)
    with torch.no_grad():
        att_f = ours_bert(
            enc_f["input_ids"],
            enc_f["attention_mask"],
            enc_f["token_type_ids"],
            output_attentions=True,
        ).attentions
    # (6, 12, 2): per layer and head, the mean weight on [CLS] and on [SEP]
    share = my_special_attention(
        att_f,
        enc_f["input_ids"],
        enc_f["attention_mask"],
        tokenizer.cls_token_id,
        tokenizer.sep_token_id,
    )
    strongest[form] = share.cpu().amax(dim=(0, 1))  # (2,): the strongest head for each
    print(
        f"{form:>11} ({len(firsts)} reviews): strongest [CLS] head "
        f"{strongest[form][0]:.2f}, strongest [SEP] head {strongest[form][1]:.2f}"
    )
dlbook.glue("pair_cls", strongest["pair"][0].item())
dlbook.glue("pair_sep", strongest["pair"][1].item())
dlbook.glue("one_sep", strongest["one segment"][1].item())
if profile == "full":
    assert all(s[0] > 2 * s[1] for s in strongest.values())  # [CLS], not [SEP], in both
    assert strongest["pair"][1] > strongest["one segment"][1]

# %% [markdown]
# Pairs raise the strongest [SEP] head from {glue:text}`one_sep:.2f` to {glue:text}`pair_sep:.2f`,
# still far below the strongest [CLS] head at {glue:text}`pair_cls:.2f`: this model parks on
# [CLS] in both forms.
#
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
# - BERT and its pretraining recipe {cite}`devlin2019bert`; WordPiece
#   {cite}`schuster2012japanese,wu2016google`.
# - What was kept and what was dropped afterwards: RoBERTa {cite}`liu2019roberta`, ALBERT
#   {cite}`lan2020albert`.
# - What the heads and layers encode {cite}`clark2019does` and the survey "A Primer in BERTology"
#   {cite}`rogers2020primer`.
# - The model used here: MiniLM distillation {cite}`wang2020minilm` and
#   {cite}`sentencetransformers2021allminilm`, made with the Sentence-BERT framework
#   {cite}`reimers2019sentencebert`.
