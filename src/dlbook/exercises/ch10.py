"""Exercise checks for chapter 10, "Fine-tuning on a budget"."""

from __future__ import annotations

import numpy as np
import torch

from . import Case, register

# ----------------------------------------------------------------------------- merging a LoRA adapter


def merge_lora_weight(weight: torch.Tensor, lora_A: torch.Tensor, lora_B: torch.Tensor, alpha: float) -> torch.Tensor:
    """Reference: the merged weight ``W + (alpha / r) B A`` of a LoRA adapter.

    ``weight`` (out, in), ``lora_A`` (r, in), ``lora_B`` (out, r); the rank ``r`` is ``lora_A.shape[0]``.
    """
    r = lora_A.shape[0]
    return weight + (alpha / r) * (lora_B @ lora_A)


def _merge_cases(rng: np.random.Generator) -> list[Case]:
    def case(name: str, out_f: int, in_f: int, r: int, alpha: float) -> Case:
        g = torch.Generator().manual_seed(int(rng.integers(1 << 31)))
        return Case(
            name,
            (
                torch.randn(out_f, in_f, generator=g),
                torch.randn(r, in_f, generator=g),
                torch.randn(out_f, r, generator=g),
                alpha,
            ),
        )

    return [
        case("a square layer, r = 2, alpha = 4", 6, 6, 2, 4.0),
        case("a wide layer, r = 1, alpha = 1", 3, 10, 1, 1.0),
        case("a tall layer, r = 4, alpha = 16", 12, 5, 4, 16.0),
        case("alpha equal to r (scaling 1)", 8, 7, 8, 8.0),
    ]


register("ch10.merge_lora_weight", merge_lora_weight, _merge_cases, atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- class weights


def balanced_class_weights(labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Reference: "balanced" class weights ``N / (C * n_c)`` as a float32 tensor of shape (C,).

    ``labels`` (N,) int64 in ``[0, n_classes)``; every class must occur. The same numbers as
    ``sklearn.utils.class_weight.compute_class_weight("balanced", ...)``.
    """
    counts = torch.bincount(labels, minlength=n_classes).float()  # (C,)
    return (labels.numel() / (n_classes * counts)).float()


def _weight_cases(rng: np.random.Generator) -> list[Case]:
    def case(name: str, counts: list[int]) -> Case:
        labels = torch.cat([torch.full((n,), c, dtype=torch.long) for c, n in enumerate(counts)])
        perm = torch.as_tensor(rng.permutation(len(labels)))
        return Case(name, (labels[perm], len(counts)))

    return [
        case("balanced binary data (all weights 1)", [50, 50]),
        case("one negative per nine positives", [10, 90]),
        case("three classes", [5, 20, 75]),
        case("a rare class of one example", [1, 30]),
    ]


register("ch10.balanced_class_weights", balanced_class_weights, _weight_cases, atol=1e-6, rtol=1e-5)


# ----------------------------------------------------------------------------- padding


def padding_ratio(lengths: list[int], batch_size: int) -> float:
    """Reference: tokens computed per real token when ``lengths``, visited in this order, are cut
    into consecutive batches of ``batch_size`` (the last one may be shorter) and each batch is
    padded to its longest member."""
    computed = sum(
        max(lengths[i : i + batch_size]) * len(lengths[i : i + batch_size]) for i in range(0, len(lengths), batch_size)
    )
    return computed / sum(lengths)


def _padding_cases(rng: np.random.Generator) -> list[Case]:
    def case(name: str, lengths: list[int], batch_size: int) -> Case:
        return Case(name, ([int(n) for n in lengths], batch_size))

    mixed = rng.integers(3, 64, size=50).tolist()
    return [
        case("equal lengths: no padding", [7] * 12, 4),
        case("one long snippet per batch", [2, 2, 2, 10, 2, 2, 2, 10], 4),
        case("50 snippets, batches of 8 (the last holds 2)", mixed, 8),
        case("the same snippets sorted", sorted(mixed), 8),
        case("batch size 1: never padded", mixed[:9], 1),
    ]


register("ch10.padding_ratio", padding_ratio, _padding_cases, atol=1e-9, rtol=1e-9)
