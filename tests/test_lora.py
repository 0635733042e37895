"""Tests of dlbook.lora (chapter 10): zero-init equals base, merging, agreement with peft."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from dlbook.lora import (
    LoRALinear,
    add_lora,
    add_peft_lora,
    copy_lora_to_peft,
    lora_parameter_names,
    merge_lora,
)

transformers = pytest.importorskip("transformers")
from transformers import BertConfig, BertForSequenceClassification  # noqa: E402


def tiny_bert() -> BertForSequenceClassification:
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=2,
        max_position_embeddings=64,
    )
    return BertForSequenceClassification(cfg).eval()


def batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {"input_ids": torch.randint(0, 100, (3, 7), generator=g), "attention_mask": torch.ones(3, 7, dtype=torch.long)}


def randomise_b(model: nn.Module) -> None:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, LoRALinear):
                m.lora_B.normal_(0, 0.1)


def test_lora_linear_equation():
    torch.manual_seed(0)
    base = nn.Linear(6, 4)
    lora = LoRALinear(base, r=2, alpha=3.0)
    with torch.no_grad():
        lora.lora_B.normal_()
    x = torch.randn(5, 6)
    want = x @ base.weight.T + base.bias + 3.0 / 2 * x @ lora.lora_A.T @ lora.lora_B.T
    torch.testing.assert_close(lora(x), want)
    torch.testing.assert_close(lora.merged_weight(), base.weight + 1.5 * lora.lora_B @ lora.lora_A)
    assert lora.lora_A.shape == (2, 6) and lora.lora_B.shape == (4, 2)
    assert not base.weight.requires_grad and lora.lora_A.requires_grad


def test_zero_init_equals_base():
    model = tiny_bert()
    ref = copy.deepcopy(model)
    add_lora(model, r=4, alpha=8)
    with torch.no_grad():
        torch.testing.assert_close(model(**batch()).logits, ref(**batch()).logits, rtol=0, atol=0)


def test_only_adapters_and_head_train():
    model = add_lora(tiny_bert(), r=4, alpha=8)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == set(lora_parameter_names(model)) | {"classifier.weight", "classifier.bias"}
    assert len(lora_parameter_names(model)) == 2 * 2 * 2  # 2 layers x (query, value) x (A, B)
    n = sum(p.numel() for n, p in model.named_parameters() if n.endswith(("lora_A", "lora_B")))
    assert n == 2 * 2 * 4 * (32 + 32)
    head_off = add_lora(tiny_bert(), r=4, alpha=8, trainable_extra=())
    assert {n for n, p in head_off.named_parameters() if p.requires_grad} == set(lora_parameter_names(head_off))


def test_merge_equals_unmerged():
    model = add_lora(tiny_bert(), target_names=("query", "key", "value", "dense"), r=3, alpha=6)
    randomise_b(model)
    with torch.no_grad():
        before = model(**batch()).logits
        merge_lora(model)
        after = model(**batch()).logits
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    assert type(model.bert.encoder.layer[0].attention.self.query) is nn.Linear
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(before, tiny_bert()(**batch()).logits)  # the adapters did change something


def test_agrees_with_peft_on_copied_weights():
    peft = pytest.importorskip("peft")
    ours = add_lora(tiny_bert(), r=4, alpha=8)
    randomise_b(ours)
    with torch.no_grad():
        ours.classifier.weight.add_(0.5)  # a trained head, different from the base model's
    config = peft.LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["query", "value"])
    theirs = add_peft_lora(tiny_bert(), config).eval()
    assert copy_lora_to_peft(ours, theirs) == 2 * 2 * 2 + 2
    with torch.no_grad():
        torch.testing.assert_close(theirs(**batch()).logits, ours(**batch()).logits, rtol=1e-5, atol=1e-6)
    ours_n = sum(p.numel() for p in ours.parameters() if p.requires_grad)
    theirs_n = sum(p.numel() for p in theirs.parameters() if p.requires_grad)
    assert ours_n == theirs_n
    with torch.no_grad():
        merged = theirs.merge_and_unload()(**batch()).logits
    torch.testing.assert_close(merged, ours(**batch()).logits, rtol=1e-5, atol=1e-6)


def test_same_init_distribution_as_peft():
    peft = pytest.importorskip("peft")
    torch.manual_seed(3)
    ours = LoRALinear(nn.Linear(32, 32), r=4, alpha=8)
    torch.manual_seed(3)
    inner = nn.Sequential()
    inner.add_module("query", nn.Linear(32, 32))
    theirs = peft.get_peft_model(inner, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["query"]))
    a = theirs.base_model.model.query.lora_A["default"].weight
    assert float(ours.lora_A.detach().abs().max()) <= 1 / 32**0.5 + 1e-6 and float(a.detach().abs().max()) <= 1 / 32**0.5 + 1e-6
    assert torch.count_nonzero(theirs.base_model.model.query.lora_B["default"].weight) == 0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(r=0), "rank"),
        (dict(r=2.5), "rank"),
        (dict(r=4, alpha=0), "alpha"),
        (dict(r=4, alpha=-1.0), "alpha"),
        (dict(r=4, dropout=1.0), "dropout"),
        (dict(r=4, target_names=("querry",)), "querry"),
        (dict(r=4, target_names=()), "target_names"),
    ],
)
def test_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        add_lora(tiny_bert(), **kwargs)


def test_other_errors():
    with pytest.raises(TypeError):
        LoRALinear(nn.Conv1d(2, 2, 1), r=1, alpha=1)
    with pytest.raises(ValueError, match="no LoRA"):
        merge_lora(tiny_bert())
    model = add_lora(tiny_bert(), r=2, alpha=2)
    with pytest.raises(ValueError, match="already"):
        add_lora(model, r=2, alpha=2)
    with pytest.raises(ValueError, match="last dimension"):
        LoRALinear(nn.Linear(4, 4), r=1, alpha=1)(torch.randn(2, 5))


def test_add_peft_lora_shows_no_warning_and_checks_its_arguments():
    import warnings

    peft = pytest.importorskip("peft")
    config = peft.LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["query"])
    base = tiny_bert()
    with torch.no_grad():
        want = base(**batch()).logits
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # chapter 10 shows readers no warning from peft or transformers
        model = add_peft_lora(base, config)
    with torch.no_grad():
        assert torch.equal(model.eval()(**batch()).logits, want)  # B = 0 at the start
    assert all("lora_" in n or "modules_to_save" in n for n, p in model.named_parameters() if p.requires_grad)
    with pytest.raises(TypeError, match="model must be an nn.Module"):
        add_peft_lora("bert", config)
    with pytest.raises(TypeError, match="config must be a peft.LoraConfig"):
        add_peft_lora(tiny_bert(), {"r": 4})
    with pytest.raises(ValueError, match="already has our LoRA"):
        add_peft_lora(add_lora(tiny_bert(), r=2, alpha=2), config)


def test_instruct_keeps_the_old_name():
    from dlbook import instruct

    assert instruct.add_lora is add_peft_lora
