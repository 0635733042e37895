"""The chapter 2 exercise checks pass the reference and fail plausible wrong answers."""

import math

import torch
import torch.nn.functional as F

from dlbook import exercises


def test_all_registered():
    assert exercises.known("ch02") == [
        "ch02.adam_step",
        "ch02.cross_entropy",
        "ch02.cross_entropy_grad",
        "ch02.leaky_relu_gain",
        "ch02.linear_warmup",
    ]


def test_references_pass():
    for key in exercises.known("ch02"):
        assert exercises.check(key, exercises.reference(key), verbose=False)


# ---------------------------------------------------------------- cross_entropy


def test_cross_entropy_torch_passes():
    assert exercises.check("ch02.cross_entropy", lambda z, y: F.cross_entropy(z, y), verbose=False)


def test_cross_entropy_naive_softmax_fails():
    def wrong(z, y):  # softmax without subtracting the max, then log: overflows / underflows
        p = z.exp() / z.exp().sum(1, keepdim=True)
        return -p.log().gather(1, y[:, None]).mean()

    result = exercises.check("ch02.cross_entropy", wrong, verbose=False)
    assert not result and "large logits" in result.failure


def test_cross_entropy_stable_softmax_then_log_fails():
    def wrong(z, y):  # max-shifted softmax, but the log of a probability that underflowed to 0 is -inf
        p = torch.softmax(z, dim=1)
        return -p.log().gather(1, y[:, None]).mean()

    result = exercises.check("ch02.cross_entropy", wrong, verbose=False)
    assert not result and "confident" in result.failure


def test_cross_entropy_sum_instead_of_mean_fails():
    def wrong(z, y):
        return F.cross_entropy(z, y, reduction="sum")

    result = exercises.check("ch02.cross_entropy", wrong, verbose=False)
    assert not result and "8 examples" in result.failure


def test_cross_entropy_per_example_fails():
    result = exercises.check("ch02.cross_entropy", lambda z, y: F.cross_entropy(z, y, reduction="none"), verbose=False)
    assert not result and "shape" in result.failure


def test_cross_entropy_grad_torch_passes():
    from dlbook.exercises.ch02 import loss_gradient

    assert exercises.check("ch02.cross_entropy_grad", loss_gradient(F.cross_entropy), verbose=False)


def test_cross_entropy_grad_nan_in_the_confident_case_fails():
    from dlbook.exercises.ch02 import loss_gradient

    def wrong(z, y):  # right values (underflowed probabilities replaced), but log(0) poisons backward
        p = torch.softmax(z, dim=1)
        log_p = torch.where(p > 0, p.log(), F.log_softmax(z, dim=1))
        return -log_p.gather(1, y[:, None]).mean()

    assert exercises.check("ch02.cross_entropy", wrong, verbose=False)  # forward alone is fooled
    result = exercises.check("ch02.cross_entropy_grad", loss_gradient(wrong), verbose=False)
    assert not result and "confident" in result.failure


def test_cross_entropy_grad_sum_instead_of_mean_fails():
    from dlbook.exercises.ch02 import loss_gradient

    result = exercises.check(
        "ch02.cross_entropy_grad", loss_gradient(lambda z, y: F.cross_entropy(z, y, reduction="sum")), verbose=False
    )
    assert not result and "8 examples" in result.failure


def test_cross_entropy_stub_reports_not_yet():
    def stub(z, y):
        raise NotImplementedError

    result = exercises.check("ch02.cross_entropy", stub, verbose=False)
    assert not result and "NotImplementedError" in result.failure


# ---------------------------------------------------------------- adam_step


def _torch_adam(param, grad, m, v, t, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
    """torch.optim.Adam brought to step t-1 with the given moments, then stepped once."""
    p = param.clone().requires_grad_(True)
    opt = torch.optim.Adam([p], lr=lr, betas=betas, eps=eps)
    p.grad = grad.clone()
    opt.step()  # creates the state
    with torch.no_grad():
        p.copy_(param)
    state = opt.state[p]
    state["exp_avg"].copy_(m)
    state["exp_avg_sq"].copy_(v)
    state["step"].fill_(t - 1)
    opt.step()
    return p.detach(), state["exp_avg"].clone(), state["exp_avg_sq"].clone()


def test_adam_torch_passes():
    assert exercises.check("ch02.adam_step", _torch_adam, verbose=False)


def test_adam_without_bias_correction_fails():
    def wrong(param, grad, m, v, t, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        b1, b2 = betas
        m = b1 * m + (1 - b1) * grad
        v = b2 * v + (1 - b2) * grad**2
        return param - lr * m / (v.sqrt() + eps), m, v

    result = exercises.check("ch02.adam_step", wrong, verbose=False)
    assert not result and "first step" in result.failure


def test_adam_eps_inside_sqrt_fails():
    def wrong(param, grad, m, v, t, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        b1, b2 = betas
        m = b1 * m + (1 - b1) * grad
        v = b2 * v + (1 - b2) * grad**2
        m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
        return param - lr * m_hat / (v_hat + eps**0.5).sqrt(), m, v

    assert not exercises.check("ch02.adam_step", wrong, verbose=False)


def test_adam_forgetting_to_return_moments_fails():
    def wrong(param, grad, m, v, t, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        new_param, _, _ = exercises.reference("ch02.adam_step")(param, grad, m, v, t, lr, betas, eps)
        return new_param, m, v  # the old moments

    assert not exercises.check("ch02.adam_step", wrong, verbose=False)


def test_adam_ignoring_betas_argument_fails():
    def wrong(param, grad, m, v, t, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        return exercises.reference("ch02.adam_step")(param, grad, m, v, t, lr, (0.9, 0.999), eps)

    result = exercises.check("ch02.adam_step", wrong, verbose=False)
    assert not result and "betas" in result.failure


# ---------------------------------------------------------------- leaky_relu_gain


def test_gain_torch_passes():
    assert exercises.check("ch02.leaky_relu_gain", lambda a: torch.nn.init.calculate_gain("leaky_relu", a), verbose=False)


def test_gain_he_everywhere_fails():
    result = exercises.check("ch02.leaky_relu_gain", lambda a: math.sqrt(2), verbose=False)
    assert not result and "slope 0.01" in result.failure


def test_gain_without_the_square_fails():
    assert not exercises.check("ch02.leaky_relu_gain", lambda a: math.sqrt(2 / (1 + a)), verbose=False)


def test_gain_variance_instead_of_std_fails():
    result = exercises.check("ch02.leaky_relu_gain", lambda a: 2 / (1 + a * a), verbose=False)
    assert not result and "slope 0" in result.failure


# ---------------------------------------------------------------- linear_warmup


def _hf_linear(step, warmup_steps, total_steps):
    from transformers import get_linear_schedule_with_warmup

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    return get_linear_schedule_with_warmup(opt, warmup_steps, total_steps).lr_lambdas[0](step)


def test_linear_warmup_transformers_passes():
    assert exercises.check("ch02.linear_warmup", _hf_linear, verbose=False)


def test_linear_warmup_off_by_one_fails():
    def wrong(step, warmup_steps, total_steps):  # starts at 1 / W instead of 0
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return (total_steps - step) / (total_steps - warmup_steps)

    result = exercises.check("ch02.linear_warmup", wrong, verbose=False)
    assert not result and "first step" in result.failure


def test_linear_warmup_decay_ignoring_the_warmup_fails():
    def wrong(step, warmup_steps, total_steps):  # decays over all steps, not the remaining ones
        if step < warmup_steps:
            return step / warmup_steps
        return (total_steps - step) / total_steps

    result = exercises.check("ch02.linear_warmup", wrong, verbose=False)
    assert not result and "after the warm-up" in result.failure


def test_linear_warmup_cosine_decay_fails():
    def wrong(step, warmup_steps, total_steps):
        if step < warmup_steps:
            return step / warmup_steps
        return 0.5 * (1 + math.cos(math.pi * (step - warmup_steps) / (total_steps - warmup_steps)))

    result = exercises.check("ch02.linear_warmup", wrong, verbose=False)
    assert not result and "decay" in result.failure


def test_linear_warmup_dividing_by_zero_warmup_fails():
    def wrong(step, warmup_steps, total_steps):  # no guard for warmup_steps == 0
        factor = step / warmup_steps
        return factor if factor < 1 else (total_steps - step) / (total_steps - warmup_steps)

    result = exercises.check("ch02.linear_warmup", wrong, verbose=False)
    assert not result and "ZeroDivisionError" in result.failure
