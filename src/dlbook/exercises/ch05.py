"""Exercise checks for chapter 5, "LSTM and GRU"."""

from __future__ import annotations

import numpy as np
import torch

from . import Case, register


def _gen(rng: np.random.Generator) -> torch.Generator:
    return torch.Generator().manual_seed(int(rng.integers(1 << 31)))


def lstm_step(
    x: torch.Tensor,
    h: torch.Tensor,
    c: torch.Tensor,
    w_ih: torch.Tensor,
    w_hh: torch.Tensor,
    b_ih: torch.Tensor,
    b_hh: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference: one LSTM step with PyTorch's layout (rows i, f, g, o); returns ``(h_new, c_new)``.

    ``x`` (batch, input), ``h``/``c`` (batch, hidden), ``w_ih`` (4 hidden, input), ``w_hh`` (4 hidden, hidden),
    biases (4 hidden,).
    """
    gates = x @ w_ih.T + b_ih + h @ w_hh.T + b_hh  # (batch, 4 hidden)
    i, f, g, o = gates.chunk(4, dim=-1)
    c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h_new = torch.sigmoid(o) * torch.tanh(c_new)
    return h_new, c_new


def _cell_case(
    rng: np.random.Generator,
    name: str,
    batch: int,
    inp: int,
    hid: int,
    gates: int,
    lstm: bool,
    scale: float = 1.0,
    dtype: torch.dtype = torch.float32,
) -> Case:
    g = _gen(rng)
    args = [torch.randn(batch, inp, generator=g, dtype=dtype), torch.randn(batch, hid, generator=g, dtype=dtype)]
    if lstm:
        args.append(2 * torch.randn(batch, hid, generator=g, dtype=dtype))
    args += [
        scale * torch.randn(gates * hid, inp, generator=g, dtype=dtype) / inp**0.5,
        scale * torch.randn(gates * hid, hid, generator=g, dtype=dtype) / hid**0.5,
        torch.randn(gates * hid, generator=g, dtype=dtype),
        torch.randn(gates * hid, generator=g, dtype=dtype),
    ]
    return Case(name, tuple(args))


def _lstm_cases(rng: np.random.Generator) -> list[Case]:
    return [
        _cell_case(rng, "batch 3, input 4, hidden 5", 3, 4, 5, 4, True),
        _cell_case(rng, "hidden larger than input", 2, 2, 16, 4, True),
        _cell_case(rng, "a batch of one, large weights", 1, 6, 3, 4, True, scale=3.0),
        _cell_case(rng, "float64", 4, 3, 7, 4, True, dtype=torch.float64),
    ]


register("ch05.lstm_step", lstm_step, _lstm_cases, atol=1e-5, rtol=1e-4)


def gru_step(
    x: torch.Tensor, h: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor, b_ih: torch.Tensor, b_hh: torch.Tensor
) -> torch.Tensor:
    """Reference: one GRU step with PyTorch's layout (rows r, z, n); returns the new hidden state."""
    i_r, i_z, i_n = (x @ w_ih.T + b_ih).chunk(3, dim=-1)  # each (batch, hidden)
    h_r, h_z, h_n = (h @ w_hh.T + b_hh).chunk(3, dim=-1)
    r = torch.sigmoid(i_r + h_r)
    z = torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)  # the reset gate multiplies W_hn h + b_hn, bias included
    return (1 - z) * n + z * h


def _gru_cases(rng: np.random.Generator) -> list[Case]:
    return [
        _cell_case(rng, "batch 3, input 4, hidden 5", 3, 4, 5, 3, False),
        _cell_case(rng, "hidden larger than input", 2, 2, 16, 3, False),
        _cell_case(rng, "a batch of one, large weights", 1, 6, 3, 3, False, scale=3.0),
        _cell_case(rng, "float64", 4, 3, 7, 3, False, dtype=torch.float64),
    ]


register("ch05.gru_step", gru_step, _gru_cases, atol=1e-5, rtol=1e-4)


def make_windows(series: torch.Tensor, window: int, horizon: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference: every (input window, following targets) pair of a 1-D series.

    Returns ``X`` of shape (n, window) and ``Y`` of shape (n, horizon) with ``n = len - window - horizon + 1``;
    row ``k`` is ``series[k : k + window]`` and ``series[k + window : k + window + horizon]``.
    """
    n = len(series) - window - horizon + 1
    if n < 1:
        raise ValueError(f"a series of length {len(series)} is too short for window {window} + horizon {horizon}")
    X = torch.stack([series[k : k + window] for k in range(n)])  # (n, window)
    Y = torch.stack([series[k + window : k + window + horizon] for k in range(n)])  # (n, horizon)
    return X, Y


def _window_cases(rng: np.random.Generator) -> list[Case]:
    def case(name: str, length: int, window: int, horizon: int) -> Case:
        g = _gen(rng)
        return Case(name, (torch.randn(length, generator=g).cumsum(0), window, horizon))

    return [
        case("length 10, window 3, horizon 2", 10, 3, 2),
        case("one-step-ahead (horizon 1)", 12, 4, 1),
        case("exactly one window fits", 7, 4, 3),
        case("a year of weekly data, window 8, horizon 4", 52, 8, 4),
    ]


register("ch05.make_windows", make_windows, _window_cases, atol=0.0, rtol=0.0)


def forget_bias(bias_ih: torch.Tensor, bias_hh: torch.Tensor, value: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference: an LSTM layer's two bias vectors (4 hidden,), rows i, f, g, o, with a new forget bias.

    The forget gate's total bias ``b_if + b_hf`` becomes ``value`` for every unit: rows
    ``hidden:2 hidden`` of ``bias_ih`` are set to ``value`` and those of ``bias_hh`` to 0; every
    other row is unchanged. Chapter 5 starts its adding-problem LSTM this way with ``value = 1``.
    The reference works on copies; the check compares only the returned vectors (it passes the
    reader's function copies of the cases), so a solution that changes its arguments in place
    and returns them passes too, and the exercise does not ask for copies.
    """
    if bias_ih.shape != bias_hh.shape or bias_ih.dim() != 1 or bias_ih.shape[0] % 4:
        raise ValueError(
            f"expected two bias vectors of shape (4 hidden,), got {tuple(bias_ih.shape)} and {tuple(bias_hh.shape)}"
        )
    hidden = bias_ih.shape[0] // 4
    new_ih, new_hh = bias_ih.clone(), bias_hh.clone()
    new_ih[hidden : 2 * hidden] = value
    new_hh[hidden : 2 * hidden] = 0.0
    return new_ih, new_hh


def _forget_bias_cases(rng: np.random.Generator) -> list[Case]:
    def case(name: str, hidden: int, value: float, dtype: torch.dtype = torch.float32) -> Case:
        g = _gen(rng)
        b_ih, b_hh = (torch.randn(4 * hidden, generator=g, dtype=dtype) for _ in range(2))
        return Case(name, (b_ih, b_hh, value))

    return [
        case("hidden 5, value 1", 5, 1.0),
        case("hidden 32, value -2 (a gate that starts nearly shut)", 32, -2.0),
        case("hidden 1, value 3", 1, 3.0),
        case("hidden 7, value 0, float64", 7, 0.0, torch.float64),
    ]


register("ch05.forget_bias", forget_bias, _forget_bias_cases, atol=0.0, rtol=0.0)
