"""Exercise checks for chapter 11, "Sharing and serving: model cards and a demo"."""

from __future__ import annotations

import numpy as np
from scipy.stats import beta

from . import Case, register

# ----------------------------------------------------------------------------- exact (Clopper-Pearson) interval


def exact_interval(successes: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Reference: the Clopper-Pearson ("exact") ``1 - alpha`` interval for a proportion ``successes / n``.

    ``low = Beta(alpha/2; k, n - k + 1)`` quantile (0 when ``k = 0``) and
    ``high = Beta(1 - alpha/2; k + 1, n - k)`` quantile (1 when ``k = n``), as Python floats.
    The same numbers as ``statsmodels.stats.proportion.proportion_confint(k, n, alpha, method="beta")``.
    """
    k = int(successes)
    low = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    high = 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return low, high


def _exact_cases(rng: np.random.Generator) -> list[Case]:
    cases = [
        Case("85 right out of 100", (85, 100)),
        Case("a small bin: 9 right out of 12", (9, 12)),
        Case("every prediction right (k = n)", (40, 40)),
        Case("every prediction wrong (k = 0)", (0, 25)),
        Case("a 90 % interval instead of 95 %", (30, 50), {"alpha": 0.10}),
        Case("a large test set: 1,281 right out of 1,500", (1281, 1500)),
    ]
    for i in range(4):
        n = int(rng.integers(5, 2_000))
        k = int(rng.integers(1, n))
        cases.append(Case(f"random bin {i + 1}: {k} right out of {n}", (k, n)))
    return cases


register("ch11.exact_interval", exact_interval, _exact_cases, atol=1e-7, rtol=1e-6)
