"""A BERT classifier's forward pass without the library's generality: same weights, less Python.

Taught in chapter 15. At batch 1 a compressed classifier does little arithmetic, and a visible
part of its time goes to the Python around it: more than a dozen module calls per layer
(chapter 15 counts them), attention-mask preparation, dispatch to one of several attention
back-ends, options for caches, cross-attention and outputs that a sentence classifier never
uses. :class:`LeanClassifier` runs the same weights through the few operations the classifier
needs:

    x = LayerNorm(word[ids] + position[0..T) + segment[types])
    per layer:  q, k, v = split(x W_qkv + b_qkv)            # one matrix product, not three
                x = LayerNorm(x + Attention(q, k, v) W_o + b_o)
                x = LayerNorm(x + gelu(x W_1 + b_1) W_2 + b_2)
    logits = tanh(x[:, 0] W_p + b_p) W_c + b_c

Attention is chapter 6's formula written out (matrix product, scale, mask, softmax, matrix
product) in place of PyTorch's fused ``scaled_dot_product_attention``, which the Hugging Face
model calls. The query, key and value weight matrices are stacked into one (a fused
projection), so one matrix product (and, after :func:`dlbook.quantize.int8_dynamic`, one
quantization of the activations) replaces three. In float32 the logits equal the Hugging Face
model's to rounding (unit tests; chapter 15 checks it); in int8 the stacked matrix gets one
weight scale where the three had one each, so the int8 logits differ and chapter 15 measures the
accuracy again rather than assuming it.

Works on a ``BertForSequenceClassification`` of any depth and width, pruned per layer
(:func:`dlbook.prune.shrink_bert`) or vocabulary-pruned (:meth:`dlbook.prune.VocabMap.wrap`), in
eval mode and float32; quantize the result, not the input. Exact GELU, absolute positions,
single-label classification with class-index labels only (refused otherwise, rather than
computed differently).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers.modeling_outputs import SequenceClassifierOutput

__all__ = ["LeanClassifier", "LeanLayer", "lean_classifier"]


class LeanLayer(nn.Module):
    """One post-norm BERT encoder layer, Q/K/V in one projection. Built by :func:`lean_classifier`."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        att = layer.attention.self
        self.heads, self.head_size = att.num_attention_heads, att.attention_head_size
        self.qkv = nn.Linear(att.query.in_features, 3 * att.query.out_features)
        with torch.no_grad():
            self.qkv.weight.copy_(torch.cat([att.query.weight, att.key.weight, att.value.weight]))
            self.qkv.bias.copy_(torch.cat([att.query.bias, att.key.bias, att.value.bias]))
        self.out, self.norm1 = layer.attention.output.dense, layer.attention.output.LayerNorm
        self.up, self.down, self.norm2 = layer.intermediate.dense, layer.output.dense, layer.output.LayerNorm

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        b, t, _ = x.shape  # (batch, seq, d)
        qkv = self.qkv(x).view(b, t, 3, self.heads, self.head_size)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # 3 x (batch, heads, seq, head_size)
        # chapter 6's attention, written out: without its argument checks and, since every row
        # holds a real token (checked by the caller), without its care for fully masked rows
        scores = (q @ k.transpose(-1, -2)) * self.head_size**-0.5  # (batch, heads, seq, seq)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        a = scores.softmax(dim=-1) @ v  # (batch, heads, seq, head_size)
        x = self.norm1(self.out(a.transpose(1, 2).reshape(b, t, -1)) + x)  # (batch, seq, d)
        return self.norm2(self.down(F.gelu(self.up(x))) + x)


class LeanClassifier(nn.Module):
    """The classifier of :func:`lean_classifier`: ``forward(input_ids, attention_mask, ...)``.

    Takes the batches of the model it was built from (the original tokenizer's ids, also for a
    vocabulary-pruned model) and returns a ``SequenceClassifierOutput`` with ``logits`` (and
    ``loss`` when ``labels`` are given), so :mod:`dlbook.measure` times and scores it like the
    Hugging Face model.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        id_map = getattr(model, "old_to_new", None)  # a VocabPrunedModel: original id -> kept row
        inner = model.model if id_map is not None else model
        emb = inner.bert.embeddings
        self.register_buffer("id_map", None if id_map is None else id_map.clone())
        self.word, self.position = emb.word_embeddings, emb.position_embeddings
        self.segment, self.norm = emb.token_type_embeddings, emb.LayerNorm
        self.layers = nn.ModuleList(LeanLayer(layer) for layer in inner.bert.encoder.layer)
        self.pool, self.classifier = inner.bert.pooler.dense, inner.classifier
        self.n_ids = int(id_map.numel()) if id_map is not None else emb.word_embeddings.num_embeddings
        self.n_segments = emb.token_type_embeddings.num_embeddings
        self.max_positions = emb.position_embeddings.num_embeddings
        self.config = inner.config

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        labels: Tensor | None = None,
    ) -> SequenceClassifierOutput:
        _check_batch(self, input_ids, attention_mask, token_type_ids)
        ids = input_ids if self.id_map is None else self.id_map[input_ids]  # (batch, seq)
        t = ids.shape[1]
        types = torch.zeros_like(ids) if token_type_ids is None else token_type_ids
        positions = torch.arange(t, device=ids.device)  # (seq,)
        x = self.norm(self.word(ids) + self.segment(types) + self.position(positions))  # (batch, seq, d)
        mask = None  # no padding: every key is a real token
        if attention_mask is not None and not bool(attention_mask.all()):
            mask = attention_mask[:, None, None, :].bool()  # (batch, 1, 1, seq): True = real token
        for layer in self.layers:
            x = layer(x, mask)
        logits = self.classifier(torch.tanh(self.pool(x[:, 0])))  # (batch, classes), from [CLS]
        loss = None
        if labels is not None:
            if not isinstance(labels, Tensor) or labels.is_floating_point() or labels.shape != logits.shape[:1]:
                raise ValueError("LeanClassifier: labels must be class indices of shape (batch,)")
            loss = F.cross_entropy(logits, labels)
        return SequenceClassifierOutput(loss=loss, logits=logits)


def _check_ids(x: Tensor, n: int, name: str) -> None:
    if x.numel() and (int(x.min()) < 0 or int(x.max()) >= n):
        raise ValueError(f"LeanClassifier: {name} must lie in 0..{n - 1}, got {int(x.min())}..{int(x.max())}")


def _check_batch(model: LeanClassifier, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> None:
    """Clear errors for what the Hugging Face model would reject with a bare traceback, or accept silently."""
    if not isinstance(input_ids, Tensor) or input_ids.dim() != 2 or input_ids.is_floating_point():
        got = type(input_ids).__name__
        if isinstance(input_ids, Tensor):
            got = f"{input_ids.dtype} of shape {tuple(input_ids.shape)}"
        raise TypeError(f"LeanClassifier: input_ids must be an integer tensor of shape (batch, seq), got {got}")
    if input_ids.shape[1] > model.max_positions:
        raise ValueError(f"LeanClassifier: {input_ids.shape[1]} tokens, the position table has {model.max_positions}")
    _check_ids(input_ids, model.n_ids, "input_ids")
    for name, extra in (("attention_mask", attention_mask), ("token_type_ids", token_type_ids)):
        if extra is not None and (not isinstance(extra, Tensor) or extra.shape != input_ids.shape):
            shape = tuple(extra.shape) if isinstance(extra, Tensor) else type(extra).__name__
            raise ValueError(f"LeanClassifier: {name} must have the shape of input_ids {tuple(input_ids.shape)}, got {shape}")
    if attention_mask is not None and not bool(((attention_mask == 0) | (attention_mask == 1)).all()):
        raise ValueError("LeanClassifier: attention_mask must hold 0 (padding) and 1 (token) only")
    if attention_mask is not None and not bool(attention_mask.any(dim=1).all()):
        empty = (~attention_mask.bool().any(dim=1)).nonzero().flatten().tolist()
        raise ValueError(f"LeanClassifier: attention_mask rows {empty} have no real token (all 0)")
    if token_type_ids is not None:
        _check_ids(token_type_ids, model.n_segments, "token_type_ids")


def lean_classifier(model: nn.Module) -> LeanClassifier:
    """A :class:`LeanClassifier` running ``model``'s weights (copied; ``model`` is not changed).

    ``model``: a float32 ``BertForSequenceClassification`` (any depth and width, heads and
    feed-forward neurons pruned per layer allowed) or a :class:`dlbook.prune.VocabPrunedModel`
    wrapping one. Quantize the result with :func:`dlbook.quantize.int8_dynamic`; a model
    quantized already is refused (its Q, K and V could no longer be stacked in float). Chapter 15.
    """
    import copy

    from transformers import BertForSequenceClassification

    inner = getattr(model, "model", model) if hasattr(model, "old_to_new") else model
    if not isinstance(inner, BertForSequenceClassification):
        raise TypeError(
            "lean_classifier needs a BertForSequenceClassification (or one wrapped by VocabMap.wrap), "
            f"got {type(model).__name__}"
        )
    config = inner.config
    unsupported = {
        "hidden_act": (getattr(config, "hidden_act", "gelu"), "gelu"),
        "position_embedding_type": (getattr(config, "position_embedding_type", "absolute"), "absolute"),
        "is_decoder": (bool(getattr(config, "is_decoder", False)), False),
        "problem_type": (getattr(config, "problem_type", None) or "single_label_classification", "single_label_classification"),
    }
    for key, (value, needed) in unsupported.items():
        if value != needed:
            raise ValueError(f"lean_classifier supports {key}={needed!r} only, got {value!r}")
    if config.num_labels < 2:  # transformers reads one label as regression
        raise ValueError(f"lean_classifier needs at least 2 classes, got num_labels={config.num_labels}")
    tensors = [*inner.parameters(), *inner.buffers()]
    if any(not isinstance(m.attention.self.query, nn.Linear) for m in inner.bert.encoder.layer):
        raise ValueError("lean_classifier needs the float32 model: quantize the lean classifier, not its input")
    if any(t.is_floating_point() and t.dtype != torch.float32 for t in tensors):
        raise ValueError("lean_classifier expects a float32 model: call .float() first")
    return LeanClassifier(copy.deepcopy(model).eval()).eval()
