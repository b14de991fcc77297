"""Requantizer: int32 accumulator plus bias to int8, bit-exact with ``golden.numerics``."""

from __future__ import annotations

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


class Requantizer(wiring.Component):
    """TFLite ``MultiplyByQuantizedMultiplier`` (double rounding) as a 6-stage pipeline.

    Stages: add bias (wrap); saturating left shift; 32x32 multiply; doubling high half with
    round-half-away nudge (``INT32_MIN^2`` saturates); rounding right shift; saturate to
    int8. One result per cycle, no back-pressure. ``docs/numerics.md`` gives the formulas.

    Interface
    ---------
    in_valid, acc, bias, multiplier, shift : In
        ``shift`` is in -31..7 (checked by the compiler, see ``golden.weights``).
    out_valid, out : Out
    """

    def __init__(self):
        super().__init__({
            "in_valid": In(1), "acc": In(signed(32)), "bias": In(signed(32)),
            "multiplier": In(signed(32)), "shift": In(signed(8)),
            "out_valid": Out(1), "out": Out(signed(8)),
        })

    def elaborate(self, platform):
        m = Module()
        # 1: bias, split the shift.
        v1 = Signal()
        x1 = Signal(signed(32))
        m1 = Signal(signed(32))
        left1 = Signal(3)
        right1 = Signal(5)
        m.d.sync += [
            v1.eq(self.in_valid),
            x1.eq(self.acc + self.bias),
            m1.eq(self.multiplier),
            left1.eq(Mux(self.shift > 0, self.shift, 0)),
            right1.eq(Mux(self.shift < 0, -self.shift, 0)),
        ]
        # 2: saturating left shift.
        v2 = Signal()
        x2 = Signal(signed(32))
        m2 = Signal(signed(32))
        right2 = Signal(5)
        wide = Signal(signed(40))
        m.d.comb += wide.eq(x1 << left1)
        m.d.sync += [
            v2.eq(v1), m2.eq(m1), right2.eq(right1),
            x2.eq(Mux(wide > INT32_MAX, INT32_MAX, Mux(wide < INT32_MIN, INT32_MIN, wide))),
        ]
        # 3: full product.
        v3 = Signal()
        p3 = Signal(signed(64))
        ovf3 = Signal()
        right3 = Signal(5)
        m.d.sync += [
            v3.eq(v2), right3.eq(right2),
            p3.eq(x2 * m2),
            ovf3.eq((x2 == INT32_MIN) & (m2 == INT32_MIN)),
        ]
        # 4: doubling high half, rounded half away from zero (truncating division by 2^31).
        v4 = Signal()
        h4 = Signal(signed(32))
        right4 = Signal(5)
        nudged = Signal(signed(65))
        m.d.comb += nudged.eq(p3 + Mux(p3 >= 0, 1 << 30, 1 - (1 << 30)))
        trunc = Signal(signed(65))
        m.d.comb += trunc.eq(nudged + Mux(nudged < 0, (1 << 31) - 1, 0))
        m.d.sync += [
            v4.eq(v3), right4.eq(right3),
            h4.eq(Mux(ovf3, INT32_MAX, trunc >> 31)),
        ]
        # 5: rounding divide by 2^right.
        v5 = Signal()
        q5 = Signal(signed(32))
        mask = Signal(unsigned(32))
        m.d.comb += mask.eq((1 << right4) - 1)
        remainder = h4.as_unsigned() & mask
        threshold = (mask >> 1) + (h4 < 0)
        m.d.sync += [v5.eq(v4), q5.eq((h4 >> right4) + (remainder > threshold))]
        # 6: saturate to int8.
        m.d.sync += [
            self.out_valid.eq(v5),
            self.out.eq(Mux(q5 > 127, 127, Mux(q5 < -128, -128, q5))),
        ]
        return m
