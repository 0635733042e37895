"""The chapter 17 exercise checks pass the reference and fail plausible wrong answers."""

import torch

from dlbook import exercises
from dlbook.nn.llama import apply_rope, rope_cos_sin


def test_all_registered():
    assert exercises.known("ch17") == ["ch17.rope_adjacent", "ch17.token_nll"]


def test_references_pass():
    for key in exercises.known("ch17"):
        assert exercises.check(key, exercises.reference(key), verbose=False)


def test_adjacent_rope_is_the_half_split_one_after_a_permutation():
    d = 16
    x = torch.randn(2, 5, d, dtype=torch.float64)
    pos = torch.arange(5)
    perm = torch.stack([torch.arange(d // 2), torch.arange(d // 2) + d // 2], dim=-1).flatten()
    cos, sin = rope_cos_sin(pos, d, dtype=torch.float64)
    half = apply_rope(x[None], cos, sin)[0]
    adjacent = exercises.reference("ch17.rope_adjacent")(x[..., perm], pos, 10_000.0)
    torch.testing.assert_close(adjacent, half[..., perm], atol=1e-6, rtol=1e-6)  # float32 angles in apply_rope


def test_half_split_pairs_fail_the_adjacent_check():
    def wrong(x, positions, base):  # Hugging Face's pairing, not the paper's
        cos, sin = rope_cos_sin(positions, x.shape[-1], base, dtype=x.dtype)
        half = x.shape[-1] // 2
        rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
        return x * cos + rotated * sin

    assert not exercises.check("ch17.rope_adjacent", wrong, verbose=False)


def test_rope_with_the_wrong_sign_fails():
    ref = exercises.reference("ch17.rope_adjacent")

    def wrong(x, positions, base):  # turns the other way
        return ref(x, -positions, base)

    assert not exercises.check("ch17.rope_adjacent", wrong, verbose=False)


def test_nll_without_the_shift_fails():
    def wrong(logits, ids, mask):  # predicts each token from its own position
        logp = torch.log_softmax(logits.float(), -1).gather(-1, ids[..., None])[..., 0]
        return -(logp * mask)[:, 1:].sum(1)

    assert not exercises.check("ch17.token_nll", wrong, verbose=False)


def test_nll_counting_padding_fails():
    def wrong(logits, ids, mask):
        logp = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, ids[:, 1:, None])[..., 0]
        return -logp.sum(1)

    result = exercises.check("ch17.token_nll", wrong, verbose=False)
    assert not result and "padding" in result.failure


def test_nll_as_log_of_softmax_fails_on_large_logits():
    def wrong(logits, ids, mask):
        p = torch.softmax(logits[:, :-1].float(), -1).gather(-1, ids[:, 1:, None])[..., 0]
        return -(torch.log(p) * mask[:, 1:]).sum(1)

    result = exercises.check("ch17.token_nll", wrong, verbose=False)
    assert not result and "large logits" in result.failure
