"""A Llama-architecture decoder (SmolLM2) rebuilt from its parts, as taught in chapter 17.

Chapter 17 ("A language model inside out") derives each new part, builds it in cells and checks it
against Hugging Face's ``LlamaForCausalLM``; this module is the packaged version that chapters 18
and 20 import:

* :class:`RMSNorm`: ``x / sqrt(mean(x^2) + eps) * weight`` (Zhang and Sennrich, 2019), computed in
  float32 as Hugging Face's ``LlamaRMSNorm`` does;
* rotary position embeddings (Su et al., 2024): :func:`rope_cos_sin` and :func:`apply_rope` rotate
  pairs of dimensions of queries and keys by angles proportional to the position. The pairs are
  ``(i, i + head_dim / 2)`` ("half-split"), Hugging Face's convention, not the paper's adjacent
  ``(2i, 2i + 1)``; the two differ by a fixed permutation of the head dimensions (chapter 17 shows it);
* :class:`SwiGLU`: the gated feed-forward ``down(silu(gate(x)) * up(x))`` (Shazeer, 2020);
* :class:`GroupedQueryAttention`: ``n_heads`` query heads share ``n_kv_heads`` key/value heads
  (Ainslie et al., 2023), causal, on top of chapter 6's :func:`~dlbook.nn.attention.scaled_dot_product_attention`;
* :class:`DecoderBlock` (pre-norm, two residual branches) and :class:`LlamaLM` (token embedding,
  blocks, final norm, output projection tied to the embedding), with :meth:`LlamaLM.from_hf` to load
  real weights and a :class:`KVCache` for generation (chapter 18 measures what the cache saves).

There is no padding mask. Right-padded batches are exact at the real positions (the causal mask
keeps every real token from seeing the padding after it; chapter 17 checks its logits that way),
and the logits at padded positions are to be ignored. Left padding would need position ids that
skip the padding and a mask on the padded keys, which this module does not take.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import causal_mask, scaled_dot_product_attention

__all__ = [
    "DecoderBlock",
    "GroupedQueryAttention",
    "KVCache",
    "LlamaLM",
    "RMSNorm",
    "SwiGLU",
    "apply_rope",
    "repeat_kv",
    "rope_cos_sin",
    "rotate_half",
    "tiny_config",
]


# ---------------------------------------------------------------------------- argument checks
def _check_positive_int(value: object, name: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{where}: {name} must be a positive int, got {value!r}")
    return value


def _check_positive_float(value: object, name: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{where}: {name} must be a positive number, got {value!r}")
    return float(value)


def _check_float_tensor(x: object, name: str, where: str, *, last: int | None = None, rank: int | None = None) -> Tensor:
    """``x`` must be a floating-point tensor, with ``rank`` dimensions and size ``last`` in the last one."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{where}: {name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{where}: {name} must be a floating-point tensor, got {x.dtype}")
    if rank is not None and x.dim() != rank:
        raise ValueError(f"{where}: {name} must have {rank} dimensions, got shape {tuple(x.shape)}")
    if last is not None and (x.dim() == 0 or x.shape[-1] != last):
        raise ValueError(f"{where}: {name} must have size {last} in its last dimension, got shape {tuple(x.shape)}")
    return x


def _check_ids(ids: object, vocab_size: int, where: str) -> Tensor:
    """``ids`` must be a ``(batch, seq)`` integer tensor with every id in ``[0, vocab_size)``."""
    if not isinstance(ids, Tensor):
        hint = " (call the tokenizer with return_tensors='pt')" if isinstance(ids, (list, tuple)) else ""
        raise TypeError(f"{where}: ids must be a torch.Tensor of token ids, got {type(ids).__name__}{hint}")
    if ids.dim() != 2:
        raise ValueError(f"{where}: ids must be (batch, seq), got shape {tuple(ids.shape)}")
    if ids.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"{where}: ids must hold integer ids (int64 or int32), got {ids.dtype}")
    if ids.shape[1] == 0:
        raise ValueError(f"{where}: ids must hold at least one token per sequence, got shape {tuple(ids.shape)}")
    low, high = int(ids.min()), int(ids.max())
    if low < 0 or high >= vocab_size:
        raise ValueError(f"{where}: ids holds ids from {low} to {high}, outside [0, vocab_size = {vocab_size})")
    return ids


# ---------------------------------------------------------------------------- RMSNorm
class RMSNorm(nn.Module):
    """Root-mean-square normalisation: ``x / sqrt(mean(x^2) + eps) * weight``. Chapter 17.

    Unlike LayerNorm there is no mean subtracted and no bias (Zhang and Sennrich, 2019). For
    half-precision inputs the statistics are computed in float32 and the result cast back before
    the weight multiplies it, as Hugging Face's ``LlamaRMSNorm`` does, so they give the same
    numbers; float64 inputs stay in float64 (the reference rounds them to float32).
    """

    def __init__(self, d: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.d = _check_positive_int(d, "d", "RMSNorm")
        self.eps = _check_positive_float(eps, "eps", "RMSNorm")
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: Tensor) -> Tensor:
        _check_float_tensor(x, "x", "RMSNorm", last=self.d)
        x32 = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x  # float64 stays float64
        inv_rms = torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + self.eps)  # (..., 1)
        return self.weight * (x32 * inv_rms).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.d}, eps={self.eps:g}"


# ---------------------------------------------------------------------------- rotary embeddings
def rope_cos_sin(
    positions: Tensor, head_dim: int, base: float = 10_000.0, dtype: torch.dtype = torch.float32
) -> tuple[Tensor, Tensor]:
    """Cosines and sines of the rotary angles, each ``(*positions.shape, head_dim)``. Chapter 17.

    Pair ``i`` (of ``head_dim / 2``) turns by ``position * base ** (-2i / head_dim)`` radians: fast
    for the first pairs, slow for the last. Both halves of the last axis repeat the same angles,
    because pair ``i`` is made of dimensions ``i`` and ``i + head_dim / 2`` (see :func:`apply_rope`).
    Computed in float32 and cast to ``dtype``, like Hugging Face's ``LlamaRotaryEmbedding``.
    """
    where = "rope_cos_sin"
    if not isinstance(positions, Tensor) or positions.is_floating_point() or positions.is_complex():
        raise TypeError(f"{where}: positions must be an integer tensor, got {positions!r:.60}")
    _check_positive_int(head_dim, "head_dim", where)
    if head_dim % 2:
        raise ValueError(f"{where}: head_dim must be even (dimensions rotate in pairs), got {head_dim}")
    _check_positive_float(base, "base", where)
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float, device=positions.device) / head_dim))
    angles = positions[..., None].float() * inv_freq  # (..., head_dim / 2)
    angles = torch.cat((angles, angles), dim=-1)  # (..., head_dim)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def rotate_half(x: Tensor) -> Tensor:
    """``(x1, x2) -> (-x2, x1)`` on the two halves of the last axis: a quarter turn of every pair."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate each pair ``(x[i], x[i + d/2])`` of ``x`` by its angle: ``x cos + rotate_half(x) sin``. Chapter 17.

    ``x``: ``(batch, heads, seq, head_dim)``; ``cos``, ``sin``: ``(seq, head_dim)`` or
    ``(batch, seq, head_dim)`` from :func:`rope_cos_sin`. A rotation keeps lengths, and the dot
    product of a query rotated by angle ``m * theta`` with a key rotated by ``n * theta`` depends
    on ``m - n`` only: this is how the attention score learns relative position.
    """
    where = "apply_rope"
    _check_float_tensor(x, "x", where, rank=4)
    for name, t in (("cos", cos), ("sin", sin)):
        _check_float_tensor(t, name, where, last=x.shape[-1])
        if t.dim() not in (2, 3) or t.shape[-2] != x.shape[-2]:
            raise ValueError(
                f"{where}: {name} must be (seq, head_dim) or (batch, seq, head_dim) with seq = "
                f"{x.shape[-2]}, got shape {tuple(t.shape)}"
            )
    if x.shape[-1] % 2:
        raise ValueError(f"{where}: head_dim must be even, got {x.shape[-1]}")
    if cos.dim() == 3:
        cos, sin = cos[:, None], sin[:, None]  # (batch, 1, seq, head_dim): shared by the heads
    return x * cos + rotate_half(x) * sin


# ---------------------------------------------------------------------------- SwiGLU
class SwiGLU(nn.Module):
    """The gated feed-forward of Llama: ``down(silu(gate(x)) * up(x))``, no biases. Chapter 17.

    Three matrices instead of two: ``gate`` and ``up`` map ``d_model -> d_ff``, ``down`` maps back
    (Shazeer, 2020). Names follow Hugging Face's ``LlamaMLP`` so weights load by name.
    """

    def __init__(self, d_model: int, d_ff: int) -> None:
        super().__init__()
        self.d_model = _check_positive_int(d_model, "d_model", "SwiGLU")
        _check_positive_int(d_ff, "d_ff", "SwiGLU")
        self.gate_proj = nn.Linear(d_model, d_ff, bias=False)
        self.up_proj = nn.Linear(d_model, d_ff, bias=False)
        self.down_proj = nn.Linear(d_ff, d_model, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        _check_float_tensor(x, "x", "SwiGLU", last=self.d_model)
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))  # (..., d_model)


# ---------------------------------------------------------------------------- attention
def repeat_kv(x: Tensor, n_rep: int) -> Tensor:
    """``(batch, kv_heads, seq, d) -> (batch, kv_heads * n_rep, seq, d)``: query head ``h`` reads kv head ``h // n_rep``."""
    _check_float_tensor(x, "x", "repeat_kv", rank=4)
    _check_positive_int(n_rep, "n_rep", "repeat_kv")
    return x if n_rep == 1 else x.repeat_interleave(n_rep, dim=1)


class GroupedQueryAttention(nn.Module):
    """Causal self-attention in which groups of query heads share a key/value head. Chapter 17.

    ``n_heads`` query heads, ``n_kv_heads`` key and value heads (``n_heads`` must be a multiple);
    each group of ``n_heads / n_kv_heads`` query heads reads the same keys and values (Ainslie et
    al., 2023), which shrinks the key/value projections and the KV cache by that factor. Rotary
    embeddings are applied to queries and keys; the attention itself is chapter 6's
    :func:`~dlbook.nn.attention.scaled_dot_product_attention` with a causal mask aligned to the
    bottom right, so new queries after ``past`` cached keys see every cached key.
    """

    def __init__(self, d_model: int, n_heads: int, n_kv_heads: int, head_dim: int | None = None) -> None:
        super().__init__()
        where = "GroupedQueryAttention"
        self.d_model = _check_positive_int(d_model, "d_model", where)
        self.n_heads = _check_positive_int(n_heads, "n_heads", where)
        self.n_kv_heads = _check_positive_int(n_kv_heads, "n_kv_heads", where)
        if n_heads % n_kv_heads:
            raise ValueError(f"{where}: n_heads ({n_heads}) must be a multiple of n_kv_heads ({n_kv_heads})")
        if head_dim is None:
            if d_model % n_heads:
                raise ValueError(f"{where}: d_model ({d_model}) must be a multiple of n_heads ({n_heads}), or give head_dim")
            head_dim = d_model // n_heads
        self.head_dim = _check_positive_int(head_dim, "head_dim", where)
        self.q_proj = nn.Linear(d_model, n_heads * head_dim, bias=False)
        self.k_proj = nn.Linear(d_model, n_kv_heads * head_dim, bias=False)
        self.v_proj = nn.Linear(d_model, n_kv_heads * head_dim, bias=False)
        self.o_proj = nn.Linear(n_heads * head_dim, d_model, bias=False)

    def forward(
        self, x: Tensor, cos: Tensor, sin: Tensor, past: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """``x`` ``(batch, seq, d_model)`` -> ``(out (batch, seq, d_model), (keys, values))``.

        ``cos``/``sin`` are the rotary tables of the ``seq`` new positions; ``past`` the cached
        ``(keys, values)``, each ``(batch, n_kv_heads, past_len, head_dim)``, keys already rotated.
        The returned keys and values include ``past``: the cache for the next call.
        """
        where = "GroupedQueryAttention"
        _check_float_tensor(x, "x", where, last=self.d_model, rank=3)
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, hd)
        k = self.k_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, KV, T, hd)
        v = self.v_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, KV, T, hd)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if past is not None:
            past_k, past_v = past
            expected = (B, self.n_kv_heads, past_k.shape[2], self.head_dim)
            if tuple(past_k.shape) != expected or past_v.shape != past_k.shape:
                raise ValueError(
                    f"{where}: cached keys/values must be {expected}, got {tuple(past_k.shape)} and {tuple(past_v.shape)}"
                )
            k, v = torch.cat((past_k, k), dim=2), torch.cat((past_v, v), dim=2)  # (B, KV, L, hd)
        n_rep = self.n_heads // self.n_kv_heads
        mask = causal_mask(T, x.device, n_keys=k.shape[2], align="bottom-right")  # (T, L)
        out, _ = scaled_dot_product_attention(q, repeat_kv(k, n_rep), repeat_kv(v, n_rep), mask=mask)
        out = out.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim)  # (B, T, H * hd)
        return self.o_proj(out), (k, v)

    def extra_repr(self) -> str:
        return f"n_heads={self.n_heads}, n_kv_heads={self.n_kv_heads}, head_dim={self.head_dim}"


# ---------------------------------------------------------------------------- block and model
class DecoderBlock(nn.Module):
    """``h = x + attn(norm(x))``, then ``h + mlp(norm(h))``: a pre-norm Llama block. Chapter 17.

    Names follow Hugging Face's ``LlamaDecoderLayer`` (``self_attn``, ``mlp``, ``input_layernorm``,
    ``post_attention_layernorm``) so a layer's weights load by name.
    """

    def __init__(
        self, d_model: int, n_heads: int, n_kv_heads: int, d_ff: int, head_dim: int | None = None, eps: float = 1e-6
    ) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(d_model, eps)
        self.self_attn = GroupedQueryAttention(d_model, n_heads, n_kv_heads, head_dim)
        self.post_attention_layernorm = RMSNorm(d_model, eps)
        self.mlp = SwiGLU(d_model, d_ff)

    def forward(
        self, x: Tensor, cos: Tensor, sin: Tensor, past: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """``x`` ``(batch, seq, d_model)`` -> ``(x', (keys, values))``; see :class:`GroupedQueryAttention`."""
        attended, kv = self.self_attn(self.input_layernorm(x), cos, sin, past)
        h = x + attended
        return h + self.mlp(self.post_attention_layernorm(h)), kv


@dataclass
class KVCache:
    """Keys (after rotation) and values of every layer for the tokens seen so far. Chapter 17.

    ``keys[i]`` and ``values[i]`` are ``(batch, n_kv_heads, length, head_dim)`` for layer ``i``.
    :meth:`LlamaLM.forward` appends the new tokens' keys and values in place and returns the
    same object; the next call's positions start at :attr:`length`. Chapter 18 derives what the
    cache saves and measures it.
    """

    keys: list[Tensor] = field(default_factory=list)
    values: list[Tensor] = field(default_factory=list)

    @property
    def length(self) -> int:
        """How many positions the cache holds (0 when empty)."""
        return int(self.keys[0].shape[2]) if self.keys else 0

    def nbytes(self) -> int:
        """Bytes held by the cached keys and values, all layers together."""
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values))

    def __len__(self) -> int:
        return self.length


def _rope_base(config: Any) -> float:
    params = getattr(config, "rope_parameters", None) or {}
    kind = params.get("rope_type", "default")
    if kind != "default":
        raise ValueError(f"LlamaLM supports rope_type 'default' only, got {kind!r}")
    base = params.get("rope_theta", getattr(config, "rope_theta", None))
    if base is None:
        raise ValueError("LlamaLM: the config gives no rope_theta")
    return float(base)


class LlamaLM(nn.Module):
    """A Llama-architecture causal language model from the parts above. Chapter 17.

    Token embedding -> ``n_layers`` :class:`DecoderBlock` -> final :class:`RMSNorm` -> logits,
    the output projection being the embedding matrix itself when ``tie_embeddings`` (SmolLM2) or
    its own ``lm_head`` otherwise. :meth:`from_hf` copies a ``LlamaForCausalLM``'s weights in;
    chapter 17 checks the logits against it.
    """

    def __init__(
        self,
        vocab_size: int,
        d_model: int,
        n_layers: int,
        n_heads: int,
        n_kv_heads: int,
        d_ff: int,
        head_dim: int | None = None,
        max_positions: int = 2048,
        rope_base: float = 10_000.0,
        eps: float = 1e-6,
        tie_embeddings: bool = True,
    ) -> None:
        super().__init__()
        where = "LlamaLM"
        for name, value in (("vocab_size", vocab_size), ("n_layers", n_layers), ("max_positions", max_positions)):
            _check_positive_int(value, name, where)
        _check_positive_float(rope_base, "rope_base", where)
        self.vocab_size, self.max_positions, self.rope_base = vocab_size, max_positions, float(rope_base)
        self.embed_tokens = nn.Embedding(vocab_size, d_model)
        self.layers = nn.ModuleList(DecoderBlock(d_model, n_heads, n_kv_heads, d_ff, head_dim, eps) for _ in range(n_layers))
        self.norm = RMSNorm(d_model, eps)
        self.tie_embeddings = bool(tie_embeddings)
        self.lm_head = None if self.tie_embeddings else nn.Linear(d_model, vocab_size, bias=False)
        self.head_dim = self.layers[0].self_attn.head_dim

    @property
    def output_weight(self) -> Tensor:
        """The ``(vocab_size, d_model)`` matrix that turns final states into logits."""
        return self.embed_tokens.weight if self.lm_head is None else self.lm_head.weight

    def forward(self, ids: Tensor, cache: KVCache | None = None, *, use_cache: bool = True) -> tuple[Tensor, KVCache | None]:
        """``ids`` ``(batch, seq)`` -> ``(logits (batch, seq, vocab_size), cache)``.

        With ``cache`` (from an earlier call on the same sequences) the ids are the *next* tokens:
        their positions start at ``cache.length``, they attend to every cached position, and the
        cache is extended in place. ``use_cache=False`` keeps no cache and returns ``None`` for it.
        Raises on ids that are not ``(batch, seq)`` integers in ``[0, vocab_size)``, and when the
        positions would pass ``max_positions``.
        """
        where = "LlamaLM.forward"
        ids = _check_ids(ids, self.vocab_size, where)
        if ids.device != self.embed_tokens.weight.device:
            raise ValueError(f"{where}: ids are on {ids.device} but the model is on {self.embed_tokens.weight.device}")
        if cache is not None and not isinstance(cache, KVCache):
            raise TypeError(f"{where}: cache must be a KVCache or None, got {type(cache).__name__}")
        if cache is not None and not use_cache:
            raise ValueError(f"{where}: a cache was given with use_cache=False")
        past = cache.length if cache is not None else 0
        if cache is not None and cache.keys:
            if len(cache.keys) != len(self.layers) or len(cache.values) != len(self.layers):
                raise ValueError(f"{where}: the cache holds {len(cache.keys)} layers, the model has {len(self.layers)}")
            if cache.keys[0].shape[0] != ids.shape[0]:
                raise ValueError(f"{where}: the cache holds {cache.keys[0].shape[0]} sequences, ids has {ids.shape[0]}")
        B, T = ids.shape
        if past + T > self.max_positions:
            raise ValueError(
                f"{where}: positions {past}..{past + T - 1} pass max_positions = {self.max_positions} "
                f"({past} cached + {T} new tokens)"
            )
        positions = torch.arange(past, past + T, device=ids.device)  # (T,)
        h = self.embed_tokens(ids)  # (B, T, d_model)
        cos, sin = rope_cos_sin(positions, self.head_dim, self.rope_base, dtype=h.dtype)  # (T, head_dim)
        if use_cache and cache is None:
            cache = KVCache()
        filled = cache is not None and bool(cache.keys)
        for i, layer in enumerate(self.layers):
            layer_past = (cache.keys[i], cache.values[i]) if filled else None
            h, (k, v) = layer(h, cos, sin, layer_past)
            if filled:
                cache.keys[i], cache.values[i] = k, v
            elif cache is not None:
                cache.keys.append(k)
                cache.values.append(v)
        h = self.norm(h)
        return F.linear(h, self.output_weight), cache  # (B, T, vocab_size)

    # ------------------------------------------------------------------ building from Hugging Face
    @classmethod
    def from_config(cls, config: Any) -> LlamaLM:
        """A randomly initialised model shaped like a ``transformers`` ``LlamaConfig``."""
        if getattr(config, "model_type", None) != "llama":
            raise TypeError(f"LlamaLM.from_config needs a LlamaConfig, got {type(config).__name__}")
        if getattr(config, "hidden_act", "silu") != "silu":
            raise ValueError(f"LlamaLM supports hidden_act='silu' only, got {config.hidden_act!r}")
        if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
            raise ValueError("LlamaLM has no biases: the config asks for attention_bias or mlp_bias")
        return cls(
            vocab_size=config.vocab_size,
            d_model=config.hidden_size,
            n_layers=config.num_hidden_layers,
            n_heads=config.num_attention_heads,
            n_kv_heads=getattr(config, "num_key_value_heads", None) or config.num_attention_heads,
            d_ff=config.intermediate_size,
            head_dim=getattr(config, "head_dim", None),
            max_positions=config.max_position_embeddings,
            rope_base=_rope_base(config),
            eps=config.rms_norm_eps,
            tie_embeddings=bool(getattr(config, "tie_word_embeddings", False)),
        )

    @classmethod
    def from_hf(cls, model: nn.Module) -> LlamaLM:
        """Build a model shaped like a Hugging Face ``LlamaForCausalLM`` and copy its weights in (eval mode).

        The copy has the source's dtype and device. Raises if the source is not a Llama model or a
        weight is missing or misshapen.
        """
        config = getattr(model, "config", None)
        if config is None or getattr(config, "model_type", None) != "llama" or not hasattr(model, "model"):
            raise TypeError(f"LlamaLM.from_hf needs a transformers LlamaForCausalLM, got {type(model).__name__}")
        source = model.get_input_embeddings().weight
        ours = cls.from_config(config).to(dtype=source.dtype, device=source.device)
        ours.load_hf_state_dict(model.state_dict())
        return ours.eval()

    @torch.no_grad()
    def load_hf_state_dict(self, state_dict: Mapping[str, Tensor]) -> LlamaLM:
        """Copy a ``LlamaForCausalLM`` state dict in: ``model.<name>`` -> ``<name>``, ``lm_head`` if untied."""
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"load_hf_state_dict: state_dict must be a mapping, got {type(state_dict).__name__}")
        own = self.state_dict()
        for mine, tensor in own.items():
            key = mine if mine.startswith("lm_head.") else f"model.{mine}"
            if key not in state_dict:
                raise KeyError(f"load_hf_state_dict: the Hugging Face weights have no {key!r}")
            if state_dict[key].shape != tensor.shape:
                raise ValueError(
                    f"load_hf_state_dict: {key!r} has shape {tuple(state_dict[key].shape)}, "
                    f"{mine!r} needs {tuple(tensor.shape)}"
                )
            tensor.copy_(state_dict[key])
        return self


def tiny_config(**overrides: Any):
    """A tiny random Llama configuration (102,720 parameters) for tests and the smoke profile.

    Usable by ``transformers.LlamaForCausalLM(tiny_config())`` and :meth:`LlamaLM.from_config`:
    vocabulary 256, width 64, 2 layers, 4 query heads sharing 2 key/value heads of 16 dimensions,
    SwiGLU width 160, 64 positions, tied embeddings, eager attention (the reference's plain
    softmax path). Any ``LlamaConfig`` field can be overridden by keyword.
    """
    from transformers import LlamaConfig

    settings: dict[str, Any] = dict(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=160,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=64,
        rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 10_000.0},
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        attn_implementation="eager",
    )
    settings.update(overrides)
    return LlamaConfig(**settings)
