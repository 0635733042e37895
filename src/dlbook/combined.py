"""Compression techniques stacked: the distilled student, structurally pruned and distilled again.

Built for chapter 15, "The compression scoreboard", from the pieces of chapters 13 and 14:

1. chapter 14's 3-layer distilled student (:func:`dlbook.distill.distilled_student`);
2. chapter 13's Taylor importance on validation snippets (:func:`dlbook.prune.importance_scores`)
   picks the heads and feed-forward neurons to keep in each of its layers, and
   :func:`dlbook.prune.shrink_bert` removes the others for real;
3. one more pass of distillation from the teacher's logits (:func:`dlbook.distill.fit_student`)
   repairs what the cut broke.

Chapter 15 quantizes the result to int8 (:func:`dlbook.quantize.int8_dynamic`) on top. The model
is trained deterministically per profile and cached with :func:`dlbook.modelcache.cached_model`,
like every trained model of the book. Because step 2 chooses what to keep on validation snippets,
the model's validation accuracy is optimistic; chapter 15 says so where it chooses by it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .modelcache import cached_model, describe
from .profiles import check_profile

#: Bump when the recipe below changes, so old caches are not reused.
RECIPE_VERSION = 3


@dataclass(frozen=True)
class PrunedStudentSettings:
    """What decides the weights of :func:`pruned_student` (besides the student it starts from).

    ``keep_heads`` attention heads and ``keep_neurons`` feed-forward neurons are kept in every
    layer, by Taylor importance on ``n_importance`` validation snippets (``None`` = all); then
    ``epochs`` of distillation at learning rate ``lr``, with the 3-layer student's own training
    snippets, temperature, alpha, embedding mode and dropout (``dlbook.distill.STUDENT_SETTINGS[profile]["layers"]``,
    through :func:`dlbook.distill.fit_student`).
    """

    keep_heads: int
    keep_neurons: int
    n_importance: int | None
    epochs: int
    lr: float


#: The recipe of :func:`pruned_student` per profile (chapter 15 prints it).
PRUNED_STUDENT_SETTINGS: dict[str, PrunedStudentSettings] = {
    "smoke": PrunedStudentSettings(keep_heads=8, keep_neurons=768, n_importance=64, epochs=1, lr=1e-4),
    "full": PrunedStudentSettings(keep_heads=8, keep_neurons=768, n_importance=None, epochs=2, lr=1e-4),
}


def _train_pruned_student(profile: str, device: torch.device) -> tuple[nn.Module, Any, dict[str, Any]]:
    from .distill import STUDENT_SETTINGS, distilled_student, fit_student, student_training_data
    from .finetune import evaluate_classifier, sentiment_classifier
    from .prune import importance_snippets, prune_by_importance, structure

    p = PRUNED_STUDENT_SETTINGS[profile]
    s = STUDENT_SETTINGS[profile]["layers"]
    teacher, tokenizer, _ = sentiment_classifier(profile, device=device)
    student, _, _ = distilled_student(profile, "layers", True, device=device)
    val = importance_snippets(tokenizer, p.n_importance, s.max_length)
    model, _ = prune_by_importance(student, val, tokenizer, keep_heads=p.keep_heads, keep_neurons=p.keep_neurons,
                                   device=device)
    before = evaluate_classifier(model, val, tokenizer, device=device).accuracy
    train, targets = student_training_data(profile, s, teacher, tokenizer, device, distill=True)
    history = fit_student(model, teacher, train, tokenizer, targets, s, epochs=p.epochs, lr=p.lr, device=device)
    after = evaluate_classifier(model, val, tokenizer, device=device).accuracy
    info = {"structure": structure(model), "val_acc_before_distill": before, "val_acc_after_distill": after,
            "history": history.to_dict()}
    return model, tokenizer, info


def pruned_student(
    profile: str, cache_dir: str | os.PathLike[str] | None = None, device: torch.device | str | None = None
) -> tuple[nn.Module, Any, dict[str, Any]]:
    """Chapter 14's 3-layer distilled student, structurally pruned and distilled again: ``(model, tokenizer, info)``.

    Keeps ``PRUNED_STUDENT_SETTINGS[profile].keep_heads`` heads and ``keep_neurons`` feed-forward
    neurons per layer (chosen by Taylor importance on validation snippets, never the test split),
    then distils from the teacher for ``epochs``. Trained once per profile, library versions and
    device type, then loaded from the cache with :func:`dlbook.prune.load_pruned_bert`. ``info``
    holds the settings, the per-layer structure, the validation accuracy (on the importance
    snippets) right after the cut and after the distillation, and the training history. Used by
    chapter 15.
    """
    from .distill import student_key
    from .env import pick_device
    from .prune import load_pruned_folder

    check_profile(profile)
    device = torch.device(device) if device is not None else pick_device()
    described = describe(RECIPE_VERSION, profile, PRUNED_STUDENT_SETTINGS[profile], device,
                         student=student_key(profile, "layers", True, device))
    return cached_model(
        f"pruned-student-{profile}", described, lambda: _train_pruned_student(profile, device), load_pruned_folder,
        device=device, cache_dir=cache_dir, label=f"{profile} pruned distilled student",
    )


__all__ = ["PRUNED_STUDENT_SETTINGS", "PrunedStudentSettings", "pruned_student"]
