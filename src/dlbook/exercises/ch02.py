"""Exercise checks for chapter 2, "Learning from data: tensors, autograd and the training loop"."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from ..train import warmup_lr_factor
from . import Case, register


def _gen(rng: np.random.Generator) -> torch.Generator:
    return torch.Generator().manual_seed(int(rng.integers(1 << 31)))


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Reference: mean over the batch of ``logsumexp(z_i) - z_{i, y_i}``; ``logits`` (N, K), ``targets`` (N,) int64."""
    log_probs = logits - torch.logsumexp(logits, dim=1, keepdim=True)  # (N, K), stable log-softmax
    return -log_probs.gather(1, targets[:, None]).mean()  # scalar


def _cross_entropy_cases(rng: np.random.Generator) -> list[Case]:
    def case(name: str, n: int, k: int, scale: float, shift: float = 0.0) -> Case:
        g = _gen(rng)
        logits = scale * torch.randn(n, k, generator=g) + shift
        targets = torch.randint(0, k, (n,), generator=g)
        return Case(name, (logits, targets))

    return [
        case("8 examples, 3 classes", 8, 3, 1.0),
        case("one example, 10 classes", 1, 10, 2.0),
        case("64 examples, 10 classes", 64, 10, 3.0),
        case("large logits (a softmax without the log-sum-exp trick overflows)", 5, 4, 30.0, shift=100.0),
        case("very confident logits (probabilities underflow to 0)", 6, 5, 60.0),
    ]


register("ch02.cross_entropy", cross_entropy, _cross_entropy_cases, atol=1e-5, rtol=1e-5)


def cross_entropy_grad(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Reference: the gradient of the mean cross-entropy, ``(softmax(z) - onehot(y)) / N``; (N, K)."""
    onehot = torch.nn.functional.one_hot(targets, logits.shape[1]).to(logits.dtype)  # (N, K)
    return (torch.softmax(logits, dim=1) - onehot) / len(targets)  # (N, K)


def loss_gradient(
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Wrap a loss ``loss_fn(logits, targets)`` into the function returning autograd's d loss / d logits.

    ``check("ch02.cross_entropy_grad", loss_gradient(my_cross_entropy))`` checks the backward pass
    of an answer to the cross-entropy exercise against the closed form.
    """

    def grad(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        z = logits.detach().clone().requires_grad_(True)  # (N, K)
        (g,) = torch.autograd.grad(loss_fn(z, targets), z)
        return g  # (N, K)

    return grad


register("ch02.cross_entropy_grad", cross_entropy_grad, _cross_entropy_cases, atol=1e-6, rtol=1e-5)


def adam_step(
    param: torch.Tensor,
    grad: torch.Tensor,
    m: torch.Tensor,
    v: torch.Tensor,
    t: int,
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Reference: one Adam step (step number ``t`` counts from 1); returns ``(new_param, new_m, new_v)``."""
    beta1, beta2 = betas
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad * grad
    m_hat = m / (1 - beta1**t)
    v_hat = v / (1 - beta2**t)
    return param - lr * m_hat / (v_hat.sqrt() + eps), m, v


def _adam_cases(rng: np.random.Generator) -> list[Case]:
    def case(name: str, shape: tuple[int, ...], t: int, fresh: bool, **kw: object) -> Case:
        g = _gen(rng)
        param, grad = torch.randn(*shape, generator=g), torch.randn(*shape, generator=g)
        if fresh:
            m, v = torch.zeros(shape), torch.zeros(shape)
        else:
            m, v = 0.1 * torch.randn(*shape, generator=g), 0.01 * torch.rand(*shape, generator=g)
        return Case(name, (param, grad, m, v, t), dict(kw))

    return [
        case("first step from zero moments", (5,), 1, True),
        case("step 3, a matrix", (3, 4), 3, False),
        case("step 1000 (bias corrections near 1)", (6,), 1000, False, lr=1e-2),
        case("other betas and eps", (2, 2), 7, False, betas=(0.8, 0.99), eps=1e-6),
        case("a large learning rate, step 2", (4,), 2, False, lr=0.1),
    ]


register("ch02.adam_step", adam_step, _adam_cases, atol=1e-6, rtol=1e-5)


def leaky_relu_gain(negative_slope: float) -> float:
    """Reference: the gain ``g`` (weight std ``g / sqrt(fan_in)``) that keeps the mean square of the
    activations constant through layers followed by ``leaky_relu(x, negative_slope)``.

    ``E[leaky(y)^2] = (1 + a^2) / 2 * Var(y)`` for symmetric ``y``, so ``g^2 = 2 / (1 + a^2)``:
    He's sqrt(2) at ``a = 0``, 1 (a linear layer) at ``a = 1``. The value of
    ``torch.nn.init.calculate_gain("leaky_relu", a)``.
    """
    return math.sqrt(2.0 / (1.0 + negative_slope**2))


def _gain_cases(rng: np.random.Generator) -> list[Case]:
    cases = [
        Case("a plain ReLU (slope 0)", (0.0,)),
        Case("PyTorch's default leaky slope 0.01", (0.01,)),
        Case("slope 0.2", (0.2,)),
        Case("slope 0.5", (0.5,)),
        Case("slope 1: no non-linearity at all", (1.0,)),
    ]
    for i in range(3):
        a = float(np.round(rng.uniform(0.02, 0.9), 3))
        cases.append(Case(f"random slope {i + 1}: {a}", (a,)))
    return cases


register("ch02.leaky_relu_gain", leaky_relu_gain, _gain_cases, atol=1e-9, rtol=1e-6)


def linear_warmup(step: int, warmup_steps: int, total_steps: int) -> float:
    """Reference: linear warm-up from 0 over ``warmup_steps``, then linear decay to 0 at ``total_steps``.

    The factor of ``transformers.get_linear_schedule_with_warmup`` at optimizer step ``step``
    (from 0): ``step / warmup_steps`` during the warm-up, then
    ``(total_steps - step) / (total_steps - warmup_steps)``.
    """
    return warmup_lr_factor(step, warmup_steps=warmup_steps, total_steps=total_steps, decay="linear")


def _warmup_cases(rng: np.random.Generator) -> list[Case]:
    cases = [
        Case("the first step of a warm-up (rate 0)", (0, 10, 100)),
        Case("in the middle of the warm-up", (4, 10, 100)),
        Case("the first step after the warm-up (full rate)", (10, 10, 100)),
        Case("a quarter of the way into the decay", (32, 10, 100)),
        Case("the last step", (99, 10, 100)),
        Case("no warm-up at all, step 0", (0, 0, 50)),
        Case("no warm-up at all, step 20", (20, 0, 50)),
    ]
    for i in range(4):
        total = int(rng.integers(20, 400))
        warm = int(rng.integers(1, total // 3))
        step = int(rng.integers(0, total))
        cases.append(Case(f"random schedule {i + 1}: step {step} of {total}, warm-up {warm}", (step, warm, total)))
    return cases


register("ch02.linear_warmup", linear_warmup, _warmup_cases, atol=1e-12, rtol=1e-9)

__all__ = ["adam_step", "cross_entropy", "leaky_relu_gain", "linear_warmup"]
