"""A small instruction set from the book's own data, in a chat model's format, with answer-only labels.

Taught in chapter 20, "Adapting and shrinking an LLM". Instruction tuning shows a chat model
conversations (a user's request and the answer it should give) and trains it to produce the
answer. The request is context, not a target: its tokens get the label ``-100``, which
``torch.nn.functional.cross_entropy`` (and every Hugging Face model's loss) ignores, so the loss
is the mean over the answer tokens only.

The task here has a checkable answer: the Rotten Tomatoes snippets of
:func:`dlbook.assets.rotten_tomatoes`, each turned into the request "Is the sentiment of this
movie review positive or negative? Answer with one word." and the answer ``positive`` or
``negative`` (the prompt chapter 18 asks the untuned model).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .env import resolve_device
from .lora import add_peft_lora as add_lora  # moved to dlbook.lora; the old name keeps working

__all__ = [
    "IGNORE",
    "add_lora",
    "SENTIMENT_INSTRUCTION",
    "SENTIMENT_WORDS",
    "answer_loss",
    "collate",
    "encode_example",
    "last_prompt_logits",
    "sentiment_request",
]

#: The label cross-entropy ignores: every prompt token and every padding token gets it.
IGNORE = -100
#: The instruction of the sentiment task (the same words as chapter 18's plain prompt).
SENTIMENT_INSTRUCTION = "Is the sentiment of this movie review positive or negative? Answer with one word."
#: The answer for each label of :func:`dlbook.assets.rotten_tomatoes` (1 = fresh, 0 = rotten).
SENTIMENT_WORDS = {1: "positive", 0: "negative"}


def sentiment_request(review: str) -> list[dict[str, str]]:
    """The chat messages that ask for the sentiment of ``review`` (one user turn)."""
    if not isinstance(review, str) or not review.strip():
        raise ValueError(f"review must be a non-empty string, got {review!r}")
    return [{"role": "user", "content": f"{SENTIMENT_INSTRUCTION}\n\nReview: {review}"}]


def _prompt_ids(tokenizer: Any, messages: Sequence[dict[str, str]]) -> list[int]:
    if not isinstance(messages, (list, tuple)) or not messages:
        raise ValueError("messages must be a non-empty list of {'role', 'content'} dicts")
    ids = tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=True, return_dict=True)[
        "input_ids"
    ]
    return list(ids)


def encode_example(
    tokenizer: Any, messages: Sequence[dict[str, str]], answer: str, *, max_length: int | None = None
) -> dict[str, Any]:
    """Token ids and labels of one conversation: the prompt, then ``answer`` and the end token.

    The prompt is the chat template of ``messages`` with the assistant's turn opened
    (``add_generation_prompt=True``); the answer is its text followed by the tokenizer's end
    token (for SmolLM2 ``<|im_end|>``, where generation stops). ``n_prompt`` counts the prompt
    tokens. Labels: ``IGNORE`` on every
    prompt token, the token ids on the answer. Raises ``ValueError`` for an empty answer or a
    conversation longer than ``max_length``.
    """
    if not isinstance(answer, str) or not answer.strip():
        raise ValueError(f"answer must be a non-empty string, got {answer!r}")
    if tokenizer.eos_token is None:
        raise ValueError("the tokenizer has no end token (eos_token) to close the answer with")
    prompt = _prompt_ids(tokenizer, messages)
    target = list(tokenizer(answer + tokenizer.eos_token, add_special_tokens=False)["input_ids"])
    ids = prompt + target
    if max_length is not None and len(ids) > max_length:
        raise ValueError(f"the conversation has {len(ids)} tokens, more than max_length={max_length}")
    return {"input_ids": ids, "labels": [IGNORE] * len(prompt) + target, "n_prompt": len(prompt)}


def collate(examples: Sequence[dict[str, Any]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a list of :func:`encode_example` results into tensors (B, T).

    ``input_ids`` padded with ``pad_id``, ``attention_mask`` 1 on real tokens, ``labels`` padded
    with ``IGNORE`` so that padding never counts in the loss.
    """
    if not examples:
        raise ValueError("collate needs at least one example")
    if isinstance(pad_id, bool) or not isinstance(pad_id, int) or pad_id < 0:
        raise ValueError(f"pad_id must be a non-negative int, got {pad_id!r}")
    for i, e in enumerate(examples):
        if not isinstance(e, dict) or "input_ids" not in e:
            raise ValueError(f"example {i} must be a dict with 'input_ids', got {type(e).__name__}")
        if len(e["input_ids"]) == 0:
            raise ValueError(f"example {i} has no tokens: an empty row would have no last real position")
    n = max(len(e["input_ids"]) for e in examples)
    ids = torch.full((len(examples), n), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), n), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), n), dtype=torch.long)
    for i, e in enumerate(examples):
        if len(e["input_ids"]) != len(e.get("labels", e["input_ids"])):
            raise ValueError(f"example {i}: input_ids and labels differ in length")
        k = len(e["input_ids"])
        ids[i, :k] = torch.tensor(e["input_ids"])
        mask[i, :k] = 1
        if "labels" in e:
            labels[i, :k] = torch.tensor(e["labels"])
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _decoder_parts(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """The decoder body and the output layer of a causal LM (a peft wrapper is unwrapped)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    body, head = getattr(base, "model", None), getattr(base, "lm_head", None)
    if body is None or head is None:
        raise TypeError(f"expected a causal LM with .model and .lm_head (e.g. LlamaForCausalLM), got {type(base).__name__}")
    return body, head


def answer_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy over the answer tokens, computing logits only where a label counts.

    Position ``t`` predicts token ``t + 1``, so the targets are the labels shifted by one. The
    output layer (49,152 words for SmolLM2) runs only on the positions whose target is not
    ``IGNORE``: the same loss as ``model(**batch).loss``, for a fraction of the output cost.
    """
    missing = [k for k in ("input_ids", "attention_mask", "labels") if k not in batch]
    if missing:
        raise ValueError(f"batch is missing {missing}: use collate() to build it")
    labels = batch["labels"]
    if labels.shape != batch["input_ids"].shape:
        raise ValueError(f"labels {tuple(labels.shape)} and input_ids {tuple(batch['input_ids'].shape)} differ")
    body, head = _decoder_parts(model)
    hidden = body(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state  # (B, T, d)
    targets = labels[:, 1:]  # (B, T-1): the token each position predicts
    keep = targets != IGNORE
    if not keep.any():
        raise ValueError("no answer tokens in the batch: every label is IGNORE")
    logits = head(hidden[:, :-1][keep])  # (n_answer_tokens, vocab)
    return F.cross_entropy(logits.float(), targets[keep])


@torch.no_grad()
def last_prompt_logits(
    model: nn.Module, tokenizer: Any, conversations: Sequence[Sequence[dict[str, str]]], *, batch_size: int = 16
) -> torch.Tensor:
    """Logits (N, vocab) of the first answer token for each conversation (float32, on the CPU).

    Each conversation is rendered with the assistant's turn opened; the batch is right-padded and
    the output layer runs on each row's last real position only. The arg-max of a row is the
    first token greedy decoding would produce.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if tokenizer.pad_token_id is None:
        raise ValueError("the tokenizer has no pad token")
    body, head = _decoder_parts(model)
    device = resolve_device(model=model)
    out = []
    for start in range(0, len(conversations), batch_size):
        chunk = [{"input_ids": _prompt_ids(tokenizer, c)} for c in conversations[start : start + batch_size]]
        batch = collate(chunk, tokenizer.pad_token_id)
        mask = batch["attention_mask"].to(device)
        hidden = body(input_ids=batch["input_ids"].to(device), attention_mask=mask).last_hidden_state  # (B, T, d)
        last = mask.sum(dim=1) - 1  # (B,): index of each row's last real token
        out.append(head(hidden[torch.arange(len(chunk), device=device), last]).float().cpu())  # (B, vocab)
    if not out:
        raise ValueError("conversations is empty")
    return torch.cat(out)
