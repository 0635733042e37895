"""Small reference models shared between chapters.

- :class:`MLP` is taught in chapter 2 (Learning from data); chapter 3 compares its CNN against it.
- :class:`ResidualBlock` is taught in chapter 3 (Convolutional networks): the basic block of a
  residual network, with or without its shortcut, with or without batch normalisation.

Both check their input and name what is wrong (shape, channel count, dtype) instead of failing
deep inside a matrix product.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch.nn.functional as F
from torch import Tensor, nn


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def _input_dtype(cls: str, x: Tensor, weight: Tensor) -> None:
    if x.dtype != weight.dtype:
        raise TypeError(
            f"{cls} got input of dtype {x.dtype} but its weights are {weight.dtype}: "
            f"convert the input (x.to({weight.dtype})) or the model (model.to({x.dtype}))"
        )


class MLP(nn.Module):
    """A multi-layer perceptron for classification: flatten, then ``Linear -> ReLU (-> Dropout)`` blocks.

    ``MLP(784, [256, 128], 10)`` maps any input of shape ``(batch, ...)`` with 784 values per example
    (e.g. ``(batch, 1, 28, 28)`` images) to ``(batch, 10)`` logits. ``dropout`` is applied after
    every hidden activation (none when 0). Taught in chapter 2.
    """

    def __init__(self, in_features: int, hidden: Sequence[int], n_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        _positive_int("in_features", in_features)
        _positive_int("n_classes", n_classes)
        if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Iterable):
            raise TypeError(f"hidden must be a list of layer widths, got {hidden!r}")
        hidden = list(hidden)
        if any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in hidden):
            raise ValueError(f"hidden sizes must be positive ints, got {hidden!r}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
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
        if not isinstance(x, Tensor):
            raise TypeError(f"MLP expects a tensor, got {type(x).__name__}")
        if x.ndim < 2 or x.shape[1:].numel() != self.in_features:  # x[0] fails on an empty batch
            raise ValueError(
                f"MLP expects (batch, ...) input with {self.in_features} values per example, got shape {tuple(x.shape)}"
            )
        _input_dtype("MLP", x, self.net[1].weight)
        return self.net(x)  # (batch, n_classes)


class ResidualBlock(nn.Module):
    """The basic block of a residual network (He et al., 2016): two 3 x 3 convolutions and a shortcut.

    ``out = ReLU(BN(conv2(ReLU(BN(conv1(x))))) + shortcut(x))`` maps (batch, in_channels, H, W) to
    (batch, out_channels, H_out, W_out) with ``H_out = ceil(H / stride)``. ``conv1`` carries the
    stride. The shortcut is the identity when the shapes agree (``stride == 1`` and
    ``in_channels == out_channels``), else a projection: a 1 x 1 convolution with the same stride,
    followed by batch norm. ``shortcut=False`` drops it (a "plain" block, for comparison);
    ``batch_norm=False`` replaces the batch norms by identities and gives the convolutions biases.
    Convolutions followed by batch norm have no bias: the norm's mean subtraction would remove it.
    Taught in chapter 3, which measures the gradient that reaches the first blocks of a deep
    stack with and without the shortcut.
    """

    def __init__(
        self, in_channels: int, out_channels: int, stride: int = 1, *, shortcut: bool = True, batch_norm: bool = True
    ) -> None:
        super().__init__()
        _positive_int("in_channels", in_channels)
        _positive_int("out_channels", out_channels)
        _positive_int("stride", stride)
        for name, flag in (("shortcut", shortcut), ("batch_norm", batch_norm)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be True or False, got {flag!r}")
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride

        def norm() -> nn.Module:
            return nn.BatchNorm2d(out_channels) if batch_norm else nn.Identity()

        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=not batch_norm)
        self.bn1 = norm()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=not batch_norm)
        self.bn2 = norm()
        self.shortcut: nn.Module | None = None
        if shortcut and (stride != 1 or in_channels != out_channels):
            projection = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=not batch_norm)
            self.shortcut = nn.Sequential(projection, norm())
        elif shortcut:
            self.shortcut = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor):
            raise TypeError(f"ResidualBlock expects a tensor, got {type(x).__name__}")
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"ResidualBlock expects (batch, {self.in_channels}, H, W) input, got shape {tuple(x.shape)}")
        _input_dtype("ResidualBlock", x, self.conv1.weight)
        y = F.relu(self.bn1(self.conv1(x)))  # (B, C_out, H_out, W_out)
        y = self.bn2(self.conv2(y))  # (B, C_out, H_out, W_out)
        if self.shortcut is not None:
            y = y + self.shortcut(x)  # the identity (or projected) path
        return F.relu(y)


__all__ = ["MLP", "ResidualBlock"]
