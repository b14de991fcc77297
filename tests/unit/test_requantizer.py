# amaranth: UnusedElaboratable=no
"""Requantizer (``hw/requantizer.py``) in the Amaranth simulator, bit-exact against
``golden.numerics`` and a few hand-worked values, with the exact latency (6 cycles, 8 when
pipelined) and bubbles."""

import itertools
import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from golden.numerics import (
    INT32_MAX,
    INT32_MIN,
    multiply_by_quantized_multiplier,
    requantize_to_int8,
    saturate,
    wrap_int32,
)
from hw.requantizer import Requantizer

#: Clock edges from in_valid to out_valid (one register per stage), by ``pipelined``.
LATENCY = {False: 6, True: 8}


@pytest.fixture(params=[False, True], ids=["6-stage", "8-stage"])
def pipelined(request):
    return request.param


def golden(acc, bias, mult, shift):
    return int(requantize_to_int8(wrap_int32(acc + bias), mult, shift))


def run(inputs, mode, pipelined, clear_at=None):
    """Present ``inputs`` (None = bubble, else (acc, bias, mult, shift)) one per cycle,
    with ``clear`` high alongside input ``clear_at``, then flush; return (out_valid, out)
    after every edge."""
    dut = Requantizer(pipelined=pipelined)
    assert dut.latency == LATENCY[pipelined]
    seen = []
    script = list(inputs) + [None] * (dut.latency + 2)

    async def tb(ctx):
        ctx.set(dut.mode, mode)
        for k, item in enumerate(script):
            ctx.set(dut.clear, int(k == clear_at))
            if item is None:
                # Garbage on the data ports during a bubble must not matter.
                ctx.set(dut.in_valid, 0)
                ctx.set(dut.acc, INT32_MIN)
                ctx.set(dut.multiplier, INT32_MIN)
            else:
                acc, bias, mult, shift = item
                ctx.set(dut.in_valid, 1)
                ctx.set(dut.acc, acc)
                ctx.set(dut.bias, bias)
                ctx.set(dut.multiplier, mult)
                ctx.set(dut.shift, shift)
            await ctx.tick()
            seen.append((ctx.get(dut.out_valid), ctx.get(dut.out)))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    return script, seen


def check(inputs, pipelined, expected=None, mode=0):
    """Every output must appear exactly LATENCY edges after its input, equal to the reference."""
    script, seen = run(inputs, mode, pipelined)
    for j, (valid, out) in enumerate(seen):
        i = j - (LATENCY[pipelined] - 1)  # seen[j] is after edge j+1; input i was presented before edge i+1
        src = script[i] if i >= 0 else None
        assert valid == (src is not None), f"edge {j + 1}: out_valid={valid}, input {i} was {src}"
        if src is not None:
            want = golden(*src) if expected is None else expected[i]
            assert out == want, f"requant{src}: expected {want}, got {out}"


def test_random_with_bubbles(pipelined):
    rng = random.Random(2024)
    inputs = []
    for _ in range(500):
        if rng.random() < 0.25:
            inputs.append(None)
            continue
        kind = rng.random()
        if kind < 0.5:  # typical: output lands inside int8 often
            acc = rng.randint(-(1 << 22), 1 << 22)
            bias = rng.randint(-(1 << 16), 1 << 16)
            mult = rng.randint(1 << 30, INT32_MAX)
            shift = rng.randint(-24, -8)
        else:  # anything the port allows (multiplier any int32)
            acc = rng.randint(INT32_MIN, INT32_MAX)
            bias = rng.randint(INT32_MIN, INT32_MAX)
            mult = rng.choice([0, rng.randint(1 << 30, INT32_MAX), rng.randint(INT32_MIN, INT32_MAX)])
            shift = rng.randint(-31, 7)
        inputs.append((acc, bias, mult, shift))
    check(inputs, pipelined)


def test_edge_grid(pipelined):
    # Wrapping bias add, multiplier extremes (0, 2^30, 2^31-1, negatives incl. INT32_MIN
    # for the SRDHM overflow case) and shifts from full right to saturating left.
    accs = [INT32_MIN, INT32_MIN + 1, -1, 0, 1, INT32_MAX]
    biases = [INT32_MIN, -1, 0, 1, INT32_MAX]
    mults = [0, 1 << 30, (1 << 30) + 1, INT32_MAX, INT32_MIN, -(1 << 30)]
    shifts = [-31, -30, -1, 0, 1, 7]
    check(list(itertools.product(accs, biases, mults, shifts)), pipelined)


def test_hand_worked_values(pipelined):
    # Independent of golden: values worked out from docs/numerics.md by hand.
    # SRDHM(a, M) = floor(a*M / 2^31 + 1/2): TFLite's nudge and C truncation round exact ties
    # toward +infinity (so -1.5 -> -1); RoundingDivideByPOT rounds ties away from zero.
    M = 1 << 30  # 0.5
    cases = [
        # SRDHM(x, 2^30) ties: 1.5 -> 2, -1.5 -> -1, 0.5 -> 1, -0.5 -> 0
        ((3, 0, M, 0), 2), ((-3, 0, M, 0), -1), ((1, 0, M, 0), 1), ((-1, 0, M, 0), 0),
        # RoundingDivideByPOT ties: SRDHM(6, 2^30) = 3, 3 / 2 = 1.5 -> 2 (and -2)
        ((6, 0, M, -1), 2), ((-6, 0, M, -1), -2), ((12, 0, M, -2), 2), ((-12, 0, M, -2), -2),
        # double rounding: 5 * 0.25 = 1.25, but SRDHM gives 3 (2.5 up), then 3 / 2 -> 2;
        # -5: SRDHM -2 (-2.5 up), -2 / 2 = -1
        ((5, 0, M, -1), 2), ((-5, 0, M, -1), -1),
        # below a tie rounds to nearest
        ((10, 0, M, -2), 1), ((-10, 0, M, -2), -1),
        # bias is added before scaling, with 32-bit wrap: INT32_MAX + 1 -> INT32_MIN;
        # SRDHM(INT32_MIN, 2^30) = -2^30, RDBPOT(-2^30, 31) = -0.5 -> -1
        ((INT32_MAX, 1, M, -31), -1), ((INT32_MAX, 1, INT32_MAX, -24), -128),
        ((100, -100, INT32_MAX, 7), 0), ((50, 50, M, 0), 50),
        # INT32_MIN * INT32_MIN saturates SRDHM to INT32_MAX; INT32_MAX / 2^31 rounds to 1
        ((INT32_MIN, 0, INT32_MIN, 0), 127), ((INT32_MIN, 0, INT32_MIN, -31), 1),
        ((0, INT32_MIN, INT32_MIN, -31), 1),
        # left shift saturates to int32 before the multiply: 2^28 << 7 -> INT32_MAX, * 0.5
        ((1 << 28, 0, M, 7), 127), ((1 << 27, 0, INT32_MAX, 7), 127),
        ((1 << 28, 0, INT32_MAX, -24), 16), ((1 << 28, 0, M, -21), 64), ((-(1 << 28), 0, M, -21), -64),
        # multiplier 0 gives 0 whatever the input
        ((INT32_MAX, 0, 0, 7), 0), ((INT32_MIN, 0, 0, 7), 0),
        # int8 saturation, and the tie toward +infinity just inside it
        ((200, 0, M, 0), 100), ((-400, 0, M, 0), -128), ((254, 0, M, 0), 127),
        ((255, 0, M, 0), 127), ((-255, 0, M, 0), -127), ((-257, 0, M, 0), -128),
    ]
    inputs = [c for c, _ in cases]
    expected = [e for _, e in cases]
    # Pin the hand values against golden first, so a wrong hand value shows up as such.
    for c, e in cases:
        assert golden(*c) == e, f"hand-worked value for {c} disagrees with golden ({golden(*c)})"
    check(inputs, pipelined, expected)


def test_back_to_back_and_isolated_bubbles(pipelined):
    # Alternate full-rate bursts with single and long bubbles; out_valid must follow exactly.
    rng = random.Random(7)
    pattern = [1] * 10 + [0] + [1] + [0] * 7 + [1, 0, 1, 0, 1] + [0] * 3 + [1] * 6
    inputs = [(rng.randint(-5000, 5000), rng.randint(-100, 100), rng.randint(1 << 30, INT32_MAX),
               rng.randint(-12, 0)) if p else None for p in pattern]
    check(inputs, pipelined)


def test_relu_and_int16_modes(pipelined):
    """Mode 1 clamps the int8 result at zero; mode 2 saturates to int16 instead of int8."""
    rng = np.random.default_rng(77)
    inputs = [(int(rng.integers(-(1 << 24), 1 << 24)), int(rng.integers(-1000, 1000)),
               int(rng.integers(1 << 30, 1 << 31)), int(rng.integers(-12, 2)))
              for _ in range(300)]
    relu = [max(golden(*i), 0) for i in inputs]
    check(inputs, pipelined, relu, mode=1)
    wide = [int(saturate(multiply_by_quantized_multiplier(wrap_int32(a + b), m, s),
                         -(1 << 15), (1 << 15) - 1)) for a, b, m, s in inputs]
    assert max(wide) > 127 and min(wide) < -128
    check(inputs, pipelined, wide, mode=2)


def test_int32_min_squared_in_every_mode_and_shift(pipelined):
    """``INT32_MIN^2`` (given, and from a left shift that saturates to ``INT32_MIN``) at
    every shift in every mode: the requantizer keeps its doubling high half as ``2^31``,
    not TFLite's saturated ``2^31 - 1``, and must still give golden's result."""
    inputs = [(acc, 0, INT32_MIN, shift) for acc in (INT32_MIN, -(1 << 28) - 1)
              for shift in range(-31, 8)]
    for mode, (lo, hi) in enumerate([(-128, 127), (0, 127), (-(1 << 15), (1 << 15) - 1)]):
        want = [int(saturate(multiply_by_quantized_multiplier(a, m, s), lo, hi))
                for a, _, m, s in inputs]
        check(inputs, pipelined, want, mode=mode)


def test_clear_drops_everything_in_flight(pipelined):
    """``clear`` for one cycle with the pipeline full: nothing in flight comes out, the
    element presented with ``clear`` neither; the next ones come out on time and exact."""
    lat = LATENCY[pipelined]
    rng = random.Random(9)
    items = [(rng.randint(-5000, 5000), 0, rng.randint(1 << 30, INT32_MAX), rng.randint(-8, 0))
             for _ in range(2 * lat)]
    _, seen = run(items, 0, pipelined, clear_at=lat)
    # seen[j] follows edge j + 1: input i (edge i + 1) shows at j = i + lat - 1. Input 0
    # leaves at edge lat; the clear at edge lat + 1 drops inputs 1..lat.
    out = {j - (lat - 1): v for j, v in enumerate(seen) if v[0]}
    assert sorted(out) == [0, *range(lat + 1, 2 * lat)]
    for i, (_, value) in out.items():
        assert value == golden(*items[i])


def test_lent_elements_enter_the_second_stage(pipelined):
    """``Requantizer(lend=True)``: elements alternate at random between the requantizer's
    own inputs and ``lent`` (``lend`` high, the element past the first stage a cycle
    later: bias added, shift split); garbage on whichever side is not taken. Every
    result bit-exact and on time (as if the lent element had entered with ``lend``); only
    the own elements are valid."""
    rng = random.Random(31)
    dut = Requantizer(pipelined=pipelined, lend=True)
    lat = dut.latency
    script = []
    for _ in range(400):
        kind = rng.choice(["own", "lent", None])
        item = (rng.randint(INT32_MIN, INT32_MAX), rng.randint(INT32_MIN, INT32_MAX),
                rng.choice([0, INT32_MIN, rng.randint(1 << 30, INT32_MAX)]),
                rng.randint(-31, 7), rng.randint(0, 2))
        script.append(None if kind is None else (kind, item))
    script += [None] * (lat + 2)
    seen = []

    async def tb(ctx):
        for k, entry in enumerate(script):
            own = entry if entry is not None and entry[0] == "own" else None
            lend = entry is not None and entry[0] == "lent"
            ctx.set(dut.in_valid, own is not None)
            ctx.set(dut.lend, lend)
            acc, bias, mult, shift, mode = own[1] if own else (
                rng.randint(INT32_MIN, INT32_MAX), 0, INT32_MIN, rng.randint(-31, 7),
                rng.randint(0, 2))
            for port, v in ((dut.acc, acc), (dut.bias, bias), (dut.multiplier, mult),
                            (dut.shift, shift), (dut.mode, mode)):
                ctx.set(port, v)
            before = script[k - 1] if k else None
            if before is not None and before[0] == "lent":
                acc, bias, mult, shift, mode = before[1]
                x, left, right = wrap_int32(acc + bias), max(shift, 0), max(-shift, 0)
            else:
                x, mult, left, right, mode = (rng.randint(INT32_MIN, INT32_MAX), INT32_MIN,
                                              rng.randint(0, 7), rng.randint(0, 31),
                                              rng.randint(0, 2))
            for port, v in ((dut.lent.x, x), (dut.lent.multiplier, mult),
                            (dut.lent.left, left), (dut.lent.right, right),
                            (dut.lent.mode, mode)):
                ctx.set(port, int(v))
            await ctx.tick()
            seen.append((ctx.get(dut.out_valid), ctx.get(dut.out), ctx.get(dut.lent.out)))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    lo = {0: -128, 1: 0, 2: -(1 << 15)}
    hi = {0: 127, 1: 127, 2: (1 << 15) - 1}
    taken = {"own": 0, "lent": 0}
    for j, (valid, out, lent_out) in enumerate(seen):
        assert lent_out == out
        i = j - (lat - 1)
        src = script[i] if i >= 0 else None
        assert valid == (src is not None and src[0] == "own"), f"edge {j + 1}"
        if src is not None:
            acc, bias, mult, shift, mode = src[1]
            want = int(saturate(multiply_by_quantized_multiplier(
                wrap_int32(acc + bias), mult, shift), lo[mode], hi[mode]))
            assert out == want, f"{src}: expected {want}, got {out}"
            taken[src[0]] += 1
    assert min(taken.values()) > 100


def test_lend_must_be_a_bool():
    with pytest.raises(TypeError, match="lend must be a bool, got 1"):
        Requantizer(lend=1)


def test_each_mode_saturates_at_its_bounds_and_one_past(pipelined):
    """``MBQM(x, 2^30, 1)`` is ``x``: each mode's bounds, one inside and one past them,
    and far out (the saturation tests the bits from 7 or 15 up, not compares)."""
    edges = [127, 128, 126, -128, -129, -127, 0, -1, 1, 32767, 32768, 32766, -32768,
             -32769, -32767, 255, 256, -256, -257, (1 << 29) - 1, -(1 << 29)]
    inputs = [(x, 0, 1 << 30, 1) for x in edges]
    assert [int(multiply_by_quantized_multiplier(x, 1 << 30, 1)) for x in edges] == edges
    for mode, (lo, hi) in enumerate(((-128, 127), (0, 127), (-(1 << 15), (1 << 15) - 1))):
        check(inputs, pipelined, [min(max(x, lo), hi) for x in edges], mode=mode)
