"""NEP processor core: the sequencer of ``docs/isa.md`` around the matrix-vector engine."""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, ResetInserter, Signal, Value, signed
from amaranth.lib import enum, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from compiler.isa import (
    ELEMENTWISE,
    FIELDS,
    P_RESERVED_MASK,
    RESERVED_FIELDS,
    STREAM_READ_LATENCY,
    VSHIFT_AMOUNT_MASK,
    VSHIFT_MAX_LEFT,
    VSHIFT_RIGHT,
    VSHIFT_SAT8,
    ErrorCode,
    Mode,
    Op,
    ProcessorConfig,
)
from golden.numerics import MAX_LEFT_SHIFT, MAX_RIGHT_SHIFT
from golden.weights import PARAM_BYTES

from .activation_lut import LATENCY as LUT_LATENCY
from .activation_lut import ActivationLut
from .bram_outreg import ECP5_LUT_RAM, NO_OUTREG
from .config import EngineConfig
from .lstm_cell import H_LATENCY, LstmCell
from .matvec_engine import MatVecEngine
from .registered_read import RegisteredRead
from .requantizer import MODE_INT16
from .vector_alu import OP_ADD, OP_MUL_REQUANT, OP_MUL_RSHIFT, OP_SHIFT, VectorAlu

__all__ = ["CELL_TAIL_CYCLES", "DESC_FIELDS", "DESC_RESERVED_PARTS", "HostMem", "Processor",
           "host_wdata_bits"]

#: Descriptor fields as (low bit, width) of the 512-bit little-endian record
#: (``compiler.isa.Descriptor``; ``tests/unit/test_processor.py`` checks them against it).
DESC_FIELDS = {
    "stream_base": (0, 32), "n_words": (32, 32), "param_base": (64, 32), "nnz": (96, 32),
    "crc_stream": (128, 32), "crc_params": (160, 32), "rows": (192, 16), "cols": (208, 16),
    "split": (224, 16), "encoding": (240, 8), "mode": (248, 8), "const_index": (256, 8),
    "cell_frac_bits": (264, 8), "reserved16": (272, 16), "codebook": (288, 128),
    "reserved96": (416, 96),
}

#: Descriptor parts holding reserved bits: part k (bits 32k .. 32k+31) -> the mask of
#: those bits in it. The host writes a descriptor a part at a time, and the core keeps a
#: reserved-bit flag per descriptor and such part.
_RESERVED_BITS = [lo + i for name, (lo, w) in DESC_FIELDS.items() if name.startswith("reserved")
                  for i in range(w)]
DESC_RESERVED_PARTS = {k: mask for k in range(512 // 32)
                       if (mask := sum(1 << b % 32 for b in _RESERVED_BITS if b // 32 == k))}

#: LOADROW's table size (VN * VL) as the DECODE checks keep it, saturated here: past
#: the largest scratch depth (2**16) and any 16-bit address, so no check can tell.
TABLE_MAX = (1 << 17) - 1

#: Cycles from the engine's last output row to its ``done``.
_LAST_ROW_TO_DONE = 3
#: ``LSTM`` cycles after the engine's ``done`` (``MATVEC`` completes there). The worst
#: case, the last unit's ``g`` and ``o`` rows back to back, writes the last ``h'`` then:
#: o's lookup (4) and the cell's ``H_LATENCY`` from o, less the engine's own cycles from
#: its last row to ``done``. Faster cases wait for it, so the count is fixed.
CELL_TAIL_CYCLES = LUT_LATENCY + H_LATENCY - _LAST_ROW_TO_DONE

_ALU_OPS = {Op.VADD: OP_ADD, Op.VMUL: OP_MUL_RSHIFT, Op.VSHIFT: OP_SHIFT,
            Op.VREQ8: OP_MUL_REQUANT, Op.VMULQ8: OP_MUL_REQUANT}
_LUT_OPS = (Op.SIGMOID, Op.TANH)
_COPY_OPS = (Op.VCOPY, Op.LOADROW)  # the read data is the result


def _carry_save_difference(x, y, z):
    """``x + y + ~z``, that is ``x + y - z + 2**n - 1``, in carry-save form: bitwise
    logic, no carry chain. ``x``, ``y`` and ``z`` are unsigned values (or ``z`` a
    non-negative int); ``n`` bits hold each and ``x + y``.

    Returns
    -------
    n : int
    total_sum, carry : amaranth.hdl.Value
        ``n``-bit vectors: the total is ``total_sum + (carry << 1)``.
    """
    if isinstance(z, int):
        if z < 0:
            raise ValueError(f"the subtrahend must be non-negative, got {z}")
        z = Const(z)
    values = [Value.cast(v) for v in (x, y, z)]
    if any(v.shape().signed for v in values):
        raise TypeError(f"operands must be unsigned, got {[v.shape() for v in values]}")
    n = max(len(v) for v in values) + 1
    x, y, z = (Cat(v, Const(0, n - len(v))) for v in values)
    z = ~z
    return n, x ^ y ^ z, (x & y) | (x & z) | (y & z)


def _sum_exceeds(x, y, limit):
    """``x + y > limit``, exact for all unsigned values (``limit`` may be an int), through
    one carry chain rather than an add and then a compare: exactly when ``x + y + ~limit``
    reaches ``2**n``, its bits from ``n`` up after one add of the carry-save vectors."""
    n, total_sum, carry = _carry_save_difference(x, y, limit)
    return (total_sum + Cat(Const(0, 1), carry))[n:].any()


def _sum_equals(x, y, z):
    """``x + y == z``, exact for all unsigned values, with no carry chain: exactly when
    ``x + y + ~z`` is all ones, and two vectors add to all ones only if each bit of one
    is the other's complement (no carry arises)."""
    n, total_sum, carry = _carry_save_difference(x, y, z)
    return (total_sum ^ Cat(Const(0, 1), carry)[:n]).all()


def _one_hot_select(pairs):
    """The value whose flag is set, 0 if none: an OR of the values each ANDed with its
    flag. The flags must be one-hot (at most one set); the select then needs no priority
    chain, unlike nested ``Mux``es or a ``Switch`` on an encoded state."""
    if not pairs:
        raise ValueError("no (flag, value) pairs to select from")
    width = max(len(Value.cast(v)) for _, v in pairs)
    out = Const(0, width)
    for flag, value in pairs:
        out = out | Mux(flag, value, 0)
    return out


class HostMem(enum.Enum, shape=2):
    """The core memory the host port addresses (``host_mem``)."""

    PROGRAM = 0
    DESCRIPTORS = 1
    CONSTANTS = 2
    SCRATCH = 3


class _State(enum.Enum, shape=4):
    IDLE = 0
    FETCH = 1
    DECODE = 2
    DESC = 3  # descriptor checks registered from ``df``; activation entry 0 read
    MV_CHECK = 4  # fault on the checks or start: activation entry 1 read
    MV_LOAD = 5  # activation load, one entry per cycle
    MV_RUN = 6  # engine running, rows written to scratch (LSTM: to the cell unit)
    LR_INDEX = 7  # LOADROW: index arrives, registered; row offset multiply
    LR_ROW = 8  # LOADROW: index checked, row address add
    VEC_RUN = 9  # one element read per cycle
    VEC_DRAIN = 10  # unit pipeline drains
    AM_WRITE = 11  # ARGMAX: index to RESULT and scratch
    LSTM_TAIL = 12  # the cell unit drains
    START = 13  # a run's first instruction word into ``next_word``
    DESC_COPY = 14  # the descriptor word from its RAMs' output register into ``desc_f``
    START_WORD = 15  # a run's first word on into ``word``, for FETCH's checks and p


def host_wdata_bits(config: ProcessorConfig) -> int:
    """``host_wdata``'s width, the host block's staging register: the widest word it
    commits whole (program and constants 64 bits, parameters 72, scratch 16, weights
    ``word_bits``), in whole 32-bit parts. Descriptors are written a part at a time."""
    return 32 * -(-max(64, 8 * PARAM_BYTES, config.word_bits) // 32)


def host_members(config: ProcessorConfig) -> dict:
    """The core's host-facing ports (``isa.md`` 1.1), as the core sees them: run control
    and status registers, counters, and the host memory port. ``HostInterface`` drives
    the same members flipped."""
    return {
        "start": In(1), "soft_reset": In(1),
        "start_pc": In(16), "prog_len": In(17), "desc_count": In(9),
        "const_count": In(9), "watchdog": In(32, init=config.program_depth),
        "busy": Out(1), "done": Out(1), "error": Out(8), "fault_pc": Out(16),
        "result": Out(16), "vl": Out(16), "vn": Out(16), "sync_count": Out(32),
        "cycles": Out(32), "instructions": Out(32), "macs": Out(32),
        "zero_acts": Out(32), "stalls": Out(32),
        "host_mem": In(HostMem), "host_addr": In(16), "host_part": In(4),
        "host_wdata": In(host_wdata_bits(config)),
        "host_we": In(1), "host_re": In(1), "host_rdata": Out(512),
    }


class Processor(wiring.Component):
    """The NEP processor: program, descriptor, constant and scratch memories, a blocking
    sequencer, the matrix-vector engine, the LSTM cell unit, the vector ALU and the
    activation lookup unit.

    Pulsing ``start`` (at any time) begins a run at ``start_pc``: ``VL``/``VN``, the error
    and the counters clear; scratch, ``RESULT``, ``SYNC_COUNT`` and memories persist. The
    run ends with ``done`` high and ``busy`` low after ``HALT`` (``error`` 0) or at the
    first failing check of ``docs/isa.md`` section 4 (``error`` the code, ``fault_pc`` the
    instruction's PC). ``soft_reset`` stops a run and returns to idle. A run takes
    ``compiler.isa.RUN_START_CYCLES`` before its first instruction; instruction cycles
    follow ``compiler.isa.instruction_cycles`` exactly without memory wait states, except
    that ``LSTM`` takes ``MATVEC`` + ``CELL_TAIL_CYCLES``.

    Parameters
    ----------
    config : ProcessorConfig
        Memory sizes, lanes and engine buffers (``weight_depth`` at most 2**20, the
        engine's address limit).

    Attributes
    ----------
    program_mem, desc_mem, const_mem, scratch_mem : amaranth.lib.memory.Memory
        64-bit instructions, 512-bit descriptors (one per word, ``DESC_FIELDS``),
        64-bit constants (multiplier bits 0..31, shift 32..63), 16-bit scratch entries.
        A testbench may load them directly, except ``const_mem`` and ``desc_mem``: a
        constant's validity and whether a descriptor part has a reserved bit set are
        recorded as they come through the host port, which the bus uses for all four
        (descriptors a 32-bit part at a time: ``desc_mem``'s write port has granularity 32).
    prog_rd, desc_rd, const_rd : hw.registered_read.RegisteredRead
        The program, descriptor and constant memories' read ports (``const_rd`` with an
        enable).
    scratch_reads : tuple of hw.registered_read.RegisteredRead
        The scratch's two read ports (``sc_a``: the ALU's a, loads, the host; ``sc_b``).
    engine_config : hw.config.EngineConfig
        The engine's: ``config``'s sizes, the 8-stage requantizer and read FIFOs deep
        enough for ``STREAM_READ_LATENCY``-cycle memories.

    Interface
    ---------
    start, soft_reset : In(1)
        Begin a run at ``start_pc`` / abandon any run (each also resets the units).
    start_pc : In(16) ; prog_len : In(17) ; desc_count, const_count : In(9)
    watchdog : In(32)
        Most instructions a run may complete (init ``program_depth``).
    busy, done : Out(1) ; error : Out(8) ; fault_pc : Out(16)
        ``STATUS``, ``ERROR`` (``compiler.isa.ErrorCode``) and ``FAULT_PC``.
    result, vl, vn : Out(16) ; sync_count : Out(32)
        ``RESULT`` (last ``ARGMAX``), ``VL``, ``VN``, ``SYNC_COUNT``.
    cycles, instructions, macs, zero_acts, stalls : Out(32)
        Counters of the current/last run: busy cycles, completed instructions, products
        done and skipped for zero activations (their sum is the layers' ``nnz``), cycles
        the MAC array waited for weights.
    w_req_addr, w_req_valid, w_req_ready, w_resp_data, w_resp_valid
        Weight memory port (``word_bits(lanes)``-bit words), as the engine's
        (``hw.memory_reader``), addresses offset by the descriptor's ``stream_base``. Any
        latency works; ``compiler.isa.STREAM_READ_LATENCY`` is the one the cycle model
        counts and the FIFOs keep one word per cycle at.
    p_req_addr, p_req_valid, p_req_ready, p_resp_data, p_resp_valid
        Parameter memory port (72-bit records), offset by ``param_base``.
    host_mem : In(HostMem) ; host_addr : In(16) ; host_part : In(4)
        Host port: the memory and word the next access addresses; the descriptor part
        (bits ``32 * host_part`` up) a descriptor write addresses.
    host_wdata : In(host_wdata_bits(config)) ; host_we : In(1)
        Write the low bits of ``host_wdata`` (the memory's width) to the word; to a
        descriptor, its low 32 bits to part ``host_part`` of the word, the rest of the
        word unchanged. A run started in the same cycle may read its first instruction
        as either word.
    host_re : In(1) ; host_rdata : Out(512)
        Read the word: ``host_rdata`` shows it, zero-extended, 2 cycles later (the
        block RAM, then a register beside it), and keeps it while ``host_addr`` holds
        and no other read is made.
        Accesses are honoured only while ``busy`` is low (they share the sequencer's
        memory ports; the host block refuses them during a run).
    """

    def __init__(self, *, config: ProcessorConfig):
        if not isinstance(config, ProcessorConfig):
            raise TypeError(f"config must be a ProcessorConfig, got {type(config).__name__}")
        if config.weight_depth > 1 << 20:
            raise ValueError(f"weight_depth {config.weight_depth} exceeds the engine's "
                             f"2**20-word address range")
        self.config = config
        # The 8-stage requantizer, as the cell's: the 6-stage one's 32 x 32 multiply stage
        # limited the ECP5 clock. 2 cycles more per MATVEC/LSTM and per vector ALU
        # instruction (which borrows it); one cycle model for every part. The readers'
        # FIFOs keep one word per cycle from the STREAM_READ_LATENCY-cycle memories with
        # that many credits in flight, plus the FIFO's storage slot and output register.
        self.engine_config = EngineConfig(lanes=config.lanes, max_rows=config.max_rows,
                                          max_cols=config.max_cols,
                                          weight_depth=config.weight_depth,
                                          param_depth=config.param_depth,
                                          fifo_depth=STREAM_READ_LATENCY + 3,
                                          pipelined_requantizer=True)
        wa = max(1, (config.weight_depth - 1).bit_length())
        pa = max(1, (config.param_depth - 1).bit_length())
        super().__init__({
            **host_members(config),
            "w_req_addr": Out(wa), "w_req_valid": Out(1), "w_req_ready": In(1),
            "w_resp_data": In(config.word_bits), "w_resp_valid": In(1),
            "p_req_addr": Out(pa), "p_req_valid": Out(1), "p_req_ready": In(1),
            "p_resp_data": In(8 * PARAM_BYTES), "p_resp_valid": In(1),
        })
        # ``no_rw_check`` (Yosys's ``-no-rw-check`` for one memory): a read and a write of
        # one word in one cycle may return either word. The host writes while idle, where
        # a read's word is used only if the host asked for it in that cycle, one access
        # at a time (``hw.host_interface``), or if a start is in that cycle: its read of
        # the first instruction is the run's, so a write of that word in the start's own
        # cycle may go unseen (``host_we``; the host block's start and writes each follow
        # a bus write of their own, so never share a cycle); the constants' register
        # takes a word while idle only in a host read's cycle (its enable). The program,
        # descriptor and constant memories take no other writes. The scratch is also
        # written while busy: its ports read every cycle, and a read meets the write of
        # its word only where its data is not used (``sc_b`` at an idle LSTM cell's c
        # address, a port left at address 0, LOADROW's ``rb``); every read a result
        # takes precedes the write of its word (the write pipeline comment in
        # ``elaborate``).
        # tests/unit/test_processor.py returns a wrong word on each such collision of a
        # program of every instruction kind and still matches the ISS.
        rw_either = {"no_rw_check": 1}
        self.program_mem = Memory(shape=64, depth=config.program_depth, init=[],
                                  attrs=rw_either)
        self.desc_mem = Memory(shape=512, depth=config.desc_depth, init=[], attrs=rw_either)
        # The constants: a block RAM on the iCE40 (its 64-bit words were 1024 flip-flops
        # and a 716-LUT4 read multiplexer there, issue 6), LUT RAM on the ECP5
        # (``ECP5_LUT_RAM``): as a block RAM its 5.8 ns clock-to-out and the route from
        # the RAM's column would come before ``k_mult``'s multipliers.
        self.const_mem = Memory(shape=64, depth=config.const_depth, init=[],
                                attrs={**rw_either, ECP5_LUT_RAM: 1})
        self.scratch_mem = Memory(shape=16, depth=config.scratch_depth, init=[],
                                  attrs=rw_either)
        self.prog_rd = RegisteredRead(memory=self.program_mem)
        self.desc_rd = RegisteredRead(memory=self.desc_mem)
        self.const_rd = RegisteredRead(memory=self.const_mem, enable=True)
        self.scratch_reads = (RegisteredRead(memory=self.scratch_mem),
                              RegisteredRead(memory=self.scratch_mem))

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        depth = cfg.scratch_depth

        # A start or soft reset flushes every unit's pipeline (no stale writes).
        unit_reset = Signal()
        m.d.comb += unit_reset.eq(self.start | self.soft_reset)
        eng = MatVecEngine(self.engine_config, lend_requantizer=True)
        # The lookup unit's inputs are flip-flops through one multiplexer (``gate_rows``
        # below), so it needs no input register of its own and spends that cycle on the
        # interpolation instead: the table slope's multiply and the add in a stage each
        # (issue 6: -1.20 ns for the two in one cycle, run m28). The latency is the same.
        alu, lut = VectorAlu(), ActivationLut(input_register=False)
        for name, unit in (("engine", eng), ("vector_alu", alu), ("activation_lut", lut)):
            m.submodules[name] = ResetInserter(unit_reset)(unit)
        # One requantizer for the engine and the vector ALU: the sequencer is blocking, so
        # a vector instruction never runs with a MATVEC/LSTM (its 8 stages are the ALU's).
        wiring.connect(m, alu.requant, eng.requant)
        # The cell unit also restarts with each MATVEC/LSTM (``cell_reset``, a register):
        # its gate and unit counters at 0.
        cell, cell_reset = LstmCell(), Signal()
        m.submodules.lstm_cell = ResetInserter(unit_reset | cell_reset)(cell)

        m.submodules.program_mem = self.program_mem
        m.submodules.desc_mem = self.desc_mem
        m.submodules.const_mem = self.const_mem
        m.submodules.scratch_mem = self.scratch_mem
        # Each block RAM read port's data is captured by one reset-less register with
        # nothing in front (``next_word``, with its enable ``at_next``, which becomes the
        # RAM's OCE; ``desc_q``, ``rd_a``, ``rd_b``), the same cycle as a synchronous
        # port's (port B's also by ``cell_c`` and ``row_index``, below).
        # ``hw.bram_outreg`` takes ``next_word``, ``desc_q`` and ``rd_a`` into their RAMs;
        # ``rd_b`` stays in the fabric (``no_outreg``, below). The constants' port has no
        # register after it: its own (``const_rd.data``, with an enable) is ``k_mult``,
        # ``k_shift`` and the host's read word (below).
        m.submodules.prog_rd = prog_rd = self.prog_rd
        m.submodules.desc_rd = desc_rd = self.desc_rd
        m.submodules.const_rd = const_rd = self.const_rd
        sc_a, sc_b = self.scratch_reads
        m.submodules.sc_a, m.submodules.sc_b = sc_a, sc_b
        sc_w = self.scratch_mem.write_port()

        # Architectural registers.
        state = Signal(_State)
        # State flags registered with ``state`` (``goto`` sets both), one per group of
        # states that a select or an enable depends on (the scratch ports' and the
        # constant's addresses, the lookup unit's input, the constant's, DECODE's and the
        # instruction words' registers, the fetch checks): the RAMs' address pins and
        # those registers then see flip-flops, not ``state``'s compares fanned out to
        # every bit (issue 6). Each equals ``state`` in its group, always (from reset:
        # IDLE's are set).
        groups = {
            "start": (_State.START, _State.START_WORD), "fetch": (_State.FETCH,),
            "next": (_State.IDLE, _State.START, _State.FETCH),
            "word": (_State.FETCH, _State.DECODE), "decode": (_State.DECODE,),
            "desc": (_State.DESC,), "const": (_State.FETCH, _State.DESC),
            "load": (_State.MV_CHECK, _State.MV_LOAD),
            "run": (_State.MV_RUN, _State.LSTM_TAIL), "mv_run": (_State.MV_RUN,),
            "vec": (_State.VEC_RUN,),
        }
        at = {name: Signal(name=f"at_{name}", init=_State.IDLE in members)
              for name, members in groups.items()}

        def goto(next_state):
            return [state.eq(next_state),
                    *(at[name].eq(next_state in members) for name, members in groups.items())]

        pc = Signal(17)  # 17 bits: running off a full 65536-word program is PC_OVERRUN
        busy, done, error = Signal(), Signal(), Signal(8)
        vl, vn, result = Signal(16), Signal(16), Signal(16)
        sync_count, cycles, instructions = Signal(32), Signal(32), Signal(32)
        macs, zero_acts, stalls = Signal(32), Signal(32), Signal(32)
        m.d.comb += [
            self.busy.eq(busy), self.done.eq(done), self.error.eq(error),
            self.result.eq(result), self.vl.eq(vl),
            self.vn.eq(vn), self.sync_count.eq(sync_count), self.cycles.eq(cycles),
            self.instructions.eq(instructions), self.macs.eq(macs),
            self.zero_acts.eq(zero_acts), self.stalls.eq(stalls),
        ]
        m.d.sync += cycles.eq(cycles + busy)

        # The instruction word, two registers after the program block RAM (issue 6): its
        # output register ``next_word`` (a plain capture, which ``hw.bram_outreg`` moves
        # into the RAM: about 1 ns clock-to-out, not 5.83) and ``word``, in the fabric
        # near its decodes, which fan out across the sequencer (from inside the RAM they
        # started at the RAM's column, run m25: -1.4 ns; straight from the RAM's output
        # ``word``'s inputs missed by 1.09 ns, 8 lanes, seed 1).
        # FETCH finds DECODE's checks from ``word`` and DECODE acts on their registered
        # outcome. The ISA has no branches, so the next instruction is always at pc + 1
        # and is read ahead: every cycle of an instruction reads pc + 2, and ``next_word``
        # takes the RAM's word only in FETCH, where it is the read of the cycle before,
        # the last of the instruction before: this one's pc + 1. ``word`` takes
        # ``next_word`` in every cycle but FETCH, so it holds an instruction in its FETCH
        # and DECODE whichever cycle the one before completes in: the RAM's address
        # needs no completion condition, and no cycle per instruction is added. A run's
        # first word has no instruction before it: the start cycle reads start_pc, START
        # takes it into ``next_word`` and START_WORD into ``word``, both reading pc + 1
        # for FETCH: two cycles per run (``compiler.isa.RUN_START_CYCLES``). While idle
        # ``next_word`` takes the host's reads (the host port below).
        next_word = Signal(64, reset_less=True)
        word = Signal(64, reset_less=True)
        step = Mux(at["start"], 1, 2)  # how far ahead of pc the RAM reads
        m.d.comb += prog_rd.addr.eq(pc + step)
        with m.If(at["next"]):
            m.d.sync += next_word.eq(prog_rd.data)
        with m.If(~at["fetch"]):
            m.d.sync += word.eq(next_word)
        # The current instruction, latched at decode. The opcode is kept only as the
        # flags below; p is the descriptor index from DESC_COPY on.
        p = Signal(8)
        d, a, b = Signal(16), Signal(16), Signal(16)
        f = {name: word[lo:lo + w] for name, (lo, w) in FIELDS.items()}

        # ``FAULT_PC`` is the PC while ``faulted``: a fault ends the run and nothing moves
        # the PC until the next start, which clears the flag. One flip-flop written by
        # the fault conditions, not 16 enables fanned out from them (issue 6).
        faulted = Signal()
        m.d.comb += self.fault_pc.eq(Mux(faulted, pc[:16], 0))

        def fault(code):
            m.d.sync += [error.eq(code), faulted.eq(1), busy.eq(0), done.eq(1),
                         *goto(_State.IDLE)]

        def complete(next_state=_State.FETCH):
            m.d.sync += [pc.eq(pc + 1), instructions.eq(instructions + 1),
                         *goto(next_state)]

        def partial_overlap(dst, src, n):
            """``dst != src & dst < src + n & src < dst + n``, each sum compare one carry
            chain (``_sum_exceeds``), exact for all unsigned values."""
            return (dst != src) & _sum_exceeds(src, n, dst) & _sum_exceeds(dst, n, src)

        # Descriptor fields. The descriptor is read ahead like the instruction, from FETCH,
        # so that ``desc_q``, the block RAM's output registered, holds it from DESC_COPY
        # on and ``df`` from DESC on: the checks in DESC, the engine, the address adders
        # and the LSTM cell all start from flip-flops. Its index in FETCH and DECODE is
        # ``word``'s p field, so the 16 block RAMs' address does not hang off the program
        # block RAM's output (issue 6, item 6); reading the index after FETCH instead
        # would cost a cycle per MATVEC and LSTM. From DESC_COPY on the index is the
        # latched p.
        # ``desc_q`` is also the host's descriptor read register: one capture per bit,
        # which ``hw.bram_outreg`` moves into the 16 RAMs (36-bit mode, 32 bits used in
        # each: the write port's 32-bit parts), so their 5.8 ns
        # clock-to-out meets no fabric register (into ``desc_q`` in the fabric: -0.48 /
        # -0.50 ns on seeds 1 and 2). ``df`` is taken from ``desc_f``, a fabric copy of
        # it a cycle later, which the placer can put near the fields' loads: from
        # ``desc_q`` inside the RAMs the loads across the die (the
        # DESC checks, the engine, the cell, the constant's address) started at the
        # RAMs' column and missed by up to 3.36 ns (run m36). DESC_COPY waits for the
        # copy: one cycle more per MATVEC and LSTM (issue 6).
        desc_q = Signal(512, reset_less=True)
        desc_f = Signal(512, reset_less=True)
        m.d.sync += [desc_q.eq(desc_rd.data), desc_f.eq(desc_q)]
        df = {name: desc_f[lo:lo + w] for name, (lo, w) in DESC_FIELDS.items()
              if not name.startswith("reserved")}
        # A reserved bit set: found when the host writes the descriptor, a part at a
        # time, and kept in ``reserved_set``, one flag per descriptor for each part that
        # holds reserved bits (``DESC_RESERVED_PARTS``; all-zero descriptors, the initial
        # contents, have none; like the memory they are not reset), so no OR of the 112
        # bits follows the block RAM's 5.8 ns clock-to-out (issue 6). A part's write sets
        # or clears its own flag; the descriptor is bad if any of its flags is set. Both
        # index them by the address bits the memory takes (an index past the depth
        # aliases as the memory read does). Descriptor p's flags are ORed and registered
        # every cycle: p is latched in DECODE, so MV_CHECK sees them from DESC; the host
        # writes only between runs.
        desc_aw = len(desc_rd.addr)
        reserved_set = {k: Signal(cfg.desc_depth, reset_less=True, name=f"reserved_set_{k}")
                        for k in DESC_RESERVED_PARTS}
        p_reserved = Signal()
        m.d.sync += p_reserved.eq(Cat(flags.bit_select(p[:desc_aw], 1)
                                      for flags in reserved_set.values()).any())
        m.d.comb += desc_rd.addr.eq(Mux(at["word"], f["p"], p))

        # Constant (multiplier, shift) and its validity (``compiler.isa.constant_ok``).
        # The constant is read a cycle ahead into the port's register, whose fields are
        # ``k_mult``/``k_shift``: by the instruction's p from ``word`` in FETCH
        # (VREQ8/VMULQ8: DECODE takes the ALU's shift from ``k_shift``), by the
        # descriptor's const_index from ``df`` in DESC (LSTM: the cell uses them from the
        # engine's first row on, long after MV_CHECK). The RAM's read then goes straight
        # into the register, its address chosen by flags, and not through a state compare
        # and on into the ALU's shift (issue 6). The register also takes the host's reads
        # while idle (below): a run reads ``k_mult``/``k_shift`` only after its FETCH has
        # loaded them, and nothing else between, so neither sees the other's word; its
        # reset-less value after a reset is never used either. One register with one
        # enable is what Yosys's ``memory_dff`` takes into the memory as a synchronous
        # port, so the iCE40 maps the constants to block RAM
        # (tests/synth/test_read_ports.py).
        # Each entry's validity is found when the host writes it and kept in ``const_ok``
        # (all-zero entries, the initial contents, are valid; like the memory it is not
        # reset), so the decode cycle checks one bit, not the RAM's 64.
        const_aw = max(1, (cfg.const_depth - 1).bit_length())
        const_ok = Signal(cfg.const_depth, init=(1 << cfg.const_depth) - 1, reset_less=True)
        m.d.comb += [const_rd.addr.eq(Mux(at["desc"], df["const_index"], f["p"])),
                     const_rd.en.eq(at["const"])]
        k_mult, k_shift = const_rd.data[:32].as_signed(), const_rd.data[32:40].as_signed()
        # Both checks a cycle ahead of their use too, with the same indices: the
        # instruction's p in FETCH, with DECODE's other checks, the descriptor's
        # const_index in DESC for MV_CHECK: the compare's carry chain and the fault's
        # fan-out take a cycle each.
        def const_bad(index):
            return (index >= self.const_count) | ~const_ok.bit_select(index[:const_aw], 1)
        lstm_const_bad = Signal()
        m.d.sync += lstm_const_bad.eq(const_bad(df["const_index"]))
        desc_bad, range_bad = Signal(), Signal()  # MATVEC/LSTM checks, found in DESC
        # The scratch room after each operand, from the operands latched in DECODE,
        # registered every cycle (so they hold this instruction's room from DESC on,
        # DESC being their only reader): DESC's range checks are then one compare each
        # against the descriptor's fields (issue 6), where ``addr + n > depth`` is an add
        # and a compare and b's ``cols - split`` a subtract more. Instruction-side rather
        # than ``cols - split`` registered with ``df``: that would be a subtract after the
        # descriptor and a cycle more. a's and d's room is signed: an address past
        # the end has negative room, which every count exceeds. b's is biased by
        # 0xFFFF so that ``b + cols - split > depth`` is ``cols + ~split > b_room``,
        # unsigned, for every 16-bit value.
        room_a = Signal(range(depth - 0xFFFF, depth + 1))
        room_d = Signal(range(depth - 0xFFFF, depth + 1))
        b_room = Signal(range(depth, depth + 0x10000))
        m.d.sync += [room_a.eq(depth - a), room_d.eq(depth - d),
                     b_room.eq(depth + 0xFFFF - b)]
        short_load = Signal()  # cols <= 1, found in DESC: MV_CHECK starts the engine

        # Element pipeline: read counter, data-valid flag, write/arrival counter.
        rk, wk = Signal(16), Signal(16)
        src = Signal(17)  # a's read address (LOADROW: the selected table row's), stepped
        v1 = Signal()
        m.d.sync += v1.eq(at["vec"])
        # The opcode's decodes, registered in DECODE from the word's fields (below) where
        # the opcode was latched: the units' control and the scratch address and
        # write muxes start at flip-flops, not at a latched opcode through its compares
        # (issue 6). Each holds the current instruction's value from DESC_COPY / VEC_RUN /
        # LR_INDEX until the next DECODE, as the opcode did; no cycle is added.
        is_alu, is_lut, is_copy, is_argmax = Signal(), Signal(), Signal(), Signal()
        is_lstm = Signal()  # LSTM: H = rows / 4, gate rows to the lookup unit
        alu_op = Signal(2)
        alu_b_one = Signal()  # VREQ8 is MBQM(a * 1)
        alu_shift = Signal(signed(8))  # VMUL/VSHIFT: from p; VREQ8/VMULQ8: the constant's
        alu_sat8 = Signal()
        lut_tanh = Signal()  # the lookup unit's function outside LSTM
        hidden = Signal(16)
        m.d.comb += hidden.eq(df["rows"][2:])
        # From flip-flops through one LUT: the lookup unit forms its table address from
        # it in the cycle of the read (``input_register=False``, below).
        gate_rows = at["mv_run"] & is_lstm
        # The scratch read data, registered right after each port, so the block RAMs'
        # 5.8 ns clock-to-out meets a flip-flop with nothing but the RAM's own depth mux
        # before it (issue 6); every consumer takes these. The ALU's and lookup unit's
        # operands and the activation load are read a cycle ahead (below), so they
        # arrive when they did; VCOPY and LOADROW take ``rd_a`` directly, ARGMAX a
        # register of its own from it (read ahead too). The cell's c and LOADROW's
        # index take port B's data into registers of their own (below). ``rd_b`` stays
        # in the fabric (``no_outreg``): it fed LOADROW's row multiply, which from inside
        # the RAM started with the route from the RAM's column to the DSP (run m26:
        # -2.38 ns).
        rd_a = Signal(16, reset_less=True)
        rd_b = Signal(16, reset_less=True, attrs={NO_OUTREG: 1})
        m.d.sync += [rd_a.eq(sc_a.data), rd_b.eq(sc_b.data)]
        xa, xb = rd_a.as_signed(), rd_b.as_signed()
        m.d.comb += [
            alu.in_valid.eq(v1 & is_alu), alu.op.eq(alu_op), alu.a.eq(xa),
            alu.b.eq(Mux(alu_b_one, 1, xb)), alu.shift.eq(alu_shift),
            alu.multiplier.eq(k_mult), alu.sat8.eq(alu_sat8),
        ]
        with m.If(gate_rows):
            m.d.comb += [lut.in_valid.eq(eng.out_we), lut.z.eq(eng.out_data),
                         lut.func.eq(eng.out_addr[:2] == 2)]
        with m.Else():
            m.d.comb += [lut.in_valid.eq(v1 & is_lut), lut.z.eq(xa),
                         lut.func.eq(lut_tanh)]
        # VCOPY/LOADROW: the result is ``rd_a``, a cycle after the data (issue 6); these
        # take one cycle more.
        copy_v = Signal()
        m.d.sync += copy_v.eq(v1 & is_copy)
        vec_we = Signal()
        vec_y = Signal(16)
        m.d.comb += [
            vec_we.eq(Mux(is_alu, alu.out_valid, Mux(is_lut, lut.out_valid, copy_v))),
            vec_y.eq(Mux(is_alu, alu.y, Mux(is_lut, lut.y, rd_a))),
        ]
        in_vec = (state == _State.VEC_RUN) | (state == _State.VEC_DRAIN)
        # The end compares (rk or wk == VL - 1, lk == cols - 1) are registered a cycle
        # ahead, as the counter's next value against the bound: the carry chains end at
        # a flip-flop, not in the completion's fan-out (pc, instructions, the engine's
        # start). DECODE sets rk's and wk's for a count of 0 (VL = 1), MV_CHECK's first
        # load lk's; the cycles are unchanged (issue 6).
        rk_last, wk_last, lk_last = Signal(), Signal(), Signal()
        with m.If(in_vec & ((vec_we & ~is_argmax) | (v1 & is_argmax))):
            m.d.sync += [wk.eq(wk + 1), wk_last.eq(wk + 2 == vl)]

        # ARGMAX: signed running maximum, strict compare keeps the lowest index. Its
        # elements are read a cycle ahead (``early``, below) and copied from ``rd_a``
        # into ``am_x``, a register of its own that the placer can put by the compare:
        # from ``rd_a`` (in the scratch RAM's output register, with loads across the
        # die) the compare, ``best_k``'s enable and AM_WRITE's result had 7-8.5 ns of
        # routing (issue 6: -1.28 / -0.91 / -0.54 ns into ``w_data`` / ``best_k`` /
        # ``result`` on seed 2 of run m34). Each element is compared the cycle after it
        # is copied, as before the read ahead; AM_WRITE, the cycle after the last
        # arrival, takes the last compare's outcome directly, so no cycle is added.
        best, best_k = Signal(signed(16)), Signal(16)
        am_v, am_x, am_k = Signal(), Signal(signed(16)), Signal(16)
        m.d.sync += [am_v.eq(in_vec & is_argmax & v1), am_x.eq(xa), am_k.eq(wk)]
        better = am_v & ((am_k == 0) | (am_x > best))
        argmax_k = Signal(16)  # the index of the maximum so far, this cycle's compare included
        m.d.comb += argmax_k.eq(Mux(better, am_k, best_k))
        with m.If(better):
            m.d.sync += [best.eq(am_x), best_k.eq(am_k)]

        # MATVEC activation load: split entries from a, the rest from b. Entry lk is
        # written from the registered read data, so it is read a cycle ahead of the
        # load that counts it: entry 0 in DESC, from a on sc_a and from b on sc_b (the
        # split is not known in time to choose: ``act_b`` takes b's for split 0).
        lk = Signal(16)
        act_v, act_k, act_b = Signal(), Signal(16), Signal()
        load = Signal()
        m.d.sync += [act_v.eq(load), act_k.eq(lk),
                     act_b.eq((state == _State.MV_CHECK) & (df["split"] == 0))]
        m.d.comb += [
            eng.act_we.eq(act_v), eng.act_waddr.eq(act_k),
            eng.act_wdata.eq(Mux(act_b, rd_b, rd_a)[:8].as_signed()),
        ]
        with m.If(load):
            m.d.sync += [lk.eq(lk + 1), lk_last.eq(lk + 2 == df["cols"])]

        # LSTM: state at d (h, then c at d + H); gate rows through sigmoid (gates 0, 1,
        # 3) or tanh (gate 2) on the shared lookup unit, into the cell unit. The cell's c
        # is port B's data in a register of its own, the same cycle as ``rd_b``, that
        # the placer can put near the cell's f * c multiplier: from ``rd_b`` the path
        # had 7.4 ns of routing (run m27: -2.25 ns). Its reset keeps Yosys from merging
        # it back into the reset-less ``rd_b``.
        cell_c = Signal(signed(16))
        m.d.sync += cell_c.eq(sc_b.data.as_signed())
        m.d.comb += [
            cell.in_valid.eq(is_lstm & lut.out_valid), cell.y.eq(lut.y),
            cell.cell_frac_bits.eq(df["cell_frac_bits"]),
            cell.multiplier.eq(k_mult), cell.shift.eq(k_shift),
            cell.c_data.eq(cell_c),
        ]
        # The cell is reset in every MV_CHECK, from a register set in DESC, not only when
        # MV_CHECK's checks pass: that condition (the checks' results, ``is_lstm``, the
        # state) reached the reset of every cell register through ``ResetInserter``
        # (issue 6). Nothing tells the two apart: the cell is idle in MV_CHECK (the last
        # instruction's tail waited for its last write), and after a fault the run is
        # over, the cell's outputs are read only in MV_RUN / LSTM_TAIL of an LSTM, and
        # the next one's MV_CHECK resets it again.
        m.d.sync += cell_reset.eq(at["desc"])
        tail_k = Signal(range(CELL_TAIL_CYCLES))
        h_now = cell.w_en & ~cell.w_cell
        with m.If(is_lstm & at["run"]):
            m.d.sync += wk.eq(wk + h_now)
        # The tail's end, a cycle ahead into a register: the compare and the cell's write
        # enable before complete()'s fan-out to pc, state and the counters missed the ECP5
        # clock (issue 6). Next cycle ends the tail if tail_k reaches its last value and
        # all h' are written by then: wk plus this cycle's h' and the next's. The cell
        # writes each h' the cycle after its c', so of the two there is one if it writes
        # now (an h', or a c' whose h' comes next) and none otherwise.
        tail_done = Signal()
        m.d.sync += tail_done.eq((state == _State.LSTM_TAIL)
                                 & (tail_k + 2 >= CELL_TAIL_CYCLES)
                                 & Mux(cell.w_en, wk + 1 == hidden, wk == hidden))

        # Engine: header fields and the memories' bases straight from the descriptor.
        for name in ("rows", "cols", "n_words", "nnz", "encoding", "crc_stream",
                     "crc_params"):
            m.d.comb += getattr(eng, name).eq(df[name])
        m.d.comb += [
            eng.codebook.as_value().eq(df["codebook"]),
            eng.out_mode.eq(Mux(df["mode"] == Mode.LSTM, MODE_INT16, df["mode"][:2])),
            eng.w_base.eq(df["stream_base"]), self.w_req_addr.eq(eng.w_req_addr),
            self.w_req_valid.eq(eng.w_req_valid), eng.w_req_ready.eq(self.w_req_ready),
            eng.w_resp_data.eq(self.w_resp_data), eng.w_resp_valid.eq(self.w_resp_valid),
            eng.p_base.eq(df["param_base"]), self.p_req_addr.eq(eng.p_req_addr),
            self.p_req_valid.eq(eng.p_req_valid), eng.p_req_ready.eq(self.p_req_ready),
            eng.p_resp_data.eq(self.p_resp_data), eng.p_resp_valid.eq(self.p_resp_valid),
        ]

        # Scratch addresses and write data. Each read address is a register (a pointer,
        # a sum registered a cycle ahead, the word's a or b field in FETCH and DECODE, d
        # or b by a flag in DESC), chosen by a one-hot select of the ``at_*`` state flags,
        # and the write port's enable, address and data are registered, so the RAMs' pins
        # see flip-flops through that select (and the host's mux) only: no add after the
        # descriptor or operand registers, no nested write data mux (issue 6). No cycle
        # is added (below).
        aw = len(sc_a.addr)
        # Activation load: DESC reads entry 0 (above); ``ld_addr``, entry lk + 1's, is a
        # pointer through a's entries, moving to b's (LSTM: d's) first after a's split
        # entries. ``at_split`` (lk + 2 == split) is registered a cycle ahead, as
        # lk_last; DESC sets both for lk = 0.
        ld_addr, at_split = Signal(aw), Signal()
        ld_b = Mux(is_lstm, d, b)
        with m.If(at["desc"]):
            m.d.sync += [ld_addr.eq(Mux(df["split"] > 1, a + 1,
                                        Mux(df["split"] == 0, ld_b + 1, ld_b))),
                         at_split.eq(df["split"] == 2)]
        with m.If(load):
            m.d.sync += [ld_addr.eq(Mux(at_split, ld_b, ld_addr + 1)),
                         at_split.eq(lk + 3 == df["split"])]
        # Vector operands: pointers stepped with rk. The ALU's, lookup unit's and ARGMAX's
        # (``early``) are read a cycle ahead, element 0 in DECODE: ``ra`` and ``rb``, one
        # entry on from a and b. VCOPY and LOADROW take ``rd_a`` a cycle after the data
        # anyway and read in step: ``src`` from a (LOADROW: its row; DECODE and LR_ROW
        # load it).
        ra, rb = Signal(aw), Signal(aw)
        early = is_alu | is_lut | is_argmax
        with m.If(at["decode"]):
            m.d.sync += [ra.eq(f["a"] + 1), rb.eq(f["b"] + 1)]
        with m.If(at["vec"]):
            m.d.sync += [src.eq(src + 1), ra.eq(ra + 1), rb.eq(rb + 1)]
        # LSTM: c's address registered from the cell's index, a cycle after it moves. The
        # next unit's f comes 4 cycles after this one's at the earliest, and takes c from
        # ``cell_c`` (the index, its register here, the RAM, ``cell_c``): just in time.
        c_base, c_addr = Signal(aw), Signal(aw)  # c_base: d + H, c[0]'s entry
        m.d.sync += [c_base.eq(d + hidden), c_addr.eq(c_base + cell.c_index)]
        # DECODE: element 0, LOADROW's index; FETCH the same, for LOADROW's row offset
        # (below; the other reads' data goes unused); other states read nothing.
        m.d.comb += [
            sc_a.addr.eq(_one_hot_select([
                (at["word"], f["a"]), (at["desc"], a), (at["load"], ld_addr),
                (at["vec"] & early, ra), (at["vec"] & ~early, src)])),
            sc_b.addr.eq(_one_hot_select([
                (at["word"], f["b"]), (at["desc"], ld_b), (at["run"], c_addr),
                (at["vec"], rb)])),
        ]
        # Writes land a cycle after the sequencer makes them. Within an instruction every
        # read that must see a write follows it by more than that: none does (a vector
        # destination equals its sources or is disjoint from them, and its element k is
        # read before it is written; MATVEC/LSTM load their input before the engine
        # starts; the cell reads each c before it writes c'). An instruction's last write
        # lands in the next one's FETCH, before its first read (DECODE: LOADROW's index,
        # the ALU's, lookup unit's or ARGMAX's element 0; DESC: a MATVEC's entry 0),
        # except FETCH's early read of LOADROW's index, which forwards it (below).
        w_en, w_addr, w_data = Signal(), Signal(aw), Signal(16)
        with m.Switch(state):
            with m.Case(_State.MV_RUN, _State.LSTM_TAIL):
                with m.If(is_lstm):
                    m.d.sync += [w_en.eq(cell.w_en),
                                 w_addr.eq(Mux(cell.w_cell, c_base, d) + cell.w_index),
                                 w_data.eq(cell.w_data)]
                with m.Else():
                    m.d.sync += [w_en.eq(eng.out_we), w_addr.eq(d + eng.out_addr),
                                 w_data.eq(eng.out_data)]
            with m.Case(_State.AM_WRITE):
                m.d.sync += [w_en.eq(1), w_addr.eq(d), w_data.eq(argmax_k)]
            with m.Case(_State.VEC_RUN, _State.VEC_DRAIN):
                m.d.sync += [w_en.eq(vec_we & ~is_argmax), w_addr.eq(d + wk),
                             w_data.eq(vec_y)]
            with m.Default():
                m.d.sync += w_en.eq(0)
        m.d.comb += [sc_w.en.eq(w_en), sc_w.addr.eq(w_addr), sc_w.data.eq(w_data)]
        # LOADROW's row offset, index * VL, from the index read in FETCH (``rd_b`` in
        # LR_INDEX), registered every cycle (so Yosys's ``share`` leaves the multiply
        # alone): LR_ROW then only adds a, where a multiply and an add after ``rd_b``
        # missed the ECP5 clock (issue 6). FETCH's read misses the write landing with it
        # (the last of the instruction before: the port reads the old word), so that
        # write is forwarded. The index check stays on DECODE's read, in LR_ROW.
        index_fwd, index_fwd_data = Signal(), Signal(16)
        with m.If(at["fetch"]):
            m.d.sync += [index_fwd.eq(w_en & (w_addr == f["b"][:aw])),
                         index_fwd_data.eq(w_data)]
        # The index from a register of its own, loaded in DECODE (as ``rd_b`` is then)
        # and holding: the placer can put it near the multiplier, where ``rd_b`` (many
        # loads, near the RAM) gave 7.3 ns of routing into the DSP (run m27: -2.39 ns).
        # Its enable keeps Yosys from merging it back into ``rd_b``.
        row_index = Signal(16)
        with m.If(at["decode"]):
            m.d.sync += row_index.eq(sc_b.data)
        row_offset = Signal(17)
        m.d.sync += row_offset.eq(Mux(index_fwd, index_fwd_data, row_index) * vl)

        # DECODE's checks, found in FETCH from ``word`` (this instruction's) and ``vl``,
        # ``vn``, ``table`` (SETVL changes them in its DECODE, so FETCH sees the values
        # DECODE would) and registered as flags (below): DECODE faults on
        # flip-flops, not through the compares' carry chains (issue 6). Each check is one
        # carry chain from flip-flops at most: a compare against ``room_vl``, registered
        # with VL, or a sum compare through ``_sum_exceeds``, not an add and then a
        # compare. The word checks of section 4.2 first: opcode, reserved fields and p
        # bits, VSHIFT amount.
        legal, reserved = Signal(), Signal()
        with m.Switch(f["opcode"]):
            for o in Op:
                with m.Case(o):
                    nz = [f[name] != 0 for name in RESERVED_FIELDS[o]]
                    mask = P_RESERVED_MASK.get(o, 0)
                    if mask:
                        nz.append((f["p"] & mask) != 0)
                    m.d.comb += [legal.eq(1), reserved.eq(sum(nz) != 0 if nz else 0)]
        bad_left = ((f["opcode"] == Op.VSHIFT) & ~(f["p"] & VSHIFT_RIGHT).any()
                    & ((f["p"] & VSHIFT_AMOUNT_MASK) > VSHIFT_MAX_LEFT))

        fop, fd, fa, fb, fp = f["opcode"], f["d"], f["a"], f["b"], f["p"]

        # The opcode's flags for this word, in DECODE, the ALU's shift from its p or (from
        # ``k_shift``, read in FETCH) its constant. Enabled by DECODE's flag, not inside
        # the state ``Switch``: the state compare fanned out to their enables (issue 6).
        amount = fp & VSHIFT_AMOUNT_MASK
        right, sat8 = (fp & VSHIFT_RIGHT).any(), (fp & VSHIFT_SAT8).any()
        code = 0
        for o, c in _ALU_OPS.items():
            code = Mux(fop == o, c, code)
        with m.If(at["decode"]):
            m.d.sync += [
                is_alu.eq(fop.matches(*_ALU_OPS)), is_lut.eq(fop.matches(*_LUT_OPS)),
                is_copy.eq(fop.matches(*_COPY_OPS)), is_argmax.eq(fop == Op.ARGMAX),
                is_lstm.eq(fop == Op.LSTM), alu_op.eq(code), alu_b_one.eq(fop == Op.VREQ8),
                alu_shift.eq(Mux(fop == Op.VMUL, amount,
                                 Mux(fop == Op.VSHIFT, Mux(right, -amount, amount),
                                     k_shift))),
                alu_sat8.eq(Mux(fop == Op.VSHIFT, sat8, fop.matches(Op.VREQ8, Op.VMULQ8))),
                lut_tanh.eq(fop == Op.TANH),
            ]
        binary = fop.matches(Op.VADD, Op.VMUL, Op.VMULQ8)
        uses_const = fop.matches(Op.VREQ8, Op.VMULQ8)
        # LOADROW's table size VN * VL, set with them (by SETVL from its register fields,
        # 0 at a start) so that the next FETCH's checks see the new product. The product
        # of ``word``'s fields is registered every cycle (FETCH's, the same word, is the
        # one SETVL's DECODE takes): a multiply used only in one state is one Yosys's
        # ``share`` merges with LOADROW's row address multiply, and the merged one's
        # input mux then follows LR_ROW's index check (issue 6). ``table`` saturates at
        # ``TABLE_MAX``: every check against it stays exact (a table that large exceeds
        # any scratch depth and any address either way), and its sum compares in
        # ``decode_bad`` are 18-bit carry chains, not 33-bit (issue 6).
        table, ab = Signal(range(TABLE_MAX + 1)), Signal(32)
        m.d.sync += ab.eq(fa * fb)
        # The scratch room after VL elements, ``depth - vl``, set with VL: ``x + vl >
        # depth`` is then the one compare ``x > room_vl``. Signed: a VL past the depth
        # leaves negative room, which every address exceeds.
        room_vl = Signal(range(depth - 0xFFFF, depth + 1), init=depth)
        # VL = 0 and VN = 0, registered with them (by SETVL, 1 at a start), so that no
        # 16-bit compare sits in front of the flags below.
        vl_zero, vn_zero = Signal(init=1), Signal(init=1)
        # The checks registered as flags, each a flat OR of one-hot terms (an opcode
        # class AND one check, a carry chain at most): no priority chain over the checks
        # follows the carry chains into the registers (issue 6). DECODE faults on any of
        # the four flags (one LUT before its fan-out: a fifth register, their OR found in
        # FETCH, put the opcode decode, a carry chain and the OR of every check in one
        # cycle, -0.82 ns on seed 2 of run m60) and takes the code from them in the
        # priority of ``docs/isa.md`` 4.2 / 4.3 (an illegal opcode sets no other flag, a
        # reserved field wins over the operand checks, a bad operand over a range).
        is_argmax_w, is_loadrow_w = fop == Op.ARGMAX, fop == Op.LOADROW
        is_elem_w = fop.matches(*ELEMENTWISE)
        operand_terms = [bad_left, (is_argmax_w | is_loadrow_w | is_elem_w) & vl_zero,
                         is_loadrow_w & vn_zero, uses_const & const_bad(fp)]
        range_terms = [
            is_argmax_w & ((fa > room_vl) | (fd >= depth)),
            is_loadrow_w & (_sum_exceeds(fa, table, depth) | (fb >= depth) | (fd > room_vl)
                            | (_sum_exceeds(fa, table, fd) & _sum_exceeds(fd, vl, fa))),
            is_elem_w & ((fd > room_vl) | (fa > room_vl) | partial_overlap(fd, fa, vl)),
            binary & ((fb > room_vl) | partial_overlap(fd, fb, vl)),
        ]
        # The outcome, in DECODE: any check failed, and which code's (a range if no
        # other flag is set).
        bad_illegal, bad_reserved, bad_operand, bad_range = (
            Signal(name=f"decode_{n}") for n in ("illegal", "reserved", "operand", "range"))
        m.d.sync += [
            bad_illegal.eq(~legal), bad_reserved.eq(reserved),
            bad_operand.eq(Cat(*operand_terms).any()), bad_range.eq(Cat(*range_terms).any()),
        ]
        decode_bad = bad_illegal | bad_reserved | bad_operand | bad_range
        decode_code = Mux(bad_illegal, ErrorCode.ILLEGAL_OPCODE,
                          Mux(bad_reserved, ErrorCode.RESERVED_FIELD,
                              Mux(bad_operand, ErrorCode.BAD_OPERAND, ErrorCode.SCRATCH_RANGE)))

        # FETCH's checks, found in the cycle before it and registered: FETCH's fault
        # starts at a flip-flop, not at the compares' carry chains (issue 6). That cycle
        # is START_WORD (PC and the count as the start set them) or one that completes an
        # instruction (FETCH's are each one more), so ``x + step > limit`` (``step``, the
        # read ahead's: 1 in the start states, 2 after) is FETCH's ``x >= limit`` either
        # way. PROG_LEN and WATCHDOG are taken as they are in that cycle
        # (``docs/register-map.md``).
        pc_over, count_over = Signal(), Signal()
        m.d.sync += [pc_over.eq(_sum_exceeds(pc, step, self.prog_len)
                                | _sum_exceeds(pc, step, cfg.program_depth)),
                     count_over.eq(_sum_exceeds(instructions, step, self.watchdog))]

        # The opcode's class, registered every cycle from ``word`` (FETCH's is the one
        # DECODE takes, as for the checks above): DECODE's choice of the next state,
        # ``busy``, ``done`` and the counters then starts at one flip-flop per class, not
        # at the opcode's compares after ``word`` (issue 6: ``busy`` <- ``word`` -0.54 ns
        # on seed 3 of run m35).
        op_class = {name: Signal(name=f"op_{name}") for name in
                    ("halt", "sync", "setvl", "desc", "loadrow")}
        m.d.sync += [op_class["halt"].eq(fop == Op.HALT), op_class["sync"].eq(fop == Op.SYNC),
                     op_class["setvl"].eq(fop == Op.SETVL),
                     op_class["desc"].eq(fop.matches(Op.MATVEC, Op.LSTM)),
                     op_class["loadrow"].eq(is_loadrow_w)]

        with m.Switch(state):
            with m.Case(_State.START):
                m.d.sync += goto(_State.START_WORD)

            with m.Case(_State.START_WORD):
                m.d.sync += goto(_State.FETCH)

            with m.Case(_State.FETCH):
                with m.If(pc_over):
                    fault(ErrorCode.PC_OVERRUN)
                with m.Elif(count_over):
                    fault(ErrorCode.WATCHDOG)
                with m.Else():
                    m.d.sync += goto(_State.DECODE)

            with m.Case(_State.DECODE):
                m.d.sync += [p.eq(fp), d.eq(fd), a.eq(fa), b.eq(fb),
                             rk.eq(0), wk.eq(0), lk.eq(0), src.eq(fa),
                             rk_last.eq(vl == 1), wk_last.eq(vl == 1)]
                with m.If(decode_bad):
                    fault(decode_code)
                with m.Else():
                    with m.If(op_class["halt"]):
                        m.d.sync += [instructions.eq(instructions + 1), busy.eq(0),
                                     done.eq(1), error.eq(ErrorCode.OK), *goto(_State.IDLE)]
                    with m.Elif(op_class["sync"]):
                        m.d.sync += sync_count.eq(sync_count + 1)  # units idle here
                        complete()
                    with m.Elif(op_class["setvl"]):
                        m.d.sync += [vl.eq(fa), vn.eq(fb),
                                     table.eq(Mux(ab[len(table):].any(), TABLE_MAX, ab)),
                                     room_vl.eq(depth - fa), vl_zero.eq(fa == 0),
                                     vn_zero.eq(fb == 0)]
                        complete()
                    with m.Elif(op_class["desc"]):
                        m.d.sync += goto(_State.DESC_COPY)
                    with m.Elif(op_class["loadrow"]):
                        m.d.sync += goto(_State.LR_INDEX)
                    with m.Else():  # element-wise and ARGMAX
                        m.d.sync += goto(_State.VEC_RUN)

            with m.Case(_State.DESC_COPY):  # ``desc_f`` takes the word (above)
                m.d.sync += goto(_State.DESC)

            with m.Case(_State.DESC):
                rows, cols, split = df["rows"], df["cols"], df["split"]
                mode, cfb, units = df["mode"], df["cell_frac_bits"], df["rows"][2:]
                # Each check one carry chain from flip-flops at most (issue 6): the
                # descriptor's sums through ``_sum_exceeds``/``_sum_equals``, the scratch
                # ranges as compares against the instruction's room.
                lstm_bad = ((rows[:2] != 0) | (split == 0) | ~_sum_equals(split, units, cols)
                            | (cfb < 8) | (cfb > 15))
                m.d.sync += [
                    desc_bad.eq((p >= self.desc_count)
                                | (mode > Mode.LSTM) | ((mode == Mode.LSTM) != is_lstm)
                                | (split > cols)
                                | _sum_exceeds(df["stream_base"], df["n_words"],
                                               cfg.weight_depth)
                                | _sum_exceeds(df["param_base"], rows, cfg.param_depth)
                                | (is_lstm & lstm_bad)),
                    range_bad.eq((split > room_a)
                                 | Mux(is_lstm, (units << 1) > room_d,
                                       _sum_exceeds(cols, ~split, b_room)
                                       | (rows > room_d))),
                    short_load.eq(cols <= 1), *goto(_State.MV_CHECK),
                ]

            with m.Case(_State.MV_CHECK):
                with m.If(desc_bad | p_reserved | (is_lstm & lstm_const_bad)):
                    fault(ErrorCode.BAD_DESCRIPTOR)
                with m.Elif(range_bad):
                    fault(ErrorCode.SCRATCH_RANGE)
                with m.Else():
                    m.d.comb += load.eq(1)
                    # Start the engine with the last activation read: its last write
                    # lands in the engine's CHECK cycle, before it reads the buffer.
                    with m.If(short_load):
                        m.d.comb += eng.start.eq(1)
                        m.d.sync += goto(_State.MV_RUN)
                    with m.Else():
                        m.d.sync += goto(_State.MV_LOAD)

            with m.Case(_State.MV_LOAD):
                m.d.comb += load.eq(1)
                with m.If(lk_last):
                    m.d.comb += eng.start.eq(1)
                    m.d.sync += goto(_State.MV_RUN)

            with m.Case(_State.MV_RUN):
                with m.If(eng.done):
                    m.d.sync += [macs.eq(macs + eng.macs),
                                 zero_acts.eq(zero_acts + eng.zero_acts),
                                 stalls.eq(stalls + eng.stalls)]
                    with m.If(eng.error != 0):
                        fault(eng.error)
                    with m.Elif(is_lstm):
                        m.d.sync += [tail_k.eq(0), *goto(_State.LSTM_TAIL)]
                    with m.Else():
                        complete()

            with m.Case(_State.LSTM_TAIL):
                # A fixed tail; waiting for the last h' as well keeps a slow cell safe.
                with m.If(tail_done):
                    complete()
                with m.Elif(tail_k != CELL_TAIL_CYCLES - 1):
                    m.d.sync += tail_k.eq(tail_k + 1)

            # The index is checked from ``rd_b``, not the scratch block RAM's output: the
            # compare's carry chain and the fault's fan-out (state, busy, error) would
            # follow the RAM's 5.8 ns clock-to-out (issue 6). No cycle is added: the row
            # offset is formed in LR_INDEX; a bad index faults a cycle later.
            with m.Case(_State.LR_INDEX):
                m.d.sync += goto(_State.LR_ROW)

            with m.Case(_State.LR_ROW):
                # ``src`` is set whether or not the index passes (a fault ends the run), so
                # its enable does not follow the index compare's carry chain.
                m.d.sync += src.eq(a + row_offset)
                with m.If(rd_b >= vn):  # the index entry is unsigned
                    fault(ErrorCode.BAD_OPERAND)
                with m.Else():
                    m.d.sync += goto(_State.VEC_RUN)

            with m.Case(_State.VEC_RUN):
                m.d.sync += [rk.eq(rk + 1), rk_last.eq(rk + 2 == vl)]
                with m.If(rk_last):
                    m.d.sync += goto(_State.VEC_DRAIN)

            with m.Case(_State.VEC_DRAIN):
                with m.If(is_argmax):
                    with m.If(v1 & wk_last):
                        m.d.sync += goto(_State.AM_WRITE)
                with m.Elif(vec_we & wk_last):
                    complete()

            with m.Case(_State.AM_WRITE):
                m.d.sync += result.eq(argmax_k)
                complete()

        # Host memory port: while idle it takes over the sequencer's read ports and the
        # scratch write port (assigned last, so it wins); program, descriptor and constant
        # memories get their one write port here.
        host = ~busy
        prog_wr, const_wr = self.program_mem.write_port(), self.const_mem.write_port()
        host_we = {mem: host & self.host_we & (self.host_mem == mem) for mem in HostMem}
        for port, mem in ((prog_wr, HostMem.PROGRAM), (const_wr, HostMem.CONSTANTS)):
            m.d.comb += [port.addr.eq(self.host_addr), port.data.eq(self.host_wdata),
                         port.en.eq(host_we[mem])]
        # A descriptor is written a 32-bit part at a time, straight into the memory: the
        # host block needs no 512-bit staging register (issue 6: 448 FF + 438 LUT4 on the
        # UP5K).
        desc_wr = self.desc_mem.write_port(granularity=32)
        desc_part_we = [host_we[HostMem.DESCRIPTORS] & (self.host_part == k)
                        for k in range(len(desc_wr.en))]
        m.d.comb += [desc_wr.addr.eq(self.host_addr),
                     desc_wr.data.eq(self.host_wdata[:32].replicate(len(desc_wr.en))),
                     desc_wr.en.eq(Cat(desc_part_we))]
        # A constant's validity is checked from the written word into a register, with
        # its index and enable, and lands in ``const_ok`` a cycle after the memory write:
        # the port's 64 data bits, the checks' carry chains and the index decode into the
        # flags' enables are two paths, not one (issue 6). A descriptor part's
        # reserved-bit flag likewise (the OR of 112 bits into one flag's enables missed
        # 10 ns by 0.16 ns on seed 2 of run m34). The host cannot tell: the flags are
        # read from a run's FETCH on, at least two cycles after a start, and a read
        # returns the memory's word, not its flag.
        new_m, new_s = self.host_wdata[:32].as_signed(), self.host_wdata[32:64].as_signed()

        def flag_after_write(flags, we, index, value):
            """``flags[index] = value`` a cycle after a host write (enable ``we``), from
            registered enable, index and value."""
            we_q, at_index, new = Signal(), Signal(len(index)), Signal()
            m.d.sync += [we_q.eq(we), at_index.eq(index), new.eq(value)]
            with m.If(we_q):
                m.d.sync += flags.bit_select(at_index, 1).eq(new)

        flag_after_write(const_ok, host_we[HostMem.CONSTANTS], self.host_addr[:const_aw],
                         ((new_m == 0) | (new_m[30:32] == 0b01))
                         & (new_s >= -MAX_RIGHT_SHIFT) & (new_s <= MAX_LEFT_SHIFT))
        for k, flags in reserved_set.items():
            flag_after_write(flags, desc_part_we[k], desc_wr.addr,
                             (self.host_wdata[:32] & DESC_RESERVED_PARTS[k]).any())
        host_mem_q = Signal(HostMem)
        with m.If(host):
            m.d.comb += [prog_rd.addr.eq(self.host_addr), desc_rd.addr.eq(self.host_addr),
                         const_rd.addr.eq(self.host_addr), sc_a.addr.eq(self.host_addr),
                         sc_w.addr.eq(self.host_addr), sc_w.data.eq(self.host_wdata),
                         sc_w.en.eq(host_we[HostMem.SCRATCH])]
            with m.If(self.host_re):  # the constants' enable: ``at["const"]`` is low here
                m.d.comb += const_rd.en.eq(1)
                m.d.sync += host_mem_q.eq(self.host_mem)
        # Each block RAM's word is registered beside it and the memory chosen after the
        # registers, so the RAMs' 5.8 ns clock-to-out meets a flip-flop, not the mux and
        # the route across the die to the host block's read word (issue 6); the word
        # shows 2 cycles after ``host_re``. The program memory's register is the
        # sequencer's ``next_word``, the descriptors' ``desc_q`` (``desc_f``'s source)
        # and the scratch's ``rd_a``, each taking its RAM's output in every idle cycle,
        # and the constants' is their port's, loaded with the read (above): the host
        # adds no register of its own.
        with m.Switch(host_mem_q):
            for mem, data in ((HostMem.PROGRAM, next_word), (HostMem.DESCRIPTORS, desc_q),
                              (HostMem.CONSTANTS, const_rd.data), (HostMem.SCRATCH, rd_a)):
                with m.Case(mem):
                    m.d.comb += self.host_rdata.eq(data)

        # Host control last: it overrides whatever the sequencer was doing. A start reads
        # the first instruction ahead, as the sequencer does every next one; START takes
        # it into ``next_word``.
        with m.If(self.start & ~self.soft_reset):
            m.d.comb += prog_rd.addr.eq(self.start_pc)
        with m.If(self.soft_reset):
            m.d.sync += [*goto(_State.IDLE), busy.eq(0), done.eq(0)]
        with m.Elif(self.start):
            m.d.sync += [
                *goto(_State.START), pc.eq(self.start_pc), busy.eq(1), done.eq(0),
                error.eq(0), faulted.eq(0), vl.eq(0), vn.eq(0), table.eq(0),
                room_vl.eq(depth), vl_zero.eq(1), vn_zero.eq(1), cycles.eq(0),
                instructions.eq(0), macs.eq(0), zero_acts.eq(0), stalls.eq(0),
            ]
        return m
