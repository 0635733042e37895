"""Exercise checks for chapter 15, "The compression scoreboard"."""

from __future__ import annotations

import numpy as np
import torch

from . import Case, register

# ----------------------------------------------------------------------------- the Pareto front


def pareto_front(costs: torch.Tensor) -> list[int]:
    """Reference: indices (ascending) of the rows of ``costs`` (N, K) that no other row dominates.

    Every column is a cost (smaller is better: size, latency, error). Row ``j`` dominates row ``i``
    when it is no worse in every column and strictly better in at least one. Identical rows do not
    dominate each other, so both stay.
    """
    n = costs.shape[0]
    keep = []
    for i in range(n):
        dominated = any(bool((costs[j] <= costs[i]).all() and (costs[j] < costs[i]).any()) for j in range(n) if j != i)
        if not dominated:
            keep.append(i)
    return keep


def _pareto_cases(rng: np.random.Generator) -> list[Case]:
    cases = [
        Case("three variants, one dominated", (torch.tensor([[90.0, 50.0, 17.0], [20.0, 20.0, 18.0], [70.0, 60.0, 18.0]]),)),
        Case("two identical variants", (torch.tensor([[1.0, 2.0], [1.0, 2.0], [3.0, 3.0]]),)),
        Case("equal in one column, better in the other", (torch.tensor([[1.0, 2.0], [1.0, 3.0]]),)),
        Case("a single variant", (torch.tensor([[5.0, 5.0, 5.0]]),)),
    ]
    for i in range(4):
        n, k = int(rng.integers(4, 12)), int(rng.integers(2, 4))
        costs = torch.tensor(rng.integers(0, 6, (n, k)), dtype=torch.float32)
        cases.append(Case(f"random costs {i + 1}: {n} variants, {k} costs", (costs,)))
    return cases


register("ch15.pareto_front", pareto_front, _pareto_cases, atol=0, rtol=0)


# ----------------------------------------------------------------------------- vocabulary trimming


def kept_vocabulary(token_ids: list[list[int]], special_ids: list[int]) -> list[int]:
    """Reference: the sorted, distinct token ids that occur in ``token_ids`` or are in ``special_ids``."""
    kept = set(special_ids)
    for ids in token_ids:
        kept.update(ids)
    return sorted(kept)


def _vocab_cases(rng: np.random.Generator) -> list[Case]:
    cases = [
        Case("two snippets sharing tokens", ([[101, 2023, 3185, 102], [101, 3185, 2003, 102]], [0, 100, 101, 102, 103])),
        Case("a special id that never occurs", ([[5, 6]], [0, 1])),
        Case("no snippets", ([], [0, 100, 101, 102, 103])),
    ]
    for i in range(3):
        ids = [list(map(int, rng.integers(0, 500, int(rng.integers(1, 20))))) for _ in range(int(rng.integers(1, 30)))]
        cases.append(Case(f"random snippets {i + 1}", (ids, [0, 100, 101, 102, 103])))
    return cases


register("ch15.kept_vocabulary", kept_vocabulary, _vocab_cases, atol=0, rtol=0)
