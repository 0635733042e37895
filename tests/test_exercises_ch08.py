"""The chapter 8 exercise checks pass the reference and fail plausible wrong answers."""

import torch

from dlbook import exercises


def test_all_registered():
    assert exercises.known("ch08") == ["ch08.extended_attention_mask", "ch08.whole_word_selection"]


def test_references_pass():
    for key in exercises.known("ch08"):
        assert exercises.check(key, exercises.reference(key), verbose=False)


# --------------------------------------------------------------------------- extended attention mask


def test_mask_with_where_passes():
    def other_form(attention_mask, dtype):
        keep = attention_mask.bool()[:, None, None, :]
        return torch.where(keep, torch.tensor(0.0, dtype=dtype), torch.tensor(torch.finfo(dtype).min, dtype=dtype))

    assert exercises.check("ch08.extended_attention_mask", other_form, verbose=False)


def test_mask_over_queries_fails():
    def wrong(attention_mask, dtype):  # (B, 1, T, 1): blocks padded *queries*, not keys
        return (1.0 - attention_mask[:, None, :, None].to(dtype)) * torch.finfo(dtype).min

    result = exercises.check("ch08.extended_attention_mask", wrong, verbose=False)
    assert not result and "shape" in result.failure


def test_mask_inverted_fails():
    def wrong(attention_mask, dtype):  # blocks the real tokens
        return attention_mask[:, None, None, :].to(dtype) * torch.finfo(dtype).min

    assert not exercises.check("ch08.extended_attention_mask", wrong, verbose=False)


def test_mask_old_constant_fails():
    def wrong(attention_mask, dtype):  # the -10000 of early BERT code, not the dtype's most negative number
        return (1.0 - attention_mask[:, None, None, :].to(dtype)) * -10000.0

    result = exercises.check("ch08.extended_attention_mask", wrong, verbose=False)
    assert not result and "wrong values" in result.failure


def test_mask_float32_constant_fails_on_half():
    def wrong(attention_mask, dtype):  # float32's minimum overflows to -inf in float16
        return ((1.0 - attention_mask[:, None, None, :].float()) * torch.finfo(torch.float32).min).to(dtype)

    result = exercises.check("ch08.extended_attention_mask", wrong, verbose=False)
    assert not result and "float16" in result.failure


def test_mask_wrong_dtype_fails():
    def wrong(attention_mask, dtype):
        return (1.0 - attention_mask[:, None, None, :].float()) * torch.finfo(torch.float32).min

    result = exercises.check("ch08.extended_attention_mask", wrong, verbose=False)
    assert not result and "dtype" in result.failure


# --------------------------------------------------------------------------- whole-word masking


def test_whole_word_loop_passes():
    def loop(word_ids, u_word, mlm_probability=0.15):
        out = torch.zeros(word_ids.shape, dtype=torch.bool)
        for b in range(word_ids.shape[0]):
            for t in range(word_ids.shape[1]):
                w = int(word_ids[b, t])
                out[b, t] = w >= 0 and bool(u_word[b, w] < mlm_probability)
        return out

    assert exercises.check("ch08.whole_word_selection", loop, verbose=False)


def test_whole_word_per_token_fails():
    def wrong(word_ids, u_word, mlm_probability=0.15):  # one draw per token position, not per word
        u = torch.cat([u_word, u_word], dim=1)[:, : word_ids.shape[1]]
        return (u < mlm_probability) & (word_ids >= 0)

    assert not exercises.check("ch08.whole_word_selection", wrong, verbose=False)


def test_whole_word_special_tokens_fail():
    def wrong(word_ids, u_word, mlm_probability=0.15):  # forgets that -1 marks [CLS]/[SEP]/[PAD]
        return torch.gather(u_word < mlm_probability, 1, word_ids.clamp(min=0))

    result = exercises.check("ch08.whole_word_selection", wrong, verbose=False)
    assert not result and "wrong entries" in result.failure


def test_whole_word_ge_fails():
    def wrong(word_ids, u_word, mlm_probability=0.15):  # chooses the words that should stay
        chosen = torch.gather(u_word >= mlm_probability, 1, word_ids.clamp(min=0))
        return chosen & (word_ids >= 0)

    assert not exercises.check("ch08.whole_word_selection", wrong, verbose=False)


def test_whole_word_returns_ints_fails():
    def wrong(word_ids, u_word, mlm_probability=0.15):
        return exercises.reference("ch08.whole_word_selection")(word_ids, u_word, mlm_probability).long()

    result = exercises.check("ch08.whole_word_selection", wrong, verbose=False)
    assert not result and "dtype" in result.failure


def test_stub_reports_not_yet():
    def stub(*args, **kwargs):
        raise NotImplementedError

    for key in exercises.known("ch08"):
        result = exercises.check(key, stub, verbose=False)
        assert not result and "NotImplementedError" in result.failure
