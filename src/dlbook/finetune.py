"""Fine-tuning a BERT-family encoder for sentence classification, in plain PyTorch.

Taught in chapter 9, "Fine-tuning BERT for sentiment". The pieces, in the order the chapter
builds them:

- :func:`tokenize_dataset`: ``datasets.map`` tokenisation, no padding (the collator pads);
- :func:`make_loader`: a ``DataLoader`` with ``DataCollatorWithPadding`` and a seeded shuffle;
- :func:`decay_parameter_names` / :func:`train_classifier`: AdamW with linear warm-up and
  decay, gradient clipping, evaluation after each epoch, progress bars, seeded throughout (a
  thin wrapper of the book's one loop, :func:`dlbook.loop.train_loop`);
- :func:`evaluate_classifier`: accuracy, F1, loss and the class probabilities;
- :func:`calibration_bins` / :func:`expected_calibration_error`: the reliability diagram's data;
- :func:`sentiment_classifier`: THE fine-tuned sentiment model that later chapters (quantization,
  pruning, distillation, serving) start from, trained deterministically per profile and cached
  on disk, so each of those chapters still runs alone.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .env import resolve_device
from .loop import History, TrainStep, train_loop
from .modelcache import cache_key, cache_root, cached_recipe, describe
from .profiles import check_profile
from .progress import progress as _progress

#: Bump when the training recipe below changes, so old caches are not reused.
RECIPE_VERSION = 1
LABELS = ("neg", "pos")

# ---------------------------------------------------------------------------------------------
# the recipe per profile


@dataclass(frozen=True)
class FinetuneSettings:
    """Everything that decides the weights :func:`sentiment_classifier` trains.

    ``n_train=None`` uses the whole training split; ``n_validation=None`` the whole validation
    split (evaluated after each epoch). ``warmup_ratio`` is the share of the optimizer steps
    spent warming up, rounded up (as ``TrainingArguments(warmup_steps=0.1)`` does).
    """

    n_train: int | None
    n_validation: int | None
    max_length: int
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    eval_batch_size: int = 128
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("max_length", "epochs", "batch_size", "eval_batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive int, got {getattr(self, name)!r}")
        for name in ("n_train", "n_validation"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise ValueError(f"{name} must be None or a positive int, got {v!r}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio!r}")
        if self.lr <= 0 or self.weight_decay < 0 or self.max_grad_norm <= 0:
            raise ValueError("lr and max_grad_norm must be > 0 and weight_decay >= 0")


#: The sentiment classifier's recipe in each profile (chapter 9 prints these).
SENTIMENT_SETTINGS: dict[str, FinetuneSettings] = {
    "smoke": FinetuneSettings(n_train=128, n_validation=64, max_length=64, epochs=1, batch_size=32, lr=1e-4),
    "full": FinetuneSettings(n_train=None, n_validation=None, max_length=128, epochs=1, batch_size=32, lr=1e-4),
}


# ---------------------------------------------------------------------------------------------
# data


def tokenize_dataset(dataset: Any, tokenizer: Any, max_length: int, text_column: str = "text", label_column: str = "label"):
    """Tokenise a ``datasets.Dataset`` or ``DatasetDict`` with ``.map(batched=True)``.

    Truncates to ``max_length`` tokens but does not pad (:func:`make_loader`'s collator pads each
    batch to its own longest sequence). Drops every other column and renames the label column to
    ``labels``, the name ``BertForSequenceClassification.forward`` expects.
    """
    if not isinstance(max_length, int) or max_length < 2:
        raise ValueError(f"max_length must be an int >= 2, got {max_length!r}")
    splits = dataset.values() if hasattr(dataset, "values") and callable(dataset.values) else [dataset]
    for split in splits:
        if text_column not in split.column_names or label_column not in split.column_names:
            raise ValueError(f"dataset needs columns {text_column!r} and {label_column!r}, has {split.column_names}")
    first = next(iter(splits))

    def encode(batch: dict[str, list]) -> dict[str, list]:
        return tokenizer(batch[text_column], truncation=True, max_length=max_length)

    drop = [c for c in first.column_names if c != label_column]
    encoded = dataset.map(encode, batched=True, remove_columns=drop)
    return encoded.rename_column(label_column, "labels") if label_column != "labels" else encoded


def make_loader(
    dataset: Any, tokenizer: Any, batch_size: int, shuffle: bool = False, seed: int = 0, group_by_length: bool = False
):
    """A ``DataLoader`` that pads each batch to its longest sequence (``DataCollatorWithPadding``).

    The loader always owns a ``torch.Generator`` seeded with ``seed``: with ``shuffle=True`` it
    decides the order, and in every case it supplies the one number a ``DataLoader`` draws each
    time it starts an iteration, which would otherwise come from the global generator (and shift
    the dropout masks of a training run that evaluates between epochs).

    ``group_by_length=True`` (needs ``shuffle=True``) batches examples of similar length together
    with ``transformers``' ``LengthGroupedSampler``, the sampler behind ``TrainingArguments(
    group_by_length=True)``: a random permutation cut into mega-batches of 50 batches, each sorted
    by length. Batches stay random but carry little padding (on the Rotten Tomatoes training split
    at batch 32: 1.02 padded tokens per real token instead of 1.92). Chapter 14 uses it.
    """
    from torch.utils.data import DataLoader
    from transformers import DataCollatorWithPadding

    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if group_by_length and not shuffle:
        raise ValueError("group_by_length=True needs shuffle=True (it is a way of shuffling)")
    collator = DataCollatorWithPadding(tokenizer, return_tensors="pt")
    generator = torch.Generator().manual_seed(seed)
    if group_by_length:
        from transformers.trainer_pt_utils import LengthGroupedSampler

        if "input_ids" not in dataset.column_names:
            raise ValueError("group_by_length=True needs a tokenised dataset with an 'input_ids' column")
        lengths = [len(ids) for ids in dataset["input_ids"]]
        sampler = LengthGroupedSampler(batch_size, lengths=lengths, generator=generator)
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collator, generator=generator)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, collate_fn=collator, generator=generator)


def batch_token_counts(loader: Any) -> np.ndarray:
    """``(real tokens, tokens including padding)`` of every batch of one pass over ``loader``, (n_batches, 2).

    ``counts[:, 1].sum() / counts[:, 0].sum()`` is the work per real token: 1.0 with no padding.
    Chapters 10 and 14 compare random and length-grouped batches with it.
    """
    rows = []
    for batch in loader:
        if "attention_mask" not in batch:
            raise ValueError("the loader's batches need an 'attention_mask' (use make_loader)")
        rows.append((int(batch["attention_mask"].sum()), batch["attention_mask"].numel()))
    return np.array(rows, dtype=np.int64).reshape(-1, 2)


# ---------------------------------------------------------------------------------------------
# training


def decay_parameter_names(model: nn.Module) -> list[str]:
    """Names of the parameters that get weight decay: all but biases and LayerNorm parameters.

    The same split as ``Trainer.get_decay_parameter_names`` makes for BERT.
    """
    norm_params = {
        f"{mod_name}.{p_name}" if mod_name else p_name
        for mod_name, mod in model.named_modules()
        if isinstance(mod, nn.LayerNorm)
        for p_name, _ in mod.named_parameters(recurse=False)
    }
    return [n for n, _ in model.named_parameters() if n not in norm_params and "bias" not in n.lower()]


def make_optimizer(model: nn.Module, lr: float, weight_decay: float, fused: bool = False) -> torch.optim.AdamW:
    """AdamW (decoupled weight decay) with no decay on biases and LayerNorm parameters.

    ``fused=True`` takes PyTorch's fused AdamW kernel: the same update, computed in one pass over
    each parameter instead of one pass per arithmetic step, several times faster on a CPU (chapter 14
    times it on the narrow student, whose word-embedding table makes the update a large share of a step).
    Results can differ from the default implementation in the last bits of float32.
    """
    if not isinstance(fused, bool):
        raise TypeError(f"fused must be True or False, got {fused!r}")
    decay = set(decay_parameter_names(model))
    groups = [
        {"params": [p for n, p in model.named_parameters() if n in decay and p.requires_grad], "weight_decay": weight_decay},
        {"params": [p for n, p in model.named_parameters() if n not in decay and p.requires_grad], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr, fused=fused or None)


def _to_device(batch: Mapping[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


def linear_warmup(optimizer: torch.optim.Optimizer, total_steps: int, warmup_ratio: float) -> tuple[Any, int]:
    """``get_linear_schedule_with_warmup`` over ``total_steps`` with ``ceil(warmup_ratio * total_steps)``
    warm-up steps (as ``TrainingArguments(warmup_steps=0.1)`` rounds): ``(scheduler, warmup_steps)``.

    The schedule of :func:`train_classifier`, :func:`dlbook.budget.train_budget` and
    :func:`dlbook.distill.train_student`.
    """
    from transformers import get_linear_schedule_with_warmup

    _check_warmup_ratio(warmup_ratio)
    warmup = math.ceil(warmup_ratio * total_steps)
    return get_linear_schedule_with_warmup(optimizer, num_warmup_steps=warmup, num_training_steps=total_steps), warmup


def _check_warmup_ratio(warmup_ratio: float) -> None:
    if not 0.0 <= warmup_ratio < 1.0:
        raise ValueError(f"warmup_ratio must be in [0, 1), got {warmup_ratio!r}")


def _check_training_data(train_dataset: Any, epochs: Any) -> None:
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")
    if "labels" not in train_dataset.column_names:
        raise ValueError("train_dataset needs a 'labels' column: tokenise it with dlbook.finetune.tokenize_dataset()")


def train_classifier(
    model: nn.Module,
    train_dataset: Any,
    tokenizer: Any,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float = 0.01,
    warmup_ratio: float = 0.1,
    max_grad_norm: float = 1.0,
    seed: int = 0,
    eval_dataset: Any = None,
    eval_batch_size: int = 128,
    device: torch.device | str | None = None,
    show_progress: bool = True,
) -> History:
    """Fine-tune ``model`` (a ``...ForSequenceClassification``) on a tokenised dataset, in place.

    The plain-PyTorch loop of chapter 9: shuffled batches from a seeded generator, dynamic
    padding, AdamW with a linear warm-up over ``ceil(warmup_ratio * steps)`` steps then linear
    decay to zero (``get_linear_schedule_with_warmup``), gradient-norm clipping, and, when
    ``eval_dataset`` is given, :func:`evaluate_classifier` after each epoch. Dropout draws from
    the global generator, re-seeded with ``seed`` before the first step: the same call gives the
    same weights on the same machine. The loop is the book's one loop, :func:`dlbook.loop.train_loop`.
    """
    _check_training_data(train_dataset, epochs)
    _check_warmup_ratio(warmup_ratio)
    device = resolve_device(device, model=model)
    model.to(device)
    loader = make_loader(train_dataset, tokenizer, batch_size, shuffle=True, seed=seed)
    optimizer = make_optimizer(model, lr, weight_decay)
    scheduler, warmup = linear_warmup(optimizer, epochs * len(loader), warmup_ratio)

    def batch_loss(model: nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return model(**_to_device(batch, device)).loss  # mean cross-entropy of the batch

    def validate() -> dict[str, float]:
        result = evaluate_classifier(model, eval_dataset, tokenizer, batch_size=eval_batch_size, device=device)
        if show_progress:
            print(
                f"epoch {len(history.evals) + 1}: validation accuracy {result.accuracy:.4f}, "
                f"F1 {result.f1:.4f}, loss {result.loss:.4f}"
            )
        return {"accuracy": result.accuracy, "f1": result.f1, "loss": result.loss}

    step = TrainStep(model, batch_loss, optimizer, scheduler=scheduler, max_grad_norm=max_grad_norm, device=device)
    history = History(warmup_steps=warmup)
    return train_loop(
        step,
        loader,
        epochs=epochs,
        seed=seed,
        evaluate=validate if eval_dataset is not None else None,
        history=history,
        name="train_classifier",
        show_progress=show_progress,
    )


# ---------------------------------------------------------------------------------------------
# evaluation


def binary_f1(preds: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray, positive: int = 1) -> float:
    """F1 of the class ``positive``: :math:`2PR/(P+R)`, 0 when it is never predicted nor present."""
    p, y = np.asarray(preds), np.asarray(labels)
    if p.shape != y.shape or p.ndim != 1:
        raise ValueError(f"preds and labels must be 1-D of the same length, got {p.shape} and {y.shape}")
    tp = int(((p == positive) & (y == positive)).sum())
    fp = int(((p == positive) & (y != positive)).sum())
    fn = int(((p != positive) & (y == positive)).sum())
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


@dataclass
class ClassifierEval:
    """Accuracy, F1 (of class 1 for two classes, macro otherwise), mean cross-entropy, and per example
    the logits and probabilities (N, C), the predictions and the labels (N,), in dataset order."""

    accuracy: float
    f1: float
    loss: float
    logits: torch.Tensor
    probs: torch.Tensor
    preds: torch.Tensor
    labels: torch.Tensor

    def confusion(self) -> torch.Tensor:
        """(C, C) counts: row = true label, column = prediction."""
        c = self.probs.shape[1]
        return torch.bincount(self.labels * c + self.preds, minlength=c * c).reshape(c, c)


@torch.inference_mode()
def evaluate_classifier(
    model: nn.Module,
    dataset: Any,
    tokenizer: Any,
    *,
    batch_size: int = 128,
    device: torch.device | str | None = None,
    show_progress: bool = False,
) -> ClassifierEval:
    """Evaluate a sequence classifier on a tokenised dataset (with ``labels``), in eval mode.

    Batches are formed shortest-first to save padding; the outputs come back in dataset order.
    Used by chapter 9 and by every later chapter that reports the classifier's accuracy.
    """
    if "labels" not in dataset.column_names:
        raise ValueError("dataset needs a 'labels' column: tokenise it with tokenize_dataset()")
    device = resolve_device(device, model=model)
    was_training = model.training
    model.eval().to(device)
    lengths = np.array([len(x) for x in dataset["input_ids"]])
    order = np.argsort(lengths, kind="stable")
    loader = make_loader(dataset.select(order), tokenizer, batch_size)
    bar = _progress(total=len(loader), desc="eval", disable=not show_progress)
    chunks = []
    for batch in loader:
        chunks.append(model(**_to_device(batch, device)).logits.float().cpu())  # (b, C)
        bar.update(1)
    bar.close()
    logits = torch.cat(chunks)
    unsort = torch.empty(len(order), dtype=torch.long)
    unsort[torch.as_tensor(order)] = torch.arange(len(order))
    logits = logits[unsort]  # (N, C) in dataset order
    labels = torch.as_tensor(list(dataset["labels"]), dtype=torch.long)
    probs = logits.softmax(-1)
    preds = probs.argmax(-1)
    if probs.shape[1] == 2:
        f1 = binary_f1(preds, labels)
    else:
        f1 = float(np.mean([binary_f1(preds, labels, positive=c) for c in range(probs.shape[1])]))
    model.train(was_training)
    return ClassifierEval(
        accuracy=float((preds == labels).float().mean()),
        f1=f1,
        loss=float(F.cross_entropy(logits, labels)),
        logits=logits,
        probs=probs,
        preds=preds,
        labels=labels,
    )


def compute_metrics(eval_pred: Any) -> dict[str, float]:
    """``Trainer``'s ``compute_metrics``: accuracy and F1 from ``(logits, labels)`` numpy arrays."""
    logits, labels = eval_pred
    preds = np.asarray(logits).argmax(-1)
    labels = np.asarray(labels)
    return {"accuracy": float((preds == labels).mean()), "f1": binary_f1(preds, labels)}


# ---------------------------------------------------------------------------------------------
# calibration


def calibration_bins(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 10) -> dict[str, torch.Tensor]:
    """Top-label reliability data: ``n_bins`` equal-width bins of confidence on [0, 1].

    A prediction with confidence ``c = max_k p_k`` goes to the bin ``(lo, hi]`` holding it (the
    first bin also takes 0). Returns ``count``, ``accuracy`` and ``confidence`` per bin (NaN
    where a bin is empty) and the bin ``edges``.
    """
    if probs.dim() != 2 or labels.dim() != 1 or probs.shape[0] != labels.shape[0]:
        raise ValueError(f"need probs (N, C) and labels (N,), got {tuple(probs.shape)} and {tuple(labels.shape)}")
    if not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive int, got {n_bins!r}")
    conf, pred = probs.double().max(-1)
    correct = (pred == labels).double()
    edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64)
    idx = torch.bucketize(conf, edges[1:-1], right=False)  # (lo, hi]
    count = torch.bincount(idx, minlength=n_bins).double()
    acc = torch.bincount(idx, weights=correct, minlength=n_bins) / count
    mean_conf = torch.bincount(idx, weights=conf, minlength=n_bins) / count
    return {"count": count, "accuracy": acc, "confidence": mean_conf, "edges": edges}


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 10) -> float:
    """ECE of Guo et al. (2017): :math:`\\sum_b \\frac{n_b}{N} |\\mathrm{acc}_b - \\mathrm{conf}_b|`."""
    bins = calibration_bins(probs, labels, n_bins)
    n = bins["count"]
    gap = (bins["accuracy"] - bins["confidence"]).abs().nan_to_num(0.0)
    return float((n / n.sum() * gap).sum())


# ---------------------------------------------------------------------------------------------
# the cached sentiment classifier


def sentiment_key(profile: str, device: torch.device | str | None = None) -> tuple[str, dict[str, Any]]:
    """The cache folder name of :func:`sentiment_classifier` and the description it hashes.

    The hash covers the recipe, the library and data versions and the device type: anything
    that changes the trained weights changes the folder.
    """
    check_profile(profile)
    device = resolve_device(device)
    described = describe(RECIPE_VERSION, profile, SENTIMENT_SETTINGS[profile], device)
    return cache_key(f"sentiment-{profile}", described), described


def new_classifier(path: str | os.PathLike[str] | None = None, **config: Any) -> nn.Module:
    """MiniLM with a new, randomly initialised two-label classification head (chapter 9).

    The head's weights are drawn from torch's global generator, so seed it first
    (``torch.manual_seed``) for the same head every time. ``transformers`` reports every load
    whose checkpoint lacks some weights; here the missing head is the point (chapter 9 explains
    it), so that report is silenced for this one call and left on everywhere else. ``config``
    overrides fields of the checkpoint's ``BertConfig`` (e.g. ``hidden_dropout_prob=0.0``, as
    chapter 16's scripts do); an unknown field is an error, and so are the label fields, which
    this function sets itself (the book's two labels, :data:`LABELS`).
    """
    from transformers import BertConfig, BertForSequenceClassification
    from transformers.utils import logging as hf_logging

    fixed = sorted(k for k in config if k in ("num_labels", "id2label", "label2id"))
    if fixed:
        raise ValueError(f"new_classifier sets {fixed} itself (the labels {list(LABELS)}); leave them out")
    defaults = BertConfig()
    unknown = sorted(k for k in config if not hasattr(defaults, k) or callable(getattr(defaults, k)))
    if unknown:
        raise ValueError(f"unknown BertConfig field(s) {unknown}")

    from .assets import minilm_path

    before = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        return BertForSequenceClassification.from_pretrained(
            path or minilm_path(),
            num_labels=len(LABELS),
            id2label=dict(enumerate(LABELS)),
            label2id={n: i for i, n in enumerate(LABELS)},
            **config,
        )
    finally:
        hf_logging.set_verbosity(before)


def _train_sentiment(profile: str, device: torch.device) -> tuple[nn.Module, Any, dict[str, Any]]:
    from transformers import AutoTokenizer

    from .assets import minilm_path, rotten_tomatoes

    s = SENTIMENT_SETTINGS[profile]
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    data = rotten_tomatoes()
    train = data["train"] if s.n_train is None else data["train"].select(range(s.n_train))
    val = data["validation"] if s.n_validation is None else data["validation"].select(range(s.n_validation))
    train, val = tokenize_dataset(train, tokenizer, s.max_length), tokenize_dataset(val, tokenizer, s.max_length)
    torch.manual_seed(s.seed)  # the fresh classifier weights
    model = new_classifier()
    history = train_classifier(
        model,
        train,
        tokenizer,
        epochs=s.epochs,
        batch_size=s.batch_size,
        lr=s.lr,
        weight_decay=s.weight_decay,
        warmup_ratio=s.warmup_ratio,
        max_grad_norm=s.max_grad_norm,
        seed=s.seed,
        eval_dataset=val,
        eval_batch_size=s.eval_batch_size,
        device=device,
    )
    info = {"n_train": len(train), "n_validation": len(val), "history": history.to_dict()}
    return model, tokenizer, info


def sentiment_classifier(
    profile: str, cache_dir: str | os.PathLike[str] | None = None, device: torch.device | str | None = None
) -> tuple[nn.Module, Any, dict[str, Any]]:
    """The book's fine-tuned sentiment classifier: ``(model, tokenizer, info)``.

    ``BertForSequenceClassification`` on the offline MiniLM encoder, fine-tuned on the Rotten
    Tomatoes training split with :func:`train_classifier` and the recipe
    ``SENTIMENT_SETTINGS[profile]``. The first call trains it (about five minutes on two CPU
    cores in ``full``, seconds in ``smoke``) and saves it with ``save_pretrained`` under
    ``cache_dir`` (default :func:`cache_root`, i.e. ``$DLBOOK_CACHE`` or ``~/.cache/dlbook``) in a
    folder named by a hash of the recipe and the versions; later calls load it with
    ``from_pretrained``. Same profile, versions and device type: same weights. The global random
    generators are left as they were, so what a chapter does next does not depend on whether
    the model came from the cache.

    ``info`` holds the settings, the training history (loss and learning rate per step,
    validation metrics per epoch), the folder, and ``from_cache``. Taught in chapter 9; the
    compression and serving chapters start from it.
    """
    return cached_recipe(
        "sentiment",
        RECIPE_VERSION,
        profile,
        SENTIMENT_SETTINGS[profile],
        lambda d: _train_sentiment(profile, d),
        label="sentiment classifier",
        device=device,
        cache_dir=cache_dir,
    )


__all__ = [
    "new_classifier",
    "LABELS",
    "SENTIMENT_SETTINGS",
    "ClassifierEval",
    "FinetuneSettings",
    "batch_token_counts",
    "binary_f1",
    "cache_root",
    "calibration_bins",
    "compute_metrics",
    "decay_parameter_names",
    "evaluate_classifier",
    "expected_calibration_error",
    "make_loader",
    "linear_warmup",
    "make_optimizer",
    "sentiment_classifier",
    "sentiment_key",
    "tokenize_dataset",
    "train_classifier",
]
