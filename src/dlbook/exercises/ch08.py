"""Exercise checks for chapter 8, "BERT inside out"."""

from __future__ import annotations

import numpy as np
import torch

from ..nn.bert import extended_attention_mask
from . import Case, register


def _gen(rng: np.random.Generator) -> torch.Generator:
    return torch.Generator().manual_seed(int(rng.integers(1 << 31)))


# ----------------------------------------------------------------------------- the extended attention mask


def _extended_mask_cases(rng: np.random.Generator) -> list[Case]:
    def case(name: str, batch: int, seq: int, dtype: torch.dtype, full_row: bool = False) -> Case:
        g = _gen(rng)
        lengths = torch.randint(1, seq + 1, (batch,), generator=g)
        lengths[0] = max(1, seq - 2)  # at least one padded row
        if full_row:
            lengths[-1] = seq  # and one with no padding
        mask = (torch.arange(seq)[None, :] < lengths[:, None]).long()  # (batch, seq), 1 = token
        return Case(name, (mask, dtype))

    return [
        case("a padded batch, float32", 4, 9, torch.float32, full_row=True),
        case("one sequence, float32", 1, 6, torch.float32),
        case("float16 (its own most negative number)", 3, 7, torch.float16),
        case("bfloat16, long sequences", 2, 33, torch.bfloat16, full_row=True),
    ]


register("ch08.extended_attention_mask", extended_attention_mask, _extended_mask_cases, atol=0.0, rtol=1e-6)


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
