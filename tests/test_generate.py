"""dlbook.generate: each decoding rule against transformers' generate and logits processors."""

import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.generation import (
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from dlbook import generate as gen


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=97,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # sharpen the random model so that sequences differ clearly
        model.lm_head.weight.mul_(8.0)
    return model


def prompt(seed=0, length=5, batch=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, 97, (batch, length), generator=g)


def hf(model, ids, **kw):
    with torch.no_grad():
        return model.generate(ids, attention_mask=torch.ones_like(ids), **kw)


def test_greedy_matches_generate(tiny):
    for seed in range(4):
        ids = prompt(seed, batch=2)
        ours = gen.greedy(tiny, ids, 12)
        theirs = hf(tiny, ids, max_new_tokens=12, do_sample=False)
        assert torch.equal(ours, theirs[:, : ours.shape[1]])


def test_greedy_stops_at_eos_and_pads(tiny):
    ids = prompt(1)
    first = gen.greedy(tiny, ids, 1)[0, -1].item()
    out = gen.greedy(tiny, ids, 5, eos_token_id=first)
    assert out.shape[1] == ids.shape[1] + 1 and out[0, -1] == first
    theirs = hf(tiny, ids, max_new_tokens=5, do_sample=False, eos_token_id=first, pad_token_id=first)
    assert torch.equal(out, theirs)


def test_sampling_matches_generate_under_a_seed(tiny):
    ids = prompt(2)
    for settings in (
        dict(temperature=0.7),
        dict(top_k=5),
        dict(top_p=0.8),
        dict(temperature=1.3, top_k=10, top_p=0.9),
        dict(repetition_penalty=1.5, top_k=20),
    ):
        torch.manual_seed(3)
        ours = gen.sample(tiny, ids, 10, **settings)
        torch.manual_seed(3)
        theirs = hf(
            tiny,
            ids,
            max_new_tokens=10,
            do_sample=True,
            top_k=settings.get("top_k", 0),
            **{k: v for k, v in settings.items() if k != "top_k"},
        )
        assert torch.equal(ours, theirs), settings


def test_filters_match_logits_processors():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 200, generator=g) * 3
    ids = torch.randint(0, 200, (6, 30), generator=g)
    for k in (1, 5, 50, 200):
        assert torch.equal(gen.top_k_filter(logits, k), TopKLogitsWarper(k)(ids, logits.clone()))
    for p in (0.05, 0.5, 0.9, 0.99, 1.0):
        assert torch.equal(gen.top_p_filter(logits, p).isinf(), TopPLogitsWarper(p)(ids, logits.clone()).isinf())
    for t in (0.5, 2.0):
        torch.testing.assert_close(gen.apply_temperature(logits, t), TemperatureLogitsWarper(t)(ids, logits.clone()))
    for pen in (1.2, 0.8):
        want = RepetitionPenaltyLogitsProcessor(pen)(ids, logits.clone())
        torch.testing.assert_close(gen.penalize_repetition(logits, ids, pen), want)


def test_top_p_definition():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    kept = ~gen.top_p_filter(probs.log(), 0.8).isinf()
    assert kept.tolist() == [[True, True, False, False]]  # 0.5 + 0.3 reaches 0.8
    kept = ~gen.top_p_filter(probs.log(), 0.81).isinf()
    assert kept.tolist() == [[True, True, True, False]]
    assert (~gen.top_p_filter(probs.log(), 0.1).isinf()).sum() == 1  # the top token always stays


def test_beam_search_matches_generate(tiny):
    for seed in range(4):
        ids = prompt(seed, length=4)
        for beams, lp in ((2, 1.0), (4, 1.0), (3, 0.0)):
            ours = gen.beam_search(tiny, ids, 10, num_beams=beams, length_penalty=lp, eos_token_id=2)[0].ids
            theirs = hf(
                tiny,
                ids,
                max_new_tokens=10,
                num_beams=beams,
                do_sample=False,
                length_penalty=lp,
                eos_token_id=2,
                pad_token_id=2,
            )
            assert torch.equal(ours, theirs), (seed, beams, lp)


def test_beam_of_one_is_greedy(tiny):
    ids = prompt(5)
    assert torch.equal(gen.beam_search(tiny, ids, 8, num_beams=1)[0].ids, gen.greedy(tiny, ids, 8))


def test_decode_dispatch_and_unknown_settings(tiny):
    ids = prompt(0)
    assert torch.equal(gen.decode(tiny, ids, "greedy", max_new_tokens=4), gen.greedy(tiny, ids, 4))
    with pytest.raises(ValueError, match="unknown decoding strategy"):
        gen.decode(tiny, ids, "nucleus", max_new_tokens=4)
    with pytest.raises(ValueError, match="unknown setting"):
        gen.decode(tiny, ids, "greedy", max_new_tokens=4, top_p=0.9)
    with pytest.raises(ValueError, match="num_beams"):
        gen.decode(tiny, ids, "beam", max_new_tokens=4)


def test_bad_input(tiny):
    ids = prompt(0)
    with pytest.raises(ValueError, match="context"):
        gen.greedy(tiny, prompt(0, length=60), 10)
    with pytest.raises(ValueError, match="vocabulary"):
        gen.greedy(tiny, torch.tensor([[5, 500]]), 2)
    with pytest.raises(ValueError, match="shape"):
        gen.greedy(tiny, torch.tensor([5, 6]), 2)
    with pytest.raises(TypeError, match="int64"):
        gen.greedy(tiny, ids.float(), 2)
    with pytest.raises(ValueError, match="max_new_tokens"):
        gen.greedy(tiny, ids, 0)
    with pytest.raises(ValueError, match="temperature"):
        gen.sample(tiny, ids, 2, temperature=0)
    with pytest.raises(ValueError, match="top_p"):
        gen.top_p_filter(torch.zeros(1, 4), 1.5)
    with pytest.raises(ValueError, match="top_k"):
        gen.top_k_filter(torch.zeros(1, 4), 0)
    with pytest.raises(ValueError, match="one prompt"):
        gen.beam_search(tiny, prompt(0, batch=2), 3, num_beams=2)
    with pytest.raises(ValueError, match="eos_token_id"):
        gen.greedy(tiny, ids, 2, eos_token_id=-1)


def test_repetition_and_rouge():
    assert gen.repeated_ngram_rate("a b c d".split(), 2) == 0
    assert gen.repeated_ngram_rate("a b a b a b".split(), 2) == pytest.approx(3 / 5)
    assert math.isnan(gen.repeated_ngram_rate(["a"], 2))
    ref = gen.rouge_tokens("The cat sat on the mat.")
    cand = gen.rouge_tokens("the cat was on the mat")
    # unigrams: the x2, cat, on, mat match (5 of 6 each way)
    assert gen.rouge_n(cand, ref, 1) == pytest.approx((5 / 6, 5 / 6, 5 / 6))
    # bigrams: "the cat", "on the", "the mat" (3 of 5)
    assert gen.rouge_n(cand, ref, 2) == pytest.approx((3 / 5, 3 / 5, 3 / 5))
    assert gen.lcs_length(cand, ref) == 5
    assert gen.rouge_l(["mat", "the", "on"], ref)[1] == pytest.approx(2 / 6)
    assert gen.rouge_n([], ref) == (0.0, 0.0, 0.0)
    with pytest.raises(TypeError, match="list of tokens"):
        gen.rouge_n("the cat", ref)


def test_parse_sentiment():
    assert gen.parse_sentiment(" Positive.") == 1
    assert gen.parse_sentiment("negative") == 0
    assert gen.parse_sentiment("It is not positive or negative") is None
    assert gen.parse_sentiment("The review") is None
    assert gen.parse_sentiment("positively") is None


def test_kv_bytes_and_flops_against_counter(tiny):
    config = tiny.config
    assert gen.kv_cache_bytes_per_token(config) == 2 * 2 * 2 * 8 * 4
    from torch.utils.flop_counter import FlopCounterMode

    eager = LlamaForCausalLM(LlamaConfig(**{**config.to_dict(), "attn_implementation": "eager"})).eval()
    ids = prompt(0, length=7)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:  # the prompt, filling a cache
        out = eager(ids, logits_to_keep=1, use_cache=True)
    assert counter.get_total_flops() == gen.forward_flops(config, 7)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:  # one more token, from the cache
        eager(torch.tensor([[5]]), past_key_values=out.past_key_values, logits_to_keep=1)
    assert counter.get_total_flops() == gen.forward_flops(config, 1, 7)
    with pytest.raises(ValueError, match="n_new"):
        gen.forward_flops(config, 0)
