"""Exercise checks for chapter 7, "The Transformer block"."""

from __future__ import annotations

import numpy as np
import torch

from . import Case, register


def _gen(rng: np.random.Generator) -> torch.Generator:
    return torch.Generator().manual_seed(int(rng.integers(1 << 31)))


def layer_norm(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Reference: ``gamma * (x - mean) / sqrt(var + eps) + beta`` over the last dim, biased variance."""
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    return gamma * (x - mean) / torch.sqrt(var + eps) + beta


def _layer_norm_cases(rng: np.random.Generator) -> list[Case]:
    def case(name: str, shape: tuple[int, ...], shift: float, scale: float, eps: float | None = None) -> Case:
        g = _gen(rng)
        d = shape[-1]
        x = shift + scale * torch.randn(*shape, generator=g)
        gamma, beta = 1 + 0.5 * torch.randn(d, generator=g), torch.randn(d, generator=g)
        return Case(name, (x, gamma, beta), {} if eps is None else {"eps": eps})

    return [
        case("a batch of sequences with mean 3", (2, 5, 16), 3.0, 2.0),
        case("small feature dim (biased variance matters)", (4, 3), 0.0, 1.0),
        case("BERT's eps = 1e-12", (3, 32), -1.0, 0.5, eps=1e-12),
        case("large eps = 1.0", (2, 8), 1.0, 1.0, eps=1.0),
    ]


def feed_forward(x: torch.Tensor, W1: torch.Tensor, b1: torch.Tensor, W2: torch.Tensor, b2: torch.Tensor) -> torch.Tensor:
    """Reference: ``W2 max(0, W1 x + b1) + b2`` at every position; ``W1`` is ``(d_ff, d_model)``, ``W2`` ``(d_model, d_ff)``."""
    h = torch.clamp(x @ W1.T + b1, min=0)  # (..., d_ff)
    return h @ W2.T + b2  # (..., d_model)


def _ffn_cases(rng: np.random.Generator) -> list[Case]:
    def case(name: str, lead: tuple[int, ...], d: int, d_ff: int) -> Case:
        g = _gen(rng)
        x = torch.randn(*lead, d, generator=g)
        W1, b1 = torch.randn(d_ff, d, generator=g) / d**0.5, torch.randn(d_ff, generator=g)
        W2, b2 = torch.randn(d, d_ff, generator=g) / d_ff**0.5, torch.randn(d, generator=g)
        return Case(name, (x, W1, b1, W2, b2))

    return [
        case("one vector", (), 4, 16),
        case("a batch of sequences", (2, 6), 8, 32),
        case("d_ff = 4 d_model", (3, 5), 16, 64),
    ]


def positional_encoding(n_positions: int, d_model: int) -> torch.Tensor:
    """Reference: ``PE[pos, 2i] = sin(pos / 10000^(2i/d))``, ``PE[pos, 2i+1] = cos(pos / 10000^(2i/d))``, float32."""
    pos = torch.arange(n_positions, dtype=torch.float64)[:, None]
    two_i = torch.arange(0, d_model, 2, dtype=torch.float64)
    angle = pos / 10000 ** (two_i / d_model)
    pe = torch.zeros(n_positions, d_model, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(angle)
    pe[:, 1::2] = torch.cos(angle)
    return pe.float()


def _pe_cases(rng: np.random.Generator) -> list[Case]:
    return [Case(f"{n} positions, d_model = {d}", (n, d)) for n, d in ((4, 2), (10, 8), (50, 16), (128, 64))]


register("ch07.layer_norm", layer_norm, _layer_norm_cases)
register("ch07.feed_forward", feed_forward, _ffn_cases)
register("ch07.positional_encoding", positional_encoding, _pe_cases, atol=1e-5, rtol=1e-4)
