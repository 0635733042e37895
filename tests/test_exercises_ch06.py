"""The chapter 6 exercise checks pass the reference and fail plausible wrong answers."""

import math

import torch
import torch.nn.functional as F

from dlbook import exercises


def test_all_registered():
    assert exercises.known("ch06") == [
        "ch06.causal_lower_right",
        "ch06.paired_interval",
        "ch06.scaled_attention",
        "ch06.split_heads",
    ]


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


def test_causal_lower_right_matches_torch_and_the_package():
    import warnings

    from torch.nn.attention.bias import causal_lower_right

    from dlbook.nn.attention import causal_mask

    ref = exercises.reference("ch06.causal_lower_right")
    for L_q, L_k in ((3, 7), (4, 4), (5, 3), (1, 6)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # torch warns when L_q > L_k
            assert torch.equal(ref(L_q, L_k), causal_lower_right(L_q, L_k)._materialize())
        assert torch.equal(ref(L_q, L_k), causal_mask(L_q, n_keys=L_k, align="bottom-right"))


def test_causal_top_left_fails():
    def top_left(L_q, L_k):  # what is_causal=True uses: right only when L_q == L_k
        return torch.ones(L_q, L_k, dtype=torch.bool).tril()

    result = exercises.check("ch06.causal_lower_right", top_left, verbose=False)
    assert not result and result.passed == 1  # the square case passes, the next one fails


def test_causal_lower_right_as_float_fails():
    def as_float(L_q, L_k):
        return torch.ones(L_q, L_k).tril(diagonal=L_k - L_q)

    assert "dtype" in exercises.check("ch06.causal_lower_right", as_float, verbose=False).failure


def test_paired_interval_matches_scipy():
    from scipy import stats

    a = torch.tensor([0.91, 0.85, 0.97, 0.88])
    b = torch.tensor([0.80, 0.79, 0.90, 0.70])
    mean, lo, hi = exercises.reference("ch06.paired_interval")(a, b)
    res = stats.ttest_rel(a.numpy(), b.numpy())
    ci = res.confidence_interval(0.95)
    assert math.isclose(mean, float((a - b).mean()), rel_tol=1e-6)
    assert math.isclose(lo, ci.low, rel_tol=1e-6) and math.isclose(hi, ci.high, rel_tol=1e-6)


def test_paired_interval_wrong_answers_fail():
    def normal_quantile(a, b, confidence=0.95):  # 1.96 instead of Student's t: too narrow for few seeds
        d = a - b
        half = 1.96 * d.std() / math.sqrt(len(d))
        return d.mean().item(), (d.mean() - half).item(), (d.mean() + half).item()

    def population_sd(a, b, confidence=0.95):
        from scipy.stats import t

        d = (a - b).double()
        half = t.ppf(0.5 + confidence / 2, len(d) - 1) * d.std(correction=0).item() / math.sqrt(len(d))
        return d.mean().item(), d.mean().item() - half, d.mean().item() + half

    def unpaired(a, b, confidence=0.95):  # treats the two arms as independent samples
        from scipy.stats import t

        a, b = a.double(), b.double()
        n = len(a)
        se = math.sqrt(a.var().item() / n + b.var().item() / n)
        half = t.ppf(0.5 + confidence / 2, 2 * n - 2) * se
        m = (a.mean() - b.mean()).item()
        return m, m - half, m + half

    for wrong in (normal_quantile, population_sd, unpaired):
        assert not exercises.check("ch06.paired_interval", wrong, verbose=False), wrong.__name__
