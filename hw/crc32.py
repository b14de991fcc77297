"""CRC-32 (the zlib polynomial) over a whole word per cycle, the data's part of each step a
cycle ahead of the state's."""

from __future__ import annotations

from functools import reduce
from operator import xor

from amaranth import Cat, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

POLY = 0xEDB88320  # reflected CRC-32, as zlib


def crc32_step_matrix(width: int) -> list[int]:
    """For each next-state bit, the mask of (state bits 0..31, data bits 32..) XORed into it.

    Data bits enter least significant first, which is zlib's order for little-endian bytes.
    """
    state = [1 << i for i in range(32)]
    for b in range(width):
        fb = state[0] ^ (1 << (32 + b))
        state = state[1:] + [0]
        state = [s ^ fb if (POLY >> k) & 1 else s for k, s in enumerate(state)]
    return state


class Crc32(wiring.Component):
    """CRC-32 of a sequence of ``width``-bit words, each zero-padded to ``pad_to`` bits.

    Matches ``zlib.crc32`` over the little-endian bytes of the padded words.

    The step is linear, ``next = A*state ^ B*data``: ``B*data`` is registered in the cycle
    a word is taken and XORed into the state the cycle after (issue 6: the whole step was
    four LUT levels from the word's register, up to 32 state bits and ~77 data bits per
    bit at 8 lanes; now a path XORs the data bits alone, or up to 32 state bits and one
    partial bit).

    Its registers are reset-less: ``clear`` is the only restart (and the power-up value
    is the CRC of nothing), so a domain reset fanned out across the die does not reach
    the XOR logic (issue 6: the processor's start, through the engine's reset, into the
    parameter reader's CRC missed 10 ns by 0.15-0.95 ns, run m38).

    Interface
    ---------
    clear : In(1)
        Restart (takes priority over ``en``): ``value`` is the CRC of nothing from the
        next cycle on, and a word taken in the cycle before is dropped with the rest.
    en : In(1)
        Take ``data`` as the next word this cycle.
    data : In(width)
    value : Out(32)
        The CRC of the words taken since the last ``clear``, two cycles after each: a
        word taken in cycle ``t`` is included from cycle ``t + 2`` on.
    """

    def __init__(self, *, width: int, pad_to: int | None = None):
        pad_to = width if pad_to is None else pad_to
        if width < 1 or pad_to < width:
            raise ValueError(f"need 1 <= width <= pad_to, got width={width} pad_to={pad_to}")
        self._matrix = crc32_step_matrix(pad_to)
        super().__init__({"clear": In(1), "en": In(1), "data": In(width), "value": Out(32)})

    def elaborate(self, platform):
        m = Module()
        state = Signal(32, init=0xFFFFFFFF, reset_less=True)
        # ``B*data`` of the word taken last cycle, if ``pending``; loaded every cycle,
        # since ``pending`` alone says whether it is a word.
        part = Signal(32, reset_less=True)
        pending = Signal(reset_less=True)

        def fold(mask, bits, offset):
            """XOR of the ``bits`` in ``mask``, whose bit ``offset`` is ``bits[0]``."""
            terms = [b for i, b in enumerate(bits) if (mask >> (offset + i)) & 1]
            return reduce(xor, terms) if terms else 0

        m.d.sync += part.eq(Cat(*(fold(mask, self.data, 32) for mask in self._matrix)))
        m.d.sync += pending.eq(self.en & ~self.clear)
        with m.If(self.clear):
            m.d.sync += state.eq(0xFFFFFFFF)
        with m.Elif(pending):
            m.d.sync += state.eq(Cat(*(fold(mask, state, 0) for mask in self._matrix)) ^ part)
        m.d.comb += self.value.eq(~state)
        return m
