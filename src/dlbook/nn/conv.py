"""Convolution arithmetic and a vectorised 2-D convolution, as taught in chapter 3 (Convolutional networks).

- :func:`conv_output_size`: ``floor((n + 2p - d(k - 1) - 1) / s) + 1``, the output length of a
  convolution or pooling window along one axis (PyTorch's rule, ``ceil_mode=False``).
- :func:`receptive_field`: how many input pixels (along one axis) one output of a stack of
  convolutions and poolings can see, ``1 + sum_l (k_l - 1) d_l prod_{i<l} s_i``.
- :func:`conv2d_im2col`: ``F.conv2d`` written as unfold (im2col) plus one batched matrix product,
  with stride, zero padding, dilation and groups.

Deep-learning "convolution" is cross-correlation: the kernel is not flipped.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F


def _positive_int(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def conv_output_size(size: int, kernel_size: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """Output length along one axis of a convolution (or pooling) window sliding over ``size`` inputs.

    ``floor((size + 2 * padding - dilation * (kernel_size - 1) - 1) / stride) + 1``, the rule of
    ``nn.Conv2d``, ``nn.MaxPool2d`` and ``nn.AvgPool2d`` (with ``ceil_mode=False``). Raises
    ``ValueError`` when the dilated kernel does not fit into the padded input. Taught in chapter 3.
    """
    _positive_int("size", size)
    _positive_int("kernel_size", kernel_size)
    _positive_int("stride", stride)
    _positive_int("padding", padding, minimum=0)
    _positive_int("dilation", dilation)
    span = dilation * (kernel_size - 1) + 1  # the input pixels one dilated window covers
    if span > size + 2 * padding:
        raise ValueError(
            f"a kernel spanning {span} pixels (kernel_size={kernel_size}, dilation={dilation}) does not fit "
            f"into an input of {size} pixels padded by {padding} on each side"
        )
    return (size + 2 * padding - span) // stride + 1


def receptive_field(layers: Iterable[Sequence[int]]) -> int:
    """Receptive field (in input pixels, along one axis) of one output of a stack of sliding windows.

    ``layers`` lists each convolution or pooling layer as ``(kernel_size, stride)`` or
    ``(kernel_size, stride, dilation)``, first layer first. The result is
    ``1 + sum_l (k_l - 1) * d_l * prod_{i<l} s_i``: each layer widens the field by its dilated
    kernel minus one, measured in the strides ("jumps") of the layers below it. Padding shifts
    the field but does not change its size. An empty stack sees one pixel. Taught in chapter 3.
    """
    field, jump = 1, 1
    for i, layer in enumerate(layers):
        layer = tuple(layer)
        if len(layer) not in (2, 3):
            raise ValueError(f"layer {i} must be (kernel_size, stride) or (kernel_size, stride, dilation), got {layer!r}")
        k, s, d = (*layer, 1) if len(layer) == 2 else layer
        _positive_int(f"kernel_size of layer {i}", k)
        _positive_int(f"stride of layer {i}", s)
        _positive_int(f"dilation of layer {i}", d)
        field += (k - 1) * d * jump
        jump *= s
    return field


def conv2d_im2col(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int = 1,
    padding: int = 0,
    dilation: int = 1,
    groups: int = 1,
) -> torch.Tensor:
    """2-D cross-correlation by im2col: the same result as ``F.conv2d`` with these integer arguments.

    ``x`` has shape (batch, in_channels, H, W), ``weight`` (out_channels, in_channels / groups,
    kH, kW), ``bias`` (out_channels,) or None. ``F.unfold`` copies every receptive-field patch
    into a column, (batch, in_channels * kH * kW, L) with L = H_out * W_out; each group of
    output channels is then one matrix product of its weights with its group's rows of those
    columns. Taught in chapter 3.
    """
    if not isinstance(x, torch.Tensor) or not isinstance(weight, torch.Tensor):
        raise TypeError("conv2d_im2col takes tensors x and weight")
    if x.dim() != 4:
        raise ValueError(f"x must have shape (batch, in_channels, H, W), got {tuple(x.shape)}")
    if weight.dim() != 4:
        raise ValueError(f"weight must have shape (out_channels, in_channels / groups, kH, kW), got {tuple(weight.shape)}")
    _positive_int("groups", groups)
    b, c_in, h, w = x.shape
    c_out, c_per_group, kh, kw = weight.shape
    if c_in % groups or c_out % groups:
        raise ValueError(f"in_channels={c_in} and out_channels={c_out} must both be divisible by groups={groups}")
    if c_per_group != c_in // groups:
        raise ValueError(
            f"weight has {c_per_group} input channels per group, but x has {c_in} channels in {groups} group(s) "
            f"({c_in // groups} per group)"
        )
    if bias is not None and bias.shape != (c_out,):
        raise ValueError(f"bias must have shape ({c_out},), got {tuple(bias.shape)}")
    h_out = conv_output_size(h, kh, stride, padding, dilation)
    w_out = conv_output_size(w, kw, stride, padding, dilation)
    cols = F.unfold(x, (kh, kw), dilation=dilation, padding=padding, stride=stride)  # (B, C_in*kH*kW, L)
    cols = cols.view(b, groups, c_per_group * kh * kw, h_out * w_out)  # (B, G, C_in/G*kH*kW, L)
    w_mat = weight.reshape(groups, c_out // groups, c_per_group * kh * kw)  # (G, C_out/G, C_in/G*kH*kW)
    out = torch.einsum("gok,bgkl->bgol", w_mat, cols)  # (B, G, C_out/G, L)
    out = out.reshape(b, c_out, h_out, w_out)  # (B, C_out, H_out, W_out)
    if bias is not None:
        out = out + bias.view(1, c_out, 1, 1)
    return out


__all__ = ["conv2d_im2col", "conv_output_size", "receptive_field"]
