"""The training loop every later chapter uses: seeded loaders, ``evaluate``, ``fit``, ``History``.

Taught in chapter 2 (Learning from data), where the loop is built step by step in cells and then
this packaged version is shown and checked against it.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from .progress import progress

LossFn = Callable[[Tensor, Tensor], Tensor]


def make_loader(x: Tensor, y: Tensor, batch_size: int, *, shuffle: bool, seed: int = 0) -> DataLoader:
    """A ``DataLoader`` over the pairs ``(x[i], y[i])`` whose shuffling is seeded.

    The loader owns a ``torch.Generator`` seeded with ``seed``, so the order of the batches
    repeats run after run, independently of any other random numbers drawn meanwhile.
    Taught in chapter 2.
    """
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise TypeError(f"make_loader needs tensors, got {type(x).__name__} and {type(y).__name__}")
    if x.ndim == 0 or y.ndim == 0:
        raise ValueError("make_loader needs at least one example: x and y must have a first (batch) dimension")
    if len(x) != len(y):
        raise ValueError(f"x and y must have the same length, got {len(x)} and {len(y)}")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle, generator=generator)


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, loss_fn: LossFn, device: torch.device | str) -> tuple[float, float]:
    """Mean loss per example and accuracy of ``model`` over ``loader`` (eval mode, no gradients).

    ``loss_fn(logits, y)`` must return the mean over the batch (the default of PyTorch's losses);
    each batch is weighted by its size so the result is the mean over all examples. The model's
    previous train/eval mode is restored afterwards. Taught in chapter 2.
    """
    was_training = model.training
    model.eval()
    total_loss, correct, n = 0.0, 0, 0
    try:
        for xb, yb in loader:
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
    was_training = model.training
    model.eval()
    logits, targets = [], []
    try:
        for xb, yb in loader:
            logits.append(model(xb.to(device)).cpu())  # (batch, n_classes)
            targets.append(yb.cpu())
    finally:
        model.train(was_training)
    if not logits:
        raise ValueError("predict got an empty loader")
    return torch.cat(logits), torch.cat(targets)


@dataclass
class History:
    """What :func:`fit` records: one entry per epoch, the best epoch (by validation loss), the time.

    Taught in chapter 2.
    """

    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)
    best_epoch: int = -1  # 0-based index into the lists; -1 until an epoch has finished
    seconds: float = 0.0

    @property
    def epochs(self) -> int:
        """How many epochs ran (fewer than asked for when early stopping fired)."""
        return len(self.train_loss)

    @property
    def best_val_loss(self) -> float:
        return self.val_loss[self.best_epoch] if self.val_loss else math.nan

    @property
    def best_val_acc(self) -> float:
        return self.val_acc[self.best_epoch] if self.val_acc else math.nan

    def plot(self, ax: Any = None, title: str | None = None) -> Any:
        """Plot the training and validation loss per epoch (and the best epoch); returns the axes."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(5, 3.2))
        epochs = range(1, self.epochs + 1)
        ax.plot(epochs, self.train_loss, marker=".", label="train loss")
        ax.plot(epochs, self.val_loss, marker=".", label="validation loss")
        if self.best_epoch >= 0:
            ax.axvline(self.best_epoch + 1, color="grey", linestyle=":", label="best epoch")
        ax.set_xlabel("epoch")
        ax.set_ylabel("cross-entropy per example")
        if title:
            ax.set_title(title)
        ax.legend()
        return ax


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

    One step: forward, ``loss_fn(logits, y)``, ``zero_grad``, ``backward``, optional gradient-norm
    clipping to ``grad_clip``, ``optimizer.step()``, then ``scheduler.step()`` if a scheduler is
    given (it is stepped once per batch). The recorded training loss is the mean per example over
    the epoch, measured on the fly while the weights change.

    With ``patience`` set, training stops once the validation loss has not improved for
    ``patience`` epochs, and the weights of the best epoch are loaded back into ``model``.
    Without it the model keeps its last weights (``History.best_epoch`` is still recorded).
    Taught in chapter 2.
    """
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")
    if patience is not None and (not isinstance(patience, int) or patience < 1):
        raise ValueError(f"patience must be a positive int or None, got {patience!r}")
    if grad_clip is not None and not grad_clip > 0:
        raise ValueError(f"grad_clip must be positive or None, got {grad_clip!r}")
    history = History()
    best_loss, best_state, bad_epochs = math.inf, None, 0
    start = time.perf_counter()
    bar = progress(range(epochs), desc="epochs", disable=not show_progress)
    for epoch in bar:
        model.train()
        total, n = 0.0, 0
        for xb, yb in train_loader:
            xb, yb = xb.to(device), yb.to(device)
            loss = loss_fn(model(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            if grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            total += loss.item() * len(yb)
            n += len(yb)
        if n == 0:
            raise ValueError("fit got an empty train_loader")
        val_loss, val_acc = evaluate(model, val_loader, loss_fn, device)
        history.train_loss.append(total / n)
        history.val_loss.append(val_loss)
        history.val_acc.append(val_acc)
        if val_loss < best_loss:
            best_loss, bad_epochs, history.best_epoch = val_loss, 0, epoch
            if patience is not None:
                best_state = copy.deepcopy(model.state_dict())
        else:
            bad_epochs += 1
        if show_progress and hasattr(bar, "set_postfix"):
            bar.set_postfix(train=f"{total / n:.3f}", val=f"{val_loss:.3f}", acc=f"{val_acc:.3f}")
        if patience is not None and bad_epochs >= patience:
            break
    if show_progress and hasattr(bar, "close"):
        bar.close()
    if patience is not None and best_state is not None:
        model.load_state_dict(best_state)
    history.seconds = time.perf_counter() - start
    return history


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """The number of scalar parameters in ``model`` (only those with ``requires_grad`` by default).

    Taught in chapter 2.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"count_parameters needs an nn.Module, got {type(model).__name__}")
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


__all__ = ["History", "count_parameters", "evaluate", "fit", "make_loader", "predict"]
