"""The chapter 90 exercise checks pass the reference and fail plausible wrong answers."""

import math

import pytest
import torch
import torch.nn.functional as F

from dlbook import exercises
from dlbook.exercises.ch90 import accumulated_gradient, make_classifier

DIV = "ch90.attention_divisor"
ACC = "ch90.accumulated_gradient"


def test_registered():
    assert exercises.known("ch90") == [ACC, DIV]


def test_references_pass():
    for key in exercises.known("ch90"):
        assert exercises.check(key, exercises.reference(key), verbose=False)


# --------------------------------------------------------------------------- the attention divisor


def test_divisor_brings_variance_to_one():
    g = torch.Generator().manual_seed(0)
    for sigma_q, sigma_k, d_k in ((3.0, 3.0, 16), (2.0, 0.5, 64)):
        q = sigma_q * torch.randn(200_000, d_k, generator=g)
        k = sigma_k * torch.randn(200_000, d_k, generator=g)
        var = ((q * k).sum(-1) / exercises.reference(DIV)(sigma_q, sigma_k, d_k)).var().item()
        assert 0.97 < var < 1.03


@pytest.mark.parametrize(
    "wrong",
    [
        lambda sq, sk, d: math.sqrt(d),  # the unit-variance answer, whatever the sigmas
        lambda sq, sk, d: sq**2 * sk**2 * d,  # the variance, not its square root
        lambda sq, sk, d: sq * sk * d,  # the d_k pitfall of section 1
        lambda sq, sk, d: sq**2 * math.sqrt(d),  # assumes sigma_q == sigma_k
    ],
    ids=["sqrt(d_k)", "variance", "d_k", "sigma_q squared"],
)
def test_wrong_divisors_fail(wrong):
    result = exercises.check(DIV, wrong, verbose=False)
    assert not result and "expected" in result.failure


# --------------------------------------------------------------------------- gradient accumulation


def _grad(model):
    return torch.cat([p.grad.flatten() for p in model.parameters()])


def _accumulate(scale, zero_each=False):
    def fn(model, x, y, n_micro):
        model.zero_grad(set_to_none=True)
        for xb, yb in zip(x.tensor_split(n_micro), y.tensor_split(n_micro), strict=True):
            if zero_each:
                model.zero_grad(set_to_none=True)
            (F.cross_entropy(model(xb), yb) * scale(len(xb), len(x), n_micro)).backward()
        return _grad(model)

    return fn


def test_chunk_split_with_size_weights_passes():
    def with_chunk(model, x, y, n_micro):  # tensor_split by index lists: the same pieces
        model.zero_grad(set_to_none=True)
        bounds = torch.linspace(0, len(x), n_micro + 1).round().long().tolist()
        sizes = [b - a for a, b in zip(bounds, bounds[1:], strict=False)]
        for xb, yb in zip(x.split(sorted(sizes, reverse=True)), y.split(sorted(sizes, reverse=True)), strict=True):
            (F.cross_entropy(model(xb), yb) * len(xb) / len(x)).backward()
        return _grad(model)

    assert exercises.check(ACC, with_chunk, verbose=False)


def test_full_batch_gradient_fails_only_with_batchnorm():
    def full_batch(model, x, y, n_micro):  # ignores the micro-batches
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        return _grad(model)

    result = exercises.check(ACC, full_batch, verbose=False)
    assert not result and "BatchNorm" in result.failure and result.passed == 3


@pytest.mark.parametrize(
    "wrong, failing_case",
    [
        (_accumulate(lambda b, n, k: 1.0), "4 equal micro-batches"),  # no scaling: k times too large
        (_accumulate(lambda b, n, k: 1.0 / k), "unequal size"),  # right only for equal sizes
        (_accumulate(lambda b, n, k: b / n, zero_each=True), "4 equal micro-batches"),  # keeps the last only
    ],
    ids=["unscaled sum", "divided by k", "zero_grad inside the loop"],
)
def test_wrong_accumulations_fail(wrong, failing_case):
    result = exercises.check(ACC, wrong, verbose=False)
    assert not result and failing_case in result.failure and "wrong values" in result.failure


def test_reference_leaves_model_alone_and_matches_full_batch_without_batchnorm():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(12, 6, generator=g), torch.randint(0, 3, (12,), generator=g)
    for norm in ("none", "layer", "batch"):
        model = make_classifier(norm, seed=1)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        acc = accumulated_gradient(model, x, y, 3)
        assert all(p.grad is None for p in model.parameters())
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
        full = accumulated_gradient(model, x, y, 1)
        close = torch.allclose(acc, full, atol=1e-6, rtol=1e-4)
        assert close == (norm != "batch"), norm


def test_make_classifier_keeps_the_random_state():
    torch.manual_seed(5)
    a = torch.rand(3)
    torch.manual_seed(5)
    make_classifier("batch", seed=0)
    assert torch.equal(torch.rand(3), a)
    with pytest.raises(ValueError, match="norm"):
        make_classifier("group", seed=0)


def test_stubs_report_not_yet():
    def stub(*args):
        raise NotImplementedError

    for key in exercises.known("ch90"):
        result = exercises.check(key, stub, verbose=False)
        assert not result and "NotImplementedError" in result.failure


def test_reference_rejects_bad_shapes():
    with pytest.raises(ValueError, match="need x"):
        accumulated_gradient(make_classifier("none", 0), torch.zeros(4, 6), torch.zeros(5, dtype=torch.long), 2)
