"""Host register block: the NEP register map behind ``Axi4LiteSlave``'s inside port.

``docs/register-map.md`` is the contract (sections 3 to 5). The decoder is generated
from ``hw.register_map.RegisterMap``, the same data as the document's tables: every
window span is a power of two aligned to itself, so a window is selected by the word
address bits above its span, the word index is the offset over the stride and the part
the bits below it.
"""

from __future__ import annotations

import operator
from functools import reduce

from amaranth import Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from compiler.isa import STREAM_READ_LATENCY, ProcessorConfig
from golden.weights import PARAM_BYTES

from .banked_ram import delayed
from .processor import HostMem, host_members, host_wdata_bits
from .register_map import ADDR_WIDTH, REG_SPAN, Access, RegisterMap

__all__ = ["CORE_CONTROL", "CORE_READ_LATENCY", "CORE_STATUS", "HOST_PORT",
           "WINDOW_READ_LATENCY", "HostInterface"]

#: Run parameters and pulses the block drives into ``Processor`` (same member names).
CORE_CONTROL = ("start", "soft_reset", "start_pc", "prog_len", "desc_count", "const_count",
                "watchdog")
#: ``Processor`` outputs the block reads (same member names).
CORE_STATUS = ("busy", "done", "error", "fault_pc", "result", "vl", "vn", "sync_count",
               "cycles", "instructions", "macs", "zero_acts", "stalls")
#: ``Processor``'s host memory port: driven by the block, except ``host_rdata``.
HOST_PORT = ("host_mem", "host_addr", "host_part", "host_wdata", "host_we", "host_re")
#: Cycles from ``Processor``'s ``host_re`` to its ``host_rdata``: the block RAM, then the
#: register beside it.
CORE_READ_LATENCY = 2

#: Cycles from a window read's ``re`` to its ``rvalid``: the request register, the weight
#: and parameter memories' latency, the read part register.
WINDOW_READ_LATENCY = 1 + STREAM_READ_LATENCY + 1
#: Windows on the core's memories, through its host port.
_CORE_WINDOWS = {"program": HostMem.PROGRAM, "descriptors": HostMem.DESCRIPTORS,
                 "constants": HostMem.CONSTANTS, "scratch": HostMem.SCRATCH}
#: Windows on the memories outside the core: window name -> port prefix.
_STREAM_WINDOWS = {"weights": "weight", "params": "param"}
#: The window whose words are wider than the staging register: each part write goes
#: straight to its part of the memory word (``Processor``'s ``host_part``).
_PART_WINDOW = "descriptors"


def _log2(n: int) -> int:
    assert n & (n - 1) == 0, n
    return n.bit_length() - 1


def _window_picks(windows) -> dict[str, dict[int, int]]:
    """Per window, word address bit -> value: the bits that tell it from every other
    window, for an address known to be in one of them. Of each pair, the highest bit
    above both spans where their bases differ (the windows are disjoint and aligned)."""
    picks = {}
    for w in windows:
        bits = {}
        for v in windows:
            if v is not w:
                low = max(_log2(w.span), _log2(v.span))
                top = low + ((w.base ^ v.base) >> low).bit_length() - 1
                assert top >= low, (w.name, v.name)
                bits[top - 2] = w.base >> top & 1
        picks[w.name] = bits
    return picks


def _strobe_mask(wstrb):
    return Cat(*(wstrb[i].replicate(8) for i in range(4)))


def _part(word, part):
    """Part ``part`` (bits ``32 * part`` up) of ``word``, zero-extended to whole parts."""
    return Cat(word, Const(0, -len(word) % 32)).word_select(part, 32)


class HostInterface(wiring.Component):
    """The register map of ``docs/register-map.md`` for a ``Processor`` of ``config``.

    Registers answer a read in the cycle they take it, with the value the register had
    in the cycle before (the address cycle); windows ``WINDOW_READ_LATENCY`` (5) cycles
    later. A register write lands with ``we``: its value shows from the next cycle.
    Everything the block drives into the core and the memories is registered (the
    memory ports, the ``CTRL`` pulses), so the bus slave's state and this decoder
    share no combinational path with the sequencer; a window read then takes the request
    register's cycle, the weight and parameter memories' ``STREAM_READ_LATENCY`` (their
    words leave from registers) and one to register the part read (32 bits, chosen
    before the register); the core's memories answer sooner (``CORE_READ_LATENCY``,
    their words also from registers), and their part waits in that register. A window write
    merges its strobed bytes into part ``k`` of the staging register
    (``host_wdata_bits``: the widest word written whole); a write to a word's last part
    also commits the staging word to the memory, in the next cycle. A descriptor part's
    write merges into the staging register's part 0 and writes that part to part ``k``
    of the descriptor in the next cycle, whichever ``k``. The whole decode is
    registered (register selects, refusal flags, the read value; window selects): an
    access's ``addr`` must be valid from the cycle before ``we``/``re``
    (``Axi4LiteSlave``'s is). ``err`` (``SLVERR``) flags unmapped
    addresses, writes to read-only registers and every window access while ``busy``; a
    flagged access changes nothing.

    Parameters
    ----------
    config : ProcessorConfig
        The processor behind the block (memory depths, lanes).

    Interface
    ---------
    addr : In(ADDR_WIDTH - 2) ; wdata : In(32) ; wstrb : In(4) ; we, re : In(1)
    ready : Out(1) ; rdata : Out(32) ; rvalid : Out(1) ; err : Out(1)
        The inside port of ``Axi4LiteSlave(addr_width=ADDR_WIDTH)``, from its side.
    start, soft_reset : Out(1)
        ``CTRL`` pulses, one cycle, in the cycle after the write (``soft_reset`` wins).
    start_pc : Out(16) ; prog_len : Out(17) ; desc_count, const_count : Out(9)
    watchdog : Out(32)
        The run parameter registers (``WATCHDOG`` resets to ``program_depth``).
    busy, done : In(1) ; error : In(8) ; fault_pc, result, vl, vn : In(16)
    sync_count, cycles, instructions, macs, zero_acts, stalls : In(32)
        The core's state, read through ``STATUS`` .. ``STALLS``.
    host_mem : Out(HostMem) ; host_addr : Out(16) ; host_part : Out(4)
    host_wdata : Out(host_wdata_bits(config)) ; host_we, host_re : Out(1)
    host_rdata : In(512)
        To ``Processor``'s host port: program, descriptor, constant and scratch windows
        (registered: an access reaches the port the cycle after the bus takes it).
    weight_addr, weight_wdata, weight_we, weight_re : Out ; weight_rdata : In
        Weight memory (``word_bits`` bits): write, and read answering
        ``STREAM_READ_LATENCY`` cycles after ``weight_re``; used only while ``busy`` is low.
    param_addr, param_wdata, param_we, param_re : Out ; param_rdata : In
        Parameter memory (72-bit records), likewise.
    irq : Out(1)
        ``|(IRQ_STATUS & IRQ_ENABLE)``, active high.
    """

    def __init__(self, *, config: ProcessorConfig):
        if not isinstance(config, ProcessorConfig):
            raise TypeError(f"config must be a ProcessorConfig, got {type(config).__name__}")
        self.config = config
        self.map = RegisterMap(config)
        wa = max(1, (config.weight_depth - 1).bit_length())
        pa = max(1, (config.param_depth - 1).bit_length())
        super().__init__({
            "addr": In(ADDR_WIDTH - 2), "wdata": In(32), "wstrb": In(4),
            "we": In(1), "re": In(1),
            "ready": Out(1), "rdata": Out(32), "rvalid": Out(1), "err": Out(1),
            **{name: member.flip() for name, member in host_members(config).items()},
            "weight_addr": Out(wa), "weight_wdata": Out(config.word_bits),
            "weight_we": Out(1), "weight_re": Out(1), "weight_rdata": In(config.word_bits),
            "param_addr": Out(pa), "param_wdata": Out(8 * PARAM_BYTES),
            "param_we": Out(1), "param_re": Out(1), "param_rdata": In(8 * PARAM_BYTES),
            "irq": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        word = self.addr
        mask = _strobe_mask(self.wstrb)
        bits = self.wdata & mask  # the strobed 1s: CTRL pulses, IRQ_STATUS clears
        # Every access is taken at once: registers and RAM ports never wait.
        m.d.comb += self.ready.eq(1)

        # ---- registers, decoded a cycle ahead like the windows below: ``addr`` shows
        # from the cycle before ``we``/``re``, so the selects, the refusal flags and the
        # read value (the register as it is in that cycle) are registered and the bus
        # state reaches no register's enable or the read data through an address decode.
        reg_bits = _log2(REG_SPAN) - 2
        is_reg = word[reg_bits:] == 0
        # Registered decode: the address is a register's, it is mapped, read-only; its value.
        reg_sel, reg_hit, reg_ro, reg_rdata = Signal(), Signal(), Signal(), Signal(32)
        irq_enable, irq_status, irq_clear = Signal(2), Signal(2), Signal(2)
        status = Cat(self.busy, self.done, self.done & (self.error != 0))
        m.d.sync += [self.start.eq(0), self.soft_reset.eq(0)]  # pulses, unless set below
        # What each register reads; registers not named here (ID, the configuration,
        # write-only CTRL) read their reset value.
        values = {"STATUS": status, "IRQ_ENABLE": irq_enable, "IRQ_STATUS": irq_status,
                  **{n.upper(): getattr(self, n) for n in CORE_STATUS + CORE_CONTROL[2:]}}
        # The registers sit at the bottom of the block: the low ``low_bits`` of the word
        # address tell them apart, the bits above must be 0. The read value and the
        # read-only flag are tables indexed by those low bits alone (a mux tree: no compare
        # of the whole address and no synchronous reset on these registers, issue 6); they
        # are used only with ``reg_hit`` (otherwise ``err``, and the slave answers 0).
        low_bits = max(reg.offset >> 2 for reg in self.map.registers).bit_length()
        low = word[:low_bits]
        table = [Const(0, 32)] * (1 << low_bits)
        mapped, read_only = 0, 0
        for reg in self.map.registers:
            value = Value.cast(values.get(reg.name, reg.reset))
            table[reg.offset >> 2] = Cat(value, Const(0, 32 - len(value)))
            mapped |= 1 << (reg.offset >> 2)
            read_only |= (reg.access == Access.RO) << (reg.offset >> 2)
        m.d.sync += [reg_sel.eq(is_reg),
                     reg_hit.eq((word[low_bits:] == 0)
                                & Const(mapped, len(table)).bit_select(low, 1)),
                     reg_ro.eq(Const(read_only, len(table)).bit_select(low, 1)),
                     reg_rdata.eq(Cat(*table).word_select(low, 32))]
        # The write selects: a whole-address compare each, as a write must hit exactly.
        hits = {reg.name: Signal(name=f"hit_{reg.name.lower()}")
                for reg in self.map.registers if reg.access != Access.RO}
        m.d.sync += [hit.eq(word == self.map.register(name).offset >> 2)
                     for name, hit in hits.items()]
        for name, hit in hits.items():
            reg = self.map.register(name)
            with m.If(self.we & hit):
                if name == "CTRL":
                    m.d.sync += [self.start.eq(bits[0] & ~bits[1]),
                                 self.soft_reset.eq(bits[1])]
                elif reg.access == Access.RW1C:
                    m.d.comb += irq_clear.eq(bits)
                else:
                    value = values[name]
                    m.d.sync += value.eq((value & ~mask) | (self.wdata & mask))

        # Interrupts: a run ends when done rises; a set beats a clear in the same cycle.
        done_last = Signal()
        ended = self.done & ~done_last
        m.d.sync += [done_last.eq(self.done),
                     irq_status.eq((irq_status & ~irq_clear)
                                   | Cat(ended, ended & (self.error != 0)))]
        m.d.comb += self.irq.eq((irq_status & irq_enable).any())

        # ---- windows, decoded a cycle ahead: the slave shows an access's address from
        # the cycle before ``we``/``re``, so the decode is registered and the bus state,
        # the address compares and the staging register and memory port enables they
        # drive do not share a cycle.
        # The selects compare the whole address above each span. The fields below are used
        # only with a select set (a write's merge and commit, a read, ``win_ok``), so they
        # may assume the address is in some window: then a few bits tell the windows apart
        # (``_window_picks``), and each field is a flat OR of the windows' values masked by
        # those picks, loaded every cycle: no compare of the whole address, no priority
        # chain and no hold enable between the address and these registers (issue 6). The
        # memory ports' addresses follow ``index`` between accesses; the slave holds a
        # read's address until its ``rvalid``, so they hold while the read is in flight.
        # ``stage_part`` is the staging register's part a write merges into: ``part``,
        # but 0 for a descriptor, whose every part write commits (``last``).
        staging = Signal(host_wdata_bits(self.config))
        index, part, stage_part, last = (Signal(20), Signal(4),
                                         Signal(range(len(staging) // 32)), Signal())
        win_hit, win_ok = Signal(), Signal()
        sel = {}
        fields = [(index, []), (part, []), (stage_part, []), (last, []), (win_ok, [])]
        picks = _window_picks(self.map.windows)
        for w in self.map.windows:
            span_bits = _log2(w.span) - 2
            part_bits = _log2(w.stride) - 2
            sel[w.name] = s = Signal(name=f"sel_{w.name}")
            m.d.sync += s.eq(word[span_bits:] == w.base >> _log2(w.span))
            offset = word[:span_bits]
            w_index = offset[part_bits:]
            w_part = offset[:part_bits] if part_bits else Const(0, 1)
            bits = picks[w.name]
            pick = Cat(word[j] for j in bits) == Cat(Const(b, 1) for b in bits.values())
            by_part = w.name == _PART_WINDOW
            assert by_part or w.word_bits <= len(staging), w.name
            for (_, values), value in zip(fields, (
                    w_index, w_part, 0 if by_part else w_part,
                    1 if by_part else w_part == w.parts - 1,
                    (w_index < w.depth) & (w_part < w.parts))):
                values.append(Mux(pick, value, 0))
        m.d.sync += [field.eq(reduce(operator.or_, values)) for field, values in fields]
        m.d.comb += win_hit.eq(Cat(*sel.values()).any())
        win_go = win_hit & win_ok & ~self.busy
        core_sel = Signal()
        for name, mem in _CORE_WINDOWS.items():
            with m.If(sel[name]):
                m.d.comb += core_sel.eq(1)
                m.d.sync += self.host_mem.eq(mem)

        # Staging: the strobed bytes into part ``stage_part``; the last part commits the
        # word (a descriptor's part 0, to its part ``part``: ``host_part``).
        merged = Signal(len(staging))
        old = staging.word_select(stage_part, 32)
        m.d.comb += [merged.eq(staging),
                     merged.word_select(stage_part, 32).eq((old & ~mask)
                                                           | (self.wdata & mask))]
        write = self.we & win_go
        commit = write & last
        read = self.re & win_go
        with m.If(write):
            m.d.sync += staging.eq(merged)
        # The commit is registered, so the word it writes is the staging register's.
        m.d.comb += self.host_wdata.eq(staging)
        m.d.sync += [self.host_addr.eq(index), self.host_part.eq(part),
                     self.host_we.eq(commit & core_sel), self.host_re.eq(read & core_sel)]
        for name, prefix in _STREAM_WINDOWS.items():
            m.d.comb += getattr(self, f"{prefix}_wdata").eq(staging)
            m.d.sync += [getattr(self, f"{prefix}_addr").eq(index),
                         getattr(self, f"{prefix}_we").eq(commit & sel[name]),
                         getattr(self, f"{prefix}_re").eq(read & sel[name])]

        # ---- responses: register reads now, window reads WINDOW_READ_LATENCY cycles
        # later, of which the last is the read part's register, ``rd_word``: 32 bits,
        # part ``part`` of the word chosen before it, so ``rdata`` needs no 512-bit
        # register and mux after it (issue 6: 512 FF + 729 LUT4, and 480 LUT4 of ``rdata``,
        # on the UP5K).
        # A core memory's word arrives 1 + CORE_READ_LATENCY cycles after the read (the
        # request register, the RAM, its register) and its part is chosen in two steps,
        # each a 4:1 choice into a register: then, in each group of four parts (``rd_quad``),
        # and a cycle later the group. A descriptor's 16 parts come from 16 block RAMs
        # across the die; the one 16:1 choice into ``rd_word`` missed 10 ns by up to 0.36
        # ns, 8.2 ns of it routing (issue 6, run m72). A weight or parameter word arrives
        # STREAM_READ_LATENCY cycles after its request, one cycle after a core word, from
        # the memory's output register, and its part is chosen into ``rd_word`` then too.
        # Both come from flip-flops: no block RAM output reaches across the die to
        # ``rd_word``. The address is held meanwhile and the read was checked when taken,
        # so no error is raised for it then.
        rd_part, rd_weight, rd_param = Signal(4), Signal(), Signal()
        with m.If(read):
            m.d.sync += [rd_part.eq(part), rd_weight.eq(sel["weights"]),
                         rd_param.eq(sel["params"])]
        core_arrives = delayed(m, read, 1 + CORE_READ_LATENCY, name="rd_core")
        stream_arrives = delayed(m, core_arrives, STREAM_READ_LATENCY - CORE_READ_LATENCY,
                                 name="rd_stream")
        rd_pending = delayed(m, stream_arrives, 1, name="rd_pending")
        rd_quad, rd_word = Signal(128), Signal(32)
        with m.If(core_arrives):
            m.d.sync += rd_quad.eq(Cat(_part(self.host_rdata[128 * g:128 * (g + 1)],
                                             rd_part[:2]) for g in range(4)))
        with m.If(stream_arrives):
            stream_word = Mux(rd_weight, self.weight_rdata, self.param_rdata)
            m.d.sync += rd_word.eq(Mux(rd_weight | rd_param, _part(stream_word, rd_part),
                                       rd_quad.word_select(rd_part[2:], 32)))
        decode_err = Mux(reg_sel, ~reg_hit | (self.we & reg_ro), ~win_go)
        m.d.comb += [
            self.err.eq(~rd_pending & decode_err),
            self.rvalid.eq((self.re & ~read) | rd_pending),
            self.rdata.eq(Mux(rd_pending, rd_word, reg_rdata)),
        ]
        return m
