"""The chapter 7 exercise checks pass the reference and fail plausible wrong answers."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dlbook import exercises
from dlbook.exercises import ch07
from dlbook.nn.transformer import Encoder, sinusoidal_positional_encoding


def test_all_registered():
    assert exercises.known("ch07") == [
        "ch07.feed_forward",
        "ch07.layer_norm",
        "ch07.order_blind_ceiling",
        "ch07.positional_encoding",
    ]


def test_references_pass():
    for key in exercises.known("ch07"):
        assert exercises.check(key, exercises.reference(key), verbose=False)


def test_torch_versions_pass():
    assert exercises.check("ch07.layer_norm", lambda x, g, b, eps=1e-5: F.layer_norm(x, g.shape, g, b, eps), verbose=False)
    assert exercises.check(
        "ch07.feed_forward", lambda x, W1, b1, W2, b2: F.linear(F.relu(F.linear(x, W1, b1)), W2, b2), verbose=False
    )
    assert exercises.check("ch07.positional_encoding", sinusoidal_positional_encoding, verbose=False)


def test_layer_norm_without_mean_fails():
    def wrong(x, gamma, beta, eps=1e-5):
        var = x.var(-1, keepdim=True, unbiased=False)
        return gamma * x / torch.sqrt(var + eps) + beta  # forgot to subtract the mean

    result = exercises.check("ch07.layer_norm", wrong, verbose=False)
    assert not result and "wrong values" in result.failure


def test_layer_norm_unbiased_var_fails():
    def wrong(x, gamma, beta, eps=1e-5):
        mean = x.mean(-1, keepdim=True)
        return gamma * (x - mean) / torch.sqrt(x.var(-1, keepdim=True) + eps) + beta

    assert not exercises.check("ch07.layer_norm", wrong, verbose=False)


def test_layer_norm_ignoring_eps_fails():
    def wrong(x, gamma, beta, eps=1e-5):
        mean = x.mean(-1, keepdim=True)
        return gamma * (x - mean) / x.std(-1, keepdim=True, unbiased=False) + beta

    assert not exercises.check("ch07.layer_norm", wrong, verbose=False)


def test_ffn_relu_outside_fails():
    def wrong(x, W1, b1, W2, b2):
        return torch.relu((x @ W1.T + b1) @ W2.T + b2)  # max(0, W2(W1 x + b1) + b2)

    result = exercises.check("ch07.feed_forward", wrong, verbose=False)
    assert not result and "wrong values" in result.failure


def test_ffn_gelu_fails():
    def wrong(x, W1, b1, W2, b2):
        return F.gelu(x @ W1.T + b1) @ W2.T + b2

    assert not exercises.check("ch07.feed_forward", wrong, verbose=False)


def test_pe_swapped_sin_cos_fails():
    def wrong(n, d):
        pe = sinusoidal_positional_encoding(n, d)
        return pe.view(n, d // 2, 2).flip(-1).reshape(n, d)  # cos on even, sin on odd

    assert not exercises.check("ch07.positional_encoding", wrong, verbose=False)


def test_pe_wrong_exponent_fails():
    def wrong(n, d):
        pos = torch.arange(n, dtype=torch.float32)[:, None]
        i = torch.arange(d // 2, dtype=torch.float32)
        angle = pos / 10000 ** (i / d)  # i/d instead of 2i/d
        return torch.stack([torch.sin(angle), torch.cos(angle)], -1).reshape(n, d)

    assert not exercises.check("ch07.positional_encoding", wrong, verbose=False)


# ---------------------------------------------------------------------------- order-blind ceiling
def _mode_share(x):
    return torch.tensor([max(row.count(v) for v in row) / len(row) for row in x.tolist()])


def test_ceiling_is_the_share_of_the_mode():
    x = torch.tensor([[3, 3, 1, 3, 1], [0, 1, 2, 3, 4], [7, 7, 7, 7, 7]])
    torch.testing.assert_close(ch07.order_blind_ceiling(x), torch.tensor([0.6, 0.2, 1.0]))
    x = torch.randint(0, 10, (50, 10), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(ch07.order_blind_ceiling(x), _mode_share(x))


def test_ceiling_is_what_the_best_order_blind_rule_scores_on_average():
    """Writing the mode everywhere, averaged over all arrangements, scores exactly the ceiling."""
    import itertools

    digits = [2, 2, 5, 5, 5, 9]
    target = sorted(digits)
    arrangements = set(itertools.permutations(digits))
    mode = max(set(digits), key=digits.count)
    mean_acc = sum(sum(mode == t for t in target) for _ in arrangements) / (len(arrangements) * len(digits))
    assert math.isclose(mean_acc, ch07.order_blind_ceiling(torch.tensor([digits])).item())
    # and no rule "digit v -> answer c(v)" does better on average over the arrangements
    for rule in itertools.product(sorted(set(digits)), repeat=3):
        answer = dict(zip(sorted(set(digits)), rule, strict=True))
        acc = sum(sum(answer[v] == t for v, t in zip(arr, target, strict=True)) for arr in arrangements)
        assert acc / (len(arrangements) * len(digits)) <= mean_acc + 1e-12


def test_ceiling_wrong_answers_fail():
    def per_arrangement(x):  # lets the answer depend on the arrangement: too optimistic
        y = x.sort(-1).values
        out = []
        for row, tgt in zip(x.tolist(), y.tolist(), strict=True):
            best = 0
            for v in set(row):
                best += max(sum(1 for a, t in zip(row, tgt, strict=True) if a == v and t == c) for c in range(10))
            out.append(best / len(row))
        return torch.tensor(out)

    def distinct(x):
        return torch.tensor([len(set(r)) / len(r) for r in x.tolist()])

    for wrong in (per_arrangement, distinct, lambda x: torch.full((x.shape[0],), 0.1)):
        assert not exercises.check("ch07.order_blind_ceiling", wrong, verbose=False)


class _TinySorter(nn.Module):
    def __init__(self, positions: bool):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(10, 16)
        self.pe = sinusoidal_positional_encoding(10, 16) if positions else None
        self.encoder = Encoder(1, 16, 2, 32, dropout=0.0, norm_first=True)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        h = self.embed(x) if self.pe is None else self.embed(x) + self.pe
        return self.head(self.encoder(h))


def _digits(n=64):
    x = torch.randint(0, 10, (n, 10), generator=torch.Generator().manual_seed(1))
    return x, x.sort(-1).values


def test_check_order_blind_passes_a_model_without_positions():
    x, y = _digits()
    result = ch07.check_order_blind(_TinySorter(positions=False), x, y, verbose=False)
    assert result and result.passed == result.total == 3


def test_check_order_blind_fails_a_model_with_positions():
    x, y = _digits()
    result = ch07.check_order_blind(_TinySorter(positions=True), x, y, verbose=False)
    assert not result and "still sees positions" in result.failure


def test_check_order_blind_fails_an_impossible_accuracy():
    """An "order-blind" model that is right too often means y is not the sorted x."""
    x, _ = _digits(256)
    y = x.clone()  # the identity task: an order-blind model can copy its input perfectly
    model = nn.Sequential(nn.Embedding(10, 10))
    with torch.no_grad():
        model[0].weight.copy_(10 * torch.eye(10))
    result = ch07.check_order_blind(model, x, y, verbose=False)
    assert not result and "above the order-blind ceiling" in result.failure


def test_check_order_blind_wrong_output_shape():
    x, y = _digits()
    result = ch07.check_order_blind(nn.Embedding(10, 7), x, y, verbose=False)
    assert not result and "logits" in result.failure
    with pytest.raises(ValueError):
        ch07.check_order_blind(nn.Embedding(10, 10), x, y[:, :5], verbose=False)


def test_check_order_blind_restores_training_mode():
    x, y = _digits()
    model = _TinySorter(positions=False).train()
    ch07.check_order_blind(model, x, y, verbose=False)
    assert model.training


# ---------------------------------------------------------------------------- seed verdicts
def test_seed_verdict_uses_the_paired_t_interval():
    """Paired differences [0.39, 0.27, 0.46] are measurable; unpaired-looking noise is not."""
    from scipy import stats

    a, b = [0.91, 0.88, 0.95], [0.52, 0.61, 0.49]
    ref = stats.ttest_rel(a, b).confidence_interval(0.95)
    assert ref.low > 0 and ch07.seed_verdict({"a": a, "b": b}) == "a"
    with pytest.raises(ValueError):
        ch07.seed_verdict({"a": [1.0], "b": [0.5]})  # one seed: no interval


def test_seed_verdict():
    clear = {"post-norm": [0.31, 0.35, 0.29], "pre-norm": [0.97, 0.99, 0.98]}
    assert ch07.seed_verdict(clear) == "pre-norm"
    assert ch07.seed_verdict(clear, higher_is_better=False) == "post-norm"
    noisy = {"a": [0.5, 0.9, 0.6], "b": [0.8, 0.55, 0.7]}
    assert ch07.seed_verdict(noisy) == ch07.NO_DIFFERENCE


def test_check_seed_verdict_right_and_wrong():
    clear = {"post-norm": [0.31, 0.35, 0.29], "pre-norm": [0.97, 0.99, 0.98]}
    assert ch07.check_seed_verdict(clear, "pre-norm", verbose=False)
    wrong = ch07.check_seed_verdict(clear, "no measurable difference", verbose=False)
    assert not wrong and "support 'pre-norm'" in wrong.failure
    noisy = {"a": [0.5, 0.9, 0.6], "b": [0.8, 0.55, 0.7]}
    assert ch07.check_seed_verdict(noisy, "no measurable difference", verbose=False)
    assert not ch07.check_seed_verdict(noisy, "a", verbose=False)


def test_check_seed_verdict_rejects_bad_results():
    too_few = ch07.check_seed_verdict({"a": [0.5, 0.6], "b": [0.7, 0.8]}, "b", verbose=False)
    assert not too_few and "at least 3" in too_few.failure
    uneven = ch07.check_seed_verdict({"a": [0.5, 0.6, 0.7], "b": [0.7, 0.8]}, "b", verbose=False)
    assert not uneven
    nan = ch07.check_seed_verdict({"a": [0.5, float("nan"), 0.7], "b": [0.7, 0.8, 0.9]}, "b", verbose=False)
    assert not nan and "not finite" in nan.failure
    three = ch07.check_seed_verdict({"a": [1.0] * 3, "b": [1.0] * 3, "c": [1.0] * 3}, "a", verbose=False)
    assert not three and "exactly two" in three.failure
    unknown = ch07.check_seed_verdict({"a": [0.1, 0.2, 0.3], "b": [0.9, 0.8, 0.9]}, "c", verbose=False)
    assert not unknown and "must be one of" in unknown.failure
