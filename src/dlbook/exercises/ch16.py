"""Exercise checks for chapter 16, "Scaling out with data parallelism"."""

from __future__ import annotations

import numpy as np

from . import Case, register

# ----------------------------------------------------------------------------- DistributedSampler's shards


def shard_indices(n: int, rank: int, world_size: int) -> list[int]:
    """Reference: the indices rank ``rank`` of ``world_size`` reads from ``n`` examples under
    ``DistributedSampler(shuffle=False, drop_last=False)`` (the list padded with its own first
    indices to a multiple of ``world_size``, then every ``world_size``-th index from ``rank``)."""
    from ..distributed import shard_indices as packaged

    return packaged(n, rank, world_size)


def _shard_cases(rng: np.random.Generator) -> list[Case]:
    cases = [
        Case("10 examples, 2 ranks, rank 0 (divides evenly)", (10, 0, 2)),
        Case("10 examples, 2 ranks, rank 1", (10, 1, 2)),
        Case("10 examples, 4 ranks, rank 3 (needs padding)", (10, 3, 4)),
        Case("10 examples, 4 ranks, rank 0 (needs padding)", (10, 0, 4)),
        Case("one rank reads everything", (7, 0, 1)),
        Case("more ranks than examples: 3 examples, 8 ranks, rank 7", (3, 7, 8)),
    ]
    for i in range(4):
        world = int(rng.integers(2, 9))
        n = int(rng.integers(1, 60))
        cases.append(Case(f"random {i + 1}: {n} examples, {world} ranks", (n, int(rng.integers(0, world)), world)))
    return cases


register("ch16.shard_indices", shard_indices, _shard_cases)


# ----------------------------------------------------------------------------- ZeRO memory per device


def zero_bytes_per_device(n_params: float, n_devices: int, stage: int) -> float:
    """Reference: bytes of model state per device for mixed-precision Adam under ZeRO ``stage``.

    Rajbhandari et al. (2020): 2 bytes of 16-bit weights, 2 of 16-bit gradients and K = 12 of
    optimizer state (fp32 master weights, momentum, variance) per parameter. Stage 0 keeps all of
    it on every device; stage 1 shards the optimizer state over ``n_devices``, stage 2 also the
    gradients, stage 3 also the weights.
    """
    if stage not in (0, 1, 2, 3):
        raise ValueError(f"stage must be 0, 1, 2 or 3, got {stage!r}")
    weights, grads, optim = 2.0 * n_params, 2.0 * n_params, 12.0 * n_params
    if stage >= 1:
        optim /= n_devices
    if stage >= 2:
        grads /= n_devices
    if stage >= 3:
        weights /= n_devices
    return float(weights + grads + optim)


def _zero_cases(rng: np.random.Generator) -> list[Case]:
    cases = [Case(f"7.5 B parameters on 64 devices, stage {s}", (7.5e9, 64, s)) for s in range(4)]
    cases += [
        Case("one device: every stage is the same (stage 3)", (1e6, 1, 3)),
        Case("MiniLM-sized, 2 devices, stage 2", (22_713_216, 2, 2)),
        Case("MiniLM-sized, 2 devices, stage 1", (22_713_216, 2, 1)),
    ]
    for i in range(3):
        cases.append(
            Case(f"random {i + 1}", (float(rng.integers(1, 100)) * 1e8, int(rng.integers(2, 1025)), int(rng.integers(1, 4))))
        )
    return cases


register("ch16.zero_bytes_per_device", zero_bytes_per_device, _zero_cases, atol=0.5, rtol=1e-9)
