"""dlbook.lean: the same classifier with less Python (chapter 15)."""

import pytest
import torch
from transformers import BertConfig, BertForMultipleChoice, BertForSequenceClassification

from dlbook import lean, measure, prune, quantize


def tiny_bert(seed: int = 0, **overrides) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    settings = dict(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=24,
        max_position_embeddings=32,
        type_vocab_size=2,
        num_labels=3,
        initializer_range=0.5,  # logits of a few units, so a changed operation shows
    )
    settings.update(overrides)
    return BertForSequenceClassification(BertConfig(**settings)).eval()


def batch(n: int = 3, t: int = 7, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(n, t, dtype=torch.long)
    mask[0, -3:] = 0  # padding in the first row
    types = torch.zeros(n, t, dtype=torch.long)
    types[1, 4:] = 1  # a second segment in the second row
    return {"input_ids": torch.randint(1, 50, (n, t), generator=g), "attention_mask": mask, "token_type_ids": types}


def test_same_logits_and_loss_as_the_hugging_face_model():
    model = tiny_bert()
    fast = lean.lean_classifier(model)
    labels = torch.tensor([0, 2, 1])
    with torch.no_grad():
        for b in (batch(), {"input_ids": batch()["input_ids"][1:2]}):  # padded and mask-free
            ref = model(**b, labels=labels[: len(b["input_ids"])])
            ours = fast(**b, labels=labels[: len(b["input_ids"])])
            torch.testing.assert_close(ours.logits, ref.logits, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(ours.loss, ref.loss, rtol=1e-5, atol=1e-6)


def test_padding_changes_nothing_for_the_real_tokens():
    fast = lean.lean_classifier(tiny_bert())
    b = batch()
    short = {k: v[:1, :4] for k, v in b.items()}  # row 0 without its 3 padding positions
    with torch.no_grad():
        torch.testing.assert_close(fast(**b).logits[:1], fast(**short).logits, rtol=1e-5, atol=1e-6)


def test_pruned_layers_of_different_shapes():
    model = prune.shrink_bert(tiny_bert(), [[0, 2, 3], [1]], [list(range(10)), [0, 5]])
    assert prune.structure(model) == {"heads": [3, 1], "neurons": [10, 2]}
    fast = lean.lean_classifier(model)
    assert [layer.heads for layer in fast.layers] == [3, 1]
    with torch.no_grad():
        torch.testing.assert_close(fast(**batch()).logits, model(**batch()).logits, rtol=1e-5, atol=1e-6)


def test_vocabulary_pruned_model_takes_the_original_ids():
    from transformers import BertTokenizer

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "film", "is", "good", "dull", "plot"]
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(words)}, do_lower_case=True)
    small, vmap = prune.prune_vocabulary(tiny_bert(vocab_size=len(words)), tokenizer, ["the film is good"])
    wrapped = vmap.wrap(small)
    fast = lean.lean_classifier(wrapped)
    assert fast.n_ids == len(words) and fast.word.num_embeddings == vmap.new_size < len(words)
    b = tokenizer(["the film is good", "a dull plot"], padding=True, return_tensors="pt")  # unseen -> [UNK]
    with torch.no_grad():
        torch.testing.assert_close(fast(**b).logits, wrapped(**b).logits, rtol=1e-5, atol=1e-6)


def test_int8_copy_stacks_qkv_into_one_quantized_product():
    model = tiny_bert()
    fp32 = lean.lean_classifier(model)
    int8 = quantize.int8_dynamic(fp32)
    assert not any(type(m) is torch.nn.Linear for m in int8.modules())  # every projection in int8
    assert all(layer.qkv.weight().shape[0] == 3 * 16 for layer in int8.layers)  # one stacked product
    assert measure.saved_size_mb(int8) < measure.saved_size_mb(fp32)
    with torch.no_grad():
        want = fp32(**batch()).logits
        got = int8(**batch()).logits
        assert want.abs().max() > 1.0  # logits large enough for the tolerance to mean something
        torch.testing.assert_close(got, want, rtol=0.0, atol=0.1 * float(want.abs().max()))


def test_the_input_model_is_not_changed():
    model = tiny_bert()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = lean.lean_classifier(model)
    with torch.no_grad():
        for p in fast.parameters():
            p.add_(1.0)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        (lambda b: {**b, "input_ids": b["input_ids"].float()}, TypeError, "integer tensor"),
        (lambda b: {**b, "input_ids": b["input_ids"][0]}, TypeError, r"shape \(batch, seq\)"),
        (lambda b: {**b, "input_ids": b["input_ids"] + 50}, ValueError, r"input_ids must lie in 0\.\.49"),
        (lambda b: {**b, "attention_mask": b["attention_mask"][:, :3]}, ValueError, "attention_mask must have the shape"),
        (lambda b: {**b, "attention_mask": b["attention_mask"] * 2}, ValueError, "0 .padding. and 1"),
        (lambda b: {**b, "attention_mask": b["attention_mask"] * 0}, ValueError, r"rows \[0, 1, 2\] have no real"),
        (lambda b: {**b, "token_type_ids": b["token_type_ids"] + 2}, ValueError, r"token_type_ids must lie in 0\.\.1"),
        (lambda b: {k: v.repeat(1, 5) for k, v in b.items()}, ValueError, "position table has 32"),
    ],
)
def test_bad_batches_get_clear_errors(change, error, match):
    fast = lean.lean_classifier(tiny_bert())
    with pytest.raises(error, match=match):
        fast(**change(batch()))


def test_unsupported_models_are_refused():
    with pytest.raises(TypeError, match="BertForSequenceClassification"):
        lean.lean_classifier(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="hidden_act='gelu'"):
        lean.lean_classifier(tiny_bert(hidden_act="gelu_new"))
    with pytest.raises(ValueError, match="problem_type"):
        lean.lean_classifier(tiny_bert(problem_type="multi_label_classification"))
    with pytest.raises(TypeError, match="BertForSequenceClassification"):
        lean.lean_classifier(BertForMultipleChoice(tiny_bert().config))
    with pytest.raises(ValueError, match="is_decoder"):
        lean.lean_classifier(tiny_bert(is_decoder=True))
    with pytest.raises(ValueError, match="at least 2 classes"):
        lean.lean_classifier(tiny_bert(num_labels=1))
    with pytest.raises(ValueError, match="float32"):
        lean.lean_classifier(tiny_bert().double())
    with pytest.raises(ValueError, match="quantize the lean classifier"):
        lean.lean_classifier(quantize.int8_dynamic(tiny_bert()))


def test_labels_must_be_class_indices():
    fast = lean.lean_classifier(tiny_bert())
    b = batch()
    for labels in (torch.rand(3, 3), torch.tensor([0, 1])):  # soft labels; wrong batch size
        with pytest.raises(ValueError, match="class indices of shape"):
            fast(**b, labels=labels)
