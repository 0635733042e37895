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
    """Outputs, the gradient w.r.t. the input, and every weight's gradient, layer by layer."""
    ours, theirs = _pair(kind, input_size=3, hidden_size=4, num_layers=2, batch_first=True)
    x = torch.randn(2, 5, 3, dtype=DT)
    x_ours, x_ref = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    h0 = torch.randn(2, 2, 4, dtype=DT)
    s0 = (h0, torch.randn(2, 2, 4, dtype=DT)) if kind == "lstm" else h0
    out, _ = ours(x_ours, s0)
    out.square().sum().backward()
    ref, _ = theirs(x_ref, s0)
    ref.square().sum().backward()
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(x_ours.grad, x_ref.grad)
    for k, cell in enumerate(ours.cells):
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            ref_grad = getattr(theirs, f"{name}_l{k}").grad
            assert ref_grad is not None and ref_grad.abs().sum() > 0
            torch.testing.assert_close(getattr(cell, name).grad, ref_grad)


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


def test_stacked_keys_differ_from_torch_so_from_torch_maps_them():
    """cells.0.weight_ih is not weight_ih_l0: load_state_dict fails, from_torch maps the names."""
    theirs = nn.RNN(3, 4, num_layers=2)
    with pytest.raises(RuntimeError, match="cells.0.weight_ih"):
        RNN(3, 4, num_layers=2).load_state_dict(theirs.state_dict())
    ours = RNN.from_torch(theirs)
    for k in range(2):
        assert torch.equal(ours.cells[k].weight_hh, getattr(theirs, f"weight_hh_l{k}"))


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


@pytest.mark.parametrize("cls", [RNN, LSTM, GRU])
@pytest.mark.parametrize("kw", [{"bidirectional": True}, {"proj_size": 4}, {"bogus": 1}, {"nonlinearity": "relu"}])
def test_unsupported_or_unknown_arguments_raise_instead_of_building_a_plain_network(cls, kw):
    if cls is RNN and "nonlinearity" in kw:
        assert RNN(2, 8, **kw).cells[0].nonlinearity == "relu"  # the one extra argument RNN takes
        return
    with pytest.raises(TypeError, match=next(iter(kw))):
        cls(2, 8, **kw)


def test_explicit_signatures_still_take_every_supported_argument():
    for cls in (LSTM, GRU):
        m = cls(2, 8, 2, False, False, 0.5)
        assert (m.num_layers, m.cells[0].bias_ih, m.batch_first, m.dropout) == (2, None, False, 0.5)
        m = cls(input_size=2, hidden_size=8, num_layers=3, bias=True, batch_first=True, dropout=0.0)
        assert len(m.cells) == 3


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


# ---------------------------------------------------------------- bad input: clear errors, per family

FAMILIES = {"rnn": (RNN, RNNCell), "lstm": (LSTM, LSTMCell), "gru": (GRU, GRUCell)}


@pytest.mark.parametrize("kind", ["rnn", "gru"])
def test_tuple_state_for_rnn_and_gru_is_refused(kind):
    stacked, cell = FAMILIES[kind]
    h = torch.zeros(1, 2, 4)
    with pytest.raises(TypeError, match=r"one tensor h.*only an LSTM"):
        stacked(3, 4)(torch.randn(2, 5, 3), (h, h))
    with pytest.raises(TypeError, match="only an LSTM"):
        cell(3, 4)(torch.randn(2, 3), (h[0], h[0]))


def test_single_tensor_state_for_lstm_is_refused_even_when_it_would_unpack():
    """A (2, batch, hidden) tensor unpacks into two (batch, hidden) tensors: it must not pass silently."""
    m = LSTM(3, 4, num_layers=1)
    with pytest.raises(TypeError, match=r"tuple \(h, c\).*one tensor"):
        m(torch.randn(2, 5, 3), torch.zeros(2, 2, 4))
    with pytest.raises(TypeError, match=r"tuple \(h, c\)"):
        m(torch.randn(2, 5, 3), torch.zeros(1, 2, 4))
    with pytest.raises(TypeError, match=r"tuple \(h, c\)"):
        LSTMCell(3, 4)(torch.randn(2, 3), torch.zeros(2, 2, 4))
    with pytest.raises(TypeError, match=r"tuple \(h, c\)"):
        m(torch.randn(2, 5, 3), (torch.zeros(1, 2, 4),))


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_wrong_state_shapes_name_the_layout(kind):
    stacked, cell = FAMILIES[kind]
    m = stacked(3, 4, num_layers=2)
    x = torch.randn(5, 7, 3)  # batch 5, seq 7

    def state(*shape):
        h = torch.zeros(*shape)
        return (h, h.clone()) if kind == "lstm" else h

    with pytest.raises(ValueError, match=r"\(num_layers, batch, hidden\) = \(2, 5, 4\)"):
        m(x, state(1, 5, 4))
    with pytest.raises(ValueError, match="even with batch_first=True"):
        m(x, state(5, 2, 4))  # batch and layer axes swapped
    with pytest.raises(ValueError, match=r"add the layer axis"):
        stacked(3, 4)(x, state(5, 4))
    with pytest.raises(ValueError, match=r"shape \(5, 4\)"):
        cell(3, 4)(x[:, 0], tuple(s[0] for s in state(1, 5, 5)) if kind == "lstm" else state(1, 5, 5)[0])
    if kind == "lstm":
        with pytest.raises(ValueError, match="c_0"):
            m(x, (torch.zeros(2, 5, 4), torch.zeros(2, 5, 3)))


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_dtype_mismatch_is_a_clear_error(kind):
    stacked, cell = FAMILIES[kind]
    with pytest.raises(TypeError, match=r"x has dtype torch.float64 but the weights are torch.float32"):
        stacked(3, 4)(torch.randn(2, 5, 3, dtype=torch.float64))
    with pytest.raises(TypeError, match="float64"):
        cell(3, 4)(torch.randn(2, 3, dtype=torch.float64))
    m = stacked(3, 4).double()
    h = torch.zeros(1, 2, 4)  # float32 state, float64 module
    with pytest.raises(TypeError, match="the state|h_0"):
        m(torch.randn(2, 5, 3, dtype=torch.float64), (h, h) if kind == "lstm" else h)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_integer_ids_and_packed_sequences_are_refused(kind):
    stacked, cell = FAMILIES[kind]
    with pytest.raises(TypeError, match="embedding"):
        stacked(3, 4)(torch.randint(0, 5, (2, 5, 3)))
    with pytest.raises(TypeError, match="embedding"):
        cell(3, 4)(torch.randint(0, 5, (2, 3)))
    packed = nn.utils.rnn.pack_padded_sequence(torch.randn(2, 5, 3), torch.tensor([5, 2]), batch_first=True)
    with pytest.raises(TypeError, match="PackedSequence"):
        stacked(3, 4)(packed)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_wrong_input_size_and_empty_inputs(kind):
    stacked, cell = FAMILIES[kind]
    with pytest.raises(ValueError, match=r"\(batch, seq, input\) with input=3, got \(2, 5, 4\)"):
        stacked(3, 4)(torch.randn(2, 5, 4))
    with pytest.raises(ValueError, match=r"\(seq, batch, input\)"):
        stacked(3, 4, batch_first=False)(torch.randn(2, 5))
    with pytest.raises(ValueError, match="at least one step"):
        stacked(3, 4)(torch.randn(2, 0, 3))
    with pytest.raises(ValueError, match=r"\(batch, 3\)"):
        cell(3, 4)(torch.randn(3))  # unbatched input: PyTorch takes it, the book's cells do not
    with pytest.raises(ValueError, match="input_size"):
        cell(0, 4)
    with pytest.raises(ValueError, match="hidden_size"):
        stacked(3, 4.0)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_inputs_and_states_are_refused(kind, bad):
    stacked, cell = FAMILIES[kind]
    x = torch.randn(2, 5, 3)
    x[1, 3, 0] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        stacked(3, 4)(x)
    with pytest.raises(ValueError, match="NaN or infinite"):
        cell(3, 4)(x[:, 3])
    h = torch.zeros(1, 2, 4)
    h[0, 0, 0] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        stacked(3, 4)(x.nan_to_num(0.0, 0.0, 0.0), (h, torch.zeros_like(h)) if kind == "lstm" else h)


def test_errors_do_not_break_valid_calls_with_lists_and_default_states():
    """A list [h, c] is as good as a tuple for the LSTM, as in PyTorch; cells default to zeros."""
    ours, theirs = _pair("lstm", input_size=3, hidden_size=4, num_layers=2, batch_first=True)
    x = torch.randn(2, 5, 3, dtype=DT)
    h, c = torch.randn(2, 2, 4, dtype=DT), torch.randn(2, 2, 4, dtype=DT)
    torch.testing.assert_close(ours(x, [h, c])[0], theirs(x, (h, c))[0])
    cell = GRUCell(3, 4)
    torch.testing.assert_close(cell(x[:, 0].float()), cell(x[:, 0].float(), torch.zeros(2, 4)))


# ---------------------------------------------------------------- documented differences from PyTorch


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_batch_first_default_differs_from_torch_and_from_torch_copies_it(kind):
    stacked, _ = FAMILIES[kind]
    torch_cls = stacked.torch_class
    assert stacked(3, 4).batch_first is True and torch_cls(3, 4).batch_first is False
    assert stacked.from_torch(torch_cls(3, 4)).batch_first is False
    assert stacked.from_torch(torch_cls(3, 4, batch_first=True)).batch_first is True


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_state_at_each_true_last_step_equals_packed_result(kind):
    """What the module docstring promises instead of PackedSequence support."""
    ours, theirs = _pair(kind, input_size=3, hidden_size=4, batch_first=True)
    lengths = torch.tensor([2, 6, 1, 4])
    x = torch.randn(4, 6, 3, dtype=DT)
    x[torch.arange(6)[None, :] >= lengths[:, None]] = 0.0  # padding
    packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    _, ref_state = theirs(packed)
    ref_h = ref_state[0] if kind == "lstm" else ref_state  # (1, batch, hidden)
    out, _ = ours(x)
    picked = out[torch.arange(4), lengths - 1]  # (batch, hidden)
    torch.testing.assert_close(picked, ref_h[0])
    assert not torch.allclose(out[:, -1], ref_h[0])  # the padded last step is not the answer
