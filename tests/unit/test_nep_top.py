"""``NepTop`` (``hw/nep_top.py``: AXI4-Lite slave, ``HostInterface``, ``Processor`` and
its memories) in the Amaranth simulator, reached only through its bus.

A minimal AXI4-Lite manager (``Manager``, one access at a time) drives the registers and
windows of ``docs/register-map.md``; ``HostInterface`` alone gets the interrupt timing
(a run ending in the cycle of a clear). A compiled model image is loaded through the
bus and a step program started via ``CTRL``; the registers and scratchpad read back
equal ``compiler.iss.Machine``'s.
"""

import numpy as np
from amaranth.sim import Simulator

from compiler.isa import STREAM_READ_LATENCY, ErrorCode
from compiler.iss import Machine
from hw.axi4_lite import Response
from hw.host_interface import CORE_READ_LATENCY, WINDOW_READ_LATENCY, HostInterface
from hw.nep_top import NepTop
from hw.processor import HostMem
from hw.register_map import MAP_ID, REG_SPAN, Access
from sim.cocotb_nep_top import (
    CFG,
    EXTRA_PC,
    ILLEGAL,
    MAP,
    busy_program,
    image_writes,
    inputs,
    reg,
    scratch_writes,
    small_image,
    word_writes,
)

OKAY, SLVERR = Response.OKAY.value, Response.SLVERR.value


class Manager:
    """A minimal AXI4-Lite manager: AW and W together, ``bready``/``rready`` high."""

    def __init__(self, ctx, axi, *, timeout=100):
        self.ctx, self.axi, self.timeout = ctx, axi, timeout

    async def _wait(self, signal):
        for _ in range(self.timeout):
            if self.ctx.get(signal):
                return
            await self.ctx.tick()
        raise AssertionError(f"{signal.name} not high within {self.timeout} cycles")

    async def write(self, addr, data, strb=0xF):
        """Write; return ``BRESP``."""
        ctx, axi = self.ctx, self.axi
        ctx.set(axi.awaddr, addr)
        ctx.set(axi.wdata, data)
        ctx.set(axi.wstrb, strb)
        ctx.set(axi.bready, 1)
        channels = ((axi.awvalid, axi.awready), (axi.wvalid, axi.wready))
        pending = {0, 1}
        for valid, _ in channels:
            ctx.set(valid, 1)
        for _ in range(self.timeout):
            taken = {i for i in pending if ctx.get(channels[i][1])}
            await ctx.tick()
            for i in taken:
                ctx.set(channels[i][0], 0)
            pending -= taken
            if not pending:
                break
        await self._wait(axi.bvalid)
        resp = ctx.get(axi.bresp)
        await ctx.tick()
        ctx.set(axi.bready, 0)
        return resp

    async def read(self, addr):
        """Read; return ``(RDATA, RRESP)``."""
        ctx, axi = self.ctx, self.axi
        ctx.set(axi.araddr, addr)
        ctx.set(axi.arvalid, 1)
        ctx.set(axi.rready, 1)
        await self._wait(axi.arready)
        await ctx.tick()
        ctx.set(axi.arvalid, 0)
        await self._wait(axi.rvalid)
        got = ctx.get(axi.rdata), ctx.get(axi.rresp)
        await ctx.tick()
        ctx.set(axi.rready, 0)
        return got

    async def ok_write(self, addr, data, strb=0xF):
        assert await self.write(addr, data, strb) == OKAY, f"write 0x{addr:07x}"

    async def ok_read(self, addr):
        data, resp = await self.read(addr)
        assert resp == OKAY, f"read 0x{addr:07x}"
        return data

    async def writes(self, pairs):
        for addr, data in pairs:
            await self.ok_write(addr, data)


def simulate(body, dut=None, *, watch=None):
    """Run ``await body(ctx, dut, bus)`` against ``dut`` (default: a ``NepTop(CFG)``),
    with ``await watch(ctx)`` beside it in the background if given."""
    dut = NepTop(CFG) if dut is None else dut

    async def testbench(ctx):
        await body(ctx, dut, Manager(ctx, dut.axi) if isinstance(dut, NepTop) else None)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    if watch is not None:
        sim.add_testbench(watch, background=True)
    sim.run()


def test_registers_and_windows():
    rng = np.random.default_rng(1)

    async def body(ctx, dut, bus):
        for r in MAP.registers:  # reset values; CTRL is write-only and reads 0
            assert await bus.ok_read(r.offset) == r.reset, r.name
        assert await bus.ok_read(reg("ID")) == MAP_ID
        for r in MAP.registers:
            value = int(rng.integers(0, 1 << 32))
            if r.access == Access.RO:  # refused, unchanged
                assert await bus.write(r.offset, value) == SLVERR, r.name
                assert await bus.ok_read(r.offset) == r.reset, r.name
            elif r.access == Access.RW:  # bits above the width drop; strobes honoured
                await bus.ok_write(r.offset, value)
                assert await bus.ok_read(r.offset) == value & r.mask, r.name
                await bus.ok_write(r.offset, 0, strb=0b0010)
                assert await bus.ok_read(r.offset) == value & r.mask & ~0xFF00, r.name
        await bus.ok_write(reg("START_PC"), 0)
        unmapped = [0x054, 0x07C, 0x0A8, REG_SPAN - 4, 0x2000, 0x8000,
                    MAP.window("scratch").base + 4 * CFG.scratch_depth,
                    MAP.window("program").base + 8 * CFG.program_depth,
                    MAP.window("weights").base + 12,  # part 3 of a 3-part word
                    MAP.window("params").base + 16 * CFG.param_depth + 4,
                    (1 << MAP.addr_width) - 4]
        for addr in unmapped:
            assert await bus.read(addr) == (0, SLVERR), hex(addr)
            assert await bus.write(addr, 0xFFFF_FFFF) == SLVERR, hex(addr)

        # Every window: a random word at each end, written part by part, read back.
        for w in MAP.windows:
            for index in (0, w.depth - 1):
                word = int.from_bytes(rng.bytes(64), "little") & ((1 << w.word_bits) - 1)
                await bus.writes(word_writes(w.name, index, word))
                parts = [await bus.ok_read(MAP.address(w.name, index, k))
                         for k in range(w.parts)]
                assert w.join(parts) == word and parts == w.split(word), (w.name, index)
        # A word (not a descriptor) lands whole with its last part: nothing is written
        # before; the staging register keeps the lower parts, so writing the last part of
        # another word commits them too; bytes not strobed come from it.
        prog = [MAP.address("program", i, k) for i in (2, 3) for k in range(2)]
        await bus.ok_write(prog[0], 0xAABBCCDD)
        assert [await bus.ok_read(a) for a in prog] == [0, 0, 0, 0]
        await bus.ok_write(prog[1], 0x11223344)
        await bus.ok_write(prog[3], 0x55667788, strb=0b0101)
        assert [await bus.ok_read(a) for a in prog] == [0xAABBCCDD, 0x11223344,
                                                        0xAABBCCDD, 0x11663388]
        # A descriptor part lands alone, at once: a read between a descriptor's part
        # writes shows the parts written so far and the old contents of the others.
        desc = [MAP.address("descriptors", 2, k) for k in range(16)]
        await bus.ok_write(desc[5], 0xCAFEF00D)
        assert [await bus.ok_read(a) for a in desc] == [0] * 5 + [0xCAFEF00D] + [0] * 10
        # A descriptor part's bytes not strobed come from the staging register's part 0,
        # which every window's part 0 write and every descriptor part write leave.
        await bus.ok_write(desc[15], 0x11223344, strb=0b0101)
        await bus.ok_write(MAP.address("scratch", 7), 0xBEEF)
        await bus.ok_write(desc[3], 0x1200, strb=0b0010)
        assert [await bus.ok_read(a) for a in desc] == (
            [0] * 3 + [0x12EF, 0, 0xCAFEF00D] + [0] * 9 + [0xCA22F044])
        # A one-part scratch entry: bytes not strobed come from the staging register.
        await bus.ok_write(MAP.address("scratch", 8), 0x34, strb=0b0001)
        assert await bus.ok_read(MAP.address("scratch", 8)) == 0x1234
        await bus.ok_write(MAP.address("scratch", 8), 0xBE00, strb=0b0010)
        assert await bus.ok_read(MAP.address("scratch", 8)) == 0xBE34

    simulate(body)


def test_interrupt_set_wins_over_a_clear_in_the_same_cycle():
    dut = HostInterface(config=CFG)
    status = reg("IRQ_STATUS") >> 2

    async def body(ctx, dut, _):
        ctx.set(dut.wstrb, 0xF)

        async def show(addr):
            """The address a cycle ahead of the request, as ``Axi4LiteSlave`` shows it."""
            ctx.set(dut.addr, addr)
            await ctx.tick()

        async def end_run(code, *, clear=0):
            """``done`` rises with ``error`` = ``code`` while the host clears ``clear``."""
            await show(status)
            ctx.set(dut.error, code)
            ctx.set(dut.done, 1)
            ctx.set(dut.wdata, clear)
            ctx.set(dut.we, clear != 0)
            await ctx.tick()
            ctx.set(dut.we, 0)
            ctx.set(dut.done, 0)
            await ctx.tick()

        async def read_status():
            await show(status)
            ctx.set(dut.re, 1)
            value = ctx.get(dut.rdata)
            assert ctx.get(dut.rvalid) and not ctx.get(dut.err)
            ctx.set(dut.re, 0)
            return value

        await end_run(0)
        assert await read_status() == 0b01 and not ctx.get(dut.irq)
        await show(reg("IRQ_ENABLE") >> 2)
        ctx.set(dut.wdata, 0b10)
        ctx.set(dut.we, 1)
        await ctx.tick()
        ctx.set(dut.we, 0)
        assert not ctx.get(dut.irq)  # done pending, only error enabled
        await end_run(ErrorCode.WATCHDOG, clear=0b11)  # the new run's set wins
        assert await read_status() == 0b11 and ctx.get(dut.irq)
        await end_run(0, clear=0b10)  # error cleared, done set again
        assert await read_status() == 0b01 and not ctx.get(dut.irq)

    simulate(body, dut)


def test_window_reads_answer_five_cycles_later_with_the_word_as_it_arrived():
    """Each window's read: ``rvalid`` exactly 5 cycles after ``re`` (docs/register-map.md),
    with part ``k`` of the word its memory returned: a core memory's 3 cycles after ``re``
    (the request register, the RAM and its register: ``CORE_READ_LATENCY``), a weight or
    parameter memory's 4 (the request register and ``STREAM_READ_LATENCY``), even when
    the memory's output changes in the cycles before and after."""
    assert WINDOW_READ_LATENCY == 5 and STREAM_READ_LATENCY == 3 and CORE_READ_LATENCY == 2
    dut = HostInterface(config=CFG)
    sources = {"weights": dut.weight_rdata, "params": dut.param_rdata}

    async def body(ctx, dut, _):
        for w in MAP.windows:
            rdata = sources.get(w.name, dut.host_rdata)
            core = rdata is dut.host_rdata
            answers = 1 + (CORE_READ_LATENCY if core else STREAM_READ_LATENCY)
            word = int.from_bytes(bytes(range(7, 7 + 64)), "little") & ((1 << len(rdata)) - 1)
            for k in range(w.parts):
                ctx.set(dut.addr, MAP.address(w.name, 1, k) >> 2)
                await ctx.tick()  # the decode is registered: the address comes first
                ctx.set(dut.re, 1)
                assert not ctx.get(dut.rvalid) and not ctx.get(dut.err), (w.name, k)
                await ctx.tick()
                ctx.set(dut.re, 0)
                for cycle in range(1, 6):
                    # the memory answers in one cycle only; before and after it shows noise
                    noise = ~word & ((1 << len(rdata)) - 1)
                    ctx.set(rdata, word if cycle == answers else noise)
                    if cycle < 5:
                        assert not ctx.get(dut.rvalid), (w.name, k, cycle)
                        await ctx.tick()
                assert ctx.get(dut.rvalid) and not ctx.get(dut.err), (w.name, k)
                assert ctx.get(dut.rdata) == word >> 32 * k & 0xFFFF_FFFF, (w.name, k)
                await ctx.tick()

    simulate(body, dut)


def test_core_window_reads_among_other_accesses_take_each_word_in_its_cycle():
    """Every core window (program, descriptors, constants, scratch) read part by part
    through the bus, each read back to back with a read of another window (weights,
    params or another core window) and with word writes in between: every part is the
    word as its memory held it when the read reached the RAM, and every window read's
    ``rvalid`` comes exactly ``WINDOW_READ_LATENCY`` cycles after its ``re``. In the cycle
    after the processor's RAMs take a read's address, the watcher overwrites that word
    with its complement (the RAM's register takes the old word then); the accesses
    around a read use other indices. So a word caught a cycle late (the new contents) or
    a cycle early (the previous access's index) reads wrong; only the constants, whose
    register is loaded with the read itself, hold the word in both cycles."""
    rng = np.random.default_rng(21)
    dut = NepTop(CFG)
    cpu = dut.cpu
    memories = {HostMem.PROGRAM: cpu.program_mem, HostMem.DESCRIPTORS: cpu.desc_mem,
                HostMem.CONSTANTS: cpu.const_mem, HostMem.SCRATCH: cpu.scratch_mem}
    core = [mem.name.lower() for mem in memories]  # their windows' names
    windows = {w.name: w for w in MAP.windows}
    indices = range(4)
    mask = {name: (1 << w.word_bits) - 1 for name, w in windows.items()}

    def random_word(name):
        return int.from_bytes(rng.bytes(64), "little") & mask[name]

    model = {(name, i): random_word(name) for name in windows for i in indices}
    latencies = []

    async def watch(ctx):
        cycle, start = 0, None
        async for _, _, re, rvalid, host_re, mem, addr in ctx.tick().sample(
                dut.host.re, dut.host.rvalid, cpu.host_re, cpu.host_mem, cpu.host_addr):
            cycle += 1
            if re and not rvalid:  # a window read taken (a register answers at once)
                start = cycle
            elif rvalid and start is not None:
                latencies.append(cycle - start)
                start = None
            if host_re:  # the RAMs (the constants' register too) have just taken it
                mem = HostMem(mem)
                word = memories[mem].data[addr]
                ctx.set(word, ctx.get(word) ^ mask[mem.name.lower()])

    async def read(bus, name, i, k):
        got = await bus.ok_read(MAP.address(name, i, k))
        assert got == model[name, i] >> 32 * k & 0xFFFF_FFFF, (name, i, k)
        if name in core:
            model[name, i] ^= mask[name]  # the watcher's complement

    async def body(ctx, dut, bus):
        for (name, i), word in model.items():
            await bus.writes(word_writes(name, i, word))
        n_reads = 0
        for _ in range(2):
            for name in map(str, rng.permutation(core)):
                i = int(rng.choice(indices))
                others = [j for j in indices if j != i]
                for k in rng.permutation(windows[name].parts):
                    await read(bus, name, i, int(k))
                    other = str(rng.choice([n for n in windows if n != name]))
                    await read(bus, other, int(rng.choice(others)),
                               int(rng.integers(windows[other].parts)))
                    n_reads += 2
                    if rng.random() < 0.5:
                        target, j = str(rng.choice(list(windows))), int(rng.choice(others))
                        model[target, j] = random_word(target)
                        await bus.writes(word_writes(target, j, model[target, j]))
        assert latencies == [WINDOW_READ_LATENCY] * n_reads

    simulate(body, dut, watch=watch)


#: Bus cycles (docs/register-map.md section 1.1): from the cycle AW and W (AR) are taken
#: to the cycle ``BVALID`` (a register's ``RVALID``) rises, and from one write's
#: ``BVALID`` to the next's when the master keeps AW and W ahead.
BUS_LATENCY = 4


async def _back_to_back(ctx, axi, writes, reads, on_b):
    """``writes`` with AW and W kept valid (each taken as soon as its holding register is
    free), then ``reads`` with AR kept valid, the first raised in the cycle the last
    ``BVALID`` shows (``BREADY``/``RREADY`` high throughout). Calls ``on_b(i)`` in the
    cycle the ``i``-th write's ``BVALID`` shows. Returns the cycles of each write's AW/W
    handshake and ``BVALID``, of each read's AR handshake, and each read's ``(RVALID
    cycle, RDATA, RRESP)``."""
    taken_w, b_at, taken_r, r_at = [], [], [], []
    aw = w = ar = 0
    ctx.set(axi.bready, 1)
    ctx.set(axi.rready, 1)
    for cycle in range(100 * (len(writes) + len(reads))):
        if ctx.get(axi.bvalid):
            assert ctx.get(axi.bresp) == OKAY, writes[len(b_at)]
            on_b(len(b_at))
            b_at.append(cycle)
        if ctx.get(axi.rvalid):
            r_at.append((cycle, ctx.get(axi.rdata), ctx.get(axi.rresp)))
        if len(r_at) == len(reads):
            ctx.set(axi.bready, 0)
            ctx.set(axi.rready, 0)
            return taken_w, b_at, taken_r, r_at
        ctx.set(axi.awvalid, aw < len(writes))
        ctx.set(axi.wvalid, w < len(writes))
        ctx.set(axi.arvalid, len(b_at) == len(writes) and ar < len(reads))
        if aw < len(writes):
            ctx.set(axi.awaddr, writes[aw][0])
        if w < len(writes):
            ctx.set(axi.wdata, writes[w][1])
            ctx.set(axi.wstrb, 0xF)
        if ar < len(reads):
            ctx.set(axi.araddr, reads[ar])
        aw_go = ctx.get(axi.awvalid) and ctx.get(axi.awready)
        w_go = ctx.get(axi.wvalid) and ctx.get(axi.wready)
        ar_go = ctx.get(axi.arvalid) and ctx.get(axi.arready)
        await ctx.tick()
        aw, w, ar = aw + aw_go, w + w_go, ar + ar_go
        if aw_go and w_go:  # AW and W always go together here
            taken_w.append(cycle)
        if ar_go:
            taken_r.append(cycle)
    raise AssertionError("back-to-back accesses did not finish")


def test_back_to_back_register_writes_land_by_their_response_and_read_back():
    """Setup writes back to back (``START_PC`` and ``WATCHDOG`` twice, ``PROG_LEN``), then
    ``CTRL.start`` straight after the last, then reads of those registers back to back,
    the first raised as the last ``BVALID`` shows. Each write has reached the core by the
    cycle its ``BVALID`` shows and ``start`` pulses in the ``CTRL`` write's ``BVALID``
    cycle; each read returns its register's last written value, never an older one or
    its neighbour's; the run uses the last values (an older ``PROG_LEN`` or ``WATCHDOG``
    ends it with an error, an older ``START_PC`` runs an illegal instruction) and matches
    the ISS, cycles included (bus time is not counted). The bus timing is
    ``BUS_LATENCY`` throughout."""
    dut = NepTop(CFG)
    cpu = dut.cpu
    prog = busy_program(40, repeats=3)
    iss = Machine(CFG)
    iss.write_program(EXTRA_PC, prog)
    iss.prog_len, iss.watchdog = EXTRA_PC + len(prog), len(prog)  # the least that halts
    run = iss.run(EXTRA_PC)
    assert run.error == ErrorCode.OK and run.instructions == len(prog)
    setup = [("IRQ_ENABLE", 0b01), ("START_PC", 0), ("WATCHDOG", 1),
             ("PROG_LEN", iss.prog_len), ("WATCHDOG", iss.watchdog), ("START_PC", EXTRA_PC),
             ("CTRL", 1)]
    reads = ["WATCHDOG", "START_PC", "START_PC", "PROG_LEN", "IRQ_ENABLE"]
    want = {"WATCHDOG": iss.watchdog, "START_PC": EXTRA_PC, "PROG_LEN": iss.prog_len,
            "IRQ_ENABLE": 0b01}
    ports = {"START_PC": cpu.start_pc, "PROG_LEN": cpu.prog_len, "WATCHDOG": cpu.watchdog}

    async def body(ctx, dut, bus):
        await bus.writes(p for i, word in enumerate(prog)
                         for p in word_writes("program", EXTRA_PC + i, word))
        await bus.writes(word_writes("program", 0, ILLEGAL))  # run by an old START_PC

        def on_b(i):
            name, value = setup[i]
            if name == "CTRL":
                assert ctx.get(cpu.start) and not ctx.get(cpu.busy), "start not in B's cycle"
            elif name in ports:
                assert ctx.get(ports[name]) == value, f"write {i} ({name}) not landed by B"

        taken_w, b_at, taken_r, r_at = await _back_to_back(
            ctx, dut.axi, [(reg(n), v) for n, v in setup], [reg(n) for n in reads], on_b)
        assert len(taken_w) == len(b_at) == len(setup) and len(taken_r) == len(reads)
        assert [b - t for b, t in zip(b_at, taken_w)] == [BUS_LATENCY] * len(setup)
        assert [b - a for a, b in zip(b_at, b_at[1:])] == [BUS_LATENCY] * (len(setup) - 1)
        assert [r[0] - t for r, t in zip(r_at, taken_r)] == [BUS_LATENCY] * len(reads)
        assert [(d, resp) for _, d, resp in r_at] == [(want[n], OKAY) for n in reads]
        await _wait_irq(ctx, dut)
        got = {n: await bus.ok_read(reg(n))
               for n in ("ERROR", "FAULT_PC", "INSTRUCTIONS", "CYCLES")}
        assert got == {"ERROR": run.error, "FAULT_PC": run.fault_pc or 0,
                       "INSTRUCTIONS": run.instructions, "CYCLES": run.cycles}

    simulate(body, dut)


async def _wait_irq(ctx, dut, *, limit=20000):
    for _ in range(limit):
        if ctx.get(dut.irq):
            return
        await ctx.tick()
    raise AssertionError(f"no interrupt within {limit} cycles")


async def _run(ctx, dut, bus, pc):
    await bus.ok_write(reg("START_PC"), pc)
    await bus.ok_write(reg("CTRL"), 1)
    await _wait_irq(ctx, dut)


async def _compare(bus, iss, run, label):
    """Registers and the scratchpad (read through the bus) against the ISS."""
    got = {n: await bus.ok_read(reg(n)) for n in ("STATUS", "ERROR", "FAULT_PC", "RESULT",
                                                 "VL", "VN", "INSTRUCTIONS", "IRQ_STATUS")}
    want = {"STATUS": 0b110 if run.error else 0b010, "ERROR": int(run.error),
            "FAULT_PC": run.fault_pc or 0, "RESULT": iss.result, "VL": iss.vl, "VN": iss.vn,
            "INSTRUCTIONS": run.instructions, "IRQ_STATUS": 0b11 if run.error else 0b01}
    assert got == want, label
    raw = [await bus.ok_read(MAP.address("scratch", i)) for i in range(CFG.scratch_depth)]
    rtl = np.array(raw, np.uint16).view(np.int16)
    assert np.array_equal(rtl, iss.scratch), f"{label}: scratch differs at " \
        f"{np.flatnonzero(rtl != iss.scratch)[:8].tolist()}"


def test_image_loaded_and_run_through_the_bus_matches_the_iss():
    image = small_image()
    iss = Machine(CFG)
    iss.load(image)
    rng = np.random.default_rng(2)

    async def body(ctx, dut, bus):
        await bus.writes(image_writes(image))
        for name, values in inputs(rng, image).items():
            iss.write_scratch(image.region(name).addr, values)
            await bus.writes(scratch_writes(image.region(name).addr, values))
        await bus.ok_write(reg("IRQ_ENABLE"), 0b01)
        pc = image.entry("arbitrate")
        run = iss.run(pc)
        await _run(ctx, dut, bus, pc)
        assert ctx.get(dut.irq)
        await _compare(bus, iss, run, "arbitrate")
        await bus.ok_write(reg("IRQ_STATUS"), 0b10)  # writing 0 to a bit leaves it
        assert ctx.get(dut.irq)
        await bus.ok_write(reg("IRQ_STATUS"), 0b01)
        assert not ctx.get(dut.irq)
        assert await bus.ok_read(reg("IRQ_STATUS")) == 0

        # During a run windows are refused and change nothing; registers answer.
        prog = busy_program(40, repeats=3)
        iss.write_program(EXTRA_PC, prog)
        iss.prog_len = EXTRA_PC + len(prog) + 1
        await bus.writes(p for i, w in enumerate(prog)
                         for p in word_writes("program", EXTRA_PC + i, w))
        await bus.writes(word_writes("program", EXTRA_PC + len(prog), ILLEGAL))
        iss.write_program(EXTRA_PC + len(prog), [ILLEGAL])
        await bus.ok_write(reg("PROG_LEN"), iss.prog_len)
        iss.write_scratch(100, rng.integers(-32768, 32768, 40))
        await bus.writes(scratch_writes(100, iss.scratch[100:140]))
        run = iss.run(EXTRA_PC)
        await bus.ok_write(reg("START_PC"), EXTRA_PC)
        await bus.ok_write(reg("CTRL"), 1)
        assert await bus.ok_read(reg("STATUS")) == 0b001
        assert await bus.write(MAP.address("scratch", 101), 0x5555) == SLVERR
        assert await bus.read(MAP.address("scratch", 101)) == (0, SLVERR)
        assert await bus.read(MAP.address("params", 0, 2)) == (0, SLVERR)
        assert await bus.write(MAP.address("constants", 0, 1), 0) == SLVERR
        await _wait_irq(ctx, dut)
        await _compare(bus, iss, run, "long run")

        # An illegal instruction: an error run, both causes; soft reset back to idle.
        bad = EXTRA_PC + len(prog)
        await bus.ok_write(reg("IRQ_STATUS"), 0b11)
        await bus.ok_write(reg("IRQ_ENABLE"), 0b10)
        run = iss.run(bad)
        await _run(ctx, dut, bus, bad)
        assert run.error == ErrorCode.ILLEGAL_OPCODE
        await _compare(bus, iss, run, "illegal opcode")
        await bus.ok_write(reg("CTRL"), 0b11)  # soft reset wins over start
        assert await bus.ok_read(reg("STATUS")) == 0
        assert await bus.ok_read(reg("ERROR")) == ErrorCode.ILLEGAL_OPCODE
        assert await bus.ok_read(reg("CTRL")) == 0

    simulate(body)


def test_banked_memories_loaded_and_run_through_the_bus_match_the_iss():
    """``NepTop`` with its weight and parameter memories in banks of 32 words (the image's
    110 stream words and 109 parameter rows span 4 banks each): the image loaded through
    the bus, every step run; registers, ``CYCLES`` (the cycle model's
    ``STREAM_READ_LATENCY``) and the scratchpad equal the ISS's, and a word on each side
    of every bank boundary the image crosses reads back through its window."""
    image = small_image()
    bank = 32
    assert len(image.weights) > 3 * bank and len(image.params) > 3 * bank
    iss = Machine(CFG)
    iss.load(image)
    rng = np.random.default_rng(4)

    async def body(ctx, dut, bus):
        await bus.writes(image_writes(image))
        for window, words in (("weights", image.weights), ("params", image.params)):
            parts = MAP.window(window).parts
            for i in sorted({i for b in range(bank, len(words), bank) for i in (b - 1, b)}):
                got = [await bus.ok_read(MAP.address(window, i, k)) for k in range(parts)]
                assert MAP.window(window).join(got) == words[i], (window, i)
        await bus.ok_write(reg("IRQ_ENABLE"), 0b01)
        for step in ("arbitrate", "encoder_fast", "encoder_slow", "predictor", "joint"):
            for name, values in inputs(rng, image).items():
                iss.write_scratch(image.region(name).addr, values)
                await bus.writes(scratch_writes(image.region(name).addr, values))
            run = iss.run(image.entry(step))
            await _run(ctx, dut, bus, image.entry(step))
            assert await bus.ok_read(reg("CYCLES")) == run.cycles, step
            await _compare(bus, iss, run, step)
            await bus.ok_write(reg("IRQ_STATUS"), 0b11)

    simulate(body, NepTop(CFG, bank_depth=bank))


def test_every_window_decodes_its_last_word_and_part_and_refuses_one_past():
    """The window decode (one-hot over the disjoint windows): in every window the last
    word's last part reads back what was written, and the word one past the depth and
    the part one past the word's (where the span or stride leaves room for them) answer
    SLVERR, between accesses to the other windows."""
    rng = np.random.default_rng(3)

    async def body(ctx, dut, bus):
        for w in MAP.windows:
            last = w.depth - 1
            word = int.from_bytes(rng.bytes(64), "little") & ((1 << w.word_bits) - 1)
            await bus.writes(word_writes(w.name, last, word))
            for other in MAP.windows:  # a read elsewhere between write and read-back
                if other is not w:
                    await bus.ok_read(MAP.address(other.name, 0, other.parts - 1))
            got = await bus.ok_read(MAP.address(w.name, last, w.parts - 1))
            assert got == w.split(word)[-1], w.name
            past = []
            if w.depth * w.stride < w.span:
                past.append(w.base + w.depth * w.stride)
            if 4 * w.parts < w.stride:
                past.append(w.base + last * w.stride + 4 * w.parts)
            for addr in past:
                assert await bus.read(addr) == (0, SLVERR), (w.name, hex(addr))
                assert await bus.write(addr, 0xFFFF_FFFF) == SLVERR, (w.name, hex(addr))
            assert await bus.ok_read(MAP.address(w.name, last, w.parts - 1)) == got, w.name

    simulate(body)


def test_one_address_bit_off_a_window_or_register_is_refused_and_changes_nothing():
    """Every address one bit off the last part of a window's word 0 (a bit above the
    span) or off a writable register (a bit above the registers' offsets), where that is
    no mapped address, is refused for reads and writes and changes nothing: the decode
    compares the whole address for every select, though the fields under a window's
    select (index, part, last) are decoded from fewer bits."""
    rng = np.random.default_rng(5)
    width = MAP.addr_width
    targets = [MAP.address(w.name, 0, w.parts - 1) for w in MAP.windows]
    for r in MAP.registers:
        if r.access == Access.RW:
            targets.append(r.offset)
    span_of = {MAP.address(w.name, 0, w.parts - 1): w.span for w in MAP.windows}
    off = sorted({t ^ 1 << j for t in targets for j in range(width)
                  if 1 << j >= span_of.get(t, 0x100) and MAP.decode(t ^ 1 << j) is None})
    assert len(off) > 40

    async def body(ctx, dut, bus):
        words = {w.name: int.from_bytes(rng.bytes(64), "little") & ((1 << w.word_bits) - 1)
                 for w in MAP.windows}
        for name, word in words.items():
            await bus.writes(word_writes(name, 0, word))
        rw = [r for r in MAP.registers if r.access == Access.RW]
        for r in rw:
            await bus.ok_write(r.offset, 0x5A5A_5A5A)
        for addr in off:
            assert await bus.write(addr, 0xFFFF_FFFF) == SLVERR, hex(addr)
            assert await bus.read(addr) == (0, SLVERR), hex(addr)
        for w in MAP.windows:
            parts = [await bus.ok_read(MAP.address(w.name, 0, k)) for k in range(w.parts)]
            assert parts == w.split(words[w.name]), w.name
        for r in rw:
            assert await bus.ok_read(r.offset) == 0x5A5A_5A5A & r.mask, r.name

    simulate(body)
