"""BERT assembled from the book's own parts, as taught in chapter 8 (BERT inside out).

- :class:`BertEmbeddings`: token + position + segment embeddings, summed, then LayerNorm and dropout.
- :class:`BertEncoderFromScratch`: those embeddings under a stack of post-norm
  :class:`dlbook.nn.transformer.EncoderLayer` (GELU feed-forward, LayerNorm eps ``1e-12``), with
  :meth:`BertEncoderFromScratch.from_hf` to load the weights of a Hugging Face ``BertModel``.
- :func:`padding_mask` and :func:`extended_attention_mask`: the two forms of BERT's attention mask.
- :func:`mask_tokens`: the masked-language-model corruption (the 80/10/10 recipe of Devlin et al.).

Attention comes from :mod:`dlbook.nn.attention` (chapter 6), the encoder layer and LayerNorm from
:mod:`dlbook.nn.transformer` (chapter 7): nothing here re-implements them.

Bad input gets a clear error naming the argument, never a silently wrong answer: ids that are not
an integer ``(batch, seq)`` tensor (a float batch, a Python list), token ids outside the vocabulary,
segment ids outside the segment table, a sequence longer than the position table, an
``attention_mask`` of the wrong shape or with values other than 0 and 1 (an additive mask passed by
mistake would otherwise invert the padding), a sequence with no real token, inputs on another
device than the weights.

Where these modules differ from Hugging Face's ``BertModel`` on purpose:

- the feed-forward activation is the exact GELU, ``x * Phi(x)`` (``hidden_act="gelu"``); configs
  asking for an approximation (``"gelu_new"``, ``"gelu_pytorch_tanh"``) or another activation are
  refused rather than run with a different function;
- there is no pooler and no task head;
- ``attention_mask`` must hold 0 and 1 (``transformers`` reads any non-zero value as "attend"), and a
  row of all zeros is an error (``transformers`` returns an output for it that means nothing);
- in training mode the book's feed-forward block has a dropout after the activation, as
  :class:`torch.nn.TransformerEncoderLayer` does; Hugging Face BERT has none there (eval mode,
  where chapter 8 compares the two, is unaffected);
- :meth:`BertEncoderFromScratch.from_hf` returns a module with the dtype and device of the Hugging
  Face model's weights, as ``transformers`` keeps them; :meth:`~BertEncoderFromScratch.from_config`
  builds float32 on the CPU like any new module.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .transformer import Encoder, LayerNorm

__all__ = [
    "BertEmbeddings",
    "BertEncoderFromScratch",
    "BertEncoderOutput",
    "extended_attention_mask",
    "hf_key_map",
    "mask_tokens",
    "padding_mask",
]


# ---------------------------------------------------------------------------- argument checks
_ID_DTYPES = (torch.int64, torch.int32)


def _check_id_tensor(x: Any, name: str, where: str) -> Tensor:
    """``x`` must be a ``(batch, seq)`` tensor of integer ids (int64 or int32)."""
    if not isinstance(x, Tensor):
        hint = (
            " (build one with torch.tensor(...), or call the tokenizer with return_tensors='pt')"
            if isinstance(x, (list, tuple))
            else ""
        )
        raise TypeError(f"{where}: {name} must be a torch.Tensor of ids, got {type(x).__name__}{hint}")
    if x.dim() != 2:
        raise ValueError(f"{where}: {name} must be (batch, seq), got shape {tuple(x.shape)}")
    if x.dtype not in _ID_DTYPES:
        hint = " (ids stay integers: convert only float inputs to the model's dtype)" if x.is_floating_point() else ""
        raise TypeError(f"{where}: {name} must hold integer ids (int64 or int32), got {x.dtype}{hint}")
    return x


def _check_id_range(x: Tensor, size: int, name: str, what: str, where: str) -> None:
    """Every id in ``x`` must index a row of a table with ``size`` rows: ``0 <= id < size``."""
    if x.numel():
        low, high = int(x.min()), int(x.max())
        if low < 0 or high >= size:
            raise ValueError(f"{where}: {name} holds ids from {low} to {high}, outside [0, {what} = {size})")


def _check_ids(input_ids: Any, where: str) -> Tensor:
    return _check_id_tensor(input_ids, "input_ids", where)


def _check_same_device(x: Tensor, name: str, device: torch.device, where: str) -> None:
    if x.device != device:
        raise ValueError(
            f"{where}: {name} is on {x.device} but the module's weights are on {device}; "
            f"move one of them (e.g. {name}.to({str(device)!r}))"
        )


def _check_attention_mask(attention_mask: Any, shape: torch.Size | None, where: str) -> Tensor:
    """A tokenizer's ``(batch, seq)`` mask: 1 (or True) = real token, 0 (or False) = padding."""
    if not isinstance(attention_mask, Tensor):
        raise TypeError(f"{where}: attention_mask must be a tensor, got {type(attention_mask).__name__}")
    if attention_mask.dim() != 2:
        raise ValueError(
            f"{where}: attention_mask must be (batch, seq) with 1 = token, 0 = padding, got shape {tuple(attention_mask.shape)}"
        )
    if shape is not None and attention_mask.shape != shape:
        raise ValueError(f"{where}: attention_mask has shape {tuple(attention_mask.shape)}, input_ids {tuple(shape)}")
    if attention_mask.is_complex():
        raise TypeError(f"{where}: attention_mask must be bool, integer or float, got {attention_mask.dtype}")
    if attention_mask.dtype != torch.bool and attention_mask.numel():
        bad = attention_mask[(attention_mask != 0) & (attention_mask != 1)]
        if bad.numel():
            raise ValueError(
                f"{where}: attention_mask must hold 1 (token) and 0 (padding) only, found "
                f"{bad.unique()[:3].tolist()}; an additive mask (0 = token, a large negative number = "
                f"padding) is not a tokenizer mask: convert it with (mask == 0).long()"
            )
    return attention_mask


def padding_mask(attention_mask: Tensor) -> Tensor:
    """Boolean ``(B, 1, 1, T)`` mask from a tokenizer's ``(B, T)`` ``attention_mask`` (1 = token, 0 = padding).

    ``True`` = this key may be attended to, the convention of :func:`torch.nn.functional.scaled_dot_product_attention`
    and :mod:`dlbook.nn.attention`. The two singleton axes broadcast over heads and queries: every
    query, padding or not, sees only the real tokens of its own sequence. Chapter 8.
    """
    attention_mask = _check_attention_mask(attention_mask, None, "padding_mask")
    return attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T)


def extended_attention_mask(attention_mask: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """Additive ``(B, 1, 1, T)`` mask: ``0`` where a key may be attended to, the most negative ``dtype`` number where not.

    This is the "extended attention mask" Hugging Face BERT adds to the attention logits; after the
    softmax the padded keys get weight exactly 0. The most negative finite number (not ``-inf``) keeps
    a row of all-padding from turning into NaN. Chapter 8.
    """
    attention_mask = _check_attention_mask(attention_mask, None, "extended_attention_mask")
    if not dtype.is_floating_point:
        raise TypeError(f"extended_attention_mask: dtype must be a floating dtype, got {dtype}")
    keep = attention_mask[:, None, None, :].to(dtype)  # (B, 1, 1, T), 1.0 = token
    return (1.0 - keep) * torch.finfo(dtype).min


class BertEmbeddings(nn.Module):
    """BERT's input layer: ``LayerNorm(E_token[x_t] + E_position[t] + E_segment[s_t])``, then dropout. Chapter 8.

    ``forward(input_ids, token_type_ids=None)`` maps ``(B, T)`` ids to ``(B, T, d_model)``; missing
    segment ids mean "all segment A" (zeros). Positions are learned, ``0 .. T-1``, at most
    ``max_positions``. The LayerNorm is :class:`dlbook.nn.transformer.LayerNorm` with BERT's ``eps``.
    """

    def __init__(
        self,
        vocab_size: int,
        d_model: int,
        max_positions: int = 512,
        n_segments: int = 2,
        eps: float = 1e-12,
        dropout: float = 0.1,
        pad_token_id: int | None = 0,
    ) -> None:
        super().__init__()
        for name, value in (
            ("vocab_size", vocab_size),
            ("d_model", d_model),
            ("max_positions", max_positions),
            ("n_segments", n_segments),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"BertEmbeddings: {name} must be a positive int, got {value!r}")
        if pad_token_id is not None and (
            isinstance(pad_token_id, bool) or not isinstance(pad_token_id, int) or not 0 <= pad_token_id < vocab_size
        ):
            raise ValueError(
                f"BertEmbeddings: pad_token_id must be None or an int in [0, vocab_size = {vocab_size}), got {pad_token_id!r}"
            )
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            # dropout = 1 would zero every embedding; the encoder layers reject it too
            raise ValueError(f"BertEmbeddings: dropout must be in [0, 1), got {dropout!r}")
        self.token = nn.Embedding(vocab_size, d_model, padding_idx=pad_token_id)
        self.position = nn.Embedding(max_positions, d_model)
        self.segment = nn.Embedding(n_segments, d_model)
        self.norm = LayerNorm(d_model, eps)
        self.dropout = nn.Dropout(dropout)
        self.max_positions = max_positions

    def forward(self, input_ids: Tensor, token_type_ids: Tensor | None = None) -> Tensor:
        where = "BertEmbeddings"
        input_ids = _check_ids(input_ids, where)
        device = self.token.weight.device
        _check_same_device(input_ids, "input_ids", device, where)
        B, T = input_ids.shape
        if T == 0:
            raise ValueError(f"{where}: input_ids has no positions (shape {tuple(input_ids.shape)})")
        if T > self.max_positions:
            raise ValueError(
                f"{where}: input_ids has {T} positions but the position table has max_positions = "
                f"{self.max_positions} rows; truncate the input (the tokenizer's truncation=True, "
                f"max_length={self.max_positions})"
            )
        _check_id_range(input_ids, self.token.num_embeddings, "input_ids", "vocab_size", where)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        else:
            token_type_ids = _check_id_tensor(token_type_ids, "token_type_ids", where)
            if token_type_ids.shape != input_ids.shape:
                raise ValueError(
                    f"{where}: token_type_ids has shape {tuple(token_type_ids.shape)}, input_ids {tuple(input_ids.shape)}"
                )
            _check_same_device(token_type_ids, "token_type_ids", device, where)
            _check_id_range(token_type_ids, self.segment.num_embeddings, "token_type_ids", "n_segments", where)
        positions = torch.arange(T, device=input_ids.device)  # (T,)
        x = self.token(input_ids) + self.position(positions) + self.segment(token_type_ids)  # (B, T, d_model)
        return self.dropout(self.norm(x))


@dataclass
class BertEncoderOutput:
    """What :class:`BertEncoderFromScratch` returns: the last hidden state and, if asked, each layer's attention."""

    last_hidden_state: Tensor  # (B, T, d_model)
    attentions: list[Tensor] | None = None  # n_layers tensors of shape (B, n_heads, T, T)


class BertEncoderFromScratch(nn.Module):
    """A BERT encoder (no pooler, no heads) built from the book's components. Chapter 8.

    :class:`BertEmbeddings`, then :class:`dlbook.nn.transformer.Encoder` with ``norm_first=False``
    (post-norm, as BERT), ``activation="gelu"`` (exact erf GELU) and LayerNorm ``eps``::

        h = LayerNorm(h + Attention(h));  h = LayerNorm(h + W2 gelu(W1 h + b1) + b2)

    ``forward(input_ids, attention_mask=None, token_type_ids=None, output_attentions=False)`` returns a
    :class:`BertEncoderOutput`. Use :meth:`from_hf` to copy a Hugging Face ``BertModel``'s weights.
    The differences from ``BertModel`` (exact GELU only, no pooler, a stricter ``attention_mask``,
    one extra dropout in training mode, the dtype kept by :meth:`from_hf`) are listed in the module
    docstring; in eval mode, on valid input, the two compute the same numbers (chapter 8 checks it).
    """

    def __init__(
        self,
        vocab_size: int = 30522,
        d_model: int = 768,
        n_layers: int = 12,
        n_heads: int = 12,
        d_ff: int = 3072,
        max_positions: int = 512,
        n_segments: int = 2,
        eps: float = 1e-12,
        dropout: float = 0.1,
        pad_token_id: int | None = 0,
    ) -> None:
        super().__init__()
        self.embeddings = BertEmbeddings(vocab_size, d_model, max_positions, n_segments, eps, dropout, pad_token_id)
        self.encoder = Encoder(n_layers, d_model, n_heads, d_ff, dropout, activation="gelu", norm_first=False, eps=eps)
        self.config = dict(
            vocab_size=vocab_size,
            d_model=d_model,
            n_layers=n_layers,
            n_heads=n_heads,
            d_ff=d_ff,
            max_positions=max_positions,
            n_segments=n_segments,
            eps=eps,
            dropout=dropout,
            pad_token_id=pad_token_id,
        )

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        output_attentions: bool = False,
    ) -> BertEncoderOutput:
        where = "BertEncoderFromScratch"
        input_ids = _check_ids(input_ids, where)
        if not isinstance(output_attentions, bool):
            raise TypeError(f"{where}: output_attentions must be True or False, got {output_attentions!r}")
        mask = None
        if attention_mask is not None:
            _check_attention_mask(attention_mask, input_ids.shape, where)
            _check_same_device(attention_mask, "attention_mask", self.embeddings.token.weight.device, where)
            empty = ~attention_mask.bool().any(dim=1)  # (B,): sequences without a single real token
            if empty.any():
                raise ValueError(
                    f"{where}: attention_mask rows {empty.nonzero().flatten().tolist()} have no real "
                    f"token (all 0): every sequence needs at least [CLS] and [SEP]"
                )
            mask = padding_mask(attention_mask)  # (B, 1, 1, T), True = real token
        dtypes = {self.embeddings.token.weight.dtype, self.encoder.layers[0].norm1.weight.dtype}
        if len(dtypes) > 1:
            raise TypeError(
                f"{where}: the embeddings and the encoder hold different dtypes {sorted(map(str, dtypes))}; "
                f"convert the whole model (model.to(dtype)), not a part of it"
            )
        h = self.embeddings(input_ids, token_type_ids)  # (B, T, d_model)
        h, weights = self.encoder(h, mask=mask, need_weights=True)  # (B, T, d_model), n_layers x (B, H, T, T)
        return BertEncoderOutput(h, weights if output_attentions else None)

    @classmethod
    def from_config(cls, config: Any) -> BertEncoderFromScratch:
        """An untrained encoder shaped like a ``transformers.BertConfig`` (absolute positions, GELU only)."""
        act = getattr(config, "hidden_act", "gelu")
        if act != "gelu":
            raise ValueError(f"BertEncoderFromScratch supports hidden_act='gelu' (exact GELU) only, got {act!r}")
        kind = getattr(config, "position_embedding_type", "absolute")
        if kind != "absolute":
            raise ValueError(f"BertEncoderFromScratch supports absolute position embeddings only, got {kind!r}")
        if config.hidden_dropout_prob != config.attention_probs_dropout_prob:
            raise ValueError(
                "BertEncoderFromScratch uses one dropout rate: hidden_dropout_prob and "
                "attention_probs_dropout_prob must be equal"
            )
        return cls(
            vocab_size=config.vocab_size,
            d_model=config.hidden_size,
            n_layers=config.num_hidden_layers,
            n_heads=config.num_attention_heads,
            d_ff=config.intermediate_size,
            max_positions=config.max_position_embeddings,
            n_segments=config.type_vocab_size,
            eps=config.layer_norm_eps,
            dropout=config.hidden_dropout_prob,
            pad_token_id=config.pad_token_id,
        )

    @classmethod
    def from_hf(cls, model: nn.Module) -> BertEncoderFromScratch:
        """Build an encoder shaped like a Hugging Face ``BertModel`` and copy its weights in (eval mode).

        Accepts a ``BertModel`` or a model that holds one as ``.bert`` (``BertForMaskedLM``, ...).
        The pooler and any task heads are not copied. Raises if a weight is missing or misshapen.
        The result has the dtype and device of the source's word embeddings (a float64 or bfloat16
        model gives a float64 or bfloat16 encoder, as ``transformers`` keeps it), so the two compute
        in the same precision; use ``.to(...)`` afterwards to change either.
        """
        bert = getattr(model, "bert", model)
        if not hasattr(bert, "embeddings") or not hasattr(bert, "encoder") or not hasattr(bert, "config"):
            raise TypeError(f"from_hf needs a transformers BertModel (or a model with .bert), got {type(model).__name__}")
        source = bert.embeddings.word_embeddings.weight
        ours = cls.from_config(bert.config).to(dtype=source.dtype)
        ours.load_hf_state_dict(bert.state_dict())
        return ours.to(source.device).eval()

    @torch.no_grad()
    def load_hf_state_dict(self, state_dict: dict[str, Tensor]) -> BertEncoderFromScratch:
        """Copy the tensors of a Hugging Face BERT state dict (keys as in ``BertModel``) into this module."""
        if not isinstance(state_dict, Mapping):
            raise TypeError(
                f"load_hf_state_dict: state_dict must be a mapping of names to tensors, got {type(state_dict).__name__}"
            )
        own = self.state_dict()
        mapping = hf_key_map(self.config["n_layers"])
        prefix = "bert." if any(k.startswith("bert.") for k in state_dict) else ""
        for theirs, mine in mapping.items():
            key = prefix + theirs
            if key not in state_dict:
                raise KeyError(f"load_hf_state_dict: the Hugging Face weights have no {key!r}")
            if state_dict[key].shape != own[mine].shape:
                raise ValueError(
                    f"load_hf_state_dict: {key!r} has shape {tuple(state_dict[key].shape)}, "
                    f"{mine!r} needs {tuple(own[mine].shape)}"
                )
            own[mine].copy_(state_dict[key])
        return self


def hf_key_map(n_layers: int) -> dict[str, str]:
    """Hugging Face ``BertModel`` parameter names -> :class:`BertEncoderFromScratch` names. Chapter 8."""
    if isinstance(n_layers, bool) or not isinstance(n_layers, int) or n_layers < 1:
        raise ValueError(f"hf_key_map: n_layers must be a positive int, got {n_layers!r}")
    m = {
        "embeddings.word_embeddings.weight": "embeddings.token.weight",
        "embeddings.position_embeddings.weight": "embeddings.position.weight",
        "embeddings.token_type_embeddings.weight": "embeddings.segment.weight",
        "embeddings.LayerNorm.weight": "embeddings.norm.weight",
        "embeddings.LayerNorm.bias": "embeddings.norm.bias",
    }
    parts = {
        "attention.self.query": "self_attn.q_proj",
        "attention.self.key": "self_attn.k_proj",
        "attention.self.value": "self_attn.v_proj",
        "attention.output.dense": "self_attn.out_proj",
        "attention.output.LayerNorm": "norm1",
        "intermediate.dense": "ff.linear1",
        "output.dense": "ff.linear2",
        "output.LayerNorm": "norm2",
    }
    for i in range(n_layers):
        for theirs, mine in parts.items():
            for p in ("weight", "bias"):
                m[f"encoder.layer.{i}.{theirs}.{p}"] = f"encoder.layers.{i}.{mine}.{p}"
    return m


def mask_tokens(
    input_ids: Tensor,
    special_ids: Iterable[int],
    mask_token_id: int,
    vocab_size: int,
    mlm_probability: float = 0.15,
    mask_replace_prob: float = 0.8,
    random_replace_prob: float = 0.1,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Corrupt a batch for masked-language-model training; returns ``(inputs, labels)``. Chapter 8.

    Each token whose id is not in ``special_ids`` ([CLS], [SEP], [PAD], ...) is chosen with probability
    ``mlm_probability``. A chosen token is replaced by ``mask_token_id`` with probability
    ``mask_replace_prob``, by a token drawn uniformly from ``range(vocab_size)`` with probability
    ``random_replace_prob``, and left as it is otherwise (BERT's 80/10/10). ``labels`` holds the
    original id at chosen positions and ``-100`` (ignored by ``cross_entropy``) everywhere else;
    it is always int64 (``cross_entropy`` rejects int32 targets), while ``inputs`` keeps the dtype
    of ``input_ids``. ``input_ids`` is not modified. The same ``generator`` state gives the same corruption.
    Same distribution as ``transformers.DataCollatorForLanguageModeling`` (not the same random draws).
    """
    input_ids = _check_ids(input_ids, "mask_tokens")
    for name, p in (
        ("mlm_probability", mlm_probability),
        ("mask_replace_prob", mask_replace_prob),
        ("random_replace_prob", random_replace_prob),
    ):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"mask_tokens: {name} must be in [0, 1], got {p}")
    if mask_replace_prob + random_replace_prob > 1.0:
        raise ValueError("mask_tokens: mask_replace_prob + random_replace_prob must not exceed 1")
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 1:
        raise ValueError(f"mask_tokens: vocab_size must be a positive int, got {vocab_size!r}")
    if isinstance(mask_token_id, bool) or not isinstance(mask_token_id, int) or not 0 <= mask_token_id < vocab_size:
        raise ValueError(f"mask_tokens: mask_token_id must be an int in [0, vocab_size = {vocab_size}), got {mask_token_id!r}")
    special_ids = list(special_ids)
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in special_ids):
        raise TypeError(f"mask_tokens: special_ids must be ints (the tokenizer's all_special_ids), got {special_ids!r}")
    _check_id_range(input_ids, vocab_size, "input_ids", "vocab_size", "mask_tokens")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"mask_tokens: generator must be a torch.Generator or None, got {type(generator).__name__}")
    device = input_ids.device
    special = torch.isin(input_ids, torch.tensor(sorted(set(special_ids)), dtype=input_ids.dtype, device=device))
    # draw on the generator's device (a CPU generator gives the same numbers whatever the model's device)
    draw = dict(generator=generator, device=generator.device if generator is not None else device)
    u_select = torch.rand(input_ids.shape, **draw).to(device)  # (B, T) uniform in [0, 1)
    u_action = torch.rand(input_ids.shape, **draw).to(device)  # (B, T) which corruption
    random_ids = torch.randint(vocab_size, input_ids.shape, **draw).to(device)  # (B, T)
    chosen = (u_select < mlm_probability) & ~special
    to_mask = chosen & (u_action < mask_replace_prob)
    to_random = chosen & (u_action >= mask_replace_prob) & (u_action < mask_replace_prob + random_replace_prob)
    inputs = input_ids.clone()
    inputs[to_mask] = mask_token_id
    inputs[to_random] = random_ids[to_random].to(inputs.dtype)
    # int64 labels whatever the ids' dtype: F.cross_entropy rejects int32 class targets
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, -100)).long()
    return inputs, labels
