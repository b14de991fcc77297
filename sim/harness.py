"""Simulation top: the engine with its memories and random wait states (Amaranth).

Used both by the Amaranth-simulator unit tests and, as generated Verilog, by the cocotb
tests under Verilator. Memories are loaded in bulk by the testbench (no per-word cycles).
"""

from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

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


class MatVecHarness(wiring.Component):
    """``MatVecEngine`` plus weight, parameter and output memories.

    ``wait_level`` (0..255) sets the chance, out of 256 per cycle, that a memory refuses a
    request (a wait state); ``wait_seed`` seeds the generators when ``start`` is pulsed.
    """

    def __init__(self, cfg: EngineConfig):
        self.cfg = cfg
        self.engine = MatVecEngine(cfg)
        self.weight_mem = Memory(shape=cfg.word_bits, depth=cfg.weight_depth, init=[])
        self.param_mem = Memory(shape=cfg.param_bits, depth=cfg.max_rows, init=[])
        self.out_mem = Memory(shape=signed(8), depth=cfg.max_rows, init=[])
        eng = self.engine.signature.members
        ports = {
            name: eng[name] for name in (
                "start", "rows", "cols", "n_words", "nnz", "encoding", "codebook",
                "crc_stream", "crc_params", "act_waddr", "act_wdata", "act_we",
                "busy", "done", "error", "cycles", "macs", "zero_acts", "stalls", "nnz_seen")
        }
        ports.update({
            "wait_level": In(8), "wait_seed": In(16),
            "out_raddr": In(eng["out_addr"].shape), "out_rdata": Out(signed(8)),
        })
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        eng = self.engine
        m.submodules.engine = eng
        m.submodules.weight_mem = self.weight_mem
        m.submodules.param_mem = self.param_mem
        m.submodules.out_mem = self.out_mem
        for name in ("start", "rows", "cols", "n_words", "nnz", "encoding", "codebook",
                     "crc_stream", "crc_params", "act_waddr", "act_wdata", "act_we"):
            m.d.comb += getattr(eng, name).eq(getattr(self, name))
        for name in ("busy", "done", "error", "cycles", "macs", "zero_acts", "stalls",
                     "nnz_seen"):
            m.d.comb += getattr(self, name).eq(getattr(eng, name))

        for prefix, mem, salt in (("w", self.weight_mem, 0x5A5A), ("p", self.param_mem, 0x3C3C)):
            lfsr = Lfsr16()
            m.submodules[f"{prefix}_lfsr"] = lfsr
            m.d.comb += [lfsr.seed.eq(self.wait_seed ^ salt), lfsr.load.eq(self.start)]
            rp = mem.read_port()
            ready = lfsr.byte >= self.wait_level
            take = getattr(eng, f"{prefix}_req_valid") & ready
            resp_valid = Signal(name=f"{prefix}_resp_valid")
            m.d.sync += resp_valid.eq(take)
            m.d.comb += [
                getattr(eng, f"{prefix}_req_ready").eq(ready),
                rp.addr.eq(getattr(eng, f"{prefix}_req_addr")),
                rp.en.eq(take),
                getattr(eng, f"{prefix}_resp_data").eq(rp.data),
                getattr(eng, f"{prefix}_resp_valid").eq(resp_valid),
            ]

        wp = self.out_mem.write_port()
        rp = self.out_mem.read_port(domain="comb")
        m.d.comb += [
            wp.addr.eq(eng.out_addr), wp.data.eq(eng.out_data), wp.en.eq(eng.out_we),
            rp.addr.eq(self.out_raddr), self.out_rdata.eq(rp.data),
        ]
        return m
