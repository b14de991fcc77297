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
        return wrap_int32(acc.astype(np.int64) + self.bias)

    def __call__(self, x) -> np.ndarray:
        """int8 output: requantized accumulator, then ReLU if enabled."""
        y = requantize_to_int8(self.accumulate(x), self.multiplier, self.shift)
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
