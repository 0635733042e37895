"""Sentence embeddings from a BERT-family encoder by masked mean pooling.

Taught in chapter 1 ("The Hugging Face toolbox"); chapter 9 uses :func:`embed_texts` for its
frozen-encoder baseline.

Both functions check their input and name the offending argument: a wrong shape, a mask that
does not match the hidden states or holds values other than 0 and 1, NaN or infinite vectors
where the mask keeps a token, a single string where a list of texts is expected.
:func:`model_max_length` says where :func:`embed_texts` cuts long texts by default: where the
reference implementation, sentence-transformers, cuts them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from .progress import progress


def _check_hidden(hidden: object) -> torch.Tensor:
    """``hidden`` must be a floating tensor of shape (batch, seq, dim)."""
    if not isinstance(hidden, torch.Tensor):
        raise TypeError(f"hidden must be a torch.Tensor of shape (batch, seq, dim), got {type(hidden).__name__}")
    if hidden.dim() != 3:
        raise ValueError(f"hidden must be (batch, seq, dim), got shape {tuple(hidden.shape)}")
    if not hidden.is_floating_point():
        raise TypeError(f"hidden must hold floating-point vectors, got dtype {hidden.dtype}")
    return hidden


def _check_mask(attention_mask: object, hidden: torch.Tensor) -> torch.Tensor:
    """``attention_mask`` must be (batch, seq) like ``hidden``, on its device, with 0/1 entries only."""
    if not isinstance(attention_mask, torch.Tensor):
        raise TypeError(f"attention_mask must be a torch.Tensor of 0s and 1s, got {type(attention_mask).__name__}")
    if attention_mask.shape != hidden.shape[:2]:
        raise ValueError(
            f"attention_mask must be (batch, seq) = {tuple(hidden.shape[:2])} to match hidden, "
            f"got {tuple(attention_mask.shape)}"
        )
    if attention_mask.is_complex():
        raise TypeError(f"attention_mask must be bool, integer or 0/1 floats, got dtype {attention_mask.dtype}")
    if attention_mask.device != hidden.device:
        raise ValueError(f"attention_mask is on {attention_mask.device} but hidden is on {hidden.device}")
    if attention_mask.dtype != torch.bool and not bool(((attention_mask == 0) | (attention_mask == 1)).all()):
        raise ValueError("attention_mask must hold only 0 (padding) and 1 (a real token)")
    return attention_mask.bool()


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average the token vectors that the attention mask keeps: (batch, seq, dim) -> (batch, dim).

    ``e_b = sum_t m_bt h_bt / sum_t m_bt`` for hidden states ``h`` and a 0/1 mask ``m`` of
    shape (batch, seq). Padded positions never count, not even a NaN there (they are replaced
    by zeros before the sum rather than multiplied by 0, which would keep a NaN). A row with no
    kept token, or a NaN or infinite value at a kept position, is an error rather than a
    silently wrong embedding.
    """
    hidden = _check_hidden(hidden)
    keep = _check_mask(attention_mask, hidden)  # (batch, seq) bool
    counts = keep.sum(dim=1)  # (batch,)
    empty = torch.nonzero(counts == 0).flatten().tolist()
    if empty:
        raise ValueError(f"row(s) {empty} of attention_mask keep no token: their mean is undefined")
    kept_finite = torch.isfinite(hidden).all(dim=-1) | ~keep  # (batch, seq)
    if not bool(kept_finite.all()):
        rows = torch.nonzero(~kept_finite.all(dim=1)).flatten().tolist()
        raise ValueError(f"hidden holds NaN or infinite values at kept positions (rows {rows})")
    summed = torch.where(keep.unsqueeze(-1), hidden, torch.zeros((), dtype=hidden.dtype, device=hidden.device))
    return summed.sum(dim=1) / counts.unsqueeze(-1).to(hidden.dtype)  # (batch, dim)


def _check_texts(texts: object) -> list[str]:
    if isinstance(texts, (str, bytes)):
        raise TypeError("texts must be a sequence of strings, got a single string: wrap it in a list")
    if not isinstance(texts, Sequence):
        raise TypeError(f"texts must be a sequence of strings (a list, a dataset column), got {type(texts).__name__}")
    out = list(texts)
    for i, text in enumerate(out):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}] must be a string, got {type(text).__name__}")
    return out


def _check_positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


#: Tokenizers without a length limit report a huge ``model_max_length`` (transformers uses 1e30).
_NO_LIMIT = 1_000_000


def _folders(model: torch.nn.Module, tokenizer) -> list[Path]:
    """The local folders the model and tokenizer were loaded from, where they say so."""
    names = [
        getattr(tokenizer, "name_or_path", None),
        getattr(model, "name_or_path", None),
        getattr(getattr(model, "config", None), "_name_or_path", None),
    ]
    return [Path(n) for n in names if isinstance(n, str) and n and Path(n).is_dir()]


def model_max_length(model: torch.nn.Module, tokenizer) -> int:
    """The longest input, in tokens, that ``model`` is meant to embed; ``embed_texts`` cuts there.

    The rule of sentence-transformers, the reference implementation: ``max_seq_length`` from
    ``sentence_bert_config.json`` in the folder the tokenizer or the model was loaded from
    (256 for all-MiniLM-L6-v2, where the tokenizer alone would allow 512); otherwise the
    smaller of ``tokenizer.model_max_length`` (ignored when the tokenizer sets no limit) and the
    model's ``config.max_position_embeddings`` (longer inputs have no position vector). A model
    named by a Hub id rather than a folder is not looked up: its files are not on disk here.
    """
    for folder in _folders(model, tokenizer):
        path = folder / "sentence_bert_config.json"
        if path.is_file():
            value = json.loads(path.read_text(encoding="utf-8")).get("max_seq_length")
            if value is not None:
                return _check_positive_int(value, f"max_seq_length in {path}")
    limits = []
    tok_limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_limit, (int, float)) and math.isfinite(tok_limit) and 0 < tok_limit < _NO_LIMIT:
        limits.append(int(tok_limit))
    positions = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        limits.append(positions)
    if not limits:
        raise ValueError(
            "cannot tell how many tokens the model takes (no sentence_bert_config.json, no "
            "tokenizer.model_max_length, no config.max_position_embeddings): pass max_length"
        )
    return min(limits)


@torch.no_grad()
def embed_texts(
    model: torch.nn.Module,
    tokenizer,
    texts: Sequence[str],
    *,
    device: torch.device | str = "cpu",
    batch_size: int = 64,
    max_length: int | None = None,
    normalize: bool = True,
    show_progress: bool = False,
) -> torch.Tensor:
    """Embed ``texts`` with ``model`` (a ``BertModel``-like encoder): (len(texts), hidden) on the CPU.

    The texts are tokenized in batches of ``batch_size`` (padded to the longest in the batch,
    cut at ``max_length`` tokens; ``None``, the default, is the model's own limit,
    :func:`model_max_length`, so that long texts are cut where the reference implementation
    cuts them), encoded, and mean-pooled over the real tokens. With ``normalize`` the vectors
    have unit length, so a dot product is a cosine similarity (what sentence-transformers'
    all-MiniLM-L6-v2 does after its mean pooling). The model runs in evaluation mode (no
    dropout) and is put back in the mode it was in.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module (an encoder such as BertModel), got {type(model).__name__}")
    if not callable(tokenizer):
        raise TypeError(f"tokenizer must be a callable Hugging Face tokenizer, got {type(tokenizer).__name__}")
    texts = _check_texts(texts)
    batch_size = _check_positive_int(batch_size, "batch_size")
    if max_length is None:
        max_length = model_max_length(model, tokenizer)
    max_length = _check_positive_int(max_length, "max_length")
    was_training = model.training
    model.eval()
    chunks = []
    try:
        starts = range(0, len(texts), batch_size)
        for start in progress(starts, desc="embedding", disable=not show_progress):
            batch = tokenizer(
                texts[start : start + batch_size],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            ).to(device)
            out = model(**batch)
            hidden = getattr(out, "last_hidden_state", None)
            if hidden is None:
                raise TypeError(f"model must return an output with last_hidden_state (an encoder), got {type(out).__name__}")
            pooled = mean_pool(hidden, batch["attention_mask"])  # (batch, hidden)
            chunks.append((F.normalize(pooled, dim=-1) if normalize else pooled).cpu())
    finally:
        model.train(was_training)
    if not chunks:
        return torch.empty(0, getattr(getattr(model, "config", None), "hidden_size", 0))
    return torch.cat(chunks)
