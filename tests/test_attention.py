"""dlbook.nn.attention against the PyTorch references (chapter 6)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dlbook.nn.attention import MultiHeadAttention, causal_mask, scaled_dot_product_attention


@pytest.fixture
def qkv():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 3, 5, 8, generator=g)
    k = torch.randn(2, 3, 7, 8, generator=g)
    v = torch.randn(2, 3, 7, 4, generator=g)
    return q, k, v


def test_sdpa_no_mask(qkv):
    q, k, v = qkv
    out, w = scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v))
    assert w.shape == (2, 3, 5, 7)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 3, 5))


def test_sdpa_scale_matters(qkv):
    q, k, v = qkv
    out, _ = scaled_dot_product_attention(q, k, v, scale=1 / 8)  # 1/d_k: the wrong scale
    assert not torch.allclose(out, F.scaled_dot_product_attention(q, k, v), atol=1e-4)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, scale=1 / 8))


def test_sdpa_bool_padding_mask(qkv):
    q, k, v = qkv
    lengths = torch.tensor([7, 4])
    mask = (torch.arange(7)[None, :] < lengths[:, None])[:, None, None, :]  # (B, 1, 1, L_k)
    out, w = scaled_dot_product_attention(q, k, v, mask=mask)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
    assert torch.all(w[1, :, :, 4:] == 0)


def test_sdpa_float_mask_equals_bool(qkv):
    q, k, v = qkv
    mask = torch.rand(5, 7, generator=torch.Generator().manual_seed(1)) > 0.3
    mask[:, 0] = True
    additive = torch.zeros(5, 7).masked_fill(~mask, float("-inf"))
    a, _ = scaled_dot_product_attention(q, k, v, mask=mask)
    b, _ = scaled_dot_product_attention(q, k, v, mask=additive)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(b, F.scaled_dot_product_attention(q, k, v, attn_mask=additive))


def test_sdpa_causal(qkv):
    q, k, v = qkv
    k, v = k[..., :5, :], v[..., :5, :]
    out, w = scaled_dot_product_attention(q, k, v, causal=True)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, is_causal=True))
    assert torch.all(w.triu(1) == 0)
    out2, _ = scaled_dot_product_attention(q, k, v, mask=causal_mask(5))
    torch.testing.assert_close(out, out2)


def test_sdpa_causal_rectangular(qkv):
    q, k, v = qkv  # L_q=5, L_k=7: top-left aligned like torch
    out, _ = scaled_dot_product_attention(q, k, v, causal=True)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, is_causal=True))


def test_sdpa_fully_masked_row_is_zero_like_torch(qkv):
    q, k, v = qkv
    mask = torch.ones(5, 7, dtype=torch.bool)
    mask[2] = False
    out, w = scaled_dot_product_attention(q, k, v, mask=mask)
    assert torch.all(w[..., 2, :] == 0) and torch.all(out[..., 2, :] == 0)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask))


def test_sdpa_gradients_match(qkv):
    q, k, v = (t.clone().requires_grad_() for t in qkv)
    scaled_dot_product_attention(q, k, v)[0].square().sum().backward()
    grads = [t.grad.clone() for t in (q, k, v)]
    for t in (q, k, v):
        t.grad = None
    F.scaled_dot_product_attention(q, k, v).square().sum().backward()
    for g, t in zip(grads, (q, k, v), strict=True):
        torch.testing.assert_close(g, t.grad)


def test_sdpa_dropout_zeroes_weights(qkv):
    q, k, v = qkv
    torch.manual_seed(0)
    _, w = scaled_dot_product_attention(q, k, v, dropout_p=0.5)
    assert (w == 0).float().mean() > 0.3


@pytest.mark.parametrize(
    "bad",
    [
        dict(q=torch.randn(5, 8), k=torch.randn(7, 6), v=torch.randn(7, 4)),  # d_k differ
        dict(q=torch.randn(5, 8), k=torch.randn(7, 8), v=torch.randn(6, 4)),  # L_k differ
        dict(q=torch.randn(2, 5, 8), k=torch.randn(3, 7, 8), v=torch.randn(3, 7, 4)),  # batch differ
        dict(q=torch.randn(8), k=torch.randn(7, 8), v=torch.randn(7, 4)),  # 1-D
        dict(q=torch.randn(5, 8), k=torch.randn(7, 8), v=torch.randn(7, 4), mask=torch.ones(4, 7, dtype=torch.bool)),
        dict(q=torch.randn(5, 8), k=torch.randn(7, 8), v=torch.randn(7, 4), mask=torch.ones(2, 5, 7, dtype=torch.bool)),
    ],
)
def test_sdpa_bad_shapes(bad):
    with pytest.raises(ValueError):
        scaled_dot_product_attention(**bad)


def test_sdpa_int_mask_rejected():
    x = torch.randn(5, 8)
    with pytest.raises(TypeError):
        scaled_dot_product_attention(x, x, x, mask=torch.ones(5, 5, dtype=torch.long))


def test_causal_mask():
    m = causal_mask(4)
    assert m.dtype == torch.bool and m.shape == (4, 4)
    assert torch.equal(m, torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool))
    assert causal_mask(2, n_keys=3).shape == (2, 3)
    with pytest.raises(ValueError):
        causal_mask(0)


def _pair(d=16, h=4, bias=True):
    torch.manual_seed(0)
    ref = nn.MultiheadAttention(d, h, bias=bias, batch_first=True).eval()
    if bias:  # torch initialises the in-projection bias to 0: make it non-trivial
        with torch.no_grad():
            ref.in_proj_bias.normal_()
            ref.out_proj.bias.normal_()
    ours = MultiHeadAttention(d, h, bias=bias).load_from_torch(ref).eval()
    return ours, ref


@pytest.mark.parametrize("bias", [True, False])
def test_mha_matches_torch(bias):
    ours, ref = _pair(bias=bias)
    x, m = torch.randn(3, 6, 16), torch.randn(3, 9, 16)
    out, w = ours(x, m, m, need_weights=True)
    ref_out, ref_w = ref(x, m, m, need_weights=True, average_attn_weights=False)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(w, ref_w)


def test_mha_key_padding_and_causal():
    ours, ref = _pair()
    x = torch.randn(2, 6, 16)
    pad = torch.tensor([[False] * 6, [False] * 4 + [True] * 2])
    out, _ = ours(x, x, x, key_padding_mask=pad)
    ref_out, _ = ref(x, x, x, key_padding_mask=pad)
    torch.testing.assert_close(out, ref_out)
    # bool mask with the opposite meaning of torch's attn_mask (True = may attend here)
    out, _ = ours(x, x, x, causal=True)
    ref_out, _ = ref(x, x, x, attn_mask=~causal_mask(6), need_weights=False)
    torch.testing.assert_close(out, ref_out)
    out2, _ = ours(x, x, x, mask=causal_mask(6), key_padding_mask=pad)
    ref_out2, _ = ref(x, x, x, attn_mask=~causal_mask(6), key_padding_mask=pad, need_weights=False)
    torch.testing.assert_close(out2, ref_out2)
    # additive float mask combined with key padding
    add = torch.zeros(6, 6).masked_fill(~causal_mask(6), float("-inf"))
    out3, _ = ours(x, x, x, mask=add, key_padding_mask=pad)
    torch.testing.assert_close(out3, ref_out2)


def test_mha_hf_style_mask():
    ours, ref = _pair()
    x = torch.randn(2, 6, 16)
    attention_mask = torch.tensor([[1] * 6, [1] * 3 + [0] * 3])  # Hugging Face: 1 = real token
    out, _ = ours(x, x, x, mask=attention_mask.bool()[:, None, None, :])
    ref_out, _ = ref(x, x, x, key_padding_mask=attention_mask == 0)
    torch.testing.assert_close(out, ref_out)


def test_mha_errors():
    ours, ref = _pair()
    with pytest.raises(ValueError):
        MultiHeadAttention(10, 3)
    with pytest.raises(ValueError):
        ours(torch.randn(2, 5, 8), torch.randn(2, 5, 8), torch.randn(2, 5, 8))
    x = torch.randn(2, 5, 16)
    with pytest.raises(ValueError):
        ours(x, x, x, key_padding_mask=torch.zeros(2, 4, dtype=torch.bool))
    with pytest.raises(TypeError):
        ours(x, x, x, key_padding_mask=torch.zeros(2, 5))
    with pytest.raises(ValueError):
        MultiHeadAttention(16, 2).load_from_torch(ref)
    with pytest.raises(TypeError):
        ours.load_from_torch(nn.Linear(16, 16))


def test_mha_weights_optional():
    ours, _ = _pair()
    x = torch.randn(1, 4, 16)
    assert ours(x, x, x)[1] is None
