"""Exercise checks for chapter 20, "Adapting and shrinking an LLM".

Both exercises work on GGUF-style blocks of 32 weights: reading the Q4_0 format, and a Q4_1
quantizer with a block size of the reader's choice.
"""

from __future__ import annotations

import numpy as np
import torch

from . import Case, register


def _gen(rng: np.random.Generator) -> torch.Generator:
    return torch.Generator().manual_seed(int(rng.integers(1 << 31)))


# ----------------------------------------------------------------------------- Q4_0 by hand


def dequantize_q4_0(raw: torch.Tensor) -> torch.Tensor:
    """Reference: GGUF Q4_0 bytes (rows, k * 18) -> float32 weights (rows, k * 32).

    A block is a float16 scale ``d`` and 16 bytes of codes; byte ``j`` holds weight ``j`` in its
    low four bits and weight ``j + 16`` in its high four bits; ``w = d * (q - 8)``.
    """
    blocks = raw.reshape(-1, 18)  # (n, 18)
    d = blocks[:, 0:2].contiguous().view(torch.float16).float()  # (n, 1)
    q = torch.cat([blocks[:, 2:] & 0x0F, blocks[:, 2:] >> 4], dim=1).float()  # (n, 32)
    return (d * (q - 8)).reshape(raw.shape[0], -1)


def _q4_0_bytes(w: torch.Tensor) -> torch.Tensor:
    """Q4_0 bytes of ``w`` (rows, k * 32), GGML's arithmetic: ``d = max_signed / -8``."""
    b = w.reshape(-1, 32)
    idx = b.abs().argmax(dim=1, keepdim=True)
    mx = b.gather(1, idx)  # (n, 1): the value of largest magnitude, with its sign
    d = mx / -8
    inv = torch.where(d == 0, torch.zeros_like(d), 1 / d)
    q = torch.trunc(b * inv + 8.5).clamp(0, 15).to(torch.uint8)  # (n, 32)
    packed = q[:, :16] | (q[:, 16:] << 4)
    out = torch.cat([d.half().view(torch.uint8), packed], dim=1)  # (n, 18)
    return out.reshape(w.shape[0], -1)


def _q4_0_cases(rng: np.random.Generator) -> list[Case]:
    def case(name: str, rows: int, blocks: int, scale: float) -> Case:
        w = torch.randn(rows, blocks * 32, generator=_gen(rng)) * scale
        return Case(name, (_q4_0_bytes(w),))

    zero = torch.zeros(2, 64)
    return [
        case("one block", 1, 1, 1.0),
        case("3 rows of 4 blocks", 3, 4, 0.05),
        case("16 rows of 18 blocks (a 576-wide matrix)", 16, 18, 0.02),
        Case("an all-zero block (scale 0)", (_q4_0_bytes(zero),)),
    ]


register("ch20.dequantize_q4_0", dequantize_q4_0, _q4_0_cases, atol=0.0, rtol=0.0)


# ----------------------------------------------------------------------------- Q4_1, any block size


def q4_1_fake(w: torch.Tensor, block: int) -> torch.Tensor:
    """Reference: ``w`` (..., k * block) quantized to Q4_1 with blocks of ``block`` and back.

    ``m = min``, ``d = (max - min) / 15``, codes ``trunc((w - m) / d + 1/2)`` clipped to 0..15
    from the float32 ``d`` and ``m``; the stored ``d`` and ``m`` are rounded to float16.
    """
    b = w.reshape(-1, block)  # (n, block)
    lo, hi = b.min(dim=1, keepdim=True).values, b.max(dim=1, keepdim=True).values
    d = (hi - lo) / 15
    inv = torch.where(d == 0, torch.zeros_like(d), 1 / d)
    q = torch.trunc((b - lo) * inv + 0.5).clamp(0, 15)
    return (d.half().float() * q + lo.half().float()).reshape(w.shape)


def _q4_1_cases(rng: np.random.Generator) -> list[Case]:
    def case(name: str, shape: tuple[int, int], block: int, scale: float = 0.05) -> Case:
        return Case(name, (torch.randn(*shape, generator=_gen(rng)) * scale, block))

    shifted = torch.randn(4, 64, generator=_gen(rng)) * 0.01 + 0.3  # all weights positive
    return [
        case("blocks of 32, one row", (1, 32), 32),
        case("blocks of 16", (4, 64), 16),
        case("blocks of 64", (8, 128), 64),
        case("blocks of 128, wide values", (2, 256), 128, 3.0),
        Case("positive weights (the minimum is not 0)", (shifted, 32)),
        Case("a constant block (scale 0)", (torch.full((2, 32), 0.25), 32)),
    ]


register("ch20.q4_1_fake", q4_1_fake, _q4_1_cases, atol=1e-7, rtol=0.0)
