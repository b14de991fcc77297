"""Element-wise int16 ALU for the LSTM cell and hidden-state updates (``docs/numerics.md``)."""

from __future__ import annotations

from amaranth import Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .fixed_point import rounding_parts, saturate
from .requantizer import (
    MODE_INT8,
    MODE_INT16,
    PIPELINED_LATENCY,
    RequantizerPort,
    split_shift,
)

#: Operations.
OP_MUL_RSHIFT = 0  #: sat(RoundingDivideByPOT(a * b, shift)), shift 0..31: f*c, i*g
OP_ADD = 1  #: sat(a + b): the new cell state
OP_SHIFT = 2  #: sat(a << shift) or RoundingDivideByPOT(a, -shift), shift -31..15
OP_MUL_REQUANT = 3  #: sat(MultiplyByQuantizedMultiplier(a * b, M, s)): h = o * tanh(c)

#: Latency of the requantizer ``requant`` must be connected to: the 8-stage ``Requantizer``
#: (``pipelined=True``, the processor's engine's).
REQUANTIZER_LATENCY = PIPELINED_LATENCY
#: The operand register, the product register (in place of the requantizer's first
#: stage), then the requantizer's other stages.
LATENCY = 1 + REQUANTIZER_LATENCY


class VectorAlu(wiring.Component):
    """One element per cycle, fixed ``LATENCY`` (9 cycles) for every operation.

    ``OP_MUL_REQUANT`` goes through a requantizer the ALU does not instantiate: it hands
    ``requant`` an element past the requantizer's first stage every cycle, from its own
    registers, and takes ``requant.out`` ``REQUANTIZER_LATENCY - 1`` cycles later. In the
    processor that is the matrix-vector engine's, lent while the engine is idle (the
    sequencer is blocking, so a vector instruction never overlaps a ``MATVEC``/``LSTM``);
    alone, connect a ``Requantizer(pipelined=True, lend=True)`` (``lend`` high) to it.

    Interface
    ---------
    in_valid, op, a, b, shift, multiplier, sat8 : In
        ``a``/``b`` are int16; ``shift`` is signed; ``multiplier`` and ``shift`` form the
        quantized multiplier for ``OP_MUL_REQUANT``. ``sat8`` saturates the result to int8
        instead of int16.
    out_valid, y : Out
        The result, ``LATENCY`` cycles after its operands.
    requant : Out(RequantizerPort)
        ``x`` = ``a x b``, ``multiplier``, ``left``/``right`` = ``split_shift(shift)``,
        ``mode`` int8 or int16 by ``sat8``, two cycles after the operands (for every
        operation; only ``OP_MUL_REQUANT`` uses the result), all straight from registers;
        ``out`` must be the requantizer's result for them, ``REQUANTIZER_LATENCY - 1``
        cycles later.
    """

    def __init__(self):
        super().__init__({
            "in_valid": In(1), "op": In(2), "a": In(signed(16)), "b": In(signed(16)),
            "shift": In(signed(8)), "multiplier": In(signed(32)), "sat8": In(1),
            "out_valid": Out(1), "y": Out(signed(16)),
            "requant": Out(RequantizerPort()),
        })

    def elaborate(self, platform):
        m = Module()
        rq = self.requant

        # 0: the operands registered. The scratch block RAM's output (5.8 ns clock-to-out
        # on the ECP5) then VREQ8's ``b`` mux then the DSP multiply in one cycle was the
        # processor's critical path.
        v0, sat8_0 = Signal(), Signal()
        op0 = Signal(2)
        a0, b0 = Signal(signed(16)), Signal(signed(16))
        sh0 = Signal(signed(8))
        mult0 = Signal(signed(32))
        m.d.sync += [
            v0.eq(self.in_valid), op0.eq(self.op), a0.eq(self.a), b0.eq(self.b),
            sh0.eq(self.shift), sat8_0.eq(self.sat8), mult0.eq(self.multiplier),
        ]
        # 1: the product (for MUL_REQUANT the requantizer's first stage with bias 0) and
        # apart from it the other operations' operand, the shift split and the controls,
        # all decoded beside the multiply so that the next stages start at registers. The
        # product goes straight into its register: a multiplexer behind the multiplier
        # missed the ECP5 clock (issue 6).
        prod1 = Signal(signed(32))  # |a * b| <= 2^30 fits int32
        other1 = Signal(signed(17))  # ADD's a + b, SHIFT's a
        mul1, sat8_1 = Signal(), Signal()
        mult1 = Signal(signed(32))
        mode1 = Signal(2)
        left1, right1 = Signal(4), Signal(5)  # a left shift is at most 15
        mask1 = Signal(32)
        shl1, plain1 = Signal(), Signal()
        left, right = split_shift(sh0)
        # MUL_RSHIFT's shift is a right shift; SHIFT's and MUL_REQUANT's split as the
        # requantizer does (ADD uses neither).
        right = Mux(op0 == OP_MUL_RSHIFT, sh0, right)[:5]
        ones = (1 << 32) - 1
        m.d.sync += [
            prod1.eq(a0 * b0), other1.eq(Mux(op0 == OP_ADD, a0 + b0, a0)),
            mul1.eq((op0 == OP_MUL_RSHIFT) | (op0 == OP_MUL_REQUANT)),
            sat8_1.eq(sat8_0), mult1.eq(mult0),
            mode1.eq(Mux(sat8_0, MODE_INT8, MODE_INT16)),
            # 2^right - 1 as a shifted constant: a decoder, not a 32-bit subtraction.
            left1.eq(left), right1.eq(right), mask1.eq(~(ones << right)),
            shl1.eq((op0 == OP_SHIFT) & (sh0 > 0)),
            plain1.eq((op0 == OP_ADD) | ((op0 == OP_SHIFT) & (sh0 == 0))),
        ]
        # MultiplyByQuantizedMultiplier goes through the requantizer from its second stage.
        m.d.comb += [
            rq.x.eq(prod1), rq.multiplier.eq(mult1), rq.left.eq(left1),
            rq.right.eq(right1), rq.mode.eq(mode1),
        ]
        # The other operations, in three stages (then they wait for the requantizer): the
        # shift (or the quotient and rounding bit of a right shift), the rounding add,
        # the saturation. One stage for all three was a 72-level path on the ECP5. Only a
        # right shift takes the product (MUL_RSHIFT's; SHIFT's takes a).
        quotient, round_up = rounding_parts(Mux(mul1, prod1, other1), right1, mask1)
        q2, up2, sat8_2 = Signal(signed(48)), Signal(), Signal()
        m.d.sync += [q2.eq(Mux(shl1, other1 << left1, Mux(plain1, other1, quotient))),
                     up2.eq(~shl1 & ~plain1 & round_up), sat8_2.eq(sat8_1)]
        s3, sat8_3 = Signal(signed(48)), Signal()
        m.d.sync += [s3.eq(q2 + up2), sat8_3.eq(sat8_2)]
        r4 = Signal(signed(16))
        m.d.sync += r4.eq(Mux(sat8_3, saturate(s3, -128, 127), saturate(s3, -32768, 32767)))
        delay = [Signal(signed(16), name=f"delay{i}") for i in range(LATENCY - 5)]
        ops = [Signal(2, name=f"op{i}") for i in range(1, LATENCY)]
        m.d.sync += [delay[0].eq(r4), ops[0].eq(op0)]
        m.d.sync += [delay[i].eq(delay[i - 1]) for i in range(1, len(delay))]
        m.d.sync += [ops[i].eq(ops[i - 1]) for i in range(1, len(ops))]
        # The valid bits travel here, not through the requantizer: a shared one also
        # carries its owner's elements.
        valid = [Signal(name=f"valid{i}") for i in range(1, LATENCY)]
        m.d.sync += [valid[0].eq(v0)] + [valid[i].eq(valid[i - 1])
                                         for i in range(1, len(valid))]
        m.d.comb += [
            self.out_valid.eq(valid[-1]),
            self.y.eq(Mux(ops[-1] == OP_MUL_REQUANT, rq.out, delay[-1])),
        ]
        return m
