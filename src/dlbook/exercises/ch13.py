"""Exercise checks for chapter 13, "Pruning"."""

from __future__ import annotations

import numpy as np
import torch

from . import Case, register

# ----------------------------------------------------------------------------- N:M semi-structured masks


def nm_mask(weight: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Reference: 0/1 mask of ``weight``'s shape and dtype keeping, in every group of ``m`` consecutive
    entries of each row (the input dimension of an ``nn.Linear`` weight), the ``n`` of largest magnitude.

    Raises ``ValueError`` when the row length is not a multiple of ``m``.
    """
    rows, cols = weight.shape
    if cols % m:
        raise ValueError(f"row length {cols} is not a multiple of {m}")
    groups = weight.detach().abs().reshape(rows, cols // m, m)  # (rows, groups, m)
    keep = groups.topk(n, dim=-1).indices  # (rows, groups, n)
    mask = torch.zeros_like(groups).scatter_(-1, keep, 1.0)
    return mask.reshape(rows, cols).to(weight.dtype)


def _nm_cases(rng: np.random.Generator) -> list[Case]:
    def w(rows: int, cols: int, scale: float = 1.0) -> torch.Tensor:
        g = torch.Generator().manual_seed(int(rng.integers(1 << 31)))
        return scale * torch.randn(rows, cols, generator=g)

    tiny = torch.tensor([[0.1, -0.9, 0.3, 0.2, 5.0, -4.0, 0.01, 0.02]])
    return [
        Case("one row of 8 with known magnitudes, 2:4", (tiny, 2, 4)),
        Case("negative weights of large magnitude must be kept, 2:4", (-tiny, 2, 4)),
        Case("a 16 x 32 weight, 2:4", (w(16, 32), 2, 4)),
        Case("a tall 64 x 8 weight, 2:4 (groups run along rows, not columns)", (w(64, 8), 2, 4)),
        Case("a 12 x 24 weight, 1:4", (w(12, 24), 1, 4)),
        Case("a 10 x 16 weight, 4:8", (w(10, 16, 0.02), 4, 8)),
        Case("a float64 weight, 2:4 (the mask keeps the dtype)", (w(6, 12).double(), 2, 4)),
        Case("a 3 x 6 weight with m = 3, 2:3", (w(3, 6), 2, 3)),
    ]


register("ch13.nm_mask", nm_mask, _nm_cases, atol=0.0, rtol=0.0)


# ----------------------------------------------------------------------------- Taylor scores of heads


def head_taylor(act: torch.Tensor, grad: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Reference: the (n_heads,) first-order Taylor scores of one batch.

    ``act`` and ``grad`` are (batch, seq, n_heads * d): the input of an attention output projection
    and the loss gradient with respect to it. Score of head h: ``|sum(grad * act)|`` over batch,
    tokens and the head's ``d`` coordinates ``h*d ... h*d + d - 1``.
    """
    ga = (grad * act).sum(dim=(0, 1))  # (n_heads * d,)
    return ga.reshape(n_heads, -1).sum(-1).abs()


def _taylor_cases(rng: np.random.Generator) -> list[Case]:
    def case(name: str, b: int, t: int, h: int, d: int) -> Case:
        g = torch.Generator().manual_seed(int(rng.integers(1 << 31)))
        act = torch.randn(b, t, h * d, generator=g)
        grad = torch.randn(b, t, h * d, generator=g)
        return Case(name, (act, grad, h))

    # head 0: +1 on token 0 and -1 on token 1 cancel (score 0); head 1: all +1 (score 2 * 2 * 4 = 16)
    act = torch.ones(2, 2, 8)
    grad = torch.ones(2, 2, 8)
    grad[:, 1, :4] = -1
    cancel = Case("gradient x activation that cancels across tokens for head 0", (act, grad, 2))
    return [
        case("one sequence, 12 heads of 32", 1, 5, 12, 32),
        case("a batch of 4, 6 heads of 8", 4, 7, 6, 8),
        case("2 heads of 1", 3, 2, 2, 1),
        case("one head", 2, 4, 1, 16),
        cancel,
    ]


register("ch13.head_taylor", head_taylor, _taylor_cases, atol=1e-4, rtol=1e-4)
