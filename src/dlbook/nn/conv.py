"""Convolution arithmetic, a vectorised 2-D convolution and batch normalisation, as taught in chapter 3.

- :func:`conv_output_size`: ``floor((n + 2p - d(k - 1) - 1) / s) + 1``, the output length of a
  convolution or pooling window along one axis (PyTorch's rule, ``ceil_mode=False``).
- :func:`receptive_field`: how many input pixels (along one axis) one output of a stack of
  convolutions and poolings can see, ``1 + sum_l (k_l - 1) d_l prod_{i<l} s_i``.
- :func:`conv2d_im2col`: ``F.conv2d`` written as unfold (im2col) plus one batched matrix product,
  with stride, zero padding, dilation and groups.
- :func:`batch_norm2d`: ``F.batch_norm`` for (batch, channels, H, W) tensors written from its
  definition, with ``F.batch_norm``'s argument order and the mode given by keyword:
  per-channel statistics over batch and space, an affine map, running statistics.

Deep-learning "convolution" is cross-correlation: the kernel is not flipped. Every public function
checks its arguments and names the one that is wrong.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F


def _positive_int(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def _tensor(name: str, value: object, ndim: int | None = None, layout: str = "") -> torch.Tensor:
    """``value`` as a tensor of rank ``ndim`` (when given), else a TypeError/ValueError naming ``name``."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if ndim is not None and value.dim() != ndim:
        shape = f" {layout}" if layout else f" of rank {ndim}"
        raise ValueError(f"{name} must have shape{shape}, got {tuple(value.shape)}")
    return value


def _like(name: str, value: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    """``value`` must share ``ref``'s dtype and device (PyTorch's own message names neither argument)."""
    if value.dtype != ref.dtype:
        raise TypeError(f"{name} has dtype {value.dtype} but {ref_name} has dtype {ref.dtype}: convert one of them")
    if value.device != ref.device:
        raise ValueError(f"{name} is on {value.device} but {ref_name} is on {ref.device}: move one of them")


def _floating(name: str, value: torch.Tensor) -> None:
    if not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")


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
    if isinstance(layers, (str, bytes)) or not isinstance(layers, Iterable):
        raise TypeError(f"layers must be a list of (kernel_size, stride[, dilation]) tuples, got {layers!r}")
    field, jump = 1, 1
    for i, layer in enumerate(layers):
        if isinstance(layer, (str, bytes)) or not isinstance(layer, Iterable):
            raise TypeError(f"layer {i} must be (kernel_size, stride) or (kernel_size, stride, dilation), got {layer!r}")
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
    kH, kW), ``bias`` (out_channels,) or None, all of one floating-point dtype on one device.
    ``F.unfold`` copies every receptive-field patch into a column, (batch, in_channels * kH * kW,
    L) with L = H_out * W_out; each group of output channels is then one matrix product of its
    weights with its group's rows of those columns. Taught in chapter 3.
    """
    _tensor("x", x, 4, "(batch, in_channels, H, W)")
    _tensor("weight", weight, 4, "(out_channels, in_channels / groups, kH, kW)")
    _floating("x", x)
    _like("weight", weight, "x", x)
    _positive_int("groups", groups)
    b, c_in, h, w = x.shape
    c_out, c_per_group, kh, kw = weight.shape
    _positive_int("out_channels (weight.shape[0])", c_out)
    _positive_int("kH (weight.shape[2])", kh)
    _positive_int("kW (weight.shape[3])", kw)
    if min(c_in, h, w) < 1:
        raise ValueError(f"x must have at least one channel, row and column, got shape {tuple(x.shape)}")
    if c_in % groups or c_out % groups:
        raise ValueError(f"in_channels={c_in} and out_channels={c_out} must both be divisible by groups={groups}")
    if c_per_group != c_in // groups:
        raise ValueError(
            f"weight has {c_per_group} input channels per group, but x has {c_in} channels in {groups} group(s) "
            f"({c_in // groups} per group)"
        )
    if bias is not None:
        _tensor("bias", bias)
        _like("bias", bias, "x", x)
        if bias.shape != (c_out,):
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


def batch_norm2d(
    x: torch.Tensor,
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    *,
    training: bool,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> torch.Tensor:
    """Batch normalisation of (batch, channels, H, W) from its definition; agrees with ``F.batch_norm``.

    The arguments come in ``F.batch_norm``'s order, ``(x, running_mean, running_var, weight,
    bias)``, so a positional call means the same in both. The mode has no default and must be
    named, ``training=True`` or ``training=False``: ``F.batch_norm`` quietly defaults to
    evaluation mode, and a forgotten mode is a silent error. Two further differences, both
    loud: ``weight``, ``bias`` and the running statistics must have ``x``'s dtype
    (``F.batch_norm`` also accepts float32 parameters with float16 or bfloat16 input), and
    ``momentum`` must be a number in [0, 1] (``nn.BatchNorm2d``'s ``momentum=None``, a
    cumulative average, is not offered; ``F.batch_norm`` rejects it too).

    In training mode each channel ``c`` is normalised with the mean and the biased variance of its
    ``n = batch * H * W`` values, ``x_hat = (x - mean_c) / sqrt(var_c + eps)``, then mapped to
    ``weight_c * x_hat + bias_c`` (1 and 0 when None). The running statistics, when given, are
    updated in place as PyTorch does: ``running = (1 - momentum) * running + momentum * batch_stat``,
    with the *unbiased* variance ``var_c * n / (n - 1)`` for ``running_var``. In evaluation mode
    the running statistics replace the batch's, so each example is normalised independently of
    the rest of its batch. Gradients flow through the batch statistics (autograd). Taught in
    chapter 3.
    """
    _tensor("x", x, 4, "(batch, channels, H, W)")
    _floating("x", x)
    if not isinstance(training, bool):
        raise TypeError(f"training must be True or False, got {training!r}")
    if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be a number in [0, 1], got {momentum!r}")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
        raise ValueError(f"eps must be a positive number, got {eps!r}")
    channels = x.shape[1]
    _positive_int("channels (x.shape[1])", channels)
    for name, t in (("weight", weight), ("bias", bias), ("running_mean", running_mean), ("running_var", running_var)):
        if t is not None:
            _tensor(name, t)
            _like(name, t, "x", x)
            if t.shape != (channels,):
                raise ValueError(f"{name} must have shape ({channels},), one value per channel of x, got {tuple(t.shape)}")
    if (running_mean is None) != (running_var is None):
        raise ValueError("give both running_mean and running_var, or neither")
    n = x.numel() // channels  # values per channel: batch * H * W
    if training:
        if n < 2:
            raise ValueError(f"training-mode batch norm needs more than one value per channel, got x of shape {tuple(x.shape)}")
        mean = x.mean(dim=(0, 2, 3))  # (C,)
        var = x.var(dim=(0, 2, 3), correction=0)  # (C,) biased: divides by n
        if running_mean is not None and running_var is not None:
            with torch.no_grad():
                running_mean.mul_(1 - momentum).add_(momentum * mean)
                running_var.mul_(1 - momentum).add_(momentum * var * n / (n - 1))  # unbiased estimate
    else:
        if running_mean is None or running_var is None:
            raise ValueError("evaluation-mode batch norm needs running_mean and running_var")
        mean, var = running_mean, running_var
    x_hat = (x - mean.view(1, channels, 1, 1)) / torch.sqrt(var.view(1, channels, 1, 1) + eps)  # (B, C, H, W)
    if weight is not None:
        x_hat = x_hat * weight.view(1, channels, 1, 1)
    if bias is not None:
        x_hat = x_hat + bias.view(1, channels, 1, 1)
    return x_hat


__all__ = ["batch_norm2d", "conv2d_im2col", "conv_output_size", "receptive_field"]
