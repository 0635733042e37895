"""Exercise checks for chapter 4, "Recurrent networks"."""

from __future__ import annotations

import numpy as np
import torch

from . import Case, register


def _gen(rng: np.random.Generator) -> torch.Generator:
    return torch.Generator().manual_seed(int(rng.integers(1 << 31)))


def rnn_forward(
    x: torch.Tensor, h0: torch.Tensor, w_xh: torch.Tensor, w_hh: torch.Tensor, b: torch.Tensor
) -> torch.Tensor:
    """Reference: every hidden state of a one-layer tanh RNN.

    ``x`` (batch, seq, input), ``h0`` (batch, hidden), ``w_xh`` (hidden, input), ``w_hh`` (hidden, hidden),
    ``b`` (hidden,) -> (batch, seq, hidden) with ``h_t = tanh(W_xh x_t + W_hh h_{t-1} + b)``.
    """
    h, states = h0, []
    for t in range(x.shape[1]):
        h = torch.tanh(x[:, t] @ w_xh.T + h @ w_hh.T + b)  # (batch, hidden)
        states.append(h)
    return torch.stack(states, dim=1)  # (batch, seq, hidden)


def _rnn_cases(rng: np.random.Generator) -> list[Case]:
    def case(name: str, batch: int, seq: int, inp: int, hid: int, h0_scale: float = 1.0,
             dtype: torch.dtype = torch.float32) -> Case:
        g = _gen(rng)
        return Case(name, (
            torch.randn(batch, seq, inp, generator=g, dtype=dtype),
            h0_scale * torch.randn(batch, hid, generator=g, dtype=dtype),
            torch.randn(hid, inp, generator=g, dtype=dtype) / inp**0.5,
            torch.randn(hid, hid, generator=g, dtype=dtype) / hid**0.5,
            0.5 * torch.randn(hid, generator=g, dtype=dtype),
        ))

    return [
        case("batch 3, 5 steps, input 4, hidden 6", 3, 5, 4, 6),
        case("one step only", 2, 1, 3, 5),
        case("zero initial state", 2, 7, 3, 4, h0_scale=0.0),
        case("input size differs from hidden size, float64", 1, 12, 9, 2, dtype=torch.float64),
        case("long sequence", 4, 40, 3, 8),
    ]


register("ch04.rnn_forward", rnn_forward, _rnn_cases, atol=1e-5, rtol=1e-4)


def clip_global_norm(grads: list[torch.Tensor], max_norm: float) -> list[torch.Tensor]:
    """Reference: rescale all gradients together so their joint L2 norm is at most ``max_norm``."""
    total = torch.sqrt(sum((g.double() ** 2).sum() for g in grads))
    scale = min(1.0, max_norm / (float(total) + 1e-6))
    return [g * scale for g in grads]


def _clip_cases(rng: np.random.Generator) -> list[Case]:
    def case(name: str, shapes: list[tuple[int, ...]], scale: float, max_norm: float) -> Case:
        g = _gen(rng)
        return Case(name, ([scale * torch.randn(*s, generator=g) for s in shapes], max_norm))

    return [
        case("two tensors, norm far above the limit", [(4, 3), (3,)], 10.0, 1.0),
        case("one tensor already inside the limit (leave it alone)", [(5,)], 0.01, 1.0),
        case("several tensors of very different sizes", [(20, 10), (10,), (1,), (3, 3, 3)], 2.0, 5.0),
        case("many small tensors whose joint norm is too large", [(2,)] * 12, 1.0, 1.5),
    ]


register("ch04.clip_global_norm", clip_global_norm, _clip_cases, atol=1e-5, rtol=1e-4)


def masked_nll(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Reference: mean negative log-likelihood over the positions where ``mask`` is True.

    ``logits`` (batch, seq, vocab), ``targets`` (batch, seq) int64, ``mask`` (batch, seq) bool -> scalar.
    """
    log_probs = torch.log_softmax(logits, dim=-1)  # (batch, seq, vocab)
    nll = -log_probs.gather(-1, targets[..., None]).squeeze(-1)  # (batch, seq)
    return nll[mask].mean()


def _masked_cases(rng: np.random.Generator) -> list[Case]:
    def case(name: str, batch: int, seq: int, vocab: int, lengths: list[int]) -> Case:
        g = _gen(rng)
        logits = 3 * torch.randn(batch, seq, vocab, generator=g)
        targets = torch.randint(0, vocab, (batch, seq), generator=g)
        mask = torch.arange(seq)[None, :] < torch.tensor(lengths)[:, None]  # (batch, seq)
        targets[~mask] = 0  # padding id
        return Case(name, (logits, targets, mask))

    return [
        case("names of different lengths", 3, 6, 29, [6, 2, 4]),
        case("no padding at all", 2, 5, 29, [5, 5]),
        case("one long and many short rows (a mean of row means is wrong)", 4, 10, 7, [10, 1, 1, 2]),
        case("a single row of one character", 1, 4, 29, [1]),
    ]


register("ch04.masked_nll", masked_nll, _masked_cases, atol=1e-5, rtol=1e-5)
