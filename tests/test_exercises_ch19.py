"""The chapter 19 exercise checks pass the reference and fail plausible wrong answers."""

import math

import numpy as np
import torch
import torch.nn.functional as F

from dlbook import exercises
from dlbook.exercises import ch19


def test_all_registered():
    assert exercises.known("ch19") == ["ch19.cross_attention", "ch19.teacher_forcing_loss"]


def test_references_pass():
    for key in exercises.known("ch19"):
        assert exercises.check(key, exercises.reference(key), verbose=False)


def test_cross_attention_with_torch_passes():
    def with_sdpa(x, memory, Wq, Wk, Wv, memory_pad):
        return F.scaled_dot_product_attention(x @ Wq.T, memory @ Wk.T, memory @ Wv.T, attn_mask=~memory_pad[:, None, :])

    assert exercises.check("ch19.cross_attention", with_sdpa, verbose=False)


def test_cross_attention_wrong_answers_fail():
    def no_mask(x, memory, Wq, Wk, Wv, memory_pad):
        q, k, v = x @ Wq.T, memory @ Wk.T, memory @ Wv.T
        return torch.softmax(q @ k.transpose(1, 2) / math.sqrt(q.shape[-1]), -1) @ v

    def no_scale(x, memory, Wq, Wk, Wv, memory_pad):
        q, k, v = x @ Wq.T, memory @ Wk.T, memory @ Wv.T
        logits = (q @ k.transpose(1, 2)).masked_fill(memory_pad[:, None], float("-inf"))
        return torch.softmax(logits, -1) @ v

    def keys_from_decoder(x, memory, Wq, Wk, Wv, memory_pad):  # self-attention, not cross
        q, k, v = x @ Wq.T, x @ Wk.T, x @ Wv.T
        return torch.softmax(q @ k.transpose(1, 2) / math.sqrt(q.shape[-1]), -1) @ v

    for wrong in (no_mask, no_scale, keys_from_decoder):
        assert not exercises.check("ch19.cross_attention", wrong, verbose=False)


def test_teacher_forcing_wrong_answers_fail():
    def with_pad(logits, tgt):
        return F.cross_entropy(logits.flatten(0, 1), tgt[:, 1:].flatten())

    def not_shifted(logits, tgt):
        return F.cross_entropy(logits.flatten(0, 1), tgt[:, :-1].flatten(), ignore_index=0)

    def mean_of_means(logits, tgt):
        per = F.cross_entropy(logits.transpose(1, 2), tgt[:, 1:], ignore_index=0, reduction="none")
        return (per.sum(1) / (tgt[:, 1:] != 0).sum(1)).mean()

    for wrong in (with_pad, not_shifted, mean_of_means):
        assert not exercises.check("ch19.teacher_forcing_loss", wrong, verbose=False)


def test_beam_verdict():
    rng = np.random.default_rng(0)
    greedy = rng.random(1000) < 0.9
    same = greedy.copy()
    better = greedy | (rng.random(1000) < 0.5)
    assert ch19.check_beam_verdict(greedy, same, "no measurable difference", verbose=False)
    assert not ch19.check_beam_verdict(greedy, same, "beam", verbose=False)
    assert ch19.check_beam_verdict(greedy, better, "beam", verbose=False)
    assert ch19.check_beam_verdict(better, greedy, "greedy", verbose=False)
    assert not ch19.check_beam_verdict(greedy, better, "maybe", verbose=False)
    assert not ch19.check_beam_verdict(greedy[:50], better[:50], "beam", verbose=False)
    assert not ch19.check_beam_verdict(greedy.astype(int), better.astype(int), "beam", verbose=False)


def test_check_exact_match():
    from dlbook import seq2seq as s2
    from dlbook.nn.transformer import EncoderDecoder

    torch.manual_seed(0)
    vocab = s2.CharVocab()
    model = EncoderDecoder(len(vocab), len(vocab), d_model=16, n_heads=2, d_ff=32, max_len=16)
    inputs = [e.target for e in s2.make_date_splits(1, 120, 1)["validation"]]
    preds = s2.translate(
        model,
        vocab,
        torch.nn.utils.rnn.pad_sequence([torch.tensor(vocab.encode(t)) for t in inputs], batch_first=True),
        max_len=11,
    )
    rate = float(s2.exact_match(preds, inputs).mean())
    assert ch19.check_exact_match(model, vocab, inputs, inputs, rate, verbose=False)
    assert not ch19.check_exact_match(model, vocab, inputs, inputs, rate + 0.01, verbose=False)
    assert not ch19.check_exact_match(model, vocab, inputs[:50], inputs[:50], rate, verbose=False)
