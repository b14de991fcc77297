"""CRC-32 (the zlib polynomial) over a whole word per cycle."""

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

    Interface
    ---------
    clear : In(1)
        Restart (takes priority over ``en``).
    en : In(1)
        Fold ``data`` into the CRC this cycle.
    data : In(width)
    value : Out(32)
        The CRC of the words folded since the last ``clear``.
    """

    def __init__(self, *, width: int, pad_to: int | None = None):
        pad_to = width if pad_to is None else pad_to
        if width < 1 or pad_to < width:
            raise ValueError(f"need 1 <= width <= pad_to, got width={width} pad_to={pad_to}")
        self._matrix = crc32_step_matrix(pad_to)
        self._width = width
        super().__init__({"clear": In(1), "en": In(1), "data": In(width), "value": Out(32)})

    def elaborate(self, platform):
        m = Module()
        state = Signal(32, init=0xFFFFFFFF)
        bits = Cat(state, self.data)
        nxt = []
        for mask in self._matrix:
            terms = [bits[i] for i in range(32 + self._width) if (mask >> i) & 1]
            nxt.append(reduce(xor, terms) if terms else 0)
        with m.If(self.clear):
            m.d.sync += state.eq(0xFFFFFFFF)
        with m.Elif(self.en):
            m.d.sync += state.eq(Cat(*nxt))
        m.d.comb += self.value.eq(~state)
        return m
