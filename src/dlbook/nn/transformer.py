"""The Transformer block's parts, as taught in chapter 7 (The Transformer block).

Positional encodings, layer normalisation, the position-wise feed-forward network, the encoder
layer (post-norm or pre-norm, loadable from :class:`torch.nn.TransformerEncoderLayer`), a stack of
layers, and a small causal language model. Attention itself is :mod:`dlbook.nn.attention` (chapter 6).

Chapter 19 (Encoder-decoder models) adds the decoder layer with masked self-attention and
cross-attention (:class:`DecoderLayer`, loadable from :class:`torch.nn.TransformerDecoderLayer`), its
stack (:class:`Decoder`) and a full sequence-to-sequence model (:class:`EncoderDecoder`, whose body
loads from a pre-norm :class:`torch.nn.Transformer`).

All modules are batch-first: ``(batch, seq, d_model)``. Bad input gets a clear error naming the
argument: a wrong feature size (``d_model``), an input whose dtype differs from the module's
parameters (a float64 batch into a float32 layer), token ids outside the vocabulary, a sequence
longer than the positional table. The dtype check is skipped under :func:`torch.autocast`, where
mixed dtypes are the point.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import MultiHeadAttention

__all__ = [
    "Decoder",
    "DecoderLayer",
    "Encoder",
    "EncoderDecoder",
    "EncoderLayer",
    "FeedForward",
    "LayerNorm",
    "TransformerLM",
    "sinusoidal_positional_encoding",
]

Activation = Literal["relu", "gelu"]
_ACTIVATIONS = ("relu", "gelu")


# ---------------------------------------------------------------------------- argument checks
def _check_positive_int(value: object, name: str, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{where}: {name} must be a positive int, got {value!r}")


def _check_dropout(p: object, where: str) -> None:
    if isinstance(p, bool) or not isinstance(p, Real) or not 0.0 <= float(p) < 1.0:
        raise ValueError(f"{where}: dropout must be a number in [0, 1), got {p!r}")


def _check_eps(eps: object, where: str) -> None:
    if isinstance(eps, bool) or not isinstance(eps, Real) or not float(eps) > 0:
        raise ValueError(f"{where}: eps must be a positive number, got {eps!r}")


def _check_activation(name: object, where: str) -> None:
    if name not in _ACTIVATIONS:
        raise ValueError(f"{where}: unknown activation {name!r}: valid are 'relu', 'gelu'")


def _check_features(x: object, d_model: int, dtype: torch.dtype, where: str, *, rank3: bool = False) -> Tensor:
    """``x`` must be a float tensor ``(..., d_model)`` (``(B, L, d_model)`` if ``rank3``) of the module's dtype."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{where}: x must be a tensor, got {type(x).__name__}")
    if rank3 and x.dim() != 3:
        raise ValueError(f"{where}: x must be (batch, seq, d_model) = (B, L, {d_model}), got shape {tuple(x.shape)}")
    if x.dim() < 1 or x.shape[-1] != d_model:
        expected = f"(B, L, {d_model})" if rank3 else f"(..., {d_model})"
        raise ValueError(
            f"{where}: x has last dimension {x.shape[-1] if x.dim() else None}, the module's d_model is {d_model}: "
            f"expected shape {expected}, got {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise TypeError(
            f"{where}: x must be a floating-point tensor of features, got {x.dtype} (token ids go through an embedding first)"
        )
    if x.dtype != dtype and not torch.is_autocast_enabled(x.device.type):
        raise TypeError(
            f"{where}: x has dtype {x.dtype} but the module's parameters are {dtype}; "
            f"convert one of them (e.g. x.to({dtype}) or module.to({x.dtype}))"
        )
    return x


# ---------------------------------------------------------------------------- positions
def sinusoidal_positional_encoding(n_positions: int, d_model: int, base: float = 10000.0) -> Tensor:
    """The ``(n_positions, d_model)`` table ``PE[pos, 2i] = sin(pos / base^(2i/d))``, ``PE[pos, 2i+1] = cos(...)``.

    Sine on even dimensions, cosine on odd ones, frequency ``base^(-2i/d_model)`` for the pair ``i``
    (Vaswani et al. 2017); every entry is in ``[-1, 1]``. Computed in float64 and returned in the
    default dtype. An odd ``d_model`` is allowed (the last dimension is a sine). Chapter 7.
    """
    where = "sinusoidal_positional_encoding"
    _check_positive_int(n_positions, "n_positions", where)
    _check_positive_int(d_model, "d_model", where)
    if isinstance(base, bool) or not isinstance(base, Real) or not float(base) > 0:
        raise ValueError(f"{where}: base must be a positive number, got {base!r}")
    pos = torch.arange(n_positions, dtype=torch.float64)[:, None]  # (P, 1)
    two_i = torch.arange(0, d_model, 2, dtype=torch.float64)  # (ceil(d/2),) = 0, 2, 4, ...
    angle = pos / float(base) ** (two_i / d_model)  # (P, ceil(d/2))
    pe = torch.zeros(n_positions, d_model, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(angle)
    pe[:, 1::2] = torch.cos(angle[:, : d_model // 2])
    return pe.to(torch.get_default_dtype())


# ---------------------------------------------------------------------------- LayerNorm, FFN
class LayerNorm(nn.Module):
    """``gamma * (x - mean) / sqrt(var + eps) + beta`` over the last dimension (biased variance). Chapter 7.

    Parameter names (``weight``, ``bias``) match :class:`torch.nn.LayerNorm`, so state dicts load either
    way. Unlike :class:`torch.nn.LayerNorm` it normalises the last dimension only (an ``int`` ``d``, not a
    shape) and always has ``gamma`` and ``beta``. ``x`` must be ``(..., d)`` in the parameters' dtype.
    """

    def __init__(self, d: int, eps: float = 1e-5) -> None:
        super().__init__()
        _check_positive_int(d, "d", "LayerNorm")
        _check_eps(eps, "LayerNorm")
        self.d, self.eps = d, eps
        self.weight = nn.Parameter(torch.ones(d))  # gamma
        self.bias = nn.Parameter(torch.zeros(d))  # beta

    def forward(self, x: Tensor) -> Tensor:
        _check_features(x, self.d, self.weight.dtype, "LayerNorm")
        mean = x.mean(dim=-1, keepdim=True)  # (..., 1)
        var = x.var(dim=-1, keepdim=True, unbiased=False)  # (..., 1), divide by d
        return self.weight * (x - mean) / torch.sqrt(var + self.eps) + self.bias

    def extra_repr(self) -> str:
        return f"{self.d}, eps={self.eps}"


def _activation(name: str):
    if name == "relu":
        return F.relu
    if name == "gelu":
        return F.gelu  # exact (erf) GELU, what transformers' "gelu" (BertModel) computes
    raise ValueError(f"unknown activation {name!r}: valid are 'relu', 'gelu'")


class FeedForward(nn.Module):
    """Position-wise feed-forward network ``W2 act(W1 x + b1) + b2`` (dropout after ``act``). Chapter 7.

    ``activation`` is ``"relu"`` (``max(0, .)``, the original Transformer) or ``"gelu"``: the **exact**
    erf form ``x Phi(x)`` (Hendrycks and Gimpel 2016), which is what Hugging Face ``BertModel``
    computes for ``hidden_act="gelu"`` and documents as the form Google's BERT repository first
    used; that repository's current ``modeling.py`` and GPT-2 use the tanh approximation
    (``F.gelu(x, approximate="tanh")``), a different function. Layer names ``linear1``/``linear2`` match
    :class:`torch.nn.TransformerEncoderLayer`.
    """

    def __init__(self, d_model: int, d_ff: int, activation: Activation = "relu", dropout: float = 0.0) -> None:
        super().__init__()
        _check_positive_int(d_model, "d_model", "FeedForward")
        _check_positive_int(d_ff, "d_ff", "FeedForward")
        _check_activation(activation, "FeedForward")
        _check_dropout(dropout, "FeedForward")
        self.act = _activation(activation)
        self.activation = activation
        self.linear1 = nn.Linear(d_model, d_ff)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ff, d_model)

    def forward(self, x: Tensor) -> Tensor:
        _check_features(x, self.linear1.in_features, self.linear1.weight.dtype, "FeedForward")
        return self.linear2(self.dropout(self.act(self.linear1(x))))  # (..., d_ff) inside, (..., d_model) out


# ---------------------------------------------------------------------------- encoder
def _check_layer_args(
    where: str,
    d_model: int,
    n_heads: int,
    d_ff: int,
    dropout: float,
    activation: str,
    eps: float,
    norm_first: bool,
) -> None:
    """The argument checks an encoder or decoder layer shares (clear errors naming ``where``)."""
    for name, value in (("d_model", d_model), ("n_heads", n_heads), ("d_ff", d_ff)):
        _check_positive_int(value, name, where)
    if d_model % n_heads:
        raise ValueError(f"{where}: d_model ({d_model}) must be a multiple of n_heads ({n_heads})")
    _check_dropout(dropout, where)
    _check_activation(activation, where)
    _check_eps(eps, where)
    if not isinstance(norm_first, bool):
        raise TypeError(f"{where}: norm_first must be True or False, got {norm_first!r}")


def _check_same_layer(ours: nn.Module, layer: object, kind: type) -> None:
    """``layer`` must be a torch ``kind`` computing what ``ours`` computes (norm_first, activation, sizes, eps)."""
    if not isinstance(layer, kind):
        raise TypeError(f"load_from_torch needs an nn.{kind.__name__}, got {type(layer).__name__}")
    if layer.norm_first != ours.norm_first:
        raise ValueError(f"load_from_torch: norm_first differs (torch {layer.norm_first}, ours {ours.norm_first})")
    if _torch_activation_name(layer) != ours.ff.activation:
        raise ValueError(f"load_from_torch: activation differs (torch {layer.activation}, ours {ours.ff.activation})")
    if layer.linear1.weight.shape != ours.ff.linear1.weight.shape:
        raise ValueError(
            f"load_from_torch: d_ff/d_model differ (torch linear1 {tuple(layer.linear1.weight.shape)}, "
            f"ours {tuple(ours.ff.linear1.weight.shape)})"
        )
    if layer.norm1.eps != ours.norm1.eps:
        raise ValueError(f"load_from_torch: eps differs (torch {layer.norm1.eps}, ours {ours.norm1.eps})")


class EncoderLayer(nn.Module):
    """One Transformer encoder layer: self-attention and feed-forward, each with a residual and a LayerNorm.

    Post-norm (``norm_first=False``, the original Transformer and BERT)::

        x = norm1(x + dropout(self_attn(x)))
        x = norm2(x + dropout(ff(x)))

    Pre-norm (``norm_first=True``, GPT-2)::

        x = x + dropout(self_attn(norm1(x)))
        x = x + dropout(ff(norm2(x)))

    With ``dropout=0`` (or in eval mode) it computes what :class:`torch.nn.TransformerEncoderLayer`
    computes, forward and backward; copy that layer's weights with :meth:`load_from_torch`. The
    defaults are torch's (``dropout=0.1``, ``activation="relu"``, ``norm_first=False``, ``eps=1e-5``).
    Differences on purpose:

    * always **batch-first**, ``x`` of shape ``(B, L, d_model)``; torch's default is ``batch_first=False``
      (``(L, B, d_model)``);
    * the boolean ``mask`` follows :mod:`dlbook.nn.attention`: ``True`` = *may attend*, the opposite of
      torch's ``src_mask`` (``True`` = blocked); ``key_padding_mask`` ``(B, L)`` has torch's meaning
      (``True`` = padding); ``causal=True`` applies the causal mask by itself (torch's ``is_causal`` is
      only a hint that comes with a ``src_mask``);
    * ``need_weights=True`` returns ``(x, weights)`` with the per-head attention ``(B, H, L, L)``; torch's
      layer never returns its weights;
    * ``activation`` is the string ``"relu"`` or ``"gelu"`` (exact erf GELU), not any callable;
    * no fused fast path or nested tensors: the code is the equations.

    ``x`` must have ``d_model`` features and the parameters' dtype (clear errors otherwise). Chapter 7.
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
        _check_layer_args("EncoderLayer", d_model, n_heads, d_ff, dropout, activation, eps, norm_first)
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
        _check_features(x, self.d_model, self.norm1.weight.dtype, "EncoderLayer", rank3=True)
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
        Works whatever the torch layer's ``batch_first`` (it only changes the input layout).
        """
        _check_same_layer(self, layer, nn.TransformerEncoderLayer)
        self.self_attn.load_from_torch(layer.self_attn)
        for ours, theirs in (
            (self.ff.linear1, layer.linear1),
            (self.ff.linear2, layer.linear2),
            (self.norm1, layer.norm1),
            (self.norm2, layer.norm2),
        ):
            ours.weight.copy_(theirs.weight)
            ours.bias.copy_(theirs.bias)
        return self


class Encoder(nn.Module):
    """A stack of ``n_layers`` :class:`EncoderLayer` (plus a final LayerNorm when ``norm_first``). Chapter 7.

    ``forward(x, mask, key_padding_mask, causal, need_weights)``: with ``need_weights=True`` returns
    ``(x, [weights of each layer])``. Unlike :class:`torch.nn.TransformerEncoder`, which applies a final
    norm only when given one (``norm=``), a pre-norm stack here always ends with its own LayerNorm
    (``self.norm``), as GPT-2 does: a pre-norm residual stream is otherwise never normalised.
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
        _check_positive_int(n_layers, "n_layers", "Encoder")
        self.layers = nn.ModuleList(
            EncoderLayer(d_model, n_heads, d_ff, dropout, activation, norm_first, eps) for _ in range(n_layers)
        )
        # pre-norm leaves the residual stream unnormalised: normalise once at the end
        self.norm = LayerNorm(d_model, eps) if norm_first else nn.Identity()
        self.d_model = d_model

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        key_padding_mask: Tensor | None = None,
        causal: bool = False,
        need_weights: bool = False,
    ) -> Tensor | tuple[Tensor, list[Tensor]]:
        _check_features(x, self.d_model, self.layers[0].norm1.weight.dtype, "Encoder", rank3=True)
        all_weights = []
        for layer in self.layers:
            x, w = layer(x, mask=mask, key_padding_mask=key_padding_mask, causal=causal, need_weights=True)
            all_weights.append(w)
        x = self.norm(x)
        return (x, all_weights) if need_weights else x


# ---------------------------------------------------------------------------- language model
class TransformerLM(nn.Module):
    """A small GPT-style (decoder-only) language model: embeddings + causal pre-norm encoder stack + linear head.

    ``forward(idx)`` maps token ids ``(B, T)`` to next-token logits ``(B, T, vocab_size)``; position
    ``t`` sees only tokens ``<= t`` (causal mask), so right padding never leaks into real tokens.
    ``positions`` is ``"learned"`` (an embedding table, as GPT-2) or ``"sinusoidal"`` (the fixed table
    of :func:`sinusoidal_positional_encoding`); either table has ``max_len`` rows, so ``T <= max_len``.
    The stack is pre-norm with GELU (exact erf form) by default, unlike the post-norm ReLU defaults
    of :class:`EncoderLayer` and torch. ``idx`` must hold integer ids in ``[0, vocab_size)``. Chapter 7.
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
        where = "TransformerLM"
        for name, value in (("vocab_size", vocab_size), ("max_len", max_len), ("d_model", d_model)):
            _check_positive_int(value, name, where)
        if positions not in ("learned", "sinusoidal"):
            raise ValueError(f"{where}: positions must be 'learned' or 'sinusoidal', got {positions!r}")
        _check_dropout(dropout, where)
        self.vocab_size, self.max_len, self.positions = vocab_size, max_len, positions
        self.tok = nn.Embedding(vocab_size, d_model)
        if positions == "learned":
            self.pos = nn.Embedding(max_len, d_model)
        else:
            self.register_buffer("pe", sinusoidal_positional_encoding(max_len, d_model), persistent=False)
        self.drop = nn.Dropout(dropout)
        self.encoder = Encoder(n_layers, d_model, n_heads, d_ff, dropout, activation, norm_first=True)
        self.head = nn.Linear(d_model, vocab_size)
        self.d_model = d_model

    def _check_idx(self, idx: object) -> Tensor:
        where = "TransformerLM"
        if not isinstance(idx, Tensor):
            raise TypeError(f"{where}: idx must be a tensor of token ids, got {type(idx).__name__}")
        if idx.dim() != 2:
            raise ValueError(f"{where}: idx must be token ids of shape (batch, seq), got shape {tuple(idx.shape)}")
        if idx.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"{where}: idx must hold integer token ids (int64 or int32), got {idx.dtype}")
        T = idx.shape[1]
        if T == 0:
            raise ValueError(f"{where}: idx has no positions (shape {tuple(idx.shape)}); give at least one token")
        if T > self.max_len:
            raise ValueError(
                f"{where}: idx has {T} positions but the positional table has max_len = {self.max_len} rows; "
                f"shorten the sequence or build the model with a larger max_len"
            )
        if idx.numel():
            low, high = int(idx.min()), int(idx.max())
            if low < 0 or high >= self.vocab_size:
                raise ValueError(
                    f"{where}: idx holds token ids from {low} to {high}, outside the vocabulary "
                    f"[0, vocab_size = {self.vocab_size})"
                )
        return idx

    def forward(self, idx: Tensor) -> Tensor:
        idx = self._check_idx(idx)
        T = idx.shape[1]
        pos = torch.arange(T, device=idx.device)
        p = self.pos(pos) if self.positions == "learned" else self.pe[:T]  # (T, d_model)
        x = self.drop(self.tok(idx) + p)  # (B, T, d_model)
        x = self.encoder(x, causal=True)  # (B, T, d_model)
        return self.head(x)  # (B, T, vocab_size)


# ---------------------------------------------------------------------------- decoder (chapter 19)
def _torch_activation_name(layer: nn.Module) -> str | None:
    """``"relu"``/``"gelu"`` for the activation of a torch Transformer layer, ``None`` for any other."""
    act = getattr(layer, "activation", None)
    name = {F.relu: "relu", F.gelu: "gelu"}.get(act)  # type: ignore[arg-type]
    if name is None and isinstance(act, nn.ReLU):
        name = "relu"
    if name is None and isinstance(act, nn.GELU) and act.approximate == "none":
        name = "gelu"
    return name


def _check_memory(memory: object, d_model: int, batch: int, dtype: torch.dtype, where: str) -> Tensor:
    """``memory`` (the encoder's output) must be ``(B, S, d_model)`` with the decoder input's batch size."""
    mem = _check_features(memory, d_model, dtype, f"{where} (memory)", rank3=True)
    if mem.shape[0] != batch:
        raise ValueError(
            f"{where}: memory has batch size {mem.shape[0]} but x has {batch}: each target sequence "
            "needs the encoder output of its own source"
        )
    return mem


class DecoderLayer(nn.Module):
    """One Transformer decoder layer: masked self-attention, cross-attention, feed-forward. Chapter 19.

    The decoder input ``x`` ``(B, T, d_model)`` first attends to itself under the causal mask (position
    ``t`` sees positions ``<= t``), then **cross-attends** to ``memory`` ``(B, S, d_model)``, the
    encoder's output: queries from the decoder, keys and values from the source. Post-norm
    (``norm_first=False``, the original Transformer)::

        x = norm1(x + dropout(self_attn(x, x, x, causal)))
        x = norm2(x + dropout(cross_attn(x, memory, memory)))
        x = norm3(x + dropout(ff(x)))

    Pre-norm (``norm_first=True``) normalises the input of each sub-layer instead.

    With ``dropout=0`` (or in eval mode) it computes what :class:`torch.nn.TransformerDecoderLayer`
    computes, forward and backward, given ``tgt_mask`` = the causal mask; copy that layer's weights with
    :meth:`load_from_torch`. Differences on purpose, as for :class:`EncoderLayer`: always batch-first;
    ``causal=True`` by default (torch applies no mask unless given ``tgt_mask``); a boolean ``mask`` or
    ``memory_mask`` means *may attend* (torch's means *blocked*); ``key_padding_mask`` ``(B, T)`` and
    ``memory_key_padding_mask`` ``(B, S)`` have torch's meaning (``True`` = padding);
    ``need_weights=True`` returns ``(x, self_weights, cross_weights)``, the per-head weights
    ``(B, H, T, T)`` and ``(B, H, T, S)``. The cross-attention module is called ``cross_attn`` (torch:
    ``multihead_attn``).
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
        _check_layer_args("DecoderLayer", d_model, n_heads, d_ff, dropout, activation, eps, norm_first)
        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout=dropout)
        self.cross_attn = MultiHeadAttention(d_model, n_heads, dropout=dropout)
        self.ff = FeedForward(d_model, d_ff, activation, dropout)
        self.norm1 = LayerNorm(d_model, eps)
        self.norm2 = LayerNorm(d_model, eps)
        self.norm3 = LayerNorm(d_model, eps)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)
        self.norm_first = norm_first
        self.d_model = d_model

    def _sa(self, x: Tensor, mask, key_padding_mask, causal) -> tuple[Tensor, Tensor | None]:
        out, w = self.self_attn(x, x, x, mask=mask, key_padding_mask=key_padding_mask, causal=causal, need_weights=True)
        return self.dropout1(out), w

    def _ca(self, x: Tensor, memory: Tensor, memory_mask, memory_key_padding_mask) -> tuple[Tensor, Tensor | None]:
        out, w = self.cross_attn(
            x, memory, memory, mask=memory_mask, key_padding_mask=memory_key_padding_mask, need_weights=True
        )
        return self.dropout2(out), w

    def forward(
        self,
        x: Tensor,
        memory: Tensor,
        mask: Tensor | None = None,
        key_padding_mask: Tensor | None = None,
        memory_mask: Tensor | None = None,
        memory_key_padding_mask: Tensor | None = None,
        causal: bool = True,
        need_weights: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor, Tensor]:
        where = "DecoderLayer"
        _check_features(x, self.d_model, self.norm1.weight.dtype, where, rank3=True)
        _check_memory(memory, self.d_model, x.shape[0], self.norm1.weight.dtype, where)
        if not isinstance(causal, bool):
            raise TypeError(f"{where}: causal must be True or False, got {causal!r}")
        if self.norm_first:
            a, w_self = self._sa(self.norm1(x), mask, key_padding_mask, causal)
            x = x + a
            c, w_cross = self._ca(self.norm2(x), memory, memory_mask, memory_key_padding_mask)
            x = x + c
            x = x + self.dropout3(self.ff(self.norm3(x)))
        else:
            a, w_self = self._sa(x, mask, key_padding_mask, causal)
            x = self.norm1(x + a)
            c, w_cross = self._ca(x, memory, memory_mask, memory_key_padding_mask)
            x = self.norm2(x + c)
            x = self.norm3(x + self.dropout3(self.ff(x)))
        return (x, w_self, w_cross) if need_weights else x  # type: ignore[return-value]

    @torch.no_grad()
    def load_from_torch(self, layer: nn.TransformerDecoderLayer) -> DecoderLayer:
        """Copy the weights of a :class:`torch.nn.TransformerDecoderLayer`; returns ``self``.

        Checks that the two layers compute the same thing (sizes, ``norm_first``, activation, eps).
        """
        _check_same_layer(self, layer, nn.TransformerDecoderLayer)
        self.self_attn.load_from_torch(layer.self_attn)
        self.cross_attn.load_from_torch(layer.multihead_attn)
        for ours, theirs in (
            (self.ff.linear1, layer.linear1),
            (self.ff.linear2, layer.linear2),
            (self.norm1, layer.norm1),
            (self.norm2, layer.norm2),
            (self.norm3, layer.norm3),
        ):
            ours.weight.copy_(theirs.weight)
            ours.bias.copy_(theirs.bias)
        return self


class Decoder(nn.Module):
    """A stack of ``n_layers`` :class:`DecoderLayer` (plus a final LayerNorm when ``norm_first``). Chapter 19.

    Every layer cross-attends to the same ``memory`` (the encoder's last output).
    ``forward(x, memory, ...)`` returns ``x`` or, with ``need_weights=True``, ``(x, self_weights,
    cross_weights)``, one entry per layer. As in :class:`Encoder`, a pre-norm stack ends with its own
    LayerNorm; :class:`torch.nn.TransformerDecoder` applies one only when given ``norm=``
    (:class:`torch.nn.Transformer` always gives one, in both arrangements).
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
        _check_positive_int(n_layers, "n_layers", "Decoder")
        self.layers = nn.ModuleList(
            DecoderLayer(d_model, n_heads, d_ff, dropout, activation, norm_first, eps) for _ in range(n_layers)
        )
        self.norm = LayerNorm(d_model, eps) if norm_first else nn.Identity()
        self.d_model = d_model

    def forward(
        self,
        x: Tensor,
        memory: Tensor,
        mask: Tensor | None = None,
        key_padding_mask: Tensor | None = None,
        memory_mask: Tensor | None = None,
        memory_key_padding_mask: Tensor | None = None,
        causal: bool = True,
        need_weights: bool = False,
    ) -> Tensor | tuple[Tensor, list[Tensor], list[Tensor]]:
        where = "Decoder"
        _check_features(x, self.d_model, self.layers[0].norm1.weight.dtype, where, rank3=True)
        _check_memory(memory, self.d_model, x.shape[0], self.layers[0].norm1.weight.dtype, where)
        self_ws, cross_ws = [], []
        for layer in self.layers:
            x, w_self, w_cross = layer(
                x,
                memory,
                mask=mask,
                key_padding_mask=key_padding_mask,
                memory_mask=memory_mask,
                memory_key_padding_mask=memory_key_padding_mask,
                causal=causal,
                need_weights=True,
            )
            self_ws.append(w_self)
            cross_ws.append(w_cross)
        x = self.norm(x)
        return (x, self_ws, cross_ws) if need_weights else x


class EncoderDecoder(nn.Module):
    """A sequence-to-sequence Transformer: embeddings, :class:`Encoder`, :class:`Decoder`, linear head. Chapter 19.

    ``forward(src, tgt_in)`` maps source ids ``(B, S)`` and decoder input ids ``(B, T)`` (the target
    shifted right: ``BOS y_1 ... y_{T-1}``) to next-token logits ``(B, T, tgt_vocab)``; logits at
    position ``t`` depend on the whole source and on ``tgt_in[:, :t+1]`` only (causal mask). Source
    positions holding ``pad_id`` are masked out of every attention (``src_key_padding_mask``); right
    padding of ``tgt_in`` needs no mask (the causal mask keeps it away from real positions).
    Token embeddings are initialised with standard deviation ``d_model**-0.5`` and scaled by
    ``sqrt(d_model)`` (Vaswani et al. 2017), so they start at the size of the fixed sinusoidal
    positions they are added to (chapter 7 measured what a mismatch costs); both id sequences must
    be at most ``max_len`` long. The body is pre-norm by default (the arrangement chapter 19
    trains); :meth:`load_body_from_torch` copies the weights of a pre-norm
    :class:`torch.nn.Transformer` into it.

    :meth:`encode` and :meth:`decode` split the forward pass for decoding one token at a time
    (:mod:`dlbook.seq2seq`): the source is encoded once, and each step reruns the decoder on the prefix.
    """

    def __init__(
        self,
        src_vocab: int,
        tgt_vocab: int,
        d_model: int = 64,
        n_heads: int = 4,
        d_ff: int = 256,
        n_enc: int = 2,
        n_dec: int = 2,
        max_len: int = 64,
        dropout: float = 0.0,
        activation: Activation = "relu",
        norm_first: bool = True,
        pad_id: int = 0,
    ) -> None:
        super().__init__()
        where = "EncoderDecoder"
        for name, value in (("src_vocab", src_vocab), ("tgt_vocab", tgt_vocab), ("d_model", d_model), ("max_len", max_len)):
            _check_positive_int(value, name, where)
        if isinstance(pad_id, bool) or not isinstance(pad_id, int) or not 0 <= pad_id < min(src_vocab, tgt_vocab):
            raise ValueError(f"{where}: pad_id must be an id in both vocabularies, got {pad_id!r}")
        _check_dropout(dropout, where)
        self.src_vocab, self.tgt_vocab, self.max_len, self.pad_id = src_vocab, tgt_vocab, max_len, pad_id
        self.d_model = d_model
        self.src_tok = nn.Embedding(src_vocab, d_model)
        self.tgt_tok = nn.Embedding(tgt_vocab, d_model)
        for table in (self.src_tok, self.tgt_tok):  # std d^-1/2: after the sqrt(d) scale, the size of the positions
            nn.init.normal_(table.weight, std=d_model**-0.5)
        self.register_buffer("pe", sinusoidal_positional_encoding(max_len, d_model), persistent=False)
        self.drop = nn.Dropout(dropout)
        self.encoder = Encoder(n_enc, d_model, n_heads, d_ff, dropout, activation, norm_first)
        self.decoder = Decoder(n_dec, d_model, n_heads, d_ff, dropout, activation, norm_first)
        self.head = nn.Linear(d_model, tgt_vocab)

    def _check_ids(self, ids: object, name: str, vocab: int) -> Tensor:
        where = "EncoderDecoder"
        if not isinstance(ids, Tensor):
            raise TypeError(f"{where}: {name} must be a tensor of token ids, got {type(ids).__name__}")
        if ids.dim() != 2:
            raise ValueError(f"{where}: {name} must be token ids of shape (batch, seq), got shape {tuple(ids.shape)}")
        if ids.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"{where}: {name} must hold integer token ids (int64 or int32), got {ids.dtype}")
        if ids.shape[1] == 0:
            raise ValueError(f"{where}: {name} has no positions (shape {tuple(ids.shape)})")
        if ids.shape[1] > self.max_len:
            raise ValueError(
                f"{where}: {name} has {ids.shape[1]} positions but the positional table has max_len = "
                f"{self.max_len} rows; shorten the sequence or build the model with a larger max_len"
            )
        if ids.numel():
            low, high = int(ids.min()), int(ids.max())
            if low < 0 or high >= vocab:
                raise ValueError(f"{where}: {name} holds token ids from {low} to {high}, outside [0, {vocab})")
        return ids

    def _embed(self, ids: Tensor, table: nn.Embedding) -> Tensor:
        return self.drop(table(ids) * math.sqrt(self.d_model) + self.pe[: ids.shape[1]])  # (B, L, d_model)

    def encode(self, src: Tensor, need_weights: bool = False):
        """``(memory, src_key_padding_mask)``: the encoder output ``(B, S, d_model)`` and ``src == pad_id``.

        With ``need_weights=True`` also the encoder's per-layer self-attention weights.
        """
        src = self._check_ids(src, "src", self.src_vocab)
        pad = src == self.pad_id  # (B, S), True = padding
        memory, ws = self.encoder(self._embed(src, self.src_tok), key_padding_mask=pad, need_weights=True)
        return (memory, pad, ws) if need_weights else (memory, pad)

    def decode(self, tgt_in: Tensor, memory: Tensor, src_key_padding_mask: Tensor | None, need_weights: bool = False):
        """Logits ``(B, T, tgt_vocab)`` for decoder inputs ``tgt_in`` ``(B, T)`` given the encoded source.

        With ``need_weights=True`` returns ``(logits, cross_weights)``: one ``(B, H, T, S)`` tensor per
        decoder layer, the attention each target position pays to each source position.
        """
        tgt_in = self._check_ids(tgt_in, "tgt_in", self.tgt_vocab)
        y, _, cross = self.decoder(
            self._embed(tgt_in, self.tgt_tok),
            memory,
            memory_key_padding_mask=src_key_padding_mask,
            causal=True,
            need_weights=True,
        )
        logits = self.head(y)  # (B, T, tgt_vocab)
        return (logits, cross) if need_weights else logits

    def forward(self, src: Tensor, tgt_in: Tensor) -> Tensor:
        memory, pad = self.encode(src)
        tgt_in = self._check_ids(tgt_in, "tgt_in", self.tgt_vocab)
        if tgt_in.shape[0] != src.shape[0]:
            raise ValueError(f"EncoderDecoder: src has batch size {src.shape[0]} but tgt_in has {tgt_in.shape[0]}")
        return self.decode(tgt_in, memory, pad)

    @torch.no_grad()
    def load_body_from_torch(self, transformer: nn.Transformer) -> EncoderDecoder:
        """Copy the encoder and decoder stacks of a pre-norm :class:`torch.nn.Transformer`; returns ``self``.

        ``nn.Transformer`` has no embeddings or head, so only :attr:`encoder` and :attr:`decoder` are
        loaded. It ends each stack with a LayerNorm in *both* arrangements, ours only in pre-norm, so
        the two compute the same function only with ``norm_first=True`` (a post-norm model is refused).
        """
        if not isinstance(transformer, nn.Transformer):
            raise TypeError(f"load_body_from_torch needs an nn.Transformer, got {type(transformer).__name__}")
        if not self.encoder.layers[0].norm_first:
            raise ValueError(
                "load_body_from_torch: nn.Transformer ends each stack with a LayerNorm even when "
                "post-norm; only a norm_first=True EncoderDecoder computes the same function"
            )
        t_enc, t_dec = transformer.encoder, transformer.decoder
        if len(t_enc.layers) != len(self.encoder.layers) or len(t_dec.layers) != len(self.decoder.layers):
            raise ValueError(
                f"load_body_from_torch: layer counts differ (torch {len(t_enc.layers)} + {len(t_dec.layers)}, "
                f"ours {len(self.encoder.layers)} + {len(self.decoder.layers)})"
            )
        if not isinstance(t_enc.norm, nn.LayerNorm) or not isinstance(t_dec.norm, nn.LayerNorm):
            raise ValueError("load_body_from_torch: the torch stacks need their final LayerNorms (norm=...)")
        for ours, theirs in zip(self.encoder.layers, t_enc.layers, strict=True):
            ours.load_from_torch(theirs)
        for ours, theirs in zip(self.decoder.layers, t_dec.layers, strict=True):
            ours.load_from_torch(theirs)
        for ours, theirs in ((self.encoder.norm, t_enc.norm), (self.decoder.norm, t_dec.norm)):
            ours.weight.copy_(theirs.weight)
            ours.bias.copy_(theirs.bias)
        return self
