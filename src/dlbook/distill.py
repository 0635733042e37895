"""Knowledge distillation of the sentiment classifier into smaller students.

Taught in chapter 14, "Knowledge distillation"; chapter 15 (the compression scoreboard) imports
:func:`distilled_student`. The pieces, in the order the chapter builds them:

- :func:`soft_targets` and :func:`distillation_loss`: Hinton et al.'s (2015) loss
  ``alpha * CE(y, p_s) + (1 - alpha) * T^2 * KL(p_t^(T) || p_s^(T))``;
- :func:`student_from_teacher`: a shallower copy of the teacher keeping some of its layers;
- :func:`narrow_student`: a thinner BERT trained from scratch on the teacher's tokenizer;
- :func:`teacher_logits` and :func:`train_student`: the frozen teacher's logits computed once,
  then a training loop that mixes them with the labels;
- :func:`set_embedding_mode` and :class:`ProjectedEmbedding`: cheaper steps by freezing the
  word-embedding table or training it as the teacher's table times a small projection;
- :func:`distilled_student`: THE students (``kind="layers"`` or ``"narrow"``, with or without
  distillation), trained deterministically per profile and cached with
  :func:`dlbook.modelcache.cached_model`.
"""

from __future__ import annotations

import copy
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .env import resolve_device
from .finetune import (
    _check_training_data,
    evaluate_classifier,
    linear_warmup,
    make_loader,
    make_optimizer,
    tokenize_dataset,
)
from .loop import History, TrainStep, train_loop
from .modelcache import KeepRandomState, cached_recipe, describe, load_classifier
from .profiles import check_profile

#: Bump when a recipe below changes, so old caches are not reused.
RECIPE_VERSION = 4
KINDS = ("layers", "narrow")
#: The label of an unlabelled training snippet (a transfer-set snippet): PyTorch's ignore_index.
IGNORE_LABEL = -100
EMBEDDING_MODES = ("train", "freeze", "project")

# ---------------------------------------------------------------------------------------------
# the loss


def _check_temperature_alpha(temperature: float, alpha: float) -> None:
    if isinstance(temperature, bool) or not isinstance(temperature, int | float) or not math.isfinite(temperature):
        raise TypeError(f"temperature must be a finite number, got {temperature!r}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}")


def soft_targets(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``softmax(logits / T)`` over the last dimension: the teacher's softened probabilities."""
    _check_temperature_alpha(temperature, 0.0)
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
        raise TypeError("logits must be a floating-point tensor")
    return torch.softmax(logits / temperature, dim=-1)


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor | None,
    *,
    temperature: float,
    alpha: float,
) -> torch.Tensor:
    """Hinton et al.'s distillation loss, averaged over the batch (chapter 14).

    ``alpha * CE(labels, softmax(s)) + (1 - alpha) * T**2 * KL(softmax(t / T) || softmax(s / T))``
    for student logits ``s`` and teacher logits ``t``, both (N, C). The KL term is summed over
    the classes and averaged over the N examples (``F.kl_div(..., reduction="batchmean")``); the
    factor ``T**2`` keeps its gradient of the same size whatever the temperature. ``labels``
    (N,) int64 may be ``None`` only when ``alpha == 0``. A label :data:`IGNORE_LABEL` (-100)
    marks an unlabelled example (a transfer-set snippet only the teacher labels): its label term
    is zero, the label term is still divided by all N, so with every example labelled this is
    the formula above. The teacher's logits get no gradient.
    """
    _check_temperature_alpha(temperature, alpha)
    if not isinstance(student_logits, torch.Tensor) or not isinstance(teacher_logits, torch.Tensor):
        raise TypeError("student_logits and teacher_logits must be tensors")
    if student_logits.dim() != 2 or student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student and teacher logits must both be (N, C) with the same shape, got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        )
    t = temperature
    log_p_s = F.log_softmax(student_logits / t, dim=-1)  # (N, C)
    log_p_t = F.log_softmax(teacher_logits.detach().to(student_logits.dtype) / t, dim=-1)  # (N, C)
    soft = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * t**2
    if alpha == 0:
        return soft
    if labels is None:
        raise ValueError("labels are needed when alpha > 0")
    if labels.shape != student_logits.shape[:1] or labels.dtype != torch.long:
        n = student_logits.shape[0]
        raise ValueError(f"labels must be (N,) int64 for N = {n}, got {tuple(labels.shape)} {labels.dtype}")
    # the label term summed over the labelled examples, divided by all N: an unlabelled example
    # (IGNORE_LABEL, a transfer-set snippet) contributes the teacher term only
    hard = F.cross_entropy(student_logits, labels, ignore_index=IGNORE_LABEL, reduction="sum")
    return alpha * hard / student_logits.shape[0] + (1 - alpha) * soft


# ---------------------------------------------------------------------------------------------
# the students


def student_from_teacher(teacher: nn.Module, layers: Sequence[int]) -> nn.Module:
    """A shallower copy of a BERT classifier that keeps the encoder layers ``layers`` (chapter 14).

    Embeddings, the kept layers (in the order given), the pooler and the classifier are deep
    copies of the teacher's; the config says ``num_hidden_layers=len(layers)``. The teacher is not
    changed. DistilBERT initialised its student the same way, from every other layer of BERT.
    """
    if not hasattr(teacher, "bert") or not hasattr(teacher.bert, "encoder"):
        raise TypeError(f"teacher must be a BertForSequenceClassification-like model, got {type(teacher).__name__}")
    layers = list(layers)
    n = len(teacher.bert.encoder.layer)
    if not layers:
        raise ValueError("layers must name at least one encoder layer")
    for i in layers:
        if isinstance(i, bool) or not isinstance(i, int):
            raise TypeError(f"layer indices must be ints, got {i!r}")
        if not 0 <= i < n:
            raise ValueError(f"layer index {i} is out of range: the teacher has layers 0..{n - 1}")
    if len(set(layers)) != len(layers):
        raise ValueError(f"layer indices must be distinct, got {layers}")
    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = len(layers)
    student = type(teacher)(config)
    student.bert.embeddings.load_state_dict(teacher.bert.embeddings.state_dict())
    for new, old in enumerate(layers):
        student.bert.encoder.layer[new].load_state_dict(teacher.bert.encoder.layer[old].state_dict())
    if teacher.bert.pooler is not None:
        student.bert.pooler.load_state_dict(teacher.bert.pooler.state_dict())
    student.classifier.load_state_dict(teacher.classifier.state_dict())
    return student.to(next(teacher.parameters()).device)


def narrow_student(
    vocab_size: int,
    *,
    hidden_size: int = 256,
    num_layers: int = 4,
    num_heads: int = 4,
    intermediate_size: int | None = None,
    num_labels: int = 2,
    max_position_embeddings: int = 512,
    pad_token_id: int = 0,
    teacher_embeddings: torch.Tensor | None = None,
    seed: int = 0,
) -> nn.Module:
    """A thinner ``BertForSequenceClassification`` with random weights, for the teacher's tokenizer.

    ``intermediate_size`` defaults to ``4 * hidden_size``. With ``teacher_embeddings`` (the
    teacher's (vocab_size, d) word-embedding table) the student's word embeddings start as that
    table times a fixed random projection ``R`` (d, hidden_size) with N(0, 1/hidden_size) entries,
    rescaled so the rows keep the teacher's mean norm: tokens the teacher puts close together start
    close together. Everything else is drawn from a generator seeded with ``seed`` (chapter 14).
    """
    from transformers import BertConfig, BertForSequenceClassification

    for name, v in (
        ("vocab_size", vocab_size),
        ("hidden_size", hidden_size),
        ("num_layers", num_layers),
        ("num_heads", num_heads),
        ("num_labels", num_labels),
    ):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    if hidden_size % num_heads:
        raise ValueError(f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}")
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=intermediate_size or 4 * hidden_size,
        max_position_embeddings=max_position_embeddings,
        pad_token_id=pad_token_id,
        num_labels=num_labels,
        id2label={i: f"LABEL_{i}" for i in range(num_labels)} if num_labels != 2 else {0: "neg", 1: "pos"},
        label2id={f"LABEL_{i}": i for i in range(num_labels)} if num_labels != 2 else {"neg": 0, "pos": 1},
    )
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = BertForSequenceClassification(config)
    finally:
        torch.random.set_rng_state(state)
    if teacher_embeddings is not None:
        if teacher_embeddings.dim() != 2 or teacher_embeddings.shape[0] != vocab_size:
            raise ValueError(f"teacher_embeddings must be ({vocab_size}, d), got {tuple(teacher_embeddings.shape)}")
        e = teacher_embeddings.detach().float().cpu()  # (V, d)
        with torch.no_grad():
            model.bert.embeddings.word_embeddings.weight.copy_(e @ embedding_projection(e, hidden_size, seed))
    return model


def embedding_projection(teacher_embeddings: torch.Tensor, hidden_size: int, seed: int = 0) -> torch.Tensor:
    """The fixed random projection (d, hidden_size) that gives :func:`narrow_student` its word embeddings.

    Entries are N(0, 1/hidden_size) from a generator seeded with ``seed``, then scaled so that the
    rows of ``teacher_embeddings @ projection`` have the teacher's mean row norm (chapter 14).
    """
    if not isinstance(teacher_embeddings, torch.Tensor) or teacher_embeddings.dim() != 2:
        raise ValueError("teacher_embeddings must be a (vocab_size, d) tensor")
    if isinstance(hidden_size, bool) or not isinstance(hidden_size, int) or hidden_size < 1:
        raise ValueError(f"hidden_size must be a positive int, got {hidden_size!r}")
    e = teacher_embeddings.detach().float().cpu()  # (V, d)
    g = torch.Generator().manual_seed(seed)
    proj = torch.randn(e.shape[1], hidden_size, generator=g) / math.sqrt(hidden_size)  # (d, h)
    return proj * (e.norm(dim=1).mean() / (e @ proj).norm(dim=1).mean())


class ProjectedEmbedding(nn.Module):
    """Word embeddings as a frozen table times a trainable projection: ``table[ids] @ projection``.

    ALBERT's factorised embedding (Lan et al., 2020) with the big factor frozen: ``table`` (V, d)
    is the teacher's word-embedding table, a buffer; only ``projection`` (d, h) trains. A step
    then updates d * h numbers instead of V * h, and every row of the product moves with the
    projection, also the rows of words the training data never shows. :meth:`fold` multiplies
    the factors out into the plain ``nn.Embedding`` (V, h) the model is saved with. Chapter 14
    trains the 3-layer student's table this way (``d = h = 384``, the projection starting as the
    identity) and measures what it saves.
    """

    def __init__(self, table: torch.Tensor, projection: torch.Tensor, padding_idx: int | None = None) -> None:
        super().__init__()
        if table.dim() != 2 or projection.dim() != 2 or table.shape[1] != projection.shape[0]:
            raise ValueError(f"need table (V, d) and projection (d, h), got {tuple(table.shape)} and {tuple(projection.shape)}")
        self.register_buffer("table", table.detach().float().clone())
        self.projection = nn.Parameter(projection.detach().float().clone())
        self.padding_idx = padding_idx

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(input_ids, self.table) @ self.projection  # (..., d) @ (d, h) -> (..., h)

    @property
    def weight(self) -> torch.Tensor:
        """The full (V, h) table the two factors stand for."""
        return self.table @ self.projection

    def fold(self) -> nn.Embedding:
        """The equivalent ``nn.Embedding`` (V, h), with the same padding index."""
        with torch.no_grad():
            return nn.Embedding.from_pretrained(self.weight, freeze=False, padding_idx=self.padding_idx)


# ---------------------------------------------------------------------------------------------
# training


def teacher_logits(
    teacher: nn.Module, dataset: Any, tokenizer: Any, *, batch_size: int = 128, device: torch.device | str | None = None
) -> torch.Tensor:
    """The frozen teacher's logits (N, C) on a tokenised dataset, in dataset order, on the CPU."""
    return evaluate_classifier(teacher, dataset, tokenizer, batch_size=batch_size, device=device).logits


def train_student(
    student: nn.Module,
    train_dataset: Any,
    tokenizer: Any,
    *,
    teacher_logits: torch.Tensor | None,
    temperature: float = 2.0,
    alpha: float = 0.5,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float = 0.01,
    warmup_ratio: float = 0.1,
    max_grad_norm: float = 1.0,
    seed: int = 0,
    group_by_length: bool = False,
    device: torch.device | str | None = None,
    show_progress: bool = True,
) -> History:
    """Train a student classifier in place, with :func:`distillation_loss` or plain cross-entropy.

    The loop of chapter 9's :func:`dlbook.finetune.train_classifier` (seeded shuffle, AdamW with
    warm-up and linear decay, clipping; here AdamW's fused kernel) where each batch's loss is :func:`distillation_loss`
    against the rows of ``teacher_logits`` (N, C, precomputed once with :func:`teacher_logits`)
    belonging to the batch, or, with ``teacher_logits=None``, the cross-entropy of the labels
    alone (the ablation). ``group_by_length=True`` batches snippets of similar length together
    (:func:`dlbook.finetune.make_loader`), which removes most of the padding (chapter 14 measures
    it). Taught in chapter 14.
    """
    _check_student_data(train_dataset, teacher_logits, temperature, alpha, epochs)
    device = resolve_device(device, model=student)
    student.to(device)
    data = train_dataset.add_column("row", list(range(len(train_dataset))))
    loader = make_loader(data, tokenizer, batch_size, shuffle=True, seed=seed, group_by_length=group_by_length)
    optimizer = make_optimizer(student, lr, weight_decay, fused=True)
    scheduler, warmup = linear_warmup(optimizer, epochs * len(loader), warmup_ratio)
    targets = teacher_logits.float().to(device) if teacher_logits is not None else None

    def batch_loss(student: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        rows = batch.pop("row")
        labels = batch.pop("labels").to(device)
        logits = student(**{k: v.to(device) for k, v in batch.items()}).logits  # (B, C)
        if targets is None:
            return F.cross_entropy(logits, labels)
        return distillation_loss(logits, targets[rows.to(device)], labels, temperature=temperature, alpha=alpha)

    step = TrainStep(student, batch_loss, optimizer, scheduler=scheduler, max_grad_norm=max_grad_norm, device=device)
    return train_loop(
        step,
        loader,
        epochs=epochs,
        seed=seed,
        history=History(warmup_steps=warmup),
        name="train_student",
        show_progress=show_progress,
    )


def _check_student_data(
    train_dataset: Any, teacher_logits: torch.Tensor | None, temperature: float, alpha: float, epochs: int
) -> None:
    _check_training_data(train_dataset, epochs)
    if teacher_logits is None and IGNORE_LABEL in set(train_dataset["labels"]):
        raise ValueError("unlabelled snippets (IGNORE_LABEL) need teacher_logits: labels-only training cannot use them")
    if teacher_logits is not None:
        _check_temperature_alpha(temperature, alpha)
        if teacher_logits.dim() != 2 or teacher_logits.shape[0] != len(train_dataset):
            raise ValueError(f"teacher_logits must be (N, C) with N = {len(train_dataset)}, got {tuple(teacher_logits.shape)}")


# ---------------------------------------------------------------------------------------------
# the cached students


@dataclass(frozen=True)
class StudentSettings:
    """Everything that decides the weights of one :func:`distilled_student`.

    ``embeddings`` says how the student's word-embedding table trains (:data:`EMBEDDING_MODES`):
    ``"train"`` every entry, ``"freeze"`` not at all, ``"project"`` as the frozen teacher table
    times a trainable projection (:class:`ProjectedEmbedding`, see :func:`set_embedding_mode`).
    """

    n_train: int | None
    max_length: int
    epochs: int
    batch_size: int
    lr: float
    temperature: float
    alpha: float
    layers: tuple[int, ...] = (0, 2, 4)
    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    project_embeddings: bool = True
    embeddings: str = "train"
    group_by_length: bool = True
    dropout: float | None = None
    seed: int = 0


#: The students' recipes per profile and kind (chapter 14 prints them).
STUDENT_SETTINGS: dict[str, dict[str, StudentSettings]] = {
    "smoke": {
        "layers": StudentSettings(
            n_train=128,
            max_length=64,
            epochs=1,
            batch_size=32,
            lr=1e-4,
            temperature=2.0,
            alpha=0.5,
            embeddings="project",
            dropout=0.0,
        ),
        "narrow": StudentSettings(
            n_train=128, max_length=64, epochs=1, batch_size=32, lr=3e-4, temperature=4.0, alpha=0.5, num_layers=2
        ),
    },
    "full": {
        "layers": StudentSettings(
            n_train=None,
            max_length=64,
            epochs=1,
            batch_size=32,
            lr=1e-4,
            temperature=2.0,
            alpha=0.5,
            embeddings="project",
            dropout=0.0,
        ),
        "narrow": StudentSettings(
            n_train=None, max_length=64, epochs=4, batch_size=32, lr=3e-4, temperature=4.0, alpha=0.5, num_layers=2
        ),
    },
}


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown student kind {kind!r}; choose one of {KINDS}")


def student_key(profile: str, kind: str, distill: bool, device: torch.device | str | None = None) -> dict[str, Any]:
    """The description :func:`distilled_student` hashes into its cache folder name."""
    from .finetune import sentiment_key

    check_profile(profile)
    _check_kind(kind)
    device = resolve_device(device)
    teacher_folder, _ = sentiment_key(profile, device)
    return describe(
        RECIPE_VERSION,
        profile,
        STUDENT_SETTINGS[profile][kind],
        device,
        kind=kind,
        distill=bool(distill),
        teacher=teacher_folder,
    )


def build_student(kind: str, teacher: nn.Module, settings: StudentSettings) -> nn.Module:
    """The untrained student of ``kind`` for ``teacher`` with ``settings`` (see :func:`distilled_student`)."""
    _check_kind(kind)
    if kind == "layers":
        return student_from_teacher(teacher, settings.layers)
    emb = teacher.bert.embeddings.word_embeddings.weight if settings.project_embeddings else None
    return narrow_student(
        teacher.config.vocab_size,
        hidden_size=settings.hidden_size,
        num_layers=settings.num_layers,
        num_heads=settings.num_heads,
        num_labels=teacher.config.num_labels,
        pad_token_id=teacher.config.pad_token_id,
        teacher_embeddings=emb,
        seed=settings.seed,
    ).to(next(teacher.parameters()).device)


def set_embedding_mode(student: nn.Module, mode: str, teacher: nn.Module) -> nn.Module:
    """Prepare ``student``'s word embeddings for training in ``mode`` (see :class:`StudentSettings`), in place.

    ``"freeze"`` stops their gradient; ``"project"`` swaps them for a :class:`ProjectedEmbedding`
    of the teacher's table ``E`` (V, d) and the projection ``P`` (d, h) that solves
    ``E @ P = W`` for the student's current table ``W`` by least squares: for the narrow student,
    whose ``W`` is ``E`` times :func:`embedding_projection`, that gives back the projection, and
    the function the student computes does not change. ``"train"`` leaves them as they are.
    Call :func:`fold_embeddings` after training. Taught in chapter 14.
    """
    if mode not in EMBEDDING_MODES:
        raise ValueError(f"unknown embeddings mode {mode!r}; choose one of {EMBEDDING_MODES}")
    emb = student.bert.embeddings
    if mode == "freeze":
        emb.word_embeddings.weight.requires_grad_(False)
    elif mode == "project":
        table = teacher.bert.embeddings.word_embeddings.weight.detach().cpu().double()  # (V, d)
        current = emb.word_embeddings.weight.detach().cpu().double()  # (V, h)
        if table.shape[0] != current.shape[0]:
            raise ValueError(f"the student's vocabulary ({current.shape[0]}) is not the teacher's ({table.shape[0]})")
        proj = torch.linalg.lstsq(table, current).solution  # (d, h)
        residual = (table @ proj - current).norm() / current.norm()
        if residual > 1e-3:
            raise ValueError(f"the student's table is not a projection of the teacher's (relative residual {residual:.2e})")
        device = emb.word_embeddings.weight.device
        emb.word_embeddings = ProjectedEmbedding(table.float(), proj.float(), emb.word_embeddings.padding_idx).to(device)
    return student


def set_dropout(model: nn.Module, p: float) -> float:
    """Set the probability of every ``nn.Dropout`` in ``model`` to ``p``; return the one they had.

    BERT's attention reads its dropout probability from its ``nn.Dropout`` module, so this covers
    the attention weights too. Raises if the modules disagree (there would be no one value to
    give back) or if ``model`` has no dropout at all. Chapter 14's students train with it.
    """
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
        raise ValueError(f"dropout must be a probability in [0, 1), got {p!r}")
    modules = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    if not modules:
        raise ValueError(f"{type(model).__name__} has no nn.Dropout modules")
    before = {m.p for m in modules}
    if len(before) != 1:
        raise ValueError(f"the model's dropout modules disagree ({sorted(before)}); set them one by one")
    for m in modules:
        m.p = float(p)
    return before.pop()


def fold_embeddings(student: nn.Module) -> nn.Module:
    """Undo :func:`set_embedding_mode` after training, in place: a plain, trainable ``nn.Embedding`` again.

    A :class:`ProjectedEmbedding` is folded into the table it equals; a frozen table gets its
    gradient back. So a student fresh from training and one loaded from the cache are alike.
    """
    emb = student.bert.embeddings
    if isinstance(emb.word_embeddings, ProjectedEmbedding):
        emb.word_embeddings = emb.word_embeddings.fold()
    emb.word_embeddings.weight.requires_grad_(True)
    return student


_TEACHER_LOGITS: dict[tuple[str, str, int | None, int], torch.Tensor] = {}  # computed once per process


def student_training_data(
    profile: str, settings: StudentSettings, teacher: nn.Module, tokenizer: Any, device: torch.device, distill: bool
) -> tuple[Any, torch.Tensor | None]:
    """The tokenised training snippets of ``settings`` and, if ``distill``, the teacher's logits on them.

    The logits are computed once per process and reused by every student trained on the same
    snippets (chapter 14 trains two distilled students; chapter 15 distils a pruned one again).
    """
    from .assets import rotten_tomatoes

    data = rotten_tomatoes()["train"]
    s = settings
    train = tokenize_dataset(data if s.n_train is None else data.select(range(s.n_train)), tokenizer, s.max_length)
    if not distill:
        return train, None
    key = (profile, device.type, s.n_train, s.max_length)
    if key not in _TEACHER_LOGITS:
        _TEACHER_LOGITS[key] = teacher_logits(teacher, train, tokenizer, device=device)
    return train, _TEACHER_LOGITS[key]


def fit_student(
    student: nn.Module,
    teacher: nn.Module,
    train: Any,
    tokenizer: Any,
    targets: torch.Tensor | None,
    settings: StudentSettings,
    *,
    epochs: int | None = None,
    lr: float | None = None,
    device: torch.device | str | None = None,
    show_progress: bool = True,
) -> History:
    """Train ``student`` in place by the recipe ``settings``, :func:`train_student` wrapped in its set-up.

    Puts the word embeddings in ``settings.embeddings`` mode and the dropout at ``settings.dropout``,
    trains (``epochs`` and ``lr`` override the settings' own), then folds the embeddings and gives
    the dropout back, so the trained student is a plain BERT classifier again. ``targets`` are the
    teacher's logits on ``train`` (``None``: labels only). Used for chapter 14's students and for
    chapter 15's pruned student (:func:`dlbook.combined.pruned_student`).
    """
    s = settings
    set_embedding_mode(student, s.embeddings, teacher)
    usual = set_dropout(student, s.dropout) if s.dropout is not None else None
    history = train_student(
        student,
        train,
        tokenizer,
        teacher_logits=targets,
        temperature=s.temperature,
        alpha=s.alpha,
        epochs=s.epochs if epochs is None else epochs,
        batch_size=s.batch_size,
        lr=s.lr if lr is None else lr,
        seed=s.seed,
        group_by_length=s.group_by_length,
        device=device,
        show_progress=show_progress,
    )
    if usual is not None:
        set_dropout(student, usual)
    fold_embeddings(student)
    return history


def train_new_student(
    profile: str,
    kind: str,
    distill: bool,
    device: torch.device | str | None = None,
    settings: StudentSettings | None = None,
    show_progress: bool = True,
    labelled: int | None = None,
) -> tuple[nn.Module, Any, dict[str, Any]]:
    """Train one student from scratch, never cached: ``(model, tokenizer, info)``.

    What :func:`distilled_student` runs the first time, with ``settings`` (default
    ``STUDENT_SETTINGS[profile][kind]``) open to change: to try another recipe or seed (chapter 14's
    last exercise, ``tools/try_student_recipe.py``). The teacher is the cached chapter 9 classifier.
    ``labelled``: the student sees the labels of the first ``labelled`` training snippets only;
    the rest are a **transfer set**, unlabelled snippets that only the teacher labels (soft
    targets; needs ``distill=True``). ``None``: every snippet is labelled.
    """
    from .finetune import sentiment_classifier

    check_profile(profile)
    _check_kind(kind)
    device = resolve_device(device)
    s = settings if settings is not None else STUDENT_SETTINGS[profile][kind]
    if not isinstance(s, StudentSettings):
        raise TypeError(f"settings must be a StudentSettings, got {type(s).__name__}")
    teacher, tokenizer, _ = sentiment_classifier(profile, device=device)
    train, targets = student_training_data(profile, s, teacher, tokenizer, device, distill)
    if labelled is not None:
        _check_labelled(labelled, len(train), distill)
        train = train.map(lambda ex, i: {"labels": ex["labels"] if i < labelled else IGNORE_LABEL}, with_indices=True)
    student = build_student(kind, teacher, s)
    history = fit_student(student, teacher, train, tokenizer, targets, s, device=device, show_progress=show_progress)
    n_labelled = len(train) if labelled is None else labelled
    return student, tokenizer, {"n_train": len(train), "n_labelled": n_labelled, "history": history.to_dict()}


def _check_labelled(labelled: int, n_train: int, distill: bool) -> None:
    if isinstance(labelled, bool) or not isinstance(labelled, int) or not 1 <= labelled <= n_train:
        raise ValueError(f"labelled must be an int from 1 to the {n_train} training snippets, got {labelled!r}")
    if labelled < n_train and not distill:
        raise ValueError("a transfer set (labelled < n_train) needs distill=True: only the teacher labels it")


def distilled_student(
    profile: str,
    kind: str = "layers",
    distill: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
    device: torch.device | str | None = None,
) -> tuple[nn.Module, Any, dict[str, Any]]:
    """A student of the chapter 9 sentiment classifier: ``(model, tokenizer, info)``.

    ``kind="layers"``: :func:`student_from_teacher` with the teacher's layers
    ``STUDENT_SETTINGS[profile]["layers"].layers``; ``kind="narrow"``: :func:`narrow_student` with
    word embeddings projected from the teacher's. ``distill=True`` trains with
    :func:`distillation_loss` against the teacher's precomputed logits, ``distill=False`` with the
    labels alone. Trained deterministically per profile on the Rotten Tomatoes training split
    and cached like :func:`dlbook.finetune.sentiment_classifier` (train once, load after; the
    global random generators are left as they were). Taught in chapter 14; chapter 15 uses it.
    """
    check_profile(profile)
    _check_kind(kind)
    if not isinstance(distill, bool):
        raise TypeError(f"distill must be True or False, got {distill!r}")
    device = resolve_device(device)
    # the teacher's cache folder as student_key names it (combined.pruned_student hashes student_key)
    teacher = student_key(profile, kind, distill, device)["teacher"]
    tag = "distilled" if distill else "label-trained"
    return cached_recipe(
        f"student-{kind}-{'kd' if distill else 'ce'}",
        RECIPE_VERSION,
        profile,
        STUDENT_SETTINGS[profile][kind],
        lambda d: train_new_student(profile, kind, distill, d),
        load_classifier,
        label=f"{tag} {kind} student",
        device=device,
        cache_dir=cache_dir,
        kind=kind,
        distill=distill,
        teacher=teacher,
    )


# ---------------------------------------------------------------------------------------------
# experiments: one training run, its validation and test answers cached (not its weights)


@dataclass(frozen=True)
class RunResult:
    """One training run of a student, as chapter 14's experiments compare them.

    ``val_correct`` and ``test_correct`` (bool, one per snippet, in split order) say which
    validation and test snippets the trained student classifies correctly: enough for accuracies
    and paired comparisons (:func:`dlbook.stats.compare`) without keeping the weights.
    """

    name: str
    kind: str
    distill: bool
    settings: StudentSettings
    labelled: int | None
    val_correct: np.ndarray
    test_correct: np.ndarray
    seconds: float
    from_cache: bool = False

    @property
    def val_accuracy(self) -> float:
        return float(self.val_correct.mean())

    @property
    def test_accuracy(self) -> float:
        return float(self.test_correct.mean())

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "distill": self.distill,
            "settings": asdict(self.settings),
            "labelled": self.labelled,
            "val_correct": self.val_correct.astype(int).tolist(),
            "test_correct": self.test_correct.astype(int).tolist(),
            "seconds": self.seconds,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], from_cache: bool = False) -> RunResult:
        return cls(
            name=d["name"],
            kind=d["kind"],
            distill=bool(d["distill"]),
            settings=StudentSettings(**{k: tuple(v) if k == "layers" else v for k, v in d["settings"].items()}),
            labelled=d["labelled"],
            val_correct=np.asarray(d["val_correct"], bool),
            test_correct=np.asarray(d["test_correct"], bool),
            seconds=float(d["seconds"]),
            from_cache=from_cache,
        )


def _eval_split(split: str, n: int | None, tokenizer: Any, max_length: int) -> Any:
    from .assets import rotten_tomatoes

    data = rotten_tomatoes()[split]
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= len(data):
            raise ValueError(f"n_{split[:4]} must be None or an int from 1 to {len(data)}, got {n!r}")
        data = data.select(range(n))
    return tokenize_dataset(data, tokenizer, max_length)


def student_run(
    profile: str,
    kind: str,
    distill: bool,
    settings: StudentSettings | None = None,
    *,
    labelled: int | None = None,
    n_val: int | None = None,
    n_test: int | None = None,
    max_length: int = 128,
    name: str | None = None,
    device: torch.device | str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    show_progress: bool = False,
) -> RunResult:
    """Train one student (:func:`train_new_student`) and record which snippets it gets right.

    Validation and test are the first ``n_val`` / ``n_test`` snippets of their splits (``None``:
    all), read at ``max_length`` tokens. The result, not the model, is cached as JSON under the
    model cache (``runs/``), keyed like :func:`distilled_student` plus ``labelled`` and the
    evaluation sizes: chapter 14's temperature/alpha sweep, seed study and transfer-set runs
    train once. With the chapter's own recipe (``settings`` None or equal to
    ``STUDENT_SETTINGS[profile][kind]``) and every snippet labelled, the cached
    :func:`distilled_student` is evaluated instead of training it again.
    """
    check_profile(profile)
    _check_kind(kind)
    if not isinstance(distill, bool):
        raise TypeError(f"distill must be True or False, got {distill!r}")
    recipe = STUDENT_SETTINGS[profile][kind]
    s = recipe if settings is None else settings
    if not isinstance(s, StudentSettings):
        raise TypeError(f"settings must be a StudentSettings, got {type(s).__name__}")
    if labelled is not None:
        n_all = len(_training_split()) if s.n_train is None else s.n_train
        _check_labelled(labelled, n_all, distill)
    device = resolve_device(device)
    file = run_cache_file(
        profile,
        kind,
        distill,
        s,
        labelled=labelled,
        n_val=n_val,
        n_test=n_test,
        max_length=max_length,
        device=device,
        cache_dir=cache_dir,
    )
    label = name or f"{kind}, {'distilled' if distill else 'labels only'}"
    if file.is_file():
        return RunResult.from_dict({**json.loads(file.read_text()), "name": label}, from_cache=True)
    if s == recipe and labelled is None:
        model, tokenizer, info = distilled_student(profile, kind, distill, cache_dir=cache_dir, device=device)
    else:
        print(f"training the {profile} student '{label}' (its answers cached in {file.parent})")
        with KeepRandomState(device):
            model, tokenizer, info = train_new_student(profile, kind, distill, device, s, show_progress, labelled)
    answers = {}
    for split, n in (("validation", n_val), ("test", n_test)):
        data = _eval_split(split, n, tokenizer, max_length)
        ev = evaluate_classifier(model, data, tokenizer, device=device)
        answers[split] = (ev.preds == ev.labels).numpy()
    result = RunResult(
        label, kind, distill, s, labelled, answers["validation"], answers["test"], float(info["history"]["seconds"])
    )
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(result.to_dict()))
    os.replace(tmp, file)
    return result


def run_cache_file(
    profile: str,
    kind: str,
    distill: bool,
    settings: StudentSettings,
    *,
    labelled: int | None,
    n_val: int | None,
    n_test: int | None,
    max_length: int,
    device: torch.device | str,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """Where :func:`student_run` keeps the result of one run: ``<cache>/runs/run-<kind>-<hash>.json``.

    The hash covers what :func:`distilled_student` hashes (recipe version, settings, device type,
    library versions, the teacher's cache folder) plus ``labelled`` and the evaluation sizes.
    """
    from .finetune import sentiment_key
    from .modelcache import cache_key, cache_root

    teacher_folder, _ = sentiment_key(profile, resolve_device(device))
    described = describe(
        RECIPE_VERSION,
        profile,
        settings,
        device,
        kind=kind,
        distill=bool(distill),
        teacher=teacher_folder,
        labelled=labelled,
        n_val=n_val,
        n_test=n_test,
        max_length=max_length,
    )
    root = Path(cache_dir).expanduser() if cache_dir is not None else cache_root()
    return root / "runs" / f"{cache_key(f'run-{kind}', described)}.json"


def _training_split() -> Any:
    from .assets import rotten_tomatoes

    return rotten_tomatoes()["train"]


__all__ = [
    "EMBEDDING_MODES",
    "IGNORE_LABEL",
    "RunResult",
    "run_cache_file",
    "KINDS",
    "ProjectedEmbedding",
    "STUDENT_SETTINGS",
    "StudentSettings",
    "build_student",
    "distillation_loss",
    "distilled_student",
    "embedding_projection",
    "fit_student",
    "fold_embeddings",
    "narrow_student",
    "set_dropout",
    "set_embedding_mode",
    "soft_targets",
    "student_from_teacher",
    "student_key",
    "student_run",
    "student_training_data",
    "teacher_logits",
    "train_new_student",
    "train_student",
]
