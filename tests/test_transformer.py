"""dlbook.nn.transformer against the PyTorch references (chapter 7)."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dlbook.nn.attention import causal_mask
from dlbook.nn.transformer import (
    Encoder,
    EncoderLayer,
    FeedForward,
    LayerNorm,
    TransformerLM,
    sinusoidal_positional_encoding,
)


def test_pe_formula():
    pe = sinusoidal_positional_encoding(50, 16)
    assert pe.shape == (50, 16) and pe.dtype == torch.get_default_dtype()
    for pos in (0, 7, 49):
        for i in range(8):
            w = 1 / 10000 ** (2 * i / 16)
            assert math.isclose(pe[pos, 2 * i].item(), math.sin(pos * w), abs_tol=1e-6)
            assert math.isclose(pe[pos, 2 * i + 1].item(), math.cos(pos * w), abs_tol=1e-6)


def test_pe_shift_is_rotation():
    d, k = 16, 5
    pe = sinusoidal_positional_encoding(40, d).double()
    M = torch.zeros(d, d, dtype=torch.float64)
    for i in range(d // 2):
        a = k / 10000 ** (2 * i / d)
        M[2 * i : 2 * i + 2, 2 * i : 2 * i + 2] = torch.tensor([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])
    torch.testing.assert_close(pe[k:] , pe[:-k] @ M.T)


def test_pe_odd_and_errors():
    assert sinusoidal_positional_encoding(3, 5).shape == (3, 5)
    with pytest.raises(ValueError):
        sinusoidal_positional_encoding(0, 4)
    with pytest.raises(ValueError):
        sinusoidal_positional_encoding(4, 2.5)


@pytest.mark.parametrize("eps", [1e-5, 1e-12])
def test_layernorm_matches_torch(eps):
    torch.manual_seed(0)
    ref = nn.LayerNorm(12, eps=eps)
    with torch.no_grad():
        ref.weight.normal_()
        ref.bias.normal_()
    ours = LayerNorm(12, eps)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(3, 5, 12) * 4 + 2
    torch.testing.assert_close(ours(x), ref(x))
    with pytest.raises(ValueError):
        ours(torch.randn(3, 5, 11))


def test_feedforward():
    torch.manual_seed(0)
    ff = FeedForward(8, 32)
    x = torch.randn(2, 3, 8)
    torch.testing.assert_close(ff(x), ff.linear2(torch.relu(ff.linear1(x))))
    g = FeedForward(8, 32, "gelu")
    h = g.linear1(x)
    exact = 0.5 * h * (1 + torch.erf(h / math.sqrt(2)))
    torch.testing.assert_close(g(x), g.linear2(exact))
    assert not torch.allclose(g(x), g.linear2(F.gelu(h, approximate="tanh")), atol=1e-7, rtol=0)
    with pytest.raises(ValueError):
        FeedForward(8, 32, "swish")
    with pytest.raises(ValueError):
        ff(torch.randn(2, 3, 9))


def _pair(norm_first, activation="relu", eps=1e-5):
    torch.manual_seed(0)
    ref = nn.TransformerEncoderLayer(16, 4, 40, dropout=0.0, activation=activation, batch_first=True,
                                     norm_first=norm_first, layer_norm_eps=eps).eval()
    with torch.no_grad():
        for p in ref.parameters():  # move away from the default init (zero biases, unit norms)
            p.add_(0.1 * torch.randn_like(p))
    ours = EncoderLayer(16, 4, 40, dropout=0.0, activation=activation, norm_first=norm_first, eps=eps)
    return ours.load_from_torch(ref).eval(), ref


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_encoder_layer_matches_torch(norm_first, activation):
    ours, ref = _pair(norm_first, activation)
    x = torch.randn(3, 7, 16)
    torch.testing.assert_close(ours(x), ref(x))
    pad = torch.zeros(3, 7, dtype=torch.bool)
    pad[1, 5:] = True
    torch.testing.assert_close(ours(x, key_padding_mask=pad), ref(x, src_key_padding_mask=pad))
    torch.testing.assert_close(ours(x, causal=True), ref(x, src_mask=~causal_mask(7)))


def test_encoder_layer_needs_weights_and_errors():
    ours, ref = _pair(False)
    x = torch.randn(2, 5, 16)
    y, w = ours(x, need_weights=True)
    assert y.shape == x.shape and w.shape == (2, 4, 5, 5)
    with pytest.raises(ValueError):
        ours(torch.randn(2, 5, 8))
    with pytest.raises(ValueError):
        EncoderLayer(16, 4, 40, norm_first=True).load_from_torch(ref)
    with pytest.raises(ValueError):
        EncoderLayer(16, 4, 40, activation="gelu").load_from_torch(ref)
    with pytest.raises(ValueError):
        EncoderLayer(16, 4, 40, eps=1e-12).load_from_torch(ref)


@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_stack_matches_torch(norm_first):
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 4, 40, dropout=0.0, batch_first=True, norm_first=norm_first)
    ref = nn.TransformerEncoder(layer, 3, norm=nn.LayerNorm(16) if norm_first else None,
                                enable_nested_tensor=False).eval()
    ours = Encoder(3, 16, 4, 40, dropout=0.0, norm_first=norm_first).eval()
    for a, b in zip(ours.layers, ref.layers, strict=True):
        a.load_from_torch(b)
    x = torch.randn(2, 6, 16)
    torch.testing.assert_close(ours(x), ref(x))
    y, ws = ours(x, need_weights=True)
    assert len(ws) == 3


def test_transformer_lm_is_causal():
    torch.manual_seed(0)
    for positions in ("learned", "sinusoidal"):
        lm = TransformerLM(10, d_model=16, n_heads=2, d_ff=32, n_layers=2, max_len=8, positions=positions).eval()
        idx = torch.randint(0, 10, (2, 8))
        logits = lm(idx)
        assert logits.shape == (2, 8, 10)
        idx2 = idx.clone()
        idx2[:, 5:] = (idx2[:, 5:] + 1) % 10  # changing the future must not change the past
        torch.testing.assert_close(lm(idx2)[:, :5], logits[:, :5])
        assert not torch.allclose(lm(idx2)[:, 5:], logits[:, 5:])
    with pytest.raises(ValueError):
        lm(torch.randint(0, 10, (2, 9)))
    with pytest.raises(ValueError):
        TransformerLM(10, positions="rope")
