"""cocotb side of ``sim.rtl_steps``: the benchmark model's compute steps on ``NepTop``.

The image in ``NEP_IMAGE`` is loaded through the AXI4-Lite bus (cocotbext-axi's
``AxiLiteMaster``, no pauses, writes queued back to back); the feature vector in
``NEP_FEAT`` is written, and arbitrate, encoder_fast, encoder_slow, predictor and joint
run once each, in the order and with the inputs of ``sim.steps_bench`` (backlog 0,
token 0, zero states, the fast encoder's output into joint). After each run the CYCLES,
MACS and INSTRUCTIONS counters and RESULT are read through the bus. ``compiler.iss.Machine``
runs the same programs on the same scratch writes; RESULT and the step's outputs must
match. The per-step figures go to ``NEP_RTL_STEPS_REPORT`` as JSON.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge, with_timeout
from cocotbext.axi import AxiLiteBus, AxiLiteMaster, AxiResp

from compiler.compile import load_image
from compiler.iss import Machine
from hw.register_map import MAP_ID, RegisterMap

IMAGE = os.environ.get("NEP_IMAGE")
FEAT = os.environ.get("NEP_FEAT")
REPORT = os.environ.get("NEP_RTL_STEPS_REPORT")
#: Outputs each step writes, compared with the ISS after the run.
OUTPUTS = {"arbitrate": ("arb.logits",), "encoder_fast": ("fast.h", "fast.c", "enc"),
           "encoder_slow": ("slow1.h", "slow1.c", "slow2.h", "slow2.c", "enc"),
           "predictor": ("pred.h", "pred.c"), "joint": ("logits",)}


class Dev:
    def __init__(self, dut, axi: AxiLiteMaster, regmap: RegisterMap):
        self.dut, self.axi, self.map = dut, axi, regmap

    def reg(self, name: str) -> int:
        return self.map.address(name)

    async def write(self, addr: int, data: int) -> None:
        resp = (await self.axi.write(addr, int(data).to_bytes(4, "little"))).resp
        assert resp == AxiResp.OKAY, f"write 0x{addr:07x}: {resp!r}"

    async def read(self, addr: int) -> int:
        got = await self.axi.read(addr, 4)
        assert got.resp == AxiResp.OKAY, f"read 0x{addr:07x}: {got.resp!r}"
        return int.from_bytes(got.data, "little")

    def queue_words(self, window: str, words) -> None:
        """Queue every word of ``window`` (its parts as one multi-beat write, part 0 first,
        so the last part commits; a descriptor's parts each land as written)."""
        w = self.map.window(window)
        nbytes = 4 * w.parts
        for i, word in enumerate(words):
            self.axi.init_write(self.map.address(window, i), int(word).to_bytes(nbytes, "little"))

    def queue_scratch(self, addr: int, values) -> None:
        data = b"".join((int(v) & 0xFFFF).to_bytes(4, "little") for v in np.ravel(values))
        self.axi.init_write(self.map.address("scratch", addr), data)

    async def read_scratch(self, addr: int, n: int) -> np.ndarray:
        got = await self.axi.read(self.map.address("scratch", addr), 4 * n)
        assert got.resp == AxiResp.OKAY, f"scratch read at {addr}: {got.resp!r}"
        return (np.frombuffer(bytes(got.data), "<u4") & 0xFFFF).astype(np.uint16).view(np.int16)

    async def run(self, pc: int, limit: int) -> None:
        await self.write(self.reg("START_PC"), pc)
        await self.write(self.reg("CTRL"), 1)
        if not self.dut.irq.value:
            await with_timeout(RisingEdge(self.dut.irq), 10 * limit, "ns")


@cocotb.test(timeout_time=1800, timeout_unit="sec")
async def rtl_steps(dut):
    image = load_image(Path(IMAGE).read_bytes())
    feat = np.array(json.loads(Path(FEAT).read_text()), int)
    cfg = image.config
    regmap = RegisterMap(cfg)
    Clock(dut.clk, 10, unit="ns").start()
    dut.rst.value = 1
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0
    axi = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "axi", bus_separator="__"), dut.clk, dut.rst)
    await RisingEdge(dut.clk)
    dev = Dev(dut, axi, regmap)
    assert await dev.read(dev.reg("ID")) == MAP_ID

    iss = Machine(cfg)
    iss.load(image)
    t0 = cocotb.utils.get_sim_time("ns")
    import time
    wall = time.perf_counter()
    # Weight and param RAMs have no reset (the ISS's are zero): the image overwrites every
    # used word. Scratch is zeroed through the bus, like a host at the utterance start.
    dev.queue_scratch(0, np.zeros(cfg.scratch_depth, int))
    for window, words in (("program", image.program), ("weights", image.weights),
                          ("params", image.params), ("constants", image.constants),
                          ("descriptors", [int.from_bytes(d.pack(), "little")
                                           for d in image.descriptors])):
        dev.queue_words(window, words)
    for addr, values in image.scratch_init:
        dev.queue_scratch(addr, values)
    await axi.wait_write()
    for name, n in (("PROG_LEN", len(image.program)), ("DESC_COUNT", len(image.descriptors)),
                    ("CONST_COUNT", len(image.constants)), ("IRQ_ENABLE", 0b01)):
        await dev.write(dev.reg(name), n)
    load = {"sim_cycles": int((cocotb.utils.get_sim_time("ns") - t0) // 10),
            "wall_s": round(time.perf_counter() - wall, 2)}
    dut._log.warning("image loaded through the bus: %s", load)
    # Spot check: a few words of each big window read back as written.
    w = regmap.window("weights")
    for i in np.linspace(0, len(image.weights) - 1, 7).astype(int):
        parts = [await dev.read(regmap.address("weights", int(i), k)) for k in range(w.parts)]
        assert w.join(parts) == image.weights[i], f"weight word {i}"

    def put(name, values):
        r = image.region(name)
        iss.write_scratch(r.addr, values)
        dev.queue_scratch(r.addr, values)

    records = []

    async def step(program: str):
        await axi.wait_write()
        want = iss.run(image.entry(program))
        assert not want.error, f"ISS {program}: {want.error!r}"
        await dev.run(image.entry(program), limit=4 * want.cycles + 10000)
        got = {n: await dev.read(dev.reg(n)) for n in
               ("STATUS", "ERROR", "RESULT", "CYCLES", "MACS", "ZERO_ACTS", "INSTRUCTIONS",
                 "IRQ_STATUS")}
        assert got["STATUS"] == 0b010 and got["ERROR"] == 0, f"{program}: {got}"
        assert got["RESULT"] == iss.result, f"{program}: RESULT {got['RESULT']} ISS {iss.result}"
        assert got["INSTRUCTIONS"] == want.instructions, f"{program}: {got} ISS {want}"
        for name in OUTPUTS[program]:
            r = image.region(name)
            rtl = await dev.read_scratch(r.addr, r.length)
            assert np.array_equal(rtl, iss.read_scratch(r.addr, r.length)), f"{program}: {name}"
        await dev.write(dev.reg("IRQ_STATUS"), got["IRQ_STATUS"])
        records.append({"step": program, "cycles": got["CYCLES"], "macs": got["MACS"],
                        "zero_acts": got["ZERO_ACTS"],
                        "instructions": got["INSTRUCTIONS"], "iss_cycles": want.cycles,
                        "iss_macs": want.macs, "iss_instructions": want.instructions})
        dut._log.warning("%s", records[-1])

    # steps_bench's sequence: arbitrate(feat, 0); encoder fast and slow from zero state;
    # predictor(token 0) from zero state; joint(fast encoder output, predictor output).
    put("feat", feat)
    put("backlog", [0])
    await step("arbitrate")
    await step("encoder_fast")
    enc_fast = iss.read_scratch(image.region("enc").addr, image.region("enc").length).copy()
    await step("encoder_slow")
    put("token", [0])
    await step("predictor")
    put("enc", enc_fast)
    await step("joint")
    if REPORT:
        Path(REPORT).write_text(json.dumps({"load": load, "steps": records}))
