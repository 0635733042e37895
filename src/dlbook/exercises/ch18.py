"""Exercise checks for chapter 18, "Generating text"."""

from __future__ import annotations

import numpy as np
import torch

from . import Case, register

# ----------------------------------------------------------------------------- min-p filtering


def min_p(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    """Reference: keep tokens whose probability is at least ``min_p`` times the top token's;
    the others' logits become ``-inf``. ``logits``: ``(batch, vocab)``."""
    probs = logits.softmax(-1)
    threshold = min_p * probs.max(-1, keepdim=True).values
    return logits.masked_fill(probs < threshold, float("-inf"))


def _min_p_cases(rng: np.random.Generator) -> list[Case]:
    peaked = torch.tensor([[8.0, 1.0, 0.5, 0.0, -1.0]])
    flat = torch.zeros(2, 6)
    cases = [
        Case("a peaked distribution", (peaked, 0.1)),
        Case("a flat distribution (every token ties with the top)", (flat, 0.5)),
        Case("min_p = 1: only the top token(s)", (peaked, 1.0)),
    ]
    for i in range(3):
        b, v = int(rng.integers(1, 5)), int(rng.integers(5, 60))
        logits = torch.tensor(rng.normal(0, 3, (b, v)), dtype=torch.float32)
        cases.append(Case(f"random logits {i + 1}: ({b}, {v})", (logits, float(rng.choice([0.05, 0.2, 0.5])))))
    return cases


register("ch18.min_p", min_p, _min_p_cases, atol=0, rtol=0)


# ----------------------------------------------------------------------------- distinct-n


def distinct_n(texts: list[list[int]], n: int) -> float:
    """Reference: different n-grams over all texts / all n-grams (0.0 when there are none)."""
    grams = [tuple(t[i : i + n]) for t in texts for i in range(len(t) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def _distinct_cases(rng: np.random.Generator) -> list[Case]:
    cases = [
        Case("one text that loops", ([[1, 2, 1, 2, 1, 2]], 2)),
        Case("the same bigram in two texts", ([[1, 2], [1, 2, 3]], 2)),
        Case("no bigram across a text boundary", ([[1], [2]], 2)),
        Case("texts shorter than n", ([[1, 2]], 3)),
    ]
    for i in range(3):
        texts = [list(map(int, rng.integers(0, 6, int(rng.integers(0, 15))))) for _ in range(int(rng.integers(1, 6)))]
        cases.append(Case(f"random texts {i + 1}", (texts, int(rng.integers(1, 4)))))
    return cases


register("ch18.distinct_n", distinct_n, _distinct_cases, atol=1e-12, rtol=0)
