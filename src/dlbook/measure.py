"""How the compression chapters measure a model: size on disk, latency, accuracy, provenance.

Taught in chapter 12 (quantization) and used unchanged by chapters 13 (pruning), 14
(distillation) and 15 (the compression scoreboard), so their numbers compare:

- size = megabytes (10^6 bytes) of the saved ``state_dict`` on disk (:func:`saved_size_mb`);
- latency = median wall time of a forward pass over repeated runs after warm-up, on a fixed
  batch of test sentences at batch 1 and batch 32, with the thread count fixed
  (:func:`latency`, :func:`benchmark_batches`, :func:`fixed_threads`);
- accuracy = on the validation split, which chooses among variants, and on the held-out test
  split, which reports the chosen one once (:func:`measure_classifier` via
  :func:`dlbook.finetune.evaluate_classifier`); per-example test results and labels are kept so
  that two variants are compared paired, on the same examples (:meth:`Scoreboard.compare`);
- every table carries the provenance (CPU model, threads, torch version) (:class:`Scoreboard`).
"""

from __future__ import annotations

import contextlib
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from .train import count_parameters

if TYPE_CHECKING:  # pandas and matplotlib are imported where a table or a plot is built
    import pandas as pd
    from matplotlib.axes import Axes
    from pandas.io.formats.style import Styler

# ---------------------------------------------------------------------------------------------
# size


def saved_size_mb(model: nn.Module | Mapping[str, Any]) -> float:
    """Megabytes (10^6 bytes) that ``torch.save(model.state_dict())`` writes to disk.

    Measured by saving to a temporary file, so packed int8 weights, quantization scales and
    sparse layouts count exactly as stored. Tied weights are stored once, as torch saves them.
    """
    if isinstance(model, nn.Module):
        state = model.state_dict()
    elif isinstance(model, Mapping):
        state = model
    else:
        raise TypeError(f"expected an nn.Module or a state_dict, got {type(model).__name__}")
    fd, path = tempfile.mkstemp(suffix=".pt")
    os.close(fd)
    try:
        torch.save(state, path)
        return os.path.getsize(path) / 1e6
    finally:
        os.remove(path)


# ---------------------------------------------------------------------------------------------
# latency


@contextlib.contextmanager
def fixed_threads(n: int) -> Iterator[int]:
    """Run the block with ``torch.set_num_threads(n)``; restore the previous count after."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"threads must be a positive int, got {n!r}")
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)


@dataclass(frozen=True)
class Latency:
    """Wall times of repeated runs, in milliseconds; ``median`` is the number the book reports."""

    runs_ms: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.runs_ms)

    @property
    def spread(self) -> tuple[float, float]:
        """(min, max) over the timed runs."""
        return min(self.runs_ms), max(self.runs_ms)


def _sync(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device is not None and device.type == "mps":
        torch.mps.synchronize()


def latency(fn: Callable[[], Any], *, warmup: int = 3, repeats: int = 10, device: torch.device | str | None = None) -> Latency:
    """Time ``fn()`` ``repeats`` times after ``warmup`` untimed calls (GPU work is synchronised)."""
    if not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be an int >= 0, got {warmup!r}")
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an int >= 1, got {repeats!r}")
    dev = torch.device(device) if device is not None else None
    for _ in range(warmup):
        fn()
    _sync(dev)
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(dev)
        runs.append((time.perf_counter() - start) * 1e3)
    return Latency(tuple(runs))


def benchmark_batches(
    tokenizer: Any, texts: Sequence[str], batch_sizes: Sequence[int] = (1, 32), max_length: int = 128
) -> dict[int, dict[str, torch.Tensor]]:
    """The fixed inputs latency is measured on: the first ``b`` texts, for each ``b`` in ``batch_sizes``.

    Each batch is padded to its own longest sentence (as a server batching requests would) and
    truncated to ``max_length`` tokens.
    """
    texts = list(texts)
    if not texts or not all(isinstance(t, str) for t in texts):
        raise ValueError("texts must be a non-empty sequence of strings")
    batches = {}
    for b in batch_sizes:
        if not isinstance(b, int) or b < 1:
            raise ValueError(f"batch sizes must be positive ints, got {b!r}")
        if b > len(texts):
            raise ValueError(f"batch size {b} needs at least {b} texts, got {len(texts)}")
        enc = tokenizer(texts[:b], padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        batches[b] = dict(enc)
    return batches


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a model with neither)."""
    from .env import resolve_device

    return resolve_device(model=model)


def forward_latency(model: nn.Module, batch: Mapping[str, torch.Tensor], *, warmup: int = 3, repeats: int = 10) -> Latency:
    """Latency of ``model(**batch)`` in eval mode under ``torch.inference_mode`` on the model's device."""
    device = model_device(model)
    inputs = {k: v.to(device) for k, v in batch.items()}
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            return latency(lambda: model(**inputs), warmup=warmup, repeats=repeats, device=device)
    finally:
        model.train(was_training)


def interleaved_calls(
    calls: Mapping[str, Callable[[], Any]], *, rounds: int, warmup: int = 2, device: torch.device | str | None = None
) -> dict[str, Latency]:
    """Time several calls in turns: ``{name: Latency}`` with ``rounds`` runs each.

    Every call is warmed up, then each round times one run of each call in turn. On a machine
    shared with other work the load drifts over minutes; timing the variants one after another
    inside each round lets every variant see the same drift, so their *ratios* are fair even when
    the absolute times are not. The order is reversed every other round (``a, b``, then ``b, a``,
    ...), so that no call always runs first, right after the previous round's last call (warm or
    cold caches, a thread pool just woken). Run ``i`` of every call comes from round ``i``, so two
    calls' ``runs_ms`` pair up round by round (per-round ratios). ``device``: GPU work on it is
    synchronised after each run. :func:`interleaved_latency` (chapters 12 and 15) is built on it;
    chapters 3, 6 and 14 and the pitfalls chapter call it directly.
    """
    if not calls:
        raise ValueError("calls is empty")
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds must be a positive int, got {rounds!r}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be an int >= 0, got {warmup!r}")
    for fn in calls.values():
        latency(fn, warmup=warmup, repeats=1, device=device)
    runs: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    for i in range(rounds):
        for name in names if i % 2 == 0 else names[::-1]:  # alternate the order between rounds
            runs[name].extend(latency(calls[name], warmup=0, repeats=1, device=device).runs_ms)
    return {name: Latency(tuple(r)) for name, r in runs.items()}


def interleaved_latency(
    models: Mapping[str, nn.Module],
    batches: Mapping[int, Mapping[str, torch.Tensor]],
    *,
    threads: int,
    rounds: Mapping[int, int] | int = 10,
    warmup: int = 2,
) -> dict[str, dict[int, Latency]]:
    """Latencies of several models timed in turns: ``{name: {batch_size: Latency}}``.

    For each batch size, :func:`interleaved_calls` with one forward pass of each model per round
    (``rounds`` per batch size: one int for all, or a dict), at ``threads`` threads, in eval mode
    under ``torch.inference_mode``. Added in chapter 12, where the speed-up of int8 is measured.
    """
    if not models:
        raise ValueError("models is empty")
    if not batches:
        raise ValueError("batches is empty: build it with benchmark_batches()")
    per_batch = {b: rounds for b in batches} if isinstance(rounds, int) else dict(rounds)
    if set(per_batch) != set(batches) or not all(isinstance(n, int) and n >= 1 for n in per_batch.values()):
        raise ValueError(f"rounds must be a positive int or a dict with a positive int per batch size {sorted(batches)}")
    if not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be an int >= 0, got {warmup!r}")
    was_training = {name: m.training for name, m in models.items()}
    inputs = {
        name: {b: {k: v.to(model_device(m)) for k, v in batch.items()} for b, batch in batches.items()}
        for name, m in models.items()
    }

    def forward(m: nn.Module, x: Mapping[str, torch.Tensor]) -> Callable[[], None]:
        def call() -> None:
            m(**x)
            _sync(model_device(m))  # each model on its own device

        return call

    out: dict[str, dict[int, Latency]] = {name: {} for name in models}
    try:
        with fixed_threads(threads), torch.inference_mode():
            for m in models.values():
                m.eval()
            for b in batches:
                timed = interleaved_calls(
                    {name: forward(m, inputs[name][b]) for name, m in models.items()}, rounds=per_batch[b], warmup=warmup
                )
                for name, lat in timed.items():
                    out[name][b] = lat
    finally:
        for name, m in models.items():
            m.train(was_training[name])
    return out


# ---------------------------------------------------------------------------------------------
# one row of a scoreboard


@dataclass
class Measurement:
    """One model variant: size (MB), median latency (ms) per batch size, test accuracy.

    ``correct`` holds the per-example correctness on the test split (for paired intervals,
    :mod:`dlbook.stats`) and ``labels`` the test labels it was scored against, so that a paired
    comparison can check that two rows scored the same examples; ``val_accuracy`` the validation
    accuracy, which is what a chapter chooses a variant by (the test split never chooses).
    """

    name: str
    size_mb: float
    latency_ms: dict[int, float]
    accuracy: float
    threads: int
    params: int | None = None
    notes: str = ""
    spread_ms: dict[int, tuple[float, float]] = field(default_factory=dict)
    val_accuracy: float | None = None
    correct: np.ndarray | None = field(default=None, repr=False)
    labels: np.ndarray | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["correct"] = None if self.correct is None else self.correct.tolist()
        d["labels"] = None if self.labels is None else self.labels.tolist()
        return d


def measure_classifier(
    name: str,
    model: nn.Module,
    tokenizer: Any,
    test_dataset: Any,
    batches: Mapping[int, Mapping[str, torch.Tensor]],
    *,
    threads: int,
    warmup: int = 3,
    repeats: int = 10,
    eval_batch_size: int = 64,
    notes: str = "",
    show_progress: bool = False,
    timings: Mapping[int, Latency] | None = None,
    val_dataset: Any = None,
) -> Measurement:
    """Size, latency at each batch in ``batches`` (from :func:`benchmark_batches`) and accuracy.

    With ``val_dataset`` (tokenised like ``test_dataset``) the validation accuracy is measured
    too, so that a chapter can choose among variants without looking at the test split.

    ``test_dataset`` is tokenised with :func:`dlbook.finetune.tokenize_dataset`; ``model(**batch)``
    must return an object with ``.logits`` (every Hugging Face classifier does). Latency and
    accuracy run with ``threads`` CPU threads. Pass ``timings`` (one :class:`Latency` per batch
    size, e.g. from :func:`interleaved_latency`) to record latencies measured beforehand instead
    of timing here.
    """
    from .finetune import evaluate_classifier

    if not batches:
        raise ValueError("batches is empty: build it with benchmark_batches()")
    if timings is not None and set(timings) != set(batches):
        raise ValueError(f"timings must hold one Latency per batch size {sorted(batches)}, got {sorted(timings)}")
    with fixed_threads(threads):
        if timings is None:
            timings = {b: forward_latency(model, batch, warmup=warmup, repeats=repeats) for b, batch in batches.items()}
        result = evaluate_classifier(model, test_dataset, tokenizer, batch_size=eval_batch_size, show_progress=show_progress)
        val = None
        if val_dataset is not None:
            val = evaluate_classifier(model, val_dataset, tokenizer, batch_size=eval_batch_size).accuracy
    return Measurement(
        name=name,
        size_mb=saved_size_mb(model),
        latency_ms={b: t.median for b, t in timings.items()},
        accuracy=result.accuracy,
        threads=threads,
        params=count_parameters(model, trainable_only=False),  # packed int8 weights are not parameters
        notes=notes,
        spread_ms={b: t.spread for b, t in timings.items()},
        val_accuracy=val,
        correct=(result.preds == result.labels).numpy(),
        labels=result.labels.numpy(),
    )


# ---------------------------------------------------------------------------------------------
# the table


def provenance_line(threads: int | None = None) -> str:
    """``CPU <model> (<instruction sets>) [<class>] | threads N | torch X``: every measurement table's line."""
    from .env import device_name, hardware_class

    n = threads if threads is not None else torch.get_num_threads()
    cpu = torch.device("cpu")
    return f"CPU {device_name(cpu)} [{hardware_class(cpu)}] | threads {n} | torch {torch.__version__}"


#: What :meth:`Scoreboard.styled` shows for each column of :meth:`Scoreboard.frame` (name, format).
_READABLE: dict[str, tuple[str, str | None]] = {
    "size_MB": ("size (MB)", "{:.1f}"),
    "accuracy": ("test accuracy", "{:.3f}"),
    "val_accuracy": ("validation accuracy", "{:.3f}"),
    "smaller": ("× smaller", "{:.2f}"),
    "acc_drop_pts": ("test points lost", "{:+.2f}"),
    "val_drop_pts": ("validation points lost", "{:+.2f}"),
    "drop_95ci": ("test points lost, 95 % interval", None),
}


class Scoreboard:
    """Measurements of model variants against a baseline (the first one added, unless named).

    ``frame()`` gives size, latency and accuracy with the ratios the book quotes: ``smaller``
    (baseline size / size), ``faster@b`` (baseline latency / latency at batch ``b``, measured in
    the same run) and ``acc_drop_pts`` (baseline accuracy minus accuracy, in points), with the
    95 % paired bootstrap interval of that drop (``drop_95ci``, :meth:`compare`) where the
    per-example results are known, and ``val_drop_pts`` where validation was measured.
    """

    def __init__(self, baseline: str | None = None) -> None:
        self.rows: dict[str, Measurement] = {}
        self.baseline = baseline

    def add(self, m: Measurement) -> Measurement:
        if not isinstance(m, Measurement):
            raise TypeError(f"expected a Measurement, got {type(m).__name__}")
        if m.name in self.rows:
            raise ValueError(f"a measurement named {m.name!r} is already on the scoreboard")
        if self.rows and set(m.latency_ms) != set(next(iter(self.rows.values())).latency_ms):
            raise ValueError("every measurement must be timed at the same batch sizes")
        self.rows[m.name] = m
        if self.baseline is None:
            self.baseline = m.name
        return m

    def base(self) -> Measurement:
        if not self.rows:
            raise ValueError("the scoreboard is empty")
        if self.baseline not in self.rows:
            raise ValueError(f"baseline {self.baseline!r} has not been measured; have {list(self.rows)}")
        return self.rows[self.baseline]

    def ratios(self, name: str) -> dict[str, float]:
        """``smaller``, ``faster@b`` for each batch size, and ``acc_drop_pts`` of ``name`` vs the baseline."""
        if name not in self.rows:
            raise KeyError(f"no measurement named {name!r}; have {list(self.rows)}")
        m, b = self.rows[name], self.base()
        out = {"smaller": b.size_mb / m.size_mb}
        out.update({f"faster@{k}": b.latency_ms[k] / m.latency_ms[k] for k in m.latency_ms})
        out["acc_drop_pts"] = 100 * (b.accuracy - m.accuracy)
        if m.val_accuracy is not None and b.val_accuracy is not None:
            out["val_drop_pts"] = 100 * (b.val_accuracy - m.val_accuracy)
        return out

    def compare(self, name: str, *, n_boot: int = 10_000, seed: int = 0):
        """Paired comparison of the baseline against ``name`` on the same test examples.

        A :class:`dlbook.stats.Comparison` of ``baseline - name``: its interval is the interval
        of the accuracy drop (positive: the variant lost accuracy). Where both rows recorded
        their test labels, they must be the same labels in the same order (else the pairing
        would be meaningless and a ``ValueError`` says so).
        """
        from .stats import compare

        if name not in self.rows:
            raise KeyError(f"no measurement named {name!r}; have {list(self.rows)}")
        m, b = self.rows[name], self.base()
        if m.correct is None or b.correct is None:
            raise ValueError(f"per-example results of {name!r} or the baseline are unknown: measure with measure_classifier")
        if m.labels is not None and b.labels is not None and not np.array_equal(m.labels, b.labels):
            raise ValueError(f"{name!r} and the baseline {self.baseline!r} were scored on different test examples")
        return compare(b.correct, m.correct, n_boot=n_boot, seed=seed)

    def frame(self) -> pd.DataFrame:
        """A pandas DataFrame, one row per variant, in the order added."""
        import pandas as pd

        records = []
        for name, m in self.rows.items():
            row: dict[str, Any] = {"variant": name, "size_MB": m.size_mb}
            row.update({f"ms@{k}": v for k, v in m.latency_ms.items()})
            row["accuracy"] = m.accuracy
            if m.val_accuracy is not None:
                row["val_accuracy"] = m.val_accuracy
            row.update(self.ratios(name))
            if name != self.baseline and m.correct is not None and self.base().correct is not None:
                i = self.compare(name).interval
                row["drop_95ci"] = f"[{100 * i.low:+.1f}, {100 * i.high:+.1f}]"
            records.append(row)
        return pd.DataFrame.from_records(records).set_index("variant")

    def styled(self, table: pd.DataFrame | None = None) -> Styler:
        """:meth:`frame` for reading: column names in words, units, fixed decimals, no wrapped rows.

        ``table`` (default :meth:`frame`) may be a selection of its rows or columns; code keeps
        reading the short names of :meth:`frame` (``table["faster@32"]``), the page shows these.
        Returns a pandas ``Styler``, which a notebook displays as an HTML table.
        """
        import pandas as pd

        table = self.frame() if table is None else table
        if not isinstance(table, pd.DataFrame):
            raise TypeError(f"table must be a pandas DataFrame from frame(), got {type(table).__name__}")
        names, formats = {}, {}
        for col in table.columns:
            name, fmt = _READABLE.get(col, (col, None))
            if col.startswith("ms@"):
                name, fmt = f"ms, batch {col[3:]}", "{:.2f}"
            elif col.startswith("faster@"):
                name, fmt = f"× faster, batch {col[7:]}", "{:.2f}"
            names[col] = name
            if fmt is not None:
                formats[name] = fmt
        shown = table.rename(columns=names).rename_axis(table.index.name or "variant")
        return shown.style.format(formats, na_rep="–").set_table_styles(
            [{"selector": "th, td", "props": [("white-space", "nowrap")]}]
        )

    def provenance(self) -> str:
        threads = {m.threads for m in self.rows.values()}
        if len(threads) > 1:
            raise ValueError(f"measurements were taken with different thread counts {sorted(threads)}")
        return provenance_line(threads.pop() if threads else None)

    def plot(self, batch_size: int = 32, ax: Axes | None = None, legend: str = "right") -> Axes:
        """Latency at ``batch_size`` (x) vs accuracy (y), marker area proportional to size on disk.

        Each variant's name and size go into a legend in its marker's colour (``legend="right"``:
        beside the axes; ``"below"``: under them, in two columns), since labels written next to
        markers overlap when variants sit close together; ``legend="labels"`` writes them there.
        Returns the axes (new ones unless ``ax`` is given).
        """
        import matplotlib.pyplot as plt

        if legend not in ("right", "below", "labels"):
            raise ValueError(f"legend must be 'right', 'below' or 'labels', got {legend!r}")
        if not self.rows:
            raise ValueError("the scoreboard is empty")
        missing = [name for name, m in self.rows.items() if batch_size not in m.latency_ms]
        if missing:
            raise ValueError(f"{missing[0]!r} was not timed at batch {batch_size}")
        ax = ax or plt.subplots(figsize=(6, 4))[1]
        for name, m in self.rows.items():
            ax.scatter(m.latency_ms[batch_size], m.accuracy, s=8 * m.size_mb, alpha=0.6)
            if legend == "labels":
                ax.annotate(
                    f"{name}\n{m.size_mb:.0f} MB",
                    (m.latency_ms[batch_size], m.accuracy),
                    fontsize=8,
                    xytext=(4, 4),
                    textcoords="offset points",
                )
        if legend != "labels":
            names = [f"{name}, {m.size_mb:.0f} MB" for name, m in self.rows.items()]
            where = (
                {"loc": "upper left", "bbox_to_anchor": (1.02, 1)}
                if legend == "right"
                else {"loc": "upper center", "bbox_to_anchor": (0.5, -0.2), "ncol": 2}
            )
            ax.legend(ax.collections[-len(names) :], names, fontsize=8, markerscale=0.4, **where)
        ax.set_xlabel(f"median latency at batch {batch_size} (ms)")
        ax.set_ylabel("test accuracy")
        ax.set_title("size (marker area), speed and accuracy")
        return ax


__all__ = [
    "Latency",
    "Measurement",
    "Scoreboard",
    "benchmark_batches",
    "fixed_threads",
    "forward_latency",
    "interleaved_calls",
    "interleaved_latency",
    "latency",
    "measure_classifier",
    "model_device",
    "provenance_line",
    "saved_size_mb",
]
