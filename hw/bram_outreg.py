"""ECP5 block RAM output registers: a netlist pass between Yosys and nextpnr (issue 6).

Yosys 0.70 maps every ECP5 memory to DP16KD cells with ``REGMODE_A/B = "NOREG"``
(``share/lattice/brams_16kd.txt`` has no output register option), so a register that
captures a RAM's read data is a TRELLIS_FF in the fabric, and every such path starts with
the RAM's 5.83 ns clock-to-out plus routing. The DP16KD has that register built in
(``REGMODE_x = "OUTREG"``: clocked by ``CLKx``, enabled by ``OCEx``, reset by ``RSTx``, about
1 ns clock-to-out). ``absorb_output_registers`` moves a fabric register into the RAM where
it is plainly the same register, on Yosys's JSON netlist (``synth_ecp5 -json``).

A RAM port ``x`` (A or B) of a RAM in 18-bit mode (neither port wider than 18 bits) is
absorbed when, checked in this order (the first that fails is the reason it is refused):

- ``REGMODE_x`` is ``NOREG``, ``RSTx`` is constant 0 (no read-port reset: with RESETMODE
  and OUTREG, what ``RSTx`` clears is not modelled by Yosys's DP16KD, a blackbox), and
  ``CLKxMUX`` is ``CLKx`` (not inverted);
- at least one DO bit of the port drives something, and every connected DO bit drives
  exactly one sink (a module port counts as one), the DI input of a TRELLIS_FF;
- each of those flip-flops is clocked by the port's ``CLKx`` net with ``CLKMUX "CLK"``;
  its reset never acts (``LSR`` constant 0 with ``LSRMUX "LSR"``, or constant 1 with
  ``"INV"``); its ``REGSET`` is ``RESET`` (its initial value is the output register's, 0);
  its ``GSR`` is the RAM's; its clock enable is ``CE`` or constant 1
  (``CEMUX "CE"`` or ``"1"``), the same for every flip-flop of the port; and its signal
  does not carry the ``no_outreg`` attribute (a register the design keeps near its loads,
  e.g. a multiplier's operand: inside the RAM it would start that path with the route
  from the RAM's column instead).

Absorbing sets ``REGMODE_x = "OUTREG"``, ties ``OCEx`` to the flip-flops' enable, puts
each flip-flop's Q net on its DO pin and deletes the flip-flops. Nothing else changes;
Q nets keep their names. The RAM's read clock enable ``CEx`` still gates its output latch,
which now feeds the output register, exactly as it fed the fabric flip-flop.

A RAM in 36-bit mode (a port 36 bits wide; Yosys's PDPW16KD mapping: port A writes, port
B reads, the 36 read bits come out on ``DOA0..17`` and ``DOB0..17``) is one unit: both
ports are absorbed or neither, with one reason for both. Which port's register settings
govern which half of the 36 bits in silicon is not documented (Lattice's PDPW16KD has
one ``REGMODE`` and one ``OCER``), so both ports get the same register: the RAM is
absorbed when both ports pass the first condition above, ``CLKA`` and ``CLKB`` are the
same net, ``CEA`` and ``CEB`` are the same net or the same constant (through the same
``CExMUX`` setting), and the second and
third conditions hold for the DO bits of both ports together, with that one clock.
Absorbing sets both ``REGMODE_A`` and ``REGMODE_B`` to ``OUTREG`` and ties both ``OCEA``
and ``OCEB`` to the flip-flops' enable.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict

#: Why a port was absorbed (the one non-refusal outcome).
ABSORBED = "absorbed"
#: The signal attribute that keeps a register out of the RAM: one that feeds a multiplier
#: or a wide fan-out is better placed near its loads than inside the block RAM.
NO_OUTREG = "no_outreg"
#: The memory attribute that keeps a memory out of the ECP5's block RAM: ``hw.synth``'s
#: ECP5 script turns it into Yosys's ``ram_style "distributed"`` (LUT RAM), which the
#: iCE40 (no LUT RAM: Yosys fails the memory) must not see, so one Yosys attribute on the
#: memory cannot serve both.
ECP5_LUT_RAM = "ecp5_lut_ram"


def _width(value) -> int:
    """A Yosys JSON integer parameter (a binary string) or an int."""
    return value if isinstance(value, int) else int(value, 2)


def _string(value) -> str:
    """A Yosys JSON string parameter: Yosys pads some (``CEMUX "1 "``) with spaces."""
    return str(value).strip()


def _sinks(module: dict) -> dict[int, list[tuple[str, str]]]:
    """Net bit -> the (cell, input pin) pairs it drives; a module output port is a sink
    ``("<port>", name)``."""
    sinks: dict[int, list[tuple[str, str]]] = defaultdict(list)
    for name, cell in module["cells"].items():
        dirs = cell.get("port_directions", {})
        for pin, bits in cell["connections"].items():
            if dirs.get(pin) != "output":
                for b in bits:
                    if isinstance(b, int):
                        sinks[b].append((name, pin))
    for name, port in module.get("ports", {}).items():
        if port["direction"] != "input":
            for b in port["bits"]:
                if isinstance(b, int):
                    sinks[b].append(("<port>", name))
    return sinks


def _do_pins(cell: dict, port: str) -> list[str]:
    return sorted((p for p in cell["connections"] if re.fullmatch(f"DO{port}\\d+", p)),
                  key=lambda p: int(p[3:]))


def _reset_never_acts(ff: dict) -> bool:
    lsr = ff["connections"].get("LSR", ["0"])
    mux = _string(ff["parameters"].get("LSRMUX", "LSR"))
    return (lsr == ["0"] and mux == "LSR") or (lsr == ["1"] and mux == "INV")


def _enable(ff: dict):
    """The flip-flop's clock enable as a connection bit ("1" when always on), or None when
    it is inverted or constant 0."""
    mux = _string(ff["parameters"].get("CEMUX", "1"))
    if mux == "1":
        return "1"
    if mux == "CE":
        return ff["connections"].get("CE", ["1"])[0]
    return None


def _marked_bits(module: dict) -> set[int]:
    """Net bits of signals given the ``no_outreg`` attribute (``Signal(attrs=
    {"no_outreg": 1})``): registers the design keeps in the fabric, near their loads."""
    marked = set()
    for net in module.get("netnames", {}).values():
        value = net.get("attributes", {}).get(NO_OUTREG, 0)
        # Yosys writes an integer attribute as a binary string ("000...01").
        if value if isinstance(value, int) else str(value).strip("0 "):
            marked.update(b for b in net["bits"] if isinstance(b, int))
    return marked


def _check_ram_port(ram: dict, port: str):
    """The reason port ``port`` of ``ram`` itself cannot take an output register, or None."""
    p, conn = ram["parameters"], ram["connections"]
    if _string(p.get(f"REGMODE_{port}", "NOREG")) != "NOREG":
        return f"REGMODE_{port} is not NOREG"
    if conn.get(f"RST{port}", ["0"]) != ["0"]:
        return "read port reset in use (RST not constant 0)"
    if _string(p.get(f"CLK{port}MUX", f"CLK{port}")) != f"CLK{port}":
        return "RAM port clock inverted"
    return None


def _check_flip_flops(module: dict, sinks, ram: dict, pins: list[str], clk, marked: set[int]):
    """The flip-flops (DO pin -> flip-flop cell) that capture ``ram``'s DO ``pins`` on
    clock net ``clk`` and their common enable, or the reason they cannot be absorbed."""
    conn = ram["connections"]
    ffs = {}
    for pin in pins:
        bit = conn[pin][0]
        if not isinstance(bit, int) or not sinks.get(bit):
            continue  # an unused data bit
        if len(sinks[bit]) > 1:
            return "a DO bit has more than one sink"
        sink, sink_pin = sinks[bit][0]
        if sink == "<port>" or module["cells"][sink]["type"] != "TRELLIS_FF" or sink_pin != "DI":
            return "a DO bit drives something other than a flip-flop's DI"
        ffs[pin] = sink
    if not ffs:
        return "no read data used"
    enables = set()
    for ff_name in ffs.values():
        ff = module["cells"][ff_name]
        fp = ff["parameters"]
        if ff["connections"].get("CLK") != clk:
            return "flip-flop clocked by another net"
        if _string(fp.get("CLKMUX", "CLK")) != "CLK":
            return "flip-flop clock inverted (CLKMUX)"
        if not _reset_never_acts(ff):
            return "flip-flop reset in use"
        if _string(fp.get("REGSET", "RESET")) != "RESET":
            return "flip-flop initial value 1 (REGSET SET)"
        if _string(fp.get("GSR", "ENABLED")) != _string(ram["parameters"].get("GSR", "ENABLED")):
            return "flip-flop GSR setting differs from the RAM's"
        enable = _enable(ff)
        if enable is None:
            return "flip-flop clock enable inverted or off (CEMUX)"
        enables.add(enable)
        if any(b in marked for b in ff["connections"].get("Q", [])):
            return "register marked no_outreg (kept in the fabric)"
    if len(enables) > 1:
        return "flip-flops' clock enables differ"
    return ffs, enables.pop()


def _is_wide(ram: dict) -> bool:
    """Whether ``ram`` is in 36-bit mode (either port wider than 18 bits)."""
    p = ram["parameters"]
    return max(_width(p.get("DATA_WIDTH_A", 18)), _width(p.get("DATA_WIDTH_B", 18))) > 18


def _check_port(module: dict, sinks, ram: dict, port: str, marked: set[int]):
    """The flip-flops (DO pin -> flip-flop cell) port ``port`` of an 18-bit mode ``ram``
    can absorb and their enable, or the reason it cannot."""
    reason = _check_ram_port(ram, port)
    if reason:
        return reason
    return _check_flip_flops(module, sinks, ram, _do_pins(ram, port),
                             ram["connections"].get(f"CLK{port}"), marked)


def _check_wide(module: dict, sinks, ram: dict, marked: set[int]):
    """The flip-flops (DO pin -> flip-flop cell) of both ports of a 36-bit mode ``ram`` and
    their enable, or the reason (for both ports) they cannot be absorbed."""
    for port in "AB":
        reason = _check_ram_port(ram, port)
        if reason:
            return reason
    conn = ram["connections"]
    if conn.get("CLKA") != conn.get("CLKB"):
        return "36-bit RAM: ports clocked by different nets"

    def ce_mux(port):  # the pin as is, or what CExMUX puts in its place ("INV", "0", "1")
        mux = _string(ram["parameters"].get(f"CE{port}MUX", f"CE{port}"))
        return "pin" if mux == f"CE{port}" else mux

    if conn.get("CEA", ["1"]) != conn.get("CEB", ["1"]) or ce_mux("A") != ce_mux("B"):
        return "36-bit RAM: ports' clock enables (CEA, CEB) differ"
    return _check_flip_flops(module, sinks, ram, _do_pins(ram, "A") + _do_pins(ram, "B"),
                             conn.get("CLKA"), marked)


def absorb_output_registers(netlist: dict, *, module: str = "top") -> dict:
    """Move registers that capture DP16KD read data into the RAMs' output registers.

    Parameters
    ----------
    netlist : dict
        Yosys's JSON netlist (``synth_ecp5 -json``), changed in place.
    module : str
        The module to rewrite (the flattened top).

    Returns
    -------
    dict
        ``absorbed``: ports given an output register; ``flip_flops``: flip-flops removed;
        ``refused``: {reason: ports}; ``rams``: {RAM cell: {"A"/"B": "absorbed" or the
        first condition that failed}}. A 36-bit mode RAM counts as two ports, with the
        same outcome.

    Raises
    ------
    ValueError
        If ``netlist`` has no module ``module`` or is not a Yosys JSON netlist.
    """
    if not isinstance(netlist, dict) or not isinstance(netlist.get("modules"), dict):
        raise ValueError("netlist must be Yosys's JSON netlist (a dict with 'modules')")
    if module not in netlist["modules"]:
        raise ValueError(f"netlist has no module {module!r}; it has "
                         f"{sorted(netlist['modules'])}")
    mod = netlist["modules"][module]
    sinks, marked = _sinks(mod), _marked_bits(mod)
    rams: dict[str, dict[str, str]] = {}
    refused: Counter = Counter()
    absorbed = removed = 0
    for name in [n for n, c in mod["cells"].items() if c["type"] == "DP16KD"]:
        ram = mod["cells"][name]
        # A 36-bit mode RAM is one unit: both ports absorbed or neither, for one reason.
        if _is_wide(ram):
            checks = {"AB": _check_wide(mod, sinks, ram, marked)}
        else:
            checks = {port: _check_port(mod, sinks, ram, port, marked) for port in "AB"}
        for ports, found in checks.items():
            if isinstance(found, str):
                rams.setdefault(name, {}).update(dict.fromkeys(ports, found))
                refused[found] += len(ports)
                continue
            ffs, enable = found
            for port in ports:
                ram["parameters"][f"REGMODE_{port}"] = "OUTREG"
                ram["connections"][f"OCE{port}"] = [enable]
            for pin, ff_name in ffs.items():
                ram["connections"][pin] = mod["cells"].pop(ff_name)["connections"]["Q"]
            rams.setdefault(name, {}).update(dict.fromkeys(ports, ABSORBED))
            absorbed += len(ports)
            removed += len(ffs)
    return {"absorbed": absorbed, "flip_flops": removed, "refused": dict(refused),
            "rams": rams}
