"""The chapter 5 exercise checks pass the reference and fail plausible wrong answers."""

import torch
from torch import nn

from dlbook import exercises


def test_all_registered():
    assert exercises.known("ch05") == ["ch05.forget_bias", "ch05.gru_step", "ch05.lstm_step", "ch05.make_windows"]


def test_references_pass():
    for key in exercises.known("ch05"):
        assert exercises.check(key, exercises.reference(key), verbose=False)


def test_stubs_report_not_yet():
    def stub(*args):
        raise NotImplementedError

    for key in exercises.known("ch05"):
        result = exercises.check(key, stub, verbose=False)
        assert not result and "NotImplementedError" in result.failure


def _load(cell, w_ih, w_hh, b_ih, b_hh):
    with torch.no_grad():
        cell.weight_ih.copy_(w_ih)
        cell.weight_hh.copy_(w_hh)
        cell.bias_ih.copy_(b_ih)
        cell.bias_hh.copy_(b_hh)
    return cell


# ---------------------------------------------------------------- lstm_step


def test_lstm_step_matches_nn_lstmcell():
    def via_torch(x, h, c, w_ih, w_hh, b_ih, b_hh):
        cell = _load(nn.LSTMCell(x.shape[1], h.shape[1]).to(x.dtype), w_ih, w_hh, b_ih, b_hh)
        with torch.no_grad():
            return cell(x, (h, c))

    assert exercises.check("ch05.lstm_step", via_torch, verbose=False)


def test_lstm_step_ifog_order_fails():
    def wrong(x, h, c, w_ih, w_hh, b_ih, b_hh):  # reads the rows as i, f, o, g
        i, f, o, g = (x @ w_ih.T + b_ih + h @ w_hh.T + b_hh).chunk(4, -1)
        c2 = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c2), c2

    assert not exercises.check("ch05.lstm_step", wrong, verbose=False)


def test_lstm_step_without_tanh_on_cell_fails():
    def wrong(x, h, c, w_ih, w_hh, b_ih, b_hh):
        i, f, g, o = (x @ w_ih.T + b_ih + h @ w_hh.T + b_hh).chunk(4, -1)
        c2 = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * c2, c2

    assert not exercises.check("ch05.lstm_step", wrong, verbose=False)


def test_lstm_step_forgetting_the_old_cell_fails():
    def wrong(x, h, c, w_ih, w_hh, b_ih, b_hh):
        i, f, g, o = (x @ w_ih.T + b_ih + h @ w_hh.T + b_hh).chunk(4, -1)
        c2 = torch.sigmoid(f) + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c2), c2

    assert not exercises.check("ch05.lstm_step", wrong, verbose=False)


def test_lstm_step_returning_only_h_fails():
    def wrong(*args):
        return exercises.reference("ch05.lstm_step")(*args)[0]

    assert not exercises.check("ch05.lstm_step", wrong, verbose=False)


# ---------------------------------------------------------------- gru_step


def test_gru_step_matches_nn_grucell():
    def via_torch(x, h, w_ih, w_hh, b_ih, b_hh):
        cell = _load(nn.GRUCell(x.shape[1], h.shape[1]).to(x.dtype), w_ih, w_hh, b_ih, b_hh)
        with torch.no_grad():
            return cell(x, h)

    assert exercises.check("ch05.gru_step", via_torch, verbose=False)


def test_gru_step_reset_outside_the_bias_fails():
    def wrong(x, h, w_ih, w_hh, b_ih, b_hh):  # r * (W_hn h) + b_hn: the reset gate skips the bias
        i_r, i_z, i_n = (x @ w_ih.T + b_ih).chunk(3, -1)
        h_r, h_z, h_n = (h @ w_hh.T).chunk(3, -1)
        b_r, b_z, b_n = b_hh.chunk(3)
        r, z = torch.sigmoid(i_r + h_r + b_r), torch.sigmoid(i_z + h_z + b_z)
        return (1 - z) * torch.tanh(i_n + r * h_n + b_n) + z * h

    result = exercises.check("ch05.gru_step", wrong, verbose=False)
    assert not result and "values" in result.failure


def test_gru_step_paper_reset_before_the_product_fails():
    def wrong(x, h, w_ih, w_hh, b_ih, b_hh):  # W_hn (r * h) + b_hn: Cho et al.'s form
        i_r, i_z, i_n = (x @ w_ih.T + b_ih).chunk(3, -1)
        h_r, h_z, _ = (h @ w_hh.T + b_hh).chunk(3, -1)
        r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
        w_hn, b_hn = w_hh.chunk(3)[2], b_hh.chunk(3)[2]
        n = torch.tanh(i_n + (r * h) @ w_hn.T + b_hn)
        return (1 - z) * n + z * h

    result = exercises.check("ch05.gru_step", wrong, verbose=False)
    assert not result and "values" in result.failure


def test_gru_step_swapped_update_fails():
    def wrong(x, h, w_ih, w_hh, b_ih, b_hh):  # z and 1 - z exchanged
        i_r, i_z, i_n = (x @ w_ih.T + b_ih).chunk(3, -1)
        h_r, h_z, h_n = (h @ w_hh.T + b_hh).chunk(3, -1)
        r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
        return z * torch.tanh(i_n + r * h_n) + (1 - z) * h

    assert not exercises.check("ch05.gru_step", wrong, verbose=False)


# ---------------------------------------------------------------- make_windows


def test_make_windows_via_unfold_passes():
    def via_unfold(series, window, horizon):
        pieces = series.unfold(0, window + horizon, 1)  # (n, window + horizon)
        return pieces[:, :window], pieces[:, window:]

    assert exercises.check("ch05.make_windows", via_unfold, verbose=False)


def test_make_windows_off_by_one_fails():
    def wrong(series, window, horizon):  # one window too few
        n = len(series) - window - horizon
        return (
            torch.stack([series[k : k + window] for k in range(n)]),
            torch.stack([series[k + window : k + window + horizon] for k in range(n)]),
        )

    result = exercises.check("ch05.make_windows", wrong, verbose=False)
    assert not result and "shape" in result.failure


def test_make_windows_target_overlapping_input_fails():
    def wrong(series, window, horizon):  # target starts at the last input instead of after it
        n = len(series) - window - horizon + 1
        return (
            torch.stack([series[k : k + window] for k in range(n)]),
            torch.stack([series[k + window - 1 : k + window - 1 + horizon] for k in range(n)]),
        )

    assert not exercises.check("ch05.make_windows", wrong, verbose=False)


# ---------------------------------------------------------------- forget_bias


def test_forget_bias_via_an_nn_lstm_passes():
    def via_module(bias_ih, bias_hh, value):  # what the chapter does to its nn.LSTM
        lstm = nn.LSTM(1, bias_ih.shape[0] // 4).to(bias_ih.dtype)
        with torch.no_grad():
            lstm.bias_ih_l0.copy_(bias_ih)
            lstm.bias_hh_l0.copy_(bias_hh)
            hidden = lstm.hidden_size
            lstm.bias_ih_l0[hidden : 2 * hidden].fill_(value)
            lstm.bias_hh_l0[hidden : 2 * hidden].zero_()
        return lstm.bias_ih_l0.detach().clone(), lstm.bias_hh_l0.detach().clone()

    assert exercises.check("ch05.forget_bias", via_module, verbose=False)


def test_forget_bias_sets_what_the_gate_sees():
    b_ih, b_hh = exercises.reference("ch05.forget_bias")(torch.randn(12), torch.randn(12), 2.5)
    i, f, g, o = (b_ih + b_hh).chunk(4)
    assert torch.equal(f, torch.full((3,), 2.5))


def test_forget_bias_wrong_block_fails():
    def wrong(bias_ih, bias_hh, value):  # rows 0:H are the input gate
        h = bias_ih.shape[0] // 4
        b_ih, b_hh = bias_ih.clone(), bias_hh.clone()
        b_ih[:h], b_hh[:h] = value, 0.0
        return b_ih, b_hh

    result = exercises.check("ch05.forget_bias", wrong, verbose=False)
    assert not result and "wrong values" in result.failure


def test_forget_bias_forgetting_the_second_bias_fails():
    def wrong(bias_ih, bias_hh, value):  # the gate sees b_ih + b_hh, so b_hh must go to 0
        h = bias_ih.shape[0] // 4
        b_ih = bias_ih.clone()
        b_ih[h : 2 * h] = value
        return b_ih, bias_hh.clone()

    assert not exercises.check("ch05.forget_bias", wrong, verbose=False)


def test_forget_bias_returning_the_sum_only_fails():
    def wrong(bias_ih, bias_hh, value):
        b_ih, b_hh = exercises.reference("ch05.forget_bias")(bias_ih, bias_hh, value)
        return b_ih + b_hh

    result = exercises.check("ch05.forget_bias", wrong, verbose=False)
    assert not result and "sequence of 2" in result.failure


def test_forget_bias_in_place_solution_passes():
    def in_place(bias_ih, bias_hh, value):  # allowed: the exercise does not ask for copies
        h = bias_ih.shape[0] // 4
        bias_ih[h : 2 * h], bias_hh[h : 2 * h] = value, 0.0
        return bias_ih, bias_hh

    assert exercises.check("ch05.forget_bias", in_place, verbose=False)
