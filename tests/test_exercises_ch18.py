"""The chapter 18 exercise checks pass the reference and fail plausible wrong answers."""

import torch
from transformers.generation import MinPLogitsWarper

from dlbook import exercises
from dlbook.exercises.ch18 import distinct_n, min_p


def test_all_registered():
    assert exercises.known("ch18") == ["ch18.distinct_n", "ch18.min_p"]


def test_references_pass():
    for key in exercises.known("ch18"):
        assert exercises.check(key, exercises.reference(key), verbose=False)


def test_min_p_matches_transformers():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 100, generator=g) * 3
    ids = torch.zeros(4, 1, dtype=torch.long)
    for p in (0.05, 0.2, 0.5):
        assert torch.equal(min_p(logits, p).isinf(), MinPLogitsWarper(p)(ids, logits.clone()).isinf())


def test_min_p_wrong_answers_fail():
    def absolute(logits, p):  # compares with min_p itself, not scaled by the top probability
        return logits.masked_fill(logits.softmax(-1) < p, float("-inf"))

    def zeroed(logits, p):  # sets removed logits to 0 instead of -inf
        probs = logits.softmax(-1)
        return logits.masked_fill(probs < p * probs.max(-1, keepdim=True).values, 0.0)

    for wrong in (absolute, zeroed):
        assert not exercises.check("ch18.min_p", wrong, verbose=False)


def test_distinct_n():
    assert distinct_n([[1, 2, 1, 2, 1, 2]], 2) == 2 / 5
    assert distinct_n([[1]], 2) == 0.0

    def joined(texts, n):  # glues the texts together, inventing n-grams across boundaries
        flat = [t for text in texts for t in text]
        grams = [tuple(flat[i : i + n]) for i in range(len(flat) - n + 1)]
        return len(set(grams)) / len(grams) if grams else 0.0

    def per_text_mean(texts, n):  # averages per-text ratios instead of pooling
        ratios = []
        for t in texts:
            grams = [tuple(t[i : i + n]) for i in range(len(t) - n + 1)]
            if grams:
                ratios.append(len(set(grams)) / len(grams))
        return sum(ratios) / len(ratios) if ratios else 0.0

    for wrong in (joined, per_text_mean):
        assert not exercises.check("ch18.distinct_n", wrong, verbose=False)
