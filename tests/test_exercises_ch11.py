"""The chapter 11 exercise check passes the reference and fails plausible wrong answers."""

import math

import pytest
from scipy.stats import beta
from statsmodels.stats.proportion import proportion_confint

from dlbook import exercises
from dlbook.exercises.ch11 import exact_interval


def test_all_registered():
    assert exercises.known("ch11") == ["ch11.exact_interval"]


def test_reference_passes():
    assert exercises.check("ch11.exact_interval", exercises.reference("ch11.exact_interval"), verbose=False)


@pytest.mark.parametrize("k,n,alpha", [(0, 10, 0.05), (10, 10, 0.05), (7, 31, 0.05), (850, 1000, 0.1), (1, 2, 0.01)])
def test_reference_matches_statsmodels(k, n, alpha):
    low, high = proportion_confint(k, n, alpha=alpha, method="beta")
    assert exact_interval(k, n, alpha) == pytest.approx((low, high), abs=1e-10)


def test_wald_interval_fails():
    def wald(successes, n, alpha=0.05):  # the normal approximation: too narrow at the edges
        p = successes / n
        half = 1.959964 * math.sqrt(p * (1 - p) / n)
        return max(0.0, p - half), min(1.0, p + half)

    result = exercises.check("ch11.exact_interval", wald, verbose=False)
    assert not result and "85 right" in result.failure


def test_off_by_one_beta_parameters_fail():
    def wrong(successes, n, alpha=0.05):  # Beta(k, n - k) for both ends
        k = successes
        low = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k))
        high = 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k, n - k))
        return low, high

    assert not exercises.check("ch11.exact_interval", wrong, verbose=False)


def test_forgetting_the_edges_fails():
    def wrong(successes, n, alpha=0.05):  # no special case: NaN at k = 0 and k = n
        k = successes
        return float(beta.ppf(alpha / 2, k, n - k + 1)), float(beta.ppf(1 - alpha / 2, k + 1, n - k))

    result = exercises.check("ch11.exact_interval", wrong, verbose=False)
    assert not result and "k = n" in result.failure


def test_one_sided_alpha_fails():
    def wrong(successes, n, alpha=0.05):  # alpha instead of alpha / 2 in each tail
        k = successes
        low = 0.0 if k == 0 else float(beta.ppf(alpha, k, n - k + 1))
        high = 1.0 if k == n else float(beta.ppf(1 - alpha, k + 1, n - k))
        return low, high

    assert not exercises.check("ch11.exact_interval", wrong, verbose=False)


def test_stub_reports_not_yet():
    def stub(successes, n, alpha=0.05):
        raise NotImplementedError

    result = exercises.check("ch11.exact_interval", stub, verbose=False)
    assert not result and "NotImplementedError" in result.failure
