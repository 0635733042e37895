"""Character-level language modelling on the census names. Taught in chapter 4.

A name such as ``"anna"`` becomes the input ids ``<bos> a n n a`` and the target ids
``a n n a <eos>``: at every position the model predicts the next character, and the last
prediction is "the name ends here". Names in a batch are right-padded with ``<pad>``; padded
target positions are ignored by the loss.

Any ``nn.Module`` that maps ids of shape ``(batch, seq)`` to logits of shape
``(batch, seq, vocab)`` is a character model here: a recurrent network (chapters 4 and 5) or a
causal Transformer (right padding means a causal mask already keeps real tokens from seeing pads).

- :class:`CharVocab`: characters <-> ids, with ``<pad>``, ``<bos>``, ``<eos>``
- :class:`NamesDataset`, :func:`collate`, :func:`make_batches`: (inputs, targets, mask) batches
- :func:`loss_per_char`: held-out mean negative log-likelihood in nats per predicted character
- :func:`train_char_lm`: a seeded Adam training loop that records the curves (the book's one
  loop, :func:`dlbook.loop.train_loop`)
- :func:`sample`: names drawn from a model at a temperature
- :class:`RecurrentLM`: embedding -> ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` -> linear head
"""

from __future__ import annotations

import math
import string
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from .env import resolve_device
from .loop import EarlyStopping, History, TrainStep, train_loop

PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"


class CharVocab:
    """Characters <-> integer ids, with three special tokens. Taught in chapter 4.

    Ids 0, 1, 2 are ``<pad>``, ``<bos>``, ``<eos>``; the characters follow in the order given
    (by default ``a`` to ``z``, so ids 3 to 28).

    >>> v = CharVocab()
    >>> v.encode("ab")
    [1, 3, 4, 2]
    >>> v.decode([1, 3, 4, 2])
    'ab'
    """

    def __init__(self, chars: str | Iterable[str] = string.ascii_lowercase) -> None:
        chars = list(chars)
        if not chars:
            raise ValueError("CharVocab needs at least one character")
        bad = [c for c in chars if not isinstance(c, str) or len(c) != 1]
        if bad:
            raise ValueError(f"characters must be single-character strings, got {bad[:5]}")
        if len(set(chars)) != len(chars):
            raise ValueError("characters must be unique")
        self.specials: tuple[str, str, str] = (PAD, BOS, EOS)
        self.itos: list[str] = [*self.specials, *chars]
        self.stoi: dict[str, int] = {s: i for i, s in enumerate(self.itos)}
        self.pad_id, self.bos_id, self.eos_id = 0, 1, 2

    @classmethod
    def from_names(cls, names: Iterable[str]) -> CharVocab:
        """The vocabulary of the characters that occur in ``names``, sorted."""
        chars = sorted({c for name in names for c in name})
        if not chars:
            raise ValueError("from_names needs at least one non-empty name")
        return cls(chars)

    @property
    def chars(self) -> list[str]:
        """The ordinary characters (no specials), in id order."""
        return self.itos[len(self.specials) :]

    def __len__(self) -> int:
        return len(self.itos)

    def __repr__(self) -> str:
        return f"CharVocab(size={len(self)}, chars={''.join(self.chars)!r})"

    def encode(self, name: str, add_bos: bool = True, add_eos: bool = True) -> list[int]:
        """Ids of ``name``, framed by ``<bos>`` and ``<eos>`` unless told otherwise."""
        if not isinstance(name, str):
            raise TypeError(f"encode needs a str, got {type(name).__name__}")
        unknown = sorted({c for c in name if c not in self.stoi or c in self.specials})
        if unknown:
            raise ValueError(f"characters {unknown} of {name!r} are not in the vocabulary {''.join(self.chars)!r}")
        ids = [self.stoi[c] for c in name]
        return ([self.bos_id] if add_bos else []) + ids + ([self.eos_id] if add_eos else [])

    def decode(self, ids: Iterable[int] | torch.Tensor) -> str:
        """The characters of ``ids``: stops at the first ``<eos>``, skips ``<bos>`` and ``<pad>``."""
        if isinstance(ids, torch.Tensor):
            if ids.dim() != 1:
                raise ValueError(f"decode takes a 1-D sequence of ids, got shape {tuple(ids.shape)}")
            ids = ids.tolist()
        out = []
        for i in ids:
            i = int(i)
            if not 0 <= i < len(self.itos):
                raise ValueError(f"id {i} is outside the vocabulary (size {len(self)})")
            if i == self.eos_id:
                break
            if i in (self.pad_id, self.bos_id):
                continue
            out.append(self.itos[i])
        return "".join(out)


class NamesDataset(Dataset):
    """Names as (input ids, target ids) pairs: ``<bos> + name`` and ``name + <eos>``. Chapter 4."""

    def __init__(self, names: Sequence[str], vocab: CharVocab) -> None:
        if isinstance(names, str):
            raise TypeError("names must be a sequence of strings, not one string")
        self.names = list(names)
        self.vocab = vocab
        self._ids = [vocab.encode(n) for n in self.names]

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.tensor(self._ids[i], dtype=torch.long)
        return ids[:-1], ids[1:]


def collate(pairs: Sequence[tuple[torch.Tensor, torch.Tensor]], pad_id: int = 0) -> tuple[torch.Tensor, ...]:
    """Right-pad a list of (input, target) pairs into ``(inputs, targets, mask)``, each ``(batch, seq)``.

    ``mask`` is True where the target is a real character (or ``<eos>``), False on padding.
    """
    if not pairs:
        raise ValueError("collate needs at least one (input, target) pair")
    longest = max(len(x) for x, _ in pairs)
    inputs = torch.full((len(pairs), longest), pad_id, dtype=torch.long)
    targets = torch.full((len(pairs), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(pairs), longest), dtype=torch.bool)
    for row, (x, y) in enumerate(pairs):
        if len(x) != len(y):
            raise ValueError(f"input and target of pair {row} differ in length ({len(x)} vs {len(y)})")
        inputs[row, : len(x)] = x
        targets[row, : len(y)] = y
        mask[row, : len(y)] = True
    return inputs, targets, mask


def make_batches(
    names: Sequence[str],
    vocab: CharVocab,
    batch_size: int,
    *,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """All names as padded batches ``(inputs, targets, mask)`` of shape ``(batch, seq)``. Chapter 4.

    With ``shuffle=True`` the order comes from ``generator`` (seed it for repeatable runs).
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    data = NamesDataset(names, vocab)
    if len(data) == 0:
        raise ValueError("make_batches needs at least one name")
    order = torch.randperm(len(data), generator=generator).tolist() if shuffle else list(range(len(data)))
    return [
        collate([data[i] for i in order[start : start + batch_size]], vocab.pad_id)
        for start in range(0, len(order), batch_size)
    ]


def _check_logits(logits: torch.Tensor, inputs: torch.Tensor, vocab: CharVocab) -> None:
    if not isinstance(logits, torch.Tensor) or logits.shape != (*inputs.shape, len(vocab)):
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(
            f"the model must map ids (batch, seq) = {tuple(inputs.shape)} to logits "
            f"(batch, seq, vocab) = {(*inputs.shape, len(vocab))}, got {got}"
        )


def batch_nll(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, vocab: CharVocab) -> torch.Tensor:
    """Summed negative log-likelihood (nats) of the non-pad targets of one batch. Chapter 4."""
    logits = model(inputs)  # (batch, seq, vocab)
    _check_logits(logits, inputs, vocab)
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=vocab.pad_id, reduction="sum")


@torch.no_grad()
def loss_per_char(
    model: nn.Module,
    names: Sequence[str],
    vocab: CharVocab,
    device: torch.device | str | None = None,
    batch_size: int = 512,
) -> float:
    """Mean negative log-likelihood in nats per predicted character (``<eos>`` included, pads ignored).

    Taught in chapter 4. A model that guesses uniformly over the symbols a target can be (a letter
    or ``<eos>``, never ``<pad>`` or ``<bos>``) scores ``ln(len(vocab) - 2)``.
    The model is put in eval mode for the measurement and given back in the mode it was in.
    """
    device = resolve_device(device, model=model)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for inputs, targets, mask in make_batches(names, vocab, batch_size):
            inputs, targets = inputs.to(device), targets.to(device)
            total += batch_nll(model, inputs, targets, vocab).item()
            count += int(mask.sum())
    finally:
        model.train(was_training)
    return total / count


@torch.no_grad()
def name_nll(
    model: nn.Module,
    names: Sequence[str],
    vocab: CharVocab,
    device: torch.device | str | None = None,
    batch_size: int = 512,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed nats of each name and its number of predicted characters: two ``(N,)`` tensors.

    Kept per name (not only averaged, as :func:`loss_per_char` does) so that two models can be
    compared name by name, with a paired interval (:func:`dlbook.stats.bootstrap_ratio` of the
    differences over the counts). ``sums.sum() / counts.sum()`` is :func:`loss_per_char`.
    Taught in chapter 4; chapter 7 compares its language models with it. The model is put in
    eval mode for the measurement and given back in the mode it was in.
    """
    device = resolve_device(device, model=model)
    was_training = model.training
    model.eval()
    sums, counts = [], []
    try:
        for inputs, targets, mask in make_batches(names, vocab, batch_size):
            logits = model(inputs.to(device)).float().cpu()  # (B, T, V)
            _check_logits(logits, inputs, vocab)
            nll = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")  # (B, T)
            sums.append((nll * mask).sum(1))
            counts.append(mask.sum(1))
    finally:
        model.train(was_training)
    return torch.cat(sums), torch.cat(counts)


def train_char_lm(
    model: nn.Module,
    train_names: Sequence[str],
    val_names: Sequence[str],
    vocab: CharVocab,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    device: torch.device | str,
    seed: int,
    grad_clip: float | None = None,
    weight_decay: float = 0.0,
    optimizer: str = "adam",
    restore_best: bool = False,
    show_progress: bool = True,
) -> History:
    """Train a character model on next-character cross-entropy (Adam, or plain SGD). Taught in chapter 4.

    Each epoch shuffles the names with a generator seeded by ``seed`` (so runs repeat) and the
    global torch RNG is seeded too (dropout). ``grad_clip`` rescales the gradient to at most that
    global norm; the norm before clipping is recorded either way (``History.grad_norm``). The
    held-out loss per character is measured before training and after every epoch (``val_loss``,
    ``val_epoch``); ``restore_best=True`` gives the model back with the weights of its best epoch
    (early stopping). ``step_loss`` holds each batch's loss per character.
    """
    _check_char_lm_args(epochs, lr, optimizer)
    device = torch.device(device)
    gen = torch.Generator().manual_seed(seed)
    model.to(device)
    opt_class = torch.optim.Adam if optimizer == "adam" else torch.optim.SGD
    opt = opt_class(model.parameters(), lr=lr, weight_decay=weight_decay)

    def batch_loss(model: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        inputs, targets, mask = batch
        return batch_nll(model, inputs.to(device), targets.to(device), vocab) / mask.sum().to(device)

    step = TrainStep(model, batch_loss, opt, max_grad_norm=grad_clip if grad_clip is not None else math.inf, device=device)
    return train_loop(
        step,
        lambda: make_batches(train_names, vocab, batch_size, shuffle=True, generator=gen),
        epochs=epochs,
        seed=seed,
        evaluate=lambda: {"loss": loss_per_char(model, val_names, vocab, device)},
        eval_before=True,
        early_stopping=EarlyStopping(restore_best=restore_best),
        name="train_char_lm",
        show_progress=show_progress,
    )


def _check_char_lm_args(epochs: int, lr: float, optimizer: str) -> None:
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"epochs must be a non-negative int, got {epochs!r}")
    if lr <= 0:
        raise ValueError(f"lr must be positive, got {lr!r}")
    if optimizer not in ("adam", "sgd"):
        raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")


@torch.no_grad()
def sample(
    model: nn.Module,
    vocab: CharVocab,
    n: int,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    max_len: int = 20,
) -> list[str]:
    """Draw ``n`` names from the model, one character at a time. Taught in chapter 4.

    Each step divides the last position's logits by ``temperature`` (``0`` means always take
    the most likely character), samples from the softmax with ``generator`` (a CPU generator;
    seed it for repeatable samples) and stops a name at ``<eos>`` or after ``max_len`` characters.
    The whole prefix is fed again at each step, so any ids-to-logits model works.
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature!r}")
    if not isinstance(max_len, int) or max_len < 1:
        raise ValueError(f"max_len must be a positive int, got {max_len!r}")
    device = resolve_device(model=model)
    was_training = model.training
    model.eval()
    ids = torch.full((n, 1), vocab.bos_id, dtype=torch.long)  # (n, 1), grows to (n, 1 + max_len)
    done = torch.zeros(n, dtype=torch.bool)
    try:
        for _ in range(max_len):
            logits = model(ids.to(device))  # (n, t, vocab)
            _check_logits(logits, ids, vocab)
            last = logits[:, -1, :].float().cpu()  # (n, vocab)
            last[:, [vocab.pad_id, vocab.bos_id]] = -math.inf  # never emit these
            if temperature == 0:
                nxt = last.argmax(dim=-1)
            else:
                probs = torch.softmax(last / temperature, dim=-1)
                nxt = torch.multinomial(probs, 1, generator=generator).squeeze(1)
            nxt = torch.where(done, torch.full_like(nxt, vocab.pad_id), nxt)
            ids = torch.cat([ids, nxt[:, None]], dim=1)
            done |= nxt == vocab.eos_id
            if bool(done.all()):
                break
    finally:
        model.train(was_training)
    return [vocab.decode(row) for row in ids]


class RecurrentLM(nn.Module):
    """Embedding -> recurrent layers (``nn.RNN``, ``nn.LSTM`` or ``nn.GRU``) -> linear head. Chapters 4-5.

    Maps ids ``(batch, seq)`` to next-character logits ``(batch, seq, vocab_size)``.
    """

    CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int = 32,
        hidden_size: int = 128,
        num_layers: int = 1,
        cell: str = "rnn",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if cell not in self.CELLS:
            raise ValueError(f"unknown cell {cell!r}: choose one of {', '.join(self.CELLS)}")
        self.cell = cell
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.rnn = self.CELLS[cell](
            embed_dim, hidden_size, num_layers=num_layers, batch_first=True, dropout=dropout if num_layers > 1 else 0.0
        )
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, vocab_size)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.dim() != 2:
            raise ValueError(f"RecurrentLM takes ids of shape (batch, seq), got {tuple(ids.shape)}")
        x = self.embed(ids)  # (batch, seq, embed_dim)
        h, _ = self.rnn(x)  # (batch, seq, hidden_size)
        return self.head(self.drop(h))  # (batch, seq, vocab_size)


__all__ = [
    "BOS",
    "EOS",
    "PAD",
    "CharVocab",
    "NamesDataset",
    "RecurrentLM",
    "batch_nll",
    "collate",
    "loss_per_char",
    "name_nll",
    "make_batches",
    "sample",
    "train_char_lm",
]
