"""Exercise checks for chapter 7, "The Transformer block"."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from ..stats import seed_interval
from . import Case, CheckResult, register


def _gen(rng: np.random.Generator) -> torch.Generator:
    return torch.Generator().manual_seed(int(rng.integers(1 << 31)))


def layer_norm(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Reference: ``gamma * (x - mean) / sqrt(var + eps) + beta`` over the last dim, biased variance."""
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    return gamma * (x - mean) / torch.sqrt(var + eps) + beta


def _layer_norm_cases(rng: np.random.Generator) -> list[Case]:
    def case(name: str, shape: tuple[int, ...], shift: float, scale: float, eps: float | None = None) -> Case:
        g = _gen(rng)
        d = shape[-1]
        x = shift + scale * torch.randn(*shape, generator=g)
        gamma, beta = 1 + 0.5 * torch.randn(d, generator=g), torch.randn(d, generator=g)
        return Case(name, (x, gamma, beta), {} if eps is None else {"eps": eps})

    return [
        case("a batch of sequences with mean 3", (2, 5, 16), 3.0, 2.0),
        case("small feature dim (biased variance matters)", (4, 3), 0.0, 1.0),
        case("BERT's eps = 1e-12", (3, 32), -1.0, 0.5, eps=1e-12),
        case("large eps = 1.0", (2, 8), 1.0, 1.0, eps=1.0),
    ]


def feed_forward(x: torch.Tensor, W1: torch.Tensor, b1: torch.Tensor, W2: torch.Tensor, b2: torch.Tensor) -> torch.Tensor:
    """Reference: ``W2 max(0, W1 x + b1) + b2`` at every position; ``W1`` is ``(d_ff, d_model)``, ``W2`` ``(d_model, d_ff)``."""
    h = torch.clamp(x @ W1.T + b1, min=0)  # (..., d_ff)
    return h @ W2.T + b2  # (..., d_model)


def _ffn_cases(rng: np.random.Generator) -> list[Case]:
    def case(name: str, lead: tuple[int, ...], d: int, d_ff: int) -> Case:
        g = _gen(rng)
        x = torch.randn(*lead, d, generator=g)
        W1, b1 = torch.randn(d_ff, d, generator=g) / d**0.5, torch.randn(d_ff, generator=g)
        W2, b2 = torch.randn(d, d_ff, generator=g) / d_ff**0.5, torch.randn(d, generator=g)
        return Case(name, (x, W1, b1, W2, b2))

    return [
        case("one vector", (), 4, 16),
        case("a batch of sequences", (2, 6), 8, 32),
        case("d_ff = 4 d_model", (3, 5), 16, 64),
    ]


def positional_encoding(n_positions: int, d_model: int) -> torch.Tensor:
    """Reference: ``PE[pos, 2i] = sin(pos / 10000^(2i/d))``, ``PE[pos, 2i+1] = cos(pos / 10000^(2i/d))``, float32."""
    pos = torch.arange(n_positions, dtype=torch.float64)[:, None]
    two_i = torch.arange(0, d_model, 2, dtype=torch.float64)
    angle = pos / 10000 ** (two_i / d_model)
    pe = torch.zeros(n_positions, d_model, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(angle)
    pe[:, 1::2] = torch.cos(angle)
    return pe.float()


def _pe_cases(rng: np.random.Generator) -> list[Case]:
    return [Case(f"{n} positions, d_model = {d}", (n, d)) for n, d in ((4, 2), (10, 8), (50, 16), (128, 64))]


register("ch07.layer_norm", layer_norm, _layer_norm_cases)
register("ch07.feed_forward", feed_forward, _ffn_cases)
register("ch07.positional_encoding", positional_encoding, _pe_cases, atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------------------- experiments
def order_blind_ceiling(x: torch.Tensor) -> torch.Tensor:
    """Reference: for each digit sequence of ``x`` ``(n, L)``, (count of its most frequent digit) / ``L``.

    An order-blind (permutation-equivariant) model gives every position that holds the same digit the
    same prediction, and it cannot tell which arrangement of a multiset of digits it is looking at.
    Averaged over the arrangements, position ``j`` holds digit ``v`` and must output ``c`` in
    ``n_v n_c / L`` cases, so predicting ``c`` for ``v`` is right on average ``n_v n_c / L`` times:
    the best choice is the most frequent digit (the mode) everywhere, right ``max_c n_c`` times of ``L``.
    Returns float32 ``(n,)``, the expected sorting accuracy of the best order-blind model.
    """
    counts = torch.nn.functional.one_hot(x.long(), 10).sum(dim=1)  # (n, 10): how often each digit occurs
    return (counts.max(dim=-1).values / x.shape[1]).float()  # (n,)


def _ceiling_cases(rng: np.random.Generator) -> list[Case]:
    def random(name: str, n: int, length: int, high: int = 10) -> Case:
        return Case(name, (torch.randint(0, high, (n, length), generator=_gen(rng)),))

    return [
        random("a batch of 10-digit sequences", 8, 10),
        Case("all digits equal (an order-blind model can be perfect)", (torch.full((2, 6), 7),)),
        Case("all ten digits once each", (torch.randperm(10, generator=_gen(rng))[None, :],)),
        Case("one sequence, digits 3 3 1 3 1", (torch.tensor([[3, 3, 1, 3, 1]]),)),
        random("length 3, only digits 0-2 (many repeats)", 5, 3, high=3),
        random("length 40", 4, 40),
    ]


register("ch07.order_blind_ceiling", order_blind_ceiling, _ceiling_cases)


def _result(key: str, checks: list[tuple[str | None, str]]) -> CheckResult:
    """A :class:`CheckResult` from ``(failure or None, what was checked)`` pairs, stopping at the first failure."""
    passed = 0
    for failure, _ in checks:
        if failure is not None:
            return CheckResult(key, passed, len(checks), failure)
        passed += 1
    return CheckResult(key, passed, len(checks))


@torch.no_grad()
def check_order_blind(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, verbose: bool = True) -> CheckResult:
    """Check the "sorter without positional encoding" experiment of chapter 7.

    ``model`` maps digits ``x`` ``(n, L)`` to logits ``(n, L, 10)``; ``y`` ``(n, L)`` is the sorted ``x``.
    Passes when the model is order-blind (permuting the input positions permutes its logits the same
    way, so it no longer sees positions) and its accuracy respects :func:`order_blind_ceiling` (up to
    three standard errors over the sequences: the ceiling holds on average over arrangements). Prints
    the accuracy next to the ceiling.
    """
    key = "ch07.order_blind"
    if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor) and x.dim() == 2 and x.shape == y.shape):
        raise ValueError("check_order_blind: x and y must be tensors of the same shape (n, L)")
    was_training = model.training
    model.eval()
    try:
        logits = model(x)  # (n, L, 10)
        perm = torch.randperm(x.shape[1], generator=torch.Generator().manual_seed(0)).to(x.device)
        logits_perm = model(x[:, perm])  # (n, L, 10)
    finally:
        model.train(was_training)
    shape_ok = isinstance(logits, torch.Tensor) and logits.shape == (*x.shape, 10)
    failure_shape = (
        None
        if shape_ok
        else (
            f"the model must map digits {tuple(x.shape)} to logits {(*x.shape, 10)}, got "
            f"{tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__}"
        )
    )
    checks: list[tuple[str | None, str]] = [(failure_shape, "shape")]
    if failure_shape is None:
        gap = (logits_perm - logits[:, perm]).abs().max().item()
        scale = logits.abs().max().item() + 1e-6
        checks.append(
            (
                None
                if gap <= 1e-4 * scale + 1e-5
                else (
                    f"shuffling the input positions changed the logits by up to {gap:.3g} beyond shuffling them: "
                    "the model still sees positions (is the positional encoding still added?)"
                ),
                "order-blind",
            )
        )
        correct = (logits.argmax(-1) == y).float().mean(dim=1)  # (n,) accuracy per sequence
        ceiling = order_blind_ceiling(x.cpu()).to(correct.device)
        acc, top = correct.mean().item(), ceiling.mean().item()
        se = (correct - ceiling).std().item() / max(1, x.shape[0]) ** 0.5
        checks.append(
            (
                None
                if acc <= top + 3 * se + 1e-6
                else (f"accuracy {acc:.3f} is above the order-blind ceiling {top:.3f}; check that y is the sorted x"),
                "ceiling",
            )
        )
        if verbose and all(f is None for f, _ in checks):
            print(f"order-blind: yes; positions sorted right {acc:.3f}, ceiling (mode everywhere) {top:.3f}")
    result = _result(key, checks)
    if verbose:
        print(repr(result))
    return result


NO_DIFFERENCE = "no measurable difference"


def seed_verdict(results: Mapping[str, Sequence[float]], *, higher_is_better: bool = True) -> str:
    """The verdict two per-seed result lists support: the better name, or ``"no measurable difference"``.

    ``results`` maps two names to values measured with the same seeds, in the same order. A name wins
    only when the 95 % paired interval of the differences excludes zero.
    """
    (name_a, a), (name_b, b) = _two_lists(results)
    interval = seed_interval(a, b)
    if not interval.measurable:
        return NO_DIFFERENCE
    a_larger = interval.diff > 0
    return name_a if a_larger == higher_is_better else name_b


def _two_lists(results: Mapping[str, Sequence[float]]) -> list[tuple[str, list[float]]]:
    if not isinstance(results, Mapping) or len(results) != 2:
        raise ValueError(
            "results must map exactly two names to lists of per-seed values, e.g. {'post-norm': [...], 'pre-norm': [...]}"
        )
    items = [(str(k), [float(v) for v in vals]) for k, vals in results.items()]
    return items


def check_seed_verdict(
    results: Mapping[str, Sequence[float]], verdict: str, *, higher_is_better: bool = True, verbose: bool = True
) -> CheckResult:
    """Check a conclusion drawn from a seeded comparison (the Pre-LN / Post-LN exercise of chapter 7).

    ``results`` maps two variants to one value per seed (same seeds, same order, at least 3);
    ``verdict`` is the better variant's name or ``"no measurable difference"``. Passes when the
    verdict is the one the 95 % paired interval supports; prints the means and the interval.
    """
    key = "ch07.seed_verdict"
    try:
        (name_a, a), (name_b, b) = _two_lists(results)
    except (TypeError, ValueError) as err:
        result = CheckResult(key, 0, 3, f"results: {err}")
        if verbose:
            print(repr(result))
        return result
    checks: list[tuple[str | None, str]] = []
    enough = len(a) == len(b) and len(a) >= 3
    checks.append(
        (
            None if enough else (f"give the same number of seeds (at least 3) for both variants, got {len(a)} and {len(b)}"),
            "seeds",
        )
    )
    finite = all(math.isfinite(v) for v in a + b)
    checks.append(
        (
            None
            if finite
            else ("some values are not finite; record a finite measure (e.g. the accuracy) even for a run that diverged"),
            "finite",
        )
    )
    if enough and finite:
        interval = seed_interval(a, b)
        mean, low, high = interval.diff, interval.low, interval.high
        supported = seed_verdict(results, higher_is_better=higher_is_better)
        if verbose:
            print(
                f"{name_a}: mean {np.mean(a):.4g}; {name_b}: mean {np.mean(b):.4g}; "
                f"{name_a} - {name_b}: {mean:+.4g}, 95 % paired interval [{low:+.4g}, {high:+.4g}]"
            )
        options = (name_a, name_b, NO_DIFFERENCE)
        if verdict not in options:
            checks.append((f"verdict must be one of {options}, got {verdict!r}", "verdict"))
        else:
            checks.append(
                (None if verdict == supported else (f"your numbers support {supported!r}, not {verdict!r}"), "verdict")
            )
    result = _result(key, checks)
    if verbose:
        print(repr(result))
    return result
