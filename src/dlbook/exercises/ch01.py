"""Exercise checks for chapter 1, "The Hugging Face toolbox".

- ``ch01.mean_pool``: masked mean pooling (the chapter's Eq. eq-ch01-mean-pool);
- ``ch01.tokens_per_snippet``: train a WordPiece vocabulary with the chapter's recipe and measure
  how many tokens a snippet costs (the reader then sweeps the vocabulary size);
- ``ch01.nearest_vote``: k-nearest-neighbour labels by majority vote over embeddings.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..embeddings import mean_pool
from . import Case, register

#: The special tokens of a BERT vocabulary, in BERT's order; the trainer puts them first.
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def _gen(rng: np.random.Generator) -> torch.Generator:
    return torch.Generator().manual_seed(int(rng.integers(1 << 31)))


# ---------------------------------------------------------------- mean_pool


def _mean_pool_cases(rng: np.random.Generator) -> list[Case]:
    def case(name: str, batch: int, seq: int, dim: int, dtype: torch.dtype = torch.float32) -> Case:
        gen = _gen(rng)
        hidden = torch.randn(batch, seq, dim, generator=gen, dtype=dtype)
        lengths = torch.randint(1, seq + 1, (batch,), generator=gen)
        lengths[0] = max(1, seq // 2)  # at least one padded row when seq > 1
        mask = (torch.arange(seq)[None, :] < lengths[:, None]).long()  # (batch, seq)
        return Case(name, (hidden, mask))

    return [
        case("batch with padding", 4, 9, 16),
        case("a batch of one, no padding", 1, 5, 8),
        case("float64 input", 3, 7, 4, torch.float64),
        case("long sequences, wide vectors", 2, 64, 384),
    ]


register("ch01.mean_pool", mean_pool, _mean_pool_cases)


# ---------------------------------------------------------------- tokens_per_snippet


def train_wordpiece(texts: Sequence[str], vocab_size: int):
    """The chapter's recipe: an uncased BERT-style WordPiece vocabulary trained on ``texts``.

    BERT's normalizer (lowercase, strip accents, space out CJK characters) and pre-tokenizer
    (split on whitespace and punctuation), then the ``tokenizers`` WordPiece trainer with
    :data:`SPECIAL_TOKENS`. Returns a ``tokenizers.Tokenizer``. Training twice on the same text
    may not give the same vocabulary: the trainer breaks ties between equally frequent merges in
    an order that can change from run to run (huggingface/tokenizers issue 1794), which is why
    the check below compares with a tolerance.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size must be an integer >= {len(SPECIAL_TOKENS)}, got {vocab_size!r}")
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise TypeError("texts must be a sequence of strings")
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False)
    tok.train_from_iterator(list(texts), trainer)
    return tok


def tokens_per_snippet(train_texts: Sequence[str], eval_texts: Sequence[str], vocab_size: int) -> float:
    """Reference: train with :func:`train_wordpiece` on ``train_texts``, then the mean number of
    tokens per snippet of ``eval_texts`` (no special tokens added)."""
    if len(eval_texts) == 0:
        raise ValueError("eval_texts is empty: the mean is undefined")
    tok = train_wordpiece(train_texts, vocab_size)
    return float(np.mean([len(enc.ids) for enc in tok.encode_batch(list(eval_texts))]))


_SYLLABLES = ("ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "be", "da", "ge", "hu", "po", "zen", "qua", "rix")


def _toy_corpus(rng: np.random.Generator, n_words: int, n_sentences: int) -> list[str]:
    """Sentences over a made-up lexicon with Zipf-like word frequencies, capitals and punctuation."""
    lexicon = sorted({"".join(rng.choice(_SYLLABLES, size=rng.integers(1, 5))) for _ in range(n_words)})
    weights = 1.0 / np.arange(1, len(lexicon) + 1)
    weights /= weights.sum()
    out = []
    for _ in range(n_sentences):
        words = list(rng.choice(lexicon, size=rng.integers(3, 14), p=weights))
        words[0] = words[0].capitalize()
        out.append(" ".join(words) + str(rng.choice([".", "!", "?", "..."])))
    return out


def _tokens_cases(rng: np.random.Generator) -> list[Case]:
    def case(name: str, n_words: int, vocab_size: int) -> Case:
        corpus = _toy_corpus(rng, n_words, 260)
        return Case(name, (corpus[:200], corpus[200:], vocab_size))

    return [
        case("a small vocabulary (mostly single letters and short pieces)", 120, 60),
        case("a middling vocabulary", 200, 150),
        case("a vocabulary large enough for whole words", 200, 600),
    ]


# The trainer breaks ties between equally frequent merges in an order that can change from run to
# run (huggingface/tokenizers issue 1794), so two correct answers may differ in the last digits;
# a wrong recipe (cased, special tokens counted, another vocabulary size) is off by more than 2 %.
register("ch01.tokens_per_snippet", tokens_per_snippet, _tokens_cases, atol=0.0, rtol=1e-3)


# ---------------------------------------------------------------- nearest_vote


def nearest_vote(queries: torch.Tensor, keys: torch.Tensor, key_labels: torch.Tensor, k: int) -> torch.Tensor:
    """Reference: label each query by a majority vote of its ``k`` most similar keys (dot product).

    ``queries`` (n_q, d) and ``keys`` (n_k, d) are unit-length embeddings, ``key_labels`` (n_k,)
    holds 0/1 labels, ``k`` is odd so a vote between two labels cannot tie. Returns (n_q,) int64.
    """
    scores = queries @ keys.T  # (n_q, n_k) cosine similarities
    nearest = scores.topk(k, dim=1).indices  # (n_q, k)
    votes = key_labels[nearest].float().mean(dim=1)  # (n_q,) share of label 1
    return (votes > 0.5).long()


def _knn_cases(rng: np.random.Generator) -> list[Case]:
    def case(name: str, n_q: int, n_k: int, d: int, k: int) -> Case:
        g = _gen(rng)
        keys = torch.nn.functional.normalize(torch.randn(n_k, d, generator=g), dim=1)
        queries = torch.nn.functional.normalize(torch.randn(n_q, d, generator=g), dim=1)
        labels = torch.randint(0, 2, (n_k,), generator=g)
        return Case(name, (queries, keys, labels, k))

    return [
        case("k = 1: the nearest key's label", 20, 50, 8, 1),
        case("k = 3", 20, 50, 8, 3),
        case("k = 15, wide vectors", 30, 200, 64, 15),
        case("a single query", 1, 40, 16, 5),
        case("k equal to the number of keys: the overall majority", 6, 9, 4, 9),
    ]


register("ch01.nearest_vote", nearest_vote, _knn_cases, atol=0.0, rtol=0.0)

__all__ = ["SPECIAL_TOKENS", "nearest_vote", "tokens_per_snippet", "train_wordpiece"]
