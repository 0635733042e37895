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
    torch.testing.assert_close(pe[k:], pe[:-k] @ M.T)


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
    ref = nn.TransformerEncoderLayer(
        16, 4, 40, dropout=0.0, activation=activation, batch_first=True, norm_first=norm_first, layer_norm_eps=eps
    ).eval()
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
    ref = nn.TransformerEncoder(layer, 3, norm=nn.LayerNorm(16) if norm_first else None, enable_nested_tensor=False).eval()
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


# ---------------------------------------------------------------------------- bad input, clear errors
def test_wrong_d_model_names_the_module_and_size():
    x = torch.randn(2, 5, 12)
    for module, where in (
        (LayerNorm(16), "LayerNorm"),
        (FeedForward(16, 32), "FeedForward"),
        (EncoderLayer(16, 4, 32), "EncoderLayer"),
        (Encoder(2, 16, 4, 32), "Encoder"),
    ):
        with pytest.raises(ValueError, match=rf"{where}: .*d_model is 16"):
            module(x)


def test_encoder_needs_batch_first_3d_input():
    with pytest.raises(ValueError, match=r"\(batch, seq, d_model\)"):
        EncoderLayer(16, 4, 32)(torch.randn(5, 16))
    with pytest.raises(ValueError, match=r"\(batch, seq, d_model\)"):
        Encoder(1, 16, 4, 32)(torch.randn(1, 2, 5, 16))
    with pytest.raises(TypeError, match="must be a tensor"):
        EncoderLayer(16, 4, 32)([[0.0] * 16])


@pytest.mark.parametrize(
    "make", [lambda: LayerNorm(8), lambda: FeedForward(8, 16), lambda: EncoderLayer(8, 2, 16), lambda: Encoder(2, 8, 2, 16)]
)
def test_dtype_mismatch_is_a_clear_error(make):
    module = make().eval()
    x64 = torch.randn(2, 3, 8, dtype=torch.float64)
    with pytest.raises(TypeError, match=r"dtype torch.float64 but the module's parameters are torch.float32"):
        module(x64)
    with pytest.raises(TypeError, match="floating-point"):
        module(torch.ones(2, 3, 8, dtype=torch.long))
    out = module.double()(x64)  # converting either side fixes it
    assert out.dtype == torch.float64


def test_dtype_check_is_skipped_under_autocast():
    layer = EncoderLayer(8, 2, 16, dropout=0.0).eval()
    x = torch.randn(2, 3, 8, dtype=torch.bfloat16)
    with pytest.raises(TypeError):
        layer(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert layer(x).shape == (2, 3, 8)


def test_constructor_arguments_are_checked():
    with pytest.raises(ValueError, match="d_model .* multiple of n_heads"):
        EncoderLayer(10, 4, 32)
    with pytest.raises(ValueError, match="dropout"):
        EncoderLayer(16, 4, 32, dropout=1.0)
    with pytest.raises(ValueError, match="activation"):
        EncoderLayer(16, 4, 32, activation="swish")
    with pytest.raises(ValueError, match="eps"):
        LayerNorm(8, eps=0.0)
    with pytest.raises(ValueError, match="n_layers"):
        Encoder(0, 16, 4, 32)
    with pytest.raises(ValueError, match="d_ff"):
        FeedForward(8, 0)
    with pytest.raises(TypeError, match="norm_first"):
        EncoderLayer(16, 4, 32, norm_first="yes")
    with pytest.raises(ValueError, match="vocab_size"):
        TransformerLM(0)
    with pytest.raises(ValueError, match="base"):
        sinusoidal_positional_encoding(4, 4, base=0)


def test_lm_token_ids_out_of_range():
    lm = TransformerLM(10, d_model=16, n_heads=2, d_ff=32, n_layers=1, max_len=8).eval()
    with pytest.raises(ValueError, match=r"from 0 to 10, outside the vocabulary \[0, vocab_size = 10\)"):
        lm(torch.tensor([[0, 3, 10]]))
    with pytest.raises(ValueError, match=r"from -1 to 3"):
        lm(torch.tensor([[-1, 3]]))
    assert lm(torch.tensor([[0, 9]])).shape == (1, 2, 10)  # the edges of the range are fine


def test_lm_ids_must_be_integer_2d_and_nonempty():
    lm = TransformerLM(10, d_model=16, n_heads=2, d_ff=32, n_layers=1, max_len=8).eval()
    with pytest.raises(TypeError, match="integer token ids"):
        lm(torch.zeros(1, 3))
    with pytest.raises(ValueError, match=r"\(batch, seq\)"):
        lm(torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="at least one token"):
        lm(torch.zeros(2, 0, dtype=torch.long))
    with pytest.raises(TypeError, match="tensor of token ids"):
        lm([[1, 2]])
    assert lm(torch.zeros(1, 3, dtype=torch.int32)).shape == (1, 3, 10)


@pytest.mark.parametrize("positions", ["learned", "sinusoidal"])
def test_lm_sequence_longer_than_positional_table(positions):
    lm = TransformerLM(10, d_model=16, n_heads=2, d_ff=32, n_layers=1, max_len=8, positions=positions).eval()
    assert lm(torch.zeros(1, 8, dtype=torch.long)).shape == (1, 8, 10)
    with pytest.raises(ValueError, match=r"9 positions but the positional table has max_len = 8 rows"):
        lm(torch.zeros(1, 9, dtype=torch.long))


def test_lm_right_padding_does_not_leak():
    """With right padding, the logits of a name's real positions do not depend on the pads after it."""
    torch.manual_seed(0)
    lm = TransformerLM(10, d_model=16, n_heads=2, d_ff=32, n_layers=2, max_len=8).eval()
    short = torch.tensor([[1, 4, 5]])
    padded = torch.tensor([[1, 4, 5, 0, 0, 0]])
    torch.testing.assert_close(lm(padded)[:, :3], lm(short))


def test_encoder_layer_matches_torch_backward():
    ours, ref = _pair(True, "gelu")
    x = torch.randn(2, 6, 16, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    probe = torch.randn(2, 6, 16)
    (ours(x) * probe).sum().backward()
    (ref(x_ref) * probe).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad)
    torch.testing.assert_close(ours.ff.linear1.weight.grad, ref.linear1.weight.grad)
    torch.testing.assert_close(ours.norm1.weight.grad, ref.norm1.weight.grad)


def test_docstrings_state_the_differences_from_torch():
    doc = EncoderLayer.__doc__
    for phrase in ("batch-first", "batch_first=False", "True`` = *may attend*", "need_weights"):
        assert phrase in doc
    assert "norm=" in Encoder.__doc__
    assert "tanh" in FeedForward.__doc__ and "BertModel" in FeedForward.__doc__


# ---------------------------------------------------------------------------- chapter 19: decoder
from dlbook.nn.transformer import Decoder, DecoderLayer, EncoderDecoder  # noqa: E402


def _decoder_pair(norm_first: bool, activation: str = "relu"):
    torch.manual_seed(0)
    ref = nn.TransformerDecoderLayer(
        16, 4, 32, dropout=0.0, activation=activation, batch_first=True, norm_first=norm_first
    ).double()
    ours = DecoderLayer(16, 4, 32, dropout=0.0, activation=activation, norm_first=norm_first).double()
    return ours.load_from_torch(ref), ref


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_decoder_layer_matches_torch_forward_and_backward(norm_first, activation):
    ours, ref = _decoder_pair(norm_first, activation)
    x = torch.randn(3, 5, 16, dtype=torch.float64, requires_grad=True)
    memory = torch.randn(3, 7, 16, dtype=torch.float64, requires_grad=True)
    pad = torch.zeros(3, 7, dtype=torch.bool)
    pad[1, 4:] = True  # the second source is shorter
    blocked = nn.Transformer.generate_square_subsequent_mask(5, dtype=torch.float64)
    want = ref(x, memory, tgt_mask=blocked, memory_key_padding_mask=pad)
    got = ours(x, memory, memory_key_padding_mask=pad)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    probe = torch.randn_like(want)
    g_ref = torch.autograd.grad((want * probe).sum(), [x, memory, ref.multihead_attn.in_proj_weight, ref.norm3.weight])
    g_ours = torch.autograd.grad((got * probe).sum(), [x, memory, ours.cross_attn.q_proj.weight, ours.norm3.weight])
    torch.testing.assert_close(g_ours[0], g_ref[0], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(g_ours[1], g_ref[1], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(g_ours[2], g_ref[2][:16], rtol=1e-10, atol=1e-10)  # the query rows
    torch.testing.assert_close(g_ours[3], g_ref[3], rtol=1e-10, atol=1e-10)


def test_decoder_layer_is_causal_and_ignores_source_padding():
    ours, _ = _decoder_pair(False)
    x = torch.randn(2, 6, 16, dtype=torch.float64)
    memory = torch.randn(2, 5, 16, dtype=torch.float64)
    full = ours(x, memory)
    x2 = x.clone()
    x2[:, 4:] = torch.randn(2, 2, 16, dtype=torch.float64)  # change the future
    torch.testing.assert_close(ours(x2, memory)[:, :4], full[:, :4])
    pad = torch.tensor([[False] * 5, [False, False, False, True, True]])
    m2 = memory.clone()
    m2[1, 3:] = 100.0  # change the padded source positions only
    torch.testing.assert_close(ours(x, m2, memory_key_padding_mask=pad), ours(x, memory, memory_key_padding_mask=pad))
    _, w_self, w_cross = ours(x, memory, memory_key_padding_mask=pad, need_weights=True)
    assert w_self.shape == (2, 4, 6, 6) and w_cross.shape == (2, 4, 6, 5)
    assert float(w_self.detach().triu(1).abs().max()) == 0.0
    assert float(w_cross.detach()[1, :, :, 3:].abs().max()) == 0.0
    torch.testing.assert_close(w_cross.sum(-1), torch.ones(2, 4, 6, dtype=torch.float64))


def test_decoder_bad_input():
    layer = DecoderLayer(16, 4, 32)
    with pytest.raises(ValueError, match="d_model"):
        layer(torch.randn(2, 3, 8), torch.randn(2, 4, 16))
    with pytest.raises(ValueError, match="memory"):
        layer(torch.randn(2, 3, 16), torch.randn(2, 4, 8))
    with pytest.raises(ValueError, match="batch size"):
        layer(torch.randn(2, 3, 16), torch.randn(3, 4, 16))
    with pytest.raises(ValueError, match="multiple of n_heads"):
        DecoderLayer(10, 4, 32)
    with pytest.raises(TypeError, match="nn.TransformerDecoderLayer"):
        layer.load_from_torch(nn.TransformerEncoderLayer(16, 4, 32))
    with pytest.raises(ValueError, match="norm_first"):
        layer.load_from_torch(nn.TransformerDecoderLayer(16, 4, 32, norm_first=True))
    with pytest.raises(ValueError, match="activation"):
        layer.load_from_torch(nn.TransformerDecoderLayer(16, 4, 32, activation="gelu"))
    with pytest.raises(ValueError, match="n_layers"):
        Decoder(0, 16, 4, 32)


def _torch_transformer(n_enc=2, n_dec=2):
    layer = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True, norm_first=True)
    # our own encoder stack: nn.Transformer's default one warns about nested tensors with norm_first
    encoder = nn.TransformerEncoder(layer, n_enc, norm=nn.LayerNorm(16), enable_nested_tensor=False)
    return nn.Transformer(
        16, 4, n_enc, n_dec, 32, dropout=0.0, batch_first=True, norm_first=True, custom_encoder=encoder
    ).double()


def test_encoder_decoder_body_matches_torch_transformer():
    torch.manual_seed(1)
    ref = _torch_transformer()
    model = EncoderDecoder(10, 12, d_model=16, n_heads=4, d_ff=32).double().load_body_from_torch(ref)
    src = torch.randn(3, 7, 16, dtype=torch.float64, requires_grad=True)
    tgt = torch.randn(3, 5, 16, dtype=torch.float64, requires_grad=True)
    pad = torch.zeros(3, 7, dtype=torch.bool)
    pad[2, 5:] = True
    blocked = nn.Transformer.generate_square_subsequent_mask(5, dtype=torch.float64)
    want = ref(src, tgt, tgt_mask=blocked, src_key_padding_mask=pad, memory_key_padding_mask=pad)
    got = model.decoder(tgt, model.encoder(src, key_padding_mask=pad), memory_key_padding_mask=pad)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    probe = torch.randn_like(want)
    g_ref = torch.autograd.grad((want * probe).sum(), [src, tgt])
    g_ours = torch.autograd.grad((got * probe).sum(), [src, tgt])
    for a, b in zip(g_ours, g_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_encoder_decoder_refuses_post_norm_and_wrong_depth():
    ref = _torch_transformer()
    with pytest.raises(ValueError, match="post-norm"):
        EncoderDecoder(10, 10, d_model=16, n_heads=4, d_ff=32, norm_first=False).load_body_from_torch(ref)
    with pytest.raises(ValueError, match="layer counts"):
        EncoderDecoder(10, 10, d_model=16, n_heads=4, d_ff=32, n_dec=1).load_body_from_torch(ref)


def test_encoder_decoder_teacher_forcing_equals_step_by_step():
    torch.manual_seed(0)
    model = EncoderDecoder(9, 11, d_model=16, n_heads=2, d_ff=32, max_len=12).eval()
    src = torch.tensor([[3, 4, 5, 6, 0, 0], [7, 8, 3, 3, 4, 5]])  # the first source is padded
    tgt = torch.randint(1, 11, (2, 6))
    logits = model(src, tgt)  # (2, 6, 11)
    memory, pad = model.encode(src)
    for t in range(1, 7):
        torch.testing.assert_close(model.decode(tgt[:, :t], memory, pad)[:, -1], logits[:, t - 1])
    longer = torch.cat([src, torch.zeros(2, 3, dtype=torch.long)], dim=1)  # more padding changes nothing
    torch.testing.assert_close(model(longer, tgt), logits)


def test_encoder_decoder_bad_input():
    model = EncoderDecoder(9, 11, d_model=16, n_heads=2, d_ff=32, max_len=8)
    with pytest.raises(ValueError, match="outside"):
        model(torch.tensor([[1, 9]]), torch.tensor([[1]]))
    with pytest.raises(ValueError, match="max_len"):
        model(torch.ones(1, 9, dtype=torch.long), torch.tensor([[1]]))
    with pytest.raises(TypeError, match="integer"):
        model(torch.ones(1, 3), torch.tensor([[1]]))
    with pytest.raises(ValueError, match="batch size"):
        model(torch.ones(2, 3, dtype=torch.long), torch.ones(1, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="pad_id"):
        EncoderDecoder(9, 11, pad_id=9)
