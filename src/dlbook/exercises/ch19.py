"""Exercise checks for chapter 19, "Encoder-decoder models"."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..env import resolve_device
from ..seq2seq import PAD
from ..stats import compare, paired_bootstrap
from . import Case, CheckResult, register


def _gen(rng: np.random.Generator) -> torch.Generator:
    return torch.Generator().manual_seed(int(rng.integers(1 << 31)))


# ---------------------------------------------------------------------------- cross-attention
def cross_attention(
    x: torch.Tensor,
    memory: torch.Tensor,
    Wq: torch.Tensor,
    Wk: torch.Tensor,
    Wv: torch.Tensor,
    memory_pad: torch.Tensor,
) -> torch.Tensor:
    """Reference: one head of cross-attention, ``softmax(Q K^T / sqrt(d_k)) V`` with ``Q = x Wq^T`` from
    the decoder ``(B, T, d)``, ``K = memory Wk^T`` and ``V = memory Wv^T`` from the encoder ``(B, S, d)``;
    source positions where ``memory_pad`` ``(B, S)`` is True get no weight. Returns ``(B, T, d_v)``."""
    q, k, v = x @ Wq.T, memory @ Wk.T, memory @ Wv.T  # (B, T, d_k), (B, S, d_k), (B, S, d_v)
    logits = q @ k.transpose(1, 2) / math.sqrt(q.shape[-1])  # (B, T, S)
    logits = logits.masked_fill(memory_pad[:, None, :], float("-inf"))
    return torch.softmax(logits, dim=-1) @ v


def _cross_cases(rng: np.random.Generator) -> list[Case]:
    def case(name: str, B: int, T: int, S: int, d: int, d_k: int, d_v: int, n_pad: Sequence[int]) -> Case:
        g = _gen(rng)
        x, memory = torch.randn(B, T, d, generator=g), torch.randn(B, S, d, generator=g)
        Wq, Wk = torch.randn(d_k, d, generator=g), torch.randn(d_k, d, generator=g)
        Wv = torch.randn(d_v, d, generator=g)
        pad = torch.zeros(B, S, dtype=torch.bool)
        for b, n in enumerate(n_pad):
            if n:
                pad[b, S - n :] = True
        return Case(name, (x, memory, Wq, Wk, Wv, pad))

    return [
        case("no padding, T = S", 2, 4, 4, 8, 8, 8, [0, 0]),
        case("a shorter target than source (T = 3, S = 9)", 2, 3, 9, 8, 4, 6, [0, 0]),
        case("the second source padded (its last 5 positions)", 2, 5, 9, 8, 8, 8, [0, 5]),
        case("d_k = 2 (the scale matters)", 3, 6, 7, 12, 2, 5, [1, 0, 3]),
    ]


register("ch19.cross_attention", cross_attention, _cross_cases, atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------------------- teacher forcing
def teacher_forcing_loss(logits: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
    """Reference: mean cross-entropy of ``tgt[:, 1:]`` under ``logits`` ``(B, T, V)`` computed from the
    decoder input ``tgt[:, :-1]``, over the real (non-PAD) target tokens; a 0-d tensor."""
    labels = tgt[:, 1:]  # (B, T): what each position must predict
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=PAD)


def _tf_cases(rng: np.random.Generator) -> list[Case]:
    def case(name: str, B: int, L: int, V: int, lengths: Sequence[int]) -> Case:
        g = _gen(rng)
        tgt = torch.full((B, L), PAD, dtype=torch.long)
        for b, n in enumerate(lengths):  # BOS, n - 2 tokens, EOS, then PAD
            tgt[b, 0] = 1
            tgt[b, 1 : n - 1] = torch.randint(3, V, (n - 2,), generator=g)
            tgt[b, n - 1] = 2
        logits = 2 * torch.randn(B, L - 1, V, generator=g)
        return Case(name, (logits, tgt))

    return [
        case("one target, no padding", 1, 6, 10, [6]),
        case("equal lengths", 3, 8, 12, [8, 8, 8]),
        case("padded targets of different lengths", 3, 9, 12, [9, 4, 6]),
        case("a large vocabulary", 2, 5, 70, [5, 3]),
    ]


register("ch19.teacher_forcing_loss", teacher_forcing_loss, _tf_cases, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------- beam verdict
NO_DIFFERENCE = "no measurable difference"


def beam_verdict(correct_greedy: Sequence[bool], correct_beam: Sequence[bool]) -> str:
    """The verdict :func:`dlbook.stats.compare` supports for ``beam - greedy`` exact match:
    ``"beam"`` or ``"greedy"`` when the difference is measurable (the 95 % paired bootstrap interval
    excludes 0 and McNemar's test rejects equal accuracy), else ``"no measurable difference"``
    (an inconclusive pair included)."""
    cmp = compare(np.asarray(correct_beam, dtype=bool), np.asarray(correct_greedy, dtype=bool))
    if not cmp.measurable:
        return NO_DIFFERENCE
    return "beam" if cmp.interval.diff > 0 else "greedy"


def check_beam_verdict(
    correct_greedy: Sequence[bool], correct_beam: Sequence[bool], verdict: str, *, verbose: bool = True
) -> CheckResult:
    """Check the beam-or-greedy experiment of chapter 19.

    ``correct_greedy`` and ``correct_beam`` hold one exact-match flag per **validation** example, for
    the same examples in the same order; ``verdict`` is ``"beam"``, ``"greedy"`` or ``"no measurable
    difference"``. Passes when the verdict is the one :func:`beam_verdict` gives (paired bootstrap
    interval and McNemar's test); prints both accuracies and the interval.
    """
    key = "ch19.beam_verdict"
    a = np.asarray(correct_greedy)
    b = np.asarray(correct_beam)
    failure = None
    if a.ndim != 1 or a.shape != b.shape or a.size < 100:
        failure = (
            f"give one flag per example for both methods, the same examples, at least 100; got shapes {a.shape} and {b.shape}"
        )
    elif a.dtype != bool or b.dtype != bool:
        failure = "the flags must be booleans (prediction == target), e.g. dlbook.seq2seq.exact_match(...)"
    elif verdict not in ("beam", "greedy", NO_DIFFERENCE):
        failure = f"verdict must be 'beam', 'greedy' or {NO_DIFFERENCE!r}, got {verdict!r}"
    else:
        iv = paired_bootstrap(b, a)
        supported = beam_verdict(a, b)
        if verbose:
            print(f"greedy {a.mean():.4f}, beam {b.mean():.4f}; beam - greedy {iv.points()} points (95 %)")
        if verdict != supported:
            failure = f"the interval supports {supported!r}, not {verdict!r}"
    result = CheckResult(key, 0 if failure else 1, 1, failure)
    if verbose:
        print(repr(result))
    return result


# ---------------------------------------------------------------------------- a measured rate
def check_exact_match(
    model: torch.nn.Module,
    vocab,
    inputs: Sequence[str],
    targets: Sequence[str],
    rate: float,
    *,
    verbose: bool = True,
) -> CheckResult:
    """Check a measured exact-match rate (the ISO-input exercise of chapter 19).

    Decodes ``inputs`` greedily with ``model`` and passes when ``rate`` equals the share of outputs
    that equal ``targets`` (to 1e-9), measured on at least 100 inputs.
    """
    from ..seq2seq import exact_match, translate

    key = "ch19.exact_match"
    failure = None
    if len(inputs) != len(targets) or len(inputs) < 100:
        failure = f"give as many targets as inputs, at least 100; got {len(inputs)} and {len(targets)}"
    else:
        src = torch.nn.utils.rnn.pad_sequence([torch.tensor(vocab.encode(t)) for t in inputs], batch_first=True)
        device = resolve_device(model=model)
        want = float(
            exact_match(translate(model, vocab, src.to(device), max_len=len(max(targets, key=len)) + 1), list(targets)).mean()
        )
        if verbose:
            print(f"greedy exact match on these {len(inputs)} inputs: {want:.4f}")
        if not isinstance(rate, (int, float, np.floating)) or not abs(float(rate) - want) <= 1e-9:
            failure = f"your rate {rate!r} differs from the measured {want:.4f}"
    result = CheckResult(key, 0 if failure else 1, 1, failure)
    if verbose:
        print(repr(result))
    return result
