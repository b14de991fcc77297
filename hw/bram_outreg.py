"""ECP5 block RAM output registers: a netlist pass between Yosys and nextpnr (issue 6).

Yosys 0.70 maps every ECP5 memory to DP16KD cells with ``REGMODE_A/B = "NOREG"``
(``share/lattice/brams_16kd.txt`` has no output register option), so a register that
captures a RAM's read data is a TRELLIS_FF in the fabric, and every such path starts with
the RAM's 5.83 ns clock-to-out plus routing. The DP16KD has that register built in
(``REGMODE_x = "OUTREG"``: clocked by ``CLKx``, enabled by ``OCEx``, reset by ``RSTx``, about
1 ns clock-to-out). ``absorb_output_registers`` moves a fabric register into the RAM where
it is plainly the same register, on Yosys's JSON netlist (``synth_ecp5 -json``).

A RAM port ``x`` (A or B) is absorbed when, checked in this order (the first that fails
is the reason it is refused):

- ``REGMODE_x`` is ``NOREG``, neither port is 36 bits wide (a 36-bit port's data comes out
  on both ports' DO pins), ``RSTx`` is constant 0 (no read-port reset: with RESETMODE and
  OUTREG, what ``RSTx`` clears is not modelled by Yosys's DP16KD, a blackbox), and
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
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict

#: Why a port was absorbed (the one non-refusal outcome).
ABSORBED = "absorbed"
#: The signal attribute that keeps a register out of the RAM: one that feeds a multiplier
#: or a wide fan-out is better placed near its loads than inside the block RAM.
NO_OUTREG = "no_outreg"


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


def _check_port(module: dict, sinks, ram: dict, port: str, marked: set[int]):
    """The flip-flops (DO pin -> flip-flop cell) port ``port`` of ``ram`` can absorb
    and their enable, or the reason it cannot."""
    p, conn = ram["parameters"], ram["connections"]
    if _string(p.get(f"REGMODE_{port}", "NOREG")) != "NOREG":
        return f"REGMODE_{port} is not NOREG"
    if max(_width(p.get("DATA_WIDTH_A", 18)), _width(p.get("DATA_WIDTH_B", 18))) > 18:
        return "36-bit port: its data comes out on both ports' DO pins"
    if conn.get(f"RST{port}", ["0"]) != ["0"]:
        return "read port reset in use (RST not constant 0)"
    if _string(p.get(f"CLK{port}MUX", f"CLK{port}")) != f"CLK{port}":
        return "RAM port clock inverted"
    clk = conn.get(f"CLK{port}")
    ffs = {}
    for pin in _do_pins(ram, port):
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
        if _string(fp.get("GSR", "ENABLED")) != _string(p.get("GSR", "ENABLED")):
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
        first condition that failed}}.

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
        for port in "AB":
            found = _check_port(mod, sinks, ram, port, marked)
            if isinstance(found, str):
                rams.setdefault(name, {})[port] = found
                refused[found] += 1
                continue
            ffs, enable = found
            ram["parameters"][f"REGMODE_{port}"] = "OUTREG"
            ram["connections"][f"OCE{port}"] = [enable]
            for pin, ff_name in ffs.items():
                ram["connections"][pin] = mod["cells"].pop(ff_name)["connections"]["Q"]
            rams.setdefault(name, {})[port] = ABSORBED
            absorbed += 1
            removed += len(ffs)
    return {"absorbed": absorbed, "flip_flops": removed, "refused": dict(refused),
            "rams": rams}
