"""Requantizer: int32 accumulator plus bias to int8 or int16, bit-exact with golden."""

from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .fixed_point import round_away_bit, rounding_divide_by_pot

INT16_MIN, INT16_MAX = -(1 << 15), (1 << 15) - 1
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1

#: Cycles from inputs to result: ``Requantizer()`` and ``Requantizer(pipelined=True)``.
LATENCY, PIPELINED_LATENCY = 6, 8

#: Output modes: the saturation range of the result.
MODE_INT8, MODE_RELU, MODE_INT16 = 0, 1, 2


def split_shift(shift):
    """The left and right shift amounts of a signed ``shift``: ``(max(shift, 0),
    max(-shift, 0))``, as the requantizer's first stage registers them (3 and 5 bits)."""
    return Mux(shift > 0, shift, 0), Mux(shift < 0, -shift, 0)


def saturate_to_mode(q, mode):
    """A signed ``q`` (32 or more bits) saturated to ``mode``'s range (``MODE_INT8``,
    ``MODE_RELU``, ``MODE_INT16``; the last, unused value is int8), as 16 bits.

    ``q`` fits n bits if its bits from n - 1 up are all equal: AND trees beside the
    result, where compares against the bounds the mode selects were 32-bit carry chains
    behind the mode register (issue 6)."""
    negative = q[-1]
    fits8 = q[7:].all() | ~q[7:].any()
    fits16 = q[15:].all() | ~q[15:].any()
    int8 = Mux(fits8, q[:16], Mux(negative, -128, 127))
    int16 = Mux(fits16, q[:16], Mux(negative, INT16_MIN, INT16_MAX))
    return Mux(mode == MODE_INT16, int16,
               Mux((mode == MODE_RELU) & negative, 0, int8))[:16].as_signed()


class RequantizerPort(wiring.Signature):
    """An element handed to a ``Requantizer`` past its first stage, and the result.

    A unit that borrows a requantizer it does not instantiate (``VectorAlu`` borrows the
    ``MatVecEngine``'s) has this member; whoever instantiates both connects it to the
    requantizer (``wiring.connect`` to ``MatVecEngine(lend_requantizer=True).requant``,
    or to ``Requantizer(lend=True).lent``). The borrower does the first stage itself,
    from its own registers, so the lend multiplexer sits between registers and the
    second stage: ``x`` is ``acc + bias`` and ``left``, ``right`` are ``split_shift``
    of the shift. There is no valid bit: the requantizer has a fixed latency, so the
    borrower tracks its own elements.

    Members
    -------
    x, multiplier : Out(signed(32)) ; left : Out(3) ; right : Out(5) ; mode : Out(2)
        One element as the requantizer's first-stage registers would hold it.
    out : In(signed(16))
        The result, ``Requantizer.latency - 1`` cycles after the element.
    """

    def __init__(self):
        super().__init__({
            "x": Out(signed(32)), "multiplier": Out(signed(32)), "left": Out(3),
            "right": Out(5), "mode": Out(2), "out": In(signed(16)),
        })


class Requantizer(wiring.Component):
    """TFLite ``MultiplyByQuantizedMultiplier`` (double rounding) as a 6- or 8-stage pipeline.

    Stages: add bias (wrap); saturating left shift; 32x32 multiply; doubling high half with
    TFLite's nudge (33 bits: ``INT32_MIN^2`` gives ``2^31``, which the last two stages
    treat as TFLite's saturated ``2^31 - 1``); rounding right shift; saturate. One result
    per cycle, no back-pressure. ``docs/numerics.md`` gives the formulas.

    Parameters
    ----------
    pipelined : bool
        Two more stages (``latency`` 8 instead of 6), for a faster clock: the product is
        formed from four partial products of the operands' 16-bit halves (signed high,
        unsigned low; one DSP each) in one stage and added up in the next, and the
        rounding shift computes its shifted value and rounding bit in one stage (its mask
        decoded a stage earlier) and adds them in the next.
    lend : bool
        Add the ``lend`` input and the ``lent`` port: another unit's elements enter the
        second stage in place of the first stage's (``MatVecEngine(lend_requantizer=True)``
        lends its requantizer to the ``VectorAlu``).

    Interface
    ---------
    clear : In(1)
        Drop every element in flight (clears only the valid bits, so the data registers
        need no reset and may sit inside DSP blocks).
    in_valid, acc, bias, multiplier, shift : In
        ``shift`` is in -31..7 (checked by the compiler, see ``golden.weights``).
    mode : In(2)
        Saturation of the result: ``MODE_INT8`` (-128..127), ``MODE_RELU`` (0..127),
        ``MODE_INT16`` (-32768..32767, the LSTM's Q3.12 gates). It travels down the
        pipeline with its element, so it may change every cycle.
    out_valid, out : Out
    lend : In(1)
        Only with ``lend``: sampled with the first stage's inputs; when high, the second
        stage takes ``lent``'s element in the next cycle instead of the first stage's
        (``in_valid`` must be low with it: the lent element carries no valid bit).
    lent : In(RequantizerPort)
        Only with ``lend``: the borrower's element, one cycle after ``lend``;
        ``lent.out`` is ``out``.
    """

    def __init__(self, *, pipelined: bool = False, lend: bool = False):
        if not isinstance(pipelined, bool):
            raise TypeError(f"Requantizer: pipelined must be a bool, got {pipelined!r}")
        if not isinstance(lend, bool):
            raise TypeError(f"Requantizer: lend must be a bool, got {lend!r}")
        self.pipelined = pipelined
        self.lending = lend
        lent = {"lend": In(1), "lent": In(RequantizerPort())} if lend else {}
        #: Cycles from ``in_valid`` to ``out_valid``.
        self.latency = PIPELINED_LATENCY if pipelined else LATENCY
        super().__init__({
            "clear": In(1), "in_valid": In(1), "acc": In(signed(32)), "bias": In(signed(32)),
            "multiplier": In(signed(32)), "shift": In(signed(8)), "mode": In(2),
            "out_valid": Out(1), "out": Out(signed(16)), **lent,
        })

    def elaborate(self, platform):
        m = Module()
        keep = ~self.clear
        # 1: bias, split the shift.
        v1 = Signal()
        x1 = Signal(signed(32))
        m1 = Signal(signed(32))
        left1 = Signal(3)
        right1 = Signal(5)
        mode1 = Signal(2)
        left, right = split_shift(self.shift)
        m.d.sync += [
            v1.eq(self.in_valid & keep),
            x1.eq(self.acc + self.bias),
            m1.eq(self.multiplier),
            left1.eq(left), right1.eq(right), mode1.eq(self.mode),
        ]
        if self.lending:
            # The lent element replaces stage 1's here, so both sides of the multiplexer
            # are registers (the borrower's product and shift split are its own).
            lend1 = Signal()
            m.d.sync += lend1.eq(self.lend)
            m.d.comb += self.lent.out.eq(self.out)
            x1, m1, left1, right1, mode1 = (
                Mux(lend1, getattr(self.lent, name), own) for name, own in (
                    ("x", x1), ("multiplier", m1), ("left", left1), ("right", right1),
                    ("mode", mode1)))
        # 2: saturating left shift. It fits in int32 if the bits from 31 up are all equal:
        # two 9-bit ANDs beside the shifter instead of two 40-bit compares (carry chains).
        v2 = Signal()
        x2 = Signal(signed(32))
        m2 = Signal(signed(32))
        right2 = Signal(5)
        wide = Signal(signed(40))
        top = wide[31:]
        m.d.comb += wide.eq(x1 << left1)
        m.d.sync += [
            v2.eq(v1 & keep), m2.eq(m1), right2.eq(right1),
            x2.eq(Mux(top.all() | ~top.any(), wide[:32],
                      Mux(x1[31], INT32_MIN, INT32_MAX))),
        ]
        # 3: full product. x2 and m2 feed the multipliers alone: a sign correction and an
        # INT32_MIN^2 compare beside them loaded them too (36 loads on m2's sign bit) when
        # m2 -> lh missed the ECP5 clock by 0.98 ns (issue 6).
        v3 = Signal()
        p3 = Signal(signed(64))
        right3 = Signal(5)
        if self.pipelined:
            # x m = xh mh 2^32 + (xl mh + xh ml) 2^16 + xl ml, with xh, mh the signed high
            # halves and xl, ml the unsigned low ones: each product is at most 17 x 16
            # signed bits (one MULT18X18D) and fits 32 (|xl mh|, |xh ml| < 2^31).
            xl, xh = x2[:16], x2[16:].as_signed()
            ml, mh = m2[:16], m2[16:].as_signed()
            ll = Signal(32, name="ll")
            lh, hl, hh = (Signal(signed(32), name=n) for n in ("lh", "hl", "hh"))
            v3a = Signal()
            right3a = Signal(5)
            m.d.sync += [
                v3a.eq(v2 & keep), right3a.eq(right2),
                ll.eq(xl * ml), lh.eq(xl * mh), hl.eq(xh * ml), hh.eq(xh * mh),
            ]
            m.d.sync += [
                v3.eq(v3a & keep), right3.eq(right3a),
                p3.eq(Cat(ll, hh).as_signed() + ((lh + hl) << 16)),
            ]
        else:
            m.d.sync += [v3.eq(v2 & keep), right3.eq(right2), p3.eq(x2 * m2)]
        # 4: doubling high half. TFLite nudges by 2^30 (1 - 2^30 below zero) and divides by
        # 2^31 truncating; both cases equal floor((p + 2^30) / 2^31), so one 34-bit add.
        # INT32_MIN^2 gives 2^31 where TFLite saturates to 2^31 - 1: kept in 33 bits, it
        # rounds to the same 2^(31 - right) for right >= 1 and saturates in every mode at
        # right = 0, so no flag is needed.
        v4 = Signal()
        h4 = Signal(signed(33))
        right4 = Signal(5)
        m.d.sync += [
            v4.eq(v3 & keep), right4.eq(right3),
            h4.eq(((p3 >> 30) + 1) >> 1),
        ]
        # 5: rounding divide by 2^right.
        v5 = Signal()
        q5 = Signal(signed(33))
        if self.pipelined:
            mask4 = Signal(32)
            m.d.sync += mask4.eq((1 << right3) - 1)
            v5a, up5a = Signal(), Signal()
            shifted5a = Signal(signed(33))
            m.d.sync += [v5a.eq(v4 & keep), shifted5a.eq(h4 >> right4),
                         up5a.eq(round_away_bit(h4, mask4))]
            m.d.sync += [v5.eq(v5a & keep), q5.eq(shifted5a + up5a)]
        else:
            m.d.sync += [v5.eq(v4 & keep),
                         q5.eq(rounding_divide_by_pot(m, h4, right4, name="rdbpot"))]
        # 6: saturate to the mode's range (the mode followed its element down the stages).
        modes = [Signal(2, name=f"mode{i}") for i in range(2, self.latency)]
        m.d.sync += modes[0].eq(mode1)
        m.d.sync += [modes[i].eq(modes[i - 1]) for i in range(1, len(modes))]
        m.d.sync += [
            self.out_valid.eq(v5 & keep),
            self.out.eq(saturate_to_mode(q5, modes[-1])),
        ]
        return m
