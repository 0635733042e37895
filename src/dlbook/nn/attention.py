"""Scaled dot-product attention and multi-head attention, as taught in chapter 6 (Attention from first principles).

Everything here is batch-first and follows one mask convention, the one of
:func:`torch.nn.functional.scaled_dot_product_attention`:

* a **boolean** ``mask`` says where a query *may attend*: ``True`` = attend, ``False`` = blocked;
* a **float** ``mask`` is *added* to the logits before the softmax (``0`` = attend, ``-inf`` or a large
  negative number = blocked), the form Hugging Face models build internally. A large *finite* negative
  number (Hugging Face uses ``torch.finfo(dtype).min``) only pushes a logit down: a row in which every key
  gets it keeps finite logits and ends with *uniform* weights, not zeros, exactly as in PyTorch.

The mask must broadcast to the logits' shape ``(..., L_q, L_k)``, e.g. ``(L_q, L_k)`` for one mask shared
by the batch, or ``(B, 1, 1, L_k)`` for a per-sequence padding mask in multi-head attention. From a
Hugging Face ``attention_mask`` (1 = real token, 0 = padding) of shape ``(B, L)`` the boolean form is
``attention_mask.bool()[:, None, None, :]``.

:class:`MultiHeadAttention` also takes ``key_padding_mask`` with the *opposite* meaning, exactly as
:class:`torch.nn.MultiheadAttention` does: shape ``(B, L_k)``, ``True`` = this key is padding, ignore it.
Beware that :class:`torch.nn.MultiheadAttention`'s own boolean ``attn_mask`` is also the opposite of ours
(there ``True`` = *blocked*); pass ``~mask`` to it.

A query row that may attend to no key at all (every logit ``-inf``) gets zero weights, a zero output and
zero gradients, which is what :func:`torch.nn.functional.scaled_dot_product_attention` returns for such a
row (the unit tests check it against the installed PyTorch). A plain ``softmax`` would give ``NaN`` there,
and ``NaN`` gradients that spread to every parameter upstream. What :class:`torch.nn.MultiheadAttention`
returns for a sequence whose keys are all padding depends on the call (PyTorch 2.x): ``NaN`` with
``need_weights=True`` (its default) and on its inference fast path (eval mode, no autograd,
``need_weights=False``), the output bias otherwise. Ours always returns the output projection of a zero
vector (its bias); chapter 6 shows the cases side by side.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MultiHeadAttention", "causal_mask", "scaled_dot_product_attention"]

Align = Literal["top-left", "bottom-right"]


def causal_mask(
    T: int, device: torch.device | str | None = None, *, n_keys: int | None = None, align: Align = "top-left"
) -> Tensor:
    """Boolean ``(T, n_keys)`` mask, ``True`` where query ``t`` may attend: keys at or before it. Chapter 6.

    ``n_keys`` defaults to ``T`` (a square lower triangle). When ``n_keys != T`` the diagonal needs an
    anchor:

    * ``align="top-left"`` (default): query ``t`` sees keys ``0..t``. This is what ``is_causal=True``
      does in :func:`torch.nn.functional.scaled_dot_product_attention`, and what ``causal=True`` does
      in this module.
    * ``align="bottom-right"``: query ``t`` sees keys ``0..t + n_keys - T``, i.e. the *last* query sees
      every key. This is the mask for decoding with a cache of earlier keys, where the ``T`` queries are
      the last ``T`` of ``n_keys`` positions; it equals ``torch.nn.attention.bias.causal_lower_right``
      (and FlashAttention 2's convention). With ``T > n_keys`` its first rows block every key.
    """
    n_keys = T if n_keys is None else n_keys
    for name, value in (("T", T), ("n_keys", n_keys)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"causal_mask: {name} must be a positive int, got {value!r}")
    if align not in ("top-left", "bottom-right"):
        raise ValueError(f"causal_mask: align must be 'top-left' or 'bottom-right', got {align!r}")
    offset = 0 if align == "top-left" else n_keys - T
    return torch.ones(T, n_keys, dtype=torch.bool, device=device).tril(diagonal=offset)


def _check_mask(mask: object, logits_shape: torch.Size, device: torch.device, where: str, name: str = "mask") -> None:
    """A clear error for a mask that is not a tensor, has an unusable dtype, or does not fit the logits."""
    if not isinstance(mask, Tensor):
        raise TypeError(f"{where}: {name} must be a tensor (bool or float), got {type(mask).__name__}")
    if mask.dtype == torch.uint8:
        raise TypeError(f"{where}: {name} has dtype torch.uint8; use a bool mask (True = may attend) via .bool()")
    if mask.dtype != torch.bool and not mask.is_floating_point():
        raise TypeError(f"{where}: {name} must be bool (True = may attend) or float (added to the logits), got {mask.dtype}")
    if mask.device != device:
        raise ValueError(f"{where}: {name} is on {mask.device} but the inputs are on {device}")
    try:
        broadcast = torch.broadcast_shapes(mask.shape, logits_shape)
    except RuntimeError as err:
        raise ValueError(
            f"{where}: {name} of shape {tuple(mask.shape)} does not broadcast to the attention logits "
            f"of shape {tuple(logits_shape)} (..., L_q, L_k)"
        ) from err
    if broadcast != logits_shape:
        raise ValueError(
            f"{where}: {name} of shape {tuple(mask.shape)} would enlarge the logits of shape {tuple(logits_shape)}"
        )


def _check_not_per_sequence_3d(mask: Tensor) -> None:
    """Refuse a 3-D mask whose first dimension is not 1: it would broadcast onto the head axis.

    :class:`MultiHeadAttention` attends with logits ``(B, n_heads, L_q, L_k)``; a ``(B, L_q, L_k)`` mask
    aligns with them from the right, so its batch axis meets the heads. When ``B == n_heads`` that
    broadcasts without error and masks sequence ``h``'s keys in head ``h`` of every sequence.
    """
    if mask.dim() == 3 and mask.shape[0] != 1:
        raise ValueError(
            f"MultiHeadAttention: a 3-D mask of shape {tuple(mask.shape)} is ambiguous: broadcasting puts its first "
            "axis on the heads of the logits (B, n_heads, L_q, L_k), not on the batch (PyTorch's "
            "nn.MultiheadAttention reads it as (B * n_heads, L_q, L_k)). Pass a per-sequence mask as "
            "mask[:, None] of shape (B, 1, L_q, L_k), or one (L_q, L_k) mask shared by the batch"
        )


def _check_qkv(q: object, k: object, v: object, where: str) -> None:
    """Types, dtypes, devices and shapes of ``q``, ``k``, ``v`` for :func:`scaled_dot_product_attention`."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{where}: {name} must be a tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{where}: {name} must be a floating-point tensor, got {t.dtype}")
        if t.dim() < 2:
            raise ValueError(f"{where}: {name} needs shape (..., L, d), got {tuple(t.shape)}")
    assert isinstance(q, Tensor) and isinstance(k, Tensor) and isinstance(v, Tensor)
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"{where}: q, k, v need the same dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"{where}: q, k, v need the same device, got {q.device}, {k.device}, {v.device}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"{where}: q and k need the same d_k, got {q.shape[-1]} and {k.shape[-1]}")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"{where}: k and v need the same length L_k, got {k.shape[-2]} and {v.shape[-2]}")
    if not (q.shape[:-2] == k.shape[:-2] == v.shape[:-2]):
        raise ValueError(
            f"{where}: q, k, v need the same leading (batch, head) dims, got "
            f"{tuple(q.shape[:-2])}, {tuple(k.shape[:-2])}, {tuple(v.shape[:-2])}"
        )


def _check_scale(scale: object, where: str) -> None:
    if scale is None:
        return
    if isinstance(scale, bool) or not isinstance(scale, Real) or not math.isfinite(float(scale)):
        raise ValueError(f"{where}: scale must be a finite number or None (1/sqrt(d_k)), got {scale!r}")


def _check_dropout(p: object, where: str, name: str) -> None:
    if isinstance(p, bool) or not isinstance(p, Real) or not 0.0 <= float(p) < 1.0:
        raise ValueError(f"{where}: {name} must be a number in [0, 1), got {p!r}")


def scaled_dot_product_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None = None,
    causal: bool = False,
    dropout_p: float = 0.0,
    scale: float | None = None,
) -> tuple[Tensor, Tensor]:
    """``softmax(q k^T * scale + mask) v``, returning ``(out, weights)``. Chapter 6.

    Shapes: ``q`` ``(..., L_q, d_k)``, ``k`` ``(..., L_k, d_k)``, ``v`` ``(..., L_k, d_v)`` with the same
    leading (batch, head) dimensions, dtype and device; ``out`` is ``(..., L_q, d_v)`` and ``weights``
    ``(..., L_q, L_k)``.

    ``mask``: bool (``True`` = may attend) or float (added to the logits, converted to the logits'
    dtype, so a float32 mask also serves under autocast), broadcastable to ``(..., L_q, L_k)``.
    ``causal=True`` blocks keys after the query, **top-left aligned** like ``is_causal=True`` in
    PyTorch (for decoding with a cache use ``mask=causal_mask(L_q, n_keys=L_k, align="bottom-right")``).
    ``scale`` defaults to ``1/sqrt(d_k)``. Dropout with probability ``dropout_p`` is applied to the
    weights (the returned weights are those after dropout, the ones that multiply ``v``); pass
    ``dropout_p=0`` at evaluation time.

    Computes what :func:`torch.nn.functional.scaled_dot_product_attention` computes, forward and
    backward, with these differences on purpose: it returns the weights too (for plots); ``mask`` and
    ``causal`` may be given together (PyTorch refuses); the leading dimensions must be equal, not
    merely broadcastable, and there is no grouped-query option (``enable_gqa``). A query whose every
    key is blocked gets zero weights, a zero output and zero gradients, as PyTorch's function does.
    """
    where = "scaled_dot_product_attention"
    _check_qkv(q, k, v, where)
    _check_dropout(dropout_p, where, "dropout_p")
    _check_scale(scale, where)
    if not isinstance(causal, bool):
        raise TypeError(f"{where}: causal must be True or False, got {causal!r}")

    d_k = q.shape[-1]
    scale = 1.0 / math.sqrt(d_k) if scale is None else float(scale)
    logits = (q @ k.transpose(-2, -1)) * scale  # (..., L_q, L_k)
    if mask is not None:
        _check_mask(mask, logits.shape, q.device, where)
        if mask.dtype == torch.bool:
            logits = logits.masked_fill(~mask, float("-inf"))
        else:
            logits = logits + mask.to(logits.dtype)
    if causal:
        logits = logits.masked_fill(~causal_mask(q.shape[-2], q.device, n_keys=k.shape[-2]), float("-inf"))
    if mask is None and not causal:
        weights = torch.softmax(logits, dim=-1)  # (..., L_q, L_k), rows sum to 1
    else:
        # A row with every logit -inf would make softmax return NaN, and its backward NaN too (even
        # where the forward is later overwritten). Give such rows finite logits first, then zero
        # their weights: output 0 and gradient 0 there, as PyTorch's fused function returns.
        blocked = torch.isneginf(logits).all(dim=-1, keepdim=True)  # (..., L_q, 1)
        weights = torch.softmax(logits.masked_fill(blocked, 0.0), dim=-1).masked_fill(blocked, 0.0)
    if dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p, training=True)
    return weights @ v, weights  # (..., L_q, d_v), (..., L_q, L_k)


class MultiHeadAttention(nn.Module):
    """Multi-head attention with separate q/k/v/output projections, batch-first. Chapter 6.

    ``forward(query, key, value)`` takes ``(B, L_q, d_model)``, ``(B, L_k, kdim)``, ``(B, L_k, vdim)``
    (``kdim`` and ``vdim`` default to ``d_model``; ``key`` and ``value`` may come from another sequence
    than ``query``, of another length: cross-attention) and returns ``(out, weights)``: ``out``
    ``(B, L_q, d_model)``; ``weights`` the per-head attention ``(B, n_heads, L_q, L_k)`` when
    ``need_weights=True`` (else ``None``).

    Masks: ``mask`` as in :func:`scaled_dot_product_attention` (bool ``True`` = may attend, or float added
    to the logits), broadcastable to ``(B, n_heads, L_q, L_k)``; ``key_padding_mask`` ``(B, L_k)`` bool with
    ``True`` = padding (ignore), the :class:`torch.nn.MultiheadAttention` convention; ``causal=True``
    blocks future keys (top-left aligned). ``scale`` overrides ``1/sqrt(d_head)`` (chapter 6 trains with
    and without it). Load the weights of a :class:`torch.nn.MultiheadAttention` with :meth:`load_from_torch`.

    Differences from :class:`torch.nn.MultiheadAttention`, on purpose: always batch-first (PyTorch's
    default is ``(L, B, d)``); a boolean ``mask`` means *may attend* (PyTorch's ``attn_mask`` means
    *blocked*); the weights are per head and always computed, but returned only on request (PyTorch
    averages over heads by default); a sequence whose keys are all padding gives zero heads (output = the
    output projection's bias) and finite gradients, whatever the arguments, where PyTorch gives ``NaN``
    with ``need_weights=True`` or on its inference fast path; four separate ``nn.Linear`` projections,
    the layout of Hugging Face's BERT, instead of one stacked ``in_proj_weight``.

    A 3-D ``mask`` must have a leading dimension of 1: broadcasting aligns shapes from the right, so a
    per-sequence mask ``(B, L_q, L_k)`` would land on the *head* axis of ``(B, n_heads, L_q, L_k)``, and
    when ``B == n_heads`` it would silently mask the wrong thing (PyTorch's module reads a 3-D mask as
    ``(B * n_heads, L_q, L_k)``). Pass ``mask[:, None]`` of shape ``(B, 1, L_q, L_k)`` or a shared
    ``(L_q, L_k)`` instead; a ``ValueError`` says so.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        bias: bool = True,
        dropout: float = 0.0,
        *,
        kdim: int | None = None,
        vdim: int | None = None,
        scale: float | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("d_model", d_model), ("n_heads", n_heads), ("kdim", kdim), ("vdim", vdim)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"MultiHeadAttention: {name} must be a positive int, got {value!r}")
        if d_model % n_heads:
            raise ValueError(f"MultiHeadAttention: d_model ({d_model}) must be a positive multiple of n_heads ({n_heads})")
        _check_dropout(dropout, "MultiHeadAttention", "dropout")
        _check_scale(scale, "MultiHeadAttention")
        self.d_model, self.n_heads, self.d_head, self.dropout = d_model, n_heads, d_model // n_heads, dropout
        self.kdim = d_model if kdim is None else kdim
        self.vdim = d_model if vdim is None else vdim
        self.scale = scale
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(self.kdim, d_model, bias=bias)
        self.v_proj = nn.Linear(self.vdim, d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)

    def _split(self, x: Tensor) -> Tensor:
        B, L, _ = x.shape
        return x.view(B, L, self.n_heads, self.d_head).transpose(1, 2)  # (B, H, L, d_head)

    def _check_inputs(self, query: object, key: object, value: object) -> None:
        where = "MultiHeadAttention"
        for name, t, width in (("query", query, self.d_model), ("key", key, self.kdim), ("value", value, self.vdim)):
            if not isinstance(t, Tensor):
                raise TypeError(f"{where}: {name} must be a tensor (B, L, {width}), got {type(t).__name__}")
            if not t.is_floating_point():
                raise TypeError(f"{where}: {name} must be a floating-point tensor, got {t.dtype}")
            if t.dim() != 3:
                raise ValueError(f"{where}: {name} must be (B, L, {width}), got shape {tuple(t.shape)}")
            if t.shape[-1] != width:
                what = "d_model" if name == "query" else ("kdim" if name == "key" else "vdim")
                raise ValueError(
                    f"{where}: {name} has {t.shape[-1]} features in its last dim, but this module's "
                    f"{what} is {width}: {name} must be (B, L, {width}), got {tuple(t.shape)}"
                )
        assert isinstance(query, Tensor) and isinstance(key, Tensor) and isinstance(value, Tensor)
        if not (query.dtype == key.dtype == value.dtype):
            raise TypeError(f"{where}: query, key, value need the same dtype, got {query.dtype}, {key.dtype}, {value.dtype}")
        weight = self.q_proj.weight
        if (
            isinstance(weight, Tensor)
            and weight.is_floating_point()
            and weight.dtype != query.dtype
            and not torch.is_autocast_enabled(query.device.type)
        ):
            raise TypeError(
                f"{where}: the inputs are {query.dtype} but the module's weights are {weight.dtype}; "
                f"convert one of them (e.g. module.to({query.dtype}) or query.to({weight.dtype}))"
            )
        B, L_k = query.shape[0], key.shape[1]
        if key.shape[0] != B or value.shape[0] != B:
            raise ValueError(
                f"{where}: query, key, value need the same batch size, got {query.shape[0]}, {key.shape[0]}, {value.shape[0]}"
            )
        if value.shape[1] != L_k:
            raise ValueError(f"{where}: key and value need the same length L_k, got {L_k} and {value.shape[1]}")

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        mask: Tensor | None = None,
        key_padding_mask: Tensor | None = None,
        causal: bool = False,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        self._check_inputs(query, key, value)
        B, L_q, _ = query.shape
        L_k = key.shape[1]
        if mask is not None:
            _check_mask(mask, torch.Size((B, self.n_heads, L_q, L_k)), query.device, "MultiHeadAttention")
            _check_not_per_sequence_3d(mask)
        if key_padding_mask is not None:
            if not isinstance(key_padding_mask, Tensor):
                got = type(key_padding_mask).__name__
                raise TypeError(f"MultiHeadAttention: key_padding_mask must be a bool tensor (B, L_k), got {got}")
            if key_padding_mask.shape != (B, L_k):
                raise ValueError(
                    f"MultiHeadAttention: key_padding_mask must be (B, L_k) = ({B}, {L_k}), got {tuple(key_padding_mask.shape)}"
                )
            if key_padding_mask.dtype != torch.bool:
                raise TypeError(f"MultiHeadAttention: key_padding_mask must be bool (True = pad), got {key_padding_mask.dtype}")
            if key_padding_mask.device != query.device:
                raise ValueError(
                    f"MultiHeadAttention: key_padding_mask is on {key_padding_mask.device} but the inputs are on {query.device}"
                )
            keep = ~key_padding_mask[:, None, None, :]  # (B, 1, 1, L_k), True = may attend
            if mask is None:
                mask = keep
            elif mask.dtype == torch.bool:
                mask = mask & keep
            else:
                mask = mask.masked_fill(~keep, float("-inf"))

        q = self._split(self.q_proj(query))  # (B, H, L_q, d_head)
        k = self._split(self.k_proj(key))  # (B, H, L_k, d_head)
        v = self._split(self.v_proj(value))  # (B, H, L_k, d_head)
        p = self.dropout if self.training else 0.0
        heads, weights = scaled_dot_product_attention(q, k, v, mask=mask, causal=causal, dropout_p=p, scale=self.scale)
        out = heads.transpose(1, 2).reshape(B, L_q, self.d_model)  # concatenate the heads: (B, L_q, d_model)
        return self.out_proj(out), (weights if need_weights else None)

    @torch.no_grad()
    def load_from_torch(self, mha: nn.MultiheadAttention) -> MultiHeadAttention:
        """Copy the weights of a :class:`torch.nn.MultiheadAttention` into this module; returns ``self``.

        ``embed_dim``, ``num_heads``, ``kdim``, ``vdim`` and the presence of biases must match. Its
        ``batch_first`` does not matter here (it changes the input layout, not the weights).
        """
        if not isinstance(mha, nn.MultiheadAttention):
            raise TypeError(f"load_from_torch needs an nn.MultiheadAttention, got {type(mha).__name__}")
        if mha.embed_dim != self.d_model or mha.num_heads != self.n_heads:
            raise ValueError(
                f"load_from_torch: shapes differ: torch module has embed_dim={mha.embed_dim}, num_heads={mha.num_heads}; "
                f"this one d_model={self.d_model}, n_heads={self.n_heads}"
            )
        if mha.kdim != self.kdim or mha.vdim != self.vdim:
            raise ValueError(
                f"load_from_torch: kdim/vdim differ: torch module has kdim={mha.kdim}, vdim={mha.vdim}; "
                f"this one kdim={self.kdim}, vdim={self.vdim}"
            )
        if mha.bias_k is not None or mha.add_zero_attn:
            raise ValueError("load_from_torch: add_bias_kv and add_zero_attn are not supported")
        has_bias = mha.in_proj_bias is not None
        if has_bias != (self.q_proj.bias is not None):
            raise ValueError(f"load_from_torch: bias mismatch (torch module bias={has_bias})")
        if mha._qkv_same_embed_dim:
            weights = mha.in_proj_weight.chunk(3, dim=0)
        else:
            weights = (mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight)
        biases = mha.in_proj_bias.chunk(3, dim=0) if has_bias else (None, None, None)
        for proj, w, b in zip((self.q_proj, self.k_proj, self.v_proj), weights, biases, strict=True):
            if proj.weight.shape != w.shape:
                raise ValueError(f"load_from_torch: projection of shape {tuple(w.shape)} != {tuple(proj.weight.shape)}")
            proj.weight.copy_(w)
            if b is not None:
                proj.bias.copy_(b)
        self.out_proj.weight.copy_(mha.out_proj.weight)
        if has_bias:
            self.out_proj.bias.copy_(mha.out_proj.bias)
        return self

    def extra_repr(self) -> str:
        extra = "".join(
            f", {name}={value}"
            for name, value, default in (
                ("kdim", self.kdim, self.d_model),
                ("vdim", self.vdim, self.d_model),
                ("scale", self.scale, None),
            )
            if value != default
        )
        return f"d_model={self.d_model}, n_heads={self.n_heads}, dropout={self.dropout}{extra}"
