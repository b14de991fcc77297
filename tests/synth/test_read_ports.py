"""Read ports per memory, checked before Yosys runs (issue 6, 16 lanes on the ECP5-85F).

Yosys 0.70's ``memory_libmap`` crashed on the processor at 16 lanes: the activation buffer
was one memory with 16 read ports. The MAC array now has one memory per lane, and
``hw.synth.synthesize`` refuses a design with too many read ports on a part with a limit
(``Part.max_read_ports``) with a clear reason, rather than a Yosys crash a minute later.
These tests elaborate to RTLIL only, except the last: Yosys's memory passes (10 to 15
seconds per part), for where the processor's memories go.
"""

import subprocess

import pytest

from amaranth import Module
from amaranth.back import rtlil
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from compiler.isa import ProcessorConfig
from hw.processor import Processor
from hw.synth import (PARTS, PROCESSOR_CONFIGS, Design, memory_mapping, memory_read_ports,
                      processor_design, synthesize, tool)


class ManyReaders(wiring.Component):
    """One 16 x 8-bit memory with ``n`` read ports, each at its own address."""

    def __init__(self, n: int):
        self.n = n
        super().__init__({"addr": In(4 * n), "wdata": In(8), "we": In(1), "data": Out(8 * n)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = mem = Memory(shape=8, depth=16, init=[])
        wr = mem.write_port()
        m.d.comb += [wr.addr.eq(self.addr[:4]), wr.data.eq(self.wdata), wr.en.eq(self.we)]
        for i in range(self.n):
            rd = mem.read_port()
            m.d.comb += [rd.addr.eq(self.addr[4 * i:4 * i + 4]),
                         self.data[8 * i:8 * i + 8].eq(rd.data)]
        return m


def test_processor_l16_ecp5_has_one_activation_memory_per_lane():
    part = PARTS["ecp5-85f"]
    ports = memory_read_ports(processor_design(part, 16).rtlil)
    acts = {k: n for k, n in ports.items() if k.split("/")[1].startswith("acts")}
    assert len(acts) == 16 and set(acts.values()) == {1}, acts
    assert max(ports.values()) <= part.max_read_ports, ports
    assert ports["top.inner.cpu/scratch_mem"] == 2


def test_too_many_read_ports_stop_before_yosys(tmp_path):
    part = PARTS["ecp5-85f"]
    n = part.max_read_ports + 1
    text = rtlil.convert(ManyReaders(n), name="top", emit_src=False)
    assert memory_read_ports(text) == {"top/mem": n}
    design = Design(name="many_readers", config=dict(lanes=1), depths="16 x 8b", rtlil=text)
    rec = synthesize(design, part, tmp_path)
    assert rec["ok"] is False and rec["stage"] == "precheck"
    assert "top/mem" in rec["reason"] and f"more than {part.max_read_ports}" in rec["reason"]
    assert not (tmp_path / "yosys.log").exists()


#: Where the 8-lane processor's own memories go, per part (Yosys's ``memory_libmap``).
PROCESSOR_MEMORIES = {
    "ecp5-85f": {"const_mem": "$__TRELLIS_DPR16X4_", "desc_mem": "$__PDPW16KD_",
                 "program_mem": "$__DP16KD_", "scratch_mem": "$__DP16KD_"},
    "up5k": {name: "$__ICE40_RAM4K_"
             for name in ("const_mem", "desc_mem", "program_mem", "scratch_mem")},
}


@pytest.mark.parametrize("part", sorted(PROCESSOR_MEMORIES))
def test_processor_memories_map_to_block_ram_and_the_constants_to_lut_ram_on_the_ecp5(
        tmp_path, part):
    """The 8-lane processor through the part's Yosys script (``Part.synth``) up to
    ``memory_libmap``. The constants' read register (``hw.processor``) is one that
    Yosys's ``memory_dff`` takes into the port: the synchronous port goes to block RAM on
    the iCE40 (not 1024 flip-flops and their read multiplexer) and, marked
    ``ECP5_LUT_RAM``, to 64 LUT RAMs on the ECP5 (not a block RAM's clock-to-out before
    ``k_mult``'s multipliers). The program, descriptor and scratch memories' registers go
    into their block RAMs, as meant."""
    cfg = ProcessorConfig(lanes=8, **PROCESSOR_CONFIGS[(part, 8)])
    (tmp_path / "top.il").write_text(
        rtlil.convert(Processor(config=cfg), name="top", emit_src=False))
    proc = subprocess.run([tool("yosys"), "-l", "yosys.log", "-p",
                           f"read_rtlil top.il; {PARTS[part].synth} -top top -run :map_ffram"],
                          cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    mapped = {name.removeprefix("top."): cell
              for name, cell in memory_mapping(tmp_path / "yosys.log").items()}
    assert {name: mapped.get(name) for name in PROCESSOR_MEMORIES[part]} \
        == PROCESSOR_MEMORIES[part], mapped
