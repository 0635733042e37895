"""Uncertainty of an accuracy difference between two models scored on the same examples.

Two classifiers evaluated on the same test snippets are *paired*: their errors are correlated, so
the interval of their difference is much narrower than the two separate intervals suggest. This
module gives the standard tools:

- :func:`paired_bootstrap`: resample the examples with replacement, recompute the difference of
  accuracies on each resample, and read the percentile interval (Efron and Tibshirani, 1993);
- :func:`bootstrap_ratio`: the same for any paired per-example difference, e.g. a loss per
  character (chapter 4 compares two language models with it);
- :func:`seed_interval`: a Student-t interval over training seeds, for effects the size of seed
  noise (one recipe against another, each trained on the same seeds);
- :func:`mcnemar`: the exact McNemar test, a binomial test on the examples where exactly one
  model is right (McNemar, 1947).

:func:`compare` runs both and says, in words, what the examples show. A difference is called
measurable only when the interval excludes 0 *and* the McNemar test rejects equal accuracy at the
same level; when they disagree (few disagreeing examples) the verdict says it is inconclusive. An
interval that contains 0 does not show that the models are equally good: differences up to its
ends are compatible with the data.

Introduced in chapter 3 (the CNN against the MLP on the same digits); chapter 4 compares language
models with :func:`bootstrap_ratio`; chapters 14 and 15 compare compressed models with :func:`compare`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

ArrayLike = Any  # a 1-D bool/0-1 array, list or tensor


def _as_correct(x: ArrayLike, name: str) -> np.ndarray:
    """A 1-D bool array of per-example correctness, with a clear error for anything else."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one entry per example), got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if arr.dtype != bool:
        if not np.issubdtype(arr.dtype, np.number) or not np.isin(arr, (0, 1)).all():
            raise ValueError(f"{name} must hold per-example correctness as bools or 0/1")
        arr = arr.astype(bool)
    return arr


def _pair(a: ArrayLike, b: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    ca, cb = _as_correct(a, "correct_a"), _as_correct(b, "correct_b")
    if ca.shape != cb.shape:
        raise ValueError(f"correct_a and correct_b must score the same examples: {ca.size} against {cb.size} entries")
    return ca, cb


def correct(preds: ArrayLike, labels: ArrayLike) -> np.ndarray:
    """Per-example correctness ``preds == labels`` as a bool array (both 1-D, same length)."""
    p = preds.detach().cpu().numpy() if isinstance(preds, torch.Tensor) else np.asarray(preds)
    y = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if p.ndim != 1 or y.ndim != 1 or p.shape != y.shape:
        raise ValueError(f"preds and labels must be 1-D and of the same length, got {p.shape} and {y.shape}")
    return p == y


@dataclass(frozen=True)
class Interval:
    """An estimate with an interval: a percentile bootstrap interval of a difference of
    accuracies ``a - b`` (:func:`paired_bootstrap`) or of any paired ratio
    (:func:`bootstrap_ratio`), or a Student-t interval over seeds (:func:`seed_interval`,
    ``n_boot = 0``)."""

    diff: float
    low: float
    high: float
    level: float
    n: int
    n_boot: int

    @property
    def measurable(self) -> bool:
        """True when the interval excludes 0."""
        return self.low > 0 or self.high < 0

    def points(self) -> str:
        """The difference and interval in percentage points, e.g. ``-0.4 [-1.1, +0.3]``.

        Only meaningful for proportions such as accuracies (it multiplies by 100)."""
        return f"{100 * self.diff:+.1f} [{100 * self.low:+.1f}, {100 * self.high:+.1f}]"


def _as_values(x: ArrayLike, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x, dtype=np.float64) if np.asarray(x).dtype != object else None
    if arr is None or arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of numbers (one entry per example)")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} holds NaN or inf")
    return arr


def bootstrap_ratio(
    numer: ArrayLike, denom: ArrayLike | None = None, *, n_boot: int = 10_000, level: float = 0.95, seed: int = 0
) -> Interval:
    """Percentile bootstrap interval of ``sum(numer) / sum(denom)``, resampling examples.

    ``numer[i]`` is example ``i``'s paired difference (e.g. model a's loss minus model b's on the
    same name); ``denom[i]`` its weight (e.g. its number of characters, for a per-character
    mean; default 1, a plain mean). Each resample draws ``n`` example indices with replacement and
    uses them for numerator and denominator alike. Deterministic for a given ``seed``.
    """
    num = _as_values(numer, "numer")
    den = np.ones_like(num) if denom is None else _as_values(denom, "denom")
    if den.shape != num.shape:
        raise ValueError(f"numer and denom must have one entry per example: {num.size} against {den.size}")
    if (den <= 0).any():
        raise ValueError("denom must be positive")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_boot < 100:
        raise ValueError(f"n_boot must be at least 100 for a percentile interval, got {n_boot}")
    rng = np.random.default_rng(seed)
    n = num.size
    ratios = np.empty(n_boot)
    for start in range(0, n_boot, 1000):  # chunks keep the index matrix small
        stop = min(n_boot, start + 1000)
        idx = rng.integers(0, n, size=(stop - start, n))  # (chunk, n)
        ratios[start:stop] = num[idx].sum(axis=1) / den[idx].sum(axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(ratios, [tail, 1 - tail])
    return Interval(float(num.sum() / den.sum()), float(low), float(high), level, n, n_boot)


def paired_bootstrap(
    correct_a: ArrayLike, correct_b: ArrayLike, *, n_boot: int = 10_000, level: float = 0.95, seed: int = 0
) -> Interval:
    """Percentile bootstrap interval of ``accuracy(a) - accuracy(b)`` over paired examples.

    Each resample draws ``n`` example indices with replacement and uses the *same* indices for
    both models, which is what makes the interval paired (:func:`bootstrap_ratio` of the
    per-example differences). Deterministic for a given ``seed``.
    """
    ca, cb = _pair(correct_a, correct_b)
    d = ca.astype(np.float64) - cb.astype(np.float64)  # per-example difference in {-1, 0, 1}
    return bootstrap_ratio(d, n_boot=n_boot, level=level, seed=seed)


def mcnemar(correct_a: ArrayLike, correct_b: ArrayLike) -> tuple[int, int, float]:
    """Exact two-sided McNemar test: ``(only_a_right, only_b_right, p_value)``.

    Under the null hypothesis that both models are equally accurate, each example on which they
    disagree is equally likely to favour either, so ``only_a_right`` is Binomial(n_disagree, 1/2).
    """
    ca, cb = _pair(correct_a, correct_b)
    n01 = int((ca & ~cb).sum())
    n10 = int((~ca & cb).sum())
    n = n01 + n10
    if n == 0:
        return n01, n10, 1.0
    k = min(n01, n10)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return n01, n10, float(min(1.0, 2 * tail))


def seed_interval(values_a: ArrayLike, values_b: ArrayLike | None = None, *, level: float = 0.95) -> Interval:
    """Student-t interval of the mean paired difference ``a - b`` over training seeds.

    ``values_a[s]`` and ``values_b[s]`` are one number per seed for two recipes trained on the
    same seed ``s`` (same initialisation and batch order where the recipes allow it), so each
    seed is one pair; with ``values_b=None``, ``values_a`` already holds the differences. This
    is the interval for effects the size of seed noise, which a bootstrap over test examples
    does not cover. Needs at least 2 seeds (3 or more to say anything). ``n_boot`` is 0.
    """
    from scipy.stats import t as student_t

    a = _as_values(values_a, "values_a")
    d = a if values_b is None else a - _as_values(values_b, "values_b") if len(np.atleast_1d(values_b)) == a.size else None
    if d is None:
        raise ValueError(f"values_a and values_b need one entry per seed each: {a.size} against {len(values_b)}")
    if d.size < 2:
        raise ValueError("a seed interval needs at least 2 seeds")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    half = float(student_t.ppf(0.5 + level / 2, d.size - 1) * d.std(ddof=1) / np.sqrt(d.size))
    return Interval(float(d.mean()), float(d.mean() - half), float(d.mean() + half), level, int(d.size), 0)


@dataclass(frozen=True)
class Comparison:
    """Both answers for one pair of models, and the sentence a chapter prints."""

    interval: Interval
    only_a: int
    only_b: int
    p_value: float

    @property
    def measurable(self) -> bool:
        """The interval excludes 0 and McNemar's test rejects equal accuracy at the same level."""
        return self.interval.measurable and self.p_value < 1 - self.interval.level

    @property
    def inconclusive(self) -> bool:
        """The two methods disagree: the interval excludes 0 but McNemar does not reject."""
        return self.interval.measurable and not self.measurable

    def verdict(self, name_a: str = "a", name_b: str = "b", *, numbers: bool = True) -> str:
        """One sentence: what these examples show about ``a - b``.

        With ``numbers`` (the default) the sentence carries the difference and its interval in
        points; pass ``numbers=False`` where the text states them already.
        """
        i = self.interval
        how = f"{100 * i.level:.0f} % paired bootstrap interval, McNemar p = {self.p_value:.2g}"
        if numbers:
            how = f"{i.points()} points, {how}"
        if self.measurable:
            better, worse = (name_a, name_b) if i.diff > 0 else (name_b, name_a)
            return f"{better} scored higher than {worse} on these {i.n} examples ({how})"
        if self.inconclusive:
            return (
                f"inconclusive between {name_a} and {name_b}: the interval excludes 0 but the "
                f"exact McNemar test does not reject equal accuracy ({how})"
            )
        return (
            f"the {i.n} examples do not tell {name_a} and {name_b} apart ({how}; differences up "
            f"to the interval's ends are compatible with them)"
        )


def compare(
    correct_a: ArrayLike, correct_b: ArrayLike, *, n_boot: int = 10_000, level: float = 0.95, seed: int = 0
) -> Comparison:
    """:func:`paired_bootstrap` and :func:`mcnemar` for models ``a`` and ``b`` on the same examples."""
    interval = paired_bootstrap(correct_a, correct_b, n_boot=n_boot, level=level, seed=seed)
    only_a, only_b, p = mcnemar(correct_a, correct_b)
    return Comparison(interval, only_a, only_b, p)


__all__ = ["Comparison", "Interval", "bootstrap_ratio", "compare", "correct", "mcnemar", "paired_bootstrap", "seed_interval"]
