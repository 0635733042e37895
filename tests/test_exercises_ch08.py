"""The chapter 8 exercise checks pass the reference and fail plausible wrong answers."""

import torch

from dlbook import exercises


def test_all_registered():
    assert exercises.known("ch08") == ["ch08.padded_weight", "ch08.special_attention", "ch08.whole_word_selection"]


def test_references_pass():
    for key in exercises.known("ch08"):
        assert exercises.check(key, exercises.reference(key), verbose=False)


# --------------------------------------------------------------------------- which padding constant?

PW = "ch08.padded_weight"


def test_padded_weight_with_where_passes():
    def other_form(logits, attention_mask, fill, dtype):
        pad = attention_mask[:, None, :] == 0  # (B, 1, T_k)
        scores = logits.to(dtype)
        scores = torch.where(pad, scores + torch.tensor(fill, dtype=dtype), scores)
        return torch.softmax(scores, -1).masked_fill(~pad, 0).sum(-1).float()

    assert exercises.check(PW, other_form, verbose=False)


def test_padded_weight_in_float32_fails():
    def wrong(logits, attention_mask, fill, dtype):  # computes in float32 whatever the dtype
        pad = (attention_mask == 0)[:, None, :]
        weights = torch.softmax(logits + torch.where(pad, fill, 0.0), -1)
        return (weights * pad).sum(-1)

    result = exercises.check(PW, wrong, verbose=False)
    assert not result and "becomes -inf" in result.failure


def test_padded_weight_multiplied_mask_fails_with_inf():
    def wrong(logits, attention_mask, fill, dtype):  # (1 - keep) * fill: 0 * -inf is NaN at real keys
        keep = attention_mask[:, None, :].to(dtype)
        weights = torch.softmax(logits.to(dtype) + (1 - keep) * fill, -1)
        return (weights * (1 - keep)).sum(-1).float()

    result = exercises.check(PW, wrong, verbose=False)
    assert not result and "-inf" in result.failure


def test_padded_weight_of_real_keys_fails():
    def wrong(logits, attention_mask, fill, dtype):  # the weight on the real tokens instead
        return 1 - exercises.reference(PW)(logits, attention_mask, fill, dtype)

    assert not exercises.check(PW, wrong, verbose=False)


def test_padded_weight_in_the_computation_dtype_fails():
    def wrong(logits, attention_mask, fill, dtype):
        return exercises.reference(PW)(logits, attention_mask, fill, dtype).to(dtype)

    result = exercises.check(PW, wrong, verbose=False)
    assert not result and "dtype" in result.failure


# --------------------------------------------------------------------------- attention to [CLS] and [SEP]

SA = "ch08.special_attention"


def test_special_attention_loop_passes():
    def loop(attentions, input_ids, attention_mask, cls_id, sep_id):
        L, (B, H, T, _) = len(attentions), attentions[0].shape
        out = torch.zeros(L, H, 2)
        n = 0
        for b in range(B):
            for t in range(T):
                if attention_mask[b, t]:
                    n += 1
                    for layer in range(L):
                        row = attentions[layer][b, :, t]  # (H, T)
                        out[layer, :, 0] += row[:, input_ids[b] == cls_id].sum(-1)
                        out[layer, :, 1] += row[:, input_ids[b] == sep_id].sum(-1)
        return out / n

    assert exercises.check(SA, loop, verbose=False)


def test_special_attention_last_sep_only_fails():
    def wrong(attentions, input_ids, attention_mask, cls_id, sep_id):  # the head_profile of section 8.4
        att = torch.stack(list(attentions), 1)  # (B, L, H, T, T)
        last = attention_mask.sum(1) - 1  # (B,) position of the last [SEP]
        sep = att.gather(-1, last.view(-1, 1, 1, 1, 1).expand(*att.shape[:-1], 1)).squeeze(-1)
        cls = att[..., 0]
        w = torch.stack([cls, sep], -1) * attention_mask.bool()[:, None, None, :, None]
        return w.sum((0, 3)) / attention_mask.sum()

    result = exercises.check(SA, wrong, verbose=False)
    assert not result and "two [SEP]" in result.failure


def test_special_attention_padded_queries_fail():
    def wrong(attentions, input_ids, attention_mask, cls_id, sep_id):  # averages over padded queries too
        att = torch.stack(list(attentions), 1)
        cls = (att * (input_ids == cls_id)[:, None, None, None, :]).sum(-1)
        sep = (att * (input_ids == sep_id)[:, None, None, None, :]).sum(-1)
        return torch.stack([cls, sep], -1).mean((0, 3))

    assert not exercises.check(SA, wrong, verbose=False)


def test_special_attention_swapped_columns_fail():
    def wrong(attentions, input_ids, attention_mask, cls_id, sep_id):
        return exercises.reference(SA)(attentions, input_ids, attention_mask, cls_id, sep_id).flip(-1)

    assert not exercises.check(SA, wrong, verbose=False)


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
