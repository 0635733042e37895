"""The book's one training loop (dlbook.loop) against the loops it replaced, written out here.

Every wrapper must give bit-for-bit the weights and losses of its former hand-written loop (same
RNG use, reductions, schedule and clipping): ``torch.equal``, not a tolerance.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dlbook import charlm, loop
from dlbook import seq2seq as s2
from dlbook.nn.transformer import EncoderDecoder
from dlbook.train import fit, tensor_loader, warmup_scheduler


def _same_weights(a: nn.Module, b: nn.Module) -> None:
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name


def _mlp() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 2))


def test_fit_equals_the_chapter_2_loop():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 5, generator=g)
    y = (x[:, 0] > 0).long()
    ours, packaged = _mlp(), _mlp()
    opt = torch.optim.AdamW(ours.parameters(), lr=3e-2)
    sched = warmup_scheduler(opt, warmup_steps=3, total_steps=24)
    torch.manual_seed(5)
    losses, loader = [], tensor_loader(x[:64], y[:64], 11, shuffle=True, seed=3)
    for _ in range(4):
        ours.train()
        total, n = 0.0, 0
        for xb, yb in loader:
            loss = F.cross_entropy(ours(xb), yb)
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(ours.parameters(), 0.5)
            opt.step()
            sched.step()
            total, n = total + loss.item() * len(yb), n + len(yb)
        losses.append(total / n)
    opt2 = torch.optim.AdamW(packaged.parameters(), lr=3e-2)
    torch.manual_seed(5)
    h = fit(
        packaged,
        tensor_loader(x[:64], y[:64], 11, shuffle=True, seed=3),
        tensor_loader(x[64:], y[64:], 8, shuffle=False),
        optimizer=opt2,
        epochs=4,
        device="cpu",
        grad_clip=0.5,
        scheduler=warmup_scheduler(opt2, warmup_steps=3, total_steps=24),
        show_progress=False,
    )
    assert h.train_loss == losses and h.epochs == 4 and len(h.step_loss) == 4 * 6
    assert packaged.training  # fit hands the model back in training mode, as it always did
    _same_weights(ours, packaged)


def test_char_lm_equals_its_former_loop():
    v = charlm.CharVocab()
    names = ["anna", "anne", "annie", "ann", "hanna", "hannah", "bob", "bobby"] * 3

    def model() -> nn.Module:
        torch.manual_seed(0)
        return charlm.RecurrentLM(len(v), 8, 16, cell="gru", num_layers=2, dropout=0.2)

    ours = model()
    torch.manual_seed(3)
    gen = torch.Generator().manual_seed(3)
    opt = torch.optim.Adam(ours.parameters(), lr=0.02)
    losses, norms = [], []
    for _ in range(2):
        ours.train()
        for inputs, targets, mask in charlm.make_batches(names, v, 5, shuffle=True, generator=gen):
            loss = charlm.batch_nll(ours, inputs, targets, v) / mask.sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            norms.append(float(nn.utils.clip_grad_norm_(ours.parameters(), 1.0)))
            opt.step()
            losses.append(loss.item())
    packaged = model()
    h = charlm.train_char_lm(
        packaged, names, names[:6], v, epochs=2, batch_size=5, lr=0.02, device="cpu", seed=3, grad_clip=1.0, show_progress=False
    )
    assert h.step_loss == losses and h.grad_norm == norms and h.val_epoch == [0, 1, 2]
    _same_weights(ours, packaged)


def test_seq2seq_equals_its_former_loop():
    vocab = s2.CharVocab()
    splits = s2.make_date_splits(60, 8, 1, seed=0, formats=["yyyy.mm.dd"])
    (src, tgt), val = (s2.encode_examples(splits[k], vocab) for k in ("train", "validation"))

    def model() -> nn.Module:
        torch.manual_seed(0)
        return EncoderDecoder(len(vocab), len(vocab), d_model=16, n_heads=2, d_ff=32, max_len=16)

    ours = model()
    opt = torch.optim.AdamW(ours.parameters(), lr=3e-3, weight_decay=0.01)
    sched = warmup_scheduler(opt, warmup_steps=0, total_steps=2 * 3)
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(2):
        ours.train()
        order = torch.randperm(len(src), generator=gen)
        for i in range(0, len(src), 20):
            idx = order[i : i + 20]
            loss = s2.teacher_forcing_loss(ours, src[idx], tgt[idx])
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(ours.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(loss.item())
    packaged = model()
    h = s2.train_seq2seq(packaged, (src, tgt), val, vocab, epochs=2, batch_size=20, lr=3e-3, show_progress=False)
    assert h.step_loss == losses
    if h.best_epoch == 1:  # the best epoch's weights come back: the last one's here
        _same_weights(ours, packaged)


def test_accumulation_with_a_group_denominator_equals_one_big_batch():
    torch.manual_seed(0)
    x, y = torch.randn(8, 3), torch.tensor([0, 1, 1, 0, 1, 1, 1, 0])
    a, b = nn.Linear(3, 2), nn.Linear(3, 2)
    b.load_state_dict(a.state_dict())
    big = loop.TrainStep(a, lambda m, batch: F.cross_entropy(m(batch[0]), batch[1]), torch.optim.SGD(a.parameters(), lr=0.1))
    parts = loop.TrainStep(
        b,
        lambda m, batch: F.cross_entropy(m(batch[0]), batch[1], reduction="sum"),
        torch.optim.SGD(b.parameters(), lr=0.1),
        denominator=lambda group: 8.0,
    )
    la, _ = big([(x, y)])
    lb, _ = parts([(x[:3], y[:3]), (x[3:], y[3:])])
    assert lb == pytest.approx(la, rel=1e-6)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb)


def test_early_stopping_and_history():
    stop = loop.EarlyStopping(2, restore_best=True)
    m = nn.Linear(1, 1)
    assert stop.update({"loss": 1.0}, m, 0) and not stop.should_stop
    with torch.no_grad():
        m.weight.add_(1.0)
    assert not stop.update({"loss": 1.5}, m, 1) and not stop.update({"loss": 1.0}, m, 2) and stop.should_stop
    stop.restore(m)
    assert stop.best_index == 0 and torch.equal(m.weight, stop.state["weight"])
    h = loop.History(evals=[{"epoch": 1, "step": 4, "loss": 2.0}, {"epoch": 2, "step": 8, "loss": 1.0}], best=1)
    assert h.val_loss == [2.0, 1.0] and h.best_step == 8 and h.best_val_loss == 1.0 and h.val_epoch == [1, 2]
    assert h.to_dict()["best_step"] == 8
    with pytest.raises(ValueError, match="patience"):
        loop.EarlyStopping(0)


def test_a_non_finite_loss_stops_with_where():
    m = nn.Linear(2, 2)
    step = loop.TrainStep(m, lambda model, batch: model(batch[0]).sum() * math.inf, torch.optim.SGD(m.parameters(), lr=1))
    with pytest.raises(FloatingPointError, match="epoch 1, batch 1"):
        loop.train_loop(step, [(torch.ones(1, 2), torch.zeros(1, dtype=torch.long))], epochs=1, show_progress=False)
    with pytest.raises(ValueError, match="evaluate"):
        loop.train_loop(step, [], epochs=1, eval_every=2, show_progress=False)
