"""Sequence-to-sequence helpers of chapter 19 (Encoder-decoder models): the dates task, character
tokens, teacher-forced training, greedy and beam decoding.

**The dates task.** A calendar date written in one of :data:`DATE_FORMATS` (``"3 March 2021"``,
``"Mar 3rd, 2021"``, ``"Wednesday, 03.03.2021"``, ``"03/03/21"``, ...) is to be rewritten as ISO 8601
(``"2021-03-03"``). Dates run from 1950-01-01 to 2049-12-31, so a two-digit year has one reading
(``50``-``99`` are 1950-1999, ``00``-``49`` are 2000-2049). Numeric formats are always day first
(``DD/MM/YY``, ``D.M.YYYY``) or year first (``YYYY.MM.DD``); the month-first US numeric form
(``03/04/21`` meaning 4 March) is left out, since it cannot be told apart from the day-first one.
:func:`make_date_splits` splits the *calendar dates* (not just the strings) into train, validation
and test with a seeded generator, so no date, and hence no input string, is in two splits.

**Tokens.** :class:`CharVocab` maps characters to ids; ``PAD = 0``, ``BOS = 1``, ``EOS = 2``.

**Training and decoding.** :func:`train_seq2seq` trains an :class:`~dlbook.nn.transformer.EncoderDecoder`
with teacher forcing (the decoder reads the true previous characters) and keeps the epoch with the
best exact match on validation. :func:`greedy_decode` and :func:`beam_decode` generate from the model.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .env import resolve_device
from .loop import EarlyStopping, History, TrainStep, train_loop
from .progress import progress
from .train import warmup_scheduler

__all__ = [
    "BOS",
    "DATE_FORMATS",
    "EOS",
    "PAD",
    "CharVocab",
    "DateExample",
    "beam_decode",
    "encode_examples",
    "exact_match",
    "format_date",
    "greedy_decode",
    "make_date_splits",
    "sequence_logprob",
    "teacher_forcing_loss",
    "train_seq2seq",
    "translate",
]

PAD, BOS, EOS = 0, 1, 2
SPECIALS = ("<pad>", "<bos>", "<eos>")
#: Every character a source or target may contain, after the three special tokens.
ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ ,./-'"

MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
FIRST_DATE, LAST_DATE = dt.date(1950, 1, 1), dt.date(2049, 12, 31)


# ---------------------------------------------------------------------------- formats
def _ordinal(n: int) -> str:
    """``1st``, ``2nd``, ``3rd``, ``4th``, ..., ``11th``, ``12th``, ``13th``, ``21st``, ``22nd``, ``31st``."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


#: How each field is written; the key names the field it belongs to (its first letter: d, m, y, w).
_FIELDS = {
    "d": lambda d: str(d.day),
    "dd": lambda d: f"{d.day:02d}",
    "dth": lambda d: _ordinal(d.day),
    "m": lambda d: str(d.month),
    "mm": lambda d: f"{d.month:02d}",
    "month": lambda d: MONTHS[d.month - 1],
    "mon": lambda d: MONTHS[d.month - 1][:3],
    "MON": lambda d: MONTHS[d.month - 1][:3].upper(),
    "lmonth": lambda d: MONTHS[d.month - 1].lower(),
    "yyyy": lambda d: f"{d.year:04d}",
    "yy": lambda d: f"{d.year % 100:02d}",
    "wday": lambda d: WEEKDAYS[d.weekday()],
    "wd": lambda d: WEEKDAYS[d.weekday()][:3],
}
_KIND = {"d": "day", "m": "month", "l": "month", "M": "month", "y": "year", "w": "weekday"}

#: The source formats: each a sequence of pieces, ``{field}`` or literal text.
DATE_FORMATS: dict[str, tuple[str, ...]] = {
    "d month yyyy": ("{d}", " ", "{month}", " ", "{yyyy}"),
    "dd mon yyyy": ("{dd}", " ", "{mon}", " ", "{yyyy}"),
    "month d, yyyy": ("{month}", " ", "{d}", ", ", "{yyyy}"),
    "mon dth, yyyy": ("{mon}", " ", "{dth}", ", ", "{yyyy}"),
    "dth of month yyyy": ("{dth}", " of ", "{month}", " ", "{yyyy}"),
    "wday, d month yyyy": ("{wday}", ", ", "{d}", " ", "{month}", " ", "{yyyy}"),
    "wd dd mon yyyy": ("{wd}", " ", "{dd}", " ", "{mon}", " ", "{yyyy}"),
    "wday, month dth yyyy": ("{wday}", ", ", "{month}", " ", "{dth}", " ", "{yyyy}"),
    "dd-MON-yyyy": ("{dd}", "-", "{MON}", "-", "{yyyy}"),
    "lmonth d yyyy": ("{lmonth}", " ", "{d}", " ", "{yyyy}"),
    "d mon 'yy": ("{d}", " ", "{mon}", " '", "{yy}"),
    "dd/mm/yy": ("{dd}", "/", "{mm}", "/", "{yy}"),
    "dd/mm/yyyy": ("{dd}", "/", "{mm}", "/", "{yyyy}"),
    "d.m.yyyy": ("{d}", ".", "{m}", ".", "{yyyy}"),
    "yyyy.mm.dd": ("{yyyy}", ".", "{mm}", ".", "{dd}"),
    "yyyy/m/d": ("{yyyy}", "/", "{m}", "/", "{d}"),
    "yyyymmdd": ("{yyyy}", "{mm}", "{dd}"),
    "wd, dd.mm.yyyy": ("{wd}", ", ", "{dd}", ".", "{mm}", ".", "{yyyy}"),
}


@dataclass(frozen=True)
class DateExample:
    """One example of the dates task: the source ``text``, its ISO 8601 ``target``, the ``date``, the
    name of its format (a key of :data:`DATE_FORMATS`) and the character ``spans`` ``(start, end)`` of
    the day, month and year (and weekday, if written) inside ``text``."""

    text: str
    target: str
    date: dt.date
    fmt: str
    spans: dict[str, tuple[int, int]] = field(default_factory=dict)


def format_date(date: dt.date, fmt: str) -> DateExample:
    """Write ``date`` in the format ``fmt`` (a key of :data:`DATE_FORMATS`), with field spans. Chapter 19."""
    if not isinstance(date, dt.date):
        raise TypeError(f"format_date: date must be a datetime.date, got {type(date).__name__}")
    if not FIRST_DATE <= date <= LAST_DATE:
        raise ValueError(
            f"format_date: date must lie in {FIRST_DATE}..{LAST_DATE} (two-digit years are read in that century), got {date}"
        )
    if fmt not in DATE_FORMATS:
        raise ValueError(f"format_date: unknown format {fmt!r}; valid: {', '.join(DATE_FORMATS)}")
    text, spans = "", {}
    for piece in DATE_FORMATS[fmt]:
        if piece.startswith("{"):
            name = piece[1:-1]
            written = _FIELDS[name](date)
            spans[_KIND[name[0]]] = (len(text), len(text) + len(written))
            text += written
        else:
            text += piece
    return DateExample(text, date.isoformat(), date, fmt, spans)


def make_date_splits(
    n_train: int,
    n_val: int,
    n_test: int,
    *,
    seed: int = 0,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    formats: Sequence[str] | None = None,
) -> dict[str, list[DateExample]]:
    """Train, validation and test examples whose calendar dates are disjoint. Chapter 19.

    The 36,525 dates from 1950-01-01 to 2049-12-31 are shuffled with ``numpy.random.default_rng(seed)``
    and cut by ``fractions``; each example draws a date of its split (validation and test: without
    replacement, so each date appears once; train: with replacement, so a date may come in several
    formats) and a format uniformly from ``formats`` (default: all of :data:`DATE_FORMATS`).
    """
    for name, value in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"make_date_splits: {name} must be a positive int, got {value!r}")
    if len(fractions) != 3 or any(f <= 0 for f in fractions) or not math.isclose(sum(fractions), 1.0):
        raise ValueError(f"make_date_splits: fractions must be three positive numbers summing to 1, got {fractions!r}")
    formats = list(DATE_FORMATS) if formats is None else list(formats)
    unknown = [f for f in formats if f not in DATE_FORMATS]
    if not formats or unknown:
        raise ValueError(f"make_date_splits: unknown or no formats {unknown or formats}; valid: {', '.join(DATE_FORMATS)}")
    rng = np.random.default_rng(seed)
    n_days = (LAST_DATE - FIRST_DATE).days + 1
    order = rng.permutation(n_days)
    n_tr, n_va = int(fractions[0] * n_days), int(fractions[1] * n_days)
    pools = {"train": order[:n_tr], "validation": order[n_tr : n_tr + n_va], "test": order[n_tr + n_va :]}
    wanted = {"train": n_train, "validation": n_val, "test": n_test}
    out: dict[str, list[DateExample]] = {}
    for split, pool in pools.items():
        n = wanted[split]
        if split != "train" and n > len(pool):
            raise ValueError(f"make_date_splits: {split} has {len(pool)} dates, cannot draw {n} without replacement")
        days = rng.choice(pool, size=n, replace=split == "train")
        fmts = rng.integers(len(formats), size=n)
        out[split] = [
            format_date(FIRST_DATE + dt.timedelta(days=int(d)), formats[int(f)]) for d, f in zip(days, fmts, strict=True)
        ]
    return out


# ---------------------------------------------------------------------------- tokens
class CharVocab:
    """Character-level vocabulary: ``<pad>`` = 0, ``<bos>`` = 1, ``<eos>`` = 2, then :data:`ALPHABET`. Chapter 19."""

    def __init__(self, alphabet: str = ALPHABET) -> None:
        if len(set(alphabet)) != len(alphabet):
            raise ValueError("CharVocab: the alphabet repeats a character")
        self.itos = list(SPECIALS) + list(alphabet)
        self.stoi = {c: i for i, c in enumerate(self.itos) if i >= len(SPECIALS)}

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, text: str, *, bos: bool = False, eos: bool = False) -> list[int]:
        """The ids of ``text``'s characters (optionally framed by BOS/EOS); unknown characters raise."""
        if not isinstance(text, str):
            raise TypeError(f"CharVocab.encode: text must be a str, got {type(text).__name__}")
        bad = sorted({c for c in text if c not in self.stoi})
        if bad:
            raise ValueError(f"CharVocab.encode: characters {bad} are not in the vocabulary of {len(self)} tokens")
        return [BOS] * bos + [self.stoi[c] for c in text] + [EOS] * eos

    def decode(self, ids: Sequence[int] | Tensor) -> str:
        """The text of ``ids``, stopping at the first EOS; PAD and BOS are skipped."""
        out = []
        for i in ids.tolist() if isinstance(ids, Tensor) else ids:
            if i == EOS:
                break
            if i >= len(SPECIALS):
                out.append(self.itos[i])
        return "".join(out)


def _pad(rows: list[list[int]]) -> Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([r + [PAD] * (width - len(r)) for r in rows], dtype=torch.long)


def encode_examples(examples: Sequence[DateExample], vocab: CharVocab) -> tuple[Tensor, Tensor]:
    """``(src, tgt)`` id tensors, right-padded with PAD: ``src`` ``(N, S)`` the source characters,
    ``tgt`` ``(N, T + 2)`` = ``BOS target EOS``. Chapter 19."""
    if not examples:
        raise ValueError("encode_examples: no examples")
    src = _pad([vocab.encode(e.text) for e in examples])
    tgt = _pad([vocab.encode(e.target, bos=True, eos=True) for e in examples])
    return src, tgt


# ---------------------------------------------------------------------------- loss
def _check_pair(src: object, tgt: object, where: str) -> None:
    for name, t in (("src", src), ("tgt", tgt)):
        if not isinstance(t, Tensor) or t.dim() != 2 or t.dtype != torch.long:
            got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"{where}: {name} must be an int64 tensor of ids (N, L), got {got}")
    assert isinstance(src, Tensor) and isinstance(tgt, Tensor)
    if src.shape[0] != tgt.shape[0]:
        raise ValueError(f"{where}: src and tgt need the same number of rows, got {src.shape[0]} and {tgt.shape[0]}")
    if tgt.shape[1] < 2:
        raise ValueError(f"{where}: tgt must hold BOS, at least one token and EOS, got width {tgt.shape[1]}")


def teacher_forcing_loss(model: nn.Module, src: Tensor, tgt: Tensor, *, reduction: str = "mean") -> Tensor:
    """Cross-entropy of ``tgt[:, 1:]`` given ``src`` and the true prefix ``tgt[:, :-1]``. Chapter 19.

    Teacher forcing: the decoder reads the *true* previous tokens, so every position of every target
    is trained in one parallel forward pass. PAD targets are ignored; ``reduction="mean"`` averages
    over the real target tokens, ``"sum"`` adds them up.
    """
    _check_pair(src, tgt, "teacher_forcing_loss")
    if reduction not in ("mean", "sum"):
        raise ValueError(f"teacher_forcing_loss: reduction must be 'mean' or 'sum', got {reduction!r}")
    logits = model(src, tgt[:, :-1])  # (N, T, V)
    return F.cross_entropy(logits.flatten(0, 1), tgt[:, 1:].flatten(), ignore_index=PAD, reduction=reduction)


@torch.no_grad()
def sequence_logprob(model: nn.Module, src: Tensor, tgt: Tensor) -> Tensor:
    """``log p(tgt[1:] | src)`` per row ``(N,)``: the sum of the targets' log-probabilities (PAD excluded).

    This is the score beam search maximises. Chapter 19.
    """
    _check_pair(src, tgt, "sequence_logprob")
    logp = torch.log_softmax(model(src, tgt[:, :-1]).float(), dim=-1)  # (N, T, V)
    target = tgt[:, 1:]
    picked = logp.gather(-1, target[..., None])[..., 0]  # (N, T)
    return picked.masked_fill(target == PAD, 0.0).sum(dim=1)


# ---------------------------------------------------------------------------- decoding
def _check_decode_args(model: nn.Module, src: object, max_len: object, where: str) -> Tensor:
    if not (hasattr(model, "encode") and hasattr(model, "decode")):
        raise TypeError(
            f"{where}: model must have encode(src) and decode(tgt_in, memory, pad), "
            f"as dlbook.nn.transformer.EncoderDecoder does; got {type(model).__name__}"
        )
    if not isinstance(src, Tensor) or src.dim() != 2 or src.dtype != torch.long:
        got = tuple(src.shape) if isinstance(src, Tensor) else type(src).__name__
        raise ValueError(f"{where}: src must be an int64 tensor of ids (N, S), got {got}")
    if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1:
        raise ValueError(f"{where}: max_len must be a positive int, got {max_len!r}")
    limit = getattr(model, "max_len", None)
    if limit is not None and max_len + 1 > limit:
        raise ValueError(f"{where}: max_len = {max_len} needs {max_len + 1} decoder positions, the model has {limit}")
    return src


def _forbid_specials(logp: Tensor) -> Tensor:
    """A running hypothesis may not emit PAD or BOS."""
    logp[..., PAD] = -math.inf
    logp[..., BOS] = -math.inf
    return logp


@torch.no_grad()
def greedy_decode(model: nn.Module, src: Tensor, max_len: int) -> Tensor:
    """Greedy decoding: at each step the most probable next token. Chapter 19.

    Returns ``(N, L)`` ids without the leading BOS, ``L <= max_len``; after a row's EOS it holds PAD.
    The source is encoded once; each step reruns the decoder on the prefix so far. PAD and BOS are
    never emitted. The model is put in eval mode and its previous mode restored.
    """
    src = _check_decode_args(model, src, max_len, "greedy_decode")
    was_training = model.training
    model.eval()
    try:
        memory, pad = model.encode(src)
        seqs = torch.full((src.shape[0], 1), BOS, dtype=torch.long, device=src.device)
        done = torch.zeros(src.shape[0], dtype=torch.bool, device=src.device)
        for _ in range(max_len):
            logp = _forbid_specials(torch.log_softmax(model.decode(seqs, memory, pad)[:, -1].float(), -1))
            nxt = logp.argmax(-1).masked_fill(done, PAD)  # (N,)
            seqs = torch.cat([seqs, nxt[:, None]], dim=1)
            done |= nxt == EOS
            if bool(done.all()):
                break
    finally:
        model.train(was_training)
    return seqs[:, 1:]


@torch.no_grad()
def beam_decode(model: nn.Module, src: Tensor, max_len: int, beam_size: int = 4) -> Tensor:
    """Beam search: keep the ``beam_size`` prefixes of highest log-probability at each step. Chapter 19.

    Scores are sums of log-probabilities (no length normalisation); a finished hypothesis (one that
    emitted EOS) keeps its score and is extended by PAD at no cost, so it competes with the running
    ones until the end. Returns the best hypothesis per row, ``(N, L)`` ids without BOS, PAD after EOS,
    as :func:`greedy_decode` does; ``beam_size=1`` gives exactly the greedy output.
    """
    src = _check_decode_args(model, src, max_len, "beam_decode")
    if isinstance(beam_size, bool) or not isinstance(beam_size, int) or beam_size < 1:
        raise ValueError(f"beam_decode: beam_size must be a positive int, got {beam_size!r}")
    was_training = model.training
    model.eval()
    try:
        N, k = src.shape[0], beam_size
        memory, pad = model.encode(src)
        memory, pad = memory.repeat_interleave(k, 0), pad.repeat_interleave(k, 0)  # (N k, S, d), (N k, S)
        seqs = torch.full((N * k, 1), BOS, dtype=torch.long, device=src.device)
        scores = torch.full((N, k), -math.inf, device=src.device)
        scores[:, 0] = 0.0  # one live hypothesis at the start
        done = torch.zeros(N * k, dtype=torch.bool, device=src.device)
        for _ in range(max_len):
            logp = _forbid_specials(torch.log_softmax(model.decode(seqs, memory, pad)[:, -1].float(), -1))
            V = logp.shape[-1]
            logp[done] = -math.inf
            logp[done, PAD] = 0.0  # a finished hypothesis only pads, at no cost
            cand = (scores.reshape(N * k, 1) + logp).reshape(N, k * V)  # (N, k V)
            scores, idx = cand.topk(k, dim=1)  # (N, k)
            parent = (torch.arange(N, device=src.device)[:, None] * k + idx // V).reshape(-1)  # (N k,)
            tok = (idx % V).reshape(-1)  # (N k,)
            seqs = torch.cat([seqs[parent], tok[:, None]], dim=1)
            done = done[parent] | (tok == EOS)
            if bool(done.all()):
                break
        best = scores.argmax(dim=1) + torch.arange(N, device=src.device) * k  # (N,)
    finally:
        model.train(was_training)
    return seqs[best, 1:]


def translate(
    model: nn.Module,
    vocab: CharVocab,
    src: Tensor,
    *,
    max_len: int,
    method: str = "greedy",
    beam_size: int = 4,
    batch_size: int = 512,
    show_progress: bool = False,
) -> list[str]:
    """Decode every row of ``src`` in batches (``method`` ``"greedy"`` or ``"beam"``) and return the texts."""
    if method not in ("greedy", "beam"):
        raise ValueError(f"translate: method must be 'greedy' or 'beam', got {method!r}")
    out: list[str] = []
    starts = range(0, len(src), batch_size)
    for i in progress(starts, desc=method, disable=not show_progress):
        chunk = src[i : i + batch_size]
        ids = greedy_decode(model, chunk, max_len) if method == "greedy" else beam_decode(model, chunk, max_len, beam_size)
        out += [vocab.decode(row) for row in ids.cpu()]
    return out


def exact_match(predictions: Sequence[str], targets: Sequence[str]) -> np.ndarray:
    """Per-example exact match, a bool array: the whole predicted string equals the target. Chapter 19."""
    if len(predictions) != len(targets):
        raise ValueError(f"exact_match: {len(predictions)} predictions for {len(targets)} targets")
    return np.array([p == t for p, t in zip(predictions, targets, strict=True)], dtype=bool)


# ---------------------------------------------------------------------------- training
def _mean_loss(model: nn.Module, src: Tensor, tgt: Tensor, batch_size: int) -> float:
    total, n = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(src), batch_size):
            s, t = src[i : i + batch_size], tgt[i : i + batch_size]
            total += teacher_forcing_loss(model, s, t, reduction="sum").item()
            n += int((t[:, 1:] != PAD).sum())
    return total / n


def train_seq2seq(
    model: nn.Module,
    train: tuple[Tensor, Tensor],
    val: tuple[Tensor, Tensor],
    vocab: CharVocab,
    *,
    epochs: int,
    batch_size: int = 128,
    lr: float = 1e-3,
    warmup: float = 0.05,
    weight_decay: float = 0.01,
    grad_clip: float = 1.0,
    seed: int = 0,
    show_progress: bool = True,
) -> History:
    """Teacher-forced training with AdamW and the warm-up cosine schedule of chapter 2. Chapter 19.

    After each epoch: the validation loss and the validation **exact match** of greedy decoding; the
    weights of the epoch with the best exact match are loaded back at the end (the checkpoint is
    chosen on validation only). Batches are shuffled by a generator seeded with ``seed``.
    """
    src, tgt = train
    _check_pair(src, tgt, "train_seq2seq (train)")
    _check_pair(*val, "train_seq2seq (val)")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"train_seq2seq: epochs must be a positive int, got {epochs!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"train_seq2seq: batch_size must be a positive int, got {batch_size!r}")
    if not 0 <= warmup < 1:
        raise ValueError(f"train_seq2seq: warmup must be a fraction in [0, 1), got {warmup!r}")
    device = resolve_device(model=model)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * math.ceil(len(src) / batch_size)
    sched = warmup_scheduler(opt, warmup_steps=int(warmup * steps), total_steps=steps)
    gen = torch.Generator().manual_seed(seed)
    val_src, val_tgt = (t.to(device) for t in val)
    val_targets = [vocab.decode(row[1:]) for row in val[1]]

    def shuffled_batches() -> list[tuple[Tensor, Tensor]]:
        order = torch.randperm(len(src), generator=gen)
        return [(src[idx], tgt[idx]) for idx in order.split(batch_size)]

    def batch_loss(model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
        return teacher_forcing_loss(model, batch[0].to(device), batch[1].to(device))

    def validate() -> dict[str, float]:
        model.eval()
        preds = translate(model, vocab, val_src, max_len=val_tgt.shape[1] - 1)
        return {"loss": _mean_loss(model, val_src, val_tgt, 512), "exact": float(exact_match(preds, val_targets).mean())}

    step = TrainStep(model, batch_loss, opt, scheduler=sched, max_grad_norm=grad_clip, device=device)
    stopper = EarlyStopping(restore_best=True, score=lambda m: (-m["exact"], m["loss"]))  # best exact match
    return train_loop(
        step,
        shuffled_batches,
        epochs=epochs,
        evaluate=validate,
        early_stopping=stopper,
        name="train_seq2seq",
        show_progress=show_progress,
    )
