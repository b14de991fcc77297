"""One small synthesis under ``make test``: the engine at 4 lanes on the iCE40 UP5K.

Yosys (``synth_ice40``) then nextpnr, through ``hw.synth`` exactly as ``make synth`` runs
them, with small activation, parameter and output buffers. The stream memory keeps its
16 K words so that SPRAM inference is exercised. About a minute on 2 cores once the YoWASP
cache (``~/.cache/YoWASP``) is warm; the first YoWASP call ever compiles for ~30 s more.
The processor's synthesis wrapper (``SerialPins``) is checked in the Amaranth simulator;
the processor itself is synthesized only by ``make synth`` (minutes per run).
"""

import gc
import warnings

import numpy as np
import pytest
from amaranth import Module
from amaranth.back import rtlil
from amaranth.hdl import UnusedElaboratable
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from compiler.isa import ProcessorConfig
from golden.weights import Encoding
from hw.config import EngineConfig
from hw.synth import (
    CONFIGS,
    Design,
    HEADER_FIELDS,
    PARTS,
    PROCESSOR_CONFIGS,
    Cmd,
    EngineSynthTop,
    SerialPins,
    engine_design,
    synthesize,
)
from sim.job import SENTINEL, RunResult, make_job
from sim.perf_model import PIPELINE_LATENCY
from sim.pysim import run_jobs

DEPTHS = dict(max_rows=256, max_cols=256, weight_depth=16384)

def test_engine_l4_up5k(tmp_path):
    part = PARTS["up5k"]
    rec = synthesize(engine_design(part, 4, DEPTHS), part, tmp_path)
    assert rec.get("cells"), f"Yosys failed: {rec.get('reason')}"

    # What the memories and multipliers became (Yosys's cell statistics).
    assert rec["dsps"] == 8, "4 lane multipliers + the requantizer's 32x32 (4 x SB_MAC16)"
    assert rec["sprams"] == 3, "40-bit stream words in three 16-bit SB_SPRAM256KA"
    # 4 activation memories (one per lane), 5 for 72-bit params, 1 output buffer, and
    # the three FIFOs forced into block RAM on iCE40: 3 (stream words), 5 (params), 2 (rows).
    assert rec["brams"] == 20
    assert rec["cells"].get("SB_LUT4", 0) > 1000 and rec["ffs"] > 1000  # nothing trimmed

    util = rec["utilization"]
    assert rec["fits"], f"does not fit the UP5K: {util}"
    assert rec["nextpnr_exit"] == 0
    for kind, u in util.items():
        assert u["used"] <= u["available"], f"{kind}: {u}"
    assert rec["logic_util"] < 1.0
    assert rec["fmax_mhz"] and rec["fmax_mhz"] > 0
    assert rec["critical_path"] and rec["critical_path"]["start"]
    assert rec["fmax_by_seed"] == {"1": rec["fmax_mhz"]} and rec["seed"] == 1
    # Every register input's worst path, from nextpnr's SDF (``hw.endpoint_slack``): the
    # worst of them is nextpnr's critical path, and none fails when timing is met.
    ends = rec["endpoints"]
    assert ends["total"] > 1000 and ends["worst"][0]["endpoints"] >= 1
    assert ends["worst"][0]["delay_ns"] == pytest.approx(rec["critical_path"]["delay_ns"],
                                                         abs=0.002)
    assert (ends["failing"] == 0) == rec["timing_met"]


class _Counter(wiring.Component):
    """A design nextpnr places in seconds, for the flow's own behaviour."""

    q: Out(8)

    def elaborate(self, platform):
        m = Module()
        m.d.sync += self.q.eq(self.q + 1)
        return m


def test_one_place_and_route_per_seed_the_best_reported(tmp_path):
    part = PARTS["up5k"]
    design = Design(name="counter", config=dict(lanes=0), depths="-",
                    rtlil=rtlil.convert(_Counter(), name="top"))
    rec = synthesize(design, part, tmp_path, seeds=(1, 2, 3))
    assert rec["ok"], rec.get("reason")
    by_seed = rec["fmax_by_seed"]
    assert set(by_seed) == {"1", "2", "3"} and all(f and f > 0 for f in by_seed.values())
    assert rec["fmax_mhz"] == max(by_seed.values()) == by_seed[str(rec["seed"])]
    for seed in (1, 2, 3):  # each seed's own report, delays and log
        for name in ("report.seed{}.json", "timing.seed{}.sdf", "nextpnr.seed{}.log"):
            assert (tmp_path / name.format(seed)).exists()
    # The best seed's delays: its worst register input is nextpnr's critical path.
    worst = rec["endpoints"]["worst"][0]
    assert (worst["end"], worst["start"]) == ("q", "q")
    assert worst["delay_ns"] == pytest.approx(rec["critical_path"]["delay_ns"], abs=0.002)


@pytest.mark.parametrize("seeds", [(), (0,), (1, True), ("1",)])
def test_synthesize_rejects_bad_seeds(tmp_path, seeds):
    part = PARTS["up5k"]
    with pytest.raises(ValueError, match="seeds must be positive integers"):
        synthesize(engine_design(part, 4, DEPTHS), part, tmp_path, seeds=seeds)
    assert not (tmp_path / "top.il").exists()  # refused before anything is written


def test_every_part_has_sizes_at_every_lane_count():
    """``make synth --part all`` builds both designs on every part at 4, 8 and 16 lanes:
    each needs the engine's and the processor's memory sizes (a KeyError otherwise), and
    they must be valid configurations (their constructors raise otherwise)."""
    for part in PARTS:
        for lanes in (4, 8, 16):
            EngineConfig(lanes=lanes, **CONFIGS[(part, lanes)])
            ProcessorConfig(lanes=lanes, **PROCESSOR_CONFIGS[(part, lanes)])


def test_engine_top_fifo_covers_read_latency():
    """The ECP5 parts' configurations' reader FIFOs keep one word per cycle from the part's
    memory latency (latency + 3 credits, ``tests/unit/test_memory_reader.py``); a
    shallower FIFO is refused rather than silently slowing the engine."""
    # Built to be checked only (or refused half-built): collected here, so Amaranth's
    # never-elaborated warning is dropped in this test rather than reported under a
    # later one.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)
        for part in (p for p in PARTS.values() if p.family == "ecp5"):
            for lanes in (4, 8, 16):
                cfg = EngineConfig(lanes=lanes, **CONFIGS[(part.name, lanes)])
                assert cfg.fifo_depth >= part.read_latency + 3
                EngineSynthTop(cfg, read_latency=part.read_latency)
        with pytest.raises(ValueError, match="fifo_depth 6 cannot keep one word per cycle"):
            EngineSynthTop(EngineConfig(lanes=4, fifo_depth=6), read_latency=4)
        with pytest.raises(ValueError, match="read_latency must be an int >= 1"):
            EngineSynthTop(EngineConfig(lanes=4), read_latency=0)
        with pytest.raises(ValueError, match="read_latency 3 is too short"):
            EngineSynthTop(EngineConfig(lanes=4, fifo_depth=7), read_latency=3,
                           bank_depth=32)
        gc.collect()


def _run_engine_top(top, job):
    """Load ``job`` through ``top``'s serial port (``EngineSynthTop``), run it, and return
    its result: every memory word shifted in and written with a command, as on the pins."""
    cfg = top.cfg
    res = {}

    async def shift(ctx, value):
        for i in range(top.sr_bits):  # the last bit shifted in ends up at sr[0]'s far end
            ctx.set(top.sdi, value >> i & 1)
            ctx.set(top.sen, 1)
            await ctx.tick()
        ctx.set(top.sen, 0)

    async def command(ctx, cmd, value):
        await shift(ctx, value)
        ctx.set(top.cmd, cmd)
        await ctx.tick()
        ctx.set(top.cmd, Cmd.NOP)
        await ctx.tick().repeat(2)  # the command register, then the registered request

    async def tb(ctx):
        at = top.data_bits  # the address field of the shift register
        for i, w in enumerate(job.words):
            await command(ctx, Cmd.WRITE_WEIGHT, w | i << at)
        for i, prm in enumerate(job.params):
            await command(ctx, Cmd.WRITE_PARAM, prm | i << at)
        for i, v in enumerate(job.x):
            await command(ctx, Cmd.WRITE_ACT, (int(v) & 0xFF) | i << at)
        for i in range(cfg.max_rows):
            ctx.set(top.out_mem.data[i], SENTINEL)
        fields, header, pos = job.fields(), 0, 0
        for name, width in HEADER_FIELDS:
            header |= fields[name] << pos
            pos += width
        await command(ctx, Cmd.START, header)
        for _ in range(20 * (len(job.words) + job.header.rows) + 200):
            if ctx.get(top.done):
                break
            await ctx.tick()
        eng = top.engine
        res["result"] = RunResult(
            outputs=np.array([ctx.get(top.out_mem.data[i]) for i in range(cfg.max_rows)]),
            error=ctx.get(eng.error), cycles=ctx.get(eng.cycles), macs=ctx.get(eng.macs),
            zero_acts=ctx.get(eng.zero_acts), stalls=ctx.get(eng.stalls),
            nnz_seen=ctx.get(eng.nnz_seen))

    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    return res["result"]


def test_engine_top_banked_four_cycle_memory_runs_at_full_rate():
    """The ECP5 wrapper's memories (a 4-cycle read, banked stream memory: here 3 banks of
    32 words, the layer's words spread over all of them) give the golden results, and
    the engine still takes one stream word per cycle: its cycle count and stalls are the
    1-cycle memory's (``sim.pysim``; ``n_words + PIPELINE_LATENCY`` with the 8-stage
    requantizer's 2) plus the 3 cycles more the first word takes to arrive."""
    cfg = EngineConfig(lanes=4, max_rows=16, max_cols=40, weight_depth=96, fifo_depth=7,
                       pipelined_requantizer=True)
    job = make_job(np.random.default_rng(7), rows=12, cols=40, sparsity=0.3,
                   encoding=Encoding.INT4, lanes=4)
    assert 64 < len(job.words) <= 96, len(job.words)  # reaches the last bank
    res = _run_engine_top(EngineSynthTop(cfg, read_latency=4, bank_depth=32), job)
    assert job.check(res) == []
    ref = run_jobs(cfg, [job])[0]
    assert ref.cycles == len(job.words) + PIPELINE_LATENCY + 2
    assert (res.cycles, res.stalls) == (ref.cycles + 3, ref.stalls + 3)


class _Adder(wiring.Component):
    """12 input bits (a, b), 9 output bits: y = a + b."""

    a: In(8)
    b: In(4)
    y: Out(9)

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.y.eq(self.a + self.b)
        return m


def test_serial_pins_reach_every_port():
    """SerialPins (the processor's synthesis wrapper): bits shifted in drive the inputs
    after ``load``; ``cap`` captures the outputs, shifted out on ``sdo`` lowest first."""
    top = SerialPins(_Adder())
    assert (top.in_bits, top.out_bits) == (12, 9)
    got = []

    async def tb(ctx):
        for a, b in ((200, 13), (255, 15), (1, 0)):
            word = a | b << 8
            for i in range(12):  # the last bit shifted in ends up highest
                ctx.set(top.sdi, word >> i & 1)
                ctx.set(top.sen, 1)
                await ctx.tick()
            ctx.set(top.sen, 0)
            ctx.set(top.load, 1)
            await ctx.tick()
            ctx.set(top.load, 0)
            ctx.set(top.cap, 1)
            await ctx.tick()
            ctx.set(top.cap, 0)
            y = 0
            for i in range(9):
                y |= ctx.get(top.sdo) << i
                ctx.set(top.sen, 1)
                await ctx.tick()
            ctx.set(top.sen, 0)
            got.append(y)

    sim = Simulator(top)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    assert got == [213, 270, 1]

