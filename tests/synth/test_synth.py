"""One small synthesis under ``make test``: the engine at 4 lanes on the iCE40 UP5K.

Yosys (``synth_ice40``) then nextpnr, through ``hw.synth`` exactly as ``make synth`` runs
them, with small activation, parameter and output buffers. The stream memory keeps its
16 K words so that SPRAM inference is exercised. About a minute on 2 cores once the YoWASP
cache (``~/.cache/YoWASP``) is warm; the first YoWASP call ever compiles for ~30 s more.
The processor's synthesis wrapper (``SerialPins``) is checked in the Amaranth simulator;
the processor itself is synthesized only by ``make synth`` (minutes per run).
"""

from amaranth import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from hw.synth import PARTS, SerialPins, engine_design, synthesize

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

