# amaranth: UnusedElaboratable=no
"""``hw.banked_ram.BankedRam`` in the Amaranth simulator against a dict model.

Random writes and reads, with and without banks (and with a last bank only partly
used): every read's word must be on ``rdata`` exactly ``STREAM_READ_LATENCY`` cycles
after its request. The words are distinct, so an answer a cycle early or late fails.
"""

import numpy as np
import pytest
from amaranth import Module, Signal, signed
from amaranth.hdl import Fragment
from amaranth.sim import Simulator

from compiler.isa import STREAM_READ_LATENCY
from hw.banked_ram import BankedRam, delayed
from hw.synth import PARTS, memory_read_ports, processor_design
from sim import toolchain


def _run(ram: BankedRam, seed: int, host_reads: bool = False) -> int:
    """Random traffic, then reads across every bank boundary and of every word; returns
    the number of reads checked. With ``host_reads``, host reads (``hren``, at ``waddr``)
    too: in the random traffic, in cycles without a write, and then every word, each
    in the same cycle as a core read of another word (another bank's across a
    boundary) when the memory has banks (without banks, one read port: never both)."""
    rng = np.random.default_rng(seed)
    model: dict[int, int] = {}
    checked = []

    def word():
        return int.from_bytes(rng.bytes((ram.width + 7) // 8), "little") & ((1 << ram.width) - 1)

    bank = ram.bank_depth or ram.depth
    boundaries = [a for b in range(bank, ram.depth, bank) for a in (b - 1, b, b - 1)]
    both = ram.bank_depth is not None

    async def testbench(ctx):
        # The reads whose words show after each edge (core, host): none for the first
        # LATENCY - 1.
        expected = [(None, None)] * (STREAM_READ_LATENCY - 1)
        # Fill every word first, so each read has a defined word.
        plan = [("w", a, word()) for a in rng.permutation(ram.depth).tolist()]
        for _ in range(4 * ram.depth):
            if host_reads and rng.integers(3) == 0:
                plan.append(("h", int(rng.integers(ram.depth)), int(rng.integers(ram.depth)),
                             both and bool(rng.integers(2))))
            else:
                plan.append(("wr", int(rng.integers(ram.depth)), word(),
                             int(rng.integers(ram.depth)), bool(rng.integers(2))))
        plan += [("r", a) for a in boundaries + list(range(ram.depth))]
        if host_reads:
            plan += [("h", a, b, both) for a, b in zip(boundaries, boundaries[1:])]
            plan += [("h", a, ram.depth - 1 - a, both and a % 2 == 0)
                     for a in range(ram.depth)]
        plan += [("idle",)] * STREAM_READ_LATENCY
        for item in plan:
            kind = item[0]
            we = kind == "w" or (kind == "wr" and item[4])
            hre = kind == "h"
            re = kind == "r" or (kind == "wr") or (kind == "h" and item[3])
            raddr = {"r": 1, "wr": 3, "h": 2}.get(kind)
            raddr = item[raddr] if raddr is not None else 0
            if we and re and item[1] == raddr:
                re = False  # the same word read and written: old or new, by part
            ctx.set(ram.we, we)
            ctx.set(ram.ren, re)
            ctx.set(ram.hren, hre)
            if we or hre:
                ctx.set(ram.waddr, item[1])
            if we:
                ctx.set(ram.wdata, item[2])
            if re:
                ctx.set(ram.raddr, raddr)
            expected.append((model[raddr] if re else None, model[item[1]] if hre else None))
            if we:
                model[item[1]] = item[2]
            await ctx.tick()
            for port, want in zip((ram.rdata, ram.hrdata), expected.pop(0)):
                if want is not None:
                    assert ctx.get(port) == want, f"read {len(checked)} on {port.name}"
                    checked.append(want)
        for a, v in model.items():
            assert ctx.get(ram.cell(a)) == v, a

    sim = Simulator(ram)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()
    return len(checked)


@pytest.mark.parametrize("width, depth, bank_depth, banks", [
    (77, 256, 32, 8),  # 8-lane stream words, 8 banks
    (72, 100, 16, 7),  # parameter records; the last bank only partly used
    (77, 64, None, 1),  # one block, registered twice
    (9, 32, 64, 1),  # no deeper than a bank: one block
])
def test_reads_answer_exactly_three_cycles_later(width, depth, bank_depth, banks):
    assert STREAM_READ_LATENCY == 3
    ram = BankedRam(width=width, depth=depth, bank_depth=bank_depth)
    assert len(ram.banks) == banks
    assert all(b.depth == (bank_depth if banks > 1 else depth) for b in ram.banks)
    n = _run(ram, seed=depth)
    assert n > 2 * depth  # boundaries, the sweep and the random reads were all checked


@pytest.mark.parametrize("width, depth, bank_depth", [
    (77, 256, 32),  # 8 banks: host and core reads in one cycle, across banks
    (72, 100, 16),  # the last bank only partly used
    (77, 64, None),  # one block: one read port, the host's at ``waddr``
])
def test_host_reads_answer_exactly_three_cycles_later(width, depth, bank_depth):
    """The host's read (``hren`` at ``waddr``, ``hrdata``) answers with the core's
    latency, from the right bank, beside the core's reads and between writes."""
    ram = BankedRam(width=width, depth=depth, bank_depth=bank_depth)
    n = _run(ram, seed=depth + 1, host_reads=True)
    assert n > 4 * depth  # the core's and the host's sweeps, and random reads of both


def test_sim_ram_is_the_behavioural_ram_behind_two_registers():
    text = toolchain.generate_verilog(BankedRam(width=77, depth=64, sim_ram=True), "ram")
    assert "nep_sim_ram" in text and " ram (" in text
    assert BankedRam(width=77, depth=64, sim_ram=True).banks == []
    with pytest.raises(ValueError, match="no Amaranth storage"):
        BankedRam(width=8, depth=4, sim_ram=True).cell(0)


@pytest.mark.parametrize("kwargs, match", [
    (dict(width=0, depth=4), "width must be a positive int"),
    (dict(width=8, depth=True), "depth must be a positive int"),
    (dict(width=8, depth=64, bank_depth=24), "bank_depth must be a power of two"),
    (dict(width=8, depth=64, bank_depth=1), "bank_depth must be a power of two"),
    (dict(width=8, depth=64, sim_ram=1), "sim_ram must be a bool"),
    (dict(width=8, depth=64, bank_depth=16, sim_ram=True), "cannot build banks"),
])
def test_bad_parameters_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BankedRam(**kwargs)


def test_cell_and_delayed_refuse_bad_arguments():
    ram = BankedRam(width=8, depth=100, bank_depth=16)
    with pytest.raises(ValueError, match="addr must be an int in 0..99"):
        ram.cell(100)
    Fragment.get(ram, None)  # its banks are used
    with pytest.raises(ValueError, match="cycles must be an int >= 0"):
        delayed(None, 0, -1)


def test_delayed_registers_are_plain_whatever_the_value():
    """``delayed`` makes registers with a reset and no attributes even from a reset-less,
    marked signal: a one-block ``BankedRam`` delays its reset-less ``RegisteredRead``
    register, and ``rdata``'s registers keep their reset."""
    m = Module()
    src = Signal(signed(8), init=5, reset_less=True, attrs={"no_outreg": 1})
    out = delayed(m, src, 2)
    assert (out.shape(), out.init, out.reset_less, out.attrs) == (signed(8), 0, False, {})


def test_processor_flow_banks_the_ecp5_memories_only():
    """``hw.synth``'s processor flow: on the ECP5 the 8-lane weight memory (16384 words)
    is 8 banks of 2048 and the parameter memory (4096) 2, two read ports each (the
    core's, and the host's at the write's address); on the UP5K both stay ``nep_sim_ram``
    instances (single-port SPRAM takes no banks)."""
    banks = {}
    for part in ("ecp5-85f", "up5k"):
        ports = memory_read_ports(processor_design(PARTS[part], 8).rtlil)
        banks[part] = {k.split("/")[-1] + "@" + k.split(".")[-1].split("/")[0]: n
                       for k, n in ports.items() if "_mem/" in k and ".cpu" not in k}
    assert banks["ecp5-85f"] == {**{f"b{i}@weight_mem": 2 for i in range(8)},
                                 "b0@param_mem": 2, "b1@param_mem": 2}
    assert banks["up5k"] == {}


def _rtlil_cells(text: str) -> dict[str, dict[str, tuple[str, dict[str, str]]]]:
    """RTLIL ``text``'s cells by module: name -> (kind, port -> the signal it connects,
    without its bit slice)."""
    modules = {}
    for module in text.split("\nmodule ")[1:]:
        cells = {}
        for cell in module.split("  cell ")[1:]:
            conns = dict(line.split()[1:3] for line in cell.split("  end")[0].splitlines()
                         if line.strip().startswith("connect"))
            cells[cell.split()[1]] = (cell.split()[0], conns)
        modules[module.split()[0]] = cells
    return modules


def test_banks_read_asynchronously_into_reset_less_registers_without_rw_check():
    """Each bank has two reads (the core's, the host's), each an asynchronous read port
    and two reset-less registers, the memory
    marked ``no_rw_check``: Yosys (``memory_dff``) takes the first register into the
    block RAM with "a read and a write of one word may return either", so it adds no
    write delay, address compare or multiplexer in front of the bank register, which
    stays a plain capture of the block RAM (issue 6). A synchronous port, or registers
    with a reset, would bring them back."""
    from amaranth.back import rtlil
    ram = BankedRam(width=77, depth=96, bank_depth=32)
    assert all(b.attrs == {"no_rw_check": 1} for b in ram.banks)
    text = rtlil.convert(ram, name="ram")
    reads = text.split("cell $memrd_v2")[1:]
    assert len(reads) == 6
    assert all("parameter \\CLK_ENABLE 0" in r.split("end")[0] for r in reads)
    assert text.count("attribute \\no_rw_check 1") == 3
    # The bank registers are plain flip-flops: the first (each bank's ``RegisteredRead``)
    # takes the read port's data, the second the first (a reset or an enable would put a
    # multiplexer on either D). The read ports stay in the banks' module.
    modules = _rtlil_cells(text)
    top = modules["\\ram"]
    ram_data = {c["\\DATA"] for kind, c in top.values() if kind == "$memrd_v2"}
    d_of = {c["\\Q"]: c["\\D"] for kind, c in top.values() if kind == "$dff"}
    for i in range(3):
        for bank in (f"b{i}", f"b{i}_h"):
            kind, read = top[f"\\{bank}_read"]
            assert list(modules[kind].values()) == [
                ("$dff", {"\\D": "\\ram__data", "\\CLK": "\\clk", "\\Q": "\\data"})], bank
            assert d_of[f"\\{bank}_q"] == read["\\data"], (bank, d_of)
            assert read["\\ram__data"] in ram_data, (bank, read, ram_data)
