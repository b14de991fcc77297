"""A block RAM read port that answers a cycle later: an asynchronous port and a register."""

from __future__ import annotations

from amaranth import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

__all__ = ["RegisteredRead"]


class RegisteredRead(wiring.Component):
    """A read port of ``memory`` that reads like a synchronous one (``data`` a cycle after
    ``addr``), built as an asynchronous port and a reset-less register: the register
    Yosys's ``memory_dff`` takes into the block RAM.

    An Amaranth synchronous port keeps "the old word" on a read and a write of one word in
    one cycle, which Yosys emulates on the ECP5's DP16KD (writes delayed a cycle, a
    registered address compare, a LUT between the RAM and the next register), and
    ``-no-rw-check`` does not cover such a port. Built this way, a memory with the
    ``no_rw_check`` attribute (the caller's: it must know that such a collision never
    matters) gets "a read and a write of one word may return either" instead, so the
    register that takes ``data`` is a plain capture of the RAM's output, which
    ``hw.bram_outreg`` can move into the RAM (issue 6). Without the attribute Yosys keeps
    "the old word", as for a synchronous port. The asynchronous port is ``memory``'s, so
    it shows in the memory's module, and the register in this block's.

    Parameters
    ----------
    memory : amaranth.lib.memory.Memory
        The memory read.
    enable : bool
        Give the register a clock enable, ``en`` (default: none, read every cycle).

    Interface
    ---------
    addr : In(address bits of ``memory``)
        The word to read.
    en : In(1)
        Only with ``enable``: ``data`` takes the word only in cycles with ``en`` high and
        holds otherwise.
    data : Out(``memory.shape``)
        The word read, a cycle after ``addr``: the register itself (reset-less; nothing
        between it and the port).
    """

    def __init__(self, *, memory: Memory, enable: bool = False):
        if not isinstance(memory, Memory):
            raise TypeError(f"RegisteredRead: memory must be an amaranth.lib.memory.Memory, "
                            f"got {memory!r}")
        if not isinstance(enable, bool):
            raise TypeError(f"RegisteredRead: enable must be a bool, got {enable!r}")
        self.enable = enable
        # Made here, not in ``elaborate``: a port must exist before its memory elaborates
        # (which may come first). Its signals are named after ``ram`` (``ram__data``).
        ram = memory.read_port(domain="comb")
        self._ram = ram
        members = {"addr": In(len(ram.addr)), "data": Out(memory.shape)}
        if enable:
            members["en"] = In(1)
        super().__init__(members)
        # A signature member cannot be reset-less: ``data`` becomes the register itself
        # (same shape and initial value, so it still complies with the signature), so
        # that a reset cannot put a multiplexer in front of it.
        self.data = Signal(memory.shape, name="data", reset_less=True)

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self._ram.addr.eq(self.addr)
        if self.enable:
            with m.If(self.en):
                m.d.sync += self.data.eq(self._ram.data)
        else:
            m.d.sync += self.data.eq(self._ram.data)
        return m
