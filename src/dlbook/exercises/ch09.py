"""Exercise checks for chapter 9, "Fine-tuning BERT for sentiment"."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from . import Case, register

# ----------------------------------------------------------------------------- cosine schedule with warm-up


def cosine_warmup_lr(step: int, warmup_steps: int, total_steps: int, base_lr: float) -> float:
    """Reference: the learning rate of optimizer step ``step`` (0-based) under linear warm-up then cosine decay.

    ``base_lr * step / warmup_steps`` during the warm-up; afterwards, with the progress
    ``q = (step - warmup_steps) / (total_steps - warmup_steps)``, ``base_lr * (1 + cos(pi q)) / 2``,
    clipped at 0. The same numbers as ``transformers.get_cosine_schedule_with_warmup``.
    """
    if step < warmup_steps:
        return base_lr * step / max(1, warmup_steps)
    q = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return base_lr * max(0.0, 0.5 * (1.0 + math.cos(math.pi * q)))


def _cosine_cases(rng: np.random.Generator) -> list[Case]:
    cases = [
        Case("the first step of a warm-up (rate 0)", (0, 10, 100, 1e-4)),
        Case("in the middle of the warm-up", (4, 10, 100, 1e-4)),
        Case("the first step after the warm-up (full rate)", (10, 10, 100, 1e-4)),
        Case("a quarter of the way into the decay", (32, 10, 100, 1e-4)),
        Case("no warm-up at all, step 0", (0, 0, 50, 3e-5)),
        Case("no warm-up at all, step 20", (20, 0, 50, 3e-5)),
        Case("the last step", (99, 10, 100, 2e-5)),
    ]
    for i in range(5):
        total = int(rng.integers(20, 400))
        warm = int(rng.integers(1, total // 3))
        step = int(rng.integers(0, total))
        cases.append(Case(f"random schedule {i + 1}: step {step} of {total}, warm-up {warm}", (step, warm, total, 5e-5)))
    return cases


register("ch09.cosine_warmup_lr", cosine_warmup_lr, _cosine_cases, atol=1e-12, rtol=1e-6)


# ----------------------------------------------------------------------------- temperature scaling


def best_temperature(logits: torch.Tensor, labels: torch.Tensor, temperatures: torch.Tensor) -> float:
    """Reference: the temperature from ``temperatures`` whose ``softmax(logits / T)`` has the lowest
    mean negative log-likelihood of ``labels`` (the first one on a tie), as a Python float.

    ``logits`` (N, C) float, ``labels`` (N,) int64, ``temperatures`` (K,) positive floats.
    """
    nll = torch.stack([F.cross_entropy(logits / t, labels) for t in temperatures])  # (K,)
    return float(temperatures[int(torch.argmin(nll))])


def _temperature_cases(rng: np.random.Generator) -> list[Case]:
    def case(name: str, n: int, c: int, scale: float, flip: float, grid: torch.Tensor) -> Case:
        g = torch.Generator().manual_seed(int(rng.integers(1 << 31)))
        labels = torch.randint(0, c, (n,), generator=g)
        logits = torch.randn(n, c, generator=g)
        logits[torch.arange(n), labels] += 2.0  # mostly right...
        wrong = torch.rand(n, generator=g) < flip
        logits[wrong] = logits[wrong].roll(1, dims=1)  # ...with some confidently wrong
        return Case(name, (scale * logits, labels, grid))

    grid = torch.linspace(0.25, 5.0, 39)
    return [
        case("an over-confident binary classifier", 400, 2, 4.0, 0.15, grid),
        case("an under-confident binary classifier", 400, 2, 0.3, 0.05, grid),
        case("five classes, over-confident", 300, 5, 3.0, 0.2, grid),
        case("a short grid", 200, 2, 2.0, 0.1, torch.tensor([0.5, 1.0, 2.0, 4.0])),
    ]


register("ch09.best_temperature", best_temperature, _temperature_cases, atol=1e-6, rtol=1e-6)
