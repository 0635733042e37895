"""Exercise checks for chapter 14, "Knowledge distillation"."""

from __future__ import annotations

import numpy as np
import torch

from . import Case, register

# ----------------------------------------------------------------------------- soft cross-entropy


def soft_cross_entropy(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Reference: ``T**2`` times the cross-entropy of the softened teacher against the softened student.

    ``-T**2 * mean_n sum_c softmax(t_n / T)_c * log_softmax(s_n / T)_c`` for (N, C) logits, a scalar
    tensor. It differs from the KL form of the distillation loss by ``T**2`` times the teacher's
    entropy, which does not depend on the student.
    """
    p_t = torch.softmax(teacher_logits / temperature, dim=-1)
    return -(temperature**2) * (p_t * torch.log_softmax(student_logits / temperature, dim=-1)).sum(-1).mean()


def _soft_ce_cases(rng: np.random.Generator) -> list[Case]:
    def case(name: str, n: int, c: int, t: float, scale: float = 3.0) -> Case:
        g = torch.Generator().manual_seed(int(rng.integers(1 << 31)))
        return Case(name, (scale * torch.randn(n, c, generator=g), scale * torch.randn(n, c, generator=g), t))

    return [
        case("two classes at T = 1", 8, 2, 1.0),
        case("two classes at T = 4", 8, 2, 4.0),
        case("five classes at T = 2", 16, 5, 2.0),
        case("a temperature below 1", 4, 3, 0.5),
        case("one example, ten classes, T = 10", 1, 10, 10.0, scale=8.0),
    ]


register("ch14.soft_cross_entropy", soft_cross_entropy, _soft_ce_cases, atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- which layers to keep


def spread_layers(n_teacher: int, n_student: int) -> list[int]:
    """Reference: ``n_student`` teacher layer indices spread evenly, starting at layer 0.

    Index ``i`` of the student takes teacher layer ``(i * n_teacher) // n_student``: 6 -> 3 gives
    ``[0, 2, 4]`` (DistilBERT's choice, every other layer), 12 -> 4 gives ``[0, 3, 6, 9]``.
    """
    return [(i * n_teacher) // n_student for i in range(n_student)]


def _spread_cases(rng: np.random.Generator) -> list[Case]:
    cases = [
        Case("6 layers down to 3", (6, 3)),
        Case("12 layers down to 4", (12, 4)),
        Case("12 down to 6", (12, 6)),
        Case("6 down to 4 (not a divisor)", (6, 4)),
        Case("keep them all", (5, 5)),
        Case("keep one", (8, 1)),
    ]
    for _ in range(4):
        n = int(rng.integers(4, 30))
        k = int(rng.integers(1, n + 1))
        cases.append(Case(f"{n} layers down to {k}", (n, k)))
    return cases


register("ch14.spread_layers", spread_layers, _spread_cases, atol=0, rtol=0)


# ----------------------------------------------------------------------------- gain over seeds


def seed_gain_interval(acc_distilled: list[float], acc_labels: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """Reference: ``(mean, low, high)`` of distillation's gain over seeds, paired by seed.

    ``acc_distilled[s]`` and ``acc_labels[s]`` are the test accuracies of the two arms trained
    with seed ``s``. The per-seed differences ``d_s`` are paired (same seed, same batch order), so
    the interval is Student's t interval of their mean, ``mean +- t * sd / sqrt(k)`` with the
    sample standard deviation (``ddof=1``) and ``t`` the ``(1 + level) / 2`` quantile of the t
    distribution with ``k - 1`` degrees of freedom. Chapter 14's seed exercise.
    """
    from scipy.stats import t

    d = np.asarray(acc_distilled, dtype=np.float64) - np.asarray(acc_labels, dtype=np.float64)
    k = d.size
    mean = float(d.mean())
    half = float(t.ppf((1 + level) / 2, k - 1) * d.std(ddof=1) / np.sqrt(k))
    return mean, mean - half, mean + half


def _seed_cases(rng: np.random.Generator) -> list[Case]:
    cases = [
        Case("four seeds, a consistent gain", ([0.812, 0.815, 0.809, 0.818], [0.801, 0.806, 0.800, 0.805])),
        Case("three seeds, gains of both signs", ([0.812, 0.800, 0.809], [0.805, 0.806, 0.801])),
        Case("two seeds", ([0.80, 0.82], [0.79, 0.80])),
        Case("a 90 % interval", ([0.812, 0.815, 0.809, 0.818], [0.801, 0.806, 0.800, 0.805]), {"level": 0.9}),
    ]
    for i in range(3):
        k = int(rng.integers(3, 8))
        base = rng.uniform(0.75, 0.85, k)
        cases.append(
            Case(f"random accuracies {i + 1}: {k} seeds", ((base + rng.normal(0.005, 0.01, k)).tolist(), base.tolist()))
        )
    return cases


register("ch14.seed_gain_interval", seed_gain_interval, _seed_cases, atol=1e-6, rtol=1e-6)
