"""Exercise checks for chapter 17, "A language model inside out".

Each check runs the reader's function and the reference on hidden cases; the chapter's solutions
then use it on the real model.
"""

from __future__ import annotations

import numpy as np
import torch

from . import Case, register


def _gen(rng: np.random.Generator) -> torch.Generator:
    return torch.Generator().manual_seed(int(rng.integers(1 << 31)))


# ----------------------------------------------------------------------------- RoPE, adjacent pairs


def rope_adjacent(x: torch.Tensor, positions: torch.Tensor, base: float) -> torch.Tensor:
    """Reference: rotary embeddings with the RoFormer paper's pairs ``(2i, 2i + 1)``.

    ``x`` ``(..., T, d)`` with ``d`` even, ``positions`` integer ``(T,)``. Pair ``i`` at position
    ``m`` turns by ``m * base ** (-2i / d)`` radians, computed in ``x``'s dtype.
    """
    d = x.shape[-1]
    theta = 1.0 / base ** (torch.arange(0, d, 2).to(x.dtype) / d)  # (d/2,)
    angle = positions[:, None].to(x.dtype) * theta  # (T, d/2)
    c, s = angle.cos(), angle.sin()
    even, odd = x[..., 0::2], x[..., 1::2]
    return torch.stack([even * c - odd * s, even * s + odd * c], dim=-1).flatten(-2)


def _rope_cases(rng: np.random.Generator) -> list[Case]:
    def case(name: str, shape: tuple[int, ...], start: int, base: float) -> Case:
        x = torch.randn(*shape, generator=_gen(rng), dtype=torch.float64)
        return Case(name, (x, torch.arange(start, start + shape[-2]), base))

    return [
        case("one vector of 2 dimensions at positions 0..0", (1, 2), 0, 10_000.0),
        case("(T=5, d=8), positions 0..4", (5, 8), 0, 10_000.0),
        case("(batch=2, heads=3, T=7, d=16), positions 10..16, base 100000", (2, 3, 7, 16), 10, 100_000.0),
        case("(T=4, d=64), far positions 5000..5003 (the slow pairs matter)", (4, 64), 5_000, 10_000.0),
        case("(T=3, d=6), base 10 (every pair turns fast)", (3, 6), 2, 10.0),
    ]


register("ch17.rope_adjacent", rope_adjacent, _rope_cases, atol=1e-9, rtol=1e-9)


# ----------------------------------------------------------------------------- next-token NLL


def token_nll(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Reference: per sequence, the summed nats of tokens ``1..T-1`` that are real (``mask == 1``).

    ``logits`` ``(B, T, V)``, ``ids`` and ``mask`` ``(B, T)``; token ``t`` is predicted by the logits
    at position ``t - 1``. Returns float32 ``(B,)``.
    """
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # (B, T-1, V)
    picked = logp.gather(-1, ids[:, 1:, None])[..., 0]  # (B, T-1)
    return -(picked * mask[:, 1:].float()).sum(dim=1)


def _nll_cases(rng: np.random.Generator) -> list[Case]:
    def case(name: str, B: int, T: int, V: int, lengths: list[int], scale: float = 2.0) -> Case:
        g = _gen(rng)
        logits = scale * torch.randn(B, T, V, generator=g)
        ids = torch.randint(0, V, (B, T), generator=g)
        mask = (torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]).long()  # right padding
        return Case(name, (logits, ids, mask))

    return [
        case("one full sequence (B=1, T=6, V=11)", 1, 6, 11, [6]),
        case("right padding: lengths 7, 4, 2 (padded positions must not count)", 3, 7, 13, [7, 4, 2]),
        case("a sequence of one token has nothing to predict", 2, 5, 9, [5, 1]),
        case("large logits (a log-softmax, not log of a softmax)", 2, 4, 50, [4, 3], scale=60.0),
    ]


register("ch17.token_nll", token_nll, _nll_cases, atol=1e-4, rtol=1e-5)
