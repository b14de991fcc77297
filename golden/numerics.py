"""Integer numerics shared by the golden model and the RTL.

Everything here follows ``docs/numerics.md``. The requantization primitives are the
TensorFlow Lite reference ones (``MultiplyByQuantizedMultiplier`` built from
``SaturatingRoundingDoublingHighMul`` and ``RoundingDivideByPOT``: two roundings), written
on NumPy ``int64`` arrays so that every value is exact. Scalars work too.
"""

from __future__ import annotations

import math

import numpy as np

INT8_MIN, INT8_MAX = -128, 127
INT16_MIN, INT16_MAX = -(1 << 15), (1 << 15) - 1
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1

#: Left shifts allowed in a quantized multiplier (multipliers up to 2**7).
MAX_LEFT_SHIFT = 7
#: Right shifts allowed (TFLite flushes multipliers needing more, below about 2**-32, to 0).
MAX_RIGHT_SHIFT = 31


def _i64(x):
    return np.asarray(x, dtype=np.int64)


def saturate(x, lo: int, hi: int):
    """Clamp ``x`` to ``[lo, hi]``."""
    return np.clip(_i64(x), lo, hi)


def saturating_rounding_doubling_high_mul(a, b):
    """TFLite ``SaturatingRoundingDoublingHighMul`` on int32 values.

    Returns the high 32 bits of ``2 * a * b``, rounded to nearest; exact ties round toward
    +infinity (TFLite's nudge of ``1 - 2**30`` for negative products). The one case that
    overflows (``a == b == INT32_MIN``) saturates to ``INT32_MAX``.
    """
    a, b = _i64(a), _i64(b)
    overflow = (a == INT32_MIN) & (b == INT32_MIN)
    ab = a * b  # |a*b| <= 2**62: exact in int64
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    s = ab + nudge
    # C integer division truncates toward zero; NumPy's // floors, so divide magnitudes.
    high = np.where(s >= 0, s >> 31, -((-s) >> 31))
    return np.where(overflow, INT32_MAX, high)


def rounding_divide_by_pot(x, exponent):
    """TFLite ``RoundingDivideByPOT``: ``x / 2**exponent`` rounded half away from zero."""
    x, exponent = _i64(x), _i64(exponent)
    if np.any((exponent < 0) | (exponent > 31)):
        raise ValueError("rounding_divide_by_pot: exponent must be in 0..31")
    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


def multiply_by_quantized_multiplier(x, multiplier, shift):
    """TFLite ``MultiplyByQuantizedMultiplier`` (double rounding).

    ``x`` is int32, ``multiplier`` a Q0.31 value in ``[2**30, 2**31)`` (or 0) and ``shift``
    in ``-31..7``. A positive shift scales ``x`` left first; NEP saturates that product to
    int32 where TFLite's ``x * (1 << shift)`` would overflow (undefined in C++).
    """
    x, multiplier, shift = _i64(x), _i64(multiplier), _i64(shift)
    if np.any((shift < -MAX_RIGHT_SHIFT) | (shift > MAX_LEFT_SHIFT)):
        raise ValueError(f"shift must be in -{MAX_RIGHT_SHIFT}..{MAX_LEFT_SHIFT}")
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    scaled = saturate(x << left, INT32_MIN, INT32_MAX)
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(scaled, multiplier), right)


def quantize_multiplier(real: float) -> tuple[int, int]:
    """TFLite ``QuantizeMultiplier``: ``real ~= multiplier * 2**(shift - 31)``.

    The mantissa rounds half away from zero (``TfLiteRound``). Multipliers too small to
    represent become ``(0, 0)``; too large ones raise, since NEP caps left shifts.
    """
    if not math.isfinite(real) or real < 0:
        raise ValueError(f"multiplier must be finite and non-negative, got {real!r}")
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)
    q_fixed = int(math.floor(abs(q) * (1 << 31) + 0.5))
    if q_fixed == 1 << 31:
        q_fixed //= 2
        shift += 1
    if shift < -MAX_RIGHT_SHIFT:
        return 0, 0
    if shift > MAX_LEFT_SHIFT:
        raise ValueError(f"multiplier {real} needs a left shift of {shift} > {MAX_LEFT_SHIFT}")
    return q_fixed, shift


def requantize_to_int8(acc, multiplier, shift, zero_point: int = 0):
    """int32 accumulator -> int8 output: scale, add the zero point, saturate."""
    y = multiply_by_quantized_multiplier(acc, multiplier, shift) + zero_point
    return saturate(y, INT8_MIN, INT8_MAX).astype(np.int8)


def wrap_int32(x):
    """Two's-complement wrap to int32, as a 32-bit hardware accumulator does."""
    x = _i64(x)
    return ((x + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)
