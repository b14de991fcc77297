"""Element-wise int16 ALU for the LSTM cell and hidden-state updates (``docs/numerics.md``)."""

from __future__ import annotations

from amaranth import Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .fixed_point import rounding_parts, saturate
from .requantizer import MODE_INT8, MODE_INT16, Requantizer

#: Operations.
OP_MUL_RSHIFT = 0  #: sat(RoundingDivideByPOT(a * b, shift)), shift 0..31: f*c, i*g
OP_ADD = 1  #: sat(a + b): the new cell state
OP_SHIFT = 2  #: sat(a << shift) or RoundingDivideByPOT(a, -shift), shift -31..15
OP_MUL_REQUANT = 3  #: sat(MultiplyByQuantizedMultiplier(a * b, M, s)): h = o * tanh(c)

LATENCY = 7  # the requantizer's six stages behind the operand stage


class VectorAlu(wiring.Component):
    """One element per cycle, fixed 7-cycle latency for every operation.

    Interface
    ---------
    in_valid, op, a, b, shift, multiplier, sat8 : In
        ``a``/``b`` are int16; ``shift`` is signed; ``multiplier`` and ``shift`` form the
        quantized multiplier for ``OP_MUL_REQUANT``. ``sat8`` saturates the result to int8
        instead of int16.
    out_valid, y : Out
    """

    def __init__(self):
        super().__init__({
            "in_valid": In(1), "op": In(2), "a": In(signed(16)), "b": In(signed(16)),
            "shift": In(signed(8)), "multiplier": In(signed(32)), "sat8": In(1),
            "out_valid": Out(1), "y": Out(signed(16)),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.requantizer = rq = Requantizer()

        # 1: the operand stage (|a * b| <= 2^30 fits int32).
        v1, sat8 = Signal(), Signal()
        op1 = Signal(2)
        p1 = Signal(signed(32))
        sh1 = Signal(signed(8))
        mult1 = Signal(signed(32))
        m.d.sync += [
            v1.eq(self.in_valid), op1.eq(self.op), sh1.eq(self.shift), sat8.eq(self.sat8),
            mult1.eq(self.multiplier),
            p1.eq(Mux(self.op == OP_ADD, self.a + self.b,
                  Mux(self.op == OP_SHIFT, self.a, self.a * self.b))),
        ]
        # MultiplyByQuantizedMultiplier goes through the requantizer (bias 0).
        m.d.comb += [
            rq.in_valid.eq(v1), rq.acc.eq(p1), rq.bias.eq(0),
            rq.multiplier.eq(mult1), rq.shift.eq(sh1),
            rq.mode.eq(Mux(sat8, MODE_INT8, MODE_INT16)),
        ]
        # The other operations, in three stages (then they wait for the requantizer): the
        # shift (or the quotient and rounding bit of a right shift), the rounding add,
        # the saturation. One stage for all three was a 72-level path on the ECP5.
        right, mask = Signal(5), Signal(32)
        m.d.comb += [right.eq(Mux(op1 == OP_SHIFT, -sh1, sh1)), mask.eq((1 << right) - 1)]
        quotient, round_up = rounding_parts(p1, right, mask)
        left = (op1 == OP_SHIFT) & (sh1 > 0)
        plain = (op1 == OP_ADD) | ((op1 == OP_SHIFT) & (sh1 == 0))
        q2, up2, sat8_2 = Signal(signed(48)), Signal(), Signal()
        m.d.sync += [q2.eq(Mux(left, p1 << sh1[:4], Mux(plain, p1, quotient))),
                     up2.eq(~left & ~plain & round_up), sat8_2.eq(sat8)]
        s3, sat8_3 = Signal(signed(48)), Signal()
        m.d.sync += [s3.eq(q2 + up2), sat8_3.eq(sat8_2)]
        r4 = Signal(signed(16))
        m.d.sync += r4.eq(Mux(sat8_3, saturate(s3, -128, 127), saturate(s3, -32768, 32767)))
        delay = [Signal(signed(16), name=f"delay{i}") for i in range(LATENCY - 4)]
        ops = [Signal(2, name=f"op_delay{i}") for i in range(LATENCY - 1)]
        m.d.sync += [delay[0].eq(r4), ops[0].eq(op1)]
        m.d.sync += [delay[i].eq(delay[i - 1]) for i in range(1, len(delay))]
        m.d.sync += [ops[i].eq(ops[i - 1]) for i in range(1, len(ops))]
        m.d.comb += [
            self.out_valid.eq(rq.out_valid),
            self.y.eq(Mux(ops[-1] == OP_MUL_REQUANT, rq.out, delay[-1])),
        ]
        return m
