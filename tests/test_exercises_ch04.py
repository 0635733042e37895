"""The chapter 4 exercise checks pass the reference and fail plausible wrong answers."""

import torch
import torch.nn.functional as F

from dlbook import exercises


def test_all_registered():
    assert exercises.known("ch04") == ["ch04.clip_global_norm", "ch04.masked_nll", "ch04.rnn_forward"]


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


# ---------------------------------------------------------------- clip_global_norm


def test_clip_matches_torch_clip_grad_norm():
    def via_torch(grads, max_norm):
        params = [torch.nn.Parameter(torch.zeros_like(g)) for g in grads]
        for p, g in zip(params, grads, strict=True):
            p.grad = g.clone()
        torch.nn.utils.clip_grad_norm_(params, max_norm)
        return [p.grad for p in params]

    assert exercises.check("ch04.clip_global_norm", via_torch, verbose=False)


def test_clip_each_tensor_separately_fails():
    def wrong(grads, max_norm):
        return [g * min(1.0, max_norm / (float(g.norm()) + 1e-6)) for g in grads]

    assert not exercises.check("ch04.clip_global_norm", wrong, verbose=False)


def test_clip_always_rescaling_fails():
    def wrong(grads, max_norm):  # normalises to max_norm even when the gradient is already small
        total = torch.sqrt(sum((g**2).sum() for g in grads))
        return [g * max_norm / total for g in grads]

    result = exercises.check("ch04.clip_global_norm", wrong, verbose=False)
    assert not result and "inside the limit" in result.failure


def test_clip_elementwise_value_clipping_fails():
    def wrong(grads, max_norm):
        return [g.clamp(-max_norm, max_norm) for g in grads]

    assert not exercises.check("ch04.clip_global_norm", wrong, verbose=False)


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
