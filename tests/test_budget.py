"""Tests of dlbook.budget (chapter 10): the budget loop against chapter 9's loop and against one big batch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dlbook import budget
from dlbook import finetune as ft

transformers = pytest.importorskip("transformers")
from transformers import BertConfig, BertForSequenceClassification  # noqa: E402


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from dlbook.assets import minilm_path

    return AutoTokenizer.from_pretrained(minilm_path())


@pytest.fixture(scope="module")
def data(tokenizer):
    from dlbook.assets import rotten_tomatoes

    raw = rotten_tomatoes()
    return {
        "train": ft.tokenize_dataset(raw["train"].select(range(64)), tokenizer, 24),
        "validation": ft.tokenize_dataset(raw["validation"].select(range(32)), tokenizer, 24),
    }


def tiny_model(seed: int = 0, dropout: float = 0.1) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    cfg = BertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=2,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    return BertForSequenceClassification(cfg)


def test_defaults_equal_chapter_9_loop(data, tokenizer):
    kw = dict(epochs=1, batch_size=16, lr=1e-3, seed=2, show_progress=False)
    a, b = tiny_model(), tiny_model()
    ha = ft.train_classifier(a, data["train"], tokenizer, **kw)
    hb = budget.train_budget(b, data["train"], tokenizer, device="cpu", **kw)
    assert hb.total_steps == ha.total_steps == 4
    torch.testing.assert_close(torch.tensor(hb.step_loss), torch.tensor(ha.step_loss))
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(pb, pa, msg=name)


def test_group_by_length_is_seeded_and_changes_only_the_batches(data, tokenizer):
    kw = dict(epochs=1, batch_size=4, lr=1e-3, seed=2, show_progress=False, device="cpu")
    runs = [budget.train_budget(tiny_model(), data["train"], tokenizer, group_by_length=g, **kw) for g in (True, True, False)]
    assert runs[0].step_loss == runs[1].step_loss
    assert runs[0].step_loss != runs[2].step_loss
    assert runs[0].total_steps == runs[2].total_steps == 16


def test_group_loss_gradient_equals_big_batch():
    torch.manual_seed(0)
    w = torch.randn(5, 3, requires_grad=True)
    x, y = torch.randn(11, 5), torch.randint(0, 3, (11,))
    cw = torch.tensor([1.0, 4.0, 0.5])
    for weight in (None, cw):
        big = torch.autograd.grad(F.cross_entropy(x @ w, y, weight=weight), w)[0]
        denom = float(weight[y].sum()) if weight is not None else 11.0
        acc = torch.zeros_like(w)
        for part in (slice(0, 4), slice(4, 8), slice(8, 11)):  # unequal micro-batches
            acc += torch.autograd.grad(budget.weighted_group_loss(x[part] @ w, y[part], weight, denom), w)[0]
        torch.testing.assert_close(acc, big)
    # the naive way, averaging the micro-batch means, is not the same with unequal sizes
    parts = (slice(0, 4), slice(4, 8), slice(8, 11))
    naive = sum(torch.autograd.grad(F.cross_entropy(x[p] @ w, y[p]) / 3, w)[0] for p in parts)
    assert not torch.allclose(naive, torch.autograd.grad(F.cross_entropy(x @ w, y), w)[0])


def test_accumulation_equals_big_batch_without_dropout(data, tokenizer):
    kw = dict(epochs=1, lr=1e-3, seed=0, show_progress=False, device="cpu")
    a, b = tiny_model(dropout=0.0), tiny_model(dropout=0.0)
    budget.train_budget(a, data["train"], tokenizer, batch_size=32, **kw)
    hb = budget.train_budget(b, data["train"], tokenizer, batch_size=8, accumulation_steps=4, **kw)
    assert hb.total_steps == 2
    # the micro-batches pad differently, so equal up to float rounding
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(pb, pa, rtol=1e-4, atol=1e-5, msg=name)


def test_checkpointing_changes_nothing(data, tokenizer):
    kw = dict(epochs=1, batch_size=16, lr=1e-3, seed=0, show_progress=False, device="cpu")
    a, b = tiny_model(), tiny_model()
    ha = budget.train_budget(a, data["train"], tokenizer, **kw)
    hb = budget.train_budget(b, data["train"], tokenizer, checkpointing=True, **kw)
    assert ha.step_loss == hb.step_loss
    assert not b.is_activation_checkpointing  # switched off again


def test_checkpointing_switches_the_cache_off_while_training(data, tokenizer):
    model = tiny_model()
    assert model.config.use_cache  # BertConfig's default
    seen = []
    model.register_forward_pre_hook(lambda module, args: seen.append(module.config.use_cache))
    kw = dict(epochs=1, batch_size=32, lr=1e-3, seed=0, show_progress=False, device="cpu")
    budget.train_budget(model, data["train"], tokenizer, checkpointing=True, **kw)
    assert seen and not any(seen)  # off at every training step
    assert model.config.use_cache  # and put back afterwards
    budget.train_budget(model, data["train"], tokenizer, **kw)
    assert len(seen) > 2 and all(seen[2:])  # without checkpointing: untouched
    budget.make_train_step(model, _fixed_batch(data, tokenizer), checkpointing=True)
    assert not model.config.use_cache  # left off with the checkpointing (the benchmark's model)


def test_checkpointing_without_use_cache_in_the_config():
    class Stub(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.config, self.calls = type("Config", (), {})(), []

        def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs):
            self.calls.append(gradient_checkpointing_kwargs)

    stub = Stub()
    assert budget._enable_checkpointing(stub) is None
    assert stub.calls == [{"use_reentrant": False}] and not hasattr(stub.config, "use_cache")
    with pytest.raises(TypeError, match="checkpointing needs"):
        budget._enable_checkpointing(torch.nn.Linear(2, 2))


def test_freezing_and_memory(data, tokenizer):
    m = tiny_model()
    frozen = {n: p.clone() for n, p in m.named_parameters() if n.startswith("bert.embeddings")}
    h = budget.train_budget(
        m,
        data["train"],
        tokenizer,
        batch_size=16,
        max_steps=2,
        lr=1e-3,
        show_progress=False,
        trainable=lambda n: not n.startswith("bert.embeddings"),
        measure_memory=True,
        device="cpu",
    )
    for n, p in m.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n])
    assert len(h.step_loss) == 2 and h.peak_bytes > 0 and h.memory_method
    full = budget.train_budget(
        tiny_model(),
        data["train"],
        tokenizer,
        batch_size=16,
        max_steps=1,
        lr=1e-3,
        show_progress=False,
        measure_memory=True,
        device="cpu",
    )
    assert full.peak_bytes > h.peak_bytes  # the embeddings' gradients and AdamW state are gone


def test_bf16_autocast_runs_and_keeps_fp32_weights(data, tokenizer):
    m = tiny_model()
    h = budget.train_budget(
        m, data["train"], tokenizer, batch_size=16, max_steps=2, lr=1e-3, precision="bf16", show_progress=False, device="cpu"
    )
    assert h.precision == "bf16" and all(torch.isfinite(torch.tensor(h.step_loss)))
    assert all(p.dtype == torch.float32 for p in m.parameters())


def test_early_stopping_restores_best(data, tokenizer):
    m = tiny_model()
    h = budget.train_budget(
        m,
        data["train"],
        tokenizer,
        epochs=6,
        batch_size=16,
        lr=5e-3,
        show_progress=False,
        eval_dataset=data["validation"],
        eval_every=1,
        patience=2,
        device="cpu",
    )
    best = min(e["loss"] for e in h.evals)
    assert h.best_step == next(e["step"] for e in h.evals if e["loss"] == best)
    now = ft.evaluate_classifier(m, data["validation"], tokenizer).loss
    assert now == pytest.approx(best, rel=1e-6)
    if h.stopped_early:
        assert len(h.evals) - [e["step"] for e in h.evals].index(h.best_step) - 1 == 2


def test_class_weights_change_the_loss(data, tokenizer):
    kw = dict(batch_size=16, max_steps=1, lr=1e-3, show_progress=False, device="cpu")
    plain = budget.train_budget(tiny_model(), data["train"], tokenizer, **kw)
    weighted = budget.train_budget(tiny_model(), data["train"], tokenizer, class_weights=torch.tensor([3.0, 1.0]), **kw)
    assert plain.step_loss != weighted.step_loss


def test_resolve_precision():
    assert budget.resolve_precision("auto", "cpu") == "bf16"
    assert budget.resolve_precision("fp32", "cpu") == "fp32"
    assert budget.resolve_precision("auto", "mps") == "fp16"
    with pytest.raises(ValueError, match="precision"):
        budget.resolve_precision("fp8", "cpu")


def test_bad_input(data, tokenizer):
    kw = dict(batch_size=16, show_progress=False, device="cpu")
    with pytest.raises(ValueError, match="accumulation_steps"):
        budget.train_budget(tiny_model(), data["train"], tokenizer, accumulation_steps=0, **kw)
    with pytest.raises(ValueError, match="early stopping"):
        budget.train_budget(tiny_model(), data["train"], tokenizer, patience=2, **kw)
    with pytest.raises(ValueError, match="nothing to train"):
        budget.train_budget(tiny_model(), data["train"], tokenizer, trainable=lambda n: False, **kw)
    with pytest.raises(ValueError, match="logits"):
        budget.weighted_group_loss(torch.zeros(3), torch.zeros(3, dtype=torch.long), None, 3.0)


def _fixed_batch(data, tokenizer, n=8):
    train = data["train"]
    return ft.make_loader(train, tokenizer, n).collate_fn([train[i] for i in range(n)])


def test_make_train_step_accumulation_equals_one_batch(data, tokenizer):
    batch = _fixed_batch(data, tokenizer)
    states = []
    for k in (1, 4):
        model = tiny_model(dropout=0.0)
        step = budget.make_train_step(model, batch, accumulation_steps=k, lr=1e-3)
        loss = step()
        assert loss > 0
        states.append({n: p.detach().clone() for n, p in model.named_parameters()})
    for name in states[0]:
        torch.testing.assert_close(states[1][name], states[0][name], rtol=1e-4, atol=1e-6, msg=name)


def test_make_train_step_moves_only_trainable_weights(data, tokenizer):
    model = tiny_model(dropout=0.0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    budget.make_train_step(model, _fixed_batch(data, tokenizer), trainable=lambda n: n.startswith("classifier"), lr=1e-2)()
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]) != name.startswith("classifier"), name


def test_make_train_step_rejects_bad_input(data, tokenizer):
    batch = _fixed_batch(data, tokenizer)
    with pytest.raises(ValueError, match="must divide"):
        budget.make_train_step(tiny_model(), batch, accumulation_steps=3)
    with pytest.raises(ValueError, match="labels"):
        budget.make_train_step(tiny_model(), {k: v for k, v in batch.items() if k != "labels"})
    with pytest.raises(ValueError, match="accumulation_steps"):
        budget.make_train_step(tiny_model(), batch, accumulation_steps=0)


def test_model_bytes_counts_parameters_and_buffers():
    model = tiny_model()
    expected = sum(p.numel() * 4 for p in model.parameters()) + sum(b.numel() * b.element_size() for b in model.buffers())
    assert budget.model_bytes(model) == expected
    with pytest.raises(TypeError):
        budget.model_bytes("model")
