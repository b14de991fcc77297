"""``Axi4LiteSlave`` in front of a register file and a 64-bit memory window, its Python
model, and the cocotb tests that drive it with cocotbext-axi's ``AxiLiteMaster``.

The test top (``AxiTestTop``) is also what the Amaranth-simulator unit tests run, so both
levels check the same inside logic against the same model (``TopModel``):

=================  =======================================================================
byte address       content
=================  =======================================================================
0x000 .. 0x01C     ``REGS`` read/write registers, byte strobes honoured
0x020              ``TOP_ID``, read-only: a write is ``SLVERR``
0x400 .. 0x5FF     ``MEM_DEPTH`` 64-bit words, two parts each at a stride of 8 bytes: a
                   part write updates a shared 64-bit staging register, writing part 1
                   commits it (``docs/register-map.md``); reads return the memory
anything else      unmapped: ``SLVERR``, reads return 0
=================  =======================================================================

``ready`` toward the slave drops at random (``wait_level``/256 of cycles, an LFSR), register
reads answer in the ``ready`` cycle, memory reads one cycle later: both read paths of the
inside port.
"""

from __future__ import annotations

import os
import random

import cocotb
from amaranth import Array, Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge
from cocotbext.axi import AxiLiteBus, AxiLiteMaster, AxiResp

from hw.axi4_lite import Axi4LiteSignature, Axi4LiteSlave

from .harness import Lfsr16

TOPLEVEL = "axi4_lite_top"
ADDR_WIDTH = 12
REGS = 8
TOP_ID = 0x4E455054
ID_ADDR = 0x020
MEM_BASE, MEM_DEPTH, MEM_STRIDE = 0x400, 64, 8

#: Accesses per stream, and the random seed (set by ``tests/rtl/test_axi4_lite_rtl.py``).
N_OPS = int(os.environ.get("NEP_AXI_OPS", "300"))
SEED = int(os.environ.get("NEP_AXI_SEED", "1"))
#: A hang (a response never given) fails the test: 50 cycles per access is ~10x margin.
TIMEOUT_NS = 50 * 10 * N_OPS + 10_000


def _merge(old, new, strb):
    """``new``'s bytes where ``strb`` is set, ``old``'s elsewhere (Amaranth values)."""
    return Cat(*(Mux(strb[i], new[8 * i:8 * i + 8], old[8 * i:8 * i + 8]) for i in range(4)))


class AxiTestTop(wiring.Component):
    """Test top: ``Axi4LiteSlave`` plus a register file and a memory window (module doc).

    Interface
    ---------
    axi : In(Axi4LiteSignature(12))
    wait_level : In(8)
        Chance, out of 256 per cycle, that the inside holds ``ready`` low.
    """

    def __init__(self):
        self.mem = Memory(shape=64, depth=MEM_DEPTH, init=[])
        super().__init__({"axi": In(Axi4LiteSignature(ADDR_WIDTH)), "wait_level": In(8)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.slave = slave = Axi4LiteSlave(addr_width=ADDR_WIDTH)
        m.submodules.lfsr = lfsr = Lfsr16()
        m.submodules.mem = self.mem
        wiring.connect(m, wiring.flipped(self.axi), slave.axi)
        rd, wr = self.mem.read_port(), self.mem.write_port()

        word = slave.addr
        mem_word = word - MEM_BASE // 4
        is_reg = word < REGS
        is_id = word == ID_ADDR // 4
        in_mem = (word >= MEM_BASE // 4) & (mem_word < MEM_DEPTH * MEM_STRIDE // 4)
        index, part = mem_word[1:], mem_word[0]
        ready = Signal()
        m.d.comb += [
            ready.eq(lfsr.byte >= self.wait_level), slave.ready.eq(ready),
            slave.err.eq(~(is_reg | is_id | in_mem) | (slave.we & is_id)),
        ]

        regs = Array(Signal(32, name=f"reg{i}") for i in range(REGS))
        write = slave.we & ready
        with m.If(write & is_reg):
            m.d.sync += regs[word[:3]].eq(_merge(regs[word[:3]], slave.wdata, slave.wstrb))

        staging = Signal(64)
        new_part = _merge(Mux(part, staging[32:], staging[:32]), slave.wdata, slave.wstrb)
        with m.If(write & in_mem):
            with m.If(part):
                m.d.sync += staging[32:].eq(new_part)
                m.d.comb += [wr.en.eq(1), wr.addr.eq(index),
                             wr.data.eq(Cat(staging[:32], new_part))]
            with m.Else():
                m.d.sync += staging[:32].eq(new_part)

        mem_rvalid, rd_part = Signal(), Signal()
        take_read = slave.re & ready
        m.d.comb += [rd.addr.eq(index), rd.en.eq(take_read & in_mem)]
        m.d.sync += [mem_rvalid.eq(take_read & in_mem), rd_part.eq(part)]
        m.d.comb += [
            slave.rvalid.eq((take_read & ~in_mem) | mem_rvalid),
            slave.rdata.eq(Mux(mem_rvalid, Mux(rd_part, rd.data[32:], rd.data[:32]),
                               Mux(is_id, TOP_ID, regs[word[:3]]))),
        ]
        return m


class TopModel:
    """What ``AxiTestTop`` holds and answers, access by access."""

    def __init__(self):
        self.regs = [0] * REGS
        self.mem = [0] * MEM_DEPTH
        self.staging = 0

    @staticmethod
    def _merge(old: int, new: int, strb: int) -> int:
        mask = sum(0xFF << (8 * i) for i in range(4) if strb >> i & 1)
        return (old & ~mask) | (new & mask)

    @staticmethod
    def _mem_slot(addr: int):
        off = addr - MEM_BASE
        if 0 <= off < MEM_DEPTH * MEM_STRIDE:
            return off // MEM_STRIDE, off // 4 % 2
        return None

    def write(self, addr: int, data: int, strb: int = 0xF) -> bool:
        """Apply a write at byte address ``addr``; return whether it is OKAY."""
        addr &= ~3
        if addr < 4 * REGS:
            self.regs[addr // 4] = self._merge(self.regs[addr // 4], data, strb)
            return True
        slot = self._mem_slot(addr)
        if slot is None:
            return False
        index, part = slot
        new = self._merge(self.staging >> (32 * part) & 0xFFFF_FFFF, data, strb)
        self.staging = (self.staging & ~(0xFFFF_FFFF << (32 * part))) | (new << (32 * part))
        if part == 1:
            self.mem[index] = self.staging
        return True

    def read(self, addr: int) -> tuple[int, bool]:
        """``(data, okay)`` of a read at byte address ``addr``."""
        addr &= ~3
        if addr < 4 * REGS:
            return self.regs[addr // 4], True
        if addr == ID_ADDR:
            return TOP_ID, True
        slot = self._mem_slot(addr)
        if slot is None:
            return 0, False
        index, part = slot
        return self.mem[index] >> (32 * part) & 0xFFFF_FFFF, True


def random_address(rng: random.Random, kind: str, regs=range(REGS + 1)) -> int:
    """A byte address: ``"reg"`` (one of ``regs``, index ``REGS`` being the ID), ``"mem"``
    (window word parts) or ``"bad"`` (unmapped, including the window's unused half)."""
    if kind == "reg":
        return 4 * rng.choice(regs)
    if kind == "mem":
        return MEM_BASE + 4 * rng.randrange(MEM_DEPTH * MEM_STRIDE // 4)
    return rng.choice([4 * rng.randrange(REGS + 1, MEM_BASE // 4),
                       MEM_BASE + MEM_DEPTH * MEM_STRIDE + 4 * rng.randrange(128),
                       (1 << ADDR_WIDTH) - 4])


# ---------------------------------------------------------------- cocotb side

async def _setup(dut, wait_level: int, pause: float, seed: int):
    Clock(dut.clk, 10, unit="ns").start()
    dut.wait_level.value = wait_level
    for word in dut.mem:  # the memory has no reset; TopModel starts from zeros
        word.value = 0
    dut.rst.value = 1
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0
    bus = AxiLiteBus.from_prefix(dut, "axi", bus_separator="__")
    axi = AxiLiteMaster(bus, dut.clk, dut.rst)
    if pause:
        rng = random.Random(seed ^ 0x5EED)
        channels = (axi.write_if.aw_channel, axi.write_if.w_channel, axi.write_if.b_channel,
                    axi.read_if.ar_channel, axi.read_if.r_channel)
        for ch in channels:
            ch.set_pause_generator(iter(lambda: rng.random() < pause, None))
    await RisingEdge(dut.clk)
    return axi


class _Monitor:
    """Checks the slave's side of the handshakes each cycle: a response stays valid and
    unchanged until taken, and counts in which order AW and W were accepted."""

    def __init__(self, dut):
        self.dut = dut
        self.w_first = self.aw_first = self.together = 0
        self.errors: list[str] = []
        cocotb.start_soon(self._run())

    async def _run(self):
        d = self.dut
        aw = w = 0  # handshakes so far
        prev_b = prev_r = None
        while True:
            await RisingEdge(d.clk)
            await ReadOnly()
            # sampled after the edge: this cycle's values; the previous ones decide checks
            b = (int(d.axi__bvalid.value), int(d.axi__bresp.value))
            r = (int(d.axi__rvalid.value), int(d.axi__rresp.value), int(d.axi__rdata.value))
            if prev_b and prev_b[0] and not prev_b[2] and b != prev_b[:2]:
                self.errors.append(f"B changed before bready: {prev_b[:2]} -> {b}")
            if prev_r and prev_r[0] and not prev_r[3] and r != prev_r[:3]:
                self.errors.append(f"R changed before rready: {prev_r[:3]} -> {r}")
            prev_b = (*b, int(d.axi__bready.value))
            prev_r = (*r, int(d.axi__rready.value))
            aw_hs = int(d.axi__awvalid.value) and int(d.axi__awready.value)
            w_hs = int(d.axi__wvalid.value) and int(d.axi__wready.value)
            if aw_hs and w_hs and aw == w:
                self.together += 1
            elif w_hs and w >= aw:
                self.w_first += 1
            elif aw_hs and aw >= w:
                self.aw_first += 1
            aw, w = aw + aw_hs, w + w_hs


async def _worker(axi, model: TopModel, rng: random.Random, kinds, regs, n: int):
    """``n`` random accesses to addresses of ``kinds`` (registers from ``regs``), each
    checked against ``model``; byte writes of 1..4 bytes give every strobe pattern."""
    for _ in range(n):
        addr = random_address(rng, rng.choice(kinds), regs)
        if rng.random() < 0.5:
            offset = rng.randrange(4)
            data = rng.randbytes(rng.randint(1, 4 - offset))
            strb = ((1 << len(data)) - 1) << offset
            ok = model.write(addr, int.from_bytes(data, "little") << (8 * offset), strb)
            resp = (await axi.write(addr + offset, data)).resp
            assert resp == (AxiResp.OKAY if ok else AxiResp.SLVERR), \
                f"write 0x{addr:03x} strb {strb:04b}: {resp!r}"
        else:
            want, ok = model.read(addr)
            got = await axi.read(addr, 4)
            value = int.from_bytes(got.data, "little")
            assert got.resp == (AxiResp.OKAY if ok else AxiResp.SLVERR), \
                f"read 0x{addr:03x}: {got.resp!r}"
            assert value == want, f"read 0x{addr:03x}: 0x{value:08x}, model 0x{want:08x}"


async def _random_traffic(dut, *, wait_level: int, pause: float):
    """Two concurrent streams of accesses through one ``AxiLiteMaster`` (its write and
    read sides run independently, so reads and writes overlap on the bus). Stream A owns
    the memory window (its staging register is shared) and registers 0..3, stream B
    registers 4..7, the ID and the unmapped space: disjoint, so one model stays exact."""
    seed, n = SEED, N_OPS
    axi = await _setup(dut, wait_level, pause, seed)
    mon = _Monitor(dut)
    model = TopModel()
    a = cocotb.start_soon(_worker(axi, model, random.Random(seed), ("mem", "mem", "reg"),
                                  range(4), n))
    b = cocotb.start_soon(_worker(axi, model, random.Random(seed + 1), ("reg", "bad"),
                                  range(4, REGS + 1), n))
    await a
    await b
    assert not mon.errors, "\n".join(mon.errors[:10])
    return mon


@cocotb.test(timeout_time=TIMEOUT_NS, timeout_unit="ns")
async def random_traffic_full_speed(dut):
    """No pauses, no inside wait states: back-to-back transactions."""
    await _random_traffic(dut, wait_level=0, pause=0.0)


@cocotb.test(timeout_time=TIMEOUT_NS, timeout_unit="ns")
async def random_traffic_back_pressure(dut):
    """Every channel paused at random (BREADY/RREADY low included) and inside waits:
    AW and W must have been accepted in both orders."""
    mon = await _random_traffic(dut, wait_level=80, pause=0.4)
    assert mon.w_first and mon.aw_first and mon.together, \
        f"orders seen: W first {mon.w_first}, AW first {mon.aw_first}, together {mon.together}"
