"""The Transformer block's parts, as taught in chapter 7 (The Transformer block).

Positional encodings, layer normalisation, the position-wise feed-forward network, the encoder
layer (post-norm or pre-norm, loadable from :class:`torch.nn.TransformerEncoderLayer`), a stack of
layers, and a small causal language model. Attention itself is :mod:`dlbook.nn.attention` (chapter 6).
All modules are batch-first: ``(batch, seq, d_model)``.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import MultiHeadAttention

__all__ = [
    "Encoder",
    "EncoderLayer",
    "FeedForward",
    "LayerNorm",
    "TransformerLM",
    "sinusoidal_positional_encoding",
]

Activation = Literal["relu", "gelu"]


def sinusoidal_positional_encoding(n_positions: int, d_model: int, base: float = 10000.0) -> Tensor:
    """The ``(n_positions, d_model)`` table ``PE[pos, 2i] = sin(pos / base^(2i/d))``, ``PE[pos, 2i+1] = cos(...)``.

    Sine on even dimensions, cosine on odd ones, frequency ``base^(-2i/d_model)`` for the pair ``i``
    (Vaswani et al. 2017). An odd ``d_model`` is allowed (the last dimension is a sine). Chapter 7.
    """
    for name, value in (("n_positions", n_positions), ("d_model", d_model)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"sinusoidal_positional_encoding: {name} must be a positive int, got {value!r}")
    if base <= 0:
        raise ValueError(f"sinusoidal_positional_encoding: base must be positive, got {base}")
    pos = torch.arange(n_positions, dtype=torch.float64)[:, None]  # (P, 1)
    two_i = torch.arange(0, d_model, 2, dtype=torch.float64)  # (ceil(d/2),) = 0, 2, 4, ...
    angle = pos / base ** (two_i / d_model)  # (P, ceil(d/2))
    pe = torch.zeros(n_positions, d_model, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(angle)
    pe[:, 1::2] = torch.cos(angle[:, : d_model // 2])
    return pe.to(torch.get_default_dtype())


class LayerNorm(nn.Module):
    """``gamma * (x - mean) / sqrt(var + eps) + beta`` over the last dimension (biased variance). Chapter 7.

    Parameter names (``weight``, ``bias``) match :class:`torch.nn.LayerNorm`, so state dicts load either way.
    """

    def __init__(self, d: int, eps: float = 1e-5) -> None:
        super().__init__()
        if isinstance(d, bool) or not isinstance(d, int) or d < 1:
            raise ValueError(f"LayerNorm: d must be a positive int, got {d!r}")
        if eps <= 0:
            raise ValueError(f"LayerNorm: eps must be positive, got {eps}")
        self.d, self.eps = d, eps
        self.weight = nn.Parameter(torch.ones(d))  # gamma
        self.bias = nn.Parameter(torch.zeros(d))  # beta

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() < 1 or x.shape[-1] != self.d:
            raise ValueError(f"LayerNorm: expected last dimension {self.d}, got shape {tuple(x.shape)}")
        mean = x.mean(dim=-1, keepdim=True)
        var = x.var(dim=-1, keepdim=True, unbiased=False)
        return self.weight * (x - mean) / torch.sqrt(var + self.eps) + self.bias

    def extra_repr(self) -> str:
        return f"{self.d}, eps={self.eps}"


def _activation(name: str):
    if name == "relu":
        return F.relu
    if name == "gelu":
        return F.gelu  # exact (erf) GELU, as BERT uses
    raise ValueError(f"unknown activation {name!r}: valid are 'relu', 'gelu'")


class FeedForward(nn.Module):
    """Position-wise feed-forward network ``W2 act(W1 x + b1) + b2`` (dropout after ``act``). Chapter 7.

    ``activation`` is ``"relu"`` (``max(0, .)``, the original Transformer) or ``"gelu"`` (exact erf form,
    BERT). Layer names ``linear1``/``linear2`` match :class:`torch.nn.TransformerEncoderLayer`.
    """

    def __init__(self, d_model: int, d_ff: int, activation: Activation = "relu", dropout: float = 0.0) -> None:
        super().__init__()
        if d_model < 1 or d_ff < 1:
            raise ValueError(f"FeedForward: d_model and d_ff must be positive, got {d_model}, {d_ff}")
        self.act = _activation(activation)
        self.activation = activation
        self.linear1 = nn.Linear(d_model, d_ff)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ff, d_model)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.linear1.in_features:
            raise ValueError(f"FeedForward: expected last dimension {self.linear1.in_features}, got shape {tuple(x.shape)}")
        return self.linear2(self.dropout(self.act(self.linear1(x))))  # (..., d_ff) inside, (..., d_model) out


class EncoderLayer(nn.Module):
    """One Transformer encoder layer: self-attention and feed-forward, each with a residual and a LayerNorm.

    Post-norm (``norm_first=False``, the original and BERT)::

        x = norm1(x + dropout(self_attn(x)))
        x = norm2(x + dropout(ff(x)))

    Pre-norm (``norm_first=True``)::

        x = x + dropout(self_attn(norm1(x)))
        x = x + dropout(ff(norm2(x)))

    Same computation as :class:`torch.nn.TransformerEncoderLayer` with ``batch_first=True``; copy its
    weights with :meth:`load_from_torch`. ``forward(x, mask, key_padding_mask, causal, need_weights)``
    uses the masks of :class:`dlbook.nn.attention.MultiHeadAttention`; with ``need_weights=True`` it
    returns ``(x, weights)`` with per-head weights ``(B, H, L, L)``, else just ``x``. Chapter 7.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_ff: int,
        dropout: float = 0.1,
        activation: Activation = "relu",
        norm_first: bool = False,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout=dropout)
        self.ff = FeedForward(d_model, d_ff, activation, dropout)
        self.norm1 = LayerNorm(d_model, eps)
        self.norm2 = LayerNorm(d_model, eps)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.norm_first = norm_first
        self.d_model = d_model

    def _sa(self, x: Tensor, mask, key_padding_mask, causal) -> tuple[Tensor, Tensor | None]:
        out, w = self.self_attn(x, x, x, mask=mask, key_padding_mask=key_padding_mask, causal=causal, need_weights=True)
        return self.dropout1(out), w

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        key_padding_mask: Tensor | None = None,
        causal: bool = False,
        need_weights: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"EncoderLayer: x must be (B, L, {self.d_model}), got {tuple(x.shape)}")
        if self.norm_first:
            a, w = self._sa(self.norm1(x), mask, key_padding_mask, causal)
            x = x + a
            x = x + self.dropout2(self.ff(self.norm2(x)))
        else:
            a, w = self._sa(x, mask, key_padding_mask, causal)
            x = self.norm1(x + a)
            x = self.norm2(x + self.dropout2(self.ff(x)))
        return (x, w) if need_weights else x

    @torch.no_grad()
    def load_from_torch(self, layer: nn.TransformerEncoderLayer) -> EncoderLayer:
        """Copy the weights of a :class:`torch.nn.TransformerEncoderLayer`; returns ``self``.

        Checks that the two layers compute the same thing (sizes, ``norm_first``, activation, eps).
        """
        if not isinstance(layer, nn.TransformerEncoderLayer):
            raise TypeError(f"load_from_torch needs an nn.TransformerEncoderLayer, got {type(layer).__name__}")
        if layer.norm_first != self.norm_first:
            raise ValueError(f"load_from_torch: norm_first differs (torch {layer.norm_first}, ours {self.norm_first})")
        act = {F.relu: "relu", F.gelu: "gelu"}.get(layer.activation)
        if act is None and isinstance(layer.activation, nn.ReLU):
            act = "relu"
        if act is None and isinstance(layer.activation, nn.GELU) and layer.activation.approximate == "none":
            act = "gelu"
        if act != self.ff.activation:
            raise ValueError(f"load_from_torch: activation differs (torch {layer.activation}, ours {self.ff.activation})")
        if layer.linear1.weight.shape != self.ff.linear1.weight.shape:
            raise ValueError(
                f"load_from_torch: d_ff/d_model differ (torch linear1 {tuple(layer.linear1.weight.shape)}, "
                f"ours {tuple(self.ff.linear1.weight.shape)})"
            )
        if layer.norm1.eps != self.norm1.eps:
            raise ValueError(f"load_from_torch: eps differs (torch {layer.norm1.eps}, ours {self.norm1.eps})")
        self.self_attn.load_from_torch(layer.self_attn)
        for ours, theirs in ((self.ff.linear1, layer.linear1), (self.ff.linear2, layer.linear2),
                             (self.norm1, layer.norm1), (self.norm2, layer.norm2)):
            ours.weight.copy_(theirs.weight)
            ours.bias.copy_(theirs.bias)
        return self


class Encoder(nn.Module):
    """A stack of ``n_layers`` :class:`EncoderLayer` (plus a final LayerNorm when ``norm_first``). Chapter 7.

    ``forward(x, mask, key_padding_mask, causal, need_weights)``: with ``need_weights=True`` returns
    ``(x, [weights of each layer])``.
    """

    def __init__(
        self,
        n_layers: int,
        d_model: int,
        n_heads: int,
        d_ff: int,
        dropout: float = 0.1,
        activation: Activation = "relu",
        norm_first: bool = False,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"Encoder: n_layers must be positive, got {n_layers}")
        self.layers = nn.ModuleList(
            EncoderLayer(d_model, n_heads, d_ff, dropout, activation, norm_first, eps) for _ in range(n_layers)
        )
        # pre-norm leaves the residual stream unnormalised: normalise once at the end
        self.norm = LayerNorm(d_model, eps) if norm_first else nn.Identity()

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        key_padding_mask: Tensor | None = None,
        causal: bool = False,
        need_weights: bool = False,
    ) -> Tensor | tuple[Tensor, list[Tensor]]:
        all_weights = []
        for layer in self.layers:
            x, w = layer(x, mask=mask, key_padding_mask=key_padding_mask, causal=causal, need_weights=True)
            all_weights.append(w)
        x = self.norm(x)
        return (x, all_weights) if need_weights else x


class TransformerLM(nn.Module):
    """A small GPT-style (decoder-only) language model: embeddings + causal pre-norm encoder stack + linear head.

    ``forward(idx)`` maps token ids ``(B, T)`` (``T <= max_len``) to next-token logits ``(B, T, vocab_size)``;
    position ``t`` sees only tokens ``<= t`` (causal mask). ``positions`` is ``"learned"`` (an embedding
    table) or ``"sinusoidal"`` (the fixed table of :func:`sinusoidal_positional_encoding`). Chapter 7.
    """

    def __init__(
        self,
        vocab_size: int,
        d_model: int = 64,
        n_heads: int = 4,
        d_ff: int = 256,
        n_layers: int = 2,
        max_len: int = 64,
        dropout: float = 0.0,
        positions: Literal["learned", "sinusoidal"] = "learned",
        activation: Activation = "gelu",
    ) -> None:
        super().__init__()
        if vocab_size < 1 or max_len < 1:
            raise ValueError(f"TransformerLM: vocab_size and max_len must be positive, got {vocab_size}, {max_len}")
        self.vocab_size, self.max_len, self.positions = vocab_size, max_len, positions
        self.tok = nn.Embedding(vocab_size, d_model)
        if positions == "learned":
            self.pos = nn.Embedding(max_len, d_model)
        elif positions == "sinusoidal":
            self.register_buffer("pe", sinusoidal_positional_encoding(max_len, d_model), persistent=False)
        else:
            raise ValueError(f"TransformerLM: positions must be 'learned' or 'sinusoidal', got {positions!r}")
        self.drop = nn.Dropout(dropout)
        self.encoder = Encoder(n_layers, d_model, n_heads, d_ff, dropout, activation, norm_first=True)
        self.head = nn.Linear(d_model, vocab_size)
        self.d_model = d_model

    def forward(self, idx: Tensor) -> Tensor:
        if idx.dim() != 2 or idx.dtype not in (torch.long, torch.int32, torch.int64):
            raise ValueError(f"TransformerLM: idx must be integer token ids (B, T), got {tuple(idx.shape)} {idx.dtype}")
        T = idx.shape[1]
        if T > self.max_len:
            raise ValueError(f"TransformerLM: sequence length {T} exceeds max_len {self.max_len}")
        pos = torch.arange(T, device=idx.device)
        p = self.pos(pos) if self.positions == "learned" else self.pe[:T]  # (T, d_model)
        x = self.drop(self.tok(idx) + p)  # (B, T, d_model)
        x = self.encoder(x, causal=True)  # (B, T, d_model)
        return self.head(x)  # (B, T, vocab_size)

