"""Exercise checks for chapter 1, "The Hugging Face toolbox"."""

from __future__ import annotations

import numpy as np
import torch

from ..embeddings import mean_pool
from . import Case, register


def _mean_pool_cases(rng: np.random.Generator) -> list[Case]:
    def case(name: str, batch: int, seq: int, dim: int, dtype: torch.dtype = torch.float32) -> Case:
        gen = torch.Generator().manual_seed(int(rng.integers(1 << 31)))
        hidden = torch.randn(batch, seq, dim, generator=gen, dtype=dtype)
        lengths = torch.randint(1, seq + 1, (batch,), generator=gen)
        lengths[0] = max(1, seq // 2)  # at least one padded row when seq > 1
        mask = (torch.arange(seq)[None, :] < lengths[:, None]).long()  # (batch, seq)
        return Case(name, (hidden, mask))

    return [
        case("batch with padding", 4, 9, 16),
        case("a batch of one, no padding", 1, 5, 8),
        case("float64 input", 3, 7, 4, torch.float64),
        case("long sequences, wide vectors", 2, 64, 384),
    ]


register("ch01.mean_pool", mean_pool, _mean_pool_cases)
