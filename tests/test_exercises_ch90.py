"""The chapter 90 exercise check passes the reference and fails plausible wrong answers."""

import pytest
import torch

from dlbook import exercises
from dlbook.exercises.ch90 import accumulated_gradient

KEY = "ch90.accumulated_gradient"


def test_registered():
    assert exercises.known("ch90") == [KEY]


def test_reference_passes():
    assert exercises.check(KEY, exercises.reference(KEY), verbose=False)


def test_reference_equals_full_batch_gradient():
    g = torch.Generator().manual_seed(0)
    x, y, w = torch.randn(11, 4, generator=g), torch.randn(11, generator=g), torch.randn(4, generator=g)
    closed_form = 2 / len(x) * x.T @ (x @ w - y)  # d/dw mean((xw - y)^2)
    for n_micro in (1, 2, 3, 4, 11):
        torch.testing.assert_close(accumulated_gradient(w, x, y, n_micro), closed_form)


def test_full_batch_autograd_passes():
    def full_batch(w, x, y, n_micro):
        w = w.clone().requires_grad_(True)
        ((x @ w - y) ** 2).mean().backward()
        return w.grad

    assert exercises.check(KEY, full_batch, verbose=False)


def test_chunk_split_with_size_weights_passes():
    def with_chunk(w, x, y, n_micro):  # torch.chunk splits differently; size weights make that harmless
        w = w.clone().requires_grad_(True)
        for xb, yb in zip(x.chunk(n_micro), y.chunk(n_micro), strict=True):
            (((xb @ w - yb) ** 2).mean() * len(xb) / len(x)).backward()
        return w.grad

    assert exercises.check(KEY, with_chunk, verbose=False)


def _accumulate(scale):
    def fn(w, x, y, n_micro):
        w = w.clone().requires_grad_(True)
        for xb, yb in zip(x.tensor_split(n_micro), y.tensor_split(n_micro), strict=True):
            (((xb @ w - yb) ** 2).mean() * scale(len(xb), len(x), n_micro)).backward()
        return w.grad

    return fn


@pytest.mark.parametrize(
    "wrong, failing_case",
    [
        (_accumulate(lambda b, n, k: 1.0), "4 equal micro-batches"),  # no scaling: k times too large
        (_accumulate(lambda b, n, k: 1.0 / k), "unequal size"),  # right only for equal sizes
    ],
    ids=["unscaled sum", "divided by k"],
)
def test_wrong_scalings_fail(wrong, failing_case):
    result = exercises.check(KEY, wrong, verbose=False)
    assert not result and failing_case in result.failure and "wrong values" in result.failure


def test_last_micro_batch_only_fails():
    def wrong(w, x, y, n_micro):  # zero_grad inside the loop: keeps only the last micro-batch
        w = w.clone().requires_grad_(True)
        for xb, yb in zip(x.tensor_split(n_micro), y.tensor_split(n_micro), strict=True):
            w.grad = None
            (((xb @ w - yb) ** 2).mean() * len(xb) / len(x)).backward()
        return w.grad

    assert not exercises.check(KEY, wrong, verbose=False)


def test_wrong_dtype_fails():
    def wrong(w, x, y, n_micro):
        return accumulated_gradient(w, x, y, n_micro).float()

    result = exercises.check(KEY, wrong, verbose=False)
    assert not result and "dtype" in result.failure


def test_stub_reports_not_yet():
    def stub(w, x, y, n_micro):
        raise NotImplementedError

    result = exercises.check(KEY, stub, verbose=False)
    assert not result and "NotImplementedError" in result.failure


def test_reference_rejects_bad_shapes():
    with pytest.raises(ValueError, match="need x"):
        accumulated_gradient(torch.zeros(3), torch.zeros(4, 3), torch.zeros(5), 2)
