"""Integer LSTM of the NEP golden model, and its float reference.

The arithmetic follows TensorFlow Lite Micro's integer LSTM (int8 input and hidden state,
int16 gates in Q3.12, Q0.15 activations, int16 cell with a power-of-two scale), with the
departures listed in ``docs/numerics.md`` ("Integer LSTM"); the main one is that the input
and recurrent products of a gate are summed in one int32 accumulator and requantized once,
as the processor's matrix-vector unit does. That section is the specification: every
shift, rounding and saturation below is written there too.

Gate order (rows of the gate matrix, ``H`` rows each): input ``i``, forget ``f``, cell
candidate ``g``, output ``o``. No peepholes, no projection, no layer norm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from .layers import QLinear, matvec_float, readonly
from .numerics import (
    INT8_MAX,
    INT8_MIN,
    INT16_MAX,
    INT16_MIN,
    MAX_LEFT_SHIFT,
    MAX_RIGHT_SHIFT,
    multiply_by_quantized_multiplier,
    quantize_multiplier,
    requantize_to_int8,
    rounding_divide_by_pot,
    saturate,
)

__all__ = [
    "CELL_FRAC_BITS_RANGE",
    "GATE_FRAC_BITS",
    "LSTMState",
    "QLSTM",
    "SIGMOID_TABLE",
    "TABLE_SEGMENTS",
    "TANH_TABLE",
    "activation_table",
    "cell_to_q3_12",
    "cell_update",
    "hidden_multiplier",
    "lstm_step_float",
    "q15_to_int8",
    "requantize_to_int16",
    "sigmoid_q15",
    "table_lookup",
    "tanh_q15",
]

#: Fraction bits of gate pre-activations and of the activation tables' input (Q3.12).
GATE_FRAC_BITS = 12
#: Fraction bits of activation outputs (Q0.15).
OUT_FRAC_BITS = 15
#: Segments of each activation table; the table has one more entry than segments.
TABLE_SEGMENTS = 256
#: Input LSBs per segment: the int16 input range (2**16 values) split in TABLE_SEGMENTS.
SEGMENT_BITS = 16 - int(math.log2(TABLE_SEGMENTS))
#: Allowed cell-state fraction bits (cell format Q(15-n).n).
CELL_FRAC_BITS_RANGE = range(8, 16)


def activation_table(fn) -> np.ndarray:
    """Table of ``fn`` for the interpolating lookup: ``TABLE_SEGMENTS + 1`` int16 entries.

    Entry ``k`` is ``fn(-8 + k / 16)`` (``k = 0..256``, so the last sample is at ``+8``)
    in Q0.15, rounded half away from zero and saturated to int16.
    """
    step = 16.0 / TABLE_SEGMENTS
    out = []
    for k in range(TABLE_SEGMENTS + 1):
        v = fn(-8.0 + k * step) * (1 << OUT_FRAC_BITS)
        r = math.floor(abs(v) + 0.5)
        out.append(min(max(int(math.copysign(r, v)), INT16_MIN), INT16_MAX))
    return readonly(np.array(out, dtype=np.int16))


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


#: Sigmoid table, Q0.15 outputs (0..32757).
SIGMOID_TABLE = activation_table(_sigmoid)
#: Tanh table, Q0.15 outputs (-32768..32767: +1.0 saturates to 32767).
TANH_TABLE = activation_table(math.tanh)
_SIGMOID64 = SIGMOID_TABLE.astype(np.int64)
_TANH64 = TANH_TABLE.astype(np.int64)
_FRAC_MASK = (1 << SEGMENT_BITS) - 1
_HALF = 1 << (SEGMENT_BITS - 1)


def table_lookup(table: np.ndarray, z) -> np.ndarray:
    """Interpolating lookup of an int16 Q3.12 input ``z`` in an activation table.

    ``u = z + 32768``, segment ``s = u >> 8``, fraction ``t = u & 255``, then
    ``y = T[s] + (((T[s+1] - T[s]) * t + 128) >> 8)`` (``>>`` arithmetic, so the
    interpolated step is rounded half up). The result lies between ``T[s]`` and ``T[s+1]``.
    """
    u = np.asarray(z, dtype=np.int64) - INT16_MIN
    if np.any((u < 0) | (u > INT16_MAX - INT16_MIN)):
        raise ValueError("activation input must be int16 (Q3.12)")
    s = u >> SEGMENT_BITS
    t = u & _FRAC_MASK
    lo = table[s]
    return lo + (((table[s + 1] - lo) * t + _HALF) >> SEGMENT_BITS)


def sigmoid_q15(z) -> np.ndarray:
    """Sigmoid of int16 Q3.12 values, as Q0.15 int64 values."""
    return table_lookup(_SIGMOID64, z)


def tanh_q15(z) -> np.ndarray:
    """Tanh of int16 Q3.12 values, as Q0.15 int64 values."""
    return table_lookup(_TANH64, z)


def requantize_to_int16(acc, multiplier, shift) -> np.ndarray:
    """int32 accumulator -> int16: ``saturate16(MultiplyByQuantizedMultiplier(...))``."""
    return saturate(multiply_by_quantized_multiplier(acc, multiplier, shift),
                    INT16_MIN, INT16_MAX)


def cell_update(f, c, i, g, cell_frac_bits: int) -> np.ndarray:
    """New cell state ``f*c + i*g`` in Q(15-n).n, ``n = cell_frac_bits``.

    ``f*c`` (Q0.15 x Qn) is rounded back to Qn by ``RoundingDivideByPOT(., 15)``;
    ``i*g`` (Q0.15 x Q0.15 = Q0.30) by ``RoundingDivideByPOT(., 30 - n)``; each term is
    saturated to int16, and so is their sum.
    """
    fc = saturate(rounding_divide_by_pot(f * c, OUT_FRAC_BITS), INT16_MIN, INT16_MAX)
    ig = saturate(rounding_divide_by_pot(i * g, 2 * OUT_FRAC_BITS - cell_frac_bits),
                  INT16_MIN, INT16_MAX)
    return saturate(fc + ig, INT16_MIN, INT16_MAX)


def cell_to_q3_12(c, cell_frac_bits: int) -> np.ndarray:
    """Convert a Qn cell state to the Q3.12 tanh input.

    ``n < 12``: saturating left shift by ``12 - n``; ``n > 12``: ``RoundingDivideByPOT``
    by ``n - 12``; ``n == 12``: unchanged.
    """
    c = np.asarray(c, dtype=np.int64)
    if cell_frac_bits < GATE_FRAC_BITS:
        return saturate(c << (GATE_FRAC_BITS - cell_frac_bits), INT16_MIN, INT16_MAX)
    if cell_frac_bits > GATE_FRAC_BITS:
        return rounding_divide_by_pot(c, cell_frac_bits - GATE_FRAC_BITS)
    return c


def q15_to_int8(t) -> np.ndarray:
    """Q0.15 -> int8 at scale ``2**-7``: ``saturate8(RoundingDivideByPOT(t, 8))``."""
    return saturate(rounding_divide_by_pot(t, 8), INT8_MIN, INT8_MAX).astype(np.int8)


def hidden_multiplier(hidden_scale: float) -> tuple[int, int]:
    """Quantized multiplier taking ``o * tanh(c)`` (Q0.30) to int8 at ``hidden_scale``."""
    return quantize_multiplier(2.0 ** -(2 * OUT_FRAC_BITS) / hidden_scale)


class LSTMState(NamedTuple):
    """Recurrent state of one integer LSTM layer (read-only arrays).

    Attributes
    ----------
    h : int8 array [H]
        Hidden state (the layer's output), at the layer's hidden scale.
    c : int16 array [H]
        Cell state in Q(15-n).n.
    """

    h: np.ndarray
    c: np.ndarray


@dataclass(frozen=True, eq=False)
class QLSTM:
    """One integer LSTM layer.

    Parameters
    ----------
    gates : QLinear
        The gate matrix over ``[x; h]``: ``4H`` rows (``i, f, g, o``), ``I + H`` columns.
        Its multipliers and shifts requantize the accumulator to Q3.12 (int16);
        ``gates.relu`` must be False.
    out_multiplier, out_shift : int
        Requantization of ``o * tanh(c)`` (Q0.30) to the int8 hidden state
        (see :func:`hidden_multiplier`).
    cell_frac_bits : int
        Fraction bits ``n`` of the int16 cell state, Q(15-n).n; 12 gives Q3.12 (+-8).
    """

    gates: QLinear
    out_multiplier: int
    out_shift: int
    cell_frac_bits: int = GATE_FRAC_BITS
    hidden_size: int = field(init=False)
    input_size: int = field(init=False)

    def __post_init__(self):
        if not isinstance(self.gates, QLinear):
            raise ValueError("gates must be a QLinear")
        if self.gates.relu:
            raise ValueError("LSTM gate matrix must not apply ReLU")
        rows, cols = self.gates.weight.shape
        if rows % 4:
            raise ValueError(f"gate matrix has {rows} rows, not a multiple of 4 (i, f, g, o)")
        hidden = rows // 4
        if cols <= hidden:
            raise ValueError(f"gate matrix has {cols} columns; needs input + hidden ({hidden})")
        if self.cell_frac_bits not in CELL_FRAC_BITS_RANGE:
            raise ValueError(f"cell_frac_bits must be in {CELL_FRAC_BITS_RANGE.start}.."
                             f"{CELL_FRAC_BITS_RANGE.stop - 1}, got {self.cell_frac_bits}")
        if self.out_multiplier and not (1 << 30) <= self.out_multiplier < (1 << 31):
            raise ValueError("out_multiplier must be 0 or in [2**30, 2**31)")
        if not -MAX_RIGHT_SHIFT <= self.out_shift <= MAX_LEFT_SHIFT:
            raise ValueError(f"out_shift must be in -{MAX_RIGHT_SHIFT}..{MAX_LEFT_SHIFT}")
        object.__setattr__(self, "out_multiplier", int(self.out_multiplier))
        object.__setattr__(self, "out_shift", int(self.out_shift))
        object.__setattr__(self, "hidden_size", hidden)
        object.__setattr__(self, "input_size", cols - hidden)

    def initial_state(self) -> LSTMState:
        """All-zero ``h`` and ``c``."""
        return LSTMState(readonly(np.zeros(self.hidden_size, np.int8)),
                         readonly(np.zeros(self.hidden_size, np.int16)))

    def step(self, x, state: LSTMState) -> tuple[np.ndarray, LSTMState]:
        """One time step.

        Parameters
        ----------
        x : int8 array [I]
        state : LSTMState

        Returns
        -------
        h : int8 array [H]
            The new hidden state (also ``new_state.h``).
        new_state : LSTMState
            A new value; ``state`` is not modified.
        """
        x = np.asarray(x)
        if x.shape != (self.input_size,) or x.dtype != np.int8:
            raise ValueError(f"LSTM input must be int8 of shape ({self.input_size},), "
                             f"got {x.dtype} {x.shape}")
        hsz = self.hidden_size
        if state.h.shape != (hsz,) or state.c.shape != (hsz,):
            raise ValueError(f"LSTM state must have shape ({hsz},)")
        acc = self.gates.accumulate(np.concatenate((x, state.h)))
        z = requantize_to_int16(acc, self.gates.multiplier, self.gates.shift)  # Q3.12
        sig = sigmoid_q15(np.concatenate((z[:2 * hsz], z[3 * hsz:])))  # i, f, o
        i, f, o = sig[:hsz], sig[hsz:2 * hsz], sig[2 * hsz:]
        g = tanh_q15(z[2 * hsz:3 * hsz])
        c = cell_update(f, state.c.astype(np.int64), i, g, self.cell_frac_bits)
        t = tanh_q15(cell_to_q3_12(c, self.cell_frac_bits))
        h = readonly(requantize_to_int8(o * t, self.out_multiplier, self.out_shift))
        return h, LSTMState(h, readonly(c.astype(np.int16)))

    @property
    def dense_macs(self) -> int:
        return self.gates.dense_macs

    @property
    def nonzero_macs(self) -> int:
        return self.gates.nonzero_macs


def lstm_step_float(weight, bias, x, h, c) -> tuple[np.ndarray, np.ndarray]:
    """Float reference LSTM step (float64), same gate order and layout as :class:`QLSTM`.

    Parameters
    ----------
    weight : array [4H, I + H]
        Gate weights over ``[x; h]``.
    bias : array [4H]
    x : array [I]
    h, c : arrays [H]

    Returns
    -------
    h, c : float64 arrays [H]
    """
    hsz = np.shape(h)[0]
    z = matvec_float(weight, np.concatenate((np.asarray(x, np.float64),
                                             np.asarray(h, np.float64))))
    z = z + np.asarray(bias, np.float64)
    i = 1.0 / (1.0 + np.exp(-z[:hsz]))
    f = 1.0 / (1.0 + np.exp(-z[hsz:2 * hsz]))
    g = np.tanh(z[2 * hsz:3 * hsz])
    o = 1.0 / (1.0 + np.exp(-z[3 * hsz:]))
    c_new = f * np.asarray(c, np.float64) + i * g
    return o * np.tanh(c_new), c_new
