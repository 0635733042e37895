"""dlbook.stats: paired bootstrap and McNemar for accuracy differences on the same examples."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import binomtest

from dlbook import stats


def _pair(n=1000, p_a=0.85, p_b=0.83, rho_seed=0):
    rng = np.random.default_rng(rho_seed)
    shared = rng.random(n)
    a = shared < p_a
    b = np.where(rng.random(n) < 0.8, shared < p_b, rng.random(n) < p_b)  # correlated errors
    return a, b


def test_identical_models_show_no_difference():
    a, _ = _pair()
    c = stats.compare(a, a.copy(), n_boot=500)
    assert c.interval.diff == c.interval.low == c.interval.high == 0.0
    assert not c.interval.measurable and c.p_value == 1.0
    assert c.verdict("x", "y").startswith("the 1000 examples do not tell x and y apart")


def test_clear_difference_is_measurable_and_named():
    a = np.ones(500, dtype=bool)
    b = a.copy()
    b[:100] = False  # b is wrong on 20 %
    c = stats.compare(a, b, n_boot=2000)
    assert c.interval.diff == pytest.approx(0.2)
    assert c.interval.low > 0.1 and c.interval.measurable
    assert c.measurable
    assert c.verdict("teacher", "student").startswith("teacher scored higher than student on these 500")
    assert c.only_a == 100 and c.only_b == 0 and c.p_value < 1e-20


def test_interval_width_matches_the_normal_approximation():
    a, b = _pair(n=2000)
    d = a.astype(float) - b.astype(float)
    se = d.std(ddof=0) / np.sqrt(d.size)
    i = stats.paired_bootstrap(a, b, n_boot=20_000, seed=1)
    assert (i.high - i.low) == pytest.approx(2 * 1.96 * se, rel=0.08)
    assert i.low < d.mean() < i.high


def test_pairing_narrows_the_interval():
    a, b = _pair(n=2000)
    paired = stats.paired_bootstrap(a, b, n_boot=5000)
    unpaired_se = np.sqrt(a.mean() * (1 - a.mean()) / a.size + b.mean() * (1 - b.mean()) / b.size)
    assert paired.high - paired.low < 0.8 * 2 * 1.96 * unpaired_se


def test_mcnemar_equals_the_exact_binomial_test():
    a, b = _pair(n=700, rho_seed=3)
    only_a, only_b, p = stats.mcnemar(a, b)
    assert only_a == int((a & ~b).sum()) and only_b == int((~a & b).sum())
    assert p == pytest.approx(binomtest(only_a, only_a + only_b, 0.5).pvalue, rel=1e-9)


def test_deterministic_for_a_seed_and_accepts_tensors():
    a, b = _pair()
    i1 = stats.paired_bootstrap(torch.from_numpy(a), b.astype(int), n_boot=1000, seed=7)
    i2 = stats.paired_bootstrap(a, b, n_boot=1000, seed=7)
    assert i1 == i2
    assert stats.correct(torch.tensor([1, 0, 1]), np.array([1, 1, 1])).tolist() == [True, False, True]


@pytest.mark.parametrize(
    ("a", "b", "kwargs", "match"),
    [
        (np.ones((2, 3)), np.ones((2, 3)), {}, "must be 1-D"),
        (np.ones(3), np.ones(4), {}, "same examples: 3 against 4"),
        (np.array([0, 2, 1]), np.ones(3), {}, "bools or 0/1"),
        (np.array([]), np.array([]), {}, "is empty"),
        (np.ones(3), np.ones(3), {"level": 1.5}, "level must be in"),
        (np.ones(3), np.ones(3), {"n_boot": 10}, "n_boot must be at least 100"),
    ],
)
def test_bad_input_gets_a_clear_error(a, b, kwargs, match):
    with pytest.raises(ValueError, match=match):
        stats.paired_bootstrap(a, b, **kwargs)


def test_correct_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="same length"):
        stats.correct(np.ones(3), np.ones(4))


def test_bootstrap_ratio_is_a_weighted_mean_with_an_interval():
    rng = np.random.default_rng(0)
    chars = rng.integers(3, 12, size=500).astype(float)  # weights: characters per name
    diff = -0.4 * chars + rng.normal(0, 1, size=500)  # per-name loss difference (nats)
    i = stats.bootstrap_ratio(diff, chars, n_boot=4000)
    assert i.diff == pytest.approx(diff.sum() / chars.sum())
    assert i.low < i.diff < i.high < 0 and i.measurable
    with pytest.raises(ValueError, match="positive"):
        stats.bootstrap_ratio(diff, -chars)
    with pytest.raises(ValueError, match="NaN or inf"):
        stats.bootstrap_ratio(np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="one entry per example"):
        stats.bootstrap_ratio(diff, chars[:3])


def test_few_disagreements_are_inconclusive_not_measurable():
    a = np.ones(1500, dtype=bool)
    b = a.copy()
    b[:5] = False  # 5 against 0 disagreements: the bootstrap excludes 0, McNemar p = 0.0625
    c = stats.compare(a, b, n_boot=4000)
    assert c.interval.measurable and c.p_value == pytest.approx(0.0625)
    assert not c.measurable and c.inconclusive
    assert c.verdict("a", "b").startswith("inconclusive between a and b")


def test_seed_interval_is_the_paired_t_interval():
    from scipy.stats import ttest_rel

    a = np.array([0.81, 0.83, 0.80, 0.84])
    b = np.array([0.80, 0.80, 0.79, 0.81])
    i = stats.seed_interval(a, b)
    ci = ttest_rel(a, b).confidence_interval(0.95)
    assert i.diff == pytest.approx((a - b).mean())
    assert (i.low, i.high) == (pytest.approx(ci.low), pytest.approx(ci.high))
    assert stats.seed_interval(a - b) == i
    with pytest.raises(ValueError, match="at least 2 seeds"):
        stats.seed_interval([0.1])
    with pytest.raises(ValueError, match="one entry per seed"):
        stats.seed_interval(a, b[:2])


def test_verdict_carries_the_numbers_unless_told_not_to():
    a = np.ones(500, dtype=bool)
    b = a.copy()
    b[:100] = False
    c = stats.compare(a, b, n_boot=1000)
    assert "+20.0 [" in c.verdict("x", "y") and "points" in c.verdict("x", "y")
    assert "+20.0" not in c.verdict("x", "y", numbers=False)
