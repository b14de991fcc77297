"""Simulation top: the engine with its memories and random wait states (Amaranth).

Used both by the Amaranth-simulator unit tests and, as generated Verilog, by the cocotb
tests under Verilator. Memories are loaded in bulk by the testbench (no per-word cycles).
"""

from __future__ import annotations

from pathlib import Path

from amaranth import Cat, ClockSignal, Instance, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hw.banked_ram import delayed
from hw.config import EngineConfig
from hw.matvec_engine import MatVecEngine


class Lfsr16(wiring.Component):
    """Galois LFSR (x^16 + x^14 + x^13 + x^11 + 1) giving one random byte per cycle."""

    def __init__(self):
        super().__init__({"seed": In(16), "load": In(1), "byte": Out(8)})

    def elaborate(self, platform):
        m = Module()
        state = Signal(16, init=1)
        nxt = state
        for i in range(8):  # eight steps per cycle: successive bytes are independent
            step = Signal(16, name=f"step{i}")
            m.d.comb += step.eq(Cat(nxt[1:], 0) ^ Mux(nxt[0], 0xB400, 0))
            nxt = step
        with m.If(self.load):
            m.d.sync += state.eq(self.seed | (self.seed == 0))
        with m.Else():
            m.d.sync += state.eq(nxt)
        m.d.comb += self.byte.eq(state[:8])
        return m


#: Seeds of the two wait-state generators are ``wait_seed`` XOR these (``sim.perf_model``).
WEIGHT_SALT, PARAM_SALT = 0x5A5A, 0x3C3C

def serve_with_wait_states(m, client, prefix, *, addr, en, data, seed, load, wait_level,
                           latency: int = 1):
    """Answer ``client``'s ``{prefix}_req``/``{prefix}_resp`` port from a RAM read port
    (``addr``, ``en``, ``data``: the word ``latency`` cycles after ``en``; 1 for an
    Amaranth memory's read port, ``compiler.isa.STREAM_READ_LATENCY`` for
    ``hw.banked_ram.BankedRam``), refusing requests at random: an ``Lfsr16`` loaded with
    ``seed`` when ``load`` is high gives a wait state on cycles whose byte is below
    ``wait_level`` (out of 256). ``sim.perf_model`` replays the same LFSR (for
    ``latency`` 1)."""
    if isinstance(latency, bool) or not isinstance(latency, int) or latency < 1:
        raise ValueError(f"latency must be an int >= 1, got {latency!r}")
    lfsr = Lfsr16()
    m.submodules[f"{prefix}_lfsr"] = lfsr
    m.d.comb += [lfsr.seed.eq(seed), lfsr.load.eq(load)]
    ready = lfsr.byte >= wait_level
    take = getattr(client, f"{prefix}_req_valid") & ready
    # The response's valid travels beside the read.
    valid = delayed(m, take, latency, name=f"{prefix}_resp_valid")
    m.d.comb += [
        getattr(client, f"{prefix}_req_ready").eq(ready),
        addr.eq(getattr(client, f"{prefix}_req_addr")),
        en.eq(take),
        getattr(client, f"{prefix}_resp_data").eq(data),
        getattr(client, f"{prefix}_resp_valid").eq(valid),
    ]


#: Behavioural RAM used instead of Amaranth memories in Verilator builds.
SIM_RAM_VERILOG = Path(__file__).with_name("verilog") / "nep_sim_ram.v"


class _Ram:
    """A RAM with a synchronous read port and a write port, as an Amaranth ``Memory`` (for
    the Amaranth simulator) or as an instance of ``nep_sim_ram`` (for Verilator, where a
    large Amaranth memory costs minutes of Verilog generation for its zero initializer)."""

    def __init__(self, name, shape, depth, verilog: bool):
        self.name, self.shape, self.depth = name, shape, depth
        self.memory = None if verilog else Memory(shape=shape, depth=depth, init=[])
        aw = max(1, (depth - 1).bit_length())
        width = shape.width if hasattr(shape, "width") else shape
        self.raddr, self.ren = Signal(aw, name=f"{name}_raddr"), Signal(name=f"{name}_ren")
        self.rdata = Signal(shape, name=f"{name}_rdata")
        self.waddr, self.we = Signal(aw, name=f"{name}_waddr"), Signal(name=f"{name}_we")
        self.wdata = Signal(shape, name=f"{name}_wdata")
        self._width, self._aw = width, aw

    def elaborate_into(self, m):
        if self.memory is not None:
            m.submodules[self.name] = self.memory
            rp, wp = self.memory.read_port(), self.memory.write_port()
            m.d.comb += [rp.addr.eq(self.raddr), rp.en.eq(self.ren), self.rdata.eq(rp.data),
                         wp.addr.eq(self.waddr), wp.en.eq(self.we), wp.data.eq(self.wdata)]
        else:
            m.submodules[self.name] = Instance(
                "nep_sim_ram", p_WIDTH=self._width, p_DEPTH=self.depth, p_AW=self._aw,
                i_clk=ClockSignal(), i_raddr=self.raddr, i_ren=self.ren, o_rdata=self.rdata,
                i_waddr=self.waddr, i_we=self.we, i_wdata=self.wdata)


class MatVecHarness(wiring.Component):
    """``MatVecEngine`` plus weight, parameter and output memories.

    ``wait_level`` (0..255) sets the chance, out of 256 per cycle, that a memory refuses a
    request (a wait state); ``wait_seed`` seeds the generators when ``start`` is pulsed.
    With ``verilog_rams`` the memories are ``nep_sim_ram`` instances (add
    ``SIM_RAM_VERILOG`` to the sources); otherwise Amaranth memories, reachable as
    ``weight_mem``, ``param_mem`` and ``out_mem``. With ``lend_requantizer`` the engine
    has its ``requant`` port (``MatVecEngine``), which the harness leaves to a subclass.
    """

    def __init__(self, cfg: EngineConfig, *, verilog_rams: bool = False,
                 lend_requantizer: bool = False):
        self.cfg = cfg
        self.engine = MatVecEngine(cfg, lend_requantizer=lend_requantizer)
        self._rams = {
            "weight_mem": _Ram("weight_mem", cfg.word_bits, cfg.weight_depth, verilog_rams),
            "param_mem": _Ram("param_mem", cfg.param_bits, cfg.max_rows, verilog_rams),
            "out_mem": _Ram("out_mem", signed(16), cfg.max_rows, verilog_rams),
        }
        self.weight_mem = self._rams["weight_mem"].memory
        self.param_mem = self._rams["param_mem"].memory
        self.out_mem = self._rams["out_mem"].memory
        eng = self.engine.signature.members
        ports = {
            name: eng[name] for name in (
                "start", "rows", "cols", "n_words", "nnz", "encoding", "codebook",
                "crc_stream", "crc_params", "out_mode", "act_waddr", "act_wdata", "act_we",
                "busy", "done", "error", "cycles", "macs", "zero_acts", "stalls", "nnz_seen")
        }
        ports.update({"wait_level": In(8), "wait_seed": In(16)})
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        eng = self.engine
        m.submodules.engine = eng
        for ram in self._rams.values():
            ram.elaborate_into(m)
        for name in ("start", "rows", "cols", "n_words", "nnz", "encoding", "codebook",
                     "crc_stream", "crc_params", "out_mode", "act_waddr", "act_wdata", "act_we"):
            m.d.comb += getattr(eng, name).eq(getattr(self, name))
        for name in ("busy", "done", "error", "cycles", "macs", "zero_acts", "stalls",
                     "nnz_seen"):
            m.d.comb += getattr(self, name).eq(getattr(eng, name))

        w, p = self._rams["weight_mem"], self._rams["param_mem"]
        for prefix, salt, addr, en, data in (("w", WEIGHT_SALT, w.raddr, w.ren, w.rdata),
                                             ("p", PARAM_SALT, p.raddr, p.ren, p.rdata)):
            serve_with_wait_states(m, eng, prefix, addr=addr, en=en, data=data,
                                   seed=self.wait_seed ^ salt, load=self.start,
                                   wait_level=self.wait_level)

        out = self._rams["out_mem"]
        m.d.comb += [out.waddr.eq(eng.out_addr), out.wdata.eq(eng.out_data),
                     out.we.eq(eng.out_we)]
        return m
