"""Code exercises that check themselves.

A chapter's exercise gives the reader a stub and one line::

    dlbook.exercises.check("ch06.scaled_attention", my_attention)

``check`` runs hidden cases (random shapes, edge cases) through the reader's function and the
reference solution and says in plain words which case failed and how (shape, dtype, values,
an exception). It returns a :class:`CheckResult` that is truthy only when every case passed;
it never raises on a wrong answer, so a notebook with an unfinished exercise still runs.

Exercises live in one module per chapter, ``dlbook/exercises/chNN.py``, which calls
:func:`register`; ``check("chNN.name", ...)`` imports that module on first use.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch


@dataclass(frozen=True)
class Case:
    """One hidden test case: a description for the reader and the arguments to call with."""

    name: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Exercise:
    key: str
    reference: Callable[..., Any]
    make_cases: Callable[[np.random.Generator], Sequence[Case]]
    atol: float = 1e-5
    rtol: float = 1e-4


@dataclass
class CheckResult:
    key: str
    passed: int
    total: int
    failure: str | None = None

    def __bool__(self) -> bool:
        return self.failure is None and self.passed == self.total

    def __repr__(self) -> str:
        if self:
            return f"{self.key}: correct, all {self.total} hidden cases pass"
        return f"{self.key}: not yet ({self.passed}/{self.total} cases pass). {self.failure}"

    def _ipython_display_(self) -> None:
        """Show nothing as a cell's last value: ``check`` has already printed the verdict."""


_REGISTRY: dict[str, Exercise] = {}


def register(
    key: str,
    reference: Callable[..., Any],
    make_cases: Callable[[np.random.Generator], Sequence[Case]],
    *,
    atol: float = 1e-5,
    rtol: float = 1e-4,
) -> Exercise:
    """Add an exercise; ``make_cases(rng)`` builds the hidden cases from a seeded generator."""
    if "." not in key:
        raise ValueError(f"exercise key must look like 'chNN.name', got {key!r}")
    if key in _REGISTRY:
        raise ValueError(f"exercise {key!r} is registered twice")
    ex = Exercise(key, reference, make_cases, atol, rtol)
    _REGISTRY[key] = ex
    return ex


def _load(key: str) -> Exercise:
    if not isinstance(key, str) or "." not in key:
        raise ValueError(f"exercise key must look like 'chNN.name', got {key!r}")
    chapter = key.split(".", 1)[0]
    if key not in _REGISTRY:
        try:
            importlib.import_module(f"{__name__}.{chapter}")
        except ModuleNotFoundError as err:
            raise KeyError(f"no exercises for chapter {chapter!r}") from err
    if key not in _REGISTRY:
        known = sorted(k for k in _REGISTRY if k.startswith(chapter + "."))
        raise KeyError(f"unknown exercise {key!r}; {chapter} has: {', '.join(known) or 'none'}")
    return _REGISTRY[key]


def reference(key: str) -> Callable[..., Any]:
    """The reference solution of an exercise (what the toggled solution in the book shows)."""
    return _load(key).reference


def known(chapter: str | None = None) -> list[str]:
    """The keys of the registered exercises (importing every chapter module when asked for all)."""
    import pkgutil

    for info in pkgutil.iter_modules(__path__):
        if chapter is None or info.name == chapter:
            importlib.import_module(f"{__name__}.{info.name}")
    return sorted(k for k in _REGISTRY if chapter is None or k.startswith(chapter + "."))


def _describe(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        return f"tensor of shape {tuple(x.shape)} and dtype {x.dtype}"
    if isinstance(x, np.ndarray):
        return f"array of shape {x.shape} and dtype {x.dtype}"
    return f"{type(x).__name__} {x!r}"[:120]


def compare(got: Any, want: Any, atol: float, rtol: float, where: str = "the result") -> str | None:
    """None if ``got`` matches ``want``, else a plain-words description of the first difference."""
    if isinstance(want, torch.Tensor):
        if not isinstance(got, torch.Tensor):
            return f"{where} should be a tensor, got {_describe(got)}"
        if got.shape != want.shape:
            return f"{where} has shape {tuple(got.shape)}, expected {tuple(want.shape)}"
        if got.dtype != want.dtype:
            return f"{where} has dtype {got.dtype}, expected {want.dtype}"
        g, w = got.detach().cpu(), want.detach().cpu()
        if g.is_floating_point() or g.is_complex():
            if not torch.allclose(g, w, atol=atol, rtol=rtol, equal_nan=True):
                err = (g - w).abs()
                both_nan = torch.isnan(g) & torch.isnan(w)
                err = torch.where(both_nan, torch.zeros_like(err), err)  # NaN where NaN is expected: fine
                err = torch.where(torch.isnan(err), torch.full_like(err, float("inf")), err)  # unexpected NaN
                i = tuple(int(v) for v in torch.nonzero(err == err.max())[0]) if err.numel() else ()
                return (
                    f"{where} has the right shape but wrong values: largest error {err.max().item():.3g} "
                    f"at index {i} (got {g[i].item():.6g}, expected {w[i].item():.6g})"
                )
        elif not torch.equal(g, w):
            return f"{where} has the right shape but {int((g != w).sum())} wrong entries"
        return None
    if isinstance(want, np.ndarray):
        return compare(
            torch.as_tensor(np.asarray(got)) if not isinstance(got, torch.Tensor) else got,
            torch.as_tensor(want),
            atol,
            rtol,
            where,
        )
    if isinstance(want, (tuple, list)):
        if not isinstance(got, (tuple, list)) or len(got) != len(want):
            return f"{where} should be a sequence of {len(want)} items, got {_describe(got)}"
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            msg = compare(g, w, atol, rtol, f"item {i} of {where}")
            if msg:
                return msg
        return None
    if isinstance(want, (bool, int)):
        return None if got == want else f"{where} is {got!r}, expected {want!r}"
    if isinstance(want, float):
        try:
            ok = math.isclose(float(got), want, rel_tol=rtol, abs_tol=atol)
        except (TypeError, ValueError):
            return f"{where} should be a number, got {_describe(got)}"
        return None if ok else f"{where} is {float(got):.6g}, expected {want:.6g}"
    return None if got == want else f"{where} is {got!r}, expected {want!r}"


def _clone(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.clone()
    if isinstance(x, np.ndarray):
        return x.copy()
    if isinstance(x, tuple):
        return tuple(_clone(v) for v in x)
    if isinstance(x, list):
        return [_clone(v) for v in x]
    if isinstance(x, dict):
        return {k: _clone(v) for k, v in x.items()}
    return x


def check(key: str, fn: Callable[..., Any], *, seed: int = 0, verbose: bool = True) -> CheckResult:
    """Run the hidden cases of exercise ``key`` through ``fn`` and report, in plain words."""
    if not callable(fn):
        raise TypeError(f"check() needs your function, got {fn!r}")
    ex = _load(key)
    cases = list(ex.make_cases(np.random.default_rng(seed)))
    passed = 0
    failure = None
    for case in cases:
        want = ex.reference(*_clone(case.args), **_clone(case.kwargs))
        try:
            got = fn(*_clone(case.args), **_clone(case.kwargs))
        except NotImplementedError:
            failure = "Your function raises NotImplementedError: fill in the stub first."
            break
        except Exception as err:  # the reader's code: report, don't crash the notebook
            failure = f"Case '{case.name}': your function raised {type(err).__name__}: {err}"
            break
        msg = compare(got, want, ex.atol, ex.rtol)
        if msg:
            failure = f"Case '{case.name}': {msg}."
            break
        passed += 1
    result = CheckResult(key, passed, len(cases), failure)
    if verbose:
        print(repr(result))
    return result


__all__ = ["Case", "CheckResult", "check", "compare", "known", "reference", "register"]
