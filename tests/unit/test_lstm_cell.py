"""LSTM cell unit against ``golden.lstm``, bit for bit, for every cell format."""

import numpy as np
import pytest
from amaranth import Module, Signal, signed
from amaranth.sim import Simulator

from golden.lstm import CELL_FRAC_BITS_RANGE, cell_to_q3_12, cell_update, tanh_q15
from golden.numerics import requantize_to_int8
from hw.lstm_cell import H_LATENCY, LstmCell, _saturating_left_shift
from sim import toolchain

EXTREMES = (-32768, 32767, 0, -1, 1)


def golden_cell(i, f, g, o, c, n, mult, shift):
    c_new = cell_update(f, c, i, g, n)
    t = tanh_q15(cell_to_q3_12(c_new, n))
    return requantize_to_int8(o * t, mult, shift), c_new


def run_cell(gates, c, n, mult, shift, gaps):
    """Feed ``gates`` [H, 4] with ``gaps[k]`` idle cycles before gate ``k`` (and one
    after the reset, as the cell requires); return the writes as
    ``{(is_cell, index): value}`` and the cycle of the last write after the last gate."""
    dut = LstmCell()
    writes, last = {}, {}

    async def bench(ctx):
        ctx.set(dut.cell_frac_bits, n)
        ctx.set(dut.multiplier, mult)
        ctx.set(dut.shift, shift)
        stream = [None]
        for k, v in enumerate(gates.reshape(-1)):
            stream += [None] * int(gaps[k]) + [int(v)]
        stream += [None] * 20
        read = 0  # the synchronous read port's data, registered by the caller next
        for cycle, v in enumerate(stream):
            ctx.set(dut.in_valid, v is not None)
            ctx.set(dut.y, 0 if v is None else v)
            index = ctx.get(dut.c_index)
            # The processor's tail counts on it: h' comes exactly the cycle after c'.
            h_write = ctx.get(dut.w_en) and not ctx.get(dut.w_cell)
            assert h_write == last.get("c_write", False), f"cycle {cycle}"
            last["c_write"] = bool(ctx.get(dut.w_cell))
            if ctx.get(dut.w_en):
                key = (ctx.get(dut.w_cell), ctx.get(dut.w_index))
                assert key not in writes, f"{key} written twice"
                writes[key] = ctx.get(dut.w_data)
                last["cycle"] = cycle
            if v is not None:
                last["gate"] = cycle
            await ctx.tick()
            ctx.set(dut.c_data, read)  # the read data registered
            read = int(c[index]) if index < len(c) else 0  # synchronous read

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return writes, last["cycle"] - last["gate"]


@pytest.mark.parametrize("n", list(CELL_FRAC_BITS_RANGE))
def test_cell_matches_golden_for_every_cell_format(n):
    rng = np.random.default_rng(n)
    H = 24
    gates = rng.integers(-32768, 32768, (H, 4))
    gates[:, (0, 1, 3)] = rng.integers(0, 32768, (H, 3))  # sigmoid range, mostly
    gates[:len(EXTREMES)] = np.array(EXTREMES)[:, None]  # full int16 extremes too
    gates[5] = (32767, 32767, 32767, -32768)
    c = rng.integers(-32768, 32768, H)
    c[:len(EXTREMES)] = EXTREMES
    mult = int(rng.integers(1 << 30, 1 << 31))
    shift = int(rng.integers(-31, 8))
    gaps = rng.choice([0, 0, 0, 1, 3, 9], gates.size)
    writes, _ = run_cell(gates, c, n, mult, shift, gaps)
    h_ref, c_ref = golden_cell(*gates.T.astype(np.int64), c.astype(np.int64), n, mult, shift)
    assert len(writes) == 2 * H
    h = np.array([writes[(0, j)] for j in range(H)]).astype(np.uint16).view(np.int16)
    c_new = np.array([writes[(1, j)] for j in range(H)]).astype(np.uint16).view(np.int16)
    np.testing.assert_array_equal(c_new, c_ref)
    np.testing.assert_array_equal(h, h_ref)


def test_constant_extremes_and_back_to_back_latency():
    """Zero multiplier and both shift limits; with no gaps the last ``h'`` follows the
    last gate (``o``) by ``H_LATENCY`` cycles, after any spacing by at most that."""
    rng = np.random.default_rng(99)
    H = 8
    gates = rng.integers(-32768, 32768, (H, 4))
    c = rng.integers(-32768, 32768, H)
    for mult, shift in ((0, 0), ((1 << 31) - 1, 7), (1 << 30, -31)):
        for gaps in (np.zeros(4 * H, int), rng.choice([0, 5, 20], 4 * H)):
            writes, tail = run_cell(gates, c, 12, mult, shift, gaps)
            h_ref, c_ref = golden_cell(*gates.T.astype(np.int64), c.astype(np.int64), 12,
                                       mult, shift)
            h = np.array([writes[(0, j)] for j in range(H)]).astype(np.uint16).view(np.int16)
            np.testing.assert_array_equal(h, h_ref)
            np.testing.assert_array_equal([writes[(1, j)] for j in range(H)], c_ref)
            assert tail <= H_LATENCY
            if not gaps.any():
                assert tail == H_LATENCY


def test_each_unit_takes_its_own_c_at_the_fastest_rate():
    """``c`` is read a unit ahead of the gates: with every gate back to back (one per
    cycle, as the engine delivers one-word rows) and every unit's ``c`` different, a read
    a unit behind or ahead would give some unit a neighbour's ``c'`` and ``h'``."""
    H = 12
    gates = np.tile([0, 32767, 0, 32767], (H, 1))  # c' = c (f = 1 - 2^-15, i g = 0)
    gates[::3, 0] = 20000  # and a few units with i g too
    gates[::3, 2] = -15000
    c = np.linspace(-3000, 3000, H).astype(np.int64)
    n = 12  # c in Q3.12: tanh of about -0.73..0.73, unsaturated
    mult, shift = 1 << 30, -22  # o t (Q0.30) / 2^23: h' within int8
    writes, tail = run_cell(gates, c, n, mult, shift, np.zeros(4 * H, int))
    h_ref, c_ref = golden_cell(*gates.T.astype(np.int64), c, n, mult, shift)
    assert len(set(c_ref.tolist())) == H and len(set(h_ref.tolist())) == H
    np.testing.assert_array_equal([writes[(1, j)] for j in range(H)], c_ref)
    np.testing.assert_array_equal([writes[(0, j)] for j in range(H)], h_ref)
    assert tail == H_LATENCY


def test_verilog_name():
    text = toolchain.generate_verilog(LstmCell(), "lstm_cell")
    assert any(line.startswith("module lstm_cell(") for line in text.splitlines())


def test_t_and_o_join_in_either_order():
    """Units alternate: ``o`` right after ``g`` (``o`` waits for ``t``), then ``o`` 20
    cycles late (``t`` waits for ``o``), each next unit's gates right after: the product
    takes each unit's own ``o`` and ``t`` from their held registers."""
    rng = np.random.default_rng(31)
    H = 10
    gates = rng.integers(-32768, 32768, (H, 4))
    c = rng.integers(-32768, 32768, H)
    gaps = np.zeros((H, 4), int)
    gaps[1::2, 3] = 20
    mult, shift = 1 << 30, -23  # o t (Q0.30) / 2^24: h' within int8
    writes, _ = run_cell(gates, c, 12, mult, shift, gaps.reshape(-1))
    h_ref, c_ref = golden_cell(*gates.T.astype(np.int64), c.astype(np.int64), 12, mult, shift)
    assert len(set(h_ref.tolist())) > H // 2
    np.testing.assert_array_equal([writes[(1, j)] for j in range(H)], c_ref)
    np.testing.assert_array_equal([writes[(0, j)] for j in range(H)], h_ref)


@pytest.mark.parametrize("left", range(5))
def test_saturating_left_shift_at_its_edges(left):
    """The Q3.12 conversion's left shift (``n = 12 - left``) without compares: the largest
    and smallest ``c'`` that fit after the shift, and one past each (saturated)."""
    edge = 1 << (15 - left)
    cs = [c for c in (edge - 1, edge, -edge, -edge - 1, 32767, -32768, 0, -1)
          if -32768 <= c <= 32767]
    x, shift, out = Signal(signed(16)), Signal(3), Signal(signed(16))
    m = Module()
    m.d.comb += out.eq(_saturating_left_shift(x, shift))
    got = []

    async def bench(ctx):
        ctx.set(shift, left)
        for c in cs:
            ctx.set(x, c)
            got.append(ctx.get(out))

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    np.testing.assert_array_equal(got, cell_to_q3_12(cs, 12 - left))
    if left:  # one past each edge saturates, the edge itself does not
        assert got[:4] == [(edge - 1) << left, 32767, -32768, -32768]
        assert -edge << left == -32768 and got[0] < 32767


@pytest.mark.parametrize("n", (13, 14, 15))
def test_q3_12_rounding_at_its_edges(n):
    """The right shift's round-up bit, added in the tanh lookup's address: ``c'`` at half
    an output step and one below (rounded up and down, away from zero below 0), with
    ``h'`` about ``t / 4`` so one step of the Q3.12 input shows in ``h'``."""
    half = 1 << (n - 13)
    cs = [sign * (q * 2 * half + half - below)
          for q in range(4) for sign in (1, -1) for below in (0, 1)]
    gates = np.tile([0, 32767, 0, 32767], (len(cs), 1))  # c' = c (f = 1 - 2^-15, i g = 0)
    c = np.array(cs, dtype=np.int64)
    mult, shift = 1 << 30, -16  # o t (Q0.30) / 2^17: h' about t / 4
    writes, _ = run_cell(gates, c, n, mult, shift, np.zeros(gates.size, int))
    h_ref, c_ref = golden_cell(*gates.T.astype(np.int64), c, n, mult, shift)
    np.testing.assert_array_equal([writes[(1, j)] for j in range(len(cs))], c)
    np.testing.assert_array_equal([writes[(0, j)] for j in range(len(cs))], h_ref)
    # Each pair at a rounding edge and one below differs (rounded apart) in h'.
    assert all(h_ref[k] != h_ref[k + 1] for k in range(0, len(cs), 2))
