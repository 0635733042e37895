"""The chapter 10 exercise checks pass the reference and fail plausible wrong answers."""

import numpy as np
import torch
from sklearn.utils.class_weight import compute_class_weight
from torch import nn

from dlbook import exercises
from dlbook.exercises.ch10 import balanced_class_weights, merge_lora_weight
from dlbook.lora import LoRALinear


def test_all_registered():
    assert exercises.known("ch10") == ["ch10.balanced_class_weights", "ch10.merge_lora_weight", "ch10.padding_ratio"]


def test_references_pass():
    for key in exercises.known("ch10"):
        assert exercises.check(key, exercises.reference(key), verbose=False)


def test_merge_reference_matches_lora_linear():
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(7, 5), r=3, alpha=6.0)
    with torch.no_grad():
        layer.lora_B.normal_()
    torch.testing.assert_close(merge_lora_weight(layer.base.weight, layer.lora_A, layer.lora_B, 6.0), layer.merged_weight())


def test_merge_without_scaling_fails():
    def wrong(weight, lora_A, lora_B, alpha):
        return weight + lora_B @ lora_A

    assert not exercises.check("ch10.merge_lora_weight", wrong, verbose=False)


def test_merge_scaled_by_alpha_only_fails():
    def wrong(weight, lora_A, lora_B, alpha):
        return weight + alpha * lora_B @ lora_A

    assert not exercises.check("ch10.merge_lora_weight", wrong, verbose=False)


def test_merge_transposed_fails():
    def wrong(weight, lora_A, lora_B, alpha):  # (B A)^T: wrong values for a square layer, wrong shape otherwise
        return weight + alpha / lora_A.shape[0] * (lora_A.T @ lora_B.T)

    result = exercises.check("ch10.merge_lora_weight", wrong, verbose=False)
    assert not result


def test_weights_match_sklearn():
    labels = torch.tensor([0] * 7 + [1] * 30 + [2] * 3)
    want = compute_class_weight("balanced", classes=np.arange(3), y=labels.numpy())
    torch.testing.assert_close(balanced_class_weights(labels, 3), torch.tensor(want, dtype=torch.float32))


def test_inverse_count_fails():
    def wrong(labels, n_classes):  # 1 / n_c: right ratios, wrong scale
        return 1.0 / torch.bincount(labels, minlength=n_classes).float()

    assert not exercises.check("ch10.balanced_class_weights", wrong, verbose=False)


def test_frequency_instead_of_inverse_fails():
    def wrong(labels, n_classes):
        return torch.bincount(labels, minlength=n_classes).float() / labels.numel() * n_classes

    result = exercises.check("ch10.balanced_class_weights", wrong, verbose=False)
    assert not result and "nine" in result.failure


def test_float64_fails():
    def wrong(labels, n_classes):
        return (labels.numel() / (n_classes * torch.bincount(labels, minlength=n_classes))).double()

    assert not exercises.check("ch10.balanced_class_weights", wrong, verbose=False)


def test_padding_reference_matches_the_loader_count():
    from dlbook.exercises.ch10 import padding_ratio

    lengths = [5, 9, 3, 3, 12, 4, 4]
    # batches [5, 9, 3] -> 27, [3, 12, 4] -> 36, [4] -> 4: 67 tokens computed for 40 real ones
    assert abs(padding_ratio(lengths, 3) - 67 / 40) < 1e-12


def test_padding_to_the_global_longest_fails():
    def wrong(lengths, batch_size):
        return max(lengths) * len(lengths) / sum(lengths)

    assert not exercises.check("ch10.padding_ratio", wrong, verbose=False)


def test_padding_with_full_last_batch_fails():
    def wrong(lengths, batch_size):  # pads the short last batch as if it were full
        chunks = [lengths[i : i + batch_size] for i in range(0, len(lengths), batch_size)]
        return sum(max(c) * batch_size for c in chunks) / sum(lengths)

    assert not exercises.check("ch10.padding_ratio", wrong, verbose=False)
