"""Zero-skipping MAC array: ``lanes`` multipliers, split adder trees and a row accumulator."""

from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .config import EngineConfig
from .decompressor import popcount
from .registered_read import RegisteredRead


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
    buffer is one memory per lane (``acts``, written together, each read by its lane): what
    a block RAM with one read port per lane becomes anyway, without asking Yosys to split a
    16-read-port memory (which crashes Yosys 0.70's ``memory_libmap``); a nonzero weight
    meeting a zero activation is counted; lanes without a nonzero weight multiply by 0.

    Pipeline: activation read, the block RAM's output register, an activation register in
    the fabric (the route from the RAM off the multiplier path), multiply, adder trees but
    their last level, that level with the accumulate (6 stages, all held while ``ce`` is
    low).

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
        Products done and products skipped for a zero activation, registered: each word's
        counts show for one cycle, the cycle after its multiply stage moved.
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
        #: The activation buffer, one copy per lane (a testbench loading it directly writes
        #: every copy).
        #: ``no_rw_check``: the engine writes them only while not running (``ce`` low),
        #: and reads them only with ``ce``, so a read never meets a write.
        self.acts = [Memory(shape=signed(8), depth=cfg.max_cols, init=[],
                            attrs={"no_rw_check": 1}) for _ in range(L)]

    def elaborate(self, platform):
        m = Module()
        L, ce = self.cfg.lanes, self.ce
        # Stage 1: read the activations, each a ``RegisteredRead`` held while ce is low:
        # Yosys takes its register into the block RAM (with its clock enable), so
        # ``s2_x`` alone captures the RAM's output (and ``hw.bram_outreg`` can move it into
        # the RAM). A synchronous port would keep Amaranth's "the old word" on a
        # collision, which Yosys emulates with a LUT in front of ``s2_x`` (issue 6).
        x = []
        for j, copy in enumerate(self.acts):
            m.submodules[f"acts{j}"] = copy
            wp = copy.write_port()
            m.submodules[f"acts{j}_read"] = rd = RegisteredRead(memory=copy, enable=True)
            m.d.comb += [wp.addr.eq(self.act_waddr), wp.data.eq(self.act_wdata),
                         wp.en.eq(self.act_we), rd.addr.eq(self.in_col[j]), rd.en.eq(ce)]
            x.append(rd.data)
        s1_valid, s1_end = Signal(), Signal()
        s1_w = [Signal(signed(8), name=f"s1_w{j}") for j in range(L)]
        s1_nz, s1_first = Signal(L), Signal(L)
        with m.If(ce):
            m.d.sync += [s1_valid.eq(self.in_valid), s1_end.eq(self.in_end),
                         s1_nz.eq(self.in_nz), s1_first.eq(self.in_first)]
            m.d.sync += [s1_w[j].eq(self.in_weight[j]) for j in range(L)]

        # Stage 2: the activations' capture register, which ``hw.bram_outreg`` moves into
        # the block RAM (its output register: about 1 ns clock-to-out instead of 5.83).
        s2_valid, s2_end = Signal(), Signal()
        s2_w = [Signal(signed(8), name=f"s2_w{j}") for j in range(L)]
        s2_x = [Signal(signed(8), name=f"s2_x{j}", reset_less=True) for j in range(L)]
        s2_nz, s2_first = Signal(L), Signal(L)
        with m.If(ce):
            m.d.sync += [s2_valid.eq(s1_valid), s2_end.eq(s1_end), s2_nz.eq(s1_nz),
                         s2_first.eq(s1_first)]
            m.d.sync += [s2_w[j].eq(Mux(s1_nz[j], s1_w[j], 0)) for j in range(L)]
            m.d.sync += [s2_x[j].eq(x[j]) for j in range(L)]

        # Stage 3: the activations again, in the fabric (placed near the
        # multipliers and the zero counts they feed), so that the route from the RAM's
        # column has a cycle of its own (issue 6). It shared one with the RAM's 5.83 ns
        # clock-to-out when ``s2_x`` was in the fabric (-0.63 ns, 8 lanes, seed 1), and
        # with the multiply when ``s2_x`` was in the RAM without this stage (run m26: -0.9
        # to -1.5 ns).
        s3_valid, s3_end = Signal(), Signal()
        s3_w = [Signal(signed(8), name=f"s3_w{j}") for j in range(L)]
        s3_x = [Signal(signed(8), name=f"s3_x{j}", reset_less=True) for j in range(L)]
        s3_nz, s3_first = Signal(L), Signal(L)
        with m.If(ce):
            m.d.sync += [s3_valid.eq(s2_valid), s3_end.eq(s2_end), s3_nz.eq(s2_nz),
                         s3_first.eq(s2_first)]
            m.d.sync += [s3_w[j].eq(s2_w[j]) for j in range(L)]
            m.d.sync += [s3_x[j].eq(s2_x[j]) for j in range(L)]

        # Stage 4: multiply; a zero weight or activation contributes nothing.
        s4_valid, s4_end = Signal(), Signal()
        s4_p = [Signal(signed(16), name=f"s4_p{j}") for j in range(L)]
        s4_first = Signal(L)
        act_nz = Cat(*[s3_x[j] != 0 for j in range(L)])
        with m.If(ce):
            m.d.sync += [s4_valid.eq(s3_valid), s4_end.eq(s3_end), s4_first.eq(s3_first)]
            m.d.sync += [s4_p[j].eq(s3_w[j] * s3_x[j]) for j in range(L)]
        macs, zero_acts = Signal.like(self.macs), Signal.like(self.zero_acts)
        m.d.sync += [
            macs.eq(Mux(ce & s3_valid, popcount(s3_nz & act_nz), 0)),
            zero_acts.eq(Mux(ce & s3_valid, popcount(s3_nz & ~act_nz), 0)),
        ]
        m.d.comb += [self.macs.eq(macs), self.zero_acts.eq(zero_acts)]

        # Stage 5: one tree for the row that ends here, one for the row that starts, each
        # registered as two halves: their last add joins stage 6's, so the masks and the
        # tree's levels before it fit in a cycle (the tree was the deepest stage).
        half = (L + 1) // 2
        s5_valid, s5_end = Signal(), Signal()
        s5_a = [Signal(signed(32), name=f"s5_a{k}") for k in range(2)]
        s5_b = [Signal(signed(32), name=f"s5_b{k}") for k in range(2)]
        ends_here = [Mux(s4_first[j], s4_p[j], 0) for j in range(L)]
        starts_here = [Mux(s4_first[j], 0, s4_p[j]) for j in range(L)]
        with m.If(ce):
            m.d.sync += [s5_valid.eq(s4_valid), s5_end.eq(s4_end)]
            for regs, terms in ((s5_a, ends_here), (s5_b, starts_here)):
                halves = (terms[:half], terms[half:] or [0])
                m.d.sync += [r.eq(adder_tree(list(h))) for r, h in zip(regs, halves)]

        # Stage 6: accumulate (32-bit wrap, as the golden model's wrap_int32).
        acc = Signal(signed(32))
        row_sum = Signal(signed(32))
        m.d.comb += [
            row_sum.eq(acc + s5_a[0] + s5_a[1]),
            self.row_valid.eq(ce & s5_valid & s5_end),
            self.row_acc.eq(row_sum),
        ]
        with m.If(ce & s5_valid):
            m.d.sync += acc.eq(Mux(s5_end, s5_b[0] + s5_b[1], row_sum))
        return m
