"""Peak memory of a piece of code: CUDA's own counters, and a tensor tracker for the CPU.

Taught in chapter 6, "Attention from first principles" (the memory of the attention matrix);
chapter 10 uses it for training steps, chapter 13 for inference. On CUDA the caching allocator
counts every byte it hands out, so :func:`peak_memory` reads ``torch.cuda.max_memory_allocated``. The CPU
allocator keeps no such statistics, so :class:`TensorMemoryTracker` counts them itself: it is a
``TorchDispatchMode`` that sees every ATen operation run inside it (forward, backward,
recomputation under gradient checkpointing, optimizer updates), records the storage of each new
output tensor and forgets it again when Python frees that storage.

What the tracker sees: the bytes of tensor storages **created inside the block** by operations
that go through the dispatcher, including activations saved for backward, gradients, optimizer
state, autocast's low-precision weight copies, and temporaries. Views and in-place results share
their input's storage and are not counted twice.

What it cannot see: tensors that already existed when the block started (the model's weights,
for instance: add them yourself); scratch buffers a kernel allocates and frees inside one
operation, because the mode sees only the operations called from Python and their outputs, not
what a kernel does in C++ (the CPU FlashAttention kernel behind
``F.scaled_dot_product_attention``, for instance, allocates blocks of logits for each thread and
frees them before it returns); memory a library allocates outside PyTorch (oneDNN/BLAS
workspaces); Python objects; and what the allocator keeps cached or loses to fragmentation. So
the peak it reports is a lower bound: the peak of *live tensor bytes*, which is what the training
techniques of chapter 10 change; the process's resident memory is larger and noisier.
``torch.profiler.profile(profile_memory=True)`` records every allocation of PyTorch's CPU
allocator, kernel scratch included; chapter 6 uses it to count the scratch of the fused kernel.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

__all__ = ["MemoryMeasurement", "TensorMemoryTracker", "peak_memory"]


class TensorMemoryTracker(TorchDispatchMode):
    """Count the live bytes of tensor storages created inside a ``with`` block, and their peak.

    ``device`` (default: all devices) restricts the count to tensors on that device type. After
    the block, ``peak_bytes`` is the largest number of bytes that were alive at once,
    ``current_bytes`` what is still alive, ``total_bytes`` the sum of every storage created, and
    ``n_storages`` how many there were. A tracker can be entered once.

    >>> with TensorMemoryTracker() as t:
    ...     x = torch.zeros(1000)  # 4,000 bytes
    >>> t.peak_bytes
    4000
    """

    def __init__(self, device: str | torch.device | None = None) -> None:
        super().__init__()
        self.device_type = torch.device(device).type if device is not None else None
        self.current_bytes = 0
        self.peak_bytes = 0
        self.total_bytes = 0
        self.n_storages = 0
        self._live: dict[int, int] = {}  # id(storage) -> bytes
        self._used = False

    def __enter__(self) -> TensorMemoryTracker:
        if self._used:
            raise RuntimeError("a TensorMemoryTracker can be entered only once: make a new one")
        self._used = True
        return super().__enter__()

    def _free(self, key: int) -> None:
        nbytes = self._live.pop(key, None)
        if nbytes is not None:
            self.current_bytes -= nbytes

    def _record(self, storage: torch.UntypedStorage) -> None:
        key = id(storage)
        if key in self._live:
            return
        nbytes = int(storage.nbytes())
        self._live[key] = nbytes
        weakref.finalize(storage, self._free, key)  # runs when the storage itself is freed
        self.current_bytes += nbytes
        self.total_bytes += nbytes
        self.n_storages += 1
        self.peak_bytes = max(self.peak_bytes, self.current_bytes)

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        inputs, _ = tree_flatten((args, kwargs))
        # storages that existed before this op: in-place results and views reuse them
        old = {id(x.untyped_storage()) for x in inputs if isinstance(x, torch.Tensor) and _has_storage(x)}
        out = func(*args, **kwargs)
        outputs, _ = tree_flatten(out)
        for x in outputs:
            if not isinstance(x, torch.Tensor) or not _has_storage(x):
                continue
            if self.device_type is not None and x.device.type != self.device_type:
                continue
            storage = x.untyped_storage()
            if id(storage) not in old:
                self._record(storage)
        return out


def _has_storage(x: torch.Tensor) -> bool:
    if x.is_sparse or x.device.type == "meta":
        return False
    try:
        x.untyped_storage()
    except (RuntimeError, NotImplementedError):
        return False
    return True


@dataclass
class MemoryMeasurement:
    """What :func:`peak_memory` measured: the peak bytes above what was live before, how, and fn's result."""

    peak_bytes: int
    method: str
    result: Any

    @property
    def peak_mib(self) -> float:
        return self.peak_bytes / 2**20


def peak_memory(fn: Callable[[], Any], device: str | torch.device) -> MemoryMeasurement:
    """Run ``fn()`` and measure the peak memory it allocated on ``device``, in bytes.

    On CUDA: ``torch.cuda.max_memory_allocated`` minus what was allocated before the call (so
    existing weights are not counted, as on the CPU). Elsewhere: a :class:`TensorMemoryTracker`
    for that device type (see the module docstring for what it can and cannot see). Chapter 6
    measures attention with it, chapter 10 training steps.
    """
    if not callable(fn):
        raise TypeError(f"peak_memory needs a function of no arguments, got {fn!r}")
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        result = fn()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - before
        return MemoryMeasurement(int(peak), "torch.cuda.max_memory_allocated", result)
    tracker = TensorMemoryTracker(device)
    with tracker:
        result = fn()
    return MemoryMeasurement(tracker.peak_bytes, "TensorMemoryTracker (live tensor storages)", result)
