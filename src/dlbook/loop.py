"""The book's one training loop: a step, a loop around it, early stopping and one history.

Chapter 2 builds the loop by hand and then uses :func:`dlbook.train.fit`; every later training
function is a thin wrapper that chooses the data, the loss and the optimizer and hands them here:
:func:`dlbook.train.fit` (chapters 2-3), :func:`dlbook.charlm.train_char_lm` (4, 5, 7),
:func:`dlbook.finetune.train_classifier` (9, 13), :func:`dlbook.budget.train_budget` and
:func:`dlbook.budget.make_train_step` (10), :func:`dlbook.distill.train_student` (14, 15) and
:func:`dlbook.seq2seq.train_seq2seq` (19).

- :class:`TrainStep`: one optimizer step. Forward and loss of each micro-batch (under
  ``torch.autocast`` for ``precision``, chapter 10), backward, gradient-norm clipping, the
  optimizer and the schedule, then the gradients are cleared.
- :func:`train_loop`: epochs of steps; optional seeding of the global generator (dropout),
  evaluation after each epoch or every few steps, early stopping, a :class:`History`.
- :class:`EarlyStopping`: the best evaluation so far, the weights it had, when to give up.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from .env import resolve_device
from .progress import progress

Batch = Any
#: ``loss_fn(model, batch)``: the loss of one (micro-)batch, a scalar tensor with a graph.
LossFn = Callable[[nn.Module, Batch], Tensor]

__all__ = [
    "DTYPES",
    "PRECISIONS",
    "EarlyStopping",
    "History",
    "TrainStep",
    "autocast_context",
    "resolve_precision",
    "train_loop",
]

# ---------------------------------------------------------------------------------------------
# precision (chapter 10)

PRECISIONS = ("fp32", "bf16", "fp16", "auto")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """The precision to use on ``device``: ``"auto"`` is bf16 on a CUDA GPU that supports it, fp16 on
    other CUDA GPUs and on MPS, and bf16 on the CPU; the explicit names are returned unchanged."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    device = torch.device(device)
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "mps":
        return "fp16"
    return "bf16"


def autocast_context(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for the resolved ``precision`` on ``device``'s type, or a no-op for fp32."""
    device = torch.device(device)
    p = resolve_precision(precision, device)
    if p == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[p])


# ---------------------------------------------------------------------------------------------
# one optimizer step


class TrainStep:
    """One optimizer step, as a callable on a list of micro-batches (one batch: a list of one).

    For each micro-batch: ``loss = loss_fn(model, batch)`` under autocast for ``precision``,
    divided by ``denominator(group)`` if given (then ``loss_fn`` returns a *sum* and the k
    micro-batches add up to the loss of the group as one batch: gradient accumulation), and
    ``backward``. Without ``denominator`` the k losses are added as they are: with k > 1 and a
    ``loss_fn`` that returns a mean, gradient and loss are then k times the group's mean.
    Then clipping of the gradient norm to ``max_grad_norm`` (``math.inf``: measure the norm, do
    not clip), ``optimizer.step()``, ``scheduler.step()`` and the gradients are
    cleared. fp16 adds a ``GradScaler``. A call returns ``(loss, grad_norm)``, the norm before
    clipping (``None`` without clipping).
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        optimizer: torch.optim.Optimizer,
        *,
        scheduler: Any = None,
        max_grad_norm: float | None = None,
        precision: str = "fp32",
        denominator: Callable[[Sequence[Batch]], float] | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        _check_step_args(model, loss_fn, optimizer, scheduler, max_grad_norm)
        self.model, self.loss_fn, self.optimizer, self.scheduler = model, loss_fn, optimizer, scheduler
        self.max_grad_norm, self.denominator = max_grad_norm, denominator
        self.device = resolve_device(device, model=model)
        self.precision = resolve_precision(precision, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type) if self.precision == "fp16" else None
        self.where = "training"  # where a non-finite loss happened, for the error message

    def __call__(self, group: Sequence[Batch]) -> tuple[float, float | None]:
        denom = self.denominator(group) if self.denominator is not None else None
        total = 0.0
        for batch in group:
            with autocast_context(self.precision, self.device):
                loss = self.loss_fn(self.model, batch)
            if denom is not None:
                loss = loss / denom
            value = loss.item()
            if not math.isfinite(value):
                raise FloatingPointError(
                    f"{self.where}: the training loss is {value}; try a lower learning "
                    "rate, a warm-up (dlbook.train.warmup_scheduler) or gradient clipping"
                )
            (self.scaler.scale(loss) if self.scaler else loss).backward()
            total += value
        return total, self.update()

    def update(self) -> float | None:
        """Clip, step the optimizer and the schedule, clear the gradients; the norm before clipping."""
        norm = None
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if self.max_grad_norm is not None:
            params = [p for p in self.model.parameters() if p.requires_grad]
            norm = float(nn.utils.clip_grad_norm_(params, self.max_grad_norm))
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norm

    def lr(self) -> float:
        """The learning rate of the first parameter group for the next step."""
        if self.scheduler is not None and hasattr(self.scheduler, "get_last_lr"):
            return float(self.scheduler.get_last_lr()[0])
        return float(self.optimizer.param_groups[0].get("lr", math.nan))


def _check_step_args(model: Any, loss_fn: Any, optimizer: Any, scheduler: Any, max_grad_norm: Any) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    if scheduler is not None and not callable(getattr(scheduler, "step", None)):
        raise TypeError(f"scheduler must have a step() method (a torch.optim.lr_scheduler), got {scheduler!r}")
    if max_grad_norm is not None and not max_grad_norm > 0:
        raise ValueError(f"max_grad_norm (grad_clip) must be positive or None, got {max_grad_norm!r}")


# ---------------------------------------------------------------------------------------------
# history and early stopping


@dataclass
class History:
    """What a training run recorded; every training function of the book returns one.

    Per optimizer step: ``step_loss``, ``step_lr`` (the rate the step used), ``step_seconds`` and
    ``grad_norm`` (before clipping; empty without clipping). Per epoch: ``train_loss``, the mean
    step loss weighted by the examples of each step. Per evaluation: ``evals``, dicts with the
    ``step`` after which it ran, the ``epoch`` it ran after (or during, with ``eval_every``), and
    its metrics (``loss``, ``accuracy``, ...);
    ``best`` is the index of the best one (-1: none). ``val_loss``, ``val_acc``, ``val_exact``
    and ``val_epoch`` read one entry of every evaluation.
    """

    step_loss: list[float] = field(default_factory=list)
    step_lr: list[float] = field(default_factory=list)
    step_seconds: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    evals: list[dict[str, float]] = field(default_factory=list)
    best: int = -1
    stopped_early: bool = False
    total_steps: int = 0
    warmup_steps: int = 0
    steps_per_epoch: int = 0
    precision: str = "fp32"
    peak_bytes: int | None = None
    memory_method: str | None = None
    seconds: float = 0.0

    def metric(self, name: str) -> list[float]:
        """``name`` of every evaluation, in order (a ``KeyError`` if one lacks it)."""
        return [e[name] for e in self.evals]

    @property
    def val_loss(self) -> list[float]:
        return self.metric("loss")

    @property
    def val_acc(self) -> list[float]:
        return self.metric("accuracy")

    @property
    def val_exact(self) -> list[float]:
        return self.metric("exact")

    @property
    def val_epoch(self) -> list[int]:
        return [int(e["epoch"]) for e in self.evals]

    @property
    def epochs(self) -> int:
        """How many epochs ran (fewer than asked for when early stopping fired)."""
        return len(self.train_loss)

    @property
    def best_epoch(self) -> int:
        """Index of the best evaluation: with one after each epoch, the 0-based epoch; with one before
        training too (:func:`dlbook.charlm.train_char_lm`), the number of epochs trained; with
        ``eval_every``, the index in :attr:`evals` (see :attr:`best_step`)."""
        return self.best

    @property
    def best_step(self) -> int | None:
        """The optimizer step after which the best evaluation ran (``None`` without evaluations)."""
        return int(self.evals[self.best]["step"]) if self.best >= 0 else None

    @property
    def best_val_loss(self) -> float:
        return self.val_loss[self.best] if self.best >= 0 else math.nan

    @property
    def best_val_acc(self) -> float:
        return self.val_acc[self.best] if self.best >= 0 else math.nan

    def seconds_per_step(self, skip_first: int = 1) -> float:
        """Median wall time of an optimizer step, leaving out the first ``skip_first`` (warm-up, memory tracking)."""
        times = self.step_seconds[skip_first:] or self.step_seconds
        return float(torch.tensor(times).median()) if times else math.nan

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "best_step": self.best_step}

    def plot(self, ax: Any = None, title: str | None = None) -> Any:
        """Training and validation loss per epoch, the best epoch dotted, and the validation exact
        match on a right axis where it was measured (chapter 19); returns the axes."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(6, 3.2))
        ax.plot(range(1, self.epochs + 1), self.train_loss, marker=".", label="train loss")
        ax.plot(self.val_epoch, self.val_loss, marker=".", label="validation loss")
        if self.best >= 0:
            ax.axvline(self.val_epoch[self.best], color="grey", linestyle=":", label="best epoch")
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss per example")
        if title:
            ax.set_title(title)
        if not (self.evals and "exact" in self.evals[0]):
            ax.legend()
            return ax
        ax.set(ylabel="cross-entropy per target token", yscale="log")
        right = ax.twinx()
        right.plot(self.val_epoch, self.val_exact, marker="s", color="tab:green", label="validation exact match")
        right.set_ylabel("exact match")
        lines, extra = ax.get_legend_handles_labels(), right.get_legend_handles_labels()
        ax.legend(lines[0] + extra[0], lines[1] + extra[1], fontsize=8, loc="center right")
        return ax


class EarlyStopping:
    """The best evaluation so far by ``score(metrics)`` (lower is better; default the loss).

    ``patience``: stop after that many evaluations without a new best (``None``: never stop).
    ``restore_best``: keep a copy of the weights of the best evaluation, for :meth:`restore`.
    """

    def __init__(
        self,
        patience: int | None = None,
        *,
        restore_best: bool = False,
        score: Callable[[dict[str, float]], Any] = lambda metrics: metrics["loss"],
    ) -> None:
        if patience is not None and (isinstance(patience, bool) or not isinstance(patience, int) or patience < 1):
            raise ValueError(f"patience must be a positive int or None, got {patience!r}")
        self.patience, self.restore_best, self.score = patience, restore_best, score
        self.best_score: Any = None
        self.best_index, self.bad, self.state = -1, 0, None

    def update(self, metrics: dict[str, float], model: nn.Module, index: int) -> bool:
        """Record evaluation number ``index``; True if it is the best so far."""
        score = self.score(metrics)
        if self.best_score is None or score < self.best_score:
            self.best_score, self.best_index, self.bad = score, index, 0
            if self.restore_best:
                self.state = copy.deepcopy(model.state_dict())
            return True
        self.bad += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.bad >= self.patience

    def restore(self, model: nn.Module) -> None:
        """Load the best weights back into ``model`` (if they were kept)."""
        if self.state is not None:
            model.load_state_dict(self.state)


# ---------------------------------------------------------------------------------------------
# the loop


def _groups(batches: Iterable[Batch], k: int) -> Iterator[list[Batch]]:
    """Consecutive groups of ``k`` batches (the last one may be shorter)."""
    group: list[Batch] = []
    for batch in batches:
        group.append(batch)
        if len(group) == k:
            yield group
            group = []
    if group:
        yield group


def _n_examples(batch: Batch) -> int:
    """Examples in a batch: its ``labels``, or the rows of its last tensor ((x, y), (src, tgt), ...)."""
    if isinstance(batch, dict):
        return len(batch["labels"])
    if isinstance(batch, (tuple, list)):
        return len(batch[-1])
    return len(batch)


def train_loop(
    step: TrainStep,
    batches: Iterable[Batch] | Callable[[], Iterable[Batch]],
    *,
    epochs: int,
    accumulation_steps: int = 1,
    max_steps: int | None = None,
    seed: int | None = None,
    evaluate: Callable[[], dict[str, float]] | None = None,
    eval_every: int | None = None,
    eval_before: bool = False,
    early_stopping: EarlyStopping | None = None,
    history: History | None = None,
    measure_memory: bool = False,
    name: str = "train",
    show_progress: bool = True,
) -> History:
    """Train ``step.model`` in place for ``epochs`` epochs of ``step`` calls, and return the :class:`History`.

    ``batches`` is iterated once per epoch (a callable is called at the start of each epoch for
    a fresh iterable); every ``accumulation_steps`` batches make one optimizer step; training
    ends after ``max_steps`` steps. ``seed`` re-seeds the global generator before the first step
    (the dropout masks). ``evaluate()`` returns a dict of validation metrics: it runs after each
    epoch, or every ``eval_every`` steps and after the last one (when the number of steps is
    known in advance: ``batches`` has a length or ``max_steps`` is set), and before training with
    ``eval_before``; ``early_stopping`` follows those evaluations, may end training, and gives
    the best weights back. The model is left in eval mode. Chapter 2 teaches the loop.
    """
    model, device = step.model, step.device
    k = _check_loop_args(epochs, accumulation_steps, max_steps, eval_every, evaluate, early_stopping)
    sized = None if callable(batches) else getattr(batches, "__len__", None)
    per_epoch = math.ceil(sized() / k) if sized else 0
    total = epochs * per_epoch if per_epoch else None
    if max_steps is not None:
        total = max_steps if total is None else min(max_steps, total)
    history = history if history is not None else History()
    history.precision, history.total_steps = step.precision, total or 0
    stopper = early_stopping if early_stopping is not None else EarlyStopping()

    def run_evaluation(epoch: int, n_steps: int) -> None:
        metrics = evaluate()  # type: ignore[misc]
        history.evals.append({"epoch": epoch, "step": n_steps, **metrics})
        if stopper.update(metrics, model, len(history.evals) - 1):
            history.best = len(history.evals) - 1
        if show_progress:
            bar.set_postfix({k_: f"{v:.3f}" for k_, v in metrics.items()}, refresh=False)

    if seed is not None:
        torch.manual_seed(seed)  # dropout masks
    start = time.perf_counter()
    n_steps = 0
    bar = progress(total=total, desc=name, disable=not show_progress)
    try:
        if eval_before and evaluate is not None:
            run_evaluation(0, 0)
        for epoch in range(1, epochs + 1):
            model.train()
            epoch_total, epoch_n, steps_before = 0.0, 0, n_steps
            for group in _groups(batches() if callable(batches) else batches, k):
                n = sum(_n_examples(b) for b in group)
                history.step_lr.append(step.lr())
                step.where = f"{name}: epoch {epoch}, batch {n_steps - steps_before + 1}"
                loss, norm = _timed_step(step, group, device, measure_memory and n_steps == 0, history)
                n_steps += 1
                history.step_loss.append(loss)
                if norm is not None:
                    history.grad_norm.append(norm)
                epoch_total, epoch_n = epoch_total + loss * n, epoch_n + n
                bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
                bar.update(1)
                if eval_every is not None and (n_steps % eval_every == 0 or n_steps == total):
                    run_evaluation(epoch, n_steps)
                    model.train()
                    if stopper.should_stop:
                        history.stopped_early = total is None or n_steps < total
                        break
                if total is not None and n_steps >= total:
                    break
            if epoch_n == 0:
                raise ValueError(f"{name}: an epoch had no training batches")
            history.steps_per_epoch = n_steps - steps_before if epoch == 1 else history.steps_per_epoch
            history.train_loss.append(epoch_total / epoch_n)
            if history.stopped_early or (total is not None and n_steps >= total and epoch < epochs):
                break
            if eval_every is None and evaluate is not None:
                run_evaluation(epoch, n_steps)
                if stopper.should_stop:
                    history.stopped_early = epoch < epochs
                    break
    finally:
        bar.close()
    history.total_steps = history.total_steps or n_steps
    stopper.restore(model)
    model.eval()
    history.seconds = time.perf_counter() - start
    return history


def _timed_step(
    step: TrainStep, group: list[Batch], device: torch.device, measure_memory: bool, history: History
) -> tuple[float, float | None]:
    """Run one step, recording its wall time (and its peak memory if asked) in ``history``."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    if measure_memory:
        from .memory import peak_memory

        measured = peak_memory(lambda: step(group), device)
        result = measured.result
        history.peak_bytes, history.memory_method = measured.peak_bytes, measured.method
    else:
        result = step(group)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    history.step_seconds.append(time.perf_counter() - t0)
    return result


def _check_loop_args(epochs: Any, k: Any, max_steps: Any, eval_every: Any, evaluate: Any, stopper: Any) -> int:
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"epochs must be a non-negative int, got {epochs!r}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"accumulation_steps must be a positive int, got {k!r}")
    for label, value in (("max_steps", max_steps), ("eval_every", eval_every)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{label} must be None or a positive int, got {value!r}")
    if (eval_every is not None or (stopper is not None and stopper.patience is not None)) and evaluate is None:
        raise ValueError("eval_every and early stopping need an evaluation (evaluate=...)")
    return k
