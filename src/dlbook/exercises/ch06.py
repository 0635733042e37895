"""Exercise checks for chapter 6, "Attention from first principles"."""

from __future__ import annotations

import math

import numpy as np
import torch

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


def attention_entropy(weights: torch.Tensor) -> torch.Tensor:
    """Reference: entropy ``-sum_j a_ij ln a_ij`` (nats) of each attention row, with ``0 ln 0 = 0``; shape ``(..., L_q)``."""
    return -torch.special.xlogy(weights, weights).sum(dim=-1)


def _entropy_cases(rng: np.random.Generator) -> list[Case]:
    def case(name: str, shape: tuple[int, ...], scale: float, n_blocked: int = 0) -> Case:
        logits = scale * torch.randn(*shape, generator=_gen(rng))
        if n_blocked:
            logits[..., -n_blocked:] = float("-inf")  # some keys get exactly zero weight
        return Case(name, (torch.softmax(logits, dim=-1),))

    return [
        case("nearly uniform rows", (4, 6), 0.01),
        case("peaked rows", (2, 3, 5, 10), 10.0),
        case("rows with zero weights (masked keys)", (3, 8), 1.0, n_blocked=3),
    ]


register("ch06.scaled_attention", scaled_attention, _attention_cases)
register("ch06.split_heads", split_heads, _split_cases)
register("ch06.attention_entropy", attention_entropy, _entropy_cases)
