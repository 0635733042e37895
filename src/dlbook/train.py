"""The training loop every later chapter uses: seeded loaders, ``evaluate``, ``fit``, and the
learning-rate schedule with warm-up. ``fit`` runs the book's one loop (:mod:`dlbook.loop`).

Taught in chapter 2 (Learning from data), where the loop and the schedule are built step by step in
cells and then these packaged versions are shown and checked against them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from .loop import EarlyStopping, History, TrainStep, train_loop

LossFn = Callable[[Tensor, Tensor], Tensor]


# ---------------------------------------------------------------- argument checks


def _check_int(value: Any, name: str, *, minimum: int) -> int:
    """``value`` as an int of at least ``minimum``, or a ValueError naming ``name``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        kind = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    return value


def _check_labels(y: Tensor, name: str) -> None:
    """Class labels: a 1-d int64 tensor of non-negative indices (what ``F.cross_entropy`` takes)."""
    if y.dtype != torch.long:
        hint = " (class probabilities are not supported)" if y.is_floating_point() else ""
        raise TypeError(
            f"{name} must hold integer class indices of dtype torch.long (int64), got {y.dtype}{hint}; "
            f"convert with {name}.long()"
        )
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-d, one class index per example, got shape {tuple(y.shape)}")
    if y.numel() and int(y.min()) < 0:
        raise ValueError(f"{name} holds a negative class index ({int(y.min())}); class indices start at 0")


def _check_finite(x: Tensor, name: str) -> None:
    """A floating-point input with NaN or infinity poisons every weight after one step: refuse it."""
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name} contains {bad} NaN or infinite values; clean or impute them first")


def _check_batch(xb: Any, yb: Any, where: str) -> None:
    """One batch from a loader: tensors of the same length, class-index labels, finite inputs."""
    if not isinstance(xb, Tensor) or not isinstance(yb, Tensor):
        raise TypeError(f"{where}: batches must be (inputs, labels) tensors, got {type(xb).__name__} and {type(yb).__name__}")
    if xb.ndim == 0 or yb.ndim == 0:
        raise ValueError(
            f"{where}: inputs and labels need a batch dimension, got shapes {tuple(xb.shape)} and {tuple(yb.shape)}"
        )
    if len(xb) != len(yb):
        raise ValueError(f"{where}: a batch has {len(xb)} inputs but {len(yb)} labels")
    _check_labels(yb, f"{where} labels")
    _check_finite(xb, f"{where} inputs")


def tensor_loader(x: Tensor, y: Tensor, batch_size: int, *, shuffle: bool, seed: int = 0) -> DataLoader:
    """A ``DataLoader`` over the pairs ``(x[i], y[i])`` whose shuffling is seeded.

    The loader owns a ``torch.Generator`` seeded with ``seed``, so the order of the batches
    repeats run after run, independently of any other random numbers drawn meanwhile.
    ``y`` holds class indices (int64), as :func:`fit` and :func:`evaluate` expect; ``x`` must be
    finite. (:func:`dlbook.finetune.make_loader` is its counterpart for tokenised text.) Taught in
    chapter 2.
    """
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise TypeError(f"tensor_loader needs tensors, got {type(x).__name__} and {type(y).__name__}")
    if x.ndim == 0 or y.ndim == 0:
        raise ValueError("tensor_loader needs at least one example: x and y must have a first (batch) dimension")
    if len(x) != len(y):
        raise ValueError(f"x and y must have the same length, got {len(x)} and {len(y)}")
    _check_int(batch_size, "batch_size", minimum=1)
    _check_labels(y, "y")
    _check_finite(x, "x")
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle, generator=generator)


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, loss_fn: LossFn, device: torch.device | str) -> tuple[float, float]:
    """Mean loss per example and accuracy of ``model`` over ``loader`` (eval mode, no gradients).

    ``loss_fn(logits, y)`` must return the mean over the batch (the default of PyTorch's losses);
    each batch is weighted by its size so the result is the mean over all examples. The model's
    previous train/eval mode is restored afterwards. Taught in chapter 2.
    """
    _check_model(model, "evaluate")
    _check_loss_fn(loss_fn)
    was_training = model.training
    model.eval()
    total_loss, correct, n = 0.0, 0, 0
    try:
        for xb, yb in loader:
            _check_batch(xb, yb, "evaluate")
            xb, yb = xb.to(device), yb.to(device)
            logits = model(xb)  # (batch, n_classes)
            if logits.ndim != 2 or logits.shape[0] != yb.shape[0]:
                raise ValueError(f"model must return (batch, n_classes) logits, got shape {tuple(logits.shape)}")
            total_loss += loss_fn(logits, yb).item() * len(yb)
            correct += (logits.argmax(dim=1) == yb).sum().item()
            n += len(yb)
    finally:
        model.train(was_training)
    if n == 0:
        raise ValueError("evaluate got an empty loader")
    return total_loss / n, correct / n


@torch.no_grad()
def predict(model: nn.Module, loader: DataLoader, device: torch.device | str) -> tuple[Tensor, Tensor]:
    """All logits and targets of ``loader`` in order, on the CPU: ``(N, n_classes)`` and ``(N,)``.

    For metrics beyond accuracy (per-class recall, confusion matrices, the examples a model gets
    wrong). Eval mode, no gradients; the model's previous mode is restored. Taught in chapter 2.
    """
    _check_model(model, "predict")
    was_training = model.training
    model.eval()
    logits, targets = [], []
    try:
        for xb, yb in loader:
            _check_batch(xb, yb, "predict")
            logits.append(model(xb.to(device)).cpu())  # (batch, n_classes)
            targets.append(yb.cpu())
    finally:
        model.train(was_training)
    if not logits:
        raise ValueError("predict got an empty loader")
    return torch.cat(logits), torch.cat(targets)


def fit(
    model: nn.Module,
    train_loader: DataLoader,
    val_loader: DataLoader,
    *,
    optimizer: torch.optim.Optimizer,
    epochs: int,
    device: torch.device | str,
    loss_fn: LossFn = F.cross_entropy,
    patience: int | None = None,
    grad_clip: float | None = None,
    scheduler: Any = None,
    show_progress: bool = True,
) -> History:
    """Train ``model`` for up to ``epochs`` epochs and evaluate it on ``val_loader`` after each.

    One step: forward, ``loss_fn(logits, y)``, ``backward``, optional gradient-norm clipping to
    ``grad_clip``, ``optimizer.step()``, then ``scheduler.step()`` if a scheduler is given (once
    per batch); the step itself is :class:`dlbook.loop.TrainStep`, the loop
    :func:`dlbook.loop.train_loop`. ``History.train_loss`` is the mean loss per example over
    each epoch, measured on the fly while the weights change.

    With ``patience`` set, training stops once the validation loss has not improved for
    ``patience`` epochs, and the weights of the best epoch are loaded back into ``model``.
    Without it the model keeps its last weights (``History.best_epoch`` is still recorded).
    The model is handed back in training mode.

    Every batch is checked (int64 class labels, finite inputs), and a loss that turns NaN or
    infinite stops training with a ``FloatingPointError`` that says where, rather than carrying
    on with poisoned weights. Taught in chapter 2.
    """
    _check_model(model, "fit")
    _check_loss_fn(loss_fn)
    _check_int(epochs, "epochs", minimum=1)

    def batch_loss(model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
        xb, yb = batch
        _check_batch(xb, yb, "fit")
        return loss_fn(model(xb.to(device)), yb.to(device))

    def validate() -> dict[str, float]:
        val_loss, val_acc = evaluate(model, val_loader, loss_fn, device)
        return {"loss": val_loss, "accuracy": val_acc}

    step = TrainStep(model, batch_loss, optimizer, scheduler=scheduler, max_grad_norm=grad_clip, device=device)
    history = train_loop(
        step,
        train_loader,
        epochs=epochs,
        evaluate=validate,
        name="fit",
        show_progress=show_progress,
        early_stopping=EarlyStopping(patience, restore_best=patience is not None),
    )
    model.train()
    return history


def _check_loss_fn(loss_fn: Any) -> None:
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable, as F.cross_entropy is, got {type(loss_fn).__name__}")


# ---------------------------------------------------------------- learning-rate schedule

DECAYS = ("cosine", "linear", "constant")


def warmup_lr_factor(
    step: int,
    *,
    warmup_steps: int,
    total_steps: int,
    decay: str = "cosine",
    final_factor: float = 0.0,
) -> float:
    """The factor by which the base learning rate is multiplied at optimizer step ``step`` (from 0).

    A linear warm-up from 0, ``step / warmup_steps`` for ``step < warmup_steps``, then a decay over
    the remaining ``total_steps - warmup_steps`` steps with progress
    ``q = (step - warmup_steps) / (total_steps - warmup_steps)``:

    - ``"cosine"``: ``final + (1 - final) * (1 + cos(pi q)) / 2``;
    - ``"linear"``: ``final + (1 - final) * (total_steps - step) / (total_steps - warmup_steps)``;
    - ``"constant"``: 1 after the warm-up.

    With ``final_factor=0`` these are the numbers of ``transformers.get_cosine_schedule_with_warmup``
    and ``get_linear_schedule_with_warmup``; with ``final_factor > 0`` the cosine one is
    ``get_cosine_with_min_lr_schedule_with_warmup`` (``final_factor`` is its ``min_lr_rate``).
    The first step runs at rate 0. Past ``total_steps`` the factor stays at ``final_factor``
    (``transformers``' cosine rises again there). ``"constant"`` has no final factor, so
    ``final_factor`` must be 0 with it. Warm-up
    keeps the first, least informed steps small (with Adam, the first step moves every weight by
    about the learning rate). Taught in chapter 2 (section "Learning-rate schedules and warm-up").
    """
    _check_int(step, "step", minimum=0)
    _check_schedule(warmup_steps, total_steps, decay, final_factor)
    if step < warmup_steps:
        return float(step) / float(warmup_steps)
    if decay == "constant":
        return 1.0
    if step >= total_steps:
        return float(final_factor)
    span = float(total_steps - warmup_steps)
    if decay == "cosine":
        shape = 0.5 * (1.0 + math.cos(math.pi * (float(step - warmup_steps) / span)))
    else:
        shape = float(total_steps - step) / span
    return shape * (1 - final_factor) + final_factor


def _check_schedule(warmup_steps: int, total_steps: int, decay: str, final_factor: float) -> None:
    _check_int(warmup_steps, "warmup_steps", minimum=0)
    _check_int(total_steps, "total_steps", minimum=1)
    if warmup_steps >= total_steps:
        raise ValueError(f"warmup_steps ({warmup_steps}) must be smaller than total_steps ({total_steps})")
    if decay not in DECAYS:
        raise ValueError(f"decay must be one of {', '.join(DECAYS)}; got {decay!r}")
    if isinstance(final_factor, bool) or not isinstance(final_factor, (int, float)) or not 0 <= final_factor <= 1:
        raise ValueError(f"final_factor must be a number in [0, 1], got {final_factor!r}")
    if decay == "constant" and final_factor != 0:
        raise ValueError(
            f"final_factor ({final_factor!r}) has no effect with decay='constant'; leave it at 0 or choose 'cosine' or 'linear'"
        )


def warmup_scheduler(
    optimizer: torch.optim.Optimizer,
    *,
    warmup_steps: int,
    total_steps: int,
    decay: str = "cosine",
    final_factor: float = 0.0,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` that follows :func:`warmup_lr_factor`; call its ``step()`` after each optimizer step.

    :func:`fit` does that when given ``scheduler=``. Every parameter group's learning rate is
    its own base rate times the factor. Taught in chapter 2.
    """
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    _check_schedule(warmup_steps, total_steps, decay, final_factor)

    def factor(step: int) -> float:
        return warmup_lr_factor(
            step, warmup_steps=warmup_steps, total_steps=total_steps, decay=decay, final_factor=final_factor
        )

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _check_model(model: Any, where: str) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"{where} needs an nn.Module as model, got {type(model).__name__}")


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """The number of scalar parameters in ``model`` (only those with ``requires_grad`` by default).

    ``trainable_only=False`` counts every parameter, frozen ones too: a model's size, as the
    compression chapters (12-15) report it (the packed int8 weights of a quantized layer are
    not parameters). Taught in chapter 2.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"count_parameters needs an nn.Module, got {type(model).__name__}")
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


__all__ = [
    "DECAYS",
    "History",
    "count_parameters",
    "evaluate",
    "fit",
    "predict",
    "tensor_loader",
    "warmup_lr_factor",
    "warmup_scheduler",
]
