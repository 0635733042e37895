"""GGUF block quantization by hand: the Q4_1 and Q8_0 formats, read and written in PyTorch.

Taught in chapter 20, "Adapting and shrinking an LLM". The SmolLM2 file the book ships
(:func:`dlbook.assets.smollm2_gguf`) stores most weight matrices as **Q4_1** and the token
embedding as **Q8_0**, two block formats of llama.cpp's GGML library:

- **Q4_1**: each row is cut into blocks of 32 weights; a block stores a scale ``d`` and a
  minimum ``m`` (both float16) and 32 four-bit codes ``q`` in 16 bytes, and means
  ``w = d * q + m``. Byte ``j`` of the codes holds weight ``j`` in its low four bits and weight
  ``j + 16`` in its high four bits. 20 bytes per 32 weights: 5 bits per weight.
- **Q8_0**: a block stores a scale ``d`` (float16) and 32 signed 8-bit codes, ``w = d * q``.
  34 bytes per 32 weights: 8.5 bits per weight.

The functions work on the raw bytes as ``torch.uint8`` tensors, laid out exactly as in the file
(one row of blocks per row of the matrix), so that the chapter can check them byte for byte
against the ``gguf`` library. The quantizers follow GGML's reference arithmetic (the scale and
minimum are computed in float32, the codes from them, and only then rounded to float16) so
that their bytes can be compared with ``gguf.quants.quantize``.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

__all__ = [
    "BLOCK",
    "FORMATS",
    "bits_per_weight",
    "dequantize",
    "dequantize_q4_1",
    "dequantize_q8_0",
    "fake_quantize",
    "packed_nbytes",
    "q4_1_fields",
    "quantize",
    "quantize_q4_1",
    "quantize_q8_0",
    "quantize_weights_",
    "quantizable_weights",
]

#: Weights per block in both formats.
BLOCK = 32
#: Bytes per block of each format.
FORMATS = {"q4_1": 2 + 2 + BLOCK // 2, "q8_0": 2 + BLOCK}


def _check_kind(kind: object) -> str:
    if kind not in FORMATS:
        raise ValueError(f"kind must be one of {sorted(FORMATS)}, got {kind!r}")
    return str(kind)


def _check_raw(raw: object, kind: str, name: str = "raw") -> torch.Tensor:
    if not isinstance(raw, torch.Tensor) or raw.dtype != torch.uint8:
        raise TypeError(f"{name} must be a torch.uint8 tensor of GGUF bytes, got {_describe(raw)}")
    if raw.dim() < 1 or raw.shape[-1] % FORMATS[kind] != 0 or raw.shape[-1] == 0:
        raise ValueError(
            f"{name} must have a last dimension that is a positive multiple of {FORMATS[kind]} "
            f"(bytes per {kind} block), got shape {tuple(raw.shape)}"
        )
    return raw.contiguous()


def _check_weight(w: object, name: str = "w") -> torch.Tensor:
    if not isinstance(w, torch.Tensor) or not w.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {_describe(w)}")
    if w.dim() < 1 or w.shape[-1] % BLOCK != 0 or w.shape[-1] == 0:
        raise ValueError(f"{name}'s last dimension must be a positive multiple of {BLOCK}, got shape {tuple(w.shape)}")
    if not torch.isfinite(w).all():
        raise ValueError(f"{name} holds NaN or inf")
    return w.detach().float().contiguous()


def _describe(x: object) -> str:
    if isinstance(x, torch.Tensor):
        return f"a tensor of shape {tuple(x.shape)} and dtype {x.dtype}"
    return type(x).__name__


def _blocks(raw: torch.Tensor, kind: str) -> torch.Tensor:
    return raw.reshape(-1, FORMATS[kind])  # (n_blocks, bytes per block)


def _f16(two_bytes: torch.Tensor) -> torch.Tensor:
    """(n, 2) little-endian bytes -> (n,) float32 (the value of a float16)."""
    return two_bytes.contiguous().view(torch.float16).reshape(-1).float()


def q4_1_fields(raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split Q4_1 bytes into ``(d, m, q)``: scales (n_blocks,), minima (n_blocks,) as float32 and
    codes (n_blocks, 32) as uint8 in 0..15, weight ``j`` of a block in column ``j``."""
    raw = _check_raw(raw, "q4_1")
    b = _blocks(raw, "q4_1")  # (n, 20)
    d, m, packed = _f16(b[:, 0:2]), _f16(b[:, 2:4]), b[:, 4:]  # packed: (n, 16)
    low, high = packed & 0x0F, packed >> 4  # weights 0..15 and 16..31
    return d, m, torch.cat([low, high], dim=1)  # (n, 32)


def dequantize_q4_1(raw: torch.Tensor) -> torch.Tensor:
    """Q4_1 bytes (..., n_blocks * 20) -> float32 weights (..., n_blocks * 32): ``d * q + m``."""
    d, m, q = q4_1_fields(raw)
    w = d[:, None] * q.float() + m[:, None]  # (n, 32)
    return w.reshape(*raw.shape[:-1], -1)


def dequantize_q8_0(raw: torch.Tensor) -> torch.Tensor:
    """Q8_0 bytes (..., n_blocks * 34) -> float32 weights (..., n_blocks * 32): ``d * q``."""
    raw = _check_raw(raw, "q8_0")
    b = _blocks(raw, "q8_0")  # (n, 34)
    d = _f16(b[:, 0:2])
    q = b[:, 2:].contiguous().view(torch.int8).float()  # (n, 32) in -127..127
    return (q * d[:, None]).reshape(*raw.shape[:-1], -1)


def _as_bytes(x: torch.Tensor) -> torch.Tensor:
    """(n,) float32 -> (n, 2) bytes of its float16 rounding."""
    return x.to(torch.float16).reshape(-1, 1).view(torch.uint8)


def quantize_q4_1(w: torch.Tensor) -> torch.Tensor:
    """Weights (..., k * 32) -> Q4_1 bytes (..., k * 20), GGML's layout and arithmetic.

    Per block: ``m = min``, ``d = (max - min) / 15``, ``q = floor((w - m) / d + 1/2)`` clipped to
    0..15 (a constant block gets ``d = 0`` and codes 0); ``d`` and ``m`` are stored as float16.
    """
    x = _check_weight(w)
    blocks = x.reshape(-1, BLOCK)  # (n, 32)
    lo, hi = blocks.min(dim=1).values, blocks.max(dim=1).values  # (n,)
    d = (hi - lo) / 15
    inv = torch.where(d == 0, torch.zeros_like(d), 1 / d)
    q = torch.trunc((blocks - lo[:, None]) * inv[:, None] + 0.5).clamp(0, 15).to(torch.uint8)  # (n, 32)
    packed = q[:, :16] | (q[:, 16:] << 4)  # (n, 16): weight j low, weight j + 16 high
    out = torch.cat([_as_bytes(d), _as_bytes(lo), packed], dim=1)  # (n, 20)
    return out.reshape(*x.shape[:-1], -1)


def quantize_q8_0(w: torch.Tensor) -> torch.Tensor:
    """Weights (..., k * 32) -> Q8_0 bytes (..., k * 34), GGML's layout and arithmetic.

    Per block: ``d = max |w| / 127``, ``q = round(w / d)`` (halves away from zero), stored as int8.
    """
    x = _check_weight(w)
    blocks = x.reshape(-1, BLOCK)  # (n, 32)
    d = blocks.abs().max(dim=1).values / 127  # (n,)
    inv = torch.where(d == 0, torch.zeros_like(d), 1 / d)
    scaled = blocks * inv[:, None]
    q = (scaled.sign() * torch.floor(scaled.abs() + 0.5)).to(torch.int8)  # round half away from 0
    out = torch.cat([_as_bytes(d), q.view(torch.uint8)], dim=1)  # (n, 34)
    return out.reshape(*x.shape[:-1], -1)


def quantize(w: torch.Tensor, kind: str) -> torch.Tensor:
    """:func:`quantize_q4_1` or :func:`quantize_q8_0` by name (``"q4_1"`` or ``"q8_0"``)."""
    return {"q4_1": quantize_q4_1, "q8_0": quantize_q8_0}[_check_kind(kind)](w)


def dequantize(raw: torch.Tensor, kind: str) -> torch.Tensor:
    """:func:`dequantize_q4_1` or :func:`dequantize_q8_0` by name."""
    return {"q4_1": dequantize_q4_1, "q8_0": dequantize_q8_0}[_check_kind(kind)](raw)


def fake_quantize(w: torch.Tensor, kind: str) -> torch.Tensor:
    """The float32 weights a model computes with after storing ``w`` in format ``kind``."""
    return dequantize(quantize(w, kind), kind).reshape(w.shape)


def bits_per_weight(kind: str) -> float:
    """Storage per weight, scales included: 5.0 for Q4_1, 8.5 for Q8_0."""
    return FORMATS[_check_kind(kind)] * 8 / BLOCK


def packed_nbytes(numel: int, kind: str) -> int:
    """Bytes of ``numel`` weights in format ``kind`` (``numel`` a multiple of 32)."""
    if isinstance(numel, bool) or not isinstance(numel, int) or numel < 0 or numel % BLOCK:
        raise ValueError(f"numel must be a non-negative multiple of {BLOCK}, got {numel!r}")
    return numel // BLOCK * FORMATS[_check_kind(kind)]


def quantizable_weights(model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
    """The matrices a GGUF file quantizes: every 2-D parameter whose rows split into blocks.

    Norm gains and biases (1-D) stay float32, as in the shipped file. A tied parameter (input
    and output embedding) is listed once.
    """
    for name, p in model.named_parameters():  # named_parameters lists a shared tensor once
        if p.dim() == 2 and p.shape[-1] % BLOCK == 0:
            yield name, p


@torch.no_grad()
def quantize_weights_(model: nn.Module, kind: str | dict[str, str]) -> dict[str, int]:
    """Replace every quantizable matrix by its ``kind``-quantized values, in place.

    ``kind`` is one format for all matrices, or a dict from a name fragment to a format
    (the first fragment found in a parameter's name wins; the key ``""`` matches every name),
    e.g. ``{"embed_tokens": "q8_0", "": "q4_1"}``. A fragment that no weight reaches is an error
    (raised before any weight changes), so a misspelt name cannot quietly quantize nothing.
    Returns the storage in bytes: ``{"quantized": ..., "float32": ..., "total": ...}``, float32
    for the parameters left as they are.
    """
    rules = {"": kind} if isinstance(kind, str) else dict(kind)
    if not rules:
        raise ValueError("kind must be a format name or a non-empty dict of name fragment -> format")
    for k in rules.values():
        _check_kind(k)
    plan: dict[str, str] = {}  # parameter name -> the rule's fragment, before anything changes
    for name, _ in quantizable_weights(model):
        frag = next((f for f in rules if f in name), None)
        if frag is not None:
            plan[name] = frag
    unused = [f for f in rules if f not in plan.values()]
    if unused:
        raise ValueError(f"kind: no quantizable weight is matched (first) by the fragment(s) {unused}")
    quantized = 0
    for name, p in quantizable_weights(model):
        if name in plan:
            fmt = rules[plan[name]]
            p.copy_(fake_quantize(p, fmt).to(p.dtype))
            quantized += packed_nbytes(p.numel(), fmt)
    rest = sum(p.numel() * 4 for n, p in model.named_parameters() if n not in plan)
    return {"quantized": quantized, "float32": rest, "total": quantized + rest}
