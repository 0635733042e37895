"""Exercise checks for chapter 4, "Recurrent networks"."""

from __future__ import annotations

import numpy as np
import torch

from . import Case, register


def _gen(rng: np.random.Generator) -> torch.Generator:
    return torch.Generator().manual_seed(int(rng.integers(1 << 31)))


def rnn_forward(x: torch.Tensor, h0: torch.Tensor, w_xh: torch.Tensor, w_hh: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
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
    def case(
        name: str, batch: int, seq: int, inp: int, hid: int, h0_scale: float = 1.0, dtype: torch.dtype = torch.float32
    ) -> Case:
        g = _gen(rng)
        return Case(
            name,
            (
                torch.randn(batch, seq, inp, generator=g, dtype=dtype),
                h0_scale * torch.randn(batch, hid, generator=g, dtype=dtype),
                torch.randn(hid, inp, generator=g, dtype=dtype) / inp**0.5,
                torch.randn(hid, hid, generator=g, dtype=dtype) / hid**0.5,
                0.5 * torch.randn(hid, generator=g, dtype=dtype),
            ),
        )

    return [
        case("batch 3, 5 steps, input 4, hidden 6", 3, 5, 4, 6),
        case("one step only", 2, 1, 3, 5),
        case("zero initial state", 2, 7, 3, 4, h0_scale=0.0),
        case("input size differs from hidden size, float64", 1, 12, 9, 2, dtype=torch.float64),
        case("long sequence", 4, 40, 3, 8),
    ]


register("ch04.rnn_forward", rnn_forward, _rnn_cases, atol=1e-5, rtol=1e-4)


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


def tbptt_grad(
    x: torch.Tensor, h0: torch.Tensor, w_xh: torch.Tensor, w_hh: torch.Tensor, b: torch.Tensor, chunk_len: int
) -> torch.Tensor:
    """Reference: the gradient of ``W_hh`` that truncated backpropagation through time computes.

    The tanh RNN of :func:`rnn_forward` runs over ``x`` (batch, seq, input) in chunks of
    ``chunk_len`` steps (the last one may be shorter). The state is carried from chunk to chunk
    but detached at every boundary, and the loss is the sum of every entry of every hidden
    state. Returns ``d loss / d W_hh`` (hidden, hidden), summed over the chunks.
    """
    w = w_hh.detach().clone().requires_grad_(True)
    h, grad = h0, torch.zeros_like(w_hh)
    for start in range(0, x.shape[1], chunk_len):
        h = h.detach()  # carry the values, cut the history
        loss = x.new_zeros(())
        for t in range(start, min(start + chunk_len, x.shape[1])):
            h = torch.tanh(x[:, t] @ w_xh.T + h @ w.T + b)  # (batch, hidden)
            loss = loss + h.sum()
        grad += torch.autograd.grad(loss, w)[0]
    return grad


def _tbptt_cases(rng: np.random.Generator) -> list[Case]:
    def case(
        name: str,
        batch: int,
        seq: int,
        inp: int,
        hid: int,
        chunk_len: int,
        gain: float = 1.0,
        dtype: torch.dtype = torch.float64,
    ) -> Case:
        g = _gen(rng)
        return Case(
            name,
            (
                torch.randn(batch, seq, inp, generator=g, dtype=dtype),
                0.5 * torch.randn(batch, hid, generator=g, dtype=dtype),
                torch.randn(hid, inp, generator=g, dtype=dtype) / inp**0.5,
                gain * torch.randn(hid, hid, generator=g, dtype=dtype) / hid**0.5,
                0.2 * torch.randn(hid, generator=g, dtype=dtype),
                chunk_len,
            ),
        )

    return [
        case("12 steps in chunks of 4", 3, 12, 4, 5, 4),
        case("one chunk as long as the sequence (full BPTT)", 2, 9, 3, 4, 9),
        case("chunks of one step", 2, 6, 3, 4, 1),
        case("10 steps in chunks of 3 (the last chunk is shorter)", 2, 10, 3, 6, 3, gain=1.5),
        case("a chunk longer than the sequence", 1, 5, 2, 3, 8),
        case("float32, 30 steps in chunks of 7", 4, 30, 3, 8, 7, dtype=torch.float32),
    ]


register("ch04.tbptt_grad", tbptt_grad, _tbptt_cases, atol=1e-5, rtol=1e-4)


def final_states(
    x: torch.Tensor, h0: torch.Tensor, w_xh: torch.Tensor, w_hh: torch.Tensor, b: torch.Tensor, lengths: torch.Tensor
) -> torch.Tensor:
    """Reference: each sequence's hidden state at its own last step, from a right-padded batch.

    ``x`` (batch, seq, input) holds sequences of ``lengths`` (batch,) steps followed by padding;
    the tanh RNN of :func:`rnn_forward` must ignore the padded steps. Returns (batch, hidden),
    what ``nn.RNN`` returns as ``h_n`` for a packed batch.
    """
    h = h0
    for t in range(x.shape[1]):
        new = torch.tanh(x[:, t] @ w_xh.T + h @ w_hh.T + b)  # (batch, hidden)
        real = (t < lengths)[:, None]  # (batch, 1): is step t part of this sequence?
        h = torch.where(real, new, h)  # padded steps leave the state alone
    return h


def _final_cases(rng: np.random.Generator) -> list[Case]:
    def case(name: str, lengths: list[int], inp: int, hid: int, dtype: torch.dtype = torch.float32) -> Case:
        g = _gen(rng)
        lens = torch.tensor(lengths)
        seq = max(lengths)
        x = torch.randn(len(lengths), seq, inp, generator=g, dtype=dtype)
        x[torch.arange(seq)[None, :] >= lens[:, None]] = 0.0  # zero padding
        return Case(
            name,
            (
                x,
                0.5 * torch.randn(len(lengths), hid, generator=g, dtype=dtype),
                torch.randn(hid, inp, generator=g, dtype=dtype) / inp**0.5,
                torch.randn(hid, hid, generator=g, dtype=dtype) / hid**0.5,
                0.5 * torch.randn(hid, generator=g, dtype=dtype),
                lens,
            ),
        )

    return [
        case("lengths 5, 2, 4", [5, 2, 4], 3, 4),
        case("no padding at all", [6, 6], 2, 5),
        case("a sequence of one step next to a long one", [1, 12], 3, 4),
        case("unsorted lengths, float64", [3, 9, 1, 7, 9, 2], 4, 6, dtype=torch.float64),
    ]


register("ch04.final_states", final_states, _final_cases, atol=1e-5, rtol=1e-4)
