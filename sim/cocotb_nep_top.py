"""``NepTop`` driven through its AXI4-Lite bus: shared test data and the cocotb tests.

The helpers (small configuration and model image, the bus writes that load an image,
the long-running program) serve both levels: ``tests/unit/test_nep_top.py`` in the
Amaranth simulator and, through ``tests/rtl/test_nep_top_rtl.py``, the cocotb test
below on the generated Verilog under Verilator, driven by cocotbext-axi's
``AxiLiteMaster`` with every channel paused at random. Everything a test knows about
the device it learns through the bus; ``compiler.iss.Machine`` is the reference.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge
from cocotbext.axi import AxiLiteBus, AxiLiteMaster, AxiResp

from compiler.compile import Image, compile_model, load_image
from compiler.isa import ErrorCode, Instruction, Op, ProcessorConfig, encode
from compiler.iss import Machine
from golden.model import ModelConfig, QuantConfig, random_float_model
from golden.quantize import quantize_model
from hw.register_map import MAP_ID, RegisterMap

TOPLEVEL = "nep_top"
#: Small memories: a quick build, and a model that still runs every step.
CFG = ProcessorConfig(lanes=8, program_depth=128, weight_depth=1024, param_depth=256,
                      scratch_depth=512, desc_depth=16, const_depth=8, max_rows=64,
                      max_cols=64)
MAP = RegisterMap(CFG)
STEPS = ("arbitrate", "encoder_fast", "encoder_slow", "predictor", "joint")
#: Where the tests put programs of their own: after the image's (24 words).
EXTRA_PC = 64
#: An undefined opcode.
ILLEGAL = encode(Instruction(0x7E))

#: cocotb side: the image file, the seed, frames to run (set by the pytest wrapper).
IMAGE = os.environ.get("NEP_IMAGE")
SEED = int(os.environ.get("NEP_SEED", "1"))
FRAMES = int(os.environ.get("NEP_FRAMES", "2"))


def reg(name: str) -> int:
    """Byte address of register ``name``."""
    return MAP.address(name)


def small_image(seed: int = 3, *, encoding: str = "int4", sparsity: float = 0.5) -> Image:
    """A compiled model small enough for ``CFG`` (fused LSTMs; int4, 50% sparse unless
    ``encoding`` / ``sparsity`` say otherwise)."""
    quant = QuantConfig(weight_encoding=encoding, sparsity=sparsity)
    mc = ModelConfig(vocabulary=("<b>", "a", "b", "c", "d"), quant=quant, feature_dim=8,
                     fast_hidden=4, slow_hidden=6, enc_dim=6, arbitrator_hidden=4,
                     pred_embed=4, pred_hidden=4, joint_dim=6)
    rng = np.random.default_rng(seed + 2)
    model = quantize_model(random_float_model(mc, seed=seed),
                           [rng.standard_normal((40, mc.feature_dim))], quant=quant)
    return compile_model(model, CFG, fuse_lstm=True)


def word_writes(window: str, index: int, word: int) -> list[tuple[int, int]]:
    """``(address, data)`` of the part writes storing ``word`` at ``window[index]``,
    in order (the last part commits; a descriptor's parts each land as written)."""
    w = MAP.window(window)
    return [(MAP.address(window, index, k), part) for k, part in enumerate(w.split(word))]


def scratch_writes(addr: int, values) -> list[tuple[int, int]]:
    return [(MAP.address("scratch", addr + i), int(v) & 0xFFFF)
            for i, v in enumerate(np.ravel(values))]


def image_writes(image: Image) -> list[tuple[int, int]]:
    """Every bus write that loads ``image`` (``Machine.load``'s equivalent)."""
    out = []
    for window, words in (("program", image.program), ("weights", image.weights),
                          ("params", image.params), ("constants", image.constants),
                          ("descriptors", [int.from_bytes(d.pack(), "little")
                                           for d in image.descriptors])):
        for i, word in enumerate(words):
            out += word_writes(window, i, word)
    for addr, values in image.scratch_init:
        out += scratch_writes(addr, values)
    out += [(reg("PROG_LEN"), len(image.program)), (reg("DESC_COUNT"), len(image.descriptors)),
            (reg("CONST_COUNT"), len(image.constants))]
    return out


def busy_program(n: int, repeats: int) -> list[int]:
    """A run of about ``n * repeats`` cycles: copies of scratch ``100..100+n`` to
    ``300..``; harmless to the model's regions (all below 100)."""
    assert 300 + n <= CFG.scratch_depth
    body = [Instruction(Op.VCOPY, d=300, a=100)] * repeats
    return [encode(i) for i in (Instruction(Op.SETVL, a=n), *body, Instruction(Op.HALT))]


def inputs(rng: np.random.Generator, image: Image) -> dict[str, np.ndarray]:
    """Random step inputs: int8 features, a backlog and a token."""
    feat = image.region("feat")
    return {"feat": np.clip(rng.normal(0, 50, feat.length), -128, 127).astype(int),
            "backlog": np.array([rng.integers(0, 128)]), "token": np.array([rng.integers(0, 5)])}


# ---------------------------------------------------------------- cocotb side


class Device:
    """The DUT seen through an ``AxiLiteMaster``: checked register and window accesses."""

    def __init__(self, dut, axi: AxiLiteMaster):
        self.dut, self.axi = dut, axi

    async def write(self, addr: int, data: int, *, okay: bool = True) -> None:
        resp = (await self.axi.write(addr, data.to_bytes(4, "little"))).resp
        assert resp == (AxiResp.OKAY if okay else AxiResp.SLVERR), \
            f"write 0x{addr:07x} = 0x{data:x}: {resp!r}"

    async def read(self, addr: int, *, okay: bool = True) -> int:
        got = await self.axi.read(addr, 4)
        assert got.resp == (AxiResp.OKAY if okay else AxiResp.SLVERR), \
            f"read 0x{addr:07x}: {got.resp!r}"
        return int.from_bytes(got.data, "little")

    async def writes(self, pairs) -> None:
        for addr, data in pairs:
            await self.write(addr, data)

    async def scratch(self) -> np.ndarray:
        raw = [await self.read(MAP.address("scratch", i)) for i in range(CFG.scratch_depth)]
        return np.array(raw, np.uint16).view(np.int16)

    async def run(self, pc: int, *, limit: int = 20000) -> None:
        """Start at ``pc`` and wait for the interrupt (``IRQ_ENABLE.done`` set)."""
        await self.write(reg("START_PC"), pc)
        await self.write(reg("CTRL"), 1)
        for _ in range(limit):
            if self.dut.irq.value:
                return
            await RisingEdge(self.dut.clk)
        raise AssertionError(f"no interrupt within {limit} cycles of a start at {pc}")

    async def check_run(self, iss: Machine, pc: int, label: str):
        """Run at ``pc`` on both; compare the registers and the whole scratchpad,
        acknowledge the interrupt; return the ISS's ``Run``."""
        want = iss.run(pc)
        await self.run(pc)
        got = {n: await self.read(reg(n)) for n in ("STATUS", "ERROR", "FAULT_PC", "RESULT",
                                                    "VL", "VN", "SYNC_COUNT", "INSTRUCTIONS",
                                                    "IRQ_STATUS")}
        ref = {"STATUS": 0b110 if want.error else 0b010, "ERROR": int(want.error),
               "FAULT_PC": want.fault_pc or 0, "RESULT": iss.result, "VL": iss.vl,
               "VN": iss.vn, "SYNC_COUNT": iss.sync_count, "INSTRUCTIONS": want.instructions,
               "IRQ_STATUS": 0b11 if want.error else 0b01}
        assert got == ref, f"{label}: registers {got} != ISS {ref}"
        rtl = await self.scratch()
        bad = np.flatnonzero(rtl != iss.scratch)
        assert bad.size == 0, (f"{label}: scratch differs at {bad[:8].tolist()}: RTL "
                               f"{rtl[bad[:8]].tolist()} ISS {iss.scratch[bad[:8]].tolist()}")
        await self.write(reg("IRQ_STATUS"), got["IRQ_STATUS"])
        await RisingEdge(self.dut.clk)
        assert not self.dut.irq.value, f"{label}: irq still high after the clear"
        return want


async def _setup(dut, pause: float, seed: int) -> Device:
    """Clock (10 ns), zeroed weight and param RAMs, reset, and an ``AxiLiteMaster`` whose
    channels pause with probability ``pause`` per cycle (none at 0: no per-cycle
    pause coroutines then)."""
    Clock(dut.clk, 10, unit="ns").start()
    # The weight and param RAMs have no reset; the ISS starts them at zero.
    for ram in (dut.weight_mem.ram, dut.param_mem.ram):  # NepTop(sim_rams=True)
        for word in ram.mem:
            word.value = 0
    dut.rst.value = 1
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0
    axi = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "axi", bus_separator="__"), dut.clk, dut.rst)
    rng = random.Random(seed ^ 0x5EED)
    for ch in (axi.write_if.aw_channel, axi.write_if.w_channel, axi.write_if.b_channel,
               axi.read_if.ar_channel, axi.read_if.r_channel):
        if pause:
            ch.set_pause_generator(iter(lambda: rng.random() < pause, None))
    await RisingEdge(dut.clk)
    return Device(dut, axi)


@cocotb.test(timeout_time=2000, timeout_unit="ms")
async def image_runs_through_the_bus_match_the_iss(dut):
    """Load an image through the bus and read it back, run every step for ``FRAMES``
    frames, then the busy rules, an illegal instruction with its interrupt and a
    soft-reset recovery; each run compared with the ISS (registers and the whole
    scratchpad)."""
    dev = await _setup(dut, pause=0.3, seed=SEED)
    image = load_image(Path(IMAGE).read_bytes())
    iss = Machine(image.config)
    iss.load(image)
    rng = np.random.default_rng(SEED)

    assert await dev.read(reg("ID")) == MAP_ID
    assert await dev.read(reg("WORD_BITS")) == CFG.word_bits
    assert await dev.read(reg("WATCHDOG")) == iss.watchdog
    # Scratch has no reset (the ISS's is zero): a host zeroes it before an utterance.
    await dev.writes(scratch_writes(0, np.zeros(CFG.scratch_depth, int)))
    await dev.writes(image_writes(image))
    for addr, data in image_writes(image):  # every word part reads back as written
        assert await dev.read(addr) == data, f"0x{addr:07x}"
    await dev.write(reg("IRQ_ENABLE"), 0b01)

    for t in range(FRAMES):
        for name, values in inputs(rng, image).items():
            region = image.region(name)
            iss.write_scratch(region.addr, values)
            await dev.writes(scratch_writes(region.addr, values))
        for step in STEPS:
            await dev.check_run(iss, image.entry(step), f"frame {t} {step}")

    # A long run: windows refused (nothing changes), registers served, done at the end.
    n = 150
    prog = busy_program(n, repeats=4)
    iss.write_program(EXTRA_PC, prog)
    iss.prog_len = EXTRA_PC + len(prog)
    await dev.writes([p for i, w in enumerate(prog)
                      for p in word_writes("program", EXTRA_PC + i, w)])
    await dev.write(reg("PROG_LEN"), iss.prog_len)
    iss.write_scratch(100, rng.integers(-32768, 32768, n))
    await dev.writes(scratch_writes(100, iss.scratch[100:100 + n]))
    await dev.write(reg("START_PC"), EXTRA_PC)
    await dev.write(reg("CTRL"), 1)
    assert await dev.read(reg("STATUS")) == 0b001
    await dev.write(MAP.address("scratch", 120), 0x1234, okay=False)
    assert await dev.read(MAP.address("weights", 3, 1), okay=False) == 0
    await dev.write(MAP.address("program", 0, 1), 0, okay=False)
    await dev.write(reg("CTRL"), 2)  # soft reset: idle, no interrupt
    assert await dev.read(reg("STATUS")) == 0
    assert await dev.read(reg("IRQ_STATUS")) == 0
    await dev.check_run(iss, EXTRA_PC, "long run")  # the refused writes changed nothing

    # An illegal instruction: ERROR, FAULT_PC, STATUS.error and both interrupt causes.
    await dev.write(reg("IRQ_ENABLE"), 0b10)
    bad_pc = EXTRA_PC + len(prog)
    iss.write_program(bad_pc, [ILLEGAL])
    iss.prog_len = bad_pc + 1
    await dev.writes(word_writes("program", bad_pc, ILLEGAL))
    await dev.write(reg("PROG_LEN"), iss.prog_len)
    assert (await dev.check_run(iss, bad_pc, "illegal opcode")).error == ErrorCode.ILLEGAL_OPCODE
    await dev.write(reg("CTRL"), 2)
    assert await dev.read(reg("STATUS")) == 0
    assert await dev.read(reg("ERROR")) == ErrorCode.ILLEGAL_OPCODE  # kept by soft reset
    await dev.write(reg("IRQ_ENABLE"), 0b01)
    for step in STEPS:
        await dev.check_run(iss, image.entry(step), f"recovery {step}")
