"""Small reference models shared between chapters.

:class:`MLP` is taught in chapter 2 (Learning from data); chapter 3 compares its CNN against it.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn


class MLP(nn.Module):
    """A multi-layer perceptron for classification: flatten, then ``Linear -> ReLU (-> Dropout)`` blocks.

    ``MLP(784, [256, 128], 10)`` maps any input of shape ``(batch, ...)`` with 784 values per example
    (e.g. ``(batch, 1, 28, 28)`` images) to ``(batch, 10)`` logits. ``dropout`` is applied after
    every hidden activation (none when 0). Taught in chapter 2.
    """

    def __init__(self, in_features: int, hidden: Sequence[int], n_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        if not isinstance(in_features, int) or in_features < 1:
            raise ValueError(f"in_features must be a positive int, got {in_features!r}")
        if not isinstance(n_classes, int) or n_classes < 1:
            raise ValueError(f"n_classes must be a positive int, got {n_classes!r}")
        hidden = list(hidden)
        if any(not isinstance(h, int) or h < 1 for h in hidden):
            raise ValueError(f"hidden sizes must be positive ints, got {hidden!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.in_features = in_features
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, n_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim < 2 or x[0].numel() != self.in_features:
            raise ValueError(
                f"MLP expects (batch, ...) input with {self.in_features} values per example, got shape {tuple(x.shape)}"
            )
        return self.net(x)  # (batch, n_classes)


__all__ = ["MLP"]
