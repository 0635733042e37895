"""Decoding a causal language model, written from the definitions (taught in chapter 18).

A causal language model gives, for a prefix of token ids, a score (logit) for every possible next
token. *Decoding* turns those scores into text, one token at a time. This module holds the rules
chapter 18 derives, each a few lines long so that it can be read next to its definition:

- :func:`greedy`: always take the most probable token;
- :func:`sample` with :func:`filter_logits`: draw from the distribution after temperature scaling
  (:func:`apply_temperature`), top-k filtering (:func:`top_k_filter`, Fan et al. 2018) and nucleus
  filtering (:func:`top_p_filter`, Holtzman et al. 2020), optionally after the repetition penalty
  of CTRL (:func:`penalize_repetition`, Keskar et al. 2019);
- :func:`beam_search`: keep the ``num_beams`` best partial sequences by summed log-probability;
- :func:`decode`: one entry point that names each setting and refuses unknown ones.

The functions take any ``model`` that maps ids ``(batch, seq)`` to logits ``(batch, seq, vocab)``:
a Hugging Face causal LM (its output's ``.logits``), a module returning a tensor, or one returning
``(logits, cache)``. They recompute the whole prefix at every step (no key/value cache): that is
the definition, and chapter 18 then shows what a cache saves. Chapter 18 checks every rule
against ``transformers``' ``generate`` and logits processors.

The chapter also measures what the rules produce: :func:`repeated_ngram_rate` (repetition),
:func:`rouge_n` and :func:`rouge_l` (overlap with a reference summary, Lin 2004), and it counts
the cost of decoding with and without a key/value cache (:func:`forward_flops`,
:func:`kv_cache_bytes_per_token`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

# ---------------------------------------------------------------------------------------------
# argument checks


def _check_ids(ids: Tensor, name: str = "ids") -> Tensor:
    if not isinstance(ids, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of token ids, got {type(ids).__name__}")
    if ids.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"{name} must hold integer token ids (int64), got dtype {ids.dtype}")
    if ids.dim() != 2 or ids.shape[1] == 0:
        raise ValueError(f"{name} must have shape (batch, seq) with seq >= 1, got {tuple(ids.shape)}")
    if bool((ids < 0).any()):
        raise ValueError(f"{name} holds a negative token id")
    return ids


def _check_logits(logits: Tensor, name: str = "logits") -> Tensor:
    if not isinstance(logits, Tensor) or not logits.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor")
    if logits.dim() != 2:
        raise ValueError(f"{name} must have shape (batch, vocab), got {tuple(logits.shape)}")
    return logits


def _check_positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def _config_value(model: Any, key: str) -> int | None:
    config = getattr(model, "config", None)
    value = getattr(config, key, None)
    return int(value) if isinstance(value, int) else None


def _check_fits(model: Any, ids: Tensor, max_new_tokens: int) -> None:
    """Refuse ids outside the vocabulary and prompts that leave no room in the context."""
    vocab = _config_value(model, "vocab_size")
    if vocab is not None and int(ids.max()) >= vocab:
        raise ValueError(f"ids holds token id {int(ids.max())}, outside the model's vocabulary of {vocab}")
    context = _config_value(model, "max_position_embeddings")
    if context is not None and ids.shape[1] + max_new_tokens > context:
        raise ValueError(
            f"the prompt ({ids.shape[1]} tokens) plus max_new_tokens ({max_new_tokens}) exceeds the "
            f"model's context of {context} positions"
        )


def _eos_set(eos_token_id: int | Sequence[int] | None) -> set[int]:
    if eos_token_id is None:
        return set()
    ids = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
    if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids):
        raise ValueError(f"eos_token_id must be an int >= 0 or a list of them, got {eos_token_id!r}")
    return set(ids)


# ---------------------------------------------------------------------------------------------
# the model's next-token scores


def logits_of(output: Any) -> Tensor:
    """The logits tensor in a model's output: ``.logits``, the first element of a tuple, or itself."""
    if isinstance(output, Tensor):
        return output
    if hasattr(output, "logits"):
        return output.logits
    if isinstance(output, tuple) and output and isinstance(output[0], Tensor):
        return output[0]
    raise TypeError(f"cannot find logits in a model output of type {type(output).__name__}")


@torch.inference_mode()
def next_token_logits(model: Callable[..., Any], ids: Tensor) -> Tensor:
    """Scores of every next token after each row of ``ids``: ``(batch, vocab)``, float32.

    Runs the model on the whole prefix (no cache) and keeps the last position.
    """
    _check_ids(ids)
    logits = logits_of(model(ids))  # (B, T, V)
    if logits.dim() != 3 or logits.shape[:2] != ids.shape:
        raise ValueError(f"the model must return logits of shape (batch, seq, vocab), got {tuple(logits.shape)}")
    return logits[:, -1, :].float()


# ---------------------------------------------------------------------------------------------
# turning scores into a distribution


def apply_temperature(logits: Tensor, temperature: float) -> Tensor:
    """``logits / temperature``: below 1 sharpens the softmax, above 1 flattens it."""
    _check_logits(logits)
    if isinstance(temperature, bool) or not isinstance(temperature, int | float) or not temperature > 0:
        raise ValueError(f"temperature must be a number > 0, got {temperature!r} (use greedy for 0)")
    return logits / temperature


def top_k_filter(logits: Tensor, k: int) -> Tensor:
    """Keep the ``k`` highest logits of each row, set the rest to ``-inf`` (Fan et al. 2018).

    Tokens tied with the ``k``-th highest are kept too, so a row can keep more than ``k``.
    """
    _check_logits(logits)
    _check_positive_int(k, "top_k")
    k = min(k, logits.shape[-1])
    kth = logits.topk(k, dim=-1).values[:, -1:]  # (B, 1): the k-th highest score
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: Tensor, p: float) -> Tensor:
    """Nucleus filtering (Holtzman et al. 2020): keep the smallest set of most probable tokens
    whose total probability reaches ``p``, set the rest to ``-inf``.

    Sorted by probability (descending), a token is kept when the probability of the tokens
    *before* it is still below ``p``; the most probable token is always kept. Written the
    equivalent way that is exact at ``p = 1``: the mass of the token and all *less* probable
    ones (a cumulative sum in ascending order) must exceed ``1 - p``.
    """
    _check_logits(logits)
    if isinstance(p, bool) or not isinstance(p, int | float) or not 0 < p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {p!r}")
    sorted_logits, order = logits.sort(dim=-1)  # (B, V) each, ascending
    tail_mass = sorted_logits.softmax(dim=-1).cumsum(dim=-1)  # this token and all less probable
    keep_sorted = tail_mass > 1 - p  # i.e. mass before it (descending order) < p
    keep_sorted[:, -1] = True  # the most probable token
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)  # vocabulary order
    return logits.masked_fill(~keep, float("-inf"))


def penalize_repetition(logits: Tensor, ids: Tensor, penalty: float) -> Tensor:
    """The repetition penalty on every token that occurs in ``ids``, as ``transformers`` applies it.

    CTRL (Keskar et al. 2019) divides a seen token's logit by ``penalty``; dividing a negative
    logit would raise it, so ``transformers`` (and this function) divide a positive logit and
    multiply a negative one, and ``penalty > 1`` always makes a seen token less likely.
    ``ids``: ``(batch, seq)``, prompt included.
    """
    _check_logits(logits)
    _check_ids(ids)
    if ids.shape[0] != logits.shape[0]:
        raise ValueError(f"ids and logits need the same batch size, got {ids.shape[0]} and {logits.shape[0]}")
    if isinstance(penalty, bool) or not isinstance(penalty, int | float) or not penalty > 0:
        raise ValueError(f"repetition_penalty must be a number > 0, got {penalty!r}")
    seen = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, ids, True)  # (B, V)
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalised, logits)


def filter_logits(logits: Tensor, *, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None) -> Tensor:
    """Temperature, then top-k, then top-p: the order ``transformers`` applies them in."""
    out = apply_temperature(logits, temperature)
    if top_k is not None:
        out = top_k_filter(out, top_k)
    if top_p is not None:
        out = top_p_filter(out, top_p)
    return out


# ---------------------------------------------------------------------------------------------
# decoding rules


def _append(ids: Tensor, nxt: Tensor, done: Tensor, pad: int) -> Tensor:
    nxt = torch.where(done, torch.full_like(nxt, pad), nxt)  # finished rows get padding
    return torch.cat([ids, nxt[:, None]], dim=1)


def greedy(
    model: Callable[..., Any],
    ids: Tensor,
    max_new_tokens: int,
    *,
    eos_token_id: int | Sequence[int] | None = None,
    pad_token_id: int | None = None,
    repetition_penalty: float | None = None,
) -> Tensor:
    """Greedy decoding: append the most probable next token, ``max_new_tokens`` times.

    Returns ``(batch, seq + n)``. A row stops at an end token; later positions of that row get
    ``pad_token_id`` (default: the first end token), as ``generate`` does. The loop ends early
    when every row has stopped.
    """
    return _decode_loop(model, ids, max_new_tokens, eos_token_id, pad_token_id, repetition_penalty, None)


def sample(
    model: Callable[..., Any],
    ids: Tensor,
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    repetition_penalty: float | None = None,
    eos_token_id: int | Sequence[int] | None = None,
    pad_token_id: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Sampling: draw each next token from the filtered distribution (:func:`filter_logits`).

    One ``torch.multinomial`` draw per step from the global generator (or ``generator``): with
    the same seed and the same distribution this draws what ``generate(do_sample=True)`` draws.
    """
    settings = dict(temperature=temperature, top_k=top_k, top_p=top_p)
    filter_logits(torch.zeros(1, 2), **settings)  # check the settings before running the model
    return _decode_loop(model, ids, max_new_tokens, eos_token_id, pad_token_id, repetition_penalty, (settings, generator))


def _decode_loop(
    model: Callable[..., Any],
    ids: Tensor,
    max_new_tokens: int,
    eos_token_id: int | Sequence[int] | None,
    pad_token_id: int | None,
    penalty: float | None,
    sampling: tuple[dict[str, Any], torch.Generator | None] | None,
) -> Tensor:
    _check_ids(ids)
    _check_positive_int(max_new_tokens, "max_new_tokens")
    _check_fits(model, ids, max_new_tokens)
    eos = _eos_set(eos_token_id)
    pad = pad_token_id if pad_token_id is not None else (min(eos) if eos else 0)
    done = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
    for _ in range(max_new_tokens):
        logits = next_token_logits(model, ids)  # (B, V)
        if penalty is not None:
            logits = penalize_repetition(logits, ids, penalty)
        if sampling is None:
            nxt = logits.argmax(dim=-1)  # (B,)
        else:
            settings, generator = sampling
            probs = filter_logits(logits, **settings).softmax(dim=-1)
            nxt = torch.multinomial(probs, num_samples=1, generator=generator).squeeze(1)
        ids = _append(ids, nxt, done, pad)
        done = done | torch.tensor([int(t) in eos for t in nxt], device=ids.device)
        if bool(done.all()):
            break
    return ids


@dataclass(frozen=True)
class Beam:
    """A finished hypothesis of :func:`beam_search`: token ids (prompt included) and its score."""

    ids: Tensor
    score: float
    log_prob: float


@torch.inference_mode()
def beam_search(
    model: Callable[..., Any],
    ids: Tensor,
    max_new_tokens: int,
    *,
    num_beams: int,
    length_penalty: float = 1.0,
    eos_token_id: int | Sequence[int] | None = None,
) -> list[Beam]:
    """Beam search for one prompt ``ids`` of shape ``(1, seq)``: the ``num_beams`` best
    finished hypotheses, best first.

    Definition: keep the ``num_beams`` partial sequences with the highest summed log-probability;
    at each step extend every one by every token and keep the best extensions. A hypothesis that
    ends (an end token, or ``max_new_tokens`` reached) is scored by its summed log-probability
    divided by ``n_generated ** length_penalty``. The bookkeeping follows ``transformers``'
    default (``early_stopping=False``): each step looks at the ``2 * num_beams`` best extensions;
    an end token among the first ``num_beams`` of them finishes a hypothesis; the first
    ``num_beams`` others continue; the search stops once ``num_beams`` hypotheses are finished
    and the best running beam, divided by its current length ``** length_penalty``, cannot beat
    the worst of them.
    """
    _check_ids(ids)
    if ids.shape[0] != 1:
        raise ValueError(f"beam_search takes one prompt of shape (1, seq), got {tuple(ids.shape)}")
    _check_positive_int(max_new_tokens, "max_new_tokens")
    _check_positive_int(num_beams, "num_beams")
    if isinstance(length_penalty, bool) or not isinstance(length_penalty, int | float):
        raise ValueError(f"length_penalty must be a number, got {length_penalty!r}")
    _check_fits(model, ids, max_new_tokens)
    eos = _eos_set(eos_token_id)
    running = [(ids[0], 0.0)]  # (tokens, summed log-probability)
    finished: list[Beam] = []
    for step in range(1, max_new_tokens + 1):
        seqs = torch.stack([s for s, _ in running])  # (beams, T)
        log_probs = next_token_logits(model, seqs).log_softmax(dim=-1)  # (beams, V)
        past = torch.tensor([lp for _, lp in running], device=log_probs.device)  # (beams,)
        totals = log_probs + past[:, None]  # (beams, V)
        vocab = totals.shape[1]
        best, flat = totals.flatten().topk(min(2 * num_beams, totals.numel()))
        last_step = step == max_new_tokens
        new_running = []
        for rank, (score, index) in enumerate(zip(best.tolist(), flat.tolist(), strict=True)):
            beam, token = divmod(index, vocab)
            seq = torch.cat([running[beam][0], ids.new_tensor([token])])
            if token in eos or last_step:
                if rank < num_beams:  # only the top num_beams extensions may finish
                    finished.append(Beam(seq[None], score / step**length_penalty, score))
            elif len(new_running) < num_beams:
                new_running.append((seq, score))
        finished = sorted(finished, key=lambda b: -b.score)[:num_beams]
        running = new_running
        if last_step or not running:
            break
        if len(finished) == num_beams:  # can a running beam still beat the worst finished one?
            if running[0][1] / step**length_penalty <= finished[-1].score:
                break
    return finished


# ---------------------------------------------------------------------------------------------
# one entry point

_SETTINGS = {
    "greedy": {"max_new_tokens", "eos_token_id", "pad_token_id", "repetition_penalty"},
    "sample": {
        "max_new_tokens",
        "eos_token_id",
        "pad_token_id",
        "repetition_penalty",
        "temperature",
        "top_k",
        "top_p",
        "generator",
    },
    "beam": {"max_new_tokens", "eos_token_id", "num_beams", "length_penalty"},
}


def decode(model: Callable[..., Any], ids: Tensor, strategy: str = "greedy", **settings: Any) -> Tensor:
    """Decode with ``strategy`` (``"greedy"``, ``"sample"`` or ``"beam"``) and named settings.

    Returns ``(batch, seq + n)`` token ids (for ``"beam"``, the best hypothesis). An unknown
    strategy or a setting the strategy does not use is an error, not silently ignored.
    """
    if strategy not in _SETTINGS:
        raise ValueError(f"unknown decoding strategy {strategy!r}; choose one of {sorted(_SETTINGS)}")
    unknown = set(settings) - _SETTINGS[strategy]
    if unknown:
        raise ValueError(f"unknown setting(s) {sorted(unknown)} for {strategy!r}; it takes {sorted(_SETTINGS[strategy])}")
    if "max_new_tokens" not in settings:
        raise ValueError("decode needs max_new_tokens")
    if strategy == "beam":
        if "num_beams" not in settings:
            raise ValueError("beam decoding needs num_beams")
        return beam_search(model, ids, **settings)[0].ids
    n = settings.pop("max_new_tokens")
    return (greedy if strategy == "greedy" else sample)(model, ids, n, **settings)


# ---------------------------------------------------------------------------------------------
# measuring what comes out


def _check_tokens(tokens: Sequence[Any], name: str) -> list[Any]:
    if isinstance(tokens, str | Tensor) or not isinstance(tokens, Sequence):
        raise TypeError(f"{name} must be a list of tokens (split the text first)")
    return list(tokens)


def ngrams(tokens: Sequence[Any], n: int) -> list[tuple[Any, ...]]:
    """The ``n``-grams of a token list, in order."""
    tokens = _check_tokens(tokens, "tokens")
    _check_positive_int(n, "n")
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def repeated_ngram_rate(tokens: Sequence[Any], n: int = 3) -> float:
    """Share of the ``n``-grams of one text that already occurred earlier in it.

    0 for a text that never repeats an ``n``-gram, close to 1 for a text stuck in a loop; it is
    1 minus the text's distinct-``n`` ratio. NaN for a text shorter than ``n``.
    """
    grams = ngrams(tokens, n)
    if not grams:
        return math.nan
    return 1 - len(set(grams)) / len(grams)


def rouge_tokens(text: str) -> list[str]:
    """Lowercased words and numbers of ``text``: the units ROUGE counts here.

    ASCII letters and digits only: an accented letter splits a word (English summaries here).
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return re.findall(r"[a-z0-9]+", text.lower())


def _prf(overlap: float, n_cand: int, n_ref: int) -> tuple[float, float, float]:
    precision = overlap / n_cand if n_cand else 0.0
    recall = overlap / n_ref if n_ref else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def rouge_n(candidate: Sequence[str], reference: Sequence[str], n: int = 1) -> tuple[float, float, float]:
    """ROUGE-N (Lin 2004): clipped ``n``-gram overlap of a candidate with one reference.

    Returns ``(precision, recall, F1)``: overlap / candidate n-grams, overlap / reference n-grams,
    and their harmonic mean. An n-gram counts at most as often as it occurs in the reference.
    """
    from collections import Counter

    cand, ref = Counter(ngrams(candidate, n)), Counter(ngrams(reference, n))
    overlap = sum(min(c, ref[g]) for g, c in cand.items())
    return _prf(overlap, sum(cand.values()), sum(ref.values()))


def lcs_length(a: Sequence[Any], b: Sequence[Any]) -> int:
    """Length of the longest common subsequence (in order, gaps allowed), by dynamic programming."""
    a, b = _check_tokens(a, "a"), _check_tokens(b, "b")
    row = [0] * (len(b) + 1)
    for x in a:
        prev_diag = 0
        for j, y in enumerate(b, start=1):
            prev_diag, row[j] = row[j], prev_diag + 1 if x == y else max(row[j], row[j - 1])
    return row[-1]


def rouge_l(candidate: Sequence[str], reference: Sequence[str]) -> tuple[float, float, float]:
    """ROUGE-L (Lin 2004): ``(precision, recall, F1)`` from the longest common subsequence.

    Lin's F-measure weighs recall by a factor beta; this is the common beta = 1 (F1).
    """
    lcs = lcs_length(candidate, reference)
    return _prf(lcs, len(candidate), len(reference))


def parse_sentiment(text: str) -> int | None:
    """The label a generated answer names: 1 for positive, 0 for negative, None if unclear.

    Looks for the words positive/negative (case-insensitive, whole words); an answer that names
    both or neither is unparseable.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    words = set(re.findall(r"[a-z]+", text.lower()))
    pos, neg = "positive" in words, "negative" in words
    if pos == neg:
        return None
    return 1 if pos else 0


# ---------------------------------------------------------------------------------------------
# what a key/value cache saves and costs


def kv_cache_bytes_per_token(config: Any, bytes_per_value: int = 4) -> int:
    """Bytes a key/value cache stores per token: layers x 2 (keys, values) x kv heads x head dim
    x bytes per value. ``config``: a Llama-style config (``num_hidden_layers``,
    ``num_key_value_heads``, ``head_dim`` or ``hidden_size / num_attention_heads``)."""
    _check_positive_int(bytes_per_value, "bytes_per_value")
    layers, kv_heads, head_dim = _attention_shape(config)[:3]
    return layers * 2 * kv_heads * head_dim * bytes_per_value


def _attention_shape(config: Any) -> tuple[int, int, int, int, int, int, int]:
    try:
        layers, heads, d = config.num_hidden_layers, config.num_attention_heads, config.hidden_size
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        head_dim = getattr(config, "head_dim", None) or d // heads
        ff, vocab = config.intermediate_size, config.vocab_size
    except AttributeError as err:
        raise TypeError(f"config must be a Llama-style config, missing {err.name!r}") from err
    return layers, kv_heads, head_dim, heads, d, ff, vocab


def forward_flops(config: Any, n_new: int, n_past: int = 0, *, logits_for: int = 1) -> int:
    """Multiply-add FLOPs (2 per multiply-add) of one forward pass of a Llama-style decoder
    that processes ``n_new`` tokens after ``n_past`` cached ones.

    Counts the matrix products only (projections, attention scores and weighted sums, the
    SwiGLU feed-forward, the output head for ``logits_for`` positions); norms, rotary embeddings
    and softmax are lower order. Attention is counted over the whole ``n_past + n_new`` keys for
    every query, as a dense kernel computes it (the causal mask does not skip the products).
    """
    if isinstance(n_new, bool) or not isinstance(n_new, int) or n_new < 1:
        raise ValueError(f"n_new must be a positive int, got {n_new!r}")
    if isinstance(n_past, bool) or not isinstance(n_past, int) or n_past < 0:
        raise ValueError(f"n_past must be an int >= 0, got {n_past!r}")
    layers, kv_heads, head_dim, heads, d, ff, vocab = _attention_shape(config)
    projections = d * heads * head_dim * 2 + d * kv_heads * head_dim * 2  # q, o and k, v
    mlp = 3 * d * ff  # gate, up, down
    attention = 2 * heads * head_dim * (n_past + n_new)  # scores and weighted sum, per query
    per_layer = 2 * n_new * (projections + mlp + attention)
    return layers * per_layer + 2 * logits_for * d * vocab


__all__ = [
    "Beam",
    "apply_temperature",
    "beam_search",
    "decode",
    "filter_logits",
    "forward_flops",
    "greedy",
    "kv_cache_bytes_per_token",
    "lcs_length",
    "logits_of",
    "ngrams",
    "next_token_logits",
    "parse_sentiment",
    "repeated_ngram_rate",
    "penalize_repetition",
    "rouge_l",
    "rouge_n",
    "rouge_tokens",
    "sample",
    "top_k_filter",
    "top_p_filter",
]
