"""The chapter 14 exercise checks pass the reference and fail plausible wrong answers."""

import torch
import torch.nn.functional as F

from dlbook import exercises
from dlbook.distill import distillation_loss
from dlbook.exercises.ch14 import seed_gain_interval, soft_cross_entropy, spread_layers


def test_all_registered():
    assert exercises.known("ch14") == ["ch14.seed_gain_interval", "ch14.soft_cross_entropy", "ch14.spread_layers"]


def test_references_pass():
    for key in exercises.known("ch14"):
        assert exercises.check(key, exercises.reference(key), verbose=False)


def test_soft_ce_differs_from_kl_by_teacher_entropy():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g)
    p_t = torch.softmax(t / 2, -1)
    entropy = -(p_t * p_t.log()).sum(-1).mean()
    kl = distillation_loss(s, t, None, temperature=2.0, alpha=0.0)
    torch.testing.assert_close(soft_cross_entropy(s, t, 2.0), kl + 4 * entropy)
    torch.testing.assert_close(soft_cross_entropy(s, t, 2.0), 4 * F.cross_entropy(s / 2, p_t))


def test_soft_ce_wrong_answers_fail():
    def no_t_squared(s, t, temperature):
        return -(torch.softmax(t / temperature, -1) * torch.log_softmax(s / temperature, -1)).sum(-1).mean()

    def kl_instead(s, t, temperature):
        return distillation_loss(s, t, None, temperature=temperature, alpha=0.0)

    def student_unsoftened(s, t, temperature):
        return -(temperature**2) * (torch.softmax(t / temperature, -1) * torch.log_softmax(s, -1)).sum(-1).mean()

    for wrong in (no_t_squared, kl_instead, student_unsoftened):
        assert not exercises.check("ch14.soft_cross_entropy", wrong, verbose=False)


def test_spread_layers():
    assert spread_layers(6, 3) == [0, 2, 4]
    assert spread_layers(12, 4) == [0, 3, 6, 9]

    def last_layers(n_teacher, n_student):
        return list(range(n_teacher - n_student, n_teacher))

    def rounded(n_teacher, n_student):
        return [round(i * (n_teacher - 1) / max(1, n_student - 1)) for i in range(n_student)]

    for wrong in (last_layers, rounded):
        assert not exercises.check("ch14.spread_layers", wrong, verbose=False)


def test_seed_gain_interval():
    import numpy as np
    from scipy import stats

    a, b = [0.812, 0.815, 0.809, 0.818], [0.801, 0.806, 0.800, 0.805]
    mean, low, high = seed_gain_interval(a, b)
    ref = stats.ttest_rel(a, b).confidence_interval(0.95)  # scipy's paired t interval
    assert np.isclose(mean, np.mean(np.subtract(a, b))) and np.allclose((low, high), (ref.low, ref.high))
    assert low > 0  # a consistent gain: the interval excludes 0

    def unpaired(x, y, level=0.95):  # ignores the pairing: the spread of each arm
        x, y = np.asarray(x), np.asarray(y)
        half = stats.t.ppf((1 + level) / 2, x.size - 1) * np.hypot(x.std(ddof=1), y.std(ddof=1)) / np.sqrt(x.size)
        return float(x.mean() - y.mean()), float(x.mean() - y.mean() - half), float(x.mean() - y.mean() + half)

    def normal_quantile(x, y, level=0.95):  # 1.96 instead of t: too narrow for a few seeds
        d = np.subtract(x, y)
        half = stats.norm.ppf((1 + level) / 2) * d.std(ddof=1) / np.sqrt(d.size)
        return float(d.mean()), float(d.mean() - half), float(d.mean() + half)

    def population_sd(x, y, level=0.95):  # ddof=0
        d = np.subtract(x, y)
        half = stats.t.ppf((1 + level) / 2, d.size - 1) * d.std() / np.sqrt(d.size)
        return float(d.mean()), float(d.mean() - half), float(d.mean() + half)

    for wrong in (unpaired, normal_quantile, population_sd):
        assert not exercises.check("ch14.seed_gain_interval", wrong, verbose=False)
