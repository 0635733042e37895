"""The chapter 14 exercise checks pass the reference and fail plausible wrong answers."""

import torch
import torch.nn.functional as F

from dlbook import exercises
from dlbook.distill import distillation_loss
from dlbook.exercises.ch14 import soft_cross_entropy, spread_layers


def test_all_registered():
    assert exercises.known("ch14") == ["ch14.soft_cross_entropy", "ch14.spread_layers"]


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
