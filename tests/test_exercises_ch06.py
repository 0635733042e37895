"""The chapter 6 exercise checks pass the reference and fail plausible wrong answers."""

import math

import torch
import torch.nn.functional as F

from dlbook import exercises


def test_all_registered():
    assert exercises.known("ch06") == ["ch06.attention_entropy", "ch06.scaled_attention", "ch06.split_heads"]


def test_references_pass():
    for key in exercises.known("ch06"):
        assert exercises.check(key, exercises.reference(key), verbose=False)


def test_attention_torch_passes():
    def torch_version(q, k, v, mask=None):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

    assert exercises.check("ch06.scaled_attention", torch_version, verbose=False)


def test_attention_scaled_by_dk_fails():
    def wrong(q, k, v, mask=None):
        logits = q @ k.transpose(-2, -1) / q.shape[-1]  # d_k instead of sqrt(d_k)
        if mask is not None:
            logits = logits.masked_fill(~mask, float("-inf"))
        return torch.softmax(logits, -1) @ v

    result = exercises.check("ch06.scaled_attention", wrong, verbose=False)
    assert not result and "wrong values" in result.failure


def test_attention_ignoring_mask_fails():
    def wrong(q, k, v, mask=None):
        return torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), -1) @ v

    assert not exercises.check("ch06.scaled_attention", wrong, verbose=False)


def test_attention_softmax_wrong_axis_fails():
    def wrong(q, k, v, mask=None):
        logits = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
        if mask is not None:
            logits = logits.masked_fill(~mask, float("-inf"))
        return torch.nan_to_num(torch.softmax(logits, -2)) @ v

    assert not exercises.check("ch06.scaled_attention", wrong, verbose=False)


def test_stub_reports_not_yet():
    def stub(q, k, v, mask=None):
        raise NotImplementedError

    result = exercises.check("ch06.scaled_attention", stub, verbose=False)
    assert not result and "NotImplementedError" in result.failure


def test_split_heads_wrong_reshape_fails():
    def wrong(x, n_heads):  # reshapes straight to (B, H, L, d): mixes positions into heads
        B, L, D = x.shape
        return x.reshape(B, n_heads, L, D // n_heads)

    assert not exercises.check("ch06.split_heads", wrong, verbose=False)


def test_entropy_nan_on_zero_weights_fails():
    def wrong(w):
        return -(w * torch.log(w)).sum(-1)  # 0 * log 0 = nan

    assert not exercises.check("ch06.attention_entropy", wrong, verbose=False)


def test_entropy_in_bits_fails():
    def wrong_base(w):
        return -torch.special.xlogy(w, w).sum(-1) / math.log(2)  # bits, not nats

    assert not exercises.check("ch06.attention_entropy", wrong_base, verbose=False)
