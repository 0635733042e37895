"""Fine-tuning on a budget: one training loop with the memory- and compute-saving switches.

Taught in chapter 10, "Fine-tuning on a budget". :func:`train_budget` is chapter 9's loop
(:func:`dlbook.finetune.train_classifier`: AdamW without decay on biases and LayerNorm, linear
warm-up and decay, gradient clipping, seeded order and dropout) with flags for

- ``precision``: ``"fp32"``, ``"bf16"``, ``"fp16"`` or ``"auto"`` (:func:`resolve_precision`):
  the forward pass runs under ``torch.autocast``; fp16 adds a ``torch.amp.GradScaler``;
- ``accumulation_steps``: k micro-batches of ``batch_size`` per optimizer step, with the loss
  scaled so that the gradient is the one of the whole group as one batch;
- ``checkpointing``: ``activation_checkpointing_enable()`` (transformers 5's name for gradient
  checkpointing: recompute activations in backward);
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
import copy
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .finetune import evaluate_classifier, make_loader, make_optimizer
from .memory import peak_memory
from .progress import progress as _progress

__all__ = [
    "DTYPES", "PRECISIONS", "BudgetHistory", "autocast_context", "make_train_step", "model_bytes", "resolve_precision",
    "train_budget", "weighted_group_loss",
]

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


@dataclass
class BudgetHistory:
    """What :func:`train_budget` recorded. ``step_seconds`` is the wall time of each optimizer step
    (all its micro-batches); ``peak_bytes`` the peak memory of the first step, if measured."""

    step_loss: list[float] = field(default_factory=list)
    step_seconds: list[float] = field(default_factory=list)
    evals: list[dict[str, float]] = field(default_factory=list)
    precision: str = "fp32"
    total_steps: int = 0
    peak_bytes: int | None = None
    memory_method: str | None = None
    best_step: int | None = None
    stopped_early: bool = False
    seconds: float = 0.0

    def seconds_per_step(self, skip_first: int = 1) -> float:
        """Median wall time of an optimizer step, leaving out the first ``skip_first`` (warm-up, memory tracking)."""
        times = self.step_seconds[skip_first:] or self.step_seconds
        return float(torch.tensor(times).median()) if times else math.nan

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _groups(loader: Any, k: int) -> Iterator[list[dict[str, torch.Tensor]]]:
    group: list[dict[str, torch.Tensor]] = []
    for batch in loader:
        group.append(batch)
        if len(group) == k:
            yield group
            group = []
    if group:
        yield group


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
) -> BudgetHistory:
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
    :func:`dlbook.finetune.train_classifier` (same batches, dropout masks and updates).
    """
    from transformers import get_linear_schedule_with_warmup

    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")
    if not isinstance(accumulation_steps, int) or accumulation_steps < 1:
        raise ValueError(f"accumulation_steps must be a positive int, got {accumulation_steps!r}")
    if max_steps is not None and (not isinstance(max_steps, int) or max_steps < 1):
        raise ValueError(f"max_steps must be None or a positive int, got {max_steps!r}")
    if (patience is not None or eval_every is not None) and (eval_dataset is None or eval_every is None):
        raise ValueError("early stopping needs eval_dataset and eval_every")
    if eval_every is not None and (not isinstance(eval_every, int) or eval_every < 1):
        raise ValueError(f"eval_every must be a positive int, got {eval_every!r}")
    if patience is not None and (not isinstance(patience, int) or patience < 1):
        raise ValueError(f"patience must be a positive int, got {patience!r}")
    if not 0.0 <= warmup_ratio < 1.0:
        raise ValueError(f"warmup_ratio must be in [0, 1), got {warmup_ratio!r}")
    if "labels" not in train_dataset.column_names:
        raise ValueError("train_dataset needs a 'labels' column: tokenise it with dlbook.finetune.tokenize_dataset()")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    prec = resolve_precision(precision, device)
    model.to(device)
    if trainable is not None:
        for name, p in model.named_parameters():
            p.requires_grad_(bool(trainable(name)))
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError("no parameter requires a gradient: nothing to train")
    if class_weights is not None:
        class_weights = torch.as_tensor(class_weights, dtype=torch.float32, device=device)
        if class_weights.dim() != 1:
            raise ValueError(f"class_weights must be 1-D (one weight per class), got shape {tuple(class_weights.shape)}")
    enabled_checkpointing = False
    if checkpointing:
        if hasattr(model, "activation_checkpointing_enable"):  # the name since transformers 5.2x
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        elif hasattr(model, "gradient_checkpointing_enable"):  # older transformers
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        else:
            raise TypeError("checkpointing needs a transformers model with activation_checkpointing_enable()")
        enabled_checkpointing = True

    loader = make_loader(train_dataset, tokenizer, batch_size, shuffle=True, seed=seed, group_by_length=group_by_length)
    per_epoch = math.ceil(len(loader) / accumulation_steps)
    total = epochs * per_epoch if max_steps is None else min(max_steps, epochs * per_epoch)
    warmup = math.ceil(warmup_ratio * total)
    optimizer = make_optimizer(model, lr, weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, num_warmup_steps=warmup, num_training_steps=total)
    scaler = torch.amp.GradScaler(device.type, enabled=prec == "fp16")
    params = [p for p in model.parameters() if p.requires_grad]
    history = BudgetHistory(precision=prec, total_steps=total)
    best_loss, best_state, bad_evals = math.inf, None, 0

    def one_step(group: list[dict[str, torch.Tensor]]) -> float:
        labels_all = torch.cat([b["labels"] for b in group]).to(device)
        denom = float(class_weights[labels_all].sum()) if class_weights is not None else float(len(labels_all))
        total_loss = 0.0
        for batch in group:
            batch = {k: v.to(device) for k, v in batch.items()}
            labels = batch.pop("labels")
            with autocast_context(prec, device):
                logits = model(**batch).logits  # (b, C)
            loss = weighted_group_loss(logits, labels, class_weights, denom)
            scaler.scale(loss).backward()
            total_loss += loss.item()
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(params, max_grad_norm)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        return total_loss

    torch.manual_seed(seed)  # dropout masks
    start = time.perf_counter()
    step = 0
    bar = _progress(total=total, desc=f"train ({prec})", disable=not show_progress)
    try:
        for _ in range(epochs):
            model.train()
            for group in _groups(loader, accumulation_steps):
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                t0 = time.perf_counter()
                if measure_memory and step == 0:
                    measured = peak_memory(lambda g=group: one_step(g), device)
                    loss_value = measured.result
                    history.peak_bytes, history.memory_method = measured.peak_bytes, measured.method
                else:
                    loss_value = one_step(group)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                history.step_seconds.append(time.perf_counter() - t0)
                history.step_loss.append(loss_value)
                step += 1
                bar.set_postfix(loss=f"{loss_value:.3f}", refresh=False)
                bar.update(1)
                if eval_every is not None and (step % eval_every == 0 or step == total):
                    res = evaluate_classifier(model, eval_dataset, tokenizer, batch_size=eval_batch_size, device=device)
                    history.evals.append({"step": step, "loss": res.loss, "accuracy": res.accuracy})
                    model.train()
                    if res.loss < best_loss:
                        best_loss, bad_evals, history.best_step = res.loss, 0, step
                        if patience is not None:
                            best_state = copy.deepcopy(model.state_dict())
                    else:
                        bad_evals += 1
                    if patience is not None and bad_evals >= patience:
                        history.stopped_early = step < total
                        break
                if step >= total:
                    break
            if step >= total or history.stopped_early:
                break
    finally:
        bar.close()
        if enabled_checkpointing:
            if hasattr(model, "activation_checkpointing_disable"):
                model.activation_checkpointing_disable()
            else:
                model.gradient_checkpointing_disable()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    history.seconds = time.perf_counter() - start
    return history


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
    device = torch.device(device) if device is not None else next(model.parameters()).device
    prec = resolve_precision(precision, device)
    model.to(device).train()
    if trainable is not None:
        for name, p in model.named_parameters():
            p.requires_grad_(bool(trainable(name)))
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("no parameter requires a gradient: nothing to train")
    if checkpointing:
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        elif hasattr(model, "gradient_checkpointing_enable"):
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        else:
            raise TypeError("checkpointing needs a transformers model with activation_checkpointing_enable()")
    size = n // accumulation_steps
    micro = [{k: v[i * size:(i + 1) * size].to(device) for k, v in batch.items()} for i in range(accumulation_steps)]
    optimizer = make_optimizer(model, lr, 0.01)
    scaler = torch.amp.GradScaler(device.type, enabled=prec == "fp16")

    def step() -> float:
        total = 0.0
        for mb in micro:
            inputs = {k: v for k, v in mb.items() if k != "labels"}
            with autocast_context(prec, device):
                logits = model(**inputs).logits  # (b, C)
            loss = weighted_group_loss(logits, mb["labels"], None, float(n))
            scaler.scale(loss).backward()
            total += loss.item()
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(params, max_grad_norm)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        return total

    return step
