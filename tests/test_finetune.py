"""Tests of dlbook.finetune (chapter 9): against scikit-learn, sentence-transformers and Trainer."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dlbook import finetune as ft

transformers = pytest.importorskip("transformers")
from transformers import BertConfig, BertForSequenceClassification  # noqa: E402


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from dlbook.assets import minilm_path

    return AutoTokenizer.from_pretrained(minilm_path())


@pytest.fixture(scope="module")
def raw():
    from dlbook.assets import rotten_tomatoes

    data = rotten_tomatoes()
    return {"train": data["train"].select(range(96)), "validation": data["validation"].select(range(40))}


@pytest.fixture(scope="module")
def tokenized(raw, tokenizer):
    return {k: ft.tokenize_dataset(v, tokenizer, 32) for k, v in raw.items()}


def tiny_config(**kw) -> BertConfig:
    base = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, num_labels=2)
    return BertConfig(**{**base, **kw})


def tiny_model(seed: int = 0, **kw) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    return BertForSequenceClassification(tiny_config(**kw))


# ------------------------------------------------------------------------------------------ data


def test_tokenize_dataset_columns_and_no_padding(raw, tokenizer, tokenized):
    ds = tokenized["train"]
    assert set(ds.column_names) == {"labels", "input_ids", "token_type_ids", "attention_mask"}
    lengths = [len(x) for x in ds["input_ids"]]
    assert max(lengths) <= 32 and len(set(lengths)) > 1  # truncated, not padded
    assert list(ds["labels"]) == list(raw["train"]["label"])
    want = tokenizer(raw["train"][0]["text"], truncation=True, max_length=32)["input_ids"]
    assert ds[0]["input_ids"] == want


def test_tokenize_dataset_rejects_bad_input(raw, tokenizer):
    with pytest.raises(ValueError, match="columns"):
        ft.tokenize_dataset(raw["train"], tokenizer, 32, text_column="review")
    with pytest.raises(ValueError, match="max_length"):
        ft.tokenize_dataset(raw["train"], tokenizer, 1)


def test_make_loader_pads_per_batch_and_is_seeded(tokenized, tokenizer):
    ds = tokenized["train"]
    batch = next(iter(ft.make_loader(ds, tokenizer, 16)))
    longest = max(len(ds[i]["input_ids"]) for i in range(16))
    assert batch["input_ids"].shape == (16, longest)
    assert batch["attention_mask"].sum().item() == sum(len(ds[i]["input_ids"]) for i in range(16))

    def order(seed):
        return torch.cat([b["labels"] for b in ft.make_loader(ds, tokenizer, 16, shuffle=True, seed=seed)])

    def first_ids(seed):
        return next(iter(ft.make_loader(ds, tokenizer, 16, shuffle=True, seed=seed)))["input_ids"]

    assert torch.equal(first_ids(0), first_ids(0))
    assert not torch.equal(first_ids(0), first_ids(1))
    assert sorted(order(0).tolist()) == sorted(ds["labels"])
    # a loader never touches the global generator
    state = torch.get_rng_state()
    list(ft.make_loader(ds, tokenizer, 16))
    assert torch.equal(state, torch.get_rng_state())
    with pytest.raises(ValueError):
        ft.make_loader(ds, tokenizer, 0)


def test_make_loader_group_by_length(tokenized, tokenizer, raw):
    ds = tokenized["train"]
    n_real = sum(len(ids) for ids in ds["input_ids"])

    def padded_tokens(group):
        loader = ft.make_loader(ds, tokenizer, 8, shuffle=True, seed=0, group_by_length=group)
        return sum(b["attention_mask"].numel() for b in loader)

    def rows(seed):  # (length, label) of every example, in the loader's order
        loader = ft.make_loader(ds, tokenizer, 8, shuffle=True, seed=seed, group_by_length=True)
        return [(int(m.sum()), int(y)) for b in loader for m, y in zip(b["attention_mask"], b["labels"], strict=True)]

    # every example once, far less padding than random batches, seeded
    assert sorted(rows(0)) == sorted((len(ids), y) for ids, y in zip(ds["input_ids"], ds["labels"], strict=True))
    assert n_real <= padded_tokens(True) < padded_tokens(False)
    counts = ft.batch_token_counts(ft.make_loader(ds, tokenizer, 8, shuffle=True, seed=0, group_by_length=True))
    assert counts.shape == (len(ds) // 8, 2) and counts[:, 0].sum() == n_real
    assert counts[:, 1].sum() == padded_tokens(True) and (counts[:, 1] >= counts[:, 0]).all()
    with pytest.raises(ValueError, match="attention_mask"):
        ft.batch_token_counts([{"input_ids": torch.zeros(2, 3)}])
    assert rows(0) == rows(0) and rows(0) != rows(1)
    # inside a mega-batch the batches come sorted longest first
    first = rows(0)[:8]
    assert [n for n, _ in first] == sorted((n for n, _ in first), reverse=True)
    # the second epoch of the same loader is a new order
    loader = ft.make_loader(ds, tokenizer, 8, shuffle=True, seed=0, group_by_length=True)
    epochs = [torch.cat([b["labels"] for b in loader]) for _ in range(2)]
    assert not torch.equal(epochs[0], epochs[1]) or len(set(ds["labels"])) == 1
    state = torch.get_rng_state()
    list(loader)
    assert torch.equal(state, torch.get_rng_state())
    with pytest.raises(ValueError, match="shuffle=True"):
        ft.make_loader(ds, tokenizer, 8, group_by_length=True)
    with pytest.raises(ValueError, match="input_ids"):
        ft.make_loader(raw["train"], tokenizer, 8, shuffle=True, group_by_length=True)


# ---------------------------------------------------------------------------------- training


def test_decay_parameter_names_match_trainer():
    from transformers import Trainer

    model = tiny_model()
    ours = set(ft.decay_parameter_names(model))
    theirs = set(Trainer.get_decay_parameter_names(None, model))  # uses only its model argument
    assert ours == theirs
    assert "classifier.weight" in ours and "classifier.bias" not in ours
    assert not any("LayerNorm" in n for n in ours)


def test_make_optimizer_fused_is_the_same_update():
    models = [tiny_model().eval() for _ in range(2)]  # eval: no dropout, the same forward in both
    models[1].load_state_dict(models[0].state_dict())
    x = torch.randint(0, 100, (4, 7))
    optimizers = [ft.make_optimizer(m, 1e-2, 0.01, fused=f) for m, f in zip(models, (False, True), strict=True)]
    assert optimizers[1].defaults["fused"] and not optimizers[0].defaults["fused"]
    for _ in range(3):
        for m, opt in zip(models, optimizers, strict=True):
            m(input_ids=x).logits.square().sum().backward()
            opt.step()
            opt.zero_grad()
    for a, b in zip(models[0].parameters(), models[1].parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)  # a step moves a weight by ~lr = 1e-2
    with pytest.raises(TypeError, match="fused"):
        ft.make_optimizer(models[0], 1e-2, 0.01, fused="yes")


def test_train_classifier_schedule_and_determinism(tokenized, tokenizer):
    kw = dict(epochs=2, batch_size=16, lr=1e-3, warmup_ratio=0.1, seed=3, show_progress=False)
    m1, m2, m3 = tiny_model(), tiny_model(), tiny_model()
    before = {k: v.clone() for k, v in m1.state_dict().items()}
    h1 = ft.train_classifier(m1, tokenized["train"], tokenizer, eval_dataset=tokenized["validation"], **kw)
    h2 = ft.train_classifier(m2, tokenized["train"], tokenizer, eval_dataset=tokenized["validation"], **kw)
    h3 = ft.train_classifier(m3, tokenized["train"], tokenizer, **{**kw, "seed": 4})
    total = 2 * math.ceil(96 / 16)
    warm = math.ceil(0.1 * total)
    assert (h1.total_steps, h1.warmup_steps, len(h1.step_loss)) == (total, warm, total)
    want_lr = [1e-3 * (t / warm if t < warm else (total - t) / (total - warm)) for t in range(total)]
    np.testing.assert_allclose(h1.step_lr, want_lr, rtol=1e-6, atol=1e-12)
    assert [e["epoch"] for e in h1.evals] == [1, 2]
    assert h1.step_loss == h2.step_loss and h1.evals == h2.evals  # same seed, same run
    for k, v in m1.state_dict().items():
        torch.testing.assert_close(v, m2.state_dict()[k], rtol=0, atol=0)
    assert h1.step_loss != h3.step_loss  # another seed, another order and dropout
    assert any(not torch.equal(v, before[k]) for k, v in m1.state_dict().items())
    assert not m1.training


def test_train_classifier_learns_an_easy_task(tokenizer):
    import datasets

    texts = ["good good great"] * 32 + ["bad bad awful"] * 32
    labels = [1] * 32 + [0] * 32
    ds = ft.tokenize_dataset(datasets.Dataset.from_dict({"text": texts, "label": labels}), tokenizer, 8)
    model = tiny_model(hidden_dropout_prob=0.0)
    ft.train_classifier(model, ds, tokenizer, epochs=3, batch_size=8, lr=3e-3, show_progress=False)
    assert ft.evaluate_classifier(model, ds, tokenizer).accuracy == 1.0


def test_train_classifier_rejects_bad_input(tokenized, tokenizer, raw):
    with pytest.raises(ValueError, match="labels"):
        ft.train_classifier(tiny_model(), raw["train"], tokenizer, epochs=1, batch_size=8, lr=1e-3)
    with pytest.raises(ValueError, match="epochs"):
        ft.train_classifier(tiny_model(), tokenized["train"], tokenizer, epochs=0, batch_size=8, lr=1e-3)
    with pytest.raises(ValueError, match="warmup"):
        ft.train_classifier(tiny_model(), tokenized["train"], tokenizer, epochs=1, batch_size=8, lr=1e-3, warmup_ratio=1.0)


# -------------------------------------------------------------------------------- evaluation


def test_evaluate_classifier_matches_direct_forward_and_sklearn(tokenized, tokenizer):
    from sklearn.metrics import accuracy_score, f1_score, log_loss

    model = tiny_model().eval()
    ds = tokenized["validation"]
    res = ft.evaluate_classifier(model, ds, tokenizer, batch_size=7)
    with torch.no_grad():  # one example at a time, in dataset order, no padding at all
        logits = torch.cat(
            [
                model(**{k: torch.tensor([ds[i][k]]) for k in ("input_ids", "token_type_ids", "attention_mask")}).logits
                for i in range(len(ds))
            ]
        )
    torch.testing.assert_close(res.logits, logits, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(res.probs, logits.softmax(-1), atol=1e-5, rtol=1e-4)
    y = np.array(ds["labels"])
    assert torch.equal(res.labels, torch.as_tensor(y))
    assert res.accuracy == pytest.approx(accuracy_score(y, res.preds.numpy()))
    assert res.f1 == pytest.approx(f1_score(y, res.preds.numpy()))
    p = res.probs.double()
    assert res.loss == pytest.approx(log_loss(y, (p / p.sum(1, keepdim=True)).numpy()), rel=1e-4)
    from sklearn.metrics import confusion_matrix

    assert res.confusion().tolist() == confusion_matrix(y, res.preds.numpy()).tolist()
    assert model.training is False


def test_binary_f1_against_sklearn():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    for _ in range(20):
        y, p = rng.integers(0, 2, 30), rng.integers(0, 2, 30)
        assert ft.binary_f1(p, y) == pytest.approx(f1_score(y, p))
        assert ft.binary_f1(p, y, positive=0) == pytest.approx(f1_score(y, p, pos_label=0))
    assert ft.binary_f1(np.zeros(5, int), np.zeros(5, int)) == 0.0
    with pytest.raises(ValueError):
        ft.binary_f1(np.zeros(4), np.zeros(5))


def test_compute_metrics():
    logits = np.array([[2.0, -1.0], [0.0, 1.0], [0.3, 0.1], [-1.0, 3.0]])
    labels = np.array([0, 1, 1, 0])
    m = ft.compute_metrics((logits, labels))
    assert m["accuracy"] == 0.5 and m["f1"] == pytest.approx(0.5)


# ------------------------------------------------------------------------------- calibration


def test_calibration_bins_match_sklearn():
    from sklearn.calibration import calibration_curve

    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(2 * torch.randn(500, 2, generator=g), -1)
    labels = torch.randint(0, 2, (500,), generator=g)
    bins = ft.calibration_bins(probs, labels, 10)
    conf, pred = probs.max(-1)
    correct = (pred == labels).numpy().astype(int)
    frac, mean_conf = calibration_curve(correct, conf.double().numpy(), n_bins=10, strategy="uniform")
    full = bins["count"] > 0
    np.testing.assert_allclose(bins["accuracy"][full].numpy(), frac, rtol=1e-10)
    np.testing.assert_allclose(bins["confidence"][full].numpy(), mean_conf, rtol=1e-10)
    assert bins["count"].sum() == 500 and bins["count"][:5].sum() == 0  # two classes: confidence >= 0.5


def test_expected_calibration_error_by_hand():
    probs = torch.tensor([[0.05, 0.95], [0.1, 0.9], [0.35, 0.65], [0.4, 0.6]])
    labels = torch.tensor([1, 0, 1, 1])
    # bin (0.9, 1.0]: conf 0.95, acc 1; bin (0.8, 0.9]: conf 0.9, acc 0; bin (0.6, 0.7]: conf 0.65, acc 1;
    # bin (0.5, 0.6]: conf 0.6, acc 1
    want = (0.05 + 0.9 + 0.35 + 0.4) / 4
    assert ft.expected_calibration_error(probs, labels, 10) == pytest.approx(want)
    perfect = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    assert ft.expected_calibration_error(perfect, torch.tensor([1, 0])) == pytest.approx(0.0)
    with pytest.raises(ValueError):
        ft.calibration_bins(probs, labels[:3])


# --------------------------------------------------------------------------- the cached model


def test_settings_validate():
    with pytest.raises(ValueError):
        ft.FinetuneSettings(n_train=0, n_validation=None, max_length=64, epochs=1, batch_size=8, lr=1e-4)
    with pytest.raises(ValueError):
        ft.FinetuneSettings(n_train=None, n_validation=None, max_length=64, epochs=1, batch_size=8, lr=1e-4, warmup_ratio=1.5)
    assert set(ft.SENTIMENT_SETTINGS) == {"smoke", "full"}


def test_cache_root_and_key(monkeypatch, tmp_path):
    monkeypatch.setenv("DLBOOK_CACHE", str(tmp_path / "c"))
    assert ft.cache_root() == tmp_path / "c"
    monkeypatch.delenv("DLBOOK_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert ft.cache_root() == tmp_path / "x" / "dlbook"
    smoke, _ = ft.sentiment_key("smoke", "cpu")
    full, described = ft.sentiment_key("full", "cpu")
    assert smoke.startswith("sentiment-smoke-") and full.startswith("sentiment-full-") and smoke[-12:] != full[-12:]
    assert described["versions"]["torch"] == torch.__version__
    assert ft.sentiment_key("smoke", "cpu") == ft.sentiment_key("smoke", "cpu")
    with pytest.raises(ValueError, match="profile"):
        ft.sentiment_key("medium")


def test_sentiment_classifier_trains_once_then_loads(monkeypatch, tmp_path):
    tiny = ft.FinetuneSettings(n_train=16, n_validation=8, max_length=16, epochs=1, batch_size=8, lr=1e-4)
    monkeypatch.setitem(ft.SENTIMENT_SETTINGS, "smoke", tiny)
    monkeypatch.setenv("DLBOOK_CACHE", str(tmp_path))
    torch.manual_seed(123)
    state = torch.get_rng_state()
    m1, tok, info1 = ft.sentiment_classifier("smoke", device="cpu")
    assert torch.equal(torch.get_rng_state(), state)  # training did not move the global generator
    assert info1["from_cache"] is False and info1["n_train"] == 16
    assert len(info1["history"]["step_loss"]) == 2 and info1["history"]["evals"][0]["epoch"] == 1
    folders = [p for p in tmp_path.iterdir()]
    assert len(folders) == 1 and folders[0].name == ft.sentiment_key("smoke", "cpu")[0]
    m2, _, info2 = ft.sentiment_classifier("smoke", device="cpu")
    assert info2["from_cache"] is True and info2["history"] == info1["history"]
    for k, v in m1.state_dict().items():
        torch.testing.assert_close(v, m2.state_dict()[k], rtol=0, atol=0)
    assert m1.config.id2label == {0: "neg", 1: "pos"} and not m1.training
    # a fresh cache folder trains again and gets the very same weights
    m3, _, info3 = ft.sentiment_classifier("smoke", cache_dir=tmp_path / "other", device="cpu")
    assert info3["from_cache"] is False
    for k, v in m1.state_dict().items():
        torch.testing.assert_close(v, m3.state_dict()[k], rtol=0, atol=0)
    assert tok("a test")["input_ids"][0] == tok.cls_token_id


def test_new_classifier_is_seeded_and_quiet(capsys, caplog):
    from transformers.utils import logging as hf_logging

    from dlbook.finetune import LABELS, new_classifier

    before = hf_logging.get_verbosity()
    torch.manual_seed(3)
    a = new_classifier()
    torch.manual_seed(3)
    b = new_classifier()
    assert a.config.num_labels == len(LABELS) and a.config.id2label[1] == LABELS[1]
    assert torch.equal(a.classifier.weight, b.classifier.weight)
    out = capsys.readouterr()
    assert "LOAD REPORT" not in out.out + out.err + caplog.text
    assert hf_logging.get_verbosity() == before  # restored for everyone else


def test_new_classifier_takes_config_fields_and_rejects_unknown_ones():
    torch.manual_seed(0)
    a = ft.new_classifier(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    b = ft.new_classifier()
    assert a.config.hidden_dropout_prob == 0.0 and a.config.attention_probs_dropout_prob == 0.0
    assert b.config.hidden_dropout_prob > 0.0
    torch.testing.assert_close(a.classifier.weight, b.classifier.weight)  # same fresh head
    with pytest.raises(ValueError, match="hiden_dropout"):
        ft.new_classifier(hiden_dropout=0.0)
    with pytest.raises(ValueError, match="num_labels"):
        ft.new_classifier(num_labels=3)
    with pytest.raises(ValueError, match="to_dict"):
        ft.new_classifier(to_dict=0)
