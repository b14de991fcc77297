"""Sigmoid and tanh by table lookup with linear interpolation (``docs/numerics.md``)."""

from __future__ import annotations

from amaranth import Cat, Module, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from golden.lstm import SEGMENT_BITS, SIGMOID_TABLE, TABLE_SEGMENTS, TANH_TABLE


class ActivationLut(wiring.Component):
    """int16 Q3.12 in, int16 Q0.15 out, one element per cycle, 3-cycle latency.

    ``y = T[s] + (((T[s+1] - T[s]) * t + 128) >> 8)`` with ``u = z + 32768``,
    ``s = u >> 8``, ``t = u & 255``: both table entries come from one ROM holding the
    sigmoid table then the tanh table (``golden.lstm``), read through two ports.

    Interface
    ---------
    in_valid, z : In ; func : In(1)
        ``func`` 0 is sigmoid, 1 is tanh.
    out_valid, y : Out
    """

    def __init__(self):
        super().__init__({"in_valid": In(1), "z": In(signed(16)), "func": In(1),
                          "out_valid": Out(1), "y": Out(signed(16))})

    def elaborate(self, platform):
        m = Module()
        n = TABLE_SEGMENTS + 1
        init = [int(v) for v in SIGMOID_TABLE] + [int(v) for v in TANH_TABLE]
        m.submodules.rom = rom = Memory(shape=signed(16), depth=2 * n, init=init)
        lo_port, hi_port = rom.read_port(), rom.read_port()

        u = Signal(unsigned(16))
        m.d.comb += u.eq(self.z.as_unsigned() ^ 0x8000)  # z + 32768 for int16 z
        seg = u[SEGMENT_BITS:]
        base = Signal(range(2 * n))
        m.d.comb += [
            base.eq(Cat(seg, 0) + self.func * n),
            lo_port.addr.eq(base),
            hi_port.addr.eq(base + 1),
        ]
        # 1: table reads.
        v1 = Signal()
        t1 = Signal(SEGMENT_BITS)
        m.d.sync += [v1.eq(self.in_valid), t1.eq(u[:SEGMENT_BITS])]
        # 2: slope times position.
        v2 = Signal()
        lo2 = Signal(signed(16))
        prod2 = Signal(signed(17 + SEGMENT_BITS + 1))
        m.d.sync += [v2.eq(v1), lo2.eq(lo_port.data),
                     prod2.eq((hi_port.data - lo_port.data) * t1)]
        # 3: round half up and add.
        half = 1 << (SEGMENT_BITS - 1)
        m.d.sync += [self.out_valid.eq(v2),
                     self.y.eq(lo2 + ((prod2 + half) >> SEGMENT_BITS))]
        return m
