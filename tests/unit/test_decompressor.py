"""Decompressor (``hw/decompressor.py``) in the Amaranth simulator.

Random images from ``golden.weights.compress`` (every encoding, 4/8/16 lanes) are fed with
``ce`` stalls and input bubbles; each word must come out exactly ``LATENCY`` ``ce`` cycles
after it went in; the weight matrix rebuilt from the lane outputs must equal
``golden.weights.decompress``. Malformed streams built with ``pack_word`` must latch the
``EngineError`` code of ``docs/weight-format.md`` section 5, and the golden reader must
reject the same streams. Streams written word by word with deltas up to 31 take the
prefix sums (split over two stages) to their full range at every lane count.
"""

import collections
import random
import struct
import zlib

import numpy as np
import pytest
from amaranth import Signal
from amaranth.hdl import ResetInserter
from amaranth.sim import Simulator

from golden.weights import (
    VERSION,
    Encoding,
    Header,
    ImageError,
    compress,
    decompress,
    pack_params,
    pack_word,
    stream_words,
    unpack_word,
    word_bytes,
)
from hw.config import EngineConfig
from hw.decompressor import LATENCY, Decompressor
from hw.errors import EngineError

MAX_COLS = 128


def make_cfg(lanes, max_cols=MAX_COLS):
    return EngineConfig(lanes=lanes, max_rows=64, max_cols=max_cols, weight_depth=512)


def signed8(v):
    return v - 256 if v & 0x80 else v


def pack_codebook(cb):
    return sum((v & 0xFF) << (8 * i) for i, v in enumerate(cb))


def random_codebook(rng):
    vals = rng.sample([v for v in range(-128, 128) if v != 0], 15)
    return (0, *vals)


def random_matrix(rng, rows, cols, density, encoding, codebook, empty_rows=()):
    if encoding == Encoding.INT8:
        pool = [v for v in range(-128, 128) if v != 0]
    elif encoding == Encoding.INT4:
        pool = [v for v in range(-8, 8) if v != 0]
    else:
        pool = list(codebook[1:])
    w = np.zeros((rows, cols), dtype=np.int64)
    for r in range(rows):
        if r in empty_rows:
            continue
        for c in range(cols):
            if rng.random() < density:
                w[r, c] = rng.choice(pool)
    return w


def make_image(rng, encoding, lanes, rows, cols, density, empty_rows=()):
    cb = random_codebook(rng) if encoding == Encoding.CODEBOOK else None
    w = random_matrix(rng, rows, cols, density, encoding, cb, empty_rows)
    zeros = np.zeros(rows, dtype=np.int64)
    return compress(w, zeros, zeros, zeros, encoding=encoding, lanes=lanes, codebook=cb)


class Bench:
    """A Decompressor behind a synchronous reset, so one simulation can run many streams."""

    def __init__(self, lanes, max_cols=MAX_COLS):
        self.cfg = make_cfg(lanes, max_cols)
        self.L = lanes
        self.addr_bits = (max_cols - 1).bit_length()
        self.dut = Decompressor(self.cfg)
        self.rst = Signal()
        self.top = ResetInserter(self.rst)(self.dut)

    def run(self, body):
        sim = Simulator(self.top)
        sim.add_clock(1e-8)
        sim.add_testbench(body)
        sim.run()

    async def reset(self, ctx, encoding, codebook, rows, cols):
        d = self.dut
        ctx.set(d.ce, 0)
        ctx.set(d.in_valid, 0)
        ctx.set(d.encoding, int(encoding))
        ctx.set(d.codebook.as_value(), pack_codebook(codebook))
        ctx.set(d.rows, rows)
        ctx.set(d.cols, cols)
        ctx.set(self.rst, 1)
        await ctx.tick()
        ctx.set(self.rst, 0)

    def snapshot(self, ctx):
        d = self.dut
        return (ctx.get(d.out_valid), ctx.get(d.out_end), ctx.get(d.out_col.as_value()),
                ctx.get(d.out_weight.as_value()), ctx.get(d.out_nz), ctx.get(d.out_first),
                ctx.get(d.error), ctx.get(d.nnz), ctx.get(d.rows_done))

    def lanes_of(self, snap):
        """(col, weight, nz, first) per lane from a snapshot."""
        _, _, cols, weights, nz, first = snap[:6]
        amask = (1 << self.addr_bits) - 1
        return [((cols >> (self.addr_bits * j)) & amask, signed8((weights >> (8 * j)) & 0xFF),
                 (nz >> j) & 1, (first >> j) & 1) for j in range(self.L)]


def rebuild(bench, outputs, rows, cols):
    """The weight matrix the lane outputs describe: lanes flagged first belong to the row
    that ends in this word (or goes on), the others start the next row."""
    w = np.zeros((rows, cols), dtype=np.int64)
    r = 0
    for snap in outputs:
        end = snap[1]
        lanes = bench.lanes_of(snap)
        if not end:
            assert all(first for _, _, _, first in lanes), "a word without end must be all first"
        for col, val, nz, first in lanes:
            if not nz:
                continue
            row = r if first else r + 1
            assert row < rows and col < cols, f"lane weight at ({row}, {col}) outside {rows}x{cols}"
            assert w[row, col] == 0, f"({row}, {col}) written twice"
            assert val != 0, "nz lane with a zero weight"
            w[row, col] = val
        r += end
    assert r == rows, f"{r} row ends in the output, expected {rows}"
    return w


async def stream_through(bench, ctx, rng, words, p_ce, p_valid, max_cycles):
    """Feed ``words`` with random ce stalls and input bubbles; return the output snapshots
    taken after every ce-high edge that produced a word. Checks that everything holds
    while ce is low, that a word comes out ``LATENCY`` ce cycles after it went in, and
    that in_ready is ce & ~error."""
    d = bench.dut
    outputs = []
    i = 0
    prev = bench.snapshot(ctx)
    cycles = 0
    drain = 0
    in_flight = collections.deque([0] * (LATENCY - 1))  # words fired, per ce cycle
    while drain < LATENCY + 1:
        assert cycles < max_cycles, f"stuck after {i}/{len(words)} words"
        ce = int(rng.random() < p_ce)
        valid = int(i < len(words) and rng.random() < p_valid)
        ctx.set(d.ce, ce)
        ctx.set(d.in_valid, valid)
        # garbage on the word and last when not valid must not matter
        ctx.set(d.in_word, words[i] if valid else rng.getrandbits(bench.cfg.word_bits))
        ctx.set(d.in_last, int(i == len(words) - 1) if valid else rng.getrandbits(1))
        assert ctx.get(d.in_ready) == ce, "in_ready should equal ce while error is 0"
        fired = ce and valid
        await ctx.tick()
        cycles += 1
        snap = bench.snapshot(ctx)
        if not ce:
            assert snap[:7] == prev[:7], f"cycle {cycles}: outputs changed while ce was low"
        else:
            in_flight.appendleft(fired)
            out = in_flight.pop()
            assert snap[0] == out, f"cycle {cycles}: out_valid={snap[0]}, word out={out}"
            if out:
                outputs.append(snap)
            i += fired
            if i == len(words) and not fired:
                drain += 1
        prev = snap
    return outputs, prev


@pytest.mark.parametrize("lanes", [4, 8, 16])
def test_random_images_all_encodings(lanes):
    rng = random.Random(100 + lanes)
    bench = Bench(lanes)
    cases = []
    for enc in (Encoding.INT8, Encoding.INT4, Encoding.CODEBOOK):
        cases.append(make_image(rng, enc, lanes, 7, 100, 0.25, empty_rows={0, 4}))
        cases.append(make_image(rng, enc, lanes, 5, MAX_COLS, 0.04, empty_rows={2}))  # escapes
        cases.append(make_image(rng, enc, lanes, 4, 19, 0.9))  # dense, many split words
    cases.append(make_image(rng, Encoding.INT4, lanes, 3, 40, 0.0))  # all rows empty
    cases.append(make_image(rng, Encoding.INT8, lanes, 1, 33, 0.5))  # one row
    cases.append(make_image(rng, Encoding.CODEBOOK, lanes, 2, 1, 1.0))  # one column
    for _ in range(12):  # random shapes and densities
        rows, cols = rng.randint(1, 12), rng.randint(1, MAX_COLS)
        empty = {r for r in range(rows) if rng.random() < 0.2}
        enc = rng.choice(list(Encoding))
        cases.append(make_image(rng, enc, lanes, rows, cols,
                                rng.choice([0.01, 0.05, 0.2, 0.5, 0.95]), empty))

    async def tb(ctx):
        for image in cases:
            m = decompress(image)
            words = stream_words(image)
            rows, cols = m.weights.shape
            await bench.reset(ctx, m.encoding, m.codebook, rows, cols)
            outputs, last = await stream_through(bench, ctx, rng, words, p_ce=0.7, p_valid=0.85,
                                           max_cycles=20 * len(words) + 50)
            assert len(outputs) == len(words)
            got = rebuild(bench, outputs, rows, cols)
            assert np.array_equal(got, m.weights.astype(np.int64)), \
                f"{m.encoding.name} {rows}x{cols}: decoded weights differ from golden"
            error, nnz, rows_done = last[6:]
            assert error == EngineError.OK
            assert nnz == np.count_nonzero(m.weights), f"nnz {nnz}"
            assert rows_done == rows, f"rows_done {rows_done}"

    bench.run(tb)


# ---------------------------------------------------------------------------- errors


def golden_image(words, rows, cols, encoding, lanes, codebook=None, nnz=0):
    """An image around raw stream words (CRCs right; nnz is checked last by golden)."""
    cb = tuple(codebook) if codebook is not None else (0,) * 16
    stream = b"".join(w.to_bytes(word_bytes(lanes), "little") for w in words)
    zeros = [0] * rows
    params = pack_params(zeros, zeros, zeros)
    h = Header(VERSION, encoding, lanes, rows, cols, len(words), nnz, cb,
               zlib.crc32(params), zlib.crc32(stream), 0)
    head = h.pack_without_crc()
    return head + struct.pack("<I", zlib.crc32(head)) + params + stream


L8 = 8
I4, I8 = Encoding.INT4, Encoding.INT8
P8 = [(0, 0)] * 8  # padding slots

# (name, encoding, rows, cols, words, expected code, golden message fragment or None).
# Every word before the last of a case is valid; the last one breaks a rule. A message of
# None marks priority cases, where the golden reader (entry by entry) names another rule.
ERROR_CASES = [
    ("split > per_word", I4, 2, 20, [pack_word(True, 9, [(0, 1)], L8)], EngineError.SPLIT, "split"),
    ("int8 split > per_word", I8, 2, 20, [pack_word(True, 5, [(0, 1), (0, 1)], L8)], EngineError.SPLIT, "split"),
    ("split without end", I4, 2, 20, [pack_word(False, 3, [(1, 1)], L8)], EngineError.SPLIT, "split"),
    ("int8 split=lanes without end", I8, 2, 20, [pack_word(False, 8, [(1, 1), (0, 2)], L8)],
     EngineError.SPLIT, "split"),
    ("column past cols", I4, 2, 20, [pack_word(False, 8, [(19, 1), (1, 2)], L8)], EngineError.COLUMN, "out of range"),
    ("escape past cols", I4, 2, 20, [pack_word(False, 8, [(19, 0), (1, 0)], L8)], EngineError.COLUMN, "out of range"),
    ("next row column past cols", I4, 2, 20, [pack_word(True, 1, [(5, 1), (20, 1)], L8)],
     EngineError.COLUMN, "out of range"),
    ("column past cols across words", I4, 2, 20,
     [pack_word(False, 8, [(10, 1)], L8), pack_word(False, 8, [(9, 1), (1, 1)], L8)],
     EngineError.COLUMN, "out of range"),
    ("repeated column", I4, 2, 20, [pack_word(False, 8, [(2, 1), (0, 3)], L8)], EngineError.COLUMN, "repeated"),
    ("repeated column after padding", I4, 2, 20, [pack_word(False, 8, [(2, 1), (0, 0), (0, 3)], L8)],
     EngineError.COLUMN, "repeated"),
    ("repeated column across words", I4, 2, 20,
     [pack_word(False, 8, [(2, 1)], L8), pack_word(False, 8, [(0, 3)], L8)], EngineError.COLUMN, "repeated"),
    ("repeated column in the next row", I4, 3, 20, [pack_word(True, 1, [(2, 1), (0, 3), (0, 4)], L8)],
     EngineError.COLUMN, "repeated"),
    ("repeated column across a split", I4, 2, 20,
     [pack_word(True, 1, [(2, 1), (3, 2)], L8), pack_word(True, 1, [(0, 3)], L8)], EngineError.COLUMN, "repeated"),
    ("escape past cols after the last row end", I4, 1, 20, [pack_word(True, 1, [(0, 1), (20, 0)], L8)],
     EngineError.COLUMN, "out of range"),
    ("int8 low slot with a delta", I8, 2, 20, [pack_word(False, 4, [(3, 1), (1, 2)], L8)],
     EngineError.COLUMN, "low-nibble"),
    ("word after the last row", I4, 1, 20,
     [pack_word(True, 8, [(0, 1)], L8), pack_word(False, 8, [], L8)], EngineError.LENGTH, "after its last row"),
    ("nonzero after the last row end", I4, 1, 20, [pack_word(True, 1, [(0, 1), (1, 2)], L8)],
     EngineError.LENGTH, "after the last row"),
    ("int8 nonzero after the last row end", I8, 2, 20,
     [pack_word(True, 4, [(0, 1), (0, 1)], L8), pack_word(True, 1, [(0, 1), (0, 0), (0, 0), (0, 5)], L8)],
     EngineError.LENGTH, "after the last row"),
    ("last word too early", I4, 2, 20, [pack_word(True, 1, [(0, 1), (3, 2)], L8)], EngineError.TRUNCATED, "truncated"),
    ("last word without end", I4, 1, 20, [pack_word(False, 8, [(0, 1)], L8)], EngineError.TRUNCATED, "truncated"),
    # priorities: SPLIT > LENGTH > COLUMN > TRUNCATED
    ("split beats length", I4, 1, 20,
     [pack_word(True, 8, [(0, 1)], L8), pack_word(False, 2, [], L8)], EngineError.SPLIT, "split"),
    ("length beats column", I4, 1, 20, [pack_word(True, 1, [(0, 1), (25, 2)], L8)], EngineError.LENGTH, None),
    ("column beats truncated", I4, 2, 20, [pack_word(False, 8, [(25, 1)], L8)], EngineError.COLUMN, "out of range"),
]

# Streams that look close to the errors above but are valid.
VALID_CASES = [
    ("delta 0 at the start of the next row", I4, 2, 20,
     [pack_word(True, 1, [(2, 1), (0, 3), (19, 0)], L8), pack_word(True, 0, P8, L8)]),
    ("delta 0 after a row ending on the word's last entry", I4, 2, 20,
     [pack_word(True, 8, [(2, 1)] + [(0, 0)] * 7, L8), pack_word(True, 1, [(0, 5)], L8)]),
    ("padding and escapes after the last row end", I4, 1, 20,
     [pack_word(True, 1, [(19, 1), (0, 0), (19, 0), (0, 0)], L8)]),
    ("escape then delta 0 at the start of the next row", I4, 2, 20,
     [pack_word(True, 1, [(2, 1), (3, 0)], L8), pack_word(True, 1, [(0, 3)], L8)]),
    ("int8 column cols-1", I8, 1, 20, [pack_word(True, 4, [(19, 8), (0, 1)], L8)]),
]


def error_bench_run(cases, check):
    bench = Bench(L8)

    async def tb(ctx):
        d = bench.dut
        for case in cases:
            name, enc, rows, cols, words = case[:5]
            await bench.reset(ctx, enc, [0] * 16, rows, cols)
            assert ctx.get(d.error) == 0, f"{name}: error not cleared by reset"
            snaps = []
            for k, word in enumerate(words):
                ctx.set(d.ce, 1)
                ctx.set(d.in_valid, 1)
                ctx.set(d.in_word, word)
                ctx.set(d.in_last, int(k == len(words) - 1))
                assert ctx.get(d.in_ready) == 1, f"{name}: not ready before word {k}"
                await ctx.tick()
                snaps.append(bench.snapshot(ctx))
            for _ in range(LATENCY - 1):  # the last word to the outputs
                ctx.set(d.in_valid, 0)
                await ctx.tick()
                snaps.append(bench.snapshot(ctx))
            history = snaps[LATENCY - 1:]  # the outputs of word k at index k
            # Afterwards: more words (some valid-looking), ce toggling.
            for k in range(4):
                ctx.set(d.ce, k % 2)
                ctx.set(d.in_word, pack_word(False, 8, [], L8))
                ctx.set(d.in_last, 0)
                history.append((ctx.get(d.in_ready),) + bench.snapshot(ctx))
                await ctx.tick()
            check(case, history)

    bench.run(tb)


def test_error_codes_latch_and_drop_ready():
    def check(case, history):
        name, _, _, _, words, code = case[:6]
        n = len(words)
        for k, snap in enumerate(history[:n - 1]):
            assert snap[6] == 0, f"{name}: valid word {k} flagged error {EngineError(snap[6]).name}"
            assert snap[0] == 1, f"{name}: valid word {k} gave no output"
        bad = history[n - 1]
        assert bad[6] == code, \
            f"{name}: expected {code.name}, got {EngineError(bad[6]).name if bad[6] < 10 else bad[6]}"
        assert bad[0] == 0, f"{name}: the bad word must not produce an output"
        for after in history[n:]:
            ready, snap = after[0], after[1:]
            assert ready == 0, f"{name}: in_ready must stay low after an error"
            assert snap[6] == code, f"{name}: the error must stay latched"
            assert snap[0] == 0 and snap[7:] == bad[7:], f"{name}: nothing may move after an error"

    error_bench_run(ERROR_CASES, check)


def test_valid_edge_streams_are_accepted():
    def check(case, history):
        name, _, rows, _, words = case
        for k, snap in enumerate(history[:len(words)]):
            assert snap[6] == 0, f"{name}: word {k} flagged {EngineError(snap[6]).name}"
        assert history[len(words) - 1][8] == rows, f"{name}: rows_done"

    error_bench_run(VALID_CASES, check)


@pytest.mark.parametrize("case", ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
def test_golden_rejects_the_error_streams(case):
    # Keeps the hardware cases honest: the reference reader must reject each stream too.
    name, enc, rows, cols, words, _, msg = case
    image = golden_image(words, rows, cols, enc, L8)
    with pytest.raises(ImageError) as e:
        decompress(image)
    if msg is not None:
        assert msg in str(e.value), f"{name}: golden says {e.value}"


@pytest.mark.parametrize("case", VALID_CASES, ids=[c[0] for c in VALID_CASES])
def test_golden_accepts_the_valid_streams(case):
    name, enc, rows, cols, words = case
    image = golden_image(words, rows, cols, enc, L8)
    try:
        decompress(image)
    except ImageError as e:
        assert "holds" in str(e), f"{name}: golden rejects it: {e}"  # only the nnz check may fail


# ---------------------------------------------------------------------------- fuzz


async def stream_one_per_cycle(bench, ctx, words):
    """Feed ``words`` one per cycle with ``ce`` high; return (index of the first word
    flagged, its code, the output snapshots of the words before it, the final snapshot).
    Checks that every accepted word leaves exactly ``LATENCY`` cycles after it entered."""
    d = bench.dut
    outputs, first_err, code = [], None, 0
    for k in range(len(words) + LATENCY - 1):
        ctx.set(d.ce, 1)
        ctx.set(d.in_valid, int(k < len(words)))
        if k < len(words):
            ctx.set(d.in_word, words[k])
            ctx.set(d.in_last, int(k == len(words) - 1))
        await ctx.tick()
        snap = bench.snapshot(ctx)
        if k < LATENCY - 1:
            continue
        if snap[6]:  # the word that left the pipeline with this edge broke a rule
            first_err, code = k - (LATENCY - 1), snap[6]
            break
        assert snap[0] == 1, f"word {k - (LATENCY - 1)} not out {LATENCY} cycles after it went in"
        outputs.append(snap)
    ctx.set(d.ce, 0)
    await ctx.tick()  # nnz counts a word one cycle after its outputs
    return first_err, code, outputs, bench.snapshot(ctx)


def run_against_golden(bench, cases):
    """Run each ``(encoding, codebook, rows, cols, words)`` stream and compare with the
    golden reader: the same word flagged with a compatible code, or, for streams golden
    accepts, the same matrix, nnz and row count. Returns the RTL's (index of the word
    flagged, or None, and its code) per case."""
    results = []

    async def tb(ctx):
        for enc, cb, rows, cols, words in cases:
            await bench.reset(ctx, enc, cb, rows, cols)
            results.append(await stream_one_per_cycle(bench, ctx, words))

    bench.run(tb)
    lanes = bench.L
    for (enc, cb, rows, cols, words), (first_err, code, outputs, final) in zip(cases, results):
        verdict = golden_verdict(words, rows, cols, enc, lanes, cb)
        what = f"{enc.name} {rows}x{cols} words={[hex(w) for w in words]}"
        if verdict is None:
            assert code == 0, f"{what}: golden accepts, RTL flags {EngineError(code).name} at word {first_err}"
            got = rebuild(bench, outputs, rows, cols)
            ref = golden_weights(words, rows, cols, enc, lanes, cb)
            assert np.array_equal(got, ref), f"{what}: decoded weights differ from golden"
            assert final[7:] == (np.count_nonzero(ref), rows), f"{what}: nnz/rows_done"
        else:
            k, allowed = verdict
            assert code != 0, f"{what}: golden rejects word {k}, RTL accepts"
            assert first_err == k and code in allowed, \
                f"{what}: golden flags word {k} ({sorted(c.name for c in allowed)}), " \
                f"RTL flags word {first_err} with code {code}"
    return [(first_err, code) for first_err, code, _, _ in results]


def golden_verdict(words, rows, cols, enc, lanes, cb):
    """(word index, allowed RTL codes) of the golden reader's first complaint, or None.

    The golden reader checks a word entry by entry, the RTL by priority (SPLIT > LENGTH >
    COLUMN > TRUNCATED), so a word breaking a column rule may show as LENGTH in hardware.
    The decompressor has no nnz check, so an nnz complaint counts as accepted."""
    try:
        decompress(golden_image(words, rows, cols, enc, lanes, cb))
    except ImageError as e:
        msg = str(e)
        if "nonzero weights, header says" in msg:
            return None
        if "truncated stream" in msg:
            return len(words) - 1, {EngineError.TRUNCATED}
        k = int(msg.split(":")[0].split()[1])
        if "split" in msg:
            return k, {EngineError.SPLIT}
        if "after its last row" in msg or "weights after the last row" in msg:
            return k, {EngineError.LENGTH}
        if "out of range" in msg or "repeated" in msg or "low-nibble" in msg:
            return k, {EngineError.COLUMN, EngineError.LENGTH}
        raise AssertionError(f"unexpected golden message {msg!r}")
    return None


def golden_weights(words, rows, cols, enc, lanes, cb):
    """Golden decode of a stream it accepts, with the header nnz set to what it counts."""
    try:
        return decompress(golden_image(words, rows, cols, enc, lanes, cb)).weights.astype(np.int64)
    except ImageError as e:
        nnz = int(str(e).split("holds ")[1].split()[0])
    return decompress(golden_image(words, rows, cols, enc, lanes, cb, nnz)).weights.astype(np.int64)


@pytest.mark.parametrize("lanes", [4, 8, 16])
def test_fuzz_corrupted_streams_against_golden(lanes):
    # Valid images with one or two bits flipped in one word (or a word dropped or repeated):
    # the RTL must flag the same word as the golden reader, with a compatible code, and
    # decode the streams golden accepts to the same matrix.
    rng = random.Random(500 + lanes)
    bench = Bench(lanes)
    wbits = bench.cfg.word_bits
    cases = []
    for _ in range(100):
        enc = rng.choice(list(Encoding))
        rows, cols = rng.randint(1, 5), rng.randint(1, 45)
        image = make_image(rng, enc, lanes, rows, cols, rng.choice([0.05, 0.3, 0.8]))
        m = decompress(image)
        words = stream_words(image)
        r = rng.random()
        if r < 0.1 and len(words) > 1:
            del words[rng.randrange(len(words))]
        elif r < 0.2:
            k = rng.randrange(len(words))
            words.insert(k, words[k])
        else:
            k = rng.randrange(len(words))
            for _ in range(rng.choice([1, 1, 2])):
                words[k] ^= 1 << rng.randrange(wbits)
        cases.append((enc, m.codebook, rows, cols, words))
    flagged = collections.Counter(
        EngineError(code).name for _, code in run_against_golden(bench, cases) if code)
    # the fuzz really produced malformed streams of several kinds
    assert sum(flagged.values()) >= 30 and len(flagged) >= 3, flagged


# ---------------------------------------------------------------------------- wide deltas


def random_entry_codes(rng, enc):
    """The slot codes of one random nonzero weight: (hi, lo) for INT8, (code,) otherwise."""
    if enc == Encoding.INT8:
        v = rng.randrange(1, 256)
        return (v >> 4, v & 0xF)
    return (rng.randrange(1, 16),)


def wide_delta_stream(rng, enc, lanes, rows, cols):
    """A valid stream built word by word (not by ``compress``): deltas up to 31 wherever
    the row has room, so a word's prefix sums reach their maximum (31 per entry); rows
    ending at any split, escape-only words with no nonzero, padding after the last row."""
    per_word = lanes // 2 if enc == Encoding.INT8 else lanes
    pad = (0, 0) if enc == Encoding.INT8 else (0,)
    words, row, pos, has_weight = [], 0, 0, False
    while row < rows:
        ends = rng.random() < 0.5 or (row == rows - 1 and len(words) > 2 * rows)
        split = rng.randint(0, per_word) if ends else per_word
        escapes_only = rng.random() < 0.15
        entries = []
        for i in range(per_word):
            if ends and i == split:  # the next row starts at position 0
                row, pos, has_weight = row + 1, 0, False
            room = cols - 1 - pos
            if row == rows:
                entries.append((0, pad))  # after the last row: padding only
            elif escapes_only or rng.random() < 0.25:
                delta = min(room, 31 if escapes_only else rng.randint(0, 31))
                entries.append((delta, pad))  # an escape (or padding: delta 0)
                pos += delta
            elif room >= int(has_weight):
                delta = min(room, rng.randint(int(has_weight), 31))
                entries.append((delta, random_entry_codes(rng, enc)))
                pos, has_weight = pos + delta, True
            else:
                entries.append((0, pad))
        if ends and split == per_word:
            row, pos, has_weight = row + 1, 0, False
        slots = [(delta, codes[0]) for delta, codes in entries]
        if enc == Encoding.INT8:  # the low nibble's slot carries no delta
            slots = [s for (delta, (hi, lo)) in entries for s in ((delta, hi), (0, lo))]
        words.append(pack_word(ends, split, slots, lanes))
    return words


@pytest.mark.parametrize("lanes", [4, 8, 16])
def test_wide_delta_streams_against_golden(lanes):
    # The prefix sums at their full range, split over two stages: every entry a delta of
    # up to 31, rows ending at every split, and words holding no weight at all.
    rng = random.Random(900 + lanes)
    max_cols = 2048
    bench = Bench(lanes, max_cols=max_cols)
    cases = []
    for k in range(60):
        enc = list(Encoding)[k % 3]
        cb = random_codebook(rng) if enc == Encoding.CODEBOOK else (0,) * 16
        rows, cols = rng.randint(1, 6), rng.randint(32 * lanes, max_cols)
        cases.append((enc, cb, rows, cols, wide_delta_stream(rng, enc, lanes, rows, cols)))
    for enc, cb, rows, cols, words in cases:  # the generator writes valid streams only
        assert golden_verdict(words, rows, cols, enc, lanes, cb) is None
    assert run_against_golden(bench, cases) == [(None, 0)] * len(cases)
    # the streams reach the full range: a word's sum of 31 per entry, splits at both ends
    full_sums, row_ends, empty = 0, set(), 0
    for enc, _, _, _, words in cases:
        for word in words:
            end, split, slots = unpack_word(word, lanes)
            entries = slots[::2] if enc == Encoding.INT8 else slots
            full_sums += sum(delta for delta, _ in entries) == 31 * len(entries)
            if end:
                row_ends.add("before" if split == 0 else "last" if split == len(entries)
                             else "inside")
            empty += all(code == 0 for _, code in slots)
    assert full_sums >= 5 and row_ends == {"before", "inside", "last"} and empty >= 10, \
        (full_sums, row_ends, empty)


# ---------------------------------------------------------------------------- boundaries


def boundary_word(enc, end, split, entries, lanes):
    """A word from ``(delta, nonzero)`` entries: a weight of 1, or an escape or padding."""
    if enc == Encoding.INT8:  # the weight's low nibble in the second slot of its pair
        slots = [s for delta, nz in entries for s in ((delta, 0), (0, int(nz)))]
    else:
        slots = [(delta, int(nz)) for delta, nz in entries]
    return pack_word(end, split, slots, lanes)


def boundary_cases(enc, lanes):
    """``(name, rows, cols, words, expected)`` streams with a weight on the last column or
    one past it, and with the row ends one short of, exactly at or one past ``rows``;
    ``expected`` is None for a valid stream, else (index of the bad word, code)."""
    per = lanes // 2 if enc == Encoding.INT8 else lanes
    word = lambda end, split, entries: boundary_word(enc, end, split, entries, lanes)  # noqa: E731
    pad = [(0, False)] * per
    far = [(31, False)] * per  # escapes taking a row 31 columns per entry
    cases = []
    # First-row lanes: a weight at 31 * (its lane + 1) past the escapes of `pre` words,
    # so the room left in the row falls through 2**pb over the words.
    for pre in (0, 1, 2):
        for end, split in ((True, 1), (True, per), (False, per)):
            entries = [(31, j == split - 1) for j in range(split)] + pad[split:]
            words = [word(False, per, far)] * pre + [word(end, split, entries)]
            if not end:
                words.append(word(True, 0, pad))
            col = 31 * (per * pre + split)
            for cols, expected in ((col + 1, None), (col, (pre, EngineError.COLUMN))):
                cases.append((f"first-row weight at {col}, {pre} words in, end={end} "
                              f"split={split}, cols={cols}", 1, cols, words, expected))
    # Next-row lanes: a weight at 31 * (lanes after the split) in the second row.
    for pre in (0, 1):
        for split in (0, 1, per - 1):
            entries = [(0, False)] * split + [(31, j == per - 1) for j in range(split, per)]
            words = [word(False, per, pad)] * pre + [word(True, split, entries),
                                                     word(True, 0, pad)]
            col = 31 * (per - split)
            for cols, expected in ((col + 1, None), (col, (pre, EngineError.COLUMN))):
                cases.append((f"next-row weight at {col}, {pre} words in, split={split}, "
                              f"cols={cols}", 2, cols, words, expected))
    # Row ends: each word ends a row holding a weight at column 1 and starts the next one
    # with a weight at column 0, the last row's end word with padding after the split.
    ending = word(True, 1, [(1, True), (0, True)] + pad[2:])
    last_end = word(True, 1, [(1, True)] + pad[1:])
    for rows in (1, 2, 3, 5):
        exact = [ending] * (rows - 1) + [last_end]
        cases += [
            (f"{rows} rows end at rows", rows, 2, exact, None),
            (f"{rows} rows, a word after the last end", rows, 2,
             exact + [word(False, per, pad)], (rows, EngineError.LENGTH)),
            (f"{rows} rows, one end past rows", rows, 2,
             exact + [word(True, 0, pad)], (rows, EngineError.LENGTH)),
            (f"{rows} rows, a weight after the last end", rows, 2,
             [ending] * rows, (rows - 1, EngineError.LENGTH)),
            (f"{rows} rows, the last word without an end", rows, 2,
             [ending] * (rows - 1) + [word(False, per, pad)],
             (rows - 1, EngineError.TRUNCATED)),
        ]
        if rows > 1:
            cases.append((f"{rows} rows, the stream ends one row short", rows, 2,
                          [ending] * (rows - 2) + [last_end],
                          (rows - 2, EngineError.TRUNCATED)))
    return cases


@pytest.mark.parametrize("lanes", [4, 8, 16])
def test_column_and_row_count_boundaries(lanes):
    # A weight on the last column is accepted and one column further is a COLUMN error,
    # for first-row lanes (against the room left in the row, above and below 2**pb) and
    # next-row lanes (against cols); the row ends reaching rows exactly are accepted, one
    # past is LENGTH and one short TRUNCATED. The error must come out exactly with the
    # bad word, LATENCY cycles after it went in (words fed one per cycle), as golden says.
    cases = [(enc, *case) for enc in (Encoding.INT4, Encoding.INT8)
             for case in boundary_cases(enc, lanes)]
    bench = Bench(lanes, max_cols=2048)
    got = run_against_golden(bench, [(enc, (0,) * 16, rows, cols, words)
                                     for enc, _, rows, cols, words, _ in cases])
    for (enc, name, *_, expected), (first_err, code) in zip(cases, got):
        want = (None, 0) if expected is None else expected
        assert (first_err, code) == want, f"{enc.name} {name}: RTL flags word {first_err} " \
            f"with {EngineError(code).name}, expected {want}"
