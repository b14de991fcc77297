"""Quantized layers of the NEP golden model: linear (matrix-vector) and embedding.

Every matrix layer computes the processor's matrix-vector product, defined by
:func:`golden.weights.matvec` (re-exported here)::

    acc = wrap_int32(bias + W @ x)            # int8 x int8 products, exact, 32-bit wrap
    y   = requantize_to_int8(acc, mult[r], shift[r])   # per-row (output channel) scale

:class:`QLinear` computes the same thing faster: it keeps an int32 copy of the int8
weights and sums the products with ``np.einsum`` in int32. That is exact, not an
approximation: every product has magnitude at most ``2**14`` and a row has at most
``MAX_COLS < 2**16`` of them, so every partial sum, in any order, stays below ``2**30``.
(It also avoids BLAS, whose threads cost more than they save on one small matrix-vector
product per call.) The tests check it against :func:`golden.weights.matvec` bit for bit.

Requantization goes through :class:`Requantizer`, the same arithmetic as
:func:`golden.numerics.multiply_by_quantized_multiplier` with the per-row constants
(shifts, masks, rounding thresholds) worked out once per layer instead of per call: the
reference functions cost more in per-call NumPy overhead on these short vectors than in
arithmetic. :class:`Requantizer` is tested against the reference bit for bit on edge
values (every shift, int32 extremes, ties). Its one algebraic step: TFLite's
``SaturatingRoundingDoublingHighMul`` (nudge ``2**30`` or ``1 - 2**30`` by the product's
sign, then divide by ``2**31`` truncating toward zero) equals ``(a*b + 2**30) >> 31``
(floor) for every product, because for ``a*b < 0`` truncating ``(a*b + 1 - 2**30) / 2**31``
toward zero is flooring ``(a*b + 1 - 2**30 + 2**31 - 1) / 2**31``; the saturating case
(both operands ``-2**31``) cannot occur since a multiplier is never negative.

Batched forms (:meth:`QLinear.accumulate_rows`, :meth:`Requantizer.__call__` on 2-D
arrays) treat each row as an independent call: the result row ``i`` is bit for bit the
single-vector result for input row ``i``.

A layer whose input is a concatenation of vectors with different scales (an LSTM's
``[x; h]``, the joint's ``[enc; pred]``) is still one matrix: the quantizer folds each
column's input scale into the weights, so all products of a row share one scale and are
summed in one accumulator (see ``docs/model.md``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .numerics import (
    INT8_MAX,
    INT8_MIN,
    INT16_MAX,
    INT16_MIN,
    INT32_MAX,
    INT32_MIN,
    MAX_LEFT_SHIFT,
    MAX_RIGHT_SHIFT,
    requantize_to_int8,
    wrap_int32,
)
from .weights import matvec

__all__ = [
    "MAX_COLS",
    "QEmbedding",
    "QLinear",
    "Requantizer",
    "embedding_float",
    "linear_float",
    "matvec",
    "matvec_float",
    "readonly",
]

#: Widest row a matrix layer accepts (the weight image format's 16-bit dimension limit).
MAX_COLS = 0xFFFF


def readonly(a: np.ndarray) -> np.ndarray:
    """Return ``a`` marked read-only, so a shared value cannot be changed in place."""
    a.setflags(write=False)
    return a


_TWO31 = 1 << 31
_MASK32 = 0xFFFFFFFF
_HALF31 = 1 << 30


def wrap32(x: np.ndarray) -> np.ndarray:
    """:func:`golden.numerics.wrap_int32` for an int64 array, without the conversions."""
    return ((x + _TWO31) & _MASK32) - _TWO31


class Requantizer:
    """``multiply_by_quantized_multiplier(acc, multiplier, shift)`` with fixed constants.

    Bit for bit the reference (:mod:`golden.numerics`) for every int64 ``acc`` (the
    reference saturates ``acc << left`` to int32 first, and so does this), with the
    per-element constants precomputed. ``multiplier`` and ``shift`` are scalars or 1-D
    (per output row); ``acc`` may have leading batch dimensions (rows on the last axis).

    Parameters
    ----------
    multiplier : int or int array
        Q0.31 multipliers in ``0 .. 2**31 - 1``.
    shift : int or int array
        Shifts in ``-31 .. 7``.
    """

    __slots__ = ("_mult", "_left", "_right", "_mask", "_half", "_any_left")

    def __init__(self, multiplier, shift):
        m = np.asarray(multiplier, dtype=np.int64)
        sh = np.asarray(shift, dtype=np.int64)
        if np.any((sh < -MAX_RIGHT_SHIFT) | (sh > MAX_LEFT_SHIFT)):
            raise ValueError(f"shift must be in -{MAX_RIGHT_SHIFT}..{MAX_LEFT_SHIFT}")
        if np.any((m < 0) | (m > INT32_MAX)):
            raise ValueError("multiplier must be in 0..2**31-1")
        right = np.maximum(-sh, 0)
        self._mult = m
        self._left = np.maximum(sh, 0)
        self._any_left = bool(np.any(self._left))
        self._right = right
        self._mask = (np.int64(1) << right) - 1
        self._half = self._mask >> 1

    def __call__(self, acc: np.ndarray, int32_input: bool = False) -> np.ndarray:
        """Requantized int64 values (before any output saturation).

        ``int32_input=True`` promises ``acc`` is already in the int32 range (a wrapped
        accumulator), so that without left shifts the int32 saturation is skipped.
        """
        if self._any_left:
            x = np.minimum(np.maximum(acc << self._left, INT32_MIN), INT32_MAX)
        elif int32_input:
            x = acc
        else:
            x = np.minimum(np.maximum(acc, INT32_MIN), INT32_MAX)
        high = (x * self._mult + _HALF31) >> 31  # SaturatingRoundingDoublingHighMul
        # RoundingDivideByPOT(high, right): round half away from zero.
        return (high >> self._right) + ((high & self._mask) > (self._half + (high < 0)))

    def to_int8(self, acc: np.ndarray, int32_input: bool = False) -> np.ndarray:
        """``requantize_to_int8(acc, multiplier, shift)``: saturated int8."""
        y = self(acc, int32_input)
        return np.minimum(np.maximum(y, INT8_MIN), INT8_MAX).astype(np.int8)

    def to_int16(self, acc: np.ndarray, int32_input: bool = False) -> np.ndarray:
        """``golden.lstm.requantize_to_int16``: saturated to int16 (as int64 values)."""
        return np.minimum(np.maximum(self(acc, int32_input), INT16_MIN), INT16_MAX)


def _check_int_array(name: str, a, shape: tuple, lo: int, hi: int, dtype) -> np.ndarray:
    a = np.asarray(a)
    if a.shape != shape:
        raise ValueError(f"{name} has shape {a.shape}, expected {shape}")
    if not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{name} must be an integer array, got dtype {a.dtype}")
    if a.size and (a.min() < lo or a.max() > hi):
        raise ValueError(f"{name} values must lie in {lo}..{hi}")
    return readonly(a.astype(dtype, copy=True))


@dataclass(frozen=True, eq=False)
class QLinear:
    """Quantized linear layer: int8 in, int32 accumulate, per-row requantization.

    Parameters
    ----------
    weight : int8 array [rows, cols]
        Weights (int4 and codebook values are int8 values too).
    bias : int32 array [rows]
        Bias at the accumulator's scale.
    multiplier : int32 array [rows]
        Q0.31 requantization multipliers (``0`` or in ``[2**30, 2**31)``).
    shift : int8 array [rows]
        Requantization shifts in ``-31..7``.
    relu : bool
        Clamp the int8 output at 0 (ReLU folded into the saturation).

    Notes
    -----
    The arrays are copied and made read-only. ``multiplier``/``shift`` are only used by
    ``__call__``; a caller that requantizes differently (an LSTM's int16 gates) uses
    :meth:`accumulate` and its own requantization.
    """

    weight: np.ndarray
    bias: np.ndarray
    multiplier: np.ndarray
    shift: np.ndarray
    relu: bool = False
    _w32: np.ndarray = field(init=False, repr=False)
    _b64: np.ndarray = field(init=False, repr=False)
    requantizer: Requantizer = field(init=False, repr=False)

    def __post_init__(self):
        w = np.asarray(self.weight)
        if w.ndim != 2 or w.shape[0] < 1 or w.shape[1] < 1:
            raise ValueError(f"weight must be a non-empty 2-D matrix, got shape {w.shape}")
        rows, cols = w.shape
        if cols > MAX_COLS:
            raise ValueError(f"weight has {cols} columns, more than {MAX_COLS}")
        set_ = object.__setattr__
        set_(self, "weight", _check_int_array("weight", w, (rows, cols), INT8_MIN, INT8_MAX,
                                              np.int8))
        set_(self, "bias", _check_int_array("bias", self.bias, (rows,), INT32_MIN, INT32_MAX,
                                            np.int32))
        set_(self, "multiplier", _check_int_array("multiplier", self.multiplier, (rows,), 0,
                                                  INT32_MAX, np.int32))
        m = self.multiplier
        if np.any((m != 0) & (m < (1 << 30))):
            raise ValueError("multipliers must be 0 or in [2**30, 2**31) (normalized Q0.31)")
        set_(self, "shift", _check_int_array("shift", self.shift, (rows,), -MAX_RIGHT_SHIFT,
                                             MAX_LEFT_SHIFT, np.int8))
        set_(self, "relu", bool(self.relu))
        set_(self, "_w32", readonly(self.weight.astype(np.int32)))
        set_(self, "_b64", readonly(self.bias.astype(np.int64)))
        set_(self, "requantizer", Requantizer(self.multiplier, self.shift))

    @property
    def rows(self) -> int:
        """Output size."""
        return self.weight.shape[0]

    @property
    def cols(self) -> int:
        """Input size."""
        return self.weight.shape[1]

    @property
    def dense_macs(self) -> int:
        """Multiply-accumulates of one product counting every weight."""
        return self.weight.size

    @property
    def nonzero_macs(self) -> int:
        """Multiply-accumulates the processor does: it skips zero weights."""
        return int(np.count_nonzero(self.weight))

    def _check_input(self, x) -> np.ndarray:
        x = np.asarray(x)
        if x.shape != (self.cols,):
            raise ValueError(f"input has shape {x.shape}, expected ({self.cols},)")
        if x.dtype != np.int8:
            raise ValueError(f"input must be int8, got {x.dtype}")
        return x

    def accumulate(self, x) -> np.ndarray:
        """``wrap_int32(bias + W @ x)`` as int64 values (exact; see the module notes)."""
        x = self._check_input(x)
        acc = np.einsum("ij,j->i", self._w32, x.astype(np.int32))
        return wrap32(acc + self._b64)  # int32 + int64 -> int64: exact

    def accumulate_rows(self, xs) -> np.ndarray:
        """:meth:`accumulate` of each row of an int8 ``[n, cols]`` array: int64 ``[n, rows]``."""
        xs = np.asarray(xs)
        if xs.ndim != 2 or xs.shape[1] != self.cols or xs.dtype != np.int8:
            raise ValueError(f"input must be int8 of shape (n, {self.cols}), "
                             f"got {xs.dtype} {xs.shape}")
        acc = np.einsum("ij,hj->hi", self._w32, xs.astype(np.int32))
        return wrap32(acc + self._b64)

    def requantize(self, acc: np.ndarray) -> np.ndarray:
        """int8 output for an accumulator (any leading batch dimensions): requantized,
        then ReLU if enabled. ``__call__(x) == requantize(accumulate(x))``."""
        y = self.requantizer.to_int8(acc)
        return np.maximum(y, 0) if self.relu else y

    def requantize_wrapped(self, acc: np.ndarray) -> np.ndarray:
        """:meth:`requantize` of an accumulator known to be in the int32 range (as
        :meth:`accumulate` returns it): the same values, one saturation fewer."""
        y = self.requantizer.to_int8(acc, int32_input=True)
        return np.maximum(y, 0) if self.relu else y

    def __call__(self, x) -> np.ndarray:
        """int8 output: requantized accumulator, then ReLU if enabled."""
        return self.requantize_wrapped(self.accumulate(x))

    def reference_call(self, x) -> np.ndarray:
        """:meth:`__call__` written with the reference functions of :mod:`golden.numerics`
        (slower; the tests compare the two)."""
        acc = np.einsum("ij,j->i", self._w32, self._check_input(x).astype(np.int32))
        y = requantize_to_int8(wrap_int32(acc.astype(np.int64) + self.bias), self.multiplier,
                               self.shift)
        return np.maximum(y, 0) if self.relu else y


@dataclass(frozen=True, eq=False)
class QEmbedding:
    """int8 embedding table with one (per-tensor) scale: a lookup, no arithmetic.

    One scale for the whole table, because the looked-up row feeds a matrix layer whose
    columns must share the input's scale whichever token was looked up.
    """

    table: np.ndarray

    def __post_init__(self):
        t = np.asarray(self.table)
        if t.ndim != 2 or t.shape[0] < 1 or t.shape[1] < 1:
            raise ValueError(f"embedding table must be non-empty 2-D, got shape {t.shape}")
        object.__setattr__(self, "table", _check_int_array("embedding table", t, t.shape,
                                                           INT8_MIN, INT8_MAX, np.int8))

    @property
    def num_tokens(self) -> int:
        return self.table.shape[0]

    def __call__(self, token: int) -> np.ndarray:
        """The (read-only) int8 row of ``token``."""
        token = int(token)
        if not 0 <= token < self.num_tokens:
            raise ValueError(f"token {token} out of range 0..{self.num_tokens - 1}")
        return self.table[token]


def linear_float(weight, bias, x, relu: bool = False) -> np.ndarray:
    """Float reference of :class:`QLinear`: ``W @ x + b`` (then ReLU), in float64."""
    y = matvec_float(weight, x) + np.asarray(bias, np.float64)
    return np.maximum(y, 0.0) if relu else y


def matvec_float(weight, x) -> np.ndarray:
    """``W @ x`` in float64, summed by ``np.einsum`` rather than BLAS (see module notes)."""
    return np.einsum("ij,j->i", np.asarray(weight, np.float64), np.asarray(x, np.float64))


def embedding_float(table, token: int) -> np.ndarray:
    """Float reference of :class:`QEmbedding`: row ``token`` of ``table`` as float64."""
    table = np.asarray(table, np.float64)
    token = int(token)
    if not 0 <= token < table.shape[0]:
        raise ValueError(f"token {token} out of range 0..{table.shape[0] - 1}")
    return table[token]
