"""Affine int8 quantization, from its equations to a quantized sentiment classifier.

Taught in chapter 12, "Quantization". The pieces, in the order the chapter builds them:

- :func:`qrange`, :func:`qparams`: the integer range of a dtype and the scale and zero point of
  a tensor, symmetric or asymmetric, per tensor or per channel (one pair per slice along ``axis``);
- :func:`quantize`, :func:`dequantize`, :func:`fake_quantize`: ``q = clamp(round(x / s) + z)`` and
  ``x_hat = s (q - z)``, the same numbers as ``torch.quantize_per_tensor`` /
  ``torch.quantize_per_channel`` / ``torch.fake_quantize_per_tensor_affine``;
- :class:`Int8Embedding`: a weight-only int8 embedding table (int8 rows, one fp32 scale per row);
- :func:`int8_dynamic`: a quantized CPU copy of a ``BertForSequenceClassification``-like model:
  dynamic int8 linear layers (int8 weights, activations quantized on the fly per batch) and,
  optionally, weight-only int8 embeddings. Chapters 13 to 15 call it on pruned and distilled
  students as well.
"""

from __future__ import annotations

import copy
import warnings

import torch
import torch.nn.functional as F
from torch import nn

_INT_DTYPES = {torch.int8: (-128, 127), torch.uint8: (0, 255)}


# ---------------------------------------------------------------------------------------------
# the affine map


def qrange(dtype: torch.dtype = torch.int8) -> tuple[int, int]:
    """``(q_min, q_max)`` of an 8-bit integer dtype: (-128, 127) for int8, (0, 255) for uint8."""
    if dtype not in _INT_DTYPES:
        raise ValueError(f"dtype must be torch.int8 or torch.uint8, got {dtype!r}")
    return _INT_DTYPES[dtype]


def _check_axis(x: torch.Tensor, axis: int | None) -> int | None:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {type(x).__name__}"
                        + (f" of dtype {x.dtype}" if isinstance(x, torch.Tensor) else ""))
    if axis is None:
        return None
    if not isinstance(axis, int) or not -x.dim() <= axis < x.dim():
        raise ValueError(f"axis must be None or an int in [-{x.dim()}, {x.dim()}), got {axis!r} for shape {tuple(x.shape)}")
    return axis % x.dim()


def _broadcast(t: torch.Tensor, x: torch.Tensor, axis: int | None) -> torch.Tensor:
    """Shape a per-channel ``(C,)`` tensor so it broadcasts along ``axis`` of ``x``."""
    if axis is None:
        if t.numel() != 1:
            raise ValueError(f"per-tensor parameters must hold one number, got shape {tuple(t.shape)}")
        return t.reshape(())
    if t.dim() != 1 or t.shape[0] != x.shape[axis]:
        raise ValueError(f"per-channel parameters along axis {axis} must have shape ({x.shape[axis]},), got {tuple(t.shape)}")
    shape = [1] * x.dim()
    shape[axis] = -1
    return t.reshape(shape)


def qparams(
    x: torch.Tensor, *, symmetric: bool = True, axis: int | None = None, dtype: torch.dtype = torch.int8
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale ``s`` (float32) and zero point ``z`` (int64) that map the range of ``x`` onto ``dtype``.

    Asymmetric (min/max): the range is widened to include 0, ``[a, b] = [min(x_min, 0), max(x_max, 0)]``,
    ``s = (b - a) / (q_max - q_min)`` and ``z = clamp(q_min - round(a / s), q_min, q_max)``, so
    that 0.0 is represented exactly. Symmetric (abs-max, int8 only): ``s = max|x| / q_max``,
    ``z = 0``. With ``axis=None`` one pair for the whole tensor (0-d tensors); with ``axis=k`` one
    pair per slice along dimension ``k`` (1-d tensors of length ``x.shape[k]``), e.g. ``axis=0``
    for one scale per output row of a linear layer's weight. A constant-zero range gets
    ``s = 1``. Chapter 12 derives these formulas.
    """
    axis = _check_axis(x, axis)
    q_min, q_max = qrange(dtype)
    x = x.detach().float()
    if axis is None:
        lo, hi = x.min(), x.max()
    else:
        flat = x.movedim(axis, 0).reshape(x.shape[axis], -1)  # (C, everything else)
        lo, hi = flat.min(dim=1).values, flat.max(dim=1).values
    lo, hi = torch.clamp(lo, max=0.0), torch.clamp(hi, min=0.0)
    if symmetric:
        if dtype != torch.int8:
            raise ValueError("symmetric quantization keeps z = 0, which needs a signed range: use dtype=torch.int8")
        scale = torch.maximum(-lo, hi) / q_max
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        zero_point = torch.zeros_like(scale, dtype=torch.int64)
    else:
        scale = (hi - lo) / (q_max - q_min)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        zero_point = torch.clamp(q_min - torch.round(lo / scale), q_min, q_max).to(torch.int64)
    return scale, zero_point


def quantize(
    x: torch.Tensor,
    scale: torch.Tensor | float,
    zero_point: torch.Tensor | int,
    *,
    axis: int | None = None,
    dtype: torch.dtype = torch.int8,
) -> torch.Tensor:
    """``q = clamp(round(x / s) + z, q_min, q_max)`` as a tensor of ``dtype`` (round half to even).

    ``scale`` and ``zero_point`` are numbers or 0-d tensors (``axis=None``) or 1-d tensors with one
    entry per slice along ``axis``. ``x / s`` is computed as ``x * (1 / s)`` in float32, as PyTorch
    does: the same integers as ``torch.fake_quantize_per_tensor_affine``,
    ``torch.quantize_per_channel`` and, for ``z = 0``, ``torch.quantize_per_tensor``. (With
    ``z != 0`` the last one adds ``z`` inside a fused multiply-add before rounding, which can move
    a value within float32 rounding of a tie by one code; chapter 12 shows it.)
    """
    axis = _check_axis(x, axis)
    q_min, q_max = qrange(dtype)
    s = _broadcast(torch.as_tensor(scale, dtype=torch.float32, device=x.device), x, axis)
    z = _broadcast(torch.as_tensor(zero_point, dtype=torch.int64, device=x.device), x, axis)
    if not bool((s > 0).all()):
        raise ValueError("scale must be positive")
    q = torch.round(x.float() * (1.0 / s)) + z  # times the float32 reciprocal, as PyTorch's kernels do
    return torch.clamp(q, q_min, q_max).to(dtype)


def dequantize(
    q: torch.Tensor, scale: torch.Tensor | float, zero_point: torch.Tensor | int, *, axis: int | None = None
) -> torch.Tensor:
    """``x_hat = s (q - z)`` in float32: the real number each integer stands for."""
    if not isinstance(q, torch.Tensor) or q.dtype not in _INT_DTYPES:
        raise TypeError(f"q must be an int8 or uint8 tensor, got {getattr(q, 'dtype', type(q).__name__)}")
    if axis is not None and (not isinstance(axis, int) or not -q.dim() <= axis < q.dim()):
        raise ValueError(f"axis must be None or an int in [-{q.dim()}, {q.dim()}), got {axis!r}")
    axis = None if axis is None else axis % q.dim()
    s = _broadcast(torch.as_tensor(scale, dtype=torch.float32, device=q.device), q, axis)
    z = _broadcast(torch.as_tensor(zero_point, dtype=torch.int64, device=q.device), q, axis)
    return (q.to(torch.int64) - z).float() * s


def fake_quantize(
    x: torch.Tensor, *, symmetric: bool = True, axis: int | None = None, dtype: torch.dtype = torch.int8
) -> torch.Tensor:
    """Quantize then dequantize ``x`` with its own :func:`qparams`: what the int8 version of ``x`` means."""
    scale, zero_point = qparams(x, symmetric=symmetric, axis=axis, dtype=dtype)
    return dequantize(quantize(x, scale, zero_point, axis=axis, dtype=dtype), scale, zero_point, axis=axis)


# ---------------------------------------------------------------------------------------------
# weight-only int8 embeddings


class Int8Embedding(nn.Module):
    """An embedding table stored as int8 rows with one float32 scale per row (symmetric, weight-only).

    A lookup gathers the int8 rows of the requested ids and multiplies each by its scale, so only
    the rows in the batch are ever converted back to float: the table costs a quarter of its float32
    size in memory and on disk. ``padding_idx`` is kept for ``repr`` only (it matters for training,
    and this module is for inference).
    """

    def __init__(self, weight_int8: torch.Tensor, scale: torch.Tensor, padding_idx: int | None = None) -> None:
        super().__init__()
        if weight_int8.dtype != torch.int8 or weight_int8.dim() != 2:
            raise ValueError(f"weight_int8 must be a 2-d int8 tensor, got {weight_int8.dtype} {tuple(weight_int8.shape)}")
        if scale.dim() != 1 or scale.shape[0] != weight_int8.shape[0]:
            raise ValueError(f"scale must have shape ({weight_int8.shape[0]},), got {tuple(scale.shape)}")
        self.register_buffer("weight_int8", weight_int8)
        self.register_buffer("scale", scale.float())
        self.padding_idx = padding_idx

    @classmethod
    def from_float(cls, emb: nn.Embedding) -> Int8Embedding:
        """Quantize an ``nn.Embedding`` row by row: :func:`qparams` with ``symmetric=True, axis=0``."""
        if not isinstance(emb, nn.Embedding):
            raise TypeError(f"expected an nn.Embedding, got {type(emb).__name__}")
        w = emb.weight.detach().float().cpu()  # (num_embeddings, dim)
        scale, zero_point = qparams(w, symmetric=True, axis=0)
        return cls(quantize(w, scale, zero_point, axis=0), scale, emb.padding_idx)

    @property
    def num_embeddings(self) -> int:
        return self.weight_int8.shape[0]

    @property
    def embedding_dim(self) -> int:
        return self.weight_int8.shape[1]

    def dequantized_weight(self) -> torch.Tensor:
        """The whole table as float32 (num_embeddings, dim): for inspection, not used by forward."""
        return self.weight_int8.float() * self.scale[:, None]

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = F.embedding(ids, self.weight_int8)  # (..., dim) int8
        return rows.float() * self.scale[ids].unsqueeze(-1)  # (..., dim) float32

    def extra_repr(self) -> str:
        pad = f", padding_idx={self.padding_idx}" if self.padding_idx is not None else ""
        return f"{self.num_embeddings}, {self.embedding_dim}, int8 weight, per-row scale{pad}"


def quantize_embeddings_(model: nn.Module) -> list[str]:
    """Replace every ``nn.Embedding`` inside ``model`` by an :class:`Int8Embedding`, in place.

    Returns the names of the replaced modules. Tied output layers are not handled: a classifier
    has none (a language model head tied to the input table would need its own int8 copy).
    """
    names = []
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Embedding):
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, Int8Embedding.from_float(module))
            names.append(name)
    return names


# ---------------------------------------------------------------------------------------------
# the whole classifier


def dynamic_quantize_linears(model: nn.Module) -> nn.Module:
    """``torch.ao.quantization.quantize_dynamic`` on every ``nn.Linear``, in place, returning ``model``.

    Weights become int8 (symmetric, per tensor); at run time each batch of activations gets its
    own asymmetric uint8 scale and zero point, the matrix product runs on integers (fbgemm / x86
    kernels) and the result is rescaled to float. ``torch.ao.quantization`` is deprecated in favour
    of ``torchao`` and warns so; on torch 2.13 it is still the API whose int8 kernels speed up a
    CPU (chapter 12 measures both), so its two known deprecation warnings are caught here, in this
    one place, and nothing else is.
    """
    with warnings.catch_warnings():
        # Known and explained in chapter 12: "torch.ao.quantization is deprecated ... migrate to
        # torchao" and the deprecation of quantized tensor dtypes. Only these two are silenced.
        warnings.filterwarnings("ignore", r"torch\.ao\.quantization is deprecated", DeprecationWarning)
        warnings.filterwarnings("ignore", r"torch\.quantize_per_tensor, torch\.quantize_per_channel", UserWarning)
        return torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8, inplace=True)


def int8_dynamic(model: nn.Module, *, embeddings: bool = True) -> nn.Module:
    """An int8 CPU copy of a ``BertForSequenceClassification``-like model; the input is not changed.

    Every ``nn.Linear`` becomes a dynamically quantized int8 linear layer
    (:func:`dynamic_quantize_linears`) and, with ``embeddings=True``, every ``nn.Embedding`` a
    weight-only :class:`Int8Embedding` (one scale per row). LayerNorms, softmax, GELU and the
    attention products stay in float32. Works for any depth and width (the pruned and distilled
    students of chapters 13 and 14 included); the result runs on the CPU only, in eval mode, and
    works with :func:`dlbook.measure.saved_size_mb` and :func:`dlbook.measure.measure_classifier`.
    Taught in chapter 12.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"int8_dynamic needs an nn.Module, got {type(model).__name__}")
    if not isinstance(embeddings, bool):
        raise TypeError(f"embeddings must be True or False, got {embeddings!r}")
    tensors = [*model.parameters(), *model.buffers()]
    if not any(isinstance(m, nn.Linear) for m in model.modules()):
        raise ValueError("the model has no nn.Linear layers: nothing to quantize (was it quantized already?)")
    if any(t.is_floating_point() and t.dtype != torch.float32 for t in tensors):
        dtypes = sorted({str(t.dtype) for t in tensors if t.is_floating_point()})
        raise ValueError(f"int8_dynamic expects a float32 model, got parameters of dtype {dtypes}: call .float() first")
    quantized = copy.deepcopy(model).cpu().eval()
    for p in quantized.parameters():
        p.requires_grad_(False)
    if embeddings:
        quantize_embeddings_(quantized)
    return dynamic_quantize_linears(quantized)


__all__ = [
    "Int8Embedding",
    "dequantize",
    "dynamic_quantize_linears",
    "fake_quantize",
    "int8_dynamic",
    "qparams",
    "qrange",
    "quantize",
    "quantize_embeddings_",
]
