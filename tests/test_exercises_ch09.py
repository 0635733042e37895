"""The chapter 9 exercise checks pass the reference and fail plausible wrong answers."""

import math

import pytest
import torch
import torch.nn.functional as F

from dlbook import exercises
from dlbook.exercises.ch09 import best_temperature, cosine_warmup_lr


def test_all_registered():
    assert exercises.known("ch09") == ["ch09.best_temperature", "ch09.cosine_warmup_lr"]


def test_references_pass():
    for key in exercises.known("ch09"):
        assert exercises.check(key, exercises.reference(key), verbose=False)


# --------------------------------------------------------------------------- cosine schedule


@pytest.mark.parametrize("warmup,total", [(0, 30), (3, 30), (10, 101), (32, 321)])
def test_cosine_reference_matches_transformers(warmup, total):
    from transformers import get_cosine_schedule_with_warmup

    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=2e-5)
    sched = get_cosine_schedule_with_warmup(opt, num_warmup_steps=warmup, num_training_steps=total)
    for step in range(total):
        assert cosine_warmup_lr(step, warmup, total, 2e-5) == pytest.approx(sched.get_last_lr()[0], rel=1e-9, abs=1e-15)
        opt.step()
        sched.step()


def test_cosine_without_warmup_fails():
    def wrong(step, warmup_steps, total_steps, base_lr):  # forgets the warm-up
        return base_lr * 0.5 * (1 + math.cos(math.pi * step / total_steps))

    result = exercises.check("ch09.cosine_warmup_lr", wrong, verbose=False)
    assert not result and "warm-up" in result.failure


def test_cosine_over_whole_run_fails():
    def wrong(step, warmup_steps, total_steps, base_lr):  # decays over the whole run, not after the warm-up
        if step < warmup_steps:
            return base_lr * step / warmup_steps
        return base_lr * 0.5 * (1 + math.cos(math.pi * step / total_steps))

    assert not exercises.check("ch09.cosine_warmup_lr", wrong, verbose=False)


def test_linear_decay_fails():
    def wrong(step, warmup_steps, total_steps, base_lr):  # the linear schedule of the chapter
        if step < warmup_steps:
            return base_lr * step / warmup_steps
        return base_lr * max(0.0, (total_steps - step) / (total_steps - warmup_steps))

    result = exercises.check("ch09.cosine_warmup_lr", wrong, verbose=False)
    assert not result and "quarter" in result.failure


def test_cosine_stub_reports_not_yet():
    def stub(step, warmup_steps, total_steps, base_lr):
        raise NotImplementedError

    result = exercises.check("ch09.cosine_warmup_lr", stub, verbose=False)
    assert not result and "NotImplementedError" in result.failure


# --------------------------------------------------------------------------- temperature scaling


def test_temperature_reference_lowers_nll():
    torch.manual_seed(0)
    labels = torch.randint(0, 2, (500,))
    logits = torch.randn(500, 2)
    logits[torch.arange(500), labels] += 1.0
    logits *= 5  # over-confident
    grid = torch.linspace(0.25, 5, 39)
    t = best_temperature(logits, labels, grid)
    assert t > 1.0
    assert F.cross_entropy(logits / t, labels) < F.cross_entropy(logits, labels)


def test_temperature_by_a_loop_passes():
    def loop(logits, labels, temperatures):
        best, best_nll = None, math.inf
        for t in temperatures.tolist():
            logp = torch.log_softmax(logits / t, dim=-1)
            nll = -logp[torch.arange(len(labels)), labels].mean().item()
            if nll < best_nll - 1e-12:
                best, best_nll = t, nll
        return best

    assert exercises.check("ch09.best_temperature", loop, verbose=False)


def test_temperature_multiplying_fails():
    def wrong(logits, labels, temperatures):  # logits * T instead of logits / T
        nll = torch.stack([F.cross_entropy(logits * t, labels) for t in temperatures])
        return float(temperatures[nll.argmin()])

    assert not exercises.check("ch09.best_temperature", wrong, verbose=False)


def test_temperature_by_accuracy_fails():
    def wrong(logits, labels, temperatures):  # accuracy does not depend on T: always the first one
        acc = torch.stack([((logits / t).argmax(-1) == labels).float().mean() for t in temperatures])
        return float(temperatures[acc.argmax()])

    assert not exercises.check("ch09.best_temperature", wrong, verbose=False)


def test_temperature_returning_the_loss_fails():
    def wrong(logits, labels, temperatures):
        return float(min(F.cross_entropy(logits / t, labels) for t in temperatures))

    assert not exercises.check("ch09.best_temperature", wrong, verbose=False)
