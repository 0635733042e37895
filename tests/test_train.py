"""Tests of dlbook.train and dlbook.models (taught in chapter 2)."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dlbook.models import MLP
from dlbook.train import History, count_parameters, evaluate, fit, predict, tensor_loader


def _blobs(n: int = 200, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    centres = torch.tensor([[3.0, 0.0], [-3.0, 0.0], [0.0, 3.0]])
    x = centres[y] + 0.5 * torch.randn(n, 2, generator=g)
    return x, y


# ---------------------------------------------------------------- tensor_loader


def test_make_loader_is_seeded_and_covers_everything():
    x, y = torch.arange(10.0).unsqueeze(1), torch.arange(10)
    order = lambda loader: torch.cat([yb for _, yb in loader]).tolist()  # noqa: E731
    a = order(tensor_loader(x, y, 3, shuffle=True, seed=1))
    torch.manual_seed(123)  # the global RNG must not matter
    b = order(tensor_loader(x, y, 3, shuffle=True, seed=1))
    c = order(tensor_loader(x, y, 3, shuffle=True, seed=2))
    assert a == b
    assert a != c
    assert sorted(a) == list(range(10))
    assert order(tensor_loader(x, y, 4, shuffle=False)) == list(range(10))
    assert [len(yb) for _, yb in tensor_loader(x, y, 4, shuffle=False)] == [4, 4, 2]


def test_make_loader_rejects_bad_input():
    with pytest.raises(ValueError, match="same length"):
        tensor_loader(torch.zeros(5, 2), torch.zeros(4), 2, shuffle=False)
    with pytest.raises(ValueError, match="batch_size"):
        tensor_loader(torch.zeros(5, 2), torch.zeros(5), 0, shuffle=False)
    with pytest.raises(TypeError):
        tensor_loader([1, 2], torch.zeros(2), 1, shuffle=False)


# ---------------------------------------------------------------- evaluate


def test_evaluate_matches_full_batch_computation_and_restores_mode():
    torch.manual_seed(0)
    x, y = _blobs(103)
    model = nn.Sequential(nn.Linear(2, 8), nn.Dropout(0.5), nn.Linear(8, 3))
    model.train()
    loss, acc = evaluate(model, tensor_loader(x, y, 10, shuffle=False), F.cross_entropy, "cpu")
    assert model.training  # mode restored
    model.eval()
    with torch.no_grad():
        logits = model(x)
    assert loss == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-5)  # per example, not per batch
    assert acc == pytest.approx((logits.argmax(1) == y).float().mean().item())


class _Squeeze(nn.Module):
    def forward(self, x):
        return x.sum(1)  # (batch,) instead of (batch, n_classes)


def test_evaluate_rejects_wrong_output_shape():
    x, y = _blobs(10)
    with pytest.raises(ValueError, match="logits"):
        evaluate(_Squeeze(), tensor_loader(x, y, 5, shuffle=False), F.cross_entropy, "cpu")


def test_predict_returns_everything_in_order():
    torch.manual_seed(0)
    x, y = _blobs(23)
    model = nn.Sequential(nn.Linear(2, 8), nn.Dropout(0.5), nn.Linear(8, 3))
    logits, targets = predict(model, tensor_loader(x, y, 5, shuffle=False), "cpu")
    assert model.training
    model.eval()
    torch.testing.assert_close(logits, model(x).detach())
    assert torch.equal(targets, y)
    with pytest.raises(ValueError, match="empty"):
        predict(model, [], "cpu")


# ---------------------------------------------------------------- fit


def _manual_loop(model, x, y, epochs, lr, batch):
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    for _ in range(epochs):
        for xb, yb in tensor_loader(x, y, batch, shuffle=False):
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model


def test_fit_equals_a_hand_written_loop():
    x, y = _blobs(64)
    torch.manual_seed(0)
    a = nn.Linear(2, 3)
    b = nn.Linear(2, 3)
    b.load_state_dict(a.state_dict())
    fit(
        a,
        tensor_loader(x, y, 16, shuffle=False),
        tensor_loader(x, y, 64, shuffle=False),
        optimizer=torch.optim.SGD(a.parameters(), lr=0.1),
        epochs=3,
        device="cpu",
        show_progress=False,
    )
    _manual_loop(b, x, y, 3, 0.1, 16)
    torch.testing.assert_close(a.weight, b.weight)
    torch.testing.assert_close(a.bias, b.bias)


def test_fit_learns_and_records_history():
    x, y = _blobs(300)
    torch.manual_seed(0)
    model = MLP(2, [16], 3)
    h = fit(
        model,
        tensor_loader(x[:200], y[:200], 20, shuffle=True),
        tensor_loader(x[200:], y[200:], 50, shuffle=False),
        optimizer=torch.optim.Adam(model.parameters(), lr=1e-2),
        epochs=5,
        device="cpu",
        show_progress=False,
    )
    assert isinstance(h, History)
    assert h.epochs == 5 and len(h.val_loss) == 5 and len(h.val_acc) == 5
    assert h.train_loss[-1] < h.train_loss[0]
    assert h.val_acc[-1] > 0.95
    assert h.best_epoch == min(range(5), key=h.val_loss.__getitem__)
    assert h.seconds > 0
    ax = h.plot()
    assert len(ax.lines) == 3


class _Scripted(nn.Module):
    """A model whose validation loss follows a script: the bias moves each training step."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return torch.stack([self.w.expand(len(x)), torch.zeros(len(x))], dim=1)


def test_fit_early_stopping_restores_best_weights():
    # Class 0 everywhere: loss falls while w grows. An optimizer that pushes w up then down makes
    # the validation loss fall for two epochs, then rise: early stopping must restore epoch 2's weights.
    x, y = torch.zeros(4, 1), torch.zeros(4, dtype=torch.long)
    model = _Scripted()
    steps = iter([1.0, 1.0, -3.0, -3.0, -3.0, -3.0])

    class Scripted(torch.optim.Optimizer):
        def __init__(self, params):
            super().__init__(params, {})

        def step(self, closure=None):
            with torch.no_grad():
                model.w += next(steps)

    loader = tensor_loader(x, y, 4, shuffle=False)
    h = fit(
        model, loader, loader, optimizer=Scripted(model.parameters()), epochs=6, device="cpu", patience=2, show_progress=False
    )
    assert h.epochs == 4  # epochs 3 and 4 were worse than epoch 2
    assert h.best_epoch == 1
    assert model.w.item() == pytest.approx(2.0)  # the weights of the best epoch are back


def test_fit_without_patience_keeps_last_weights_and_clips():
    x, y = _blobs(32)
    torch.manual_seed(0)
    model = nn.Linear(2, 3)
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    fit(
        model,
        tensor_loader(x, y, 32, shuffle=False),
        tensor_loader(x, y, 32, shuffle=False),
        optimizer=opt,
        epochs=1,
        device="cpu",
        grad_clip=1e-3,
        show_progress=False,
    )
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    # one full-batch SGD step with lr 1: the step is the gradient, clipped to total norm 1e-3
    assert (after - before).norm().item() == pytest.approx(1e-3, rel=1e-3)


def test_fit_steps_the_scheduler_per_batch():
    x, y = _blobs(40)
    model = nn.Linear(2, 3)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    fit(
        model,
        tensor_loader(x, y, 10, shuffle=False),
        tensor_loader(x, y, 40, shuffle=False),
        optimizer=opt,
        epochs=2,
        device="cpu",
        scheduler=sched,
        show_progress=False,
    )
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5**8)


def test_fit_rejects_bad_arguments():
    x, y = _blobs(8)
    model = nn.Linear(2, 3)
    loader = tensor_loader(x, y, 4, shuffle=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="epochs"):
        fit(model, loader, loader, optimizer=opt, epochs=0, device="cpu", show_progress=False)
    with pytest.raises(ValueError, match="patience"):
        fit(model, loader, loader, optimizer=opt, epochs=1, device="cpu", patience=0, show_progress=False)
    with pytest.raises(ValueError, match="grad_clip"):
        fit(model, loader, loader, optimizer=opt, epochs=1, device="cpu", grad_clip=-1.0, show_progress=False)


# ---------------------------------------------------------------- count_parameters and MLP


def test_count_parameters():
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))  # 16 + 10
    assert count_parameters(model) == 26
    model[0].requires_grad_(False)
    assert count_parameters(model) == 10
    assert count_parameters(model, trainable_only=False) == 26
    with pytest.raises(TypeError):
        count_parameters(torch.zeros(3))


def test_mlp_shapes_parameters_and_layers():
    model = MLP(784, [32, 16], 10, dropout=0.2)
    out = model(torch.zeros(5, 1, 28, 28))
    assert out.shape == (5, 10)
    assert count_parameters(model) == 784 * 32 + 32 + 32 * 16 + 16 + 16 * 10 + 10
    assert sum(isinstance(m, nn.Dropout) for m in model.modules()) == 2
    assert sum(isinstance(m, nn.Dropout) for m in MLP(4, [3], 2).modules()) == 0
    assert MLP(4, [], 2)(torch.zeros(1, 4)).shape == (1, 2)  # no hidden layer: logistic regression


def test_mlp_equals_the_explicit_formula():
    torch.manual_seed(0)
    model = MLP(6, [5], 3)
    x = torch.randn(4, 2, 3)
    l1, l2 = model.net[1], model.net[3]
    want = F.relu(x.flatten(1) @ l1.weight.T + l1.bias) @ l2.weight.T + l2.bias
    torch.testing.assert_close(model(x), want)


def test_mlp_rejects_bad_input():
    with pytest.raises(ValueError, match="784 values"):
        MLP(784, [8], 10)(torch.zeros(2, 1, 14, 14))
    with pytest.raises(ValueError, match="dropout"):
        MLP(4, [8], 2, dropout=1.0)
    with pytest.raises(ValueError, match="hidden"):
        MLP(4, [0], 2)
    assert math.isfinite(MLP(4, [8], 2)(torch.ones(3, 4)).sum().item())


# ---------------------------------------------------------------- argument checks on data


def test_make_loader_rejects_bad_labels_and_nan_inputs():
    x = torch.zeros(4, 2)
    with pytest.raises(TypeError, match=r"y must hold integer class indices.*torch.float32.*y.long\(\)"):
        tensor_loader(x, torch.zeros(4), 2, shuffle=False)
    with pytest.raises(TypeError, match="torch.int32"):
        tensor_loader(x, torch.zeros(4, dtype=torch.int32), 2, shuffle=False)
    with pytest.raises(ValueError, match="negative class index"):
        tensor_loader(x, torch.tensor([0, 1, -1, 2]), 2, shuffle=False)
    with pytest.raises(ValueError, match="1-d"):
        tensor_loader(x, torch.zeros(4, 3, dtype=torch.long), 2, shuffle=False)
    x_nan = x.clone()
    x_nan[1, 0] = float("nan")
    with pytest.raises(ValueError, match="x contains 1 NaN or infinite"):
        tensor_loader(x_nan, torch.zeros(4, dtype=torch.long), 2, shuffle=False)
    for bad in (-1, 0, 2.0, True):
        with pytest.raises(ValueError, match="batch_size must be a positive int"):
            tensor_loader(x, torch.zeros(4, dtype=torch.long), bad, shuffle=False)
    tensor_loader(x, torch.zeros(4, dtype=torch.long), 2, shuffle=False)  # the good case still works


def _raw_loader(x, y, batch_size=2):
    """A DataLoader made without tensor_loader's checks, as a reader might build one."""
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch_size)


def test_fit_evaluate_predict_check_every_batch():
    model = nn.Linear(2, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    good = tensor_loader(torch.zeros(4, 2), torch.zeros(4, dtype=torch.long), 2, shuffle=False)
    float_labels = _raw_loader(torch.zeros(4, 2), torch.zeros(4))
    x_nan = torch.zeros(4, 2)
    x_nan[3, 1] = float("nan")
    nan_inputs = _raw_loader(x_nan, torch.zeros(4, dtype=torch.long))
    with pytest.raises(TypeError, match="fit labels must hold integer class indices"):
        fit(model, float_labels, good, optimizer=opt, epochs=1, device="cpu", show_progress=False)
    with pytest.raises(ValueError, match="fit inputs contains 1 NaN"):
        fit(model, nan_inputs, good, optimizer=opt, epochs=1, device="cpu", show_progress=False)
    with pytest.raises(TypeError, match="evaluate labels"):
        evaluate(model, float_labels, F.cross_entropy, "cpu")
    with pytest.raises(ValueError, match="evaluate inputs"):
        evaluate(model, nan_inputs, F.cross_entropy, "cpu")
    with pytest.raises(ValueError, match="predict inputs"):
        predict(model, nan_inputs, "cpu")
    with pytest.raises(ValueError, match="3 inputs but 2 labels"):
        evaluate(model, [(torch.zeros(3, 2), torch.zeros(2, dtype=torch.long))], F.cross_entropy, "cpu")
    with pytest.raises(ValueError, match="labels need a batch dimension"):
        evaluate(model, [(torch.zeros(1, 2), torch.tensor(0))], F.cross_entropy, "cpu")


def test_fit_stops_on_a_non_finite_loss():
    model = nn.Linear(2, 3)
    with torch.no_grad():
        model.weight.fill_(float("inf"))
    loader = tensor_loader(torch.ones(4, 2), torch.zeros(4, dtype=torch.long), 2, shuffle=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(FloatingPointError, match="epoch 1, batch 1"):
        fit(model, loader, loader, optimizer=opt, epochs=1, device="cpu", show_progress=False)


def test_fit_and_evaluate_reject_wrong_types():
    model = nn.Linear(2, 3)
    loader = tensor_loader(torch.zeros(4, 2), torch.zeros(4, dtype=torch.long), 2, shuffle=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(TypeError, match="optimizer must be a torch.optim.Optimizer"):
        fit(model, loader, loader, optimizer="adam", epochs=1, device="cpu", show_progress=False)
    with pytest.raises(TypeError, match="nn.Module"):
        fit(lambda x: x, loader, loader, optimizer=opt, epochs=1, device="cpu", show_progress=False)
    with pytest.raises(TypeError, match="scheduler must have a step"):
        fit(model, loader, loader, optimizer=opt, epochs=1, device="cpu", scheduler=3, show_progress=False)
    with pytest.raises(TypeError, match="loss_fn must be callable"):
        evaluate(model, loader, "cross_entropy", "cpu")


# ---------------------------------------------------------------- learning-rate schedule


def test_warmup_lr_factor_by_hand():
    from dlbook.train import warmup_lr_factor as f

    assert [f(s, warmup_steps=4, total_steps=12) for s in range(4)] == [0.0, 0.25, 0.5, 0.75]
    assert f(4, warmup_steps=4, total_steps=12) == 1.0  # the end of the warm-up: the full rate
    assert f(8, warmup_steps=4, total_steps=12) == pytest.approx(0.5)  # half way through the cosine
    assert f(8, warmup_steps=4, total_steps=12, decay="linear") == pytest.approx(0.5)
    assert f(10, warmup_steps=4, total_steps=12, decay="linear") == pytest.approx(0.25)
    assert f(8, warmup_steps=4, total_steps=12, decay="cosine", final_factor=0.1) == pytest.approx(0.55)
    assert f(11, warmup_steps=4, total_steps=12, decay="constant") == 1.0
    assert f(0, warmup_steps=0, total_steps=10) == 1.0  # no warm-up: start at the full rate
    for decay in ("cosine", "linear"):  # past the end: stays at the final factor
        assert f(12, warmup_steps=4, total_steps=12, decay=decay, final_factor=0.1) == pytest.approx(0.1)
        assert f(50, warmup_steps=4, total_steps=12, decay=decay) == 0.0


def test_warmup_lr_factor_matches_transformers():
    from transformers import (
        get_cosine_schedule_with_warmup,
        get_cosine_with_min_lr_schedule_with_warmup,
        get_linear_schedule_with_warmup,
    )

    from dlbook.train import warmup_lr_factor

    def hf_factors(make, **kw):
        opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
        sched = make(opt, num_warmup_steps=7, num_training_steps=40, **kw)
        return [fn(s) for s in range(40) for fn in sched.lr_lambdas]

    ours = lambda **kw: [warmup_lr_factor(s, warmup_steps=7, total_steps=40, **kw) for s in range(40)]  # noqa: E731
    assert ours(decay="cosine") == hf_factors(get_cosine_schedule_with_warmup)
    assert ours(decay="linear") == hf_factors(get_linear_schedule_with_warmup)
    assert ours(final_factor=0.2) == pytest.approx(
        hf_factors(get_cosine_with_min_lr_schedule_with_warmup, min_lr_rate=0.2), abs=1e-15
    )
    assert ours(final_factor=0.1) == pytest.approx(
        hf_factors(get_cosine_with_min_lr_schedule_with_warmup, min_lr_rate=0.1), abs=1e-15
    )
    # past total_steps ours stays at final_factor (transformers' cosine rises again there)
    assert [warmup_lr_factor(s, warmup_steps=7, total_steps=40, final_factor=0.1) for s in range(40, 45)] == [0.1] * 5


def test_warmup_scheduler_sets_the_rate_of_each_step():
    from dlbook.train import warmup_lr_factor, warmup_scheduler

    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [p]}, {"params": [nn.Parameter(torch.zeros(1))], "lr": 0.5}], lr=0.1)
    sched = warmup_scheduler(opt, warmup_steps=3, total_steps=10, decay="linear")
    for step in range(10):
        want = warmup_lr_factor(step, warmup_steps=3, total_steps=10, decay="linear")
        assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * want)
        assert opt.param_groups[1]["lr"] == pytest.approx(0.5 * want)
        opt.step()
        sched.step()


def test_warmup_schedule_rejects_bad_arguments():
    from dlbook.train import warmup_lr_factor, warmup_scheduler

    with pytest.raises(ValueError, match="step must be an int >= 0"):
        warmup_lr_factor(-1, warmup_steps=2, total_steps=10)
    with pytest.raises(ValueError, match="warmup_steps must be an int >= 0"):
        warmup_lr_factor(0, warmup_steps=-2, total_steps=10)
    with pytest.raises(ValueError, match="smaller than total_steps"):
        warmup_lr_factor(0, warmup_steps=10, total_steps=10)
    with pytest.raises(ValueError, match="decay must be one of cosine, linear, constant"):
        warmup_lr_factor(0, warmup_steps=2, total_steps=10, decay="exp")
    with pytest.raises(ValueError, match="final_factor"):
        warmup_lr_factor(0, warmup_steps=2, total_steps=10, final_factor=1.5)
    with pytest.raises(ValueError, match="no effect with decay='constant'"):
        warmup_lr_factor(0, warmup_steps=2, total_steps=10, decay="constant", final_factor=0.1)
    assert warmup_lr_factor(5, warmup_steps=2, total_steps=10, decay="constant") == 1.0
    with pytest.raises(TypeError, match="optimizer"):
        warmup_scheduler("sgd", warmup_steps=2, total_steps=10)
    with pytest.raises(ValueError, match="total_steps"):
        warmup_scheduler(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0), warmup_steps=2, total_steps=0)
