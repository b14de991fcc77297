"""Weight decompressor: one compressed stream word in, up to ``lanes`` nonzero weights out."""

from __future__ import annotations

from amaranth import Array, Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from golden.weights import CODE_BITS, DELTA_BITS, MAX_DELTA, SLOT_BITS, Encoding

from .config import EngineConfig
from .errors import EngineError

#: ``ce`` cycles from a word entering to its lanes on the outputs: decode and the first
#: half of the prefix sums, their second half and the word's checks, running position and
#: checks.
LATENCY = 3


def popcount(bits):
    """Balanced adder tree over single bits."""
    vals = [b.as_unsigned() for b in bits]
    while len(vals) > 1:
        vals = [vals[i] + vals[i + 1] if i + 1 < len(vals) else vals[i]
                for i in range(0, len(vals), 2)]
    return vals[0]


def prefix_sum_levels(values, *, start, stop):
    """Levels ``start`` to ``stop - 1`` of Sklansky's inclusive prefix sum.

    Level ``k`` adds into each entry of every odd block of ``2**k`` entries the last entry
    of the block before it, so ``log2(len)`` adder levels (not a serial chain) take
    ``values`` to their prefix sums, and a pipeline may register the sums between levels.

    Parameters
    ----------
    values : list of Value
        The entries after level ``start - 1`` (the raw values for ``start = 0``).
    start, stop : int
        The levels to apply, ``0 <= start <= stop``.

    Returns
    -------
    list of Value
        The entries after level ``stop - 1``.
    """
    if not 0 <= start <= stop:
        raise ValueError(f"prefix_sum_levels: need 0 <= start <= stop, got {start}, {stop}")
    sums = list(values)
    for level in range(start, stop):
        span = 1 << level
        sums = [s if (j // span) % 2 == 0 else s + sums[(j // span) * span - 1]
                for j, s in enumerate(sums)]
    return sums


class Decompressor(wiring.Component):
    """Decode stream words (``docs/weight-format.md``) into lane entries, checking each rule.

    A three-stage pipeline taking one word per cycle when ``ce`` is high (``LATENCY``):

    1. slot decode, nonzero and first-row flags, and the first half of the adder levels
       of two delta prefix sums: over all lanes, and over the lanes that start the next
       row only (their deltas masked);
    2. the second half of those levels, which gives every lane its offset (first-row
       lanes: from the row's running position; the others: their column in the next
       row) with no search for where the next row starts; the word's own checks (split
       field, repeated columns within the word, int8 low-nibble deltas); each lane's
       codebook entry;
    3. the running column position and row count (the only loop-carried state), the
       column and length checks against them, the output registers. Each check is at
       most one carry chain from registers: offsets compare with registered bounds
       saturated where no offset reaches (the room left in the row for first-row
       lanes, ``cols`` for the others), and the row-count checks read registered flags.

    No stage holds more than half the prefix sums' adder levels (two at 16 lanes) behind
    a few LUT levels. The mode bits that depend only on the header (INT8, INT4, which
    codes are nonzero weights) are registered every cycle, not behind ``ce`` or the
    reset, so the decode sees registers, not the header's fan-out.

    The output data registers load every ``ce`` cycle; a word breaking a rule only clears
    ``out_valid``, so the checks stay off the data registers' enables. The row count
    takes every row end, the rejected word's too: the error it latches stops the words
    behind it, so the checks stay off the counters' enables as well. Each output lane
    carries a column, an int8 weight and a nonzero flag; ``out_first`` marks lanes that
    belong to the row ending in this word (all lanes when the row goes on). The first rule
    a word breaks sets ``error``, which stays set until the engine resets the block; words
    behind it in the pipeline are dropped.

    Interface
    ---------
    ce : In(1)
        Pipeline enable; everything holds while low.
    in_word, in_valid, in_last : In ; in_ready : Out(1)
        Stream words; ``in_last`` marks the image's final word.
    encoding, codebook, cols, rows : In
        The layer's header fields, stable while the block runs; ``encoding`` and
        ``codebook`` from the cycle before the first word at the latest, ``cols`` and
        ``rows`` from the cycle after it.
    out_valid, out_end, out_col, out_weight, out_nz, out_first : Out
    error : Out(4)
        An ``EngineError`` code, 0 while all is well.
    nnz : Out(32)
        Nonzero weights decoded so far (one cycle after their word's ``out_valid``).
    rows_done : Out(16)
        Rows whose end has been decoded (after an error, counting the rejected word's).
    """

    def __init__(self, cfg: EngineConfig):
        self.cfg = cfg
        L = cfg.lanes
        self._addr_shape = unsigned(max(1, (cfg.max_cols - 1).bit_length()))
        super().__init__({
            "ce": In(1),
            "in_word": In(cfg.word_bits), "in_valid": In(1), "in_last": In(1),
            "in_ready": Out(1),
            "encoding": In(2), "codebook": In(data.ArrayLayout(signed(8), 16)),
            "cols": In(16), "rows": In(16),
            "out_valid": Out(1), "out_end": Out(1),
            "out_col": Out(data.ArrayLayout(self._addr_shape, L)),
            "out_weight": Out(data.ArrayLayout(signed(8), L)),
            "out_nz": Out(L), "out_first": Out(L),
            "error": Out(4), "nnz": Out(32), "rows_done": Out(16),
        })

    def elaborate(self, platform):
        m = Module()
        cfg, L, ce = self.cfg, self.cfg.lanes, self.ce
        sb = cfg.split_bits
        pb = (MAX_DELTA * L).bit_length()  # a word's prefix sums
        # The header's mode bits, registered: ``encoding`` and ``codebook`` hold for the
        # whole run, so this costs no cycle, and not resetting them lets the first word
        # follow a reset directly.
        is8, is4 = Signal(reset_less=True), Signal(reset_less=True)
        code_nz = Signal(16, reset_less=True)  # code c is a nonzero weight (not INT8)
        cb_nz = Cat(*[self.codebook[i] != 0 for i in range(16)])
        m.d.sync += [
            is8.eq(self.encoding == Encoding.INT8), is4.eq(self.encoding == Encoding.INT4),
            code_nz.eq(Mux(self.encoding == Encoding.CODEBOOK, cb_nz, 0xFFFE)),
        ]
        per_word = Mux(is8, L // 2, L)
        active = [Mux(is8, j < L // 2, 1) for j in range(L)]
        error = Signal(4)
        stop = error != 0
        m.d.comb += self.in_ready.eq(ce & ~stop)
        levels = (L - 1).bit_length()  # Sklansky levels of a word's prefix sums
        levels1 = levels // 2  # stage 1 also decodes, so it takes the smaller half

        # ---- Stage 1: slot decode, per-slot flags, the first prefix-sum levels.
        w = self.in_word
        end = w[0]
        split = w[1:1 + sb]
        slots = [w[1 + sb + SLOT_BITS * i:1 + sb + SLOT_BITS * (i + 1)] for i in range(L)]
        d = [s[:DELTA_BITS] for s in slots]
        c = [s[DELTA_BITS:DELTA_BITS + CODE_BITS] for s in slots]
        first = [~end | (split > j) for j in range(L)]
        delta, nz = [], []
        for j in range(L):
            # int8 weights take slot pairs: delta and high nibble, low nibble.
            d8 = d[2 * j] if j < L // 2 else 0
            nz8 = (c[2 * j] != 0) | (c[2 * j + 1] != 0) if j < L // 2 else 0
            delta.append(Mux(is8, d8, d[j]))
            nz.append(Mux(is8, nz8, code_nz.bit_select(c[j], 1)))
        next_delta = [Mux(first[j], 0, delta[j]) for j in range(L)]
        v1, e1, last1 = Signal(), Signal(), Signal()
        codes1 = Signal(CODE_BITS * L)
        half_bits = (MAX_DELTA << levels1).bit_length()
        # all lanes' sums, and those of the lanes that start the next row
        all1 = [Signal(half_bits, name=f"all1_{j}") for j in range(L)]
        next1 = [Signal(half_bits, name=f"next1_{j}") for j in range(L)]
        nz1, dz1, first1 = Signal(L), Signal(L), Signal(L)
        split_err1, low_delta1 = Signal(), Signal()
        with m.If(ce):
            m.d.sync += [
                v1.eq(self.in_valid & ~stop), e1.eq(end), last1.eq(self.in_last),
                codes1.eq(Cat(*c)),
                nz1.eq(Cat(*[active[j] & nz[j] for j in range(L)])),
                dz1.eq(Cat(*[dj == 0 for dj in delta])),
                first1.eq(Cat(*first)),
                split_err1.eq((split > per_word) | (~end & (split != per_word))),
                low_delta1.eq(is8 & Cat(*[d[2 * j + 1] for j in range(L // 2)]).any()),
            ]
            for regs, vals in ((all1, delta), (next1, next_delta)):
                m.d.sync += [r.eq(v) for r, v in
                             zip(regs, prefix_sum_levels(vals, start=0, stop=levels1))]

        # ---- Stage 2: the last prefix-sum levels give the lanes' offsets; word-local checks.
        # First-row lanes are a prefix of the word, so a first-row lane's sum over all
        # lanes is its offset from the row's running position, and a next-row lane's sum
        # over the next row's lanes is its column.
        all_sums = prefix_sum_levels(all1, start=levels1, stop=levels)
        next_sums = prefix_sum_levels(next1, start=levels1, stop=levels)
        # A weight with delta 0 after another weight of its row would land on the same
        # column twice. Within the word that is decided here; against the row's earlier
        # words (only for first-row lanes) in stage 3.
        repeat_in_word, zero_delta_first = [], []
        seen_a = seen_b = 0
        for j in range(L):
            rep = nz1[j] & dz1[j]
            repeat_in_word.append(rep & Mux(first1[j], seen_a, seen_b))
            zero_delta_first.append(rep & first1[j])
            seen_a = seen_a | (nz1[j] & first1[j])
            seen_b = seen_b | (nz1[j] & ~first1[j])
        v2, e2, last2, split_err2 = Signal(), Signal(), Signal(), Signal()
        codes2 = Signal(CODE_BITS * L)
        # Each lane's codebook entry, looked up here so that stage 3 only picks the mode's
        # weight (the lookup and the mode choices together were one of stage 3's longest
        # paths, issue 6).
        entry2 = [Signal(signed(8), name=f"entry2_{j}") for j in range(L)]
        codebook = Array(self.codebook[i] for i in range(16))
        # first-row lanes: the offset from the row's running position; the others: their
        # column in the next row
        offset2 = [Signal(pb, name=f"offset2_{j}") for j in range(L)]
        nz2, first2 = Signal(L), Signal(L)
        total2, tail2 = Signal(pb), Signal(pb)
        local_bad2, zero_delta_first2 = Signal(), Signal()
        nz_first2, nz_next2 = Signal(), Signal()
        pop2 = Signal(range(L + 1))
        with m.If(ce):
            m.d.sync += [
                v2.eq(v1 & ~stop), e2.eq(e1), last2.eq(last1), split_err2.eq(split_err1),
                codes2.eq(codes1), nz2.eq(nz1), first2.eq(first1),
                *[e.eq(codebook[codes1[CODE_BITS * j:CODE_BITS * (j + 1)]])
                  for j, e in enumerate(entry2)],
                total2.eq(all_sums[-1]), tail2.eq(next_sums[-1]),
                local_bad2.eq(Cat(*repeat_in_word).any() | low_delta1),
                zero_delta_first2.eq(Cat(*zero_delta_first).any()),
                nz_first2.eq((nz1 & first1).any()), nz_next2.eq((nz1 & ~first1).any()),
                pop2.eq(popcount(nz1)),
            ]
            m.d.sync += [o.eq(Mux(first1[j], all_sums[j], next_sums[j]))
                         for j, o in enumerate(offset2)]

        # ---- Stage 3: running position and row count; checks; outputs.
        # The bounds saturate at ``2**pb``, which no offset reaches, so the column checks
        # are pb + 1 bit compares between registers.
        sat = 1 << pb
        cols_sat = Signal(pb + 1, reset_less=True)  # min(cols, 2**pb), a header constant
        rows_less2 = Signal(16, reset_less=True)  # rows_done while the second-to-last row runs
        m.d.sync += [cols_sat.eq(Mux(self.cols[pb:].any(), sat, self.cols)),
                     rows_less2.eq(self.rows - 2)]
        base = Signal(cfg.col_bits)  # column of the row's last slot so far
        room = Signal(16)  # cols - base: first-row lanes fit while their offset < room
        room_sat = Signal(pb + 1)  # min(room, 2**pb)
        row_has_weight = Signal()
        rows_done = Signal(16)
        all_rows = Signal()  # rows_done == rows
        last_row = Signal()  # rows_done + 1 == rows
        fresh = Signal(init=1)  # no word accepted yet: room and the row flags follow the header
        col_bad = [active[j] & Mux(first2[j], offset2[j] >= room_sat, offset2[j] >= cols_sat)
                   for j in range(L)]
        split_err = split_err2
        length_err = all_rows | (e2 & last_row & nz_next2)
        col_err = (Cat(*col_bad).any() | local_bad2
                   | (row_has_weight & zero_delta_first2))
        trunc_err = last2 & Mux(e2, ~last_row, ~all_rows)
        code = Mux(split_err, EngineError.SPLIT,
               Mux(length_err, EngineError.LENGTH,
               Mux(col_err, EngineError.COLUMN,
               Mux(trunc_err, EngineError.TRUNCATED, EngineError.OK))))
        fire = ce & v2 & ~stop
        accepted = Signal()  # a word left with out_valid last cycle: count its nonzeros
        pop3 = Signal(range(L + 1))
        nnz = Signal(32)
        m.d.sync += [accepted.eq(fire & (code == 0)), pop3.eq(pop2)]
        with m.If(accepted):
            m.d.sync += nnz.eq(nnz + pop3)
        with m.If(ce):
            m.d.sync += [
                self.out_valid.eq(v2 & ~stop & (code == 0)),
                self.out_end.eq(e2), self.out_nz.eq(nz2), self.out_first.eq(first2),
            ]
            c2 = [codes2[CODE_BITS * j:CODE_BITS * (j + 1)] for j in range(L)]
            for j in range(L):
                v4 = Mux(is4, c2[j].as_signed(), entry2[j])
                v8 = Cat(c2[2 * j + 1], c2[2 * j]).as_signed() if j < L // 2 else 0
                m.d.sync += [
                    self.out_col[j].eq(Mux(first2[j], base + offset2[j], offset2[j])),
                    self.out_weight[j].eq(Mux(is8, v8, v4)),
                ]
        # The room after this word, and saturated, beside ``fire``: it chooses between
        # them last (``cols_sat`` is the header's), so ``ce`` from the row FIFO's level
        # and the subtract's carry chain meet in one multiplexer before ``room_sat``
        # (issue 6: -0.36 ns on seed 2 of run m34).
        fired = Signal(16)
        m.d.comb += fired.eq(Mux(e2, self.cols - tail2, room - total2))
        with m.If(fire | fresh):
            m.d.sync += [room.eq(Mux(fire, fired, self.cols)),
                         room_sat.eq(Mux(fire, Mux(fired[pb:].any(), sat, fired), cols_sat))]
        with m.If(fire):
            m.d.sync += [
                error.eq(code), fresh.eq(0),
                base.eq(Mux(e2, tail2, base + total2)),
                row_has_weight.eq(Mux(e2, nz_next2, row_has_weight | nz_first2)),
            ]
            # A row end counts whatever the checks say: a word breaking a rule sets
            # ``error``, which stops every later word, so the counters' enables stay
            # free of the checks.
            with m.If(e2):
                m.d.sync += [rows_done.eq(rows_done + 1), all_rows.eq(last_row),
                             last_row.eq(rows_done == rows_less2)]
        with m.Elif(fresh):
            m.d.sync += [all_rows.eq(self.rows == 0), last_row.eq(self.rows == 1)]
        m.d.comb += [
            self.error.eq(error),
            self.nnz.eq(nnz),
            self.rows_done.eq(rows_done),
        ]
        return m
