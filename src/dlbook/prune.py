"""Pruning a BERT classifier: magnitude masks, importance scores, and a model that really shrinks.

Taught in chapter 13, "Pruning"; chapter 15 (the compression scoreboard) imports
:func:`pruned_classifier`. The pieces, in the order the chapter builds them:

- unstructured magnitude pruning: :func:`magnitude_mask` / :func:`global_magnitude_masks` (our own
  masks, checked against ``torch.nn.utils.prune``), :func:`encoder_linears`,
  :func:`prune_magnitude` (``l1_unstructured`` per layer or ``global_unstructured`` across all
  encoder weights), :func:`remove_pruning` and :func:`weight_sparsity`;
- structured pruning: :class:`Gates` puts a multiplicative gate on every attention head and every
  feed-forward neuron (all ones: the model is unchanged; a 0 masks that head or neuron);
  :func:`importance_scores` gives each head and neuron its first-order Taylor score
  ``|dL/dg|`` = ``|sum(gradient x activation)|`` on data the caller picks (validation, not test);
  :func:`top_k_per_layer` turns scores into kept indices;
- :func:`shrink_bert` rebuilds smaller ``nn.Linear`` layers (query/key/value and attention output
  for heads, intermediate and output dense for neurons) so the model computes less and its
  ``state_dict`` is smaller; :func:`load_pruned_bert` reads such a model back;
- :func:`pruned_classifier`: chapter 9's sentiment classifier with half of its heads and half of
  its feed-forward neurons removed by Taylor importance, then briefly fine-tuned; trained
  deterministically per profile and cached with :func:`dlbook.modelcache.cached_model`.

**How a pruned model is saved.** ``BertConfig`` has one ``num_attention_heads`` and one
``intermediate_size`` for all layers, and derives the head size as ``hidden_size /
num_attention_heads``, so it cannot describe a layer with 6 heads of size 32 (nor layers of
different widths). :func:`shrink_bert` therefore leaves those two numbers as they were and records
the kept indices, per layer and relative to the original model, in ``config.dlbook_pruning``
(``{"heads": [[...], ...], "neurons": [[...], ...]}``), which ``save_pretrained`` writes to
``config.json``. :func:`load_pruned_bert` builds the full-size architecture from the config, shrinks
it to the recorded shapes and loads the saved weights strictly. ``from_pretrained`` alone would
refuse the smaller weights (shape mismatch), so always load a pruned model with
:func:`load_pruned_bert`. Any number of heads and neurons per layer (at least one) works.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from .env import resolve_device
from .modelcache import cached_recipe
from .progress import progress as _progress

#: Bump when the recipe of :func:`pruned_classifier` changes, so old caches are not reused.
RECIPE_VERSION = 1
SCOPES = ("layer", "global")

# ---------------------------------------------------------------------------------------------
# unstructured magnitude pruning


def _check_sparsity(sparsity: float) -> float:
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)):
        raise TypeError(f"sparsity must be a number in [0, 1), got {sparsity!r}")
    if not 0.0 <= float(sparsity) < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity!r}")
    return float(sparsity)


def n_to_prune(numel: int, sparsity: float) -> int:
    """How many of ``numel`` weights a ``sparsity`` share removes: ``round(sparsity * numel)``.

    The same rounding as ``torch.nn.utils.prune`` for a float amount.
    """
    return round(_check_sparsity(sparsity) * numel)


def magnitude_mask(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """0/1 mask (same shape and dtype as ``weight``) that zeros the ``round(sparsity * n)`` weights
    of smallest absolute value: per-layer magnitude pruning (Han et al., 2015).

    Equal to the ``weight_mask`` that ``prune.l1_unstructured(module, "weight", sparsity)`` makes.
    """
    if not isinstance(weight, torch.Tensor) or weight.numel() == 0:
        raise ValueError("weight must be a non-empty tensor")
    k = n_to_prune(weight.numel(), sparsity)
    mask = torch.ones_like(weight).reshape(-1)
    if k > 0:
        drop = torch.topk(weight.detach().abs().reshape(-1), k, largest=False).indices
        mask[drop] = 0
    return mask.reshape(weight.shape)


def global_magnitude_masks(weights: Sequence[torch.Tensor], sparsity: float) -> list[torch.Tensor]:
    """One 0/1 mask per tensor: the ``round(sparsity * N)`` smallest ``|w|`` over all ``N`` weights
    of all tensors together are zeroed, so layers with smaller weights lose more.

    Equal to the masks ``prune.global_unstructured(..., prune.L1Unstructured, amount=sparsity)`` makes.
    """
    weights = list(weights)
    if not weights or any(not isinstance(w, torch.Tensor) or w.numel() == 0 for w in weights):
        raise ValueError("weights must be a non-empty sequence of non-empty tensors")
    flat = torch.cat([w.detach().abs().reshape(-1) for w in weights])
    mask = magnitude_mask(flat, sparsity)
    return [m.reshape(w.shape).to(w.dtype) for m, w in zip(mask.split([w.numel() for w in weights]), weights, strict=True)]


def _encoder(model: nn.Module) -> nn.Module:
    bert = getattr(model, "bert", model)
    encoder = getattr(bert, "encoder", None)
    if encoder is None or not hasattr(encoder, "layer"):
        raise TypeError(f"expected a BertModel or BertFor... model, got {type(model).__name__}")
    return encoder


def encoder_linears(model: nn.Module, layers: Sequence[int] | None = None) -> list[tuple[str, nn.Linear]]:
    """``(name, module)`` of every ``nn.Linear`` in the encoder's layers (6 per BERT layer:
    query, key, value, attention output, intermediate, output), optionally of some layers only.

    The embeddings, pooler and classifier are left out: they are what the chapter does not prune.
    """
    encoder = _encoder(model)
    n = len(encoder.layer)
    chosen = range(n) if layers is None else list(layers)
    for i in chosen:
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < n:
            raise ValueError(f"unknown layer {i!r}: the encoder has layers 0..{n - 1}")
    out = []
    for i in chosen:
        for name, mod in encoder.layer[i].named_modules():
            if isinstance(mod, nn.Linear):
                out.append((f"encoder.layer.{i}.{name}", mod))
    return out


def prune_magnitude(
    model: nn.Module, sparsity: float, scope: str = "global", layers: Sequence[int] | None = None
) -> list[tuple[nn.Module, str]]:
    """Magnitude-prune the encoder's linear weights in place with ``torch.nn.utils.prune``.

    ``scope="layer"``: ``l1_unstructured`` on each weight (each loses ``sparsity`` of its
    entries); ``scope="global"``: one ``global_unstructured`` ranking over all of them. The masks
    stay attached (``weight = weight_orig * weight_mask``, so a fine-tune keeps pruned weights at
    zero); :func:`remove_pruning` makes them permanent. Returns the ``(module, "weight")`` pairs.
    """
    sparsity = _check_sparsity(sparsity)
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}; use one of {SCOPES}")
    params = [(mod, "weight") for _, mod in encoder_linears(model, layers)]
    if scope == "layer":
        for mod, name in params:
            torch_prune.l1_unstructured(mod, name, amount=sparsity)
    else:
        torch_prune.global_unstructured(params, pruning_method=torch_prune.L1Unstructured, amount=sparsity)
    return params


def remove_pruning(model: nn.Module) -> int:
    """Make every attached pruning mask permanent (``prune.remove``); returns how many were removed."""
    n = 0
    for mod in model.modules():
        hooks = [h for h in mod._forward_pre_hooks.values() if isinstance(h, torch_prune.BasePruningMethod)]
        for hook in hooks:
            torch_prune.remove(mod, hook._tensor_name)
            n += 1
    return n


def weight_sparsity(model: nn.Module, layers: Sequence[int] | None = None) -> float:
    """Share of exactly-zero entries over the encoder's linear weights (masks applied)."""
    zeros = total = 0
    for _, mod in encoder_linears(model, layers):
        w = mod.weight
        zeros += int((w == 0).sum())
        total += w.numel()
    return zeros / total


# ---------------------------------------------------------------------------------------------
# gates on heads and neurons


def _layers(model: nn.Module) -> nn.ModuleList:
    return _encoder(model).layer


def head_size(model: nn.Module) -> int:
    """The width of one attention head (32 for MiniLM: 384 / 12)."""
    return int(_layers(model)[0].attention.self.attention_head_size)


def structure(model: nn.Module) -> dict[str, list[int]]:
    """Heads and feed-forward neurons per layer as the model is now: ``{"heads": [...], "neurons": [...]}``."""
    layers = _layers(model)
    d = head_size(model)
    return {
        "heads": [layer.attention.self.query.out_features // d for layer in layers],
        "neurons": [layer.intermediate.dense.out_features for layer in layers],
    }


class Gates:
    """Multiplicative gates on each head's output and each feed-forward neuron, as hooks.

    ``heads[l]`` (H_l,) scales the context vector of each head of layer ``l`` where it enters the
    attention output projection; ``neurons[l]`` (F_l,) scales each GELU activation where it enters
    the feed-forward output projection. All ones (the default) leave the model unchanged; a 0
    masks that head or neuron, which is exactly what removing it computes. A gate may also hold
    one row per example, (batch, H_l) or (batch, F_l), as :func:`importance_scores` uses for
    per-example scores. With
    ``requires_grad=True`` the gradients of the loss with respect to the gates are the Taylor
    importance scores (:func:`importance_scores`). Use as a context manager (hooks removed on exit).
    """

    def __init__(self, model: nn.Module, requires_grad: bool = False) -> None:
        shape = structure(model)
        dev = resolve_device(model=model)
        self.model = model
        self.d = head_size(model)
        self.heads = [torch.ones(h, device=dev, requires_grad=requires_grad) for h in shape["heads"]]
        self.neurons = [torch.ones(f, device=dev, requires_grad=requires_grad) for f in shape["neurons"]]
        self._handles: list[Any] = []

    def __enter__(self) -> Gates:
        for i, layer in enumerate(_layers(self.model)):
            self._handles.append(layer.attention.output.dense.register_forward_pre_hook(self._head_hook(i)))
            self._handles.append(layer.output.dense.register_forward_pre_hook(self._neuron_hook(i)))
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _head_hook(self, i: int):
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
            x = args[0]  # (batch, seq, heads * d)
            g = self.heads[i].repeat_interleave(self.d, dim=-1)  # (heads * d,) or (batch, heads * d)
            if g.dim() == 2:  # one gate per example: broadcast over the tokens
                g = g[:, None, :]
            return (x * g.to(x.dtype), *args[1:])

        return hook

    def _neuron_hook(self, i: int):
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
            g = self.neurons[i]  # (F,) or (batch, F)
            if g.dim() == 2:  # one gate per example: broadcast over the tokens
                g = g[:, None, :]
            return (args[0] * g.to(args[0].dtype), *args[1:])  # (batch, seq, F)

        return hook

    def set_from_keep(self, keep_heads: Any = None, keep_neurons: Any = None) -> Gates:
        """Set the gates to 1 on kept heads/neurons and 0 elsewhere (same arguments as :func:`shrink_bert`)."""
        shape = structure(self.model)
        heads = _normalise_keep(keep_heads, shape["heads"], "heads")
        neurons = _normalise_keep(keep_neurons, shape["neurons"], "neurons")
        with torch.no_grad():
            for g, keep in zip(self.heads, heads, strict=True):
                g.zero_()[keep] = 1
            for g, keep in zip(self.neurons, neurons, strict=True):
                g.zero_()[keep] = 1
        return self


@dataclass
class Importance:
    """Taylor importance per head (``heads[l]``, shape (H_l,)) and per neuron (``neurons[l]``, (F_l,))."""

    heads: list[torch.Tensor]
    neurons: list[torch.Tensor]
    n_examples: int

    def head_matrix(self) -> torch.Tensor:
        """(layers, heads) when every layer has the same number of heads."""
        return torch.stack(self.heads)


def importance_scores(
    model: nn.Module,
    dataset: Any,
    tokenizer: Any,
    *,
    batch_size: int = 32,
    per_example: bool = False,
    device: torch.device | str | None = None,
    show_progress: bool = False,
) -> Importance:
    """First-order Taylor importance of every head and feed-forward neuron (Molchanov et al., 2019;
    for heads, Michel et al., 2019).

    For each mini-batch, the summed cross-entropy ``L`` is differentiated with respect to the gates
    of :class:`Gates` at 1; the score of a unit is ``sum over batches |dL/dg|``, so signs of
    different snippets of one batch can cancel and the scores depend on ``batch_size``. With
    ``per_example=True`` every snippet gets its own gates, and the score is
    ``sum over snippets |dL(x)/dg|`` (Michel et al.'s per-example expectation, times the number of
    snippets), the same for any ``batch_size``. Chapter 13 compares the two. Since
    ``dL/dg = sum(dL/da * a)`` over the unit's activations ``a``, this is the gradient x
    activation estimate of how much the loss changes when the unit is removed. Computed in eval mode
    (no dropout) on a tokenised dataset with ``labels``; pass validation data, never the test split.
    The model's weights are not changed and get no gradients.
    """
    from .finetune import make_loader

    if "labels" not in dataset.column_names:
        raise ValueError("dataset needs a 'labels' column: tokenise it with dlbook.finetune.tokenize_dataset()")
    if len(dataset) == 0:
        raise ValueError("dataset is empty")
    device = resolve_device(device, model=model)
    was_training = model.training
    model.eval().to(device)
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    loader = make_loader(dataset, tokenizer, batch_size)
    try:
        with Gates(model, requires_grad=True) as gates:
            head_scores = [torch.zeros_like(g) for g in gates.heads]
            neuron_scores = [torch.zeros_like(g) for g in gates.neurons]
            bar = _progress(total=len(loader), desc="importance", disable=not show_progress)
            for batch in loader:
                batch = {k: v.to(device) for k, v in batch.items()}
                if per_example:  # fresh (batch, units) gates: row b is snippet b's own gate
                    n = batch["labels"].shape[0]
                    gates.heads = [torch.ones(n, g.shape[-1], device=device, requires_grad=True) for g in gates.heads]
                    gates.neurons = [torch.ones(n, g.shape[-1], device=device, requires_grad=True) for g in gates.neurons]
                logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
                loss = nn.functional.cross_entropy(logits.float(), batch["labels"], reduction="sum")
                grads = torch.autograd.grad(loss, [*gates.heads, *gates.neurons])
                n_layers = len(gates.heads)
                for i in range(n_layers):  # abs per batch, or per snippet then summed
                    head_scores[i] += grads[i].abs().detach().reshape(-1, head_scores[i].numel()).sum(0)
                    neuron_scores[i] += grads[n_layers + i].abs().detach().reshape(-1, neuron_scores[i].numel()).sum(0)
                bar.update(1)
            bar.close()
    finally:
        for p, f in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(f)
        model.train(was_training)
    return Importance([s.cpu() for s in head_scores], [s.cpu() for s in neuron_scores], len(dataset))


def top_k_per_layer(scores: Sequence[torch.Tensor], k: int) -> list[list[int]]:
    """The indices of the ``k`` highest scores in each layer, in increasing index order."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    out = []
    for i, s in enumerate(scores):
        if k > s.numel():
            raise ValueError(f"k={k} but layer {i} has only {s.numel()} units")
        out.append(sorted(torch.topk(s, k).indices.tolist()))
    return out


# ---------------------------------------------------------------------------------------------
# shrinking the model


def _normalise_keep(keep: Any, counts: Sequence[int], what: str) -> list[list[int]]:
    """``None`` (keep all), a sequence with one index list per layer, or ``{layer: indices}``."""
    n_layers = len(counts)
    if keep is None:
        return [list(range(c)) for c in counts]
    if isinstance(keep, Mapping):
        for layer in keep:
            if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < n_layers:
                raise ValueError(f"unknown layer {layer!r} in keep_{what}: the encoder has layers 0..{n_layers - 1}")
        lists = [list(keep[i]) if i in keep else list(range(counts[i])) for i in range(n_layers)]
    elif isinstance(keep, Sequence) and not isinstance(keep, (str, bytes)):
        if len(keep) != n_layers:
            raise ValueError(f"keep_{what} needs one index list per layer ({n_layers}), got {len(keep)}")
        lists = [list(k.tolist() if isinstance(k, torch.Tensor) else k) for k in keep]
    else:
        raise TypeError(f"keep_{what} must be None, a sequence of index lists or a {{layer: indices}} dict")
    for i, idx in enumerate(lists):
        if not idx:
            raise ValueError(f"keep_{what} for layer {i} is empty: keep at least one (or drop the layer)")
        if any(isinstance(j, bool) or not isinstance(j, int) for j in idx):
            raise TypeError(f"keep_{what} for layer {i} must hold ints, got {idx!r}")
        if len(set(idx)) != len(idx):
            raise ValueError(f"keep_{what} for layer {i} has duplicates: {idx!r}")
        if min(idx) < 0 or max(idx) >= counts[i]:
            raise ValueError(f"keep_{what} for layer {i} must be in 0..{counts[i] - 1}, got {idx!r}")
        lists[i] = sorted(idx)
    return lists


def select_linear(layer: nn.Linear, index: torch.Tensor, dim: int) -> nn.Linear:
    """A new ``nn.Linear`` with only the output rows (``dim=0``) or input columns (``dim=1``) in ``index``.

    Keeping output rows keeps the matching bias entries; keeping input columns keeps the whole bias.
    """
    if dim not in (0, 1):
        raise ValueError(f"dim must be 0 (outputs) or 1 (inputs), got {dim!r}")
    index = index.to(layer.weight.device)
    w = layer.weight.detach().index_select(dim, index).clone()
    has_bias = layer.bias is not None
    new = nn.Linear(w.shape[1], w.shape[0], bias=has_bias, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        new.weight.copy_(w)
        if has_bias:
            new.bias.copy_(layer.bias.detach()[index] if dim == 0 else layer.bias.detach())
    new.weight.requires_grad_(layer.weight.requires_grad)
    if has_bias:
        new.bias.requires_grad_(layer.bias.requires_grad)
    return new


def shrink_bert(model: nn.Module, keep_heads: Any = None, keep_neurons: Any = None, *, inplace: bool = False) -> nn.Module:
    """Remove attention heads and feed-forward neurons for real: smaller ``nn.Linear`` layers.

    ``keep_heads`` / ``keep_neurons``: ``None`` (keep all), one list of indices per layer, or a
    ``{layer: indices}`` dict (other layers keep everything); indices refer to the model as it is
    now. For each layer, the query/key/value rows of the dropped heads, the attention output
    columns of the dropped heads, the intermediate rows and output columns of the dropped neurons
    go. The result is still a ``BertFor...`` whose ``forward(**batch).logits`` works (the head count
    follows from the tensor shapes; the head size is unchanged) and whose ``state_dict`` is smaller.
    The kept indices relative to the original model are recorded in ``config.dlbook_pruning`` so
    that :func:`load_pruned_bert` can rebuild it from a ``save_pretrained`` folder. Works on a copy
    unless ``inplace=True``. Raises on unknown layers, empty or out-of-range index lists, and on
    models with attached ``torch.nn.utils.prune`` masks.
    """
    layers = _layers(model)
    if any(isinstance(h, torch_prune.BasePruningMethod) for m in model.modules() for h in m._forward_pre_hooks.values()):
        raise ValueError("the model has attached pruning masks: call remove_pruning(model) first")
    shape = structure(model)
    heads = _normalise_keep(keep_heads, shape["heads"], "heads")
    neurons = _normalise_keep(keep_neurons, shape["neurons"], "neurons")
    if not inplace:
        model = copy.deepcopy(model)
        layers = _layers(model)
    d = head_size(model)
    for layer, kh, kn in zip(layers, heads, neurons, strict=True):
        att = layer.attention.self
        cols = torch.tensor([h * d + j for h in kh for j in range(d)], dtype=torch.long)  # (kept heads * d,)
        att.query = select_linear(att.query, cols, 0)
        att.key = select_linear(att.key, cols, 0)
        att.value = select_linear(att.value, cols, 0)
        att.num_attention_heads = len(kh)
        att.all_head_size = len(kh) * d
        layer.attention.output.dense = select_linear(layer.attention.output.dense, cols, 1)
        idx = torch.tensor(kn, dtype=torch.long)
        layer.intermediate.dense = select_linear(layer.intermediate.dense, idx, 0)
        layer.output.dense = select_linear(layer.output.dense, idx, 1)
    # the kept indices relative to the ORIGINAL model (compose with an earlier shrink)
    config = model.config
    before = getattr(config, "dlbook_pruning", None) or {
        "heads": [list(range(config.num_attention_heads))] * len(layers),
        "neurons": [list(range(config.intermediate_size))] * len(layers),
    }
    config.dlbook_pruning = {
        "heads": [[before["heads"][i][j] for j in kh] for i, kh in enumerate(heads)],
        "neurons": [[before["neurons"][i][j] for j in kn] for i, kn in enumerate(neurons)],
    }
    return model


def load_pruned_folder(folder: str | os.PathLike[str]) -> tuple[nn.Module, Any]:
    """``(model, tokenizer)`` from a folder written by ``save_pretrained`` after :func:`shrink_bert`."""
    from transformers import AutoTokenizer

    return load_pruned_bert(folder), AutoTokenizer.from_pretrained(folder)


def load_pruned_bert(folder: str | os.PathLike[str], model_class: Any = None) -> nn.Module:
    """Load a model saved with ``save_pretrained`` after :func:`shrink_bert` (or an unpruned one).

    Builds the full-size architecture from ``config.json``, shrinks it to the shapes recorded in
    ``config.dlbook_pruning`` and loads ``model.safetensors`` strictly (every tensor must fit).
    ``model_class`` defaults to the class named in the config's ``architectures``.
    """
    import transformers
    from safetensors.torch import load_file
    from transformers import AutoConfig

    folder = Path(folder)
    config = AutoConfig.from_pretrained(folder)
    if model_class is None:
        archs = getattr(config, "architectures", None) or ["BertForSequenceClassification"]
        model_class = getattr(transformers, archs[0])
    record = getattr(config, "dlbook_pruning", None)
    if record is not None:
        del config.dlbook_pruning
    model = model_class(config)
    if record is not None:
        model = shrink_bert(model, record["heads"], record["neurons"], inplace=True)
    state = load_file(str(folder / "model.safetensors"))
    missing, unexpected = model.load_state_dict(state, strict=False)
    # tied weights may be stored once; anything else missing is an error
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise ValueError(f"saved weights do not fit the pruned model: missing {missing}, unexpected {unexpected}")
    return model.eval()


# ---------------------------------------------------------------------------------------------
# the cached pruned classifier


@dataclass(frozen=True)
class PruneSettings:
    """What decides the weights of :func:`pruned_classifier`.

    ``keep_heads`` heads and ``keep_neurons`` feed-forward neurons are kept in every layer (the
    same count per layer, so every layer does the same work), chosen by Taylor importance on
    ``n_importance`` validation snippets (``None`` = all 1,000); then a fine-tune of ``epochs``
    over ``n_train`` training snippets (``None`` = all).
    """

    keep_heads: int
    keep_neurons: int
    n_importance: int | None
    n_train: int | None
    max_length: int
    epochs: int
    batch_size: int
    lr: float
    warmup_ratio: float = 0.1
    seed: int = 0


#: The recipe of :func:`pruned_classifier` per profile (chapter 13 prints it).
PRUNE_SETTINGS: dict[str, PruneSettings] = {
    "smoke": PruneSettings(
        keep_heads=6, keep_neurons=768, n_importance=64, n_train=64, max_length=64, epochs=1, batch_size=32, lr=5e-5
    ),
    "full": PruneSettings(
        keep_heads=6, keep_neurons=768, n_importance=None, n_train=4000, max_length=128, epochs=1, batch_size=32, lr=5e-5
    ),
}


def importance_snippets(tokenizer: Any, n_importance: int | None, max_length: int) -> Any:
    """The first ``n_importance`` validation snippets (``None``: all 1,000), tokenised, with labels."""
    from .assets import rotten_tomatoes
    from .finetune import tokenize_dataset

    val = rotten_tomatoes()["validation"]
    return tokenize_dataset(val if n_importance is None else val.select(range(n_importance)), tokenizer, max_length)


def prune_by_importance(
    model: nn.Module, dataset: Any, tokenizer: Any, *, keep_heads: int, keep_neurons: int, device: torch.device
) -> tuple[nn.Module, Importance]:
    """Score heads and neurons on ``dataset`` (validation snippets, :func:`importance_snippets`) and
    shrink a copy of ``model`` to ``keep_heads`` heads and ``keep_neurons`` neurons per layer.

    Used for chapter 13's pruned classifier and for chapter 15's pruned student
    (:func:`dlbook.combined.pruned_student`).
    """
    scores = importance_scores(model, dataset, tokenizer, device=device)
    keep_h = top_k_per_layer(scores.heads, keep_heads)
    keep_n = top_k_per_layer(scores.neurons, keep_neurons)
    return shrink_bert(model, keep_h, keep_n), scores


def _train_pruned(profile: str, device: torch.device) -> tuple[nn.Module, Any, dict[str, Any]]:
    from .assets import rotten_tomatoes
    from .finetune import evaluate_classifier, sentiment_classifier, tokenize_dataset, train_classifier

    s = PRUNE_SETTINGS[profile]
    base, tokenizer, _ = sentiment_classifier(profile, device=device)
    val = importance_snippets(tokenizer, None, s.max_length)
    scored = val if s.n_importance is None else val.select(range(s.n_importance))
    model, _ = prune_by_importance(base, scored, tokenizer, keep_heads=s.keep_heads, keep_neurons=s.keep_neurons, device=device)
    data = rotten_tomatoes()
    train = data["train"] if s.n_train is None else data["train"].select(range(s.n_train))
    train = tokenize_dataset(train, tokenizer, s.max_length)
    before = evaluate_classifier(model, val, tokenizer, device=device).accuracy
    history = train_classifier(
        model,
        train,
        tokenizer,
        epochs=s.epochs,
        batch_size=s.batch_size,
        lr=s.lr,
        warmup_ratio=s.warmup_ratio,
        seed=s.seed,
        device=device,
    )
    after = evaluate_classifier(model, val, tokenizer, device=device).accuracy
    info = {
        "structure": structure(model),
        "val_acc_before_finetune": before,
        "val_acc_after_finetune": after,
        "history": history.to_dict(),
    }
    return model, tokenizer, info


def pruned_classifier(
    profile: str, cache_dir: str | os.PathLike[str] | None = None, device: torch.device | str | None = None
) -> tuple[nn.Module, Any, dict[str, Any]]:
    """Chapter 9's sentiment classifier, structurally pruned and briefly fine-tuned: ``(model, tokenizer, info)``.

    Keeps ``PRUNE_SETTINGS[profile].keep_heads`` of 12 heads and ``keep_neurons`` of 1,536
    feed-forward neurons in every layer, chosen by :func:`importance_scores` on validation data,
    removes the rest with :func:`shrink_bert`, then fine-tunes on a training subset. Trained once per
    profile, library versions and device type, then loaded from the cache (``cached_model``) with
    :func:`load_pruned_bert`. ``info`` holds the settings, the per-layer structure, the validation
    accuracy before and after the fine-tune and the training history. Taught in chapter 13; used
    by chapter 15.
    """
    from .finetune import sentiment_key

    device = resolve_device(device)
    baseline, _ = sentiment_key(profile, device)  # the folder of the model it starts from
    return cached_recipe(
        "pruned",
        RECIPE_VERSION,
        profile,
        PRUNE_SETTINGS[profile],
        lambda d: _train_pruned(profile, d),
        load_pruned_folder,
        label="pruned classifier",
        device=device,
        cache_dir=cache_dir,
        baseline=baseline,
    )


# ---------------------------------------------------------------------------------------------
# vocabulary pruning


@dataclass(frozen=True)
class VocabMap:
    """How the ids of the original tokenizer map onto a pruned vocabulary (:func:`prune_vocabulary`).

    ``kept`` (V_new,) int64 holds the original ids the pruned embedding table keeps, in increasing
    order: row ``j`` of the new table is row ``kept[j]`` of the old one. ``old_to_new`` (V_old,)
    int64 sends every original id to its new id, and every id that was not kept to the new id of
    ``[UNK]`` (``unk_id``). The ordinary tokenizer still tokenises; :meth:`remap` (or
    :meth:`encode`, :meth:`remap_batch`, :meth:`remap_dataset`) turns its ids into the pruned
    model's. Taught in chapter 13; chapter 15 combines it with the other compressions.
    """

    kept: torch.Tensor
    old_to_new: torch.Tensor
    unk_id: int
    old_unk_id: int

    @property
    def old_size(self) -> int:
        """Rows of the original embedding table (30,522 for MiniLM)."""
        return int(self.old_to_new.numel())

    @property
    def new_size(self) -> int:
        """Rows of the pruned embedding table."""
        return int(self.kept.numel())

    def remap(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Original ids (any shape, int) -> pruned ids (same shape, int64); dropped ids -> ``[UNK]``."""
        if not isinstance(input_ids, torch.Tensor) or input_ids.is_floating_point():
            raise TypeError("input_ids must be an integer tensor")
        if input_ids.numel() and (int(input_ids.min()) < 0 or int(input_ids.max()) >= self.old_size):
            raise ValueError(f"input_ids must be original ids in 0..{self.old_size - 1}")
        return self.old_to_new.to(input_ids.device)[input_ids.long()]

    def lost(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Bool mask (same shape): tokens that become ``[UNK]`` only because the pruning dropped them."""
        new = self.remap(input_ids)
        return (new == self.unk_id) & (input_ids.to(new.device) != self.old_unk_id)

    def remap_batch(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of a tokenised batch (a dict or ``BatchEncoding``) with ``input_ids`` remapped."""
        if "input_ids" not in batch:
            raise ValueError("batch has no 'input_ids'")
        out = dict(batch)
        ids = out["input_ids"]
        out["input_ids"] = self.remap(ids if isinstance(ids, torch.Tensor) else torch.as_tensor(ids))
        return out

    def encode(self, tokenizer: Any, texts: Sequence[str] | str, **kwargs: Any) -> dict[str, Any]:
        """``tokenizer(texts, return_tensors="pt", **kwargs)`` with the ids remapped for the pruned model."""
        kwargs.setdefault("return_tensors", "pt")
        return self.remap_batch(tokenizer(texts, **kwargs))

    def remap_dataset(self, dataset: Any) -> Any:
        """A tokenised ``datasets.Dataset`` (``input_ids`` column, unpadded) with its ids remapped.

        Feed the result to :func:`dlbook.finetune.evaluate_classifier` or ``make_loader`` with the
        ordinary tokenizer: its collator pads with ``pad_token_id``, which keeps its id when it is
        the smallest id (0 for BERT; :func:`prune_vocabulary` checks it).
        """
        if "input_ids" not in dataset.column_names:
            raise ValueError("dataset needs an 'input_ids' column: tokenise it first")
        table = self.old_to_new.tolist()

        def one(batch: dict[str, list]) -> dict[str, list]:
            return {"input_ids": [[table[i] for i in ids] for ids in batch["input_ids"]]}

        return dataset.map(one, batched=True)

    def wrap(self, model: nn.Module) -> VocabPrunedModel:
        """``model`` (pruned by :func:`prune_vocabulary`) behind a module that takes ORIGINAL ids.

        So a vocabulary-pruned model drops into code written for the unpruned one
        (``dlbook.measure.interleaved_latency``, ``measure_classifier``, ``evaluate_classifier``
        with the ordinary tokenizer); the id remapping it adds to each call is timed with it.
        """
        if int(model.get_input_embeddings().weight.shape[0]) != self.new_size:
            raise ValueError(
                f"model has {model.get_input_embeddings().weight.shape[0]} embedding rows, "
                f"the map {self.new_size}: wrap the model this map was made for"
            )
        return VocabPrunedModel(model, self)

    def to_config(self) -> dict[str, Any]:
        """What :func:`prune_vocabulary` writes to ``config.dlbook_vocabulary`` (JSON-safe)."""
        return {"kept": self.kept.tolist(), "old_size": self.old_size, "old_unk_id": self.old_unk_id}

    @classmethod
    def from_config(cls, config: Any) -> VocabMap:
        """The map of a pruned model, from its config (also after ``save_pretrained`` / ``from_pretrained``)."""
        record = getattr(config, "dlbook_vocabulary", None)
        if record is None:
            raise ValueError("config has no 'dlbook_vocabulary': the model's vocabulary was not pruned")
        return _make_map(torch.tensor(record["kept"], dtype=torch.long), record["old_size"], record["old_unk_id"])


class VocabPrunedModel(nn.Module):
    """A vocabulary-pruned model that accepts the original tokenizer's ids (:meth:`VocabMap.wrap`).

    ``forward(input_ids=..., **rest)`` remaps ``input_ids`` with the map's ``old_to_new`` table (a
    buffer, saved with the model: it is part of what serving the pruned model needs) and calls the
    wrapped model with everything else unchanged.
    """

    def __init__(self, model: nn.Module, vmap: VocabMap) -> None:
        super().__init__()
        self.model = model
        self.vmap = vmap
        self.register_buffer("old_to_new", vmap.old_to_new.clone())

    @property
    def config(self) -> Any:
        return self.model.config

    def forward(self, input_ids: torch.Tensor, **kwargs: Any) -> Any:
        # the range check reads the values, which an exported graph cannot (chapter 15 exports it)
        exporting = torch.compiler.is_exporting() or torch.compiler.is_compiling()
        if (
            not exporting
            and input_ids.numel()
            and (int(input_ids.min()) < 0 or int(input_ids.max()) >= self.old_to_new.numel())
        ):
            raise ValueError(f"input_ids must be original ids in 0..{self.old_to_new.numel() - 1}")
        return self.model(input_ids=self.old_to_new[input_ids], **kwargs)


def _make_map(kept: torch.Tensor, old_size: int, old_unk_id: int) -> VocabMap:
    old_to_new = torch.full((old_size,), -1, dtype=torch.long)
    old_to_new[kept] = torch.arange(kept.numel())
    unk = int(old_to_new[old_unk_id])
    if unk < 0:
        raise ValueError(f"[UNK] (id {old_unk_id}) must be among the kept ids")
    old_to_new[old_to_new < 0] = unk
    return VocabMap(kept=kept, old_to_new=old_to_new, unk_id=unk, old_unk_id=old_unk_id)


def token_counts(tokenizer: Any, texts: Sequence[str], max_length: int | None = None) -> torch.Tensor:
    """(V,) int64: how often each id of ``tokenizer`` occurs in ``texts`` tokenised as the model sees
    them (special tokens included; truncated to ``max_length`` tokens when given)."""
    if isinstance(texts, str) or not isinstance(texts, Sequence) or not texts:
        raise ValueError("texts must be a non-empty sequence of strings (the training snippets)")
    if any(not isinstance(t, str) for t in texts):
        raise TypeError("texts must hold strings")
    kwargs: dict[str, Any] = {"truncation": True, "max_length": max_length} if max_length is not None else {}
    ids = tokenizer(list(texts), **kwargs)["input_ids"]
    flat = torch.tensor([i for row in ids for i in row], dtype=torch.long)
    return torch.bincount(flat, minlength=len(tokenizer))


def _slice_embedding(emb: nn.Module, keep: torch.Tensor, padding_idx: int | None) -> nn.Module:
    from .distill import ProjectedEmbedding  # chapter 14's factorised table: slice its frozen factor

    if isinstance(emb, ProjectedEmbedding):
        return ProjectedEmbedding(emb.table[keep.to(emb.table.device)], emb.projection.detach(), padding_idx)
    if not isinstance(emb, nn.Embedding):
        raise TypeError(f"cannot prune word embeddings of type {type(emb).__name__}")
    w = emb.weight.detach()[keep.to(emb.weight.device)].clone()  # (V_new, d)
    new = nn.Embedding(w.shape[0], w.shape[1], padding_idx=padding_idx, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        new.weight.copy_(w)
    new.weight.requires_grad_(emb.weight.requires_grad)
    return new


def prune_vocabulary(
    model: nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    min_count: int = 1,
    max_length: int | None = None,
    inplace: bool = False,
) -> tuple[nn.Module, VocabMap]:
    """Keep only the word-embedding rows of tokens the training texts use: ``(pruned model, map)``.

    Kept: every special token of ``tokenizer`` (``[PAD]``, ``[UNK]``, ``[CLS]``, ``[SEP]``,
    ``[MASK]``) and every id that occurs at least ``min_count`` times in ``texts`` tokenised as
    the model sees them (:func:`token_counts`). Pass the TRAINING snippets: a token seen only in
    validation or test must not decide what the model keeps. The word-embedding table (and a
    tied output layer, if the model has one) is sliced to those rows in increasing id order;
    ``config.vocab_size``, ``config.pad_token_id`` and ``config.dlbook_vocabulary`` (the kept ids,
    so :meth:`VocabMap.from_config` rebuilds the map after ``save_pretrained``) are updated. The
    model computes exactly what it computed before on any input whose tokens were all kept. Works
    on any BERT-style Hugging Face model (chapter 9's classifier, chapter 14's students); on a
    copy unless ``inplace=True``. Taught in chapter 13.
    """
    if isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 1:
        raise ValueError(f"min_count must be a positive int, got {min_count!r}")
    if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2):
        raise ValueError(f"max_length must be None or an int >= 2, got {max_length!r}")
    if not hasattr(model, "get_input_embeddings"):
        raise TypeError(f"expected a Hugging Face model, got {type(model).__name__}")
    if getattr(model.config, "dlbook_vocabulary", None) is not None:
        raise ValueError("the model's vocabulary is already pruned: prune the original model instead")
    emb = model.get_input_embeddings()
    old_size = int(emb.weight.shape[0])
    if len(tokenizer) != old_size:
        raise ValueError(f"tokenizer has {len(tokenizer)} tokens but the model's table has {old_size} rows")
    if tokenizer.unk_token_id is None:
        raise ValueError("tokenizer has no [UNK] token to send dropped ids to")
    counts = token_counts(tokenizer, texts, max_length)  # (V,)
    keep_mask = counts >= min_count
    keep_mask[torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long)] = True
    kept = keep_mask.nonzero().squeeze(1)  # (V_new,) increasing old ids
    vmap = _make_map(kept, old_size, int(tokenizer.unk_token_id))
    pad = tokenizer.pad_token_id
    new_pad = None if pad is None else int(vmap.old_to_new[pad])
    if pad is not None and new_pad != pad:
        raise ValueError(f"[PAD] would move from id {pad} to {new_pad}: padding by the tokenizer would break")
    if not inplace:
        model = copy.deepcopy(model)
    model.set_input_embeddings(_slice_embedding(model.get_input_embeddings(), kept, new_pad))
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if out is not None:  # a masked-language-model head: its rows are the same tokens
        if getattr(model.config, "tie_word_embeddings", False):
            out.weight = model.get_input_embeddings().weight
        else:
            out.weight = nn.Parameter(out.weight.detach()[kept.to(out.weight.device)].clone())
        if getattr(out, "bias", None) is not None:
            out.bias = nn.Parameter(out.bias.detach()[kept.to(out.bias.device)].clone())
        out.out_features = kept.numel()
    model.config.vocab_size = vmap.new_size
    model.config.pad_token_id = new_pad
    model.config.dlbook_vocabulary = vmap.to_config()
    return model, vmap


def iter_pruned_modules(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """``(name, module)`` of the modules that carry a ``torch.nn.utils.prune`` mask right now."""
    for name, mod in model.named_modules():
        if any(isinstance(h, torch_prune.BasePruningMethod) for h in mod._forward_pre_hooks.values()):
            yield name, mod


__all__ = [
    "PRUNE_SETTINGS",
    "SCOPES",
    "Gates",
    "Importance",
    "PruneSettings",
    "VocabMap",
    "VocabPrunedModel",
    "encoder_linears",
    "global_magnitude_masks",
    "head_size",
    "importance_scores",
    "iter_pruned_modules",
    "load_pruned_bert",
    "load_pruned_folder",
    "magnitude_mask",
    "n_to_prune",
    "prune_magnitude",
    "importance_snippets",
    "prune_by_importance",
    "prune_vocabulary",
    "pruned_classifier",
    "remove_pruning",
    "select_linear",
    "shrink_bert",
    "structure",
    "token_counts",
    "top_k_per_layer",
    "weight_sparsity",
]
