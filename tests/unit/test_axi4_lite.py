"""AXI4-Lite slave (``hw/axi4_lite.py``) in the Amaranth simulator, and the register map
(``hw/register_map.py``) against its document.

The bus side is a small manager written here (cocotbext-axi needs a cocotb simulator):
AW and W raised after independent random delays, so either may come first, and BREADY/
RREADY dropped at random; it checks that a response stays put until it is taken. The
slave sits in ``sim.cocotb_axi4_lite.AxiTestTop`` (register file + 64-bit memory window
with random inside wait states, compared with ``TopModel``) or alone, with the inside
port played by a testbench process.
"""

import random
from pathlib import Path

import pytest
from amaranth.sim import Simulator

from compiler.isa import ProcessorConfig
from hw.axi4_lite import Axi4LiteSignature, Axi4LiteSlave, Response
from hw.register_map import ADDR_WIDTH, REG_SPAN, Access, RegisterMap
from sim.cocotb_axi4_lite import (
    ID_ADDR,
    MEM_BASE,
    MEM_DEPTH,
    MEM_STRIDE,
    REGS,
    TOP_ID,
    AxiTestTop,
    TopModel,
    random_address,
)

OKAY, SLVERR = Response.OKAY.value, Response.SLVERR.value
DOC = Path(__file__).resolve().parents[2] / "docs" / "register-map.md"


class Manager:
    """One AXI4-Lite manager process; ``write``/``read`` return ``resp`` / ``(data, resp)``."""

    def __init__(self, ctx, axi, rng, *, max_delay=3, p_ready=0.6, timeout=300):
        self.ctx, self.axi, self.rng = ctx, axi, rng
        self.max_delay, self.p_ready, self.timeout = max_delay, p_ready, timeout

    async def response(self, valid, ready, *payload):
        ctx, prev = self.ctx, None
        for _ in range(self.timeout):
            take = self.rng.random() < self.p_ready
            ctx.set(ready, take)
            _, _, v, *vals = await ctx.tick().sample(valid, *payload)
            if prev is not None:
                assert v and vals == prev, f"response dropped or changed while not taken: {prev}"
            if v and take:
                ctx.set(ready, 0)
                return tuple(vals)
            prev = vals if v else None
        raise AssertionError("no response")

    async def write(self, addr, data, strb=0xF):
        ctx, axi, rng = self.ctx, self.axi, self.rng
        ctx.set(axi.awaddr, addr)
        ctx.set(axi.wdata, data)
        ctx.set(axi.wstrb, strb)
        aw_at, w_at = rng.randint(0, self.max_delay), rng.randint(0, self.max_delay)
        aw_done = w_done = False
        for t in range(self.timeout):
            aw_v, w_v = not aw_done and t >= aw_at, not w_done and t >= w_at
            ctx.set(axi.awvalid, aw_v)
            ctx.set(axi.wvalid, w_v)
            _, _, awready, wready, bvalid = await ctx.tick().sample(
                axi.awready, axi.wready, axi.bvalid)
            assert not bvalid, "B before both AW and W were accepted"
            aw_done |= aw_v and bool(awready)
            w_done |= w_v and bool(wready)
            if aw_done and w_done:
                break
        else:
            raise AssertionError("AW/W not accepted")
        ctx.set(axi.awvalid, 0)
        ctx.set(axi.wvalid, 0)
        (resp,) = await self.response(axi.bvalid, axi.bready, axi.bresp)
        return resp

    async def read(self, addr):
        ctx, axi = self.ctx, self.axi
        ctx.set(axi.araddr, addr)
        await ctx.tick().repeat(self.rng.randint(0, self.max_delay) + 1)
        ctx.set(axi.arvalid, 1)
        await ctx.tick().until(axi.arready)
        ctx.set(axi.arvalid, 0)
        return await self.response(axi.rvalid, axi.rready, axi.rdata, axi.rresp)


def simulate(dut, *testbenches, background=()):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    for tb in testbenches:
        sim.add_testbench(tb)
    for tb in background:
        sim.add_testbench(tb, background=True)
    sim.run()


# --------------------------------------------------------------- slave in the test top

def random_ops(rng, model, n, kinds, regs, p_write=0.5):
    """``n`` random accesses as ``(kind, addr, data, strb, expected)`` against ``model``."""
    for _ in range(n):
        addr = random_address(rng, rng.choice(kinds), regs)
        if rng.random() < p_write:
            strb = rng.randrange(16)
            data = rng.getrandbits(32)
            yield "w", addr, data, strb, OKAY if model.write(addr, data, strb) else SLVERR
        else:
            data, ok = model.read(addr)
            yield "r", addr, 0, 0, (data, OKAY if ok else SLVERR)


async def run_ops(mgr, ops):
    for kind, addr, data, strb, want in ops:
        if kind == "w":
            got = await mgr.write(addr, data, strb)
        else:
            got = await mgr.read(addr)
        assert got == want, f"{kind} 0x{addr:03x} data 0x{data:08x} strb {strb:04b}: " \
                            f"{got} != {want}"


@pytest.mark.parametrize("seed", [1, 2])
def test_random_accesses_match_model(seed):
    rng = random.Random(seed)
    dut = AxiTestTop()
    model = TopModel()
    ops = list(random_ops(rng, model, 800, ("reg", "mem", "mem", "bad"), range(REGS + 1)))

    async def tb(ctx):
        ctx.set(dut.wait_level, 0 if seed == 1 else 100)
        await run_ops(Manager(ctx, dut.axi, rng, max_delay=0 if seed == 1 else 3,
                              p_ready=1.0 if seed == 1 else 0.5), ops)

    simulate(dut, tb)


def test_concurrent_reads_and_writes():
    """A writer and a reader run at once on disjoint addresses: both directions overlap,
    take turns at the inside port and stay exact; then everything written is read back."""
    rng = random.Random(5)
    dut = AxiTestTop()
    model = TopModel()
    w_ops = list(random_ops(rng, model, 300, ("mem", "reg"), range(4), p_write=1))
    r_ops = list(random_ops(rng, model, 300, ("reg", "bad"), range(4, REGS + 1), p_write=0))
    reader_done = []

    async def writer(ctx):
        ctx.set(dut.wait_level, 60)
        mgr = Manager(ctx, dut.axi, random.Random(1))
        await run_ops(mgr, w_ops)
        while not reader_done:
            await ctx.tick()
        mem_end = MEM_BASE + MEM_DEPTH * MEM_STRIDE
        await run_ops(mgr, [("r", addr, 0, 0, (model.read(addr)[0], OKAY))
                            for addr in [*range(0, 16, 4), *range(MEM_BASE, mem_end, 4)]])

    async def reader(ctx):
        await run_ops(Manager(ctx, dut.axi, random.Random(2)), r_ops)
        reader_done.append(True)

    simulate(dut, writer, reader)
    assert reader_done


def test_reads_proceed_while_b_is_held():
    """With BREADY low the write side stalls (one write answered, one queued, then AW/W
    refused) while reads still complete."""
    dut = AxiTestTop()

    async def tb(ctx):
        axi = dut.axi
        mgr = Manager(ctx, axi, random.Random(3), p_ready=1.0, max_delay=0)
        ctx.set(axi.bready, 0)
        for i, value in enumerate((0x11, 0x22)):
            ctx.set(axi.awaddr, 4 * i)
            ctx.set(axi.wdata, value)
            ctx.set(axi.wstrb, 0xF)
            ctx.set(axi.awvalid, 1)
            ctx.set(axi.wvalid, 1)
            await ctx.tick().until(axi.awready & axi.wready)
            ctx.set(axi.awvalid, 0)
            ctx.set(axi.wvalid, 0)
            await ctx.tick().repeat(6)
        assert ctx.get(axi.bvalid) and not ctx.get(axi.awready) and not ctx.get(axi.wready)
        assert await mgr.read(0) == (0x11, OKAY)  # the first write is done ...
        assert await mgr.read(4) == (0, OKAY)  # ... the second waits for B
        assert await mgr.read(ID_ADDR) == (TOP_ID, OKAY)
        for _ in range(2):
            assert await mgr.response(axi.bvalid, axi.bready, axi.bresp) == (OKAY,)
        assert await mgr.read(4) == (0x22, OKAY)

    simulate(dut, tb)


def test_slverr_and_strobes():
    dut = AxiTestTop()

    async def tb(ctx):
        mgr = Manager(ctx, dut.axi, random.Random(4))
        assert await mgr.write(0x008, 0xFFFF_FFFF) == OKAY
        assert await mgr.write(0x008, 0x1234_5678, 0b0101) == OKAY
        assert await mgr.read(0x008) == (0xFF34_FF78, OKAY)
        assert await mgr.write(0x00B, 0xAB00_0000, 0b1000) == OKAY  # low address bits ignored
        assert await mgr.read(0x008) == (0xAB34_FF78, OKAY)
        assert await mgr.write(0x008, 0, 0) == OKAY  # no strobes: nothing changes
        assert await mgr.read(0x008) == (0xAB34_FF78, OKAY)
        assert await mgr.write(ID_ADDR, 0) == SLVERR  # read-only
        assert await mgr.read(ID_ADDR) == (TOP_ID, OKAY)
        for addr in (0x024, 0x3FC, 0x600, 0xFFC):  # unmapped, past the window's words
            assert await mgr.write(addr, 0xDEAD_BEEF) == SLVERR
            assert await mgr.read(addr) == (0, SLVERR)

    simulate(dut, tb)


def test_wide_word_commits_on_last_part():
    dut = AxiTestTop()

    async def tb(ctx):
        mgr = Manager(ctx, dut.axi, random.Random(6))
        word = MEM_BASE + 8 * 5
        assert await mgr.write(word, 0x1111_1111) == OKAY
        assert await mgr.read(word) == (0, OKAY)  # part 0 only staged
        assert await mgr.write(word + 4, 0x2222_2222) == OKAY  # commits
        assert await mgr.read(word) == (0x1111_1111, OKAY)
        assert await mgr.read(word + 4) == (0x2222_2222, OKAY)
        # Only the last part written again: the staged part 0 is committed with it.
        assert await mgr.write(word + 8 + 4, 0x3333_3333, 0b0011) == OKAY
        assert await mgr.read(word + 8) == (0x1111_1111, OKAY)
        assert await mgr.read(word + 12) == (0x2222_3333, OKAY)

    simulate(dut, tb)


# ------------------------------------------------------------ the inside port contract

def _value(addr):
    return (addr * 0x9E37_79B1 + 0x1234) & 0xFFFF_FFFF


def _bad(addr):
    return addr % 5 == 0


def test_inside_port_contract():
    """The inside port as documented: requests held until ``ready``, read data any number
    of cycles after acceptance, ``err`` to ``SLVERR``, stray ``rvalid`` ignored, a
    request's address shown from the cycle before it (``HostInterface`` registers its
    window decode) and a read's address held until its ``rvalid`` while writes queue
    behind it (``HostInterface`` decodes a window read's data from it)."""
    rng = random.Random(8)
    dut = Axi4LiteSlave(addr_width=10)
    assert len(dut.addr) == 8  # a word address
    writes = []

    async def inside(ctx):
        held = None  # request seen without ready last cycle: must be repeated unchanged
        wait = None  # cycles until the accepted read's data
        last_addr, last_req = None, False
        pending = None  # the accepted read's address, until its rvalid
        while True:
            we, re = ctx.get(dut.we), ctx.get(dut.re)
            req = (we, re, ctx.get(dut.addr), ctx.get(dut.wdata) if we else 0,
                   ctx.get(dut.wstrb) if we else 0)
            assert not (we and re) and (held is None or req == held), (held, req)
            assert not (re and wait is not None), "new read before the data of the last"
            addr = req[2]
            assert pending is None or addr == pending, "the address moved before rvalid"
            assert last_req or not (we or re) or addr == last_addr, \
                "the address did not show the cycle before the request"
            last_addr, last_req = addr, bool(we or re)
            ready = rng.random() < 0.5
            ctx.set(dut.ready, ready)
            ctx.set(dut.err, _bad(addr))
            if re and ready:
                wait, pending = rng.choice([0, 0, 1, 3]), addr
            rvalid = wait == 0
            stray = wait is None and not re and rng.random() < 0.3
            ctx.set(dut.rvalid, rvalid or stray)
            ctx.set(dut.rdata, _value(addr) if rvalid else rng.getrandbits(32))
            if we and ready:
                writes.append(req[2:])
            held = req if (we or re) and not ready else None
            if rvalid:
                pending = None
            wait = None if rvalid else (wait - 1 if wait is not None else None)
            await ctx.tick()

    want = []

    async def writer(ctx):  # at once with the reader, so writes wait behind reads
        mgr, wrng = Manager(ctx, dut.axi, random.Random(9)), random.Random(10)
        for _ in range(200):
            addr, data, strb = wrng.randrange(1 << 8), wrng.getrandbits(32), wrng.randrange(16)
            want.append((addr, data, strb))
            assert await mgr.write(4 * addr + wrng.randrange(4), data, strb) == \
                (SLVERR if _bad(addr) else OKAY)

    async def reader(ctx):
        mgr, rrng = Manager(ctx, dut.axi, random.Random(11)), random.Random(12)
        for _ in range(200):
            addr = rrng.randrange(1 << 8)
            assert await mgr.read(4 * addr) == \
                ((0, SLVERR) if _bad(addr) else (_value(addr), OKAY))

    simulate(dut, writer, reader, background=[inside])
    assert writes == want


def test_signature():
    sig = Axi4LiteSignature(ADDR_WIDTH)
    assert sig == Axi4LiteSignature(ADDR_WIDTH) and sig != Axi4LiteSignature(12)
    assert sig.members["awaddr"].shape == ADDR_WIDTH
    assert set(sig.members) == {
        "awaddr", "awprot", "awvalid", "awready", "wdata", "wstrb", "wvalid", "wready",
        "bresp", "bvalid", "bready", "araddr", "arprot", "arvalid", "arready",
        "rdata", "rresp", "rvalid", "rready"}
    with pytest.raises(ValueError):
        Axi4LiteSignature(2)


# ------------------------------------------------------------------- the register map

def test_register_map_document_is_generated():
    doc = DOC.read_text()
    tables = RegisterMap().markdown().strip().split("\n\n")
    assert len(tables) == 3 and all(t in doc for t in tables)


def test_registers_are_consistent():
    rmap = RegisterMap()
    offsets = [r.offset for r in rmap.registers]
    assert offsets == sorted(set(offsets)) and all(o % 4 == 0 and o < REG_SPAN for o in offsets)
    for r in rmap.registers:
        assert 1 <= r.width <= 32 and r.reset <= r.mask, r.name
        assert all(f.lsb + f.width <= r.width for f in r.fields), r.name
    assert rmap.register("WATCHDOG").reset == rmap.config.program_depth
    assert rmap.register("IRQ_STATUS").access is Access.RW1C
    assert rmap.register("CTRL").access is Access.WO
    assert [f.name for f in rmap.register("STATUS").fields] == ["busy", "done", "error"]


@pytest.mark.parametrize("lanes, stride", [(4, 8), (8, 16), (16, 32)])
def test_window_strides(lanes, stride):
    rmap = RegisterMap(ProcessorConfig(lanes=lanes, weight_depth=1 << 20, param_depth=1 << 20))
    got = {w.name: (w.parts, w.stride) for w in rmap.windows}
    assert got == {"constants": (2, 8), "descriptors": (16, 64), "scratch": (1, 4),
                   "program": (2, 8), "params": (3, 16),
                   "weights": (-(-rmap.config.word_bits // 32), stride)}
    spans = sorted((w.base, w.base + w.span) for w in rmap.windows)
    assert spans[0][0] >= REG_SPAN and spans[-1][1] <= 1 << ADDR_WIDTH
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))
    # power-of-two spans aligned to themselves: decoding is bit slicing
    assert all(w.span & (w.span - 1) == 0 and w.base % w.span == 0 for w in rmap.windows)


def test_decode_round_trip():
    rmap = RegisterMap()
    for r in rmap.registers:
        assert rmap.decode(r.offset + 3) == (r.name, 0, 0)
    for w in rmap.windows:
        for index in (0, 1, w.depth - 1):
            for part in range(w.parts):
                addr = rmap.address(w.name, index, part)
                assert rmap.decode(addr) == (w.name, index, part)
        with pytest.raises(IndexError):
            rmap.address(w.name, w.depth)
    assert rmap.address("descriptors", 2, 15) == 0x4000 + 2 * 64 + 60
    assert rmap.address("program", 3, 1) == 0x80000 + 3 * 8 + 4


def test_word_parts():
    rmap = RegisterMap()
    weights, desc = rmap.window("weights"), rmap.window("descriptors")
    word = (1 << 76) | 0x1234_5678_9ABC_DEF0
    assert weights.split(word) == [0x9ABC_DEF0, 0x1234_5678, 0x1000]
    assert weights.join(weights.split(word)) == word
    record = bytes(range(64))  # a descriptor's parts are its 16 little-endian u32 fields
    assert desc.split(int.from_bytes(record, "little")) == \
        [int.from_bytes(record[4 * k:4 * k + 4], "little") for k in range(16)]
    with pytest.raises(ValueError):
        weights.split(1 << 77)


def test_decode_unmapped():
    rmap = RegisterMap()
    weights, scratch = rmap.window("weights"), rmap.window("scratch")
    for addr in (0x0A8, 0xFFC,  # register gaps
                 weights.base + 12,  # part 3 of a 3-part word
                 weights.base + weights.depth * weights.stride,  # past the configured depth
                 scratch.base + scratch.depth * 4,
                 0x2000, 0x3FFC,  # between windows
                 1 << ADDR_WIDTH, -4):
        assert rmap.decode(addr) is None, hex(addr)


def test_oversized_memories_are_refused():
    with pytest.raises(ValueError, match="params"):
        RegisterMap(ProcessorConfig(param_depth=(1 << 20) + 1))
