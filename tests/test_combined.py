"""The distilled + pruned student and the compact int8 model of chapter 15 (dlbook.combined)."""

import dataclasses
import json

import pytest
import torch

from dlbook import combined, distill, prune
from dlbook import finetune as ft


@pytest.fixture
def tiny_recipes(monkeypatch, tmp_path):
    monkeypatch.setenv("DLBOOK_CACHE", str(tmp_path))
    monkeypatch.setattr(distill, "_TEACHER_LOGITS", {})
    monkeypatch.setitem(
        ft.SENTIMENT_SETTINGS,
        "smoke",
        ft.FinetuneSettings(n_train=16, n_validation=8, max_length=16, epochs=1, batch_size=8, lr=1e-4),
    )
    layers = dataclasses.replace(distill.STUDENT_SETTINGS["smoke"]["layers"], n_train=16, max_length=16, batch_size=8)
    monkeypatch.setitem(distill.STUDENT_SETTINGS["smoke"], "layers", layers)
    monkeypatch.setitem(
        combined.PRUNED_STUDENT_SETTINGS,
        "smoke",
        combined.PrunedStudentSettings(
            keep_heads=4, keep_neurons=100, n_importance=8, epochs=1, lr=1e-4, alpha=0.0, n_report=8
        ),
    )
    return tmp_path


def test_pruned_student_trains_once_then_loads(tiny_recipes):
    student, _, _ = distill.distilled_student("smoke", "layers", True, device="cpu")
    torch.manual_seed(7)
    state = torch.get_rng_state()
    m1, tok, info1 = combined.pruned_student("smoke", device="cpu")
    assert torch.equal(torch.get_rng_state(), state)
    assert info1["from_cache"] is False
    assert prune.structure(m1) == {"heads": [4, 4, 4], "neurons": [100, 100, 100]}
    assert info1["structure"] == prune.structure(m1)
    assert len(info1["history"]["step_loss"]) == 2  # one epoch of 16 snippets at batch 8
    assert sum(p.numel() for p in m1.parameters()) < sum(p.numel() for p in student.parameters())
    m2, _, info2 = combined.pruned_student("smoke", device="cpu")
    assert info2["from_cache"] is True and info2["history"] == info1["history"]
    for k, v in m1.state_dict().items():
        torch.testing.assert_close(v, m2.state_dict()[k], rtol=0, atol=0)
    batch = tok(["a fine film", "dull"], padding=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(m1.eval()(**batch).logits, m2(**batch).logits, rtol=0, atol=0)
    # the cache key follows the student it starts from
    assert info1["student"] == json.loads(json.dumps(combined.long_student_key("smoke", "cpu")))


def test_long_student_is_chapter_14s_recipe_trained_longer(tiny_recipes, monkeypatch):
    m1, tok, info1 = combined.long_student("smoke", device="cpu")
    assert info1["from_cache"] is False
    assert len(info1["history"]["step_loss"]) == 2 * 2  # two epochs of 16 snippets at batch 8
    assert len(m1.bert.encoder.layer) == len(distill.STUDENT_SETTINGS["smoke"]["layers"].layers)
    m2, _, info2 = combined.long_student("smoke", device="cpu")
    assert info2["from_cache"] is True
    for k, v in m1.state_dict().items():
        torch.testing.assert_close(v, m2.state_dict()[k], rtol=0, atol=0)
    key = combined.long_student_key("smoke", "cpu")
    assert key["settings"]["epochs"] == combined.LONG_STUDENT_EPOCHS["smoke"] == 2
    monkeypatch.setitem(combined.LONG_STUDENT_EPOCHS, "smoke", 3)
    assert combined.long_student_key("smoke", "cpu") != key  # more epochs, another cache folder
    with pytest.raises(ValueError, match="profile"):
        combined.long_student("medium")


def test_pruned_student_bad_profile():
    with pytest.raises(ValueError, match="profile"):
        combined.pruned_student("medium")


def test_settings_keep_fewer_neurons_than_the_teacher_has():
    for s in combined.PRUNED_STUDENT_SETTINGS.values():
        assert 1 <= s.keep_heads <= 12 and 1 <= s.keep_neurons < 1536
        assert 0.0 <= s.alpha <= 1.0


def test_importance_uses_training_snippets_never_validation(tiny_recipes, monkeypatch):
    seen = []
    real = prune.prune_by_importance

    def spy(model, dataset, tokenizer, **kw):
        seen.append(list(dataset["input_ids"]))
        return real(model, dataset, tokenizer, **kw)

    monkeypatch.setattr(prune, "prune_by_importance", spy)
    combined.pruned_student("smoke", device="cpu")
    tok = distill.distilled_student("smoke", "layers", True, device="cpu")[1]
    train = combined.training_snippets(tok, 8, distill.STUDENT_SETTINGS["smoke"]["layers"].max_length)
    assert seen == [list(train["input_ids"])]


def test_training_snippets_checks_n():
    with pytest.raises(ValueError, match="n must be"):
        combined.training_snippets(None, 0, 16)


def _tiny_classifier():
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=2000,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
        num_labels=2,
    )
    return BertForSequenceClassification(config).eval()


class _Tok:
    """A whitespace tokenizer: word ``w`` is id ``5 + w``; ids 0..4 are special (0 pad, 1 unk)."""

    all_special_ids = [0, 1, 2, 3, 4]
    unk_token_id = 1
    pad_token_id = 0

    def __len__(self):
        return 2000

    def __call__(self, texts, **kwargs):
        texts = [texts] if isinstance(texts, str) else texts
        ids = [[2, *(5 + int(w) for w in t.split()), 3] for t in texts]
        if kwargs.get("return_tensors") == "pt":
            n = max(map(len, ids))
            pad = [row + [0] * (n - len(row)) for row in ids]
            return {"input_ids": torch.tensor(pad), "attention_mask": (torch.tensor(pad) != 0).long()}
        return {"input_ids": ids}


def test_compact_is_int8_smaller_and_exact_on_kept_tokens():
    from dlbook import measure, quantize

    model, tok = _tiny_classifier(), _Tok()
    small, vmap = combined.compact(model, tok, ["1 2 3", "3 4 5 6"])
    assert vmap.new_size == 5 + 6  # the specials and the six ids seen
    assert measure.saved_size_mb(small) < measure.saved_size_mb(quantize.int8_dynamic(model))
    assert not any(isinstance(m, torch.nn.Embedding) for m in small.modules())  # every table int8
    batch = tok(["1 2 6", "4"], return_tensors="pt")
    with torch.no_grad():
        want = quantize.int8_dynamic(model)(**batch).logits  # same int8 model, full table
        torch.testing.assert_close(small(**batch).logits, want, rtol=0, atol=1e-5)
        unseen = tok(["40 41"], return_tensors="pt")  # tokens never seen: [UNK], still runs
        assert torch.isfinite(small(**unseen).logits).all()
    assert next(model.parameters()).dtype == torch.float32 and isinstance(
        model.bert.embeddings.word_embeddings, torch.nn.Embedding
    )  # the input is unchanged


def test_compact_lean_runs_the_same_table_with_one_qkv_product():
    from dlbook import lean, quantize

    model, tok = _tiny_classifier(), _Tok()
    texts = ["1 2 3", "3 4 5 6"]
    plain, _ = combined.compact(model, tok, texts)
    fast, vmap = combined.compact(model, tok, texts, lean=True)
    assert isinstance(fast, lean.LeanClassifier) and vmap.new_size == 5 + 6
    assert all(layer.qkv.weight().shape[0] == 3 * model.config.hidden_size for layer in fast.layers)
    batch = tok(["1 2 6", "4", "40 41"], return_tensors="pt")  # the last: unseen tokens
    small, vmap2 = prune.prune_vocabulary(model, tok, texts)
    by_hand = quantize.int8_dynamic(lean.lean_classifier(vmap2.wrap(small.eval())))
    with torch.no_grad():  # the same steps by hand give the same numbers
        torch.testing.assert_close(fast(**batch).logits, by_hand(**batch).logits, rtol=0, atol=0)
        want = plain(**batch).logits  # the Hugging Face int8 model: close
        scale = float(want.abs().max())
        torch.testing.assert_close(fast(**batch).logits, want, rtol=0, atol=0.1 * scale)
    with pytest.raises(TypeError, match="lean must be True or False"):
        combined.compact(model, tok, texts, lean="yes")


def test_compact_refuses_other_models():
    with pytest.raises(TypeError, match="Hugging Face"):
        combined.compact(torch.nn.Linear(2, 2), _Tok(), ["1"])


def test_compact_onnx_matches_the_float_model_and_is_smaller(tmp_path):
    from dlbook import ort

    model, tok = _tiny_classifier(), _Tok()
    texts = ["1 2 3", "3 4 5 6"]
    session, vmap = combined.compact_onnx(model, tok, texts, tmp_path / "onnx", threads=1)
    assert isinstance(session, ort.OrtClassifier) and vmap.new_size == 5 + 6
    assert (tmp_path / "onnx" / "compact-int8.onnx").is_file()
    assert session.size_mb() < ort.onnx_size_mb(tmp_path / "onnx" / "compact-fp32.onnx")
    batch = tok(["1 2 6", "4", "40 41"], return_tensors="pt")  # the last: unseen tokens
    with torch.no_grad():
        small, _ = combined.compact(model, tok, texts)
        want = small(**batch).logits  # the PyTorch int8 model with the same table
    got = session(**batch).logits  # (3, 2)
    assert got.shape == (3, 2) and torch.isfinite(got).all()
    torch.testing.assert_close(got, want, rtol=0, atol=0.05)  # two int8 engines, close
    assert next(model.parameters()).dtype == torch.float32  # the input is unchanged


def test_compact_onnx_refuses_other_models(tmp_path):
    with pytest.raises(TypeError, match="Hugging Face"):
        combined.compact_onnx(torch.nn.Linear(2, 2), _Tok(), ["1"], tmp_path, threads=1)
