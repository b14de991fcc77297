"""A pyuvm environment for ``nep_top`` (Verilator, cocotb), checked against the ISS.

Structure (pyuvm, TinyALU style)::

    NepTest (uvm_test)
      NepEnv (uvm_env)
        AxiAgent (uvm_agent)
          uvm_sequencer
          AxiLiteDriver   cocotbext-axi ``AxiLiteMaster``, random pauses on all channels;
                          executes the items, publishes each (with what it read back) on ``ap``
          IrqMonitor      passive: counts ``irq`` rising edges, publishes them on ``ap``
        MemAgent (uvm_agent)      layered on the AXI agent
          uvm_sequencer
          MemDriver       translates each :class:`MemItem` (region, index, values, read or
                          write) into :class:`BusItem` s on the AXI sequencer
                          (``Window.split``/``join``, ``RegisterMap.address``)
          MemMonitor      rebuilds completed word accesses from the AXI driver's bus items
                          (``RegisterMap.decode``), publishes them to scoreboard and coverage
        NepScoreboard     mirrors every register write and memory write into
                          ``compiler.iss.Machine``, checks memory reads against its memories;
                          after each run compares RTL scratch (read through the bus), RESULT,
                          ERROR, FAULT_PC, VL, VN, SYNC_COUNT, INSTRUCTIONS, STATUS with the ISS
        NepCoverage       cocotb-coverage coverpoints sampled from the ISS trace of each run,
                          and ``nep.mem.region_x_access`` from the memory monitor

Bus-layer items: :class:`BusItem` (one 32-bit access), :class:`RegItem` (write/read a
register), :class:`RunItem` (run from a PC, collect results). Memory-layer item:
:class:`MemItem`; memory sequences :class:`MemLoadImageSeq` (``Machine.load``),
:class:`MemWriteSeq`, :class:`MemReadSeq`, :class:`MemSampleSeq` (read back every region).
Images, scratch inputs, program words and corruptions all go through the memory agent.
Sequences: :class:`ComputeStepSeq` (every step of a compiled small model),
:class:`DirectedSeq` (one hand-written program per opcode plus error cases),
:class:`RandomSeq` (constrained-random vector/ARGMAX/SETVL/LOADROW/HALT streams with
occasional illegal instructions; the expected error is the ISS's), :class:`CorruptSeq`
(engine errors 1..9: weight/param/descriptor words corrupted through the bus with
:class:`MemWriteSeq`, read back, mirrored into the ISS, then restored after a soft reset; the
engine-error destination range is unspecified, docs/isa.md 4, so not compared) and
:class:`ModelSeq` (the steps of two more models: dense int8, sparse codebook, so every
``nep.layer.sparsity`` class is executed).
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge
from cocotb_coverage.coverage import CoverCross, CoverPoint, coverage_db
from cocotbext.axi import AxiLiteBus, AxiLiteMaster, AxiResp
from pyuvm import (ConfigDB, uvm_agent, uvm_analysis_port, uvm_component, uvm_driver,
                   uvm_env, uvm_sequence, uvm_sequence_item, uvm_sequencer,
                   uvm_subscriber, uvm_test)

from compiler.compile import Image, load_image
from compiler.isa import (ELEMENTWISE, Descriptor, ErrorCode, Instruction, Mode, Op, decode,
                          encode)
from compiler.iss import Machine
from sim.cocotb_nep_top import CFG, EXTRA_PC, MAP, STEPS, inputs, reg, small_image

DEPTH = CFG.scratch_depth
#: Scratch the directed and random programs own (the image's regions end below 100).
WORK = 128
COVERAGE_DIR = Path(__file__).resolve().parent.parent / "build" / "coverage"
RUN_REGS = ("STATUS", "ERROR", "FAULT_PC", "RESULT", "VL", "VN", "SYNC_COUNT",
            "INSTRUCTIONS")
#: Register name -> ISS attribute, mirrored on writes.
MIRRORED = {"PROG_LEN": "prog_len", "DESC_COUNT": "desc_count",
            "CONST_COUNT": "const_count", "WATCHDOG": "watchdog"}
VL_OPS = ELEMENTWISE | {Op.ARGMAX, Op.LOADROW}


# ------------------------------------------------------------------ sequence items


#: The memories the memory agent reaches (bus windows), and its access kinds.
MEM_REGIONS = ("program", "descriptors", "constants", "scratch", "weights", "params")
MEM_ACCESS = ("write", "read")


class MemItem(uvm_sequence_item):
    """Memory layer: write ``values`` to ``region[index:]`` or (``values`` None) read
    ``count`` words from ``region[index]``, which fill ``values``. Words are whole memory
    words (scratch: signed 16-bit, wrapped on writes; descriptors: 512-bit integers)."""

    def __init__(self, name, region: str, index: int, values=None, *, count: int = 1):
        super().__init__(name)
        if region not in MEM_REGIONS:
            raise ValueError(f"{region}: not one of {MEM_REGIONS}")
        self.region, self.index = region, int(index)
        self.kind = "read" if values is None else "write"
        self.values = [] if values is None else [int(v) for v in np.ravel(values)]
        self.count = count if values is None else len(self.values)

    def __str__(self):
        return f"{self.kind} {self.region}[{self.index}] {self.values[:4]}"


class BusItem(uvm_sequence_item):
    """Bus layer: one 32-bit access, a write of ``data`` at ``addr`` or (``data`` None)
    a read, which fills ``got``."""

    def __init__(self, name, addr: int, data: int | None = None):
        super().__init__(name)
        self.addr, self.data, self.got = addr, data, None


class RegItem(uvm_sequence_item):
    """Write (``data`` given) or read a register; reads fill ``got``."""

    def __init__(self, name, reg_name: str, data: int | None = None,
                 expect: int | None = None):
        super().__init__(name)
        self.reg_name, self.data, self.expect, self.got = reg_name, data, expect, None


class RunItem(uvm_sequence_item):
    """Set PROG_LEN, run from ``pc`` and collect the registers and the whole scratchpad
    (``got``, ``scratch``). The program words and scratch inputs are written before,
    through the memory agent."""

    def __init__(self, name, pc: int, *, prog_len: int, label: str = ""):
        super().__init__(name)
        self.pc, self.prog_len = pc, prog_len
        self.label = label or name
        self.got: dict = {}
        self.scratch: np.ndarray | None = None


class IrqEvent(uvm_sequence_item):
    def __init__(self, name, count: int):
        super().__init__(name)
        self.count = count


# ------------------------------------------------------------------ agent


class AxiLiteDriver(uvm_driver):
    """Executes items through cocotbext-axi's ``AxiLiteMaster``."""

    def build_phase(self):
        self.ap = uvm_analysis_port("ap", self)

    def start_of_simulation_phase(self):
        self.dut = ConfigDB().get(self, "", "DUT")
        self.pause = ConfigDB().get(self, "", "PAUSE")
        self.seed = ConfigDB().get(self, "", "SEED")

    async def _reset(self):
        dut = self.dut
        Clock(dut.clk, 10, unit="ns").start()
        for ram in (dut.weight_mem.ram, dut.param_mem.ram):  # no reset; the ISS starts at zero
            for word in ram.mem:
                word.value = 0
        dut.rst.value = 1
        await ClockCycles(dut.clk, 2)
        dut.rst.value = 0
        self.axi = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "axi", bus_separator="__"),
                                 dut.clk, dut.rst)
        rng = random.Random(self.seed ^ 0x0A11)
        for ch in (self.axi.write_if.aw_channel, self.axi.write_if.w_channel,
                   self.axi.write_if.b_channel, self.axi.read_if.ar_channel,
                   self.axi.read_if.r_channel):
            ch.set_pause_generator(iter(lambda: rng.random() < self.pause, None))
        await RisingEdge(dut.clk)

    async def write(self, addr: int, data: int) -> None:
        resp = (await self.axi.write(addr, (data & 0xFFFFFFFF).to_bytes(4, "little"))).resp
        assert resp == AxiResp.OKAY, f"write 0x{addr:07x} = 0x{data:x}: {resp!r}"

    async def read(self, addr: int) -> int:
        got = await self.axi.read(addr, 4)
        assert got.resp == AxiResp.OKAY, f"read 0x{addr:07x}: {got.resp!r}"
        return int.from_bytes(got.data, "little")

    async def run_phase(self):
        await self._reset()
        while True:
            item = await self.seq_item_port.get_next_item()
            await self._execute(item)
            self.ap.write(item)
            self.seq_item_port.item_done()

    async def _execute(self, item):
        if isinstance(item, BusItem):
            if item.data is not None:
                await self.write(item.addr, item.data)
            else:
                item.got = await self.read(item.addr)
        elif isinstance(item, RegItem):
            if item.data is not None:
                await self.write(reg(item.reg_name), item.data)
            else:
                item.got = await self.read(reg(item.reg_name))
        elif isinstance(item, RunItem):
            await self._run(item)

    async def _run(self, item: RunItem):
        await self.write(reg("PROG_LEN"), item.prog_len)
        await self.write(reg("START_PC"), item.pc)
        await self.write(reg("CTRL"), 1)
        for _ in range(20000):
            if self.dut.irq.value:
                break
            await RisingEdge(self.dut.clk)
        else:
            raise AssertionError(f"{item.label}: no interrupt")
        item.got = {n: await self.read(reg(n)) for n in RUN_REGS}
        raw = [await self.read(MAP.address("scratch", i)) for i in range(DEPTH)]
        item.scratch = np.array(raw, np.uint16).view(np.int16)
        await self.write(reg("IRQ_STATUS"), await self.read(reg("IRQ_STATUS")))


class IrqMonitor(uvm_component):
    """Passive: publishes an :class:`IrqEvent` at every rising edge of ``irq``."""

    def build_phase(self):
        self.ap = uvm_analysis_port("ap", self)

    def start_of_simulation_phase(self):
        self.dut = ConfigDB().get(self, "", "DUT")

    async def run_phase(self):
        count = 0
        while True:
            await RisingEdge(self.dut.irq)
            count += 1
            self.ap.write(IrqEvent("irq", count))


class AxiAgent(uvm_agent):
    def build_phase(self):
        self.seqr = uvm_sequencer("seqr", self)
        self.driver = AxiLiteDriver("driver", self)
        self.monitor = IrqMonitor("monitor", self)

    def connect_phase(self):
        self.driver.seq_item_port.connect(self.seqr.seq_item_export)


# ------------------------------------------------------------------ memory agent (layered)


class _BusSeq(uvm_sequence):
    """The bus items one :class:`MemItem` translates to, run on the AXI sequencer."""

    def __init__(self, name, items):
        super().__init__(name)
        self.items = items

    async def body(self):
        for item in self.items:
            await self.start_item(item)
            await self.finish_item(item)


def _signed16(v: int) -> int:
    return v - (1 << 16) if v & 0x8000 else v


class MemDriver(uvm_driver):
    """Translates each :class:`MemItem` into :class:`BusItem` s on the AXI agent's
    sequencer (``bus_seqr``, set by the env): every word split into its 32-bit parts
    (``Window.split``, part 0 first, the last one commits; a descriptor's parts land one
    by one) at ``MAP.address``; reads joined back (``Window.join``)."""

    bus_seqr = None

    async def run_phase(self):
        while True:
            item = await self.seq_item_port.get_next_item()
            await self._translate(item)
            self.seq_item_port.item_done()

    async def _translate(self, item: MemItem):
        w = MAP.window(item.region)
        name = f"{item.get_name()} bus"
        if item.kind == "write":
            bus = []
            for i, v in enumerate(item.values):
                word = v & 0xFFFF if item.region == "scratch" else v  # 16-bit bus writes
                bus += [BusItem(name, MAP.address(item.region, item.index + i, k), part)
                        for k, part in enumerate(w.split(word))]
            await _BusSeq(name, bus).start(self.bus_seqr)
            return
        reads = [[BusItem(name, MAP.address(item.region, item.index + i, k))
                  for k in range(w.parts)] for i in range(item.count)]
        await _BusSeq(name, [b for parts in reads for b in parts]).start(self.bus_seqr)
        values = [w.join(b.got for b in parts) for parts in reads]
        item.values = [_signed16(v) for v in values] if item.region == "scratch" else values


class MemMonitor(uvm_component):
    """Passive: rebuilds memory accesses from the AXI agent's completed bus items
    (``MAP.decode``; a word completes with its last part, by when a descriptor's other
    parts have landed too) and publishes each as a one-word :class:`MemItem` on ``ap``
    (writes: the value written; reads: the value read)."""

    def build_phase(self):
        self.ap = uvm_analysis_port("ap", self)
        self.bus_export = _Export("bus_export", self, self.on_bus)
        self.parts: dict = {}

    def on_bus(self, item):
        if not isinstance(item, BusItem):
            return
        loc = MAP.decode(item.addr)
        if loc is None or loc.region not in MEM_REGIONS:
            return
        kind = "read" if item.data is None else "write"
        data = item.got if item.data is None else item.data
        key = (kind, loc.region, loc.index)
        parts = self.parts.setdefault(key, {})
        parts[loc.part] = data
        w = MAP.window(loc.region)
        if loc.part != w.parts - 1:
            return
        del self.parts[key]
        if sorted(parts) != list(range(w.parts)):
            raise AssertionError(f"{kind} {loc.region}[{loc.index}]: parts {sorted(parts)}")
        value = w.join(parts[k] for k in range(w.parts))
        if loc.region == "scratch":
            value = _signed16(value)
        done = MemItem(f"{kind} {loc.region}[{loc.index}]", loc.region, loc.index,
                       [value])
        done.kind = kind
        self.ap.write(done)


class MemAgent(uvm_agent):
    def build_phase(self):
        self.seqr = uvm_sequencer("seqr", self)
        self.driver = MemDriver("driver", self)
        self.monitor = MemMonitor("monitor", self)

    def connect_phase(self):
        self.driver.seq_item_port.connect(self.seqr.seq_item_export)


# ------------------------------------------------------------------ coverage


def _vl_class(vl: int) -> str:
    return "one" if vl == 1 else "small" if vl <= 8 else "large"


OPCODE_BINS = [op.name for op in Op] + ["ILLEGAL"]


@CoverPoint("nep.instr.opcode", xf=lambda op, vlc, same, end: op, bins=OPCODE_BINS)
@CoverPoint("nep.instr.vl_class", xf=lambda op, vlc, same, end: vlc,
            bins=["one", "small", "large"])
@CoverPoint("nep.instr.dst_eq_src", xf=lambda op, vlc, same, end: same, bins=[True])
@CoverPoint("nep.instr.range_ends_at_scratch_end", xf=lambda op, vlc, same, end: end,
            bins=[True])
@CoverCross("nep.instr.opcode_x_vl_class",
            items=["nep.instr.opcode", "nep.instr.vl_class"],
            ign_bins=[(o, None) for o in OPCODE_BINS
                      if o not in {op.name for op in VL_OPS}])
def sample_instruction(op, vlc, same, end):
    pass


#: Every code but MODE (never raised: the sequencer maps modes to BAD_DESCRIPTOR). The
#: engine's (1..9) come from :class:`CorruptSeq`'s corrupted images.
ERROR_BINS = [e.name for e in ErrorCode if e != ErrorCode.MODE]
ENGINE_ERRORS = [e.name for e in ErrorCode if 1 <= e <= 9]

#: Descriptor ``encoding`` -> bin name.
ENCODINGS = {0: "int8", 1: "int4", 2: "codebook"}
SPARSITY_BINS = ["dense", "medium", "sparse"]


def density_class(d: Descriptor) -> str:
    """``nnz / (rows * cols)``: dense >= 0.9, medium 0.3..0.9, sparse < 0.3."""
    density = d.nnz / (d.rows * d.cols)
    return "dense" if density >= 0.9 else "medium" if density >= 0.3 else "sparse"


@CoverPoint("nep.layer.sparsity", xf=lambda op, cls, enc: cls, bins=SPARSITY_BINS)
@CoverPoint("nep.layer.encoding", xf=lambda op, cls, enc: enc, bins=list(ENCODINGS.values()))
@CoverPoint("nep.layer.op", xf=lambda op, cls, enc: op, bins=["MATVEC", "LSTM"])
@CoverCross("nep.layer.sparsity_x_encoding",
            items=["nep.layer.sparsity", "nep.layer.encoding"])
@CoverCross("nep.layer.op_x_sparsity", items=["nep.layer.op", "nep.layer.sparsity"])
def sample_layer(op, cls, enc):
    pass


@CoverPoint("nep.run.error", xf=lambda code: code, bins=ERROR_BINS)
def sample_run(code):
    pass


@CoverPoint("nep.mem.region", xf=lambda region, kind: region, bins=list(MEM_REGIONS))
@CoverPoint("nep.mem.access", xf=lambda region, kind: kind, bins=list(MEM_ACCESS))
@CoverCross("nep.mem.region_x_access", items=["nep.mem.region", "nep.mem.access"])
def sample_mem(region, kind):
    pass


def cover(machine: Machine, run, vl_at_fault: int) -> None:
    """Sample every instruction the ISS executed in ``run`` and the faulting one."""
    seen = [(e.instruction, None) for e in run.trace]
    if run.error and run.error not in (ErrorCode.PC_OVERRUN, ErrorCode.WATCHDOG):
        seen.append((decode(machine.program[run.fault_pc]), vl_at_fault))
    vl = 0
    for ins, fault_vl in seen:
        op = ins.op
        if op == Op.SETVL:
            vl = ins.a
        if fault_vl is not None:
            vl = fault_vl
        name = op.name if op is not None else "ILLEGAL"
        uses_vl = op in VL_OPS and vl > 0
        vlc = _vl_class(vl) if uses_vl else None
        same = op in ELEMENTWISE and (ins.d == ins.a or (ins.d == ins.b and op in
                                                         (Op.VADD, Op.VMUL, Op.VMULQ8)))
        ends = False
        if uses_vl:
            n = 1 if op == Op.ARGMAX else vl
            ranges = [(ins.d, n), (ins.a, vl)]
            if op == Op.LOADROW:
                ranges = [(ins.d, vl), (ins.a, vl * machine.vn), (ins.b, 1)]
            elif op in (Op.VADD, Op.VMUL, Op.VMULQ8):
                ranges.append((ins.b, vl))
            ends = any(x + k == DEPTH for x, k in ranges)
        sample_instruction(name, vlc, same or None, bool(ends) or None)
        if op in (Op.MATVEC, Op.LSTM) and fault_vl is None:  # completed: a valid layer
            d = Descriptor.unpack(machine.descriptors[ins.p])
            sample_layer(op.name, density_class(d), ENCODINGS.get(d.encoding))
    sample_run(ErrorCode(run.error).name)


# ------------------------------------------------------------------ scoreboard


class NepScoreboard(uvm_component):
    """The ISS as reference model: every item the driver executed is applied to it; each
    run is compared (registers and the whole scratchpad)."""

    def build_phase(self):
        self.item_export = _Export("item_export", self, self.on_item)
        self.irq_export = _Export("irq_export", self, self.on_irq)
        self.mem_export = _Export("mem_export", self, self.on_mem)
        self.mem_reads = self.mem_writes = 0
        self.iss = Machine(CFG)
        self.failures: list[str] = []
        self.runs = self.irqs = 0
        self.errors_seen: dict[str, int] = {}

    def on_irq(self, ev):
        self.irqs = ev.count

    def fail(self, msg):
        self.logger.error(msg)
        self.failures.append(msg)

    def on_item(self, item):
        iss = self.iss
        if isinstance(item, RegItem):
            if item.data is not None:
                if item.reg_name in MIRRORED:
                    setattr(iss, MIRRORED[item.reg_name], item.data)
            elif item.expect is not None and item.got != item.expect:
                self.fail(f"{item.reg_name} read {item.got:#x}, expected {item.expect:#x}")
        elif isinstance(item, RunItem):
            self._check_run(item)

    def _iss_word(self, region: str, index: int) -> int:
        iss = self.iss
        if region == "descriptors":
            return int.from_bytes(iss.descriptors[index], "little")
        return int(getattr(iss, region)[index])

    def on_mem(self, item: MemItem):
        """A completed memory access (memory monitor): writes applied to the ISS, reads
        compared with the ISS's memory."""
        iss, i, value = self.iss, item.index, item.values[0]
        if item.kind == "read":
            self.mem_reads += 1
            want = self._iss_word(item.region, i)
            if value != want:
                self.fail(f"{item.region}[{i}] read {value:#x}, ISS {want:#x}")
            return
        self.mem_writes += 1
        if item.region == "descriptors":
            iss.write_descriptor(i, value.to_bytes(64, "little"))
        else:
            write = {"program": iss.write_program, "weights": iss.write_weights,
                     "params": iss.write_params, "scratch": iss.write_scratch}.get(item.region)
            if write is not None:
                write(i, [value])
            else:
                iss.write_constant(i, value)

    def _check_run(self, item: RunItem):
        iss = self.iss
        iss.prog_len = item.prog_len
        run = iss.run(item.pc)
        self.runs += 1
        name = ErrorCode(run.error).name
        self.errors_seen[name] = self.errors_seen.get(name, 0) + 1
        cover(iss, run, iss.vl)
        want = {"STATUS": 0b110 if run.error else 0b010, "ERROR": int(run.error),
                "FAULT_PC": run.fault_pc or 0, "RESULT": iss.result, "VL": iss.vl,
                "VN": iss.vn, "SYNC_COUNT": iss.sync_count,
                "INSTRUCTIONS": run.instructions}
        if item.got != want:
            self.fail(f"{item.label}: registers {item.got} != ISS {want}")
        if 1 <= run.error <= 9:
            # docs/isa.md 4: after an engine error the destination range (for LSTM, the
            # state) is unspecified; not compared, the RTL's values adopted by the ISS.
            ins = decode(iss.program[run.fault_pc])
            d = Descriptor.unpack(iss.descriptors[ins.p])
            n = 2 * (d.rows // 4) if ins.op == Op.LSTM else d.rows
            iss.scratch[ins.d:ins.d + n] = item.scratch[ins.d:ins.d + n]
        bad = np.flatnonzero(item.scratch != iss.scratch)
        if bad.size:
            self.fail(f"{item.label}: scratch differs at {bad[:8].tolist()}: RTL "
                      f"{item.scratch[bad[:8]].tolist()} ISS {iss.scratch[bad[:8]].tolist()}")
        self.logger.debug(f"{item.label}: {name} after {run.instructions} instructions")

    def check_phase(self):
        if self.irqs != self.runs:
            self.fail(f"{self.irqs} interrupts for {self.runs} runs")
        if not (self.mem_reads and self.mem_writes):
            self.fail(f"memory accesses: {self.mem_writes} writes, {self.mem_reads} reads")


class _Export(uvm_subscriber):
    """An analysis export calling ``callback`` (one scoreboard, two streams)."""

    def __init__(self, name, parent, callback):
        super().__init__(name, parent)
        self.callback = callback

    def write(self, tt):
        self.callback(tt)


class NepCoverage(uvm_component):
    """Writes the coverage database; samples ``nep.mem.*`` from the memory monitor."""

    def build_phase(self):
        self.mem_export = _Export("mem_export", self,
                                  lambda item: sample_mem(item.region, item.kind))

    def report_phase(self):
        COVERAGE_DIR.mkdir(parents=True, exist_ok=True)
        coverage_db.export_to_xml(str(COVERAGE_DIR / "nep_top_coverage.xml"))
        coverage_db.export_to_yaml(str(COVERAGE_DIR / "nep_top_coverage.yml"))
        coverage_db.report_coverage(self.logger.info, bins=True)
        lines = ["functional coverage:"]
        for name in sorted(coverage_db):
            it = coverage_db[name]
            lines.append(f"  {name}: {it.coverage}/{it.size} "
                         f"({it.cover_percentage:.1f}%)")
        self.logger.warning("\n".join(lines))


class NepEnv(uvm_env):
    def build_phase(self):
        self.agent = AxiAgent("agent", self)
        self.mem_agent = MemAgent("mem_agent", self)
        self.scoreboard = NepScoreboard("scoreboard", self)
        self.coverage = NepCoverage("coverage", self)

    def connect_phase(self):
        self.agent.driver.ap.connect(self.scoreboard.item_export.analysis_export)
        self.agent.monitor.ap.connect(self.scoreboard.irq_export.analysis_export)
        # layering: memory driver -> AXI sequencer; AXI driver -> memory monitor
        self.mem_agent.driver.bus_seqr = self.agent.seqr
        self.agent.driver.ap.connect(self.mem_agent.monitor.bus_export.analysis_export)
        self.mem_agent.monitor.ap.connect(self.scoreboard.mem_export.analysis_export)
        self.mem_agent.monitor.ap.connect(self.coverage.mem_export.analysis_export)


# ------------------------------------------------------------------ sequences


class MemSeq(uvm_sequence):
    """Memory items on the memory agent's sequencer."""

    def __init__(self, name, items=()):
        super().__init__(name)
        self.items = list(items)

    async def send(self, item):
        await self.start_item(item)
        await self.finish_item(item)
        return item

    async def body(self):
        for item in self.items:
            await self.send(item)


class MemWriteSeq(MemSeq):
    """Write ``values`` at ``region[index:]``."""

    def __init__(self, name, region, index, values):
        super().__init__(name, [MemItem(name, region, index, values)])


class MemReadSeq(MemSeq):
    """Read ``count`` words from ``region[index]`` (checked by the scoreboard);
    ``values`` after the sequence."""

    def __init__(self, name, region, index, count=1):
        super().__init__(name, [MemItem(name, region, index, count=count)])

    @property
    def values(self):
        return self.items[0].values


class MemLoadImageSeq(MemSeq):
    """Every memory write of ``Machine.load``: scratch zeroed (it has no reset), then the
    program, weights, params, constants, descriptors and the initial scratch."""

    def __init__(self, name, image: Image):
        super().__init__(name)
        self.image = image

    async def body(self):
        img = self.image
        await self.send(MemItem("scratch zero", "scratch", 0, [0] * DEPTH))
        for region, words in (("program", img.program), ("weights", img.weights),
                              ("params", img.params), ("constants", img.constants),
                              ("descriptors", [_desc_word(d) for d in img.descriptors])):
            if len(words):
                await self.send(MemItem(f"image {region}", region, 0, words))
        for addr, values in img.scratch_init:
            await self.send(MemItem("image scratch", "scratch", addr, values))


class MemSampleSeq(MemSeq):
    """Read back a few words of every memory region (first and last of the image's
    sections, random scratch entries); the scoreboard compares them with the ISS."""

    def __init__(self, name, image: Image, rng: random.Random):
        super().__init__(name)
        self.image, self.rng = image, rng

    async def body(self):
        img = self.image
        for region, n in (("program", len(img.program)), ("weights", len(img.weights)),
                          ("params", len(img.params)), ("constants", len(img.constants)),
                          ("descriptors", len(img.descriptors))):
            for i in sorted({0, n - 1} if n else set()):
                await self.send(MemItem(f"sample {region}", region, i, count=1))
        for addr, values in img.scratch_init[:2]:
            await self.send(MemItem("sample scratch init", "scratch", addr,
                                    count=min(4, len(np.ravel(values)))))
        await self.send(MemItem("sample scratch", "scratch", self.rng.randrange(DEPTH - 4),
                                count=4))


class NepSeq(uvm_sequence):
    """Runs on the AXI agent's sequencer; memory traffic goes to ``mem_seqr``."""

    def __init__(self, name, image: Image, rng: random.Random, mem_seqr=None):
        super().__init__(name)
        self.image, self.rng, self.mem_seqr = image, rng, mem_seqr

    async def send(self, item):
        await self.start_item(item)
        await self.finish_item(item)
        return item

    async def mem(self, seq: MemSeq) -> MemSeq:
        await seq.start(self.mem_seqr)
        return seq

    async def write_mem(self, name, region, index, values):
        await self.mem(MemWriteSeq(name, region, index, values))

    async def read_mem(self, name, region, index, count=1) -> list[int]:
        return (await self.mem(MemReadSeq(name, region, index, count))).values

    async def load_image(self, image: Image):
        """``Machine.load`` through the memory agent, then the count registers."""
        await self.mem(MemLoadImageSeq("load image", image))
        for name, n in (("PROG_LEN", len(image.program)),
                        ("DESC_COUNT", len(image.descriptors)),
                        ("CONST_COUNT", len(image.constants))):
            await self.send(RegItem(name.lower(), name, n))
        await self.mem(MemSampleSeq("sample image", image, self.rng))

    async def run(self, words, *, label, pc=EXTRA_PC, pokes=(), prog_len=None):
        """Scratch ``pokes`` and the program ``words`` at ``pc`` through the memory
        agent, then the run."""
        words = [encode(w) if isinstance(w, Instruction) else w for w in words]
        for addr, vals in pokes:
            await self.write_mem(f"{label} poke", "scratch", addr, vals)
        if words:
            await self.write_mem(f"{label} program", "program", pc, words)
        prog_len = pc + len(words) if prog_len is None else prog_len
        return await self.send(RunItem(label, pc, prog_len=prog_len, label=label))


class SetupSeq(NepSeq):
    """Identification registers, then the image and the interrupt enable."""

    async def body(self):
        from hw.register_map import MAP_ID
        await self.send(RegItem("id", "ID", expect=MAP_ID))
        await self.send(RegItem("word_bits", "WORD_BITS", expect=CFG.word_bits))
        await self.send(RegItem("watchdog", "WATCHDOG", expect=CFG.program_depth))
        await self.load_image(self.image)
        await self.send(RegItem("irq_enable", "IRQ_ENABLE", 0b01))


class ComputeStepSeq(NepSeq):
    """Every step program of the compiled model for ``frames`` frames."""

    frames = 2

    async def body(self):
        np_rng = np.random.default_rng(self.rng.randrange(1 << 30))
        for t in range(self.frames):
            for name, values in inputs(np_rng, self.image).items():
                await self.write_mem(name, "scratch", self.image.region(name).addr, values)
            for step in STEPS:
                await self.send(RunItem(step, self.image.entry(step),
                                        prog_len=len(self.image.program),
                                        label=f"frame {t} {step}"))


def _int8(rng, n):
    return [rng.randint(-128, 127) for _ in range(n)]


class DirectedSeq(NepSeq):
    """One small hand-written program per opcode (and the error cases), on the image's
    descriptors and constants."""

    async def body(self):
        r, I = self.rng, Instruction
        descs = self.image.descriptors
        mv = next(i for i, d in enumerate(descs) if d.mode != Mode.LSTM)
        ls = next(i for i, d in enumerate(descs) if d.mode == Mode.LSTM)
        dm, dl = descs[mv], descs[ls]
        h = dl.rows // 4
        await self.write_mem("work", "scratch", WORK, _int8(r, DEPTH - WORK))
        H = I(Op.HALT)
        await self.run([H], label="HALT")
        await self.run([I(Op.SYNC), I(Op.SYNC), H], label="SYNC")
        await self.run([I(Op.SETVL, a=7, b=3), H], label="SETVL")
        await self.run([I(Op.MATVEC, p=mv, d=200, a=300, b=300 + dm.split), H],
                       label="MATVEC", pokes=[(300, _int8(r, dm.cols))])
        await self.run([I(Op.LSTM, p=ls, d=400, a=300), H], label="LSTM",
                       pokes=[(300, _int8(r, dl.split)), (400, [0] * 2 * h)])
        await self.run([I(Op.LSTM, p=ls, d=400, a=300), H], label="LSTM again")
        await self.run([I(Op.SETVL, a=16), I(Op.VCOPY, d=160, a=200), H], label="VCOPY")
        await self.run([I(Op.SETVL, a=1), I(Op.VADD, d=200, a=200, b=201), H],
                       label="VADD in place", pokes=[(200, [32767, 5])])
        await self.run([I(Op.SETVL, a=40), I(Op.VMUL, p=3, d=DEPTH - 40, a=200, b=240),
                        H], label="VMUL to the end")
        await self.run([I(Op.SETVL, a=8), I(Op.VSHIFT, p=0x05, d=208, a=208),
                        I(Op.VSHIFT, p=0x68, d=216, a=224), H], label="VSHIFT")
        await self.run([I(Op.SETVL, a=8), I(Op.VREQ8, p=1, d=250, a=260), H],
                       label="VREQ8")
        await self.run([I(Op.SETVL, a=8), I(Op.VMULQ8, p=2, d=270, a=270, b=290), H],
                       label="VMULQ8")
        await self.run([I(Op.SETVL, a=33), I(Op.SIGMOID, d=300, a=340),
                        I(Op.TANH, d=380, a=380), H], label="SIGMOID TANH")
        await self.run([I(Op.SETVL, a=5), I(Op.ARGMAX, d=DEPTH - 1, a=DEPTH - 5), H],
                       label="ARGMAX", pokes=[(DEPTH - 5, [3, 9, -2, 9, 1])])
        await self.run([I(Op.SETVL, a=4), I(Op.SIGMOID, d=420, a=420),
                        I(Op.SETVL, a=20), I(Op.ARGMAX, d=130, a=440), H],
                       label="SIGMOID small, ARGMAX large")
        await self.run([I(Op.SETVL, a=4, b=5), I(Op.LOADROW, d=140, a=150, b=139), H],
                       label="LOADROW", pokes=[(139, [3])])
        # errors
        await self.run([I(0x00)], label="ILLEGAL 0x00")
        await self.run([I(0x7E, p=1)], label="ILLEGAL 0x7E")
        await self.run([I(Op.HALT, b=1)], label="RESERVED HALT.b")
        await self.run([I(Op.SETVL, a=2), I(Op.VMUL, p=0x20, d=200, a=200, b=202)],
                       label="RESERVED VMUL.p")
        await self.run([I(Op.SETVL, a=2), I(Op.VSHIFT, p=16, d=200, a=200)],
                       label="VSHIFT left 16")
        await self.run([I(Op.MATVEC, p=len(descs), d=200, a=300, b=308), H],
                       label="BAD_DESCRIPTOR index")
        await self.run([I(Op.MATVEC, p=ls, d=200, a=300, b=308), H],
                       label="BAD_DESCRIPTOR mode")
        await self.run([I(Op.MATVEC, p=mv, d=DEPTH - 1, a=300, b=300 + dm.split), H],
                       label="MATVEC SCRATCH_RANGE")
        await self.run([I(Op.VCOPY, d=200, a=210), H], label="VL = 0")
        await self.run([I(Op.SETVL, a=8), I(Op.VCOPY, d=200, a=204), H],
                       label="partial overlap")
        await self.run([I(Op.SETVL, a=8), I(Op.VREQ8, p=len(self.image.constants),
                                             d=200, a=210), H], label="constant index")
        await self.run([I(Op.SETVL, a=2, b=3), I(Op.LOADROW, d=140, a=150, b=139), H],
                       label="LOADROW index", pokes=[(139, [3])])
        await self.run([I(Op.SYNC)], label="PC_OVERRUN")
        await self.run([H], label="bad START_PC", prog_len=EXTRA_PC)
        await self.send(RegItem("wd", "WATCHDOG", 3))
        await self.run([I(Op.SYNC)] * 4 + [H], label="WATCHDOG")
        await self.send(RegItem("wd", "WATCHDOG", CFG.program_depth))


class RandomSeq(NepSeq):
    """Constrained-random vector/ARGMAX/SETVL/LOADROW/HALT programs, some illegal."""

    programs = 40

    def _vl(self):
        r = self.rng
        return r.choice([1, r.randint(2, 8), r.randint(9, 64)])

    def _addr(self, n):
        r = self.rng
        if r.random() < 0.15:
            return DEPTH - n  # a range ending at the scratch end
        return r.randint(WORK, DEPTH - n)

    def _instr(self, vl, vn):
        r, I = self.rng, Instruction
        op = r.choice([Op.VCOPY, Op.VADD, Op.VMUL, Op.VSHIFT, Op.VREQ8, Op.VMULQ8,
                       Op.SIGMOID, Op.TANH, Op.ARGMAX, Op.LOADROW, Op.SETVL])
        n = max(vl, 1)
        if op == Op.SETVL:
            return I(op, a=self._vl(), b=r.randint(1, 6)), None
        if op == Op.ARGMAX:
            return I(op, d=self._addr(1), a=self._addr(n)), None
        if op == Op.LOADROW:
            vn = max(vn, 1)
            a = r.randint(WORK, DEPTH - n * vn) if n * vn < DEPTH - WORK else WORK
            d = r.choice([x for x in (WORK, DEPTH - n) if x + n <= a or x >= a + n * vn]
                         or [WORK])
            b = self._addr(1)
            return I(op, d=d, a=a, b=b), (b, r.randint(0, vn - 1))
        a = self._addr(n)
        d = a if r.random() < 0.3 else self._addr(n)
        b = self._addr(n)
        if op in (Op.VADD, Op.VMUL, Op.VMULQ8) and r.random() < 0.2:
            d = b
        p = 0
        if op == Op.VMUL:
            p = r.randint(0, 31)
        elif op == Op.VSHIFT:
            p = r.choice([r.randint(0, 15), 0x20 | r.randint(0, 31)]) | r.choice([0, 0x40])
        elif op in (Op.VREQ8, Op.VMULQ8):
            p = r.randrange(len(self.image.constants))
        if op not in (Op.VADD, Op.VMUL, Op.VMULQ8):
            b = 0
        if op in (Op.VCOPY, Op.SIGMOID, Op.TANH, Op.VADD):
            p = 0
        return I(op, p=p, d=d, a=a, b=b), None

    def _illegal(self, vl):
        r, I = self.rng, Instruction
        kind = r.randrange(5)
        if kind == 0:
            legal = {int(o) for o in Op}
            return I(r.choice([o for o in range(256) if o not in legal]), p=r.randrange(256))
        if kind == 1:
            return I(Op.VCOPY, p=r.randint(1, 255), d=200, a=200)
        if kind == 2:
            return I(Op.VADD, d=DEPTH - max(vl, 1) + r.randint(1, 8), a=200, b=300)
        if kind == 3:
            return I(Op.VSHIFT, p=r.randint(16, 31), d=200, a=200)
        return I(Op.VREQ8, p=r.randint(len(self.image.constants), 255), d=200, a=200)

    async def body(self):
        r = self.rng
        await self.write_mem("work", "scratch", WORK, [r.randint(-32768, 32767)
                                                       for _ in range(DEPTH - WORK)])
        for k in range(self.programs):
            vl = self._vl()
            vn = r.randint(1, 6)
            prog, pokes = [Instruction(Op.SETVL, a=vl, b=vn)], []
            for _ in range(r.randint(1, 8)):
                ins, poke = self._instr(vl, vn)
                if ins.op == Op.SETVL:
                    vl, vn = ins.a, ins.b
                prog.append(ins)
                if poke:
                    pokes.append((poke[0], [poke[1]]))
            if r.random() < 0.3:
                prog.insert(r.randint(1, len(prog)), self._illegal(vl))
            if r.random() > 0.1:
                prog.append(Instruction(Op.HALT))
            await self.run(prog, label=f"random {k}", pokes=pokes)


#: The extra models :class:`ModelSeq` loads: (weight encoding, sparsity).
EXTRA_MODELS = (("int8", 0.0), ("codebook4", 0.8))


class ModelSeq(ComputeStepSeq):
    """Load another compiled model through the bus, then run every step of it."""

    frames = 1

    async def body(self):
        await self.load_image(self.image)
        await super().body()


def _desc_word(d: Descriptor) -> int:
    return int.from_bytes(d.pack(), "little")


class CorruptSeq(NepSeq):
    """Engine errors: corrupt the loaded image through the bus (a weight word bit, a
    param record bit, descriptor fields through the descriptors window), run a MATVEC
    or an LSTM on it (the scoreboard applies the same writes to the ISS and compares
    ERROR and FAULT_PC), soft-reset, then restore the original words and check a clean
    run again."""

    def _probe(self, writes, words) -> ErrorCode:
        """What the ISS reports for ``words`` at EXTRA_PC on the corrupted image."""
        m = Machine(CFG)
        m.load(self.image)
        for window, index, word, _ in writes:
            if window == "weights":
                m.write_weights(index, [word])
            elif window == "params":
                m.write_params(index, [word])
            else:
                m.write_descriptor(index, word.to_bytes(64, "little"))
        m.write_program(EXTRA_PC, words)
        m.prog_len = EXTRA_PC + len(words)
        return ErrorCode(m.run(EXTRA_PC).error)

    async def body(self):
        I, img = Instruction, self.image
        descs = img.descriptors
        mv = next(i for i, d in enumerate(descs) if d.mode != Mode.LSTM)
        ls = next(i for i, d in enumerate(descs) if d.mode == Mode.LSTM)
        dm, dl = descs[mv], descs[ls]
        h = dl.rows // 4
        mv_prog = [encode(I(Op.MATVEC, p=mv, d=200, a=300, b=300 + dm.split)),
                   encode(I(Op.HALT))]
        ls_prog = [encode(I(Op.LSTM, p=ls, d=400, a=300)), encode(I(Op.HALT))]
        ls_pokes = [(400, [0] * 2 * h)]

        def desc(i, **kw):
            d = descs[i]
            return ("descriptors", i, _desc_word(dataclasses.replace(d, **kw)), _desc_word(d))

        cases = []
        # weight word bits: keep the first corruption giving each engine code
        found = set()
        for k in range(dm.stream_base, dm.stream_base + dm.n_words):
            for bit in range(0, CFG.word_bits, 3):
                w = [("weights", k, img.weights[k] ^ (1 << bit), img.weights[k])]
                code = self._probe(w, mv_prog)
                if code not in found and 1 <= code <= 9:
                    found.add(code)
                    cases.append((f"weight {k} bit {bit}", w, mv_prog, []))
            if ErrorCode.CRC_STREAM in found and len(found) >= 2:
                break
        p = dm.param_base
        cases += [
            ("param bit", [("params", p, img.params[p] ^ 1, img.params[p])], mv_prog, []),
            ("desc nnz+1", [desc(mv, nnz=dm.nnz + 1)], mv_prog, []),
            ("desc rows 0", [desc(mv, rows=0)], mv_prog, []),
            ("desc encoding 3", [desc(mv, encoding=3)], mv_prog, []),
            ("LSTM desc nnz-1", [desc(ls, nnz=dl.nnz - 1)], ls_prog, ls_pokes),
            ("LSTM param bit", [("params", dl.param_base, img.params[dl.param_base] ^ 2,
                                 img.params[dl.param_base])], ls_prog, ls_pokes),
        ]
        for label, writes, prog, pokes in cases:
            code = self._probe(writes, prog)
            for window, index, word, _ in writes:  # written, then read back
                await self.write_mem(f"corrupt {label}", window, index, [word])
                await self.read_mem(f"corrupted {label}", window, index)
            await self.run(prog, label=f"corrupt {label} ({code.name})", pokes=pokes)
            await self.send(RegItem("soft_reset", "CTRL", 2))
            await self.send(RegItem("status", "STATUS", expect=0))
            await self.send(RegItem("error", "ERROR", expect=int(code)))
            for window, index, _, orig in writes:
                await self.write_mem(f"restore {label}", window, index, [orig])
                await self.read_mem(f"restored {label}", window, index)
            await self.run(prog, label=f"restored {label}", pokes=pokes)


# ------------------------------------------------------------------ test


class NepTest(uvm_test):
    """Setup, the compute steps, the directed programs, the random ones, the engine
    errors of corrupted images, then the steps of two more models (dense int8, sparse
    codebook)."""

    def build_phase(self):
        self.env = NepEnv("env", self)

    def end_of_elaboration_phase(self):
        self.image = load_image(Path(ConfigDB().get(self, "", "IMAGE")).read_bytes())
        self.seed = ConfigDB().get(self, "", "SEED")

    async def run_phase(self):
        self.raise_objection()
        rng = random.Random(self.seed)
        seqr, mem_seqr = self.env.agent.seqr, self.env.mem_agent.seqr
        for cls in (SetupSeq, ComputeStepSeq, DirectedSeq, RandomSeq, CorruptSeq):
            await cls(cls.__name__, self.image, rng, mem_seqr).start(seqr)
        for enc, sparsity in EXTRA_MODELS:  # the other density classes and encodings
            image = small_image(encoding=enc, sparsity=sparsity)
            await ModelSeq(f"ModelSeq {enc} {sparsity}", image, rng, mem_seqr).start(seqr)
        self.drop_objection()
