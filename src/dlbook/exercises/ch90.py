"""Exercise checks for chapter 90, "Pitfalls in popular explanations"."""

from __future__ import annotations

import numpy as np
import torch

from . import Case, register


def _gen(rng: np.random.Generator) -> torch.Generator:
    return torch.Generator().manual_seed(int(rng.integers(1 << 31)))


def accumulated_gradient(w: torch.Tensor, x: torch.Tensor, y: torch.Tensor, n_micro: int) -> torch.Tensor:
    """Reference: the gradient of ``mean((x @ w - y) ** 2)`` over the whole batch, accumulated over micro-batches.

    The batch of ``N`` rows is cut into ``n_micro`` micro-batches (``torch.tensor_split``); each
    micro-batch's mean loss is weighted by its share ``b_j / N`` of the batch before ``backward``,
    so the accumulated gradient equals the full-batch gradient even when the sizes differ.
    Returns a tensor shaped like ``w``.
    """
    if x.dim() != 2 or w.dim() != 1 or y.dim() != 1 or x.shape != (y.shape[0], w.shape[0]):
        raise ValueError(f"need x (N, d), w (d,), y (N,); got {tuple(x.shape)}, {tuple(w.shape)}, {tuple(y.shape)}")
    w = w.detach().clone().requires_grad_(True)
    n = x.shape[0]
    for xb, yb in zip(x.tensor_split(n_micro), y.tensor_split(n_micro), strict=True):
        if len(xb) == 0:
            continue
        loss = ((xb @ w - yb) ** 2).mean()  # mean over this micro-batch
        (loss * len(xb) / n).backward()  # weight b_j / N: the sum of the weighted means is the batch mean
    return w.grad


def _accumulation_cases(rng: np.random.Generator) -> list[Case]:
    def case(name: str, n: int, d: int, n_micro: int, dtype: torch.dtype = torch.float32) -> Case:
        g = _gen(rng)
        x = torch.randn(n, d, generator=g, dtype=dtype)
        y = torch.randn(n, generator=g, dtype=dtype)
        w = torch.randn(d, generator=g, dtype=dtype)
        return Case(name, (w, x, y, n_micro))

    return [
        case("8 rows in 4 equal micro-batches", 8, 3, 4),
        case("10 rows in 3 micro-batches of unequal size", 10, 4, 3),
        case("one micro-batch (no accumulation)", 6, 2, 1),
        case("micro-batches of one row", 5, 3, 5),
        case("float64, 17 rows in 4 micro-batches", 17, 6, 4, torch.float64),
    ]


register("ch90.accumulated_gradient", accumulated_gradient, _accumulation_cases)
