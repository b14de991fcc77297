"""Sigmoid and tanh by table lookup with linear interpolation (``docs/numerics.md``)."""

from __future__ import annotations

from amaranth import C, Cat, Module, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from golden.lstm import SEGMENT_BITS, SIGMOID_TABLE, TABLE_SEGMENTS, TANH_TABLE

from .bram_outreg import NO_OUTREG

__all__ = ["LATENCY", "SLOPE_REGISTER_LATENCY", "ActivationLut"]

#: Cycles from an input (``in_valid``) to its result (``out_valid``): input register,
#: table read, entry register, multiply-add; or without the input register, table read,
#: entry register, multiply, add. ``ActivationLut(slope_register=True)`` takes one more,
#: the entry registered twice.
LATENCY, SLOPE_REGISTER_LATENCY = 4, 5


class ActivationLut(wiring.Component):
    """int16 Q3.12 in, int16 Q0.15 out, one element per cycle, ``latency`` (4 or 5) cycles.

    ``y = T[s] + (((T[s+1] - T[s]) * t + 128) >> 8)`` with ``u = z + 32768``,
    ``s = u >> 8``, ``t = u & 255``: two ROMs, read at the same address, hold ``T[s]`` and
    the slope ``T[s+1] - T[s]`` per segment, the sigmoid table's segments then the tanh
    table's (``golden.lstm``), so the read goes straight into the multiplier (no
    subtraction, no address adder).

    Parameters
    ----------
    input_register : bool
        Register the inputs before the table's address (default). Without it the inputs
        must come from flip-flops through at most one adder (the table's address is formed
        in the cycle of the read), and the cycle goes to the interpolation instead: the
        product and the add in a stage each.
    slope_register : bool
        Register the table entry twice (not by default; ``latency`` 5 instead of 4): the
        slope's first register moves into its block RAM as the value's does, and a second
        one in the fabric is the multiplier's operand, so neither the RAM's 5.83 ns
        clock-to-out nor the route from its column shares a cycle with the multiply
        (issue 6). The value and the position are delayed to match.

    Attributes
    ----------
    latency : int
        ``SLOPE_REGISTER_LATENCY`` with ``slope_register``, else ``LATENCY``.

    Interface
    ---------
    in_valid, z : In ; func : In(1)
        ``func`` 0 is sigmoid, 1 is tanh.
    out_valid, y : Out
        The result of the input ``latency`` cycles earlier; ``y`` holds it until the next
        result.
    """

    def __init__(self, *, input_register: bool = True, slope_register: bool = False):
        for name, value in (("input_register", input_register),
                            ("slope_register", slope_register)):
            if not isinstance(value, bool):
                raise TypeError(f"ActivationLut: {name} must be a bool, got {value!r}")
        self.input_register = input_register
        self.slope_register = slope_register
        self.latency = SLOPE_REGISTER_LATENCY if slope_register else LATENCY
        super().__init__({"in_valid": In(1), "z": In(signed(16)), "func": In(1),
                          "out_valid": Out(1), "y": Out(signed(16))})

    def elaborate(self, platform):
        m = Module()
        # Two ROMs, the values and the slopes: one 33-bit word would be a 36-bit wide
        # DP16KD, whose output register hw.bram_outreg takes for all its bits or none,
        # and the value's capture belongs in the RAM, the slope's near the multiplier
        # (issue 6).
        tables = (SIGMOID_TABLE, TANH_TABLE)
        values = [int(table[k]) for table in tables for k in range(TABLE_SEGMENTS)]
        slopes = [int(table[k + 1]) - int(table[k])
                  for table in tables for k in range(TABLE_SEGMENTS)]
        m.submodules.value_rom = value_rom = Memory(
            shape=signed(16), depth=2 * TABLE_SEGMENTS, init=values)
        m.submodules.slope_rom = slope_rom = Memory(
            shape=signed(17), depth=2 * TABLE_SEGMENTS, init=slopes)
        value_port, slope_port = value_rom.read_port(), slope_rom.read_port()

        # 0: the inputs registered. In the processor z comes from the scratch block RAM
        # or the engine's output through a multiplexer, and the table is another block
        # RAM: the two RAMs' clock-to-out and the routing between them in one cycle limited
        # the ECP5 clock (issue 6).
        if self.input_register:
            v0, func0 = Signal(), Signal()
            z0 = Signal(signed(16))
            m.d.sync += [v0.eq(self.in_valid), z0.eq(self.z), func0.eq(self.func)]
        else:
            v0, z0, func0 = self.in_valid, self.z, self.func
        u = Signal(unsigned(16))
        m.d.comb += u.eq(z0.as_unsigned() ^ 0x8000)  # z + 32768 for int16 z
        m.d.comb += [port.addr.eq(Cat(u[SEGMENT_BITS:], func0))
                     for port in (value_port, slope_port)]
        # 1: table read.
        v1 = Signal()
        t1 = Signal(SEGMENT_BITS)
        m.d.sync += [v1.eq(v0), t1.eq(u[:SEGMENT_BITS])]
        # 2: the entry registered, so the block RAM's slow clock-to-out and the multiplier
        # do not share a cycle. value2 is reset-less and the read data's only load, so
        # hw.bram_outreg moves it into its block RAM (about 1 ns clock-to-out instead of
        # 5.83 ns, issue 6). slope2, the multiplier's operand, stays in the fabric
        # (``no_outreg``): inside the RAM it started the multiply and add with the route
        # from the RAM's column, -2.81 ns (run m25) against -0.21 / -0.23 ns for the
        # RAM into the register and the register on (m24). With ``slope_register`` it
        # moves into the RAM too, and stage 2b is the multiplier's operand instead.
        v2 = Signal()
        t2 = Signal(SEGMENT_BITS)
        value2 = Signal(signed(16), reset_less=True)
        slope2 = Signal(signed(17), reset_less=True,
                        attrs={} if self.slope_register else {NO_OUTREG: 1})
        m.d.sync += [v2.eq(v1), t2.eq(t1), value2.eq(value_port.data),
                     slope2.eq(slope_port.data)]
        # 2b (``slope_register``): the entry again, in the fabric near the multiplier: the
        # RAM's clock-to-out into the fabric slope2 by the multiplier missed the ECP5 clock
        # in the LSTM cell's lookup, -0.74 ns on nextpnr seed 2 (issue 6).
        if self.slope_register:
            v2b = Signal()
            t2b = Signal(SEGMENT_BITS)
            value2b = Signal(signed(16), reset_less=True)
            slope2b = Signal(signed(17), reset_less=True)
            m.d.sync += [v2b.eq(v2), t2b.eq(t2), value2b.eq(value2), slope2b.eq(slope2)]
            v2, t2, value2, slope2 = v2b, t2b, value2b, slope2b
        # The value is kept scaled, with the rounding half below it: ``T[s] * 256 + 128``
        # is a concatenation (its low 8 bits are free), so stage 3 is one multiply and
        # one add, and ``(slope * t + T[s] * 256 + 128) >> 8`` equals ``T[s] + ((slope *
        # t + 128) >> 8)`` exactly (an arithmetic shift floors, and T[s] * 256 is a
        # multiple of 256).
        half = 1 << (SEGMENT_BITS - 1)
        lo2 = Cat(C(half, SEGMENT_BITS), value2).as_signed()
        # 3: slope times position, plus the scaled value, rounded. Only the sum's bits
        # from SEGMENT_BITS - 1 (the rounding half) up to y's top are formed: below it
        # lo2 is zero, so the product's low bits carry nothing into the result, and the
        # adder behind the multiplier is a 17-bit carry chain instead of a 26-bit one
        # (issue 6). Without the input register the product is registered first, and
        # the add is a stage 4. y holds between results.
        top = SEGMENT_BITS - 1
        width = 1 + 16  # the rounding half, then y
        v3 = v2
        product, lo = (slope2 * t2)[top:top + width], lo2[top:top + width]
        if not self.input_register:
            v3 = Signal()
            product3, lo3 = Signal(width), Signal(width)
            m.d.sync += [v3.eq(v2), product3.eq(product), lo3.eq(lo)]
            product, lo = product3, lo3
        m.d.sync += self.out_valid.eq(v3)
        with m.If(v3):
            m.d.sync += self.y.eq((product + lo)[1:])
        return m
