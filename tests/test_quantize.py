"""dlbook.quantize: the affine formulas against torch's quantized tensors, and int8_dynamic on small BERTs."""

import warnings

import pytest
import torch
from torch import nn

from dlbook import measure
from dlbook import quantize as Q
from dlbook.train import count_parameters

QDTYPE = {torch.int8: torch.qint8, torch.uint8: torch.quint8}
CHOICES = [(True, torch.int8), (False, torch.int8), (False, torch.uint8)]


def _weight():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(24, 40, generator=g) * 0.05
    w[3, 7] = 0.8  # an outlier in row 3
    w[5] += 0.3  # a row that is all positive: its asymmetric range is [0, max]
    w[5] = w[5].abs()
    return w


def _torch_quantize(x, scale, zero_point, dtype, axis=None):
    with warnings.catch_warnings():  # torch 2.13 deprecates quantized tensors; they are still the reference
        warnings.simplefilter("ignore", UserWarning)
        if axis is None:
            return torch.quantize_per_tensor(x, float(scale), int(zero_point), QDTYPE[dtype])
        return torch.quantize_per_channel(x, scale.double(), zero_point, axis, QDTYPE[dtype])


@pytest.mark.parametrize("symmetric,dtype", CHOICES)
def test_per_tensor_matches_torch(symmetric, dtype):
    w = _weight()
    s, z = Q.qparams(w, symmetric=symmetric, dtype=dtype)
    assert s.shape == () and z.shape == () and z.dtype == torch.int64
    q = Q.quantize(w, s, z, dtype=dtype)
    ref = _torch_quantize(w, s, z, dtype)
    assert q.dtype == dtype
    # quantize_per_tensor rounds fma(x, 1/s, z): on a near-tie one code apart when z != 0
    torch.testing.assert_close(q.int(), ref.int_repr().int(), rtol=0, atol=0 if symmetric else 1)
    assert (q.int() != ref.int_repr().int()).float().mean() < 1e-3
    torch.testing.assert_close(Q.dequantize(q, s, z), ref.dequantize(), rtol=0, atol=float(s) * 1.001)
    fq = torch.fake_quantize_per_tensor_affine(w, float(s), int(z), *Q.qrange(dtype))
    torch.testing.assert_close(Q.dequantize(q, s, z), fq, rtol=0, atol=0)
    torch.testing.assert_close(Q.fake_quantize(w, symmetric=symmetric, dtype=dtype), fq)


@pytest.mark.parametrize("symmetric,dtype", CHOICES)
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_per_channel_matches_torch(symmetric, dtype, axis):
    w = _weight()
    s, z = Q.qparams(w, symmetric=symmetric, dtype=dtype, axis=axis)
    assert s.shape == (w.shape[axis],)
    q = Q.quantize(w, s, z, axis=axis, dtype=dtype)
    ref = _torch_quantize(w, s, z, dtype, axis=axis % 2)
    torch.testing.assert_close(q, ref.int_repr(), rtol=0, atol=0)
    torch.testing.assert_close(Q.dequantize(q, s, z, axis=axis), ref.dequantize())
    fq = torch.fake_quantize_per_channel_affine(w, s, z.int(), axis % 2, *Q.qrange(dtype))
    torch.testing.assert_close(Q.fake_quantize(w, symmetric=symmetric, axis=axis, dtype=dtype), fq)


def test_per_channel_matches_torch_on_many_rows():
    # 2.5 M numbers: enough near-ties that dividing by s instead of multiplying by 1/s (as torch
    # does) rounds a few of them differently; ours must match every code
    g = torch.Generator().manual_seed(1)
    w = torch.randn(20000, 128, generator=g) * 0.03 * torch.rand(20000, 1, generator=g)
    s, z = Q.qparams(w, axis=0)
    ref = _torch_quantize(w, s, z, torch.int8, axis=0).int_repr()
    torch.testing.assert_close(Q.quantize(w, s, z, axis=0), ref, rtol=0, atol=0)
    divided = torch.clamp(torch.round(w / s[:, None]), -128, 127).to(torch.int8)
    assert (divided != ref).any()  # the test can tell the two roundings apart


def test_qparams_formulas():
    x = torch.tensor([-1.0, 0.0, 3.0])
    s, z = Q.qparams(x, symmetric=True)
    assert s.item() == pytest.approx(3.0 / 127) and z.item() == 0
    s, z = Q.qparams(x, symmetric=False, dtype=torch.uint8)
    assert s.item() == pytest.approx(4.0 / 255) and z.item() == round(1.0 / (4.0 / 255))
    # zero is exact in both schemes, and the largest magnitude lands on q_max
    for sym, dt in CHOICES:
        s, z = Q.qparams(x, symmetric=sym, dtype=dt)
        assert Q.dequantize(Q.quantize(torch.zeros(1), s, z, dtype=dt), s, z).item() == 0.0
    # a range that does not contain zero is widened to contain it
    s, z = Q.qparams(torch.tensor([2.0, 4.0]), symmetric=False, dtype=torch.uint8)
    assert z.item() == 0 and s.item() == pytest.approx(4.0 / 255)
    # an all-zero tensor gets scale 1 instead of dividing by zero
    s, z = Q.qparams(torch.zeros(5), symmetric=False)
    assert s.item() == 1.0 and torch.isfinite(Q.fake_quantize(torch.zeros(5))).all()


def test_error_bounded_by_half_a_step_and_per_channel_is_better():
    w = _weight()
    for sym, dt in CHOICES:
        s, z = Q.qparams(w, symmetric=sym, dtype=dt)
        err = (Q.fake_quantize(w, symmetric=sym, dtype=dt) - w).abs().max()
        assert err <= s / 2 + 1e-7
    per_tensor = (Q.fake_quantize(w) - w).pow(2).mean()
    per_row = (Q.fake_quantize(w, axis=0) - w).pow(2).mean()
    assert per_row < per_tensor / 4  # the outlier in row 3 only spoils row 3


def test_bad_inputs():
    w = _weight()
    with pytest.raises(ValueError, match="symmetric"):
        Q.qparams(w, symmetric=True, dtype=torch.uint8)
    with pytest.raises(ValueError, match="dtype"):
        Q.qparams(w, dtype=torch.int16)
    with pytest.raises(ValueError, match="axis"):
        Q.qparams(w, axis=2)
    with pytest.raises(TypeError):
        Q.qparams(torch.arange(4))
    s, z = Q.qparams(w, axis=0)
    with pytest.raises(ValueError, match="shape"):
        Q.quantize(w, s, z, axis=1)
    with pytest.raises(ValueError, match="one number"):
        Q.quantize(w, s, z)
    with pytest.raises(ValueError, match="positive"):
        Q.quantize(w, -1.0, 0)
    with pytest.raises(TypeError):
        Q.dequantize(w, 1.0, 0)


def test_int8_embedding():
    emb = nn.Embedding(500, 64, padding_idx=0)
    q = Q.Int8Embedding.from_float(emb)
    ids = torch.tensor([[1, 2, 499], [0, 5, 5]])
    out = q(ids)
    assert out.shape == (2, 3, 64) and out.dtype == torch.float32
    s, _ = Q.qparams(emb.weight, axis=0)
    torch.testing.assert_close(out, Q.fake_quantize(emb.weight.detach(), axis=0)[ids])
    assert (out - emb(ids)).abs().max() <= s.max() / 2 + 1e-7
    assert q.weight_int8.dtype == torch.int8 and q.num_embeddings == 500 and q.embedding_dim == 64
    assert measure.saved_size_mb(q) < measure.saved_size_mb(emb) / 3
    with pytest.raises(TypeError):
        Q.Int8Embedding.from_float(nn.Linear(3, 3))


def _tiny_bert(layers=2, hidden=32, heads=4):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=3000,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        max_position_embeddings=64,
        num_labels=2,
    )
    return BertForSequenceClassification(cfg).eval()


@pytest.mark.parametrize("layers,hidden,heads", [(2, 32, 4), (1, 48, 3)])
@pytest.mark.parametrize("embeddings", [True, False])
def test_int8_dynamic_on_small_berts(layers, hidden, heads, embeddings):
    model = _tiny_bert(layers, hidden, heads)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    qmodel = Q.int8_dynamic(model, embeddings=embeddings)
    # the input model is untouched
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(isinstance(m, nn.Linear) for m in qmodel.modules())
    assert any(isinstance(m, Q.Int8Embedding) for m in qmodel.modules()) == embeddings
    assert not any(isinstance(m, nn.Embedding) for m in qmodel.modules()) == embeddings
    ids = torch.randint(1, 3000, (3, 12))
    mask = torch.ones_like(ids)
    with torch.inference_mode():
        ref, out = model(input_ids=ids, attention_mask=mask).logits, qmodel(input_ids=ids, attention_mask=mask).logits
    assert out.shape == ref.shape == (3, 2)
    assert (out - ref).abs().max() < 0.1 * ref.abs().max() + 0.05
    # int8 is a quarter of float32: the quantized tables save at least 60 % of their float32 bytes
    quantized_types = (nn.Linear, nn.Embedding) if embeddings else (nn.Linear,)
    n = sum(m.weight.numel() for m in model.modules() if isinstance(m, quantized_types))
    saved_mb = measure.saved_size_mb(model) - measure.saved_size_mb(qmodel)
    assert saved_mb > 0.6 * 4 * n / 1e6
    assert count_parameters(qmodel, trainable_only=False) < count_parameters(model, trainable_only=False)


def test_int8_dynamic_bad_input():
    with pytest.raises(TypeError):
        Q.int8_dynamic("bert")
    with pytest.raises(TypeError):
        Q.int8_dynamic(_tiny_bert(), embeddings="yes")
    with pytest.raises(ValueError, match="float32"):
        Q.int8_dynamic(_tiny_bert().half())
    with pytest.raises(ValueError, match="no nn.Linear"):
        Q.int8_dynamic(Q.int8_dynamic(_tiny_bert()))


# ---------------------------------------------------------------- bad input: a clear error, never a wrong answer

W = torch.randn(6, 5, generator=torch.Generator().manual_seed(2))
S_ROWS, Z_ROWS = Q.qparams(W, symmetric=False, axis=0)  # (6,), (6,)


def _fake_quantize(x):
    return Q.fake_quantize(x)


def _quantize(x):
    return Q.quantize(x, 0.01, 0)


@pytest.mark.parametrize("fn", [Q.qparams, _quantize, _fake_quantize], ids=["qparams", "quantize", "fake_quantize"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_x_is_refused(fn, bad):
    x = W.clone()
    x[2, 3] = bad
    with pytest.raises(ValueError, match=r"x must be finite: .*index \(2, 3\)"):
        fn(x)
    # float64 values that float32 scales cannot hold are refused too
    with pytest.raises(ValueError, match="float32 range"):
        fn(torch.tensor([1e300, -1.0], dtype=torch.float64))


def test_range_too_wide_for_a_float32_scale():
    with pytest.raises(ValueError, match="too wide"):
        Q.qparams(torch.tensor([-3e38, 3e38]), symmetric=False)


TINY = torch.finfo(torch.float32).tiny


@pytest.mark.parametrize("symmetric,dtype", CHOICES)
@pytest.mark.parametrize("largest", [1e-36, 3e-37, 1e-38, 1e-40, 1e-43, 1e-44, 1e-45])
def test_a_range_too_narrow_for_a_float32_scale_gets_the_smallest_normal_scale(symmetric, dtype, largest):
    """A subnormal scale has an infinite float32 reciprocal (and below ~1e-45 it rounds to 0)."""
    x = torch.tensor([largest, -largest / 2 if dtype == torch.int8 else largest / 2])
    s, z = Q.qparams(x, symmetric=symmetric, dtype=dtype)
    steps = 127 if symmetric else 255
    raw = x.abs().max() / steps if symmetric or dtype == torch.uint8 else (x.max() - x.min()) / steps
    assert s.item() == (raw.item() if raw >= TINY else TINY)
    q = Q.quantize(x, s, z, dtype=dtype)  # accepted: 1 / s is finite
    assert torch.isfinite(Q.dequantize(q, s, z)).all()
    per_row = Q.qparams(torch.stack([x, 1e3 * x]), symmetric=symmetric, dtype=dtype, axis=0)[0]
    assert (per_row >= TINY).all() and bool(torch.isfinite(1.0 / per_row).all())


def test_ordinary_scales_are_not_clamped():
    for sym, dt in CHOICES:
        w = _weight()
        s, _ = Q.qparams(w, symmetric=sym, dtype=dt, axis=0)
        lo, hi = w.min(dim=1).values.clamp(max=0), w.max(dim=1).values.clamp(min=0)
        want = torch.maximum(-lo, hi) / 127 if sym else (hi - lo) / 255
        torch.testing.assert_close(s, want, rtol=0, atol=0)


def test_dynamic_linear_quantizes_activations_to_7_bits():
    """The docstring's claim: on x86 the activations use the codes [0, 127] (reduce_range)."""
    if torch.backends.quantized.engine not in ("x86", "fbgemm"):
        pytest.skip(f"the 7-bit activation range is the x86 engines' ({torch.backends.quantized.engine} here)")
    torch.manual_seed(0)
    x = torch.randn(4, 16)
    qlayer = Q.dynamic_quantize_linears(nn.Sequential(nn.Linear(16, 8)))[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        w_hat, bias = qlayer.weight().dequantize(), qlayer.bias()

    def by_hand(q_max):  # asymmetric activation codes in [0, q_max]
        lo, hi = min(x.min().item(), 0.0), max(x.max().item(), 0.0)
        s = (hi - lo) / q_max
        z = round(-lo / s)
        x_hat = (torch.clamp(torch.round(x / s) + z, 0, q_max) - z) * s
        return x_hat @ w_hat.T + bias

    with torch.inference_mode():
        y = qlayer(x)
    torch.testing.assert_close(y, by_hand(127), rtol=0, atol=1e-5)
    assert (y - by_hand(255)).abs().max() > 1e-3  # the full uint8 range is another function


@pytest.mark.parametrize("dtype,z", [(torch.int8, 128), (torch.int8, -129), (torch.uint8, -1), (torch.uint8, 256)])
def test_zero_point_out_of_range(dtype, z):
    with pytest.raises(ValueError, match=r"zero_point must lie in \[-?\d+, \d+\]"):
        Q.quantize(W, 0.01, z, dtype=dtype)
    with pytest.raises(ValueError, match="zero_point must lie in"):
        Q.dequantize(torch.zeros(3, dtype=dtype), 0.01, z)
    # per channel: one bad entry is enough
    zs = torch.zeros(6, dtype=torch.int64) + Q.qrange(dtype)[0]
    zs[4] = z
    with pytest.raises(ValueError, match="1 of 6 entries"):
        Q.quantize(W, S_ROWS, zs, axis=0, dtype=dtype)


def test_zero_point_must_be_whole():
    with pytest.raises(ValueError, match="whole numbers"):
        Q.quantize(W, 0.01, 2.5)
    with pytest.raises(ValueError, match="whole numbers"):
        Q.dequantize(torch.zeros(3, dtype=torch.int8), 0.01, torch.tensor(float("nan")))
    # a whole number stored as a float is fine and means the same
    torch.testing.assert_close(Q.quantize(W, 0.01, 3.0), Q.quantize(W, 0.01, 3), rtol=0, atol=0)


@pytest.mark.parametrize("scale", [0.0, -0.5, float("nan"), float("inf"), 1e-45, torch.tensor(-1.0)])
def test_bad_scale(scale):
    q = torch.zeros(3, dtype=torch.int8)
    with pytest.raises(ValueError, match="scale must be positive and finite"):
        Q.quantize(W, scale, 0)
    with pytest.raises(ValueError, match="scale must be positive and finite"):
        Q.dequantize(q, scale, 0)
    rows = S_ROWS.clone()
    rows[1] = torch.as_tensor(scale, dtype=torch.float32)
    with pytest.raises(ValueError, match="1 of 6 entries"):
        Q.quantize(W, rows, Z_ROWS, axis=0, dtype=torch.uint8)


@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda: Q.qparams(W, dtype=torch.int16), ValueError, "dtype must be torch.int8 or torch.uint8"),
        (lambda: Q.qparams(W, dtype="int8"), ValueError, "dtype must be"),
        (lambda: Q.quantize(W, 0.1, 0, dtype=torch.float16), ValueError, "dtype must be"),
        (lambda: Q.fake_quantize(W, symmetric=False, dtype=torch.qint8), ValueError, "dtype must be"),
        (lambda: Q.qrange(torch.int32), ValueError, "dtype must be"),
        (lambda: Q.qparams(torch.arange(4)), TypeError, "x must be a floating-point tensor"),
        (lambda: Q.quantize(torch.ones(3, dtype=torch.complex64), 0.1, 0), TypeError, "x must be a floating-point"),
        (lambda: Q.quantize(W.numpy(), 0.1, 0), TypeError, "x must be a floating-point tensor, got ndarray"),
        (lambda: Q.dequantize(W, 0.1, 0), TypeError, "q must be an int8 or uint8 tensor"),
        (lambda: Q.dequantize(torch.zeros(3, dtype=torch.int32), 0.1, 0), TypeError, "q must be"),
        (lambda: Q.quantize(W, "0.1", 0), TypeError, "scale must be a number or a tensor"),
        (lambda: Q.quantize(W, 0.1, None), TypeError, "zero_point must be a number or a tensor"),
        (lambda: Q.quantize(W, 0.1, True), TypeError, "zero_point must be"),
        (lambda: Q.quantize(W, torch.tensor(0.1 + 0j), 0), TypeError, "scale must hold real numbers"),
        (lambda: Q.qparams(W, symmetric="no"), TypeError, "symmetric must be True or False"),
        (lambda: Q.qparams(torch.empty(0, 4)), ValueError, "empty"),
    ],
    ids=[
        "int16",
        "string",
        "float16",
        "qint8",
        "qrange",
        "int x",
        "complex x",
        "numpy x",
        "float q",
        "int32 q",
        "string scale",
        "None zero point",
        "bool zero point",
        "complex scale",
        "symmetric",
        "empty",
    ],
)
def test_unsupported_types(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("axis", [2, -3, 1.0, True, "0"])
def test_axis_out_of_range(axis):
    q = torch.zeros(6, 5, dtype=torch.int8)
    for call in [
        lambda: Q.qparams(W, axis=axis),
        lambda: Q.quantize(W, S_ROWS, Z_ROWS, axis=axis),
        lambda: Q.dequantize(q, S_ROWS, Z_ROWS, axis=axis),
        lambda: Q.fake_quantize(W, axis=axis),
    ]:
        with pytest.raises(ValueError, match=r"axis must be None or an int in \[-2, 2\)"):
            call()


def test_mismatched_scale_and_zero_point_shapes():
    q = torch.zeros(6, 5, dtype=torch.int8)
    with pytest.raises(ValueError, match="come in pairs"):
        Q.quantize(W, S_ROWS, Z_ROWS[:5], axis=0)
    with pytest.raises(ValueError, match="come in pairs"):
        Q.dequantize(q, S_ROWS, torch.tensor(0), axis=0)
    with pytest.raises(ValueError, match=r"scale along axis 1 must have shape \(5,\)"):
        Q.quantize(W, S_ROWS, Z_ROWS, axis=1)
    with pytest.raises(ValueError, match=r"zero_point along axis 0 must have shape \(6,\)"):
        Q.quantize(W, S_ROWS, 0, axis=0)
    with pytest.raises(ValueError, match="scale must hold one number when axis is None"):
        Q.dequantize(q, S_ROWS, Z_ROWS)
    with pytest.raises(ValueError, match=r"must have shape \(6,\)"):
        Q.quantize(W, S_ROWS[None], Z_ROWS[None], axis=0)  # (1, 6): not one entry per row


def test_valid_parameters_in_every_accepted_form_agree():
    # numbers, 0-d and 1-element tensors, numpy scalars and float64 tensors all mean the same
    np = pytest.importorskip("numpy")
    want = Q.quantize(W, 0.02, 3, dtype=torch.uint8)
    forms = [
        (torch.tensor(0.02), torch.tensor(3)),
        (torch.tensor([0.02]), torch.tensor([3])),
        (np.float32(0.02), np.int64(3)),
        (torch.tensor(0.02, dtype=torch.float64), torch.tensor(3, dtype=torch.int32)),
    ]
    for s, z in forms:
        torch.testing.assert_close(Q.quantize(W, s, z, dtype=torch.uint8), want, rtol=0, atol=0)
        torch.testing.assert_close(Q.dequantize(want, s, z), Q.dequantize(want, 0.02, 3), rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------
# per-channel dynamic int8, observers, fake-quantized linear layers, outliers


def test_int8_dynamic_per_channel_has_one_scale_per_row():
    model = _tiny_bert()
    q = Q.int8_dynamic(model, per_channel=True)
    w = q.bert.encoder.layer[0].attention.self.query.weight()
    assert w.qscheme() == torch.per_channel_affine
    ref = model.bert.encoder.layer[0].attention.self.query.weight.detach()
    # the per-row scale spreads each row's largest |w| over 255 steps, as the per-tensor one does
    torch.testing.assert_close(w.q_per_channel_scales().float(), ref.abs().amax(dim=1) / 127.5)
    ids = torch.randint(0, 3000, (2, 7))
    with torch.inference_mode():
        torch.testing.assert_close(q(input_ids=ids).logits, model.eval()(input_ids=ids).logits, atol=0.05, rtol=0)
    with pytest.raises(TypeError, match="per_channel"):
        Q.int8_dynamic(model, per_channel=1)


def test_minmax_observer_keeps_the_widest_range():
    obs = Q.MinMaxObserver()
    with pytest.raises(ValueError, match="observed nothing"):
        obs.range()
    obs.observe(torch.tensor([-1.0, 2.0]))
    obs.observe(torch.tensor([0.5, 3.0]))
    assert obs.range() == (-1.0, 3.0) and obs.batches == 2
    s, z = obs.qparams()
    torch.testing.assert_close(s, torch.tensor(4.0 / 255))
    assert int(z) == round(1.0 / (4.0 / 255))
    with pytest.raises(ValueError, match="finite"):
        obs.observe(torch.tensor([float("nan")]))


def test_percentile_observer_clips_rare_extremes():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(100_000, generator=g)
    x[0] = 1000.0  # one outlier
    obs = Q.PercentileObserver(99.9)
    obs.observe(x)
    lo, hi = obs.range()
    assert 2.5 < hi < 4.0 and -4.0 < lo < -2.5  # the 99.9th percentiles of a standard normal, about 3.09
    mm = Q.MinMaxObserver()
    mm.observe(x)
    assert mm.range()[1] == 1000.0
    for bad in (50, 101, "99", True):
        with pytest.raises(ValueError, match="percentile"):
            Q.PercentileObserver(bad)
    with pytest.raises(ValueError, match="max_per_batch"):
        Q.PercentileObserver(99.0, max_per_batch=0)


def test_fake_quantize_ste_values_and_gradient_match_torch():
    x = (torch.randn(200) * 3).requires_grad_()
    xr = x.detach().clone().requires_grad_()
    y = Q.fake_quantize_ste(x, torch.tensor(0.03), torch.tensor(100.0), 0, 255)
    yr = torch.fake_quantize_per_tensor_affine(xr, 0.03, 100, 0, 255)
    torch.testing.assert_close(y, yr)
    (y * torch.arange(200.0)).sum().backward()
    (yr * torch.arange(200.0)).sum().backward()
    torch.testing.assert_close(x.grad, xr.grad)
    assert 0 < int((x.grad == 0).sum()) < 200  # some values clipped, some passed straight through


def test_fake_quant_linear_modes_and_equivalence():
    lin = nn.Linear(16, 8)
    fq = Q.FakeQuantLinear(lin, Q.MinMaxObserver())
    x = torch.randn(4, 16)
    torch.testing.assert_close(fq(x), lin(x))  # float mode
    with pytest.raises(ValueError, match="calibrate"):
        fq.set_mode("quant")
    fq.set_mode("observe")
    fq(x)
    with pytest.raises(ValueError, match="freeze"):  # observed, not frozen: scale still 1
        fq.set_mode("quant")
    fq.freeze()
    fq.set_mode("quant")
    s, z = Q.qparams(x, symmetric=False, dtype=torch.uint8)
    w = lin.weight.detach()
    s_w = w.abs().amax(dim=1) / 127
    w_hat = torch.fake_quantize_per_channel_affine(w, s_w, torch.zeros(8, dtype=torch.int32), 0, -128, 127)
    x_hat = torch.fake_quantize_per_tensor_affine(x, float(s), int(z), 0, 255)
    torch.testing.assert_close(fq(x), nn.functional.linear(x_hat, w_hat, lin.bias))
    fq(x).sum().backward()  # trainable through the rounding
    assert lin.weight.grad is not None and lin.weight.grad.abs().sum() > 0
    fq.set_mode("observe")  # observing again needs a new freeze()
    with pytest.raises(ValueError, match="freeze"):
        fq.set_mode("quant")
    with pytest.raises(ValueError, match="mode"):
        fq.set_mode("int8")
    with pytest.raises(TypeError, match="nn.Linear"):
        Q.FakeQuantLinear(nn.Conv1d(1, 1, 1), Q.MinMaxObserver())
    with pytest.raises(TypeError, match="observer"):
        Q.FakeQuantLinear(lin, object())


def test_prepare_and_calibrate_a_small_bert():
    model = _tiny_bert()
    n_linear = sum(isinstance(m, nn.Linear) for m in model.modules())
    layers = Q.prepare_fake_quant(model, lambda: Q.PercentileObserver(99.0))
    assert len(layers) == n_linear and all(layer.mode == "observe" for layer in layers)
    batches = [
        {
            "input_ids": torch.randint(0, 3000, (3, 6)),
            "attention_mask": torch.ones(3, 6, dtype=torch.long),
            "labels": torch.zeros(3, dtype=torch.long),
        }
        for _ in range(2)
    ]
    assert Q.calibrate(model, batches, layers) == 2
    assert all(layer.mode == "quant" and layer.observer.batches == 2 for layer in layers)
    with torch.inference_mode():
        out = model(input_ids=batches[0]["input_ids"]).logits
    assert torch.isfinite(out).all()
    with pytest.raises(ValueError, match="empty"):
        Q.calibrate(_tiny_bert(), [], Q.prepare_fake_quant(_tiny_bert()))
    with pytest.raises(ValueError, match="no nn.Linear"):
        Q.prepare_fake_quant(nn.Sequential(nn.ReLU()))
    with pytest.raises(TypeError, match="FakeQuantLinear"):
        Q.calibrate(model, batches, [nn.Linear(2, 2)])


def test_activation_outliers_finds_a_planted_feature():
    x = torch.randn(2, 5, 8)
    x[..., 3] *= 50  # feature 3 is the outlier
    lin = nn.Linear(8, 4)

    class Wrap(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = lin

        def forward(self, input_ids, attention_mask):
            return self.lin(input_ids)

    mask = torch.ones(2, 5, dtype=torch.long)
    mask[1, 3:] = 0
    x[1, 3:, 0] = 1e6  # padding positions: ignored
    peaks = Q.activation_outliers(Wrap(), [{"input_ids": x, "attention_mask": mask}])
    assert int(peaks["lin"].argmax()) == 3
    torch.testing.assert_close(peaks["lin"], x[mask.bool()].abs().amax(dim=0))
    with pytest.raises(ValueError, match="empty"):
        Q.activation_outliers(Wrap(), [])
    with pytest.raises(ValueError, match="no nn.Linear"):
        Q.activation_outliers(nn.Sequential(nn.ReLU()), [])
