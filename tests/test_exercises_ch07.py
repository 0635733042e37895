"""The chapter 7 exercise checks pass the reference and fail plausible wrong answers."""

import torch
import torch.nn.functional as F

from dlbook import exercises
from dlbook.nn.transformer import sinusoidal_positional_encoding


def test_all_registered():
    assert exercises.known("ch07") == ["ch07.feed_forward", "ch07.layer_norm", "ch07.positional_encoding"]


def test_references_pass():
    for key in exercises.known("ch07"):
        assert exercises.check(key, exercises.reference(key), verbose=False)


def test_torch_versions_pass():
    assert exercises.check("ch07.layer_norm", lambda x, g, b, eps=1e-5: F.layer_norm(x, g.shape, g, b, eps), verbose=False)
    assert exercises.check("ch07.feed_forward", lambda x, W1, b1, W2, b2: F.linear(F.relu(F.linear(x, W1, b1)), W2, b2),
                           verbose=False)
    assert exercises.check("ch07.positional_encoding", sinusoidal_positional_encoding, verbose=False)


def test_layer_norm_without_mean_fails():
    def wrong(x, gamma, beta, eps=1e-5):
        var = x.var(-1, keepdim=True, unbiased=False)
        return gamma * x / torch.sqrt(var + eps) + beta  # forgot to subtract the mean

    result = exercises.check("ch07.layer_norm", wrong, verbose=False)
    assert not result and "wrong values" in result.failure


def test_layer_norm_unbiased_var_fails():
    def wrong(x, gamma, beta, eps=1e-5):
        mean = x.mean(-1, keepdim=True)
        return gamma * (x - mean) / torch.sqrt(x.var(-1, keepdim=True) + eps) + beta

    assert not exercises.check("ch07.layer_norm", wrong, verbose=False)


def test_layer_norm_ignoring_eps_fails():
    def wrong(x, gamma, beta, eps=1e-5):
        mean = x.mean(-1, keepdim=True)
        return gamma * (x - mean) / x.std(-1, keepdim=True, unbiased=False) + beta

    assert not exercises.check("ch07.layer_norm", wrong, verbose=False)


def test_ffn_relu_outside_fails():
    def wrong(x, W1, b1, W2, b2):
        return torch.relu((x @ W1.T + b1) @ W2.T + b2)  # max(0, W2(W1 x + b1) + b2)

    result = exercises.check("ch07.feed_forward", wrong, verbose=False)
    assert not result and "wrong values" in result.failure


def test_ffn_gelu_fails():
    def wrong(x, W1, b1, W2, b2):
        return F.gelu(x @ W1.T + b1) @ W2.T + b2

    assert not exercises.check("ch07.feed_forward", wrong, verbose=False)


def test_pe_swapped_sin_cos_fails():
    def wrong(n, d):
        pe = sinusoidal_positional_encoding(n, d)
        return pe.view(n, d // 2, 2).flip(-1).reshape(n, d)  # cos on even, sin on odd

    assert not exercises.check("ch07.positional_encoding", wrong, verbose=False)


def test_pe_wrong_exponent_fails():
    def wrong(n, d):
        pos = torch.arange(n, dtype=torch.float32)[:, None]
        i = torch.arange(d // 2, dtype=torch.float32)
        angle = pos / 10000 ** (i / d)  # i/d instead of 2i/d
        return torch.stack([torch.sin(angle), torch.cos(angle)], -1).reshape(n, d)

    assert not exercises.check("ch07.positional_encoding", wrong, verbose=False)
