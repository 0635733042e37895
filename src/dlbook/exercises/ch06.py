"""Exercise checks for chapter 6, "Attention from first principles"."""

from __future__ import annotations

import math

import numpy as np
import torch

from ..stats import seed_interval
from . import Case, register


def _gen(rng: np.random.Generator) -> torch.Generator:
    return torch.Generator().manual_seed(int(rng.integers(1 << 31)))


def scaled_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Reference: ``softmax(q k^T / sqrt(d_k))`` with ``mask`` (bool, True = may attend) applied, times ``v``."""
    logits = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (..., L_q, L_k)
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf"))
    return torch.softmax(logits, dim=-1) @ v  # (..., L_q, d_v)


def _attention_cases(rng: np.random.Generator) -> list[Case]:
    def case(name: str, lead: tuple[int, ...], L_q: int, L_k: int, d_k: int, d_v: int, mask: str | None = None) -> Case:
        g = _gen(rng)
        q = torch.randn(*lead, L_q, d_k, generator=g)
        k = torch.randn(*lead, L_k, d_k, generator=g)
        v = torch.randn(*lead, L_k, d_v, generator=g)
        if mask is None:
            return Case(name, (q, k, v))
        if mask == "causal":
            m = torch.ones(L_q, L_k, dtype=torch.bool).tril()
        else:  # padding: the last keys of each sequence are padding
            lengths = torch.randint(1, L_k + 1, lead[:1], generator=g)
            m = (torch.arange(L_k)[None, :] < lengths[:, None]).view(lead[0], *([1] * (len(lead) - 1)), 1, L_k)
        return Case(name, (q, k, v), {"mask": m})

    return [
        case("one sequence, d_k = 16", (), 5, 7, 16, 4),
        case("a batch of 3, d_k = 64", (3,), 6, 6, 64, 8),
        case("batch and heads, d_k = 32", (2, 4), 4, 9, 32, 32),
        case("causal mask", (2,), 6, 6, 16, 5, mask="causal"),
        case("padding mask (True = may attend)", (3, 2), 5, 8, 8, 4, mask="padding"),
    ]


def split_heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Reference: ``(B, L, d_model)`` -> ``(B, n_heads, L, d_model // n_heads)``, head ``h`` = features ``h*d:(h+1)*d``."""
    B, L, D = x.shape
    return x.view(B, L, n_heads, D // n_heads).transpose(1, 2)


def _split_cases(rng: np.random.Generator) -> list[Case]:
    def case(name: str, B: int, L: int, D: int, H: int) -> Case:
        return Case(name, (torch.randn(B, L, D, generator=_gen(rng)), H))

    return [
        case("2 heads", 2, 5, 8, 2),
        case("4 heads, one sequence", 1, 7, 16, 4),
        case("one head", 3, 4, 6, 1),
        case("12 heads of 32", 2, 3, 384, 12),
    ]


def causal_lower_right(L_q: int, L_k: int) -> torch.Tensor:
    """Reference: bool ``(L_q, L_k)`` causal mask aligned bottom-right: query ``i`` may attend keys ``j <= i + L_k - L_q``.

    The mask for ``L_q`` new queries that are the last ``L_q`` of ``L_k`` positions (decoding with a cache of
    keys and values); it equals ``torch.nn.attention.bias.causal_lower_right`` and
    ``dlbook.nn.attention.causal_mask(L_q, n_keys=L_k, align="bottom-right")``.
    """
    return torch.ones(L_q, L_k, dtype=torch.bool).tril(diagonal=L_k - L_q)


def _lower_right_cases(rng: np.random.Generator) -> list[Case]:
    cases = [
        Case("square: the usual lower triangle", (4, 4)),
        Case("one new query, 6 cached keys", (1, 6)),
        Case("3 queries, 7 keys", (3, 7)),
        Case("more queries than keys (first rows see nothing)", (5, 3)),
    ]
    for _ in range(3):
        L_q = int(rng.integers(1, 9))
        L_k = L_q + int(rng.integers(0, 9))
        cases.append(Case(f"{L_q} queries, {L_k} keys", (L_q, L_k)))
    return cases


def paired_interval(a: torch.Tensor, b: torch.Tensor, confidence: float = 0.95) -> tuple[float, float, float]:
    """Reference: ``(mean, low, high)`` of the paired differences ``a - b``, a Student-t interval.

    ``a[i]`` and ``b[i]`` are measured on the same unit (here: the same seed, hence the same initial
    weights and batches); the interval is ``mean +- t_{n-1} * sd / sqrt(n)`` with the sample standard
    deviation (``n - 1`` in the denominator) and ``t_{n-1}`` the two-sided quantile of Student's t with
    ``n - 1`` degrees of freedom. Chapter 6 uses it for training with and without the ``1/sqrt(d_k)``
    scale. The book's one implementation is :func:`dlbook.stats.seed_interval`; this reference is it.
    """
    interval = seed_interval(a, b, level=confidence)
    return interval.diff, interval.low, interval.high


def _paired_cases(rng: np.random.Generator) -> list[Case]:
    def case(name: str, n: int, shift: float, spread: float, confidence: float | None = None) -> Case:
        b = torch.as_tensor(rng.uniform(0.2, 0.9, n))
        a = b + shift + spread * torch.as_tensor(rng.standard_normal(n))  # paired: a tracks b
        args = (a, b) if confidence is None else (a, b, confidence)
        return Case(name, args)

    return [
        case("three seeds, a clear gain", 3, 0.2, 0.05),
        case("five seeds, no real difference", 5, 0.0, 0.1),
        case("ten seeds, a small loss", 10, -0.03, 0.02),
        case("two seeds (one degree of freedom)", 2, 0.1, 0.05),
        case("a 90 % interval", 6, 0.05, 0.05, confidence=0.9),
    ]


register("ch06.scaled_attention", scaled_attention, _attention_cases)
register("ch06.split_heads", split_heads, _split_cases)
register("ch06.causal_lower_right", causal_lower_right, _lower_right_cases, atol=0.0, rtol=0.0)
register("ch06.paired_interval", paired_interval, _paired_cases, atol=1e-9, rtol=1e-7)
