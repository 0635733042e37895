"""Sentence embeddings from a BERT-family encoder by masked mean pooling.

Taught in chapter 1 ("The Hugging Face toolbox"); the fine-tuning chapter uses the same
embeddings for its frozen-encoder baseline.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .progress import progress


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average the token vectors that the attention mask keeps.

    ``e_b = sum_t m_bt h_bt / sum_t m_bt`` for hidden states ``h`` of shape (batch, seq, dim) and a
    0/1 mask ``m`` of shape (batch, seq). Padding positions do not count; a row with no kept
    token is an error rather than a silent division by zero.
    """
    if hidden.dim() != 3:
        raise ValueError(f"hidden must be (batch, seq, dim), got shape {tuple(hidden.shape)}")
    if attention_mask.shape != hidden.shape[:2]:
        raise ValueError(
            f"attention_mask must be (batch, seq) = {tuple(hidden.shape[:2])}, got {tuple(attention_mask.shape)}"
        )
    mask = attention_mask.to(hidden.dtype).unsqueeze(-1)  # (batch, seq, 1)
    counts = mask.sum(dim=1)  # (batch, 1)
    if bool((counts == 0).any()):
        raise ValueError("a row of attention_mask keeps no token: its mean is undefined")
    return (hidden * mask).sum(dim=1) / counts


@torch.no_grad()
def embed_texts(
    model: torch.nn.Module,
    tokenizer,
    texts: Sequence[str],
    *,
    device: torch.device | str = "cpu",
    batch_size: int = 64,
    max_length: int = 128,
    normalize: bool = True,
    show_progress: bool = False,
) -> torch.Tensor:
    """Embed ``texts`` with ``model`` (a ``BertModel``-like encoder): (len(texts), hidden) on the CPU.

    With ``normalize`` the vectors have unit length, so a dot product is a cosine similarity
    (what sentence-transformers' all-MiniLM-L6-v2 does after its mean pooling).
    """
    if isinstance(texts, str):
        raise TypeError("embed_texts needs a sequence of strings, got a single string")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    model.eval()
    starts = range(0, len(texts), batch_size)
    chunks = []
    for start in progress(starts, desc="embedding", disable=not show_progress):
        batch = tokenizer(
            list(texts[start : start + batch_size]),
            padding=True, truncation=True, max_length=max_length, return_tensors="pt",
        ).to(device)
        hidden = model(**batch).last_hidden_state  # (batch, seq, hidden)
        pooled = mean_pool(hidden, batch["attention_mask"])
        chunks.append((F.normalize(pooled, dim=-1) if normalize else pooled).cpu())
    if not chunks:
        return torch.empty(0, getattr(getattr(model, "config", None), "hidden_size", 0))
    return torch.cat(chunks)
