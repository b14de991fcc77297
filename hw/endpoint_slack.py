"""Every register's worst path from nextpnr's SDF, not only the one critical path.

nextpnr's report names one critical path per clock. At 74 MHz against 100 about two
thousand endpoints of the 8-lane processor fail, so fixing them one report at a time
takes a place-and-route run each. ``nextpnr --sdf`` writes the routed design's delays:
every net's routing delay (``INTERCONNECT``), every cell's input-to-output delays
(``IOPATH``, from the clock pin for a register's clock-to-out) and setup times
(``SETUPHOLD``). This module runs a static timing analysis over them:

* a **start point** is a cell output with an ``IOPATH`` from a clock pin (a pin the clock
  buffer drives): flip-flops, block RAM outputs, registered multipliers;
* an **end point** is a clock-driven cell's input with a setup check or no ``IOPATH``
  onward (a flip-flop's ``DI`` / ``M`` / ``CE`` / ``LSR``, a block RAM's address, data
  and enables; on the iCE40 a logic cell's LUT inputs, whose setup check includes the
  LUT in front of the flip-flop); its arrival plus its setup time, against the clock
  period, gives its slack;
* arrival times are the longest path through the combinational ``IOPATH`` and
  ``INTERCONNECT`` arcs, taking each arc's maximum (slow corner) delay, as nextpnr's own
  critical path does. The worst end point's arrival is nextpnr's critical path delay
  (``tests/synth/test_endpoint_slack.py`` checks them equal on a routed design).

``by_signal`` groups end points by the design signal their cell was named after
(``hw.synth._signal_of``) and keeps each group's worst path, so a table of the groups
is a to-do list for the next pipelining step (``docs/synthesis.md``).
"""

from __future__ import annotations

import re
from collections import defaultdict, deque
from dataclasses import dataclass

__all__ = ["Endpoint", "SdfTiming", "by_signal", "endpoint_slacks", "parse_sdf"]

_DELAY = r"\((-?[\d.]*):(-?[\d.]*):(-?[\d.]*)\)"
_INSTANCE = re.compile(r"^\s*\(INSTANCE\s*(.*?)\)\s*$")
_IOPATH = re.compile(r"^\s*\(IOPATH\s+(\S+)\s+(\S+)\s+" + _DELAY + r"\s*" + _DELAY)
_SETUP = re.compile(r"^\s*\(SETUPHOLD\s+\((?:posedge|negedge)\s+(\S+?)\)\s+"
                    r"\((?:posedge|negedge)\s+(\S+?)\)\s+" + _DELAY)
_NET = re.compile(r"^\s*\(INTERCONNECT\s+(\S+)\s+(\S+)\s+" + _DELAY + r"\s*" + _DELAY)
_ESCAPE = re.compile(r"\\(.)")


def _unescape(name: str) -> str:
    return _ESCAPE.sub(r"\1", name)


def _pin(text: str) -> tuple[str, str]:
    """``inst/PORT`` (SDF hierarchy divider ``/``; an escaped ``\\/`` is part of a name)."""
    cut = max(i for i, ch in enumerate(text) if ch == "/" and (i == 0 or text[i - 1] != "\\"))
    return _unescape(text[:cut]), text[cut + 1:]


def _worst(*groups) -> float:
    """The largest of (min, typ, max) triples' values, ns (the file is in ps)."""
    return max(float(v) for v in groups if v not in ("", None)) / 1000.0


@dataclass
class SdfTiming:
    """Delays of a routed design, ns.

    Attributes
    ----------
    arcs : dict
        ``(inst, in_port) -> list of ((inst, out_port), delay)``: cell arcs (``IOPATH``)
        and routing (``INTERCONNECT``, keyed by the driver pin).
    launch : dict
        ``(inst, out_port) -> clock-to-out delay`` for outputs an ``IOPATH`` from a clock
        pin drives.
    setup : dict
        ``(inst, in_port) -> setup time`` from ``SETUPHOLD`` checks.
    cell_inputs : dict
        ``inst -> set of input ports that have an IOPATH onward``.
    clock_pins : set
        ``(inst, port)`` pins driven by a clock buffer output.
    sinks : set
        Every pin an ``INTERCONNECT`` drives.
    """

    arcs: dict
    launch: dict
    setup: dict
    cell_inputs: dict
    clock_pins: set
    sinks: set


def parse_sdf(text: str) -> SdfTiming:
    """Read nextpnr's SDF (``--sdf``): one statement per line, as nextpnr writes it."""
    if "(DELAYFILE" not in text[:200]:
        raise ValueError("not an SDF file: no (DELAYFILE header")
    iopaths, setup, nets = [], {}, []
    inst = None
    for line in text.splitlines():
        if "(INTERCONNECT" in line:
            mt = _NET.match(line)
            if mt:
                nets.append((_pin(mt[1]), _pin(mt[2]), _worst(*mt.groups()[2:])))
        elif "(INSTANCE" in line:
            mt = _INSTANCE.match(line)
            inst = _unescape(mt[1]) if mt else None
        elif "(IOPATH" in line:
            mt = _IOPATH.match(line)
            if mt and inst is not None:
                iopaths.append((inst, mt[1], mt[2], _worst(*mt.groups()[2:])))
        elif "(SETUPHOLD" in line:
            mt = _SETUP.match(line)
            if mt and inst is not None:
                key = (inst, mt[1])
                setup[key] = max(setup.get(key, 0.0), _worst(*mt.groups()[2:]))
    # Clock pins: those the global clock buffers drive (DCCA on the ECP5, SB_GB on iCE40).
    clock_drivers = {drv for drv, _, _ in nets if drv[1] in ("CLKO", "GLOBAL_BUFFER_OUTPUT")}
    clock_pins = {snk for drv, snk, _ in nets if drv in clock_drivers}
    arcs, launch, cell_inputs = defaultdict(list), {}, defaultdict(set)
    for inst_, a, b, delay in iopaths:
        if (inst_, a) in clock_pins:
            launch[(inst_, b)] = max(launch.get((inst_, b), 0.0), delay)
        else:
            arcs[(inst_, a)].append(((inst_, b), delay))
            cell_inputs[inst_].add(a)
    for drv, snk, delay in nets:
        if drv not in clock_drivers:
            arcs[drv].append((snk, delay))
    return SdfTiming(dict(arcs), launch, setup, dict(cell_inputs), clock_pins,
                     {snk for _, snk, _ in nets})


@dataclass
class Endpoint:
    """A register input's worst path. ``path`` is the pins from the start point to it."""

    pin: tuple[str, str]
    arrival_ns: float
    setup_ns: float
    slack_ns: float
    path: list
    routing_ns: float

    @property
    def path_ns(self) -> float:
        """Arrival plus setup: nextpnr's critical path delay for the worst end point."""
        return self.arrival_ns + self.setup_ns


def endpoint_slacks(timing: SdfTiming, period_ns: float) -> list[Endpoint]:
    """Every end point's worst arrival and slack against ``period_ns``, worst first."""
    if not period_ns > 0:
        raise ValueError(f"period_ns must be positive, got {period_ns!r}")
    clocked = {inst for inst, _ in timing.clock_pins}
    arrival, pred = dict(timing.launch), {}
    indegree = defaultdict(int)
    for src, outs in timing.arcs.items():
        for dst, _ in outs:
            indegree[dst] += 1
    # Longest path in topological order (Kahn); pins on a combinational loop (none in a
    # synchronous design) are left out rather than looping.
    ready = deque(p for p in timing.arcs if indegree[p] == 0)
    while ready:
        src = ready.popleft()
        t = arrival.get(src)
        for dst, delay in timing.arcs.get(src, ()):
            if t is not None and t + delay > arrival.get(dst, float("-inf")):
                arrival[dst], pred[dst] = t + delay, src
            indegree[dst] -= 1
            if indegree[dst] == 0:
                ready.append(dst)
    ends = []
    for pin in timing.sinks:
        inst, port = pin
        onward = port in timing.cell_inputs.get(inst, ()) and pin not in timing.setup
        if inst not in clocked or pin in timing.clock_pins or onward or pin not in arrival:
            continue
        path, p = [pin], pin
        while p in pred:
            p = pred[p]
            path.append(p)
        path.reverse()
        routing = sum(arrival[b] - arrival[a] for a, b in zip(path, path[1:])
                      if a[0] != b[0])
        setup = timing.setup.get(pin, 0.0)
        ends.append(Endpoint(pin, arrival[pin], setup, period_ns - arrival[pin] - setup,
                             path, routing))
    ends.sort(key=lambda e: e.slack_ns)
    return ends


def by_signal(ends: list[Endpoint], signal_of) -> list[dict]:
    """End points grouped by the design signal of their cell, worst group first: the
    group's worst slack and path (start and end signals, delay, routing, cells on it) and
    how many of its end points fail (slack below 0)."""
    groups: dict[str, dict] = {}
    for e in ends:
        name = signal_of(e.pin[0]) or e.pin[0]
        g = groups.get(name)
        if g is None:
            start = e.path[0][0]
            groups[name] = g = {
                "end": name, "start": signal_of(start) or start,
                "slack_ns": round(e.slack_ns, 3), "delay_ns": round(e.path_ns, 3),
                "routing_ns": round(e.routing_ns, 3),
                "cells": len({inst for inst, _ in e.path}), "failing": 0, "endpoints": 0}
        g["endpoints"] += 1
        g["failing"] += e.slack_ns < 0
    return sorted(groups.values(), key=lambda g: g["slack_ns"])
