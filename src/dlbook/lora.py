"""LoRA: low-rank adapters on frozen linear layers (Hu et al., 2021).

Taught in chapter 10, "Fine-tuning on a budget". A frozen linear layer ``W x + b`` gets a
trainable low-rank update, ``W x + b + (alpha / r) B A x`` with ``A`` (r, in) drawn at random
and ``B`` (out, r) zero, so that the adapted model starts out exactly equal to the base model.
After training, ``W + (alpha / r) B A`` is one matrix again (:func:`merge_lora`), and inference
costs nothing extra. The initialisation follows the ``peft`` library (Kaiming-uniform ``A``,
zero ``B``), and :func:`copy_lora_to_peft` moves our adapters into a ``peft`` model, which is how
chapter 10 checks that both compute the same function. :func:`add_peft_lora` builds that ``peft``
model (chapter 10) and the adapters chapter 20 trains on a causal language model.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import nn

__all__ = ["LoRALinear", "add_lora", "add_peft_lora", "copy_lora_to_peft", "lora_parameter_names", "merge_lora"]


class LoRALinear(nn.Module):
    """``base(x) + (alpha / r) * B(A(dropout(x)))``: a frozen ``nn.Linear`` plus a rank-``r`` update.

    ``base`` is kept as it is (its parameters are frozen); ``lora_A`` has shape (r, in_features),
    Kaiming-uniform like ``nn.Linear``'s default, ``lora_B`` (out_features, r) starts at zero.
    ``dropout`` applies to the adapter's input only, as in the LoRA paper and ``peft``.
    """

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float = 0.0) -> None:
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"LoRALinear wraps an nn.Linear, got {type(base).__name__}")
        _check_hyper(r, alpha, dropout)
        self.base = base
        self.r = r
        self.alpha = float(alpha)
        self.scaling = self.alpha / r
        for p in self.base.parameters():
            p.requires_grad_(False)
        w = base.weight
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, device=w.device, dtype=w.dtype))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, device=w.device, dtype=w.dtype))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.base.in_features:
            raise ValueError(f"expected input with last dimension {self.base.in_features}, got {tuple(x.shape)}")
        update = self.dropout(x) @ self.lora_A.T @ self.lora_B.T  # (..., in) -> (..., r) -> (..., out)
        return self.base(x) + self.scaling * update

    def merged_weight(self) -> torch.Tensor:
        """``W + (alpha / r) B A``, shape (out_features, in_features)."""
        return self.base.weight + self.scaling * (self.lora_B @ self.lora_A)

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha:g}"


def _check_hyper(r: int, alpha: float, dropout: float) -> None:
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise ValueError(f"LoRA rank r must be a positive int, got {r!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0 or not math.isfinite(alpha):
        raise ValueError(f"LoRA alpha must be a finite number > 0, got {alpha!r}")
    if not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"LoRA dropout must be in [0, 1), got {dropout!r}")


def add_lora(
    model: nn.Module,
    target_names: tuple[str, ...] | list[str] = ("query", "value"),
    r: int = 8,
    alpha: float = 16.0,
    dropout: float = 0.0,
    trainable_extra: tuple[str, ...] | list[str] = ("classifier",),
) -> nn.Module:
    """Put a :class:`LoRALinear` on every ``nn.Linear`` whose own name is in ``target_names``, in place.

    Afterwards only the adapters (and the parameters of modules whose own name is in
    ``trainable_extra``, by default the classification head ``classifier``) require gradients;
    everything else is frozen. Returns ``model``. Raises ``ValueError`` for a bad ``r``, ``alpha``
    or ``dropout``, or when a target name matches no ``nn.Linear`` (a typo like ``"querry"`` would
    otherwise train only the head).
    """
    _check_hyper(r, alpha, dropout)
    targets = tuple(target_names)
    if not targets or not all(isinstance(t, str) for t in targets):
        raise ValueError(f"target_names must be a non-empty sequence of module names, got {target_names!r}")
    if any(isinstance(m, LoRALinear) for m in model.modules()):
        raise ValueError("model already has LoRA adapters: merge_lora() it first")
    found = {t: 0 for t in targets}
    replace = []
    for name, module in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if leaf in found and isinstance(module, nn.Linear):
            found[leaf] += 1
            replace.append(name)
    missing = [t for t, n in found.items() if n == 0]
    if missing:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)})
        raise ValueError(f"no nn.Linear named {missing} in the model; its linear layers are called {linear}")
    for p in model.parameters():
        p.requires_grad_(False)
    for name in replace:
        parent_name, _, leaf = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, leaf, LoRALinear(getattr(parent, leaf), r, alpha, dropout))
    extra = set(trainable_extra)
    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1] in extra:
            for p in module.parameters():
                p.requires_grad_(True)
    return model


def add_peft_lora(model: nn.Module, config: Any) -> nn.Module:
    """``peft.get_peft_model(model, config)``: the ``peft`` library's LoRA adapters on ``model``.

    Taught in chapter 10 (next to our :func:`add_lora`, which it must match), used in chapter 20
    on a causal language model. ``config`` is a ``peft.LoraConfig``; the result is the
    ``PeftModel`` wrapping ``model`` (changed in place: its base weights are frozen).

    The one difference from calling ``peft`` directly is a warning silenced here and nowhere
    else: peft 0.21 asks a transformers 5 model for ``is_gradient_checkpointing``, which
    transformers has renamed and answers with a ``FutureWarning`` meant for peft's authors (the
    attribute still works and nothing the reader does can change it).
    """
    from peft import LoraConfig, get_peft_model

    _check_peft_arguments(model, config, LoraConfig)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"`is_gradient_checkpointing` is deprecated", FutureWarning)
        return get_peft_model(model, config)


def _check_peft_arguments(model: object, config: object, config_type: type) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if not isinstance(config, config_type):
        raise TypeError(f"config must be a peft.LoraConfig, got {type(config).__name__}")
    if any(isinstance(m, LoRALinear) for m in model.modules()):
        raise ValueError("model already has our LoRA adapters (dlbook.lora.add_lora): start from a fresh model")


def lora_parameter_names(model: nn.Module) -> list[str]:
    """The names of the adapter parameters (``...lora_A`` / ``...lora_B``) of a model with LoRA."""
    return [n for n, _ in model.named_parameters() if n.endswith((".lora_A", ".lora_B"))]


@torch.no_grad()
def merge_lora(model: nn.Module) -> nn.Module:
    """Replace every :class:`LoRALinear` by a plain ``nn.Linear`` with weight ``W + (alpha / r) B A``, in place.

    The merged layers are frozen, like the base weights they replace. Returns ``model``; raises
    ``ValueError`` if it has no adapters.
    """
    names = [n for n, m in model.named_modules() if isinstance(m, LoRALinear)]
    if not names:
        raise ValueError("model has no LoRA adapters to merge")
    for name in names:
        parent_name, _, leaf = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        lora: LoRALinear = getattr(parent, leaf)
        base = lora.base
        base.weight.copy_(lora.merged_weight())
        setattr(parent, leaf, base)
    return model


@torch.no_grad()
def copy_lora_to_peft(model: nn.Module, peft_model: nn.Module, adapter: str = "default") -> int:
    """Copy our adapters' ``A`` and ``B`` into the matching ``lora_A`` / ``lora_B`` of a ``peft`` model.

    ``peft`` names the same layer ``...query.lora_A.default.weight`` where we have
    ``...query.lora_A``; both store A as (r, in) and B as (out, r). The trainable head is copied
    too when both have one. Returns the number of tensors copied; raises ``ValueError`` if an
    adapter has no counterpart or a shape differs.
    """
    theirs = dict(peft_model.named_parameters())
    copied = 0
    for name, p in model.named_parameters():
        if name.endswith((".lora_A", ".lora_B")):
            stem, which = name.rsplit(".", 1)
            matches = [k for k in theirs if k.endswith(f"{stem}.{which}.{adapter}.weight")]
        elif p.requires_grad:  # e.g. the classifier: peft keeps a trainable copy under modules_to_save
            matches = [
                k
                for k in theirs
                if k.endswith(f"modules_to_save.{adapter}.{name.split('.', 1)[-1]}") and name.split(".", 1)[0] in k
            ]
        else:
            continue
        if len(matches) != 1:
            raise ValueError(f"no unique counterpart of {name!r} in the peft model (found {matches})")
        target = theirs[matches[0]]
        if target.shape != p.shape:
            raise ValueError(f"{name!r} has shape {tuple(p.shape)} but {matches[0]!r} has {tuple(target.shape)}")
        target.copy_(p)
        copied += 1
    return copied
