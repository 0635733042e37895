"""Fine-tuning on a budget: one training loop with the memory- and compute-saving switches.

Taught in chapter 10, "Fine-tuning on a budget". :func:`train_budget` is chapter 9's loop
(:func:`dlbook.finetune.train_classifier`: AdamW without decay on biases and LayerNorm, linear
warm-up and decay, gradient clipping, seeded order and dropout) with flags for

- ``precision``: ``"fp32"``, ``"bf16"``, ``"fp16"`` or ``"auto"`` (:func:`resolve_precision`):
  the forward pass runs under ``torch.autocast``; fp16 adds a ``torch.amp.GradScaler``;
- ``accumulation_steps``: k micro-batches of ``batch_size`` per optimizer step, with the loss
  scaled so that the gradient is the one of the whole group as one batch;
- ``checkpointing``: ``activation_checkpointing_enable()`` (transformers 5's name for gradient
  checkpointing: recompute activations in backward), with ``config.use_cache = False``;
- ``group_by_length``: batches of snippets of similar length, so less compute goes to padding;
- ``trainable``: a filter on parameter names (freezing);
- ``class_weights``: a class-weighted cross-entropy;
- ``eval_every`` / ``patience``: validation loss during training, early stopping, best weights back;
- ``measure_memory``: the peak memory of the first optimizer step (:func:`dlbook.memory.peak_memory`).

:func:`make_train_step` builds one optimizer step on a fixed batch with the same switches, as a
function of no arguments, so that the chapter can time every variant warm, repeatedly and
interleaved (:func:`dlbook.measure.interleaved_calls`) and measure its peak memory apart from
the timing; :func:`model_bytes` gives the weights' share of that memory.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .env import resolve_device
from .finetune import _check_training_data, evaluate_classifier, linear_warmup, make_loader, make_optimizer
from .loop import DTYPES, PRECISIONS, EarlyStopping, History, TrainStep, autocast_context, resolve_precision, train_loop

__all__ = [
    "DTYPES",
    "PRECISIONS",
    "autocast_context",
    "make_train_step",
    "model_bytes",
    "resolve_precision",
    "train_budget",
    "weighted_group_loss",
]


def weighted_group_loss(
    logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None, denominator: float
) -> torch.Tensor:
    """Summed (class-weighted) cross-entropy of one micro-batch divided by the whole group's ``denominator``.

    With ``denominator`` = the number of examples (or the sum of their class weights) in the k
    micro-batches of one optimizer step, the gradients of the k calls add up to the gradient of
    ``F.cross_entropy(all_logits, all_labels, weight)`` on the group as one batch.
    """
    if logits.dim() != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(f"need logits (B, C) and labels (B,), got {tuple(logits.shape)} and {tuple(labels.shape)}")
    return F.cross_entropy(logits.float(), labels, weight=weight, reduction="sum") / denominator


def train_budget(
    model: nn.Module,
    train_dataset: Any,
    tokenizer: Any,
    *,
    epochs: int = 1,
    max_steps: int | None = None,
    batch_size: int = 32,
    lr: float = 1e-4,
    precision: str = "fp32",
    accumulation_steps: int = 1,
    checkpointing: bool = False,
    trainable: Callable[[str], bool] | None = None,
    class_weights: torch.Tensor | None = None,
    weight_decay: float = 0.01,
    warmup_ratio: float = 0.1,
    max_grad_norm: float = 1.0,
    seed: int = 0,
    group_by_length: bool = False,
    eval_dataset: Any = None,
    eval_every: int | None = None,
    patience: int | None = None,
    eval_batch_size: int = 128,
    measure_memory: bool = False,
    device: torch.device | str | None = None,
    show_progress: bool = True,
) -> History:
    """Fine-tune a sequence classifier in place with the budget switches of chapter 10.

    ``batch_size`` is the micro-batch of one forward pass; an optimizer step sees
    ``batch_size * accumulation_steps`` examples. ``max_steps`` stops after that many optimizer
    steps (and sets the schedule's length). ``trainable(name)`` decides which parameters train
    (the others are frozen); ``None`` leaves ``requires_grad`` as it is. With ``eval_dataset``
    and ``eval_every``, the validation loss is computed every ``eval_every`` optimizer steps; with
    ``patience`` too, training stops after ``patience`` evaluations without a new best, and the
    best weights are put back. ``group_by_length=True`` batches snippets of similar length
    together (:func:`dlbook.finetune.make_loader`), so that little of each batch is padding.
    With everything at its default the result equals
    :func:`dlbook.finetune.train_classifier` (same batches, dropout masks and updates): both are
    the book's one loop, :func:`dlbook.loop.train_loop`, with another loss.
    """
    _check_budget_args(train_dataset, epochs, accumulation_steps, eval_dataset, eval_every, patience)
    device = resolve_device(device, model=model)
    model.to(device)
    _set_trainable(model, trainable)
    weights = _class_weights(class_weights, device)
    loader = make_loader(train_dataset, tokenizer, batch_size, shuffle=True, seed=seed, group_by_length=group_by_length)
    total = epochs * math.ceil(len(loader) / accumulation_steps)
    optimizer = make_optimizer(model, lr, weight_decay)
    scheduler, _ = linear_warmup(optimizer, total if max_steps is None else min(max_steps, total), warmup_ratio)

    def summed_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        batch = {k: v.to(device) for k, v in batch.items()}
        labels = batch.pop("labels")
        logits = model(**batch).logits  # (b, C)
        return F.cross_entropy(logits.float(), labels, weight=weights, reduction="sum")  # / group_weight

    def group_weight(group: list[dict[str, torch.Tensor]]) -> float:
        """Examples in one optimizer step's micro-batches (or the sum of their class weights)."""
        labels = torch.cat([b["labels"] for b in group]).to(device)
        return float(weights[labels].sum()) if weights is not None else float(len(labels))

    def validate() -> dict[str, float]:
        res = evaluate_classifier(model, eval_dataset, tokenizer, batch_size=eval_batch_size, device=device)
        return {"loss": res.loss, "accuracy": res.accuracy}

    step = TrainStep(
        model,
        summed_loss,
        optimizer,
        scheduler=scheduler,
        max_grad_norm=max_grad_norm,
        precision=precision,
        denominator=group_weight,
        device=device,
    )
    with _checkpointing(model, checkpointing):
        return train_loop(
            step,
            loader,
            epochs=epochs,
            accumulation_steps=accumulation_steps,
            max_steps=max_steps,
            seed=seed,
            evaluate=validate if eval_every is not None else None,
            eval_every=eval_every,
            early_stopping=EarlyStopping(patience, restore_best=patience is not None),
            measure_memory=measure_memory,
            name=f"train ({step.precision})",
            show_progress=show_progress,
        )


def _check_budget_args(
    train_dataset: Any, epochs: Any, accumulation_steps: Any, eval_dataset: Any, eval_every: Any, patience: Any
) -> None:
    _check_training_data(train_dataset, epochs)
    if isinstance(accumulation_steps, bool) or not isinstance(accumulation_steps, int) or accumulation_steps < 1:
        raise ValueError(f"accumulation_steps must be a positive int, got {accumulation_steps!r}")
    if (patience is not None or eval_every is not None) and (eval_dataset is None or eval_every is None):
        raise ValueError("early stopping needs eval_dataset and eval_every")


def _set_trainable(model: nn.Module, trainable: Callable[[str], bool] | None) -> None:
    """Freeze the parameters whose name ``trainable`` rejects (``None``: leave them as they are)."""
    if trainable is not None:
        for name, p in model.named_parameters():
            p.requires_grad_(bool(trainable(name)))
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError("no parameter requires a gradient: nothing to train")


def _class_weights(class_weights: Any, device: torch.device) -> torch.Tensor | None:
    if class_weights is None:
        return None
    weights = torch.as_tensor(class_weights, dtype=torch.float32, device=device)
    if weights.dim() != 1:
        raise ValueError(f"class_weights must be 1-D (one weight per class), got shape {tuple(weights.shape)}")
    return weights


def _enable_checkpointing(model: nn.Module) -> bool | None:
    """Gradient (activation) checkpointing on: activations are recomputed in backward.

    Also sets ``model.config.use_cache = False`` where the config has it: a key/value cache is
    useless in training and incompatible with checkpointing (transformers would warn and switch
    it off at every forward pass). Returns the previous ``use_cache`` (``None`` if the config has
    none), for :func:`_checkpointing` to put back.
    """
    if hasattr(model, "activation_checkpointing_enable"):  # the name since transformers 5.2x
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    elif hasattr(model, "gradient_checkpointing_enable"):  # older transformers
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        raise TypeError("checkpointing needs a transformers model with activation_checkpointing_enable()")
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "use_cache"):
        return None
    previous = config.use_cache
    config.use_cache = False
    return previous


@contextlib.contextmanager
def _checkpointing(model: nn.Module, enabled: bool) -> Iterator[None]:
    """Gradient checkpointing (and ``use_cache=False``) for the block if ``enabled``; both undone after it."""
    use_cache = _enable_checkpointing(model) if enabled else None
    try:
        yield
    finally:
        if enabled and hasattr(model, "activation_checkpointing_disable"):
            model.activation_checkpointing_disable()
        elif enabled:
            model.gradient_checkpointing_disable()
        if use_cache is not None:
            model.config.use_cache = use_cache


def model_bytes(model: nn.Module) -> int:
    """Bytes of a model's parameters and buffers as they sit in memory (the weights of a peak-memory table).

    Chapter 10 adds them to the peak that :func:`dlbook.memory.peak_memory` measures, which
    counts only what a step allocates.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected an nn.Module, got {type(model).__name__}")
    tensors = {id(t): t for t in (*model.parameters(), *model.buffers())}  # tied weights once
    return sum(t.numel() * t.element_size() for t in tensors.values())


def make_train_step(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    *,
    precision: str = "fp32",
    accumulation_steps: int = 1,
    checkpointing: bool = False,
    trainable: Callable[[str], bool] | None = None,
    lr: float = 1e-5,
    max_grad_norm: float = 1.0,
    device: torch.device | str | None = None,
) -> Callable[[], float]:
    """One optimizer step of :func:`train_budget` on a fixed ``batch``, as a function of no arguments.

    ``batch`` holds ``input_ids``, ``attention_mask`` (and any other model inputs) and
    ``labels``, all with the same first dimension, which ``accumulation_steps`` must divide: the
    step runs that many equal micro-batches and one AdamW update (constant ``lr``, clipping),
    under autocast for ``precision``, with gradient checkpointing if asked (left on: the model is
    the benchmark's). The first call also creates AdamW's state, so measure peak memory on it
    and time later calls. Each call returns the step's loss. Chapter 10.
    """
    if "labels" not in batch:
        raise ValueError("batch needs a 'labels' tensor")
    n = int(batch["labels"].shape[0])
    if any(v.shape[0] != n for v in batch.values()):
        raise ValueError("every tensor of batch must have the same first dimension")
    if isinstance(accumulation_steps, bool) or not isinstance(accumulation_steps, int) or accumulation_steps < 1:
        raise ValueError(f"accumulation_steps must be a positive int, got {accumulation_steps!r}")
    if n % accumulation_steps:
        raise ValueError(f"accumulation_steps={accumulation_steps} must divide the batch of {n}")
    device = resolve_device(device, model=model)
    model.to(device).train()
    _set_trainable(model, trainable)
    if checkpointing:
        _enable_checkpointing(model)  # left on: the model is the benchmark's
    size = n // accumulation_steps
    micro = [{k: v[i * size : (i + 1) * size].to(device) for k, v in batch.items()} for i in range(accumulation_steps)]

    def summed_loss(model: nn.Module, mb: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = model(**{k: v for k, v in mb.items() if k != "labels"}).logits  # (b, C)
        return F.cross_entropy(logits.float(), mb["labels"], reduction="sum")  # / n, in the step

    step = TrainStep(
        model,
        summed_loss,
        make_optimizer(model, lr, 0.01),
        max_grad_norm=max_grad_norm,
        precision=precision,
        denominator=lambda group: float(n),
        device=device,
    )
    return lambda: step(micro)[0]
