"""Exercise checks for chapter 8, "BERT inside out".

Each check tests a small measuring function on hidden cases; the chapter's solutions then run the
experiment with it on the real model and data (and assert what they find).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from . import Case, register


def _gen(rng: np.random.Generator) -> torch.Generator:
    return torch.Generator().manual_seed(int(rng.integers(1 << 31)))


# ----------------------------------------------------------------------------- which padding constant?


def padded_weight(logits: torch.Tensor, attention_mask: torch.Tensor, fill: float, dtype: torch.dtype) -> torch.Tensor:
    """Reference: the total attention weight each query puts on padded keys when ``fill`` masks them.

    ``logits`` ``(B, T_q, T_k)``; ``attention_mask`` ``(B, T_k)``, 1 = token, 0 = padding. The logits
    and ``fill`` are converted to ``dtype`` (the dtype the model computes in: float32's minimum becomes
    ``-inf`` in float16), ``fill`` is added at padded keys only, the softmax over keys runs in
    ``dtype``. Returns float32 ``(B, T_q)``: the weights of the padded keys, summed; NaN where the
    softmax gave NaN.
    """
    scores = logits.to(dtype)  # (B, T_q, T_k)
    pad = (attention_mask == 0)[:, None, :]  # (B, 1, T_k)
    bias = torch.where(pad, torch.tensor(fill, dtype=dtype), torch.tensor(0.0, dtype=dtype))
    weights = torch.softmax(scores + bias, dim=-1)  # (B, T_q, T_k), in dtype
    return (weights * pad).sum(-1).float()


def _padded_weight_cases(rng: np.random.Generator) -> list[Case]:
    def case(name: str, scale: float, fill: float, dtype: torch.dtype, empty_row: bool = False) -> Case:
        g = _gen(rng)
        batch, seq = 3, 7
        lengths = torch.tensor([seq, 4, 2])
        if empty_row:
            lengths[-1] = 0  # a sequence with no real token: every key is padding
        mask = (torch.arange(seq)[None, :] < lengths[:, None]).long()  # (B, T_k)
        logits = scale * torch.randn(batch, seq, seq, generator=g)  # (B, T_q, T_k)
        return Case(name, (logits, mask, fill), {"dtype": dtype})

    f32_min, f16_min, bf16_min = (float(torch.finfo(d).min) for d in (torch.float32, torch.float16, torch.bfloat16))
    return [
        case("ordinary logits, float32, fill = float32's minimum", 3.0, f32_min, torch.float32),
        case("ordinary logits, float32, fill = -1e4", 3.0, -1e4, torch.float32),
        case("logits of scale 1e4, float32, fill = -1e4 (some weight leaks)", 1e4, -1e4, torch.float32),
        case("float16, fill = float16's minimum", 3.0, f16_min, torch.float16),
        case("an all-padding row, bfloat16, fill = bfloat16's minimum", 3.0, bf16_min, torch.bfloat16, empty_row=True),
        case(
            "an all-padding row, float16, fill = float32's minimum (becomes -inf)", 3.0, f32_min, torch.float16, empty_row=True
        ),
        case("an all-padding row, float32, fill = -inf", 3.0, float("-inf"), torch.float32, empty_row=True),
    ]


register("ch08.padded_weight", padded_weight, _padded_weight_cases, atol=1e-3, rtol=1e-2)


# ----------------------------------------------------------------------------- whole-word masking


def whole_word_selection(word_ids: torch.Tensor, u_word: torch.Tensor, mlm_probability: float = 0.15) -> torch.Tensor:
    """Reference: choose whole words, then mark every WordPiece of a chosen word.

    ``word_ids`` ``(B, T)``: the index of the word each token belongs to, ``-1`` for [CLS], [SEP] and
    [PAD]. ``u_word`` ``(B, W)``: one uniform draw per word of each sequence. Word ``w`` of row ``b`` is
    chosen when ``u_word[b, w] < mlm_probability``. Returns a bool ``(B, T)``: True at every token of
    a chosen word, False at special tokens.
    """
    chosen_word = u_word < mlm_probability  # (B, W)
    token_word = torch.gather(chosen_word, 1, word_ids.clamp(min=0))  # (B, T): the choice of the token's word
    return token_word & (word_ids >= 0)


def _whole_word_cases(rng: np.random.Generator) -> list[Case]:
    def case(name: str, batch: int, n_words: int, p: float) -> Case:
        rows = []
        for _ in range(batch):
            k = int(rng.integers(1, n_words + 1))  # words in this sequence
            pieces = rng.integers(1, 4, size=k)  # WordPieces per word: 1 to 3
            rows.append([-1] + [w for w in range(k) for _ in range(int(pieces[w]))] + [-1])  # [CLS] ... [SEP]
        T = max(len(r) for r in rows)
        word_ids = torch.tensor([r + [-1] * (T - len(r)) for r in rows], dtype=torch.long)  # [PAD] = -1
        u = torch.rand(batch, n_words, generator=_gen(rng))
        u[:, 0] = torch.where(torch.arange(batch) % 2 == 0, 0.0, 0.99)  # word 0 chosen in every other row
        return Case(name, (word_ids, u), {"mlm_probability": p})

    return [
        case("four sequences, p = 0.15", 4, 6, 0.15),
        case("one sequence, p = 0.5", 1, 8, 0.5),
        case("a padded batch, p = 0.3", 6, 12, 0.3),
        case("long sequences, p = 0.15", 3, 40, 0.15),
    ]


register("ch08.whole_word_selection", whole_word_selection, _whole_word_cases)


# ----------------------------------------------------------------------------- attention to [CLS] and [SEP]


def special_attention(
    attentions: Sequence[torch.Tensor],
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    cls_id: int,
    sep_id: int,
) -> torch.Tensor:
    """Reference: per layer and head, the mean weight a real query puts on [CLS] and on [SEP].

    ``attentions``: one ``(B, H, T, T)`` tensor per layer (queries on the rows, keys on the
    columns); ``input_ids`` and ``attention_mask`` ``(B, T)``. A query's weight on [SEP] is summed
    over *every* [SEP] of its sequence (a pair has two). The mean runs over the real queries of the
    whole batch; padded queries are left out. Returns float32 ``(L, H, 2)``: ``[..., 0]`` for [CLS],
    ``[..., 1]`` for [SEP].
    """
    att = torch.stack(list(attentions), dim=1).float()  # (B, L, H, T, T)
    real = attention_mask.bool()  # (B, T)
    on_cls = (input_ids == cls_id)[:, None, None, None, :]  # (B, 1, 1, 1, T): keys that are [CLS]
    on_sep = (input_ids == sep_id)[:, None, None, None, :]
    per_query = torch.stack([(att * on_cls).sum(-1), (att * on_sep).sum(-1)], dim=-1)  # (B, L, H, T, 2)
    per_query = per_query * real[:, None, None, :, None]  # drop padded queries
    return per_query.sum(dim=(0, 3)) / real.sum()  # (L, H, 2)


def _special_cases(rng: np.random.Generator) -> list[Case]:
    cls_id, sep_id, pad_id = 101, 102, 0

    def case(name: str, batch: int, n_layers: int, n_heads: int, pairs: bool) -> Case:
        g = _gen(rng)
        rows = []
        for _ in range(batch):
            a = torch.randint(1000, 2000, (int(rng.integers(2, 7)),), generator=g).tolist()
            row = [cls_id] + a + [sep_id]
            if pairs:
                row += torch.randint(1000, 2000, (int(rng.integers(1, 6)),), generator=g).tolist() + [sep_id]
            rows.append(row)
        T = max(len(r) for r in rows) + 1  # at least one padded position somewhere
        ids = torch.tensor([r + [pad_id] * (T - len(r)) for r in rows])  # (B, T)
        mask = (ids != pad_id).long()
        logits = 2 * torch.randn(batch, n_layers, n_heads, T, T, generator=g)
        logits = logits.masked_fill(mask[:, None, None, None, :] == 0, float("-inf"))  # padded keys get 0
        weights = torch.softmax(logits, dim=-1)  # padded *queries* keep non-zero rows, as in a real model
        return Case(name, ([weights[:, i] for i in range(n_layers)], ids, mask, cls_id, sep_id))

    return [
        case("single segments, 2 layers x 3 heads", 4, 2, 3, pairs=False),
        case("pairs with two [SEP] each", 5, 3, 2, pairs=True),
        case("one pair, one layer", 1, 1, 4, pairs=True),
        case("a padded batch of pairs", 8, 2, 2, pairs=True),
    ]


register("ch08.special_attention", special_attention, _special_cases, atol=1e-5, rtol=1e-4)
