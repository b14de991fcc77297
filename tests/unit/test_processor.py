"""Processor in the Amaranth simulator against the ISS (``compiler.iss.Machine``).

Every run is mirrored: the same host writes go to the ISS and to the RTL, both run the
same program, and the whole scratchpad, ``RESULT``/``ERROR``/``FAULT_PC``, ``VL``/``VN``
and ``SYNC_COUNT`` must agree bit for bit, instruction counts exactly, cycles exactly
without wait states and within 5% with them.
"""

import dataclasses

import numpy as np
import pytest
from amaranth import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In
from amaranth.sim import Simulator

from compiler.compile import compile_model
from compiler.isa import (
    ALU_LATENCY,
    ENGINE_LATENCY,
    ISSUE_CYCLES,
    LSTM_TAIL_CYCLES,
    LUT_LATENCY,
    RUN_START_CYCLES,
    STREAM_READ_LATENCY,
    Descriptor,
    ErrorCode,
    Instruction,
    Mode,
    Op,
    ProcessorConfig,
    constant_ok,
    decode,
    encode,
    instruction_cycles,
    pack_constant,
)
from compiler.iss import Machine
from golden.model import ModelConfig, QuantConfig, random_float_model
from golden.quantize import quantize_model
from golden.weights import Encoding
from hw.activation_lut import LATENCY as ACTIVATION_LUT_LATENCY
import hw.processor
from hw.banked_ram import BankedRam
from hw.lstm_cell import LstmCell
from hw.processor import (
    CELL_TAIL_CYCLES,
    DESC_FIELDS,
    DESC_RESERVED_PARTS,
    HostMem,
    Processor,
)
from hw.vector_alu import LATENCY as VECTOR_ALU_LATENCY
from sim import toolchain
from sim.harness import PARAM_SALT, WEIGHT_SALT, serve_with_wait_states
from sim.job import CORRUPTIONS, corrupt, make_job
from sim.perf_model import PIPELINE_LATENCY
from sim.pysim import record_requests

CFG = ProcessorConfig(lanes=8, program_depth=128, weight_depth=1024, param_depth=256,
                      scratch_depth=512, desc_depth=16, const_depth=8, max_rows=64,
                      max_cols=64)
#: Words per bank of the bench's memories: 8 weight banks, 2 parameter banks.
BANK_DEPTH = 128
STEPS = ("arbitrate", "encoder_fast", "encoder_slow", "predictor", "joint")


class Bench(wiring.Component):
    """``Processor`` with weight and parameter memories answering as ``NepTop``'s,
    ``STREAM_READ_LATENCY`` cycles after a request (``BankedRam``, here in banks of
    ``BANK_DEPTH`` words), and refusing requests at random (``wait_level``/256 per cycle,
    LFSRs seeded from ``wait_seed`` at each start, as in ``sim.harness``)."""

    def __init__(self, config: ProcessorConfig):
        self.cpu = Processor(config=config)
        self.weight_mem = BankedRam(width=config.word_bits, depth=config.weight_depth,
                                    bank_depth=BANK_DEPTH)
        self.param_mem = BankedRam(width=72, depth=config.param_depth, bank_depth=BANK_DEPTH)
        super().__init__({"wait_level": In(8), "wait_seed": In(16)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.cpu = cpu = self.cpu
        m.submodules.weight_mem, m.submodules.param_mem = self.weight_mem, self.param_mem
        for prefix, mem, salt in (("w", self.weight_mem, WEIGHT_SALT),
                                  ("p", self.param_mem, PARAM_SALT)):
            serve_with_wait_states(m, cpu, prefix, addr=mem.raddr, en=mem.ren, data=mem.rdata,
                                   seed=self.wait_seed ^ salt, load=cpu.start,
                                   wait_level=self.wait_level, latency=STREAM_READ_LATENCY)
        return m


class Rig:
    """Mirrors host writes into an ISS ``Machine`` and the simulated ``Processor``, runs
    both and compares them. Records ``(label, iss_cycles, rtl_cycles)`` per clean run."""

    def __init__(self, ctx, bench: Bench, config: ProcessorConfig):
        self.ctx, self.bench, self.cpu = ctx, bench, bench.cpu
        self.iss = Machine(config)
        self.config = config
        self.cycles: list[tuple[str, int, int]] = []

    def _mem(self, mem, addr, values):
        cell = mem.cell if isinstance(mem, BankedRam) else lambda a: mem.data[a]
        for i, v in enumerate(values):
            self.ctx.set(cell(addr + i), int(v))

    def program(self, addr, instructions):
        words = [encode(i) if isinstance(i, Instruction) else i for i in instructions]
        self.iss.write_program(addr, words)
        self._mem(self.cpu.program_mem, addr, words)

    async def _host_write(self, mem, index, word, part=0):
        ctx, cpu = self.ctx, self.cpu
        ctx.set(cpu.host_mem, mem)
        ctx.set(cpu.host_addr, index)
        ctx.set(cpu.host_part, part)
        ctx.set(cpu.host_wdata, word)
        ctx.set(cpu.host_we, 1)
        await ctx.tick()
        ctx.set(cpu.host_we, 0)

    async def host_read(self, mem, index):
        """Word ``index`` of ``mem`` through the host port (``host_rdata`` two cycles after
        ``host_re``)."""
        ctx, cpu = self.ctx, self.cpu
        ctx.set(cpu.host_mem, mem)
        ctx.set(cpu.host_addr, index)
        ctx.set(cpu.host_re, 1)
        await ctx.tick()
        ctx.set(cpu.host_re, 0)
        await ctx.tick()
        return ctx.get(cpu.host_rdata)

    async def descriptor(self, index, desc):
        """Through the host port, as the host block writes it, a 32-bit part at a time:
        the core records whether each part has a reserved bit set."""
        raw = desc.pack() if isinstance(desc, Descriptor) else bytes(desc)
        for k in range(len(raw) // 4):
            await self.descriptor_part(index, k, raw[4 * k:4 * k + 4])

    async def descriptor_part(self, index, k, raw):
        """Part ``k`` (4 bytes) of descriptor ``index``, the rest of it unchanged. The
        port's bits above the part's 32 are ones, which the core must ignore."""
        old = self.iss.descriptors[index]
        self.iss.write_descriptor(index, old[:4 * k] + bytes(raw) + old[4 * k + 4:])
        ones = ((1 << len(self.cpu.host_wdata)) - 1) & ~0xFFFF_FFFF
        await self._host_write(HostMem.DESCRIPTORS, index,
                               int.from_bytes(raw, "little") | ones, part=k)

    async def program_word(self, index, word):
        """One program word through the host port."""
        self.iss.write_program(index, [word])
        await self._host_write(HostMem.PROGRAM, index, word)

    async def constant(self, index, word):
        """Through the host port: the core records each constant's validity as it is written."""
        self.iss.write_constant(index, word)
        await self._host_write(HostMem.CONSTANTS, index, word)

    def weights(self, addr, words):
        self.iss.write_weights(addr, words)
        self._mem(self.bench.weight_mem, addr, words)

    def params(self, addr, records):
        self.iss.write_params(addr, records)
        self._mem(self.bench.param_mem, addr, records)

    def scratch(self, addr, values):
        self.iss.write_scratch(addr, values)
        self._mem(self.cpu.scratch_mem, addr, [int(v) & 0xFFFF for v in np.ravel(values)])

    def registers(self, **regs):
        for name, value in regs.items():
            setattr(self.iss, name, value)
            self.ctx.set(getattr(self.cpu, name), value)

    async def load(self, image):
        cpu = self.cpu
        self.iss.load(image)
        for i, word in enumerate(image.constants):
            await self.constant(i, word)
        self._mem(cpu.program_mem, 0, image.program)
        self._mem(self.bench.weight_mem, 0, image.weights)
        self._mem(self.bench.param_mem, 0, image.params)
        for i, desc in enumerate(image.descriptors):
            await self.descriptor(i, desc)
        for addr, values in image.scratch_init:
            self._mem(cpu.scratch_mem, addr, [int(v) & 0xFFFF for v in values])
        for name, value in (("prog_len", len(image.program)),
                            ("desc_count", len(image.descriptors)),
                            ("const_count", len(image.constants))):
            self.ctx.set(getattr(cpu, name), value)
        self.ctx.set(cpu.watchdog, self.iss.watchdog)

    def read_scratch(self):
        mem = self.cpu.scratch_mem
        raw = np.array([self.ctx.get(mem.data[i]) for i in range(self.config.scratch_depth)])
        return raw.astype(np.uint16).view(np.int16)

    async def run_rtl(self, pc, label="", *, limit=10000):
        """Start the RTL alone at ``pc`` and wait for ``done`` (never a hang)."""
        ctx, cpu = self.ctx, self.cpu
        ctx.set(cpu.start_pc, pc)
        ctx.set(cpu.start, 1)
        await ctx.tick()
        ctx.set(cpu.start, 0)
        for _ in range(limit):
            await ctx.tick()
            if ctx.get(cpu.done):
                break
        else:
            raise AssertionError(f"{label}: not done within {limit} cycles")
        assert not ctx.get(cpu.busy)

    async def run(self, pc, label="", *, unspecified=None, exact_cycles=True):
        """Run at ``pc`` on both; ``unspecified`` is a scratch range not compared (the
        destination after an engine error, ``docs/isa.md`` 4)."""
        ctx, cpu = self.ctx, self.cpu
        iss = self.iss.run(pc)
        await self.run_rtl(pc, label, limit=40 * iss.cycles + 200)
        got = {n: ctx.get(getattr(cpu, n)) for n in ("error", "result", "vl", "vn",
                                                     "sync_count", "instructions")}
        want = {"error": int(iss.error), "result": self.iss.result, "vl": self.iss.vl,
                "vn": self.iss.vn, "sync_count": self.iss.sync_count,
                "instructions": iss.instructions}
        if iss.error:
            got["fault_pc"], want["fault_pc"] = ctx.get(cpu.fault_pc), iss.fault_pc
        assert got == want, f"{label}: registers {got} != ISS {want}"
        rtl, ref = self.read_scratch(), self.iss.scratch.copy()
        if unspecified is not None:
            rtl[slice(*unspecified)] = ref[slice(*unspecified)]
        bad = np.flatnonzero(rtl != ref)
        assert bad.size == 0, (f"{label}: scratch differs at {bad[:8].tolist()}: "
                               f"RTL {rtl[bad[:8]].tolist()} ISS {ref[bad[:8]].tolist()}")
        if not iss.error:
            cycles = ctx.get(cpu.cycles)
            assert ctx.get(cpu.macs) + ctx.get(cpu.zero_acts) == iss.macs, label
            if exact_cycles:
                assert cycles == iss.cycles, f"{label}: {cycles} cycles, ISS {iss.cycles}"
            self.cycles.append((label, iss.cycles, cycles))
        return iss


def simulate(body, config=CFG, *, wait_level=0, seed=1, watch=None):
    """Run ``await body(rig)`` in a fresh simulation; return the rig. ``watch(ctx, bench)``,
    if given, runs beside it as a background testbench."""
    bench = Bench(config)
    out = {}

    async def testbench(ctx):
        ctx.set(bench.wait_level, wait_level)
        ctx.set(bench.wait_seed, seed)
        rig = Rig(ctx, bench, config)
        await body(rig)
        out["rig"] = rig

    sim = Simulator(bench)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    if watch is not None:
        async def watcher(ctx):
            await watch(ctx, bench)

        sim.add_testbench(watcher, background=True)
    sim.run()
    return out["rig"]


# ---------------------------------------------------------------------------- layout


def test_descriptor_fields_match_the_compiler_layout():
    desc = Descriptor(stream_base=0x11223344, n_words=0x55667788, param_base=0x0A0B0C0D,
                      nnz=0x01020304, crc_stream=0xDEADBEEF, crc_params=0xCAFEF00D,
                      rows=0x1234, cols=0x5678, split=0x0F0E, encoding=2, mode=3,
                      const_index=0x42, cell_frac_bits=13, codebook=tuple(range(-8, 8)))
    word = int.from_bytes(desc.pack(), "little")
    for name, (lo, width) in DESC_FIELDS.items():
        value = (word >> lo) & ((1 << width) - 1)
        if name == "codebook":
            assert value.to_bytes(16, "little") == bytes(c & 0xFF for c in desc.codebook)
        elif name.startswith("reserved"):
            assert value == 0
        else:
            assert value == getattr(desc, name), name


# ---------------------------------------------------------------------------- models


def small_model(quant: QuantConfig, **sizes):
    base = dict(feature_dim=8, fast_hidden=4, slow_hidden=6, enc_dim=6, arbitrator_hidden=4,
                pred_embed=4, pred_hidden=4, joint_dim=6)
    base.update(sizes)
    mc = ModelConfig(vocabulary=("<b>", "a", "b", "c", "d"), quant=quant, **base)
    rng = np.random.default_rng(5)
    fm = random_float_model(mc, seed=3)
    return quantize_model(fm, [rng.standard_normal((40, mc.feature_dim))], quant=quant)


MODELS = {
    "int4-50-tanh": (QuantConfig(weight_encoding="int4", sparsity=0.5), {}),
    "int8-50-cell10-relu": (QuantConfig(sparsity=0.5, cell_frac_bits=10),
                            {"joint_activation": "relu"}),
    "codebook-50-cell14": (QuantConfig(weight_encoding="codebook4", sparsity=0.5,
                                       cell_frac_bits=14), {}),
}


async def frames(rig, image, n_frames, seed):
    """Greedy on-device decoding: state stays on chip; every step compared."""
    rng = np.random.default_rng(seed)
    region = image.region
    F = region("feat").length
    for t in range(n_frames):
        rig.scratch(region("feat").addr, np.clip(rng.normal(0, 50, F), -128, 127).astype(int))
        rig.scratch(region("backlog").addr, [int(rng.integers(0, 128))])
        await rig.run(image.entry("arbitrate"), f"f{t} arbitrate")
        branch = (rig.iss.result + t) % 2  # the arbitrator's pick, forced to switch
        step = "encoder_slow" if branch else "encoder_fast"
        await rig.run(image.entry(step), f"f{t} {step}")
        rig.scratch(region("token").addr, [int(rng.integers(0, 5))])
        await rig.run(image.entry("predictor"), f"f{t} predictor")
        await rig.run(image.entry("joint"), f"f{t} joint")


@pytest.mark.parametrize("fuse", [False, True], ids=["unfused", "fused"])
@pytest.mark.parametrize("name", list(MODELS))
def test_compiled_steps_match_the_iss(name, fuse):
    quant, sizes = MODELS[name]
    image = compile_model(small_model(quant, **sizes), CFG, fuse_lstm=fuse)
    assert (Op.LSTM in {decode(w).op for w in image.program}) == fuse

    async def body(rig):
        await rig.load(image)
        await frames(rig, image, 3, seed=len(name))

    rig = simulate(body)
    steps = {label.split()[1] for label, _, _ in rig.cycles}
    assert steps == set(STEPS)
    iss, rtl = sum(c[1] for c in rig.cycles), sum(c[2] for c in rig.cycles)
    assert abs(rtl - iss) <= 0.05 * iss


@pytest.mark.parametrize("fuse", [False, True], ids=["unfused", "fused"])
def test_wait_states_change_timing_not_results(fuse):
    image = compile_model(small_model(MODELS["int4-50-tanh"][0]), CFG, fuse_lstm=fuse)

    async def body(rig):
        await rig.load(image)
        rng = np.random.default_rng(3)
        for step in STEPS:
            feat = image.region("feat")
            rig.scratch(feat.addr, rng.integers(-128, 128, feat.length))
            await rig.run(image.entry(step), step, exact_cycles=False)

    rig = simulate(body, wait_level=160, seed=7)
    slower = [(label, iss, rtl) for label, iss, rtl in rig.cycles if rtl > iss]
    assert len(rig.cycles) == len(STEPS) and len(slower) == len(STEPS)


# ---------------------------------------------------------------------------- directed

I = Instruction  # noqa: E741


def rand16(rng, n):
    v = rng.integers(-32768, 32768, n)
    v[:4] = (-32768, 32767, 0, -1)
    return v


def test_vector_instructions_match_the_iss():
    """Every element-wise op, ARGMAX (with ties), LOADROW and SYNC, in place and not."""
    rng = np.random.default_rng(2)
    consts = [(int(rng.integers(1 << 30, 1 << 31)), int(s)) for s in (-31, -9, 0, 7)]
    consts.append((0, 0))

    async def body(rig):
        for i, (mult, shift) in enumerate(consts):
            await rig.constant(i, pack_constant(mult, shift))
        rig.registers(const_count=len(consts), prog_len=CFG.program_depth)
        for trial in range(3):
            n = int(rng.integers(1, 20))
            rig.scratch(0, rand16(rng, 64))
            rig.scratch(64, rand16(rng, 64))
            rig.scratch(128, rng.integers(-2, 3, 32))  # small values: ARGMAX ties
            rig.scratch(160, [int(rng.integers(0, 3))])  # LOADROW index
            k = int(rng.integers(0, len(consts)))
            prog = [I(Op.SETVL, a=n, b=3), I(Op.VCOPY, d=200, a=0),
                    I(Op.VADD, d=220, a=0, b=64), I(Op.VADD, d=0, a=0, b=64),
                    I(Op.VMUL, p=int(rng.integers(0, 32)), d=240, a=64, b=200),
                    I(Op.VMUL, p=int(rng.integers(0, 32)), d=64, a=64, b=64),
                    I(Op.VSHIFT, p=int(rng.integers(0, 16)), d=260, a=200),
                    I(Op.VSHIFT, p=0x40 | int(rng.integers(0, 16)), d=280, a=200),
                    I(Op.VSHIFT, p=0x20 | int(rng.integers(0, 32)), d=300, a=200),
                    I(Op.VSHIFT, p=0x60 | int(rng.integers(0, 32)), d=200, a=200),
                    I(Op.VREQ8, p=k, d=320, a=220),
                    I(Op.VMULQ8, p=int(rng.integers(0, len(consts))), d=340, a=220, b=240),
                    I(Op.SIGMOID, d=360, a=0), I(Op.TANH, d=0, a=0),
                    I(Op.ARGMAX, d=380, a=128), I(Op.SYNC),
                    I(Op.LOADROW, d=400, a=0, b=160), I(Op.HALT)]
            rig.program(0, prog)
            await rig.run(0, f"vector trial {trial}")
        assert rig.iss.sync_count == 3

    simulate(body)


async def layer(rig, job, *, index=0, base=0, params_at=None, **fields):
    """Write ``job``'s stream at ``base``, its records at ``params_at`` (default ``base``)
    and descriptor ``index`` for it (``fields`` override the descriptor's)."""
    params_at = base if params_at is None else params_at
    rig.weights(base, job.words)
    rig.params(params_at, job.params)
    f = job.fields()
    desc = dict(stream_base=base, n_words=f["n_words"], param_base=params_at, nnz=f["nnz"],
                crc_stream=f["crc_stream"], crc_params=f["crc_params"], rows=f["rows"],
                cols=f["cols"], split=f["cols"], encoding=f["encoding"], mode=Mode.INT8,
                codebook=job.header.codebook)
    desc.update(fields)
    await rig.descriptor(index, Descriptor(**desc))
    return desc


def test_one_and_two_element_ends_next_to_narrow_matvecs():
    """The end of a vector (VL = 1, 2, 3) and of a MATVEC's activation load (1, 2 and 3
    columns) is flagged a cycle ahead: every vector op and MATVEC back to back, so each
    instruction starts the cycle after the one before finished. All bit-exact with the
    ISS, cycles exact."""
    rng = np.random.default_rng(13)
    widths = (1, 2, 3)
    jobs = [make_job(rng, rows=5 + c, cols=c, sparsity=0.0, encoding=Encoding.INT8,
                     lanes=8) for c in widths]
    vector_ops = [I(Op.VCOPY, d=200, a=0), I(Op.VADD, d=210, a=0, b=64),
                  I(Op.VMUL, p=3, d=220, a=64, b=200), I(Op.SIGMOID, d=230, a=0),
                  I(Op.VSHIFT, p=0x40 | 2, d=240, a=64), I(Op.ARGMAX, d=250, a=128),
                  I(Op.LOADROW, d=260, a=0, b=160)]

    async def body(rig):
        rig.registers(desc_count=len(jobs), prog_len=CFG.program_depth)
        for i, job in enumerate(jobs):
            await layer(rig, job, index=i, base=64 * i)
            rig.scratch(8 * i + 32, job.x)
        for n in widths:
            rig.scratch(0, rng.integers(-128, 128, 16))
            rig.scratch(64, rand16(rng, 16))
            rig.scratch(128, rng.integers(-2, 3, 4))  # small values: ARGMAX ties
            rig.scratch(160, [int(rng.integers(0, 2))])  # LOADROW index
            prog = [I(Op.SETVL, a=n, b=2)]
            for i, op in enumerate(vector_ops):
                prog += [op, I(Op.MATVEC, p=i % len(jobs), d=300 + 16 * i,
                               a=8 * (i % len(jobs)) + 32, b=0)]
            prog += [I(Op.ARGMAX, d=255, a=130), I(Op.HALT)]
            rig.program(0, prog)
            iss = await rig.run(0, f"VL {n} next to 1-3 column MATVECs")
            assert iss.error == ErrorCode.OK
            assert [e.instruction.op for e in iss.trace].count(Op.MATVEC) == len(vector_ops)
        got = rig.read_scratch()
        for i in range(len(vector_ops)):
            job = jobs[i % len(jobs)]
            assert np.array_equal(got[300 + 16 * i:300 + 16 * i + len(job.expected)],
                                  job.expected), f"MATVEC {i}"

    simulate(body)


def test_engine_errors_pass_through_and_the_next_start_recovers():
    rng = np.random.default_rng(4)
    good = make_job(rng, rows=12, cols=40, sparsity=0.5, encoding=Encoding.INT4, lanes=8)
    good8 = make_job(rng, rows=12, cols=40, sparsity=0.5, encoding=Encoding.INT8, lanes=8)
    seen = set()

    async def body(rig):
        rig.registers(desc_count=1, prog_len=CFG.program_depth)
        rig.scratch(0, good.x)
        rig.program(0, [I(Op.SETVL, a=2), I(Op.MATVEC, p=0, d=300, a=0, b=0), I(Op.HALT)])
        for kind in CORRUPTIONS:
            if kind == "out_mode":  # the sequencer never hands the engine a bad mode
                continue
            base = good8 if kind == "int8_low_delta" else good
            bad = corrupt(base, kind, CFG)
            desc = await layer(rig, bad, base=16)
            run = await rig.run(0, kind, unspecified=(300, 300 + desc["rows"]))
            seen.add(run.error)
            await layer(rig, base, base=16)
            await rig.run(0, f"after {kind}")
        # One column: the engine starts with the only activation read.
        narrow = make_job(rng, rows=5, cols=1, sparsity=0.0, encoding=Encoding.INT8, lanes=8)
        rig.scratch(0, narrow.x)
        await layer(rig, narrow, base=16)
        await rig.run(0, "one column")
        await layer(rig, narrow, base=16, cols=0, split=0)
        seen.add((await rig.run(0, "no columns", unspecified=(300, 305))).error)

    simulate(body)
    engine_codes = {ErrorCode(c) for c in range(1, 10)}
    assert engine_codes <= seen


def test_every_sequencer_error_halts_cleanly_with_its_pc_and_start_recovers():
    rng = np.random.default_rng(6)
    job = make_job(rng, rows=12, cols=40, sparsity=0.5, encoding=Encoding.INT4, lanes=8)
    consts = [pack_constant(1 << 30, -3), pack_constant(5, 0), pack_constant(1 << 30, 8)]
    seen = set()
    V = [I(Op.SETVL, a=4, b=4)]
    E = ErrorCode
    cases = [  # (expected code, program run at 0, registers)
        (E.ILLEGAL_OPCODE, [encode(I(Op.SETVL, a=4)), 0], {}),
        (E.ILLEGAL_OPCODE, [I(0x7E)], {}),
        (E.RESERVED_FIELD, [I(Op.HALT, p=1)], {}),
        (E.RESERVED_FIELD, V + [I(Op.VMUL, p=0x20, d=200, a=0, b=0)], {}),
        (E.RESERVED_FIELD, [I(Op.VSHIFT, p=0x80, d=200, a=0)], {}),
        (E.RESERVED_FIELD, [I(Op.VCOPY, d=200, a=0, b=1)], {}),
        (E.RESERVED_FIELD, [I(Op.SETVL, d=1)], {}),
        (E.RESERVED_FIELD, [I(Op.ARGMAX, p=2, d=250, a=0)], {}),
        (E.BAD_OPERAND, [I(Op.VSHIFT, p=16, d=200, a=0)], {}),
        (E.BAD_OPERAND, [I(Op.VADD, d=200, a=0, b=0)], {}),
        (E.BAD_OPERAND, [I(Op.ARGMAX, d=250, a=0)], {}),
        (E.BAD_OPERAND, V + [I(Op.VREQ8, p=3, d=200, a=0)], {}),
        (E.BAD_OPERAND, V + [I(Op.VREQ8, p=1, d=200, a=0)], {}),
        (E.BAD_OPERAND, V + [I(Op.VMULQ8, p=2, d=200, a=0, b=0)], {}),
        (E.BAD_OPERAND, [I(Op.SETVL, a=4), I(Op.LOADROW, d=200, a=0, b=160)], {}),
        (E.BAD_OPERAND, V + [I(Op.LOADROW, d=200, a=0, b=161)], {}),
        (E.SCRATCH_RANGE, V + [I(Op.VADD, d=510, a=0, b=0)], {}),
        (E.SCRATCH_RANGE, V + [I(Op.VCOPY, d=101, a=100)], {}),
        (E.SCRATCH_RANGE, V + [I(Op.VMUL, d=100, a=100, b=98)], {}),
        (E.SCRATCH_RANGE, V + [I(Op.LOADROW, d=10, a=0, b=160)], {}),
        (E.SCRATCH_RANGE, V + [I(Op.ARGMAX, d=250, a=510)], {}),
        (E.SCRATCH_RANGE, V + [I(Op.ARGMAX, d=512, a=0)], {}),
        (E.SCRATCH_RANGE, [I(Op.MATVEC, p=0, d=505, a=0, b=0)], {}),
        (E.SCRATCH_RANGE, [I(Op.MATVEC, p=0, d=300, a=490, b=0)], {}),
        (E.SCRATCH_RANGE, [I(Op.MATVEC, p=8, d=300, a=0, b=505)], {}),
        *[(E.BAD_DESCRIPTOR, [I(Op.MATVEC, p=i, d=300, a=0, b=0)], {})
          for i in (*range(1, 7), 10, 16)],
        # LSTM: 12 gate rows (H = 3) over [x (37); h (3)], state at d.
        (E.RESERVED_FIELD, [I(Op.LSTM, p=10, d=300, a=0, b=1)], {}),
        *[(E.BAD_DESCRIPTOR, [I(Op.LSTM, p=i, d=300, a=0)], {})
          for i in (0, 9, *range(11, 16), 16)],
        (E.BAD_DESCRIPTOR, [I(Op.LSTM, p=10, d=300, a=0)], {"const_count": 0}),
        (E.SCRATCH_RANGE, [I(Op.LSTM, p=10, d=507, a=0)], {}),
        (E.SCRATCH_RANGE, [I(Op.LSTM, p=10, d=300, a=480)], {}),
        (E.PC_OVERRUN, [I(Op.SETVL)], {"prog_len": 1}),
        (E.WATCHDOG, [I(Op.SYNC)] * 3 + [I(Op.HALT)], {"watchdog": 2}),
    ]

    async def body(rig):
        for i, k in enumerate(consts):
            await rig.constant(i, k)
        rig.scratch(0, rng.integers(-128, 128, 200))
        rig.scratch(160, [1, 9])  # LOADROW indices: in range, out of range
        d = await layer(rig, job, base=0)
        await layer(rig, job, index=8, base=0, split=30)
        bad = [dict(reserved=1), dict(mode=Mode.LSTM), dict(mode=4),
               dict(split=41), dict(stream_base=1024 - d["n_words"] + 1),
               dict(param_base=256 - 12 + 1)]
        for i, kw in enumerate(bad, start=1):
            await layer(rig, job, index=i, base=0, **kw)
        fused = dict(mode=Mode.LSTM, split=37, const_index=0, cell_frac_bits=9)
        await layer(rig, job, index=10, base=0, **fused)
        bad_lstm = [dict(const_index=1), dict(rows=14), dict(split=0), dict(split=36),
                    dict(cell_frac_bits=7), dict(cell_frac_bits=16)]
        for i, kw in zip((9, *range(11, 16)), bad_lstm):
            await layer(rig, job, index=i, base=0, **{**fused, **kw})
        defaults = dict(prog_len=CFG.program_depth, desc_count=16, const_count=len(consts),
                        watchdog=CFG.program_depth)
        good = [I(Op.SETVL, a=4), I(Op.VADD, d=200, a=0, b=8), I(Op.SYNC),
                I(Op.MATVEC, p=8, d=300, a=0, b=100), I(Op.ARGMAX, d=250, a=300),
                I(Op.LSTM, p=10, d=420, a=100), I(Op.HALT)]
        rig.program(100, good)
        for n, (code, prog, regs) in enumerate(cases):
            rig.registers(**defaults)
            rig.program(0, prog)
            rig.registers(**regs)
            run = await rig.run(0, f"case {n}")  # equal to the ISS, FAULT_PC included
            want_pc = {E.PC_OVERRUN: 1, E.WATCHDOG: 2}.get(code, len(prog) - 1)
            assert (run.error, run.fault_pc) == (code, want_pc), f"case {n}"
            seen.add(run.error)
            rig.registers(**defaults)
            await rig.run(100, f"recovery {n}")
        await rig.run(CFG.program_depth, "bad START_PC")  # PC_OVERRUN at the entry
        # An engine error in an LSTM leaves its state unspecified; the next run recovers.
        rig.registers(**defaults)
        await layer(rig, corrupt(job, "crc_params", CFG), index=10, base=0, **fused)
        assert (await rig.run(100, "LSTM CRC", unspecified=(420, 426))).error == E.CRC_PARAMS
        await layer(rig, job, index=10, base=0, **fused)
        await rig.run(100, "LSTM recovery")

    simulate(body)
    assert seen == {ErrorCode(c) for c in range(0x10, 0x17)}


#: DECODE's checks (``docs/isa.md`` 4.2, 4.3), one word each: (name, error, instruction,
#: the SETVL (VL, VN) that makes it fail, one that makes it pass or None when none does).
_E = ErrorCode
DECODE_ERRORS = [
    ("illegal opcode", _E.ILLEGAL_OPCODE, I(0x7E), (4, 4), None),
    ("zero word", _E.ILLEGAL_OPCODE, 0, (4, 4), None),
    ("reserved HALT p", _E.RESERVED_FIELD, I(Op.HALT, p=1), (4, 4), None),
    ("reserved SETVL d", _E.RESERVED_FIELD, I(Op.SETVL, d=1, a=4, b=4), (4, 4), None),
    ("reserved VMUL p bit", _E.RESERVED_FIELD, I(Op.VMUL, p=0x20, d=200, a=0, b=8),
     (4, 4), None),
    ("reserved LOADROW p", _E.RESERVED_FIELD, I(Op.LOADROW, p=1, d=200, a=0, b=160),
     (4, 4), None),
    ("VSHIFT left 16", _E.BAD_OPERAND, I(Op.VSHIFT, p=16, d=200, a=0), (4, 4), None),
    ("VL 0", _E.BAD_OPERAND, I(Op.VADD, d=200, a=0, b=8), (0, 4), (4, 4)),
    ("ARGMAX VL 0", _E.BAD_OPERAND, I(Op.ARGMAX, d=250, a=0), (0, 4), (4, 4)),
    ("LOADROW VL 0", _E.BAD_OPERAND, I(Op.LOADROW, d=200, a=0, b=160), (0, 4), (4, 4)),
    ("LOADROW VN 0", _E.BAD_OPERAND, I(Op.LOADROW, d=200, a=0, b=160), (4, 0), (4, 4)),
    ("constant index", _E.BAD_OPERAND, I(Op.VREQ8, p=3, d=200, a=0), (4, 4), None),
    ("constant value", _E.BAD_OPERAND, I(Op.VREQ8, p=1, d=200, a=0), (4, 4), None),
    ("VMULQ8 constant", _E.BAD_OPERAND, I(Op.VMULQ8, p=2, d=200, a=0, b=8), (4, 4), None),
    ("d range", _E.SCRATCH_RANGE, I(Op.VADD, d=506, a=0, b=8), (8, 1), (4, 1)),
    ("a range", _E.SCRATCH_RANGE, I(Op.VCOPY, d=200, a=506), (8, 1), (4, 1)),
    ("b range", _E.SCRATCH_RANGE, I(Op.VMULQ8, d=200, a=0, b=506), (8, 1), (4, 1)),
    ("d overlaps a", _E.SCRATCH_RANGE, I(Op.SIGMOID, d=104, a=100), (8, 1), (4, 1)),
    ("d overlaps b", _E.SCRATCH_RANGE, I(Op.VMUL, d=104, a=200, b=100), (8, 1), (4, 1)),
    ("ARGMAX a range", _E.SCRATCH_RANGE, I(Op.ARGMAX, d=250, a=506), (8, 1), (4, 1)),
    ("ARGMAX d range", _E.SCRATCH_RANGE, I(Op.ARGMAX, d=512, a=0), (4, 4), None),
    ("LOADROW table range", _E.SCRATCH_RANGE, I(Op.LOADROW, d=100, a=400, b=160),
     (4, 30), (4, 4)),
    ("LOADROW b range", _E.SCRATCH_RANGE, I(Op.LOADROW, d=200, a=0, b=512), (4, 4), None),
    # Before any run writes scratch[511], this index.
    ("LOADROW b at the end", _E.BAD_OPERAND, I(Op.LOADROW, d=0, a=8, b=511), (0, 4),
     (4, 4)),
    ("LOADROW d range", _E.SCRATCH_RANGE, I(Op.LOADROW, d=510, a=0, b=160), (4, 4), (2, 4)),
    ("LOADROW d overlaps the table", _E.SCRATCH_RANGE, I(Op.LOADROW, d=10, a=0, b=160),
     (4, 4), (2, 4)),
    # Each compare's edges: at the bound (passes) and one past (fails), VL near 0, near
    # and above the depth (512), fields near 0xFFFF whose sums wrap a 16-bit adder. Runs
    # over the LOADROW index at 160 copy in place.
    ("d one past, VL 1", _E.SCRATCH_RANGE, I(Op.VCOPY, d=511, a=0), (2, 1), (1, 1)),
    ("a one past, VL 511", _E.SCRATCH_RANGE, I(Op.ARGMAX, d=0, a=1), (512, 1), (511, 1)),
    ("VL above the depth", _E.SCRATCH_RANGE, I(Op.VCOPY, d=0, a=0), (513, 1), (512, 1)),
    ("VL 0xFFFF", _E.SCRATCH_RANGE, I(Op.VCOPY, d=0, a=0), (0xFFFF, 1), (512, 1)),
    ("b one past, VL 113", _E.SCRATCH_RANGE, I(Op.VMUL, d=200, a=200, b=400),
     (113, 1), (112, 1)),
    ("d 0xFFFF", _E.SCRATCH_RANGE, I(Op.VADD, d=0xFFFF, a=0, b=8), (1, 1), None),
    ("ARGMAX a 0xFFFF", _E.SCRATCH_RANGE, I(Op.ARGMAX, d=0, a=0xFFFF), (1, 1), None),
    ("ARGMAX d at the end", _E.BAD_OPERAND, I(Op.ARGMAX, d=511, a=0), (0, 1), (4, 1)),
    ("LOADROW b 0xFFFF", _E.SCRATCH_RANGE, I(Op.LOADROW, d=0, a=8, b=0xFFFF), (4, 4), None),
    ("LOADROW d one past", _E.SCRATCH_RANGE, I(Op.LOADROW, d=509, a=0, b=160), (4, 4),
     (3, 4)),
    ("LOADROW d 0xFFFF", _E.SCRATCH_RANGE, I(Op.LOADROW, d=0xFFFF, a=0, b=160), (1, 4),
     None),
    ("LOADROW table one past", _E.SCRATCH_RANGE, I(Op.LOADROW, d=0, a=8, b=160),
     (1, 505), (1, 504)),
    ("LOADROW VN 0xFFFF", _E.SCRATCH_RANGE, I(Op.LOADROW, d=0, a=8, b=160), (1, 0xFFFF),
     (1, 504)),
    ("LOADROW a 0xFFFF", _E.SCRATCH_RANGE, I(Op.LOADROW, d=0, a=0xFFFF, b=160), (1, 1),
     None),
    ("LOADROW table one into d", _E.SCRATCH_RANGE, I(Op.LOADROW, d=16, a=0, b=160),
     (1, 17), (1, 16)),
    ("LOADROW d one into the table", _E.SCRATCH_RANGE, I(Op.LOADROW, d=0, a=4, b=160),
     (5, 4), (4, 4)),
    ("a one into d, VL 1", _E.SCRATCH_RANGE, I(Op.VCOPY, d=101, a=100), (2, 1), (1, 1)),
    ("d one into a", _E.SCRATCH_RANGE, I(Op.SIGMOID, d=100, a=104), (5, 1), (4, 1)),
    ("b one into d", _E.SCRATCH_RANGE, I(Op.VMUL, d=104, a=300, b=100), (5, 1), (4, 1)),
    ("d one into b", _E.SCRATCH_RANGE, I(Op.VADD, d=100, a=300, b=104), (5, 1), (4, 1)),
    ("a one into d, VL 256", _E.SCRATCH_RANGE, I(Op.VCOPY, d=255, a=0), (256, 1),
     (255, 1)),
]


def test_decode_errors_in_every_placement_match_the_iss():
    """DECODE's checks are found in FETCH from the read-ahead word and VL, VN, VL * VN:
    each one placed as a run's first word, right after a SETVL that makes it fail (a
    SETVL that made it pass before), right after one that makes it pass (one that made
    it fail before) and after a MATVEC, which leaves the program port on it for long.
    Error, FAULT_PC and cycles equal the ISS's; a faulting run's busy cycles are the
    ISS's plus the faulting instruction's fetch and decode."""
    rng = np.random.default_rng(9)
    job = make_job(rng, rows=12, cols=40, sparsity=0.5, encoding=Encoding.INT4, lanes=8)
    consts = [pack_constant(1 << 30, -3), pack_constant(5, 0), pack_constant(1 << 30, 8)]

    def setvl(lengths):
        return I(Op.SETVL, a=lengths[0], b=lengths[1])

    async def body(rig):
        for i, k in enumerate(consts):
            await rig.constant(i, k)
        rig.registers(prog_len=CFG.program_depth, desc_count=16, const_count=len(consts),
                      watchdog=CFG.program_depth)
        rig.scratch(0, rng.integers(-128, 128, 512))
        rig.scratch(160, [1])  # LOADROW's indices, below every VN here
        rig.scratch(511, [1])
        await layer(rig, job, index=8, base=0, split=30)
        matvec = I(Op.MATVEC, p=8, d=300, a=0, b=100)
        for name, code, ins, fails, passes in DECODE_ERRORS:
            # (placement, instructions before, the error they give it; None: the ISS's)
            placements = [("first", [], None),
                          ("after SETVL failing", [setvl(passes or (0, 0)), setvl(fails)],
                           code),
                          ("after MATVEC failing", [setvl(fails), matvec], code)]
            if passes:
                placements += [("after SETVL passing", [setvl(fails), setvl(passes)],
                                _E.OK),
                               ("after MATVEC passing", [setvl(passes), matvec], _E.OK)]
            for where, prefix, want in placements:
                label = f"{name} {where}"
                rig.program(0, [*prefix, ins, I(Op.HALT)])
                run = await rig.run(0, label)  # error, FAULT_PC, registers, scratch
                assert want is None or run.error == want, label
                if run.error:
                    assert run.fault_pc == len(prefix), label
                    assert rig.ctx.get(rig.cpu.cycles) == run.cycles + ISSUE_CYCLES, label

    simulate(body)


def test_matvec_and_lstm_bounds_fault_one_past_the_edge_not_at_it():
    """Each descriptor sum and scratch range DESC checks, for MATVEC and LSTM, exactly at
    its bound (runs) and one past it (faults), and with 16- and 32-bit field values whose
    sums wrap a narrow adder: the code and FAULT_PC as the ISS's, BAD_DESCRIPTOR before
    SCRATCH_RANGE."""
    rng = np.random.default_rng(21)
    job = make_job(rng, rows=12, cols=40, sparsity=0.5, encoding=Encoding.INT4, lanes=8)
    f = job.fields()
    n_words, rows, depth = f["n_words"], f["rows"], CFG.scratch_depth
    top_w, top_p = CFG.weight_depth - n_words, CFG.param_depth - rows  # streams at the top
    E = ErrorCode
    OK, BAD, RANGE = E.OK, E.BAD_DESCRIPTOR, E.SCRATCH_RANGE
    wrap32 = 1 << 32
    # (descriptor fields, instruction fields, expected code) for both ops.
    common = [
        ({"stream_base": top_w}, {}, OK), ({"stream_base": top_w + 1}, {}, BAD),
        ({"stream_base": wrap32 - n_words}, {}, BAD),  # the 32-bit sum wraps to 0
        ({"stream_base": 1, "n_words": wrap32 - 1}, {}, BAD),
        ({"param_base": top_p}, {}, OK), ({"param_base": top_p + 1}, {}, BAD),
        ({"param_base": wrap32 - rows}, {}, BAD),
        ({"rows": 0xFFFF}, {}, BAD),
        ({"split": 41}, {}, BAD), ({"split": 0xFFFF}, {}, BAD),
        ({"split": 0xFFFF}, {"a": 0xFFFF}, BAD),  # the descriptor's check first
        ({"param_base": top_p + 1}, {"a": 0xFFFF, "d": 0xFFFF}, BAD),
    ]
    # MATVEC: split 30 from a, 10 from b, 12 rows to d.
    matvec = [
        ({}, {"a": depth - 30}, OK), ({}, {"a": depth - 29}, RANGE),
        ({}, {"a": 0xFFFF}, RANGE), ({"split": 1}, {"a": 0xFFFF, "b": 0}, RANGE),
        ({"split": 0}, {"a": depth, "b": 0}, OK), ({"split": 0}, {"a": depth + 1}, RANGE),
        ({}, {"b": depth - 10}, OK), ({}, {"b": depth - 9}, RANGE),
        ({"split": 39}, {"b": 0xFFFF}, RANGE),  # b + 1 wraps 16 bits
        ({"split": 40}, {"b": depth}, OK), ({"split": 40}, {"b": depth + 1}, RANGE),
        ({"split": 40}, {"b": 0xFFFF}, RANGE),
        ({}, {"d": depth - 12}, OK), ({}, {"d": depth - 11}, RANGE),
        ({}, {"d": 0x10000 - 11}, RANGE), ({}, {"d": 0xFFFF}, RANGE),
    ]
    # LSTM: 12 gate rows (H = 3) over [x (37) from a; h (3)], h and c (6) at d.
    lstm = [
        ({}, {"a": depth - 37}, OK), ({}, {"a": depth - 36}, RANGE),
        ({}, {"a": 0xFFFF}, RANGE),
        ({}, {"d": depth - 6}, OK), ({}, {"d": depth - 5}, RANGE),
        ({}, {"d": 0x10000 - 5}, RANGE), ({}, {"d": 0xFFFF}, RANGE),
        ({"split": 36}, {}, BAD), ({"split": 38}, {}, BAD),
        ({"split": 0xFFFD, "cols": 0}, {}, BAD),  # split + H wraps 16 bits to cols
        ({"split": 0xFFFC, "cols": 0xFFFF}, {}, RANGE),  # split + H == cols: a's range
        ({"split": 0xFFFD, "cols": 0xFFFF}, {}, BAD),
        ({"rows": 0xFFFC}, {}, BAD),
    ]
    ops = {Op.MATVEC: (dict(split=30), dict(d=300, a=0, b=100), matvec),
           Op.LSTM: (dict(mode=Mode.LSTM, split=37, const_index=0, cell_frac_bits=9),
                     dict(d=300, a=0), lstm)}
    seen = set()

    async def body(rig):
        await rig.constant(0, pack_constant(1 << 30, -3))
        rig.registers(prog_len=CFG.program_depth, desc_count=1, const_count=1)
        rig.scratch(0, rng.integers(-128, 128, depth))
        for base in (0, top_w):
            rig.weights(base, job.words)
        for base in (0, top_p):
            rig.params(base, job.params)
        for op, (fields, operands, cases) in ops.items():
            for n, (desc, ins, code) in enumerate(common + cases):
                await layer(rig, job, **{**fields, **desc})
                rig.program(0, [I(op, p=0, **{**operands, **ins}), I(Op.HALT)])
                label = f"{op.name} {desc} {ins}"
                run = await rig.run(0, label)  # the code and FAULT_PC as the ISS's
                assert run.error == code, label
                assert run.fault_pc == (None if code == OK else 0), label
                seen.add((op, code))

    simulate(body)
    assert seen == {(op, code) for op in ops for code in (OK, BAD, RANGE)}


async def _matvec_and_lstm_layers(rig, job, consts):
    """Constants ``consts``, and descriptors 0 (a Q3.12 MATVEC) and 1 (an LSTM: split 37,
    constant 2, 11 fraction bits) over ``job``'s layer."""
    for i, k in enumerate(consts):
        await rig.constant(i, k)
    rig.registers(desc_count=2, const_count=len(consts), prog_len=CFG.program_depth)
    await layer(rig, job, index=0, base=0, mode=Mode.Q3_12)
    await layer(rig, job, index=1, base=0, mode=Mode.LSTM, split=37, const_index=2,
                cell_frac_bits=11)


def test_vector_ops_next_to_matvec_and_lstm_share_the_requantizer():
    """The vector ALU borrows the engine's requantizer. Each element-wise op directly
    before and after a ``MATVEC`` and an ``LSTM``, each time to its own destination (the
    compiled steps only have them before one): ``VREQ8``/``VMULQ8`` use the requantizer
    right after the engine's last rows left it and right before its next start. All
    bit-exact with the ISS, cycles exact."""
    rng = np.random.default_rng(12)
    job = make_job(rng, rows=12, cols=40, sparsity=0.5, encoding=Encoding.INT4, lanes=8)
    consts = [pack_constant(int(rng.integers(1 << 30, 1 << 31)), s) for s in (-4, 0, 3)]
    vector_ops = [I(Op.VREQ8, p=0, a=300), I(Op.VMULQ8, p=1, a=300, b=0),
                  I(Op.VMUL, p=7, a=300, b=20), I(Op.VADD, a=300, b=20),
                  I(Op.VSHIFT, p=0x40 | 3, a=300), I(Op.VREQ8, p=2, a=420)]
    dests = (440, 456, 472, 488)  # before / after MATVEC, before / after LSTM

    async def body(rig):
        await _matvec_and_lstm_layers(rig, job, consts)
        rig.scratch(300, rng.integers(-3000, 3000, 12))  # read before the first MATVEC
        for op in vector_ops:
            rig.scratch(0, rng.integers(-128, 128, 100))
            rig.scratch(420, rng.integers(-300, 300, 6))  # LSTM state: h (3), c (3)
            at = [dataclasses.replace(op, d=d) for d in dests]
            prog = [I(Op.SETVL, a=12), at[0], I(Op.MATVEC, p=0, d=300, a=0, b=0), at[1],
                    I(Op.SETVL, a=3), at[2], I(Op.LSTM, p=1, d=420, a=0), at[3],
                    I(Op.HALT)]
            rig.program(0, prog)
            await rig.run(0, f"{op.op.name} around MATVEC/LSTM")
            for d in dests:
                assert np.any(rig.iss.scratch[d:d + 3] != 0), f"{op.op.name}: all zero"

    simulate(body)


def test_every_vector_op_right_after_every_kind_of_instruction():
    """The opcode's decodes are registers set in DECODE (``hw.processor``): each vector
    instruction directly after a ``MATVEC``, an ``LSTM`` and each vector instruction
    (every ALU op and shift form, ``VCOPY``, ``SIGMOID``/``TANH``, ``ARGMAX``,
    ``LOADROW``) must see its own flags, not its predecessor's: every pair, each
    follower to its own destination, bit-exact with the ISS and cycle-exact."""
    rng = np.random.default_rng(21)
    job = make_job(rng, rows=12, cols=40, sparsity=0.5, encoding=Encoding.INT4, lanes=8)
    consts = [pack_constant(int(rng.integers(1 << 30, 1 << 31)), s) for s in (-4, 0, 3)]
    # Sources a = 100.., b = 104.. (predecessors) or 104.., 108.. (followers); the
    # LOADROW table is 100..111 (VN 3 x VL 4), its index at 116.
    vector_ops = [I(Op.VCOPY), I(Op.VADD), I(Op.VMUL, p=5), I(Op.VSHIFT, p=0x20 | 3),
                  I(Op.VSHIFT, p=0x40 | 2), I(Op.VSHIFT, p=0x60 | 5), I(Op.VREQ8, p=0),
                  I(Op.VMULQ8, p=1), I(Op.SIGMOID), I(Op.TANH), I(Op.ARGMAX),
                  I(Op.LOADROW)]

    def placed(op, *, d, a):
        if op.op == Op.LOADROW:
            return dataclasses.replace(op, d=d, a=100, b=116)
        binary = op.op in (Op.VADD, Op.VMUL, Op.VMULQ8)
        return dataclasses.replace(op, d=d, a=a, b=a + 4 if binary else 0)

    before = [I(Op.MATVEC, p=0, d=300, a=0, b=0), I(Op.LSTM, p=1, d=420, a=0),
              *(placed(op, d=120, a=100) for op in vector_ops)]

    async def body(rig):
        await _matvec_and_lstm_layers(rig, job, consts)
        for op in vector_ops:
            rig.scratch(0, rng.integers(-128, 128, 40))
            rig.scratch(100, rand16(rng, 16))
            rig.scratch(116, [int(rng.integers(0, 3))])
            rig.scratch(420, rng.integers(-300, 300, 6))  # LSTM state: h (3), c (3)
            prog = [I(Op.SETVL, a=4, b=3)]
            for i, first in enumerate(before):
                prog += [first, placed(op, d=128 + 4 * i, a=104)]
            rig.program(0, prog + [I(Op.HALT)])
            label = f"{op.op.name} p={op.p:#x} after each kind"
            await rig.run(0, label)
            if op.op != Op.ARGMAX:  # an index, may be 0
                for i in range(len(before)):
                    d = 128 + 4 * i
                    assert np.any(rig.iss.scratch[d:d + 4] != 0), f"{label}: {i} all zero"

    simulate(body)


def test_each_instruction_takes_its_own_constant_read_a_cycle_ahead():
    """The constant is read a cycle ahead into ``k_mult``/``k_shift`` (``hw.processor``):
    by the instruction's p in FETCH, by an LSTM descriptor's const_index in DESC. Back to
    back ``VREQ8``/``VMULQ8`` with a different constant each, a ``VMUL`` (shift from p)
    between two, an ``LSTM`` whose const_index (2) is neither its own p (1) nor its
    predecessor's (3), and constant users right after it: each must use its own
    constant, bit-exact with the ISS, cycles exact."""
    rng = np.random.default_rng(31)
    job = make_job(rng, rows=12, cols=40, sparsity=0.5, encoding=Encoding.INT4, lanes=8)
    # The LSTM's constant 2 scales its Q30 o * t into int8 unsaturated; the others would
    # saturate it.
    consts = [pack_constant(int(rng.integers(1 << 30, 1 << 31)), s) for s in (-4, 0, -24, -1)]
    prog = [I(Op.SETVL, a=3),
            I(Op.VREQ8, p=0, d=440, a=300), I(Op.VREQ8, p=1, d=444, a=300),
            I(Op.VMULQ8, p=3, d=448, a=300, b=20), I(Op.VREQ8, p=2, d=452, a=300),
            I(Op.VMUL, p=7, d=456, a=300, b=20), I(Op.VREQ8, p=3, d=460, a=300),
            I(Op.LSTM, p=1, d=420, a=0), I(Op.VREQ8, p=0, d=464, a=420),
            I(Op.VMULQ8, p=1, d=468, a=420, b=20), I(Op.HALT)]

    async def body(rig):
        await _matvec_and_lstm_layers(rig, job, consts)
        rig.program(0, prog)
        for trial in range(2):
            rig.scratch(0, rng.integers(-128, 128, 100))
            rig.scratch(300, rng.integers(-60, 60, 3))
            rig.scratch(420, rng.integers(-300, 300, 6))  # LSTM state: h (3), c (3)
            await rig.run(0, f"constants trial {trial}")
            outs = {tuple(rig.iss.scratch[d:d + 3]) for d in (440, 444, 452, 460)}
            assert len(outs) == 4, f"trial {trial}: constants not told apart {outs}"
            h = rig.iss.scratch[420:423]
            assert np.any(h != 0) and np.all(np.abs(h) < 127), f"trial {trial}: h' {h}"

    simulate(body)


def test_host_reads_of_constants_share_the_register_with_the_runs_constants():
    """The constants' read register is ``k_mult``/``k_shift`` and the host's read word
    (``hw.processor``). Each constant read by the host right before and right after a run
    whose ``VREQ8``, ``LSTM`` (const_index 2) and ``VMULQ8`` each use another one: the
    host gets the word written, the run its own constants (bit-exact with the ISS,
    cycles exact), whatever the host read last."""
    rng = np.random.default_rng(33)
    job = make_job(rng, rows=12, cols=40, sparsity=0.5, encoding=Encoding.INT4, lanes=8)
    consts = [pack_constant(int(rng.integers(1 << 30, 1 << 31)), s) for s in (-4, 0, -24, -1)]

    async def body(rig):
        await _matvec_and_lstm_layers(rig, job, consts)
        # VREQ8's constant: not the one read (nor 2, which scales x to 0).
        for k, other in enumerate((1, 3, 0, 1)):
            rig.program(0, [I(Op.SETVL, a=3), I(Op.VREQ8, p=other, d=440, a=300),
                            I(Op.LSTM, p=1, d=420, a=0),
                            I(Op.VMULQ8, p=3 - k, d=444, a=420, b=20), I(Op.HALT)])
            rig.scratch(0, rng.integers(-128, 128, 100))
            rig.scratch(300, rng.integers(-60, 60, 3))
            rig.scratch(420, rng.integers(-300, 300, 6))  # LSTM state: h (3), c (3)
            assert await rig.host_read(HostMem.CONSTANTS, k) == consts[k], k
            await rig.run(0, f"after a host read of constant {k}")
            assert np.any(rig.iss.scratch[440:443] != 0), k
            assert await rig.host_read(HostMem.CONSTANTS, k) == consts[k], k

    simulate(body)


def test_pc_overrun_and_watchdog_end_a_run_after_each_kind_of_instruction():
    """FETCH's ``PROG_LEN`` and ``WATCHDOG`` checks are found in the cycle before it
    (START_WORD, or the cycle that completes an instruction) and registered
    (``hw.processor``). Each kind of instruction, after a SETVL at a nonzero start: cut
    by ``PROG_LEN`` right after it (a HALT lies past the end), then by ``WATCHDOG``, then
    run to the HALT; and at the entry: ``START_PC`` at, and one before, ``PROG_LEN``,
    ``WATCHDOG`` 0 and 1.
    Code, ``FAULT_PC`` and counts as the ISS's."""
    rng = np.random.default_rng(32)
    job = make_job(rng, rows=12, cols=40, sparsity=0.5, encoding=Encoding.INT4, lanes=8)
    consts = [pack_constant(1 << 30, -3), pack_constant(5, 0), pack_constant(1 << 30, 1)]
    kinds = [I(Op.SYNC), I(Op.SETVL, a=2, b=1), I(Op.VCOPY, d=200, a=0),
             I(Op.VADD, d=200, a=0, b=4), I(Op.VREQ8, p=0, d=200, a=0),
             I(Op.SIGMOID, d=200, a=0), I(Op.ARGMAX, d=200, a=0),
             I(Op.LOADROW, d=200, a=0, b=116), I(Op.MATVEC, p=0, d=300, a=0, b=0),
             I(Op.LSTM, p=1, d=420, a=0)]
    base = 5
    E = ErrorCode

    async def body(rig):
        await _matvec_and_lstm_layers(rig, job, consts)
        rig.scratch(0, rng.integers(-128, 128, 100))
        rig.scratch(116, [1])
        rig.scratch(420, rng.integers(-300, 300, 6))
        for kind in kinds:
            rig.program(base, [I(Op.SETVL, a=3, b=3), kind, I(Op.HALT)])
            for regs, want in (({"prog_len": base + 2}, E.PC_OVERRUN),
                               ({"watchdog": 2}, E.WATCHDOG), ({}, E.OK)):
                rig.registers(**{"prog_len": base + 3, "watchdog": CFG.program_depth, **regs})
                label = f"{kind.op.name} then {want.name}"
                run = await rig.run(base, label)
                assert run.error == want, label
                if want:
                    assert (run.fault_pc, run.instructions) == (base + 2, 2), label
        rig.program(base, [I(Op.HALT)])
        for regs, pc, want in (({"prog_len": base}, base, E.PC_OVERRUN),
                               ({"prog_len": base + 1}, base, E.OK),
                               ({"watchdog": 0}, base, E.WATCHDOG),
                               ({"watchdog": 1}, base, E.OK)):
            rig.registers(**{"prog_len": base + 1, "watchdog": CFG.program_depth, **regs})
            label = f"entry {regs}"
            run = await rig.run(pc, label)
            assert run.error == want, label
            if want:
                assert (run.fault_pc, run.instructions) == (base, 0), label

    simulate(body)


def test_lstm_units_take_their_own_c_with_rows_back_to_back():
    """The cell reads ``c`` a unit ahead of the gates. One-word rows (int4, 8 columns at 8
    lanes) reach it one per cycle, the fastest the engine runs, and every unit's ``c``
    differs: a read a unit behind or ahead would change some unit's ``c'`` and ``h'``."""
    rng = np.random.default_rng(13)
    H = 6
    job = make_job(rng, rows=4 * H, cols=2 + H, sparsity=0.0, encoding=Encoding.INT4,
                   lanes=8)
    assert len(job.words) == 4 * H  # one word per gate row
    c = np.linspace(-6000, 6000, H).astype(int)

    async def body(rig):
        await rig.constant(0, pack_constant(int(rng.integers(1 << 30, 1 << 31)), -6))
        rig.registers(desc_count=1, const_count=1, prog_len=CFG.program_depth)
        await layer(rig, job, mode=Mode.LSTM, split=2, const_index=0, cell_frac_bits=11)
        rig.scratch(0, job.x[:2])
        rig.scratch(420, np.concatenate([job.x[2:], c]))  # h, then c
        rig.program(0, [I(Op.SETVL, a=H), I(Op.LSTM, p=0, d=420, a=0), I(Op.HALT)])
        await rig.run(0, "LSTM, rows back to back")
        c_new = rig.iss.scratch[420 + H:420 + 2 * H]
        assert len(set(c_new.tolist())) == H and np.any(c_new != c)

    simulate(body)


def test_each_matvec_reads_its_own_descriptor_ahead():
    """The descriptor index comes from the program word read ahead, in the last cycle of
    the instruction two before (SETVL's two cycles, a MATVEC) or the start cycles, even
    when a host read has just left another word on the memories' ports: the checks see
    the right descriptor (descriptor 3 has a reserved bit set) and the engine runs it
    (three layers of different shapes)."""
    rng = np.random.default_rng(11)
    jobs = [make_job(rng, rows=rows, cols=cols, sparsity=0.5, encoding=Encoding.INT4,
                     lanes=8) for rows, cols in ((12, 40), (9, 33), (6, 20))]
    prog = [I(Op.SETVL, a=2), I(Op.MATVEC, p=1, d=330, a=50, b=0),
            I(Op.MATVEC, p=0, d=300, a=0, b=0), I(Op.MATVEC, p=2, d=360, a=100, b=0),
            I(Op.HALT), I(Op.MATVEC, p=3, d=300, a=0, b=0)]
    outputs = (300, 330, 360)

    async def body(rig):
        rig.registers(desc_count=len(jobs) + 1, prog_len=len(prog))
        descs = []
        for i, job in enumerate(jobs):
            assert len(job.words) <= 64 and len(job.expected) <= 64
            descs.append(Descriptor(**await layer(rig, job, index=i, base=64 * i)))
            rig.scratch(50 * i, job.x)
        bad = bytearray(descs[0].pack())
        bad[DESC_FIELDS["reserved16"][0] // 8] = 1
        await rig.descriptor(len(jobs), bytes(bad))
        rig.program(0, prog)
        for pc, mem, addr, code in ((0, HostMem.PROGRAM, 5, ErrorCode.OK),
                                    (2, HostMem.PROGRAM, 5, ErrorCode.OK),
                                    (5, HostMem.PROGRAM, 2, ErrorCode.BAD_DESCRIPTOR),
                                    (3, HostMem.DESCRIPTORS, 3, ErrorCode.OK)):
            assert await rig.host_read(mem, addr) != 0
            iss = await rig.run(pc, f"start at {pc} after a host read")
            assert iss.error == code
            if code == ErrorCode.OK:
                ops = [e.instruction for e in iss.trace]
                assert iss.cycles == RUN_START_CYCLES + sum(
                    instruction_cycles(i.op, vl=2, desc=descs[i.p] if i.op == Op.MATVEC
                                       else None) for i in ops)
        got = rig.read_scratch()
        for i, (job, d) in enumerate(zip(jobs, outputs)):
            assert np.array_equal(got[d:d + len(job.expected)], job.expected), f"layer {i}"

    simulate(body)


@pytest.mark.parametrize("wait_level", [0, 128])
def test_back_to_back_matvecs_request_from_their_own_bases(wait_level):
    """The memories' addresses come from the engine's readers, which take the descriptor's
    ``stream_base`` and ``param_base`` with the engine's restart: three MATVECs back to back
    with different bases, the first at the very top of both memories (the last addresses
    the descriptor check lets through), request exactly ``base + k`` for word k, from their
    own base on (not the instruction before's, not one off)."""
    rng = np.random.default_rng(17)
    jobs = [make_job(rng, rows=rows, cols=cols, sparsity=0.5, encoding=Encoding.INT4,
                     lanes=8) for rows, cols in ((12, 40), (9, 33))]
    # (job, stream_base, param_base), apart: at the top of both memories, low, in between.
    layout = [(0, CFG.weight_depth - len(jobs[0].words), CFG.param_depth - 12), (1, 1, 1),
              (0, 512, 128)]
    prog = [I(Op.SETVL, a=2)] + [I(Op.MATVEC, p=i, d=300 + 20 * i, a=50 * j, b=0)
                                 for i, (j, _, _) in enumerate(layout)] + [I(Op.HALT)]
    taken = {"w": [], "p": []}

    async def watch(ctx, bench):
        await record_requests(ctx, bench.cpu, taken)

    async def body(rig):
        rig.registers(desc_count=len(layout), prog_len=len(prog))
        for i, (j, sb, pb) in enumerate(layout):
            await layer(rig, jobs[j], index=i, base=sb, params_at=pb)
        for j, job in enumerate(jobs):
            rig.scratch(50 * j, job.x)
        rig.program(0, prog)
        iss = await rig.run(0, "MATVECs at their own bases", exact_cycles=not wait_level)
        assert iss.error == ErrorCode.OK
        got = rig.read_scratch()
        for i, (j, _, _) in enumerate(layout):
            expected = jobs[j].expected
            assert np.array_equal(got[300 + 20 * i:300 + 20 * i + len(expected)], expected)

    simulate(body, wait_level=wait_level, seed=5, watch=watch)
    assert taken["w"] == [a for j, sb, _ in layout for a in range(sb, sb + len(jobs[j].words))]
    assert taken["p"] == [a for j, _, pb in layout
                          for a in range(pb, pb + len(jobs[j].expected))]


async def _two_matvecs(rig, job):
    """Load ``job`` as descriptors 0 and 1 (clean; returns descriptor 1's 64 bytes) and a
    program of two MATVECs, over descriptor 0 into scratch 300 and 1 into 310, then HALT."""
    clean = bytes(Descriptor(**await layer(rig, job)).pack())
    await rig.descriptor(1, clean)
    rig.scratch(0, job.x)
    rig.registers(desc_count=2, prog_len=CFG.program_depth)
    rig.program(0, [I(Op.SETVL, a=2), I(Op.MATVEC, p=0, d=300, a=0, b=0),
                    I(Op.MATVEC, p=1, d=310, a=0, b=0), I(Op.HALT)])
    return clean


def test_a_reserved_descriptor_bit_is_found_as_the_host_writes_each_descriptor():
    """Each of the 112 reserved descriptor bits faults the MATVEC with BAD_DESCRIPTOR: the
    core records the bit as the host writes the descriptor, a flag per part. One bit
    of every group of 4, at a different place in its group, written over descriptor 1 in
    turn, between rewrites of it clean: each program runs descriptor 0 (clean), then 1,
    and faults at the second MATVEC (its PC) exactly while 1 holds a reserved bit. So a
    flag read for the wrong descriptor (0's, or the instruction before's) or not
    rewritten with its descriptor (bad to clean, clean to bad) fails."""
    rng = np.random.default_rng(12)
    job = make_job(rng, rows=6, cols=20, sparsity=0.5, encoding=Encoding.INT4, lanes=8)
    reserved = [lo + k for name, (lo, w) in DESC_FIELDS.items() if name.startswith("reserved")
                for k in range(w)]
    bits = [reserved[g * 4 + g % 4] for g in range(len(reserved) // 4)]
    assert len(bits) == 28

    async def body(rig):
        clean = await _two_matvecs(rig, job)
        for bit in (None, *bits):
            if bit is not None:
                bad = bytearray(clean)
                bad[bit // 8] |= 1 << bit % 8
                await rig.descriptor(1, bytes(bad))
                iss = await rig.run(0, f"reserved bit {bit}")
                assert (iss.error, iss.fault_pc) == (ErrorCode.BAD_DESCRIPTOR, 2), bit
                await rig.descriptor(1, clean)
            rig.scratch(310, np.zeros(6))  # the clean run's output, written afresh
            iss = await rig.run(0, f"rewritten clean after reserved bit {bit}")
            assert iss.error == ErrorCode.OK, bit
            assert np.array_equal(rig.read_scratch()[310:316], job.expected), bit

    simulate(body)


def test_each_descriptor_part_write_sets_or_clears_its_own_reserved_flag():
    """The host writes a descriptor a part at a time and each write sets or clears that
    part's reserved-bit flag alone. After clean descriptors 0 and 1, single parts are
    rewritten: a reserved bit in part 8 of descriptor 1 faults the second MATVEC
    (BAD_DESCRIPTOR, PC 2); a write of part 9 (no reserved bits) keeps the fault; a
    second bit in part 13 and then part 8 rewritten clean keep it too, and part 13
    rewritten clean ends it (the run completes, its output right); a bit in part 15 of
    descriptor 0 faults the first MATVEC (PC 1) until that part is rewritten. So one
    flag per descriptor (cleared by any part's write), a part's write reaching another
    part's or descriptor's flag, or parts merged into the wrong place in the word fail."""
    assert set(DESC_RESERVED_PARTS) == {8, 13, 14, 15}
    rng = np.random.default_rng(14)
    job = make_job(rng, rows=6, cols=20, sparsity=0.5, encoding=Encoding.INT4, lanes=8)

    async def body(rig):
        clean = await _two_matvecs(rig, job)

        def part(k, bit=None):
            raw = bytearray(clean[4 * k:4 * k + 4])
            if bit is not None:
                assert DESC_RESERVED_PARTS[k] >> bit & 1, (k, bit)
                raw[bit // 8] |= 1 << bit % 8
            return raw

        for index, k, bit, fault_pc in ((1, 8, 20, 2), (1, 9, None, 2), (1, 13, 7, 2),
                                        (1, 8, None, 2), (1, 13, None, None),
                                        (0, 15, 31, 1), (0, 15, None, None)):
            label = f"descriptor {index} part {k} bit {bit}"
            await rig.descriptor_part(index, k, part(k, bit))
            rig.scratch(300, np.zeros(16))  # the clean run's outputs, written afresh
            iss = await rig.run(0, label)
            if fault_pc is None:
                assert iss.error == ErrorCode.OK, label
                assert np.array_equal(rig.read_scratch()[310:316], job.expected), label
            else:
                assert (iss.error, iss.fault_pc) == (ErrorCode.BAD_DESCRIPTOR, fault_pc), label

    simulate(body)


def test_start_and_soft_reset_abort_a_run():
    rng = np.random.default_rng(8)
    job = make_job(rng, rows=30, cols=60, sparsity=0.0, encoding=Encoding.INT8, lanes=8)

    async def body(rig):
        ctx, cpu = rig.ctx, rig.cpu
        rig.registers(desc_count=1, prog_len=CFG.program_depth)
        rig.scratch(0, job.x)
        await layer(rig, job)
        rig.program(0, [I(Op.MATVEC, p=0, d=300, a=0, b=0), I(Op.SETVL, a=30),
                        I(Op.TANH, d=400, a=300), I(Op.HALT)])
        for abort, when in ((cpu.start, 40), (cpu.soft_reset, 90), (cpu.start, 125)):
            ctx.set(cpu.start, 1)
            await ctx.tick()
            ctx.set(cpu.start, 0)
            await ctx.tick().repeat(when)
            assert ctx.get(cpu.busy)
            ctx.set(abort, 1)
            await ctx.tick()
            ctx.set(abort, 0)
            if abort is cpu.soft_reset:
                await ctx.tick()
                assert not ctx.get(cpu.busy) and not ctx.get(cpu.done)
            await rig.run(0, f"after abort at {when}")  # same program: same results

    simulate(body)


def test_verilog_top_is_processor_with_named_units():
    cpu = Processor(config=CFG)
    text = toolchain.generate_verilog(cpu, "processor")
    names = {line[7:].split("(")[0].strip().lstrip("\\") for line in text.splitlines()
             if line.startswith("module ")}
    assert "processor" in names
    assert {"processor.engine", "processor.vector_alu", "processor.activation_lut",
            "processor.lstm_cell"} <= names
    # Two 32 x 32 requantizers: the engine's, shared with the vector ALU, and the cell's.
    assert {n for n in names if n.endswith(".requantizer")} == {
        "processor.engine.requantizer", "processor.lstm_cell.requantizer"}
    assert all(n == "processor" or n.startswith("processor.") for n in names)
    # The LSTM cell's tanh lookup registers its table entry twice (slope2b, a cycle of
    # LSTM_TAIL_CYCLES); the shared lookup unit, SIGMOID/TANH's and the gates', once
    # (LUT_LATENCY).
    bodies = {chunk.split("(")[0].strip().lstrip("\\"): chunk
              for chunk in text.split("\nmodule ")[1:]}
    assert "reg [16:0] slope2b " in bodies["processor.lstm_cell.tanh"]
    assert "reg [16:0] slope2 " in bodies["processor.activation_lut"]
    assert "slope2b" not in bodies["processor.activation_lut"]
    # The engine's requantizer has 8 stages and its memories answer in
    # STREAM_READ_LATENCY cycles, as the ISS's engine latency counts; its readers' FIFOs
    # keep one word per cycle at that latency.
    assert cpu.engine_config.requantizer_stages == 8
    assert ENGINE_LATENCY == (PIPELINE_LATENCY + cpu.engine_config.requantizer_stages - 6
                              + STREAM_READ_LATENCY - 1)
    assert cpu.engine_config.fifo_depth >= STREAM_READ_LATENCY + 3


def test_cell_tail_matches_the_cycle_model():
    """The ISS's LSTM tail is the cell unit's measured drain."""
    assert CELL_TAIL_CYCLES == LSTM_TAIL_CYCLES


def test_alu_latency_matches_the_cycle_model():
    """The ISS's vector ALU latency is the ALU's (with the engine's 8-stage requantizer)."""
    assert ALU_LATENCY == VECTOR_ALU_LATENCY


def test_lut_latency_matches_the_cycle_model():
    """The ISS's SIGMOID/TANH latency is the shared lookup unit's: ``LATENCY``, without the
    slope register (the LSTM cell's own lookup has it, in ``LSTM_TAIL_CYCLES``)."""
    assert LUT_LATENCY == ACTIVATION_LUT_LATENCY == 4


#: DECODE's error priority (``docs/isa.md`` 4.2, 4.3) where two checks fail at once, and
#: the registered VL = 0 / VN = 0 flags at 0 and one past: (name, (VL, VN) set by a
#: SETVL first, instruction, error). Constant 1 is invalid, 0 valid; scratch[160] is 0.
DECODE_PRIORITY = [
    ("illegal with every field set", None, I(0x7E, p=0xFF, d=0xFFFF, a=0xFFFF, b=0xFFFF),
     _E.ILLEGAL_OPCODE),
    ("reserved over VL 0", (0, 4), I(Op.VMUL, p=0x20, d=200, a=0, b=8), _E.RESERVED_FIELD),
    ("reserved over VN 0", (4, 0), I(Op.LOADROW, p=1, d=200, a=0, b=160),
     _E.RESERVED_FIELD),
    ("reserved over a range", (8, 1), I(Op.VCOPY, d=510, a=0, b=1), _E.RESERVED_FIELD),
    ("shift amount over a range", (8, 1), I(Op.VSHIFT, p=16, d=510, a=0), _E.BAD_OPERAND),
    ("shift amount 15", (8, 1), I(Op.VSHIFT, p=15, d=200, a=0), _E.OK),
    ("constant over a range", (8, 1), I(Op.VREQ8, p=1, d=510, a=0), _E.BAD_OPERAND),
    ("constant index over an overlap", (8, 1), I(Op.VMULQ8, p=2, d=104, a=100, b=0),
     _E.BAD_OPERAND),
    ("VL 0 over a range", (0, 1), I(Op.VADD, d=0xFFFF, a=0, b=0xFFFF), _E.BAD_OPERAND),
    ("ARGMAX VL 0 over d range", (0, 1), I(Op.ARGMAX, d=512, a=0), _E.BAD_OPERAND),
    ("LOADROW VN 0 over d range", (4, 0), I(Op.LOADROW, d=510, a=0, b=160),
     _E.BAD_OPERAND),
    ("LOADROW VL 0 over b range", (0, 4), I(Op.LOADROW, d=200, a=0, b=512),
     _E.BAD_OPERAND),
    ("VL 1", (1, 0), I(Op.VCOPY, d=200, a=0), _E.OK),
    ("VN 1", (4, 1), I(Op.LOADROW, d=200, a=0, b=160), _E.OK),
    ("VL 1 LOADROW", (1, 1), I(Op.LOADROW, d=200, a=0, b=160), _E.OK),
    ("VL 0 at a start", None, I(Op.VCOPY, d=200, a=0), _E.BAD_OPERAND),
    ("range alone", (8, 1), I(Op.VCOPY, d=505, a=0), _E.SCRATCH_RANGE),
]


def test_decode_error_priority_and_zero_lengths_match_the_iss():
    """DECODE's four registered flags (illegal, reserved, operand, any) give the code of
    the highest-priority failing check, as the ISS's ordered checks; VL = 0 and VN = 0,
    registered by SETVL and set at a start, fault at 0 and pass at 1. Each case runs
    after a run that leaves VL = VN = 4, so a VL flag not set at the start fails (VN = 0
    at a start shows only with VL = 0, the same error)."""
    async def body(rig):
        await rig.constant(0, pack_constant(1 << 30, -3))
        await rig.constant(1, pack_constant(5, 0))
        rig.registers(prog_len=CFG.program_depth, desc_count=0, const_count=2,
                      watchdog=CFG.program_depth)
        rig.scratch(0, np.arange(512) % 7)
        rig.scratch(160, [0])
        rig.program(100, [I(Op.SETVL, a=4, b=4), I(Op.HALT)])
        for name, lengths, ins, code in DECODE_PRIORITY:
            await rig.run(100, f"{name}: SETVL 4, 4")
            prefix = [] if lengths is None else [I(Op.SETVL, a=lengths[0], b=lengths[1])]
            rig.program(0, [*prefix, ins, I(Op.HALT)])
            run = await rig.run(0, name)  # error, FAULT_PC, registers, scratch as the ISS
            assert run.error == code, name
            if code:
                assert run.fault_pc == len(prefix), name

    simulate(body)


# ---------------------------------------------------------------- scratch ports (issue 6)

def test_activation_load_moves_from_a_to_b_at_every_split():
    """The activation load's address is a pointer that moves from a's entries to b's
    after the split-th (``at_split``, flagged a cycle ahead): splits 0, 1, 2 (the flag's
    edges), cols - 1 and cols, a and b apart with distinct entries, so an entry from the
    wrong operand or a step early or late changes the result. Bit-exact with the ISS,
    cycles exact, and the five results differ."""
    rng = np.random.default_rng(31)
    cols = 6
    splits = (0, 1, 2, cols - 1, cols)
    job = make_job(rng, rows=7, cols=cols, sparsity=0.0, encoding=Encoding.INT8, lanes=8)

    async def body(rig):
        rig.registers(desc_count=len(splits), prog_len=CFG.program_depth)
        for i, split in enumerate(splits):
            await layer(rig, job, index=i, split=split)
        rig.scratch(0, rng.permutation(np.arange(-60, 60))[:cols])  # a
        rig.scratch(100, rng.permutation(np.arange(-60, 60))[:cols])  # b
        rig.program(0, [I(Op.MATVEC, p=i, d=200 + 8 * i, a=0, b=100)
                        for i in range(len(splits))] + [I(Op.HALT)])
        await rig.run(0, "MATVEC at every split")
        outs = {tuple(rig.iss.scratch[200 + 8 * i:207 + 8 * i]) for i in range(len(splits))}
        assert len(outs) == len(splits)

    simulate(body)


#: Constants at each edge of ``compiler.isa.constant_ok`` and one past it.
CONSTANT_EDGES = [((1 << 30) - 1, 0), (1 << 30, 0), ((1 << 31) - 1, 0), (0, 0), (1, 0),
                  (-1, 0), (-(1 << 31), 0), (1 << 30, -31), (1 << 30, -32), (1 << 30, 7),
                  (1 << 30, 8), (0, -(1 << 31)), (0, (1 << 31) - 1)]


def test_a_constants_validity_lands_before_a_run_started_with_its_write():
    """The core checks a constant as the host writes it and records the outcome a cycle
    after the memory write; a run started in the write's own cycle still sees it. Each
    edge constant (valid ones alternating with invalid ones) is written to index 1 while
    index 0 holds a valid one, together with the start of a run whose VREQ8 uses
    constant 1 (and whose VMULQ8 uses 0): BAD_OPERAND at the VREQ8 exactly when the
    constant is invalid, as the ISS."""
    cpu_ok = [constant_ok(mult, shift) for mult, shift in CONSTANT_EDGES]
    assert 0 < sum(cpu_ok) < len(cpu_ok)

    async def body(rig):
        ctx, cpu = rig.ctx, rig.cpu
        await rig.constant(0, pack_constant(1 << 30, -3))
        rig.registers(prog_len=CFG.program_depth, desc_count=0, const_count=2,
                      watchdog=CFG.program_depth)
        rig.scratch(0, np.arange(16) - 8)
        rig.program(0, [I(Op.SETVL, a=4, b=1), I(Op.VREQ8, p=1, d=200, a=0),
                        I(Op.VMULQ8, p=0, d=210, a=0, b=4), I(Op.HALT)])
        for (mult, shift), ok in zip(CONSTANT_EDGES, cpu_ok):
            label = f"constant ({mult}, {shift})"
            word = pack_constant(mult, shift)
            rig.iss.write_constant(1, word)
            iss = rig.iss.run(0)
            for name, value in (("host_mem", HostMem.CONSTANTS), ("host_addr", 1),
                                ("host_wdata", word), ("host_we", 1), ("start_pc", 0),
                                ("start", 1)):
                ctx.set(getattr(cpu, name), value)
            await ctx.tick()
            ctx.set(cpu.host_we, 0)
            ctx.set(cpu.start, 0)
            for _ in range(40 * iss.cycles + 200):
                await ctx.tick()
                if ctx.get(cpu.done):
                    break
            assert ctx.get(cpu.done), label
            assert ctx.get(cpu.error) == iss.error, label
            assert iss.error == (ErrorCode.OK if ok else ErrorCode.BAD_OPERAND), label
            if iss.error:
                assert ctx.get(cpu.fault_pc) == iss.fault_pc == 1, label
            else:
                assert ctx.get(cpu.cycles) == iss.cycles, label
                rtl = rig.read_scratch()
                assert np.array_equal(rtl[200:214], rig.iss.scratch[200:214]), label


def test_a_run_started_right_after_a_host_write_of_its_first_words_runs_them():
    """A run reads its first word in the start cycle and takes it through the program
    RAM's output register in START, and its second in the start cycles: a word the host
    writes in the cycle before the start is the one the run executes, as the ISS. Each
    of words 0, 1 and 2 in turn holds a HALT in the memory and is rewritten through the
    host port to its instruction in the cycle before the start; a run that read the old
    word would halt early (other VL, VN, SYNC_COUNT and instruction count)."""
    prog = [encode(i) for i in (I(Op.SETVL, a=3, b=4), I(Op.SYNC), I(Op.SETVL, a=5, b=6),
                                I(Op.SYNC), I(Op.HALT))]

    async def body(rig):
        rig.registers(prog_len=CFG.program_depth, desc_count=0, const_count=0,
                      watchdog=CFG.program_depth)
        for k in range(3):
            rig.program(0, prog[:k] + [encode(I(Op.HALT))] + prog[k + 1:])
            await rig.program_word(k, prog[k])
            iss = await rig.run(0, f"word {k} written right before the start")
            assert iss.error == ErrorCode.OK and iss.instructions == len(prog)

    simulate(body)


def test_lstm_with_one_and_two_units_back_to_back_then_read():
    """H = 1 and 2, split 1 and 2: the cell's c address is registered a cycle after its
    index moves (the last unit's read runs past the state) and its writes land a cycle
    late. Each LSTM runs twice back to back on its state (the second loads the first's
    h' and reads its c'), then a VADD reads h' and c' directly: bit-exact with the ISS,
    cycles exact."""
    rng = np.random.default_rng(33)

    async def body(rig):
        await rig.constant(0, pack_constant(int(rng.integers(1 << 30, 1 << 31)), -6))
        rig.registers(desc_count=2, const_count=1, prog_len=CFG.program_depth)
        prog = []
        for i, units in enumerate((1, 2)):
            job = make_job(rng, rows=4 * units, cols=i + 1 + units, sparsity=0.0,
                           encoding=Encoding.INT4, lanes=8)
            await layer(rig, job, index=i, base=64 * i, mode=Mode.LSTM, split=i + 1,
                        const_index=0, cell_frac_bits=11)
            d = 300 + 16 * i
            rig.scratch(16 * i, job.x[:i + 1])
            rig.scratch(d, np.concatenate([job.x[i + 1:],
                                           rng.integers(-6000, 6000, units)]))
            prog += [I(Op.SETVL, a=2 * units), I(Op.LSTM, p=i, d=d, a=16 * i),
                     I(Op.LSTM, p=i, d=d, a=16 * i), I(Op.VADD, d=d + 8, a=d, b=d)]
        rig.program(0, prog + [I(Op.HALT)])
        await rig.run(0, "LSTM H = 1, 2 twice, then read")
        for i, units in enumerate((1, 2)):
            assert np.any(rig.iss.scratch[308 + 16 * i:308 + 16 * i + 2 * units] != 0)

    simulate(body)


def test_each_instruction_reads_what_the_one_before_just_wrote():
    """Writes land a cycle after they are made, an instruction's last in the next one's
    FETCH; reads start as early as DECODE (LOADROW's index, the ALU's and lookup unit's
    element 0) and DESC (a MATVEC's entry 0). Each writer is followed directly by a
    reader of what it just wrote: VADD in place (d = a = b) twice, SIGMOID then TANH in
    place, VCOPY then a VADD whose first a entry is the last written, ARGMAX then
    LOADROW taking the result as its index and VCOPY then LOADROW taking the last entry
    written as its, VADD then a MATVEC whose entry 0 (from a) is the last written, that
    MATVEC then a VCOPY of its last outputs, and that VCOPY then a MATVEC whose entry 0
    (split 0: from b) is its last. Bit-exact with the ISS, cycles exact."""
    rng = np.random.default_rng(35)
    job = make_job(rng, rows=6, cols=4, sparsity=0.0, encoding=Encoding.INT8, lanes=8)

    async def body(rig):
        rig.registers(desc_count=2, prog_len=CFG.program_depth)
        await layer(rig, job)
        await layer(rig, job, index=1, split=0)
        for trial in range(2):
            rig.scratch(0, rand16(rng, 4))
            rig.scratch(40, rand16(rng, 16))  # LOADROW table, VN 4 x VL 4
            rig.scratch(70, rng.integers(-3, 4, 4))  # small: ARGMAX ties, int8 VADD
            rig.scratch(74, rng.permutation(4))  # indices for VCOPY -> LOADROW
            rig.program(0, [
                I(Op.SETVL, a=4, b=4), I(Op.VADD, d=0, a=0, b=0), I(Op.VADD, d=0, a=0, b=0),
                I(Op.SIGMOID, d=0, a=0), I(Op.TANH, d=0, a=0), I(Op.VCOPY, d=20, a=0),
                I(Op.VADD, d=28, a=23, b=20), I(Op.ARGMAX, d=60, a=70),
                I(Op.LOADROW, d=80, a=40, b=60), I(Op.VCOPY, d=60, a=74),
                I(Op.LOADROW, d=84, a=40, b=63), I(Op.VADD, d=90, a=70, b=70),
                I(Op.MATVEC, p=0, d=100, a=93, b=0), I(Op.VCOPY, d=120, a=102),
                I(Op.MATVEC, p=1, d=130, a=0, b=123), I(Op.HALT)])
            await rig.run(0, f"write then read, trial {trial}")
            s, r = rig.iss.scratch, rig.iss.result
            assert np.array_equal(s[80:84], s[40 + 4 * r:44 + 4 * r])
            assert np.array_equal(s[84:88], s[40 + 4 * s[63]:44 + 4 * s[63]])

    simulate(body)


class LaggingCell(wiring.Component):
    """``LstmCell`` with its writes ``lag`` cycles late: a slower cell, whose last ``h'``
    comes after the fixed tail, which the processor must wait for."""

    def __init__(self, lag):
        self.inner, self.lag = LstmCell(), lag
        super().__init__(self.inner.signature)

    def elaborate(self, platform):
        m = Module()
        m.submodules.inner = inner = self.inner
        m.d.comb += [getattr(inner, n).eq(getattr(self, n)) for n in
                     ("in_valid", "y", "cell_frac_bits", "multiplier", "shift", "c_data")]
        m.d.comb += self.c_index.eq(inner.c_index)
        for name in ("w_en", "w_cell", "w_index", "w_data"):
            value = getattr(inner, name)
            for k in range(self.lag):
                late = Signal.like(value, name=f"{name}_late{k}")
                m.d.sync += late.eq(value)
                value = late
            m.d.comb += getattr(self, name).eq(value)
        return m


@pytest.mark.parametrize("lag", [0, 1, 2])
def test_lstm_tail_ends_with_the_last_h_write_at_its_edge_and_past_it(lag, monkeypatch):
    """With the gate rows back to back (``g`` then ``o``, the worst case) the last ``h'``
    is written in the fixed tail's last cycle, where the ``LSTM`` completes (lag 0); a
    cell ``lag`` cycles slower makes it complete exactly ``lag`` cycles later, after
    its last write, with the same results."""
    cells = []

    def lagging_cell():
        cells.append(LaggingCell(lag))
        return cells[-1]

    monkeypatch.setattr(hw.processor, "LstmCell", lagging_cell)
    rng = np.random.default_rng(21)
    H = 5
    job = make_job(rng, rows=4 * H, cols=2 + H, sparsity=0.0, encoding=Encoding.INT4,
                   lanes=8)
    seen = {"h_last": None, "completed": None, "cycle": 0}

    async def watch(ctx, bench):
        cell = cells[-1]
        while True:
            await ctx.tick()
            seen["cycle"] += 1
            if ctx.get(cell.w_en) and not ctx.get(cell.w_cell):
                seen["h_last"] = seen["cycle"]
            if ctx.get(bench.cpu.instructions) == 2 and seen["completed"] is None:
                seen["completed"] = seen["cycle"]

    async def body(rig):
        await rig.constant(0, pack_constant(int(rng.integers(1 << 30, 1 << 31)), -6))
        rig.registers(desc_count=1, const_count=1, prog_len=CFG.program_depth)
        await layer(rig, job, mode=Mode.LSTM, split=2, const_index=0, cell_frac_bits=11)
        rig.scratch(0, job.x[:2])
        rig.scratch(420, np.concatenate([job.x[2:], rng.integers(-6000, 6000, H)]))
        rig.program(0, [I(Op.SETVL, a=H), I(Op.LSTM, p=0, d=420, a=0), I(Op.HALT)])
        iss = await rig.run(0, f"LSTM, cell {lag} cycles late", exact_cycles=False)
        assert rig.cycles[-1][2] == iss.cycles + lag

    simulate(body, watch=watch)
    # The counter increments on the cycle after the one that completes.
    assert seen["completed"] == seen["h_last"] + 1


async def _scratch_collisions_read_wrong(ctx, bench, found):
    """Watch the scratch's ports every cycle: where a read port addresses the word the
    write port writes, record ``(cycle, port, address, busy)`` in ``found`` and make the
    port's data the next cycle the complement of what the simulation read (Amaranth's
    old word; the block RAM with ``no_rw_check`` may return either), so any use of it
    shows as a wrong result."""
    cpu = bench.cpu
    (write,) = cpu.scratch_mem.write_ports
    reads = cpu.scratch_reads
    cycle, pending = 0, []
    while True:
        await ctx.tick()
        cycle += 1
        for port in pending:
            ctx.set(port.data, ~ctx.get(port.data) & 0xFFFF)
        pending = []
        if ctx.get(write.en):
            addr = ctx.get(write.addr)
            for k, port in enumerate(reads):
                if ctx.get(port.addr) == addr:
                    found.append((cycle, k, addr, ctx.get(cpu.busy)))
                    pending.append(port)


def test_scratch_reads_that_meet_a_write_of_their_word_are_never_used():
    """The scratch memory is ``no_rw_check``: a read and a write of one word in one cycle
    may return either. A background testbench watches its ports every cycle through a
    program of every instruction kind (in-place ALU, shift, requantize and lookup ops,
    VCOPY, ARGMAX then LOADROW of its index, MATVEC, LSTM) and returns a wrong word on
    every such collision: the run still matches the ISS bit for bit, cycle-exact. The
    collisions it meets (idle ports, an LSTM cell's c address in a MATVEC, LOADROW's b
    pointer) are listed, so the check is exercised; host writes to the scratch while
    idle meet ``sc_a`` (the host's read address) too."""
    rng = np.random.default_rng(5)
    job = make_job(rng, rows=12, cols=40, sparsity=0.5, encoding=Encoding.INT4, lanes=8)
    consts = [pack_constant(int(rng.integers(1 << 30, 1 << 31)), s) for s in (-4, 0, 3)]
    found = []

    async def body(rig):
        await _matvec_and_lstm_layers(rig, job, consts)
        rig.scratch(0, rng.integers(-128, 128, 40))
        rig.scratch(100, rand16(rng, 16))  # in-place operands, then the LOADROW table
        rig.scratch(420, rng.integers(-300, 300, 6))  # LSTM state: h (3), c (3)
        await rig._host_write(HostMem.SCRATCH, 200, 0x1234)
        rig.iss.write_scratch(200, [0x1234])
        rig.program(0, [
            I(Op.SETVL, a=4, b=4), I(Op.VADD, d=100, a=100, b=100),
            I(Op.VMUL, d=100, a=100, b=100, p=3), I(Op.VSHIFT, d=100, a=100, p=0x20 | 2),
            I(Op.VREQ8, d=100, a=100, p=0), I(Op.VMULQ8, d=104, a=104, b=104, p=1),
            I(Op.SIGMOID, d=100, a=100), I(Op.TANH, d=104, a=104), I(Op.VCOPY, d=108, a=108),
            I(Op.ARGMAX, d=116, a=100), I(Op.LOADROW, d=120, a=100, b=116),
            I(Op.MATVEC, p=0, d=300, a=0, b=0), I(Op.LSTM, p=1, d=420, a=0),
            I(Op.VADD, d=0, a=0, b=0), I(Op.HALT)])
        await rig.run(0, "every kind, a collision reads a wrong word")

    simulate(body, watch=lambda ctx, bench: _scratch_collisions_read_wrong(ctx, bench, found))
    assert any(busy for *_, busy in found), found  # during the run
    assert any(not busy and addr == 200 for _, _, addr, busy in found), found  # the host


# ------------------------------------------------ state fan-out (issue 6, step fsmfan)

def test_fault_pc_shows_with_done_and_stays_until_the_next_start():
    """``FAULT_PC`` is the PC while a registered ``faulted`` flag is set: 0 in the cycle
    before the fault lands, the faulting PC in the cycle ``done`` rises and after it,
    through a soft reset, and 0 again from the cycle after the next start (a clean run
    then ends with 0)."""
    async def body(rig):
        ctx, cpu = rig.ctx, rig.cpu
        rig.registers(prog_len=CFG.program_depth)
        rig.program(0, [I(Op.SYNC)] * 5 + [I(0x7E), I(Op.HALT)])
        rig.program(20, [I(Op.SYNC), I(Op.HALT)])
        ctx.set(cpu.start_pc, 0)
        ctx.set(cpu.start, 1)
        await ctx.tick()
        ctx.set(cpu.start, 0)
        seen = []
        for _ in range(100):
            seen.append((ctx.get(cpu.done), ctx.get(cpu.fault_pc)))
            if seen[-1][0]:
                break
            await ctx.tick()
        assert seen[-1] == (1, 5) and seen[-2] == (0, 0), seen[-3:]
        assert all(pc == 0 for _, pc in seen[:-1])
        assert ctx.get(cpu.error) == ErrorCode.ILLEGAL_OPCODE
        await ctx.tick().repeat(3)
        assert ctx.get(cpu.fault_pc) == 5
        ctx.set(cpu.soft_reset, 1)
        await ctx.tick()
        ctx.set(cpu.soft_reset, 0)
        await ctx.tick()
        assert ctx.get(cpu.fault_pc) == 5 and not ctx.get(cpu.done)
        ctx.set(cpu.start_pc, 20)
        ctx.set(cpu.start, 1)
        assert ctx.get(cpu.fault_pc) == 5  # the start lands with the clock edge
        await ctx.tick()
        ctx.set(cpu.start, 0)
        assert ctx.get(cpu.fault_pc) == 0
        for _ in range(100):
            await ctx.tick()
            if ctx.get(cpu.done):
                break
        assert (ctx.get(cpu.error), ctx.get(cpu.fault_pc)) == (ErrorCode.OK, 0)

    simulate(body)


def test_one_hot_select_takes_the_flagged_value_and_zero_without_one():
    """The scratch ports' address select: each flag alone picks its value (at the
    widest value's width), no flag gives 0; no pairs is an error."""
    flags = [Signal(name=f"flag{i}") for i in range(3)]
    values = [Signal(4, init=0xA), Signal(9, init=0x1F3), Signal(1, init=1)]
    out = hw.processor._one_hot_select(list(zip(flags, values)))
    assert len(out) == 9
    m = Module()
    probe = Signal(9)
    m.d.comb += probe.eq(out)
    got = []

    async def bench(ctx):
        for i in range(-1, 3):
            for k, flag in enumerate(flags):
                ctx.set(flag, int(k == i))
            got.append(ctx.get(probe))

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    assert got == [0, 0xA, 0x1F3, 1]
    with pytest.raises(ValueError, match="no .flag, value. pairs"):
        hw.processor._one_hot_select([])


def test_loadrow_table_saturates_past_17_bits_with_the_isss_verdicts():
    """DECODE keeps VN * VL saturated at ``TABLE_MAX`` (2**17 - 1): products below it,
    at 2**17 and past it (where a truncated table would wrap to a small one and pass)
    fault as the ISS does, with only the table check failing; a small table passes."""
    assert hw.processor.TABLE_MAX == (1 << 17) - 1
    cases = [(2, 0xFFFF), (4, 0x7FFF), (4, 0x8000), (8, 0x4000), (3, 0xAAAB), (4, 0xFFFF),
             (4, 3)]

    async def body(rig):
        rig.registers(prog_len=CFG.program_depth)
        rig.scratch(0, np.arange(64) % 5)
        for vl, vn in cases:
            rig.program(0, [I(Op.SETVL, a=vl, b=vn), I(Op.LOADROW, d=100, a=8, b=1),
                            I(Op.HALT)])
            run = await rig.run(0, f"VL {vl}, VN {vn}")
            assert run.error == (ErrorCode.OK if vl * vn < 64 else ErrorCode.SCRATCH_RANGE)

    simulate(body)


def test_loadrow_row_offset_forwards_only_the_write_landing_in_its_fetch():
    """LOADROW's row offset is formed from its index read in FETCH, which misses the
    write landing then (the instruction before's last): that write is forwarded. The
    index just written (the edge), the entry one past it and one before it (not written
    or written earlier), and a stale write address with no write (a SETVL between, the
    entry then changed by the host between runs) all take the row the ISS takes."""
    rng = np.random.default_rng(41)

    async def body(rig):
        rig.registers(prog_len=CFG.program_depth)
        rig.scratch(40, rand16(rng, 16))  # the table, VN 4 x VL 4
        for b in (63, 64, 62):
            rig.scratch(60, [3, 1, 2, 0, 2])
            rig.scratch(74, rng.permutation(4))
            rig.program(0, [I(Op.SETVL, a=4, b=4), I(Op.VCOPY, d=60, a=74),
                            I(Op.LOADROW, d=84, a=40, b=b), I(Op.HALT)])
            await rig.run(0, f"VCOPY to 60..63, LOADROW index at {b}")
            s = rig.iss.scratch
            assert np.array_equal(s[84:88], s[40 + 4 * s[b]:44 + 4 * s[b]]), b
        # A run whose last write is entry 63's (3 - value), then a SETVL and LOADROW
        # from 63 with the host's new value there: no write lands in LOADROW's FETCH.
        for value in (0, 3):
            rig.scratch(74, [0, 1, 2, 3 - value])
            rig.program(0, [I(Op.SETVL, a=4, b=4), I(Op.VCOPY, d=60, a=74), I(Op.HALT)])
            await rig.run(0, f"VCOPY {3 - value} to 63")
            rig.scratch(63, [value])
            rig.program(0, [I(Op.SETVL, a=4, b=4), I(Op.LOADROW, d=84, a=40, b=63),
                            I(Op.HALT)])
            await rig.run(0, f"stale write address, index {value}")
            assert np.array_equal(rig.iss.scratch[84:88],
                                  rig.iss.scratch[40 + 4 * value:44 + 4 * value])

    simulate(body)


def test_argmax_runs_that_rise_tie_and_fall_back_to_back():
    """ARGMAX, read ahead and compared from a copy of the read data: rising runs (every
    element wins), ties right after a win (the lower index stays), falls after one, the
    maximum first or last, the int16 extremes, at every VL from 1 up, each ARGMAX
    straight after the one before. Index and result bit-exact with the ISS, cycles
    exact."""
    patterns = [[0, 1, 2, 3, 4, 5, 6, 7], [0, 0, 1, 1, 2, 2, 3, 3], [7, 6, 5, 4, 3, 2, 1, 0],
                [3, 3, 3, 3, 3, 3, 3, 3], [-5, 7, 7, 3, 9, 9, -1, 9], [1, 3, 2, 3, 1, 4, 4, 5],
                [-32768, -32768, 32767, -1, 32767, 0, 1, 2], [2, 5, 4, 5, 6, 1, 6, 0]]

    async def body(rig):
        rig.registers(prog_len=CFG.program_depth)
        for trial, values in enumerate(patterns):
            rig.scratch(128, values)
            prog = []
            for n in range(1, len(values) + 1):
                prog += [I(Op.SETVL, a=n, b=1), I(Op.ARGMAX, d=300 + n, a=128),
                         I(Op.ARGMAX, d=310 + n, a=128 + len(values) - n)]
            rig.program(0, prog + [I(Op.HALT)])
            await rig.run(0, f"ARGMAX pattern {trial}")
            got = rig.read_scratch()
            for n in range(1, len(values) + 1):
                assert got[300 + n] == int(np.argmax(values[:n])), (trial, n)
                tail = values[len(values) - n:]
                assert got[310 + n] == int(np.argmax(tail)), (trial, n, "tail")

    simulate(body)
