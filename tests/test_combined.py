"""The distilled + pruned student of chapter 15 (dlbook.combined)."""

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
    monkeypatch.setitem(ft.SENTIMENT_SETTINGS, "smoke",
                        ft.FinetuneSettings(n_train=16, n_validation=8, max_length=16, epochs=1, batch_size=8, lr=1e-4))
    layers = dataclasses.replace(distill.STUDENT_SETTINGS["smoke"]["layers"], n_train=16, max_length=16, batch_size=8)
    monkeypatch.setitem(distill.STUDENT_SETTINGS["smoke"], "layers", layers)
    monkeypatch.setitem(combined.PRUNED_STUDENT_SETTINGS, "smoke",
                        combined.PrunedStudentSettings(keep_heads=4, keep_neurons=100, n_importance=8, epochs=1, lr=1e-4))
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
    assert info1["student"] == json.loads(json.dumps(distill.student_key("smoke", "layers", True, "cpu")))


def test_pruned_student_bad_profile():
    with pytest.raises(ValueError, match="profile"):
        combined.pruned_student("medium")


def test_settings_keep_fewer_neurons_than_the_teacher_has():
    for s in combined.PRUNED_STUDENT_SETTINGS.values():
        assert 1 <= s.keep_heads <= 12 and 1 <= s.keep_neurons < 1536
