"""MacArray (``hw/mac_array.py``) in the Amaranth simulator.

Lane entries are built here straight from random sparse matrices (independent of the
Decompressor): rows split across words, words that end one row and start the next, empty
rows, padding lanes (nz low, with garbage weights that must not count). With random ``ce``
stalls and input bubbles, every ``row_valid`` must carry ``wrap32(W[r] . x)`` in row order,
and ``macs`` / ``zero_acts`` must count each word's nonzero lanes exactly once.
"""

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from golden.numerics import wrap_int32
from hw.bram_outreg import ABSORBED, absorb_output_registers
from hw.config import EngineConfig
from hw.mac_array import MacArray
from hw.synth import yosys_netlist

MAX_COLS = 64
ADDR_BITS = (MAX_COLS - 1).bit_length()


def make_cfg(lanes):
    return EngineConfig(lanes=lanes, max_rows=64, max_cols=MAX_COLS, weight_depth=256)


def random_matrix(rng, rows, cols, density, empty_rows=()):
    w = np.zeros((rows, cols), dtype=np.int64)
    for r in range(rows):
        if r in empty_rows:
            continue
        for c in range(cols):
            if rng.random() < density:
                # extremes often (-128 * -128 is the largest product), else any nonzero int8
                w[r, c] = (rng.choice([-128, -1, 1, 127]) if rng.random() < 0.3
                           else rng.choice([v for v in range(-128, 128) if v]))
    return w


def random_acts(rng, n, p_zero=0.3):
    return [0 if rng.random() < p_zero else rng.choice([-128, 127, rng.randint(-128, 127)])
            for _ in range(n)]


def pack_lanes(rng, w, lanes):
    """Words of lane entries (end, [(col, weight, nz, first)] * lanes) for matrix ``w``.

    Lanes before ``split`` (all lanes without end) belong to the current row, the rest to
    the next row, which then ends in a later word. Padding lanes carry nz = 0 and a random
    weight and column."""
    rows, cols = w.shape
    ents = [[(int(c), int(w[r, c])) for c in np.flatnonzero(w[r])] for r in range(rows)]

    def pad(first):
        return (rng.randrange(cols), rng.randint(-128, 127), 0, first)

    words = []
    carried = 0
    for r in range(rows):
        rem = ents[r][carried:]
        carried = 0
        while True:
            if len(rem) <= lanes and rng.random() < 0.6:  # the row ends in this word
                split = len(rem) + rng.randint(0, lanes - len(rem))
                lane = [(c, v, 1, 1) for c, v in rem] + [pad(1) for _ in range(split - len(rem))]
                nxt = ents[r + 1] if r + 1 < rows else []
                take = rng.randint(0, min(lanes - split, len(nxt)))
                lane += [(c, v, 1, 0) for c, v in nxt[:take]]
                lane += [pad(0) for _ in range(lanes - len(lane))]
                carried = take
                words.append((1, lane))
                break
            k = rng.randint(0, min(lanes, len(rem)))  # the row goes on (maybe all padding)
            lane = [(c, v, 1, 1) for c, v in rem[:k]] + [pad(1) for _ in range(lanes - k)]
            rem = rem[k:]
            words.append((0, lane))
    return words


def expected_counts(lane, acts):
    macs = sum(1 for c, _, nz, _ in lane if nz and acts[c] != 0)
    zeros = sum(1 for c, _, nz, _ in lane if nz and acts[c] == 0)
    return macs, zeros


async def load_acts_direct(ctx, mac, acts):
    for copy in mac.acts:
        for i, v in enumerate(acts):
            ctx.set(copy.data[i], v)


async def load_acts_port(ctx, mac, acts):
    for i, v in enumerate(acts):
        ctx.set(mac.act_waddr, i)
        ctx.set(mac.act_wdata, v)
        ctx.set(mac.act_we, 1)
        await ctx.tick()
    ctx.set(mac.act_we, 0)


async def drive(ctx, mac, rng, lanes, words, acts, n_rows, *, p_ce=0.7, p_valid=0.85,
                max_cycles=100000):
    """Stream ``words`` through the array; return the row sums and check the counters."""
    amask = (1 << ADDR_BITS) - 1
    rows_out = []
    ce_inputs, ce_obs = [], []  # per ce-high cycle: the word presented, the counters after
    prev_ce = 0
    i = 0
    cycles = 0
    while len(rows_out) < n_rows or i < len(words):
        assert cycles < max_cycles, f"stuck: {i}/{len(words)} words in, {len(rows_out)}/{n_rows} rows out"
        ce = int(rng.random() < p_ce)
        valid = int(i < len(words) and rng.random() < p_valid)
        if valid:
            end, lane = words[i]
        else:  # garbage while in_valid is low
            end, lane = rng.getrandbits(1), [(rng.randrange(MAX_COLS), rng.randint(-128, 127),
                                               rng.getrandbits(1), rng.getrandbits(1))
                                              for _ in range(lanes)]
        ctx.set(mac.ce, ce)
        ctx.set(mac.in_valid, valid)
        ctx.set(mac.in_end, end)
        ctx.set(mac.in_col.as_value(), sum((c & amask) << (ADDR_BITS * j) for j, (c, _, _, _) in enumerate(lane)))
        ctx.set(mac.in_weight.as_value(), sum((v & 0xFF) << (8 * j) for j, (_, v, _, _) in enumerate(lane)))
        ctx.set(mac.in_nz, sum(nz << j for j, (_, _, nz, _) in enumerate(lane)))
        ctx.set(mac.in_first, sum(f << j for j, (_, _, _, f) in enumerate(lane)))
        row_valid, row_acc = ctx.get(mac.row_valid), ctx.get(mac.row_acc)
        counts = (ctx.get(mac.macs), ctx.get(mac.zero_acts))
        if prev_ce:
            ce_obs.append(counts)
        else:
            assert counts == (0, 0), f"cycle {cycles}: counters moved after a ce-low cycle"
        if ce:
            ce_inputs.append(words[i] if valid else None)
            if row_valid:
                rows_out.append(row_acc)
        else:
            assert not row_valid, f"cycle {cycles}: row_valid with ce low"
        i += valid and ce
        prev_ce = ce
        await ctx.tick()
        cycles += 1
    # a few more ce cycles: no extra rows may appear, the last counters come out
    for _ in range(6):
        ctx.set(mac.ce, 1)
        ctx.set(mac.in_valid, 0)
        assert not ctx.get(mac.row_valid), "row_valid after the last row"
        if prev_ce:
            ce_obs.append((ctx.get(mac.macs), ctx.get(mac.zero_acts)))
        ce_inputs.append(None)
        prev_ce = 1
        await ctx.tick()
    ce_obs.append((ctx.get(mac.macs), ctx.get(mac.zero_acts)))
    # A word taken in ce-high cycle k is counted in its multiply stage, ce-high cycle k + 3
    # (after the activation read and its two registers); the registered counts show in
    # the cycle after that one.
    want = [(0, 0)] * 3 + [expected_counts(wd[1], acts) if wd else (0, 0)
                           for wd in ce_inputs[:-3]]
    assert ce_obs == want, "macs/zero_acts per ce cycle differ from the words' nonzero lanes"
    return rows_out


def run_matrices(lanes, cases, loader):
    """cases: list of (matrix, acts); one simulation, matrices back to back."""
    rng = random.Random(lanes)
    mac = MacArray(make_cfg(lanes))
    results = []

    async def tb(ctx):
        for w, acts in cases:
            ctx.set(mac.ce, 0)
            ctx.set(mac.in_valid, 0)
            await loader(ctx, mac, acts + [0] * (MAX_COLS - len(acts)))
            await ctx.tick()
            words = pack_lanes(rng, w, lanes)
            got = await drive(ctx, mac, rng, lanes, words, acts + [0] * (MAX_COLS - len(acts)),
                              w.shape[0])
            results.append((w, acts, words, got))

    sim = Simulator(mac)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    for w, acts, words, got in results:
        want = [int(wrap_int32(int(np.dot(w[r], np.array(acts, dtype=np.int64)))))
                for r in range(w.shape[0])]
        ends = sum(e for e, _ in words)
        splits = sum(1 for e, lane in words if e and not all(f for _, _, _, f in lane))
        assert got == want, f"{w.shape} lanes={lanes} ({len(words)} words, {ends} ends, " \
                            f"{splits} split words): row sums {got} != {want}"


@pytest.mark.parametrize("lanes", [4, 8, 16])
def test_random_sparse_rows(lanes):
    rng = random.Random(1000 + lanes)
    cases = []
    for k in range(16):
        rows, cols = rng.randint(1, 10), rng.randint(1, MAX_COLS)
        empty = {r for r in range(rows) if rng.random() < 0.2}
        density = rng.choice([0.05, 0.3, 0.7, 1.0])
        cases.append((random_matrix(rng, rows, cols, density, empty), random_acts(rng, cols)))
    # all-zero activations: every nonzero weight is a zero_act, every row sums to 0
    cases.append((random_matrix(rng, 4, 30, 0.5), [0] * 30))
    run_matrices(lanes, cases, load_acts_direct)


def test_activations_through_write_port():
    rng = random.Random(9)
    cases = [(random_matrix(rng, 6, MAX_COLS, 0.4, {3}), random_acts(rng, MAX_COLS)),
             (random_matrix(rng, 3, 20, 0.8), random_acts(rng, 20))]
    run_matrices(8, cases, load_acts_port)


def test_row_sum_wraps_at_32_bits():
    # -128 * -128 in every lane of 8193 words passes 2^31 and wraps negative; one lane adds 1 * 3;
    # the next row starts clean (127 * -128, once).
    lanes = 16
    mac = MacArray(make_cfg(lanes))
    n_words = 8193
    big = [(0, -128, 1, 1)] * lanes
    words = [(0, big)] * (n_words - 1)
    words.append((1, big[:-1] + [(1, 1, 1, 1)]))  # row 0 ends; lane 15: 1 * acts[1]
    words.append((1, [(2, 127, 1, 1)] + [(0, 0, 0, 1)] * (lanes - 1)))
    acts = [-128, 3, -128] + [0] * (MAX_COLS - 3)
    row0 = (n_words * lanes - 1) * 16384 + 3
    want = [int(wrap_int32(row0)), 127 * -128]
    assert want[0] < 0  # it really wrapped
    got = []

    async def tb(ctx):
        await load_acts_direct(ctx, mac, acts)
        got.extend(await drive(ctx, mac, random.Random(3), lanes, words, acts, 2,
                               p_ce=1.0, p_valid=1.0))

    sim = Simulator(mac)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    assert got == want, f"row sums {got}, expected {want} (int32 wrap)"


def test_a_words_activations_are_read_in_its_ce_cycle_and_held_while_ce_is_low():
    """The activation read's register sits in the block RAM with ``ce`` its enable: a word
    taken in a ``ce`` cycle multiplies the activations of its own columns even when the
    column inputs change during the ``ce``-low cycles that follow, for 0, 1 and 3 such
    cycles."""
    lanes = 4
    acts = [(5 * c + 1) % 97 - 40 for c in range(MAX_COLS)]
    cols, other = [3, 17, 40, 63], [0, 1, 2, 5]
    for stall in (0, 1, 3):
        mac = MacArray(make_cfg(lanes))
        got = []

        async def tb(ctx, mac=mac, stall=stall):
            await load_acts_direct(ctx, mac, acts)
            ctx.set(mac.ce, 1)
            ctx.set(mac.in_valid, 1)
            ctx.set(mac.in_end, 1)
            ctx.set(mac.in_nz, (1 << lanes) - 1)
            ctx.set(mac.in_first, (1 << lanes) - 1)
            for j in range(lanes):
                ctx.set(mac.in_col[j], cols[j])
                ctx.set(mac.in_weight[j], j + 1)
            await ctx.tick()
            ctx.set(mac.in_valid, 0)
            for j in range(lanes):  # the next word's columns, waiting for ce
                ctx.set(mac.in_col[j], other[j])
            ctx.set(mac.ce, 0)
            for _ in range(stall):
                await ctx.tick()
            ctx.set(mac.ce, 1)
            for _ in range(8):
                if ctx.get(mac.row_valid):
                    got.append(ctx.get(mac.row_acc))
                await ctx.tick()

        sim = Simulator(mac)
        sim.add_clock(1e-8)
        sim.add_testbench(tb)
        sim.run()
        want = sum((j + 1) * acts[cols[j]] for j in range(lanes))
        assert want != sum((j + 1) * acts[other[j]] for j in range(lanes))
        assert got == [want], f"stall {stall}: rows {got}, expected [{want}]"


def test_the_activation_captures_move_into_the_block_rams(tmp_path):
    """Through Yosys's ``synth_ecp5`` (as ``hw.synth``), each activation RAM's read data
    is captured plainly (``s2_x``, one reset-less register held by ``ce``), so
    ``hw.bram_outreg`` moves it into the DP16KD's output register (issue 6); the
    multipliers read the fabric copy behind it."""
    cfg = EngineConfig(lanes=4, max_rows=64, max_cols=1024, weight_depth=256)  # block RAMs
    netlist = yosys_netlist(MacArray(cfg), tmp_path)
    report = absorb_output_registers(netlist)
    assert report["rams"] == {f"acts{j}.0.0": {"A": "no read data used", "B": ABSORBED}
                              for j in range(4)}
    assert report["flip_flops"] == 4 * 8
    cells = netlist["modules"]["top"]["cells"]
    assert all(cells[f"acts{j}.0.0"]["parameters"]["REGMODE_B"] == "OUTREG"
               for j in range(4))
