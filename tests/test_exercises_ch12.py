"""The chapter 12 exercise check passes the reference and fails plausible wrong answers."""

import torch

from dlbook import exercises
from dlbook import quantize as Q
from dlbook.exercises.ch12 import int8_linear


def test_all_registered():
    assert exercises.known("ch12") == ["ch12.int8_linear"]


def test_reference_passes():
    assert exercises.check("ch12.int8_linear", exercises.reference("ch12.int8_linear"), verbose=False)


def test_reference_is_close_to_float_and_exact_in_integers():
    g = torch.Generator().manual_seed(0)
    x, w, b = torch.randn(5, 64, generator=g), torch.randn(16, 64, generator=g) * 0.05, torch.randn(16, generator=g)
    y = int8_linear(x, w, b)
    assert y.dtype == torch.float32 and y.shape == (5, 16)
    assert (y - (x @ w.T + b)).abs().max() < 0.05
    # equals the float product of the dequantized operands (integer accumulation is exact)
    x_hat = Q.fake_quantize(x, symmetric=False, dtype=torch.uint8)
    w_hat = Q.fake_quantize(w, symmetric=True, axis=0)
    torch.testing.assert_close(y, x_hat @ w_hat.T + b, atol=1e-5, rtol=1e-5)


def test_float_product_fails():
    def wrong(x, weight, bias):  # no quantization at all
        return x @ weight.T + bias

    assert not exercises.check("ch12.int8_linear", wrong, verbose=False)


def test_per_tensor_weight_scale_fails():
    def wrong(x, weight, bias):  # one scale for the whole weight instead of one per row
        s_w, z_w = Q.qparams(weight, symmetric=True)
        q_w = Q.quantize(weight, s_w, z_w).to(torch.int64)
        s_x, z_x = Q.qparams(x, symmetric=False, dtype=torch.uint8)
        q_x = Q.quantize(x, s_x, z_x, dtype=torch.uint8).to(torch.int64)
        return ((q_x - z_x) @ q_w.T).float() * (s_x * s_w) + bias

    result = exercises.check("ch12.int8_linear", wrong, verbose=False)
    assert not result


def test_symmetric_input_fails():
    def wrong(x, weight, bias):  # the input quantized symmetrically to int8
        s_w, z_w = Q.qparams(weight, symmetric=True, axis=0)
        q_w = Q.quantize(weight, s_w, z_w, axis=0).to(torch.int64)
        s_x, _ = Q.qparams(x, symmetric=True)
        q_x = Q.quantize(x, s_x, 0).to(torch.int64)
        return (q_x @ q_w.T).float() * (s_x * s_w) + bias

    assert not exercises.check("ch12.int8_linear", wrong, verbose=False)
