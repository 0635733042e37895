"""The chapter 20 exercise checks pass the reference and fail plausible wrong answers."""

import numpy as np
import pytest
import torch

from dlbook import exercises

gguf = pytest.importorskip("gguf")


def test_all_registered():
    assert exercises.known("ch20") == ["ch20.dequantize_q4_0", "ch20.q4_1_fake"]


def test_references_pass():
    for key in exercises.known("ch20"):
        assert exercises.check(key, exercises.reference(key), verbose=False)


def test_q4_0_reference_matches_gguf():
    w = np.random.default_rng(0).standard_normal((4, 96)).astype(np.float32)
    raw = gguf.quants.quantize(w, gguf.GGMLQuantizationType.Q4_0)
    ours = exercises.reference("ch20.dequantize_q4_0")(torch.from_numpy(raw))
    theirs = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType.Q4_0)
    assert torch.equal(ours, torch.from_numpy(theirs))


def test_q4_0_with_neighbour_packing_fails():
    def wrong(raw):
        b = raw.reshape(-1, 18)
        d = b[:, 0:2].contiguous().view(torch.float16).float()
        q = torch.stack([b[:, 2:] & 0x0F, b[:, 2:] >> 4], dim=-1).flatten(1).float()
        return (d * (q - 8)).reshape(raw.shape[0], -1)

    assert not exercises.check("ch20.dequantize_q4_0", wrong, verbose=False)


def test_q4_0_without_the_offset_fails():
    def wrong(raw):
        b = raw.reshape(-1, 18)
        d = b[:, 0:2].contiguous().view(torch.float16).float()
        q = torch.cat([b[:, 2:] & 0x0F, b[:, 2:] >> 4], dim=1).float()
        return (d * q).reshape(raw.shape[0], -1)

    assert not exercises.check("ch20.dequantize_q4_0", wrong, verbose=False)


def test_q4_1_fake_agrees_with_the_package_for_blocks_of_32():
    from dlbook import gguf_quant as gq

    w = torch.randn(8, 128) * 0.1
    torch.testing.assert_close(exercises.reference("ch20.q4_1_fake")(w, 32), gq.fake_quantize(w, "q4_1"), atol=0.0, rtol=0.0)


def test_q4_1_fake_ignoring_the_block_size_fails():
    def wrong(w, block):
        return exercises.reference("ch20.q4_1_fake")(w, 32)

    assert not exercises.check("ch20.q4_1_fake", wrong, verbose=False)


def test_q4_1_fake_without_fp16_rounding_fails():
    def wrong(w, block):
        b = w.reshape(-1, block)
        lo, hi = b.min(dim=1, keepdim=True).values, b.max(dim=1, keepdim=True).values
        d = (hi - lo) / 15
        inv = torch.where(d == 0, torch.zeros_like(d), 1 / d)
        q = torch.trunc((b - lo) * inv + 0.5).clamp(0, 15)
        return (d * q + lo).reshape(w.shape)

    assert not exercises.check("ch20.q4_1_fake", wrong, verbose=False)
