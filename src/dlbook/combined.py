"""Compression techniques stacked: a pruned, distilled student with a pruned vocabulary, in int8.

Built for chapter 15, "The compression scoreboard", from the pieces of chapters 12 to 14:

1. chapter 14's 3-layer distilled student, trained for more epochs (:func:`long_student`:
   chapter 14 trains one epoch; ``LONG_STUDENT_EPOCHS`` scored higher on the validation split);
2. chapter 13's Taylor importance (:func:`dlbook.prune.importance_scores`), computed on
   TRAINING snippets, picks the heads and feed-forward neurons to keep in each of its layers, and
   :func:`dlbook.prune.shrink_bert` removes the others for real;
3. more distillation from the teacher's logits (:func:`dlbook.distill.fit_student`) repairs what
   the cut broke (:func:`pruned_student`, trained once per profile and cached);
4. :func:`compact` then keeps only the word-embedding rows of tokens the training snippets use
   (:func:`dlbook.prune.prune_vocabulary`) and stores the rest in int8 (chapter 12's
   :func:`dlbook.quantize.int8_dynamic`: int8 linear layers, weight-only int8 embedding rows).

Apart from ``LONG_STUDENT_EPOCHS`` (and the numbers of heads and neurons kept), which were
chosen on the validation split, nothing here looks at it, so chapter 15 can choose among its
variants by their validation accuracy (its text says which may be optimistic), and at the test
split not at all until the choice is made.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .env import resolve_device
from .modelcache import cached_recipe, describe

#: Bump when the recipe below changes, so old caches are not reused.
RECIPE_VERSION = 5

#: Epochs of :func:`long_student`: chapter 14's 3-layer recipe, trained longer (it trains one).
LONG_STUDENT_EPOCHS: dict[str, int] = {"smoke": 2, "full": 4}


def _long_settings(profile: str) -> Any:
    from .distill import STUDENT_SETTINGS

    return dataclasses.replace(STUDENT_SETTINGS[profile]["layers"], epochs=LONG_STUDENT_EPOCHS[profile])


def long_student_key(profile: str, device: torch.device | str | None = None) -> dict[str, Any]:
    """What decides :func:`long_student`'s weights (hashed into its cache folder and :func:`pruned_student`'s)."""
    from .distill import RECIPE_VERSION as STUDENT_RECIPE
    from .distill import student_key

    device = resolve_device(device)
    teacher = student_key(profile, "layers", True, device)["teacher"]  # checks the profile
    return describe(RECIPE_VERSION, profile, _long_settings(profile), device, teacher=teacher, student_recipe=STUDENT_RECIPE)


def long_student(
    profile: str, cache_dir: str | os.PathLike[str] | None = None, device: torch.device | str | None = None
) -> tuple[nn.Module, Any, dict[str, Any]]:
    """Chapter 14's 3-layer distilled student trained for ``LONG_STUDENT_EPOCHS[profile]`` epochs.

    The same recipe as :func:`dlbook.distill.distilled_student` (``"layers"``, with the teacher),
    only longer; trained once per profile (:func:`dlbook.distill.train_new_student`), then loaded
    from the cache. Returns ``(model, tokenizer, info)``. Chapter 15's "distilled" contender and
    the student :func:`pruned_student` starts from.
    """
    from .distill import train_new_student
    from .modelcache import load_classifier

    key = long_student_key(profile, device)  # checks the profile
    settings = _long_settings(profile)
    return cached_recipe(
        "student-layers-long",
        RECIPE_VERSION,
        profile,
        settings,
        lambda d: train_new_student(profile, "layers", True, d, settings=settings),
        load_classifier,
        label="3-layer student trained longer",
        device=device,
        cache_dir=cache_dir,
        teacher=key["teacher"],
        student_recipe=key["student_recipe"],
    )


@dataclass(frozen=True)
class PrunedStudentSettings:
    """What decides the weights of :func:`pruned_student` (besides the student it starts from).

    ``keep_heads`` attention heads and ``keep_neurons`` feed-forward neurons are kept in every
    layer, by Taylor importance on the first ``n_importance`` TRAINING snippets (``None`` = all);
    then ``epochs`` of distillation at learning rate ``lr`` with weight ``alpha`` on the labels
    (0: the teacher's soft targets alone), with the 3-layer student's own training snippets,
    temperature, embedding mode and dropout (``dlbook.distill.STUDENT_SETTINGS[profile]["layers"]``,
    through :func:`dlbook.distill.fit_student`). ``n_report`` validation snippets (``None`` = all)
    report the accuracy right after the cut and after the distillation; they choose nothing.
    """

    keep_heads: int
    keep_neurons: int
    n_importance: int | None
    epochs: int
    lr: float
    alpha: float
    n_report: int | None


#: The recipe of :func:`pruned_student` per profile (chapter 15 prints it).
PRUNED_STUDENT_SETTINGS: dict[str, PrunedStudentSettings] = {
    "smoke": PrunedStudentSettings(keep_heads=8, keep_neurons=768, n_importance=64, epochs=1, lr=1e-4, alpha=0.0, n_report=64),
    "full": PrunedStudentSettings(
        keep_heads=8, keep_neurons=768, n_importance=2000, epochs=3, lr=1e-4, alpha=0.0, n_report=None
    ),
}


def training_snippets(tokenizer: Any, n: int | None, max_length: int) -> Any:
    """The first ``n`` training snippets (``None``: all), tokenised with labels: what may choose weights."""
    from .assets import rotten_tomatoes
    from .finetune import tokenize_dataset

    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"n must be None or a positive int, got {n!r}")
    train = rotten_tomatoes()["train"]
    return tokenize_dataset(train if n is None else train.select(range(min(n, len(train)))), tokenizer, max_length)


def _train_pruned_student(profile: str, device: torch.device) -> tuple[nn.Module, Any, dict[str, Any]]:
    from .distill import STUDENT_SETTINGS, fit_student, student_training_data
    from .finetune import evaluate_classifier, sentiment_classifier
    from .prune import importance_snippets, prune_by_importance, structure

    p = PRUNED_STUDENT_SETTINGS[profile]
    s = dataclasses.replace(STUDENT_SETTINGS[profile]["layers"], alpha=p.alpha)
    teacher, tokenizer, _ = sentiment_classifier(profile, device=device)
    student, _, _ = long_student(profile, device=device)
    scored = training_snippets(tokenizer, p.n_importance, s.max_length)
    model, _ = prune_by_importance(
        student, scored, tokenizer, keep_heads=p.keep_heads, keep_neurons=p.keep_neurons, device=device
    )
    report = importance_snippets(tokenizer, p.n_report, 128)  # validation snippets: reported only
    before = evaluate_classifier(model, report, tokenizer, device=device).accuracy
    train, targets = student_training_data(profile, s, teacher, tokenizer, device, distill=True)
    history = fit_student(model, teacher, train, tokenizer, targets, s, epochs=p.epochs, lr=p.lr, device=device)
    after = evaluate_classifier(model, report, tokenizer, device=device).accuracy
    info = {
        "structure": structure(model),
        "val_acc_before_distill": before,
        "val_acc_after_distill": after,
        "history": history.to_dict(),
    }
    return model, tokenizer, info


def pruned_student(
    profile: str, cache_dir: str | os.PathLike[str] | None = None, device: torch.device | str | None = None
) -> tuple[nn.Module, Any, dict[str, Any]]:
    """:func:`long_student`, structurally pruned and distilled again: ``(model, tokenizer, info)``.

    Keeps ``PRUNED_STUDENT_SETTINGS[profile].keep_heads`` heads and ``keep_neurons`` feed-forward
    neurons per layer (chosen by Taylor importance on training snippets, so validation stays
    neutral ground for chapter 15's choice), then distils from the teacher for ``epochs``.
    Trained once per profile, library versions and device type, then loaded from the cache with
    :func:`dlbook.prune.load_pruned_bert`. ``info`` holds the settings, the per-layer structure,
    the validation accuracy right after the cut and after the distillation, and the training
    history. Used by chapter 15.
    """
    from .prune import load_pruned_folder

    device = resolve_device(device)
    student = long_student_key(profile, device)  # what it starts from; checks the profile
    return cached_recipe(
        "pruned-student",
        RECIPE_VERSION,
        profile,
        PRUNED_STUDENT_SETTINGS[profile],
        lambda d: _train_pruned_student(profile, d),
        load_pruned_folder,
        label="pruned distilled student",
        device=device,
        cache_dir=cache_dir,
        student=student,
    )


# ---------------------------------------------------------------------------------------------
# the deployable model: pruned vocabulary, int8


def compact(
    model: nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    min_count: int = 1,
    max_length: int | None = None,
    lean: bool = False,
) -> tuple[nn.Module, Any]:
    """An int8 CPU copy of ``model`` that keeps only the vocabulary of ``texts``: ``(compact model, map)``.

    1. :func:`dlbook.prune.prune_vocabulary` keeps the word-embedding rows of the special tokens
       and of every token seen at least ``min_count`` times in ``texts`` (pass the TRAINING
       snippets), and :meth:`dlbook.prune.VocabMap.wrap` puts a lookup in front that maps the
       ordinary tokenizer's ids to the kept rows (an unseen token becomes ``[UNK]``);
    2. with ``lean=True``, :func:`dlbook.lean.lean_classifier` runs the same weights without the
       library's generality (Q, K and V stacked into one projection);
    3. :func:`dlbook.quantize.int8_dynamic` stores the linear layers in int8 (activations
       quantized per call) and every embedding table in int8 with one scale per row.

    The result takes the ordinary tokenizer's batches, ``compact(**batch).logits``, so
    :mod:`dlbook.measure` times and scores it like any other variant; its ``state_dict`` holds
    the id map too. The input model is not changed. Chapter 15 stacks it on its students.
    """
    from .lean import lean_classifier
    from .prune import prune_vocabulary
    from .quantize import int8_dynamic

    if not hasattr(model, "get_input_embeddings"):
        raise TypeError(f"expected a Hugging Face model, got {type(model).__name__}")
    cpu = model if resolve_device(model=model).type == "cpu" else _cpu_copy(model)
    if not isinstance(lean, bool):
        raise TypeError(f"lean must be True or False, got {lean!r}")
    small, vmap = prune_vocabulary(cpu, tokenizer, list(texts), min_count=min_count, max_length=max_length)
    wrapped = vmap.wrap(small.eval())
    return int8_dynamic(lean_classifier(wrapped) if lean else wrapped), vmap


def compact_onnx(
    model: nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    folder: str | os.PathLike[str],
    *,
    threads: int,
    min_count: int = 1,
    max_length: int | None = None,
) -> tuple[nn.Module, Any]:
    """:func:`compact` for ONNX Runtime: ``(session behind a classifier's interface, map)``.

    The same vocabulary pruning and id lookup as :func:`compact`, exported in float32 to
    ``folder/compact-fp32.onnx`` (:func:`dlbook.ort.export_classifier`, chapter 12), then
    ONNX Runtime's dynamic int8 quantization (int8 matrix products with one scale per output
    channel, int8 embedding lookups) into ``folder/compact-int8.onnx``. The session runs on the
    CPU with ``threads`` intra-op threads (:class:`dlbook.ort.OrtClassifier`), so
    :mod:`dlbook.measure` times and scores it like the PyTorch variants; its size is the ONNX
    file's (:func:`dlbook.ort.classifier_measurement`). The input model is not changed.
    """
    from pathlib import Path

    from . import ort
    from .prune import prune_vocabulary

    if not hasattr(model, "get_input_embeddings"):
        raise TypeError(f"expected a Hugging Face model, got {type(model).__name__}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cpu = _cpu_copy(model)
    small, vmap = prune_vocabulary(cpu, tokenizer, list(texts), min_count=min_count, max_length=max_length)
    wrapped = vmap.wrap(small.eval())
    example = tokenizer(list(texts[:2]), padding=True, return_tensors="pt")
    example = {k: example[k] for k in ort.INPUT_NAMES}
    fp32 = ort.export_classifier(wrapped, folder / "compact-fp32.onnx", example)
    int8 = ort.quantize_dynamic_int8(fp32, folder / "compact-int8.onnx")
    return ort.OrtClassifier(int8, threads=threads), vmap


def _cpu_copy(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model).cpu()


__all__ = ["PRUNED_STUDENT_SETTINGS", "PrunedStudentSettings", "compact", "compact_onnx", "pruned_student", "training_snippets"]
