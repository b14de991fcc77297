"""Weight decompressor: one compressed stream word in, up to ``lanes`` nonzero weights out."""

from __future__ import annotations

from amaranth import Array, Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from golden.weights import CODE_BITS, DELTA_BITS, SLOT_BITS, Encoding

from .config import EngineConfig
from .errors import EngineError


def popcount(bits):
    """Balanced adder tree over single bits."""
    vals = [b.as_unsigned() for b in bits]
    while len(vals) > 1:
        vals = [vals[i] + vals[i + 1] if i + 1 < len(vals) else vals[i]
                for i in range(0, len(vals), 2)]
    return vals[0]


class Decompressor(wiring.Component):
    """Decode stream words (``docs/weight-format.md``) into lane entries, checking each rule.

    One word per cycle when ``ce`` is high. Each output lane carries a column, an int8
    weight and a nonzero flag; ``out_first`` marks lanes that belong to the row ending in
    this word (all lanes when the row goes on). The first rule a word breaks sets ``error``,
    which stays set until the engine resets the block.

    Interface
    ---------
    ce : In(1)
        Pipeline enable; everything holds while low.
    in_word, in_valid, in_last : In ; in_ready : Out(1)
        Stream words; ``in_last`` marks the image's final word.
    encoding, codebook, cols, rows : In
        The layer's header fields.
    out_valid, out_end, out_col, out_weight, out_nz, out_first : Out
    error : Out(4)
        An ``EngineError`` code, 0 while all is well.
    nnz : Out(32)
        Nonzero weights decoded so far.
    rows_done : Out(16)
        Rows whose end has been decoded.
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
        cfg, L = self.cfg, self.cfg.lanes
        sb = cfg.split_bits
        w = self.in_word
        end = w[0]
        split = w[1:1 + sb]
        slots = [w[1 + sb + SLOT_BITS * i:1 + sb + SLOT_BITS * (i + 1)] for i in range(L)]
        d = [s[:DELTA_BITS] for s in slots]
        c = [s[DELTA_BITS:DELTA_BITS + CODE_BITS] for s in slots]

        is8 = self.encoding == Encoding.INT8
        is4 = self.encoding == Encoding.INT4
        per_word = Mux(is8, L // 2, L)
        codebook = Array(self.codebook[i] for i in range(16))

        delta, value, active = [], [], []
        for j in range(L):
            v4 = Mux(is4, c[j].as_signed(), codebook[c[j]])
            if j < L // 2:  # int8 weights take slot pairs: delta and high nibble, low nibble
                d8, v8 = d[2 * j], Cat(c[2 * j + 1], c[2 * j]).as_signed()
            else:
                d8, v8 = 0, 0
            dj = Signal(DELTA_BITS, name=f"delta{j}")
            vj = Signal(signed(8), name=f"value{j}")
            m.d.comb += [dj.eq(Mux(is8, d8, d[j])), vj.eq(Mux(is8, v8, v4))]
            delta.append(dj)
            value.append(vj)
            active.append(Mux(is8, j < L // 2, 1))

        # Prefix sums of the deltas give each slot's offset from the row's running position.
        cb = cfg.col_bits
        prefix = []
        acc = 0
        for j in range(L):
            p = Signal(cb, name=f"prefix{j}")
            m.d.comb += p.eq(acc + delta[j])
            prefix.append(p)
            acc = p
        base = Signal(cb)
        q = Signal(cb)  # offset where the next row starts inside this word
        m.d.comb += q.eq(Array([0] + prefix)[split])

        first = Signal(L)
        pos = []
        col_bad = []
        for j in range(L):
            m.d.comb += first[j].eq(~end | (split > j))
            pj = Signal(cb, name=f"pos{j}")
            m.d.comb += pj.eq(Mux(first[j], base + prefix[j], prefix[j] - q))
            pos.append(pj)
            col_bad.append(active[j] & (pj >= self.cols))
        nz = Signal(L)
        m.d.comb += nz.eq(Cat(*[active[j] & (value[j] != 0) for j in range(L)]))

        # A weight with delta 0 after another weight of its row would land on the same
        # column twice; an int8 low-nibble slot must not carry a delta.
        row_has_weight = Signal()
        seen_a, seen_b = row_has_weight, 0
        slot_bad = []
        for j in range(L):
            seen = Mux(first[j], seen_a, seen_b)
            low_delta = (is8 & (d[2 * j + 1] != 0)) if j < L // 2 else 0
            slot_bad.append((nz[j] & (delta[j] == 0) & seen) | low_delta)
            seen_a = seen_a | (nz[j] & first[j])
            seen_b = seen_b | (nz[j] & ~first[j])

        rows_done = Signal(16)
        last_row_ends = end & (rows_done + 1 == self.rows)
        split_err = (split > per_word) | (~end & (split != per_word))
        length_err = (rows_done >= self.rows) | (last_row_ends & (nz & ~first).any())
        col_err = Cat(*col_bad).any() | Cat(*slot_bad).any()
        trunc_err = self.in_last & (rows_done + end != self.rows)
        code = Mux(split_err, EngineError.SPLIT,
               Mux(length_err, EngineError.LENGTH,
               Mux(col_err, EngineError.COLUMN,
               Mux(trunc_err, EngineError.TRUNCATED, EngineError.OK))))

        error = Signal(4)
        nnz = Signal(32)
        ready = self.ce & (error == 0)
        fire = ready & self.in_valid
        m.d.comb += [
            self.in_ready.eq(ready),
            self.error.eq(error),
            self.nnz.eq(nnz),
            self.rows_done.eq(rows_done),
        ]
        with m.If(self.ce):
            m.d.sync += self.out_valid.eq(fire & (code == 0))
            with m.If(fire):
                m.d.sync += error.eq(code)
                with m.If(code == 0):
                    m.d.sync += [
                        base.eq(Mux(end, prefix[-1] - q, base + prefix[-1])),
                        row_has_weight.eq(Mux(end, seen_b, seen_a)),
                        rows_done.eq(rows_done + end),
                        nnz.eq(nnz + popcount(nz)),
                        self.out_end.eq(end),
                        self.out_nz.eq(nz),
                        self.out_first.eq(first),
                    ]
                    for j in range(L):
                        m.d.sync += [
                            self.out_col[j].eq(pos[j]),
                            self.out_weight[j].eq(value[j]),
                        ]
        return m
