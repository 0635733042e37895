"""Tests of dlbook.memory (chapter 10): the CPU tensor tracker against hand-counted bytes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dlbook.memory import TensorMemoryTracker, peak_memory


def test_counts_one_allocation():
    with TensorMemoryTracker() as t:
        x = torch.zeros(1000)  # 4,000 bytes
    assert t.peak_bytes == 4000 and t.current_bytes == 4000 and t.n_storages == 1
    del x


def test_freed_tensors_leave_the_count():
    with TensorMemoryTracker() as t:
        a = torch.ones(1000)  # 4,000
        b = a * 2  # 8,000 live
        del a  # 4,000 live
        c = b + 1  # 8,000 live again
        del b, c  # 0
    assert t.peak_bytes == 8000
    assert t.current_bytes == 0
    assert t.total_bytes == 12000 and t.n_storages == 3


def test_views_and_inplace_are_not_new_memory():
    outside = torch.randn(100, 10)
    with TensorMemoryTracker() as t:
        v = outside.t()  # a view of a tensor made before the block
        outside.mul_(2)  # in place
        w = torch.empty(10, 10)
        w2 = w.view(100)  # a view of a tracked tensor: counted once
        w2.add_(1)
    assert t.peak_bytes == 400, t.peak_bytes
    del v, w, w2


def test_dtype_sizes():
    with TensorMemoryTracker() as t:
        torch.zeros(1000, dtype=torch.bfloat16)
        torch.zeros(1000, dtype=torch.float64)
    assert t.total_bytes == 2000 + 8000
    assert t.peak_bytes == 8000  # the first died before the second was made


def test_sees_backward_and_optimizer_state():
    torch.manual_seed(0)
    layer = nn.Linear(64, 32)  # 64*32 + 32 = 2,080 parameters
    opt = torch.optim.AdamW(layer.parameters())
    x = torch.randn(16, 64)
    with TensorMemoryTracker() as t:
        layer(x).square().sum().backward()
        opt.step()
    n = sum(p.numel() for p in layer.parameters())
    # gradients (1x) and AdamW's two moments (2x) are still alive at the end, in fp32
    assert t.current_bytes >= 3 * 4 * n
    assert t.peak_bytes >= t.current_bytes
    # nothing in the block holds 10x that
    assert t.peak_bytes < 10 * 4 * n


def test_checkpoint_lowers_the_peak():
    torch.manual_seed(0)
    net = nn.Sequential(*[nn.Sequential(nn.Linear(256, 256), nn.GELU()) for _ in range(8)])
    x = torch.randn(512, 256, requires_grad=True)

    def plain():
        net(x).sum().backward()

    def checkpointed():
        y = x
        for block in net:
            y = torch.utils.checkpoint.checkpoint(block, y, use_reentrant=False)
        y.sum().backward()

    assert peak_memory(checkpointed, "cpu").peak_bytes < 0.75 * peak_memory(plain, "cpu").peak_bytes


def test_device_filter_ignores_other_devices():
    with TensorMemoryTracker("meta") as t:
        torch.zeros(1000)
    assert t.peak_bytes == 0


def test_peak_memory_returns_result_and_method():
    m = peak_memory(lambda: torch.ones(256).sum(), "cpu")
    assert m.result.item() == 256 and m.peak_bytes >= 1024 and "Tracker" in m.method
    assert m.peak_mib == m.peak_bytes / 2**20


def test_bad_input():
    with pytest.raises(TypeError):
        peak_memory(42, "cpu")
    t = TensorMemoryTracker()
    with t:
        pass
    with pytest.raises(RuntimeError):
        with t:
            pass


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_counts_like_the_allocator():
    m = peak_memory(lambda: torch.zeros(1 << 20, device="cuda"), "cuda")
    assert m.peak_bytes >= 4 << 20
