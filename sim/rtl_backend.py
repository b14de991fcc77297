"""The golden pipeline's compute backend on the RTL: ``NepTop`` under Verilator, over AXI4-Lite.

:class:`RtlBackend` is :class:`compiler.iss.IssBackend`'s host protocol (``docs/isa.md``
section 5: write a step's inputs and the state it continues from into scratch, run the
step's program, read its outputs) with the device on the other side of the bus. It
inherits the protocol itself (argument checks, which regions each step writes and reads,
step costs) and overrides its device-access methods (the extension point documented
in :class:`~compiler.iss.IssBackend`):

* ``write_region`` updates the ISS machine's scratch, which here is the **shadow** of the
  device's scratch (what the host knows is there), and marks the entries that changed;
* ``run_step`` sends only those entries over the bus, starts the program, waits for the
  interrupt's rising edge (no per-cycle polling), reads the status and counter registers
  and the regions the host reads after that step in a few bursts, into the shadow, and
  sets the shadow's ``RESULT``;
* encoder states stay on chip (:class:`ChipState`): the pipeline always continues the
  encoder from the last state, so reading it back after every frame (most of the bus
  traffic) would be wasted. Predictor states are values, as beam search needs.

The pipeline is synchronous and cocotb is not: the pipeline runs in a thread started by
``cocotb.task.bridge`` and each ``run_step`` is one ``cocotb.task.resume`` call, so a step
costs one switch between the two. :class:`HostBus` is the bus side (image load, step run).

:func:`iss_step_cycles` gives the cycles of each step on the ISS cycle model, the cost
model the arbitrator's backlog uses on both backends; every RTL run must take exactly
that many cycles.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from cocotb.task import resume
from cocotb.triggers import RisingEdge, with_timeout
from cocotbext.axi import AxiLiteMaster, AxiResp

from compiler.compile import PROGRAMS, Image
from compiler.iss import IssBackend, Machine
from golden.lstm import LSTMState
from hw.register_map import MAP_ID, RegisterMap

__all__ = ["CHIP_STATES", "READS", "RESULT_STEPS", "ChipState", "DeviceRun", "HostBus",
           "RtlBackend", "RtlError", "iss_step_cycles", "read_spans"]

#: Scratch regions the host reads after each step: the outputs, and the predictor's
#: state (beam search keeps several, so it leaves the chip as a value).
READS = {
    "arbitrate": (),
    "encoder_fast": ("enc",),
    "encoder_slow": ("enc",),
    "predictor": ("pred.h", "pred.c"),
    "joint": ("logits",),
}
#: State regions each step leaves on chip without reading them (:class:`ChipState`).
CHIP_STATES = {"encoder_fast": ("fast",), "encoder_slow": ("slow1", "slow2")}
#: Two spans closer than this many entries are read as one burst (a read costs a bus
#: transaction per entry, so a short gap is cheaper to read than a second burst to set up).
MERGE_GAP = 4
#: Steps whose ``RESULT`` the host uses (the arbitrator's decision).
RESULT_STEPS = ("arbitrate",)
#: Counter registers read after every run, in one burst.
COUNTER_REGS = ("CYCLES", "INSTRUCTIONS", "MACS", "ZERO_ACTS", "STALLS")
#: Simulation clock period (ns), as ``sim.cocotb_nep_top._setup`` starts it. Simulated
#: time does not matter: the report's clock is applied to the cycle counts.
CLOCK_NS = 10


class RtlError(RuntimeError):
    """The device disagreed with the ISS or ended a step with an error."""


@dataclass(frozen=True)
class DeviceRun:
    """One program run on the device, as its counters report it (``result``: the
    ``RESULT`` register for :data:`RESULT_STEPS`, else 0: not read)."""

    step: str
    cycles: int
    instructions: int
    macs: int
    zero_acts: int
    stalls: int
    result: int


def iss_step_cycles(image: Image) -> dict[str, int]:
    """Cycles of one call of each step on the ISS cycle model (zero inputs).

    Each program is straight-line and every instruction's cycles depend only on its
    descriptor or vector length, so one run per step gives the cycles of every call.
    """
    machine = Machine(image.config)
    machine.load(image)
    out = {}
    for step in PROGRAMS:
        run = machine.run(image.entry(step))
        if run.error:
            raise RtlError(f"ISS: program {step} halted with {run.error.name} at PC "
                           f"{run.fault_pc}")
        out[step] = run.cycles
    return out


def read_spans(image: Image, names, gap: int = MERGE_GAP) -> tuple[tuple[int, int], ...]:
    """``(addr, length)`` bursts covering the scratch regions ``names``, merging regions
    less than ``gap`` entries apart."""
    spans = sorted((image.region(n).addr, image.region(n).end) for n in names)
    merged: list[list[int]] = []
    for lo, hi in spans:
        if merged and lo - merged[-1][1] < gap:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    return tuple((lo, hi - lo) for lo, hi in merged)


def _runs(addrs) -> list[tuple[int, int]]:
    """Sorted addresses -> ``(first, count)`` runs of consecutive addresses."""
    out: list[list[int]] = []
    for a in addrs:
        if out and a == out[-1][0] + out[-1][1]:
            out[-1][1] += 1
        else:
            out.append([a, 1])
    return [(a, n) for a, n in out]


class HostBus:
    """The host's side of ``NepTop``'s AXI4-Lite bus (cocotbext-axi ``AxiLiteMaster``).

    Parameters
    ----------
    dut
        The cocotb handle of ``nep_top`` (its ``clk`` and ``irq``).
    axi : AxiLiteMaster
    image : Image
        Gives the register map (its configuration) and, for :meth:`load`, the contents.
    """

    def __init__(self, dut, axi: AxiLiteMaster, image: Image):
        if not isinstance(image, Image):
            raise TypeError(f"image must be a compiler Image, got {type(image).__name__}")
        self.dut, self.axi, self.image = dut, axi, image
        self.map = RegisterMap(image.config)
        self._start_pc: int | None = None
        self._irq_pending = False

    def reg(self, name: str) -> int:
        return self.map.address(name)

    async def write(self, name: str, value: int) -> None:
        resp = (await self.axi.write(self.reg(name), int(value).to_bytes(4, "little"))).resp
        if resp != AxiResp.OKAY:
            raise RtlError(f"write {name} = {value}: {resp!r}")

    async def read_words(self, addr: int, n: int) -> np.ndarray:
        """``n`` consecutive 32-bit words from byte address ``addr`` (one burst)."""
        got = await self.axi.read(addr, 4 * n)
        if got.resp != AxiResp.OKAY:
            raise RtlError(f"read of {n} words at 0x{addr:07x}: {got.resp!r}")
        return np.frombuffer(bytes(got.data), "<u4")

    async def read_regs(self, names) -> dict[str, int]:
        """Consecutive registers ``names`` in one burst."""
        words = await self.read_words(self.reg(names[0]), len(names))
        if self.reg(names[-1]) != self.reg(names[0]) + 4 * (len(names) - 1):
            raise ValueError(f"registers {names} are not consecutive")
        return dict(zip(names, map(int, words)))

    async def read_scratch(self, addr: int, n: int) -> np.ndarray:
        words = await self.read_words(self.map.address("scratch", addr), n)
        return (words & 0xFFFF).astype(np.uint16).view(np.int16)

    async def read_spans(self, spans) -> list[np.ndarray]:
        """Scratch ``(addr, n)`` bursts."""
        return [await self.read_scratch(addr, n) for addr, n in spans]

    def queue_scratch(self, addr: int, values) -> None:
        """Queue a write of scratch ``addr..`` (one bus write per entry, back to back)."""
        data = b"".join((int(v) & 0xFFFF).to_bytes(4, "little") for v in np.ravel(values))
        self.axi.init_write(self.map.address("scratch", addr), data)

    def _queue_words(self, window: str, words) -> None:
        nbytes = 4 * self.map.window(window).parts  # parts in order: the last one commits
        for i, word in enumerate(words):
            self.axi.init_write(self.map.address(window, i), int(word).to_bytes(nbytes, "little"))

    async def load(self) -> None:
        """Check the device, zero its scratch (it has no reset), load the image, set
        ``PROG_LEN``, ``DESC_COUNT``, ``CONST_COUNT`` and enable the done interrupt.

        The weight and parameter memories (most of an image) are preloaded through the
        simulator (``nep_sim_ram.mem``), as a boot loader or DMA would fill them, and
        spot-checked through the bus; everything else is written through the bus. A full
        bus load of a small model is ~40 000 bus writes (a minute of simulation);
        ``tests/rtl/test_nep_steps_rtl.py`` covers loading through the bus.
        """
        image, cfg = self.image, self.image.config
        ident = await self.read_regs(("ID",))
        if ident["ID"] != MAP_ID:
            raise RtlError(f"device ID 0x{ident['ID']:08x}, expected 0x{MAP_ID:08x}")
        want = {"LANES": cfg.lanes, "SCRATCH_DEPTH": cfg.scratch_depth,
                "WEIGHT_DEPTH": cfg.weight_depth, "PARAM_DEPTH": cfg.param_depth}
        for name, value in want.items():
            got = (await self.read_regs((name,)))[name]
            if got != value:
                raise RtlError(f"device {name} = {got}, the image is compiled for {value}")
        for ram, words in ((self.dut.weight_mem.ram, image.weights),
                           (self.dut.param_mem.ram, image.params)):
            cells = ram.mem
            for i, word in enumerate(words):
                cells[i].value = int(word)
        self.queue_scratch(0, np.zeros(cfg.scratch_depth, int))
        for window, words in (("program", image.program), ("constants", image.constants),
                              ("descriptors", [int.from_bytes(d.pack(), "little")
                                               for d in image.descriptors])):
            self._queue_words(window, words)
        for addr, values in image.scratch_init:
            self.queue_scratch(addr, values)
        await self.axi.wait_write()
        for window, words in (("weights", image.weights), ("params", image.params)):
            w = self.map.window(window)
            for i in np.unique(np.linspace(0, len(words) - 1, 7).astype(int)):
                got = await self.read_words(self.map.address(window, int(i)), w.parts)
                if w.join([int(x) for x in got]) != words[i]:
                    raise RtlError(f"{window} word {i} reads back {w.join(got)}, loaded "
                                   f"{words[i]}")
        for name, n in (("PROG_LEN", len(image.program)),
                        ("DESC_COUNT", len(image.descriptors)),
                        ("CONST_COUNT", len(image.constants)), ("IRQ_ENABLE", 0b01)):
            await self.write(name, n)

    async def run(self, step: str, writes, reads, *, limit: int) -> tuple[DeviceRun, list]:
        """Write ``writes`` (``(addr, values)``), run ``step``, wait for the interrupt
        (at most ``limit`` cycles), check a clean halt, read the counters, ``RESULT``
        (for :data:`RESULT_STEPS`) and ``reads`` (``(addr, n)`` bursts).

        The interrupt is acknowledged by the next run's first write: the queue of writes
        is in order, so ``irq`` falls before the next start and its next rising edge is
        that run's end.

        Returns the run's counters and the values of each read burst.
        """
        if self._irq_pending:
            self.axi.init_write(self.reg("IRQ_STATUS"), (0b01).to_bytes(4, "little"))
        for addr, values in writes:
            self.queue_scratch(addr, values)
        pc = self.image.entry(step)
        if pc != self._start_pc:
            self.axi.init_write(self.reg("START_PC"), pc.to_bytes(4, "little"))
            self._start_pc = pc
        self.axi.init_write(self.reg("CTRL"), (1).to_bytes(4, "little"))
        await with_timeout(RisingEdge(self.dut.irq), CLOCK_NS * limit, "ns")
        self._irq_pending = True
        status = (await self.read_regs(("STATUS",)))["STATUS"]
        if status != 0b010:  # not done, or done with an error (STATUS.error = ERROR != 0)
            fault = await self.read_regs(("ERROR", "FAULT_PC"))
            raise RtlError(f"{step}: STATUS {status:03b}, ERROR {fault['ERROR']} at PC "
                           f"{fault['FAULT_PC']}")
        result = (await self.read_regs(("RESULT",)))["RESULT"] if step in RESULT_STEPS else 0
        counters = await self.read_regs(COUNTER_REGS)
        values = await self.read_spans(reads)
        run = DeviceRun(step, counters["CYCLES"], counters["INSTRUCTIONS"], counters["MACS"],
                        counters["ZERO_ACTS"], counters["STALLS"], result)
        return run, values


class ChipState:
    """An encoder LSTM state kept on chip: what an encoder step left in ``prefix.h`` and
    ``prefix.c``, read through the bus only if ``h`` or ``c`` is asked for.

    The pipeline always continues the encoder from the state the last step returned,
    which is then already on the device: no bus traffic either way. Reading ``h``/``c``
    of a state a later step has overwritten (one not read before) raises
    :class:`RtlError`.
    """

    __slots__ = ("_backend", "prefix", "version", "_values")

    def __init__(self, backend: RtlBackend, prefix: str, version: int):
        self._backend, self.prefix, self.version = backend, prefix, version
        self._values = None

    @property
    def on_chip(self) -> bool:
        return self._backend._versions[self.prefix] == self.version

    def values(self) -> LSTMState:
        """The state as an ``LSTMState`` (read from the device the first time)."""
        if self._values is None:
            if not self.on_chip:
                raise RtlError(f"encoder state {self.prefix} version {self.version} was "
                               "overwritten on the device before it was read")
            self._values = self._backend._fetch_state(self.prefix)
        return self._values

    @property
    def h(self) -> np.ndarray:
        return self.values().h

    @property
    def c(self) -> np.ndarray:
        return self.values().c


class RtlBackend(IssBackend):
    """:class:`golden.backend.Backend` on ``NepTop`` (see the module docstring).

    Create it in the cocotb coroutine after :meth:`HostBus.load`; call its methods only
    from a thread started with ``cocotb.task.bridge``.

    Parameters
    ----------
    bus : HostBus
        A bus whose image is loaded; the device's scratch must then hold exactly what
        the image's load leaves (zeros and ``scratch_init``).
    step_cycles : mapping of str to int
        ISS cycles of each step (:func:`iss_step_cycles`); a run taking other cycles
        raises :class:`RtlError`.

    Notes
    -----
    Encoder states are :class:`ChipState` handles (see there); predictor states are
    values (``LSTMState``), read after every predictor step.

    Attributes
    ----------
    runs : list of DeviceRun
        Every program run, in order.
    calls : dict
        Runs of each step so far.
    bus_words : dict
        Scratch entries written and read through the bus by the steps.
    """

    def __init__(self, bus: HostBus, *, step_cycles):
        if not isinstance(bus, HostBus):
            raise TypeError(f"bus must be a HostBus, got {type(bus).__name__}")
        super().__init__(bus.image)
        missing = set(PROGRAMS) - set(step_cycles)
        if missing:
            raise ValueError(f"step_cycles lacks {sorted(missing)}")
        self.bus = bus
        self.step_cycles = {s: int(step_cycles[s]) for s in PROGRAMS}
        self.runs: list[DeviceRun] = []
        self.calls = dict.fromkeys(PROGRAMS, 0)
        self.bus_words = {"written": 0, "read": 0}
        self._dirty: set[int] = set()
        # Scratch entries whose shadow is stale (a program wrote them, the host did not
        # read them): a host write there cannot be skipped.
        self._stale: set[int] = set()
        self._versions = {p: 0 for ps in CHIP_STATES.values() for p in ps}
        self._reads = {s: read_spans(self.image, READS[s]) for s in PROGRAMS}
        self._device_run = resume(self.bus.run)
        self._device_read = resume(self.bus.read_spans)

    def write_region(self, name: str, values) -> None:
        """Write ``values`` into the shadow and mark the entries to send before the next
        run: those that changed, and stale ones (see :meth:`run_step`)."""
        region = self.image.region(name)
        addr, n = region.addr, region.length
        before = self.machine.read_scratch(addr, n)
        super().write_region(name, values)  # checks the shape; the shadow takes the values
        changed = np.flatnonzero(before != self.machine.read_scratch(addr, n))
        self._dirty.update((addr + changed).tolist())
        stale = self._stale.intersection(range(addr, addr + n))
        self._dirty.update(stale)
        self._stale.difference_update(stale)

    def put_state(self, prefix: str, state) -> None:
        """As :meth:`IssBackend.put_state`; a :class:`ChipState` still on the device
        costs nothing."""
        if (isinstance(state, ChipState) and state._backend is self
                and state.prefix == prefix and state.on_chip):
            return  # the device holds it already
        if isinstance(state, ChipState):
            state = state.values()
        super().put_state(prefix, state)

    def get_state(self, prefix: str):
        """An encoder state as a :class:`ChipState` (no bus traffic); the predictor's as
        an ``LSTMState`` (read after its step)."""
        if prefix not in self._versions:
            return super().get_state(prefix)
        return ChipState(self, prefix, self._versions[prefix])

    def _fetch_state(self, prefix: str) -> LSTMState:
        """Read an on-chip state's regions through the bus (into the shadow)."""
        spans = read_spans(self.image, (f"{prefix}.h", f"{prefix}.c"))
        values = self._device_read(spans)
        for (addr, n), v in zip(spans, values):
            self.machine.scratch[addr:addr + n] = v
            self._stale.difference_update(range(addr, addr + n))
        self.bus_words["read"] += sum(n for _, n in spans)
        return super().get_state(prefix)

    def run_step(self, step: str) -> DeviceRun:
        """Send the marked entries, run ``step`` on the device, check its cycles against
        the ISS cycle model, read its outputs into the shadow and mark the states it
        left on chip stale (a later host write there must go over the bus).

        Raises
        ------
        RtlError
            If the run ends with an error, times out, or takes other cycles than the
            ISS cycle model.
        """
        scratch = self.machine.scratch
        writes = [(a, scratch[a:a + n]) for a, n in _runs(sorted(self._dirty))]
        self._dirty.clear()
        limit = 4 * self.step_cycles[step] + 10000
        run, values = self._device_run(step, writes, self._reads[step], limit=limit)
        if run.cycles != self.step_cycles[step]:
            raise RtlError(f"{step}: the RTL took {run.cycles} cycles, the ISS cycle model "
                           f"{self.step_cycles[step]}")
        for (addr, n), v in zip(self._reads[step], values):
            scratch[addr:addr + n] = v
        for prefix in CHIP_STATES.get(step, ()):
            self._versions[prefix] += 1
            for part in ("h", "c"):
                region = self.image.region(f"{prefix}.{part}")
                self._stale.update(range(region.addr, region.end))
        if step in RESULT_STEPS:
            self.machine.result = run.result
        self.runs.append(run)
        self.calls[step] += 1
        self.bus_words["written"] += sum(len(v) for _, v in writes)
        self.bus_words["read"] += sum(n for _, n in self._reads[step])
        return run
