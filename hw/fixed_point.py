"""Fixed-point building blocks shared by the datapaths (formulas in ``docs/numerics.md``)."""

from __future__ import annotations

from amaranth import Mux, Signal


def rounding_parts(x, e, mask):
    """``RoundingDivideByPOT`` of a signed ``x`` (32 bits or more) by ``2**e`` as its two
    halves, for pipelines that add them a stage later: ``(x >> e, round_up)``, where
    ``mask`` is ``2**e - 1`` (a signal or a register computed ahead) and the quotient is
    their sum."""
    return x >> e, round_away_bit(x, mask)


def rounding_divide_by_pot(m, x, e, *, name: str):
    """TFLite ``RoundingDivideByPOT`` of a signed ``x`` (32 bits or more) by ``2**e``
    (``e`` 0..31): rounded half away from zero. Adds its mask signal to ``m``; returns the
    expression."""
    mask = Signal(32, name=f"{name}_mask")
    m.d.comb += mask.eq((1 << e) - 1)
    quotient, round_up = rounding_parts(x, e, mask)
    return quotient + round_up


def round_away_bit(x, mask):
    """The rounding increment of ``RoundingDivideByPOT(x, e)`` given ``mask = 2**e - 1``.

    ``remainder > (mask >> 1) + (x < 0)`` without an add or a compare: the remainder's top
    bit (bit ``e - 1``) is set, and below zero some lower bit too."""
    half = (x.as_unsigned() & (mask ^ (mask >> 1))).any()
    below = (x.as_unsigned() & (mask >> 1)).any()
    return half & ((x >= 0) | below)


def saturate(x, lo, hi):
    """Clamp ``x`` to ``[lo, hi]`` (bounds may be values or constants)."""
    return Mux(x > hi, hi, Mux(x < lo, lo, x))
