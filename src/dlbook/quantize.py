"""Affine int8 quantization, from its equations to a quantized sentiment classifier.

Taught in chapter 12, "Quantization". The pieces, in the order the chapter builds them:

- :func:`qrange`, :func:`qparams`: the integer range of a dtype and the scale and zero point of
  a tensor, symmetric or asymmetric, per tensor or per channel (one pair per slice along ``axis``);
- :func:`quantize`, :func:`dequantize`, :func:`fake_quantize`: ``q = clamp(round(x / s) + z)`` and
  ``x_hat = s (q - z)``, the same numbers as ``torch.fake_quantize_per_tensor_affine`` /
  ``torch.quantize_per_channel`` and, for ``z = 0``, ``torch.quantize_per_tensor`` (with
  ``z != 0`` the last one can differ by one code on values within float32 rounding of a tie);
- :class:`Int8Embedding`: a weight-only int8 embedding table (int8 rows, one fp32 scale per row);
- :func:`int8_dynamic`: a quantized CPU copy of a ``BertForSequenceClassification``-like model:
  dynamic int8 linear layers (int8 weights, activations quantized on the fly per batch) and,
  optionally, weight-only int8 embeddings. Chapters 13 to 15 call it on pruned and distilled
  students as well;
- :class:`MinMaxObserver`, :class:`PercentileObserver`: the range of activations seen on
  calibration batches, for static quantization (scales fixed ahead of time);
- :class:`FakeQuantLinear`, :func:`prepare_fake_quant`, :func:`calibrate`: a linear layer whose
  weight (per output row) and input (static scale from an observer) are fake-quantized, to
  measure static post-training quantization and to train with quantization in the loop
  (quantization-aware training, the rounding passed through by a straight-through estimator);
- :func:`activation_outliers`: per-feature ranges at the inputs of the linear layers, the
  measurement behind "outlier features".
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

_INT_DTYPES = {torch.int8: (-128, 127), torch.uint8: (0, 255)}


# ---------------------------------------------------------------------------------------------
# argument checks: bad input gets a clear error naming the argument, never a silent wrong answer


def _check_dtype(dtype: object) -> tuple[int, int]:
    """``(q_min, q_max)`` of ``dtype``, which must be ``torch.int8`` or ``torch.uint8``."""
    if not isinstance(dtype, torch.dtype) or dtype not in _INT_DTYPES:
        raise ValueError(f"dtype must be torch.int8 or torch.uint8, got {dtype!r}")
    return _INT_DTYPES[dtype]


def _check_flag(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


def _check_finite(x: torch.Tensor, name: str) -> None:
    """Refuse NaN and +-inf: they have no code, and one of them would spoil a whole scale."""
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        n_nan, n_inf = int(torch.isnan(x).sum()), int(torch.isinf(x).sum())
        where = tuple(int(i) for i in torch.nonzero(bad)[0])
        raise ValueError(
            f"{name} must be finite: it holds {n_nan} NaN and {n_inf} infinite values (the first at index {where})"
        )


def _check_x(x: object, axis: object, name: str = "x") -> int | None:
    """Check a real tensor to quantize (floating point, not empty, finite); return ``axis`` in ``[0, dim)``."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(
            f"{name} must be a floating-point tensor, got {type(x).__name__}"
            + (f" of dtype {x.dtype}" if isinstance(x, torch.Tensor) else "")
        )
    if x.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)}): it has no range to quantize")
    _check_finite(x, name)
    if x.dtype == torch.float64 and bool(x.abs().max() > torch.finfo(torch.float32).max):
        raise ValueError(
            f"{name} holds values beyond the float32 range (largest |{name}| = "
            f"{x.abs().max().item():.3g}), and the scales are float32"
        )
    return _check_axis(x, axis)


def _check_axis(x: torch.Tensor, axis: object) -> int | None:
    """``None`` (one pair for the whole tensor) or a dimension of ``x``, made non-negative."""
    if axis is None:
        return None
    if isinstance(axis, bool) or not isinstance(axis, int) or not -x.dim() <= axis < x.dim():
        raise ValueError(f"axis must be None or an int in [-{x.dim()}, {x.dim()}), got {axis!r} for shape {tuple(x.shape)}")
    return axis % x.dim()


def _as_param(value: object, name: str, device: torch.device) -> torch.Tensor:
    """A number, array or tensor of real numbers as a tensor; refuses strings, bools, complex numbers."""
    if isinstance(value, (str, bytes, bool)) or value is None:
        raise TypeError(f"{name} must be a number or a tensor, got {type(value).__name__} {value!r}")
    try:
        t = torch.as_tensor(value, device=device)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"{name} must be a number or a tensor, got {type(value).__name__}") from err
    if t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{name} must hold real numbers, got dtype {t.dtype}")
    return t


def _shape_param(t: torch.Tensor, name: str, x: torch.Tensor, axis: int | None) -> torch.Tensor:
    """Shape a per-tensor (one number) or per-channel ``(C,)`` parameter to broadcast against ``x``."""
    if axis is None:
        if t.numel() != 1:
            raise ValueError(
                f"{name} must hold one number when axis is None (per tensor), got shape "
                f"{tuple(t.shape)}; pass axis= for one {name} per channel"
            )
        return t.reshape(())
    if t.dim() != 1 or t.shape[0] != x.shape[axis]:
        raise ValueError(
            f"{name} along axis {axis} must have shape ({x.shape[axis]},), one per slice of "
            f"x of shape {tuple(x.shape)}, got {tuple(t.shape)}"
        )
    shape = [1] * x.dim()
    shape[axis] = -1
    return t.reshape(shape)


def _check_scale(scale: object, x: torch.Tensor, axis: int | None) -> torch.Tensor:
    """The scale as float32, shaped for ``x``: finite, positive, and with a finite float32 reciprocal."""
    s = _as_param(scale, "scale", x.device)
    s = _shape_param(s, "scale", x, axis).to(torch.float32)
    bad = ~(torch.isfinite(s) & (s > 0) & torch.isfinite(1.0 / s))
    if bool(bad.any()):
        raise ValueError(
            f"scale must be positive and finite, with 1/scale finite in float32; "
            f"{int(bad.sum())} of {s.numel()} entries are not: {s.flatten()[bad.flatten()][:4].tolist()}"
        )
    return s


def _check_zero_point(zero_point: object, x: torch.Tensor, axis: int | None, dtype: torch.dtype) -> torch.Tensor:
    """The zero point as int64, shaped for ``x``: whole numbers inside the range of ``dtype``."""
    q_min, q_max = _check_dtype(dtype)
    z = _as_param(zero_point, "zero_point", x.device)
    z = _shape_param(z, "zero_point", x, axis)
    if z.is_floating_point():
        if not bool((torch.isfinite(z) & (z == torch.round(z))).all()):
            raise ValueError(f"zero_point must hold whole numbers, got {z.flatten()[:4].tolist()}")
    outside = (z < q_min) | (z > q_max)
    if bool(outside.any()):
        raise ValueError(
            f"zero_point must lie in [{q_min}, {q_max}] for {dtype}; {int(outside.sum())} of "
            f"{z.numel()} entries do not: {z.flatten()[outside.flatten()][:4].tolist()}"
        )
    return z.to(torch.int64)


def _check_scale_and_zero_point(scale: object, zero_point: object) -> None:
    """Per-channel scales and zero points must come in pairs: the same number of each."""
    if isinstance(scale, torch.Tensor) and isinstance(zero_point, torch.Tensor) and scale.numel() != zero_point.numel():
        raise ValueError(
            f"scale and zero_point must come in pairs (one of each per channel), got shapes "
            f"{tuple(scale.shape)} and {tuple(zero_point.shape)}"
        )


def _check_computed_scale(scale: torch.Tensor) -> torch.Tensor:
    """A scale computed from a range wider than float32 can hold is infinite: refuse to return it."""
    if not bool(torch.isfinite(scale).all()):
        raise ValueError("the range of x is too wide for a float32 scale (max - min overflows float32)")
    return scale


# ---------------------------------------------------------------------------------------------
# the affine map


def qrange(dtype: torch.dtype = torch.int8) -> tuple[int, int]:
    """``(q_min, q_max)`` of an 8-bit integer dtype: (-128, 127) for int8, (0, 255) for uint8."""
    return _check_dtype(dtype)


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
    ``s = 1``; a nonzero range too narrow for a float32 scale (``s`` would be subnormal, and
    ``1 / s`` overflow, or ``s`` would round to 0) gets the smallest normal float32 scale,
    ``torch.finfo(torch.float32).tiny``, so that :func:`quantize` accepts every scale returned
    here. ``x`` must be a finite floating-point tensor. Chapter 12 derives these formulas.
    """
    axis = _check_x(x, axis)
    q_min, q_max = qrange(dtype)
    if _check_flag(symmetric, "symmetric") and dtype != torch.int8:
        raise ValueError("symmetric quantization keeps z = 0, which needs a signed range: use dtype=torch.int8")
    x = x.detach().float()
    if axis is None:
        lo, hi = x.min(), x.max()
    else:
        flat = x.movedim(axis, 0).reshape(x.shape[axis], -1)  # (C, everything else)
        lo, hi = flat.min(dim=1).values, flat.max(dim=1).values
    lo, hi = torch.clamp(lo, max=0.0), torch.clamp(hi, min=0.0)
    if symmetric:
        rng, steps = torch.maximum(-lo, hi), q_max
    else:
        rng, steps = hi - lo, q_max - q_min
    scale = _scale_for_range(rng, steps)
    if symmetric:
        zero_point = torch.zeros_like(scale, dtype=torch.int64)
    else:
        zero_point = torch.clamp(q_min - torch.round(lo / scale), q_min, q_max).to(torch.int64)
    return _check_computed_scale(scale), zero_point


def _scale_for_range(rng: torch.Tensor, steps: int) -> torch.Tensor:
    """``rng / steps``, but 1 for a zero range and at least the smallest normal float32.

    Below ``finfo(float32).tiny`` a scale is subnormal and its reciprocal overflows to inf (or it
    rounds to 0), so :func:`quantize` could not use it.
    """
    tiny = torch.finfo(torch.float32).tiny
    return torch.where(rng > 0, torch.clamp(rng / steps, min=tiny), torch.ones_like(rng))


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
    a value within float32 rounding of a tie by one code; chapter 12 shows it.) ``x`` must be
    finite, ``scale`` finite and positive, ``zero_point`` a whole number in the range of ``dtype``.
    """
    axis = _check_x(x, axis)
    q_min, q_max = qrange(dtype)
    _check_scale_and_zero_point(scale, zero_point)
    s = _check_scale(scale, x, axis)
    z = _check_zero_point(zero_point, x, axis, dtype)
    q = torch.round(x.float() * (1.0 / s)) + z  # times the float32 reciprocal, as PyTorch's kernels do
    return torch.clamp(q, q_min, q_max).to(dtype)


def dequantize(
    q: torch.Tensor, scale: torch.Tensor | float, zero_point: torch.Tensor | int, *, axis: int | None = None
) -> torch.Tensor:
    """``x_hat = s (q - z)`` in float32: the real number each integer stands for.

    ``q`` is an int8 or uint8 tensor; ``scale`` and ``zero_point`` follow the rules of :func:`quantize`.
    """
    if not isinstance(q, torch.Tensor) or q.dtype not in _INT_DTYPES:
        raise TypeError(f"q must be an int8 or uint8 tensor, got {getattr(q, 'dtype', type(q).__name__)}")
    axis = _check_axis(q, axis)
    _check_scale_and_zero_point(scale, zero_point)
    s = _check_scale(scale, q, axis)
    z = _check_zero_point(zero_point, q, axis, q.dtype)
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


def dynamic_quantize_linears(model: nn.Module, *, per_channel: bool = False) -> nn.Module:
    """``torch.ao.quantization.quantize_dynamic`` on every ``nn.Linear``, in place, returning ``model``.

    Weights become int8, symmetric, with one scale for the whole matrix or, with
    ``per_channel=True``, one per output row (``per_channel_dynamic_qconfig``); at run time each batch of activations gets its
    own asymmetric scale and zero point, the matrix product runs on integers and the result is
    rescaled to float. On x86 (the fbgemm / x86 engines) the activations use only the codes
    ``[0, 127]`` of uint8, 7 bits: PyTorch's dynamic linear layer always passes
    ``reduce_range=True``, a bit given up, in the words of PyTorch's observers, "to avoid
    instruction overflow" (chapter 12 reproduces the layer's output by hand with this range).
    ``torch.ao.quantization`` is deprecated in favour of ``torchao`` and warns so; its int8
    kernels run in eager mode on the CPU (chapter 12 measures what they gain), so the book keeps
    it behind this one function, where its two known deprecation warnings are caught and nothing
    else is. ``tools/torchao_check.py`` times torchao's int8 configurations against it.
    """
    with warnings.catch_warnings():
        # Known and explained in chapter 12: "torch.ao.quantization is deprecated ... migrate to
        # torchao" and the deprecation of quantized tensor dtypes. Only these two are silenced.
        warnings.filterwarnings("ignore", r"torch\.ao\.quantization is deprecated", DeprecationWarning)
        warnings.filterwarnings("ignore", r"torch\.quantize_per_tensor, torch\.quantize_per_channel", UserWarning)
        if not _check_flag(per_channel, "per_channel"):
            return torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8, inplace=True)
        spec = {nn.Linear: torch.ao.quantization.per_channel_dynamic_qconfig}
        return torch.ao.quantization.quantize_dynamic(model, spec, dtype=torch.qint8, inplace=True)


def int8_dynamic(model: nn.Module, *, embeddings: bool = True, per_channel: bool = False) -> nn.Module:
    """An int8 CPU copy of a ``BertForSequenceClassification``-like model; the input is not changed.

    Every ``nn.Linear`` becomes a dynamically quantized int8 linear layer
    (:func:`dynamic_quantize_linears`) and, with ``embeddings=True``, every ``nn.Embedding`` a
    weight-only :class:`Int8Embedding` (one scale per row). ``per_channel=True`` gives the linear
    layers one weight scale per output row instead of one per matrix. LayerNorms, softmax, GELU and the
    attention products stay in float32. Works for any depth and width (the pruned and distilled
    students of chapters 13 and 14 included); the result runs on the CPU only, in eval mode, and
    works with :func:`dlbook.measure.saved_size_mb` and :func:`dlbook.measure.measure_classifier`.
    Taught in chapter 12.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"int8_dynamic needs an nn.Module, got {type(model).__name__}")
    _check_flag(embeddings, "embeddings")
    _check_flag(per_channel, "per_channel")
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
    return dynamic_quantize_linears(quantized, per_channel=per_channel)


# ---------------------------------------------------------------------------------------------
# static quantization: observers, calibration, fake-quantized linear layers


class MinMaxObserver:
    """The running minimum and maximum of every tensor it sees: the plain calibration range.

    Static quantization fixes the activation scale before inference; this observer takes the
    widest range seen on the calibration batches, so one extreme value anywhere sets the step for
    all. :meth:`qparams` turns the range into an asymmetric uint8 scale and zero point with
    :func:`qparams`'s formulas. Written by hand (chapter 12): ``torch.ao.quantization``'s
    observers belong to a deprecated namespace.
    """

    def __init__(self) -> None:
        self.lo: float | None = None
        self.hi: float | None = None
        self.batches = 0

    def observe(self, x: torch.Tensor) -> None:
        """Widen the range to contain ``x`` (a finite floating-point tensor)."""
        _check_x(x, None)
        lo, hi = float(x.min()), float(x.max())
        self.lo = lo if self.lo is None else min(self.lo, lo)
        self.hi = hi if self.hi is None else max(self.hi, hi)
        self.batches += 1

    def range(self) -> tuple[float, float]:
        """``(lo, hi)`` of everything observed."""
        if self.lo is None or self.hi is None:
            raise ValueError(f"{type(self).__name__} has observed nothing: run calibration batches first")
        return self.lo, self.hi

    def qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Asymmetric uint8 scale and zero point of :meth:`range` (0 always representable)."""
        lo, hi = self.range()
        return qparams(torch.tensor([lo, hi]), symmetric=False, dtype=torch.uint8)


class PercentileObserver(MinMaxObserver):
    """The ``percentile`` and ``100 - percentile`` quantiles of the values seen, not their extremes.

    Clipping the rare extreme values costs a bounded error on them and buys a finer step for all
    the others. Keeps an evenly strided sample of at most ``max_per_batch`` values of each batch
    (memory stays bounded), and takes the quantiles over the pooled sample.
    """

    def __init__(self, percentile: float = 99.99, max_per_batch: int = 100_000) -> None:
        super().__init__()
        if isinstance(percentile, bool) or not isinstance(percentile, (int, float)) or not 50 < percentile <= 100:
            raise ValueError(f"percentile must be a number in (50, 100], got {percentile!r}")
        if isinstance(max_per_batch, bool) or not isinstance(max_per_batch, int) or max_per_batch < 1:
            raise ValueError(f"max_per_batch must be a positive int, got {max_per_batch!r}")
        self.percentile = float(percentile)
        self.max_per_batch = max_per_batch
        self._samples: list[torch.Tensor] = []

    def observe(self, x: torch.Tensor) -> None:
        super().observe(x)
        flat = x.detach().float().flatten()
        step = max(1, flat.numel() // self.max_per_batch)
        self._samples.append(flat[::step].cpu())

    def range(self) -> tuple[float, float]:
        super().range()  # refuses an observer that saw nothing
        pooled = torch.cat(self._samples)
        if pooled.numel() > 16_000_000:  # torch.quantile's limit
            pooled = pooled[:: pooled.numel() // 16_000_000 + 1]
        q = torch.tensor([1 - self.percentile / 100, self.percentile / 100])
        lo, hi = torch.quantile(pooled, q).tolist()
        return lo, hi


def _ste_round(x: torch.Tensor) -> torch.Tensor:
    """``round(x)`` forward; gradient 1 backward (the straight-through estimator)."""
    return x + (torch.round(x) - x).detach()


def fake_quantize_ste(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, q_min: int, q_max: int) -> torch.Tensor:
    """``s (clamp(round(x / s) + z) - z)`` with a straight-through gradient for the rounding.

    Inside the range the gradient with respect to ``x`` is 1 (rounding is treated as the
    identity); where the clamp cuts ``x`` off, it is 0. The same values as :func:`fake_quantize`
    with the same ``scale`` and ``zero_point``.
    """
    q = torch.clamp(_ste_round(x * (1.0 / scale)) + zero_point, q_min, q_max)
    return (q - zero_point) * scale


class FakeQuantLinear(nn.Module):
    """A linear layer that computes what its int8 version would: weight and input fake-quantized.

    The weight is quantized symmetrically per output row (recomputed from the current weight,
    so that it follows training); the input asymmetrically to uint8 with a **static** scale and
    zero point, fixed after calibration. Modes: ``"float"`` (plain linear), ``"observe"`` (plain
    linear, the input recorded by ``observer``), ``"quant"`` (fake-quantized; requires
    :meth:`freeze` first). Rounding passes gradients straight through, so the same module serves
    static post-training quantization (evaluate in ``"quant"``) and quantization-aware training
    (train in ``"quant"``). Taught in chapter 12.
    """

    def __init__(self, linear: nn.Linear, observer: MinMaxObserver) -> None:
        super().__init__()
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear must be an nn.Linear, got {type(linear).__name__}")
        if not isinstance(observer, MinMaxObserver):
            raise TypeError(f"observer must be a MinMaxObserver or PercentileObserver, got {type(observer).__name__}")
        self.linear = linear
        self.observer = observer
        self.mode = "float"
        self.frozen = False  # in_scale / in_zero_point hold the observer's latest range
        self.register_buffer("in_scale", torch.ones(()))
        self.register_buffer("in_zero_point", torch.zeros(()))

    def set_mode(self, mode: str) -> None:
        if mode not in ("float", "observe", "quant"):
            raise ValueError(f"mode must be 'float', 'observe' or 'quant', got {mode!r}")
        if mode == "quant" and self.observer.batches == 0:
            raise ValueError("calibrate (mode 'observe' on some batches) and freeze() before mode 'quant'")
        if mode == "quant" and not self.frozen:
            # else the input would be quantized with the placeholder scale 1, silently
            raise ValueError("call freeze() after the calibration batches, before mode 'quant'")
        if mode == "observe":
            self.frozen = False  # more batches may widen the range: freeze() again after them
        self.mode = mode

    def freeze(self) -> None:
        """Fix the input's scale and zero point from what the observer saw."""
        s, z = self.observer.qparams()
        self.in_scale.copy_(s)
        self.in_zero_point.copy_(z.float())
        self.frozen = True

    def quantized_weight(self) -> torch.Tensor:
        """The weight as its int8 per-row version means it (straight-through gradient)."""
        w = self.linear.weight
        s = _scale_for_range(w.detach().abs().amax(dim=1), 127)[:, None]  # (out, 1)
        return fake_quantize_ste(w, s, torch.zeros_like(s), -128, 127)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "float":
            return self.linear(x)
        if self.mode == "observe":
            self.observer.observe(x.detach())
            return self.linear(x)
        x_hat = fake_quantize_ste(x, self.in_scale, self.in_zero_point, 0, 255)
        return F.linear(x_hat, self.quantized_weight(), self.linear.bias)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, observer={type(self.observer).__name__}"


def prepare_fake_quant(model: nn.Module, observer: type[MinMaxObserver] | Any = MinMaxObserver) -> list[FakeQuantLinear]:
    """Replace every ``nn.Linear`` of ``model`` (in place) by a :class:`FakeQuantLinear`.

    ``observer`` is a class or a zero-argument factory (e.g. ``lambda: PercentileObserver(99.9)``)
    called once per layer. Returns the new layers, in ``model.modules()`` order, in mode
    ``"observe"``: run calibration batches (:func:`calibrate`), then the layers are frozen and put
    in mode ``"quant"``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if not callable(observer):
        raise TypeError(f"observer must be an observer class or factory, got {observer!r}")
    layers = []
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear):
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            fq = FakeQuantLinear(module, observer())
            fq.set_mode("observe")
            setattr(parent, child, fq)
            layers.append(fq)
    if not layers:
        raise ValueError("the model has no nn.Linear layers to prepare")
    return layers


def calibrate(model: nn.Module, batches: Any, layers: list[FakeQuantLinear]) -> int:
    """Run ``model(**batch)`` on each calibration batch (no labels needed), then freeze ``layers``.

    The layers must be in mode ``"observe"`` (as :func:`prepare_fake_quant` leaves them); after
    the call they are in mode ``"quant"`` with their input scales fixed. Returns the number of
    batches run.
    """
    if not layers or any(not isinstance(layer, FakeQuantLinear) for layer in layers):
        raise TypeError("layers must be the FakeQuantLinear list that prepare_fake_quant returned")
    was_training = model.training
    model.eval()
    n = 0
    with torch.inference_mode():
        for batch in batches:
            model(**{k: v for k, v in batch.items() if k != "labels"})
            n += 1
    if n == 0:
        raise ValueError("batches is empty: calibration needs at least one batch")
    for layer in layers:
        layer.freeze()
        layer.set_mode("quant")
    model.train(was_training)
    return n


def activation_outliers(model: nn.Module, batches: Any) -> dict[str, torch.Tensor]:
    """Largest |input| per feature at every ``nn.Linear`` of ``model``: ``{layer name: (in_features,)}``.

    Hooks record, over all ``batches`` (padding positions excluded where an ``attention_mask``
    is given), the maximum absolute value of each input feature. A layer whose largest feature
    range is many times its median one has outlier features (Bondarenko et al., 2021, found them
    in BERT); chapter 12 measures MiniLM's.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    peaks: dict[str, torch.Tensor] = {}
    mask: list[torch.Tensor | None] = [None]

    def hook(name: str):
        def record(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            x = inputs[0].detach().float()  # (B, T, d) or (B, d)
            if x.dim() == 3 and mask[0] is not None and mask[0].shape == x.shape[:2]:
                x = x[mask[0].bool()]  # (real tokens, d)
            peak = x.reshape(-1, x.shape[-1]).abs().amax(dim=0)
            peaks[name] = peak if name not in peaks else torch.maximum(peaks[name], peak)

        return record

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not handles:
        raise ValueError("the model has no nn.Linear layers")
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for batch in batches:
                mask[0] = batch.get("attention_mask")
                model(**{k: v for k, v in batch.items() if k != "labels"})
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if not peaks:
        raise ValueError("batches is empty")
    return peaks


__all__ = [
    "FakeQuantLinear",
    "Int8Embedding",
    "MinMaxObserver",
    "PercentileObserver",
    "activation_outliers",
    "calibrate",
    "dequantize",
    "dynamic_quantize_linears",
    "fake_quantize",
    "fake_quantize_ste",
    "int8_dynamic",
    "qparams",
    "prepare_fake_quant",
    "qrange",
    "quantize",
    "quantize_embeddings_",
]
