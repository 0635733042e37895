"""dlbook.nn.attention against the PyTorch references (chapter 6)."""

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention.bias import causal_lower_right

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


# ----------------------------------------------------------------------------- fully blocked rows


def _grads(fn, *tensors):
    """Gradients of sum(fn(*tensors) * probe) with respect to every tensor (a fixed random probe)."""
    leaves = [t.detach().clone().requires_grad_() for t in tensors]
    out = fn(*leaves)
    probe = torch.randn(out.shape, generator=torch.Generator().manual_seed(3), dtype=out.dtype)
    (out * probe).sum().backward()
    return out.detach(), [t.grad for t in leaves]


@pytest.mark.parametrize("kind", ["bool", "float"])
def test_sdpa_fully_blocked_row_forward_and_backward_match_torch(qkv, kind):
    keep = torch.ones(5, 7, dtype=torch.bool)
    keep[2] = False  # query 2 may attend to nothing
    keep[4, 3:] = False
    mask = keep if kind == "bool" else torch.zeros(5, 7).masked_fill(~keep, float("-inf"))
    out, grads = _grads(lambda q, k, v: scaled_dot_product_attention(q, k, v, mask=mask)[0], *qkv)
    ref_out, ref_grads = _grads(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=mask), *qkv)
    assert torch.all(out[..., 2, :] == 0)  # the documented choice: zeros, as torch returns
    torch.testing.assert_close(out, ref_out)
    for g, r in zip(grads, ref_grads, strict=True):
        assert torch.isfinite(g).all()
        torch.testing.assert_close(g, r)
    assert torch.all(grads[0][..., 2, :] == 0)  # the blocked query gets no gradient


def test_sdpa_fully_blocked_row_gradcheck_float64():
    g = torch.Generator().manual_seed(4)
    q, k, v = (torch.randn(2, n, 3, generator=g, dtype=torch.float64, requires_grad=True) for n in (4, 5, 5))
    mask = torch.zeros(4, 5, dtype=torch.float64)
    mask[1] = float("-inf")  # a fully blocked row
    mask[3, :2] = float("-inf")
    assert torch.autograd.gradcheck(lambda q, k, v: scaled_dot_product_attention(q, k, v, mask=mask)[0], (q, k, v))
    assert torch.autograd.gradcheck(lambda q, k, v: scaled_dot_product_attention(q, k, v, causal=True)[0], (q, k, v))


def test_sdpa_row_blocked_by_mask_and_causal_together(qkv):
    q, k, v = qkv
    keep = torch.ones(5, 7, dtype=torch.bool)
    keep[0, 0] = False  # causal leaves query 0 only key 0, the mask takes it away
    out, grads = _grads(lambda q, k, v: scaled_dot_product_attention(q, k, v, mask=keep, causal=True)[0], q, k, v)
    both = keep & causal_mask(5, n_keys=7)
    ref_out, ref_grads = _grads(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=both), q, k, v)
    torch.testing.assert_close(out, ref_out)
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r)


def test_mha_float_mask_and_all_padding_sequence_has_finite_gradients():
    ours, ref = _pair()
    x = torch.randn(2, 6, 16)
    pad = torch.tensor([[False] * 4 + [True] * 2, [True] * 6])  # the second sequence is all padding
    add = torch.zeros(6, 6).masked_fill(~causal_mask(6), float("-inf"))
    for mask in (add, causal_mask(6), None):
        ours.zero_grad()
        out, w = ours(x, x, x, mask=mask, key_padding_mask=pad, need_weights=True)
        out.square().sum().backward()
        for name, p in ours.named_parameters():
            assert torch.isfinite(p.grad).all(), name
        assert torch.all(w[1] == 0)
        torch.testing.assert_close(out[1], ours.out_proj.bias.detach().expand(6, 16))  # zero heads -> bias
    # the real sequence, forward and backward, against torch run on it alone (torch's output for the all-padding
    # sequence depends on its arguments: see test_torch_mha_all_padding_depends_on_the_call)
    ours.zero_grad()
    out, _ = ours(x, x, x, mask=add, key_padding_mask=pad)
    out[0].square().sum().backward()
    ref_out, _ = ref(x[:1], x[:1], x[:1], attn_mask=~causal_mask(6), key_padding_mask=pad[:1], need_weights=False)
    ref_out.square().sum().backward()
    torch.testing.assert_close(out[:1], ref_out)
    q_w, k_w, v_w = ref.in_proj_weight.grad.chunk(3)
    for got, want in (
        (ours.q_proj.weight.grad, q_w),
        (ours.k_proj.weight.grad, k_w),
        (ours.v_proj.weight.grad, v_w),
        (ours.out_proj.weight.grad, ref.out_proj.weight.grad),
    ):
        torch.testing.assert_close(got, want)


def test_torch_mha_all_padding_depends_on_the_call():
    """What the docstrings say of nn.MultiheadAttention on an all-padding sequence, on the installed PyTorch."""
    ours, ref = _pair()  # both in eval mode
    x = torch.randn(2, 5, 16, requires_grad=True)
    pad = torch.tensor([[False] * 5, [True] * 5])  # the second sequence is all padding
    bias = ref.out_proj.bias.detach().expand(5, 16)
    out, _ = ref(x, x, x, key_padding_mask=pad)  # need_weights=True, the default
    assert out[1].isnan().all()
    out, _ = ref(x, x, x, key_padding_mask=pad, need_weights=False)  # with autograd: the SDPA path
    torch.testing.assert_close(out[1], bias)
    with torch.no_grad():  # eval, no autograd, need_weights=False: the inference fast path
        out, _ = ref(x, x, x, key_padding_mask=pad, need_weights=False)
    assert out[1].isnan().all()
    for need_weights in (True, False):  # ours: the bias, whatever the call
        torch.testing.assert_close(ours(x, x, x, key_padding_mask=pad, need_weights=need_weights)[0][1], bias)
        with torch.no_grad():
            torch.testing.assert_close(ours(x, x, x, key_padding_mask=pad, need_weights=need_weights)[0][1], bias)


def test_mha_refuses_per_sequence_3d_mask_that_would_hit_the_heads():
    ours, _ = _pair()  # 4 heads
    x = torch.randn(4, 6, 16)  # B == n_heads: a (B, L, L) mask would broadcast onto the heads silently
    keep = torch.ones(4, 6, 6, dtype=torch.bool)
    keep[1, :, 3:] = False  # sequence 1: keys 3.. are padding
    with pytest.raises(ValueError, match=r"mask\[:, None\]"):
        ours(x, x, x, mask=keep)
    with pytest.raises(ValueError, match="ambiguous"):
        ours(x, x, x, mask=torch.zeros(4, 6, 6))  # float masks too
    out, w = ours(x, x, x, mask=keep[:, None], need_weights=True)  # (B, 1, L, L): per sequence
    assert torch.all(w[1, :, :, 3:] == 0) and torch.all(w[[0, 2, 3]] > 0)
    want, _ = ours(x, x, x, key_padding_mask=~keep[:, 0, :])
    torch.testing.assert_close(out, want)
    shared, _ = ours(x, x, x, mask=causal_mask(6)[None])  # (1, L, L) is fine: it broadcasts over the batch
    torch.testing.assert_close(shared, ours(x, x, x, causal=True)[0])


def test_sdpa_finite_large_negative_row_is_uniform_like_torch(qkv):
    q, k, v = qkv
    add = torch.zeros(5, 7)
    add[2] = torch.finfo(torch.float32).min  # Hugging Face's "blocked": every key of query 2
    out, w = scaled_dot_product_attention(q, k, v, mask=add)
    torch.testing.assert_close(w[..., 2, :], torch.full_like(w[..., 2, :], 1 / 7))  # uniform, not zero
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=add))


# ----------------------------------------------------------------------------- backward and cross-attention


def _assert_mha_grads_match(ours: MultiHeadAttention, ref: nn.MultiheadAttention) -> None:
    if ref._qkv_same_embed_dim:
        ref_w = ref.in_proj_weight.grad.chunk(3)
    else:
        ref_w = (ref.q_proj_weight.grad, ref.k_proj_weight.grad, ref.v_proj_weight.grad)
    ref_b = ref.in_proj_bias.grad.chunk(3)
    for proj, w, b in zip((ours.q_proj, ours.k_proj, ours.v_proj), ref_w, ref_b, strict=True):
        torch.testing.assert_close(proj.weight.grad, w)
        torch.testing.assert_close(proj.bias.grad, b)
    torch.testing.assert_close(ours.out_proj.weight.grad, ref.out_proj.weight.grad)
    torch.testing.assert_close(ours.out_proj.bias.grad, ref.out_proj.bias.grad)


def test_mha_backward_matches_torch_causal_self_attention():
    ours, ref = _pair()
    x = torch.randn(3, 6, 16)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours(xa, xa, xa, causal=True)[0].square().sum().backward()
    ref(xb, xb, xb, attn_mask=~causal_mask(6), need_weights=False)[0].square().sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad)
    _assert_mha_grads_match(ours, ref)


@pytest.mark.parametrize("kdim, vdim", [(None, None), (10, 6)])
def test_cross_attention_matches_torch_forward_and_backward(kdim, vdim):
    torch.manual_seed(0)
    ref = nn.MultiheadAttention(16, 4, batch_first=True, kdim=kdim, vdim=vdim).eval()
    with torch.no_grad():
        ref.in_proj_bias.normal_()
        ref.out_proj.bias.normal_()
    ours = MultiHeadAttention(16, 4, kdim=kdim, vdim=vdim).load_from_torch(ref).eval()
    tgt = torch.randn(2, 5, 16)  # queries: 5 positions
    mem_k = torch.randn(2, 9, kdim or 16)  # keys and values: another sequence of 9 positions
    mem_v = torch.randn(2, 9, vdim or 16)
    pad = torch.zeros(2, 9, dtype=torch.bool)
    pad[1, 6:] = True  # the second memory has 6 real positions
    inputs_a = [t.clone().requires_grad_() for t in (tgt, mem_k, mem_v)]
    inputs_b = [t.clone().requires_grad_() for t in (tgt, mem_k, mem_v)]
    out, w = ours(*inputs_a, key_padding_mask=pad, need_weights=True)
    ref_out, ref_w = ref(*inputs_b, key_padding_mask=pad, average_attn_weights=False)
    assert out.shape == (2, 5, 16) and w.shape == (2, 4, 5, 9)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(w, ref_w)
    assert torch.all(w[1, ..., 6:] == 0)
    out.square().sum().backward()
    ref_out.square().sum().backward()
    for a, b in zip(inputs_a, inputs_b, strict=True):
        torch.testing.assert_close(a.grad, b.grad)
    assert torch.all(inputs_a[1].grad[1, 6:] == 0)  # padded memory positions get no gradient
    _assert_mha_grads_match(ours, ref)


def test_mha_scale_argument():
    ours, _ = _pair()
    x = torch.randn(2, 5, 16)
    unscaled = MultiHeadAttention(16, 4, scale=1.0)
    unscaled.load_state_dict(ours.state_dict())
    q, k, v = (ours._split(p(x)) for p in (ours.q_proj, ours.k_proj, ours.v_proj))
    heads = F.scaled_dot_product_attention(q, k, v, scale=1.0).transpose(1, 2).reshape(2, 5, 16)
    torch.testing.assert_close(unscaled(x, x, x)[0], ours.out_proj(heads))
    assert not torch.allclose(unscaled(x, x, x)[0], ours(x, x, x)[0])
    assert "scale=1.0" in repr(unscaled)


def test_mha_under_autocast_accepts_low_precision_inputs():
    ours, _ = _pair()
    x = torch.randn(2, 5, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = ours(x.bfloat16(), x.bfloat16(), x.bfloat16())
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()


# ----------------------------------------------------------------------------- causal alignment


def test_causal_mask_alignments_match_torch():
    for L_q, L_k in ((3, 5), (5, 5), (4, 2)):
        top = causal_mask(L_q, n_keys=L_k)
        assert torch.equal(top, torch.ones(L_q, L_k, dtype=torch.bool).tril())  # what is_causal=True uses
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # torch warns when L_q > L_k: some rows see no key
            want = causal_lower_right(L_q, L_k)._materialize()
        assert torch.equal(causal_mask(L_q, n_keys=L_k, align="bottom-right"), want)
    assert torch.equal(causal_mask(4, align="bottom-right"), causal_mask(4))
    with pytest.raises(ValueError, match="align"):
        causal_mask(3, align="bottom")


def test_bottom_right_mask_is_the_one_for_decoding_with_a_cache(qkv):
    q, k, v = qkv  # L_q = 5 < L_k = 7: the 5 queries are the last 5 of 7 positions
    full_q = torch.cat([torch.randn(2, 3, 2, 8), q], dim=-2)  # queries for all 7 positions
    full, _ = scaled_dot_product_attention(full_q, k, v, causal=True)  # (2, 3, 7, 4)
    last, _ = scaled_dot_product_attention(q, k, v, mask=causal_mask(5, n_keys=7, align="bottom-right"))
    torch.testing.assert_close(last, full[..., 2:, :])
    top_left, _ = scaled_dot_product_attention(q, k, v, causal=True)
    assert not torch.allclose(top_left, full[..., 2:, :])


# ----------------------------------------------------------------------------- clear errors on bad input


@pytest.mark.parametrize(
    "mask, error, match",
    [
        ([[True] * 7] * 5, TypeError, "tensor"),  # a list, not a tensor
        (torch.ones(5, 7, dtype=torch.long), TypeError, "bool"),
        (torch.ones(5, 7, dtype=torch.uint8), TypeError, "uint8"),
        (torch.ones(5, 7, dtype=torch.complex64), TypeError, "bool"),
        (torch.ones(4, 7, dtype=torch.bool), ValueError, "broadcast"),
        (torch.ones(9, 2, 3, 5, 7, dtype=torch.bool), ValueError, "enlarge"),
        (torch.ones(5, 7, dtype=torch.bool, device="meta"), ValueError, "meta"),
    ],
)
def test_sdpa_bad_masks(qkv, mask, error, match):
    q, k, v = qkv
    with pytest.raises(error, match=match):
        scaled_dot_product_attention(q, k, v, mask=mask)


@pytest.mark.parametrize(
    "change, error, match",
    [
        (dict(q=[[1.0]]), TypeError, "q must be a tensor"),
        (dict(k=torch.ones(2, 3, 7, 8, dtype=torch.long)), TypeError, "floating"),
        (dict(v=torch.randn(2, 3, 7, 4, dtype=torch.float64)), TypeError, "same dtype"),
        (dict(v=torch.randn(2, 3, 7, 4, device="meta")), ValueError, "same device"),
        (dict(k=torch.randn(2, 3, 7, 6)), ValueError, "d_k"),
        (dict(v=torch.randn(2, 3, 6, 4)), ValueError, "L_k"),
        (dict(dropout_p=1.0), ValueError, "dropout_p"),
        (dict(scale=float("nan")), ValueError, "scale"),
        (dict(causal=1), TypeError, "causal"),
    ],
)
def test_sdpa_bad_arguments(qkv, change, error, match):
    args = dict(zip("qkv", qkv, strict=True)) | change
    with pytest.raises(error, match=match):
        scaled_dot_product_attention(**args)


def test_mha_bad_inputs_name_the_argument():
    ours, _ = _pair()
    x = torch.randn(2, 5, 16)
    with pytest.raises(TypeError, match="query must be a tensor"):
        ours(x.tolist(), x, x)
    with pytest.raises(TypeError, match="floating"):
        ours(x.long(), x, x)
    with pytest.raises(TypeError, match="module's weights are torch.float32"):  # dtype: input vs module
        ours(x.double(), x.double(), x.double())
    with pytest.raises(TypeError, match="same dtype"):
        ours(x, x.double(), x)
    with pytest.raises(ValueError, match="d_model is 16"):  # embed dim mismatch
        ours(torch.randn(2, 5, 12), x, x)
    with pytest.raises(ValueError, match="kdim is 16"):
        ours(x, torch.randn(2, 5, 12), x)
    with pytest.raises(ValueError, match=r"must be \(B, L, 16\)"):
        ours(x[0], x, x)
    with pytest.raises(ValueError, match="same length L_k"):  # key/value length mismatch
        ours(x, torch.randn(2, 7, 16), torch.randn(2, 6, 16))
    with pytest.raises(ValueError, match="batch size"):
        ours(x, torch.randn(3, 5, 16), torch.randn(3, 5, 16))
    with pytest.raises(TypeError, match="mask must be a tensor"):
        ours(x, x, x, mask="causal")
    with pytest.raises(TypeError, match="bool"):
        ours(x, x, x, mask=torch.ones(5, 5, dtype=torch.int32))
    with pytest.raises(ValueError, match="broadcast"):
        ours(x, x, x, mask=torch.ones(3, 5, 5, dtype=torch.bool))
    with pytest.raises(TypeError, match="key_padding_mask must be a bool tensor"):
        ours(x, x, x, key_padding_mask=[[False] * 5] * 2)
    with pytest.raises(ValueError, match="key_padding_mask must be"):
        ours(x, x, x, key_padding_mask=torch.zeros(5, 2, dtype=torch.bool))


def test_mha_bad_construction():
    for kwargs in (
        dict(d_model=0, n_heads=1),
        dict(d_model=16, n_heads=0),
        dict(d_model=16.0, n_heads=4),
        dict(d_model=16, n_heads=4, kdim=0),
        dict(d_model=16, n_heads=4, dropout=-0.1),
        dict(d_model=16, n_heads=4, scale="none"),
    ):
        with pytest.raises(ValueError):
            MultiHeadAttention(**kwargs)
    ref = nn.MultiheadAttention(16, 4, batch_first=True, kdim=8, vdim=8)
    with pytest.raises(ValueError, match="kdim"):
        MultiHeadAttention(16, 4).load_from_torch(ref)
