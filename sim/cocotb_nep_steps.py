"""``NepTop`` running the real step sequence of compiled models, through its AXI4-Lite bus.

The cocotb side of ``tests/rtl/test_nep_steps_rtl.py`` (the same cached Verilator build
as ``tests/rtl/test_nep_top_rtl.py``: ``sim.cocotb_nep_top.CFG``). For each image in
``NEP_IMAGES`` (loaded through the bus by cocotbext-axi's ``AxiLiteMaster``), ``NEP_FRAMES``
frames of the host protocol of ``docs/isa.md`` section 5:

    write feat + backlog -> arbitrate -> the encoder branch the RTL's RESULT chooses
    -> write token -> predictor -> joint

After every program the registers (STATUS, ERROR, RESULT, IRQ_STATUS) and the scratch
regions the program writes (outputs and LSTM state, from the image's memory map) are read
through the bus and compared with ``compiler.iss.Machine`` running the same program; the
whole scratchpad is compared once at the end of each model. The arbitrator must switch
branches at least ``MIN_SWITCHES`` times per model; a model whose arbitrator would not
(checked on a copy of the ISS beforehand) has its encoder branch forced from a seeded
pattern instead, and the report says so.

On the first image, one bus-driven engine error: a weight word of the arbitrator's first
layer corrupted through the weights window so that its stream CRC fails; ``arbitrate``
must stop with the ISS's error (``CRC_STREAM``), the error interrupt and STATUS.error;
the word restored, a soft reset, and the rerun matches the ISS again.

Each image is also compared directly with the golden model it was compiled from (the
``.npz`` files of ``NEP_MODELS``, one per image, ``golden.model.save_model``): a
``golden.backend.GoldenBackend`` is stepped with the same inputs (features, backlog, the
branch the RTL ran, token) and, per frame, the RTL's arbitrator decision (RESULT) must
equal ``GoldenBackend.arbitrate``, its ``enc`` (read through the bus) the golden
``encoder_step`` output, its ``pred.h`` the golden ``predictor_step`` output and its
``logits`` ``GoldenBackend.joint(enc, pred)``, bit for bit; after the frames, every LSTM
state region (``h``, ``c`` of fast, slow1, slow2, pred, read through the bus) must equal
the golden states.

A JSON summary (frames, golden-compared frames, branch switches, forced or not, error
code) goes to ``NEP_STEPS_REPORT``.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import cocotb
import numpy as np
from cocotb.triggers import RisingEdge

from compiler.compile import Image, load_image
from compiler.isa import ErrorCode
from compiler.iss import Machine
from golden.backend import GoldenBackend
from golden.model import QuantModel, load_model
from sim.cocotb_nep_top import (CFG, MAP, Device, _setup, image_writes, reg,
                                scratch_writes, word_writes)

IMAGES = [p for p in os.environ.get("NEP_IMAGES", "").split(os.pathsep) if p]
SEED = int(os.environ.get("NEP_SEED", "1"))
FRAMES = int(os.environ.get("NEP_FRAMES", "50"))
REPORT = os.environ.get("NEP_STEPS_REPORT")
#: The golden QuantModel each image was compiled from (same order as ``IMAGES``).
MODELS = [p for p in os.environ.get("NEP_MODELS", "").split(os.pathsep) if p]
MIN_SWITCHES = 5
BRANCHES = ("encoder_fast", "encoder_slow")
#: The scratch regions each program writes (its outputs and the LSTM state it updates).
WRITES = {
    "arbitrate": ("arb.logits", "arb.result"),
    "encoder_fast": ("fast.h", "fast.c", "enc"),
    "encoder_slow": ("slow1.h", "slow1.c", "slow2.h", "slow2.c", "enc"),
    "predictor": ("pred.embed", "pred.h", "pred.c"),
    "joint": ("logits", "joint.result"),
}
STATE = ("fast.h", "fast.c", "slow1.h", "slow1.c", "slow2.h", "slow2.c", "pred.h", "pred.c")


class Steps(Device):
    """``Device`` with block scratch accesses and a per-program check of the regions."""

    async def write_block(self, addr: int, values) -> None:
        """Scratch ``addr..`` = ``values`` in one ``AxiLiteMaster`` call (one write per word)."""
        data = b"".join((int(v) & 0xFFFF).to_bytes(4, "little") for v in np.ravel(values))
        resp = (await self.axi.write(MAP.address("scratch", addr), data)).resp
        assert resp.name == "OKAY", f"scratch write at {addr}: {resp!r}"

    async def read_block(self, addr: int, n: int) -> np.ndarray:
        got = await self.axi.read(MAP.address("scratch", addr), 4 * n)
        assert got.resp.name == "OKAY", f"scratch read at {addr}: {got.resp!r}"
        words = np.frombuffer(bytes(got.data), "<u4")
        return (words & 0xFFFF).astype(np.uint16).view(np.int16)

    async def put(self, iss: Machine, addr: int, values) -> None:
        """The host writing scratch: on the device through the bus, and on the ISS."""
        iss.write_scratch(addr, values)
        await self.write_block(addr, values)

    async def step(self, iss: Machine, image: Image, program: str, label: str,
                   *, error_irq: bool = False):
        """Run ``program`` on both; compare the registers and the regions it writes;
        acknowledge the interrupt. Return the ISS's ``Run``."""
        pc = image.entry(program)
        want = iss.run(pc)
        await self.run(pc)
        names = ("STATUS", "ERROR", "RESULT", "IRQ_STATUS") + (("FAULT_PC",) if want.error
                                                               else ())
        got = {n: await self.read(reg(n)) for n in names}
        ref = {"STATUS": 0b110 if want.error else 0b010, "ERROR": int(want.error),
               "RESULT": iss.result, "IRQ_STATUS": 0b11 if want.error else 0b01}
        if want.error:
            ref["FAULT_PC"] = want.fault_pc or 0
        assert got == ref, f"{label}: registers {got} != ISS {ref}"
        self.regs = got
        self.regions = {}
        if error_irq:
            assert self.dut.irq.value, f"{label}: no error interrupt"
        for name in WRITES[program]:
            r = image.region(name)
            rtl = await self.read_block(r.addr, r.length)
            exp = iss.read_scratch(r.addr, r.length)
            assert np.array_equal(rtl, exp), f"{label}: {name} RTL {rtl.tolist()} ISS {exp.tolist()}"
            self.regions[name] = rtl  # what the bus returned, for the golden comparison
        await self.write(reg("IRQ_STATUS"), got["IRQ_STATUS"])
        await RisingEdge(self.dut.clk)
        assert not self.dut.irq.value, f"{label}: irq still high after the clear"
        return want

    async def whole_scratch(self, iss: Machine, label: str) -> None:
        rtl = await self.read_block(0, CFG.scratch_depth)
        bad = np.flatnonzero(rtl != iss.scratch)
        assert bad.size == 0, (f"{label}: scratch differs at {bad[:8].tolist()}: RTL "
                               f"{rtl[bad[:8]].tolist()} ISS {iss.scratch[bad[:8]].tolist()}")


def frame_inputs(rng: np.random.Generator, image: Image, frames: int) -> list[dict]:
    """Per frame: int8 features, a backlog (0..127) and a token."""
    vocab = image.region("logits").length
    feat = image.region("feat").length
    return [{"feat": np.clip(rng.normal(0, 50, feat), -128, 127).astype(int),
             "backlog": int(rng.integers(0, 128)), "token": int(rng.integers(0, vocab))}
            for _ in range(frames)]


def natural_switches(iss: Machine, image: Image, frames: list[dict]) -> int:
    """Branch switches the arbitrator makes on ``frames`` (on a copy of ``iss``:
    ``arbitrate`` reads only feat and backlog)."""
    m = copy.deepcopy(iss)
    out = []
    for f in frames:
        m.write_scratch(image.region("feat").addr, f["feat"])
        m.write_scratch(image.region("backlog").addr, [f["backlog"]])
        assert not m.run(image.entry("arbitrate")).error
        out.append(m.result)
    return sum(a != b for a, b in zip(out, out[1:]))


def crc_corruption(iss: Machine, image: Image) -> tuple[int, int, ErrorCode]:
    """A weight word of ``arb.hidden`` and a flipped bit that make ``arbitrate`` fail
    with CRC_STREAM on the ISS (the first such bit); ``(index, corrupted word, code)``."""
    layer = image.memory_map["layers"]["arb.hidden"]
    for index in range(layer["weight_base"], layer["weight_base"] + layer["words"]):
        for bit in range(CFG.word_bits):
            m = copy.deepcopy(iss)
            word = image.weights[index] ^ (1 << bit)
            m.write_weights(index, [word])
            if m.run(image.entry("arbitrate")).error == ErrorCode.CRC_STREAM:
                return index, word, ErrorCode.CRC_STREAM
    raise AssertionError("no single-bit corruption of arb.hidden gives CRC_STREAM")


async def engine_error(dev: Steps, iss: Machine, image: Image) -> dict:
    """Corrupt a weight word through the bus, expect the ISS's engine error with its
    interrupt; restore the word, soft reset, rerun and match the ISS."""
    index, bad, code = crc_corruption(iss, image)
    await dev.write(reg("IRQ_ENABLE"), 0b11)
    iss.write_weights(index, [bad])
    await dev.writes(word_writes("weights", index, bad))
    run = await dev.step(iss, image, "arbitrate", "corrupt weight", error_irq=True)
    assert run.error == code, f"ISS error {run.error!r}, expected {code!r}"
    iss.write_weights(index, [image.weights[index]])
    await dev.writes(word_writes("weights", index, image.weights[index]))
    await dev.write(reg("CTRL"), 2)  # soft reset: idle, ERROR kept
    assert await dev.read(reg("STATUS")) == 0
    assert await dev.read(reg("ERROR")) == code
    await dev.write(reg("IRQ_ENABLE"), 0b01)
    await dev.step(iss, image, "arbitrate", "after soft reset arbitrate")
    for program in (BRANCHES[await dev.read(reg("RESULT"))], "predictor", "joint"):
        await dev.step(iss, image, program, f"after soft reset {program}")
    return {"weight_index": index, "error": code.name, "error_code": int(code)}


def same(label: str, rtl, want) -> None:
    """Bit-for-bit equality of an RTL region (int16 words) and a golden integer array."""
    rtl, want = np.asarray(rtl, np.int64), np.asarray(want, np.int64)
    assert rtl.shape == want.shape and np.array_equal(rtl, want), (
        f"{label}: RTL {rtl.tolist()} != golden {want.tolist()}")


async def run_model(dev: Steps, iss: Machine, image: Image, k: int, frames: int,
                    golden: GoldenBackend) -> dict:
    rng = np.random.default_rng(SEED * 1000 + k)
    # The utterance starts with the state (and every region the image uses) zeroed.
    await dev.put(iss, 0, np.zeros(image.memory_map["scratch_used"], int))
    await dev.writes(image_writes(image))
    for addr, values in image.scratch_init:
        iss.write_scratch(addr, values)
    for name in STATE:
        assert not iss.read_scratch(image.region(name).addr, image.region(name).length).any()
    await dev.write(reg("IRQ_ENABLE"), 0b01)

    inputs = frame_inputs(rng, image, frames)
    forced = natural_switches(iss, image, inputs) < MIN_SWITCHES
    pattern = np.random.default_rng(SEED + 77 * k).integers(0, 2, frames)
    branches = []
    enc_state, pred_state = golden.initial_encoder_state(), golden.initial_predictor_state()
    golden_frames = 0
    for t, f in enumerate(inputs):
        at = f"model {k} frame {t}"
        feat = np.asarray(f["feat"]).astype(np.int8)
        await dev.put(iss, image.region("feat").addr, f["feat"])
        await dev.put(iss, image.region("backlog").addr, [f["backlog"]])
        await dev.step(iss, image, "arbitrate", f"{at} arbitrate")
        decision = dev.regs["RESULT"]
        want = golden.arbitrate(feat, f["backlog"])
        assert decision == want, f"{at}: RTL arbitrator {decision} != golden {want}"
        branch = int(pattern[t]) if forced else decision
        branches.append(branch)
        await dev.step(iss, image, BRANCHES[branch], f"{at} {BRANCHES[branch]}")
        enc, enc_state = golden.encoder_step(branch, feat, enc_state)
        same(f"{at} enc (golden {BRANCHES[branch]})", dev.regions["enc"], enc)
        await dev.put(iss, image.region("token").addr, [f["token"]])
        await dev.step(iss, image, "predictor", f"{at} predictor")
        pred, pred_state = golden.predictor_step(f["token"], pred_state)
        same(f"{at} pred.h (golden predictor_step)", dev.regions["pred.h"], pred)
        await dev.step(iss, image, "joint", f"{at} joint")
        same(f"{at} logits (golden joint)", dev.regions["logits"], golden.joint(enc, pred))
        golden_frames += 1
    # The LSTM states the frames leave, read through the bus, against the golden ones.
    states = {"fast": enc_state.fast, "slow1": enc_state.slow1, "slow2": enc_state.slow2,
              "pred": pred_state}
    for lstm, st in states.items():
        for part in ("h", "c"):
            r = image.region(f"{lstm}.{part}")
            same(f"model {k} end state {lstm}.{part}", await dev.read_block(r.addr, r.length),
                 getattr(st, part))
    golden_states = 2 * len(states)
    switches = sum(a != b for a, b in zip(branches, branches[1:]))
    assert switches >= MIN_SWITCHES, f"model {k}: {switches} branch switches"
    out = {"image": k, "frames": frames, "programs": 4 * frames, "switches": switches,
           "slow_frames": sum(branches), "forced": bool(forced),
           "golden_frames": golden_frames, "golden_states": golden_states}
    if k == 0:
        out["engine_error"] = await engine_error(dev, iss, image)
    await dev.whole_scratch(iss, f"model {k} end")
    return out


@cocotb.test(timeout_time=3000, timeout_unit="ms")
async def step_sequences_match_the_iss(dut):
    """Every image: loaded through the bus, ``FRAMES`` frames of the step sequence, each
    program compared with the ISS; the first image also takes an engine error."""
    assert IMAGES, "NEP_IMAGES is empty"
    assert len(MODELS) == len(IMAGES), f"NEP_MODELS: {len(MODELS)} models, {len(IMAGES)} images"
    dev = Steps(dut, (await _setup(dut, pause=0.2, seed=SEED)).axi)
    iss = Machine(CFG)
    # Scratch has no reset (the ISS's is zero): zero it once; later models carry the
    # previous model's scratch over, on both sides.
    await dev.write_block(0, np.zeros(CFG.scratch_depth, int))
    report = []
    for k, path in enumerate(IMAGES):
        image = load_image(Path(path).read_bytes())
        iss.load(image)  # the device keeps what the previous image left; so does the ISS
        model = load_model(MODELS[k])
        assert isinstance(model, QuantModel), f"{MODELS[k]}: not a QuantModel"
        report.append(await run_model(dev, iss, image, k, FRAMES, GoldenBackend(model)))
        dut._log.warning("model %d: %s", k, report[-1])
    if REPORT:
        Path(REPORT).write_text(json.dumps(report))
