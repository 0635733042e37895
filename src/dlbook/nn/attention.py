"""Scaled dot-product attention and multi-head attention, as taught in chapter 6 (Attention from first principles).

Everything here is batch-first and follows one mask convention, the one of
:func:`torch.nn.functional.scaled_dot_product_attention`:

* a **boolean** ``mask`` says where a query *may attend*: ``True`` = attend, ``False`` = blocked;
* a **float** ``mask`` is *added* to the logits before the softmax (``0`` = attend, ``-inf`` or a large
  negative number = blocked), the form Hugging Face models build internally.

The mask must broadcast to the logits' shape ``(..., L_q, L_k)``, e.g. ``(L_q, L_k)`` for one mask shared
by the batch, or ``(B, 1, 1, L_k)`` for a per-sequence padding mask in multi-head attention. From a
Hugging Face ``attention_mask`` (1 = real token, 0 = padding) of shape ``(B, L)`` the boolean form is
``attention_mask.bool()[:, None, None, :]``.

:class:`MultiHeadAttention` also takes ``key_padding_mask`` with the *opposite* meaning, exactly as
:class:`torch.nn.MultiheadAttention` does: shape ``(B, L_k)``, ``True`` = this key is padding, ignore it.
A query row that may attend to no key at all gets zero weights and a zero output (as PyTorch does).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MultiHeadAttention", "causal_mask", "scaled_dot_product_attention"]


def causal_mask(T: int, device: torch.device | str | None = None, *, n_keys: int | None = None) -> Tensor:
    """Boolean ``(T, n_keys)`` mask, ``True`` on and below the diagonal: query ``t`` may attend keys ``<= t``.

    ``n_keys`` defaults to ``T``. With ``n_keys != T`` the diagonal starts at the top-left corner,
    as ``is_causal=True`` does in :func:`torch.nn.functional.scaled_dot_product_attention`. Chapter 6.
    """
    n_keys = T if n_keys is None else n_keys
    for name, value in (("T", T), ("n_keys", n_keys)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"causal_mask: {name} must be a positive int, got {value!r}")
    return torch.ones(T, n_keys, dtype=torch.bool, device=device).tril()


def _check_mask(mask: Tensor, logits_shape: torch.Size, where: str) -> None:
    if not isinstance(mask, Tensor):
        raise TypeError(f"{where}: mask must be a tensor, got {type(mask).__name__}")
    if mask.dtype != torch.bool and not mask.is_floating_point():
        raise TypeError(f"{where}: mask must be bool (True = may attend) or float (added to the logits), got {mask.dtype}")
    try:
        torch.broadcast_shapes(mask.shape, logits_shape)
    except RuntimeError as err:
        raise ValueError(
            f"{where}: mask of shape {tuple(mask.shape)} does not broadcast to the attention logits "
            f"of shape {tuple(logits_shape)} (..., L_q, L_k)"
        ) from err
    if mask.dim() > len(logits_shape) or torch.broadcast_shapes(mask.shape, logits_shape) != logits_shape:
        raise ValueError(
            f"{where}: mask of shape {tuple(mask.shape)} would enlarge the logits of shape {tuple(logits_shape)}"
        )


def scaled_dot_product_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None = None,
    causal: bool = False,
    dropout_p: float = 0.0,
    scale: float | None = None,
) -> tuple[Tensor, Tensor]:
    """``softmax(q k^T / sqrt(d_k) + mask) v``, returning ``(out, weights)``. Chapter 6.

    Shapes: ``q`` ``(..., L_q, d_k)``, ``k`` ``(..., L_k, d_k)``, ``v`` ``(..., L_k, d_v)`` with the same
    leading (batch, head) dimensions; ``out`` is ``(..., L_q, d_v)`` and ``weights`` ``(..., L_q, L_k)``.

    ``mask``: bool (``True`` = may attend) or float (added to the logits), broadcastable to
    ``(..., L_q, L_k)``. ``causal=True`` additionally blocks keys after the query (top-left aligned);
    both may be given. ``scale`` defaults to ``1/sqrt(d_k)``. Dropout with probability ``dropout_p`` is
    applied to the weights (and the returned weights are those after dropout, the ones that multiply
    ``v``); pass ``dropout_p=0`` at evaluation time. Matches
    :func:`torch.nn.functional.scaled_dot_product_attention` (which returns only ``out``).
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor):
            raise TypeError(f"scaled_dot_product_attention: {name} must be a tensor, got {type(t).__name__}")
        if t.dim() < 2:
            raise ValueError(f"scaled_dot_product_attention: {name} needs shape (..., L, d), got {tuple(t.shape)}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"scaled_dot_product_attention: q and k need the same d_k, got {q.shape[-1]} and {k.shape[-1]}")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"scaled_dot_product_attention: k and v need the same length L_k, got {k.shape[-2]} and {v.shape[-2]}")
    if not (q.shape[:-2] == k.shape[:-2] == v.shape[:-2]):
        raise ValueError(
            "scaled_dot_product_attention: q, k, v need the same leading (batch, head) dims, got "
            f"{tuple(q.shape[:-2])}, {tuple(k.shape[:-2])}, {tuple(v.shape[:-2])}"
        )
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"scaled_dot_product_attention: dropout_p must be in [0, 1), got {dropout_p}")

    d_k = q.shape[-1]
    scale = 1.0 / math.sqrt(d_k) if scale is None else scale
    logits = (q @ k.transpose(-2, -1)) * scale  # (..., L_q, L_k)
    if mask is not None:
        _check_mask(mask, logits.shape, "scaled_dot_product_attention")
        if mask.dtype == torch.bool:
            logits = logits.masked_fill(~mask, float("-inf"))
        else:
            logits = logits + mask.to(logits.dtype)
    if causal:
        logits = logits.masked_fill(~causal_mask(q.shape[-2], q.device, n_keys=k.shape[-2]), float("-inf"))
    weights = torch.softmax(logits, dim=-1)  # (..., L_q, L_k), rows sum to 1
    if mask is not None or causal:
        # a query with no key to attend to: softmax over all -inf is NaN; PyTorch returns zeros there
        blocked = torch.isneginf(logits).all(dim=-1, keepdim=True)
        weights = weights.masked_fill(blocked, 0.0)
    if dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p, training=True)
    return weights @ v, weights  # (..., L_q, d_v), (..., L_q, L_k)


class MultiHeadAttention(nn.Module):
    """Multi-head attention with separate q/k/v/output projections, batch-first. Chapter 6.

    ``forward(query, key, value)`` takes ``(B, L_q, d_model)``, ``(B, L_k, d_model)``, ``(B, L_k, d_model)``
    and returns ``(out, weights)``: ``out`` ``(B, L_q, d_model)``; ``weights`` the per-head attention
    ``(B, n_heads, L_q, L_k)`` when ``need_weights=True`` (else ``None``).

    Masks: ``mask`` as in :func:`scaled_dot_product_attention` (bool ``True`` = may attend, or float added
    to the logits), broadcastable to ``(B, n_heads, L_q, L_k)``; ``key_padding_mask`` ``(B, L_k)`` with
    ``True`` = padding (ignore), the :class:`torch.nn.MultiheadAttention` convention; ``causal=True``
    blocks future keys. Load the weights of a :class:`torch.nn.MultiheadAttention` with
    :meth:`load_from_torch`.
    """

    def __init__(self, d_model: int, n_heads: int, bias: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        if d_model < 1 or n_heads < 1 or d_model % n_heads:
            raise ValueError(f"MultiHeadAttention: d_model ({d_model}) must be a positive multiple of n_heads ({n_heads})")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"MultiHeadAttention: dropout must be in [0, 1), got {dropout}")
        self.d_model, self.n_heads, self.d_head, self.dropout = d_model, n_heads, d_model // n_heads, dropout
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, d_model, bias=bias)
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)

    def _split(self, x: Tensor) -> Tensor:
        B, L, _ = x.shape
        return x.view(B, L, self.n_heads, self.d_head).transpose(1, 2)  # (B, H, L, d_head)

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
        for name, t in (("query", query), ("key", key), ("value", value)):
            if not isinstance(t, Tensor) or t.dim() != 3 or t.shape[-1] != self.d_model:
                shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
                raise ValueError(f"MultiHeadAttention: {name} must be (B, L, {self.d_model}), got {shape}")
        B, L_q, _ = query.shape
        L_k = key.shape[1]
        if key.shape[0] != B or value.shape[0] != B or value.shape[1] != L_k:
            raise ValueError(
                f"MultiHeadAttention: batch/length mismatch: query {tuple(query.shape)}, key {tuple(key.shape)}, "
                f"value {tuple(value.shape)}"
            )
        if mask is not None:
            _check_mask(mask, torch.Size((B, self.n_heads, L_q, L_k)), "MultiHeadAttention")
        if key_padding_mask is not None:
            if not isinstance(key_padding_mask, Tensor) or key_padding_mask.shape != (B, L_k):
                shape = tuple(key_padding_mask.shape) if isinstance(key_padding_mask, Tensor) else key_padding_mask
                raise ValueError(f"MultiHeadAttention: key_padding_mask must be (B, L_k) = ({B}, {L_k}), got {shape}")
            if key_padding_mask.dtype != torch.bool:
                raise TypeError(f"MultiHeadAttention: key_padding_mask must be bool (True = pad), got {key_padding_mask.dtype}")
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
        heads, weights = scaled_dot_product_attention(q, k, v, mask=mask, causal=causal, dropout_p=p)
        out = heads.transpose(1, 2).reshape(B, L_q, self.d_model)  # concatenate the heads: (B, L_q, d_model)
        return self.out_proj(out), (weights if need_weights else None)

    @torch.no_grad()
    def load_from_torch(self, mha: nn.MultiheadAttention) -> MultiHeadAttention:
        """Copy the weights of a :class:`torch.nn.MultiheadAttention` into this module; returns ``self``."""
        if not isinstance(mha, nn.MultiheadAttention):
            raise TypeError(f"load_from_torch needs an nn.MultiheadAttention, got {type(mha).__name__}")
        if mha.embed_dim != self.d_model or mha.num_heads != self.n_heads:
            raise ValueError(
                f"load_from_torch: shapes differ: torch module has embed_dim={mha.embed_dim}, num_heads={mha.num_heads}; "
                f"this one d_model={self.d_model}, n_heads={self.n_heads}"
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
        return f"d_model={self.d_model}, n_heads={self.n_heads}, dropout={self.dropout}"
