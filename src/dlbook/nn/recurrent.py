"""Recurrent cells and multi-layer recurrent networks written from their equations.

The vanilla RNN is taught in chapter 4, the LSTM and the GRU in chapter 5. Each cell uses the
parameter names, shapes and gate layouts of PyTorch's cells (``nn.RNNCell`` / ``nn.LSTMCell`` /
``nn.GRUCell``: ``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh``), so a cell loads a PyTorch
cell's ``state_dict`` directly. The multi-layer modules keep one cell per layer in ``cells``, so
their keys (``cells.0.weight_ih``) differ from those of ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU``
(``weight_ih_l0``) and ``load_state_dict`` between the two fails: :meth:`RNN.from_torch` (and
``LSTM``/``GRU``) maps ``weight_ih_l{k}`` and friends onto ``cells[k]``.

- RNN: ``h' = tanh(W_ih x + b_ih + W_hh h + b_hh)``
- LSTM: the rows of ``weight_ih`` / ``weight_hh`` are the gates in the order ``i, f, g, o``
- GRU: the rows are ``r, z, n``, and the candidate uses ``r * (W_hn h + b_hn)``: the reset gate
  multiplies the recurrent term *including* its bias.

Where these modules differ from PyTorch's, on purpose:

- ``batch_first`` defaults to ``True`` (PyTorch: ``False``), because the book writes every
  sequence batch as ``(batch, seq, feature)``. :meth:`RNN.from_torch` copies the setting of the
  module it copies. The state keeps PyTorch's layout ``(num_layers, batch, hidden)`` whatever
  ``batch_first`` says, exactly as PyTorch does.
- Inputs must be batched: ``(batch, seq, input)`` for the multi-layer modules and ``(batch, input)``
  for the cells (PyTorch also takes unbatched inputs without the batch axis).
- No ``PackedSequence``, no ``bidirectional``, no ``proj_size``: the constructors take neither
  argument, so passing one (or any unknown argument) raises ``TypeError``. For sequences of
  different lengths, run the padded batch and read each sequence's state at its own last step,
  ``output[b, length_b - 1]``: chapter 4 shows that this equals PyTorch's packed result.
- Bad input gets a clear error naming the argument instead of a library traceback or a silent
  wrong answer: a single tensor where an LSTM needs the tuple ``(h, c)`` (or a tuple where an
  RNN/GRU needs one tensor), state shapes, an input whose dtype or device differs from the
  weights' (unchecked, it would fail deep inside a matrix product), integer ids that were never
  embedded, a wrong input size, and NaN or infinite values in the input or the state (which
  would otherwise spread silently through every later step).

These loops run one Python step per time step: they are for reading and checking, not speed.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence

_NONLINEARITIES = {"tanh": torch.tanh, "relu": torch.relu}

# ------------------------------------------------------------------------------------------------
# argument checks, shared by the cells and the multi-layer modules


def _shape(t: object) -> str:
    return str(tuple(t.shape)) if isinstance(t, torch.Tensor) else f"a {type(t).__name__}"


def _check_positive_int(value: object, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _check_like_weights(t: torch.Tensor, weight: torch.Tensor, where: str, what: str) -> None:
    """``t`` must be floating point, of the weights' dtype and on their device, and finite."""
    if not t.is_floating_point():
        raise TypeError(
            f"{where}: {what} must be a floating-point tensor, got dtype {t.dtype} "
            "(integer ids must go through an embedding first)"
        )
    if t.dtype != weight.dtype:
        raise TypeError(
            f"{where}: {what} has dtype {t.dtype} but the weights are {weight.dtype}; convert one of "
            f"them, e.g. {what}.to({weight.dtype}) or module.to({t.dtype})"
        )
    if t.device != weight.device:
        raise ValueError(f"{where}: {what} is on {t.device} but the weights are on {weight.device}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{where}: {what} contains NaN or infinite values")


def _check_input(x: object, input_size: int, name: str, weight: torch.Tensor) -> None:
    """A cell's input: a finite ``(batch, input_size)`` tensor like the weights."""
    if isinstance(x, PackedSequence):
        raise TypeError(f"{name} takes a padded tensor, not a PackedSequence")
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} takes x as a tensor, got {type(x).__name__}")
    if x.dim() != 2 or x.shape[-1] != input_size or x.shape[0] < 1:
        raise ValueError(f"{name} takes x of shape (batch, {input_size}), got {tuple(x.shape)}")
    _check_like_weights(x, weight, name, "x")


def _check_state(h: object, batch: int, hidden_size: int, name: str, weight: torch.Tensor) -> None:
    """A cell's state (or one part of an LSTM's): a finite ``(batch, hidden_size)`` tensor."""
    if not isinstance(h, torch.Tensor):
        raise TypeError(f"{name} takes a state tensor of shape ({batch}, {hidden_size}), got {type(h).__name__}")
    if h.shape != (batch, hidden_size):
        raise ValueError(f"{name} takes a state of shape ({batch}, {hidden_size}), got {tuple(h.shape)}")
    _check_like_weights(h, weight, name, "the state")


def _check_pair(state: object, name: str) -> tuple[object, object]:
    """An LSTM state must be the tuple (h, c); a lone tensor is the usual mistake."""
    if isinstance(state, torch.Tensor):
        raise TypeError(
            f"{name} takes the state as a tuple (h, c) of two tensors, got one tensor of shape "
            f"{tuple(state.shape)}; pass (h, c), e.g. (h, torch.zeros_like(h))"
        )
    if not isinstance(state, (tuple, list)) or len(state) != 2:
        raise TypeError(f"{name} takes the state as a tuple (h, c) of two tensors, got {type(state).__name__}")
    return state[0], state[1]


def _check_single(state: object, name: str) -> None:
    """An RNN/GRU state is one tensor; a tuple is the LSTM's convention."""
    if isinstance(state, (tuple, list)):
        raise TypeError(
            f"{name} takes the state as one tensor h, got a {type(state).__name__} of {len(state)} items; "
            "only an LSTM takes a tuple (h, c)"
        )


# ------------------------------------------------------------------------------------------------
# cells


class _Cell(nn.Module):
    gates = 1

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True) -> None:
        super().__init__()
        _check_positive_int(input_size, "input_size")
        _check_positive_int(hidden_size, "hidden_size")
        self.input_size, self.hidden_size = input_size, hidden_size
        rows = self.gates * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(rows, input_size))
        self.weight_hh = nn.Parameter(torch.empty(rows, hidden_size))
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(rows))
            self.bias_hh = nn.Parameter(torch.empty(rows))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch's initialisation: every weight and bias uniform in +-1/sqrt(hidden_size)."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def _affine(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        gi = F.linear(x, self.weight_ih, self.bias_ih)  # (batch, gates * hidden)
        gh = F.linear(h, self.weight_hh, self.bias_hh)  # (batch, gates * hidden)
        return gi, gh

    def _zeros(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(x.shape[0], self.hidden_size)  # (batch, hidden)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, bias={self.bias_ih is not None}"


class RNNCell(_Cell):
    """One step of the vanilla (Elman) RNN: ``h' = tanh(W_ih x + b_ih + W_hh h + b_hh)``. Chapter 4.

    ``x`` is ``(batch, input)``, ``h`` one tensor ``(batch, hidden)`` (zeros when omitted).
    """

    gates = 1

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, nonlinearity: str = "tanh") -> None:
        if nonlinearity not in _NONLINEARITIES:
            raise ValueError(f"nonlinearity must be one of {', '.join(_NONLINEARITIES)}, got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        super().__init__(input_size, hidden_size, bias)

    def forward(self, x: torch.Tensor, h: torch.Tensor | None = None) -> torch.Tensor:
        _check_input(x, self.input_size, "RNNCell", self.weight_ih)
        h = self._zeros(x) if h is None else h
        _check_single(h, "RNNCell")
        _check_state(h, x.shape[0], self.hidden_size, "RNNCell", self.weight_hh)
        return self._step(x, h)

    def _step(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        gi, gh = self._affine(x, h)
        return _NONLINEARITIES[self.nonlinearity](gi + gh)  # (batch, hidden)


class LSTMCell(_Cell):
    """One LSTM step from its gate equations; rows of the weights in the order i, f, g, o. Chapter 5.

    ``i, f, o = sigmoid(.)``, ``g = tanh(.)`` of ``W_i* x + b_i* + W_h* h + b_h*``;
    ``c' = f * c + i * g``; ``h' = o * tanh(c')``. The state is the tuple ``(h, c)``, each
    ``(batch, hidden)`` (zeros when omitted), and the step returns the new ``(h, c)``.
    """

    gates = 4

    def forward(
        self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        _check_input(x, self.input_size, "LSTMCell", self.weight_ih)
        if state is None:
            state = (self._zeros(x), self._zeros(x))
        h, c = _check_pair(state, "LSTMCell")
        _check_state(h, x.shape[0], self.hidden_size, "LSTMCell (h)", self.weight_hh)
        _check_state(c, x.shape[0], self.hidden_size, "LSTMCell (c)", self.weight_hh)
        return self._step(x, (h, c))

    def _step(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        h, c = state
        gi, gh = self._affine(x, h)
        i, f, g, o = (gi + gh).chunk(4, dim=-1)  # each (batch, hidden)
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        c = f * c + i * g  # (batch, hidden)
        h = o * torch.tanh(c)  # (batch, hidden)
        return h, c


class GRUCell(_Cell):
    """One GRU step from its equations; rows of the weights in the order r, z, n. Chapter 5.

    ``r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)``, ``z`` likewise,
    ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``, ``h' = (1 - z) * n + z * h``.
    The state ``h`` is one tensor ``(batch, hidden)`` (zeros when omitted).
    """

    gates = 3

    def forward(self, x: torch.Tensor, h: torch.Tensor | None = None) -> torch.Tensor:
        _check_input(x, self.input_size, "GRUCell", self.weight_ih)
        h = self._zeros(x) if h is None else h
        _check_single(h, "GRUCell")
        _check_state(h, x.shape[0], self.hidden_size, "GRUCell", self.weight_hh)
        return self._step(x, h)

    def _step(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        gi, gh = self._affine(x, h)
        i_r, i_z, i_n = gi.chunk(3, dim=-1)  # each (batch, hidden)
        h_r, h_z, h_n = gh.chunk(3, dim=-1)
        r = torch.sigmoid(i_r + h_r)
        z = torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)  # r gates W_hn h + b_hn, bias included
        return (1 - z) * n + z * h  # (batch, hidden)


# ------------------------------------------------------------------------------------------------
# layers of cells over time


class _Stacked(nn.Module):
    """Layers of cells unrolled over time, with the call convention of ``nn.RNN`` and friends.

    Differs from PyTorch on purpose in the default ``batch_first=True``; see the module docstring.
    """

    torch_class: type[nn.RNNBase] = nn.RNN
    is_lstm = False

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = True,
        dropout: float = 0.0,
        **cell_kwargs: str,
    ) -> None:
        super().__init__()
        _check_positive_int(input_size, "input_size")
        _check_positive_int(hidden_size, "hidden_size")
        if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.batch_first, self.dropout = batch_first, dropout
        self.cells = nn.ModuleList(
            self._make_cell(input_size if k == 0 else hidden_size, hidden_size, bias, **cell_kwargs) for k in range(num_layers)
        )

    def _make_cell(self, input_size: int, hidden_size: int, bias: bool, **kw: str) -> _Cell:
        raise NotImplementedError

    def _zero_state(self, x: torch.Tensor, batch: int):
        z = x.new_zeros(self.num_layers, batch, self.hidden_size)
        return (z, z.clone()) if self.is_lstm else z

    def _check_x(self, x: object) -> None:
        name = type(self).__name__
        order = "(batch, seq, input)" if self.batch_first else "(seq, batch, input)"
        if isinstance(x, PackedSequence):
            raise TypeError(
                f"{name} takes a padded tensor {order}, not a PackedSequence: run the padded batch and "
                "read each sequence's state at its last step, output[b, length_b - 1] (chapter 4)"
            )
        if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.shape[-1] != self.input_size:
            raise ValueError(f"{name} takes x of shape {order} with input={self.input_size}, got {_shape(x)}")
        if x.shape[0] < 1 or x.shape[1] < 1:
            raise ValueError(f"{name} takes x of shape {order} with at least one step and one sequence, got {_shape(x)}")
        _check_like_weights(x, self.cells[0].weight_ih, name, "x")

    def _check_layer_state(self, s: object, batch: int, what: str) -> None:
        name = type(self).__name__
        want = (self.num_layers, batch, self.hidden_size)
        if not isinstance(s, torch.Tensor):
            raise TypeError(f"{name} takes the state {what} as a tensor of shape {want}, got {type(s).__name__}")
        if s.shape != want:
            hint = ""
            if s.dim() == 2 and s.shape == want[1:]:
                hint = f"; add the layer axis: {what}[None]"
            elif s.dim() == 3 and s.shape == (batch, self.num_layers, self.hidden_size):
                hint = "; the state is (num_layers, batch, hidden) even with batch_first=True"
            raise ValueError(
                f"{name}: the state {what} must have shape (num_layers, batch, hidden) = {want}, got {tuple(s.shape)}{hint}"
            )
        _check_like_weights(s, self.cells[0].weight_hh, name, what)

    def _check_state(self, state: object, batch: int):
        if self.is_lstm:
            h0, c0 = _check_pair(state, type(self).__name__)
            self._check_layer_state(h0, batch, "h_0")
            self._check_layer_state(c0, batch, "c_0")
            return h0, c0
        _check_single(state, type(self).__name__)
        self._check_layer_state(state, batch, "h_0")
        return state

    def forward(self, x: torch.Tensor, state=None):
        """``x`` is ``(batch, seq, input)`` if ``batch_first`` else ``(seq, batch, input)``.

        ``state`` (zeros when omitted) is ``h_0`` of shape ``(num_layers, batch, hidden)``, or for
        the LSTM the tuple ``(h_0, c_0)``. Returns ``(output, h_n)`` (LSTM: ``(output, (h_n, c_n))``):
        ``output`` holds the last layer's hidden state at every step, ``h_n`` every layer's state at
        the last step, shaped ``(num_layers, batch, hidden)``, exactly as PyTorch's modules return them.
        """
        self._check_x(x)
        if self.batch_first:
            x = x.transpose(0, 1)  # (seq, batch, input)
        seq, batch = x.shape[0], x.shape[1]
        state = self._zero_state(x, batch) if state is None else self._check_state(state, batch)
        layer_input = x
        finals = []
        for k, cell in enumerate(self.cells):
            s = (state[0][k], state[1][k]) if self.is_lstm else state[k]
            outputs = []
            for t in range(seq):
                s = cell._step(layer_input[t], s)  # checked once above, not at every step
                outputs.append(s[0] if self.is_lstm else s)  # (batch, hidden)
            finals.append(s)
            layer_input = torch.stack(outputs)  # (seq, batch, hidden)
            if self.dropout > 0 and self.training and k < self.num_layers - 1:
                layer_input = F.dropout(layer_input, self.dropout, training=True)
        output = layer_input.transpose(0, 1) if self.batch_first else layer_input
        if self.is_lstm:
            return output, (torch.stack([s[0] for s in finals]), torch.stack([s[1] for s in finals]))
        return output, torch.stack(finals)

    @torch.no_grad()
    def load_from_torch(self, module: nn.RNNBase) -> _Stacked:
        """Copy the weights of a matching PyTorch module (``weight_ih_l{k}`` etc.) into these cells."""
        if not isinstance(module, self.torch_class):
            raise TypeError(f"{type(self).__name__} loads from {self.torch_class.__name__}, got {type(module).__name__}")
        if module.bidirectional or getattr(module, "proj_size", 0):
            raise ValueError("bidirectional and projected (proj_size) modules are not supported")
        theirs = (module.input_size, module.hidden_size, module.num_layers, module.bias)
        ours = (self.input_size, self.hidden_size, self.num_layers, self.cells[0].bias_ih is not None)
        if theirs != ours:
            raise ValueError(f"sizes differ: (input, hidden, layers, bias) = {theirs} there, {ours} here")
        nonlinearity = getattr(module, "nonlinearity", None)
        if nonlinearity is not None and nonlinearity != getattr(self.cells[0], "nonlinearity", nonlinearity):
            raise ValueError(f"nonlinearity differs: {nonlinearity} there, {self.cells[0].nonlinearity} here")
        for k, cell in enumerate(self.cells):
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                mine = getattr(cell, name)
                if mine is not None:
                    mine.copy_(getattr(module, f"{name}_l{k}"))
        return self

    @classmethod
    def from_torch(cls, module: nn.RNNBase) -> _Stacked:
        """A from-scratch copy of a PyTorch ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU``.

        Same sizes, weights, dtype, device and ``batch_first`` as ``module``.
        """
        if not isinstance(module, cls.torch_class):
            raise TypeError(f"{cls.__name__}.from_torch needs an {cls.torch_class.__name__}, got {type(module).__name__}")
        kw = {"nonlinearity": module.nonlinearity} if cls.torch_class is nn.RNN else {}
        ours = cls(
            module.input_size, module.hidden_size, module.num_layers, module.bias, module.batch_first, module.dropout, **kw
        )
        p = next(module.parameters())
        return ours.to(device=p.device, dtype=p.dtype).load_from_torch(module)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, batch_first={self.batch_first}"


class RNN(_Stacked):
    """A multi-layer vanilla RNN unrolled over time, equivalent to ``nn.RNN``. Taught in chapter 4.

    Unlike ``nn.RNN``, ``batch_first`` defaults to ``True`` and packed sequences are not taken
    (see the module docstring); the state is one tensor ``(num_layers, batch, hidden)``.
    """

    torch_class = nn.RNN

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = True,
        dropout: float = 0.0,
        nonlinearity: str = "tanh",
    ) -> None:
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, nonlinearity=nonlinearity)

    def _make_cell(self, input_size: int, hidden_size: int, bias: bool, **kw: str) -> _Cell:
        return RNNCell(input_size, hidden_size, bias, **kw)


class LSTM(_Stacked):
    """A multi-layer LSTM unrolled over time, equivalent to ``nn.LSTM``. Taught in chapter 5.

    Unlike ``nn.LSTM``, ``batch_first`` defaults to ``True`` and packed sequences,
    ``bidirectional`` and ``proj_size`` are not supported (see the module docstring; passing
    either argument raises ``TypeError``); the state is the tuple ``(h, c)``, each
    ``(num_layers, batch, hidden)``.
    """

    torch_class = nn.LSTM
    is_lstm = True

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = True,
        dropout: float = 0.0,
    ) -> None:
        # Explicit arguments: nn.LSTM's bidirectional= or proj_size= (or a typo) raise TypeError
        # here instead of silently building a plain one-directional network.
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout)

    def _make_cell(self, input_size: int, hidden_size: int, bias: bool, **kw: str) -> _Cell:
        return LSTMCell(input_size, hidden_size, bias)


class GRU(_Stacked):
    """A multi-layer GRU unrolled over time, equivalent to ``nn.GRU``. Taught in chapter 5.

    Unlike ``nn.GRU``, ``batch_first`` defaults to ``True`` and packed sequences and
    ``bidirectional`` are not supported (see the module docstring; ``bidirectional=`` raises
    ``TypeError``); the state is one tensor ``(num_layers, batch, hidden)``.
    """

    torch_class = nn.GRU

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = True,
        dropout: float = 0.0,
    ) -> None:
        # Explicit arguments, as for LSTM: bidirectional= or proj_size= raise TypeError.
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout)

    def _make_cell(self, input_size: int, hidden_size: int, bias: bool, **kw: str) -> _Cell:
        return GRUCell(input_size, hidden_size, bias)


__all__ = ["GRU", "GRUCell", "LSTM", "LSTMCell", "RNN", "RNNCell"]
