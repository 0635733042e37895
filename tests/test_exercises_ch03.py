"""The chapter-3 exercise checks pass on the reference and fail on plausible wrong answers."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dlbook import exercises


def _conv1d_loops(x, weight, stride, dilation):
    """A correct solution written from the index formula, independently of the reference."""
    b, c_in, length = x.shape
    c_out, _, k = weight.shape
    n_out = (length - dilation * (k - 1) - 1) // stride + 1
    y = torch.zeros(b, c_out, n_out, dtype=x.dtype)
    for i in range(n_out):
        window = x[:, :, i * stride : i * stride + dilation * (k - 1) + 1 : dilation]  # (B, C_in, k)
        y[:, :, i] = torch.einsum("bcu,ocu->bo", window, weight)
    return y


def _check(fn):
    """Run fn through the hidden cases of ch03.conv1d, quietly."""
    return exercises.check("ch03.conv1d", fn, verbose=False)


def test_conv1d_reference_and_loops_pass():
    assert _check(exercises.reference("ch03.conv1d"))
    assert _check(_conv1d_loops)


def test_conv1d_wrong_solutions_fail():
    def flipped_kernel(x, weight, stride, dilation):  # textbook convolution, not what F.conv1d does
        return _conv1d_loops(x, weight.flip(-1), stride, dilation)

    def forgets_dilation(x, weight, stride, dilation):
        return _conv1d_loops(x, weight, stride, 1)

    def forgets_stride(x, weight, stride, dilation):
        return _conv1d_loops(x, weight, 1, dilation)

    def averages_channels(x, weight, stride, dilation):  # mean over input channels instead of the sum
        return F.conv1d(x, weight, stride=stride, dilation=dilation) / x.shape[1]

    for wrong in (flipped_kernel, forgets_dilation, forgets_stride, averages_channels):
        result = _check(wrong)
        assert not result, wrong.__name__
        assert result.failure


def test_stub_reports_not_yet():
    def stub(*args):
        raise NotImplementedError

    for key in ("ch03.conv1d", "ch03.same_padding"):
        result = exercises.check(key, stub, verbose=False)
        assert not result and "NotImplementedError" in result.failure


def test_same_padding_reference_keeps_size():
    ref = exercises.reference("ch03.same_padding")
    assert exercises.check("ch03.same_padding", ref, verbose=False)
    for k, d in [(3, 1), (5, 3), (7, 2), (1, 4)]:
        x = torch.zeros(1, 1, 11, 11)
        assert F.conv2d(x, torch.zeros(1, 1, k, k), padding=ref(k, d), dilation=d).shape == x.shape


def test_same_padding_wrong_solutions_fail():
    wrong = [
        lambda k, d: (k - 1) // 2,  # forgets the dilation
        lambda k, d: d * k // 2 + (d > 1),  # dilates the whole kernel, not the gaps
        lambda k, d: d * (k - 1),  # pads the full span on each side
    ]
    for fn in wrong:
        assert not exercises.check("ch03.same_padding", fn, verbose=False)


def test_registered_keys():
    assert exercises.known("ch03") == ["ch03.conv1d", "ch03.same_padding"]
