"""VectorAlu against the golden LSTM element operations, with bubbles and mixed ops.

The ALU borrows its requantizer (``VectorAlu.requant``); ``AluWithRequantizer`` connects
it to a ``Requantizer`` of its own, as a unit alone would be built. In the processor it
is the engine's, shared (``tests/unit/test_processor.py``).
"""

import numpy as np
from amaranth import Module
from amaranth.lib import wiring
from amaranth.sim import Simulator

from golden.lstm import cell_to_q3_12, cell_update, q15_to_int8
from golden.numerics import (
    multiply_by_quantized_multiplier,
    quantize_multiplier,
    rounding_divide_by_pot,
    saturate,
)
from hw.requantizer import Requantizer
from hw.vector_alu import (
    LATENCY,
    OP_ADD,
    OP_MUL_REQUANT,
    OP_MUL_RSHIFT,
    OP_SHIFT,
    REQUANTIZER_LATENCY,
    VectorAlu,
)


_INPUTS = ("in_valid", "op", "a", "b", "shift", "multiplier", "sat8")


class AluWithRequantizer(wiring.Component):
    """``VectorAlu`` with its ``requant`` port on a ``Requantizer`` of its own (whose
    ``in_valid`` stays low: the ALU's ``out_valid`` must not need it, and ``lend`` high).
    Ports: the ALU's, without ``requant``."""

    def __init__(self):
        self.alu = VectorAlu()
        super().__init__({name: member for name, member in self.alu.signature.members.items()
                          if name != "requant"})

    def elaborate(self, platform):
        m = Module()
        m.submodules.alu = alu = self.alu
        # The engine's kind, lent for good.
        m.submodules.requantizer = rq = Requantizer(pipelined=True, lend=True)
        assert rq.latency == REQUANTIZER_LATENCY
        m.d.comb += rq.lend.eq(1)
        wiring.connect(m, alu.requant, rq.lent)
        m.d.comb += [getattr(alu, name).eq(getattr(self, name)) for name in _INPUTS]
        m.d.comb += [self.out_valid.eq(alu.out_valid), self.y.eq(alu.y)]
        return m


def reference(op, a, b, shift, mult, sat8):
    lo, hi = (-128, 127) if sat8 else (-32768, 32767)
    if op == OP_MUL_RSHIFT:
        v = rounding_divide_by_pot(a * b, shift)
    elif op == OP_ADD:
        v = a + b
    elif op == OP_SHIFT:
        v = saturate(a << shift, -(1 << 31), (1 << 31) - 1) if shift >= 0 else \
            rounding_divide_by_pot(a, -shift)
    else:
        v = multiply_by_quantized_multiplier(a * b, mult, shift)
    return int(saturate(v, lo, hi))


def run_timed(items):
    """items: (op, a, b, shift, mult, sat8) or None for a bubble; returns (cycle, output)
    pairs in order, ``cycle`` counting from the first item's."""
    dut = AluWithRequantizer()
    out = []

    async def tb(ctx):
        for k, item in enumerate(list(items) + [None] * (LATENCY + 1)):
            if item is None:
                ctx.set(dut.in_valid, 0)
            else:
                op, a, b, sh, mult, sat8 = item
                for port, v in ((dut.op, op), (dut.a, a), (dut.b, b), (dut.shift, sh),
                                (dut.multiplier, mult), (dut.sat8, sat8)):
                    ctx.set(port, int(v))
                ctx.set(dut.in_valid, 1)
            await ctx.tick()
            if ctx.get(dut.out_valid):
                out.append((k + 1, ctx.get(dut.y)))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    return out


def run(items):
    """Outputs of ``run_timed`` without their cycles."""
    return [y for _, y in run_timed(items)]


def test_every_operation_has_the_fixed_latency():
    """Back-to-back mixed operations with bubbles: each result LATENCY cycles after its
    operands (the processor's cycle model counts on it), whatever its neighbours are."""
    rng = np.random.default_rng(11)
    items = []
    for k in range(40):
        op = k % 4
        shift = {OP_MUL_RSHIFT: 3, OP_ADD: 0, OP_SHIFT: -2, OP_MUL_REQUANT: -1}[op]
        a, b = (int(v) for v in rng.integers(-300, 300, 2))
        items.append((op, a, b, shift, 1 << 30, 0))
        if k % 7 == 3:
            items.append(None)
    issued = [k for k, item in enumerate(items) if item is not None]
    got = run_timed(items)
    assert [cycle for cycle, _ in got] == [k + LATENCY for k in issued]
    assert [y for _, y in got] == [reference(*i) for i in items if i is not None]


def test_random_mixed_operations_bit_exact():
    rng = np.random.default_rng(4)
    items = []
    for _ in range(1500):
        op = int(rng.integers(0, 4))
        a, b = (int(v) for v in rng.integers(-32768, 32768, 2))
        sat8 = int(rng.random() < 0.5)
        mult, shift = int(rng.integers(1 << 30, 1 << 31)), 0
        if op == OP_MUL_RSHIFT:
            shift = int(rng.integers(0, 32))
        elif op == OP_SHIFT:
            shift = int(rng.integers(-31, 16))
        elif op == OP_MUL_REQUANT:
            shift = int(rng.integers(-31, 1))
        items.append((op, a, b, shift, mult, sat8))
        if rng.random() < 0.2:
            items.append(None)
    want = [reference(*i) for i in items if i is not None]
    assert run(items) == want


def test_lstm_cell_and_hidden_sequence():
    """The exact op sequence of a cell update, Q3.12 conversion, o*tanh(c) and q15->int8."""
    rng = np.random.default_rng(8)
    n = 64
    f, i, o = (rng.integers(0, 32768, n) for _ in range(3))
    g, t = (rng.integers(-32768, 32768, n) for _ in range(2))
    c = rng.integers(-32768, 32768, n)
    for frac in (11, 12, 13):
        fc = run([(OP_MUL_RSHIFT, f[k], c[k], 15, 0, 0) for k in range(n)])
        ig = run([(OP_MUL_RSHIFT, i[k], g[k], 30 - frac, 0, 0) for k in range(n)])
        c2 = run([(OP_ADD, fc[k], ig[k], 0, 0, 0) for k in range(n)])
        np.testing.assert_array_equal(c2, cell_update(f, c, i, g, frac))
        t_in = run([(OP_SHIFT, c2[k], 0, 12 - frac, 0, 0) for k in range(n)])
        np.testing.assert_array_equal(t_in, cell_to_q3_12(np.array(c2), frac))
    mult, shift = quantize_multiplier(2.0 ** -30 / (1 / 127))
    h = run([(OP_MUL_REQUANT, o[k], t[k], shift, mult, 1) for k in range(n)])
    want = saturate(multiply_by_quantized_multiplier(o * t, mult, shift), -128, 127)
    np.testing.assert_array_equal(h, want)
    q = run([(OP_SHIFT, t[k], 0, -8, 0, 1) for k in range(n)])
    np.testing.assert_array_equal(q, q15_to_int8(t))


#: Every shift each operation allows (``docs/numerics.md``).
SHIFTS = {OP_MUL_RSHIFT: range(0, 32), OP_ADD: range(0, 1), OP_SHIFT: range(-31, 16),
          OP_MUL_REQUANT: range(-31, 8)}


def test_every_operation_and_shift_with_random_operands():
    """Each operation with each of its shifts, 10 random operand pairs each (one of them
    the int16 extremes, one with multiplier 0, the others of random magnitudes), both
    saturations, shuffled into one back-to-back stream: results bit-exact with the golden
    numerics. MUL_REQUANT's left shifts saturate the product or not."""
    rng = np.random.default_rng(5)
    items = []
    for op, shifts in SHIFTS.items():
        for shift in shifts:
            for k in range(10):
                # Random magnitudes (2^0..2^15), so that results land inside the
                # saturation bounds as well as on them.
                a, b = ((-32768, -32768) if k == 0 else
                        (int(rng.integers(-(1 << e), 1 << e))
                         for e in rng.integers(0, 16, 2)))
                mult = 0 if k == 1 else int(rng.integers(1 << 30, 1 << 31))
                items.append((op, a, b, shift, mult, k % 2))
    order = rng.permutation(len(items))
    items = [items[i] for i in order]
    got = run(items)
    want = [reference(*i) for i in items]
    assert got == want
    # The stream reaches both saturation bounds, and MUL_REQUANT's left shifts give
    # results inside them too.
    assert {-128, 127, -32768, 32767} <= set(want)
    inside = [y for i, y in zip(items, want) if i[0] == OP_MUL_REQUANT and i[3] > 0
              and y != 0 and abs(y) < (127 if i[5] else 32767)]
    assert len(inside) >= 10


def _int16_factors(p):
    """``(a, b)``, both int16, with ``a * b == p``, or None."""
    for b in range(1, 1 << 15):
        if p % b == 0 and -(1 << 15) <= p // b < 1 << 15:
            return p // b, b
    return (-(1 << 15), -(1 << 15)) if p == 1 << 30 else None


def test_right_shifts_round_at_the_half_and_one_below():
    """Every right shift with its remainder exactly half (rounds away from zero), one
    below and one above it, of both signs: the rounding mask ``2^shift - 1`` at its edge.
    MUL_RSHIFT shifts the product; SHIFT shifts ``a``, with a ``b`` that would change
    the product."""
    items, halves = [], set()
    for shift in range(1, 32):
        half = 1 << (shift - 1)
        for p in (half, half - 1, half + 1, 3 * half):
            for value in (p, -p):
                if abs(value) < 1 << 15:
                    items.append((OP_SHIFT, value, 12345, -shift, 0, 0))
                factors = _int16_factors(value)
                if factors is not None:
                    items.append((OP_MUL_RSHIFT, *factors, shift, 0, 0))
                    halves.add((shift, p == half))
    assert {(shift, True) for shift in range(1, 32)} <= halves
    assert len(items) > 200
    assert run(items) == [reference(*i) for i in items]
