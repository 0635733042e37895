"""Exercise checks for chapter 90, "Pitfalls: wrong forms that look right".

Each check tests the reader's function on hidden cases; the chapter's solutions then use it in an
experiment (and assert what they find).
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import Case, register


def _gen(rng: np.random.Generator) -> torch.Generator:
    return torch.Generator().manual_seed(int(rng.integers(1 << 31)))


# ----------------------------------------------------------------------------- the attention divisor


def attention_divisor(sigma_q: float, sigma_k: float, d_k: int) -> float:
    """Reference: the number that brings ``q . k`` to variance 1.

    The entries of ``q`` and ``k`` are independent with mean 0 and standard deviations ``sigma_q``
    and ``sigma_k``, so each product ``q_j k_j`` has variance ``sigma_q**2 * sigma_k**2`` and the sum
    of ``d_k`` of them has ``d_k * sigma_q**2 * sigma_k**2``; the divisor is its square root.
    """
    return float(sigma_q * sigma_k * math.sqrt(d_k))


def _divisor_cases(rng: np.random.Generator) -> list[Case]:
    return [
        Case("unit variances, d_k = 64 (the sqrt(d_k) of the paper)", (1.0, 1.0, 64)),
        Case("sigma_q = sigma_k = 3, d_k = 16", (3.0, 3.0, 16)),
        Case("sigma_q = 2, sigma_k = 0.5, d_k = 100", (2.0, 0.5, 100)),
        Case("sigma_q = 0.1, sigma_k = 4, d_k = 7", (0.1, 4.0, 7)),
        Case("random sigmas, d_k = 1", (float(rng.uniform(0.2, 5)), float(rng.uniform(0.2, 5)), 1)),
    ]


register("ch90.attention_divisor", attention_divisor, _divisor_cases, atol=1e-9, rtol=1e-6)


# ----------------------------------------------------------------------------- gradient accumulation


def accumulated_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, n_micro: int) -> torch.Tensor:
    """Reference: the gradient of the batch's mean cross-entropy, accumulated over micro-batches.

    The batch is cut into ``n_micro`` micro-batches with ``torch.tensor_split``; each micro-batch's
    mean loss is weighted by its share ``b_j / B`` before ``backward``, and the gradients add up in
    ``.grad``. Returns every parameter's gradient, flattened and concatenated in the order of
    ``model.parameters()``. Works on a copy: ``model`` itself is left as it was.
    """
    if x.dim() < 2 or y.dim() != 1 or len(x) != len(y):
        raise ValueError(f"need x (B, ...) and y (B,); got {tuple(x.shape)} and {tuple(y.shape)}")
    model = copy.deepcopy(model)
    model.zero_grad(set_to_none=True)
    for xb, yb in zip(x.tensor_split(n_micro), y.tensor_split(n_micro), strict=True):
        if len(xb) == 0:
            continue
        loss = F.cross_entropy(model(xb), yb)  # mean over this micro-batch
        (loss * len(xb) / len(x)).backward()  # weight b_j / B: the weighted means add up to the batch mean
    return torch.cat([p.grad.flatten() for p in model.parameters()])


def make_classifier(norm: str, seed: int, d_in: int = 6, hidden: int = 16, n_classes: int = 3) -> nn.Module:
    """A small MLP for the accumulation exercise: ``norm`` is ``"none"``, ``"layer"`` or ``"batch"``."""
    layers = {"none": nn.Identity, "layer": nn.LayerNorm, "batch": nn.BatchNorm1d}
    if norm not in layers:
        raise ValueError(f"norm must be one of {sorted(layers)}, got {norm!r}")
    with torch.random.fork_rng(devices=[]):  # seeded weights, and the caller's random state untouched
        torch.manual_seed(seed)
        norm_layer = nn.Identity() if norm == "none" else layers[norm](hidden)
        return nn.Sequential(nn.Linear(d_in, hidden), norm_layer, nn.ReLU(), nn.Linear(hidden, n_classes)).train()


def _accumulation_cases(rng: np.random.Generator) -> list[Case]:
    def case(name: str, norm: str, n: int, n_micro: int) -> Case:
        g = _gen(rng)
        x = torch.randn(n, 6, generator=g)
        y = torch.randint(0, 3, (n,), generator=g)
        return Case(name, (make_classifier(norm, int(rng.integers(1 << 16))), x, y, n_micro))

    return [
        case("an MLP, 16 rows in 4 equal micro-batches", "none", 16, 4),
        case("an MLP, 10 rows in 3 micro-batches of unequal size", "none", 10, 3),
        case("with LayerNorm, 12 rows in 3 micro-batches", "layer", 12, 3),
        case("with BatchNorm (train mode), 16 rows in 4 micro-batches", "batch", 16, 4),
        case("one micro-batch (no accumulation)", "none", 6, 1),
    ]


register("ch90.accumulated_gradient", accumulated_gradient, _accumulation_cases, atol=1e-6, rtol=1e-4)
