"""The chapter 4 exercise checks pass the reference and fail plausible wrong answers."""

import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence

from dlbook import exercises


def test_all_registered():
    assert exercises.known("ch04") == ["ch04.final_states", "ch04.masked_nll", "ch04.rnn_forward", "ch04.tbptt_grad"]


def test_references_pass():
    for key in exercises.known("ch04"):
        assert exercises.check(key, exercises.reference(key), verbose=False)


def test_stubs_report_not_yet():
    def stub(*args):
        raise NotImplementedError

    for key in exercises.known("ch04"):
        result = exercises.check(key, stub, verbose=False)
        assert not result and "NotImplementedError" in result.failure


# ---------------------------------------------------------------- rnn_forward


def test_rnn_forward_matches_nn_rnn():
    def via_torch(x, h0, w_xh, w_hh, b):
        rnn = torch.nn.RNN(x.shape[-1], h0.shape[-1], batch_first=True).to(x.dtype)
        with torch.no_grad():
            rnn.weight_ih_l0.copy_(w_xh)
            rnn.weight_hh_l0.copy_(w_hh)
            rnn.bias_ih_l0.copy_(b)
            rnn.bias_hh_l0.zero_()
        return rnn(x, h0[None])[0].detach()

    assert exercises.check("ch04.rnn_forward", via_torch, verbose=False)


def test_rnn_forward_without_tanh_fails():
    def wrong(x, h0, w_xh, w_hh, b):
        h, out = h0, []
        for t in range(x.shape[1]):
            h = x[:, t] @ w_xh.T + h @ w_hh.T + b
            out.append(h)
        return torch.stack(out, 1)

    assert not exercises.check("ch04.rnn_forward", wrong, verbose=False)


def test_rnn_forward_reusing_h0_fails():
    def wrong(x, h0, w_xh, w_hh, b):  # forgets to carry the state forward
        return torch.stack([torch.tanh(x[:, t] @ w_xh.T + h0 @ w_hh.T + b) for t in range(x.shape[1])], 1)

    result = exercises.check("ch04.rnn_forward", wrong, verbose=False)
    assert not result and "values" in result.failure


def test_rnn_forward_last_state_only_fails():
    def wrong(x, h0, w_xh, w_hh, b):
        return exercises.reference("ch04.rnn_forward")(x, h0, w_xh, w_hh, b)[:, -1]

    result = exercises.check("ch04.rnn_forward", wrong, verbose=False)
    assert not result and "shape" in result.failure


def test_rnn_forward_transposed_weights_fail():
    def wrong(x, h0, w_xh, w_hh, b):
        h, out = h0, []
        for t in range(x.shape[1]):
            h = torch.tanh(x[:, t] @ w_xh.T + h @ w_hh + b)  # W_hh not transposed
            out.append(h)
        return torch.stack(out, 1)

    assert not exercises.check("ch04.rnn_forward", wrong, verbose=False)


# ---------------------------------------------------------------- masked_nll


def test_masked_nll_matches_cross_entropy_with_ignore_index():
    def via_torch(logits, targets, mask):
        t = targets.masked_fill(~mask, -100)
        return F.cross_entropy(logits.flatten(0, 1), t.flatten(), ignore_index=-100)

    assert exercises.check("ch04.masked_nll", via_torch, verbose=False)


def test_masked_nll_including_padding_fails():
    def wrong(logits, targets, mask):
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten())

    assert not exercises.check("ch04.masked_nll", wrong, verbose=False)


def test_masked_nll_mean_of_row_means_fails():
    def wrong(logits, targets, mask):
        nll = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")  # (batch, seq)
        return ((nll * mask).sum(1) / mask.sum(1)).mean()

    result = exercises.check("ch04.masked_nll", wrong, verbose=False)
    assert not result and "values" in result.failure


# ---------------------------------------------------------------- tbptt_grad


def _states(x, h, w_xh, w_hh, b, start, stop):
    out = []
    for t in range(start, stop):
        h = torch.tanh(x[:, t] @ w_xh.T + h @ w_hh.T + b)
        out.append(h)
    return out, h


def test_tbptt_one_backward_over_detached_chunks_passes():
    """Summing the chunk losses and calling backward once gives the same gradient."""

    def one_backward(x, h0, w_xh, w_hh, b, chunk_len):
        w = w_hh.clone().requires_grad_(True)
        h, loss = h0, 0.0
        for start in range(0, x.shape[1], chunk_len):
            states, h = _states(x, h.detach(), w_xh, w, b, start, min(start + chunk_len, x.shape[1]))
            loss = loss + torch.stack(states).sum()
        loss.backward()
        return w.grad

    assert exercises.check("ch04.tbptt_grad", one_backward, verbose=False)


def test_tbptt_via_nn_rnn_passes():
    def via_torch(x, h0, w_xh, w_hh, b, chunk_len):
        rnn = torch.nn.RNN(x.shape[-1], h0.shape[-1], batch_first=True).to(x.dtype)
        with torch.no_grad():
            rnn.weight_ih_l0.copy_(w_xh)
            rnn.weight_hh_l0.copy_(w_hh)
            rnn.bias_ih_l0.copy_(b)
            rnn.bias_hh_l0.zero_()
        h = h0[None]
        for chunk in x.split(chunk_len, dim=1):
            out, h = rnn(chunk, h.detach())
            out.sum().backward()
        return rnn.weight_hh_l0.grad

    assert exercises.check("ch04.tbptt_grad", via_torch, verbose=False)


def test_tbptt_without_detach_fails():
    """Carrying the state with its history is full BPTT: right only when there is one chunk."""

    def full_bptt(x, h0, w_xh, w_hh, b, chunk_len):
        w = w_hh.clone().requires_grad_(True)
        states, _ = _states(x, h0, w_xh, w, b, 0, x.shape[1])
        (g,) = torch.autograd.grad(torch.stack(states).sum(), w)
        return g

    result = exercises.check("ch04.tbptt_grad", full_bptt, verbose=False)
    assert not result and "chunks of 4" in result.failure


def test_tbptt_resetting_the_state_fails():
    def reset(x, h0, w_xh, w_hh, b, chunk_len):
        w = w_hh.clone().requires_grad_(True)
        loss = 0.0
        for start in range(0, x.shape[1], chunk_len):  # every chunk starts again from h0
            states, _ = _states(x, h0, w_xh, w, b, start, min(start + chunk_len, x.shape[1]))
            loss = loss + torch.stack(states).sum()
        loss.backward()
        return w.grad

    assert not exercises.check("ch04.tbptt_grad", reset, verbose=False)


def test_tbptt_last_chunk_only_fails():
    def last_only(x, h0, w_xh, w_hh, b, chunk_len):
        w = w_hh.clone().requires_grad_(True)
        h = h0
        for start in range(0, x.shape[1], chunk_len):
            states, h = _states(x, h.detach(), w_xh, w, b, start, min(start + chunk_len, x.shape[1]))
        (g,) = torch.autograd.grad(torch.stack(states).sum(), w)  # only the last chunk's loss
        return g

    assert not exercises.check("ch04.tbptt_grad", last_only, verbose=False)


# ---------------------------------------------------------------- final_states


def test_final_states_via_packed_nn_rnn_passes():
    def via_packing(x, h0, w_xh, w_hh, b, lengths):
        rnn = torch.nn.RNN(x.shape[-1], h0.shape[-1], batch_first=True).to(x.dtype)
        with torch.no_grad():
            rnn.weight_ih_l0.copy_(w_xh)
            rnn.weight_hh_l0.copy_(w_hh)
            rnn.bias_ih_l0.copy_(b)
            rnn.bias_hh_l0.zero_()
            packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            return rnn(packed, h0[None])[1][0]

    assert exercises.check("ch04.final_states", via_packing, verbose=False)


def test_final_states_by_picking_the_last_real_step_passes():
    def pick(x, h0, w_xh, w_hh, b, lengths):
        states = exercises.reference("ch04.rnn_forward")(x, h0, w_xh, w_hh, b)  # (batch, seq, hidden)
        return states[torch.arange(x.shape[0]), lengths - 1]

    assert exercises.check("ch04.final_states", pick, verbose=False)


def test_final_states_reading_the_padded_end_fails():
    def padded_end(x, h0, w_xh, w_hh, b, lengths):
        return exercises.reference("ch04.rnn_forward")(x, h0, w_xh, w_hh, b)[:, -1]

    result = exercises.check("ch04.final_states", padded_end, verbose=False)
    assert not result and "values" in result.failure


def test_final_states_off_by_one_fails():
    def one_short(x, h0, w_xh, w_hh, b, lengths):
        states = exercises.reference("ch04.rnn_forward")(x, h0, w_xh, w_hh, b)
        return states[torch.arange(x.shape[0]), (lengths - 2).clamp_min(0)]

    assert not exercises.check("ch04.final_states", one_short, verbose=False)
