"""ONNX Runtime for the book's classifiers: export, int8 quantization, and a PyTorch-like wrapper.

Taught in chapter 12, "Quantization". ONNX is a file format for computation graphs; ONNX
Runtime runs such graphs with its own CPU kernels, including int8 matrix products, and its
``onnxruntime.quantization`` package rewrites a float graph into an int8 one. The pieces:

- :func:`export_classifier`: a ``BertForSequenceClassification``-like model to an ``.onnx`` file
  (``torch.onnx.export`` with the dynamo exporter, batch and sequence length left dynamic);
- :func:`quantize_dynamic_int8` / :func:`quantize_static_int8`: ONNX Runtime's dynamic (scales of
  the activations computed per batch) and static (scales fixed by calibration batches) int8
  quantization of that file;
- :class:`OrtClassifier`: an inference session that a chapter calls like the PyTorch model,
  ``model(**batch).logits``, so that :mod:`dlbook.measure` times and scores both the same way;
- :func:`onnx_size_mb`: the size on disk, external weight files included.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import nn

#: The inputs the exported graph takes (single-sentence classification: token types are all 0).
INPUT_NAMES = ("input_ids", "attention_mask")


def _check_path(path: object, name: str) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a path, got {type(path).__name__}")
    return Path(path)


def _check_batch(batch: object) -> dict[str, torch.Tensor]:
    """The tokenizer's batch: ``input_ids`` and ``attention_mask`` of one shape, token types all 0."""
    if not isinstance(batch, Mapping) or any(k not in batch for k in INPUT_NAMES):
        raise ValueError(
            f"batch must be a mapping with {', '.join(INPUT_NAMES)}, got "
            f"{sorted(batch) if isinstance(batch, Mapping) else type(batch).__name__}"
        )
    ids, mask = batch["input_ids"], batch["attention_mask"]
    if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or getattr(mask, "shape", None) != ids.shape:
        raise ValueError("input_ids and attention_mask must be 2-d tensors (batch, seq) of the same shape")
    types = batch.get("token_type_ids")
    if types is not None and bool(torch.as_tensor(types).any()):
        raise ValueError("token_type_ids must be all 0: the exported graph classifies single sentences")
    return {k: batch[k] for k in INPUT_NAMES}


class _Logits(nn.Module):
    """``model(input_ids, attention_mask).logits``: the graph to export, with plain tensor outputs."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's known, harmless messages, and only those.

    - a log line per torchvision operator it would register if torchvision were installed (the
      book does not install it);
    - a FutureWarning raised inside torch's own pytree code (``LeafSpec``) while exporting;
    - onnxruntime.quantization's advice to run its optional pre-processing (shape inference),
      which does not change the int8 graph of a BERT classifier.
    """
    loggers = [logging.getLogger("torch.onnx._internal.exporter._registration"), logging.getLogger()]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", r".*LeafSpec.*", FutureWarning)
            warnings.filterwarnings("ignore", r"# The axis name: .* will not be used", UserWarning)
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def export_classifier(model: nn.Module, path: str | os.PathLike[str], example: Mapping[str, torch.Tensor]) -> Path:
    """Export a sequence classifier to ONNX at ``path``; returns the path.

    ``example`` is a tokenised batch (``input_ids``, ``attention_mask``) used to trace the
    graph; the batch size and the sequence length stay dynamic. The model is exported in eval
    mode on the CPU (a copy is not made: it is put back in its mode afterwards). The weights may
    be written next to the file as ``<path>.data``; :func:`onnx_size_mb` counts both.
    """
    path = _check_path(path, "path")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    batch = _check_batch(example)
    was_training = model.training
    wrapper = _Logits(model).eval()
    dims = {0: "batch", 1: "seq"}
    try:
        with _quiet_exporter():
            torch.onnx.export(
                wrapper,
                tuple(batch[k].cpu() for k in INPUT_NAMES),
                str(path),
                input_names=list(INPUT_NAMES),
                output_names=["logits"],
                dynamic_shapes={k: dims for k in INPUT_NAMES},
                dynamo=True,
                verbose=False,
            )
    finally:
        model.train(was_training)
    return path


def onnx_size_mb(path: str | os.PathLike[str]) -> float:
    """Megabytes (10^6 bytes) of an ONNX file plus its external weights (``<path>.data``), if any."""
    path = _check_path(path, "path")
    if not path.is_file():
        raise FileNotFoundError(f"no ONNX file at {path}")
    extra = Path(str(path) + ".data")
    return (path.stat().st_size + (extra.stat().st_size if extra.is_file() else 0)) / 1e6


def quantize_dynamic_int8(src: str | os.PathLike[str], dst: str | os.PathLike[str], *, per_channel: bool = True) -> Path:
    """ONNX Runtime's dynamic int8 quantization of ``src`` into ``dst``; returns ``dst``.

    Weights of the matrix products become int8 (one scale per output channel with
    ``per_channel=True``), the embedding lookups (``Gather``) int8 as well; at run time each
    batch of activations gets its own uint8 scale and zero point, like PyTorch's dynamic
    linear layers.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src, dst = _check_path(src, "src"), _check_path(dst, "dst")
    if not isinstance(per_channel, bool):
        raise TypeError(f"per_channel must be True or False, got {per_channel!r}")
    with _quiet_exporter():
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=per_channel)
    return dst


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over tokenised batches.

    The histogram calibrators stack the activations of all batches, so every batch is padded
    to the longest one (``pad_id`` in the ids, 0 in the mask). Padded positions change no real
    token's output, but their activations are observed like any other, so they enter the
    calibrated ranges (as they do when a padded batch calibrates in PyTorch).
    """

    def __init__(self, batches: Iterable[Mapping[str, torch.Tensor]], pad_id: int = 0) -> None:
        checked = [_check_batch(b) for b in batches]
        if not checked:
            raise ValueError("calibration is empty: give at least one batch")
        longest = max(b["input_ids"].shape[1] for b in checked)
        feeds = []
        for b in checked:
            extra = longest - b["input_ids"].shape[1]
            ids = torch.nn.functional.pad(b["input_ids"].cpu(), (0, extra), value=pad_id)
            mask = torch.nn.functional.pad(b["attention_mask"].cpu(), (0, extra), value=0)
            feeds.append({"input_ids": ids.numpy().astype(np.int64), "attention_mask": mask.numpy().astype(np.int64)})
        self._it = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


def quantize_static_int8(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    calibration: Iterable[Mapping[str, torch.Tensor]],
    *,
    method: str = "minmax",
    percentile: float = 99.99,
    pad_id: int = 0,
) -> Path:
    """ONNX Runtime's static int8 quantization: activation scales fixed from ``calibration`` batches.

    ``method`` is ``"minmax"`` (the widest range seen) or ``"percentile"``: the ``percentile``-th
    and ``(100 - percentile)``-th percentiles of the values seen, the rule of
    :class:`dlbook.quantize.PercentileObserver` (ONNX Runtime's histogram calibrator cuts
    ``(100 - p) / 2`` % on each side, so it is given ``p = 2 * percentile - 100``). Weights
    are int8 per output channel, activations uint8, in the QDQ format (quantize / dequantize
    pairs that ONNX Runtime fuses into integer kernels where it has them). ``pad_id`` is the
    tokenizer's padding id (0 for BERT's vocabularies): the calibration batches are padded to
    one length with it.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile}
    if method not in methods:
        raise ValueError(f"method must be one of {sorted(methods)}, got {method!r}")
    if isinstance(percentile, bool) or not isinstance(percentile, (int, float)) or not 50 < percentile <= 100:
        raise ValueError(f"percentile must be a number in (50, 100], got {percentile!r}")
    src, dst = _check_path(src, "src"), _check_path(dst, "dst")
    reader = _Reader(calibration, pad_id)
    extra = {"CalibPercentile": 2 * float(percentile) - 100} if method == "percentile" else {}
    # the histogram calibrators print their progress; the chapter reports the result instead
    with _quiet_exporter(), contextlib.redirect_stdout(io.StringIO()):
        quantize_static(
            str(src),
            str(dst),
            reader,
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=methods[method],
            extra_options=extra,
        )
    return dst


class OrtClassifier(nn.Module):
    """An ONNX Runtime session behind the interface of a Hugging Face classifier.

    ``model(**batch)`` takes the tokenizer's tensors (``labels`` and all-zero ``token_type_ids``
    are accepted and ignored) and returns an object with ``.logits`` (a float32 tensor), so
    :func:`dlbook.measure.interleaved_latency` and :func:`dlbook.finetune.evaluate_classifier`
    use it unchanged. ``threads`` fixes ONNX Runtime's intra-op thread pool (the same count the
    PyTorch rows run with); inter-op parallelism is off, and its threads do not spin between
    runs (so they leave the cores to a model timed next). The session runs on the CPU. The one
    parameter, empty, only tells PyTorch helpers which device to put inputs on.
    """

    def __init__(self, path: str | os.PathLike[str], *, threads: int) -> None:
        super().__init__()
        import onnxruntime as ort

        path = _check_path(path, "path")
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be a positive int, got {threads!r}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3  # errors only
        # ONNX Runtime's threads otherwise spin after each run, taking the cores from whatever
        # is timed next (chapters 12 and 15 time it in turns with PyTorch models)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.path = path
        self.threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.anchor = nn.Parameter(torch.empty(0), requires_grad=False)

    def forward(self, **batch: torch.Tensor) -> SimpleNamespace:
        feed = {k: v.cpu().numpy().astype(np.int64) for k, v in _check_batch(batch).items()}
        (logits,) = self.session.run(["logits"], feed)
        return SimpleNamespace(logits=torch.from_numpy(logits))

    def size_mb(self) -> float:
        """:func:`onnx_size_mb` of the file this session runs."""
        return onnx_size_mb(self.path)

    def extra_repr(self) -> str:
        return f"{self.path.name}, threads={self.threads}"


def classifier_measurement(measurement: Any, model: OrtClassifier) -> Any:
    """``measurement`` with its size replaced by the ONNX file's (a state dict would be empty)."""
    from dataclasses import replace

    if not isinstance(model, OrtClassifier):
        raise TypeError(f"model must be an OrtClassifier, got {type(model).__name__}")
    return replace(measurement, size_mb=model.size_mb(), params=None)


__all__ = [
    "INPUT_NAMES",
    "OrtClassifier",
    "classifier_measurement",
    "export_classifier",
    "onnx_size_mb",
    "quantize_dynamic_int8",
    "quantize_static_int8",
]
