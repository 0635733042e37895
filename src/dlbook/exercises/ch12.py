"""Exercise checks for chapter 12, "Quantization"."""

from __future__ import annotations

import numpy as np
import torch

from ..quantize import qparams, quantize
from . import Case, register

# ----------------------------------------------------------------------------- an int8 linear layer


def int8_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Reference: ``x @ weight.T + bias`` computed on integer codes, Eq. (eq-ch12-intmm) of chapter 12.

    ``weight`` (out, in) is quantized symmetrically per output row to int8, ``x`` (N, in)
    asymmetrically per tensor to uint8 over [0, 255]; the codes (minus the zero point) are
    multiplied exactly in int64, rescaled by ``s_x * s_w`` and ``bias`` (out,) is added.
    Returns float32 (N, out).
    """
    s_w, z_w = qparams(weight, symmetric=True, axis=0)  # (out,)
    q_w = quantize(weight, s_w, z_w, axis=0).to(torch.int64)  # (out, in)
    s_x, z_x = qparams(x, symmetric=False, dtype=torch.uint8)  # 0-d
    q_x = quantize(x, s_x, z_x, dtype=torch.uint8).to(torch.int64)  # (N, in)
    acc = (q_x - z_x) @ q_w.T  # (N, out)
    return acc.float() * (s_x * s_w) + bias


def _linear_cases(rng: np.random.Generator) -> list[Case]:
    def case(name: str, n: int, d_in: int, d_out: int, shift: float = 0.0, outlier_row: bool = False) -> Case:
        g = torch.Generator().manual_seed(int(rng.integers(1 << 31)))
        x = torch.randn(n, d_in, generator=g) + shift
        w = torch.randn(d_out, d_in, generator=g) * 0.05
        if outlier_row:
            w[0, 0] = 2.0  # one large weight in row 0: per-row scales matter
        b = torch.randn(d_out, generator=g) * 0.1
        return Case(name, (x, w, b))

    return [
        case("a small layer", 3, 8, 5),
        case("one input row", 1, 16, 4),
        case("inputs that are all positive (after a GELU, say)", 6, 32, 12, shift=3.0),
        case("a weight row with an outlier", 5, 24, 10, outlier_row=True),
        case("a MiniLM-sized layer", 8, 384, 64, outlier_row=True),
    ]


register("ch12.int8_linear", int8_linear, _linear_cases, atol=1e-5, rtol=1e-5)
