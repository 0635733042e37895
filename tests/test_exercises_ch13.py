"""The chapter 13 exercise checks pass the reference and fail plausible wrong answers."""

import pytest
import torch
from torch.nn.utils import prune as torch_prune

from dlbook import exercises
from dlbook.exercises.ch13 import head_taylor, nm_mask


def test_all_registered():
    assert exercises.known("ch13") == ["ch13.head_taylor", "ch13.nm_mask"]


def test_references_pass():
    for key in exercises.known("ch13"):
        assert exercises.check(key, exercises.reference(key), verbose=False)


# --------------------------------------------------------------------------- N:M masks


def test_nm_reference_is_two_of_four():
    torch.manual_seed(0)
    w = torch.randn(8, 16)
    m = nm_mask(w, 2, 4)
    assert m.shape == w.shape and m.dtype == w.dtype
    assert torch.equal(m.reshape(8, 4, 4).sum(-1), torch.full((8, 4), 2.0))
    kept = (w.abs() * m).reshape(8, 4, 4)
    dropped = (w.abs() * (1 - m)).reshape(8, 4, 4)
    assert (kept.max(-1).values >= dropped.max(-1).values).all()
    with pytest.raises(ValueError):
        nm_mask(torch.randn(2, 6), 2, 4)


def test_nm_reference_usable_with_torch_prune():
    lin = torch.nn.Linear(8, 3)
    torch_prune.custom_from_mask(lin, "weight", nm_mask(lin.weight, 2, 4))
    assert float((lin.weight == 0).float().mean()) == 0.5


def test_nm_global_magnitude_fails():
    def wrong(weight, n, m):  # 50 % unstructured: right sparsity, wrong pattern
        k = weight.numel() * (m - n) // m
        mask = torch.ones(weight.numel(), dtype=weight.dtype)
        mask[weight.abs().flatten().topk(k, largest=False).indices] = 0
        return mask.view_as(weight)

    assert not exercises.check("ch13.nm_mask", wrong, verbose=False)


def test_nm_groups_along_columns_fails():
    def wrong(weight, n, m):  # groups of m consecutive entries of each column
        return nm_mask(weight.T.contiguous(), n, m).T if weight.shape[0] % m == 0 else nm_mask(weight, n, m)

    result = exercises.check("ch13.nm_mask", wrong, verbose=False)
    assert not result


def test_nm_without_abs_fails():
    def wrong(weight, n, m):  # keeps the largest values, not magnitudes
        rows, cols = weight.shape
        groups = weight.reshape(rows, cols // m, m)
        mask = torch.zeros_like(groups).scatter_(-1, groups.topk(n, dim=-1).indices, 1.0)
        return mask.reshape(rows, cols)

    result = exercises.check("ch13.nm_mask", wrong, verbose=False)
    assert not result


def test_nm_bool_mask_fails():
    def wrong(weight, n, m):
        return nm_mask(weight, n, m).bool()

    result = exercises.check("ch13.nm_mask", wrong, verbose=False)
    assert not result and "dtype" in result.failure


# --------------------------------------------------------------------------- Taylor scores


def test_taylor_reference_matches_gate_gradient():
    torch.manual_seed(0)
    act = torch.randn(3, 5, 4 * 8)
    w = torch.randn(4 * 8, 2)
    gate = torch.ones(4, requires_grad=True)
    a = act.clone().requires_grad_(True)
    loss = ((a * gate.repeat_interleave(8)) @ w).sin().sum()
    g_gate, g_act = torch.autograd.grad(loss, [gate, a])
    torch.testing.assert_close(head_taylor(act, g_act, 4), g_gate.abs())


def test_taylor_abs_first_fails():
    def wrong(act, grad, n_heads):
        return (grad * act).abs().sum(dim=(0, 1)).reshape(n_heads, -1).sum(-1)

    result = exercises.check("ch13.head_taylor", wrong, verbose=False)
    assert not result


def test_taylor_gradient_only_fails():
    def wrong(act, grad, n_heads):
        return grad.sum(dim=(0, 1)).reshape(n_heads, -1).sum(-1).abs()

    assert not exercises.check("ch13.head_taylor", wrong, verbose=False)


def test_taylor_interleaved_heads_fails():
    def wrong(act, grad, n_heads):  # head h taken as every n_heads-th coordinate
        ga = (grad * act).sum(dim=(0, 1))
        return ga.reshape(-1, n_heads).sum(0).abs()

    assert not exercises.check("ch13.head_taylor", wrong, verbose=False)


def test_taylor_stub_reports_not_yet():
    def stub(act, grad, n_heads):
        raise NotImplementedError

    result = exercises.check("ch13.head_taylor", stub, verbose=False)
    assert not result and "NotImplementedError" in result.failure
