"""Zero-skipping MAC array: ``lanes`` multipliers, split adder trees and a row accumulator."""

from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .config import EngineConfig
from .decompressor import popcount


def adder_tree(values):
    """Balanced tree of adds (log2 depth, not Python's linear ``sum`` chain)."""
    while len(values) > 1:
        values = [values[i] + values[i + 1] if i + 1 < len(values) else values[i]
                  for i in range(0, len(values), 2)]
    return values[0]


class MacArray(wiring.Component):
    """Multiply each lane's nonzero weight by its activation and sum per row.

    The decompressor only sends nonzero weights, so zero weights never take a lane. A word
    may end one row and start the next: lanes flagged ``in_first`` add into the row that
    ends, the others into the row that starts, through two adder trees. The activation
    buffer has one read port per lane (one copy per lane in block RAM); a nonzero weight
    meeting a zero activation is counted and its multiplier result gated off.

    Pipeline: activation read, multiply, adder trees, accumulate (4 stages, all held
    while ``ce`` is low).

    Interface
    ---------
    ce : In(1)
    in_valid, in_end, in_col, in_weight, in_nz, in_first : In
        Decompressor output.
    act_waddr, act_wdata, act_we : In
        Loads the activation vector.
    row_valid : Out(1) ; row_acc : Out(signed(32))
        A finished row's sum (without bias), for one ``ce`` cycle.
    macs, zero_acts : Out
        Products done and products skipped for a zero activation, this cycle.
    """

    def __init__(self, cfg: EngineConfig):
        self.cfg = cfg
        L = cfg.lanes
        addr = unsigned(max(1, (cfg.max_cols - 1).bit_length()))
        cnt = unsigned(L.bit_length())
        super().__init__({
            "ce": In(1),
            "in_valid": In(1), "in_end": In(1),
            "in_col": In(data.ArrayLayout(addr, L)),
            "in_weight": In(data.ArrayLayout(signed(8), L)),
            "in_nz": In(L), "in_first": In(L),
            "act_waddr": In(addr), "act_wdata": In(signed(8)), "act_we": In(1),
            "row_valid": Out(1), "row_acc": Out(signed(32)),
            "macs": Out(cnt), "zero_acts": Out(cnt),
        })
        #: The activation buffer (a testbench may load it directly).
        self.acts = Memory(shape=signed(8), depth=cfg.max_cols, init=[])

    def elaborate(self, platform):
        m = Module()
        L, ce = self.cfg.lanes, self.ce
        m.submodules.acts = acts = self.acts
        wp = acts.write_port()
        m.d.comb += [wp.addr.eq(self.act_waddr), wp.data.eq(self.act_wdata), wp.en.eq(self.act_we)]

        # Stage 1: read the activations (synchronous read ports, held while ce is low).
        s1_valid, s1_end = Signal(), Signal()
        s1_w = [Signal(signed(8), name=f"s1_w{j}") for j in range(L)]
        s1_nz, s1_first = Signal(L), Signal(L)
        x = []
        for j in range(L):
            rp = acts.read_port()
            m.d.comb += [rp.addr.eq(self.in_col[j]), rp.en.eq(ce)]
            x.append(rp.data)
        with m.If(ce):
            m.d.sync += [s1_valid.eq(self.in_valid), s1_end.eq(self.in_end),
                         s1_nz.eq(self.in_nz), s1_first.eq(self.in_first)]
            m.d.sync += [s1_w[j].eq(self.in_weight[j]) for j in range(L)]

        # Stage 2: multiply; a zero weight or activation contributes nothing.
        s2_valid, s2_end = Signal(), Signal()
        s2_p = [Signal(signed(16), name=f"s2_p{j}") for j in range(L)]
        s2_first = Signal(L)
        act_nz = Cat(*[x[j] != 0 for j in range(L)])
        with m.If(ce):
            m.d.sync += [s2_valid.eq(s1_valid), s2_end.eq(s1_end), s2_first.eq(s1_first)]
            m.d.sync += [s2_p[j].eq(Mux(s1_nz[j] & act_nz[j], s1_w[j] * x[j], 0))
                         for j in range(L)]
        m.d.comb += [
            self.macs.eq(Mux(ce & s1_valid, popcount(s1_nz & act_nz), 0)),
            self.zero_acts.eq(Mux(ce & s1_valid, popcount(s1_nz & ~act_nz), 0)),
        ]

        # Stage 3: one tree for the row that ends here, one for the row that starts.
        s3_valid, s3_end = Signal(), Signal()
        s3_a, s3_b = Signal(signed(32)), Signal(signed(32))
        with m.If(ce):
            m.d.sync += [
                s3_valid.eq(s2_valid), s3_end.eq(s2_end),
                s3_a.eq(adder_tree([Mux(s2_first[j], s2_p[j], 0) for j in range(L)])),
                s3_b.eq(adder_tree([Mux(s2_first[j], 0, s2_p[j]) for j in range(L)])),
            ]

        # Stage 4: accumulate (32-bit wrap, as the golden model's wrap_int32).
        acc = Signal(signed(32))
        m.d.comb += [
            self.row_valid.eq(ce & s3_valid & s3_end),
            self.row_acc.eq(acc + s3_a),
        ]
        with m.If(ce & s3_valid):
            m.d.sync += acc.eq(Mux(s3_end, s3_b, acc + s3_a))
        return m
