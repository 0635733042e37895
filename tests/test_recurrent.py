"""Tests of the from-scratch recurrent cells against nn.RNN / nn.LSTM / nn.GRU with shared weights."""

import pytest
import torch
from torch import nn

from dlbook.nn.recurrent import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell

DT = torch.float64


def _pair(kind, **kw):
    torch.manual_seed(0)
    theirs = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[kind](**kw).to(DT)
    ours = {"rnn": RNN, "lstm": LSTM, "gru": GRU}[kind].from_torch(theirs)
    return ours, theirs


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("num_layers", [1, 3])
def test_stacked_matches_torch(kind, batch_first, num_layers):
    ours, theirs = _pair(kind, input_size=5, hidden_size=7, num_layers=num_layers, batch_first=batch_first)
    x = torch.randn(4, 6, 5, dtype=DT)  # read as (batch, seq) or (seq, batch)
    out, state = ours(x)
    ref_out, ref_state = theirs(x)
    torch.testing.assert_close(out, ref_out, atol=1e-12, rtol=1e-10)
    if kind == "lstm":
        torch.testing.assert_close(state[0], ref_state[0], atol=1e-12, rtol=1e-10)
        torch.testing.assert_close(state[1], ref_state[1], atol=1e-12, rtol=1e-10)
    else:
        torch.testing.assert_close(state, ref_state, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_given_initial_state_and_gradients_match(kind):
    ours, theirs = _pair(kind, input_size=3, hidden_size=4, num_layers=2, batch_first=True)
    x = torch.randn(2, 5, 3, dtype=DT, requires_grad=True)
    h0 = torch.randn(2, 2, 4, dtype=DT)
    s0 = (h0, torch.randn(2, 2, 4, dtype=DT)) if kind == "lstm" else h0
    out, _ = ours(x, s0)
    (g_ours,) = torch.autograd.grad(out.square().sum(), x)
    ref, _ = theirs(x, s0)
    (g_ref,) = torch.autograd.grad(ref.square().sum(), x)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(g_ours, g_ref)


def test_relu_rnn_and_no_bias():
    ours, theirs = _pair("rnn", input_size=3, hidden_size=4, num_layers=2, nonlinearity="relu", bias=False)
    x = torch.randn(5, 2, 3, dtype=DT)
    torch.testing.assert_close(ours(x)[0], theirs(x)[0])
    assert ours.cells[0].bias_ih is None


def test_cells_match_torch_cells():
    torch.manual_seed(1)
    x, h, c = torch.randn(3, 5, dtype=DT), torch.randn(3, 4, dtype=DT), torch.randn(3, 4, dtype=DT)
    for ours_cls, ref_cls in [(RNNCell, nn.RNNCell), (GRUCell, nn.GRUCell), (LSTMCell, nn.LSTMCell)]:
        ref = ref_cls(5, 4).to(DT)
        ours = ours_cls(5, 4).to(DT)
        ours.load_state_dict(ref.state_dict())
        if ours_cls is LSTMCell:
            torch.testing.assert_close(ours(x, (h, c)), ref(x, (h, c)))
        else:
            torch.testing.assert_close(ours(x, h), ref(x, h))


def test_gru_reset_gate_multiplies_the_bias_too():
    """A GRU with r * (W_hn h) + b_hn instead of r * (W_hn h + b_hn) must not match: the test can fail."""
    torch.manual_seed(2)
    ref = nn.GRUCell(3, 4).to(DT)
    x, h = torch.randn(2, 3, dtype=DT), torch.randn(2, 4, dtype=DT)
    gi = x @ ref.weight_ih.T + ref.bias_ih
    gh_w = h @ ref.weight_hh.T
    i_r, i_z, i_n = gi.chunk(3, -1)
    h_r, h_z, h_n = gh_w.chunk(3, -1)
    b_r, b_z, b_n = ref.bias_hh.chunk(3)
    r, z = torch.sigmoid(i_r + h_r + b_r), torch.sigmoid(i_z + h_z + b_z)
    wrong = (1 - z) * torch.tanh(i_n + r * h_n + b_n) + z * h
    assert not torch.allclose(wrong, ref(x, h))


def test_lstm_gate_order_matters():
    """Reading the rows as i, f, o, g (a common mistake) gives a different answer."""
    ours, theirs = _pair("lstm", input_size=3, hidden_size=4, num_layers=1)
    cell = ours.cells[0]
    with torch.no_grad():
        for p in (cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh):
            i, f, g, o = p.chunk(4, 0)
            p.copy_(torch.cat([i, f, o, g]))
    x = torch.randn(2, 5, 3, dtype=DT)
    assert not torch.allclose(ours(x)[0], theirs(x)[0])


def test_from_torch_keeps_dtype_and_rejects_mismatch():
    ours, _ = _pair("gru", input_size=3, hidden_size=4)
    assert ours.cells[0].weight_ih.dtype == DT
    with pytest.raises(TypeError):
        LSTM.from_torch(nn.GRU(3, 4))
    with pytest.raises(ValueError, match="sizes differ"):
        GRU(3, 5).load_from_torch(nn.GRU(3, 4))
    with pytest.raises(ValueError, match="bidirectional"):
        RNN(3, 4).load_from_torch(nn.RNN(3, 4, bidirectional=True))
    with pytest.raises(ValueError, match="nonlinearity"):
        RNN(3, 4).load_from_torch(nn.RNN(3, 4, nonlinearity="relu"))


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="shape"):
        RNN(3, 4)(torch.randn(2, 3))
    with pytest.raises(ValueError, match="input=3"):
        LSTM(3, 4)(torch.randn(2, 5, 4))
    with pytest.raises(ValueError, match="state"):
        GRU(3, 4, num_layers=2)(torch.randn(2, 5, 3), torch.zeros(1, 2, 4))
    with pytest.raises(ValueError):
        RNNCell(3, 4)(torch.randn(2, 3), torch.zeros(3, 4))
    with pytest.raises(TypeError):
        LSTMCell(3, 4)(torch.randn(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError):
        RNNCell(3, 4, nonlinearity="sigmoid")
    with pytest.raises(ValueError):
        RNN(3, 4, num_layers=0)


def test_zero_state_default_equals_explicit_zeros():
    torch.manual_seed(0)
    m = LSTM(3, 4, num_layers=2)
    x = torch.randn(2, 5, 3)
    z = torch.zeros(2, 2, 4)
    torch.testing.assert_close(m(x)[0], m(x, (z, z))[0])
