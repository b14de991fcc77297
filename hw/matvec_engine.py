"""Matrix-vector engine: compressed weights in, ``y = requant(W x + b)`` out, with checks."""

from __future__ import annotations

from amaranth import Module, Mux, ResetInserter, Signal, signed
from amaranth.lib import data, fifo, wiring
from amaranth.lib.wiring import In, Out

from golden.weights import Encoding, word_bytes

from .config import EngineConfig
from .decompressor import Decompressor
from .errors import EngineError
from .mac_array import MacArray
from .memory_reader import MemoryReader
from .requantizer import MODE_INT16, Requantizer, RequantizerPort


class MatVecEngine(wiring.Component):
    """Run one compressed layer: fetch, decompress, multiply-accumulate, requantize, write.

    The host loads the activation vector, sets the layer's header fields, and pulses
    ``start``; the fields must hold still from the cycle of ``start`` until ``done`` (the
    processor's descriptor read port does; the engine keeps no copy of them, only its
    checks' verdict on them, registered in that cycle). The engine checks the shape
    against its buffers, streams the weight words and
    row parameters from their memories, and writes one int8 result per row. Any malformed
    input stops it with an ``EngineError`` code in ``error`` and ``done`` high; it never
    writes past row ``rows - 1``. Each start resets the datapath, so a run after an error
    starts clean.

    Interface
    ---------
    start : In(1)
        Run the layer the header fields describe.
    rows, cols, n_words, nnz, encoding, codebook, crc_stream, crc_params : In
        The image header (``golden.weights.Header``), held from ``start`` to ``done``.
    out_mode : In(2)
        Result range (``hw.requantizer``): int8, int8 with ReLU, or int16 (LSTM gates),
        held like the header.
    w_base : In(cfg.waddr_bits) ; p_base : In(cfg.paddr_bits)
        Addresses of the stream's first word and of row 0's parameters, held like the
        header (the readers take them in the cycle after ``start``); 0 for a memory
        holding one layer. The caller checks that the layer fits behind them (the
        processor's descriptor check); the engine checks ``n_words`` against
        ``cfg.weight_depth`` only.
    w_req_addr, w_req_valid, w_req_ready, w_resp_data, w_resp_valid
        Weight stream memory port (see ``MemoryReader``): ``w_req_addr`` counts up from
        ``w_base`` in a register.
    p_req_addr, p_req_valid, p_req_ready, p_resp_data, p_resp_valid
        Row parameter memory port (72-bit records: bias, multiplier, shift), from
        ``p_base`` up.
    act_waddr, act_wdata, act_we : In
        Activation buffer write port.
    out_addr, out_data, out_we : Out
        Output buffer write port.
    busy, done : Out(1) ; error : Out(4)
    cycles, macs, zero_acts, stalls, nnz_seen : Out(32)
        Performance counters of the last run: busy cycles, products done, products skipped
        for zero activations, cycles the MAC array waited for weights, weights decoded.
    requant : In(RequantizerPort)
        Only with ``lend_requantizer``: another unit's use of the engine's requantizer,
        its elements past the first stage (``Requantizer(lend=True).lent``;
        ``cfg.requantizer_stages - 1`` cycles from an element to ``out``, which is always
        the requantizer's output). While the engine runs (from the cycle after its checks
        until its last row is written) the requantizer takes the engine's rows; at any
        other time, a cycle later, these elements, so the other unit must not use it
        from ``start`` to ``done`` (the blocking sequencer's ``VectorAlu`` never does).

    Parameters
    ----------
    cfg : EngineConfig
    lend_requantizer : bool
        Add the ``requant`` port (the processor shares one requantizer between the engine
        and its vector ALU).
    """

    def __init__(self, cfg: EngineConfig, *, lend_requantizer: bool = False):
        if not isinstance(cfg, EngineConfig):
            raise TypeError(f"MatVecEngine: cfg must be an EngineConfig, got {cfg!r}")
        if not isinstance(lend_requantizer, bool):
            raise TypeError("MatVecEngine: lend_requantizer must be a bool, "
                            f"got {lend_requantizer!r}")
        self.cfg = cfg
        self.lend_requantizer = lend_requantizer
        lent = {"requant": In(RequantizerPort())} if lend_requantizer else {}
        addr_cols = max(1, (cfg.max_cols - 1).bit_length())
        addr_rows = max(1, (cfg.max_rows - 1).bit_length())
        super().__init__({
            "start": In(1),
            "rows": In(16), "cols": In(16), "n_words": In(32), "nnz": In(32),
            "encoding": In(8), "codebook": In(data.ArrayLayout(signed(8), 16)),
            "crc_stream": In(32), "crc_params": In(32), "out_mode": In(2),
            "w_base": In(cfg.waddr_bits), "p_base": In(cfg.paddr_bits),
            "w_req_addr": Out(cfg.waddr_bits), "w_req_valid": Out(1), "w_req_ready": In(1),
            "w_resp_data": In(cfg.word_bits), "w_resp_valid": In(1),
            "p_req_addr": Out(cfg.paddr_bits), "p_req_valid": Out(1), "p_req_ready": In(1),
            "p_resp_data": In(cfg.param_bits), "p_resp_valid": In(1),
            "act_waddr": In(addr_cols), "act_wdata": In(signed(8)), "act_we": In(1),
            "out_addr": Out(addr_rows), "out_data": Out(signed(16)), "out_we": Out(1),
            "busy": Out(1), "done": Out(1), "error": Out(4),
            "cycles": Out(32), "macs": Out(32), "zero_acts": Out(32), "stalls": Out(32),
            "nnz_seen": Out(32), **lent,
        })
        self.mac_array = MacArray(cfg)

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        # One-cycle synchronous reset of the datapath, in the CHECK cycle after each start:
        # registered, so the caller's start decision does not fan out to every reset
        # input of the readers, decompressor and MAC array in its own cycle. Nothing
        # runs in CHECK, so the run sees the same reset state.
        restart = Signal()

        rows, cols, n_words, nnz = self.rows, self.cols, self.n_words, self.nnz
        encoding, codebook, out_mode = self.encoding, self.codebook, self.out_mode

        # The header checks, registered every cycle so that CHECK decides on flip-flops
        # (issue 6: the compares, 32-bit for ``n_words``, sat between the header and
        # ``done``/``error``): in CHECK they hold the verdict on the start cycle's
        # fields, which the run then uses unchanged. One register per field, so no
        # field's compare shares a cycle with the OR over all of them.
        verdicts = {
            "rows_bad": (rows == 0) | (rows > cfg.max_rows),
            "cols_bad": (cols == 0) | (cols > cfg.max_cols),
            "words_bad": (n_words == 0) | (n_words > cfg.weight_depth),
            "encoding_bad": encoding > Encoding.CODEBOOK,
            "mode_bad": out_mode > MODE_INT16,
        }
        flags = {name: Signal(name=name) for name in verdicts}
        m.d.sync += [flags[name].eq(value) for name, value in verdicts.items()]
        shape_bad = flags["rows_bad"] | flags["cols_bad"] | flags["words_bad"]
        check_bad = shape_bad | flags["encoding_bad"] | flags["mode_bad"]
        check_error = Mux(shape_bad, EngineError.SHAPE,
                          Mux(flags["encoding_bad"], EngineError.ENCODING, EngineError.MODE))

        wr = MemoryReader(width=cfg.word_bits, addr_bits=cfg.waddr_bits,
                          depth=cfg.fifo_depth, pad_to=8 * word_bytes(cfg.lanes))
        pr = MemoryReader(width=cfg.param_bits, addr_bits=cfg.paddr_bits,
                          count_bits=cfg.row_bits,
                          depth=cfg.fifo_depth)
        dec = Decompressor(cfg)
        mac = self.mac_array
        rq = Requantizer(pipelined=cfg.pipelined_requantizer, lend=self.lend_requantizer)
        for name, block in (("wreader", wr), ("preader", pr), ("decompressor", dec),
                            ("mac_array", mac)):
            m.submodules[name] = ResetInserter(restart)(block)
        m.submodules.requantizer = rq  # cleared by ``restart`` through its clear input
        # Row sums wait here for their parameters; read synchronously (block RAM on iCE40).
        m.submodules.acc_fifo = acc_q = ResetInserter(restart)(
            fifo.SyncFIFOBuffered(width=32, depth=cfg.fifo_depth))

        running = Signal()
        ce = Signal()
        out_count = Signal(17)
        rows_written = Signal()  # out_count == rows
        error = Signal(4)
        done = Signal()
        cycles, macs, zero_acts, stalls = (Signal(32, name=n) for n in
                                           ("cycles", "macs", "zero_acts", "stalls"))

        m.d.comb += [
            ce.eq(running & acc_q.w_rdy),
            # the readers' address registers take the bases with the restart
            wr.base.eq(self.w_base), wr.load.eq(restart), pr.base.eq(self.p_base),
            pr.load.eq(restart),
            # weight stream -> decompressor
            wr.enable.eq(running), wr.count.eq(n_words),
            self.w_req_addr.eq(wr.req_addr), self.w_req_valid.eq(wr.req_valid),
            wr.req_ready.eq(self.w_req_ready),
            wr.resp_data.eq(self.w_resp_data), wr.resp_valid.eq(self.w_resp_valid),
            dec.ce.eq(ce), dec.in_word.eq(wr.out_data), dec.in_valid.eq(wr.out_valid),
            dec.in_last.eq(wr.out_last), wr.out_ready.eq(dec.in_ready),
            dec.encoding.eq(encoding), dec.codebook.eq(codebook),
            dec.cols.eq(cols), dec.rows.eq(rows),
            # decompressor -> MAC array -> row sums
            mac.ce.eq(ce),
            mac.in_valid.eq(dec.out_valid), mac.in_end.eq(dec.out_end),
            mac.in_col.eq(dec.out_col), mac.in_weight.eq(dec.out_weight),
            mac.in_nz.eq(dec.out_nz), mac.in_first.eq(dec.out_first),
            mac.act_waddr.eq(self.act_waddr), mac.act_wdata.eq(self.act_wdata),
            mac.act_we.eq(self.act_we & ~running),
            acc_q.w_data.eq(mac.row_acc), acc_q.w_en.eq(mac.row_valid),
            # row parameters joined with row sums -> requantizer
            pr.enable.eq(running), pr.count.eq(rows),
            self.p_req_addr.eq(pr.req_addr), self.p_req_valid.eq(pr.req_valid),
            pr.req_ready.eq(self.p_req_ready),
            pr.resp_data.eq(self.p_resp_data), pr.resp_valid.eq(self.p_resp_valid),
        ]
        join = running & acc_q.r_rdy & pr.out_valid
        if self.lend_requantizer:
            # Lent by ``running``, not by a valid bit: the borrower sends none, and its
            # elements must not count as rows (``in_valid`` stays the engine's). The
            # borrower's element enters the requantizer's second stage, from its registers.
            m.d.comb += rq.lend.eq(~running)
            m.d.comb += [getattr(rq.lent, name).eq(getattr(self.requant, name))
                         for name in ("x", "multiplier", "left", "right", "mode")]
            m.d.comb += self.requant.out.eq(rq.lent.out)
        m.d.comb += [
            acc_q.r_en.eq(join), pr.out_ready.eq(join),
            rq.clear.eq(restart), rq.in_valid.eq(join),
            rq.acc.eq(acc_q.r_data), rq.bias.eq(pr.out_data[0:32]),
            rq.multiplier.eq(pr.out_data[32:64]), rq.shift.eq(pr.out_data[64:72]),
            rq.mode.eq(out_mode),
            self.out_addr.eq(out_count),
            self.out_data.eq(rq.out),
            self.out_we.eq(running & rq.out_valid & ~rows_written),
        ]
        # ``out_count == rows``, kept in a register, so that neither the row write nor
        # RUN's end waits on a compare (``out_count`` never passes ``rows``, so
        # ``~rows_written`` is ``out_count < rows``). It is set by the write of row
        # ``rows - 1``: the compare against ``rows_last`` (``rows - 1``, registered; the
        # header holds from the start) runs beside the write enable, not after an add of
        # it (issue 6). Cleared at a start: a run that gets past CHECK has ``rows >= 1``.
        rows_last = Signal(17)
        m.d.sync += [rows_last.eq(rows - 1), out_count.eq(out_count + self.out_we)]
        with m.If(self.out_we & (out_count == rows_last)):
            m.d.sync += rows_written.eq(1)

        m.d.sync += restart.eq(0)  # a pulse, unless IDLE sets it below
        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [
                        error.eq(0), done.eq(0), out_count.eq(0), rows_written.eq(0),
                        cycles.eq(0), macs.eq(0), zero_acts.eq(0), stalls.eq(0),
                    ]
                    m.d.sync += restart.eq(1)
                    m.next = "CHECK"
            with m.State("CHECK"):
                m.d.sync += cycles.eq(cycles + 1)
                with m.If(check_bad):
                    m.d.sync += [error.eq(check_error), done.eq(1)]
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += running.eq(1)
                    m.next = "RUN"
            with m.State("RUN"):
                m.d.sync += [
                    cycles.eq(cycles + 1),
                    macs.eq(macs + mac.macs),
                    zero_acts.eq(zero_acts + mac.zero_acts),
                ]
                # The MAC array starves: no word ready, or held by a full row FIFO. The
                # condition is the count's enable, not an addend: as the carry-in it
                # went through the 32-bit carry chain (issue 6: -0.23 ns, run m32).
                with m.If(~wr.done & ~(ce & wr.out_valid)):
                    m.d.sync += stalls.eq(stalls + 1)
                with m.If(dec.error != 0):
                    m.d.sync += [error.eq(dec.error), done.eq(1), running.eq(0)]
                    m.next = "IDLE"
                # ``wr.done`` is a register (the restart's load leaves it low: a run
                # that gets past CHECK has ``n_words >= 1``)
                with m.Elif(rows_written & wr.done & ~dec.out_valid):
                    m.d.sync += running.eq(0)
                    m.next = "FINISH"
            with m.State("FINISH"):
                m.d.sync += [cycles.eq(cycles + 1), done.eq(1)]
                with m.If(dec.nnz != nnz):
                    m.d.sync += error.eq(EngineError.NNZ)
                with m.Elif(wr.crc != self.crc_stream):
                    m.d.sync += error.eq(EngineError.CRC_STREAM)
                with m.Elif(pr.crc != self.crc_params):
                    m.d.sync += error.eq(EngineError.CRC_PARAMS)
                m.next = "IDLE"
        m.d.comb += [
            self.busy.eq(~fsm.ongoing("IDLE")),
            self.done.eq(done), self.error.eq(error),
            self.cycles.eq(cycles), self.macs.eq(macs), self.zero_acts.eq(zero_acts),
            self.stalls.eq(stalls), self.nnz_seen.eq(dec.nnz),
        ]
        return m
